//! Nothing lost, everything visible: a destination down for a while catches up by itself;
//! what is owed past the retry window is listed, and a replay delivers it; old events are
//! dated as documented.

use audit_log::clock::ManualClock;
use audit_log_stream::ReplayPages;
use audit_log_tests::local::{
    Project, Stack, StreamLimits, StreamRun, call_api, datadog_entries, drain_events_queue,
    drain_stream_queues, drain_stream_within, event_of_datadog_entry, listed_failures,
    packed_by_a_newer_release, settle_lanes,
};
use audit_log_tests::{backdate_lane, customer_logs, emulator, failed_ids, unique};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn project() -> Project {
    Project {
        organization_id: unique("org"),
        project_id: unique("project"),
    }
}

fn event(p: &Project, at: OffsetDateTime, n: usize) -> Value {
    let mut v: Value = serde_json::from_str(audit_log::fixtures::SEED_EVENTS[n % 5].1).unwrap();
    v["organization_id"] = json!(p.organization_id);
    v["project_id"] = json!(p.project_id);
    v["timestamp"] = json!(at.replace_nanosecond(0).unwrap().format(&Rfc3339).unwrap());
    v["n"] = json!(n);
    v
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

async fn send_and_capture(stack: &Stack, events: &[Value]) {
    stack
        .send(&events.iter().map(Value::to_string).collect::<Vec<_>>())
        .await;
    drain_events_queue(stack, &stack.capture(), |_| {}).await;
}

async fn stand_in(status: u16) -> MockServer {
    let server = MockServer::start().await;
    answer(&server, status).await;
    server
}

async fn answer(server: &MockServer, status: u16) {
    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/validate"))
        .respond_with(ResponseTemplate::new(200))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/logs"))
        .respond_with(ResponseTemplate::new(status))
        .mount(server)
        .await;
}

/// The `n` of every event the stand-in received, in arrival order, as often as each came.
async fn arrivals(server: &MockServer) -> Vec<i64> {
    datadog_entries(server)
        .await
        .iter()
        .map(event_of_datadog_entry)
        .filter_map(|e| e["n"].as_i64())
        .collect()
}

/// What the stand-in received, by `n`.
async fn received(server: &MockServer) -> BTreeSet<i64> {
    arrivals(server).await.into_iter().collect()
}

/// Lanes on a test's time scale: probes within a second, a retry window of `window`.
fn lanes(window: Duration) -> audit_log::lane::Policy {
    audit_log::lane::Policy {
        first_backoff: Duration::from_millis(200),
        budget: Duration::from_secs(2),
        catch_up_budget: Duration::from_secs(4),
        // A loaded test machine is no slow destination.
        slow_after: Duration::MAX,
        housekeeping: Duration::from_secs(1),
        ..audit_log::lane::Policy::new(window, Duration::from_secs(1))
    }
}

/// A project streaming to a Datadog stand-in that answers `status`, and twelve events of the
/// last ten minutes stored while it does.
struct Setup {
    stack: Stack,
    datadog: MockServer,
    api: audit_log_api::Api,
    stream: audit_log_stream::Stream,
    project: Project,
    /// The saved destination.
    body: Value,
    /// The first event's time.
    start: OffsetDateTime,
}

impl Setup {
    async fn missing_twelve(status: u16, retry_window: Duration) -> Self {
        let aws = emulator().await;
        let stack = Stack::create(&aws, &format!("/{}", unique("hashicorp"))).await;
        let datadog = stand_in(status).await;
        let api = stack.api(Some(datadog.uri()));
        let stream = stack
            .stream(Some(datadog.uri()))
            .with_lanes(lanes(retry_window));
        let project = project();
        let body = json!({"provider": "datadog", "name": "dd", "datadog": {"site": "datadoghq.com", "api_key": audit_log_tests::SENTINEL_API_KEY}});
        assert_eq!(
            call_api(&api, &project, "PUT", "/streaming", Some(&body))
                .await
                .0,
            200
        );
        let start = now() - Duration::from_secs(600);
        let missed: Vec<Value> = (0..12)
            .map(|n| event(&project, start + Duration::from_secs(n as u64 * 10), n))
            .collect();
        send_and_capture(&stack, &missed).await;
        Self {
            stack,
            datadog,
            api,
            stream,
            project,
            body,
            start,
        }
    }
}

#[tokio::test]
async fn a_destination_down_for_a_while_loses_nothing_and_catches_up_by_itself() {
    // The outage: 12 events, every delivery answered 503.
    let Setup {
        stack,
        datadog,
        api,
        stream,
        project: p,
        ..
    } = Setup::missing_twelve(503, Duration::from_secs(3600)).await;
    let limits = StreamLimits {
        timeout: Duration::from_secs(6),
        ..StreamLimits::from_template()
    };
    let mut run = StreamRun::default();
    drain_stream_within(&stack, &stream, &HashMap::new(), &mut run, &limits, |_| {}).await;
    assert_eq!(run.retries, 0, "the shard moved on at once");
    assert_eq!(run.sent_to_failure_queue, 0);

    let (_, view) = call_api(&api, &p, "GET", "/streaming", None).await;
    let health = &view["health"];
    assert_eq!(health["status"], "failing", "{view}");
    assert_eq!(health["state"], "retrying", "{view}");
    // The 12 events, and the audit event of the PUT that configured the destination.
    assert_eq!(health["pending"], 13, "{view}");
    assert!(health["next_attempt_at"].is_string());
    assert!(health["last_error"].as_str().unwrap().contains("503"));
    // Owed, not failed: nothing to replay.
    assert!(listed_failures(&api, &p, 5).await.unwrap().is_empty());

    // A few probes while it is still down: one request each, about a second apart.
    let before = datadog.received_requests().await.unwrap().len();
    let settled = settle_lanes(&stack, &stream, None, Duration::from_secs(3)).await;
    assert!(!settled);
    let probes = datadog.received_requests().await.unwrap().len() - before;
    assert!((1..=5).contains(&probes), "{probes} probes in 3 s");

    // It answers again; nobody calls replay.
    answer(&datadog, 202).await;
    assert!(settle_lanes(&stack, &stream, None, Duration::from_secs(20)).await);
    let all: BTreeSet<i64> = (0..12).collect();
    assert_eq!(received(&datadog).await, all, "nothing stored is missing");
    let order = arrivals(&datadog).await;
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "oldest first");
    let (_, view) = call_api(&api, &p, "GET", "/streaming", None).await;
    assert_eq!(view["health"]["status"], "healthy", "{view}");
    assert_eq!(view["health"]["state"], "delivering", "{view}");
    assert_eq!(view["health"]["pending"], 0, "{view}");
    assert!(listed_failures(&api, &p, 5).await.unwrap().is_empty());
    // Every log carries the event's stable id.
    let entries = datadog_entries(&datadog).await;
    assert!(
        entries
            .iter()
            .all(|e| e["event_id"].as_str().is_some_and(|id| !id.is_empty()))
    );
}

