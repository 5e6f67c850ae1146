//! The results of "Test connection", kept 30 days, newest first.

use super::{
    ConfigError, ConfigTable, EXPIRES_AT, from_item, organization_key, store_error, to_item,
};
use crate::store::sort_key_part;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use std::future::Future;
use time::OffsetDateTime;

/// How long a connection test's result is kept.
const TEST_RESULT_DAYS: i64 = 30;

/// One "Test connection" and what it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestRecord {
    pub tested_at: String,
    pub provider: String,
    pub success: bool,
    pub message: String,
}

/// The results of "Test connection" of each project.
pub trait ConnectionTests: Sync {
    /// Keeps a connection test's result (for 30 days from `now`, the time it ran).
    fn record_test(
        &self,
        organization_id: &str,
        project_id: &str,
        record: &TestRecord,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<(), ConfigError>> + Send;

    /// The project's last `n` connection tests, newest first.
    fn recent_tests(
        &self,
        organization_id: &str,
        project_id: &str,
        n: usize,
    ) -> impl Future<Output = Result<Vec<TestRecord>, ConfigError>> + Send;
}

impl ConnectionTests for ConfigTable {
    /// Keeps a connection test's result (for 30 days from `now`, the time it ran).
    async fn record_test(
        &self,
        organization_id: &str,
        project_id: &str,
        record: &TestRecord,
        now: OffsetDateTime,
    ) -> Result<(), ConfigError> {
        let sort_key = format!(
            "test#{}#{}#{:08x}",
            sort_key_part(project_id),
            crate::store::sort_key_time(now),
            rand::random::<u32>()
        );
        let mut item = to_item(record, "connection test")?;
        item.extend(organization_key(organization_id, sort_key));
        item.insert(
            EXPIRES_AT.into(),
            AttributeValue::N((now.unix_timestamp() + TEST_RESULT_DAYS * 86_400).to_string()),
        );
        self.client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// The project's last `n` connection tests, newest first.
    async fn recent_tests(
        &self,
        organization_id: &str,
        project_id: &str,
        n: usize,
    ) -> Result<Vec<TestRecord>, ConfigError> {
        let items = self
            .query_prefix(
                organization_id,
                &format!("test#{}#", sort_key_part(project_id)),
                n,
                None,
            )
            .await?
            .0;
        items
            .into_iter()
            .map(|item| from_item(item, "connection test"))
            .collect()
    }
}
