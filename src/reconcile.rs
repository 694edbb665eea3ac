//! The reconcile pass, owned here and shared by `sync`, `demo` and the daemon: scanned
//! lineages → valid certificates → plan (against the deployed state) → push → record →
//! summary. The callers differ only in what they pass in: `sync` confirms the records a
//! killed run left pending first; the daemon confirms them at its first pass, holds torn
//! lineages on their last valid certificate ([`Holds`]), halts the push on a stop request,
//! and audits what the CDN serves between passes (with [`read_back`]).
//!
//! Owns: [`Pass::plan`] (lineages sorted by a [`Holds`], planned against the recorded
//! state, with the part of the [`Summary`] known before pushing) and [`Pass::push`]
//! (planner batches → executor jobs, every executor event recorded in the state file as it
//! happens — after each successful call, on a blocking thread so writes never stall the
//! calls — then the final errors, then the summary); confirming by read-back the
//! deployments a killed run left `Pending` ([`confirm_pending`]), so a call accepted just
//! before a kill is not pushed again; and the pass's [`Verdict`] (what `sync`'s exit code
//! is made from).
//!
//! Invariants: only certificates valid at `now` reach the planner and the executor (the
//! planner re-checks); every domain the executor reports on has its outcome recorded; a
//! pass whose outcome is not on disk at its end (the last save failed) says so — which
//! deployed domains are missing from the state file — and its verdict is
//! [`Verdict::Unrecorded`]; the summary never holds key material (API messages are redacted
//! at construction). Nothing here reads the configuration or knows a concrete API: plain
//! values in, a target behind [`Executor`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::cert::{self, Certificate, Fingerprint};
use crate::plan::{self, Plan, PlanInput, PlanLineage};
use crate::push::{
    Event, Executor, Failure, Job, Outcome, RateLimiter, Report, Target, TargetIndex, Upload,
    Verification,
};
use crate::source::Lineage;
use crate::state::{self, Push, State, StateError, StateStore};
use crate::untrusted;

/// A lineage whose certificate is valid at the pass's `now`.
#[derive(Clone, Debug)]
pub(crate) struct ValidLineage {
    pub(crate) id: String,
    pub(crate) cert: Arc<Certificate>,
}

impl ValidLineage {
    pub(crate) fn new(id: &str, cert: &Arc<Certificate>) -> ValidLineage {
        ValidLineage {
            id: id.to_string(),
            cert: Arc::clone(cert),
        }
    }
}

/// One scanned lineage: valid at `now`, or `(id, reason)`.
pub(crate) fn check(l: &Lineage, now: OffsetDateTime) -> Result<ValidLineage, (String, String)> {
    l.valid_at(now)
        .map(|cert| ValidLineage::new(&l.id, cert))
        .map_err(|e| (l.id.clone(), e.to_string()))
}

/// Splits scanned lineages into the valid ones and `(id, reason)` for the others.
pub(crate) fn split(
    lineages: &[Lineage],
    now: OffsetDateTime,
) -> (Vec<ValidLineage>, Vec<(String, String)>) {
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for l in lineages {
        match check(l, now) {
            Ok(v) => valid.push(v),
            Err(i) => invalid.push(i),
        }
    }
    (valid, invalid)
}

/// Sorts scanned lineages into the valid ones and `(id, reason)` for the others. `sync`
/// uses [`NoHolds`]; the daemon holds torn lineages (a renewal in progress) on their last
/// valid certificate.
pub(crate) trait Holds {
    fn sort(
        &mut self,
        lineages: &[Lineage],
        now: OffsetDateTime,
    ) -> (Vec<ValidLineage>, Vec<(String, String)>);
}

/// Holds nothing: [`split`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct NoHolds;

impl Holds for NoHolds {
    fn sort(
        &mut self,
        lineages: &[Lineage],
        now: OffsetDateTime,
    ) -> (Vec<ValidLineage>, Vec<(String, String)>) {
        split(lineages, now)
    }
}

