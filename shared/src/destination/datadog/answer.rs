//! What the logs intake's answers mean: accepted, too large
//! (split and send again), the key refused, the logs rejected, or trouble worth another try.

use super::DatadogSite;
use crate::destination::DeliveryError;

#[derive(Debug)]
pub(super) enum Answer {
    Accepted,
    TooLarge,
    Unauthorized(u16),
    /// Datadog's trouble, not ours: try again after a backoff.
    Trouble(String),
    Failed(DeliveryError),
}

/// Reads the outcome of one request to the intake.
pub(super) fn read(
    outcome: Result<reqwest::Response, reqwest::Error>,
    site: DatadogSite,
) -> Answer {
    let response = match outcome {
        Ok(response) => response,
        Err(e) if e.is_timeout() => {
            return Answer::Trouble("Datadog did not answer in time".into());
        }
        Err(e) if e.is_connect() => {
            return Answer::Trouble(format!("could not connect to Datadog's {site} intake"));
        }
        Err(_) => return Answer::Trouble("the connection to Datadog failed".into()),
    };
    match response.status().as_u16() {
        200..=299 => Answer::Accepted,
        413 => Answer::TooLarge,
        status @ (401 | 403) => Answer::Unauthorized(status),
        status @ (408 | 429 | 500..=599) => {
            Answer::Trouble(format!("Datadog answered HTTP {status}"))
        }
        // The request's content: these logs only.
        400 => Answer::Failed(DeliveryError::Rejected(
            "Datadog rejected the logs (HTTP 400)".into(),
        )),
        422 => Answer::Failed(DeliveryError::Rejected(
            "Datadog rejected the logs (HTTP 422)".into(),
        )),
        415 => Answer::Failed(DeliveryError::Refused(format!(
            "Datadog refused the logs (HTTP 415) on {site}"
        ))),
        status => Answer::Failed(DeliveryError::Refused(format!(
            "Datadog refused the logs (HTTP {status}) on {site}"
        ))),
    }
}

/// A key Datadog refused even after it was read again.
pub(super) fn refused_key(status: u16, site: DatadogSite) -> DeliveryError {
    DeliveryError::Refused(format!(
        "Datadog refused the API key (HTTP {status}) on {site}: check that the key is valid and \
         belongs to an organization on this site, then save the configuration with a working key"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> Answer {
        let response = http::Response::builder()
            .status(status)
            .body(Vec::<u8>::new())
            .unwrap();
        read(Ok(reqwest::Response::from(response)), DatadogSite::Eu1)
    }

    #[test]
    fn every_status_datadog_documents_has_its_meaning() {
        assert!(matches!(answer(202), Answer::Accepted));
        assert!(matches!(answer(413), Answer::TooLarge));
        assert!(matches!(answer(403), Answer::Unauthorized(403)));
        for trouble in [408, 429, 500, 503] {
            assert!(matches!(answer(trouble), Answer::Trouble(_)), "{trouble}");
        }
        assert!(matches!(
            answer(400),
            Answer::Failed(DeliveryError::Rejected(_))
        ));
        assert!(matches!(
            answer(422),
            Answer::Failed(DeliveryError::Rejected(_))
        ));
        match answer(415) {
            Answer::Failed(DeliveryError::Refused(m)) => {
                assert!(m.contains("HTTP 415") && m.contains("datadoghq.eu"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        match answer(404) {
            Answer::Failed(DeliveryError::Refused(m)) => assert!(m.contains("datadoghq.eu"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
