//! stream against the local AWS emulator (events captured for real, records read from the
//! table's real stream) and a local HTTP server standing in for Datadog.

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

#[tokio::test]
async fn events_reach_the_customers_cloudwatch_logs_in_the_assumed_account() {
    let w = World::new().await;
    let (org, project) = (unique("org"), unique("project"));
    w.configure_cloudwatch(&org, &project).await;
    let other_org = unique("org-without-destination");
    let sent: Vec<Value> = (0..5)
        .map(|i| recent(&org, &project, 300 - i * 10, "OK"))
        .collect();
    let mut all = sent.clone();
    all.push(recent(&other_org, &project, 30, "OK"));
    let records = w.capture(&all).await;
    assert_eq!(records.len(), 6);

    let response = w.stream().deliver(&records, soon()).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");

    let logs = w.customer_logs().await;
    let got = logs
        .get_log_events()
        .log_group_name(format!("{}/packer/audit-logs", w.prefix))
        .log_stream_name(&project)
        .start_from_head(true)
        .send()
        .await
        .expect("the log group and stream exist in the customer's account");
    let delivered = got.events.unwrap_or_default();
    assert_eq!(delivered.len(), 5);
    for (log, original) in delivered.iter().zip(&sent) {
        let message = log.message.as_deref().unwrap();
        assert_eq!(
            message,
            AuditEvent::from_value(original.clone()).unwrap().json()
        );
        let t = OffsetDateTime::parse(original["timestamp"].as_str().unwrap(), &Rfc3339).unwrap();
        assert_eq!(
            log.timestamp,
            Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
        );
    }

    // Nothing landed in the service's own account.
    let own = aws_sdk_cloudwatchlogs::Client::from_conf(
        aws_sdk_cloudwatchlogs::config::Builder::from(&w.aws)
            .region(aws_sdk_cloudwatchlogs::config::Region::new(CUSTOMER_REGION))
            .build(),
    );
    let own_groups = own
        .describe_log_groups()
        .log_group_name_prefix(&w.prefix)
        .send()
        .await
        .unwrap()
        .log_groups
        .unwrap_or_default();
    assert!(own_groups.is_empty(), "{own_groups:?}");

    let health = w.configs.get(&org, &project).await.unwrap().unwrap().health;
    assert!(health.last_success_at.is_some());
    assert_eq!(health.status_at(time::OffsetDateTime::now_utc()), "healthy");
}

#[tokio::test]
async fn the_customers_role_is_assumed_once_and_its_credentials_reused() {
    let w = World::new().await;
    let (org, project) = (unique("org"), unique("project"));
    w.configure_cloudwatch(&org, &project).await;
    let sts_requests = audit_log_tests::RequestCounter::default();
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::from(&w.aws)
            .interceptor(sts_requests.clone())
            .build(),
    );
    let stream = Stream::from_settings(&w.settings(), &w.aws).with_cloudwatch(
        audit_log::destination::cloudwatch::CloudWatch::new(&w.aws, &w.prefix).with_sts(sts),
    );
    let first = w.capture(&[recent(&org, &project, 90, "OK")]).await;
    assert!(handed_on(&stream, &first).await);
    let second = w
        .capture_more(&[recent(&org, &project, 80, "FAILED")], &first)
        .await;
    assert_eq!(second.len(), 1);
    assert!(handed_on(&stream, &second).await);
    assert_eq!(sts_requests.count("AssumeRole"), 1);
}

#[tokio::test]
async fn modify_and_remove_records_are_never_delivered() {
    let w = World::new().await;
    let (org, project) = (unique("org"), unique("project"));
    w.configure_cloudwatch(&org, &project).await;
    let inserted = w
        .capture(&[
            recent(&org, &project, 60, "OK"),
            recent(&org, &project, 50, "OK"),
        ])
        .await;
    let full = stream_records(&w.aws, &w.dynamodb, &w.events_table).await;
    let first = full.iter().find(|r| r.event_id == inserted[0].event_id);
    let key = first.expect("the record as sent").change.keys.clone();
    let key: HashMap<String, AttributeValue> = key.into();
    w.dynamodb
        .update_item()
        .table_name(&w.events_table)
        .set_key(Some(key.clone()))
        .update_expression("SET touched = :t")
        .expression_attribute_values(":t", AttributeValue::Bool(true))
        .send()
        .await
        .unwrap();
    w.dynamodb
        .delete_item()
        .table_name(&w.events_table)
        .set_key(Some(key))
        .send()
        .await
        .unwrap();
    let records = as_sent(&stream_records(&w.aws, &w.dynamodb, &w.events_table).await);
    let later: Vec<StreamRecord> = records
        .into_iter()
        .filter(|r| r.event_name != "INSERT")
        .collect();
    assert_eq!(
        later
            .iter()
            .map(|r| r.event_name.as_str())
            .collect::<Vec<_>>(),
        ["MODIFY", "REMOVE"]
    );
    let response = w.stream().deliver(&later, soon()).await;
    assert!(response.batch_item_failures.is_empty());
    let groups = w
        .customer_logs()
        .await
        .describe_log_groups()
        .log_group_name_prefix(&w.prefix)
        .send()
        .await
        .unwrap()
        .log_groups
        .unwrap_or_default();
    assert!(
        groups.is_empty(),
        "nothing was written for MODIFY or REMOVE"
    );
    assert_eq!(
        w.configs
            .get(&org, &project)
            .await
            .unwrap()
            .unwrap()
            .health
            .status_at(time::OffsetDateTime::now_utc()),
        "unknown"
    );
}

#[tokio::test]
async fn a_project_without_a_destination_is_skipped_and_not_a_failure() {
    let w = World::new().await;
    let (org, project) = (unique("org"), unique("project"));
    let records = w.capture(&[recent(&org, &project, 10, "OK")]).await;
    let response = w.stream().deliver(&records, soon()).await;
    assert!(response.batch_item_failures.is_empty());
    // Skipped: nothing is written of a destination it does not have, and nothing is owed.
    let item = w
        .dynamodb
        .get_item()
        .table_name(&w.config_table)
        .set_key(Some(World::project_key(&org, &project)))
        .send()
        .await
        .unwrap();
    assert_eq!(item.item, None, "no lane, health or configuration written");
    let (listed, _) = w.configs.failures(&org, &project, None, 10).await.unwrap();
    assert!(listed.is_empty());
}

