//! Replays: a page at a time (a project's stored events in the range, or only its recorded
//! failures), delivered to the current destination, progress saved after every page. Before
//! the invocation's time runs out the replay puts its own continuation on the replay queue; an
//! invocation that dies leaves its message in the queue, which delivers it again and the replay
//! resumes from the saved position. Two copies of a part at once (SQS delivers at least once)
//! race to save their first page, and the loser stops. Duplicates either can cause are at most
//! one page. While the project's lane is paused a replay waits on the queue and sends nothing,
//! and stops as failed once the pause outlasts the retry window; after a page its destination
//! failed it waits longer each time, and stops after five such pages in a row (or at once when
//! the destination refuses), so a broken destination never holds a replay slot the service's
//! other replays are waiting for.

use crate::Stream;
use audit_log::AuditEvent;
use audit_log::destination::DeliveryError;
use audit_log::event::MAX_EVENT_BYTES;
use audit_log::lane::LaneState;
use audit_log::message::ReplayPart;
use audit_log::store::{PageRequest, StoredKey};
use audit_log::streaming::{ConfigError, FailureLog, Replay, ReplayState, Replays};
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;

/// How a replay is cut: events per page, pages per invocation (then the next part is queued),
/// the time a page may take, and how long its part waits on the queue while its lane is paused
/// or its destination in trouble.
#[derive(Debug, Clone, Copy)]
pub struct Pages {
    pub size: usize,
    /// Bytes of events a page reads, at most (and one event more, in part, when a failures-only
    /// page reads its events in groups): a page of the largest events must not outgrow the
    /// function's memory, or it fails on every attempt and its replay never ends.
    pub bytes: usize,
    pub per_invocation: usize,
    /// A page is not started with less time left than this, nor given more.
    pub page_time: Duration,
    /// Seconds before a replay looks again at a paused lane (SQS delays at most 900).
    pub paused_wait: i32,
    /// Seconds the part waits after a page the destination failed (the replay goes on past
    /// it, its events listed as failures), doubled after each one in a row.
    pub first_backoff: i32,
}

