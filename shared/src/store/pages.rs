//! Pages of stored events, newest first: one project's, or an organization's across its
//! projects merged by time, kept or dropped by a search's filter, and cut short when a page has
//! read its budget, so that every page answers in time however rare the matches are.
//!
//! Each partition is read newest first, a chunk at a time. An event may be answered only once
//! no partition can still hold a newer one: once every partition has been read down to it. When
//! the budget is spent, the page ends where the least-read partition stands; the next page goes
//! on from there, and no event is answered twice or skipped.
//!
//! Two partitions may hold the same sort key (a message id claimed alike in two projects): the
//! merged order is the sort key, then the partition, and a page of several partitions that ends
//! at an event names both, so the next one goes on with the other partition's.
//!
//! An item that cannot be read (written by a newer release with a dictionary this one does not
//! know, after a rollback; or damaged) does not fail its page: the page names it beside its
//! events, so a reader can say what it could not show and the rest stays readable.

use super::{DecodeError, StoreError, StoredKey, bytes_in_response};
use crate::search::Filter;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;
use time::OffsetDateTime;

/// A read of stored events, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// Where the previous page ended (its last event, or how far it had read when its budget
    /// was spent), as its `next_after` gave it: this page holds older events.
    pub after: Option<String>,
    pub limit: usize,
    /// Bytes the page's events may take in the Lambda response (capped at 6 MB), counted as
    /// [`super::bytes_in_response`] does.
    pub max_bytes: usize,
    /// Events whose TTL (epoch seconds) is at or before this are left out.
    pub now: i64,
    pub filter: Filter,
    /// Items the page may read from the table before it answers with what it found (every
    /// partition's first chunk is read whatever the budget).
    pub read_budget: usize,
    /// When the page answers with what it found, however much budget is left; reached while
    /// the first chunks are read, [`StoreError::TimedOut`].
    pub deadline: Option<tokio::time::Instant>,
}

impl PageRequest {
    /// Every event in the range, up to `limit`, within the response's bytes.
    pub fn new(limit: usize, max_bytes: usize, now: i64) -> Self {
        Self {
            since: None,
            until: None,
            after: None,
            limit,
            max_bytes,
            now,
            filter: Filter::default(),
            read_budget: usize::MAX,
            deadline: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Page {
    pub events: Vec<Box<RawValue>>,
    /// Where each event is stored, in the same order.
    pub keys: Vec<StoredKey>,
    /// Items among the page's that could not be read as events, newest first.
    pub unreadable: Vec<StoredKey>,
    /// Where the next page starts, when more events may follow: a sort key, then the
    /// partition of the page's last event when it merged several.
    pub next_after: Option<String>,
}

/// Parts a position: the sort key, then (ending a page of several partitions at an event) the
/// partition after this character, which neither holds.
const THEN_PARTITION: char = '\u{1f}';

/// The sort key a position (a page's `next_after`) stands at.
pub fn sort_key_of(position: &str) -> &str {
    position
        .split_once(THEN_PARTITION)
        .map_or(position, |(sk, _)| sk)
}

/// The bound below which `partition`'s events are still to come after `position`: in the
/// merged order a partition that sorts before the position's has its item at the same sort key
/// still to come, so its bound takes that key in (a space sorts after the key and before
/// every longer key, whose characters are never control characters).
fn bound<'a>(position: &'a str, partition: &str) -> Cow<'a, str> {
    match position.split_once(THEN_PARTITION) {
        Some((sk, last)) if partition < last => Cow::Owned(format!("{sk} ")),
        Some((sk, _)) => Cow::Borrowed(sk),
        None => Cow::Borrowed(position),
    }
}

/// Some events of one partition, newest first.
#[derive(Debug, Clone, Default)]
pub struct Chunk {
    /// Events older than the chunk's bound, within the request's range and not expired: each
    /// one's JSON, or why it could not be read.
    pub events: Vec<(StoredKey, Result<String, DecodeError>)>,
    /// Items the table read for it.
    pub scanned: usize,
    /// The sort key down to which the partition has been read, when older items may remain.
    pub next: Option<String>,
}

/// Where pages are read from: the events table, or memory in tests.
pub trait Chunks: Sync {
    /// About `limit` items of `partition` (one more when `before` is given) older than
    /// `before` (all, without it), within the request's range; cut short once its events
    /// take `unpacked` bytes (at least one event).
    fn chunk(
        &self,
        partition: &str,
        request: &PageRequest,
        before: Option<&str>,
        limit: usize,
        unpacked: usize,
    ) -> impl Future<Output = Result<Chunk, StoreError>> + Send;
}

/// Bytes of unpacked events a page holds at once, shared by its partitions' chunks: 1,000
/// events of up to 1 MiB each that pack small fit in one query's 1 MB, and unpacked they
/// would be a gigabyte in a 512 MB function.
const UNPACKED_BYTES: usize = 32 << 20;
/// Items read at once when most of them may be filtered out.
const FILTERED_CHUNK: usize = 1_000;
/// Partitions whose first chunks are read at once.
const CONCURRENT_READS: usize = 16;
/// Partitions up to which a filtered page keeps half its budget for turns after the first
/// reads, one after another: a round of turns is at most this many reads.
const MAX_TURNS: usize = 64;

enum Read {
    Unread,
    /// Read down to this sort key; older items may remain.
    Down(String),
    Done,
}

struct Partition<'a> {
    name: &'a str,
    read: Read,
    /// Events read and kept by the filter, not answered yet; `None`: an unreadable item.
    found: VecDeque<(StoredKey, Option<Box<RawValue>>)>,
}

