//! When the next reconcile pass starts, and why. Pure: no I/O, no clock reads; every method
//! takes the monotonic `now` (a [`tokio::time::Instant`], so tests run on tokio's paused
//! clock) and, where certificate validity matters, the wall-clock `now_wall`.
//!
//! Owns: the debounce of file events, the periodic rescan cadence, the re-check of torn
//! lineages after a quiet period, the backoff of a pass that failed retryably, and the
//! wake-ups at certificate notBefore/notAfter.
//!
//! Invariants:
//! - while file events are pending, nothing else starts a pass: every other reason waits for
//!   the quiet period and is folded into that pass (so a renewal being written is not read
//!   half-way because a timer happened to fire), unless events keep arriving for longer than
//!   [`Debounce::max_wait`];
//! - once [`Scheduler::take_due`] returned a pass at `now`, [`Scheduler::next_wake`] is
//!   strictly later than `now` until something new happens (no busy loop);
//! - a certificate boundary (notBefore/notAfter + [`BOUNDARY_GRACE`]) is due once: in the
//!   first pass that starts after it.

use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;

/// How long after a notBefore/notAfter instant the wake-up happens, so that the pass
/// validating at its own `now` sees the boundary crossed even with a little clock drift
/// between the monotonic and the wall clock.
pub(crate) const BOUNDARY_GRACE: Duration = Duration::from_secs(1);

/// First delay before retrying a pass that failed retryably; doubles on each failure.
pub(crate) const RETRY_BASE: Duration = Duration::from_secs(30);

/// Upper bound of the retry delay (also never more than the rescan interval).
pub(crate) const RETRY_CAP: Duration = Duration::from_secs(3600);

/// Why a pass starts. The order is the priority when two wake-ups fall on the same instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Reason {
    /// Asked for explicitly: the first pass at start, a reload (SIGHUP), SIGUSR1.
    Requested,
    /// File events, then a quiet period without events.
    Debounce,
    /// A lineage looked torn (renewal in progress) at the last pass: look again.
    TornRecheck,
    /// The last pass failed retryably and its backoff has elapsed.
    Retry,
    /// A known certificate's notBefore has arrived.
    NotBefore,
    /// A known certificate's notAfter has passed.
    NotAfter,
    /// The periodic rescan; a pass with this reason also audits what the CDN serves.
    Rescan,
}

impl Reason {
    /// A short label for logs and the status line.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Reason::Requested => "requested",
            Reason::Debounce => "file change",
            Reason::TornRecheck => "torn lineage re-check",
            Reason::Retry => "retry",
            Reason::NotBefore => "certificate becomes valid",
            Reason::NotAfter => "certificate expires",
            Reason::Rescan => "periodic rescan",
        }
    }
}

/// The next moment the main loop must wake up, and the reason it will then find due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Wake {
    pub(crate) at: Instant,
    pub(crate) reason: Reason,
}

/// The validity window of a certificate known to the last pass (valid or not yet valid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Validity {
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
}

/// Debounce of file events: due once `quiet` has passed without events, or `max_wait` after
/// the first event of a burst that never goes quiet.
#[derive(Clone, Debug)]
pub(crate) struct Debounce {
    quiet: Duration,
    max_wait: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Debounce {
    /// `max_wait` is 30 quiet periods, at least one minute.
    pub(crate) fn new(quiet: Duration) -> Debounce {
        let max_wait = quiet.saturating_mul(30).max(Duration::from_secs(60));
        Debounce {
            quiet,
            max_wait,
            first: None,
            last: None,
        }
    }

    /// The quiet period.
    pub(crate) fn quiet(&self) -> Duration {
        self.quiet
    }

    #[cfg(test)]
    /// The longest a continuous burst of events can hold a pass back.
    pub(crate) fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// Records a file event at `now`.
    pub(crate) fn event(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the pending events become due, or `None` when no event is pending.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + self.quiet).min(first + self.max_wait))
    }

    /// Forgets the pending events (a pass has taken them).
    pub(crate) fn clear(&mut self) {
        self.first = None;
        self.last = None;
    }
}

/// Exponential backoff between passes that failed retryably (the executor already retries
/// each call; this spaces out whole passes).
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    cap: Duration,
    failures: u32,
    due: Option<Instant>,
}

