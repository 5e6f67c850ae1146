//! The CloudWatch sink against the SDK's mocked clients: what the emulator cannot answer
//! (refused roles, throttling, rejected events, creation races).

use super::request::tests::at;
use super::*;
use crate::destination::{PROBE_SPLITS_AT_MOST, SPLITS_AT_MOST};
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

use aws_sdk_cloudwatchlogs::operation::create_log_stream::CreateLogStreamOutput;
use aws_sdk_cloudwatchlogs::operation::put_log_events::PutLogEventsOutput;
use aws_sdk_cloudwatchlogs::types::RejectedLogEventsInfo;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use aws_smithy_runtime_api::http::{Response, StatusCode};
use aws_smithy_types::body::SdkBody;

fn recent(n: usize) -> Vec<AuditEvent> {
    let now = OffsetDateTime::now_utc();
    (0..n)
        .map(|i| at(now - Duration::from_secs(600 + i as u64), 0))
        .collect()
}

const FAST: Backoff = Backoff {
    base: Duration::from_millis(1),
    max: Duration::from_millis(5),
};

fn fast(cw: CloudWatch) -> CloudWatch {
    cw.with_backoff(FAST)
}

const ROLE: &str = "arn:aws:iam::111111111111:role/hcp-log-streaming";

fn role_credentials() -> Credentials {
    Credentials::Cloudwatch {
        role_arn: ROLE.into(),
        external_id: SecretString::from("ext-id-sentinel"),
    }
}

fn refused_sts() -> (aws_smithy_mocks::Rule, aws_sdk_sts::Client) {
    let refused = mock!(aws_sdk_sts::Client::assume_role).then_http_response(|| {
        Response::new(
            StatusCode::try_from(403).unwrap(),
            SdkBody::from(
                "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>\
                 <Message>not authorized to perform sts:AssumeRole</Message></Error>\
                 <RequestId>r</RequestId></ErrorResponse>",
            ),
        )
    });
    let sts = mock_client!(aws_sdk_sts, RuleMode::MatchAny, [&refused]);
    (refused, sts)
}

fn base() -> SdkConfig {
    SdkConfig::builder()
        .region(Region::new("us-east-1"))
        .behavior_version(aws_config::BehaviorVersion::latest())
        // Nothing listens there: a call no mock answers fails at once.
        .endpoint_url("http://127.0.0.1:1")
        .build()
}

fn logs_error(status: u16, kind: &str) -> Response {
    Response::new(
        StatusCode::try_from(status).unwrap(),
        SdkBody::from(format!(
            r#"{{"__type":"{kind}","message":"from the test"}}"#
        )),
    )
}

fn settings() -> CloudWatchSettings {
    CloudWatchSettings {
        role_arn: ROLE.into(),
        region: "us-west-2".into(),
    }
}

fn project(credentials: Credentials) -> Project<'static> {
    Project {
        organization_id: "org",
        project_id: "proj",
        credentials: Box::new(credentials),
    }
}

