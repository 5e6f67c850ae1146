//! A destination's delivery health as the stream records it on the project's item: the last
//! success and failure, and counts per hour of the last day.

use super::{ConfigError, ConfigTable, attr, is_condition_failure, key, s, store_error};
use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use std::collections::HashMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// What the last deliveries to the destination did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Health {
    pub last_success_at: Option<String>,
    pub last_failure_at: Option<String>,
    pub last_error: Option<String>,
    /// Start of the current run of failures with no delivery in between.
    pub failing_since: Option<String>,
    /// Whether the last failure was a refusal (fix the setup), not an outage (wait).
    pub last_failure_permanent: bool,
    /// `(epoch hour, delivered, failed)` of the last 24 hours, one slot per hour of the day.
    pub hours: Vec<(i64, u64, u64)>,
}

/// Failures this long with no delivery in between make a destination `failing`; a refusal or
/// a destination that never took an event is `failing` at once.
pub const FAILING_AFTER: std::time::Duration = std::time::Duration::from_secs(300);

fn parse_time(t: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(t, &Rfc3339).ok()
}

impl Health {
    /// `unknown` before any delivery; `failing` per [`FAILING_AFTER`]; `healthy` otherwise.
    pub fn status_at(&self, now: OffsetDateTime) -> &'static str {
        if self.last_success_at.is_none() && self.last_failure_at.is_none() {
            return "unknown";
        }
        let Some(since) = self.failing_since.as_deref().and_then(parse_time) else {
            return "healthy";
        };
        if self.last_success_at.is_none()
            || self.last_failure_permanent
            || now - since >= FAILING_AFTER
        {
            "failing"
        } else {
            "healthy"
        }
    }

    /// Events delivered and failed over the 24 hours before `now`.
    pub fn counts_24h(&self, now: OffsetDateTime) -> (u64, u64) {
        self.hourly_24h(now)
            .iter()
            .fold((0, 0), |(d, f), (_, delivered, failed)| {
                (d + delivered, f + failed)
            })
    }

    /// `(epoch hour, delivered, failed)` of each of the 24 hours up to `now`'s, oldest first,
    /// hours without deliveries included.
    pub fn hourly_24h(&self, now: OffsetDateTime) -> Vec<(i64, u64, u64)> {
        let current = now.unix_timestamp().div_euclid(3600);
        (current - 23..=current)
            .map(|hour| {
                self.hours
                    .iter()
                    .filter(|(h, _, _)| *h == hour)
                    .fold((hour, 0, 0), |(h, d, f), (_, delivered, failed)| {
                        (h, d + delivered, f + failed)
                    })
            })
            .collect()
    }

    pub fn seconds_since_last_success(&self, now: OffsetDateTime) -> Option<i64> {
        let last = parse_time(self.last_success_at.as_deref()?)?;
        Some((now - last).whole_seconds().max(0))
    }
}

/// The outcome of one batch's delivery to one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub delivered: usize,
    pub failed: usize,
    pub last_error: Option<String>,
    /// The error is a refusal that retrying will not fix.
    pub permanent: bool,
}

