//! One run of the executor: a loop that hands out work and carries out what the pure
//! [`policy`](super::policy) decided about each refusal.
//!
//! Owns: the work queue (one entry per call still to make: a target, a certificate, its
//! domains), the canary (until the first call has its final answer — retries included — it
//! is the only call in flight, so its lesson, e.g. a lower batch size or a stop, applies to
//! every call after it), the prepare step of each (target, certificate), the tasks that
//! make calls (at most [`MAX_CALLS_IN_FLIGHT`] at once; each task: wait for the target's
//! write limiter, call, back off and call again while the policy says retry), the
//! read-back tasks, the per-domain outcome table and the events. Only the loop changes the run's state; tasks report back to it.
//!
//! Every domain handed in is given exactly one outcome (unless the executor is halted:
//! then the domains never sent have none).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::policy::{self, Next, Refusal};
use super::{
    Deploy, Event, Executor, Failure, Handling, Job, Lane, Options, Outcome, RateLimiter, Report,
    Target, TargetIndex, TargetReport, Upload, Verification,
};

/// The most calls (writes and prepare steps) in flight at once. Each waits for its
/// target's write limiter, so more in flight add no speed, only memory: a first pass of
/// thousands of calls would otherwise hold a task for each of them until its turn. 64 is
/// ample: at 100 calls/s it keeps up with answers that take up to 0.64 s.
pub(super) const MAX_CALLS_IN_FLIGHT: usize = 64;

/// One call still to make.
struct Work {
    lane: TargetIndex,
    /// Index into the run's certificates.
    cert: usize,
    domains: Vec<String>,
}

/// Where a (target, certificate)'s prepare step stands.
enum Prepared<E> {
    /// Started; these calls wait for it.
    Waiting(Vec<Work>),
    Ready(Option<Arc<str>>),
    Failed(Arc<E>),
}

/// How one call's attempts ended.
enum CallEnd<E> {
    Ok(String),
    /// A final refusal, and what the policy says to do about it (its effect on the whole
    /// run — a stop, a lower batch size — already applied by the task).
    Refused(Arc<E>, Next),
    /// The run stopped or halted before (or while) the call waited to start.
    Stopped,
    /// The target's batch size was lowered, or the target found gone, while the call
    /// waited: queue it again (cut again, or sent on to the fallback).
    Requeue,
}

/// What a task reports back to the loop.
enum Done<E> {
    Call {
        work: Work,
        attempts: u64,
        end: CallEnd<E>,
    },
    Prepare {
        lane: TargetIndex,
        cert: usize,
        attempts: u64,
        result: Result<Option<String>, Option<E>>,
    },
    /// `verdict` is `None` when the executor was halted before one was reached.
    ReadBack {
        lane: TargetIndex,
        cert: usize,
        domains: Vec<String>,
        reads: u64,
        verdict: Option<(bool, Option<Arc<E>>)>,
    },
}

/// What a call task needs besides its work (cheap clones).
struct CallCtx<T: Target> {
    target: Arc<T>,
    writes: Arc<RateLimiter>,
    batch_size: Arc<std::sync::atomic::AtomicUsize>,
    gone: Arc<std::sync::atomic::AtomicBool>,
    has_fallback: bool,
    options: Options,
    signals: Signals<T::Error>,
}

/// The run's stop (a credentials error, the cause) and the executor's halt, as tasks see
/// them. A task that meets a credentials error stops the run itself, at once, so no other
/// task starts a call after it, whenever the loop gets to its answer.
struct Signals<E> {
    stop: Arc<watch::Sender<Option<Arc<E>>>>,
    halt: watch::Receiver<bool>,
}

impl<E> Clone for Signals<E> {
    fn clone(&self) -> Self {
        Signals {
            stop: self.stop.clone(),
            halt: self.halt.clone(),
        }
    }
}

impl<E> Signals<E> {
    fn any(&self) -> bool {
        self.stop.borrow().is_some() || *self.halt.borrow()
    }

    /// Stops the run with `cause` (the first cause wins).
    fn stop_run(&self, cause: &Arc<E>) {
        self.stop.send_if_modified(|c| {
            let first = c.is_none();
            if first {
                *c = Some(cause.clone());
            }
            first
        });
    }

