//! Delivery to Datadog, through a local stand-in: entries, retries, splits, keys and refusals.

use super::*;

#[tokio::test]
async fn datadog_receives_gzip_entries_with_the_api_key() {
    let dd = Datadog::new().await;
    dd.answer_key(KEY, 202).await;
    let (events, records) = dd.events(3).await;
    let response = dd.deliver(&records).await;
    assert!(response.batch_item_failures.is_empty());
    let requests = dd.requests().await;
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    // gzip, the encoding Datadog's API reference documents.
    assert_eq!(request.headers.get("content-encoding").unwrap(), "gzip");
    assert_eq!(
        request.headers.get("content-type").unwrap(),
        "application/json"
    );
    let got = entries(request);
    assert_eq!(got.len(), 3);
    for (entry, original) in got.iter().zip(&events) {
        for (name, value) in original.as_object().unwrap() {
            if name == "status" {
                assert_eq!(&entry["event_status"], value);
            } else {
                assert_eq!(&entry[name], value, "{name}");
            }
        }
        let severity = if original["status"] == "OK" {
            "info"
        } else {
            "error"
        };
        assert_eq!(entry["status"], severity);
        assert_eq!(entry["timestamp"], original["timestamp"]);
        assert_eq!(
            entry["ddtags"],
            format!(
                "organization_id:{},project_id:{},action:{}",
                dd.org,
                dd.project,
                original["action"].as_str().unwrap()
            )
        );
    }
    assert_eq!(
        dd.health().await.status_at(time::OffsetDateTime::now_utc()),
        "healthy"
    );
}

#[tokio::test]
async fn a_project_of_255_wide_characters_is_delivered_to_like_any_other() {
    // Kept as UTF-8 in the events' keys (percent-encoded they would not fit), and cut to fit
    // the lane's: the stream reads the project back from the stored event's key.
    let org = unique("org");
    let org = format!("{org}{}", "é".repeat(255 - org.chars().count()));
    let dd = Datadog::of(org, "😀".repeat(255)).await;
    dd.answer_key(KEY, 202).await;
    let (events, records) = dd.events(2).await;
    assert!(dd.deliver(&records).await.batch_item_failures.is_empty());
    let got: Vec<Value> = dd.requests().await.iter().flat_map(entries).collect();
    assert_eq!(got.len(), events.len());
    for entry in got {
        assert_eq!(entry["organization_id"], json!(dd.org));
        assert_eq!(entry["project_id"], json!(dd.project));
        let tags = entry["ddtags"].as_str().unwrap();
        assert!(tags.starts_with(&format!(
            "organization_id:{},project_id:{},",
            dd.org, dd.project
        )));
    }
}

#[tokio::test]
async fn events_stored_before_they_were_packed_are_delivered_as_they_were() {
    let dd = Datadog::new().await;
    dd.answer_key(KEY, 202).await;
    let events: Vec<Value> = (0..4)
        .map(|i| recent(&dd.org, &dd.project, 100 - i, "OK"))
        .collect();
    let old: Vec<(String, Value)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("old-{i}"), e.clone()))
        .collect();
    audit_log_tests::store_as_before(&dd.world.dynamodb, &dd.world.events_table, &old).await;
    let records =
        as_sent(&stream_records(&dd.world.aws, &dd.world.dynamodb, &dd.world.events_table).await);
    let response = dd.deliver(&records).await;
    assert!(response.batch_item_failures.is_empty());
    let requests = dd.requests().await;
    let got: Vec<Value> = requests.iter().flat_map(entries).collect();
    assert_eq!(got.len(), 4);
    for (i, (entry, original)) in got.iter().zip(&events).enumerate() {
        assert_eq!(entry["timestamp"], original["timestamp"]);
        assert_eq!(entry["actor"], original["actor"]);
        assert_eq!(
            entry["event_id"],
            format!("old-{i}"),
            "known by its message id"
        );
    }
}

