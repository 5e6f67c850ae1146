//! Faults on purpose, for the reliability suite: a proxy in front of the AWS emulator that
//! counts calls and can answer as DynamoDB and CloudWatch Logs do under strain (throttling,
//! `UnprocessedItems`, `rejectedLogEventsInfo`, an outage), and a Datadog intake stand-in that
//! fails a share of requests (500, 429, no answer in time) or goes down. Every choice comes
//! from a seed; everything listens on 127.0.0.1.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Faults of injected kinds, by name, as a report lists them.
#[derive(Debug, Default, Clone)]
pub struct Injected(Arc<Mutex<BTreeMap<&'static str, usize>>>);

impl Injected {
    pub fn add(&self, kind: &'static str) {
        *self.0.lock().expect("injected").entry(kind).or_default() += 1;
    }

    pub fn get(&self, kind: &str) -> usize {
        self.0
            .lock()
            .expect("injected")
            .get(kind)
            .copied()
            .unwrap_or(0)
    }

    pub fn all(&self) -> BTreeMap<&'static str, usize> {
        self.0.lock().expect("injected").clone()
    }
}

/// An outage: every request is refused from the first one after `arm` for `length`.
#[derive(Debug, Default)]
struct Outage {
    length: Option<Duration>,
    armed: bool,
    started: Option<Instant>,
}

impl Outage {
    fn down(&mut self) -> bool {
        let Some(length) = self.length else {
            return false;
        };
        if !self.armed {
            return false;
        }
        let started = *self.started.get_or_insert_with(Instant::now);
        started.elapsed() < length
    }
}

/// What the AWS proxy does to the requests it forwards. Shares are 0.0 to 1.0.
#[derive(Debug, Clone, Copy, Default)]
pub struct AwsFaults {
    /// DynamoDB writes (`BatchWriteItem`, `PutItem`, `UpdateItem`, `DeleteItem`) answered with
    /// `ProvisionedThroughputExceededException`.
    pub dynamodb_throttling: f64,
    /// `BatchWriteItem` calls that write only part of their items and return the rest as
    /// `UnprocessedItems`.
    pub dynamodb_unprocessed: f64,
    /// `PutLogEvents` calls answered with `ThrottlingException`.
    pub logs_throttling: f64,
    /// `PutLogEvents` calls whose oldest events are rejected inside a success
    /// (`rejectedLogEventsInfo.tooOldLogEventEndIndex`) and not written.
    pub logs_rejected: f64,
    /// CloudWatch Logs answers every `PutLogEvents` with `ServiceUnavailableException` for this
    /// long, from the first one after [`AwsProxy::arm_outage`].
    pub logs_outage: Option<Duration>,
    pub seed: u64,
}

struct ProxyState {
    faults: AwsFaults,
    enabled: bool,
    dice: StdRng,
    outage: Outage,
    /// A `PutLogEvents` got past the outage.
    wrote_past_outage: bool,
    /// DynamoDB writes that name this (an organization's id) are throttled, faults enabled or
    /// not: one organization's partition running hot.
    hot: Option<String>,
}

/// A proxy in front of the AWS emulator that counts requests by operation and injects
/// [`AwsFaults`] while enabled.
#[derive(Clone)]
pub struct AwsProxy {
    pub url: String,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    /// By operation: requests being answered now, and the most there were at once.
    in_flight: Arc<Mutex<HashMap<String, (usize, usize)>>>,
    state: Arc<Mutex<ProxyState>>,
    pub injected: Injected,
}

fn aws_error(status: u16, protocol: &str, kind: &str, message: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", protocol)
        .header("x-amzn-requestid", crate::unique("fault"))
        .body(Full::new(Bytes::from(
            json!({"__type": kind, "message": message}).to_string(),
        )))
        .expect("response")
}

/// Headers about one connection, which a proxy keeps to itself (RFC 9110, 7.6.1). The emulator
/// closes every connection it answers; passing its `Connection: close` on would make the
/// functions connect anew for every call, which AWS's endpoints, keeping connections open, do
/// not make them do.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// What the proxy decided for one request.
enum Plan {
    Forward,
    Answer(Response<Full<Bytes>>),
    /// Forward this body instead, then add `merge` to the answer's JSON.
    Rewrite {
        body: Bytes,
        merge: Value,
    },
}

