//! The AWS SDK's own retries, stated rather than left to its defaults. A call the service
//! retries itself, with its backoff and the invocation's deadline (events written to the
//! events table, CloudWatch Logs writes), makes one attempt per try: nothing runs silently
//! under the service's attempts. Every other call (configuration, secrets, queues, the stream,
//! STS) gets the SDK's standard mode with this many attempts.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use std::time::Duration;
// The SDK's error types, which every service's client re-exports.
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

pub const SDK_ATTEMPTS: u32 = 3;

/// How long one attempt of an AWS call may take before the SDK gives it up and, as for any
/// transient trouble, tries again. DynamoDB, SQS, Secrets Manager and STS answer in
/// milliseconds, S3 takes an export's part of a few MiB in about a second; left without one, a
/// connection that never answers would hold the invocation (and the other tenants' events in
/// its batch) until the function's own timeout. Customers' CloudWatch Logs clients go without
/// it (`cloudwatch::service::without_sdk_retries`).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The codes AWS services answer when they are busy or a request timed out: what the SDK's
/// standard retry mode would try again.
pub const BUSY: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "PriorRequestNotComplete",
    "RequestTimeout",
    "RequestTimeoutException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
];

/// Whether an AWS service's HTTP status says the trouble is its own, whatever its error's
/// code: any 5xx, "request timeout" and "too many requests".
pub fn answered_in_trouble(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// Whether an AWS service's error answer says the trouble is its own: a code of [`BUSY`] or of
/// the service's own `codes`, or a status [`answered_in_trouble`].
pub fn in_trouble<E: ProvideErrorMetadata>(
    err: &SdkError<E, HttpResponse>,
    codes: &[&str],
) -> bool {
    let code = err.as_service_error().and_then(|e| e.code());
    code.is_some_and(|c| BUSY.contains(&c) || codes.contains(&c))
        || err
            .raw_response()
            .is_some_and(|r| answered_in_trouble(r.status().as_u16()))
}

/// For calls the service does not retry itself.
pub fn standard_retries() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(SDK_ATTEMPTS)
}

/// For calls the service retries itself: one attempt each.
pub fn retried_by_the_service() -> RetryConfig {
    RetryConfig::disabled()
}

/// Each attempt cut at `attempt`; the SDK's own connect timeout stays.
pub fn attempts_cut_at(attempt: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .operation_attempt_timeout(attempt)
        .build()
}

/// The functions' AWS configuration: the environment's, with the retries and attempt timeout
/// above and one HTTP client for every AWS client made from it.
pub async fn load_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(standard_retries())
        .timeout_config(attempts_cut_at(ATTEMPT_TIMEOUT))
        .http_client(shared_https_client())
        .load()
        .await
}

/// The HTTPS client the SDK makes by itself (rustls with aws-lc, a proxy when the environment
/// names one), made once. Left to itself, the SDK makes one per AWS client, each with its own
/// pool of connections kept open between requests: the stream function makes a CloudWatch Logs
/// client per customer's role and region (up to 1,000 kept), whose idle connections would add
/// up against Lambda's 1,024 file descriptors. One client pools connections per host, however
/// many customers' credentials sign the requests (each request is signed before it is sent).
pub fn shared_https_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::{Builder, ConnectorBuilder, proxy::ProxyConfig, tls};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_states_both_retry_settings() {
        assert_eq!(standard_retries().max_attempts(), 3);
        assert_eq!(retried_by_the_service().max_attempts(), 1);
    }

    #[tokio::test]
    async fn every_attempt_has_a_time_limit_and_the_connect_timeout_stays() {
        let config = load_config().await;
        let timeouts = config.timeout_config().unwrap();
        assert_eq!(timeouts.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        assert_eq!(
            timeouts.connect_timeout(),
            Some(Duration::from_millis(3100))
        );
        // The limit of a whole call is left to each caller's own deadline.
        assert_eq!(timeouts.operation_timeout(), None);
    }

    /// What the setting relies on: the SDK cuts a silent attempt and sends it again.
    #[tokio::test]
    async fn an_attempt_that_gets_no_answer_is_given_up_and_tried_again() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        // A server that takes connections and never answers on them.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let server = tokio::spawn({
            let accepted = accepted.clone();
            async move {
                let mut held = Vec::new();
                while let Ok((socket, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    held.push(socket);
                }
            }
        });
        // The functions' configuration, its attempts cut sooner than in earnest.
        let dynamodb = aws_sdk_dynamodb::config::Builder::from(&load_config().await)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                "id", "secret", None, None, "test",
            ))
            .endpoint_url(format!("http://{address}"))
            .retry_config(standard_retries().with_initial_backoff(Duration::from_millis(1)))
            .timeout_config(attempts_cut_at(Duration::from_millis(200)))
            .build();
        let answer = aws_sdk_dynamodb::Client::from_conf(dynamodb)
            .get_item()
            .table_name("t")
            .send()
            .await;
        assert!(
            matches!(answer, Err(SdkError::TimeoutError(_))),
            "{answer:?}"
        );
        // Each attempt on a connection of its own: the silent one is not used again.
        assert_eq!(accepted.load(Ordering::SeqCst), SDK_ATTEMPTS as usize);
        server.abort();
    }

    #[tokio::test]
    async fn every_client_made_from_the_functions_configuration_uses_its_one_http_client() {
        let config = load_config().await;
        assert!(config.http_client().is_some());
        // As the stream function makes a customer's CloudWatch Logs client.
        let logs = aws_sdk_cloudwatchlogs::config::Builder::from(&config)
            .region(aws_config::Region::new("eu-west-1"))
            .build();
        assert!(logs.http_client().is_some());
    }
}
