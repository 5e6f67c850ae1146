//! api against the local AWS emulator, Datadog through a local stand-in. Every response any
//! test receives is held to `functions/api/openapi.yaml`.

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
        let body = match &response.body {
            Some(Body::Text(t)) => Some(serde_json::from_str::<Value>(t).expect("JSON body")),
            None | Some(Body::Empty) => None,
            Some(other) => panic!("unexpected body {other:?}"),
        };
        if let Some(body) = &body {
            audit_log_tests::watch_external_ids(body);
        }
        self.openapi
            .check(r.method, template, status, body.as_ref());
        Reply {
            status,
            body: body.unwrap_or(Value::Null),
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

// ---- GET / PUT / DELETE /streaming ----------------------------------------------------------

#[tokio::test]
async fn before_anything_is_saved_the_view_shows_who_to_trust_and_no_destination() {
    let w = World::new().await;
    let first = w.get().await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body["destination"], Value::Null);
    assert_eq!(
        first.body["aws_account_id"], "123456789012",
        "the emulator's own account"
    );
    assert_eq!(first.body["version"], 0);
    assert_eq!(first.body["health"]["status"], "unknown");
    let external_id = first.body["external_id"].as_str().unwrap().to_owned();
    assert_eq!(external_id.len(), 32);
    assert_eq!(
        w.get().await.body["external_id"],
        external_id.as_str(),
        "stable"
    );
    assert_eq!(first.headers.get("etag").unwrap(), "\"0\"");
}

