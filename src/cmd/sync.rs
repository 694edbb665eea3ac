//! `certrotd sync [--dry-run] [--force]`: one reconciliation pass (`reconcile::Pass`),
//! waiting until every call, retry and read-back has finished. Suitable as a certbot deploy
//! hook. Like the daemon's first pass, it first confirms by read-back the deployments a
//! killed run left `Pending` (`reconcile::confirm_pending`), so they are not pushed again.
//!
//! Exit codes: 0 every managed domain serves its best valid certificate; 1 a push failed for
//! good, a read-back did not confirm, or a managed domain has no valid certificate (each
//! named with the reason); 74 the pass's outcome could not be saved to the state file (e.g.
//! a full disk): the report names the domains deployed but not recorded, which the next run
//! would push again; 75 another certrotd holds the state lock; 78 bad configuration.
//! A `certrotd run` holding the lock gets the work instead (`handoff`): exit 0.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::Ordering;

use time::OffsetDateTime;

use super::logging::PROGRESS_SHOWN;
use super::{CmdResult, Exit};
use crate::aliyun::cas::cleanup;
use crate::aliyun::cdn::{self, AliyunCdn, CDN_BATCH, CDN_PER_DOMAIN, ConnectError, DCDN};
use crate::aliyun::fallback::Start;
use crate::config::{self, Product, Settings, Store};
use crate::push::{Options, TargetIndex};
use crate::reconcile::{self, NoHolds, Pass, Verdict};
use crate::source::{Lineage, Scanner};
use crate::state::{self, StateError};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct SyncArgs {
    /// Print the plan; make no write call
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Treat every covered domain as out of date
    #[arg(long)]
    pub(crate) force: bool,
    /// Print the outcome as JSON (the summary's fields and the verdict) instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

/// The `--json` report: the summary and the exit code it means.
#[derive(serde::Serialize)]
struct JsonReport<'a> {
    dry_run: bool,
    exit_code: u8,
    #[serde(flatten)]
    summary: &'a reconcile::Summary,
    /// The CAS cleanup's outcome (`[cas] delete_superseded`), when it ran (or, in a dry
    /// run, what it would delete).
    #[serde(skip_serializing_if = "Option::is_none")]
    cas_cleanup: Option<&'a cleanup::Cleanup>,
}

/// Writes `summary` as text (`text`, then the CAS cleanup's lines) or, with `--json`, as
/// JSON; returns its exit code. `cleanup`: the CAS cleanup and whether it was a dry run
/// (a real one's errors make the exit 1).
fn report(
    summary: &reconcile::Summary,
    args: &SyncArgs,
    text: &str,
    cleanup: Option<(&cleanup::Cleanup, bool)>,
    out: &mut dyn Write,
) -> Result<Exit, SyncError> {
    let mut exit: Exit = summary.verdict().into();
    if cleanup.is_some_and(|(c, dry)| !dry && !c.errors.is_empty()) {
        exit = Exit::Problems;
    }
    if args.json {
        let json = JsonReport {
            dry_run: args.dry_run,
            exit_code: exit.code(),
            summary,
            cas_cleanup: cleanup.map(|(c, _)| c),
        };
        let mut bytes = serde_json::to_vec_pretty(&json).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        out.write_all(&bytes)?;
    } else {
        out.write_all(text.as_bytes())?;
        if let Some((c, dry)) = cleanup {
            out.write_all(c.render(dry).as_bytes())?;
        }
    }
    Ok(exit)
}

/// Why a pass could not run at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}

impl SyncError {
    /// A short label for logs and metrics.
    // Part of the label set (ARCHITECTURE.md) like every edge error's `kind()`, but nothing
    // reads it yet: `run` hands this error to main.rs, which prints it whole.
    #[expect(
        dead_code,
        reason = "kept for the label set; the error reaches main.rs via anyhow"
    )]
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            SyncError::Connect(e) => e.kind(),
            SyncError::State(e) => e.kind(),
            SyncError::Output(_) => "output",
        }
    }

    /// The exit code this error means.
    pub(crate) fn exit(&self) -> Exit {
        match self {
            // Another certrotd (the daemon, or a sync) holds the state lock.
            SyncError::State(StateError::Locked { .. }) => Exit::Locked,
            _ => Exit::Problems,
        }
    }
}

