//! Lane attempts on the lanes queue and deferred events on their own queue, as delayed
//! messages.

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
    deferred_queue_url: String,
}

impl SqsTimers {
    /// Lane calls and deferred events on one queue (see [`SqsTimers::deferring_to`]).
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        let queue_url = queue_url.into();
        Self {
            client,
            deferred_queue_url: queue_url.clone(),
            queue_url,
        }
    }

    /// Deferred events go to this queue.
    pub fn deferring_to(mut self, queue_url: impl Into<String>) -> Self {
        self.deferred_queue_url = queue_url.into();
        self
    }

    async fn put(
        &self,
        queue_url: &str,
        message: &impl crate::message::Queued,
        delay: Duration,
        what: &str,
    ) -> Result<(), LaneError> {
        crate::message::send(&self.client, queue_url, message, delay_seconds(delay))
            .await
            .map_err(|e| LaneError::Store(format!("could not {what}: {e}")))
    }
}

impl Timers for SqsTimers {
    async fn schedule(&self, call: &LaneCall, delay: Duration) -> Result<(), LaneError> {
        let message = LaneCallMessage {
            lane_call: call.clone(),
        };
        let what = "schedule the lane's next attempt";
        self.put(&self.queue_url, &message, delay, what).await
    }

    async fn defer(&self, deferred: &Deferred, delay: Duration) -> Result<(), LaneError> {
        let message = DeferredMessage {
            deferred: deferred.clone(),
        };
        let what = "defer the lane's events";
        self.put(&self.deferred_queue_url, &message, delay, what)
            .await
    }
}
