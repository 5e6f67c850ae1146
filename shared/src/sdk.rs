//! The AWS SDK's own retries, stated rather than left to its defaults. A call the service
//! retries itself, with its backoff and the invocation's deadline (events written to the
//! events table, CloudWatch Logs writes), makes one attempt per try: nothing runs silently
//! under the service's attempts. Every other call (configuration, secrets, queues, the stream,
//! STS) gets the SDK's standard mode with this many attempts.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;

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

/// For calls the service does not retry itself.
pub fn standard_retries() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(SDK_ATTEMPTS)
}

/// For calls the service retries itself: one attempt each.
pub fn retried_by_the_service() -> RetryConfig {
    RetryConfig::disabled()
}

/// The functions' AWS configuration: the environment's, with the retries above.
pub async fn load_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(standard_retries())
        .load()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_states_both_retry_settings() {
        assert_eq!(standard_retries().max_attempts(), 3);
        assert_eq!(retried_by_the_service().max_attempts(), 1);
    }
}
