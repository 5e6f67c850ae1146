//! The functions' log lines. Lambda's advanced logging controls choose the level
//! (`AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG`, else INFO) and the format (`AWS_LAMBDA_LOG_FORMAT`),
//! as in lambda_runtime's default subscriber, with one difference: the AWS SDK, the HTTP clients
//! and the runtime never log below INFO. At DEBUG and TRACE they write whole requests and
//! responses, and so the secrets in them: GetSecretValue's `SecretString`, the organization's
//! External ID, the `DD-API-KEY` header, a saved configuration's body.

use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// Crates that log message contents below INFO.
const QUIET: [&str; 14] = [
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http",
    "aws_smithy_http_client",
    "aws_runtime",
    "aws_sigv4",
    "aws_config",
    "aws_sdk",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "rustls",
    "lambda_runtime",
];

/// Passes everything except the dependencies' lines below INFO.
pub fn dependencies_at_info() -> Targets {
    QUIET.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |targets, crate_name| targets.with_target(*crate_name, LevelFilter::INFO),
    )
}

/// Installs the function's subscriber, writing to stdout for Lambda to collect.
pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|l| l.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    let chosen = EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy();
    let filter = chosen.and(dependencies_at_info());
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let layer = tracing_subscriber::fmt::layer()
        .with_target(false)
        .without_time()
        .with_writer(std::io::stdout);
    let layer: Box<dyn Layer<Registry> + Send + Sync> = if json {
        layer.json().with_filter(filter).boxed()
    } else {
        layer.with_filter(filter).boxed()
    };
    Registry::default().with(layer).init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passes(target: &str, level: tracing::Level) -> bool {
        dependencies_at_info().would_enable(target, &level)
    }

    #[test]
    fn the_sdk_and_http_clients_stay_at_info_and_the_service_keeps_every_level() {
        use tracing::Level;
        for quiet in [
            "aws_smithy_runtime::client::orchestrator::http",
            "aws_sdk_secretsmanager::operation",
            "hyper_util::client::legacy",
            "reqwest::connect",
            "lambda_runtime::layers",
        ] {
            assert!(!passes(quiet, Level::DEBUG), "{quiet}");
            assert!(!passes(quiet, Level::TRACE), "{quiet}");
            assert!(passes(quiet, Level::INFO), "{quiet}");
            assert!(passes(quiet, Level::WARN), "{quiet}");
        }
        for ours in ["audit_log::store", "audit_log_stream", "audit_log_api"] {
            assert!(passes(ours, Level::TRACE), "{ours}");
        }
    }
}
