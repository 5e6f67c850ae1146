//! The streaming configuration table: per organization, its External ID; per project, the one
//! destination's non-secret settings, a version for `If-Match`, and the delivery health the
//! stream function records. Keys: `pk` = organization, `sk` = `organization` or
//! `project#<project>`, so an organization's items share a partition.

mod failures;
mod lanes;
mod replays;

pub use failures::FailureRecord;
pub use lanes::lane_of;
pub use replays::{Replay, ReplayState};

use crate::destination::{CloudWatchSettings, DatadogSettings, DatadogSite, Destination, Provider};
use crate::lane::Lane;
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
    pub const FAILING_SINCE: &str = "failing_since";
    pub const LAST_FAILURE_PERMANENT: &str = "last_failure_permanent";
    pub const SECRET_VERSION: &str = "secret_version";
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
    /// The version of the project's secret saved with this configuration (`None` in items
    /// saved before versions were recorded: the current one).
    pub secret_version: Option<String>,
    pub version: u64,
    pub updated_at: String,
    pub health: Health,
    /// The destination's delivery lane (kept by the stream function, not by saves).
    pub lane: Lane,
}

/// What a save writes: the destination's settings and the secret version that goes with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConfig {
    pub name: String,
    pub destination: Destination,
    pub api_key_last4: Option<String>,
    pub secret_version: Option<String>,
}

/// What the last deliveries to the destination did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Health {
    pub last_success_at: Option<String>,
    pub last_failure_at: Option<String>,
    pub last_error: Option<String>,
    /// Start of the current run of failures with no delivery in between.
    pub failing_since: Option<String>,
    /// Whether the last failure was a refusal (fix the setup), not an outage (wait).
    pub last_failure_permanent: bool,
    /// `(epoch hour, delivered, failed)` of the last 24 hours, one slot per hour of the day.
    pub hours: Vec<(i64, u64, u64)>,
}

/// Failures this long with no delivery in between make a destination `failing`; a refusal or
/// a destination that never took an event is `failing` at once.
pub const FAILING_AFTER: std::time::Duration = std::time::Duration::from_secs(300);

fn parse_time(t: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(t, &Rfc3339).ok()
}

impl Health {
    pub fn status(&self) -> &'static str {
        self.status_at(OffsetDateTime::now_utc())
    }

    /// `unknown` before any delivery; `failing` per [`FAILING_AFTER`]; `healthy` otherwise.
    pub fn status_at(&self, now: OffsetDateTime) -> &'static str {
        if self.last_success_at.is_none() && self.last_failure_at.is_none() {
            return "unknown";
        }
        let Some(since) = self.failing_since.as_deref().and_then(parse_time) else {
            return "healthy";
        };
        if self.last_success_at.is_none()
            || self.last_failure_permanent
            || now - since >= FAILING_AFTER
        {
            "failing"
        } else {
            "healthy"
        }
    }

    /// Events delivered and failed over the 24 hours before `now`.
    pub fn counts_24h(&self, now: OffsetDateTime) -> (u64, u64) {
        let current = now.unix_timestamp().div_euclid(3600);
        self.hours
            .iter()
            .filter(|(hour, _, _)| (current - 23..=current).contains(hour))
            .fold((0, 0), |(d, f), (_, delivered, failed)| {
                (d + delivered, f + failed)
            })
    }

    pub fn seconds_since_last_success(&self, now: OffsetDateTime) -> Option<i64> {
        let last = parse_time(self.last_success_at.as_deref()?)?;
        Some((now - last).whole_seconds().max(0))
    }
}

