//! How an audit event is laid out in the events table.
//!
//! One item per SQS message: the partition key groups an organization's project, the sort key
//! orders by the event's time and ends with the message id, so "the events of one project, newest
//! first, within a time range" is one `Query`, and a redelivered message overwrites its own item
//! with identical content (which DynamoDB Streams does not report again).
//!
//! The names here must match `template.yaml` (`EventsTable`); a test holds them together.

pub mod codec;
pub mod dynamodb;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;
pub mod pages;
mod projects;

use crate::event::{AuditEvent, EventError};
use crate::settings::Retention;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use std::borrow::Cow;
use std::collections::HashMap;
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

pub use dynamodb::{EventTable, StoreError, WriteFailure};
pub use pages::{Page, PageRequest};

/// Where capture writes events (the events table; in tests, memory).
pub trait EventWriter: Sync {
    /// Writes every event, and returns those that could not be written by `deadline`.
    /// Events must have distinct message ids.
    fn put_events(
        &self,
        events: Vec<StoredEvent>,
        deadline: tokio::time::Instant,
    ) -> impl std::future::Future<Output = Vec<WriteFailure>> + Send;
}

/// Attribute names of an item in the events table. Nothing repeats the key: the organization
/// and project are in the event, the message id ends the sort key.
pub mod attr {
    pub const PARTITION_KEY: &str = "pk";
    pub const SORT_KEY: &str = "sk";
    /// The TTL attribute: epoch seconds.
    pub const EXPIRES_AT: &str = "expires_at";
    /// The event's compact JSON, packed (`codec`): a Binary. Items written before kept it as a
    /// String, or gzipped when large, beside `organization_id`, `project_id` and `message_id`
    /// attributes that are no longer written (nor needed to read them).
    pub const EVENT: &str = "event";
}

/// DynamoDB's item size limit (names and values together).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// DynamoDB's limit on a sort key.
pub const MAX_SORT_KEY_BYTES: usize = 1_024;
/// `#` separates the key's parts and `%` escapes, so ids containing them stay unambiguous.
const KEY_ESCAPES: &AsciiSet = &CONTROLS.add(b'#').add(b'%');

/// Fixed width, so sort keys order the same as the instants they name.
const SORT_TIME: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");
/// `SORT_TIME`'s width.
const SORT_TIME_BYTES: usize = "2026-12-02T13:05:00.000000000Z".len();

/// An id as it appears inside a key: separators escaped.
pub fn key_part(id: &str) -> String {
    escaped(id).into_owned()
}

/// An id inside a sort key, where the rest of the key leaves it `MAX_ID_KEY_BYTES`: its
/// [`key_part`] when that fits (every id that could be stored before did), else the part's
/// start, [`FITTED_MARKER`] and a digest of the id. Such a part is not read back into an id:
/// the items keyed by it carry the id as an attribute.
pub fn sort_key_part(id: &str) -> String {
    crate::id::fitted(key_part(id), id, crate::id::MAX_ID_KEY_BYTES, FITTED_MARKER)
}

/// Whether `part` could be a [`sort_key_part`]: not empty, within its bytes, separators escaped.
pub fn is_sort_key_part(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= crate::id::MAX_ID_KEY_BYTES
        && !part.contains('#')
        && !part.chars().any(char::is_control)
}

/// Marks a [`sort_key_part`] cut to fit: escaping writes `%` only before two hex digits.
pub const FITTED_MARKER: &str = "%~";

/// Borrowed when nothing needs escaping, as in most ids. Percent-encoding writes every
/// non-ASCII byte as three, so 255 `é` would take 1,530 bytes; an id that long once encoded
/// keeps its other characters as they are and escapes only the separators. No id that short
/// escaping fits was ever written the long way, so each id still has one key part, and
/// [`id_of_key_part`] reads both (percent-decoding passes raw characters through).
fn escaped(id: &str) -> Cow<'_, str> {
    let encoded: Cow<'_, str> = utf8_percent_encode(id, KEY_ESCAPES).into();
    if encoded.len() <= crate::id::MAX_ID_KEY_BYTES {
        return encoded;
    }
    let mut part = String::with_capacity(id.len() + 16);
    for c in id.chars() {
        if c == '#' || c == '%' || c.is_control() {
            for b in c.encode_utf8(&mut [0; 4]).bytes() {
                part.push_str(&format!("%{b:02X}"));
            }
        } else {
            part.push(c);
        }
    }
    Cow::Owned(part)
}

