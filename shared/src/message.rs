//! The messages on the service's queues, one type per kind, shared by whoever puts
//! them there and the function that takes them. The wire shapes are the ones already in
//! flight (a delayed lane call waits up to 15 minutes), so a deploy reads what the previous
//! version wrote.

use crate::lane::{LaneCall, LaneKey};
use crate::store::StoredKey;
use serde::{Deserialize, Serialize};

/// A lane's scheduled call, on the lanes queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneCallMessage {
    pub lane_call: LaneCall,
}

/// A lane's events the service could not hand to it when they came (its own trouble, such as
/// the organization's share of the configuration table throttled), on the deferred queue:
/// they are handed to the lane again when the message comes, so the stream's shard, every
/// tenant on it, moves on without them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeferredMessage {
    pub deferred: Deferred,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deferred {
    pub organization_id: String,
    pub project_id: String,
    pub events: Vec<StoredKey>,
    /// Events stored that could not be read, with why: listed as failures once the service
    /// can write them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<Unreadable>,
    /// When they were first deferred (epoch ms): past the lanes' retry window they are listed
    /// as failures rather than deferred again.
    pub since_ms: i64,
    /// Times these events were deferred before (0 the first time): each wait is longer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tries: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    pub event: StoredKey,
    pub reason: String,
}

/// The largest message body SQS takes (256 KiB).
pub const MAX_BODY_BYTES: usize = 262_144;

impl Deferred {
    /// The lane's events, in as many messages as SQS needs to carry them, in order.
    pub fn split(
        lane: &LaneKey,
        events: &[StoredKey],
        unreadable: &[Unreadable],
        since_ms: i64,
        tries: u32,
    ) -> Vec<Deferred> {
        let empty = Deferred {
            organization_id: lane.organization_id.clone(),
            project_id: lane.project_id.clone(),
            events: Vec::new(),
            unreadable: Vec::new(),
            since_ms,
            tries,
        };
        // With both lists' names, which an empty list leaves out.
        let bare = body(&DeferredMessage {
            deferred: empty.clone(),
        })
        .len()
            + r#","unreadable":[]"#.len();
        let mut messages = Vec::new();
        let (mut next, mut bytes) = (empty.clone(), bare);
        // Each item and the comma before it.
        let mut add = |bytes_of: usize, put: &mut dyn FnMut(&mut Deferred)| {
            if !next.is_empty() && bytes + bytes_of + 1 > MAX_BODY_BYTES {
                messages.push(std::mem::replace(&mut next, empty.clone()));
                bytes = bare;
            }
            bytes += bytes_of + 1;
            put(&mut next);
        };
        for key in events {
            add(body(key).len(), &mut |d| d.events.push(key.clone()));
        }
        for item in unreadable {
            add(body(item).len(), &mut |d| d.unreadable.push(item.clone()));
        }
        if !next.is_empty() {
            messages.push(next);
        }
        messages
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.unreadable.is_empty()
    }

    pub fn lane(&self) -> LaneKey {
        LaneKey::new(&self.organization_id, &self.project_id)
    }
}

/// The next part of a replay, on the replay queue; the replay itself is read from its item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayPart {
    pub organization_id: String,
    pub project_id: String,
    pub replay_id: String,
    /// Parts in a row whose page met the destination's trouble (0 when the last went well).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub troubled: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The next step of an export, on the export queue (the api function's); the export itself is
/// read from its item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportStep {
    pub organization_id: String,
    pub project_id: String,
    pub export_id: String,
}

