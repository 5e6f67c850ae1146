//! What the integration tests share: the local AWS emulator's settings, tables built from
//! `template.yaml`'s own definitions (so code and template cannot drift), Lambda event fixtures,
//! and a counter of the requests an SDK client sends. `local` runs the whole service.

pub mod bench;
pub mod faults;
pub mod figures;
pub mod local;
pub mod neighbours;
pub mod samples;
pub mod serve;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::types::{AttributeValue, GlobalSecondaryIndex};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde_yaml::Value as Yaml;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// The SDK configuration for the local emulator that `scripts/test` starts.
pub async fn emulator() -> aws_config::SdkConfig {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL is not set: run the integration tests through ./scripts/test, \
         which starts the local AWS emulator"
    );
    install_log_tap();
    aws_config::load_from_env().await
}

/// A name no other test in this run uses, so tests share one emulator without meeting.
/// S3 of the emulator, buckets in the path as the functions address them locally.
pub fn s3(aws: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(aws)
            .force_path_style(true)
            .build(),
    )
}

pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `template.yaml`, parsed once.
pub fn template() -> &'static Yaml {
    static TEMPLATE: OnceLock<Yaml> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let text = std::fs::read_to_string(repo_root().join("template.yaml"))
            .expect("template.yaml is readable");
        serde_yaml::from_str(&text).expect("template.yaml is YAML")
    })
}

/// The `Properties` of a resource in the template.
pub fn resource(logical_id: &str) -> &'static Yaml {
    let properties = &template()["Resources"][logical_id]["Properties"];
    assert!(
        !properties.is_null(),
        "template.yaml has no resource {logical_id}"
    );
    properties
}

/// The names of a function's environment variables in the template.
pub fn environment_of(function: &str) -> Vec<String> {
    let mut names: Vec<String> = resource(function)["Environment"]["Variables"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{function} has no environment"))
        .keys()
        .map(|k| k.as_str().expect("variable names are text").to_owned())
        .collect();
    names.sort();
    names
}

fn text(v: &Yaml) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected text in template.yaml, found {v:?}"))
}

fn key_schema(keys: &Yaml) -> Vec<KeySchemaElement> {
    keys.as_sequence()
        .expect("KeySchema is a list")
        .iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(text(&k["AttributeName"]))
                .key_type(KeyType::from(text(&k["KeyType"])))
                .build()
                .expect("key schema element")
        })
        .collect()
}

/// What Lambda hands a handler beside its event: a request id, and a deadline `timeout` away.
pub fn invocation_context(timeout: Duration) -> lambda_runtime::Context {
    let mut context = lambda_runtime::Context::default();
    context.request_id = unique("request");
    context.deadline = (std::time::SystemTime::now() + timeout)
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64;
    context
}

/// Creates, in the emulator, the table a template resource declares (keys, indexes, stream,
/// TTL) under a fresh name, and returns the name.
/// A queue's ARN, as SQS gives it (Lambda names a record's queue by it).
pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .and_then(|mut a| a.remove(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .expect("queue arn")
}

pub async fn create_table(client: &aws_sdk_dynamodb::Client, logical_id: &str) -> String {
    let props = resource(logical_id);
    let name = unique(&logical_id.to_lowercase());
    let definitions = props["AttributeDefinitions"]
        .as_sequence()
        .expect("AttributeDefinitions is a list")
        .iter()
        .map(|d| {
            AttributeDefinition::builder()
                .attribute_name(text(&d["AttributeName"]))
                .attribute_type(ScalarAttributeType::from(text(&d["AttributeType"])))
                .build()
                .expect("attribute definition")
        })
        .collect();
    let mut create = client
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::from(text(&props["BillingMode"])))
        .set_attribute_definitions(Some(definitions))
        .set_key_schema(Some(key_schema(&props["KeySchema"])));
    if let Some(class) = props["TableClass"].as_str() {
        create = create.table_class(aws_sdk_dynamodb::types::TableClass::from(class));
    }
    if let Some(indexes) = props["GlobalSecondaryIndexes"].as_sequence() {
        for index in indexes {
            let projection = &index["Projection"];
            create = create.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(text(&index["IndexName"]))
                    .set_key_schema(Some(key_schema(&index["KeySchema"])))
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::from(text(
                                &projection["ProjectionType"],
                            )))
                            .set_non_key_attributes(
                                projection["NonKeyAttributes"]
                                    .as_sequence()
                                    .map(|a| a.iter().map(|n| text(n).to_owned()).collect()),
                            )
                            .build(),
                    )
                    .build()
                    .expect("index"),
            );
        }
    }
    if let Some(view) = props["StreamSpecification"]["StreamViewType"].as_str() {
        create = create.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(view))
                .build()
                .expect("stream specification"),
        );
    }
    create.send().await.expect("create table in the emulator");
    if let Some(ttl) = props["TimeToLiveSpecification"].as_mapping() {
        client
            .update_time_to_live()
            .table_name(&name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(text(&ttl[&Yaml::from("AttributeName")]))
                    .enabled(ttl[&Yaml::from("Enabled")].as_bool().unwrap_or(false))
                    .build()
                    .expect("ttl specification"),
            )
            .send()
            .await
            .expect("enable TTL in the emulator");
    }
    name
}

