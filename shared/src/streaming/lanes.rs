//! Lanes in the configuration table. A lane's state lives on its project's configuration item
//! (one read gives a delivery both), what it owes in items of their own beside it:
//! `owed#<project>#<owed at, ms>#<event's sort key>`, so they list oldest first and the ones
//! beyond the retry window form a prefix.

use super::{
    ConfigError, ConfigTable, HealthReport, is_condition_failure, key, names_its_project_in_full,
    number, organization_key, project_of_key, s, store_error,
};
use crate::destination::DeliveryError;
use crate::lane::sweep::Overdue;
use crate::lane::{Lane, LaneError, LaneKey, LaneState, LaneStore, Owed, OwedSpan, Owing};
use crate::store::{StoredKey, key_part, sort_key_part};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use time::OffsetDateTime;

/// The least a failed owe's take-back is given, when the owe's patience is spent: enough for
/// its deletes when what failed was not the partition's throughput.
const TAKE_BACK_AT_LEAST: std::time::Duration = std::time::Duration::from_secs(1);
/// Partitions of the lanes' index a sweep reads at once.
const PARTITIONS_READ_AT_ONCE: usize = 8;

mod index;
pub use index::LANES_BY_NEXT_ATTEMPT;

pub mod attr {
    pub const STATE: &str = "lane_state";
    pub const ATTEMPT: &str = "lane_attempt";
    pub const NEXT_ATTEMPT_AT: &str = "lane_next_attempt_at";
    pub const INTERVAL_MS: &str = "lane_interval_ms";
    pub const SINCE: &str = "lane_since";
    pub const REASON: &str = "lane_reason";
    pub const WRITES: &str = "lane_writes";
    pub const OWED: &str = "lane_owed";
    pub const REFUSED_VERSION: &str = "lane_refused_version";
    pub const OWED_FROM: &str = "lane_owed_from";
    pub const PAUSED_AT: &str = "lane_paused_at";
    pub const RECOVERED_AT: &str = "lane_recovered_at";

    /// Every lane attribute of a configuration item.
    pub const ALL: [&str; 12] = [
        STATE,
        ATTEMPT,
        NEXT_ATTEMPT_AT,
        INTERVAL_MS,
        SINCE,
        REASON,
        WRITES,
        OWED,
        REFUSED_VERSION,
        OWED_FROM,
        PAUSED_AT,
        RECOVERED_AT,
    ];
}

/// Whether a configuration item's attribute is the lane's.
pub(super) fn is_lane_attribute(name: &str) -> bool {
    attr::ALL.contains(&name)
}

/// How far a save moves the lane's count of writes: beyond any value a catching-up call may
/// hold, so that call looks for owed events again rather than trust a count the save rewrote.
pub(crate) const WRITES_MOVED_BY_SAVE: u64 = 1 << 32;

fn prefix(project_id: &str) -> String {
    format!("owed#{}#", sort_key_part(project_id))
}

