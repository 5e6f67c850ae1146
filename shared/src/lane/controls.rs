//! What a customer or a configuration change does to a lane from outside its schedule: pause,
//! resume, try again now, forget what a removed destination was owed.

use super::{Lane, LaneCall, LaneError, LaneKey, LaneState, LaneStore, Lanes, OwedSpan, Timers};
use crate::clock::Clock;
use strum::IntoEnumIterator;
use tokio::time::Instant;

impl<S: LaneStore, T: Timers, C: Clock + ?Sized> Lanes<'_, S, T, C> {
    /// A lane whose destination was removed owes nothing any more: what was owed before
    /// `removed_ms` (epoch ms) is forgotten. A destination saved in place of the removed one
    /// was saved after `removed_ms`, and is owed only events that a delivery which read it
    /// failed to send, later still: those are kept, however long forgetting takes. Whether
    /// all is forgotten by `deadline`.
    pub async fn forget(
        &self,
        key: &LaneKey,
        removed_ms: i64,
        deadline: Instant,
    ) -> Result<bool, LaneError> {
        let span = OwedSpan::ALL.before(removed_ms);
        while Instant::now() < deadline {
            let page = self.store.owed(key, span, self.policy.page).await?;
            if page.is_empty() {
                return Ok(true);
            }
            self.store.settle(key, &page).await?;
        }
        Ok(false)
    }

    /// Stops sending to the lane: what arrives is owed until it resumes.
    /// Whether it was paused now: `false` for a lane already paused (its pause stays as it
    /// was, from when it began) or none.
    pub async fn pause(&self, key: &LaneKey) -> Result<bool, LaneError> {
        let unpaused: Vec<LaneState> = LaneState::iter()
            .filter(|state| *state != LaneState::Paused)
            .collect();
        // Read first: a pause sent again (its answer lost) needs no call.
        match self.store.read(key).await? {
            Some(lane) if unpaused.contains(&lane.state) => {}
            _ => return Ok(false),
        }
        let now = self.clock.now_ms();
        let call = LaneCall::new(key, now + self.policy.housekeeping.as_millis() as i64);
        self.schedule(&call).await?;
        let mut to = Lane::to(LaneState::Paused, Some(&call), 0);
        to.since = Some(now);
        to.paused_at = Some(now);
        to.reason = Some("paused by the customer".into());
        self.store.update_from(key, &unpaused, &to).await
    }

    /// A paused lane delivers what it is owed, oldest first, then live events.
    pub async fn resume(&self, key: &LaneKey) -> Result<bool, LaneError> {
        match self.store.read(key).await? {
            Some(lane) if lane.state == LaneState::Paused => {
                self.call_now(key, &[LaneState::Paused], LaneState::CatchingUp, 0)
                    .await
            }
            _ => Ok(false),
        }
    }

    /// A Test connection of the saved destination succeeded: a refused or retrying lane tries
    /// at once. A catching-up one goes on as it was: its settings are the same, and a second
    /// call beside its own would send a page twice.
    pub async fn retry_now(&self, key: &LaneKey) -> Result<bool, LaneError> {
        self.at_once(key, false).await
    }

    /// The configuration was saved: as [`Self::retry_now`], and a catching-up lane goes on at
    /// once with the new settings (a call still sending with the old ones stops at its next
    /// page; a lost one is replaced), still catching up: it met no trouble, and a save is no
    /// reason to show its destination failing.
    pub async fn saved(&self, key: &LaneKey) -> Result<bool, LaneError> {
        self.at_once(key, true).await
    }

    async fn at_once(&self, key: &LaneKey, catching_up_too: bool) -> Result<bool, LaneError> {
        let troubled = [LaneState::Refused, LaneState::Retrying];
        let catching_up = [LaneState::CatchingUp];
        // Twice: the lane may move between the read and the write (a probe gets through,
        // trouble meets a catching-up lane).
        for _ in 0..2 {
            // Read first: most lanes deliver, and need no call.
            let (from, state, interval_ms) = match self.store.read(key).await? {
                Some(lane) if catching_up_too && lane.state == LaneState::CatchingUp => {
                    (&catching_up[..], LaneState::CatchingUp, lane.interval_ms)
                }
                Some(lane) if troubled.contains(&lane.state) => {
                    (&troubled[..], LaneState::Retrying, 0)
                }
                _ => return Ok(false),
            };
            if self.call_now(key, from, state, interval_ms).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A call due now, and the lane moved to `state` by it if it is still in one of `from`.
    async fn call_now(
        &self,
        key: &LaneKey,
        from: &[LaneState],
        state: LaneState,
        interval_ms: u64,
    ) -> Result<bool, LaneError> {
        let call = LaneCall::new(key, self.clock.now_ms());
        self.schedule(&call).await?;
        self.store
            .update_from(key, from, &Lane::to(state, Some(&call), interval_ms))
            .await
    }
}
