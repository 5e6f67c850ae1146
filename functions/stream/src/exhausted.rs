//! Stream batches whose retries ran out reach the on-failure queue as a shard and a range of
//! sequence numbers, not as events. Only the service's own trouble gets a batch there (a
//! destination's never does: its lane keeps what it owes). Their events are read back from
//! the stream (which keeps them 24 hours, longer than the mapping's 6-hour record age) and
//! handed to their lanes again: delivered, or owed, exactly as a live batch would be. Nothing
//! is recorded as a failure for a destination that took it, or for a project without one.

use crate::Stream;
use crate::records::{Change, Image, StreamRecord};
use audit_log::message::{ExhaustedBatch, StreamBatchInfo};
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use tokio::time::Instant;

fn unreadable<E: std::error::Error + 'static, R: std::fmt::Debug>(
    e: aws_sdk_dynamodbstreams::error::SdkError<E, R>,
) -> String {
    format!(
        "could not read the stream back: {}",
        aws_sdk_dynamodbstreams::error::DisplayErrorContext(e)
    )
}

/// Sequence numbers are decimal strings of varying length.
fn sequence_le(a: &str, b: &str) -> bool {
    (a.len(), a) <= (b.len(), b)
}

impl Stream {
    pub(crate) async fn redeliver_exhausted(
        &self,
        exhausted: &ExhaustedBatch,
        deadline: Instant,
    ) -> Result<(), String> {
        let StreamBatchInfo {
            stream_arn: arn,
            shard_id: shard,
            start_sequence_number: start,
            end_sequence_number: end,
        } = &exhausted.batch;
        let condition = exhausted
            .request_context
            .condition
            .as_deref()
            .unwrap_or("RetryAttemptsExhausted");
        let mut iterator = self
            .streams
            .get_shard_iterator()
            .stream_arn(arn)
            .shard_id(shard)
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .sequence_number(start)
            .send()
            .await
            .map_err(unreadable)?
            .shard_iterator;
        let mut records = Vec::new();
        'shard: while let Some(it) = iterator {
            let page = self
                .streams
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .map_err(unreadable)?;
            let read = page.records.unwrap_or_default();
            if read.is_empty() {
                break;
            }
            for r in read {
                let Some(change) = r.dynamodb else { continue };
                let seq = change.sequence_number.clone().unwrap_or_default();
                if !sequence_le(&seq, end) {
                    break 'shard;
                }
                if r.event_name.as_ref().map(|n| n.as_str()) != Some("INSERT") {
                    continue;
                }
                let record = StreamRecord {
                    event_id: r.event_id.unwrap_or_default(),
                    event_name: "INSERT".into(),
                    change: Change {
                        sequence_number: Some(seq),
                        new_image: Image::from_stream(change.new_image.unwrap_or_default()),
                    },
                };
                records.push(record);
            }
            iterator = page.next_shard_iterator;
        }
        let response = self.deliver(&records, deadline).await;
        if !response.batch_item_failures.is_empty() {
            return Err(format!(
                "the batch's events could not all be handed to their lanes ({condition}); trying again"
            ));
        }
        tracing::warn!(
            records = records.len(),
            %condition,
            "a stream batch whose retries ran out went through the lanes again"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert!(sequence_le("9", "10"));
        assert!(sequence_le("100", "100"));
        assert!(!sequence_le("101", "100"));
        assert!(sequence_le(
            "1100000000017454423009",
            "1100000000017454423010"
        ));
    }
}