/// Owed at the same instant, events keep their order. The key is only a place (the item holds
/// the event's key), so past DynamoDB's 1,024 bytes (a project of 880 bytes with an SQS message
/// id of over 93 characters) its end is a digest of the event's key, and events of one instant
/// then order by it.
fn owed_sort_key(project_id: &str, owed: &Owed) -> String {
    let key = format!(
        "{}{:013}#{}",
        prefix(project_id),
        owed.owed_at_ms.max(0),
        owed.event.sort_key
    );
    crate::id::fitted(
        key,
        &owed.event.sort_key,
        crate::store::MAX_SORT_KEY_BYTES,
        crate::store::FITTED_MARKER,
    )
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// An owed event's item: which event, since when, and how large.
#[derive(Serialize, Deserialize)]
struct OwedItem {
    event_sort_key: String,
    event_id: String,
    owed_at: i64,
    #[serde(default)]
    bytes: u64,
    /// Owed no longer than the event is kept.
    expires_at: i64,
}

impl From<&Owed> for OwedItem {
    fn from(o: &Owed) -> Self {
        Self {
            event_sort_key: o.event.sort_key.clone(),
            event_id: o.event.message_id.clone(),
            owed_at: o.owed_at_ms,
            bytes: o.bytes,
            expires_at: o.event.expires_at,
        }
    }
}

impl From<OwedItem> for Owed {
    fn from(o: OwedItem) -> Self {
        Self {
            event: StoredKey {
                sort_key: o.event_sort_key,
                message_id: o.event_id,
                expires_at: o.expires_at,
            },
            owed_at_ms: o.owed_at,
            bytes: o.bytes,
        }
    }
}

/// The lane stored on a configuration item (a configuration saved before lanes: delivering).
pub fn lane_of(item: &HashMap<String, AttributeValue>) -> Lane {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    Lane {
        state: text(attr::STATE)
            .and_then(|s| index::parse(&s))
            .unwrap_or_default(),
        attempt: text(attr::ATTEMPT),
        next_attempt_at: number(item, attr::NEXT_ATTEMPT_AT),
        interval_ms: number(item, attr::INTERVAL_MS).unwrap_or(0).max(0) as u64,
        since: number(item, attr::SINCE),
        reason: text(attr::REASON),
        writes: number(item, attr::WRITES).unwrap_or(0).max(0) as u64,
        // Concurrent settlements may take the count below zero until the lane catches up.
        owed: number(item, attr::OWED).unwrap_or(0).max(0) as u64,
        version: number(item, super::attr::VERSION).unwrap_or(0).max(0) as u64,
        refused_version: number(item, attr::REFUSED_VERSION).map(|v| v.max(0) as u64),
        owed_from: number(item, attr::OWED_FROM),
        paused_at: number(item, attr::PAUSED_AT),
        recovered_at: number(item, attr::RECOVERED_AT),
    }
}

/// The lane's attributes, to write it whole.
pub(super) fn attributes(key: &LaneKey, lane: &Lane) -> Vec<(String, AttributeValue)> {
    let mut out = vec![
        (attr::STATE.to_owned(), s(&index::stored(key, lane.state))),
        (attr::INTERVAL_MS.to_owned(), n(lane.interval_ms)),
        (attr::WRITES.to_owned(), n(lane.writes)),
        (attr::OWED.to_owned(), n(lane.owed)),
    ];
    if let Some(attempt) = &lane.attempt {
        out.push((attr::ATTEMPT.to_owned(), s(attempt)));
    }
    for (name, value) in [
        (attr::NEXT_ATTEMPT_AT, lane.next_attempt_at),
        (attr::SINCE, lane.since),
        (attr::OWED_FROM, lane.owed_from),
        (attr::PAUSED_AT, lane.paused_at),
        (attr::RECOVERED_AT, lane.recovered_at),
    ] {
        if let Some(v) = value {
            out.push((name.to_owned(), n(v)));
        }
    }
    if let Some(reason) = &lane.reason {
        out.push((attr::REASON.to_owned(), s(reason)));
    }
    if let Some(version) = lane.refused_version {
        out.push((attr::REFUSED_VERSION.to_owned(), n(version)));
    }
    out
}

/// A condition that holds while the stored lane is still `lane` (as read): what a writer of
/// the whole item must not overwrite. Names and values go into the maps given.
pub(super) fn unchanged(
    key: &LaneKey,
    lane: &Lane,
    names: &mut HashMap<String, String>,
    values: &mut HashMap<String, AttributeValue>,
) -> String {
    // Writes of owed events may come in between: the save moves the count far on (see
    // `WRITES_MOVED_BY_SAVE`), and the owed count is for people only (reset whenever the lane
    // catches up), so neither is a condition and a busy lane never holds a save back.
    let mut parts = Vec::new();
    names.insert("#la".into(), attr::ATTEMPT.to_owned());
    parts.push(match &lane.attempt {
        Some(attempt) => {
            values.insert(":la".into(), s(attempt));
            "#la = :la".to_owned()
        }
        None => "attribute_not_exists(#la)".to_owned(),
    });
    names.insert("#ls".into(), attr::STATE.to_owned());
    let mut options = Vec::new();
    if lane.state == LaneState::Delivering {
        options.push("attribute_not_exists(#ls)".to_owned());
    }
    for (i, form) in index::forms(key, lane.state).into_iter().enumerate() {
        values.insert(format!(":ls{i}"), s(&form));
        options.push(format!("#ls = :ls{i}"));
    }
    parts.push(format!("({})", options.join(" OR ")));
    parts.join(" AND ")
}

/// DynamoDB's answer to a read of an index it is still building.
fn is_backfilling<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error().is_some_and(|e| {
        e.code() == Some("ValidationException")
            && e.message().is_some_and(|m| m.contains("backfilling"))
    })
}