/// A stream batch whose retries ran out, as Lambda writes it to the on-failure queue: where
/// its records sit in the stream, not the records.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExhaustedBatch {
    #[serde(rename = "DDBStreamBatchInfo")]
    pub batch: StreamBatchInfo,
    #[serde(rename = "requestContext", default)]
    pub request_context: RequestContext,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamBatchInfo {
    pub stream_arn: String,
    pub shard_id: String,
    pub start_sequence_number: String,
    pub end_sequence_number: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RequestContext {
    /// Why Lambda gave up (`RetryAttemptsExhausted`, `RecordAgeExceeded`...).
    #[serde(default)]
    pub condition: Option<String>,
}

/// Whatever the stream function's queues hand it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum QueueMessage {
    LaneCall(LaneCallMessage),
    Deferred(DeferredMessage),
    Exhausted(ExhaustedBatch),
    Replay(ReplayPart),
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the message is none of a lane call, deferred events, a stream batch whose retries ran out \
     and a replay part"
)]
pub struct UnknownMessage;

impl QueueMessage {
    pub fn parse(body: &str) -> Result<Self, UnknownMessage> {
        serde_json::from_str(body).map_err(|_| UnknownMessage)
    }
}

/// A message body, as it goes on its queue.
pub fn body(message: &impl Serialize) -> String {
    let mut out = Vec::new();
    let mut writer = serde_json::Serializer::with_formatter(&mut out, SqsSafeJson);
    // These types hold only strings and numbers: serializing them cannot fail.
    if message.serialize(&mut writer).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

/// serde_json's compact JSON, but for the two characters it writes as they are and SQS refuses
/// in a body (U+FFFE and U+FFFF: noncharacters, yet no control characters, so an id may hold
/// them), which it writes as JSON escapes.
struct SqsSafeJson;

impl serde_json::ser::Formatter for SqsSafeJson {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut from = 0;
        for (at, refused) in fragment.match_indices(['\u{FFFE}', '\u{FFFF}']) {
            writer.write_all(&fragment.as_bytes()[from..at])?;
            for c in refused.chars() {
                write!(writer, "\\u{:04X}", u32::from(c))?;
            }
            from = at + refused.len();
        }
        writer.write_all(&fragment.as_bytes()[from..])
    }
}

/// A message about one organization's work. The service's queues are shared by every
/// organization; each message names its organization as its SQS message group, which makes a
/// standard queue a fair queue: when one organization holds more than its share of the calls
/// running (SQS counts a tenant with over a tenth of the messages in flight, at least 30 of
/// them, or over a tenth of the consumers' time), the other organizations' messages are
/// received first, so theirs do not wait behind its backlog.
pub trait Queued: Serialize {
    fn organization_id(&self) -> &str;
}

impl Queued for LaneCallMessage {
    fn organization_id(&self) -> &str {
        &self.lane_call.lane.organization_id
    }
}

impl Queued for DeferredMessage {
    fn organization_id(&self) -> &str {
        &self.deferred.organization_id
    }
}

impl Queued for ReplayPart {
    fn organization_id(&self) -> &str {
        &self.organization_id
    }
}

impl Queued for ExportStep {
    fn organization_id(&self) -> &str {
        &self.organization_id
    }
}

/// The longest message group id SQS takes.
pub const MAX_GROUP_CHARS: usize = 128;

/// What SQS refuses in a message group id (it takes letters, digits and ASCII punctuation):
/// anything else is percent-encoded, `%` included so that `%%` is never written.
const GROUP_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b' ').add(b'%');

/// An organization's message group id: its id, with `%`, spaces and what is not ASCII
/// percent-encoded, cut to fit with a digest when too long (the start kept is for reading
/// only: it may end inside an escape). Every organization has one, and two differ.
pub fn group_of(organization_id: &str) -> String {
    let escaped = percent_encoding::utf8_percent_encode(organization_id, GROUP_ESCAPES).to_string();
    crate::id::fitted(escaped, organization_id, MAX_GROUP_CHARS, "%%")
}

