//! Export jobs: a project's stored events of a range, with the search's filters, written to
//! one gzip file in the stack's export bucket, a step at a time. The job's item keeps where it
//! stands (the page cursor, the multipart upload and its parts, the bytes not yet uploaded), so
//! a step that dies is taken over by the next delivery of its message. [`RUNNING_EXPORTS`] run
//! at once per organization at most: as many slot items, each held by one running export, whose
//! heartbeat goes stale if the export dies for good.

use super::{
    ConfigError, ConfigTable, from_item, is_condition_failure, organization_key, s, store_error,
    to_item,
};
use crate::store::sort_key_part;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use time::OffsetDateTime;

/// An export that has not started a step for this long is shown still running with a note: it
/// waits behind the other exports' steps (at most 5 run at once over the stack, so more than
/// about 330 running exports make one wait this long), or its step was dead-lettered.
pub const EXPORT_STALLED_AFTER_SECONDS: i64 = 30 * 60;
/// A slot whose export has not started a step for this long is taken over, and the export
/// shown failed: it died for good. Four times the stall, so a backlog that only makes exports
/// wait (up to about 1,300 running at once) frees no slot of an export still going.
pub const EXPORT_STALE_AFTER_SECONDS: i64 = 4 * EXPORT_STALLED_AFTER_SECONDS;

/// The last step time (as `updated_at` keeps it, RFC 3339 seconds in UTC, which order as text)
/// before which an export is dead for good at `now`.
pub(crate) fn stale_at(now: OffsetDateTime) -> String {
    crate::clock::seconds_text(now - time::Duration::seconds(EXPORT_STALE_AFTER_SECONDS))
}

/// What a stalled export says while it is shown running.
pub const EXPORT_STALLED: &str = "no step for 30 minutes: the export is waiting behind other \
     exports' steps, or its step was dead-lettered (the operators are alerted); it goes on when \
     its step comes, and is shown failed after 2 hours without one";
/// Seconds after which a slot naming an export that has no item names one that never started.
const UNSTARTED_AFTER_SECONDS: i64 = 60;
/// Exports one organization may run at once: enough for a person's formats and filters side by
/// side; the export queue's workers take every running export's steps in turn, so one
/// organization's exports slow, never stop, another's.
pub const RUNNING_EXPORTS: usize = 5;
/// An export's job and file are kept this long (the bucket's objects expire with it).
pub const EXPORT_KEPT_DAYS: i64 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportState {
    Running,
    Completed,
    Failed,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::EnumString, strum::Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum ExportFormat {
    Ndjson,
    Csv,
}

impl ExportFormat {
    pub fn extension(self) -> &'static str {
        match self {
            Self::Ndjson => "ndjson.gz",
            Self::Csv => "csv.gz",
        }
    }
}

/// One uploaded part of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportPart {
    pub number: i32,
    pub etag: String,
    pub bytes: u64,
}

/// An export job, as its item keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    pub export_id: String,
    pub organization_id: String,
    pub project_id: String,
    pub state: ExportState,
    pub format: ExportFormat,
    /// RFC 3339; none: everything kept.
    pub since: Option<String>,
    pub until: String,
    /// The search's filters by name, as the caller gave them.
    #[serde(default)]
    pub filters: BTreeMap<String, String>,
    /// Events written so far (all of them once completed).
    pub events: u64,
    /// Bytes of the file written so far.
    pub bytes: u64,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    /// Where the next step goes on from (the page cursor); none before the first page.
    pub cursor: Option<String>,
    /// The file's multipart upload, once started.
    pub upload_id: Option<String>,
    #[serde(default)]
    pub parts: Vec<ExportPart>,
    /// The object holding what a step wrote but did not upload (too small to be a part).
    pub pending: Option<String>,
    /// Steps taken so far, and the one that may save now.
    #[serde(default)]
    pub step: u64,
    /// Steps in a row that failed; the export fails after a few.
    #[serde(default)]
    pub failed_steps: u32,
    /// Epoch seconds until which the step that took the export holds it (0: nobody).
    #[serde(default)]
    pub lease_until: i64,
    /// The organization's slot the export holds while it runs.
    #[serde(default)]
    pub slot: usize,
    /// Every part is uploaded: only the upload's completion is left.
    #[serde(default)]
    pub uploaded: bool,
    /// Stored items of the range that could not be read, so are not in the file.
    #[serde(default)]
    pub unreadable: u64,
}

