//! `certrotd sync` meets a state folder that another certrotd has locked: hand the work to
//! a running daemon instead of failing (the certbot deploy hook runs `sync` next to a
//! `certrotd run` outside systemd: a sidecar container, a host without the unit).
//!
//! Owns: deciding, from the lock file's record ([`state::read_lock_record`]: PID and role),
//! the kernel's view of the lock (`/proc/locks`: which PID holds the `flock`; 0 when the
//! holder is in a PID namespace this process cannot see) and the named process
//! (`/proc/<pid>/comm`), what the holder is, and acting on it:
//!
//! | holder | what `sync` does | exit |
//! |---|---|---|
//! | a `certrotd run` visible here | SIGUSR1 (the daemon runs a pass after the one in flight); one line on stdout | 0 |
//! | a `certrotd run` that cannot be signalled (another PID namespace, another user) | one line on stdout: its file watcher (or periodic rescan) deploys the renewal | 0 |
//! | another `certrotd sync`, an unnamed holder, a process that is not certrotd | a line on stderr naming it, then the usual "lock is held" error | 75 |
//!
//! A second `sync` does not wait for the first: 75 means "try again later" (EX_TEMPFAIL),
//! and the first one's pass may have scanned before the renewal this one was started for.
//!
//! Invariant: a process is signalled only when the lock file names it with the role `run`,
//! its `comm` says it is a certrotd, and the kernel, where it tells, agrees that it holds
//! the lock. A PID reused by another program is never signalled.

use std::fs;
use std::io::{Read as _, Write};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use super::sync::SyncError;
use crate::state::{self, LockRecord, Role, StateError, StateStore};

/// Opens the state store for `sync`; when a certrotd daemon holds it, hands the work over,
/// writes one line to `out` and returns `None` (exit 0). Other holders, and a `sync --force`
/// (`force`: a daemon's pass pushes only what is out of date): the `Locked` error.
pub(crate) fn open_or_hand_off(
    dir: &Path,
    force: bool,
    out: &mut dyn Write,
) -> Result<Option<StateStore>, SyncError> {
    let locked = match StateStore::open_as(dir, Role::Sync) {
        Err(e @ StateError::Locked { .. }) => e,
        other => return Ok(Some(other?)),
    };
    if force {
        eprintln!(
            "certrotd: --force is not handed to a running daemon (its pass pushes only what is \
             out of date); stop it, or run without --force"
        );
        return Err(locked.into());
    }
    let record = state::read_lock_record(dir);
    let kernel = kernel_holder_of(&dir.join(state::LOCK_FILE));
    let decision = match decide(record, kernel, &probe) {
        Decision::Signal(pid) => signal(pid),
        other => other,
    };
    let dir = dir.display();
    match decision {
        Decision::Signal(pid) => writeln!(
            out,
            "certrotd: handed over to the certrotd daemon (PID {pid}) that holds {dir}: it runs \
             a pass now"
        )?,
        Decision::Unreachable(why) => writeln!(
            out,
            "certrotd: a certrotd daemon holds {dir} but {why}; its file watcher deploys the \
             renewal, nothing to do here"
        )?,
        Decision::Busy(why) => {
            eprintln!("certrotd: {why}");
            return Err(locked.into());
        }
    }
    Ok(None)
}

/// What a process with a given PID is, as seen from here.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Proc {
    /// No such process visible (gone, or in another PID namespace, or hidden by `hidepid`).
    Absent,
    Certrotd,
    /// Another program; its `comm`, made printable.
    Other(String),
}

/// What to do about the holder.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Decision {
    /// Send SIGUSR1 to this certrotd daemon.
    Signal(u32),
    /// A daemon holds the lock but cannot be signalled (why, for the message): exit 0.
    Unreachable(String),
    /// Not a daemon to hand over to (who, for the message): exit 75.
    Busy(String),
}

