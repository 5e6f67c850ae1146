//! The streaming configuration table: per organization, its External ID; per project, the one
//! destination's non-secret settings, a version for `If-Match`, and the delivery health the
//! stream function records. Keys: `pk` = organization, `sk` = `organization` or
//! `project#<project>`, so an organization's items share a partition.

use crate::destination::{CloudWatchSettings, DatadogSettings, DatadogSite, Destination, Provider};
use crate::store::key_part;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use std::collections::HashMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub mod attr {
    pub const PARTITION_KEY: &str = "pk";
    pub const SORT_KEY: &str = "sk";
    pub const ORGANIZATION_ID: &str = "organization_id";
    pub const PROJECT_ID: &str = "project_id";
    pub const NAME: &str = "name";
    pub const PROVIDER: &str = "provider";
    pub const ROLE_ARN: &str = "role_arn";
    pub const REGION: &str = "region";
    pub const SITE: &str = "site";
    pub const API_KEY_LAST4: &str = "api_key_last4";
    pub const VERSION: &str = "version";
    pub const UPDATED_AT: &str = "updated_at";
    pub const LAST_SUCCESS_AT: &str = "last_success_at";
    pub const LAST_FAILURE_AT: &str = "last_failure_at";
    pub const LAST_ERROR: &str = "last_error";
}

/// A project's saved streaming configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamingConfig {
    pub organization_id: String,
    pub project_id: String,
    pub name: String,
    pub destination: Destination,
    /// The last four characters of the Datadog API key, to tell keys apart without showing one.
    pub api_key_last4: Option<String>,
    pub version: u64,
    pub updated_at: String,
    pub health: Health,
}

/// What the last deliveries to the destination did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Health {
    pub last_success_at: Option<String>,
    pub last_failure_at: Option<String>,
    pub last_error: Option<String>,
}

impl Health {
    /// `unknown` before any delivery, then whichever of success and failure came last.
    pub fn status(&self) -> &'static str {
        match (&self.last_success_at, &self.last_failure_at) {
            (None, None) => "unknown",
            (Some(_), None) => "healthy",
            (None, Some(_)) => "failing",
            // RFC 3339 in UTC with a fixed format orders as text.
            (Some(ok), Some(failed)) if ok >= failed => "healthy",
            _ => "failing",
        }
    }
}

/// The outcome of one batch's delivery to one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub delivered: usize,
    pub failed: usize,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the configuration changed since version {expected}; read it again")]
    VersionMismatch { expected: u64 },
    #[error("the stored configuration is damaged: {0}")]
    Corrupt(&'static str),
    #[error("DynamoDB failed: {0}")]
    Store(String),
}

pub fn now_rfc3339() -> String {
    // Second precision, UTC, fixed width: orders as text.
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    now.format(&Rfc3339).unwrap_or_default()
}

fn key(organization_id: &str, project_id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            attr::PARTITION_KEY.to_owned(),
            AttributeValue::S(key_part(organization_id)),
        ),
        (
            attr::SORT_KEY.to_owned(),
            AttributeValue::S(format!("project#{}", key_part(project_id))),
        ),
    ])
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn text<'a>(
    item: &'a HashMap<String, AttributeValue>,
    name: &'static str,
) -> Result<&'a str, ConfigError> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or(ConfigError::Corrupt(name))
}

fn optional(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

fn store_error<E, R>(err: SdkError<E, R>) -> ConfigError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    ConfigError::Store(DisplayErrorContext(err).to_string())
}

