//! The streaming configuration table: per organization, its External ID; per project, the one
//! destination's non-secret settings, a version for `If-Match`, and the delivery health the
//! stream function records. Keys: `pk` = organization, `sk` = `organization` or
//! `project#<project>`, so an organization's items share a partition. This file holds the
//! configuration items; each other kind of item has its file: `health.rs`, `organization.rs`
//! (External ID, rate limits), `connection_tests.rs`, `exports.rs`, `failures.rs`,
//! `replays.rs`, `lanes.rs` (the lanes' state and what they owe), and `deletion.rs` (the mark of
//! a `DELETE` under way, on the `removed#` item).

mod connection_tests;
mod deletion;
mod exports;
mod failures;
mod health;
mod lanes;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;
mod organization;
mod projects;
mod replays;

pub use connection_tests::{ConnectionTests, TestRecord};
pub use deletion::{DELETION_CALL_LIMIT, DELETION_MARK_LAPSE, Deletion};
pub use exports::{
    EXPORT_KEPT_DAYS, EXPORT_STALE_AFTER_SECONDS, EXPORT_STALLED, EXPORT_STALLED_AFTER_SECONDS,
    Export, ExportFormat, ExportPart, ExportState, Exports, RUNNING_EXPORTS,
};
pub use failures::{FailureLog, FailureRecord};
pub use health::{FAILING_AFTER, Health, HealthReport};
#[cfg(any(test, feature = "test-util"))]
pub(crate) use lanes::WRITES_MOVED_BY_SAVE;
pub use lanes::{LANES_BY_NEXT_ATTEMPT, attr as lane_attr, lane_of};
pub use organization::{
    CONFIGURATION_CHANGES, CONNECTION_TESTS, EXPIRES_AT, Organizations, REPLAYS_STARTED, RateLimit,
    SEARCHES, new_external_id,
};
#[cfg(any(test, feature = "test-util"))]
pub use projects::MemoryProjects;
pub use projects::{
    NOTE_AHEAD_SECONDS, Note, ProjectIndex, Unnoted, note_for, note_stored_projects, noted_projects,
};
pub use replays::{
    LOST as REPLAY_LOST, PART_KEPT_SECONDS as REPLAY_PART_KEPT_SECONDS, Replay, ReplayState,
    Replays, STALE_AFTER_SECONDS as REPLAY_STALE_AFTER_SECONDS, STALLED as REPLAY_STALLED,
};

use crate::destination::Destination;
use crate::lane::{Lane, LaneKey};
use crate::store::{key_part, sort_key_part};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use health::hour_slot;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use time::OffsetDateTime;

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
    pub const SAVED_BY: &str = "saved_by";
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
    /// The save that wrote these settings ([`NewConfig::save`]); `None` in items saved before
    /// saves were named.
    pub saved_by: Option<String>,
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
    /// The destination and its credentials are the ones saved (a save that renames it, say):
    /// the recorded health still describes them and is kept.
    pub same_destination: bool,
    /// This save's own random name, written with it: a save whose answer was lost (the SDK's
    /// retry of it then fails its condition) finds its own write by it.
    pub save: String,
}

impl NewConfig {
    /// A fresh name for a save.
    pub fn new_save() -> String {
        new_external_id()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The stored version is not the one the save was conditional on.
    #[error("the configuration is at version {current}; read it again")]
    VersionMismatch { current: u64 },
    /// A deletion of the project is under way: a configuration saved now would name
    /// credentials the deletion is about to remove.
    #[error("a deletion of this project's streaming configuration is under way; retry shortly")]
    Deleting { retry_after: u64 },
    #[error("the stored configuration is damaged: {0}")]
    Corrupt(&'static str),
    #[error("DynamoDB failed: {0}")]
    Store(String),
    /// A replay that stalled lost its project's lock to a newer one: it was saved as failed.
    #[error("{REPLAY_SUPERSEDED}")]
    ReplaySuperseded,
    /// Another writer of the same replay (a second copy of its part) saved it since it was
    /// read: nothing was written, and this writer stops.
    #[error("another part of the replay saved its progress first")]
    ReplayMovedOn,
}

/// Why a replay that lost its project's lock to a newer one stopped.
pub const REPLAY_SUPERSEDED: &str =
    "another replay of the project started while this one was not making progress";

/// Sort keys of project configurations begin with this.
const PROJECT_SORT_PREFIX: &str = "project#";

fn key(organization_id: &str, project_id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            attr::PARTITION_KEY.to_owned(),
            AttributeValue::S(key_part(organization_id)),
        ),
        (
            attr::SORT_KEY.to_owned(),
            AttributeValue::S(format!(
                "{PROJECT_SORT_PREFIX}{}",
                sort_key_part(project_id)
            )),
        ),
    ])
}

