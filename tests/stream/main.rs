//! stream against the local AWS emulator (events captured for real, records read from the
//! table's real stream) and a local HTTP server standing in for Datadog.

mod cloudwatch;
mod datadog;
mod lanes;
mod template;

use audit_log::credentials::{Credentials, SecretStore};
use audit_log::destination::datadog::DatadogClient;
use audit_log::destination::{
    CloudWatchSettings, DatadogSettings, DatadogSite, Destination, Project, Sink,
};
use audit_log::retry::Backoff;
use audit_log::store::EventTable;
use audit_log::streaming::{ConfigTable, Configurations, FailureLog, NewConfig};
use audit_log::{AuditEvent, Retention};
use audit_log_capture::Capture;
use audit_log_stream::{Stream, StreamRecord};
use audit_log_tests::{
    as_sent, create_table, emulator, environment_of, new_queue, resource, sqs_batch,
    stream_records, unique,
};
use aws_sdk_dynamodb::types::AttributeValue;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const ROLE_ARN: &str = "arn:aws:iam::111111111111:role/hcp-log-streaming";
const CUSTOMER_REGION: &str = "us-west-2";
const KEY: &str = audit_log_tests::SENTINEL_API_KEY;
/// A second organization's Datadog key.
const B_KEY: &str = "0123456789abcdef0123456789abcdef";

struct World {
    aws: aws_config::SdkConfig,
    config_table: String,
    dynamodb: aws_sdk_dynamodb::Client,
    events_table: String,
    configs: ConfigTable,
    secret_prefix: String,
    /// The API's view of the secrets; the stream function has its own (and its own cache).
    secrets: SecretStore,
    capture: Capture,
    prefix: String,
    lane_queue: String,
}

fn fast() -> Backoff {
    Backoff {
        base: Duration::from_millis(5),
        max: Duration::from_millis(20),
    }
}

/// Lanes on a test's time scale: outages found within two seconds, probes a second apart. A
/// loaded test machine is no slow destination: only the test of slow destinations sets them
/// aside.
fn lanes() -> audit_log::lane::Policy {
    audit_log::lane::Policy {
        first_backoff: Duration::from_millis(200),
        budget: Duration::from_secs(2),
        catch_up_budget: Duration::from_secs(4),
        slow_after: Duration::MAX,
        deferral: Duration::from_secs(1),
        ..audit_log::lane::Policy::new(Duration::from_secs(3600), Duration::from_secs(1))
    }
}