    /// Resolves once the run stops or the executor halts.
    async fn wait(&self) {
        let (mut stop, mut halt) = (self.stop.subscribe(), self.halt.clone());
        // An `Err` means the sender is gone: that signal never comes.
        let closed = tokio::select! {
            r = stop.wait_for(Option::is_some) => r.is_err(),
            r = halt.wait_for(|h| *h) => r.is_err(),
        };
        if closed {
            std::future::pending::<()>().await;
        }
    }

    /// Sleeps `d`; `false` when the run stopped or halted meanwhile.
    async fn sleep(&self, d: std::time::Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => !self.any(),
            () = self.wait() => false,
        }
    }
}

pub(super) struct Run<'x, T: Target> {
    ex: &'x Executor<T>,
    certs: Vec<Arc<Upload>>,
    queue: VecDeque<Work>,
    prepared: HashMap<(TargetIndex, usize), Prepared<T::Error>>,
    tasks: JoinSet<Done<T::Error>>,
    /// Calls (write or prepare) in flight; the canary is open once one had its answer.
    calls_in_flight: usize,
    canary_open: bool,
    signals: Signals<T::Error>,
    outcomes: BTreeMap<String, Outcome<T::Error>>,
    write_calls: u64,
    read_calls: u64,
    prepare_calls: u64,
    events: Option<UnboundedSender<Event<T::Error>>>,
}

