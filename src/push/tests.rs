//! Executor tests against a scripted fake API, on tokio's paused clock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::limiter::max_in_any_window;
use super::*;
use crate::cert::{Fingerprint, PrivateKey};

#[derive(Debug, Clone, PartialEq, Eq)]
enum FakeClass {
    Retry(Option<Duration>),
    Credentials,
    Clock,
    Domain(Option<String>),
    Certificate(Option<String>),
    BatchSize,
    Gone,
    Other,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("fake {class:?}")]
struct FakeError {
    class: FakeClass,
}

impl Failure for FakeError {
    fn handling(&self) -> Handling<'_> {
        match &self.class {
            FakeClass::Retry(after) => Handling::Retry { after: *after },
            FakeClass::Credentials => Handling::Credentials,
            FakeClass::Clock => Handling::Clock,
            FakeClass::Domain(d) => Handling::Domain(d.as_deref()),
            FakeClass::Certificate(d) => Handling::Certificate(d.as_deref()),
            FakeClass::BatchSize => Handling::BatchSize { limit: None },
            FakeClass::Gone => Handling::Gone,
            FakeClass::Other => Handling::Other,
        }
    }
    fn kind(&self) -> &'static str {
        "fake"
    }
}

fn err(class: FakeClass) -> FakeError {
    FakeError { class }
}

/// One recorded BatchSet call.
#[derive(Debug, Clone)]
struct Call {
    at: Instant,
    domains: Vec<String>,
    /// The prepared reference the call carried.
    prepared: Option<String>,
}

/// A scripted CDN: answers from a queue of scripted errors first, then by its rules.
#[derive(Default)]
struct Fake {
    latency: Duration,
    /// Errors returned by the next calls, in order, before the rules apply.
    script: Mutex<VecDeque<FakeError>>,
    /// The first `script_after` answers bypass the script.
    script_after: usize,
    answers: std::sync::atomic::AtomicUsize,
    /// Every call fails with this error (after the script).
    always: Option<FakeError>,
    /// Domains the CDN does not know; `name_unknown` says whether errors name them.
    unknown: HashSet<String>,
    name_unknown: bool,
    /// Calls with more domains are refused as too large.
    max_domains: Option<usize>,
    /// Served certificates become visible this long after the call (None: never).
    apply_after: Option<Duration>,
    /// Errors returned by the next reads, in order.
    read_script: Mutex<VecDeque<FakeError>>,
    calls: Mutex<Vec<Call>>,
    reads: Mutex<Vec<Instant>>,
    served: Mutex<HashMap<String, (Fingerprint, Instant)>>,
    /// Set from the test's [`Opts`] before the executor is built.
    limits: Option<Limits>,
    /// The target's name in the report.
    name: &'static str,
    /// Certificates prepared (by fingerprint), each answer a reference `ref-<n>`.
    prepared: Mutex<Vec<Fingerprint>>,
    /// Errors returned by the next prepare calls, in order.
    prepare_script: Mutex<VecDeque<FakeError>>,
    /// Whether this target prepares (answers `Some(reference)`).
    prepares: bool,
}

impl Fake {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
    fn reads(&self) -> Vec<Instant> {
        self.reads.lock().map(|c| c.clone()).unwrap_or_default()
    }
    fn answer(&self, call: &Deploy<'_>) -> Result<String, FakeError> {
        let n = self
            .answers
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n >= self.script_after
            && let Some(e) = self.script.lock().ok().and_then(|mut s| s.pop_front())
        {
            return Err(e);
        }
        if let Some(e) = &self.always {
            return Err(e.clone());
        }
        if self.max_domains.is_some_and(|m| call.domains.len() > m) {
            return Err(err(FakeClass::BatchSize));
        }
        if let Some(bad) = call.domains.iter().find(|d| self.unknown.contains(*d)) {
            return Err(err(FakeClass::Domain(
                self.name_unknown.then(|| bad.clone()),
            )));
        }
        if let (Some(after), Ok(mut served)) = (self.apply_after, self.served.lock()) {
            for d in call.domains {
                served.insert(d.clone(), (call.upload.fingerprint, Instant::now() + after));
            }
        }
        Ok(format!("req-{}", call.domains.join("+")))
    }
}

