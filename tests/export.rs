//! Exports against the local AWS emulator: the whole stack built from `template.yaml` (the
//! export queue and bucket included), events captured as SQS hands them over, export steps run
//! as the export queue's mapping runs them, and files downloaded through their presigned links
//! as a customer would. Every API answer is held to `functions/api/openapi.yaml`.

use audit_log::clock::{Clock, ManualClock};
use audit_log::streaming::{ConfigTable, Exports};
use audit_log_api::Api;
use audit_log_api::export::{ExportSteps, STEP_LEASE};
use audit_log_tests::local::{
    Stack, drain_events_queue, drain_export_queue, drain_queue, packed_by_a_newer_release,
};
use audit_log_tests::{OpenApi, api_request, emulator, failed_ids, unique};
use aws_lambda_events::encodings::Body;
use aws_sdk_dynamodb::types::AttributeValue;
use flate2::read::MultiGzDecoder;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const BASE: &str = "/v1/organizations/{organization_id}/projects/{project_id}/audit-logs";

struct World {
    stack: Stack,
    api: Api,
    clock: Arc<ManualClock>,
    openapi: OpenApi,
    org: String,
    project: String,
}

struct Reply {
    status: u16,
    body: Value,
}

impl World {
    async fn new(steps: ExportSteps) -> Self {
        Self::on(Stack::create(&emulator().await, "/hashicorp").await, steps)
    }

    fn on(stack: Stack, steps: ExportSteps) -> Self {
        let clock = Arc::new(ManualClock::at(
            OffsetDateTime::now_utc().replace_nanosecond(0).unwrap(),
        ));
        let api = stack
            .api(None)
            .with_clock(clock.clone())
            .with_export_steps(steps);
        Self {
            stack,
            api,
            clock,
            openapi: OpenApi::load(),
            org: unique("org"),
            project: unique("registry"),
        }
    }

    /// Sends the events to the events queue and runs capture over it.
    async fn capture(&self, events: &[Value]) {
        let bodies: Vec<String> = events.iter().map(Value::to_string).collect();
        self.stack.send(&bodies).await;
        drain_events_queue(&self.stack, &self.stack.capture(), |_| {}).await;
    }

    /// A request of a member of `as_org` to the project's `suffix`, checked against the
    /// OpenAPI document.
    async fn call_as(
        &self,
        as_org: &str,
        project: &str,
        method: &str,
        suffix: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Reply {
        let path = format!(
            "/v1/organizations/{}/projects/{project}/audit-logs{suffix}",
            self.org
        );
        let text = body.map(|b| b.to_string());
        let request = api_request(
            method,
            &path,
            query,
            &[],
            text.as_deref(),
            Some(&[("organization_id", as_org), ("sub", "auditor")]),
        );
        let response = self.api.respond(&request).await;
        let status = u16::try_from(response.status_code).unwrap();
        let body = match response.body {
            Some(Body::Text(t)) => serde_json::from_str(&t).unwrap(),
            _ => Value::Null,
        };
        let template = if suffix.starts_with("/exports/") {
            format!("{BASE}/exports/{{export_id}}")
        } else {
            format!("{BASE}{suffix}")
        };
        self.openapi.check(method, &template, status, Some(&body));
        Reply { status, body }
    }

    async fn call(&self, method: &str, suffix: &str, body: Option<Value>) -> Reply {
        self.call_as(&self.org, &self.project, method, suffix, &[], body)
            .await
    }

    /// Every page of the project's listing with these filters, as the listing gives them.
    async fn listing(&self, filters: &[(&str, &str)]) -> Vec<Value> {
        let mut events = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = filters.to_vec();
            query.push(("limit", "7"));
            if let Some(c) = &cursor {
                query.push(("cursor", c));
            }
            let page = self
                .call_as(&self.org, &self.project, "GET", "", &query, None)
                .await;
            assert_eq!(page.status, 200, "{}", page.body);
            events.extend(page.body["events"].as_array().unwrap().iter().cloned());
            match page.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return events,
            }
        }
    }

    /// Starts an export, runs its steps to the end and answers what GET says of it.
    async fn export(&self, body: Value) -> Reply {
        let started = self.call("POST", "/exports", Some(body)).await;
        assert_eq!(started.status, 202, "{}", started.body);
        drain_export_queue(&self.stack, &self.api).await;
        self.shown(started.body["id"].as_str().unwrap()).await
    }

    async fn shown(&self, id: &str) -> Reply {
        let shown = self.call("GET", &format!("/exports/{id}"), None).await;
        assert_eq!(shown.status, 200, "{}", shown.body);
        shown
    }
}

