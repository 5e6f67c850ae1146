//! `./scripts/bench`: the functions' release binaries measured as Lambda runs them. See
//! BENCHMARKS.md for the figures and what dominates each.
//!
//! This driver is built with the tests, in the dev profile: each function's CPU, init CPU and
//! memory are read from the function's process, but wall times pass through the driver (the
//! Runtime API, the counting proxy, the Datadog stand-in), so its build is in them. What is
//! timed in process, the functions' per-event work and the floors it is compared with, runs in
//! `audit-log-kernels` (bench/), built in release in one build with the functions.

use audit_log::store::StoredEvent;
use audit_log::{AuditEvent, Retention};
use audit_log_tests::bench::Function;
use audit_log_tests::faults::{AwsFaults, AwsProxy};
use audit_log_tests::local::{
    Project, Stack, call_api, datadog_entries, datadog_stand_in, drain_events_queue,
};
use audit_log_tests::samples::event_of_size;
use audit_log_tests::{repo_root, sqs_batch, stream_records, unique};
use aws_lambda_events::event::dynamodb::{Event as StreamEvent, EventRecord};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Measures the functions' release binaries as Lambda runs them (see BENCHMARKS.md).
#[derive(clap::Parser, Debug)]
#[command(name = "audit-log-bench")]
struct Args {
    /// Events of 1 KB per batch (the figures in BENCHMARKS.md are of 1,000; a small size only
    /// checks that the command works).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    events: u16,
    /// Measure the functions only: skip the search and the export over 100 times `events`
    /// stored events (for profiling the functions, which those would drown).
    #[arg(long)]
    functions_only: bool,
}

/// `n` events of exactly 1 KB of JSON for a project, dated within the last hour, with ids and
/// names as varied as real ones (`samples`), so stored sizes are not flattered.
fn kilobyte_events(p: &Project, n: usize) -> Vec<String> {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let mut rng = rand::rng();
    (0..n)
        .map(|i| {
            let at = (now - Duration::from_secs(i as u64 % 3600))
                .format(&Rfc3339)
                .unwrap();
            event_of_size(&mut rng, &p.organization_id, &p.project_id, &at, 1024)
        })
        .collect()
}

/// Warm batches per destination over which whole-function CPU is measured.
const ROUNDS: usize = 5;

fn zipped_size(path: &std::path::Path) -> Option<u64> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import io,sys,zipfile; b=io.BytesIO(); z=zipfile.ZipFile(b,'w',zipfile.ZIP_DEFLATED); z.write(sys.argv[1],'bootstrap'); z.close(); print(len(b.getvalue()))",
        ])
        .arg(path)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn stream_event(records: &[EventRecord]) -> String {
    let mut event = StreamEvent::default();
    event.records = records.to_vec();
    serde_json::to_string(&event).unwrap()
}

fn of_project(records: &[EventRecord], p: &Project) -> Vec<EventRecord> {
    records
        .iter()
        .filter(|r| r.event_name == "INSERT")
        .filter(|r| {
            audit_log_stream::event_of(&(*r).into())
                .map(|(e, _)| e.project_id() == p.project_id && e.fields().contains_key("notes"))
                .unwrap_or(false)
        })
        .cloned()
        .collect()
}