/// The id a key part names (`None` if it is not one [`key_part`] made).
pub fn id_of_key_part(part: &str) -> Option<String> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .ok()
        .map(|id| id.into_owned())
}

/// The partition key of an organization's project.
pub fn partition_key(organization_id: &str, project_id: &str) -> String {
    [escaped(organization_id), escaped(project_id)].join("#")
}

/// The organization and project a partition key names (`None` if it is not one).
pub fn project_of(partition_key: &str) -> Option<(String, String)> {
    let (org, project) = partition_key.split_once('#')?;
    // An escaped `#` never appears bare: a second one means this is no partition key.
    (!project.contains('#')).then_some(())?;
    Some((id_of_key_part(org)?, id_of_key_part(project)?))
}

/// The time part of a sort key: every sort key of an event at or after `t` is `>=` this.
/// Any offset is turned into UTC first: the format writes a literal `Z`.
pub fn sort_key_time(t: OffsetDateTime) -> String {
    let mut key = String::with_capacity(SORT_TIME_BYTES);
    push_sort_key_time(&mut key, t);
    key
}

/// `SORT_TIME`'s text of a time of RFC 3339's years, written digit by digit (capture writes one
/// per event; the formatter's interpretation of its description costs ten times as much).
fn push_sort_key_time(key: &mut String, t: OffsetDateTime) {
    let t = t.to_offset(time::UtcOffset::UTC);
    if !(0..=9999).contains(&t.year()) {
        // No RFC 3339 time is out there, so formatting cannot fail.
        key.push_str(&t.format(SORT_TIME).unwrap_or_default());
        return;
    }
    let parts: [(u32, u32, char); 7] = [
        (t.year().unsigned_abs(), 4, '-'),
        (u8::from(t.month()).into(), 2, '-'),
        (t.day().into(), 2, 'T'),
        (t.hour().into(), 2, ':'),
        (t.minute().into(), 2, ':'),
        (t.second().into(), 2, '.'),
        (t.nanosecond(), 9, 'Z'),
    ];
    for (value, width, then) in parts {
        for place in (0..width).rev() {
            let digit = (value / 10u32.pow(place) % 10) as u8;
            key.push(char::from(b'0' + digit));
        }
        key.push(then);
    }
}

/// Whether `sk` is a sort key this table writes (a time part, `#`, a message id) inside the
/// range: a position from a caller's cursor that is not one never reaches DynamoDB.
pub fn is_sort_key_within(
    sk: &str,
    since: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
) -> bool {
    if sk.len() > MAX_SORT_KEY_BYTES {
        return false;
    }
    let Some((time, id)) = sk.split_once('#') else {
        return false;
    };
    !id.is_empty()
        && time::PrimitiveDateTime::parse(time, SORT_TIME).is_ok()
        && since.is_none_or(|s| sk >= sort_key_time(s).as_str())
        && until.is_none_or(|u| sk <= format!("{}$", sort_key_time(u)).as_str())
}

/// Bytes a piece of JSON takes inside a Lambda response: the HTTP body travels as a JSON
/// string there, so every `"` and `\` is escaped once more. Lambda answers at most 6 MB.
pub fn bytes_in_response(json: &str) -> usize {
    json.len() + json.bytes().filter(|b| matches!(b, b'"' | b'\\')).count()
}

