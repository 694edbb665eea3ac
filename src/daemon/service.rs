//! The reconcile pass as `certrotd run` drives it: the [`Reconciler`] behind the main loop.
//! The pass itself is `reconcile`'s; what the daemon passes in is its own: a persistent
//! scanner, torn-renewal holds, a halt on stop requests, pending records confirmed at the
//! first pass, and the drift audit.
//!
//! Owns, for the life of the process: the configuration in force, ONE [`Scanner`] (its
//! file-identity cache makes a pass re-read only the lineages that changed), ONE
//! [`Executor`] (its rate limiters and learned batch size carry over from pass to pass; a new
//! one only when a reload changes the `[aliyun]` settings), the locked [`StateStore`], the
//! [`TornTracker`] and the drift audit's own read limiter.
//!
//! A pass: (after a pass whose outcome could not be saved) save the state file again — a
//! failure fails the pass, so the scheduler retries it with backoff until the save
//! succeeds; (first pass only) confirm by read-back the deployments a killed or stopped run
//! left `Pending` (`reconcile::confirm_pending`, shared with `sync`), so they are not pushed
//! again; scan; plan (`reconcile::Pass::plan` with the torn-renewal [`Holds`], then
//! [`PassCtx::planned`]); push and record (`reconcile::Pass::push`, halted by a stop
//! request); then the drift audit (queued at each periodic rescan, read at a tenth of the
//! read rate, paused by any file change and resumed after the next pass's push), and when it
//! found drift, plan and push again. After each pass, the memory it freed goes back to the
//! system.
//!
//! Invariants: a torn lineage's files are never pushed (only the certificate from its last
//! valid observation, and only while `cert::check_time` accepts it); on a stop request no
//! new call starts ([`Executor::halt`]) and the call in flight finishes, bounded by the
//! client's `timeout_secs`; the store is always given back (a lost store is re-opened); a
//! pass whose outcome is not on disk counts as failed until a save succeeds.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;
use tracing::{error, info, warn};

use super::alerts::{PassFacts, Tracker};
use super::hooks::Hooks;
use super::notify::StatusCounts;
use super::observe::{self, PassView};
use super::runner::{LoopSettings, PassCtx, PassReport, Reconciler};
use super::schedule::{PassOutcome, Trigger, Validity};
use super::torn::{Decision, Observed, TornTracker, renewal_in_progress};
use crate::aliyun::cas::cleanup;
use crate::aliyun::cdn::{self as cdn_api, AliyunCdn, CDN_BATCH, ConnectError, batch_limits};
use crate::aliyun::fallback::Start;
use crate::cert::{self, Certificate, Fingerprint};
use crate::config::{self, Product, Settings};
use crate::metrics::{self, Health};
use crate::push::{self, Executor, Limits, Options, Rate, RateLimiter};
use crate::reconcile::{self, Holds, Pass, ReadBack, Summary, ValidLineage};
use crate::source::{Lineage, Scanner};
use crate::state::{Role, StateStore, Verification};
use crate::untrusted;

/// The daemon's reconciler. See the module docs.
pub(crate) struct Service {
    config_path: PathBuf,
    settings: Settings,
    scanner: Scanner,
    /// The APIs for read-backs (confirmation, audit), per product, and the executor (its
    /// targets share the APIs' clients); `None` while no usable credentials are found:
    /// each pass tries again, and a failed pass is retried with backoff.
    conn: Option<Conn>,
    /// Why no usable credentials were had at the last try (connecting, or getting a set
    /// from the provider); logged again only when it changes. `None` once they work.
    connect_error: Option<String>,
    /// The CDN call passes start on (the batch call, unless found retired; see
    /// `aliyun::fallback`), decided at start and after each pass.
    start: Start,
    /// `None` only while a pass holds it.
    store: Option<StateStore>,
    torn: TornTracker<String, Arc<Certificate>>,
    audit: RateLimiter,
    /// Managed domains the drift audit has yet to read back.
    audit_queue: VecDeque<String>,
    /// Bumped by `certrotd run` for every file-change notice: a running audit pauses.
    file_events: Arc<AtomicU64>,
    pending_confirmed: bool,
    /// The last pass's outcome is not on disk: save before anything else.
    unsaved: bool,
    /// Problems logged at the last pass (a problem is logged again only when it changes).
    reported: HashMap<String, String>,
    /// What `/healthz` answers (shared with the main loop and the metrics listener).
    health: Arc<Health>,
    /// The last `reconcile` ran to its end (not stopped, outcome saved).
    complete: bool,
    /// `[notify] command` and what it was told already.
    hooks: Hooks,
    alerts: Tracker,
}

