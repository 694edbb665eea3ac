//! A local stand-in for Alibaba Cloud CDN's certificate API, over plain HTTP/1 on loopback.
//!
//! Owns: the HTTP server (hyper 1), the API's checks and error codes (`api`), the per-domain
//! served state, the request log and the JSON state dump (`record`), and fault injection.
//! Used by `certrotd emulate` (a documented tool: try a configuration without touching
//! production), `certrotd demo` and the integration tests.
//!
//! The SSL Certificates Service (CAS, `2020-04-07`) is answered on the same port (`cas`:
//! told apart by action and `Version`), with bindings to it in the write calls.
//!
//! It implements `BatchSetCdnDomainServerCertificate`, `DescribeDomainCertificateInfo` and
//! `DescribeUserDomains` with the real API's signature checks — v1 (HMAC-SHA1, recomputed
//! from the parameters as received, query and form body together) and V3 (`ACS3-HMAC-SHA256`
//! in `Authorization`, recomputed from the headers it lists, the query and the body's
//! hash) — 15-minute timestamp window, single-use nonces,
//! per-AccessKeyId rate limits (writes 10/s, reads 100/s by default), per-call domain limit,
//! known domains, and certificate checks (parses, key matches, valid now, covers each domain).
//!
//! Invariants: no private key text is stored, logged or dumped; an injected fault or a
//! refused call changes no served state; times in the log come from tokio's clock (paused
//! time works) while timestamps and certificate validity use the wall clock; the state dump
//! on disk reflects a request before that request is answered.

mod api;
mod cas;
mod dcdn;
mod record;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming as Body;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use time::OffsetDateTime;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

pub use cas::CasCert;
pub use record::{Dump, DumpedCas, LogEntry, Served};

#[cfg(test)]
use api::{
    ACTION_DESCRIBE_CERT, ACTION_SET, ACTION_SET_SSL, ACTION_USER_DOMAINS, MAX_QUERY, RATE_WINDOW,
    VERSION,
};
use api::{Incoming, Reply, State};
use record::write_atomically;

use zeroize::Zeroizing;

use crate::cert::Certificate;
pub use crate::config::Product;

/// Default AccessKeyId the emulator accepts.
pub const DEFAULT_ACCESS_KEY_ID: &str = "emulator";
/// Default AccessKey secret the emulator accepts (a fake: the emulator is local only).
pub const DEFAULT_ACCESS_KEY_SECRET: &str = "emulator-secret";
/// Largest request body accepted (certificate chains are a few KiB).
pub(crate) const MAX_BODY: usize = 1 << 20;
/// How long shutdown waits for requests in flight before dropping their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Probabilities (each in [0, 1], sum at most 1) of injected faults, drawn once per request.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// HTTP 503 `ServiceUnavailable`.
    pub fail_rate: f64,
    /// HTTP 500 `InternalError`.
    pub internal_rate: f64,
    /// Connection closed without an answer.
    pub reset_rate: f64,
    /// HTTP 400 `Throttling.User`.
    pub throttle_rate: f64,
}

impl Faults {
    fn validate(&self) -> Result<(), EmulatorError> {
        let rates = [
            ("--fail-rate", self.fail_rate),
            ("--internal-rate", self.internal_rate),
            ("--reset-rate", self.reset_rate),
            ("--throttle-rate", self.throttle_rate),
        ];
        for (name, p) in rates {
            if !(0.0..=1.0).contains(&p) {
                return Err(EmulatorError::Config(format!(
                    "{name} {p} is not a probability: give a number from 0 to 1"
                )));
            }
        }
        let sum: f64 = rates.iter().map(|(_, p)| p).sum();
        if sum > 1.0 + 1e-9 {
            return Err(EmulatorError::Config(format!(
                "the fault rates add up to {sum}: lower them so their sum is at most 1"
            )));
        }
        Ok(())
    }
}

