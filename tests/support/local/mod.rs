//! The whole service on one machine: every queue and table created from `template.yaml` in the
//! local AWS emulator, the three functions' own handlers, and the event source mappings Lambda
//! would run in between (SQS → capture with the template's redrive rule; the events table's
//! stream → stream, in order per shard, retrying from the reported record).
//!
//! Here: the stack itself (`Stack`) and the operator's settings. Beside it: the mappings, lanes
//! settled, the events a registry produces, what the destinations received, and a whole run.

mod destinations;
mod lanes;
mod mappings;
mod registry;
mod run;

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
pub use destinations::*;
pub use lanes::*;
pub use mappings::*;
pub use registry::*;
pub use run::*;
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
    /// The events table's stream.
    pub events_stream_arn: String,
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
        use audit_log::settings::{self, env, optional_env};
        Ok(Self {
            log_group_prefix: settings::log_group_prefix_from_env()?,
            retention: Retention::from_env()?,
            organization_claim: optional_env(env::ORGANIZATION_CLAIM)
                .unwrap_or_else(|| audit_log_api::DEFAULT_ORGANIZATION_CLAIM.into()),
            service_account_id: Some(
                settings::service_account_from_env()?
                    .unwrap_or_else(|| LOCAL_SERVICE_ACCOUNT.into()),
            ),
            datadog_endpoint_override: settings::datadog_endpoint_override_from_env()?,
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
        let events_table = create_table(&dynamodb, "EventsTable").await;
        Self {
            events_stream_arn: crate::stream_arn(&dynamodb, &events_table).await,
            events_table,
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
                events_stream_arn: self.events_stream_arn.clone(),
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

/// How the local console signs in: with the development header, unless `CONSOLE_ISSUER` and
/// `CONSOLE_CLIENT_ID` name an OpenID Connect client as in AWS (the console's sign-in test).
fn local_sign_in() -> audit_log_api::console::SignIn {
    use audit_log_api::console::SignIn;
    SignIn::oidc_from_env().unwrap_or(SignIn::Development)
}
