//! The whole service on one machine: every queue and table created from `template.yaml` in the
//! local AWS emulator, the three functions' own handlers, and the event source mappings Lambda
//! would run in between (SQS → capture with the template's redrive rule; the events table's
//! stream → stream, in order per shard, retrying from the reported record).

use crate::faults::{AwsFaults, AwsProxy, DatadogFaults, DatadogIntake, Kills};
use crate::{create_table, failed_ids, resource, stream_records_since, template, unique};
use audit_log::Retention;
use audit_log::message::group_of;
use audit_log::store::EventTable;
use audit_log_api::Api;
use audit_log_capture::{Capture, RetryQueue};
use audit_log_stream::{Stream, StreamRecord, StreamRecords};
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// The stored item as a newer release may have packed it, read after a rollback: its event in
/// a zstd frame that names a dictionary this release does not have.
pub fn packed_by_a_newer_release(
    mut item: HashMap<String, AttributeValue>,
) -> HashMap<String, AttributeValue> {
    let Some(AttributeValue::B(packed)) = item.get("event") else {
        panic!("a packed event");
    };
    let bytes = audit_log::fixtures::packed_with_another_dictionary(packed.clone().into_inner());
    item.insert("event".into(), AttributeValue::B(bytes.into()));
    item
}

/// Resources of one local stack, named afresh for each run.
#[derive(Clone)]
pub struct Stack {
    pub aws: aws_config::SdkConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    /// What the functions reach AWS through: the emulator, or a proxy that injects faults.
    pub functions_aws: aws_config::SdkConfig,
    /// Queue URLs by logical id (`EventsQueue`, `EventsRetryQueue`, `EventsDeadLetterQueue`,
    /// `StreamFailureQueue`...).
    pub queues: HashMap<String, String>,
    /// Each queue's ARN, by logical id.
    pub queue_arns: HashMap<String, String>,
    pub events_table: String,
    pub config_table: String,
    pub export_bucket: String,
    pub secret_prefix: String,
    /// The operator's settings the functions are given.
    pub operator: Operator,
}

/// The service's AWS ID in a local run that sets none: the emulator has one account, where
/// every customer's role lives (`123456789012`, the contract's example), and a role in the
/// service's own account is refused, so the service stands apart from it (AWS's documentation
/// account).
pub const LOCAL_SERVICE_ACCOUNT: &str = "111122223333";

/// The operator's settings (the contract's environment) a local run gives its functions, as
/// the deployed functions read them.
#[derive(Debug, Clone)]
pub struct Operator {
    pub log_group_prefix: String,
    pub retention: Retention,
    pub organization_claim: String,
    /// `None`: the functions' own account, as the emulator's STS names it.
    pub service_account_id: Option<String>,
    /// Where `--serve`'s api and stream send Datadog's requests instead of the runner's
    /// stand-in.
    pub datadog_endpoint_override: Option<String>,
    /// The lanes' `DELIVERY_RETRY_*` settings.
    pub lanes: audit_log::lane::Policy,
}

impl Operator {
    /// The template's defaults, under `log_group_prefix`.
    pub fn with_prefix(log_group_prefix: impl Into<String>) -> Self {
        let retention = number(&template()["Parameters"]["RetentionDays"]["Default"])
            .expect("retention default");
        Self {
            log_group_prefix: log_group_prefix.into(),
            retention: Retention::days(retention as u32)
                .expect("the template's retention is valid"),
            organization_claim: audit_log_api::DEFAULT_ORGANIZATION_CLAIM.into(),
            service_account_id: None,
            datadog_endpoint_override: None,
            lanes: audit_log::lane::Policy::default(),
        }
    }

    /// Read as the functions read them; a value they would refuse to start with is an error.
    pub fn from_env() -> Result<Self, audit_log::settings::SettingsError> {
        use audit_log::settings::{env, optional_env};
        Ok(Self {
            log_group_prefix: audit_log::settings::log_group_prefix_from_env()?,
            retention: Retention::from_env()?,
            organization_claim: optional_env(env::ORGANIZATION_CLAIM)
                .unwrap_or_else(|| audit_log_api::DEFAULT_ORGANIZATION_CLAIM.into()),
            service_account_id: Some(
                optional_env(env::SERVICE_ACCOUNT).unwrap_or_else(|| LOCAL_SERVICE_ACCOUNT.into()),
            ),
            datadog_endpoint_override: optional_env(env::DATADOG_ENDPOINT_OVERRIDE),
            lanes: audit_log::lane::Policy::from_env()?,
        })
    }
}

