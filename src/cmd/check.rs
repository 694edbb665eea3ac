//! `certrotd check` (SKELETON: owned by the config/source owner).
use std::path::Path;

use super::CmdResult;

pub fn run(config: &Path) -> CmdResult {
    let _ = config;
    todo!("check")
}
