//! Lane attempts and deferred events, as delayed messages on the lanes queue.

use super::{Deferred, LaneCall, LaneError, Timers};
use crate::message::{DeferredMessage, LaneCallMessage};
use std::time::Duration;

/// Whole seconds, rounded up (a message may come a little late, never early), at most SQS's
/// 900.
fn delay_seconds(delay: Duration) -> i32 {
    delay.as_millis().div_ceil(1000).min(900) as i32
}

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

impl SqsTimers {
    async fn put(
        &self,
        message: &impl serde::Serialize,
        delay: Duration,
        what: &str,
    ) -> Result<(), LaneError> {
        crate::message::send(&self.client, &self.queue_url, message, delay_seconds(delay))
            .await
            .map_err(|e| LaneError::Store(format!("could not {what}: {e}")))
    }
}

impl Timers for SqsTimers {
    async fn schedule(&self, call: &LaneCall, delay: Duration) -> Result<(), LaneError> {
        let message = LaneCallMessage {
            lane_call: call.clone(),
        };
        self.put(&message, delay, "schedule the lane's next attempt")
            .await
    }

    async fn defer(&self, deferred: &Deferred, delay: Duration) -> Result<(), LaneError> {
        let message = DeferredMessage {
            deferred: deferred.clone(),
        };
        self.put(&message, delay, "defer the lane's events").await
    }
}
