//! Where an organization's project streams its audit events. Every destination is one folder
//! (`cloudwatch/`, `datadog/`): its settings, request building and batching, sending with its
//! retry policy, the reading of its answers and its health check, behind the one [`Sink`]
//! interface that lanes, replays and Test connection use; none of them knows which destination
//! it drives. A new destination (S3, Splunk HEC, a webhook) is a new folder, and one line
//! each in [`Destination`], [`Provider`], [`crate::credentials::Credentials`] and
//! [`DestinationClients`] (its client and its arm of `sink`), besides the API's validation of
//! its settings.

pub mod cloudwatch;
pub mod datadog;
mod sink;

pub use cloudwatch::CloudWatchSettings;
pub use datadog::{DatadogSettings, DatadogSite};
pub use sink::{
    ConnectionTest, CredentialSource, DeliveryError, Failures, Project, Sink, all_failed,
};
pub(crate) use sink::{
    Pace, Request, fail_all, out_of_time, request_failed, search_halves, unsearched,
};

use serde::{Deserialize, Serialize};
use strum::{Display, EnumString, IntoStaticStr};

/// Requests a destination refused without naming an event (too large, rejected) that one
/// delivery splits in halves to find it, at most: finding one among n takes about 2 log2(n),
/// and a destination that refuses everything must not be asked thousands of times.
pub(crate) const SPLITS_AT_MOST: usize = 64;
/// The same for a lane's probe, which costs a destination that is down one request: enough to
/// find one such event among a probe's page of 10.
pub(crate) const PROBE_SPLITS_AT_MOST: usize = 4;

/// The non-secret settings of the one destination a project streams to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum Destination {
    Cloudwatch(CloudWatchSettings),
    Datadog(DatadogSettings),
}

impl Destination {
    pub fn provider(&self) -> Provider {
        match self {
            Destination::Cloudwatch(_) => Provider::Cloudwatch,
            Destination::Datadog(_) => Provider::Datadog,
        }
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    EnumString,
    IntoStaticStr,
    Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Provider {
    Cloudwatch,
    Datadog,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// A project's destination as its saved configuration names it, bound to the credentials saved
/// with it (the stream function's clients and secrets; in tests, scripted destinations).
pub trait Destinations: Sync {
    fn sink<'a>(&'a self, config: &'a crate::streaming::StreamingConfig) -> Box<dyn Sink + 'a>;
}

/// Every destination's client, built once per container and shared by all projects.
#[derive(Clone)]
pub struct DestinationClients {
    pub cloudwatch: cloudwatch::CloudWatch,
    pub datadog: datadog::DatadogClient,
}

impl DestinationClients {
    /// A project's destination, bound to whose events they are and to its credentials.
    pub fn sink<'a>(
        &'a self,
        destination: &'a Destination,
        project: Project<'a>,
    ) -> Box<dyn Sink + 'a> {
        match destination {
            Destination::Cloudwatch(settings) => Box::new(self.cloudwatch.sink(project, settings)),
            Destination::Datadog(settings) => Box::new(self.datadog.sink(project, settings)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
