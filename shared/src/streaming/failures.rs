//! Events that could not be delivered, kept per project until the event itself expires, so a
//! person can see them (`GET /streaming/failures`) and have them delivered again (a replay).
//! Sort key: `failure#<project>#<event's sort key>`, so they list newest event first.

use super::{ConfigError, ConfigTable, from_item, organization_key, store_error, to_item};
use crate::retry::{Attempt, Backoff, retry};
use crate::store::{StoredKey, attr, key_part, sort_key_part};
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use time::OffsetDateTime;

/// How long unprocessed writes are tried again, for all of one call's batches together,
/// before the write is reported failed: an organization's throttled partition fails its own
/// lane's write in seconds, well inside the stream invocation the other lanes share.
pub(super) const UNPROCESSED_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);
/// `BatchWriteItem` calls of one write in flight at once: 200 items, well under what one
/// partition takes in a second.
const BATCHES_AT_ONCE: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// Where the event is stored (its sort key in the events table).
    pub event_sort_key: String,
    /// The stable id of the event (its SQS message id).
    pub event_id: String,
    pub failed_at: String,
    pub reason: String,
}

/// A batch write's put of `item`.
pub(super) fn put(item: HashMap<String, AttributeValue>) -> WriteRequest {
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
pub(super) fn delete(key: HashMap<String, AttributeValue>) -> WriteRequest {
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
    format!("failure#{}#", sort_key_part(project_id))
}

/// Events that could not be delivered, per project.
pub trait FailureLog: Sync {
    /// Records events that failed, with why. Recording one again replaces it.
    fn record_failures(
        &self,
        organization_id: &str,
        project_id: &str,
        events: &[StoredKey],
        reason: &str,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), ConfigError>> + Send;

    /// Forgets failures of events that have now been delivered.
    fn forget_failures(
        &self,
        organization_id: &str,
        project_id: &str,
        event_sort_keys: &[String],
    ) -> impl Future<Output = Result<(), ConfigError>> + Send;

    /// A page of the project's failures, newest event first, and where the next one starts.
    fn failures(
        &self,
        organization_id: &str,
        project_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<FailureRecord>, Option<String>), ConfigError>> + Send;

    /// As [`Self::failures`], only those of the events stored from `low` to `high` (both
    /// included): a replay of a time range's failures reads no others.
    fn failures_within(
        &self,
        organization_id: &str,
        project_id: &str,
        between: (&str, &str),
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<FailureRecord>, Option<String>), ConfigError>> + Send;

    /// The sort keys of the events stored from `low` to `high` (both included) that have a
    /// failure recorded: what a replay's page of those events settles.
    fn failures_between(
        &self,
        organization_id: &str,
        project_id: &str,
        low: &str,
        high: &str,
    ) -> impl Future<Output = Result<Vec<String>, ConfigError>> + Send;
}

impl FailureLog for ConfigTable {
    /// Records events that failed, with why. Recording one again replaces it.
    async fn record_failures(
        &self,
        organization_id: &str,
        project_id: &str,
        events: &[StoredKey],
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(), ConfigError> {
        let failed_at = crate::clock::seconds_text(now);
        let requests = events
            .iter()
            .map(|event| {
                let record = FailureRecord {
                    event_sort_key: event.sort_key.clone(),
                    event_id: event.message_id.clone(),
                    failed_at: failed_at.clone(),
                    reason: reason.to_owned(),
                };
                let mut item = to_item(&record, "failure")?;
                item.extend(organization_key(
                    organization_id,
                    format!("{}{}", prefix(project_id), event.sort_key),
                ));
                // Kept as long as the event itself.
                item.insert(
                    super::EXPIRES_AT.into(),
                    AttributeValue::N(event.expires_at.to_string()),
                );
                Ok(put(item))
            })
            .collect::<Result<Vec<WriteRequest>, ConfigError>>()?;
        self.write_all(requests).await
    }

    /// Forgets failures of events that have now been delivered.
    async fn forget_failures(
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

    /// A page of the project's failures, newest event first, and where the next one starts.
    async fn failures(
        &self,
        organization_id: &str,
        project_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<FailureRecord>, Option<String>), ConfigError> {
        let prefix = prefix(project_id);
        let after = after.map(|event_sk| format!("{prefix}{event_sk}"));
        let page = self
            .query_prefix(organization_id, &prefix, limit, after.as_deref())
            .await?;
        failure_page(page, &prefix)
    }

    async fn failures_within(
        &self,
        organization_id: &str,
        project_id: &str,
        (low, high): (&str, &str),
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<FailureRecord>, Option<String>), ConfigError> {
        let Some(after) = within(after, (low, high)) else {
            return Ok((Vec::new(), None));
        };
        let prefix = prefix(project_id);
        let after = after.map(|event_sk| format!("{prefix}{event_sk}"));
        let (low, high) = (format!("{prefix}{low}"), format!("{prefix}{high}"));
        let page = self
            .query_between(organization_id, (&low, &high), limit, after.as_deref())
            .await?;
        failure_page(page, &prefix)
    }

    async fn failures_between(
        &self,
        organization_id: &str,
        project_id: &str,
        low: &str,
        high: &str,
    ) -> Result<Vec<String>, ConfigError> {
        let prefix = prefix(project_id);
        // Keys only: usually nothing matches, and the query costs one read unit.
        let mut items = self
            .client
            .query()
            .table_name(&self.name)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :low AND :high")
            .expression_attribute_names("#pk", attr::PARTITION_KEY)
            .expression_attribute_names("#sk", attr::SORT_KEY)
            .expression_attribute_values(":pk", AttributeValue::S(key_part(organization_id)))
            .expression_attribute_values(":low", AttributeValue::S(format!("{prefix}{low}")))
            .expression_attribute_values(":high", AttributeValue::S(format!("{prefix}{high}")))
            .projection_expression("#sk")
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        let mut found = Vec::new();
        while let Some(item) = items.next().await {
            let item = item.map_err(store_error)?;
            if let Some(sk) = item.get(attr::SORT_KEY).and_then(|v| v.as_s().ok()) {
                found.extend(sk.strip_prefix(&prefix).map(str::to_owned));
            }
        }
        Ok(found)
    }
}

/// A query's page of failure items as records, with the event's sort key to go on after.
fn failure_page(
    (items, next): (Vec<HashMap<String, AttributeValue>>, Option<String>),
    prefix: &str,
) -> Result<(Vec<FailureRecord>, Option<String>), ConfigError> {
    let records = items
        .into_iter()
        .map(|item| from_item(item, "failure"))
        .collect::<Result<Vec<FailureRecord>, ConfigError>>()?;
    let next = next.map(|sk| sk.trim_start_matches(prefix).to_owned());
    Ok((records, next))
}

/// Where a listing of the failures from `low` to `high`, newest first, goes on after `after`:
/// `Some(None)` from the newest (a cursor above the range, kept by a replay that listed every
/// failure, which a query of the range refuses as its start), `None` when nothing is left.
pub(super) fn within<'a>(
    after: Option<&'a str>,
    (low, high): (&str, &str),
) -> Option<Option<&'a str>> {
    match after {
        Some(after) if after < low => None,
        Some(after) if after > high => Some(None),
        after => Some(after),
    }
}

impl ConfigTable {
    /// Writes everything in batches, [`BATCHES_AT_ONCE`] at a time, retrying what DynamoDB
    /// leaves unprocessed (few and rare here: a few quick rounds, [`UNPROCESSED_PATIENCE`] for
    /// all of them). The SDK's own retries handle errors. A lane that owes a stream batch's
    /// 1,000 events writes 40 batches: one after another they would hold the batch's other
    /// projects for most of a second.
    pub(super) async fn write_all(&self, requests: Vec<WriteRequest>) -> Result<(), ConfigError> {
        let until = tokio::time::Instant::now() + UNPROCESSED_PATIENCE;
        self.write_all_until(requests, until).await
    }

    /// [`Self::write_all`], with unprocessed writes tried again until `deadline`.
    pub(super) async fn write_all_until(
        &self,
        requests: Vec<WriteRequest>,
        deadline: tokio::time::Instant,
    ) -> Result<(), ConfigError> {
        use futures::{StreamExt, TryStreamExt};
        let requests = last_per_item(requests);
        let batches: Vec<Vec<WriteRequest>> = requests.chunks(25).map(<[_]>::to_vec).collect();
        futures::stream::iter(batches)
            .map(|batch| self.write_batch(batch, deadline))
            .buffer_unordered(BATCHES_AT_ONCE)
            .try_collect()
            .await
    }

    /// One `BatchWriteItem` of at most 25 requests, and its unprocessed items until `deadline`.
    async fn write_batch(
        &self,
        batch: Vec<WriteRequest>,
        deadline: tokio::time::Instant,
    ) -> Result<(), ConfigError> {
        let backoff = Backoff {
            base: std::time::Duration::from_millis(25),
            max: std::time::Duration::from_millis(800),
        };
        let left_to_write = std::sync::Mutex::new(batch);
        let unwritten = &left_to_write;
        let written = retry(&backoff, deadline, move || async move {
            let pending = unwritten.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let out = match self
                .client
                .batch_write_item()
                .request_items(&self.name, pending)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) => return Attempt::Done(Err(store_error(e))),
            };
            let left = out
                .unprocessed_items
                .and_then(|mut u| u.remove(&self.name))
                .unwrap_or_default();
            if left.is_empty() {
                return Attempt::Done(Ok(()));
            }
            *unwritten.lock().unwrap_or_else(|e| e.into_inner()) = left;
            Attempt::Again("DynamoDB left writes unprocessed")
        })
        .await;
        match written {
            Ok(done) => done,
            Err(gave_up) => Err(ConfigError::Store(gave_up.describe("DynamoDB"))),
        }
    }
}