/// Confirms by read-back the deployments of `domains` that a killed or stopped run left
/// `Pending`: one probe per recorded call (domains sharing a `RequestId` and fingerprint),
/// at most `read_rate` per second. Served → verified; something else → failed read-back,
/// so the planner pushes them again; a read error leaves them pending (and so out of date
/// for a planner with read-back on). Stops early when `stop()` says so. Returns the number
/// of calls probed.
pub(crate) async fn confirm_pending<T: Target>(
    target: &T,
    store: &mut StateStore,
    domains: &[String],
    read_rate: u32,
    stop: impl Fn() -> bool,
) -> usize {
    let calls = pending_calls(store, domains);
    if calls.is_empty() {
        return 0;
    }
    tracing::info!(
        calls = calls.len(),
        "confirming deployments left pending by read-back"
    );
    let limiter = RateLimiter::with_window(read_rate.max(1), crate::push::RATE_WINDOW);
    let mut probed = 0;
    for ((_, fingerprint), domains) in calls {
        if stop() {
            break;
        }
        let Some(probe) = domains.first() else {
            continue;
        };
        limiter.acquire().await;
        read_back(target, store, probe, &domains, fingerprint, "confirm").await;
        probed += 1;
    }
    probed
}

/// The `Pending` deployments of `domains`, grouped by the call that made them.
fn pending_calls(
    store: &StateStore,
    domains: &[String],
) -> BTreeMap<(String, Fingerprint), Vec<String>> {
    let mut calls: BTreeMap<(String, Fingerprint), Vec<String>> = BTreeMap::new();
    for domain in domains {
        let deployed = store
            .state()
            .domains
            .get(domain)
            .and_then(|s| s.deployed.as_ref());
        if let Some(d) = deployed.filter(|d| d.verification == state::Verification::Pending) {
            let key = (d.request_id.to_string(), d.fingerprint);
            calls.entry(key).or_default().push(domain.clone());
        }
    }
    calls
}

/// What a [`read_back`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadBack {
    /// The domain serves the expected certificate.
    Served,
    /// It serves another certificate, or none: recorded as a failed read-back.
    Other,
    /// The read failed: nothing recorded.
    Unknown,
}

/// Reads `probe` back; records `domains` verified when it serves `fingerprint`, failed
/// read-back when it serves something else; logs and leaves them when the read fails.
/// `why` names the check in logs and in the recorded error.
pub(crate) async fn read_back<T: Target>(
    target: &T,
    store: &mut StateStore,
    probe: &str,
    domains: &[String],
    fingerprint: Fingerprint,
    why: &'static str,
) -> ReadBack {
    let at = OffsetDateTime::now_utc();
    let (seen, result) = match target.served(probe).await {
        Ok(Some(fp)) if fp == fingerprint => (
            ReadBack::Served,
            store.record_verified(domains, fingerprint, at),
        ),
        Ok(served) => {
            let served = served.map_or_else(|| "no certificate".to_string(), |f| f.short());
            tracing::warn!(domain = %probe, %served, recorded = %fingerprint.short(), check = why, "the domain does not serve the recorded certificate; it will be pushed again");
            let message = format!(
                "read-back ({why}) found {served} served instead of {}",
                fingerprint.short()
            );
            (
                ReadBack::Other,
                store.record_verify_failed(domains, fingerprint, &message, at),
            )
        }
        Err(e) => {
            tracing::warn!(domain = %probe, kind = e.kind(), error = %e, check = why, "read-back failed; trying again at the next check");
            (ReadBack::Unknown, Ok(()))
        }
    };
    if let Err(e) = result {
        tracing::error!(kind = e.kind(), "{e}");
    }
    seen
}

/// What the planner needs to know about the world, besides the lineages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlanParams<'a> {
    pub(crate) domains: &'a [String],
    pub(crate) deployed: &'a BTreeMap<String, Fingerprint>,
    pub(crate) now: OffsetDateTime,
    pub(crate) batch: usize,
    pub(crate) force: bool,
}

/// The planner's view of `valid` (indices match).
pub(crate) fn plan_lineages(valid: &[ValidLineage]) -> Vec<PlanLineage<'_>> {
    valid
        .iter()
        .map(|v| PlanLineage {
            id: &v.id,
            fingerprint: v.cert.fingerprint,
            names: &v.cert.names,
            not_before: v.cert.not_before,
            not_after: v.cert.not_after,
        })
        .collect()
}

