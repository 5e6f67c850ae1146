//! stream: events table stream → each organization's destination.
//!
//! Only `INSERT` records are events to deliver (a TTL expiry is a `REMOVE` and must never look
//! like one). Records are grouped by organization and project and each group goes to the one
//! destination its configuration names; a project without a destination keeps its events
//! stored and is not a failure.
//!
//! The same function records stream batches whose retries ran out (from its on-failure queue,
//! `exhausted.rs`) and runs replays (from the replay queue, `replay.rs`).
//!
//! Failure policy:
//! - A retryable failure (throttling, an outage, a timeout that outlived the in-invocation
//!   retries) reports the first failed record's sequence number, so Lambda retries from there.
//!   Records this container already delivered are remembered and not sent again on that retry.
//! - A permanent failure (refused credentials, a role that cannot be assumed, an event the
//!   destination cannot take) is logged and recorded in the destination's health, and not
//!   reported to Lambda: retrying cannot help until the customer fixes the setup, and it would
//!   hold back every other organization's events on the same shard. The events stay stored, and
//!   are recorded as failures (`GET /streaming/failures`) for a replay.

use audit_log::AuditEvent;
use audit_log::credentials::{Credentials, CredentialsError, SecretStore};
use audit_log::destination::cloudwatch::CloudWatch;
use audit_log::destination::datadog::{ApiKeySource, DatadogClient};
use audit_log::destination::{CloudWatchSettings, DeliveryError, Destination, Failures};
use audit_log::settings::{SettingsError, required_env};
use audit_log::store::{EventTable, StoredKey};
use audit_log::streaming::{ConfigTable, HealthReport, StreamingConfig};

mod exhausted;
mod replay;
use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::sqs::SqsEvent;
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use futures::StreamExt;
use lambda_runtime::LambdaEvent;
use secrecy::SecretString;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub const CONFIG_TABLE_ENV: &str = "CONFIG_TABLE_NAME";
pub const EVENTS_TABLE_ENV: &str = "EVENTS_TABLE_NAME";
pub const SECRET_PREFIX_ENV: &str = "SECRET_NAME_PREFIX";
pub const LOG_GROUP_PREFIX_ENV: &str = "LOG_GROUP_PREFIX";
pub const REPLAY_QUEUE_ENV: &str = "REPLAY_QUEUE_URL";
pub const DATADOG_ENDPOINT_OVERRIDE_ENV: &str = "DATADOG_ENDPOINT_OVERRIDE";
/// What `template.yaml` gives the function. `DATADOG_ENDPOINT_OVERRIDE` is for local runs only.
pub const ENVIRONMENT: [&str; 5] = [
    CONFIG_TABLE_ENV,
    EVENTS_TABLE_ENV,
    SECRET_PREFIX_ENV,
    LOG_GROUP_PREFIX_ENV,
    REPLAY_QUEUE_ENV,
];
pub const DEFAULT_LOG_GROUP_PREFIX: &str = "/hashicorp";

/// A saved configuration reaches a warm container within this long.
const CONFIG_CACHE_TTL: Duration = Duration::from_secs(30);
/// Delivered records remembered per container, to skip them when Lambda retries a batch.
const DELIVERED_MEMORY: u64 = 200_000;
/// Destinations delivered to at once.
const CONCURRENT_DESTINATIONS: usize = 8;
const REPORT_MARGIN: Duration = Duration::from_secs(1);

/// The function's settings, from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_table: String,
    pub events_table: String,
    pub secret_prefix: String,
    pub log_group_prefix: String,
    pub replay_queue_url: String,
    pub datadog_endpoint_override: Option<String>,
}

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Ok(Self {
            config_table: required_env(CONFIG_TABLE_ENV)?,
            events_table: required_env(EVENTS_TABLE_ENV)?,
            secret_prefix: required_env(SECRET_PREFIX_ENV)?,
            log_group_prefix: std::env::var(LOG_GROUP_PREFIX_ENV)
                .ok()
                .filter(|p| !p.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_LOG_GROUP_PREFIX.to_owned()),
            replay_queue_url: required_env(REPLAY_QUEUE_ENV)?,
            datadog_endpoint_override: std::env::var(DATADOG_ENDPOINT_OVERRIDE_ENV)
                .ok()
                .filter(|u| !u.trim().is_empty()),
        })
    }
}

