//! The lane's state machine against in-memory doubles, with a clock that moves only when told.

use super::memory::{Answer, MemoryEvents, MemoryLanes, MemoryTimers, ScriptedSink};
use super::*;
use crate::AuditEvent;
use crate::clock::{Clock, ManualClock};
use crate::fixtures::SEED_EVENTS;
use futures::FutureExt;
use time::macros::datetime;
use tokio::time::Instant;

struct World {
    lanes: MemoryLanes,
    timers: MemoryTimers,
    clock: ManualClock,
    policy: Policy,
    events: MemoryEvents,
    sink: ScriptedSink,
    key: LaneKey,
    next: usize,
}

/// An invocation's deadline with time to spare.
fn later() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

fn outage() -> DeliveryError {
    DeliveryError::Retryable("Datadog answered HTTP 503".into())
}

fn refusal() -> DeliveryError {
    DeliveryError::Refused("Datadog refused the API key (HTTP 403)".into())
}

impl World {
    fn new() -> Self {
        let key = LaneKey::new("org-a", "registry-1");
        let lanes = MemoryLanes::default();
        lanes.configure(&key);
        Self {
            lanes,
            timers: MemoryTimers::default(),
            clock: ManualClock::at(datetime!(2026-11-30 10:00 UTC)),
            policy: Policy::new(Duration::from_secs(168 * 3600), Duration::from_secs(300)),
            events: MemoryEvents::default(),
            sink: ScriptedSink::default(),
            key,
            next: 0,
        }
    }

    fn engine(&self) -> Lanes<'_, MemoryLanes, MemoryTimers, ManualClock> {
        Lanes {
            store: &self.lanes,
            timers: &self.timers,
            clock: &self.clock,
            policy: &self.policy,
        }
    }

    /// `n` new stored events, timed at the clock, numbered in order.
    fn arrive(&mut self, n: usize) -> Vec<(StoredKey, AuditEvent)> {
        (0..n)
            .map(|_| {
                self.next += 1;
                let mut value: serde_json::Value = serde_json::from_str(SEED_EVENTS[0].1).unwrap();
                value["description"] = format!("event {:05}", self.next).into();
                let event = AuditEvent::from_value(value).unwrap();
                let key = StoredKey {
                    sort_key: format!(
                        "{}#m{:05}",
                        crate::store::sort_key_time(self.clock.now()),
                        self.next
                    ),
                    message_id: format!("m{:05}", self.next),
                    expires_at: self.clock.now().unix_timestamp() + 400 * 86_400,
                };
                self.events.put(&key, &event);
                self.clock.advance(Duration::from_millis(1));
                (key, event)
            })
            .collect()
    }

    async fn live(&mut self, n: usize) -> engine::Outcome {
        let events = self.arrive(n);
        let lane = self.lanes.get(&self.key).lane;
        self.engine()
            .live(&self.key, &lane, events, &self.sink, later())
            .await
            .unwrap()
    }

    fn lane(&self) -> Lane {
        self.lanes.get(&self.key).lane
    }

    /// The one call the lane waits for, taken from the queue (others are stale).
    fn pending_call(&self) -> (LaneCall, Duration) {
        let calls = self.timers.take();
        let attempt = self.lane().attempt.expect("the lane waits for an attempt");
        calls
            .into_iter()
            .find(|(c, _)| c.attempt == attempt)
            .expect("the attempt the lane waits for was scheduled")
    }

    /// Runs the call the lane waits for when it is due.
    async fn run_due_call(&self) -> engine::Outcome {
        let (call, _) = self.pending_call();
        let wait = call.due_ms - self.clock.now_ms();
        if wait > 0 {
            self.clock.advance(Duration::from_millis(wait as u64));
        }
        self.call(&call).await
    }

    /// `call`, its configuration found removed by a read that began at `read_ms`.
    async fn call_removed(&self, call: &LaneCall, read_ms: i64) -> engine::Outcome {
        self.engine()
            .call(
                call,
                Target::Removed { read_ms },
                &self.events,
                Instant::now() + Duration::from_secs(5),
            )
            .await
            .unwrap()
    }

    async fn call(&self, call: &LaneCall) -> engine::Outcome {
        let read_ms = self.clock.now_ms();
        let lane = self.lanes.read(&call.lane).await.unwrap();
        self.engine()
            .call(
                call,
                match &lane {
                    Some(lane) => Target::Saved(lane, &self.sink),
                    None => Target::Removed { read_ms },
                },
                &self.events,
                Instant::now() + Duration::from_secs(60),
            )
            .await
            .unwrap()
    }

    fn received(&self) -> Vec<String> {
        self.sink
            .received()
            .iter()
            .map(|e| e.description().to_owned())
            .collect()
    }
}

fn numbered(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| format!("event {i:05}")).collect()
}

#[tokio::test]
async fn a_delivering_lane_sends_live_events_and_schedules_nothing() {
    let mut w = World::new();
    let out = w.live(3).await;
    assert_eq!(out.delivered, 3);
    assert_eq!(w.received(), numbered(1..=3));
    assert_eq!(w.lane().state, LaneState::Delivering);
    assert!(w.timers.take().is_empty());
}

#[tokio::test]
async fn an_outage_owes_the_events_and_probes_once_per_doubling_interval() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(outage()));
    let out = w.live(2).await;
    assert_eq!((out.delivered, out.owed), (0, 2));
    assert_eq!(w.lane().state, LaneState::Retrying);
    assert_eq!(w.sink.requests(), 1);

    // Live events of a retrying lane are owed and not sent.
    w.live(3).await;
    assert_eq!(w.sink.requests(), 1);
    assert_eq!(w.lane().owed, 5);

    let mut expected = 5_000u64;
    for probe in 0..10 {
        let (call, delay) = w.pending_call();
        assert!(
            delay.as_millis() as u64 >= expected / 2 && delay.as_millis() as u64 <= expected,
            "probe {probe}: waited {delay:?}, interval {expected} ms"
        );
        // Early: nothing is sent and the call waits on.
        w.timers
            .schedule(&call, Duration::ZERO)
            .now_or_never()
            .unwrap()
            .unwrap();
        assert_eq!(w.call(&call).await.skipped, Some("not due yet"));
        assert_eq!(w.sink.requests(), 1 + probe);
        w.timers.take();
        w.timers
            .schedule(&call, delay)
            .now_or_never()
            .unwrap()
            .unwrap();
        let out = w.run_due_call().await;
        assert_eq!(out.entered, Some(LaneState::Retrying));
        assert_eq!(w.sink.requests(), 2 + probe, "one request per probe");
        assert_eq!(
            w.sink.probes(),
            1 + probe,
            "probes try once, without retries"
        );
        expected = (expected * 2).min(300_000);
    }
    assert_eq!(w.lane().interval_ms, 300_000, "the interval is capped");
    assert_eq!(w.lane().owed, 5);
}

#[tokio::test]
async fn a_destination_that_fails_again_as_soon_as_it_is_back_waits_longer_each_time() {
    // GIVEN a destination that takes every probe and fails every live delivery
    let mut w = World::new();
    w.sink.answer(Answer::TakesOnlyProbes(outage()));
    let mut waits = Vec::new();
    for _ in 0..5 {
        w.live(1).await;
        assert_eq!(w.lane().state, LaneState::Retrying);
        waits.push(w.lane().interval_ms);
        // WHEN its probe finds it back, with nothing else owed
        let out = w.run_due_call().await;
        assert_eq!(out.entered, Some(LaneState::Delivering));
    }
    // THEN each outage waits twice as long as the one before: its live batches (and the
    // shard's) are held ever less often, not every few seconds
    assert_eq!(waits, [5_000, 10_000, 20_000, 40_000, 80_000]);
    assert_eq!(w.received(), numbered(1..=5));
    // AND once well for a minute, a new outage starts again from the first
    w.clock.advance(Duration::from_secs(60));
    w.live(1).await;
    assert_eq!(w.lane().interval_ms, 5_000);
}

