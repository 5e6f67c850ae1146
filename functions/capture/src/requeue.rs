//! Valid events the tables keep refusing, put on the retry queue rather than left to reach the
//! dead-letter queue.
//!
//! SQS moves a message to the dead-letter queue on its fifth receive (the queue's
//! `maxReceiveCount`), about 15 minutes after it came at the queue's visibility timeout: an
//! outage of the tables any longer would leave valid events there until a person redrives them.
//! From its third receive, an event capture could not store for a reason that passes (throttling,
//! an outage, no answer in time) is sent to the retry queue, delayed 15 minutes, carrying the id
//! of the message that first brought it (its item's key: however many copies come, the event is
//! stored once) and when that one was sent; the message in hand is then answered as done. The
//! retry queue feeds capture as the events queue does, and its events go round the same way, for
//! `WINDOW` after the first was sent; past it the message is handed back as before and ends in
//! the dead-letter queue, whose alarm calls a person.
//!
//! Only capture may send to the retry queue (its queue policy denies everyone else), so only
//! there are the attributes capture's own: a producer could set them on the events queue, to
//! store its event under another's key.

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use futures::StreamExt;
use std::time::Duration;
use tokio::time::Instant;

/// The message attribute that carries the id of the message that first brought the event.
pub const MESSAGE_ID_ATTRIBUTE: &str = "capture-message-id";
/// The message attribute that carries when that first message was sent (epoch ms).
pub const FIRST_SENT_ATTRIBUTE: &str = "capture-first-sent-at";
/// The receive from which an unstored event is sent again rather than handed back: two short
/// of the queue's `maxReceiveCount`, so a send that fails still leaves a receive to try again.
pub const FROM_RECEIVE: u32 = 3;
/// How long after its first message an event is still sent again. Past it, the dead-letter
/// queue (kept 14 days from the last copy) holds it for a person to redrive.
pub const WINDOW: Duration = Duration::from_secs(4 * 24 * 3600);
/// The events queue's `MaximumMessageSize` (template.yaml). A message the dead-letter queue
/// takes from the retry queue is redriven there, its attributes with it (SQS counts them), so
/// only an event that fits it with them is sent on: a larger one (its body within about 100
/// bytes of that limit) is handed back as it came, to be dead-lettered and redriven without them.
pub const REDRIVABLE_BYTES: usize = 1_047_552;
/// SQS's longest delay: a table down for hours costs each event three receives every 21 minutes
/// (15 minutes delayed, two visibility timeouts of 3).
pub const DELAY_SECONDS: i32 = 900;
/// Time kept for sending again from what storing a batch may take.
pub const SEND_TIME: Duration = Duration::from_secs(3);
/// What one `SendMessageBatch` may carry: 10 messages, and 256 KiB in all (the limit before
/// SQS took 1 MiB; a larger message goes alone).
const BATCH_MESSAGES: usize = 10;
const BATCH_BYTES: usize = 262_144;
/// `SendMessageBatch` calls in flight at once.
const SENDS_AT_ONCE: usize = 8;

/// An event to put back on the events queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requeued {
    /// The SQS id of the message in hand, which is answered as done once this is sent.
    pub message_id: String,
    /// The id of the message that first brought the event.
    pub capture_id: String,
    pub first_sent_ms: i64,
    pub body: String,
    /// The message group it came in (its organization's, on a fair queue): it goes back in it.
    pub group: Option<String>,
}

impl Requeued {
    fn size(&self) -> usize {
        size(self.body.len(), &self.capture_id)
    }
}

/// The bytes SQS counts for a message sent on: its body and its attributes' names, types and
/// values.
pub fn size(body_bytes: usize, capture_id: &str) -> usize {
    body_bytes
        + MESSAGE_ID_ATTRIBUTE.len()
        + "String".len()
        + capture_id.len()
        + FIRST_SENT_ATTRIBUTE.len()
        + "Number".len()
        + 20
}

/// The message group of the organization an event names, for an event that came in none (its
/// producer set none, or Lambda did not hand it on): sent again, it goes in its organization's
/// group as the service's own messages do.
pub fn group_named(body: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named<'a> {
        #[serde(borrow)]
        organization_id: std::borrow::Cow<'a, str>,
    }
    // A byte order mark before the JSON, as the event is read past one.
    let body = body.strip_prefix('\u{feff}').unwrap_or(body);
    let named: Named = serde_json::from_str(body).ok()?;
    Some(audit_log::message::group_of(&named.organization_id))
}

/// Where capture puts events back (the retry queue; in tests, memory).
pub trait Requeue: Sync {
    /// Sends each message again, delayed; the SQS ids of those that could not be sent.
    fn requeue(
        &self,
        messages: Vec<Requeued>,
        deadline: Instant,
    ) -> impl std::future::Future<Output = Vec<String>> + Send;

