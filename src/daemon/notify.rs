//! systemd notifications (`Type=notify`): `READY=1`, `STATUS=…`, `RELOADING=1`,
//! `STOPPING=1`, `WATCHDOG=1`.
//!
//! Owns: the notification socket from `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
//! namespace), the watchdog interval from `$WATCHDOG_USEC`/`$WATCHDOG_PID`, and the one-line
//! status text ([`status_line`], pure). Messages are formatted by the `sd-notify` crate's
//! [`sd_notify::NotifyState`]; sending is done here so that the socket can be given
//! explicitly (tests) instead of only through the environment.
//!
//! Invariant: without `$NOTIFY_SOCKET` (not started by systemd) every call is a no-op that
//! succeeds. The environment is read once, in [`Notifier::from_env`], and never modified.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use sd_notify::NotifyState;

/// A failed notification. Not fatal: the caller logs it and carries on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotifyError {
    #[error(
        "cannot send {what} to the service manager at NOTIFY_SOCKET={socket}: {source}; \
         check that the unit runs certrotd directly with Type=notify (NotifyAccess=main)"
    )]
    Send {
        what: &'static str,
        socket: String,
        #[source]
        source: io::Error,
    },
}

impl NotifyError {
    /// A short label for logs and metrics.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            NotifyError::Send { .. } => "notify",
        }
    }
}

