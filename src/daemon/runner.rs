//! The main loop of `certrotd run`, generic over the reconcile pass.
//!
//! Owns: the order of things. Wait for a reason ([`Scheduler`]); on a pass, re-arm the
//! watches *before* the pass scans, run the pass while still answering signals, file events
//! and the watchdog; feed the outcome back to the scheduler and systemd; reload on SIGHUP;
//! pass now on SIGUSR1 (after the pass in flight, if any);
//! stop cleanly on SIGTERM/SIGINT. What a pass does (scan → validate → plan → push → record)
//! is the [`Reconciler`]'s business.
//!
//! Invariants:
//! - a stop request never interrupts a pass: the pass is told ([`PassCtx::stop_requested`])
//!   and finishes its call in flight; then [`Reconciler::finish`] runs (save state) and the
//!   loop returns;
//! - `READY=1` is sent once, when the first pass says it has planned
//!   ([`PassCtx::planned`]) or, at the latest, when it ends;
//! - `WATCHDOG=1` is sent from this loop only, so it stops when the loop hangs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use super::notify::{Notifier, StatusCounts, status_line};
use super::schedule::{PassOutcome, Scheduler, Trigger};
use super::signals::{Signal, Signals};
use super::watch::{Notice, Watch};
use crate::config::WatchSettings;
use crate::metrics::{self, Health};

/// The timing and paths the loop takes from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LoopSettings {
    pub(crate) paths: Vec<PathBuf>,
    pub(crate) debounce: Duration,
    pub(crate) rescan: Duration,
}

impl From<&WatchSettings> for LoopSettings {
    fn from(w: &WatchSettings) -> LoopSettings {
        LoopSettings {
            paths: w.paths.clone(),
            debounce: w.debounce,
            rescan: w.rescan,
        }
    }
}

/// What a pass reports back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PassReport {
    /// For the scheduler: validity windows, torn lineages held, retryable failure.
    pub(crate) outcome: PassOutcome,
    /// For the status line.
    pub(crate) status: StatusCounts,
}

/// The work the loop schedules. Implemented by the reconcile pass.
pub(crate) trait Reconciler {
    /// One pass. Call [`PassCtx::planned`] once the plan is known (before pushing), check
    /// [`PassCtx::stop_requested`] between calls, and return what the scheduler needs.
    fn pass(&mut self, trigger: &Trigger, ctx: &PassCtx) -> impl Future<Output = PassReport>;

    /// Re-reads the configuration (SIGHUP). `Some` with the new settings when it is good (it
    /// takes effect now); `None` when it is bad: log its errors and keep the old one.
    fn reload(&mut self) -> Option<LoopSettings>;

    /// The loop is stopping: save what must be saved.
    fn finish(&mut self) -> impl Future<Output = ()>;
}

/// The watcher as the loop uses it (a trait so tests can count refreshes).
pub(crate) trait Watches {
    /// Re-arms watches; called at the start of every pass, before the scan.
    fn refresh(&mut self);
    /// New watch paths after a reload.
    fn set_paths(&mut self, paths: &[PathBuf]);
}

impl Watches for Watch {
    fn refresh(&mut self) {
        Watch::refresh(self);
    }
    fn set_paths(&mut self, paths: &[PathBuf]) {
        Watch::set_paths(self, paths);
    }
}

/// A watcher that watches nothing (when inotify cannot start: periodic rescans only).
#[derive(Debug, Default)]
pub(crate) struct NoWatches;

impl Watches for NoWatches {
    fn refresh(&mut self) {}
    fn set_paths(&mut self, _: &[PathBuf]) {}
}

/// Handed to each pass.
#[derive(Debug)]
pub(crate) struct PassCtx {
    stop: watch::Sender<bool>,
    notifier: Notifier,
    ready_sent: std::cell::Cell<bool>,
}

