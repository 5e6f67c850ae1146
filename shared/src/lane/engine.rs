//! What a lane does with live events and with its scheduled attempts. It drives any
//! destination through [`Sink`] and keeps its state through [`LaneStore`]: it knows neither
//! which destination nor which database.

use super::{
    EventSource, Lane, LaneCall, LaneError, LaneKey, LaneState, LaneStore, Owed, OwedSpan, Owing,
    Policy, Target, Timers,
};
use crate::AuditEvent;
use crate::clock::Clock;
use crate::destination::{DeliveryError, Sink};
use crate::store::StoredKey;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// A call that arrives this early still acts: queues are not exact clocks.
const EARLY_TOLERANCE_MS: i64 = 1_000;
/// A call due sooner than this after it is sent may come before the lane's write that
/// expects it: owing a batch's events first takes up to about 6 seconds under throttling.
const EARLY_CALL: Duration = Duration::from_secs(15);
/// When an early call that found another attempt named looks again.
const LOOK_AGAIN: Duration = Duration::from_secs(10);
/// SQS delays a message at most this long; later calls take several hops.
pub const MAX_DELAY: Duration = Duration::from_secs(900);
/// How long a delivery waits to record the destination's health.
const HEALTH_PATIENCE: Duration = Duration::from_secs(1);
/// How long past the retry window an owed item outlives it at least (or the longest wait
/// between a lane's attempts, if longer, and the time to find a call lost): room for the
/// lane's next call, or the sweep, to list it.
const OWED_MARGIN: Duration = Duration::from_secs(86_400);
/// Organizations whose overdue lanes a sweep heals at once: one whose writes keep waiting out
/// their retries takes one of these, not the sweep's whole time.
const ORGANIZATIONS_SWEPT_AT_ONCE: usize = 8;

/// The lanes of the service, with what they need.
pub struct Lanes<'a, S, T, C: ?Sized> {
    pub store: &'a S,
    pub timers: &'a T,
    pub clock: &'a C,
    pub policy: &'a Policy,
}

/// What one delivery or attempt did to a lane, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub delivered: usize,
    /// Newly owed (live events of a lane that is not delivering).
    pub owed: usize,
    /// Rejected by the destination, recorded as failures.
    pub rejected: usize,
    /// Owed beyond the retry window, recorded as failures.
    pub expired: usize,
    /// The state the lane was left in, when this changed it.
    pub entered: Option<LaneState>,
    /// Why nothing was done: the call was stale, early, or its lane is gone.
    pub skipped: Option<&'static str>,
}

/// The service's own trouble in a live delivery, with the events it left unhandled: neither
/// delivered, nor recorded as rejected, nor owed. A caller that hands on only these sends
/// nothing twice and lists nothing it delivered.
#[derive(Debug)]
pub struct Unhandled {
    pub error: LaneError,
    pub events: Vec<StoredKey>,
}

impl From<Unhandled> for LaneError {
    fn from(unhandled: Unhandled) -> Self {
        unhandled.error
    }
}

/// The events of `pending` left unhandled by `error`.
fn unhandled(pending: &[(StoredKey, AuditEvent)]) -> impl FnOnce(LaneError) -> Unhandled + '_ {
    move |error| Unhandled {
        error,
        events: pending.iter().map(|(key, _)| key.clone()).collect(),
    }
}

/// A delivery's result, event by event.
#[derive(Default)]
struct Sent {
    delivered: usize,
    rejected: usize,
    /// Of `rejected`, those never sent: over the destination's limit for one event.
    oversized: usize,
    /// How long the destination took to answer, and the bytes of events it was sent.
    took: Duration,
    bytes: u64,
    /// Not taken because of `trouble`, or not tried (the search for events the destination
    /// rejects did not get to them, or the delivery's time ran out first), with their keys:
    /// still owed.
    unsent: Vec<(StoredKey, AuditEvent)>,
    /// Of `unsent`, how many were not tried (no failure of the destination's), and why.
    untried: usize,
    untried_because: Option<String>,
    /// Whether it searched for events the destination rejects (time no slowness of its own).
    searched: bool,
    trouble: Option<DeliveryError>,
}