/// The rules of the module docs. `kernel` is the PID `/proc/locks` shows holding the lock
/// file (`Some(0)`: a holder in a PID namespace not visible here; `None`: not found there);
/// `probe` tells what a PID is.
fn decide(
    record: Option<LockRecord>,
    kernel: Option<u32>,
    probe: &dyn Fn(u32) -> Proc,
) -> Decision {
    let Some(LockRecord { pid, role }) = record else {
        return Decision::Busy(
            "the lock file does not name its holder (a certrotd older than this one?)".into(),
        );
    };
    if role == Role::Sync {
        return Decision::Busy(format!(
            "`certrotd sync` (PID {pid}) is running; run this one again once it has finished"
        ));
    }
    match kernel {
        Some(0) => {
            return Decision::Unreachable(format!(
                "is not visible from here (PID {pid} in another PID namespace: a container?)"
            ));
        }
        Some(holder) if holder != pid => {
            return Decision::Busy(format!(
                "the lock is held by PID {holder} ({}), not by the certrotd daemon (PID {pid}) \
                 its file names; nothing was signalled",
                describe(&probe(holder))
            ));
        }
        _ => {}
    }
    match probe(pid) {
        Proc::Certrotd => Decision::Signal(pid),
        Proc::Absent => Decision::Unreachable(format!(
            "its PID {pid} is not visible from here (another PID namespace: a container?)"
        )),
        // The kernel confirms this very process holds the lock: it is not a certrotd.
        Proc::Other(comm) if kernel.is_some() => Decision::Busy(format!(
            "the lock is held by PID {pid} (`{comm}`), which is not certrotd; nothing was \
             signalled"
        )),
        // Without the kernel's word, the daemon's PID from another namespace is the likelier
        // reading than a foreign program holding certrotd's lock.
        Proc::Other(comm) => Decision::Unreachable(format!(
            "PID {pid} here is `{comm}`, not certrotd (the daemon runs in another PID \
             namespace: a container?), so it was not signalled"
        )),
    }
}

fn describe(p: &Proc) -> String {
    match p {
        Proc::Absent => "not visible here".into(),
        Proc::Certrotd => "a certrotd".into(),
        Proc::Other(comm) => format!("`{comm}`"),
    }
}

/// SIGUSR1 to `pid`; a failure becomes [`Decision::Unreachable`].
fn signal(pid: u32) -> Decision {
    let Ok(target) = libc::pid_t::try_from(pid) else {
        return Decision::Unreachable(format!("its PID {pid} is out of range"));
    };
    // SAFETY: kill(2) with a plain PID and signal number; no memory is shared.
    if unsafe { libc::kill(target, libc::SIGUSR1) } == 0 {
        return Decision::Signal(pid);
    }
    let err = std::io::Error::last_os_error();
    Decision::Unreachable(match err.raw_os_error() {
        Some(libc::EPERM) => format!("PID {pid} runs as another user and cannot be signalled"),
        Some(libc::ESRCH) => format!("PID {pid} has just gone"),
        _ => format!("PID {pid} cannot be signalled ({err})"),
    })
}

/// What `pid` is, from `/proc/<pid>/comm`.
fn probe(pid: u32) -> Proc {
    match fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => classify(comm.trim_end_matches('\n'), own_comm().as_deref()),
        Err(_) => Proc::Absent,
    }
}

fn own_comm() -> Option<String> {
    let comm = fs::read_to_string("/proc/self/comm").ok()?;
    Some(comm.trim_end_matches('\n').to_string())
}

/// A certrotd is a process whose name is ours (the same binary under another name) or
/// starts with `certrotd`.
fn classify(comm: &str, own: Option<&str>) -> Proc {
    if comm.starts_with("certrotd") || own.is_some_and(|own| !own.is_empty() && own == comm) {
        return Proc::Certrotd;
    }
    // A process name is anyone's text: printable ASCII only.
    let shown = comm
        .chars()
        .take(16)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    Proc::Other(shown)
}

/// `/proc/locks` is read up to this size (one line per lock on the system).
const MAX_PROC_LOCKS: u64 = 1 << 20;

/// The PID `/proc/locks` shows holding a `flock` on `lock`, if it lists one.
fn kernel_holder_of(lock: &Path) -> Option<u32> {
    let meta = fs::metadata(lock).ok()?;
    let file = fs::File::open("/proc/locks").ok()?;
    let mut text = String::new();
    file.take(MAX_PROC_LOCKS).read_to_string(&mut text).ok()?;
    let dev = meta.dev();
    kernel_holder(&text, (libc::major(dev), libc::minor(dev)), meta.ino())
}

