//! CloudWatch Logs in the customer's account. The service assumes the customer's role with the
//! organization's External ID (`role`), cuts events into `PutLogEvents` requests by CloudWatch's
//! limits (`request`), sends them and retries what is worth it (`service`), reads CloudWatch's
//! answers (`answer`), and tests a connection with a harmless event (`test_connection`).

mod answer;
pub mod regions;
mod request;
mod role;
mod service;
mod test_connection;

pub use request::{
    Batch, EVENT_OVERHEAD_BYTES, MAX_AGE, MAX_AHEAD, MAX_BATCH_BYTES, MAX_BATCH_EVENTS,
    MAX_BATCH_SPAN, batches, events_log_group, log_stream, log_timestamp, test_log_group,
};
pub use role::{CustomerRole, RoleRefused, ServiceAccount, role_account, role_partition};

use super::{ConnectionTest, DeliveryError, Failures, Project, Sink};
use crate::credentials::Credentials;
use crate::event::AuditEvent;
use crate::retry::Backoff;
use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_cloudwatchlogs::Client as LogsClient;
use aws_sdk_cloudwatchlogs::config::{IdentityCache, Region};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::time::Instant;

/// Where a project's CloudWatch Logs are: the customer's role and its region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudWatchSettings {
    pub role_arn: String,
    pub region: String,
}

/// Credentials of the customer's role are renewed this long before they expire.
const CREDENTIALS_BUFFER: Duration = Duration::from_secs(300);

/// Writes to customers' CloudWatch Logs. Clients (and with them the assumed-role credentials)
/// are kept per organization, role and region for the life of the container (a clone shares
/// them).
#[derive(Clone)]
pub struct CloudWatch {
    base: SdkConfig,
    sts: aws_sdk_sts::Client,
    log_group_prefix: String,
    clients: moka::sync::Cache<(String, String, String), LogsClient>,
    backoff: Backoff,
    account: ServiceAccount,
}

impl CloudWatch {
    pub fn new(base: &SdkConfig, log_group_prefix: impl Into<String>) -> Self {
        let sts = aws_sdk_sts::Client::new(base);
        Self {
            base: base.clone(),
            account: ServiceAccount::new(None, sts.clone()),
            sts,
            log_group_prefix: log_group_prefix.into(),
            clients: moka::sync::Cache::builder().max_capacity(1_000).build(),
            backoff: Backoff::default(),
        }
    }

    /// Uses this STS client to assume customers' roles (tests hand in a mocked one).
    pub fn with_sts(mut self, sts: aws_sdk_sts::Client) -> Self {
        self.sts = sts;
        self
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The service's account as the operator set it (`None`: the account the function runs in).
    pub fn with_service_account(mut self, id: Option<String>) -> Self {
        self.account = ServiceAccount::new(id, aws_sdk_sts::Client::new(&self.base));
        self
    }

    /// The AWS account customers' roles must trust.
    pub fn service_account(&self) -> &ServiceAccount {
        &self.account
    }

    /// A project's log stream, in the region its settings name, as a sink. The role comes with
    /// the credentials, stored with its External ID.
    pub fn sink<'a>(&'a self, project: Project<'a>, settings: &'a CloudWatchSettings) -> Logs<'a> {
        Logs {
            cloudwatch: self,
            project,
            region: &settings.region,
        }
    }

    /// The role's client, and whether it was made now (its credentials not yet assumed)
    /// rather than kept from an earlier delivery.
    fn client(
        &self,
        organization_id: &str,
        settings: &CloudWatchSettings,
        external_id: &SecretString,
    ) -> (LogsClient, bool) {
        let key = (
            organization_id.to_owned(),
            settings.role_arn.clone(),
            settings.region.clone(),
        );
        let role = CustomerRole::new(
            self.sts.clone(),
            &settings.role_arn,
            external_id.clone(),
            organization_id,
        );
        let entry = self.clients.entry(key).or_insert_with(|| {
            self.client_with(
                &settings.region,
                SharedCredentialsProvider::new(role),
                IdentityCache::lazy()
                    .buffer_time(CREDENTIALS_BUFFER)
                    .build(),
            )
        });
        let made_now = entry.is_fresh();
        (entry.into_value(), made_now)
    }

    fn client_with(
        &self,
        region: &str,
        credentials: SharedCredentialsProvider,
        cache: aws_sdk_cloudwatchlogs::config::SharedIdentityCache,
    ) -> LogsClient {
        let config =
            service::without_sdk_retries(aws_sdk_cloudwatchlogs::config::Builder::from(&self.base))
                .region(Region::new(region.to_owned()))
                .credentials_provider(credentials)
                .identity_cache(cache)
                .build();
        LogsClient::from_conf(config)
    }

    /// Forgets a role's client, so the next delivery assumes the role again.
    fn forget(&self, organization_id: &str, settings: &CloudWatchSettings) {
        self.clients.invalidate(&(
            organization_id.to_owned(),
            settings.role_arn.clone(),
            settings.region.clone(),
        ));
    }
}

