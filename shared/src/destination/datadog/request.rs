//! What one request to Datadog's logs intake carries: events encoded as log entries, cut into
//! requests by Datadog's limits while encoding, compressed.
//!
//! Each log carries every field of the event as a top-level attribute. Datadog reads a few names
//! itself, so the service writes those: `status` is the severity (`info` for an `OK` event,
//! `error` for a `FAILED` one, since Datadog would read "FAILED" as an emergency), `timestamp` is
//! when it happened, `message` its description. Where the event's own value differs, it is kept
//! under `event_<name>` (so `event_status` holds "OK" or "FAILED"), unless the event has a field
//! of that name itself: then the event's own field wins, and every key appears once. `event_id`
//! is the stored event's stable id, the same on every delivery of it.

use crate::destination::{DeliveryError, Failures};
use crate::event::{AuditEvent, Status};
use serde::ser::{SerializeMap, Serializer};
use serde_json::value::RawValue;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Datadog's documented intake limits.
pub const MAX_ENTRIES: usize = 1_000;
pub const MAX_PAYLOAD_BYTES: usize = 5_000_000;
pub const MAX_ENTRY_BYTES: usize = 1_000_000;
/// Datadog takes logs dated up to 18 hours back and 2 hours ahead (its log date remapper's
/// documentation); others are dated at delivery instead (their own time stays in
/// `event_timestamp`). Margins keep clock skew on our side.
pub const MAX_AGE: Duration = Duration::from_secs(17 * 3600);
pub const MAX_AHEAD: Duration = Duration::from_secs(2 * 3600 - 300);

pub const SOURCE: &str = "hcp-packer";
pub const SERVICE: &str = "hcp-packer-audit-log";

/// Attribute names the service writes itself.
pub const RESERVED: [&str; 7] = [
    "ddsource",
    "ddtags",
    "service",
    "message",
    "status",
    "timestamp",
    "event_id",
];

/// One request's worth of encoded logs, with the positions of the events they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub positions: Vec<usize>,
    entries: Vec<Vec<u8>>,
}

impl crate::destination::Request for Batch {
    fn positions(&self) -> &[usize] {
        &self.positions
    }

    fn split(mut self) -> (Batch, Batch) {
        let half = self.entries.len() / 2;
        let right = Batch {
            positions: self.positions.split_off(half),
            entries: self.entries.split_off(half),
        };
        (self, right)
    }
}

impl Batch {
    fn new() -> Self {
        Self {
            positions: Vec::new(),
            entries: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Size of the JSON array this batch sends, uncompressed.
    pub fn body_len(&self) -> usize {
        2 + self.entries.iter().map(Vec::len).sum::<usize>() + self.entries.len().saturating_sub(1)
    }

    /// The JSON array of entries.
    pub fn body(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.body_len());
        body.push(b'[');
        for (i, entry) in self.entries.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(entry);
        }
        body.push(b']');
        body
    }

    pub fn entries(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.iter().map(Vec::as_slice)
    }
}

/// A log entry, serialized straight from the event's fields.
struct Entry<'a> {
    event: &'a AuditEvent,
    severity: &'static str,
    timestamp: String,
    tags: String,
}

impl serde::Serialize for Entry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The event's values are copied as the JSON text they are stored as, never parsed.
        let fields = self.event.raw_fields();
        let mut map = s.serialize_map(None)?;
        for (name, value) in &fields.0 {
            if !RESERVED.contains(&name.as_ref()) {
                map.serialize_entry(name, value)?;
            }
        }
        let mut ours: Vec<(&str, &str)> = vec![
            ("ddsource", SOURCE),
            ("service", SERVICE),
            ("ddtags", &self.tags),
            ("message", self.event.description()),
            ("status", self.severity),
            ("timestamp", &self.timestamp),
        ];
        // Stable across redeliveries and replays, so duplicates can be told apart.
        if let Some(id) = self.event.id() {
            ours.push(("event_id", id));
        }
        for (name, value) in ours {
            map.serialize_entry(name, value)?;
            let Some(original) = fields.get(name) else {
                continue;
            };
            let copy = format!("event_{name}");
            // The event's own field of that name was written above and wins: one key per
            // name, always.
            if !is_string(original, value) && !fields.contains(&copy) {
                map.serialize_entry(&copy, original)?;
            }
        }
        map.end()
    }
}

