//! Jittered exponential backoff bounded by the invocation's deadline, and the one loop that
//! retries with it ([`retry`]), shared by every writer that tries again inside one invocation.

use rand::Rng;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(50),
            max: Duration::from_secs(2),
        }
    }
}

impl Backoff {
    /// No retry at all: one try, then report (a probe of a destination that was failing).
    pub const NONE: Backoff = Backoff {
        base: Duration::ZERO,
        max: Duration::ZERO,
    };

    /// "Full jitter": a uniform delay up to the exponential ceiling, so concurrent writers that
    /// were throttled together do not come back together.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        rand::rng().random_range(Duration::ZERO..=ceiling)
    }

    /// Sleeps before another attempt, or says there is no time left for one.
    pub async fn wait(&self, attempt: u32, deadline: Instant) -> bool {
        if self.max.is_zero() {
            return false;
        }
        let delay = self.delay(attempt);
        if Instant::now() + delay >= deadline {
            return false;
        }
        tokio::time::sleep(delay).await;
        true
    }
}

/// What one attempt of an operation came to: done (a success, or a refusal that another
/// attempt would not change), or trouble worth another attempt, and what it was.
#[derive(Debug)]
pub enum Attempt<T, P> {
    Done(T),
    Again(P),
}

/// An operation no longer tried: the last trouble (`None` when the deadline cut the first
/// attempt short), the attempts made, and whether the deadline cut the last one short.
#[derive(Debug, PartialEq, Eq)]
pub struct GaveUp<P> {
    pub last: Option<P>,
    pub attempts: u32,
    pub at_deadline: bool,
}

impl<P: std::fmt::Display> GaveUp<P> {
    /// In words, naming `service` when it never answered.
    pub fn describe(&self, service: &str) -> String {
        match (&self.last, self.at_deadline) {
            (Some(problem), true) => format!(
                "{problem}; gave up at the deadline after {} attempts",
                self.attempts
            ),
            (Some(problem), false) => {
                format!("{problem}; gave up after {} attempts", self.attempts)
            }
            (None, _) => format!("{service} did not answer in the time it was given"),
        }
    }
}

/// Runs `attempt` until it is done, `backoff` says stop, or `deadline` passes; an attempt
/// still running at the deadline is cut short. The one retry loop of the service: each
/// caller's attempt says, in its destination's or store's terms, what is worth repeating.
pub async fn retry<T, P, F, Fut>(
    backoff: &Backoff,
    deadline: Instant,
    mut attempt: F,
) -> Result<T, GaveUp<P>>
where
    // A closure making futures rather than an async closure: async closures' futures are not
    // yet known to be `Send` where the futures of `async_trait` methods must be.
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Attempt<T, P>>,
{
    let mut attempts = 0;
    let mut last = None;
    loop {
        match tokio::time::timeout_at(deadline, attempt()).await {
            Err(_) => {
                return Err(GaveUp {
                    last,
                    attempts,
                    at_deadline: true,
                });
            }
            Ok(Attempt::Done(value)) => return Ok(value),
            Ok(Attempt::Again(problem)) => {
                attempts += 1;
                if !backoff.wait(attempts, deadline).await {
                    return Err(GaveUp {
                        last: Some(problem),
                        attempts,
                        at_deadline: false,
                    });
                }
                last = Some(problem);
            }
        }
    }
}

/// The instant retries must stop by: the invocation's deadline less a margin to report results.
pub fn deadline_before(lambda_deadline: std::time::SystemTime, margin: Duration) -> Instant {
    let left = lambda_deadline
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    Instant::now() + left.saturating_sub(margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_a_growing_ceiling_capped_at_max() {
        let b = Backoff::default();
        for attempt in 0..40 {
            let ceiling = (b.base * 2u32.pow(attempt.min(16))).min(b.max);
            for _ in 0..50 {
                assert!(b.delay(attempt) <= ceiling);
            }
        }
    }

    #[test]
    fn delays_are_jittered() {
        let b = Backoff::default();
        let delays: std::collections::HashSet<_> = (0..50).map(|_| b.delay(5)).collect();
        assert!(delays.len() > 1);
    }

    #[tokio::test(start_paused = true)]
    async fn no_wait_past_the_deadline() {
        let b = Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(10),
        };
        let deadline = Instant::now();
        assert!(!b.wait(3, deadline).await);
    }

    #[tokio::test(start_paused = true)]
    async fn none_never_retries() {
        let deadline = Instant::now() + Duration::from_secs(3600);
        assert!(!Backoff::NONE.wait(0, deadline).await);
    }

    #[test]
    fn a_past_deadline_leaves_no_time() {
        let past = std::time::SystemTime::now() - Duration::from_secs(5);
        assert!(deadline_before(past, Duration::from_secs(1)) <= Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn an_operation_is_tried_until_done() {
        let mut calls = 0;
        let out = retry(
            &Backoff::default(),
            Instant::now() + Duration::from_secs(60),
            || {
                calls += 1;
                let calls = calls;
                async move {
                    if calls < 3 {
                        Attempt::Again(format!("busy {calls}"))
                    } else {
                        Attempt::Done(calls)
                    }
                }
            },
        )
        .await;
        assert_eq!(out, Ok(3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_trouble_is_told_when_the_backoff_stops() {
        let out: Result<(), _> = retry(
            &Backoff::NONE,
            Instant::now() + Duration::from_secs(60),
            || async { Attempt::Again("throttled") },
        )
        .await;
        let gave_up = out.unwrap_err();
        assert_eq!(
            gave_up,
            GaveUp {
                last: Some("throttled"),
                attempts: 1,
                at_deadline: false
            }
        );
        assert_eq!(gave_up.describe("X"), "throttled; gave up after 1 attempts");
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_running_at_the_deadline_is_cut_short() {
        let deadline = Instant::now() + Duration::from_secs(1);
        let out: Result<(), GaveUp<&str>> = retry(&Backoff::default(), deadline, || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Attempt::Done(())
        })
        .await;
        let gave_up = out.unwrap_err();
        assert!(gave_up.at_deadline && gave_up.last.is_none());
        assert_eq!(
            gave_up.describe("Datadog"),
            "Datadog did not answer in the time it was given"
        );
    }
}
