//! What capture reads of an SQS batch: each message's id and body, how often SQS has handed it
//! over and when it was sent, the queue it came from, and the attributes capture itself puts on
//! a message it sends to the retry queue (`requeue.rs`). Lambda's SQS event carries more per
//! message (receipt handle, digests, every attribute); `aws_lambda_events`' `SqsMessage` makes a
//! string or a map entry of each, for every message, and capture uses none of them. Those fields
//! are skipped while parsing instead.

use crate::requeue::{FIRST_SENT_ATTRIBUTE, MESSAGE_ID_ATTRIBUTE};
use audit_log::lambda_event::absent_if_null;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use serde::Deserialize;

/// An SQS batch as Lambda hands it to capture.
#[derive(Debug, Default, Deserialize)]
pub struct Messages {
    #[serde(rename = "Records")]
    pub records: Vec<Message>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct Message {
    #[serde(rename = "messageId")]
    pub message_id: Option<String>,
    pub body: Option<String>,
    #[serde(default, deserialize_with = "absent_if_null")]
    pub attributes: SystemAttributes,
    #[serde(
        default,
        rename = "messageAttributes",
        deserialize_with = "absent_if_null"
    )]
    pub message_attributes: CaptureAttributes,
    #[serde(default, rename = "eventSourceARN")]
    pub event_source_arn: Option<String>,
}

/// The SQS attributes capture reads, as Lambda writes them (numbers in text).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct SystemAttributes {
    #[serde(rename = "ApproximateReceiveCount")]
    pub receive_count: Option<String>,
    #[serde(rename = "SentTimestamp")]
    pub sent_timestamp: Option<String>,
    /// The producer's group (its organization, on a fair queue), kept when the event is sent
    /// again.
    #[serde(rename = "MessageGroupId")]
    pub group: Option<String>,
}

/// The message attributes capture puts on a message it sends to the retry queue; any others are
/// skipped. They are trusted only on that queue, which nothing but capture may send to. On the
/// events queue (where a redrive of the dead-letter queue brings them back) a producer could
/// have set them: the id is only claimed there ([`Message::claims`]).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct CaptureAttributes {
    #[serde(rename = "capture-message-id")]
    pub message_id: Option<StringAttribute>,
    #[serde(rename = "capture-first-sent-at")]
    pub first_sent_at: Option<StringAttribute>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct StringAttribute {
    #[serde(rename = "stringValue")]
    pub string_value: Option<String>,
}

/// The longest message id capture takes from its own attribute: SQS's ids are 36 characters,
/// and failure records' keys leave 100 for one.
const MAX_CAPTURED_ID: usize = 100;

impl Message {
    pub fn new(message_id: &str, body: &str) -> Self {
        Self {
            message_id: Some(message_id.to_owned()),
            body: Some(body.to_owned()),
            ..Self::default()
        }
    }

    /// The id the event is stored under: the id of the message that first brought it, when the
    /// message carries capture's attribute (sent to the retry queue, perhaps dead-lettered and
    /// redriven since); otherwise this message's own.
    pub fn capture_id(&self) -> Option<&str> {
        self.carried_id()
            .or(self.message_id.as_deref())
            .filter(|id| !id.is_empty())
    }

    /// Whether the id the event is stored under is only claimed: carried by a message that
    /// did not come from the retry queue (`retried`), so anyone could have set it.
    pub fn claims(&self, retried: bool) -> bool {
        !retried && self.carried_id().is_some()
    }

    fn carried_id(&self) -> Option<&str> {
        self.message_attributes
            .message_id
            .as_ref()
            .and_then(|a| a.string_value.as_deref())
            .filter(|id| !id.is_empty() && id.len() <= MAX_CAPTURED_ID)
            // As SQS makes them (UUIDs): on the events queue anyone could have set it, and it
            // ends the stored item's key.
            .filter(|id| id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    }

    /// How many times SQS has handed this message over, this time included (1 when unknown).
    pub fn receives(&self) -> u32 {
        self.attributes
            .receive_count
            .as_deref()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1)
    }

    /// When the event's first message was sent (epoch ms), if SQS or, on the retry queue
    /// (`retried`), capture said.
    pub fn first_sent_ms(&self, retried: bool) -> Option<i64> {
        let carried = self.message_attributes.first_sent_at.as_ref();
        carried
            .filter(|_| retried)
            .and_then(|a| a.string_value.as_deref())
            .or(self.attributes.sent_timestamp.as_deref())
            .and_then(|ms| ms.parse().ok())
    }
}

