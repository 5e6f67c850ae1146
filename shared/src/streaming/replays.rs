//! Replays: a project's stored events of a time range delivered again to its current
//! destination, in the background. One runs at a time per project (a lock item whose heartbeat
//! goes stale if the replay dies for good); progress is saved after every page, so a replay
//! interrupted by a dying invocation resumes where it stopped.

use super::{
    ConfigError, ConfigTable, is_condition_failure, now_rfc3339, optional, organization_key, s,
    store_error, text,
};
use crate::store::key_part;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use std::collections::HashMap;
use strum::{EnumString, IntoStaticStr};
use time::OffsetDateTime;

/// A lock whose replay has not moved for this long is taken over.
pub const STALE_AFTER_SECONDS: i64 = 15 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, EnumString, IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum ReplayState {
    Running,
    Completed,
    Failed,
}

impl ReplayState {
    fn as_str(self) -> &'static str {
        self.into()
    }

    fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replay {
    pub replay_id: String,
    #[serde(skip)]
    pub organization_id: String,
    #[serde(skip)]
    pub project_id: String,
    pub state: ReplayState,
    pub since: String,
    pub until: String,
    pub only_failed: bool,
    /// Sort key of the last event handled.
    #[serde(skip)]
    pub cursor: Option<String>,
    pub delivered: u64,
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
        format!("replay#{}#{replay_id}", key_part(project_id)),
    )
}

fn lock_key(organization_id: &str, project_id: &str) -> HashMap<String, AttributeValue> {
    organization_key(
        organization_id,
        format!("replay-lock#{}", key_part(project_id)),
    )
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> u64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

impl Replay {
    fn to_item(&self) -> HashMap<String, AttributeValue> {
        let mut item = replay_key(&self.organization_id, &self.project_id, &self.replay_id);
        for (name, value) in [
            ("replay_id", Some(&self.replay_id)),
            ("organization_id", Some(&self.organization_id)),
            ("project_id", Some(&self.project_id)),
            ("since", Some(&self.since)),
            ("until", Some(&self.until)),
            ("cursor", self.cursor.as_ref()),
            ("created_at", Some(&self.created_at)),
            ("updated_at", Some(&self.updated_at)),
            ("finished_at", self.finished_at.as_ref()),
            ("last_error", self.last_error.as_ref()),
        ] {
            if let Some(v) = value {
                item.insert(name.into(), s(v));
            }
        }
        item.insert("state".into(), s(self.state.as_str()));
        item.insert("only_failed".into(), AttributeValue::Bool(self.only_failed));
        item.insert(
            "delivered".into(),
            AttributeValue::N(self.delivered.to_string()),
        );
        item.insert("failed".into(), AttributeValue::N(self.failed.to_string()));
        // Finished replays are kept 30 days.
        let keep = OffsetDateTime::now_utc().unix_timestamp() + 30 * 86_400;
        item.insert(
            super::EXPIRES_AT.into(),
            AttributeValue::N(keep.to_string()),
        );
        item
    }

    fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Self, ConfigError> {
        Ok(Self {
            replay_id: text(item, "replay_id")?.to_owned(),
            organization_id: text(item, "organization_id")?.to_owned(),
            project_id: text(item, "project_id")?.to_owned(),
            state: ReplayState::parse(text(item, "state")?).ok_or(ConfigError::Corrupt("state"))?,
            since: text(item, "since")?.to_owned(),
            until: text(item, "until")?.to_owned(),
            only_failed: item
                .get("only_failed")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false),
            cursor: optional(item, "cursor"),
            delivered: number(item, "delivered"),
            failed: number(item, "failed"),
            created_at: text(item, "created_at")?.to_owned(),
            updated_at: text(item, "updated_at")?.to_owned(),
            finished_at: optional(item, "finished_at"),
            last_error: optional(item, "last_error"),
        })
    }
}

impl ConfigTable {
    /// Starts a replay, unless another one of the project is still running: then `Ok(false)`.
    pub async fn start_replay(&self, replay: &Replay) -> Result<bool, ConfigError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut lock = lock_key(&replay.organization_id, &replay.project_id);
        lock.insert("replay_id".into(), s(&replay.replay_id));
        lock.insert("heartbeat".into(), AttributeValue::N(now.to_string()));
        let taken = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(lock))
            .condition_expression("attribute_not_exists(pk) OR heartbeat < :stale")
            .expression_attribute_values(
                ":stale",
                AttributeValue::N((now - STALE_AFTER_SECONDS).to_string()),
            )
            .send()
            .await;
        match taken {
            Ok(_) => {}
            Err(e) if is_condition_failure(&e) => return Ok(false),
            Err(e) => return Err(store_error(e)),
        }
        self.save_replay(replay).await?;
        Ok(true)
    }

    pub async fn replay(
        &self,
        organization_id: &str,
        project_id: &str,
        replay_id: &str,
    ) -> Result<Option<Replay>, ConfigError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.name)
            .set_key(Some(replay_key(organization_id, project_id, replay_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        out.item.as_ref().map(Replay::from_item).transpose()
    }

    /// Saves progress (and keeps the lock's heartbeat fresh); releases the lock when the
    /// replay has finished.
    pub async fn save_replay(&self, replay: &Replay) -> Result<(), ConfigError> {
        let mut replay = replay.clone();
        replay.updated_at = now_rfc3339();
        self.client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(replay.to_item()))
            .send()
            .await
            .map_err(store_error)?;
        if replay.state == ReplayState::Running {
            let beat = self
                .client
                .update_item()
                .table_name(&self.name)
                .set_key(Some(lock_key(&replay.organization_id, &replay.project_id)))
                .update_expression("SET heartbeat = :now")
                .condition_expression("replay_id = :id")
                .expression_attribute_values(":id", s(&replay.replay_id))
                .expression_attribute_values(
                    ":now",
                    AttributeValue::N(OffsetDateTime::now_utc().unix_timestamp().to_string()),
                )
                .send()
                .await;
            match beat {
                Err(e) if !is_condition_failure(&e) => return Err(store_error(e)),
                // A lock another replay took over after this one went stale is theirs.
                _ => return Ok(()),
            }
        }
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
}