/// The APIs and the executor of the configuration in force.
struct Conn {
    /// Read-backs of `[cdn]` domains (the per-domain CDN target's client).
    cdn: Arc<AliyunCdn>,
    /// Read-backs of `[dcdn]` domains.
    dcdn: Arc<AliyunCdn>,
    executor: Arc<Executor<AliyunCdn>>,
}

/// The daemon's [`Holds`]: torn lineages (a renewal in progress) are held on their last
/// valid certificate; also collects what the scheduler needs (validity windows, whether
/// something was held).
struct TornHolds<'a> {
    torn: &'a mut TornTracker<String, Arc<Certificate>>,
    validity: Vec<Validity>,
    held: bool,
    /// Lineages held this pass.
    held_n: usize,
}

impl Holds for TornHolds<'_> {
    fn sort(
        &mut self,
        lineages: &[Lineage],
        now: OffsetDateTime,
    ) -> (Vec<ValidLineage>, Vec<(String, String)>) {
        let ids: HashSet<&str> = lineages.iter().map(|l| l.id.as_str()).collect();
        self.torn.retain(|id| ids.contains(id.as_str()));
        let (mut valid, mut invalid) = (Vec::new(), Vec::new());
        for l in lineages {
            if let Ok(c) = &l.result {
                self.validity.push(validity(c));
            }
            match self
                .torn
                .observe(&l.id, Observed::of(&l.result, renewal_in_progress))
            {
                Decision::Accept => match reconcile::check(l, now) {
                    Ok(v) => valid.push(v),
                    Err(i) => invalid.push(i),
                },
                Decision::Hold { periods } | Decision::Warn { periods } => {
                    self.held = true;
                    self.held_n += 1;
                    match self.hold(l, periods, now) {
                        Some(Ok(v)) => valid.push(v),
                        Some(Err(i)) => invalid.push(i),
                        None => {}
                    }
                }
            }
        }
        (valid, invalid)
    }
}

impl TornHolds<'_> {
    /// The held lineage's last valid certificate, if it has one (valid or not at `now`).
    fn hold(
        &mut self,
        l: &Lineage,
        periods: u32,
        now: OffsetDateTime,
    ) -> Option<Result<ValidLineage, (String, String)>> {
        let problem = l.result.as_ref().err().map(ToString::to_string);
        let problem = problem.unwrap_or_default();
        if periods == super::torn::WARN_AFTER {
            warn!(lineage = %l.id, periods, %problem, "the lineage's files have disagreed for {periods} quiet periods; still serving its last valid certificate: check the ACME client");
        } else {
            info!(lineage = %l.id, periods, %problem, "renewal in progress (files disagree); keeping the last valid certificate, looking again after a quiet period");
        }
        let c = self.torn.last_valid(&l.id)?;
        self.validity.push(validity(c));
        Some(match cert::check_time(c, now) {
            Ok(()) => Ok(ValidLineage::new(&l.id, c)),
            Err(reason) => Err((l.id.clone(), reason.to_string())),
        })
    }
}

impl Service {
    /// A service on `settings` (loaded from `config_path`) and the locked `store`.
    pub(crate) fn new(config_path: PathBuf, settings: Settings, store: StateStore) -> Service {
        let start = cdn_api::start_for(&settings.aliyun, store.state(), false);
        let mut service = Service {
            start,
            audit: audit_limiter(&settings),
            audit_queue: VecDeque::new(),
            file_events: Arc::new(AtomicU64::new(0)),
            scanner: Scanner::new(),
            conn: None,
            connect_error: None,
            store: Some(store),
            torn: TornTracker::new(),
            pending_confirmed: false,
            unsaved: false,
            reported: HashMap::new(),
            health: Arc::new(Health::default()),
            complete: false,
            hooks: Hooks::new(&settings.notify),
            alerts: Tracker::default(),
            config_path,
            settings,
        };
        service.ensure_connected();
        service
    }