impl Export {
    /// Where the file is kept in the bucket.
    pub fn object_key(&self) -> String {
        format!("exports/{}.{}", self.export_id, self.format.extension())
    }

    /// The name a download is saved under.
    pub fn file_name(&self) -> String {
        format!("audit-logs-{}.{}", self.export_id, self.format.extension())
    }
}

fn export_key(
    organization_id: &str,
    project_id: &str,
    id: &str,
) -> HashMap<String, AttributeValue> {
    organization_key(
        organization_id,
        format!("export#{}#{id}", sort_key_part(project_id)),
    )
}

fn slot_key(organization_id: &str, slot: usize) -> HashMap<String, AttributeValue> {
    organization_key(organization_id, format!("export-slot#{slot}"))
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Export jobs and the slots that let [`RUNNING_EXPORTS`] run at a time per organization.
pub trait Exports: Sync {
    /// Starts the export in a free slot of its organization (noted in `export.slot`):
    /// `Ok(false)` when every slot is held by a running export.
    fn start_export(
        &self,
        export: &mut Export,
        at: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, ConfigError>> + Send;

    fn export(
        &self,
        organization_id: &str,
        project_id: &str,
        export_id: &str,
    ) -> impl Future<Output = Result<Option<Export>, ConfigError>> + Send;

    /// Takes the running export for one step until `lease_until`: none when it has finished or
    /// another step holds it. The export comes back with its `step` moved on.
    fn take_export(
        &self,
        organization_id: &str,
        project_id: &str,
        export_id: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> impl Future<Output = Result<Option<Export>, ConfigError>> + Send;

    /// Saves the step's progress, keeping its lease while `keep_lease`; when the export has
    /// finished, frees its slot. `Ok(false)`: another step took the export over, nothing saved.
    fn save_export(
        &self,
        export: &Export,
        now: OffsetDateTime,
        keep_lease: bool,
    ) -> impl Future<Output = Result<bool, ConfigError>> + Send;
}

impl Export {
    /// When the export and its file are gone: `EXPORT_KEPT_DAYS` after it was asked for (its
    /// file was created after that, and S3 keeps it at least as long).
    pub fn expires_at(&self, now: OffsetDateTime) -> OffsetDateTime {
        let created = OffsetDateTime::parse(
            &self.created_at,
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap_or(now);
        created + time::Duration::days(EXPORT_KEPT_DAYS)
    }

    fn to_item(&self, now: OffsetDateTime) -> Result<HashMap<String, AttributeValue>, ConfigError> {
        let mut item = to_item(self, "export")?;
        item.extend(export_key(
            &self.organization_id,
            &self.project_id,
            &self.export_id,
        ));
        item.insert(
            super::EXPIRES_AT.into(),
            n(self.expires_at(now).unix_timestamp()),
        );
        Ok(item)
    }
}

/// The export holding a slot, as its item names it.
#[derive(Debug)]
struct SlotHolder {
    export_id: String,
    project_id: String,
    heartbeat: String,
}

impl ConfigTable {
    /// Takes the organization's `slot` for the export: when it is free or stale, or still as
    /// `holder` left it. `Err` with who holds it (none when its item does not say, as slots
    /// taken before their items named the project).
    async fn take_slot(
        &self,
        export: &Export,
        slot: usize,
        at: OffsetDateTime,
        holder: Option<&SlotHolder>,
    ) -> Result<Result<(), Option<SlotHolder>>, ConfigError> {
        let now = at.unix_timestamp();
        let mut item = slot_key(&export.organization_id, slot);
        item.insert("export_id".into(), s(&export.export_id));
        item.insert("project_id".into(), s(&export.project_id));
        item.insert("heartbeat".into(), n(now));
        let put = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            );
        let put = match holder {
            None => put
                .condition_expression(
                    "attribute_not_exists(pk) OR heartbeat < :stale OR export_id = :id",
                )
                .expression_attribute_values(":stale", n(now - EXPORT_STALE_AFTER_SECONDS))
                // Its own already: the SDK sent the put again after it had landed.
                .expression_attribute_values(":id", s(&export.export_id)),
            Some(holder) => put
                .condition_expression(
                    "(export_id = :holder AND heartbeat = :beat) OR export_id = :id",
                )
                .expression_attribute_values(":id", s(&export.export_id))
                .expression_attribute_values(":holder", s(&holder.export_id))
                .expression_attribute_values(":beat", AttributeValue::N(holder.heartbeat.clone())),
        };
        match put.send().await {
            Ok(_) => Ok(Ok(())),
            Err(e) if is_condition_failure(&e) => {
                let old = e.as_service_error().and_then(|e| match e {
                    aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => c.item.as_ref(),
                    _ => None,
                });
                let text = |name: &str| {
                    old.and_then(|item| item.get(name))
                        .and_then(|v| v.as_s().or_else(|_| v.as_n()).ok())
                        .cloned()
                };
                let holder = match (text("export_id"), text("project_id"), text("heartbeat")) {
                    (Some(export_id), Some(project_id), Some(heartbeat)) => Some(SlotHolder {
                        export_id,
                        project_id,
                        heartbeat,
                    }),
                    _ => None,
                };
                Ok(Err(holder))
            }
            Err(e) => Err(store_error(e)),
        }
    }

    /// Frees the export's slot, or keeps it fresh while the export runs; a slot another export
    /// took over (this one went stale) is left alone.
    async fn mind_slot(&self, export: &Export, now: i64) -> Result<(), ConfigError> {
        let key = slot_key(&export.organization_id, export.slot);
        let id = s(&export.export_id);
        if export.state == ExportState::Running {
            let beat = self
                .client
                .update_item()
                .table_name(&self.name)
                .set_key(Some(key))
                .update_expression("SET heartbeat = :now")
                .condition_expression("export_id = :id")
                .expression_attribute_values(":id", id)
                .expression_attribute_values(":now", n(now))
                .send()
                .await;
            return match beat {
                Err(e) if !is_condition_failure(&e) => Err(store_error(e)),
                _ => Ok(()),
            };
        }
        let freed = self
            .client
            .delete_item()
            .table_name(&self.name)
            .set_key(Some(key))
            .condition_expression("export_id = :id")
            .expression_attribute_values(":id", id)
            .send()
            .await;
        match freed {
            Err(e) if !is_condition_failure(&e) => Err(store_error(e)),
            _ => Ok(()),
        }
    }
}

impl Exports for ConfigTable {
    async fn start_export(
        &self,
        export: &mut Export,
        at: OffsetDateTime,
    ) -> Result<bool, ConfigError> {
        let mut held = Vec::new();
        let mut taken = None;
        for slot in 0..RUNNING_EXPORTS {
            match self.take_slot(export, slot, at, None).await? {
                Ok(()) => {
                    taken = Some(slot);
                    break;
                }
                Err(holder) => held.extend(holder.map(|h| (slot, h))),
            }
        }
        if taken.is_none() {
            // A slot whose export has ended is free: its release was lost (the export's last
            // save stands whatever happens to the slot), and it would stay held 2 hours.
            for (slot, holder) in held {
                let ended = match self
                    .export(
                        &export.organization_id,
                        &holder.project_id,
                        &holder.export_id,
                    )
                    .await?
                {
                    Some(held) => held.state != ExportState::Running,
                    // An export's item is written just after its slot is taken: only a slot
                    // this old names one that never started.
                    None => holder
                        .heartbeat
                        .parse::<i64>()
                        .is_ok_and(|beat| beat < at.unix_timestamp() - UNSTARTED_AFTER_SECONDS),
                };
                if ended
                    && self
                        .take_slot(export, slot, at, Some(&holder))
                        .await?
                        .is_ok()
                {
                    taken = Some(slot);
                    break;
                }
            }
        }
        let Some(slot) = taken else {
            return Ok(false);
        };
        export.slot = slot;
        let written = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(export.to_item(at)?))
            .send()
            .await;
        if let Err(e) = written {
            // Not started: its slot is not held for it.
            let mut unstarted = export.clone();
            unstarted.state = ExportState::Failed;
            self.mind_slot(&unstarted, at.unix_timestamp()).await.ok();
            return Err(store_error(e));
        }
        Ok(true)
    }

    async fn export(
        &self,
        organization_id: &str,
        project_id: &str,
        export_id: &str,
    ) -> Result<Option<Export>, ConfigError> {
        self.item(export_key(organization_id, project_id, export_id))
            .await?
            .map(|item| from_item(item, "export"))
            .transpose()
    }

    async fn take_export(
        &self,
        organization_id: &str,
        project_id: &str,
        export_id: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Option<Export>, ConfigError> {
        let taken = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(export_key(organization_id, project_id, export_id)))
            .update_expression("SET lease_until = :until, updated_at = :moved ADD step :one")
            // Not one shown failed for want of steps, whose slot may be another's by now: its
            // step, come at last from a backlog, is dropped rather than revive it.
            .condition_expression(
                "#state = :running AND lease_until <= :now AND updated_at >= :stale_at",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":running", s("running"))
            .expression_attribute_values(":now", n(now.unix_timestamp()))
            .expression_attribute_values(":stale_at", s(&stale_at(now)))
            .expression_attribute_values(":until", n(lease_until.unix_timestamp()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":moved", s(&crate::clock::seconds_text(now)))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match taken {
            Ok(out) => {
                let export: Option<Export> = out
                    .attributes
                    .map(|item| from_item(item, "export"))
                    .transpose()?;
                if let Some(export) = &export
                    && let Err(e) = self.mind_slot(export, now.unix_timestamp()).await
                {
                    tracing::warn!(export_id = export.export_id, error = %e, "an export's slot was not kept up");
                }
                Ok(export)
            }
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn save_export(
        &self,
        export: &Export,
        now: OffsetDateTime,
        keep_lease: bool,
    ) -> Result<bool, ConfigError> {
        let mut export = export.clone();
        export.updated_at = crate::clock::seconds_text(now);
        if !keep_lease {
            export.lease_until = 0;
        }
        let saved = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(export.to_item(now)?))
            .condition_expression("step = :step")
            .expression_attribute_values(":step", n(export.step as i64))
            .send()
            .await;
        match saved {
            Ok(_) => {}
            Err(e) if is_condition_failure(&e) => return Ok(false),
            Err(e) => return Err(store_error(e)),
        }
        // The save stands whatever happens to the slot: one left behind goes stale by itself.
        if let Err(e) = self.mind_slot(&export, now.unix_timestamp()).await {
            tracing::warn!(export_id = export.export_id, error = %e, "an export's slot was not kept up");
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn export() -> Export {
        Export {
            export_id: "0123456789abcdef0123456789abcdef".into(),
            organization_id: "org#1".into(),
            project_id: "project 1".into(),
            state: ExportState::Running,
            format: ExportFormat::Csv,
            since: None,
            until: "2026-11-30T10:00:00Z".into(),
            filters: BTreeMap::from([("q".into(), "revoked, \"v1\"".into())]),
            events: 120_000,
            bytes: 9_000_000,
            created_at: "2026-11-30T10:00:00Z".into(),
            updated_at: "2026-11-30T10:05:00Z".into(),
            finished_at: None,
            error: None,
            cursor: Some("2026-11-01T10:00:00.000000000Z#m-1".into()),
            upload_id: Some("upload-1".into()),
            parts: vec![ExportPart {
                number: 1,
                etag: "\"abc\"".into(),
                bytes: 8_388_700,
            }],
            pending: Some("pending/0123456789abcdef0123456789abcdef/3".into()),
            step: 3,
            failed_steps: 1,
            lease_until: 1_764_497_160,
            slot: 1,
            uploaded: false,
            unreadable: 0,
        }
    }

    #[test]
    fn an_export_comes_back_from_its_item_whole_and_expires_seven_days_after_it_was_asked_for() {
        let saved_later = datetime!(2026-12-02 10:00 UTC);
        let item = export().to_item(saved_later).unwrap();
        assert_eq!(
            from_item::<Export>(item.clone(), "export").unwrap(),
            export()
        );
        assert_eq!(
            item[super::super::EXPIRES_AT].as_n().unwrap(),
            &datetime!(2026-12-07 10:00 UTC).unix_timestamp().to_string()
        );
        assert_eq!(item["state"].as_s().unwrap(), "running");
        assert_eq!(item["step"].as_n().unwrap(), "3");
        assert_eq!(item["lease_until"].as_n().unwrap(), "1764497160");
        // Absent options are left out, not stored as NULL.
        assert!(!item.contains_key("since") && !item.contains_key("error"));
    }

    #[test]
    fn the_file_is_named_for_its_export_and_format() {
        let e = export();
        assert_eq!(
            e.object_key(),
            "exports/0123456789abcdef0123456789abcdef.csv.gz"
        );
        assert_eq!(
            e.file_name(),
            "audit-logs-0123456789abcdef0123456789abcdef.csv.gz"
        );
    }
}