fn number(v: &serde_yaml::Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

impl Stack {
    /// Creates every queue and table the template declares; its functions get the template's
    /// defaults, under `log_group_prefix`.
    pub async fn create(aws: &aws_config::SdkConfig, log_group_prefix: &str) -> Self {
        Self::create_for(aws, Operator::with_prefix(log_group_prefix)).await
    }

    /// [`Stack::create`], its functions given the operator's settings.
    pub async fn create_for(aws: &aws_config::SdkConfig, operator: Operator) -> Self {
        let dynamodb = aws_sdk_dynamodb::Client::new(aws);
        let sqs = aws_sdk_sqs::Client::new(aws);
        let mut queues = HashMap::new();
        let mut arns = HashMap::new();
        let resources = template()["Resources"].as_mapping().expect("resources");
        let mut logical: Vec<(&str, &serde_yaml::Value)> = resources
            .iter()
            .filter(|(_, r)| r["Type"].as_str() == Some("AWS::SQS::Queue"))
            .map(|(k, r)| (k.as_str().expect("name"), &r["Properties"]))
            .collect();
        // Dead-letter queues first: the others name them.
        logical.sort_by_key(|(_, p)| !p["RedrivePolicy"].is_null());
        for (name, props) in logical {
            let mut create = sqs.create_queue().queue_name(unique(&name.to_lowercase()));
            for (attribute, key) in [
                (QueueAttributeName::VisibilityTimeout, "VisibilityTimeout"),
                (
                    QueueAttributeName::MessageRetentionPeriod,
                    "MessageRetentionPeriod",
                ),
                (QueueAttributeName::MaximumMessageSize, "MaximumMessageSize"),
            ] {
                if let Some(n) = number(&props[key]) {
                    create = create.attributes(attribute, n.to_string());
                }
            }
            let redrive = &props["RedrivePolicy"];
            if !redrive.is_null() {
                let target = match &redrive["deadLetterTargetArn"] {
                    serde_yaml::Value::Tagged(t) => t
                        .value
                        .as_str()
                        .expect("!GetAtt X.Arn")
                        .trim_end_matches(".Arn")
                        .to_owned(),
                    other => panic!("unexpected dead-letter target {other:?}"),
                };
                let policy = json!({
                    "deadLetterTargetArn": arns[&target],
                    "maxReceiveCount": number(&redrive["maxReceiveCount"]).expect("maxReceiveCount"),
                });
                create = create.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
            }
            let url = create
                .send()
                .await
                .expect("create queue")
                .queue_url
                .expect("url");
            let arn = crate::queue_arn(&sqs, &url).await;
            arns.insert(name.to_owned(), arn);
            queues.insert(name.to_owned(), url);
        }
        Self {
            events_table: create_table(&dynamodb, "EventsTable").await,
            config_table: create_table(&dynamodb, "ConfigTable").await,
            export_bucket: create_bucket(aws).await,
            aws: aws.clone(),
            functions_aws: aws.clone(),
            dynamodb,
            sqs,
            queues,
            queue_arns: arns,
            secret_prefix: format!("{}/streaming/", unique("local")),
            operator,
        }
    }

    /// The functions built from now on reach AWS through `aws` (the runner itself does not).
    pub fn functions_through(&mut self, aws: aws_config::SdkConfig) {
        self.functions_aws = aws;
    }

    pub fn queue(&self, logical_id: &str) -> &str {
        &self.queues[logical_id]
    }

    /// The capture function, built as its `main.rs` builds it, but that events it sends to
    /// the retry queue come back at once rather than after SQS's 15 minutes, and go round for
    /// [`LOCAL_REQUEUE_WINDOW`] rather than 4 days.
    pub fn capture(&self) -> Capture {
        let dynamodb = aws_sdk_dynamodb::Client::new(&self.functions_aws);
        let sqs = aws_sdk_sqs::Client::new(&self.functions_aws);
        Capture::new(
            EventTable::new(dynamodb.clone(), &self.events_table),
            audit_log::streaming::ConfigTable::new(dynamodb, &self.config_table),
            self.operator.retention,
        )
        .with_requeue(RetryQueue::new(sqs, self.queue("EventsRetryQueue")).with_delay(0))
        .with_requeue_window(LOCAL_REQUEUE_WINDOW)
    }

    /// The stream function, from the settings its `main.rs` reads.
    pub fn stream(&self, datadog: Option<String>) -> Stream {
        Stream::from_settings(
            &audit_log_stream::Settings {
                config_table: self.config_table.clone(),
                events_table: self.events_table.clone(),
                secret_prefix: self.secret_prefix.clone(),
                log_group_prefix: self.operator.log_group_prefix.clone(),
                replay_queue_url: self.queue("ReplayQueue").to_owned(),
                lane_queue_url: self.queue("LaneQueue").to_owned(),
                deferred_queue_url: self.queue("DeferredQueue").to_owned(),
                // The operator's settings when given, as the deployed function reads them;
                // every call goes to the emulator, which answers slowly under load where a
                // destination would not: no lane is set aside as slow.
                lanes: audit_log::lane::Policy {
                    slow_after: Duration::MAX,
                    ..self.operator.lanes.clone()
                },
                datadog_endpoint_override: datadog,
            },
            &self.functions_aws,
        )
    }

    /// The api function, from the settings its `main.rs` reads.
    pub fn api(&self, datadog: Option<String>) -> Api {
        Api::new(
            audit_log_api::Settings {
                events_table: self.events_table.clone(),
                config_table: self.config_table.clone(),
                events_queue_url: self.queue("EventsQueue").to_owned(),
                replay_queue_url: self.queue("ReplayQueue").to_owned(),
                lane_queue_url: self.queue("LaneQueue").to_owned(),
                export_queue_url: self.queue("ExportQueue").to_owned(),
                export_bucket: self.export_bucket.clone(),
                secret_prefix: self.secret_prefix.clone(),
                log_group_prefix: self.operator.log_group_prefix.clone(),
                organization_claim: self.operator.organization_claim.clone(),
                service_account_id: self.operator.service_account_id.clone(),
                datadog_endpoint_override: datadog,
                console: local_sign_in(),
                lanes: self.operator.lanes.clone(),
                retention: self.operator.retention,
            },
            &self.functions_aws,
        )
    }

    /// Sends bodies to the events queue, ten per request, each in its organization's message
    /// group as the README asks of producers (a body that names none goes in none).
    pub async fn send(&self, bodies: &[String]) {
        for (chunk_index, chunk) in bodies.chunks(10).enumerate() {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(format!("m{chunk_index}-{i}"))
                        .set_message_group_id(
                            organization_named(body)
                                .filter(|o| !o.is_empty())
                                .map(|o| group_of(&o)),
                        )
                        .message_body(body)
                        .build()
                        .expect("entry")
                })
                .collect();
            let out = self
                .sqs
                .send_message_batch()
                .queue_url(self.queue("EventsQueue"))
                .set_entries(Some(entries))
                .send()
                .await
                .expect("send to the events queue");
            assert!(
                out.failed.is_empty(),
                "SQS refused messages: {:?}",
                out.failed
            );
        }
    }

    /// Messages waiting in a queue, visible or in flight.
    pub async fn depth(&self, logical_id: &str) -> u64 {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(self.queue(logical_id))
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .unwrap_or_default();
        [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .filter_map(|a| attributes.get(a)?.parse::<u64>().ok())
        .sum()
    }

    /// Messages on a queue, delayed ones too (which [`Stack::depth`] leaves out).
    pub async fn waiting(&self, logical_id: &str) -> u64 {
        let delayed = self
            .sqs
            .get_queue_attributes()
            .queue_url(self.queue(logical_id))
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .unwrap_or_default()
            .get(&QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        delayed + self.depth(logical_id).await
    }

    /// The project's stored items, oldest first, as the events table keeps them.
    pub async fn stored_items(
        &self,
        organization_id: &str,
        project_id: &str,
    ) -> Vec<HashMap<String, AttributeValue>> {
        let partition = audit_log::store::partition_key(organization_id, project_id);
        self.dynamodb
            .query()
            .table_name(&self.events_table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(partition))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .expect("the project's items")
    }

    /// Stores the item over the one under its key.
    pub async fn overwrite_item(&self, item: HashMap<String, AttributeValue>) {
        self.dynamodb
            .put_item()
            .table_name(&self.events_table)
            .set_item(Some(item))
            .send()
            .await
            .expect("the item stored");
    }

    /// Every body in a queue (received and deleted).
    pub async fn take_all(&self, logical_id: &str) -> Vec<String> {
        crate::take_all(&self.sqs, self.queue(logical_id)).await
    }
}

fn function_timeout(function: &str) -> Duration {
    Duration::from_secs(number(&resource(function)["Timeout"]).expect("timeout"))
}

/// How long locally an event the tables keep refusing goes round the retry queue before it is
/// handed back for the dead-letter queue: well past any fault a local run injects, short enough
/// that a table that never comes back ends a run (the retry queue, undelayed, would spin).
pub const LOCAL_REQUEUE_WINDOW: Duration = Duration::from_secs(600);

/// What the SQS event source mapping did.
#[derive(Debug, Default, Clone, Copy)]
pub struct CaptureRun {
    pub invocations: usize,
    pub deleted: usize,
    pub returned: usize,
    /// Invocations that died before answering (their messages came back).
    pub killed: usize,
}

impl CaptureRun {
    /// This run, and then `more`.
    pub fn and(&self, more: &CaptureRun) -> CaptureRun {
        CaptureRun {
            invocations: self.invocations + more.invocations,
            deleted: self.deleted + more.deleted,
            returned: self.returned + more.returned,
            killed: self.killed + more.killed,
        }
    }
}

/// The SQS event source mappings: batches of the template's size to capture, from the events
/// queue and from the retry queue; what capture reports failed is made visible again (SQS's
/// redrive policy dead-letters it after `maxReceiveCount` receives); the rest is deleted. Runs
/// until both queues are empty.
pub async fn drain_events_queue(
    stack: &Stack,
    capture: &Capture,
    progress: impl FnMut(&CaptureRun),
) -> CaptureRun {
    drain_events_queue_with(stack, capture, None, progress).await
}

/// [`drain_events_queue`] where some invocations die (`kills`). Capture keeps nothing between
/// invocations, so the instance that takes the next batch is as good as a restarted one.
pub async fn drain_events_queue_with(
    stack: &Stack,
    capture: &Capture,
    kills: Option<&Kills>,
    mut progress: impl FnMut(&CaptureRun),
) -> CaptureRun {
    let timeout = function_timeout("CaptureFunction");
    let invoke = |event: SqsEvent| async move {
        let ids: Vec<String> = event
            .records
            .iter()
            .filter_map(|r| r.message_id.clone())
            .collect();
        let invocation = capture.handle(lambda_runtime::LambdaEvent::new(
            event.into(),
            crate::invocation_context(timeout),
        ));
        let answer = match kills {
            Some(kills) => kills.run("capture", invocation).await?,
            None => invocation.await,
        };
        Some(match answer {
            Ok(response) => response
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect(),
            // The whole batch failed: every message goes back.
            Err(_) => ids,
        })
    };
    let mut run = CaptureRun::default();
    loop {
        for (queue, mapping) in [
            ("EventsQueue", "AuditEvents"),
            ("EventsRetryQueue", "RetriedEvents"),
        ] {
            let source = &resource("CaptureFunction")["Events"][mapping]["Properties"];
            let batch_size = number(&source["BatchSize"]).unwrap_or(10) as usize;
            let done = run;
            let part = drain_queue(stack, queue, batch_size, invoke, |part: &CaptureRun| {
                progress(&done.and(part))
            })
            .await;
            run = run.and(&part);
        }
        if stack.depth("EventsQueue").await == 0 && stack.depth("EventsRetryQueue").await == 0 {
            return run;
        }
    }
}

/// The stream function's SQS mappings: lanes' scheduled calls that are due, batches whose
/// retries ran out (handed to the lanes again) and replays (run part by part), until none of
/// these queues has a message ready.
pub async fn drain_stream_queues(stack: &Stack, stream: &Stream) {
    drain_stream_queues_with(stack, stream, None).await;
}

/// [`drain_stream_queues`] where some invocations die and the function restarts.
pub async fn drain_stream_queues_with(stack: &Stack, stream: &Stream, faults: Option<&Faulty<'_>>) {
    let timeout = function_timeout("StreamFunction");
    for (queue, mapping) in [
        ("LaneQueue", "LaneCalls"),
        ("DeferredQueue", "DeferredEvents"),
        ("StreamFailureQueue", "ExhaustedDeliveries"),
        ("ReplayQueue", "Replays"),
    ] {
        let properties = &resource("StreamFunction")["Events"][mapping]["Properties"];
        let batch_size = number(&properties["BatchSize"]).unwrap_or(10) as usize;
        drain_queue(
            stack,
            queue,
            batch_size,
            |event| async move {
                let instance = faults.and_then(Faulty::restarted);
                let current = instance.as_deref().unwrap_or(stream);
                // On the heap: the handlers' futures are large, and a debug build's stack is not.
                let invocation = Box::pin(current.handle_queue(lambda_runtime::LambdaEvent::new(
                    event,
                    crate::invocation_context(timeout),
                )));
                let response = match faults {
                    Some(faults) => faults.run(invocation).await?,
                    None => invocation.await,
                };
                Some(failed_ids(&response))
            },
            |_| {},
        )
        .await;
    }
}

/// The api function's SQS mapping: export steps, each handing on to the next, until the export
/// queue is empty.
pub async fn drain_export_queue(stack: &Stack, api: &Api) -> CaptureRun {
    let timeout = function_timeout("ApiFunction");
    let properties = &resource("ApiFunction")["Events"]["ExportSteps"]["Properties"];
    let batch_size = number(&properties["BatchSize"]).unwrap_or(10) as usize;
    drain_queue(
        stack,
        "ExportQueue",
        batch_size,
        |event| async move {
            let deadline = audit_log::retry::deadline_before(
                crate::invocation_context(timeout).deadline(),
                Duration::from_secs(2),
            );
            Some(failed_ids(
                &Box::pin(api.handle_exports(event, deadline)).await,
            ))
        },
        |_| {},
    )
    .await
}

/// The template's export bucket, with its lifecycle rules.
async fn create_bucket(aws: &aws_config::SdkConfig) -> String {
    let s3 = crate::s3(aws);
    let name = unique("exports");
    s3.create_bucket()
        .bucket(&name)
        .send()
        .await
        .expect("create the export bucket");
    name
}

/// Runs the stream function's queues as time passes (lanes schedule their calls as delayed
/// messages) until every lane delivers and owes nothing, or `limit` passes. Whether they did.
pub async fn settle_lanes(
    stack: &Stack,
    stream: &Stream,
    faults: Option<&Faulty<'_>>,
    limit: Duration,
) -> bool {
    settle(stack, stream, faults, limit, false).await
}

/// [`settle_lanes`], and nothing left on the deferred queue either: events deferred by the
/// service's own trouble (which no lane counts as owed) have come back and been handed on.
pub async fn settle_lanes_and_deferrals(
    stack: &Stack,
    stream: &Stream,
    faults: Option<&Faulty<'_>>,
    limit: Duration,
) -> bool {
    settle(stack, stream, faults, limit, true).await
}

async fn settle(
    stack: &Stack,
    stream: &Stream,
    faults: Option<&Faulty<'_>>,
    limit: Duration,
    deferrals: bool,
) -> bool {
    let started = std::time::Instant::now();
    loop {
        drain_stream_queues_with(stack, stream, faults).await;
        if lanes_settled(stack).await && (!deferrals || stack.waiting("DeferredQueue").await == 0) {
            return true;
        }
        if started.elapsed() > limit {
            return false;
        }
        // Delayed messages become visible as real time passes.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A configured lane as the harness watches it: its project's item and whether any event is
/// still owed to it.
struct WatchedLane {
    sort_key: String,
    lane: audit_log::lane::Lane,
    owes: bool,
}

/// Every configured lane (owed items of a project whose configuration was deleted are not
/// watched: no run here deletes one), read without walking what lanes owe: the project items
/// through a filtered scan, then each lane's oldest owed event as health reads it. (Scanning
/// the whole table every tick took most of a minute per look once tens of thousands of
/// events were owed, slower than the lanes paid them back.)
async fn watched_lanes(stack: &Stack) -> Vec<WatchedLane> {
    use audit_log::streaming::attr::{ORGANIZATION_ID, PROJECT_ID, SORT_KEY};
    let text = |item: &HashMap<String, AttributeValue>, name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    };
    let projects: Vec<HashMap<String, AttributeValue>> = stack
        .dynamodb
        .scan()
        .table_name(&stack.config_table)
        .filter_expression("begins_with(#sk, :project)")
        .expression_attribute_names("#sk", SORT_KEY)
        .expression_attribute_values(":project", AttributeValue::S("project#".into()))
        .into_paginator()
        .items()
        .send()
        .collect::<Result<_, _>>()
        .await
        .expect("scan the configured projects");
    let configs =
        audit_log::streaming::ConfigTable::new(stack.dynamodb.clone(), &stack.config_table);
    let mut out = Vec::with_capacity(projects.len());
    for item in projects {
        let lane =
            audit_log::lane::LaneKey::new(text(&item, ORGANIZATION_ID), text(&item, PROJECT_ID));
        let state = audit_log::streaming::lane_of(&item);
        let span = audit_log::lane::OwedSpan::of(&state);
        let oldest = audit_log::lane::LaneStore::oldest_owed_at(&configs, &lane, span)
            .await
            .expect("query a lane's oldest owed event");
        out.push(WatchedLane {
            owes: oldest.is_some(),
            lane: state,
            sort_key: text(&item, SORT_KEY),
        });
    }
    out
}

/// The lanes that do not deliver, or owe events: `project state (owed n)`.
pub async fn lanes_unsettled(stack: &Stack) -> Vec<String> {
    watched_lanes(stack)
        .await
        .into_iter()
        .filter(|w| w.owes || w.lane.state != audit_log::lane::LaneState::Delivering)
        .map(|w| {
            format!(
                "{} {:?} (owes events: {}, owed count {}, next attempt {:?})",
                w.sort_key, w.lane.state, w.owes, w.lane.owed, w.lane.next_attempt_at
            )
        })
        .collect()
}

/// Every configured lane delivers and nothing is owed.
pub async fn lanes_settled(stack: &Stack) -> bool {
    lanes_unsettled(stack).await.is_empty()
}

/// Lane timings for a run whose outages are `time_scale` times shorter than in AWS.
pub fn compressed_lanes(time_scale: u32) -> audit_log::lane::Policy {
    let request = audit_log::destination::datadog::REQUEST_TIMEOUT * 2 / time_scale;
    audit_log::lane::Policy {
        first_backoff: Duration::from_millis(500),
        budget: request,
        catch_up_budget: request * 2,
        // The emulator, not the destination, is what answers slowly under load here.
        slow_after: Duration::MAX,
        lease: Duration::from_secs(120) / time_scale,
        lost_after: audit_log::lane::Policy::default().lost_after / time_scale,
        housekeeping: Duration::from_secs(900) / time_scale,
        // The lanes queue delays in whole seconds.
        deferral: Duration::from_secs(1),
        ..audit_log::lane::Policy::new(
            audit_log::lane::Policy::default().retry_window,
            Duration::from_secs(2),
        )
    }
}

/// Stream invocations that die, and the function coming back after a death: a fresh instance
/// (a cold start, with nothing remembered) takes every invocation after it.
pub struct Faulty<'a> {
    kills: &'a Kills,
    restart: &'a (dyn Fn() -> Stream + Sync),
    fresh: std::sync::Mutex<Option<std::sync::Arc<Stream>>>,
}

impl<'a> Faulty<'a> {
    pub fn new(kills: &'a Kills, restart: &'a (dyn Fn() -> Stream + Sync)) -> Self {
        Self {
            kills,
            restart,
            fresh: Default::default(),
        }
    }

    /// The instance started after the last death, if one died.
    fn restarted(&self) -> Option<std::sync::Arc<Stream>> {
        self.fresh.lock().expect("instance").clone()
    }

    /// Runs an invocation, unless it dies: None then, and the next one gets a fresh instance.
    async fn run<T>(&self, invocation: impl std::future::Future<Output = T>) -> Option<T> {
        let answer = self.kills.run("stream", invocation).await;
        if answer.is_none() {
            *self.fresh.lock().expect("instance") = Some(std::sync::Arc::new((self.restart)()));
        }
        answer
    }
}

/// The queues only the service writes to: every message on them is about one organization's
/// work, and goes in its message group.
const SERVICE_QUEUES: [&str; 5] = [
    "LaneQueue",
    "DeferredQueue",
    "ReplayQueue",
    "ExportQueue",
    // Events sent again keep the group they came in (here their organization's), or take it.
    "EventsRetryQueue",
];

/// Panics unless the message's group is the organization its body names.
fn in_its_organizations_group(logical_id: &str, m: &aws_sdk_sqs::types::Message) {
    let body = m.body.as_deref().unwrap_or_default();
    let organization = organization_named(body)
        .unwrap_or_else(|| panic!("a message on {logical_id} names no organization: {body}"));
    let group = m
        .attributes
        .as_ref()
        .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId));
    assert_eq!(
        group.map(String::as_str),
        Some(group_of(&organization).as_str()),
        "a message on {logical_id} is not in its organization's group: {body}"
    );
}

