//! api against the local AWS emulator, Datadog through a local stand-in. Every response any
//! test receives is held to `functions/api/openapi.yaml`.

mod connection;
mod events;
mod ids;
mod lane;
mod routes;
mod search;
mod security;
mod streaming;

use audit_log::Retention;
use audit_log::clock::{Clock, ManualClock};
use audit_log::credentials::{Credentials, CredentialsError, SecretStore, Secrets};
use audit_log::destination::datadog::DatadogClient;
use audit_log::store::EventTable;
use audit_log::streaming::FailureLog;
use audit_log_api::{Api, Settings};
use audit_log_capture::Capture;
use audit_log_tests::{
    OpenApi, api_request, create_table, emulator, environment_of, sqs_batch, unique,
    with_captured_logs,
};
use aws_lambda_events::encodings::Body;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const BASE: &str = "/v1/organizations/{organization_id}/projects/{project_id}/audit-logs";
const ORGANIZATION_BASE: &str = "/v1/organizations/{organization_id}/audit-logs";

/// One HTTP request's parts.
struct Request<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a [(&'a str, &'a str)],
    headers: &'a [(&'a str, &'a str)],
    body: Option<&'a str>,
}
const ROLE_ARN: &str = "arn:aws:iam::111111111111:role/hcp-log-streaming";
const KEY: &str = audit_log_tests::SENTINEL_API_KEY;
const ROTATED: &str = "fedcba9876543210fedcba9876543210";

struct Reply {
    status: u16,
    body: Value,
    /// The body as sent (`body` reads numbers as `f64`s).
    text: String,
    headers: http::HeaderMap,
    /// The whole Lambda response as the runtime sends it (Lambda answers at most 6 MB).
    lambda_bytes: usize,
}

struct World {
    aws: aws_config::SdkConfig,
    api: Api,
    secrets: SecretStore,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    lane_queue_url: String,
    capture: Capture,
    datadog: MockServer,
    log_group_prefix: String,
    /// Where the api keeps its secrets: `<stack>/streaming/`.
    secret_prefix: String,
    configs: audit_log::streaming::ConfigTable,
    events: EventTable,
    events_table: String,
    config_table: String,
    org: String,
    project: String,
    openapi: OpenApi,
}

fn settings(w: &WorldParts) -> Settings {
    Settings {
        events_table: w.events_table.clone(),
        config_table: w.config_table.clone(),
        events_queue_url: w.queue_url.clone(),
        replay_queue_url: w.queue_url.clone(),
        lane_queue_url: w.lane_queue_url.clone(),
        // Exports have their own tests (tests/export.rs), over the whole local stack.
        export_queue_url: w.queue_url.clone(),
        export_bucket: "exports-not-used-here".into(),
        secret_prefix: w.secret_prefix.clone(),
        log_group_prefix: w.log_group_prefix.clone(),
        organization_claim: "organization_id".into(),
        service_account_id: None,
        datadog_endpoint_override: None,
        console: audit_log_api::console::SignIn::Off,
        lanes: audit_log::lane::Policy::default(),
        retention: Retention::default(),
    }
}

impl World {
    /// What the api's settings are made of.
    fn parts(&self) -> WorldParts {
        WorldParts {
            events_table: self.events_table.clone(),
            config_table: self.config_table.clone(),
            queue_url: self.queue_url.clone(),
            lane_queue_url: self.lane_queue_url.clone(),
            secret_prefix: self.secret_prefix.clone(),
            log_group_prefix: self.log_group_prefix.clone(),
        }
    }
}

struct WorldParts {
    events_table: String,
    config_table: String,
    queue_url: String,
    lane_queue_url: String,
    secret_prefix: String,
    log_group_prefix: String,
}

impl World {
    async fn new() -> Self {
        Self::with(|api| api).await
    }

