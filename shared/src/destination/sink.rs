//! The one interface every destination implements, and what it is given: whose events, and
//! where the credentials come from.

use crate::credentials::{Credentials, CredentialsError};
use crate::event::AuditEvent;
use async_trait::async_trait;
use std::sync::Arc;
use tokio::time::Instant;

/// What every destination does. Lanes, replays and Test connection drive destinations through
/// this alone.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Delivers events by `deadline`, retrying what the destination's answers say is worth
    /// another try, and says per event what went wrong.
    async fn deliver(&self, events: &[AuditEvent], deadline: Instant) -> Failures;

    /// One try without retries: how a lane probes a destination that was failing, so that a
    /// destination that is down gets about one request per probe interval.
    async fn probe(&self, events: &[AuditEvent], deadline: Instant) -> Failures;

    /// Test connection: what delivery does, with one harmless test event, told to a person.
    async fn test_connection(&self, event: &AuditEvent, deadline: Instant) -> ConnectionTest;
}

/// The outcome of a Test connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionTest {
    pub success: bool,
    /// What worked or what to fix, for a person; never a secret.
    pub message: String,
    /// CloudWatch: the log group the test event was written to.
    pub log_group: Option<String>,
}

/// Whose events a sink delivers, and where its credentials come from.
pub struct Project<'a> {
    pub organization_id: &'a str,
    pub project_id: &'a str,
    pub credentials: Box<dyn CredentialSource + 'a>,
}

impl Project<'_> {
    /// The project's credentials, read before `deadline`: a secret store that does not answer
    /// is this attempt's trouble, never time taken from the batch's other destinations.
    pub async fn credentials_by(
        &self,
        refresh: bool,
        deadline: Instant,
    ) -> Result<Arc<Credentials>, DeliveryError> {
        tokio::time::timeout_at(deadline, self.credentials.credentials(refresh))
            .await
            .unwrap_or_else(|_| {
                Err(DeliveryError::Retryable(
                    "the destination's credentials could not be read in time".into(),
                ))
            })
    }
}

/// Where a destination's credentials come from: the project's secret at the version saved with
/// its configuration, or the request of a Test connection.
#[async_trait]
pub trait CredentialSource: Send + Sync {
    /// `refresh`: the destination refused what it was given, and a rotated secret may be newer.
    async fn credentials(&self, refresh: bool) -> Result<Arc<Credentials>, DeliveryError>;
}

/// Credentials in hand (Test connection): nothing to refresh.
#[async_trait]
impl CredentialSource for Credentials {
    async fn credentials(&self, _refresh: bool) -> Result<Arc<Credentials>, DeliveryError> {
        Ok(Arc::new(self.clone()))
    }
}

/// Why events did not reach a destination. Messages are for a person: what failed and what to
/// change, never a secret and never the destination's raw answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The destination is in trouble (an outage, throttling, a timeout): try again later.
    #[error("{0}")]
    Retryable(String),
    /// The destination refuses us (credentials, key or role): nothing more is sent until the
    /// configuration changes or a Test connection succeeds.
    #[error("{0}")]
    Refused(String),
    /// This event only will never be taken as it is: the destination said so (too large for
    /// it, malformed).
    #[error("{0}")]
    Rejected(String),
    /// This event only is larger than the destination takes one, and was never sent: a
    /// rejection the destination had no part in (it says nothing of whether it is up).
    #[error("{0}")]
    Oversized(String),
    /// Sent in a request the destination rejected for another event in it, and not tried
    /// without that one: the delivery's splits ran out first. Most likely it is taken on its
    /// own, by a later delivery's search.
    #[error("{0}")]
    Unsearched(String),
    /// Not sent: the delivery's time ran out first, the destination having answered every
    /// request it was sent (the one it did not answer in time has its own error).
    #[error("{0}")]
    NotSent(String),
}

impl DeliveryError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, DeliveryError::Retryable(_))
    }

    pub fn is_refusal(&self) -> bool {
        matches!(self, DeliveryError::Refused(_))
    }

    /// This event only is never taken as it is, whether the destination said so or its limit.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            DeliveryError::Rejected(_) | DeliveryError::Oversized(_)
        )
    }

    pub fn message(&self) -> &str {
        match self {
            DeliveryError::Retryable(m)
            | DeliveryError::Refused(m)
            | DeliveryError::Rejected(m)
            | DeliveryError::Oversized(m)
            | DeliveryError::Unsearched(m)
            | DeliveryError::NotSent(m) => m,
        }
    }

    /// The secret holds another provider's credentials than the configuration names.
    pub fn mismatched() -> Self {
        DeliveryError::Refused(
            "the stored credentials belong to another provider than the destination; save the streaming configuration again".into(),
        )
    }
}