pub fn run(config: &Path, args: &SyncArgs) -> CmdResult {
    let Some(settings) = load_settings(config) else {
        return Ok(Exit::Config);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let progress = std::io::stderr().is_terminal();
    let mut out = std::io::stdout();
    match runtime.block_on(sync(&settings, args, &mut out, progress)) {
        Ok(exit) => Ok(exit),
        Err(e) => {
            // One line, naming what to fix (a credentials error lists the sources tried).
            eprintln!("certrotd: {}", crate::untrusted::one_line(&e.to_string()));
            Ok(e.exit())
        }
    }
}

/// Loads the configuration, printing its warnings, or its errors (then `None`: exit 78).
pub(crate) fn load_settings(path: &Path) -> Option<Settings> {
    match config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("certrotd: warning: {w}");
            }
            Some(loaded.settings)
        }
        Err(e) => {
            eprintln!("certrotd: {e}");
            None
        }
    }
}

/// The pass these settings ask for: every managed domain, each routed to its product's
/// target (`routes`, from [`cdn::routes`]).
fn pass<'a>(
    settings: &'a Settings,
    domains: &'a [String],
    routes: &'a BTreeMap<String, TargetIndex>,
    per_call: &'a BTreeMap<TargetIndex, usize>,
    start: Start,
    force: bool,
) -> Pass<'a> {
    Pass {
        domains,
        routes,
        per_call,
        batch: cdn::batch_for(&settings.aliyun, start),
        verify: settings.aliyun.verify,
        force,
    }
}

/// One pass as `certrotd sync` runs it, writing its report to `out`.
pub(crate) async fn sync(
    settings: &Settings,
    args: &SyncArgs,
    out: &mut dyn Write,
    progress: bool,
) -> Result<Exit, SyncError> {
    let now = OffsetDateTime::now_utc();
    let lineages = Scanner::new().scan(&settings.watch.paths);
    let domains = settings.all_domains();
    if args.dry_run {
        return dry_run(settings, &domains, args, &lineages, now, out);
    }
    let Some(mut store) = super::handoff::open_or_hand_off(&settings.state.dir, args.force, out)?
    else {
        return Ok(Exit::Ok);
    };
    let aliyun = &settings.aliyun;
    let start = cdn::start_for(aliyun, store.state(), args.force);
    let routes = cdn::routes(settings, start);
    let per_call = cdn::per_call();
    let pass = pass(settings, &domains, &routes, &per_call, start, args.force);
    let targets = cdn::connect_all(settings)?;
    if let Some(cas) = targets[CDN_BATCH].cas() {
        cas.remember(&store.state().cas);
    }
    // Read-backs after the pass (the CAS cleanup): each product through its own target.
    let readers = [targets[CDN_PER_DOMAIN].clone(), targets[DCDN].clone()];
    if aliyun.verify {
        // A run killed between a call and its read-back left it Pending: confirm it
        // rather than push the same batch again.
        let rate = aliyun.read_requests_per_second;
        for (target, domains) in [
            (&targets[CDN_PER_DOMAIN], &settings.cdn.domains),
            (&targets[DCDN], &settings.dcdn.domains),
        ] {
            reconcile::confirm_pending(target, &mut store, domains, rate, || false).await;
        }
    }
    let executor = cdn::executor(targets, Options::new(aliyun.max_attempts, aliyun.verify));
    let planned = pass.plan(&lineages, &mut NoHolds, store.state(), now);
    store.clear_stale_errors(&planned.plan.up_to_date);
    // The plan holds the lineages it uses; the scan's copies are not needed again.
    drop(lineages);
    let total = planned.plan.pending();
    let never = std::future::pending();
    let passed = pass
        .push(
            planned,
            &executor,
            store,
            progress_line(progress, total),
            never,
        )
        .await;
    if PROGRESS_SHOWN.swap(false, Ordering::AcqRel) {
        eprintln!();
    }
    let summary = passed.summary;
    let mut store = passed.store;
    let gone = summary.gone.contains(&"cdn-batch");
    let batch_worked = summary.deployed_by.get(&CDN_BATCH).is_some_and(|n| *n > 0);
    cdn::settle_fallback(&mut store, aliyun, start, gone, batch_worked);
    if start == Start::PerDomain && aliyun.api == config::Api::Batch {
        tracing::info!(
            "the batch call was found retired earlier (see the state store); using the per-domain call"
        );
    }
    if summary.unrecorded.is_none() && summary.stopped.is_none() {
        store.note_pass("sync", OffsetDateTime::now_utc());
        if let Err(e) = store.save() {
            eprintln!("certrotd: {e}");
        }
    }
    let cleanup = if summary.verdict() == Verdict::Clean && settings.cas.delete_superseded {
        cleanup_cas(settings, &readers, &mut store).await
    } else {
        None
    };
    let cleanup = cleanup.as_ref().map(|c| (c, false));
    report(&summary, args, &summary.render(), cleanup, out)
}