    async fn with(customize: impl FnOnce(Api) -> Api) -> Self {
        let aws = emulator().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
        let sqs = aws_sdk_sqs::Client::new(&aws);
        let queue_url = sqs
            .create_queue()
            .queue_name(unique("events"))
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let parts = WorldParts {
            events_table: create_table(&dynamodb, "EventsTable").await,
            config_table: create_table(&dynamodb, "ConfigTable").await,
            queue_url: queue_url.clone(),
            lane_queue_url: audit_log_tests::new_queue(&sqs, "lanes").await,
            secret_prefix: format!("{}/streaming/", unique("stack")),
            log_group_prefix: format!("/{}", unique("hashicorp")),
        };
        let datadog = MockServer::start().await;
        let api = Api::new(settings(&parts), &aws).with_datadog(DatadogClient::with_timeout(
            Some(datadog.uri()),
            Duration::from_secs(2),
        ));
        Self {
            api: customize(api),
            secrets: SecretStore::new(
                aws_sdk_secretsmanager::Client::new(&aws),
                &parts.secret_prefix,
            ),
            capture: Capture::new(
                EventTable::new(dynamodb.clone(), &parts.events_table),
                audit_log::streaming::ConfigTable::new(dynamodb.clone(), &parts.config_table),
                Retention::default(),
            ),
            configs: audit_log::streaming::ConfigTable::new(dynamodb.clone(), &parts.config_table),
            events: EventTable::new(dynamodb.clone(), &parts.events_table),
            events_table: parts.events_table.clone(),
            config_table: parts.config_table.clone(),
            sqs,
            queue_url,
            lane_queue_url: parts.lane_queue_url.clone(),
            datadog,
            log_group_prefix: parts.log_group_prefix,
            secret_prefix: parts.secret_prefix.clone(),
            org: unique("org"),
            project: unique("project"),
            openapi: OpenApi::load(),
            aws,
        }
    }

    /// Calls a route of `org`'s project as a member of `as_org` (None: no verified claims).
    /// One argument per part of an HTTP request, as a reader of the tests expects them.
    #[allow(clippy::too_many_arguments)]
    async fn call_as(
        &self,
        as_org: Option<&str>,
        org: &str,
        method: &str,
        suffix: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let path = format!(
            "/v1/organizations/{org}/projects/{}/audit-logs{suffix}",
            self.project
        );
        let template = if suffix.starts_with("/streaming/replays/") {
            "/streaming/replays/{replay_id}".to_owned()
        } else if suffix.starts_with("/exports/") {
            "/exports/{export_id}".to_owned()
        } else {
            suffix.to_owned()
        };
        let request = Request {
            method,
            path: &path,
            query,
            headers,
            body,
        };
        self.send(as_org, request, &format!("{BASE}{template}"))
            .await
    }

    /// Calls a route of `org` itself (`/v1/organizations/{org}/audit-logs{suffix}`) as a member
    /// of `as_org`.
    async fn call_organization(
        &self,
        as_org: Option<&str>,
        org: &str,
        suffix: &str,
        query: &[(&str, &str)],
    ) -> Reply {
        let path = format!("/v1/organizations/{org}/audit-logs{suffix}");
        let request = Request {
            method: "GET",
            path: &path,
            query,
            headers: &[],
            body: None,
        };
        self.send(as_org, request, &format!("{ORGANIZATION_BASE}{suffix}"))
            .await
    }

    /// Sends a request as a member of `as_org` (None: no verified claims) and checks the
    /// answer against the OpenAPI document's `template`.
    async fn send(&self, as_org: Option<&str>, r: Request<'_>, template: &str) -> Reply {
        let claims: Option<Vec<(&str, &str)>> = as_org.map(|o| {
            vec![
                ("organization_id", o),
                ("sub", "user-7"),
                ("email", "ops@example.com"),
            ]
        });
        let request = api_request(
            r.method,
            r.path,
            r.query,
            r.headers,
            r.body,
            claims.as_deref(),
        );
        let response = self.api.respond(&request).await;
        let lambda_bytes = serde_json::to_string(&response).unwrap().len();
        let status = u16::try_from(response.status_code).unwrap();
        let text = match &response.body {
            Some(Body::Text(t)) => t.clone(),
            None | Some(Body::Empty) => String::new(),
            Some(other) => panic!("unexpected body {other:?}"),
        };
        let body =
            (!text.is_empty()).then(|| serde_json::from_str::<Value>(&text).expect("JSON body"));
        if let Some(body) = &body {
            audit_log_tests::watch_external_ids(body);
        }
        self.openapi
            .check(r.method, template, status, body.as_ref());
        Reply {
            status,
            body: body.unwrap_or(Value::Null),
            text,
            headers: response.headers,
            lambda_bytes,
        }
    }

