//! Test connection: what delivery does (assume the role, create the group and stream, write),
//! with one test event written to the test log group, and each step's failure told apart.

use super::role::{CustomerRole, RoleRefused};
use super::{Logs, service, test_log_group};
use crate::destination::ConnectionTest;
use crate::event::AuditEvent;
use crate::retry::{Attempt, Backoff, GaveUp, retry};
use aws_credential_types::Credentials as AwsCredentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_cloudwatchlogs::config::IdentityCache;
use tokio::time::{Instant, timeout_at};

pub(super) async fn test_connection(
    logs: &Logs<'_>,
    event: &AuditEvent,
    deadline: Instant,
) -> ConnectionTest {
    let cloudwatch = logs.cloudwatch;
    let group = test_log_group(&cloudwatch.log_group_prefix);
    let failed = |why: &str| ConnectionTest {
        success: false,
        message: format!("Could not write a test event to {group}: {why}"),
        log_group: Some(group.clone()),
    };
    let (settings, external_id) = match logs.role(deadline).await {
        Ok(role) => role,
        Err(e) => return failed(e.message()),
    };
    // Assumed here rather than through the delivery's cached client: a role that does not
    // trust the service is told apart from a write the role may not make, and settings under
    // test leave no client behind.
    let role = CustomerRole::new(
        cloudwatch.sts.clone(),
        &settings.role_arn,
        external_id,
        logs.project.organization_id,
    );
    let credentials = match assume(&role, &logs.cloudwatch.backoff, deadline).await {
        Ok(credentials) => credentials,
        Err(refused) if refused.untrusted => {
            let account = match timeout_at(deadline, cloudwatch.account.id()).await {
                Ok(Ok(id)) => format!("AWS account {id}"),
                _ => "the service's AWS account".to_owned(),
            };
            return ConnectionTest {
                success: false,
                message: format!(
                    "Could not assume {}: its trust policy must allow {account} with the External ID the Audit Logs page shows (sts:AssumeRole with sts:ExternalId).",
                    settings.role_arn
                ),
                log_group: Some(group),
            };
        }
        Err(refused) => return failed(&refused.message),
    };
    let client = cloudwatch.client_with(
        &settings.region,
        SharedCredentialsProvider::new(credentials),
        IdentityCache::no_cache(),
    );
    let failures = service::write(
        &client,
        &group,
        &super::log_stream(logs.project.project_id),
        std::slice::from_ref(event),
        deadline,
        &cloudwatch.backoff,
        0,
    )
    .await;
    match failures.first() {
        None => ConnectionTest {
            success: true,
            message: format!("Wrote a test event to {group} in {}.", settings.region),
            log_group: Some(group),
        },
        Some((_, e)) => failed(e.message()),
    }
}

/// Assumes the role, trying a busy STS again until `deadline` as delivery would.
async fn assume(
    role: &CustomerRole,
    backoff: &Backoff,
    deadline: Instant,
) -> Result<AwsCredentials, RoleRefused> {
    let assumed = retry(backoff, deadline, || async {
        match role.assume().await {
            Ok(credentials) => Attempt::Done(Ok(credentials)),
            Err(refused) if !refused.retryable => Attempt::Done(Err(refused)),
            Err(busy) => Attempt::Again(busy),
        }
    })
    .await;
    assumed.unwrap_or_else(|gave_up| {
        Err(match gave_up {
            GaveUp {
                last: Some(busy),
                at_deadline: false,
                ..
            } => busy,
            _ => RoleRefused {
                retryable: true,
                untrusted: false,
                message: "STS did not answer in time; try again".into(),
            },
        })
    })
}