/// The CAS cleanup after a clean pass (`[cas] delete_superseded`), reading back CDN and
/// DCDN domains each through its own product (`readers`: the CDN and DCDN targets, which
/// share the one CAS store); `None` without a CAS store.
async fn cleanup_cas(
    settings: &Settings,
    readers: &[AliyunCdn; 2],
    store: &mut state::StateStore,
) -> Option<cleanup::Cleanup> {
    let cas = readers[0].cas()?;
    let (now, grace) = (OffsetDateTime::now_utc(), settings.cas.delete_after);
    let products: [(&AliyunCdn, &[String]); 2] = [
        (&readers[0], &settings.cdn.domains),
        (&readers[1], &settings.dcdn.domains),
    ];
    let rate = settings.aliyun.read_requests_per_second;
    Some(cleanup::run(cas, &products, store, now, grace, rate).await)
}

/// Which product (and call) each planned domain goes to, one line per product.
fn write_products(
    settings: &Settings,
    start: Start,
    plan: &crate::plan::Plan,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let products: BTreeMap<String, Product> = settings.managed().into_iter().collect();
    let mut by: BTreeMap<Product, Vec<&str>> = BTreeMap::new();
    for batch in &plan.batches {
        for d in &batch.domains {
            let p = products.get(d).copied().unwrap_or(Product::Cdn);
            by.entry(p).or_default().push(d);
        }
    }
    for (product, domains) in by {
        let call = match (product, start) {
            (Product::Cdn, Start::Batch) => "BatchSetCdnDomainServerCertificate",
            (Product::Cdn, Start::PerDomain) => "SetCdnDomainSSLCertificate",
            (Product::Dcdn, _) => "SetDcdnDomainSSLCertificate",
        };
        writeln!(
            out,
            "product {}: {} domain(s) via {call}: {}",
            product.label(),
            domains.len(),
            domains.join(", ")
        )?;
    }
    Ok(())
}

/// A `\r`-rewritten progress line on stderr when it is a terminal.
fn progress_line(enabled: bool, total: usize) -> Box<dyn FnMut(usize) + Send> {
    Box::new(move |done| {
        if enabled {
            eprint!("\r\x1b[Kcertrotd: {done}/{total} domains deployed");
            PROGRESS_SHOWN.store(true, Ordering::Release);
        }
    })
}

fn dry_run(
    settings: &Settings,
    domains: &[String],
    args: &SyncArgs,
    lineages: &[Lineage],
    now: OffsetDateTime,
    out: &mut dyn Write,
) -> Result<Exit, SyncError> {
    let state = state::load(&settings.state.dir)?;
    let force = args.force;
    let start = cdn::start_for(&settings.aliyun, &state, force);
    let routes = cdn::routes(settings, start);
    let per_call = cdn::per_call();
    let pass = pass(settings, domains, &routes, &per_call, start, force);
    let planned = pass.plan(lineages, &mut NoHolds, &state, now);
    let mut text = b"dry run: nothing is sent\n".to_vec();
    write_products(settings, start, &planned.plan, &mut text)?;
    let described = planned
        .plan
        .describe(&reconcile::plan_lineages(&planned.valid));
    let text = format!(
        "{}{described}{}",
        String::from_utf8_lossy(&text),
        planned.summary.render_reasons()
    );
    let cleanup = (settings.cas.store == Store::Cas && settings.cas.delete_superseded).then(|| {
        let (managed, grace) = (settings.all_domains(), settings.cas.delete_after);
        cleanup::dry_run(&state, &managed, now, grace)
    });
    report(
        &planned.summary,
        args,
        &text,
        cleanup.as_ref().map(|c| (c, true)),
        out,
    )
}
