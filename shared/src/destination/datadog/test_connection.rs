//! Test connection: the key checked with Datadog's validate call (a refused key is told apart
//! from a refused log), then one test log sent as delivery sends it. Only the log is
//! `POST /api/v2/logs`, which every receiver takes; a validate call that gives no verdict on the
//! key leaves the verdict to the log.

use super::Intake;
use crate::destination::ConnectionTest;
use crate::event::AuditEvent;
use secrecy::ExposeSecret;
use tokio::time::{Instant, timeout_at};

pub(super) async fn test_connection(
    intake: &Intake<'_>,
    event: &AuditEvent,
    deadline: Instant,
) -> ConnectionTest {
    let site = intake.site;
    let result = |success: bool, message: String| ConnectionTest {
        success,
        message,
        log_group: None,
    };
    let key = match intake.key(false, deadline).await {
        Ok(key) => key,
        Err(e) => {
            return result(
                false,
                format!("Could not read the API key: {}", e.message()),
            );
        }
    };
    let http = match intake.datadog.http() {
        Ok(http) => http,
        Err(problem) => return result(false, format!("Could not call Datadog: {problem}.")),
    };
    let validate = http
        .get(format!("{}/api/v1/validate", intake.datadog.api_url(site)))
        .header("DD-API-KEY", key.expose_secret())
        .send();
    let response = match timeout_at(deadline, validate).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) if !e.is_timeout() => {
            return result(
                false,
                format!("Could not reach Datadog's {site} API; check the site and try again."),
            );
        }
        _ => {
            return result(
                false,
                format!("Datadog's {site} API did not answer in time; try again."),
            );
        }
    };
    let validated = match response.status().as_u16() {
        401 | 403 => {
            return result(
                false,
                format!(
                    "Datadog refused the API key on {site}: check that it is a valid API key (not an application key) of an organization on {site}."
                ),
            );
        }
        _ if response.status().is_success() => true,
        // No verdict on the key (the site's API in trouble, or a receiver at the endpoint
        // override that takes logs only): the test log, sent as delivery sends it, decides.
        _ => false,
    };
    let failures = super::service::deliver(
        intake,
        std::slice::from_ref(event),
        deadline,
        &intake.datadog.backoff,
        0,
    )
    .await;
    match failures.first() {
        None if validated => result(
            true,
            format!("Datadog accepted the API key and a test log on {site}."),
        ),
        None => result(true, format!("Datadog accepted a test log on {site}.")),
        Some((_, e)) if validated => result(
            false,
            format!(
                "The API key is valid but the test log was not accepted: {}",
                e.message()
            ),
        ),
        Some((_, e)) => result(
            false,
            format!("The test log was not accepted: {}", e.message()),
        ),
    }
}