impl<'x, T: Target> Run<'x, T> {
    pub(super) fn new(
        ex: &'x Executor<T>,
        events: Option<UnboundedSender<Event<T::Error>>>,
    ) -> Run<'x, T> {
        Run {
            ex,
            certs: Vec::new(),
            queue: VecDeque::new(),
            prepared: HashMap::new(),
            tasks: JoinSet::new(),
            calls_in_flight: 0,
            canary_open: false,
            signals: Signals {
                stop: Arc::new(watch::Sender::new(None)),
                halt: ex.halt.subscribe(),
            },
            outcomes: BTreeMap::new(),
            write_calls: 0,
            read_calls: 0,
            prepare_calls: 0,
            events,
        }
    }

    /// Queues every batch, then hands out work and carries out the answers until nothing
    /// is queued or running.
    pub(super) async fn execute(mut self, jobs: Vec<Job>) -> Report<T::Error> {
        for job in jobs {
            if job.target >= self.ex.lanes.len() {
                continue;
            }
            let cert = self.certs.len();
            self.certs.push(job.upload);
            for domains in job.batches {
                self.queue.push_back(Work {
                    lane: job.target,
                    cert,
                    domains,
                });
            }
        }
        self.pump();
        while let Some(done) = self.tasks.join_next().await {
            match done {
                Ok(done) => self.on_done(done),
                Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                Err(_cancelled) => {}
            }
            self.pump();
        }
        self.report()
    }

    fn signals(&self) -> Signals<T::Error> {
        self.signals.clone()
    }

    /// The credentials error that stopped the run, if one did.
    fn stop_cause(&self) -> Option<Arc<T::Error>> {
        self.signals.stop.borrow().clone()
    }

    fn lane(&self, i: TargetIndex) -> &'x Lane<T> {
        // Invariant: every queued work names a lane (checked in `execute`; a fallback is
        // only ever an existing lane, see `Executor::with_targets`).
        &self.ex.lanes[i]
    }

    /// Lane `i`'s fallback, unless that one is gone too.
    fn live_fallback(&self, i: TargetIndex) -> Option<TargetIndex> {
        let fallback = self.lane(i).fallback?;
        (!self.lane(fallback).gone.load(Ordering::SeqCst)).then_some(fallback)
    }

    /// Starts queued work: one call at most until the canary is open, then up to
    /// [`MAX_CALLS_IN_FLIGHT`].
    fn pump(&mut self) {
        while self.calls_in_flight == 0
            || (self.canary_open && self.calls_in_flight < MAX_CALLS_IN_FLIGHT)
        {
            let Some(work) = self.queue.pop_front() else {
                return;
            };
            self.start(work);
        }
    }

    /// Starts one queued call (or its certificate's prepare step), or settles it at once.
    fn start(&mut self, work: Work) {
        if work.domains.is_empty() {
            return;
        }
        if self.signals.any() {
            return self.not_attempted(&work.domains);
        }
        let lane = self.lane(work.lane);
        if lane.gone.load(Ordering::SeqCst)
            && let Some(fallback) = self.live_fallback(work.lane)
        {
            return self.requeue(Work {
                lane: fallback,
                ..work
            });
        }
        if work.domains.len() > lane.batch_size.load(Ordering::SeqCst).max(1) {
            return self.requeue(work);
        }
        let key = (work.lane, work.cert);
        if !lane.target.prepares() {
            return self.spawn_call(work, None);
        }
        match self.prepared.get_mut(&key) {
            None => {
                self.prepared.insert(key, Prepared::Waiting(vec![work]));
                self.spawn_prepare(key.0, key.1);
            }
            Some(Prepared::Waiting(waiting)) => waiting.push(work),
            Some(Prepared::Ready(reference)) => {
                let reference = reference.clone();
                self.spawn_call(work, reference);
            }
            Some(Prepared::Failed(e)) => {
                let e = e.clone();
                self.failed(&work.domains, e);
            }
        }
    }

    /// Queues `work` again at the front, cut to its target's current batch size.
    fn requeue(&mut self, work: Work) {
        let size = self
            .lane(work.lane)
            .batch_size
            .load(Ordering::SeqCst)
            .max(1);
        for part in work.domains.chunks(size).rev() {
            self.queue.push_front(Work {
                lane: work.lane,
                cert: work.cert,
                domains: part.to_vec(),
            });
        }
    }

    fn spawn_prepare(&mut self, lane_i: TargetIndex, cert: usize) {
        let lane = self.lane(lane_i);
        let (target, limiter) = (lane.target.clone(), lane.prepares.clone());
        let upload = self.certs[cert].clone();
        let (options, signals) = (self.ex.options.clone(), self.signals());
        self.calls_in_flight += 1;
        self.tasks.spawn(async move {
            let (attempts, result) =
                prepare(&*target, limiter.as_deref(), &upload, &options, &signals).await;
            Done::Prepare {
                lane: lane_i,
                cert,
                attempts,
                result,
            }
        });
    }

    fn spawn_call(&mut self, work: Work, reference: Option<Arc<str>>) {
        let lane = self.lane(work.lane);
        let ctx = CallCtx {
            target: lane.target.clone(),
            writes: lane.writes.clone(),
            batch_size: lane.batch_size.clone(),
            gone: lane.gone.clone(),
            has_fallback: self.live_fallback(work.lane).is_some(),
            options: self.ex.options.clone(),
            signals: self.signals(),
        };
        let upload = self.certs[work.cert].clone();
        self.calls_in_flight += 1;
        self.tasks.spawn(async move {
            let (attempts, end) = call(&ctx, &upload, &work.domains, reference.as_deref()).await;
            Done::Call {
                work,
                attempts,
                end,
            }
        });
    }

    fn on_done(&mut self, done: Done<T::Error>) {
        match done {
            Done::Call {
                work,
                attempts,
                end,
            } => {
                self.write_calls += attempts;
                self.call_answered();
                self.on_call(work, end);
            }
            Done::Prepare {
                lane,
                cert,
                attempts,
                result,
            } => {
                self.prepare_calls += attempts;
                self.call_answered();
                self.on_prepared(lane, cert, result);
            }
            Done::ReadBack {
                lane,
                cert,
                domains,
                reads,
                verdict,
            } => {
                self.read_calls += reads;
                if let Some((verified, last_error)) = verdict {
                    self.verdict(lane, cert, domains, verified, last_error);
                }
            }
        }
    }

    /// A call or prepare step had its final answer: the canary is open from now on.
    fn call_answered(&mut self) {
        self.calls_in_flight = self.calls_in_flight.saturating_sub(1);
        self.canary_open = true;
    }

    fn on_prepared(
        &mut self,
        lane: TargetIndex,
        cert: usize,
        result: Result<Option<String>, Option<T::Error>>,
    ) {
        let state = match result {
            Ok(reference) => {
                if let Some(reference) = &reference {
                    self.emit(Event::Prepared {
                        target: lane,
                        fingerprint: self.certs[cert].fingerprint,
                        reference: reference.clone(),
                    });
                }
                Prepared::Ready(reference.map(Arc::from))
            }
            Err(Some(e)) => {
                let e = Arc::new(e);
                if e.handling() == Handling::Credentials {
                    let error = crate::untrusted::one_line(&e.to_string());
                    tracing::error!(kind = e.kind(), %error, "credentials refused; stopping the run");
                    self.stop_run(&e);
                } else {
                    tracing::warn!(kind = e.kind(), error = %e, "could not prepare the certificate");
                }
                Prepared::Failed(e)
            }
            // Stopped or halted while preparing: forget it, the waiting calls settle below.
            Err(None) => {
                if let Some(Prepared::Waiting(waiting)) = self.prepared.remove(&(lane, cert)) {
                    for work in waiting {
                        self.not_attempted(&work.domains);
                    }
                }
                return;
            }
        };
        if let Some(Prepared::Waiting(waiting)) = self.prepared.insert((lane, cert), state) {
            for work in waiting.into_iter().rev() {
                self.queue.push_front(work);
            }
        }
    }

    /// Carries out a call's end.
    fn on_call(&mut self, work: Work, end: CallEnd<T::Error>) {
        match end {
            CallEnd::Ok(request_id) => self.deployed(work, request_id),
            CallEnd::Stopped => self.not_attempted(&work.domains),
            CallEnd::Requeue => self.requeue(work),
            CallEnd::Refused(e, next) => self.refused(work, e, next),
        }
    }

    /// Carries out the policy's answer to a final refusal. Its effect on the whole run
    /// (stop, lower size, target gone) was applied by the task as the answer came, so it
    /// held before any other call could start.
    fn refused(&mut self, work: Work, e: Arc<T::Error>, next: Next) {
        let n = work.domains.len();
        match next {
            // The call task retries by itself; it only reports final answers.
            Next::RetryAfter(_) | Next::GiveUp => {
                let list = work.domains.join(",");
                tracing::warn!(domains = %list, count = n, kind = e.kind(), error = %e, "batch refused");
                self.failed(&work.domains, e);
            }
            Next::StopRun => {
                let error = crate::untrusted::one_line(&e.to_string());
                tracing::error!(kind = e.kind(), domains = %work.domains.join(","), %error, "credentials refused; stopping the run");
                self.failed(&work.domains, e);
            }
            // Cut again at the lowered size.
            Next::Resize(_) => self.requeue(work),
            Next::CutOut(at) => {
                let mut rest = work.domains;
                let bad = rest.remove(at.min(n.saturating_sub(1)));
                tracing::warn!(domain = %bad, kind = e.kind(), "domain refused; deploying the rest without it");
                self.failed(std::slice::from_ref(&bad), e);
                self.queue.push_front(Work {
                    domains: rest,
                    ..work
                });
            }
            Next::Split => {
                tracing::warn!(
                    domains = %work.domains.join(","),
                    count = n,
                    kind = e.kind(),
                    "batch refused for one domain; splitting it"
                );
                let mut first = work.domains;
                let second = first.split_off(first.len() / 2);
                for domains in [second, first] {
                    self.queue.push_front(Work {
                        lane: work.lane,
                        cert: work.cert,
                        domains,
                    });
                }
            }
            // `start` sends it on to the fallback.
            Next::SwitchTarget => self.queue.push_front(work),
        }
    }

    fn stop_run(&mut self, cause: &Arc<T::Error>) {
        self.signals.stop_run(cause);
    }

    fn deployed(&mut self, work: Work, request_id: String) {
        let upload = self.certs[work.cert].clone();
        let verify = self.ex.options.verify;
        let verification = if verify {
            Verification::Unverified { last_error: None }
        } else {
            Verification::NotChecked
        };
        let shared: Arc<str> = request_id.as_str().into();
        for d in &work.domains {
            self.outcomes.insert(
                d.clone(),
                Outcome::Deployed {
                    target: work.lane,
                    request_id: Arc::clone(&shared),
                    fingerprint: upload.fingerprint,
                    verification: verification.clone(),
                },
            );
        }
        // One line per domain, so `grep 'domain=…'` follows a domain through a batch.
        for domain in &work.domains {
            tracing::info!(%domain, cert = %upload.cert_name, %request_id, "deployed");
        }
        if verify {
            self.spawn_read_back(work.lane, work.cert, work.domains.clone());
        }
        self.emit(Event::Deployed {
            target: work.lane,
            domains: work.domains,
            cert_name: upload.cert_name.clone(),
            fingerprint: upload.fingerprint,
            not_after: upload.not_after,
            request_id,
        });
    }

    fn spawn_read_back(&mut self, lane_i: TargetIndex, cert: usize, domains: Vec<String>) {
        let lane = self.lane(lane_i);
        let (target, reads) = (lane.target.clone(), lane.reads.clone());
        let want = self.certs[cert].fingerprint;
        let options = self.ex.options.clone();
        let halt = self.ex.halt.subscribe();
        self.tasks.spawn(async move {
            let (n, verdict) = read_back(&*target, &reads, &domains, want, &options, halt).await;
            Done::ReadBack {
                lane: lane_i,
                cert,
                domains,
                reads: n,
                verdict,
            }
        });
    }

    fn verdict(
        &mut self,
        lane: TargetIndex,
        cert: usize,
        domains: Vec<String>,
        verified: bool,
        last_error: Option<Arc<T::Error>>,
    ) {
        for d in &domains {
            if let Some(Outcome::Deployed { verification, .. }) = self.outcomes.get_mut(d) {
                *verification = if verified {
                    Verification::Verified
                } else {
                    Verification::Unverified {
                        last_error: last_error.clone(),
                    }
                };
            }
        }
        let fingerprint = self.certs[cert].fingerprint;
        if verified {
            for domain in &domains {
                tracing::info!(%domain, "read-back verified");
            }
            self.emit(Event::Verified {
                target: lane,
                domains,
                fingerprint,
            });
        } else {
            for domain in &domains {
                tracing::warn!(%domain, "read-back never saw the new certificate");
            }
            self.emit(Event::Unverified {
                target: lane,
                domains,
                fingerprint,
                last_error,
            });
        }
    }

    fn failed(&mut self, domains: &[String], error: Arc<T::Error>) {
        for d in domains {
            self.outcomes.insert(
                d.clone(),
                Outcome::Failed {
                    error: error.clone(),
                },
            );
        }
    }

    /// Records `domains` as never sent because the run stopped; a halt without a stop
    /// records nothing (see [`Executor::halt`]).
    fn not_attempted(&mut self, domains: &[String]) {
        let Some(cause) = self.stop_cause() else {
            return;
        };
        for d in domains {
            self.outcomes.insert(
                d.clone(),
                Outcome::NotAttempted {
                    cause: cause.clone(),
                },
            );
        }
    }

    fn emit(&self, event: Event<T::Error>) {
        if let Some(tx) = &self.events {
            // A caller that dropped its receiver no longer wants events; the report
            // still carries every outcome.
            let _ignored = tx.send(event);
        }
    }

    fn report(self) -> Report<T::Error> {
        let targets = self
            .ex
            .lanes
            .iter()
            .map(|l| TargetReport {
                name: l.target.name(),
                product: l.target.product(),
                configured: l.limits.domains_per_call.max(1),
                batch_size: l.batch_size.load(Ordering::SeqCst),
                gone: l.gone.load(Ordering::SeqCst),
            })
            .collect();
        let stopped = self.stop_cause();
        Report {
            outcomes: self.outcomes,
            write_calls: self.write_calls,
            read_calls: self.read_calls,
            prepare_calls: self.prepare_calls,
            targets,
            stopped,
        }
    }
}