// ---- Datadog, through a local stand-in ------------------------------------------------------

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

    /// Datadog is down (HTTP 503) and owed `n` events: the stream function that owes them.
    async fn down_owing(&self, n: u64) -> (Stream, Vec<StreamRecord>) {
        self.mount(intake().respond_with(ResponseTemplate::new(503)))
            .await;
        let stream = self.stream(Duration::from_secs(1));
        let (_, records) = self.events(n).await;
        assert!(handed_on(&stream, &records).await);
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

#[tokio::test]
async fn datadog_receives_gzip_entries_with_the_api_key() {
    let dd = Datadog::new().await;
    dd.answer_key(KEY, 202).await;
    let (events, records) = dd.events(3).await;
    let response = dd.deliver(&records).await;
    assert!(response.batch_item_failures.is_empty());
    let requests = dd.requests().await;
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    // gzip, the encoding Datadog's API reference documents.
    assert_eq!(request.headers.get("content-encoding").unwrap(), "gzip");
    assert_eq!(
        request.headers.get("content-type").unwrap(),
        "application/json"
    );
    let got = entries(request);
    assert_eq!(got.len(), 3);
    for (entry, original) in got.iter().zip(&events) {
        for (name, value) in original.as_object().unwrap() {
            if name == "status" {
                assert_eq!(&entry["event_status"], value);
            } else {
                assert_eq!(&entry[name], value, "{name}");
            }
        }
        let severity = if original["status"] == "OK" {
            "info"
        } else {
            "error"
        };
        assert_eq!(entry["status"], severity);
        assert_eq!(entry["timestamp"], original["timestamp"]);
        assert_eq!(
            entry["ddtags"],
            format!(
                "organization_id:{},project_id:{},action:{}",
                dd.org,
                dd.project,
                original["action"].as_str().unwrap()
            )
        );
    }
    assert_eq!(
        dd.health().await.status_at(time::OffsetDateTime::now_utc()),
        "healthy"
    );
}

#[tokio::test]
async fn a_project_of_255_wide_characters_is_delivered_to_like_any_other() {
    // Kept as UTF-8 in the events' keys (percent-encoded they would not fit), and cut to fit
    // the lane's: the stream reads the project back from the stored event's key.
    let org = unique("org");
    let org = format!("{org}{}", "é".repeat(255 - org.chars().count()));
    let dd = Datadog::of(org, "😀".repeat(255)).await;
    dd.answer_key(KEY, 202).await;
    let (events, records) = dd.events(2).await;
    assert!(dd.deliver(&records).await.batch_item_failures.is_empty());
    let got: Vec<Value> = dd.requests().await.iter().flat_map(entries).collect();
    assert_eq!(got.len(), events.len());
    for entry in got {
        assert_eq!(entry["organization_id"], json!(dd.org));
        assert_eq!(entry["project_id"], json!(dd.project));
        let tags = entry["ddtags"].as_str().unwrap();
        assert!(tags.starts_with(&format!(
            "organization_id:{},project_id:{},",
            dd.org, dd.project
        )));
    }
}

#[tokio::test]
async fn events_stored_before_they_were_packed_are_delivered_as_they_were() {
    let dd = Datadog::new().await;
    dd.answer_key(KEY, 202).await;
    let events: Vec<Value> = (0..4)
        .map(|i| recent(&dd.org, &dd.project, 100 - i, "OK"))
        .collect();
    let old: Vec<(String, Value)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("old-{i}"), e.clone()))
        .collect();
    audit_log_tests::store_as_before(&dd.world.dynamodb, &dd.world.events_table, &old).await;
    let records =
        as_sent(&stream_records(&dd.world.aws, &dd.world.dynamodb, &dd.world.events_table).await);
    let response = dd.deliver(&records).await;
    assert!(response.batch_item_failures.is_empty());
    let requests = dd.requests().await;
    let got: Vec<Value> = requests.iter().flat_map(entries).collect();
    assert_eq!(got.len(), 4);
    for (i, (entry, original)) in got.iter().zip(&events).enumerate() {
        assert_eq!(entry["timestamp"], original["timestamp"]);
        assert_eq!(entry["actor"], original["actor"]);
        assert_eq!(
            entry["event_id"],
            format!("old-{i}"),
            "known by its message id"
        );
    }
}

#[tokio::test]
async fn a_server_error_is_retried_and_then_succeeds() {
    let dd = Datadog::new().await;
    dd.mount(
        intake()
            .respond_with(ResponseTemplate::new(500))
            .up_to_n_times(1)
            .with_priority(1),
    )
    .await;
    dd.mount(
        intake()
            .respond_with(ResponseTemplate::new(202))
            .with_priority(2),
    )
    .await;
    let (_, records) = dd.events(2).await;
    let response = dd.deliver(&records).await;
    assert!(response.batch_item_failures.is_empty());
    let requests = dd.requests().await;
    assert_eq!(requests.len(), 2);
    assert_eq!(
        entries(&requests[0]),
        entries(&requests[1]),
        "the same logs, sent again"
    );
}

#[tokio::test]
async fn throttling_that_outlasts_the_budget_owes_the_events_and_holds_nothing_back() {
    let dd = Datadog::new().await;
    dd.mount(intake().respond_with(ResponseTemplate::new(429)))
        .await;
    let (_, records) = dd.events(3).await;
    let started = Instant::now();
    let response = dd.deliver(&records).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "a destination's trouble never fails a stream record"
    );
    assert!(
        within_the_budget(started.elapsed()),
        "the stream waits no longer than the lane's budget"
    );
    assert!(dd.requests().await.len() > 1, "retried inside the budget");
    let lane = dd.world.lane(&dd.org, &dd.project).await;
    assert_eq!(lane.state, audit_log::lane::LaneState::Retrying);
    assert_eq!(lane.owed, 3);
    assert!(lane.reason.unwrap().contains("429"));
    let health = dd.health().await;
    assert_eq!(health.status_at(time::OffsetDateTime::now_utc()), "failing");
    // Owed is not failed: nothing is listed for a replay.
    let listed = dd.failures_listed().await;
    assert!(listed.is_empty());
}