fn lane_error(e: ConfigError) -> LaneError {
    LaneError::Store(e.to_string())
}

/// An update expression's parts, built up clause by clause.
#[derive(Default)]
pub(super) struct Update {
    set: Vec<String>,
    add: Vec<String>,
    remove: Vec<String>,
    pub(super) names: HashMap<String, String>,
    pub(super) values: HashMap<String, AttributeValue>,
}

impl Update {
    fn name(&mut self, attr: &str) -> String {
        let placeholder = format!("#{}", attr.replace('_', ""));
        self.names.insert(placeholder.clone(), attr.to_owned());
        placeholder
    }

    pub(super) fn set(&mut self, attr: &str, value: AttributeValue) {
        let name = self.name(attr);
        let placeholder = format!(":{}", &name[1..]);
        self.set.push(format!("{name} = {placeholder}"));
        self.values.insert(placeholder, value);
    }

    fn set_if_absent(&mut self, attr: &str, value: AttributeValue) {
        let name = self.name(attr);
        let placeholder = format!(":{}", &name[1..]);
        self.set
            .push(format!("{name} = if_not_exists({name}, {placeholder})"));
        self.values.insert(placeholder, value);
    }

    fn add(&mut self, attr: &str, value: AttributeValue) {
        let name = self.name(attr);
        let placeholder = format!(":{}", &name[1..]);
        self.add.push(format!("{name} {placeholder}"));
        self.values.insert(placeholder, value);
    }

    pub(super) fn remove(&mut self, attr: &str) {
        let name = self.name(attr);
        self.remove.push(name);
    }

    /// The state and schedule of `key`'s lane as `to` has them.
    fn lane(&mut self, key: &LaneKey, to: &Lane) {
        self.set(attr::STATE, s(&index::stored(key, to.state)));
        match (&to.attempt, to.next_attempt_at) {
            (Some(attempt), Some(at)) => {
                self.set(attr::ATTEMPT, s(attempt));
                self.set(attr::NEXT_ATTEMPT_AT, n(at));
            }
            _ => {
                self.remove(attr::ATTEMPT);
                self.remove(attr::NEXT_ATTEMPT_AT);
            }
        }
        self.set(attr::INTERVAL_MS, n(to.interval_ms));
        if let Some(since) = to.since {
            self.set_if_absent(attr::SINCE, n(since));
        }
        if let Some(reason) = &to.reason {
            self.set(attr::REASON, s(reason));
        }
        if let Some(at) = to.paused_at {
            self.set(attr::PAUSED_AT, n(at));
        }
        if let Some(at) = to.recovered_at {
            self.set(attr::RECOVERED_AT, n(at));
        }
        match to.refused_version {
            Some(version) => self.set(attr::REFUSED_VERSION, n(version)),
            None if to.state != LaneState::Refused => self.remove(attr::REFUSED_VERSION),
            None => {}
        }
    }

    pub(super) fn expression(&self) -> String {
        let mut parts = Vec::new();
        if !self.set.is_empty() {
            parts.push(format!("SET {}", self.set.join(", ")));
        }
        if !self.add.is_empty() {
            parts.push(format!("ADD {}", self.add.join(", ")));
        }
        if !self.remove.is_empty() {
            parts.push(format!("REMOVE {}", self.remove.join(", ")));
        }
        parts.join(" ")
    }
}

/// A condition on the state of `key`'s lane: one of `states`.
fn state_in(update: &mut Update, key: &LaneKey, states: &[LaneState]) -> String {
    let name = update.name(attr::STATE);
    let mut options = Vec::new();
    for (i, state) in states.iter().enumerate() {
        if *state == LaneState::Delivering {
            options.push(format!("attribute_not_exists({name})"));
        }
        for (j, form) in index::forms(key, *state).into_iter().enumerate() {
            let placeholder = format!(":state{i}x{j}");
            options.push(format!("{name} = {placeholder}"));
            update.values.insert(placeholder, s(&form));
        }
    }
    format!("({})", options.join(" OR "))
}

