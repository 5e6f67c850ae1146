//! The configuration table in memory, for unit tests of the handlers without an emulator: saved
//! configurations with their versions, External IDs, rate-limit counters, connection tests,
//! failures and replays, beside the lanes of [`MemoryLanes`], which it extends.

use super::deletion::holds;
use super::exports::{EXPORT_STALE_AFTER_SECONDS, Export, ExportState, Exports, RUNNING_EXPORTS};
use super::{
    ConfigError, Configurations, ConnectionTests, DELETION_MARK_LAPSE, Deletion, FailureLog,
    FailureRecord, Health, NewConfig, Organizations, RateLimit, Replay, ReplayState, Replays,
    StreamingConfig, TestRecord, new_external_id, replays::is_fresh,
};
use crate::clock::seconds_text;
use crate::destination::{DatadogSettings, DatadogSite, Destination};
use crate::lane::memory::{MemoryLanes, lock};
use crate::lane::{Lane, LaneKey};
use crate::store::StoredKey;
use std::collections::{BTreeMap, HashMap, HashSet};
use time::OffsetDateTime;

/// What the configuration table keeps besides lanes.
#[derive(Debug, Default)]
pub(crate) struct Table {
    saved: HashMap<LaneKey, StreamingConfig>,
    external_ids: HashMap<String, String>,
    /// Uses by (organization, what, window).
    slots: HashMap<(String, &'static str, i64), u32>,
    /// Oldest first.
    tests: HashMap<LaneKey, Vec<TestRecord>>,
    /// By event sort key.
    failures: HashMap<LaneKey, BTreeMap<String, FailureRecord>>,
    replays: HashMap<(LaneKey, String), Replay>,
    /// The running replay's id, its heartbeat (epoch seconds), and whether it waits on a pause.
    locks: HashMap<LaneKey, (String, i64, bool)>,
    /// Projects whose next saves other saves beat to the table, and how many of them.
    raced: HashMap<LaneKey, usize>,
    /// Projects whose next save lands but is answered as a retry of it would be.
    unanswered: HashSet<LaneKey>,
    /// Projects whose next save fails as an attempt cut short does: not written (yet).
    cut_short: HashSet<LaneKey>,
    /// Projects whose configuration becomes unreadable after this many more reads.
    reads_left: HashMap<LaneKey, usize>,
    /// The version of each project's last deleted configuration.
    removed: HashMap<LaneKey, u64>,
    /// Marks of deletions under way: their deletions, and until when (epoch seconds) it holds.
    deleting: HashMap<LaneKey, (Vec<Deletion>, i64)>,
    /// Projects whose next delete finds that a save landed since the caller read.
    raced_deletes: HashSet<LaneKey>,
    exports: HashMap<(LaneKey, String), Export>,
    /// Running exports' ids and heartbeats, by organization.
    export_slots: HashMap<String, Vec<(String, i64)>>,
}

impl MemoryLanes {
    /// The next save of the project loses a race: another save lands between its read and its
    /// write.
    pub fn race_next_save(&self, key: &LaneKey) {
        self.race_next_saves(key, 1);
    }

    /// The project's next `saves` saves each lose a race.
    pub fn race_next_saves(&self, key: &LaneKey, saves: usize) {
        lock(&self.table).raced.insert(key.clone(), saves);
    }

    /// The project's next save lands, but its answer is lost and the SDK's retry of it meets
    /// its own write: a version mismatch.
    pub fn lose_next_save_answer(&self, key: &LaneKey) {
        lock(&self.table).unanswered.insert(key.clone());
    }

    /// The project's configuration reads `reads` more times, then its table fails (as
    /// [`MemoryLanes::set_unreadable`]): a failure in the middle of a request.
    pub fn unreadable_after(&self, key: &LaneKey, reads: usize) {
        lock(&self.table).reads_left.insert(key.clone(), reads);
    }