/// The organization a queued body is about: an event's, an export step's or a replay part's
/// `organization_id`, a lane call's lane's, deferred events'.
fn organization_named(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    [
        "/organization_id",
        "/lane_call/lane/organization_id",
        "/deferred/organization_id",
    ]
    .iter()
    .find_map(|pointer| v.pointer(pointer)?.as_str().map(str::to_owned))
}

/// An SQS event source mapping with `ReportBatchItemFailures`: `handler` answers the ids that
/// failed, or None when the invocation died; those become visible again, the rest is deleted.
pub async fn drain_queue<F, Fut>(
    stack: &Stack,
    logical_id: &str,
    batch_size: usize,
    mut handler: F,
    mut progress: impl FnMut(&CaptureRun),
) -> CaptureRun
where
    F: FnMut(SqsEvent) -> Fut,
    Fut: std::future::Future<Output = Option<Vec<String>>>,
{
    let queue = stack.queue(logical_id).to_owned();
    let arn = stack.queue_arns[logical_id].clone();
    let mut run = CaptureRun::default();
    loop {
        let mut messages = Vec::new();
        while messages.len() < batch_size {
            let got = stack
                .sqs
                .receive_message()
                .queue_url(&queue)
                .max_number_of_messages(10.min(batch_size) as i32)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .expect("receive")
                .messages
                .unwrap_or_default();
            if got.is_empty() {
                break;
            }
            messages.extend(got);
        }
        if SERVICE_QUEUES.contains(&logical_id) {
            for m in &messages {
                in_its_organizations_group(logical_id, m);
            }
        }
        if messages.is_empty() {
            if stack.depth(logical_id).await == 0 {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let mut event = SqsEvent::default();
        event.records = messages
            .iter()
            .map(|m| {
                let mut record = SqsMessage::default();
                record.message_id = m.message_id.clone();
                record.receipt_handle = m.receipt_handle.clone();
                record.body = m.body.clone();
                record.attributes = m
                    .attributes
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v))
                    .collect();
                record.message_attributes = m
                    .message_attributes
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(name, value)| {
                        let mut attribute = SqsMessageAttribute::default();
                        attribute.data_type = Some(value.data_type);
                        attribute.string_value = value.string_value;
                        (name, attribute)
                    })
                    .collect();
                record.event_source = Some("aws:sqs".into());
                record.event_source_arn = Some(arn.clone());
                record.aws_region = Some("us-east-1".into());
                record
            })
            .collect();
        run.invocations += 1;
        let answer = handler(event).await;
        if answer.is_none() {
            run.killed += 1;
        }
        let (back, done): (Vec<_>, Vec<_>) = messages.into_iter().partition(|m| match &answer {
            Some(failed) => m.message_id.as_ref().is_some_and(|id| failed.contains(id)),
            // Lambda never heard back: every message returns when its visibility times out.
            None => true,
        });
        for m in &back {
            // Lambda lets the visibility timeout run out; locally it is cut short.
            stack
                .sqs
                .change_message_visibility()
                .queue_url(&queue)
                .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                .visibility_timeout(0)
                .send()
                .await
                .expect("return a message");
        }
        for chunk in done.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                        .build()
                        .expect("entry")
                })
                .collect();
            stack
                .sqs
                .delete_message_batch()
                .queue_url(&queue)
                .set_entries(Some(entries))
                .send()
                .await
                .expect("delete handled messages");
        }
        run.deleted += done.len();
        run.returned += back.len();
        progress(&run);
    }
}