/// From `/proc/locks` text, the PID holding a `flock` on the file `(major, minor)`, `ino`.
/// Lines look like `1: FLOCK  ADVISORY  WRITE 9752 fe:00:10010961 0 EOF`; waiters
/// (`1: -> FLOCK …`) are skipped.
fn kernel_holder(text: &str, (major, minor): (u32, u32), ino: u64) -> Option<u32> {
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, "FLOCK", _, _, pid, file, ..] = fields.as_slice() else {
            return None;
        };
        let mut parts = file.split(':');
        let maj = u32::from_str_radix(parts.next()?, 16).ok()?;
        let min = u32::from_str_radix(parts.next()?, 16).ok()?;
        let i: u64 = parts.next()?.parse().ok()?;
        (maj == major && min == minor && i == ino)
            .then(|| pid.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pid: u32) -> Option<LockRecord> {
        Some(LockRecord {
            pid,
            role: Role::Run,
        })
    }

    /// PID 10 is a certrotd, 20 is `sleep`, everything else is absent.
    fn world(pid: u32) -> Proc {
        match pid {
            10 => Proc::Certrotd,
            20 => Proc::Other("sleep".into()),
            _ => Proc::Absent,
        }
    }

    fn busy(d: &Decision, needle: &str) {
        match d {
            Decision::Busy(why) => assert!(why.contains(needle), "{why}"),
            other => panic!("expected Busy, got {other:?}"),
        }
    }

    fn unreachable(d: &Decision, needle: &str) {
        match d {
            Decision::Unreachable(why) => assert!(why.contains(needle), "{why}"),
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }

    #[test]
    fn a_certrotd_daemon_holding_the_lock_is_signalled() {
        assert_eq!(decide(run(10), Some(10), &world), Decision::Signal(10));
        // The kernel does not list the lock (e.g. btrfs, overlayfs device numbers).
        assert_eq!(decide(run(10), None, &world), Decision::Signal(10));
    }

    #[test]
    fn nothing_is_signalled_unless_the_record_says_run() {
        busy(&decide(None, Some(10), &world), "does not name its holder");
        let sync = Some(LockRecord {
            pid: 10,
            role: Role::Sync,
        });
        busy(
            &decide(sync, Some(10), &world),
            "`certrotd sync` (PID 10) is running",
        );
    }

    #[test]
    fn a_record_naming_a_foreign_or_wrong_process_is_not_signalled() {
        // The named PID holds the lock but is another program.
        busy(
            &decide(run(20), Some(20), &world),
            "PID 20 (`sleep`), which is not certrotd",
        );
        // The lock is held by someone else than the record says (a stale record).
        busy(
            &decide(run(10), Some(20), &world),
            "held by PID 20 (`sleep`)",
        );
        busy(
            &decide(run(20), Some(10), &world),
            "held by PID 10 (a certrotd)",
        );
    }

    #[test]
    fn a_daemon_in_another_pid_namespace_is_left_to_its_watcher() {
        // The kernel shows PID 0 for a holder not visible in this namespace: even a
        // certrotd with the same PID number here is not the holder.
        unreachable(&decide(run(10), Some(0), &world), "another PID namespace");
        unreachable(&decide(run(1), None, &world), "not visible from here");
        unreachable(&decide(run(20), None, &world), "PID 20 here is `sleep`");
    }

    #[test]
    fn certrotd_is_recognised_by_its_process_name() {
        assert_eq!(classify("certrotd", None), Proc::Certrotd);
        assert_eq!(classify("certrotd-1.2", Some("x")), Proc::Certrotd);
        assert_eq!(classify("cdn-sync", Some("cdn-sync")), Proc::Certrotd);
        assert_eq!(
            classify("sleep", Some("certrotd")),
            Proc::Other("sleep".into())
        );
        assert_eq!(classify("", Some("")), Proc::Other(String::new()));
        assert_eq!(
            classify("ev\u{1b}[2Jil\nname-longer-than-16", None),
            Proc::Other("ev?[2Jil?name-lo".into())
        );
    }

    #[test]
    fn the_kernel_holder_is_read_from_proc_locks() {
        let text = "1: POSIX  ADVISORY  WRITE 77 fe:00:42 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 9752 fe:00:10010961 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 9999 fe:00:10010961 0 EOF\n\
                    3: FLOCK  ADVISORY  WRITE 0 103:02:555 0 EOF\n\
                    garbage\n";
        assert_eq!(kernel_holder(text, (0xfe, 0), 10010961), Some(9752));
        assert_eq!(kernel_holder(text, (0x103, 2), 555), Some(0));
        assert_eq!(
            kernel_holder(text, (0xfe, 0), 42),
            None,
            "POSIX locks are not ours"
        );
        assert_eq!(
            kernel_holder(text, (0xfe, 1), 10010961),
            None,
            "other device"
        );
        assert_eq!(kernel_holder("", (0xfe, 0), 1), None);
    }

    #[test]
    fn this_process_holding_a_lock_is_found_in_proc_locks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _store = StateStore::open_as(dir.path(), Role::Sync).expect("lock");
        assert_eq!(
            kernel_holder_of(&dir.path().join(state::LOCK_FILE)),
            Some(std::process::id())
        );
        assert_eq!(probe(std::process::id()), Proc::Certrotd, "our own name");
        assert_eq!(probe(u32::MAX), Proc::Absent);
    }
}
