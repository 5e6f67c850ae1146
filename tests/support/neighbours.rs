//! The noisy-neighbour run (issue 14): two organizations whose events share one stream shard,
//! A's Datadog down (503) and then hanging (no answer) for longer than Lambda's retry window,
//! B's healthy, against a first phase where both are healthy. Events flow through the local
//! pipeline as in AWS: producers, capture, the stream mapping and the lanes queue's mapping run
//! side by side, each as its own event source. Time is compressed as in the fault runs.

use crate::local::{
    Project, Stack, StreamLimits, StreamRun, call_api, compressed_lanes, drain_events_queue,
    drain_stream_queues, drain_stream_with, lanes_settled, listed_failures,
};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How long each phase lasts, and the traffic.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Both destinations healthy: the baseline.
    pub baseline: Duration,
    /// A's intake answers 503.
    pub down: Duration,
    /// A's intake takes requests and never answers.
    pub hanging: Duration,
    /// After A is back: how long A may take to catch up by itself.
    pub recovery_limit: Duration,
    /// Events per second of each organization.
    pub rate: usize,
    pub time_scale: u32,
}

impl Plan {
    /// The outage (down, then hanging) outlasts Lambda's retries of a stream batch: ten
    /// retries of the compressed 6-second invocation.
    pub fn standard() -> Self {
        Self {
            baseline: Duration::from_secs(20),
            down: Duration::from_secs(40),
            hanging: Duration::from_secs(40),
            recovery_limit: Duration::from_secs(60),
            rate: 10,
            time_scale: 10,
        }
    }
}