/// A project's log stream in the customer's account: what lanes, replays and Test connection
/// drive.
pub struct Logs<'a> {
    cloudwatch: &'a CloudWatch,
    project: Project<'a>,
    region: &'a str,
}

impl Logs<'_> {
    /// The role to assume and its External ID. The role ARN of record is the one stored with the
    /// External ID, so the two are never from different saves.
    async fn role(
        &self,
        deadline: Instant,
    ) -> Result<(CloudWatchSettings, SecretString), DeliveryError> {
        match &*self.project.credentials_by(false, deadline).await? {
            Credentials::Cloudwatch {
                role_arn,
                external_id,
            } => Ok((
                CloudWatchSettings {
                    role_arn: role_arn.clone(),
                    region: self.region.to_owned(),
                },
                external_id.clone(),
            )),
            _ => Err(DeliveryError::mismatched()),
        }
    }

    async fn write(
        &self,
        events: &[AuditEvent],
        deadline: Instant,
        backoff: &Backoff,
        splits: usize,
    ) -> Failures {
        let (settings, external_id) = match self.role(deadline).await {
            Ok(role) => role,
            Err(e) => return super::all_failed(events.len(), e),
        };
        let organization_id = self.project.organization_id;
        let group = events_log_group(&self.cloudwatch.log_group_prefix);
        let stream = log_stream(self.project.project_id);
        let (client, made_now) = self
            .cloudwatch
            .client(organization_id, &settings, &external_id);
        let failures =
            service::write(&client, &group, &stream, events, deadline, backoff, splits).await;
        if !failures.iter().any(|(_, e)| e.is_refusal()) {
            return failures;
        }
        // A refused role or policy may be fixed by the customer at any time: assume again.
        self.cloudwatch.forget(organization_id, &settings);
        if made_now {
            return failures;
        }
        // Refused with credentials assumed before: the role may have been made anew or its
        // sessions revoked since, which a role assumed now is not. Its refused events are
        // written once more with such a one, rather than the lane refused until its next probe.
        let (refused, mut failures): (Failures, Failures) =
            failures.into_iter().partition(|(_, e)| e.is_refusal());
        tracing::info!(
            organization_id,
            project_id = self.project.project_id,
            events = refused.len(),
            "CloudWatch Logs refused credentials assumed before; writing again with the role assumed anew"
        );
        let again: Vec<AuditEvent> = refused.iter().map(|(p, _)| events[*p].clone()).collect();
        let (client, _) = self
            .cloudwatch
            .client(organization_id, &settings, &external_id);
        let retried =
            service::write(&client, &group, &stream, &again, deadline, backoff, splits).await;
        if retried.iter().any(|(_, e)| e.is_refusal()) {
            self.cloudwatch.forget(organization_id, &settings);
        }
        // Not sent again for want of time: still refused, for the reason the first write met.
        failures.extend(retried.into_iter().map(|(i, e)| match e {
            DeliveryError::NotSent(_) => refused[i].clone(),
            e => (refused[i].0, e),
        }));
        failures.sort_by_key(|(position, _)| *position);
        failures
    }
}

#[async_trait]
impl Sink for Logs<'_> {
    async fn deliver(&self, events: &[AuditEvent], deadline: Instant) -> Failures {
        self.write(
            events,
            deadline,
            &self.cloudwatch.backoff,
            super::SPLITS_AT_MOST,
        )
        .await
    }

    async fn probe(&self, events: &[AuditEvent], deadline: Instant) -> Failures {
        self.write(
            events,
            deadline,
            &Backoff::NONE,
            super::PROBE_SPLITS_AT_MOST,
        )
        .await
    }

    async fn test_connection(&self, event: &AuditEvent, deadline: Instant) -> ConnectionTest {
        test_connection::test_connection(self, event, deadline).await
    }
}

#[cfg(test)]
mod tests;