#[tokio::test]
async fn a_refused_key_enabled_again_gets_what_it_missed_without_a_save() {
    // The key is refused (403 after a fresh read of the secret): the lane is `refused`.
    let Setup {
        stack,
        datadog,
        api,
        stream,
        project: p,
        ..
    } = Setup::missing_twelve(403, Duration::from_secs(3600)).await;
    let mut run = StreamRun::default();
    let limits = StreamLimits::from_template();
    drain_stream_within(&stack, &stream, &HashMap::new(), &mut run, &limits, |_| {}).await;
    let (_, view) = call_api(&api, &p, "GET", "/streaming", None).await;
    assert_eq!(view["health"]["state"], "refused", "{view}");
    assert_eq!(view["health"]["pending"], 13, "{view}");

    // The customer enables the key again in Datadog: nothing is saved here, nobody replays.
    answer(&datadog, 202).await;
    assert!(settle_lanes(&stack, &stream, None, Duration::from_secs(20)).await);
    let all: BTreeSet<i64> = (0..12).collect();
    assert_eq!(received(&datadog).await, all, "nothing stored is missing");
    let (_, view) = call_api(&api, &p, "GET", "/streaming", None).await;
    assert_eq!(view["health"]["state"], "delivering", "{view}");
    assert_eq!(view["health"]["pending"], 0, "{view}");
    assert!(listed_failures(&api, &p, 5).await.unwrap().is_empty());
}

#[tokio::test]
async fn events_owed_past_the_retry_window_are_listed_and_a_replay_delivers_them() {
    listed_then_replayed(true).await;
}

#[tokio::test]
async fn a_replay_of_every_stored_event_forgets_the_failures_it_delivers() {
    listed_then_replayed(false).await;
}

