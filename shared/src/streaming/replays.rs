//! Replays: a project's stored events of a time range delivered again to its current
//! destination, in the background. One runs at a time per project (a lock item whose heartbeat
//! goes stale if the replay dies for good); progress is saved after every page, so a replay
//! interrupted by a dying invocation resumes where it stopped. Every save is conditional on the
//! count of saves its writer read: of two copies of a part that SQS delivered at once (at least
//! once, it may), the first to save goes on and the other stops, rather than both run the rest
//! of the range with each other's counts overwritten.

use super::{
    ConfigError, ConfigTable, from_item, is_condition_failure, number, optional, organization_key,
    s, store_error, text, to_item,
};
use crate::store::sort_key_part;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A lock whose replay has not moved for this long is taken over.
pub const STALE_AFTER_SECONDS: i64 = 15 * 60;

/// Whether a replay whose last sign of life was at `beat` (epoch seconds) still runs at `at`.
pub fn is_fresh(beat: i64, at: OffsetDateTime) -> bool {
    beat >= at.unix_timestamp() - STALE_AFTER_SECONDS
}

/// The replay queues keep a message this long (template.yaml, the replay queue and its
/// dead-letter queue): a replay whose last save is older has no part left anywhere to go on.
pub const PART_KEPT_SECONDS: i64 = 14 * 86_400;

/// What a replay whose part can no longer come says: it is failed.
pub const LOST: &str = "no progress for 14 days: its part is no longer on any queue (dead-lettered \
     and not redriven in time); start a new replay of the range";

/// What a replay that stalled says while it is shown: it goes on by itself when its part comes,
/// unless a newer replay of the project has taken its lock by then.
pub const STALLED: &str = "no progress for 15 minutes: the replay is waiting behind others, or its \
     part was dead-lettered (the operators are alerted); it goes on where it stood when its part \
     comes, and a new replay of the project replaces it";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayState {
    Running,
    Completed,
    Failed,
}

/// A replay as the API shows it; the table keeps it with its project and cursor besides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    pub replay_id: String,
    #[serde(skip)]
    pub organization_id: String,
    #[serde(skip)]
    pub project_id: String,
    pub state: ReplayState,
    pub since: String,
    pub until: String,
    // Defaults: replays stored before these were kept.
    #[serde(default)]
    pub only_failed: bool,
    /// Sort key of the last event handled.
    #[serde(skip)]
    pub cursor: Option<String>,
    /// Saves of the replay so far, as its writer read them: the condition of its next save.
    #[serde(skip)]
    pub saves: u64,
    /// It waits for its paused destination to be resumed, taking no turn of the replay queue
    /// (kept on the lock by each save, so as not to count among the organization's running).
    #[serde(skip)]
    pub paused: bool,
    #[serde(default)]
    pub delivered: u64,
    #[serde(default)]
    pub failed: u64,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    pub last_error: Option<String>,
}

fn replay_key(
    organization_id: &str,
    project_id: &str,
    replay_id: &str,
) -> HashMap<String, AttributeValue> {
    organization_key(
        organization_id,
        format!("replay#{}#{replay_id}", sort_key_part(project_id)),
    )
}

fn lock_key(organization_id: &str, project_id: &str) -> HashMap<String, AttributeValue> {
    organization_key(
        organization_id,
        format!("replay-lock#{}", sort_key_part(project_id)),
    )
}

/// Attributes only the table keeps: whose replay it is and where it stands.
const ORGANIZATION_ID: &str = "organization_id";
const PROJECT_ID: &str = "project_id";
const CURSOR: &str = "cursor";
const SAVES: &str = "saves";
const SAVED_BY: &str = "saved_by";
/// On the lock: its replay waits on a paused destination.
const PAUSED: &str = "paused";
/// Finished replays are kept 30 days.
const KEPT_SECONDS: i64 = 30 * 86_400;

impl Replay {
    /// The replay, failed: another one of its project took its lock at `now`.
    pub fn superseded(&mut self, now: OffsetDateTime) {
        self.state = ReplayState::Failed;
        self.finished_at = Some(crate::clock::seconds_text(now));
        self.last_error = Some(super::REPLAY_SUPERSEDED.into());
    }

    /// Whether the replay, still `running`, stalled by `now`: its last save (its heartbeat)
    /// is older than the lock's staleness, so another replay of the project may take its lock
    /// over. Its part, when it comes, goes on only if none has.
    pub fn stalled_at(&self, now: OffsetDateTime) -> bool {
        self.state == ReplayState::Running && !is_fresh(self.moved_at(now), now)
    }

