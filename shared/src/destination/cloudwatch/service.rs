//! Sending: `PutLogEvents` batch by batch, creating the log group and stream on first use, and
//! retrying what [`super::answer`] calls transient until the deadline.

use super::answer::{Problem, classify, rejected};
use super::request::{Batch, batches};
use crate::destination::{
    DeliveryError, Failures, Pace, out_of_time, request_failed, search_halves, unsearched,
};
use crate::event::AuditEvent;
use crate::retry::{Attempt, Backoff, retry};
use aws_sdk_cloudwatchlogs::Client as LogsClient;
use aws_sdk_cloudwatchlogs::config::Builder;
use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use time::OffsetDateTime;
use tokio::time::{Instant, timeout_at};

/// The SDK does not retry on its own: `put` decides what is tried again, and a lane's probe is
/// one request, not three (two, with the role assumed anew, when the first is refused on
/// credentials kept from before: `Logs::write`). Nor does it cut an attempt short: the
/// caller's deadline does (a page of catching up may take its 30 s), and a destination that
/// takes long but answers is slow, set aside as such, not in an outage.
pub fn without_sdk_retries(config: Builder) -> Builder {
    config
        .retry_config(crate::sdk::retried_by_the_service())
        .timeout_config(
            aws_sdk_cloudwatchlogs::config::timeout::TimeoutConfig::builder()
                .disable_operation_attempt_timeout()
                .build(),
        )
}

/// Writes events to a log group of the customer's account, in as few requests as the limits
/// allow, each retried with `backoff` until `deadline`, splitting at most `splits` requests to
/// find the events CloudWatch will not take.
pub async fn write(
    client: &LogsClient,
    group: &str,
    stream: &str,
    events: &[AuditEvent],
    deadline: Instant,
    backoff: &Backoff,
    mut splits: usize,
) -> Failures {
    let (batches, mut failures) = batches(events, OffsetDateTime::now_utc());
    let mut queue: VecDeque<Batch> = batches.into();
    let mut pace = Pace::new(splits);
    // Positions sent again dated at delivery, once each.
    let mut redated = HashSet::new();
    while let Some(batch) = queue.pop_front() {
        let expected = pace.expected(splits);
        if out_of_time(&mut failures, &batch, &mut queue, (deadline, expected)) {
            break;
        }
        let answer = pace
            .time(put(client, group, stream, &batch, deadline, backoff))
            .await;
        let error = match answer {
            Ok(rejected) => {
                // Events the answer rejects are dated where the log group takes none (older than
                // its retention, or than 14 days or ahead by CloudWatch's clock): each is sent
                // once more dated at delivery, as events past 14 days are from the start (its
                // message keeps its own time). Only what that is rejected again fails.
                let (again, refused): (Failures, Failures) =
                    rejected.into_iter().partition(|(p, _)| redated.insert(*p));
                failures.extend(refused);
                if !again.is_empty() {
                    let positions: HashSet<usize> = again.into_iter().map(|(p, _)| p).collect();
                    queue.push_front(batch.redated(&positions, OffsetDateTime::now_utc()));
                }
                continue;
            }
            Err(DeliveryError::Rejected(_)) if batch.events.len() > 1 && splits > 0 => {
                // CloudWatch names no event: halves find the one it will not take, and the
                // others in its request are written.
                search_halves(batch, &mut queue, &mut splits);
                continue;
            }
            Err(rejection @ DeliveryError::Rejected(_)) if batch.events.len() > 1 => {
                unsearched(&batch, &rejection)
            }
            Err(error) => error,
        };
        request_failed(&mut failures, &batch, error, &mut queue, deadline);
    }
    failures
}

