//! `certrotd sync [--dry-run] [--force]`: one reconciliation pass, waiting until every call,
//! retry and read-back has finished. Suitable as a certbot deploy hook. Like the daemon's
//! first pass, it first confirms by read-back the deployments a killed run left `Pending`
//! (`reconcile::confirm_pending`), so they are not pushed again.
//!
//! Exit codes: 0 every managed domain serves its best valid certificate; 1 a push failed for
//! good, a read-back did not confirm, or a managed domain has no valid certificate (each
//! named with the reason); 75 another certrotd holds the state lock; 78 bad configuration.
//! A `certrotd run` holding the lock gets the work instead (`handoff`): exit 0.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use time::OffsetDateTime;

use super::{CmdResult, Exit};
use crate::aliyun::client::{Client, ClientError};
use crate::aliyun::credentials::{self, CredentialsError, Environment};
use crate::config::{self, Settings};
use crate::push::{AliyunCdn, Executor, Options};
use crate::reconcile::{self, PlanParams, Summary, ValidLineage};
use crate::source::{Lineage, Scanner};
use crate::state::{self, State, StateError, StateStore};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct SyncArgs {
    /// Print the plan; make no write call
    #[arg(long)]
    pub dry_run: bool,
    /// Treat every covered domain as out of date
    #[arg(long)]
    pub force: bool,
}

/// Why a pass could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}

impl SyncError {
    pub fn kind(&self) -> &'static str {
        match self {
            SyncError::Credentials(_) => "credentials",
            SyncError::Client(_) => "client",
            SyncError::State(e) => e.kind(),
            SyncError::Output(_) => "output",
        }
    }

    /// The exit code this error means.
    pub fn exit(&self) -> Exit {
        match self {
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
pub fn load_settings(path: &Path) -> Option<Settings> {
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

/// The credential chain and the API client for these settings (the daemon shares one
/// between its executor and its drift audit).
pub fn api(settings: &Settings) -> Result<Arc<AliyunCdn>, SyncError> {
    let creds = credentials::load(&settings.aliyun, &Environment::from_process())?;
    tracing::info!(source = creds.source(), "using Alibaba Cloud credentials");
    let client = Client::new(&settings.aliyun, creds)?;
    Ok(Arc::new(AliyunCdn::new(
        client,
        settings.aliyun.region.clone(),
    )))
}

/// One pass as `certrotd sync` runs it, writing its report to `out`.
pub async fn sync(
    settings: &Settings,
    args: &SyncArgs,
    out: &mut dyn Write,
    progress: bool,
) -> Result<Exit, SyncError> {
    let now = OffsetDateTime::now_utc();
    let lineages = Scanner::new().scan(&settings.watch.paths);
    let (valid, invalid) = reconcile::split(&lineages, now);
    let pass = Pass {
        settings,
        force: args.force,
        lineages: &lineages,
        valid: &valid,
        now,
    };
    if args.dry_run {
        return dry_run(&pass, invalid, out);
    }
    let Some(mut store) = super::handoff::open_or_hand_off(&settings.state.dir, args.force, out)?
    else {
        return Ok(Exit::Ok);
    };
    let api = api(settings)?;
    if settings.aliyun.verify {
        // A run killed between a call and its read-back left it Pending: confirm it
        // rather than push the same batch again.
        let rate = settings.aliyun.read_requests_per_second;
        let domains = &settings.cdn.domains;
        reconcile::confirm_pending(&*api, &mut store, domains, rate, || false).await;
    }
    let executor = Executor::new(api, Options::from_settings(&settings.aliyun));
    let (summary, _store) = pass.run(invalid, &executor, store, out, progress).await?;
    Ok(summary.exit())
}

/// A pass over already-scanned lineages (shared with `demo` and the daemon).
pub struct Pass<'a> {
    pub settings: &'a Settings,
    pub force: bool,
    pub lineages: &'a [Lineage],
    pub valid: &'a [ValidLineage],
    pub now: OffsetDateTime,
}

/// A pass's plan and the part of its summary known before pushing.
pub struct Planned {
    pub plan: crate::plan::Plan,
    pub summary: Summary,
}

impl Pass<'_> {
    /// Plans, pushes and records; writes the report to `out`; gives the store back.
    /// `invalid` is the second half of [`reconcile::split`] of `lineages`.
    pub async fn run(
        &self,
        invalid: Vec<(String, String)>,
        executor: &Executor<AliyunCdn>,
        store: StateStore,
        out: &mut dyn Write,
        progress: bool,
    ) -> Result<(Summary, StateStore), SyncError> {
        let planned = self.plan(store.state(), invalid);
        self.push(planned, executor, store, out, progress).await
    }

    /// Plans against the recorded state; `invalid` is what the report lists as invalid
    /// lineages (the daemon leaves out the torn ones it holds).
    pub fn plan(&self, state: &State, invalid: Vec<(String, String)>) -> Planned {
        let deployed = state.deployed_fingerprints(self.settings.aliyun.verify);
        let plan = reconcile::make_plan(self.valid, &self.params(&deployed));
        let summary = Summary::planned(self.lineages, invalid, &plan);
        Planned { plan, summary }
    }

    /// Pushes a plan and records every outcome; writes the report to `out`.
    pub async fn push(
        &self,
        planned: Planned,
        executor: &Executor<AliyunCdn>,
        store: StateStore,
        out: &mut dyn Write,
        progress: bool,
    ) -> Result<(Summary, StateStore), SyncError> {
        let Planned { plan, mut summary } = planned;
        if plan.batches.is_empty() {
            out.write_all(summary.render().as_bytes())?;
            return Ok((summary, store));
        }
        let total = plan.pending();
        let jobs = reconcile::jobs(&plan, self.valid);
        let executed =
            reconcile::execute(executor, jobs, store, progress_line(progress, total)).await;
        if progress {
            eprintln!();
        }
        summary.add_report(&executed.report, self.settings.aliyun.max_domains_per_call);
        summary.state_errors = executed
            .state_errors
            .iter()
            .map(|e| e.to_string())
            .collect();
        out.write_all(summary.render().as_bytes())?;
        Ok((summary, executed.store))
    }

    fn params<'b>(
        &'b self,
        deployed: &'b std::collections::BTreeMap<String, crate::cert::Fingerprint>,
    ) -> PlanParams<'b> {
        PlanParams {
            domains: &self.settings.cdn.domains,
            deployed,
            now: self.now,
            batch: self.settings.aliyun.max_domains_per_call,
            force: self.force,
        }
    }
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
    pass: &Pass<'_>,
    invalid: Vec<(String, String)>,
    out: &mut dyn Write,
) -> Result<Exit, SyncError> {
    let state = state::load(&pass.settings.state.dir)?;
    let Planned { plan, summary } = pass.plan(&state, invalid);
    writeln!(out, "dry run: nothing is sent")?;
    out.write_all(
        plan.describe(&reconcile::plan_lineages(pass.valid))
            .as_bytes(),
    )?;
    out.write_all(summary.render().as_bytes())?;
    Ok(summary.exit())
}
