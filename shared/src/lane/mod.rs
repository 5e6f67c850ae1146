//! Delivery lanes: one per destination (an organization's project), so that one destination's
//! trouble costs no other destination anything.
//!
//! A lane is `delivering` (live events are sent as they arrive), `retrying` (an outage: one
//! attempt per interval, the interval doubling up to `DELIVERY_RETRY_MAX_BACKOFF_SECONDS`),
//! `refused` (credentials refused: nothing is sent until the configuration changes or a Test
//! connection succeeds), `paused` (by the customer), or catching up (the destination takes
//! events again and is sent what it is owed, oldest first, before live delivery resumes).
//!
//! While a lane is not delivering, its events are *owed*: a small item per event names it
//! (the event itself stays where it is stored). What is owed longer than
//! `DELIVERY_RETRY_WINDOW_HOURS` becomes a failure, listed and replayable.
//!
//! Attempts are scheduled through a queue of delayed messages ([`LaneCall`]); each names the
//! attempt it is for, so a late, duplicated or superseded message does nothing. A message is
//! always sent before the lane is updated to expect it, so a crash never leaves a lane waiting
//! for a message that does not exist.

mod controls;
pub mod engine;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;
pub mod sources;
pub mod sweep;
#[cfg(test)]
mod tests;
pub mod timers;

pub use crate::message::Deferred;
pub use engine::Lanes;

use crate::destination::DeliveryError;
use crate::settings::SettingsError;
use crate::store::StoredKey;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;
use strum::{EnumIter, EnumString, IntoStaticStr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, EnumString, IntoStaticStr, EnumIter)]
#[strum(serialize_all = "snake_case")]
pub enum LaneState {
    #[default]
    Delivering,
    /// Delivering what it is owed, oldest first; live events are owed until it is done.
    CatchingUp,
    Retrying,
    Refused,
    Paused,
}

impl LaneState {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    /// As the contract names it: a lane catching up is delivering (with events pending).
    pub fn shown(self) -> &'static str {
        match self {
            LaneState::CatchingUp => LaneState::Delivering.as_str(),
            other => other.as_str(),
        }
    }
}

/// Which lane: an organization's project.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LaneKey {
    pub organization_id: String,
    pub project_id: String,
}

impl LaneKey {
    pub fn new(organization_id: impl Into<String>, project_id: impl Into<String>) -> Self {
        Self {
            organization_id: organization_id.into(),
            project_id: project_id.into(),
        }
    }
}

/// A lane's state as stored with its configuration. Instants are epoch milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lane {
    pub state: LaneState,
    /// The attempt the lane waits for (the one [`LaneCall`] that may act on it).
    pub attempt: Option<String>,
    pub next_attempt_at: Option<i64>,
    /// The current wait between two attempts of a retrying lane; kept once it delivers again,
    /// for [`Lane::interval_at`].
    pub interval_ms: u64,
    /// When the lane stopped delivering.
    pub since: Option<i64>,
    /// Why, for a person.
    pub reason: Option<String>,
    /// Counts every write of owed events: a lane only becomes `delivering` again if none
    /// happened since it last looked for owed events.
    pub writes: u64,
    /// Events owed (kept exact when the lane catches up; a count for people in between).
    pub owed: u64,
    /// The configuration's version, read with the lane (not part of the lane's own state).
    pub version: u64,
    /// The configuration version a refused lane was refused under: a save since then is a
    /// fix to try, even if the save's own call to try again was lost.
    pub refused_version: Option<u64>,
    /// When the destination was saved in place of none, less [`OWED_FROM_MARGIN`] (epoch ms):
    /// what was owed before was owed to a destination since removed, and is not this one's
    /// (`None`: saved before this was kept, everything counts).
    pub owed_from: Option<i64>,
    /// When the customer last paused the lane (epoch ms); `since` may be older, from trouble
    /// before the pause.
    pub paused_at: Option<i64>,
    /// When a probe last found the destination taking events again after retrying (epoch ms).
    pub recovered_at: Option<i64>,
}

/// How much earlier than its save a new destination's owed events may be dated and still be its
/// own. The API's and the stream's clocks may differ (Lambda's are kept within milliseconds),
/// and an event owed to the new destination must never be taken for the removed one's; the
/// removed one's events owed this close to the save come along (they are the same
/// organization's and project's).
pub const OWED_FROM_MARGIN: Duration = Duration::from_secs(1);