/// Plans the pass (pure).
pub(crate) fn make_plan(valid: &[ValidLineage], p: &PlanParams<'_>) -> Plan {
    let lineages = plan_lineages(valid);
    plan::plan(&PlanInput {
        domains: p.domains,
        lineages: &lineages,
        deployed: p.deployed,
        now: p.now,
        batch: p.batch,
        force: p.force,
    })
}

/// One executor job per certificate and target, holding that certificate's batches for
/// that target: each batch's domains go to the target `routes` names (the executor's first
/// when it names none), so a batch mixing products is split.
pub(crate) fn jobs(
    plan: &Plan,
    valid: &[ValidLineage],
    routes: &BTreeMap<String, TargetIndex>,
) -> Vec<Job> {
    let mut by_key: BTreeMap<(usize, TargetIndex), Job> = BTreeMap::new();
    let mut uploads: BTreeMap<usize, Arc<Upload>> = BTreeMap::new();
    for batch in &plan.batches {
        // Batch::lineage indexes `valid` (the slice the plan was made from).
        let Some(v) = valid.get(batch.lineage) else {
            continue;
        };
        let upload = uploads.entry(batch.lineage).or_insert_with(|| {
            Arc::new(Upload {
                cert_name: batch.cert_name.clone(),
                chain: v.cert.chain().clone(),
                key: Arc::clone(&v.cert.key),
                fingerprint: v.cert.fingerprint,
                not_after: v.cert.not_after,
            })
        });
        let mut parts: BTreeMap<TargetIndex, Vec<String>> = BTreeMap::new();
        for d in &batch.domains {
            let target = routes.get(d).copied().unwrap_or(0);
            parts.entry(target).or_default().push(d.clone());
        }
        for (target, domains) in parts {
            let job = by_key
                .entry((batch.lineage, target))
                .or_insert_with(|| Job {
                    target,
                    upload: Arc::clone(upload),
                    batches: Vec::new(),
                });
            job.batches.push(domains);
        }
    }
    by_key.into_values().collect()
}

/// What a pass is asked to do (plain values from the caller's configuration).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pass<'a> {
    /// The managed domains (every product).
    pub(crate) domains: &'a [String],
    /// The executor target each domain's jobs go to (absent: the first).
    pub(crate) routes: &'a BTreeMap<String, TargetIndex>,
    /// Domains per call of targets that carry fewer than `batch` (per-domain targets):
    /// the plan is cut to them, so its call count is the calls made.
    pub(crate) per_call: &'a BTreeMap<TargetIndex, usize>,
    /// Domains per call the planner cuts batches to.
    pub(crate) batch: usize,
    /// Read-back is on: only verified deployments count as up to date.
    pub(crate) verify: bool,
    /// Treat every covered domain as out of date.
    pub(crate) force: bool,
}

/// A pass's plan and the part of its summary known before pushing.
pub(crate) struct Planned {
    pub(crate) plan: Plan,
    pub(crate) summary: Summary,
    /// The lineages the plan's batches index.
    pub(crate) valid: Vec<ValidLineage>,
}

/// What a pushed pass hands back.
pub(crate) struct Passed {
    pub(crate) summary: Summary,
    pub(crate) store: StateStore,
}