/// The organization and project whose configuration item has these keys (`None` for any
/// other item, and for the keys of a project too long to be read back from them, unless the
/// item's own attributes are at hand: see [`names_its_project_in_full`]).
fn project_of_key(item: &HashMap<String, AttributeValue>) -> Option<(String, String)> {
    let text = |name: &str| item.get(name)?.as_s().ok();
    let project = text(attr::SORT_KEY)?.strip_prefix(PROJECT_SORT_PREFIX)?;
    if !names_its_project_in_full(item) {
        return Some((
            text(attr::ORGANIZATION_ID)?.clone(),
            text(attr::PROJECT_ID)?.clone(),
        ));
    }
    Some((
        crate::store::id_of_key_part(text(attr::PARTITION_KEY)?)?,
        crate::store::id_of_key_part(project)?,
    ))
}

/// Whether a configuration item's sort key names its project in full (or only its start and a
/// digest, when the id is too long for a key: its item has it).
fn names_its_project_in_full(item: &HashMap<String, AttributeValue>) -> bool {
    item.get(attr::SORT_KEY)
        .and_then(|v| v.as_s().ok())
        .is_none_or(|sk| !sk.contains(crate::store::FITTED_MARKER))
}

/// An item's attributes from `value`, leaving out what is absent rather than storing NULL.
fn to_item<T: Serialize>(
    value: &T,
    what: &'static str,
) -> Result<HashMap<String, AttributeValue>, ConfigError> {
    let mut item: HashMap<String, AttributeValue> =
        serde_dynamo::to_item(value).map_err(|_| ConfigError::Corrupt(what))?;
    item.retain(|_, v| !matches!(v, AttributeValue::Null(_)));
    Ok(item)
}

/// A `T` read from an item's attributes (others ignored). The error names what was read, not
/// what the item held.
fn from_item<T: serde::de::DeserializeOwned>(
    item: HashMap<String, AttributeValue>,
    what: &'static str,
) -> Result<T, ConfigError> {
    serde_dynamo::from_item(item).map_err(|_| ConfigError::Corrupt(what))
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

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn store_error<E, R>(err: SdkError<E, R>) -> ConfigError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    ConfigError::Store(DisplayErrorContext(err).to_string())
}

/// A configuration item's saved settings and recorded health, as serde_dynamo lays them out.
/// The item also holds health's hourly slots and the lane, which are read and written beside.
#[derive(Serialize, Deserialize)]
struct SavedItem {
    organization_id: String,
    project_id: String,
    name: String,
    #[serde(flatten)]
    destination: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    api_key_last4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_version: Option<String>,
    version: u64,
    updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    saved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_success_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_failure_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failing_since: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    last_failure_permanent: bool,
}

