//! capture: SQS → events table. Each record is validated on its own; valid events are written
//! in batches; exactly the records that failed are handed back to SQS, which redelivers them and
//! finally moves them to the dead-letter queue.

use audit_log::retry::{Attempt, Backoff, retry};
use audit_log::store::{EventTable, EventWriter, StoredEvent, WriteFailure};
use audit_log::streaming::{ConfigTable, ProjectIndex};
use audit_log::{AuditEvent, EventError, Retention};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use lambda_runtime::{Diagnostic, LambdaEvent};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

mod messages;
pub use messages::{Message, Messages};

/// The environment variables capture reads; `template.yaml` must give exactly these.
pub const ENVIRONMENT: [&str; 3] = [
    audit_log::settings::env::EVENTS_TABLE,
    audit_log::settings::env::CONFIG_TABLE,
    audit_log::settings::env::RETENTION_DAYS,
];

/// Projects a container remembers having noted; past this it forgets them all and notes again.
const REMEMBERED_PROJECTS: usize = 10_000;

/// An organization's project: `(organization_id, project_id)`.
pub type Project = (String, String);

/// Time kept back from the invocation's deadline to answer Lambda after the last retry.
const REPORT_MARGIN: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// None of the batch's valid records could be stored (and none was invalid): reported as an
    /// invocation error so Lambda backs off instead of spinning on the batch.
    #[error("none of the {0} records in the batch could be captured")]
    EveryRecordFailed(usize),
    #[error("a record has no message id, so its failure could not be reported alone")]
    MissingMessageId,
}

impl From<CaptureError> for Diagnostic {
    fn from(e: CaptureError) -> Self {
        Diagnostic {
            error_type: match e {
                CaptureError::EveryRecordFailed(_) => "EveryRecordFailed",
                CaptureError::MissingMessageId => "MissingMessageId",
            }
            .into(),
            error_message: e.to_string(),
        }
    }
}

/// The capture function over where it writes: the events table and the projects with events
/// (in the configuration table), or doubles in unit tests.
pub struct Capture<W = EventTable, P = ConfigTable> {
    table: W,
    projects: P,
    /// Projects this container has noted already: each is noted once, not once per event.
    noted: Mutex<HashSet<Project>>,
    /// How noting a project is tried again until the batch's deadline.
    backoff: Backoff,
    retention: Retention,
}

