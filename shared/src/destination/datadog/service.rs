//! Sending: one gzip request per batch, a batch Datadog finds too large or rejects split in two
//! (one log rejects its whole request), a refused key read again once, and Datadog's trouble
//! retried with backoff until the deadline.

use super::Intake;
use super::answer::{Answer, read, refused_key};
use super::request::{Batch, CONTENT_ENCODING, batches, compress};
use crate::destination::{
    DeliveryError, Failures, Pace, fail_all, out_of_time, request_failed, search_halves, unsearched,
};
use crate::event::AuditEvent;
use crate::retry::{Attempt, Backoff, retry};
use secrecy::{ExposeSecret, SecretString};
use std::collections::VecDeque;
use time::OffsetDateTime;
use tokio::time::Instant;

/// Delivers events, splitting at most `splits` requests to find the logs Datadog will not
/// take, and returns the positions that failed.
pub(super) async fn deliver(
    intake: &Intake<'_>,
    events: &[AuditEvent],
    deadline: Instant,
    backoff: &Backoff,
    mut splits: usize,
) -> Failures {
    let (batches, mut failures) = batches(events, OffsetDateTime::now_utc());
    let mut queue: VecDeque<Batch> = batches.into();
    let mut key = match intake.key(false, deadline).await {
        Ok(key) => key,
        Err(e) => {
            fail_all(&mut failures, queue.iter(), &e);
            return failures;
        }
    };
    let mut refreshed = false;
    let mut pace = Pace::new(splits);
    while let Some(batch) = queue.pop_front() {
        let expected = pace.expected(splits);
        if out_of_time(&mut failures, &batch, &mut queue, (deadline, expected)) {
            break;
        }
        // The body's compression is timed with its request, as part of what the next costs.
        let answer = pace
            .time(async { send(intake, &key, compress(&batch.body()), deadline, backoff).await })
            .await;
        let error = match answer {
            Answer::Accepted => continue,
            // Datadog names no log: halves find the one it will not take, and the others in
            // its request are delivered.
            Answer::TooLarge | Answer::Failed(DeliveryError::Rejected(_))
                if batch.len() > 1 && splits > 0 =>
            {
                search_halves(batch, &mut queue, &mut splits);
                continue;
            }
            Answer::TooLarge if batch.len() > 1 => {
                let too_large = "Datadog refused the request as too large (HTTP 413)";
                unsearched(&batch, &DeliveryError::Rejected(too_large.into()))
            }
            Answer::TooLarge => {
                DeliveryError::Rejected("Datadog refused the log as too large (HTTP 413)".into())
            }
            Answer::Failed(rejection @ DeliveryError::Rejected(_)) if batch.len() > 1 => {
                unsearched(&batch, &rejection)
            }
            Answer::Unauthorized(_) if !refreshed => {
                // The key may have been rotated since this container cached it.
                refreshed = true;
                match intake.key(true, deadline).await {
                    Ok(fresh) => {
                        key = fresh;
                        queue.push_front(batch);
                        continue;
                    }
                    Err(e) => e,
                }
            }
            Answer::Unauthorized(status) => refused_key(status, intake.site),
            Answer::Trouble(problem) => DeliveryError::Retryable(problem),
            Answer::Failed(e) => e,
        };
        request_failed(&mut failures, &batch, error, &mut queue, deadline);
    }
    failures
}

/// Sends one body, trying again after Datadog's trouble until `backoff` or `deadline` says
/// stop. Trouble that outlasts them comes back as [`Answer::Trouble`] naming the last problem.
async fn send(
    intake: &Intake<'_>,
    key: &SecretString,
    body: Vec<u8>,
    deadline: Instant,
    backoff: &Backoff,
) -> Answer {
    let url = format!("{}/api/v2/logs", intake.datadog.intake_url(intake.site));
    let (url, body) = (&url, &body);
    let http = match intake.datadog.http() {
        Ok(http) => http,
        Err(problem) => return Answer::Trouble(problem.to_owned()),
    };
    retry(backoff, deadline, move || async move {
        let answer = http
            .post(url)
            .header("DD-API-KEY", key.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::CONTENT_ENCODING, CONTENT_ENCODING)
            .body(body.clone())
            .send()
            .await;
        match read(answer, intake.site) {
            Answer::Trouble(problem) => Attempt::Again(problem),
            settled => Attempt::Done(settled),
        }
    })
    .await
    .unwrap_or_else(|gave_up| Answer::Trouble(gave_up.describe("Datadog")))
}
