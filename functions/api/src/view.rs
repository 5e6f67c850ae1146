//! What the API answers: the streaming view, a connection test's result, a page of events.

use audit_log::destination::Destination;
use audit_log::streaming::{Health, StreamingConfig};
use serde::Serialize;
use serde_json::value::RawValue;

#[derive(Debug, Serialize)]
pub struct View {
    pub organization_id: String,
    pub project_id: String,
    pub aws_account_id: String,
    pub external_id: String,
    pub destination: Option<DestinationView>,
    pub health: HealthView,
    /// 0 before anything is saved.
    pub version: u64,
    pub updated_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DestinationView {
    pub provider: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloudwatch: Option<CloudWatchView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datadog: Option<DatadogView>,
}

#[derive(Debug, Serialize)]
pub struct CloudWatchView {
    pub role_arn: String,
    pub region: String,
}

#[derive(Debug, Serialize)]
pub struct DatadogView {
    pub site: &'static str,
    pub api_key_last4: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct HealthView {
    pub status: &'static str,
    pub last_success_at: Option<String>,
    pub last_failure_at: Option<String>,
    pub last_error: Option<String>,
    /// Start of the current run of failures, if deliveries are failing.
    pub failing_since: Option<String>,
    pub seconds_since_last_success: Option<i64>,
    pub delivered_24h: u64,
    pub failed_24h: u64,
}

impl From<&Health> for HealthView {
    fn from(h: &Health) -> Self {
        let now = time::OffsetDateTime::now_utc();
        let (delivered_24h, failed_24h) = h.counts_24h(now);
        Self {
            status: h.status_at(now),
            last_success_at: h.last_success_at.clone(),
            last_failure_at: h.last_failure_at.clone(),
            last_error: h.last_error.clone(),
            failing_since: h.failing_since.clone(),
            seconds_since_last_success: h.seconds_since_last_success(now),
            delivered_24h,
            failed_24h,
        }
    }
}

impl From<&StreamingConfig> for DestinationView {
    fn from(c: &StreamingConfig) -> Self {
        let (cloudwatch, datadog) = match &c.destination {
            Destination::Cloudwatch(s) => (
                Some(CloudWatchView {
                    role_arn: s.role_arn.clone(),
                    region: s.region.clone(),
                }),
                None,
            ),
            Destination::Datadog(s) => (
                None,
                Some(DatadogView {
                    site: s.site.as_str(),
                    api_key_last4: c.api_key_last4.clone(),
                }),
            ),
        };
        Self {
            provider: c.destination.provider().as_str(),
            name: c.name.clone(),
            cloudwatch,
            datadog,
        }
    }
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct TestResult {
    pub success: bool,
    pub provider: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_group: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EventPage {
    pub events: Vec<Box<RawValue>>,
    pub next_cursor: Option<String>,
}