#[tokio::test]
async fn a_destination_that_comes_back_gets_what_it_missed_by_itself_oldest_first() {
    let dd = Datadog::new().await;
    let (stream, first) = dd.down_owing(3).await;
    // More events while it is down: owed at once, nothing sent.
    let sent_while_down = dd.requests().await.len();
    let more = dd
        .world
        .capture_more(&[recent(&dd.org, &dd.project, 1, "OK")], &first)
        .await;
    assert!(handed_on(&stream, &more).await);
    assert_eq!(dd.requests().await.len(), sent_while_down);
    assert_eq!(dd.world.lane(&dd.org, &dd.project).await.owed, 4);

    // It answers again; nobody calls anything.
    assert!(
        dd.back_and_caught_up(&stream).await,
        "the lane delivers again"
    );
    let arrived: Vec<String> = dd
        .requests()
        .await
        .iter()
        .flat_map(entries)
        .map(|e| e["timestamp"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(arrived.len(), 4);
    let mut sorted = arrived.clone();
    sorted.sort();
    assert_eq!(arrived, sorted, "oldest first");
    let lane = dd.world.lane(&dd.org, &dd.project).await;
    assert_eq!(lane.owed, 0);
    // Kept for trouble soon after, which goes on from the last wait (`Lane::interval_at`).
    assert_eq!(lane.state, audit_log::lane::LaneState::Delivering);
    assert!(
        lane.interval_ms > 0 && lane.recovered_at.is_some(),
        "{lane:?}"
    );
    assert_eq!(
        dd.health().await.status_at(time::OffsetDateTime::now_utc()),
        "healthy"
    );
    // Another destination saved in its place starts its trouble afresh.
    dd.world.configure_cloudwatch(&dd.org, &dd.project).await;
    assert_eq!(dd.world.lane(&dd.org, &dd.project).await.recovered_at, None);
}

#[tokio::test]
async fn a_destination_saved_after_one_was_removed_inherits_nothing_it_was_owed() {
    // GIVEN a destination that is down and owed three events, owed a little longer ago than
    // the clocks of two Lambda functions may differ
    let dd = Datadog::new().await;
    let clock = Arc::new(Behind::default());
    clock.by(audit_log::lane::OWED_FROM_MARGIN * 2);
    dd.mount(intake().respond_with(ResponseTemplate::new(503)))
        .await;
    let stream = dd.stream(Duration::from_secs(1)).with_clock(clock.clone());
    let (_, owed_to_the_old_one) = dd.events(3).await;
    assert!(handed_on(&stream, &owed_to_the_old_one).await);
    assert_eq!(dd.world.lane(&dd.org, &dd.project).await.owed, 3);
    clock.by(Duration::ZERO);
    // WHEN it is removed before its owed events are all forgotten (a large backlog outlasts
    // the deletion's few seconds, and its lane's call has not come yet), and another is saved
    assert!(
        dd.world
            .configs
            .delete(&dd.org, &dd.project, None)
            .await
            .unwrap()
            .is_some()
    );
    dd.world.configure_datadog(&dd.org, &dd.project, KEY).await;
    // THEN the new destination is owed nothing
    let lane = dd.world.lane(&dd.org, &dd.project).await;
    assert_eq!(lane.state, audit_log::lane::LaneState::Delivering);
    let span = audit_log::lane::OwedSpan::of(&lane);
    let key = audit_log::lane::LaneKey::new(&dd.org, &dd.project);
    assert_eq!(
        audit_log::lane::LaneStore::oldest_owed_at(&dd.world.configs, &key, span)
            .await
            .unwrap(),
        None
    );
    // AND when it is down in turn and comes back, it catches up on its own events only
    let mine = dd
        .world
        .capture_more(
            &[recent(&dd.org, &dd.project, 1, "OK")],
            &owed_to_the_old_one,
        )
        .await;
    assert!(handed_on(&stream, &mine).await, "owed: it is down");
    assert_eq!(dd.world.lane(&dd.org, &dd.project).await.owed, 1);
    assert!(dd.back_and_caught_up(&stream).await);
    let sent: Vec<Value> = dd.requests().await.iter().flat_map(entries).collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
}

/// The system's clock, behind by as much as told.
#[derive(Default)]
struct Behind(std::sync::Mutex<Duration>);

impl Behind {
    fn by(&self, behind: Duration) {
        *self.0.lock().unwrap() = behind;
    }
}

impl audit_log::clock::Clock for Behind {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() - *self.0.lock().unwrap()
    }
}

/// The schedule's call, as Lambda hands it to the function: its answer, or its error.
async fn sweeping(stream: &Stream) -> Result<Value, lambda_runtime::Error> {
    let scheduled: audit_log_stream::Invocation = serde_json::from_str(
        &audit_log::fixtures::lambda_event("eventbridge-scheduled-event.json"),
    )
    .unwrap();
    let context = audit_log_tests::invocation_context(Duration::from_secs(60));
    let answer = stream
        .handle(lambda_runtime::LambdaEvent::new(scheduled, context))
        .await?;
    Ok(serde_json::to_value(answer).unwrap())
}

async fn sweep(stream: &Stream) -> Value {
    sweeping(stream).await.expect("the sweep runs")
}

#[tokio::test]
async fn a_sweep_that_cannot_read_the_lanes_fails_its_invocation() {
    let world = World::new().await;
    let mut settings = world.settings();
    settings.config_table = unique("no-such-table");
    let stream = Stream::from_settings(&settings, &world.aws);
    let failed = sweeping(&stream).await.expect_err("the sweep fails");
    assert!(failed.to_string().contains("lane"), "{failed}");
}

#[tokio::test]
async fn a_quiet_lane_whose_call_was_lost_is_found_by_the_sweep_and_catches_up() {
    a_lost_lane_is_swept(Datadog::new().await, false).await;
}

#[tokio::test]
async fn a_lost_lane_of_a_project_too_long_for_its_keys_is_swept_like_any_other() {
    // The lanes' index keeps keys only, and this project's sort keys hold its start and a digest.
    a_lost_lane_is_swept(Datadog::of(unique("org"), "😀".repeat(255)).await, false).await;
}

#[tokio::test]
async fn a_lost_lane_stored_before_the_lanes_index_had_shards_is_swept_like_any_other() {
    a_lost_lane_is_swept(Datadog::new().await, true).await;
}

async fn a_lost_lane_is_swept(dd: Datadog, stored_before_shards: bool) {
    let (stream, records) = dd.down_owing(3).await;
    // Its call is lost, and an hour passes without a new event for the project.
    dd.world.lose_lane_calls().await;
    dd.world
        .lane_due_ago(&dd.org, &dd.project, Duration::from_secs(3600))
        .await;
    let sharded = dd.world.stored_lane_state(&dd.org, &dd.project).await;
    assert!(sharded.starts_with("retrying#"), "{sharded}");
    if stored_before_shards {
        dd.world
            .lane_stored_before_shards(&dd.org, &dd.project)
            .await;
    }
    let lost = dd.world.lane(&dd.org, &dd.project).await;
    // Another organization's lane is retrying too, its call on the way.
    let b_key = "0123456789abcdef0123456789abcdef";
    let (b_org, b_project) = (unique("org-b"), unique("project-b"));
    dd.world.configure_datadog(&b_org, &b_project, b_key).await;
    let b_records = dd
        .world
        .capture_more(&[recent(&b_org, &b_project, 5, "OK")], &records)
        .await;
    assert!(handed_on(&stream, &b_records).await);
    let waiting = dd.world.lane(&b_org, &b_project).await;
    assert_eq!(waiting.state, audit_log::lane::LaneState::Retrying);

    assert_eq!(sweep(&stream).await, json!({"lanes": 1}));
    let found = dd.world.lane(&dd.org, &dd.project).await;
    assert_eq!(found.state, audit_log::lane::LaneState::Retrying);
    // Its attempt is sent again, due now (the lost message, should it come late after all,
    // counts as much as the new one).
    assert_eq!(found.attempt, lost.attempt);
    assert!(
        found.next_attempt_at > lost.next_attempt_at,
        "the lost lane's attempt is due again now"
    );
    assert_eq!(
        dd.world.stored_lane_state(&dd.org, &dd.project).await,
        sharded
    );
    assert_eq!(dd.world.lane(&b_org, &b_project).await, waiting);

    assert!(
        dd.back_and_caught_up(&stream).await,
        "the lane delivers again"
    );
    assert_eq!(dd.entries_sent_with(KEY).await, 3);
    assert_eq!(sweep(&stream).await, json!({"lanes": 0}));
}

#[test]
fn the_template_sweeps_the_lanes_through_the_index_the_code_queries() {
    let sweep = &resource("StreamFunction")["Events"]["LaneSweep"];
    assert_eq!(sweep["Type"].as_str(), Some("Schedule"));
    assert!(
        sweep["Properties"]["Schedule"]
            .as_str()
            .is_some_and(|s| s.starts_with("rate(")),
    );
    let indexes = &resource("ConfigTable")["GlobalSecondaryIndexes"];
    let index = indexes
        .as_sequence()
        .unwrap()
        .iter()
        .find(|i| i["IndexName"].as_str() == Some(audit_log::streaming::LANES_BY_NEXT_ATTEMPT))
        .expect("the lanes' index");
    let keys: Vec<&str> = index["KeySchema"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| k["AttributeName"].as_str().unwrap())
        .collect();
    use audit_log::streaming::lane_attr;
    assert_eq!(keys, [lane_attr::STATE, lane_attr::NEXT_ATTEMPT_AT]);
    // A call is lost only once SQS would have handed back one whose invocation failed.
    assert_eq!(
        resource("LaneQueue")["VisibilityTimeout"].as_u64(),
        Some(audit_log::lane::LANE_QUEUE_VISIBILITY.as_secs())
    );
    let policy = audit_log::lane::Policy::default();
    assert!(policy.lost_after >= audit_log::lane::LANE_QUEUE_VISIBILITY + policy.lease);
}

#[tokio::test]
async fn one_organizations_outage_costs_another_on_the_same_shard_nothing() {
    let dd = Datadog::new().await;
    let (b_org, b_project) = dd.b_beside_a_down().await;
    let b_key = B_KEY;
    let stream = dd.stream(Duration::from_secs(1));
    let mut delivered_to_b = 0;
    let mut sent_to_a = 0;
    for round in 0..3u64 {
        // One batch, A's and B's events interleaved.
        let events = dd.interleaved(&b_org, &b_project, 6, round);
        let mut records = dd.world.capture(&events).await;
        // The stream holds every earlier round too: this round's are the last six.
        let records: Vec<StreamRecord> = records.split_off(records.len() - 6);
        let response = stream.deliver(&records, soon()).await;
        assert!(response.batch_item_failures.is_empty(), "round {round}");
        let to_a = dd.requests_with(KEY).await;
        if round == 0 {
            assert!(to_a > 0, "A was tried");
        } else {
            // A is retrying: its events are owed without a request, while B's go through.
            assert_eq!(to_a, sent_to_a, "round {round}: no request to A");
        }
        sent_to_a = to_a;
        delivered_to_b += 3;
        assert_eq!(
            dd.entries_sent_with(b_key).await,
            delivered_to_b,
            "round {round}"
        );
    }
    for (org, project) in [(&dd.org, &dd.project), (&b_org, &b_project)] {
        let (listed, _) = dd
            .world
            .configs
            .failures(org, project, None, 10)
            .await
            .unwrap();
        assert!(listed.is_empty(), "nobody's failures list shows anything");
    }
    assert_eq!(
        dd.world.lane(&b_org, &b_project).await.state,
        audit_log::lane::LaneState::Delivering
    );
    let a = dd.world.lane(&dd.org, &dd.project).await;
    assert_eq!(a.state, audit_log::lane::LaneState::Retrying);
    assert_eq!(a.owed, 9);
}

#[tokio::test]
async fn a_datadog_that_does_not_answer_costs_the_stream_its_budget_once() {
    let dd = Datadog::new().await;
    dd.mount(intake().respond_with(ResponseTemplate::new(202).set_delay(Duration::from_secs(30))))
        .await;
    let (_, records) = dd.events(1).await;
    let stream = dd.stream(Duration::from_secs(20));
    let started = Instant::now();
    let response = stream.deliver(&records, soon()).await;
    assert!(response.batch_item_failures.is_empty());
    assert!(within_the_budget(started.elapsed()));
    assert!(
        dd.world
            .lane(&dd.org, &dd.project)
            .await
            .reason
            .unwrap()
            .contains("did not answer")
    );
    // The next batch does not wait on it at all: its event is owed without a request.
    let more = dd
        .world
        .capture_more(&[recent(&dd.org, &dd.project, 1, "OK")], &records)
        .await;
    let requests = dd.requests().await.len();
    let owed = dd.world.lane(&dd.org, &dd.project).await.owed;
    assert!(handed_on(&stream, &more).await);
    assert_eq!(dd.requests().await.len(), requests);
    assert_eq!(dd.world.lane(&dd.org, &dd.project).await.owed, owed + 1);
}

#[tokio::test]
async fn a_slow_datadog_is_served_by_its_own_lane_and_holds_no_later_batch() {
    // GIVEN a Datadog that takes every log, but only after 1.2 s
    let dd = Datadog::new().await;
    let slow =
        || intake().respond_with(ResponseTemplate::new(202).set_delay(Duration::from_millis(1200)));
    dd.mount(slow()).await;
    let policy = audit_log::lane::Policy {
        slow_after: Duration::from_millis(600),
        slow_hold: Duration::from_secs(1),
        ..lanes()
    };
    let stream = dd.stream(Duration::from_secs(5)).with_lanes(policy);
    // WHEN a batch reaches it, it is delivered, and the lane set aside
    let (_, records) = dd.events(2).await;
    assert!(handed_on(&stream, &records).await);
    assert_eq!(dd.requests().await.len(), 1);
    let lane = dd.world.lane(&dd.org, &dd.project).await;
    assert_eq!(lane.state, audit_log::lane::LaneState::CatchingUp);
    assert!(lane.reason.unwrap().contains("to answer"));
    // THEN the next batch sends it nothing: its events wait for the lane's own call
    let more = dd
        .world
        .capture_more(&[recent(&dd.org, &dd.project, 1, "OK")], &records)
        .await;
    assert!(handed_on(&stream, &more).await);
    assert_eq!(dd.requests().await.len(), 1, "the batch waited on nobody");
    assert_eq!(dd.world.lane(&dd.org, &dd.project).await.owed, 1);
    // AND the lane's call delivers them; still slow, the lane stays aside
    assert!(
        dd.world
            .run_lane_calls(&stream, Duration::from_secs(20), async || {
                dd.requests().await.len() == 2
            })
            .await
    );
    let lane = dd.world.lane(&dd.org, &dd.project).await;
    assert_eq!(lane.state, audit_log::lane::LaneState::CatchingUp);
    assert_eq!(lane.owed, 0);
    assert_eq!(dd.entries_sent_with(KEY).await, 3);
    // AND once quick again, live delivery resumes by itself
    dd.server.reset().await;
    dd.mount(intake().respond_with(ResponseTemplate::new(202)))
        .await;
    assert!(
        dd.world
            .run_lane_calls(&stream, Duration::from_secs(20), async || {
                dd.world.lane(&dd.org, &dd.project).await.state
                    == audit_log::lane::LaneState::Delivering
            })
            .await
    );
    let last = dd
        .world
        .capture_more(&[recent(&dd.org, &dd.project, 0, "OK")], &more)
        .await;
    assert!(handed_on(&stream, &last).await);
    assert_eq!(
        dd.entries_sent_with(KEY).await,
        1,
        "sent by the batch itself"
    );
}

#[tokio::test]
async fn a_request_too_large_for_datadog_is_split_until_it_passes() {
    let dd = Datadog::new().await;
    // The stand-in takes at most two logs per request.
    dd.mount(
        intake()
            .and(|r: &Request| entries(r).len() > 2)
            .respond_with(ResponseTemplate::new(413)),
    )
    .await;
    dd.mount(intake().respond_with(ResponseTemplate::new(202)))
        .await;
    let (events, records) = dd.events(5).await;
    let response = dd.deliver(&records).await;
    assert!(response.batch_item_failures.is_empty());
    let accepted: Vec<Value> = dd
        .requests()
        .await
        .iter()
        .map(entries)
        .filter(|e| e.len() <= 2)
        .flatten()
        .collect();
    assert_eq!(accepted.len(), events.len(), "every log delivered once");
    let mut seen: Vec<i64> = accepted
        .iter()
        .map(|e| e["sequence_in_test"].as_i64().unwrap())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5);
}

