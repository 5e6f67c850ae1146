use super::*;
use crate::event::AuditEvent;
use crate::fixtures::SEED_EVENTS;
use crate::settings::Retention;
use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use std::time::Duration;

const TABLE: &str = "events";

fn events(n: usize) -> Vec<StoredEvent> {
    (0..n)
        .map(|i| {
            let e = AuditEvent::from_json(SEED_EVENTS[i % SEED_EVENTS.len()].1).unwrap();
            StoredEvent::new(&format!("m{i}"), &e, Retention::default()).unwrap()
        })
        .collect()
}

fn fast() -> Backoff {
    Backoff {
        base: Duration::from_millis(1),
        max: Duration::from_millis(5),
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

fn ids(failures: &[WriteFailure]) -> Vec<&str> {
    let mut ids: Vec<_> = failures.iter().map(|f| f.message_id.as_str()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn keys_left_unread_are_asked_again_after_a_backoff_and_not_for_ever() {
    use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemOutput;
    use aws_sdk_dynamodb::types::KeysAndAttributes;
    let stored = events(2);
    let items: Vec<_> = stored.iter().map(|e| e.item.clone()).collect();
    let sort_keys: Vec<String> = items
        .iter()
        .map(|i| i[attr::SORT_KEY].as_s().unwrap().clone())
        .collect();
    let unread = |r: &aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemInput| {
        KeysAndAttributes::builder()
            .set_keys(Some(r.request_items().unwrap()[TABLE].keys().to_vec()))
            .build()
            .unwrap()
    };
    // Throttled once, then read.
    let throttled = mock!(Client::batch_get_item).then_compute_output(move |r| {
        BatchGetItemOutput::builder()
            .unprocessed_keys(TABLE, unread(r))
            .build()
    });
    let read = mock!(Client::batch_get_item).then_output({
        let items = items.clone();
        move || {
            BatchGetItemOutput::builder()
                .responses(TABLE, items.clone())
                .build()
        }
    });
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&throttled, &read]);
    let table = EventTable::new(client, TABLE).with_backoff(fast());
    let found = table.events_at("o", "p", &sort_keys).await.unwrap();
    assert_eq!(found.len(), 2);
    // Throttled for good: an error to try again later, after a bounded number of requests.
    let stuck = mock!(Client::batch_get_item).then_compute_output(move |r| {
        BatchGetItemOutput::builder()
            .unprocessed_keys(TABLE, unread(r))
            .build()
    });
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&stuck]);
    let table = EventTable::new(client, TABLE).with_backoff(fast());
    let unread = table.events_at("o", "p", &sort_keys).await;
    assert_eq!(unread.unwrap_err(), StoreError::Unprocessed);
    assert_eq!(stuck.num_calls(), 1 + UNREAD_ROUNDS as usize);
}

#[tokio::test]
async fn unprocessed_items_are_retried_until_written() {
    // The first answer hands back the first two requests it was given; the second takes all.
    let partial = mock!(Client::batch_write_item)
        .match_requests(|r| r.request_items().unwrap()[TABLE].len() == 3)
        .then_compute_output(|r| {
            let back = r.request_items().unwrap()[TABLE][..2].to_vec();
            BatchWriteItemOutput::builder()
                .unprocessed_items(TABLE, back)
                .build()
        });
    let rest = mock!(Client::batch_write_item)
        .match_requests(|r| r.request_items().unwrap()[TABLE].len() == 2)
        .then_output(|| BatchWriteItemOutput::builder().build());
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&partial, &rest]);
    let table = EventTable::new(client, TABLE).with_backoff(fast());
    let failures = table.put_events(events(3), soon()).await;
    assert_eq!(failures, vec![]);
    assert_eq!(partial.num_calls(), 1);
    assert_eq!(rest.num_calls(), 1);
}

/// A table that hands m1 back unprocessed every time, and takes every other event.
fn stuck_on_m1() -> aws_smithy_mocks::Rule {
    mock!(Client::batch_write_item).then_compute_output(|r| {
        let stuck: Vec<_> = r.request_items().unwrap()[TABLE]
            .iter()
            .filter(|w| message_id(w) == Some("m1"))
            .cloned()
            .collect();
        BatchWriteItemOutput::builder()
            .unprocessed_items(TABLE, stuck)
            .build()
    })
}

