//! `certrotd status` (SKELETON).
use std::path::Path;

use super::CmdResult;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct StatusArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

pub fn run(config: &Path, args: &StatusArgs) -> CmdResult {
    let _ = (config, args);
    todo!("status")
}