/// A logs client answering from `rules`, configured as the service configures its own.
fn logs(mode: RuleMode, rules: &[&aws_smithy_mocks::Rule]) -> aws_sdk_cloudwatchlogs::Client {
    mock_client!(
        aws_sdk_cloudwatchlogs,
        mode,
        rules.iter().copied(),
        service::without_sdk_retries
    )
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

#[tokio::test]
async fn a_role_that_refuses_to_be_assumed_fails_every_event_for_good_and_says_why() {
    let (refused, sts) = refused_sts();
    let cw = fast(CloudWatch::new(&base(), "/hashicorp").with_sts(sts));
    let (settings, project) = (settings(), project(role_credentials()));
    let events = recent(3);
    let failures = cw.sink(project, &settings).deliver(&events, soon()).await;
    let mut failed: Vec<usize> = failures.iter().map(|f| f.0).collect();
    failed.sort();
    assert_eq!(failed, [0, 1, 2]);
    for (_, error) in &failures {
        assert!(!error.is_retryable(), "{error}");
        assert!(error.message().contains("trust policy"), "{error}");
        // The role is the configuration's: the message, which the service logs too, names no
        // customer's account.
        assert!(!error.message().contains("111111111111"), "{error}");
        assert!(!error.message().contains("ext-id-sentinel"));
    }
    assert_eq!(refused.num_calls(), 1, "a refusal is not retried in a loop");
}

#[tokio::test]
async fn throttled_writes_are_retried_until_they_pass() {
    let put = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
        .sequence()
        .http_response(|| logs_error(400, "ThrottlingException"))
        .times(4)
        .output(|| PutLogEventsOutput::builder().build())
        .build();
    let client = logs(RuleMode::Sequential, &[&put]);
    let failures =
        service::write(&client, "g", "s", &recent(5), soon(), &FAST, SPLITS_AT_MOST).await;
    assert_eq!(failures, vec![]);
    assert_eq!(put.num_calls(), 5);
}

#[tokio::test]
async fn throttling_that_outlasts_the_deadline_is_a_retryable_failure() {
    let put = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
        .then_http_response(|| logs_error(400, "ThrottlingException"));
    let client = logs(RuleMode::MatchAny, &[&put]);
    let deadline = Instant::now() + Duration::from_millis(200);
    let failures = service::write(
        &client,
        "g",
        "s",
        &recent(2),
        deadline,
        &FAST,
        SPLITS_AT_MOST,
    )
    .await;
    assert_eq!(failures.len(), 2);
    assert!(failures.iter().all(|(_, e)| e.is_retryable()));
}

/// A `PutLogEvents` answer that rejects events for their dates.
fn rejecting(info: RejectedLogEventsInfo) -> PutLogEventsOutput {
    PutLogEventsOutput::builder()
        .rejected_log_events_info(info)
        .build()
}

#[tokio::test]
async fn events_a_log_group_rejects_for_their_date_are_sent_again_dated_at_delivery() {
    // The log group keeps a day: of four events 25 to 40 hours old (one request), the two
    // oldest (sorted by time, positions 3 and 2) are older than its retention.
    // Each request's events, as their timestamps and messages.
    type Sent = Vec<Vec<(i64, String)>>;
    let sent: Arc<Mutex<Sent>> = Arc::default();
    let put = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
        .match_requests({
            let sent = sent.clone();
            move |input| {
                let events = input.log_events().iter();
                let events = events.map(|e| (e.timestamp(), e.message().to_owned()));
                sent.lock().unwrap().push(events.collect());
                true
            }
        })
        .sequence()
        .output(|| {
            rejecting(
                RejectedLogEventsInfo::builder()
                    .expired_log_event_end_index(1)
                    .build(),
            )
        })
        .output(|| PutLogEventsOutput::builder().build())
        .build();
    let client = logs(RuleMode::Sequential, &[&put]);
    let events: Vec<AuditEvent> = (0..4)
        .map(|i| {
            at(
                OffsetDateTime::now_utc() - Duration::from_secs(3600 * (25 + 5 * i)),
                0,
            )
        })
        .collect();
    let before = OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let failures = service::write(&client, "g", "s", &events, soon(), &FAST, SPLITS_AT_MOST).await;
    assert_eq!(failures, vec![], "delivered, not dropped for their age");
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    // Sent again: the two oldest alone, each message as it was, dated at delivery.
    let again: Vec<&str> = sent[1].iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(again, [events[3].json(), events[2].json()]);
    assert!(sent[1].iter().all(|&(ms, _)| ms >= before), "{:?}", sent[1]);
    assert!(
        sent[1].iter().all(|&(ms, _)| ms == sent[1][0].0),
        "one time, in order"
    );
    assert!(
        sent[0][0].0 < before - 86_400_000,
        "first with their own time"
    );
}

#[tokio::test]
async fn events_rejected_for_their_date_twice_are_failures_not_deliveries() {
    let put = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
        .sequence()
        .output(|| {
            rejecting(
                RejectedLogEventsInfo::builder()
                    .too_old_log_event_end_index(0)
                    .too_new_log_event_start_index(3)
                    .build(),
            )
        })
        // The two, dated at delivery: rejected again, as older than the retention (a clock
        // far off, a group that keeps nothing).
        .output(|| {
            rejecting(
                RejectedLogEventsInfo::builder()
                    .expired_log_event_end_index(1)
                    .build(),
            )
        })
        .build();
    let client = logs(RuleMode::Sequential, &[&put]);
    // Sorted by time, the oldest (position 3) comes first and the newest (0, 1) last.
    let events = recent(4);
    let failures = service::write(&client, "g", "s", &events, soon(), &FAST, SPLITS_AT_MOST).await;
    let mut failed: Vec<usize> = failures.iter().map(|f| f.0).collect();
    failed.sort();
    assert_eq!(failed, [0, 3]);
    assert!(failures.iter().all(|(_, e)| !e.is_retryable()));
    assert!(
        failures[0].1.message().contains("retention"),
        "{failures:?}"
    );
    assert_eq!(put.num_calls(), 2, "sent again once, not in a loop");
}

#[tokio::test]
async fn an_event_cloudwatch_finds_invalid_costs_the_others_in_its_request_nothing() {
    let events = recent(5);
    let bad = events[2].json().to_owned();
    let invalid = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
        .match_requests(move |input| input.log_events().iter().any(|e| e.message() == bad))
        .then_http_response(|| logs_error(400, "InvalidParameterException"));
    let written = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
        .then_output(|| PutLogEventsOutput::builder().build());
    let client = logs(RuleMode::MatchAny, &[&invalid, &written]);
    let failures = service::write(&client, "g", "s", &events, soon(), &FAST, SPLITS_AT_MOST).await;
    // Only that event fails, for good but as its own: the others are written once each.
    assert_eq!(failures.len(), 1, "{failures:?}");
    let (position, error) = &failures[0];
    assert_eq!(*position, 2);
    assert!(matches!(error, DeliveryError::Rejected(_)), "{error}");
    assert!(error.message().contains("InvalidParameterException"));
    // Oldest first, it is the middle of five: the requests of 5, 3 and 1 events that hold it,
    // and the two halves of 2 that do not.
    assert_eq!(invalid.num_calls(), 3);
    assert_eq!(written.num_calls(), 2);
}

#[tokio::test]
async fn a_log_group_name_cloudwatch_finds_invalid_refuses_every_event_at_once() {
    let put = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events).then_http_response(|| {
        Response::new(
            StatusCode::try_from(400).unwrap(),
            SdkBody::from(
                r#"{"__type":"InvalidParameterException","message":"1 validation error detected: Value at 'logGroupName' failed to satisfy constraint"}"#,
            ),
        )
    });
    let client = logs(RuleMode::MatchAny, &[&put]);
    let failures =
        service::write(&client, "g", "s", &recent(5), soon(), &FAST, SPLITS_AT_MOST).await;
    assert_eq!(failures.len(), 5);
    assert!(failures.iter().all(|(_, e)| e.is_refusal()), "{failures:?}");
    assert!(failures[0].1.message().contains("LOG_GROUP_PREFIX"));
    assert_eq!(put.num_calls(), 1, "not split: every request would meet it");
}