/// Whether a JSON text is the string `s`.
fn is_string(json: &RawValue, s: &str) -> bool {
    let text = json.get();
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        // Written plainly, as serde_json writes any string without quotes, backslashes or
        // control characters.
        Some(inner) if !inner.contains('\\') => inner == s,
        _ => serde_json::from_str::<std::borrow::Cow<str>>(text).is_ok_and(|t| t == s),
    }
}

/// Severity of an event in Datadog's terms.
pub fn severity(status: Status) -> &'static str {
    match status {
        Status::Ok => "info",
        Status::Failed => "error",
    }
}

/// `key:value` tags; Datadog splits `ddtags` on commas, so none may appear inside a value.
fn tags(event: &AuditEvent) -> String {
    let clean = |v: &str| v.replace(',', "_");
    format!(
        "organization_id:{},project_id:{},action:{}",
        clean(event.organization_id()),
        clean(event.project_id()),
        event.action()
    )
}

/// Encodes one event as a Datadog log entry.
pub fn encode(event: &AuditEvent, now: OffsetDateTime) -> Vec<u8> {
    let t = event.timestamp();
    let dated = if now - t > MAX_AGE || t - now > MAX_AHEAD {
        now
    } else {
        t
    };
    let entry = Entry {
        event,
        severity: severity(event.status()),
        timestamp: dated.format(&Rfc3339).unwrap_or_default(),
        tags: tags(event),
    };
    // A map of JSON values into a Vec cannot fail to serialize.
    serde_json::to_vec(&entry).unwrap_or_default()
}