    /// The project's next save fails without an answer (its attempt cut short), and has not
    /// been written when the caller looks.
    pub fn cut_next_save_short(&self, key: &LaneKey) {
        lock(&self.table).cut_short.insert(key.clone());
    }

    /// A save lands between the caller's read and the project's next delete.
    pub fn race_next_delete(&self, key: &LaneKey) {
        lock(&self.table).raced_deletes.insert(key.clone());
    }

    /// When to come back, if a deletion's mark holds at `now`.
    pub fn deleting(&self, key: &LaneKey, now: OffsetDateTime) -> Option<u64> {
        lock(&self.table)
            .deleting
            .get(key)
            .and_then(|(under_way, until)| holds(!under_way.is_empty(), *until, now))
    }

    fn check(&self, key: &LaneKey) -> Result<(), ConfigError> {
        if lock(&self.unreadable).contains(key) {
            return Err(ConfigError::Store("the table is unreachable".into()));
        }
        Ok(())
    }

    pub(crate) fn log_failures(
        &self,
        key: &LaneKey,
        events: &[StoredKey],
        reason: &str,
        now: OffsetDateTime,
    ) {
        let mut table = lock(&self.table);
        let log = table.failures.entry(key.clone()).or_default();
        for event in events {
            log.insert(
                event.sort_key.clone(),
                FailureRecord {
                    event_sort_key: event.sort_key.clone(),
                    event_id: event.message_id.clone(),
                    failed_at: seconds_text(now),
                    reason: reason.to_owned(),
                },
            );
        }
    }
}

/// A project saved through [`Configurations::save`] is as it was saved; a lane only
/// [`MemoryLanes::configure`]d streams to Datadog. Either way with its lane as kept.
impl Configurations for MemoryLanes {
    async fn configuration(
        &self,
        organization_id: &str,
        project_id: &str,
    ) -> Result<Option<StreamingConfig>, ConfigError> {
        let key = LaneKey::new(organization_id, project_id);
        let slow = lock(&self.slow).get(&key).copied();
        if let Some(reads_take) = slow {
            tokio::time::sleep(reads_take).await;
        }
        let used_up = {
            let mut table = lock(&self.table);
            match table.reads_left.get_mut(&key) {
                Some(&mut 0) => table.reads_left.remove(&key).is_some(),
                Some(n) => {
                    *n -= 1;
                    false
                }
                None => false,
            }
        };
        if used_up {
            self.set_unreadable(&key, true);
        }
        self.check(&key)?;
        if lock(&self.damaged).contains(&key) {
            return Err(ConfigError::Corrupt("destination"));
        }
        let saved = lock(&self.table).saved.get(&key).cloned();
        Ok(self.with(&key, |m| {
            let mut config = saved.unwrap_or_else(|| StreamingConfig {
                organization_id: key.organization_id.clone(),
                project_id: key.project_id.clone(),
                name: "scripted".into(),
                destination: Destination::Datadog(DatadogSettings {
                    site: DatadogSite::Us1,
                }),
                api_key_last4: None,
                secret_version: None,
                version: 0,
                updated_at: String::new(),
                saved_by: None,
                health: Health::default(),
                lane: Lane::default(),
            });
            config.secret_version = m.secret_version.clone();
            config.version = m.lane.version;
            config.lane = m.lane.clone();
            config
        }))
    }