/// The attempt loop of one write call: limiter, call, and — while the policy says retry —
/// backoff and call again (each attempt a fresh call). Returns the attempts made.
async fn call<T: Target>(
    ctx: &CallCtx<T>,
    upload: &Upload,
    domains: &[String],
    prepared: Option<&str>,
) -> (u64, CallEnd<T::Error>) {
    // Checked again after the permit: a permit given up here only makes the rate stricter.
    let requeue = || {
        domains.len() > ctx.batch_size.load(Ordering::SeqCst).max(1)
            || (ctx.has_fallback && ctx.gone.load(Ordering::SeqCst))
    };
    let mut attempts = 0;
    for attempt in 0u32.. {
        if ctx.signals.any() {
            return (attempts, CallEnd::Stopped);
        }
        if requeue() {
            return (attempts, CallEnd::Requeue);
        }
        let permitted = tokio::select! {
            _ = ctx.writes.acquire() => !ctx.signals.any(),
            () = ctx.signals.wait() => false,
        };
        if !permitted {
            return (attempts, CallEnd::Stopped);
        }
        if requeue() {
            return (attempts, CallEnd::Requeue);
        }
        attempts += 1;
        let call = Deploy {
            upload,
            domains,
            prepared,
        };
        let e = match ctx.target.deploy(&call).await {
            Ok(request_id) => return (attempts, CallEnd::Ok(request_id)),
            Err(e) => e,
        };
        let next = policy::decide(&Refusal {
            handling: e.handling(),
            domains,
            attempt,
            max_attempts: ctx.options.max_attempts,
            has_fallback: ctx.has_fallback,
        });
        let Next::RetryAfter(hint) = next else {
            let e = Arc::new(e);
            apply_to_run(ctx, &e, next, domains.len());
            return (attempts, CallEnd::Refused(e, next));
        };
        let list = domains.join(",");
        tracing::warn!(domains = %list, kind = e.kind(), attempt, error = %e, "retryable error; retrying after a backoff");
        crate::metrics::global().retry(ctx.target.name());
        let delay = ctx.options.retry_backoff.delay(attempt, hint);
        if !ctx.signals.sleep(delay).await {
            return (attempts, CallEnd::Stopped);
        }
    }
    // `0u32..` ends only after u32::MAX attempts, which the policy never allows.
    (attempts, CallEnd::Stopped)
}

