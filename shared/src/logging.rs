//! The functions' log lines. Lambda's advanced logging controls choose the level
//! (`AWS_LAMBDA_LOG_LEVEL`, else a bare level in `RUST_LOG`, else INFO) and the format
//! (`AWS_LAMBDA_LOG_FORMAT`); `RUST_LOG`'s `target=level` directives raise or lower one module.
//! One difference from lambda_runtime's default subscriber: the AWS SDK, the HTTP clients
//! and the runtime never log below INFO. At DEBUG and TRACE they write whole requests and
//! responses, and so the secrets in them: GetSecretValue's `SecretString`, the organization's
//! External ID, the `DD-API-KEY` header, a saved configuration's body.

use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
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

/// The levels the deployment asked for. `Targets` rather than tracing-subscriber's `EnvFilter`:
/// the span and field filters `EnvFilter` adds are what link its regex engine, about 0.4 MB of
/// each bootstrap. A directive that does not parse is skipped, as `EnvFilter` skips it.
pub fn chosen_levels(lambda_level: Option<&str>, rust_log: Option<&str>) -> Targets {
    let mut bare = None;
    let mut targets = Targets::new();
    let directives = rust_log.unwrap_or_default().split(',').map(str::trim);
    for directive in directives.filter(|d| !d.is_empty()) {
        match directive.parse::<Targets>() {
            Ok(parsed) if parsed.default_level().is_some() => bare = parsed.default_level(),
            Ok(parsed) => targets.extend(parsed),
            Err(_) => {}
        }
    }
    let level = match lambda_level {
        Some(level) => level.parse::<LevelFilter>().ok(),
        None => bare,
    };
    targets.with_default(level.unwrap_or(LevelFilter::INFO))
}

/// Installs the function's subscriber, writing to stdout for Lambda to collect.
pub fn init() {
    let chosen = chosen_levels(
        std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref(),
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    Registry::default()
        .with(lines(json, chosen, std::io::stdout))
        .init();
}

/// The layer that writes the lines `chosen` lets through, as JSON or as text, to `writer`.
fn lines<W>(json: bool, chosen: Targets, writer: W) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = chosen.and(dependencies_at_info());
    // Lambda keeps stdout as it is: colour codes would land in CloudWatch as text.
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_target(false)
        .with_writer(writer);
    if json {
        // With its RFC 3339 `timestamp`: Lambda takes a JSON line without one for INFO, so
        // an ERROR line would be dropped by the very WARN or ERROR setting meant to keep it.
        layer.json().with_filter(filter).boxed()
    } else {
        // Lambda stamps each text line itself.
        layer.without_time().with_filter(filter).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// What the layer wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Written {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn written(json: bool, chosen: Targets) -> String {
        let out = Written::default();
        let writer = out.clone();
        let subscriber = Registry::default().with(lines(json, chosen, move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(organization_id = "o", "delivered");
            tracing::error!(organization_id = "o", "lost");
        });
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn json_lines_carry_the_level_and_an_rfc_3339_timestamp_that_lambda_filters_by() {
        let out = written(true, chosen_levels(Some("ERROR"), None));
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{out}");
        assert_eq!(lines[0]["level"], "ERROR");
        assert_eq!(lines[0]["fields"]["message"], "lost");
        let stamp = lines[0]["timestamp"].as_str().expect("a timestamp");
        time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{stamp}: {e}"));
        // Text lines are stamped by Lambda: they start with their level.
        let text = written(false, chosen_levels(None, None));
        assert!(
            text.starts_with(" INFO") || text.starts_with("INFO"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 2, "{text}");
    }

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

    #[test]
    fn lambda_chooses_the_level_and_rust_log_tunes_one_module() {
        use tracing::Level;
        let rust_log = Some("warn, audit_log::store=trace,not a=directive=at all");
        let quiet_lanes = Some("audit_log::store=error");
        // (AWS_LAMBDA_LOG_LEVEL, RUST_LOG, target, level, passes)
        let cases = [
            // Nothing set: INFO.
            (None, None, "audit_log_stream", Level::INFO, true),
            (None, None, "audit_log_stream", Level::DEBUG, false),
            // Lambda's level wins over a bare level in RUST_LOG; a level it does not know is INFO.
            (
                Some("DEBUG"),
                Some("warn"),
                "audit_log_api",
                Level::DEBUG,
                true,
            ),
            (
                Some("WARN"),
                Some("debug"),
                "audit_log_api",
                Level::INFO,
                false,
            ),
            (
                Some("LOUD"),
                Some("debug"),
                "audit_log_api",
                Level::DEBUG,
                false,
            ),
            (Some("LOUD"), None, "audit_log_api", Level::INFO, true),
            // RUST_LOG alone: its bare level, its modules, and what does not parse skipped.
            (None, Some("error"), "audit_log_api", Level::WARN, false),
            (
                None,
                rust_log,
                "audit_log::store::lanes",
                Level::TRACE,
                true,
            ),
            (None, rust_log, "audit_log::destination", Level::INFO, false),
            (None, rust_log, "audit_log::destination", Level::WARN, true),
            // A module turned down under Lambda's level.
            (
                Some("INFO"),
                quiet_lanes,
                "audit_log::store",
                Level::WARN,
                false,
            ),
            (
                Some("INFO"),
                quiet_lanes,
                "audit_log_stream",
                Level::INFO,
                true,
            ),
        ];
        for (lambda, rust_log, target, level, passes) in cases {
            assert_eq!(
                chosen_levels(lambda, rust_log).would_enable(target, &level),
                passes,
                "{lambda:?} {rust_log:?} {target} {level}"
            );
        }
    }
}
