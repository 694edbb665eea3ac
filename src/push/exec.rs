//! One run of the executor: the shared state of a run and the per-batch logic.
//!
//! Owns: the canary gate (the first call goes alone; its answer opens the gate or stops the
//! run), the stop signal, the attempt loop, the reaction to each refusal, read-back tasks and
//! the per-domain outcome table. Every domain handed in is given exactly one outcome.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{
    BatchSet, CdnApi, DOCUMENTED_BATCH_LIMIT, Event, Executor, Failure, Handling, Job, Outcome,
    RateLimiter, Report, Upload, Verification,
};
use crate::push::Options;

/// Whether calls may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Only the canary may call.
    Closed,
    Open,
    /// A credentials error was seen: nothing more starts.
    Stopped,
}

/// How one batch's attempts ended.
enum CallEnd<E> {
    Ok(String),
    Err(E),
    /// The run stopped before (or while) this batch waited to start.
    Stopped,
    /// The batch size was lowered while this batch waited: cut it again.
    TooLarge,
}

type Boxed = Pin<Box<dyn Future<Output = ()> + Send>>;

pub(super) struct Run<A: CdnApi> {
    api: Arc<A>,
    writes: Arc<RateLimiter>,
    reads: Arc<RateLimiter>,
    batch_size: Arc<AtomicUsize>,
    options: Options,
    gate: watch::Sender<Gate>,
    canary_taken: AtomicBool,
    stop_cause: OnceLock<Arc<A::Error>>,
    write_calls: AtomicU64,
    read_calls: AtomicU64,
    outcomes: Mutex<BTreeMap<String, Outcome<A::Error>>>,
    verifications: Mutex<JoinSet<()>>,
    events: Option<UnboundedSender<Event<A::Error>>>,
    /// [`Executor::halt`]: behaves like a stop, but leaves the domains not sent without an
    /// outcome and read-backs without a verdict.
    halt: watch::Receiver<bool>,
}

impl<A: CdnApi> Run<A> {
    pub(super) fn start(
        ex: &Executor<A>,
        events: Option<UnboundedSender<Event<A::Error>>>,
    ) -> Arc<Run<A>> {
        Arc::new(Run {
            api: ex.api.clone(),
            writes: ex.writes.clone(),
            reads: ex.reads.clone(),
            batch_size: ex.batch_size.clone(),
            options: ex.options.clone(),
            gate: watch::Sender::new(Gate::Closed),
            canary_taken: AtomicBool::new(false),
            stop_cause: OnceLock::new(),
            write_calls: AtomicU64::new(0),
            read_calls: AtomicU64::new(0),
            outcomes: Mutex::new(BTreeMap::new()),
            verifications: Mutex::new(JoinSet::new()),
            events,
            halt: ex.halt.subscribe(),
        })
    }

    /// Spawns every batch, waits for all writes, then for all read-backs.
    pub(super) async fn execute(self: Arc<Self>, jobs: Vec<Job>) -> Report<A::Error> {
        let mut tasks = JoinSet::new();
        for job in jobs {
            for batch in job.batches {
                tasks.spawn(self.clone().deploy(job.upload.clone(), batch));
            }
        }
        tasks.join_all().await;
        // Writes are done, so no read-back is added from here on.
        let verifications = std::mem::take(&mut *lock(&self.verifications));
        verifications.join_all().await;
        self.report()
    }

    fn report(&self) -> Report<A::Error> {
        Report {
            outcomes: std::mem::take(&mut *lock(&self.outcomes)),
            write_calls: self.write_calls.load(Ordering::SeqCst),
            read_calls: self.read_calls.load(Ordering::SeqCst),
            batch_size: self.batch_size.load(Ordering::SeqCst),
            stopped: self.stop_cause.get().cloned(),
        }
    }

    /// Deploys one batch, cutting, splitting or retrying as its refusals demand.
    fn deploy(self: Arc<Self>, upload: Arc<Upload>, domains: Vec<String>) -> Boxed {
        Box::pin(async move {
            if domains.is_empty() {
                return;
            }
            if self.too_large(&domains) {
                return self.cut(upload, domains).await;
            }
            match self.call(&upload, &domains).await {
                CallEnd::Ok(request_id) => self.deployed(&upload, domains, request_id),
                CallEnd::Stopped => self.not_attempted(&domains),
                CallEnd::TooLarge => self.cut(upload, domains).await,
                CallEnd::Err(e) => self.refused(upload, domains, e).await,
            }
        })
    }

