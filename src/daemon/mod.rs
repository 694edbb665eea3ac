//! The daemon's building blocks: everything `certrotd run` needs around a reconcile pass.
//!
//! Owns: watching the certificate folders ([`watch`]), deciding when the next pass starts
//! ([`schedule`], pure), telling a renewal in progress from a broken lineage ([`torn`], pure),
//! talking to systemd ([`notify`]), turning SIGTERM/SIGINT/SIGHUP/SIGUSR1 into requests
//! ([`signals`]), and the main loop that ties them together around a reconcile pass
//! ([`runner`], generic over [`runner::Reconciler`]).
//!
//! Invariant (DESIGN.md, "The one idea"): file events, timers and signals only *schedule* a
//! pass; nothing here carries data a pass relies on. A lost event costs at most a later pass
//! (the periodic rescan), never a wrong update.
//!
//! Log fields: every log line about a certificate lineage carries it as the field `lineage`
//! (its folder or file path), every line about a CDN domain as the field `domain`, and every
//! line about a watched folder as the field `path`.

pub(crate) mod alerts;
pub(crate) mod hooks;
pub(crate) mod notify;
pub(crate) mod observe;
pub(crate) mod runner;
pub(crate) mod schedule;
pub(crate) mod service;
pub(crate) mod signals;
pub(crate) mod torn;
pub(crate) mod watch;