#[tokio::test]
async fn a_probe_searches_a_few_requests_for_an_event_cloudwatch_finds_invalid() {
    let put = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
        .then_http_response(|| logs_error(400, "InvalidParameterException"));
    let client = logs(RuleMode::MatchAny, &[&put]);
    let probe = service::write(
        &client,
        "g",
        "s",
        &recent(10),
        soon(),
        &Backoff::NONE,
        PROBE_SPLITS_AT_MOST,
    )
    .await;
    assert_eq!(probe.len(), 10);
    assert_eq!(put.num_calls(), 1 + 2 * PROBE_SPLITS_AT_MOST);
}

#[tokio::test]
async fn a_cloudwatch_that_finds_every_request_invalid_is_not_asked_without_end() {
    let put = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
        .then_http_response(|| logs_error(400, "InvalidParameterException"));
    let client = logs(RuleMode::MatchAny, &[&put]);
    let failures = service::write(
        &client,
        "g",
        "s",
        &recent(300),
        soon(),
        &FAST,
        SPLITS_AT_MOST,
    )
    .await;
    assert_eq!(failures.len(), 300, "every event listed");
    // Single events would take 599 requests; the search stops after 64 splits, and what it
    // did not get to is said so.
    assert_eq!(put.num_calls(), 1 + 2 * 64);
    let rejected = failures
        .iter()
        .filter(|(_, e)| matches!(e, DeliveryError::Rejected(_)))
        .count();
    assert!(rejected > 0 && rejected < 300, "{rejected} rejected");
    let (_, last) = failures.last().unwrap();
    assert!(last.message().starts_with("not tried on its own"), "{last}");
}