impl AwsProxy {
    pub async fn start(upstream: String, faults: AwsFaults) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let proxy = Self {
            url: format!("http://{}", listener.local_addr().expect("address")),
            counts: Arc::default(),
            in_flight: Arc::default(),
            state: Arc::new(Mutex::new(ProxyState {
                faults,
                enabled: false,
                dice: StdRng::seed_from_u64(faults.seed),
                outage: Outage {
                    length: faults.logs_outage,
                    ..Default::default()
                },
                wrote_past_outage: false,
                hot: None,
            })),
            injected: Injected::default(),
        };
        let http = reqwest::Client::new();
        let server = proxy.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (server, http, upstream) = (server.clone(), http.clone(), upstream.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (server, http, upstream) =
                            (server.clone(), http.clone(), upstream.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                server.answer(request, &http, &upstream).await,
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        proxy
    }

    /// Faults apply from now on (setting up is left alone).
    pub fn enable(&self, on: bool) {
        self.state.lock().expect("proxy").enabled = on;
    }

    /// The CloudWatch Logs outage starts with the next `PutLogEvents`.
    pub fn arm_outage(&self) {
        self.state.lock().expect("proxy").outage.armed = true;
    }

    pub fn count(&self, operation: &str) -> usize {
        self.counts
            .lock()
            .expect("counts")
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// The most requests of `operation` the proxy was answering at once.
    pub fn most_at_once(&self, operation: &str) -> usize {
        self.in_flight
            .lock()
            .expect("in flight")
            .get(operation)
            .map_or(0, |(_, most)| *most)
    }

    pub fn total(&self) -> usize {
        self.counts.lock().expect("counts").values().sum()
    }

    pub fn reset(&self) {
        self.counts.lock().expect("counts").clear();
    }

    fn refuse(&self, kind: &'static str, answer: Response<Full<Bytes>>) -> Plan {
        self.injected.add(kind);
        Plan::Answer(answer)
    }

    /// Every DynamoDB write that names `text` is throttled from now on (`None`: none is).
    pub fn throttle_writes_naming(&self, text: Option<&str>) {
        self.state.lock().expect("proxy").hot = text.map(str::to_owned);
    }

    fn plan(&self, operation: &str, body: &Bytes) -> Plan {
        let mut state = self.state.lock().expect("proxy");
        let write = matches!(
            operation,
            "BatchWriteItem" | "PutItem" | "UpdateItem" | "DeleteItem"
        );
        let names = |text: &str| String::from_utf8_lossy(body).contains(text);
        let hot = state.hot.as_deref().is_some_and(names);
        if !(state.enabled || write && hot) {
            return Plan::Forward;
        }
        let faults = state.faults;
        let dynamodb = "application/x-amz-json-1.0";
        let logs = "application/x-amz-json-1.1";
        match operation {
            "BatchWriteItem" | "PutItem" | "UpdateItem" | "DeleteItem" => {
                if hot || state.dice.random_bool(faults.dynamodb_throttling) {
                    return self.refuse(
                        "DynamoDB throttling",
                        aws_error(
                            400,
                            dynamodb,
                            "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                            "The level of configured provisioned throughput for the table was exceeded.",
                        ),
                    );
                }
                if operation == "BatchWriteItem"
                    && state.dice.random_bool(faults.dynamodb_unprocessed)
                    && let Some(plan) = unprocess(body, &mut state.dice)
                {
                    self.injected.add("DynamoDB UnprocessedItems");
                    return plan;
                }
                Plan::Forward
            }
            "PutLogEvents" => {
                if state.outage.down() {
                    return self.refuse(
                        "CloudWatch Logs outage (503)",
                        aws_error(
                            503,
                            logs,
                            "ServiceUnavailableException",
                            "The service cannot complete the request.",
                        ),
                    );
                }
                // The first write past the outage is throttled, so that a run meets throttling
                // however few writes it makes; then it comes at random.
                let first = !std::mem::replace(&mut state.wrote_past_outage, true);
                if (first && faults.logs_throttling > 0.0)
                    || state.dice.random_bool(faults.logs_throttling)
                {
                    return self.refuse(
                        "CloudWatch Logs throttling",
                        aws_error(400, logs, "ThrottlingException", "Rate exceeded"),
                    );
                }
                if state.dice.random_bool(faults.logs_rejected)
                    && let Some(plan) = reject_oldest(body, &mut state.dice)
                {
                    self.injected.add("CloudWatch Logs rejectedLogEventsInfo");
                    return plan;
                }
                Plan::Forward
            }
            _ => Plan::Forward,
        }
    }

    async fn answer(
        &self,
        request: Request<Incoming>,
        http: &reqwest::Client,
        upstream: &str,
    ) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let operation = crate::operation_name(
            parts
                .headers
                .get("x-amz-target")
                .and_then(|t| t.to_str().ok()),
            &body,
        );
        *self
            .counts
            .lock()
            .expect("counts")
            .entry(operation.clone())
            .or_default() += 1;
        let _answering = Answering::start(&self.in_flight, &operation);
        let (body, merge) = match self.plan(&operation, &body) {
            Plan::Answer(response) => return response,
            Plan::Forward => (body, None),
            Plan::Rewrite { body, merge } => (body, Some(merge)),
        };
        let mut forward = http.request(parts.method.clone(), format!("{upstream}{}", parts.uri));
        for (name, value) in &parts.headers {
            if name != "host" && name != "content-length" && !hop_by_hop(name.as_str()) {
                forward = forward.header(name, value);
            }
        }
        let Ok(answer) = forward.body(body).send().await else {
            return Response::builder()
                .status(502)
                .body(Full::new(Bytes::new()))
                .expect("response");
        };
        let status = answer.status().as_u16();
        let mut out = Response::builder().status(status);
        for (name, value) in answer.headers() {
            // A rewritten answer has another length and checksum.
            let rewritten = matches!(name.as_str(), "content-length" | "x-amz-crc32");
            if (merge.is_none() || !rewritten) && !hop_by_hop(name.as_str()) {
                out = out.header(name.as_str(), value.as_bytes());
            }
        }
        let bytes = answer.bytes().await.unwrap_or_default();
        let bytes = match merge {
            Some(extra) if status == 200 => {
                let mut answer: Value = serde_json::from_slice(&bytes).unwrap_or(json!({}));
                merge_into(&mut answer, extra);
                Bytes::from(answer.to_string())
            }
            _ => bytes,
        };
        out.body(Full::new(bytes)).expect("response")
    }
}

/// One request being answered, counted in [`AwsProxy::most_at_once`] until it is dropped.
struct Answering<'a> {
    in_flight: &'a Mutex<HashMap<String, (usize, usize)>>,
    operation: String,
}