    fn too_large(&self, domains: &[String]) -> bool {
        domains.len() > self.batch_size.load(Ordering::SeqCst).max(1)
    }

    /// Deploys `domains` in parts of the current batch size.
    async fn cut(self: Arc<Self>, upload: Arc<Upload>, domains: Vec<String>) {
        let size = self.batch_size.load(Ordering::SeqCst).max(1);
        let parts = domains.chunks(size).map(<[String]>::to_vec).collect();
        self.deploy_parts(upload, parts).await;
    }

    /// Deploys several parts concurrently and waits for them all.
    async fn deploy_parts(self: Arc<Self>, upload: Arc<Upload>, parts: Vec<Vec<String>>) {
        let mut tasks = JoinSet::new();
        for part in parts {
            tasks.spawn(self.clone().deploy(upload.clone(), part));
        }
        tasks.join_all().await;
    }

    /// Reacts to a refusal that retries did not (or may not) cure. Its effect on the whole
    /// run (stop, lower size) takes hold before the gate opens, so a refused canary's
    /// lesson applies to every call after it.
    async fn refused(self: Arc<Self>, upload: Arc<Upload>, domains: Vec<String>, e: A::Error) {
        let many = domains.len() > 1;
        let handling = e.handling();
        if handling == Handling::Credentials {
            tracing::error!(kind = e.kind(), error = %e, "credentials refused; stopping the run");
            let e = Arc::new(e);
            self.stop(e.clone());
            return self.failed(&domains, e);
        }
        if handling == Handling::BatchSize && many {
            let lower = lower_batch_size(domains.len());
            let before = self.batch_size.fetch_min(lower, Ordering::SeqCst);
            tracing::warn!(
                refused = domains.len(),
                from = before,
                to = before.min(lower),
                "batch size refused; lowering it for the rest of the run"
            );
        }
        self.open_gate();
        match handling {
            Handling::BatchSize if many => self.deploy(upload, domains).await,
            Handling::Domain(Some(named)) | Handling::Certificate(Some(named))
                if many && position(&domains, named).is_some() =>
            {
                let at = position(&domains, named).unwrap_or_default();
                self.cut_out(upload, domains, at, e).await;
            }
            Handling::Domain(_) if many => {
                tracing::warn!(
                    domains = domains.len(),
                    kind = e.kind(),
                    "batch refused for one domain; splitting it"
                );
                let mut first = domains;
                let second = first.split_off(first.len() / 2);
                self.deploy_parts(upload, vec![first, second]).await;
            }
            _ => {
                tracing::warn!(domains = domains.len(), kind = e.kind(), error = %e, "batch refused");
                self.failed(&domains, Arc::new(e));
            }
        }
    }

    /// Reports `domains[at]` alone with `e` and deploys the rest without it.
    async fn cut_out(
        self: Arc<Self>,
        upload: Arc<Upload>,
        mut domains: Vec<String>,
        at: usize,
        e: A::Error,
    ) {
        if at >= domains.len() {
            return self.failed(&domains, Arc::new(e));
        }
        let bad = domains.remove(at);
        tracing::warn!(domain = %bad, kind = e.kind(), "domain refused; deploying the rest without it");
        self.failed(std::slice::from_ref(&bad), Arc::new(e));
        self.deploy(upload, domains).await;
    }

    /// The attempt loop of one call: gate, limiter, call, backoff on retryable errors.
    async fn call(&self, upload: &Upload, domains: &[String]) -> CallEnd<A::Error> {
        let mut canary = false;
        let attempts = self.options.max_attempts.max(1);
        for attempt in 0..attempts {
            if let Some(end) = self.wait_to_start(&mut canary, domains).await {
                return end;
            }
            self.write_calls.fetch_add(1, Ordering::SeqCst);
            let result = self.api.batch_set(&BatchSet { upload, domains }).await;
            let retry_after = match &result {
                Err(e) => match e.handling() {
                    Handling::Retry { after } if attempt + 1 < attempts => Some(after),
                    _ => None,
                },
                Ok(_) => None,
            };
            let Some(after) = retry_after else {
                // A final error opens the gate in `refused`, after its effect on the run.
                return match result {
                    Ok(id) => {
                        self.open_gate();
                        CallEnd::Ok(id)
                    }
                    Err(e) => CallEnd::Err(e),
                };
            };
            if let Err(e) = &result {
                tracing::debug!(kind = e.kind(), attempt, "retryable error; backing off");
            }
            let delay = self.options.retry_backoff.delay(attempt, after);
            if !self.sleep_unless_stopped(delay).await {
                return CallEnd::Stopped;
            }
        }
        // The loop returns on its last attempt; reaching here means zero attempts ran.
        CallEnd::Stopped
    }

