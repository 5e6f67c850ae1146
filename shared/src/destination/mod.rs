//! Where an organization's project streams its audit events: CloudWatch Logs in the customer's
//! account, or Datadog. One folder per destination: request building (batches cut by the
//! destination's real limits) and the sending, with its retry policy, beside it.

pub mod cloudwatch;
pub mod datadog;
pub mod regions;

use serde::{Deserialize, Serialize};
use std::fmt;

/// The non-secret settings of the one destination a project streams to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum Destination {
    Cloudwatch(CloudWatchSettings),
    Datadog(DatadogSettings),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudWatchSettings {
    pub role_arn: String,
    pub region: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatadogSettings {
    pub site: DatadogSite,
}

impl Destination {
    pub fn provider(&self) -> Provider {
        match self {
            Destination::Cloudwatch(_) => Provider::Cloudwatch,
            Destination::Datadog(_) => Provider::Datadog,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Cloudwatch,
    Datadog,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Cloudwatch => "cloudwatch",
            Provider::Datadog => "datadog",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cloudwatch" => Some(Provider::Cloudwatch),
            "datadog" => Some(Provider::Datadog),
            _ => None,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Datadog sites the service delivers to; nothing else is ever called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DatadogSite {
    #[serde(rename = "datadoghq.com")]
    Us1,
    #[serde(rename = "us3.datadoghq.com")]
    Us3,
    #[serde(rename = "us5.datadoghq.com")]
    Us5,
    #[serde(rename = "datadoghq.eu")]
    Eu1,
    #[serde(rename = "ap1.datadoghq.com")]
    Ap1,
    #[serde(rename = "ap2.datadoghq.com")]
    Ap2,
    #[serde(rename = "ddog-gov.com")]
    Us1Fed,
}

impl DatadogSite {
    pub const ALL: [DatadogSite; 7] = [
        DatadogSite::Us1,
        DatadogSite::Us3,
        DatadogSite::Us5,
        DatadogSite::Eu1,
        DatadogSite::Ap1,
        DatadogSite::Ap2,
        DatadogSite::Us1Fed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DatadogSite::Us1 => "datadoghq.com",
            DatadogSite::Us3 => "us3.datadoghq.com",
            DatadogSite::Us5 => "us5.datadoghq.com",
            DatadogSite::Eu1 => "datadoghq.eu",
            DatadogSite::Ap1 => "ap1.datadoghq.com",
            DatadogSite::Ap2 => "ap2.datadoghq.com",
            DatadogSite::Us1Fed => "ddog-gov.com",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|site| site.as_str() == s)
    }

    /// Base URL of the logs intake (`POST /api/v2/logs`).
    pub fn intake_url(self) -> String {
        format!("https://http-intake.logs.{}", self.as_str())
    }

    /// Base URL of the API (`GET /api/v1/validate`).
    pub fn api_url(self) -> String {
        format!("https://api.{}", self.as_str())
    }
}

impl fmt::Display for DatadogSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why events did not reach a destination. Messages are for a person: what failed and what to
/// change, never a secret and never the destination's raw answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The destination is in trouble (an outage, throttling, a timeout): try again later.
    #[error("{0}")]
    Retryable(String),
    /// The destination refuses us (credentials, key or role): nothing more is sent until the
    /// configuration changes or a Test connection succeeds.
    #[error("{0}")]
    Refused(String),
    /// This event only will never be taken as it is (too large, malformed for the destination).
    #[error("{0}")]
    Rejected(String),
}

impl DeliveryError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, DeliveryError::Retryable(_))
    }

    pub fn is_refusal(&self) -> bool {
        matches!(self, DeliveryError::Refused(_))
    }

    pub fn message(&self) -> &str {
        match self {
            DeliveryError::Retryable(m)
            | DeliveryError::Refused(m)
            | DeliveryError::Rejected(m) => m,
        }
    }
}

/// The outcome of delivering a list of events: the positions that failed, with why.
/// Every position not listed was delivered.
pub type Failures = Vec<(usize, DeliveryError)>;

/// What every destination does: deliver a batch of events by `deadline` and say, per event,
/// what went wrong. Lanes drive destinations through this alone.
pub trait Sink: Sync {
    fn deliver(
        &self,
        events: &[crate::AuditEvent],
        deadline: tokio::time::Instant,
    ) -> impl std::future::Future<Output = Failures> + Send;

    /// One try without retries: how a lane probes a destination that was failing, so that a
    /// destination that is down gets about one request per probe interval.
    fn probe(
        &self,
        events: &[crate::AuditEvent],
        deadline: tokio::time::Instant,
    ) -> impl std::future::Future<Output = Failures> + Send {
        self.deliver(events, deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_site_parses_and_nothing_else_does() {
        for name in [
            "datadoghq.com",
            "us3.datadoghq.com",
            "us5.datadoghq.com",
            "datadoghq.eu",
            "ap1.datadoghq.com",
            "ap2.datadoghq.com",
            "ddog-gov.com",
        ] {
            let site = DatadogSite::parse(name).unwrap();
            assert_eq!(site.as_str(), name);
            assert_eq!(serde_json::to_value(site).unwrap(), serde_json::json!(name));
        }
        for bad in [
            "evil.com",
            "datadoghq.com.evil.com",
            "DATADOGHQ.COM",
            "us2.datadoghq.com",
            "",
        ] {
            assert_eq!(DatadogSite::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn hosts_come_from_the_site() {
        assert_eq!(
            DatadogSite::Eu1.intake_url(),
            "https://http-intake.logs.datadoghq.eu"
        );
        assert_eq!(DatadogSite::Us3.api_url(), "https://api.us3.datadoghq.com");
        assert_eq!(
            DatadogSite::Us1Fed.intake_url(),
            "https://http-intake.logs.ddog-gov.com"
        );
    }

    #[test]
    fn destinations_serialize_with_their_provider() {
        let d = Destination::Datadog(DatadogSettings {
            site: DatadogSite::Eu1,
        });
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({"provider": "datadog", "site": "datadoghq.eu"})
        );
        assert_eq!(d.provider(), Provider::Datadog);
    }
}
