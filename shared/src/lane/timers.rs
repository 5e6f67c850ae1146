//! Lane attempts scheduled as delayed messages on the lanes queue.

use super::{LaneCall, LaneError, Timers};
use std::time::Duration;

/// The key of a lane call in a queue message's body.
pub const MESSAGE_KEY: &str = "lane_call";

#[derive(Debug, Clone)]
pub struct SqsTimers {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsTimers {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

/// The message body of a call.
pub fn body(call: &LaneCall) -> String {
    serde_json::json!({ MESSAGE_KEY: call }).to_string()
}

impl Timers for SqsTimers {
    async fn schedule(&self, call: &LaneCall, delay: Duration) -> Result<(), LaneError> {
        // Whole seconds, rounded up: a call may come a little late, never early.
        let seconds = delay.as_millis().div_ceil(1000).min(900) as i32;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body(call))
            .delay_seconds(seconds)
            .send()
            .await
            .map_err(|e| {
                LaneError::Store(format!(
                    "could not schedule the lane's next attempt: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                ))
            })?;
        Ok(())
    }
}
