//! What one `PutLogEvents` request carries: the names of the groups and streams written to,
//! and events cut into requests by CloudWatch Logs' limits while they are encoded.
//!
//! Timestamp policy: CloudWatch refuses events more than 14 days old or 2 hours ahead. Such an
//! event is written with the delivery time as its timestamp; its message (the original JSON)
//! still carries its own `timestamp`. Nothing is dropped for its age: one a log group rejects
//! all the same (older than its retention) is sent once more dated so (`service::write`).

use crate::destination::{DeliveryError, Failures};
use crate::event::AuditEvent;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use std::collections::HashSet;
use std::time::Duration;
use time::OffsetDateTime;

/// `PutLogEvents` limits.
pub const MAX_BATCH_EVENTS: usize = 10_000;
pub const MAX_BATCH_BYTES: usize = 1_048_576;
pub const EVENT_OVERHEAD_BYTES: usize = 26;
pub const MAX_BATCH_SPAN: Duration = Duration::from_secs(24 * 3600);
/// How far back and ahead CloudWatch accepts timestamps, less a margin for clock skew.
pub const MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600 - 3600);
pub const MAX_AHEAD: Duration = Duration::from_secs(2 * 3600 - 300);

/// Log group of real events, under the operator's prefix.
pub fn events_log_group(prefix: &str) -> String {
    format!("{}/packer/audit-logs", prefix.trim_end_matches('/'))
}

/// Log group of "Test connection" events.
pub fn test_log_group(prefix: &str) -> String {
    format!("{}/packer/audit-logs-test", prefix.trim_end_matches('/'))
}

/// CloudWatch forbids `:` and `*` in stream names.
const STREAM_ESCAPES: &AsciiSet = &CONTROLS.add(b':').add(b'*').add(b'%');

/// CloudWatch's longest log stream name.
const MAX_STREAM_NAME: usize = 512;

/// One log stream per project.
pub fn log_stream(project_id: &str) -> String {
    let escaped = utf8_percent_encode(project_id, STREAM_ESCAPES).to_string();
    // Every `%` of an escaped id starts `%XX` (hex digits): `%%` is never one.
    crate::id::fitted(escaped, project_id, MAX_STREAM_NAME, "%%")
}

/// One `PutLogEvents` request's events, sorted by time, with the positions they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub positions: Vec<usize>,
    pub events: Vec<InputLogEvent>,
}

impl crate::destination::Request for Batch {
    fn positions(&self) -> &[usize] {
        &self.positions
    }

    /// Halves, each still sorted by time.
    fn split(mut self) -> (Batch, Batch) {
        let half = self.events.len() / 2;
        let right = Batch {
            positions: self.positions.split_off(half),
            events: self.events.split_off(half),
        };
        (self, right)
    }
}

impl Batch {
    /// Its events at `positions` alone, all dated `now` (within the limits, as part of this).
    pub fn redated(&self, positions: &HashSet<usize>, now: OffsetDateTime) -> Batch {
        let ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
        let (positions, events) = self
            .positions
            .iter()
            .zip(&self.events)
            .filter(|(p, _)| positions.contains(p))
            .map(|(&p, e)| {
                let mut e = e.clone();
                e.timestamp = ms;
                (p, e)
            })
            .unzip();
        Batch { positions, events }
    }

    pub fn bytes(&self) -> usize {
        self.events
            .iter()
            .map(|e| e.message.len() + EVENT_OVERHEAD_BYTES)
            .sum()
    }
}

/// The timestamp an event is written with (see the module's policy).
pub fn log_timestamp(event: &AuditEvent, now: OffsetDateTime) -> OffsetDateTime {
    let t = event.timestamp();
    if now - t > MAX_AGE || t - now > MAX_AHEAD {
        now
    } else {
        t
    }
}