impl<'a> Answering<'a> {
    fn start(in_flight: &'a Mutex<HashMap<String, (usize, usize)>>, operation: &str) -> Self {
        let mut all = in_flight.lock().expect("in flight");
        let (now, most) = all.entry(operation.to_owned()).or_default();
        *now += 1;
        *most = (*most).max(*now);
        Self {
            in_flight,
            operation: operation.to_owned(),
        }
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        if let Some((now, _)) = self
            .in_flight
            .lock()
            .expect("in flight")
            .get_mut(&self.operation)
        {
            *now -= 1;
        }
    }
}

/// Adds `extra`'s lists to `into`'s (per table for `UnprocessedItems`) and sets its other keys.
fn merge_into(into: &mut Value, extra: Value) {
    let Value::Object(extra) = extra else { return };
    for (key, value) in extra {
        match (into.get_mut(&key), value) {
            (Some(Value::Object(existing)), Value::Object(tables)) => {
                for (table, items) in tables {
                    let list = existing.entry(table).or_insert_with(|| json!([]));
                    if let (Some(list), Value::Array(items)) = (list.as_array_mut(), items) {
                        list.extend(items);
                    }
                }
            }
            (_, value) => {
                into[key] = value;
            }
        }
    }
}

/// A `BatchWriteItem` that writes a random front part of each table's requests and hands the
/// rest back as unprocessed. None when there is nothing to split.
fn unprocess(body: &Bytes, dice: &mut StdRng) -> Option<Plan> {
    let mut request: Value = serde_json::from_slice(body).ok()?;
    let tables = request["RequestItems"].as_object_mut()?;
    let mut unprocessed = serde_json::Map::new();
    for (table, items) in tables.iter_mut() {
        let items = items.as_array_mut()?;
        if items.is_empty() {
            continue;
        }
        let keep = dice.random_range(0..items.len());
        unprocessed.insert(table.clone(), Value::Array(items.split_off(keep)));
    }
    tables.retain(|_, items| items.as_array().is_some_and(|a| !a.is_empty()));
    let merge = json!({"UnprocessedItems": unprocessed});
    if tables.is_empty() {
        return Some(Plan::Answer(
            Response::builder()
                .status(200)
                .header("content-type", "application/x-amz-json-1.0")
                .header("x-amzn-requestid", crate::unique("fault"))
                .body(Full::new(Bytes::from(merge.to_string())))
                .expect("response"),
        ));
    }
    Some(Plan::Rewrite {
        body: Bytes::from(request.to_string()),
        merge,
    })
}