/// Where messages are put (SQS; in tests, memory).
pub trait Queues: Sync {
    /// Puts a body on the queue in the message group `group`, visible after `delay_seconds`
    /// (0 to 900). The error says why the queue refused, in its words.
    fn put(
        &self,
        queue_url: &str,
        body: String,
        delay_seconds: i32,
        group: String,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

impl Queues for aws_sdk_sqs::Client {
    async fn put(
        &self,
        queue_url: &str,
        body: String,
        delay_seconds: i32,
        group: String,
    ) -> Result<(), String> {
        self.send_message()
            .queue_url(queue_url)
            .message_body(body)
            .delay_seconds(delay_seconds)
            .message_group_id(group)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
    }
}

/// Puts `message` on a queue in its organization's group, visible after `delay_seconds`.
pub async fn send(
    queues: &impl Queues,
    queue_url: &str,
    message: &impl Queued,
    delay_seconds: i32,
) -> Result<(), String> {
    let group = group_of(message.organization_id());
    queues
        .put(queue_url, body(message), delay_seconds, group)
        .await
}

/// A message put on a queue in memory.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    pub queue_url: String,
    pub body: String,
    pub group: String,
}

/// Queues in memory: what was put where, in order; a queue that refuses when told to.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Default)]
pub struct MemoryQueues {
    pub sent: std::sync::Mutex<Vec<Put>>,
    pub refusing: std::sync::atomic::AtomicBool,
}

#[cfg(any(test, feature = "test-util"))]
impl MemoryQueues {
    /// The messages put on `queue_url`.
    pub fn on(&self, queue_url: &str) -> Vec<Put> {
        let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        sent.iter()
            .filter(|put| put.queue_url == queue_url)
            .cloned()
            .collect()
    }

