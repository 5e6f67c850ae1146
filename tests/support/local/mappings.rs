//! The event source mappings Lambda would run between the queues, the table's stream and the
//! functions: SQS → capture with the template's redrive rule, the events table's stream →
//! stream in order per shard, and the stream function's own queues.

use super::*;

fn function_timeout(function: &str) -> Duration {
    Duration::from_secs(number(&resource(function)["Timeout"]).expect("timeout"))
}

/// How long locally an event the tables keep refusing goes round the retry queue before it is
/// handed back for the dead-letter queue: well past any fault a local run injects, short enough
/// that a table that never comes back ends a run (the retry queue, undelayed, would spin).
pub const LOCAL_REQUEUE_WINDOW: Duration = Duration::from_secs(600);

/// What the SQS event source mapping did.
#[derive(Debug, Default, Clone, Copy)]
pub struct CaptureRun {
    pub invocations: usize,
    pub deleted: usize,
    pub returned: usize,
    /// Invocations that died before answering (their messages came back).
    pub killed: usize,
}

impl CaptureRun {
    /// This run, and then `more`.
    pub fn and(&self, more: &CaptureRun) -> CaptureRun {
        CaptureRun {
            invocations: self.invocations + more.invocations,
            deleted: self.deleted + more.deleted,
            returned: self.returned + more.returned,
            killed: self.killed + more.killed,
        }
    }
}

/// The SQS event source mappings: batches of the template's size to capture, from the events
/// queue and from the retry queue; what capture reports failed is made visible again (SQS's
/// redrive policy dead-letters it after `maxReceiveCount` receives); the rest is deleted. Runs
/// until both queues are empty.
pub async fn drain_events_queue(
    stack: &Stack,
    capture: &Capture,
    progress: impl FnMut(&CaptureRun),
) -> CaptureRun {
    drain_events_queue_with(stack, capture, None, progress).await
}

/// [`drain_events_queue`] where some invocations die (`kills`). Capture keeps nothing between
/// invocations, so the instance that takes the next batch is as good as a restarted one.
pub async fn drain_events_queue_with(
    stack: &Stack,
    capture: &Capture,
    kills: Option<&Kills>,
    mut progress: impl FnMut(&CaptureRun),
) -> CaptureRun {
    let timeout = function_timeout("CaptureFunction");
    let invoke = |event: SqsEvent| async move {
        let ids: Vec<String> = event
            .records
            .iter()
            .filter_map(|r| r.message_id.clone())
            .collect();
        let invocation = capture.handle(lambda_runtime::LambdaEvent::new(
            event.into(),
            crate::invocation_context(timeout),
        ));
        let answer = match kills {
            Some(kills) => kills.run("capture", invocation).await?,
            None => invocation.await,
        };
        Some(match answer {
            Ok(response) => response
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect(),
            // The whole batch failed: every message goes back.
            Err(_) => ids,
        })
    };
    let mut run = CaptureRun::default();
    loop {
        for (queue, mapping) in [
            ("EventsQueue", "AuditEvents"),
            ("EventsRetryQueue", "RetriedEvents"),
        ] {
            let source = &resource("CaptureFunction")["Events"][mapping]["Properties"];
            let batch_size = number(&source["BatchSize"]).unwrap_or(10) as usize;
            let done = run;
            let part = drain_queue(stack, queue, batch_size, invoke, |part: &CaptureRun| {
                progress(&done.and(part))
            })
            .await;
            run = run.and(&part);
        }
        if stack.depth("EventsQueue").await == 0 && stack.depth("EventsRetryQueue").await == 0 {
            return run;
        }
    }
}

/// The stream function's SQS mappings: lanes' scheduled calls that are due, batches whose
/// retries ran out (handed to the lanes again) and replays (run part by part), until none of
/// these queues has a message ready.
pub async fn drain_stream_queues(stack: &Stack, stream: &Stream) {
    drain_stream_queues_with(stack, stream, None).await;
}

