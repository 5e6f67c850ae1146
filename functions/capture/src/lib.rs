//! capture: SQS → events table. Each record is validated on its own; valid events are written
//! in batches; exactly the records that failed are handed back to SQS, which redelivers them and
//! finally moves them to the dead-letter queue, but for valid events the tables keep refusing,
//! which go round through the retry queue (`requeue.rs`).

use audit_log::clock::{Clock, SystemClock};
use audit_log::retry::{Attempt, Backoff, retry};
use audit_log::store::dynamodb::PATIENCE;
use audit_log::store::{EventTable, EventWriter, StoredEvent, WriteFailure};
use audit_log::streaming::{ConfigTable, Note, ProjectIndex, note_for};
use audit_log::{AuditEvent, EventError, Retention};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use lambda_runtime::{Diagnostic, LambdaEvent};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

mod messages;
pub mod requeue;
pub use messages::{Message, Messages};
pub use requeue::{Requeue, Requeued, RetryQueue};

/// The environment variables capture reads; `template.yaml` must give exactly these.
pub const ENVIRONMENT: [&str; 4] = [
    audit_log::settings::env::EVENTS_TABLE,
    audit_log::settings::env::CONFIG_TABLE,
    audit_log::settings::env::RETENTION_DAYS,
    audit_log::settings::env::EVENTS_RETRY_QUEUE,
];

/// Why the events of projects that could not be noted are handed back.
const UNNOTED: &str = "its project could not be noted in the configuration table";

/// Projects a container remembers having noted; past this it forgets them all and notes again.
const REMEMBERED_PROJECTS: usize = 10_000;

/// An organization's project: `(organization_id, project_id)`.
pub type Project = (String, String);

/// How long the one call noting all of a batch's new projects may take before each
/// organization's are tried on their own: a `PutItem` answers in milliseconds, the SDK's
/// retries of a throttled one in seconds.
const FIRST_NOTE: Duration = Duration::from_secs(2);

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

/// The capture function over where it writes: the events table, the projects with events (in
/// the configuration table) and the retry queue it sends unstored events to, or doubles in unit
/// tests.
pub struct Capture<W = EventTable, P = ConfigTable, Q = RetryQueue> {
    table: W,
    projects: P,
    /// None: every unstored event is handed back to SQS.
    requeue: Option<Q>,
    /// How long after its first message an unstored event still goes round the retry queue.
    requeue_window: Duration,
    /// Projects this container has noted already, with when the note it wrote may expire: each
    /// is noted once, not once per event, until an event would outlive its note.
    noted: Mutex<HashMap<Project, i64>>,
    /// How noting a project is tried again until the batch's deadline.
    backoff: Backoff,
    retention: Retention,
}

impl<W: EventWriter, P: ProjectIndex> Capture<W, P> {
    pub fn new(table: W, projects: P, retention: Retention) -> Self {
        Self {
            table,
            projects,
            requeue: None,
            requeue_window: requeue::WINDOW,
            noted: Mutex::new(HashMap::new()),
            backoff: Backoff::default(),
            retention,
        }
    }
}