/// How to run an emulator.
#[derive(Clone)]
pub struct EmulatorConfig {
    pub(crate) access_key_id: String,
    pub access_key_secret: String,
    /// Known CDN domains (`.example.com` for a wildcard domain); case does not matter.
    pub(crate) domains: Vec<String>,
    /// Most domains one `BatchSetCdnDomainServerCertificate` may name (Alibaba: 10 or 50).
    pub max_domains_per_call: usize,
    /// Batch write calls admitted in any rolling second per AccessKeyId.
    pub writes_per_second: u32,
    /// `SetCdnDomainSSLCertificate` calls admitted in any rolling second per AccessKeyId
    /// (a budget of its own; Alibaba: 30).
    pub per_domain_writes_per_second: u32,
    /// Describe calls admitted in any rolling second per AccessKeyId.
    pub(crate) reads_per_second: u32,
    pub faults: Faults,
    /// Delay before every answer (tokio's clock).
    pub latency: Duration,
    /// Seed of the fault sequence (RequestIds are random at each start).
    pub seed: u64,
    /// Where to keep the JSON state dump, if anywhere.
    pub(crate) state_dump: Option<PathBuf>,
    /// The product this emulator is: CDN (default) or DCDN (its version, actions and
    /// answer shapes; see `dcdn`).
    pub product: Product,
    /// The CDN batch call answers `404 InvalidAction.NotFound`, as once Alibaba retires it.
    pub batch_gone: bool,
    /// Known domains that are offline: listed with `DomainStatus` `offline`, writes to
    /// them refused (`IllegalOperation`).
    pub offline: Vec<String>,
    /// The region of the emulated CAS (bindings by `CertId` must name it).
    pub cas_region: String,
    /// Certificates in CAS from the start, as a user's uploads: (name, chain PEM, key PEM).
    pub cas_user_certs: Vec<(String, String, Zeroizing<String>)>,
    /// Extra delay before the answer of every CDN write call (on top of `latency`).
    pub write_latency: Duration,
    /// The life of every set of temporary credentials its STS and metadata service issue
    /// (`None`: what the call asked, as STS does).
    pub sts_lifetime: Option<Duration>,
}

impl Default for EmulatorConfig {
    fn default() -> EmulatorConfig {
        EmulatorConfig {
            access_key_id: DEFAULT_ACCESS_KEY_ID.to_string(),
            access_key_secret: DEFAULT_ACCESS_KEY_SECRET.to_string(),
            domains: Vec::new(),
            max_domains_per_call: 50,
            writes_per_second: 10,
            per_domain_writes_per_second: 30,
            reads_per_second: 100,
            faults: Faults::default(),
            latency: Duration::ZERO,
            seed: 0,
            state_dump: None,
            product: Product::Cdn,
            batch_gone: false,
            offline: Vec::new(),
            cas_region: "cn-hangzhou".to_string(),
            cas_user_certs: Vec::new(),
            write_latency: Duration::ZERO,
            sts_lifetime: None,
        }
    }
}

impl EmulatorConfig {
    /// The defaults, knowing `domains`.
    pub fn with_domains<I, S>(domains: I) -> EmulatorConfig
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EmulatorConfig {
            domains: domains.into_iter().map(Into::into).collect(),
            ..EmulatorConfig::default()
        }
    }

    fn validate(&self) -> Result<(), EmulatorError> {
        self.faults.validate()?;
        if self.max_domains_per_call == 0 {
            return Err(EmulatorError::Config(
                "--max-domains-per-call must be at least 1".to_string(),
            ));
        }
        if self.per_domain_writes_per_second == 0 {
            return Err(EmulatorError::Config(
                "--per-domain-writes-per-second must be at least 1".to_string(),
            ));
        }
        if self.writes_per_second == 0 || self.reads_per_second == 0 {
            return Err(EmulatorError::Config(
                "the write and read rates must be at least 1 call per second".to_string(),
            ));
        }
        let known = |d: &String| {
            let d = d.to_ascii_lowercase();
            self.domains.iter().any(|k| k.eq_ignore_ascii_case(&d))
        };
        if let Some(d) = self.offline.iter().find(|d| !known(d)) {
            return Err(EmulatorError::Config(format!(
                "--offline-domain {d} is not one of the emulator's domains; add it to the domains file"
            )));
        }
        if self.access_key_id.is_empty() || self.access_key_secret.is_empty() {
            return Err(EmulatorError::Config(
                "the AccessKeyId and secret must not be empty".to_string(),
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorConfig")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &"<redacted>")
            .field("domains", &self.domains.len())
            .field("max_domains_per_call", &self.max_domains_per_call)
            .field("writes_per_second", &self.writes_per_second)
            .field(
                "per_domain_writes_per_second",
                &self.per_domain_writes_per_second,
            )
            .field("reads_per_second", &self.reads_per_second)
            .field("faults", &self.faults)
            .field("latency", &self.latency)
            .field("seed", &self.seed)
            .field("state_dump", &self.state_dump)
            .field("product", &self.product)
            .field("batch_gone", &self.batch_gone)
            .field("offline", &self.offline)
            .field("cas_region", &self.cas_region)
            .field("cas_user_certs", &self.cas_user_certs.len())
            .field("write_latency", &self.write_latency)
            .field("sts_lifetime", &self.sts_lifetime)
            .finish()
    }
}

/// Everything that can go wrong running the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot listen on {addr}: {source}; pick a free port (port 0 picks one for you)")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot read the domains file {}: {source}; check the path and its permissions", path.display())]
    DomainsFile { path: PathBuf, source: io::Error },
    #[error(
        "{}:{line}: {reason}; write one CDN domain per line (a.example.com, or .example.com for a wildcard domain), # starts a comment",
        path.display()
    )]
    DomainLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("the domains file {} lists no domains; add one CDN domain per line", path.display())]
    NoDomains { path: PathBuf },
    #[error("invalid emulator setting: {0}")]
    Config(String),
    #[error("the emulator does not know the domain {0}; add it to its domains")]
    UnknownDomain(String),
    #[error("cannot write the state dump {}: {source}; check that its folder exists and is writable", path.display())]
    StateDump { path: PathBuf, source: io::Error },
    #[error("cannot read the state dump {}: {reason}; is it a file written by certrotd emulate --state-dump?", path.display())]
    DumpRead { path: PathBuf, reason: String },
    #[error("the emulator's background task failed: {0}; this is a bug, please report it")]
    Task(String),
    #[error("cannot start the emulator: {0}; check the system's limits (threads, signals)")]
    Runtime(io::Error),
}

