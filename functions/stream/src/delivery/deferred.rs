//! Events the service could not hand to their lane when they came (its own trouble with one
//! organization, such as its share of the configuration table throttled) wait on the deferred
//! queue instead of in the stream: the shard, every tenant on it, moves on, and the events are
//! handed to their lane when their message comes, a longer wait away each time the trouble
//! lasts. Trouble that outlasts the lanes' retry window lists them as failures, for a replay,
//! as a lane does with what it owed that long.
//!
//! Even a batch whose every project meets trouble defers them: a flood from one organization
//! fills whole batches with its events, and other tenants' records wait on the shard behind
//! them.

use super::{Delivery, Trouble};
use audit_log::destination::Destinations;
use audit_log::lane::engine::MAX_DELAY;
use audit_log::lane::{Deferred, EventSource, LaneKey, LaneStore, NOT_READ_BACK, Timers, left_out};
use audit_log::message::Unreadable;
use audit_log::store::StoredKey;
use audit_log::streaming::Configurations;
use std::time::Duration;
use tokio::time::Instant;

/// The wait before events deferred `tries` times before are handed again: `first`, doubling,
/// at most `longest` (a retrying lane's longest wait between attempts) and SQS's longest
/// delay.
fn wait(first: Duration, longest: Duration, tries: u32) -> Duration {
    first
        .saturating_mul(1 << tries.min(16))
        .min(longest)
        .min(MAX_DELAY)
}

impl<C, T, E, D> Delivery<C, T, E, D>
where
    C: Configurations + LaneStore,
    T: Timers,
    E: EventSource,
    D: Destinations,
{
    /// Puts a lane's events on the deferred queue, deferred `tries` times before since
    /// `since_ms`; false (logged) when the queue refused them. When a later part is refused, the
    /// earlier ones are on their way: those events may be delivered twice, never lost.
    pub(super) async fn defer(
        &self,
        lane: &LaneKey,
        (events, unreadable): (&[StoredKey], &[Unreadable]),
        (since_ms, tries): (i64, u32),
        trouble: &str,
    ) -> bool {
        let (org, project) = (&lane.organization_id, &lane.project_id);
        let delay = wait(self.policy.deferral, self.policy.max_backoff, tries);
        let count = events.len() + unreadable.len();
        for deferred in Deferred::split(lane, events, unreadable, since_ms, tries) {
            if let Err(e) = self.timers.defer(&deferred, delay).await {
                tracing::error!(organization_id = org, project_id = project, error = %e, events = count, %trouble, "events could not be deferred either; to be handed again from where they came");
                return false;
            }
        }
        tracing::warn!(
            organization_id = org,
            project_id = project,
            events = count,
            tries,
            wait_s = delay.as_secs(),
            %trouble,
            "events deferred to the deferred queue; everyone else's go on"
        );
        true
    }

    /// Deferred events, when their message comes: read back from the events table (those no
    /// longer kept, or unreadable, are listed as failures) and handed to their lane as a live
    /// batch's would be. Trouble again defers them again, or, past the retry window, lists them
    /// as failures; an error only when neither can be done, and SQS then delivers this message
    /// again.
    pub async fn deliver_deferred(
        &self,
        deferred: &Deferred,
        deadline: Instant,
    ) -> Result<(), String> {
        let lane = deferred.lane();
        let (org, project) = (&lane.organization_id, &lane.project_id);
        let unreadable = deferred.unreadable.clone();
        let handed = match self.events.events(&lane, &deferred.events).await {
            Ok(events) => {
                let gone = left_out(&deferred.events, &events);
                // Listed as a catching-up lane lists them; unlisted, the message comes again.
                if !gone.is_empty() {
                    self.list_failures(&lane, &gone, NOT_READ_BACK).await?;
                    tracing::warn!(
                        organization_id = org,
                        project_id = project,
                        events = gone.len(),
                        "deferred events no longer readable; listed as failures"
                    );
                }
                if events.is_empty() && unreadable.is_empty() {
                    return Ok(());
                }
                let live_until = deadline.min(Instant::now() + self.policy.budget);
                self.hand(&lane, events, unreadable, (live_until, deadline))
                    .await
            }
            Err(e) => Err(Trouble::all(format!(
                "could not read the deferred events back: {e}"
            ))),
        };
        let Err(Trouble {
            reason: trouble,
            left,
        }) = handed
        else {
            tracing::info!(
                organization_id = org,
                project_id = project,
                events = deferred.events.len(),
                tries = deferred.tries,
                "deferred events handed to their lane"
            );
            return Ok(());
        };
        // What is still to hand: delivered, rejected and owed events are done with.
        let (events, unreadable) = match left {
            Some(left) => (left, Vec::new()),
            None => (deferred.events.clone(), deferred.unreadable.clone()),
        };
        let waited = self.clock.now_ms().saturating_sub(deferred.since_ms);
        if waited >= self.policy.retry_window.as_millis() as i64 {
            let keys: Vec<StoredKey> = events
                .iter()
                .chain(unreadable.iter().map(|u| &u.event))
                .cloned()
                .collect();
            let reason = format!(
                "not delivered within the {} retry window: the service could not hand the event \
                 to its destination's lane (its own trouble); the event is kept: replay it",
                self.policy.window_name()
            );
            if self.list_failures(&lane, &keys, &reason).await.is_ok() {
                tracing::error!(organization_id = org, project_id = project, events = keys.len(), %trouble, "deferred events listed as failures past the retry window");
                return Ok(());
            }
        }
        let parts = (&events[..], &unreadable[..]);
        let tries = deferred.tries.saturating_add(1);
        if self
            .defer(&lane, parts, (deferred.since_ms, tries), &trouble)
            .await
        {
            Ok(())
        } else {
            Err(trouble)
        }
    }
}