/// Cuts events into requests within Datadog's limits. An entry too large for Datadog on its own
/// is reported, never sent to be truncated.
pub fn batches(events: &[AuditEvent], now: OffsetDateTime) -> (Vec<Batch>, Failures) {
    let mut out = Vec::new();
    let mut failures = Vec::new();
    let mut batch = Batch::new();
    for (position, event) in events.iter().enumerate() {
        let entry = encode(event, now);
        if entry.len() > MAX_ENTRY_BYTES {
            failures.push((
                position,
                DeliveryError::Oversized(format!(
                    "the event is {} bytes as a Datadog log, over Datadog's {MAX_ENTRY_BYTES}-byte limit for one log",
                    entry.len()
                )),
            ));
            continue;
        }
        let grown = batch.body_len() + entry.len() + usize::from(!batch.is_empty());
        if !batch.is_empty() && (batch.len() == MAX_ENTRIES || grown > MAX_PAYLOAD_BYTES) {
            out.push(std::mem::replace(&mut batch, Batch::new()));
        }
        batch.positions.push(position);
        batch.entries.push(entry);
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    (out, failures)
}

/// How request bodies are compressed: gzip, the encoding Datadog's API reference documents for
/// `/api/v2/logs`, which every intake reads and so does any stand-in made from that reference.
/// (Datadog's own agents also send zstd, which costs a quarter of the CPU; no public page
/// promises it, and a reader that cannot decode it might take the request and lose the logs.)
pub const CONTENT_ENCODING: &str = "gzip";

/// gzip's level: the lowest that makes these bodies no larger than the Datadog Forwarder's gzip
/// 6, chosen by measuring CPU and bytes of each level on the bench's requests (BENCHMARKS.md,
/// "Datadog: the body's compression").
pub const GZIP_LEVEL: u32 = 6;

/// A request body as sent.
pub fn compress(bytes: &[u8]) -> Vec<u8> {
    crate::compression::gzip(bytes, flate2::Compression::new(GZIP_LEVEL))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::SEED_EVENTS;
    use proptest::prelude::*;
    use serde_json::Value;
    use serde_json::json;
    use time::macros::datetime;

    fn seed(i: usize) -> AuditEvent {
        AuditEvent::from_json(SEED_EVENTS[i % SEED_EVENTS.len()].1).unwrap()
    }

    fn entry(event: &AuditEvent, now: OffsetDateTime) -> serde_json::Map<String, Value> {
        serde_json::from_slice(&encode(event, now)).unwrap()
    }

    const RECENT: OffsetDateTime = datetime!(2023-07-14 18:00 UTC);

    /// Every key of an entry, in order and with repeats (a map would hide a repeated key).
    fn keys(bytes: &[u8]) -> Vec<String> {
        struct Keys(Vec<String>);
        impl<'de> serde::Deserialize<'de> for Keys {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl<'de> serde::de::Visitor<'de> for Visitor {
                    type Value = Keys;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a JSON object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<Keys, A::Error> {
                        let mut keys = Vec::new();
                        while let Some((k, _)) =
                            map.next_entry::<String, serde::de::IgnoredAny>()?
                        {
                            keys.push(k);
                        }
                        Ok(Keys(keys))
                    }
                }
                d.deserialize_map(Visitor)
            }
        }
        serde_json::from_slice::<Keys>(bytes).unwrap().0
    }

    #[test]
    fn an_event_with_its_own_event_fields_still_gets_one_key_per_name() {
        let mut value = seed(0).into_value();
        value["status"] = json!("FAILED");
        value["message"] = json!("the producer's own message");
        value["event_id"] = json!("the producer's own id");
        value["event_status"] = json!("the producer's own event_status");
        value["event_message"] = json!("the producer's own event_message");
        value["event_event_id"] = json!("the producer's own event_event_id");
        let event = AuditEvent::from_value(value).unwrap().with_id("m-1");
        let bytes = encode(&event, RECENT);
        let mut names = keys(&bytes);
        let total = names.len();
        names.sort();
        names.dedup();
        assert_eq!(
            names.len(),
            total,
            "a key repeats: {}",
            String::from_utf8_lossy(&bytes)
        );
        let e = entry(&event, RECENT);
        // The service's attributes keep their names; the event's own `event_*` fields win theirs.
        assert_eq!(e["status"], "error");
        assert_eq!(e["event_id"], "m-1");
        assert_eq!(e["event_status"], "the producer's own event_status");
        assert_eq!(e["event_message"], "the producer's own event_message");
        assert_eq!(e["event_event_id"], "the producer's own event_event_id");
    }

    #[test]
    fn an_entry_carries_every_field_severity_time_and_tags() {
        for i in 0..SEED_EVENTS.len() {
            let event = seed(i);
            let e = entry(&event, RECENT);
            for (name, value) in event.fields() {
                if name == "status" {
                    assert_eq!(e["event_status"], value);
                } else {
                    assert_eq!(e[&name], value, "{name}");
                }
            }
            let expected = if event.status() == Status::Failed {
                "error"
            } else {
                "info"
            };
            assert_eq!(e["status"], expected);
            assert_eq!(e["timestamp"], event.fields()["timestamp"]);
            assert!(!e.contains_key("event_timestamp"));
            assert_eq!(e["message"], event.description());
            assert_eq!(e["ddsource"], SOURCE);
            assert_eq!(e["service"], SERVICE);
            assert_eq!(
                e["ddtags"],
                format!(
                    "organization_id:{},project_id:{},action:{}",
                    event.organization_id(),
                    event.project_id(),
                    event.action()
                )
            );
        }
    }

    #[test]
    fn events_older_than_datadog_accepts_are_dated_at_delivery_and_keep_their_time() {
        let event = seed(0);
        let now = event.timestamp() + Duration::from_secs(20 * 3600);
        let e = entry(&event, now);
        assert_eq!(e["timestamp"], now.format(&Rfc3339).unwrap());
        assert_eq!(e["event_timestamp"], event.fields()["timestamp"]);
    }

    #[test]
    fn events_dated_further_ahead_than_datadog_accepts_are_dated_at_delivery_too() {
        let event = seed(0);
        let now = event.timestamp() - Duration::from_secs(3 * 3600);
        let e = entry(&event, now);
        assert_eq!(e["timestamp"], now.format(&Rfc3339).unwrap());
        assert_eq!(e["event_timestamp"], event.fields()["timestamp"]);
        // An hour ahead is within Datadog's window: sent as it is.
        let now = event.timestamp() - Duration::from_secs(3600);
        let e = entry(&event, now);
        assert_eq!(e["timestamp"], event.fields()["timestamp"]);
        assert!(!e.contains_key("event_timestamp"));
    }

    #[test]
    fn batches_hold_at_most_1000_entries() {
        let events: Vec<_> = (0..2_500).map(seed).collect();
        let (batches, failures) = batches(&events, RECENT);
        assert!(failures.is_empty());
        assert_eq!(
            batches.iter().map(Batch::len).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
        let positions: Vec<usize> = batches.iter().flat_map(|b| b.positions.clone()).collect();
        assert_eq!(positions, (0..2_500).collect::<Vec<_>>());
    }

    #[test]
    fn a_log_over_one_megabyte_is_reported_and_not_sent() {
        let mut v = seed(0).into_value();
        v["padding"] = json!("x".repeat(MAX_ENTRY_BYTES));
        let events = vec![seed(1), AuditEvent::from_value(v).unwrap(), seed(2)];
        let (batches, failures) = batches(&events, RECENT);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].0, 1);
        assert!(matches!(failures[0].1, DeliveryError::Oversized(_)));
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].positions, [0, 2]);
    }

    #[test]
    fn bodies_come_back_whole_from_gzip() {
        use std::io::Read;
        let events: Vec<_> = (0..20).map(seed).collect();
        let (batches, _) = batches(&events, RECENT);
        let body = batches[0].body();
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&compress(&body)[..])
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, body);
        assert!(compress(&body).len() < body.len() / 3);
    }

    #[test]
    fn a_batch_body_is_a_json_array_of_its_entries() {
        let events: Vec<_> = (0..3).map(seed).collect();
        let (batches, _) = batches(&events, RECENT);
        let body: Vec<Value> = serde_json::from_slice(&batches[0].body()).unwrap();
        assert_eq!(body.len(), 3);
        assert_eq!(batches[0].body().len(), batches[0].body_len());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn no_request_exceeds_datadogs_limits(sizes in proptest::collection::vec(
            prop_oneof![4 => 0usize..2_000, 3 => 200_000usize..400_000, 1 => 990_000usize..1_010_000],
            1..30,
        )) {
            let events: Vec<AuditEvent> = sizes.iter().enumerate().map(|(i, &n)| {
                let mut v = seed(i).into_value();
                v["padding"] = json!("y".repeat(n));
                AuditEvent::from_value(v).unwrap()
            }).collect();
            let (batches, failures) = batches(&events, RECENT);
            let mut seen: Vec<usize> = failures.iter().map(|f| f.0).collect();
            for b in &batches {
                prop_assert!(b.len() <= MAX_ENTRIES);
                prop_assert!(b.body_len() <= MAX_PAYLOAD_BYTES);
                prop_assert!(b.entries().all(|e| e.len() <= MAX_ENTRY_BYTES));
                seen.extend(&b.positions);
            }
            seen.sort();
            prop_assert_eq!(seen, (0..events.len()).collect::<Vec<_>>(), "every event is sent or reported");
        }
    }
}
