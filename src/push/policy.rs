//! The refusal policy: what the executor does next after one attempt of one write call
//! failed. Pure: no I/O, no clock, no randomness — a refusal in, a [`Next`] out; the async
//! loop in `exec` only carries the answer out.
//!
//! Owns the rules (table-tested in `tests`):
//! - retryable errors are retried (no sooner than the server's hint) while attempts remain,
//!   then given up;
//! - a credentials refusal stops the whole run;
//! - a size refusal of more than one domain lowers the batch size — to the limit the
//!   refusal names when it names a smaller one, else to [`DOCUMENTED_BATCH_LIMIT`] when the
//!   call was larger, else to half the call rounded up — and the call is sent again at the
//!   new size; a size refusal of one domain is given up;
//! - a refusal naming one domain of the call cuts that domain out (it fails alone, the
//!   rest is sent again); a domain refusal naming none (or a stranger) splits the call in
//!   two halves, so the culprit is found by halving;
//! - a target that says it is gone (the action does not exist) is switched away from when
//!   it has a fallback, else given up;
//! - anything else (clock, certificate naming no domain, unknown) is given up for the
//!   call's domains only.
//!
//! Invariant: a [`Next::Resize`] size is at least 1 and smaller than the refused call;
//! [`Next::CutOut`]'s position lies inside the call; [`Next::Split`] is only answered for
//! calls of two domains or more.

use std::time::Duration;

use super::{DOCUMENTED_BATCH_LIMIT, Handling};

/// One failed attempt, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal<'a> {
    /// How the error says it should be handled.
    pub(crate) handling: Handling<'a>,
    /// The call's domains, in order.
    pub(crate) domains: &'a [String],
    /// 0 for the first attempt of the call.
    pub(crate) attempt: u32,
    /// Attempts allowed per call (at least 1).
    pub(crate) max_attempts: u32,
    /// The target has a fallback to switch to when it is gone.
    pub(crate) has_fallback: bool,
}

/// What to do next with the refused call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Send the same call again (freshly signed) after the backoff, no sooner than the hint.
    RetryAfter(Option<Duration>),
    /// Report the domain at this position alone; send the others again.
    CutOut(usize),
    /// Send the two halves separately (first half `len / 2` domains).
    Split,
    /// Lower the target's batch size to this for the rest of the run; send again.
    Resize(usize),
    /// Report the error for every domain of the call.
    GiveUp,
    /// Report the error for the call's domains and start no further call in this run.
    StopRun,
    /// The target is gone: send the call's domains (and every later one) to its fallback.
    SwitchTarget,
}

/// The next step for `r`. See the module docs for the rules.
pub(crate) fn decide(r: &Refusal<'_>) -> Next {
    let many = r.domains.len() > 1;
    match r.handling {
        Handling::Retry { after } if r.attempt.saturating_add(1) < r.max_attempts.max(1) => {
            Next::RetryAfter(after)
        }
        Handling::Credentials => Next::StopRun,
        Handling::BatchSize { limit } if many => Next::Resize(lower_size(r.domains.len(), limit)),
        Handling::Domain(Some(named)) | Handling::Certificate(Some(named)) if many => {
            match position(r.domains, named) {
                Some(at) => Next::CutOut(at),
                None if matches!(r.handling, Handling::Domain(_)) => Next::Split,
                None => Next::GiveUp,
            }
        }
        Handling::Domain(None) if many => Next::Split,
        Handling::Gone if r.has_fallback => Next::SwitchTarget,
        _ => Next::GiveUp,
    }
}

/// The batch size to send again at after a call of `refused` (> 1) domains was refused as
/// too large: the limit the refusal named when it is smaller than the call; otherwise
/// Alibaba's documented limit when the call was larger than it; otherwise half the call,
/// rounded up (so 3 → 2, never straight to 1).
pub(crate) fn lower_size(refused: usize, named_limit: Option<usize>) -> usize {
    match named_limit {
        Some(limit) if limit < refused => limit.max(1),
        _ if refused > DOCUMENTED_BATCH_LIMIT => DOCUMENTED_BATCH_LIMIT,
        _ => refused.div_ceil(2).max(1),
    }
}