    async fn save(
        &self,
        organization_id: &str,
        project_id: &str,
        new: NewConfig,
        read: u64,
        now: OffsetDateTime,
    ) -> Result<StreamingConfig, ConfigError> {
        let key = LaneKey::new(organization_id, project_id);
        self.check(&key)?;
        if lock(&self.table).cut_short.remove(&key) {
            return Err(ConfigError::Store("the attempt timed out".into()));
        }
        let raced = {
            let mut table = lock(&self.table);
            match table.raced.get_mut(&key) {
                Some(left) if *left > 0 => {
                    *left -= 1;
                    true
                }
                _ => false,
            }
        };
        if raced {
            self.saved(&key);
            if let Some(other) = lock(&self.table).saved.get_mut(&key) {
                other.saved_by = Some(NewConfig::new_save());
            }
        }
        let mut lanes = lock(&self.lanes);
        let current = lanes
            .get(&key)
            .filter(|m| m.configured)
            .map_or(0, |m| m.lane.version);
        // As the table's transaction: the mark is told first.
        if read == 0
            && let Some(retry_after) = self.deleting(&key, now)
        {
            return Err(ConfigError::Deleting { retry_after });
        }
        if current != read {
            return Err(ConfigError::VersionMismatch { current });
        }
        let version = if read == 0 {
            lock(&self.table).removed.get(&key).copied().unwrap_or(0)
        } else {
            read
        } + 1;
        let lane = lanes.entry(key.clone()).or_default();
        if read == 0 {
            // Saved in place of none: what is still owed was a removed destination's.
            lane.lane.owed_from =
                Lane::saved_in_place_of_none(crate::clock::epoch_ms(now)).owed_from;
        }
        lane.saved();
        lane.lane.version = version;
        lane.secret_version.clone_from(&new.secret_version);
        let config = StreamingConfig {
            organization_id: key.organization_id.clone(),
            project_id: key.project_id.clone(),
            name: new.name,
            destination: new.destination,
            api_key_last4: new.api_key_last4,
            secret_version: new.secret_version,
            version,
            updated_at: seconds_text(now),
            saved_by: Some(new.save),
            health: Health::default(),
            lane: lane.lane.clone(),
        };
        let mut table = lock(&self.table);
        table.saved.insert(key.clone(), config.clone());
        if table.unanswered.remove(&key) {
            return Err(ConfigError::VersionMismatch { current: version });
        }
        Ok(config)
    }

    async fn delete(
        &self,
        organization_id: &str,
        project_id: &str,
        if_version: Option<u64>,
    ) -> Result<Option<StreamingConfig>, ConfigError> {
        let key = LaneKey::new(organization_id, project_id);
        if lock(&self.table).raced_deletes.remove(&key) {
            self.configure(&key);
            self.saved(&key);
        }
        let stored = self.configuration(organization_id, project_id).await?;
        if let Some(v) = if_version {
            let current = stored.as_ref().map_or(0, |c| c.version);
            if current != v {
                return Err(ConfigError::VersionMismatch { current });
            }
        }
        let mut table = lock(&self.table);
        table.saved.remove(&key);
        if let Some(stored) = &stored {
            table.removed.insert(key.clone(), stored.version);
        }
        drop(table);
        self.unconfigure(&key);
        Ok(stored)
    }

    async fn begin_deletion(
        &self,
        organization_id: &str,
        project_id: &str,
        now: OffsetDateTime,
    ) -> Result<Deletion, ConfigError> {
        let key = LaneKey::new(organization_id, project_id);
        self.check(&key)?;
        let deletion = Deletion::new();
        let until = (now + DELETION_MARK_LAPSE).unix_timestamp();
        let mut table = lock(&self.table);
        let mark = table.deleting.entry(key).or_default();
        // As the table's first mark: one that no longer holds starts afresh.
        if holds(!mark.0.is_empty(), mark.1, now).is_none() {
            mark.0.clear();
        }
        mark.0.push(deletion.clone());
        mark.1 = until;
        Ok(deletion)
    }

    async fn end_deletion(
        &self,
        organization_id: &str,
        project_id: &str,
        deletion: &Deletion,
    ) -> Result<(), ConfigError> {
        let key = LaneKey::new(organization_id, project_id);
        self.check(&key)?;
        if let Some((under_way, _)) = lock(&self.table).deleting.get_mut(&key) {
            under_way.retain(|d| d != deletion);
        }
        Ok(())
    }

