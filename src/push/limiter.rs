//! A sliding-window rate limiter on tokio's clock.
//!
//! Owns: the rule "never more than `n` calls start in any rolling window" (one second by
//! default), from the very first call. It remembers the start instants of the last `n`
//! permits; a new permit is granted at `max(now, oldest_of_last_n + window)`. Waiters are
//! served in arrival order (tokio's `Mutex` is FIFO), and every permit — a first try or a
//! retry — counts. Because it reads `tokio::time::Instant`, it runs on the paused clock in
//! tests.
//!
//! Invariant: for the recorded starts `s_0 <= s_1 <= …`, `s_{i+n} - s_i >= window`, so any
//! half-open window `[t, t + window)` contains at most `n` starts.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::{Instant, sleep_until};

/// FIFO sliding-window limiter: at most `n` permits in any rolling `window`.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    n: usize,
    window: Duration,
    /// Start instants of the last `n` permits, oldest first.
    starts: Mutex<VecDeque<Instant>>,
}

impl RateLimiter {
    /// At most `per_second` starts (at least 1) in any rolling second.
    #[cfg(test)]
    pub(crate) fn per_second(per_second: u32) -> RateLimiter {
        RateLimiter::with_window(per_second, Duration::from_secs(1))
    }

    /// At most `n` starts (at least 1) in any rolling `window`.
    pub(crate) fn with_window(n: u32, window: Duration) -> RateLimiter {
        let n = usize::try_from(n.max(1)).unwrap_or(usize::MAX);
        RateLimiter {
            n,
            window,
            starts: Mutex::new(VecDeque::with_capacity(n.min(1024))),
        }
    }

    /// Waits until a call may start, records the start, and returns its instant.
    /// The caller starts its call right away. Dropping the future before it resolves
    /// records nothing.
    pub(crate) async fn acquire(&self) -> Instant {
        // Holding the lock while sleeping keeps the queue FIFO: later callers wait
        // behind this one in the mutex's fair queue.
        let mut starts = self.starts.lock().await;
        if starts.len() >= self.n
            && let Some(&oldest) = starts.front()
        {
            sleep_until(oldest + self.window).await;
        }
        let now = Instant::now();
        starts.push_back(now);
        while starts.len() > self.n {
            starts.pop_front();
        }
        now
    }

    /// The most starts this limiter allows in one window.
    #[cfg(test)]
    pub(crate) fn limit(&self) -> usize {
        self.n
    }
}

/// The largest number of `starts` (sorted or not; instants, or offsets from a common
/// origin) that fall inside any half-open window `[t, t + window)`. Used by tests to check
/// the limiter's rule from the outside (e.g. on a server's arrival times).
pub fn max_in_any_window<T>(starts: &[T], window: Duration) -> usize
where
    T: Copy + Ord + std::ops::Add<Duration, Output = T>,
{
    let mut sorted = starts.to_vec();
    sorted.sort();
    let mut best = 0;
    let mut lo = 0;
    for (hi, &t) in sorted.iter().enumerate() {
        while sorted.get(lo).is_some_and(|&s| s + window <= t) {
            lo += 1;
        }
        best = best.max(hi + 1 - lo);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// 100 concurrent calls through a limiter of `n`: every rolling second holds at most
    /// `n` starts, the first second included, and the whole run takes as long as the rule
    /// demands (no more).
    #[tokio::test(start_paused = true)]
    async fn never_more_than_n_in_any_rolling_second() {
        for n in [1u32, 3, 10] {
            let limiter = Arc::new(RateLimiter::per_second(n));
            let t0 = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..100 {
                let l = limiter.clone();
                tasks.spawn(async move { l.acquire().await });
            }
            let starts: Vec<Instant> = tasks.join_all().await;
            assert_eq!(starts.len(), 100);
            assert_eq!(
                max_in_any_window(&starts, Duration::from_secs(1)),
                n as usize
            );
            // The first second holds exactly n starts, not a burst on top of the rate.
            let first = starts
                .iter()
                .filter(|&&s| s < t0 + Duration::from_secs(1))
                .count();
            assert_eq!(first, n as usize);
            // 100 starts need ceil(100/n)-1 full windows after the first batch.
            let last = starts.iter().max().copied().unwrap_or(t0);
            let expected = Duration::from_secs(u64::from(100u32.div_ceil(n) - 1));
            assert_eq!(last - t0, expected);
        }
    }

    /// Retries count: a task that takes a permit, "fails", waits and takes another is
    /// held to the same window as everyone else.
    #[tokio::test(start_paused = true)]
    async fn retries_count_against_the_window() {
        let limiter = Arc::new(RateLimiter::per_second(5));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..40u64 {
            let l = limiter.clone();
            tasks.spawn(async move {
                let mut mine = vec![l.acquire().await];
                // Every third task retries twice after short, uneven pauses.
                if i % 3 == 0 {
                    for k in 0..2 {
                        tokio::time::sleep(Duration::from_millis(70 * (i + k))).await;
                        mine.push(l.acquire().await);
                    }
                }
                mine
            });
        }
        let starts: Vec<Instant> = tasks.join_all().await.into_iter().flatten().collect();
        assert_eq!(starts.len(), 40 + 14 * 2);
        assert_eq!(max_in_any_window(&starts, Duration::from_secs(1)), 5);
    }

    /// Waiters are served in the order they asked.
    #[tokio::test(start_paused = true)]
    async fn fifo_under_concurrency() {
        let limiter = Arc::new(RateLimiter::per_second(2));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..12 {
            let (l, o) = (limiter.clone(), order.clone());
            tasks.spawn(async move {
                l.acquire().await;
                o.lock().map(|mut v| v.push(i)).ok();
            });
            // Make arrival order unambiguous.
            tokio::task::yield_now().await;
        }
        tasks.join_all().await;
        let order = order.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(order, (0..12).collect::<Vec<_>>());
    }

    /// A limiter that is idle for longer than its window lets a full window through again
    /// at once, and a zero limit is treated as one.
    #[tokio::test(start_paused = true)]
    async fn idle_limiter_refills_and_zero_means_one() {
        let limiter = RateLimiter::per_second(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.acquire().await, t0);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let t1 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.acquire().await, t1);
        }
        assert_eq!(limiter.acquire().await, t1 + Duration::from_secs(1));

        let one = RateLimiter::per_second(0);
        assert_eq!(one.limit(), 1);
        let a = one.acquire().await;
        assert_eq!(one.acquire().await - a, Duration::from_secs(1));
    }

    #[test]
    fn window_counter_counts_half_open_windows() {
        let t0 = Instant::now();
        let s = |ms: u64| t0 + Duration::from_millis(ms);
        let w = Duration::from_secs(1);
        assert_eq!(max_in_any_window::<Instant>(&[], w), 0);
        let ms = Duration::from_millis;
        assert_eq!(max_in_any_window(&[ms(0), ms(999), ms(1999)], w), 2);
        assert_eq!(max_in_any_window(&[s(0), s(1000), s(2000)], w), 1);
        assert_eq!(max_in_any_window(&[s(0), s(999), s(1000)], w), 2);
        assert_eq!(max_in_any_window(&[s(500), s(0), s(400), s(1300)], w), 3);
    }
}