    /// Connects when not connected yet. `false` (the error logged once, on one line, and
    /// shown by the metrics) while it fails.
    fn ensure_connected(&mut self) -> bool {
        if self.conn.is_some() {
            return true;
        }
        match connect(&self.settings) {
            Ok(conn) => {
                self.conn = Some(conn);
                true
            }
            Err(e) => {
                self.credentials_missing(e.kind(), &e.to_string());
                false
            }
        }
    }

    /// Whether a set of credentials can be had now: a provider of temporary ones may not
    /// get one yet (the STS or the metadata service unreachable, the role not attached).
    /// That is no usable credentials too: said once, shown, and tried again at the next pass.
    async fn credentials_usable(&mut self) -> bool {
        let Some(conn) = &self.conn else {
            return false;
        };
        match conn.cdn.credentials().get().await {
            Ok(_) => {
                if self.connect_error.take().is_some() {
                    info!("Alibaba Cloud credentials found; resuming");
                }
                metrics::global().set_credentials(true);
                true
            }
            Err(e) => {
                self.credentials_missing(e.kind(), &e.to_string());
                false
            }
        }
    }

    /// No usable credentials: logged when the reason is new, on one line; the metric is 0.
    fn credentials_missing(&mut self, kind: &'static str, why: &str) {
        let text = untrusted::one_line(why);
        if self.connect_error.as_ref() != Some(&text) {
            error!(
                kind,
                "{text}; certrotd keeps running and tries again with backoff (or at SIGUSR1/SIGHUP)"
            );
            self.connect_error = Some(text);
        }
        metrics::global().set_credentials(false);
    }