    async fn call(&self, method: &str, suffix: &str, body: Option<Value>) -> Reply {
        let text = body.map(|b| b.to_string());
        self.call_as(
            Some(&self.org),
            &self.org,
            method,
            suffix,
            &[],
            &[],
            text.as_deref(),
        )
        .await
    }

    /// A change with `If-Match`.
    async fn conditional(&self, method: &str, if_match: &str, body: Option<&str>) -> Reply {
        self.call_as(
            Some(&self.org),
            &self.org,
            method,
            "/streaming",
            &[],
            &[("If-Match", if_match)],
            body,
        )
        .await
    }

    async fn put(&self, body: Value) -> Reply {
        self.call("PUT", "/streaming", Some(body)).await
    }

    async fn get(&self) -> Reply {
        self.call("GET", "/streaming", None).await
    }

    /// The deployment's service key, if a listing has made it.
    async fn service_key_made(&self) -> Option<String> {
        aws_sdk_secretsmanager::Client::new(&self.aws)
            .get_secret_value()
            .secret_id(format!("{}service-key", self.secret_prefix))
            .send()
            .await
            .ok()
            .and_then(|s| s.secret_string)
    }

    async fn stored_credentials(&self) -> Result<Credentials, CredentialsError> {
        self.secrets
            .get(&self.org, &self.project, None, true)
            .await
            .map(|c| (*c).clone())
    }

    /// Audit events the API put on the events queue.
    async fn audit_events(&self) -> Vec<Value> {
        audit_log_tests::take_all(&self.sqs, &self.queue_url)
            .await
            .iter()
            .map(|body| serde_json::from_str(body).unwrap())
            .collect()
    }

    async fn mount(&self, mock: Mock) {
        mock.mount(&self.datadog).await;
    }
}

fn cloudwatch() -> Value {
    json!({"provider": "cloudwatch", "name": "prod-audit", "cloudwatch": {"role_arn": ROLE_ARN, "region": "us-west-2"}})
}

fn datadog(key: Option<&str>) -> Value {
    let mut v =
        json!({"provider": "datadog", "name": "dd-eu", "datadog": {"site": "datadoghq.eu"}});
    if let Some(key) = key {
        v["datadog"]["api_key"] = json!(key);
    }
    v
}

impl World {
    /// What the events table holds: each item's message id and event.
    async fn stored_items(&self) -> Vec<(String, Value)> {
        let dynamodb = aws_sdk_dynamodb::Client::new(&self.aws);
        let scan = dynamodb
            .scan()
            .table_name(&self.events_table)
            .send()
            .await
            .unwrap();
        scan.items()
            .iter()
            .map(|item| {
                let key = audit_log::store::StoredKey::of(item).unwrap();
                let event = audit_log::store::event_json(item).unwrap();
                (key.message_id, serde_json::from_str(&event).unwrap())
            })
            .collect()
    }
}

impl World {
    /// The events queue deleted: it refuses every message from then on.
    async fn lose_events_queue(&self) {
        self.sqs
            .delete_queue()
            .queue_url(&self.queue_url)
            .send()
            .await
            .unwrap();
    }
}

/// The `i`th event (0 to 9) a lane owes since `at_ms`, kept a day after.
fn owed(i: u32, at_ms: i64) -> audit_log::lane::Owed {
    audit_log::lane::Owed {
        event: audit_log::store::StoredKey {
            sort_key: format!("2026-11-30T10:00:0{i}.000000000Z#m{i}"),
            message_id: format!("m{i}"),
            expires_at: at_ms / 1000 + 86_400,
        },
        owed_at_ms: at_ms,
        bytes: 1_000,
    }
}