impl Pass<'_> {
    /// Sorts the scanned `lineages` with `holds` and plans against the recorded `state` at
    /// `now` (pure but for what `holds` keeps).
    pub(crate) fn plan(
        &self,
        lineages: &[Lineage],
        holds: &mut dyn Holds,
        state: &State,
        now: OffsetDateTime,
    ) -> Planned {
        let (valid, invalid) = holds.sort(lineages, now);
        let deployed = state.deployed_fingerprints(self.verify);
        let params = PlanParams {
            domains: self.domains,
            deployed: &deployed,
            now,
            batch: self.batch,
            force: self.force,
        };
        let mut plan = make_plan(&valid, &params);
        if !self.per_call.is_empty() {
            plan.rebatch(|d| {
                let target = self.routes.get(d).copied().unwrap_or(0);
                let size = self.per_call.get(&target).copied().unwrap_or(self.batch);
                (target, size)
            });
        }
        let summary = Summary::planned(lineages, invalid, &plan);
        Planned {
            plan,
            summary,
            valid,
        }
    }

    /// Pushes a plan through `executor`, records every outcome in `store` and completes the
    /// summary. `progress` is called with the number of domains deployed so far after each
    /// successful call; when `halt` resolves, the executor is halted (the call in flight
    /// finishes, nothing more starts).
    pub(crate) async fn push<T: Target>(
        &self,
        planned: Planned,
        executor: &Executor<T>,
        store: StateStore,
        progress: Box<dyn FnMut(usize) + Send>,
        halt: impl Future<Output = ()>,
    ) -> Passed {
        let Planned {
            plan,
            mut summary,
            valid,
        } = planned;
        if plan.batches.is_empty() {
            return Passed { summary, store };
        }
        let jobs = jobs(&plan, &valid, self.routes);
        // The jobs carry what the calls need: the batches and the parsed lineages are not
        // needed again, and held through the push they would double its memory.
        drop((plan, valid));
        let executed = execute(executor, jobs, store, progress, halt).await;
        summary.add_report(&executed.report);
        summary.state_errors = executed
            .state_errors
            .iter()
            .map(|e| e.to_string())
            .collect();
        summary.unrecorded = executed.unrecorded;
        Passed {
            summary,
            store: executed.store,
        }
    }
}

/// What [`execute`] hands back.
pub(crate) struct Executed<E> {
    pub(crate) report: Report<E>,
    pub(crate) store: StateStore,
    /// State writes that failed (the in-memory state kept them; the next save retries).
    pub(crate) state_errors: Vec<StateError>,
    /// `Some` when the state file does not hold the pass's outcome at the end (its last
    /// save failed): the domains deployed by the pass that are missing from it.
    pub(crate) unrecorded: Option<Vec<String>>,
}

/// Runs `jobs` through `executor`, recording each event in `store` as it arrives, then
/// records the final error of every domain that was not deployed, and saves once more if
/// the last save failed. `progress` is called with the number of domains deployed so far
/// after each successful call; `halt` halts the executor when it resolves.
pub(crate) async fn execute<T: Target>(
    executor: &Executor<T>,
    jobs: Vec<Job>,
    store: StateStore,
    progress: Box<dyn FnMut(usize) + Send>,
    halt: impl Future<Output = ()>,
) -> Executed<T::Error> {
    let (tx, rx) = mpsc::unbounded_channel();
    let recorder = tokio::task::spawn_blocking(move || record_events(rx, store, progress));
    let run = executor.run(jobs, Some(tx));
    tokio::pin!(run);
    let report = tokio::select! {
        report = &mut run => report,
        () = halt => {
            executor.halt();
            run.await
        }
    };
    // The sender was moved into the run and is dropped with it, so the recorder ends.
    let recorded = match recorder.await {
        Ok(done) => done,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    };
    let Recorded {
        mut store,
        mut errors,
        mut unsaved,
    } = recorded;
    let (failure_errors, last_save) = record_failures(&mut store, &report);
    errors.extend(failure_errors);
    match last_save {
        // Everything in memory is on disk.
        Some(true) => unsaved = None,
        // Written in memory, not on disk: try once more below.
        Some(false) => {
            unsaved.get_or_insert_with(BTreeSet::new);
        }
        None => {}
    }
    if unsaved.is_some()
        && let Err(e) = store.save()
    {
        tracing::error!(error = %e, kind = e.kind(), "could not save the state file");
        errors.push(e);
    } else {
        unsaved = None;
    }
    Executed {
        report,
        store,
        state_errors: errors,
        unrecorded: unsaved.map(|domains| domains.into_iter().collect()),
    }
}

/// What [`record_events`] gives back.
struct Recorded {
    store: StateStore,
    errors: Vec<StateError>,
    /// `Some` when the last save failed: the domains deployed since the last good save.
    unsaved: Option<BTreeSet<String>>,
}

