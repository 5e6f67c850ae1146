//! What Lambda hands the stream function: records of the events table's stream, or messages of
//! its queues (lanes, replays, the on-failure queue), or the schedule's call to sweep the lanes.
//! Records and messages arrive as `{"Records": [...]}` and are answered with
//! `{"batchItemFailures": [...]}` (each record names its source); the schedule's call is an
//! EventBridge `Scheduled Event`, answered with what the sweep did.

use crate::records::StreamRecords;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

#[derive(Debug)]
pub enum Invocation {
    Stream(StreamRecords),
    Queue(SqsEvent),
    /// EventBridge's schedule: lanes whose call never came are given another.
    Sweep,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Stream(DynamoDbEventResponse),
    Queue(SqsBatchResponse),
    Sweep(Swept),
}

/// What a sweep did.
#[derive(Debug, Default, Serialize)]
pub struct Swept {
    /// Lanes given a new call.
    pub lanes: usize,
}

const SQS_SOURCE: &str = "aws:sqs";
/// The `detail-type` of the events an EventBridge schedule sends.
const SCHEDULED: &str = "Scheduled Event";

/// The batch's records, typed by the first one's source, in one pass over the payload: only the
/// first record is read twice (a batch has one source).
struct Records;

impl<'de> serde::de::Visitor<'de> for Records {
    type Value = Invocation;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of stream records or queue messages")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Invocation, A::Error> {
        let Some(first) = seq.next_element::<Value>()? else {
            // Nothing to deliver either way.
            return Ok(Invocation::Stream(StreamRecords::default()));
        };
        if first["eventSource"].as_str() == Some(SQS_SOURCE) {
            let mut event = SqsEvent::default();
            event.records = all_as(first, seq)?;
            Ok(Invocation::Queue(event))
        } else {
            Ok(Invocation::Stream(StreamRecords {
                records: all_as(first, seq)?,
            }))
        }
    }
}

/// The first record (already read) and the rest, as `T`.
fn all_as<'de, T, A>(first: Value, mut seq: A) -> Result<Vec<T>, A::Error>
where
    T: serde::de::DeserializeOwned,
    A: serde::de::SeqAccess<'de>,
{
    use serde::de::Error;
    let mut all = Vec::with_capacity(seq.size_hint().unwrap_or(0) + 1);
    all.push(serde_json::from_value(first).map_err(A::Error::custom)?);
    while let Some(record) = seq.next_element()? {
        all.push(record);
    }
    Ok(all)
}

impl<'de> Deserialize<'de> for Invocation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        struct Payload {
            #[serde(rename = "Records", default, deserialize_with = "records")]
            invocation: Option<Invocation>,
            #[serde(rename = "detail-type")]
            detail_type: Option<String>,
        }
        fn records<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Invocation>, D::Error> {
            d.deserialize_seq(Records).map(Some)
        }
        let payload = Payload::deserialize(deserializer)?;
        match (payload.invocation, payload.detail_type.as_deref()) {
            (Some(invocation), _) => Ok(invocation),
            (None, Some(SCHEDULED)) => Ok(Invocation::Sweep),
            (None, _) => Err(D::Error::custom(
                "neither records, messages nor a scheduled event",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use audit_log::fixtures::lambda_event as fixture;

    #[test]
    fn queue_messages_and_stream_records_are_told_apart_by_their_source() {
        let queue: Invocation = serde_json::from_str(&fixture("sqs-receive-message.json")).unwrap();
        assert!(matches!(queue, Invocation::Queue(e) if e.records.len() == 1));
        let stream: Invocation =
            serde_json::from_str(&fixture("dynamodb-stream-insert.json")).unwrap();
        assert!(matches!(stream, Invocation::Stream(e) if !e.records.is_empty()));
        let empty: Invocation = serde_json::from_str(r#"{"Records": []}"#).unwrap();
        assert!(matches!(empty, Invocation::Stream(e) if e.records.is_empty()));
    }

    /// The fixture's one record, `n` times in one payload.
    fn many(name: &str, n: usize) -> String {
        let mut payload: Value = serde_json::from_str(&fixture(name)).unwrap();
        let record = payload["Records"][0].clone();
        payload["Records"] = Value::Array(vec![record; n]);
        payload.to_string()
    }

    #[test]
    fn every_record_of_a_batch_is_read_and_a_batch_without_records_is_refused() {
        let stream: Invocation =
            serde_json::from_str(&many("dynamodb-stream-insert.json", 3)).unwrap();
        assert!(matches!(stream, Invocation::Stream(e) if e.records.len() == 3));
        let queue: Invocation = serde_json::from_str(&many("sqs-receive-message.json", 4)).unwrap();
        assert!(matches!(queue, Invocation::Queue(e) if e.records.len() == 4));
        assert!(serde_json::from_str::<Invocation>("{}").is_err());
    }

    #[test]
    fn the_schedules_event_is_a_sweep_and_no_other_event_is() {
        let scheduled: Invocation =
            serde_json::from_str(&fixture("eventbridge-scheduled-event.json")).unwrap();
        assert!(matches!(scheduled, Invocation::Sweep));
        let mut other: Value =
            serde_json::from_str(&fixture("eventbridge-scheduled-event.json")).unwrap();
        other["detail-type"] = "Object Created".into();
        assert!(serde_json::from_value::<Invocation>(other).is_err());
        assert_eq!(
            serde_json::to_value(Answer::Sweep(Swept { lanes: 2 })).unwrap(),
            serde_json::json!({"lanes": 2})
        );
    }

    #[test]
    fn both_answers_are_batch_item_failures() {
        for answer in [
            Answer::Stream(DynamoDbEventResponse::default()),
            Answer::Queue(SqsBatchResponse::default()),
        ] {
            assert_eq!(
                serde_json::to_value(answer).unwrap(),
                serde_json::json!({"batchItemFailures": []})
            );
        }
    }
}
