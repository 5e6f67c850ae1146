//! The AWS SDK's own retries, stated rather than left to its defaults. A call the service
//! retries itself, with its backoff and the invocation's deadline (events written to the
//! events table, CloudWatch Logs writes), makes one attempt per try: nothing runs silently
//! under the service's attempts. Every other call (configuration, secrets, queues, the stream,
//! STS) gets the SDK's standard mode with this many attempts.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
// The SDK's error types, which every service's client re-exports.
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

pub const SDK_ATTEMPTS: u32 = 3;

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

/// The functions' AWS configuration: the environment's, with the retries above and one HTTP
/// client for every AWS client made from it.
pub async fn load_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(standard_retries())
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