    /// Whether the replay, still `running`, can no longer go on at `now`: its part, sent at
    /// its last save, is past the queues' retention.
    pub fn lost_at(&self, now: OffsetDateTime) -> bool {
        self.state == ReplayState::Running
            && self.moved_at(now) < now.unix_timestamp() - PART_KEPT_SECONDS
    }

    /// Its last save (epoch seconds); `now` if unreadable.
    fn moved_at(&self, now: OffsetDateTime) -> i64 {
        OffsetDateTime::parse(&self.updated_at, &Rfc3339)
            .unwrap_or(now)
            .unix_timestamp()
    }

    pub(super) fn to_item(
        &self,
        now: OffsetDateTime,
    ) -> Result<HashMap<String, AttributeValue>, ConfigError> {
        let mut item = to_item(self, "replay")?;
        item.extend(replay_key(
            &self.organization_id,
            &self.project_id,
            &self.replay_id,
        ));
        item.insert(ORGANIZATION_ID.into(), s(&self.organization_id));
        item.insert(PROJECT_ID.into(), s(&self.project_id));
        if let Some(cursor) = &self.cursor {
            item.insert(CURSOR.into(), s(cursor));
        }
        item.insert(SAVES.into(), AttributeValue::N(self.saves.to_string()));
        item.insert(
            super::EXPIRES_AT.into(),
            AttributeValue::N((now.unix_timestamp() + KEPT_SECONDS).to_string()),
        );
        Ok(item)
    }

    pub(super) fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Self, ConfigError> {
        let mut replay: Replay = from_item(item.clone(), "replay")?;
        replay.organization_id = text(item, ORGANIZATION_ID)?.to_owned();
        replay.project_id = text(item, PROJECT_ID)?.to_owned();
        replay.cursor = optional(item, CURSOR);
        // Replays saved before the count was kept read as never saved.
        replay.saves = number(item, SAVES).map_or(0, |n| n.max(0) as u64);
        Ok(replay)
    }
}

