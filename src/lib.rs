//! certrotd keeps the HTTPS certificates of Alibaba Cloud CDN domains in step with the
//! certificates an ACME client renews on local disk.
//!
//! Architecture (see ARCHITECTURE.md and DESIGN.md): level-triggered reconciliation. Each
//! pass scans the disk (`source`), validates (`cert`, pure), plans against the deployed state
//! (`plan`, pure; `state`), and pushes (`push` through `aliyun`); `reconcile` owns the pass,
//! and `daemon` only schedules passes.
//!
//! Modules, with their one-line roles:
//!
//! | module | role | public? |
//! |---|---|---|
//! | [`cert`] | pure: PEM chain and key → `Certificate` or why not; coverage; upload form | yes: tests, benches `scan`, `cover` |
//! | [`plan`] | pure: domains × valid certificates × deployed state → batches | yes: bench `cover` |
//! | [`source`] | finding and reading certificate material (layouts, caps, symlinks) | yes: bench `scan` |
//! | [`state`] | the deployed-state file: lock, atomic save, versioned format | yes: tests read the state file |
//! | [`config`] | read the config and the files it names, then validate | yes: `main.rs` (default path), tests (`AliyunSettings`) |
//! | [`fsio`] | the one capped non-blocking reader and the one atomic writer | yes, only [`fsio::FsError`] (and its `FileKind`): `state::StateError` carries it |
//! | `untrusted` | pure: identifier patterns, key-material redaction, control-character escaping | no |
//! | [`aliyun`] | signing, HTTP client, error classification, credentials; `cdn`: the batch call as a `push::Target` | yes: tests, benches `push` |
//! | [`push`] | the `Target` seam and the executor (lanes, limiters, canary, retries, read-back) | yes: tests, benches `push`, `sync` |
//! | `reconcile` | the pass: plan, push, record, summary, verdict; pending confirmation, read-back | no |
//! | `metrics` | Prometheus metrics and `/healthz` of `certrotd run` (`[metrics] listen`) | no |
//! | `daemon` | `certrotd run`: the loop, the service, watching, signals, systemd notify | no |
//! | [`cmd`] | one file per subcommand; `Exit` codes | yes: `main.rs` |
//! | [`emulator`] | a faithful local stand-in for the Alibaba APIs (`certrotd emulate`, tests) | yes: tests, benches |
//! | [`testca`] | a throwaway CA for `certrotd demo`, the tests and the benches | yes: tests, benches |
//!
//! What is public: only what `src/main.rs` (a separate binary crate), the integration tests
//! (`tests/it`) or the benches (`benches/`) use; everything else is `pub(crate)`.
//! `#![warn(unreachable_pub)]` (an error under CI's `clippy -D warnings`) keeps a `pub` item
//! that nothing outside can reach from coming back.

#![warn(unreachable_pub)]

pub mod aliyun;
pub mod cert;
pub mod cmd;
pub mod config;
pub(crate) mod daemon;
pub mod emulator;
pub mod fsio;
pub(crate) mod metrics;
pub mod plan;
pub mod push;
pub(crate) mod reconcile;
pub mod source;
pub mod state;
pub mod testca;
pub(crate) mod untrusted;