    /// The counter to bump for every file-change notice (a running drift audit pauses
    /// when it changes, so file changes are not held up behind it).
    pub(crate) fn file_event_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.file_events)
    }

    /// What `/healthz` answers.
    pub(crate) fn health(&self) -> Arc<Health> {
        Arc::clone(&self.health)
    }

    /// The configuration in force.
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    fn take_store(&mut self) -> Option<StateStore> {
        if let Some(store) = self.store.take() {
            return Some(store);
        }
        // A pass that failed before giving the store back dropped it (and its lock).
        match StateStore::open_as(&self.settings.state.dir, Role::Run) {
            Ok(store) => Some(store),
            Err(e) => {
                error!(kind = e.kind(), "{e}");
                None
            }
        }
    }

    /// After a pass whose outcome could not be saved: saves again. `false` while it still
    /// fails (the pass then counts as failed, so the scheduler retries it with backoff).
    fn save_unsaved(&mut self, store: &StateStore) -> bool {
        if !self.unsaved {
            return true;
        }
        match store.save() {
            Ok(()) => {
                info!("the state file is saved again");
                self.unsaved = false;
                true
            }
            Err(e) => {
                error!(
                    kind = e.kind(),
                    "{e}; the last pass's outcome is still not recorded, retrying with backoff"
                );
                false
            }
        }
    }

    /// Confirms `Pending` deployments by read-back (see [`reconcile::confirm_pending`]).
    async fn confirm_pending(&self, store: &mut StateStore, ctx: &PassCtx) {
        let Some(conn) = &self.conn else { return };
        if !self.settings.aliyun.verify {
            return;
        }
        let rate = self.settings.aliyun.read_requests_per_second;
        for (api, domains) in [
            (&conn.cdn, &self.settings.cdn.domains),
            (&conn.dcdn, &self.settings.dcdn.domains),
        ] {
            reconcile::confirm_pending(&**api, store, domains, rate, || ctx.stop_requested()).await;
        }
    }

    /// Starts a drift audit of every managed domain (at a periodic rescan); an audit still
    /// under way starts over.
    fn queue_audit(&mut self) {
        self.audit_queue = self.settings.all_domains().into();
        info!(
            domains = self.audit_queue.len(),
            "drift audit: reading back what each domain serves"
        );
    }

    /// The drift audit, continued: each queued domain with a verified deployment is read
    /// back at a tenth of the read rate; one serving something else is marked for a new
    /// push. Pauses (keeping the rest queued for the next pass) as soon as a file changes
    /// or a stop is requested, so it never holds up a file-change pass by more than one
    /// read. Returns whether it found drift.
    async fn audit_drift(&mut self, store: &mut StateStore, ctx: &PassCtx) -> bool {
        let Some((cdn, dcdn)) = self
            .conn
            .as_ref()
            .map(|c| (Arc::clone(&c.cdn), Arc::clone(&c.dcdn)))
        else {
            return false;
        };
        let events = self.file_events.load(Ordering::Acquire);
        let mut drift = false;
        while let Some(domain) = self.audit_queue.pop_front() {
            if ctx.stop_requested() || self.file_events.load(Ordering::Acquire) != events {
                self.audit_queue.push_front(domain);
                info!(
                    remaining = self.audit_queue.len(),
                    "drift audit paused for a file change; it resumes after the next pass"
                );
                return drift;
            }
            let Some(fingerprint) = verified_fingerprint(store, &domain) else {
                continue;
            };
            self.audit.acquire().await;
            let one = std::slice::from_ref(&domain);
            let api = if self.settings.dcdn.domains.binary_search(&domain).is_ok() {
                &dcdn
            } else {
                &cdn
            };
            let seen =
                reconcile::read_back(&**api, store, &domain, one, fingerprint, "audit").await;
            drift |= seen == ReadBack::Other;
        }
        info!(drift, "drift audit done");
        drift
    }

    /// Plans, tells the loop, pushes (halting on a stop request) and records.
    async fn reconcile(
        &mut self,
        mut store: StateStore,
        ctx: &PassCtx,
        now: OffsetDateTime,
    ) -> (PassReport, StateStore) {
        let Some(executor) = self.conn.as_ref().map(|c| Arc::clone(&c.executor)) else {
            return (PassReport::default(), store);
        };
        let lineages = self.scanner.scan(&self.settings.watch.paths);
        let domains = self.settings.all_domains();
        let routes = cdn_api::routes(&self.settings, self.start);
        let per_call = cdn_api::per_call();
        let pass = Pass {
            domains: &domains,
            routes: &routes,
            per_call: &per_call,
            batch: cdn_api::batch_for(&self.settings.aliyun, self.start),
            verify: self.settings.aliyun.verify,
            force: false,
        };
        let mut holds = TornHolds {
            torn: &mut self.torn,
            validity: Vec::new(),
            held: false,
            held_n: 0,
        };
        let planned = pass.plan(&lineages, &mut holds, store.state(), now);
        let products: BTreeMap<String, Product> = self.settings.managed().into_iter().collect();
        let view = PassView {
            domains: &domains,
            products: &products,
            verify: pass.verify,
            batch: pass.batch,
            lineages: &lineages,
            valid: &planned.valid.clone(),
            torn: holds.held_n,
        };
        metrics::global().set_pending(planned.summary.planned_domains);
        let targets = planned.plan.targets.clone();
        store.clear_stale_errors(&planned.plan.up_to_date);
        let before = store.state().deployed_fingerprints(pass.verify);
        let mut counts = planned_counts(&planned.summary, &store, &self.settings, now);
        ctx.planned(&counts);
        let mut outcome = PassOutcome {
            validity: holds.validity,
            torn: holds.held,
            failed: false,
        };
        let report = |outcome, status| PassReport { outcome, status };
        if planned.plan.batches.is_empty() || ctx.stop_requested() {
            log_problems(&mut self.reported, &planned.summary);
            observe::record(&view, store.state(), now);
            self.complete = !ctx.stop_requested();
            let facts = PassFacts {
                valid: view.valid,
                targets: &targets,
                before: &before,
                after: &before,
                failed: &[],
                invalid: &planned.summary.invalid,
                now,
            };
            send_alerts(&mut self.alerts, &self.hooks, &facts);
            return (report(outcome, counts), store);
        }
        info!(
            domains = planned.summary.planned_domains,
            calls = planned.summary.planned_calls,
            "pushing"
        );
        if let Some(cas) = self.conn.as_ref().and_then(|c| c.cdn.cas()) {
            cas.remember(&store.state().cas);
        }
        let no_progress = Box::new(|_| {});
        let passed = pass
            .push(planned, &executor, store, no_progress, ctx.stopped())
            .await;
        let (summary, mut store) = (passed.summary, passed.store);
        self.settle_fallback(&mut store, &summary);
        for (domain, why) in &summary.failed {
            let kind = failure_kind(&store, domain);
            metrics::global().push_failed(kind);
            // The error that stopped the run was logged once already (by the executor).
            let why = match summary.stopped.as_deref() {
                Some(s) if why == s => "refused with the error logged above",
                Some(s) if why.strip_prefix("not attempted: ") == Some(s) => {
                    "not sent: the run stopped (see above)"
                }
                _ => why,
            };
            warn!(domain = %domain, kind, "push failed: {}", untrusted::one_line(why));
        }
        if let Some(domains) = &summary.unrecorded {
            error!(
                kind = "state-write",
                domains = domains.len(),
                unrecorded = %domains.join(","),
                "deployed but not recorded: the state file could not be saved; retrying the save with backoff"
            );
            self.unsaved = true;
        }
        log_problems(&mut self.reported, &summary);
        outcome.failed =
            !summary.failed.is_empty() || summary.stopped.is_some() || summary.unrecorded.is_some();
        counts = final_counts(&summary, &store, &self.settings, now);
        metrics::global().set_pending(counts.pending);
        observe::record(&view, store.state(), now);
        self.complete = summary.stopped.is_none() && summary.unrecorded.is_none();
        let after = store.state().deployed_fingerprints(pass.verify);
        let facts = PassFacts {
            valid: view.valid,
            targets: &targets,
            before: &before,
            after: &after,
            failed: &summary.failed,
            invalid: &summary.invalid,
            now,
        };
        send_alerts(&mut self.alerts, &self.hooks, &facts);
        (report(outcome, counts), store)
    }

    /// `[cas] delete_superseded`: after a clean pass, the CAS cleanup (see
    /// `aliyun::cas::cleanup`), CDN and DCDN domains each read back through its own
    /// product; what it did is logged there, its problems here.
    async fn cas_cleanup(&self, store: &mut StateStore) {
        let Some(conn) = &self.conn else { return };
        let Some(cas) = conn.cdn.cas() else {
            return;
        };
        if !self.settings.cas.delete_superseded {
            return;
        }
        let grace = self.settings.cas.delete_after;
        let products: [(&AliyunCdn, &[String]); 2] = [
            (&*conn.cdn, &self.settings.cdn.domains),
            (&*conn.dcdn, &self.settings.dcdn.domains),
        ];
        let now = OffsetDateTime::now_utc();
        let rate = self.settings.aliyun.read_requests_per_second;
        let done = cleanup::run(cas, &products, store, now, grace, rate).await;
        for e in &done.errors {
            warn!(kind = "cas-cleanup", "{e}");
        }
        for (id, name, why) in &done.kept {
            info!(cert_id = id, %name, "kept in CAS: {why}");
        }
    }
}