/// One `PutLogEvents`, creating the group and stream on first use and retrying throttling
/// and outages until `deadline`. Returns the events CloudWatch rejected inside a success.
async fn put(
    client: &LogsClient,
    group: &str,
    stream: &str,
    batch: &Batch,
    deadline: Instant,
    backoff: &Backoff,
) -> Result<Failures, DeliveryError> {
    // Whether the group and stream were created since the last write found them missing.
    let created = AtomicBool::new(false);
    let created = &created;
    let written = retry(backoff, deadline, move || async move {
        loop {
            let answer = client
                .put_log_events()
                .log_group_name(group)
                .log_stream_name(stream)
                .set_log_events(Some(batch.events.clone()))
                .send()
                .await;
            let err = match answer {
                Ok(out) => {
                    return Attempt::Done(Ok(rejected(batch, out.rejected_log_events_info())));
                }
                Err(err) => err,
            };
            return match classify(&err) {
                // First write to a new stream: create it, then write again at once. Steady
                // state makes no create or describe call at all. A creation racing another
                // writer (or a busy service) backs off like any other write.
                Problem::Missing if !created.load(Ordering::Relaxed) => {
                    match create(client, group, stream, deadline).await {
                        Ok(()) => {
                            created.store(true, Ordering::Relaxed);
                            continue;
                        }
                        Err(DeliveryError::Retryable(message)) => Attempt::Again(message),
                        Err(refused) => Attempt::Done(Err(refused)),
                    }
                }
                // Created, yet not found: not visible yet, or deleted meanwhile by the
                // customer. Another attempt, after a wait, creates them again if need be.
                Problem::Missing => {
                    created.store(false, Ordering::Relaxed);
                    Attempt::Again(format!(
                        "log group {group} or stream {stream} not found right after it was created"
                    ))
                }
                Problem::Transient(message) => Attempt::Again(message),
                Problem::Refused(error) => Attempt::Done(Err(error)),
                Problem::Invalid(message) => Attempt::Done(Err(DeliveryError::Rejected(message))),
            };
        }
    })
    .await;
    written.unwrap_or_else(|gave_up| {
        Err(DeliveryError::Retryable(
            gave_up.describe("CloudWatch Logs"),
        ))
    })
}

/// Creates the log group and stream; one that already exists is success.
async fn create(
    client: &LogsClient,
    group: &str,
    stream: &str,
    deadline: Instant,
) -> Result<(), DeliveryError> {
    let group_created = timeout_at(
        deadline,
        client.create_log_group().log_group_name(group).send(),
    )
    .await;
    // An account at its quota of log groups may answer so for a group it has (which check
    // comes first is AWS's): the stream's creation says whether the group is there.
    let at_quota = service_code(&group_created) == Some("LimitExceededException");
    let group_checked = check_created(group_created, "log group", group);
    if group_checked.is_err() && !at_quota {
        return group_checked;
    }
    let stream_created = timeout_at(
        deadline,
        client
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(stream)
            .send(),
    )
    .await;
    let no_group = service_code(&stream_created) == Some("ResourceNotFoundException");
    match check_created(stream_created, "log stream", stream) {
        Err(_) if at_quota && no_group => group_checked,
        stream_checked => stream_checked,
    }
}

/// A creation's answer, or its deadline passing first.
type Created<T, E> = Result<
    Result<T, SdkError<E, aws_sdk_cloudwatchlogs::config::http::HttpResponse>>,
    tokio::time::error::Elapsed,
>;

/// The code of a service's error answer, if that is what came.
fn service_code<T, E: ProvideErrorMetadata>(result: &Created<T, E>) -> Option<&str> {
    match result {
        Ok(Err(err)) => err.as_service_error().and_then(|e| e.code()),
        _ => None,
    }
}

fn check_created<T, E>(result: Created<T, E>, what: &str, name: &str) -> Result<(), DeliveryError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if service_code(&result) == Some("ResourceAlreadyExistsException") {
        return Ok(());
    }
    match result {
        Err(_) => Err(DeliveryError::Retryable(format!(
            "CloudWatch Logs did not answer while creating {what} {name}"
        ))),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => match classify(&err) {
            Problem::Transient(m) => Err(DeliveryError::Retryable(m)),
            Problem::Refused(e) => Err(e),
            // The group's or stream's name: the log group prefix the service was given.
            Problem::Invalid(m) => Err(DeliveryError::Refused(format!(
                "{m} creating {what} {name}"
            ))),
            Problem::Missing => Err(DeliveryError::Retryable(format!(
                "could not create {what} {name}"
            ))),
        },
    }
}