/// The outcome of one batch's delivery to one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub delivered: usize,
    pub failed: usize,
    pub last_error: Option<String>,
    /// The error is a refusal that retrying will not fix.
    pub permanent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The stored version is not the one the save was conditional on.
    #[error("the configuration is at version {current}; read it again")]
    VersionMismatch { current: u64 },
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
        if let Some(version) = &self.secret_version {
            item.insert(attr::SECRET_VERSION.into(), s(version));
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
            (attr::FAILING_SINCE, &self.health.failing_since),
        ] {
            if let Some(v) = value {
                item.insert(name.into(), s(v));
            }
        }
        if self.health.last_failure_permanent {
            item.insert(
                attr::LAST_FAILURE_PERMANENT.into(),
                AttributeValue::Bool(true),
            );
        }
        for (hour, delivered, failed) in &self.health.hours {
            let slot = hour_slot(*hour);
            item.insert(format!("hour_{slot}"), AttributeValue::N(hour.to_string()));
            item.insert(
                format!("delivered_{slot}"),
                AttributeValue::N(delivered.to_string()),
            );
            item.insert(
                format!("failed_{slot}"),
                AttributeValue::N(failed.to_string()),
            );
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
            secret_version: optional(item, attr::SECRET_VERSION),
            version: text_number(item, attr::VERSION)?,
            updated_at: text(item, attr::UPDATED_AT)?.to_owned(),
            health: Health {
                last_success_at: optional(item, attr::LAST_SUCCESS_AT),
                last_failure_at: optional(item, attr::LAST_FAILURE_AT),
                last_error: optional(item, attr::LAST_ERROR),
                failing_since: optional(item, attr::FAILING_SINCE),
                last_failure_permanent: item
                    .get(attr::LAST_FAILURE_PERMANENT)
                    .and_then(|v| v.as_bool().ok())
                    .copied()
                    .unwrap_or(false),
                hours: (0..24)
                    .filter_map(|slot| {
                        let n = |name: &str| -> Option<i64> {
                            item.get(&format!("{name}_{slot:02}"))?
                                .as_n()
                                .ok()?
                                .parse()
                                .ok()
                        };
                        Some((
                            n("hour")?,
                            n("delivered").unwrap_or(0) as u64,
                            n("failed").unwrap_or(0) as u64,
                        ))
                    })
                    .collect(),
            },
            lane: lanes::lane_of(item),
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

    /// Saves a configuration as the version after `read` (the version the caller read; 0:
    /// nothing saved), only if the stored version is still `read`. A concurrent save in between
    /// makes this one fail with the version now stored.
    /// Health starts afresh: it described the previous settings.
    pub async fn save(
        &self,
        organization_id: &str,
        project_id: &str,
        new: NewConfig,
        read: u64,
    ) -> Result<StreamingConfig, ConfigError> {
        let config = StreamingConfig {
            organization_id: organization_id.to_owned(),
            project_id: project_id.to_owned(),
            name: new.name,
            destination: new.destination,
            api_key_last4: new.api_key_last4,
            secret_version: new.secret_version,
            version: read + 1,
            updated_at: now_rfc3339(),
            health: Health::default(),
            lane: Lane::default(),
        };
        // A put of the whole item, carrying the lane as it was read and conditional on it
        // being unchanged: the lane's state and counters stay as the stream left them.
        for _ in 0..LANE_RACES {
            let lane = if read == 0 {
                Lane::default()
            } else {
                match self.get(organization_id, project_id).await? {
                    Some(stored) if stored.version == read => stored.lane,
                    stored => {
                        return Err(ConfigError::VersionMismatch {
                            current: stored.map_or(0, |c| c.version),
                        });
                    }
                }
            };
            let mut item = config.to_item();
            let mut names = HashMap::new();
            let mut values = HashMap::new();
            let condition = if read == 0 {
                "attribute_not_exists(pk)".to_owned()
            } else {
                names.insert("#v".to_owned(), attr::VERSION.to_owned());
                values.insert(":read".to_owned(), AttributeValue::N(read.to_string()));
                let unchanged = lanes::unchanged(&lane, &mut names, &mut values);
                format!("#v = :read AND {unchanged}")
            };
            let lane = Lane {
                writes: lane.writes + lanes::WRITES_MOVED_BY_SAVE,
                version: config.version,
                ..lane
            };
            item.extend(lanes::attributes(&lane));
            let put = self
                .client
                .put_item()
                .table_name(&self.name)
                .set_item(Some(item))
                .condition_expression(condition)
                .set_expression_attribute_names((!names.is_empty()).then_some(names))
                .set_expression_attribute_values((!values.is_empty()).then_some(values));
            match put.send().await {
                Ok(_) => return Ok(StreamingConfig { lane, ..config }),
                Err(e) if is_condition_failure(&e) => {
                    // Another save won, or only the lane moved on: then try again with it.
                    if read == 0 {
                        return Err(self.mismatch(organization_id, project_id).await);
                    }
                }
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(ConfigError::Store(
            "the destination's delivery lane kept changing during the save".into(),
        ))
    }

    /// The error of a lost condition: the version stored now, as the caller must retry with it.
    async fn mismatch(&self, organization_id: &str, project_id: &str) -> ConfigError {
        match self.get(organization_id, project_id).await {
            Ok(current) => ConfigError::VersionMismatch {
                current: current.map_or(0, |c| c.version),
            },
            Err(e) => e,
        }
    }

    /// Removes the project's configuration, only at version `if_version` when given, and
    /// returns what it removed.
    pub async fn delete(
        &self,
        organization_id: &str,
        project_id: &str,
        if_version: Option<u64>,
    ) -> Result<Option<StreamingConfig>, ConfigError> {
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
            Ok(out) => out
                .attributes
                .filter(|a| !a.is_empty())
                .map(|a| StreamingConfig::from_item(&a))
                .transpose(),
            Err(e) if is_condition_failure(&e) => {
                Err(self.mismatch(organization_id, project_id).await)
            }
            Err(e) => Err(store_error(e)),
        }
    }

    /// Records one batch's delivery outcome in a single write (a second one, at most once an
    /// hour, when the hour's counting slot still holds the same hour of an earlier day). A
    /// configuration deleted in the meantime is left deleted.
    pub async fn record_health(
        &self,
        organization_id: &str,
        project_id: &str,
        report: &HealthReport,
    ) -> Result<(), ConfigError> {
        if report.delivered == 0 && report.failed == 0 {
            return Ok(());
        }
        let now = OffsetDateTime::now_utc();
        let hour = now.unix_timestamp().div_euclid(3600);
        let slot = hour_slot(hour);
        let mut sets = vec!["#h = :hour"];
        let mut names = HashMap::from([
            ("#h".to_owned(), format!("hour_{slot}")),
            ("#d".to_owned(), format!("delivered_{slot}")),
            ("#f".to_owned(), format!("failed_{slot}")),
            ("#since".to_owned(), attr::FAILING_SINCE.to_owned()),
        ]);
        let mut values = HashMap::from([
            (":hour".to_owned(), AttributeValue::N(hour.to_string())),
            (
                ":d".to_owned(),
                AttributeValue::N(report.delivered.to_string()),
            ),
            (
                ":f".to_owned(),
                AttributeValue::N(report.failed.to_string()),
            ),
            (":now".to_owned(), s(&now_rfc3339())),
        ]);
        let mut remove = "";
        if report.delivered > 0 {
            sets.push("#ok = :now");
            names.insert("#ok".into(), attr::LAST_SUCCESS_AT.into());
            remove = " REMOVE #since";
        } else {
            sets.push("#since = if_not_exists(#since, :now)");
        }
        if report.failed > 0 {
            sets.extend([
                "#failed = :now",
                "#error = :error",
                "#permanent = :permanent",
            ]);
            names.insert("#failed".into(), attr::LAST_FAILURE_AT.into());
            names.insert("#error".into(), attr::LAST_ERROR.into());
            names.insert("#permanent".into(), attr::LAST_FAILURE_PERMANENT.into());
            values.insert(
                ":error".into(),
                s(report.last_error.as_deref().unwrap_or("delivery failed")),
            );
            values.insert(":permanent".into(), AttributeValue::Bool(report.permanent));
        }
        let sets = sets.join(", ");
        let counted = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(key(organization_id, project_id)))
            .update_expression(format!("SET {sets} ADD #d :d, #f :f{remove}"))
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(#h) OR #h = :hour)",
            )
            .set_expression_attribute_names(Some(names.clone()))
            .set_expression_attribute_values(Some(values.clone()))
            .send()
            .await;
        match counted {
            Ok(_) => return Ok(()),
            Err(e) if !is_condition_failure(&e) => return Err(store_error(e)),
            Err(_) => {}
        }
        // Either the configuration is gone, or the slot counts a day-old hour: start it afresh.
        let restarted = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(key(organization_id, project_id)))
            .update_expression(format!("SET {sets}, #d = :d, #f = :f{remove}"))
            .condition_expression("attribute_exists(pk)")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match restarted {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }
}