#[tokio::main]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    let events = usize::from(args.events);
    let emulator = std::env::var("AWS_ENDPOINT_URL").expect("run through ./scripts/bench");
    // Where the function binaries are (`./scripts/bench` builds them in release).
    let release = std::env::var("BENCH_BINARIES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target/release"));
    for binary in [
        "audit-log-capture",
        "audit-log-stream",
        "audit-log-api",
        "audit-log-kernels",
    ] {
        let path = release.join(binary);
        assert!(
            path.exists(),
            "{} is missing: ./scripts/bench builds it",
            path.display()
        );
    }
    let aws = audit_log_tests::emulator().await;
    let proxy = AwsProxy::start(emulator, AwsFaults::default()).await;
    let stack = Stack::create(&aws, "/hashicorp").await;
    let datadog = datadog_stand_in().await;
    let api = stack.api(Some(datadog.uri()));
    let (to_datadog, to_cloudwatch) = (
        Project {
            organization_id: unique("org"),
            project_id: unique("project"),
        },
        Project {
            organization_id: unique("org"),
            project_id: unique("project"),
        },
    );
    let dd = json!({"provider": "datadog", "name": "dd", "datadog": {"site": "datadoghq.com", "api_key": audit_log_tests::SENTINEL_API_KEY}});
    let cw = json!({"provider": "cloudwatch", "name": "cw", "cloudwatch": {"role_arn": "arn:aws:iam::230000000000:role/hcp-log-streaming", "region": "us-east-1"}});
    assert_eq!(
        call_api(&api, &to_datadog, "PUT", "/streaming", Some(&dd))
            .await
            .0,
        200
    );
    assert_eq!(
        call_api(&api, &to_cloudwatch, "PUT", "/streaming", Some(&cw))
            .await
            .0,
        200
    );
    drain_events_queue(&stack, &stack.capture(), |_| {}).await;

    let through_proxy = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("AWS_ENDPOINT_URL", proxy.url.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    };
    let mut rows: Vec<[String; 6]> = Vec::new();

    // capture: a batch of `events` SQS records of 1 KB, twice (cold, then warm).
    let batches = [
        kilobyte_events(&to_datadog, events),
        kilobyte_events(&to_cloudwatch, events),
    ];
    proxy.reset();
    let capture = Function::start(
        &release.join("audit-log-capture"),
        &through_proxy(&[
            ("EVENTS_TABLE_NAME", &stack.events_table),
            ("CONFIG_TABLE_NAME", &stack.config_table),
            ("RETENTION_DAYS", "400"),
            ("EVENTS_RETRY_QUEUE_URL", stack.queue("EventsRetryQueue")),
        ]),
    )
    .await;
    let calls_during_init = proxy.total();
    let mut capture_times = Vec::new();
    for batch in &batches {
        let event = sqs_batch(
            batch
                .iter()
                .enumerate()
                .map(|(i, b)| (format!("{}-{i}", unique("bench")), b.as_str())),
        );
        let (took, answer) = capture
            .runtime
            .invoke(serde_json::to_string(&event).unwrap())
            .await;
        assert!(
            answer.contains("\"batchItemFailures\":[]"),
            "capture answered {answer}"
        );
        capture_times.push(took);
    }
    rows.push([
        "capture".into(),
        capture.init_figure(),
        format!("{:.1} MB", capture.peak_kib() as f64 / 1024.0),
        format!("{:.0} /s", events as f64 / capture_times[1].as_secs_f64()),
        format!("BatchWriteItem {}", proxy.count("BatchWriteItem") / 2),
        format!("{calls_during_init} calls"),
    ]);

    // stream: `events` records to Datadog, as many to CloudWatch, then as many more to
    // CloudWatch.
    let more = kilobyte_events(&to_cloudwatch, events);
    let records = stream_records(&aws, &stack.dynamodb, &stack.events_table).await;
    let dd_records = of_project(&records, &to_datadog);
    let cw_records = of_project(&records, &to_cloudwatch);
    assert_eq!((dd_records.len(), cw_records.len()), (events, events));
    proxy.reset();
    let stream = Function::start(
        &release.join("audit-log-stream"),
        &through_proxy(&[
            ("CONFIG_TABLE_NAME", &stack.config_table),
            ("EVENTS_TABLE_NAME", &stack.events_table),
            ("EVENTS_STREAM_ARN", &stack.events_stream_arn),
            ("SECRET_NAME_PREFIX", &stack.secret_prefix),
            ("LOG_GROUP_PREFIX", "/hashicorp"),
            ("REPLAY_QUEUE_URL", stack.queue("ReplayQueue")),
            ("LANE_QUEUE_URL", stack.queue("LaneQueue")),
            ("DEFERRED_QUEUE_URL", stack.queue("DeferredQueue")),
            ("DATADOG_ENDPOINT_OVERRIDE", &datadog.uri()),
        ]),
    )
    .await;
    let stream_init_calls = proxy.total();
    let datadog_before = datadog.received_requests().await.unwrap_or_default().len();
    let (dd_took, answer) = stream.runtime.invoke(stream_event(&dd_records)).await;
    assert!(
        answer.contains("\"batchItemFailures\":[]"),
        "stream answered {answer}"
    );
    let datadog_requests =
        datadog.received_requests().await.unwrap_or_default().len() - datadog_before;
    let (cw_took, answer) = stream.runtime.invoke(stream_event(&cw_records)).await;
    assert!(
        answer.contains("\"batchItemFailures\":[]"),
        "stream answered {answer}"
    );
    let (puts, assumes, secrets) = (
        proxy.count("PutLogEvents"),
        proxy.count("AssumeRole"),
        proxy.count("GetSecretValue"),
    );
    // Within the caches' lifetime, the next batch assumes no role and reads no secret again.
    let event = sqs_batch(
        more.iter()
            .enumerate()
            .map(|(i, b)| (format!("{}-{i}", unique("more")), b.as_str())),
    );
    capture
        .runtime
        .invoke(serde_json::to_string(&event).unwrap())
        .await;
    let records = stream_records(&aws, &stack.dynamodb, &stack.events_table).await;
    let newer: Vec<EventRecord> = of_project(&records, &to_cloudwatch)
        .into_iter()
        .filter(|r| !cw_records.iter().any(|c| c.event_id == r.event_id))
        .collect();
    let (warm_took, _) = stream.runtime.invoke(stream_event(&newer)).await;
    let (assumes_again, secrets_again) = (
        proxy.count("AssumeRole") - assumes,
        proxy.count("GetSecretValue") - secrets,
    );
    let puts_again = proxy.count("PutLogEvents") - puts;
    let delivered = datadog_entries(&datadog).await.len();
    rows.push([
        "stream".into(),
        stream.init_figure(),
        format!("{:.1} MB", stream.peak_kib() as f64 / 1024.0),
        format!(
            "Datadog {:.0} /s, CloudWatch {:.0} /s (warm {:.0} /s)",
            events as f64 / dd_took.as_secs_f64(),
            events as f64 / cw_took.as_secs_f64(),
            events as f64 / warm_took.as_secs_f64()
        ),
        format!(
            "Datadog {datadog_requests}; PutLogEvents {puts} (first write finds no stream: +1), then {puts_again}; AssumeRole {assumes} then {assumes_again}; GetSecretValue {secrets} (one per project) then {secrets_again}"
        ),
        format!("{stream_init_calls} calls"),
    ]);

    // Whole functions, warm: CPU of the process (all threads, user and system) over
    // `ROUNDS` more batches to each destination, against the floor of parsing the same Lambda
    // events with serde_json (timed by audit-log-kernels, with each row's events); and the bytes
    // each event is stored in.
    // Per row: its name, the function's CPU, and the Lambda events it was invoked with.
    let mut cpu_rows: Vec<(String, Duration, Vec<String>)> = Vec::new();
    let mut stored_bytes = Vec::new();
    let mut capture_cpu_total = Duration::ZERO;
    let mut sqs_events = Vec::new();
    for p in [&to_datadog, &to_cloudwatch] {
        for _ in 0..ROUNDS {
            let bodies = kilobyte_events(p, events);
            for (i, b) in bodies.iter().enumerate() {
                let event = AuditEvent::from_json(b).unwrap();
                let stored = StoredEvent::new(&format!("{i:036}"), &event, Retention::default());
                stored_bytes.push(stored.unwrap().size());
            }
            let event = sqs_batch(
                bodies
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (format!("{}-{i}", unique("cpu")), b.as_str())),
            );
            sqs_events.push(serde_json::to_string(&event).unwrap());
        }
    }
    for event in &sqs_events {
        let before = capture.cpu();
        let (_, answer) = capture.runtime.invoke(event.clone()).await;
        capture_cpu_total += capture.cpu().saturating_sub(before);
        assert!(
            answer.contains("\"batchItemFailures\":[]"),
            "capture answered {answer}"
        );
    }
    cpu_rows.push(("capture".into(), capture_cpu_total, sqs_events));
    let records = stream_records(&aws, &stack.dynamodb, &stack.events_table).await;
    for (p, name) in [
        (&to_datadog, "stream to Datadog"),
        (&to_cloudwatch, "stream to CloudWatch"),
    ] {
        let seen: std::collections::HashSet<&str> = dd_records
            .iter()
            .chain(&cw_records)
            .chain(&newer)
            .map(|r| r.event_id.as_str())
            .collect();
        let fresh: Vec<EventRecord> = of_project(&records, p)
            .into_iter()
            .filter(|r| !seen.contains(r.event_id.as_str()))
            .collect();
        assert_eq!(
            fresh.len(),
            ROUNDS * events,
            "{name}: records of the CPU rounds"
        );
        let mut used = Duration::ZERO;
        let mut invoked = Vec::new();
        for batch in fresh.chunks(events) {
            let event = stream_event(batch);
            let before = stream.cpu();
            let (_, answer) = stream.runtime.invoke(event.clone()).await;
            used += stream.cpu().saturating_sub(before);
            assert!(
                answer.contains("\"batchItemFailures\":[]"),
                "stream answered {answer}"
            );
            invoked.push(event);
        }
        cpu_rows.push((name.into(), used, invoked));
    }

    // api: init, and one GET /streaming.
    proxy.reset();
    let api_function = Function::start(
        &release.join("audit-log-api"),
        &through_proxy(&[
            ("EVENTS_TABLE_NAME", &stack.events_table),
            ("CONFIG_TABLE_NAME", &stack.config_table),
            ("EVENTS_QUEUE_URL", stack.queue("EventsQueue")),
            ("REPLAY_QUEUE_URL", stack.queue("ReplayQueue")),
            ("LANE_QUEUE_URL", stack.queue("LaneQueue")),
            ("EXPORT_QUEUE_URL", stack.queue("ExportQueue")),
            ("EXPORT_BUCKET_NAME", &stack.export_bucket),
            ("SECRET_NAME_PREFIX", &stack.secret_prefix),
            ("SERVICE_AWS_ACCOUNT_ID", "123456789012"),
        ]),
    )
    .await;
    let api_init_calls = proxy.total();
    let path = format!(
        "/v1/organizations/{}/projects/{}/audit-logs/streaming",
        to_datadog.organization_id, to_datadog.project_id
    );
    let request = audit_log_tests::api_request(
        "GET",
        &path,
        &[],
        &[],
        None,
        Some(&[("organization_id", to_datadog.organization_id.as_str())]),
    );
    let (api_took, answer) = api_function
        .runtime
        .invoke(serde_json::to_string(&request).unwrap())
        .await;
    assert!(
        answer.contains("\"statusCode\":200"),
        "api answered {answer}"
    );
    let search_and_export = if args.functions_only {
        None
    } else {
        let (search, searched) = search(&stack, &api_function, events * 100).await;
        let export = export(&stack, &api_function, &searched, events * 100).await;
        Some((search, export))
    };
    rows.push([
        "api".into(),
        api_function.init_figure(),
        format!("{:.1} MB", api_function.peak_kib() as f64 / 1024.0),
        format!("GET /streaming in {:.1} ms", api_took.as_secs_f64() * 1e3),
        "-".into(),
        format!("{api_init_calls} calls"),
    ]);

    // CPU per event against the floor of parsing the same JSON (and compressing it, for
    // Datadog), and the whole-function rows' floors.
    let kernels = Kernels::run(&release.join("audit-log-kernels"), &batches[0], &cpu_rows);

    println!(
        "\n{events} events of 1 KB per batch; AWS calls go to the local emulator through a counting proxy, Datadog to a local stand-in.\n"
    );
    println!(
        "| function | init, wall (CPU) | peak memory | events per second (handler, with its calls) | calls per {events} events | calls during init |"
    );
    println!("|---|---|---|---|---|---|");
    for row in &rows {
        println!("| {} |", row.join(" | "));
    }
    println!("\n| per-event CPU (one core) | time per event | floor | ratio |");
    println!("|---|---|---|---|");
    let per = |d: Duration| d.as_secs_f64() * 1e6 / events as f64;
    for (name, work, floor) in [
        (
            "capture: parse, validate, build the item",
            kernels.capture,
            kernels.parse_floor,
        ),
        (
            "stream to Datadog: decode, encode, batch, compress",
            kernels.to_datadog,
            kernels.compress_floor,
        ),
        (
            "stream to CloudWatch: decode, encode, batch",
            kernels.to_cloudwatch,
            kernels.parse_floor,
        ),
    ] {
        let (work, floor) = (Duration::from_nanos(work), Duration::from_nanos(floor));
        println!(
            "| {name} | {:.2} µs | {:.2} µs | {:.2}x |",
            per(work),
            per(floor),
            work.as_secs_f64() / floor.as_secs_f64()
        );
    }
    println!("\n| Datadog body, compressed with | CPU per event | bytes per event |");
    println!("|---|---|---|");
    for encoding in &kernels.encodings {
        println!(
            "| {}{} | {:.2} µs | {:.0} |",
            encoding.name,
            if encoding.used { " (used)" } else { "" },
            per(Duration::from_nanos(encoding.nanos)),
            encoding.bytes as f64 / events as f64
        );
    }
    let counted = ROUNDS * events * 2;
    println!(
        "\n| whole function, warm ({ROUNDS} batches of {events} per destination) | CPU per event | floor: serde_json parse of the Lambda event | ratio |"
    );
    println!("|---|---|---|---|");
    for (name, used, _) in &cpu_rows {
        let floor = kernels.floor(name);
        let n = if name == "capture" {
            counted
        } else {
            counted / 2
        };
        println!(
            "| {name} | {:.1} µs | {:.1} µs | {:.2}x |",
            used.as_secs_f64() * 1e6 / n as f64,
            floor.as_secs_f64() * 1e6 / n as f64,
            used.as_secs_f64() / floor.as_secs_f64()
        );
    }
    stored_bytes.sort_unstable();
    let mean = stored_bytes.iter().sum::<usize>() as f64 / stored_bytes.len() as f64;
    let largest = stored_bytes.last().copied().unwrap_or(0);
    let write_units = stored_bytes
        .iter()
        .map(|b| b.div_ceil(1024))
        .max()
        .unwrap_or(0);
    println!(
        "\nStored: {} events of 1 KB as items of {mean:.0} bytes on average, {largest} at most ({write_units} write unit each).",
        stored_bytes.len()
    );
    println!("\n| arm64 bootstrap | size | zipped |");
    println!("|---|---|---|");
    for f in ["audit-log-capture", "audit-log-stream", "audit-log-api"] {
        let path = repo_root().join("target/lambda").join(f).join("bootstrap");
        match std::fs::metadata(&path) {
            Ok(m) => println!(
                "| {f} | {:.2} MB | {:.2} MB |",
                m.len() as f64 / 1e6,
                zipped_size(&path).unwrap_or(0) as f64 / 1e6
            ),
            Err(_) => println!("| {f} | not built | |"),
        }
    }
    if let Some((search, export)) = search_and_export {
        search.print();
        export.print();
    }
    println!("\nDatadog stand-in received {delivered} logs.");
}