/// What the DynamoDB stream event source mapping did.
#[derive(Debug, Default, Clone, Copy)]
pub struct StreamRun {
    pub invocations: usize,
    pub records: usize,
    pub retries: usize,
    pub sent_to_failure_queue: usize,
    /// Invocations that died before answering (their batch was retried by a fresh instance).
    pub killed: usize,
}

/// The DynamoDB stream event source mapping, run over everything the stream holds after
/// `after` (a sequence number per shard): `INSERT` records only (the template's filter), in
/// order, in batches of the template's size; a reported failure is retried from that record
/// up to the template's `MaximumRetryAttempts`, then the batch's range goes to the on-failure
/// queue. Returns the last sequence number seen per shard.
pub async fn drain_stream(
    stack: &Stack,
    stream: &Stream,
    after: &HashMap<String, String>,
    run: &mut StreamRun,
    progress: impl FnMut(&StreamRun),
) -> HashMap<String, String> {
    drain_stream_within(
        stack,
        stream,
        after,
        run,
        &StreamLimits::from_template(),
        progress,
    )
    .await
}

/// The stream mapping's limits: the function's timeout, the retries of a failed batch and the
/// largest batch.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    pub timeout: Duration,
    pub max_retries: usize,
    pub batch_size: usize,
}

impl StreamLimits {
    pub fn from_template() -> Self {
        let mapping = &resource("StreamFunction")["Events"]["StoredEvents"]["Properties"];
        Self {
            timeout: function_timeout("StreamFunction"),
            max_retries: number(&mapping["MaximumRetryAttempts"]).unwrap_or(0) as usize,
            batch_size: number(&mapping["BatchSize"]).unwrap_or(100) as usize,
        }
    }
}

/// [`drain_stream`] with other limits (tests make a failing destination give up sooner).
pub async fn drain_stream_within(
    stack: &Stack,
    stream: &Stream,
    after: &HashMap<String, String>,
    run: &mut StreamRun,
    limits: &StreamLimits,
    progress: impl FnMut(&StreamRun),
) -> HashMap<String, String> {
    drain_stream_with(stack, stream, after, run, limits, None, progress).await
}