impl ConfigTable {
    /// Up to `limit` lanes of one partition of the lanes' index whose call was due before
    /// `before_ms`, most overdue first, as index items (keys); `None` while the index is still
    /// being built.
    async fn overdue_in(
        &self,
        partition: &str,
        before_ms: i64,
        limit: usize,
    ) -> Result<Option<Vec<Overdue<HashMap<String, AttributeValue>>>>, LaneError> {
        let mut items = self
            .client
            .query()
            .table_name(&self.name)
            .index_name(LANES_BY_NEXT_ATTEMPT)
            .key_condition_expression("#state = :state AND #due < :before")
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_names("#due", attr::NEXT_ATTEMPT_AT)
            .expression_attribute_values(":state", s(partition))
            .expression_attribute_values(":before", n(before_ms))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .into_paginator()
            .items()
            .send();
        let mut found = Vec::new();
        while found.len() < limit {
            let item = match items.next().await {
                None => break,
                Some(Ok(item)) => item,
                Some(Err(e)) if is_backfilling(&e) => return Ok(None),
                Some(Err(e)) => return Err(lane_error(store_error(e))),
            };
            let organization = item
                .get(super::attr::PARTITION_KEY)
                .and_then(|v| v.as_s().ok());
            let (Some(organization), Some(due_ms)) =
                (organization.cloned(), number(&item, attr::NEXT_ATTEMPT_AT))
            else {
                continue;
            };
            found.push(Overdue {
                organization,
                due_ms,
                lane: item,
            });
        }
        Ok(Some(found))
    }

    /// The ids a lane's item names, read from the item itself: `keys` are the item's keys as
    /// the lanes' index gives them.
    async fn project_names(
        &self,
        keys: HashMap<String, AttributeValue>,
    ) -> Result<HashMap<String, AttributeValue>, ConfigError> {
        let key = keys
            .into_iter()
            .filter(|(name, _)| name == super::attr::PARTITION_KEY || name == super::attr::SORT_KEY)
            .collect();
        let read = self
            .client
            .get_item()
            .table_name(&self.name)
            .set_key(Some(key))
            .projection_expression("#pk, #sk, #org, #project")
            .expression_attribute_names("#pk", super::attr::PARTITION_KEY)
            .expression_attribute_names("#sk", super::attr::SORT_KEY)
            .expression_attribute_names("#org", super::attr::ORGANIZATION_ID)
            .expression_attribute_names("#project", super::attr::PROJECT_ID)
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        Ok(read.item.unwrap_or_default())
    }

    /// Whether a write of `to` that `written` says failed its condition landed all the same:
    /// its first attempt did, the answer was lost, and the SDK's retry found its own write.
    /// `to`'s attempt is drawn at random for it, so a lane waiting for it was written by it.
    async fn landed(&self, lane: &LaneKey, to: &Lane, written: bool) -> Result<bool, LaneError> {
        if written || to.attempt.is_none() {
            return Ok(written);
        }
        Ok(LaneStore::read(self, lane)
            .await?
            .is_some_and(|now| now.attempt == to.attempt))
    }