impl PassCtx {
    /// SIGTERM/SIGINT arrived: finish the call in flight, start no new one.
    pub(crate) fn stop_requested(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves once a stop is requested (for `tokio::select!` around a long wait).
    pub(crate) async fn stopped(&self) {
        let mut stop = self.stop.subscribe();
        // An Err means the loop is gone: that is a stop too.
        let _ = stop.wait_for(|s| *s).await;
    }

    /// The plan is known: the first time, tell systemd start-up is complete (`READY=1`);
    /// afterwards, update the status line.
    pub(crate) fn planned(&self, status: &StatusCounts) {
        let line = status_line(status);
        let result = if self.ready_sent.replace(true) {
            self.notifier.status(&line)
        } else {
            self.notifier.ready(&line)
        };
        if let Err(e) = result {
            warn!(kind = e.kind(), "{e}");
        }
    }
}

/// Turns installed [`Signals`] into a channel (a task forwards them).
pub(crate) fn signal_channel(mut signals: Signals) -> mpsc::Receiver<Signal> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let signal = signals.recv().await;
            if tx.send(signal).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// Everything the loop needs besides the reconciler.
pub(crate) struct Loop<W> {
    pub(crate) settings: LoopSettings,
    pub(crate) watches: W,
    pub(crate) notices: mpsc::Receiver<Notice>,
    pub(crate) signals: mpsc::Receiver<Signal>,
    pub(crate) notifier: Notifier,
    /// The wall clock (certificate notBefore/notAfter); the system clock unless a test
    /// ties it to tokio's paused clock.
    pub(crate) wall_clock: Box<dyn Fn() -> OffsetDateTime>,
    /// Beaten every [`metrics::BEAT_EVERY`] while the loop runs (`/healthz`).
    pub(crate) health: Arc<Health>,
}

impl<W: Watches> Loop<W> {
    /// A loop on the system wall clock.
    pub(crate) fn new(
        settings: LoopSettings,
        watches: W,
        notices: mpsc::Receiver<Notice>,
        signals: mpsc::Receiver<Signal>,
        notifier: Notifier,
    ) -> Loop<W> {
        Loop {
            settings,
            watches,
            notices,
            signals,
            notifier,
            wall_clock: Box::new(OffsetDateTime::now_utc),
            health: Arc::new(Health::default()),
        }
    }
}

/// Why [`run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// SIGTERM or SIGINT.
    Signal,
    /// The signal channel closed (no way to be stopped any more): treated as a stop.
    SignalsClosed,
}

/// Runs until stopped. The first pass is due at once.
pub(crate) async fn run<R: Reconciler, W: Watches>(reconciler: &mut R, mut l: Loop<W>) -> Stopped {
    let mut sched = Scheduler::new(l.settings.debounce, l.settings.rescan, Instant::now());
    let ctx = PassCtx {
        stop: watch::Sender::new(false),
        notifier: l.notifier.clone(),
        ready_sent: std::cell::Cell::new(false),
    };
    let mut watchdog = l.notifier.watchdog_interval().map(tokio::time::interval);
    let mut beat = tokio::time::interval(metrics::BEAT_EVERY);
    let mut notices_open = true;
    let mut status = String::from("starting");
    let stopped = 'outer: loop {
        if let Some(trigger) = sched.take_due(Instant::now(), (l.wall_clock)()) {
            l.watches.refresh();
            let span = info_span!("pass", reason = trigger.primary().label());
            let mut io = LoopIo {
                watchdog: &mut watchdog,
                beat: &mut beat,
                notices_open: &mut notices_open,
            };
            let step = run_pass(reconciler, &trigger, &ctx, &mut l, &mut sched, &mut io)
                .instrument(span)
                .await;
            status = status_line(&step.report.status);
            if !ctx.ready_sent.get() {
                ctx.planned(&step.report.status);
            } else if let Err(e) = l.notifier.status(&status) {
                warn!(kind = e.kind(), "{e}");
            }
            sched.finish(Instant::now(), step.report.outcome);
            if let Some(why) = step.stop {
                break 'outer why;
            }
            if step.reload {
                reload(reconciler, &mut l, &mut sched, &status);
            }
            continue;
        }
        let wake = sched.next_wake(Instant::now(), (l.wall_clock)());
        debug!(
            reason = wake.reason.label(),
            in_ms = wake
                .at
                .saturating_duration_since(Instant::now())
                .as_millis() as u64,
            "waiting"
        );
        tokio::select! {
            () = tokio::time::sleep_until(wake.at) => {}
            notice = recv_notice(&mut l.notices, &mut notices_open) => if notice.is_some() {
                sched.file_event(Instant::now());
            },
            signal = l.signals.recv() => match signal {
                Some(Signal::Stop) => break 'outer Stopped::Signal,
                Some(Signal::Reload) => reload(reconciler, &mut l, &mut sched, &status),
                Some(Signal::PassNow) => sched.request(Instant::now()),
                None => break 'outer Stopped::SignalsClosed,
            },
            _ = tick(&mut watchdog) => ping(&l.notifier),
            _ = beat.tick() => l.health.beat((l.wall_clock)()),
        }
    };
    l.health.ended();
    ctx.stop.send_replace(true);
    info!("stopping: saving state");
    if let Err(e) = l.notifier.stopping() {
        warn!(kind = e.kind(), "{e}");
    }
    reconciler.finish().await;
    stopped
}

