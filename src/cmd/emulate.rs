//! `certrotd emulate` (SKELETON: owned by the emulator owner).
use std::net::SocketAddr;
use std::path::PathBuf;

use super::CmdResult;

#[derive(clap::Args, Debug, Clone)]
pub struct EmulateArgs {
    /// Address to listen on (port 0 picks a free one; the bound address is printed)
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// File of known CDN domains, one per line (# comments)
    #[arg(long)]
    pub domains_file: PathBuf,
}

pub fn run(args: &EmulateArgs) -> CmdResult {
    let _ = args;
    todo!("emulate")
}
