//! Lanes settled: the stream function's queues run as time passes until every lane delivers
//! and owes nothing.

use super::*;

/// Runs the stream function's queues as time passes (lanes schedule their calls as delayed
/// messages) until every lane delivers and owes nothing, or `limit` passes. Whether they did.
pub async fn settle_lanes(
    stack: &Stack,
    stream: &Stream,
    faults: Option<&Faulty<'_>>,
    limit: Duration,
) -> bool {
    settle(stack, stream, faults, limit, false).await
}

/// [`settle_lanes`], and nothing left on the deferred queue either: events deferred by the
/// service's own trouble (which no lane counts as owed) have come back and been handed on.
pub async fn settle_lanes_and_deferrals(
    stack: &Stack,
    stream: &Stream,
    faults: Option<&Faulty<'_>>,
    limit: Duration,
) -> bool {
    settle(stack, stream, faults, limit, true).await
}

async fn settle(
    stack: &Stack,
    stream: &Stream,
    faults: Option<&Faulty<'_>>,
    limit: Duration,
    deferrals: bool,
) -> bool {
    let started = std::time::Instant::now();
    loop {
        drain_stream_queues_with(stack, stream, faults).await;
        if lanes_settled(stack).await && (!deferrals || stack.waiting("DeferredQueue").await == 0) {
            return true;
        }
        if started.elapsed() > limit {
            return false;
        }
        // Delayed messages become visible as real time passes.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A configured lane as the harness watches it: its project's item and whether any event is
/// still owed to it.
struct WatchedLane {
    sort_key: String,
    lane: audit_log::lane::Lane,
    owes: bool,
}

/// Every configured lane (owed items of a project whose configuration was deleted are not
/// watched: no run here deletes one), read without walking what lanes owe: the project items
/// through a filtered scan, then each lane's oldest owed event as health reads it. (Scanning
/// the whole table every tick took most of a minute per look once tens of thousands of
/// events were owed, slower than the lanes paid them back.)
async fn watched_lanes(stack: &Stack) -> Vec<WatchedLane> {
    use audit_log::streaming::attr::{ORGANIZATION_ID, PROJECT_ID, SORT_KEY};
    let text = |item: &HashMap<String, AttributeValue>, name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    };
    let projects: Vec<HashMap<String, AttributeValue>> = stack
        .dynamodb
        .scan()
        .table_name(&stack.config_table)
        .filter_expression("begins_with(#sk, :project)")
        .expression_attribute_names("#sk", SORT_KEY)
        .expression_attribute_values(":project", AttributeValue::S("project#".into()))
        .into_paginator()
        .items()
        .send()
        .collect::<Result<_, _>>()
        .await
        .expect("scan the configured projects");
    let configs =
        audit_log::streaming::ConfigTable::new(stack.dynamodb.clone(), &stack.config_table);
    let mut out = Vec::with_capacity(projects.len());
    for item in projects {
        let lane =
            audit_log::lane::LaneKey::new(text(&item, ORGANIZATION_ID), text(&item, PROJECT_ID));
        let state = audit_log::streaming::lane_of(&item);
        let span = audit_log::lane::OwedSpan::of(&state);
        let oldest = audit_log::lane::LaneStore::oldest_owed_at(&configs, &lane, span)
            .await
            .expect("query a lane's oldest owed event");
        out.push(WatchedLane {
            owes: oldest.is_some(),
            lane: state,
            sort_key: text(&item, SORT_KEY),
        });
    }
    out
}

/// The lanes that do not deliver, or owe events: `project state (owed n)`.
pub async fn lanes_unsettled(stack: &Stack) -> Vec<String> {
    watched_lanes(stack)
        .await
        .into_iter()
        .filter(|w| w.owes || w.lane.state != audit_log::lane::LaneState::Delivering)
        .map(|w| {
            format!(
                "{} {:?} (owes events: {}, owed count {}, next attempt {:?})",
                w.sort_key, w.lane.state, w.owes, w.lane.owed, w.lane.next_attempt_at
            )
        })
        .collect()
}

/// Every configured lane delivers and nothing is owed.
pub async fn lanes_settled(stack: &Stack) -> bool {
    lanes_unsettled(stack).await.is_empty()
}

/// Lane timings for a run whose outages are `time_scale` times shorter than in AWS.
pub fn compressed_lanes(time_scale: u32) -> audit_log::lane::Policy {
    let request = audit_log::destination::datadog::REQUEST_TIMEOUT * 2 / time_scale;
    audit_log::lane::Policy {
        first_backoff: Duration::from_millis(500),
        budget: request,
        catch_up_budget: request * 2,
        // The emulator, not the destination, is what answers slowly under load here.
        slow_after: Duration::MAX,
        lease: Duration::from_secs(120) / time_scale,
        lost_after: audit_log::lane::Policy::default().lost_after / time_scale,
        housekeeping: Duration::from_secs(900) / time_scale,
        // The lanes queue delays in whole seconds.
        deferral: Duration::from_secs(1),
        ..audit_log::lane::Policy::new(
            audit_log::lane::Policy::default().retry_window,
            Duration::from_secs(2),
        )
    }
}