impl EmulatorError {
    /// A short label for logs and tests.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            EmulatorError::Bind { .. } => "bind",
            EmulatorError::DomainsFile { .. } => "domains-file",
            EmulatorError::DomainLine { .. } => "domain-line",
            EmulatorError::NoDomains { .. } => "no-domains",
            EmulatorError::Config(_) => "config",
            EmulatorError::UnknownDomain(_) => "unknown-domain",
            EmulatorError::StateDump { .. } => "state-dump",
            EmulatorError::DumpRead { .. } => "dump-read",
            EmulatorError::Task(_) => "task",
            EmulatorError::Runtime(_) => "runtime",
        }
    }
}

impl From<EmulatorError> for io::Error {
    fn from(e: EmulatorError) -> io::Error {
        let kind = match &e {
            EmulatorError::Bind { source, .. }
            | EmulatorError::DomainsFile { source, .. }
            | EmulatorError::StateDump { source, .. } => source.kind(),
            EmulatorError::Runtime(source) => source.kind(),
            EmulatorError::Task(_) => io::ErrorKind::Other,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

/// Reads a domains file: one domain per line, `#` starts a comment, blank lines ignored.
/// Domains are lowercased; `.example.com` is a wildcard domain (Alibaba's spelling).
pub(crate) fn load_domains_file(path: &Path) -> Result<Vec<String>, EmulatorError> {
    let bytes =
        crate::fsio::read(path, 64 * 1024 * 1024).map_err(|e| EmulatorError::DomainsFile {
            path: path.to_path_buf(),
            source: io::Error::new(
                e.io_error().map_or(io::ErrorKind::Other, io::Error::kind),
                e.reason(),
            ),
        })?;
    let text = String::from_utf8(bytes).map_err(|_| EmulatorError::DomainsFile {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"),
    })?;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let domain = line.to_ascii_lowercase();
        check_domain(&domain).map_err(|reason| EmulatorError::DomainLine {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        })?;
        out.push(domain);
    }
    if out.is_empty() {
        return Err(EmulatorError::NoDomains {
            path: path.to_path_buf(),
        });
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn check_domain(d: &str) -> Result<(), String> {
    if d.starts_with("*.") {
        // `d` starts with the one-byte '*', so `&d[1..]` is on a character boundary.
        return Err(format!(
            "{d:?}: Alibaba names wildcard CDN domains with a leading dot ({})",
            &d[1..]
        ));
    }
    let body = d.strip_prefix('.').unwrap_or(d);
    let labels_ok = body.split('.').all(|l| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if !labels_ok || body.len() > 253 || !body.contains('.') {
        return Err(format!("{d:?} is not a domain name"));
    }
    Ok(())
}

/// State shared by the server task, connections and the [`Emulator`] handle.
struct Shared {
    state: Mutex<State>,
    latency: Duration,
    write_latency: Duration,
    dump: Option<Dumper>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated in a way that
        // matters to a test stand-in; keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Brings the dump on disk up to `generation` (or later), one writer at a time.
    async fn write_dump(&self, generation: u64) -> Result<(), EmulatorError> {
        let Some(dumper) = &self.dump else {
            return Ok(());
        };
        let mut written = dumper.written.lock().await;
        if *written >= generation {
            return Ok(());
        }
        let (bytes, current) = {
            let mut st = self.lock();
            (st.dump_json(), st.generation())
        };
        let path = dumper.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| EmulatorError::Task(e.to_string()))??;
        *written = current;
        Ok(())
    }

    async fn write_dump_logged(&self, generation: u64) {
        if let Err(e) = self.write_dump(generation).await {
            tracing::warn!(error = %e, kind = e.kind(), "emulator state dump not written");
        }
    }
}

struct Dumper {
    path: PathBuf,
    /// The generation the file on disk reflects.
    written: tokio::sync::Mutex<u64>,
}

/// A running emulator. Dropping it stops the server (without a final dump); prefer
/// [`Emulator::shutdown`].
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Binds `listen` (port 0 picks a free port), writes the first state dump, and serves in
    /// the background on the current tokio runtime.
    pub async fn start(listen: SocketAddr, cfg: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        Emulator::start_with(listen, cfg, None).await
    }

    /// As [`Emulator::start`], for another product of the same account: the new emulator
    /// binds to `other`'s CAS (the account has one), so a certificate uploaded through
    /// either is bound by reference in both, and a `DeleteUserCertificate` to either is
    /// refused while a domain of either product is bound to it. `cfg`'s CAS settings
    /// (`cas_region`, `cas_user_certs`) are `other`'s: give none.
    pub async fn start_sharing_cas(
        listen: SocketAddr,
        cfg: EmulatorConfig,
        other: &Emulator,
    ) -> Result<Emulator, EmulatorError> {
        if !cfg.cas_user_certs.is_empty() {
            return Err(EmulatorError::Config(
                "an emulator sharing another's CAS takes no CAS seeds of its own: seed the first"
                    .to_string(),
            ));
        }
        let cas = other.shared.lock().cas_handle();
        Emulator::start_with(listen, cfg, Some(cas)).await
    }

    async fn start_with(
        listen: SocketAddr,
        cfg: EmulatorConfig,
        cas: Option<cas::SharedCas>,
    ) -> Result<Emulator, EmulatorError> {
        cfg.validate()?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| EmulatorError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: listen,
                source,
            })?;
        let mut state = State::new(&cfg, Instant::now());
        if let Some(cas) = cas {
            state.share_cas(cas);
        }
        for (name, chain, key) in &cfg.cas_user_certs {
            state
                .seed_cas(name, chain, key, OffsetDateTime::now_utc())
                .map_err(|why| EmulatorError::Config(format!("--cas-user-cert {name}: {why}")))?;
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            latency: cfg.latency,
            write_latency: cfg.write_latency,
            dump: cfg.state_dump.map(|path| Dumper {
                path,
                written: tokio::sync::Mutex::new(0),
            }),
        });
        if let Some(d) = &shared.dump {
            write_atomically(&d.path, &shared.lock().dump_json())?;
        }
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), stop_rx));
        tracing::info!(%addr, "emulator listening");
        Ok(Emulator {
            addr,
            shared,
            stop,
            task,
        })
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for certrotd's `endpoint` setting.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn log(&self) -> Vec<LogEntry> {
        self.shared.lock().log().to_vec()
    }

    /// The certificates in the emulated CAS.
    pub fn cas_certs(&self) -> Vec<CasCert> {
        self.shared.lock().cas().certs().cloned().collect()
    }

    /// Puts a certificate in CAS as a user's upload under `name` (as the console would);
    /// its `CertId`. The key is checked against the certificate, not kept.
    pub async fn seed_cas(&self, name: &str, chain: &str, key: &str) -> Result<u64, EmulatorError> {
        let (id, generation) = {
            let mut st = self.shared.lock();
            let id = st
                .seed_cas(name, chain, key, OffsetDateTime::now_utc())
                .map_err(|why| EmulatorError::Config(format!("CAS seed {name}: {why}")))?;
            (id, st.generation())
        };
        self.shared.write_dump_logged(generation).await;
        Ok(id)
    }

    /// Binds `domain` to the CAS certificate `cert_id`, as a change in the console would
    /// (for tests of what the cleanup must keep). The state dump is rewritten.
    pub async fn bind_cas(&self, domain: &str, cert_id: u64) -> Result<(), EmulatorError> {
        let served = self
            .shared
            .lock()
            .cas()
            .served_as(cert_id, OffsetDateTime::now_utc())
            .ok_or_else(|| EmulatorError::Config(format!("no CAS certificate {cert_id}")))?;
        self.change_served(domain, Some(served)).await
    }

    /// What each domain serves (domains serving nothing are absent).
    pub fn served(&self) -> BTreeMap<String, Served> {
        self.shared.lock().served().clone()
    }

    /// Makes `domain` serve `cert` under `cert_name`, as a change in the console would (for
    /// drift tests). The state dump is rewritten.
    pub async fn set_served(
        &self,
        domain: &str,
        cert: &Certificate,
        cert_name: &str,
    ) -> Result<(), EmulatorError> {
        let served = Served::new(cert, cert_name, "console", OffsetDateTime::now_utc());
        self.change_served(domain, Some(served)).await
    }

    /// Makes `domain` serve nothing (HTTPS turned off in the console).
    #[cfg(test)]
    pub(crate) async fn clear_served(&self, domain: &str) -> Result<(), EmulatorError> {
        self.change_served(domain, None).await
    }

    async fn change_served(
        &self,
        domain: &str,
        served: Option<Served>,
    ) -> Result<(), EmulatorError> {
        let generation = {
            let mut st = self.shared.lock();
            if !st.set_served(domain, served) {
                return Err(EmulatorError::UnknownDomain(domain.to_string()));
            }
            st.generation()
        };
        self.shared.write_dump(generation).await
    }

    /// Changes the per-call domain limit from now on.
    #[cfg(test)]
    pub(crate) fn set_max_domains_per_call(&self, n: usize) {
        self.shared.lock().set_max_domains_per_call(n.max(1));
    }

    /// From now on the CDN batch call answers `InvalidAction.NotFound` (`true`), or works
    /// again (`false`): Alibaba retiring it, or an account where it comes back.
    pub fn set_batch_gone(&self, gone: bool) {
        self.shared.lock().set_batch_gone(gone);
    }

    /// Changes the injected faults from now on.
    pub fn set_faults(&self, faults: Faults) -> Result<(), EmulatorError> {
        faults.validate()?;
        self.shared.lock().set_faults(faults);
        Ok(())
    }

    /// Stops accepting, lets requests in flight finish (up to 5 s), writes the final dump.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "emulator server task failed");
        }
        let generation = self.shared.lock().generation();
        self.shared.write_dump_logged(generation).await;
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve_connection(stream, Arc::clone(&shared), stop.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "emulator accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        conns.abort_all();
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let service = service_fn(move |req| handle(Arc::clone(&shared), req));
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// The error a service returns to make hyper close the connection without an answer.
#[derive(Debug)]
struct Reset;

impl fmt::Display for Reset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection reset by the emulator")
    }
}

