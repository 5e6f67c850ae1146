//! Stream batches whose retries ran out reach the on-failure queue as a shard and a range of
//! sequence numbers, not as events. Their events are read back from the stream (which keeps
//! them 24 hours, longer than the mapping's 6-hour record age) and recorded as failures of
//! their projects, with the destination's last error as the reason.

use crate::{Stream, event_of};
use audit_log::store::StoredKey;
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use serde_json::Value;
use std::collections::HashMap;

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
    pub(crate) async fn record_exhausted(&self, message: &Value) -> Result<(), String> {
        let info = &message["DDBStreamBatchInfo"];
        let field = |name: &str| {
            info[name]
                .as_str()
                .map(str::to_owned)
                .ok_or(format!("DDBStreamBatchInfo.{name} is missing"))
        };
        let (arn, shard, start, end) = (
            field("streamArn")?,
            field("shardId")?,
            field("startSequenceNumber")?,
            field("endSequenceNumber")?,
        );
        let condition = message["requestContext"]["condition"]
            .as_str()
            .unwrap_or("RetryAttemptsExhausted");
        let mut iterator = self
            .streams
            .get_shard_iterator()
            .stream_arn(&arn)
            .shard_id(&shard)
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .sequence_number(&start)
            .send()
            .await
            .map_err(unreadable)?
            .shard_iterator;
        let mut failed: HashMap<(String, String), Vec<StoredKey>> = HashMap::new();
        'shard: while let Some(it) = iterator {
            let page = self
                .streams
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .map_err(unreadable)?;
            let records = page.records.unwrap_or_default();
            if records.is_empty() {
                break;
            }
            for r in records {
                let Some(change) = r.dynamodb else { continue };
                let seq = change.sequence_number.clone().unwrap_or_default();
                if !sequence_le(&seq, &end) {
                    break 'shard;
                }
                if r.event_name.as_ref().map(|n| n.as_str()) != Some("INSERT") {
                    continue;
                }
                let mut record = aws_lambda_events::event::dynamodb::EventRecord::default();
                record.change.new_image = change.new_image.unwrap_or_default().into();
                if let Ok((event, key)) = event_of(&record) {
                    failed
                        .entry((
                            event.organization_id().to_owned(),
                            event.project_id().to_owned(),
                        ))
                        .or_default()
                        .push(key);
                }
            }
            iterator = page.next_shard_iterator;
        }
        for ((org, project), keys) in failed {
            let last_error = self
                .configs
                .get(&org, &project)
                .await
                .ok()
                .flatten()
                .and_then(|c| c.health.last_error);
            let reason = match last_error {
                Some(e) => format!("delivery retries ran out ({condition}): {e}"),
                None => format!("delivery retries ran out ({condition})"),
            };
            self.configs
                .record_failures(&org, &project, &keys, &reason)
                .await
                .map_err(|e| e.to_string())?;
            tracing::warn!(organization_id = org, project_id = project, events = keys.len(), %reason, "undelivered events recorded");
        }
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