/// [`drain_stream_queues`] where some invocations die and the function restarts.
pub async fn drain_stream_queues_with(stack: &Stack, stream: &Stream, faults: Option<&Faulty<'_>>) {
    let timeout = function_timeout("StreamFunction");
    for (queue, mapping) in [
        ("LaneQueue", "LaneCalls"),
        ("DeferredQueue", "DeferredEvents"),
        ("StreamFailureQueue", "ExhaustedDeliveries"),
        ("ReplayQueue", "Replays"),
    ] {
        let properties = &resource("StreamFunction")["Events"][mapping]["Properties"];
        let batch_size = number(&properties["BatchSize"]).unwrap_or(10) as usize;
        drain_queue(
            stack,
            queue,
            batch_size,
            |event| async move {
                let instance = faults.and_then(Faulty::restarted);
                let current = instance.as_deref().unwrap_or(stream);
                // On the heap: the handlers' futures are large, and a debug build's stack is not.
                let invocation = Box::pin(current.handle_queue(lambda_runtime::LambdaEvent::new(
                    event,
                    crate::invocation_context(timeout),
                )));
                let response = match faults {
                    Some(faults) => faults.run(invocation).await?,
                    None => invocation.await,
                };
                Some(failed_ids(&response))
            },
            |_| {},
        )
        .await;
    }
}

/// The api function's SQS mapping: export steps, each handing on to the next, until the export
/// queue is empty.
pub async fn drain_export_queue(stack: &Stack, api: &Api) -> CaptureRun {
    let timeout = function_timeout("ApiFunction");
    let properties = &resource("ApiFunction")["Events"]["ExportSteps"]["Properties"];
    let batch_size = number(&properties["BatchSize"]).unwrap_or(10) as usize;
    drain_queue(
        stack,
        "ExportQueue",
        batch_size,
        |event| async move {
            let deadline = audit_log::retry::deadline_before(
                crate::invocation_context(timeout).deadline(),
                Duration::from_secs(2),
            );
            Some(failed_ids(
                &Box::pin(api.handle_exports(event, deadline)).await,
            ))
        },
        |_| {},
    )
    .await
}

/// Stream invocations that die, and the function coming back after a death: a fresh instance
/// (a cold start, with nothing remembered) takes every invocation after it.
pub struct Faulty<'a> {
    kills: &'a Kills,
    restart: &'a (dyn Fn() -> Stream + Sync),
    fresh: std::sync::Mutex<Option<std::sync::Arc<Stream>>>,
}

impl<'a> Faulty<'a> {
    pub fn new(kills: &'a Kills, restart: &'a (dyn Fn() -> Stream + Sync)) -> Self {
        Self {
            kills,
            restart,
            fresh: Default::default(),
        }
    }

    /// The instance started after the last death, if one died.
    fn restarted(&self) -> Option<std::sync::Arc<Stream>> {
        self.fresh.lock().expect("instance").clone()
    }

    /// Runs an invocation, unless it dies: None then, and the next one gets a fresh instance.
    async fn run<T>(&self, invocation: impl std::future::Future<Output = T>) -> Option<T> {
        let answer = self.kills.run("stream", invocation).await;
        if answer.is_none() {
            *self.fresh.lock().expect("instance") = Some(std::sync::Arc::new((self.restart)()));
        }
        answer
    }
}

/// The queues only the service writes to: every message on them is about one organization's
/// work, and goes in its message group.
const SERVICE_QUEUES: [&str; 5] = [
    "LaneQueue",
    "DeferredQueue",
    "ReplayQueue",
    "ExportQueue",
    // Events sent again keep the group they came in (here their organization's), or take it.
    "EventsRetryQueue",
];

/// Panics unless the message's group is the organization its body names.
fn in_its_organizations_group(logical_id: &str, m: &aws_sdk_sqs::types::Message) {
    let body = m.body.as_deref().unwrap_or_default();
    let organization = organization_named(body)
        .unwrap_or_else(|| panic!("a message on {logical_id} names no organization: {body}"));
    let group = m
        .attributes
        .as_ref()
        .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId));
    assert_eq!(
        group.map(String::as_str),
        Some(group_of(&organization).as_str()),
        "a message on {logical_id} is not in its organization's group: {body}"
    );
}

/// The organization a queued body is about: an event's, an export step's or a replay part's
/// `organization_id`, a lane call's lane's, deferred events'.
pub(super) fn organization_named(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    [
        "/organization_id",
        "/lane_call/lane/organization_id",
        "/deferred/organization_id",
    ]
    .iter()
    .find_map(|pointer| v.pointer(pointer)?.as_str().map(str::to_owned))
}

