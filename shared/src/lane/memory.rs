//! In-memory doubles of the lanes' ports: a store (which also answers for the projects'
//! configurations), a queue of timers, stored events and destinations that answer as scripted.
//! For unit tests of lanes and of the stream function without an emulator.

use super::{
    EventSource, Lane, LaneCall, LaneError, LaneKey, LaneState, LaneStore, Owed, OwedSpan, Owing,
    Timers,
};
use crate::AuditEvent;
use crate::destination::{ConnectionTest, DeliveryError, Destinations, Failures, Sink};
use crate::store::StoredKey;
use crate::streaming::StreamingConfig;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Default, Clone)]
pub struct MemoryLane {
    /// Whether the project has a destination. Its owed events outlive it, as owed items in the
    /// table outlive the configuration item, until someone forgets them.
    pub configured: bool,
    pub lane: Lane,
    /// Owed events by (owed at, event sort key), as the table orders them.
    pub owed: BTreeMap<(i64, String), Owed>,
    pub failures: Vec<(StoredKey, String)>,
    /// `(delivered, failed)` of every attempt.
    pub attempts: Vec<(usize, usize)>,
    /// The secret version the project's configuration names.
    pub secret_version: Option<String>,
}

impl MemoryLane {
    /// What a save of the configuration does to the lane kept in its item.
    pub(crate) fn saved(&mut self) {
        self.configured = true;
        self.lane.version += 1;
        self.lane.writes += crate::streaming::WRITES_MOVED_BY_SAVE;
        self.lane.recovered_at = None;
    }
}

fn mark(keys: &Mutex<HashSet<LaneKey>>, key: &LaneKey, on: bool) {
    let mut keys = lock(keys);
    if on {
        keys.insert(key.clone());
    } else {
        keys.remove(key);
    }
}

/// Lanes kept in memory. A lane exists while its project has a destination: from
/// [`MemoryLanes::configure`] or a save until a delete or [`MemoryLanes::unconfigure`].
#[derive(Debug, Default)]
pub struct MemoryLanes {
    pub(crate) lanes: Mutex<HashMap<LaneKey, MemoryLane>>,
    /// Projects whose configuration cannot be read (the table fails for them, and for their
    /// organization's own items).
    pub(crate) unreadable: Mutex<HashSet<LaneKey>>,
    /// Projects whose configuration item is damaged (read, but not understood).
    pub(crate) damaged: Mutex<HashSet<LaneKey>>,
    /// Projects whose owed events and failures cannot be written (their organization's
    /// partition throttled), though their configuration reads.
    pub(crate) unwritable: Mutex<HashSet<LaneKey>>,
    /// Projects whose configuration reads take this long (their organization's partition
    /// throttled, the SDK's retries waiting), on tokio's clock.
    pub(crate) slow: Mutex<HashMap<LaneKey, std::time::Duration>>,
    /// Projects whose health writes never answer.
    pub(crate) health_hanging: Mutex<HashSet<LaneKey>>,
    /// Projects whose settling of delivered events fails (the call dies there).
    pub(crate) unsettled: Mutex<HashSet<LaneKey>>,
    /// The rest of the configuration table (`streaming::memory`).
    pub(crate) table: Mutex<crate::streaming::memory::Table>,
    /// Projects noted as having stored events.
    pub projects: crate::streaming::MemoryProjects,
}

impl MemoryLanes {
    pub fn configure(&self, key: &LaneKey) {
        lock(&self.lanes).entry(key.clone()).or_default().configured = true;
    }

    /// A save that names a new secret version.
    pub fn name_secret(&self, key: &LaneKey, version: &str) {
        self.with(key, |m| {
            m.saved();
            m.secret_version = Some(version.to_owned());
        });
    }

    pub fn set_unreadable(&self, key: &LaneKey, unreadable: bool) {
        mark(&self.unreadable, key, unreadable);
    }

    pub fn set_slow(&self, key: &LaneKey, reads_take: std::time::Duration) {
        lock(&self.slow).insert(key.clone(), reads_take);
    }

    pub fn set_unwritable(&self, key: &LaneKey, unwritable: bool) {
        mark(&self.unwritable, key, unwritable);
    }

    /// The project's health writes never answer (its organization's partition throttled,
    /// the SDK retrying).
    pub fn set_health_hanging(&self, key: &LaneKey, hanging: bool) {
        mark(&self.health_hanging, key, hanging);
    }