/// Replays of each project, and the lock that lets one run at a time.
pub trait Replays: Sync {
    /// Starts a replay, unless another one of the project is still running: then `Ok(false)`.
    fn start_replay(
        &self,
        replay: &mut Replay,
        at: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, ConfigError>> + Send;

    /// The replay holding the project's lock, whether its heartbeat is fresh or not: a running
    /// replay that does not hold it was replaced (only the holder's end removes it).
    fn replay_lock_holder(
        &self,
        organization_id: &str,
        project_id: &str,
    ) -> impl Future<Output = Result<Option<String>, ConfigError>> + Send;

    /// How many of the organization's projects have a replay running at `at` (a lock with a
    /// fresh heartbeat, not waiting on a pause), counted up to `up_to`.
    fn replays_running(
        &self,
        organization_id: &str,
        at: OffsetDateTime,
        up_to: usize,
    ) -> impl Future<Output = Result<usize, ConfigError>> + Send;

    /// Whether a replay of the project holds its lock (its heartbeat fresh at `at`).
    fn replay_running(
        &self,
        organization_id: &str,
        project_id: &str,
        at: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, ConfigError>> + Send;

    fn replay(
        &self,
        organization_id: &str,
        project_id: &str,
        replay_id: &str,
    ) -> impl Future<Output = Result<Option<Replay>, ConfigError>> + Send;

    /// Saves progress (and keeps the lock's heartbeat fresh); releases the lock when the
    /// replay has finished. The save counts in `replay.saves`; `ReplayMovedOn` when another
    /// writer saved the replay since it was read (nothing is written then).
    fn save_replay(
        &self,
        replay: &mut Replay,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), ConfigError>> + Send;
}

impl Replays for ConfigTable {
    /// Starts a replay, unless another one of the project is still running: then `Ok(false)`.
    async fn start_replay(
        &self,
        replay: &mut Replay,
        at: OffsetDateTime,
    ) -> Result<bool, ConfigError> {
        let now = at.unix_timestamp();
        let mut lock = lock_key(&replay.organization_id, &replay.project_id);
        lock.insert("replay_id".into(), s(&replay.replay_id));
        lock.insert("heartbeat".into(), AttributeValue::N(now.to_string()));
        // The lock already this replay's: the SDK sent the put again after it had landed.
        let taken = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(lock))
            .condition_expression(
                "attribute_not_exists(pk) OR heartbeat < :stale OR replay_id = :id",
            )
            .expression_attribute_values(
                ":stale",
                AttributeValue::N((now - STALE_AFTER_SECONDS).to_string()),
            )
            .expression_attribute_values(":id", s(&replay.replay_id))
            .send()
            .await;
        match taken {
            Ok(_) => {}
            Err(e) if is_condition_failure(&e) => return Ok(false),
            Err(e) => return Err(store_error(e)),
        }
        if let Err(e) = self.save_replay(replay, at).await {
            // Not started: the project's next request should not wait out a lock nobody holds.
            self.release_replay_lock(replay).await.ok();
            return Err(e);
        }
        Ok(true)
    }

    async fn replays_running(
        &self,
        organization_id: &str,
        at: OffsetDateTime,
        up_to: usize,
    ) -> Result<usize, ConfigError> {
        let (mut running, mut after) = (0, None);
        loop {
            let (locks, next) = self
                .query_prefix(organization_id, "replay-lock#", 100, after.as_deref())
                .await?;
            running += locks
                .iter()
                .filter(|lock| {
                    let paused = lock.get(PAUSED).and_then(|v| v.as_bool().ok());
                    number(lock, "heartbeat").is_some_and(|beat| is_fresh(beat, at))
                        && paused != Some(&true)
                })
                .count();
            if running >= up_to || next.is_none() {
                return Ok(running.min(up_to));
            }
            after = next;
        }
    }

    async fn replay_lock_holder(
        &self,
        organization_id: &str,
        project_id: &str,
    ) -> Result<Option<String>, ConfigError> {
        let lock = self.item(lock_key(organization_id, project_id)).await?;
        Ok(lock.as_ref().and_then(|item| optional(item, "replay_id")))
    }

    async fn replay_running(
        &self,
        organization_id: &str,
        project_id: &str,
        at: OffsetDateTime,
    ) -> Result<bool, ConfigError> {
        let lock = self.item(lock_key(organization_id, project_id)).await?;
        let beat = lock.as_ref().and_then(|item| number(item, "heartbeat"));
        Ok(beat.is_some_and(|beat| is_fresh(beat, at)))
    }

    async fn replay(
        &self,
        organization_id: &str,
        project_id: &str,
        replay_id: &str,
    ) -> Result<Option<Replay>, ConfigError> {
        self.item(replay_key(organization_id, project_id, replay_id))
            .await?
            .as_ref()
            .map(Replay::from_item)
            .transpose()
    }

    /// Saves progress (and keeps the lock's heartbeat fresh); releases the lock when the
    /// replay has finished.
    async fn save_replay(
        &self,
        replay: &mut Replay,
        now: OffsetDateTime,
    ) -> Result<(), ConfigError> {
        let mut saved = replay.clone();
        saved.updated_at = crate::clock::seconds_text(now);
        saved.saves += 1;
        let mut superseded = false;
        if saved.state == ReplayState::Running {
            let beat = self
                .client
                .update_item()
                .table_name(&self.name)
                .set_key(Some(lock_key(&saved.organization_id, &saved.project_id)))
                .update_expression("SET heartbeat = :now, #paused = :paused")
                .condition_expression("replay_id = :id")
                .expression_attribute_names("#paused", PAUSED)
                .expression_attribute_values(":id", s(&saved.replay_id))
                .expression_attribute_values(":paused", AttributeValue::Bool(saved.paused))
                .expression_attribute_values(
                    ":now",
                    AttributeValue::N(now.unix_timestamp().to_string()),
                )
                .send()
                .await;
            match beat {
                Ok(_) => {}
                Err(e) if !is_condition_failure(&e) => return Err(store_error(e)),
                // A lock another replay took over after this one went stale is theirs: this
                // one stops, failed, rather than run beside it.
                Err(_) => {
                    saved.superseded(now);
                    superseded = true;
                }
            }
        }
        self.put_replay(&saved, replay.saves, now).await?;
        let running = saved.state == ReplayState::Running;
        *replay = saved;
        if superseded {
            return Err(ConfigError::ReplaySuperseded);
        }
        if running {
            return Ok(());
        }
        self.release_replay_lock(replay).await
    }
}

impl ConfigTable {
    /// Removes the project's replay lock if `replay` holds it.
    pub async fn release_replay_lock(&self, replay: &Replay) -> Result<(), ConfigError> {
        let released = self
            .client
            .delete_item()
            .table_name(&self.name)
            .set_key(Some(lock_key(&replay.organization_id, &replay.project_id)))
            .condition_expression("replay_id = :id")
            .expression_attribute_values(":id", s(&replay.replay_id))
            .send()
            .await;
        match released {
            Err(e) if !is_condition_failure(&e) => Err(store_error(e)),
            _ => Ok(()),
        }
    }