impl StreamingConfig {
    fn to_item(&self) -> Result<HashMap<String, AttributeValue>, ConfigError> {
        let health = self.health.clone();
        let saved = SavedItem {
            organization_id: self.organization_id.clone(),
            project_id: self.project_id.clone(),
            name: self.name.clone(),
            destination: self.destination.clone(),
            api_key_last4: self.api_key_last4.clone(),
            secret_version: self.secret_version.clone(),
            version: self.version,
            updated_at: self.updated_at.clone(),
            saved_by: self.saved_by.clone(),
            last_success_at: health.last_success_at,
            last_failure_at: health.last_failure_at,
            last_error: health.last_error,
            failing_since: health.failing_since,
            last_failure_permanent: health.last_failure_permanent,
        };
        let mut item = to_item(&saved, "configuration")?;
        item.extend(key(&self.organization_id, &self.project_id));
        for (hour, delivered, failed) in &health.hours {
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
        Ok(item)
    }

    fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Self, ConfigError> {
        // The settings alone: the rest of the item is the lane's and the hourly slots'.
        let settings: HashMap<String, AttributeValue> = item
            .iter()
            .filter(|(name, _)| !is_slot_or_lane(name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let saved: SavedItem = from_item(settings, "configuration")?;
        Ok(Self {
            organization_id: saved.organization_id,
            project_id: saved.project_id,
            name: saved.name,
            destination: saved.destination,
            api_key_last4: saved.api_key_last4,
            secret_version: saved.secret_version,
            version: saved.version,
            updated_at: saved.updated_at,
            saved_by: saved.saved_by,
            health: Health {
                last_success_at: saved.last_success_at,
                last_failure_at: saved.last_failure_at,
                last_error: saved.last_error,
                failing_since: saved.failing_since,
                last_failure_permanent: saved.last_failure_permanent,
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

/// An update that sets an item's attributes (`item`, which holds no health) but its keys, and
/// removes the lane's and the settings' optional ones it lacks, as a put of it would; health's
/// are left as they are.
fn every_attribute_but_health(item: HashMap<String, AttributeValue>) -> lanes::Update {
    let mut update = lanes::Update::default();
    let optional = [attr::API_KEY_LAST4, attr::SECRET_VERSION, attr::SAVED_BY];
    for gone in lanes::attr::ALL.iter().chain(&optional) {
        if !item.contains_key(*gone) {
            update.remove(gone);
        }
    }
    for (name, value) in item {
        if name != attr::PARTITION_KEY && name != attr::SORT_KEY {
            update.set(&name, value);
        }
    }
    update
}

/// Attributes of a configuration item that are not its saved settings.
fn is_slot_or_lane(name: &str) -> bool {
    name == attr::PARTITION_KEY
        || name == attr::SORT_KEY
        || name.starts_with("hour_")
        || name.starts_with("delivered_")
        || name.starts_with("failed_")
        || lanes::is_lane_attribute(name)
}

/// The projects' saved configurations: where each streams (the configuration table; in tests,
/// memory). Every save moves the version on; a save or delete at a version no longer stored
/// fails with the stored one.
pub trait Configurations: Sync {
    /// The project's configuration, as saved last; `None` when it streams nowhere.
    fn configuration(
        &self,
        organization_id: &str,
        project_id: &str,
    ) -> impl Future<Output = Result<Option<StreamingConfig>, ConfigError>> + Send;

    /// Saves a configuration as the version after `read` (0: nothing saved), only if the
    /// stored version is still `read`; in place of none, only while no deletion of the project
    /// is under way (`ConfigError::Deleting`).
    fn save(
        &self,
        organization_id: &str,
        project_id: &str,
        new: NewConfig,
        read: u64,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<StreamingConfig, ConfigError>> + Send;

    /// Removes the project's configuration, only at version `if_version` when given, and
    /// returns what it removed.
    fn delete(
        &self,
        organization_id: &str,
        project_id: &str,
        if_version: Option<u64>,
    ) -> impl Future<Output = Result<Option<StreamingConfig>, ConfigError>> + Send;

    /// Marks a deletion of the project under way, for [`DELETION_MARK_LAPSE`] at most: until it
    /// ends, no configuration is saved in place of none (`ConfigError::Deleting`).
    fn begin_deletion(
        &self,
        organization_id: &str,
        project_id: &str,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Deletion, ConfigError>> + Send;

    /// Takes this deletion out of the mark: saves land again once no other deletion holds it.
    fn end_deletion(
        &self,
        organization_id: &str,
        project_id: &str,
        deletion: &Deletion,
    ) -> impl Future<Output = Result<(), ConfigError>> + Send;

    /// How many of the organization's projects have a destination saved, counted up to
    /// `up_to` (what a limit needs to know).
    fn destinations(
        &self,
        organization_id: &str,
        up_to: usize,
    ) -> impl Future<Output = Result<usize, ConfigError>> + Send;
}

/// Destinations an organization may have saved at once. Each holds a secret in Secrets
/// Manager, whose number of secrets is the account's, shared by every organization (and each
/// costs by the month): an organization's scripts saving under made-up project ids would
/// otherwise take it from the others.
pub const MAX_DESTINATIONS: usize = 1_000;

impl Configurations for ConfigTable {
    async fn configuration(
        &self,
        organization_id: &str,
        project_id: &str,
    ) -> Result<Option<StreamingConfig>, ConfigError> {
        self.get(organization_id, project_id).await
    }

    /// Saves a configuration as the version after `read` (the version the caller read; 0:
    /// nothing saved, and then after the last one deleted), only if the stored version is still
    /// `read`. A concurrent save in between makes this one fail with the version now stored;
    /// a deletion under way, one in place of none (`ConfigError::Deleting`). Health starts
    /// afresh, since it described the previous settings, unless the destination is the same
    /// (`NewConfig::same_destination`).
    async fn save(
        &self,
        organization_id: &str,
        project_id: &str,
        new: NewConfig,
        read: u64,
        now: OffsetDateTime,
    ) -> Result<StreamingConfig, ConfigError> {
        let after = if read == 0 {
            self.removed_at(organization_id, project_id).await?
        } else {
            read
        };
        let config = StreamingConfig {
            organization_id: organization_id.to_owned(),
            project_id: project_id.to_owned(),
            name: new.name,
            destination: new.destination,
            api_key_last4: new.api_key_last4,
            secret_version: new.secret_version,
            version: after + 1,
            updated_at: crate::clock::seconds_text(now),
            saved_by: Some(new.save),
            health: Health::default(),
            lane: Lane::default(),
        };
        // A put of the whole item, carrying the lane as it was read and conditional on it
        // being unchanged: the lane's state and counters stay as the stream left them. The same
        // destination saved again keeps its health: then every attribute but health's is set,
        // so health the stream records in between is not undone either.
        let keeps_health = new.same_destination && read != 0;
        let key_of_lane = LaneKey::new(organization_id, project_id);
        for _ in 0..LANE_RACES {
            let mut health = Health::default();
            let lane = if read == 0 {
                // Saved in place of none: events still owed were owed to a removed destination
                // (what its deletion did not forget in time), and are not this one's.
                Lane::saved_in_place_of_none(crate::clock::epoch_ms(now))
            } else {
                match self.get(organization_id, project_id).await? {
                    Some(stored) if stored.version == read => {
                        if keeps_health {
                            health = stored.health;
                        }
                        stored.lane
                    }
                    stored => {
                        return Err(ConfigError::VersionMismatch {
                            current: stored.map_or(0, |c| c.version),
                        });
                    }
                }
            };
            let mut item = config.to_item()?;
            let mut names = HashMap::new();
            let mut values = HashMap::new();
            let condition = if read == 0 {
                "attribute_not_exists(pk)".to_owned()
            } else {
                names.insert("#v".to_owned(), attr::VERSION.to_owned());
                values.insert(":read".to_owned(), AttributeValue::N(read.to_string()));
                let unchanged = lanes::unchanged(&key_of_lane, &lane, &mut names, &mut values);
                format!("#v = :read AND {unchanged}")
            };
            let lane = Lane {
                writes: lane.writes + lanes::WRITES_MOVED_BY_SAVE,
                version: config.version,
                // Saved settings, perhaps another destination: its trouble starts afresh.
                recovered_at: None,
                ..lane
            };
            item.extend(lanes::attributes(&key_of_lane, &lane));
            let written = if keeps_health {
                let mut update = every_attribute_but_health(item);
                update.names.extend(names);
                update.values.extend(values);
                self.client
                    .update_item()
                    .table_name(&self.name)
                    .set_key(Some(key(organization_id, project_id)))
                    .update_expression(update.expression())
                    .condition_expression(condition)
                    .set_expression_attribute_names(Some(update.names))
                    .set_expression_attribute_values(Some(update.values))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| (is_condition_failure(&e), store_error(e)))
            } else if read == 0 {
                self.first_save(organization_id, project_id, item, after, now)
                    .await
            } else {
                self.client
                    .put_item()
                    .table_name(&self.name)
                    .set_item(Some(item))
                    .condition_expression(condition)
                    .set_expression_attribute_names((!names.is_empty()).then_some(names))
                    .set_expression_attribute_values((!values.is_empty()).then_some(values))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| (is_condition_failure(&e), store_error(e)))
            };
            match written {
                Ok(()) => {
                    return Ok(StreamingConfig {
                        lane,
                        health,
                        ..config
                    });
                }
                Err((true, _)) => {
                    // Another save won, or only the lane moved on: then try again with it.
                    if read == 0 {
                        return Err(self.refusal(organization_id, project_id, now).await);
                    }
                }
                Err((false, e)) => return Err(e),
            }
        }
        Err(ConfigError::Store(
            "the destination's delivery lane kept changing during the save".into(),
        ))
    }

    /// Removes the project's configuration, only at version `if_version` when given, and
    /// returns what it removed. Its version is noted first, so the project's next configuration
    /// counts on from it: an `If-Match` read before the delete never matches a later one.
    async fn delete(
        &self,
        organization_id: &str,
        project_id: &str,
        if_version: Option<u64>,
    ) -> Result<Option<StreamingConfig>, ConfigError> {
        use aws_sdk_dynamodb::types::{Delete, TransactWriteItem};
        let mut current = 0;
        for _ in 0..LANE_RACES {
            // Only its version: a damaged item must be deletable too.
            let Some(stored) = self.item(key(organization_id, project_id)).await? else {
                return match if_version {
                    Some(v) if v != 0 => Err(ConfigError::VersionMismatch { current: 0 }),
                    _ => Ok(None),
                };
            };
            let version = number(&stored, attr::VERSION).and_then(|v| u64::try_from(v).ok());
            current = version.unwrap_or(0);
            if if_version.is_some_and(|v| v != current) {
                return Err(ConfigError::VersionMismatch { current });
            }
            self.note_removed(organization_id, project_id, current)
                .await?;
            let delete = Delete::builder()
                .table_name(&self.name)
                .set_key(Some(key(organization_id, project_id)))
                .expression_attribute_names("#v", attr::VERSION);
            let delete = match version {
                Some(v) => delete
                    .condition_expression("#v = :v")
                    .expression_attribute_values(":v", AttributeValue::N(v.to_string())),
                None => delete.condition_expression("attribute_not_exists(#v)"),
            }
            .build()
            .map_err(|e| ConfigError::Store(format!("a delete could not be laid out: {e}")))?;
            // A transaction of one, for its client token (the SDK makes one per call): the
            // SDK's retry of a delete that landed though its answer was lost is answered as
            // that delete, where a plain DeleteItem's would fail its condition and read as
            // another writer's doing (a 412 for its own write, its secret and audit entry
            // skipped).
            let deleted = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().delete(delete).build())
                .send()
                .await;
            match deleted {
                // At the version read, so what was read is what went (its settings, which the
                // version covers; damaged, it is gone all the same and the caller hears so).
                Ok(_) => return StreamingConfig::from_item(&stored).map(Some),
                // A save landed since the read (or another transaction held the item): read
                // again (an `If-Match` then mismatches).
                Err(e) if is_cancelled(&e) => {}
                Err(e) => return Err(store_error(e)),
            }
        }
        // Saves kept landing: the caller is told to come back, as a save that keeps losing is.
        Err(ConfigError::VersionMismatch { current })
    }

    async fn begin_deletion(
        &self,
        organization_id: &str,
        project_id: &str,
        now: OffsetDateTime,
    ) -> Result<Deletion, ConfigError> {
        self.mark_deletion(organization_id, project_id, now).await
    }

    async fn end_deletion(
        &self,
        organization_id: &str,
        project_id: &str,
        deletion: &Deletion,
    ) -> Result<(), ConfigError> {
        self.clear_deletion(organization_id, project_id, deletion)
            .await
    }

    async fn destinations(
        &self,
        organization_id: &str,
        up_to: usize,
    ) -> Result<usize, ConfigError> {
        let mut counted = 0;
        let mut start = None;
        loop {
            let page = self
                .prefix_query(organization_id, PROJECT_SORT_PREFIX)
                .select(aws_sdk_dynamodb::types::Select::Count)
                // A destination deleted a moment ago is not counted.
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(store_error)?;
            counted += usize::try_from(page.count).unwrap_or(0);
            start = page.last_evaluated_key;
            if start.is_none() || counted >= up_to {
                return Ok(counted);
            }
        }
    }
}

/// The item that keeps the version of a project's last deleted configuration, and the mark of
/// its deletions under way (`deletion.rs`).
fn removed_key(organization_id: &str, project_id: &str) -> HashMap<String, AttributeValue> {
    organization_key(
        organization_id,
        format!("removed#{}", sort_key_part(project_id)),
    )
}

impl ConfigTable {
    /// Writes the project's configuration where none is, as long as its last deleted version is
    /// still `after` and no deletion is under way, in one transaction: a delete of a
    /// configuration saved since the version was read makes this one lose, never share its
    /// version. `Err((true, _))`: it lost.
    async fn first_save(
        &self,
        organization_id: &str,
        project_id: &str,
        item: HashMap<String, AttributeValue>,
        after: u64,
        now: OffsetDateTime,
    ) -> Result<(), (bool, ConfigError)> {
        use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem};
        let unbuilt = |e: aws_sdk_dynamodb::error::BuildError| {
            (
                false,
                ConfigError::Store(format!("a save could not be laid out: {e}")),
            )
        };
        let put = Put::builder()
            .table_name(&self.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(unbuilt)?;
        let check = ConditionCheck::builder()
            .table_name(&self.name)
            .set_key(Some(removed_key(organization_id, project_id)))
            .expression_attribute_names("#v", attr::VERSION)
            .expression_attribute_names("#ds", deletion::attr::DELETIONS)
            .expression_attribute_names("#d", deletion::attr::DELETING_UNTIL)
            .expression_attribute_values(
                ":now",
                AttributeValue::N(now.unix_timestamp().to_string()),
            );
        let not_deleting = deletion::NOT_DELETING;
        let check = if after == 0 {
            check.condition_expression(format!("attribute_not_exists(#v) AND {not_deleting}"))
        } else {
            check
                .condition_expression(format!("#v = :after AND {not_deleting}"))
                .expression_attribute_values(":after", AttributeValue::N(after.to_string()))
        }
        .build()
        .map_err(unbuilt)?;
        let written = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(TransactWriteItem::builder().condition_check(check).build())
            .send()
            .await;
        match written {
            Ok(_) => Ok(()),
            // A condition failed, or another transaction on the items ran at once.
            Err(e) if is_cancelled(&e) => Err((true, store_error(e))),
            Err(e) => Err((false, store_error(e))),
        }
    }

    /// The version of the project's last deleted configuration (0: none was).
    async fn removed_at(
        &self,
        organization_id: &str,
        project_id: &str,
    ) -> Result<u64, ConfigError> {
        Ok(self
            .item(removed_key(organization_id, project_id))
            .await?
            .and_then(|item| number(&item, attr::VERSION))
            .map_or(0, |v| v.max(0) as u64))
    }

    /// Notes `version` as deleted, unless a later one is noted already.
    async fn note_removed(
        &self,
        organization_id: &str,
        project_id: &str,
        version: u64,
    ) -> Result<(), ConfigError> {
        let note = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(removed_key(organization_id, project_id)))
            .update_expression("SET #v = :v")
            .condition_expression("attribute_not_exists(#v) OR #v < :v")
            .expression_attribute_names("#v", attr::VERSION)
            .expression_attribute_values(":v", AttributeValue::N(version.to_string()));
        let noted = deletion::past_transactions(|| note.clone().send()).await;
        match noted {
            Err(e) if !is_condition_failure(&e) => Err(store_error(e)),
            _ => Ok(()),
        }
    }
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
        self.item(key(organization_id, project_id))
            .await?
            .as_ref()
            .map(StreamingConfig::from_item)
            .transpose()
    }

    /// Why a save in place of none lost: a deletion under way, or another save.
    async fn refusal(
        &self,
        organization_id: &str,
        project_id: &str,
        now: OffsetDateTime,
    ) -> ConfigError {
        match self.deleting(organization_id, project_id, now).await {
            Ok(Some(retry_after)) => ConfigError::Deleting { retry_after },
            Ok(None) => self.mismatch(organization_id, project_id).await,
            Err(e) => e,
        }
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
}

/// An item of an organization's partition other than its projects' configurations.
pub(crate) fn organization_key(
    organization_id: &str,
    sort_key: String,
) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            attr::PARTITION_KEY.to_owned(),
            AttributeValue::S(key_part(organization_id)),
        ),
        (attr::SORT_KEY.to_owned(), AttributeValue::S(sort_key)),
    ])
}

/// A save retries this often when only the destination's lane changed under it.
const LANE_RACES: usize = 20;

impl ConfigTable {
    /// The item under `key`, read strongly so a write is seen at once.
    async fn item(
        &self,
        key: HashMap<String, AttributeValue>,
    ) -> Result<Option<HashMap<String, AttributeValue>>, ConfigError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.name)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        Ok(out.item)
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
        let query = self.prefix_query(organization_id, prefix);
        Self::query_page(query, organization_id, limit, after, false).await
    }