#[tokio::test]
async fn concurrent_first_requests_agree_on_one_external_id() {
    let w = World::new().await;
    let replies = futures_join(&w).await;
    let ids: BTreeSet<String> = replies
        .iter()
        .map(|r| r.body["external_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1);
}

async fn futures_join(w: &World) -> Vec<Reply> {
    let (a, b, c, d) = tokio::join!(w.get(), w.get(), w.get(), w.get());
    vec![a, b, c, d]
}

#[tokio::test]
async fn organizations_get_different_external_ids() {
    let w = World::new().await;
    let mine = w.get().await.body["external_id"].clone();
    let other = unique("other-org");
    let theirs = w
        .call_as(Some(&other), &other, "GET", "/streaming", &[], &[], None)
        .await;
    assert_ne!(theirs.body["external_id"], mine);
}

#[tokio::test]
async fn saving_cloudwatch_stores_the_role_with_the_organizations_external_id() {
    let w = World::new().await;
    let external_id = w.get().await.body["external_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let saved = w.put(cloudwatch()).await;
    assert_eq!(saved.status, 200);
    assert_eq!(
        saved.body["destination"],
        json!({"provider": "cloudwatch", "name": "prod-audit", "cloudwatch": {"role_arn": ROLE_ARN, "region": "us-west-2"}})
    );
    assert_eq!(saved.body["version"], 1);
    assert_eq!(saved.body["external_id"], external_id.as_str());
    match w.stored_credentials().await.unwrap() {
        Credentials::Cloudwatch {
            role_arn,
            external_id: stored,
        } => {
            assert_eq!(role_arn, ROLE_ARN);
            assert_eq!(stored.expose_secret(), external_id);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.get().await.body["destination"], saved.body["destination"]);
    let audit = w.audit_events().await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["description"], "Created streaming configuration");
    assert_eq!(audit[0]["action"], "create");
    assert_eq!(audit[0]["actor"]["principal_id"], "user-7");
    assert_eq!(audit[0]["organization_id"], w.org.as_str());
    audit_log::AuditEvent::from_value(audit[0].clone()).expect("capture accepts it");
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

#[tokio::test]
async fn a_configuration_changes_audit_event_the_queue_refuses_is_stored_directly() {
    // GIVEN an events queue that refuses messages (gone)
    let w = World::new().await;
    w.lose_events_queue().await;
    // WHEN a destination is saved
    assert_eq!(w.put(datadog(Some(KEY))).await.status, 200);
    // THEN its audit event is stored all the same, as capture would have stored it, under an
    // id of the service's, and listed with the project's events
    let stored = w.stored_items().await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let (id, event) = &stored[0];
    assert!(id.starts_with("service-"), "{id}");
    assert_eq!(event["description"], "Created streaming configuration");
    let listed = w.list(&[]).await;
    assert_eq!(
        listed.body["events"][0]["description"],
        "Created streaming configuration"
    );
    // AND the organization's listing finds its project
    let projects = w
        .call_organization(Some(&w.org), &w.org, "/projects", &[])
        .await;
    assert!(
        projects.body.to_string().contains(&w.project),
        "{}",
        projects.body
    );
}

#[test]
fn a_change_whose_audit_event_neither_queue_nor_table_takes_is_logged_for_its_alarm() {
    let (reply, logs) = with_captured_logs(|| async {
        // GIVEN an events queue and an events table that are both gone
        let w = World::new().await;
        w.lose_events_queue().await;
        aws_sdk_dynamodb::Client::new(&w.aws)
            .delete_table()
            .table_name(&w.events_table)
            .send()
            .await
            .unwrap();
        // WHEN a destination is saved
        w.put(datadog(Some(KEY))).await
    });
    // THEN the change stands, and the line the template's metric filter counts is logged
    assert_eq!(reply.status, 200, "{}", reply.body);
    let lost: Vec<&Value> = logs
        .iter()
        .filter(|l| l["fields"]["message"] == audit_log_api::AUDIT_EVENT_LOST)
        .collect();
    assert_eq!(lost.len(), 1, "{logs:?}");
    assert_eq!(lost[0]["level"], "ERROR");
    assert_eq!(lost[0]["fields"]["action"], "create");
}

#[tokio::test]
async fn saving_the_same_destination_again_adds_no_secret_version() {
    let w = World::new().await;
    let secret = w.secrets.secret_name(&w.org, &w.project);
    let versions = || async {
        aws_sdk_secretsmanager::Client::new(&w.aws)
            .list_secret_version_ids()
            .secret_id(&secret)
            .include_deprecated(true)
            .send()
            .await
            .unwrap()
            .versions
            .unwrap_or_default()
            .len()
    };
    assert_eq!(w.put(cloudwatch()).await.status, 200);
    let saved = versions().await;
    // Saved again as it is, then renamed: the version saved holds them already.
    let mut renamed = cloudwatch();
    renamed["name"] = json!("prod-audit-2");
    for body in [cloudwatch(), renamed] {
        assert_eq!(w.put(body).await.status, 200);
    }
    assert_eq!(versions().await, saved);
    // Another role is another version.
    let mut other = cloudwatch();
    other["cloudwatch"]["role_arn"] = json!("arn:aws:iam::210987654321:role/other");
    assert_eq!(w.put(other).await.status, 200);
    assert_eq!(versions().await, saved + 1);
    assert!(matches!(
        w.stored_credentials().await.unwrap(),
        Credentials::Cloudwatch { role_arn, .. } if role_arn.ends_with("role/other")
    ));
}

#[tokio::test]
async fn switching_provider_and_rotating_the_key_leave_no_old_credential_behind() {
    let w = World::new().await;
    w.put(cloudwatch()).await;
    let dd = w.put(datadog(Some(KEY))).await;
    assert_eq!(dd.status, 200);
    assert_eq!(
        dd.body["destination"]["datadog"],
        json!({"site": "datadoghq.eu", "api_key_last4": &KEY[KEY.len() - 4..]})
    );
    assert_eq!(dd.body["version"], 2);
    assert!(
        matches!(w.stored_credentials().await.unwrap(), Credentials::Datadog { ref api_key } if api_key.expose_secret() == KEY)
    );

    let rotated = w.put(datadog(Some(ROTATED))).await;
    assert_eq!(
        rotated.body["destination"]["datadog"]["api_key_last4"],
        "3210"
    );
    assert!(
        matches!(w.stored_credentials().await.unwrap(), Credentials::Datadog { ref api_key } if api_key.expose_secret() == ROTATED)
    );

    // The replaced versions cannot be read back by label.
    let name = w.secrets.secret_name(&w.org, &w.project);
    let previous = aws_sdk_secretsmanager::Client::new(&w.aws)
        .get_secret_value()
        .secret_id(name)
        .version_stage("AWSPREVIOUS")
        .send()
        .await;
    assert!(previous.is_err(), "AWSPREVIOUS still readable");

    let back = w.put(cloudwatch()).await;
    assert!(back.body["destination"].get("datadog").is_none());
    assert!(matches!(
        w.stored_credentials().await.unwrap(),
        Credentials::Cloudwatch { .. }
    ));
    let descriptions: Vec<String> = w
        .audit_events()
        .await
        .iter()
        .map(|e| e["description"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        descriptions,
        [
            "Created streaming configuration",
            "Updated streaming configuration",
            "Updated streaming configuration",
            "Updated streaming configuration"
        ]
    );
}

#[tokio::test]
async fn a_datadog_put_without_a_key_keeps_the_saved_one_only_when_it_is_datadogs() {
    let w = World::new().await;
    let refused = w.put(datadog(None)).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["error"]["code"], "missing_field");
    w.put(datadog(Some(KEY))).await;
    let mut renamed = datadog(None);
    renamed["name"] = json!("dd-renamed");
    let kept = w.put(renamed).await;
    assert_eq!(kept.status, 200);
    assert_eq!(kept.body["destination"]["name"], "dd-renamed");
    assert_eq!(
        kept.body["destination"]["datadog"]["api_key_last4"],
        &KEY[KEY.len() - 4..]
    );
    assert!(
        matches!(w.stored_credentials().await.unwrap(), Credentials::Datadog { ref api_key } if api_key.expose_secret() == KEY)
    );
    w.put(cloudwatch()).await;
    assert_eq!(w.put(datadog(None)).await.status, 400);
}

#[tokio::test]
async fn a_stale_if_match_is_refused_with_412_and_changes_nothing() {
    let w = World::new().await;
    w.put(cloudwatch()).await;
    let text = datadog(Some(KEY)).to_string();
    let stale = w.conditional("PUT", "\"7\"", Some(&text)).await;
    assert_eq!(stale.status, 412);
    assert_eq!(stale.body["error"]["code"], "version_mismatch");
    assert!(matches!(
        w.stored_credentials().await.unwrap(),
        Credentials::Cloudwatch { .. }
    ));
    let fresh = w.conditional("PUT", "\"1\"", Some(&text)).await;
    assert_eq!(fresh.status, 200);
    let anything = w.conditional("PUT", "*", Some(&text)).await;
    assert_eq!(anything.status, 200);
    // A tag that names no version is a tag that does not match, as HTTP has it.
    let foreign = w.conditional("PUT", "\"yesterday\"", Some(&text)).await;
    assert_eq!(foreign.status, 412);
    assert_eq!(foreign.body["error"]["code"], "version_mismatch");
    let listed = w.conditional("PUT", "\"9\", \"3\"", Some(&text)).await;
    assert_eq!(listed.status, 200);
    let stale_delete = w.conditional("DELETE", "1", None).await;
    assert_eq!(stale_delete.status, 412);
    assert_eq!(w.get().await.body["version"], 4);
}

#[tokio::test]
async fn a_version_read_before_a_delete_never_matches_the_configuration_saved_after() {
    // GIVEN someone read the configuration at version 2
    let w = World::new().await;
    w.put(cloudwatch()).await;
    assert_eq!(w.put(datadog(Some(KEY))).await.body["version"], 2);
    // WHEN another deletes it, then saves twice
    assert_eq!(w.conditional("DELETE", "\"2\"", None).await.status, 204);
    assert_eq!(w.get().await.body["version"], 0);
    assert_eq!(w.put(cloudwatch()).await.body["version"], 3);
    assert_eq!(w.put(cloudwatch()).await.body["version"], 4);
    // THEN the first's save and delete, conditional on what it read, are refused
    let text = datadog(Some(KEY)).to_string();
    for (method, body) in [("PUT", Some(text.as_str())), ("DELETE", None)] {
        let stale = w.conditional(method, "\"2\"", body).await;
        assert_eq!(stale.status, 412, "{method}: {}", stale.body);
    }
    assert!(matches!(
        w.stored_credentials().await.unwrap(),
        Credentials::Cloudwatch { .. }
    ));
    // AND an unconditional delete, then a save, still count on
    assert_eq!(w.call("DELETE", "/streaming", None).await.status, 204);
    assert_eq!(w.put(cloudwatch()).await.body["version"], 5);
}

#[tokio::test]
async fn no_configuration_is_saved_in_place_of_none_while_a_deletion_is_under_way() {
    use audit_log::streaming::{Configurations, DELETION_MARK_LAPSE};
    // GIVEN two deletions of the project under way (each between its steps)
    let clock = minute_clock();
    let w = World::with({
        let clock = clock.clone();
        move |api| api.with_clock(clock)
    })
    .await;
    let now = clock.now();
    let (org, project) = (w.org.as_str(), w.project.as_str());
    let first = w.configs.begin_deletion(org, project, now).await.unwrap();
    let second = w.configs.begin_deletion(org, project, now).await.unwrap();
    // WHEN a save comes, THEN it is told to come back, and nothing of it is saved
    let refused = w.put(cloudwatch()).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "credentials_being_deleted");
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(w.get().await.body["version"], 0);
    // AND the later deletion ending first still leaves the earlier one's mark
    w.configs.end_deletion(org, project, &second).await.unwrap();
    assert_eq!(w.put(cloudwatch()).await.status, 429);
    // AND once the last is over, the same save lands
    w.configs.end_deletion(org, project, &first).await.unwrap();
    assert_eq!(w.put(cloudwatch()).await.status, 200);
    // AND a deletion cut short 40 seconds ago has saves come back when its mark lapses
    assert_eq!(w.call("DELETE", "/streaming", None).await.status, 204);
    let cut_short = w
        .configs
        .begin_deletion(org, project, clock.now() - time::Duration::seconds(40))
        .await
        .unwrap();
    let refused = w.put(cloudwatch()).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.headers["retry-after"], "20");
    // AND once it lapsed, the next deletion starts afresh and leaves no mark behind
    w.configs
        .end_deletion(org, project, &cut_short)
        .await
        .unwrap();
    let lapsed = now - DELETION_MARK_LAPSE - time::Duration::seconds(1);
    w.configs
        .begin_deletion(org, project, lapsed)
        .await
        .unwrap();
    assert_eq!(w.call("DELETE", "/streaming", None).await.status, 204);
    let saved = w.put(cloudwatch()).await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(saved.body["version"], 2);
}

#[tokio::test]
async fn the_organizations_saved_destinations_are_counted_and_no_other_item() {
    use audit_log::destination::{DatadogSettings, DatadogSite, Destination};
    use audit_log::streaming::{Configurations, NewConfig};
    let w = World::new().await;
    // GIVEN a destination saved through the api (with the organization's own items beside it:
    // its External ID, its rate limit's counter, a connection test)
    assert_eq!(w.put(cloudwatch()).await.status, 200);
    w.call("POST", "/streaming/test", None).await;
    // AND two more of its projects, and one of another organization's
    let other = unique("org-other");
    let now = OffsetDateTime::now_utc();
    for (org, project) in [(&w.org, "second"), (&w.org, "third"), (&other, "first")] {
        let new = NewConfig {
            name: "dd".into(),
            destination: Destination::Datadog(DatadogSettings {
                site: DatadogSite::Us1,
            }),
            api_key_last4: None,
            secret_version: None,
            same_destination: false,
            save: NewConfig::new_save(),
        };
        w.configs.save(org, project, new, 0, now).await.unwrap();
    }
    // THEN the organization has three, the other one
    assert_eq!(w.configs.destinations(&w.org, 1_000).await.unwrap(), 3);
    assert_eq!(w.configs.destinations(&other, 1_000).await.unwrap(), 1);
    // AND a deleted one is no longer counted
    assert_eq!(w.call("DELETE", "/streaming", None).await.status, 204);
    assert_eq!(w.configs.destinations(&w.org, 1_000).await.unwrap(), 2);
}

#[tokio::test]
async fn a_delete_of_a_project_never_saved_leaves_no_item_behind() {
    let w = World::new().await;
    let removed_items = || async {
        let client = aws_sdk_dynamodb::Client::new(&w.aws);
        audit_log_tests::scan_all(&client, &w.config_table)
            .await
            .into_iter()
            .filter(|item| {
                item.get("sk")
                    .and_then(|sk| sk.as_s().ok())
                    .is_some_and(|sk| sk.starts_with("removed#"))
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(w.call("DELETE", "/streaming", None).await.status, 204);
    assert!(removed_items().await.is_empty());
    // A deleted configuration's version stays, for the next one to count on from.
    w.put(cloudwatch()).await;
    assert_eq!(w.call("DELETE", "/streaming", None).await.status, 204);
    let kept = removed_items().await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["version"].as_n().unwrap(), "1");
}

#[tokio::test]
async fn each_invalid_body_gets_a_400_that_names_the_problem_and_causes_nothing() {
    let w = World::new().await;
    let cases: Vec<(String, &str)> = vec![
        ("{".into(), "invalid_json"),
        ("[]".into(), "invalid_body"),
        (json!({"provider": "cloudwatch", "name": "x", "cloudwatch": {"role_arn": ROLE_ARN, "region": "us-west-2", "external_id": "mine"}}).to_string(), "external_id_not_settable"),
        (json!({"provider": "cloudwatch", "name": "x", "external_id": "mine", "cloudwatch": {"role_arn": ROLE_ARN, "region": "us-west-2"}}).to_string(), "external_id_not_settable"),
        (json!({"provider": "cloudwatch", "name": "x", "extra": 1, "cloudwatch": {"role_arn": ROLE_ARN, "region": "us-west-2"}}).to_string(), "unknown_field"),
        (json!({"provider": "cloudwatch", "name": "x", "cloudwatch": {"role_arn": "arn:aws:iam::1:role/x", "region": "us-west-2"}}).to_string(), "invalid_field"),
        (json!({"provider": "cloudwatch", "name": "x", "cloudwatch": {"role_arn": ROLE_ARN, "region": "moon-1"}}).to_string(), "invalid_field"),
        (json!({"provider": "datadog", "name": "x", "datadog": {"site": "evil.example.com", "api_key": KEY}}).to_string(), "invalid_field"),
        (json!({"provider": "datadog", "name": "x", "datadog": {"site": "datadoghq.com", "api_key": "short"}}).to_string(), "invalid_field"),
        (json!({"provider": "datadog", "name": "", "datadog": {"site": "datadoghq.com", "api_key": KEY}}).to_string(), "invalid_field"),
        (json!({"provider": "datadog", "name": "x".repeat(200), "datadog": {"site": "datadoghq.com", "api_key": KEY}}).to_string(), "invalid_field"),
        (json!({"provider": "splunk", "name": "x"}).to_string(), "invalid_field"),
        (json!({"name": "x"}).to_string(), "missing_field"),
    ];
    for (body, code) in &cases {
        for (method, suffix) in [("PUT", "/streaming"), ("POST", "/streaming/test")] {
            let reply = w
                .call_as(Some(&w.org), &w.org, method, suffix, &[], &[], Some(body))
                .await;
            assert_eq!(reply.status, 400, "{method} {body}");
            assert_eq!(
                reply.body["error"]["code"], *code,
                "{method} {body}: {}",
                reply.body
            );
        }
    }
    assert_eq!(w.get().await.body["version"], 0, "nothing saved");
    assert!(matches!(
        w.stored_credentials().await,
        Err(CredentialsError::NotFound)
    ));
    assert!(
        w.datadog.received_requests().await.unwrap().is_empty(),
        "no outbound call"
    );
    assert!(w.audit_events().await.is_empty());
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let w = World::new().await;
    let mut body = cloudwatch();
    body["name"] = json!("x".repeat(100 * 1024));
    // Routes that take no body read it too, to refuse one.
    for (method, suffix) in [
        ("PUT", "/streaming"),
        ("POST", "/streaming/test"),
        ("POST", "/streaming/pause"),
        ("POST", "/streaming/resume"),
        ("DELETE", "/streaming"),
    ] {
        let reply = w.call(method, suffix, Some(body.clone())).await;
        assert_eq!(reply.status, 413, "{method} {suffix}");
        assert_eq!(reply.body["error"]["code"], "payload_too_large");
    }
}

#[tokio::test]
async fn delete_stops_streaming_and_removes_the_secret() {
    let w = World::new().await;
    w.put(datadog(Some(KEY))).await;
    let deleted = w.call("DELETE", "/streaming", None).await;
    assert_eq!(deleted.status, 204);
    let view = w.get().await;
    assert_eq!(view.body["destination"], Value::Null);
    assert_eq!(view.body["version"], 0);
    assert!(matches!(
        w.stored_credentials().await,
        Err(CredentialsError::NotFound)
    ));
    let descriptions: Vec<Value> = w
        .audit_events()
        .await
        .iter()
        .map(|e| e["description"].clone())
        .collect();
    assert_eq!(
        descriptions,
        [
            json!("Created streaming configuration"),
            json!("Deleted streaming configuration")
        ]
    );
    assert_eq!(
        w.call("DELETE", "/streaming", None).await.status,
        204,
        "idempotent"
    );
}

// ---- POST /streaming/test -------------------------------------------------------------------

#[tokio::test]
async fn testing_the_saved_cloudwatch_destination_writes_to_the_test_log_group() {
    let w = World::new().await;
    w.put(cloudwatch()).await;
    let reply = w.call("POST", "/streaming/test", None).await;
    assert_eq!(reply.status, 200);
    let group = format!("{}/packer/audit-logs-test", w.log_group_prefix);
    assert_eq!(reply.body["success"], true, "{}", reply.body);
    assert_eq!(reply.body["provider"], "cloudwatch");
    assert_eq!(reply.body["log_group"], group.as_str());

    // In the customer's account (the role's), one test event.
    let logs = audit_log_tests::customer_logs(&w.aws, ROLE_ARN, "us-west-2").await;
    let events = logs
        .get_log_events()
        .log_group_name(&group)
        .log_stream_name(&w.project)
        .send()
        .await
        .unwrap()
        .events
        .unwrap_or_default();
    assert_eq!(events.len(), 1);
    let message: Value = serde_json::from_str(events[0].message.as_deref().unwrap()).unwrap();
    assert_eq!(message["description"], "Test connection");
    assert_eq!(message["organization_id"], w.org.as_str());
}

#[tokio::test]
async fn a_role_that_refuses_the_service_is_reported_in_words_to_act_on() {
    let refused = aws_smithy_mocks::mock!(aws_sdk_sts::Client::assume_role).then_http_response(|| {
        aws_smithy_runtime_api::http::Response::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(403).unwrap(),
            aws_smithy_types::body::SdkBody::from(
                "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>no</Message></Error></ErrorResponse>",
            ),
        )
    });
    let sts = aws_smithy_mocks::mock_client!(
        aws_sdk_sts,
        aws_smithy_mocks::RuleMode::MatchAny,
        [&refused]
    );
    let w = World::with(|api| api.with_customer_sts(sts)).await;
    let reply = w.call("POST", "/streaming/test", Some(cloudwatch())).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["success"], false);
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.contains("trust policy")
            && message.contains("123456789012")
            && message.contains(ROLE_ARN),
        "{message}"
    );
    let external_id = w.get().await.body["external_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!message.contains(&external_id));
}

fn validate() -> wiremock::MockBuilder {
    Mock::given(method("GET")).and(path("/api/v1/validate"))
}

fn intake() -> wiremock::MockBuilder {
    Mock::given(method("POST")).and(path("/api/v2/logs"))
}

/// Datadog's intake answers requests with `key` with `status`.
async fn intake_answers(w: &World, key: &str, status: u16) {
    w.mount(
        intake()
            .and(header("DD-API-KEY", key))
            .respond_with(ResponseTemplate::new(status)),
    )
    .await;
}

#[tokio::test]
async fn testing_datadog_validates_the_key_and_sends_a_test_log() {
    let w = World::new().await;
    w.mount(
        validate()
            .and(header("DD-API-KEY", KEY))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"valid": true}))),
    )
    .await;
    intake_answers(&w, KEY, 202).await;
    let reply = w
        .call("POST", "/streaming/test", Some(datadog(Some(KEY))))
        .await;
    assert_eq!(reply.body["success"], true, "{}", reply.body);
    assert_eq!(reply.body["provider"], "datadog");
    assert!(reply.body.get("log_group").is_none());
    assert_eq!(w.datadog.received_requests().await.unwrap().len(), 2);
    assert_eq!(w.get().await.body["version"], 0, "testing saves nothing");
    // A test needs no name (a form is often tested before it is named); a save does.
    let mut unnamed = datadog(Some(KEY));
    unnamed.as_object_mut().unwrap().remove("name");
    let reply = w
        .call("POST", "/streaming/test", Some(unnamed.clone()))
        .await;
    assert_eq!(reply.body["success"], true, "{}", reply.body);
    assert_eq!(w.datadog.received_requests().await.unwrap().len(), 4);
    let refused = w.call("PUT", "/streaming", Some(unnamed)).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "missing_field");
    assert_eq!(w.get().await.body["version"], 0);
}

#[tokio::test]
async fn a_receiver_of_logs_only_is_tested_by_the_test_log() {
    // Datadog's validate call is unknown at the endpoint (a receiver that takes
    // `POST /api/v2/logs` alone): the log decides, either way.
    let w = World::new().await;
    intake_answers(&w, KEY, 202).await;
    let reply = w
        .call("POST", "/streaming/test", Some(datadog(Some(KEY))))
        .await;
    assert_eq!(reply.body["success"], true, "{}", reply.body);
    assert_eq!(
        reply.body["message"],
        "Datadog accepted a test log on datadoghq.eu."
    );
    let other = "0123456789abcdef0123456789abcdef";
    intake_answers(&w, other, 403).await;
    let reply = w
        .call("POST", "/streaming/test", Some(datadog(Some(other))))
        .await;
    assert_eq!(reply.body["success"], false, "{}", reply.body);
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.starts_with("The test log was not accepted") && !message.contains(other),
        "{message}"
    );
}