/// Records executor events as they arrive. Events already queued when one arrives are
/// applied together and saved once (a burst of read-backs costs one write of the state
/// file, not one each). `progress` counts calls as they are applied, as before; the pass
/// reports nothing as recorded until `execute` returns, after the last save.
fn record_events<E: Failure>(
    mut rx: mpsc::UnboundedReceiver<Event<E>>,
    mut store: StateStore,
    mut progress: Box<dyn FnMut(usize) + Send>,
) -> Recorded {
    let mut errors = Vec::new();
    let mut deployed = 0;
    let mut unsaved: BTreeSet<String> = BTreeSet::new();
    let mut last_failed = false;
    while let Some(first) = rx.blocking_recv() {
        let mut event = Some(first);
        while let Some(e) = event {
            if let Event::Deployed { domains, .. } = &e {
                unsaved.extend(domains.iter().cloned());
            }
            let newly = note_event(&mut store, &e);
            if newly > 0 {
                deployed += newly;
                progress(deployed);
            }
            event = rx.try_recv().ok();
        }
        match store.save() {
            Ok(()) => {
                unsaved.clear();
                last_failed = false;
            }
            Err(e) => {
                tracing::error!(error = %e, kind = e.kind(), "could not save the state file");
                errors.push(e);
                last_failed = true;
            }
        }
    }
    Recorded {
        store,
        errors,
        unsaved: last_failed.then_some(unsaved),
    }
}

/// Applies one event to the in-memory state; returns the number of domains it deployed.
fn note_event<E: Failure>(store: &mut StateStore, event: &Event<E>) -> usize {
    let at = OffsetDateTime::now_utc();
    match event {
        Event::Deployed {
            domains,
            cert_name,
            fingerprint,
            not_after,
            request_id,
            ..
        } => {
            let push = Push {
                fingerprint: *fingerprint,
                cert_name,
                not_after: *not_after,
                request_id,
                at,
            };
            store.note_deployed(domains, &push);
            domains.len()
        }
        Event::Verified {
            domains,
            fingerprint,
            ..
        } => {
            store.note_verified(domains, *fingerprint, at);
            0
        }
        Event::Unverified {
            domains,
            fingerprint,
            last_error,
            ..
        } => {
            let message = unverified_message(last_error.as_deref());
            store.note_verify_failed(domains, *fingerprint, &message, at);
            0
        }
        // A CAS upload (or lookup): recorded at once, so a run killed before its bindings
        // reuses it.
        Event::Prepared {
            fingerprint,
            reference,
            ..
        } => {
            if let Some(cert) = state::cas::CasRef::from_reference(reference) {
                state::cas::note_prepared(store.cas_mut(), *fingerprint, cert, at);
            }
            0
        }
    }
}

fn unverified_message<E: Failure>(last_error: Option<&E>) -> String {
    match last_error {
        Some(e) => format!("read-back did not confirm the new certificate: {e}"),
        None => "read-back did not see the new certificate in time".to_string(),
    }
}

/// Records every failed or skipped domain's error, one save per distinct error. Returns
/// the save errors and whether the last save succeeded (`None`: nothing to record).
fn record_failures<E: Failure>(
    store: &mut StateStore,
    report: &Report<E>,
) -> (Vec<StateError>, Option<bool>) {
    let at = OffsetDateTime::now_utc();
    let mut groups: BTreeMap<(&'static str, String), Vec<String>> = BTreeMap::new();
    for (domain, outcome) in &report.outcomes {
        let error = match outcome {
            Outcome::Failed { error } | Outcome::NotAttempted { cause: error } => error,
            Outcome::Deployed { .. } => continue,
        };
        let key = (error.kind(), error.to_string());
        groups.entry(key).or_default().push(domain.clone());
    }
    let mut errors = Vec::new();
    let mut last = None;
    for ((kind, message), domains) in groups {
        match store.record_error(&domains, kind, &message, at) {
            Ok(()) => last = Some(true),
            Err(e) => {
                errors.push(e);
                last = Some(false);
            }
        }
    }
    (errors, last)
}

/// How a pass ended, for the caller's exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every managed domain serves its best valid certificate, and that is recorded.
    Clean,
    /// A push failed for good, a read-back did not confirm, a managed domain has no valid
    /// certificate, or the run stopped (each named in the summary).
    Problems,
    /// The pass's outcome could not be saved to the state file (e.g. a full disk): the next
    /// run would push again what this one deployed.
    Unrecorded,
}

