//! Capture's handling of a batch, against the events table in memory: no emulator, no wait.

use super::*;
use audit_log::fixtures::SEED_EVENTS;
use audit_log::store::memory::MemoryEventTable;
use audit_log::store::{StoreError, attr};
use audit_log::streaming::{MemoryProjects, ProjectIndex};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

fn later() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

fn message(id: &str, body: &str) -> Message {
    Message {
        message_id: Some(id.to_owned()),
        body: Some(body.to_owned()),
    }
}

fn seed(n: usize) -> &'static str {
    SEED_EVENTS[n % SEED_EVENTS.len()].1
}

fn capture() -> Capture<MemoryEventTable, MemoryProjects> {
    Capture::new(
        MemoryEventTable::default(),
        MemoryProjects::default(),
        Retention::days(400).unwrap(),
    )
}

fn reported(response: &SqsBatchResponse) -> BTreeSet<&str> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect()
}

#[tokio::test]
async fn every_valid_event_is_stored_once_under_its_message_id() {
    // GIVEN the five example events of the seed
    let capture = capture();
    let batch: Vec<Message> = (0..5)
        .map(|n| message(&format!("m-{n}"), seed(n)))
        .collect();
    // WHEN capture handles them as one batch
    let response = capture.capture(batch, later()).await.unwrap();
    // THEN none is reported and each is stored, with its TTL more than a year after it happened
    assert!(reported(&response).is_empty());
    assert_eq!(capture.table.items().len(), 5);
    for n in 0..5 {
        let item = capture.table.item_of(&format!("m-{n}")).expect("stored");
        let event = AuditEvent::from_json(seed(n)).unwrap();
        let expires: i64 = item[attr::EXPIRES_AT].as_n().unwrap().parse().unwrap();
        assert_eq!(
            expires - event.timestamp().unix_timestamp(),
            400 * 24 * 3600
        );
    }
    assert_eq!(capture.table.calls(), 1, "one write for the whole batch");
}

#[tokio::test]
async fn invalid_events_are_reported_alone_and_the_rest_stored() {
    // GIVEN a batch where two bodies are not valid audit events
    let capture = capture();
    let batch = vec![
        message("good-1", seed(0)),
        message("not-json", "{\"organization_id\":"),
        message("good-2", seed(1)),
        message("no-action", &seed(2).replace("\"action\"", "\"verb\"")),
    ];
    // WHEN it is captured
    let response = capture.capture(batch, later()).await.unwrap();
    // THEN exactly those two go back to SQS (and on to the dead-letter queue), and the others
    // are stored
    assert_eq!(
        reported(&response),
        BTreeSet::from(["not-json", "no-action"])
    );
    assert!(capture.table.item_of("good-1").is_some());
    assert!(capture.table.item_of("good-2").is_some());
    assert_eq!(capture.table.items().len(), 2);
}

#[tokio::test]
async fn a_message_redelivered_overwrites_its_own_item() {
    // GIVEN an event already captured
    let capture = capture();
    capture
        .capture(vec![message("m-1", seed(0))], later())
        .await
        .unwrap();
    // WHEN SQS delivers the same message again, twice in one batch
    let response = capture
        .capture(
            vec![message("m-1", seed(0)), message("m-1", seed(0))],
            later(),
        )
        .await
        .unwrap();
    // THEN it is still stored once, and nothing is reported
    assert!(reported(&response).is_empty());
    assert_eq!(capture.table.items().len(), 1);
}

#[tokio::test]
async fn an_event_the_table_refuses_is_reported_for_redelivery() {
    // GIVEN a table that refuses one event of the batch
    let capture = capture();
    capture
        .table
        .refuse("m-2", StoreError::Unavailable("throttled".into()));
    let batch: Vec<Message> = (0..4)
        .map(|n| message(&format!("m-{n}"), seed(n)))
        .collect();
    // WHEN the batch is captured
    let response = capture.capture(batch, later()).await.unwrap();
    // THEN only that event goes back to SQS; the three others are stored
    assert_eq!(reported(&response), BTreeSet::from(["m-2"]));
    assert_eq!(capture.table.items().len(), 3);
}

#[tokio::test]
async fn a_batch_that_is_all_failures_is_an_invocation_error() {
    // GIVEN a table that is down
    let capture = capture();
    capture
        .table
        .set_down(Some(StoreError::Unavailable("unreachable".into())));
    let batch = vec![message("m-1", seed(0)), message("m-2", seed(1))];
    // WHEN a batch is captured
    let outcome = capture.capture(batch, later()).await;
    // THEN Lambda is told the invocation failed, so it backs off rather than spin
    assert!(matches!(outcome, Err(CaptureError::EveryRecordFailed(2))));
    assert!(capture.table.items().is_empty());
    // AND once the table is back, the redelivered batch is stored
    capture.table.set_down(None);
    let response = capture
        .capture(vec![message("m-1", seed(0))], later())
        .await
        .unwrap();
    assert!(reported(&response).is_empty());
    assert_eq!(capture.table.items().len(), 1);
}

#[tokio::test]
async fn an_invalid_message_is_a_batch_item_failure_even_when_nothing_is_stored() {
    // GIVEN a table that is down
    let capture = capture();
    capture
        .table
        .set_down(Some(StoreError::Unavailable("unreachable".into())));
    // WHEN a batch with an invalid message is captured, and one of invalid messages only
    let mixed = capture
        .capture(vec![message("m-1", seed(0)), message("bad", "[]")], later())
        .await
        .unwrap();
    let invalid = capture
        .capture(vec![message("bad-1", "[]"), message("bad-2", "{")], later())
        .await
        .unwrap();
    // THEN each record is answered on its own, the invalid ones as batch item failures
    assert_eq!(reported(&mixed), BTreeSet::from(["m-1", "bad"]));
    assert_eq!(reported(&invalid), BTreeSet::from(["bad-1", "bad-2"]));
    assert!(capture.table.items().is_empty());
}

