//! The retry schedule of `delivery.retry_schedule`: delays after each failed attempt, with ±20%
//! jitter, `Retry-After` honoured but clamped, and a floor for timeouts and rate limits
//! (docs/ARCHITECTURE.md, "Delivery").

use std::time::Duration;

use rand::Rng;

/// Delays after the 1st, 2nd, … failed attempt (the config's default is
/// [`crate::config::DEFAULT_RETRY_SCHEDULE`]); when they run out the delivery is `dead`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    /// Delay after each failure, in order.
    pub delays: Vec<Duration>,
    /// Relative jitter applied to each delay (0.2 = ±20%).
    pub jitter: f64,
}

/// Why an attempt failed, as far as the schedule cares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum FailureKind {
    /// The receiver did not answer within `delivery.timeout`.
    Timeout,
    /// HTTP 429, with its `Retry-After` if any.
    RateLimited(Option<Duration>),
    /// Any other failure, with a `Retry-After` if the answer had one (e.g. 503).
    Other(Option<Duration>),
}

/// Minimum wait after a timeout or a 429 without `Retry-After`.
pub(crate) const SLOW_DOWN_FLOOR: Duration = Duration::from_secs(60);

impl RetrySchedule {
    /// The wait before the next attempt after `attempts_made` attempts (≥ 1) have failed, or
    /// `None` if the schedule is exhausted (the delivery is then `dead`).
    ///
    /// Rules: the scheduled delay `s` gets ±jitter; a `Retry-After` is honoured but clamped to
    /// `[s, 2s]`; a timeout or a 429 without `Retry-After` waits at least 60 s.
    pub(crate) fn next_delay(
        &self,
        attempts_made: usize,
        failure: FailureKind,
    ) -> Option<Duration> {
        let base = *self.delays.get(attempts_made.checked_sub(1)?)?;
        let j = self.jitter.clamp(0.0, 0.99);
        let factor = if j > 0.0 {
            rand::rng().random_range((1.0 - j)..=(1.0 + j))
        } else {
            1.0
        };
        let scheduled = base.mul_f64(factor);
        Some(match failure {
            FailureKind::RateLimited(Some(ra)) | FailureKind::Other(Some(ra)) => {
                ra.clamp(scheduled, scheduled * 2)
            }
            FailureKind::Timeout | FailureKind::RateLimited(None) => scheduled.max(SLOW_DOWN_FLOOR),
            FailureKind::Other(None) => scheduled,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(delays: &[u64]) -> RetrySchedule {
        RetrySchedule {
            delays: delays.iter().map(|s| Duration::from_secs(*s)).collect(),
            jitter: 0.0,
        }
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_spreads_the_delays() {
        let s = RetrySchedule {
            jitter: 0.2,
            ..exact(&[5, 300])
        };
        let delays: Vec<f64> = (0..200)
            .map(|_| {
                s.next_delay(2, FailureKind::Other(None))
                    .unwrap()
                    .as_secs_f64()
            })
            .collect();
        assert!(
            delays.iter().all(|d| (240.0..=360.0).contains(d)),
            "{delays:?}"
        );
        // Jitter that is off (every delay 300 s) or barely on fails here: 200 uniform draws
        // over ±60 s reach below 280 s and above 320 s with overwhelming probability.
        let (lo, hi) = delays
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), d| (lo.min(*d), hi.max(*d)));
        assert!(lo < 280.0 && hi > 320.0, "spread {lo}..{hi}");
    }

    #[test]
    fn retry_after_is_clamped_and_slow_downs_have_a_floor() {
        let s = exact(&[5, 300]);
        let ra = |secs| FailureKind::RateLimited(Some(Duration::from_secs(secs)));
        assert_eq!(s.next_delay(1, ra(7200)), Some(Duration::from_secs(10)));
        assert_eq!(s.next_delay(1, ra(1)), Some(Duration::from_secs(5)));
        assert_eq!(s.next_delay(1, ra(7)), Some(Duration::from_secs(7)));
        assert_eq!(
            s.next_delay(1, FailureKind::Timeout),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            s.next_delay(1, FailureKind::RateLimited(None)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            s.next_delay(2, FailureKind::Timeout),
            Some(Duration::from_secs(300))
        );
        assert_eq!(s.next_delay(3, FailureKind::Other(None)), None);
        assert_eq!(s.next_delay(0, FailureKind::Other(None)), None);
    }
}