/// [`drain_stream_within`] where some invocations die: Lambda retries the batch (it counts as
/// an attempt) on a fresh instance, which remembers nothing of what was delivered.
pub async fn drain_stream_with(
    stack: &Stack,
    stream: &Stream,
    after: &HashMap<String, String>,
    run: &mut StreamRun,
    limits: &StreamLimits,
    faults: Option<&Faulty<'_>>,
    mut progress: impl FnMut(&StreamRun),
) -> HashMap<String, String> {
    let (timeout, max_retries, batch_size) =
        (limits.timeout, limits.max_retries, limits.batch_size);
    let mut last = after.clone();
    for (shard, records) in
        stream_records_since(&stack.aws, &stack.dynamodb, &stack.events_table, after).await
    {
        let stream_arn = records.first().and_then(|r| r.event_source_arn.clone());
        let inserts: Vec<StreamRecord> = crate::as_sent(&records)
            .into_iter()
            .filter(|r| r.event_name == "INSERT")
            .collect();
        for batch in inserts.chunks(batch_size) {
            let mut pending: &[StreamRecord] = batch;
            let mut attempts = 0;
            loop {
                let event = StreamRecords {
                    records: pending.to_vec(),
                };
                run.invocations += 1;
                let instance = faults.and_then(Faulty::restarted);
                let current = instance.as_deref().unwrap_or(stream);
                // On the heap: the handlers' futures are large, and a debug build's stack is not.
                let invocation = Box::pin(current.handle_stream(lambda_runtime::LambdaEvent::new(
                    event,
                    crate::invocation_context(timeout),
                )));
                let response = match faults {
                    Some(faults) => faults.run(invocation).await,
                    None => Some(invocation.await),
                };
                let failed = match response {
                    Some(response) => match response
                        .batch_item_failures
                        .first()
                        .and_then(|f| f.item_identifier.clone())
                    {
                        Some(failed) => failed,
                        None => break,
                    },
                    // A death fails the whole batch.
                    None => {
                        run.killed += 1;
                        match pending
                            .first()
                            .and_then(|r| r.change.sequence_number.clone())
                        {
                            Some(first) => first,
                            None => break,
                        }
                    }
                };
                attempts += 1;
                if attempts > max_retries {
                    let record = json!({
                        "requestContext": {"condition": "RetryAttemptsExhausted"},
                        "DDBStreamBatchInfo": {
                            "streamArn": stream_arn,
                            "shardId": shard,
                            "startSequenceNumber": failed,
                            "endSequenceNumber": pending.last().and_then(|r| r.change.sequence_number.clone()),
                            "batchSize": pending.len(),
                        }
                    });
                    stack
                        .sqs
                        .send_message()
                        .queue_url(stack.queue("StreamFailureQueue"))
                        .message_body(record.to_string())
                        .send()
                        .await
                        .expect("on-failure destination");
                    run.sent_to_failure_queue += 1;
                    break;
                }
                run.retries += 1;
                let from = pending
                    .iter()
                    .position(|r| r.change.sequence_number.as_deref() == Some(failed.as_str()))
                    .unwrap_or(0);
                pending = &pending[from..];
            }
            run.records += batch.len();
            progress(run);
        }
        if let Some(seq) = records
            .last()
            .and_then(|r| r.change.sequence_number.clone())
        {
            last.insert(shard, seq);
        }
    }
    last
}

// ---- events a registry produces ---------------------------------------------------------------

/// Random choices from a seed, so a run can be repeated exactly.
pub struct Dice(rand::rngs::StdRng);

impl Dice {
    pub fn new(seed: u64) -> Self {
        use rand::SeedableRng;
        Self(rand::rngs::StdRng::seed_from_u64(seed))
    }

    pub fn number(&mut self) -> u64 {
        rand::Rng::random(&mut self.0)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        rand::Rng::random_range(&mut self.0, 0..n)
    }

    /// A ULID-shaped id, as HCP Packer's.
    pub fn ulid(&mut self) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        (0..26)
            .map(|_| ALPHABET[self.below(32) as usize] as char)
            .collect()
    }
}

/// An organization's project, as the generator and the runner see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Project {
    pub organization_id: String,
    pub project_id: String,
}

/// `n` events of a registry's everyday life (buckets, versions, builds, channels; users and
/// services; some failures), spread over `projects`, dated within the last hour.
pub fn generate(n: usize, projects: &[Project], dice: &mut Dice) -> Vec<Value> {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("zero is valid");
    (0..n)
        .map(|i| {
            let project = &projects[dice.below(projects.len() as u64) as usize];
            let when = now - Duration::from_secs(3600 - (i as u64 * 3600 / n.max(1) as u64));
            let actor = if dice.below(3) == 0 {
                json!({"principal_id": format!("packer-ci@{}", project.organization_id), "type": "TYPE_SERVICE",
                       "service": {"id": format!("packer-ci@{}", project.organization_id), "name": "packer-ci", "user_managed": true}})
            } else {
                let user = dice.ulid().to_lowercase();
                json!({"principal_id": user, "type": "TYPE_USER",
                       "user": {"id": user, "email": format!("{}@example.com", &user[..8]), "name": format!("{}@example.com", &user[..8])}})
            };
            let bucket = json!({"id": dice.ulid(), "name": format!("ubuntu-{}", dice.below(20))});
            let version = json!({"id": dice.ulid(), "fingerprint": format!("f{}", dice.below(1000)), "name": format!("v{}", dice.below(50))});
            let build = json!({"id": dice.ulid(), "platform": "aws", "component_type": "amazon-ebs.ubuntu",
                               "artifacts": [{"region": "us-west-2", "external_identifier": format!("ami-{:08x}", dice.number() as u32)}],
                               "labels": {"os": "ubuntu"}});
            let (action, description, extra) = match dice.below(8) {
                0 => ("create", "Created bucket", json!({"bucket": bucket})),
                1 => ("update", "Updated bucket labels", json!({"bucket": bucket})),
                2 => ("create", "Created version", json!({"bucket": bucket, "version": version})),
                3 => ("update", "Revoked version", json!({"bucket": bucket, "version": version, "builds": [build]})),
                4 => ("create", "Created build", json!({"bucket": bucket, "version": version, "build": build})),
                5 => ("update", "Updated build", json!({"bucket": bucket, "version": version, "build": build})),
                6 => ("update", "Assigned version to channel", json!({"bucket": bucket, "version": version, "builds": [build],
                        "channel": {"id": dice.ulid(), "name": "production", "managed": false, "restricted": true}})),
                _ => ("delete", "Deleted channel", json!({"bucket": bucket, "channel": {"id": dice.ulid(), "name": "staging"}})),
            };
            let failed = dice.below(20) == 0;
            let mut event = json!({
                "status": if failed { "FAILED" } else { "OK" },
                "action": action,
                "description": description,
                "organization_id": project.organization_id,
                "project_id": project.project_id,
                "registry": {"id": format!("reg-{}", project.project_id)},
                "timestamp": (when).format(&time::format_description::well_known::Rfc3339).expect("formats"),
                "actor": actor,
            });
            for (k, v) in extra.as_object().expect("object") {
                event[k] = v.clone();
            }
            if failed {
                event["error"] = json!("rpc error: code = FailedPrecondition desc = the operation was refused");
            }
            event
        })
        .collect()
}

/// Bodies capture must refuse, one of each kind.
pub fn invalid_bodies(n: usize, project: &Project) -> Vec<String> {
    let kinds = [
        "not json at all".to_owned(),
        "{\"status\": \"OK\",".to_owned(),
        json!({"status": "OK", "action": "create", "description": "no actor", "organization_id": project.organization_id,
               "project_id": project.project_id, "timestamp": "2026-01-01T00:00:00Z"}).to_string(),
        json!({"status": "MAYBE", "action": "create", "description": "bad status", "organization_id": project.organization_id,
               "project_id": project.project_id, "timestamp": "2026-01-01T00:00:00Z", "actor": {"principal_id": "p", "type": "TYPE_USER"}}).to_string(),
        json!({"status": "OK", "action": "create", "description": "bad time", "organization_id": project.organization_id,
               "project_id": project.project_id, "timestamp": "yesterday", "actor": {"principal_id": "p", "type": "TYPE_USER"}}).to_string(),
    ];
    (0..n).map(|i| kinds[i % kinds.len()].clone()).collect()
}

// ---- a whole run ------------------------------------------------------------------------------

/// What a run does.
#[derive(Debug, Clone)]
pub struct Options {
    /// Generated events, on top of the seed's examples.
    pub events: usize,
    /// Bodies capture must refuse.
    pub invalid: usize,
    /// Deliver to a local Datadog stand-in instead of the emulator's CloudWatch Logs.
    pub datadog: bool,
    pub seed: u64,
    pub operator: Operator,
    /// Print progress and the summary.
    pub verbose: bool,
    /// Faults to inject on the way, or none.
    pub faults: Option<FaultPlan>,
}

