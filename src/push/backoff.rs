//! Full-jitter exponential backoff.
//!
//! Owns: how long to wait before retry number `attempt` (0 for the first retry):
//! `random(0, min(cap, base · 2^attempt))`, or at least the server's hint (such as
//! `x-acs-retry-after`) when it sent one, never more than `cap`. The random source is
//! injected so tests are deterministic; production uses an OS-seeded generator.

use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Backoff parameters plus a shared random source.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    rng: Mutex<StdRng>,
}

impl Backoff {
    /// 1 s base, 60 s cap, OS-seeded randomness.
    pub(crate) fn standard() -> Backoff {
        Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
            rand::make_rng(),
        )
    }

    /// Any base and cap (cap is raised to base if smaller) with the given generator.
    pub(crate) fn new(base: Duration, cap: Duration, rng: StdRng) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            rng: Mutex::new(rng),
        }
    }

    /// Same parameters, deterministic generator (for tests and benchmarks).
    pub fn seeded(base: Duration, cap: Duration, seed: u64) -> Backoff {
        Backoff::new(base, cap, StdRng::seed_from_u64(seed))
    }

    /// The ceiling `min(cap, base · 2^attempt)` that the jitter is drawn under.
    pub(crate) fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// How long to wait before retry `attempt` (0-based). A server `hint` is a floor
    /// (bounded by the cap) on the jittered value.
    pub(crate) fn delay(&self, attempt: u32, hint: Option<Duration>) -> Duration {
        let ceiling = self.ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let drawn = match self.rng.lock() {
            Ok(mut rng) => rng.random_range(0..=nanos),
            // A poisoned lock only means another thread panicked mid-draw; the
            // generator state is still usable, but waiting the ceiling is safe too.
            Err(_) => nanos,
        };
        let jittered = Duration::from_nanos(drawn);
        match hint {
            Some(h) => jittered.max(h.min(self.cap)),
            None => jittered,
        }
    }

    #[cfg(test)]
    pub(crate) fn base(&self) -> Duration {
        self.base
    }

    #[cfg(test)]
    pub(crate) fn cap(&self) -> Duration {
        self.cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_from_base_up_to_cap() {
        let b = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(60), 1);
        let secs: Vec<u64> = (0..8).map(|a| b.ceiling(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn delays_are_full_jitter_under_the_ceiling() {
        let b = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(60), 7);
        for attempt in 0..10 {
            let draws: Vec<Duration> = (0..200).map(|_| b.delay(attempt, None)).collect();
            let ceiling = b.ceiling(attempt);
            assert!(draws.iter().all(|d| *d <= ceiling));
            // Full jitter: draws spread over the whole range, not clustered near the top.
            assert!(draws.iter().any(|d| *d < ceiling / 4), "attempt {attempt}");
            assert!(
                draws.iter().any(|d| *d > ceiling * 3 / 4),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn same_seed_same_delays_different_seed_different_delays() {
        let mk = |seed| Backoff::seeded(Duration::from_secs(1), Duration::from_secs(60), seed);
        let (a, b, c) = (mk(3), mk(3), mk(4));
        let da: Vec<Duration> = (0..20).map(|i| a.delay(i % 6, None)).collect();
        let db: Vec<Duration> = (0..20).map(|i| b.delay(i % 6, None)).collect();
        let dc: Vec<Duration> = (0..20).map(|i| c.delay(i % 6, None)).collect();
        assert_eq!(da, db);
        assert_ne!(da, dc);
    }

    #[test]
    fn server_hint_is_a_floor_bounded_by_the_cap() {
        let b = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(60), 9);
        for _ in 0..100 {
            assert!(b.delay(0, Some(Duration::from_secs(5))) >= Duration::from_secs(5));
            assert!(b.delay(0, Some(Duration::from_secs(5))) <= Duration::from_secs(5));
        }
        assert_eq!(
            b.delay(0, Some(Duration::from_secs(3600))),
            Duration::from_secs(60)
        );
        // A hint below the draw does not shorten the wait under the jitter's range.
        let hinted = (0..100)
            .map(|_| b.delay(6, Some(Duration::from_millis(1))))
            .max()
            .unwrap_or_default();
        assert!(hinted > Duration::from_secs(30));
    }

    #[test]
    fn cap_below_base_is_raised() {
        let b = Backoff::seeded(Duration::from_secs(2), Duration::from_secs(1), 0);
        assert_eq!(b.cap(), Duration::from_secs(2));
        assert_eq!(b.base(), Duration::from_secs(2));
        assert!(b.delay(5, None) <= Duration::from_secs(2));
    }
}