/// Whether the stream function handed every record on (reported none for Lambda to retry).
async fn handed_on(stream: &Stream, records: &[StreamRecord]) -> bool {
    stream
        .deliver(records, soon())
        .await
        .batch_item_failures
        .is_empty()
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

/// What a live stream that keeps to its lane's budget may take at most: the budget and its own
/// calls to the emulator before and after (configuration, secret, lane, what it owes), a few
/// hundred milliseconds idle and up to two seconds on a loaded machine; less than the catch-up
/// budget, or the budget twice, which a stream that kept to neither would take.
fn within_the_budget(took: Duration) -> bool {
    let lanes = lanes();
    took < lanes.catch_up_budget.min(lanes.budget * 2)
}

impl World {
    async fn new() -> Self {
        let aws = emulator().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
        let events_table = create_table(&dynamodb, "EventsTable").await;
        let config_table = create_table(&dynamodb, "ConfigTable").await;
        let secret_prefix = format!("{}/streaming/", unique("stack"));
        let secrets = SecretStore::new(aws_sdk_secretsmanager::Client::new(&aws), &secret_prefix);
        let capture = Capture::new(
            EventTable::new(dynamodb.clone(), &events_table),
            ConfigTable::new(dynamodb.clone(), &config_table),
            Retention::default(),
        );
        let lane_queue = new_queue(&aws_sdk_sqs::Client::new(&aws), "lanes").await;
        Self {
            lane_queue,
            configs: ConfigTable::new(dynamodb.clone(), &config_table),
            config_table,
            aws,
            dynamodb,
            events_table,
            secret_prefix,
            secrets,
            capture,
            prefix: format!("/{}", unique("hashicorp")),
        }
    }

    fn settings(&self) -> audit_log_stream::Settings {
        audit_log_stream::Settings {
            config_table: self.config_table.clone(),
            events_table: self.events_table.clone(),
            // No batch here runs out of retries.
            events_stream_arn: "arn:aws:dynamodb:us-east-1:123456789012:table/none/stream/0".into(),
            secret_prefix: self.secret_prefix.clone(),
            log_group_prefix: self.prefix.clone(),
            replay_queue_url: "http://127.0.0.1:1/no-replays-here".into(),
            lane_queue_url: self.lane_queue.clone(),
            // One queue here: its runner hands every message to the function alike.
            deferred_queue_url: self.lane_queue.clone(),
            lanes: lanes(),
            datadog_endpoint_override: None,
        }
    }

    fn stream_with(&self, datadog: DatadogClient) -> Stream {
        Stream::from_settings(&self.settings(), &self.aws)
            .with_cloudwatch(
                audit_log::destination::cloudwatch::CloudWatch::new(&self.aws, &self.prefix)
                    .with_backoff(fast()),
            )
            .with_datadog(datadog.with_backoff(fast()))
    }

    fn stream(&self) -> Stream {
        self.stream_with(DatadogClient::new(None))
    }

    /// The lanes queue's event source mapping: runs the calls that come due until `done`
    /// holds or `patience` runs out (calls are delayed messages: real time must pass).
    async fn run_lane_calls(
        &self,
        stream: &Stream,
        patience: Duration,
        done: impl AsyncFn() -> bool,
    ) -> bool {
        let sqs = aws_sdk_sqs::Client::new(&self.aws);
        let until = Instant::now() + patience;
        while Instant::now() < until {
            if done().await {
                return true;
            }
            let messages = sqs
                .receive_message()
                .queue_url(&self.lane_queue)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap()
                .messages
                .unwrap_or_default();
            if messages.is_empty() {
                continue;
            }
            let batch = audit_log_tests::sqs_batch(messages.iter().map(|m| {
                (
                    m.message_id.clone().unwrap_or_default(),
                    m.body.as_deref().unwrap_or_default(),
                )
            }));
            // The template's timeout.
            let context = audit_log_tests::invocation_context(Duration::from_secs(60));
            let response = stream
                .handle_queue(lambda_runtime::LambdaEvent::new(batch, context))
                .await;
            assert!(response.batch_item_failures.is_empty(), "lane calls fail");
            for m in &messages {
                sqs.delete_message()
                    .queue_url(&self.lane_queue)
                    .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                    .send()
                    .await
                    .unwrap();
            }
        }
        done().await
    }

    /// Runs the lanes' calls until the project's lane retries its destination's outage (at once
    /// if it does already): a loaded emulator can spend a live delivery's budget reading the
    /// destination's secret, and the lane then catches up in a call of its own, which meets the
    /// outage too.
    async fn until_retrying(&self, stream: &Stream, org: &str, project: &str) {
        let retrying = self
            .run_lane_calls(stream, Duration::from_secs(20), async || {
                self.lane(org, project).await.state == audit_log::lane::LaneState::Retrying
            })
            .await;
        assert!(retrying, "the lane retries its destination's outage");
    }

    /// Every call on the lanes queue is lost (as if dead-lettered).
    async fn lose_lane_calls(&self) {
        aws_sdk_sqs::Client::new(&self.aws)
            .purge_queue()
            .queue_url(&self.lane_queue)
            .send()
            .await
            .unwrap();
    }

    /// The lane's next attempt was due `ago` before now: the table as it is that long after
    /// its call was lost.
    async fn lane_due_ago(&self, org: &str, project: &str, ago: Duration) {
        let lane = self.lane(org, project).await;
        let due = lane.next_attempt_at.expect("the lane waits for a call") - ago.as_millis() as i64;
        let due = AttributeValue::N(due.to_string());
        self.set_lane(
            org,
            project,
            audit_log::streaming::lane_attr::NEXT_ATTEMPT_AT,
            due,
        )
        .await;
    }

    /// The lane's state as stored before the lanes' index had shards: its name alone.
    async fn lane_stored_before_shards(&self, org: &str, project: &str) {
        let state = self.lane(org, project).await.state.as_str();
        let state = AttributeValue::S(state.into());
        self.set_lane(org, project, audit_log::streaming::lane_attr::STATE, state)
            .await;
    }

    fn project_key(org: &str, project: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (
                "pk".into(),
                AttributeValue::S(audit_log::store::key_part(org)),
            ),
            (
                "sk".into(),
                AttributeValue::S(format!(
                    "project#{}",
                    audit_log::store::sort_key_part(project)
                )),
            ),
        ])
    }

    async fn set_lane(&self, org: &str, project: &str, attribute: &str, value: AttributeValue) {
        self.dynamodb
            .update_item()
            .table_name(&self.config_table)
            .set_key(Some(Self::project_key(org, project)))
            .update_expression("SET #a = :v")
            .expression_attribute_names("#a", attribute)
            .expression_attribute_values(":v", value)
            .send()
            .await
            .unwrap();
    }

    /// The lane's state as its item holds it.
    async fn stored_lane_state(&self, org: &str, project: &str) -> String {
        let item = self
            .dynamodb
            .get_item()
            .table_name(&self.config_table)
            .set_key(Some(Self::project_key(org, project)))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
            .unwrap();
        item[audit_log::streaming::lane_attr::STATE]
            .as_s()
            .unwrap()
            .clone()
    }

    /// Captures events and returns the stream records that are new since `seen`.
    async fn capture_more(&self, events: &[Value], seen: &[StreamRecord]) -> Vec<StreamRecord> {
        let all = self.capture(events).await;
        all.into_iter()
            .filter(|r| !seen.iter().any(|f| f.event_id == r.event_id))
            .collect()
    }

    async fn lane(&self, org: &str, project: &str) -> audit_log::lane::Lane {
        self.configs.get(org, project).await.unwrap().unwrap().lane
    }

    async fn capture(&self, events: &[Value]) -> Vec<StreamRecord> {
        let batch: Vec<(String, String)> = events
            .iter()
            .map(|e| (unique("msg"), e.to_string()))
            .collect();
        let sqs = sqs_batch(batch.iter().map(|(id, body)| (id.clone(), body.as_str())));
        let response = self
            .capture
            .capture(sqs.records, soon())
            .await
            .expect("captured");
        assert!(response.batch_item_failures.is_empty());
        as_sent(&stream_records(&self.aws, &self.dynamodb, &self.events_table).await)
    }

    async fn configure_cloudwatch(&self, org: &str, project: &str) {
        let secret_version = self
            .secrets
            .put(
                org,
                project,
                &Credentials::Cloudwatch {
                    role_arn: ROLE_ARN.into(),
                    external_id: SecretString::from(audit_log_tests::SENTINEL_EXTERNAL_ID),
                },
            )
            .await
            .unwrap();
        self.save(
            org,
            project,
            NewConfig {
                name: "prod-audit".into(),
                destination: Destination::Cloudwatch(CloudWatchSettings {
                    role_arn: ROLE_ARN.into(),
                    region: CUSTOMER_REGION.into(),
                }),
                api_key_last4: None,
                secret_version: Some(secret_version),
                same_destination: false,
                save: NewConfig::new_save(),
            },
        )
        .await;
    }

    async fn configure_datadog(&self, org: &str, project: &str, key: &str) {
        audit_log_tests::watch_secret(key);
        let secret_version = self
            .secrets
            .put(
                org,
                project,
                &Credentials::Datadog {
                    api_key: SecretString::from(key.to_owned()),
                },
            )
            .await
            .unwrap();
        self.save(
            org,
            project,
            NewConfig {
                name: "dd-eu".into(),
                destination: Destination::Datadog(DatadogSettings {
                    site: DatadogSite::Eu1,
                }),
                api_key_last4: Some(key[key.len() - 4..].to_owned()),
                secret_version: Some(secret_version),
                same_destination: false,
                save: NewConfig::new_save(),
            },
        )
        .await;
    }

    /// Saves over whatever is saved.
    async fn save(&self, org: &str, project: &str, new: NewConfig) {
        let read = self
            .configs
            .get(org, project)
            .await
            .unwrap()
            .map_or(0, |c| c.version);
        self.configs
            .save(org, project, new, read, time::OffsetDateTime::now_utc())
            .await
            .unwrap();
    }

    async fn customer_logs(&self) -> aws_sdk_cloudwatchlogs::Client {
        audit_log_tests::customer_logs(&self.aws, ROLE_ARN, CUSTOMER_REGION).await
    }
}

