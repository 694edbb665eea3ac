//! `certrotd demo` (SKELETON).
use super::CmdResult;

pub fn run() -> CmdResult {
    todo!("demo")
}