/// The part of a decision that concerns the whole run, applied by the task the moment the
/// answer arrives: a stop, a lower batch size, a target gone.
fn apply_to_run<T: Target>(ctx: &CallCtx<T>, e: &Arc<T::Error>, next: Next, refused: usize) {
    match next {
        Next::StopRun => ctx.signals.stop_run(e),
        Next::Resize(lower) => {
            let before = ctx.batch_size.fetch_min(lower, Ordering::SeqCst);
            tracing::warn!(
                refused,
                from = before,
                to = before.min(lower),
                "batch size refused; lowering it for the rest of the run"
            );
        }
        Next::SwitchTarget if !ctx.gone.swap(true, Ordering::SeqCst) => {
            // The caller, who knows the configuration, gives the one warning a switch
            // deserves (what to change to make it permanent).
            tracing::info!(target = ctx.target.name(), kind = e.kind(), error = %e, "the target's call does not exist; switching to its fallback for the rest of the run");
        }
        _ => {}
    }
}

/// The attempt loop of one prepare step: retried like a write call. `Err(None)` when the
/// run stopped or halted first.
async fn prepare<T: Target>(
    target: &T,
    limiter: Option<&RateLimiter>,
    upload: &Upload,
    options: &Options,
    signals: &Signals<T::Error>,
) -> (u64, Result<Option<String>, Option<T::Error>>) {
    let mut attempts = 0;
    for attempt in 0u32.. {
        if signals.any() {
            return (attempts, Err(None));
        }
        if let Some(limiter) = limiter {
            tokio::select! {
                _ = limiter.acquire() => {}
                () = signals.wait() => return (attempts, Err(None)),
            }
        }
        attempts += 1;
        let e = match target.prepare(upload).await {
            Ok(reference) => return (attempts, Ok(reference)),
            Err(e) => e,
        };
        let next = policy::decide(&Refusal {
            handling: e.handling(),
            domains: &[],
            attempt,
            max_attempts: options.max_attempts,
            has_fallback: false,
        });
        let Next::RetryAfter(hint) = next else {
            return (attempts, Err(Some(e)));
        };
        if !signals
            .sleep(options.retry_backoff.delay(attempt, hint))
            .await
        {
            return (attempts, Err(None));
        }
    }
    (attempts, Err(None))
}