#[tokio::test]
async fn a_record_without_a_message_id_fails_the_batch_and_stores_nothing() {
    // GIVEN a record SQS handed without its id
    let capture = capture();
    let mut anonymous = message("", seed(1));
    anonymous.message_id = None;
    // WHEN it is captured with a valid neighbour
    let outcome = capture
        .capture(vec![message("m-1", seed(0)), anonymous], later())
        .await;
    // THEN the whole batch fails, as its failure could not be reported alone
    assert!(matches!(outcome, Err(CaptureError::MissingMessageId)));
    assert_eq!(capture.table.calls(), 0);
}

fn of_project(id: &str, project: &str) -> Message {
    let mut event: serde_json::Value = serde_json::from_str(seed(0)).unwrap();
    event["project_id"] = serde_json::json!(project);
    message(id, &event.to_string())
}

#[tokio::test]
async fn each_project_with_events_is_noted_once_per_container_not_once_per_event() {
    let capture = capture();
    let org = AuditEvent::from_json(seed(0))
        .unwrap()
        .organization_id()
        .to_owned();
    let first = vec![
        of_project("m-1", "p-1"),
        of_project("m-2", "p-1"),
        of_project("m-3", "p-2"),
    ];
    assert!(reported(&capture.capture(first, later()).await.unwrap()).is_empty());
    let second = vec![of_project("m-4", "p-1"), of_project("m-5", "p-2")];
    assert!(reported(&capture.capture(second, later()).await.unwrap()).is_empty());
    assert_eq!(
        capture.projects.calls.load(Ordering::SeqCst),
        1,
        "the second batch notes nothing"
    );
    let (noted, _) = capture.projects.noted(&org, None, 10).await.unwrap();
    assert_eq!(noted, ["p-1", "p-2"]);
    capture
        .capture(vec![of_project("m-6", "p-3")], later())
        .await
        .unwrap();
    assert_eq!(
        capture.projects.noted(&org, None, 10).await.unwrap().0,
        ["p-1", "p-2", "p-3"]
    );
}

#[tokio::test(start_paused = true)]
async fn an_organization_whose_projects_cannot_be_noted_holds_back_only_its_own_events() {
    let capture = capture();
    let other = |id: &str, org: &str| {
        let mut event: serde_json::Value = serde_json::from_str(seed(0)).unwrap();
        event["organization_id"] = serde_json::json!(org);
        message(id, &event.to_string())
    };
    // Its partition throttled for the whole invocation.
    capture
        .projects
        .unreachable
        .lock()
        .unwrap()
        .insert("org-throttled".into());
    let batch = vec![
        other("m-1", "org-throttled"),
        other("m-2", "org-a"),
        other("m-3", "org-throttled"),
        other("m-4", "org-b"),
    ];
    let start = Instant::now();
    let budget = Duration::from_secs(20);
    let response = capture.capture(batch, start + budget).await.unwrap();
    assert_eq!(reported(&response), BTreeSet::from(["m-1", "m-3"]));
    assert!(capture.table.item_of("m-2").is_some());
    assert!(capture.table.item_of("m-4").is_some());
    // It was tried again, but only until halfway: storing the others had the rest.
    assert!(capture.projects.calls.load(Ordering::SeqCst) > 2);
    assert!(start.elapsed() <= budget / 2, "{:?}", start.elapsed());
    // The others' projects are remembered; its own are noted once it can be reached.
    capture.projects.unreachable.lock().unwrap().clear();
    let calls = capture.projects.calls.load(Ordering::SeqCst);
    let again = vec![other("m-5", "org-a"), other("m-1", "org-throttled")];
    assert!(reported(&capture.capture(again, later()).await.unwrap()).is_empty());
    assert_eq!(capture.projects.calls.load(Ordering::SeqCst), calls + 1);
    assert_eq!(
        capture
            .projects
            .noted("org-throttled", None, 10)
            .await
            .unwrap()
            .0
            .len(),
        1
    );
}

#[tokio::test]
async fn events_of_a_project_that_could_not_be_noted_are_handed_back_not_stored() {
    // One try: the table stays down.
    let capture = capture().with_backoff(audit_log::retry::Backoff::NONE);
    capture
        .capture(vec![of_project("m-1", "known")], later())
        .await
        .unwrap();
    capture.projects.fail.store(true, Ordering::SeqCst);
    let batch = vec![
        of_project("m-2", "known"),
        of_project("m-3", "new"),
        of_project("m-4", "new"),
    ];
    let response = capture.capture(batch, later()).await.unwrap();
    assert_eq!(reported(&response), BTreeSet::from(["m-3", "m-4"]));
    assert!(
        capture.table.item_of("m-2").is_some(),
        "a noted project's event is stored"
    );
    assert!(capture.table.item_of("m-3").is_none());
    capture.projects.fail.store(false, Ordering::SeqCst);
    let again = vec![of_project("m-3", "new"), of_project("m-4", "new")];
    assert!(reported(&capture.capture(again, later()).await.unwrap()).is_empty());
    assert!(capture.table.item_of("m-4").is_some());
}
