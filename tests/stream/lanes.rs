//! Lanes: a destination's trouble costs no other destination anything, and what it missed it
//! gets later by itself (the sweep, budgets, outages, health).

use super::*;

#[tokio::test]
async fn throttling_that_outlasts_the_budget_owes_the_events_and_holds_nothing_back() {
    let dd = Datadog::new().await;
    dd.mount(intake().respond_with(ResponseTemplate::new(429)))
        .await;
    let (_, records) = dd.events(3).await;
    let started = Instant::now();
    let response = dd.deliver(&records).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "a destination's trouble never fails a stream record"
    );
    assert!(
        within_the_budget(started.elapsed()),
        "the stream waits no longer than the lane's budget"
    );
    assert!(dd.requests().await.len() > 1, "retried inside the budget");
    let lane = dd.world.lane(&dd.org, &dd.project).await;
    assert_eq!(lane.state, audit_log::lane::LaneState::Retrying);
    assert_eq!(lane.owed, 3);
    assert!(lane.reason.unwrap().contains("429"));
    let health = dd.health().await;
    assert_eq!(health.status_at(time::OffsetDateTime::now_utc()), "failing");
    // Owed is not failed: nothing is listed for a replay.
    let listed = dd.failures_listed().await;
    assert!(listed.is_empty());
}

