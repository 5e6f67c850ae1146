//! A project's saved destination as a [`Sink`]: its credentials read at the secret version
//! saved with the configuration.

use crate::Stream;
use audit_log::AuditEvent;
use audit_log::credentials::{Credentials, SecretStore, Secrets};
use audit_log::destination::{
    CredentialSource, DeliveryError, DestinationClients, Destinations, Failures, Project, Sink,
};
use audit_log::store::StoredKey;
use audit_log::streaming::{
    ConfigTable, Configurations, FailureLog, HealthReport, StreamingConfig,
};
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
    /// lists every failure, as nothing retries after this. A failure it could not list is
    /// the caller's error: delivered again rather than lost from sight.
    pub(crate) async fn deliver_recorded(
        &self,
        config: &StreamingConfig,
        events: &[AuditEvent],
        keys: &[StoredKey],
        deadline: Instant,
    ) -> Result<Failures, String> {
        let (org, project) = (config.organization_id.as_str(), config.project_id.as_str());
        let configs = &self.delivery.configs;
        let failures = self
            .delivery
            .destinations
            .sink(config)
            .deliver(events, deadline)
            .await;
        // When the destination answered, which may be long after the call began.
        let now = self.delivery.clock.now();
        let mut by_reason: HashMap<&str, Vec<StoredKey>> = HashMap::new();
        for (i, e) in &failures {
            by_reason
                .entry(e.message())
                .or_default()
                .push(keys[*i].clone());
        }
        for (reason, failed) in by_reason {
            let recorded = configs.record_failures(org, project, &failed, reason, now);
            recorded.await.map_err(|e| {
                format!(
                    "{} events that failed could not be listed: {e}",
                    failed.len()
                )
            })?;
        }
        // Once the page is settled: a page sent again (its failures not listed) counts once.
        let report = HealthReport {
            delivered: events.len() - failures.len(),
            failed: failures.len(),
            last_error: failures.first().map(|(_, e)| e.message().to_owned()),
            permanent: failures.first().is_some_and(|(_, e)| e.is_refusal()),
        };
        if let Err(e) = configs.record_health(org, project, &report, now).await {
            tracing::warn!(organization_id = org, project_id = project, error = %e, "could not record delivery health");
        }
        Ok(failures)
    }
}

/// A project's credentials, from its secret.
struct SavedCredentials<'a, K, C> {
    secrets: &'a K,
    configs: &'a C,
    organization_id: &'a str,
    project_id: &'a str,
    /// The secret version saved with the configuration.
    version: Option<&'a str>,
}

#[async_trait::async_trait]
impl<K: Secrets, C: Configurations> CredentialSource for SavedCredentials<'_, K, C> {
    async fn credentials(&self, refresh: bool) -> Result<Arc<Credentials>, DeliveryError> {
        // Refused credentials may have been rotated since the configuration was read: a fresh
        // read takes the secret version the configuration names now.
        let fresh = if refresh {
            self.configs
                .configuration(self.organization_id, self.project_id)
                .await
                .map_err(|e| {
                    // The table's own words (its ARN, the request) are for the log; the
                    // reason is shown to the customer.
                    tracing::warn!(organization_id = self.organization_id, project_id = self.project_id, error = %e, "the configuration could not be read again for fresh credentials");
                    DeliveryError::Retryable(
                        "the service could not read the streaming configuration; retrying".into(),
                    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use audit_log::credentials::CredentialsError;
    use audit_log::credentials::memory::MemorySecrets;
    use audit_log::lane::LaneKey;
    use audit_log::lane::memory::MemoryLanes;
    use secrecy::{ExposeSecret, SecretString};

    fn datadog(key: &str) -> Credentials {
        Credentials::Datadog {
            api_key: SecretString::from(key.to_owned()),
        }
    }

    fn api_key(credentials: &Credentials) -> String {
        match credentials {
            Credentials::Datadog { api_key } => api_key.expose_secret().to_owned(),
            Credentials::Cloudwatch { .. } => panic!("not Datadog"),
        }
    }

    struct World {
        secrets: MemorySecrets,
        configs: MemoryLanes,
        key: LaneKey,
    }

    impl World {
        /// A project saved with its first key.
        async fn new() -> (Self, String) {
            let w = Self {
                secrets: MemorySecrets::default(),
                configs: MemoryLanes::default(),
                key: LaneKey::new("org-a", "registry-1"),
            };
            w.configs.configure(&w.key);
            let first = w.save("first-key").await;
            (w, first)
        }

        /// A save of the configuration with a new key: staged, named, promoted.
        async fn save(&self, api_key: &str) -> String {
            let (org, project) = (&self.key.organization_id, &self.key.project_id);
            let version = self
                .secrets
                .stage(org, project, &datadog(api_key))
                .await
                .unwrap();
            self.configs.name_secret(&self.key, &version);
            self.secrets.promote(org, project, &version).await.unwrap();
            version
        }

        fn credentials<'a>(
            &'a self,
            read_with: &'a str,
        ) -> SavedCredentials<'a, MemorySecrets, MemoryLanes> {
            SavedCredentials {
                secrets: &self.secrets,
                configs: &self.configs,
                organization_id: &self.key.organization_id,
                project_id: &self.key.project_id,
                version: Some(read_with),
            }
        }
    }

    #[tokio::test]
    async fn a_delivery_uses_the_secret_version_its_configuration_was_read_with() {
        // GIVEN a configuration read with its first key, then a save of a second key
        let (w, first) = World::new().await;
        w.save("second-key").await;
        // WHEN the delivery that read the first configuration asks for credentials
        let credentials = w.credentials(&first).credentials(false).await.unwrap();
        // THEN it gets the key saved with that configuration, never a newer one mid-delivery
        assert_eq!(api_key(&credentials), "first-key");
    }

    #[tokio::test]
    async fn refused_credentials_are_read_again_at_the_version_saved_since() {
        // GIVEN a delivery holding the first key, and the key rotated by a save since
        let (w, first) = World::new().await;
        w.save("rotated-key").await;
        // WHEN the destination refused the first key and the delivery asks again
        let credentials = w.credentials(&first).credentials(true).await.unwrap();
        // THEN it reads the configuration again and gets the rotated key
        assert_eq!(api_key(&credentials), "rotated-key");
    }

    #[tokio::test]
    async fn an_unavailable_secret_store_is_an_outage_and_a_missing_secret_a_refusal() {
        let (w, first) = World::new().await;
        // GIVEN Secrets Manager is unavailable THEN the lane retries later
        w.secrets
            .set_down(Some(CredentialsError::Unavailable("throttled".into())));
        let outage = w.credentials(&first).credentials(false).await.unwrap_err();
        assert!(outage.is_retryable());
        // GIVEN the secret is gone THEN nothing is sent until the configuration is saved again
        w.secrets.set_down(None);
        w.secrets.delete("org-a", "registry-1").await.unwrap();
        let refusal = w.credentials(&first).credentials(false).await.unwrap_err();
        assert!(refusal.is_refusal());
        assert!(
            refusal
                .message()
                .contains("save the streaming configuration again")
        );
    }

    #[tokio::test]
    async fn a_configuration_that_cannot_be_read_again_is_an_outage() {
        let (w, first) = World::new().await;
        w.configs.set_unreadable(&w.key, true);
        let e = w.credentials(&first).credentials(true).await.unwrap_err();
        assert!(e.is_retryable());
        // Shown to the customer as the lane's reason: the table's own words stay in the log.
        assert!(
            e.message()
                .contains("could not read the streaming configuration")
        );
        assert!(!e.message().contains("unreachable"), "{}", e.message());
    }
}