impl Backoff {
    pub(crate) fn new(cap: Duration) -> Backoff {
        Backoff {
            cap: cap.max(RETRY_BASE),
            failures: 0,
            due: None,
        }
    }

    /// Records a failed pass that ended at `now`; returns when to retry.
    pub(crate) fn failed(&mut self, now: Instant) -> Instant {
        self.failures = self.failures.saturating_add(1);
        let doublings = self.failures.saturating_sub(1).min(31);
        let delay = RETRY_BASE.saturating_mul(1 << doublings).min(self.cap);
        let at = now + delay;
        self.due = Some(at);
        at
    }

    /// A pass succeeded: the next failure starts from [`RETRY_BASE`] again.
    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
        self.due = None;
    }

    /// When the retry is due, if one is pending.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.due
    }

    #[cfg(test)]
    /// Consecutive failed passes.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    fn take(&mut self) {
        self.due = None;
    }
}

/// Why the main loop should run a pass now: every reason that was due (the pass itself is
/// `reconcile`'s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Trigger {
    reasons: Vec<Reason>,
}

impl Trigger {
    /// The reasons, sorted by priority, without repeats; never empty.
    pub(crate) fn reasons(&self) -> &[Reason] {
        &self.reasons
    }

    /// The most important reason (for the log line).
    pub(crate) fn primary(&self) -> Reason {
        // Invariant: a Trigger is only built from a non-empty list (see `take_due`).
        self.reasons.first().copied().unwrap_or(Reason::Requested)
    }

    /// A periodic rescan: the pass also audits what the CDN serves (drift).
    pub(crate) fn is_rescan(&self) -> bool {
        self.reasons.contains(&Reason::Rescan)
    }
}

/// What a finished pass tells the scheduler.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PassOutcome {
    /// Validity windows of every certificate the pass parsed, valid *or not yet valid or
    /// expired* (a not-yet-valid certificate must wake the daemon at its notBefore).
    pub(crate) validity: Vec<Validity>,
    /// Some lineage was held as torn (a renewal in progress): look again after a quiet period.
    pub(crate) torn: bool,
    /// The pass failed retryably (a push to retry later); `false` resets the backoff.
    pub(crate) failed: bool,
}

/// The main loop's timers in one value. See the module docs for the rules.
#[derive(Clone, Debug)]
pub(crate) struct Scheduler {
    debounce: Debounce,
    rescan_every: Duration,
    next_rescan: Instant,
    requested: Option<Instant>,
    torn_recheck: Option<Instant>,
    retry: Backoff,
    boundaries: Vec<Validity>,
    /// Wall time at which the last pass started: boundaries up to here are handled.
    handled_until: Option<OffsetDateTime>,
}

impl Scheduler {
    /// A scheduler whose first pass (the start-up pass) is due at `now`.
    pub(crate) fn new(debounce: Duration, rescan_every: Duration, now: Instant) -> Scheduler {
        Scheduler {
            debounce: Debounce::new(debounce),
            rescan_every,
            next_rescan: now + rescan_every,
            requested: Some(now),
            torn_recheck: None,
            retry: Backoff::new(rescan_every.min(RETRY_CAP)),
            boundaries: Vec::new(),
            handled_until: None,
        }
    }

    /// New intervals after a reload. Pending events stay pending; a shorter rescan interval
    /// takes effect now.
    pub(crate) fn reconfigure(&mut self, debounce: Duration, rescan_every: Duration, now: Instant) {
        let (first, last) = (self.debounce.first, self.debounce.last);
        self.debounce = Debounce::new(debounce);
        self.debounce.first = first;
        self.debounce.last = last;
        self.rescan_every = rescan_every;
        self.next_rescan = self.next_rescan.min(now + rescan_every);
        self.retry.cap = rescan_every.min(RETRY_CAP).max(RETRY_BASE);
    }

    /// A file event arrived at `now`.
    pub(crate) fn file_event(&mut self, now: Instant) {
        self.debounce.event(now);
    }

    /// Asks for a pass as soon as possible (still after a pending quiet period).
    pub(crate) fn request(&mut self, now: Instant) {
        self.requested = Some(self.requested.map_or(now, |t| t.min(now)));
    }