/// What `audit-log-kernels` (beside the functions' binaries, from the same build) timed, in
/// nanoseconds: the figures bench/src/main.rs writes.
#[derive(serde::Deserialize)]
struct Kernels {
    capture: u64,
    parse_floor: u64,
    to_datadog: u64,
    compress_floor: u64,
    to_cloudwatch: u64,
    encodings: Vec<EncodingFigure>,
    floors: Vec<FloorFigure>,
}

#[derive(serde::Deserialize)]
struct EncodingFigure {
    name: String,
    used: bool,
    nanos: u64,
    bytes: u64,
}

#[derive(serde::Deserialize)]
struct FloorFigure {
    name: String,
    nanos: u64,
}

impl Kernels {
    /// Times the per-event work over `bodies`, and the floor of each whole-function row over
    /// the Lambda events it was invoked with (handed over on its standard input).
    fn run(
        binary: &std::path::Path,
        bodies: &[String],
        rows: &[(String, Duration, Vec<String>)],
    ) -> Kernels {
        use std::io::Write;
        let floors: Vec<Value> = rows
            .iter()
            .map(|(name, _, events)| json!({"name": name, "events": events}))
            .collect();
        let input = serde_json::to_vec(&json!({"bodies": bodies, "floors": floors})).unwrap();
        let mut child = std::process::Command::new(binary)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        // It reads all of its input before it writes anything.
        child
            .stdin
            .take()
            .expect("its input")
            .write_all(&input)
            .expect("hand the kernels their input");
        let out = child.wait_with_output().expect("the kernels' answer");
        assert!(out.status.success(), "audit-log-kernels failed");
        serde_json::from_slice(&out.stdout).expect("the kernels' figures")
    }