#[tokio::test]
async fn items_still_unprocessed_at_the_deadline_are_reported_and_only_they() {
    let stuck = stuck_on_m1();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&stuck]);
    let table = EventTable::new(client, TABLE).with_backoff(fast());
    let deadline = Instant::now() + Duration::from_millis(300);
    let failures = table.put_events(events(3), deadline).await;
    assert_eq!(ids(&failures), vec!["m1"]);
    assert_eq!(failures[0].reason, StoreError::Unprocessed);
    assert!(stuck.num_calls() > 2, "retried while time was left");
}

#[tokio::test]
async fn a_project_over_its_partitions_rate_holds_back_no_other_event() {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    // One event in each request of 25 is of a project DynamoDB throttles for the whole
    // invocation; ten requests, more than are sent at once.
    let hot = |id: &str| id[1..].parse::<usize>().unwrap() % BATCH_WRITE_LIMIT == 0;
    #[derive(Default)]
    struct Seen {
        written: HashMap<String, usize>,
        hot_tries: HashMap<String, usize>,
        /// Other events written only after a hot one was tried again.
        late: usize,
    }
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let throttles = mock!(Client::batch_write_item).then_compute_output({
        let seen = seen.clone();
        move |r| {
            let (back, taken): (Vec<_>, Vec<_>) = r.request_items().unwrap()[TABLE]
                .iter()
                .cloned()
                .partition(|w| hot(message_id(w).unwrap()));
            let mut seen = seen.lock().unwrap();
            for w in &back {
                *seen
                    .hot_tries
                    .entry(message_id(w).unwrap().to_owned())
                    .or_default() += 1;
            }
            if seen.hot_tries.values().any(|n| *n > 1) {
                seen.late += taken.len();
            }
            for w in &taken {
                *seen
                    .written
                    .entry(message_id(w).unwrap().to_owned())
                    .or_default() += 1;
            }
            BatchWriteItemOutput::builder()
                .set_unprocessed_items(
                    (!back.is_empty()).then(|| HashMap::from([(TABLE.to_owned(), back)])),
                )
                .build()
        }
    });
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&throttles]);
    let table = EventTable::new(client, TABLE).with_backoff(fast());
    let deadline = Instant::now() + Duration::from_millis(300);
    let failures = table.put_events(events(250), deadline).await;
    let expected: Vec<String> = (0..250)
        .map(|i| format!("m{i}"))
        .filter(|id| hot(id))
        .collect();
    let mut expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(ids(&failures), expected);
    assert!(failures.iter().all(|f| f.reason == StoreError::Unprocessed));
    // Every other event was stored, once, and before any hot one was tried again: none
    // waited for the hot project's retries.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.written.len(), 240);
    assert!(seen.written.values().all(|n| *n == 1));
    assert_eq!(seen.late, 0);
    // The hot events alone were tried again, round after round.
    assert!(
        seen.hot_tries.values().all(|n| *n > 2),
        "{:?}",
        seen.hot_tries
    );
}

#[tokio::test(start_paused = true)]
async fn a_partition_throttled_past_patience_is_handed_back_long_before_the_deadline() {
    // m1's partition takes nothing for the whole invocation; the default backoff (up to 2 s).
    let stuck = stuck_on_m1();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&stuck]);
    let table = EventTable::new(client, TABLE);
    let start = Instant::now();
    let failures = table
        .put_events(events(3), start + Duration::from_secs(30))
        .await;
    assert_eq!(
        failures,
        vec![WriteFailure {
            message_id: "m1".into(),
            reason: StoreError::Unprocessed
        }]
    );
    // Tried again while throttling might pass, then handed back: no round after PATIENCE.
    assert!(stuck.num_calls() > 2, "{}", stuck.num_calls());
    let took = start.elapsed();
    assert!(took >= PATIENCE, "{took:?}");
    assert!(took < PATIENCE + Backoff::default().max, "{took:?}");
}