/// An event of `org`'s `project`, `seconds_ago` before now (within every destination's window).
fn recent(org: &str, project: &str, seconds_ago: u64, status: &str) -> Value {
    let t =
        OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - Duration::from_secs(seconds_ago);
    let mut v: Value = serde_json::from_str(audit_log::fixtures::SEED_EVENTS[0].1).unwrap();
    v["organization_id"] = json!(org);
    v["project_id"] = json!(project);
    v["timestamp"] = json!(t.format(&Rfc3339).unwrap());
    v["status"] = json!(status);
    v["sequence_in_test"] = json!(seconds_ago);
    v
}

fn entries(request: &Request) -> Vec<Value> {
    audit_log_tests::faults::log_entries(request)
}

struct Datadog {
    server: MockServer,
    world: World,
    org: String,
    project: String,
}

impl Datadog {
    async fn new() -> Self {
        Self::of(unique("org"), unique("project")).await
    }

    async fn of(org: String, project: String) -> Self {
        let world = World::new().await;
        world.configure_datadog(&org, &project, KEY).await;
        Self {
            server: MockServer::start().await,
            world,
            org,
            project,
        }
    }

    fn stream(&self, timeout: Duration) -> Stream {
        self.world.stream_with(DatadogClient::with_timeout(
            Some(self.server.uri()),
            timeout,
        ))
    }

