//! The `certrotd` binary: command line, logging set-up and exit codes. Nothing else: each
//! command's work lives in `certrotd::cmd`.

use std::path::PathBuf;
use std::process::ExitCode;

use certrotd::cmd::{self, Exit};
use clap::{Args, Parser, Subcommand};

/// Keeps Alibaba Cloud CDN HTTPS certificates in step with the certificates an ACME client
/// (certbot, acme.sh, lego, cert-manager) renews on disk.
#[derive(Parser, Debug)]
#[command(name = "certrotd", version, about)]
struct Cli {
    /// Configuration file [default: $CERTROTD_CONFIG, else /etc/certrotd/certrotd.toml]
    #[arg(short, long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log format on stderr
    #[arg(long, global = true, value_enum, default_value_t = cmd::LogFormat::Human)]
    log_format: cmd::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the configuration and every certificate lineage (no network unless --online)
    Check(cmd::check::CheckArgs),
    /// One reconciliation pass: scan, validate, plan, push, record
    Sync(cmd::sync::SyncArgs),
    /// Show the deployed state (no network)
    Status(cmd::status::StatusArgs),
    /// Run as a daemon: watch the certificate folders and keep the CDN in step
    Run,
    /// Run a local emulator of the CDN certificate API
    Emulate(Box<EmulateCli>),
    /// Show certrotd's whole job on a local emulator and a temporary certificate tree
    Demo,
}

#[derive(Args, Debug)]
struct EmulateCli {
    #[command(flatten)]
    args: cmd::emulate::EmulateArgs,
}

fn config_path(cli: &Cli) -> PathBuf {
    cli.config
        .clone()
        .or_else(|| std::env::var_os("CERTROTD_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(certrotd::config::DEFAULT_PATH))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cmd::init_logging(cli.log_format);
    let config = config_path(&cli);
    let result = match &cli.command {
        Command::Check(args) => cmd::check::run(&config, args),
        Command::Sync(args) => cmd::sync::run(&config, args),
        Command::Status(args) => cmd::status::run(&config, args),
        Command::Run => cmd::run::run(&config),
        Command::Emulate(e) => cmd::emulate::run(&e.args),
        Command::Demo => cmd::demo::run(),
    };
    match result {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) => {
            eprintln!("certrotd: error: {:#}", anyhow::Error::from_boxed(err));
            ExitCode::from(Exit::Problems.code())
        }
    }
}