#[tokio::test]
async fn a_server_error_is_retried_and_then_succeeds() {
    let dd = Datadog::new().await;
    dd.mount(
        intake()
            .respond_with(ResponseTemplate::new(500))
            .up_to_n_times(1)
            .with_priority(1),
    )
    .await;
    dd.mount(
        intake()
            .respond_with(ResponseTemplate::new(202))
            .with_priority(2),
    )
    .await;
    let (_, records) = dd.events(2).await;
    let response = dd.deliver(&records).await;
    assert!(response.batch_item_failures.is_empty());
    let requests = dd.requests().await;
    assert_eq!(requests.len(), 2);
    assert_eq!(
        entries(&requests[0]),
        entries(&requests[1]),
        "the same logs, sent again"
    );
}

#[tokio::test]
async fn a_request_too_large_for_datadog_is_split_until_it_passes() {
    let dd = Datadog::new().await;
    // The stand-in takes at most two logs per request.
    dd.mount(
        intake()
            .and(|r: &Request| entries(r).len() > 2)
            .respond_with(ResponseTemplate::new(413)),
    )
    .await;
    dd.mount(intake().respond_with(ResponseTemplate::new(202)))
        .await;
    let (events, records) = dd.events(5).await;
    let response = dd.deliver(&records).await;
    assert!(response.batch_item_failures.is_empty());
    let accepted: Vec<Value> = dd
        .requests()
        .await
        .iter()
        .map(entries)
        .filter(|e| e.len() <= 2)
        .flatten()
        .collect();
    assert_eq!(accepted.len(), events.len(), "every log delivered once");
    let mut seen: Vec<i64> = accepted
        .iter()
        .map(|e| e["sequence_in_test"].as_i64().unwrap())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5);
}

/// Five events to a Datadog that answers `status` to every request holding the first: each of
/// the others is delivered once, only the first is listed as a failure; the destination's last
/// error.
async fn one_log_datadog_will_never_take(status: u16) -> String {
    let dd = Datadog::new().await;
    let (events, records) = dd.events(5).await;
    let first = events[0]["sequence_in_test"].clone();
    let holds_the_first =
        move |r: &Request| entries(r).iter().any(|e| e["sequence_in_test"] == first);
    dd.mount(
        intake()
            .and(holds_the_first.clone())
            .respond_with(ResponseTemplate::new(status)),
    )
    .await;
    dd.mount(intake().respond_with(ResponseTemplate::new(202)))
        .await;
    let response = dd.deliver(&records).await;
    assert!(response.batch_item_failures.is_empty());
    let others: Vec<i64> = events[1..]
        .iter()
        .map(|e| e["sequence_in_test"].as_i64().unwrap())
        .collect();
    let mut accepted: Vec<i64> = dd
        .requests()
        .await
        .iter()
        .filter(|r| !holds_the_first(r))
        .flat_map(entries)
        .map(|e| e["sequence_in_test"].as_i64().unwrap())
        .collect();
    accepted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(
        accepted, others,
        "HTTP {status}: each of the others sent, once"
    );
    let listed = dd.failures_listed().await;
    assert_eq!(
        listed.len(),
        1,
        "HTTP {status}: only the first is a failure"
    );
    assert_eq!(
        dd.world.lane(&dd.org, &dd.project).await.state,
        audit_log::lane::LaneState::Delivering,
        "a log's own failure is no trouble of the destination's"
    );
    dd.health().await.last_error.unwrap()
}

#[tokio::test]
async fn a_log_too_large_for_datadog_costs_the_others_in_its_request_nothing() {
    let error = one_log_datadog_will_never_take(413).await;
    assert!(error.contains("too large"), "{error}");
}

#[tokio::test]
async fn a_log_datadog_rejects_costs_the_others_in_its_request_nothing() {
    for status in [400, 422] {
        let error = one_log_datadog_will_never_take(status).await;
        assert!(error.contains(&format!("HTTP {status}")), "{error}");
    }
}

#[tokio::test]
async fn an_intake_that_rejects_every_request_is_not_split_without_end() {
    let dd = Datadog::new().await;
    dd.mount(intake().respond_with(ResponseTemplate::new(400)))
        .await;
    let (_, records) = dd.events(100).await;
    assert!(dd.deliver(&records).await.batch_item_failures.is_empty());
    // Splitting to single logs would take 199 requests; the search for bad logs stops after 64
    // splits (129 requests, and the first one's gzip), and every log is listed (or, should the
    // search outlast the lane's budget on a loaded machine, still owed).
    let requests = dd.requests().await.len();
    assert!((3..=130).contains(&requests), "{requests} requests");
    let listed = dd.failures_listed().await;
    let owed = dd.world.lane(&dd.org, &dd.project).await.owed;
    assert_eq!(listed.len() as u64 + owed, 100, "{owed} owed");
}