/// A `PutLogEvents` whose first (oldest) events CloudWatch Logs rejects as too old: only the
/// rest is written. None for a call of fewer than two events.
fn reject_oldest(body: &Bytes, dice: &mut StdRng) -> Option<Plan> {
    let mut request: Value = serde_json::from_slice(body).ok()?;
    let events = request["logEvents"].as_array_mut()?;
    if events.len() < 2 {
        return None;
    }
    let rejected = dice.random_range(1..events.len());
    events.drain(..rejected);
    Some(Plan::Rewrite {
        body: Bytes::from(request.to_string()),
        merge: json!({"rejectedLogEventsInfo": {"tooOldLogEventEndIndex": rejected - 1}}),
    })
}

// ---- Datadog ----------------------------------------------------------------------------------

/// What the Datadog stand-in does to log requests. Shares are 0.0 to 1.0.
#[derive(Debug, Clone, Copy, Default)]
pub struct DatadogFaults {
    /// Requests that fail, in equal parts: HTTP 500, HTTP 429, and no answer before `too_late`
    /// (the logs are taken all the same, as a real intake may have done).
    pub failing: f64,
    pub too_late: Duration,
    /// Every log request is answered 503 for this long, from the first one after
    /// [`DatadogIntake::arm`].
    pub outage: Option<Duration>,
    pub seed: u64,
}

struct IntakeState {
    faults: DatadogFaults,
    /// Faults apply once armed ("Test connection" while setting up is left alone).
    armed: std::sync::atomic::AtomicBool,
    dice: Mutex<StdRng>,
    outage: Mutex<Outage>,
    /// Requests answered since the outage, armed or not.
    after_outage: std::sync::atomic::AtomicUsize,
    /// The log entries of the requests the intake took, in arrival order.
    taken: Mutex<Vec<Value>>,
    injected: Injected,
}

struct Responder(Arc<IntakeState>);

impl wiremock::Respond for Responder {
    fn respond(&self, request: &wiremock::Request) -> wiremock::ResponseTemplate {
        let state = &self.0;
        use wiremock::ResponseTemplate;
        // As the intake does, a body it cannot read is refused, whatever else is going on.
        let Some(entries) = try_log_entries(request) else {
            return ResponseTemplate::new(400)
                .set_body_json(json!({"errors": ["unreadable body or Content-Encoding"]}));
        };
        if !state.armed.load(std::sync::atomic::Ordering::Relaxed) {
            state.taken.lock().expect("taken").extend(entries);
            return ResponseTemplate::new(202).set_body_json(json!({}));
        }
        if state.outage.lock().expect("outage").down() {
            state.injected.add("Datadog outage (503)");
            return ResponseTemplate::new(503);
        }
        // The first three answers after the outage are one of each failure, so that every kind
        // is met however few requests a run makes; then they come at random.
        let nth = state
            .after_outage
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fault = if state.faults.failing > 0.0 && nth < 3 {
            Some(nth as u32)
        } else {
            let mut dice = state.dice.lock().expect("dice");
            dice.random_bool(state.faults.failing)
                .then(|| dice.random_range(0..3))
        };
        match fault {
            Some(0) => {
                state.injected.add("Datadog HTTP 500");
                ResponseTemplate::new(500)
            }
            Some(1) => {
                state.injected.add("Datadog HTTP 429");
                ResponseTemplate::new(429).insert_header("x-ratelimit-reset", "1")
            }
            other => {
                if other.is_some() {
                    state.injected.add("Datadog answer too late");
                }
                state.taken.lock().expect("taken").extend(entries);
                let accepted = ResponseTemplate::new(202).set_body_json(json!({}));
                match other {
                    Some(_) => accepted.set_delay(state.faults.too_late),
                    None => accepted,
                }
            }
        }
    }
}

/// The one key the Datadog stand-in refuses (403, as Datadog answers a revoked key), so that a
/// refusal can be seen locally.
pub const REFUSED_DATADOG_KEY: &str = "00000000000000000000000000000000";

/// The stand-in's own listing of what it took (`GET /stand-in/logs`), for those outside the
/// process, such as the console's browser tests.
struct Taken(Arc<IntakeState>);

impl wiremock::Respond for Taken {
    fn respond(&self, _: &wiremock::Request) -> wiremock::ResponseTemplate {
        let entries = self.0.taken.lock().expect("taken").clone();
        wiremock::ResponseTemplate::new(200).set_body_json(entries)
    }
}

