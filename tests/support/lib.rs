//! What the integration tests share: the local AWS emulator's settings, tables built from
//! `template.yaml`'s own definitions (so code and template cannot drift), Lambda event fixtures,
//! and a counter of the requests an SDK client sends.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
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
    aws_config::load_from_env().await
}

/// A name no other test in this run uses, so tests share one emulator without meeting.
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

/// Creates, in the emulator, the table a template resource declares (keys, indexes, stream,
/// TTL) under a fresh name, and returns the name.
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

/// Counts the requests a client sends, by operation (`X-Amz-Target`), retries included.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter(Arc<Mutex<HashMap<String, usize>>>);

impl RequestCounter {
    pub fn count(&self, operation: &str) -> usize {
        let counts = self.0.lock().expect("counter lock");
        counts
            .iter()
            .filter(|(target, _)| target.rsplit('.').next() == Some(operation))
            .map(|(_, n)| n)
            .sum()
    }
}

impl RequestCounter {
    /// Requests of a query-protocol service (STS), which name their action in the body.
    pub fn count_query_action(&self, action: &str) -> usize {
        self.count(&format!("Action={action}"))
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
        let target = match request.headers().get("x-amz-target") {
            Some(target) => target.to_owned(),
            // Query protocol: `Action=AssumeRole&...` in a form body.
            None => request
                .body()
                .bytes()
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|form| form.split('&').find(|p| p.starts_with("Action=")))
                .map(|action| format!("query.{action}"))
                .unwrap_or_else(|| "unknown".to_owned()),
        };
        *self
            .0
            .lock()
            .expect("counter lock")
            .entry(target)
            .or_default() += 1;
        Ok(())
    }
}

/// Runs `work` on its own runtime with a JSON log subscriber (the format the functions use in
/// Lambda) and returns its result with every log line it wrote.
pub fn with_captured_logs<F: std::future::Future>(
    work: impl FnOnce() -> F,
) -> (F::Output, Vec<serde_json::Value>) {
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log sink").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let output = tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test runtime")
            .block_on(work())
    });
    let text = String::from_utf8(sink.0.lock().expect("log sink").clone()).expect("UTF-8 logs");
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
        .collect();
    (output, lines)
}

/// Every record the emulator's DynamoDB stream holds for a table, shaped as Lambda hands them to
/// the stream function.
pub async fn stream_records(
    config: &aws_config::SdkConfig,
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Vec<aws_lambda_events::event::dynamodb::EventRecord> {
    use aws_lambda_events::event::dynamodb::EventRecord;
    use aws_sdk_dynamodbstreams::types::ShardIteratorType;
    let streams = aws_sdk_dynamodbstreams::Client::new(config);
    let arn = dynamodb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .expect("describe table")
        .table
        .and_then(|t| t.latest_stream_arn)
        .expect("the table has a stream");
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
        let mut iterator = streams
            .get_shard_iterator()
            .stream_arn(&arn)
            .shard_id(shard.shard_id.clone().unwrap_or_default())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("shard iterator")
            .shard_iterator;
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
                out.push(record);
            }
            iterator = page.next_shard_iterator;
        }
    }
    out
}