impl StreamingConfig {
    fn to_item(&self) -> HashMap<String, AttributeValue> {
        let mut item = key(&self.organization_id, &self.project_id);
        item.insert(attr::ORGANIZATION_ID.into(), s(&self.organization_id));
        item.insert(attr::PROJECT_ID.into(), s(&self.project_id));
        item.insert(attr::NAME.into(), s(&self.name));
        item.insert(
            attr::PROVIDER.into(),
            s(self.destination.provider().as_str()),
        );
        match &self.destination {
            Destination::Cloudwatch(c) => {
                item.insert(attr::ROLE_ARN.into(), s(&c.role_arn));
                item.insert(attr::REGION.into(), s(&c.region));
            }
            Destination::Datadog(d) => {
                item.insert(attr::SITE.into(), s(d.site.as_str()));
            }
        }
        if let Some(last4) = &self.api_key_last4 {
            item.insert(attr::API_KEY_LAST4.into(), s(last4));
        }
        item.insert(
            attr::VERSION.into(),
            AttributeValue::N(self.version.to_string()),
        );
        item.insert(attr::UPDATED_AT.into(), s(&self.updated_at));
        for (name, value) in [
            (attr::LAST_SUCCESS_AT, &self.health.last_success_at),
            (attr::LAST_FAILURE_AT, &self.health.last_failure_at),
            (attr::LAST_ERROR, &self.health.last_error),
        ] {
            if let Some(v) = value {
                item.insert(name.into(), s(v));
            }
        }
        item
    }

    fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Self, ConfigError> {
        let provider = Provider::parse(text(item, attr::PROVIDER)?)
            .ok_or(ConfigError::Corrupt(attr::PROVIDER))?;
        let destination = match provider {
            Provider::Cloudwatch => Destination::Cloudwatch(CloudWatchSettings {
                role_arn: text(item, attr::ROLE_ARN)?.to_owned(),
                region: text(item, attr::REGION)?.to_owned(),
            }),
            Provider::Datadog => Destination::Datadog(DatadogSettings {
                site: DatadogSite::parse(text(item, attr::SITE)?)
                    .ok_or(ConfigError::Corrupt(attr::SITE))?,
            }),
        };
        Ok(Self {
            organization_id: text(item, attr::ORGANIZATION_ID)?.to_owned(),
            project_id: text(item, attr::PROJECT_ID)?.to_owned(),
            name: text(item, attr::NAME)?.to_owned(),
            destination,
            api_key_last4: optional(item, attr::API_KEY_LAST4),
            version: text_number(item, attr::VERSION)?,
            updated_at: text(item, attr::UPDATED_AT)?.to_owned(),
            health: Health {
                last_success_at: optional(item, attr::LAST_SUCCESS_AT),
                last_failure_at: optional(item, attr::LAST_FAILURE_AT),
                last_error: optional(item, attr::LAST_ERROR),
            },
        })
    }
}

fn text_number(
    item: &HashMap<String, AttributeValue>,
    name: &'static str,
) -> Result<u64, ConfigError> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .ok_or(ConfigError::Corrupt(name))
}

/// The configuration table.
#[derive(Debug, Clone)]
pub struct ConfigTable {
    client: Client,
    name: String,
}