#[tokio::test]
async fn a_test_without_a_key_uses_the_saved_one() {
    let w = World::new().await;
    w.put(datadog(Some(KEY))).await;
    w.mount(
        validate()
            .and(header("DD-API-KEY", KEY))
            .respond_with(ResponseTemplate::new(200)),
    )
    .await;
    intake_answers(&w, KEY, 202).await;
    let unsaved = w.call("POST", "/streaming/test", Some(datadog(None))).await;
    assert_eq!(unsaved.body["success"], true, "{}", unsaved.body);
    let saved = w.call("POST", "/streaming/test", None).await;
    assert_eq!(saved.body["success"], true, "{}", saved.body);
    // Clients that always send JSON say "nothing" as `{}` or `null`: the saved one is tested.
    for nothing in [json!({}), Value::Null] {
        let saved = w.call("POST", "/streaming/test", Some(nothing)).await;
        assert_eq!(saved.status, 200, "{}", saved.body);
        assert_eq!(saved.body["provider"], "datadog", "{}", saved.body);
    }
}

#[tokio::test]
async fn a_key_datadog_refuses_is_a_failed_test_not_an_error() {
    let w = World::new().await;
    w.mount(validate().respond_with(
        ResponseTemplate::new(403).set_body_string("{\"errors\":[\"Forbidden sentinel body\"]}"),
    ))
    .await;
    let reply = w
        .call("POST", "/streaming/test", Some(datadog(Some(KEY))))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["success"], false);
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.contains("API key") && message.contains("datadoghq.eu"),
        "{message}"
    );
    assert!(!message.contains(KEY) && !message.contains("sentinel"));
}

#[tokio::test]
async fn an_unreachable_datadog_is_a_failed_test_not_an_error() {
    // Bound and never listening, for the whole test: connections to it are refused, and no
    // other test's server can be given its port meanwhile.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = socket.local_addr().unwrap().port();
    let w = World::with(move |api| {
        api.with_datadog(DatadogClient::with_timeout(
            Some(format!("http://127.0.0.1:{closed}")),
            Duration::from_secs(1),
        ))
    })
    .await;
    let reply = w
        .call("POST", "/streaming/test", Some(datadog(Some(KEY))))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["success"], false);
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("Could not reach"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn testing_with_nothing_saved_and_no_body_is_404() {
    let w = World::new().await;
    let reply = w.call("POST", "/streaming/test", None).await;
    assert_eq!(reply.status, 404);
}

/// A clock for the api held at the start of the current minute, moved only by the test.
fn minute_clock() -> Arc<ManualClock> {
    let now = OffsetDateTime::now_utc();
    let start = now.replace_second(0).and_then(|t| t.replace_nanosecond(0));
    Arc::new(ManualClock::at(start.expect("the minute's start")))
}

#[tokio::test]
async fn more_than_ten_tests_a_minute_are_refused_with_429() {
    // Eleven tests a second apart, all in one minute of the api's clock.
    let clock = minute_clock();
    let w = World::with({
        let clock = clock.clone();
        move |api| api.with_clock(clock)
    })
    .await;
    w.mount(validate().respond_with(ResponseTemplate::new(200)))
        .await;
    w.mount(intake().respond_with(ResponseTemplate::new(202)))
        .await;
    for i in 0..10 {
        clock.advance(Duration::from_secs(1));
        let reply = w
            .call("POST", "/streaming/test", Some(datadog(Some(KEY))))
            .await;
        assert_eq!(reply.status, 200, "test {i}");
    }
    clock.advance(Duration::from_secs(1));
    let limited = w
        .call("POST", "/streaming/test", Some(datadog(Some(KEY))))
        .await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.body["error"]["code"], "rate_limited");
    let retry_after: u64 = limited
        .headers
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        retry_after, 49,
        "the minute's window closes 49 s after the eleventh test"
    );
    let other = unique("other-org");
    let theirs = w
        .call_as(
            Some(&other),
            &other,
            "POST",
            "/streaming/test",
            &[],
            &[],
            Some(&datadog(Some(KEY)).to_string()),
        )
        .await;
    assert_eq!(theirs.status, 200, "the limit is per organization");
}

// ---- GET (events) ---------------------------------------------------------------------------

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
        let sqs = sqs_batch(batch.iter().map(|(id, b)| (id.clone(), b.as_str())));
        let r = self
            .capture
            .capture(sqs.records, Instant::now() + Duration::from_secs(10))
            .await
            .unwrap();
        assert!(r.batch_item_failures.is_empty());
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

#[tokio::test]
async fn stored_events_come_back_newest_first_page_by_page_exactly_as_sent() {
    let w = World::new().await;
    let mine = w.series(25, Duration::from_secs(3600), Duration::from_secs(60));
    let start = OffsetDateTime::now_utc() - Duration::from_secs(3600);
    let other_project: Vec<Value> = (0..3)
        .map(|i| event_at(&w.org, "another-project", start, 100 + i))
        .collect();
    w.store(&mine).await;
    w.store(&other_project).await;

    let (_, pages) = all_pages(&w, false, &[("limit", "10")]).await;
    let seen: Vec<Value> = pages
        .iter()
        .flat_map(|p| p.body["events"].as_array().unwrap().clone())
        .collect();
    assert_eq!(pages.len(), 3);
    let mut newest_first = mine.clone();
    newest_first.reverse();
    assert_eq!(
        seen, newest_first,
        "every event once, newest first, exactly as sent"
    );
}

