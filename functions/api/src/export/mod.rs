//! Export jobs in the background: the export queue hands the api function one step of an
//! export at a time. A step reads the project's events a page at a time (the listing's pager,
//! filters and all), writes them to the file, and uploads a part whenever it holds enough;
//! before its time runs out it keeps what it could not upload yet, saves where it stands and
//! puts the next step on the queue, behind the other exports' steps. A step that dies leaves
//! its message to SQS, which delivers it again once the step's lease is over: the export goes
//! on from its last saved page.

pub mod bucket;
pub mod file;

use crate::{Api, Ports};
use audit_log::clock::seconds_text;
use audit_log::message::ExportStep;
use audit_log::search::Filter;
use audit_log::store::{PageRequest, partition_key};
use audit_log::streaming::{Export, ExportState, Exports};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use file::ExportFile;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;

/// How an export is cut: the size of its parts, its pages, and the pages a step takes.
#[derive(Debug, Clone, Copy)]
pub struct ExportSteps {
    /// A part is uploaded once it holds this much (S3 refuses parts under 5 MiB but the last).
    pub part_bytes: usize,
    pub page_size: usize,
    pub pages_per_step: usize,
}

impl Default for ExportSteps {
    fn default() -> Self {
        Self {
            part_bytes: 8 * 1024 * 1024,
            page_size: 1_000,
            pages_per_step: usize::MAX,
        }
    }
}

/// A step holds its export this long: longer than the function's timeout, so no other step
/// takes the export over while this one may still write.
pub const STEP_LEASE: Duration = Duration::from_secs(60);
/// A page is not started with less time left than this: it must still be written, the bytes
/// kept, progress saved and the next step queued.
const PAGE_TIME: Duration = Duration::from_secs(8);
/// Items one page of an export reads at most.
const EXPORT_PAGE_BUDGET: usize = 5_000;
/// Steps in a row that fail before the export is given up.
const FAILED_STEPS: u32 = 3;
/// What the caller reads when the export fails; the cause is in the function's logs.
const FAILED: &str = "the export could not be written; start it again";