/// Polls one domain of a deployed batch until it serves `want`, or the bound runs out.
/// Returns the reads made and the verdict (`None` when halted first: the deployment stays
/// pending, confirmed at the next start).
async fn read_back<T: Target>(
    target: &T,
    reads: &RateLimiter,
    domains: &[String],
    want: crate::cert::Fingerprint,
    options: &Options,
    halt: watch::Receiver<bool>,
) -> (u64, Option<(bool, Option<Arc<T::Error>>)>) {
    let Some(probe) = domains.first() else {
        return (0, None);
    };
    let halted = || *halt.borrow();
    let deadline = Instant::now() + options.verify_timeout;
    let mut last_error = None;
    let mut n = 0;
    for attempt in 0u32.. {
        if halted() {
            return (n, None);
        }
        reads.acquire().await;
        n += 1;
        let hint = match target.served(probe).await {
            Ok(Some(fp)) if fp == want => return (n, Some((true, None))),
            Ok(_) => {
                last_error = None;
                None
            }
            Err(e) => {
                let retry = match e.handling() {
                    Handling::Retry { after } => Some(after),
                    _ => None,
                };
                last_error = Some(Arc::new(e));
                match retry {
                    Some(after) => after,
                    None => return (n, Some((false, last_error))),
                }
            }
        };
        let delay = options.poll_backoff.delay(attempt, hint);
        if Instant::now() + delay > deadline {
            break;
        }
        let mut halt = halt.clone();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            halted = halt.wait_for(|h| *h) => if halted.is_ok() { return (n, None) },
        }
    }
    (n, Some((false, last_error)))
}