    async fn destinations(
        &self,
        organization_id: &str,
        _up_to: usize,
    ) -> Result<usize, ConfigError> {
        Ok(lock(&self.lanes)
            .iter()
            .filter(|(key, m)| key.organization_id == organization_id && m.configured)
            .count())
    }
}

impl Organizations for MemoryLanes {
    async fn external_id(
        &self,
        organization_id: &str,
        _now: OffsetDateTime,
    ) -> Result<String, ConfigError> {
        // The organization's items share its projects' partition.
        if lock(&self.unreadable)
            .iter()
            .any(|key| key.organization_id == organization_id)
        {
            return Err(ConfigError::Store("the table is unreachable".into()));
        }
        Ok(lock(&self.table)
            .external_ids
            .entry(organization_id.to_owned())
            .or_insert_with(new_external_id)
            .clone())
    }

    async fn take_slot(
        &self,
        organization_id: &str,
        limit: RateLimit,
        now: OffsetDateTime,
    ) -> Result<Result<(), u64>, ConfigError> {
        let window = limit.window_seconds.max(1);
        let current = now.unix_timestamp().div_euclid(window);
        let mut table = lock(&self.table);
        let used = table
            .slots
            .entry((organization_id.to_owned(), limit.what, current))
            .or_default();
        if *used >= limit.per_window {
            let next_window = (current + 1) * window;
            return Ok(Err((next_window - now.unix_timestamp()).max(1) as u64));
        }
        *used += 1;
        Ok(Ok(()))
    }
}

impl ConnectionTests for MemoryLanes {
    async fn record_test(
        &self,
        organization_id: &str,
        project_id: &str,
        record: &TestRecord,
        _now: OffsetDateTime,
    ) -> Result<(), ConfigError> {
        lock(&self.table)
            .tests
            .entry(LaneKey::new(organization_id, project_id))
            .or_default()
            .push(record.clone());
        Ok(())
    }

    async fn recent_tests(
        &self,
        organization_id: &str,
        project_id: &str,
        n: usize,
    ) -> Result<Vec<TestRecord>, ConfigError> {
        let table = lock(&self.table);
        let tests = table.tests.get(&LaneKey::new(organization_id, project_id));
        Ok(tests.map_or_else(Vec::new, |t| t.iter().rev().take(n).cloned().collect()))
    }
}

impl FailureLog for MemoryLanes {
    async fn record_failures(
        &self,
        organization_id: &str,
        project_id: &str,
        events: &[StoredKey],
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(), ConfigError> {
        self.log_failures(
            &LaneKey::new(organization_id, project_id),
            events,
            reason,
            now,
        );
        Ok(())
    }

    async fn forget_failures(
        &self,
        organization_id: &str,
        project_id: &str,
        event_sort_keys: &[String],
    ) -> Result<(), ConfigError> {
        let mut table = lock(&self.table);
        if let Some(log) = table
            .failures
            .get_mut(&LaneKey::new(organization_id, project_id))
        {
            for sk in event_sort_keys {
                log.remove(sk);
            }
        }
        Ok(())
    }

    async fn failures_between(
        &self,
        organization_id: &str,
        project_id: &str,
        low: &str,
        high: &str,
    ) -> Result<Vec<String>, ConfigError> {
        let table = lock(&self.table);
        let log = table
            .failures
            .get(&LaneKey::new(organization_id, project_id));
        Ok(log
            .into_iter()
            .flat_map(|log| log.keys())
            .filter(|sk| (low..=high).contains(&sk.as_str()))
            .cloned()
            .collect())
    }

    async fn failures(
        &self,
        organization_id: &str,
        project_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<FailureRecord>, Option<String>), ConfigError> {
        // Sort keys begin with a time's digits: these bounds hold them all.
        let all = ("", "\u{10FFFF}");
        self.failures_within(organization_id, project_id, all, after, limit)
            .await
    }

    async fn failures_within(
        &self,
        organization_id: &str,
        project_id: &str,
        (low, high): (&str, &str),
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<FailureRecord>, Option<String>), ConfigError> {
        let Some(after) = super::failures::within(after, (low, high)) else {
            return Ok((Vec::new(), None));
        };
        let table = lock(&self.table);
        let Some(log) = table
            .failures
            .get(&LaneKey::new(organization_id, project_id))
        else {
            return Ok((Vec::new(), None));
        };
        // Newest event first, after the cursor's event; as a query with a limit, a full page
        // names where the next starts even when nothing follows.
        let page: Vec<FailureRecord> = log
            .values()
            .rev()
            .filter(|f| after.is_none_or(|a| f.event_sort_key.as_str() < a))
            .filter(|f| (low..=high).contains(&f.event_sort_key.as_str()))
            .take(limit)
            .cloned()
            .collect();
        let next = page
            .last()
            .filter(|_| page.len() == limit)
            .map(|last| last.event_sort_key.clone());
        Ok((page, next))
    }
}

impl Replays for MemoryLanes {
    async fn start_replay(
        &self,
        replay: &mut Replay,
        at: OffsetDateTime,
    ) -> Result<bool, ConfigError> {
        let key = LaneKey::new(&replay.organization_id, &replay.project_id);
        {
            let mut table = lock(&self.table);
            let now = at.unix_timestamp();
            if table
                .locks
                .get(&key)
                .is_some_and(|(_, beat, _)| is_fresh(*beat, at))
            {
                return Ok(false);
            }
            table
                .locks
                .insert(key, (replay.replay_id.clone(), now, false));
        }
        self.save_replay(replay, at).await?;
        Ok(true)
    }

