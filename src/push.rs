//! Plan executor: pushes already-planned batches to one or more *targets* (places
//! certificates are deployed to), politely and completely.
//!
//! Owns:
//! - the [`Target`] seam: what one write call deploys (a certificate to at most
//!   [`Limits::domains_per_call`] domains), what one read call tells (the fingerprint a domain
//!   serves), an optional per-certificate prepare step (upload once, bind by reference), the
//!   target's limits, and — through [`Failure`] — how its errors are handled;
//! - per target, the write and read [`RateLimiter`]s (never more than N call *starts* in any
//!   rolling window, from the first call, retries included) and the learned batch size, both
//!   kept from run to run;
//! - retries of retryable errors with full-jitter [`Backoff`], every attempt a fresh call (so
//!   freshly signed: new nonce, new timestamp), up to `max_attempts`;
//! - carrying out what the pure refusal [`policy`] decides for each refusal: a credentials
//!   error stops everything (no retries, no further calls); a clock error is reported, not
//!   retried; a refusal that names or implicates one domain is split around it so every other
//!   domain is still updated; a batch-size refusal lowers the batch size for the rest of the
//!   run; a target that is gone hands its work to its fallback target;
//! - read-back (when `verify` is on): one domain of each successful call is polled through the
//!   target's read limiter until it serves the new fingerprint, in tasks that overlap the
//!   writes.
//!
//! It does not decide *what* to push (the planner does), does not write the state file (it
//! emits an [`Event`] after each successful call, prepare step and read-back verdict for the
//! caller to record), and knows no concrete API: targets are built by the caller from plain
//! values.
//!
//! Invariants: every domain handed to [`Executor::run`] gets exactly one [`Outcome`] (unless
//! the executor is halted); no call starts after a credentials error has been seen; the first
//! call of a run goes alone (a canary), so a wrong secret costs exactly one call; a prepared
//! reference is emitted ([`Event::Prepared`]) before any call that uses it.

pub(crate) mod backoff;
mod exec;
pub mod limiter;
pub(crate) mod policy;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::mpsc::UnboundedSender;

use crate::cert::{Chain, Fingerprint, PrivateKey};

pub use backoff::Backoff;
pub(crate) use limiter::RateLimiter;

/// Alibaba's documented limit of domains per BatchSet call; a size refusal above it that
/// names no limit retries at exactly this size before halving.
pub(crate) const DOCUMENTED_BATCH_LIMIT: usize = 10;

/// The rolling window a "per second" rate is held over: one second plus a small guard so
/// that arrival jitter at the server never puts N+1 calls in one second.
pub(crate) const RATE_WINDOW: Duration = Duration::from_millis(1050);

/// One certificate as it is uploaded: shared by every batch that deploys it.
#[derive(Debug)]
pub struct Upload {
    /// `CertName`, derived from the certificate alone.
    pub cert_name: String,
    /// The full chain, leaf first (`SSLPub`): its certificate's shared parts, put together by
    /// each call that sends it.
    pub chain: Chain,
    /// The key in upload form (`SSLPri`); its `Debug` redacts.
    pub key: Arc<PrivateKey>,
    /// SHA-256 of the leaf; what read-back expects to see served.
    pub fingerprint: Fingerprint,
    /// The leaf's notAfter, passed through to [`Event::Deployed`] for the state file.
    pub not_after: OffsetDateTime,
}

/// Which of the executor's targets: an index into the list given to
/// [`Executor::with_targets`] (0 for [`Executor::new`]'s only target).
pub(crate) type TargetIndex = usize;

/// One certificate and its domains for one target, already cut into batches by the planner.
#[derive(Debug, Clone)]
pub struct Job {
    pub target: TargetIndex,
    pub upload: Arc<Upload>,
    pub batches: Vec<Vec<String>>,
}

/// One write call as the executor asks for it.
#[derive(Debug, Clone, Copy)]
pub struct Deploy<'a> {
    pub(crate) upload: &'a Upload,
    /// At most the target's current batch size (never empty).
    pub(crate) domains: &'a [String],
    /// What [`Target::prepare`] returned for this certificate (e.g. a CAS `CertId`).
    pub prepared: Option<&'a str>,
}