    async fn events(&self, n: u64) -> (Vec<Value>, Vec<StreamRecord>) {
        let events: Vec<Value> = (0..n)
            .map(|i| {
                recent(
                    &self.org,
                    &self.project,
                    100 - i,
                    if i % 2 == 0 { "OK" } else { "FAILED" },
                )
            })
            .collect();
        let records = self.world.capture(&events).await;
        (events, records)
    }

    /// Datadog is down (HTTP 503) and owed `n` events, its lane retrying: the stream function
    /// that owes them.
    async fn down_owing(&self, n: u64) -> (Stream, Vec<StreamRecord>) {
        self.mount(intake().respond_with(ResponseTemplate::new(503)))
            .await;
        let stream = self.stream(Duration::from_secs(1));
        let (_, records) = self.events(n).await;
        assert!(handed_on(&stream, &records).await);
        self.world
            .until_retrying(&stream, &self.org, &self.project)
            .await;
        (stream, records)
    }

    /// Datadog takes logs again: whether the lane caught up by itself (its calls run as they
    /// come due) within 20 seconds.
    async fn back_and_caught_up(&self, stream: &Stream) -> bool {
        self.server.reset().await;
        self.mount(intake().respond_with(ResponseTemplate::new(202)))
            .await;
        self.world
            .run_lane_calls(stream, Duration::from_secs(20), async || {
                self.world.lane(&self.org, &self.project).await.state
                    == audit_log::lane::LaneState::Delivering
            })
            .await
    }

    /// Organization B streams to the same stand-in with its own key ([`B_KEY`]), which is
    /// answered 202; A's is answered 503. B's organization and project.
    async fn b_beside_a_down(&self) -> (String, String) {
        let (b_org, b_project) = (unique("org-b"), unique("project-b"));
        self.world
            .configure_datadog(&b_org, &b_project, B_KEY)
            .await;
        self.answer_key(KEY, 503).await;
        self.answer_key(B_KEY, 202).await;
        (b_org, b_project)
    }

    /// `n` recent events of round `round`, A's and B's in turn.
    fn interleaved(&self, b_org: &str, b_project: &str, n: u64, round: u64) -> Vec<Value> {
        (0..n)
            .map(|i| match i % 2 {
                0 => recent(&self.org, &self.project, 100 - 10 * round - i, "OK"),
                _ => recent(b_org, b_project, 100 - 10 * round - i, "OK"),
            })
            .collect()
    }

    /// Delivers with a Datadog client of ordinary patience and a deadline of ten seconds.
    async fn deliver(
        &self,
        records: &[StreamRecord],
    ) -> aws_lambda_events::event::streams::DynamoDbEventResponse {
        self.stream(Duration::from_secs(5))
            .deliver(records, soon())
            .await
    }

    async fn mount(&self, mock: Mock) {
        mock.mount(&self.server).await;
    }

    /// Log requests carrying `key` get `status`.
    async fn answer_key(&self, key: &str, status: u16) {
        self.mount(
            intake()
                .and(header("DD-API-KEY", key))
                .respond_with(ResponseTemplate::new(status)),
        )
        .await;
    }

    async fn requests(&self) -> Vec<Request> {
        self.server.received_requests().await.unwrap_or_default()
    }

    /// Requests received carrying the API key `key`.
    async fn requests_with(&self, key: &str) -> usize {
        self.requests()
            .await
            .iter()
            .filter(|r| r.headers.get("DD-API-KEY").unwrap() == key)
            .count()
    }

    /// Log entries received in requests carrying the API key `key`.
    async fn entries_sent_with(&self, key: &str) -> usize {
        self.requests()
            .await
            .iter()
            .filter(|r| r.headers.get("DD-API-KEY").unwrap() == key)
            .flat_map(entries)
            .count()
    }

    /// Each request's value of the header `name`, in order.
    async fn each(&self, name: &str) -> Vec<String> {
        self.requests()
            .await
            .iter()
            .map(|r| r.headers.get(name).unwrap().to_str().unwrap().to_owned())
            .collect()
    }

    /// What the project's failures list shows (its first 500).
    async fn failures_listed(&self) -> Vec<audit_log::streaming::FailureRecord> {
        let (listed, _) = self
            .world
            .configs
            .failures(&self.org, &self.project, None, 500)
            .await
            .unwrap();
        listed
    }

    async fn health(&self) -> audit_log::streaming::Health {
        self.world
            .configs
            .get(&self.org, &self.project)
            .await
            .unwrap()
            .unwrap()
            .health
    }
}

fn intake() -> wiremock::MockBuilder {
    Mock::given(method("POST")).and(path("/api/v2/logs"))
}