pub struct Stream {
    configs: ConfigTable,
    config_cache: moka::future::Cache<(String, String), Option<Arc<StreamingConfig>>>,
    secrets: SecretStore,
    cloudwatch: CloudWatch,
    datadog: DatadogClient,
    delivered: moka::sync::Cache<String, ()>,
    events: EventTable,
    streams: aws_sdk_dynamodbstreams::Client,
    sqs: aws_sdk_sqs::Client,
    replay_queue_url: String,
    replay_pages: replay::Pages,
}

/// A record on its way out: where it sits in the batch and the event it carries.
struct Pending {
    position: usize,
    event_id: String,
    key: StoredKey,
    event: AuditEvent,
}

/// Which failures a delivery records for `GET /streaming/failures` and replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Record {
    /// Live delivery: Lambda retries the others, and records them if retries run out.
    Refusals,
    /// Replays: nothing retries after them.
    Every,
}

impl Stream {
    /// Builds the function from its settings and the AWS configuration.
    pub fn from_settings(settings: &Settings, aws: &aws_config::SdkConfig) -> Self {
        let dynamodb = aws_sdk_dynamodb::Client::new(aws);
        Self {
            configs: ConfigTable::new(dynamodb.clone(), &settings.config_table),
            config_cache: moka::future::Cache::builder()
                .time_to_live(CONFIG_CACHE_TTL)
                .max_capacity(10_000)
                .build(),
            secrets: SecretStore::new(
                aws_sdk_secretsmanager::Client::new(aws),
                &settings.secret_prefix,
            ),
            cloudwatch: CloudWatch::new(aws, &settings.log_group_prefix),
            datadog: DatadogClient::new(settings.datadog_endpoint_override.clone()),
            delivered: moka::sync::Cache::new(DELIVERED_MEMORY),
            events: EventTable::new(dynamodb, &settings.events_table),
            streams: aws_sdk_dynamodbstreams::Client::new(aws),
            sqs: aws_sdk_sqs::Client::new(aws),
            replay_queue_url: settings.replay_queue_url.clone(),
            replay_pages: replay::Pages::default(),
        }
    }

    /// Replays in pages of `size` events, at most `per_invocation` pages before handing on to
    /// the next part (tests use small ones).
    pub fn with_replay_pages(mut self, size: usize, per_invocation: usize) -> Self {
        self.replay_pages = replay::Pages {
            size,
            per_invocation,
        };
        self
    }

    /// Uses this CloudWatch writer (tests: a counted STS client, a short backoff).
    pub fn with_cloudwatch(mut self, cloudwatch: CloudWatch) -> Self {
        self.cloudwatch = cloudwatch;
        self
    }

    /// Uses this Datadog client (tests and local runs: a stand-in, a short timeout).
    pub fn with_datadog(mut self, datadog: DatadogClient) -> Self {
        self.datadog = datadog;
        self
    }

    /// The Lambda entry: stream records to deliver, or messages of the on-failure and replay
    /// queues. Both answers are `{"batchItemFailures": [...]}`.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, lambda_runtime::Error> {
        let (payload, context) = event.into_parts();
        let source = payload["Records"][0]["eventSource"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let response = if source == "aws:sqs" {
            let messages: SqsEvent = serde_json::from_value(payload)?;
            serde_json::to_value(self.handle_queue(LambdaEvent::new(messages, context)).await)?
        } else {
            let records: Event = serde_json::from_value(payload)?;
            serde_json::to_value(self.handle_stream(LambdaEvent::new(records, context)).await)?
        };
        Ok(response)
    }

    pub async fn handle_stream(&self, event: LambdaEvent<Event>) -> DynamoDbEventResponse {
        let deadline = audit_log::retry::deadline_before(event.context.deadline(), REPORT_MARGIN);
        self.deliver(&event.payload.records, deadline).await
    }