impl Default for Pages {
    fn default() -> Self {
        Self {
            size: 500,
            bytes: 50_000_000,
            per_invocation: usize::MAX,
            page_time: Duration::from_secs(20),
            paused_wait: 300,
            first_backoff: 60,
        }
    }
}
/// Pages in a row that meet the destination's trouble before the replay stops (waits of 1, 2,
/// 4 and 8 minutes between them): a destination that is down does not hold one of the
/// service's few replay slots for hours.
const TROUBLED_PAGES: u32 = 5;

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
            // The part of a finished replay comes again when the release of the project's lock
            // failed it: released now (if still its own), the project takes new replays at
            // once rather than after the lock's 15 minutes.
            let released = self.delivery.configs.release_replay_lock(&replay).await;
            return released.map_err(|e| e.to_string());
        }
        // A part that waited past the lock's staleness (a busy queue, or a redrive from the
        // dead-letter queue) goes on only while the project's lock is still its own: its
        // save says so before anything is sent, and stops it when a newer replay took over.
        if replay.stalled_at(self.delivery.clock.now()) {
            if !self.save_progress(&mut replay).await? {
                return Ok(());
            }
            tracing::info!(
                replay_id = replay.replay_id,
                "a replay that waited past its lock's staleness goes on"
            );
        }
        let parse = |t: &str| {
            OffsetDateTime::parse(t, &Rfc3339)
                .map_err(|_| format!("stored replay has a bad time {t}"))
        };
        let (since, until) = (parse(&replay.since)?, parse(&replay.until)?);
        let mut part = part.clone();
        let mut pages = 0;
        loop {
            if Instant::now() + self.replay_pages.page_time > deadline
                || pages == self.replay_pages.per_invocation
            {
                return self.queue_part(&part, 0).await;
            }
            // Read for every page: a pause, a new destination or a deletion counts from the
            // next page on.
            let read = match self.delivery.configs.get(org, project).await {
                Err(ConfigError::Corrupt(what)) => {
                    let damaged = format!(
                        "the service could not read the streaming configuration (its {what})"
                    );
                    return self
                        .finish(&mut replay, ReplayState::Failed, Some(damaged))
                        .await;
                }
                read => read.map_err(|e| e.to_string())?,
            };
            let Some(config) = read else {
                let deleted = "the streaming configuration was deleted";
                return self
                    .finish(&mut replay, ReplayState::Failed, Some(deleted.into()))
                    .await;
            };
            if config.lane.state == LaneState::Paused {
                let policy = &self.delivery.policy;
                if config
                    .lane
                    .paused_at
                    .is_some_and(|at| policy.outstayed(at, self.delivery.clock.now_ms()))
                {
                    // As long as a paused destination is owed its live events, and no longer:
                    // the project's next replay should not wait behind this one for ever.
                    let paused = format!(
                        "the destination has been paused for longer than the {} retry window: \
                         resume it, then start the replay again",
                        policy.window_name()
                    );
                    return self
                        .finish(&mut replay, ReplayState::Failed, Some(paused))
                        .await;
                }
                // Nothing is sent while paused; the save keeps the replay's lock fresh, marked
                // as waiting, so it counts among none of the organization's running replays.
                replay.paused = true;
                if !self.save_progress(&mut replay).await? {
                    return Ok(());
                }
                return self.queue_part(&part, self.replay_pages.paused_wait).await;
            }
            pages += 1;
            let ReplayPage {
                events,
                keys,
                next,
                unread,
                unread_keys,
            } = self.replay_page(&replay, since, until).await?;
            if unread > 0 {
                // Not delivered, so not done: the replay ends failed, and the failures stay listed.
                replay.failed += unread;
                replay.last_error = Some(format!(
                    "{unread} stored events of the range could not be read back"
                ));
            }
            if !unread_keys.is_empty() {
                self.list_unread(&replay, &unread_keys).await?;
            }
            let mut trouble = None;
            if !events.is_empty() {
                let page_deadline = deadline.min(Instant::now() + self.replay_pages.page_time);
                // Failures it could not list fail the part, which comes again and delivers
                // the page again from the saved progress: nothing failed goes unlisted.
                let failures = self
                    .deliver_recorded(&config, &events, &keys, page_deadline)
                    .await?;
                replay.delivered += (events.len() - failures.len()) as u64;
                replay.failed += failures.len() as u64;
                if let Some((_, e)) = failures.first() {
                    replay.last_error = Some(e.message().to_owned());
                }
                // Logs refused one by one are theirs alone, and those sent beside them that
                // the search did not get to are listed for another replay; anything else is
                // the destination's.
                trouble = failures
                    .iter()
                    .map(|(_, e)| e)
                    .find(|e| !e.is_rejection() && !matches!(e, DeliveryError::Unsearched(_)))
                    .cloned();
                // Best effort: a failure left listed is replayed again at worst, while failing
                // the part here would deliver the whole page again.
                if let Err(e) = self.settle(&replay, &keys, &failures).await {
                    tracing::warn!(
                        replay_id = replay.replay_id,
                        error = %e,
                        "delivered failures could not be forgotten; they stay listed"
                    );
                }
            }
            let finished = next.is_none();
            replay.cursor = next;
            if finished {
                let state = if replay.failed == 0 {
                    ReplayState::Completed
                } else {
                    ReplayState::Failed
                };
                let error = replay.last_error.clone();
                return self.finish(&mut replay, state, error).await;
            }
            let Some(trouble) = trouble else {
                part.troubled = 0;
                if !self.save_progress(&mut replay).await? {
                    return Ok(());
                }
                continue;
            };
            part.troubled += 1;
            if trouble.is_refusal() || part.troubled >= TROUBLED_PAGES {
                let stopped = stopped(&replay, &trouble, part.troubled);
                return self
                    .finish(&mut replay, ReplayState::Failed, Some(stopped))
                    .await;
            }
            if !self.save_progress(&mut replay).await? {
                return Ok(());
            }
            let wait = wait_after(part.troubled, self.replay_pages.first_backoff);
            return self.queue_part(&part, wait).await;
        }
    }

    /// Forgets the project's recorded failures of the page's events that were delivered now,
    /// whichever kind of replay delivered them: a page of failures names only failures; a
    /// page of stored events is matched against the failures recorded over its range (most
    /// often none, for one read).
    async fn settle(
        &self,
        replay: &Replay,
        keys: &[StoredKey],
        failures: &[(usize, DeliveryError)],
    ) -> Result<(), String> {
        let (org, project) = (&replay.organization_id, &replay.project_id);
        let failed: std::collections::HashSet<usize> = failures.iter().map(|(i, _)| *i).collect();
        let mut delivered: Vec<String> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| !failed.contains(i))
            .map(|(_, k)| k.sort_key.clone())
            .collect();
        let configs = &self.delivery.configs;
        if !replay.only_failed {
            let (Some(low), Some(high)) = (delivered.iter().min(), delivered.iter().max()) else {
                return Ok(());
            };
            let listed: std::collections::HashSet<String> = configs
                .failures_between(org, project, low, high)
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .collect();
            delivered.retain(|sk| listed.contains(sk));
        }
        if delivered.is_empty() {
            return Ok(());
        }
        configs
            .forget_failures(org, project, &delivered)
            .await
            .map_err(|e| e.to_string())
    }

    /// Lists events of a full range that could not be read back as the project's failures,
    /// as the lane does: a replay of the failures brings them once the service reads them again.
    /// (A replay of failures reads events already listed.) When they cannot be listed the part
    /// fails, to read the page again.
    async fn list_unread(&self, replay: &Replay, keys: &[StoredKey]) -> Result<(), String> {
        let (org, project) = (&replay.organization_id, &replay.project_id);
        let reason = "a replay could not read the stored event back; replay it once the service \
                      reads it again";
        let now = self.delivery.clock.now();
        let recorded = self
            .delivery
            .configs
            .record_failures(org, project, keys, reason, now);
        recorded.await.map_err(|e| {
            format!(
                "{} events the replay could not read could not be listed: {e}",
                keys.len()
            )
        })
    }

    /// The replay's next part, visible on the replay queue after `delay_seconds`.
    async fn queue_part(&self, part: &ReplayPart, delay_seconds: i32) -> Result<(), String> {
        audit_log::message::send(&self.sqs, &self.replay_queue_url, part, delay_seconds)
            .await
            .map_err(|e| format!("could not queue the replay's next part: {e}"))
    }

    /// Saves the replay's progress; `Ok(false)`: a newer replay of the project took its lock
    /// (the save failed this one), or another copy of this part saved first, so it stops here.
    async fn save_progress(&self, replay: &mut Replay) -> Result<bool, String> {
        match self
            .delivery
            .configs
            .save_replay(replay, self.delivery.clock.now())
            .await
        {
            Ok(()) => Ok(true),
            Err(ConfigError::ReplaySuperseded) => {
                tracing::warn!(
                    replay_id = replay.replay_id,
                    "replay superseded by a newer one; stopped"
                );
                Ok(false)
            }
            // Another copy of the part (SQS delivers at least once) saved first: that one goes
            // on, this one stops, having sent at most its page again.
            Err(ConfigError::ReplayMovedOn) => {
                tracing::warn!(
                    replay_id = replay.replay_id,
                    "another copy of the replay's part saved first; this one stops"
                );
                Ok(false)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The next page of the replay.
    async fn replay_page(
        &self,
        replay: &Replay,
        since: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<ReplayPage, String> {
        let (org, project) = (&replay.organization_id, &replay.project_id);
        if replay.only_failed {
            // Every event at `until` too: `$` sorts after the `#` that ends a sort key's time.
            let (low, high) = (
                audit_log::store::sort_key_time(since),
                format!("{}$", audit_log::store::sort_key_time(until)),
            );
            let (failures, next) = self
                .delivery
                .configs
                .failures_within(
                    org,
                    project,
                    (&low, &high),
                    replay.cursor.as_deref(),
                    self.replay_pages.size,
                )
                .await
                .map_err(|e| e.to_string())?;
            let wanted: Vec<String> = failures.into_iter().map(|f| f.event_sort_key).collect();
            // Read as many at once as the page's bytes hold were each the largest an event
            // may be; the page ends at the group that fills it.
            let together = (self.replay_pages.bytes / MAX_EVENT_BYTES).clamp(1, 100);
            let now = self.delivery.clock.now().unix_timestamp();
            let (mut found, mut expected, mut bytes, mut next) = (Vec::new(), 0, 0, next);
            let mut read_so_far = 0;
            for group in wanted.chunks(together) {
                let read = self.delivery.events.events_at(org, project, group).await;
                let read = read.map_err(|e| e.to_string())?;
                read_so_far += group.len();
                // Past its retention an event is gone, as the failures' listing says, whether
                // DynamoDB has deleted its item yet (it takes up to days) or not: neither
                // delivered nor failed. An item there that holds no readable event failed.
                for (key, json) in read.into_iter().filter(|(key, _)| key.expires_at > now) {
                    expected += 1;
                    if let Some(json) = json {
                        bytes += json.len();
                        found.push((key, json));
                    }
                }
                if bytes >= self.replay_pages.bytes && read_so_far < wanted.len() {
                    // The next page goes on after the last failure read (failures are listed
                    // by their events' sort keys).
                    next = group.last().cloned();
                    break;
                }
            }
            let mut page = ReplayPage::read(found, expected, next);
            // Failures already, listed as such.
            page.unread_keys.clear();
            return Ok(page);
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
                        self.replay_pages.bytes,
                        self.delivery.clock.now().unix_timestamp(),
                    )
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        // Unreadable items are of the range too: not delivered, so counted as failed.
        let expected = page.events.len() + page.unreadable.len();
        let stored = page
            .keys
            .into_iter()
            .zip(page.events.iter().map(|raw| raw.get()));
        let mut read = ReplayPage::read(stored, expected, page.next_after);
        read.unread_keys.extend(page.unreadable);
        Ok(read)
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
        // Refused only when another copy of its part saved first: then that copy finishes it.
        self.save_progress(replay).await.map(drop)
    }
}

/// A page of a replay: the events read, where each is stored, where to go on from, and how
/// many it should have held but could not read (gone, or not an event any more), with the
/// keys of those still stored.
struct ReplayPage {
    events: Vec<AuditEvent>,
    keys: Vec<StoredKey>,
    next: Option<String>,
    unread: u64,
    unread_keys: Vec<StoredKey>,
}

impl ReplayPage {
    /// The stored events (each key with its JSON) that read as events, of `expected`.
    fn read(
        stored: impl IntoIterator<Item = (StoredKey, impl Into<String>)>,
        expected: usize,
        next: Option<String>,
    ) -> Self {
        let (mut events, mut keys) = (Vec::with_capacity(expected), Vec::with_capacity(expected));
        let mut unread_keys = Vec::new();
        for (key, json) in stored {
            match AuditEvent::from_stored(json.into()) {
                Ok(event) => {
                    events.push(event.with_id(key.message_id.clone()));
                    keys.push(key);
                }
                Err(_) => unread_keys.push(key),
            }
        }
        let unread = (expected - events.len()) as u64;
        Self {
            events,
            keys,
            next,
            unread,
            unread_keys,
        }
    }
}

/// Seconds a part waits after its `troubled`-th troubled page in a row (from 1): the first
/// wait, doubled each time, within SQS's 15 minutes.
fn wait_after(troubled: u32, first: i32) -> i32 {
    first
        .saturating_mul(1 << troubled.saturating_sub(1).min(4))
        .min(900)
}

/// Why a replay stopped before the end of its range, and what to do.
fn stopped(replay: &Replay, trouble: &DeliveryError, troubled: u32) -> String {
    let why = if trouble.is_refusal() {
        format!("the destination refused its events ({})", trouble.message())
    } else {
        format!(
            "the destination failed on {troubled} pages in a row ({})",
            trouble.message()
        )
    };
    let rest = if replay.only_failed {
        "the failures it did not deliver are still listed: replay them when the destination \
         works again"
    } else {
        "the events it could not deliver are listed as failures, and older events of the range \
         were not replayed: start another replay when the destination works again"
    };
    format!("the replay stopped: {why}; {rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn troubled_pages_wait_one_two_four_then_eight_minutes() {
        let waits: Vec<i32> = (1..TROUBLED_PAGES).map(|n| wait_after(n, 60)).collect();
        assert_eq!(waits, [60, 120, 240, 480]);
        // However long the run, a wait stays within what SQS can delay, and under the
        // replay lock's staleness.
        assert_eq!(wait_after(30, 60), 900);
        assert!(
            (wait_after(TROUBLED_PAGES - 1, 60) as i64)
                < audit_log::streaming::REPLAY_STALE_AFTER_SECONDS
        );
    }
}