    /// Whether messages from the queue of `event_source_arn` are the ones this sent.
    fn holds(&self, event_source_arn: &str) -> bool;
}

/// The retry queue, for sending events again.
#[derive(Debug, Clone)]
pub struct RetryQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    delay_seconds: i32,
}

impl RetryQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
            delay_seconds: DELAY_SECONDS,
        }
    }

    /// The queue, with events sent again visible after `delay_seconds` (local runs and tests
    /// do not wait 15 minutes).
    pub fn with_delay(mut self, delay_seconds: i32) -> Self {
        self.delay_seconds = delay_seconds;
        self
    }

    /// One `SendMessageBatch`; the SQS ids of the messages it did not send.
    async fn send(&self, batch: Vec<Requeued>, deadline: Instant) -> Vec<String> {
        let mut ids = Vec::with_capacity(batch.len());
        let mut entries = Vec::with_capacity(batch.len());
        for (i, m) in batch.into_iter().enumerate() {
            let attributes = [
                (MESSAGE_ID_ATTRIBUTE, "String", m.capture_id),
                (FIRST_SENT_ATTRIBUTE, "Number", m.first_sent_ms.to_string()),
            ]
            .into_iter()
            .filter_map(|(name, data_type, value)| {
                let value = MessageAttributeValue::builder()
                    .data_type(data_type)
                    .string_value(value)
                    .build();
                Some((name.to_owned(), value.ok()?))
            })
            .collect();
            let entry = SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .delay_seconds(self.delay_seconds)
                .set_message_attributes(Some(attributes))
                .set_message_group_id(m.group)
                .message_body(m.body)
                .build();
            ids.push(m.message_id);
            // Only the id and the body are required, and both are given.
            entries.extend(entry.ok());
        }
        let sent = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send();
        match tokio::time::timeout_at(deadline, sent).await {
            // What SQS does not name as sent is not sent: its event is handed back.
            Ok(Ok(out)) => {
                let mut unsent = vec![true; ids.len()];
                for sent in out.successful() {
                    if let Some(flag) = sent
                        .id()
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| unsent.get_mut(i))
                    {
                        *flag = false;
                    }
                }
                for refused in out.failed() {
                    tracing::error!(
                        message_id = refused.id().parse::<usize>().ok().and_then(|i| ids.get(i)),
                        code = refused.code(),
                        "the retry queue refused an event"
                    );
                }
                ids.into_iter()
                    .zip(unsent)
                    .filter_map(|(id, unsent)| unsent.then_some(id))
                    .collect()
            }
            Ok(Err(e)) => {
                tracing::error!(
                    error = %aws_sdk_sqs::error::DisplayErrorContext(e),
                    events = ids.len(),
                    "events could not be sent to the retry queue"
                );
                ids
            }
            Err(_) => {
                tracing::error!(
                    events = ids.len(),
                    "the retry queue did not answer before the invocation's deadline"
                );
                ids
            }
        }
    }
}

impl Requeue for RetryQueue {
    async fn requeue(&self, messages: Vec<Requeued>, deadline: Instant) -> Vec<String> {
        futures::stream::iter(batches(messages))
            .map(|batch| self.send(batch, deadline))
            .buffer_unordered(SENDS_AT_ONCE)
            .flat_map(futures::stream::iter)
            .collect()
            .await
    }

    fn holds(&self, event_source_arn: &str) -> bool {
        is_queue_of(&self.url, event_source_arn)
    }
}

/// Whether a queue's URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`) and ARN
/// (`arn:<partition>:sqs:<region>:<account>:<name>`) name the same queue.
pub fn is_queue_of(url: &str, arn: &str) -> bool {
    let mut url = url.trim_end_matches('/').rsplit('/');
    let (url_name, url_account) = (url.next(), url.next());
    let mut arn = arn.rsplit(':');
    let (arn_name, arn_account) = (arn.next(), arn.next());
    url_name.is_some() && (url_name, url_account) == (arn_name, arn_account)
}

/// The messages in `SendMessageBatch`es, in order: each at most 10 messages and 256 KiB, but
/// for a larger message alone.
pub fn batches(messages: Vec<Requeued>) -> Vec<Vec<Requeued>> {
    let mut batches: Vec<Vec<Requeued>> = Vec::new();
    let mut bytes = 0;
    for m in messages {
        let size = m.size();
        match batches.last_mut() {
            Some(last) if last.len() < BATCH_MESSAGES && bytes + size <= BATCH_BYTES => {
                bytes += size;
                last.push(m);
            }
            _ => {
                bytes = size;
                batches.push(vec![m]);
            }
        }
    }
    batches
}