    /// Delivers one batch of stream records, retrying inside the invocation until `deadline`.
    pub async fn deliver(
        &self,
        records: &[EventRecord],
        deadline: Instant,
    ) -> DynamoDbEventResponse {
        let mut groups: Vec<((String, String), Vec<Pending>)> = Vec::new();
        let mut index: HashMap<(String, String), usize> = HashMap::new();
        let mut skipped = 0;
        for (position, record) in records.iter().enumerate() {
            if record.event_name != "INSERT" || self.delivered.contains_key(&record.event_id) {
                skipped += 1;
                continue;
            }
            let (event, key) = match event_of(record) {
                Ok(found) => found,
                Err(reason) => {
                    tracing::error!(event_id = record.event_id, %reason, "stored event unreadable; not delivered");
                    continue;
                }
            };
            let project = (
                event.organization_id().to_owned(),
                event.project_id().to_owned(),
            );
            let slot = *index.entry(project.clone()).or_insert_with(|| {
                groups.push((project, Vec::new()));
                groups.len() - 1
            });
            groups[slot].1.push(Pending {
                position,
                event_id: record.event_id.clone(),
                key,
                event,
            });
        }
        let failed: Vec<(usize, DeliveryError)> = futures::stream::iter(groups)
            .map(|((org, project), pending)| self.deliver_group(org, project, pending, deadline))
            .buffer_unordered(CONCURRENT_DESTINATIONS)
            .flat_map(futures::stream::iter)
            .collect()
            .await;
        let first_retryable = failed
            .iter()
            .filter(|(_, e)| e.is_retryable())
            .map(|&(position, _)| position)
            .min();
        let mut response = DynamoDbEventResponse::default();
        if let Some(position) = first_retryable {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = records[position].change.sequence_number.clone();
            response.batch_item_failures.push(failure);
        }
        tracing::info!(
            records = records.len(),
            skipped,
            failed = failed.len(),
            retry_from = first_retryable,
            "stream batch done"
        );
        response
    }

    async fn configuration(
        &self,
        org: &str,
        project: &str,
    ) -> Result<Option<Arc<StreamingConfig>>, DeliveryError> {
        self.config_cache
            .try_get_with((org.to_owned(), project.to_owned()), async {
                self.configs
                    .get(org, project)
                    .await
                    .map(|c| c.map(Arc::new))
            })
            .await
            .map_err(|e| {
                DeliveryError::Retryable(format!("could not read the streaming configuration: {e}"))
            })
    }

    /// Delivers one project's records; returns the batch positions that failed.
    async fn deliver_group(
        &self,
        org: String,
        project: String,
        pending: Vec<Pending>,
        deadline: Instant,
    ) -> Vec<(usize, DeliveryError)> {
        let config = match self.configuration(&org, &project).await {
            Ok(Some(config)) => config,
            Ok(None) => {
                tracing::info!(
                    organization_id = org,
                    project_id = project,
                    events = pending.len(),
                    "no destination configured; events stay stored"
                );
                return Vec::new();
            }
            Err(e) => return pending.iter().map(|p| (p.position, e.clone())).collect(),
        };
        let events: Vec<AuditEvent> = pending.iter().map(|p| p.event.clone()).collect();
        let keys: Vec<StoredKey> = pending.iter().map(|p| p.key.clone()).collect();
        let failures = self
            .deliver_to(
                &org,
                &project,
                &config,
                &events,
                &keys,
                deadline,
                Record::Refusals,
            )
            .await;
        let mut failed_at = vec![false; pending.len()];
        for (i, _) in &failures {
            failed_at[*i] = true;
        }
        for (p, failed) in pending.iter().zip(&failed_at) {
            if !failed {
                self.delivered.insert(p.event_id.clone(), ());
            }
        }
        failures
            .into_iter()
            .map(|(i, e)| (pending[i].position, e))
            .collect()
    }