/// The file behind a completed export's link, as a customer downloads it, unzipped.
async fn download(export: &Value) -> String {
    assert_eq!(export["state"], "completed", "{export}");
    let url = export["download_url"].as_str().expect("a download link");
    let response = reqwest::get(url).await.expect("the link answers");
    assert!(response.status().is_success(), "{}", response.status());
    let bytes = response.bytes().await.unwrap();
    assert_eq!(export["bytes"].as_u64(), Some(bytes.len() as u64));
    let mut text = String::new();
    MultiGzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .expect("a gzip file");
    text
}

/// `n` events of the project, a minute apart from `start`, the seed's examples in turn;
/// `n` field = index.
fn events(w: &World, n: usize, start: OffsetDateTime) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let seed = audit_log::fixtures::SEED_EVENTS[i % 5].1;
            let mut v: Value = serde_json::from_str(seed).unwrap();
            v["organization_id"] = json!(w.org);
            v["project_id"] = json!(w.project);
            v["timestamp"] = json!(
                (start + Duration::from_secs(60 * i as u64))
                    .format(&Rfc3339)
                    .unwrap()
            );
            v["n"] = json!(i);
            v
        })
        .collect()
}

fn time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

#[tokio::test]
async fn ndjson_and_csv_exports_hold_the_listings_events_one_for_one() {
    // GIVEN events of a project that has no streaming configuration (a deleted registry's),
    // and events of another project
    let w = World::new(ExportSteps::default()).await;
    let start = w.clock.now() - Duration::from_secs(3 * 86_400);
    w.capture(&events(&w, 40, start)).await;
    let mut other = events(&w, 5, start);
    for e in &mut other {
        e["project_id"] = json!("another-registry");
    }
    w.capture(&other).await;
    let (from, to) = (
        time(start + Duration::from_secs(600)),
        time(start + Duration::from_secs(1800)),
    );
    for filters in [
        vec![],
        vec![("status", "FAILED")],
        vec![("resource_type", "channel"), ("action", "update")],
        vec![
            ("since", from.as_str()),
            ("until", to.as_str()),
            ("status", "OK"),
        ],
    ] {
        // WHEN the same search is exported as NDJSON
        let body: serde_json::Map<String, Value> = filters
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let export = w.export(Value::Object(body.clone())).await;
        // THEN the file holds the listing's events, in its order, each line exactly as the
        // listing gives it
        let listed = w.listing(&filters).await;
        assert!(!listed.is_empty(), "{filters:?}");
        let text = download(&export.body).await;
        let lines: Vec<&str> = text.lines().collect();
        let expected: Vec<String> = listed
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        assert_eq!(lines, expected, "{filters:?}");
        assert_eq!(export.body["events"], listed.len());
        assert_eq!(
            Value::Object(export.body["filters"].as_object().unwrap().clone()),
            {
                let mut named = body.clone();
                named.remove("since");
                named.remove("until");
                Value::Object(named)
            }
        );
        // AND as CSV, one row per event with its columns and the event itself last
        let mut csv_body = body;
        csv_body.insert("format".into(), json!("csv"));
        let export = w.export(Value::Object(csv_body)).await;
        let text = download(&export.body).await;
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(
            reader
                .headers()
                .unwrap()
                .iter()
                .collect::<Vec<_>>()
                .join(","),
            "timestamp,organization_id,project_id,action,status,description,actor_principal_id,actor_type,actor_email,resource_type,resource_id,resource_name,error,event"
        );
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), listed.len(), "{filters:?}");
        for (row, event) in rows.iter().zip(&listed) {
            assert_eq!(&row[13], serde_json::to_string(event).unwrap());
            for (column, field) in [
                (0, "timestamp"),
                (2, "project_id"),
                (3, "action"),
                (4, "status"),
            ] {
                assert_eq!(&row[column], event[field].as_str().unwrap());
            }
            assert_eq!(&row[6], event["actor"]["principal_id"].as_str().unwrap());
        }
    }
}