impl Service {
    /// Records the batch call's fate after a pass (see `aliyun::fallback`); once it is found
    /// gone, later passes start on the per-domain call.
    fn settle_fallback(&mut self, store: &mut StateStore, summary: &Summary) {
        let gone = summary.gone.contains(&"cdn-batch");
        let batch_worked = summary.deployed_by.get(&CDN_BATCH).is_some_and(|n| *n > 0);
        cdn_api::settle_fallback(store, &self.settings.aliyun, self.start, gone, batch_worked);
        if gone {
            self.start = Start::PerDomain;
        }
    }
}

impl Service {
    /// Records in the state file that a pass ran to its end (with any stale error cleared).
    fn record_pass(&mut self) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        store.note_pass("run", OffsetDateTime::now_utc());
        if let Err(e) = store.save() {
            error!(kind = e.kind(), "{e}");
            self.unsaved = true;
            self.complete = false;
        }
    }

    /// The pass: see the module docs. Sets `self.complete` (ran to its end, saved).
    async fn pass_inner(&mut self, trigger: &Trigger, ctx: &PassCtx) -> PassReport {
        self.complete = false;
        if !self.ensure_connected() || !self.credentials_usable().await {
            return PassReport {
                outcome: PassOutcome {
                    failed: true,
                    ..PassOutcome::default()
                },
                status: StatusCounts {
                    no_credentials: true,
                    ..StatusCounts::default()
                },
            };
        }
        let Some(mut store) = self.take_store() else {
            return PassReport {
                outcome: PassOutcome {
                    failed: true,
                    ..PassOutcome::default()
                },
                status: StatusCounts::default(),
            };
        };
        let saved = self.save_unsaved(&store);
        if !self.pending_confirmed {
            self.confirm_pending(&mut store, ctx).await;
            self.pending_confirmed = true;
        }
        if trigger.is_rescan() {
            self.queue_audit();
        }
        // File changes first; then the audit (started at a rescan, or paused by a file
        // change); then, if it found drift, the push that repairs it.
        let now = OffsetDateTime::now_utc();
        let (mut report, mut store) = self.reconcile(store, ctx, now).await;
        if !self.audit_queue.is_empty() && self.audit_drift(&mut store, ctx).await {
            let now = OffsetDateTime::now_utc();
            (report, store) = self.reconcile(store, ctx, now).await;
        }
        let clean = saved && !report.outcome.failed && !report.outcome.torn;
        if clean && !ctx.stop_requested() {
            self.cas_cleanup(&mut store).await;
        }
        self.store = Some(store);
        report.outcome.failed |= !saved;
        self.complete &= saved && !self.unsaved;
        if self.complete {
            self.record_pass();
        }
        // After the pass's last save (`record_pass`), which would reopen the connection.
        if let Some(store) = self.store.as_ref() {
            store.release_memory();
        }
        release_freed_memory();
        report
    }
}