    /// Delivers a project's events to its destination, records the destination's health and
    /// the failures `record` asks for, and returns the positions that failed.
    #[allow(clippy::too_many_arguments)]
    async fn deliver_to(
        &self,
        org: &str,
        project: &str,
        config: &StreamingConfig,
        events: &[AuditEvent],
        keys: &[StoredKey],
        deadline: Instant,
        record: Record,
    ) -> Failures {
        let failures: Failures = match &config.destination {
            Destination::Cloudwatch(settings) => {
                match self
                    .secrets
                    .get(org, project, config.secret_version.as_deref(), false)
                    .await
                {
                    Ok(credentials) => match &*credentials {
                        Credentials::Cloudwatch {
                            role_arn,
                            external_id,
                        } => {
                            // The role ARN of record is the one stored with its External ID.
                            let settings = CloudWatchSettings {
                                role_arn: role_arn.clone(),
                                region: settings.region.clone(),
                            };
                            self.cloudwatch
                                .deliver(org, project, &settings, external_id, events, deadline)
                                .await
                        }
                        Credentials::Datadog { .. } => all_failed(events.len(), mismatched()),
                    },
                    Err(e) => all_failed(events.len(), credentials_failure(&e)),
                }
            }
            Destination::Datadog(settings) => {
                let keys = ProjectKey {
                    secrets: &self.secrets,
                    configs: &self.configs,
                    organization_id: org,
                    project_id: project,
                    version: config.secret_version.as_deref(),
                };
                self.datadog
                    .deliver(settings.site, &keys, events, deadline)
                    .await
            }
        };
        let report = HealthReport {
            delivered: events.len() - failures.len(),
            failed: failures.len(),
            last_error: failures.first().map(|(_, e)| e.message().to_owned()),
            permanent: failures.first().is_some_and(|(_, e)| !e.is_retryable()),
        };
        if let Err(e) = self.configs.record_health(org, project, &report).await {
            tracing::warn!(organization_id = org, project_id = project, error = %e, "could not record delivery health");
        }
        let provider = config.destination.provider().as_str();
        if failures.is_empty() {
            tracing::info!(
                organization_id = org,
                project_id = project,
                provider,
                delivered = report.delivered,
                "events delivered"
            );
            return failures;
        }
        let retryable = failures.iter().filter(|(_, e)| e.is_retryable()).count();
        tracing::error!(
            organization_id = org,
            project_id = project,
            provider,
            delivered = report.delivered,
            failed = report.failed,
            retryable,
            reason = report.last_error.as_deref().unwrap_or_default(),
            "events not delivered"
        );
        let mut by_reason: HashMap<&str, Vec<StoredKey>> = HashMap::new();
        for (i, e) in &failures {
            if record == Record::Every || !e.is_retryable() {
                by_reason
                    .entry(e.message())
                    .or_default()
                    .push(keys[*i].clone());
            }
        }
        let mut unrecorded: Vec<String> = Vec::new();
        for (reason, failed) in by_reason {
            if let Err(e) = self
                .configs
                .record_failures(org, project, &failed, reason)
                .await
            {
                tracing::error!(organization_id = org, project_id = project, error = %e, events = failed.len(), "could not record failed events");
                unrecorded.push(reason.to_owned());
            }
        }
        if record == Record::Every || unrecorded.is_empty() {
            return failures;
        }
        // A refusal neither delivered nor listed would be lost: Lambda retries it instead.
        failures
            .into_iter()
            .map(|(i, e)| match e {
                e if !e.is_retryable() && unrecorded.iter().any(|r| r == e.message()) => (
                    i,
                    DeliveryError::Retryable(format!(
                        "{} (and the failure could not be recorded)",
                        e.message()
                    )),
                ),
                e => (i, e),
            })
            .collect()
    }
}

/// The audit event a stream record's new image holds (known by its stable id), and where it
/// is stored. Reads the image in place: this runs for every event delivered.
pub fn event_of(record: &EventRecord) -> Result<(AuditEvent, StoredKey), String> {
    use serde_dynamo::AttributeValue as Value;
    let image = record.change.new_image.inner();
    let text = |name: &str| match image.get(name) {
        Some(Value::S(s)) => Ok(s.as_str()),
        _ => Err(format!("the stored event has no `{name}`")),
    };
    let expires_at = match image.get(audit_log::store::attr::EXPIRES_AT) {
        Some(Value::N(n)) => n
            .parse()
            .map_err(|_| "the stored event's TTL is not a number")?,
        _ => return Err("the stored event has no TTL".into()),
    };
    let key = StoredKey {
        sort_key: text(audit_log::store::attr::SORT_KEY)?.to_owned(),
        message_id: text(audit_log::store::attr::MESSAGE_ID)?.to_owned(),
        expires_at,
    };
    let event = match image.get(audit_log::store::attr::EVENT) {
        Some(Value::S(json)) => AuditEvent::from_json(json),
        Some(Value::B(gzip)) => {
            AuditEvent::from_json(&audit_log::store::gunzip(gzip).map_err(|e| e.to_string())?)
        }
        _ => return Err("the stored event has no `event`".into()),
    }
    .map_err(|e| e.to_string())?;
    Ok((event.with_id(key.message_id.clone()), key))
}

fn all_failed(n: usize, error: DeliveryError) -> Failures {
    (0..n).map(|i| (i, error.clone())).collect()
}

fn mismatched() -> DeliveryError {
    DeliveryError::Permanent(
        "the stored credentials belong to another provider than the destination; save the streaming configuration again".into(),
    )
}