    /// Waits for the gate and a write permit. `Some` when this attempt must not start: the
    /// run stopped, or the batch size was lowered meanwhile (checked before and after the
    /// permit; a permit given up here only makes the rate stricter).
    async fn wait_to_start(
        &self,
        canary: &mut bool,
        domains: &[String],
    ) -> Option<CallEnd<A::Error>> {
        if self.halted() || !self.admit(canary).await {
            return Some(CallEnd::Stopped);
        }
        let permitted = !self.too_large(domains) && self.take_write_permit().await;
        if permitted && !self.too_large(domains) {
            return None;
        }
        // Only the canary holds the gate; it must never leave it closed.
        if *canary {
            self.open_gate();
        }
        Some(if self.too_large(domains) {
            CallEnd::TooLarge
        } else {
            CallEnd::Stopped
        })
    }

    /// Lets every caller through once the canary has its final answer (no-op when the gate
    /// is already open or the run stopped).
    fn open_gate(&self) {
        self.gate.send_if_modified(|g| {
            let was_closed = *g == Gate::Closed;
            if was_closed {
                *g = Gate::Open;
            }
            was_closed
        });
    }

    /// Waits until this caller may call: when the gate is open, or as the canary.
    /// `false` when the run stopped.
    async fn admit(&self, canary: &mut bool) -> bool {
        if *canary {
            return *self.gate.borrow() != Gate::Stopped;
        }
        let mut rx = self.gate.subscribe();
        loop {
            match *rx.borrow_and_update() {
                Gate::Open => return true,
                Gate::Stopped => return false,
                Gate::Closed => {}
            }
            if !self.canary_taken.swap(true, Ordering::SeqCst) {
                *canary = true;
                return true;
            }
            if rx.changed().await.is_err() {
                return false;
            }
        }
    }

    /// Waits for the write limiter; `false` when the run stopped or halted meanwhile.
    async fn take_write_permit(&self) -> bool {
        let mut rx = self.gate.subscribe();
        tokio::select! {
            _ = self.writes.acquire() => *self.gate.borrow() != Gate::Stopped && !self.halted(),
            _ = rx.wait_for(|g| *g == Gate::Stopped) => false,
            () = self.halted_wait() => false,
        }
    }