impl Target for Fake {
    type Error = FakeError;
    fn name(&self) -> &'static str {
        if self.name.is_empty() {
            "fake"
        } else {
            self.name
        }
    }
    fn product(&self) -> &'static str {
        "cdn"
    }
    fn limits(&self) -> Limits {
        self.limits.unwrap_or(Limits {
            domains_per_call: 50,
            writes: Rate::per_second(10),
            reads: Rate::per_second(100),
            prepares: None,
        })
    }
    fn prepares(&self) -> bool {
        self.prepares
    }
    async fn prepare(&self, upload: &Upload) -> Result<Option<String>, FakeError> {
        tokio::time::sleep(self.latency).await;
        if let Some(e) = self
            .prepare_script
            .lock()
            .ok()
            .and_then(|mut s| s.pop_front())
        {
            return Err(e);
        }
        let mut prepared = self.prepared.lock().expect("not poisoned");
        prepared.push(upload.fingerprint);
        Ok(Some(format!("ref-{}", upload.fingerprint.0[0])))
    }
    async fn deploy(&self, call: &Deploy<'_>) -> Result<String, FakeError> {
        let at = Instant::now();
        let domains = call.domains.to_vec();
        let prepared = call.prepared.map(str::to_string);
        self.calls
            .lock()
            .map(|mut c| {
                c.push(Call {
                    at,
                    domains,
                    prepared,
                })
            })
            .ok();
        tokio::time::sleep(self.latency).await;
        self.answer(call)
    }
    async fn served(&self, domain: &str) -> Result<Option<Fingerprint>, FakeError> {
        self.reads.lock().map(|mut r| r.push(Instant::now())).ok();
        tokio::time::sleep(self.latency).await;
        if let Some(e) = self.read_script.lock().ok().and_then(|mut s| s.pop_front()) {
            return Err(e);
        }
        let now = Instant::now();
        let served = self.served.lock().ok().and_then(|s| s.get(domain).copied());
        Ok(served.filter(|(_, at)| *at <= now).map(|(fp, _)| fp))
    }
}

fn upload(n: u8) -> Arc<Upload> {
    Arc::new(Upload {
        cert_name: format!("cert-{n}"),
        chain: crate::cert::Chain::whole("-----BEGIN CERTIFICATE-----\n"),
        key: Arc::new(PrivateKey::from_upload_pem(String::from("k").into())),
        fingerprint: Fingerprint([n; 32]),
        not_after: OffsetDateTime::UNIX_EPOCH,
    })
}

fn domains(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{prefix}{i:03}.example.com"))
        .collect()
}

fn job(n: u8, batches: Vec<Vec<String>>) -> Job {
    Job {
        target: 0,
        upload: upload(n),
        batches,
    }
}

/// Executor options and the fake target's limits.
#[derive(Clone)]
struct Opts {
    options: Options,
    limits: Limits,
}

impl std::ops::Deref for Opts {
    type Target = Options;
    fn deref(&self) -> &Options {
        &self.options
    }
}

impl std::ops::DerefMut for Opts {
    fn deref_mut(&mut self) -> &mut Options {
        &mut self.options
    }
}

fn limits(rps: u32, batch: usize) -> Limits {
    let second = Duration::from_secs(1);
    Limits {
        domains_per_call: batch,
        writes: Rate {
            calls: rps,
            per: second,
        },
        reads: Rate {
            calls: 100,
            per: second,
        },
        prepares: None,
    }
}

fn options(rps: u32, batch: usize) -> Opts {
    Opts {
        limits: limits(rps, batch),
        options: base_options(),
    }
}

fn base_options() -> Options {
    Options {
        max_attempts: 5,
        verify: false,
        verify_timeout: Duration::from_secs(60),
        retry_backoff: Arc::new(Backoff::seeded(
            Duration::from_secs(1),
            Duration::from_secs(60),
            1,
        )),
        poll_backoff: Arc::new(Backoff::seeded(
            Duration::from_secs(1),
            Duration::from_secs(10),
            2,
        )),
    }
}

/// The fake with the test's limits, and an executor on it.
fn executor(mut fake: Fake, opts: &Opts) -> (Arc<Fake>, Executor<Fake>) {
    fake.limits = Some(opts.limits);
    let fake = Arc::new(fake);
    let ex = Executor::new(fake.clone(), opts.options.clone());
    (fake, ex)
}

async fn run(fake: Fake, opts: Opts, jobs: Vec<Job>) -> (Arc<Fake>, Report<FakeError>) {
    let (fake, ex) = executor(fake, &opts);
    let report = ex.run(jobs, None).await;
    (fake, report)
}

fn deployed(r: &Report<FakeError>) -> usize {
    r.outcomes.values().filter(|o| o.is_deployed()).count()
}

fn failed_with(r: &Report<FakeError>, d: &str) -> Option<FakeClass> {
    match r.outcomes.get(d) {
        Some(Outcome::Failed { error }) => Some(error.class.clone()),
        _ => None,
    }
}

/// 100 one-domain batches with 100 ms latency at 10/s: calls overlap, so the run takes
/// ~9.1 s (the canary's latency + 9 windows + one latency), never more than 10 starts in any
/// rolling second, first second included.
#[tokio::test(start_paused = true)]
async fn calls_overlap_and_hold_the_rate() {
    let fake = Fake {
        latency: Duration::from_millis(100),
        ..Fake::default()
    };
    let batches = domains("d", 100).into_iter().map(|d| vec![d]).collect();
    let t0 = Instant::now();
    let (fake, report) = run(fake, options(10, 50), vec![job(1, batches)]).await;
    let elapsed = t0.elapsed();
    assert_eq!(deployed(&report), 100);
    assert_eq!(report.write_calls, 100);
    let starts: Vec<Instant> = fake.calls().iter().map(|c| c.at).collect();
    assert_eq!(max_in_any_window(&starts, Duration::from_secs(1)), 10);
    assert!(elapsed <= Duration::from_millis(9_200), "{elapsed:?}");
    assert!(elapsed >= Duration::from_millis(9_000), "{elapsed:?}");
}