fn credentials_failure(e: &CredentialsError) -> DeliveryError {
    if e.is_retryable() {
        DeliveryError::Retryable(e.to_string())
    } else {
        DeliveryError::Permanent(e.to_string())
    }
}

/// A project's Datadog API key, from its secret.
struct ProjectKey<'a> {
    secrets: &'a SecretStore,
    configs: &'a ConfigTable,
    organization_id: &'a str,
    project_id: &'a str,
    /// The secret version saved with the configuration.
    version: Option<&'a str>,
}

impl ApiKeySource for ProjectKey<'_> {
    async fn api_key(&self, refresh: bool) -> Result<SecretString, DeliveryError> {
        // A refused key may have been rotated since the configuration was cached: a fresh read
        // takes the secret version the configuration names now.
        let fresh = if refresh {
            self.configs
                .get(self.organization_id, self.project_id)
                .await
                .map_err(|e| {
                    DeliveryError::Retryable(format!(
                        "could not read the streaming configuration: {e}"
                    ))
                })?
                .and_then(|c| c.secret_version)
        } else {
            None
        };
        let version = fresh.as_deref().or(self.version);
        let credentials = self
            .secrets
            .get(self.organization_id, self.project_id, version, refresh)
            .await
            .map_err(|e| credentials_failure(&e))?;
        match &*credentials {
            Credentials::Datadog { api_key } => Ok(api_key.clone()),
            Credentials::Cloudwatch { .. } => Err(mismatched()),
        }
    }
}

impl Stream {
    /// Messages of the on-failure queue (stream batches whose retries ran out) and of the
    /// replay queue. A message that cannot be handled is reported, so SQS keeps it and finally
    /// dead-letters it: nothing leaves either queue unrecorded.
    pub async fn handle_queue(
        &self,
        event: LambdaEvent<SqsEvent>,
    ) -> aws_lambda_events::event::sqs::SqsBatchResponse {
        let deadline = audit_log::retry::deadline_before(event.context.deadline(), REPORT_MARGIN);
        let mut response = aws_lambda_events::event::sqs::SqsBatchResponse::default();
        for message in event.payload.records {
            let id = message.message_id.clone().unwrap_or_default();
            let body: Value = serde_json::from_str(message.body.as_deref().unwrap_or_default())
                .unwrap_or(Value::Null);
            let outcome = if body.get("DDBStreamBatchInfo").is_some() {
                self.record_exhausted(&body).await
            } else if body.get("replay_id").is_some() {
                self.continue_replay(&body, deadline).await
            } else {
                Err(
                    "the message is neither a stream batch whose retries ran out nor a replay"
                        .to_owned(),
                )
            };
            if let Err(reason) = outcome {
                tracing::error!(message_id = id, %reason, "queue message not handled; SQS will deliver it again");
                let mut failure = aws_lambda_events::event::sqs::BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use audit_log::Retention;
    use audit_log::fixtures::SEED_EVENTS;
    use audit_log::store::StoredEvent;

    fn record_of(event: &AuditEvent, message_id: &str) -> EventRecord {
        let stored = StoredEvent::new(message_id, event, Retention::default()).unwrap();
        let mut record = EventRecord::default();
        record.event_name = "INSERT".into();
        record.change.new_image = stored.item.into();
        record
    }

    #[test]
    fn small_and_compressed_stored_events_come_back_whole_with_their_id_and_key() {
        let small = AuditEvent::from_json(SEED_EVENTS[2].1).unwrap();
        let mut big = small.clone().into_value();
        big["padding"] = serde_json::json!("x".repeat(100_000));
        let big = AuditEvent::from_value(big).unwrap();
        for (event, id) in [(small, "m-small"), (big, "m-big")] {
            let (back, key) = event_of(&record_of(&event, id)).unwrap();
            assert_eq!(back.to_compact_json(), event.to_compact_json());
            assert_eq!(back.id(), Some(id));
            assert_eq!(key.message_id, id);
            assert!(key.sort_key.ends_with(id));
            assert_eq!(
                key.expires_at,
                event.timestamp().unix_timestamp() + 400 * 86_400
            );
        }
    }

    #[test]
    fn an_image_without_an_event_is_reported_not_delivered() {
        let mut record = EventRecord::default();
        record.event_name = "INSERT".into();
        assert!(event_of(&record).is_err());
    }
}