/// At most `calls` starts in any rolling `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    pub(crate) calls: u32,
    pub(crate) per: Duration,
}

impl Rate {
    /// `calls` per [`RATE_WINDOW`] (a second plus the guard).
    pub(crate) fn per_second(calls: u32) -> Rate {
        Rate {
            calls,
            per: RATE_WINDOW,
        }
    }

    fn limiter(self) -> RateLimiter {
        RateLimiter::with_window(self.calls, self.per)
    }
}

/// A target's limits, built by the caller from its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Domains per write call at the start (a size refusal lowers it for the executor's
    /// life; 1 for a per-domain call).
    pub(crate) domains_per_call: usize,
    /// Write calls (and their retries).
    pub(crate) writes: Rate,
    /// Read calls (read-back).
    pub(crate) reads: Rate,
    /// Prepare calls, when the target has a prepare step on its own budget (`None`: not
    /// limited by the executor).
    pub(crate) prepares: Option<Rate>,
}

/// How the executor treats an error. The target's error type says which applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling<'a> {
    /// Transport errors, timeouts, 5xx, throttling, busy: retry after backoff, no sooner
    /// than the server's hint.
    Retry { after: Option<Duration> },
    /// Wrong or unauthorised credentials: stop the whole run.
    Credentials,
    /// The request's timestamp was refused: report, do not retry.
    Clock,
    /// Refused because of one domain (named when the server said which).
    Domain(Option<&'a str>),
    /// The certificate was refused (for one domain when the server named it).
    Certificate(Option<&'a str>),
    /// Too many domains in one call; `limit` when the refusal said how many are allowed.
    BatchSize { limit: Option<usize> },
    /// The call itself does not exist (any more): switch to the target's fallback.
    Gone,
    /// Anything else: report, do not retry.
    Other,
}

/// What the executor needs to know about a target's error.
pub trait Failure: std::error::Error + Send + Sync + 'static {
    fn handling(&self) -> Handling<'_>;
    /// Kebab-case label for logs, the status table and the state file.
    fn kind(&self) -> &'static str;
}

/// A place certificates are deployed to: one way of deploying to one product (a batch
/// call, a per-domain call, a bind-by-reference store). Every call must be one attempt,
/// freshly signed; retrying and rate limiting are the executor's.
pub trait Target: Send + Sync + 'static {
    type Error: Failure;

    /// Kebab-case name of the way of deploying (`cdn-batch`), for logs and the report.
    fn name(&self) -> &'static str;

    /// The product its domains belong to (`cdn`); domains are unique across products.
    fn product(&self) -> &'static str;

    /// Its limits (read once, when the executor is built).
    fn limits(&self) -> Limits;

    /// Whether the target has a prepare step ([`Target::prepare`]); `false` by default, and
    /// then `prepare` is never called.
    fn prepares(&self) -> bool {
        false
    }

    /// Runs once per certificate and run before the first [`Target::deploy`] of it, e.g. an
    /// upload that yields a reference (`CertId`) later calls bind by (`Ok(None)`: none
    /// needed for this certificate). A `Some` is emitted as [`Event::Prepared`] before any
    /// call uses it. Retried like a write call; a final refusal fails the certificate's
    /// domains on this target.
    fn prepare(
        &self,
        upload: &Upload,
    ) -> impl Future<Output = Result<Option<String>, Self::Error>> + Send {
        let _ = upload;
        std::future::ready(Ok(None))
    }

    /// One write call: deploys `call.upload` to `call.domains`; returns the `RequestId`.
    fn deploy(&self, call: &Deploy<'_>)
    -> impl Future<Output = Result<String, Self::Error>> + Send;

    /// One read call: the fingerprint of the leaf `domain` serves now, `None` when it
    /// serves no certificate.
    fn served(
        &self,
        domain: &str,
    ) -> impl Future<Output = Result<Option<Fingerprint>, Self::Error>> + Send;
}