    /// Runs an update of the lane's item under `condition`; `Ok(false)` when the condition
    /// does not hold.
    async fn update_lane(
        &self,
        lane: &LaneKey,
        update: Update,
        condition: &str,
    ) -> Result<bool, LaneError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(key(&lane.organization_id, &lane.project_id)))
            .update_expression(update.expression())
            .condition_expression(format!("attribute_exists(pk) AND {condition}"))
            .set_expression_attribute_names(Some(update.names))
            .set_expression_attribute_values((!update.values.is_empty()).then_some(update.values))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(lane_error(store_error(e))),
        }
    }

    async fn write_owed(
        &self,
        lane: &LaneKey,
        owed: &[Owed],
        until: tokio::time::Instant,
    ) -> Result<(), LaneError> {
        let requests = owed
            .iter()
            .map(|o| {
                let mut item: HashMap<String, AttributeValue> =
                    serde_dynamo::to_item(OwedItem::from(o)).map_err(|_| {
                        LaneError::Store("an owed event could not be laid out".into())
                    })?;
                item.extend(organization_key(
                    &lane.organization_id,
                    owed_sort_key(&lane.project_id, o),
                ));
                Ok(super::failures::put(item))
            })
            .collect::<Result<Vec<_>, LaneError>>()?;
        self.write_all_until(requests, until)
            .await
            .map_err(lane_error)
    }

    async fn delete_owed(&self, lane: &LaneKey, owed: &[Owed]) -> Result<(), LaneError> {
        let until = tokio::time::Instant::now() + super::failures::UNPROCESSED_PATIENCE;
        self.delete_owed_until(lane, owed, until).await
    }

    async fn delete_owed_until(
        &self,
        lane: &LaneKey,
        owed: &[Owed],
        until: tokio::time::Instant,
    ) -> Result<(), LaneError> {
        let requests = owed
            .iter()
            .map(|o| {
                super::failures::delete(organization_key(
                    &lane.organization_id,
                    owed_sort_key(&lane.project_id, o),
                ))
            })
            .collect();
        self.write_all_until(requests, until)
            .await
            .map_err(lane_error)
    }

    async fn query_owed(
        &self,
        lane: &LaneKey,
        span: OwedSpan,
        limit: usize,
    ) -> Result<Vec<Owed>, ConfigError> {
        if let (Some(from), Some(before)) = (span.from_ms, span.before_ms)
            && before <= from
        {
            // Nothing can be in it, and DynamoDB refuses a BETWEEN whose bounds are reversed.
            return Ok(Vec::new());
        }
        let prefix = prefix(&lane.project_id);
        // Keys owed at `from_ms` or later sort from the first, those owed at `before_ms` or
        // later after the second; every owed key of the project sorts before `~`.
        let at = |ms: i64| format!("{prefix}{:013}", ms.max(0));
        let lo = span.from_ms.map_or_else(|| prefix.clone(), at);
        let hi = span.before_ms.map_or_else(|| format!("{prefix}~"), at);
        let out = self
            .client
            .query()
            .table_name(&self.name)
            .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
            .expression_attribute_values(":pk", s(&key_part(&lane.organization_id)))
            .expression_attribute_values(":lo", s(&lo))
            .expression_attribute_values(":hi", s(&hi))
            .scan_index_forward(true)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        Ok(out
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|item| serde_dynamo::from_item::<_, OwedItem>(item).ok())
            .map(Owed::from)
            .collect())
    }
}

impl ConfigTable {
    /// After a failed `owe`, whose events the caller hands on another way (Lambda's retry,
    /// the deferred queue): no owed item is left behind it, as far as possible by `until`, the
    /// owe's own patience, or a second from now if that is spent. A partition throttled through
    /// the write would throttle its take-back too: another whole patience would only hold the
    /// stream batch, every tenant on its shard, that much longer.
    async fn take_back(&self, lane: &LaneKey, owed: &[Owed], until: tokio::time::Instant) {
        let until = until.max(tokio::time::Instant::now() + TAKE_BACK_AT_LEAST);
        if let Err(cleanup) = self.delete_owed_until(lane, owed, until).await {
            tracing::warn!(organization_id = lane.organization_id, project_id = lane.project_id, error = %cleanup, "owed events left behind a failed write");
        }
    }

    /// Counts owed events against the lane (see [`LaneStore::owe`]); `None` when the lane
    /// delivers or is gone.
    async fn count_owed(
        &self,
        lane: &LaneKey,
        owed: &[Owed],
        entering: Option<&Lane>,
    ) -> Result<Option<Owing>, LaneError> {
        let counted = |update: &mut Update| {
            update.add(attr::WRITES, n(1));
            update.add(attr::OWED, n(owed.len()));
        };
        if let Some(to) = entering {
            let mut update = Update::default();
            update.lane(lane, to);
            counted(&mut update);
            let mut condition = state_in(&mut update, lane, &[LaneState::Delivering]);
            if let Some(version) = to.refused_version {
                // A refusal of the settings saved as `version`: a save since then carried the
                // lane as delivering with new settings, which this refusal says nothing about.
                // (An item saved before versions were kept reads as version 0.)
                let name = update.name(super::attr::VERSION);
                update.values.insert(":refusedunder".into(), n(version));
                let unversioned = if version == 0 {
                    format!(" OR attribute_not_exists({name})")
                } else {
                    String::new()
                };
                condition = format!("{condition} AND ({name} = :refusedunder{unversioned})");
            }
            if self.update_lane(lane, update, &condition).await? {
                return Ok(Some(Owing::Owed));
            }
        }
        let mut update = Update::default();
        counted(&mut update);
        let state = update.name(attr::STATE);
        update
            .values
            .insert(":delivering".into(), s(LaneState::Delivering.as_str()));
        let condition = format!("attribute_exists({state}) AND {state} <> :delivering");
        Ok(self
            .update_lane(lane, update, &condition)
            .await?
            .then_some(Owing::Owed))
    }
}

