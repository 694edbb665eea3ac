//! Integration tests: the real `certrotd` binary against real folders and the emulator.
//! One test binary; shared helpers live in `harness`.
mod deploy_hook;