/// Executor settings that are not a target's: attempts, read-back and backoffs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Attempts per call for retryable errors (at least 1).
    pub(crate) max_attempts: u32,
    pub(crate) verify: bool,
    /// How long read-back polls one batch before calling it unverified.
    pub(crate) verify_timeout: Duration,
    /// Backoff between retries of a write call.
    pub retry_backoff: Arc<Backoff>,
    /// Backoff between read-back polls.
    pub poll_backoff: Arc<Backoff>,
}

impl Options {
    /// `max_attempts` and `verify` as given; 1 s/60 s retry backoff, 1 s/10 s poll
    /// backoff, 60 s read-back bound.
    pub fn new(max_attempts: u32, verify: bool) -> Options {
        Options {
            max_attempts,
            verify,
            verify_timeout: Duration::from_secs(60),
            retry_backoff: Arc::new(Backoff::standard()),
            poll_backoff: Arc::new(Backoff::new(
                Duration::from_secs(1),
                Duration::from_secs(10),
                rand::make_rng(),
            )),
        }
    }
}

/// What read-back found for a deployed domain's batch.
#[derive(Debug)]
pub enum Verification<E> {
    /// `verify` is off.
    NotChecked,
    /// The batch's probe domain served the new fingerprint.
    Verified,
    /// It never did within the bound; the last read error, if the last read failed.
    Unverified { last_error: Option<Arc<E>> },
}

impl<E> Clone for Verification<E> {
    fn clone(&self) -> Self {
        match self {
            Verification::NotChecked => Verification::NotChecked,
            Verification::Verified => Verification::Verified,
            Verification::Unverified { last_error } => Verification::Unverified {
                last_error: last_error.clone(),
            },
        }
    }
}

/// The end state of one domain after a run.
#[derive(Debug)]
pub enum Outcome<E> {
    /// A call including this domain succeeded (through `target`); the request id is shared
    /// by the call's domains.
    Deployed {
        target: TargetIndex,
        request_id: Arc<str>,
        fingerprint: Fingerprint,
        verification: Verification<E>,
    },
    /// Refused for good (after retries when the error was retryable).
    Failed { error: Arc<E> },
    /// Never sent because the run stopped (credentials error); the error that stopped it.
    NotAttempted { cause: Arc<E> },
}

impl<E> Outcome<E> {
    pub fn is_deployed(&self) -> bool {
        matches!(self, Outcome::Deployed { .. })
    }
}

/// Progress the caller records as it happens (the state file after each successful call).
#[derive(Debug)]
pub enum Event<E> {
    /// A target's prepare step gave `reference` for the certificate `fingerprint`; no call
    /// using it has started yet.
    Prepared {
        target: TargetIndex,
        fingerprint: Fingerprint,
        reference: String,
    },
    /// One successful write call.
    Deployed {
        target: TargetIndex,
        domains: Vec<String>,
        cert_name: String,
        fingerprint: Fingerprint,
        not_after: OffsetDateTime,
        request_id: String,
    },
    /// Read-back saw `fingerprint` served on the batch's probe domain.
    Verified {
        target: TargetIndex,
        domains: Vec<String>,
        fingerprint: Fingerprint,
    },
    /// Read-back gave up on the batch.
    Unverified {
        target: TargetIndex,
        domains: Vec<String>,
        fingerprint: Fingerprint,
        last_error: Option<Arc<E>>,
    },
}

/// One target's figures at the end of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetReport {
    pub(crate) name: &'static str,
    pub(crate) product: &'static str,
    /// Domains per call the target started with ([`Limits::domains_per_call`]).
    pub(crate) configured: usize,
    /// Domains per call at the end of the run (lower after a size refusal).
    pub(crate) batch_size: usize,
    /// The target answered that it is gone; its work went to its fallback.
    pub(crate) gone: bool,
}

/// Result of one run.
#[derive(Debug)]
pub struct Report<E> {
    /// One entry per domain handed in.
    pub outcomes: BTreeMap<String, Outcome<E>>,
    /// Write calls started (retries included), all targets together.
    pub write_calls: u64,
    /// Read calls started.
    pub read_calls: u64,
    /// Prepare calls started (retries included).
    pub prepare_calls: u64,
    /// Per target, in the executor's order.
    pub(crate) targets: Vec<TargetReport>,
    /// The credentials error that stopped the run, if one did.
    pub stopped: Option<Arc<E>>,
}

