//! A whole run, as `./scripts/local` makes it: events sent, captured, delivered, faults played,
//! and the report.

use super::*;

/// What a run does.
#[derive(Debug, Clone)]
pub struct Options {
    /// Generated events, on top of the seed's examples.
    pub events: usize,
    /// Bodies capture must refuse.
    pub invalid: usize,
    /// Deliver to a local Datadog stand-in instead of the emulator's CloudWatch Logs.
    pub datadog: bool,
    pub seed: u64,
    pub operator: Operator,
    /// Print progress and the summary.
    pub verbose: bool,
    /// Faults to inject on the way, or none.
    pub faults: Option<FaultPlan>,
}

/// The faults a run injects. Lambda's timeouts, Datadog's request timeout and the outage run
/// `time_scale` times faster than in AWS, so a run stays short and keeps their proportions.
#[derive(Debug, Clone, Copy)]
pub struct FaultPlan {
    pub seed: u64,
    /// Share of capture and stream invocations that die before answering (half of them after
    /// their work, half part-way); Lambda gives their batch to a fresh instance.
    pub kills: f64,
    pub aws: AwsFaults,
    pub datadog: DatadogFaults,
    pub time_scale: u32,
    /// Stream batches as live traffic makes them: the mapping's one-second window fills with
    /// this many events (the template's `BatchSize` is the most a backlog gets).
    pub stream_batch: usize,
}

impl FaultPlan {
    /// The reliability suite's faults: every kind at once, and a 10-minute outage of the
    /// destination from its first delivery.
    pub fn standard(seed: u64) -> Self {
        let time_scale = 10;
        let outage = Duration::from_secs(600) / time_scale;
        Self {
            seed,
            kills: 0.05,
            aws: AwsFaults {
                dynamodb_throttling: 0.1,
                dynamodb_unprocessed: 0.2,
                logs_throttling: 0.1,
                // A rejection is of one event, for good: listed as a failure, never retried. It
                // has its own tests; here every event must arrive by itself.
                logs_rejected: 0.0,
                logs_outage: Some(outage),
                seed,
            },
            datadog: DatadogFaults {
                failing: 0.1,
                too_late: audit_log::destination::datadog::REQUEST_TIMEOUT * 2 / time_scale,
                outage: Some(outage),
                seed,
            },
            time_scale,
            stream_batch: 100,
        }
    }
}

/// How long each part of a run took.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    /// Sending every message and capturing it.
    pub capture: Duration,
    /// The stream delivering the stored backlog, retries and the on-failure queue included.
    pub delivery: Duration,
    /// The lanes catching up after the backlog was handed to them (outages included).
    pub recovery: Duration,
}

/// What happened, and whether every promise held.
#[derive(Debug, Default)]
pub struct Report {
    pub provider: &'static str,
    pub sent_valid: usize,
    pub sent_invalid: usize,
    pub stored: usize,
    /// Items whose event is the same as another item's.
    pub stored_twice: usize,
    pub rejected: usize,
    pub delivered: usize,
    /// Stored events missing at their destination.
    pub undelivered: usize,
    /// Events at a destination more often than they were stored.
    pub delivered_twice: usize,
    pub per_project: Vec<(Project, usize, usize)>,
    pub where_delivered: String,
    pub sample: Option<String>,
    pub capture: CaptureRun,
    pub stream: StreamRun,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, usize>,
    /// Events listed by `GET /streaming/failures` once the lanes caught up.
    pub listed_failures: usize,
    /// Events still listed as failed at the end.
    pub timings: Timings,
    pub problems: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Valid events never stored, and stored events never delivered.
    pub fn lost(&self) -> usize {
        let distinct = self.stored - self.stored_twice;
        self.sent_valid.saturating_sub(distinct) + self.undelivered
    }

    pub fn faults_injected(&self) -> usize {
        self.faults.values().sum()
    }