    /// The project's settling of delivered events fails, as a call that dies there would.
    pub fn set_settles_failing(&self, key: &LaneKey, failing: bool) {
        mark(&self.unsettled, key, failing);
    }

    fn writable(&self, key: &LaneKey) -> Result<(), LaneError> {
        if lock(&self.unwritable).contains(key) {
            return Err(LaneError::Store("the table refused the write".into()));
        }
        Ok(())
    }

    /// The project's configuration item can be read but not understood, for good.
    pub fn damage(&self, key: &LaneKey) {
        lock(&self.damaged).insert(key.clone());
    }

    /// A save of the lane's configuration: its version moves on.
    pub fn saved(&self, key: &LaneKey) {
        self.with(key, MemoryLane::saved);
    }

    /// The destination is removed: the lane goes with it, what it is owed stays.
    pub fn unconfigure(&self, key: &LaneKey) -> Option<MemoryLane> {
        self.with(key, |m| {
            let before = m.clone();
            m.configured = false;
            m.lane = Lane::default();
            m.secret_version = None;
            before
        })
    }

    pub fn get(&self, key: &LaneKey) -> MemoryLane {
        lock(&self.lanes).get(key).cloned().unwrap_or_default()
    }

    /// `f` on the lane of a configured destination.
    pub(crate) fn with<R>(&self, key: &LaneKey, f: impl FnOnce(&mut MemoryLane) -> R) -> Option<R> {
        lock(&self.lanes)
            .get_mut(key)
            .filter(|m| m.configured)
            .map(f)
    }

    /// `f` on what is kept for the project, configured or not.
    fn kept<R>(&self, key: &LaneKey, f: impl FnOnce(&mut MemoryLane) -> R) -> R {
        f(lock(&self.lanes).entry(key.clone()).or_default())
    }
}

fn apply(lane: &mut Lane, to: &Lane) {
    lane.state = to.state;
    lane.attempt.clone_from(&to.attempt);
    lane.next_attempt_at = to.next_attempt_at;
    lane.interval_ms = to.interval_ms;
    if lane.since.is_none() {
        lane.since = to.since;
    }
    if to.reason.is_some() {
        lane.reason.clone_from(&to.reason);
    }
    if to.paused_at.is_some() {
        lane.paused_at = to.paused_at;
    }
    if to.recovered_at.is_some() {
        lane.recovered_at = to.recovered_at;
    }
    if to.refused_version.is_some() || to.state != LaneState::Refused {
        lane.refused_version = to.refused_version;
    }
}

impl LaneStore for MemoryLanes {
    async fn owe(
        &self,
        key: &LaneKey,
        owed: &[Owed],
        entering: Option<&Lane>,
    ) -> Result<Owing, LaneError> {
        self.writable(key)?;
        Ok(self
            .with(key, |m| {
                match (m.lane.state, entering) {
                    // Refused under settings a save has since replaced: not this lane's.
                    (LaneState::Delivering, Some(to))
                        if to.refused_version.is_some_and(|v| v != m.lane.version) =>
                    {
                        return Owing::Delivering;
                    }
                    (LaneState::Delivering, Some(to)) => apply(&mut m.lane, to),
                    (LaneState::Delivering, None) => return Owing::Delivering,
                    _ => {}
                }
                for o in owed {
                    m.owed
                        .insert((o.owed_at_ms, o.event.sort_key.clone()), o.clone());
                }
                m.lane.writes += 1;
                m.lane.owed += owed.len() as u64;
                Owing::Owed
            })
            .unwrap_or(Owing::Gone))
    }

    async fn read(&self, key: &LaneKey) -> Result<Option<Lane>, LaneError> {
        if lock(&self.unreadable).contains(key) {
            return Err(LaneError::Store("the table failed the read".into()));
        }
        Ok(self.with(key, |m| m.lane.clone()))
    }

    async fn update(&self, key: &LaneKey, attempt: &str, to: &Lane) -> Result<bool, LaneError> {
        Ok(self
            .with(key, |m| {
                if m.lane.attempt.as_deref() != Some(attempt) {
                    return false;
                }
                apply(&mut m.lane, to);
                true
            })
            .unwrap_or(false))
    }

