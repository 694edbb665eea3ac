//! The subcommands' work, one file each, so that `main.rs` stays a thin CLI layer.
//! Each command prints its own report to stdout and returns an [`Exit`] code; errors that
//! abort a command are returned to `main`, which prints their chain.

/// Process exit codes (documented in the README).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Everything is in order.
    Ok = 0,
    /// The command ran, but something needs attention (invalid lineage, failed push, …).
    Problems = 1,
    /// Wrong command-line usage (clap's code).
    Usage = 2,
    /// A pass ran but its outcome could not be saved to the state file, e.g. a full disk
    /// (EX_IOERR: an error while doing I/O on a file; distinct from 1 so a deploy hook or a
    /// monitor can tell "deployed but not recorded — fix the disk" from "a domain failed").
    Unrecorded = 74,
    /// Another certrotd holds the state folder's lock; try again later (EX_TEMPFAIL).
    Locked = 75,
    /// The configuration is invalid (EX_CONFIG).
    Config = 78,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Verdict> for Exit {
    fn from(v: Verdict) -> Exit {
        match v {
            Verdict::Clean => Exit::Ok,
            Verdict::Problems => Exit::Problems,
            Verdict::Unrecorded => Exit::Unrecorded,
        }
    }
}

use crate::reconcile::Verdict;

pub mod check;
pub mod demo;
pub mod docs;
pub mod emulate;
pub(crate) mod handoff;
pub mod run;
pub mod status;
pub mod sync;
pub(crate) mod text;

#[cfg(test)]
mod labels;

/// What a command returns: its exit code, or an error that aborted it (printed by `main`).
pub(crate) type CmdResult = Result<Exit, Box<dyn std::error::Error + Send + Sync>>;

/// Log line format on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable (under journald: no timestamps, syslog priority prefixes)
    Human,
    /// One JSON object per line, for log shippers
    Json,
}

mod logging;

/// Sets up `tracing` on stderr; the level comes from `RUST_LOG` (default `info`). Human lines
/// on a terminal; under journald (`$JOURNAL_STREAM` is stderr) no timestamps and syslog
/// priority prefixes (`<3>` … `<7>`); JSON lines with `--log-format json`. Log fields:
/// `lineage` and `domain` (see `logging`).
pub fn init_logging(format: LogFormat) {
    logging::init(format);
}