    /// Writes the replay over the save its writer read (`read` saves): another copy of its
    /// part may have moved it on, and then this one is `ReplayMovedOn`.
    async fn put_replay(
        &self,
        saved: &Replay,
        read: u64,
        now: OffsetDateTime,
    ) -> Result<(), ConfigError> {
        let mut item = saved.to_item(now)?;
        // Whose save it is: one the SDK sent again after it had landed (its answer lost) fails
        // its condition on itself, and must not pass for another writer's.
        let token = super::new_external_id();
        item.insert(SAVED_BY.into(), s(&token));
        let put = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item));
        let put = if read == 0 {
            put.condition_expression("attribute_not_exists(saves)")
        } else {
            put.condition_expression("saves = :read")
                .expression_attribute_values(":read", AttributeValue::N(read.to_string()))
        };
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => {
                let key = replay_key(&saved.organization_id, &saved.project_id, &saved.replay_id);
                let stored = self.item(key).await?;
                if stored.is_some_and(|item| optional(&item, SAVED_BY) == Some(token)) {
                    Ok(())
                } else {
                    Err(ConfigError::ReplayMovedOn)
                }
            }
            Err(e) => Err(store_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn replay() -> Replay {
        Replay {
            replay_id: "0123456789abcdef0123456789abcdef".into(),
            organization_id: "org#1".into(),
            project_id: "project-1".into(),
            state: ReplayState::Running,
            since: "2026-11-01T00:00:00Z".into(),
            until: "2026-11-02T00:00:00Z".into(),
            only_failed: true,
            cursor: Some("2026-11-01T10:00:00.000000000Z#m-1".into()),
            saves: 7,
            paused: false,
            delivered: 500,
            failed: 2,
            created_at: "2026-11-30T10:00:00Z".into(),
            updated_at: "2026-11-30T10:01:00Z".into(),
            finished_at: None,
            last_error: Some("Datadog answered HTTP 503".into()),
        }
    }

    #[test]
    fn a_replay_comes_back_from_its_item_whole_and_expires_30_days_after_its_save() {
        let now = datetime!(2026-11-30 10:01 UTC);
        let item = replay().to_item(now).unwrap();
        assert_eq!(Replay::from_item(&item).unwrap(), replay());
        assert_eq!(
            item[super::super::EXPIRES_AT].as_n().unwrap(),
            &(now.unix_timestamp() + 30 * 86_400).to_string()
        );
        assert_eq!(item["state"].as_s().unwrap(), "running");
    }

    /// A save whose first put landed though its answer was lost (HTTP 500), and whose retry
    /// by the SDK then failed its condition; `landed`: the stored item is that save's.
    async fn save_answered_late(landed: bool) -> Result<u64, ConfigError> {
        use aws_sdk_dynamodb::Client;
        use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
        use aws_sdk_dynamodb::operation::update_item::UpdateItemOutput;
        use aws_smithy_mocks::{RuleMode, mock, mock_client};
        use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;
        use std::sync::{Arc, Mutex};
        let answer = |status: u16, kind: &str| {
            HttpResponse::new(
                StatusCode::try_from(status).unwrap(),
                SdkBody::from(format!(r#"{{"__type":"{kind}","message":"m"}}"#)),
            )
        };
        let written = Arc::new(Mutex::new(None));
        let seen = written.clone();
        let put = mock!(Client::put_item)
            .match_requests(move |r| {
                *seen.lock().unwrap() = r.item().cloned();
                true
            })
            .sequence()
            .http_response(move || answer(500, "InternalServerError"))
            .http_response(move || answer(400, "ConditionalCheckFailedException"))
            .build();
        let beat = mock!(Client::update_item).then_output(|| UpdateItemOutput::builder().build());
        let read = mock!(Client::get_item).then_compute_output(move |_| {
            let mut item = written.lock().unwrap().clone().unwrap();
            if !landed {
                item.insert(SAVED_BY.into(), s("another writer"));
            }
            GetItemOutput::builder().set_item(Some(item)).build()
        });
        let table = ConfigTable::new(
            mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&put, &beat, &read]),
            "config",
        );
        let mut saving = replay();
        table
            .save_replay(&mut saving, datetime!(2026-11-30 10:02 UTC))
            .await
            .map(|()| saving.saves)
    }

    // Paused: the SDK's own retry of the lost answer waits on tokio's clock.
    #[tokio::test(start_paused = true)]
    async fn a_save_retried_by_the_sdk_after_it_landed_counts_as_saved() {
        assert_eq!(save_answered_late(true).await, Ok(8));
        assert_eq!(
            save_answered_late(false).await,
            Err(ConfigError::ReplayMovedOn)
        );
    }

    #[test]
    fn the_api_sees_neither_the_project_nor_the_cursor() {
        let shown = serde_json::to_value(replay()).unwrap();
        for hidden in ["organization_id", "project_id", "cursor", "saves"] {
            assert!(shown.get(hidden).is_none(), "{hidden} is shown");
        }
        assert_eq!(shown["finished_at"], serde_json::Value::Null);
    }
}
