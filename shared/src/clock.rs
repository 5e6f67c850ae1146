//! The time of day, behind a trait so the lanes' schedule and the handlers' time windows
//! can be tested without waiting.

use std::sync::Mutex;
use time::OffsetDateTime;

pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;

    /// Milliseconds since the epoch: how lanes store instants.
    fn now_ms(&self) -> i64 {
        epoch_ms(self.now())
    }
}

/// `t` in milliseconds since the epoch.
pub fn epoch_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// `t` as RFC 3339 in UTC to the whole second: fixed width, so such texts order as times.
pub fn seconds_text(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Whether a date-time's date and time are joined as RFC 3339 has them: by `T`, or by a space,
/// which its section 5.6 allows for readability (Python's `str()` of a datetime writes one).
/// The `time` crate takes any one character there (`2023-07-14X17:23:21Z` would pass).
pub fn is_joined_as_rfc3339(text: &str) -> bool {
    matches!(text.as_bytes().get(10), Some(b'T' | b't' | b' '))
}

/// An RFC 3339 date-time (joined by `T` or a space) given with any offset, in UTC; `None` for
/// text that is none, or for a time whose UTC falls outside the years 0000 to 9999
/// (`9999-12-31T23:30:00-01:00`).
pub fn utc_from_rfc3339(text: &str) -> Option<OffsetDateTime> {
    if !is_joined_as_rfc3339(text) {
        return None;
    }
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()?
        .checked_to_offset(time::UtcOffset::UTC)
        .filter(|t| (0..=9999).contains(&t.year()))
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that moves only when told to (tests, and the local runner's compressed outages).
#[derive(Debug)]
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    pub fn at(t: OffsetDateTime) -> Self {
        Self(Mutex::new(t))
    }

    pub fn advance(&self, by: std::time::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += by;
    }

    pub fn set(&self, to: OffsetDateTime) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
