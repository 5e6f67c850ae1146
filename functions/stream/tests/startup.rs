//! The stream binary refuses to start on settings it cannot honour (a log group prefix
//! CloudWatch would refuse, a backoff past what the template allows), rather than fail every
//! customer's delivery as if the trouble were the customer's.

use std::process::Command;

/// What the binary says when it starts with the required settings and `extra`; it must fail.
fn refused_start(extra: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_audit-log-stream"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CONFIG_TABLE_NAME", "configs")
        .env("EVENTS_TABLE_NAME", "events")
        .env(
            "EVENTS_STREAM_ARN",
            "arn:aws:dynamodb:us-east-1:123456789012:table/events/stream/1",
        )
        .env("SECRET_NAME_PREFIX", "audit-log/")
        .env("REPLAY_QUEUE_URL", "http://127.0.0.1:9/replays")
        .env("LANE_QUEUE_URL", "http://127.0.0.1:9/lanes")
        .env("DEFERRED_QUEUE_URL", "http://127.0.0.1:9/deferred")
        .envs(extra.iter().copied())
        .output()
        .expect("run the stream binary");
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("ERROR stream refuses to start"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "no colour codes in what Lambda keeps: {text:?}"
    );
    text
}

#[test]
fn a_log_group_prefix_cloudwatch_refuses_stops_the_function_at_start_up() {
    let text = refused_start(&[("LOG_GROUP_PREFIX", "/acme audit")]);
    assert!(
        text.contains(r#"LOG_GROUP_PREFIX is "/acme audit": CloudWatch takes only"#),
        "{text}"
    );
}

#[test]
fn a_backoff_over_a_day_or_under_a_second_stops_the_function_at_start_up() {
    let text = refused_start(&[("DELIVERY_RETRY_MAX_BACKOFF_SECONDS", "18446744073709551615")]);
    assert!(
        text.contains("DELIVERY_RETRY_MAX_BACKOFF_SECONDS is 18446744073709551615, over a day"),
        "{text}"
    );
    let text = refused_start(&[("DELIVERY_RETRY_MAX_BACKOFF_SECONDS", "0")]);
    assert!(
        text.contains("DELIVERY_RETRY_MAX_BACKOFF_SECONDS must be a whole number, at least 1"),
        "{text}"
    );
}

#[test]
fn a_datadog_endpoint_that_is_no_url_stops_the_function_at_start_up() {
    let text = refused_start(&[("DATADOG_ENDPOINT_OVERRIDE", "127.0.0.1:8126")]);
    assert!(
        text.contains(r#"DATADOG_ENDPOINT_OVERRIDE is "127.0.0.1:8126": it must be an http://"#),
        "{text}"
    );
}

#[test]
fn a_retention_past_a_century_stops_the_function_at_start_up() {
    let text = refused_start(&[("RETENTION_DAYS", "36501")]);
    assert!(
        text.contains("RETENTION_DAYS is 36501, over the 36500 days (a century) it may be"),
        "{text}"
    );
}
