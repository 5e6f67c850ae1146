//! The api binary reads the lanes' settings as the stream function does, and refuses to start
//! on the same numbers the stream function refuses: its lane controls (pause, resume, a new try)
//! never run on other numbers than the lanes'.

use std::process::Command;

/// The binary's output when it starts with its required settings and `extra`; it must stop.
fn refused(extra: &[(&str, &str)]) -> String {
    let required = [
        ("EVENTS_TABLE_NAME", "events"),
        ("CONFIG_TABLE_NAME", "configs"),
        ("EVENTS_QUEUE_URL", "http://127.0.0.1:9/events"),
        ("REPLAY_QUEUE_URL", "http://127.0.0.1:9/replays"),
        ("LANE_QUEUE_URL", "http://127.0.0.1:9/lanes"),
        ("EXPORT_QUEUE_URL", "http://127.0.0.1:9/exports"),
        ("EXPORT_BUCKET_NAME", "exports"),
        ("SECRET_NAME_PREFIX", "audit-log/"),
    ];
    let out = Command::new(env!("CARGO_BIN_EXE_audit-log-api"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(required)
        .envs(extra.iter().copied())
        .output()
        .expect("run the api binary");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("ERROR api refuses to start"), "{text}");
    text
}

#[test]
fn a_retry_window_longer_than_the_events_are_kept_stops_the_api_at_start_up() {
    let text = refused(&[
        ("RETENTION_DAYS", "400"),
        ("DELIVERY_RETRY_WINDOW_HOURS", "9601"),
    ]);
    assert!(
        text.contains(
            "DELIVERY_RETRY_WINDOW_HOURS is 9601, longer than the events are kept (9600 hours)"
        ),
        "{text}"
    );
}

#[test]
fn a_backoff_over_a_day_stops_the_api_at_start_up() {
    let text = refused(&[("DELIVERY_RETRY_MAX_BACKOFF_SECONDS", "86401")]);
    assert!(
        text.contains("DELIVERY_RETRY_MAX_BACKOFF_SECONDS is 86401, over a day"),
        "{text}"
    );
}

#[test]
fn an_aws_id_customers_could_not_trust_stops_the_api_at_start_up() {
    let text = refused(&[("SERVICE_AWS_ACCOUNT_ID", "arn:aws:iam::123456789012:root")]);
    assert!(
        text.contains(
            r#"SERVICE_AWS_ACCOUNT_ID is "arn:aws:iam::123456789012:root": an AWS account id is 12 digits"#
        ),
        "{text}"
    );
}

#[test]
fn a_datadog_endpoint_that_is_no_url_stops_the_api_at_start_up() {
    let text = refused(&[("DATADOG_ENDPOINT_OVERRIDE", "127.0.0.1:8126")]);
    assert!(
        text.contains(r#"DATADOG_ENDPOINT_OVERRIDE is "127.0.0.1:8126""#),
        "{text}"
    );
}
