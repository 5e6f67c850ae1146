//! A project's saved destination as a [`Sink`]: its credentials read at the secret version
//! saved with the configuration.

use crate::Stream;
use audit_log::AuditEvent;
use audit_log::credentials::{Credentials, SecretStore};
use audit_log::destination::{
    CredentialSource, DeliveryError, DestinationClients, Destinations, Failures, Project, Sink,
};
use audit_log::store::StoredKey;
use audit_log::streaming::{ConfigTable, HealthReport, StreamingConfig};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::time::Instant;

/// The destinations as the function reaches them: every provider's client, the projects'
/// secrets, and the configurations (read again when a destination refuses a rotated secret).
pub struct SavedDestinations {
    pub clients: DestinationClients,
    pub secrets: SecretStore,
    pub configs: ConfigTable,
}

impl Destinations for SavedDestinations {
    fn sink<'a>(&'a self, config: &'a StreamingConfig) -> Box<dyn Sink + 'a> {
        let (organization_id, project_id) = (&config.organization_id, &config.project_id);
        let credentials = SavedCredentials {
            secrets: &self.secrets,
            configs: &self.configs,
            organization_id,
            project_id,
            version: config.secret_version.as_deref(),
        };
        self.clients.sink(
            &config.destination,
            Project {
                organization_id,
                project_id,
                credentials: Box::new(credentials),
            },
        )
    }
}

impl Stream {
    /// Delivers events outside any lane (a replay): records the destination's health and
    /// every failure, as nothing retries after this.
    pub(crate) async fn deliver_recorded(
        &self,
        config: &StreamingConfig,
        events: &[AuditEvent],
        keys: &[StoredKey],
        deadline: Instant,
    ) -> Failures {
        let (org, project) = (config.organization_id.as_str(), config.project_id.as_str());
        let configs = &self.delivery.configs;
        let now = self.delivery.clock.now();
        let failures = self
            .delivery
            .destinations
            .sink(config)
            .deliver(events, deadline)
            .await;
        let report = HealthReport {
            delivered: events.len() - failures.len(),
            failed: failures.len(),
            last_error: failures.first().map(|(_, e)| e.message().to_owned()),
            permanent: failures.first().is_some_and(|(_, e)| e.is_refusal()),
        };
        if let Err(e) = configs.record_health(org, project, &report, now).await {
            tracing::warn!(organization_id = org, project_id = project, error = %e, "could not record delivery health");
        }
        let mut by_reason: HashMap<&str, Vec<StoredKey>> = HashMap::new();
        for (i, e) in &failures {
            by_reason
                .entry(e.message())
                .or_default()
                .push(keys[*i].clone());
        }
        for (reason, failed) in by_reason {
            if let Err(e) = configs
                .record_failures(org, project, &failed, reason, now)
                .await
            {
                tracing::error!(organization_id = org, project_id = project, error = %e, events = failed.len(), "could not record failed events");
            }
        }
        failures
    }
}

/// A project's credentials, from its secret.
struct SavedCredentials<'a> {
    secrets: &'a SecretStore,
    configs: &'a ConfigTable,
    organization_id: &'a str,
    project_id: &'a str,
    /// The secret version saved with the configuration.
    version: Option<&'a str>,
}

#[async_trait::async_trait]
impl CredentialSource for SavedCredentials<'_> {
    async fn credentials(&self, refresh: bool) -> Result<Arc<Credentials>, DeliveryError> {
        // Refused credentials may have been rotated since the configuration was read: a fresh
        // read takes the secret version the configuration names now.
        let fresh = if refresh {
            self.configs
                .get(self.organization_id, self.project_id)
                .await
                .map_err(|e| {
                    DeliveryError::Retryable(format!(
                        "could not read the streaming configuration: {e}"
                    ))
                })?
                .and_then(|c| c.secret_version)
        } else {
            None
        };
        let version = fresh.as_deref().or(self.version);
        self.secrets
            .get(self.organization_id, self.project_id, version, refresh)
            .await
            .map_err(|e| DeliveryError::from(&e))
    }
}