/// An SQS event source mapping with `ReportBatchItemFailures`: `handler` answers the ids that
/// failed, or None when the invocation died; those become visible again, the rest is deleted.
pub async fn drain_queue<F, Fut>(
    stack: &Stack,
    logical_id: &str,
    batch_size: usize,
    mut handler: F,
    mut progress: impl FnMut(&CaptureRun),
) -> CaptureRun
where
    F: FnMut(SqsEvent) -> Fut,
    Fut: std::future::Future<Output = Option<Vec<String>>>,
{
    let queue = stack.queue(logical_id).to_owned();
    let arn = stack.queue_arns[logical_id].clone();
    let mut run = CaptureRun::default();
    loop {
        let mut messages = Vec::new();
        while messages.len() < batch_size {
            let got = stack
                .sqs
                .receive_message()
                .queue_url(&queue)
                .max_number_of_messages(10.min(batch_size) as i32)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .expect("receive")
                .messages
                .unwrap_or_default();
            if got.is_empty() {
                break;
            }
            messages.extend(got);
        }
        if SERVICE_QUEUES.contains(&logical_id) {
            for m in &messages {
                in_its_organizations_group(logical_id, m);
            }
        }
        if messages.is_empty() {
            if stack.depth(logical_id).await == 0 {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let mut event = SqsEvent::default();
        event.records = messages
            .iter()
            .map(|m| {
                let mut record = SqsMessage::default();
                record.message_id = m.message_id.clone();
                record.receipt_handle = m.receipt_handle.clone();
                record.body = m.body.clone();
                record.attributes = m
                    .attributes
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v))
                    .collect();
                record.message_attributes = m
                    .message_attributes
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(name, value)| {
                        let mut attribute = SqsMessageAttribute::default();
                        attribute.data_type = Some(value.data_type);
                        attribute.string_value = value.string_value;
                        (name, attribute)
                    })
                    .collect();
                record.event_source = Some("aws:sqs".into());
                record.event_source_arn = Some(arn.clone());
                record.aws_region = Some("us-east-1".into());
                record
            })
            .collect();
        run.invocations += 1;
        let answer = handler(event).await;
        if answer.is_none() {
            run.killed += 1;
        }
        let (back, done): (Vec<_>, Vec<_>) = messages.into_iter().partition(|m| match &answer {
            Some(failed) => m.message_id.as_ref().is_some_and(|id| failed.contains(id)),
            // Lambda never heard back: every message returns when its visibility times out.
            None => true,
        });
        for m in &back {
            // Lambda lets the visibility timeout run out; locally it is cut short.
            stack
                .sqs
                .change_message_visibility()
                .queue_url(&queue)
                .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                .visibility_timeout(0)
                .send()
                .await
                .expect("return a message");
        }
        for chunk in done.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                        .build()
                        .expect("entry")
                })
                .collect();
            stack
                .sqs
                .delete_message_batch()
                .queue_url(&queue)
                .set_entries(Some(entries))
                .send()
                .await
                .expect("delete handled messages");
        }
        run.deleted += done.len();
        run.returned += back.len();
        progress(&run);
    }
}

/// What the DynamoDB stream event source mapping did.
#[derive(Debug, Default, Clone, Copy)]
pub struct StreamRun {
    pub invocations: usize,
    pub records: usize,
    pub retries: usize,
    pub sent_to_failure_queue: usize,
    /// Invocations that died before answering (their batch was retried by a fresh instance).
    pub killed: usize,
}

/// The DynamoDB stream event source mapping, run over everything the stream holds after
/// `after` (a sequence number per shard): `INSERT` records only (the template's filter), in
/// order, in batches of the template's size; a reported failure is retried from that record
/// up to the template's `MaximumRetryAttempts`, then the batch's range goes to the on-failure
/// queue. Returns the last sequence number seen per shard.
pub async fn drain_stream(
    stack: &Stack,
    stream: &Stream,
    after: &HashMap<String, String>,
    run: &mut StreamRun,
    progress: impl FnMut(&StreamRun),
) -> HashMap<String, String> {
    drain_stream_within(
        stack,
        stream,
        after,
        run,
        &StreamLimits::from_template(),
        progress,
    )
    .await
}

/// The stream mapping's limits: the function's timeout, the retries of a failed batch and the
/// largest batch.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    pub timeout: Duration,
    pub max_retries: usize,
    pub batch_size: usize,
}