/// The RFC 3339 form of a sort key's time part (`None` if it is not one).
pub fn rfc3339_of_sort_time(time_part: &str) -> Option<String> {
    time::PrimitiveDateTime::parse(time_part, SORT_TIME)
        .ok()?
        .assume_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// The message id a sort key ends with.
pub fn message_id_in(sort_key: &str) -> Option<&str> {
    sort_key.split_once('#').map(|(_, id)| id)
}

/// A fresh id for an event the service stores itself, where capture would use the SQS
/// message's: 128 random bits, as the service's other ids, `service-` before them.
pub fn new_message_id() -> String {
    format!("service-{}", crate::streaming::new_external_id())
}

pub fn sort_key(t: OffsetDateTime, message_id: &str) -> String {
    let mut key = String::with_capacity(SORT_TIME_BYTES + 1 + message_id.len());
    push_sort_key_time(&mut key, t);
    key.push('#');
    key.push_str(message_id);
    key
}

/// The TTL: the event's own time plus the retention, so retention counts from when it happened.
pub fn expires_at(t: OffsetDateTime, retention: Retention) -> i64 {
    t.unix_timestamp()
        .saturating_add(retention.as_duration().as_secs() as i64)
}

/// The later of two TTLs, where `None` (no TTL: kept for ever) is later than any.
pub fn later_expiry(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    Some(a?.max(b?))
}

/// An event ready to be written: its item and the SQS message it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub message_id: String,
    pub item: HashMap<String, AttributeValue>,
    /// Its TTL, as in the item: its project's note must last as long.
    pub expires_at: i64,
    /// Its message only claims the id it is stored under (`claimed`).
    pub claimed: bool,
}

impl StoredEvent {
    pub fn new(
        message_id: &str,
        event: &AuditEvent,
        retention: Retention,
    ) -> Result<Self, EventError> {
        // What is stored is the compact form, which may be longer than the body it came from
        // (`1e2` comes back as `100.0`): it is what must stay readable.
        let json = event.json();
        if json.len() > crate::event::MAX_EVENT_BYTES {
            return Err(EventError::TooLarge {
                size: json.len(),
                max: crate::event::MAX_EVENT_BYTES,
            });
        }
        let t = event.timestamp();
        let expires_at = expires_at(t, retention);
        let item = HashMap::from([
            (
                attr::PARTITION_KEY.to_owned(),
                AttributeValue::S(partition_key(event.organization_id(), event.project_id())),
            ),
            (
                attr::SORT_KEY.to_owned(),
                AttributeValue::S(sort_key(t, message_id)),
            ),
            (
                attr::EXPIRES_AT.to_owned(),
                AttributeValue::N(expires_at.to_string()),
            ),
            (
                attr::EVENT.to_owned(),
                AttributeValue::B(Blob::new(codec::pack(json))),
            ),
        ]);
        let size = item_size(&item);
        if size > MAX_ITEM_BYTES {
            return Err(EventError::TooLargeToStore {
                size,
                max: MAX_ITEM_BYTES,
            });
        }
        Ok(Self {
            message_id: message_id.to_owned(),
            item,
            expires_at,
            claimed: false,
        })
    }

    /// The event, written only where its key holds nothing yet or this same event: its id is
    /// one its message claims (a message redriven to the events queue carries the id its event
    /// was first stored under, which anyone sending to that queue could set), so it must not
    /// overwrite another event stored under that id.
    pub fn claimed(mut self) -> Self {
        self.claimed = true;
        self
    }

    /// What the item counts for DynamoDB's size limit, its write units and its storage.
    pub fn size(&self) -> usize {
        item_size(&self.item)
    }
}

/// Where an event is stored and what identifies it: the sort key inside its project, the SQS
/// message it came from (a stable id across redeliveries and replays), its TTL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct StoredKey {
    pub sort_key: String,
    pub message_id: String,
    pub expires_at: i64,
}

impl StoredKey {
    pub fn of(item: &HashMap<String, AttributeValue>) -> Option<Self> {
        Self::new(
            item.get(attr::SORT_KEY)?.as_s().ok()?,
            item.get(attr::EXPIRES_AT)?.as_n().ok()?.parse().ok()?,
        )
    }