#[tokio::test]
async fn a_lane_back_from_a_refusal_does_not_go_on_from_its_longest_wait() {
    // GIVEN probes at most 20 s apart, and a lane just back from an outage
    let mut w = World::new();
    w.policy.max_backoff = Duration::from_secs(20);
    w.sink.answer(Answer::TakesOnlyProbes(outage()));
    w.live(1).await;
    w.run_due_call().await;
    // WHEN it is refused at once (its interval the longest), then a probe finds it back
    w.sink.answer(Answer::Fail(refusal()));
    w.live(1).await;
    assert_eq!(w.lane().state, LaneState::Refused);
    assert_eq!(w.lane().interval_ms, 20_000);
    w.sink.answer(Answer::TakesOnlyProbes(outage()));
    assert_eq!(w.run_due_call().await.entered, Some(LaneState::Delivering));
    // THEN trouble soon after starts from the first wait, not from the refusal's
    w.live(1).await;
    assert_eq!(w.lane().state, LaneState::Retrying);
    assert_eq!(w.lane().interval_ms, 5_000);
}

#[test]
fn the_last_wait_is_remembered_for_twice_its_length_and_at_most_a_minute() {
    let now = 10_000_000;
    let at = |state, interval_ms, ago_ms: i64| {
        Lane {
            state,
            interval_ms,
            recovered_at: Some(now - ago_ms),
            ..Lane::default()
        }
        .interval_at(now)
    };
    use LaneState::*;
    assert_eq!(at(Delivering, 5_000, 10_000), 5_000);
    assert_eq!(at(Delivering, 5_000, 10_001), 0);
    assert_eq!(at(CatchingUp, 300_000, 60_000), 300_000);
    assert_eq!(at(Delivering, 300_000, 60_001), 0);
    // A refused lane's interval is the longest whatever happened: nothing to double.
    assert_eq!(at(Refused, 300_000, 1_000), 0);
    let never_back = Lane {
        interval_ms: 5_000,
        ..Lane::default()
    };
    assert_eq!(never_back.interval_at(now), 0);
}

#[tokio::test]
async fn a_save_forgets_the_last_wait() {
    // GIVEN a lane just back from an outage
    let mut w = World::new();
    w.sink.answer(Answer::TakesOnlyProbes(outage()));
    w.live(1).await;
    w.run_due_call().await;
    assert!(w.lane().recovered_at.is_some());
    // WHEN its configuration is saved (another destination, perhaps) and then fails
    w.lanes.saved(&w.key);
    w.live(1).await;
    // THEN its trouble starts afresh
    assert_eq!(w.lane().interval_ms, 5_000);
}

#[tokio::test]
async fn trouble_while_catching_up_goes_on_from_the_outage_before() {
    // GIVEN a lane retrying at 10 seconds, owing three events
    let mut w = World::new();
    w.policy.probe_page = 1;
    w.policy.page = 1;
    w.sink.answer(Answer::Fail(outage()));
    w.live(3).await;
    w.run_due_call().await;
    assert_eq!(w.lane().interval_ms, 10_000);
    // WHEN its probe goes through and the next page fails
    w.sink.answer(Answer::TakesOnlyProbes(outage()));
    let out = w.run_due_call().await;
    // THEN it waits 20 seconds, not 5 as if the outage were new
    assert_eq!(out.entered, Some(LaneState::Retrying));
    assert_eq!(w.lane().interval_ms, 20_000);
    assert_eq!(w.lane().owed, 2);
    // AND a refused lane that comes back keeps nothing to double
    w.sink.answer(Answer::Fail(refusal()));
    w.run_due_call().await;
    assert_eq!(w.lane().state, LaneState::Refused);
    w.sink.answer(Answer::TakesOnlyProbes(outage()));
    w.run_due_call().await;
    assert_eq!(w.lane().state, LaneState::Retrying);
    assert_eq!(w.lane().interval_ms, 5_000);
}

#[tokio::test]
async fn after_an_outage_everything_owed_arrives_oldest_first_then_live_delivery_resumes() {
    let mut w = World::new();
    w.policy.page = 4;
    w.policy.probe_page = 1;
    w.sink.answer(Answer::Fail(outage()));
    w.live(3).await;
    for _ in 0..3 {
        w.live(2).await;
        w.run_due_call().await;
    }
    assert_eq!(w.lane().owed, 9);
    w.sink.answer(Answer::Take);
    let out = w.run_due_call().await;
    // The probe (one event), then pages of four.
    assert_eq!(out.delivered, 9);
    assert_eq!(w.sink.probes(), 4);
    assert_eq!(out.entered, Some(LaneState::Delivering));
    assert_eq!(w.received(), numbered(1..=9));
    // Back to delivering: only the last wait and when it came back are kept (for trouble
    // soon after, `Lane::interval_at`).
    let lane = w.lane();
    assert_eq!(lane.interval_ms, 40_000);
    assert_eq!(lane.recovered_at, Some(w.clock.now_ms()));
    assert_eq!(
        Lane {
            interval_ms: 0,
            recovered_at: None,
            ..lane
        },
        Lane {
            writes: 4,
            ..Lane::default()
        }
    );
    assert!(w.lanes.get(&w.key).owed.is_empty());
    // Live again: straight through.
    w.live(1).await;
    assert_eq!(w.received(), numbered(1..=10));
    assert!(w.lanes.get(&w.key).failures.is_empty());
}

#[tokio::test]
async fn a_refused_lane_probes_at_the_longest_backoff_and_recovers_by_itself() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(refusal()));
    w.live(2).await;
    assert_eq!(w.lane().state, LaneState::Refused);
    assert!(w.lane().reason.unwrap().contains("API key"));
    // Live events are owed without a request; each call is one probe, at most the longest
    // backoff (and at least half of it) after the last.
    for probe in 1..=3 {
        w.live(1).await;
        let wait = w.lane().next_attempt_at.unwrap() - w.clock.now_ms();
        assert!(
            (150_000..=300_000).contains(&wait),
            "probe {probe} in {wait} ms"
        );
        w.run_due_call().await;
        assert_eq!(w.sink.requests(), 1 + probe);
        assert_eq!(w.lane().state, LaneState::Refused);
    }
    assert!(w.received().is_empty());
    // Fixed where the service cannot see it (the key enabled again): the next probe finds out.
    w.sink.answer(Answer::Take);
    let out = w.run_due_call().await;
    assert_eq!(out.entered, Some(LaneState::Delivering));
    assert_eq!(w.received(), numbered(1..=5));
    assert_eq!(w.lane().refused_version, None);
}

#[tokio::test]
async fn a_refused_lane_saved_again_tries_at_once() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(refusal()));
    w.live(2).await;
    w.sink.answer(Answer::Take);
    // A save, or a Test connection that succeeds: no need to wait for the next probe.
    assert!(w.engine().retry_now(&w.key).await.unwrap());
    assert!(w.lane().next_attempt_at.unwrap() - w.clock.now_ms() < 1_000);
    let out = w.run_due_call().await;
    assert_eq!(out.entered, Some(LaneState::Delivering));
    assert_eq!(w.received(), numbered(1..=2));
}

#[tokio::test]
async fn a_catching_up_lane_saved_again_goes_on_at_once_and_stays_catching_up() {
    let mut w = World::new();
    assert!(w.engine().pause(&w.key).await.unwrap());
    w.live(3).await;
    assert!(w.engine().resume(&w.key).await.unwrap());
    w.clock.advance(Duration::from_secs(60));
    // A Test connection that succeeds leaves it to its own call: same settings, one call.
    let before = w.lane();
    assert!(!w.engine().retry_now(&w.key).await.unwrap());
    assert_eq!(w.lane(), before);
    // A save calls at once with the new settings (its call may be lost, or still sending with
    // the old ones), and shows no trouble where none was met.
    assert!(w.engine().saved(&w.key).await.unwrap());
    let lane = w.lane();
    assert_eq!(lane.state, LaneState::CatchingUp);
    assert_eq!(lane.next_attempt_at, Some(w.clock.now_ms()));
    let out = w.run_due_call().await;
    assert_eq!(out.entered, Some(LaneState::Delivering));
    assert_eq!(w.received(), numbered(1..=3));
}