impl ConfigTable {
    pub fn new(client: Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
        }
    }

    /// The project's configuration, read strongly so a save is seen at once.
    pub async fn get(
        &self,
        organization_id: &str,
        project_id: &str,
    ) -> Result<Option<StreamingConfig>, ConfigError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.name)
            .set_key(Some(key(organization_id, project_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        out.item
            .as_ref()
            .map(StreamingConfig::from_item)
            .transpose()
    }

    /// Saves a configuration as the next version. `if_version` makes the save conditional on
    /// the stored version (`If-Match`; 0 means nothing saved); without it the save replaces
    /// whatever is there.
    /// Health starts afresh: it described the previous settings.
    pub async fn save(
        &self,
        organization_id: &str,
        project_id: &str,
        name: &str,
        destination: Destination,
        api_key_last4: Option<String>,
        if_version: Option<u64>,
    ) -> Result<StreamingConfig, ConfigError> {
        let current = self.get(organization_id, project_id).await?;
        let current_version = current.as_ref().map(|c| c.version);
        if let Some(expected) = if_version
            && current_version.unwrap_or(0) != expected
        {
            return Err(ConfigError::VersionMismatch { expected });
        }
        let config = StreamingConfig {
            organization_id: organization_id.to_owned(),
            project_id: project_id.to_owned(),
            name: name.to_owned(),
            destination,
            api_key_last4,
            version: current_version.unwrap_or(0) + 1,
            updated_at: now_rfc3339(),
            health: Health::default(),
        };
        let mut put = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(config.to_item()));
        // Whatever was read is what is replaced: a concurrent save in between loses the race.
        put = match current_version {
            Some(v) => put
                .condition_expression("#v = :v")
                .expression_attribute_names("#v", attr::VERSION)
                .expression_attribute_values(":v", AttributeValue::N(v.to_string())),
            None => put.condition_expression("attribute_not_exists(pk)"),
        };
        match put.send().await {
            Ok(_) => Ok(config),
            Err(e) if is_condition_failure(&e) => Err(ConfigError::VersionMismatch {
                expected: if_version.or(current_version).unwrap_or(0),
            }),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Removes the project's configuration; `true` when there was one.
    pub async fn delete(
        &self,
        organization_id: &str,
        project_id: &str,
        if_version: Option<u64>,
    ) -> Result<bool, ConfigError> {
        let mut delete = self
            .client
            .delete_item()
            .table_name(&self.name)
            .set_key(Some(key(organization_id, project_id)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld);
        if let Some(v) = if_version {
            delete = delete
                .condition_expression("#v = :v")
                .expression_attribute_names("#v", attr::VERSION)
                .expression_attribute_values(":v", AttributeValue::N(v.to_string()));
        }
        match delete.send().await {
            Ok(out) => Ok(out.attributes.is_some_and(|a| !a.is_empty())),
            Err(e) if is_condition_failure(&e) => Err(ConfigError::VersionMismatch {
                expected: if_version.unwrap_or(0),
            }),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Records one batch's delivery outcome in a single write. A configuration deleted in the
    /// meantime is left deleted.
    pub async fn record_health(
        &self,
        organization_id: &str,
        project_id: &str,
        report: &HealthReport,
    ) -> Result<(), ConfigError> {
        let now = now_rfc3339();
        let mut sets = Vec::new();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(key(organization_id, project_id)))
            .condition_expression("attribute_exists(pk)");
        if report.delivered > 0 {
            sets.push("#ok = :now");
            update = update.expression_attribute_names("#ok", attr::LAST_SUCCESS_AT);
        }
        if report.failed > 0 {
            sets.push("#failed = :now");
            sets.push("#error = :error");
            update = update
                .expression_attribute_names("#failed", attr::LAST_FAILURE_AT)
                .expression_attribute_names("#error", attr::LAST_ERROR)
                .expression_attribute_values(
                    ":error",
                    s(report.last_error.as_deref().unwrap_or("delivery failed")),
                );
        }
        if sets.is_empty() {
            return Ok(());
        }
        let result = update
            .update_expression(format!("SET {}", sets.join(", ")))
            .expression_attribute_values(":now", s(&now))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }
}

/// Sort key of an organization's own item (its External ID).
const ORGANIZATION_ITEM: &str = "organization";
const EXTERNAL_ID: &str = "external_id";
const TESTS_IN_MINUTE: &str = "tests";
/// TTL of short-lived items (test counters), as in the template's `TimeToLiveSpecification`.
pub const EXPIRES_AT: &str = "expires_at";

fn organization_key(organization_id: &str, sort_key: String) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            attr::PARTITION_KEY.to_owned(),
            AttributeValue::S(key_part(organization_id)),
        ),
        (attr::SORT_KEY.to_owned(), AttributeValue::S(sort_key)),
    ])
}

/// A new External ID: 128 bits from the operating system's CSPRNG, as 32 hex digits.
pub fn new_external_id() -> String {
    use rand::Rng;
    format!("{:032x}", rand::rng().random::<u128>())
}