    /// The key of the event stored under `sort_key`.
    pub fn new(sort_key: &str, expires_at: i64) -> Option<Self> {
        Some(Self {
            sort_key: sort_key.to_owned(),
            message_id: message_id_in(sort_key)?.to_owned(),
            expires_at,
        })
    }

    /// The event's time, as its sort key starts with it.
    pub fn time_part(&self) -> &str {
        self.sort_key
            .split_once('#')
            .map_or(self.sort_key.as_str(), |(t, _)| t)
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("stored item has no `{0}` attribute of the expected type")]
    Missing(&'static str),
    #[error("stored event could not be decompressed")]
    Corrupt,
}

/// The original event's compact JSON, from a stored item.
pub fn event_json(item: &HashMap<String, AttributeValue>) -> Result<String, DecodeError> {
    match item.get(attr::EVENT) {
        Some(AttributeValue::B(b)) => codec::unpack(b.as_ref()),
        Some(AttributeValue::S(s)) => Ok(s.clone()),
        _ => Err(DecodeError::Missing(attr::EVENT)),
    }
}

/// Whether two items hold the same event: the same JSON value, however each was written
/// (builds before 2026-12-03 stored the event as serde_json wrote it, later ones keep its
/// escapes and numbers as the producer wrote them). A float of 17 significant digits that an
/// older build rewrote may read back a bit apart from the producer's text: such an event is
/// taken for another (refused, dead-lettered, still stored), never the other way round.
pub fn same_event(
    a: &HashMap<String, AttributeValue>,
    b: &HashMap<String, AttributeValue>,
) -> bool {
    let value = |item| {
        event_json(item)
            .ok()
            .and_then(|json| serde_json::from_str::<serde_json::Value>(&json).ok())
    };
    value(a).is_some_and(|a| Some(a) == value(b))
}

/// DynamoDB's item size: names plus values, numbers counted at their largest.
fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(s) => s.len(),
                    AttributeValue::B(b) => b.as_ref().len(),
                    AttributeValue::N(_) => 21,
                    _ => 0,
                }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::SEED_EVENTS;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sort_key_times_are_the_format_descriptions_text(
            seconds in -377_705_116_800i64..253_402_300_800,
            nanos in 0u32..1_000_000_000,
            offset_minutes in -1_439i32..1_440,
        ) {
            let offset = time::UtcOffset::from_whole_seconds(offset_minutes * 60).unwrap();
            let in_utc = OffsetDateTime::from_unix_timestamp(seconds)
                .unwrap()
                .replace_nanosecond(nanos)
                .unwrap();
            // At the ends of the range, the same instant elsewhere may be out of it.
            let Some(t) = in_utc.checked_to_offset(offset) else {
                return Ok(());
            };
            let formatted = t.to_offset(time::UtcOffset::UTC).format(SORT_TIME).unwrap();
            prop_assert_eq!(sort_key_time(t), formatted.clone());
            prop_assert_eq!(sort_key(t, "m-1"), format!("{formatted}#m-1"));
        }

        #[test]
        fn keys_escape_only_their_separators(
            org in "[a-z0-9#%\\-]{1,12}",
            project in "[a-z0-9#%é\\-]{1,12}",
        ) {
            let key = partition_key(&org, &project);
            prop_assert_eq!(key.matches('#').count(), 1);
            prop_assert_eq!(project_of(&key), Some((org.clone(), project.clone())));
            prop_assert_eq!(key_part(&org), utf8_percent_encode(&org, KEY_ESCAPES).to_string());
        }

        #[test]
        fn sort_key_parts_fit_and_name_one_id_each(
            one in "[a-z#%é項😀 ]{1,255}",
            two in "[a-z#%é項😀 ]{1,255}",
        ) {
            let part = sort_key_part(&one);
            prop_assert!(part.len() <= crate::id::MAX_ID_KEY_BYTES);
            prop_assert!(!part.contains('#'));
            let whole = key_part(&one);
            let cut = whole.len() > crate::id::MAX_ID_KEY_BYTES;
            prop_assert_eq!(part.contains(FITTED_MARKER), cut);
            if !cut {
                prop_assert_eq!(&part, &whole);
            }
            prop_assert_eq!(one == two, part == sort_key_part(&two));
        }

        #[test]
        fn long_ids_keep_their_characters_and_read_back(
            id in "[a-z#%é項😀 ]{100,255}",
        ) {
            let part = key_part(&id);
            let encoded = utf8_percent_encode(&id, KEY_ESCAPES).to_string();
            if encoded.len() <= crate::id::MAX_ID_KEY_BYTES {
                prop_assert_eq!(&part, &encoded);
            } else {
                prop_assert!(part.len() < encoded.len());
            }
            prop_assert!(!part.contains('#'));
            prop_assert_eq!(id_of_key_part(&part), Some(id.clone()));
            let key = partition_key(&id, &id);
            prop_assert_eq!(project_of(&key), Some((id.clone(), id)));
        }
    }
    use serde_json::{Value, json};
    use time::macros::datetime;

    fn event(org: &str, project: &str, timestamp: &str) -> AuditEvent {
        AuditEvent::from_value(json!({
            "status": "OK", "action": "create", "description": "Created bucket",
            "organization_id": org, "project_id": project, "timestamp": timestamp,
            "actor": {"principal_id": "p", "type": "TYPE_USER"}
        }))
        .unwrap()
    }

    fn s<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> &'a str {
        item[name].as_s().unwrap()
    }

    #[test]
    fn the_item_carries_keys_the_ttl_and_the_packed_event_and_nothing_else() {
        let e = event("org-1", "proj-1", "2023-07-14T17:23:21Z");
        let stored = StoredEvent::new("msg-1", &e, Retention::default()).unwrap();
        let item = &stored.item;
        assert_eq!(s(item, attr::PARTITION_KEY), "org-1#proj-1");
        assert_eq!(
            s(item, attr::SORT_KEY),
            "2023-07-14T17:23:21.000000000Z#msg-1"
        );
        let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["event", "expires_at", "pk", "sk"]);
        assert!(item[attr::EVENT].is_b());
        assert_eq!(StoredKey::of(item).unwrap().message_id, "msg-1");
        assert_eq!(
            item[attr::EXPIRES_AT].as_n().unwrap(),
            &(1_689_355_401 + 400 * 86_400).to_string()
        );
        assert_eq!(event_json(item).unwrap(), e.json());
    }

    proptest::proptest! {
        #[test]
        fn a_partition_key_names_its_organization_and_project(org in "\\PC{1,20}", project in "\\PC{1,20}") {
            let key = partition_key(&org, &project);
            proptest::prop_assert_eq!(project_of(&key), Some((org, project)));
        }
    }

    #[test]
    fn ids_with_separators_make_distinct_partition_keys() {
        assert_ne!(partition_key("a#b", "c"), partition_key("a", "b#c"));
        assert_ne!(partition_key("a%23b", "c"), partition_key("a#b", "c"));
        assert_eq!(partition_key("a#b", "c"), "a%23b#c");
    }

    #[test]
    fn sort_keys_order_like_the_instants_they_name() {
        let times = [
            datetime!(2023-07-14 17:23:21 UTC),
            datetime!(2023-07-14 17:23:21.5 UTC),
            datetime!(2023-07-14 17:23:21.000000001 UTC),
            datetime!(2023-07-14 17:23:22 UTC),
            datetime!(999-01-01 0:00 UTC),
            datetime!(9999-12-31 23:59:59.999999999 UTC),
        ];
        for a in times {
            for b in times {
                assert_eq!(
                    sort_key(a, "m").cmp(&sort_key(b, "m")),
                    a.cmp(&b),
                    "{a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn the_later_of_two_ttls_is_none_when_either_keeps_for_ever() {
        assert_eq!(later_expiry(Some(5), Some(9)), Some(9));
        assert_eq!(later_expiry(Some(9), Some(5)), Some(9));
        assert_eq!(later_expiry(None, Some(9)), None);
        assert_eq!(later_expiry(Some(9), None), None);
    }

    #[test]
    fn the_ttl_counts_retention_from_the_events_own_time() {
        let t = datetime!(2024-02-29 12:00 UTC);
        let r = Retention::days(366).unwrap();
        assert_eq!(expires_at(t, r), t.unix_timestamp() + 366 * 86_400);
    }

    #[test]
    fn events_of_every_size_are_packed_and_come_back_identical() {
        for (_, body) in SEED_EVENTS {
            let e = AuditEvent::from_json(body).unwrap();
            let stored = StoredEvent::new("m", &e, Retention::default()).unwrap();
            assert!(stored.item[attr::EVENT].is_b());
            assert_eq!(event_json(&stored.item).unwrap(), e.json());
            assert!(
                stored.size() < e.json().len(),
                "{} bytes stored for {}",
                stored.size(),
                e.json().len()
            );
        }
        let mut big = event("o", "p", "2024-01-01T00:00:00Z").into_value();
        let builds: Vec<Value> = (0..5_000)
            .map(|i| json!({"id": format!("01H5APPBYYF4D0NMVZCRK{i:05}"), "platform": "aws",
                "artifacts": [{"region": "us-west-2", "external_identifier": format!("ami-{i:08x}")}]}))
            .collect();
        big["builds"] = Value::Array(builds);
        let e = AuditEvent::from_value(big.clone()).unwrap();
        assert!(e.json().len() > MAX_ITEM_BYTES);
        let stored = StoredEvent::new("m", &e, Retention::default()).unwrap();
        let back: Value = serde_json::from_str(&event_json(&stored.item).unwrap()).unwrap();
        assert_eq!(back, big);
    }

    #[test]
    fn the_same_event_is_the_same_json_value_however_it_was_written() {
        let mut seed: serde_json::Value = serde_json::from_str(SEED_EVENTS[0].1).unwrap();
        seed["description"] = "café".into();
        let plain = seed.to_string();
        let escaped = plain.replace('é', "\\u00e9");
        assert_ne!(plain, escaped);
        let stored = |json: &str| {
            let event = AuditEvent::from_json(json).unwrap();
            StoredEvent::new("m-1", &event, Retention::default())
                .unwrap()
                .item
        };
        // As this build stores it, and as builds that kept serde_json's text stored it.
        let mut older = stored(&plain);
        older.insert(attr::EVENT.into(), AttributeValue::S(plain.clone()));
        assert!(same_event(&stored(&escaped), &stored(&plain)));
        assert!(same_event(&stored(&escaped), &older));
        seed["description"] = "rewritten".into();
        assert!(!same_event(&stored(&seed.to_string()), &older));
    }

    #[test]
    fn items_written_before_events_were_packed_read_as_they_were() {
        for (_, body) in SEED_EVENTS {
            let e = AuditEvent::from_json(body).unwrap();
            for gzipped in [false, true] {
                let item = crate::fixtures::item_written_before_packing(
                    &e,
                    "m-old",
                    gzipped,
                    1_800_000_000,
                );
                assert_eq!(event_json(&item).unwrap(), e.json());
                let key = StoredKey::of(&item).unwrap();
                assert_eq!(
                    (key.message_id.as_str(), key.expires_at),
                    ("m-old", 1_800_000_000)
                );
            }
        }
    }

    #[test]
    fn an_event_over_the_limit_however_it_was_made_is_refused_with_its_size() {
        // Capture stores a body as written (less whitespace): never longer than the message.
        // An event made from values (the api's own) is measured as written out.
        let mut big = event("o", "p", "2024-01-01T00:00:00Z").into_value();
        big["n"] = Value::from(vec![100.0; 240_000]);
        let e = AuditEvent::from_value(big).unwrap();
        assert!(e.json().len() > crate::event::MAX_EVENT_BYTES);
        let err = StoredEvent::new("m", &e, Retention::default()).unwrap_err();
        assert!(
            matches!(err, EventError::TooLarge { size, max } if size > max),
            "{err}"
        );
    }

    #[test]
    fn an_event_that_cannot_fit_even_compressed_is_refused_with_its_size() {
        let mut big = event("o", "p", "2024-01-01T00:00:00Z").into_value();
        // Pseudo-random hex barely compresses.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let noise: String = (0..900_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from_digit((x % 16) as u32, 16).unwrap()
            })
            .collect();
        big["noise"] = Value::String(noise);
        let e = AuditEvent::from_value(big).unwrap();
        let err = StoredEvent::new("m", &e, Retention::default()).unwrap_err();
        assert!(
            matches!(err, EventError::TooLargeToStore { size, max } if size > max),
            "{err}"
        );
    }

    #[test]
    fn the_widest_valid_ids_make_keys_dynamodb_takes() {
        let emoji = "😀".repeat(crate::id::MAX_ID_CHARS);
        for widest in ["#".repeat(crate::id::MAX_ID_CHARS), "項".repeat(255), emoji] {
            let e = event(&widest, &widest, "2024-01-01T00:00:00Z");
            let stored = StoredEvent::new("m", &e, Retention::default()).unwrap();
            assert!(s(&stored.item, attr::PARTITION_KEY).len() <= 2048);
        }
    }

    #[test]
    fn only_sort_keys_inside_the_range_are_positions() {
        let sk = sort_key(datetime!(2026-01-01 12:00 UTC), "m-1");
        assert!(is_sort_key_within(&sk, None, None));
        assert!(is_sort_key_within(
            &sk,
            Some(datetime!(2026-01-01 21:00 +09:00)),
            Some(datetime!(2026-01-01 04:00 -08:00))
        ));
        assert!(!is_sort_key_within(
            &sk,
            Some(datetime!(2026-01-02 0:00 UTC)),
            None
        ));
        assert!(!is_sort_key_within(
            &sk,
            None,
            Some(datetime!(2026-01-01 0:00 UTC))
        ));
        for bad in [
            "",
            "#m",
            "2026-01-01T12:00:00Z#m",
            "garbage",
            "2026-01-01T12:00:00.000000000Z#",
        ] {
            assert!(!is_sort_key_within(bad, None, None), "{bad}");
        }
    }

    #[test]
    fn response_bytes_count_the_escaping_of_the_body() {
        assert_eq!(bytes_in_response(r#"{"a":"b"}"#), 9 + 4);
        assert_eq!(bytes_in_response(r#"{"a":"\n"}"#), 10 + 4 + 1);
        assert_eq!(bytes_in_response("{}"), 2);
    }

    #[test]
    fn times_with_offsets_make_the_sort_key_of_the_same_instant() {
        let utc = datetime!(2026-01-01 00:00 UTC);
        let tokyo = datetime!(2026-01-01 09:00 +09:00);
        let pacific = datetime!(2025-12-31 16:00 -08:00);
        assert_eq!(sort_key_time(tokyo), sort_key_time(utc));
        assert_eq!(sort_key_time(pacific), sort_key_time(utc));
        assert_eq!(sort_key_time(tokyo), "2026-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn a_corrupt_or_missing_body_is_a_decode_error() {
        let mut item = HashMap::new();
        assert_eq!(event_json(&item), Err(DecodeError::Missing(attr::EVENT)));
        item.insert(
            attr::EVENT.to_owned(),
            AttributeValue::B(Blob::new(b"not gzip".to_vec())),
        );
        assert_eq!(event_json(&item), Err(DecodeError::Corrupt));
        // A zstd frame cut short, and one naming a dictionary this service never had.
        let packed = codec::pack(event("o", "p", "2024-01-01T00:00:00Z").json());
        let other = crate::fixtures::packed_with_another_dictionary(packed.clone());
        for bad in [packed[..packed.len() / 2].to_vec(), other] {
            item.insert(attr::EVENT.to_owned(), AttributeValue::B(Blob::new(bad)));
            assert_eq!(event_json(&item), Err(DecodeError::Corrupt));
        }
    }
}