/// Events owed past the retry window, listed as failures, then replayed: only the failures
/// (`only_failed`) or every event stored in the range.
async fn listed_then_replayed(only_failed: bool) {
    // The key is refused: the events are owed.
    let Setup {
        stack,
        datadog,
        api,
        stream,
        project: p,
        body,
        start,
    } = Setup::missing_twelve(403, Duration::from_secs(2)).await;
    let mut run = StreamRun::default();
    let limits = StreamLimits::from_template();
    drain_stream_within(&stack, &stream, &HashMap::new(), &mut run, &limits, |_| {}).await;
    // The same batches handed to another container, which remembers nothing of them (a batch
    // that timed out, a new version): every event is owed twice, under two times.
    let another = stack
        .stream(Some(datadog.uri()))
        .with_lanes(lanes(Duration::from_secs(2)));
    drain_stream_within(&stack, &another, &HashMap::new(), &mut run, &limits, |_| {}).await;
    let (_, view) = call_api(&api, &p, "GET", "/streaming", None).await;
    assert_eq!(view["health"]["state"], "refused", "{view}");
    assert!(
        view["health"]["last_error"]
            .as_str()
            .unwrap()
            .contains("API key")
    );
    let refused_requests = datadog.received_requests().await.unwrap().len();

    // Past the window, the lane's look at what it owes turns it into failures. Meanwhile the
    // refused destination gets one probe per backoff interval (a second here, jittered down to
    // half of it) and no more: each probe two requests at most, the key being read again once.
    let settling = std::time::Instant::now();
    // Three times the window: the lane's first look past it may come a second or more after
    // it, and its writes take longer on a loaded machine.
    settle_lanes(&stack, &stream, None, Duration::from_secs(6)).await;
    let requests = datadog.received_requests().await.unwrap().len() - refused_requests;
    let most = 2 * ((settling.elapsed().as_millis() / 500) as usize + 1);
    assert!(requests <= most, "{requests} requests, at most {most}");
    let listed = listed_failures(&api, &p, 5).await.unwrap();
    // Each once: DynamoDB refuses a batch that writes one item twice, which would stop the
    // lane for good.
    assert_eq!(listed.len(), 13, "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|f| f["reason"].as_str().unwrap().contains("retry window"))
    );
    let (_, view) = call_api(&api, &p, "GET", "/streaming", None).await;
    assert_eq!(view["health"]["pending"], 0, "{view}");

    // A working key: saved, the lane delivers again, and the replay brings what was listed.
    answer(&datadog, 202).await;
    assert_eq!(
        call_api(&api, &p, "PUT", "/streaming", Some(&body)).await.0,
        200
    );
    assert!(settle_lanes(&stack, &stream, None, Duration::from_secs(10)).await);
    // The replay leaves out the six oldest (events 0 to 5, 0 to 50 s after `start`), and goes
    // two events a page; a failures-only page also ends at the first event that fills its bytes
    // (one byte here: each page's first), and goes on after it.
    let stream = stream.with_replay_pages(ReplayPages {
        size: 2,
        bytes: if only_failed { 1 } else { 50_000_000 },
        ..ReplayPages::default()
    });
    let before_replay = datadog.received_requests().await.unwrap().len();
    let window = json!({"since": (start + Duration::from_secs(55)).format(&Rfc3339).unwrap(),
                        "until": (now() + Duration::from_secs(60)).format(&Rfc3339).unwrap(),
                        "only_failed": only_failed});
    let (status, started) = call_api(&api, &p, "POST", "/streaming/replay", Some(&window)).await;
    assert_eq!(status, 202, "{started}");
    let (status, second) = call_api(&api, &p, "POST", "/streaming/replay", Some(&window)).await;
    assert_eq!(status, 429, "one running replay per project: {second}");
    assert_eq!(second["error"]["code"], "replay_running");
    drain_stream_queues(&stack, &stream).await;
    let id = started["replay_id"].as_str().unwrap();
    let (_, replay) = call_api(&api, &p, "GET", &format!("/streaming/replays/{id}"), None).await;
    assert_eq!(replay["state"], "completed", "{replay}");
    // The failures of the range, or every event stored in it: the same six, and the audit
    // event of the destination's first save.
    assert_eq!(replay["delivered"], 7, "{replay}");
    assert_eq!(replay["failed"], 0);
    assert_eq!(received(&datadog).await, (6..12).collect());
    let requests = datadog.received_requests().await.unwrap().len() - before_replay;
    if only_failed {
        assert_eq!(requests, 7, "a request per page of one event");
    } else {
        assert!(requests <= 4, "pages of two: {requests} requests");
    }
    // What it delivered is no longer listed; what it left out still is.
    let left: BTreeSet<i64> = listed_failures(&api, &p, 5)
        .await
        .unwrap()
        .iter()
        .map(|f| f["event"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(left, (0..6).collect(), "delivered failures are forgotten");
}

#[tokio::test]
async fn a_replay_of_old_events_dates_them_at_delivery_and_keeps_their_own_time() {
    let aws = emulator().await;
    let stack = Stack::create(&aws, &format!("/{}", unique("hashicorp"))).await;
    let datadog = stand_in(202).await;
    let api = stack.api(Some(datadog.uri()));
    let stream = stack.stream(Some(datadog.uri()));
    let (to_cloudwatch, to_datadog) = (project(), project());
    // Stored before any destination exists: live delivery skips them.
    let twenty_days = now() - Duration::from_secs(20 * 86_400);
    let twenty_hours = now() - Duration::from_secs(20 * 3600);
    send_and_capture(
        &stack,
        &[
            event(&to_cloudwatch, twenty_days, 1),
            event(&to_datadog, twenty_hours, 2),
        ],
    )
    .await;
    drain_stream_within(
        &stack,
        &stream,
        &HashMap::new(),
        &mut StreamRun::default(),
        &StreamLimits::from_template(),
        |_| {},
    )
    .await;

    let role = "arn:aws:iam::220000000001:role/hcp-log-streaming";
    let cw = json!({"provider": "cloudwatch", "name": "cw", "cloudwatch": {"role_arn": role, "region": "us-east-1"}});
    let dd = json!({"provider": "datadog", "name": "dd", "datadog": {"site": "datadoghq.eu", "api_key": audit_log_tests::SENTINEL_API_KEY}});
    assert_eq!(
        call_api(&api, &to_cloudwatch, "PUT", "/streaming", Some(&cw))
            .await
            .0,
        200
    );
    assert_eq!(
        call_api(&api, &to_datadog, "PUT", "/streaming", Some(&dd))
            .await
            .0,
        200
    );
    let year = json!({"since": (now() - Duration::from_secs(365 * 86_400)).format(&Rfc3339).unwrap(),
                      "until": now().format(&Rfc3339).unwrap()});
    let before = now().unix_timestamp() * 1000;
    for p in [&to_cloudwatch, &to_datadog] {
        assert_eq!(
            call_api(&api, p, "POST", "/streaming/replay", Some(&year))
                .await
                .0,
            202
        );
    }
    drain_stream_queues(&stack, &stream).await;
    let after = now().unix_timestamp() * 1000 + 1000;

    // CloudWatch: dated at delivery; the message keeps the event's own time.
    let logs = customer_logs(&aws, role, "us-east-1").await;
    let got = logs
        .get_log_events()
        .log_group_name(audit_log::destination::cloudwatch::events_log_group(
            stack.operator.log_group_prefix.as_str(),
        ))
        .log_stream_name(&to_cloudwatch.project_id)
        .send()
        .await
        .unwrap()
        .events
        .unwrap_or_default();
    assert_eq!(got.len(), 1);
    let ts = got[0].timestamp.unwrap();
    assert!((before..=after).contains(&ts), "dated at delivery: {ts}");
    let message: Value = serde_json::from_str(got[0].message.as_deref().unwrap()).unwrap();
    assert_eq!(
        message["timestamp"],
        twenty_days
            .replace_nanosecond(0)
            .unwrap()
            .format(&Rfc3339)
            .unwrap()
    );

    // Datadog: `timestamp` is the delivery time, `event_timestamp` the event's own.
    let entries = datadog_entries(&datadog).await;
    let entry = entries
        .iter()
        .find(|e| e["n"] == 2)
        .expect("delivered to Datadog");
    let dated = OffsetDateTime::parse(entry["timestamp"].as_str().unwrap(), &Rfc3339).unwrap();
    assert!(
        (before / 1000 - 1..=after / 1000).contains(&dated.unix_timestamp()),
        "{entry}"
    );
    assert_eq!(
        entry["event_timestamp"],
        twenty_hours
            .replace_nanosecond(0)
            .unwrap()
            .format(&Rfc3339)
            .unwrap()
    );
}

#[tokio::test]
async fn a_replay_of_failures_leaves_out_events_past_their_retention_deleted_or_not() {
    let aws = emulator().await;
    let stack = Stack::create(&aws, &format!("/{}", unique("hashicorp"))).await;
    let datadog = stand_in(202).await;
    let api = stack.api(Some(datadog.uri()));
    let stream = stack.stream(Some(datadog.uri()));
    let p = project();
    let mut range = stored_before_a_destination(&stack, &api, &stream, &p).await;
    let items = listed_as_failures(&stack, &p).await;
    let n_of = |item: &Item| stored_event(item)["n"].as_i64().unwrap();
    // One past its retention, which DynamoDB has not deleted yet (it takes up to days).
    let mut expired = items[4].clone();
    let n_expired = n_of(&expired);
    expired.insert(
        "expires_at".into(),
        aws_sdk_dynamodb::types::AttributeValue::N((now().unix_timestamp() - 60).to_string()),
    );
    stack.overwrite_item(expired).await;
    // And one DynamoDB has deleted: its failure is still listed (it outlives the event).
    let deleted = &items[7];
    let n_deleted = n_of(deleted);
    stack
        .dynamodb
        .delete_item()
        .table_name(&stack.events_table)
        .key("pk", deleted["pk"].clone())
        .key("sk", deleted["sk"].clone())
        .send()
        .await
        .unwrap();
    range["only_failed"] = json!(true);
    let (status, started) = call_api(&api, &p, "POST", "/streaming/replay", Some(&range)).await;
    assert_eq!(status, 202, "{started}");
    run_replays(&stack, &stream, |_| async { true }).await;
    let id = started["replay_id"].as_str().unwrap();
    let (_, replay) = call_api(&api, &p, "GET", &format!("/streaming/replays/{id}"), None).await;
    assert_eq!(replay["state"], "completed", "{replay}");
    // Gone is neither delivered nor failed.
    assert_eq!(
        (replay["delivered"].as_i64(), replay["failed"].as_i64()),
        (Some(10), Some(0)),
        "{replay}"
    );
    let expected: BTreeSet<i64> = (0..12)
        .filter(|&n| n != n_expired && n != n_deleted)
        .collect();
    assert_eq!(received(&datadog).await, expected);
}

#[tokio::test]
async fn a_replay_of_failures_reads_only_those_of_its_range() {
    let aws = emulator().await;
    let stack = Stack::create(&aws, &format!("/{}", unique("hashicorp"))).await;
    let datadog = stand_in(202).await;
    let api = stack.api(Some(datadog.uri()));
    let stream = stack
        .stream(Some(datadog.uri()))
        .with_replay_pages(ReplayPages {
            size: 2,
            per_invocation: 1,
            ..ReplayPages::default()
        });
    let p = project();
    stored_before_a_destination(&stack, &api, &stream, &p).await;
    let items = listed_as_failures(&stack, &p).await;
    // The range of events 3 to 5, with six newer failures and three older ones around it.
    let at = |n: i64| {
        let event = items
            .iter()
            .map(stored_event)
            .find(|e| e["n"] == n)
            .unwrap();
        event["timestamp"].as_str().unwrap().to_owned()
    };
    let range = json!({"since": at(3), "until": at(5), "only_failed": true});
    let (status, started) = call_api(&api, &p, "POST", "/streaming/replay", Some(&range)).await;
    assert_eq!(status, 202, "{started}");
    let mut invocations = 0;
    run_replays(&stack, &stream, |n| {
        invocations = n;
        async { true }
    })
    .await;
    let id = started["replay_id"].as_str().unwrap();
    let (_, replay) = call_api(&api, &p, "GET", &format!("/streaming/replays/{id}"), None).await;
    assert_eq!(replay["state"], "completed", "{replay}");
    assert_eq!(replay["delivered"], 3, "{replay}");
    assert_eq!(received(&datadog).await, (3..=5).collect());
    // A page an invocation: the range's two pages, none spent reading past the failures
    // around it.
    assert_eq!(invocations, 2);
    let left: BTreeSet<i64> = listed_failures(&api, &p, 5)
        .await
        .unwrap()
        .iter()
        .map(|f| f["event"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(left, (0..12).filter(|n| !(3..=5).contains(n)).collect());
}

#[tokio::test]
async fn a_listing_of_a_ranges_failures_goes_on_from_a_cursor_outside_it_too() {
    use audit_log::streaming::{ConfigTable, FailureLog};
    let aws = emulator().await;
    let stack = Stack::create(&aws, &format!("/{}", unique("hashicorp"))).await;
    let table = ConfigTable::new(stack.dynamodb.clone(), &stack.config_table);
    let p = project();
    let (org, project) = (&p.organization_id, &p.project_id);
    // Failures of events a minute apart; the range holds minutes 3 to 6.
    let start = now().replace_nanosecond(0).unwrap() - Duration::from_secs(3600);
    let at = |minute: u64| start + Duration::from_secs(60 * minute);
    let keys: Vec<_> = (0..10)
        .map(|minute| audit_log::store::StoredKey {
            sort_key: audit_log::store::sort_key(at(minute), &format!("m-{minute}")),
            message_id: format!("m-{minute}"),
            expires_at: (now() + Duration::from_secs(86_400)).unix_timestamp(),
        })
        .collect();
    table
        .record_failures(org, project, &keys, "HTTP 503", now())
        .await
        .unwrap();
    let low = audit_log::store::sort_key_time(at(3));
    let high = format!("{}$", audit_log::store::sort_key_time(at(6)));
    let listed = async |after: Option<usize>| {
        let after = after.map(|minute| keys[minute].sort_key.clone());
        let (page, next) = table
            .failures_within(org, project, (&low, &high), after.as_deref(), 10)
            .await
            .unwrap();
        let ids: Vec<String> = page.into_iter().map(|f| f.event_id).collect();
        (ids, next)
    };
    let range = ["m-6", "m-5", "m-4", "m-3"].map(String::from).to_vec();
    assert_eq!(listed(None).await, (range.clone(), None));
    // A cursor above the range (a replay's, saved while it listed every failure) starts at
    // its top; one below it has nothing left; one inside goes on after it.
    assert_eq!(listed(Some(9)).await, (range.clone(), None));
    assert_eq!(listed(Some(1)).await, (vec![], None));
    assert_eq!(listed(Some(5)).await, (range[2..].to_vec(), None));
}

type Item = HashMap<String, aws_sdk_dynamodb::types::AttributeValue>;

/// Lists every event stored for the project as a failure, as a lane past its retry window
/// lists them: the events' items.
async fn listed_as_failures(stack: &Stack, p: &Project) -> Vec<Item> {
    use audit_log::streaming::{ConfigTable, FailureLog};
    let (org, project) = (&p.organization_id, &p.project_id);
    let items = stack.stored_items(org, project).await;
    let keys: Vec<_> = items
        .iter()
        .map(|item| audit_log::store::StoredKey::of(item).unwrap())
        .collect();
    ConfigTable::new(stack.dynamodb.clone(), &stack.config_table)
        .record_failures(org, project, &keys, "Datadog answered HTTP 503", now())
        .await
        .unwrap();
    items
}

fn stored_event(item: &Item) -> Value {
    serde_json::from_str(&audit_log::store::event_json(item).unwrap()).unwrap()
}

/// Twelve events of the last hour stored while nothing is configured, so only a replay
/// delivers them, then a Datadog destination saved; the replay body whose range holds them.
async fn stored_before_a_destination(
    stack: &Stack,
    api: &audit_log_api::Api,
    stream: &audit_log_stream::Stream,
    p: &Project,
) -> Value {
    let start = now() - Duration::from_secs(3600);
    let stored: Vec<Value> = (0..12)
        .map(|n| event(p, start + Duration::from_secs(n as u64 * 60), n))
        .collect();
    send_and_capture(stack, &stored).await;
    drain_stream_within(
        stack,
        stream,
        &HashMap::new(),
        &mut StreamRun::default(),
        &StreamLimits::from_template(),
        |_| {},
    )
    .await;
    let body = json!({"provider": "datadog", "name": "dd", "datadog": {"site": "datadoghq.com", "api_key": audit_log_tests::SENTINEL_API_KEY}});
    assert_eq!(
        call_api(api, p, "PUT", "/streaming", Some(&body)).await.0,
        200
    );
    json!({"since": (start - Duration::from_secs(60)).format(&Rfc3339).unwrap(),
           "until": (start + Duration::from_secs(3000)).format(&Rfc3339).unwrap()})
}

/// A project whose twelve events were stored before its Datadog destination (a stand-in
/// answering `status`) was saved, and a replay of them started.
struct Replaying {
    stack: Stack,
    datadog: MockServer,
    api: audit_log_api::Api,
    stream: audit_log_stream::Stream,
    project: Project,
    /// `GET` path of the replay.
    replay: String,
    /// The range it replays, as it was asked for.
    range: Value,
}

impl Replaying {
    /// `before` runs between the destination's save and the replay's start.
    async fn start(status: u16, pages: ReplayPages, before: &[&str]) -> Self {
        let aws = emulator().await;
        let stack = Stack::create(&aws, &format!("/{}", unique("hashicorp"))).await;
        let datadog = stand_in(status).await;
        let api = stack.api(Some(datadog.uri()));
        let stream = stack.stream(Some(datadog.uri())).with_replay_pages(pages);
        let project = project();
        let range = stored_before_a_destination(&stack, &api, &stream, &project).await;
        for route in before {
            assert_eq!(call_api(&api, &project, "POST", route, None).await.0, 200);
        }
        let (status, started) =
            call_api(&api, &project, "POST", "/streaming/replay", Some(&range)).await;
        assert_eq!(status, 202, "{started}");
        let replay = format!(
            "/streaming/replays/{}",
            started["replay_id"].as_str().unwrap()
        );
        Self {
            stack,
            datadog,
            api,
            stream,
            project,
            replay,
            range,
        }
    }

    /// The stream function and the api on `clock` from now on.
    fn on(mut self, clock: &Arc<ManualClock>) -> Self {
        self.stream = self.stream.with_clock(clock.clone());
        self.api = self.api.with_clock(clock.clone());
        self
    }

    async fn replay(&self) -> Value {
        call_api(&self.api, &self.project, "GET", &self.replay, None)
            .await
            .1
    }

    /// Another replay of the same range, asked for now: its status and body.
    async fn start_another(&self) -> (u16, Value) {
        let range = Some(&self.range);
        call_api(&self.api, &self.project, "POST", "/streaming/replay", range).await
    }

    /// The numbers of the events the stand-in received, in order, as often as each came.
    async fn delivered(&self) -> Vec<i64> {
        let mut delivered = arrivals(&self.datadog).await;
        delivered.sort();
        delivered
    }

    async fn run<Fut: std::future::Future<Output = bool>>(&self, after: impl FnMut(usize) -> Fut) {
        run_replays(&self.stack, &self.stream, after).await;
    }
}

/// Runs the replay queue's messages one at a time until it is empty; `after` runs after each
/// invocation with its number, from 1, and says whether Lambda heard back from it (false: it
/// died, and its message comes back).
async fn run_replays<F, Fut>(stack: &Stack, stream: &audit_log_stream::Stream, mut after: F)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut invocations = 0;
    audit_log_tests::local::drain_queue(
        stack,
        "ReplayQueue",
        1,
        |event| {
            invocations += 1;
            let after = after(invocations);
            async move {
                let context = audit_log_tests::invocation_context(Duration::from_secs(60));
                let answer = stream
                    .handle_queue(lambda_runtime::LambdaEvent::new(event, context))
                    .await;
                after.await.then(|| failed_ids(&answer))
            }
        },
        |_| {},
    )
    .await;
}

#[tokio::test]
async fn a_finished_replay_whose_lock_was_not_released_releases_it_when_its_part_comes_again() {
    let r = Replaying::start(202, ReplayPages::default(), &[]).await;
    let replay_id = r.replay.rsplit('/').next().unwrap().to_owned();
    // The project's lock as the replay took it.
    let locks = |id: String| {
        let (dynamodb, table) = (r.stack.dynamodb.clone(), r.stack.config_table.clone());
        async move {
            dynamodb
                .scan()
                .table_name(table)
                .filter_expression("replay_id = :id AND attribute_exists(heartbeat)")
                .expression_attribute_values(":id", aws_sdk_dynamodb::types::AttributeValue::S(id))
                .send()
                .await
                .unwrap()
                .items
                .unwrap_or_default()
        }
    };
    let lock = locks(replay_id.clone()).await;
    assert_eq!(lock.len(), 1, "the replay holds the project's lock");
    let failed_once = std::sync::atomic::AtomicBool::new(false);
    r.run(|_| async {
        if r.replay().await["state"] != "completed" || failed_once.swap(true, Ordering::SeqCst) {
            return true;
        }
        // Finished, but the release of its lock failed (the table throttled): the lock stays,
        // and the invocation failed, so its message comes back.
        r.stack
            .dynamodb
            .put_item()
            .table_name(&r.stack.config_table)
            .set_item(Some(lock[0].clone()))
            .send()
            .await
            .unwrap();
        false
    })
    .await;
    assert!(failed_once.load(Ordering::SeqCst));
    assert_eq!(r.replay().await["state"], "completed");
    assert!(
        locks(replay_id).await.is_empty(),
        "released by the part that came again"
    );
    let (status, again) = r.start_another().await;
    assert_eq!(status, 202, "{again}");
}

#[tokio::test]
async fn a_replay_that_cannot_read_an_event_of_its_range_ends_failed_saying_so() {
    // Twelve events stored; since, one of them is text that is JSON but no event, and another
    // was packed by a newer release (read after a rollback).
    let r = Replaying::start(202, ReplayPages::default(), &[]).await;
    let items = r
        .stack
        .stored_items(&r.project.organization_id, &r.project.project_id)
        .await;
    assert_eq!(items.len(), 12);
    let mut damaged = items[5].clone();
    damaged.insert(
        "event".into(),
        aws_sdk_dynamodb::types::AttributeValue::S(r#"{"not":"an event"}"#.into()),
    );
    r.stack.overwrite_item(damaged).await;
    r.stack
        .overwrite_item(packed_by_a_newer_release(items[8].clone()))
        .await;
    r.run(async |_| true).await;
    // The other ten delivered; the replay is not "completed" with two silently left out.
    let replay = r.replay().await;
    assert_eq!(replay["state"], "failed", "{replay}");
    assert_eq!(
        (replay["delivered"].as_u64(), replay["failed"].as_u64()),
        (Some(10), Some(2))
    );
    assert!(
        replay["last_error"]
            .as_str()
            .unwrap()
            .contains("could not be read back"),
        "{replay}"
    );
    assert_eq!(received(&r.datadog).await.len(), 10);
    // Listed, as the lane lists what it cannot read: a replay of the failures brings them once
    // the service reads them again.
    let listed = listed_failures(&r.api, &r.project, 5).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed.iter().all(|f| f["reason"]
            .as_str()
            .unwrap()
            .contains("could not read the stored event")),
        "{listed:?}"
    );
}

/// Twenty minutes on: past the replay lock's staleness.
fn twenty_minutes_on() -> Arc<ManualClock> {
    let later = now() + Duration::from_secs(20 * 60);
    const { assert!(20 * 60 > audit_log::streaming::REPLAY_STALE_AFTER_SECONDS) };
    Arc::new(ManualClock::at(later))
}

#[tokio::test]
async fn a_replay_kept_waiting_past_its_locks_staleness_goes_on_where_it_stood() {
    // GIVEN a replay whose part then waits twenty minutes on a busy queue
    let pages = ReplayPages {
        size: 5,
        ..ReplayPages::default()
    };
    let r = Replaying::start(202, pages, &[])
        .await
        .on(&twenty_minutes_on());
    // THEN meanwhile it still runs, and says why it has not moved and what replaces it
    let waiting = r.replay().await;
    assert_eq!(waiting["state"], "running", "{waiting}");
    assert!(
        waiting["last_error"]
            .as_str()
            .unwrap()
            .contains("waiting behind others"),
        "{waiting}"
    );
    // WHEN its part comes, it goes on and delivers the whole range, once
    r.run(async |_| true).await;
    let done = r.replay().await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["delivered"], 12);
    assert_eq!(done["last_error"], Value::Null);
    assert_eq!(received(&r.datadog).await.len(), 12);
    assert_eq!(datadog_entries(&r.datadog).await.len(), 12);
}

#[tokio::test]
async fn a_replay_whose_lock_a_newer_one_took_while_it_waited_stops_without_sending() {
    // GIVEN a replay whose part waited past its lock's staleness, and a newer replay of the
    // project started meanwhile
    let r = Replaying::start(202, ReplayPages::default(), &[])
        .await
        .on(&twenty_minutes_on());
    let (status, newer) = r.start_another().await;
    assert_eq!(status, 202, "{newer}");
    // THEN the older is shown failed at once, replaced
    let replaced = r.replay().await;
    assert_eq!(replaced["state"], "failed", "{replaced}");
    assert_eq!(
        replaced["last_error"],
        audit_log::streaming::REPLAY_SUPERSEDED
    );
    // WHEN both parts come, in whatever order
    r.run(async |_| true).await;
    // THEN the older stops, failed, having sent nothing; the newer delivers the range once
    let older = r.replay().await;
    assert_eq!(older["state"], "failed", "{older}");
    assert_eq!(older["delivered"], 0);
    assert_eq!(
        older["last_error"],
        audit_log::streaming::REPLAY_SUPERSEDED,
        "{older}"
    );
    let path = format!(
        "/streaming/replays/{}",
        newer["replay_id"].as_str().unwrap()
    );
    let newer = call_api(&r.api, &r.project, "GET", &path, None).await.1;
    assert_eq!(newer["state"], "completed", "{newer}");
    assert_eq!(newer["delivered"], 12);
    assert_eq!(datadog_entries(&r.datadog).await.len(), 12);
}

/// A running replay `id` of the project, as the API starts it at `t0`.
fn running_replay(p: &Project, id: &str, t0: OffsetDateTime) -> audit_log::streaming::Replay {
    audit_log::streaming::Replay {
        replay_id: id.into(),
        organization_id: p.organization_id.clone(),
        project_id: p.project_id.clone(),
        state: audit_log::streaming::ReplayState::Running,
        since: "2026-11-01T00:00:00Z".into(),
        until: "2026-11-02T00:00:00Z".into(),
        only_failed: false,
        cursor: None,
        saves: 0,
        paused: false,
        delivered: 0,
        failed: 0,
        created_at: t0.format(&Rfc3339).unwrap(),
        updated_at: t0.format(&Rfc3339).unwrap(),
        finished_at: None,
        last_error: None,
    }
}

/// A replay that stalled past its lock's staleness while a newer one took the project's lock:
/// its next save fails it, and the newer one goes on alone.
async fn a_superseded_replay_stops(replays: &impl audit_log::streaming::Replays, p: &Project) {
    use audit_log::streaming::{ConfigError, REPLAY_STALE_AFTER_SECONDS, ReplayState};
    let t0 = now();
    let replay = |id: &str| running_replay(p, id, t0);
    let (mut a, mut b) = (replay(&"a".repeat(32)), replay(&"b".repeat(32)));
    assert!(replays.start_replay(&mut a, t0).await.unwrap());
    assert!(
        !replays
            .start_replay(&mut b, t0 + Duration::from_secs(60))
            .await
            .unwrap()
    );
    let later = t0 + Duration::from_secs(REPLAY_STALE_AFTER_SECONDS as u64 + 60);
    assert!(
        replays.start_replay(&mut b, later).await.unwrap(),
        "A was stale"
    );
    let saved = replays
        .save_replay(&mut a, later + Duration::from_secs(1))
        .await;
    assert!(
        matches!(saved, Err(ConfigError::ReplaySuperseded)),
        "{saved:?}"
    );
    let stored = |id: String| async move {
        replays
            .replay(&p.organization_id, &p.project_id, &id)
            .await
            .unwrap()
            .unwrap()
    };
    let a_now = stored(a.replay_id.clone()).await;
    assert_eq!(a_now.state, ReplayState::Failed);
    assert!(a_now.last_error.unwrap().contains("another replay"));
    // B keeps the lock it took.
    replays
        .save_replay(&mut b, later + Duration::from_secs(2))
        .await
        .unwrap();
    let at = later + Duration::from_secs(3);
    assert!(
        replays
            .replay_running(&p.organization_id, &p.project_id, at)
            .await
            .unwrap()
    );
    assert_eq!(
        stored(b.replay_id.clone()).await.state,
        ReplayState::Running
    );
}

#[tokio::test]
async fn a_replay_that_lost_its_lock_to_a_newer_one_stops_failed() {
    let aws = emulator().await;
    let stack = Stack::create(&aws, &format!("/{}", unique("hashicorp"))).await;
    let table = audit_log::streaming::ConfigTable::new(stack.dynamodb.clone(), &stack.config_table);
    a_superseded_replay_stops(&table, &project()).await;
    // The double the unit tests use behaves alike.
    a_superseded_replay_stops(&audit_log::lane::memory::MemoryLanes::default(), &project()).await;
}

/// Replays of the organization's projects that run at `at`, counted up to 10.
async fn running(
    replays: &impl audit_log::streaming::Replays,
    organization_id: &str,
    at: OffsetDateTime,
) -> usize {
    replays
        .replays_running(organization_id, at, 10)
        .await
        .unwrap()
}

/// An organization's running replays are those of its projects whose lock is fresh: one
/// that ended, or stalled, no longer counts, nor does another organization's.
async fn running_replays_are_counted(replays: &impl audit_log::streaming::Replays, p: &Project) {
    let t0 = now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let projects: Vec<Project> = (0..3)
        .map(|i| Project {
            project_id: format!("{}-{i}", p.project_id),
            ..p.clone()
        })
        .chain([project()])
        .collect();
    let mut started = Vec::new();
    for (i, q) in projects.iter().enumerate() {
        let mut replay = running_replay(q, &format!("{i}").repeat(32), t0);
        assert!(replays.start_replay(&mut replay, t0).await.unwrap());
        started.push(replay);
    }
    assert_eq!(running(replays, &p.organization_id, at(1)).await, 3);
    assert_eq!(
        replays
            .replays_running(&p.organization_id, at(1), 2)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        running(replays, &projects[3].organization_id, at(1)).await,
        1
    );
    started[0].state = audit_log::streaming::ReplayState::Completed;
    replays.save_replay(&mut started[0], at(2)).await.unwrap();
    assert_eq!(running(replays, &p.organization_id, at(3)).await, 2);
    // One waiting on its paused destination takes no turn of the queue.
    started[2].paused = true;
    replays.save_replay(&mut started[2], at(4)).await.unwrap();
    assert_eq!(running(replays, &p.organization_id, at(5)).await, 1);
    replays.save_replay(&mut started[1], at(600)).await.unwrap();
    let stale = audit_log::streaming::REPLAY_STALE_AFTER_SECONDS as u64;
    assert_eq!(running(replays, &p.organization_id, at(stale + 2)).await, 1);
    assert_eq!(
        running(replays, &p.organization_id, at(stale + 601)).await,
        0
    );
}

#[tokio::test]
async fn an_organizations_running_replays_are_counted_across_its_projects() {
    let aws = emulator().await;
    let stack = Stack::create(&aws, &format!("/{}", unique("hashicorp"))).await;
    let table = audit_log::streaming::ConfigTable::new(stack.dynamodb.clone(), &stack.config_table);
    running_replays_are_counted(&table, &project()).await;
    running_replays_are_counted(&audit_log::lane::memory::MemoryLanes::default(), &project()).await;
}

/// Whether the request's body holds `marker`.
fn holds(context: &BeforeTransmitInterceptorContextRef<'_>, marker: &str) -> bool {
    let body = context.request().body().bytes().unwrap_or_default();
    String::from_utf8_lossy(body).contains(marker)
}

/// Answers the first request whose body holds `marker` with a 500 once it has landed: the
/// SDK then sends it again, as it does when an answer is lost on its way.
#[derive(Debug)]
struct LoseFirstAnswer {
    marker: &'static str,
    armed: std::sync::atomic::AtomicBool,
    lost: std::sync::atomic::AtomicBool,
}

impl Intercept for LoseFirstAnswer {
    fn name(&self) -> &'static str {
        "LoseFirstAnswer"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        use std::sync::atomic::Ordering::SeqCst;
        let ours = holds(context, self.marker);
        self.armed.store(ours && !self.lost.load(SeqCst), SeqCst);
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.armed.swap(false, SeqCst) {
            self.lost.store(true, SeqCst);
            *context.response_mut() = aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(500).unwrap(),
                aws_smithy_types::body::SdkBody::from(
                    r#"{"__type":"InternalServerError","message":"answer lost"}"#,
                ),
            );
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_replay_whose_lock_landed_before_its_answer_was_lost_starts() {
    use audit_log::streaming::{ReplayState, Replays};
    // GIVEN the events table's answer to a replay's lock is lost after the lock was written
    let aws = emulator().await;
    let stack = Stack::create(&aws, &format!("/{}", unique("hashicorp"))).await;
    let lose = LoseFirstAnswer {
        marker: "replay-lock#",
        armed: false.into(),
        lost: false.into(),
    };
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&aws)
            .interceptor(lose)
            .build(),
    );
    let table = audit_log::streaming::ConfigTable::new(client, &stack.config_table);
    let p = project();
    let t0 = now();
    let mut replay = running_replay(&p, &"d".repeat(32), t0);
    // WHEN it starts, the SDK sending the lock again
    let started = table.start_replay(&mut replay, t0).await;
    // THEN it has started, and holds the project's lock: its own lock is no other replay's
    assert_eq!(started, Ok(true));
    assert_eq!(
        table
            .replay_lock_holder(&p.organization_id, &p.project_id)
            .await
            .unwrap(),
        Some(replay.replay_id.clone())
    );
    let stored = table.replay(&p.organization_id, &p.project_id, &replay.replay_id);
    assert_eq!(stored.await.unwrap().unwrap().state, ReplayState::Running);
}

/// Two copies of one part of a replay read it at once (SQS delivers at least once): the first
/// to save goes on; the other's saves write nothing, even after the first has finished it.
async fn copies_of_a_part_save_once(replays: &impl audit_log::streaming::Replays, p: &Project) {
    use audit_log::streaming::{ConfigError, ReplayState};
    let t0 = now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let id = "c".repeat(32);
    assert!(
        replays
            .start_replay(&mut running_replay(p, &id, t0), t0)
            .await
            .unwrap()
    );
    let read = async || {
        replays
            .replay(&p.organization_id, &p.project_id, &id)
            .await
            .unwrap()
            .unwrap()
    };
    let (mut first, mut second) = (read().await, read().await);
    for copy in [&mut first, &mut second] {
        copy.delivered = 5;
        copy.cursor = Some("2026-11-01T10:00:00.000000000Z#m-5".into());
    }
    replays.save_replay(&mut first, at(1)).await.unwrap();
    let lost = replays.save_replay(&mut second, at(1)).await;
    assert_eq!(lost, Err(ConfigError::ReplayMovedOn));
    // The first finishes the range; the second, had it gone on, cannot mark it failed.
    first.delivered = 12;
    first.cursor = None;
    first.state = ReplayState::Completed;
    replays.save_replay(&mut first, at(2)).await.unwrap();
    second.delivered = 10;
    let lost = replays.save_replay(&mut second, at(3)).await;
    assert_eq!(lost, Err(ConfigError::ReplayMovedOn));
    let stored = read().await;
    assert_eq!(
        (stored.state, stored.delivered),
        (ReplayState::Completed, 12)
    );
    assert!(
        !replays
            .replay_running(&p.organization_id, &p.project_id, at(4))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn two_copies_of_a_replays_part_save_it_once() {
    let aws = emulator().await;
    let stack = Stack::create(&aws, &format!("/{}", unique("hashicorp"))).await;
    let table = audit_log::streaming::ConfigTable::new(stack.dynamodb.clone(), &stack.config_table);
    copies_of_a_part_save_once(&table, &project()).await;
    copies_of_a_part_save_once(&audit_log::lane::memory::MemoryLanes::default(), &project()).await;
}

#[tokio::test]
async fn a_replay_part_delivered_twice_at_once_runs_the_replay_once() {
    let r = Replaying::start(202, page_an_invocation(), &[]).await;
    let mut invocations = 0;
    audit_log_tests::local::drain_queue(
        &r.stack,
        "ReplayQueue",
        1,
        |event| {
            invocations += 1;
            let stream = &r.stream;
            async move {
                let context = audit_log_tests::invocation_context(Duration::from_secs(60));
                let handle = |event| {
                    stream.handle_queue(lambda_runtime::LambdaEvent::new(event, context.clone()))
                };
                // The first part comes to two instances at once.
                let answer = if invocations == 1 {
                    let (answer, _) = tokio::join!(handle(event.clone()), handle(event));
                    answer
                } else {
                    handle(event).await
                };
                Some(failed_ids(&answer))
            }
        },
        |_| {},
    )
    .await;
    let replay = r.replay().await;
    assert_eq!(replay["state"], "completed", "{replay}");
    assert_eq!(replay["delivered"], 12, "{replay}");
    // One chain of parts: the first's copies, then one part per page left. Two chains would
    // have run the rest of the range twice (or each other's tail), a part each.
    assert_eq!(invocations, 3);
    let mut delivered = r.delivered().await;
    delivered.dedup();
    assert_eq!(delivered, (0..12).collect::<Vec<_>>());
}

/// Pages of 5 events, one page per invocation.
fn page_an_invocation() -> ReplayPages {
    ReplayPages {
        size: 5,
        per_invocation: 1,
        ..ReplayPages::default()
    }
}

#[tokio::test]
async fn a_replay_whose_invocation_dies_resumes_where_it_stopped() {
    let r = Replaying::start(202, page_an_invocation(), &[]).await;
    // The first invocation delivers its page and saves its progress, then dies before SQS hears
    // of it: its message comes back.
    r.run(|n| async move { n > 1 }).await;
    let replay = r.replay().await;
    assert_eq!(replay["state"], "completed", "{replay}");
    assert_eq!(replay["delivered"], 12);
    assert_eq!(
        r.delivered().await,
        (0..12).collect::<Vec<_>>(),
        "resumed where it stopped: each event once"
    );
}

/// A replay in pages of five, started while the project's lane is paused, whose lane instant
/// `attribute` is set to eight days ago; the replay's part looks again at once.
async fn paused_with_eight_days_old(attribute: &str) -> Replaying {
    let pages = ReplayPages {
        size: 5,
        paused_wait: 0,
        ..ReplayPages::default()
    };
    let r = Replaying::start(202, pages, &["/streaming/pause"]).await;
    let eight_days_ago = OffsetDateTime::now_utc() - Duration::from_secs(8 * 86_400);
    backdate_lane(
        &r.stack.dynamodb,
        &r.stack.config_table,
        attribute,
        eight_days_ago,
    )
    .await;
    r
}

#[tokio::test]
async fn a_replay_sends_nothing_while_its_lane_is_paused_and_goes_on_after_resume() {
    // Its trouble began long before the pause: only the pause's own length counts.
    let r = paused_with_eight_days_old("lane_since").await;
    // Started, it is one of the organization's running replays; waiting on the pause, none.
    use audit_log::streaming::Replays;
    let table =
        audit_log::streaming::ConfigTable::new(r.stack.dynamodb.clone(), &r.stack.config_table);
    let running = async || {
        let org = &r.project.organization_id;
        table.replays_running(org, now(), 10).await.unwrap()
    };
    assert_eq!(running().await, 1);
    let paused = std::sync::Mutex::new(None);
    let (r, seen, running) = (&r, &paused, &running);
    r.run(|n| async move {
        if n == 1 {
            assert_eq!(
                running().await,
                0,
                "a replay waiting on a pause takes no turn"
            );
            let replay = r.replay().await;
            *seen.lock().unwrap() = Some((replay, datadog_entries(&r.datadog).await.len()));
            let resumed = call_api(&r.api, &r.project, "POST", "/streaming/resume", None).await;
            assert_eq!(resumed.0, 200);
        }
        true
    })
    .await;
    let (replay, sent) = paused.into_inner().unwrap().expect("a first invocation");
    assert_eq!(sent, 0, "nothing is sent while paused");
    assert_eq!(replay["state"], "running", "{replay}");
    assert_eq!(replay["delivered"], 0);
    let replay = r.replay().await;
    assert_eq!(replay["state"], "completed", "{replay}");
    assert_eq!(replay["delivered"], 12);
    assert_eq!(received(&r.datadog).await, (0..12).collect());
}

#[tokio::test]
async fn a_replay_stops_once_its_lane_has_been_paused_longer_than_the_retry_window() {
    // The pause began eight days ago (the default window is seven).
    let r = paused_with_eight_days_old("lane_paused_at").await;
    r.run(|_| async { true }).await;
    let replay = r.replay().await;
    assert_eq!(replay["state"], "failed", "{replay}");
    let error = replay["last_error"].as_str().unwrap();
    assert!(
        error.contains("paused for longer than the") && error.contains("resume it"),
        "{error}"
    );
    assert_eq!(datadog_entries(&r.datadog).await.len(), 0, "nothing sent");
}

/// A replay of the twelve events in pages of two to a stand-in answering `status`, which
/// fails with nothing delivered and every event it tried listed as a failure: its last error,
/// the invocations it took and the events it tried.
async fn replay_to_a_broken_destination(status: u16) -> (String, usize, u64) {
    let pages = ReplayPages {
        size: 2,
        // Time for a loaded emulator's secret read and a request; a 503 page waits all of it.
        page_time: Duration::from_secs(2),
        first_backoff: 0,
        ..ReplayPages::default()
    };
    let r = Replaying::start(status, pages, &[]).await;
    let invocations = std::sync::atomic::AtomicUsize::new(0);
    r.run(|n| {
        invocations.store(n, std::sync::atomic::Ordering::Relaxed);
        async { true }
    })
    .await;
    let replay = r.replay().await;
    assert_eq!(replay["state"], "failed", "{replay}");
    assert_eq!(replay["delivered"], 0);
    let failed = replay["failed"].as_u64().unwrap();
    let listed = listed_failures(&r.api, &r.project, 100).await.unwrap();
    assert_eq!(
        listed.len() as u64,
        failed,
        "what it could not deliver is listed"
    );
    let error = replay["last_error"].as_str().unwrap().to_owned();
    (error, invocations.into_inner(), failed)
}

#[tokio::test]
async fn a_replay_to_a_destination_in_trouble_waits_between_pages_and_stops_after_five() {
    let (error, invocations, tried) = replay_to_a_broken_destination(503).await;
    // One page per invocation, each queued after a wait: no replay slot held meanwhile.
    assert_eq!((invocations, tried), (5, 10));
    assert!(error.contains("failed on 5 pages in a row"), "{error}");
    assert!(error.contains("HTTP 503"), "{error}");
}

#[tokio::test]
async fn a_replay_page_whose_failures_cannot_be_listed_goes_again_and_lists_them() {
    let pages = ReplayPages {
        size: 2,
        page_time: Duration::from_secs(2),
        ..ReplayPages::default()
    };
    let mut r = Replaying::start(403, pages, &[]).await;
    // The configuration table refuses the first write of failures.
    let refuse = RefuseFirst {
        marker: "failure#",
        times: 1.into(),
    };
    let config = r.stack.dynamodb.config().to_builder().interceptor(refuse);
    let configs = audit_log::streaming::ConfigTable::new(
        aws_sdk_dynamodb::Client::from_conf(config.build()),
        &r.stack.config_table,
    );
    r.stream = r.stream.with_config_table(configs);
    let invocations = std::sync::atomic::AtomicUsize::new(0);
    r.run(|n| {
        invocations.store(n, Ordering::Relaxed);
        async { true }
    })
    .await;
    let replay = r.replay().await;
    assert_eq!(replay["state"], "failed", "{replay}");
    // The first part failed without saving; the second sent the page again and listed it.
    assert_eq!(invocations.into_inner(), 2);
    assert_eq!(replay["failed"], 2, "counted once: {replay}");
    let sent = arrivals(&r.datadog).await;
    let page: BTreeSet<i64> = sent.iter().copied().collect();
    assert_eq!(page.len(), 2, "{sent:?}");
    assert!(sent.len() >= 2 * page.len(), "sent by both parts: {sent:?}");
    let listed: BTreeSet<i64> = listed_failures(&r.api, &r.project, 100)
        .await
        .unwrap()
        .iter()
        .map(|f| f["event"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, page, "what it could not deliver is listed");
}

/// Refuses the first `times` requests whose body holds `marker`, before they are sent.
#[derive(Debug)]
struct RefuseFirst {
    marker: &'static str,
    times: std::sync::atomic::AtomicUsize,
}

impl Intercept for RefuseFirst {
    fn name(&self) -> &'static str {
        "RefuseFirst"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        use std::sync::atomic::Ordering::SeqCst;
        if holds(context, self.marker)
            && self
                .times
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err("the table is unavailable (refused by the test)".into());
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_replay_the_destination_refuses_stops_at_once_with_what_to_do() {
    let (error, invocations, tried) = replay_to_a_broken_destination(403).await;
    assert_eq!((invocations, tried), (1, 2));
    assert!(error.contains("refused its events"), "{error}");
    assert!(error.contains("start another replay"), "{error}");
}