/// One page of the partitions' events, merged newest first.
pub async fn page(
    source: &impl Chunks,
    partitions: &[String],
    request: &PageRequest,
) -> Result<Page, StoreError> {
    let mut parts: Vec<Partition> = partitions
        .iter()
        .map(|name| Partition {
            name,
            read: Read::Unread,
            found: VecDeque::new(),
        })
        .collect();
    // Every partition's first chunk, read together, each with its share of the budget: a
    // partition's events can be answered only once every partition has been read that far.
    let share = first_share(request, parts.len());
    let unpacked = UNPACKED_BYTES / parts.len().max(1);
    let mut scanned = 0;
    for group in parts.chunks_mut(CONCURRENT_READS) {
        // No event can be answered before every partition is read: an organization with too
        // many projects to read in time gets an error, not a page that runs past its caller.
        if request
            .deadline
            .is_some_and(|d| tokio::time::Instant::now() >= d)
        {
            return Err(StoreError::TimedOut);
        }
        // A loop, not a closure: the future stays `Send` for any caller.
        let mut reads = Vec::with_capacity(group.len());
        for part in group.iter_mut() {
            reads.push(read_more(source, part, request, share, unpacked));
        }
        let read = futures::future::try_join_all(reads);
        let read = match request.deadline {
            // An organization's projects, read in rounds: the last round too ends in time.
            Some(deadline) if partitions.len() > CONCURRENT_READS => {
                tokio::time::timeout_at(deadline, read)
                    .await
                    .map_err(|_| StoreError::TimedOut)?
            }
            _ => read.await,
        };
        scanned += read?.into_iter().sum::<usize>();
    }
    let mut page = Page::default();
    let mut bytes = 0;
    // The partition of the item answered last, which a position names among several.
    let several = parts.len() > 1;
    let mut answered_from: Option<&str> = None;
    // The partition read last, and how many times in a row it was the one behind.
    let (mut last, mut run) = (usize::MAX, 0u32);
    // A turn: what is left of the budget shared by the partitions that hold more (read to
    // their end, the others take no turn), so one round of turns spends it.
    let holding = parts
        .iter()
        .filter(|p| matches!(p.read, Read::Down(_)))
        .count();
    let turn = share.max(request.read_budget.saturating_sub(scanned) / holding.max(1));
    loop {
        // No partition holds an unread event newer than this; `None`: all are read to the end.
        let horizon: Option<String> = parts
            .iter()
            .filter_map(|p| match &p.read {
                Read::Down(sk) => Some(sk),
                _ => None,
            })
            .max()
            .cloned();
        // Answer every event no unread one can precede.
        while let Some(p) = newest_found(&mut parts).filter(|p| {
            horizon
                .as_deref()
                .is_none_or(|h| p.found[0].0.sort_key.as_str() >= h)
        }) {
            let size = p.found[0]
                .1
                .as_ref()
                .map_or(0, |e| bytes_in_response(e.get()))
                + 1;
            if page.events.len() == request.limit
                || (!page.events.is_empty() && bytes + size > request.max_bytes)
            {
                return Ok(page.going_on(answered_from));
            }
            answered_from = several.then_some(p.name);
            match p.found.pop_front().expect("a found event") {
                (key, Some(event)) => {
                    bytes += size;
                    page.events.push(event);
                    page.keys.push(key);
                }
                (key, None) => page.unreadable.push(key),
            }
        }
        let Some(horizon) = horizon else {
            // Every partition read to its end, every event answered.
            return Ok(page);
        };
        if page.events.len() == request.limit {
            return Ok(page.going_on(answered_from));
        }
        let out_of_time = request
            .deadline
            .is_some_and(|d| tokio::time::Instant::now() >= d);
        if scanned >= request.read_budget || out_of_time {
            // Everything down to the horizon is answered: the next page reads below it.
            page.next_after = Some(horizon);
            return Ok(page);
        }
        let behind = parts
            .iter()
            .position(|p| matches!(p.read, Read::Down(ref sk) if *sk == horizon))
            .expect("the partition at the horizon");
        (last, run) = (behind, if behind == last { run + 1 } else { 0 });
        let wanted = if request.filter.is_empty() {
            // One more than the page still needs tells whether another page follows; a share
            // of it when other partitions may hold the rest.
            share.min(request.limit - page.events.len() + 1)
        } else {
            // Partitions taking turns are read a turn at a time, as far as each other; one
            // that stays behind the others (the busy project among quiet ones) twice as much
            // each time, so the budget takes the page far down it rather than being spent
            // below the horizon, read again by the next page.
            turn.saturating_mul(1 << run.min(16))
                .min(FILTERED_CHUNK)
                .min(request.read_budget - scanned)
        };
        scanned += read_more(source, &mut parts[behind], request, wanted, unpacked).await?;
    }
}