/// The requests with only the last one for each item: DynamoDB refuses a whole batch that
/// names an item twice (an event owed twice becomes one failure, recorded once).
fn last_per_item(requests: Vec<WriteRequest>) -> Vec<WriteRequest> {
    let item_key = |r: &WriteRequest| {
        let fields = match (&r.put_request, &r.delete_request) {
            (Some(put), _) => &put.item,
            (None, Some(delete)) => &delete.key,
            (None, None) => return None,
        };
        let text = |name: &str| fields.get(name).and_then(|v| v.as_s().ok()).cloned();
        Some((text(attr::PARTITION_KEY)?, text(attr::SORT_KEY)?))
    };
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<WriteRequest> = requests
        .into_iter()
        .rev()
        .filter(|r| item_key(r).is_none_or(|key| seen.insert(key)))
        .collect();
    kept.reverse();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::Client;
    use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    fn put_of(sort_key: &str, reason: &str) -> WriteRequest {
        let mut item = organization_key("o", sort_key.into());
        item.insert("reason".into(), AttributeValue::S(reason.into()));
        put(item)
    }

    #[tokio::test(start_paused = true)]
    async fn batches_are_written_several_at_once_under_one_patience_for_the_whole_call() {
        use std::collections::HashMap;
        use std::sync::{Arc, Mutex};
        use tokio::time::{Duration, Instant};
        // A throttled partition: each batch is handed back for four seconds after it is first
        // sent, then written.
        let first_sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let throttled = mock!(Client::batch_write_item).then_compute_output(move |r| {
            let batch = &r.request_items().unwrap()["config"];
            let first = batch[0].put_request().unwrap().item()[attr::SORT_KEY]
                .as_s()
                .unwrap()
                .clone();
            let since = *first_sent
                .lock()
                .unwrap()
                .entry(first)
                .or_insert_with(Instant::now);
            let out = BatchWriteItemOutput::builder();
            if since.elapsed() < Duration::from_secs(4) {
                out.unprocessed_items("config", batch.clone()).build()
            } else {
                out.build()
            }
        });
        let table = ConfigTable::new(
            mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&throttled]),
            "config",
        );
        let write = |owed: usize| {
            let requests = (0..owed)
                .map(|i| put_of(&format!("owed#p#{owed}#{i:04}"), "r"))
                .collect();
            let table = &table;
            async move {
                let start = Instant::now();
                let written = table.write_all(requests).await;
                (written, start.elapsed())
            }
        };
        // Four batches, all at once: written in the four seconds each takes (one after another
        // they would have spent the patience on the second).
        let (written, took) = write(100).await;
        assert!(written.is_ok(), "{written:?}");
        assert!(
            took >= Duration::from_secs(4) && took < UNPROCESSED_PATIENCE,
            "{took:?}"
        );
        // Twelve batches: the last four start after the first eight, and the call fails once
        // its one patience is spent (a patience per batch would hold the stream invocation for
        // longer).
        let (written, took) = write(300).await;
        assert!(matches!(written, Err(ConfigError::Store(_))), "{written:?}");
        assert!(took <= UNPROCESSED_PATIENCE, "{took:?}");
        assert!(took >= Duration::from_secs(4), "{took:?}");
    }

    #[test]
    fn an_item_written_twice_in_one_call_is_written_once_as_last_given() {
        let requests = vec![
            put_of("failure#p#a", "first"),
            put_of("failure#p#b", "only"),
            delete(organization_key("o", "owed#p#c".into())),
            put_of("failure#p#a", "second"),
            delete(organization_key("o", "owed#p#c".into())),
        ];
        let kept = last_per_item(requests);
        let described: Vec<(String, Option<String>)> = kept
            .iter()
            .map(|r| match (&r.put_request, &r.delete_request) {
                (Some(p), _) => (
                    p.item[attr::SORT_KEY].as_s().unwrap().clone(),
                    p.item["reason"].as_s().ok().cloned(),
                ),
                (_, Some(d)) => (d.key[attr::SORT_KEY].as_s().unwrap().clone(), None),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            described,
            [
                ("failure#p#b".into(), Some("only".into())),
                ("failure#p#a".into(), Some("second".into())),
                ("owed#p#c".into(), None),
            ]
        );
    }

    #[test]
    fn a_listing_of_a_range_goes_on_within_it() {
        let range = ("2026-01-02", "2026-01-04$");
        assert_eq!(within(None, range), Some(None));
        let inside = "2026-01-03T00:00:00Z#m";
        assert_eq!(within(Some(inside), range), Some(Some(inside)));
        // A cursor above the range starts at its top; one below it has nothing left.
        assert_eq!(within(Some("2026-01-05T00:00:00Z#m"), range), Some(None));
        assert_eq!(within(Some("2026-01-01T00:00:00Z#m"), range), None);
    }
}