/// Where the domain an error names sits in the call (Alibaba's case may differ).
pub(crate) fn position(domains: &[String], named: &str) -> Option<usize> {
    domains.iter().position(|d| d.eq_ignore_ascii_case(named))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("d{i}.example.com")).collect()
    }

    /// (handling, call size, attempt, max attempts, has fallback) → next.
    #[test]
    fn the_table() {
        let hint = Some(Duration::from_secs(3));
        let cases: Vec<(Handling<'_>, usize, u32, u32, bool, Next)> = vec![
            // Retryable: retried while attempts remain, then given up.
            (
                Handling::Retry { after: hint },
                5,
                0,
                5,
                false,
                Next::RetryAfter(hint),
            ),
            (
                Handling::Retry { after: None },
                1,
                3,
                5,
                false,
                Next::RetryAfter(None),
            ),
            (
                Handling::Retry { after: None },
                5,
                4,
                5,
                false,
                Next::GiveUp,
            ),
            (
                Handling::Retry { after: None },
                5,
                0,
                1,
                false,
                Next::GiveUp,
            ),
            (
                Handling::Retry { after: None },
                5,
                0,
                0,
                false,
                Next::GiveUp,
            ),
            // Credentials stop the run, whatever the size or attempt.
            (Handling::Credentials, 1, 0, 5, false, Next::StopRun),
            (Handling::Credentials, 50, 2, 5, true, Next::StopRun),
            // Clock, unknown: the call's domains only.
            (Handling::Clock, 10, 0, 5, false, Next::GiveUp),
            (Handling::Other, 10, 0, 5, true, Next::GiveUp),
            // Size refusals.
            (
                Handling::BatchSize { limit: None },
                50,
                0,
                5,
                false,
                Next::Resize(10),
            ),
            (
                Handling::BatchSize { limit: None },
                11,
                0,
                5,
                false,
                Next::Resize(10),
            ),
            (
                Handling::BatchSize { limit: None },
                10,
                0,
                5,
                false,
                Next::Resize(5),
            ),
            (
                Handling::BatchSize { limit: None },
                5,
                0,
                5,
                false,
                Next::Resize(3),
            ),
            (
                Handling::BatchSize { limit: None },
                3,
                0,
                5,
                false,
                Next::Resize(2),
            ),
            (
                Handling::BatchSize { limit: None },
                2,
                0,
                5,
                false,
                Next::Resize(1),
            ),
            (
                Handling::BatchSize { limit: None },
                1,
                0,
                5,
                false,
                Next::GiveUp,
            ),
            (
                Handling::BatchSize { limit: Some(2) },
                3,
                0,
                5,
                false,
                Next::Resize(2),
            ),
            (
                Handling::BatchSize { limit: Some(2) },
                50,
                0,
                5,
                false,
                Next::Resize(2),
            ),
            (
                Handling::BatchSize { limit: Some(25) },
                50,
                0,
                5,
                false,
                Next::Resize(25),
            ),
            (
                Handling::BatchSize { limit: Some(0) },
                50,
                0,
                5,
                false,
                Next::Resize(1),
            ),
            // A named limit that is not below the call is not believed.
            (
                Handling::BatchSize { limit: Some(50) },
                50,
                0,
                5,
                false,
                Next::Resize(10),
            ),
            (
                Handling::BatchSize { limit: Some(8) },
                4,
                0,
                5,
                false,
                Next::Resize(2),
            ),
            (
                Handling::BatchSize { limit: Some(2) },
                1,
                0,
                5,
                false,
                Next::GiveUp,
            ),
            // Domain refusals: cut out when named, split when not.
            (
                Handling::Domain(Some("d3.example.com")),
                5,
                0,
                5,
                false,
                Next::CutOut(3),
            ),
            (
                Handling::Domain(Some("D0.EXAMPLE.COM")),
                5,
                0,
                5,
                false,
                Next::CutOut(0),
            ),
            (
                Handling::Domain(Some("elsewhere.example")),
                5,
                0,
                5,
                false,
                Next::Split,
            ),
            (Handling::Domain(None), 5, 0, 5, false, Next::Split),
            (Handling::Domain(None), 1, 0, 5, false, Next::GiveUp),
            (
                Handling::Domain(Some("d0.example.com")),
                1,
                0,
                5,
                false,
                Next::GiveUp,
            ),
            // Certificate refusals: cut out when named, else the whole call.
            (
                Handling::Certificate(Some("d1.example.com")),
                4,
                0,
                5,
                false,
                Next::CutOut(1),
            ),
            (
                Handling::Certificate(Some("elsewhere.example")),
                4,
                0,
                5,
                false,
                Next::GiveUp,
            ),
            (Handling::Certificate(None), 4, 0, 5, false, Next::GiveUp),
            // A target that is gone: switch when there is somewhere to go.
            (Handling::Gone, 10, 0, 5, true, Next::SwitchTarget),
            (Handling::Gone, 1, 0, 5, true, Next::SwitchTarget),
            (Handling::Gone, 10, 0, 5, false, Next::GiveUp),
        ];
        for (handling, n, attempt, max_attempts, has_fallback, want) in cases {
            let domains = names(n);
            let r = Refusal {
                handling,
                domains: &domains,
                attempt,
                max_attempts,
                has_fallback,
            };
            assert_eq!(decide(&r), want, "{r:?}");
        }
    }

    /// Whatever the refusal says, a resize is at least 1 and below the refused size.
    #[test]
    fn resize_always_shrinks() {
        for refused in 2..=60 {
            for limit in [
                None,
                Some(0),
                Some(1),
                Some(2),
                Some(9),
                Some(10),
                Some(59),
                Some(99),
            ] {
                let n = lower_size(refused, limit);
                assert!((1..refused).contains(&n), "{refused} {limit:?} -> {n}");
            }
        }
    }
}