/// A save retries this often when only the destination's lane changed under it.
const LANE_RACES: usize = 20;

/// The counting slot of an epoch hour: its hour of the day.
fn hour_slot(hour: i64) -> String {
    format!("{:02}", hour.rem_euclid(24))
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

    /// Counts one use of `limit.what` by the organization in the current window. `Err` holds
    /// the seconds until the next window when `limit.per_window` uses already happened in this
    /// one.
    pub async fn take_slot(
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

/// Replay requests: 10 per organization per hour, whatever the number of its projects.
pub const REPLAYS_STARTED: RateLimit = RateLimit {
    what: "replays",
    noun: "replay requests",
    per_window: 10,
    window_seconds: 3600,
};

/// How long a connection test's result is kept.
const TEST_RESULT_DAYS: i64 = 30;

/// One "Test connection" and what it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestRecord {
    pub tested_at: String,
    pub provider: String,
    pub success: bool,
    pub message: String,
}

impl ConfigTable {
    /// Keeps a connection test's result (for 30 days).
    pub async fn record_test(
        &self,
        organization_id: &str,
        project_id: &str,
        record: &TestRecord,
    ) -> Result<(), ConfigError> {
        let now = OffsetDateTime::now_utc();
        let sort_key = format!(
            "test#{}#{}#{:08x}",
            key_part(project_id),
            crate::store::sort_key_time(now),
            rand::random::<u32>()
        );
        let mut item = organization_key(organization_id, sort_key);
        item.insert("tested_at".into(), s(&record.tested_at));
        item.insert(attr::PROVIDER.into(), s(&record.provider));
        item.insert("success".into(), AttributeValue::Bool(record.success));
        item.insert("message".into(), s(&record.message));
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
    pub async fn recent_tests(
        &self,
        organization_id: &str,
        project_id: &str,
        n: usize,
    ) -> Result<Vec<TestRecord>, ConfigError> {
        let items = self
            .query_prefix(
                organization_id,
                &format!("test#{}#", key_part(project_id)),
                n,
                None,
            )
            .await?
            .0;
        items
            .iter()
            .map(|item| {
                Ok(TestRecord {
                    tested_at: text(item, "tested_at")?.to_owned(),
                    provider: text(item, attr::PROVIDER)?.to_owned(),
                    success: item
                        .get("success")
                        .and_then(|v| v.as_bool().ok())
                        .copied()
                        .unwrap_or(false),
                    message: text(item, "message")?.to_owned(),
                })
            })
            .collect()
    }

    /// Items of an organization whose sort key starts with `prefix`, newest (greatest) first,
    /// after `after`; with the sort key to continue from when more may follow.
    async fn query_prefix(
        &self,
        organization_id: &str,
        prefix: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<(Vec<HashMap<String, AttributeValue>>, Option<String>), ConfigError> {
        let pk = AttributeValue::S(key_part(organization_id));
        let start = after.map(|sk| {
            HashMap::from([
                (attr::PARTITION_KEY.to_owned(), pk.clone()),
                (attr::SORT_KEY.to_owned(), AttributeValue::S(sk.to_owned())),
            ])
        });
        let out = self
            .client
            .query()
            .table_name(&self.name)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", pk)
            .expression_attribute_values(":prefix", s(prefix))
            .scan_index_forward(false)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start)
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        let items = out.items.unwrap_or_default();
        let next = out
            .last_evaluated_key
            .and_then(|k| k.get(attr::SORT_KEY).and_then(|v| v.as_s().ok()).cloned());
        Ok((items, next))
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
    fn a_destination_is_failing_after_five_minutes_of_failures_or_at_once_when_refused() {
        let at = |t: &str| OffsetDateTime::parse(t, &Rfc3339).unwrap();
        let mut h = Health::default();
        assert_eq!(h.status_at(at("2026-01-01T00:00:00Z")), "unknown");
        h.last_success_at = Some("2026-01-01T00:00:00Z".into());
        assert_eq!(h.status_at(at("2026-01-01T00:01:00Z")), "healthy");
        // An outage begins: healthy for five minutes, then failing.
        h.last_failure_at = Some("2026-01-01T00:01:00Z".into());
        h.failing_since = Some("2026-01-01T00:01:00Z".into());
        assert_eq!(h.status_at(at("2026-01-01T00:05:59Z")), "healthy");
        assert_eq!(h.status_at(at("2026-01-01T00:06:00Z")), "failing");
        // A refusal is failing at once.
        h.last_failure_permanent = true;
        assert_eq!(h.status_at(at("2026-01-01T00:01:01Z")), "failing");
        // A delivery ends the run of failures.
        h.failing_since = None;
        assert_eq!(h.status_at(at("2026-01-01T00:07:00Z")), "healthy");
        // Never delivered and failing: failing at once.
        let never = Health {
            last_failure_at: Some("2026-01-01T00:00:00Z".into()),
            failing_since: Some("2026-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(never.status_at(at("2026-01-01T00:00:01Z")), "failing");
    }

    #[test]
    fn counts_cover_the_last_24_hours_only() {
        let now = OffsetDateTime::parse("2026-01-02T10:30:00Z", &Rfc3339).unwrap();
        let current = now.unix_timestamp() / 3600;
        let h = Health {
            hours: vec![
                (current, 5, 1),
                (current - 23, 7, 2),
                (current - 24, 100, 100),
            ],
            ..Default::default()
        };
        assert_eq!(h.counts_24h(now), (12, 3));
        assert_eq!(hour_slot(current), hour_slot(current - 24));
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
            secret_version: Some("0123456789abcdef0123456789abcdef".into()),
            version: 3,
            updated_at: "2026-01-01T00:00:00Z".into(),
            health: Health {
                last_success_at: Some("2026-01-01T00:00:00Z".into()),
                last_failure_at: Some("2026-01-01T00:00:05Z".into()),
                last_error: Some("Datadog answered HTTP 503".into()),
                failing_since: Some("2026-01-01T00:00:05Z".into()),
                last_failure_permanent: true,
                hours: vec![(493_000, 12, 3), (493_001, 0, 4)],
            },
            // The lane knows the version it was read with.
            lane: Lane {
                version: 3,
                ..Lane::default()
            },
        };
        assert_eq!(
            StreamingConfig::from_item(&config.to_item()).unwrap(),
            config
        );
    }
}