impl Reconciler for Service {
    async fn pass(&mut self, trigger: &Trigger, ctx: &PassCtx) -> PassReport {
        let started = std::time::Instant::now();
        let report = self.pass_inner(trigger, ctx).await;
        let end = OffsetDateTime::now_utc();
        metrics::global().pass_finished(started.elapsed(), self.complete, end);
        let why = if ctx.stop_requested() {
            "stopping"
        } else if self.connect_error.is_some() {
            "no usable credentials"
        } else {
            "see the log"
        };
        self.health
            .pass_ended(if self.complete { Ok(()) } else { Err(why) });
        report
    }

    fn reload(&mut self) -> Option<LoopSettings> {
        let loaded = match config::load(&self.config_path) {
            Ok(loaded) => loaded,
            Err(e) => {
                for problem in e.problems() {
                    error!(kind = e.kind(), "configuration: {problem}");
                }
                return None;
            }
        };
        for w in &loaded.warnings {
            warn!("configuration: {w}");
        }
        let mut new = loaded.settings;
        if new.state.dir != self.settings.state.dir {
            warn!(
                "[state] dir changed; certrotd keeps using {} until it is restarted",
                self.settings.state.dir.display()
            );
            new.state.dir = self.settings.state.dir.clone();
        }
        if new.aliyun != self.settings.aliyun
            || new.dcdn.endpoint != self.settings.dcdn.endpoint
            || new.cas != self.settings.cas
        {
            match connect(&new) {
                Ok(conn) => {
                    self.conn = Some(conn);
                    self.connect_error = None;
                    metrics::global().set_credentials(true);
                    if let Some(store) = &self.store {
                        self.start = cdn_api::start_for(&new.aliyun, store.state(), false);
                    }
                    self.audit = audit_limiter(&new);
                }
                // Not connected yet anyway: take the new settings, connect at the next pass.
                Err(_) if self.conn.is_none() => self.audit = audit_limiter(&new),
                Err(e) => {
                    error!(kind = e.kind(), "{}", untrusted::one_line(&e.to_string()));
                    return None;
                }
            }
        }
        if new.notify != *self.hooks.settings() {
            self.hooks = Hooks::new(&new.notify);
        }
        self.settings = new;
        // The managed domains may have changed: the next rescan audits the new list.
        self.audit_queue.clear();
        Some(LoopSettings::from(&self.settings.watch))
    }