#[tokio::test]
async fn a_paused_lane_keeps_events_owed_and_resume_delivers_them_in_order() {
    let mut w = World::new();
    w.live(1).await;
    assert!(w.engine().pause(&w.key).await.unwrap());
    w.live(3).await;
    w.run_due_call().await;
    assert_eq!(w.received(), numbered(1..=1));
    assert_eq!(w.lane().state, LaneState::Paused);
    // Pausing it again changes nothing: it stays paused from when it was first.
    let paused_at = w.lane().paused_at;
    w.clock.advance(Duration::from_secs(60));
    assert!(!w.engine().pause(&w.key).await.unwrap());
    assert_eq!(w.lane().paused_at, paused_at);
    // Resuming a lane that is not paused changes nothing.
    assert!(!w.engine().retry_now(&w.key).await.unwrap());
    assert!(w.engine().resume(&w.key).await.unwrap());
    w.run_due_call().await;
    assert_eq!(w.received(), numbered(1..=4));
    assert_eq!(w.lane().state, LaneState::Delivering);
}

#[tokio::test]
async fn events_owed_beyond_the_retry_window_become_failures() {
    let mut w = World::new();
    w.policy = Policy::new(Duration::from_secs(3600), Duration::from_secs(300));
    w.sink.answer(Answer::Fail(refusal()));
    w.live(2).await;
    w.clock.advance(Duration::from_secs(1800));
    w.live(1).await;
    assert_eq!(w.run_due_call().await.expired, 0);
    // The call after the hour's window: the first two events pass it.
    w.clock.advance(Duration::from_secs(1800));
    assert_eq!(w.run_due_call().await.expired, 2);
    let failures = w.lanes.get(&w.key).failures;
    assert_eq!(failures.len(), 2);
    assert!(failures[0].1.contains("1-hour retry window"));
    assert!(failures[0].1.contains("API key"));
    assert_eq!(w.lanes.get(&w.key).owed.len(), 1);
    // The live delivery, then a probe of what is still owed at each call.
    assert_eq!(w.sink.requests(), 3);
}

#[tokio::test]
async fn a_rejected_event_is_a_failure_and_the_lane_keeps_delivering() {
    let mut w = World::new();
    w.sink
        .answer(Answer::Fail(DeliveryError::Rejected("too large".into())));
    let out = w.live(2).await;
    assert_eq!(out.rejected, 2);
    assert_eq!(w.lane().state, LaneState::Delivering);
    assert_eq!(w.lanes.get(&w.key).failures.len(), 2);
    assert!(w.timers.take().is_empty());
}

#[tokio::test]
async fn events_a_search_did_not_get_to_stay_owed_and_the_lanes_call_delivers_them() {
    let mut w = World::new();
    // Event 1 is rejected, 5 taken, 2 to 4 were beside 1 in requests not searched.
    w.sink.answer(Answer::SearchStopped { last: None });
    let out = w.live(5).await;
    assert_eq!(
        (out.delivered, out.rejected, out.owed, out.entered),
        (1, 1, 3, Some(LaneState::CatchingUp))
    );
    assert_eq!(
        w.lanes.get(&w.key).failures.len(),
        1,
        "only the rejected one listed"
    );
    // No trouble of the destination's: its call comes at once, and searches on.
    let (call, wait) = w.pending_call();
    assert_eq!(wait, Duration::ZERO);
    w.sink.answer(Answer::Take);
    let out = w.call(&call).await;
    assert_eq!(
        (out.delivered, out.entered),
        (3, Some(LaneState::Delivering))
    );
    assert_eq!(
        w.received(),
        ["event 00005", "event 00002", "event 00003", "event 00004"]
    );
    assert_eq!(w.lanes.get(&w.key).failures.len(), 1);
}

#[tokio::test]
async fn a_destination_that_took_none_of_a_delivery_has_its_unsearched_events_listed() {
    let mut w = World::new();
    // Nothing taken: the events not searched are most likely rejected too, and are not sent
    // again and again.
    let rejected = DeliveryError::Rejected("rejected too".into());
    w.sink.answer(Answer::SearchStopped {
        last: Some(rejected),
    });
    let out = w.live(4).await;
    assert_eq!((out.delivered, out.rejected, out.owed), (0, 4, 0));
    assert_eq!(w.lane().state, LaneState::Delivering);
    assert_eq!(w.lanes.get(&w.key).failures.len(), 4);
    assert!(w.timers.take().is_empty());
}

#[tokio::test]
async fn events_a_search_did_not_get_to_stay_owed_through_an_outage_that_took_the_rest() {
    let mut w = World::new();
    // Nothing taken, but for trouble: the destination's outage says nothing of them.
    w.sink.answer(Answer::SearchStopped {
        last: Some(outage()),
    });
    let out = w.live(4).await;
    assert_eq!((out.delivered, out.rejected, out.owed), (0, 1, 3));
    assert_eq!(w.lane().state, LaneState::Retrying);
    assert_eq!(w.lanes.get(&w.key).failures.len(), 1);
}

#[tokio::test]
async fn a_search_that_stops_while_catching_up_goes_on_in_its_next_page() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(outage()));
    w.live(6).await;
    w.sink.answer(Answer::SearchStopped { last: None });
    // The probe's page: 1 rejected, 6 taken, 2 to 5 owed still; the pages after it search
    // on (each rejecting its first and taking its last) until nothing is owed.
    let out = w.run_due_call().await;
    assert_eq!(out.entered, Some(LaneState::Delivering));
    assert_eq!((out.delivered, out.rejected), (3, 3));
    assert_eq!(w.received(), ["event 00006", "event 00005", "event 00004"]);
    assert_eq!(w.lanes.get(&w.key).failures.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn events_a_delivery_had_no_time_to_send_are_no_outage_of_the_destinations() {
    let mut w = World::new();
    // The destination answered every request it was sent, slowly: the shard waited.
    w.sink.answer(Answer::RanOutOfTime(w.policy.budget));
    let out = w.live(4).await;
    assert_eq!(
        (out.delivered, out.owed, out.rejected, out.entered),
        (2, 2, 0, Some(LaneState::CatchingUp))
    );
    assert!(w.lanes.get(&w.key).failures.is_empty());
    assert_eq!(
        w.lanes.get(&w.key).attempts,
        [(2, 0)],
        "no failure in its health"
    );
    // Set aside as slow (a hold away), not retrying with backoff.
    let (call, wait) = w.pending_call();
    assert_eq!(wait, w.policy.slow_hold);
    w.sink.answer(Answer::Take);
    w.clock.advance(wait);
    let out = w.call(&call).await;
    assert_eq!(out.entered, Some(LaneState::Delivering));
    assert_eq!(w.received(), numbered(1..=4));
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_got_nowhere_in_its_time_waits_rather_than_calls_it_recovery() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(outage()));
    w.live(1).await;
    // Its probe's one event was not sent in time: nothing came back from the destination.
    w.sink.answer(Answer::RanOutOfTime(Duration::ZERO));
    let out = w.run_due_call().await;
    assert_eq!((out.delivered, out.entered), (0, Some(LaneState::Retrying)));
    let (_, wait) = w.pending_call();
    assert!(wait > Duration::ZERO, "not again at once");
    assert!(w.lanes.get(&w.key).failures.is_empty(), "still owed");
    assert_eq!(w.lanes.get(&w.key).lane.owed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_lane_whose_probe_got_nowhere_stays_refused_for_its_reason() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(refusal()));
    w.live(1).await;
    w.sink.answer(Answer::RanOutOfTime(Duration::ZERO));
    let out = w.run_due_call().await;
    assert_eq!(out.entered, Some(LaneState::Refused));
    assert_eq!(w.lane().reason.as_deref(), Some(refusal().message()));
    assert_eq!(w.lane().refused_version, Some(0));
}