#[tokio::test]
async fn events_beside_many_invalid_ones_are_never_called_invalid_when_the_search_stops() {
    let events = recent(200);
    let bad: std::collections::HashSet<String> = events
        .iter()
        .step_by(5)
        .map(|e| e.json().to_owned())
        .collect();
    let holds_bad = bad.clone();
    let invalid = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
        .match_requests(move |input| {
            input
                .log_events()
                .iter()
                .any(|e| holds_bad.contains(e.message()))
        })
        .then_http_response(|| logs_error(400, "InvalidParameterException"));
    let written = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
        .then_output(|| PutLogEventsOutput::builder().build());
    let client = logs(RuleMode::MatchAny, &[&invalid, &written]);
    let failures = service::write(&client, "g", "s", &events, soon(), &FAST, SPLITS_AT_MOST).await;
    // Finding each of 40 takes more than 64 splits: the search stops, and what it did not get
    // to is said so, never called invalid.
    assert!(put_calls(&[&invalid, &written]) <= 1 + 2 * SPLITS_AT_MOST);
    let failed: std::collections::HashMap<usize, &DeliveryError> =
        failures.iter().map(|(p, e)| (*p, e)).collect();
    for (position, event) in events.iter().enumerate() {
        match (bad.contains(event.json()), failed.get(&position)) {
            (true, Some(DeliveryError::Rejected(_) | DeliveryError::Unsearched(_))) => {}
            (false, None | Some(DeliveryError::Unsearched(_))) => {}
            (bad, failure) => panic!("event {position} (bad: {bad}): {failure:?}"),
        }
    }
    let unsearched = failures
        .iter()
        .filter(|(_, e)| matches!(e, DeliveryError::Unsearched(_)))
        .count();
    assert!(unsearched > 0 && unsearched < 160, "{unsearched}");
    assert!(
        failures.len() < 200,
        "the others in clean requests are written"
    );
}

#[tokio::test]
async fn requests_the_deadline_came_before_are_not_sent_nor_blamed_on_cloudwatch() {
    let put = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
        .then_output(|| PutLogEventsOutput::builder().build());
    let client = logs(RuleMode::MatchAny, &[&put]);
    let passed = tokio::time::Instant::now();
    let failures =
        service::write(&client, "g", "s", &recent(3), passed, &FAST, SPLITS_AT_MOST).await;
    assert_eq!(put.num_calls(), 0);
    assert_eq!(failures.len(), 3);
    assert!(
        failures
            .iter()
            .all(|(_, e)| matches!(e, DeliveryError::NotSent(_))),
        "{failures:?}"
    );
}