/// A local stand-in for Datadog's intake: validates any key but [`REFUSED_DATADOG_KEY`], takes
/// logs, and fails as told.
pub struct DatadogIntake {
    pub server: wiremock::MockServer,
    state: Arc<IntakeState>,
}

impl DatadogIntake {
    pub async fn start(faults: DatadogFaults) -> Self {
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, ResponseTemplate};
        let server = wiremock::MockServer::start().await;
        let state = Arc::new(IntakeState {
            faults,
            armed: Default::default(),
            dice: Mutex::new(StdRng::seed_from_u64(faults.seed)),
            outage: Mutex::new(Outage {
                length: faults.outage,
                ..Default::default()
            }),
            after_outage: Default::default(),
            taken: Mutex::default(),
            injected: Injected::default(),
        });
        Mock::given(wiremock::matchers::header(
            "DD-API-KEY",
            REFUSED_DATADOG_KEY,
        ))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({"errors": ["Forbidden"]})))
        .with_priority(1)
        .mount(&server)
        .await;
        Mock::given(method("GET"))
            .and(path("/stand-in/logs"))
            .respond_with(Taken(state.clone()))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v1/validate"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"valid": true})))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/api/v2/logs"))
            .respond_with(Responder(state.clone()))
            .mount(&server)
            .await;
        Self { server, state }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// Faults apply from now on; the outage starts with the next log request.
    pub fn arm(&self) {
        self.state
            .armed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.state.outage.lock().expect("outage").armed = true;
    }

    pub fn injected(&self) -> &Injected {
        &self.state.injected
    }

    /// Every log entry the intake took, duplicates included.
    pub fn entries(&self) -> Vec<Value> {
        self.state.taken.lock().expect("taken").clone()
    }
}

/// The log entries of one intake request: its body decoded as its `Content-Encoding` says.
pub fn log_entries(request: &wiremock::Request) -> Vec<Value> {
    try_log_entries(request).expect("a JSON array, in an encoding the intake reads")
}

/// The intake reads bodies plain, gzip or deflate (the encodings Datadog's API reference names),
/// and nothing else.
pub fn try_log_entries(request: &wiremock::Request) -> Option<Vec<Value>> {
    use std::io::Read;
    let encoding = request
        .headers
        .get("content-encoding")
        .map(|v| v.to_str().unwrap_or("?"));
    let body = &request.body[..];
    let mut json = Vec::new();
    match encoding {
        None | Some("identity") => json.extend_from_slice(body),
        Some("gzip") => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut json)
                .ok()?;
        }
        Some("deflate") => {
            flate2::read::ZlibDecoder::new(body)
                .read_to_end(&mut json)
                .ok()?;
        }
        Some(_) => return None,
    }
    serde_json::from_slice(&json).ok()
}

// ---- the functions dying ----------------------------------------------------------------------

/// How an invocation was killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// After its work (events stored or delivered), before Lambda got its answer.
    AfterWork,
    /// Part-way, after a random few milliseconds.
    PartWay(Duration),
}

/// Decides which invocations die, from a seed.
pub struct Kills {
    share: f64,
    dice: Mutex<StdRng>,
    pub injected: Injected,
}

impl Kills {
    pub fn new(share: f64, seed: u64) -> Self {
        Self {
            share,
            dice: Mutex::new(StdRng::seed_from_u64(seed)),
            injected: Injected::default(),
        }
    }

    /// Whether, and how, the next invocation dies.
    pub fn next(&self) -> Option<Kill> {
        let mut dice = self.dice.lock().expect("dice");
        if !dice.random_bool(self.share) {
            return None;
        }
        Some(if dice.random_bool(0.5) {
            Kill::AfterWork
        } else {
            Kill::PartWay(Duration::from_millis(dice.random_range(1..80)))
        })
    }

    /// Runs an invocation, unless it is killed: None then, as Lambda sees a dead process.
    pub async fn run<T>(
        &self,
        function: &'static str,
        invocation: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        match self.next() {
            None => Some(invocation.await),
            Some(Kill::AfterWork) => {
                let _ = invocation.await;
                self.injected.add(match function {
                    "capture" => "capture killed after storing, before acknowledging",
                    _ => "stream killed after delivering, before answering",
                });
                None
            }
            Some(Kill::PartWay(after)) => match tokio::time::timeout(after, invocation).await {
                Ok(answer) => Some(answer),
                Err(_) => {
                    self.injected.add(match function {
                        "capture" => "capture killed part-way",
                        _ => "stream killed part-way",
                    });
                    None
                }
            },
        }
    }
}