    async fn replay_lock_holder(
        &self,
        organization_id: &str,
        project_id: &str,
    ) -> Result<Option<String>, ConfigError> {
        let key = LaneKey::new(organization_id, project_id);
        Ok(lock(&self.table)
            .locks
            .get(&key)
            .map(|(id, _, _)| id.clone()))
    }

    async fn replays_running(
        &self,
        organization_id: &str,
        at: OffsetDateTime,
        up_to: usize,
    ) -> Result<usize, ConfigError> {
        let running = lock(&self.table)
            .locks
            .iter()
            .filter(|(key, (_, beat, paused))| {
                key.organization_id == organization_id && is_fresh(*beat, at) && !paused
            })
            .count();
        Ok(running.min(up_to))
    }

    async fn replay_running(
        &self,
        organization_id: &str,
        project_id: &str,
        at: OffsetDateTime,
    ) -> Result<bool, ConfigError> {
        let key = LaneKey::new(organization_id, project_id);
        Ok(lock(&self.table)
            .locks
            .get(&key)
            .is_some_and(|(_, beat, _)| is_fresh(*beat, at)))
    }

    async fn replay(
        &self,
        organization_id: &str,
        project_id: &str,
        replay_id: &str,
    ) -> Result<Option<Replay>, ConfigError> {
        let key = (
            LaneKey::new(organization_id, project_id),
            replay_id.to_owned(),
        );
        Ok(lock(&self.table).replays.get(&key).cloned())
    }

    async fn save_replay(
        &self,
        replay: &mut Replay,
        now: OffsetDateTime,
    ) -> Result<(), ConfigError> {
        let key = LaneKey::new(&replay.organization_id, &replay.project_id);
        let mut saved = replay.clone();
        saved.updated_at = seconds_text(now);
        saved.saves += 1;
        let mut table = lock(&self.table);
        let stored_saves = table
            .replays
            .get(&(key.clone(), replay.replay_id.clone()))
            .map_or(0, |r| r.saves);
        if stored_saves != replay.saves {
            return Err(ConfigError::ReplayMovedOn);
        }
        let ours = table
            .locks
            .get(&key)
            .is_some_and(|(id, _, _)| *id == saved.replay_id);
        let superseded = !ours && saved.state == ReplayState::Running;
        if superseded {
            saved.superseded(now);
        } else if ours {
            if saved.state == ReplayState::Running {
                let beat = (saved.replay_id.clone(), now.unix_timestamp(), saved.paused);
                table.locks.insert(key.clone(), beat);
            } else {
                table.locks.remove(&key);
            }
        }
        table
            .replays
            .insert((key, saved.replay_id.clone()), saved.clone());
        *replay = saved;
        if superseded {
            return Err(ConfigError::ReplaySuperseded);
        }
        Ok(())
    }
}

impl super::ProjectIndex for MemoryLanes {
    async fn note(&self, projects: &[super::Note]) -> Result<(), super::Unnoted> {
        self.projects.note(projects).await
    }