/// Five events to a Datadog that answers `status` to every request holding the first: each of
/// the others is delivered once, only the first is listed as a failure; the destination's last
/// error.
async fn one_log_datadog_will_never_take(status: u16) -> String {
    let dd = Datadog::new().await;
    let (events, records) = dd.events(5).await;
    let first = events[0]["sequence_in_test"].clone();
    let holds_the_first =
        move |r: &Request| entries(r).iter().any(|e| e["sequence_in_test"] == first);
    dd.mount(
        intake()
            .and(holds_the_first.clone())
            .respond_with(ResponseTemplate::new(status)),
    )
    .await;
    dd.mount(intake().respond_with(ResponseTemplate::new(202)))
        .await;
    let response = dd.deliver(&records).await;
    assert!(response.batch_item_failures.is_empty());
    let others: Vec<i64> = events[1..]
        .iter()
        .map(|e| e["sequence_in_test"].as_i64().unwrap())
        .collect();
    let mut accepted: Vec<i64> = dd
        .requests()
        .await
        .iter()
        .filter(|r| !holds_the_first(r))
        .flat_map(entries)
        .map(|e| e["sequence_in_test"].as_i64().unwrap())
        .collect();
    accepted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(
        accepted, others,
        "HTTP {status}: each of the others sent, once"
    );
    let listed = dd.failures_listed().await;
    assert_eq!(
        listed.len(),
        1,
        "HTTP {status}: only the first is a failure"
    );
    assert_eq!(
        dd.world.lane(&dd.org, &dd.project).await.state,
        audit_log::lane::LaneState::Delivering,
        "a log's own failure is no trouble of the destination's"
    );
    dd.health().await.last_error.unwrap()
}

