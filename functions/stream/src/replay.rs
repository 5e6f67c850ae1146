//! Replays: a page at a time (a project's stored events in the range, or only its recorded
//! failures), delivered to the current destination, progress saved after every page. Before
//! the invocation's time runs out the replay puts its own continuation on the replay queue; an
//! invocation that dies leaves its message in the queue, which delivers it again and the replay
//! resumes from the saved position. Duplicates this can cause are at most one page.

use crate::Stream;
use audit_log::AuditEvent;
use audit_log::message::ReplayPart;
use audit_log::store::{PageRequest, StoredKey};
use audit_log::streaming::{FailureLog, Replay, ReplayState, Replays};
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;

/// How a replay is cut: events per page, pages per invocation (then the next part is queued).
#[derive(Debug, Clone, Copy)]
pub struct Pages {
    pub size: usize,
    pub per_invocation: usize,
}

impl Default for Pages {
    fn default() -> Self {
        Self {
            size: 500,
            per_invocation: usize::MAX,
        }
    }
}
/// A page is not started with less time left than this.
const PAGE_TIME: Duration = Duration::from_secs(20);

impl Stream {
    pub(crate) async fn continue_replay(
        &self,
        part: &ReplayPart,
        deadline: Instant,
    ) -> Result<(), String> {
        let (org, project, id) = (&part.organization_id, &part.project_id, &part.replay_id);
        let Some(mut replay) = self
            .delivery
            .configs
            .replay(org, project, id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(());
        };
        if replay.state != ReplayState::Running {
            return Ok(());
        }
        let Some(config) = self
            .delivery
            .configs
            .get(org, project)
            .await
            .map_err(|e| e.to_string())?
        else {
            return self
                .finish(
                    &mut replay,
                    ReplayState::Failed,
                    Some("the streaming configuration was deleted".into()),
                )
                .await;
        };
        let parse = |t: &str| {
            OffsetDateTime::parse(t, &Rfc3339)
                .map_err(|_| format!("stored replay has a bad time {t}"))
        };
        let (since, until) = (parse(&replay.since)?, parse(&replay.until)?);
        let mut pages = 0;
        loop {
            if Instant::now() + PAGE_TIME > deadline || pages == self.replay_pages.per_invocation {
                audit_log::message::send(&self.sqs, &self.replay_queue_url, part, 0)
                    .await
                    .map_err(|e| format!("could not queue the replay's next part: {e}"))?;
                return Ok(());
            }
            pages += 1;
            let (events, keys, next) = self.replay_page(&replay, since, until).await?;
            if !events.is_empty() {
                let page_deadline = deadline.min(Instant::now() + PAGE_TIME);
                let failures = self
                    .deliver_recorded(&config, &events, &keys, page_deadline)
                    .await;
                replay.delivered += (events.len() - failures.len()) as u64;
                replay.failed += failures.len() as u64;
                if let Some((_, e)) = failures.first() {
                    replay.last_error = Some(e.message().to_owned());
                }
                if replay.only_failed {
                    let failed: std::collections::HashSet<usize> =
                        failures.iter().map(|(i, _)| *i).collect();
                    let delivered: Vec<String> = keys
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !failed.contains(i))
                        .map(|(_, k)| k.sort_key.clone())
                        .collect();
                    self.delivery
                        .configs
                        .forget_failures(org, project, &delivered)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            replay.cursor = next.clone();
            match next {
                Some(_) => self
                    .delivery
                    .configs
                    .save_replay(&replay, self.delivery.clock.now())
                    .await
                    .map_err(|e| e.to_string())?,
                None => {
                    let state = if replay.failed == 0 {
                        ReplayState::Completed
                    } else {
                        ReplayState::Failed
                    };
                    let error = replay.last_error.clone();
                    return self.finish(&mut replay, state, error).await;
                }
            }
        }
    }

    /// The next page of the replay: events, where they are stored, and where to go on from.
    async fn replay_page(
        &self,
        replay: &Replay,
        since: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<(Vec<AuditEvent>, Vec<StoredKey>, Option<String>), String> {
        let (org, project) = (&replay.organization_id, &replay.project_id);
        if replay.only_failed {
            let (failures, next) = self
                .delivery
                .configs
                .failures(
                    org,
                    project,
                    replay.cursor.as_deref(),
                    self.replay_pages.size,
                )
                .await
                .map_err(|e| e.to_string())?;
            let (low, high) = (
                audit_log::store::sort_key_time(since),
                format!("{}$", audit_log::store::sort_key_time(until)),
            );
            let wanted: Vec<String> = failures
                .iter()
                .map(|f| f.event_sort_key.clone())
                .filter(|sk| *sk >= low && *sk <= high)
                .collect();
            let found = self
                .delivery
                .events
                .events_at(org, project, &wanted)
                .await
                .map_err(|e| e.to_string())?;
            let mut events = Vec::with_capacity(found.len());
            let mut keys = Vec::with_capacity(found.len());
            for (key, json) in found {
                if let Ok(event) = AuditEvent::from_json(&json) {
                    events.push(event.with_id(key.message_id.clone()));
                    keys.push(key);
                }
            }
            return Ok((events, keys, next));
        }
        let page = self
            .delivery
            .events
            .page(
                &[audit_log::store::partition_key(org, project)],
                &PageRequest {
                    since: Some(since),
                    until: Some(until),
                    after: replay.cursor.clone(),
                    ..PageRequest::new(
                        self.replay_pages.size,
                        50_000_000,
                        self.delivery.clock.now().unix_timestamp(),
                    )
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut events = Vec::with_capacity(page.events.len());
        let mut keys = Vec::with_capacity(page.events.len());
        for (raw, key) in page.events.iter().zip(page.keys) {
            if let Ok(event) = AuditEvent::from_json(raw.get()) {
                events.push(event.with_id(key.message_id.clone()));
                keys.push(key);
            }
        }
        Ok((events, keys, page.next_after))
    }

    async fn finish(
        &self,
        replay: &mut Replay,
        state: ReplayState,
        error: Option<String>,
    ) -> Result<(), String> {
        replay.state = state;
        replay.last_error = error;
        replay.finished_at = Some(audit_log::clock::seconds_text(self.delivery.clock.now()));
        tracing::info!(
            organization_id = replay.organization_id,
            project_id = replay.project_id,
            replay_id = replay.replay_id,
            delivered = replay.delivered,
            failed = replay.failed,
            "replay finished"
        );
        self.delivery
            .configs
            .save_replay(replay, self.delivery.clock.now())
            .await
            .map_err(|e| e.to_string())
    }
}
