//! `certrotd run` (SKELETON).
use std::path::Path;

use super::CmdResult;

pub fn run(config: &Path) -> CmdResult {
    let _ = config;
    todo!("run")
}
