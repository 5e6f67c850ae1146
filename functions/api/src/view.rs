//! What the API answers: the streaming view, a connection test's result, a page of events, an
//! export.

use audit_log::destination::Destination;
use audit_log::lane::{Lane, LaneState};
use audit_log::streaming::{
    Export, ExportFormat, ExportState, FAILING_AFTER, Health, StreamingConfig,
};
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;

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
    /// The same counts hour by hour, oldest first: the console's chart.
    pub hours_24h: Vec<HourView>,
    /// The delivery lane: `delivering`, `retrying`, `refused` or `paused`.
    pub state: &'static str,
    /// Events owed to the destination.
    pub pending: u64,
    pub oldest_pending_at: Option<String>,
    /// When a retrying or refused destination is tried next.
    pub next_attempt_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct HourView {
    /// Start of the hour.
    pub hour: String,
    pub delivered: u64,
    pub failed: u64,
}

fn rfc3339_ms(ms: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    t.replace_millisecond(0)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

impl HealthView {
    /// Health from the recorded deliveries and the lane (`oldest_owed_ms`: when its oldest
    /// owed event became owed). A lane retrying or refused, or owing an event for more than
    /// five minutes, is `failing`, as of `now`.
    pub fn at(
        h: &Health,
        lane: &Lane,
        oldest_owed_ms: Option<i64>,
        now: time::OffsetDateTime,
    ) -> Self {
        let (delivered_24h, failed_24h) = h.counts_24h(now);
        let hours_24h = h
            .hourly_24h(now)
            .into_iter()
            .map(|(hour, delivered, failed)| HourView {
                hour: rfc3339_ms(hour * 3_600_000).unwrap_or_default(),
                delivered,
                failed,
            })
            .collect();
        let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
        let owed_too_long =
            oldest_owed_ms.is_some_and(|at| now_ms - at > FAILING_AFTER.as_millis() as i64);
        let status =
            if matches!(lane.state, LaneState::Retrying | LaneState::Refused) || owed_too_long {
                "failing"
            } else {
                h.status_at(now)
            };
        let next_attempt_at = match lane.state {
            // A refused lane is probed too, at the longest backoff, so a fix made where the
            // service cannot see it is noticed: when is worth showing.
            LaneState::Retrying | LaneState::Refused | LaneState::CatchingUp => {
                lane.next_attempt_at.and_then(rfc3339_ms)
            }
            LaneState::Delivering | LaneState::Paused => None,
        };
        Self {
            status,
            last_success_at: h.last_success_at.clone(),
            last_failure_at: h.last_failure_at.clone(),
            last_error: h.last_error.clone(),
            failing_since: h.failing_since.clone(),
            seconds_since_last_success: h.seconds_since_last_success(now),
            delivered_24h,
            failed_24h,
            hours_24h,
            state: lane.state.shown(),
            pending: lane.owed,
            oldest_pending_at: oldest_owed_ms.and_then(rfc3339_ms),
            next_attempt_at,
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

/// A failure as `GET /streaming/failures` lists it, its event as stored (`None` once gone): text,
/// never a `Value`, which would round a number past `f64`'s digits.
#[derive(Debug, Serialize)]
pub struct FailureView {
    pub event_id: String,
    pub failed_at: String,
    pub reason: String,
    pub event: Option<Box<RawValue>>,
}

#[derive(Debug, Serialize)]
pub struct FailurePage {
    pub failures: Vec<FailureView>,
    pub next_cursor: Option<String>,
}

/// An export as the API shows it; `download_url` and when it stops working once completed.
#[derive(Debug, Serialize)]
pub struct ExportView {
    pub id: String,
    pub state: ExportState,
    pub format: ExportFormat,
    pub since: Option<String>,
    pub until: String,
    pub filters: BTreeMap<String, String>,
    pub events: u64,
    pub bytes: u64,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub download_url: Option<String>,
    pub expires_at: Option<String>,
    pub error: Option<String>,
}

impl ExportView {
    pub fn of(export: &Export, download: Option<(String, String)>) -> Self {
        let (download_url, expires_at) = download.unzip();
        Self {
            id: export.export_id.clone(),
            state: export.state,
            format: export.format,
            since: export.since.clone(),
            until: export.until.clone(),
            filters: export.filters.clone(),
            events: export.events,
            bytes: export.bytes,
            created_at: export.created_at.clone(),
            finished_at: export.finished_at.clone(),
            download_url,
            expires_at,
            error: export.error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_owed_for_more_than_five_minutes_make_the_destination_failing() {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let now_ms = 1_800_000_000_000;
        let delivered = Health {
            last_success_at: Some("2027-01-15T08:00:00Z".into()),
            ..Default::default()
        };
        let five_minutes = FAILING_AFTER.as_millis() as i64;
        let status = |owed_since: i64| {
            HealthView::at(&delivered, &Lane::default(), Some(owed_since), now).status
        };
        assert_eq!(status(now_ms - five_minutes), "healthy");
        assert_eq!(status(now_ms - five_minutes - 1), "failing");
    }

    #[test]
    fn a_retrying_or_refused_lane_shows_when_it_is_tried_next() {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let next = |state| {
            let lane = Lane {
                state,
                next_attempt_at: Some(1_800_000_300_000),
                ..Lane::default()
            };
            HealthView::at(&Health::default(), &lane, None, now).next_attempt_at
        };
        let at = Some("2027-01-15T08:05:00Z".to_string());
        assert_eq!(next(LaneState::Retrying), at);
        assert_eq!(next(LaneState::Refused), at);
        assert_eq!(next(LaneState::CatchingUp), at);
        assert_eq!(next(LaneState::Paused), None);
        assert_eq!(next(LaneState::Delivering), None);
    }
}