/// 300 one-domain batches at 1000 calls/s against a CDN that takes 10 s to answer: no more
/// than `MAX_CALLS_IN_FLIGHT` calls are ever started and unanswered (so no more tasks wait),
/// the run keeps that many going, and every domain is deployed.
#[tokio::test(start_paused = true)]
async fn calls_in_flight_are_capped() {
    const N: usize = 300;
    let latency = Duration::from_secs(10);
    let fake = Fake {
        latency,
        ..Fake::default()
    };
    let batches = domains("d", N).into_iter().map(|d| vec![d]).collect();
    let (fake, report) = run(fake, options(1000, 50), vec![job(1, batches)]).await;
    assert_eq!(deployed(&report), N);
    assert_eq!(report.write_calls, N as u64);
    let mut starts: Vec<Instant> = fake.calls().iter().map(|c| c.at).collect();
    starts.sort();
    // Started within one answer's time of each other: in flight together.
    let most = max_in_any_window(&starts, latency - Duration::from_millis(1));
    assert_eq!(most, exec::MAX_CALLS_IN_FLIGHT);
}

/// Retries count against the rate: under scripted throttling the starts (first tries and
/// retries together) still never exceed N per rolling second.
#[tokio::test(start_paused = true)]
async fn retries_count_against_the_rate() {
    // The first 30 calls are throttled; each is retried once.
    let script = (0..30).map(|_| err(FakeClass::Retry(None))).collect();
    let fake = Fake {
        latency: Duration::from_millis(50),
        script: Mutex::new(script),
        script_after: 1,
        ..Fake::default()
    };
    let batches = domains("r", 60).into_iter().map(|d| vec![d]).collect();
    let (fake, report) = run(fake, options(5, 50), vec![job(1, batches)]).await;
    assert_eq!(deployed(&report), 60);
    assert_eq!(report.write_calls, 90);
    let starts: Vec<Instant> = fake.calls().iter().map(|c| c.at).collect();
    assert_eq!(starts.len(), 90);
    assert_eq!(max_in_any_window(&starts, Duration::from_secs(1)), 5);
}