/// Sends notifications to systemd, or does nothing when not under systemd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Notifier {
    socket: Option<OsString>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` (without unsetting them).
    pub(crate) fn from_env() -> Notifier {
        let var = |name: &str| std::env::var_os(name);
        let usec = var("WATCHDOG_USEC");
        let pid = var("WATCHDOG_PID");
        Notifier::new(
            var("NOTIFY_SOCKET").as_deref(),
            usec.as_deref().and_then(OsStr::to_str),
            pid.as_deref().and_then(OsStr::to_str),
            std::process::id(),
        )
    }

    /// A notifier for an explicit socket (`None` or empty: disabled) and watchdog settings,
    /// as systemd passes them: `watchdog_usec` in microseconds, `watchdog_pid` the process
    /// the watchdog is meant for (when set and not `own_pid`, the watchdog is not ours).
    pub(crate) fn new(
        socket: Option<&OsStr>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        own_pid: u32,
    ) -> Notifier {
        let socket = socket.filter(|s| !s.is_empty()).map(OsStr::to_os_string);
        let for_us = watchdog_pid.is_none_or(|p| p.trim().parse::<u32>() == Ok(own_pid));
        let watchdog = watchdog_usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(Duration::from_micros);
        Notifier { socket, watchdog }
    }

    #[cfg(test)]
    /// A notifier that never sends anything.
    pub(crate) fn disabled() -> Notifier {
        Notifier {
            socket: None,
            watchdog: None,
        }
    }

    /// Running under a service manager that listens.
    pub(crate) fn is_enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// How often to send `WATCHDOG=1`: half of `WatchdogSec=`, or `None` when the watchdog
    /// is off (or notifications are).
    pub(crate) fn watchdog_interval(&self) -> Option<Duration> {
        self.socket.as_ref()?;
        self.watchdog.map(|w| w / 2)
    }

    /// Start-up is complete (the first pass has been planned), with the current status.
    pub(crate) fn ready(&self, status: &str) -> Result<(), NotifyError> {
        let status = one_line(status);
        self.send(
            "READY=1",
            &[NotifyState::Ready, NotifyState::Status(&status)],
        )
    }

    /// The one-line status shown by `systemctl status`.
    pub(crate) fn status(&self, status: &str) -> Result<(), NotifyError> {
        let status = one_line(status);
        self.send("STATUS", &[NotifyState::Status(&status)])
    }

    /// A reload (SIGHUP) has started; follow it with [`Notifier::ready`].
    pub(crate) fn reloading(&self) -> Result<(), NotifyError> {
        if !self.is_enabled() {
            return Ok(());
        }
        // systemd >= 253 wants MONOTONIC_USEC with RELOADING=1 in the same message.
        let mut states = vec![NotifyState::Reloading];
        if let Ok(usec) = NotifyState::monotonic_usec_now() {
            states.push(usec);
        }
        self.send("RELOADING=1", &states)
    }

    /// Shutting down.
    pub(crate) fn stopping(&self) -> Result<(), NotifyError> {
        self.send("STOPPING=1", &[NotifyState::Stopping])
    }

    /// The main loop is alive.
    pub(crate) fn watchdog(&self) -> Result<(), NotifyError> {
        self.send("WATCHDOG=1", &[NotifyState::Watchdog])
    }

    fn send(&self, what: &'static str, states: &[NotifyState<'_>]) -> Result<(), NotifyError> {
        let Some(socket) = &self.socket else {
            return Ok(());
        };
        let message: String = states.iter().map(|s| format!("{s}\n")).collect();
        send_datagram(socket, message.as_bytes()).map_err(|source| NotifyError::Send {
            what,
            socket: socket.to_string_lossy().into_owned(),
            source,
        })
    }
}

fn send_datagram(socket: &OsStr, message: &[u8]) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    // Never block the main loop on a service manager that does not read (a full queue is
    // an error, logged by the caller; the next notification carries the current state).
    sock.set_nonblocking(true)?;
    let bytes = socket.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.connect_addr(&addr)?;
    } else {
        sock.connect(socket)?;
    }
    let sent = sock.send(message)?;
    if sent != message.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the notification was truncated",
        ));
    }
    Ok(())
}

/// systemd reads a notification line by line: a status must stay on one line.
fn one_line(s: &str) -> String {
    s.split(['\n', '\r'])
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The counts behind the status line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StatusCounts {
    /// Managed domains serving their best valid certificate.
    pub(crate) up_to_date: usize,
    /// Managed domains waiting for a push (planned, in flight or retrying).
    pub(crate) pending: usize,
    /// Managed domains whose last push failed for good.
    pub(crate) failed: usize,
    /// Managed domains that no valid certificate covers.
    pub(crate) uncovered: usize,
    /// Time until the earliest notAfter among the deployed certificates (negative when one
    /// has already expired), `None` when nothing is deployed.
    pub(crate) next_expiry: Option<time::Duration>,
    /// No usable credentials were found (the pass did not run).
    pub(crate) no_credentials: bool,
    /// Managed DCDN domains (the rest are CDN's); the line names both products when some
    /// are DCDN's.
    pub(crate) dcdn: usize,
}

/// "37 domains up to date, 2 pending, next expiry in 41 days" (pure); with DCDN domains,
/// "… (35 cdn + 4 dcdn managed)" after the counts.
pub(crate) fn status_line(c: &StatusCounts) -> String {
    if c.no_credentials {
        return "no usable Alibaba Cloud credentials: retrying with backoff (see the log)"
            .to_string();
    }
    let mut parts = vec![format!(
        "{} up to date",
        plural(c.up_to_date, "domain", "domains")
    )];
    if c.pending > 0 {
        parts.push(format!("{} pending", c.pending));
    }
    if c.failed > 0 {
        parts.push(format!("{} failing", c.failed));
    }
    if c.uncovered > 0 {
        parts.push(format!("{} without a valid certificate", c.uncovered));
    }
    if let Some(left) = c.next_expiry {
        parts.push(expiry(left));
    }
    let mut line = parts.join(", ");
    if c.dcdn > 0 {
        let all = c.up_to_date + c.pending + c.failed + c.uncovered;
        let cdn = all.saturating_sub(c.dcdn);
        line.push_str(&format!(" ({cdn} cdn + {} dcdn managed)", c.dcdn));
    }
    line
}

fn expiry(left: time::Duration) -> String {
    if left.is_negative() {
        let ago = -left;
        return if ago.whole_days() >= 1 {
            format!(
                "a deployed certificate expired {} ago",
                plural(ago.whole_days(), "day", "days")
            )
        } else {
            "a deployed certificate expired less than a day ago".to_string()
        };
    }
    if left.whole_days() >= 1 {
        format!(
            "next expiry in {}",
            plural(left.whole_days(), "day", "days")
        )
    } else if left.whole_hours() >= 1 {
        format!(
            "next expiry in {}",
            plural(left.whole_hours(), "hour", "hours")
        )
    } else {
        "next expiry in less than an hour".to_string()
    }
}

fn plural(n: impl TryInto<i128>, one: &str, many: &str) -> String {
    let n: i128 = n.try_into().unwrap_or(i128::MAX);
    let word = if n == 1 { one } else { many };
    format!("{n} {word}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use time::Duration as TD;

    fn socket() -> (tempfile::TempDir, std::path::PathBuf, UnixDatagram) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).expect("bind");
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        (dir, path, listener)
    }

    fn recv(l: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = l.recv(&mut buf).expect("a notification arrives");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn notifier(path: &std::path::Path) -> Notifier {
        Notifier::new(Some(path.as_os_str()), None, None, 1)
    }

    #[test]
    fn sends_each_state_to_the_socket() {
        let (_dir, path, l) = socket();
        let n = notifier(&path);
        assert!(n.is_enabled());
        n.ready("37 domains up to date").expect("ready");
        assert_eq!(recv(&l), "READY=1\nSTATUS=37 domains up to date\n");
        n.status("2 pending").expect("status");
        assert_eq!(recv(&l), "STATUS=2 pending\n");
        n.stopping().expect("stopping");
        assert_eq!(recv(&l), "STOPPING=1\n");
        n.watchdog().expect("watchdog");
        assert_eq!(recv(&l), "WATCHDOG=1\n");
        n.reloading().expect("reloading");
        let msg = recv(&l);
        assert!(msg.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{msg}");
    }

    #[test]
    fn status_is_kept_on_one_line() {
        let (_dir, path, l) = socket();
        notifier(&path)
            .status("first\nREADY=1\r\nsecond")
            .expect("status");
        assert_eq!(recv(&l), "STATUS=first READY=1 second\n");
    }

    #[test]
    fn abstract_socket_names_are_supported() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!(
            "certrotd-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("abstract address");
        let l = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        l.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let spec = format!("@{name}");
        let n = Notifier::new(Some(OsStr::from_bytes(spec.as_bytes())), None, None, 1);
        n.stopping().expect("stopping");
        assert_eq!(recv(&l), "STOPPING=1\n");
    }

    #[test]
    fn without_a_socket_everything_is_a_successful_no_op() {
        for n in [
            Notifier::disabled(),
            Notifier::new(Some(OsStr::new("")), Some("1000000"), None, 1),
        ] {
            assert!(!n.is_enabled());
            assert_eq!(n.watchdog_interval(), None);
            n.ready("x").expect("no-op");
            n.status("x").expect("no-op");
            n.reloading().expect("no-op");
            n.stopping().expect("no-op");
            n.watchdog().expect("no-op");
        }
    }

    #[test]
    fn a_missing_socket_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gone.sock");
        let err = notifier(&path).ready("x").expect_err("no listener");
        let msg = err.to_string();
        assert!(msg.contains("READY=1"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("Type=notify"), "{msg}");
        assert_eq!(err.kind(), "notify");
    }

    #[test]
    fn a_manager_that_does_not_read_never_blocks_the_sender() {
        let (_dir, path, _listener) = socket();
        let n = notifier(&path);
        // The kernel queues ~10 datagrams (net.unix.max_dgram_qlen); then sends fail at once.
        let errors: Vec<NotifyError> = (0..100).filter_map(|_| n.watchdog().err()).collect();
        let err = errors.first().expect("a full queue is reported");
        assert!(err.to_string().contains("WATCHDOG=1"), "{err}");
    }

    #[test]
    fn watchdog_interval_is_half_of_watchdog_usec_for_our_pid() {
        let s = Some(OsStr::new("/run/systemd/notify"));
        let n = Notifier::new(s, Some("60000000"), None, 42);
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(30)));
        let n = Notifier::new(s, Some("60000000"), Some("42"), 42);
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(30)));
        // Meant for another process, zero, garbage: no watchdog.
        for (usec, pid) in [("60000000", Some("7")), ("0", None), ("soon", None)] {
            assert_eq!(
                Notifier::new(s, Some(usec), pid, 42).watchdog_interval(),
                None
            );
        }
    }

    #[test]
    fn status_line_matches_the_documented_example() {
        let c = StatusCounts {
            up_to_date: 37,
            pending: 2,
            next_expiry: Some(TD::days(41) + TD::hours(5)),
            ..Default::default()
        };
        assert_eq!(
            status_line(&c),
            "37 domains up to date, 2 pending, next expiry in 41 days"
        );
    }

    #[test]
    fn status_line_mentions_only_what_is_there() {
        let c = StatusCounts {
            up_to_date: 1,
            ..Default::default()
        };
        assert_eq!(status_line(&c), "1 domain up to date");
        let c = StatusCounts {
            up_to_date: 0,
            failed: 3,
            uncovered: 1,
            next_expiry: Some(TD::hours(5)),
            ..Default::default()
        };
        assert_eq!(
            status_line(&c),
            "0 domains up to date, 3 failing, 1 without a valid certificate, next expiry in 5 hours"
        );
    }

    #[test]
    fn status_line_names_the_products_when_dcdn_domains_are_managed() {
        let c = StatusCounts {
            up_to_date: 5,
            pending: 1,
            dcdn: 2,
            ..Default::default()
        };
        assert_eq!(
            status_line(&c),
            "5 domains up to date, 1 pending (4 cdn + 2 dcdn managed)"
        );
    }

    #[test]
    fn status_line_expiry_wording() {
        let line = |d| {
            status_line(&StatusCounts {
                up_to_date: 2,
                next_expiry: Some(d),
                ..Default::default()
            })
        };
        assert!(line(TD::days(1)).ends_with("next expiry in 1 day"));
        assert!(line(TD::hours(1)).ends_with("next expiry in 1 hour"));
        assert!(line(TD::minutes(20)).ends_with("next expiry in less than an hour"));
        assert!(line(-TD::days(3)).ends_with("a deployed certificate expired 3 days ago"));
        assert!(line(-TD::minutes(3)).ends_with("expired less than a day ago"));
    }
}
