//! Datadog Logs: `POST <intake>/api/v2/logs`. Events become log entries cut into requests by
//! Datadog's limits (`request`), are sent with the retry policy (`service`), the intake's
//! answers are read in `answer`, and Test connection checks the key then sends a test log
//! (`test_connection`).

mod answer;
mod request;
mod service;
mod site;
mod test_connection;

pub use request::{
    Batch, CONTENT_ENCODING, GZIP_LEVEL, MAX_AGE, MAX_ENTRIES, MAX_ENTRY_BYTES, MAX_PAYLOAD_BYTES,
    RESERVED, SERVICE, SOURCE, batches, compress, encode, severity,
};
pub use site::DatadogSite;

use super::{ConnectionTest, DeliveryError, Failures, Project, Sink};
use crate::credentials::Credentials;
use crate::event::AuditEvent;
use crate::retry::Backoff;
use async_trait::async_trait;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// Where a project's Datadog logs go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatadogSettings {
    pub site: DatadogSite,
}

/// One request to Datadog, from connecting to the last byte of the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The HTTP client every project's Datadog delivery shares (a clone shares it too).
#[derive(Debug, Clone)]
pub struct DatadogClient {
    /// Made at the first request, not at init: making it reads the system's root certificates,
    /// about two fifths of the api function's init CPU, which a container that never calls
    /// Datadog would spend for nothing (BENCHMARKS.md).
    http: Arc<OnceLock<Result<reqwest::Client, String>>>,
    timeout: Duration,
    endpoint_override: Option<String>,
    backoff: Backoff,
}

impl DatadogClient {
    /// `endpoint_override` (`DATADOG_ENDPOINT_OVERRIDE`) replaces every site's hosts, for local
    /// runs and tests.
    pub fn new(endpoint_override: Option<String>) -> Self {
        Self::with_timeout(endpoint_override, REQUEST_TIMEOUT)
    }

    /// A client whose requests give up after `timeout` (tests use a short one).
    pub fn with_timeout(endpoint_override: Option<String>, timeout: Duration) -> Self {
        Self {
            http: Arc::default(),
            timeout,
            endpoint_override: endpoint_override.map(|u| u.trim_end_matches('/').to_owned()),
            backoff: Backoff::default(),
        }
    }

    /// The shared client, or why it could not be made (no root certificates to read): then
    /// each call fails as Datadog's trouble does, and what it carried is owed, not lost.
    fn http(&self) -> Result<&reqwest::Client, &str> {
        self.http
            .get_or_init(|| {
                reqwest::Client::builder()
                    // A redirect would carry `DD-API-KEY` to wherever it points (reqwest drops
                    // only its own sensitive headers across hosts): the intake never redirects.
                    .redirect(reqwest::redirect::Policy::none())
                    .connect_timeout(Duration::from_secs(3))
                    .timeout(self.timeout)
                    .build()
                    .map_err(|e| {
                        tracing::error!(error = %e, "no HTTP client for Datadog");
                        format!("no HTTP client for Datadog could be made ({e})")
                    })
            })
            .as_ref()
            .map_err(String::as_str)
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn intake_url(&self, site: DatadogSite) -> String {
        self.endpoint_override
            .clone()
            .unwrap_or_else(|| site.intake_url())
    }

    pub fn api_url(&self, site: DatadogSite) -> String {
        self.endpoint_override
            .clone()
            .unwrap_or_else(|| site.api_url())
    }

    /// A project's logs on its Datadog site, as a sink.
    pub fn sink<'a>(&'a self, project: Project<'a>, settings: &DatadogSettings) -> Intake<'a> {
        Intake {
            datadog: self,
            project,
            site: settings.site,
        }
    }
}

/// A project's logs on one Datadog site: what lanes, replays and Test connection drive.
pub struct Intake<'a> {
    datadog: &'a DatadogClient,
    project: Project<'a>,
    site: DatadogSite,
}

impl Intake<'_> {
    /// The project's API key; `refresh` after Datadog refused it, as it may have been rotated.
    async fn key(&self, refresh: bool, deadline: Instant) -> Result<SecretString, DeliveryError> {
        match &*self.project.credentials_by(refresh, deadline).await? {
            Credentials::Datadog { api_key } => Ok(api_key.clone()),
            _ => Err(DeliveryError::mismatched()),
        }
    }
}

#[async_trait]
impl Sink for Intake<'_> {
    async fn deliver(&self, events: &[AuditEvent], deadline: Instant) -> Failures {
        let splits = crate::destination::SPLITS_AT_MOST;
        service::deliver(self, events, deadline, &self.datadog.backoff, splits).await
    }

    async fn probe(&self, events: &[AuditEvent], deadline: Instant) -> Failures {
        let splits = crate::destination::PROBE_SPLITS_AT_MOST;
        service::deliver(self, events, deadline, &Backoff::NONE, splits).await
    }

    async fn test_connection(&self, event: &AuditEvent, deadline: Instant) -> ConnectionTest {
        test_connection::test_connection(self, event, deadline).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::destination::CredentialSource;

    /// A secret store that never answers.
    struct Hanging;

    #[async_trait]
    impl CredentialSource for Hanging {
        async fn credentials(&self, _: bool) -> Result<Arc<Credentials>, DeliveryError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_secret_store_that_does_not_answer_costs_a_delivery_no_more_than_its_deadline() {
        let client = DatadogClient::new(Some("http://127.0.0.1:9".into()));
        let project = Project {
            organization_id: "o",
            project_id: "p",
            credentials: Box::new(Hanging),
        };
        let intake = client.sink(
            project,
            &DatadogSettings {
                site: DatadogSite::Us1,
            },
        );
        let event = AuditEvent::from_json(crate::fixtures::SEED_EVENTS[0].1).unwrap();
        let started = Instant::now();
        let failures = intake
            .deliver(&[event], started + Duration::from_secs(2))
            .await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(failures.len(), 1);
        assert!(failures[0].1.is_retryable(), "{:?}", failures[0].1);
        assert!(failures[0].1.message().contains("in time"));
    }

    #[test]
    fn the_http_client_is_made_at_the_first_request_and_shared_by_clones() {
        let client = DatadogClient::new(None);
        let clone = client.clone();
        assert!(client.http.get().is_none(), "made before any request");
        let made: *const reqwest::Client = client.http().unwrap();
        assert!(
            std::ptr::eq(made, clone.http().unwrap()),
            "each clone made its own"
        );
        assert!(std::ptr::eq(made, client.http().unwrap()));
    }
}
