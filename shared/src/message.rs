//! The messages on the service's queues, one type per kind, shared by whoever puts
//! them there and the function that takes them. The wire shapes are the ones already in
//! flight (a delayed lane call waits up to 15 minutes), so a deploy reads what the previous
//! version wrote.

use crate::lane::LaneCall;
use serde::{Deserialize, Serialize};

/// A lane's scheduled call, on the lanes queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneCallMessage {
    pub lane_call: LaneCall,
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
    Exhausted(ExhaustedBatch),
    Replay(ReplayPart),
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the message is neither a lane call, a stream batch whose retries ran out, nor a replay part"
)]
pub struct UnknownMessage;

impl QueueMessage {
    pub fn parse(body: &str) -> Result<Self, UnknownMessage> {
        serde_json::from_str(body).map_err(|_| UnknownMessage)
    }
}

/// A message body, as it goes on its queue.
pub fn body(message: &impl Serialize) -> String {
    // These types hold only strings and numbers: serializing them cannot fail.
    serde_json::to_string(message).unwrap_or_default()
}

/// Where messages are put (SQS; in tests, memory).
pub trait Queues: Sync {
    /// Puts a body on the queue, visible after `delay_seconds` (0 to 900). The error says why
    /// the queue refused, in its words.
    fn put(
        &self,
        queue_url: &str,
        body: String,
        delay_seconds: i32,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

impl Queues for aws_sdk_sqs::Client {
    async fn put(&self, queue_url: &str, body: String, delay_seconds: i32) -> Result<(), String> {
        self.send_message()
            .queue_url(queue_url)
            .message_body(body)
            .delay_seconds(delay_seconds)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
    }
}

/// Puts `message` on a queue, visible after `delay_seconds`.
pub async fn send(
    queues: &impl Queues,
    queue_url: &str,
    message: &impl Serialize,
    delay_seconds: i32,
) -> Result<(), String> {
    queues.put(queue_url, body(message), delay_seconds).await
}

/// Queues in memory: what was put where, in order; a queue that refuses when told to.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Default)]
pub struct MemoryQueues {
    pub sent: std::sync::Mutex<Vec<(String, String)>>,
    pub refusing: std::sync::atomic::AtomicBool,
}

#[cfg(any(test, feature = "test-util"))]
impl MemoryQueues {
    /// The bodies put on `queue_url`.
    pub fn bodies(&self, queue_url: &str) -> Vec<String> {
        let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        sent.iter()
            .filter(|(url, _)| url == queue_url)
            .map(|(_, body)| body.clone())
            .collect()
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Queues for MemoryQueues {
    async fn put(&self, queue_url: &str, body: String, delay_seconds: i32) -> Result<(), String> {
        if self.refusing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("the queue refused the message".into());
        }
        // As SQS: a delay beyond 15 minutes is an invalid request.
        if !(0..=900).contains(&delay_seconds) {
            return Err(format!("DelaySeconds {delay_seconds} is outside 0 to 900"));
        }
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        sent.push((queue_url.to_owned(), body));
        Ok(())
    }
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
                !e.contains("secret-looking") && e.contains("neither"),
                "{e}"
            );
        }
    }
}