impl Lane {
    /// The lane of a destination saved at `saved_ms` where none was.
    pub fn saved_in_place_of_none(saved_ms: i64) -> Self {
        Self {
            owed_from: Some(saved_ms - OWED_FROM_MARGIN.as_millis() as i64),
            ..Self::default()
        }
    }

    /// Refused under an older configuration than the one saved now: the save is a fix to try.
    pub fn saved_since_refusal(&self) -> bool {
        self.refused_version.is_some_and(|v| v != self.version)
    }

    /// A fix the person made, not yet tried: saved since a refusal, or set to be tried at once
    /// by a save or a Test connection that succeeded (retrying with no wait, which trouble
    /// always sets). Owing nothing, such a lane delivers live again.
    pub fn fixed_by_person(&self) -> bool {
        self.saved_since_refusal() || (self.state == LaneState::Retrying && self.interval_ms == 0)
    }

    /// The interval new trouble doubles at `now_ms`: the last one while the lane is within
    /// twice of it, and at most [`REMEMBERED_FOR`], of coming back from retrying, else none
    /// (the first interval). A destination that fails again as soon as it takes events (one
    /// that hangs every other request) so waits longer each time, and holds its shard's live
    /// batches ever less often, instead of starting again at the first interval every time a
    /// probe finds it answering; one that stayed well for a minute starts afresh.
    pub fn interval_at(&self, now_ms: i64) -> u64 {
        let window = self
            .interval_ms
            .saturating_mul(2)
            .min(REMEMBERED_FOR.as_millis() as u64) as i64;
        // A refused lane's interval is always the longest: nothing to go on doubling.
        let remembered = self.state != LaneState::Refused
            && self
                .recovered_at
                .is_some_and(|at| now_ms.saturating_sub(at) <= window);
        if remembered { self.interval_ms } else { 0 }
    }
}

/// How long after coming back from retrying new trouble goes on from the last interval, at
/// most: see [`Lane::interval_at`].
pub const REMEMBERED_FOR: Duration = Duration::from_secs(60);

impl Lane {
    /// What a lane becomes: its state and schedule, nothing else.
    fn to(state: LaneState, attempt: Option<&LaneCall>, interval_ms: u64) -> Self {
        Self {
            state,
            attempt: attempt.map(|c| c.attempt.clone()),
            next_attempt_at: attempt.map(|c| c.due_ms),
            interval_ms,
            ..Self::default()
        }
    }
}

/// An event a lane owes: where it is stored, when it became owed, and its size (pages of
/// catching up are cut by bytes as well as by count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owed {
    pub event: StoredKey,
    pub owed_at_ms: i64,
    pub bytes: u64,
}

/// A lane's destination as its call found it.
pub enum Target<'a> {
    /// Saved: the lane as read with it, and where its events go.
    Saved(&'a Lane, &'a dyn crate::destination::Sink),
    /// None is saved. `read_ms` (epoch ms) was taken before the configuration was read: a
    /// destination saved since was saved after it.
    Removed { read_ms: i64 },
    /// The configuration cannot be read, nor the lane with it, for `reason` (a person's words):
    /// what the lane is owed is listed as failures, as live events are meanwhile.
    Damaged { reason: String },
}

/// Which of a lane's owed events a reader wants: those owed at `from_ms` or later (the lane's
/// [`Lane::owed_from`]) and, when given, before `before_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwedSpan {
    pub from_ms: Option<i64>,
    pub before_ms: Option<i64>,
}

impl OwedSpan {
    /// Every owed item, whoever it was owed to (a removed destination's, to forget them).
    pub const ALL: Self = Self {
        from_ms: None,
        before_ms: None,
    };

    /// What the lane's own destination is owed.
    pub fn of(lane: &Lane) -> Self {
        Self {
            from_ms: lane.owed_from,
            before_ms: None,
        }
    }

    pub fn before(self, before_ms: i64) -> Self {
        Self {
            before_ms: Some(before_ms),
            ..self
        }
    }

    pub fn holds(&self, owed_at_ms: i64) -> bool {
        self.from_ms.is_none_or(|from| owed_at_ms >= from)
            && self.before_ms.is_none_or(|before| owed_at_ms < before)
    }
}