impl<E> Report<E> {
    /// The first target's domains per call at the end of the run.
    #[cfg(test)]
    pub(crate) fn batch_size(&self) -> usize {
        self.targets.first().map_or(0, |t| t.batch_size)
    }

    /// The first target whose batch size a size refusal lowered: (configured, now).
    pub(crate) fn lowered_batch(&self) -> Option<&TargetReport> {
        self.targets.iter().find(|t| t.batch_size < t.configured)
    }
}

/// A target as the executor is given it: the target and, optionally, the index of the
/// target to send its work to when it answers that it is gone.
pub(crate) struct TargetSpec<T> {
    pub(crate) target: Arc<T>,
    pub(crate) fallback: Option<TargetIndex>,
}

/// One target with what the executor keeps for it across runs.
struct Lane<T> {
    target: Arc<T>,
    limits: Limits,
    fallback: Option<TargetIndex>,
    writes: Arc<RateLimiter>,
    reads: Arc<RateLimiter>,
    prepares: Option<Arc<RateLimiter>>,
    batch_size: Arc<AtomicUsize>,
    gone: Arc<AtomicBool>,
}

/// Runs jobs against its targets. Holds the limiters, so one executor per account and
/// process: consecutive runs share the rate. The batch sizes it learns, and which targets
/// are gone, also carry over.
pub struct Executor<T> {
    lanes: Vec<Lane<T>>,
    options: Options,
    /// Set by [`Executor::halt`]: no call starts any more (see there).
    halt: tokio::sync::watch::Sender<bool>,
}

impl<T: Target> Executor<T> {
    /// An executor with one target (index 0).
    pub fn new(target: Arc<T>, options: Options) -> Executor<T> {
        Executor::with_targets(
            vec![TargetSpec {
                target,
                fallback: None,
            }],
            options,
        )
    }

    /// An executor with several targets, each with its own limiters (jobs name theirs by
    /// index). A fallback index outside the list is ignored.
    pub(crate) fn with_targets(targets: Vec<TargetSpec<T>>, options: Options) -> Executor<T> {
        let n = targets.len();
        let lanes = targets
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                let limits = spec.target.limits();
                Lane {
                    target: spec.target,
                    limits,
                    fallback: spec.fallback.filter(|&f| f < n && f != i),
                    writes: Arc::new(limits.writes.limiter()),
                    reads: Arc::new(limits.reads.limiter()),
                    prepares: limits.prepares.map(|r| Arc::new(r.limiter())),
                    batch_size: Arc::new(AtomicUsize::new(limits.domains_per_call.max(1))),
                    gone: Arc::new(AtomicBool::new(false)),
                }
            })
            .collect();
        Executor {
            lanes,
            options,
            halt: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Graceful stop (SIGTERM): from now on no call starts, no retry is waited for and
    /// read-backs stop polling; calls already sent finish (bounded by the client timeout)
    /// and their events are still emitted. A halted run's report leaves out the domains it
    /// never sent, and deployments whose read-back was cut short stay `Pending` in the state
    /// file (confirmed by read-back at the next start). Permanent for this executor.
    pub(crate) fn halt(&self) {
        self.halt.send_replace(true);
    }

    /// The first target's current domains-per-call (lowered by size refusals, never
    /// raised).
    #[cfg(test)]
    pub(crate) fn batch_size(&self) -> usize {
        self.lanes.first().map_or(0, |l| {
            l.batch_size.load(std::sync::atomic::Ordering::SeqCst)
        })
    }

    /// Pushes every batch of every job concurrently (each target's write limiter gates the
    /// starts) and waits for every call, retry and read-back to finish. `events`, when
    /// given, receives an [`Event`] after each prepare step, successful call and read-back
    /// verdict. A job naming no target of this executor fails with nothing sent: it is
    /// left out of the report.
    pub async fn run(
        &self,
        jobs: Vec<Job>,
        events: Option<UnboundedSender<Event<T::Error>>>,
    ) -> Report<T::Error> {
        exec::Run::new(self, events).execute(jobs).await
    }
}

#[cfg(test)]
mod tests;