/// Why a domain has no valid certificate: "no valid certificate", naming the parsed but
/// time-invalid lineages that would cover it. Built once per pass ([`cert::CoverAll`] over
/// the parsed lineages), so explaining U uncovered domains costs O(names + U), not
/// O(U × lineages).
pub(crate) struct NotCovered<'a> {
    parsed: Vec<&'a Lineage>,
    index: cert::CoverAll<'a>,
}

impl<'a> NotCovered<'a> {
    pub(crate) fn new(lineages: &'a [Lineage]) -> NotCovered<'a> {
        let parsed: Vec<(&Lineage, &[String])> = lineages
            .iter()
            .filter_map(|l| Some((l, l.result.as_ref().ok()?.names.as_slice())))
            .collect();
        NotCovered {
            index: cert::CoverAll::new(parsed.iter().map(|(_, names)| *names)),
            parsed: parsed.into_iter().map(|(l, _)| l).collect(),
        }
    }

    /// The reason for `domain`.
    pub(crate) fn why(&self, domain: &str) -> String {
        let near: Vec<&str> = self
            .index
            .covering(domain)
            .into_iter()
            .filter_map(|i| Some(self.parsed.get(i)?.id.as_str()))
            .collect();
        if near.is_empty() {
            "no valid certificate".to_string()
        } else {
            format!(
                "no valid certificate (covered only by invalid {})",
                near.join(", ")
            )
        }
    }
}

/// Everything a pass found and did, for the report and the exit code (`sync --json`
/// prints it as it is).
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Summary {
    /// `(lineage id, reason)` of lineages not valid now.
    pub(crate) invalid: Vec<(String, String)>,
    /// `(domain, why)` of managed domains no valid lineage covers.
    pub(crate) uncovered: Vec<(String, String)>,
    pub(crate) up_to_date: usize,
    pub(crate) planned_calls: usize,
    pub(crate) planned_domains: usize,
    /// Domains deployed by this pass, and how many of them read-back confirmed.
    pub(crate) deployed: usize,
    pub(crate) verified: usize,
    /// `(domain, reason)` of domains whose push failed for good, or whose read-back did not
    /// confirm the new certificate.
    pub(crate) failed: Vec<(String, String)>,
    pub(crate) write_calls: u64,
    pub(crate) read_calls: u64,
    /// The batch size at the end, when a size refusal lowered it.
    pub(crate) lowered_batch: Option<usize>,
    /// Targets that answered that their call does not exist (their work went to their
    /// fallback), by name.
    pub(crate) gone: Vec<&'static str>,
    /// Domains deployed by this pass, per executor target.
    pub(crate) deployed_by: BTreeMap<TargetIndex, usize>,
    /// The credentials error that stopped the run.
    pub(crate) stopped: Option<String>,
    pub(crate) state_errors: Vec<String>,
    /// `Some` when the state file does not hold the pass's outcome: the domains deployed
    /// but not recorded.
    pub(crate) unrecorded: Option<Vec<String>>,
}

impl Summary {
    /// The part of the summary known before pushing.
    pub(crate) fn planned(
        lineages: &[Lineage],
        invalid: Vec<(String, String)>,
        plan: &Plan,
    ) -> Summary {
        Summary {
            invalid,
            uncovered: if plan.uncovered.is_empty() {
                Vec::new()
            } else {
                let why = NotCovered::new(lineages);
                plan.uncovered
                    .iter()
                    .map(|d| (d.clone(), why.why(d)))
                    .collect()
            },
            up_to_date: plan.up_to_date.len(),
            planned_calls: plan.calls(),
            planned_domains: plan.pending(),
            ..Summary::default()
        }
    }