    async fn update_from(
        &self,
        key: &LaneKey,
        from: &[LaneState],
        to: &Lane,
    ) -> Result<bool, LaneError> {
        Ok(self
            .with(key, |m| {
                if !from.is_empty() && !from.contains(&m.lane.state) {
                    return false;
                }
                apply(&mut m.lane, to);
                true
            })
            .unwrap_or(false))
    }

    async fn finish(&self, key: &LaneKey, attempt: &str, writes: u64) -> Result<bool, LaneError> {
        Ok(self
            .with(key, |m| {
                if m.lane.attempt.as_deref() != Some(attempt) || m.lane.writes != writes {
                    return false;
                }
                m.lane = Lane {
                    writes: m.lane.writes,
                    version: m.lane.version,
                    owed_from: m.lane.owed_from,
                    interval_ms: m.lane.interval_ms,
                    recovered_at: m.lane.recovered_at,
                    ..Lane::default()
                };
                true
            })
            .unwrap_or(false))
    }

    async fn owed(
        &self,
        key: &LaneKey,
        span: OwedSpan,
        limit: usize,
    ) -> Result<Vec<Owed>, LaneError> {
        let all = lock(&self.lanes)
            .get(key)
            .map(|m| m.owed.clone())
            .unwrap_or_default();
        Ok(all
            .into_values()
            .filter(|o| span.holds(o.owed_at_ms))
            .take(limit)
            .collect())
    }

    async fn settle(&self, key: &LaneKey, owed: &[Owed]) -> Result<(), LaneError> {
        if lock(&self.unsettled).contains(key) {
            return Err(LaneError::Store("the call died settling its page".into()));
        }
        self.kept(key, |m| {
            for o in owed {
                if m.owed
                    .remove(&(o.owed_at_ms, o.event.sort_key.clone()))
                    .is_some()
                {
                    m.lane.owed = m.lane.owed.saturating_sub(1);
                }
            }
        });
        Ok(())
    }

    async fn overdue(&self, before_ms: i64, limit: usize) -> Result<Vec<LaneKey>, LaneError> {
        let found = lock(&self.lanes)
            .iter()
            .filter(|(_, m)| m.configured && m.lane.state != LaneState::Delivering)
            .filter_map(|(key, m)| {
                Some(super::sweep::Overdue {
                    organization: key.organization_id.clone(),
                    due_ms: m.lane.next_attempt_at?,
                    lane: key.clone(),
                })
            })
            .filter(|overdue| overdue.due_ms < before_ms)
            .collect();
        Ok(super::sweep::take_turns(found, limit))
    }

    async fn record_failures(
        &self,
        key: &LaneKey,
        events: &[StoredKey],
        reason: &str,
        now: time::OffsetDateTime,
    ) -> Result<(), LaneError> {
        self.writable(key)?;
        self.with(key, |m| {
            m.failures
                .extend(events.iter().map(|e| (e.clone(), reason.to_owned())));
        });
        self.log_failures(key, events, reason, now);
        Ok(())
    }

    async fn oldest_owed_at(
        &self,
        key: &LaneKey,
        span: OwedSpan,
    ) -> Result<Option<i64>, LaneError> {
        if lock(&self.unreadable).contains(key) {
            return Err(LaneError::Store("the table failed the query".into()));
        }
        Ok(self.kept(key, |m| {
            m.owed.keys().map(|(at, _)| *at).find(|at| span.holds(*at))
        }))
    }

    async fn record_attempt(
        &self,
        key: &LaneKey,
        delivered: usize,
        failed: usize,
        _error: Option<&DeliveryError>,
        _now: time::OffsetDateTime,
    ) -> Result<(), LaneError> {
        if lock(&self.health_hanging).contains(key) {
            std::future::pending::<()>().await;
        }
        self.with(key, |m| m.attempts.push((delivered, failed)));
        Ok(())
    }
}

/// Scheduled calls and deferred events, in the order they were made; deferring refused when
/// told to.
#[derive(Debug, Default)]
pub struct MemoryTimers {
    pub calls: Mutex<VecDeque<(LaneCall, Duration)>>,
    pub deferred: Mutex<Vec<(super::Deferred, Duration)>>,
    pub refusing_deferrals: std::sync::atomic::AtomicBool,
}

impl MemoryTimers {
    pub fn take(&self) -> Vec<(LaneCall, Duration)> {
        lock(&self.calls).drain(..).collect()
    }