impl LaneStore for ConfigTable {
    async fn owe(
        &self,
        lane: &LaneKey,
        owed: &[Owed],
        entering: Option<&Lane>,
    ) -> Result<Owing, LaneError> {
        // One patience for the whole owe, its take-back included.
        let until = tokio::time::Instant::now() + super::failures::UNPROCESSED_PATIENCE;
        if let Err(e) = self.write_owed(lane, owed, until).await {
            // Some batches may be written: uncounted, they would be caught up or expired as
            // failures some later day, long after these events went another way.
            self.take_back(lane, owed, until).await;
            return Err(e);
        }
        // Counted within the same patience: a count that gets no answer would hold the stream
        // batch (every tenant on its shard) for each of the SDK's attempts.
        let counted = tokio::time::timeout_at(until, self.count_owed(lane, owed, entering))
            .await
            .unwrap_or_else(|_| {
                Err(LaneError::Store(
                    "the owed events were not counted in time".into(),
                ))
            });
        match counted {
            Ok(Some(owing)) => Ok(owing),
            Ok(None) => {
                // Not owed after all: the caller delivers them, or there is nothing to deliver.
                self.delete_owed(lane, owed).await?;
                Ok(match self.read(lane).await? {
                    Some(_) => Owing::Delivering,
                    None => Owing::Gone,
                })
            }
            Err(e) => {
                self.take_back(lane, owed, until).await;
                Err(e)
            }
        }
    }

    async fn read(&self, lane: &LaneKey) -> Result<Option<Lane>, LaneError> {
        let item = self
            .item(key(&lane.organization_id, &lane.project_id))
            .await
            .map_err(lane_error)?;
        Ok(item.as_ref().map(lane_of))
    }

    async fn update(&self, lane: &LaneKey, attempt: &str, to: &Lane) -> Result<bool, LaneError> {
        let mut update = Update::default();
        update.lane(lane, to);
        let name = update.name(attr::ATTEMPT);
        update.values.insert(":held".into(), s(attempt));
        let condition = format!("{name} = :held");
        let written = self.update_lane(lane, update, &condition).await?;
        self.landed(lane, to, written).await
    }

    async fn update_from(
        &self,
        lane: &LaneKey,
        from: &[LaneState],
        to: &Lane,
    ) -> Result<bool, LaneError> {
        let mut update = Update::default();
        update.lane(lane, to);
        let condition = if from.is_empty() {
            "attribute_exists(sk)".to_owned()
        } else {
            state_in(&mut update, lane, from)
        };
        let written = self.update_lane(lane, update, &condition).await?;
        self.landed(lane, to, written).await
    }

    async fn finish(&self, lane: &LaneKey, attempt: &str, writes: u64) -> Result<bool, LaneError> {
        let mut update = Update::default();
        update.set(attr::STATE, s(LaneState::Delivering.as_str()));
        update.set(attr::OWED, n(0));
        // The interval and when the lane came back stay: see `Lane::interval_at`.
        for name in [
            attr::ATTEMPT,
            attr::NEXT_ATTEMPT_AT,
            attr::SINCE,
            attr::REASON,
            attr::REFUSED_VERSION,
        ] {
            update.remove(name);
        }
        let held = update.name(attr::ATTEMPT);
        let counted = update.name(attr::WRITES);
        update.values.insert(":held".into(), s(attempt));
        update.values.insert(":writes".into(), n(writes));
        let unchanged = if writes == 0 {
            format!("(attribute_not_exists({counted}) OR {counted} = :writes)")
        } else {
            format!("{counted} = :writes")
        };
        self.update_lane(lane, update, &format!("{held} = :held AND {unchanged}"))
            .await
    }