#[tokio::test]
async fn logs_beside_more_bad_ones_than_a_search_finds_are_delivered_by_the_lanes_calls() {
    let dd = Datadog::new().await;
    // A third of the logs are ones Datadog rejects, each rejecting the request it is in:
    // one live search (64 splits) cannot find them all.
    let bad = |e: &Value| e["sequence_in_test"].as_i64().unwrap() % 3 == 0;
    let holds_bad = move |r: &Request| entries(r).iter().any(bad);
    dd.mount(
        intake()
            .and(holds_bad)
            .respond_with(ResponseTemplate::new(400)),
    )
    .await;
    dd.mount(intake().respond_with(ResponseTemplate::new(202)))
        .await;
    let stream = dd.stream(Duration::from_secs(5));
    let (events, records) = dd.events(100).await;
    assert!(handed_on(&stream, &records).await);
    // What the search did not get to is owed, not listed: the lane's own calls search on
    // (catching up at once; or, should the search outlast the live budget on a loaded machine,
    // after a wait).
    let lane = dd.world.lane(&dd.org, &dd.project).await;
    assert_ne!(lane.state, audit_log::lane::LaneState::Delivering);
    assert!(lane.owed > 0);
    let caught_up = dd
        .world
        .run_lane_calls(&stream, Duration::from_secs(20), async || {
            dd.world.lane(&dd.org, &dd.project).await.state
                == audit_log::lane::LaneState::Delivering
        })
        .await;
    assert!(caught_up);
    let mut delivered: Vec<i64> = dd
        .requests()
        .await
        .iter()
        .filter(|r| !holds_bad(r))
        .flat_map(entries)
        .map(|e| e["sequence_in_test"].as_i64().unwrap())
        .collect();
    delivered.sort_unstable_by(|a, b| b.cmp(a));
    let good: Vec<i64> = events
        .iter()
        .filter(|e| !bad(e))
        .map(|e| e["sequence_in_test"].as_i64().unwrap())
        .collect();
    assert_eq!(delivered, good, "each good log delivered, once");
    assert_eq!(
        dd.failures_listed().await.len(),
        100 - good.len(),
        "only the bad listed"
    );
}

#[tokio::test]
async fn a_redirect_never_carries_the_api_key_anywhere_else() {
    let dd = Datadog::new().await;
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(202))
        .mount(&elsewhere)
        .await;
    dd.mount(intake().respond_with(
        ResponseTemplate::new(307).insert_header("location", format!("{}/logs", elsewhere.uri())),
    ))
    .await;
    let (_, records) = dd.events(2).await;
    let response = dd.deliver(&records).await;
    assert!(response.batch_item_failures.is_empty());
    let followed = elsewhere.received_requests().await.unwrap();
    assert!(followed.is_empty(), "the key went to {followed:?}");
    let error = dd.health().await.last_error.unwrap();
    assert!(error.contains("HTTP 307"), "{error}");
}

#[tokio::test]
async fn a_bad_request_fails_for_good_without_retries_and_without_holding_the_stream() {
    // 400 and 422 are about the logs, not the destination.
    for status in [400, 422] {
        let dd = Datadog::new().await;
        dd.mount(intake().respond_with(
            ResponseTemplate::new(status).set_body_string("raw destination body sentinel"),
        ))
        .await;
        let (_, records) = dd.events(1).await;
        let response = dd.deliver(&records).await;
        assert!(
            response.batch_item_failures.is_empty(),
            "HTTP {status}: not retried from the stream"
        );
        // Not retried: sent once.
        let encodings = dd.each("content-encoding").await;
        assert_eq!(encodings, ["gzip"], "HTTP {status}");
        let health = dd.health().await;
        assert_eq!(health.status_at(time::OffsetDateTime::now_utc()), "failing");
        let error = health.last_error.unwrap();
        assert!(error.contains(&format!("HTTP {status}")), "{error}");
        assert!(
            !error.contains("sentinel"),
            "no raw destination body: {error}"
        );
    }
}