    /// The bodies put on `queue_url`.
    pub fn bodies(&self, queue_url: &str) -> Vec<String> {
        self.on(queue_url).into_iter().map(|put| put.body).collect()
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Queues for MemoryQueues {
    async fn put(
        &self,
        queue_url: &str,
        body: String,
        delay_seconds: i32,
        group: String,
    ) -> Result<(), String> {
        if self.refusing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("the queue refused the message".into());
        }
        // As SQS: a delay beyond 15 minutes, or a group id it does not take, is an invalid
        // request.
        if !(0..=900).contains(&delay_seconds) {
            return Err(format!("DelaySeconds {delay_seconds} is outside 0 to 900"));
        }
        if !is_group_id(&group) {
            return Err("MessageGroupId is not 1 to 128 letters, digits or punctuation".into());
        }
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        sent.push(Put {
            queue_url: queue_url.to_owned(),
            body,
            group,
        });
        Ok(())
    }
}

/// Whether SQS takes `group` as a message group id.
pub fn is_group_id(group: &str) -> bool {
    (1..=MAX_GROUP_CHARS).contains(&group.len()) && group.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lane::LaneKey;

    #[test]
    fn each_kind_reads_back_as_itself() {
        let call = LaneCallMessage {
            lane_call: LaneCall::new(&LaneKey::new("o", "p"), 1_000),
        };
        assert_eq!(
            QueueMessage::parse(&body(&call)).unwrap(),
            QueueMessage::LaneCall(call)
        );
        for tries in [0, 3] {
            let deferred = DeferredMessage {
                deferred: Deferred {
                    organization_id: "o".into(),
                    project_id: "p".into(),
                    events: vec![StoredKey::new("2026-11-30T10:00:00.000000000Z#m1", 7).unwrap()],
                    unreadable: vec![Unreadable {
                        event: StoredKey::new("2026-11-30T10:00:00.000000000Z#m2", 7).unwrap(),
                        reason: "unknown packing".into(),
                    }],
                    since_ms: 1_000,
                    tries,
                },
            };
            assert_eq!(
                QueueMessage::parse(&body(&deferred)).unwrap(),
                QueueMessage::Deferred(deferred)
            );
        }
        for troubled in [0, 3] {
            let part = ReplayPart {
                organization_id: "o".into(),
                project_id: "p".into(),
                replay_id: "r".into(),
                troubled,
            };
            assert_eq!(
                QueueMessage::parse(&body(&part)).unwrap(),
                QueueMessage::Replay(part)
            );
        }
    }

    #[test]
    fn bodies_hold_only_characters_sqs_takes_and_read_back_as_written() {
        // What SQS takes in a body: #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF.
        let taken = |c: char| matches!(u32::from(c), 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..);
        // An id holds anything but control characters, the two noncharacters SQS refuses among
        // them; DEL and NEL (in no id, but in a reason's text perhaps) SQS takes as they are.
        let lane = LaneKey::new(
            "org\u{FFFF}\u{FFFE}é\u{10FFFF}",
            "p\u{7F}\u{85}\u{FFFD}\"\\",
        );
        let call = LaneCallMessage {
            lane_call: LaneCall::new(&lane, 1_000),
        };
        let written = body(&call);
        assert!(written.chars().all(taken), "{written:?}");
        assert!(written.contains(r"org\uFFFF\uFFFEé"), "{written}");
        assert_eq!(
            QueueMessage::parse(&written).unwrap(),
            QueueMessage::LaneCall(call)
        );
        // Otherwise the very text serde_json writes.
        let plain = LaneCallMessage {
            lane_call: LaneCall::new(&LaneKey::new("o é\u{85}", "p\"\n"), 1_000),
        };
        assert_eq!(body(&plain), serde_json::to_string(&plain).unwrap());
    }

    #[test]
    fn deferred_events_fill_as_few_messages_as_sqs_takes_each_in_order() {
        // Organization, project and message ids of the widest kind: 1,000 events and 200
        // unreadable ones are about 2.3 MB of keys.
        let lane = LaneKey::new("o".repeat(255), "p".repeat(255));
        let key = |i: i64| {
            let sort_key = format!("2026-11-30T10:00:00.000000000Z#{i:04}{}", "m".repeat(900));
            StoredKey::new(&sort_key, 1_000 + i).unwrap()
        };
        let keys: Vec<StoredKey> = (0..1_000).map(key).collect();
        let unreadable: Vec<Unreadable> = (1_000..1_200)
            .map(|i| Unreadable {
                event: key(i),
                reason: "the stored event's `event` is neither packed bytes nor text".into(),
            })
            .collect();
        let messages = Deferred::split(&lane, &keys, &unreadable, 5, 2);
        let bodies: Vec<String> = messages
            .iter()
            .map(|d| {
                body(&DeferredMessage {
                    deferred: d.clone(),
                })
            })
            .collect();
        assert!(bodies.iter().all(|b| b.len() <= MAX_BODY_BYTES));
        assert!(messages.len() > 1);
        for (i, next) in messages.iter().enumerate().skip(1) {
            // Each message but the last is full: the next one's first item would not fit.
            let first = match next.events.first() {
                Some(key) => body(key).len(),
                None => body(&next.unreadable[0]).len(),
            };
            assert!(
                bodies[i - 1].len() + first + 1 > MAX_BODY_BYTES,
                "message {i}"
            );
        }
        let carried: Vec<StoredKey> = messages.iter().flat_map(|d| d.events.clone()).collect();
        assert_eq!(carried, keys);
        let carried: Vec<Unreadable> = messages.iter().flat_map(|d| d.unreadable.clone()).collect();
        assert_eq!(carried, unreadable);
        assert!(
            messages
                .iter()
                .all(|d| d.lane() == lane && d.tries == 2 && d.since_ms == 5)
        );
        // A few events are one message.
        assert_eq!(Deferred::split(&lane, &keys[..3], &[], 0, 0).len(), 1);
        assert!(Deferred::split(&lane, &[], &[], 0, 0).is_empty());
    }

    #[test]
    fn an_on_failure_record_as_lambda_writes_it_is_an_exhausted_batch() {
        let written = r#"{
            "requestContext": {"requestId": "r", "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:stream",
                "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 3},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0", "timestamp": "2026-11-30T10:00:00.000Z",
            "DDBStreamBatchInfo": {"shardId": "shardId-1", "startSequenceNumber": "100",
                "endSequenceNumber": "200", "approximateArrivalOfFirstRecord": "2026-11-30T09:59:00Z",
                "approximateArrivalOfLastRecord": "2026-11-30T09:59:01Z", "batchSize": 2,
                "streamArn": "arn:aws:dynamodb:us-east-1:123456789012:table/events/stream/2026-11-30T00:00:00.000"}
        }"#;
        let QueueMessage::Exhausted(batch) = QueueMessage::parse(written).unwrap() else {
            panic!("not read as an exhausted batch");
        };
        assert_eq!(batch.batch.shard_id, "shardId-1");
        assert_eq!(
            (
                batch.batch.start_sequence_number.as_str(),
                batch.batch.end_sequence_number.as_str()
            ),
            ("100", "200")
        );
        assert_eq!(
            batch.request_context.condition.as_deref(),
            Some("RetryAttemptsExhausted")
        );
    }

    #[test]
    fn anything_else_is_refused_without_echoing_it() {
        for body in [
            "",
            "not json",
            r#"{"replay_id": "r"}"#,
            r#"{"lane_call": {"lane": "secret-looking"}}"#,
        ] {
            let e = QueueMessage::parse(body).unwrap_err().to_string();
            assert!(
                !e.contains("secret-looking") && e.contains("none of"),
                "{e}"
            );
        }
    }

    #[test]
    fn an_organizations_group_is_its_id_where_sqs_takes_it_and_distinct_otherwise() {
        assert_eq!(
            group_of("77f447d4-def0-46f2-bf09-6850d36745ed"),
            "77f447d4-def0-46f2-bf09-6850d36745ed"
        );
        assert_eq!(group_of("a#b/c"), "a#b/c");
        assert_eq!(group_of("50%off"), "50%25off");
        let odd = ["org one", "org%20one", "組織", "e\u{301}", "x%%y"];
        let groups: Vec<String> = odd.iter().map(|id| group_of(id)).collect();
        for (id, group) in odd.iter().zip(&groups) {
            assert!(is_group_id(group), "{id}: {group}");
        }
        let distinct: std::collections::HashSet<_> = groups.iter().collect();
        assert_eq!(distinct.len(), odd.len(), "{groups:?}");
        // The longest ids, of four-byte characters, fit; two that start alike differ.
        let (one, two) = ("😀".repeat(254) + "a", "😀".repeat(254) + "b");
        let (one, two) = (group_of(&one), group_of(&two));
        assert!(is_group_id(&one) && is_group_id(&two), "{one}");
        assert_ne!(one, two);
        // Cut anywhere, inside an escape too, what is left is still a group id SQS takes.
        for id in ["a".repeat(200), "a".repeat(93) + &"é".repeat(60)] {
            let group = group_of(&id);
            assert_eq!(group.len(), MAX_GROUP_CHARS, "{group}");
            assert!(is_group_id(&group), "{group}");
        }
        assert!(!is_group_id("") && !is_group_id("a b") && !is_group_id(&"a".repeat(129)));
    }

    #[tokio::test]
    async fn each_message_goes_in_its_organizations_group() {
        let queues = MemoryQueues::default();
        let part = ReplayPart {
            organization_id: "org one".into(),
            project_id: "p".into(),
            replay_id: "r".into(),
            troubled: 0,
        };
        send(&queues, "replays", &part, 0).await.unwrap();
        let call = LaneCallMessage {
            lane_call: LaneCall::new(&LaneKey::new("o2", "p"), 1_000),
        };
        send(&queues, "lanes", &call, 0).await.unwrap();
        assert_eq!(queues.on("replays")[0].group, "org%20one");
        assert_eq!(queues.on("lanes")[0].group, "o2");
    }
}