    /// Adds what the executor reported.
    pub(crate) fn add_report<E: Failure>(&mut self, report: &Report<E>) {
        for (domain, outcome) in &report.outcomes {
            match outcome {
                Outcome::Deployed {
                    verification,
                    target,
                    ..
                } => {
                    self.deployed += 1;
                    *self.deployed_by.entry(*target).or_default() += 1;
                    match verification {
                        Verification::Verified => self.verified += 1,
                        Verification::NotChecked => {}
                        Verification::Unverified { last_error } => self
                            .failed
                            .push((domain.clone(), unverified_message(last_error.as_deref()))),
                    }
                }
                Outcome::Failed { error } => self.failed.push((domain.clone(), error.to_string())),
                Outcome::NotAttempted { cause } => self
                    .failed
                    .push((domain.clone(), format!("not attempted: {cause}"))),
            }
        }
        self.write_calls = report.write_calls;
        self.read_calls = report.read_calls;
        self.lowered_batch = report.lowered_batch().map(|t| t.batch_size);
        self.gone = report
            .targets
            .iter()
            .filter(|t| t.gone)
            .map(|t| t.name)
            .collect();
        self.stopped = report.stopped.as_ref().map(|e| e.to_string());
    }

    /// See [`Verdict`]; an unrecorded outcome wins over problems.
    pub(crate) fn verdict(&self) -> Verdict {
        let clean = self.uncovered.is_empty() && self.failed.is_empty() && self.stopped.is_none();
        if self.unrecorded.is_some() {
            Verdict::Unrecorded
        } else if clean {
            Verdict::Clean
        } else {
            Verdict::Problems
        }
    }

    /// What a dry run adds to the plan's own description: the invalid lineages and why each
    /// uncovered domain is uncovered (the plan lines are the description's).
    pub(crate) fn render_reasons(&self) -> String {
        let mut out = String::new();
        for (id, reason) in &self.invalid {
            let _ = writeln!(out, "invalid lineage {id}: {reason}");
        }
        for (domain, why) in &self.uncovered {
            let _ = writeln!(out, "UNCOVERED {domain}: {why}");
        }
        out
    }

    /// The human report of the pass. The error that stopped the run is printed once, on
    /// the `stopped:` line; the domains it failed say so instead of repeating it.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for (id, reason) in &self.invalid {
            let _ = writeln!(out, "invalid lineage {id}: {reason}");
        }
        let _ = writeln!(
            out,
            "plan: {} domain(s) to update in {} call(s); {} up to date; {} without a valid certificate",
            self.planned_domains,
            self.planned_calls,
            self.up_to_date,
            self.uncovered.len()
        );
        if self.write_calls > 0 || self.planned_calls > 0 {
            let _ = writeln!(
                out,
                "pushed: {} domain(s) deployed ({} confirmed by read-back) in {} write call(s), {} read call(s)",
                self.deployed, self.verified, self.write_calls, self.read_calls
            );
        }
        if let Some(size) = self.lowered_batch {
            let _ = writeln!(
                out,
                "note: the API refused large batches; {size} domains per call were used (set [aliyun] max_domains_per_call = {size})"
            );
        }
        for name in &self.gone {
            let _ = writeln!(
                out,
                "note: the API answered that {name}'s call does not exist; its domains went through its fallback"
            );
        }
        if let Some(stopped) = &self.stopped {
            let _ = writeln!(out, "stopped: {}", untrusted::one_line(stopped));
        }
        for (domain, why) in &self.failed {
            match self.stopped.as_deref() {
                Some(s) if why == s => {
                    let _ = writeln!(out, "FAILED {domain}: refused with the error above");
                }
                Some(s) if why.strip_prefix("not attempted: ") == Some(s) => {
                    let _ = writeln!(
                        out,
                        "FAILED {domain}: not sent (the run stopped, see above)"
                    );
                }
                _ => {
                    let _ = writeln!(out, "FAILED {domain}: {}", untrusted::one_line(why));
                }
            }
        }
        for (domain, why) in &self.uncovered {
            let _ = writeln!(out, "UNCOVERED {domain}: {why}");
        }
        for e in &self.state_errors {
            let _ = writeln!(out, "state file: {e}");
        }
        if let Some(domains) = &self.unrecorded {
            let _ = writeln!(
                out,
                "NOT RECORDED: the state file could not be saved, so it does not hold this pass's outcome; {} domain(s) deployed but not recorded{}{} (the next run pushes them again unless the state file can be saved)",
                domains.len(),
                if domains.is_empty() { "" } else { ": " },
                domains.join(", ")
            );
        }
        out
    }
}

#[cfg(test)]
mod tests;
