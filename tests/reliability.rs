//! Issue 9's proof under faults and load: the whole local pipeline with every fault switched
//! on at once, against the local AWS emulator. Each run writes its figures under
//! `target/reliability/`; only `./scripts/reliability` (which sets `RELIABILITY_RECORD=1`)
//! also puts them into the tracked RELIABILITY.md, so an ordinary test run leaves the tree clean.
//!
//! `RELIABILITY_EVENTS` sets the generated events per run (2,000 by default; the full load is
//! `./scripts/reliability`, 100,000).

use audit_log_tests::figures::{self, thousands};
use audit_log_tests::local::{FaultPlan, Options, Report, run};
use audit_log_tests::{emulator, unique};

const SEED: u64 = 9;

fn events() -> usize {
    std::env::var("RELIABILITY_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000)
}

async fn under_faults(datadog: bool) -> Report {
    let aws = emulator().await;
    let options = Options {
        events: events(),
        invalid: 40,
        datadog,
        seed: SEED,
        operator: audit_log_tests::local::Operator::with_prefix(format!(
            "/{}",
            unique("reliability")
        )),
        verbose: std::env::var("RELIABILITY_VERBOSE").is_ok(),
        faults: Some(FaultPlan::standard(SEED)),
    };
    let (report, _, _) = run(&aws, &options).await;
    eprintln!("{report}");
    record(&report, &options);
    report
}

/// The run's figures as a RELIABILITY.md section.
fn section(report: &Report, options: &Options) -> String {
    let destination = if options.datadog {
        "Datadog (local intake stand-in)"
    } else {
        "CloudWatch Logs (customer accounts in the emulator)"
    };
    let mut out = format!(
        "### {destination}, {} generated events\n\n",
        thousands(options.events)
    );
    out += &format!(
        "Run on {} by `./scripts/reliability --events {}` (seed {SEED}); every invariant held.\n\n",
        time::OffsetDateTime::now_utc().date(),
        options.events,
    );
    out +=
        "| faults injected | events sent | stored | delivered | duplicated | rejected | lost |\n";
    out += "|---:|---:|---:|---:|---:|---:|---:|\n";
    out += &format!(
        "| {} | {} valid, {} invalid | {} | {} | {} | {} | {} |\n\n",
        thousands(report.faults_injected()),
        thousands(report.sent_valid),
        thousands(report.sent_invalid),
        thousands(report.stored),
        thousands(report.delivered),
        thousands(report.delivered_twice),
        thousands(report.rejected),
        report.lost(),
    );
    out += "| fault | times |\n|---|---:|\n";
    for (kind, n) in &report.faults {
        out += &format!("| {kind} | {} |\n", thousands(*n));
    }
    let t = &report.timings;
    out += &format!(
        "\n- Capture: {} invocations, {} killed; {} messages handed back to SQS and received again.\n",
        report.capture.invocations, report.capture.killed, report.capture.returned
    );
    out += &format!(
        "- Stream: {} invocations, {} killed, {} retried batches, {} sent to the on-failure queue; \
         {} events listed as failed at the end, no replay asked for: the destination caught up by \
         itself.\n",
        report.stream.invocations,
        report.stream.killed,
        report.stream.retries,
        report.stream.sent_to_failure_queue,
        thousands(report.listed_failures),
    );
    out += &format!(
        "- Time: capture {:.1} s ({:.0} events/s), delivery {:.1} s, recovery {:.1} s. End to end \
         {:.0} events/s; the stored backlog drained in {:.1} s, the outage included.\n",
        t.capture.as_secs_f64(),
        report.stored as f64 / t.capture.as_secs_f64(),
        t.delivery.as_secs_f64(),
        t.recovery.as_secs_f64(),
        report.events_per_second(),
        report.drain().as_secs_f64()
    );
    out
}

/// Writes the run's section (see `figures::record`), if the run kept every promise.
fn record(report: &Report, options: &Options) {
    if !report.ok() {
        return;
    }
    let kind = if options.datadog {
        "datadog"
    } else {
        "cloudwatch"
    };
    figures::record(
        &section(report, options),
        &format!("{kind}-{}", options.events),
    );
}

/// The invariants every run must keep, whatever was injected.
fn assert_invariants(report: &Report) {
    assert!(report.ok(), "{report}");
    assert_eq!(report.lost(), 0, "{report}");
    assert_eq!(report.stored, report.sent_valid, "stored once each");
    assert_eq!(report.stored_twice, 0);
    assert_eq!(
        report.rejected, report.sent_invalid,
        "only the invalid dead-lettered"
    );
    assert_eq!(report.undelivered, 0);
    assert_eq!(report.listed_failures, 0, "every event arrived by itself");
    assert!(report.delivered >= report.stored);
    assert_eq!(
        report.delivered - report.stored,
        report.delivered_twice,
        "duplicates are exactly what arrived beyond the stored events"
    );
}

fn assert_injected(report: &Report, kinds: &[&str]) {
    for kind in kinds {
        assert!(
            report.faults.get(*kind).copied().unwrap_or(0) > 0,
            "no `{kind}` was injected:\n{report}"
        );
    }
}

const EVERYWHERE: [&str; 4] = [
    "DynamoDB throttling",
    "DynamoDB UnprocessedItems",
    "capture killed after storing, before acknowledging",
    "stream killed after delivering, before answering",
];

#[tokio::test]
async fn cloudwatch_under_faults_loses_nothing() {
    let report = under_faults(false).await;
    assert_invariants(&report);
    assert_injected(&report, &EVERYWHERE);
    assert_injected(
        &report,
        &["CloudWatch Logs throttling", "CloudWatch Logs outage (503)"],
    );
}

#[tokio::test]
async fn datadog_under_faults_loses_nothing() {
    let report = under_faults(true).await;
    assert_invariants(&report);
    assert_injected(&report, &EVERYWHERE);
    assert_injected(
        &report,
        &[
            "Datadog HTTP 500",
            "Datadog HTTP 429",
            "Datadog answer too late",
            "Datadog outage (503)",
        ],
    );
}