#[tokio::test]
async fn a_search_stops_before_a_request_the_deadline_would_cut_short() {
    let events = recent(8);
    let bad = events[0].json().to_owned();
    // Every answer takes a quarter of the delivery's time: after three, a fourth request
    // would still be waiting at the deadline.
    let answer_after = Duration::from_millis(250);
    let invalid = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
        .match_requests(move |input| input.log_events().iter().any(|e| e.message() == bad))
        .then_http_response(move || {
            std::thread::sleep(answer_after);
            logs_error(400, "InvalidParameterException")
        });
    let written = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events).then_output(move || {
        std::thread::sleep(answer_after);
        PutLogEventsOutput::builder().build()
    });
    let client = logs(RuleMode::MatchAny, &[&invalid, &written]);
    let deadline = tokio::time::Instant::now() + answer_after * 4;
    let failures =
        service::write(&client, "g", "s", &events, deadline, &FAST, SPLITS_AT_MOST).await;
    assert_eq!(put_calls(&[&invalid, &written]), 3);
    // Nothing was cut short: what the search had no time for is not sent, not the
    // destination's trouble.
    assert!(
        failures.iter().all(|(_, e)| !e.is_retryable()),
        "{failures:?}"
    );
    assert!(
        failures
            .iter()
            .any(|(_, e)| matches!(e, DeliveryError::NotSent(_))),
        "{failures:?}"
    );
}

fn put_calls(rules: &[&aws_smithy_mocks::Rule]) -> usize {
    rules.iter().map(|r| r.num_calls()).sum()
}

#[tokio::test]
async fn customers_clients_leave_each_attempt_to_the_callers_deadline() {
    // Made as the stream function makes them: a slow destination's write is not cut at the
    // service's own 10 s, and its connect timeout stays.
    let config = service::without_sdk_retries(aws_sdk_cloudwatchlogs::config::Builder::from(
        &crate::sdk::load_config().await,
    ))
    .build();
    let timeouts = config.timeout_config().unwrap();
    assert_eq!(timeouts.operation_attempt_timeout(), None);
    assert!(timeouts.connect_timeout().is_some());
    assert_eq!(config.retry_config().unwrap().max_attempts(), 1);
}

/// The calls (writes, group and stream creations) that write to a group and stream found
/// missing by `missing` writes, each creation answered (the group as there already).
async fn calls_writing_when_missing(missing: usize) -> (usize, usize, usize) {
    let put = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
        .sequence()
        .http_response(|| logs_error(400, "ResourceNotFoundException"))
        .times(missing)
        .output(|| PutLogEventsOutput::builder().build())
        .build();
    let group = mock!(aws_sdk_cloudwatchlogs::Client::create_log_group)
        .then_http_response(|| logs_error(400, "ResourceAlreadyExistsException"));
    let stream = mock!(aws_sdk_cloudwatchlogs::Client::create_log_stream)
        .then_output(|| CreateLogStreamOutput::builder().build());
    let client = logs(RuleMode::MatchAny, &[&put, &group, &stream]);
    let failures =
        service::write(&client, "g", "s", &recent(2), soon(), &FAST, SPLITS_AT_MOST).await;
    assert_eq!(failures, vec![]);
    (put.num_calls(), group.num_calls(), stream.num_calls())
}

#[tokio::test]
async fn a_missing_group_and_stream_are_created_once_then_written() {
    assert_eq!(calls_writing_when_missing(1).await, (2, 1, 1));
}

#[tokio::test]
async fn a_group_not_found_right_after_it_was_created_is_created_again_and_written() {
    // Deleted by the customer as it was made, or not visible yet: missing, created, missing
    // again; after a wait, missing, created again, written.
    assert_eq!(calls_writing_when_missing(3).await, (4, 2, 2));
}

