//! The projects whose events the table holds, read by a parallel `Scan` of the keys: how the
//! notes of projects with stored events are made for events stored before capture noted them.

use super::{EventTable, StoreError, attr, project_of};
use crate::store::dynamodb::classify;
use std::collections::BTreeSet;

/// Parts of the table scanned at once.
const SEGMENTS: i32 = 4;

impl EventTable {
    /// Every `(organization, project)` with an item in the table, expired or not.
    pub async fn projects(&self) -> Result<BTreeSet<(String, String)>, StoreError> {
        let segments = (0..SEGMENTS).map(|segment| self.projects_in(segment));
        let found = futures::future::try_join_all(segments).await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn projects_in(&self, segment: i32) -> Result<BTreeSet<(String, String)>, StoreError> {
        let mut found = BTreeSet::new();
        let mut pages = self
            .client
            .scan()
            .table_name(&self.name)
            .projection_expression("#pk")
            .expression_attribute_names("#pk", attr::PARTITION_KEY)
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
                    found.insert(project);
                }
            }
        }
        Ok(found)
    }
}
