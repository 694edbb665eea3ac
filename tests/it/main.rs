//! Integration tests: the real `certrotd` binary against real folders and the emulator.
//! One test binary; shared helpers live in `harness`.

mod acme;
mod aliyun_client;
mod cas;
mod check;
mod check_online;
mod cli;
mod credentials;
mod daemon;
mod dcdn;
mod dcdn_cas;
mod deploy_hook;
mod docs;
mod emulate;
mod fallback;
mod files;
mod harness;
mod hostile;
mod metrics;
mod notify;
mod per_domain;
mod proxy;
mod push;
mod signature_v3;
mod status;
mod sync;