/// What writing owed events found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owing {
    /// They are owed.
    Owed,
    /// The lane delivers (again): nothing is owed and the caller delivers them.
    Delivering,
    /// The destination was removed: nothing is owed and nothing is to be delivered.
    Gone,
}

/// A scheduled look at a lane: the lanes queue's message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneCall {
    pub lane: LaneKey,
    pub attempt: String,
    pub due_ms: i64,
    /// Sent due within moments: it may come before the lane's write that expects it (which
    /// follows the send) has landed, so finding another attempt named it looks once more,
    /// shortly, before it counts as replaced.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub early: bool,
}

impl LaneCall {
    pub fn new(lane: &LaneKey, due_ms: i64) -> Self {
        use rand::Rng;
        Self {
            lane: lane.clone(),
            attempt: format!("{:016x}", rand::rng().random::<u64>()),
            due_ms,
            early: false,
        }
    }
}

/// The operator's settings and the lanes' fixed timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// How long a lane is owed its events before they become failures.
    pub retry_window: Duration,
    /// The longest wait between two attempts of a retrying lane.
    pub max_backoff: Duration,
    /// The first wait after an outage begins.
    pub first_backoff: Duration,
    /// The longest a live delivery to one destination may take before it counts as an outage.
    pub budget: Duration,
    /// The same for a probe or a page of catching up: longer, so a destination that is slow
    /// but working still gets everything.
    pub catch_up_budget: Duration,
    /// A live delivery that succeeds but takes the destination longer than this per MiB sent
    /// (at least this long) held its batch, every tenant on the shard, that long: the lane's
    /// events then go through its own calls, `slow_hold` apart, until a call finds the
    /// destination quick again (see [`Policy::is_slow`]). Datadog's and CloudWatch's requests
    /// take tens to hundreds of milliseconds, and the stream waits up to a second to fill a
    /// batch anyway.
    pub slow_after: Duration,
    pub slow_hold: Duration,
    /// How often a paused lane's owed events are checked against the retry window (a
    /// refused lane's are at each of its probes, up to `max_backoff` apart).
    pub housekeeping: Duration,
    /// How long an attempt may run before another call takes over from it.
    pub lease: Duration,
    /// How late a scheduled call may be before it counts as lost: the lanes queue hands a
    /// call whose invocation failed back only after its visibility timeout, and a call that
    /// runs holds its lane for a lease.
    pub lost_after: Duration,
    /// Owed events delivered per request when catching up, at most, and at most this many
    /// bytes of them (at least one event).
    pub page: usize,
    pub page_bytes: u64,
    /// Owed events a probe sends: few, as it is expected to fail.
    pub probe_page: usize,
    /// The first wait of events the service could not hand to their lane (its own trouble),
    /// deferred to a queue; it doubles each time they are deferred again, up to the longest
    /// wait between a retrying lane's attempts. Long enough for DynamoDB to spread a hot
    /// partition's load, short enough that a passing throttle costs a delivery seconds.
    pub deferral: Duration,
}

/// The lanes queue's visibility timeout (`template.yaml`, six times the function's timeout).
pub const LANE_QUEUE_VISIBILITY: Duration = Duration::from_secs(360);

pub const RETRY_WINDOW_ENV: &str = "DELIVERY_RETRY_WINDOW_HOURS";
pub const MAX_BACKOFF_ENV: &str = "DELIVERY_RETRY_MAX_BACKOFF_SECONDS";
pub const DEFAULT_RETRY_WINDOW_HOURS: u64 = 168;
pub const DEFAULT_MAX_BACKOFF_SECONDS: u64 = 300;
/// The template's `MaxValue` for it: the lane's times are kept in milliseconds.
pub const MOST_MAX_BACKOFF_SECONDS: u64 = 86_400;

impl Default for Policy {
    fn default() -> Self {
        Self::new(
            Duration::from_secs(DEFAULT_RETRY_WINDOW_HOURS * 3600),
            Duration::from_secs(DEFAULT_MAX_BACKOFF_SECONDS),
        )
    }
}

