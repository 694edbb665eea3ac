//! certrotd keeps the HTTPS certificates of Alibaba Cloud CDN domains in step with the
//! certificates an ACME client renews on local disk.
//!
//! Architecture (see DESIGN.md): level-triggered reconciliation. Each pass scans the disk
//! (`source`), validates (`cert`, pure), plans against the deployed state (`plan`, pure;
//! `state`), and pushes (`push` through `aliyun`). `daemon` only schedules passes.
//! `emulator` is a local stand-in for the CDN certificate API. Every file certrotd reads or
//! replaces goes through `fsio` (the capped non-blocking reader, the atomic writer).
//! `untrusted` makes text from outside (server answers, file names, certificate names) safe
//! to log, show or store.

#![warn(unreachable_pub)]

pub mod aliyun;
pub mod cert;
pub mod cmd;
pub mod config;
pub(crate) mod daemon;
pub mod emulator;
pub mod fsio;
pub mod plan;
pub mod push;
pub(crate) mod reconcile;
pub mod source;
pub mod state;
pub mod testca;
pub(crate) mod untrusted;
