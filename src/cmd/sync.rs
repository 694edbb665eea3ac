//! `certrotd sync` (SKELETON).
use std::path::Path;

use super::CmdResult;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct SyncArgs {
    /// Print the plan; make no write call
    #[arg(long)]
    pub dry_run: bool,
    /// Treat every covered domain as out of date
    #[arg(long)]
    pub force: bool,
}

pub fn run(config: &Path, args: &SyncArgs) -> CmdResult {
    let _ = (config, args);
    todo!("sync")
}