struct Step {
    report: PassReport,
    stop: Option<Stopped>,
    reload: bool,
}

/// Loop state a pass shares with the waiting loop.
struct LoopIo<'a> {
    watchdog: &'a mut Option<tokio::time::Interval>,
    beat: &'a mut tokio::time::Interval,
    notices_open: &'a mut bool,
}

/// Drives one pass to its end while answering signals, file events and the watchdog.
async fn run_pass<R: Reconciler, W: Watches>(
    reconciler: &mut R,
    trigger: &Trigger,
    ctx: &PassCtx,
    l: &mut Loop<W>,
    sched: &mut Scheduler,
    io: &mut LoopIo<'_>,
) -> Step {
    info!(reasons = ?trigger.reasons().iter().map(|r| r.label()).collect::<Vec<_>>(), "pass starts");
    let work = reconciler.pass(trigger, ctx);
    tokio::pin!(work);
    let mut stop = None;
    let mut reload = false;
    let mut signals_open = true;
    let report = loop {
        tokio::select! {
            report = &mut work => break report,
            // Changes during a pass: another pass after the quiet period.
            notice = recv_notice(&mut l.notices, io.notices_open) => if notice.is_some() {
                sched.file_event(Instant::now());
            },
            signal = l.signals.recv(), if signals_open => match signal {
                Some(Signal::Stop) => {
                    info!("stop requested: finishing the call in flight");
                    stop = Some(Stopped::Signal);
                    signal_stop(ctx);
                }
                Some(Signal::Reload) => reload = true,
                // The files may have changed after this pass scanned: one more pass.
                Some(Signal::PassNow) => sched.request(Instant::now()),
                None => {
                    signals_open = false;
                    stop.get_or_insert(Stopped::SignalsClosed);
                    signal_stop(ctx);
                }
            },
            _ = tick(io.watchdog) => ping(&l.notifier),
            _ = io.beat.tick() => l.health.beat((l.wall_clock)()),
        }
    };
    info!(status = %status_line(&report.status), "pass done");
    Step {
        report,
        stop,
        reload,
    }
}

fn signal_stop(ctx: &PassCtx) {
    ctx.stop.send_replace(true);
}

fn reload<R: Reconciler, W: Watches>(
    reconciler: &mut R,
    l: &mut Loop<W>,
    sched: &mut Scheduler,
    status: &str,
) {
    if let Err(e) = l.notifier.reloading() {
        warn!(kind = e.kind(), "{e}");
    }
    let now = Instant::now();
    match reconciler.reload() {
        Some(settings) => {
            info!("configuration reloaded");
            sched.reconfigure(settings.debounce, settings.rescan, now);
            if settings.paths != l.settings.paths {
                l.watches.set_paths(&settings.paths);
            }
            l.settings = settings;
        }
        None => warn!("the new configuration is invalid (see above); keeping the old one"),
    }
    // A reload is also a nudge (the deploy hook uses it): pass now either way.
    sched.request(now);
    // RELOADING=1 must be followed by READY=1; the status line stays what it was.
    if let Err(e) = l.notifier.ready(status) {
        warn!(kind = e.kind(), "{e}");
    }
}

/// The next notice; once the watcher is gone, never (timers and rescans carry on).
async fn recv_notice(notices: &mut mpsc::Receiver<Notice>, open: &mut bool) -> Option<Notice> {
    if !*open {
        return std::future::pending().await;
    }
    let notice = notices.recv().await;
    if notice.is_none() {
        *open = false;
        warn!("file watching has stopped; changes are now seen at periodic rescans only");
    }
    notice
}

async fn tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn ping(notifier: &Notifier) {
    if let Err(e) = notifier.watchdog() {
        warn!(kind = e.kind(), "{e}");
    }
}

#[cfg(test)]
mod tests;