    #[cfg(test)]
    /// Consecutive failed passes (for the status line).
    pub(crate) fn failures(&self) -> u32 {
        self.retry.failures()
    }

    /// When to wake up next and why. With file events pending, that is the end of their
    /// quiet period; otherwise the earliest of: a request, a torn re-check, a retry, a
    /// certificate boundary not handled yet, the periodic rescan. Ties go to the
    /// higher-priority [`Reason`].
    pub(crate) fn next_wake(&self, now: Instant, now_wall: OffsetDateTime) -> Wake {
        if let Some(at) = self.debounce.deadline() {
            return Wake {
                at,
                reason: Reason::Debounce,
            };
        }
        let timers = [
            (self.requested, Reason::Requested),
            (self.torn_recheck, Reason::TornRecheck),
            (self.retry.due(), Reason::Retry),
        ];
        let mut best = Wake {
            at: self.next_rescan,
            reason: Reason::Rescan,
        };
        let boundaries = self.pending_boundaries(now, now_wall);
        for (at, reason) in timers
            .into_iter()
            .filter_map(|(at, r)| at.map(|a| (a, r)))
            .chain(boundaries)
        {
            if (at, reason) < (best.at, best.reason) {
                best = Wake { at, reason };
            }
        }
        best
    }

    /// The pass to run at `now`, if one is due, with every reason due; resets those timers.
    pub(crate) fn take_due(&mut self, now: Instant, now_wall: OffsetDateTime) -> Option<Trigger> {
        let mut reasons = Vec::new();
        if let Some(at) = self.debounce.deadline() {
            if at > now {
                return None;
            }
            self.debounce.clear();
            reasons.push(Reason::Debounce);
        }
        if self.requested.is_some_and(|at| at <= now) {
            self.requested = None;
            reasons.push(Reason::Requested);
        }
        if self.torn_recheck.is_some_and(|at| at <= now) {
            self.torn_recheck = None;
            reasons.push(Reason::TornRecheck);
        }
        if self.retry.due().is_some_and(|at| at <= now) {
            self.retry.take();
            reasons.push(Reason::Retry);
        }
        reasons.extend(
            self.pending_boundaries(now, now_wall)
                .filter(|(at, _)| *at <= now)
                .map(|(_, r)| r),
        );
        if self.next_rescan <= now {
            self.next_rescan = now + self.rescan_every;
            reasons.push(Reason::Rescan);
        }
        if reasons.is_empty() {
            return None;
        }
        reasons.sort();
        reasons.dedup();
        self.handled_until = Some(now_wall);
        Some(Trigger { reasons })
    }

    /// Records the outcome of the pass that just finished at `now`.
    pub(crate) fn finish(&mut self, now: Instant, outcome: PassOutcome) {
        self.boundaries = outcome.validity;
        self.torn_recheck = outcome.torn.then(|| now + self.debounce.quiet());
        if outcome.failed {
            self.retry.failed(now);
        } else {
            self.retry.succeeded();
        }
    }

    /// Boundaries (+ grace) not handled by a pass yet, as monotonic deadlines.
    fn pending_boundaries(
        &self,
        now: Instant,
        now_wall: OffsetDateTime,
    ) -> impl Iterator<Item = (Instant, Reason)> + '_ {
        let handled = self.handled_until;
        self.boundaries
            .iter()
            .flat_map(|v| {
                [
                    (v.not_before, Reason::NotBefore),
                    (v.not_after, Reason::NotAfter),
                ]
            })
            .filter_map(move |(t, reason)| {
                let t = t.checked_add(time::Duration::try_from(BOUNDARY_GRACE).ok()?)?;
                if handled.is_some_and(|h| t <= h) {
                    return None;
                }
                Some((wall_to_instant(t, now, now_wall)?, reason))
            })
    }
}

/// The monotonic instant matching wall time `t`: `now` when `t` is past, `None` when it is
/// too far ahead to represent (the periodic rescan comes first anyway).
fn wall_to_instant(t: OffsetDateTime, now: Instant, now_wall: OffsetDateTime) -> Option<Instant> {
    if t <= now_wall {
        return Some(now);
    }
    let ahead = Duration::try_from(t - now_wall).ok()?;
    now.checked_add(ahead)
}

#[cfg(test)]
mod tests;