#[tokio::test]
async fn a_log_too_large_for_datadog_costs_the_others_in_its_request_nothing() {
    let error = one_log_datadog_will_never_take(413).await;
    assert!(error.contains("too large"), "{error}");
}

#[tokio::test]
async fn a_log_datadog_rejects_costs_the_others_in_its_request_nothing() {
    for status in [400, 422] {
        let error = one_log_datadog_will_never_take(status).await;
        assert!(error.contains(&format!("HTTP {status}")), "{error}");
    }
}

#[tokio::test]
async fn an_intake_that_rejects_every_request_is_not_split_without_end() {
    let dd = Datadog::new().await;
    dd.mount(intake().respond_with(ResponseTemplate::new(400)))
        .await;
    let (_, records) = dd.events(100).await;
    assert!(dd.deliver(&records).await.batch_item_failures.is_empty());
    // Splitting to single logs would take 199 requests; the search for bad logs stops after 64
    // splits (129 requests, and the first one's gzip), and every log is listed (or, should the
    // search outlast the lane's budget on a loaded machine, still owed).
    let requests = dd.requests().await.len();
    assert!((3..=130).contains(&requests), "{requests} requests");
    let listed = dd.failures_listed().await;
    let owed = dd.world.lane(&dd.org, &dd.project).await.owed;
    assert_eq!(listed.len() as u64 + owed, 100, "{owed} owed");
}

