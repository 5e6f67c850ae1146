//! A project's saved destination as a [`Sink`]: its credentials read at the secret version
//! saved with the configuration, then CloudWatch Logs or Datadog.

use crate::Stream;
use audit_log::AuditEvent;
use audit_log::credentials::{Credentials, CredentialsError, SecretStore};
use audit_log::destination::datadog::ApiKeySource;
use audit_log::destination::{CloudWatchSettings, DeliveryError, Destination, Failures, Sink};
use audit_log::retry::Backoff;
use audit_log::store::StoredKey;
use audit_log::streaming::{ConfigTable, HealthReport, StreamingConfig};
use secrecy::SecretString;
use std::collections::HashMap;
use tokio::time::Instant;

/// The destination a project's configuration names.
pub(crate) struct ProjectSink<'a> {
    pub stream: &'a Stream,
    pub config: &'a StreamingConfig,
}

impl Sink for ProjectSink<'_> {
    async fn deliver(&self, events: &[AuditEvent], deadline: Instant) -> Failures {
        self.send(events, deadline, None).await
    }

    async fn probe(&self, events: &[AuditEvent], deadline: Instant) -> Failures {
        self.send(events, deadline, Some(Backoff::NONE)).await
    }
}

impl ProjectSink<'_> {
    /// Delivers with the clients' own retries, or with `backoff` in their place.
    async fn send(
        &self,
        events: &[AuditEvent],
        deadline: Instant,
        backoff: Option<Backoff>,
    ) -> Failures {
        let (stream, config) = (self.stream, self.config);
        let (org, project) = (config.organization_id.as_str(), config.project_id.as_str());
        match &config.destination {
            Destination::Cloudwatch(settings) => {
                let credentials = stream
                    .secrets
                    .get(org, project, config.secret_version.as_deref(), false)
                    .await;
                match credentials.as_deref() {
                    Ok(Credentials::Cloudwatch {
                        role_arn,
                        external_id,
                    }) => {
                        // The role ARN of record is the one stored with its External ID.
                        let settings = CloudWatchSettings {
                            role_arn: role_arn.clone(),
                            region: settings.region.clone(),
                        };
                        let once;
                        let cloudwatch = match backoff {
                            Some(b) => {
                                once = stream.cloudwatch.clone().with_backoff(b);
                                &once
                            }
                            None => &stream.cloudwatch,
                        };
                        cloudwatch
                            .deliver(org, project, &settings, external_id, events, deadline)
                            .await
                    }
                    Ok(Credentials::Datadog { .. }) => all_failed(events.len(), mismatched()),
                    Err(e) => all_failed(events.len(), credentials_failure(e)),
                }
            }
            Destination::Datadog(settings) => {
                let keys = ProjectKey {
                    secrets: &stream.secrets,
                    configs: &stream.configs,
                    organization_id: org,
                    project_id: project,
                    version: config.secret_version.as_deref(),
                };
                let once;
                let datadog = match backoff {
                    Some(b) => {
                        once = stream.datadog.clone().with_backoff(b);
                        &once
                    }
                    None => &stream.datadog,
                };
                datadog
                    .deliver(settings.site, &keys, events, deadline)
                    .await
            }
        }
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
        let failures = ProjectSink {
            stream: self,
            config,
        }
        .deliver(events, deadline)
        .await;
        let report = HealthReport {
            delivered: events.len() - failures.len(),
            failed: failures.len(),
            last_error: failures.first().map(|(_, e)| e.message().to_owned()),
            permanent: failures.first().is_some_and(|(_, e)| e.is_refusal()),
        };
        if let Err(e) = self.configs.record_health(org, project, &report).await {
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
            if let Err(e) = self
                .configs
                .record_failures(org, project, &failed, reason)
                .await
            {
                tracing::error!(organization_id = org, project_id = project, error = %e, events = failed.len(), "could not record failed events");
            }
        }
        failures
    }
}

fn all_failed(n: usize, error: DeliveryError) -> Failures {
    (0..n).map(|i| (i, error.clone())).collect()
}

fn mismatched() -> DeliveryError {
    DeliveryError::Refused(
        "the stored credentials belong to another provider than the destination; save the streaming configuration again".into(),
    )
}

fn credentials_failure(e: &CredentialsError) -> DeliveryError {
    if e.is_retryable() {
        DeliveryError::Retryable(e.to_string())
    } else {
        DeliveryError::Refused(e.to_string())
    }
}

/// A project's Datadog API key, from its secret.
struct ProjectKey<'a> {
    secrets: &'a SecretStore,
    configs: &'a ConfigTable,
    organization_id: &'a str,
    project_id: &'a str,
    /// The secret version saved with the configuration.
    version: Option<&'a str>,
}

impl ApiKeySource for ProjectKey<'_> {
    async fn api_key(&self, refresh: bool) -> Result<SecretString, DeliveryError> {
        // A refused key may have been rotated since the configuration was read: a fresh read
        // takes the secret version the configuration names now.
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
        let credentials = self
            .secrets
            .get(self.organization_id, self.project_id, version, refresh)
            .await
            .map_err(|e| credentials_failure(&e))?;
        match &*credentials {
            Credentials::Datadog { api_key } => Ok(api_key.clone()),
            Credentials::Cloudwatch { .. } => Err(mismatched()),
        }
    }
}
