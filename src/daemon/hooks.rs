//! `[notify] command`: runs the configured program for each [`Alert`] (argv, no shell).
//!
//! Owns one queue and one worker task per event kind. Invariants:
//! - at most one run at a time per kind; an alert about the same subject as one already
//!   waiting replaces it (repeats coalesce), and at most [`MAX_WAITING`] wait per kind (more
//!   are dropped, with a warning);
//! - [`Hooks::send`] never waits: a pass is never stalled by a slow program;
//! - a run is killed after `[notify] timeout_secs`; its output (capped at [`MAX_OUTPUT`]
//!   bytes a stream, the rest read and discarded) is logged line by line, redacted; a
//!   failure is logged;
//! - the program's environment is only `PATH`, `HOME`, `LANG`, `TZ` (when set) and the
//!   `CERTROTD_*` variables: the daemon's credentials never reach it;
//! - [`Hooks::finish`] gives runs under way [`FINISH_GRACE`], then kills them, so a stop is
//!   never delayed by more than that.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::alerts::{Alert, Kind};
use crate::config::NotifySettings;
use crate::untrusted;

/// Alerts waiting per kind.
pub(crate) const MAX_WAITING: usize = 32;
/// Output kept per stream of one run.
pub(crate) const MAX_OUTPUT: usize = 8 * 1024;
/// How long a stop waits for runs under way.
pub(crate) const FINISH_GRACE: Duration = Duration::from_secs(3);

/// Why a run did not succeed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HookError {
    #[error("cannot start {program}: {cause}; check [notify] command")]
    Spawn {
        program: String,
        cause: std::io::Error,
    },
    #[error("{program} ran longer than {secs} s ([notify] timeout_secs) and was killed")]
    TimedOut { program: String, secs: u64 },
    #[error("{program} failed ({status})")]
    Failed { program: String, status: String },
}

impl HookError {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            HookError::Spawn { .. } => "notify-spawn",
            HookError::TimedOut { .. } => "notify-timeout",
            HookError::Failed { .. } => "notify-failed",
        }
    }
}

struct Queue {
    waiting: Mutex<VecDeque<Alert>>,
    wake: Notify,
    /// Set by [`Hooks::finish`]: the worker ends once its run under way is done.
    closed: AtomicBool,
}

/// The running notifier (nothing runs when `[notify] command` is empty).
pub(crate) struct Hooks {
    settings: NotifySettings,
    queues: Vec<Arc<Queue>>,
    workers: JoinSet<()>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("command", &self.settings.command)
            .finish_non_exhaustive()
    }
}

impl Hooks {
    /// Starts the workers (inside a tokio runtime) when a command is configured.
    pub(crate) fn new(settings: &NotifySettings) -> Hooks {
        let mut hooks = Hooks {
            settings: settings.clone(),
            queues: Vec::new(),
            workers: JoinSet::new(),
        };
        if settings.command.is_empty() {
            return hooks;
        }
        for kind in Kind::ALL {
            let queue = Arc::new(Queue {
                waiting: Mutex::new(VecDeque::new()),
                wake: Notify::new(),
                closed: AtomicBool::new(false),
            });
            hooks.queues.push(Arc::clone(&queue));
            let settings = settings.clone();
            hooks.workers.spawn(work(kind, queue, settings));
        }
        hooks
    }

    /// The settings these hooks run with.
    pub(crate) fn settings(&self) -> &NotifySettings {
        &self.settings
    }

    /// Queues `alert` (never waits).
    pub(crate) fn send(&self, alert: Alert) {
        let Some(queue) = self.queues.get(alert.kind.index()) else {
            return;
        };
        {
            let mut waiting = queue.waiting.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(same) = waiting.iter_mut().find(|a| a.same_subject(&alert)) {
                *same = alert;
            } else if waiting.len() >= MAX_WAITING {
                warn!(event = alert.kind.label(), lineage = %alert.lineage, domains = %alert.domains.join(","), "notify: too many notifications waiting; this one is dropped");
                return;
            } else {
                waiting.push_back(alert);
            }
        }
        queue.wake.notify_one();
    }

    /// Lets runs under way finish for up to [`FINISH_GRACE`], then kills them.
    pub(crate) async fn finish(&mut self) {
        for q in &self.queues {
            q.closed.store(true, Ordering::Release);
            q.waiting.lock().unwrap_or_else(|e| e.into_inner()).clear();
            q.wake.notify_one();
        }
        let idle = async {
            // A worker ends when it finds its queue empty after a wake-up.
            while self.workers.join_next().await.is_some() {}
        };
        if tokio::time::timeout(FINISH_GRACE, idle).await.is_err() {
            warn!("notify: a notification still running was killed at stop");
        }
        self.workers.abort_all();
    }
}

/// One kind's worker: runs its queued alerts one at a time; ends after [`Hooks::finish`].
async fn work(kind: Kind, queue: Arc<Queue>, settings: NotifySettings) {
    loop {
        queue.wake.notified().await;
        loop {
            let next = queue
                .waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            let Some(alert) = next else { break };
            match run(&settings, &alert).await {
                Ok(()) => {
                    info!(event = kind.label(), lineage = %alert.lineage, domains = %alert.domains.join(","), "notify: command done")
                }
                Err(e) => {
                    warn!(event = kind.label(), kind = e.kind(), lineage = %alert.lineage, domains = %alert.domains.join(","), "notify: {e}")
                }
            }
        }
        if queue.closed.load(Ordering::Acquire) {
            return;
        }
    }
}

/// Runs the command once for `alert`.
pub(crate) async fn run(settings: &NotifySettings, alert: &Alert) -> Result<(), HookError> {
    let program = settings.command.first().cloned().unwrap_or_default();
    let mut cmd = Command::new(&program);
    cmd.args(&settings.command[1..])
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .env("CERTROTD_EVENT", alert.kind.label())
        .env("CERTROTD_DOMAINS", alert.domains.join(","))
        .env("CERTROTD_LINEAGE", &alert.lineage)
        .env("CERTROTD_MESSAGE", &alert.message)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for name in ["HOME", "LANG", "TZ"] {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    let mut child = cmd.spawn().map_err(|cause| HookError::Spawn {
        program: program.clone(),
        cause,
    })?;
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let ran = tokio::time::timeout(settings.timeout, async {
        let (out, err) = tokio::join!(capped(out), capped(err));
        (child.wait().await, out, err)
    })
    .await;
    let Ok((status, out, err)) = ran else {
        // Dropping the child (kill_on_drop) kills it.
        return Err(HookError::TimedOut {
            program,
            secs: settings.timeout.as_secs(),
        });
    };
    log_output(alert.kind, &out, &err);
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(HookError::Failed {
            program,
            status: s.to_string(),
        }),
        Err(e) => Err(HookError::Failed {
            program,
            status: e.to_string(),
        }),
    }
}

/// Reads `stream` to its end, keeping the first [`MAX_OUTPUT`] bytes.
async fn capped(stream: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let Some(mut stream) = stream else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = MAX_OUTPUT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

fn log_output(kind: Kind, out: &[u8], err: &[u8]) {
    for (stream, bytes) in [("stdout", out), ("stderr", err)] {
        for line in String::from_utf8_lossy(bytes)
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            info!(
                event = kind.label(),
                stream,
                "notify output: {}",
                untrusted::redact(line, 500)
            );
        }
    }
}

#[cfg(test)]
mod tests;