    pub fn take_deferred(&self) -> Vec<(super::Deferred, Duration)> {
        lock(&self.deferred).drain(..).collect()
    }
}

impl Timers for MemoryTimers {
    async fn schedule(&self, call: &LaneCall, delay: Duration) -> Result<(), LaneError> {
        lock(&self.calls).push_back((call.clone(), delay));
        Ok(())
    }

    async fn defer(&self, deferred: &super::Deferred, delay: Duration) -> Result<(), LaneError> {
        if self
            .refusing_deferrals
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(LaneError::Store(
                "the deferred queue refused the message".into(),
            ));
        }
        lock(&self.deferred).push((deferred.clone(), delay));
        Ok(())
    }
}

/// Stored events, by sort key.
#[derive(Debug, Default)]
pub struct MemoryEvents {
    pub events: Mutex<HashMap<String, (StoredKey, AuditEvent)>>,
    /// How long each read takes, on tokio's clock (the events table throttled).
    pub reads_take: Mutex<std::time::Duration>,
}

impl MemoryEvents {
    pub fn put(&self, key: &StoredKey, event: &AuditEvent) {
        lock(&self.events).insert(key.sort_key.clone(), (key.clone(), event.clone()));
    }
}

impl EventSource for MemoryEvents {
    async fn events(
        &self,
        _lane: &LaneKey,
        keys: &[StoredKey],
    ) -> Result<Vec<(StoredKey, AuditEvent)>, LaneError> {
        let took = *lock(&self.reads_take);
        if !took.is_zero() {
            tokio::time::sleep(took).await;
        }
        let events = lock(&self.events);
        Ok(keys
            .iter()
            .filter_map(|k| events.get(&k.sort_key).cloned())
            .collect())
    }
}

/// How a scripted destination answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Take,
    Fail(DeliveryError),
    /// Never answers (a hung destination, or an invocation that dies while waiting).
    Hang,
    /// Answers nothing until the deadline it was given, as a real destination's client gives
    /// up on a destination that does not answer.
    TimeOut,
    /// Takes every event, after this long.
    Slow(std::time::Duration),
    /// Takes a probe's events and fails every other request so (a destination that fails
    /// again as soon as a probe finds it back).
    TakesOnlyProbes(DeliveryError),
    /// After this long, rejects the first event (as the destination's searches for such events
    /// take) and takes the others.
    SlowToReject(std::time::Duration),
    /// Rejects the first event, and takes the last or fails it with `last`: the others were
    /// sent beside the first in requests the search for it, out of splits, did not look into.
    SearchStopped {
        last: Option<DeliveryError>,
    },
    /// After this long, takes the first half of the events (none of one); the delivery's time
    /// ran out before the others were sent.
    RanOutOfTime(std::time::Duration),
}

/// A destination that answers every request as told, and keeps what it took, in order.
#[derive(Debug)]
pub struct ScriptedSink {
    pub answer: Mutex<Answer>,
    pub received: Mutex<Vec<AuditEvent>>,
    pub requests: Mutex<usize>,
    /// Requests made as probes (one try, no retries).
    pub probes: Mutex<usize>,
}

impl Default for ScriptedSink {
    fn default() -> Self {
        Self {
            answer: Mutex::new(Answer::Take),
            received: Mutex::default(),
            requests: Mutex::default(),
            probes: Mutex::default(),
        }
    }
}