#[tokio::test]
async fn a_retrying_lane_whose_owed_events_all_expired_stays_retrying_and_probes_the_next() {
    let mut w = World::new();
    w.policy = Policy::new(Duration::from_secs(3600), Duration::from_secs(300));
    w.sink.answer(Answer::Fail(outage()));
    w.live(2).await;
    let interval = w.lane().interval_ms;
    // A quiet project: its next call comes after the window, and everything it owed expires.
    w.clock.advance(Duration::from_secs(3601));
    let out = w.run_due_call().await;
    assert_eq!((out.expired, out.entered), (2, None));
    let lane = w.lane();
    // Nothing showed the destination back: it stays retrying, for its reason, and nothing is
    // sent live to it.
    assert_eq!(lane.state, LaneState::Retrying, "{lane:?}");
    assert_eq!(lane.reason.as_deref(), Some(outage().message()));
    assert_eq!(lane.interval_ms, interval, "no new trouble to lengthen it");
    let wait = (lane.next_attempt_at.unwrap() - w.clock.now_ms()) as u64;
    assert!((interval / 2..=interval).contains(&wait), "{wait} ms");
    w.sink.answer(Answer::Take);
    w.live(1).await;
    assert_eq!(
        w.sink.requests(),
        1,
        "owed to the next probe, not sent live"
    );
    let out = w.run_due_call().await;
    assert_eq!(out.entered, Some(LaneState::Delivering));
    assert_eq!(w.received(), ["event 00003"]);
}

#[tokio::test]
async fn a_refused_lane_whose_probe_was_all_rejected_was_answered_and_delivers_live_again() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(refusal()));
    w.live(1).await;
    // The destination takes the request (the key, the role) and rejects its one event.
    w.sink
        .answer(Answer::Fail(DeliveryError::Rejected("too large".into())));
    let out = w.run_due_call().await;
    assert_eq!(
        (out.rejected, out.entered),
        (1, Some(LaneState::Delivering))
    );
    assert_eq!(w.lane().refused_version, None);
    assert_eq!(w.lanes.get(&w.key).failures.len(), 1);
}

#[tokio::test]
async fn a_troubled_lane_whose_probe_sent_nothing_but_an_oversized_event_stays_as_it_was() {
    for (trouble, state) in [
        (outage(), LaneState::Retrying),
        (refusal(), LaneState::Refused),
    ] {
        let mut w = World::new();
        w.sink.answer(Answer::Fail(trouble));
        w.live(1).await;
        // Its one event is over the destination's limit: listed, and never sent.
        w.sink.answer(Answer::Fail(DeliveryError::Oversized(
            "over the limit for one event".into(),
        )));
        let out = w.run_due_call().await;
        assert_eq!((out.rejected, out.entered), (1, None));
        let lane = w.lane();
        assert_eq!(lane.state, state, "{lane:?}");
        assert!(lane.next_attempt_at.is_some());
        assert_eq!(w.lanes.get(&w.key).failures.len(), 1);
    }
}

#[tokio::test]
async fn a_refused_lane_whose_probe_found_its_events_gone_stays_refused() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(refusal()));
    w.live(1).await;
    // Its one event is no longer stored when the probe comes: nothing reaches the destination.
    w.events.events.lock().unwrap().clear();
    let requests = w.sink.requests();
    let out = w.run_due_call().await;
    assert_eq!(out.entered, None);
    assert_eq!(w.sink.requests(), requests);
    let lane = w.lane();
    assert_eq!(lane.state, LaneState::Refused, "{lane:?}");
    assert_eq!(lane.reason.as_deref(), Some(refusal().message()));
    assert_eq!(lane.refused_version, Some(0));
    let wait = lane.next_attempt_at.unwrap() - w.clock.now_ms();
    assert!((150_000..=300_000).contains(&wait), "{wait} ms");
    assert_eq!(
        w.lanes.get(&w.key).failures.len(),
        1,
        "listed as not read back"
    );
}

#[tokio::test]
async fn a_lane_the_person_fixed_owing_nothing_delivers_live_again() {
    let mut w = World::new();
    w.policy = Policy::new(Duration::from_secs(3600), Duration::from_secs(300));
    w.sink.answer(Answer::Fail(refusal()));
    w.live(1).await;
    // New settings (their save's own call lost), and what the old ones were owed expired.
    w.lanes.saved(&w.key);
    w.clock.advance(Duration::from_secs(3601));
    let out = w.run_due_call().await;
    assert_eq!((out.expired, out.entered), (1, Some(LaneState::Delivering)));
    assert_eq!(w.lane().refused_version, None);
    // An outage whose events expired, then a Test connection that succeeds: tried at once.
    w.sink.answer(Answer::Fail(outage()));
    w.live(1).await;
    w.clock.advance(Duration::from_secs(3601));
    w.run_due_call().await;
    assert_eq!(w.lane().state, LaneState::Retrying);
    assert!(w.engine().retry_now(&w.key).await.unwrap());
    let out = w.run_due_call().await;
    assert_eq!(out.entered, Some(LaneState::Delivering));
}

#[tokio::test]
async fn an_event_past_its_time_to_live_when_owed_is_owed_until_it_can_be_listed() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(outage()));
    // A backfill: an event older than the retention, already past its time to live.
    let mut events = w.arrive(1);
    events[0].0.expires_at = w.clock.now().unix_timestamp() - 86_400;
    let lane = w.lane();
    let out = w
        .engine()
        .live(&w.key, &lane, events, &w.sink, later())
        .await
        .unwrap();
    assert_eq!(out.owed, 1);
    let owed = w.lanes.get(&w.key).owed;
    let (_, item) = owed.iter().next().unwrap();
    let window_ends = w.clock.now().unix_timestamp() + w.policy.retry_window.as_secs() as i64;
    assert!(item.event.expires_at > window_ends, "{item:?}");
    // Past the window it is listed, and so kept as long.
    w.clock
        .advance(w.policy.retry_window + Duration::from_secs(60));
    w.run_due_call().await;
    let failures = w.lanes.get(&w.key).failures;
    assert_eq!(failures.len(), 1);
    assert!(failures[0].0.expires_at > window_ends);
}

#[tokio::test(start_paused = true)]
async fn a_delivery_waits_at_most_a_second_for_health_it_cannot_record() {
    let mut w = World::new();
    w.lanes.set_health_hanging(&w.key, true);
    let began = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(10), w.live(2))
        .await
        .expect("the delivery waits for its health no longer than a second");
    assert_eq!(out.delivered, 2);
    assert_eq!(began.elapsed(), Duration::from_secs(1));
    assert!(w.lanes.get(&w.key).attempts.is_empty());
}

#[tokio::test]
async fn a_stale_or_duplicated_call_does_nothing() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(outage()));
    w.live(1).await;
    let (call, _) = w.pending_call();
    w.clock.advance(Duration::from_secs(10));
    w.call(&call).await;
    let requests = w.sink.requests();
    w.timers.take();
    // The same message again (SQS delivers at least once): due within moments when it was
    // sent, it looks once more before it counts as replaced.
    assert_eq!(
        w.call(&call).await.skipped,
        Some("not expected yet: looks again shortly")
    );
    let again = w.timers.take();
    assert_eq!(again.len(), 1);
    assert_eq!(
        w.call(&again[0].0).await.skipped,
        Some("another attempt replaced it")
    );
    assert!(w.timers.take().is_empty(), "once only");
    assert_eq!(w.sink.requests(), requests);
}