#[tokio::test(start_paused = true)]
async fn retry_then_success_waits_for_the_server_hint() {
    let script = VecDeque::from([
        err(FakeClass::Retry(None)),
        err(FakeClass::Retry(Some(Duration::from_secs(7)))),
    ]);
    let fake = Fake {
        script: Mutex::new(script),
        ..Fake::default()
    };
    let batch = domains("a", 3);
    let (fake, report) = run(fake, options(10, 50), vec![job(1, vec![batch.clone()])]).await;
    assert_eq!(deployed(&report), 3);
    assert_eq!(report.write_calls, 3);
    let calls = fake.calls();
    assert!(calls.iter().all(|c| c.domains == batch));
    // Full jitter under 1 s for the first retry; the hint holds the second back 7 s.
    assert!(calls[1].at - calls[0].at <= Duration::from_secs(1));
    assert!(calls[2].at - calls[1].at >= Duration::from_secs(7));
    match report.outcomes.get("a000.example.com") {
        Some(Outcome::Deployed {
            request_id,
            fingerprint,
            verification,
            ..
        }) => {
            assert!(request_id.starts_with("req-a000"));
            assert_eq!(*fingerprint, Fingerprint([1; 32]));
            assert!(matches!(verification, Verification::NotChecked));
        }
        other => panic!("not deployed: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn max_attempts_exhausted_reports_the_last_error() {
    let fake = Fake {
        always: Some(err(FakeClass::Retry(None))),
        ..Fake::default()
    };
    let mut opts = options(10, 50);
    opts.max_attempts = 3;
    let (fake, report) = run(fake, opts, vec![job(1, vec![domains("x", 4)])]).await;
    assert_eq!(report.write_calls, 3);
    assert_eq!(fake.calls().len(), 3);
    assert_eq!(deployed(&report), 0);
    assert_eq!(report.outcomes.len(), 4);
    for d in domains("x", 4) {
        assert_eq!(failed_with(&report, &d), Some(FakeClass::Retry(None)));
    }
    assert!(report.stopped.is_none());
}

/// A wrong secret: the canary is the only call, nothing is retried, every other domain is
/// reported as not attempted with the error that stopped the run.
#[tokio::test(start_paused = true)]
async fn credentials_error_stops_everything_after_one_call() {
    let fake = Fake {
        latency: Duration::from_millis(100),
        always: Some(err(FakeClass::Credentials)),
        ..Fake::default()
    };
    let jobs = vec![
        job(
            1,
            domains("p", 30)
                .chunks(10)
                .map(<[String]>::to_vec)
                .collect(),
        ),
        job(
            2,
            domains("q", 30)
                .chunks(10)
                .map(<[String]>::to_vec)
                .collect(),
        ),
    ];
    let t0 = Instant::now();
    let (fake, report) = run(fake, options(10, 50), jobs).await;
    assert_eq!(fake.calls().len(), 1);
    assert_eq!(report.write_calls, 1);
    assert!(
        t0.elapsed() <= Duration::from_millis(100),
        "waited: {:?}",
        t0.elapsed()
    );
    assert!(matches!(
        report.stopped.as_deref(),
        Some(FakeError {
            class: FakeClass::Credentials
        })
    ));
    assert_eq!(report.outcomes.len(), 60);
    let first = &fake.calls()[0].domains;
    for (d, o) in &report.outcomes {
        match o {
            Outcome::Failed { error } => {
                assert!(first.contains(d));
                assert_eq!(error.class, FakeClass::Credentials);
            }
            Outcome::NotAttempted { cause } => {
                assert!(!first.contains(d));
                assert_eq!(cause.class, FakeClass::Credentials);
            }
            Outcome::Deployed { .. } => panic!("{d} deployed"),
        }
    }
}

/// Credentials revoked in the middle of a run: no call starts after the refusal arrives,
/// and calls waiting to retry are abandoned.
#[tokio::test(start_paused = true)]
async fn credentials_error_mid_run_starts_no_further_call() {
    // The canary (answer 1) succeeds; answers 2..=4 are throttled with a 30 s hint,
    // answer 5 is a credentials refusal, the rest succeed.
    let mut script: VecDeque<FakeError> = (0..3)
        .map(|_| err(FakeClass::Retry(Some(Duration::from_secs(30)))))
        .collect();
    script.push_back(err(FakeClass::Credentials));
    let fake = Fake {
        latency: Duration::from_millis(100),
        script: Mutex::new(script),
        script_after: 1,
        ..Fake::default()
    };
    let batches = domains("m", 40).into_iter().map(|d| vec![d]).collect();
    let (fake, report) = run(fake, options(10, 50), vec![job(1, batches)]).await;
    let calls = fake.calls();
    // Canary at 0, nine more when it answers (0.1 s); their answers (0.2 s) stop the run
    // before the next window opens at 1 s.
    assert_eq!(calls.len(), 10, "{calls:?}");
    let refusal_at = calls[0].at + Duration::from_millis(200);
    assert!(calls.iter().all(|c| c.at < refusal_at));
    assert!(report.stopped.is_some());
    let count =
        |f: fn(&Outcome<FakeError>) -> bool| report.outcomes.values().filter(|o| f(o)).count();
    assert_eq!(report.outcomes.len(), 40);
    assert_eq!(count(|o| o.is_deployed()), 6);
    assert_eq!(count(|o| matches!(o, Outcome::Failed { .. })), 1);
    assert_eq!(count(|o| matches!(o, Outcome::NotAttempted { .. })), 33);
}

/// A batch of 10 with one unknown domain that the server names: the other nine deploy in
/// one more call and the bad one is reported alone.
#[tokio::test(start_paused = true)]
async fn named_unknown_domain_is_cut_out() {
    let batch = domains("s", 10);
    let fake = Fake {
        unknown: HashSet::from([batch[6].clone()]),
        name_unknown: true,
        ..Fake::default()
    };
    let (fake, report) = run(fake, options(10, 10), vec![job(1, vec![batch.clone()])]).await;
    assert_eq!(deployed(&report), 9);
    assert_eq!(
        failed_with(&report, &batch[6]),
        Some(FakeClass::Domain(Some(batch[6].clone())))
    );
    assert_eq!(fake.calls().len(), 2);
}

/// When the server does not say which domain, halving finds it: the other nine deploy
/// and the bad one is the only domain of its final call.
#[tokio::test(start_paused = true)]
async fn unnamed_unknown_domain_is_found_by_halving() {
    let batch = domains("h", 10);
    let bad = batch[3].clone();
    let fake = Fake {
        unknown: HashSet::from([bad.clone()]),
        ..Fake::default()
    };
    let (fake, report) = run(fake, options(10, 10), vec![job(1, vec![batch.clone()])]).await;
    assert_eq!(deployed(&report), 9);
    assert_eq!(failed_with(&report, &bad), Some(FakeClass::Domain(None)));
    let calls = fake.calls();
    // 10 → 5+5 → (2+3) → (1+2) → (1+1): 1 + 2 + 2 + 2 + 2 calls.
    assert_eq!(calls.len(), 9);
    assert!(calls.iter().any(|c| c.domains == [bad.clone()]));
    // Every call that included the bad domain was refused; no good domain was sent twice
    // after its successful call.
    let good_sent: usize = calls
        .iter()
        .filter(|c| !c.domains.contains(&bad))
        .map(|c| c.domains.len())
        .sum();
    assert_eq!(good_sent, 9);
}

/// The server limits calls to 10 domains while the plan says 50: the first refusal lowers
/// the batch size for everyone, every domain still deploys, and the size stays lowered.
#[tokio::test(start_paused = true)]
async fn size_refusal_lowers_the_batch_size_for_the_run() {
    let fake = Fake {
        max_domains: Some(10),
        latency: Duration::from_millis(100),
        ..Fake::default()
    };
    let jobs = vec![
        job(1, vec![domains("a", 50), domains("b", 50)]),
        job(2, vec![domains("c", 50), domains("d", 21)]),
    ];
    let (fake, report) = run(fake, options(10, 50), jobs).await;
    assert_eq!(deployed(&report), 171);
    assert_eq!(report.batch_size(), 10);
    let calls = fake.calls();
    let refused = calls.iter().filter(|c| c.domains.len() > 10).count();
    assert_eq!(refused, 1, "only the canary is refused as too large");
    // 5 + 5 + 5 + 3 calls of ≤ 10, plus the refused one.
    assert_eq!(calls.len(), 19);
}

/// If 10 is refused too, the size halves, rounding up (10 → 5 → 3), until calls pass.
#[tokio::test(start_paused = true)]
async fn size_refusal_halves_below_the_documented_limit() {
    let fake = Fake {
        max_domains: Some(4),
        ..Fake::default()
    };
    let (fake, ex) = executor(fake, &options(10, 50));
    let report = ex.run(vec![job(1, vec![domains("z", 50)])], None).await;
    assert_eq!(deployed(&report), 50);
    assert_eq!(report.batch_size(), 3);
    assert_eq!(ex.batch_size(), 3);
    let refused: Vec<usize> = fake
        .calls()
        .iter()
        .map(|c| c.domains.len())
        .filter(|&n| n > 4)
        .collect();
    assert_eq!(refused, [50, 10, 5]);
    // The next run starts at the lowered size: no refusal at all.
    let before = fake.calls().len();
    let report = ex.run(vec![job(2, vec![domains("y", 6)])], None).await;
    assert_eq!(deployed(&report), 6);
    assert_eq!(fake.calls().len() - before, 2);
}

/// A batch-size refusal of a single domain cannot be split: it is reported.
#[tokio::test(start_paused = true)]
async fn size_refusal_of_one_domain_is_reported() {
    let fake = Fake {
        max_domains: Some(0),
        ..Fake::default()
    };
    let (fake, report) = run(fake, options(10, 50), vec![job(1, vec![domains("o", 2)])]).await;
    assert_eq!(deployed(&report), 0);
    assert_eq!(
        failed_with(&report, "o000.example.com"),
        Some(FakeClass::BatchSize)
    );
    assert_eq!(
        failed_with(&report, "o001.example.com"),
        Some(FakeClass::BatchSize)
    );
    assert_eq!(report.batch_size(), 1);
    assert_eq!(fake.calls().len(), 3);
}

/// Clock errors, certificate errors naming no domain and unknown errors are reported for
/// the whole batch without retrying or splitting; other batches go on.
#[tokio::test(start_paused = true)]
async fn non_retryable_errors_fail_the_batch_only() {
    for class in [
        FakeClass::Clock,
        FakeClass::Certificate(None),
        FakeClass::Other,
    ] {
        let fake = Fake {
            script: Mutex::new(VecDeque::from([err(class.clone())])),
            ..Fake::default()
        };
        let jobs = vec![job(1, vec![domains("f", 8)]), job(2, vec![domains("g", 8)])];
        let (fake, report) = run(fake, options(10, 50), jobs).await;
        assert_eq!(fake.calls().len(), 2, "{class:?}");
        assert_eq!(deployed(&report), 8, "{class:?}");
        let first = &fake.calls()[0].domains;
        for d in first {
            assert_eq!(failed_with(&report, d), Some(class.clone()));
        }
        assert!(report.stopped.is_none());
    }
}

/// A certificate refusal that names a domain in the batch is cut out like a domain refusal.
#[tokio::test(start_paused = true)]
async fn certificate_error_naming_a_domain_is_cut_out() {
    let batch = domains("c", 6);
    let class = FakeClass::Certificate(Some(batch[2].clone()));
    let fake = Fake {
        script: Mutex::new(VecDeque::from([err(class.clone())])),
        ..Fake::default()
    };
    let (fake, report) = run(fake, options(10, 50), vec![job(1, vec![batch.clone()])]).await;
    assert_eq!(deployed(&report), 5);
    assert_eq!(failed_with(&report, &batch[2]), Some(class));
    assert_eq!(fake.calls().len(), 2);
}

/// A domain error naming a domain that is not in the batch falls back to halving.
#[tokio::test(start_paused = true)]
async fn domain_error_naming_a_stranger_falls_back_to_halving() {
    let class = FakeClass::Domain(Some(String::from("elsewhere.example.com")));
    let fake = Fake {
        script: Mutex::new(VecDeque::from([err(class)])),
        ..Fake::default()
    };
    let (fake, report) = run(fake, options(10, 50), vec![job(1, vec![domains("e", 4)])]).await;
    assert_eq!(deployed(&report), 4);
    let sizes: Vec<usize> = fake.calls().iter().map(|c| c.domains.len()).collect();
    assert_eq!(sizes, [4, 2, 2]);
}

/// Read-back: the CDN applies the change 3 s after the call; each batch is reported
/// verified, events come in order (deployed, then verified) per batch, and the writes are
/// not slowed by the reads.
#[tokio::test(start_paused = true)]
async fn read_back_verifies_each_batch() {
    let mk = || Fake {
        latency: Duration::from_millis(100),
        apply_after: Some(Duration::from_secs(3)),
        ..Fake::default()
    };
    let batches: Vec<Vec<String>> = domains("v", 60).chunks(3).map(<[String]>::to_vec).collect();
    let mut opts = options(10, 50);
    opts.verify = true;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (fake, ex) = executor(mk(), &opts);
    let report = ex.run(vec![job(7, batches.clone())], Some(tx)).await;
    assert_eq!(deployed(&report), 60);
    for o in report.outcomes.values() {
        assert!(
            matches!(
                o,
                Outcome::Deployed {
                    verification: Verification::Verified,
                    ..
                }
            ),
            "{o:?}"
        );
    }
    assert!(report.read_calls >= 20 && report.read_calls == fake.reads().len() as u64);
    // Reads start only after the change is applied can succeed; none is wasted before the
    // first write.
    let first_write = fake.calls()[0].at;
    assert!(fake.reads().iter().all(|r| *r > first_write));
    let mut seen_deployed = HashSet::new();
    let (mut n_dep, mut n_ver) = (0, 0);
    while let Ok(ev) = rx.try_recv() {
        match ev {
            Event::Deployed {
                domains,
                fingerprint,
                cert_name,
                ..
            } => {
                assert_eq!(fingerprint, Fingerprint([7; 32]));
                assert_eq!(cert_name, "cert-7");
                seen_deployed.insert(domains);
                n_dep += 1;
            }
            Event::Verified { domains, .. } => {
                assert!(seen_deployed.contains(&domains));
                n_ver += 1;
            }
            Event::Unverified { .. } => panic!("unverified"),
            Event::Prepared { .. } => panic!("nothing to prepare"),
        }
    }
    assert_eq!((n_dep, n_ver), (20, 20));

    // Same run without read-back: the writes start at exactly the same instants.
    opts.verify = false;
    let (plain, ex) = executor(mk(), &opts);
    ex.run(vec![job(7, batches)], None).await;
    let t = |f: &Fake| {
        let c = f.calls();
        let t0 = c[0].at;
        c.iter().map(|x| x.at - t0).collect::<Vec<_>>()
    };
    assert_eq!(t(&fake), t(&plain));
}

/// A CDN that never serves the new certificate: the batch is reported unverified after the
/// bound, and the run does not wait much longer than the bound.
#[tokio::test(start_paused = true)]
async fn read_back_never_verified_is_reported() {
    let fake = Fake {
        apply_after: None,
        ..Fake::default()
    };
    let mut opts = options(10, 50);
    opts.verify = true;
    opts.verify_timeout = Duration::from_secs(20);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let t0 = Instant::now();
    let (fake, ex) = executor(fake, &opts);
    let report = ex.run(vec![job(1, vec![domains("n", 5)])], Some(tx)).await;
    assert!(
        t0.elapsed() <= Duration::from_secs(20),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        fake.reads().len() >= 3,
        "polled {} times",
        fake.reads().len()
    );
    for o in report.outcomes.values() {
        assert!(
            matches!(
                o,
                Outcome::Deployed {
                    verification: Verification::Unverified { last_error: None },
                    ..
                }
            ),
            "{o:?}"
        );
    }
    assert!(matches!(rx.try_recv(), Ok(Event::Deployed { .. })));
    assert!(matches!(rx.try_recv(), Ok(Event::Unverified { .. })));
}

/// The server may spell the named domain in another case; it is still recognised, and the
/// domain is reported under the name the caller gave.
#[tokio::test(start_paused = true)]
async fn named_domain_matches_case_insensitively() {
    let batch = domains("k", 5);
    let class = FakeClass::Domain(Some(batch[4].to_uppercase()));
    let fake = Fake {
        script: Mutex::new(VecDeque::from([err(class.clone())])),
        ..Fake::default()
    };
    let (fake, report) = run(fake, options(10, 50), vec![job(1, vec![batch.clone()])]).await;
    assert_eq!(deployed(&report), 4);
    assert_eq!(failed_with(&report, &batch[4]), Some(class));
    assert_eq!(fake.calls().len(), 2);
    assert_eq!(fake.calls()[1].domains, batch[..4]);
}

/// Read errors: retryable ones are polled through, a refusal ends read-back at once with
/// that error reported.
#[tokio::test(start_paused = true)]
async fn read_back_errors() {
    let retry = err(FakeClass::Retry(Some(Duration::from_secs(2))));
    let fake = Fake {
        apply_after: Some(Duration::ZERO),
        read_script: Mutex::new(VecDeque::from([retry.clone(), retry])),
        ..Fake::default()
    };
    let mut opts = options(10, 50);
    opts.verify = true;
    let (fake, report) = run(fake, opts.clone(), vec![job(1, vec![domains("t", 2)])]).await;
    assert_eq!(fake.reads().len(), 3);
    let reads = fake.reads();
    assert!(
        reads[1] - reads[0] >= Duration::from_secs(2),
        "hint honoured"
    );
    for o in report.outcomes.values() {
        assert!(matches!(
            o,
            Outcome::Deployed {
                verification: Verification::Verified,
                ..
            }
        ));
    }

    let fake = Fake {
        apply_after: Some(Duration::ZERO),
        read_script: Mutex::new(VecDeque::from([err(FakeClass::Credentials)])),
        ..Fake::default()
    };
    let t0 = Instant::now();
    let (fake, report) = run(fake, opts, vec![job(1, vec![domains("u", 2)])]).await;
    assert_eq!(fake.reads().len(), 1);
    assert!(t0.elapsed() < Duration::from_secs(1));
    for o in report.outcomes.values() {
        match o {
            Outcome::Deployed {
                verification:
                    Verification::Unverified {
                        last_error: Some(e),
                    },
                ..
            } => {
                assert_eq!(e.class, FakeClass::Credentials);
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Events go nowhere when the caller dropped its receiver; the report is still complete.
#[tokio::test(start_paused = true)]
async fn dropped_event_receiver_does_not_matter() {
    let (tx, rx) = mpsc::unbounded_channel();
    drop(rx);
    let (_fake, ex) = executor(Fake::default(), &options(10, 50));
    let report = ex
        .run(
            vec![job(1, vec![domains("w", 3), domains("x", 3)])],
            Some(tx),
        )
        .await;
    assert_eq!(deployed(&report), 6);
    assert_eq!(report.write_calls, 2);
}

/// `halt` mid-run: the call in flight finishes and is reported deployed, no further call
/// starts (the limiter's waiters give up), the run returns at once, and the domains never
/// sent have no outcome.
#[tokio::test(start_paused = true)]
async fn halt_lets_the_call_in_flight_finish_and_starts_nothing_more() {
    let fake = Fake {
        latency: Duration::from_millis(300),
        ..Fake::default()
    };
    let (fake, ex) = executor(fake, &options(1, 1));
    let ex = Arc::new(ex);
    let batches = domains("h", 10).into_iter().map(|d| vec![d]).collect();
    let runner = ex.clone();
    let run = tokio::spawn(async move { runner.run(vec![job(1, batches)], None).await });
    // t = 1.1 s: the canary (t = 0) is done, the second call (t = 1 s) is in flight.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    ex.halt();
    let t0 = Instant::now();
    let report = run.await.expect("run task");
    assert!(
        t0.elapsed() <= Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(fake.calls().len(), 2);
    assert_eq!(report.write_calls, 2);
    assert_eq!(deployed(&report), 2);
    assert_eq!(report.outcomes.len(), 2);
}

/// Two targets in one run (say CDN and DCDN), each on its own write limiter: 20 one-domain
/// calls each at 5/s take as long as 20 calls at 5/s, not 40, and each target's starts
/// hold its own rate; events and outcomes name the target that deployed.
#[tokio::test(start_paused = true)]
async fn two_targets_run_in_one_pass_each_with_its_own_limiters() {
    let mk = |name| {
        Arc::new(Fake {
            name,
            latency: Duration::from_millis(50),
            limits: Some(limits(5, 1)),
            ..Fake::default()
        })
    };
    let (cdn, dcdn) = (mk("cdn-fake"), mk("dcdn-fake"));
    let ex = Executor::with_targets(
        vec![
            TargetSpec {
                target: cdn.clone(),
                fallback: None,
            },
            TargetSpec {
                target: dcdn.clone(),
                fallback: None,
            },
        ],
        base_options(),
    );
    let single = |prefix| domains(prefix, 20).into_iter().map(|d| vec![d]).collect();
    let mut second = job(2, single("b"));
    second.target = 1;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let t0 = Instant::now();
    let report = ex.run(vec![job(1, single("a")), second], Some(tx)).await;
    assert_eq!(deployed(&report), 40);
    assert_eq!((cdn.calls().len(), dcdn.calls().len()), (20, 20));
    assert!(cdn.calls().iter().all(|c| c.domains[0].starts_with('a')));
    assert!(dcdn.calls().iter().all(|c| c.domains[0].starts_with('b')));
    for fake in [&cdn, &dcdn] {
        let starts: Vec<Instant> = fake.calls().iter().map(|c| c.at).collect();
        assert_eq!(max_in_any_window(&starts, Duration::from_secs(1)), 5);
    }
    // 20 calls at 5/s on each target: 4 windows after the first, in parallel.
    assert!(
        t0.elapsed() < Duration::from_millis(4_200),
        "{:?}",
        t0.elapsed()
    );
    let names: Vec<&str> = report.targets.iter().map(|t| t.name).collect();
    assert_eq!(names, ["cdn-fake", "dcdn-fake"]);
    for (d, o) in &report.outcomes {
        let Outcome::Deployed { target, .. } = o else {
            panic!("{d}: {o:?}")
        };
        assert_eq!(*target, usize::from(d.starts_with('b')), "{d}");
    }
    while let Ok(ev) = rx.try_recv() {
        if let Event::Deployed {
            target, domains, ..
        } = ev
        {
            assert_eq!(target, usize::from(domains[0].starts_with('b')));
        }
    }
}

/// A batch target that answers "gone" (the call does not exist any more): the run switches
/// to its fallback (a per-domain target) after one refused call, every domain deploys
/// there, and the next run goes straight to the fallback.
#[tokio::test(start_paused = true)]
async fn a_gone_target_hands_its_work_to_its_fallback() {
    let batch = Arc::new(Fake {
        always: Some(err(FakeClass::Gone)),
        limits: Some(limits(10, 10)),
        ..Fake::default()
    });
    let per_domain = Arc::new(Fake {
        limits: Some(limits(30, 1)),
        ..Fake::default()
    });
    let ex = Executor::with_targets(
        vec![
            TargetSpec {
                target: batch.clone(),
                fallback: Some(1),
            },
            TargetSpec {
                target: per_domain.clone(),
                fallback: None,
            },
        ],
        base_options(),
    );
    let report = ex
        .run(vec![job(1, vec![domains("g", 10), domains("h", 10)])], None)
        .await;
    assert_eq!(deployed(&report), 20);
    assert_eq!(
        batch.calls().len(),
        1,
        "only the canary tried the gone call"
    );
    assert_eq!(per_domain.calls().len(), 20);
    assert!(per_domain.calls().iter().all(|c| c.domains.len() == 1));
    assert!(report.targets[0].gone && !report.targets[1].gone);
    let report = ex.run(vec![job(2, vec![domains("k", 3)])], None).await;
    assert_eq!(deployed(&report), 3);
    assert_eq!(batch.calls().len(), 1);
    assert_eq!(per_domain.calls().len(), 23);
}

/// Without a fallback, "gone" fails the call's domains only (like any other refusal).
#[tokio::test(start_paused = true)]
async fn a_gone_target_without_fallback_fails_the_call() {
    let fake = Fake {
        script: Mutex::new(VecDeque::from([err(FakeClass::Gone)])),
        ..Fake::default()
    };
    let (fake, report) = run(
        fake,
        options(10, 50),
        vec![job(1, vec![domains("x", 4)]), job(2, vec![domains("y", 4)])],
    )
    .await;
    assert_eq!(fake.calls().len(), 2);
    assert_eq!(deployed(&report), 4);
    let first = &fake.calls()[0].domains;
    assert!(
        first
            .iter()
            .all(|d| failed_with(&report, d) == Some(FakeClass::Gone))
    );
}

/// A target with a prepare step (upload once, bind by reference): one prepare per
/// certificate, emitted before any call that uses it, and every call carries the
/// reference; a retryable prepare error is retried.
#[tokio::test(start_paused = true)]
async fn a_prepare_step_runs_once_per_certificate_before_its_calls() {
    let fake = Fake {
        prepares: true,
        latency: Duration::from_millis(20),
        prepare_script: Mutex::new(VecDeque::from([err(FakeClass::Retry(None))])),
        ..Fake::default()
    };
    let (fake, ex) = executor(fake, &options(10, 2));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let jobs = vec![
        job(
            1,
            domains("p", 6).chunks(2).map(<[String]>::to_vec).collect(),
        ),
        job(2, vec![domains("q", 2)]),
    ];
    let report = ex.run(jobs, Some(tx)).await;
    assert_eq!(deployed(&report), 8);
    assert_eq!(report.prepare_calls, 3, "two certificates, one retry");
    let prepared = fake.prepared.lock().expect("not poisoned").clone();
    assert_eq!(prepared, [Fingerprint([1; 32]), Fingerprint([2; 32])]);
    for c in fake.calls() {
        let want = if c.domains[0].starts_with('p') {
            "ref-1"
        } else {
            "ref-2"
        };
        assert_eq!(c.prepared.as_deref(), Some(want), "{c:?}");
    }
    let mut seen = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        match ev {
            Event::Prepared {
                fingerprint,
                reference,
                ..
            } => {
                seen.push(fingerprint);
                assert_eq!(reference, format!("ref-{}", fingerprint.0[0]));
            }
            Event::Deployed { fingerprint, .. } => assert!(seen.contains(&fingerprint)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen.len(), 2);
}

/// A prepare step refused for good fails that certificate's domains only.
#[tokio::test(start_paused = true)]
async fn a_refused_prepare_fails_its_certificate_only() {
    let fake = Fake {
        prepares: true,
        prepare_script: Mutex::new(VecDeque::from([err(FakeClass::Certificate(None))])),
        ..Fake::default()
    };
    let jobs = vec![job(1, vec![domains("r", 3)]), job(2, vec![domains("s", 3)])];
    let (fake, report) = run(fake, options(10, 50), jobs).await;
    assert_eq!(deployed(&report), 3);
    for d in domains("r", 3) {
        assert_eq!(failed_with(&report, &d), Some(FakeClass::Certificate(None)));
    }
    assert_eq!(fake.calls().len(), 1);
}