    /// Sleeps `d`; `false` when the run stopped or halted meanwhile.
    async fn sleep_unless_stopped(&self, d: std::time::Duration) -> bool {
        let mut rx = self.gate.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(d) => *self.gate.borrow() != Gate::Stopped && !self.halted(),
            _ = rx.wait_for(|g| *g == Gate::Stopped) => false,
            () = self.halted_wait() => false,
        }
    }

    fn halted(&self) -> bool {
        *self.halt.borrow()
    }

    /// Resolves once the executor is halted (never when it is not).
    async fn halted_wait(&self) {
        let mut rx = self.halt.clone();
        if rx.wait_for(|h| *h).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    fn stop(&self, cause: Arc<A::Error>) {
        let _first = self.stop_cause.set(cause);
        self.gate.send_replace(Gate::Stopped);
    }

    fn deployed(self: &Arc<Self>, upload: &Arc<Upload>, domains: Vec<String>, request_id: String) {
        let verification = if self.options.verify {
            Verification::Unverified { last_error: None }
        } else {
            Verification::NotChecked
        };
        {
            let mut outcomes = lock(&self.outcomes);
            for d in &domains {
                let fingerprint = upload.fingerprint;
                let (request_id, verification) = (request_id.clone(), clone_verdict(&verification));
                outcomes.insert(
                    d.clone(),
                    Outcome::Deployed {
                        request_id,
                        fingerprint,
                        verification,
                    },
                );
            }
        }
        tracing::info!(domains = domains.len(), cert = %upload.cert_name, %request_id, "deployed");
        if self.options.verify {
            let run = self.clone();
            let (upload, batch) = (upload.clone(), domains.clone());
            lock(&self.verifications).spawn(async move { run.read_back(upload, batch).await });
        }
        self.emit(Event::Deployed {
            domains,
            cert_name: upload.cert_name.clone(),
            fingerprint: upload.fingerprint,
            not_after: upload.not_after,
            request_id,
        });
    }

    fn failed(&self, domains: &[String], error: Arc<A::Error>) {
        let mut outcomes = lock(&self.outcomes);
        for d in domains {
            outcomes.insert(
                d.clone(),
                Outcome::Failed {
                    error: error.clone(),
                },
            );
        }
    }

    fn not_attempted(&self, domains: &[String]) {
        let Some(cause) = self.stop_cause.get() else {
            // Stopped is only ever signalled after the cause is set (see `stop`).
            return;
        };
        let mut outcomes = lock(&self.outcomes);
        for d in domains {
            outcomes.insert(
                d.clone(),
                Outcome::NotAttempted {
                    cause: cause.clone(),
                },
            );
        }
    }

    fn emit(&self, event: Event<A::Error>) {
        if let Some(tx) = &self.events {
            // A caller that dropped its receiver no longer wants events; the report
            // still carries every outcome.
            let _ignored = tx.send(event);
        }
    }

    /// Polls one domain of a deployed batch until it serves the new fingerprint, or the
    /// bound runs out; records and emits the verdict.
    async fn read_back(self: Arc<Self>, upload: Arc<Upload>, domains: Vec<String>) {
        let Some(probe) = domains.first().cloned() else {
            return;
        };
        let want = upload.fingerprint;
        let deadline = Instant::now() + self.options.verify_timeout;
        let mut last_error = None;
        let mut attempt = 0u32;
        let verified = loop {
            if self.halted() {
                return;
            }
            self.reads.acquire().await;
            self.read_calls.fetch_add(1, Ordering::SeqCst);
            let hint = match self.api.served_fingerprint(&probe).await {
                Ok(Some(fp)) if fp == want => break true,
                Ok(_) => {
                    last_error = None;
                    None
                }
                Err(e) => match e.handling() {
                    Handling::Retry { after } => {
                        last_error = Some(Arc::new(e));
                        after
                    }
                    _ => {
                        last_error = Some(Arc::new(e));
                        break false;
                    }
                },
            };
            let delay = self.options.poll_backoff.delay(attempt, hint);
            attempt = attempt.saturating_add(1);
            if Instant::now() + delay > deadline {
                break false;
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                // No verdict: the deployment stays pending (confirmed at the next start).
                () = self.halted_wait() => return,
            }
        };
        self.verdict(upload.fingerprint, domains, verified, last_error);
    }

    fn verdict(
        &self,
        fingerprint: crate::cert::Fingerprint,
        domains: Vec<String>,
        verified: bool,
        last_error: Option<Arc<A::Error>>,
    ) {
        {
            let mut outcomes = lock(&self.outcomes);
            for d in &domains {
                if let Some(Outcome::Deployed { verification, .. }) = outcomes.get_mut(d) {
                    *verification = if verified {
                        Verification::Verified
                    } else {
                        Verification::Unverified {
                            last_error: last_error.clone(),
                        }
                    };
                }
            }
        }
        if verified {
            tracing::info!(domains = domains.len(), "read-back verified");
            self.emit(Event::Verified {
                domains,
                fingerprint,
            });
        } else {
            tracing::warn!(
                domains = domains.len(),
                probe = domains.first().map(String::as_str).unwrap_or(""),
                "read-back never saw the new certificate"
            );
            self.emit(Event::Unverified {
                domains,
                fingerprint,
                last_error,
            });
        }
    }
}

/// The batch size to retry at after a call of `refused` domains was refused as too large:
/// Alibaba's documented limit first, then halves.
fn lower_batch_size(refused: usize) -> usize {
    if refused > DOCUMENTED_BATCH_LIMIT {
        DOCUMENTED_BATCH_LIMIT
    } else {
        (refused / 2).max(1)
    }
}

/// Where the domain an error names sits in the batch (Alibaba's case may differ).
fn position(domains: &[String], named: &str) -> Option<usize> {
    domains.iter().position(|d| d.eq_ignore_ascii_case(named))
}

fn clone_verdict<E>(v: &Verification<E>) -> Verification<E> {
    match v {
        Verification::NotChecked => Verification::NotChecked,
        Verification::Verified => Verification::Verified,
        Verification::Unverified { last_error } => Verification::Unverified {
            last_error: last_error.clone(),
        },
    }
}

/// Locks a mutex whose holders never panic while holding it (they only insert into maps
/// and spawn tasks); a poisoned lock's data is still consistent, so it is used as is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