impl From<&CredentialsError> for DeliveryError {
    fn from(e: &CredentialsError) -> Self {
        if e.is_retryable() {
            DeliveryError::Retryable(e.to_string())
        } else {
            DeliveryError::Refused(e.to_string())
        }
    }
}

/// The outcome of delivering a list of events: the positions that failed, with why.
/// Every position not listed was delivered.
pub type Failures = Vec<(usize, DeliveryError)>;

/// Every one of `n` events failed for the same reason.
pub fn all_failed(n: usize, error: DeliveryError) -> Failures {
    (0..n).map(|i| (i, error.clone())).collect()
}

/// One request of a delivery: where its events are in the list delivered.
pub(crate) trait Request: Sized {
    fn positions(&self) -> &[usize];
    /// The request's first and second halves.
    fn split(self) -> (Self, Self);
}

/// A destination refused `request` without naming the event it will not take: its halves go
/// first in the queue, to find that event and send the others, one of the delivery's `splits`
/// spent.
pub(crate) fn search_halves<R: Request>(
    request: R,
    queued: &mut std::collections::VecDeque<R>,
    splits: &mut usize,
) {
    *splits -= 1;
    let (left, right) = request.split();
    queued.push_front(right);
    queued.push_front(left);
}

/// What the events of a request of several get when the destination rejected it (for
/// `rejection`) and no split is left to search it.
pub(crate) fn unsearched<R: Request>(request: &R, rejection: &DeliveryError) -> DeliveryError {
    DeliveryError::Unsearched(format!(
        "not tried on its own: the destination rejected a request of {} events holding it ({}), \
         and the delivery's search for the events it does not take stopped at its limit",
        request.positions().len(),
        rejection.message(),
    ))
}

/// A `request` failed with `error`. The requests still `queued` fail too: with a refusal, as
/// they would meet the same; once `deadline` has passed, as not sent (still owed, whatever
/// this one's error was). An event the destination will never take is that event's alone, and
/// trouble is worth the next request.
pub(crate) fn request_failed<R: Request>(
    failures: &mut Failures,
    request: &R,
    error: DeliveryError,
    queued: &mut std::collections::VecDeque<R>,
    deadline: Instant,
) {
    fail_all(failures, [request], &error);
    let rest = if error.is_refusal() {
        error
    } else if Instant::now() >= deadline {
        not_sent()
    } else {
        return;
    };
    fail_all(failures, queued.iter(), &rest);
    queued.clear();
}

/// Every event of `requests` failed with `error`.
pub(crate) fn fail_all<'a, R: Request + 'a>(
    failures: &mut Failures,
    requests: impl IntoIterator<Item = &'a R>,
    error: &DeliveryError,
) {
    for request in requests {
        failures.extend(request.positions().iter().map(|&p| (p, error.clone())));
    }
}

/// Whether the delivery's time runs out before `request` would be answered, judging by how
/// long it is `expected` to take (while a search's requests follow one another, as long as
/// the last took; otherwise it is sent while any time is left): if so it fails, and every
/// request still `queued`, as not sent (still owed, and no trouble of the destination's, which
/// answered all it was sent). Sent anyway, it would be cut short at the deadline, as a
/// destination that does not answer is.
pub(crate) fn out_of_time<R: Request>(
    failures: &mut Failures,
    request: &R,
    queued: &mut std::collections::VecDeque<R>,
    (deadline, expected): (Instant, Option<std::time::Duration>),
) -> bool {
    if Instant::now() + expected.unwrap_or_default() < deadline {
        return false;
    }
    fail_all(
        failures,
        std::iter::once(request).chain(queued.iter()),
        &not_sent(),
    );
    queued.clear();
    true
}

/// How long a delivery's requests take to be answered, to judge whether the next one fits in
/// the time left ([`out_of_time`]): while a search's requests follow one another (some of the
/// delivery's `splits` spent), as long as the last one took.
pub(crate) struct Pace {
    last_took: std::time::Duration,
    unsplit: usize,
}