#[tokio::test]
async fn a_large_export_goes_up_in_parts_and_steps_that_die_lose_nothing() {
    // GIVEN 110 events of about 100 KB that hardly compress: over 8 MB of gzip, so the file
    // needs two parts of at least S3's 5 MiB
    let steps = ExportSteps {
        part_bytes: 5 * 1024 * 1024,
        page_size: 10,
        pages_per_step: 2,
    };
    let w = World::new(steps).await;
    let mut dice = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    let start = w.clock.now() - Duration::from_secs(86_400);
    let mut large = events(&w, 110, start);
    for e in &mut large {
        let noise: String = (0..100_000)
            .map(|_| char::from(dice.sample(rand::distr::Alphanumeric)))
            .collect();
        e["detail"] = json!(noise);
    }
    w.capture(&large).await;
    let started = w.call("POST", "/exports", Some(json!({}))).await;
    let id = started.body["id"].as_str().unwrap().to_owned();
    // WHEN every third step dies part way through (its message comes back once its lease is
    // over)
    let invocations = AtomicUsize::new(0);
    let killed = AtomicUsize::new(0);
    drain_queue(
        &w.stack,
        "ExportQueue",
        1,
        |event| {
            let (api, clock) = (&w.api, &w.clock);
            let (invocations, killed) = (&invocations, &killed);
            async move {
                let n = invocations.fetch_add(1, Ordering::Relaxed);
                let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
                let step = Box::pin(api.handle_exports(event, deadline));
                let answer = if n % 3 == 1 {
                    let cut = Duration::from_millis(40 * (n as u64 % 10 + 1));
                    match tokio::time::timeout(cut, step).await {
                        Ok(answer) => answer,
                        Err(_) => {
                            killed.fetch_add(1, Ordering::Relaxed);
                            clock.advance(STEP_LEASE + Duration::from_secs(1));
                            return None;
                        }
                    }
                } else {
                    step.await
                };
                Some(failed_ids(&answer))
            }
        },
        |_| {},
    )
    .await;
    // THEN the export completed with every event once, newest first, as the listing has them
    assert!(killed.load(Ordering::Relaxed) > 0, "no step died");
    let shown = w.shown(&id).await;
    let text = download(&shown.body).await;
    let ns: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ns, (0..110).rev().collect::<Vec<u64>>());
    let listed = w.listing(&[]).await;
    assert_eq!(text.lines().count(), listed.len());
    assert_eq!(shown.body["events"], 110);
    // AND it went up as a multipart upload of more than one part
    let configs = ConfigTable::new(
        aws_sdk_dynamodb::Client::new(&w.stack.aws),
        &w.stack.config_table,
    );
    let export = configs
        .export(&w.org, &w.project, &id)
        .await
        .unwrap()
        .unwrap();
    assert!(export.parts.len() >= 2, "{} parts", export.parts.len());
    assert!(
        export.parts[..export.parts.len() - 1]
            .iter()
            .all(|p| p.bytes >= 5 * 1024 * 1024)
    );
}

#[tokio::test]
async fn an_export_is_its_organizations_alone_and_its_link_lasts_15_minutes() {
    let w = World::new(ExportSteps::default()).await;
    w.capture(&events(&w, 3, w.clock.now() - Duration::from_secs(3600)))
        .await;
    let export = w.export(json!({"format": "csv"})).await;
    let id = export.body["id"].as_str().unwrap();
    // The link is presigned for 15 minutes, and says when it stops working
    let url = export.body["download_url"].as_str().unwrap();
    assert!(url.contains("X-Amz-Expires=900"), "{url}");
    assert!(
        url.contains(&format!("/{}/exports/{id}.csv.gz", w.stack.export_bucket)),
        "{url}"
    );
    assert_eq!(
        export.body["expires_at"],
        time(w.clock.now() + Duration::from_secs(900))
    );
    // Another organization's member cannot see it, nor can it be found from another project
    let foreign = w
        .call_as(
            "another-org",
            &w.project,
            "GET",
            &format!("/exports/{id}"),
            &[],
            None,
        )
        .await;
    assert_eq!(foreign.status, 403);
    let elsewhere = w
        .call_as(
            &w.org,
            "another-registry",
            "GET",
            &format!("/exports/{id}"),
            &[],
            None,
        )
        .await;
    assert_eq!(elsewhere.status, 404);
}

#[tokio::test]
async fn an_export_whose_file_cannot_be_written_fails_and_frees_its_slot() {
    // GIVEN a stack whose export bucket is gone
    let mut stack = Stack::create(&emulator().await, "/hashicorp").await;
    stack.export_bucket = unique("no-such-bucket");
    let w = World::on(stack, ExportSteps::default());
    w.capture(&events(&w, 2, w.clock.now() - Duration::from_secs(60)))
        .await;
    // WHEN as many exports are started as may run at once
    let mut started = vec![
        w.call("POST", "/exports", Some(json!({"format": "csv"})))
            .await,
    ];
    while started.len() < audit_log::streaming::RUNNING_EXPORTS {
        started.push(w.call("POST", "/exports", None).await);
    }
    assert!(started.iter().all(|s| s.status == 202));
    assert_eq!(w.call("POST", "/exports", None).await.status, 429);
    drain_export_queue(&w.stack, &w.api).await;
    // THEN after a few failed steps each is failed with a reason a person can act on
    for started in started {
        let shown = w.shown(started.body["id"].as_str().unwrap()).await;
        assert_eq!(shown.body["state"], "failed", "{}", shown.body);
        assert!(
            shown.body["error"]
                .as_str()
                .unwrap()
                .contains("start it again")
        );
        assert_eq!(shown.body["download_url"], Value::Null);
    }
    // AND the organization may start others
    assert_eq!(w.call("POST", "/exports", None).await.status, 202);
}

