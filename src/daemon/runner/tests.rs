//! The loop on tokio's paused clock, with a scripted reconciler, channels standing in for the
//! watcher and the signal handlers, and a real datagram socket for systemd notifications.

use std::collections::VecDeque;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use time::macros::datetime;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep};

use super::*;
use crate::daemon::schedule::{Reason, Validity};

const DEBOUNCE: Duration = Duration::from_secs(2);
const RESCAN: Duration = Duration::from_secs(3600);
const WALL0: OffsetDateTime = datetime!(2026-11-29 12:00:00 UTC);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// How one scripted pass behaves.
#[derive(Clone, Debug, Default)]
struct Script {
    /// API calls of 10 s each; a stop request is honoured between calls.
    calls: u32,
    report: PassReport,
}

#[derive(Debug, Default)]
struct Record {
    /// (seconds since start, reasons, stop requested when it ended)
    passes: Vec<(Duration, Vec<Reason>, bool)>,
    refreshes: usize,
    set_paths: Vec<Vec<PathBuf>>,
    finished: bool,
}

struct Fake {
    start: Instant,
    scripts: VecDeque<Script>,
    reloads: VecDeque<Option<LoopSettings>>,
    record: Arc<Mutex<Record>>,
}

impl Reconciler for Fake {
    async fn pass(&mut self, pass: &Trigger, ctx: &PassCtx) -> PassReport {
        let script = self.scripts.pop_front().unwrap_or_default();
        ctx.planned(&script.report.status);
        for _ in 0..script.calls {
            if ctx.stop_requested() {
                break;
            }
            sleep(secs(10)).await;
        }
        let at = Instant::now() - self.start;
        self.record.lock().expect("lock").passes.push((
            at,
            pass.reasons().to_vec(),
            ctx.stop_requested(),
        ));
        script.report
    }

    fn reload(&mut self) -> Option<LoopSettings> {
        self.reloads.pop_front().flatten()
    }

    async fn finish(&mut self) {
        self.record.lock().expect("lock").finished = true;
    }
}

struct FakeWatches(Arc<Mutex<Record>>);

impl Watches for FakeWatches {
    fn refresh(&mut self) {
        self.0.lock().expect("lock").refreshes += 1;
    }
    fn set_paths(&mut self, paths: &[PathBuf]) {
        self.0.lock().expect("lock").set_paths.push(paths.to_vec());
    }
}

struct Harness {
    fake: Fake,
    record: Arc<Mutex<Record>>,
    notices: mpsc::Sender<Notice>,
    signals: mpsc::Sender<Signal>,
    lp: Loop<FakeWatches>,
    sent: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

fn settings() -> LoopSettings {
    LoopSettings {
        paths: vec![PathBuf::from("/etc/letsencrypt/live")],
        debounce: DEBOUNCE,
        rescan: RESCAN,
    }
}

fn harness(scripts: Vec<Script>, watchdog_usec: Option<&str>) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind");
    socket.set_nonblocking(true).expect("nonblocking");
    let socket = tokio::net::UnixDatagram::from_std(socket).expect("tokio socket");
    let sent = Arc::new(Mutex::new(Vec::new()));
    let into = Arc::clone(&sent);
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf).await {
            let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
            into.lock().expect("lock").push(text);
        }
    });
    let notifier = Notifier::new(Some(path.as_os_str()), watchdog_usec, None, 1);
    let record = Arc::new(Mutex::new(Record::default()));
    let (ntx, nrx) = mpsc::channel(16);
    let (stx, srx) = mpsc::channel(4);
    let start = Instant::now();
    let mut lp = Loop::new(
        settings(),
        FakeWatches(Arc::clone(&record)),
        nrx,
        srx,
        notifier,
    );
    lp.wall_clock = Box::new(move || WALL0 + (Instant::now() - start));
    Harness {
        fake: Fake {
            start,
            scripts: scripts.into(),
            reloads: VecDeque::new(),
            record: Arc::clone(&record),
        },
        record,
        notices: ntx,
        signals: stx,
        lp,
        sent,
        _dir: dir,
    }
}

