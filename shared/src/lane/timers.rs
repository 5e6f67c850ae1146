//! Lane attempts scheduled as delayed messages on the lanes queue.

use super::{LaneCall, LaneError, Timers};
use crate::message::LaneCallMessage;
use std::time::Duration;

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

impl Timers for SqsTimers {
    async fn schedule(&self, call: &LaneCall, delay: Duration) -> Result<(), LaneError> {
        // Whole seconds, rounded up: a call may come a little late, never early.
        let seconds = delay.as_millis().div_ceil(1000).min(900) as i32;
        let message = LaneCallMessage {
            lane_call: call.clone(),
        };
        crate::message::send(&self.client, &self.queue_url, &message, seconds)
            .await
            .map_err(|e| {
                LaneError::Store(format!("could not schedule the lane's next attempt: {e}"))
            })
    }
}