/// A lane retrying since `since_ms` after Datadog answered 503, its next call 40 seconds after
/// `now_ms`.
fn retrying(now_ms: i64, since_ms: i64) -> audit_log::lane::Lane {
    audit_log::lane::Lane {
        state: audit_log::lane::LaneState::Retrying,
        attempt: Some("a1".into()),
        next_attempt_at: Some(now_ms + 40_000),
        interval_ms: 40_000,
        since: Some(since_ms),
        reason: Some("Datadog answered HTTP 503".into()),
        ..audit_log::lane::Lane::default()
    }
}

fn validate() -> wiremock::MockBuilder {
    Mock::given(method("GET")).and(path("/api/v1/validate"))
}

fn intake() -> wiremock::MockBuilder {
    Mock::given(method("POST")).and(path("/api/v2/logs"))
}

/// A clock for the api held at the start of the current minute, moved only by the test.
fn minute_clock() -> Arc<ManualClock> {
    let now = OffsetDateTime::now_utc();
    let start = now.replace_second(0).and_then(|t| t.replace_nanosecond(0));
    Arc::new(ManualClock::at(start.expect("the minute's start")))
}

fn event_at(org: &str, project: &str, t: OffsetDateTime, n: usize) -> Value {
    let mut v: Value = serde_json::from_str(audit_log::fixtures::SEED_EVENTS[n % 5].1).unwrap();
    v["organization_id"] = json!(org);
    v["project_id"] = json!(project);
    v["timestamp"] = json!(t.format(&Rfc3339).unwrap());
    v["n"] = json!(n);
    v
}

impl World {
    async fn store(&self, events: &[Value]) {
        let batch: Vec<(String, Value)> = events.iter().map(|e| (unique("m"), e.clone())).collect();
        self.store_as(&batch).await;
    }

    /// Stores each event as the message of the id given with it.
    async fn store_as(&self, events: &[(String, Value)]) {
        let batch: Vec<(String, String)> = events
            .iter()
            .map(|(id, e)| (id.clone(), e.to_string()))
            .collect();
        self.store_texts(&batch).await;
    }

    /// Stores each body, as sent, as the message of the id given with it.
    async fn store_texts(&self, batch: &[(String, String)]) {
        let mut records = sqs_batch(batch.iter().map(|(id, b)| (id.clone(), b.as_str()))).records;
        // As SQS would: what capture hands back (its deadline passed on a slow emulator) comes
        // again, and capture stores each message once however often it comes.
        for _ in 0..10 {
            let r = self
                .capture
                .capture(records.clone(), Instant::now() + Duration::from_secs(10))
                .await
                .unwrap();
            let failed: BTreeSet<String> = audit_log_tests::failed_ids(&r);
            if failed.is_empty() {
                return;
            }
            records.retain(|m| m.message_id.as_ref().is_some_and(|id| failed.contains(id)));
        }
        panic!(
            "capture did not store {} events in ten tries",
            records.len()
        );
    }

    /// Stores events as capture wrote them before events were packed (issue 16), alternately
    /// as text and gzipped.
    async fn store_as_before(&self, events: &[Value]) {
        let events: Vec<(String, Value)> =
            events.iter().map(|e| (unique("m"), e.clone())).collect();
        let dynamodb = aws_sdk_dynamodb::Client::new(&self.aws);
        audit_log_tests::store_as_before(&dynamodb, &self.events_table, &events).await;
    }

    /// `n` events of this project, `step` apart, the first `ago` before now; `n` field = index.
    fn series(&self, n: usize, ago: Duration, step: Duration) -> Vec<Value> {
        let start = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - ago;
        (0..n)
            .map(|i| event_at(&self.org, &self.project, start + step * i as u32, i))
            .collect()
    }

    async fn list(&self, query: &[(&str, &str)]) -> Reply {
        self.call_as(Some(&self.org), &self.org, "GET", "", query, &[], None)
            .await
    }

