//! `POST /streaming/test`: Test connection, through the destination's own test.

use crate::audit::actor;
use crate::error::ApiError;
use crate::request::Caller;
use crate::view::TestResult;
use crate::{Api, Ports, TEST_BUDGET, config_error, input, json_response};
use audit_log::AuditEvent;
use audit_log::clock::seconds_text;
use audit_log::credentials::Credentials;
use audit_log::destination::{Destination, Project};
use audit_log::streaming::{
    CONNECTION_TESTS, Configurations, ConnectionTests, Organizations, TestRecord,
};
use aws_lambda_events::event::apigw::ApiGatewayV2httpResponse;
use secrecy::SecretString;
use serde_json::json;
use time::OffsetDateTime;
use tokio::time::Instant;

impl<P: Ports> Api<P> {
    pub(crate) async fn test(
        &self,
        caller: &Caller,
        org: &str,
        project: &str,
        body: &[u8],
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let saved = self
            .configs
            .configuration(org, project)
            .await
            .map_err(config_error)?;
        // An empty body tests what is saved (as do `{}` and `null`, which clients that always
        // send JSON send for nothing); a body tests the settings it carries.
        // `given`: the body carries a key of its own, which the saved destination may not have.
        let (destination, key, given) = if says_nothing(body) {
            let saved = saved.as_ref().ok_or_else(|| {
                ApiError::not_found(
                    "nothing is saved to test; send the settings to test in the body",
                )
            })?;
            let key = match &saved.destination {
                Destination::Datadog(_) => {
                    Some(self.saved_datadog_key(org, project, Some(saved)).await?)
                }
                Destination::Cloudwatch(_) => None,
            };
            (saved.destination.clone(), key, false)
        } else {
            let (destination, api_key) = input::tested(body)?;
            self.check_role_account(&destination).await?;
            let given = api_key.is_some();
            let key = match (&destination, api_key) {
                (Destination::Datadog(_), Some(key)) => Some(key),
                (Destination::Datadog(_), None) => {
                    Some(self.saved_datadog_key(org, project, saved.as_ref()).await?)
                }
                (Destination::Cloudwatch(_), _) => None,
            };
            (destination, key, given)
        };
        let now = self.clock.now();
        self.rate_limit(org, CONNECTION_TESTS, now).await?;
        let event = test_event(caller, org, project, now)?;
        let credentials = match (&destination, key) {
            (Destination::Cloudwatch(settings), _) => Credentials::Cloudwatch {
                role_arn: settings.role_arn.clone(),
                external_id: SecretString::from(
                    self.configs
                        .external_id(org, self.clock.now())
                        .await
                        .map_err(config_error)?,
                ),
            },
            (Destination::Datadog(_), Some(api_key)) => Credentials::Datadog { api_key },
            (Destination::Datadog(_), None) => return Err(ApiError::internal()),
        };
        let tested = self
            .destinations
            .sink(
                &destination,
                Project {
                    organization_id: org,
                    project_id: project,
                    credentials: Box::new(credentials),
                },
            )
            .test_connection(&event, Instant::now() + TEST_BUDGET)
            .await;
        let result = TestResult {
            success: tested.success,
            provider: destination.provider().as_str(),
            message: tested.message,
            log_group: tested.log_group,
        };
        tracing::info!(
            organization_id = org,
            project_id = project,
            provider = result.provider,
            success = result.success,
            "connection tested"
        );
        // A saved destination that passes its test is tried again at once; a key not saved
        // passing says nothing of the saved one.
        let tested_saved = !given && saved.as_ref().is_some_and(|s| s.destination == destination);
        if result.success && tested_saved {
            self.retry_lane_now(org, project, false).await;
        }
        let record = TestRecord {
            tested_at: seconds_text(now),
            provider: result.provider.to_owned(),
            success: result.success,
            message: result.message.clone(),
        };
        if let Err(e) = self.configs.record_test(org, project, &record, now).await {
            tracing::error!(organization_id = org, project_id = project, error = %e, "connection test not recorded");
        }
        Ok(json_response(200, &result))
    }
}

/// The event "Test connection" sends. The path's ids were checked as an event's are, so this
/// is valid; should it not be, the caller learns which field, not a 500.
pub(crate) fn test_event(
    caller: &Caller,
    org: &str,
    project: &str,
    now: OffsetDateTime,
) -> Result<AuditEvent, ApiError> {
    let value = json!({
        "status": "OK",
        "action": "create",
        "description": "Test connection",
        "organization_id": org,
        "project_id": project,
        "timestamp": seconds_text(now),
        "actor": actor(caller),
        "test": true,
    });
    AuditEvent::from_value(value).map_err(|e| ApiError::bad_request("invalid_path", e.to_string()))
}

/// A body that carries no settings: empty, or JSON's empty object or `null`.
fn says_nothing(body: &[u8]) -> bool {
    let text = body.trim_ascii();
    text.is_empty()
        || text == b"null"
        || serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(text)
            .is_ok_and(|object| object.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller {
            organization_id: "o".into(),
            subject: "user-1".into(),
            email: None,
            name: None,
        }
    }

    #[test]
    fn the_test_event_is_valid() {
        let e = test_event(&caller(), "o", "p", OffsetDateTime::now_utc()).unwrap();
        assert_eq!(e.fields()["test"], json!(true));
    }
}
