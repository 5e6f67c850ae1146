//! Live delivery through the lanes, over its ports: where configurations and lanes are kept,
//! the lanes' timers, stored events and the destinations. The function runs it over the
//! configuration table, the lanes queue, the events table and the saved destinations; unit
//! tests run it over the library's in-memory doubles.

use crate::records::{Attribute, StreamRecord};
use crate::sink::SavedDestinations;
use audit_log::AuditEvent;
use audit_log::clock::Clock;
use audit_log::destination::Destinations;
use audit_log::lane::timers::SqsTimers;
use audit_log::lane::{EventSource, LaneCall, LaneKey, LaneStore, Lanes, Policy, Target, Timers};
use audit_log::message::Unreadable;
use audit_log::store::{EventTable, StoredKey, project_of};
use audit_log::streaming::{ConfigError, ConfigTable, Configurations};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::time::Instant;

/// Delivered or owed records remembered per container, to skip them when Lambda retries a
/// batch after the service's own trouble.
const HANDLED_MEMORY: u64 = 200_000;
/// Lanes one sweep gives a new call: lost calls are rare (the service's own trouble), and the
/// next sweep takes the rest.
const SWEPT_AT_MOST: usize = 1_000;
/// Destinations served at once, all within one budget. A destination whose turn comes late
/// gets little of it and owes its events to its lane's call, which waits among the lanes'
/// calls: so many that an outage of many destinations at once leaves the healthy ones of the
/// batch their whole turn, few enough for Lambda's 1,024 file descriptors (a destination
/// served holds a connection or two at once: the AWS clients share one pool per host,
/// `sdk::shared_https_client`, and Datadog's requests another).
const CONCURRENT_DESTINATIONS: usize = 128;
/// How much longer than the batch's budget a project's configuration read may take (its
/// organization's partition throttled, the SDK retrying) before its events are deferred
/// instead: the service's trouble with one organization's items holds the shard no longer.
const GROUP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

pub struct Delivery<C = ConfigTable, T = SqsTimers, E = EventTable, D = SavedDestinations> {
    pub(crate) configs: C,
    pub(crate) timers: T,
    pub(crate) events: E,
    pub(crate) destinations: D,
    pub(crate) policy: Policy,
    pub(crate) clock: Arc<dyn Clock>,
    handled: moka::sync::Cache<String, ()>,
}

/// The service's own trouble handing a project's events on: why, and the events it left to
/// hand (`None`: all it was given, the unreadable ones too).
pub(crate) struct Trouble {
    pub(crate) reason: String,
    pub(crate) left: Option<Vec<StoredKey>>,
}

impl Trouble {
    pub(crate) fn all(reason: String) -> Self {
        Self { reason, left: None }
    }
}

/// A project's records on their way out: the events, those stored that cannot be read (with
/// why), and where each record sits in the batch (the answer names it if the service fails
/// it), by its stream id (remembered once handled).
#[derive(Default)]
struct Pending {
    events: Vec<(StoredKey, AuditEvent)>,
    unreadable: Vec<Unreadable>,
    records: Vec<(usize, String)>,
}