#[tokio::test]
async fn events_stored_before_they_were_packed_list_exactly_as_sent_among_new_ones() {
    let w = World::new().await;
    let events = w.series(8, Duration::from_secs(3600), Duration::from_secs(60));
    // Two of every three as before, the rest as now.
    let (before, after): (Vec<Value>, Vec<Value>) = events
        .iter()
        .cloned()
        .partition(|e| e["n"].as_u64().unwrap() % 3 != 0);
    w.store_as_before(&before).await;
    w.store(&after).await;
    let page = w.list(&[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let mut newest_first = events.clone();
    newest_first.reverse();
    assert_eq!(page.body["events"].as_array().unwrap(), &newest_first);
}

#[tokio::test]
async fn since_and_until_bound_the_page_inclusively() {
    let w = World::new().await;
    let events = w.series(10, Duration::from_secs(7200), Duration::from_secs(600));
    w.store(&events).await;
    let since = events[3]["timestamp"].as_str().unwrap().to_owned();
    let until = events[6]["timestamp"].as_str().unwrap().to_owned();
    let page = w.list(&[("since", &since), ("until", &until)]).await;
    let ns: Vec<i64> = page.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [6, 5, 4, 3]);
    assert_eq!(page.body["next_cursor"], Value::Null);
    let only_since = w.list(&[("since", &until)]).await;
    assert_eq!(only_since.body["events"].as_array().unwrap().len(), 4);
    let only_until = w.list(&[("until", &since)]).await;
    assert_eq!(only_until.body["events"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn events_past_their_ttl_are_left_out_before_dynamodb_deletes_them() {
    let w = World::new().await;
    let old = OffsetDateTime::now_utc() - Duration::from_secs(500 * 86_400);
    let recent = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - Duration::from_secs(60);
    w.store(&[
        event_at(&w.org, &w.project, old, 1),
        event_at(&w.org, &w.project, recent, 2),
    ])
    .await;
    let page = w.list(&[]).await;
    let ns: Vec<i64> = page.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [2]);
}

#[tokio::test]
async fn bad_list_queries_get_a_400_that_says_what_to_fix() {
    let w = World::new().await;
    for query in [
        vec![("since", "yesterday")],
        vec![("since", "2026-01-01X00:00:00Z")],
        vec![("until", "2026-13-01T00:00:00Z")],
        vec![("limit", "0")],
        vec![("limit", "1001")],
        vec![("limit", "ten")],
        vec![
            ("since", "2026-02-01T00:00:00Z"),
            ("until", "2026-01-01T00:00:00Z"),
        ],
    ] {
        let reply = w.list(&query).await;
        assert_eq!(reply.status, 400, "{query:?}");
        assert_eq!(reply.body["error"]["code"], "invalid_query");
    }
    // The failures listing's own parameters, misspelt, too.
    let reply = w.failures(&[("limt", "5")]).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.body["error"]["code"], "invalid_query");
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("did you mean `limit`"), "{message}");
    // A parameter that is nobody's misspelling means nothing to a route, which leaves it alone
    // (what an event made after AWS's example carries, a cache buster).
    assert_eq!(w.failures(&[("colour", "red")]).await.status, 200);
    for (method, suffix) in [("GET", "/streaming"), ("POST", "/streaming/pause")] {
        let org = Some(w.org.as_str());
        let reply = w
            .call_as(
                org,
                &w.org,
                method,
                suffix,
                &[("parameter1", "value1"), ("parameter1", "value2")],
                &[],
                None,
            )
            .await;
        // Served (the pause, with nothing saved, is a 404 for that reason alone).
        let expected = if method == "GET" { 200 } else { 404 };
        assert_eq!(reply.status, expected, "{suffix}: {}", reply.body);
    }
}

#[tokio::test]
async fn a_time_whose_utc_is_past_the_year_9999_gets_a_400_not_a_crash() {
    let w = World::new().await;
    let late = "9999-12-31T23:30:00-01:00";
    for query in [vec![("since", late)], vec![("until", late)]] {
        let reply = w.list(&query).await;
        assert_eq!(reply.status, 400, "{query:?}: {}", reply.body);
        assert_eq!(reply.body["error"]["code"], "invalid_query");
    }
    for (path, body, field) in [
        ("/exports", json!({"until": late}), "`until`"),
        (
            "/streaming/replay",
            json!({"since": "9999-12-30T00:00:00Z", "until": late}),
            "`until`",
        ),
    ] {
        let reply = w.call("POST", path, Some(body)).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
        assert_eq!(reply.body["error"]["code"], "invalid_field");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{message}");
    }
}

#[tokio::test]
async fn a_range_that_ends_before_it_starts_reads_nothing_and_is_no_error() {
    // Exports saved before `since` was checked against now may hold such a range.
    let w = World::new().await;
    w.store(&w.series(3, Duration::from_secs(600), Duration::from_secs(60)))
        .await;
    let mut request = audit_log::store::PageRequest::new(10, usize::MAX, 0);
    let now = OffsetDateTime::now_utc();
    request.since = Some(now);
    request.until = Some(now - Duration::from_secs(3600));
    let page = w
        .events
        .page(
            &[audit_log::store::partition_key(&w.org, &w.project)],
            &request,
        )
        .await
        .unwrap();
    assert!(page.events.is_empty());
    assert!(page.next_after.is_none());
}

#[tokio::test]
async fn an_export_from_the_future_to_now_is_refused_before_it_starts() {
    let w = World::new().await;
    let tomorrow = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let reply = w
        .call("POST", "/exports", Some(json!({"since": tomorrow})))
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.body["error"]["code"], "invalid_field");
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`since`")
    );
    // It holds none of the organization's export slots: two others start.
    for _ in 0..2 {
        let started = w.call("POST", "/exports", Some(json!({}))).await;
        assert_eq!(started.status, 202, "{}", started.body);
        let shown = w.call("GET", &followed("/exports", &started), None).await;
        assert_eq!(shown.status, 200, "{}", shown.body);
        assert_eq!(shown.body["id"], started.body["id"]);
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

// ---- search ---------------------------------------------------------------------------------

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

/// `n` events of the organization, `step` apart from `start`, its projects in turn.
fn across(
    org: &str,
    projects: &[String],
    n: usize,
    start: OffsetDateTime,
    step: Duration,
) -> Vec<Value> {
    (0..n)
        .map(|i| {
            event_at(
                org,
                &projects[i % projects.len()],
                start + step * i as u32,
                i,
            )
        })
        .collect()
}

/// `n` from `top` down to 0 that `keep` keeps: newest first, as a listing answers.
fn newest_first(top: i64, keep: impl Fn(i64) -> bool) -> Vec<i64> {
    (0..=top).rev().filter(|n| keep(*n)).collect()
}

#[tokio::test]
async fn each_filter_finds_exactly_the_events_it_names() {
    let w = World::new().await;
    // n % 5 picks the seed event: 0 bucket labels (create, a service), 1 revoked version
    // (update, a user, builds), 2 updated build, 3 created build (FAILED), 4 channel assigned
    // (a user, previous_builds).
    let events = w.series(20, Duration::from_secs(3600), Duration::from_secs(60));
    let descriptions: Vec<&str> = events[..5]
        .iter()
        .map(|e| e["description"].as_str().unwrap())
        .collect();
    assert_eq!(
        descriptions,
        [
            "Added bucket labels",
            "Revoked version",
            "Updated build",
            "Created build",
            "Assigned version to channel"
        ]
    );
    w.store(&events).await;
    let kind = |n: i64| n % 5;
    for (query, keep) in [
        (
            vec![("status", "FAILED")],
            Box::new(move |n| kind(n) == 3) as Box<dyn Fn(i64) -> bool>,
        ),
        (
            vec![("action", "create")],
            Box::new(move |n| kind(n) == 0 || kind(n) == 3),
        ),
        (
            vec![("actor", "test.user@hashicorp.com")],
            Box::new(move |n| kind(n) == 1 || kind(n) == 4),
        ),
        (
            vec![("actor", "6f212631-5bcc-48a2-9082-37d752904032")],
            Box::new(move |n| kind(n) == 1 || kind(n) == 4),
        ),
        (
            vec![("resource_type", "channel")],
            Box::new(move |n| kind(n) == 4),
        ),
        (vec![("resource_type", "bucket")], Box::new(|_| true)),
        // In `builds` (1), as `build` (2), in `previous_builds` (4).
        (
            vec![("resource_id", "01H5APPBYYF4D0NMVZCRKR85E7")],
            Box::new(move |n| [1, 2, 4].contains(&kind(n))),
        ),
        (
            vec![("resource_id", "01GNZQS84K3PTGVVB2YY9R81BC")],
            Box::new(|_| true),
        ),
        (vec![("q", "rEvOkEd")], Box::new(move |n| kind(n) == 1)),
        (
            vec![("q", "test-channel-history")],
            Box::new(move |n| kind(n) == 4),
        ),
        (
            vec![("action", "update"), ("resource_type", "build")],
            Box::new(move |n| [1, 2, 4].contains(&kind(n))),
        ),
        (vec![("action", "delete")], Box::new(|_| false)),
    ] {
        let (found, _) = all_pages(&w, false, &query).await;
        assert_eq!(found, newest_first(19, &keep), "{query:?}");
    }
    // With a time range and a page size.
    let since = events[5]["timestamp"].as_str().unwrap().to_owned();
    let until = events[14]["timestamp"].as_str().unwrap().to_owned();
    let (found, pages) = all_pages(
        &w,
        false,
        &[
            ("status", "OK"),
            ("since", &since),
            ("until", &until),
            ("limit", "3"),
        ],
    )
    .await;
    assert_eq!(found, [14, 12, 11, 10, 9, 7, 6, 5]);
    assert!(pages.iter().all(|p| ns(p).len() <= 3));
}

/// A 429 `rate_limited` whose message says `why`, with when to come back within the minute.
fn turned_away(reply: &Reply, why: &str) {
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert_eq!(reply.body["error"]["code"], "rate_limited");
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(message.contains(why), "{message}");
    let retry_after: u64 = reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
}

#[tokio::test]
async fn searches_are_limited_per_organization_and_plain_pages_are_not() {
    // GIVEN an organization allowed four searches a minute, which it has made: two of a
    // project's events, one across its projects and a page of its projects
    let limit = audit_log::streaming::RateLimit {
        per_window: 4,
        ..audit_log::streaming::SEARCHES
    };
    // A clock of its own: the minute cannot turn between the searches.
    let clock = Arc::new(ManualClock::at(
        OffsetDateTime::now_utc().replace_second(10).unwrap(),
    ));
    let w = World::with(|api| api.with_search_limit(limit).with_clock(clock)).await;
    assert_eq!(w.list(&[("action", "delete")]).await.status, 200);
    assert_eq!(
        w.list(&[("q", "revoked"), ("limit", "10")]).await.status,
        200
    );
    let across = w.call_organization(Some(&w.org), &w.org, "", &[]).await;
    assert_eq!(across.status, 200, "{}", across.body);
    let projects = w.call_organization(Some(&w.org), &w.org, "/projects", &[]);
    assert_eq!(projects.await.status, 200);
    // WHEN it searches once more, or lists its projects
    let limited = w.list(&[("status", "FAILED")]).await;
    // THEN it is told when to come back, and why
    turned_away(&limited, "4 searches");
    let projects = w.call_organization(Some(&w.org), &w.org, "/projects", &[]);
    turned_away(&projects.await, "4 searches");
    // AND a plain page of the project's events is not counted
    assert_eq!(w.list(&[("limit", "5")]).await.status, 200);
}

#[tokio::test]
async fn a_rare_search_answers_in_pages_of_bounded_reads_and_finds_every_match() {
    // A page may read 7 stored events: 1 match in 10 comes back a few at a time.
    let w = World::with(|api| api.with_search_budget(7)).await;
    let events = w.series(60, Duration::from_secs(7200), Duration::from_secs(60));
    w.store(&events).await;
    let (found, pages) = all_pages(&w, false, &[("status", "FAILED"), ("limit", "100")]).await;
    assert_eq!(found, newest_first(59, |n| n % 5 == 3));
    // A page reads 7 or 8 stored events, so it holds at most 2 of them, never 100.
    assert!(pages.len() >= 60 / 8, "{} pages", pages.len());
    assert!(pages.iter().all(|p| ns(p).len() <= 2));
}

#[tokio::test]
async fn bad_filters_get_a_400_that_names_the_parameter() {
    let w = World::new().await;
    for (query, named) in [
        (vec![("stauts", "OK")], "did you mean `status`"),
        (
            vec![("resourceType", "build")],
            "did you mean `resource_type`",
        ),
        (vec![("action", "destroy")], "`action`"),
        (vec![("status", "ok")], "`status`"),
        (vec![("resource_type", "registry")], "`resource_type`"),
        (vec![("actor", " ")], "`actor`"),
        (vec![("q", "x\u{1}")], "`q`"),
        (vec![("action", "create"), ("action", "read")], "`action`"),
    ] {
        let reply = w.list(&query).await;
        assert_eq!(reply.status, 400, "{query:?}");
        assert_eq!(reply.body["error"]["code"], "invalid_query");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{query:?}: {message}");
        let organization_wide = w.call_organization(Some(&w.org), &w.org, "", &query).await;
        assert_eq!(organization_wide.status, 400, "{query:?}");
    }
    // A parameter given empty, as clients that send every parameter send one they do not
    // use, is not given.
    w.store(&w.series(2, Duration::from_secs(600), Duration::from_secs(60)))
        .await;
    let unset = [
        ("cursor", ""),
        ("limit", ""),
        ("since", ""),
        ("actor", ""),
        ("q", ""),
    ];
    let reply = w.list(&unset).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(ns(&reply), [1, 0]);
    // Text keeps its commas (API Gateway splits parameters at them; the raw query does not).
    let mut commas = event_at(
        &w.org,
        &w.project,
        OffsetDateTime::now_utc() - Duration::from_secs(5),
        7,
    );
    commas["description"] = json!("Revoked version, then restored it");
    w.store(&[commas]).await;
    assert_eq!(ns(&w.list(&[("q", "version, THEN")]).await), [7]);
    // Text that looks like an expression is only text.
    let injected = w.list(&[("q", "') OR attribute_exists(pk) OR ('")]).await;
    assert_eq!(injected.status, 200);
    assert!(ns(&injected).is_empty());
}

#[tokio::test]
async fn a_cursor_only_goes_on_with_the_filters_that_made_it() {
    let w = World::new().await;
    w.store(&w.series(6, Duration::from_secs(600), Duration::from_secs(60)))
        .await;
    let first = w.list(&[("action", "update"), ("limit", "1")]).await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let same = w
        .list(&[("action", "update"), ("limit", "1"), ("cursor", &cursor)])
        .await;
    assert_eq!(same.status, 200);
    for other in [
        vec![("action", "create")],
        vec![],
        vec![("action", "update"), ("q", "build")],
    ] {
        let mut query = other.clone();
        query.push(("cursor", &cursor));
        let reply = w.list(&query).await;
        assert_eq!(reply.status, 400, "{other:?}");
        assert_eq!(reply.body["error"]["code"], "invalid_cursor");
    }
    let elsewhere = w
        .call_organization(
            Some(&w.org),
            &w.org,
            "",
            &[("action", "update"), ("cursor", &cursor)],
        )
        .await;
    assert_eq!(
        elsewhere.body["error"]["code"], "invalid_cursor",
        "a project's cursor is not the organization's"
    );
}

#[tokio::test]
async fn the_organization_lists_every_projects_events_newest_first_deleted_registries_included() {
    let w = World::new().await;
    w.put(datadog(Some(KEY))).await;
    let start =
        OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - Duration::from_secs(3600);
    // Three projects interleaved in time: this one (configured), another (never configured: a
    // deleted registry's logs), a third; and another organization's events at the same times.
    let projects = [
        w.project.clone(),
        unique("deleted-registry"),
        unique("third"),
    ];
    let mine = across(&w.org, &projects, 30, start, Duration::from_secs(60));
    let theirs: Vec<Value> = (0..5)
        .map(|i| {
            event_at(
                &unique("other-org"),
                &projects[0],
                start + Duration::from_secs(60 * i as u64 + 30),
                100 + i,
            )
        })
        .collect();
    w.store(&mine).await;
    w.store(&theirs).await;
    let (found, pages) = all_pages(&w, true, &[("limit", "7")]).await;
    assert_eq!(found, newest_first(29, |_| true));
    assert_eq!(pages.len(), 5);
    // Filters and ranges apply across projects.
    let since = mine[10]["timestamp"].as_str().unwrap().to_owned();
    let (failed, _) = all_pages(&w, true, &[("status", "FAILED"), ("since", &since)]).await;
    assert_eq!(failed, newest_first(29, |n| n >= 10 && n % 5 == 3));
    // Every event exactly as sent.
    let page = w
        .call_organization(Some(&w.org), &w.org, "", &[("limit", "1")])
        .await;
    assert_eq!(page.body["events"][0], mine[29]);
    // Only members of the organization.
    let intruder = w.call_organization(Some("intruder"), &w.org, "", &[]).await;
    assert_eq!(intruder.status, 403);
    let anonymous = w.call_organization(None, &w.org, "", &[]).await;
    assert_eq!(anonymous.status, 401);
}

/// Two projects may hold an event under the same sort key (the same time, and a message id
/// claimed alike in both): an organization's pages of one event list both, each once.
#[tokio::test]
async fn the_organization_lists_both_events_two_projects_hold_under_one_sort_key() {
    let w = World::new().await;
    let t = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - Duration::from_secs(60);
    let id = unique("claimed");
    for (n, project) in [unique("twin-a"), unique("twin-b")].iter().enumerate() {
        // One message at a time, as two producers' would come.
        w.store_as(&[(id.clone(), event_at(&w.org, project, t, n))])
            .await;
    }
    for limit in ["1", "2"] {
        let (found, _) = all_pages(&w, true, &[("limit", limit)]).await;
        assert_eq!(found, [1, 0], "limit {limit}");
    }
}

#[tokio::test]
async fn projects_whose_events_were_stored_before_they_were_noted_are_found_after_noting() {
    let w = World::new().await;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let (old, odd) = (unique("old"), unique("odd#project%"));
    // Written as capture wrote them before it noted projects.
    w.store_as_before(&[
        event_at(&w.org, &old, now - Duration::from_secs(600), 1),
        event_at(&w.org, &odd, now - Duration::from_secs(60), 2),
    ])
    .await;
    let before = w
        .call_organization(Some(&w.org), &w.org, "/projects", &[])
        .await;
    assert_eq!(before.body["projects"], json!([]));
    // The README's command, as an operator runs it against the stack's tables (`cargo test
    // --workspace` builds it for the capture package's own tests).
    let binary = audit_log_tests::repo_root().join("target/debug/audit-log-note-projects");
    let out = std::process::Command::new(&binary)
        .env("EVENTS_TABLE_NAME", &w.events_table)
        .env("CONFIG_TABLE_NAME", &w.config_table)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (cargo test builds it with the capture package)",
                binary.display()
            )
        });
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.starts_with("noted "), "{said}");
    let pages = pages_of(&w, Listing::Projects, &[]).await;
    let mut found: Vec<&str> = pages
        .iter()
        .flat_map(|p| p.body["projects"].as_array().unwrap())
        .map(|p| p["project_id"].as_str().unwrap())
        .collect();
    found.sort_unstable();
    let mut expected = [old.as_str(), odd.as_str()];
    expected.sort_unstable();
    assert_eq!(found, expected);
    let (all, _) = all_pages(&w, true, &[]).await;
    assert_eq!(all, [2, 1]);
}

#[tokio::test]
async fn a_rare_search_across_many_projects_moves_on_every_page() {
    // Twelve projects, a budget of 30 items a page: less than one chunk of each.
    let w = World::with(|api| api.with_search_budget(30)).await;
    let start =
        OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - Duration::from_secs(7200);
    let projects: Vec<String> = (0..12).map(|i| format!("{}-{i}", w.project)).collect();
    let events = across(&w.org, &projects, 120, start, Duration::from_secs(30));
    w.store(&events).await;
    let (found, pages) = all_pages(&w, true, &[("status", "FAILED")]).await;
    assert_eq!(found, newest_first(119, |n| n % 5 == 3));
    assert!(pages.len() <= 20, "{} pages for 120 events", pages.len());
}