#[tokio::test]
async fn a_request_that_hangs_is_cut_and_its_events_sent_in_the_next_round() {
    use wiremock::matchers::{body_string_contains, method};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let dynamodb = MockServer::start().await;
    let answer = || {
        ResponseTemplate::new(200)
            .insert_header("content-type", "application/x-amz-json-1.0")
            .set_body_string("{}")
    };
    // The request carrying m0 hangs the first time it is sent; every other is answered.
    Mock::given(method("POST"))
        .and(body_string_contains("#m0\""))
        .respond_with(answer().set_delay(Duration::from_secs(60)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&dynamodb)
        .await;
    Mock::given(method("POST"))
        .respond_with(answer())
        .with_priority(2)
        .mount(&dynamodb)
        .await;
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .endpoint_url(dynamodb.uri())
        .build();
    let table = EventTable::with_attempt_timeout(
        Client::from_conf(config),
        TABLE,
        // Long enough that no answered request is cut on a loaded machine.
        Duration::from_secs(2),
    )
    .with_backoff(fast());
    let started = Instant::now();
    let failures = table
        .put_events(events(50), started + Duration::from_secs(30))
        .await;
    assert_eq!(failures, vec![]);
    // Cut after its attempt's time, not held until the deadline.
    assert!(started.elapsed() < Duration::from_secs(10));
    // Two requests of 25, the hung one sent again.
    assert_eq!(dynamodb.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn each_event_left_unwritten_is_reported_with_its_own_trouble() {
    let carries = |r: &aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemInput,
                   id: &str| {
        r.request_items().unwrap()[TABLE]
            .iter()
            .any(|w| message_id(w) == Some(id))
    };
    // The request carrying m0 is throttled every time; the other hands m30 back every time.
    let throttled = mock!(Client::batch_write_item)
        .match_requests(move |r| carries(r, "m0"))
        .then_http_response(|| dynamodb_error(400, "ThrottlingException"));
    let hands_back = mock!(Client::batch_write_item).then_compute_output(|r| {
        let back: Vec<_> = r.request_items().unwrap()[TABLE]
            .iter()
            .filter(|w| message_id(w) == Some("m30"))
            .cloned()
            .collect();
        BatchWriteItemOutput::builder()
            .unprocessed_items(TABLE, back)
            .build()
    });
    let client = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::MatchAny,
        [&throttled, &hands_back]
    );
    let table = EventTable::new(client, TABLE).with_backoff(fast());
    let deadline = Instant::now() + Duration::from_millis(300);
    let failures = table.put_events(events(50), deadline).await;
    let reason_of = |id: &str| {
        failures
            .iter()
            .find(|f| f.message_id == id)
            .map(|f| f.reason.clone())
    };
    assert_eq!(failures.len(), 26, "{failures:?}");
    assert_eq!(reason_of("m30"), Some(StoreError::Unprocessed));
    assert!(
        matches!(reason_of("m0"), Some(StoreError::Unavailable(text)) if text.contains("ThrottlingException"))
    );
    assert!(matches!(reason_of("m24"), Some(StoreError::Unavailable(_))));
}

/// An error as DynamoDB's JSON protocol sends it, so the SDK parses it as in production.
fn dynamodb_error(status: u16, kind: &str) -> aws_smithy_runtime_api::http::Response {
    aws_smithy_runtime_api::http::Response::new(
        aws_smithy_runtime_api::http::StatusCode::try_from(status).unwrap(),
        aws_smithy_types::body::SdkBody::from(format!(
            r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{kind}","message":"from the test"}}"#
        )),
    )
}

#[tokio::test]
async fn throttling_is_retried_with_backoff() {
    let throttled = mock!(Client::batch_write_item)
        .sequence()
        .http_response(|| dynamodb_error(400, "ProvisionedThroughputExceededException"))
        .times(4)
        .output(|| BatchWriteItemOutput::builder().build())
        .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&throttled]);
    let table = EventTable::new(client, TABLE).with_backoff(fast());
    assert_eq!(table.put_events(events(2), soon()).await, vec![]);
    assert_eq!(throttled.num_calls(), 5);
}

