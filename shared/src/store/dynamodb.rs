//! Writing events to the events table: `BatchWriteItem` in requests of 25, unprocessed items and
//! transient errors retried in rounds with jittered backoff until the invocation's deadline.

use super::pages::{Chunk, Chunks, Page, PageRequest};
use super::{EventWriter, StoredEvent, StoredKey, attr, event_json, partition_key, sort_key_time};
use crate::retry::{Attempt, Backoff, GaveUp, retry};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use futures::StreamExt;
use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Mutex;
use tokio::time::Instant;

/// `BatchWriteItem` takes at most 25 requests.
pub const BATCH_WRITE_LIMIT: usize = 25;
/// How long, and how many more requests, reading events back spends on keys DynamoDB leaves
/// unread before giving up (its caller, a lane's call, is tried again later).
const UNREAD_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);
const UNREAD_ROUNDS: u32 = 8;
/// Requests in flight at once for one invocation: enough to hide latency on large SQS batches,
/// few enough not to throttle an on-demand table that has just been created.
const CONCURRENT_REQUESTS: usize = 8;
/// How long one `BatchWriteItem` may take before it counts as failed and its events go to the
/// next round: a round waits for all its requests, so one hung connection must not hold the
/// others' retries until the deadline. DynamoDB answers in milliseconds; 25 items of 400 KB
/// upload in well under a second.
pub const WRITE_ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long writing a batch goes on starting rounds. A partition throttled past it (a project
/// writing faster than its partition takes, which DynamoDB cannot split when its sort keys only
/// grow) is not waited out until the deadline: its events are handed back (SQS delivers them
/// again; from the third receive they wait on the retry queue), so the invocations that carry
/// some of them, and the other organizations' events behind those on the queue, are not held
/// for the whole timeout. Throttling that passes, passes well within it; and it is longer than
/// [`WRITE_ATTEMPT_TIMEOUT`], so a request cut for hanging is still sent again.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(8);

/// The events table, for writing.
#[derive(Debug, Clone)]
pub struct EventTable {
    pub(super) client: Client,
    /// The same table for `BatchWriteItem`, which `put_events` retries itself, each attempt
    /// cut at [`WRITE_ATTEMPT_TIMEOUT`].
    writer: Client,
    pub(super) name: String,
    backoff: Backoff,
}

/// Why an event was not stored. Each is reported back to SQS, which delivers the message again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("DynamoDB left the event unprocessed until the invocation ran out of time")]
    Unprocessed,
    #[error("DynamoDB did not answer before the invocation ran out of time")]
    TimedOut,
    #[error("DynamoDB was unavailable: {0}")]
    Unavailable(String),
    #[error("DynamoDB refused the write: {0}")]
    Refused(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        !matches!(self, StoreError::Refused(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFailure {
    pub message_id: String,
    pub reason: StoreError,
}

impl EventTable {
    pub fn new(client: Client, name: impl Into<String>) -> Self {
        Self::with_attempt_timeout(client, name, WRITE_ATTEMPT_TIMEOUT)
    }

    /// The table, with writes' attempts cut at `timeout`.
    pub fn with_attempt_timeout(
        client: Client,
        name: impl Into<String>,
        timeout: std::time::Duration,
    ) -> Self {
        let writer = Client::from_conf(
            client
                .config()
                .to_builder()
                .retry_config(crate::sdk::retried_by_the_service())
                // Merged with the client's own timeouts (its connect timeout stays).
                .timeout_config(crate::sdk::attempts_cut_at(timeout))
                .build(),
        );
        Self {
            client,
            writer,
            name: name.into(),
            backoff: Backoff::default(),
        }
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Where writing a batch stands, shared by its rounds, so that a round the deadline cuts short
/// still leaves what its answered requests learned.
#[derive(Default)]
struct Progress {
    /// To write in the next round, each with why it is still to write.
    pending: Vec<(WriteRequest, StoreError)>,
    /// Sent in the round under way and not answered yet (message ids).
    unanswered: HashSet<String>,
    /// Events DynamoDB refused: never tried again.
    refused: Vec<WriteFailure>,
}

/// What one request came to.
enum Answer {
    /// Written, but for what DynamoDB handed back.
    Written { unprocessed: Vec<WriteRequest> },
    /// Worth another try (throttling, a service fault, no answer).
    Failed(StoreError),
    /// DynamoDB refuses the request as it is: another try would not change it.
    Refused(StoreError),
}

impl EventTable {
    /// One `BatchWriteItem`, not retried.
    async fn send(&self, requests: Vec<WriteRequest>) -> Answer {
        let answer = self
            .writer
            .batch_write_item()
            .request_items(&self.name, requests)
            .send()
            .await;
        match answer {
            Ok(output) => Answer::Written {
                unprocessed: output
                    .unprocessed_items
                    .and_then(|mut tables| tables.remove(&self.name))
                    .unwrap_or_default(),
            },
            Err(err) => match classify(&err) {
                reason if reason.is_retryable() => Answer::Failed(reason),
                refused => Answer::Refused(refused),
            },
        }
    }

    /// Sends one request of a round and records what became of its events in `progress`.
    async fn write_once(&self, requests: Vec<WriteRequest>, progress: &Mutex<Progress>) {
        // The request is consumed by the call: its copy is what a failed call tries again.
        let sent = requests.clone();
        let mut again: Vec<(WriteRequest, StoreError)> = Vec::new();
        let mut refused = Vec::new();
        match self.send(requests).await {
            Answer::Written { unprocessed } => {
                again = unprocessed
                    .into_iter()
                    .map(|r| (r, StoreError::Unprocessed))
                    .collect();
            }
            Answer::Failed(reason) => {
                again = sent.iter().map(|r| (r.clone(), reason.clone())).collect();
            }
            Answer::Refused(reason) if sent.len() == 1 => refused = failed(&sent, reason),
            Answer::Refused(_) => {
                // A refused request fails as a whole; one item DynamoDB refuses must not fail
                // its neighbours, so each is sent on its own and only that one is reported.
                let alone: Vec<(WriteRequest, Answer)> = futures::stream::iter(sent.clone())
                    .map(|request| async move {
                        let answer = self.send(vec![request.clone()]).await;
                        (request, answer)
                    })
                    .buffer_unordered(CONCURRENT_REQUESTS)
                    .collect()
                    .await;
                for (request, answer) in alone {
                    match answer {
                        Answer::Written { unprocessed } if unprocessed.is_empty() => {}
                        Answer::Written { .. } => again.push((request, StoreError::Unprocessed)),
                        Answer::Failed(reason) => again.push((request, reason)),
                        Answer::Refused(reason) => {
                            refused.extend(failed(std::slice::from_ref(&request), reason));
                        }
                    }
                }
            }
        }
        let mut progress = progress.lock().unwrap_or_else(|e| e.into_inner());
        for id in sent.iter().filter_map(message_id) {
            progress.unanswered.remove(id);
        }
        progress.pending.append(&mut again);
        progress.refused.append(&mut refused);
    }
}

impl EventWriter for EventTable {
    /// Writes in rounds until `deadline`: each round sends every event still to write, in
    /// requests of 25, and what any request leaves (handed back unprocessed, or a call that
    /// failed) waits for the next round, after a backoff. So every event is tried once before
    /// any is tried again: a project writing faster than its partition takes leaves only its
    /// own events unprocessed, and the other organizations' events in the batch are stored in
    /// the first round instead of queueing behind its retries. No round starts after
    /// [`PATIENCE`].
    ///
    /// DynamoDB refuses a request with a key twice: hence distinct message ids. Claimed events
    /// ([`StoredEvent::claimed`]) are written one by one beside the rounds, each on condition.
    async fn put_events(&self, events: Vec<StoredEvent>, deadline: Instant) -> Vec<WriteFailure> {
        let (claimed, events): (Vec<_>, Vec<_>) = events.into_iter().partition(|e| e.claimed);
        let (mut failures, claimed) = tokio::join!(
            self.put_in_rounds(events, deadline),
            self.put_claimed(claimed, deadline)
        );
        failures.extend(claimed);
        failures
    }
}

impl EventTable {
    async fn put_in_rounds(
        &self,
        events: Vec<StoredEvent>,
        deadline: Instant,
    ) -> Vec<WriteFailure> {
        if events.is_empty() {
            return Vec::new();
        }
        let requests = events
            .into_iter()
            .map(|event| {
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(event.item))
                            .build()
                            .expect("item is set"),
                    )
                    .build()
            })
            // Not sent yet: what a cut before the first answer leaves is "not answered".
            .map(|request| (request, StoreError::TimedOut))
            .collect();
        let progress = Mutex::new(Progress {
            pending: requests,
            ..Progress::default()
        });
        let progress = &progress;
        let patience = Instant::now() + PATIENCE;
        let rounds = retry(&self.backoff, deadline, move || async move {
            // Out of patience (never before the first round): what is left is reported with its
            // own trouble.
            if Instant::now() >= patience {
                return Attempt::Done(());
            }
            let round = {
                let mut progress = progress.lock().unwrap_or_else(|e| e.into_inner());
                let round: Vec<WriteRequest> = std::mem::take(&mut progress.pending)
                    .into_iter()
                    .map(|(request, _)| request)
                    .collect();
                progress.unanswered = round
                    .iter()
                    .filter_map(message_id)
                    .map(str::to_owned)
                    .collect();
                round
            };
            let mut round = round.into_iter();
            let requests = std::iter::from_fn(|| {
                let request: Vec<WriteRequest> = round.by_ref().take(BATCH_WRITE_LIMIT).collect();
                (!request.is_empty()).then_some(request)
            });
            futures::stream::iter(requests)
                .map(|request| self.write_once(request, progress))
                .buffer_unordered(CONCURRENT_REQUESTS)
                .collect::<()>()
                .await;
            let progress = progress.lock().unwrap_or_else(|e| e.into_inner());
            match progress.pending.last() {
                None => Attempt::Done(()),
                // No backoff before a round that would not start.
                Some(_) if Instant::now() >= patience => Attempt::Done(()),
                Some((_, trouble)) => Attempt::Again(trouble.clone()),
            }
        })
        .await;
        let progress = std::mem::take(&mut *progress.lock().unwrap_or_else(|e| e.into_inner()));
        let mut failures = progress.refused;
        // Each event still to write, with its own last trouble.
        failures.extend(
            progress
                .pending
                .into_iter()
                .filter_map(|(request, reason)| {
                    Some(WriteFailure {
                        message_id: message_id(&request)?.to_owned(),
                        reason,
                    })
                }),
        );
        if let Err(GaveUp {
            at_deadline: true, ..
        }) = rounds
        {
            failures.extend(
                progress
                    .unanswered
                    .into_iter()
                    .map(|message_id| WriteFailure {
                        message_id,
                        reason: StoreError::TimedOut,
                    }),
            );
        }
        failures
    }
}

impl EventTable {
    /// Writes each event where its key holds nothing yet; where it holds this same event (as
    /// first stored, perhaps by an earlier build: [`super::same_event`]), the event counts as
    /// stored; where it holds another, the event is refused. Tried again, like the rounds, for
    /// [`PATIENCE`].
    async fn put_claimed(&self, events: Vec<StoredEvent>, deadline: Instant) -> Vec<WriteFailure> {
        let until = deadline.min(Instant::now() + PATIENCE);
        futures::stream::iter(events)
            .map(|event| async move {
                let reason = match retry(&self.backoff, until, || self.claim(&event)).await {
                    Ok(Ok(())) => return None,
                    Ok(Err(refused)) => refused,
                    Err(gave_up) => gave_up.last.unwrap_or(StoreError::TimedOut),
                };
                Some(WriteFailure {
                    message_id: event.message_id,
                    reason,
                })
            })
            .buffer_unordered(CONCURRENT_REQUESTS)
            .filter_map(|failure| async move { failure })
            .collect()
            .await
    }

    /// One conditional `PutItem` of a claimed event, and what its key holds when it fails.
    async fn claim(&self, event: &StoredEvent) -> Attempt<Result<(), StoreError>, StoreError> {
        let put = self
            .writer
            .put_item()
            .table_name(&self.name)
            .set_item(Some(event.item.clone()))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", attr::PARTITION_KEY)
            .send()
            .await;
        let err = match put {
            Ok(_) => return Attempt::Done(Ok(())),
            Err(err) => err,
        };
        if !err
            .as_service_error()
            .is_some_and(|e| e.is_conditional_check_failed_exception())
        {
            return tried(classify(&err));
        }
        let key = [attr::PARTITION_KEY, attr::SORT_KEY]
            .into_iter()
            .filter_map(|name| Some((name.to_owned(), event.item.get(name)?.clone())))
            .collect();
        let stored = self
            .client
            .get_item()
            .table_name(&self.name)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await;
        match stored {
            Err(err) => tried(classify(&err)),
            // Gone since the condition failed (its TTL): the next attempt writes it.
            Ok(output) if output.item.is_none() => Attempt::Again(StoreError::Unavailable(
                "the event stored under its id was removed while it was read".into(),
            )),
            Ok(output) => {
                let same = output
                    .item
                    .as_ref()
                    .is_some_and(|stored| super::same_event(stored, &event.item));
                match same {
                    true => Attempt::Done(Ok(())),
                    false => Attempt::Done(Err(StoreError::Refused(
                        "another event is stored under the id its message claims \
                         (capture-message-id)"
                            .into(),
                    ))),
                }
            }
        }
    }

    /// One page of the partitions' events (`pages`), newest first.
    pub async fn page(
        &self,
        partitions: &[String],
        request: &PageRequest,
    ) -> Result<Page, StoreError> {
        super::pages::page(self, partitions, request).await
    }
}

/// Expired items (DynamoDB deletes them within a few days of their TTL) stepped over from one
/// end of a partition before a lookup goes straight to where live events start: a busy
/// project's expired tail may hold hundreds of thousands, and reading them all would spend the
/// table's reads that every tenant shares.
const EXPIRED_STEPPED_OVER: i32 = 1_000;
/// Items a lookup reads first: an end of a partition is nearly always live, and DynamoDB reads
/// (and charges) `Limit` items whatever the filter keeps, so a lookup that read 1,000 to find
/// one would cost a hundred times what it needs.
const FIRST_LOOK: i32 = 10;

impl EventTable {
    /// The sort keys of the partition's newest and oldest events not past their TTL (`now`);
    /// `None` when it has none. Events are kept `retention` from their time.
    ///
    /// Known limit: after `RETENTION_DAYS` was lowered, an event kept under the longer
    /// retention, behind more expired items than are stepped over, is not seen here (the
    /// listings still show it) until it expires.
    pub async fn span(
        &self,
        partition: &str,
        now: i64,
        retention: crate::Retention,
    ) -> Result<Option<(String, String)>, StoreError> {
        let kept_from = sort_key_time(
            time::OffsetDateTime::from_unix_timestamp(now)
                .map_err(|e| StoreError::Refused(e.to_string()))?
                - retention.as_duration(),
        );
        let end = async |oldest_first| -> Result<Option<String>, StoreError> {
            Ok(
                match self.first_live(partition, now, oldest_first, None).await? {
                    Live::Found(sk) => Some(sk),
                    Live::Nothing => None,
                    // Everything older than the retention is expired: go straight past it.
                    Live::NotYet => match self
                        .first_live(partition, now, oldest_first, Some(&kept_from))
                        .await?
                    {
                        Live::Found(sk) => Some(sk),
                        _ => None,
                    },
                },
            )
        };
        let Some(newest) = end(false).await? else {
            return Ok(None);
        };
        // Found nothing from the other end: only after a lowered retention (see above).
        let oldest = end(true).await?.unwrap_or_else(|| newest.clone());
        Ok(Some((newest, oldest)))
    }

    /// The first sort key of a live event from one end of the partition: within its first
    /// [`FIRST_LOOK`] and [`EXPIRED_STEPPED_OVER`] items, or from `kept_from` on, however many
    /// reads that takes (after a longer retention was set, items just past the old one expired
    /// there).
    async fn first_live(
        &self,
        partition: &str,
        now: i64,
        oldest_first: bool,
        kept_from: Option<&str>,
    ) -> Result<Live, StoreError> {
        let (mut start, mut first_read) = (None, true);
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.name)
                .filter_expression("#exp > :now")
                .projection_expression("#sk")
                .expression_attribute_names("#pk", attr::PARTITION_KEY)
                .expression_attribute_names("#sk", attr::SORT_KEY)
                .expression_attribute_names("#exp", attr::EXPIRES_AT)
                .expression_attribute_values(":pk", AttributeValue::S(partition.to_owned()))
                .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
                .scan_index_forward(oldest_first)
                .limit(if first_read {
                    FIRST_LOOK
                } else {
                    EXPIRED_STEPPED_OVER
                })
                .set_exclusive_start_key(start.take());
            query = match kept_from {
                Some(from) => query
                    .key_condition_expression("#pk = :pk AND #sk >= :from")
                    .expression_attribute_values(":from", AttributeValue::S(from.to_owned())),
                None => query.key_condition_expression("#pk = :pk"),
            };
            let out = query.send().await.map_err(|e| classify(&e))?;
            let first = out
                .items
                .unwrap_or_default()
                .into_iter()
                .find_map(|mut item| item.remove(attr::SORT_KEY)?.as_s().ok().cloned());
            match (first, out.last_evaluated_key) {
                (Some(sk), _) => return Ok(Live::Found(sk)),
                (None, None) => return Ok(Live::Nothing),
                (None, Some(_)) if kept_from.is_none() && !first_read => return Ok(Live::NotYet),
                (None, Some(key)) => start = Some(key),
            }
            first_read = false;
        }
    }
}

/// What one read from an end of a partition found.
enum Live {
    Found(String),
    /// Only expired items, and more items beyond them.
    NotYet,
    Nothing,
}

impl Chunks for EventTable {
    async fn chunk(
        &self,
        partition: &str,
        request: &PageRequest,
        before: Option<&str>,
        limit: usize,
        unpacked_at_most: usize,
    ) -> Result<Chunk, StoreError> {
        // Every sort key of an event at or after `t` is >= `t`'s prefix; `$` sorts after the `#`
        // that ends the time part, so `until` itself is included. `before` is a bound too (a
        // key condition, not a start key: it may name an item of another partition), taken
        // inclusively and its own item dropped: one more item is read so that a chunk always
        // gets below it.
        let lo = request.since.map(sort_key_time);
        let hi = [
            request.until.map(|u| format!("{}$", sort_key_time(u))),
            before.map(str::to_owned),
        ]
        .into_iter()
        .flatten()
        .min();
        if let (Some(lo), Some(hi)) = (&lo, &hi)
            && lo > hi
        {
            // A range that ends before it starts holds nothing, and DynamoDB refuses it.
            return Ok(Chunk::default());
        }
        let condition = match (&lo, &hi) {
            (Some(_), Some(_)) => "#pk = :pk AND #sk BETWEEN :lo AND :hi",
            (Some(_), None) => "#pk = :pk AND #sk >= :lo",
            (None, Some(_)) => "#pk = :pk AND #sk <= :hi",
            (None, None) => "#pk = :pk",
        };
        let mut query = self
            .client
            .query()
            .table_name(&self.name)
            .key_condition_expression(condition)
            .filter_expression("#exp > :now")
            .expression_attribute_names("#pk", attr::PARTITION_KEY)
            .expression_attribute_names("#exp", attr::EXPIRES_AT)
            .expression_attribute_values(":pk", AttributeValue::S(partition.to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(request.now.to_string()))
            .scan_index_forward(false)
            .limit(i32::try_from(limit + usize::from(before.is_some())).unwrap_or(i32::MAX));
        if lo.is_some() || hi.is_some() {
            query = query.expression_attribute_names("#sk", attr::SORT_KEY);
        }
        if let Some(lo) = lo {
            query = query.expression_attribute_values(":lo", AttributeValue::S(lo));
        }
        if let Some(hi) = hi {
            query = query.expression_attribute_values(":hi", AttributeValue::S(hi));
        }
        let out = query.send().await.map_err(|e| classify(&e))?;
        let mut chunk = Chunk {
            scanned: usize::try_from(out.scanned_count).unwrap_or_default(),
            next: out
                .last_evaluated_key
                .and_then(|mut k| k.remove(attr::SORT_KEY))
                .and_then(|v| v.as_s().ok().cloned()),
            events: Vec::new(),
        };
        let items = out.items.unwrap_or_default();
        let (count, mut unpacked) = (items.len(), 0);
        for (at, item) in items.into_iter().enumerate() {
            let key = StoredKey::of(&item)
                .ok_or_else(|| StoreError::Refused("a stored event has no key".into()))?;
            if before.is_some_and(|b| key.sort_key == b) {
                continue;
            }
            let json = event_json(&item);
            unpacked += json.as_ref().map_or(0, String::len);
            chunk.events.push((key, json));
            if unpacked >= unpacked_at_most && at + 1 < count {
                // The rest is read again by the next chunk, from below this one. What the
                // query read still counts against the page's budget: reading it again is
                // reading.
                chunk.next = chunk.events.last().map(|(k, _)| k.sort_key.clone());
                break;
            }
        }
        Ok(chunk)
    }
}

impl EventTable {
    /// Stored events of one project by sort key, in the order asked (missing ones, and
    /// repeats, left out), each with its event's JSON, or `None` when its item holds no event
    /// that reads: callers tell an item gone (past its retention) from one damaged.
    pub async fn events_at(
        &self,
        organization_id: &str,
        project_id: &str,
        sort_keys: &[String],
    ) -> Result<Vec<(StoredKey, Option<String>)>, StoreError> {
        let pk = AttributeValue::S(partition_key(organization_id, project_id));
        let mut found: HashMap<String, (StoredKey, Option<String>)> = HashMap::new();
        // DynamoDB refuses a request that names a key twice; each is read once.
        let mut distinct: Vec<&String> = sort_keys.iter().collect();
        distinct.sort();
        distinct.dedup();
        // What DynamoDB leaves unread (throttled) is asked again after a backoff, for a while.
        let patience = Instant::now() + UNREAD_PATIENCE;
        for chunk in distinct.chunks(100) {
            let mut rounds = 0;
            let mut keys: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|sk| {
                    HashMap::from([
                        (attr::PARTITION_KEY.to_owned(), pk.clone()),
                        (attr::SORT_KEY.to_owned(), AttributeValue::S((*sk).clone())),
                    ])
                })
                .collect();
            while !keys.is_empty() {
                if rounds > UNREAD_ROUNDS
                    || (rounds > 0 && !self.backoff.wait(rounds, patience).await)
                {
                    return Err(StoreError::Unprocessed);
                }
                rounds += 1;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(
                        &self.name,
                        aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                            .set_keys(Some(std::mem::take(&mut keys)))
                            // An event just written (then owed) must be found.
                            .consistent_read(true)
                            .build()
                            .map_err(|e| StoreError::Refused(e.to_string()))?,
                    )
                    .send()
                    .await
                    .map_err(|e| classify(&e))?;
                for item in out
                    .responses
                    .and_then(|mut r| r.remove(&self.name))
                    .unwrap_or_default()
                {
                    let Some(key) = StoredKey::of(&item) else {
                        continue;
                    };
                    let json = event_json(&item)
                        .inspect_err(|e| {
                            tracing::error!(
                                event_sort_key = key.sort_key,
                                error = %e,
                                "stored event unreadable"
                            )
                        })
                        .ok();
                    found.insert(key.sort_key.clone(), (key, json));
                }
                keys = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.name))
                    .map(|k| k.keys)
                    .unwrap_or_default();
            }
        }
        Ok(sort_keys.iter().filter_map(|sk| found.remove(sk)).collect())
    }
}

