//! Plan executor: pushes already-planned batches to the CDN API, politely and completely.
//!
//! Owns:
//! - the write and read [`RateLimiter`]s (never more than N call *starts* in any rolling
//!   second, from the first call, retries included);
//! - retries of retryable errors with full-jitter [`Backoff`], every attempt a fresh API call
//!   (so freshly signed: new nonce, new timestamp), up to `max_attempts`;
//! - what each refusal means for the rest of the run: a credentials error stops everything
//!   (no retries, no further calls); a clock error is reported, not retried; a refusal that
//!   names or implicates one domain is split around it so every other domain is still
//!   updated; a batch-size refusal lowers the batch size for the rest of the run;
//! - read-back (when `verify` is on): one domain of each successful batch is polled through
//!   the read limiter until it serves the new fingerprint, in tasks that overlap the writes.
//!
//! It does not decide *what* to push (the planner does) and does not write the state file:
//! it emits an [`Event`] after each successful call (and each read-back verdict) for the
//! caller to record.
//!
//! Invariants: every domain handed to [`Executor::run`] gets exactly one [`Outcome`]; no call
//! starts after a credentials error has been seen; the first call of a run goes alone (a
//! canary), so a wrong secret costs exactly one call.

mod aliyun;
pub mod backoff;
mod exec;
pub mod limiter;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::mpsc::UnboundedSender;

use crate::aliyun::ApiError;
use crate::cert::{Fingerprint, PrivateKey};

pub use aliyun::AliyunCdn;
pub use backoff::Backoff;
pub use limiter::RateLimiter;

/// Alibaba's documented limit of domains per BatchSet call; a size refusal above it retries
/// at exactly this size before halving.
pub const DOCUMENTED_BATCH_LIMIT: usize = 10;

/// One certificate as it is uploaded: shared by every batch that deploys it.
#[derive(Debug)]
pub struct Upload {
    /// `CertName`, derived from the certificate alone.
    pub cert_name: String,
    /// Full chain PEM, leaf first (`SSLPub`).
    pub chain_pem: String,
    /// The key in upload form (`SSLPri`); its `Debug` redacts.
    pub key: Arc<PrivateKey>,
    /// SHA-256 of the leaf; what read-back expects to see served.
    pub fingerprint: Fingerprint,
    /// The leaf's notAfter, passed through to [`Event::Deployed`] for the state file.
    pub not_after: OffsetDateTime,
}

/// One certificate and its domains, already cut into batches by the planner.
#[derive(Debug, Clone)]
pub struct Job {
    pub upload: Arc<Upload>,
    pub batches: Vec<Vec<String>>,
}

/// One BatchSetCdnDomainServerCertificate call as the executor asks for it.
#[derive(Debug, Clone, Copy)]
pub struct BatchSet<'a> {
    pub upload: &'a Upload,
    pub domains: &'a [String],
}

/// How the executor treats an API error. The client's error type says which applies.
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
    /// Too many domains in one call.
    BatchSize,
    /// Anything else: report, do not retry.
    Other,
}

/// What the executor needs to know about an API error.
pub trait Failure: std::error::Error + Send + Sync + 'static {
    fn handling(&self) -> Handling<'_>;
    /// Short label for logs and the status table.
    fn kind(&self) -> &'static str;
}

/// The two API calls the executor makes. Each call must be freshly signed.
pub trait CdnApi: Send + Sync + 'static {
    type Error: Failure;
    /// BatchSetCdnDomainServerCertificate; returns the `RequestId`.
    fn batch_set(
        &self,
        call: &BatchSet<'_>,
    ) -> impl Future<Output = Result<String, Self::Error>> + Send;
    /// DescribeDomainCertificateInfo: the fingerprint of the leaf `domain` serves now,
    /// `None` when it serves no certificate.
    fn served_fingerprint(
        &self,
        domain: &str,
    ) -> impl Future<Output = Result<Option<Fingerprint>, Self::Error>> + Send;
}

/// Executor settings; [`Options::from_settings`] takes them from the configuration.
#[derive(Debug, Clone)]
pub struct Options {
    pub requests_per_second: u32,
    pub read_requests_per_second: u32,
    /// The rolling window both limiters hold their rate over. One second plus a small
    /// guard so that arrival jitter at the server never puts N+1 calls in one second.
    pub rate_window: Duration,
    /// Domains per call at the start of the run (1..=50).
    pub max_domains_per_call: usize,
    /// Attempts per call for retryable errors (at least 1).
    pub max_attempts: u32,
    pub verify: bool,
    /// How long read-back polls one batch before calling it unverified.
    pub verify_timeout: Duration,
    /// Backoff between retries of a write call.
    pub retry_backoff: Arc<Backoff>,
    /// Backoff between read-back polls.
    pub poll_backoff: Arc<Backoff>,
}