#[tokio::test]
async fn a_probe_that_reaches_no_destination_proves_nothing_and_the_next_page_probes() {
    let mut w = World::new();
    w.policy.probe_page = 1;
    w.sink.answer(Answer::Fail(outage()));
    w.live(2).await;
    // The oldest owed event is gone from the table by the time of the probe.
    {
        let mut stored = w.events.events.lock().unwrap();
        let oldest = stored.keys().min().cloned().unwrap();
        stored.remove(&oldest);
    }
    // The destination takes probes only: the newer event goes through only as a probe.
    w.sink.answer(Answer::TakesOnlyProbes(outage()));
    let probes = w.sink.probes();
    w.run_due_call().await;
    assert_eq!(
        w.sink.probes(),
        probes + 1,
        "no call for the page with nothing to send"
    );
    assert_eq!(w.received(), ["event 00002"]);
    assert_eq!(w.lane().state, LaneState::Delivering);
}

#[tokio::test]
async fn a_call_that_comes_before_its_lane_expects_it_looks_again_and_acts_then() {
    let mut w = World::new();
    // The call is sent before the lane is written to expect it, and read the lane before
    // that write landed.
    let before = w.lane();
    w.sink.answer(Answer::Fail(outage()));
    w.live(2).await;
    let (call, _) = w.pending_call();
    assert!(call.early, "due in seconds");
    w.clock.advance(Duration::from_secs(10));
    let out = w
        .engine()
        .call(&call, Target::Saved(&before, &w.sink), &w.events, later())
        .await
        .unwrap();
    assert_eq!(out.skipped, Some("not expected yet: looks again shortly"));
    let (again, wait) = w.pending_call();
    assert_eq!(
        (again.attempt.as_str(), again.early),
        (call.attempt.as_str(), false)
    );
    assert_eq!(wait, Duration::from_secs(10));
    // By then the lane expects it: the attempt runs.
    w.clock.advance(wait);
    w.sink.answer(Answer::Take);
    w.call(&again).await;
    assert_eq!(w.received(), numbered(1..=2));
    assert_eq!(w.lane().state, LaneState::Delivering);
}

#[tokio::test]
async fn an_attempt_that_dies_is_taken_over_by_its_lease() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(outage()));
    w.live(2).await;
    let (call, _) = w.pending_call();
    w.clock.advance(Duration::from_secs(10));
    // The destination hangs and the invocation dies mid-attempt.
    w.sink.answer(Answer::Hang);
    assert!(w.call(&call).now_or_never().is_none());
    w.sink.answer(Answer::Take);
    let out = w.run_due_call().await;
    assert_eq!(out.entered, Some(LaneState::Delivering));
    assert_eq!(w.received(), numbered(1..=2));
}

#[tokio::test]
async fn a_probe_that_got_through_and_died_settling_is_taken_over_as_catching_up() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(outage()));
    w.live(2).await;
    let (call, _) = w.pending_call();
    w.clock.advance(Duration::from_secs(10));
    // The probe is taken, and the invocation dies before its page is settled.
    w.sink.answer(Answer::Take);
    w.lanes.set_settles_failing(&w.key, true);
    let lane = w.lanes.read(&w.key).await.unwrap().unwrap();
    let target = Target::Saved(&lane, &w.sink);
    let died = w.engine().call(&call, target, &w.events, later()).await;
    assert!(died.is_err());
    assert_eq!(w.lane().state, LaneState::CatchingUp, "seen back");
    w.lanes.set_settles_failing(&w.key, false);
    // The lease's call sends the page again (delivery is at least once), then delivers live.
    let out = w.run_due_call().await;
    assert_eq!(out.entered, Some(LaneState::Delivering));
    assert_eq!(w.received(), [numbered(1..=2), numbered(1..=2)].concat());
}

#[tokio::test]
async fn nothing_owed_during_the_handover_is_left_behind() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(outage()));
    w.live(1).await;
    let lane = w.lane();
    // A write the catching-up lane has not seen stops it from delivering live again.
    assert!(
        !w.lanes
            .finish(&w.key, lane.attempt.as_deref().unwrap(), lane.writes - 1)
            .await
            .unwrap()
    );
    w.sink.answer(Answer::Take);
    w.run_due_call().await;
    assert_eq!(w.lane().state, LaneState::Delivering);
    // A live batch that read `retrying` just before: owing fails, it delivers itself.
    let stale = Lane {
        state: LaneState::Retrying,
        ..Lane::default()
    };
    let events = w.arrive(2);
    let out = w
        .engine()
        .live(&w.key, &stale, events, &w.sink, later())
        .await
        .unwrap();
    assert_eq!((out.delivered, out.owed), (2, 0));
    assert_eq!(w.received(), numbered(1..=3));
    assert!(w.lanes.get(&w.key).owed.is_empty());
}

#[tokio::test]
async fn a_removed_destination_owes_nothing() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(outage()));
    w.live(3).await;
    let (call, _) = w.pending_call();
    let removed = w.lanes.unconfigure(&w.key).unwrap();
    assert_eq!(removed.owed.len(), 3);
    assert_eq!(
        w.lanes.get(&w.key).owed.len(),
        3,
        "owed events outlive the destination"
    );
    w.clock.advance(Duration::from_secs(1));
    let out = w.call_removed(&call, w.clock.now_ms()).await;
    assert_eq!(out.skipped, Some("its destination was removed"));
    assert!(
        w.lanes.get(&w.key).owed.is_empty(),
        "its lane's call forgot them"
    );
}

#[tokio::test]
async fn forgetting_a_removed_destination_keeps_what_one_saved_since_is_owed() {
    // GIVEN a destination owed 3 events, removed, and its lane's call finding no
    // configuration
    let mut w = World::new();
    w.sink.answer(Answer::Fail(outage()));
    w.live(3).await;
    let (call, _) = w.pending_call();
    w.lanes.unconfigure(&w.key).unwrap();
    w.clock.advance(Duration::from_secs(1));
    let read_ms = w.clock.now_ms();
    // WHEN, before that call forgets, a new destination is saved and is owed 2 events of its own
    w.clock.advance(Duration::from_secs(5));
    w.lanes.configure(&w.key);
    let saved = Lane::saved_in_place_of_none(w.clock.now_ms());
    w.lanes.with(&w.key, |m| m.lane = saved.clone());
    assert_eq!(w.live(2).await.owed, 2);
    let out = w.call_removed(&call, read_ms).await;
    // THEN the removed destination's 3 are forgotten and the new one's 2 are still owed
    assert_eq!(out.skipped, Some("its destination was removed"));
    let owed: Vec<String> = w
        .lanes
        .get(&w.key)
        .owed
        .values()
        .map(|o| o.event.message_id.clone())
        .collect();
    assert_eq!(owed, ["m00004", "m00005"]);
}

#[test]
fn every_lane_state_reads_back_from_its_stored_name() {
    use strum::IntoEnumIterator;
    for state in LaneState::iter() {
        assert_eq!(LaneState::parse(state.as_str()), Some(state));
    }
    assert_eq!(LaneState::CatchingUp.as_str(), "catching_up");
    assert_eq!(LaneState::parse("Delivering"), None);
}

#[test]
fn settings_default_to_seven_days_and_five_minutes_and_the_window_fits_the_retention() {
    let p = Policy::default();
    assert_eq!(p.retry_window, Duration::from_secs(168 * 3600));
    assert_eq!(p.max_backoff, Duration::from_secs(300));
    assert_eq!(p.next_interval(0), 5_000);
    assert_eq!(p.next_interval(160_000), 300_000);
    let short = Policy::new(Duration::from_secs(3600), Duration::from_secs(2));
    assert_eq!(
        short.next_interval(0),
        2_000,
        "the first wait is within the cap"
    );
    for _ in 0..100 {
        let at = p.jittered(10_000, 0);
        assert!((5_000..=10_000).contains(&at));
    }
}

