//! stream: events table stream → each organization's destination, one lane per destination.
//!
//! Only `INSERT` records are events to deliver (a TTL expiry is a `REMOVE` and must never look
//! like one). Records are grouped by organization and project, and each group goes to its
//! destination's lane (`audit_log::lane`): a delivering lane sends them within a short budget,
//! any other lane keeps them owed. A destination's outage, refusal or pause therefore never
//! fails a stream record: the shard moves on, and the lane catches up by itself through its
//! scheduled calls (the lanes queue). A project without a destination keeps its events stored
//! and is not a failure.
//!
//! Only the service's own trouble (its tables or queues failing) reports a record to Lambda,
//! which retries from there; batches whose retries run out come back through the on-failure
//! queue (`exhausted.rs`) and go through the lanes again.
//!
//! The same function runs replays (the replay queue, `replay.rs`).

use audit_log::AuditEvent;
use audit_log::clock::{Clock, SystemClock};
use audit_log::credentials::SecretStore;
use audit_log::destination::DestinationClients;
use audit_log::destination::cloudwatch::CloudWatch;
use audit_log::destination::datadog::DatadogClient;
use audit_log::lane::timers::SqsTimers;
use audit_log::lane::{LaneCall, LaneKey, Lanes, Policy};
use audit_log::message::QueueMessage;
use audit_log::settings::{
    DEFAULT_LOG_GROUP_PREFIX, SettingsError, env, optional_env, required_env,
};
use audit_log::store::{EventTable, StoredKey};
use audit_log::streaming::ConfigTable;

mod exhausted;
mod invocation;
mod replay;
mod sink;
use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::sqs::SqsEvent;
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use futures::StreamExt;
pub use invocation::{Answer, Invocation};
use lambda_runtime::LambdaEvent;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What `template.yaml` gives the function. `DATADOG_ENDPOINT_OVERRIDE` is for local runs only.
pub const ENVIRONMENT: [&str; 9] = [
    env::CONFIG_TABLE,
    env::EVENTS_TABLE,
    env::SECRET_PREFIX,
    env::LOG_GROUP_PREFIX,
    env::REPLAY_QUEUE,
    env::LANE_QUEUE,
    env::RETENTION_DAYS,
    env::RETRY_WINDOW,
    env::MAX_BACKOFF,
];

/// Delivered or owed records remembered per container, to skip them when Lambda retries a
/// batch after the service's own trouble.
const HANDLED_MEMORY: u64 = 200_000;
/// Destinations served at once. Each waits at most the lanes' budget.
const CONCURRENT_DESTINATIONS: usize = 32;
const REPORT_MARGIN: Duration = Duration::from_secs(1);

/// The function's settings, from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_table: String,
    pub events_table: String,
    pub secret_prefix: String,
    pub log_group_prefix: String,
    pub replay_queue_url: String,
    pub lane_queue_url: String,
    pub lanes: Policy,
    pub datadog_endpoint_override: Option<String>,
}

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Ok(Self {
            config_table: required_env(env::CONFIG_TABLE)?,
            events_table: required_env(env::EVENTS_TABLE)?,
            secret_prefix: required_env(env::SECRET_PREFIX)?,
            log_group_prefix: optional_env(env::LOG_GROUP_PREFIX)
                .unwrap_or_else(|| DEFAULT_LOG_GROUP_PREFIX.to_owned()),
            replay_queue_url: required_env(env::REPLAY_QUEUE)?,
            lane_queue_url: required_env(env::LANE_QUEUE)?,
            lanes: Policy::from_env(audit_log::Retention::from_env()?)?,
            datadog_endpoint_override: optional_env(env::DATADOG_ENDPOINT_OVERRIDE),
        })
    }
}

pub struct Stream {
    configs: ConfigTable,
    secrets: SecretStore,
    destinations: DestinationClients,
    handled: moka::sync::Cache<String, ()>,
    events: EventTable,
    streams: aws_sdk_dynamodbstreams::Client,
    sqs: aws_sdk_sqs::Client,
    replay_queue_url: String,
    replay_pages: replay::Pages,
    timers: SqsTimers,
    policy: Policy,
    clock: Arc<dyn Clock>,
}