impl<W: EventWriter, P: ProjectIndex> Capture<W, P> {
    pub fn new(table: W, projects: P, retention: Retention) -> Self {
        Self {
            table,
            projects,
            noted: Mutex::new(HashSet::new()),
            backoff: Backoff::default(),
            retention,
        }
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub async fn handle(
        &self,
        event: LambdaEvent<Messages>,
    ) -> Result<SqsBatchResponse, CaptureError> {
        let deadline = audit_log::retry::deadline_before(event.context.deadline(), REPORT_MARGIN);
        self.capture(event.payload.records, deadline).await
    }

    /// Captures one SQS batch, retrying storage until `deadline`.
    pub async fn capture(
        &self,
        records: impl IntoIterator<Item = impl Into<Message>>,
        deadline: Instant,
    ) -> Result<SqsBatchResponse, CaptureError> {
        let records: Vec<Message> = records.into_iter().map(Into::into).collect();
        let received = records.len();
        let mut failed: Vec<String> = Vec::new();
        let mut seen = HashSet::with_capacity(received);
        let mut valid = Vec::with_capacity(received);
        let mut projects: HashMap<Project, Vec<usize>> = HashMap::new();
        for record in records {
            let Some(message_id) = record.message_id.filter(|id| !id.is_empty()) else {
                tracing::error!(received, "record without a message id; failing the batch");
                return Err(CaptureError::MissingMessageId);
            };
            // SQS may hand the same message twice in one batch; DynamoDB refuses a batch that
            // names one key twice, so the copy shares the first one's fate.
            if !seen.insert(message_id.clone()) {
                continue;
            }
            match prepare(
                &message_id,
                record.body.as_deref().unwrap_or_default(),
                self.retention,
            ) {
                Ok((stored, project)) => {
                    projects.entry(project).or_default().push(valid.len());
                    valid.push(Some(stored));
                }
                Err(reason) => {
                    tracing::warn!(message_id, %reason, "audit event rejected");
                    failed.push(message_id);
                }
            }
        }
        let rejected = failed.len();
        // A project is noted before its events are stored, or they are not stored (SQS hands
        // them back): what capture stores, its organization's listing of projects finds.
        if let Err(unnoted) = self.note(projects, deadline).await {
            for i in unnoted {
                if let Some(stored) = valid[i].take() {
                    failed.push(stored.message_id);
                }
            }
        }
        let valid: Vec<StoredEvent> = valid.into_iter().flatten().collect();
        let attempted = valid.len() + (failed.len() - rejected);
        let unwritten = self.table.put_events(valid, deadline).await;
        for WriteFailure { message_id, reason } in &unwritten {
            tracing::error!(message_id, %reason, retryable = reason.is_retryable(), "audit event not stored");
        }
        failed.extend(unwritten.into_iter().map(|f| f.message_id));
        tracing::info!(
            received,
            stored = attempted - (failed.len() - rejected),
            rejected,
            not_stored = failed.len() - rejected,
            "batch captured"
        );
        // Storage down for the whole batch is an invocation error, so Lambda backs off rather
        // than spin. An invalid message is always answered as a batch item failure (the
        // contract's word), so a batch holding one is answered record by record.
        if rejected == 0 && !failed.is_empty() && failed.len() == seen.len() {
            return Err(CaptureError::EveryRecordFailed(received));
        }
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = failed
            .into_iter()
            .map(|id| {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                failure
            })
            .collect();
        Ok(response)
    }

    /// Notes the projects not noted yet, trying again those a try did not reach until
    /// halfway to `deadline` (storing the events has the rest); on failure, the events
    /// (indexes) of the projects still not noted. One organization whose partition is
    /// throttled leaves only its own projects unnoted, and cannot take the batch's time.
    async fn note(
        &self,
        projects: HashMap<Project, Vec<usize>>,
        deadline: Instant,
    ) -> Result<(), Vec<usize>> {
        let new: Vec<(Project, Vec<usize>)> = {
            let noted = self.noted.lock().unwrap_or_else(|e| e.into_inner());
            projects
                .into_iter()
                .filter(|(p, _)| !noted.contains(p))
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        // Places in `new` of the projects still to note.
        let left = Mutex::new((0..new.len()).collect::<Vec<usize>>());
        let (left_ref, new_ref) = (&left, &new);
        let now = Instant::now();
        let halfway = now + deadline.saturating_duration_since(now) / 2;
        let noting = retry(&self.backoff, halfway, || async move {
            let places = left_ref.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let keys: Vec<Project> = places.iter().map(|&i| new_ref[i].0.clone()).collect();
            let outcome = self.projects.note(&keys).await;
            let mut left = left_ref.lock().unwrap_or_else(|e| e.into_inner());
            match outcome {
                Ok(()) => {
                    left.clear();
                    Attempt::Done(())
                }
                Err(unnoted) => {
                    *left = unnoted.projects.iter().map(|&j| places[j]).collect();
                    Attempt::Again(unnoted.error)
                }
            }
        })
        .await;
        let left = left.into_inner().unwrap_or_else(|e| e.into_inner());
        let (unnoted, reached): (Vec<_>, Vec<_>) = new
            .into_iter()
            .enumerate()
            .partition(|(i, _)| left.contains(i));
        {
            let mut noted = self.noted.lock().unwrap_or_else(|e| e.into_inner());
            if noted.len() + reached.len() > REMEMBERED_PROJECTS {
                noted.clear();
            }
            noted.extend(reached.into_iter().map(|(_, (project, _))| project));
        }
        match noting {
            Ok(()) => Ok(()),
            Err(gave_up) => {
                tracing::error!(
                    error = gave_up.describe("the configuration table"),
                    projects = unnoted.len(),
                    "projects not noted; their events are handed back"
                );
                Err(unnoted
                    .into_iter()
                    .flat_map(|(_, (_, events))| events)
                    .collect())
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// Capture's work on one message before storage: parse, validate, lay out the item; with the
/// project it belongs to.
pub fn prepare(
    message_id: &str,
    body: &str,
    retention: Retention,
) -> Result<(StoredEvent, Project), EventError> {
    let event = AuditEvent::from_json(body)?;
    let stored = StoredEvent::new(message_id, &event, retention)?;
    Ok((
        stored,
        (event.organization_id().into(), event.project_id().into()),
    ))
}