impl StreamLimits {
    pub fn from_template() -> Self {
        let mapping = &resource("StreamFunction")["Events"]["StoredEvents"]["Properties"];
        Self {
            timeout: function_timeout("StreamFunction"),
            max_retries: number(&mapping["MaximumRetryAttempts"]).unwrap_or(0) as usize,
            batch_size: number(&mapping["BatchSize"]).unwrap_or(100) as usize,
        }
    }
}

/// [`drain_stream`] with other limits (tests make a failing destination give up sooner).
pub async fn drain_stream_within(
    stack: &Stack,
    stream: &Stream,
    after: &HashMap<String, String>,
    run: &mut StreamRun,
    limits: &StreamLimits,
    progress: impl FnMut(&StreamRun),
) -> HashMap<String, String> {
    drain_stream_with(stack, stream, after, run, limits, None, progress).await
}

/// [`drain_stream_within`] where some invocations die: Lambda retries the batch (it counts as
/// an attempt) on a fresh instance, which remembers nothing of what was delivered.
pub async fn drain_stream_with(
    stack: &Stack,
    stream: &Stream,
    after: &HashMap<String, String>,
    run: &mut StreamRun,
    limits: &StreamLimits,
    faults: Option<&Faulty<'_>>,
    mut progress: impl FnMut(&StreamRun),
) -> HashMap<String, String> {
    let (timeout, max_retries, batch_size) =
        (limits.timeout, limits.max_retries, limits.batch_size);
    let mut last = after.clone();
    for (shard, records) in
        stream_records_since(&stack.aws, &stack.dynamodb, &stack.events_table, after).await
    {
        let stream_arn = records.first().and_then(|r| r.event_source_arn.clone());
        let inserts: Vec<StreamRecord> = crate::as_sent(&records)
            .into_iter()
            .filter(|r| r.event_name == "INSERT")
            .collect();
        for batch in inserts.chunks(batch_size) {
            let mut pending: &[StreamRecord] = batch;
            let mut attempts = 0;
            loop {
                let event = StreamRecords {
                    records: pending.to_vec(),
                };
                run.invocations += 1;
                let instance = faults.and_then(Faulty::restarted);
                let current = instance.as_deref().unwrap_or(stream);
                // On the heap: the handlers' futures are large, and a debug build's stack is not.
                let invocation = Box::pin(current.handle_stream(lambda_runtime::LambdaEvent::new(
                    event,
                    crate::invocation_context(timeout),
                )));
                let response = match faults {
                    Some(faults) => faults.run(invocation).await,
                    None => Some(invocation.await),
                };
                let failed = match response {
                    Some(response) => match response
                        .batch_item_failures
                        .first()
                        .and_then(|f| f.item_identifier.clone())
                    {
                        Some(failed) => failed,
                        None => break,
                    },
                    // A death fails the whole batch.
                    None => {
                        run.killed += 1;
                        match pending
                            .first()
                            .and_then(|r| r.change.sequence_number.clone())
                        {
                            Some(first) => first,
                            None => break,
                        }
                    }
                };
                attempts += 1;
                if attempts > max_retries {
                    let record = json!({
                        "requestContext": {"condition": "RetryAttemptsExhausted"},
                        "DDBStreamBatchInfo": {
                            "streamArn": stream_arn,
                            "shardId": shard,
                            "startSequenceNumber": failed,
                            "endSequenceNumber": pending.last().and_then(|r| r.change.sequence_number.clone()),
                            "batchSize": pending.len(),
                        }
                    });
                    stack
                        .sqs
                        .send_message()
                        .queue_url(stack.queue("StreamFailureQueue"))
                        .message_body(record.to_string())
                        .send()
                        .await
                        .expect("on-failure destination");
                    run.sent_to_failure_queue += 1;
                    break;
                }
                run.retries += 1;
                let from = pending
                    .iter()
                    .position(|r| r.change.sequence_number.as_deref() == Some(failed.as_str()))
                    .unwrap_or(0);
                pending = &pending[from..];
            }
            run.records += batch.len();
            progress(run);
        }
        if let Some(seq) = records
            .last()
            .and_then(|r| r.change.sequence_number.clone())
        {
            last.insert(shard, seq);
        }
    }
    last
}