/// The writes of two events to a group and stream found missing, the group's creation answered
/// as an account at its quota of log groups does, the stream's by `stream`: the failures and
/// the writes made.
async fn writing_at_the_quota_of_log_groups(
    stream: Option<&'static str>,
) -> (crate::destination::Failures, usize) {
    let put = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
        .sequence()
        .http_response(|| logs_error(400, "ResourceNotFoundException"))
        .output(|| PutLogEventsOutput::builder().build())
        .build();
    let group = mock!(aws_sdk_cloudwatchlogs::Client::create_log_group)
        .then_http_response(|| logs_error(400, "LimitExceededException"));
    let stream = match stream {
        Some(code) => mock!(aws_sdk_cloudwatchlogs::Client::create_log_stream)
            .then_http_response(move || logs_error(400, code)),
        None => mock!(aws_sdk_cloudwatchlogs::Client::create_log_stream)
            .then_output(|| CreateLogStreamOutput::builder().build()),
    };
    let client = logs(RuleMode::MatchAny, &[&put, &group, &stream]);
    let failures =
        service::write(&client, "g", "s", &recent(2), soon(), &FAST, SPLITS_AT_MOST).await;
    (failures, put.num_calls())
}

#[tokio::test]
async fn an_account_at_its_quota_of_log_groups_is_refused_unless_the_group_is_there() {
    // The group is there: its stream is made, and the events written.
    let (failures, writes) = writing_at_the_quota_of_log_groups(None).await;
    assert_eq!((failures, writes), (vec![], 2));
    // It is not: the customer has to make room, which waiting does not.
    let (failures, writes) =
        writing_at_the_quota_of_log_groups(Some("ResourceNotFoundException")).await;
    assert_eq!((failures.len(), writes), (2, 1));
    for (_, error) in failures {
        assert!(error.is_refusal(), "{error:?}");
        assert!(error.message().contains("quota of log groups"), "{error:?}");
    }
}

#[tokio::test]
async fn a_creation_racing_another_writer_and_unknown_5xx_answers_are_retried() {
    // Two batches of a new customer at once: the other writer is creating the group
    // (OperationAborted) and the service has a bad moment (an unnamed 5xx).
    let put = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
        .sequence()
        .http_response(|| logs_error(400, "ResourceNotFoundException"))
        .times(2)
        .http_response(|| logs_error(502, "BadGatewayOfSomeKind"))
        .output(|| PutLogEventsOutput::builder().build())
        .build();
    let group = mock!(aws_sdk_cloudwatchlogs::Client::create_log_group)
        .sequence()
        .http_response(|| logs_error(400, "OperationAbortedException"))
        .http_response(|| logs_error(400, "ResourceAlreadyExistsException"))
        .build();
    let stream = mock!(aws_sdk_cloudwatchlogs::Client::create_log_stream)
        .then_http_response(|| logs_error(400, "ResourceAlreadyExistsException"));
    let client = logs(RuleMode::MatchAny, &[&put, &group, &stream]);
    let failures =
        service::write(&client, "g", "s", &recent(2), soon(), &FAST, SPLITS_AT_MOST).await;
    assert_eq!(failures, vec![]);
    assert_eq!(put.num_calls(), 4);
    assert_eq!(group.num_calls(), 2);
}

#[tokio::test]
async fn ten_thousand_events_of_one_kilobyte_take_at_most_eleven_put_log_events() {
    let put = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
        .match_requests(|r| {
            let events = r.log_events();
            events.len() <= MAX_BATCH_EVENTS
                && events
                    .iter()
                    .map(|e| e.message().len() + EVENT_OVERHEAD_BYTES)
                    .sum::<usize>()
                    <= MAX_BATCH_BYTES
        })
        .then_output(|| PutLogEventsOutput::builder().build());
    let client = logs(RuleMode::MatchAny, &[&put]);
    let now = OffsetDateTime::now_utc() - Duration::from_secs(60);
    let one = at(now, 0);
    let event = at(now, 1024 - one.json().len());
    assert_eq!(event.json().len(), 1024);
    let failures = service::write(
        &client,
        "g",
        "s",
        &vec![event; 10_000],
        soon(),
        &Backoff::default(),
        SPLITS_AT_MOST,
    )
    .await;
    assert_eq!(failures, vec![]);
    assert!(put.num_calls() <= 11, "{} calls", put.num_calls());
    assert!(put.num_calls() >= 10, "bytes alone need 10");
}

