//! The events table in memory, for unit tests of capture without an emulator: items keyed as
//! the table keys them (so a redelivered message overwrites its own item), batches refused as
//! DynamoDB refuses them, and writes that fail as a test tells them to.

use super::{EventWriter, StoreError, StoredEvent, WriteFailure, attr};
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

pub type Item = HashMap<String, AttributeValue>;

#[derive(Debug, Default)]
pub struct MemoryEventTable {
    /// Items by (partition key, sort key).
    items: Mutex<BTreeMap<(String, String), Item>>,
    /// Message ids whose writes fail, and how.
    refused: Mutex<HashMap<String, StoreError>>,
    /// When set, every write fails so.
    down: Mutex<Option<StoreError>>,
    /// Calls of `put_events`.
    calls: Mutex<usize>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn key_of(item: &Item) -> (String, String) {
    let text = |name| {
        item.get(name)
            .and_then(|v: &AttributeValue| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    };
    (text(attr::PARTITION_KEY), text(attr::SORT_KEY))
}

impl MemoryEventTable {
    /// The write of this message fails with `error` until told otherwise.
    pub fn refuse(&self, message_id: &str, error: StoreError) {
        lock(&self.refused).insert(message_id.to_owned(), error);
    }

    /// Every write fails with `error` (`None`: the table is back).
    pub fn set_down(&self, error: Option<StoreError>) {
        *lock(&self.down) = error;
    }

    /// Every stored item, in key order.
    pub fn items(&self) -> Vec<Item> {
        lock(&self.items).values().cloned().collect()
    }

    /// The item a message was stored as.
    pub fn item_of(&self, message_id: &str) -> Option<Item> {
        lock(&self.items)
            .values()
            .find(|item| super::StoredKey::of(item).is_some_and(|k| k.message_id == message_id))
            .cloned()
    }

    pub fn calls(&self) -> usize {
        *lock(&self.calls)
    }
}

impl EventWriter for MemoryEventTable {
    async fn put_events(
        &self,
        events: Vec<StoredEvent>,
        _deadline: tokio::time::Instant,
    ) -> Vec<WriteFailure> {
        *lock(&self.calls) += 1;
        let down = lock(&self.down).clone();
        let refused = lock(&self.refused).clone();
        let mut items = lock(&self.items);
        // DynamoDB refuses a whole batch that names one key twice.
        let mut keys = std::collections::HashSet::new();
        if !events.iter().all(|e| keys.insert(key_of(&e.item))) {
            let reason = StoreError::Refused(
                "ValidationException: Provided list of item keys contains duplicates".into(),
            );
            return events
                .into_iter()
                .map(|e| WriteFailure {
                    message_id: e.message_id,
                    reason: reason.clone(),
                })
                .collect();
        }
        let mut failures = Vec::new();
        for event in events {
            match down
                .clone()
                .or_else(|| refused.get(&event.message_id).cloned())
            {
                Some(reason) => failures.push(WriteFailure {
                    message_id: event.message_id,
                    reason,
                }),
                // As the table's conditional write decides for a claimed event.
                None if event.claimed
                    && items
                        .get(&key_of(&event.item))
                        .is_some_and(|stored| !super::same_event(stored, &event.item)) =>
                {
                    failures.push(WriteFailure {
                        message_id: event.message_id,
                        reason: StoreError::Refused(
                            "another event is stored under the id its message claims".into(),
                        ),
                    })
                }
                None => {
                    items.insert(key_of(&event.item), event.item);
                }
            }
        }
        failures
    }
}