#[tokio::test]
async fn listing_projects_reads_past_an_expired_tail_at_a_bounded_cost() {
    // GIVEN a project whose 4,000 oldest events are past their TTL and still in the table
    // (DynamoDB takes days to delete them; the emulator never does) before two live ones, and
    // a project whose 4,000 events have all expired
    let mut w = World::new().await;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let long_ago = now - Duration::from_secs(500 * 86_400);
    let (tail, gone) = (unique("tail"), unique("gone"));
    for project in [&tail, &gone] {
        let expired: Vec<Value> = (0..4_000)
            .map(|i| event_at(&w.org, project, long_ago + Duration::from_secs(i as u64), i))
            .collect();
        for chunk in expired.chunks(1_000) {
            w.store(chunk).await;
        }
    }
    let live = [
        now - Duration::from_secs(3_600),
        now - Duration::from_secs(60),
    ];
    w.store(&[
        event_at(&w.org, &tail, live[0], 1),
        event_at(&w.org, &tail, live[1], 2),
    ])
    .await;
    // WHEN the organization's projects are listed, through a proxy that counts the reads
    let proxy = audit_log_tests::faults::AwsProxy::start(
        std::env::var("AWS_ENDPOINT_URL").unwrap(),
        audit_log_tests::faults::AwsFaults::default(),
    )
    .await;
    let counted = aws_config::from_env().endpoint_url(&proxy.url).load().await;
    w.api = Api::new(settings(&w.parts()), &counted);
    let reply = w
        .call_organization(Some(&w.org), &w.org, "/projects", &[])
        .await;
    // THEN the tail's project is listed from its oldest live event, the other not at all
    assert_eq!(reply.status, 200, "{}", reply.body);
    let rfc = |t: OffsetDateTime| t.format(&Rfc3339).unwrap();
    assert_eq!(
        reply.body["projects"],
        json!([{"project_id": tail, "newest_event_at": rfc(live[1]), "oldest_event_at": rfc(live[0])}])
    );
    // AND each end of a partition read a few items, then at most one step of expired items,
    // before going straight to where live events start: the noted projects (1), the tail's
    // newest (1) and oldest (3), the other's newest (3), where reading every expired item
    // takes 5 each
    assert_eq!(proxy.count("Query"), 8);
}

