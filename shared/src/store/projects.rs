//! The projects whose events the table holds, read by a parallel `Scan` of the keys and TTLs:
//! how the notes of projects with stored events are made for events stored before capture
//! noted them.

use super::{EventTable, StoreError, attr, project_of};
use crate::store::dynamodb::classify;
use std::collections::BTreeMap;

/// Each `(organization, project)` with an item in the table, with the latest TTL of its items
/// (`None`: one has none).
pub type StoredProjects = BTreeMap<(String, String), Option<i64>>;

/// Parts of the table scanned at once.
const SEGMENTS: i32 = 4;

impl EventTable {
    /// Every `(organization, project)` with an item in the table, expired or not, with when
    /// its last item expires.
    pub async fn projects(&self) -> Result<StoredProjects, StoreError> {
        let segments = (0..SEGMENTS).map(|segment| self.projects_in(segment));
        let mut found = StoredProjects::new();
        for segment in futures::future::try_join_all(segments).await? {
            for (project, expires_at) in segment {
                keep_latest(&mut found, project, expires_at);
            }
        }
        Ok(found)
    }

    async fn projects_in(&self, segment: i32) -> Result<StoredProjects, StoreError> {
        let mut found = StoredProjects::new();
        let mut pages = self
            .client
            .scan()
            .table_name(&self.name)
            .projection_expression("#pk, #expires")
            .expression_attribute_names("#pk", attr::PARTITION_KEY)
            .expression_attribute_names("#expires", attr::EXPIRES_AT)
            .segment(segment)
            .total_segments(SEGMENTS)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(&e))?;
            for item in page.items.unwrap_or_default() {
                if let Some(project) = item
                    .get(attr::PARTITION_KEY)
                    .and_then(|v| v.as_s().ok())
                    .and_then(|pk| project_of(pk))
                {
                    let expires_at = item
                        .get(attr::EXPIRES_AT)
                        .and_then(|v| v.as_n().ok())
                        .and_then(|n| n.parse().ok());
                    keep_latest(&mut found, project, expires_at);
                }
            }
        }
        Ok(found)
    }
}

/// Keeps the later of the project's TTLs, an item without one counting as the latest.
fn keep_latest(found: &mut StoredProjects, project: (String, String), expires_at: Option<i64>) {
    let kept = found.entry(project).or_insert(expires_at);
    *kept = super::later_expiry(*kept, expires_at);
}
