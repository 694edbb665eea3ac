//! The `certrotd` binary: command line, logging set-up and exit codes. Nothing else: each
//! command's work lives in `certrotd::cmd`.

use std::path::PathBuf;
use std::process::ExitCode;

use certrotd::cmd::{self, Exit};
use clap::{Args, CommandFactory as _, Parser, Subcommand};

/// Keeps Alibaba Cloud CDN HTTPS certificates in step with the certificates an ACME client
/// (certbot, acme.sh, lego, cert-manager) renews on disk.
#[derive(Parser, Debug)]
#[command(name = "certrotd", version, about)]
struct Cli {
    /// Configuration file [default: $CERTROTD_CONFIG, else /etc/certrotd/certrotd.toml]
    /// (also accepted after check, sync, status and run; emulate and demo read none)
    #[arg(short, long, value_name = "PATH")]
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
    Check {
        #[command(flatten)]
        args: cmd::check::CheckArgs,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// One reconciliation pass: scan, validate, plan, push, record
    Sync {
        #[command(flatten)]
        args: cmd::sync::SyncArgs,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show the deployed state (no network)
    Status {
        #[command(flatten)]
        args: cmd::status::StatusArgs,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run as a daemon: watch the certificate folders and keep the CDN in step
    Run(ConfigArg),
    /// Run a local emulator of the CDN certificate API
    Emulate(Box<EmulateCli>),
    /// Show certrotd's whole job on a local emulator and a temporary certificate tree
    Demo,
    /// Write a shell completion script to stdout (bash, zsh, fish, elvish, powershell)
    Completions(cmd::docs::CompletionsArgs),
    /// Write the man pages (certrotd.1, certrotd-<command>.1) into a folder
    Man(cmd::docs::ManArgs),
}

/// `-c` for the commands that read the configuration.
#[derive(Args, Debug)]
struct ConfigArg {
    /// Configuration file [default: $CERTROTD_CONFIG, else /etc/certrotd/certrotd.toml]
    #[arg(short, long, value_name = "PATH")]
    config: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct EmulateCli {
    #[command(flatten)]
    args: cmd::emulate::EmulateArgs,
}

/// The subcommand's `-c`, else the one before it, else `$CERTROTD_CONFIG`, else the default.
fn config_path(cli: &Cli, sub: &ConfigArg) -> PathBuf {
    sub.config
        .clone()
        .or_else(|| cli.config.clone())
        .or_else(|| std::env::var_os("CERTROTD_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(certrotd::config::DEFAULT_PATH))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cmd::init_logging(cli.log_format);
    let result = match &cli.command {
        Command::Check { args, config } => cmd::check::run(&config_path(&cli, config), args),
        Command::Sync { args, config } => cmd::sync::run(&config_path(&cli, config), args),
        Command::Status { args, config } => cmd::status::run(&config_path(&cli, config), args),
        Command::Run(c) => cmd::run::run(&config_path(&cli, c)),
        Command::Emulate(e) => cmd::emulate::run(&e.args),
        Command::Demo => cmd::demo::run(),
        Command::Completions(args) => cmd::docs::completions(Cli::command(), args),
        Command::Man(args) => cmd::docs::man(Cli::command(), args),
    };
    match result {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(err) => {
            eprintln!(
                "certrotd: error: {}",
                chain(&anyhow::Error::from_boxed(err))
            );
            ExitCode::from(Exit::Problems.code())
        }
    }
}

/// The error and its causes, `: `-joined, leaving out a cause whose text the message already
/// holds (errors whose message quotes their source would otherwise say it twice).
fn chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