impl Pace {
    /// For a delivery that may split its requests `splits` times.
    pub(crate) fn new(splits: usize) -> Self {
        Self {
            last_took: std::time::Duration::ZERO,
            unsplit: splits,
        }
    }

    /// How long the next request is expected to take, with `splits` left.
    pub(crate) fn expected(&self, splits: usize) -> Option<std::time::Duration> {
        (splits < self.unsplit).then_some(self.last_took)
    }

    /// Sends a request (`answer`), timing it.
    pub(crate) async fn time<T>(&mut self, answer: impl std::future::Future<Output = T>) -> T {
        let began = Instant::now();
        let answer = answer.await;
        self.last_took = began.elapsed();
        answer
    }
}

fn not_sent() -> DeliveryError {
    DeliveryError::NotSent("the delivery ran out of time before these were sent".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    struct Positions(Vec<usize>);

    impl Request for Positions {
        fn positions(&self) -> &[usize] {
            &self.0
        }

        fn split(mut self) -> (Self, Self) {
            let right = self.0.split_off(self.0.len() / 2);
            (self, Positions(right))
        }
    }

    fn queued() -> VecDeque<Positions> {
        VecDeque::from([Positions(vec![2, 3]), Positions(vec![4])])
    }

    #[test]
    fn a_searched_request_is_sent_next_as_its_halves_in_order() {
        let (mut queue, mut splits) = (queued(), 2);
        search_halves(Positions(vec![0, 1, 5]), &mut queue, &mut splits);
        let order: Vec<&[usize]> = queue.iter().map(Request::positions).collect();
        assert_eq!(order, [&[0][..], &[1, 5], &[2, 3], &[4]]);
        assert_eq!(splits, 1);
    }

    #[test]
    fn what_a_failed_request_leaves_queued_is_its_own_trouble_or_still_owed() {
        let rejected = DeliveryError::Rejected("rejected (HTTP 400)".into());
        let later = Instant::now() + std::time::Duration::from_secs(60);
        // A rejection with time left: the rest are still to be sent.
        let (mut failures, mut queue) = (Vec::new(), queued());
        request_failed(
            &mut failures,
            &Positions(vec![0, 1]),
            rejected.clone(),
            &mut queue,
            later,
        );
        assert_eq!(failures.len(), 2);
        assert_eq!(queue.len(), 2);
        // A rejection once the deadline has passed: the rest fail as not sent, still owed.
        let (mut failures, mut queue) = (Vec::new(), queued());
        request_failed(
            &mut failures,
            &Positions(vec![0]),
            rejected,
            &mut queue,
            Instant::now(),
        );
        assert!(queue.is_empty());
        assert!(matches!(failures[0].1, DeliveryError::Rejected(_)));
        assert_eq!(failures.len(), 4);
        assert!(
            failures[1..]
                .iter()
                .all(|(_, e)| matches!(e, DeliveryError::NotSent(_)))
        );
        // A refusal: the rest meet the same.
        let refused = DeliveryError::Refused("the key was refused".into());
        let (mut failures, mut queue) = (Vec::new(), queued());
        request_failed(
            &mut failures,
            &Positions(vec![0]),
            refused,
            &mut queue,
            later,
        );
        assert_eq!(failures.len(), 4);
        assert!(failures.iter().all(|(_, e)| e.is_refusal()));
    }

    #[test]
    fn requests_the_deadline_would_cut_are_not_sent_and_still_owed() {
        let (mut failures, mut queue) = (Vec::new(), queued());
        let minute = std::time::Duration::from_secs(60);
        let later = Instant::now() + minute;
        let quick = std::time::Duration::from_millis(10);
        let request = Positions(vec![0, 1]);
        assert!(!out_of_time(
            &mut failures,
            &request,
            &mut queue,
            (later, Some(quick))
        ));
        assert!(!out_of_time(
            &mut failures,
            &request,
            &mut queue,
            (later, None)
        ));
        assert!(failures.is_empty());
        assert_eq!(queue.len(), 2);
        // The last request took longer than what is left.
        assert!(out_of_time(
            &mut failures,
            &request,
            &mut queue,
            (later, Some(minute))
        ));
        let positions: Vec<usize> = failures.iter().map(|(p, _)| *p).collect();
        assert_eq!(positions, [0, 1, 2, 3, 4]);
        assert!(queue.is_empty());
        assert!(
            failures
                .iter()
                .all(|(_, e)| matches!(e, DeliveryError::NotSent(_)))
        );
    }
}
