//! Events that could not be delivered, kept per project until the event itself expires, so a
//! person can see them (`GET /streaming/failures`) and have them delivered again (a replay).
//! Sort key: `failure#<project>#<event's sort key>`, so they list newest event first.

use super::{ConfigError, ConfigTable, organization_key, s, store_error, text};
use crate::store::{StoredKey, key_part};
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureRecord {
    /// Where the event is stored (its sort key in the events table).
    pub event_sort_key: String,
    /// The stable id of the event (its SQS message id).
    pub event_id: String,
    pub failed_at: String,
    pub reason: String,
}

/// A batch write's put of `item`.
pub(super) fn put(item: std::collections::HashMap<String, AttributeValue>) -> WriteRequest {
    WriteRequest::builder()
        .put_request(
            PutRequest::builder()
                .set_item(Some(item))
                .build()
                .expect("item is set"),
        )
        .build()
}

/// A batch write's delete of the item at `key`.
pub(super) fn delete(key: std::collections::HashMap<String, AttributeValue>) -> WriteRequest {
    WriteRequest::builder()
        .delete_request(
            DeleteRequest::builder()
                .set_key(Some(key))
                .build()
                .expect("key is set"),
        )
        .build()
}

fn prefix(project_id: &str) -> String {
    format!("failure#{}#", key_part(project_id))
}

impl ConfigTable {
    /// Records events that failed, with why. Recording one again replaces it.
    pub async fn record_failures(
        &self,
        organization_id: &str,
        project_id: &str,
        events: &[StoredKey],
        reason: &str,
    ) -> Result<(), ConfigError> {
        let now = super::now_rfc3339();
        let requests: Vec<WriteRequest> = events
            .iter()
            .map(|event| {
                let mut item = organization_key(
                    organization_id,
                    format!("{}{}", prefix(project_id), event.sort_key),
                );
                item.insert("event_sort_key".into(), s(&event.sort_key));
                item.insert("event_id".into(), s(&event.message_id));
                item.insert("failed_at".into(), s(&now));
                item.insert("reason".into(), s(reason));
                // Kept as long as the event itself.
                item.insert(
                    super::EXPIRES_AT.into(),
                    AttributeValue::N(event.expires_at.to_string()),
                );
                put(item)
            })
            .collect();
        self.write_all(requests).await
    }

    /// Forgets failures of events that have now been delivered.
    pub async fn forget_failures(
        &self,
        organization_id: &str,
        project_id: &str,
        event_sort_keys: &[String],
    ) -> Result<(), ConfigError> {
        let requests: Vec<WriteRequest> = event_sort_keys
            .iter()
            .map(|sk| {
                delete(organization_key(
                    organization_id,
                    format!("{}{sk}", prefix(project_id)),
                ))
            })
            .collect();
        self.write_all(requests).await
    }

    pub(super) async fn write_all(&self, requests: Vec<WriteRequest>) -> Result<(), ConfigError> {
        for chunk in requests.chunks(25) {
            let mut pending = chunk.to_vec();
            // Unprocessed writes are few and rare here: a few quick rounds.
            for round in 0..8u64 {
                if pending.is_empty() {
                    break;
                }
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.name, pending)
                    .send()
                    .await
                    .map_err(store_error)?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.name))
                    .unwrap_or_default();
                if !pending.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(25 << round.min(5))).await;
                }
            }
            if !pending.is_empty() {
                return Err(ConfigError::Store(
                    "DynamoDB left writes unprocessed after 8 rounds".into(),
                ));
            }
        }
        Ok(())
    }

    /// A page of the project's failures, newest event first, and where the next one starts.
    pub async fn failures(
        &self,
        organization_id: &str,
        project_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<FailureRecord>, Option<String>), ConfigError> {
        let prefix = prefix(project_id);
        let after = after.map(|event_sk| format!("{prefix}{event_sk}"));
        let (items, next) = self
            .query_prefix(organization_id, &prefix, limit, after.as_deref())
            .await?;
        let records = items
            .iter()
            .map(|item| {
                Ok(FailureRecord {
                    event_sort_key: text(item, "event_sort_key")?.to_owned(),
                    event_id: text(item, "event_id")?.to_owned(),
                    failed_at: text(item, "failed_at")?.to_owned(),
                    reason: text(item, "reason")?.to_owned(),
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let next = next.map(|sk| sk.trim_start_matches(&prefix).to_owned());
        Ok((records, next))
    }
}
