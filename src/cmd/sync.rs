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

use time::OffsetDateTime;

use super::{CmdResult, Exit};
use crate::aliyun::cas::cleanup;
use crate::aliyun::cdn::{AliyunCdn, ConnectError};
use crate::config::Store;
use crate::config::{self, Settings};
use crate::push::{Executor, Options};
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
            eprintln!("certrotd: {e}");
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
        return dry_run(settings, &pass, &lineages, now, out);
    }
    let Some(mut store) = super::handoff::open_or_hand_off(&settings.state.dir, args.force, out)?
    else {
        return Ok(Exit::Ok);
    };
    let aliyun = &settings.aliyun;
    let target = Arc::new(AliyunCdn::connect_with(aliyun, &settings.cas)?);
    if let Some(cas) = target.cas() {
        cas.remember(&store.state().cas);
    }
    if aliyun.verify {
        // A run killed between a call and its read-back left it Pending: confirm it
        // rather than push the same batch again.
        let (rate, domains) = (aliyun.read_requests_per_second, &settings.cdn.domains);
        reconcile::confirm_pending(&*target, &mut store, domains, rate, || false).await;
    }
    let executor = Executor::new(
        Arc::clone(&target),
        Options::new(aliyun.max_attempts, aliyun.verify),
    );
    let planned = pass.plan(&lineages, &mut NoHolds, store.state(), now);
    let total = planned.plan.pending();
    let never = std::future::pending();
    let mut passed = pass
        .push(
            planned,
            &executor,
            store,
            progress_line(progress, total),
            never,
        )
        .await;
    if progress && total > 0 {
        eprintln!();
    }
    out.write_all(passed.summary.render().as_bytes())?;
    let verdict = passed.summary.verdict();
    if let Some(cas) = target.cas()
        && settings.cas.delete_superseded
        && verdict == Verdict::Clean
    {
        let managed = &settings.cdn.domains;
        let (now, grace) = (OffsetDateTime::now_utc(), settings.cas.delete_after);
        let done = cleanup::run(
            cas,
            &[&*target],
            managed,
            &mut passed.store,
            now,
            grace,
            aliyun.read_requests_per_second,
        )
        .await;
        out.write_all(done.render(false).as_bytes())?;
        if !done.errors.is_empty() {
            return Ok(Exit::Problems);
        }
    }
    Ok(verdict.into())
}

/// A `\r`-rewritten progress line on stderr when it is a terminal.
fn progress_line(enabled: bool, total: usize) -> Box<dyn FnMut(usize) + Send> {
    Box::new(move |done| {
        if enabled {
            eprint!("\rcertrotd: {done}/{total} domains deployed");
        }
    })
}

fn dry_run(
    settings: &Settings,
    pass: &Pass<'_>,
    lineages: &[Lineage],
    now: OffsetDateTime,
    out: &mut dyn Write,
) -> Result<Exit, SyncError> {
    let state = state::load(&settings.state.dir)?;
    let planned = pass.plan(lineages, &mut NoHolds, &state, now);
    writeln!(out, "dry run: nothing is sent")?;
    let described = planned
        .plan
        .describe(&reconcile::plan_lineages(&planned.valid));
    out.write_all(described.as_bytes())?;
    out.write_all(planned.summary.render().as_bytes())?;
    if settings.cas.store == Store::Cas && settings.cas.delete_superseded {
        let (managed, grace) = (&settings.cdn.domains, settings.cas.delete_after);
        let listed = cleanup::dry_run(&state, managed, now, grace);
        out.write_all(listed.render(true).as_bytes())?;
    }
    Ok(planned.summary.verdict().into())
}
