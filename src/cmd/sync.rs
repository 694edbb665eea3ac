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

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use time::OffsetDateTime;

use super::logging::PROGRESS_SHOWN;
use super::{CmdResult, Exit};
use crate::aliyun::cdn::{AliyunCdn, ConnectError};
use crate::config::{self, Settings};
use crate::push::{Executor, Options};
use crate::reconcile::{self, NoHolds, Pass};
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
}

/// Writes `summary` as text (`text`) or, with `--json`, as JSON; returns its exit code.
fn report(
    summary: &reconcile::Summary,
    args: &SyncArgs,
    text: &str,
    out: &mut dyn Write,
) -> Result<Exit, SyncError> {
    let exit: Exit = summary.verdict().into();
    if args.json {
        let json = JsonReport {
            dry_run: args.dry_run,
            exit_code: exit.code(),
            summary,
        };
        let mut bytes = serde_json::to_vec_pretty(&json).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        out.write_all(&bytes)?;
    } else {
        out.write_all(text.as_bytes())?;
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

/// The pass these settings ask for.
fn pass(settings: &Settings, force: bool) -> Pass<'_> {
    Pass {
        domains: &settings.cdn.domains,
        batch: settings.aliyun.domains_per_call(),
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
    let pass = pass(settings, args.force);
    if args.dry_run {
        return dry_run(settings, args, &pass, &lineages, now, out);
    }
    let Some(mut store) = super::handoff::open_or_hand_off(&settings.state.dir, args.force, out)?
    else {
        return Ok(Exit::Ok);
    };
    let aliyun = &settings.aliyun;
    let target = Arc::new(AliyunCdn::connect(aliyun)?);
    if aliyun.verify {
        // A run killed between a call and its read-back left it Pending: confirm it
        // rather than push the same batch again.
        let (rate, domains) = (aliyun.read_requests_per_second, &settings.cdn.domains);
        reconcile::confirm_pending(&*target, &mut store, domains, rate, || false).await;
    }
    let executor = Executor::new(target, Options::new(aliyun.max_attempts, aliyun.verify));
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
    let mut store = passed.store;
    if passed.summary.unrecorded.is_none() && passed.summary.stopped.is_none() {
        store.note_pass("sync", OffsetDateTime::now_utc());
        if let Err(e) = store.save() {
            eprintln!("certrotd: {e}");
        }
    }
    report(&passed.summary, args, &passed.summary.render(), out)
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
    args: &SyncArgs,
    pass: &Pass<'_>,
    lineages: &[Lineage],
    now: OffsetDateTime,
    out: &mut dyn Write,
) -> Result<Exit, SyncError> {
    let state = state::load(&settings.state.dir)?;
    let planned = pass.plan(lineages, &mut NoHolds, &state, now);
    let described = planned
        .plan
        .describe(&reconcile::plan_lineages(&planned.valid));
    let text = format!(
        "dry run: nothing is sent\n{described}{}",
        planned.summary.render_reasons()
    );
    report(&planned.summary, args, &text, out)
}
