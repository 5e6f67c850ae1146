//! What Lambda hands the stream function: records of the events table's stream, or messages of
//! its queues (lanes, replays, the on-failure queue). Both arrive as `{"Records": [...]}` and
//! both are answered with `{"batchItemFailures": [...]}`; each record names its source.

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

#[derive(Debug)]
pub enum Invocation {
    Stream(Event),
    Queue(SqsEvent),
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Stream(DynamoDbEventResponse),
    Queue(SqsBatchResponse),
}

const SQS_SOURCE: &str = "aws:sqs";

impl<'de> Deserialize<'de> for Invocation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let payload = Value::deserialize(deserializer)?;
        // A batch has one source; an empty one is a stream batch with nothing to deliver.
        if payload["Records"][0]["eventSource"].as_str() == Some(SQS_SOURCE) {
            serde_json::from_value(payload)
                .map(Self::Queue)
                .map_err(D::Error::custom)
        } else {
            serde_json::from_value(payload)
                .map(Self::Stream)
                .map_err(D::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/../../tests/fixtures/lambda/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(path).expect("fixture")
    }

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