impl std::error::Error for Reset {}

async fn handle(shared: Arc<Shared>, req: Request<Body>) -> Result<Response<Full<Bytes>>, Reset> {
    // The arrival time is taken when the request head is in, before the body is read and
    // before the state lock is won: what a rate limit at the server counts.
    let arrived = Instant::now();
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    // Names come lower-cased from hyper; a value that is not visible ASCII is left out (a
    // signature over it cannot match).
    let headers = req
        .headers()
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
        })
        .collect();
    let (body, too_large) = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => (collected.to_bytes(), false),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => (Bytes::new(), true),
        // The client went away mid-body: there is no one to answer.
        Err(_) => return Err(Reset),
    };
    let incoming = Incoming {
        method,
        path,
        headers,
        query,
        body,
        too_large,
    };
    let (reply, generation, write) = {
        let mut st = shared.lock();
        let reply = st.process(&incoming, arrived, OffsetDateTime::now_utc());
        let write = st.log().last().is_some_and(LogEntry::is_write);
        (reply, st.generation(), write)
    };
    shared.write_dump_logged(generation).await;
    let delay = shared.latency
        + if write {
            shared.write_latency
        } else {
            Duration::ZERO
        };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match reply {
        Reply::Reset => Err(Reset),
        Reply::Html { status, body } => Ok(response(status, "text/html", None, body)),
        Reply::Text { status, body } => Ok(response(status, "text/plain", None, body)),
        Reply::Json {
            status,
            request_id,
            body,
        } => Ok(response(
            status,
            "application/json;charset=utf-8",
            Some(&request_id),
            body,
        )),
    }
}

fn response(
    status: u16,
    content_type: &'static str,
    request_id: Option<&str>,
    body: Vec<u8>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    if let Some(v) = request_id.and_then(|id| hyper::header::HeaderValue::from_str(id).ok()) {
        headers.insert("x-acs-request-id", v);
    }
    resp
}
