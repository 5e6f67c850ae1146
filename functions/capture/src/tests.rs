//! Capture's handling of a batch, against the events table in memory: no emulator, no wait.

use super::*;
use audit_log::fixtures::SEED_EVENTS;
use audit_log::store::memory::MemoryEventTable;
use audit_log::store::{StoreError, attr};
use audit_log::streaming::{MemoryProjects, NOTE_AHEAD_SECONDS, ProjectIndex};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

fn later() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

fn message(id: &str, body: &str) -> Message {
    Message::new(id, body)
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
    // GIVEN a batch where three bodies are not valid audit events (one names its organization
    // twice: which one it is depends on the reader)
    let capture = capture();
    let batch = vec![
        message("good-1", seed(0)),
        message("not-json", "{\"organization_id\":"),
        message("good-2", seed(1)),
        message("no-action", &seed(2).replace("\"action\"", "\"verb\"")),
        message(
            "organization-twice",
            &seed(3).replacen('{', "{\"organization_id\":\"other\",", 1),
        ),
    ];
    // WHEN it is captured
    let response = capture.capture(batch, later()).await.unwrap();
    // THEN exactly those three go back to SQS (and on to the dead-letter queue), and the others
    // are stored
    assert_eq!(
        reported(&response),
        BTreeSet::from(["not-json", "no-action", "organization-twice"])
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

/// The seed's first event with these fields set, as message `id`.
fn with_fields(id: &str, fields: &[(&str, &str)]) -> Message {
    let mut event: serde_json::Value = serde_json::from_str(seed(0)).unwrap();
    for (name, value) in fields {
        event[*name] = serde_json::json!(value);
    }
    message(id, &event.to_string())
}

fn of_project(id: &str, project: &str) -> Message {
    with_fields(id, &[("project_id", project)])
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
    let (noted, _) = capture.projects.noted(&org, None, 10, 0).await.unwrap();
    assert_eq!(noted, ["p-1", "p-2"]);
    capture
        .capture(vec![of_project("m-6", "p-3")], later())
        .await
        .unwrap();
    assert_eq!(
        capture.projects.noted(&org, None, 10, 0).await.unwrap().0,
        ["p-1", "p-2", "p-3"]
    );
}

#[tokio::test]
async fn a_projects_note_lasts_as_long_as_its_events_and_is_written_again_for_one_that_outlives_it()
{
    let capture = capture();
    let org = AuditEvent::from_json(seed(0))
        .unwrap()
        .organization_id()
        .to_owned();
    let dated = |id: &str, at: &str| with_fields(id, &[("project_id", "p-1"), ("timestamp", at)]);
    let expires_at = |id: &str| {
        audit_log::store::StoredKey::of(&capture.table.item_of(id).unwrap())
            .unwrap()
            .expires_at
    };
    let note = || capture.projects.note_of(&org, "p-1").unwrap();
    let batch = vec![dated("m-1", "2026-03-01T00:00:00Z")];
    assert!(reported(&capture.capture(batch, later()).await.unwrap()).is_empty());
    let first = expires_at("m-1");
    assert_eq!(note(), Some(first + NOTE_AHEAD_SECONDS));
    // Events of the next weeks are covered by the note: nothing is written for them.
    let batch = vec![dated("m-2", "2026-03-20T00:00:00Z")];
    assert!(reported(&capture.capture(batch, later()).await.unwrap()).is_empty());
    assert_eq!(capture.projects.calls.load(Ordering::SeqCst), 1);
    // One that would outlive the note has it written again, to last as long as it does.
    let batch = vec![
        dated("m-3", "2026-03-21T00:00:00Z"),
        dated("m-4", "2026-06-01T00:00:00Z"),
    ];
    assert!(reported(&capture.capture(batch, later()).await.unwrap()).is_empty());
    assert_eq!(capture.projects.calls.load(Ordering::SeqCst), 2);
    assert_eq!(note(), Some(expires_at("m-4") + NOTE_AHEAD_SECONDS));
    // An older event is covered too.
    let batch = vec![dated("m-5", "2025-01-01T00:00:00Z")];
    assert!(reported(&capture.capture(batch, later()).await.unwrap()).is_empty());
    assert_eq!(capture.projects.calls.load(Ordering::SeqCst), 2);
}

/// Captures the batch and, a second in while it still runs (the clock is paused: a second of
/// the test's time, not a wait), whether each of `ids` is stored already.
async fn a_second_in(
    capture: &Capture<MemoryEventTable, MemoryProjects>,
    batch: Vec<Message>,
    deadline: Instant,
    ids: &[&str],
) -> (Result<SqsBatchResponse, CaptureError>, Vec<bool>) {
    let done = std::sync::atomic::AtomicBool::new(false);
    tokio::join!(
        async {
            let response = capture.capture(batch, deadline).await;
            done.store(true, Ordering::SeqCst);
            response
        },
        async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(
                !done.load(Ordering::SeqCst),
                "the batch is still being captured"
            );
            ids.iter()
                .map(|id| capture.table.item_of(id).is_some())
                .collect()
        }
    )
}

#[tokio::test(start_paused = true)]
async fn an_organization_whose_projects_cannot_be_noted_holds_back_only_its_own_events() {
    let capture = capture();
    let other = |id: &str, org: &str| with_fields(id, &[("organization_id", org)]);
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
    // While its projects are still being tried again, the others' events are stored already.
    let (response, stored) = a_second_in(&capture, batch, start + budget, &["m-2", "m-4"]).await;
    assert_eq!(stored, [true, true]);
    let response = response.unwrap();
    assert_eq!(reported(&response), BTreeSet::from(["m-1", "m-3"]));
    assert!(capture.table.item_of("m-2").is_some());
    assert!(capture.table.item_of("m-4").is_some());
    // It was tried again, but only as long as a throttled partition is waited on, well before
    // halfway: the invocation is not held for it.
    assert!(capture.projects.calls.load(Ordering::SeqCst) > 2);
    assert!(start.elapsed() <= PATIENCE, "{:?}", start.elapsed());
    // The others' projects are remembered; its own are noted once it can be reached.
    capture.projects.unreachable.lock().unwrap().clear();
    let calls = capture.projects.calls.load(Ordering::SeqCst);
    let again = vec![other("m-5", "org-a"), other("m-1", "org-throttled")];
    assert!(reported(&capture.capture(again, later()).await.unwrap()).is_empty());
    assert_eq!(capture.projects.calls.load(Ordering::SeqCst), calls + 1);
    assert_eq!(
        capture
            .projects
            .noted("org-throttled", None, 10, 0)
            .await
            .unwrap()
            .0
            .len(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_to_note_projects_that_never_answers_holds_back_no_one_else() {
    let capture = capture();
    let of = |id: &str, org: &str, project: &str| {
        with_fields(id, &[("organization_id", org), ("project_id", project)])
    };
    // A project this container noted before, then calls naming the slow organization's
    // projects that never answer (all the batch's new projects are noted in one call).
    let first = capture.capture(vec![of("m-0", "org-a", "known")], later());
    assert!(reported(&first.await.unwrap()).is_empty());
    capture
        .projects
        .hung
        .lock()
        .unwrap()
        .insert("org-slow".into());
    let batch = vec![
        of("m-1", "org-slow", "p"),
        of("m-2", "org-a", "known"),
        of("m-3", "org-b", "new"),
    ];
    let start = Instant::now();
    let budget = Duration::from_secs(20);
    let (response, stored) = a_second_in(&capture, batch, start + budget, &["m-2"]).await;
    // The known project's event went at once; the new projects' waited for the call, which
    // was given up after a while, and then were noted per organization.
    assert_eq!(stored, [true], "a noted project's event waits for nothing");
    assert!(start.elapsed() <= PATIENCE + Duration::from_secs(1));
    assert_eq!(reported(&response.unwrap()), BTreeSet::from(["m-1"]));
    assert!(capture.table.item_of("m-3").is_some());
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

/// A message as SQS hands it over for the `receives`th time, first sent at `first_sent_ms`.
fn received(id: &str, body: &str, receives: u32, first_sent_ms: i64) -> Message {
    let mut m = message(id, body);
    m.attributes.receive_count = Some(receives.to_string());
    m.attributes.sent_timestamp = Some(first_sent_ms.to_string());
    m
}

/// A message capture sent to the retry queue for the event `first` brought, first sent at
/// `first_sent_ms`, as SQS hands it over for the `receives`th time.
fn retried(id: &str, first: &str, body: &str, receives: u32, first_sent_ms: i64) -> Message {
    let mut m = received(id, body, receives, SystemClock.now_ms());
    m.event_source_arn = Some(requeue::MemoryQueue::ARN.into());
    m.message_attributes.message_id = Some(messages::StringAttribute {
        string_value: Some(first.into()),
    });
    m.message_attributes.first_sent_at = Some(messages::StringAttribute {
        string_value: Some(first_sent_ms.to_string()),
    });
    m
}

fn requeuing() -> Capture<MemoryEventTable, MemoryProjects, requeue::MemoryQueue> {
    capture().with_requeue(requeue::MemoryQueue::default())
}

fn sent_again(
    capture: &Capture<MemoryEventTable, MemoryProjects, requeue::MemoryQueue>,
) -> Vec<Requeued> {
    let queue = capture.requeue.as_ref().unwrap();
    queue.sent.lock().unwrap().clone()
}

#[tokio::test]
async fn a_valid_event_still_unstored_on_its_third_receive_goes_to_the_retry_queue() {
    // GIVEN a table refusing four events for reasons that pass, one for good
    let capture = requeuing();
    let now = SystemClock.now_ms();
    for id in ["m-1", "m-2", "m-3"] {
        capture
            .table
            .refuse(id, StoreError::Unavailable("throttled".into()));
    }
    capture
        .table
        .refuse("m-4", StoreError::Refused("item too large".into()));
    let mut batch = vec![
        received("m-1", seed(0), 1, now - 60_000),
        received("m-2", seed(1), 3, now - 600_000),
        received("m-3", seed(2), 2, now - 300_000),
        received("m-4", seed(3), 4, now - 900_000),
        received("bad", "{\"organization_id\":", 4, now - 900_000),
        received("m-5", seed(4), 3, now - 600_000),
    ];
    batch[1].attributes.group = Some("77f447d4-def0".into());
    // WHEN they are captured
    let response = capture.capture(batch, later()).await.unwrap();
    // THEN the event on its third receive goes to the retry queue, carrying its own id and
    // when it was first sent, in the message group it came in; the others go back to SQS as
    // before
    let sent = sent_again(&capture);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message_id, "m-2");
    assert_eq!(sent[0].capture_id, "m-2");
    assert_eq!(sent[0].first_sent_ms, now - 600_000);
    assert_eq!(sent[0].body, seed(1));
    assert_eq!(sent[0].group.as_deref(), Some("77f447d4-def0"));
    assert_eq!(
        reported(&response),
        BTreeSet::from(["m-1", "m-3", "m-4", "bad"])
    );
    assert!(capture.table.item_of("m-5").is_some());
}

#[tokio::test]
async fn a_table_down_for_a_whole_batch_on_its_third_receive_sends_it_on_without_an_error() {
    // GIVEN a table that is down, and a batch SQS hands over for the third time
    let capture = requeuing();
    capture
        .table
        .set_down(Some(StoreError::Unavailable("unreachable".into())));
    let now = SystemClock.now_ms();
    let batch: Vec<Message> = (0..3)
        .map(|n| received(&format!("m-{n}"), seed(n), 3, now - 600_000))
        .collect();
    // WHEN it is captured
    let response = capture.capture(batch, later()).await.unwrap();
    // THEN every event is on the retry queue and nothing is handed back to SQS, each in its
    // organization's message group though it came in none
    assert!(reported(&response).is_empty());
    assert_eq!(sent_again(&capture).len(), 3);
    for m in sent_again(&capture) {
        let event: serde_json::Value = serde_json::from_str(&m.body).unwrap();
        let organization = event["organization_id"].as_str().unwrap();
        assert_eq!(m.group, Some(audit_log::message::group_of(organization)));
    }
    // AND what the retry queue refuses is handed back, by its own message's id; when it
    // refuses everything, the batch is an invocation error, as before
    let capture = requeuing();
    capture
        .table
        .set_down(Some(StoreError::Unavailable("unreachable".into())));
    let queue = capture.requeue.as_ref().unwrap();
    queue.refusing.lock().unwrap().insert("r-1".into());
    let batch = vec![
        retried("r-0", "m-0", seed(0), 3, now - 600_000),
        retried("r-1", "m-1", seed(1), 3, now - 600_000),
    ];
    let response = capture.capture(batch, later()).await.unwrap();
    assert_eq!(reported(&response), BTreeSet::from(["r-1"]));
    let sent: Vec<String> = sent_again(&capture)
        .into_iter()
        .map(|m| m.capture_id)
        .collect();
    assert_eq!(sent, ["m-0"]);
    queue.refusing.lock().unwrap().insert("r-0".into());
    let batch = vec![retried("r-0", "m-0", seed(0), 3, now - 600_000)];
    let outcome = capture.capture(batch, later()).await;
    assert!(matches!(outcome, Err(CaptureError::EveryRecordFailed(1))));
}

#[tokio::test]
async fn an_event_from_the_retry_queue_is_stored_once_under_the_id_of_its_first_message() {
    // GIVEN an event sent to the retry queue twice (its first copy's deletion failed)
    let capture = requeuing();
    let now = SystemClock.now_ms();
    let batch = vec![
        retried("r-1", "m-first", seed(0), 1, now - 1_200_000),
        retried("r-2", "m-first", seed(0), 2, now - 1_200_000),
    ];
    // WHEN both come in one batch
    let response = capture.capture(batch, later()).await.unwrap();
    // THEN the event is stored once, under the first message's id
    assert!(reported(&response).is_empty());
    assert_eq!(capture.table.items().len(), 1);
    assert!(capture.table.item_of("m-first").is_some());
    // AND when the table refuses it, both copies are handed back by their own ids, and the
    // copy that has been round the most decides when it goes round again, once
    let capture = requeuing();
    capture
        .table
        .refuse("m-first", StoreError::Unavailable("throttled".into()));
    let batch = || {
        vec![
            retried("r-1", "m-first", seed(0), 1, now - 1_200_000),
            retried("r-2", "m-first", seed(0), 2, now - 1_200_000),
            retried("r-3", "m-other", seed(1), 1, now - 1_200_000),
        ]
    };
    let response = capture.capture(batch(), later()).await.unwrap();
    assert_eq!(reported(&response), BTreeSet::from(["r-1", "r-2"]));
    assert!(sent_again(&capture).is_empty());
    let mut again = batch();
    again[1].attributes.receive_count = Some("3".into());
    let response = capture.capture(again, later()).await.unwrap();
    assert!(reported(&response).is_empty());
    let sent = sent_again(&capture);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].capture_id, "m-first");
    assert_eq!(sent[0].first_sent_ms, now - 1_200_000);
}

/// A message on the events queue carrying capture's attributes: one of capture's, redriven
/// there from the dead-letter queue (SQS gives it a new id), or a producer's.
fn redriven(id: &str, first: &str, body: &str, receives: u32) -> Message {
    let mut m = retried(id, first, body, receives, SystemClock.now_ms() - 86_400_000);
    m.event_source_arn = Some("arn:aws:sqs:us-east-1:123456789012:events".into());
    m
}

#[tokio::test]
async fn a_claim_beside_the_message_it_names_is_answered_on_its_own() {
    // GIVEN a batch where SQS hands a message over twice, and another message, ahead of it,
    // claims its id for another event at the same time of the same project
    let capture = requeuing();
    let mut other: serde_json::Value = serde_json::from_str(seed(0)).unwrap();
    other["description"] = "rewritten history".into();
    let other = other.to_string();
    let batch = vec![
        redriven("x-1", "m-1", &other, 1),
        message("m-1", seed(0)),
        message("m-1", seed(0)),
        message("m-2", seed(2)),
    ];
    // WHEN they are captured
    let response = capture.capture(batch, later()).await.unwrap();
    // THEN the message and its copy are stored as one, and the claim is handed back to be
    // judged alone
    assert_eq!(reported(&response), BTreeSet::from(["x-1"]));
    let as_value = |json: &str| serde_json::from_str::<serde_json::Value>(json).unwrap();
    let stored = |id| {
        let item = capture.table.item_of(id).unwrap();
        as_value(&audit_log::store::event_json(&item).unwrap())
    };
    assert_eq!(stored("m-1"), as_value(seed(0)));
    // AND alone, it is refused: the id holds another event, which stays as it was
    let again = vec![redriven("x-1", "m-1", &other, 2), message("m-3", seed(3))];
    let response = capture.capture(again, later()).await.unwrap();
    assert_eq!(reported(&response), BTreeSet::from(["x-1"]));
    assert_eq!(stored("m-1"), as_value(seed(0)));
}

#[tokio::test]
async fn a_message_redriven_to_the_events_queue_is_stored_once_and_overwrites_nothing() {
    // GIVEN an event stored under its first message's id
    let capture = requeuing();
    let now = SystemClock.now_ms();
    let first = vec![retried("r-1", "m-first", seed(0), 1, now - 1_200_000)];
    assert!(reported(&capture.capture(first, later()).await.unwrap()).is_empty());
    // WHEN two copies of it are redriven to the events queue, and a copy of another event
    // never stored
    let batch = vec![
        redriven("x-1", "m-first", seed(0), 1),
        redriven("x-2", "m-first", seed(0), 1),
        redriven("x-3", "m-never", seed(1), 1),
    ];
    let response = capture.capture(batch, later()).await.unwrap();
    // THEN each is stored once, under the id of the message that first brought it
    assert!(reported(&response).is_empty());
    assert_eq!(capture.table.items().len(), 2);
    assert!(capture.table.item_of("m-first").is_some());
    assert!(capture.table.item_of("m-never").is_some());
    let again = vec![redriven("x-4", "m-never", seed(1), 1)];
    assert!(reported(&capture.capture(again, later()).await.unwrap()).is_empty());
    assert_eq!(capture.table.items().len(), 2);
    // AND a message claiming that id for another event (same key, other content) is refused
    // and, even on its third receive, not sent to the retry queue, where the id is trusted
    let stored = capture.table.item_of("m-first");
    let mut other: serde_json::Value = serde_json::from_str(seed(0)).unwrap();
    other["description"] = "rewritten history".into();
    let forged = vec![
        redriven("x-5", "m-first", &other.to_string(), 3),
        message("m-ok", seed(3)),
    ];
    let response = capture.capture(forged, later()).await.unwrap();
    assert_eq!(reported(&response), BTreeSet::from(["x-5"]));
    assert!(sent_again(&capture).is_empty());
    assert_eq!(capture.table.item_of("m-first"), stored);
    // AND a claimed event the table cannot take yet is handed back rather than sent round
    capture
        .table
        .refuse("m-later", StoreError::Unavailable("throttled".into()));
    let throttled = vec![
        redriven("x-6", "m-later", seed(2), 3),
        message("m-ok-too", seed(4)),
    ];
    let response = capture.capture(throttled, later()).await.unwrap();
    assert_eq!(reported(&response), BTreeSet::from(["x-6"]));
    assert!(sent_again(&capture).is_empty());
}

#[tokio::test]
async fn past_the_window_an_unstored_event_is_handed_back_for_the_dead_letter_queue() {
    let capture = requeuing();
    for id in ["m-old", "m-older"] {
        capture
            .table
            .refuse(id, StoreError::Unavailable("throttled".into()));
    }
    let now = SystemClock.now_ms();
    let window = requeue::WINDOW.as_millis() as i64;
    let batch = vec![
        received("m-old", seed(0), 4, now - window - 1),
        retried("r-older", "m-older", seed(1), 4, now - window - 1),
        received("m-new", seed(2), 1, now),
    ];
    let response = capture.capture(batch, later()).await.unwrap();
    assert_eq!(reported(&response), BTreeSet::from(["m-old", "r-older"]));
    assert!(sent_again(&capture).is_empty());
}

/// A valid event of exactly `bytes`.
fn event_of(bytes: usize) -> String {
    let mut event: serde_json::Value = serde_json::from_str(seed(0)).unwrap();
    event["padding"] = "".into();
    let padding = bytes - event.to_string().len();
    event["padding"] = "x".repeat(padding).into();
    event.to_string()
}

#[tokio::test]
async fn an_event_too_large_to_redrive_with_the_retry_queues_attributes_is_handed_back() {
    // GIVEN two unstored events on their third receive: one that fits the events queue with
    // capture's attributes, one a byte larger
    let capture = requeuing();
    let fits = requeue::REDRIVABLE_BYTES - requeue::size(0, "m-fits");
    let batch = vec![
        received("m-fits", &event_of(fits), 3, SystemClock.now_ms()),
        received("m-over", &event_of(fits + 1), 3, SystemClock.now_ms()),
    ];
    for id in ["m-fits", "m-over"] {
        capture
            .table
            .refuse(id, StoreError::Unavailable("throttled".into()));
    }
    // WHEN they are captured
    let response = capture.capture(batch, later()).await.unwrap();
    // THEN only the first goes round the retry queue: the other is handed back, to be
    // dead-lettered as it came, which a redrive can put back on the events queue
    let sent = sent_again(&capture);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message_id, "m-fits");
    assert_eq!(reported(&response), BTreeSet::from(["m-over"]));
}

#[tokio::test]
async fn a_first_message_dated_ahead_counts_from_now_when_sent_on() {
    let capture = requeuing();
    capture
        .table
        .refuse("m-1", StoreError::Unavailable("throttled".into()));
    let now = SystemClock.now_ms();
    let batch = vec![retried("r-1", "m-1", seed(0), 3, now + 30 * 86_400_000)];
    capture.capture(batch, later()).await.unwrap();
    let sent = sent_again(&capture);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].first_sent_ms <= SystemClock.now_ms());
    assert!(sent[0].first_sent_ms >= now);
}

#[tokio::test]
async fn the_window_an_event_goes_round_in_is_the_one_capture_is_given() {
    let capture = requeuing().with_requeue_window(Duration::from_secs(60));
    for id in ["m-1", "m-2"] {
        capture
            .table
            .refuse(id, StoreError::Unavailable("throttled".into()));
    }
    let now = SystemClock.now_ms();
    let batch = vec![
        received("m-1", seed(0), 3, now - 120_000),
        received("m-2", seed(1), 3, now - 30_000),
    ];
    let response = capture.capture(batch, later()).await.unwrap();
    assert_eq!(reported(&response), BTreeSet::from(["m-1"]));
    let sent: Vec<String> = sent_again(&capture)
        .into_iter()
        .map(|m| m.capture_id)
        .collect();
    assert_eq!(sent, ["m-2"]);
}
