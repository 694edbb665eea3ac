//! `certrotd run`: the daemon. Loads the configuration (exit 78 when it is bad), installs
//! the signal handlers, takes the state folder's lock for the life of the process (exit 75
//! when another certrotd holds it; the lock file records this PID with the role `run`, so a
//! `certrotd sync` can hand its work over with SIGUSR1), starts watching (or, when inotify
//! cannot start, logs why and relies on periodic rescans), then runs the main loop
//! (`daemon::runner`) around the reconcile pass (`daemon::service`) until SIGTERM/SIGINT:
//! exit 0 after the call in flight finished and the state was saved. Watcher notices pass
//! through a relay that counts them for the service (a drift audit pauses on a file
//! change). glibc malloc is held to two arenas for a small idle footprint.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info};

use super::sync::load_settings;
use super::{CmdResult, Exit};
use crate::config::Settings;
use crate::daemon::notify::Notifier;
use crate::daemon::runner::{self, Loop, LoopSettings, NoWatches, Watches};
use crate::daemon::service::{self, Service};
use crate::daemon::signals::{Signal, Signals};
use crate::daemon::watch::{self, Notice, Watch};
use crate::metrics::serve::{self, MetricsError};
use crate::state::{Role, StateError, StateStore};

pub fn run(config: &Path) -> CmdResult {
    let Some(settings) = load_settings(config) else {
        return Ok(Exit::Config);
    };
    service::limit_malloc_arenas();
    // One worker: the daemon's work is I/O-bound calls and a main loop (scans parse on
    // their own threads, state saves on the blocking pool); a second worker only adds a
    // stack and per-thread allocator caches to the idle footprint.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(daemon(config, settings))
}

async fn daemon(config: &Path, settings: Settings) -> CmdResult {
    // Before the lock (whose file names this PID to `certrotd sync`, which may then send
    // SIGUSR1) and before the first scan: a signal is queued, not fatal.
    let signals = runner::signal_channel(Signals::install()?);
    let store = match StateStore::open_as(&settings.state.dir, Role::Run) {
        Ok(store) => store,
        Err(e @ StateError::Locked { .. }) => {
            eprintln!("certrotd: {e}");
            return Ok(Exit::Locked);
        }
        Err(e) => return Err(e.into()),
    };
    // Without usable credentials it stays up and retries (the log, STATUS=, /healthz and
    // the metrics say so): a credential provisioned later needs no restart.
    let mut service = Service::new(config.to_path_buf(), settings, store);
    let _metrics = match serve_metrics(&service).await {
        Ok(task) => task.map(AbortOnDrop),
        Err(e) => {
            error!(kind = e.kind(), "{e}");
            eprintln!("certrotd: {e}");
            return Ok(Exit::Problems);
        }
    };
    let loop_settings = LoopSettings::from(&service.settings().watch);
    info!(
        paths = loop_settings.paths.len(),
        domains = service.settings().all_domains().len(),
        "certrotd starting"
    );
    match Watch::new(&loop_settings.paths) {
        Ok((watch, notices)) => {
            let notices = count_notices(notices, service.file_event_counter());
            main_loop(&mut service, loop_settings, watch, notices, signals).await
        }
        Err(e) => {
            error!(kind = e.kind(), "{e}");
            // Kept open so the loop does not report the watcher as stopped.
            let (_keep, notices) = mpsc::channel(1);
            main_loop(&mut service, loop_settings, NoWatches, notices, signals).await;
        }
    }
    info!("certrotd stopped");
    Ok(Exit::Ok)
}

async fn main_loop<W: Watches>(
    service: &mut Service,
    settings: LoopSettings,
    watches: W,
    notices: mpsc::Receiver<Notice>,
    signals: mpsc::Receiver<Signal>,
) {
    let mut l = Loop::new(settings, watches, notices, signals, Notifier::from_env());
    l.health = service.health();
    let stopped = runner::run(service, l).await;
    info!(why = ?stopped, "main loop ended");
}

/// Starts the `[metrics]` listener when one is configured.
async fn serve_metrics(service: &Service) -> Result<Option<JoinHandle<()>>, MetricsError> {
    let Some(addr) = service.settings().metrics.listen else {
        return Ok(None);
    };
    let listener = serve::bind(addr).await?;
    let local = listener.local_addr().map_or(addr, |a| a);
    info!(listen = %local, "serving /metrics and /healthz");
    Ok(Some(serve::spawn(listener, service.health())))
}

/// Stops the metrics listener when `run` returns.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Relays the watcher's notices to the main loop, bumping `counter` for each (the drift
/// audit pauses when it changes). Closes when the watcher's channel closes.
fn count_notices(
    mut notices: mpsc::Receiver<Notice>,
    counter: Arc<AtomicU64>,
) -> mpsc::Receiver<Notice> {
    let (tx, rx) = mpsc::channel(watch::CHANNEL_CAPACITY);
    tokio::spawn(async move {
        while let Some(notice) = notices.recv().await {
            counter.fetch_add(1, Ordering::Release);
            if tx.send(notice).await.is_err() {
                break;
            }
        }
    });
    rx
}