impl<P: Ports> Api<P> {
    /// Messages of the export queue: one step of an export each. A step that cannot be taken
    /// is reported, so SQS delivers it again and finally dead-letters it.
    pub async fn handle_exports(&self, event: SqsEvent, deadline: Instant) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for message in event.records {
            let id = message.message_id.clone().unwrap_or_default();
            let outcome = match serde_json::from_str::<ExportStep>(
                message.body.as_deref().unwrap_or_default(),
            ) {
                Ok(step) => self.export_step(&step, deadline).await,
                Err(_) => Err("the message is no export step".to_owned()),
            };
            if let Err(reason) = outcome {
                tracing::error!(message_id = id, %reason, "export step not taken; SQS will deliver it again");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

    /// One step of an export, unless it has finished or another step holds it.
    pub async fn export_step(&self, step: &ExportStep, deadline: Instant) -> Result<(), String> {
        let now = self.clock.now();
        let Some(taken) = self
            .configs
            .take_export(
                &step.organization_id,
                &step.project_id,
                &step.export_id,
                now,
                now + STEP_LEASE,
            )
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(());
        };
        // The step's own time ends with its lease, whatever the invocation has left.
        let deadline = deadline.min(Instant::now() + STEP_LEASE - PAGE_TIME);
        let mut export = taken;
        match self.advance(&mut export, deadline).await {
            Ok(()) => Ok(()),
            Err(reason) => {
                tracing::error!(
                    organization_id = step.organization_id,
                    project_id = step.project_id,
                    export_id = step.export_id,
                    %reason,
                    "export step failed"
                );
                // The export as this step last saved it (or took it): what it did since is
                // dropped, and the next step goes on from there.
                let saved = self
                    .configs
                    .export(&step.organization_id, &step.project_id, &step.export_id)
                    .await
                    .ok()
                    .flatten()
                    .filter(|saved| saved.step == export.step);
                let Some(mut export) = saved else {
                    return Err(reason);
                };
                export.failed_steps += 1;
                if export.failed_steps >= FAILED_STEPS {
                    self.give_up(&mut export).await;
                    return Ok(());
                }
                let _ = self
                    .configs
                    .save_export(&export, self.clock.now(), false)
                    .await;
                Err(reason)
            }
        }
    }

    /// Writes pages until the range is done or the step's time is.
    async fn advance(&self, export: &mut Export, deadline: Instant) -> Result<(), String> {
        let key = export.object_key();
        // Any step that saves has moved the export on.
        export.failed_steps = 0;
        if export.uploaded {
            return self.complete(export).await;
        }
        let filter = filter_of(export)?;
        let time = |t: &str| {
            OffsetDateTime::parse(t, &Rfc3339).map_err(|_| format!("the export has a bad time {t}"))
        };
        let since = export.since.as_deref().map(time).transpose()?;
        let until = time(&export.until)?;
        let upload_id = match &export.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = self.bucket.start_upload(&key, &export.file_name()).await?;
                export.upload_id = Some(id.clone());
                if !self.save(export, true).await? {
                    return Ok(());
                }
                id
            }
        };
        let mut carried_from = export.pending.clone();
        let carried = match &carried_from {
            Some(pending) => self.bucket.get(pending).await?,
            None => Vec::new(),
        };
        let mut file = ExportFile::new(export.format, carried, export.bytes == 0)
            .map_err(|e| e.to_string())?;
        let partitions = [partition_key(&export.organization_id, &export.project_id)];
        let mut pages = 0;
        loop {
            if Instant::now() + PAGE_TIME > deadline || pages == self.export_steps.pages_per_step {
                return self.hand_on(export, file, carried_from).await;
            }
            pages += 1;
            let page = self
                .events
                .page(
                    &partitions,
                    &PageRequest {
                        since,
                        until: Some(until),
                        after: export.cursor.clone(),
                        filter: filter.clone(),
                        read_budget: EXPORT_PAGE_BUDGET,
                        // What is read must still be written, kept and saved in time.
                        deadline: Some(deadline.checked_sub(PAGE_TIME / 2).unwrap_or(deadline)),
                        // Events of up to 1 MiB each: a page never holds more than a part.
                        ..PageRequest::new(
                            self.export_steps.page_size,
                            self.export_steps.part_bytes,
                            self.clock.now().unix_timestamp(),
                        )
                    },
                )
                .await
                .map_err(|e| format!("reading the events failed: {e}"))?;
            for event in &page.events {
                file.write(event).map_err(|e| e.to_string())?;
            }
            export.events += page.events.len() as u64;
            export.unreadable += page.unreadable.len() as u64;
            export.cursor = page.next_after;
            let done = export.cursor.is_none();
            if !done && file.compressed_bytes() < self.export_steps.part_bytes {
                continue;
            }
            let bytes = file.finish().map_err(|e| e.to_string())?;
            let part = self
                .bucket
                .upload_part(&key, &upload_id, export.parts.len() as i32 + 1, bytes)
                .await?;
            export.parts.push(part);
            export.bytes = export.parts.iter().map(|p| p.bytes).sum();
            export.pending = None;
            // Every part is up once the range is done: a step that dies from here on only has
            // the upload left to complete.
            export.uploaded = done;
            if !self.save(export, true).await? {
                return Ok(());
            }
            self.forget(carried_from.take().as_deref()).await;
            if done {
                return self.complete(export).await;
            }
            file = ExportFile::new(export.format, Vec::new(), false).map_err(|e| e.to_string())?;
        }
    }

    /// Joins the uploaded parts into the file: the export is completed.
    async fn complete(&self, export: &mut Export) -> Result<(), String> {
        let upload_id = export
            .upload_id
            .clone()
            .ok_or("the export's parts are up but its upload has no id")?;
        self.bucket
            .complete(&export.object_key(), &upload_id, &export.parts)
            .await?;
        export.state = ExportState::Completed;
        export.finished_at = Some(seconds_text(self.clock.now()));
        if export.unreadable > 0 {
            // The file holds everything else; what it lacks is said, not hidden.
            export.error = Some(format!(
                "{} stored events of the range could not be read and are not in the file",
                export.unreadable
            ));
        }
        if self.save(export, false).await? {
            tracing::info!(
                organization_id = export.organization_id,
                project_id = export.project_id,
                export_id = export.export_id,
                events = export.events,
                bytes = export.bytes,
                unreadable = export.unreadable,
                "export completed"
            );
        }
        Ok(())
    }

    /// Keeps what the step wrote but could not upload, saves where the export stands and
    /// queues its next step.
    async fn hand_on(
        &self,
        export: &mut Export,
        file: ExportFile,
        carried_from: Option<String>,
    ) -> Result<(), String> {
        let bytes = file.finish().map_err(|e| e.to_string())?;
        export.bytes = export.parts.iter().map(|p| p.bytes).sum::<u64>() + bytes.len() as u64;
        let pending = format!("pending/{}/{}", export.export_id, export.step);
        self.bucket.put(&pending, bytes).await?;
        export.pending = Some(pending);
        if !self.save(export, false).await? {
            return Ok(());
        }
        self.forget(carried_from.as_deref()).await;
        let next = ExportStep {
            organization_id: export.organization_id.clone(),
            project_id: export.project_id.clone(),
            export_id: export.export_id.clone(),
        };
        audit_log::message::send(&self.queues, &self.settings.export_queue_url, &next, 0)
            .await
            .map_err(|e| format!("could not queue the export's next step: {e}"))
    }

    /// Saves the export: `Ok(false)` when another step has taken it over since.
    async fn save(&self, export: &Export, keep_lease: bool) -> Result<bool, String> {
        self.configs
            .save_export(export, self.clock.now(), keep_lease)
            .await
            .map_err(|e| format!("saving the export failed: {e}"))
    }

    /// Bytes an earlier step kept that are now in a part or kept anew (the bucket's lifecycle
    /// removes what this misses).
    async fn forget(&self, pending: Option<&str>) {
        if let Some(key) = pending
            && let Err(e) = self.bucket.delete(key).await
        {
            tracing::warn!(error = %e, "an export's kept bytes were not deleted");
        }
    }

    /// Fails the export for good: its upload is given up and its slot freed.
    async fn give_up(&self, export: &mut Export) {
        if let Some(upload_id) = &export.upload_id
            && let Err(e) = self.bucket.abort(&export.object_key(), upload_id).await
        {
            tracing::warn!(error = %e, "an export's upload was not given up");
        }
        self.forget(export.pending.as_deref()).await;
        export.state = ExportState::Failed;
        export.error = Some(FAILED.into());
        export.finished_at = Some(seconds_text(self.clock.now()));
        export.pending = None;
        if let Err(e) = self.save(export, false).await {
            tracing::error!(error = %e, "a failed export could not be saved so");
        }
    }
}

/// The export's filters, as the search reads them.
pub(crate) fn filter_of(export: &Export) -> Result<Filter, String> {
    Filter::from_pairs(&export.filters).map_err(|e| e.to_string())
}