/// A record on its way out: where it sits in the batch and the event it carries.
struct Pending {
    position: usize,
    event_id: String,
    key: StoredKey,
    event: AuditEvent,
}

impl Stream {
    /// Builds the function from its settings and the AWS configuration.
    pub fn from_settings(settings: &Settings, aws: &aws_config::SdkConfig) -> Self {
        let dynamodb = aws_sdk_dynamodb::Client::new(aws);
        let sqs = aws_sdk_sqs::Client::new(aws);
        Self {
            configs: ConfigTable::new(dynamodb.clone(), &settings.config_table),
            secrets: SecretStore::new(
                aws_sdk_secretsmanager::Client::new(aws),
                &settings.secret_prefix,
            ),
            destinations: DestinationClients {
                cloudwatch: CloudWatch::new(aws, &settings.log_group_prefix),
                datadog: DatadogClient::new(settings.datadog_endpoint_override.clone()),
            },
            handled: moka::sync::Cache::new(HANDLED_MEMORY),
            events: EventTable::new(dynamodb, &settings.events_table),
            streams: aws_sdk_dynamodbstreams::Client::new(aws),
            timers: SqsTimers::new(sqs.clone(), &settings.lane_queue_url),
            sqs,
            replay_queue_url: settings.replay_queue_url.clone(),
            replay_pages: replay::Pages::default(),
            policy: settings.lanes.clone(),
            clock: Arc::new(SystemClock),
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
        self.destinations.cloudwatch = cloudwatch;
        self
    }

    /// Uses this Datadog client (tests and local runs: a stand-in, a short timeout).
    pub fn with_datadog(mut self, datadog: DatadogClient) -> Self {
        self.destinations.datadog = datadog;
        self
    }

    /// Uses these lane timings (tests and local runs: compressed outages).
    pub fn with_lanes(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    fn lanes(&self) -> Lanes<'_, ConfigTable, SqsTimers, dyn Clock> {
        Lanes {
            store: &self.configs,
            timers: &self.timers,
            clock: &*self.clock,
            policy: &self.policy,
        }
    }

    /// The Lambda entry: stream records to deliver, or messages of the on-failure, replay and
    /// lanes queues. Both answers are `{"batchItemFailures": [...]}`.
    pub async fn handle(
        &self,
        event: LambdaEvent<Invocation>,
    ) -> Result<Answer, std::convert::Infallible> {
        let (payload, context) = event.into_parts();
        Ok(match payload {
            Invocation::Queue(messages) => {
                Answer::Queue(self.handle_queue(LambdaEvent::new(messages, context)).await)
            }
            Invocation::Stream(records) => {
                Answer::Stream(self.handle_stream(LambdaEvent::new(records, context)).await)
            }
        })
    }

    pub async fn handle_stream(&self, event: LambdaEvent<Event>) -> DynamoDbEventResponse {
        let deadline = audit_log::retry::deadline_before(event.context.deadline(), REPORT_MARGIN);
        self.deliver(&event.payload.records, deadline).await
    }

    /// Hands one batch of stream records to their destinations' lanes. Only the service's own
    /// trouble reports a record for Lambda to retry from.
    pub async fn deliver(
        &self,
        records: &[EventRecord],
        deadline: Instant,
    ) -> DynamoDbEventResponse {
        let mut groups: Vec<(LaneKey, Vec<Pending>)> = Vec::new();
        let mut index: HashMap<LaneKey, usize> = HashMap::new();
        let mut skipped = 0;
        for (position, record) in records.iter().enumerate() {
            if record.event_name != "INSERT" || self.handled.contains_key(&record.event_id) {
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
            let lane = LaneKey::new(event.organization_id(), event.project_id());
            let slot = *index.entry(lane.clone()).or_insert_with(|| {
                groups.push((lane, Vec::new()));
                groups.len() - 1
            });
            groups[slot].1.push(Pending {
                position,
                event_id: record.event_id.clone(),
                key,
                event,
            });
        }
        let failed: Vec<usize> = futures::stream::iter(groups)
            .map(|(lane, pending)| self.deliver_group(lane, pending, deadline))
            .buffer_unordered(CONCURRENT_DESTINATIONS)
            .flat_map(futures::stream::iter)
            .collect()
            .await;
        let first_failed = failed.iter().copied().min();
        let mut response = DynamoDbEventResponse::default();
        if let Some(position) = first_failed {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = records[position].change.sequence_number.clone();
            response.batch_item_failures.push(failure);
        }
        tracing::info!(
            records = records.len(),
            skipped,
            failed = failed.len(),
            retry_from = first_failed,
            "stream batch done"
        );
        response
    }

    /// One project's records, through its lane; returns the batch positions the service
    /// could not handle.
    async fn deliver_group(
        &self,
        lane: LaneKey,
        pending: Vec<Pending>,
        deadline: Instant,
    ) -> Vec<usize> {
        let (org, project) = (&lane.organization_id, &lane.project_id);
        // Read at every batch: a save takes effect with the next delivery after it.
        let config = match self.configs.get(org, project).await {
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
            Err(e) => {
                tracing::error!(organization_id = org, project_id = project, error = %e, "could not read the streaming configuration");
                return pending.iter().map(|p| p.position).collect();
            }
        };
        let events = pending
            .iter()
            .map(|p| (p.key.clone(), p.event.clone()))
            .collect();
        let sink = self.sink(&config);
        match self
            .lanes()
            .live(&lane, &config.lane, events, &*sink, deadline)
            .await
        {
            Ok(outcome) => {
                for p in &pending {
                    self.handled.insert(p.event_id.clone(), ());
                }
                tracing::info!(
                    organization_id = org,
                    project_id = project,
                    provider = config.destination.provider().as_str(),
                    delivered = outcome.delivered,
                    owed = outcome.owed,
                    rejected = outcome.rejected,
                    lane = outcome.entered.unwrap_or(config.lane.state).as_str(),
                    "events handed to their lane"
                );
                Vec::new()
            }
            Err(e) => {
                tracing::error!(organization_id = org, project_id = project, error = %e, "events could not be handed to their lane; Lambda retries them");
                pending.iter().map(|p| p.position).collect()
            }
        }
    }

    /// A lane's scheduled call: a probe, a page of catching up, or housekeeping.
    async fn run_lane_call(&self, call: &LaneCall, deadline: Instant) -> Result<(), String> {
        let key = &call.lane;
        let config = self
            .configs
            .get(&key.organization_id, &key.project_id)
            .await
            .map_err(|e| e.to_string())?;
        let sink = config.as_ref().map(|config| self.sink(config));
        let target = config
            .as_ref()
            .zip(sink.as_deref())
            .map(|(c, s)| (&c.lane, s));
        let outcome = self
            .lanes()
            .call(call, target, &self.events, deadline)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(
            organization_id = key.organization_id,
            project_id = key.project_id,
            delivered = outcome.delivered,
            expired = outcome.expired,
            rejected = outcome.rejected,
            lane = outcome.entered.map(|s| s.as_str()),
            skipped = outcome.skipped,
            "lane call done"
        );
        Ok(())
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

impl Stream {
    /// Messages of the lanes queue, the on-failure queue (stream batches whose retries ran out)
    /// and the replay queue. A message that cannot be handled is reported, so SQS keeps it and finally
    /// dead-letters it: nothing leaves either queue unrecorded.
    pub async fn handle_queue(
        &self,
        event: LambdaEvent<SqsEvent>,
    ) -> aws_lambda_events::event::sqs::SqsBatchResponse {
        let deadline = audit_log::retry::deadline_before(event.context.deadline(), REPORT_MARGIN);
        let mut response = aws_lambda_events::event::sqs::SqsBatchResponse::default();
        for message in event.payload.records {
            let id = message.message_id.clone().unwrap_or_default();
            let outcome = match QueueMessage::parse(message.body.as_deref().unwrap_or_default()) {
                Ok(QueueMessage::LaneCall(m)) => self.run_lane_call(&m.lane_call, deadline).await,
                Ok(QueueMessage::Exhausted(batch)) => {
                    self.redeliver_exhausted(&batch, deadline).await
                }
                Ok(QueueMessage::Replay(part)) => self.continue_replay(&part, deadline).await,
                Err(e) => Err(e.to_string()),
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
