//! `certrotd emulate`: runs the local stand-in for the CDN certificate API (see
//! `crate::emulator`) until SIGINT or SIGTERM. Prints `listening on ADDR` on stdout once it
//! accepts connections, so a script or a test can read the port.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{CmdResult, Exit};
use zeroize::Zeroizing;

use crate::emulator::{self, Emulator, EmulatorConfig, EmulatorError, Faults, Product};
use crate::fsio;

#[derive(clap::Args, Debug, Clone)]
pub struct EmulateArgs {
    /// Address to listen on (port 0 picks a free one; the bound address is printed)
    #[arg(long, default_value = "127.0.0.1:0")]
    pub(crate) listen: SocketAddr,
    /// File of known CDN domains, one per line (# comments; .example.com is a wildcard domain)
    #[arg(long)]
    pub(crate) domains_file: PathBuf,
    /// AccessKeyId the emulator accepts
    #[arg(long, default_value = emulator::DEFAULT_ACCESS_KEY_ID)]
    pub(crate) access_key_id: String,
    /// AccessKey secret the emulator accepts (a local fake, never a real secret)
    #[arg(long, default_value = emulator::DEFAULT_ACCESS_KEY_SECRET)]
    pub(crate) access_key_secret: String,
    /// Most domains one BatchSetCdnDomainServerCertificate call may name
    #[arg(long, default_value_t = 50)]
    pub(crate) max_domains_per_call: usize,
    /// BatchSetCdnDomainServerCertificate calls admitted in any rolling second
    #[arg(long, default_value_t = 10)]
    pub(crate) writes_per_second: u32,
    /// SetCdnDomainSSLCertificate calls admitted in any rolling second (own budget)
    #[arg(long, default_value_t = 30)]
    pub(crate) per_domain_writes_per_second: u32,
    /// Describe calls admitted in any rolling second
    #[arg(long, default_value_t = 100)]
    pub(crate) reads_per_second: u32,
    /// Probability of answering HTTP 503 ServiceUnavailable
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub(crate) fail_rate: f64,
    /// Probability of answering HTTP 500 InternalError
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub(crate) internal_rate: f64,
    /// Probability of closing the connection without an answer
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub(crate) reset_rate: f64,
    /// Probability of answering HTTP 400 Throttling.User
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub(crate) throttle_rate: f64,
    /// Delay before every answer, in milliseconds
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub(crate) latency_ms: u64,
    /// Seed of the injected-fault sequence (same seed, same faults in the same order)
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub(crate) seed: u64,
    /// Keep a JSON dump of the served state and the request log here (rewritten atomically
    /// after every request and on exit)
    #[arg(long, value_name = "FILE")]
    pub(crate) state_dump: Option<PathBuf>,
    /// The product to emulate: cdn (cdn.aliyuncs.com, 2018-05-10) or dcdn
    /// (dcdn.aliyuncs.com, 2018-01-15; run one emulator per product)
    #[arg(long, value_enum, default_value = "cdn")]
    pub(crate) product: ProductArg,
    /// Answer the CDN batch call BatchSetCdnDomainServerCertificate with 404
    /// InvalidAction.NotFound, as once Alibaba retires it
    #[arg(long)]
    pub(crate) batch_gone: bool,
    /// A known domain to list as offline (writes to it are refused); repeatable
    #[arg(long, value_name = "DOMAIN")]
    pub(crate) offline_domain: Vec<String>,
    /// Region of the emulated SSL Certificates Service (CAS); bindings by CertId must name it
    #[arg(long, default_value = "cn-hangzhou", value_name = "REGION")]
    pub(crate) cas_region: String,
    /// A certificate already in CAS as a user's upload, NAME=FULLCHAIN_FILE,KEY_FILE
    /// (repeatable)
    #[arg(long, value_name = "NAME=CHAIN,KEY")]
    pub(crate) cas_user_cert: Vec<String>,
    /// Extra delay before the answer of every CDN write call, in milliseconds
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub(crate) write_latency_ms: u64,
    /// Life of every set of temporary credentials its STS and instance metadata service issue,
    /// in seconds (default: the DurationSeconds asked, as STS does; 6 hours for the instance)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(5..=43200))]
    pub(crate) sts_lifetime_secs: Option<u64>,
}

