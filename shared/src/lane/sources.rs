//! Owed events read back from the events table.

use super::{EventSource, LaneError, LaneKey};
use crate::AuditEvent;
use crate::store::StoredKey;
use crate::store::dynamodb::EventTable;

impl EventSource for EventTable {
    async fn events(
        &self,
        lane: &LaneKey,
        keys: &[StoredKey],
    ) -> Result<Vec<(StoredKey, AuditEvent)>, LaneError> {
        let sort_keys: Vec<String> = keys.iter().map(|k| k.sort_key.clone()).collect();
        let found = self
            .events_at(&lane.organization_id, &lane.project_id, &sort_keys)
            .await
            .map_err(|e| LaneError::Store(e.to_string()))?;
        Ok(found
            .into_iter()
            // An item that holds no readable event was logged where it was read.
            .filter_map(|(key, json)| match AuditEvent::from_stored(json?) {
                Ok(event) => Some((key.clone(), event.with_id(key.message_id))),
                Err(e) => {
                    // Stored events were valid when stored: this is damage, not input.
                    tracing::error!(event_sort_key = key.sort_key, error = %e, "stored event unreadable; not delivered");
                    None
                }
            })
            .collect())
    }
}
