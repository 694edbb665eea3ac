//! SIGTERM, SIGINT, SIGHUP and SIGUSR1 as requests to the main loop.
//!
//! Owns: the process's handlers for these four signals. Install them with
//! [`Signals::install`] *before* the first scan, so a signal that arrives during a long
//! first pass is queued instead of killing the process (the default action of SIGHUP and
//! SIGUSR1 is to terminate; a `certrotd sync` sends SIGUSR1 to the PID the state lock file
//! records, so the handler must be in place before `run` takes the lock). Once installed, tokio keeps the handlers for the life of the process.
//!
//! Invariant: a signal delivered while nobody is awaiting [`Signals::recv`] is not lost; it is
//! returned by the next `recv` (several deliveries of the same signal may merge into one).

use tokio::signal::unix::{SignalKind, signal};

/// What a signal asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// SIGTERM or SIGINT: stop taking new work, finish the call in flight, save, exit 0.
    Stop,
    /// SIGHUP: re-read the configuration; keep the old one if the new one is bad.
    Reload,
    /// SIGUSR1: run a pass now (a `certrotd sync` handing its work over); no reload.
    PassNow,
}

/// Installing a handler failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SignalError {
    #[error(
        "cannot install the {signal} handler: {source}; certrotd must run inside its \
         tokio runtime (this is a bug if you see it from the command line)"
    )]
    Install {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl SignalError {
    /// A short label for logs and metrics.
    // Part of the label set (ARCHITECTURE.md) like every edge error's `kind()`, but nothing
    // reads it yet: `run` hands this start-up error to main.rs, which prints it whole.
    #[expect(
        dead_code,
        reason = "kept for the label set; the error reaches main.rs via anyhow"
    )]
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            SignalError::Install { .. } => "signal",
        }
    }
}

/// The installed handlers.
#[derive(Debug)]
pub(crate) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the SIGTERM, SIGINT, SIGHUP and SIGUSR1 handlers. Must be called within a tokio
    /// runtime.
    pub(crate) fn install() -> Result<Signals, SignalError> {
        let install = |kind: SignalKind, name: &'static str| {
            signal(kind).map_err(|source| SignalError::Install {
                signal: name,
                source,
            })
        };
        Ok(Signals {
            term: install(SignalKind::terminate(), "SIGTERM")?,
            int: install(SignalKind::interrupt(), "SIGINT")?,
            hup: install(SignalKind::hangup(), "SIGHUP")?,
            usr1: install(SignalKind::user_defined1(), "SIGUSR1")?,
        })
    }

    /// Waits for the next signal. Cancel-safe: usable as a `tokio::select!` branch. If the
    /// runtime is shutting down (no more signals can arrive), returns [`Signal::Stop`].
    pub(crate) async fn recv(&mut self) -> Signal {
        tokio::select! {
            got = self.term.recv() => stop_or(got, Signal::Stop),
            got = self.int.recv() => stop_or(got, Signal::Stop),
            got = self.hup.recv() => stop_or(got, Signal::Reload),
            got = self.usr1.recv() => stop_or(got, Signal::PassNow),
        }
    }
}

fn stop_or(got: Option<()>, signal: Signal) -> Signal {
    match got {
        Some(()) => signal,
        None => Signal::Stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn raise(sig: libc::c_int) {
        // SAFETY: kill(2) on our own pid with a signal whose handler is installed above.
        let rc = unsafe { libc::kill(libc::getpid(), sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    async fn next(signals: &mut Signals) -> Signal {
        tokio::time::timeout(Duration::from_secs(10), signals.recv())
            .await
            .expect("the signal arrives")
    }

    /// One test for all four signals, so that no other test in this binary sees them
    /// (each `Signals` sees every delivery). The handlers stay installed afterwards, so the
    /// process survives these signals.
    #[tokio::test]
    async fn term_int_and_hup_become_requests_and_are_queued_until_read() {
        let mut signals = Signals::install().expect("install");
        raise(libc::SIGHUP);
        assert_eq!(next(&mut signals).await, Signal::Reload);
        raise(libc::SIGTERM);
        assert_eq!(next(&mut signals).await, Signal::Stop);
        raise(libc::SIGINT);
        assert_eq!(next(&mut signals).await, Signal::Stop);
        raise(libc::SIGUSR1);
        assert_eq!(next(&mut signals).await, Signal::PassNow);
        // Delivered while nobody waits: returned by the next recv.
        raise(libc::SIGHUP);
        tokio::task::yield_now().await;
        assert_eq!(next(&mut signals).await, Signal::Reload);
        // The main loop reads them from a channel.
        let mut rx = crate::daemon::runner::signal_channel(signals);
        raise(libc::SIGTERM);
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        assert_eq!(got.expect("the signal arrives"), Some(Signal::Stop));
    }

    #[test]
    fn closed_stream_means_stop() {
        assert_eq!(stop_or(None, Signal::Reload), Signal::Stop);
        assert_eq!(stop_or(Some(()), Signal::Reload), Signal::Reload);
    }
}
