//! The local pipeline, as `./scripts/local` runs it: 1,000 generated events and invalid ones
//! through the real handlers and event source mappings against the local AWS emulator.

use audit_log_tests::local::{Operator, Options, run};
use audit_log_tests::{emulator, unique};

fn options(datadog: bool) -> Options {
    Options {
        events: 1_000,
        invalid: 12,
        datadog,
        seed: 7,
        operator: Operator::with_prefix(format!("/{}", unique("hashicorp"))),
        verbose: false,
        faults: None,
    }
}

#[tokio::test]
async fn a_thousand_events_reach_cloudwatch_once_each_and_the_invalid_ones_the_dead_letter_queue() {
    let aws = emulator().await;
    let (report, _, _) = run(&aws, &options(false)).await;
    assert!(report.ok(), "{report}");
    assert_eq!(report.sent_valid, report.stored + report.stored_twice);
    assert_eq!(
        report.sent_valid + report.sent_invalid,
        report.stored + report.rejected
    );
    assert_eq!(report.rejected, 12);
    assert_eq!(report.stored_twice, 0);
    assert_eq!(report.undelivered, 0);
    assert_eq!(report.delivered, report.stored);
    assert!(report.sent_valid >= 1_000);
    assert!(
        report
            .per_project
            .iter()
            .all(|(_, stored, delivered)| stored == delivered)
    );
}

#[tokio::test]
async fn a_thousand_events_reach_the_datadog_stand_in_once_each() {
    let aws = emulator().await;
    let (report, _, _) = run(&aws, &options(true)).await;
    assert!(report.ok(), "{report}");
    assert_eq!(
        report.sent_valid + report.sent_invalid,
        report.stored + report.rejected
    );
    assert_eq!(report.delivered, report.stored);
    assert_eq!(report.delivered_twice, 0);
}

#[test]
fn the_local_runner_refuses_what_the_functions_refuse_before_starting_anything() {
    const SETTINGS: [&str; 5] = [
        "RETENTION_DAYS",
        "DELIVERY_RETRY_WINDOW_HOURS",
        "DELIVERY_RETRY_MAX_BACKOFF_SECONDS",
        "SERVICE_AWS_ACCOUNT_ID",
        "DATADOG_ENDPOINT_OVERRIDE",
    ];
    for (name, value, reason) in [
        ("RETENTION_DAYS", "30", "RETENTION_DAYS is 30"),
        (
            "DELIVERY_RETRY_WINDOW_HOURS",
            "0",
            "DELIVERY_RETRY_WINDOW_HOURS must be a whole number",
        ),
        (
            "DELIVERY_RETRY_WINDOW_HOURS",
            "9601",
            "longer than the events are kept (9600 hours)",
        ),
        (
            "DELIVERY_RETRY_MAX_BACKOFF_SECONDS",
            "86401",
            "DELIVERY_RETRY_MAX_BACKOFF_SECONDS is 86401",
        ),
        (
            "SERVICE_AWS_ACCOUNT_ID",
            "1234",
            "an AWS account id is 12 digits",
        ),
        (
            "DATADOG_ENDPOINT_OVERRIDE",
            "localhost:8126",
            "DATADOG_ENDPOINT_OVERRIDE is \"localhost:8126\"",
        ),
    ] {
        let mut runner = std::process::Command::new(env!("CARGO_BIN_EXE_audit-log-local"));
        // Only the one setting given: the others at their defaults (a retention of 400 days).
        for setting in SETTINGS {
            runner.env_remove(setting);
        }
        let out = runner
            .env(name, value)
            .env_remove("AWS_ENDPOINT_URL")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name}={value}");
        let said = String::from_utf8_lossy(&out.stderr);
        // Said up front: nothing started, so no emulator or panic in between.
        assert!(
            said.starts_with("audit-log-local refuses to start: ") && said.contains(reason),
            "{name}={value}: {said}"
        );
    }
}