    /// The floor of a whole-function row.
    fn floor(&self, row: &str) -> Duration {
        let floor = self.floors.iter().find(|f| f.name == row);
        Duration::from_nanos(floor.unwrap_or_else(|| panic!("no floor for {row}")).nanos)
    }
}

/// What a filtered search over one project's stored events cost.
struct Search {
    stored: usize,
    matching: usize,
    /// Per page: wall time (with the emulator) and the api function's CPU.
    pages: Vec<(Duration, Duration)>,
    peak_kib: u64,
}

impl Search {
    fn print(&self) {
        let n = self.pages.len().max(1) as f64;
        let wall: Vec<f64> = self
            .pages
            .iter()
            .map(|(w, _)| w.as_secs_f64() * 1e3)
            .collect();
        let cpu: f64 = self
            .pages
            .iter()
            .map(|(_, c)| c.as_secs_f64() * 1e3)
            .sum::<f64>()
            / n;
        println!(
            "\nSearch: `status=FAILED` over {} stored events of one project, {} matching ({:.1}%): {} pages to the end; per page {:.0} ms on average, {:.0} ms at most with the emulator, {:.1} ms of the api function's CPU on average; api peak memory {:.1} MB.",
            self.stored,
            self.matching,
            self.matching as f64 * 100.0 / self.stored.max(1) as f64,
            self.pages.len(),
            wall.iter().sum::<f64>() / n,
            wall.iter().cloned().fold(0.0, f64::max),
            cpu,
            self.peak_kib as f64 / 1024.0,
        );
    }
}

