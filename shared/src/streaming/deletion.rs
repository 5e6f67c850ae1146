//! A deletion under way. `DELETE /streaming` removes the project's configuration, then its
//! secret: a configuration saved in place of none between the two would name credentials the
//! deletion then removes. So a deletion first marks the project's `removed#` item, and a save in
//! place of none checks that item in its transaction and refuses to land while a mark holds.
//! Each deletion adds its id to the mark and takes it out when it is over (it leaves it to lapse
//! when Secrets Manager never answered its secret delete, which may still land), so deletions
//! that overlap each hold saves back until they end; the mark lapses by itself well after the
//! longest an api call runs, so a deletion cut short never blocks the project's saves for long.

use super::{AttributeValue, ConfigError, ConfigTable, removed_key, store_error};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use std::future::Future;
use time::{Duration, OffsetDateTime};

/// How long a mark holds unless its deletions end first.
pub const DELETION_MARK_LAPSE: Duration = Duration::seconds(60);

/// Longer than any api call runs (the function's timeout is 29 seconds): a mark older than this
/// has no deletion behind it any more, only its lapse to wait for.
pub const DELETION_CALL_LIMIT: Duration = Duration::seconds(30);

const _: () = assert!(DELETION_MARK_LAPSE.whole_seconds() > DELETION_CALL_LIMIT.whole_seconds());

pub(super) mod attr {
    /// Epoch seconds until which saves in place of none are refused.
    pub const DELETING_UNTIL: &str = "deleting_until";
    /// The ids of the deletions under way, a string set (DynamoDB drops it when the last
    /// leaves).
    pub const DELETIONS: &str = "deletions";
}

/// One deletion's mark, to take out when the deletion is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion(pub(crate) String);

impl Deletion {
    pub(crate) fn new() -> Self {
        use rand::Rng;
        Self(format!("{:016x}", rand::rng().random::<u64>()))
    }
}

/// The condition a save in place of none adds to its check of the `removed#` item (names `#ds`
/// and `#d`, value `:now`). It also holds no mark a first deletion may start afresh.
pub(super) const NOT_DELETING: &str = "(attribute_not_exists(#ds) OR #d <= :now)";

/// When to come back, if a mark with deletions `under_way`, until `until` (epoch seconds), holds
/// at `now`.
pub(crate) fn holds(under_way: bool, until: i64, now: OffsetDateTime) -> Option<u64> {
    (under_way && until > now.unix_timestamp()).then(|| retry_after(until, now))
}

/// When to come back to a save a mark until `until` (epoch seconds) refused at `now`: at once
/// while a deletion may still be running (they take well under a second), else at its lapse.
fn retry_after(until: i64, now: OffsetDateTime) -> u64 {
    let left = until - now.unix_timestamp();
    let age = DELETION_MARK_LAPSE.whole_seconds() - left;
    if age <= DELETION_CALL_LIMIT.whole_seconds() {
        1
    } else {
        left.max(1) as u64
    }
}

/// How many tries a write of a `removed#` item gets while saves' transactions hold the item.
const TRANSACTION_TRIES: u32 = 5;

/// Sends a write of a `removed#` item, again while a save's transaction holds the item:
/// DynamoDB refuses other writes to it for the milliseconds that runs, and the SDK does not try
/// those again.
pub(super) async fn past_transactions<T, E, Sent>(
    send: impl Fn() -> Sent,
) -> Result<T, SdkError<E, HttpResponse>>
where
    E: ProvideErrorMetadata,
    Sent: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
{
    let mut wait = std::time::Duration::from_millis(20);
    for _ in 1..TRANSACTION_TRIES {
        match send().await {
            Err(e) if e.code() == Some("TransactionConflictException") => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            done => return done,
        }
    }
    send().await
}

impl ConfigTable {
    pub(super) async fn mark_deletion(
        &self,
        organization_id: &str,
        project_id: &str,
        now: OffsetDateTime,
    ) -> Result<Deletion, ConfigError> {
        let deletion = Deletion::new();
        let until = AttributeValue::N((now + DELETION_MARK_LAPSE).unix_timestamp().to_string());
        let one = AttributeValue::Ss(vec![deletion.0.clone()]);
        let update = || {
            self.client
                .update_item()
                .table_name(&self.name)
                .set_key(Some(removed_key(organization_id, project_id)))
                .expression_attribute_names("#ds", attr::DELETIONS)
                .expression_attribute_names("#d", attr::DELETING_UNTIL)
                .expression_attribute_values(":one", one.clone())
                .expression_attribute_values(":until", until.clone())
        };
        // The first deletion under way starts the mark afresh (ids of deletions cut short go)...
        let first = update()
            .update_expression("SET #ds = :one, #d = :until")
            .condition_expression(NOT_DELETING)
            .expression_attribute_values(
                ":now",
                AttributeValue::N(now.unix_timestamp().to_string()),
            );
        let first = past_transactions(|| first.clone().send()).await;
        match first {
            Ok(_) => return Ok(deletion),
            Err(e) if !super::is_condition_failure(&e) => return Err(store_error(e)),
            Err(_) => {}
        }
        // ...a later one joins it, and moves its lapse on.
        let join = update().update_expression("ADD #ds :one SET #d = :until");
        past_transactions(|| join.clone().send())
            .await
            .map_err(store_error)?;
        Ok(deletion)
    }

    /// Takes `deletion` out of the mark (the others' stay).
    pub(super) async fn clear_deletion(
        &self,
        organization_id: &str,
        project_id: &str,
        deletion: &Deletion,
    ) -> Result<(), ConfigError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(removed_key(organization_id, project_id)))
            .update_expression("DELETE #ds :one")
            .expression_attribute_names("#ds", attr::DELETIONS)
            .expression_attribute_values(":one", AttributeValue::Ss(vec![deletion.0.clone()]));
        past_transactions(|| update.clone().send())
            .await
            .map_err(store_error)?;
        // A project never saved keeps no item for its deletions: the item goes when it holds
        // neither a deleted version nor another deletion (tidying, so a failure is only told).
        let tidy = self
            .client
            .delete_item()
            .table_name(&self.name)
            .set_key(Some(removed_key(organization_id, project_id)))
            .condition_expression("attribute_not_exists(#v) AND attribute_not_exists(#ds)")
            .expression_attribute_names("#v", super::attr::VERSION)
            .expression_attribute_names("#ds", attr::DELETIONS);
        match past_transactions(|| tidy.clone().send()).await {
            Err(e) if !super::is_condition_failure(&e) => {
                tracing::warn!(organization_id, project_id, error = %store_error(e), "a deletion's spent mark left in the configuration table");
            }
            _ => {}
        }
        Ok(())
    }

    /// When to come back, if a mark holds at `now`.
    pub(super) async fn deleting(
        &self,
        organization_id: &str,
        project_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<u64>, ConfigError> {
        let Some(item) = self.item(removed_key(organization_id, project_id)).await? else {
            return Ok(None);
        };
        let under_way = item
            .get(attr::DELETIONS)
            .and_then(|v| v.as_ss().ok())
            .is_some_and(|ids| !ids.is_empty());
        Ok(super::number(&item, attr::DELETING_UNTIL)
            .and_then(|until| holds(under_way, until, now)))
    }
}