impl ConfigTable {
    /// The organization's External ID, created the first time it is needed. It never changes
    /// on its own; two first requests at once agree on one.
    pub async fn external_id(&self, organization_id: &str) -> Result<String, ConfigError> {
        if let Some(id) = self.stored_external_id(organization_id).await? {
            return Ok(id);
        }
        let candidate = new_external_id();
        let mut item = organization_key(organization_id, ORGANIZATION_ITEM.to_owned());
        item.insert(EXTERNAL_ID.to_owned(), s(&candidate));
        item.insert(attr::ORGANIZATION_ID.to_owned(), s(organization_id));
        item.insert(attr::UPDATED_AT.to_owned(), s(&now_rfc3339()));
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

    async fn stored_external_id(
        &self,
        organization_id: &str,
    ) -> Result<Option<String>, ConfigError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.name)
            .set_key(Some(organization_key(
                organization_id,
                ORGANIZATION_ITEM.to_owned(),
            )))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        Ok(out
            .item
            .as_ref()
            .and_then(|item| optional(item, EXTERNAL_ID)))
    }

    /// Counts one "Test connection" of the organization in the current minute. `Err` holds the
    /// seconds until the next minute when `limit` tests already ran in this one.
    pub async fn take_test_slot(
        &self,
        organization_id: &str,
        limit: u32,
        now: OffsetDateTime,
    ) -> Result<Result<(), u64>, ConfigError> {
        let minute = now.unix_timestamp().div_euclid(60);
        let next_minute = (minute + 1) * 60;
        let result = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(organization_key(
                organization_id,
                format!("{TESTS_IN_MINUTE}#{minute}"),
            )))
            .update_expression("SET #exp = :exp ADD #n :one")
            .condition_expression("attribute_not_exists(#n) OR #n < :limit")
            .expression_attribute_names("#n", "count")
            .expression_attribute_names("#exp", EXPIRES_AT)
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":limit", AttributeValue::N(limit.to_string()))
            .expression_attribute_values(":exp", AttributeValue::N((next_minute + 300).to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Ok(())),
            Err(e) if is_condition_failure(&e) => {
                Ok(Err((next_minute - now.unix_timestamp()).max(1) as u64))
            }
            Err(e) => Err(store_error(e)),
        }
    }
}

fn is_condition_failure<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
}

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

    #[test]
    fn health_status_follows_the_latest_outcome() {
        let mut h = Health::default();
        assert_eq!(h.status(), "unknown");
        h.last_success_at = Some("2026-01-01T00:00:00Z".into());
        assert_eq!(h.status(), "healthy");
        h.last_failure_at = Some("2026-01-01T00:00:01Z".into());
        assert_eq!(h.status(), "failing");
        h.last_success_at = Some("2026-01-01T00:00:02Z".into());
        assert_eq!(h.status(), "healthy");
    }

    #[test]
    fn keys_separate_organizations_and_projects() {
        let a = key("org#1", "p");
        let b = key("org", "1#p");
        assert_ne!(a, b);
        assert_eq!(a["pk"].as_s().unwrap(), "org%231");
        assert_eq!(a["sk"].as_s().unwrap(), "project#p");
    }

    #[test]
    fn a_configuration_survives_its_item_round_trip() {
        let config = StreamingConfig {
            organization_id: "o".into(),
            project_id: "p".into(),
            name: "prod-audit".into(),
            destination: Destination::Cloudwatch(CloudWatchSettings {
                role_arn: "arn:aws:iam::123456789012:role/r".into(),
                region: "us-west-2".into(),
            }),
            api_key_last4: None,
            version: 3,
            updated_at: "2026-01-01T00:00:00Z".into(),
            health: Health {
                last_success_at: Some("2026-01-01T00:00:00Z".into()),
                last_failure_at: None,
                last_error: None,
            },
        };
        assert_eq!(
            StreamingConfig::from_item(&config.to_item()).unwrap(),
            config
        );
    }
}