/// Stores `n` events of 1 KB in a new project, one in a hundred FAILED, then pages through
/// `status=FAILED` with the api function to the end.
async fn search(stack: &Stack, api: &Function, n: usize) -> (Search, Project) {
    use audit_log::store::EventWriter;
    let p = Project {
        organization_id: unique("org"),
        project_id: unique("searched"),
    };
    let table = audit_log::store::EventTable::new(stack.dynamodb.clone(), &stack.events_table);
    let mut matching = 0;
    for (c, chunk) in kilobyte_events(&p, n).chunks(1_000).enumerate() {
        let stored: Vec<StoredEvent> = chunk
            .iter()
            .enumerate()
            .map(|(i, body)| {
                let mut event: Value = serde_json::from_str(body).unwrap();
                let failed = (c * 1_000 + i) % 100 == 0;
                event["status"] = json!(if failed { "FAILED" } else { "OK" });
                matching += usize::from(failed);
                let event = AuditEvent::from_value(event).unwrap();
                StoredEvent::new(&format!("s-{c}-{i}"), &event, Retention::default()).unwrap()
            })
            .collect();
        let failures = table
            .put_events(
                stored,
                tokio::time::Instant::now() + Duration::from_secs(600),
            )
            .await;
        assert!(failures.is_empty(), "{failures:?}");
    }
    let path = format!(
        "/v1/organizations/{}/projects/{}/audit-logs",
        p.organization_id, p.project_id
    );
    let mut found = 0;
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("status", "FAILED"), ("limit", "100")];
        if let Some(c) = &cursor {
            query.push(("cursor", c));
        }
        let request = audit_log_tests::api_request(
            "GET",
            &path,
            &query,
            &[],
            None,
            Some(&[("organization_id", p.organization_id.as_str())]),
        );
        let cpu = api.cpu();
        let (took, answer) = api
            .runtime
            .invoke(serde_json::to_string(&request).unwrap())
            .await;
        pages.push((took, api.cpu() - cpu));
        let response: Value = serde_json::from_str(answer.trim_start_matches("response: "))
            .unwrap_or_else(|_| panic!("the api answered {answer}"));
        assert_eq!(response["statusCode"], 200, "{answer}");
        let page: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
        found += page["events"].as_array().unwrap().len();
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(found, matching, "the search finds every match once");
    let search = Search {
        stored: n,
        matching,
        pages,
        peak_kib: api.peak_kib(),
    };
    (search, p)
}