impl ConfigTable {
    /// Records one batch's delivery outcome in a single write (a second one, at most once an
    /// hour, when the hour's counting slot still holds the same hour of an earlier day). A
    /// configuration deleted in the meantime is left deleted.
    pub async fn record_health(
        &self,
        organization_id: &str,
        project_id: &str,
        report: &HealthReport,
        now: OffsetDateTime,
    ) -> Result<(), ConfigError> {
        if report.delivered == 0 && report.failed == 0 {
            return Ok(());
        }
        let hour = now.unix_timestamp().div_euclid(3600);
        let slot = hour_slot(hour);
        let mut sets = vec!["#h = :hour"];
        let mut names = HashMap::from([
            ("#h".to_owned(), format!("hour_{slot}")),
            ("#d".to_owned(), format!("delivered_{slot}")),
            ("#f".to_owned(), format!("failed_{slot}")),
            ("#since".to_owned(), attr::FAILING_SINCE.to_owned()),
        ]);
        let mut values = HashMap::from([
            (":hour".to_owned(), AttributeValue::N(hour.to_string())),
            (
                ":d".to_owned(),
                AttributeValue::N(report.delivered.to_string()),
            ),
            (
                ":f".to_owned(),
                AttributeValue::N(report.failed.to_string()),
            ),
            (":now".to_owned(), s(&crate::clock::seconds_text(now))),
        ]);
        let mut remove = "";
        if report.delivered > 0 {
            sets.push("#ok = :now");
            names.insert("#ok".into(), attr::LAST_SUCCESS_AT.into());
            remove = " REMOVE #since";
        } else {
            sets.push("#since = if_not_exists(#since, :now)");
        }
        if report.failed > 0 {
            sets.extend([
                "#failed = :now",
                "#error = :error",
                "#permanent = :permanent",
            ]);
            names.insert("#failed".into(), attr::LAST_FAILURE_AT.into());
            names.insert("#error".into(), attr::LAST_ERROR.into());
            names.insert("#permanent".into(), attr::LAST_FAILURE_PERMANENT.into());
            values.insert(
                ":error".into(),
                s(report.last_error.as_deref().unwrap_or("delivery failed")),
            );
            values.insert(":permanent".into(), AttributeValue::Bool(report.permanent));
        }
        let sets = sets.join(", ");
        let counted = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(key(organization_id, project_id)))
            .update_expression(format!("SET {sets} ADD #d :d, #f :f{remove}"))
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(#h) OR #h = :hour)",
            )
            .set_expression_attribute_names(Some(names.clone()))
            .set_expression_attribute_values(Some(values.clone()))
            .send()
            .await;
        match counted {
            Ok(_) => return Ok(()),
            Err(e) if !is_condition_failure(&e) => return Err(store_error(e)),
            Err(_) => {}
        }
        // Either the configuration is gone, or the slot counts a day-old hour: start it afresh.
        let restarted = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(key(organization_id, project_id)))
            .update_expression(format!("SET {sets}, #d = :d, #f = :f{remove}"))
            .condition_expression("attribute_exists(pk)")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match restarted {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }
}

/// The counting slot of an epoch hour: its hour of the day.
pub(super) fn hour_slot(hour: i64) -> String {
    format!("{:02}", hour.rem_euclid(24))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_is_failing_after_five_minutes_of_failures_or_at_once_when_refused() {
        let at = |t: &str| OffsetDateTime::parse(t, &Rfc3339).unwrap();
        let mut h = Health::default();
        assert_eq!(h.status_at(at("2026-01-01T00:00:00Z")), "unknown");
        h.last_success_at = Some("2026-01-01T00:00:00Z".into());
        assert_eq!(h.status_at(at("2026-01-01T00:01:00Z")), "healthy");
        // An outage begins: healthy for five minutes, then failing.
        h.last_failure_at = Some("2026-01-01T00:01:00Z".into());
        h.failing_since = Some("2026-01-01T00:01:00Z".into());
        assert_eq!(h.status_at(at("2026-01-01T00:05:59Z")), "healthy");
        assert_eq!(h.status_at(at("2026-01-01T00:06:00Z")), "failing");
        // A refusal is failing at once.
        h.last_failure_permanent = true;
        assert_eq!(h.status_at(at("2026-01-01T00:01:01Z")), "failing");
        // A delivery ends the run of failures.
        h.failing_since = None;
        assert_eq!(h.status_at(at("2026-01-01T00:07:00Z")), "healthy");
        // Never delivered and failing: failing at once.
        let never = Health {
            last_failure_at: Some("2026-01-01T00:00:00Z".into()),
            failing_since: Some("2026-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(never.status_at(at("2026-01-01T00:00:01Z")), "failing");
    }

    #[test]
    fn counts_cover_the_last_24_hours_only() {
        let now = OffsetDateTime::parse("2026-01-02T10:30:00Z", &Rfc3339).unwrap();
        let current = now.unix_timestamp() / 3600;
        let h = Health {
            hours: vec![
                (current, 5, 1),
                (current - 23, 7, 2),
                (current - 24, 100, 100),
            ],
            ..Default::default()
        };
        assert_eq!(h.counts_24h(now), (12, 3));
        assert_eq!(hour_slot(current), hour_slot(current - 24));
        // Hour by hour for the chart: 24 hours, oldest first, quiet hours as zeros.
        let hourly = h.hourly_24h(now);
        assert_eq!(hourly.len(), 24);
        assert_eq!(hourly[0], (current - 23, 7, 2));
        assert_eq!(hourly[23], (current, 5, 1));
        assert!(hourly[1..23].iter().all(|(_, d, f)| (*d, *f) == (0, 0)));
    }
}