    async fn finish(&mut self) {
        self.hooks.finish().await;
        if let Some(store) = &self.store
            && let Err(e) = store.save()
        {
            error!(kind = e.kind(), "{e}");
        }
    }
}

/// Caps glibc's malloc at one arena and fixes its mmap threshold at 64 KiB. By default every thread that allocates (tokio
/// workers, blocking threads, the scanner's parse threads) may get its own arena, and each
/// keeps the pages a cold pass touched; the daemon is idle almost all the time, so its
/// footprint matters more than allocation contention. Call before any thread is started.
pub(crate) fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    const MMAP_THRESHOLD: libc::c_int = 64 * 1024;
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc tunable; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        // A fixed threshold (setting it turns off glibc's dynamic one, which rises to the
        // size of the largest block freed, e.g. a state-file encoding): big temporary
        // buffers then come from their own mappings, returned at once, instead of
        // growing and fragmenting the heap between long-lived records.
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Gives the memory freed by a pass back to the system: glibc keeps freed pages (the
/// cold scan's read buffers, the HTTP and JSON buffers of a thousand calls and state
/// saves) mapped otherwise, and an idle daemon would hold a pass's peak for good.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Logs problems that are new or changed since the last pass.
fn log_problems(reported: &mut HashMap<String, String>, summary: &Summary) {
    let mut now = HashMap::new();
    for (id, why) in &summary.invalid {
        if reported.get(id) != Some(why) {
            warn!(lineage = %id, "invalid lineage: {why}");
        }
        now.insert(id.clone(), why.clone());
    }
    for (domain, why) in &summary.uncovered {
        if reported.get(domain) != Some(why) {
            warn!(domain = %domain, "no valid certificate covers this domain: {why}");
        }
        now.insert(domain.clone(), why.clone());
    }
    *reported = now;
}

/// The CDN and DCDN read APIs and the executor for these settings (one client per
/// product, shared; one CAS store for all targets); the batch call's writes spread
/// ([`spread_limits`]).
fn connect(settings: &Settings) -> Result<Conn, ConnectError> {
    let [batch, per_domain, dcdn] = cdn_api::connect_all(settings)?;
    let (cdn, dcdn_api) = (Arc::new(per_domain.clone()), Arc::new(dcdn.clone()));
    let batch = batch.with_limits(spread_limits(settings));
    let a = &settings.aliyun;
    let options = Options::new(a.max_attempts, a.verify);
    Ok(Conn {
        cdn,
        dcdn: dcdn_api,
        executor: Arc::new(cdn_api::executor([batch, per_domain, dcdn], options)),
    })
}

/// The batch call's limits, with write starts spread evenly (one every `window / rate`)
/// instead of a burst of `rate` at the start of each window: the same throughput and never
/// more than `rate` starts in any rolling window, but against a fast API at most one call is
/// in flight at a time, so a process killed at any instant loses the record of at most one
/// accepted call (re-pushed at the next start: one batch per kill). Kept as bursts when the
/// read rate is lower than the write rate (the two limiters share one window). Limits that
/// are spread already (one write a window: the per-domain call's) are kept as they are.
fn spread_limits(settings: &Settings) -> Limits {
    let mut limits = batch_limits(&settings.aliyun);
    let (w, r) = (limits.writes.calls.max(1), limits.reads.calls.max(1));
    if w > 1 && r >= w {
        let per = limits.writes.per / w;
        limits.writes = Rate { calls: 1, per };
        limits.reads = Rate { calls: r / w, per };
    }
    limits
}

/// Sends a pass's notifications (never waits for them).
fn send_alerts(tracker: &mut Tracker, hooks: &Hooks, facts: &PassFacts<'_>) {
    for alert in tracker.alerts(facts) {
        hooks.send(alert);
    }
}

/// The kind recorded for `domain`'s last error (a metric label), `push` when none is.
fn failure_kind<'s>(store: &'s StateStore, domain: &str) -> &'s str {
    store
        .state()
        .domains
        .get(domain)
        .and_then(|d| d.last_error.as_ref())
        .map_or("push", |e| e.kind.as_str())
}