#[tokio::test]
async fn an_event_owed_twice_is_sent_once_and_owed_no_more() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(outage()));
    let events = w.arrive(2);
    let lane = w.lane();
    w.engine()
        .live(&w.key, &lane, events.clone(), &w.sink, later())
        .await
        .unwrap();
    // Lambda hands the same batch over again (another container, nothing remembered).
    w.clock.advance(Duration::from_millis(5));
    let lane = w.lane();
    w.engine()
        .live(&w.key, &lane, events, &w.sink, later())
        .await
        .unwrap();
    assert_eq!(w.lanes.get(&w.key).owed.len(), 4);
    w.sink.answer(Answer::Take);
    w.run_due_call().await;
    assert_eq!(w.received(), numbered(1..=2));
    assert!(w.lanes.get(&w.key).owed.is_empty());
}

#[tokio::test]
async fn a_call_without_its_budget_left_hands_on_without_blaming_the_destination() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(outage()));
    w.live(5).await;
    w.sink.answer(Answer::Take);
    let (call, _) = w.pending_call();
    w.clock.advance(Duration::from_secs(10));
    let requests = w.sink.requests();
    let lane = w.lanes.read(&w.key).await.unwrap().unwrap();
    let out = w
        .engine()
        .call(
            &call,
            Target::Saved(&lane, &w.sink),
            &w.events,
            Instant::now(),
        )
        .await
        .unwrap();
    assert_eq!(out.delivered, 0);
    assert_eq!(
        w.sink.requests(),
        requests,
        "nothing sent without its budget"
    );
    assert_eq!(w.lane().state, LaneState::Retrying);
    // A fresh call, due at once, goes on.
    let out = w.run_due_call().await;
    assert_eq!(out.entered, Some(LaneState::Delivering));
    assert_eq!(w.received(), numbered(1..=5));
}

#[tokio::test(start_paused = true)]
async fn a_live_send_cut_short_by_its_batch_is_no_outage_and_its_call_tries_at_once() {
    // GIVEN a destination that does not answer, whose turn in the batch leaves it half of its
    // budget
    let mut w = World::new();
    w.sink.answer(Answer::TimeOut);
    let events = w.arrive(3);
    let lane = w.lane();
    let half = Instant::now() + w.engine().policy.budget / 2;
    let out = w
        .engine()
        .live(&w.key, &lane, events, &w.sink, half)
        .await
        .unwrap();
    // THEN its events are owed to a call due at once, not to a retrying lane's backoff
    assert_eq!((out.delivered, out.owed), (0, 3));
    assert_eq!(w.lane().state, LaneState::CatchingUp);
    let (call, delay) = w.pending_call();
    assert_eq!(delay, Duration::ZERO);
    // AND that call, with all its time, delivers them once the destination answers
    w.sink.answer(Answer::Take);
    w.call(&call).await;
    assert_eq!(w.received(), numbered(1..=3));
    assert_eq!(w.lane().state, LaneState::Delivering);
    // AND with its whole budget the same silence is an outage
    w.sink.answer(Answer::TimeOut);
    let events = w.arrive(1);
    let lane = w.lane();
    let full = Instant::now() + w.engine().policy.budget;
    w.engine()
        .live(&w.key, &lane, events, &w.sink, full)
        .await
        .unwrap();
    assert_eq!(w.lane().state, LaneState::Retrying);
}

#[tokio::test(start_paused = true)]
async fn a_probe_gives_a_destination_slow_to_answer_a_page_of_catching_ups_time() {
    // GIVEN a lane retrying after an outage, its destination back but answering in twice a
    // live delivery's budget
    let mut w = World::new();
    w.sink.answer(Answer::Fail(outage()));
    w.live(1).await;
    assert_eq!(w.lane().state, LaneState::Retrying);
    let policy = w.engine().policy.clone();
    w.sink.answer(Answer::Slow(policy.budget * 2));
    // WHEN its probe comes
    w.run_due_call().await;
    // THEN the probe waits for it, as a page of catching up would: slow is not down
    assert_eq!(w.received(), numbered(1..=1));
    assert_ne!(w.lane().state, LaneState::Retrying);
}

#[tokio::test(start_paused = true)]
async fn a_page_of_catching_up_waits_for_an_invocation_with_its_own_budget() {
    // GIVEN a lane catching up: its live send was cut short by its batch
    let mut w = World::new();
    w.sink.answer(Answer::TimeOut);
    let events = w.arrive(3);
    let lane = w.lane();
    let half = Instant::now() + w.engine().policy.budget / 2;
    w.engine()
        .live(&w.key, &lane, events, &w.sink, half)
        .await
        .unwrap();
    assert_eq!(w.lane().state, LaneState::CatchingUp);
    let (call, _) = w.pending_call();
    // WHEN its call comes with more time left than a live send's budget, less than a page's
    w.sink.answer(Answer::Take);
    let policy = w.engine().policy.clone();
    let short = Instant::now() + (policy.budget + policy.catch_up_budget) / 2;
    let lane = w.lanes.read(&call.lane).await.unwrap().unwrap();
    w.engine()
        .call(&call, Target::Saved(&lane, &w.sink), &w.events, short)
        .await
        .unwrap();
    // THEN it sends nothing (a destination slow to take a page is not blamed for the
    // invocation's end) and hands on to a fresh call due at once, still catching up
    assert!(w.received().is_empty());
    assert_eq!(w.lane().state, LaneState::CatchingUp);
    let (next, delay) = w.pending_call();
    assert_eq!(delay, Duration::ZERO);
    // AND that call, with its whole budget, delivers them
    w.call(&next).await;
    assert_eq!(w.received(), numbered(1..=3));
    assert_eq!(w.lane().state, LaneState::Delivering);
}

#[tokio::test(start_paused = true)]
async fn a_page_whose_reads_took_its_time_is_handed_on_not_sent_short() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(outage()));
    w.live(3).await;
    let (call, _) = w.pending_call();
    w.clock.advance(Duration::from_millis(
        (call.due_ms - w.clock.now_ms()) as u64,
    ));
    // Its probe starts with time enough, but reading the events (the table throttled) takes
    // most of it.
    w.sink.answer(Answer::Take);
    *w.events.reads_take.lock().unwrap() = Duration::from_secs(28);
    let deadline = Instant::now() + w.policy.catch_up_budget;
    let lane = w.lanes.read(&call.lane).await.unwrap().unwrap();
    w.engine()
        .call(&call, Target::Saved(&lane, &w.sink), &w.events, deadline)
        .await
        .unwrap();
    // Not sent with what is left, and no trouble of the destination's: a fresh call, at once.
    assert_eq!(w.sink.requests(), 1, "the live send's only");
    assert_eq!(w.lane().state, LaneState::Retrying);
    let (next, delay) = w.pending_call();
    assert_eq!(delay, Duration::ZERO);
    *w.events.reads_take.lock().unwrap() = Duration::ZERO;
    w.call(&next).await;
    assert_eq!(w.received(), numbered(1..=3));
    assert_eq!(w.lane().state, LaneState::Delivering);
}