    async fn noted(
        &self,
        organization_id: &str,
        after: Option<&str>,
        limit: usize,
        now: i64,
    ) -> Result<(Vec<String>, Option<String>), ConfigError> {
        self.projects
            .noted(organization_id, after, limit, now)
            .await
    }
}

impl Exports for MemoryLanes {
    async fn start_export(
        &self,
        export: &mut Export,
        at: OffsetDateTime,
    ) -> Result<bool, ConfigError> {
        let now = at.unix_timestamp();
        let mut table = lock(&self.table);
        let slots = table
            .export_slots
            .entry(export.organization_id.clone())
            .or_default();
        slots.retain(|(_, beat)| *beat >= now - EXPORT_STALE_AFTER_SECONDS);
        if slots.len() >= RUNNING_EXPORTS {
            return Ok(false);
        }
        export.slot = slots.len();
        slots.push((export.export_id.clone(), now));
        let key = LaneKey::new(&export.organization_id, &export.project_id);
        table
            .exports
            .insert((key, export.export_id.clone()), export.clone());
        Ok(true)
    }

    async fn export(
        &self,
        organization_id: &str,
        project_id: &str,
        export_id: &str,
    ) -> Result<Option<Export>, ConfigError> {
        let key = (
            LaneKey::new(organization_id, project_id),
            export_id.to_owned(),
        );
        Ok(lock(&self.table).exports.get(&key).cloned())
    }

    async fn take_export(
        &self,
        organization_id: &str,
        project_id: &str,
        export_id: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Option<Export>, ConfigError> {
        let key = (
            LaneKey::new(organization_id, project_id),
            export_id.to_owned(),
        );
        let mut table = lock(&self.table);
        let Some(export) = table.exports.get_mut(&key) else {
            return Ok(None);
        };
        if export.state != ExportState::Running
            || export.lease_until > now.unix_timestamp()
            || export.updated_at < super::exports::stale_at(now)
        {
            return Ok(None);
        }
        export.step += 1;
        export.lease_until = lease_until.unix_timestamp();
        export.updated_at = seconds_text(now);
        let taken = export.clone();
        let slots = table
            .export_slots
            .entry(taken.organization_id.clone())
            .or_default();
        for slot in slots.iter_mut().filter(|(id, _)| *id == taken.export_id) {
            slot.1 = now.unix_timestamp();
        }
        Ok(Some(taken))
    }

    async fn save_export(
        &self,
        export: &Export,
        now: OffsetDateTime,
        keep_lease: bool,
    ) -> Result<bool, ConfigError> {
        let key = (
            LaneKey::new(&export.organization_id, &export.project_id),
            export.export_id.clone(),
        );
        let mut table = lock(&self.table);
        if table
            .exports
            .get(&key)
            .is_none_or(|e| e.step != export.step)
        {
            return Ok(false);
        }
        let mut saved = export.clone();
        saved.updated_at = seconds_text(now);
        if !keep_lease {
            saved.lease_until = 0;
        }
        table.exports.insert(key, saved);
        let slots = table
            .export_slots
            .entry(export.organization_id.clone())
            .or_default();
        if export.state == ExportState::Running {
            for slot in slots.iter_mut().filter(|(id, _)| *id == export.export_id) {
                slot.1 = now.unix_timestamp();
            }
        } else {
            slots.retain(|(id, _)| *id != export.export_id);
        }
        Ok(true)
    }
}