/// The fingerprint `domain`'s verified deployment records, if it has one.
fn verified_fingerprint(store: &StateStore, domain: &str) -> Option<Fingerprint> {
    let dep = store.state().domains.get(domain)?.deployed.as_ref()?;
    (dep.verification == Verification::Verified).then_some(dep.fingerprint)
}

/// The drift audit reads at a tenth of `read_requests_per_second` (at least 1/s), over the
/// same guarded window as every other limiter ([`push::RATE_WINDOW`]), so that arrival
/// jitter at the server never puts one read too many into one of its seconds.
fn audit_limiter(settings: &Settings) -> RateLimiter {
    let rate = (settings.aliyun.read_requests_per_second / 10).max(1);
    RateLimiter::with_window(rate, push::RATE_WINDOW)
}

fn validity(c: &Certificate) -> Validity {
    Validity {
        not_before: c.not_before,
        not_after: c.not_after,
    }
}

fn planned_counts(
    summary: &Summary,
    store: &StateStore,
    settings: &Settings,
    now: OffsetDateTime,
) -> StatusCounts {
    StatusCounts {
        up_to_date: summary.up_to_date,
        pending: summary.planned_domains,
        failed: 0,
        uncovered: summary.uncovered.len(),
        next_expiry: next_expiry(store, settings, now),
        no_credentials: false,
        dcdn: settings.dcdn.domains.len(),
    }
}

fn final_counts(
    summary: &Summary,
    store: &StateStore,
    settings: &Settings,
    now: OffsetDateTime,
) -> StatusCounts {
    let failed = summary.failed.len();
    // With read-back on, only confirmed deployments count as up to date.
    let done = if settings.aliyun.verify {
        summary.verified
    } else {
        summary.deployed
    };
    StatusCounts {
        up_to_date: summary.up_to_date + done,
        pending: summary.planned_domains.saturating_sub(done + failed),
        failed,
        uncovered: summary.uncovered.len(),
        next_expiry: next_expiry(store, settings, now),
        no_credentials: false,
        dcdn: settings.dcdn.domains.len(),
    }
}

/// Time to the earliest notAfter among the managed domains' recorded deployments.
fn next_expiry(
    store: &StateStore,
    settings: &Settings,
    now: OffsetDateTime,
) -> Option<time::Duration> {
    settings
        .all_domains()
        .iter()
        .filter_map(|d| store.state().domains.get(d)?.deployed.as_ref())
        .map(|d| d.not_after)
        .min()
        .map(|t| t - now)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn settings(text: &str) -> Settings {
        let dir = Path::new("/etc/certrotd");
        crate::config::parse(&dir.join("certrotd.toml"), text, dir)
            .expect("a valid config")
            .settings
    }

    #[test]
    fn batch_writes_are_spread_whatever_the_api() {
        let batch = spread_limits(&settings(""));
        let per = push::RATE_WINDOW / 10;
        assert_eq!(batch.writes, Rate { calls: 1, per });
        assert_eq!(batch.reads, Rate { calls: 5, per });
        assert_eq!(batch.domains_per_call, 10);
        // The per-domain lanes keep their own (already spread) limits; the batch lane,
        // unused with api = "per-domain", is spread the same way.
        let s = settings("[aliyun]\napi = \"per-domain\"\n");
        assert_eq!(spread_limits(&s), batch);
    }
}