impl<S: LaneStore, T: Timers, C: Clock + ?Sized> Lanes<'_, S, T, C> {
    fn owed_now(&self, events: &[(StoredKey, AuditEvent)]) -> Vec<Owed> {
        let now = self.clock.now_ms();
        // An owed item lives as long as its event, and at least until the lane has listed it
        // past the retry window: an event older than the retention when it came (a backfill)
        // is already past its time to live, and DynamoDB would take its debt away unlisted.
        let margin = self.policy.max_backoff.max(OWED_MARGIN) + self.policy.lost_after;
        let listed_by = (now + (self.policy.retry_window + margin).as_millis() as i64) / 1000;
        events
            .iter()
            .map(|(key, event)| Owed {
                event: StoredKey {
                    expires_at: key.expires_at.max(listed_by),
                    ..key.clone()
                },
                owed_at_ms: now,
                bytes: event.json().len() as u64,
            })
            .collect()
    }

    /// Live events of one lane, whose state was read as `lane` just before. A delivering lane
    /// sends them, within the policy's budget and before `deadline` (the batch's: its budget
    /// from the batch's start, within the invocation's); any other lane owes them. Trouble
    /// moves the lane out of `delivering` with what it did not take owed. The service's own
    /// trouble is returned with the events it left unhandled.
    pub async fn live(
        &self,
        key: &LaneKey,
        lane: &Lane,
        events: Vec<(StoredKey, AuditEvent)>,
        sink: &dyn Sink,
        deadline: Instant,
    ) -> Result<Outcome, Unhandled> {
        let mut out = Outcome::default();
        let mut pending = events;
        let mut delivering = lane.state == LaneState::Delivering;
        // Set when a refusal found the configuration saved again since `lane` was read: these
        // events are the new settings' to deliver, in a call that reads them.
        let mut saved_since = false;
        // Before any send: a destination that hangs for its budget must not outwait it.
        let remembered = lane.interval_at(self.clock.now_ms());
        if !delivering {
            self.heal(key, lane).await.map_err(unhandled(&pending))?;
        }
        // Each round follows a change of the lane by someone else; a few are plenty.
        for _ in 0..4 {
            if pending.is_empty() {
                return Ok(out);
            }
            if !delivering {
                let owed = self.owed_now(&pending);
                let owing = self.store.owe(key, &owed, None).await;
                match owing.map_err(unhandled(&pending))? {
                    Owing::Owed => {
                        out.owed += owed.len();
                        return Ok(out);
                    }
                    Owing::Gone => return Ok(skipped("its destination was removed")),
                    Owing::Delivering => {}
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let (entering, reason) = if saved_since || left < self.policy.budget / 4 {
                // Too little time left to give the destination a fair try, or settings this
                // delivery did not read: the lane catches up with these at once, in an
                // invocation of its own.
                let to = self
                    .catch_up_now(key, remembered)
                    .await
                    .map_err(unhandled(&pending))?;
                let reason = if saved_since {
                    "the configuration was saved again while its last settings were refused"
                } else {
                    "no time left in this invocation"
                };
                (to, reason.to_owned())
            } else {
                let budget = Instant::now() + left.min(self.policy.budget);
                let sent = self.send(key, pending, sink, budget, false).await?;
                out.delivered += sent.delivered;
                out.rejected += sent.rejected;
                pending = sent.unsent;
                // However the time went, answering slowly or searching for the events it
                // rejects one request after another, the shard waited for it.
                let slow = Some(sent.took).filter(|&took| self.policy.is_slow(took, sent.bytes));
                match sent.trouble {
                    None if pending.is_empty() => {
                        if let Some(took) = slow {
                            // All delivered: not setting the lane aside costs only time.
                            match self.set_aside(key, took, remembered).await {
                                Ok(entered) => out.entered = entered,
                                Err(e) => {
                                    tracing::warn!(organization_id = key.organization_id, project_id = key.project_id, error = %e, "a slow destination could not be set aside");
                                }
                            }
                        }
                        return Ok(out);
                    }
                    // Not tried (left by a search for rejected events that reached its limit, or
                    // by the end of the delivery's time): no trouble of the destination's. A
                    // call of the lane's own goes on with them, holding no one: at once, or a
                    // hold away when this delivery held the shard.
                    None => {
                        let reason = sent.untried_because.unwrap_or_default();
                        let mut to = match slow {
                            Some(took) => self.slow_lane(key, took, remembered).await,
                            None => self.catch_up_now(key, remembered).await.map(|mut to| {
                                to.reason = Some(reason.clone());
                                to
                            }),
                        }
                        .map_err(unhandled(&pending))?;
                        to.since = Some(self.clock.now_ms());
                        (to, reason)
                    }
                    Some(trouble)
                        if trouble.is_retryable() && left < self.policy.budget * 9 / 10 =>
                    {
                        // Its turn came late in the batch, with less than its budget: no
                        // outage of its own yet. Its call tries again at once, with all of it.
                        let to = self
                            .catch_up_now(key, remembered)
                            .await
                            .map_err(unhandled(&pending))?;
                        (to, format!("{} (with part of its time)", trouble.message()))
                    }
                    Some(trouble) => {
                        let to = self
                            .after_trouble(key, &trouble, remembered, lane.version)
                            .await;
                        (
                            to.map_err(unhandled(&pending))?,
                            trouble.message().to_owned(),
                        )
                    }
                }
            };
            let owed = self.owed_now(&pending);
            let owing = self.store.owe(key, &owed, Some(&entering)).await;
            match owing.map_err(unhandled(&pending))? {
                Owing::Owed => {
                    out.owed += owed.len();
                    out.entered = Some(entering.state);
                    tracing::warn!(
                        organization_id = key.organization_id,
                        project_id = key.project_id,
                        state = entering.state.as_str(),
                        owed = owed.len(),
                        %reason,
                        "events kept owed to the destination"
                    );
                    return Ok(out);
                }
                Owing::Gone => return Ok(skipped("its destination was removed")),
                Owing::Delivering => {
                    delivering = true;
                    saved_since |= entering.refused_version.is_some();
                }
            }
        }
        Err(unhandled(&pending)(LaneError::Contended))
    }

    /// The lane's next state when its live events go to a call of their own, due at once
    /// (`interval`: what trouble there goes on from, as `Lane::interval_at` says).
    async fn catch_up_now(&self, key: &LaneKey, interval: u64) -> Result<Lane, LaneError> {
        let call = LaneCall::new(key, self.clock.now_ms());
        self.schedule(&call).await?;
        let mut to = Lane::to(LaneState::CatchingUp, Some(&call), interval);
        to.since = Some(self.clock.now_ms());
        Ok(to)
    }

    /// A destination that took `took` to answer a live delivery held the batch, and every
    /// tenant on its shard, that long: its live events are owed to its own calls, `slow_hold`
    /// apart, until one of them finds it quick again. The state it entered, if it was still
    /// delivering.
    async fn set_aside(
        &self,
        key: &LaneKey,
        took: Duration,
        interval: u64,
    ) -> Result<Option<LaneState>, LaneError> {
        let mut to = self.slow_lane(key, took, interval).await?;
        to.since = Some(self.clock.now_ms());
        if !self
            .store
            .update_from(key, &[LaneState::Delivering], &to)
            .await?
        {
            return Ok(None);
        }
        tracing::warn!(
            organization_id = key.organization_id,
            project_id = key.project_id,
            took_ms = took.as_millis() as u64,
            "the destination answered slowly; its events go through its own lane for a while"
        );
        Ok(Some(LaneState::CatchingUp))
    }

    /// The lane of a destination set aside as slow, its call scheduled a hold away (before the
    /// lane is written, so the call exists whatever happens next).
    async fn slow_lane(
        &self,
        key: &LaneKey,
        took: Duration,
        interval: u64,
    ) -> Result<Lane, LaneError> {
        let hold = self.policy.slow_hold;
        let call = LaneCall::new(key, self.clock.now_ms() + hold.as_millis() as i64);
        self.schedule(&call).await?;
        let mut to = Lane::to(LaneState::CatchingUp, Some(&call), interval);
        to.reason = Some(format!(
            "the destination took {:.1} s to answer (more than {:.1} s): its events are sent by \
             its own calls, every {} s, until it answers quickly again",
            took.as_secs_f64(),
            self.policy.slow_after.as_secs_f64(),
            hold.as_secs()
        ));
        Ok(to)
    }

    /// A lane that is not delivering always has a call on its way; should that call have been
    /// lost (dead-lettered after the service's own trouble), the next live batch sends it
    /// again, or else the sweep does. Whether it did.
    async fn heal(&self, key: &LaneKey, lane: &Lane) -> Result<bool, LaneError> {
        let now = self.clock.now_ms();
        let (Some(attempt), Some(due)) = (&lane.attempt, lane.next_attempt_at) else {
            return Ok(false);
        };
        if lane.state == LaneState::Delivering || due >= self.overdue_before() {
            return Ok(false);
        }
        // The same attempt, not a new one: a call that was only late (waiting on the lanes
        // queue while lane calls run at their concurrency limit) still counts when it comes,
        // so a lane behind a long queue is not starved by its own replacements. Whichever
        // copy comes first claims the attempt; the other then finds it taken.
        let call = LaneCall {
            lane: key.clone(),
            attempt: attempt.clone(),
            due_ms: now,
            early: false,
        };
        self.schedule(&call).await?;
        let to = Lane::to(lane.state, Some(&call), lane.interval_ms);
        let healed = self.store.update(key, attempt, &to).await?;
        if healed {
            tracing::warn!(
                organization_id = key.organization_id,
                project_id = key.project_id,
                overdue_ms = now - due,
                "the lane's scheduled attempt never came; scheduled again"
            );
        }
        Ok(healed)
    }

    /// A call due before this is lost (see [`Policy::lost_after`]).
    fn overdue_before(&self) -> i64 {
        self.clock.now_ms() - self.policy.lost_after.as_millis() as i64
    }

    /// The periodic sweep: lanes whose scheduled call never came, each given another. A quiet
    /// lane (no live events to notice it) would otherwise wait for ever. At most `limit` lanes,
    /// organizations taking turns, as long as `deadline` allows; how many were given one.
    pub async fn sweep(&self, limit: usize, deadline: Instant) -> Result<usize, LaneError> {
        use futures::StreamExt;
        let overdue = self.store.overdue(self.overdue_before(), limit).await?;
        let runs = super::sweep::by_organization(overdue, |key| &key.organization_id);
        Ok(futures::stream::iter(runs)
            .map(|run| self.heal_each(run, deadline))
            .buffer_unordered(ORGANIZATIONS_SWEPT_AT_ONCE)
            .fold(0, |healed, more| async move { healed + more })
            .await)
    }

    /// One organization's overdue lanes, one after another; how many were given a call.
    async fn heal_each(&self, lanes: Vec<LaneKey>, deadline: Instant) -> usize {
        let mut healed = 0;
        for key in lanes {
            if Instant::now() >= deadline {
                break;
            }
            let healing = async {
                match self.store.read(&key).await? {
                    Some(lane) => self.heal(&key, &lane).await,
                    None => Ok(false),
                }
            };
            match healing.await {
                Ok(true) => healed += 1,
                Ok(false) => {}
                // One lane's trouble (its organization's partition throttled) is its own: the
                // lanes after it in the sweep are healed all the same.
                Err(e) => {
                    tracing::warn!(organization_id = key.organization_id, project_id = key.project_id, error = %e, "an overdue lane could not be healed; the next sweep tries again");
                }
            }
        }
        healed
    }

    /// The lane a destination in trouble enters, with its next attempt scheduled (before the
    /// lane is written, so the call exists whatever happens next).
    async fn after_trouble(
        &self,
        key: &LaneKey,
        trouble: &DeliveryError,
        interval_ms: u64,
        version: u64,
    ) -> Result<Lane, LaneError> {
        let now = self.clock.now_ms();
        let (state, interval, due) = if trouble.is_refusal() {
            // A refusal is most often fixed where this service cannot see it (the role's trust
            // policy, the key enabled again in Datadog): the lane looks again at the longest
            // backoff, so such a fix is noticed without a save.
            let interval = self.policy.max_backoff.as_millis() as u64;
            (
                LaneState::Refused,
                interval,
                self.policy.jittered(interval, now),
            )
        } else {
            let interval = self.policy.next_interval(interval_ms);
            (
                LaneState::Retrying,
                interval,
                self.policy.jittered(interval, now),
            )
        };
        let call = LaneCall::new(key, due);
        self.schedule(&call).await?;
        let mut lane = Lane::to(state, Some(&call), interval);
        lane.since = Some(now);
        lane.reason = Some(trouble.message().to_owned());
        if state == LaneState::Refused {
            lane.refused_version = Some(version);
        }
        Ok(lane)
    }

    pub(super) async fn schedule(&self, call: &LaneCall) -> Result<(), LaneError> {
        let wait = (call.due_ms - self.clock.now_ms()).max(0) as u64;
        let delay = Duration::from_millis(wait).min(MAX_DELAY);
        let call = LaneCall {
            early: delay < EARLY_CALL,
            ..call.clone()
        };
        self.timers.schedule(&call, delay).await
    }

    /// Sends events (oldest first; a `probe` tries once) and records what the destination
    /// rejected and the attempt.
    async fn send(
        &self,
        key: &LaneKey,
        mut events: Vec<(StoredKey, AuditEvent)>,
        sink: &dyn Sink,
        deadline: Instant,
        probe: bool,
    ) -> Result<Sent, Unhandled> {
        events.sort_by(|a, b| a.0.sort_key.cmp(&b.0.sort_key));
        // An event owed twice (a batch handed over again) is sent once.
        events.dedup_by(|a, b| a.0.sort_key == b.0.sort_key);
        // Split rather than copied: the sink borrows the events alone, and the positions of its
        // failures are positions in `keys` too.
        let (keys, list): (Vec<StoredKey>, Vec<AuditEvent>) = events.into_iter().unzip();
        let began = Instant::now();
        let failures = if probe {
            sink.probe(&list, deadline).await
        } else {
            sink.deliver(&list, deadline).await
        };
        let took = began.elapsed();
        let mut failed: Vec<Option<DeliveryError>> = vec![None; list.len()];
        for (i, e) in failures {
            if let Some(slot) = failed.get_mut(i) {
                *slot = Some(e);
            }
        }
        // Events the search did not get to stay owed, for the next page to search on, while
        // the destination takes others (or is in trouble); one that rejected all of them most
        // likely takes none of these either: they are listed, not sent again and again.
        let rejected_all = failed.iter().all(|f| {
            f.as_ref()
                .is_some_and(|e| e.is_rejection() || matches!(e, DeliveryError::Unsearched(_)))
        });
        if rejected_all {
            for failure in failed.iter_mut().flatten() {
                if let DeliveryError::Unsearched(reason) = failure {
                    *failure = DeliveryError::Rejected(std::mem::take(reason));
                }
            }
        }
        let trouble = failed
            .iter()
            .flatten()
            .find(|e| e.is_refusal())
            .or_else(|| failed.iter().flatten().find(|e| e.is_retryable()))
            .cloned();
        let mut rejected: HashMap<String, Vec<StoredKey>> = HashMap::new();
        let mut sent = Sent {
            delivered: 0,
            rejected: 0,
            oversized: 0,
            took,
            // What it was sent: an event over its limit never was, nor took it any time.
            bytes: list
                .iter()
                .zip(&failed)
                .filter(|(_, f)| !matches!(f, Some(DeliveryError::Oversized(_))))
                .map(|(e, _)| e.json().len() as u64)
                .sum(),
            unsent: Vec::new(),
            untried: 0,
            untried_because: None,
            searched: false,
            trouble: None,
        };
        let mut first_rejection = None;
        for ((key, event), failure) in keys.into_iter().zip(list).zip(failed) {
            match failure {
                None => sent.delivered += 1,
                Some(rejection) if rejection.is_rejection() => {
                    sent.rejected += 1;
                    sent.oversized += usize::from(matches!(rejection, DeliveryError::Oversized(_)));
                    rejected
                        .entry(rejection.message().to_owned())
                        .or_default()
                        .push(key);
                    first_rejection.get_or_insert(rejection);
                }
                Some(failure) => {
                    sent.searched |= matches!(failure, DeliveryError::Unsearched(_));
                    if let DeliveryError::Unsearched(why) | DeliveryError::NotSent(why) = failure {
                        sent.untried += 1;
                        sent.untried_because.get_or_insert(why);
                    }
                    sent.unsent.push((key, event));
                }
            }
        }
        let rejected: Vec<(String, Vec<StoredKey>)> = rejected.into_iter().collect();
        for (i, (reason, keys)) in rejected.iter().enumerate() {
            let recorded = self
                .store
                .record_failures(key, keys, reason, self.clock.now())
                .await;
            if let Err(error) = recorded {
                // What was delivered stays delivered; what was not recorded is still to do.
                let events = rejected[i..]
                    .iter()
                    .flat_map(|(_, keys)| keys.iter().cloned())
                    .chain(sent.unsent.iter().map(|(key, _)| key.clone()))
                    .collect();
                return Err(Unhandled { error, events });
            }
        }
        sent.searched |= sent.rejected > sent.oversized;
        let failed = sent.rejected + sent.unsent.len() - sent.untried;
        let shown = trouble.as_ref().or(first_rejection.as_ref());
        // Health is for people; delivery goes on without it, and a live batch (every tenant on
        // its shard) does not wait out the organization's throttled partition for it.
        let recorded =
            self.store
                .record_attempt(key, sent.delivered, failed, shown, self.clock.now());
        let problem = match tokio::time::timeout(HEALTH_PATIENCE, recorded).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("not written within {HEALTH_PATIENCE:?}")),
        };
        if let Some(error) = problem {
            tracing::warn!(organization_id = key.organization_id, project_id = key.project_id, %error, "could not record delivery health");
        }
        sent.trouble = trouble;
        Ok(sent)
    }

    /// The call of a lane whose destination was removed: what it was owed is forgotten.
    async fn removed(
        &self,
        call: &LaneCall,
        read_ms: i64,
        deadline: Instant,
    ) -> Result<Outcome, LaneError> {
        if !self.forget(&call.lane, read_ms, deadline).await? {
            // More than one invocation's worth: a fresh call goes on.
            self.schedule(&LaneCall::new(&call.lane, self.clock.now_ms()))
                .await?;
        }
        Ok(skipped("its destination was removed"))
    }

    /// A lane whose configuration cannot be read (nor the lane with it): the call fails, to
    /// come again (a deploy out of step mends by itself, and the lanes queue, then its
    /// dead-letter queue's alarm and the sweep, bring the call back), but first what it is
    /// owed past the retry window is listed as failures, for a replay once it reads again,
    /// rather than outlive the window unlisted.
    async fn damaged(
        &self,
        call: &LaneCall,
        reason: &str,
        deadline: Instant,
    ) -> Result<Outcome, LaneError> {
        let now = self.clock.now_ms();
        self.expire_owed(&call.lane, OwedSpan::ALL, reason, now, deadline)
            .await?;
        Err(LaneError::Store(format!(
            "the lane's configuration cannot be read: {reason}"
        )))
    }

    /// A scheduled attempt. `target` is the lane's destination as read just now; `deadline`
    /// the invocation's.
    pub async fn call(
        &self,
        call: &LaneCall,
        target: Target<'_>,
        source: &impl EventSource,
        deadline: Instant,
    ) -> Result<Outcome, LaneError> {
        let key = &call.lane;
        let (lane, sink) = match target {
            Target::Saved(lane, sink) => (lane, sink),
            Target::Removed { read_ms } => return self.removed(call, read_ms, deadline).await,
            Target::Damaged { reason } => return self.damaged(call, &reason, deadline).await,
        };
        if lane.attempt.as_deref() != Some(call.attempt.as_str())
            || lane.state == LaneState::Delivering
        {
            if call.early {
                // Perhaps only ahead of the lane's write: one more look, once.
                let again = LaneCall {
                    early: false,
                    due_ms: self.clock.now_ms() + LOOK_AGAIN.as_millis() as i64,
                    ..call.clone()
                };
                self.timers.schedule(&again, LOOK_AGAIN).await?;
                return Ok(skipped("not expected yet: looks again shortly"));
            }
            return Ok(skipped("another attempt replaced it"));
        }
        let now = self.clock.now_ms();
        if call.due_ms > now + EARLY_TOLERANCE_MS {
            self.schedule(call).await?;
            return Ok(skipped("not due yet"));
        }
        // Claim the attempt under a lease: should this invocation die, the lease's call
        // takes over.
        let lease = LaneCall::new(key, now + self.policy.lease.as_millis() as i64);
        self.schedule(&lease).await?;
        let held = Lane::to(lane.state, Some(&lease), lane.interval_ms);
        if !self.store.update(key, &call.attempt, &held).await? {
            return Ok(skipped("another attempt replaced it"));
        }
        let mut out = Outcome {
            expired: self.expire(key, lane, now, deadline).await?,
            ..Outcome::default()
        };
        // A refused lane whose configuration was saved since is tried again (the save's own
        // call to do so may have been lost, or raced with the refusal).
        let fixed = lane.state == LaneState::Refused && lane.saved_since_refusal();
        match lane.state {
            LaneState::Refused if fixed => {
                let retrying = Lane {
                    state: LaneState::Retrying,
                    interval_ms: 0,
                    ..lane.clone()
                };
                self.catch_up(key, &retrying, lease, sink, source, deadline, &mut out)
                    .await?;
                Ok(out)
            }
            LaneState::Paused => {
                let next = LaneCall::new(key, now + self.policy.housekeeping.as_millis() as i64);
                self.schedule(&next).await?;
                let to = Lane::to(lane.state, Some(&next), lane.interval_ms);
                self.store.update(key, &lease.attempt, &to).await?;
                Ok(out)
            }
            _ => {
                self.catch_up(key, lane, lease, sink, source, deadline, &mut out)
                    .await?;
                Ok(out)
            }
        }
    }

    /// Delivers what the lane owes, oldest first, page by page, until nothing is owed (the
    /// lane delivers again), the destination is in trouble again, or time runs out (a fresh
    /// call goes on from there). The first page is the probe of a retrying lane.
    #[allow(clippy::too_many_arguments)]
    async fn catch_up(
        &self,
        key: &LaneKey,
        lane: &Lane,
        held: LaneCall,
        sink: &dyn Sink,
        source: &impl EventSource,
        deadline: Instant,
        out: &mut Outcome,
    ) -> Result<(), LaneError> {
        let mut state = lane.state;
        // Its interval, and what new trouble doubles once it is back (`Lane::interval_at`).
        let mut remembered = lane.clone();
        // How long the last page took, when the destination was slow to take it.
        let mut slow: Option<Duration> = None;
        // Whether the destination answered a page of this call, if only to reject its events
        // (it took the request, credentials and all).
        let mut answered = false;
        loop {
            // A page needs its budget (a fresh invocation has it; a probe the live one, a page
            // of catching up its own): without it, the destination would be blamed for the
            // invocation's own end. A fresh call goes on instead.
            let needed = if matches!(state, LaneState::Retrying | LaneState::Refused) {
                self.policy.budget
            } else {
                self.policy.catch_up_budget
            };
            if deadline.saturating_duration_since(Instant::now()) < needed {
                return self
                    .hand_on(key, state, &held, remembered.interval_ms)
                    .await;
            }
            let Some(fresh) = self.store.read(key).await? else {
                return Ok(());
            };
            if fresh.attempt.as_deref() != Some(held.attempt.as_str()) {
                out.skipped = Some("another attempt replaced it");
                return Ok(());
            }
            let probe = matches!(state, LaneState::Retrying | LaneState::Refused);
            let limit = if probe {
                self.policy.probe_page
            } else {
                self.policy.page
            };
            let mut page = self.store.owed(key, OwedSpan::of(&fresh), limit).await?;
            // Cut by bytes too (at least one event): events may be up to 1 MiB each.
            let mut bytes = 0;
            if let Some(cut) = page.iter().position(|o| {
                bytes += o.bytes;
                bytes > self.policy.page_bytes
            }) {
                page.truncate(cut.max(1));
            }
            if page.is_empty() {
                if let Some(took) = slow {
                    // Still slow: live delivery would hold the shard again.
                    let to = self.slow_lane(key, took, remembered.interval_ms).await?;
                    self.store.update(key, &held.attempt, &to).await?;
                    tracing::info!(
                        organization_id = key.organization_id,
                        project_id = key.project_id,
                        delivered = out.delivered,
                        took_ms = took.as_millis() as u64,
                        "the destination is still slow; its events keep going through its own lane"
                    );
                    return Ok(());
                }
                if probe && !answered && !lane.fixed_by_person() {
                    // Nothing to probe with (what it owed expired into failures, or its pages'
                    // events were gone): the destination has not shown it is back, and live
                    // delivery would hold the shard on it. The lane stays as it is, looking again
                    // at its interval; what becomes owed meanwhile is its next probe.
                    return self
                        .look_again(key, state, &held, remembered.interval_ms)
                        .await;
                }
                if self.store.finish(key, &held.attempt, fresh.writes).await? {
                    out.entered = Some(LaneState::Delivering);
                    tracing::info!(
                        organization_id = key.organization_id,
                        project_id = key.project_id,
                        delivered = out.delivered,
                        "destination caught up; live delivery resumes"
                    );
                    return Ok(());
                }
                // Something was owed meanwhile: look again.
                continue;
            }
            let keys: Vec<StoredKey> = page.iter().map(|o| o.event.clone()).collect();
            let found = source.events(key, &keys).await?;
            let missing = super::left_out(&keys, &found);
            if !missing.is_empty() {
                self.store
                    .record_failures(key, &missing, super::NOT_READ_BACK, self.clock.now())
                    .await?;
            }
            // Reading them (the tables throttled) may have taken the time the page needs.
            if deadline.saturating_duration_since(Instant::now()) < needed {
                return self
                    .hand_on(key, state, &held, remembered.interval_ms)
                    .await;
            }
            let budget = deadline.min(Instant::now() + self.policy.catch_up_budget);
            // Nothing left to send (the page's events gone): no call to the destination.
            let sent = if found.is_empty() {
                Sent::default()
            } else {
                self.send(key, found, sink, budget, probe).await?
            };
            // A call holds no one else: the time it spends finding the events the destination
            // rejects is no slowness of the destination's own.
            let searched = sent.searched;
            slow =
                Some(sent.took).filter(|took| !searched && self.policy.is_slow(*took, sent.bytes));
            out.delivered += sent.delivered;
            out.rejected += sent.rejected;
            // Rejections it made itself: a request reached it. Events never sent say nothing.
            answered |= sent.rejected > sent.oversized;
            let unsent: std::collections::HashSet<&str> = sent
                .unsent
                .iter()
                .map(|(k, _)| k.sort_key.as_str())
                .collect();
            // Delivered, rejected, or no longer stored: owed no more.
            let settled: Vec<Owed> = page
                .into_iter()
                .filter(|o| !unsent.contains(o.event.sort_key.as_str()))
                .collect();
            // A page the destination answered nothing of in its time (one request, rejected,
            // and no time to search it) got nowhere: tried again at once, it would get nowhere
            // again, and a probe that sent nothing found nothing back.
            let nowhere = sent.delivered + sent.rejected == 0 && sent.untried > 0;
            let trouble = sent.trouble.or_else(|| {
                nowhere.then(|| {
                    let why = format!(
                        "the destination took none of a page in the time it had: {}",
                        sent.untried_because.as_deref().unwrap_or_default()
                    );
                    // A refused lane stays refused, for what it was refused.
                    match (state, &lane.reason) {
                        (LaneState::Refused, Some(reason)) => {
                            DeliveryError::Refused(reason.clone())
                        }
                        _ => DeliveryError::Retryable(why),
                    }
                })
            });
            // A probe the destination took events of: the lane catches up, written before the
            // page is settled, so that a call taking over from one that died in between goes
            // on catching up rather than finding nothing owed to a lane still in trouble.
            let mut still_held = true;
            if trouble.is_none() && state != LaneState::CatchingUp && sent.delivered > 0 {
                // A retrying lane's probe went through; a refused one's interval is always the
                // longest, nothing to go on doubling.
                if state == LaneState::Retrying {
                    remembered.recovered_at = Some(self.clock.now_ms());
                } else {
                    remembered.interval_ms = 0;
                }
                state = LaneState::CatchingUp;
                let mut to = Lane::to(state, Some(&held), remembered.interval_ms);
                to.recovered_at = remembered.recovered_at;
                still_held = self.store.update(key, &held.attempt, &to).await?;
                if still_held {
                    out.entered = Some(state);
                    tracing::info!(
                        organization_id = key.organization_id,
                        project_id = key.project_id,
                        "destination takes events again; catching up"
                    );
                }
            }
            self.store.settle(key, &settled).await?;
            if !still_held {
                return Ok(());
            }
            if let Some(trouble) = trouble {
                let from = if state == LaneState::CatchingUp {
                    remembered.interval_at(self.clock.now_ms())
                } else {
                    remembered.interval_ms
                };
                let mut to = self
                    .after_trouble(key, &trouble, from, lane.version)
                    .await?;
                // Still the same stretch away from delivering.
                to.since = None;
                self.store.update(key, &held.attempt, &to).await?;
                out.entered = Some(to.state);
                tracing::warn!(
                    organization_id = key.organization_id,
                    project_id = key.project_id,
                    state = to.state.as_str(),
                    next_attempt_in_ms =
                        to.next_attempt_at.unwrap_or_default() - self.clock.now_ms(),
                    reason = trouble.message(),
                    "attempt failed; the destination stays owed its events"
                );
                return Ok(());
            }
            // A probe that delivered nothing (its page's events gone, or each one rejected)
            // proves nothing of an outage's end: the next page probes.
            if probe && sent.delivered == 0 {
                continue;
            }
        }
    }

    /// An attempt without the time its page needs: a fresh call, due at once, goes on with it
    /// in the lane's `state`.
    async fn hand_on(
        &self,
        key: &LaneKey,
        state: LaneState,
        held: &LaneCall,
        interval_ms: u64,
    ) -> Result<(), LaneError> {
        let now = self.clock.now_ms();
        self.call_at(key, state, held, interval_ms, now).await?;
        Ok(())
    }

    /// The lane's next call, due at `due_ms`, in place of `held`; the lane stays in `state`.
    async fn call_at(
        &self,
        key: &LaneKey,
        state: LaneState,
        held: &LaneCall,
        interval_ms: u64,
        due_ms: i64,
    ) -> Result<LaneCall, LaneError> {
        let next = LaneCall::new(key, due_ms);
        self.schedule(&next).await?;
        let to = Lane::to(state, Some(&next), interval_ms);
        self.store.update(key, &held.attempt, &to).await?;
        Ok(next)
    }

    /// A retrying or refused lane's next call, at its interval (the longest for a refused
    /// one), with no new trouble to lengthen it.
    async fn look_again(
        &self,
        key: &LaneKey,
        state: LaneState,
        held: &LaneCall,
        interval_ms: u64,
    ) -> Result<(), LaneError> {
        let wait = match state {
            LaneState::Refused => self.policy.max_backoff.as_millis() as u64,
            _ => interval_ms.max(self.policy.first_backoff.as_millis() as u64),
        };
        let due = self.policy.jittered(wait, self.clock.now_ms());
        let next = self.call_at(key, state, held, interval_ms, due).await?;
        tracing::info!(
            organization_id = key.organization_id,
            project_id = key.project_id,
            state = state.as_str(),
            next_attempt_in_ms = next.due_ms - self.clock.now_ms(),
            "nothing owed to probe the destination with; the lane stays as it is"
        );
        Ok(())
    }

    /// Owed events beyond the retry window become failures, with the lane's reason.
    async fn expire(
        &self,
        key: &LaneKey,
        lane: &Lane,
        now: i64,
        deadline: Instant,
    ) -> Result<usize, LaneError> {
        let why = lane
            .reason
            .as_deref()
            .unwrap_or("the destination did not take events");
        self.expire_owed(key, OwedSpan::of(lane), why, now, deadline)
            .await
    }

    /// The lane's owed events of `span` beyond the retry window at `now` become failures,
    /// for `why` they were not delivered, page by page while `deadline` allows: how many.
    async fn expire_owed(
        &self,
        key: &LaneKey,
        span: OwedSpan,
        why: &str,
        now: i64,
        deadline: Instant,
    ) -> Result<usize, LaneError> {
        let span = span.before(now - self.policy.retry_window.as_millis() as i64);
        let reason = format!(
            "not delivered within the {} retry window: {why}",
            self.policy.window_name()
        );
        let mut expired = 0;
        while Instant::now() < deadline {
            let page = self.store.owed(key, span, self.policy.page).await?;
            if page.is_empty() {
                break;
            }
            let keys: Vec<StoredKey> = page.iter().map(|o| o.event.clone()).collect();
            self.store
                .record_failures(key, &keys, &reason, self.clock.now())
                .await?;
            self.store.settle(key, &page).await?;
            expired += page.len();
        }
        if expired > 0 {
            tracing::warn!(
                organization_id = key.organization_id,
                project_id = key.project_id,
                expired,
                %reason,
                "owed events became failures"
            );
        }
        Ok(expired)
    }
}

fn skipped(why: &'static str) -> Outcome {
    Outcome {
        skipped: Some(why),
        ..Outcome::default()
    }
}