#[tokio::test(start_paused = true)]
async fn a_slow_destination_is_served_by_its_own_calls_until_it_is_quick_again() {
    // GIVEN a destination that takes every event, but twice as slowly as a batch can wait
    let mut w = World::new();
    let policy = w.engine().policy.clone();
    w.sink.answer(Answer::Slow(policy.slow_after * 2));
    // WHEN a live batch reaches it
    let out = w.live(3).await;
    // THEN the batch is delivered, and the lane is set aside until its call, a hold away
    assert_eq!(out.delivered, 3);
    assert_eq!(out.entered, Some(LaneState::CatchingUp));
    assert!(w.lane().reason.unwrap().contains("took 2.0 s"));
    // AND the next live batches cost their batch no request: they are owed to that call
    let requests = w.sink.requests();
    let out = w.live(2).await;
    assert_eq!((out.delivered, out.owed), (0, 2));
    assert_eq!(w.sink.requests(), requests);
    let (call, delay) = w.pending_call();
    assert_eq!(delay, policy.slow_hold);
    // AND the call delivers them; the destination is still slow, so the lane stays aside
    w.clock.advance(policy.slow_hold);
    let out = w.call(&call).await;
    assert_eq!((out.delivered, out.entered), (2, None));
    assert_eq!(w.lane().state, LaneState::CatchingUp);
    // AND once a call finds it quick, live delivery resumes
    w.sink.answer(Answer::Take);
    assert_eq!(w.live(1).await.owed, 1);
    let out = w.run_due_call().await;
    assert_eq!(
        (out.delivered, out.entered),
        (1, Some(LaneState::Delivering))
    );
    assert_eq!(w.live(1).await.delivered, 1);
    assert_eq!(w.received(), numbered(1..=7));
    assert!(w.lanes.get(&w.key).owed.is_empty());
}

#[test]
fn slowness_is_judged_per_mebibyte_sent() {
    let policy = Policy::default();
    let second = policy.slow_after;
    // A live batch of a few events: a second is the most it may take.
    assert!(!policy.is_slow(second, 3_000));
    assert!(policy.is_slow(second + Duration::from_millis(1), 3_000));
    // A page of catching up of 4 MiB: four.
    assert!(!policy.is_slow(second * 4, 4 << 20));
    assert!(policy.is_slow(second * 4 + Duration::from_millis(1), 4 << 20));
    // Nothing sent is judged as one MiB.
    assert!(!policy.is_slow(second, 0));
}

#[tokio::test(start_paused = true)]
async fn a_slow_destination_that_gets_nothing_while_aside_delivers_live_again() {
    let mut w = World::new();
    w.sink
        .answer(Answer::Slow(w.engine().policy.slow_after * 2));
    w.live(1).await;
    assert_eq!(w.lane().state, LaneState::CatchingUp);
    // Nothing arrives while it is aside: its call has nothing to judge it by.
    let out = w.run_due_call().await;
    assert_eq!(
        (out.delivered, out.entered),
        (0, Some(LaneState::Delivering))
    );
    // AND a destination quick enough never leaves live delivery
    w.sink
        .answer(Answer::Slow(w.engine().policy.slow_after / 2));
    let out = w.live(2).await;
    assert_eq!((out.delivered, out.entered), (2, None));
    assert_eq!(w.lane().state, LaneState::Delivering);
}

#[tokio::test(start_paused = true)]
async fn a_live_search_for_rejected_events_that_holds_the_shard_sets_the_lane_aside() {
    let mut w = World::new();
    let slow_after = w.engine().policy.slow_after;
    // The search took its requests one after another: the shard waited for them all.
    w.sink.answer(Answer::SlowToReject(slow_after * 2));
    let out = w.live(2).await;
    assert_eq!(
        (out.delivered, out.rejected, out.entered),
        (1, 1, Some(LaneState::CatchingUp))
    );
    assert_eq!(w.lane().state, LaneState::CatchingUp);
    // Live events meanwhile are owed to its calls, not sent.
    let out = w.live(1).await;
    assert_eq!((out.delivered, out.owed), (0, 1));
    // Its call, holding no one, may take its time to find what is rejected: the destination
    // is not slow, and the lane delivers live again.
    let out = w.run_due_call().await;
    assert_eq!(
        (out.delivered, out.rejected, out.entered),
        (0, 1, Some(LaneState::Delivering))
    );
    // A quick search stays live.
    w.sink.answer(Answer::SlowToReject(slow_after / 2));
    let out = w.live(2).await;
    assert_eq!((out.delivered, out.rejected, out.entered), (1, 1, None));
    assert_eq!(w.lane().state, LaneState::Delivering);
}

#[tokio::test]
async fn a_live_batch_without_the_budget_left_hands_its_events_to_catching_up() {
    let mut w = World::new();
    let events = w.arrive(3);
    let lane = w.lane();
    let out = w
        .engine()
        .live(&w.key, &lane, events, &w.sink, Instant::now())
        .await
        .unwrap();
    assert_eq!((out.delivered, out.owed), (0, 3));
    assert_eq!(w.sink.requests(), 0);
    assert_eq!(w.lane().state, LaneState::CatchingUp);
    w.run_due_call().await;
    assert_eq!(w.received(), numbered(1..=3));
    assert_eq!(w.lane().state, LaneState::Delivering);
}

#[tokio::test]
async fn a_refused_lane_saved_since_tries_again_even_if_the_saves_call_was_lost() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(refusal()));
    w.live(2).await;
    assert_eq!(w.lane().refused_version, Some(0));
    // The customer saves a working key; the save's own call to try again never comes.
    w.lanes.saved(&w.key);
    w.sink.answer(Answer::Take);
    let out = w.run_due_call().await;
    assert_eq!(out.entered, Some(LaneState::Delivering));
    assert_eq!(w.received(), numbered(1..=2));
}

#[tokio::test]
async fn a_refusal_of_settings_saved_over_meanwhile_leaves_the_new_ones_to_a_call_at_once() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(refusal()));
    // A live batch reads the lane with the old settings; while it sends, the customer saves
    // working ones (the save finds the lane delivering, and calls no one).
    let events = w.arrive(2);
    let read = w.lane();
    w.lanes.saved(&w.key);
    let out = w
        .engine()
        .live(&w.key, &read, events, &w.sink, later())
        .await
        .unwrap();
    // The old settings' refusal is not the new ones': no probe at the longest backoff.
    assert_eq!(w.sink.requests(), 1, "the old settings were tried once");
    assert_eq!(out.entered, Some(LaneState::CatchingUp));
    let lane = w.lane();
    assert_eq!(lane.state, LaneState::CatchingUp, "{lane:?}");
    assert_eq!(lane.refused_version, None);
    assert!(lane.next_attempt_at.unwrap() - w.clock.now_ms() < 1_000);
    w.sink.answer(Answer::Take);
    let out = w.run_due_call().await;
    assert_eq!(out.entered, Some(LaneState::Delivering));
    assert_eq!(w.received(), numbered(1..=2));
}

#[tokio::test]
async fn a_lane_whose_call_was_lost_gets_another_from_the_next_live_batch() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(outage()));
    w.live(1).await;
    // The call is lost (dead-lettered after the service's own trouble).
    w.timers.take();
    w.clock.advance(w.policy.lost_after + w.policy.lease);
    w.live(1).await;
    w.sink.answer(Answer::Take);
    let out = w.run_due_call().await;
    assert_eq!(out.entered, Some(LaneState::Delivering));
    assert_eq!(w.received(), numbered(1..=2));
}

impl World {
    async fn sweep(&self) -> usize {
        self.engine().sweep(100, later()).await.unwrap()
    }
}

#[tokio::test]
async fn a_quiet_lane_whose_call_was_lost_gets_another_from_the_sweep() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(outage()));
    w.live(2).await;
    // The call is lost, and no live event comes to notice.
    w.timers.take();
    w.clock.advance(w.policy.lost_after + w.policy.lease);
    assert_eq!(w.sweep().await, 1);
    w.sink.answer(Answer::Take);
    let out = w.run_due_call().await;
    assert_eq!(out.entered, Some(LaneState::Delivering));
    assert_eq!(w.received(), numbered(1..=2));
    // Healed once: the next sweep finds nothing.
    assert_eq!(w.sweep().await, 0);
}