impl<W: EventWriter, P: ProjectIndex, Q: Requeue> Capture<W, P, Q> {
    /// Capture that sends valid events it could not store to the retry queue `queue`, from their
    /// third receive, and takes the ids that queue's messages carry (`requeue.rs`).
    pub fn with_requeue<R: Requeue>(self, queue: R) -> Capture<W, P, R> {
        Capture {
            table: self.table,
            projects: self.projects,
            requeue: Some(queue),
            requeue_window: self.requeue_window,
            noted: self.noted,
            backoff: self.backoff,
            retention: self.retention,
        }
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Capture whose unstored events go round the retry queue for `window` (local runs, whose
    /// retry queue has no delay, would otherwise spin on an event for days).
    pub fn with_requeue_window(mut self, window: Duration) -> Self {
        self.requeue_window = window;
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
        let mut records: Vec<Message> = records.into_iter().map(Into::into).collect();
        let received = records.len();
        // The records of each event, by the id it is stored under. SQS may hand the same
        // message twice in one batch, and a message on the retry queue may be there twice (a
        // copy whose first was not deleted in time); DynamoDB refuses a batch that names one
        // key twice, so copies share the first one's fate.
        let mut copies: HashMap<String, Vec<usize>> = HashMap::with_capacity(received);
        // Ids of the events rejected, each with why.
        let mut rejected: Vec<(String, EventError)> = Vec::new();
        let mut valid = Vec::with_capacity(received);
        let mut projects: HashMap<Project, Vec<usize>> = HashMap::new();
        // Events stored under an id their message only claims: never sent to the retry queue,
        // where the id would be trusted.
        let mut claimed: HashSet<String> = HashSet::new();
        // Records that name the id of another record of the batch with another body.
        let mut apart: Vec<usize> = Vec::new();
        // Messages stored under their own ids (or the retry queue's) first: where a claim names
        // the id of one of them, the claim is what waits.
        let (own, claims): (Vec<usize>, Vec<usize>) =
            (0..received).partition(|&i| !records[i].claims(self.retried(&records[i])));
        let own = own.into_iter().map(|i| (i, false));
        for (i, claims) in own.chain(claims.into_iter().map(|i| (i, true))) {
            let record = &records[i];
            let (Some(message_id), Some(capture_id)) = (
                record.message_id.as_deref().filter(|id| !id.is_empty()),
                record.capture_id(),
            ) else {
                tracing::error!(received, "record without a message id; failing the batch");
                return Err(CaptureError::MissingMessageId);
            };
            match copies.entry(capture_id.to_owned()) {
                // A copy is the same message again: another body under the same id (a claim
                // beside the message it names, say) is answered on its own, next time.
                Entry::Occupied(first) if records[first.get()[0]].body != record.body => {
                    tracing::warn!(
                        message_id,
                        stored_as = capture_id,
                        "another message of the batch holds this id with another body; handed back"
                    );
                    apart.push(i);
                    continue;
                }
                Entry::Occupied(mut first) => {
                    // A copy of one rejected is told by its own id too, with the same reason.
                    if let Some((_, reason)) = rejected.iter().find(|(id, _)| id == capture_id) {
                        tracing::warn!(message_id, stored_as = capture_id, %reason, "audit event rejected");
                    }
                    first.get_mut().push(i);
                    continue;
                }
                Entry::Vacant(slot) => {
                    slot.insert(vec![i]);
                }
            }
            match prepare(
                capture_id,
                record.body.as_deref().unwrap_or_default(),
                self.retention,
            ) {
                Ok((mut stored, project)) => {
                    if claims {
                        stored = stored.claimed();
                        claimed.insert(capture_id.to_owned());
                    }
                    projects.entry(project).or_default().push(valid.len());
                    valid.push(Some(stored));
                }
                Err(reason) => {
                    tracing::warn!(message_id, %reason, "audit event rejected");
                    rejected.push((capture_id.to_owned(), reason));
                }
            }
        }
        let events = copies.len();
        let attempted = valid.len();
        // An event that may be sent again leaves time for sending it.
        let may_requeue = self.requeue.is_some()
            && records
                .iter()
                .any(|r| r.receives() >= requeue::FROM_RECEIVE);
        let storing = match may_requeue {
            true => deadline.checked_sub(requeue::SEND_TIME).unwrap_or(deadline),
            false => deadline,
        };
        // A project is noted before its events are stored, or they are not stored (SQS hands
        // them back): what capture stores, its organization's listing of projects finds. The
        // events of projects this container noted before are stored at once; meanwhile the
        // new projects are noted in one try, their events stored as soon as it answers, and
        // each organization whose projects it missed tries again on its own, as long as the
        // events table's writes wait on a throttled partition, and never past halfway
        // (storing has the rest): one organization's throttled partition holds back only its
        // own events, and not the invocation for long.
        let (known, new) = self.split_noted(projects, &mut valid);
        let now = Instant::now();
        let noting = (now + deadline.saturating_duration_since(now) / 2).min(now + PATIENCE);
        let (mut unwritten, (refused, unnoted)) = tokio::join!(
            self.store(known, storing),
            self.note_then_store(new, noting, storing),
        );
        unwritten.extend(refused);
        // Each event not stored is told by its messages' ids (every copy's), so its sender can
        // find it.
        let told = |stored_as: &str, reason: &dyn std::fmt::Display, retryable: bool| {
            for &i in &copies[stored_as] {
                tracing::error!(
                    message_id = records[i].message_id,
                    stored_as,
                    %reason,
                    retryable,
                    "audit event not stored"
                );
            }
        };
        for event in &unnoted {
            told(&event.message_id, &UNNOTED, true);
        }
        for WriteFailure { message_id, reason } in &unwritten {
            told(message_id, reason, reason.is_retryable());
        }
        // Events not stored, by the id they are stored under, with whether the reason passes.
        let mut unstored: Vec<(String, bool)> =
            unnoted.into_iter().map(|e| (e.message_id, true)).collect();
        unstored.extend(
            unwritten
                .into_iter()
                .map(|f| (f.message_id, f.reason.is_retryable())),
        );
        for (capture_id, passes) in &mut unstored {
            *passes &= !claimed.contains(capture_id);
        }
        let not_stored = unstored.len();
        let (requeued, unstored) = self
            .requeue(&mut records, &copies, unstored, deadline)
            .await;
        tracing::info!(
            received,
            stored = attempted - not_stored,
            rejected = rejected.len(),
            not_stored,
            requeued,
            apart = apart.len(),
            "batch captured"
        );
        // Storage down for the whole batch is an invocation error, so Lambda backs off rather
        // than spin. An invalid message is always answered as a batch item failure (the
        // contract's word), so a batch holding one is answered record by record.
        if rejected.is_empty() && requeued == 0 && unstored.len() == events && events > 0 {
            return Err(CaptureError::EveryRecordFailed(received));
        }
        let mut response = SqsBatchResponse::default();
        let mut answered = HashSet::new();
        let rejected_ids = rejected.iter().map(|(id, _)| id);
        let reported = rejected_ids.chain(&unstored).map(|id| &copies[id]);
        for &i in reported.flatten().chain(&apart) {
            let Some(message_id) = records[i].message_id.take() else {
                continue;
            };
            if answered.insert(message_id.clone()) {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = message_id;
                response.batch_item_failures.push(failure);
            }
        }
        Ok(response)
    }

    /// Whether `record` came from the retry queue, whose attributes are capture's own.
    fn retried(&self, record: &Message) -> bool {
        let source = record.event_source_arn.as_deref();
        self.requeue
            .as_ref()
            .zip(source)
            .is_some_and(|(queue, arn)| queue.holds(arn))
    }

    /// Sends the unstored events that are due ([`requeue::is_due`]) to the retry queue; how
    /// many went, and the ids of the events left to hand back.
    async fn requeue(
        &self,
        records: &mut [Message],
        copies: &HashMap<String, Vec<usize>>,
        unstored: Vec<(String, bool)>,
        deadline: Instant,
    ) -> (usize, Vec<String>) {
        let Some(queue) = &self.requeue else {
            return (0, unstored.into_iter().map(|(id, _)| id).collect());
        };
        let now_ms = SystemClock.now_ms();
        let (mut due, mut left) = (Vec::new(), Vec::new());
        for (capture_id, passes) in unstored {
            // Copies count as the one that has been round the longest.
            let copies_of = &copies[&capture_id];
            let receives = copies_of.iter().map(|&i| records[i].receives()).max();
            let receives = receives.unwrap_or(1);
            let first_sent_ms = copies_of
                .iter()
                .filter_map(|&i| records[i].first_sent_ms(self.retried(&records[i])))
                .min()
                .unwrap_or(now_ms)
                .min(now_ms);
            let first = &mut records[copies_of[0]];
            let body_bytes = first.body.as_ref().map_or(0, String::len);
            let redrivable = requeue::size(body_bytes, &capture_id) <= requeue::REDRIVABLE_BYTES;
            if passes
                && redrivable
                && requeue::is_due(receives, first_sent_ms, now_ms, self.requeue_window)
            {
                let body = first.body.take().unwrap_or_default();
                due.push(Requeued {
                    message_id: first.message_id.clone().unwrap_or_default(),
                    group: first
                        .attributes
                        .group
                        .clone()
                        .or_else(|| requeue::group_named(&body)),
                    body,
                    capture_id,
                    first_sent_ms,
                });
            } else {
                left.push(capture_id);
            }
        }
        let sending: Vec<(String, String)> = due
            .iter()
            .map(|m| (m.message_id.clone(), m.capture_id.clone()))
            .collect();
        let unsent: HashSet<String> = queue.requeue(due, deadline).await.into_iter().collect();
        let mut sent = 0;
        for (message_id, capture_id) in sending {
            if unsent.contains(&message_id) {
                left.push(capture_id);
            } else {
                tracing::warn!(
                    message_id,
                    stored_as = capture_id,
                    "audit event not stored; sent to the retry queue"
                );
                sent += 1;
            }
        }
        (sent, left)
    }

    /// The events (taken from `valid`) of projects this container has noted for as long as
    /// they last, in the batch's order, and the other projects with theirs.
    fn split_noted(
        &self,
        projects: HashMap<Project, Vec<usize>>,
        valid: &mut [Option<StoredEvent>],
    ) -> (Vec<StoredEvent>, Vec<Noting>) {
        let (mut known, mut new) = (Vec::new(), Vec::new());
        let noted = lock(&self.noted);
        let expires_at = |i: &usize| valid[*i].as_ref().map_or(0, |e| e.expires_at);
        for (project, events) in projects {
            let covered = noted
                .get(&project)
                .is_some_and(|&until| events.iter().all(|i| expires_at(i) <= until));
            match covered {
                true => known.extend(events),
                false => new.push((project, events)),
            }
        }
        known.sort_unstable();
        let mut take = |i: &usize| valid[*i].take();
        let known = known.iter().filter_map(&mut take).collect();
        let new = new
            .into_iter()
            .map(|(project, events)| (project, events.iter().filter_map(&mut take).collect()))
            .collect();
        (known, new)
    }

    /// Stores the events, if any; those the table refused.
    async fn store(&self, events: Vec<StoredEvent>, storing: Instant) -> Vec<WriteFailure> {
        match events.is_empty() {
            true => Vec::new(),
            false => self.table.put_events(events, storing).await,
        }
    }

    /// Notes the new projects in one try, cut short after [`FIRST_NOTE`] (the SDK backs off
    /// inside a call to a throttled partition, and one organization's must not hold the
    /// others' long), then stores the events of those noted while each organization the try
    /// missed tries again on its own until `until`; the events the table refused, and those of
    /// projects still not noted (handed back).
    async fn note_then_store(
        &self,
        new: Vec<Noting>,
        until: Instant,
        storing: Instant,
    ) -> (Vec<WriteFailure>, Vec<StoredEvent>) {
        if new.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let keys: Vec<Note> = new.iter().map(note_of).collect();
        let first = until.min(Instant::now() + FIRST_NOTE);
        let missed = match tokio::time::timeout_at(first, self.projects.note(&keys)).await {
            Ok(outcome) => missed_by(&outcome),
            Err(_) => (0..keys.len()).collect(),
        };
        let (left, noted) = self.sort_out(new, &missed);
        let mut late: HashMap<String, Vec<Noting>> = HashMap::new();
        for (project, events) in left {
            late.entry(project.0.clone())
                .or_default()
                .push((project, events));
        }
        let (mut refused, late) = tokio::join!(
            self.store(noted, storing),
            futures::future::join_all(
                late.into_values()
                    .map(|late| self.note_again_then_store(late, until, storing))
            )
        );
        let mut unnoted = Vec::new();
        for (more_refused, events) in late {
            refused.extend(more_refused);
            unnoted.extend(events);
        }
        (refused, unnoted)
    }

    /// Tries again to note one organization's projects, until `until`, and stores the events
    /// of those it notes; the events the table refused, and those of the projects still not
    /// noted (handed back).
    async fn note_again_then_store(
        &self,
        late: Vec<Noting>,
        until: Instant,
        storing: Instant,
    ) -> (Vec<WriteFailure>, Vec<StoredEvent>) {
        // The projects still to note, with their events; the events of those noted since.
        let state = Mutex::new((late, Vec::new()));
        let state_ref = &state;
        let attempt = || async move {
            // The projects stay in `state` over the call: an attempt cut short loses none.
            let keys: Vec<Note> = lock(state_ref).0.iter().map(note_of).collect();
            let outcome = self.projects.note(&keys).await;
            let mut state = lock(state_ref);
            let (left, noted) = &mut *state;
            let (still, now_noted) = self.sort_out(std::mem::take(left), &missed_by(&outcome));
            *left = still;
            noted.extend(now_noted);
            match outcome {
                Ok(()) => Attempt::Done(()),
                Err(unnoted) => Attempt::Again(unnoted.error),
            }
        };
        // The batch made the first try: this one waits first, as any retry does.
        let gave_up = match self.backoff.wait(1, until).await {
            true => retry(&self.backoff, until, attempt)
                .await
                .err()
                .map(|g| g.describe("the configuration table")),
            false => Some("no time was left to note them again".to_owned()),
        };
        let (left, noted) = state.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(error) = gave_up {
            tracing::error!(
                %error,
                projects = left.len(),
                "projects not noted; their events are handed back"
            );
        }
        let refused = self.store(noted, storing).await;
        (refused, left.into_iter().flat_map(|(_, e)| e).collect())
    }

    /// Of projects a call tried to note, those it missed (by place, in `missed`) with their
    /// events, and the events of the others, which are remembered as noted.
    fn sort_out(
        &self,
        projects: Vec<Noting>,
        missed: &HashSet<usize>,
    ) -> (Vec<Noting>, Vec<StoredEvent>) {
        let (mut left, mut noted, mut reached) = (Vec::new(), Vec::new(), Vec::new());
        for (i, noting) in projects.into_iter().enumerate() {
            if missed.contains(&i) {
                left.push(noting);
            } else {
                reached.push(note_of(&noting));
                noted.extend(noting.1);
            }
        }
        self.remember(reached);
        (left, noted)
    }

    /// Remembers projects noted, so that this container does not note them again while their
    /// notes last.
    fn remember(&self, projects: Vec<Note>) {
        let mut noted = lock(&self.noted);
        if noted.len() + projects.len() > REMEMBERED_PROJECTS {
            noted.clear();
        }
        for (project, until) in projects {
            let until = until.unwrap_or(i64::MAX);
            noted
                .entry(project)
                .and_modify(|kept| *kept = (*kept).max(until))
                .or_insert(until);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A project to note, with its events that wait for it.
type Noting = (Project, Vec<StoredEvent>);

/// The note that covers the project's events waiting for it.
fn note_of((project, events): &Noting) -> Note {
    let last = events.iter().map(|e| e.expires_at).max().unwrap_or(0);
    note_for(project.clone(), last)
}

/// The places of the projects a call to note them missed.
fn missed_by(outcome: &Result<(), audit_log::streaming::Unnoted>) -> HashSet<usize> {
    match outcome {
        Ok(()) => HashSet::new(),
        Err(unnoted) => unnoted.projects.iter().copied().collect(),
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