fn status(up: usize) -> PassReport {
    PassReport {
        status: StatusCounts {
            up_to_date: up,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Runs the loop while `drive` plays its part; returns how it stopped.
async fn play<F: Future<Output = ()>>(
    h: Harness,
    drive: impl FnOnce(mpsc::Sender<Notice>, mpsc::Sender<Signal>) -> F,
) -> (Stopped, Arc<Mutex<Record>>, Vec<String>) {
    let Harness {
        mut fake,
        record,
        notices,
        signals,
        lp,
        sent,
        _dir,
    } = h;
    let (stopped, ()) = tokio::join!(run(&mut fake, lp), drive(notices, signals));
    // Let the reader task take the last datagrams.
    sleep(Duration::from_millis(1)).await;
    let sent = sent.lock().expect("lock").clone();
    (stopped, record, sent)
}

#[tokio::test(start_paused = true)]
async fn first_pass_at_once_ready_after_planning_then_rescan_then_clean_stop() {
    let h = harness(
        vec![
            Script {
                calls: 1,
                report: status(37),
            },
            Script::default(),
        ],
        None,
    );
    let (stopped, record, sent) = play(h, |_n, s| async move {
        sleep(RESCAN + secs(5)).await;
        s.send(Signal::Stop).await.expect("send");
    })
    .await;
    assert_eq!(stopped, Stopped::Signal);
    let r = record.lock().expect("lock");
    let passes: Vec<_> = r
        .passes
        .iter()
        .map(|(at, why, _)| (*at, why.clone()))
        .collect();
    assert_eq!(
        passes,
        [
            (secs(10), vec![Reason::Requested]),
            (RESCAN, vec![Reason::Rescan]),
        ],
        "the rescan keeps its cadence from the start"
    );
    assert_eq!(r.refreshes, 2, "watches are re-armed before each pass");
    assert!(r.finished, "state saved on stop");
    assert_eq!(
        sent.first().map(String::as_str),
        Some("READY=1\nSTATUS=37 domains up to date\n")
    );
    assert_eq!(sent.last().map(String::as_str), Some("STOPPING=1\n"));
}

#[tokio::test(start_paused = true)]
async fn a_pass_starts_one_quiet_period_after_the_last_file_event() {
    let h = harness(vec![], None);
    let (_, record, _) = play(h, |n, s| async move {
        sleep(secs(100)).await;
        n.send(Notice::Changed(PathBuf::from("/a")))
            .await
            .expect("send");
        sleep(secs(1)).await;
        n.send(Notice::Changed(PathBuf::from("/b")))
            .await
            .expect("send");
        sleep(secs(60)).await;
        s.send(Signal::Stop).await.expect("send");
    })
    .await;
    let r = record.lock().expect("lock");
    let passes: Vec<_> = r
        .passes
        .iter()
        .map(|(at, why, _)| (*at, why.clone()))
        .collect();
    assert_eq!(
        passes,
        [
            (secs(0), vec![Reason::Requested]),
            (secs(101) + DEBOUNCE, vec![Reason::Debounce])
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn stop_during_a_pass_lets_the_call_in_flight_finish_then_saves() {
    let h = harness(
        vec![Script {
            calls: 5,
            report: status(1),
        }],
        None,
    );
    let (stopped, record, sent) = play(h, |_n, s| async move {
        sleep(secs(15)).await; // during the second call
        s.send(Signal::Stop).await.expect("send");
    })
    .await;
    assert_eq!(stopped, Stopped::Signal);
    let r = record.lock().expect("lock");
    assert_eq!(r.passes.len(), 1);
    let (at, _, saw_stop) = &r.passes[0];
    assert_eq!(*at, secs(20), "the second call finished, no third started");
    assert!(saw_stop);
    assert!(r.finished);
    assert_eq!(sent.last().map(String::as_str), Some("STOPPING=1\n"));
}

#[tokio::test(start_paused = true)]
async fn events_during_a_pass_cause_another_pass_after_the_quiet_period() {
    let h = harness(
        vec![Script {
            calls: 3,
            ..Default::default()
        }],
        None,
    );
    let (_, record, _) = play(h, |n, s| async move {
        sleep(secs(5)).await;
        n.send(Notice::Changed(PathBuf::from("/x")))
            .await
            .expect("send");
        sleep(secs(100)).await;
        s.send(Signal::Stop).await.expect("send");
    })
    .await;
    let r = record.lock().expect("lock");
    let passes: Vec<_> = r
        .passes
        .iter()
        .map(|(at, why, _)| (*at, why.clone()))
        .collect();
    // The event at 5 s was quiet by 7 s; the pass runs to 30 s; the next starts at once.
    assert_eq!(
        passes,
        [
            (secs(30), vec![Reason::Requested]),
            (secs(30), vec![Reason::Debounce])
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn reload_with_a_good_config_applies_it_and_passes() {
    let mut h = harness(vec![], None);
    let new = LoopSettings {
        paths: vec![PathBuf::from("/srv/certs")],
        debounce: secs(10),
        rescan: RESCAN,
    };
    h.fake.reloads.push_back(Some(new.clone()));
    let (_, record, sent) = play(h, |n, s| async move {
        sleep(secs(50)).await;
        s.send(Signal::Reload).await.expect("send");
        sleep(secs(50)).await;
        n.send(Notice::Changed(PathBuf::from("/srv/certs/a")))
            .await
            .expect("send");
        sleep(secs(60)).await;
        s.send(Signal::Stop).await.expect("send");
    })
    .await;
    let r = record.lock().expect("lock");
    assert_eq!(r.set_paths, vec![new.paths.clone()]);
    let passes: Vec<_> = r
        .passes
        .iter()
        .map(|(at, why, _)| (*at, why.clone()))
        .collect();
    assert_eq!(
        passes,
        [
            (secs(0), vec![Reason::Requested]),
            (secs(50), vec![Reason::Requested]),
            (secs(110), vec![Reason::Debounce]),
        ],
        "the new debounce (10 s) applies"
    );
    assert!(
        sent.iter()
            .any(|m| m.starts_with("RELOADING=1\nMONOTONIC_USEC=")),
        "{sent:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn reload_with_a_bad_config_keeps_the_old_one_and_still_passes() {
    let mut h = harness(vec![], None);
    h.fake.reloads.push_back(None);
    let (_, record, _) = play(h, |n, s| async move {
        sleep(secs(50)).await;
        s.send(Signal::Reload).await.expect("send");
        sleep(secs(50)).await;
        n.send(Notice::Changed(PathBuf::from("/a")))
            .await
            .expect("send");
        sleep(secs(60)).await;
        s.send(Signal::Stop).await.expect("send");
    })
    .await;
    let r = record.lock().expect("lock");
    assert!(r.set_paths.is_empty());
    let at: Vec<_> = r.passes.iter().map(|(at, _, _)| *at).collect();
    assert_eq!(
        at,
        [secs(0), secs(50), secs(100) + DEBOUNCE],
        "old debounce kept"
    );
}

#[tokio::test(start_paused = true)]
async fn watchdog_pings_continue_during_a_long_pass() {
    // WatchdogSec=2s: ping every second.
    let h = harness(
        vec![Script {
            calls: 1,
            ..Default::default()
        }],
        Some("2000000"),
    );
    let (_, _, sent) = play(h, |_n, s| async move {
        sleep(secs(12)).await;
        s.send(Signal::Stop).await.expect("send");
    })
    .await;
    let pings = sent.iter().filter(|m| *m == "WATCHDOG=1\n").count();
    assert!(
        (10..=14).contains(&pings),
        "{pings} pings in 12 s: {sent:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn torn_lineages_and_not_before_wake_the_loop_without_events() {
    let nb = WALL0 + time::Duration::seconds(300);
    let torn = PassReport {
        outcome: PassOutcome {
            torn: true,
            validity: vec![Validity {
                not_before: nb,
                not_after: nb + time::Duration::days(90),
            }],
            failed: false,
        },
        ..Default::default()
    };
    let keep = PassReport {
        outcome: PassOutcome {
            validity: torn.outcome.validity.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    let h = harness(
        vec![
            Script {
                calls: 0,
                report: torn,
            },
            Script {
                calls: 0,
                report: keep.clone(),
            },
            Script {
                calls: 0,
                report: keep,
            },
        ],
        None,
    );
    let (_, record, _) = play(h, |_n, s| async move {
        sleep(secs(400)).await;
        s.send(Signal::Stop).await.expect("send");
    })
    .await;
    let r = record.lock().expect("lock");
    let passes: Vec<_> = r
        .passes
        .iter()
        .map(|(at, why, _)| (*at, why.clone()))
        .collect();
    assert_eq!(
        passes,
        [
            (secs(0), vec![Reason::Requested]),
            (DEBOUNCE, vec![Reason::TornRecheck]),
            (secs(301), vec![Reason::NotBefore]),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_closed_notice_channel_leaves_timers_working_and_closed_signals_stop() {
    let h = harness(vec![], None);
    let (stopped, record, _) = play(h, |n, s| async move {
        drop(n);
        sleep(RESCAN + secs(1)).await;
        drop(s);
    })
    .await;
    assert_eq!(stopped, Stopped::SignalsClosed);
    let r = record.lock().expect("lock");
    assert_eq!(r.passes.len(), 2, "start-up pass and the rescan");
    assert!(r.finished);
}

#[tokio::test(start_paused = true)]
async fn failed_passes_are_retried_with_backoff() {
    let failed = PassReport {
        outcome: PassOutcome {
            failed: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let scripts = vec![
        Script {
            calls: 0,
            report: failed.clone(),
        },
        Script {
            calls: 0,
            report: failed,
        },
        Script::default(),
    ];
    let h = harness(scripts, None);
    let (_, record, _) = play(h, |_n, s| async move {
        sleep(secs(200)).await;
        s.send(Signal::Stop).await.expect("send");
    })
    .await;
    let r = record.lock().expect("lock");
    let passes: Vec<_> = r
        .passes
        .iter()
        .map(|(at, why, _)| (*at, why.clone()))
        .collect();
    assert_eq!(
        passes,
        [
            (secs(0), vec![Reason::Requested]),
            (secs(30), vec![Reason::Retry]),
            (secs(90), vec![Reason::Retry]),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn pass_now_runs_a_pass_at_once_or_right_after_the_one_in_flight_without_reloading() {
    let h = harness(
        vec![
            Script::default(),
            Script {
                calls: 3,
                ..Script::default()
            },
        ],
        None,
    );
    let (_, record, sent) = play(h, |_n, s| async move {
        sleep(secs(50)).await;
        s.send(Signal::PassNow).await.expect("send");
        // During the 30 s pass that starts at 50 s.
        sleep(secs(10)).await;
        s.send(Signal::PassNow).await.expect("send");
        sleep(secs(60)).await;
        s.send(Signal::Stop).await.expect("send");
    })
    .await;
    let r = record.lock().expect("lock");
    let passes: Vec<_> = r
        .passes
        .iter()
        .map(|(at, why, _)| (*at, why.clone()))
        .collect();
    assert_eq!(
        passes,
        [
            (secs(0), vec![Reason::Requested]),
            (secs(80), vec![Reason::Requested]),
            (secs(80), vec![Reason::Requested]),
        ],
        "(times are pass ends) 50 s → 80 s, then one more pass at once"
    );
    assert!(
        !sent.iter().any(|m| m.starts_with("RELOADING=1")),
        "no reload: {sent:?}"
    );
}