#[tokio::test]
async fn the_service_s_own_faults_are_retried_whatever_their_code() {
    // DynamoDB's `InternalFailure`, and a 502 with no body to name a code (a load balancer's).
    let faults = mock!(Client::batch_write_item)
        .sequence()
        .http_response(|| dynamodb_error(500, "InternalFailure"))
        .http_response(|| {
            aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(502).unwrap(),
                aws_smithy_types::body::SdkBody::empty(),
            )
        })
        .output(|| BatchWriteItemOutput::builder().build())
        .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&faults]);
    let table = EventTable::new(client, TABLE).with_backoff(fast());
    assert_eq!(table.put_events(events(2), soon()).await, vec![]);
    assert_eq!(faults.num_calls(), 3, "tried again, not sent one by one");
}

#[tokio::test]
async fn the_sdk_does_not_retry_under_the_service_s_own_attempts() {
    let throttled = mock!(Client::batch_write_item)
        .sequence()
        .http_response(|| dynamodb_error(400, "ProvisionedThroughputExceededException"))
        .times(2)
        .output(|| BatchWriteItemOutput::builder().build())
        .build();
    // A client as the functions build it, with the SDK's standard retries.
    let client = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::Sequential,
        [&throttled],
        |config| config.retry_config(crate::sdk::standard_retries())
    );
    let table = EventTable::new(client, TABLE).with_backoff(Backoff::NONE);
    let failures = table.put_events(events(2), soon()).await;
    assert_eq!(ids(&failures), vec!["m0", "m1"]);
    assert_eq!(
        throttled.num_calls(),
        1,
        "one call: the backoff allowed no retry"
    );
}

#[tokio::test]
async fn a_table_the_function_may_not_write_is_an_outage_not_a_refusal_of_its_events() {
    for code in ["AccessDeniedException", "ResourceNotFoundException"] {
        let denied =
            mock!(Client::batch_write_item).then_http_response(move || dynamodb_error(400, code));
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&denied]);
        let table = EventTable::new(client, TABLE).with_backoff(fast());
        // Tried again until the invocation's time is up, as an outage is.
        let failures = table
            .put_events(events(2), Instant::now() + Duration::from_millis(200))
            .await;
        assert_eq!(ids(&failures), vec!["m0", "m1"]);
        assert!(denied.num_calls() > 1, "{code}: not tried again");
        // Worth another try, so capture sends the events round rather than dead-letter them.
        assert!(
            failures.iter().all(|f| f.reason.is_retryable()),
            "{code}: {failures:?}"
        );
    }
}

#[tokio::test]
async fn a_refused_request_fails_its_events_without_retrying() {
    let refused = mock!(Client::batch_write_item)
        .then_http_response(|| dynamodb_error(400, "ValidationException"));
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&refused]);
    let table = EventTable::new(client, TABLE).with_backoff(fast());
    let failures = table.put_events(events(2), soon()).await;
    assert_eq!(ids(&failures), vec!["m0", "m1"]);
    assert!(
        matches!(&failures[0].reason, StoreError::Refused(text) if text.contains("ValidationException"))
    );
    // The pair once, then each alone; none retried.
    assert_eq!(refused.num_calls(), 3);
}

#[tokio::test]
async fn one_refused_item_fails_alone_and_its_neighbours_are_stored() {
    let refuses_m1 = mock!(Client::batch_write_item)
        .match_requests(|r| {
            r.request_items().unwrap()[TABLE]
                .iter()
                .any(|w| message_id(w) == Some("m1"))
        })
        .then_http_response(|| dynamodb_error(400, "ValidationException"));
    let takes =
        mock!(Client::batch_write_item).then_output(|| BatchWriteItemOutput::builder().build());
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&refuses_m1, &takes]);
    let table = EventTable::new(client, TABLE).with_backoff(fast());
    let failures = table.put_events(events(25), soon()).await;
    assert_eq!(ids(&failures), vec!["m1"]);
    assert!(matches!(&failures[0].reason, StoreError::Refused(_)));
    // The other 24 were each written on their own.
    assert_eq!(takes.num_calls(), 24);
}

#[tokio::test]
async fn requests_carry_at_most_25_items() {
    let rule = mock!(Client::batch_write_item)
        .match_requests(|r| r.request_items().unwrap()[TABLE].len() <= BATCH_WRITE_LIMIT)
        .then_output(|| BatchWriteItemOutput::builder().build());
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&rule]);
    let table = EventTable::new(client, TABLE);
    assert_eq!(table.put_events(events(101), soon()).await, vec![]);
    assert_eq!(rule.num_calls(), 5);
}