impl Policy {
    pub fn new(retry_window: Duration, max_backoff: Duration) -> Self {
        // Twice the stream function's timeout.
        let lease = Duration::from_secs(120);
        Self {
            retry_window,
            max_backoff,
            first_backoff: Duration::from_secs(5).min(max_backoff),
            budget: Duration::from_secs(5),
            catch_up_budget: Duration::from_secs(30),
            slow_after: Duration::from_secs(1),
            slow_hold: Duration::from_secs(30),
            housekeeping: Duration::from_secs(900),
            lease,
            lost_after: LANE_QUEUE_VISIBILITY + lease,
            page: 500,
            page_bytes: 4 * 1024 * 1024,
            probe_page: 10,
            deferral: Duration::from_secs(10),
        }
    }

    /// Reads the two operator settings; the window may not outlast the events themselves
    /// (`RETENTION_DAYS`, read here too).
    pub fn from_env() -> Result<Self, SettingsError> {
        let retention = crate::Retention::from_env()?;
        let read = |name: &'static str, default: u64| -> Result<u64, SettingsError> {
            match std::env::var(name).ok().as_deref().map(str::trim) {
                None | Some("") => Ok(default),
                Some(s) => crate::settings::whole_number(s)
                    .filter(|&n| n >= 1)
                    .ok_or(SettingsError::NotAPositiveNumber(name)),
            }
        };
        Self::from_settings(
            retention,
            read(RETRY_WINDOW_ENV, DEFAULT_RETRY_WINDOW_HOURS)?,
            read(MAX_BACKOFF_ENV, DEFAULT_MAX_BACKOFF_SECONDS)?,
        )
    }

    /// The window (`hours`) and the longest wait (`backoff`, seconds) as the operator set
    /// them, checked against each other's limits.
    pub fn from_settings(
        retention: crate::Retention,
        hours: u64,
        backoff: u64,
    ) -> Result<Self, SettingsError> {
        let most = u64::from(retention.as_days()) * 24;
        if hours > most {
            return Err(SettingsError::RetryWindowOutlastsRetention { hours, most });
        }
        if backoff > MOST_MAX_BACKOFF_SECONDS {
            return Err(SettingsError::BackoffOverADay(backoff));
        }
        Ok(Self::new(
            Duration::from_secs(hours * 3600),
            Duration::from_secs(backoff),
        ))
    }

    /// Whether a destination that took `took` to answer for `bytes` of events is slow:
    /// `slow_after` for each MiB begun (a live batch of 1,000 events of 1 KB is about one; a
    /// page of catching up may be four), so a busy lane's larger pages are judged as fairly.
    pub fn is_slow(&self, took: Duration, bytes: u64) -> bool {
        let mebibytes = bytes.div_ceil(1 << 20).max(1);
        took > self
            .slow_after
            .saturating_mul(u32::try_from(mebibytes).unwrap_or(u32::MAX))
    }

    /// The retry window as a person reads it: "168-hour".
    pub fn window_name(&self) -> String {
        let window = self.retry_window.as_secs();
        if window.is_multiple_of(3600) {
            format!("{}-hour", window / 3600)
        } else {
            format!("{window}-second")
        }
    }

    /// Whether a lane that stopped delivering at `since_ms` has been away longer than the
    /// retry window at `now_ms`.
    pub fn outstayed(&self, since_ms: i64, now_ms: i64) -> bool {
        now_ms - since_ms > self.retry_window.as_millis() as i64
    }

    /// The interval after `current` (0: the outage just began), doubling up to the cap.
    pub fn next_interval(&self, current_ms: u64) -> u64 {
        let first = self.first_backoff.as_millis() as u64;
        let max = self.max_backoff.as_millis() as u64;
        if current_ms == 0 {
            first.min(max).max(1)
        } else {
            current_ms.saturating_mul(2).min(max).max(1)
        }
    }

    /// When to try again after waiting about `interval_ms`: between half of it and all of it,
    /// so lanes that failed together do not come back together.
    pub fn jittered(&self, interval_ms: u64, now_ms: i64) -> i64 {
        use rand::Rng;
        let half = interval_ms / 2;
        now_ms + (half + rand::rng().random_range(0..=interval_ms - half)) as i64
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaneError {
    /// The service's own table or queue failed: worth another try.
    #[error("the lane's state could not be kept: {0}")]
    Store(String),
    #[error("the lane kept changing under this delivery")]
    Contended,
}

/// Where lanes and what they owe are kept (the configuration table; in tests, memory).
pub trait LaneStore: Sync {
    /// Writes owed events, then counts them against the lane. A lane that is `delivering`
    /// leaves it for `entering` (when given; a refusal only if the configuration is still the
    /// version it was refused under); a lane that is not delivering just owes them.
    fn owe(
        &self,
        lane: &LaneKey,
        owed: &[Owed],
        entering: Option<&Lane>,
    ) -> impl Future<Output = Result<Owing, LaneError>> + Send;

    /// The lane, read after every write before it; `None` once its configuration is gone.
    fn read(&self, lane: &LaneKey) -> impl Future<Output = Result<Option<Lane>, LaneError>> + Send;

    /// Sets the lane's state and schedule if it still waits for `attempt`.
    fn update(
        &self,
        lane: &LaneKey,
        attempt: &str,
        to: &Lane,
    ) -> impl Future<Output = Result<bool, LaneError>> + Send;

    /// Sets the lane's state and schedule if its state is one of `from` (any state when empty).
    fn update_from(
        &self,
        lane: &LaneKey,
        from: &[LaneState],
        to: &Lane,
    ) -> impl Future<Output = Result<bool, LaneError>> + Send;

    /// The lane delivers again, if it still waits for `attempt` and nothing was owed to it
    /// since it counted `writes`.
    fn finish(
        &self,
        lane: &LaneKey,
        attempt: &str,
        writes: u64,
    ) -> impl Future<Output = Result<bool, LaneError>> + Send;

    /// The oldest owed events in `span`, at most `limit`.
    fn owed(
        &self,
        lane: &LaneKey,
        span: OwedSpan,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Owed>, LaneError>> + Send;

    /// Owed events that are no longer owed (delivered, or recorded as failures).
    fn settle(
        &self,
        lane: &LaneKey,
        owed: &[Owed],
    ) -> impl Future<Output = Result<(), LaneError>> + Send;

    /// Lanes whose scheduled call was due before `before_ms` (none that deliver), at most
    /// `limit`, organizations taking turns ([`sweep::take_turns`]).
    fn overdue(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<LaneKey>, LaneError>> + Send;

    /// Events the destination will never take as they are: listed for the customer.
    fn record_failures(
        &self,
        lane: &LaneKey,
        events: &[StoredKey],
        reason: &str,
        now: time::OffsetDateTime,
    ) -> impl Future<Output = Result<(), LaneError>> + Send;

    /// When the oldest event in `span` became owed (epoch ms), for the lane's health.
    fn oldest_owed_at(
        &self,
        lane: &LaneKey,
        span: OwedSpan,
    ) -> impl Future<Output = Result<Option<i64>, LaneError>> + Send;

    /// One delivery's outcome, for the destination's health.
    fn record_attempt(
        &self,
        lane: &LaneKey,
        delivered: usize,
        failed: usize,
        error: Option<&DeliveryError>,
        now: time::OffsetDateTime,
    ) -> impl Future<Output = Result<(), LaneError>> + Send;
}

/// Schedules [`LaneCall`]s (the lanes queue's delayed messages) and [`Deferred`] events (the
/// deferred queue's).
pub trait Timers: Sync {
    fn schedule(
        &self,
        call: &LaneCall,
        delay: Duration,
    ) -> impl Future<Output = Result<(), LaneError>> + Send;

    /// Puts a lane's events on the deferred queue, to be handed to it again after `delay`.
    fn defer(
        &self,
        deferred: &Deferred,
        delay: Duration,
    ) -> impl Future<Output = Result<(), LaneError>> + Send;
}

/// Stored events by key, for a lane catching up. Events no longer stored are left out.
pub trait EventSource: Sync {
    fn events(
        &self,
        lane: &LaneKey,
        keys: &[StoredKey],
    ) -> impl Future<Output = Result<Vec<(StoredKey, crate::AuditEvent)>, LaneError>> + Send;
}

/// Why an event asked for by key and left out of the answer (past its retention, or damaged)
/// is listed as a failure: never silently dropped.
pub const NOT_READ_BACK: &str = "the stored event could not be read back";

/// The keys of `asked` that [`EventSource::events`] left out of `found`.
pub fn left_out(asked: &[StoredKey], found: &[(StoredKey, crate::AuditEvent)]) -> Vec<StoredKey> {
    asked
        .iter()
        .filter(|k| !found.iter().any(|(f, _)| f.sort_key == k.sort_key))
        .cloned()
        .collect()
}