/// What exporting one project's stored events cost.
struct Export {
    events: u64,
    bytes: u64,
    /// Per step: wall time (with the emulator) and the api function's CPU.
    steps: Vec<(Duration, Duration)>,
    wall: Duration,
    peak_kib: u64,
}

impl Export {
    fn print(&self) {
        let cpu: Duration = self.steps.iter().map(|(_, c)| *c).sum();
        let longest = self.steps.iter().map(|(w, _)| *w).max().unwrap_or_default();
        println!(
            "\nExport: all {} stored events of the searched project as NDJSON, {} steps, {:.1} s from POST to completed with the emulator (longest step {:.1} s), {:.1} s of the api function's CPU ({:.1} µs per event), file {:.1} MB of gzip ({:.0} bytes per event), api peak memory {:.1} MB.",
            self.events,
            self.steps.len(),
            self.wall.as_secs_f64(),
            longest.as_secs_f64(),
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / self.events.max(1) as f64,
            self.bytes as f64 / 1e6,
            self.bytes as f64 / self.events.max(1) as f64,
            self.peak_kib as f64 / 1024.0,
        );
    }
}

/// Exports every stored event of `p` through the api function: the POST as API Gateway sends
/// it, then each step as the export queue's mapping hands it over, with the function's timeout
/// from the template; the file is downloaded through its link and counted.
async fn export(stack: &Stack, api: &Function, p: &Project, n: usize) -> Export {
    let timeout = audit_log_tests::resource("ApiFunction")["Timeout"]
        .as_u64()
        .expect("the api function's timeout");
    api.runtime.set_timeout(Duration::from_secs(timeout));
    let base = format!(
        "/v1/organizations/{}/projects/{}/audit-logs/exports",
        p.organization_id, p.project_id
    );
    let claims = [("organization_id", p.organization_id.as_str())];
    let call = |method: &'static str, path: String, body: Option<&'static str>| async move {
        let request =
            audit_log_tests::api_request(method, &path, &[], &[], body, Some(&claims[..]));
        let (_, answer) = api
            .runtime
            .invoke(serde_json::to_string(&request).unwrap())
            .await;
        let response: Value = serde_json::from_str(answer.trim_start_matches("response: "))
            .unwrap_or_else(|_| panic!("the api answered {answer}"));
        let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
        (response["statusCode"].as_u64().unwrap(), body)
    };
    let started = Instant::now();
    let (status, export) = call("POST", base.clone(), Some("{}")).await;
    assert_eq!(status, 202, "{export}");
    let id = export["id"].as_str().unwrap().to_owned();
    let queue = stack.queue("ExportQueue");
    let mut steps = Vec::new();
    loop {
        let messages = stack
            .sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(1)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive")
            .messages
            .unwrap_or_default();
        let Some(message) = messages.into_iter().next() else {
            break;
        };
        let event = audit_log_tests::sqs_batch([(
            message.message_id.clone().unwrap_or_default(),
            message.body.as_deref().unwrap_or_default(),
        )]);
        let cpu = api.cpu();
        let (took, answer) = api
            .runtime
            .invoke(serde_json::to_string(&event).unwrap())
            .await;
        steps.push((took, api.cpu() - cpu));
        assert!(
            answer.contains("\"batchItemFailures\":[]"),
            "the export step answered {answer}"
        );
        stack
            .sqs
            .delete_message()
            .queue_url(queue)
            .receipt_handle(message.receipt_handle.unwrap_or_default())
            .send()
            .await
            .expect("delete the step");
    }
    let wall = started.elapsed();
    let (_, shown) = call("GET", format!("{base}/{id}"), None).await;
    assert_eq!(shown["state"], "completed", "{shown}");
    let file = reqwest::get(shown["download_url"].as_str().unwrap())
        .await
        .expect("the link answers")
        .bytes()
        .await
        .unwrap();
    let mut lines = 0;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(&file[..]), &mut text)
        .expect("a gzip file");
    for line in text.lines() {
        serde_json::from_str::<Value>(line).expect("an event per line");
        lines += 1;
    }
    assert_eq!(lines, n, "the export holds every stored event once");
    Export {
        events: shown["events"].as_u64().unwrap(),
        bytes: file.len() as u64,
        steps,
        wall,
        peak_kib: api.peak_kib(),
    }
}