/// `--product`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProductArg {
    Cdn,
    Dcdn,
}

impl EmulateArgs {
    fn config(&self) -> Result<EmulatorConfig, EmulatorError> {
        Ok(EmulatorConfig {
            access_key_id: self.access_key_id.clone(),
            access_key_secret: self.access_key_secret.clone(),
            domains: emulator::load_domains_file(&self.domains_file)?,
            max_domains_per_call: self.max_domains_per_call,
            writes_per_second: self.writes_per_second,
            per_domain_writes_per_second: self.per_domain_writes_per_second,
            reads_per_second: self.reads_per_second,
            faults: Faults {
                fail_rate: self.fail_rate,
                internal_rate: self.internal_rate,
                reset_rate: self.reset_rate,
                throttle_rate: self.throttle_rate,
            },
            latency: Duration::from_millis(self.latency_ms),
            seed: self.seed,
            state_dump: self.state_dump.clone(),
            product: match self.product {
                ProductArg::Cdn => Product::Cdn,
                ProductArg::Dcdn => Product::Dcdn,
            },
            batch_gone: self.batch_gone,
            offline: self.offline_domain.clone(),
            cas_region: self.cas_region.clone(),
            cas_user_certs: self
                .cas_user_cert
                .iter()
                .map(|spec| user_cert(spec))
                .collect::<Result<_, _>>()?,
            write_latency: Duration::from_millis(self.write_latency_ms),
            sts_lifetime: self.sts_lifetime_secs.map(Duration::from_secs),
        })
    }
}

/// Largest certificate or key file read for `--cas-user-cert`.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// `NAME=CHAIN,KEY` → the name and the two files' text.
fn user_cert(spec: &str) -> Result<(String, String, Zeroizing<String>), EmulatorError> {
    let bad = |why: String| EmulatorError::Config(format!("--cas-user-cert {spec:?}: {why}"));
    let (name, files) = spec
        .split_once('=')
        .ok_or_else(|| bad("write NAME=FULLCHAIN_FILE,KEY_FILE".to_string()))?;
    let (chain, key) = files
        .split_once(',')
        .ok_or_else(|| bad("write NAME=FULLCHAIN_FILE,KEY_FILE".to_string()))?;
    let read = |path: &str| {
        let bytes = fsio::read(Path::new(path), MAX_PEM_BYTES)
            .map_err(|e| bad(format!("cannot read {path}: {}", e.reason())))?;
        String::from_utf8(bytes).map_err(|_| bad(format!("{path} is not PEM text")))
    };
    let chain = read(chain)?;
    let key = Zeroizing::new(read(key)?);
    Ok((name.to_string(), chain, key))
}

pub fn run(args: &EmulateArgs) -> CmdResult {
    let cfg = args.config()?;
    let domains = cfg.domains.len();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(EmulatorError::Runtime)?;
    runtime.block_on(serve(args.listen, cfg, domains))?;
    Ok(Exit::Ok)
}

async fn serve(
    listen: SocketAddr,
    cfg: EmulatorConfig,
    domains: usize,
) -> Result<(), EmulatorError> {
    use tokio::signal::unix::{SignalKind, signal};
    // Handlers first, so a signal right after the "listening" line is not lost.
    let mut term = signal(SignalKind::terminate()).map_err(EmulatorError::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(EmulatorError::Runtime)?;
    let access_key_id = cfg.access_key_id.clone();
    let section = match cfg.product {
        Product::Cdn => "[aliyun]",
        Product::Dcdn => "[dcdn]",
    };
    let emu = Emulator::start(listen, cfg).await?;
    announce(&emu, domains, &access_key_id, section)?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("emulator stopping");
    emu.shutdown().await;
    Ok(())
}

/// The `listening on ADDR` line (stdout, flushed) and a hint for the configuration (stderr).
fn announce(
    emu: &Emulator,
    domains: usize,
    access_key_id: &str,
    section: &str,
) -> Result<(), EmulatorError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", emu.addr())
        .and_then(|()| out.flush())
        .map_err(EmulatorError::Runtime)?;
    eprintln!(
        "certrotd emulate: {domains} domains; point certrotd at it with {section} endpoint = \"{}\" and AccessKeyId {access_key_id:?}; Ctrl-C stops it",
        emu.endpoint()
    );
    Ok(())
}