    /// Lists the project's stored events (ten at most) as its failures, as a lane whose
    /// destination failed them does: their keys.
    async fn fail_all_stored(&self) -> Vec<audit_log::store::StoredKey> {
        let stored = self
            .events
            .page(
                &[audit_log::store::partition_key(&self.org, &self.project)],
                &audit_log::store::PageRequest::new(10, usize::MAX, 0),
            )
            .await
            .unwrap();
        self.configs
            .record_failures(
                &self.org,
                &self.project,
                &stored.keys,
                "Datadog answered HTTP 503",
                time::OffsetDateTime::now_utc(),
            )
            .await
            .unwrap();
        stored.keys
    }

    /// A page of the project's failures, as a member of its organization.
    async fn failures(&self, query: &[(&str, &str)]) -> Reply {
        self.call_as(
            Some(&self.org),
            &self.org,
            "GET",
            "/streaming/failures",
            query,
            &[],
            None,
        )
        .await
    }
}

/// The route a reply's `Location` leads to from the request to `suffix`, resolved as a client
/// resolves a relative reference, as a suffix of the same base path.
fn followed(suffix: &str, reply: &Reply) -> String {
    let location = reply.headers[http::header::LOCATION].to_str().unwrap();
    let request = url::Url::parse(&format!("https://api.test/base{suffix}")).unwrap();
    let target = request.join(location).unwrap();
    target.path().strip_prefix("/base").unwrap().to_owned()
}

/// The `n` field of each event of a page.
fn ns(reply: &Reply) -> Vec<i64> {
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["n"].as_i64().unwrap())
        .collect()
}

/// The listings that page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    Project,
    Organization,
    Projects,
}

/// Every page of a listing, followed to the end.
async fn pages_of(w: &World, listing: Listing, query: &[(&str, &str)]) -> Vec<Reply> {
    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let mut q = query.to_vec();
        if let Some(c) = &cursor {
            q.push(("cursor", c.as_str()));
        }
        let page = match listing {
            Listing::Project => w.list(&q).await,
            Listing::Organization => w.call_organization(Some(&w.org), &w.org, "", &q).await,
            Listing::Projects => {
                w.call_organization(Some(&w.org), &w.org, "/projects", &q)
                    .await
            }
        };
        assert_eq!(page.status, 200, "{}", page.body);
        cursor = page.body["next_cursor"].as_str().map(str::to_owned);
        pages.push(page);
        if cursor.is_none() {
            return pages;
        }
        assert!(pages.len() < 1_000, "paging must end");
    }
}

/// Every page of a project's (or the organization's) events: the `n` of every event, and the
/// pages.
async fn all_pages(
    w: &World,
    organization_wide: bool,
    query: &[(&str, &str)],
) -> (Vec<i64>, Vec<Reply>) {
    let listing = if organization_wide {
        Listing::Organization
    } else {
        Listing::Project
    };
    let pages = pages_of(w, listing, query).await;
    (pages.iter().flat_map(ns).collect(), pages)
}

/// `n` from `top` down to 0 that `keep` keeps: newest first, as a listing answers.
fn newest_first(top: i64, keep: impl Fn(i64) -> bool) -> Vec<i64> {
    (0..=top).rev().filter(|n| keep(*n)).collect()
}

fn every_route() -> Vec<(&'static str, &'static str, Option<String>)> {
    vec![
        ("GET", "", None),
        ("GET", "/streaming", None),
        (
            "PUT",
            "/streaming",
            Some(datadog(Some(ROTATED)).to_string()),
        ),
        ("DELETE", "/streaming", None),
        (
            "POST",
            "/streaming/test",
            Some(datadog(Some(ROTATED)).to_string()),
        ),
        ("GET", "/streaming/tests", None),
        ("GET", "/streaming/failures", None),
        (
            "POST",
            "/streaming/replay",
            Some(
                json!({"since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"})
                    .to_string(),
            ),
        ),
        ("GET", "/streaming/replays/0123", None),
    ]
}

impl World {
    async fn recent_tests(&self) -> Vec<Value> {
        self.call("GET", "/streaming/tests", None).await.body["tests"]
            .as_array()
            .unwrap()
            .clone()
    }
}
