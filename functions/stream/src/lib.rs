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
//! The service's own trouble with one project (its organization's share of the configuration
//! table throttled, say) defers that project's events to the deferred queue, to be handed to
//! its lane later (`delivery/deferred.rs`), so it holds back no other tenant on the shard. Only
//! when that queue refuses them too is a record reported to Lambda, which retries from there;
//! batches whose retries run out come back through the on-failure queue (`exhausted.rs`) and
//! go through the lanes again.
//!
//! The same function runs replays (the replay queue, `replay.rs`), and the schedule's sweep of
//! lanes whose scheduled call was lost (`Delivery::sweep`).

use audit_log::clock::SystemClock;
use audit_log::credentials::SecretStore;
use audit_log::destination::DestinationClients;
use audit_log::destination::cloudwatch::CloudWatch;
use audit_log::destination::datadog::DatadogClient;
use audit_log::lane::Policy;
use audit_log::lane::timers::SqsTimers;
use audit_log::message::QueueMessage;
use audit_log::settings::{
    SettingsError, datadog_endpoint_override_from_env, env, log_group_prefix_from_env, required_env,
};
use audit_log::store::EventTable;
use audit_log::streaming::ConfigTable;

mod delivery;
mod exhausted;
mod invocation;
mod records;
mod replay;
pub use replay::Pages as ReplayPages;
mod sink;
use aws_lambda_events::event::sqs::SqsEvent;
use aws_lambda_events::event::streams::DynamoDbEventResponse;
pub use delivery::{Delivery, event_of};
pub use invocation::{Answer, Invocation, Swept};
use lambda_runtime::LambdaEvent;
pub use records::{Attribute, Change, Image, StreamRecord, StreamRecords};
pub use sink::SavedDestinations;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What `template.yaml` gives the function. `DATADOG_ENDPOINT_OVERRIDE` is for local runs only.
pub const ENVIRONMENT: [&str; 11] = [
    env::CONFIG_TABLE,
    env::EVENTS_TABLE,
    env::EVENTS_STREAM,
    env::SECRET_PREFIX,
    env::LOG_GROUP_PREFIX,
    env::REPLAY_QUEUE,
    env::LANE_QUEUE,
    env::DEFERRED_QUEUE,
    env::RETENTION_DAYS,
    env::RETRY_WINDOW,
    env::MAX_BACKOFF,
];

const REPORT_MARGIN: Duration = Duration::from_secs(1);

/// The function's settings, from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_table: String,
    pub events_table: String,
    pub events_stream_arn: String,
    pub secret_prefix: String,
    pub log_group_prefix: String,
    pub replay_queue_url: String,
    pub lane_queue_url: String,
    pub deferred_queue_url: String,
    pub lanes: Policy,
    pub datadog_endpoint_override: Option<String>,
}

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Ok(Self {
            config_table: required_env(env::CONFIG_TABLE)?,
            events_table: required_env(env::EVENTS_TABLE)?,
            events_stream_arn: required_env(env::EVENTS_STREAM)?,
            secret_prefix: required_env(env::SECRET_PREFIX)?,
            log_group_prefix: log_group_prefix_from_env()?,
            replay_queue_url: required_env(env::REPLAY_QUEUE)?,
            lane_queue_url: required_env(env::LANE_QUEUE)?,
            deferred_queue_url: required_env(env::DEFERRED_QUEUE)?,
            lanes: Policy::from_env()?,
            datadog_endpoint_override: datadog_endpoint_override_from_env()?,
        })
    }
}

/// The function: live delivery over the service's own table, queues and destinations, and what
/// only the real services give (the stream read back, replays queued in parts).
pub struct Stream {
    delivery: Delivery,
    streams: aws_sdk_dynamodbstreams::Client,
    events_stream_arn: String,
    sqs: aws_sdk_sqs::Client,
    replay_queue_url: String,
    replay_pages: ReplayPages,
}

impl Stream {
    /// Builds the function from its settings and the AWS configuration.
    pub fn from_settings(settings: &Settings, aws: &aws_config::SdkConfig) -> Self {
        let dynamodb = aws_sdk_dynamodb::Client::new(aws);
        let sqs = aws_sdk_sqs::Client::new(aws);
        let configs = ConfigTable::new(dynamodb.clone(), &settings.config_table);
        let destinations = SavedDestinations {
            clients: DestinationClients {
                cloudwatch: CloudWatch::new(aws, &settings.log_group_prefix),
                datadog: DatadogClient::new(settings.datadog_endpoint_override.clone()),
            },
            secrets: SecretStore::new(
                aws_sdk_secretsmanager::Client::new(aws),
                &settings.secret_prefix,
            ),
            configs: configs.clone(),
        };
        Self {
            delivery: Delivery::new(
                configs,
                SqsTimers::new(sqs.clone(), &settings.lane_queue_url)
                    .deferring_to(&settings.deferred_queue_url),
                EventTable::new(dynamodb, &settings.events_table),
                destinations,
                settings.lanes.clone(),
                Arc::new(SystemClock),
            ),
            streams: aws_sdk_dynamodbstreams::Client::new(aws),
            events_stream_arn: settings.events_stream_arn.clone(),
            sqs,
            replay_queue_url: settings.replay_queue_url.clone(),
            replay_pages: ReplayPages::default(),
        }
    }