/// Every item of a table.
pub async fn scan_all(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Vec<HashMap<String, AttributeValue>> {
    client
        .scan()
        .table_name(table)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("scan the table")
}

/// Sets a lane instant (`lane_since`, `lane_paused_at`, `lane_owed_from`: epoch milliseconds)
/// on the table's one configured project, as if that had happened at `at`: the stored state of
/// a lane days old, which no test waits for.
pub async fn backdate_lane(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    attribute: &str,
    at: time::OffsetDateTime,
) {
    let at = AttributeValue::N(audit_log::clock::epoch_ms(at).to_string());
    set_lane_attribute(client, table, attribute, at).await;
}

/// The table's one configured project's item.
pub async fn configured_item(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> HashMap<String, AttributeValue> {
    let mut configured: Vec<_> = scan_all(client, table)
        .await
        .into_iter()
        .filter(|item| item.contains_key("lane_state"))
        .collect();
    assert_eq!(configured.len(), 1, "one configured project");
    configured.remove(0)
}

/// Writes one lane attribute of the table's one configured project as it is given: a lane as
/// an earlier version stored it.
pub async fn set_lane_attribute(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    attribute: &str,
    value: AttributeValue,
) {
    let key = configured_item(client, table)
        .await
        .into_iter()
        .filter(|(name, _)| ["pk", "sk"].contains(&name.as_str()))
        .collect();
    client
        .update_item()
        .table_name(table)
        .set_key(Some(key))
        .update_expression("SET #at = :at")
        .expression_attribute_names("#at", attribute)
        .expression_attribute_values(":at", value)
        .send()
        .await
        .expect("set the lane's attribute");
}

/// An SQS batch shaped as Lambda delivers it (from `fixtures/lambda/sqs-receive-message.json`),
/// with one record per `(message id, body)`.
pub fn sqs_batch<'a>(messages: impl IntoIterator<Item = (String, &'a str)>) -> SqsEvent {
    let fixture =
        std::fs::read_to_string(repo_root().join("tests/fixtures/lambda/sqs-receive-message.json"))
            .expect("SQS fixture");
    let shape: SqsEvent = serde_json::from_str(&fixture).expect("SQS fixture parses");
    let template = shape.records.into_iter().next().expect("one record");
    let mut event = SqsEvent::default();
    event.records = messages
        .into_iter()
        .map(|(id, body)| {
            let mut record: SqsMessage = template.clone();
            record.message_id = Some(id);
            record.body = Some(body.to_owned());
            record
        })
        .collect();
    event
}

/// The ids of the messages a function reported failed, in its order or as a set.
pub fn failed_ids<C: FromIterator<String>>(response: &SqsBatchResponse) -> C {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

/// Counts the requests a client sends, by operation (see [`operation_name`]), retries included.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter(Arc<Mutex<HashMap<String, usize>>>);

impl RequestCounter {
    pub fn count(&self, operation: &str) -> usize {
        self.0
            .lock()
            .expect("counter lock")
            .get(operation)
            .copied()
            .unwrap_or(0)
    }
}

/// The AWS operation a request calls: the last part of `X-Amz-Target` (JSON protocols), or the
/// form body's `Action` (query protocols, such as STS).
pub fn operation_name(target: Option<&str>, body: &[u8]) -> String {
    match target {
        Some(t) => t.rsplit('.').next().unwrap_or_default().to_owned(),
        None => form_urlencoded::parse(body)
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| "unknown".into()),
    }
}

/// A new queue named after `prefix`, for one test; its URL.
pub async fn new_queue(sqs: &aws_sdk_sqs::Client, prefix: &str) -> String {
    sqs.create_queue()
        .queue_name(unique(prefix))
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url")
}