    async fn owed(
        &self,
        lane: &LaneKey,
        span: OwedSpan,
        limit: usize,
    ) -> Result<Vec<Owed>, LaneError> {
        self.query_owed(lane, span, limit).await.map_err(lane_error)
    }

    async fn settle(&self, lane: &LaneKey, owed: &[Owed]) -> Result<(), LaneError> {
        if owed.is_empty() {
            return Ok(());
        }
        self.delete_owed(lane, owed).await?;
        let mut update = Update::default();
        update.add(attr::OWED, n(-(owed.len() as i64)));
        // A removed configuration stays removed.
        self.update_lane(lane, update, "attribute_exists(sk)")
            .await?;
        Ok(())
    }

    async fn overdue(&self, before_ms: i64, limit: usize) -> Result<Vec<LaneKey>, LaneError> {
        use futures::StreamExt;
        // Each partition's most overdue, so that organizations can take turns over them all;
        // a few partitions at once, so that a throttled table costs the sweep a few rounds of
        // retries, not one per partition.
        let mut reads = futures::stream::iter(index::partitions())
            .map(|partition| async move {
                let answer = self.overdue_in(&partition, before_ms, limit).await;
                (partition, answer)
            })
            .buffer_unordered(PARTITIONS_READ_AT_ONCE);
        let (mut found, mut read, mut trouble) = (Vec::new(), 0, None);
        while let Some((partition, answer)) = reads.next().await {
            match answer {
                Ok(Some(lanes)) => {
                    read += 1;
                    found.extend(lanes);
                }
                // Just added to a table that has items: nothing to find until DynamoDB has
                // built it (minutes), and then every lane is in it.
                Ok(None) => {
                    tracing::warn!("the lanes' index is still being built; nothing swept");
                    return Ok(Vec::new());
                }
                // One partition throttled or failing holds back none of the others.
                Err(e) => {
                    tracing::warn!(partition, error = %e, "a partition of the lanes' index could not be read; the next sweep tries again");
                    trouble = Some(e);
                }
            }
        }
        if let (0, Some(e)) = (read, trouble) {
            return Err(e);
        }
        let mut lanes = Vec::new();
        for item in crate::lane::sweep::take_turns(found, limit) {
            // The index keeps keys only; a key cut to fit does not give the project back.
            let item = if names_its_project_in_full(&item) {
                item
            } else {
                match self.project_names(item).await {
                    Ok(item) => item,
                    Err(e) => {
                        tracing::warn!(error = %e, "an overdue lane's project could not be read; the next sweep tries again");
                        continue;
                    }
                }
            };
            if let Some((organization_id, project_id)) = project_of_key(&item) {
                lanes.push(LaneKey::new(organization_id, project_id));
            }
        }
        Ok(lanes)
    }

    async fn record_failures(
        &self,
        lane: &LaneKey,
        events: &[StoredKey],
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(), LaneError> {
        super::FailureLog::record_failures(
            self,
            &lane.organization_id,
            &lane.project_id,
            events,
            reason,
            now,
        )
        .await
        .map_err(lane_error)
    }

    async fn oldest_owed_at(
        &self,
        lane: &LaneKey,
        span: OwedSpan,
    ) -> Result<Option<i64>, LaneError> {
        Ok(self
            .query_owed(lane, span, 1)
            .await
            .map_err(lane_error)?
            .first()
            .map(|o| o.owed_at_ms))
    }

    async fn record_attempt(
        &self,
        lane: &LaneKey,
        delivered: usize,
        failed: usize,
        error: Option<&DeliveryError>,
        now: OffsetDateTime,
    ) -> Result<(), LaneError> {
        let report = HealthReport {
            delivered,
            failed,
            last_error: error.map(|e| e.message().to_owned()),
            permanent: error.is_some_and(DeliveryError::is_refusal),
        };
        self.record_health(&lane.organization_id, &lane.project_id, &report, now)
            .await
            .map_err(lane_error)
    }
}

#[cfg(test)]
mod tests;