    /// Replays cut and paced this way (tests use small pages and short waits).
    pub fn with_replay_pages(mut self, pages: ReplayPages) -> Self {
        self.replay_pages = pages;
        self
    }

    /// Uses this CloudWatch writer (tests: a counted STS client, a short backoff).
    pub fn with_cloudwatch(mut self, cloudwatch: CloudWatch) -> Self {
        self.delivery.destinations.clients.cloudwatch = cloudwatch;
        self
    }

    /// Uses this Datadog client (tests and local runs: a stand-in, a short timeout).
    pub fn with_datadog(mut self, datadog: DatadogClient) -> Self {
        self.delivery.destinations.clients.datadog = datadog;
        self
    }

    /// Reaches the configuration table this way (tests: a client whose writes fail).
    pub fn with_config_table(mut self, configs: ConfigTable) -> Self {
        self.delivery.destinations.configs = configs.clone();
        self.delivery.configs = configs;
        self
    }

    /// Uses this clock for the lanes' schedule (tests: another Lambda's clock, a little off).
    pub fn with_clock(mut self, clock: Arc<dyn audit_log::clock::Clock>) -> Self {
        self.delivery.clock = clock;
        self
    }

    /// Uses these lane timings (tests and local runs: compressed outages).
    pub fn with_lanes(mut self, policy: Policy) -> Self {
        self.delivery.policy = policy;
        self
    }

    /// The Lambda entry: stream records to deliver, or messages of the on-failure, replay and
    /// lanes queues. Both answers are `{"batchItemFailures": [...]}`.
    /// The schedule's call sweeps the lanes; its failure is the invocation's (counted in the
    /// function's errors), and the next call sweeps again.
    pub async fn handle(
        &self,
        event: LambdaEvent<Invocation>,
    ) -> Result<Answer, lambda_runtime::Error> {
        let (payload, context) = event.into_parts();
        Ok(match payload {
            Invocation::Queue(messages) => {
                Answer::Queue(self.handle_queue(LambdaEvent::new(messages, context)).await)
            }
            Invocation::Stream(records) => {
                Answer::Stream(self.handle_stream(LambdaEvent::new(records, context)).await)
            }
            Invocation::Sweep => {
                let deadline = audit_log::retry::deadline_before(context.deadline(), REPORT_MARGIN);
                let lanes = self.delivery.sweep(deadline).await.inspect_err(
                    |reason| tracing::error!(%reason, "the lanes could not be swept"),
                )?;
                Answer::Sweep(Swept { lanes })
            }
        })
    }

    pub async fn handle_stream(&self, event: LambdaEvent<StreamRecords>) -> DynamoDbEventResponse {
        let deadline = audit_log::retry::deadline_before(event.context.deadline(), REPORT_MARGIN);
        self.deliver(&event.payload.records, deadline).await
    }

    /// Hands one batch of stream records to their destinations' lanes.
    pub async fn deliver(
        &self,
        records: &[StreamRecord],
        deadline: Instant,
    ) -> DynamoDbEventResponse {
        self.delivery.deliver(records, deadline).await
    }
}

impl Stream {
    /// Messages of the lanes queue (lane calls), the deferred queue, the on-failure queue
    /// (stream batches whose retries ran out) and the replay queue. A message that cannot be
    /// handled is reported, so SQS keeps it and finally dead-letters it (a dead-lettered lane
    /// call is made again by the sweep; deferred events wait for a redrive, under their
    /// alarm): nothing leaves a queue unrecorded.
    pub async fn handle_queue(
        &self,
        event: LambdaEvent<SqsEvent>,
    ) -> aws_lambda_events::event::sqs::SqsBatchResponse {
        let deadline = audit_log::retry::deadline_before(event.context.deadline(), REPORT_MARGIN);
        let mut response = aws_lambda_events::event::sqs::SqsBatchResponse::default();
        for message in event.payload.records {
            let id = message.message_id.clone().unwrap_or_default();
            let outcome = match QueueMessage::parse(message.body.as_deref().unwrap_or_default()) {
                Ok(QueueMessage::LaneCall(m)) => {
                    self.delivery.run_lane_call(&m.lane_call, deadline).await
                }
                Ok(QueueMessage::Deferred(m)) => {
                    self.delivery.deliver_deferred(&m.deferred, deadline).await
                }
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