impl ScriptedSink {
    /// One request, answered as `answer` says.
    async fn answer_with(
        &self,
        answer: Answer,
        events: &[AuditEvent],
        deadline: tokio::time::Instant,
    ) -> Failures {
        *lock(&self.requests) += 1;
        match answer {
            Answer::Take => {
                lock(&self.received).extend(events.iter().cloned());
                Vec::new()
            }
            Answer::Fail(e) | Answer::TakesOnlyProbes(e) => {
                (0..events.len()).map(|i| (i, e.clone())).collect()
            }
            Answer::Hang => std::future::pending().await,
            Answer::Slow(took) => {
                tokio::time::sleep(took).await;
                lock(&self.received).extend(events.iter().cloned());
                Vec::new()
            }
            Answer::SlowToReject(took) => {
                tokio::time::sleep(took).await;
                lock(&self.received).extend(events.iter().skip(1).cloned());
                let rejected = DeliveryError::Rejected("the destination rejected it".into());
                events.first().map(|_| (0, rejected)).into_iter().collect()
            }
            Answer::SearchStopped { last } => {
                let n = events.len();
                let rejected = DeliveryError::Rejected("the destination rejected it".into());
                let not_tried = DeliveryError::Unsearched("not tried on its own".into());
                let mut failures: Failures = (0..n.saturating_sub(1))
                    .map(|i| {
                        (
                            i,
                            if i == 0 {
                                rejected.clone()
                            } else {
                                not_tried.clone()
                            },
                        )
                    })
                    .collect();
                match last {
                    Some(e) if n > 1 => failures.push((n - 1, e)),
                    _ => lock(&self.received).extend(events[n.saturating_sub(1)..].iter().cloned()),
                }
                failures
            }
            Answer::RanOutOfTime(took) => {
                tokio::time::sleep(took).await;
                let half = events.len() / 2;
                lock(&self.received).extend(events[..half].iter().cloned());
                let not_sent = DeliveryError::NotSent("the time ran out".into());
                (half..events.len())
                    .map(|i| (i, not_sent.clone()))
                    .collect()
            }
            Answer::TimeOut => {
                tokio::time::sleep_until(deadline).await;
                let late =
                    DeliveryError::Retryable("the destination did not answer in time".into());
                crate::destination::all_failed(events.len(), late)
            }
        }
    }

    pub fn answer(&self, answer: Answer) {
        *lock(&self.answer) = answer;
    }

    pub fn received(&self) -> Vec<AuditEvent> {
        lock(&self.received).clone()
    }

    pub fn requests(&self) -> usize {
        *lock(&self.requests)
    }

    pub fn probes(&self) -> usize {
        *lock(&self.probes)
    }
}

#[async_trait::async_trait]
impl Sink for ScriptedSink {
    async fn deliver(&self, events: &[AuditEvent], deadline: tokio::time::Instant) -> Failures {
        let answer = lock(&self.answer).clone();
        self.answer_with(answer, events, deadline).await
    }

    async fn probe(&self, events: &[AuditEvent], deadline: tokio::time::Instant) -> Failures {
        *lock(&self.probes) += 1;
        let answer = match lock(&self.answer).clone() {
            Answer::TakesOnlyProbes(_) => Answer::Take,
            answer => answer,
        };
        self.answer_with(answer, events, deadline).await
    }

    async fn test_connection(
        &self,
        event: &AuditEvent,
        deadline: tokio::time::Instant,
    ) -> ConnectionTest {
        match self
            .deliver(std::slice::from_ref(event), deadline)
            .await
            .pop()
        {
            None => ConnectionTest {
                success: true,
                message: "took the test event".into(),
                log_group: None,
            },
            Some((_, e)) => ConnectionTest {
                success: false,
                message: e.message().to_owned(),
                log_group: None,
            },
        }
    }
}

/// One scripted destination per project, made on first use.
#[derive(Debug, Default)]
pub struct ScriptedDestinations {
    sinks: Mutex<HashMap<LaneKey, Arc<ScriptedSink>>>,
}

impl ScriptedDestinations {
    /// The project's destination, to script its answers and read what it took.
    pub fn of(&self, key: &LaneKey) -> Arc<ScriptedSink> {
        lock(&self.sinks).entry(key.clone()).or_default().clone()
    }
}

impl Destinations for ScriptedDestinations {
    fn sink<'a>(&'a self, config: &'a StreamingConfig) -> Box<dyn Sink + 'a> {
        Box::new(Shared(
            self.of(&LaneKey::new(&config.organization_id, &config.project_id)),
        ))
    }
}

struct Shared(Arc<ScriptedSink>);

#[async_trait::async_trait]
impl Sink for Shared {
    async fn deliver(&self, events: &[AuditEvent], deadline: tokio::time::Instant) -> Failures {
        self.0.deliver(events, deadline).await
    }

    async fn probe(&self, events: &[AuditEvent], deadline: tokio::time::Instant) -> Failures {
        self.0.probe(events, deadline).await
    }

    async fn test_connection(
        &self,
        event: &AuditEvent,
        deadline: tokio::time::Instant,
    ) -> ConnectionTest {
        self.0.test_connection(event, deadline).await
    }
}