#[tokio::test]
async fn a_probe_makes_one_request_however_busy_the_destination_is() {
    let put = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
        .then_http_response(|| logs_error(400, "ThrottlingException"));
    let client = logs(RuleMode::MatchAny, &[&put]);
    let failures = service::write(
        &client,
        "g",
        "s",
        &recent(2),
        soon(),
        &Backoff::NONE,
        PROBE_SPLITS_AT_MOST,
    )
    .await;
    assert_eq!(failures.len(), 2);
    assert!(failures.iter().all(|(_, e)| e.is_retryable()));
    assert_eq!(put.num_calls(), 1);
}

#[tokio::test]
async fn a_test_connection_to_an_untrusting_role_names_the_account_to_trust_and_hides_the_external_id()
 {
    let (refused, sts) = refused_sts();
    let cw = fast(CloudWatch::new(&base(), "/hashicorp").with_sts(sts))
        .with_service_account(Some("123456789012".into()));
    let (settings, project) = (settings(), project(role_credentials()));
    let check = cw
        .sink(project, &settings)
        .test_connection(&recent(1)[0], soon())
        .await;
    assert!(!check.success);
    assert!(check.message.contains(ROLE), "{}", check.message);
    assert!(
        check.message.contains("AWS account 123456789012"),
        "{}",
        check.message
    );
    assert!(check.message.contains("trust policy"), "{}", check.message);
    assert!(!check.message.contains("ext-id-sentinel"));
    assert_eq!(
        check.log_group.as_deref(),
        Some("/hashicorp/packer/audit-logs-test")
    );
    assert_eq!(refused.num_calls(), 1);
}

#[tokio::test]
async fn credentials_of_another_provider_are_refused_without_a_call() {
    let (refused, sts) = refused_sts();
    let cw = CloudWatch::new(&base(), "/hashicorp").with_sts(sts);
    let settings = settings();
    let project = project(Credentials::Datadog {
        api_key: SecretString::from("key"),
    });
    let failures = cw
        .sink(project, &settings)
        .deliver(&recent(2), soon())
        .await;
    assert_eq!(failures.len(), 2);
    assert!(failures.iter().all(|(_, e)| e.is_refusal()));
    assert_eq!(refused.num_calls(), 0);
}

#[tokio::test]
async fn a_test_connection_waits_out_a_busy_sts_then_writes_its_event() {
    use aws_sdk_sts::operation::assume_role::AssumeRoleOutput;
    let assumed = mock!(aws_sdk_sts::Client::assume_role)
        .sequence()
        .http_response(|| {
            Response::new(
                StatusCode::try_from(400).unwrap(),
                SdkBody::from(
                    "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>\
                     <Message>slow down</Message></Error></ErrorResponse>",
                ),
            )
        })
        .output(|| {
            let expires = aws_smithy_types::DateTime::from_secs(4_000_000_000);
            AssumeRoleOutput::builder()
                .credentials(
                    aws_sdk_sts::types::Credentials::builder()
                        .access_key_id("a")
                        .secret_access_key("s")
                        .session_token("t")
                        .expiration(expires)
                        .build()
                        .unwrap(),
                )
                .build()
        })
        .build();
    let sts = mock_client!(aws_sdk_sts, RuleMode::Sequential, [&assumed], |c| c
        .retry_config(aws_sdk_sts::config::retry::RetryConfig::disabled()));
    let cw = fast(CloudWatch::new(&base(), "/hashicorp").with_sts(sts));
    let tested = cw
        .sink(project(role_credentials()), &settings())
        .test_connection(&recent(1)[0], Instant::now() + Duration::from_secs(1))
        .await;
    assert_eq!(assumed.num_calls(), 2);
    // The write goes where the test's base configuration points, where nothing listens: the
    // failure is the write's, after STS gave the role's credentials.
    assert!(!tested.success);
    assert!(
        tested.message.starts_with(
            "Could not write a test event to /hashicorp/packer/audit-logs-test: CloudWatch Logs"
        ),
        "{}",
        tested.message
    );
}

