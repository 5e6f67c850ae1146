//! Jittered exponential backoff bounded by the invocation's deadline, shared by every writer
//! that retries inside one Lambda invocation.

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
}
