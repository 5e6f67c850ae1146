//! Live delivery against the library's in-memory doubles: several projects in one batch, each
//! through its own lane, with a clock that moves only when told. No emulator, no wait.

use super::*;
use audit_log::Retention;
use audit_log::clock::ManualClock;
use audit_log::destination::DeliveryError;
use audit_log::fixtures::SEED_EVENTS;
use audit_log::lane::LaneState;
use audit_log::lane::memory::{
    Answer, MemoryEvents, MemoryLanes, MemoryTimers, ScriptedDestinations,
};
use audit_log::store::StoredEvent;
use aws_lambda_events::event::dynamodb::EventRecord;
use std::collections::BTreeSet;
use std::time::Duration;
use time::macros::datetime;

type Doubles = Delivery<MemoryLanes, MemoryTimers, MemoryEvents, ScriptedDestinations>;

struct World {
    delivery: Doubles,
    clock: Arc<ManualClock>,
    next: usize,
}

/// A record as Lambda sends it, read as the function reads it.
fn as_sent(record: EventRecord) -> StreamRecord {
    let sent = serde_json::json!({ "Records": [record] }).to_string();
    serde_json::from_str::<crate::StreamRecords>(&sent)
        .unwrap()
        .records
        .remove(0)
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

fn outage() -> DeliveryError {
    DeliveryError::Retryable("Datadog answered HTTP 503".into())
}

fn lane(project: &str) -> LaneKey {
    LaneKey::new("org-a", project)
}

impl World {
    /// Projects `a` and `b` of one organization stream to destinations that take everything.
    fn new() -> Self {
        let clock = Arc::new(ManualClock::at(datetime!(2026-11-30 10:00 UTC)));
        let delivery = Delivery::new(
            MemoryLanes::default(),
            MemoryTimers::default(),
            MemoryEvents::default(),
            ScriptedDestinations::default(),
            Policy::default(),
            clock.clone(),
        );
        delivery.configs.configure(&lane("a"));
        delivery.configs.configure(&lane("b"));
        Self {
            delivery,
            clock,
            next: 0,
        }
    }

    /// A new event of `project` as the stream hands it: an `INSERT` of its stored item.
    fn inserted(&mut self, project: &str) -> (StreamRecord, AuditEvent) {
        self.next += 1;
        let mut value: serde_json::Value = serde_json::from_str(SEED_EVENTS[0].1).unwrap();
        value["organization_id"] = "org-a".into();
        value["project_id"] = project.into();
        value["description"] = format!("event {:03}", self.next).into();
        let event = AuditEvent::from_value(value).unwrap();
        let id = format!("m{:03}", self.next);
        let stored = StoredEvent::new(&id, &event, Retention::default()).unwrap();
        let mut record = EventRecord::default();
        record.event_name = "INSERT".into();
        record.event_id = format!("e{:03}", self.next);
        record.change.sequence_number = Some(format!("{}", 1000 + self.next));
        record.change.new_image = stored.item.into();
        let record = as_sent(record);
        let (event, key) = event_of(&record).unwrap();
        // The events table holds what the stream reports.
        self.delivery.events.put(&key, &event);
        (record, event)
    }

    fn batch(&mut self, projects: &[&str]) -> (Vec<StreamRecord>, Vec<AuditEvent>) {
        projects.iter().map(|p| self.inserted(p)).unzip()
    }

    /// Project a's records, delivered while its configuration cannot be read (it stays so):
    /// the one message that deferred them.
    async fn deferred(&self, records: &[StreamRecord]) -> audit_log::lane::Deferred {
        self.delivery.configs.set_unreadable(&lane("a"), true);
        assert!(failed(&self.delivery.deliver(records, later()).await).is_empty());
        let mut deferred = self.delivery.timers.take_deferred();
        assert_eq!(deferred.len(), 1);
        deferred.remove(0).0
    }

    fn received(&self, project: &str) -> Vec<String> {
        described(&self.delivery.destinations.of(&lane(project)).received())
    }

    /// Runs the lane's scheduled calls as they fall due, until it delivers again.
    async fn run_calls_until_delivering(&self, key: &LaneKey) {
        for _ in 0..20 {
            if self.delivery.configs.get(key).lane.state == LaneState::Delivering {
                return;
            }
            let attempt = self.delivery.configs.get(key).lane.attempt;
            let calls = self.delivery.timers.take();
            let (call, _) = calls
                .into_iter()
                .find(|(c, _)| Some(&c.attempt) == attempt.as_ref())
                .expect("the lane scheduled the call it waits for");
            let wait = call.due_ms - self.clock.now_ms();
            if wait > 0 {
                self.clock.advance(Duration::from_millis(wait as u64));
            }
            self.delivery.run_lane_call(&call, later()).await.unwrap();
        }
        panic!("the lane did not deliver again");
    }
}

fn described(events: &[AuditEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            e.clone().into_value()["description"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn failed(response: &DynamoDbEventResponse) -> Vec<Option<String>> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

#[tokio::test]
async fn each_project_receives_its_own_events_in_order() {
    // GIVEN two projects with destinations
    let mut w = World::new();
    let (records, events) = w.batch(&["a", "b", "a", "b", "a"]);
    // WHEN one stream batch carries events of both
    let response = w.delivery.deliver(&records, later()).await;
    // THEN each destination receives exactly its project's events, in order, with their ids,
    // and Lambda is told nothing failed
    assert!(failed(&response).is_empty());
    assert_eq!(
        w.received("a"),
        described(&[events[0].clone(), events[2].clone(), events[4].clone()])
    );
    assert_eq!(
        w.received("b"),
        described(&[events[1].clone(), events[3].clone()])
    );
    let sent = w.delivery.destinations.of(&lane("a")).received();
    assert_eq!(sent[0].id(), Some("m001"));
}

#[tokio::test]
async fn a_destination_that_is_down_owes_its_events_and_holds_back_no_neighbour() {
    // GIVEN project a's destination is down
    let mut w = World::new();
    w.delivery
        .destinations
        .of(&lane("a"))
        .answer(Answer::Fail(outage()));
    let (records, _) = w.batch(&["a", "b", "a", "b"]);
    // WHEN a batch for both arrives
    let response = w.delivery.deliver(&records, later()).await;
    // THEN b's events are delivered, a's are owed by its lane (retrying, a call scheduled), and
    // the shard moves on: nothing is reported to Lambda
    assert!(failed(&response).is_empty());
    assert_eq!(w.received("b"), ["event 002", "event 004"]);
    let a = w.delivery.configs.get(&lane("a"));
    assert_eq!(a.lane.state, LaneState::Retrying);
    assert_eq!(a.owed.len(), 2);
    assert!(w.received("a").is_empty());
    // AND once a's destination is back, its scheduled calls deliver what it was owed, oldest
    // first, by themselves
    w.delivery.destinations.of(&lane("a")).answer(Answer::Take);
    w.run_calls_until_delivering(&lane("a")).await;
    assert_eq!(w.received("a"), ["event 001", "event 003"]);
    assert!(w.delivery.configs.get(&lane("a")).owed.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_destination_that_never_answers_costs_its_neighbour_nothing() {
    // GIVEN project a's destination does not answer
    let mut w = World::new();
    w.delivery
        .destinations
        .of(&lane("a"))
        .answer(Answer::TimeOut);
    let (records, _) = w.batch(&["a", "b"]);
    // WHEN a batch for both arrives
    let started = Instant::now();
    let delivery = w.delivery.deliver(&records, later());
    tokio::pin!(delivery);
    // THEN b is delivered while a's destination is still being waited for
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut delivery)
            .await
            .is_err()
    );
    assert_eq!(w.received("b"), ["event 002"]);
    // AND a's event is owed once the lanes' budget is spent, long before the invocation's end
    let response = delivery.await;
    assert!(failed(&response).is_empty());
    assert_eq!(w.delivery.configs.get(&lane("a")).owed.len(), 1);
    assert!(started.elapsed() <= w.delivery.policy.budget + Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn more_hanging_destinations_than_run_at_once_cost_the_batch_one_budget() {
    // GIVEN a batch of twice as many projects as are served at once, none of whose
    // destinations answers
    let mut w = World::new();
    let projects: Vec<String> = (0..2 * CONCURRENT_DESTINATIONS)
        .map(|i| format!("p{i:02}"))
        .collect();
    for p in &projects {
        w.delivery.configs.configure(&lane(p));
        w.delivery.destinations.of(&lane(p)).answer(Answer::TimeOut);
    }
    let names: Vec<&str> = projects.iter().map(String::as_str).collect();
    let (records, _) = w.batch(&names);
    // WHEN it is delivered
    let started = Instant::now();
    let response = w.delivery.deliver(&records, later()).await;
    // THEN the shard waited one budget, not one per round of destinations
    assert!(started.elapsed() <= w.delivery.policy.budget + Duration::from_secs(1));
    assert!(failed(&response).is_empty());
    // AND every project's event is owed to its lane, which calls again by itself
    for p in &projects {
        let config = w.delivery.configs.get(&lane(p));
        assert_eq!(config.owed.len(), 1, "{p}");
        assert_ne!(config.lane.state, LaneState::Delivering, "{p}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_healthy_destination_after_many_hanging_ones_is_delivered_live() {
    // GIVEN a batch where forty destinations that never answer come before a healthy one
    let mut w = World::new();
    let mut projects: Vec<String> = (0..40).map(|i| format!("p{i:02}")).collect();
    for p in &projects {
        w.delivery.configs.configure(&lane(p));
        w.delivery.destinations.of(&lane(p)).answer(Answer::TimeOut);
    }
    w.delivery.configs.configure(&lane("zz"));
    projects.push("zz".into());
    let names: Vec<&str> = projects.iter().map(String::as_str).collect();
    let (records, _) = w.batch(&names);
    // WHEN it is delivered
    let response = w.delivery.deliver(&records, later()).await;
    // THEN the healthy one got its turn with the others, not after them: delivered live
    assert!(failed(&response).is_empty());
    assert_eq!(w.received("zz").len(), 1);
    let healthy = w.delivery.configs.get(&lane("zz"));
    assert_eq!(healthy.lane.state, LaneState::Delivering);
    assert!(healthy.owed.is_empty());
}

#[tokio::test]
async fn only_new_events_are_delivered() {
    // GIVEN records that are not inserts: a TTL expiry and a modification
    let mut w = World::new();
    let (mut records, _) = w.batch(&["a", "a", "a"]);
    records[0].event_name = "REMOVE".into();
    records[1].event_name = "MODIFY".into();
    // WHEN they arrive
    let response = w.delivery.deliver(&records, later()).await;
    // THEN only the insert is delivered
    assert!(failed(&response).is_empty());
    assert_eq!(w.received("a"), ["event 003"]);
}

#[tokio::test]
async fn records_without_a_stream_id_are_each_delivered() {
    // GIVEN records read back from the stream without an id, in two batches
    let mut w = World::new();
    let (mut records, _) = w.batch(&["a", "a", "a"]);
    for record in &mut records {
        record.event_id.clear();
    }
    // WHEN they arrive
    let first = w.delivery.deliver(&records[..1], later()).await;
    let rest = w.delivery.deliver(&records[1..], later()).await;
    // THEN none is taken for one delivered before
    assert!(failed(&first).is_empty() && failed(&rest).is_empty());
    assert_eq!(w.received("a"), ["event 001", "event 002", "event 003"]);
}

#[tokio::test]
async fn a_project_without_a_destination_keeps_its_events_and_fails_nothing() {
    // GIVEN a project that streams nowhere
    let mut w = World::new();
    let (records, _) = w.batch(&["unconfigured", "a"]);
    // WHEN its events arrive
    let response = w.delivery.deliver(&records, later()).await;
    // THEN nothing is reported and its neighbour is delivered
    assert!(failed(&response).is_empty());
    assert!(w.received("unconfigured").is_empty());
    assert_eq!(w.received("a"), ["event 002"]);
}

#[tokio::test]
async fn the_services_own_trouble_with_one_project_defers_its_events_and_holds_back_nobody() {
    // GIVEN project a's configuration cannot be read (its organization's partition throttled)
    let mut w = World::new();
    w.delivery.configs.set_unreadable(&lane("a"), true);
    let (records, _) = w.batch(&["b", "a", "b", "a"]);
    // WHEN a batch for both arrives
    let response = w.delivery.deliver(&records, later()).await;
    // THEN b is delivered, and Lambda is asked to retry nothing: the shard moves on
    assert!(failed(&response).is_empty());
    assert_eq!(w.received("b"), ["event 001", "event 003"]);
    // AND a's events wait on the lanes queue, ten seconds away, in one message
    let deferred = w.delivery.timers.take_deferred();
    assert_eq!(deferred.len(), 1);
    let (message, wait) = &deferred[0];
    assert_eq!(*wait, Duration::from_secs(10));
    assert_eq!((message.lane(), message.tries), (lane("a"), 0));
    let keys = [&records[1], &records[3]].map(|r| stored_key(r).unwrap());
    assert_eq!(message.events, keys);
    // AND Lambda handing the batch again sends nothing twice and defers nothing twice
    w.delivery.configs.set_unreadable(&lane("a"), false);
    assert!(failed(&w.delivery.deliver(&records, later()).await).is_empty());
    assert_eq!(w.received("b"), ["event 001", "event 003"]);
    assert!(w.received("a").is_empty());
    assert!(w.delivery.timers.take_deferred().is_empty());
    // AND when the message comes and the table answers, a's events are delivered
    w.delivery.deliver_deferred(message, later()).await.unwrap();
    assert_eq!(w.received("a"), ["event 002", "event 004"]);
    assert!(w.delivery.timers.take_deferred().is_empty());
}

#[tokio::test]
async fn trouble_that_cannot_be_deferred_either_is_retried_from_the_first_record_it_could_not_handle()
 {
    // GIVEN project a's configuration cannot be read, and the lanes queue refuses messages
    let mut w = World::new();
    w.delivery.configs.set_unreadable(&lane("a"), true);
    w.delivery
        .timers
        .refusing_deferrals
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (records, _) = w.batch(&["b", "a", "b", "a"]);
    // WHEN a batch for both arrives
    let response = w.delivery.deliver(&records, later()).await;
    // THEN b is delivered and Lambda retries from a's first record
    assert_eq!(failed(&response), [Some("1002".to_owned())]);
    assert_eq!(w.received("b"), ["event 001", "event 003"]);
    // AND when Lambda hands the rest of the batch again and the table answers, a's events are
    // delivered and b's already delivered one is not sent twice
    w.delivery.configs.set_unreadable(&lane("a"), false);
    let response = w.delivery.deliver(&records[1..], later()).await;
    assert!(failed(&response).is_empty());
    assert_eq!(w.received("a"), ["event 002", "event 004"]);
    assert_eq!(w.received("b"), ["event 001", "event 003"]);
}

#[tokio::test]
async fn deferred_events_that_meet_trouble_again_wait_longer_each_time() {
    let mut w = World::new();
    let (records, _) = w.batch(&["a", "a"]);
    let mut message = w.deferred(&records).await;
    // WHEN the trouble outlasts each wait
    let mut waits = Vec::new();
    for _ in 0..8 {
        w.delivery
            .deliver_deferred(&message, later())
            .await
            .unwrap();
        let (again, wait) = w.delivery.timers.take_deferred().remove(0);
        assert_eq!(again.events, message.events);
        waits.push(wait.as_secs());
        message = again;
    }
    // THEN each wait doubles, up to a retrying lane's longest wait (the operator's 300 s)
    assert_eq!(waits, [20, 40, 80, 160, 300, 300, 300, 300]);
    assert_eq!(message.tries, 8);
    // AND when the queue refuses them too, the message fails for SQS to deliver it again
    w.delivery
        .timers
        .refusing_deferrals
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let e = w
        .delivery
        .deliver_deferred(&message, later())
        .await
        .unwrap_err();
    assert!(e.contains("streaming configuration"), "{e}");
    // AND once it reads again, they are delivered, however long they waited
    w.delivery
        .timers
        .refusing_deferrals
        .store(false, std::sync::atomic::Ordering::SeqCst);
    w.delivery.configs.set_unreadable(&lane("a"), false);
    w.delivery
        .deliver_deferred(&message, later())
        .await
        .unwrap();
    assert_eq!(w.received("a"), ["event 001", "event 002"]);
}

#[tokio::test]
async fn unreadable_events_deferred_with_the_others_are_listed_once_the_table_answers() {
    let mut w = World::new();
    let (mut records, events) = w.batch(&["a", "a"]);
    records[1].change.new_image.event = Some(crate::records::Attribute::Other);
    let message = w.deferred(&records).await;
    assert_eq!(message.events, [stored_key(&records[0]).unwrap()]);
    let unreadable: Vec<&StoredKey> = message.unreadable.iter().map(|u| &u.event).collect();
    assert_eq!(unreadable, [&stored_key(&records[1]).unwrap()]);
    // WHEN the message comes and the table answers
    w.delivery.configs.set_unreadable(&lane("a"), false);
    w.delivery
        .deliver_deferred(&message, later())
        .await
        .unwrap();
    // THEN the readable event is delivered, the other listed with why
    assert_eq!(w.received("a"), described(&events[..1]));
    let failures = w.delivery.configs.get(&lane("a")).failures;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, stored_key(&records[1]).unwrap());
    assert!(
        failures[0]
            .1
            .starts_with("the stored event could not be read"),
        "{failures:?}"
    );
}

#[tokio::test]
async fn deferred_events_whose_trouble_outlasts_the_retry_window_are_listed_as_failures() {
    let mut w = World::new();
    let (records, _) = w.batch(&["a", "a"]);
    let message = w.deferred(&records).await;
    // A second inside the window: deferred again
    let window = w.delivery.policy.retry_window;
    w.clock.advance(window - Duration::from_secs(1));
    w.delivery
        .deliver_deferred(&message, later())
        .await
        .unwrap();
    let (again, _) = w.delivery.timers.take_deferred().remove(0);
    assert_eq!(again.since_ms, message.since_ms);
    assert!(w.delivery.configs.get(&lane("a")).failures.is_empty());
    // WHEN the window has passed and the trouble lasts
    w.clock.advance(Duration::from_secs(1));
    w.delivery.deliver_deferred(&again, later()).await.unwrap();
    // THEN they are listed as failures, for a replay, and not deferred again
    assert!(w.delivery.timers.take_deferred().is_empty());
    let failures = w.delivery.configs.get(&lane("a")).failures;
    let listed: BTreeSet<String> = failures.iter().map(|(k, _)| k.sort_key.clone()).collect();
    let deferred: BTreeSet<String> = records
        .iter()
        .map(|r| stored_key(r).unwrap().sort_key)
        .collect();
    assert_eq!(listed, deferred);
    assert!(
        failures
            .iter()
            .all(|(_, why)| why.contains("retry window") && why.contains("replay it")),
        "{failures:?}"
    );
}

#[tokio::test]
async fn only_what_a_delivery_left_unhandled_is_deferred() {
    // GIVEN a destination that rejects the first event of each request and takes the others,
    // and project a's failures cannot be written (its partition throttled)
    let mut w = World::new();
    w.delivery
        .destinations
        .of(&lane("a"))
        .answer(Answer::SlowToReject(Duration::ZERO));
    w.delivery.configs.set_unwritable(&lane("a"), true);
    let (records, _) = w.batch(&["a", "a", "a"]);
    // WHEN a batch arrives
    assert!(failed(&w.delivery.deliver(&records, later()).await).is_empty());
    // THEN the two events taken stay delivered, and only the rejected one, whose rejection
    // could not be recorded, is deferred
    assert_eq!(w.received("a"), ["event 002", "event 003"]);
    let mut deferred = w.delivery.timers.take_deferred();
    assert_eq!(deferred.len(), 1);
    let (message, _) = deferred.remove(0);
    assert_eq!(message.events, [stored_key(&records[0]).unwrap()]);
    // AND when it comes and the table takes writes, the rejection is recorded and nothing
    // delivered is sent again
    w.delivery.configs.set_unwritable(&lane("a"), false);
    w.delivery
        .deliver_deferred(&message, later())
        .await
        .unwrap();
    assert_eq!(w.received("a"), ["event 002", "event 003"]);
    let failures = w.delivery.configs.get(&lane("a")).failures;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, stored_key(&records[0]).unwrap());
    assert!(w.delivery.timers.take_deferred().is_empty());
}

#[tokio::test]
async fn a_lane_whose_owed_events_cannot_be_written_defers_them_all() {
    // GIVEN project a's destination is down and its owed events cannot be written
    let mut w = World::new();
    w.delivery
        .destinations
        .of(&lane("a"))
        .answer(Answer::Fail(outage()));
    w.delivery.configs.set_unwritable(&lane("a"), true);
    let (records, _) = w.batch(&["a", "b", "a"]);
    // WHEN a batch arrives
    assert!(failed(&w.delivery.deliver(&records, later()).await).is_empty());
    // THEN b's event is delivered, and a's, neither taken nor owed, are deferred
    assert_eq!(w.received("b"), ["event 002"]);
    let (message, _) = w.delivery.timers.take_deferred().remove(0);
    let a = [&records[0], &records[2]].map(|r| stored_key(r).unwrap());
    assert_eq!(message.events, a);
    assert_eq!(w.delivery.configs.get(&lane("a")).lane.owed, 0);
    // AND once the table takes writes, the message owes them to the lane
    w.delivery.configs.set_unwritable(&lane("a"), false);
    w.delivery
        .deliver_deferred(&message, later())
        .await
        .unwrap();
    assert_eq!(w.delivery.configs.get(&lane("a")).lane.owed, 2);
}

#[tokio::test]
async fn deferred_events_no_longer_kept_are_listed_as_failures_not_sent() {
    let mut w = World::new();
    let (records, _) = w.batch(&["a", "a"]);
    let message = w.deferred(&records).await;
    w.delivery.configs.set_unreadable(&lane("a"), false);
    // The first event expired (its TTL passed) while it waited.
    let gone = stored_key(&records[0]).unwrap();
    w.delivery
        .events
        .events
        .lock()
        .unwrap()
        .remove(&gone.sort_key);
    w.delivery
        .deliver_deferred(&message, later())
        .await
        .unwrap();
    assert_eq!(w.received("a"), ["event 002"]);
    // Listed, as a catching-up lane lists what it cannot read back: a replay finds it there.
    let failures = w.delivery.configs.get(&lane("a")).failures;
    assert_eq!(
        failures
            .iter()
            .map(|(k, why)| (k.sort_key.as_str(), why.as_str()))
            .collect::<Vec<_>>(),
        [(
            gone.sort_key.as_str(),
            "the stored event could not be read back"
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn a_project_whose_configuration_reads_hang_holds_the_shard_no_longer_than_the_budget() {
    // GIVEN project a's configuration reads take a minute (its partition throttled, the SDK
    // retrying)
    let mut w = World::new();
    w.delivery
        .configs
        .set_slow(&lane("a"), Duration::from_secs(60));
    let (records, _) = w.batch(&["a", "b", "a"]);
    // WHEN a batch for both arrives
    let started = Instant::now();
    let response = w
        .delivery
        .deliver(&records, started + Duration::from_secs(59))
        .await;
    // THEN the batch ends within the budget and its grace, b delivered
    assert!(started.elapsed() <= Policy::default().budget + GROUP_GRACE);
    assert!(failed(&response).is_empty());
    assert_eq!(w.received("b"), ["event 002"]);
    // AND a's events wait on the deferred queue, to be handed when their message comes
    let deferred = w.delivery.timers.take_deferred();
    assert_eq!(deferred.len(), 1);
    let sent = [&records[0], &records[2]].map(|r| stored_key(r).unwrap());
    assert_eq!(deferred[0].0.events, sent);
    w.delivery.configs.set_slow(&lane("a"), Duration::ZERO);
    w.delivery
        .deliver_deferred(&deferred[0].0, later())
        .await
        .unwrap();
    assert_eq!(w.received("a"), ["event 001", "event 003"]);
}

#[tokio::test]
async fn a_damaged_configuration_lists_its_projects_events_as_failures_and_holds_nobody() {
    // GIVEN project a's configuration item is damaged for good (a retry cannot mend it)
    let mut w = World::new();
    w.delivery.configs.damage(&lane("a"));
    let (records, _) = w.batch(&["a", "b", "a"]);
    // WHEN a batch for both arrives
    let response = w.delivery.deliver(&records, later()).await;
    // THEN Lambda is not asked to retry, b is delivered
    assert!(failed(&response).is_empty());
    assert_eq!(w.received("b"), ["event 002"]);
    // AND a's events are listed as its failures, saying what to do, for a replay to bring
    let failures = w.delivery.configs.get(&lane("a")).failures;
    let listed: BTreeSet<&str> = failures.iter().map(|(k, _)| k.sort_key.as_str()).collect();
    let sent = [&records[0], &records[2]].map(|r| stored_key(r).unwrap().sort_key);
    assert_eq!(listed, sent.iter().map(String::as_str).collect());
    assert!(
        failures
            .iter()
            .all(|(_, why)| why.contains("replay them once it reads again")),
        "{failures:?}"
    );
    // AND its records count as handled: Lambda handing the batch again lists nothing twice
    for record in [&records[0], &records[2]] {
        assert!(w.delivery.handled.contains_key(&record.event_id));
    }
}

#[tokio::test]
async fn a_lane_whose_configuration_is_damaged_lists_what_it_was_owed_past_the_retry_window() {
    // GIVEN project a's destination is down and owes two events; then its configuration item
    // is damaged
    let mut w = World::new();
    let a = lane("a");
    w.delivery
        .destinations
        .of(&a)
        .answer(Answer::Fail(outage()));
    let (records, _) = w.batch(&["a", "a"]);
    assert!(failed(&w.delivery.deliver(&records, later()).await).is_empty());
    assert_eq!(w.delivery.configs.get(&a).owed.len(), 2);
    w.delivery.configs.damage(&a);
    let calls = w.delivery.timers.take();
    let (call, _) = calls.iter().find(|(c, _)| c.lane == a).unwrap();
    // WHEN its lane's call comes, THEN it fails, to come again (a deploy out of step mends by
    // itself), and the events stay owed
    w.clock.advance(Duration::from_millis(
        (call.due_ms - w.clock.now_ms()).max(0) as u64,
    ));
    assert!(w.delivery.run_lane_call(call, later()).await.is_err());
    assert_eq!(w.delivery.configs.get(&a).owed.len(), 2);
    assert!(w.delivery.configs.get(&a).failures.is_empty());
    // AND once they are past the retry window, a call lists them as failures, saying what to
    // do, for a replay to bring, rather than leave them owed and unlisted
    w.clock.advance(w.delivery.policy.retry_window);
    assert!(w.delivery.run_lane_call(call, later()).await.is_err());
    let damaged = w.delivery.configs.get(&a);
    assert!(damaged.owed.is_empty());
    let listed: BTreeSet<&str> = damaged
        .failures
        .iter()
        .map(|(k, _)| k.sort_key.as_str())
        .collect();
    let owed: Vec<String> = records
        .iter()
        .map(|r| stored_key(r).unwrap().sort_key)
        .collect();
    assert_eq!(listed, owed.iter().map(String::as_str).collect());
    assert!(
        damaged
            .failures
            .iter()
            .all(|(_, why)| why.contains("retry window")
                && why.contains("replay them once it reads again")),
        "{:?}",
        damaged.failures
    );
    assert!(w.received("a").is_empty());
}

#[test]
fn small_and_large_stored_events_come_back_whole_with_their_id_and_key() {
    let small = AuditEvent::from_json(SEED_EVENTS[2].1).unwrap();
    let mut big = small.clone().into_value();
    big["padding"] = serde_json::json!("x".repeat(100_000));
    let big = AuditEvent::from_value(big).unwrap();
    for (event, id) in [(small, "m-small"), (big, "m-big")] {
        let stored = StoredEvent::new(id, &event, Retention::default()).unwrap();
        let mut record = EventRecord::default();
        record.event_name = "INSERT".into();
        record.change.new_image = stored.item.into();
        let (back, key) = event_of(&as_sent(record)).unwrap();
        assert_eq!(back.json(), event.json());
        assert_eq!(back.id(), Some(id));
        assert_eq!(key.message_id, id);
        assert!(key.sort_key.ends_with(id));
        assert_eq!(
            key.expires_at,
            event.timestamp().unix_timestamp() + 400 * 86_400
        );
    }
}

#[test]
fn images_of_items_written_before_events_were_packed_read_as_they_were() {
    let event = AuditEvent::from_json(SEED_EVENTS[1].1).unwrap();
    for gzipped in [false, true] {
        let item = audit_log::fixtures::item_written_before_packing(
            &event,
            "m-old",
            gzipped,
            1_900_000_000,
        );
        let mut record = EventRecord::default();
        record.event_name = "INSERT".into();
        record.change.new_image = item.into();
        let (back, key) = event_of(&as_sent(record)).unwrap();
        assert_eq!(back.json(), event.json());
        assert_eq!((back.id(), key.expires_at), (Some("m-old"), 1_900_000_000));
    }
}

#[test]
fn an_image_without_an_event_is_reported_not_delivered() {
    let mut record = EventRecord::default();
    record.event_name = "INSERT".into();
    assert!(event_of(&as_sent(record)).is_err());
}

#[tokio::test]
async fn an_unreadable_stored_event_is_listed_as_a_failure_and_holds_back_no_other() {
    // GIVEN a batch whose middle records hold what is no stored event: a binary that is not
    // base64, and bytes that are no packed event
    let mut w = World::new();
    let (mut records, events) = w.batch(&["a", "a", "a"]);
    records[1].change.new_image.event = Some(crate::records::Attribute::Other);
    let mut garbled = records[2].clone();
    garbled.event_id = "e-garbled".into();
    garbled.change.new_image.event = Some(crate::records::Attribute::B(vec![1, 2, 3]));
    records.insert(2, garbled);
    // WHEN it is delivered
    let response = w.delivery.deliver(&records, later()).await;
    // THEN the readable events arrive, and Lambda is not asked to retry what no retry mends
    assert!(failed(&response).is_empty());
    assert_eq!(
        w.received("a"),
        described(&[events[0].clone(), events[2].clone()])
    );
    // AND the unreadable ones are listed as the project's failures, for a replay to bring
    // once they read
    let failures = w.delivery.configs.get(&lane("a")).failures;
    // In any order: they are written a reason at a time.
    let mut listed: Vec<&str> = failures.iter().map(|(k, _)| k.sort_key.as_str()).collect();
    listed.sort_unstable();
    let mut unreadable = [&records[1], &records[2]].map(|r| stored_key(r).unwrap().sort_key);
    unreadable.sort_unstable();
    assert_eq!(listed, unreadable);
    assert!(
        failures
            .iter()
            .all(|(_, why)| why.starts_with("the stored event could not be read")),
        "{failures:?}"
    );
}

#[tokio::test]
async fn a_record_that_names_no_stored_event_is_skipped_and_listed_nowhere() {
    // GIVEN a record whose image has no partition key either
    let mut w = World::new();
    let (mut records, events) = w.batch(&["a", "a"]);
    records[0].change.new_image.event = None;
    records[0].change.new_image.partition_key = None;
    // WHEN it is delivered
    let response = w.delivery.deliver(&records, later()).await;
    // THEN the rest arrives, nothing is retried, and no project lists it
    assert!(failed(&response).is_empty());
    assert_eq!(w.received("a"), described(&events[1..]));
    assert!(w.delivery.configs.get(&lane("a")).failures.is_empty());
}