/// The faults a run injects. Lambda's timeouts, Datadog's request timeout and the outage run
/// `time_scale` times faster than in AWS, so a run stays short and keeps their proportions.
#[derive(Debug, Clone, Copy)]
pub struct FaultPlan {
    pub seed: u64,
    /// Share of capture and stream invocations that die before answering (half of them after
    /// their work, half part-way); Lambda gives their batch to a fresh instance.
    pub kills: f64,
    pub aws: AwsFaults,
    pub datadog: DatadogFaults,
    pub time_scale: u32,
    /// Stream batches as live traffic makes them: the mapping's one-second window fills with
    /// this many events (the template's `BatchSize` is the most a backlog gets).
    pub stream_batch: usize,
}

impl FaultPlan {
    /// The reliability suite's faults: every kind at once, and a 10-minute outage of the
    /// destination from its first delivery.
    pub fn standard(seed: u64) -> Self {
        let time_scale = 10;
        let outage = Duration::from_secs(600) / time_scale;
        Self {
            seed,
            kills: 0.05,
            aws: AwsFaults {
                dynamodb_throttling: 0.1,
                dynamodb_unprocessed: 0.2,
                logs_throttling: 0.1,
                // A rejection is of one event, for good: listed as a failure, never retried. It
                // has its own tests; here every event must arrive by itself.
                logs_rejected: 0.0,
                logs_outage: Some(outage),
                seed,
            },
            datadog: DatadogFaults {
                failing: 0.1,
                too_late: audit_log::destination::datadog::REQUEST_TIMEOUT * 2 / time_scale,
                outage: Some(outage),
                seed,
            },
            time_scale,
            stream_batch: 100,
        }
    }
}

/// How long each part of a run took.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    /// Sending every message and capturing it.
    pub capture: Duration,
    /// The stream delivering the stored backlog, retries and the on-failure queue included.
    pub delivery: Duration,
    /// The lanes catching up after the backlog was handed to them (outages included).
    pub recovery: Duration,
}

/// What happened, and whether every promise held.
#[derive(Debug, Default)]
pub struct Report {
    pub provider: &'static str,
    pub sent_valid: usize,
    pub sent_invalid: usize,
    pub stored: usize,
    /// Items whose event is the same as another item's.
    pub stored_twice: usize,
    pub rejected: usize,
    pub delivered: usize,
    /// Stored events missing at their destination.
    pub undelivered: usize,
    /// Events at a destination more often than they were stored.
    pub delivered_twice: usize,
    pub per_project: Vec<(Project, usize, usize)>,
    pub where_delivered: String,
    pub sample: Option<String>,
    pub capture: CaptureRun,
    pub stream: StreamRun,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, usize>,
    /// Events listed by `GET /streaming/failures` once the lanes caught up.
    pub listed_failures: usize,
    /// Events still listed as failed at the end.
    pub timings: Timings,
    pub problems: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Valid events never stored, and stored events never delivered.
    pub fn lost(&self) -> usize {
        let distinct = self.stored - self.stored_twice;
        self.sent_valid.saturating_sub(distinct) + self.undelivered
    }

    pub fn faults_injected(&self) -> usize {
        self.faults.values().sum()
    }

    /// Valid events from the first message sent to the last delivery, per second.
    pub fn events_per_second(&self) -> f64 {
        let t = &self.timings;
        self.sent_valid as f64 / (t.capture + t.delivery + t.recovery).as_secs_f64()
    }

    /// From the whole backlog stored to the last event delivered.
    pub fn drain(&self) -> Duration {
        self.timings.delivery + self.timings.recovery
    }
}

/// Messages sent before capture takes its turn.
const SEND_SLICE: usize = 100;

/// The customer account a local organization's role lives in.
fn customer_account(index: usize) -> String {
    format!("{:012}", 210_000_000_000u64 + index as u64)
}

fn role_arn(index: usize) -> String {
    format!(
        "arn:aws:iam::{}:role/hcp-log-streaming",
        customer_account(index)
    )
}

/// The organization's (seed-compatible) projects: the seed's own, and two per generated one.
fn projects(dice: &mut Dice) -> Vec<Project> {
    let mut out = vec![Project {
        organization_id: "77f447d4-def0-46f2-bf09-6850d36745ed".into(),
        project_id: "a98c3c31-5760-4db1-b62b-0988080a66ad".into(),
    }];
    for _ in 0..2 {
        let organization_id = format!("org-{}", dice.ulid().to_lowercase());
        for _ in 0..2 {
            out.push(Project {
                organization_id: organization_id.clone(),
                project_id: format!("project-{}", dice.ulid().to_lowercase()),
            });
        }
    }
    out
}

/// A request to the api function as a member of the project's organization.
pub async fn call_api(
    api: &Api,
    project: &Project,
    method: &str,
    suffix: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let (suffix, query) = suffix.split_once('?').unwrap_or((suffix, ""));
    let path = format!(
        "/v1/organizations/{}/projects/{}/audit-logs{suffix}",
        project.organization_id, project.project_id
    );
    let text = body.map(Value::to_string);
    let claims = [
        (api.organization_claim(), project.organization_id.as_str()),
        ("sub", "local-runner"),
        ("email", "runner@localhost"),
    ];
    let request =
        crate::api_request_with_query(method, &path, query, &[], text.as_deref(), Some(&claims));
    let response = api.respond(&request).await;
    let body = match response.body {
        Some(aws_lambda_events::encodings::Body::Text(t)) => {
            serde_json::from_str(&t).unwrap_or(Value::Null)
        }
        _ => Value::Null,
    };
    crate::watch_external_ids(&body);
    (response.status_code as u16, body)
}

/// JSON with every object's keys sorted, to compare values whatever their field order.
pub fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(o) => {
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&o[k])))
                        .collect(),
                )
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

/// A Datadog log entry back to the event it carries (the inverse of the service's encoding).
pub fn event_of_datadog_entry(entry: &Value) -> Value {
    let mut event = entry.as_object().cloned().unwrap_or_default();
    for reserved in audit_log::destination::datadog::RESERVED {
        let original = event.remove(&format!("event_{reserved}"));
        match (reserved, original) {
            (_, Some(v)) => {
                event.insert(reserved.to_owned(), v);
            }
            ("timestamp", None) => {}
            (_, None) => {
                event.remove(reserved);
            }
        }
    }
    // `message` was the description, written again.
    Value::Object(event)
}

/// The Datadog stand-in: accepts keys and logs like the real intake.
pub async fn datadog_stand_in() -> wiremock::MockServer {
    DatadogIntake::start(DatadogFaults::default()).await.server
}

/// Every log entry the stand-in received.
pub async fn datadog_entries(server: &wiremock::MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/api/v2/logs")
        .flat_map(crate::faults::log_entries)
        .collect()
}

/// Every event in a log stream of the customer's account.
async fn cloudwatch_messages(
    aws: &aws_config::SdkConfig,
    role: &str,
    group: &str,
    stream: &str,
) -> Vec<String> {
    let logs = crate::customer_logs(aws, role, "us-east-1").await;
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = match logs
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await
        {
            Ok(page) => page,
            Err(_) => return out,
        };
        let events = page.events.unwrap_or_default();
        let next = page.next_forward_token;
        if events.is_empty() || next == token {
            return out;
        }
        out.extend(events.into_iter().filter_map(|e| e.message));
        token = next;
    }
}

/// Every failure of a project `GET /streaming/failures` lists, `page` at a time.
pub async fn listed_failures(
    api: &Api,
    project: &Project,
    page: usize,
) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let suffix = match &cursor {
            Some(c) => format!("/streaming/failures?limit={page}&cursor={c}"),
            None => format!("/streaming/failures?limit={page}"),
        };
        let (status, page) = call_api(api, project, "GET", &suffix, None).await;
        if status != 200 {
            return Err(format!("listing failures answered {status}: {page}"));
        }
        let Some(failures) = page["failures"].as_array() else {
            return Err(format!(
                "listing failures answered no failures array: {page}"
            ));
        };
        out.extend(failures.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(out),
        }
    }
}