impl Options {
    /// Rates, batch size, attempts and `verify` from the configuration; 1 s/60 s retry
    /// backoff, 1 s/10 s poll backoff, 60 s read-back bound, a 50 ms window guard.
    pub fn from_settings(s: &crate::config::AliyunSettings) -> Options {
        Options {
            requests_per_second: s.requests_per_second,
            read_requests_per_second: s.read_requests_per_second,
            rate_window: Duration::from_millis(1050),
            max_domains_per_call: s.max_domains_per_call,
            max_attempts: s.max_attempts,
            verify: s.verify,
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
pub enum Verification<E = ApiError> {
    /// `verify` is off.
    NotChecked,
    /// The batch's probe domain served the new fingerprint.
    Verified,
    /// It never did within the bound; the last read error, if the last read failed.
    Unverified { last_error: Option<Arc<E>> },
}

/// The end state of one domain after a run.
#[derive(Debug)]
pub enum Outcome<E = ApiError> {
    /// A call including this domain succeeded.
    Deployed {
        request_id: String,
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
pub enum Event<E = ApiError> {
    /// One successful BatchSet call.
    Deployed {
        domains: Vec<String>,
        cert_name: String,
        fingerprint: Fingerprint,
        not_after: OffsetDateTime,
        request_id: String,
    },
    /// Read-back saw `fingerprint` served on the batch's probe domain.
    Verified {
        domains: Vec<String>,
        fingerprint: Fingerprint,
    },
    /// Read-back gave up on the batch.
    Unverified {
        domains: Vec<String>,
        fingerprint: Fingerprint,
        last_error: Option<Arc<E>>,
    },
}

/// Result of one run.
#[derive(Debug)]
pub struct Report<E = ApiError> {
    /// One entry per domain handed in.
    pub outcomes: BTreeMap<String, Outcome<E>>,
    /// BatchSet calls started (retries included).
    pub write_calls: u64,
    /// DescribeDomainCertificateInfo calls started.
    pub read_calls: u64,
    /// Domains per call at the end of the run (lower than configured after a size refusal).
    pub batch_size: usize,
    /// The credentials error that stopped the run, if one did.
    pub stopped: Option<Arc<E>>,
}

impl<E> Report<E> {
    pub fn all_deployed(&self) -> bool {
        self.outcomes.values().all(Outcome::is_deployed)
    }
}

/// Runs jobs against one API. Holds the limiters, so one executor per account and process:
/// consecutive runs share the rate. The batch size it learns also carries over.
pub struct Executor<A> {
    api: Arc<A>,
    writes: Arc<RateLimiter>,
    reads: Arc<RateLimiter>,
    batch_size: Arc<AtomicUsize>,
    options: Options,
    /// Set by [`Executor::halt`]: no call starts any more (see there).
    halt: Arc<tokio::sync::watch::Sender<bool>>,
}

impl<A: CdnApi> Executor<A> {
    pub fn new(api: Arc<A>, options: Options) -> Executor<A> {
        let writes = RateLimiter::with_window(options.requests_per_second, options.rate_window);
        let reads = RateLimiter::with_window(options.read_requests_per_second, options.rate_window);
        Executor {
            api,
            writes: Arc::new(writes),
            reads: Arc::new(reads),
            batch_size: Arc::new(AtomicUsize::new(options.max_domains_per_call.max(1))),
            options,
            halt: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }

    /// Graceful stop (SIGTERM): from now on no call starts, no retry is waited for and
    /// read-backs stop polling; calls already sent finish (bounded by the client timeout)
    /// and their events are still emitted. A halted run's report leaves out the domains it
    /// never sent, and deployments whose read-back was cut short stay `Pending` in the state
    /// file (confirmed by read-back at the next start). Permanent for this executor.
    pub fn halt(&self) {
        self.halt.send_replace(true);
    }

    /// Current domains-per-call (lowered by size refusals, never raised).
    pub fn batch_size(&self) -> usize {
        self.batch_size.load(Ordering::SeqCst)
    }

    /// Pushes every batch of every job concurrently (the write limiter gates the starts)
    /// and waits for every call, retry and read-back to finish. `events`, when given,
    /// receives an [`Event`] after each successful call and each read-back verdict.
    pub async fn run(
        &self,
        jobs: Vec<Job>,
        events: Option<UnboundedSender<Event<A::Error>>>,
    ) -> Report<A::Error> {
        exec::Run::start(self, events).execute(jobs).await
    }
}

#[cfg(test)]
mod tests;