/// Whether an event that could not be stored for a reason that passes is sent again now: from
/// its [`FROM_RECEIVE`]th receive, within `window` ([`WINDOW`] in Lambda) of its first message.
/// A first message dated ahead of `now_ms` counts as sent now.
pub fn is_due(receives: u32, first_sent_ms: i64, now_ms: i64, window: Duration) -> bool {
    let age = now_ms.saturating_sub(first_sent_ms.min(now_ms));
    receives >= FROM_RECEIVE && age < window.as_millis() as i64
}

/// Events put back in memory, from the queue `arn:aws:sqs:us-east-1:123456789012:retry`;
/// refusing the messages of the ids in `refusing`, and, as SQS, any in a group it does not
/// take.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemoryQueue {
    pub sent: std::sync::Mutex<Vec<Requeued>>,
    pub refusing: std::sync::Mutex<std::collections::HashSet<String>>,
}

#[cfg(test)]
impl MemoryQueue {
    pub const ARN: &str = "arn:aws:sqs:us-east-1:123456789012:retry";
}

#[cfg(test)]
impl Requeue for MemoryQueue {
    async fn requeue(&self, messages: Vec<Requeued>, _deadline: Instant) -> Vec<String> {
        let refusing = self.refusing.lock().unwrap();
        let (refused, sent): (Vec<_>, Vec<_>) = messages.into_iter().partition(|m| {
            refusing.contains(&m.message_id)
                || m.group
                    .as_ref()
                    .is_some_and(|g| !audit_log::message::is_group_id(g))
        });
        self.sent.lock().unwrap().extend(sent);
        refused.into_iter().map(|m| m.message_id).collect()
    }

    fn holds(&self, event_source_arn: &str) -> bool {
        event_source_arn == Self::ARN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_sent_again_in_its_organizations_group_even_behind_a_byte_order_mark() {
        let body = r#"{"status":"OK","organization_id":"org-1"}"#;
        let group = Some(audit_log::message::group_of("org-1"));
        assert_eq!(group_named(body), group);
        assert_eq!(group_named(&format!("\u{feff}{body}")), group);
        assert_eq!(group_named("not json"), None);
    }

    fn requeued(n: usize, body_bytes: usize) -> Requeued {
        Requeued {
            message_id: format!("m-{n}"),
            capture_id: format!("first-{n}"),
            first_sent_ms: 1_700_000_000_000,
            body: "x".repeat(body_bytes),
            group: None,
        }
    }

    #[test]
    fn batches_hold_ten_messages_and_256_kib_at_most_and_a_larger_message_alone() {
        let small: Vec<Requeued> = (0..25).map(|n| requeued(n, 1_000)).collect();
        let sizes: Vec<usize> = batches(small).iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 5]);

        let large: Vec<Requeued> = (0..5).map(|n| requeued(n, 100_000)).collect();
        let sizes: Vec<usize> = batches(large).iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 2, 1]);

        let mixed = vec![requeued(0, 10), requeued(1, 900_000), requeued(2, 10)];
        let split = batches(mixed);
        let ids: Vec<Vec<&str>> = split
            .iter()
            .map(|b| b.iter().map(|m| m.message_id.as_str()).collect())
            .collect();
        assert_eq!(ids, [vec!["m-0"], vec!["m-1"], vec!["m-2"]]);
    }

    #[test]
    fn a_queue_is_known_by_its_account_and_name_in_its_url_and_its_arn() {
        let url = "https://sqs.us-east-1.amazonaws.com/123456789012/stack-EventsRetryQueue-x1";
        assert!(is_queue_of(
            url,
            "arn:aws:sqs:us-east-1:123456789012:stack-EventsRetryQueue-x1"
        ));
        assert!(is_queue_of(
            "http://127.0.0.1:5000/123456789012/retry/",
            "arn:aws:sqs:us-east-1:123456789012:retry"
        ));
        for other in [
            "arn:aws:sqs:us-east-1:123456789012:stack-EventsQueue-x1",
            "arn:aws:sqs:us-east-1:210987654321:stack-EventsRetryQueue-x1",
            "",
        ] {
            assert!(!is_queue_of(url, other), "{other}");
        }
    }

    #[test]
    fn an_event_is_sent_again_from_its_third_receive_within_the_window() {
        let first = 1_700_000_000_000;
        let due = |receives, first_sent, now| is_due(receives, first_sent, now, WINDOW);
        let window = WINDOW.as_millis() as i64;
        assert!(!due(1, first, first + 1));
        assert!(!due(2, first, first + 1));
        assert!(due(3, first, first + 1));
        assert!(due(4, first, first + window - 1));
        assert!(!due(4, first, first + window));
        // A first message dated ahead does not keep an event going round for ever.
        assert!(due(4, first + window * 10, first));
        assert!(!due(4, first + window * 10, first + window * 11));
    }
}