impl Page {
    /// The page ends at its last item (of partition `from`, among several); the next one goes
    /// on below it.
    fn going_on(mut self, from: Option<&str>) -> Self {
        self.next_after = [self.keys.last(), self.unreadable.last()]
            .into_iter()
            .flatten()
            .map(|k| &k.sort_key)
            .min()
            .map(|sk| match from {
                Some(partition) => format!("{sk}{THEN_PARTITION}{partition}"),
                None => sk.clone(),
            });
        self
    }
}

/// Items each partition's first chunk reads: when a filter may keep few of them, a fair part
/// of half the budget (the other half goes to the partitions found behind the others: read
/// all at first, a busy partition among quiet, older ones would end every page a share down
/// it, and the quiet ones' reads below would be read again by each page), or of all of it
/// when there are more partitions than turns; about as many as the page could take from it
/// otherwise.
fn first_share(request: &PageRequest, partitions: usize) -> usize {
    let partitions = partitions.max(1);
    if request.filter.is_empty() {
        ((request.limit + 1) / partitions + 1).clamp(2, request.limit + 1)
    } else if partitions <= MAX_TURNS {
        (request.read_budget / 2 / partitions).clamp(1, FILTERED_CHUNK)
    } else {
        (request.read_budget / partitions).clamp(1, FILTERED_CHUNK)
    }
}

/// The partition whose next found event is the newest.
fn newest_found<'p, 'a>(parts: &'p mut [Partition<'a>]) -> Option<&'p mut Partition<'a>> {
    parts
        .iter_mut()
        .filter(|p| !p.found.is_empty())
        .max_by(|a, b| (&a.found[0].0.sort_key, a.name).cmp(&(&b.found[0].0.sort_key, b.name)))
}

/// Reads up to `wanted` more items of the partition and keeps what the filter keeps; the
/// items it scanned.
async fn read_more(
    source: &impl Chunks,
    part: &mut Partition<'_>,
    request: &PageRequest,
    wanted: usize,
    unpacked: usize,
) -> Result<usize, StoreError> {
    let before = match &part.read {
        Read::Unread => request.after.as_deref().map(|a| bound(a, part.name)),
        Read::Down(sk) => Some(Cow::Borrowed(sk.as_str())),
        Read::Done => return Ok(0),
    };
    let chunk = source
        .chunk(
            part.name,
            request,
            before.as_deref(),
            wanted.max(1),
            unpacked,
        )
        .await?;
    for (key, json) in chunk.events {
        let event = json
            .map_err(|e| e.to_string())
            .and_then(|json| RawValue::from_string(json).map_err(|_| "not JSON".to_owned()));
        match event {
            Ok(event) if request.filter.is_empty() => part.found.push_back((key, Some(event))),
            Ok(event) => match request.filter.matches_json(event.get()) {
                Ok(true) => part.found.push_back((key, Some(event))),
                Ok(false) => {}
                // Whether it matches cannot be told: the page names it.
                Err(_) => {
                    unreadable(&key, "not an event the filter can read");
                    part.found.push_back((key, None));
                }
            },
            Err(why) => {
                unreadable(&key, &why);
                part.found.push_back((key, None));
            }
        }
    }
    part.read = match chunk.next {
        Some(sk) => Read::Down(sk),
        None => Read::Done,
    };
    Ok(chunk.scanned)
}

fn unreadable(key: &StoredKey, why: &str) {
    tracing::error!(
        event_sort_key = key.sort_key,
        error = why,
        "stored event unreadable; named apart from the page's events"
    );
}

#[cfg(test)]
mod tests;