/// Every body in a queue, received and deleted.
pub async fn take_all(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let got = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("receive")
            .messages
            .unwrap_or_default();
        if got.is_empty() {
            return out;
        }
        for m in got {
            out.extend(m.body);
            if let Some(handle) = m.receipt_handle {
                sqs.delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .expect("delete");
            }
        }
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let target = operation_name(
            request.headers().get("x-amz-target"),
            request.body().bytes().unwrap_or_default(),
        );
        *self
            .0
            .lock()
            .expect("counter lock")
            .entry(target)
            .or_default() += 1;
        Ok(())
    }
}

thread_local! {
    static LOG_SINK: std::cell::RefCell<Option<Arc<Mutex<Vec<u8>>>>> = const { std::cell::RefCell::new(None) };
}

/// Writes log lines to the calling thread's sink, if it has one.
struct ThreadSink;

impl std::io::Write for ThreadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG_SINK.with(|sink| {
            if let Some(sink) = &*sink.borrow() {
                sink.lock().expect("log sink").extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The Datadog API key the tests configure. No log line of the suite may hold it.
pub const SENTINEL_API_KEY: &str = "5e7e11e1a91c0ffee5e7e11e1a91c0ff";

/// The External ID tests store for an organization themselves (the service's own are watched
/// for as the API hands them out).
pub const SENTINEL_EXTERNAL_ID: &str = "5e7e11e1-external-id-of-the-organization";

fn watched() -> &'static std::sync::RwLock<Vec<String>> {
    static WATCHED: OnceLock<std::sync::RwLock<Vec<String>>> = OnceLock::new();
    WATCHED.get_or_init(|| {
        std::sync::RwLock::new(vec![
            SENTINEL_API_KEY.to_owned(),
            SENTINEL_EXTERNAL_ID.to_owned(),
        ])
    })
}

/// From now on, a log line holding `secret` is a leak.
pub fn watch_secret(secret: &str) {
    if secret.len() < 8 {
        return;
    }
    let mut watched = watched().write().expect("watched secrets");
    if !watched.iter().any(|s| s == secret) {
        watched.push(secret.to_owned());
    }
}

/// Watches every `external_id` an API answer hands out.
pub fn watch_external_ids(body: &serde_json::Value) {
    match body {
        serde_json::Value::Object(o) => {
            for (k, v) in o {
                match (k.as_str(), v) {
                    ("external_id", serde_json::Value::String(id)) => watch_secret(id),
                    (_, v) => watch_external_ids(v),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(watch_external_ids),
        _ => {}
    }
}

/// Where leaked lines go, for `scripts/test` to fail the run on: `target/leaks/`.
pub fn leaks_dir() -> PathBuf {
    repo_root().join("target").join("leaks")
}

/// A secret watched to prove the tap works: caught like any other, but not a failure of the run.
pub const CANARY_PREFIX: &str = "canary-";

fn leaks() -> &'static Mutex<Vec<String>> {
    static LEAKS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    LEAKS.get_or_init(Mutex::default)
}

static TAPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines of this test process that held a watched secret (the secret masked; a canary's
/// masked as `<CANARY>`).
pub fn leaked_lines() -> Vec<String> {
    leaks().lock().expect("leaks").clone()
}

/// Log lines the tap has read in this process, of every level and crate.
pub fn tapped_lines() -> u64 {
    TAPPED.load(Ordering::Relaxed)
}

/// Reads every log line the functions would write at TRACE, for watched secrets.
struct LeakTap;

impl std::io::Write for LeakTap {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        TAPPED.fetch_add(1, Ordering::Relaxed);
        let line = String::from_utf8_lossy(buf);
        let watched = watched().read().expect("watched secrets");
        if let Some(secret) = watched.iter().find(|s| line.contains(s.as_str())) {
            let canary = secret.starts_with(CANARY_PREFIX);
            let mask = if canary {
                "<CANARY>"
            } else {
                "<WATCHED SECRET>"
            };
            let masked = line.replace(secret.as_str(), mask);
            leaks().lock().expect("leaks").push(masked.clone());
            if canary {
                return Ok(buf.len());
            }
            let dir = leaks_dir();
            let _ = std::fs::create_dir_all(&dir);
            if let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{}.log", std::process::id())))
            {
                let _ = std::io::Write::write_all(&mut file, masked.as_bytes());
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The test process's one global subscriber: the INFO JSON lines Lambda would keep, for
/// [`with_captured_logs`], and the leak tap on every line the functions would write with
/// Lambda's log level at TRACE (`audit_log::logging`'s filter). `emulator()` installs it, so
/// every test that talks to the emulator is watched.
pub fn install_log_tap() {
    install_subscriber(None);
}

/// [`install_log_tap`], plus the lines that `directives` (`RUST_LOG` syntax; `error` when
/// empty) let through, as text on stderr, with the dependencies never below INFO, as in the
/// functions: the output of a command such as `./scripts/local`. Call it before anything
/// talks to the emulator; the first installation in a process is the one that stays. Every
/// line still goes through the leak tap.
pub fn install_log_tap_echoing(directives: &str) {
    install_subscriber(Some(directives));
}

fn install_subscriber(echo: Option<&str>) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{FilterExt, LevelFilter};
    use tracing_subscriber::layer::SubscriberExt;
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let lambda = tracing_subscriber::fmt::layer()
            .json()
            .with_writer(|| ThreadSink)
            .with_filter(LevelFilter::INFO);
        let tap = tracing_subscriber::fmt::layer()
            .json()
            .with_writer(|| LeakTap)
            .with_filter(audit_log::logging::dependencies_at_info());
        let echo = echo.map(|directives| {
            // ERROR unless the directives name a level of their own.
            let chosen =
                audit_log::logging::chosen_levels(None, Some(&format!("error,{directives}")));
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(chosen.and(audit_log::logging::dependencies_at_info()))
        });
        let subscriber = tracing_subscriber::registry()
            .with(lambda)
            .with(tap)
            .with(echo);
        tracing::subscriber::set_global_default(subscriber).expect(
            "another global subscriber was installed before the log tap: \
             use install_log_tap_echoing instead of one of your own",
        );
    });
}

/// Runs `work` on a runtime of its own thread and returns its result with every log line it
/// wrote, as the functions write them in Lambda (JSON, INFO and above). One global subscriber
/// serves every test, so no callsite is ever cached as disabled.
pub fn with_captured_logs<F: std::future::Future>(
    work: impl FnOnce() -> F,
) -> (F::Output, Vec<serde_json::Value>) {
    install_log_tap();
    let sink = Arc::new(Mutex::new(Vec::new()));
    LOG_SINK.with(|s| *s.borrow_mut() = Some(sink.clone()));
    let output = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("test runtime")
        .block_on(work());
    LOG_SINK.with(|s| *s.borrow_mut() = None);
    let text = String::from_utf8(sink.lock().expect("log sink").clone()).expect("UTF-8 logs");
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
        .collect();
    (output, lines)
}

/// Records as Lambda sends them (JSON), read as the stream function reads them.
pub fn as_sent(
    records: &[aws_lambda_events::event::dynamodb::EventRecord],
) -> Vec<audit_log_stream::StreamRecord> {
    let sent = serde_json::json!({ "Records": records }).to_string();
    serde_json::from_str::<audit_log_stream::StreamRecords>(&sent)
        .expect("the stream function reads what Lambda sends")
        .records
}

/// Every record the emulator's DynamoDB stream holds for a table, shaped as Lambda hands them to
/// the stream function.
pub async fn stream_records(
    config: &aws_config::SdkConfig,
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Vec<aws_lambda_events::event::dynamodb::EventRecord> {
    stream_records_since(config, dynamodb, table, &HashMap::new())
        .await
        .into_iter()
        .flat_map(|(_, records)| records)
        .collect()
}

/// The ARN of `table`'s stream (`!GetAtt <table>.StreamArn`).
pub async fn stream_arn(dynamodb: &aws_sdk_dynamodb::Client, table: &str) -> String {
    dynamodb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .expect("describe table")
        .table
        .and_then(|t| t.latest_stream_arn)
        .expect("the table has a stream")
}

/// The records of each shard after the given sequence number (from the start for a shard not
/// named), in order.
pub async fn stream_records_since(
    config: &aws_config::SdkConfig,
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    after: &HashMap<String, String>,
) -> Vec<(String, Vec<aws_lambda_events::event::dynamodb::EventRecord>)> {
    use aws_lambda_events::event::dynamodb::EventRecord;
    use aws_sdk_dynamodbstreams::types::ShardIteratorType;
    let streams = aws_sdk_dynamodbstreams::Client::new(config);
    let arn = stream_arn(dynamodb, table).await;
    let shards = streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .expect("describe stream")
        .stream_description
        .map(|d| d.shards.unwrap_or_default())
        .unwrap_or_default();
    let mut out = Vec::new();
    for shard in shards {
        let shard_id = shard.shard_id.clone().unwrap_or_default();
        let start = streams
            .get_shard_iterator()
            .stream_arn(&arn)
            .shard_id(&shard_id);
        let start = match after.get(&shard_id) {
            Some(seq) => start
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq),
            None => start.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let mut iterator = start.send().await.expect("shard iterator").shard_iterator;
        let mut records_of_shard = Vec::new();
        while let Some(it) = iterator {
            let page = streams
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .expect("get records");
            let records = page.records.unwrap_or_default();
            if records.is_empty() {
                break;
            }
            for r in records {
                let change = r.dynamodb.expect("stream record");
                let mut record = EventRecord::default();
                record.event_id = r.event_id.unwrap_or_default();
                record.event_name = r
                    .event_name
                    .map(|n| n.as_str().to_owned())
                    .unwrap_or_default();
                record.event_source = Some("aws:dynamodb".into());
                record.aws_region = "us-east-1".into();
                record.event_source_arn = Some(arn.clone());
                record.change.sequence_number = change.sequence_number;
                record.change.keys = change.keys.unwrap_or_default().into();
                record.change.new_image = change.new_image.unwrap_or_default().into();
                record.change.old_image = change.old_image.unwrap_or_default().into();
                records_of_shard.push(record);
            }
            iterator = page.next_shard_iterator;
        }
        out.push((shard_id, records_of_shard));
    }
    out
}

/// An API Gateway HTTP API (payload 2.0) request, shaped as `sam local generate-event` makes
/// one, with the given method, path, query, headers, body and verified JWT claims.
/// [`api_request`] with a raw query string (`a=1&b=x%20y`), as a URL carries it.
pub fn api_request_with_query(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    claims: Option<&[(&str, &str)]>,
) -> aws_lambda_events::event::apigw::ApiGatewayV2httpRequest {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    api_request(method, path, &pairs, headers, body, claims)
}

pub fn api_request(
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
    body: Option<&str>,
    claims: Option<&[(&str, &str)]>,
) -> aws_lambda_events::event::apigw::ApiGatewayV2httpRequest {
    let fixture = std::fs::read_to_string(
        repo_root().join("tests/fixtures/lambda/apigw-http-api-request.json"),
    )
    .expect("API Gateway fixture");
    let mut v: serde_json::Value = serde_json::from_str(&fixture).expect("fixture parses");
    v["rawPath"] = path.into();
    v["routeKey"] = format!("{method} {path}").into();
    v["requestContext"]["http"]["method"] = method.into();
    v["requestContext"]["http"]["path"] = path.into();
    v["rawQueryString"] = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query)
        .finish()
        .into();
    // As API Gateway's payload 2.0 gives them: a repeated parameter's values joined by commas.
    let mut parameters = serde_json::Map::new();
    for (k, val) in query {
        match parameters.get_mut(*k) {
            Some(serde_json::Value::String(joined)) => *joined = format!("{joined},{val}"),
            _ => {
                parameters.insert(k.to_string(), (*val).into());
            }
        }
    }
    v["queryStringParameters"] = parameters.into();
    let mut all_headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, val)| (k.to_lowercase(), (*val).into()))
        .collect();
    all_headers.insert("content-type".into(), "application/json".into());
    v["headers"] = all_headers.into();
    v["cookies"] = serde_json::Value::Array(vec![]);
    match body {
        Some(b) => v["body"] = b.into(),
        None => {
            v.as_object_mut().expect("object").remove("body");
        }
    }
    v["isBase64Encoded"] = false.into();
    match claims {
        Some(claims) => {
            v["requestContext"]["authorizer"]["jwt"]["claims"] = claims
                .iter()
                .map(|(k, val)| (k.to_string(), serde_json::Value::from(*val)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        None => {
            v["requestContext"]
                .as_object_mut()
                .expect("object")
                .remove("authorizer");
        }
    }
    serde_json::from_value(v).expect("a valid API Gateway request")
}

/// `functions/api/openapi.yaml`, to hold responses to.
pub struct OpenApi {
    pub doc: serde_json::Value,
}

impl OpenApi {
    pub fn load() -> Self {
        let text = std::fs::read_to_string(repo_root().join("functions/api/openapi.yaml"))
            .expect("openapi.yaml");
        let yaml: Yaml = serde_yaml::from_str(&text).expect("openapi.yaml is YAML");
        Self {
            doc: serde_json::to_value(yaml).expect("openapi.yaml as JSON"),
        }
    }

    /// Every documented `(method, path template)`.
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (path, item) in self.doc["paths"].as_object().expect("paths") {
            for method in ["get", "put", "post", "delete"] {
                if item.get(method).is_some() {
                    out.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    fn resolve<'a>(&'a self, v: &'a serde_json::Value) -> &'a serde_json::Value {
        match v.get("$ref").and_then(|r| r.as_str()) {
            Some(r) => self
                .doc
                .pointer(r.trim_start_matches('#'))
                .expect("a $ref that resolves"),
            None => v,
        }
    }

    /// Panics unless the status is documented for the operation and the body matches its schema.
    pub fn check(
        &self,
        method: &str,
        template: &str,
        status: u16,
        body: Option<&serde_json::Value>,
    ) {
        let operation = &self.doc["paths"][template][method.to_lowercase()];
        assert!(
            !operation.is_null(),
            "{method} {template} is not documented"
        );
        let response = operation["responses"]
            .get(status.to_string())
            .unwrap_or_else(|| panic!("{method} {template} does not document status {status}"));
        let response = self.resolve(response);
        match (response["content"]["application/json"].get("schema"), body) {
            (None, None) => {}
            (None, Some(b)) => panic!("{method} {template} {status} documents no body, got {b}"),
            (Some(_), None) => panic!("{method} {template} {status} documents a body, got none"),
            (Some(schema), Some(body)) => {
                let mut root = self.doc.clone();
                root["allOf"] = serde_json::json!([schema]);
                let validator = jsonschema::options()
                    .should_validate_formats(true)
                    .build(&root)
                    .expect("a valid schema");
                let errors: Vec<String> = validator
                    .iter_errors(body)
                    .map(|e| format!("{e} at {}", e.instance_path()))
                    .collect();
                assert!(
                    errors.is_empty(),
                    "{method} {template} {status}: {errors:?}\n{body}"
                );
                if let Some(code) = body["error"]["code"].as_str() {
                    assert_eq!(
                        self.error_codes().get(code),
                        Some(&status),
                        "{method} {template}: error code `{code}` with status {status} is not \
                         listed with it in the Error schema's `code` description"
                    );
                }
            }
        }
    }

    /// The function's error codes as the `Error` schema lists them: `400 `a`, `b`; 401 `c``.
    fn error_codes(&self) -> std::collections::HashMap<String, u16> {
        let listed =
            self.doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]
                ["description"]
                .as_str()
                .expect("the Error schema's codes");
        let mut codes = std::collections::HashMap::new();
        for part in listed.split(';') {
            let status: u16 = part
                .split(|c: char| !c.is_ascii_digit())
                .find(|n| n.len() == 3)
                .and_then(|n| n.parse().ok())
                .expect("a status before its codes");
            for code in part.split('`').skip(1).step_by(2) {
                codes.insert(code.to_owned(), status);
            }
        }
        codes
    }
}

/// The customer's CloudWatch Logs as the customer sees it: credentials of the assumed role.
pub async fn customer_logs(
    config: &aws_config::SdkConfig,
    role_arn: &str,
    region: &str,
) -> aws_sdk_cloudwatchlogs::Client {
    let c = aws_sdk_sts::Client::new(config)
        .assume_role()
        .role_arn(role_arn)
        .role_session_name("customer")
        .send()
        .await
        .expect("assume the customer's role")
        .credentials
        .expect("credentials");
    let credentials = aws_sdk_sts::config::Credentials::new(
        c.access_key_id,
        c.secret_access_key,
        Some(c.session_token),
        None,
        "customer",
    );
    aws_sdk_cloudwatchlogs::Client::from_conf(
        aws_sdk_cloudwatchlogs::config::Builder::from(config)
            .region(aws_sdk_cloudwatchlogs::config::Region::new(
                region.to_owned(),
            ))
            .credentials_provider(credentials)
            .build(),
    )
}

/// Writes `(message id, event)` pairs into the events table as capture wrote them before events
/// were packed (issue 16), alternately as text and gzipped, kept a day.
pub async fn store_as_before(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    events: &[(String, serde_json::Value)],
) {
    let expires_at = time::OffsetDateTime::now_utc().unix_timestamp() + 86_400;
    for (i, (message_id, e)) in events.iter().enumerate() {
        let event = audit_log::AuditEvent::from_value(e.clone()).expect("a valid event");
        let item = audit_log::fixtures::item_written_before_packing(
            &event,
            message_id,
            i % 2 == 1,
            expires_at,
        );
        dynamodb
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .send()
            .await
            .expect("an item written");
    }
}