    /// Valid events from the first message sent to the last delivery, per second.
    pub fn events_per_second(&self) -> f64 {
        let t = &self.timings;
        self.sent_valid as f64 / (t.capture + t.delivery + t.recovery).as_secs_f64()
    }

    /// From the whole backlog stored to the last event delivered.
    pub fn drain(&self) -> Duration {
        self.timings.delivery + self.timings.recovery
    }
}

/// Messages sent before capture takes its turn.
const SEND_SLICE: usize = 100;

/// The customer account a local organization's role lives in.
fn customer_account(index: usize) -> String {
    format!("{:012}", 210_000_000_000u64 + index as u64)
}

fn role_arn(index: usize) -> String {
    format!(
        "arn:aws:iam::{}:role/hcp-log-streaming",
        customer_account(index)
    )
}

/// The organization's (seed-compatible) projects: the seed's own, and two per generated one.
fn projects(dice: &mut Dice) -> Vec<Project> {
    let mut out = vec![Project {
        organization_id: "77f447d4-def0-46f2-bf09-6850d36745ed".into(),
        project_id: "a98c3c31-5760-4db1-b62b-0988080a66ad".into(),
    }];
    for _ in 0..2 {
        let organization_id = format!("org-{}", dice.ulid().to_lowercase());
        for _ in 0..2 {
            out.push(Project {
                organization_id: organization_id.clone(),
                project_id: format!("project-{}", dice.ulid().to_lowercase()),
            });
        }
    }
    out
}

/// A request to the api function as a member of the project's organization.
pub async fn call_api(
    api: &Api,
    project: &Project,
    method: &str,
    suffix: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let (suffix, query) = suffix.split_once('?').unwrap_or((suffix, ""));
    let path = format!(
        "/v1/organizations/{}/projects/{}/audit-logs{suffix}",
        project.organization_id, project.project_id
    );
    let text = body.map(Value::to_string);
    let claims = [
        (api.organization_claim(), project.organization_id.as_str()),
        ("sub", "local-runner"),
        ("email", "runner@localhost"),
    ];
    let request =
        crate::api_request_with_query(method, &path, query, &[], text.as_deref(), Some(&claims));
    let response = api.respond(&request).await;
    let body = match response.body {
        Some(aws_lambda_events::encodings::Body::Text(t)) => {
            serde_json::from_str(&t).unwrap_or(Value::Null)
        }
        _ => Value::Null,
    };
    crate::watch_external_ids(&body);
    (response.status_code as u16, body)
}

/// Every failure of a project `GET /streaming/failures` lists, `page` at a time.
pub async fn listed_failures(
    api: &Api,
    project: &Project,
    page: usize,
) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let suffix = match &cursor {
            Some(c) => format!("/streaming/failures?limit={page}&cursor={c}"),
            None => format!("/streaming/failures?limit={page}"),
        };
        let (status, page) = call_api(api, project, "GET", &suffix, None).await;
        if status != 200 {
            return Err(format!("listing failures answered {status}: {page}"));
        }
        let Some(failures) = page["failures"].as_array() else {
            return Err(format!(
                "listing failures answered no failures array: {page}"
            ));
        };
        out.extend(failures.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(out),
        }
    }
}