#[tokio::test]
async fn projects_with_stored_events_are_listed_with_their_newest_and_oldest_event() {
    let w = World::new().await;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let at = |ago: u64| now - Duration::from_secs(ago);
    let gone = unique("gone");
    let expired = unique("expired");
    w.store(&[
        event_at(&w.org, &w.project, at(3600), 1),
        event_at(&w.org, &w.project, at(60), 2),
        event_at(&w.org, &w.project, at(600), 3),
        event_at(&w.org, &gone, at(7200), 4),
        // Past its TTL: DynamoDB has not deleted it yet, but it is not listed.
        event_at(&w.org, &expired, now - Duration::from_secs(500 * 86_400), 5),
        event_at(&unique("other-org"), &unique("theirs"), at(10), 6),
    ])
    .await;
    let reply = w
        .call_organization(Some(&w.org), &w.org, "/projects", &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let rfc = |t: OffsetDateTime| t.format(&Rfc3339).unwrap();
    let mut listed = reply.body["projects"].as_array().unwrap().clone();
    listed.sort_by_key(|p| p["project_id"].as_str().unwrap().to_owned());
    let mut expected = vec![
        json!({"project_id": w.project, "newest_event_at": rfc(at(60)), "oldest_event_at": rfc(at(3600))}),
        json!({"project_id": gone, "newest_event_at": rfc(at(7200)), "oldest_event_at": rfc(at(7200))}),
    ];
    expected.sort_by_key(|p| p["project_id"].as_str().unwrap().to_owned());
    assert_eq!(listed, expected);
    assert!(reply.body["next_cursor"].is_null());
    // One noted project per page (a page may list none: the expired project's).
    let pages = pages_of(&w, Listing::Projects, &[("limit", "1")]).await;
    assert!(
        pages
            .iter()
            .all(|p| p.body["projects"].as_array().unwrap().len() <= 1)
    );
    let mut paged: Vec<Value> = pages
        .iter()
        .flat_map(|p| p.body["projects"].as_array().unwrap().clone())
        .collect();
    paged.sort_by_key(|p| p["project_id"].as_str().unwrap().to_owned());
    assert_eq!(paged, expected);
    let intruder = w
        .call_organization(Some("intruder"), &w.org, "/projects", &[])
        .await;
    assert_eq!(intruder.status, 403);
    // The listing's bounds, as for events: a page looks at 100 projects at most.
    let most = w
        .call_organization(Some(&w.org), &w.org, "/projects", &[("limit", "1000")])
        .await;
    assert_eq!(most.status, 200, "{}", most.body);
    assert_eq!(most.body["projects"].as_array().unwrap().len(), 2);
    let bad = w
        .call_organization(Some(&w.org), &w.org, "/projects", &[("limit", "1001")])
        .await;
    assert_eq!(bad.status, 400);
    let foreign = w
        .call_organization(
            Some(&w.org),
            &w.org,
            "/projects",
            &[("cursor", "bm90IGEgY3Vyc29y")],
        )
        .await;
    assert_eq!(foreign.body["error"]["code"], "invalid_cursor");
}

// ---- security -------------------------------------------------------------------------------

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

#[tokio::test]
async fn without_claims_every_route_is_401_and_with_another_organization_403_and_nothing_changes() {
    let w = World::new().await;
    w.put(datadog(Some(KEY))).await;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    w.store(&[event_at(
        &w.org,
        &w.project,
        now - Duration::from_secs(30),
        1,
    )])
    .await;
    let before = w.get().await.body;
    w.audit_events().await;
    let intruder = unique("intruder-org");
    for (method, suffix, body) in every_route() {
        let anonymous = w
            .call_as(None, &w.org, method, suffix, &[], &[], body.as_deref())
            .await;
        assert_eq!(anonymous.status, 401, "{method} {suffix}");
        assert_eq!(anonymous.body["error"]["code"], "unauthenticated");
        let other = w
            .call_as(
                Some(&intruder),
                &w.org,
                method,
                suffix,
                &[],
                &[],
                body.as_deref(),
            )
            .await;
        assert_eq!(other.status, 403, "{method} {suffix}");
        assert_eq!(other.body["error"]["code"], "forbidden");
        assert!(other.body.get("events").is_none() && other.body.get("external_id").is_none());
    }
    assert_eq!(w.get().await.body, before, "configuration untouched");
    assert!(
        matches!(w.stored_credentials().await.unwrap(), Credentials::Datadog { ref api_key } if api_key.expose_secret() == KEY)
    );
    for suffix in ["", "/projects"] {
        let anonymous = w.call_organization(None, &w.org, suffix, &[]).await;
        assert_eq!(anonymous.status, 401, "organization {suffix}");
        let other = w
            .call_organization(Some(&intruder), &w.org, suffix, &[])
            .await;
        assert_eq!(other.status, 403, "organization {suffix}");
        assert!(other.body.get("events").is_none() && other.body.get("projects").is_none());
    }
    assert!(w.datadog.received_requests().await.unwrap().is_empty());
    assert!(w.audit_events().await.is_empty());
    assert_eq!(
        w.list(&[]).await.body["events"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_cursor_cannot_reach_another_organizations_events() {
    let w = World::new().await;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let victim = unique("victim-org");
    w.store(&[event_at(
        &victim,
        &w.project,
        now - Duration::from_secs(10),
        1,
    )])
    .await;
    w.store(&[
        event_at(&w.org, &w.project, now - Duration::from_secs(20), 2),
        event_at(&w.org, &w.project, now - Duration::from_secs(30), 3),
    ])
    .await;
    let first = w.list(&[("limit", "1")]).await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let second = w.list(&[("limit", "1"), ("cursor", &cursor)]).await;
    let all: Vec<&Value> = first.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second.body["events"].as_array().unwrap())
        .collect();
    assert!(all.iter().all(|e| e["organization_id"] == w.org.as_str()));
    assert_eq!(all.len(), 2);
}

#[test]
fn no_route_ever_shows_or_logs_a_secret() {
    let sentinel_key = "5e7e11e15e7e11e15e7e11e15e7e11e1";
    let (replies, logs) = with_captured_logs(|| async {
        let w = World::new().await;
        w.mount(validate().respond_with(ResponseTemplate::new(403)))
            .await;
        w.mount(intake().respond_with(ResponseTemplate::new(401)))
            .await;
        let external_id = w.get().await.body["external_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut replies = Vec::new();
        let body = datadog(Some(sentinel_key)).to_string();
        for (method, suffix, b) in [
            ("PUT", "/streaming", Some(body.clone())),
            ("GET", "/streaming", None),
            ("POST", "/streaming/test", Some(body.clone())),
            ("POST", "/streaming/test", None),
            ("PUT", "/streaming", Some(datadog(None).to_string())),
            ("GET", "", None),
            (
                "PUT",
                "/streaming",
                Some(body.replace("datadoghq.eu", "nowhere.example")),
            ),
            ("DELETE", "/streaming", None),
        ] {
            let r = w
                .call_as(Some(&w.org), &w.org, method, suffix, &[], &[], b.as_deref())
                .await;
            replies.push(r.body.to_string());
        }
        replies.extend(w.audit_events().await.iter().map(Value::to_string));
        (replies, external_id)
    });
    let (replies, external_id) = replies;
    for reply in &replies {
        assert!(!reply.contains(sentinel_key), "{reply}");
    }
    let logs = serde_json::to_string(&logs).unwrap();
    assert!(logs.contains("api request"), "the routes were logged");
    assert!(!logs.contains(sentinel_key), "the key reached the logs");
    assert!(
        !logs.contains(&external_id),
        "the External ID reached the logs"
    );
}

// ---- the delivery lane: pause, resume, health ----------------------------------------------

#[tokio::test]
async fn pause_and_resume_answer_the_view_with_the_lanes_state_and_are_audited() {
    let w = World::new().await;
    for route in ["/streaming/pause", "/streaming/resume"] {
        assert_eq!(w.call("POST", route, None).await.status, 404, "{route}");
    }
    w.put(datadog(Some(KEY))).await;
    // The save's own audit event, taken off the queue.
    w.audit_events().await;
    let paused = w.call("POST", "/streaming/pause", None).await;
    assert_eq!(paused.status, 200);
    assert_eq!(paused.body["health"]["state"], "paused");
    assert_eq!(paused.body["health"]["pending"], 0);
    assert_eq!(w.get().await.body["health"]["state"], "paused");
    let resumed = w.call("POST", "/streaming/resume", None).await;
    assert_eq!(resumed.status, 200);
    // Catching up what it was owed: delivering, its next attempt due now.
    assert_eq!(resumed.body["health"]["state"], "delivering");
    assert!(resumed.body["health"]["next_attempt_at"].is_string());
    // Resuming again changes nothing.
    let again = w.call("POST", "/streaming/resume", None).await;
    assert_eq!(again.status, 200);
    let audited: Vec<String> = w
        .audit_events()
        .await
        .iter()
        .map(|e| e["description"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(audited, ["Paused log streaming", "Resumed log streaming"]);
    // Each change scheduled the lane's next call: the resume's catching up at once, the
    // pause's look at what it owes in fifteen minutes (still delayed).
    let calls = audit_log_tests::take_all(&w.sqs, &w.lane_queue_url).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].contains("lane_call"));
    let delayed = w
        .sqs
        .get_queue_attributes()
        .queue_url(&w.lane_queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    assert_eq!(
        delayed[&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed],
        "1"
    );
}

#[tokio::test]
async fn a_lane_stored_before_its_index_had_shards_is_saved_and_resumed_like_any_other() {
    let w = World::new().await;
    w.put(datadog(Some(KEY))).await;
    let client = aws_sdk_dynamodb::Client::new(&w.aws);
    let stored_state = || async {
        audit_log_tests::configured_item(&client, &w.config_table).await["lane_state"]
            .as_s()
            .unwrap()
            .clone()
    };
    let as_before_shards = |state: &'static str| {
        audit_log_tests::set_lane_attribute(
            &client,
            &w.config_table,
            "lane_state",
            aws_sdk_dynamodb::types::AttributeValue::S(state.into()),
        )
    };
    assert_eq!(stored_state().await, "delivering");
    let paused = w.call("POST", "/streaming/pause", None).await;
    assert_eq!(paused.status, 200);
    // A waiting lane's state carries its shard of the lanes' index.
    let sharded = stored_state().await;
    assert!(sharded.starts_with("paused#"), "{sharded}");

    as_before_shards("paused").await;
    assert_eq!(w.get().await.body["health"]["state"], "paused");
    // A save holds on the lane being as read, in either form.
    let saved = w.put(datadog(Some(KEY))).await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(saved.body["health"]["state"], "paused");
    assert_eq!(stored_state().await, sharded);

    as_before_shards("paused").await;
    let resumed = w.call("POST", "/streaming/resume", None).await;
    assert_eq!(resumed.status, 200);
    assert_eq!(resumed.body["health"]["state"], "delivering");
    assert!(stored_state().await.starts_with("catching_up#"));
    // Saved again while catching up: it goes on at once, and nothing shows it failing.
    let saved = w.put(datadog(Some(KEY))).await;
    assert_eq!(
        saved.body["health"]["state"], "delivering",
        "{}",
        saved.body
    );
    assert_ne!(saved.body["health"]["status"], "failing", "{}", saved.body);
    assert!(stored_state().await.starts_with("catching_up#"));
}

#[tokio::test]
async fn a_rename_keeps_the_destinations_health_and_new_settings_start_afresh() {
    let w = World::new().await;
    w.put(cloudwatch()).await;
    let failed = audit_log::streaming::HealthReport {
        delivered: 0,
        failed: 3,
        last_error: Some("the role could not be assumed".into()),
        permanent: true,
    };
    w.configs
        .record_health(&w.org, &w.project, &failed, OffsetDateTime::now_utc())
        .await
        .unwrap();
    let before = w.get().await.body["health"].clone();
    assert_eq!(before["last_error"], "the role could not be assumed");
    assert_eq!(before["status"], "failing");
    // Renamed: the same role in the same region still fails as it did.
    let mut renamed = cloudwatch();
    renamed["name"] = json!("prod-audit-2");
    let saved = w.put(renamed.clone()).await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(saved.body["destination"]["name"], "prod-audit-2");
    assert_eq!(before["failed_24h"], 3);
    for field in ["status", "last_error", "last_failure_at", "failed_24h"] {
        assert_eq!(saved.body["health"][field], before[field], "{field}");
    }
    // Another region is another destination: nothing is known of it yet.
    let mut moved = renamed;
    moved["cloudwatch"]["region"] = json!("eu-west-1");
    let saved = w.put(moved).await;
    assert_eq!(saved.body["health"]["status"], "unknown");
    assert!(saved.body["health"]["last_error"].is_null());
    // A Datadog key left out, or sent again as saved (a client that sends the whole
    // resource), is the same key; another one starts afresh.
    w.put(datadog(Some(KEY))).await;
    w.configs
        .record_health(&w.org, &w.project, &failed, OffsetDateTime::now_utc())
        .await
        .unwrap();
    for (name, key) in [("dd-renamed", None), ("dd-sent-whole", Some(KEY))] {
        let mut renamed = datadog(key);
        renamed["name"] = json!(name);
        let kept = w.put(renamed).await;
        assert_eq!(kept.status, 200, "{}", kept.body);
        assert_eq!(
            kept.body["health"]["last_error"], "the role could not be assumed",
            "{name}"
        );
    }
    let other = "0123456789abcdef0123456789abcdef";
    audit_log_tests::watch_secret(other);
    let fresh = w.put(datadog(Some(other))).await;
    assert_eq!(fresh.body["health"]["status"], "unknown");
    assert_eq!(
        fresh.body["destination"]["datadog"]["api_key_last4"],
        "cdef"
    );
}

#[tokio::test]
async fn health_shows_what_the_lane_owes_and_when_it_tries_next() {
    use audit_log::lane::{Lane, LaneKey, LaneState, LaneStore, Owed};
    let w = World::new().await;
    w.put(datadog(Some(KEY))).await;
    let key = LaneKey::new(&w.org, &w.project);
    // Saved twenty minutes ago, owed for ten: more than five is failing.
    let now = OffsetDateTime::now_utc();
    let client = aws_sdk_dynamodb::Client::new(&w.aws);
    let saved_at = now - Duration::from_secs(1200);
    audit_log_tests::backdate_lane(&client, &w.config_table, "lane_owed_from", saved_at).await;
    let now_ms = audit_log::clock::epoch_ms(now);
    let owed: Vec<Owed> = (0..3)
        .map(|i| Owed {
            event: audit_log::store::StoredKey {
                sort_key: format!("2026-11-30T10:00:0{i}.000000000Z#m{i}"),
                message_id: format!("m{i}"),
                expires_at: now_ms / 1000 + 86_400,
            },
            owed_at_ms: now_ms - 600_000,
            bytes: 1_000,
        })
        .collect();
    let retrying = Lane {
        state: LaneState::Retrying,
        attempt: Some("a1".into()),
        next_attempt_at: Some(now_ms + 40_000),
        interval_ms: 40_000,
        since: Some(now_ms - 600_000),
        reason: Some("Datadog answered HTTP 503".into()),
        ..Lane::default()
    };
    assert_eq!(
        w.configs.owe(&key, &owed, Some(&retrying)).await.unwrap(),
        audit_log::lane::Owing::Owed
    );
    let health = w.get().await.body["health"].clone();
    assert_eq!(health["state"], "retrying");
    assert_eq!(health["status"], "failing");
    assert_eq!(health["pending"], 3);
    let oldest =
        OffsetDateTime::parse(health["oldest_pending_at"].as_str().unwrap(), &Rfc3339).unwrap();
    assert!((oldest.unix_timestamp() - (now_ms - 600_000) / 1000).abs() <= 1);
    let next =
        OffsetDateTime::parse(health["next_attempt_at"].as_str().unwrap(), &Rfc3339).unwrap();
    assert!((next.unix_timestamp() - (now_ms + 40_000) / 1000).abs() <= 1);
    // A save keeps the lane as it is and asks it to try at once with the new settings.
    let saved = w.put(datadog(Some(KEY))).await;
    assert_eq!(saved.body["health"]["pending"], 3);
    assert_eq!(saved.body["health"]["state"], "retrying");
    let next_now = OffsetDateTime::parse(
        saved.body["health"]["next_attempt_at"].as_str().unwrap(),
        &Rfc3339,
    )
    .unwrap();
    assert!(next_now < next);
}

// ---- the OpenAPI document -------------------------------------------------------------------

#[tokio::test]
async fn every_documented_route_answers_as_documented() {
    let w = World::new().await;
    w.mount(validate().respond_with(ResponseTemplate::new(200)))
        .await;
    w.mount(intake().respond_with(ResponseTemplate::new(202)))
        .await;
    let operations = w.openapi.operations();
    assert_eq!(operations.len(), 15);
    let (mut replay_id, mut export_id) = (String::new(), String::new());
    for (method, template) in operations {
        if let Some(suffix) = template.strip_prefix(ORGANIZATION_BASE) {
            let reply = w.call_organization(Some(&w.org), &w.org, suffix, &[]).await;
            assert_eq!(reply.status, 200, "{method} {template}: {}", reply.body);
            continue;
        }
        // Every route but DELETE answers about a saved destination.
        if method != "DELETE" {
            w.put(datadog(Some(KEY))).await;
        }
        let suffix = template
            .strip_prefix(BASE)
            .unwrap()
            .replace("{replay_id}", &replay_id)
            .replace("{export_id}", &export_id);
        let body = match (method.as_str(), suffix.as_str()) {
            ("POST", "/streaming/replay") => {
                Some(json!({"since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"}))
            }
            ("POST", "/streaming/pause" | "/streaming/resume") => None,
            ("POST", "/exports") => Some(json!({"format": "csv", "status": "FAILED"})),
            ("PUT", _) | ("POST", _) => Some(datadog(Some(KEY))),
            _ => None,
        };
        // `call` checks the answer against the document.
        let reply = w.call(&method, &suffix, body).await;
        assert!(
            reply.status < 300,
            "{method} {template}: {} {}",
            reply.status,
            reply.body
        );
        if let Some(id) = reply.body["replay_id"].as_str() {
            replay_id = id.to_owned();
        }
        if template.ends_with("/exports")
            && let Some(id) = reply.body["id"].as_str()
        {
            export_id = id.to_owned();
        }
    }
}

#[tokio::test]
async fn unknown_routes_are_404() {
    let w = World::new().await;
    let request = api_request(
        "GET",
        "/v1/organizations/o/projects/p/elsewhere",
        &[],
        &[],
        None,
        Some(&[("organization_id", "o")]),
    );
    assert_eq!(w.api.respond(&request).await.status_code, 404);
    let request = api_request(
        "PATCH",
        "/v1/organizations/o/projects/p/audit-logs/streaming",
        &[],
        &[],
        None,
        Some(&[("organization_id", "o")]),
    );
    assert_eq!(w.api.respond(&request).await.status_code, 404);
}

#[tokio::test]
async fn an_event_made_after_aws_example_with_only_its_path_method_and_claims_set_is_served() {
    // As `sam local generate-event apigateway http-api-proxy` writes it: its `$default` route
    // key, its raw query and parameters (`parameter1`...), its base64 body, its claims.
    let w = World::new().await;
    assert_eq!(w.put(cloudwatch()).await.status, 200);
    let example: Value = serde_json::from_str(&audit_log::fixtures::lambda_event(
        "apigw-http-api-request.json",
    ))
    .unwrap();
    let base = format!(
        "/v1/organizations/{}/projects/{}/audit-logs",
        w.org, w.project
    );
    for (method, suffix, status) in [
        ("GET", "/streaming", 200),
        ("GET", "", 200),
        ("POST", "/streaming/pause", 200),
        ("POST", "/streaming/resume", 200),
        ("DELETE", "/streaming", 204),
    ] {
        let mut event = example.clone();
        let path = format!("{base}{suffix}");
        event["rawPath"] = path.clone().into();
        event["requestContext"]["http"]["method"] = method.into();
        event["requestContext"]["http"]["path"] = path.into();
        event["requestContext"]["authorizer"]["jwt"]["claims"]["organization_id"] =
            w.org.clone().into();
        let request = serde_json::from_value(event).unwrap();
        let response = w.api.respond(&request).await;
        assert_eq!(
            response.status_code, status,
            "{method} {suffix}: {:?}",
            response.body
        );
    }
}

#[tokio::test]
async fn the_catch_all_route_is_a_404_of_the_api_for_what_the_function_does_not_serve() {
    // The template's catch-all: no path, no method, the default JWT authorizer.
    let events = &audit_log_tests::resource("ApiFunction")["Events"];
    let catch_all: Vec<&serde_yaml::Value> = events
        .as_mapping()
        .unwrap()
        .values()
        .filter(|e| e["Type"].as_str() == Some("HttpApi"))
        .filter(|e| e["Properties"].get("Path").is_none())
        .collect();
    assert_eq!(catch_all.len(), 1, "one catch-all route");
    let properties = &catch_all[0]["Properties"];
    assert!(properties.get("Method").is_none());
    assert!(
        properties.get("Auth").is_none(),
        "it keeps the JWT authorizer"
    );
    // What API Gateway hands it: the catch-all's route key, for a method or path no route has.
    // The same key comes with a request for a route the function serves from a function URL
    // or from an event made after AWS's example (`tests/fixtures/lambda`): that one is served.
    let w = World::new().await;
    for (method, path, status) in [
        (
            "PATCH",
            "/v1/organizations/o/projects/p/audit-logs/streaming",
            404,
        ),
        ("GET", "/elsewhere", 404),
        (
            "GET",
            "/v1/organizations/o/projects/p/audit-logs/streaming",
            200,
        ),
    ] {
        let mut request = api_request(
            method,
            path,
            &[],
            &[],
            None,
            Some(&[("organization_id", "o")]),
        );
        request.route_key = Some("$default".into());
        let response = w.api.respond(&request).await;
        assert_eq!(response.status_code, status, "{method} {path}");
        let Some(Body::Text(text)) = &response.body else {
            panic!("no body")
        };
        let body: Value = serde_json::from_str(text).unwrap();
        match status {
            404 => assert_eq!(body["error"]["code"], "not_found", "{body}"),
            _ => assert_eq!(body["project_id"], "p", "{body}"),
        }
    }
    // Served by the catch-all, a route is still the caller's organization's only.
    let path = "/v1/organizations/o/projects/p/audit-logs/streaming";
    for (claims, status) in [
        (Some(&[("organization_id", "other")][..]), 403),
        (None, 401),
    ] {
        let mut request = api_request("GET", path, &[], &[], None, claims);
        request.route_key = Some("$default".into());
        assert_eq!(
            w.api.respond(&request).await.status_code,
            status,
            "{claims:?}"
        );
    }
}

#[test]
fn the_template_gives_the_api_exactly_the_settings_it_reads() {
    let mut expected: Vec<String> = audit_log_api::ENVIRONMENT
        .iter()
        .map(|s| s.to_string())
        .collect();
    expected.sort();
    assert_eq!(environment_of("ApiFunction"), expected);
}

/// The api function's HTTP routes in the template: the API's, or the console's static files.
fn template_routes(console: bool) -> Vec<serde_yaml::Value> {
    let events = &audit_log_tests::resource("ApiFunction")["Events"];
    events
        .as_mapping()
        .unwrap()
        .values()
        .filter(|e| e["Type"].as_str() == Some("HttpApi"))
        .filter(|e| {
            // The catch-all route has no path.
            let Some(path) = e["Properties"]["Path"].as_str() else {
                return false;
            };
            audit_log_api::console::is_console(path) == console
        })
        .cloned()
        .collect()
}

#[test]
fn only_the_console_files_are_served_without_a_token() {
    let console = template_routes(true);
    let paths: Vec<&str> = console
        .iter()
        .map(|e| e["Properties"]["Path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    for e in &console {
        assert_eq!(e["Properties"]["Method"].as_str(), Some("GET"));
        assert_eq!(e["Properties"]["Auth"]["Authorizer"].as_str(), Some("NONE"));
    }
    for e in template_routes(false) {
        assert!(
            e["Properties"].get("Auth").is_none(),
            "an API route keeps the default JWT authorizer: {e:?}"
        );
    }
}

#[test]
fn the_template_routes_match_the_openapi_document() {
    let mut routes: Vec<(String, String)> = template_routes(false)
        .iter()
        .map(|e| {
            (
                e["Properties"]["Method"].as_str().unwrap().to_owned(),
                e["Properties"]["Path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    routes.sort();
    let mut documented = OpenApi::load().operations();
    documented.sort();
    assert_eq!(routes, documented);
}

/// A DELETE without `If-Match` that saves keep beating, or whose secret Secrets Manager is
/// still deleting, is told to retry: the document says so beside the other statuses.
#[test]
fn stopping_streaming_documents_its_429() {
    let openapi = OpenApi::load();
    let path = "/v1/organizations/{organization_id}/projects/{project_id}/audit-logs/streaming";
    let responses = &openapi.doc["paths"][path]["delete"]["responses"];
    for status in ["204", "400", "412", "429"] {
        assert!(
            responses.get(status).is_some(),
            "DELETE {path}: no {status}"
        );
    }
}

#[tokio::test]
async fn the_last_ten_connection_tests_are_kept_newest_first() {
    let clock = minute_clock();
    let w = World::with({
        let clock = clock.clone();
        move |api| api.with_clock(clock)
    })
    .await;
    w.mount(
        validate()
            .respond_with(ResponseTemplate::new(403))
            .up_to_n_times(2),
    )
    .await;
    w.mount(validate().respond_with(ResponseTemplate::new(200)))
        .await;
    w.mount(intake().respond_with(ResponseTemplate::new(202)))
        .await;
    assert_eq!(
        w.call("GET", "/streaming/tests", None).await.body,
        json!({"tests": []})
    );
    for _ in 0..10 {
        clock.advance(Duration::from_secs(1));
        w.call("POST", "/streaming/test", Some(datadog(Some(KEY))))
            .await;
    }
    let listed = w.call("GET", "/streaming/tests", None).await;
    assert_eq!(listed.status, 200);
    let tests = listed.body["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 10);
    let outcomes: Vec<bool> = tests
        .iter()
        .map(|t| t["success"].as_bool().unwrap())
        .collect();
    assert_eq!(
        &outcomes[8..],
        [false, false],
        "the two oldest were refused"
    );
    assert!(outcomes[..8].iter().all(|&ok| ok));
    assert!(
        tests[9]["message"]
            .as_str()
            .unwrap()
            .contains("refused the API key")
    );
    let times: Vec<&str> = tests
        .iter()
        .map(|t| t["tested_at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let newest_before = times[0].to_owned();

    // An eleventh test (in the next minute, past the rate limit's) pushes the oldest out.
    clock.advance(Duration::from_secs(61));
    let eleventh = w
        .call("POST", "/streaming/test", Some(datadog(Some(KEY))))
        .await;
    assert_eq!(eleventh.body["success"], true, "{}", eleventh.body);
    let tests = w.call("GET", "/streaming/tests", None).await.body["tests"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(tests.len(), 10);
    assert!(tests[0]["tested_at"].as_str().unwrap() > newest_before.as_str());
    assert_eq!(tests[0]["success"], true);
    let refused = tests.iter().filter(|t| t["success"] == false).count();
    assert_eq!(refused, 1, "only the newer of the two refused ones is kept");
    assert_eq!(tests[9]["success"], false);
}

#[tokio::test]
async fn a_replay_needs_a_destination_a_valid_range_and_a_known_id() {
    let w = World::new().await;
    let range = json!({"since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"});
    let nothing_saved = w
        .call("POST", "/streaming/replay", Some(range.clone()))
        .await;
    assert_eq!(nothing_saved.status, 404);
    w.put(datadog(Some(KEY))).await;
    let too_long = w
        .call(
            "POST",
            "/streaming/replay",
            Some(json!({"since": "2024-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(too_long.status, 400);
    assert!(
        too_long.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("366 days")
    );
    let unknown = w
        .call("GET", "/streaming/replays/does-not-exist", None)
        .await;
    assert_eq!(unknown.status, 404);
    let started = w.call("POST", "/streaming/replay", Some(range)).await;
    assert_eq!(started.status, 202);
    assert_eq!(started.body["state"], "running");
    let id = started.body["replay_id"].as_str().unwrap();
    let shown = w
        .call("GET", &followed("/streaming/replay", &started), None)
        .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(shown.body["replay_id"], id);
    // The same replay, but for when it was last updated.
    let mut expected = started.body.clone();
    expected["updated_at"] = shown.body["updated_at"].clone();
    assert_eq!(shown.body, expected);
}

#[tokio::test]
async fn huge_and_deeply_nested_bodies_get_a_clear_4xx_and_change_nothing() {
    let w = World::new().await;
    let ten_megabytes = format!("{{\"name\": \"{}\"}}", "x".repeat(10 * 1024 * 1024));
    // Within the body limit, far past any sane depth.
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    for (method, suffix) in [
        ("PUT", "/streaming"),
        ("POST", "/streaming/test"),
        ("POST", "/streaming/replay"),
    ] {
        let huge = w
            .call_as(
                Some(&w.org),
                &w.org,
                method,
                suffix,
                &[],
                &[],
                Some(&ten_megabytes),
            )
            .await;
        assert_eq!(huge.status, 413, "{method} {suffix}");
        let nested = w
            .call_as(Some(&w.org), &w.org, method, suffix, &[], &[], Some(&deep))
            .await;
        assert_eq!(nested.status, 400, "{method} {suffix}");
        assert_eq!(nested.body["error"]["code"], "invalid_json");
    }
    assert_eq!(w.get().await.body["version"], 0, "nothing saved");
    assert!(w.audit_events().await.is_empty());
}

// ---- issue 13: tenants, races and input that reached the wrong place -------------------------

/// The account moto's credentials belong to: the service's own.
const SERVICE_ACCOUNT: &str = "123456789012";

#[tokio::test]
async fn a_role_in_the_services_own_account_is_refused_before_any_call() {
    let w = World::new().await;
    let own = json!({"provider": "cloudwatch", "name": "deputy",
        "cloudwatch": {"role_arn": format!("arn:aws:iam::{SERVICE_ACCOUNT}:role/trusts-root"), "region": "us-west-2"}});
    for reply in [
        w.put(own.clone()).await,
        w.call("POST", "/streaming/test", Some(own.clone())).await,
    ] {
        assert_eq!(reply.status, 400, "{}", reply.body);
        assert_eq!(reply.body["error"]["code"], "invalid_field");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("`cloudwatch.role_arn`"), "{message}");
        assert!(!message.contains("trusts-root"), "{message}");
    }
    assert_eq!(w.get().await.body["destination"], Value::Null);
    assert!(matches!(
        w.stored_credentials().await,
        Err(CredentialsError::NotFound)
    ));
    assert!(w.recent_tests().await.is_empty(), "no test was run");
}

impl World {
    async fn recent_tests(&self) -> Vec<Value> {
        self.call("GET", "/streaming/tests", None).await.body["tests"]
            .as_array()
            .unwrap()
            .clone()
    }
}

#[tokio::test]
async fn a_region_that_does_not_exist_or_is_of_another_partition_is_a_400_and_no_call() {
    let w = World::new().await;
    for (arn, region) in [
        (ROLE_ARN, "zz-evil-9"),
        (ROLE_ARN, "us-west-9"),
        (ROLE_ARN, "cn-north-1"),
        ("arn:aws-cn:iam::111111111111:role/r", "us-west-2"),
    ] {
        let body = json!({"provider": "cloudwatch", "name": "x",
            "cloudwatch": {"role_arn": arn, "region": region}});
        for reply in [
            w.put(body.clone()).await,
            w.call("POST", "/streaming/test", Some(body.clone())).await,
        ] {
            assert_eq!(reply.status, 400, "{region}: {}", reply.body);
            assert!(
                reply.body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("`cloudwatch.region`")
            );
        }
    }
    assert_eq!(w.get().await.body["destination"], Value::Null);
    assert!(w.recent_tests().await.is_empty(), "no test was run");
}

#[tokio::test]
async fn racing_puts_with_one_if_match_leave_the_winners_key_current_and_the_loser_is_told_the_current_version()
 {
    let w = World::new().await;
    w.put(datadog(Some(KEY))).await;
    w.mount(
        validate()
            .and(header("DD-API-KEY", ROTATED))
            .respond_with(ResponseTemplate::new(200)),
    )
    .await;
    w.mount(intake().respond_with(ResponseTemplate::new(202)))
        .await;
    for round in 0..6u64 {
        let version = w.get().await.body["version"].as_u64().unwrap();
        let keys = [
            format!("{:032x}", 0xa000 + round),
            format!("{:032x}", 0xb000 + round),
        ];
        for key in &keys {
            audit_log_tests::watch_secret(key);
        }
        let bodies: Vec<String> = keys.iter().map(|k| datadog(Some(k)).to_string()).collect();
        let if_match = version.to_string();
        let (a, b) = tokio::join!(
            w.conditional("PUT", &if_match, Some(&bodies[0])),
            w.conditional("PUT", &if_match, Some(&bodies[1])),
        );
        let mut statuses = [a.status, b.status];
        statuses.sort();
        assert_eq!(statuses, [200, 412], "round {round}");
        let (winner, loser, winner_key) = if a.status == 200 {
            (&a, &b, &keys[0])
        } else {
            (&b, &a, &keys[1])
        };
        assert_eq!(winner.body["version"], version + 1);
        // The 412 states the version now stored, not the caller's.
        let message = loser.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("version {}", version + 1)),
            "{message}"
        );
        match w.stored_credentials().await.unwrap() {
            Credentials::Datadog { api_key } => assert_eq!(
                api_key.expose_secret(),
                winner_key.as_str(),
                "round {round}"
            ),
            other => panic!("{other:?}"),
        }
    }
    // The saved destination is tested (and would be delivered to) with the winner's key.
    let winner = w.put(datadog(Some(ROTATED))).await;
    assert_eq!(winner.status, 200);
    let tested = w.call("POST", "/streaming/test", None).await;
    assert_eq!(tested.body["success"], true, "{}", tested.body);
}

#[tokio::test]
async fn puts_and_deletes_without_if_match_never_answer_412() {
    let w = World::new().await;
    let bodies: Vec<Value> = (0..8)
        .map(|i| {
            if i % 2 == 0 {
                cloudwatch()
            } else {
                datadog(Some(KEY))
            }
        })
        .collect();
    let replies = futures::future::join_all(bodies.into_iter().map(|b| w.put(b))).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // Each save was one version: none lost, none doubled.
    assert_eq!(w.get().await.body["version"], 8);
    let (put, delete) = tokio::join!(w.put(cloudwatch()), w.call("DELETE", "/streaming", None));
    // A save that meets the deletion between its two steps is told to come back (429).
    let told_to_come_back =
        put.status == 429 && put.body["error"]["code"] == "credentials_being_deleted";
    assert!(put.status == 200 || told_to_come_back, "{}", put.body);
    assert_eq!(delete.status, 204);
}

#[tokio::test]
async fn export_and_replay_ids_that_break_the_id_rules_are_400_and_unknown_ones_404() {
    let w = World::new().await;
    for job in ["/exports/", "/streaming/replays/"] {
        for id in ["a\u{1}b".to_owned(), "x".repeat(256)] {
            let encoded =
                percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC);
            let reply = w.call("GET", &format!("{job}{encoded}"), None).await;
            assert_eq!(reply.status, 400, "{job} {}", id.len());
            assert_eq!(reply.body["error"]["code"], "invalid_path");
        }
        let reply = w.call("GET", &format!("{job}no-such-job"), None).await;
        assert_eq!(reply.status, 404, "{job}");
        assert_eq!(reply.body["error"]["code"], "not_found");
    }
}

#[tokio::test]
async fn path_ids_that_break_the_id_rules_are_400_on_every_route() {
    let w = World::new().await;
    for id in ["a\u{1}b".to_owned(), "x".repeat(256), "😀".repeat(256)] {
        for (method, suffix, body) in every_route() {
            let encoded =
                percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            let path = format!("/v1/organizations/{encoded}/projects/p/audit-logs{suffix}");
            let claims = [("organization_id", id.as_str()), ("sub", "u")];
            let request = audit_log_tests::api_request(
                method,
                &path,
                &[],
                &[],
                body.as_deref(),
                Some(&claims),
            );
            let response = w.api.respond(&request).await;
            assert_eq!(response.status_code, 400, "{method} {suffix} {}", id.len());
            let Some(Body::Text(text)) = &response.body else {
                panic!("no body")
            };
            let body: Value = serde_json::from_str(text).unwrap();
            assert_eq!(body["error"]["code"], "invalid_path");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("`organization_id`")
            );
        }
        let project = format!(
            "/v1/organizations/{}/projects/{}/audit-logs/streaming/test",
            w.org,
            percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC)
        );
        let claims = [("organization_id", w.org.as_str()), ("sub", "u")];
        let request = audit_log_tests::api_request(
            "POST",
            &project,
            &[],
            &[],
            Some(&cloudwatch().to_string()),
            Some(&claims),
        );
        assert_eq!(w.api.respond(&request).await.status_code, 400);
    }
}

#[tokio::test]
async fn an_id_of_spaces_is_an_id_like_any_other() {
    // The contract's id rule is "non-empty": spaces are not nothing.
    let mut w = World::new().await;
    let start = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - Duration::from_secs(60);
    let events: Vec<Value> = (0..2)
        .map(|i| event_at(&w.org, "   ", start + Duration::from_secs(i as u64), i))
        .collect();
    w.store(&events).await;
    w.project = "%20%20%20".into();
    let listed = w.list(&[]).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let mut newest_first = events.clone();
    newest_first.reverse();
    assert_eq!(listed.body["events"], json!(newest_first));
}

#[tokio::test]
async fn ids_of_255_wide_characters_are_ids_like_any_other() {
    // Percent-encoded into keys, these ids would take 1,530 and 3,060 bytes: they are kept as
    // UTF-8 with only their separators escaped, and the project is cut to fit sort keys.
    let mut w = World::new().await;
    let org = format!("{}{}", w.org, "é".repeat(255 - w.org.chars().count()));
    let project = "😀".repeat(255);
    let encode = |id: &str| {
        percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let start = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - Duration::from_secs(60);
    let events: Vec<Value> = (0..3)
        .map(|i| event_at(&org, &project, start + Duration::from_secs(i as u64), i))
        .collect();
    w.store(&events).await;
    let mut newest_first = events.clone();
    newest_first.reverse();
    w.project = encode(&project);
    let path_org = encode(&org);
    let listed = w
        .call_as(Some(&org), &path_org, "GET", "", &[], &[], None)
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["events"], json!(newest_first));
    let everywhere = w.call_organization(Some(&org), &path_org, "", &[]).await;
    assert_eq!(everywhere.body["events"], json!(newest_first));
    let projects = w
        .call_organization(Some(&org), &path_org, "/projects", &[])
        .await;
    assert_eq!(projects.status, 200, "{}", projects.body);
    assert_eq!(projects.body["projects"].as_array().unwrap().len(), 1);
    assert_eq!(projects.body["projects"][0]["project_id"], json!(project));
    let saved = w
        .call_as(
            Some(&org),
            &path_org,
            "PUT",
            "/streaming",
            &[],
            &[],
            Some(&datadog(Some(KEY)).to_string()),
        )
        .await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(
        (&saved.body["organization_id"], &saved.body["project_id"]),
        (&json!(org), &json!(project))
    );
    let view = w
        .call_as(Some(&org), &path_org, "GET", "/streaming", &[], &[], None)
        .await;
    assert_eq!(view.body["destination"]["provider"], "datadog");
}

#[tokio::test]
async fn time_ranges_with_offsets_select_the_same_instants_as_utc() {
    let w = World::new().await;
    let events = w.series(10, Duration::from_secs(7200), Duration::from_secs(600));
    w.store(&events).await;
    let at = |i: usize| {
        OffsetDateTime::parse(events[i]["timestamp"].as_str().unwrap(), &Rfc3339).unwrap()
    };
    let ns = |reply: &Reply| -> Vec<i64> {
        reply.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["n"].as_i64().unwrap())
            .collect()
    };
    for offset in [
        time::UtcOffset::from_hms(9, 0, 0).unwrap(),
        time::UtcOffset::from_hms(-8, 0, 0).unwrap(),
    ] {
        let since = at(3).to_offset(offset).format(&Rfc3339).unwrap();
        let until = at(6).to_offset(offset).format(&Rfc3339).unwrap();
        let page = w.list(&[("since", &since), ("until", &until)]).await;
        assert_eq!(page.status, 200, "{since}");
        assert_eq!(ns(&page), [6, 5, 4, 3], "{since} .. {until}");
        // An offset's `+` sent unencoded, as in a hand-made URL (form decoding reads a space):
        // the same instants.
        let bare = |t: &str| t.replace('+', " ");
        let page = w
            .list(&[("since", &bare(&since)), ("until", &bare(&until))])
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert_eq!(ns(&page), [6, 5, 4, 3], "{since} .. {until}");
        // Date and time joined by the space RFC 3339 allows (and the `+` sent bare): the same.
        let spaced = |t: &str| bare(&t.replacen('T', " ", 1));
        let page = w
            .list(&[("since", &spaced(&since)), ("until", &spaced(&until))])
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert_eq!(ns(&page), [6, 5, 4, 3], "{since} .. {until}");
        let paged = w
            .list(&[("since", &since), ("until", &until), ("limit", "2")])
            .await;
        let cursor = paged.body["next_cursor"].as_str().unwrap().to_owned();
        let rest = w
            .list(&[
                ("since", &since),
                ("until", &until),
                ("limit", "2"),
                ("cursor", &cursor),
            ])
            .await;
        assert_eq!(ns(&rest), [4, 3]);
    }
}

#[tokio::test]
async fn tampered_foreign_or_reused_cursors_are_400_invalid_cursor() {
    let w = World::new().await;
    let events = w.series(6, Duration::from_secs(3600), Duration::from_secs(60));
    w.store(&events).await;
    let first = w.list(&[("limit", "2")]).await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let since = events[0]["timestamp"].as_str().unwrap();
    let tampered = {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let text = String::from_utf8(engine.decode(&cursor).unwrap()).unwrap();
        engine.encode(text.replacen('2', "1", 1))
    };
    let garbage = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("zzz#m")
    };
    for query in [
        vec![("cursor", tampered.as_str())],
        vec![("cursor", garbage.as_str())],
        vec![("cursor", "%%%")],
        // Reused with another range.
        vec![("cursor", cursor.as_str()), ("since", since)],
    ] {
        let reply = w.list(&query).await;
        assert_eq!(reply.status, 400, "{query:?}: {}", reply.body);
        assert_eq!(reply.body["error"]["code"], "invalid_cursor");
    }
    // Another project's cursor.
    let other = w
        .call_as(
            Some(&w.org),
            &w.org,
            "GET",
            "",
            &[("cursor", cursor.as_str())],
            &[],
            None,
        )
        .await;
    assert_eq!(other.status, 200, "the same project takes it");
    let foreign_path = format!("/v1/organizations/{}/projects/another/audit-logs", w.org);
    let claims = [("organization_id", w.org.as_str()), ("sub", "u")];
    let request = audit_log_tests::api_request(
        "GET",
        &foreign_path,
        &[("cursor", cursor.as_str())],
        &[],
        None,
        Some(&claims),
    );
    assert_eq!(w.api.respond(&request).await.status_code, 400);
    // The failures listing: tampered and foreign cursors alike.
    for cursor in [tampered.as_str(), cursor.as_str(), garbage.as_str()] {
        let reply = w.failures(&[("cursor", cursor)]).await;
        assert_eq!(reply.status, 400);
        assert_eq!(reply.body["error"]["code"], "invalid_cursor");
    }
}

#[tokio::test]
async fn a_cursor_goes_on_with_its_range_written_another_way() {
    // GIVEN a first page of a range
    let w = World::new().await;
    let events = w.series(6, Duration::from_secs(3600), Duration::from_secs(60));
    w.store(&events).await;
    let first = w
        .list(&[("limit", "2"), ("since", "2000-01-01T00:00:00Z")])
        .await;
    let cursor = first.body["next_cursor"].as_str().unwrap();
    // WHEN the next is asked for with the same instant written otherwise
    for since in ["2000-01-01T00:00:00.000+00:00", "2000-01-01T01:00:00+01:00"] {
        let next = w
            .list(&[("limit", "2"), ("since", since), ("cursor", cursor)])
            .await;
        // THEN the listing goes on where it stood
        assert_eq!(next.status, 200, "{since}: {}", next.body);
        assert_eq!(
            ns(&next),
            ns(&first).iter().map(|n| n - 2).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn a_listing_that_reads_or_makes_no_cursor_needs_no_key() {
    let w = World::new().await;
    w.store(&w.series(3, Duration::from_secs(600), Duration::from_secs(60)))
        .await;
    // One page holds everything: Secrets Manager is not asked.
    let all = w.list(&[("limit", "10")]).await;
    assert_eq!(ns(&all).len(), 3);
    assert!(all.body["next_cursor"].is_null());
    assert!(
        w.service_key_made().await.is_none(),
        "no key made for a page without a cursor"
    );
    // A page with more after it makes the key, and its cursor goes on.
    let first = w.list(&[("limit", "2")]).await;
    let cursor = first.body["next_cursor"].as_str().unwrap();
    assert!(w.service_key_made().await.is_some());
    assert_eq!(
        ns(&w.list(&[("limit", "2"), ("cursor", cursor)]).await).len(),
        1
    );
}

#[tokio::test]
async fn every_container_of_a_deployment_signs_cursors_with_one_key_of_its_own() {
    let aws = emulator().await;
    let prefix = format!("{}/streaming/", unique("stack"));
    let container = || SecretStore::new(aws_sdk_secretsmanager::Client::new(&aws), &prefix);
    // Two containers meet the first listing at once: one makes the key, both use it.
    let (a, b) = (container(), container());
    let (ka, kb) = tokio::join!(a.service_key(), b.service_key());
    let (ka, kb) = (ka.unwrap(), kb.unwrap());
    assert_eq!(ka.expose_secret(), kb.expose_secret());
    assert_eq!(ka.expose_secret().len(), 64);
    // A later container reads it; another deployment has its own.
    let later = container().service_key().await.unwrap();
    assert_eq!(later.expose_secret(), ka.expose_secret());
    // Its logs never show it.
    audit_log_tests::watch_secret(ka.expose_secret());
    let elsewhere = SecretStore::new(
        aws_sdk_secretsmanager::Client::new(&aws),
        format!("{}/streaming/", unique("stack")),
    );
    assert_ne!(
        elsewhere.service_key().await.unwrap().expose_secret(),
        ka.expose_secret()
    );
}

/// An event of about `bytes` whose text is mostly quotes: each doubles once escaped into the
/// Lambda response.
fn quoted_event(w: &World, n: usize, bytes: usize) -> Value {
    let t = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
        - Duration::from_secs(600 - n as u64);
    let mut v = event_at(&w.org, &w.project, t, n);
    v["notes"] = json!("\"".repeat(bytes / 2));
    v
}

#[tokio::test]
async fn every_page_stays_under_lambdas_6_mb_counting_the_escaped_body() {
    let w = World::new().await;
    // Six events of 800 KB: 4.8 MB as JSON, about 9.6 MB inside a Lambda response.
    let events: Vec<Value> = (0..6).map(|n| quoted_event(&w, n, 800_000)).collect();
    for e in &events {
        w.store(std::slice::from_ref(e)).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("limit", "1000")];
        if let Some(c) = &cursor {
            query.push(("cursor", c));
        }
        let page = w.list(&query).await;
        assert_eq!(page.status, 200);
        assert!(
            page.lambda_bytes <= 6_291_456,
            "{} bytes",
            page.lambda_bytes
        );
        seen.extend(
            page.body["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["n"].as_i64().unwrap()),
        );
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, [5, 4, 3, 2, 1, 0]);

    // The failures listing carries the events too.
    w.fail_all_stored().await;
    let mut listed = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![];
        if let Some(c) = &cursor {
            query.push(("cursor", c.as_str()));
        }
        let page = w.failures(&query).await;
        assert_eq!(page.status, 200);
        assert!(
            page.lambda_bytes <= 6_291_456,
            "{} bytes",
            page.lambda_bytes
        );
        listed += page.body["failures"].as_array().unwrap().len();
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(listed, 6);
}

#[tokio::test]
async fn a_failed_event_past_its_retention_is_listed_without_it() {
    // GIVEN two failed events, one of which has passed its retention (DynamoDB deletes an
    // expired item days later: until then it is still read)
    let w = World::new().await;
    w.store(&w.series(2, Duration::from_secs(3600), Duration::from_secs(60)))
        .await;
    let stored = w.fail_all_stored().await;
    let now = time::OffsetDateTime::now_utc();
    let partition = audit_log::store::partition_key(&w.org, &w.project);
    let expired = &stored[0];
    aws_sdk_dynamodb::Client::new(&w.aws)
        .update_item()
        .table_name(&w.events_table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(partition))
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(expired.sort_key.clone()),
        )
        .update_expression("SET expires_at = :past")
        .expression_attribute_values(
            ":past",
            aws_sdk_dynamodb::types::AttributeValue::N((now.unix_timestamp() - 60).to_string()),
        )
        .send()
        .await
        .unwrap();
    // WHEN the failures are listed
    let page = w.failures(&[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    // THEN both are, the expired one without its event
    let failures = page.body["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2, "{}", page.body);
    let event_of = |id: &str| {
        failures
            .iter()
            .find(|f| f["event_id"] == id)
            .map(|f| f["event"].clone())
            .unwrap()
    };
    assert_eq!(event_of(&expired.message_id), Value::Null);
    assert!(event_of(&stored[1].message_id).is_object());
}

#[tokio::test]
async fn replays_turned_away_while_one_runs_cost_none_of_the_hours_ten() {
    let w = World::new().await;
    w.put(cloudwatch()).await;
    let body = json!({"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z"});
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let answer = w
            .call("POST", "/streaming/replay", Some(body.clone()))
            .await;
        statuses.push((answer.status, answer.body["error"]["code"].clone()));
    }
    assert_eq!(statuses[0].0, 202);
    // A replay is running: the eleven others are refused as such, never as `rate_limited`
    // (they would have been from the eleventh on, had each counted against the ten an hour).
    assert!(
        statuses[1..]
            .iter()
            .all(|(status, code)| *status == 429 && code == "replay_running"),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_staged_version_whose_secret_a_delete_removed_cannot_be_promoted() {
    use audit_log::credentials::{CredentialsError, Secrets};
    let aws = emulator().await;
    let store = SecretStore::new(
        aws_sdk_secretsmanager::Client::new(&aws),
        format!("{}/streaming/", unique("stack")),
    );
    let credentials = Credentials::Datadog {
        api_key: secrecy::SecretString::from(KEY),
    };
    let staged = store.stage("o", "p", &credentials).await.unwrap();
    // A DELETE of the project between a save's stage and its promotion.
    store.delete("o", "p").await.unwrap();
    let promoted = store.promote("o", "p", &staged).await;
    assert!(
        matches!(
            promoted,
            Err(CredentialsError::NotFound | CredentialsError::Deleting)
        ),
        "{promoted:?}"
    );
}