impl<C, T, E, D> Delivery<C, T, E, D>
where
    C: Configurations + LaneStore,
    T: Timers,
    E: EventSource,
    D: Destinations,
{
    pub fn new(
        configs: C,
        timers: T,
        events: E,
        destinations: D,
        policy: Policy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            configs,
            timers,
            events,
            destinations,
            policy,
            clock,
            handled: moka::sync::Cache::new(HANDLED_MEMORY),
        }
    }

    fn lanes(&self) -> Lanes<'_, C, T, dyn Clock> {
        Lanes {
            store: &self.configs,
            timers: &self.timers,
            clock: &*self.clock,
            policy: &self.policy,
        }
    }

    /// Hands one batch of stream records to their destinations' lanes. Only the service's own
    /// trouble reports a record for Lambda to retry from.
    pub async fn deliver(
        &self,
        records: &[StreamRecord],
        deadline: Instant,
    ) -> DynamoDbEventResponse {
        let mut groups: Vec<(LaneKey, Pending)> = Vec::new();
        let mut index: HashMap<LaneKey, usize> = HashMap::new();
        let mut skipped = 0;
        for (position, record) in records.iter().enumerate() {
            if record.event_name != "INSERT" || self.handled.contains_key(&record.event_id) {
                skipped += 1;
                continue;
            }
            let (lane, found) = match event_of(record) {
                Ok((event, key)) => (
                    LaneKey::new(event.organization_id(), event.project_id()),
                    Ok((key, event)),
                ),
                Err(reason) => match stored_at(record) {
                    // Listed as its project's failure, never silently dropped: a replay brings
                    // it once this function reads it (one older than the capture that packed
                    // it is replaced at the next deploy). Reporting it to Lambda instead would
                    // hold the whole shard, every tenant on it, until the deploy.
                    Ok((lane, event)) => (lane, Err(Unreadable { event, reason })),
                    Err(_) => {
                        tracing::error!(event_id = record.event_id, %reason, "record holds no stored event; skipped");
                        continue;
                    }
                },
            };
            let slot = *index.entry(lane.clone()).or_insert_with(|| {
                groups.push((lane, Pending::default()));
                groups.len() - 1
            });
            let pending = &mut groups[slot].1;
            match found {
                Ok(event) => pending.events.push(event),
                Err(unreadable) => pending.unreadable.push(unreadable),
            }
            pending.records.push((position, record.event_id.clone()));
        }
        // One budget for the whole batch, whatever its number of destinations: those whose
        // turn comes too late owe their events to their lanes' own calls, so the shard (every
        // tenant on it) waits at most one budget however many destinations hang.
        let live_until = deadline.min(Instant::now() + self.policy.budget);
        let cut_at = deadline.min(live_until + GROUP_GRACE);
        let failed: Vec<usize> = futures::stream::iter(groups)
            .map(|(lane, pending)| self.deliver_group(lane, pending, records, (live_until, cut_at)))
            .buffer_unordered(CONCURRENT_DESTINATIONS)
            .flat_map(futures::stream::iter)
            .collect()
            .await;
        let first_failed = failed.iter().copied().min();
        let mut response = DynamoDbEventResponse::default();
        if let Some(position) = first_failed {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = records[position].change.sequence_number.clone();
            response.batch_item_failures.push(failure);
        }
        tracing::info!(
            records = records.len(),
            skipped,
            failed = failed.len(),
            retry_from = first_failed,
            "stream batch done"
        );
        response
    }

    /// One project's records, through its lane; returns the batch positions the service could
    /// not handle. Its own trouble with one project (the organization's share of a table
    /// throttled, say) defers that project's events to the deferred queue, so the shard, every
    /// tenant on it, moves on; only when the queue refuses them too is Lambda to retry. Sends
    /// stop at `live_until`, and a configuration read still going at `cut_at` is cut short.
    async fn deliver_group(
        &self,
        lane: LaneKey,
        pending: Pending,
        batch: &[StreamRecord],
        (live_until, cut_at): (Instant, Instant),
    ) -> Vec<usize> {
        let Pending {
            events,
            unreadable,
            records,
        } = pending;
        // Kept aside (there are seldom any) in case they are deferred.
        let unreadable_too = unreadable.clone();
        let Err(trouble) = self
            .hand(&lane, events, unreadable, (live_until, cut_at))
            .await
        else {
            self.remember(records);
            return Vec::new();
        };
        let (events, unreadable) = match trouble.left {
            Some(left) => (left, Vec::new()),
            None => {
                let events = records
                    .iter()
                    .filter_map(|(position, _)| stored_key(&batch[*position]).ok())
                    .filter(|key| !unreadable_too.iter().any(|u| &u.event == key))
                    .collect();
                (events, unreadable_too)
            }
        };
        let first = (self.clock.now_ms(), 0);
        if self
            .defer(&lane, (&events, &unreadable), first, &trouble.reason)
            .await
        {
            self.remember(records);
            return Vec::new();
        }
        records.iter().map(|(position, _)| *position).collect()
    }

    /// Hands a project's events to its lane, and lists those stored that cannot be read as its
    /// failures. The service's own trouble, logged, when it could not. Sends stop at
    /// `deadline`; a configuration read the SDK is still retrying at `read_until` is the
    /// service's trouble (cut there, it writes nothing: the lane's writes are never cut).
    pub(crate) async fn hand(
        &self,
        lane: &LaneKey,
        events: Vec<(StoredKey, AuditEvent)>,
        unreadable: Vec<Unreadable>,
        (deadline, read_until): (Instant, Instant),
    ) -> Result<(), Trouble> {
        let (org, project) = (&lane.organization_id, &lane.project_id);
        // Read at every batch: a save takes effect with the next delivery after it.
        let read = tokio::time::timeout_at(read_until, self.configs.configuration(org, project))
            .await
            .unwrap_or_else(|_| {
                Err(ConfigError::Store(
                    "the read outlasted the batch's budget".into(),
                ))
            });
        let config = match read {
            Ok(Some(config)) => config,
            Ok(None) => {
                tracing::info!(
                    organization_id = org,
                    project_id = project,
                    events = events.len(),
                    "no destination configured; events stay stored"
                );
                return Ok(());
            }
            Err(ConfigError::Corrupt(what)) => {
                // Damaged (the service's own trouble, a deploy out of step): handing the events
                // again cannot mend it, and would hold them until they expired. Listed as the
                // project's failures instead, for a replay.
                let keys: Vec<StoredKey> = events
                    .iter()
                    .map(|(key, _)| key.clone())
                    .chain(unreadable.iter().map(|u| u.event.clone()))
                    .collect();
                let reason = damaged(what);
                tracing::error!(organization_id = org, project_id = project, %reason, events = keys.len(), "configuration damaged; events listed as failures");
                return self
                    .list_failures(lane, &keys, &reason)
                    .await
                    .map_err(Trouble::all);
            }
            Err(e) => {
                let trouble = format!("could not read the streaming configuration: {e}");
                tracing::error!(organization_id = org, project_id = project, %trouble, "events not handed to their lane");
                return Err(Trouble::all(trouble));
            }
        };
        // One write per reason: a deploy out of step makes a whole batch unreadable alike.
        let mut by_reason: HashMap<&str, Vec<StoredKey>> = HashMap::new();
        for Unreadable { event: key, reason } in &unreadable {
            by_reason.entry(reason).or_default().push(key.clone());
        }
        for (reason, keys) in by_reason {
            tracing::error!(organization_id = org, project_id = project, %reason, events = keys.len(), "stored events unreadable; listed as failures");
            let reason = format!("the stored event could not be read: {reason}");
            self.list_failures(lane, &keys, &reason)
                .await
                .map_err(Trouble::all)?;
        }
        if events.is_empty() {
            return Ok(());
        }
        let sink = self.destinations.sink(&config);
        match self
            .lanes()
            .live(lane, &config.lane, events, &*sink, deadline)
            .await
        {
            Ok(outcome) => {
                tracing::info!(
                    organization_id = org,
                    project_id = project,
                    provider = config.destination.provider().as_str(),
                    delivered = outcome.delivered,
                    owed = outcome.owed,
                    rejected = outcome.rejected,
                    lane = outcome.entered.unwrap_or(config.lane.state).as_str(),
                    "events handed to their lane"
                );
                Ok(())
            }
            Err(unhandled) => {
                let trouble = format!(
                    "could not hand the events to their lane: {}",
                    unhandled.error
                );
                tracing::error!(organization_id = org, project_id = project, %trouble, unhandled = unhandled.events.len(), "events not handed to their lane");
                Err(Trouble {
                    reason: trouble,
                    left: Some(unhandled.events),
                })
            }
        }
    }

    /// Lists events as the project's failures, for a replay; the trouble (logged) when the
    /// table refused.
    async fn list_failures(
        &self,
        lane: &LaneKey,
        keys: &[StoredKey],
        reason: &str,
    ) -> Result<(), String> {
        self.configs
            .record_failures(lane, keys, reason, self.clock.now())
            .await
            .map_err(|e| {
                let trouble = format!("could not list events as failures: {e}");
                tracing::error!(organization_id = lane.organization_id, project_id = lane.project_id, %trouble, events = keys.len(), "events not listed");
                trouble
            })
    }

    /// Records handled for good, skipped when Lambda hands them again.
    fn remember(&self, records: Vec<(usize, String)>) {
        for (_, event_id) in records {
            // A record read back without an id (`exhausted`) must not pass for another.
            if !event_id.is_empty() {
                self.handled.insert(event_id, ());
            }
        }
    }

    /// The periodic sweep: lanes whose scheduled call never came get another.
    pub async fn sweep(&self, deadline: Instant) -> Result<usize, String> {
        let healed = self
            .lanes()
            .sweep(SWEPT_AT_MOST, deadline)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(lanes = healed, "lanes swept");
        Ok(healed)
    }

    /// A lane's scheduled call: a probe, a page of catching up, or housekeeping.
    pub async fn run_lane_call(&self, call: &LaneCall, deadline: Instant) -> Result<(), String> {
        let key = &call.lane;
        let read_ms = self.clock.now_ms();
        let read = self
            .configs
            .configuration(&key.organization_id, &key.project_id)
            .await;
        let (config, damage) = match read {
            Err(ConfigError::Corrupt(what)) => (None, Some(damaged(what))),
            read => (read.map_err(|e| e.to_string())?, None),
        };
        let sink = config.as_ref().map(|config| self.destinations.sink(config));
        let target = match (&config, sink.as_deref(), damage) {
            (_, _, Some(reason)) => Target::Damaged { reason },
            (Some(config), Some(sink), None) => Target::Saved(&config.lane, sink),
            _ => Target::Removed { read_ms },
        };
        let outcome = self
            .lanes()
            .call(call, target, &self.events, deadline)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(
            organization_id = key.organization_id,
            project_id = key.project_id,
            delivered = outcome.delivered,
            expired = outcome.expired,
            rejected = outcome.rejected,
            lane = outcome.entered.map(|s| s.as_str()),
            skipped = outcome.skipped,
            "lane call done"
        );
        Ok(())
    }
}