    /// A query of the organization's items whose sort key starts with `prefix`.
    fn prefix_query(
        &self,
        organization_id: &str,
        prefix: &str,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.name)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", AttributeValue::S(key_part(organization_id)))
            .expression_attribute_values(":prefix", s(prefix))
    }

    /// Items of an organization whose sort key is from `low` to `high` (both included),
    /// greatest first, after `after` (within them); with the sort key to continue from when
    /// more may follow.
    async fn query_between(
        &self,
        organization_id: &str,
        (low, high): (&str, &str),
        limit: usize,
        after: Option<&str>,
    ) -> Result<(Vec<HashMap<String, AttributeValue>>, Option<String>), ConfigError> {
        let query = self
            .client
            .query()
            .table_name(&self.name)
            .key_condition_expression("pk = :pk AND sk BETWEEN :low AND :high")
            .expression_attribute_values(":pk", AttributeValue::S(key_part(organization_id)))
            .expression_attribute_values(":low", s(low))
            .expression_attribute_values(":high", s(high));
        Self::query_page(query, organization_id, limit, after, false).await
    }

    /// A page of `query`'s items, after the sort key `after`.
    async fn query_page(
        query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
        organization_id: &str,
        limit: usize,
        after: Option<&str>,
        ascending: bool,
    ) -> Result<(Vec<HashMap<String, AttributeValue>>, Option<String>), ConfigError> {
        let start = after.map(|sk| {
            HashMap::from([
                (
                    attr::PARTITION_KEY.to_owned(),
                    AttributeValue::S(key_part(organization_id)),
                ),
                (attr::SORT_KEY.to_owned(), AttributeValue::S(sk.to_owned())),
            ])
        });
        let out = query
            .scan_index_forward(ascending)
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

/// A transaction refused as a whole: a condition failed, or another transaction held an item.
fn is_cancelled<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.as_service_error().and_then(|e| e.code()) == Some("TransactionCanceledException")
}

#[cfg(test)]
mod tests;