#[test]
fn a_port_in_use_is_said_before_anything_runs() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_audit-log-local"))
        .args(["--serve", "--port", &port])
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.starts_with(&format!("cannot listen on 127.0.0.1:{port}")),
        "{said}"
    );
    // No events were sent, no report made.
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn the_served_api_answers_http_and_keeps_delivering() {
    let aws = emulator().await;
    let mut small = options(false);
    small.events = 5;
    small.invalid = 1;
    // The operator's settings, as `./scripts/local` reads them from its environment: the
    // service's own account set apart from the emulator's (where the contract's example role
    // lives), another claim, a longer retention.
    small.operator.service_account_id = Some("111122223333".into());
    small.operator.organization_claim = "org".into();
    small.operator.retention = audit_log::Retention::days(500).unwrap();
    let (report, stack, _) = run(&aws, &small).await;
    assert!(report.ok(), "{report}");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let stack = stack.clone();
        tokio::spawn(async move {
            audit_log_tests::serve::serve(&stack, None, listener, async {
                let _ = stopped.await;
            })
            .await
        })
    };
    let http = reqwest::Client::new();
    let get = |url: String| {
        let request = http
            .get(url)
            .header("X-Organization-Id", "77f447d4-def0-46f2-bf09-6850d36745ed");
        async move {
            request
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let (org, project) = (
        "77f447d4-def0-46f2-bf09-6850d36745ed",
        "a98c3c31-5760-4db1-b62b-0988080a66ad",
    );
    let url = format!("{base}/v1/organizations/{org}/projects/{project}/audit-logs");
    let anonymous = http.get(format!("{url}/streaming")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let view = get(format!("{url}/streaming")).await;
    assert_eq!(view["destination"]["provider"], "cloudwatch");
    assert_eq!(view["aws_account_id"], "111122223333");
    // An event sent while serving is captured and listed.
    let mut event: serde_json::Value =
        serde_json::from_str(audit_log::fixtures::SEED_EVENTS[0].1).unwrap();
    event["timestamp"] = serde_json::json!(
        time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    event["served"] = serde_json::json!(true);
    stack.send(&[event.to_string()]).await;
    let mut listed = false;
    // Up to 30 s: the served loop's first round goes over the stream from its start.
    for _ in 0..120 {
        let page = get(format!("{url}?limit=5")).await;
        if page["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["served"] == true)
        {
            listed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(listed, "the event sent while serving was captured");
    // The organization's own routes: its events across its projects, and its projects.
    let organization = format!("{base}/v1/organizations/{org}/audit-logs");
    let across = get(format!("{organization}?limit=5&action=create")).await;
    assert!(
        across["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["served"] == true),
        "{across}"
    );
    let projects = get(format!("{organization}/projects")).await;
    assert!(
        projects["projects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["project_id"] == project),
        "{projects}"
    );
    // An export started over HTTP runs while serving, and its link downloads the file from
    // the emulator's S3.
    let started = http
        .post(format!("{url}/exports"))
        .header("X-Organization-Id", org)
        .json(&serde_json::json!({"format": "csv", "action": "create"}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let id = started.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut export = serde_json::Value::Null;
    for _ in 0..120 {
        export = get(format!("{url}/exports/{id}")).await;
        if export["state"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(export["state"], "completed", "{export}");
    let file = http
        .get(export["download_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert!(file.status().is_success());
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::MultiGzDecoder::new(&file.bytes().await.unwrap()[..]),
        &mut text,
    )
    .unwrap();
    assert!(
        text.starts_with("timestamp,organization_id,project_id,action,"),
        "{text}"
    );
    assert!(
        text.contains(r#"""served"":true"#),
        "the event sent while serving is exported"
    );
    // Kept for the operator's retention: the event sent now expires 500 days from now.
    let latest = stack
        .dynamodb
        .scan()
        .table_name(&stack.events_table)
        .send()
        .await
        .unwrap()
        .items()
        .iter()
        .filter_map(|i| i.get("expires_at")?.as_n().ok()?.parse::<i64>().ok())
        .max()
        .unwrap();
    let in_500_days = time::OffsetDateTime::now_utc().unix_timestamp() + 500 * 86_400;
    assert!((latest - in_500_days).abs() < 3_600, "{latest}");
    // The contract's example role is in the emulator's account, not the service's: saved.
    let saved = http
        .put(format!("{url}/streaming"))
        .header("X-Organization-Id", org)
        .json(&serde_json::json!({"provider": "cloudwatch", "name": "prod-audit", "cloudwatch": {"role_arn": "arn:aws:iam::123456789012:role/hcp-log-streaming", "region": "us-west-2"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