/// STS handing out a new session each time it is asked: `session-1`, `session-2`...
fn sessions() -> (aws_smithy_mocks::Rule, aws_sdk_sts::Client) {
    use aws_sdk_sts::operation::assume_role::AssumeRoleOutput;
    let issued = Arc::new(Mutex::new(0));
    let assumed = mock!(aws_sdk_sts::Client::assume_role).then_output(move || {
        let mut n = issued.lock().unwrap();
        *n += 1;
        AssumeRoleOutput::builder()
            .credentials(
                aws_sdk_sts::types::Credentials::builder()
                    .access_key_id(format!("session-{n}"))
                    .secret_access_key("s")
                    .session_token("t")
                    .expiration(aws_smithy_types::DateTime::from_secs(4_000_000_000))
                    .build()
                    .unwrap(),
            )
            .build()
    });
    let sts = mock_client!(aws_sdk_sts, RuleMode::MatchAny, [&assumed]);
    (assumed, sts)
}

/// CloudWatch Logs taking writes signed by the sessions of `taken` only.
async fn logs_taking(server: &wiremock::MockServer, taken: &[usize]) {
    use wiremock::matchers::{header, header_regex, method};
    use wiremock::{Mock, ResponseTemplate};
    server.reset().await;
    for n in taken {
        Mock::given(method("POST"))
            .and(header("x-amz-target", "Logs_20140328.PutLogEvents"))
            .and(header_regex(
                "authorization",
                &format!("Credential=session-{n}/"),
            ))
            .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
            .with_priority(1)
            .mount(server)
            .await;
    }
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400).set_body_string(
                r#"{"__type":"AccessDeniedException","message":"not authorized"}"#,
            ),
        )
        .with_priority(2)
        .mount(server)
        .await;
}

#[tokio::test]
async fn a_refusal_of_credentials_assumed_before_is_tried_once_with_the_role_assumed_again() {
    let server = wiremock::MockServer::start().await;
    let base = SdkConfig::builder()
        .region(Region::new("us-east-1"))
        .behavior_version(aws_config::BehaviorVersion::latest())
        .endpoint_url(server.uri())
        .build();
    let (assumed, sts) = sessions();
    let cw = fast(CloudWatch::new(&base, "/hashicorp").with_sts(sts));
    let settings = settings();
    let deliver = |n| {
        let cw = cw.clone();
        let settings = settings.clone();
        async move {
            cw.sink(project(role_credentials()), &settings)
                .deliver(&recent(n), soon())
                .await
        }
    };
    logs_taking(&server, &[1]).await;
    assert!(deliver(2).await.is_empty());
    assert_eq!(assumed.num_calls(), 1);
    // The role made anew (or its sessions revoked): the first session is refused, the role
    // assumed again, and its second session takes the events.
    logs_taking(&server, &[2]).await;
    assert!(deliver(3).await.is_empty());
    assert_eq!(assumed.num_calls(), 2);
    // Refused whatever the session: once more with a new one, then refused for good.
    logs_taking(&server, &[]).await;
    let failures = deliver(3).await;
    assert_eq!(failures.iter().map(|f| f.0).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(failures.iter().all(|(_, e)| e.is_refusal()), "{failures:?}");
    assert_eq!(assumed.num_calls(), 3);
    // A session assumed for this very delivery is not asked again.
    let failures = deliver(1).await;
    assert!(failures.iter().all(|(_, e)| e.is_refusal()), "{failures:?}");
    assert_eq!(assumed.num_calls(), 4);
}