#[tokio::test]
async fn a_destination_that_comes_back_gets_what_it_missed_by_itself_oldest_first() {
    let dd = Datadog::new().await;
    let (stream, first) = dd.down_owing(3).await;
    // More events while it is down: owed at once, nothing sent.
    let sent_while_down = dd.requests().await.len();
    let more = dd
        .world
        .capture_more(&[recent(&dd.org, &dd.project, 1, "OK")], &first)
        .await;
    assert!(handed_on(&stream, &more).await);
    assert_eq!(dd.requests().await.len(), sent_while_down);
    assert_eq!(dd.world.lane(&dd.org, &dd.project).await.owed, 4);

    // It answers again; nobody calls anything.
    assert!(
        dd.back_and_caught_up(&stream).await,
        "the lane delivers again"
    );
    let arrived: Vec<String> = dd
        .requests()
        .await
        .iter()
        .flat_map(entries)
        .map(|e| e["timestamp"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(arrived.len(), 4);
    let mut sorted = arrived.clone();
    sorted.sort();
    assert_eq!(arrived, sorted, "oldest first");
    let lane = dd.world.lane(&dd.org, &dd.project).await;
    assert_eq!(lane.owed, 0);
    // Kept for trouble soon after, which goes on from the last wait (`Lane::interval_at`).
    assert_eq!(lane.state, audit_log::lane::LaneState::Delivering);
    assert!(
        lane.interval_ms > 0 && lane.recovered_at.is_some(),
        "{lane:?}"
    );
    assert_eq!(
        dd.health().await.status_at(time::OffsetDateTime::now_utc()),
        "healthy"
    );
    // Another destination saved in its place starts its trouble afresh.
    dd.world.configure_cloudwatch(&dd.org, &dd.project).await;
    assert_eq!(dd.world.lane(&dd.org, &dd.project).await.recovered_at, None);
}

#[tokio::test]
async fn a_destination_saved_after_one_was_removed_inherits_nothing_it_was_owed() {
    // GIVEN a destination that is down and owed three events, owed a little longer ago than
    // the clocks of two Lambda functions may differ
    let dd = Datadog::new().await;
    let clock = Arc::new(Behind::default());
    clock.by(audit_log::lane::OWED_FROM_MARGIN * 2);
    dd.mount(intake().respond_with(ResponseTemplate::new(503)))
        .await;
    let stream = dd.stream(Duration::from_secs(1)).with_clock(clock.clone());
    let (_, owed_to_the_old_one) = dd.events(3).await;
    assert!(handed_on(&stream, &owed_to_the_old_one).await);
    assert_eq!(dd.world.lane(&dd.org, &dd.project).await.owed, 3);
    clock.by(Duration::ZERO);
    // WHEN it is removed before its owed events are all forgotten (a large backlog outlasts
    // the deletion's few seconds, and its lane's call has not come yet), and another is saved
    assert!(
        dd.world
            .configs
            .delete(&dd.org, &dd.project, None)
            .await
            .unwrap()
            .is_some()
    );
    dd.world.configure_datadog(&dd.org, &dd.project, KEY).await;
    // THEN the new destination is owed nothing
    let lane = dd.world.lane(&dd.org, &dd.project).await;
    assert_eq!(lane.state, audit_log::lane::LaneState::Delivering);
    let span = audit_log::lane::OwedSpan::of(&lane);
    let key = audit_log::lane::LaneKey::new(&dd.org, &dd.project);
    assert_eq!(
        audit_log::lane::LaneStore::oldest_owed_at(&dd.world.configs, &key, span)
            .await
            .unwrap(),
        None
    );
    // AND when it is down in turn and comes back, it catches up on its own events only
    let mine = dd
        .world
        .capture_more(
            &[recent(&dd.org, &dd.project, 1, "OK")],
            &owed_to_the_old_one,
        )
        .await;
    assert!(handed_on(&stream, &mine).await, "owed: it is down");
    assert_eq!(dd.world.lane(&dd.org, &dd.project).await.owed, 1);
    assert!(dd.back_and_caught_up(&stream).await);
    let sent: Vec<Value> = dd.requests().await.iter().flat_map(entries).collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
}

/// The system's clock, behind by as much as told.
#[derive(Default)]
struct Behind(std::sync::Mutex<Duration>);

impl Behind {
    fn by(&self, behind: Duration) {
        *self.0.lock().unwrap() = behind;
    }
}

impl audit_log::clock::Clock for Behind {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() - *self.0.lock().unwrap()
    }
}

/// The schedule's call, as Lambda hands it to the function: its answer, or its error.
async fn sweeping(stream: &Stream) -> Result<Value, lambda_runtime::Error> {
    let scheduled: audit_log_stream::Invocation = serde_json::from_str(
        &audit_log::fixtures::lambda_event("eventbridge-scheduled-event.json"),
    )
    .unwrap();
    let context = audit_log_tests::invocation_context(Duration::from_secs(60));
    let answer = stream
        .handle(lambda_runtime::LambdaEvent::new(scheduled, context))
        .await?;
    Ok(serde_json::to_value(answer).unwrap())
}

async fn sweep(stream: &Stream) -> Value {
    sweeping(stream).await.expect("the sweep runs")
}

#[tokio::test]
async fn a_sweep_that_cannot_read_the_lanes_fails_its_invocation() {
    let world = World::new().await;
    let mut settings = world.settings();
    settings.config_table = unique("no-such-table");
    let stream = Stream::from_settings(&settings, &world.aws);
    let failed = sweeping(&stream).await.expect_err("the sweep fails");
    assert!(failed.to_string().contains("lane"), "{failed}");
}

#[tokio::test]
async fn a_quiet_lane_whose_call_was_lost_is_found_by_the_sweep_and_catches_up() {
    a_lost_lane_is_swept(Datadog::new().await, false).await;
}

#[tokio::test]
async fn a_lost_lane_of_a_project_too_long_for_its_keys_is_swept_like_any_other() {
    // The lanes' index keeps keys only, and this project's sort keys hold its start and a digest.
    a_lost_lane_is_swept(Datadog::of(unique("org"), "😀".repeat(255)).await, false).await;
}

#[tokio::test]
async fn a_lost_lane_stored_before_the_lanes_index_had_shards_is_swept_like_any_other() {
    a_lost_lane_is_swept(Datadog::new().await, true).await;
}

async fn a_lost_lane_is_swept(dd: Datadog, stored_before_shards: bool) {
    let (stream, records) = dd.down_owing(3).await;
    // Its call is lost, and an hour passes without a new event for the project.
    dd.world.lose_lane_calls().await;
    dd.world
        .lane_due_ago(&dd.org, &dd.project, Duration::from_secs(3600))
        .await;
    let sharded = dd.world.stored_lane_state(&dd.org, &dd.project).await;
    assert!(sharded.starts_with("retrying#"), "{sharded}");
    if stored_before_shards {
        dd.world
            .lane_stored_before_shards(&dd.org, &dd.project)
            .await;
    }
    let lost = dd.world.lane(&dd.org, &dd.project).await;
    // Another organization's lane is retrying too, its call on the way.
    let b_key = "0123456789abcdef0123456789abcdef";
    let (b_org, b_project) = (unique("org-b"), unique("project-b"));
    dd.world.configure_datadog(&b_org, &b_project, b_key).await;
    let b_records = dd
        .world
        .capture_more(&[recent(&b_org, &b_project, 5, "OK")], &records)
        .await;
    assert!(handed_on(&stream, &b_records).await);
    dd.world.until_retrying(&stream, &b_org, &b_project).await;
    let waiting = dd.world.lane(&b_org, &b_project).await;

    assert_eq!(sweep(&stream).await, json!({"lanes": 1}));
    let found = dd.world.lane(&dd.org, &dd.project).await;
    assert_eq!(found.state, audit_log::lane::LaneState::Retrying);
    // Its attempt is sent again, due now (the lost message, should it come late after all,
    // counts as much as the new one).
    assert_eq!(found.attempt, lost.attempt);
    assert!(
        found.next_attempt_at > lost.next_attempt_at,
        "the lost lane's attempt is due again now"
    );
    assert_eq!(
        dd.world.stored_lane_state(&dd.org, &dd.project).await,
        sharded
    );
    assert_eq!(dd.world.lane(&b_org, &b_project).await, waiting);

    assert!(
        dd.back_and_caught_up(&stream).await,
        "the lane delivers again"
    );
    assert_eq!(dd.entries_sent_with(KEY).await, 3);
    assert_eq!(sweep(&stream).await, json!({"lanes": 0}));
}

#[tokio::test]
async fn one_organizations_outage_costs_another_on_the_same_shard_nothing() {
    let dd = Datadog::new().await;
    let (b_org, b_project) = dd.b_beside_a_down().await;
    let b_key = B_KEY;
    let stream = dd.stream(Duration::from_secs(1));
    let mut delivered_to_b = 0;
    let mut sent_to_a = 0;
    for round in 0..3u64 {
        // One batch, A's and B's events interleaved.
        let events = dd.interleaved(&b_org, &b_project, 6, round);
        let mut records = dd.world.capture(&events).await;
        // The stream holds every earlier round too: this round's are the last six.
        let records: Vec<StreamRecord> = records.split_off(records.len() - 6);
        let response = stream.deliver(&records, soon()).await;
        assert!(response.batch_item_failures.is_empty(), "round {round}");
        let to_a = dd.requests_with(KEY).await;
        if round == 0 {
            assert!(to_a > 0, "A was tried");
        } else {
            // A is retrying: its events are owed without a request, while B's go through.
            assert_eq!(to_a, sent_to_a, "round {round}: no request to A");
        }
        sent_to_a = to_a;
        delivered_to_b += 3;
        assert_eq!(
            dd.entries_sent_with(b_key).await,
            delivered_to_b,
            "round {round}"
        );
    }
    for (org, project) in [(&dd.org, &dd.project), (&b_org, &b_project)] {
        let (listed, _) = dd
            .world
            .configs
            .failures(org, project, None, 10)
            .await
            .unwrap();
        assert!(listed.is_empty(), "nobody's failures list shows anything");
    }
    assert_eq!(
        dd.world.lane(&b_org, &b_project).await.state,
        audit_log::lane::LaneState::Delivering
    );
    let a = dd.world.lane(&dd.org, &dd.project).await;
    assert_eq!(a.state, audit_log::lane::LaneState::Retrying);
    assert_eq!(a.owed, 9);
}

#[tokio::test]
async fn a_datadog_that_does_not_answer_costs_the_stream_its_budget_once() {
    let dd = Datadog::new().await;
    dd.mount(intake().respond_with(ResponseTemplate::new(202).set_delay(Duration::from_secs(30))))
        .await;
    let (_, records) = dd.events(1).await;
    let stream = dd.stream(Duration::from_secs(20));
    let started = Instant::now();
    let response = stream.deliver(&records, soon()).await;
    assert!(response.batch_item_failures.is_empty());
    assert!(within_the_budget(started.elapsed()));
    assert!(
        dd.world
            .lane(&dd.org, &dd.project)
            .await
            .reason
            .unwrap()
            .contains("did not answer")
    );
    // The next batch does not wait on it at all: its event is owed without a request.
    let more = dd
        .world
        .capture_more(&[recent(&dd.org, &dd.project, 1, "OK")], &records)
        .await;
    let requests = dd.requests().await.len();
    let owed = dd.world.lane(&dd.org, &dd.project).await.owed;
    assert!(handed_on(&stream, &more).await);
    assert_eq!(dd.requests().await.len(), requests);
    assert_eq!(dd.world.lane(&dd.org, &dd.project).await.owed, owed + 1);
}

#[tokio::test]
async fn a_slow_datadog_is_served_by_its_own_lane_and_holds_no_later_batch() {
    // GIVEN a Datadog that takes every log, but only after 1.2 s
    let dd = Datadog::new().await;
    let slow =
        || intake().respond_with(ResponseTemplate::new(202).set_delay(Duration::from_millis(1200)));
    dd.mount(slow()).await;
    let policy = audit_log::lane::Policy {
        slow_after: Duration::from_millis(600),
        slow_hold: Duration::from_secs(1),
        ..lanes()
    };
    let stream = dd.stream(Duration::from_secs(5)).with_lanes(policy);
    // WHEN a batch reaches it, it is delivered, and the lane set aside
    let (_, records) = dd.events(2).await;
    assert!(handed_on(&stream, &records).await);
    assert_eq!(dd.requests().await.len(), 1);
    let lane = dd.world.lane(&dd.org, &dd.project).await;
    assert_eq!(lane.state, audit_log::lane::LaneState::CatchingUp);
    assert!(lane.reason.unwrap().contains("to answer"));
    // THEN the next batch sends it nothing: its events wait for the lane's own call
    let more = dd
        .world
        .capture_more(&[recent(&dd.org, &dd.project, 1, "OK")], &records)
        .await;
    assert!(handed_on(&stream, &more).await);
    assert_eq!(dd.requests().await.len(), 1, "the batch waited on nobody");
    assert_eq!(dd.world.lane(&dd.org, &dd.project).await.owed, 1);
    // AND the lane's call delivers them; still slow, the lane stays aside
    assert!(
        dd.world
            .run_lane_calls(&stream, Duration::from_secs(20), async || {
                dd.requests().await.len() == 2
            })
            .await
    );
    let lane = dd.world.lane(&dd.org, &dd.project).await;
    assert_eq!(lane.state, audit_log::lane::LaneState::CatchingUp);
    assert_eq!(lane.owed, 0);
    assert_eq!(dd.entries_sent_with(KEY).await, 3);
    // AND once quick again, live delivery resumes by itself
    dd.server.reset().await;
    dd.mount(intake().respond_with(ResponseTemplate::new(202)))
        .await;
    assert!(
        dd.world
            .run_lane_calls(&stream, Duration::from_secs(20), async || {
                dd.world.lane(&dd.org, &dd.project).await.state
                    == audit_log::lane::LaneState::Delivering
            })
            .await
    );
    let last = dd
        .world
        .capture_more(&[recent(&dd.org, &dd.project, 0, "OK")], &more)
        .await;
    assert!(handed_on(&stream, &last).await);
    assert_eq!(
        dd.entries_sent_with(KEY).await,
        1,
        "sent by the batch itself"
    );
}

/// The stream function behind a proxy to the emulator, for DynamoDB's trouble on purpose.
async fn behind_proxy(
    dd: &Datadog,
    faults: audit_log_tests::faults::AwsFaults,
) -> (audit_log_tests::faults::AwsProxy, Stream) {
    let proxy = audit_log_tests::faults::AwsProxy::start(
        std::env::var("AWS_ENDPOINT_URL").unwrap(),
        faults,
    )
    .await;
    let aws = aws_config::from_env().endpoint_url(&proxy.url).load().await;
    let stream = Stream::from_settings(&dd.world.settings(), &aws).with_datadog(
        DatadogClient::with_timeout(Some(dd.server.uri()), Duration::from_secs(1))
            .with_backoff(fast()),
    );
    (proxy, stream)
}

/// The message ids of the log entries sent with `key`, sorted.
async fn ids_sent_with(dd: &Datadog, key: &str) -> Vec<String> {
    let mut ids: Vec<String> = dd
        .requests()
        .await
        .iter()
        .filter(|r| r.headers.get("DD-API-KEY").unwrap() == key)
        .flat_map(entries)
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn ids_of(records: &[StreamRecord]) -> Vec<String> {
    let mut ids: Vec<String> = records
        .iter()
        .map(|r| audit_log_stream::event_of(r).unwrap().1.message_id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_refusal_that_cannot_be_recorded_is_deferred_rather_than_lost() {
    use audit_log_tests::faults::AwsFaults;
    let dd = Datadog::new().await;
    dd.mount(intake().respond_with(ResponseTemplate::new(400)))
        .await;
    let (_, records) = dd.events(2).await;
    // Every DynamoDB write throttled, past the SDK's own retries.
    let faults = AwsFaults {
        dynamodb_throttling: 1.0,
        ..Default::default()
    };
    let (proxy, stream) = behind_proxy(&dd, faults).await;
    proxy.enable(true);
    let response = stream.deliver(&records, soon()).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "neither delivered nor listed, but deferred: the shard moves on"
    );
    assert!(proxy.injected.get("DynamoDB throttling") > 0);
    assert!(dd.failures_listed().await.is_empty());
    // DynamoDB takes writes again: the deferred events come back, and the refusal is recorded.
    proxy.enable(false);
    let listed = dd
        .world
        .run_lane_calls(&stream, Duration::from_secs(20), async || {
            dd.failures_listed().await.len() == 2
        })
        .await;
    assert!(listed, "the refusal was never recorded");
    let listed = dd.failures_listed().await;
    assert!(listed.iter().all(|f| f.reason.contains("HTTP 400")));
}

#[tokio::test]
async fn one_organizations_hot_partition_costs_another_on_the_same_shard_nothing() {
    let dd = Datadog::new().await;
    // A's destination is down, so its lane owes what comes: a write to A's partition of the
    // table for each event.
    let (b_org, b_project) = dd.b_beside_a_down().await;
    let b_key = B_KEY;
    let (proxy, stream) = behind_proxy(&dd, Default::default()).await;
    let interleaved = |round: u64| dd.interleaved(&b_org, &b_project, 4, round);
    let first = dd.world.capture(&interleaved(0)).await;
    assert!(handed_on(&stream, &first).await);
    assert_eq!(dd.world.lane(&dd.org, &dd.project).await.owed, 2);
    // WHEN A's partition runs hot: every write naming A is throttled
    proxy.throttle_writes_naming(Some(&dd.org));
    let second = dd.world.capture_more(&interleaved(1), &first).await;
    let response = stream.deliver(&second, soon()).await;
    // THEN the shard moves on, and B has all its events
    assert!(
        response.batch_item_failures.is_empty(),
        "nobody waits for A"
    );
    assert!(proxy.injected.get("DynamoDB throttling") > 0);
    let of = |org: &str| -> Vec<StreamRecord> {
        first
            .iter()
            .chain(&second)
            .filter(|r| audit_log_stream::event_of(r).unwrap().0.organization_id() == org)
            .cloned()
            .collect()
    };
    let (a_records, b_records) = (of(&dd.org), of(&b_org));
    assert_eq!(ids_sent_with(&dd, b_key).await, ids_of(&b_records));
    // AND A's new events were not owed (that write failed) but wait on the lanes queue
    assert_eq!(dd.world.lane(&dd.org, &dd.project).await.owed, 2);
    // WHEN the partition cools down and A's destination comes back
    proxy.throttle_writes_naming(None);
    dd.server.reset().await;
    dd.answer_key(KEY, 202).await;
    // THEN A gets all four by itself: the owed through its lane, the deferred when they come
    let caught_up = dd
        .world
        .run_lane_calls(&stream, Duration::from_secs(30), async || {
            let mut sent = ids_sent_with(&dd, KEY).await;
            sent.dedup();
            sent == ids_of(&a_records)
        })
        .await;
    assert!(caught_up, "A got {:?}", ids_sent_with(&dd, KEY).await);
}

#[tokio::test]
async fn a_lane_that_owes_a_large_batch_writes_it_several_requests_at_a_time() {
    // GIVEN A's destination down, B's up, and a batch of 300 of A's events and one of B's
    let dd = Datadog::new().await;
    let (b_org, b_project) = dd.b_beside_a_down().await;
    let (proxy, stream) = behind_proxy(&dd, Default::default()).await;
    let mut values: Vec<Value> = (0..300)
        .map(|i| recent(&dd.org, &dd.project, 400 - i, "OK"))
        .collect();
    values.push(recent(&b_org, &b_project, 1, "OK"));
    let records = dd.world.capture(&values).await;
    // WHEN the batch is delivered
    assert!(handed_on(&stream, &records).await);
    // THEN A owes all 300, written 25 to a request, several requests at once (one after
    // another, B's event would wait for twelve round trips), and B has its event
    assert_eq!(dd.world.lane(&dd.org, &dd.project).await.owed, 300);
    assert!(proxy.count("BatchWriteItem") >= 12);
    assert!(
        proxy.most_at_once("BatchWriteItem") > 1,
        "the owed events' writes went one at a time"
    );
    assert_eq!(ids_sent_with(&dd, B_KEY).await.len(), 1);
}

#[tokio::test]
async fn health_counts_the_last_day_and_tracks_a_run_of_failures() {
    let dd = Datadog::new().await;
    dd.mount(
        intake()
            .respond_with(ResponseTemplate::new(202))
            .up_to_n_times(1),
    )
    .await;
    let (_, first) = dd.events(3).await;
    let stream = dd.stream(Duration::from_secs(5));
    assert!(handed_on(&stream, &first).await);
    let health = dd.health().await;
    assert_eq!(health.counts_24h(OffsetDateTime::now_utc()), (3, 0));
    assert!(health.failing_since.is_none());
    assert_eq!(health.status_at(time::OffsetDateTime::now_utc()), "healthy");

    // Then the destination refuses: counted, and failing at once because it is a refusal.
    dd.server.reset().await;
    dd.mount(intake().respond_with(ResponseTemplate::new(403)))
        .await;
    let fresh = dd
        .world
        .capture_more(
            &[
                recent(&dd.org, &dd.project, 1, "OK"),
                recent(&dd.org, &dd.project, 2, "OK"),
            ],
            &first,
        )
        .await;
    stream.deliver(&fresh, soon()).await;
    let health = dd.health().await;
    assert_eq!(health.counts_24h(OffsetDateTime::now_utc()), (3, 2));
    assert!(health.failing_since.is_some());
    assert!(health.last_failure_permanent);
    assert_eq!(health.status_at(time::OffsetDateTime::now_utc()), "failing");
}
