//! An organization's own item: its External ID, and the counters that limit how often it may
//! do something costly.

use super::{
    ConfigError, ConfigTable, attr, is_condition_failure, optional, organization_key, s,
    store_error,
};
use aws_sdk_dynamodb::types::AttributeValue;
use std::future::Future;
use time::OffsetDateTime;

/// Sort key of an organization's own item (its External ID).
const ORGANIZATION_ITEM: &str = "organization";
const EXTERNAL_ID: &str = "external_id";
const TESTS_IN_MINUTE: &str = "tests";
/// TTL of short-lived items (test counters), as in the template's `TimeToLiveSpecification`.
pub const EXPIRES_AT: &str = "expires_at";

/// A new External ID: 128 bits from the operating system's CSPRNG, as 32 hex digits.
pub fn new_external_id() -> String {
    use rand::Rng;
    format!("{:032x}", rand::rng().random::<u128>())
}

/// An organization's own items: its External ID and the counters of its rate limits.
pub trait Organizations: Sync {
    /// The organization's External ID, created (at `now`) the first time it is needed.
    fn external_id(
        &self,
        organization_id: &str,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<String, ConfigError>> + Send;

    /// Counts one use of `limit.what` by the organization in the window of `now`; `Ok(Err)`
    /// holds the seconds until the next window when the window's uses are spent.
    fn take_slot(
        &self,
        organization_id: &str,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Result<(), u64>, ConfigError>> + Send;
}

impl Organizations for ConfigTable {
    /// The organization's External ID, created the first time it is needed. It never changes
    /// on its own; two first requests at once agree on one.
    async fn external_id(
        &self,
        organization_id: &str,
        now: OffsetDateTime,
    ) -> Result<String, ConfigError> {
        if let Some(id) = self.stored_external_id(organization_id).await? {
            return Ok(id);
        }
        let candidate = new_external_id();
        let mut item = organization_key(organization_id, ORGANIZATION_ITEM.to_owned());
        item.insert(EXTERNAL_ID.to_owned(), s(&candidate));
        item.insert(attr::ORGANIZATION_ID.to_owned(), s(organization_id));
        item.insert(
            attr::UPDATED_AT.to_owned(),
            s(&crate::clock::seconds_text(now)),
        );
        let put = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(candidate),
            Err(e) if is_condition_failure(&e) => self
                .stored_external_id(organization_id)
                .await?
                .ok_or(ConfigError::Corrupt(EXTERNAL_ID)),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Counts one use of `limit.what` by the organization in the current window. `Err` holds
    /// the seconds until the next window when `limit.per_window` uses already happened in this
    /// one.
    async fn take_slot(
        &self,
        organization_id: &str,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> Result<Result<(), u64>, ConfigError> {
        let window = limit.window_seconds.max(1);
        let current = now.unix_timestamp().div_euclid(window);
        let next_window = (current + 1) * window;
        let result = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(organization_key(
                organization_id,
                format!("{}#{current}", limit.what),
            )))
            .update_expression("SET #exp = :exp ADD #n :one")
            .condition_expression("attribute_not_exists(#n) OR #n < :limit")
            .expression_attribute_names("#n", "count")
            .expression_attribute_names("#exp", EXPIRES_AT)
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":limit", AttributeValue::N(limit.per_window.to_string()))
            .expression_attribute_values(":exp", AttributeValue::N((next_window + 300).to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Ok(())),
            Err(e) if is_condition_failure(&e) => {
                Ok(Err((next_window - now.unix_timestamp()).max(1) as u64))
            }
            Err(e) => Err(store_error(e)),
        }
    }
}

impl ConfigTable {
    async fn stored_external_id(
        &self,
        organization_id: &str,
    ) -> Result<Option<String>, ConfigError> {
        let key = organization_key(organization_id, ORGANIZATION_ITEM.to_owned());
        Ok(self
            .item(key)
            .await?
            .as_ref()
            .and_then(|item| optional(item, EXTERNAL_ID)))
    }
}

/// How often an organization may do something costly: `per_window` times per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Names the counter (and prefixes its sort key).
    pub what: &'static str,
    /// What is counted, in the 429's words.
    pub noun: &'static str,
    pub per_window: u32,
    pub window_seconds: i64,
}

/// "Test connection": 10 per organization per minute.
pub const CONNECTION_TESTS: RateLimit = RateLimit {
    what: TESTS_IN_MINUTE,
    noun: "connection tests",
    per_window: 10,
    window_seconds: 60,
};

/// Replays started: 10 per organization per hour, whatever the number of its projects.
pub const REPLAYS_STARTED: RateLimit = RateLimit {
    what: "replays",
    noun: "replays started",
    per_window: 10,
    window_seconds: 3600,
};

/// Saves of new credentials and deletes of a destination: 60 per organization per minute. Each
/// one writes to Secrets Manager, whose request rates and number of secrets are the account's,
/// shared by every organization.
pub const CONFIGURATION_CHANGES: RateLimit = RateLimit {
    what: "changes",
    noun: "saves or deletes of a streaming configuration",
    per_window: 60,
    window_seconds: 60,
};

/// Searches and the organization's listings, the listings that read up to 5,000 stored events
/// a page: 600 per organization per minute, a fifth of the API stage's rate, so no
/// organization's scripts take the API from the others.
pub const SEARCHES: RateLimit = RateLimit {
    what: "searches",
    noun: "searches or organization-wide listings",
    per_window: 600,
    window_seconds: 60,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids_carry_128_random_bits() {
        let ids: std::collections::HashSet<String> =
            (0..1_000).map(|_| new_external_id()).collect();
        assert_eq!(ids.len(), 1_000);
        assert!(
            ids.iter()
                .all(|id| id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()))
        );
    }
}