impl From<SqsMessage> for Message {
    fn from(m: SqsMessage) -> Self {
        let string = |name: &str| {
            m.message_attributes.get(name).map(|a| StringAttribute {
                string_value: a.string_value.clone(),
            })
        };
        Self {
            message_attributes: CaptureAttributes {
                message_id: string(MESSAGE_ID_ATTRIBUTE),
                first_sent_at: string(FIRST_SENT_ATTRIBUTE),
            },
            attributes: SystemAttributes {
                receive_count: m.attributes.get("ApproximateReceiveCount").cloned(),
                sent_timestamp: m.attributes.get("SentTimestamp").cloned(),
                group: m.attributes.get("MessageGroupId").cloned(),
            },
            message_id: m.message_id,
            body: m.body,
            event_source_arn: m.event_source_arn,
        }
    }
}

impl From<SqsEvent> for Messages {
    fn from(event: SqsEvent) -> Self {
        Self {
            records: event.records.into_iter().map(Message::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_as_lambda_sends_it_gives_each_message_id_and_body() {
        let fixture = audit_log::fixtures::lambda_event("sqs-receive-message.json");
        let typed: SqsEvent = serde_json::from_str(&fixture).unwrap();
        let lean: Messages = serde_json::from_str(&fixture).unwrap();
        assert_eq!(lean.records.len(), typed.records.len());
        assert!(!lean.records.is_empty());
        for (lean, typed) in lean.records.iter().zip(&typed.records) {
            assert!(lean.message_id.is_some());
            assert_eq!(lean.message_id, typed.message_id);
            assert_eq!(lean.body, typed.body);
            assert_eq!(lean.capture_id(), typed.message_id.as_deref());
            assert!(!lean.claims(false));
            assert_eq!(lean.receives(), 1);
            assert_eq!(lean.first_sent_ms(false), Some(1_523_232_000_000));
            assert_eq!(lean.event_source_arn, typed.event_source_arn);
        }
    }

    #[test]
    fn a_message_whose_attributes_are_null_is_read_as_one_without_them() {
        // As an event made by hand may give them, and `aws_lambda_events` reads them.
        let batch = serde_json::json!({"Records": [{
            "messageId": "m",
            "body": "{}",
            "attributes": null,
            "messageAttributes": null,
            "eventSourceARN": null,
        }]});
        let typed: SqsEvent = serde_json::from_value(batch.clone()).unwrap();
        let lean: Messages = serde_json::from_value(batch).unwrap();
        assert_eq!(
            lean.records[0].capture_id(),
            typed.records[0].message_id.as_deref()
        );
        assert_eq!(lean.records[0].receives(), 1);
        assert_eq!(lean.records[0].first_sent_ms(false), None);
    }

    #[test]
    fn a_message_capture_sent_to_the_retry_queue_is_read_as_the_first_one_and_trusted_from_there_only()
     {
        // As Lambda hands over a message capture sent again, on its fourth receive.
        let record = serde_json::json!({
            "messageId": "second",
            "receiptHandle": "handle",
            "body": "{}",
            "attributes": {"ApproximateReceiveCount": "4", "SentTimestamp": "1700000900000",
                           "SenderId": "AROA", "ApproximateFirstReceiveTimestamp": "1700000900001"},
            "messageAttributes": {
                "capture-message-id": {"stringValue": "first", "stringListValues": [],
                                       "binaryListValues": [], "dataType": "String"},
                "capture-first-sent-at": {"stringValue": "1700000000000", "stringListValues": [],
                                          "binaryListValues": [], "dataType": "Number"},
                "producer-trace": {"stringValue": "x", "dataType": "String"}
            },
            "md5OfBody": "99914b932bd37a50b983c5e7c90ae93b",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:events-retry",
            "awsRegion": "us-east-1"
        });
        let batch = serde_json::json!({ "Records": [record] }).to_string();
        let lean: Messages = serde_json::from_str(&batch).unwrap();
        let typed: Messages = serde_json::from_str::<SqsEvent>(&batch).unwrap().into();
        for m in [&lean.records[0], &typed.records[0]] {
            assert_eq!(m.message_id.as_deref(), Some("second"));
            assert_eq!(
                m.event_source_arn.as_deref(),
                Some("arn:aws:sqs:us-east-1:123456789012:events-retry")
            );
            assert_eq!(m.capture_id(), Some("first"));
            assert!(!m.claims(true));
            assert_eq!(m.receives(), 4);
            assert_eq!(m.first_sent_ms(true), Some(1_700_000_000_000));
            // Anywhere else, a producer could have set them: the id is only claimed, and the
            // first send is this message's.
            assert!(m.claims(false));
            assert_eq!(m.first_sent_ms(false), Some(1_700_000_900_000));
        }
    }

    #[test]
    fn a_carried_id_that_is_no_message_id_is_not_taken() {
        let mut m = Message::new("own", "{}");
        let odd = ["a#b", "with space", "é", "new\nline"].map(String::from);
        for carried in [String::new(), "x".repeat(MAX_CAPTURED_ID + 1)]
            .into_iter()
            .chain(odd)
        {
            m.message_attributes.message_id = Some(StringAttribute {
                string_value: Some(carried),
            });
            assert_eq!(m.capture_id(), Some("own"));
            assert!(!m.claims(false));
        }
    }
}
