//! The delivery lane through the api: pause, resume, health, failures and replays.

use super::*;

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
    use audit_log::lane::{LaneKey, LaneStore};
    let w = World::new().await;
    w.put(datadog(Some(KEY))).await;
    let key = LaneKey::new(&w.org, &w.project);
    // Saved twenty minutes ago, owed for ten: more than five is failing.
    let now = OffsetDateTime::now_utc();
    let client = aws_sdk_dynamodb::Client::new(&w.aws);
    let saved_at = now - Duration::from_secs(1200);
    audit_log_tests::backdate_lane(&client, &w.config_table, "lane_owed_from", saved_at).await;
    let now_ms = audit_log::clock::epoch_ms(now);
    let owed: Vec<_> = (0..3).map(|i| owed(i, now_ms - 600_000)).collect();
    let retrying = retrying(now_ms, now_ms - 600_000);
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

#[tokio::test]
async fn a_refusal_counts_only_against_the_settings_it_was_refused_under() {
    use audit_log::lane::{Lane, LaneKey, LaneState, LaneStore, Owing};
    let w = World::new().await;
    w.put(datadog(Some(KEY))).await;
    let key = LaneKey::new(&w.org, &w.project);
    let read = w.configs.read(&key).await.unwrap().unwrap();
    let now_ms = audit_log::clock::epoch_ms(OffsetDateTime::now_utc());
    let owed = [owed(1, now_ms)];
    let refused = |version| Lane {
        state: LaneState::Refused,
        attempt: Some("a1".into()),
        next_attempt_at: Some(now_ms + 300_000),
        interval_ms: 300_000,
        since: Some(now_ms),
        reason: Some("Datadog refused the API key (HTTP 403)".into()),
        refused_version: Some(version),
        ..Lane::default()
    };
    // Saved again while a delivery with the settings it read was being refused.
    w.put(datadog(Some(KEY))).await;
    let stale = w
        .configs
        .owe(&key, &owed, Some(&refused(read.version)))
        .await;
    assert_eq!(stale.unwrap(), Owing::Delivering);
    let lane = w.configs.read(&key).await.unwrap().unwrap();
    assert_eq!((lane.state, lane.owed), (LaneState::Delivering, 0));
    assert_eq!(lane.version, read.version + 1);
    // A refusal of the settings saved now is the lane's.
    let current = w
        .configs
        .owe(&key, &owed, Some(&refused(lane.version)))
        .await;
    assert_eq!(current.unwrap(), Owing::Owed);
    let lane = w.configs.read(&key).await.unwrap().unwrap();
    assert_eq!((lane.state, lane.owed), (LaneState::Refused, 1));
    assert_eq!(lane.refused_version, Some(lane.version));
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
