//! Issue 9's leak check. Every test process that talks to the emulator reads all its log lines,
//! of every level and crate (the AWS SDK and HTTP clients at TRACE included), for the sentinel
//! Datadog key, the sentinel External ID, every key a test configures and every External ID the
//! API hands out (`install_log_tap` in tests/support/lib.rs). A line holding one is written to
//! `target/leaks/`, and `scripts/test` fails when anything is there. This file proves the tap
//! catches what it must, and drives the paths a secret travels: both destinations, test
//! connection, saving, capture and delivery. The reliability runs (faults, retries, the
//! on-failure queue, replays) and the stream and API tests (refused keys, a refusing intake
//! that echoes the key) run under the same tap.

use audit_log_tests::local::{FaultPlan, Options, run};
use audit_log_tests::{
    CANARY_PREFIX, emulator, install_log_tap, leaked_lines, tapped_lines, unique, watch_secret,
};

#[test]
fn the_tap_catches_a_watched_secret_in_any_line_at_any_level() {
    install_log_tap();
    let canary = format!("{CANARY_PREFIX}{}", unique("secret"));
    watch_secret(&canary);
    std::thread::spawn({
        let canary = canary.clone();
        move || tracing::trace!(target: "audit_log_stream", body = %format!("{{\"SecretString\":\"{canary}\"}}"), "read response")
    })
    .join()
    .unwrap();
    let caught: Vec<String> = leaked_lines()
        .into_iter()
        .filter(|l| l.contains("<CANARY>"))
        .collect();
    assert_eq!(caught.len(), 1, "{caught:?}");
    assert!(!caught[0].contains(&canary), "the report masks the secret");
    assert!(caught[0].contains("audit_log_stream"));
}

#[test]
fn the_tap_reads_what_the_functions_would_write_at_trace_and_not_the_sdks_message_dumps() {
    install_log_tap();
    let canary = format!("{CANARY_PREFIX}{}", unique("sdk"));
    watch_secret(&canary);
    std::thread::spawn({
        let canary = canary.clone();
        move || {
            tracing::trace!(target: "aws_smithy_runtime::client::orchestrator::http", response = %canary, "read HTTP response body");
            tracing::debug!(target: "hyper_util::client::legacy", header = %canary, "sending");
        }
    })
    .join()
    .unwrap();
    // Production's filter (audit_log::logging) never lets these through, whatever the level.
    assert!(
        !leaked_lines()
            .iter()
            .any(|l| l.contains("orchestrator::http") || l.contains("hyper_util"))
    );
}

fn options(datadog: bool, faults: bool) -> Options {
    Options {
        events: 200,
        invalid: 5,
        datadog,
        seed: 11,
        operator: audit_log_tests::local::Operator::with_prefix(format!("/{}", unique("leaks"))),
        verbose: false,
        faults: faults.then(|| FaultPlan::standard(11)),
    }
}

#[tokio::test]
async fn secrets_stay_out_of_every_log_line_of_both_destinations() {
    let aws = emulator().await;
    let before = tapped_lines();
    for (datadog, faults) in [(true, false), (false, false)] {
        let (report, _, _) = run(&aws, &options(datadog, faults)).await;
        assert!(report.ok(), "{report}");
    }
    assert!(
        tapped_lines() - before > 100,
        "only {} lines tapped",
        tapped_lines() - before
    );
    let leaked: Vec<String> = leaked_lines()
        .into_iter()
        .filter(|l| !l.contains("<CANARY>"))
        .collect();
    assert!(leaked.is_empty(), "secrets in log lines: {leaked:#?}");
}