/// Why a project's events are listed as failures while its configuration item is damaged
/// (`what` of it could not be read), and what to do.
fn damaged(what: &str) -> String {
    format!(
        "the service could not read the streaming configuration (its {what}); the events are \
         kept: replay them once it reads again"
    )
}

/// The project and key of the stored event a record names, read from its keys alone.
fn stored_at(record: &StreamRecord) -> Result<(LaneKey, StoredKey), String> {
    let Some(Attribute::S(pk)) = &record.change.new_image.partition_key else {
        return Err("the stored event has no partition key".into());
    };
    let (organization_id, project_id) =
        project_of(pk).ok_or("the stored event's partition key names no project")?;
    Ok((
        LaneKey::new(organization_id, project_id),
        stored_key(record)?,
    ))
}

/// Where a record's stored event is kept: its sort key and TTL.
fn stored_key(record: &StreamRecord) -> Result<StoredKey, String> {
    let image = &record.change.new_image;
    let expires_at = match &image.expires_at {
        Some(Attribute::N(n)) => n
            .parse()
            .map_err(|_| "the stored event's TTL is not a number")?,
        _ => return Err("the stored event has no TTL".into()),
    };
    let sort_key = match &image.sort_key {
        Some(Attribute::S(s)) => s,
        _ => {
            return Err(format!(
                "the stored event has no `{}`",
                audit_log::store::attr::SORT_KEY
            ));
        }
    };
    StoredKey::new(sort_key, expires_at)
        .ok_or_else(|| "the stored event's sort key names no message".into())
}

/// The audit event a stream record's new image holds (known by its stable id), and where it
/// is stored. This runs for every event delivered.
pub fn event_of(record: &StreamRecord) -> Result<(AuditEvent, StoredKey), String> {
    let key = stored_key(record)?;
    let image = &record.change.new_image;
    let event = match &image.event {
        Some(Attribute::B(packed)) => AuditEvent::from_stored(
            audit_log::store::codec::unpack(packed).map_err(|e| e.to_string())?,
        ),
        // Items written before events were packed.
        Some(Attribute::S(json)) => AuditEvent::from_stored(json.clone()),
        Some(Attribute::N(_) | Attribute::Other) => {
            return Err("the stored event's `event` is neither packed bytes nor text".into());
        }
        None => return Err("the stored event has no `event`".into()),
    }
    .map_err(|e| e.to_string())?;
    Ok((event.with_id(key.message_id.clone()), key))
}

mod deferred;
#[cfg(test)]
mod tests;