#[tokio::test]
async fn logs_beside_more_bad_ones_than_a_search_finds_are_delivered_by_the_lanes_calls() {
    let dd = Datadog::new().await;
    // A third of the logs are ones Datadog rejects, each rejecting the request it is in:
    // one live search (64 splits) cannot find them all.
    let bad = |e: &Value| e["sequence_in_test"].as_i64().unwrap() % 3 == 0;
    let holds_bad = move |r: &Request| entries(r).iter().any(bad);
    dd.mount(
        intake()
            .and(holds_bad)
            .respond_with(ResponseTemplate::new(400)),
    )
    .await;
    dd.mount(intake().respond_with(ResponseTemplate::new(202)))
        .await;
    let stream = dd.stream(Duration::from_secs(5));
    let (events, records) = dd.events(100).await;
    assert!(handed_on(&stream, &records).await);
    // What the search did not get to is owed, not listed: the lane's own calls search on
    // (catching up at once; or, should the search outlast the live budget on a loaded machine,
    // after a wait).
    let lane = dd.world.lane(&dd.org, &dd.project).await;
    assert_ne!(lane.state, audit_log::lane::LaneState::Delivering);
    assert!(lane.owed > 0);
    let caught_up = dd
        .world
        .run_lane_calls(&stream, Duration::from_secs(20), async || {
            dd.world.lane(&dd.org, &dd.project).await.state
                == audit_log::lane::LaneState::Delivering
        })
        .await;
    assert!(caught_up);
    let mut delivered: Vec<i64> = dd
        .requests()
        .await
        .iter()
        .filter(|r| !holds_bad(r))
        .flat_map(entries)
        .map(|e| e["sequence_in_test"].as_i64().unwrap())
        .collect();
    delivered.sort_unstable_by(|a, b| b.cmp(a));
    let good: Vec<i64> = events
        .iter()
        .filter(|e| !bad(e))
        .map(|e| e["sequence_in_test"].as_i64().unwrap())
        .collect();
    assert_eq!(delivered, good, "each good log delivered, once");
    assert_eq!(
        dd.failures_listed().await.len(),
        100 - good.len(),
        "only the bad listed"
    );
}

#[tokio::test]
async fn a_redirect_never_carries_the_api_key_anywhere_else() {
    let dd = Datadog::new().await;
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(202))
        .mount(&elsewhere)
        .await;
    dd.mount(intake().respond_with(
        ResponseTemplate::new(307).insert_header("location", format!("{}/logs", elsewhere.uri())),
    ))
    .await;
    let (_, records) = dd.events(2).await;
    let response = dd.deliver(&records).await;
    assert!(response.batch_item_failures.is_empty());
    let followed = elsewhere.received_requests().await.unwrap();
    assert!(followed.is_empty(), "the key went to {followed:?}");
    let error = dd.health().await.last_error.unwrap();
    assert!(error.contains("HTTP 307"), "{error}");
}

#[tokio::test]
async fn a_bad_request_fails_for_good_without_retries_and_without_holding_the_stream() {
    // 400 and 422 are about the logs, not the destination.
    for status in [400, 422] {
        let dd = Datadog::new().await;
        dd.mount(intake().respond_with(
            ResponseTemplate::new(status).set_body_string("raw destination body sentinel"),
        ))
        .await;
        let (_, records) = dd.events(1).await;
        let response = dd.deliver(&records).await;
        assert!(
            response.batch_item_failures.is_empty(),
            "HTTP {status}: not retried from the stream"
        );
        // Not retried: sent once.
        let encodings = dd.each("content-encoding").await;
        assert_eq!(encodings, ["gzip"], "HTTP {status}");
        let health = dd.health().await;
        assert_eq!(health.status_at(time::OffsetDateTime::now_utc()), "failing");
        let error = health.last_error.unwrap();
        assert!(error.contains(&format!("HTTP {status}")), "{error}");
        assert!(
            !error.contains("sentinel"),
            "no raw destination body: {error}"
        );
    }
}

/// The stream function behind a proxy to the emulator, for DynamoDB's trouble on purpose.
async fn behind_proxy(
    dd: &Datadog,
    faults: audit_log_tests::faults::AwsFaults,
) -> (audit_log_tests::faults::AwsProxy, Stream) {
    let proxy = audit_log_tests::faults::AwsProxy::start(
        std::env::var("AWS_ENDPOINT_URL").unwrap(),
        faults,
    )
    .await;
    let aws = aws_config::from_env().endpoint_url(&proxy.url).load().await;
    let stream = Stream::from_settings(&dd.world.settings(), &aws).with_datadog(
        DatadogClient::with_timeout(Some(dd.server.uri()), Duration::from_secs(1))
            .with_backoff(fast()),
    );
    (proxy, stream)
}