/// Latency figures of a set of deliveries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub n: usize,
    pub p50: Duration,
    pub p90: Duration,
    pub max: Duration,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        let at = |q: f64| {
            samples
                .get(((samples.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        Self {
            n: samples.len(),
            p50: at(0.5),
            p90: at(0.9),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub plan: Option<Plan>,
    /// B's latency, from the producer's send to the intake, in the baseline phase.
    pub b_baseline: Latency,
    /// The same while A is down or hanging.
    pub b_during: Latency,
    pub a_sent: usize,
    /// A's events at its intake at the end, distinct.
    pub a_delivered: usize,
    /// A's events arrived oldest first (by the first arrival of each).
    pub a_in_order: bool,
    /// Requests to A's intake while it was down or hanging.
    pub a_requests_during: usize,
    /// From A's intake answering again to A's last owed event arriving.
    pub a_caught_up_in: Option<Duration>,
    pub b_sent: usize,
    pub b_delivered: usize,
    pub a_failures_listed: usize,
    pub b_failures_listed: usize,
    /// Stream batches Lambda retried, and sent to the on-failure queue.
    pub stream: StreamRun,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Up,
    Down,
    Hanging,
}

/// One Datadog intake for both organizations, telling them apart by API key.
struct Intake {
    a_key: String,
    a_mode: Mutex<Mode>,
    /// (arrival, key, event `n` and timestamp) of every log taken.
    taken: Mutex<Vec<(Instant, String, i64, String)>>,
    a_requests: AtomicUsize,
}

struct Responder(Arc<Intake>);

impl wiremock::Respond for Responder {
    fn respond(&self, request: &wiremock::Request) -> wiremock::ResponseTemplate {
        use wiremock::ResponseTemplate;
        let intake = &self.0;
        let key = request
            .headers
            .get("DD-API-KEY")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if key == intake.a_key {
            intake.a_requests.fetch_add(1, Ordering::Relaxed);
            match *intake.a_mode.lock().expect("mode") {
                Mode::Down => return ResponseTemplate::new(503),
                // Longer than any client waits.
                Mode::Hanging => {
                    return ResponseTemplate::new(202).set_delay(Duration::from_secs(600));
                }
                Mode::Up => {}
            }
        }
        // As the intake does, a body it cannot read is refused.
        let Some(entries) = crate::faults::try_log_entries(request) else {
            return ResponseTemplate::new(400);
        };
        let now = Instant::now();
        let mut taken = intake.taken.lock().expect("taken");
        for entry in entries {
            let event = crate::local::event_of_datadog_entry(&entry);
            taken.push((
                now,
                key.clone(),
                event["n"].as_i64().unwrap_or(-1),
                event["timestamp"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        ResponseTemplate::new(202).set_body_json(json!({}))
    }
}

fn event(project: &Project, n: usize) -> Value {
    let mut v: Value =
        serde_json::from_str(audit_log::fixtures::SEED_EVENTS[n % 5].1).expect("seed");
    v["organization_id"] = json!(project.organization_id);
    v["project_id"] = json!(project.project_id);
    // Milliseconds: the order of events sent in one second is their order in time.
    let now = OffsetDateTime::now_utc();
    let now = now
        .replace_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(now);
    v["timestamp"] = json!(now.format(&Rfc3339).expect("formats"));
    v["n"] = json!(n);
    v
}

/// Runs the plan and measures it.
pub async fn run(aws: &aws_config::SdkConfig, plan: Plan) -> Report {
    let mut report = Report {
        plan: Some(plan),
        ..Report::default()
    };
    let stack = Stack::create(aws, &format!("/{}", crate::unique("neighbours"))).await;
    let (a, b) = (
        Project {
            organization_id: crate::unique("org-a"),
            project_id: crate::unique("registry-a"),
        },
        Project {
            organization_id: crate::unique("org-b"),
            project_id: crate::unique("registry-b"),
        },
    );
    let (a_key, b_key) = (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_owned(),
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".to_owned(),
    );
    let intake = Arc::new(Intake {
        a_key: a_key.clone(),
        a_mode: Mutex::new(Mode::Up),
        taken: Mutex::default(),
        a_requests: AtomicUsize::new(0),
    });
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::path("/api/v1/validate"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&server)
        .await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/api/v2/logs"))
        .respond_with(Responder(intake.clone()))
        .mount(&server)
        .await;
    let api = stack.api(Some(server.uri()));
    for (project, key) in [(&a, &a_key), (&b, &b_key)] {
        let body = json!({"provider": "datadog", "name": "neighbour",
                          "datadog": {"site": "datadoghq.com", "api_key": key}});
        let (status, saved) = call_api(&api, project, "PUT", "/streaming", Some(&body)).await;
        if status != 200 {
            report
                .problems
                .push(format!("saving a destination: {status} {saved}"));
            return report;
        }
    }
    let stream = stack
        .stream(Some(server.uri()))
        .with_datadog(
            audit_log::destination::datadog::DatadogClient::with_timeout(
                Some(server.uri()),
                audit_log::destination::datadog::REQUEST_TIMEOUT / plan.time_scale,
            ),
        )
        .with_lanes(compressed_lanes(plan.time_scale));
    let template = StreamLimits::from_template();
    let limits = StreamLimits {
        timeout: template.timeout / plan.time_scale,
        ..template
    };

    // The producers, capture, the stream mapping and the lanes mapping, side by side.
    let sent_at: Mutex<HashMap<(String, i64), Instant>> = Mutex::default();
    let back_at: Mutex<Option<Instant>> = Mutex::default();
    let producing = AtomicBool::new(true);
    let started = Instant::now();
    let outage_starts = plan.baseline;
    let outage_ends = plan.baseline + plan.down + plan.hanging;
    let capture = stack.capture();
    let produce = async {
        let tick = Duration::from_millis(200);
        let per_tick = (plan.rate / 5).max(1);
        let mut n = 0;
        let mut a_requests_at_start = 0;
        while started.elapsed() < outage_ends + tick {
            let elapsed = started.elapsed();
            let mode = if elapsed < outage_starts {
                Mode::Up
            } else if elapsed < plan.baseline + plan.down {
                Mode::Down
            } else if elapsed < outage_ends {
                Mode::Hanging
            } else {
                Mode::Up
            };
            {
                let mut current = intake.a_mode.lock().expect("mode");
                if *current == Mode::Up && mode == Mode::Down {
                    a_requests_at_start = intake.a_requests.load(Ordering::Relaxed);
                }
                *current = mode;
            }
            if mode == Mode::Up && elapsed >= outage_ends {
                *back_at.lock().expect("back") = Some(Instant::now());
                break;
            }
            let mut bodies = Vec::new();
            for _ in 0..per_tick {
                for project in [&a, &b] {
                    n += 1;
                    bodies.push(event(project, n).to_string());
                    sent_at
                        .lock()
                        .expect("sent")
                        .insert((project.organization_id.clone(), n as i64), Instant::now());
                }
            }
            stack.send(&bodies).await;
            drain_events_queue(&stack, &capture, |_| {}).await;
            tokio::time::sleep(tick.saturating_sub(started.elapsed() - elapsed)).await;
        }
        *intake.a_mode.lock().expect("mode") = Mode::Up;
        producing.store(false, Ordering::Relaxed);
        intake.a_requests.load(Ordering::Relaxed) - a_requests_at_start
    };
    let stream_run = Mutex::new(StreamRun::default());
    let streaming = async {
        let mut after = HashMap::new();
        loop {
            let done = !producing.load(Ordering::Relaxed);
            let mut run = StreamRun::default();
            after =
                drain_stream_with(&stack, &stream, &after, &mut run, &limits, None, |_| {}).await;
            {
                let mut total = stream_run.lock().expect("run");
                total.invocations += run.invocations;
                total.records += run.records;
                total.retries += run.retries;
                total.sent_to_failure_queue += run.sent_to_failure_queue;
            }
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let lanes = async {
        loop {
            drain_stream_queues(&stack, &stream).await;
            if !producing.load(Ordering::Relaxed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (a_requests_during, (), ()) = tokio::join!(produce, streaming, lanes);
    report.a_requests_during = a_requests_during;
    let back_at = back_at
        .into_inner()
        .expect("back")
        .unwrap_or_else(Instant::now);
    // A is back: its lane catches up by itself (nobody calls anything).
    let settle_until = Instant::now() + plan.recovery_limit;
    while Instant::now() < settle_until && !lanes_settled(&stack).await {
        drain_stream_queues(&stack, &stream).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report.stream = *stream_run.lock().expect("run");

    // What arrived.
    let sent_at = sent_at.into_inner().expect("sent");
    let taken = intake.taken.lock().expect("taken").clone();
    let mut first: HashMap<(String, i64), (Instant, String)> = HashMap::new();
    let mut a_order = Vec::new();
    for (at, key, n, timestamp) in &taken {
        let org = if *key == a_key {
            &a.organization_id
        } else {
            &b.organization_id
        };
        if first.contains_key(&(org.clone(), *n)) {
            continue;
        }
        first.insert((org.clone(), *n), (*at, timestamp.clone()));
        if *key == a_key {
            a_order.push(timestamp.clone());
        }
    }
    let parsed: Vec<Option<OffsetDateTime>> = a_order
        .iter()
        .map(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .collect();
    report.a_in_order =
        parsed.iter().all(Option::is_some) && parsed.windows(2).all(|w| w[0] <= w[1]);
    let outage = (started + outage_starts, started + outage_ends);
    let (mut baseline, mut during) = (Vec::new(), Vec::new());
    for ((org, n), sent) in &sent_at {
        let arrived = first.get(&(org.clone(), *n));
        if *org == a.organization_id {
            report.a_sent += 1;
            if arrived.is_some() {
                report.a_delivered += 1;
            }
            continue;
        }
        report.b_sent += 1;
        let Some((at, _)) = arrived else { continue };
        report.b_delivered += 1;
        let latency = at.saturating_duration_since(*sent);
        if *sent < outage.0 {
            baseline.push(latency);
        } else if *sent < outage.1 {
            during.push(latency);
        }
    }
    report.b_baseline = Latency::of(baseline);
    report.b_during = Latency::of(during);
    report.a_caught_up_in = taken
        .iter()
        .filter(|(_, key, _, _)| *key == a_key)
        .map(|(at, _, _, _)| *at)
        .max()
        .filter(|_| report.a_delivered == report.a_sent)
        .map(|last| last.saturating_duration_since(back_at));
    for (listed, project) in [
        (&mut report.a_failures_listed, &a),
        (&mut report.b_failures_listed, &b),
    ] {
        match listed_failures(&api, project, 100).await {
            Ok(failures) => *listed = failures.len(),
            Err(e) => report.problems.push(e),
        }
    }

    if report.a_delivered != report.a_sent {
        report.problems.push(format!(
            "{} of A's {} events arrived",
            report.a_delivered, report.a_sent
        ));
    }
    if report.b_delivered != report.b_sent {
        report.problems.push(format!(
            "{} of B's {} events arrived",
            report.b_delivered, report.b_sent
        ));
    }
    if !report.a_in_order {
        report
            .problems
            .push("A's events did not arrive oldest first".into());
    }
    if report.a_failures_listed + report.b_failures_listed > 0 {
        report.problems.push(format!(
            "failures listed: A {}, B {}",
            report.a_failures_listed, report.b_failures_listed
        ));
    }
    report
}

impl Report {
    /// The probe interval's cap in this run's time.
    pub fn max_backoff(&self) -> Duration {
        compressed_lanes(self.plan.map_or(10, |p| p.time_scale)).max_backoff
    }

    /// About one request per probe interval while A was down or hanging (the interval doubles
    /// up to its cap, so there are at least this many intervals).
    pub fn probe_intervals(&self) -> usize {
        let plan = self.plan.unwrap_or_else(Plan::standard);
        ((plan.down + plan.hanging).as_secs_f64() / self.max_backoff().as_secs_f64()).ceil()
            as usize
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
        for (phase, l) in [
            ("B, both healthy", &self.b_baseline),
            ("B, A down then hanging", &self.b_during),
        ] {
            writeln!(
                f,
                "{phase:<24} {:>5} events  p50 {:>8}  p90 {:>8}  max {:>8}",
                l.n,
                ms(l.p50),
                ms(l.p90),
                ms(l.max)
            )?;
        }
        writeln!(
            f,
            "requests to A while down or hanging: {} ({} probe intervals of at most {} s)",
            self.a_requests_during,
            self.probe_intervals(),
            self.max_backoff().as_secs()
        )?;
        writeln!(
            f,
            "A: {} of {} events delivered after recovery, oldest first: {}, caught up in {}",
            self.a_delivered,
            self.a_sent,
            self.a_in_order,
            self.a_caught_up_in.map_or("never".into(), ms)
        )?;
        writeln!(
            f,
            "failures listed: A {}, B {}; stream batches retried {}, sent to the on-failure queue {}",
            self.a_failures_listed,
            self.b_failures_listed,
            self.stream.retries,
            self.stream.sent_to_failure_queue
        )?;
        for p in &self.problems {
            writeln!(f, "PROBLEM: {p}")?;
        }
        Ok(())
    }
}