#[tokio::test]
async fn a_rotated_key_is_used_by_the_next_delivery_after_the_save() {
    let dd = Datadog::new().await;
    let stream = dd.stream(Duration::from_secs(5));
    dd.mount(
        intake()
            .and(header("DD-API-KEY", KEY))
            .respond_with(ResponseTemplate::new(202))
            .up_to_n_times(1),
    )
    .await;
    let (_, first) = dd.events(1).await;
    assert!(handed_on(&stream, &first).await);

    // The customer rotates the key; this container read the old one.
    let rotated = "fedcba9876543210fedcba9876543210";
    dd.world
        .configure_datadog(&dd.org, &dd.project, rotated)
        .await;
    dd.server.reset().await;
    dd.answer_key(KEY, 403).await;
    dd.answer_key(rotated, 202).await;
    let records =
        as_sent(&stream_records(&dd.world.aws, &dd.world.dynamodb, &dd.world.events_table).await);
    let more: Vec<Value> = vec![recent(&dd.org, &dd.project, 5, "OK")];
    let records = {
        let mut r = dd.world.capture(&more).await;
        r.retain(|x| !records.iter().any(|y| y.event_id == x.event_id));
        r
    };
    assert_eq!(records.len(), 1);
    let response = stream.deliver(&records, soon()).await;
    assert!(response.batch_item_failures.is_empty());
    let keys = dd.each("DD-API-KEY").await;
    // The configuration names its secret version: the old key is never tried again.
    assert_eq!(keys, [rotated]);
}

#[tokio::test]
async fn a_key_refused_after_a_fresh_read_fails_for_good_with_a_message_to_act_on() {
    let dd = Datadog::new().await;
    dd.mount(intake().respond_with(ResponseTemplate::new(401)))
        .await;
    let (_, records) = dd.events(2).await;
    let response = dd.deliver(&records).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        dd.requests().await.len(),
        2,
        "one try, one retry with a freshly read key"
    );
    let error = dd.health().await.last_error.unwrap();
    assert!(
        error.contains("API key") && error.contains("datadoghq.eu"),
        "{error}"
    );
    assert!(!error.contains(KEY));
}

#[tokio::test]
async fn records_delivered_before_a_retry_are_not_sent_again() {
    let dd = Datadog::new().await;
    dd.mount(intake().respond_with(ResponseTemplate::new(202)))
        .await;
    let (_, records) = dd.events(3).await;
    let stream = dd.stream(Duration::from_secs(5));
    assert!(handed_on(&stream, &records).await);
    // Lambda hands the same records again (a retry from an earlier sequence number).
    assert!(handed_on(&stream, &records).await);
    assert_eq!(dd.requests().await.len(), 1);
}

#[tokio::test]
async fn ten_thousand_events_of_one_kilobyte_make_exactly_ten_datadog_requests() {
    let server = MockServer::start().await;
    intake()
        .respond_with(ResponseTemplate::new(202))
        .mount(&server)
        .await;
    let now = OffsetDateTime::now_utc();
    let mut v = recent("o", "p", 60, "OK");
    let base = AuditEvent::from_value(v.clone()).unwrap().json().len();
    v["padding"] = json!("k".repeat(1024 - base - r#","padding":"""#.len()));
    let event = AuditEvent::from_value(v).unwrap();
    assert_eq!(event.json().len(), 1024);
    let events = vec![event; 10_000];
    let client = DatadogClient::new(Some(server.uri()));
    let project = Project {
        organization_id: "o",
        project_id: "p",
        credentials: Box::new(Credentials::Datadog {
            api_key: SecretString::from(KEY),
        }),
    };
    let settings = DatadogSettings {
        site: DatadogSite::Us1,
    };
    let failures = client
        .sink(project, &settings)
        .deliver(&events, Instant::now() + Duration::from_secs(60))
        .await;
    assert!(failures.is_empty());
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 10);
    assert!(requests.iter().all(|r| entries(r).len() == 1000));
    let _ = now;
}