/// The message ids of the log entries sent with `key`, sorted.
async fn ids_sent_with(dd: &Datadog, key: &str) -> Vec<String> {
    let mut ids: Vec<String> = dd
        .requests()
        .await
        .iter()
        .filter(|r| r.headers.get("DD-API-KEY").unwrap() == key)
        .flat_map(entries)
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn ids_of(records: &[StreamRecord]) -> Vec<String> {
    let mut ids: Vec<String> = records
        .iter()
        .map(|r| audit_log_stream::event_of(r).unwrap().1.message_id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_refusal_that_cannot_be_recorded_is_deferred_rather_than_lost() {
    use audit_log_tests::faults::AwsFaults;
    let dd = Datadog::new().await;
    dd.mount(intake().respond_with(ResponseTemplate::new(400)))
        .await;
    let (_, records) = dd.events(2).await;
    // Every DynamoDB write throttled, past the SDK's own retries.
    let faults = AwsFaults {
        dynamodb_throttling: 1.0,
        ..Default::default()
    };
    let (proxy, stream) = behind_proxy(&dd, faults).await;
    proxy.enable(true);
    let response = stream.deliver(&records, soon()).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "neither delivered nor listed, but deferred: the shard moves on"
    );
    assert!(proxy.injected.get("DynamoDB throttling") > 0);
    assert!(dd.failures_listed().await.is_empty());
    // DynamoDB takes writes again: the deferred events come back, and the refusal is recorded.
    proxy.enable(false);
    let listed = dd
        .world
        .run_lane_calls(&stream, Duration::from_secs(20), async || {
            dd.failures_listed().await.len() == 2
        })
        .await;
    assert!(listed, "the refusal was never recorded");
    let listed = dd.failures_listed().await;
    assert!(listed.iter().all(|f| f.reason.contains("HTTP 400")));
}

#[tokio::test]
async fn one_organizations_hot_partition_costs_another_on_the_same_shard_nothing() {
    let dd = Datadog::new().await;
    // A's destination is down, so its lane owes what comes: a write to A's partition of the
    // table for each event.
    let (b_org, b_project) = dd.b_beside_a_down().await;
    let b_key = B_KEY;
    let (proxy, stream) = behind_proxy(&dd, Default::default()).await;
    let interleaved = |round: u64| dd.interleaved(&b_org, &b_project, 4, round);
    let first = dd.world.capture(&interleaved(0)).await;
    assert!(handed_on(&stream, &first).await);
    assert_eq!(dd.world.lane(&dd.org, &dd.project).await.owed, 2);
    // WHEN A's partition runs hot: every write naming A is throttled
    proxy.throttle_writes_naming(Some(&dd.org));
    let second = dd.world.capture_more(&interleaved(1), &first).await;
    let response = stream.deliver(&second, soon()).await;
    // THEN the shard moves on, and B has all its events
    assert!(
        response.batch_item_failures.is_empty(),
        "nobody waits for A"
    );
    assert!(proxy.injected.get("DynamoDB throttling") > 0);
    let of = |org: &str| -> Vec<StreamRecord> {
        first
            .iter()
            .chain(&second)
            .filter(|r| audit_log_stream::event_of(r).unwrap().0.organization_id() == org)
            .cloned()
            .collect()
    };
    let (a_records, b_records) = (of(&dd.org), of(&b_org));
    assert_eq!(ids_sent_with(&dd, b_key).await, ids_of(&b_records));
    // AND A's new events were not owed (that write failed) but wait on the lanes queue
    assert_eq!(dd.world.lane(&dd.org, &dd.project).await.owed, 2);
    // WHEN the partition cools down and A's destination comes back
    proxy.throttle_writes_naming(None);
    dd.server.reset().await;
    dd.answer_key(KEY, 202).await;
    // THEN A gets all four by itself: the owed through its lane, the deferred when they come
    let caught_up = dd
        .world
        .run_lane_calls(&stream, Duration::from_secs(30), async || {
            let mut sent = ids_sent_with(&dd, KEY).await;
            sent.dedup();
            sent == ids_of(&a_records)
        })
        .await;
    assert!(caught_up, "A got {:?}", ids_sent_with(&dd, KEY).await);
}

#[tokio::test]
async fn a_lane_that_owes_a_large_batch_writes_it_several_requests_at_a_time() {
    // GIVEN A's destination down, B's up, and a batch of 300 of A's events and one of B's
    let dd = Datadog::new().await;
    let (b_org, b_project) = dd.b_beside_a_down().await;
    let (proxy, stream) = behind_proxy(&dd, Default::default()).await;
    let mut values: Vec<Value> = (0..300)
        .map(|i| recent(&dd.org, &dd.project, 400 - i, "OK"))
        .collect();
    values.push(recent(&b_org, &b_project, 1, "OK"));
    let records = dd.world.capture(&values).await;
    // WHEN the batch is delivered
    assert!(handed_on(&stream, &records).await);
    // THEN A owes all 300, written 25 to a request, several requests at once (one after
    // another, B's event would wait for twelve round trips), and B has its event
    assert_eq!(dd.world.lane(&dd.org, &dd.project).await.owed, 300);
    assert!(proxy.count("BatchWriteItem") >= 12);
    assert!(
        proxy.most_at_once("BatchWriteItem") > 1,
        "the owed events' writes went one at a time"
    );
    assert_eq!(ids_sent_with(&dd, B_KEY).await.len(), 1);
}

#[tokio::test]
async fn a_rotated_key_is_used_by_the_next_delivery_after_the_save() {
    let dd = Datadog::new().await;
    let stream = dd.stream(Duration::from_secs(5));
    dd.mount(
        intake()
            .and(header("DD-API-KEY", KEY))
            .respond_with(ResponseTemplate::new(202))
            .up_to_n_times(1),
    )
    .await;
    let (_, first) = dd.events(1).await;
    assert!(handed_on(&stream, &first).await);

    // The customer rotates the key; this container read the old one.
    let rotated = "fedcba9876543210fedcba9876543210";
    dd.world
        .configure_datadog(&dd.org, &dd.project, rotated)
        .await;
    dd.server.reset().await;
    dd.answer_key(KEY, 403).await;
    dd.answer_key(rotated, 202).await;
    let records =
        as_sent(&stream_records(&dd.world.aws, &dd.world.dynamodb, &dd.world.events_table).await);
    let more: Vec<Value> = vec![recent(&dd.org, &dd.project, 5, "OK")];
    let records = {
        let mut r = dd.world.capture(&more).await;
        r.retain(|x| !records.iter().any(|y| y.event_id == x.event_id));
        r
    };
    assert_eq!(records.len(), 1);
    let response = stream.deliver(&records, soon()).await;
    assert!(response.batch_item_failures.is_empty());
    let keys = dd.each("DD-API-KEY").await;
    // The configuration names its secret version: the old key is never tried again.
    assert_eq!(keys, [rotated]);
}

#[tokio::test]
async fn a_key_refused_after_a_fresh_read_fails_for_good_with_a_message_to_act_on() {
    let dd = Datadog::new().await;
    dd.mount(intake().respond_with(ResponseTemplate::new(401)))
        .await;
    let (_, records) = dd.events(2).await;
    let response = dd.deliver(&records).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        dd.requests().await.len(),
        2,
        "one try, one retry with a freshly read key"
    );
    let error = dd.health().await.last_error.unwrap();
    assert!(
        error.contains("API key") && error.contains("datadoghq.eu"),
        "{error}"
    );
    assert!(!error.contains(KEY));
}

#[tokio::test]
async fn records_delivered_before_a_retry_are_not_sent_again() {
    let dd = Datadog::new().await;
    dd.mount(intake().respond_with(ResponseTemplate::new(202)))
        .await;
    let (_, records) = dd.events(3).await;
    let stream = dd.stream(Duration::from_secs(5));
    assert!(handed_on(&stream, &records).await);
    // Lambda hands the same records again (a retry from an earlier sequence number).
    assert!(handed_on(&stream, &records).await);
    assert_eq!(dd.requests().await.len(), 1);
}

#[tokio::test]
async fn ten_thousand_events_of_one_kilobyte_make_exactly_ten_datadog_requests() {
    let server = MockServer::start().await;
    intake()
        .respond_with(ResponseTemplate::new(202))
        .mount(&server)
        .await;
    let now = OffsetDateTime::now_utc();
    let mut v = recent("o", "p", 60, "OK");
    let base = AuditEvent::from_value(v.clone()).unwrap().json().len();
    v["padding"] = json!("k".repeat(1024 - base - r#","padding":"""#.len()));
    let event = AuditEvent::from_value(v).unwrap();
    assert_eq!(event.json().len(), 1024);
    let events = vec![event; 10_000];
    let client = DatadogClient::new(Some(server.uri()));
    let project = Project {
        organization_id: "o",
        project_id: "p",
        credentials: Box::new(Credentials::Datadog {
            api_key: SecretString::from(KEY),
        }),
    };
    let settings = DatadogSettings {
        site: DatadogSite::Us1,
    };
    let failures = client
        .sink(project, &settings)
        .deliver(&events, Instant::now() + Duration::from_secs(60))
        .await;
    assert!(failures.is_empty());
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 10);
    assert!(requests.iter().all(|r| entries(r).len() == 1000));
    let _ = now;
}

#[test]
fn the_template_bounds_the_backoff_where_the_function_does() {
    let parameter = &audit_log_tests::template()["Parameters"]["DeliveryRetryMaxBackoffSeconds"];
    assert_eq!(parameter["MinValue"].as_u64(), Some(1));
    assert_eq!(
        parameter["MaxValue"].as_u64(),
        Some(audit_log::lane::MOST_MAX_BACKOFF_SECONDS)
    );
}

#[test]
fn the_template_gives_stream_exactly_the_settings_it_reads() {
    let mut expected: Vec<String> = audit_log_stream::ENVIRONMENT
        .iter()
        .map(|s| s.to_string())
        .collect();
    expected.sort();
    assert_eq!(environment_of("StreamFunction"), expected);
}

#[test]
fn the_template_streams_inserts_only_and_reports_partial_failures() {
    let stream = &resource("StreamFunction")["Events"]["StoredEvents"]["Properties"];
    let pattern: Value = serde_json::from_str(
        stream["FilterCriteria"]["Filters"][0]["Pattern"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(pattern, json!({"eventName": ["INSERT"]}));
    assert_eq!(
        stream["FunctionResponseTypes"][0].as_str(),
        Some("ReportBatchItemFailures")
    );
    assert_eq!(stream["BisectBatchOnFunctionError"].as_bool(), Some(true));
    assert!(stream["MaximumRetryAttempts"].as_u64().is_some());
    assert!(stream["MaximumRecordAgeInSeconds"].as_u64().is_some());
    assert!(!stream["DestinationConfig"]["OnFailure"]["Destination"].is_null());
}

#[tokio::test]
async fn health_counts_the_last_day_and_tracks_a_run_of_failures() {
    let dd = Datadog::new().await;
    dd.mount(
        intake()
            .respond_with(ResponseTemplate::new(202))
            .up_to_n_times(1),
    )
    .await;
    let (_, first) = dd.events(3).await;
    let stream = dd.stream(Duration::from_secs(5));
    assert!(handed_on(&stream, &first).await);
    let health = dd.health().await;
    assert_eq!(health.counts_24h(OffsetDateTime::now_utc()), (3, 0));
    assert!(health.failing_since.is_none());
    assert_eq!(health.status_at(time::OffsetDateTime::now_utc()), "healthy");

    // Then the destination refuses: counted, and failing at once because it is a refusal.
    dd.server.reset().await;
    dd.mount(intake().respond_with(ResponseTemplate::new(403)))
        .await;
    let fresh = dd
        .world
        .capture_more(
            &[
                recent(&dd.org, &dd.project, 1, "OK"),
                recent(&dd.org, &dd.project, 2, "OK"),
            ],
            &first,
        )
        .await;
    stream.deliver(&fresh, soon()).await;
    let health = dd.health().await;
    assert_eq!(health.counts_24h(OffsetDateTime::now_utc()), (3, 2));
    assert!(health.failing_since.is_some());
    assert!(health.last_failure_permanent);
    assert_eq!(health.status_at(time::OffsetDateTime::now_utc()), "failing");
}