/// The organization's export slots as the configuration table keeps them.
async fn slots(w: &World) -> Vec<std::collections::HashMap<String, AttributeValue>> {
    let out = w
        .stack
        .dynamodb
        .query()
        .table_name(&w.stack.config_table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :slot)")
        .expression_attribute_values(":pk", AttributeValue::S(audit_log::store::key_part(&w.org)))
        .expression_attribute_values(":slot", AttributeValue::S("export-slot#".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    out.items.unwrap_or_default()
}

#[tokio::test]
async fn a_slot_whose_release_was_lost_is_free_once_its_export_has_ended() {
    // GIVEN as many exports as may run at once, each in its slot
    let w = World::new(ExportSteps::default()).await;
    w.capture(&events(&w, 2, w.clock.now() - Duration::from_secs(60)))
        .await;
    for _ in 0..audit_log::streaming::RUNNING_EXPORTS {
        assert_eq!(w.call("POST", "/exports", None).await.status, 202);
    }
    let held = slots(&w).await;
    assert_eq!(held.len(), audit_log::streaming::RUNNING_EXPORTS);
    assert_eq!(w.call("POST", "/exports", None).await.status, 429);
    // WHEN they end, but the release of every slot is lost (written back as it was), one of
    // them naming an export whose item is not written yet (a start under way)
    drain_export_queue(&w.stack, &w.api).await;
    assert!(slots(&w).await.is_empty());
    for (i, mut slot) in held.into_iter().enumerate() {
        if i == 0 {
            slot.insert("export_id".into(), AttributeValue::S(unique("starting")));
        }
        w.stack
            .dynamodb
            .put_item()
            .table_name(&w.stack.config_table)
            .set_item(Some(slot))
            .send()
            .await
            .unwrap();
    }
    // THEN the organization may start exports at once, not 2 hours later, in every slot but
    // the one of the start under way
    for _ in 1..audit_log::streaming::RUNNING_EXPORTS {
        let started = w.call("POST", "/exports", None).await;
        assert_eq!(started.status, 202, "{}", started.body);
    }
    assert_eq!(w.call("POST", "/exports", None).await.status, 429);
    // AND a minute on, that start has plainly died: its slot is free
    w.clock.advance(Duration::from_secs(61));
    assert_eq!(w.call("POST", "/exports", None).await.status, 202);
    // AND slots whose exports run are not taken
    assert_eq!(w.call("POST", "/exports", None).await.status, 429);
}

#[tokio::test]
async fn an_item_this_release_cannot_read_is_named_and_the_rest_is_listed_and_exported() {
    // GIVEN stored events, one of which a newer release packed (read after a rollback)
    let w = World::new(ExportSteps::default()).await;
    let sent = events(&w, 9, w.clock.now() - Duration::from_secs(3_600));
    w.capture(&sent).await;
    let items = w.stack.stored_items(&w.org, &w.project).await;
    assert_eq!(items.len(), 9);
    w.stack
        .overwrite_item(packed_by_a_newer_release(items[4].clone()))
        .await;
    // WHEN the project's events are listed, page after page, unfiltered and searched
    for filters in [vec![], vec![("status", "OK")]] {
        let listed: Vec<u64> = w
            .listing(&filters)
            .await
            .iter()
            .map(|e| e["n"].as_u64().unwrap())
            .collect();
        // THEN every other event is there, in order, and no page failed
        let expected: Vec<u64> = (0..9u64)
            .rev()
            .filter(|n| *n != 4)
            .filter(|n| filters.is_empty() || sent[*n as usize]["status"] == "OK")
            .collect();
        assert_eq!(listed, expected, "{filters:?}");
    }
    // AND an export completes with the others, saying what it could not hold
    let export = w.export(json!({})).await;
    assert_eq!(export.body["events"], 8, "{}", export.body);
    assert_eq!(download(&export.body).await.lines().count(), 8);
    assert_eq!(
        export.body["error"],
        "1 stored events of the range could not be read and are not in the file"
    );
}