/// Runs the whole service over generated events, with the faults `options` asks for, and
/// checks every promise.
pub async fn run(
    aws: &aws_config::SdkConfig,
    options: &Options,
) -> (Report, Stack, Option<DatadogIntake>) {
    let started = std::time::Instant::now();
    let say = |line: String| {
        if options.verbose {
            eprintln!("[{:6.1} s] {line}", started.elapsed().as_secs_f64());
        }
    };
    let plan = options.faults;
    let mut stack = Stack::create_for(aws, options.operator.clone()).await;
    // The functions reach AWS through a proxy that injects faults; the runner's own checks
    // read the emulator directly.
    let proxy = match plan {
        Some(plan) => {
            let upstream = std::env::var("AWS_ENDPOINT_URL").expect("the emulator's address");
            let proxy = AwsProxy::start(upstream, plan.aws).await;
            // Set when loading: an endpoint set later on the built configuration loses to the
            // AWS_ENDPOINT_URL the emulator's configuration came from.
            stack.functions_through(aws_config::from_env().endpoint_url(&proxy.url).load().await);
            Some(proxy)
        }
        None => None,
    };
    // The proxy's faults are off while the customer sets up and while the runner checks.
    let aws_faults = |on: bool| {
        if let Some(proxy) = &proxy {
            proxy.enable(on);
        }
    };
    let datadog = if options.datadog {
        Some(DatadogIntake::start(plan.map(|p| p.datadog).unwrap_or_default()).await)
    } else {
        None
    };
    let datadog_url = datadog.as_ref().map(|d| d.uri());
    let new_stream = || {
        let stream = stack.stream(datadog_url.clone());
        match plan {
            Some(plan) => stream
                .with_datadog(
                    audit_log::destination::datadog::DatadogClient::with_timeout(
                        datadog_url.clone(),
                        audit_log::destination::datadog::REQUEST_TIMEOUT / plan.time_scale,
                    ),
                )
                .with_lanes(compressed_lanes(plan.time_scale)),
            None => stream,
        }
    };
    let kills = plan.map(|p| Kills::new(p.kills, p.seed));
    let faulty = kills.as_ref().map(|kills| Faulty::new(kills, &new_stream));
    let limits = {
        let template = StreamLimits::from_template();
        match plan {
            Some(plan) => StreamLimits {
                timeout: template.timeout / plan.time_scale,
                batch_size: plan.stream_batch,
                ..template
            },
            None => template,
        }
    };
    let (capture, stream, api) = (
        stack.capture(),
        new_stream(),
        stack.api(datadog_url.clone()),
    );
    let mut report = Report {
        provider: if options.datadog {
            "datadog"
        } else {
            "cloudwatch"
        },
        ..Default::default()
    };
    let mut dice = Dice::new(options.seed);
    let projects = projects(&mut dice);
    let organizations: Vec<String> = {
        let mut o: Vec<String> = projects.iter().map(|p| p.organization_id.clone()).collect();
        o.dedup();
        o
    };

    // Destinations, through the api function: test the connection, then save.
    for project in &projects {
        let org_index = organizations
            .iter()
            .position(|o| *o == project.organization_id)
            .unwrap_or(0);
        let body = if options.datadog {
            let key = format!("{:016x}{:016x}", dice.number(), dice.number());
            crate::watch_secret(&key);
            json!({"provider": "datadog", "name": "local-datadog",
                   "datadog": {"site": "datadoghq.com", "api_key": key}})
        } else {
            json!({"provider": "cloudwatch", "name": "local-cloudwatch",
                   "cloudwatch": {"role_arn": role_arn(org_index), "region": "us-east-1"}})
        };
        let (status, tested) =
            call_api(&api, project, "POST", "/streaming/test", Some(&body)).await;
        if status != 200 || tested["success"] != true {
            report.problems.push(format!(
                "test connection for {}/{} failed: {status} {tested}",
                project.organization_id, project.project_id
            ));
            return (report, stack, datadog);
        }
        say(format!(
            "test connection {}/{}: {}",
            project.organization_id,
            project.project_id,
            tested["message"].as_str().unwrap_or_default()
        ));
        let (status, saved) = call_api(&api, project, "PUT", "/streaming", Some(&body)).await;
        if status != 200 {
            report
                .problems
                .push(format!("saving the destination failed: {status} {saved}"));
            return (report, stack, datadog);
        }
    }
    // Each PUT put its own audit event on the queue.
    report.sent_valid += projects.len();

    let mut bodies: Vec<String> = audit_log::fixtures::SEED_EVENTS
        .iter()
        .map(|(_, b)| b.to_string())
        .collect();
    bodies.extend(
        generate(options.events, &projects[1..], &mut dice)
            .iter()
            .map(Value::to_string),
    );
    report.sent_valid += bodies.len();
    let invalid = invalid_bodies(options.invalid, &projects[0]);
    report.sent_invalid = invalid.len();
    // Invalid bodies in among the valid ones, as a producer's mistakes would be.
    for (i, body) in invalid.iter().enumerate() {
        let at = (i * 7919) % (bodies.len() + 1);
        bodies.insert(at, body.clone());
    }
    say(format!(
        "sending {} events ({} invalid) to the events queue{}",
        bodies.len(),
        invalid.len(),
        if plan.is_some() { ", faults on" } else { "" }
    ));
    aws_faults(true);
    // Producers and capture run side by side in Lambda; here they take turns a slice at a time,
    // which also keeps the emulator's queue short (its receive slows down with depth).
    let total = bodies.len() + projects.len();
    let mut last_print = std::time::Instant::now();
    let mut done = 0;
    let capturing = std::time::Instant::now();
    for slice in bodies.chunks(SEND_SLICE) {
        stack.send(slice).await;
        let run = drain_events_queue_with(&stack, &capture, kills.as_ref(), |_| {}).await;
        report.capture.invocations += run.invocations;
        report.capture.deleted += run.deleted;
        report.capture.returned += run.returned;
        report.capture.killed += run.killed;
        done += slice.len();
        if last_print.elapsed() > Duration::from_secs(1) {
            last_print = std::time::Instant::now();
            say(format!("capture: {done} of {total} messages handled"));
        }
    }
    report.timings.capture = capturing.elapsed();
    say(format!(
        "capture: {} invocations ({} killed), {} messages stored, {} handed back until dead-lettered or stored",
        report.capture.invocations,
        report.capture.killed,
        report.capture.deleted,
        report.capture.returned
    ));

    // An outage of the destination starts with its first delivery.
    if let Some(proxy) = &proxy {
        proxy.arm_outage();
    }
    if let (Some(datadog), Some(_)) = (&datadog, plan) {
        datadog.arm();
    }
    let delivering = std::time::Instant::now();
    let mut stream_run = StreamRun::default();
    drain_stream_with(
        &stack,
        &stream,
        &HashMap::new(),
        &mut stream_run,
        &limits,
        faulty.as_ref(),
        |run| {
            if last_print.elapsed() > Duration::from_secs(1) {
                last_print = std::time::Instant::now();
                say(format!(
                    "stream: {} records, {} retries, {} batches to the on-failure queue",
                    run.records, run.retries, run.sent_to_failure_queue
                ));
            }
        },
    )
    .await;
    report.stream = stream_run;
    drain_stream_queues_with(&stack, &stream, faulty.as_ref()).await;
    report.timings.delivery = delivering.elapsed();
    say(format!(
        "stream: {} invocations ({} killed), {} records, {} retries, {} batches to the on-failure queue",
        stream_run.invocations,
        stream_run.killed,
        stream_run.records,
        stream_run.retries,
        stream_run.sent_to_failure_queue
    ));

    // Destinations that were down catch up by themselves: nobody calls replay.
    let recovering = std::time::Instant::now();
    aws_faults(true);
    let outage = plan
        .and_then(|p| p.aws.logs_outage.max(p.datadog.outage))
        .unwrap_or_default();
    if !settle_lanes_and_deferrals(
        &stack,
        &stream,
        faulty.as_ref(),
        outage + Duration::from_secs(120),
    )
    .await
    {
        report.problems.push(format!(
            "the destinations' lanes did not catch up within the outage and two minutes: {}; {} deferred messages still waiting; {} lane calls and {} deferred messages dead-lettered",
            lanes_unsettled(&stack).await.join(", "),
            stack.waiting("DeferredQueue").await,
            stack.depth("LaneDeadLetterQueue").await,
            stack.depth("DeferredDeadLetterQueue").await
        ));
    }
    aws_faults(false);
    report.timings.recovery = recovering.elapsed();
    say(format!(
        "lanes: every destination delivers again and owes nothing ({:.1} s after the backlog)",
        report.timings.recovery.as_secs_f64()
    ));
    for project in &projects {
        match listed_failures(&api, project, 100).await {
            Ok(failures) => report.listed_failures += failures.len(),
            Err(e) => report.problems.push(e),
        }
    }
    if let Some(proxy) = &proxy {
        say(format!(
            "the functions made {} AWS calls through the fault proxy",
            proxy.total()
        ));
    }

    say("checking what was stored, rejected and delivered".into());
    // What was stored.
    let items = crate::scan_all(&stack.dynamodb, &stack.events_table).await;
    report.stored = items.len();
    let mut stored_by_project: HashMap<Project, Vec<String>> = HashMap::new();
    let mut distinct = std::collections::HashSet::new();
    for item in &items {
        let json = audit_log::store::event_json(item).expect("stored event");
        let value: Value = serde_json::from_str(&json).expect("JSON");
        let project = Project {
            organization_id: value["organization_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            project_id: value["project_id"].as_str().unwrap_or_default().to_owned(),
        };
        if !distinct.insert(json.clone()) {
            report.stored_twice += 1;
        }
        stored_by_project.entry(project).or_default().push(json);
    }
    let mut dead_letters = stack.take_all("EventsDeadLetterQueue").await;
    report.rejected = dead_letters.len();
    let mut invalid_sent = invalid.clone();
    dead_letters.sort();
    invalid_sent.sort();
    if dead_letters != invalid_sent {
        report.problems.push(format!(
            "the dead-letter queue holds {} messages that are not the invalid ones sent",
            dead_letters
                .iter()
                .filter(|d| !invalid_sent.contains(d))
                .count()
        ));
    }

    // What arrived.
    let entries = datadog
        .as_ref()
        .map(DatadogIntake::entries)
        .unwrap_or_default();
    let group =
        audit_log::destination::cloudwatch::events_log_group(&options.operator.log_group_prefix);
    for project in &projects {
        let stored = stored_by_project.get(project).cloned().unwrap_or_default();
        // Datadog attributes come back in another order: compare key-sorted.
        let (stored, arrived): (Vec<String>, Vec<String>) = if options.datadog {
            let arrived = entries
                .iter()
                .map(event_of_datadog_entry)
                // "Test connection" logs go to the same intake, and were never stored.
                .filter(|e| e["test"] != true)
                .filter(|e| {
                    e["organization_id"] == project.organization_id.as_str()
                        && e["project_id"] == project.project_id.as_str()
                })
                .map(|e| canonical(&e))
                .collect();
            let stored = stored
                .iter()
                .map(|s| canonical(&serde_json::from_str(s).expect("JSON")))
                .collect();
            (stored, arrived)
        } else {
            let org_index = organizations
                .iter()
                .position(|o| *o == project.organization_id)
                .unwrap_or(0);
            let group_stream = audit_log::destination::cloudwatch::log_stream(&project.project_id);
            (
                stored,
                cloudwatch_messages(aws, &role_arn(org_index), &group, &group_stream).await,
            )
        };
        let mut counts: HashMap<&str, i64> = HashMap::new();
        for s in &stored {
            *counts.entry(s.as_str()).or_default() += 1;
        }
        for a in &arrived {
            *counts.entry(a.as_str()).or_default() -= 1;
        }
        report.undelivered += counts
            .values()
            .filter(|&&c| c > 0)
            .map(|&c| c as usize)
            .sum::<usize>();
        report.delivered_twice += counts
            .values()
            .filter(|&&c| c < 0)
            .map(|&c| (-c) as usize)
            .sum::<usize>();
        report.delivered += arrived.len();
        if report.sample.is_none() {
            // As it arrived: the raw Datadog log, or the CloudWatch message.
            report.sample = match options.datadog {
                true => entries
                    .iter()
                    .find(|e| e["test"] != true)
                    .map(Value::to_string),
                false => arrived.first().cloned(),
            };
        }
        report
            .per_project
            .push((project.clone(), stored.len(), arrived.len()));
    }
    report.where_delivered = if options.datadog {
        format!(
            "Datadog stand-in at {}",
            datadog.as_ref().map(|d| d.uri()).unwrap_or_default()
        )
    } else {
        format!(
            "CloudWatch Logs group {group} (one stream per project) in the customers' accounts {} (us-east-1)",
            (0..organizations.len())
                .map(customer_account)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let injected = [
        proxy.as_ref().map(|p| p.injected.all()),
        datadog.as_ref().map(|d| d.injected().all()),
        kills.as_ref().map(|k| k.injected.all()),
    ];
    for (kind, n) in injected.into_iter().flatten().flatten() {
        report.faults.insert(kind.to_owned(), n);
    }

    if report.stored != report.sent_valid {
        report.problems.push(format!(
            "{} valid events sent but {} stored",
            report.sent_valid, report.stored
        ));
    }
    if report.stored_twice > 0 {
        report
            .problems
            .push(format!("{} events stored twice", report.stored_twice));
    }
    if report.rejected != report.sent_invalid {
        report.problems.push(format!(
            "{} invalid events sent but {} dead-lettered",
            report.sent_invalid, report.rejected
        ));
    }
    if report.undelivered > 0 {
        report.problems.push(format!(
            "{} stored events were not delivered",
            report.undelivered
        ));
    }
    if report.listed_failures > 0 {
        report.problems.push(format!(
            "{} events are listed as failed: every one should have arrived by itself",
            report.listed_failures
        ));
    }
    (report, stack, datadog)
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.faults.is_empty() {
            writeln!(f, "faults injected {:>7}", self.faults_injected())?;
            for (kind, n) in &self.faults {
                writeln!(f, "  {n:>7}  {kind}")?;
            }
        }
        writeln!(
            f,
            "sent        {:>7} valid, {} invalid",
            self.sent_valid, self.sent_invalid
        )?;
        writeln!(
            f,
            "stored      {:>7} ({} twice)",
            self.stored, self.stored_twice
        )?;
        writeln!(
            f,
            "rejected    {:>7} (in the dead-letter queue)",
            self.rejected
        )?;
        writeln!(
            f,
            "delivered   {:>7} to {} ({} missing, {} duplicates)",
            self.delivered, self.provider, self.undelivered, self.delivered_twice
        )?;
        writeln!(f, "lost        {:>7}", self.lost())?;
        if self.listed_failures > 0 {
            writeln!(
                f,
                "failures    {:>7} listed (every event should arrive by itself)",
                self.listed_failures
            )?;
        }
        writeln!(
            f,
            "time        capture {:.1} s, delivery {:.1} s, recovery {:.1} s: {:.0} events/s, backlog drained in {:.1} s",
            self.timings.capture.as_secs_f64(),
            self.timings.delivery.as_secs_f64(),
            self.timings.recovery.as_secs_f64(),
            self.events_per_second(),
            self.drain().as_secs_f64()
        )?;
        writeln!(
            f,
            "\n{:<38} {:<40} {:>7} {:>10}",
            "organization", "project", "stored", "delivered"
        )?;
        for (p, stored, delivered) in &self.per_project {
            writeln!(
                f,
                "{:<38} {:<40} {stored:>7} {delivered:>10}",
                p.organization_id, p.project_id
            )?;
        }
        writeln!(f, "\ndelivered to {}", self.where_delivered)?;
        if let Some(sample) = &self.sample {
            writeln!(f, "\none delivered event, as it arrived:\n{sample}")?;
        }
        if self.ok() {
            writeln!(
                f,
                "\nOK: every valid event stored once and delivered; every invalid one dead-lettered"
            )
        } else {
            writeln!(f, "\nFAILED:")?;
            for p in &self.problems {
                writeln!(f, "  - {p}")?;
            }
            Ok(())
        }
    }
}

/// How the local console signs in: with the development header, unless `CONSOLE_ISSUER` and
/// `CONSOLE_CLIENT_ID` name an OpenID Connect client as in AWS (the console's sign-in test).
fn local_sign_in() -> audit_log_api::console::SignIn {
    use audit_log_api::console::SignIn;
    SignIn::oidc_from_env().unwrap_or(SignIn::Development)
}