#[tokio::test]
async fn a_sweep_takes_at_most_its_limit_and_the_next_takes_the_rest() {
    let mut w = World::new();
    let others = [LaneKey::new("org-b", "p"), LaneKey::new("org-c", "p")];
    for other in &others {
        w.lanes.configure(other);
    }
    w.sink.answer(Answer::Fail(outage()));
    for key in [w.key.clone(), others[0].clone(), others[1].clone()] {
        w.key = key;
        w.live(1).await;
    }
    w.timers.take();
    w.clock.advance(w.policy.lost_after + w.policy.lease);
    let engine = w.engine();
    assert_eq!(engine.sweep(2, later()).await.unwrap(), 2);
    assert_eq!(engine.sweep(2, later()).await.unwrap(), 1);
    assert_eq!(engine.sweep(2, later()).await.unwrap(), 0);
    assert_eq!(w.timers.take().len(), 3);
}

#[tokio::test]
async fn a_lane_the_sweep_cannot_read_holds_back_none_after_it() {
    // GIVEN three lanes whose calls were lost, the first of which cannot be read (its
    // organization's partition throttled)
    let mut w = World::new();
    let first = w.key.clone();
    let others = [LaneKey::new("org-b", "p"), LaneKey::new("org-c", "p")];
    for other in &others {
        w.lanes.configure(other);
    }
    w.sink.answer(Answer::Fail(outage()));
    for key in [first.clone(), others[0].clone(), others[1].clone()] {
        w.key = key;
        w.live(1).await;
    }
    w.timers.take();
    w.clock.advance(w.policy.lost_after + w.policy.lease);
    w.lanes.set_unreadable(&first, true);
    // WHEN the sweep runs, THEN the others get their calls again
    assert_eq!(w.sweep().await, 2);
    let mut called: Vec<LaneKey> = w.timers.take().into_iter().map(|(c, _)| c.lane).collect();
    called.sort_by(|a, b| a.organization_id.cmp(&b.organization_id));
    assert_eq!(called, others);
    // AND the first gets its call once it reads again
    w.lanes.set_unreadable(&first, false);
    assert_eq!(w.sweep().await, 1);
}

#[tokio::test]
async fn one_organizations_lanes_that_stay_overdue_never_take_anothers_turn() {
    // GIVEN an organization with five lanes whose calls were lost and that cannot be healed
    // (its partition throttled), all more overdue than another organization's one lost call
    let mut w = World::new();
    let busy: Vec<LaneKey> = (0..5)
        .map(|n| LaneKey::new("org-busy", format!("p-{n}")))
        .collect();
    let quiet = LaneKey::new("org-quiet", "p");
    for key in busy.iter().chain([&quiet]) {
        w.lanes.configure(key);
    }
    w.sink.answer(Answer::Fail(outage()));
    for key in &busy {
        w.key = key.clone();
        w.live(1).await;
        w.lanes.set_unreadable(key, true);
    }
    // Later than any jitter of the first retry interval.
    w.clock.advance(w.policy.max_backoff);
    w.key = quiet.clone();
    w.live(1).await;
    w.timers.take();
    w.clock.advance(w.policy.lost_after + w.policy.lease);
    // WHEN sweeps that take three lanes each run, THEN the other organization's lane gets its
    // call in the first, though it is the least overdue
    let engine = w.engine();
    assert_eq!(engine.sweep(3, later()).await.unwrap(), 1);
    let called: Vec<LaneKey> = w.timers.take().into_iter().map(|(c, _)| c.lane).collect();
    assert_eq!(called, [quiet]);
    // AND the busy organization's lanes get theirs once they read again
    for key in &busy {
        w.lanes.set_unreadable(key, false);
    }
    assert_eq!(engine.sweep(3, later()).await.unwrap(), 3);
    assert_eq!(engine.sweep(3, later()).await.unwrap(), 2);
}

#[tokio::test]
async fn the_sweep_leaves_calls_on_their_way_and_delivering_lanes_alone() {
    let mut w = World::new();
    let delivering = LaneKey::new("org-b", "registry-2");
    w.lanes.configure(&delivering);
    w.sink.answer(Answer::Fail(refusal()));
    w.live(1).await;
    let waiting = w.lane();
    // A refused lane's call, due and not yet late enough to be lost (SQS may be holding it
    // after a failed invocation), is left alone.
    let due = waiting.next_attempt_at.unwrap() - w.clock.now_ms();
    w.clock
        .advance(Duration::from_millis(due as u64) + w.policy.lost_after);
    assert_eq!(w.sweep().await, 0);
    assert_eq!(w.lane(), waiting);
    assert_eq!(w.timers.take().len(), 1);
    assert_eq!(w.lanes.get(&delivering).lane, Lane::default());
    // Later still, the call counts as lost: the refused lane's attempt is sent again, due now,
    // and the lane stays refused.
    w.clock.advance(Duration::from_millis(1));
    assert_eq!(w.sweep().await, 1);
    assert_eq!(w.lane().state, LaneState::Refused);
    assert_eq!(w.lane().attempt, waiting.attempt);
    assert_eq!(w.lane().next_attempt_at, Some(w.clock.now_ms()));
}

#[tokio::test]
async fn a_call_only_late_still_counts_after_the_sweep_sent_it_again() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(outage()));
    w.live(2).await;
    // The call waits on the lanes queue behind other lanes' calls (their concurrency limit
    // reached) for longer than a lost call would: the sweep sends it again.
    let (late, _) = w.pending_call();
    w.clock.advance(w.policy.lost_after + w.policy.lease);
    assert_eq!(w.sweep().await, 1);
    let (again, _) = w.pending_call();
    assert_eq!(again.attempt, late.attempt);
    // The late one comes first and does the attempt; its copy then finds it taken.
    w.sink.answer(Answer::Take);
    assert_eq!(w.call(&late).await.entered, Some(LaneState::Delivering));
    w.timers.take();
    assert_eq!(
        w.call(&again).await.skipped,
        Some("not expected yet: looks again shortly")
    );
    let (looked, _) = w.timers.take().pop().unwrap();
    assert_eq!(
        w.call(&looked).await.skipped,
        Some("another attempt replaced it")
    );
    assert_eq!(w.received(), numbered(1..=2));
}

#[tokio::test]
async fn live_events_of_a_removed_destination_are_neither_owed_nor_an_error() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(outage()));
    w.live(1).await;
    let lane = w.lane();
    w.lanes.unconfigure(&w.key);
    let events = w.arrive(2);
    let out = w
        .engine()
        .live(&w.key, &lane, events, &w.sink, later())
        .await
        .unwrap();
    assert_eq!(out.skipped, Some("its destination was removed"));
}

#[tokio::test]
async fn an_owed_event_no_longer_stored_is_listed_not_dropped() {
    let mut w = World::new();
    w.sink.answer(Answer::Fail(outage()));
    let events = w.arrive(2);
    // The first is gone from the events table by the time the lane catches up.
    w.events
        .events
        .lock()
        .unwrap()
        .remove(&events[0].0.sort_key);
    let lane = w.lane();
    w.engine()
        .live(&w.key, &lane, events, &w.sink, later())
        .await
        .unwrap();
    w.sink.answer(Answer::Take);
    w.run_due_call().await;
    assert_eq!(w.received(), numbered(2..=2));
    let failures = w.lanes.get(&w.key).failures;
    assert_eq!(failures.len(), 1);
    assert!(failures[0].1.contains("could not be read back"));
    assert_eq!(w.lane().state, LaneState::Delivering);
}

#[tokio::test]
async fn pages_of_catching_up_are_cut_by_bytes() {
    let mut w = World::new();
    w.policy.probe_page = 1;
    let one = w.arrive(1)[0].1.json().len() as u64;
    // Room for two events a page.
    w.policy.page_bytes = one * 2 + 1;
    w.sink.answer(Answer::Fail(outage()));
    w.live(6).await;
    w.sink.answer(Answer::Take);
    w.run_due_call().await;
    // The probe, then pages of two.
    assert_eq!(w.sink.requests(), 1 + 1 + 3);
    assert_eq!(w.received(), numbered(2..=7));
}