/// Runs the whole service over generated events, with the faults `options` asks for, and
/// checks every promise.
pub async fn run(
    aws: &aws_config::SdkConfig,
    options: &Options,
) -> (Report, Stack, Option<DatadogIntake>) {
    let started = std::time::Instant::now();
    let say = |line: String| {
        if options.verbose {
            eprintln!("[{:6.1} s] {line}", started.elapsed().as_secs_f64());
        }
    };
    let plan = options.faults;
    let mut stack = Stack::create_for(aws, options.operator.clone()).await;
    // The functions reach AWS through a proxy that injects faults; the runner's own checks
    // read the emulator directly.
    let proxy = match plan {
        Some(plan) => {
            let upstream = std::env::var("AWS_ENDPOINT_URL").expect("the emulator's address");
            let proxy = AwsProxy::start(upstream, plan.aws).await;
            // Set when loading: an endpoint set later on the built configuration loses to the
            // AWS_ENDPOINT_URL the emulator's configuration came from.
            stack.functions_through(aws_config::from_env().endpoint_url(&proxy.url).load().await);
            Some(proxy)
        }
        None => None,
    };
    // The proxy's faults are off while the customer sets up and while the runner checks.
    let aws_faults = |on: bool| {
        if let Some(proxy) = &proxy {
            proxy.enable(on);
        }
    };
    let datadog = if options.datadog {
        Some(DatadogIntake::start(plan.map(|p| p.datadog).unwrap_or_default()).await)
    } else {
        None
    };
    let datadog_url = datadog.as_ref().map(|d| d.uri());
    let new_stream = || {
        let stream = stack.stream(datadog_url.clone());
        match plan {
            Some(plan) => stream
                .with_datadog(
                    audit_log::destination::datadog::DatadogClient::with_timeout(
                        datadog_url.clone(),
                        audit_log::destination::datadog::REQUEST_TIMEOUT / plan.time_scale,
                    ),
                )
                .with_lanes(compressed_lanes(plan.time_scale)),
            None => stream,
        }
    };
    let kills = plan.map(|p| Kills::new(p.kills, p.seed));
    let faulty = kills.as_ref().map(|kills| Faulty::new(kills, &new_stream));
    let limits = {
        let template = StreamLimits::from_template();
        match plan {
            Some(plan) => StreamLimits {
                timeout: template.timeout / plan.time_scale,
                batch_size: plan.stream_batch,
                ..template
            },
            None => template,
        }
    };
    let (capture, stream, api) = (
        stack.capture(),
        new_stream(),
        stack.api(datadog_url.clone()),
    );
    let mut report = Report {
        provider: if options.datadog {
            "datadog"
        } else {
            "cloudwatch"
        },
        ..Default::default()
    };
    let mut dice = Dice::new(options.seed);
    let projects = projects(&mut dice);
    let organizations: Vec<String> = {
        let mut o: Vec<String> = projects.iter().map(|p| p.organization_id.clone()).collect();
        o.dedup();
        o
    };

    // Destinations, through the api function: test the connection, then save.
    for project in &projects {
        let org_index = organizations
            .iter()
            .position(|o| *o == project.organization_id)
            .unwrap_or(0);
        let body = if options.datadog {
            let key = format!("{:016x}{:016x}", dice.number(), dice.number());
            crate::watch_secret(&key);
            json!({"provider": "datadog", "name": "local-datadog",
                   "datadog": {"site": "datadoghq.com", "api_key": key}})
        } else {
            json!({"provider": "cloudwatch", "name": "local-cloudwatch",
                   "cloudwatch": {"role_arn": role_arn(org_index), "region": "us-east-1"}})
        };
        let (status, tested) =
            call_api(&api, project, "POST", "/streaming/test", Some(&body)).await;
        if status != 200 || tested["success"] != true {
            report.problems.push(format!(
                "test connection for {}/{} failed: {status} {tested}",
                project.organization_id, project.project_id
            ));
            return (report, stack, datadog);
        }
        say(format!(
            "test connection {}/{}: {}",
            project.organization_id,
            project.project_id,
            tested["message"].as_str().unwrap_or_default()
        ));
        let (status, saved) = call_api(&api, project, "PUT", "/streaming", Some(&body)).await;
        if status != 200 {
            report
                .problems
                .push(format!("saving the destination failed: {status} {saved}"));
            return (report, stack, datadog);
        }
    }
    // Each PUT put its own audit event on the queue.
    report.sent_valid += projects.len();

    let mut bodies: Vec<String> = audit_log::fixtures::SEED_EVENTS
        .iter()
        .map(|(_, b)| b.to_string())
        .collect();
    bodies.extend(
        generate(options.events, &projects[1..], &mut dice)
            .iter()
            .map(Value::to_string),
    );
    report.sent_valid += bodies.len();
    let invalid = invalid_bodies(options.invalid, &projects[0]);
    report.sent_invalid = invalid.len();
    // Invalid bodies in among the valid ones, as a producer's mistakes would be.
    for (i, body) in invalid.iter().enumerate() {
        let at = (i * 7919) % (bodies.len() + 1);
        bodies.insert(at, body.clone());
    }
    say(format!(
        "sending {} events ({} invalid) to the events queue{}",
        bodies.len(),
        invalid.len(),
        if plan.is_some() { ", faults on" } else { "" }
    ));
    aws_faults(true);
    // Producers and capture run side by side in Lambda; here they take turns a slice at a time,
    // which also keeps the emulator's queue short (its receive slows down with depth).
    let total = bodies.len() + projects.len();
    let mut last_print = std::time::Instant::now();
    let mut done = 0;
    let capturing = std::time::Instant::now();
    for slice in bodies.chunks(SEND_SLICE) {
        stack.send(slice).await;
        let run = drain_events_queue_with(&stack, &capture, kills.as_ref(), |_| {}).await;
        report.capture.invocations += run.invocations;
        report.capture.deleted += run.deleted;
        report.capture.returned += run.returned;
        report.capture.killed += run.killed;
        done += slice.len();
        if last_print.elapsed() > Duration::from_secs(1) {
            last_print = std::time::Instant::now();
            say(format!("capture: {done} of {total} messages handled"));
        }
    }
    report.timings.capture = capturing.elapsed();
    say(format!(
        "capture: {} invocations ({} killed), {} messages stored, {} handed back until dead-lettered or stored",
        report.capture.invocations,
        report.capture.killed,
        report.capture.deleted,
        report.capture.returned
    ));

    // An outage of the destination starts with its first delivery.
    if let Some(proxy) = &proxy {
        proxy.arm_outage();
    }
    if let (Some(datadog), Some(_)) = (&datadog, plan) {
        datadog.arm();
    }
    let delivering = std::time::Instant::now();
    let mut stream_run = StreamRun::default();
    drain_stream_with(
        &stack,
        &stream,
        &HashMap::new(),
        &mut stream_run,
        &limits,
        faulty.as_ref(),
        |run| {
            if last_print.elapsed() > Duration::from_secs(1) {
                last_print = std::time::Instant::now();
                say(format!(
                    "stream: {} records, {} retries, {} batches to the on-failure queue",
                    run.records, run.retries, run.sent_to_failure_queue
                ));
            }
        },
    )
    .await;
    report.stream = stream_run;
    drain_stream_queues_with(&stack, &stream, faulty.as_ref()).await;
    report.timings.delivery = delivering.elapsed();
    say(format!(
        "stream: {} invocations ({} killed), {} records, {} retries, {} batches to the on-failure queue",
        stream_run.invocations,
        stream_run.killed,
        stream_run.records,
        stream_run.retries,
        stream_run.sent_to_failure_queue
    ));

    // Destinations that were down catch up by themselves: nobody calls replay.
    let recovering = std::time::Instant::now();
    aws_faults(true);
    let outage = plan
        .and_then(|p| p.aws.logs_outage.max(p.datadog.outage))
        .unwrap_or_default();
    if !settle_lanes_and_deferrals(
        &stack,
        &stream,
        faulty.as_ref(),
        outage + Duration::from_secs(120),
    )
    .await
    {
        report.problems.push(format!(
            "the destinations' lanes did not catch up within the outage and two minutes: {}; {} deferred messages still waiting; {} lane calls and {} deferred messages dead-lettered",
            lanes_unsettled(&stack).await.join(", "),
            stack.waiting("DeferredQueue").await,
            stack.depth("LaneDeadLetterQueue").await,
            stack.depth("DeferredDeadLetterQueue").await
        ));
    }
    aws_faults(false);
    report.timings.recovery = recovering.elapsed();
    say(format!(
        "lanes: every destination delivers again and owes nothing ({:.1} s after the backlog)",
        report.timings.recovery.as_secs_f64()
    ));
    for project in &projects {
        match listed_failures(&api, project, 100).await {
            Ok(failures) => report.listed_failures += failures.len(),
            Err(e) => report.problems.push(e),
        }
    }
    if let Some(proxy) = &proxy {
        say(format!(
            "the functions made {} AWS calls through the fault proxy",
            proxy.total()
        ));
    }

    say("checking what was stored, rejected and delivered".into());
    // What was stored.
    let items = crate::scan_all(&stack.dynamodb, &stack.events_table).await;
    report.stored = items.len();
    let mut stored_by_project: HashMap<Project, Vec<String>> = HashMap::new();
    let mut distinct = std::collections::HashSet::new();
    for item in &items {
        let json = audit_log::store::event_json(item).expect("stored event");
        let value: Value = serde_json::from_str(&json).expect("JSON");
        let project = Project {
            organization_id: value["organization_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            project_id: value["project_id"].as_str().unwrap_or_default().to_owned(),
        };
        if !distinct.insert(json.clone()) {
            report.stored_twice += 1;
        }
        stored_by_project.entry(project).or_default().push(json);
    }
    let mut dead_letters = stack.take_all("EventsDeadLetterQueue").await;
    report.rejected = dead_letters.len();
    let mut invalid_sent = invalid.clone();
    dead_letters.sort();
    invalid_sent.sort();
    if dead_letters != invalid_sent {
        report.problems.push(format!(
            "the dead-letter queue holds {} messages that are not the invalid ones sent",
            dead_letters
                .iter()
                .filter(|d| !invalid_sent.contains(d))
                .count()
        ));
    }

    // What arrived.
    let entries = datadog
        .as_ref()
        .map(DatadogIntake::entries)
        .unwrap_or_default();
    let group =
        audit_log::destination::cloudwatch::events_log_group(&options.operator.log_group_prefix);
    for project in &projects {
        let stored = stored_by_project.get(project).cloned().unwrap_or_default();
        // Datadog attributes come back in another order: compare key-sorted.
        let (stored, arrived): (Vec<String>, Vec<String>) = if options.datadog {
            let arrived = entries
                .iter()
                .map(event_of_datadog_entry)
                // "Test connection" logs go to the same intake, and were never stored.
                .filter(|e| e["test"] != true)
                .filter(|e| {
                    e["organization_id"] == project.organization_id.as_str()
                        && e["project_id"] == project.project_id.as_str()
                })
                .map(|e| canonical(&e))
                .collect();
            let stored = stored
                .iter()
                .map(|s| canonical(&serde_json::from_str(s).expect("JSON")))
                .collect();
            (stored, arrived)
        } else {
            let org_index = organizations
                .iter()
                .position(|o| *o == project.organization_id)
                .unwrap_or(0);
            let group_stream = audit_log::destination::cloudwatch::log_stream(&project.project_id);
            (
                stored,
                cloudwatch_messages(aws, &role_arn(org_index), &group, &group_stream).await,
            )
        };
        let mut counts: HashMap<&str, i64> = HashMap::new();
        for s in &stored {
            *counts.entry(s.as_str()).or_default() += 1;
        }
        for a in &arrived {
            *counts.entry(a.as_str()).or_default() -= 1;
        }
        report.undelivered += counts
            .values()
            .filter(|&&c| c > 0)
            .map(|&c| c as usize)
            .sum::<usize>();
        report.delivered_twice += counts
            .values()
            .filter(|&&c| c < 0)
            .map(|&c| (-c) as usize)
            .sum::<usize>();
        report.delivered += arrived.len();
        if report.sample.is_none() {
            // As it arrived: the raw Datadog log, or the CloudWatch message.
            report.sample = match options.datadog {
                true => entries
                    .iter()
                    .find(|e| e["test"] != true)
                    .map(Value::to_string),
                false => arrived.first().cloned(),
            };
        }
        report
            .per_project
            .push((project.clone(), stored.len(), arrived.len()));
    }
    report.where_delivered = if options.datadog {
        format!(
            "Datadog stand-in at {}",
            datadog.as_ref().map(|d| d.uri()).unwrap_or_default()
        )
    } else {
        format!(
            "CloudWatch Logs group {group} (one stream per project) in the customers' accounts {} (us-east-1)",
            (0..organizations.len())
                .map(customer_account)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let injected = [
        proxy.as_ref().map(|p| p.injected.all()),
        datadog.as_ref().map(|d| d.injected().all()),
        kills.as_ref().map(|k| k.injected.all()),
    ];
    for (kind, n) in injected.into_iter().flatten().flatten() {
        report.faults.insert(kind.to_owned(), n);
    }

    if report.stored != report.sent_valid {
        report.problems.push(format!(
            "{} valid events sent but {} stored",
            report.sent_valid, report.stored
        ));
    }
    if report.stored_twice > 0 {
        report
            .problems
            .push(format!("{} events stored twice", report.stored_twice));
    }
    if report.rejected != report.sent_invalid {
        report.problems.push(format!(
            "{} invalid events sent but {} dead-lettered",
            report.sent_invalid, report.rejected
        ));
    }
    if report.undelivered > 0 {
        report.problems.push(format!(
            "{} stored events were not delivered",
            report.undelivered
        ));
    }
    if report.listed_failures > 0 {
        report.problems.push(format!(
            "{} events are listed as failed: every one should have arrived by itself",
            report.listed_failures
        ));
    }
    (report, stack, datadog)
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.faults.is_empty() {
            writeln!(f, "faults injected {:>7}", self.faults_injected())?;
            for (kind, n) in &self.faults {
                writeln!(f, "  {n:>7}  {kind}")?;
            }
        }
        writeln!(
            f,
            "sent        {:>7} valid, {} invalid",
            self.sent_valid, self.sent_invalid
        )?;
        writeln!(
            f,
            "stored      {:>7} ({} twice)",
            self.stored, self.stored_twice
        )?;
        writeln!(
            f,
            "rejected    {:>7} (in the dead-letter queue)",
            self.rejected
        )?;
        writeln!(
            f,
            "delivered   {:>7} to {} ({} missing, {} duplicates)",
            self.delivered, self.provider, self.undelivered, self.delivered_twice
        )?;
        writeln!(f, "lost        {:>7}", self.lost())?;
        if self.listed_failures > 0 {
            writeln!(
                f,
                "failures    {:>7} listed (every event should arrive by itself)",
                self.listed_failures
            )?;
        }
        writeln!(
            f,
            "time        capture {:.1} s, delivery {:.1} s, recovery {:.1} s: {:.0} events/s, backlog drained in {:.1} s",
            self.timings.capture.as_secs_f64(),
            self.timings.delivery.as_secs_f64(),
            self.timings.recovery.as_secs_f64(),
            self.events_per_second(),
            self.drain().as_secs_f64()
        )?;
        writeln!(
            f,
            "\n{:<38} {:<40} {:>7} {:>10}",
            "organization", "project", "stored", "delivered"
        )?;
        for (p, stored, delivered) in &self.per_project {
            writeln!(
                f,
                "{:<38} {:<40} {stored:>7} {delivered:>10}",
                p.organization_id, p.project_id
            )?;
        }
        writeln!(f, "\ndelivered to {}", self.where_delivered)?;
        if let Some(sample) = &self.sample {
            writeln!(f, "\none delivered event, as it arrived:\n{sample}")?;
        }
        if self.ok() {
            writeln!(
                f,
                "\nOK: every valid event stored once and delivered; every invalid one dead-lettered"
            )
        } else {
            writeln!(f, "\nFAILED:")?;
            for p in &self.problems {
                writeln!(f, "  - {p}")?;
            }
            Ok(())
        }
    }
}