/// Sorts events by timestamp and cuts them into requests within the limits. An event too large
/// for a request on its own is reported, never truncated.
pub fn batches(events: &[AuditEvent], now: OffsetDateTime) -> (Vec<Batch>, Failures) {
    let mut timed: Vec<(usize, i64)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            (
                i,
                (log_timestamp(e, now).unix_timestamp_nanos() / 1_000_000) as i64,
            )
        })
        .collect();
    timed.sort_by_key(|&(i, ms)| (ms, i));
    let span_ms = MAX_BATCH_SPAN.as_millis() as i64;
    let mut out: Vec<Batch> = Vec::new();
    let mut failures = Vec::new();
    let mut current = Batch {
        positions: Vec::new(),
        events: Vec::new(),
    };
    let mut bytes = 0;
    for (position, ms) in timed {
        let message = events[position].json();
        let size = message.len() + EVENT_OVERHEAD_BYTES;
        if size > MAX_BATCH_BYTES {
            failures.push((
                position,
                DeliveryError::Oversized(format!(
                    "the event is {} bytes, over CloudWatch Logs' {}-byte limit for one event",
                    message.len(),
                    MAX_BATCH_BYTES - EVENT_OVERHEAD_BYTES
                )),
            ));
            continue;
        }
        let first = current.events.first().map(|e| e.timestamp);
        if first.is_some_and(|first| {
            current.events.len() == MAX_BATCH_EVENTS
                || bytes + size > MAX_BATCH_BYTES
                || ms - first > span_ms
        }) {
            out.push(std::mem::replace(
                &mut current,
                Batch {
                    positions: Vec::new(),
                    events: Vec::new(),
                },
            ));
            bytes = 0;
        }
        bytes += size;
        current.positions.push(position);
        current.events.push(
            InputLogEvent::builder()
                .timestamp(ms)
                .message(message.to_owned())
                .build()
                .expect("timestamp and message are set"),
        );
    }
    if !current.events.is_empty() {
        out.push(current);
    }
    (out, failures)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::fixtures::SEED_EVENTS;
    use proptest::prelude::*;
    use serde_json::json;

    pub(crate) fn at(ts: OffsetDateTime, pad: usize) -> AuditEvent {
        let mut v: serde_json::Value = serde_json::from_str(SEED_EVENTS[0].1).unwrap();
        v["timestamp"] = json!(
            ts.format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        );
        v["padding"] = json!("z".repeat(pad));
        AuditEvent::from_value(v).unwrap()
    }

    const NOW: OffsetDateTime = time::macros::datetime!(2026-11-21 12:00 UTC);

    #[test]
    fn batches_are_sorted_by_time_and_remember_positions() {
        let events = vec![
            at(NOW - Duration::from_secs(30), 0),
            at(NOW - Duration::from_secs(90), 0),
            at(NOW - Duration::from_secs(60), 0),
        ];
        let (batches, failures) = batches(&events, NOW);
        assert!(failures.is_empty());
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].positions, [1, 2, 0]);
        let times: Vec<i64> = batches[0].events.iter().map(|e| e.timestamp).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(batches[0].events[0].message, events[1].json());
    }

    #[test]
    fn an_event_over_cloudwatchs_limit_is_reported_unsent_and_the_others_batched() {
        let events = vec![
            at(NOW - Duration::from_secs(30), 0),
            at(NOW - Duration::from_secs(20), MAX_BATCH_BYTES),
            at(NOW - Duration::from_secs(10), 0),
        ];
        let (batches, failures) = batches(&events, NOW);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].0, 1);
        assert!(matches!(failures[0].1, DeliveryError::Oversized(_)));
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].positions, [0, 2]);
    }

    #[test]
    fn events_outside_cloudwatchs_window_are_written_at_delivery_time() {
        let old = at(NOW - Duration::from_secs(15 * 86_400), 0);
        let ahead = at(NOW + Duration::from_secs(3 * 3600), 0);
        let fine = at(NOW - Duration::from_secs(13 * 86_400), 0);
        assert_eq!(log_timestamp(&old, NOW), NOW);
        assert_eq!(log_timestamp(&ahead, NOW), NOW);
        assert_eq!(log_timestamp(&fine, NOW), fine.timestamp());
        let (batches, _) = batches(std::slice::from_ref(&old), NOW);
        assert_eq!(
            batches[0].events[0].message,
            old.json(),
            "the original time stays in the message"
        );
    }

    #[test]
    fn a_batch_never_spans_more_than_a_day() {
        let events: Vec<_> = (0..10)
            .map(|h| at(NOW - Duration::from_secs(h * 5 * 3600), 0))
            .collect();
        let (batches, _) = batches(&events, NOW);
        for b in &batches {
            let first = b.events.first().unwrap().timestamp;
            let last = b.events.last().unwrap().timestamp;
            assert!(last - first <= MAX_BATCH_SPAN.as_millis() as i64);
        }
        assert!(batches.len() >= 2);
    }

    #[test]
    fn ten_thousand_one_kilobyte_events_make_at_most_eleven_requests() {
        let one = at(NOW - Duration::from_secs(60), 0);
        let pad = 1024usize.saturating_sub(one.json().len());
        let event = at(NOW - Duration::from_secs(60), pad);
        assert_eq!(event.json().len(), 1024);
        let events = vec![event; 10_000];
        let (batches, failures) = batches(&events, NOW);
        assert!(failures.is_empty());
        assert!(batches.len() <= 11, "{}", batches.len());
    }

    #[test]
    fn stream_names_escape_what_cloudwatch_forbids() {
        assert_eq!(log_stream("a98c3c31-5760"), "a98c3c31-5760");
        assert_eq!(log_stream("a:b*c"), "a%3Ab%2Ac");
        // The longest ids the API takes (255 characters of three bytes, say) fit too.
        let longest = "項".repeat(255);
        assert!(crate::id::check("project_id", &longest).is_ok());
        let name = log_stream(&longest);
        assert!(name.len() <= 512 && name.contains("%%"), "{name}");
        assert_ne!(name, log_stream(&"項".repeat(254)));
        assert_eq!(
            events_log_group("/hashicorp"),
            "/hashicorp/packer/audit-logs"
        );
        assert_eq!(
            test_log_group("/hashicorp/"),
            "/hashicorp/packer/audit-logs-test"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn no_request_exceeds_cloudwatchs_limits(
            specs in proptest::collection::vec((0u64..40 * 86_400, 0usize..300_000), 1..60)
        ) {
            let events: Vec<AuditEvent> = specs
                .iter()
                .map(|&(back, pad)| at(NOW - Duration::from_secs(back), pad))
                .collect();
            let (batches, failures) = batches(&events, NOW);
            let mut seen: Vec<usize> = failures.iter().map(|f| f.0).collect();
            for b in &batches {
                prop_assert!(!b.events.is_empty());
                prop_assert!(b.events.len() <= MAX_BATCH_EVENTS);
                prop_assert!(b.bytes() <= MAX_BATCH_BYTES);
                let first = b.events.first().unwrap().timestamp;
                let last = b.events.last().unwrap().timestamp;
                prop_assert!(last - first <= MAX_BATCH_SPAN.as_millis() as i64);
                prop_assert!(b.events.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
                let now_ms = (NOW.unix_timestamp_nanos() / 1_000_000) as i64;
                prop_assert!(b.events.iter().all(|e| now_ms - e.timestamp <= MAX_AGE.as_millis() as i64));
                seen.extend(&b.positions);
            }
            seen.sort();
            prop_assert_eq!(seen, (0..events.len()).collect::<Vec<_>>());
        }
    }
}