/// The message id that ends the sort key of the item a request writes.
fn message_id(request: &WriteRequest) -> Option<&str> {
    match request.put_request()?.item().get(attr::SORT_KEY)? {
        AttributeValue::S(sk) => super::message_id_in(sk),
        _ => None,
    }
}

/// A failed attempt of a claimed event: tried again if its trouble passes.
fn tried(reason: StoreError) -> Attempt<Result<(), StoreError>, StoreError> {
    match reason.is_retryable() {
        true => Attempt::Again(reason),
        false => Attempt::Done(Err(reason)),
    }
}

fn failed(requests: &[WriteRequest], reason: StoreError) -> Vec<WriteFailure> {
    requests
        .iter()
        .filter_map(message_id)
        .map(|id| WriteFailure {
            message_id: id.to_owned(),
            reason: reason.clone(),
        })
        .collect()
}

/// Codes of trouble that passes, beside the SDK's throttling and fault codes: DynamoDB's own
/// throughput and faults, and its answers that the service's set-up (the function's
/// permissions, the table) is wrong, which refuse every event alike until an operator mends
/// it: an outage to wait out (capture's events go round the retry queue for days, and are
/// stored once it is mended), not a refusal of the event that would dead-letter it within
/// minutes.
const PASSES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "InternalServerError",
    "AccessDeniedException",
    "UnrecognizedClientException",
    "ResourceNotFoundException",
];

/// Throttling and service faults are worth another try; a refused request is not. The
/// service's own trouble is told by its status as much as by its code: a 5xx whose body names
/// no code (a load balancer's 502, an `InternalFailure`) passes like a throttle.
pub(super) fn classify<E>(err: &SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let text = DisplayErrorContext(err).to_string();
    match err {
        SdkError::ServiceError(_) if crate::sdk::in_trouble(err, PASSES) => {
            StoreError::Unavailable(text)
        }
        SdkError::ServiceError(_) => StoreError::Refused(text),
        SdkError::ConstructionFailure(_) => StoreError::Refused(text),
        _ => StoreError::Unavailable(text),
    }
}

#[cfg(test)]
mod tests;
