//! Configuration: TOML file → spanned parse tree → validated [`Settings`].
//!
//! Two steps: I/O first — the file itself and every file it names, read once through
//! [`crate::fsio`] (capped, non-blocking, regular files only; `files`) — then a pure
//! validation of text and gathered bytes ([`validate`]).
//!
//! Owns: the schema, its defaults, and every configuration error (with `file:line:col`).
//! The file is parsed into toml's spanned tree (`DeTable`) and walked by hand rather than
//! through serde, so that *every* problem (syntax, unknown key, wrong type, bad value) is
//! collected and reported at once, each naming its key and location.
//!
//! Invariants: a `Settings` value is fully validated (ranges, endpoint scheme, domain
//! syntax, absolute paths); no other module re-checks it. Relative paths in the file are
//! resolved against the folder holding the file. Warnings (valid but unwise settings) are
//! returned as values in [`Loaded`]; this module prints and logs nothing.

mod cas;
mod dcdn;
mod domain;
mod endpoint;
mod files;
mod walk;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cas::{CasSettings, Store};
pub(crate) use files::Files;

use crate::fsio::{self, FsError};

/// Default location of the configuration file.
pub const DEFAULT_PATH: &str = "/etc/certrotd/certrotd.toml";

/// The largest configuration or domains file read (bigger is a problem, not a crash).
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Settings {
    /// The file the settings came from.
    pub(crate) path: PathBuf,
    pub(crate) aliyun: AliyunSettings,
    pub(crate) watch: WatchSettings,
    pub(crate) state: StateSettings,
    pub(crate) cdn: CdnSettings,
    pub(crate) metrics: MetricsSettings,
    pub(crate) notify: NotifySettings,
    /// `[dcdn]`: DCDN domains (none when the section is absent).
    pub(crate) dcdn: DcdnSettings,
    /// `[aliyun] store` and `[cas]`.
    pub(crate) cas: CasSettings,
}

/// `[metrics]`: where `certrotd run` serves `/metrics` and `/healthz` (no listener when
/// `listen` is absent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MetricsSettings {
    pub(crate) listen: Option<std::net::SocketAddr>,
}

/// `[notify]`: the program run on events (none when `command` is empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NotifySettings {
    /// argv: an absolute program path, then its arguments (no shell).
    pub(crate) command: Vec<String>,
    /// How long one run may take before it is killed.
    pub(crate) timeout: Duration,
}

impl Default for NotifySettings {
    fn default() -> NotifySettings {
        NotifySettings {
            command: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }
}

/// Which CDN call deploys certificates (`[aliyun] api`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Api {
    /// `BatchSetCdnDomainServerCertificate`: up to `max_domains_per_call` domains a call.
    #[default]
    Batch,
    /// `SetCdnDomainSSLCertificate`: one domain a call, at `per_domain_requests_per_second`.
    PerDomain,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AliyunSettings {
    /// `https://…`, or `http://` to a loopback host only.
    pub endpoint: String,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub access_key_secret_file: Option<PathBuf>,
    /// Write calls per rolling second (1..=100).
    pub requests_per_second: u32,
    /// Describe* calls per rolling second (1..=100).
    pub read_requests_per_second: u32,
    /// Domains per BatchSet call (1..=50).
    pub max_domains_per_call: usize,
    /// The call that deploys certificates.
    pub api: Api,
    /// Per-domain write calls per rolling second (1..=100), used when `api` is per-domain.
    pub per_domain_requests_per_second: u32,
    /// Attempts per call for retryable errors (>= 1).
    pub max_attempts: u32,
    pub timeout: Duration,
    pub verify: bool,
    /// How calls are signed (`signature`, default v1).
    pub signature: Signature,
    /// Trust, STS and instance-metadata settings (`ca_file`, `sts_endpoint`, …).
    pub access: AccessSettings,
}

impl AliyunSettings {
    /// The settings of an `[aliyun]` section that sets only `endpoint`: the documented
    /// defaults, which the configuration walk fills in for every key not given.
    pub fn defaults(endpoint: &str) -> AliyunSettings {
        AliyunSettings {
            endpoint: endpoint.to_string(),
            region: None,
            access_key_id: None,
            access_key_secret_file: None,
            requests_per_second: 10,
            read_requests_per_second: 50,
            max_domains_per_call: 10,
            api: Api::Batch,
            per_domain_requests_per_second: 30,
            max_attempts: 6,
            timeout: Duration::from_secs(30),
            verify: true,
            signature: Signature::V1,
            access: AccessSettings::default(),
        }
    }
}

/// `[aliyun]` settings of how certrotd reaches Alibaba Cloud besides the CDN endpoint: the
/// extra trusted roots, the STS and metadata endpoints the credential chain uses, and the
/// ECS RAM role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessSettings {
    /// `ca_file`: PEM roots trusted besides the built-in web PKI roots (checked at load).
    pub ca_file: Option<PathBuf>,
    /// `sts_endpoint`: `https://…`, or `http://` to a loopback host only.
    pub sts_endpoint: String,
    /// `metadata_endpoint`: the ECS instance metadata service (plain http); `None` when not
    /// set, i.e. the default address, used only when the ECS RAM role source is enabled.
    pub metadata_endpoint: Option<String>,
    /// `role_name`: the instance's RAM role (else discovered from the metadata service).
    pub role_name: Option<String>,
    /// `imds_v1`: fall back to metadata requests without a session token (IMDSv1) when the
    /// token request fails (default false: IMDSv2 only).
    pub imds_v1: bool,
}

/// Alibaba's STS endpoint.
pub const DEFAULT_STS_ENDPOINT: &str = "https://sts.aliyuncs.com";
/// The ECS instance metadata service.
pub const DEFAULT_METADATA_ENDPOINT: &str = "http://100.100.100.200";

impl Default for AccessSettings {
    fn default() -> AccessSettings {
        AccessSettings {
            ca_file: None,
            sts_endpoint: DEFAULT_STS_ENDPOINT.to_string(),
            metadata_endpoint: None,
            role_name: None,
            imds_v1: false,
        }
    }
}

/// `[aliyun] signature`: the algorithm every API call is signed with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Signature {
    /// HMAC-SHA1 RPC signature (Alibaba's "V2"): the default until V3 has been seen to
    /// work against the real CDN API.
    #[default]
    V1,
    /// `ACS3-HMAC-SHA256`.
    V3,
}

/// The certificates of a PEM text of trusted roots (`ca_file`): at least one, each usable
/// as a trust anchor; `Err` says what is wrong (without quoting the file).
pub(crate) fn parse_ca_pem(
    bytes: &[u8],
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(bytes) {
        let der = item.map_err(|e| format!("not valid PEM ({e})"))?;
        webpki::anchor_from_trusted_cert(&der)
            .map_err(|e| format!("certificate {} is not a usable CA ({e})", certs.len() + 1))?;
        certs.push(der);
    }
    if certs.is_empty() {
        return Err("holds no PEM certificate".to_string());
    }
    Ok(certs)
}

impl AliyunSettings {
    /// Domains one write call of the chosen `api` carries (what the planner cuts batches to).
    pub(crate) fn domains_per_call(&self) -> usize {
        match self.api {
            Api::Batch => self.max_domains_per_call,
            Api::PerDomain => 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct WatchSettings {
    pub(crate) paths: Vec<PathBuf>,
    pub(crate) debounce: Duration,
    pub(crate) rescan: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StateSettings {
    pub(crate) dir: PathBuf,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CdnSettings {
    /// Managed domains from `domains` and `domains_file`, lowercased, deduplicated, sorted.
    pub(crate) domains: Vec<String>,
    pub(crate) domains_file: Option<PathBuf>,
}

/// `[dcdn]`: the DCDN API's endpoint and the managed DCDN domains (same rules as `[cdn]`;
/// never a domain `[cdn]` also lists).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DcdnSettings {
    pub(crate) endpoint: String,
    /// Lowercased, deduplicated, sorted.
    pub(crate) domains: Vec<String>,
    pub(crate) domains_file: Option<PathBuf>,
}

impl Settings {
    /// Every managed domain with its product, sorted by domain.
    pub(crate) fn managed(&self) -> Vec<(String, Product)> {
        let cdn = self.cdn.domains.iter().map(|d| (d.clone(), Product::Cdn));
        let dcdn = self.dcdn.domains.iter().map(|d| (d.clone(), Product::Dcdn));
        let mut all: Vec<(String, Product)> = cdn.chain(dcdn).collect();
        all.sort();
        all
    }

    /// Every managed domain, sorted (both products).
    pub(crate) fn all_domains(&self) -> Vec<String> {
        self.managed().into_iter().map(|(d, _)| d).collect()
    }
}

/// The Alibaba product a managed domain belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Product {
    /// CDN (`[cdn]`, `cdn.aliyuncs.com`, Version 2018-05-10).
    Cdn,
    /// DCDN / Edge Security Acceleration (`[dcdn]`, `dcdn.aliyuncs.com`, 2018-01-15).
    Dcdn,
}

impl Product {
    /// `cdn` or `dcdn`: the label in `check`, `status` and logs.
    pub fn label(self) -> &'static str {
        match self {
            Product::Cdn => "cdn",
            Product::Dcdn => "dcdn",
        }
    }
}

/// A successfully loaded configuration and the warnings it deserves.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Loaded {
    pub(crate) settings: Settings,
    /// Valid but unwise settings (e.g. a write rate above Alibaba's quota). The caller
    /// prints or logs them.
    pub(crate) warnings: Vec<Diagnostic>,
}

/// One problem or warning, located in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Diagnostic {
    /// The configuration file, or the `domains_file` for its entries.
    pub(crate) file: PathBuf,
    /// 1-based line and column (in characters); 0 when the location is unknown.
    pub(crate) line: usize,
    pub(crate) col: usize,
    /// The dotted key (`aliyun.endpoint`), or `None` for syntax errors.
    pub(crate) key: Option<String>,
    /// What is wrong and what to do.
    pub(crate) message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file is missing or cannot be read (not a regular file, too large, …).
    #[error(
        "cannot read the configuration file {}: {}; {} or name another with -c/--config or \
         $CERTROTD_CONFIG",
        path.display(),
        error.reason(),
        unreadable_hint(error)
    )]
    Unreadable { path: PathBuf, error: FsError },
    /// The file was read, and has one or more problems (all of them are listed).
    #[error("{}", render_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Diagnostic>,
    },
}

impl ConfigError {
    /// Short label for logs and metrics.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ConfigError::Unreadable { .. } => "config-unreadable",
            ConfigError::Invalid { .. } => "config-invalid",
        }
    }

    /// Every problem (one for an unreadable file).
    pub(crate) fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Unreadable { .. } => vec![self.to_string()],
            ConfigError::Invalid { problems, .. } => {
                problems.iter().map(|p| p.to_string()).collect()
            }
        }
    }
}

/// What to do about an unreadable configuration file (before "or name another").
fn unreadable_hint(error: &FsError) -> &'static str {
    match error {
        FsError::NotFound { .. } => {
            "create it (config/certrotd.toml in the source tree is a commented example)"
        }
        FsError::NotRegular { .. } => "replace it with a regular file (a symlink to one is fine)",
        FsError::TooLarge { .. } => "this is not a certrotd configuration: replace it",
        _ => "give certrotd's user read access to it",
    }
}

fn render_problems(path: &Path, problems: &[Diagnostic]) -> String {
    let count = problems.len();
    let plural = if count == 1 { "" } else { "s" };
    let mut out = format!(
        "invalid configuration {} ({count} problem{plural}; fix them and run `certrotd check` \
         again):",
        path.display()
    );
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&p.to_string());
    }
    out
}

/// Reads, parses and validates the configuration file at `path`.
pub(crate) fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let bytes = fsio::read(path, MAX_FILE_BYTES).map_err(|error| ConfigError::Unreadable {
        path: path.to_path_buf(),
        error,
    })?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => {
            let problem = Diagnostic {
                file: path.to_path_buf(),
                line: 0,
                col: 0,
                key: None,
                message: format!(
                    "not UTF-8 text (invalid byte at offset {}); save the file as UTF-8",
                    err.utf8_error().valid_up_to()
                ),
            };
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems: vec![problem],
            });
        }
    };
    let base = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    parse(path, &text, &base)
}

/// Parses and validates configuration `text` as if read from `file`; relative paths are
/// resolved against `base`. The I/O step first reads `domains_file` and inspects
/// `access_key_secret_file` (`files::gather`); then [`validate`] decides, purely.
pub(crate) fn parse(file: &Path, text: &str, base: &Path) -> Result<Loaded, ConfigError> {
    let files = files::gather(&walk::named_files(text, base), MAX_FILE_BYTES);
    validate(file, text, base, &files)
}

/// Validates configuration `text` (as if read from `file`, relative paths against `base`)
/// with the named files' bytes and facts already in `files`. No I/O.
pub(crate) fn validate(
    file: &Path,
    text: &str,
    base: &Path,
    files: &Files,
) -> Result<Loaded, ConfigError> {
    let mut ctx = walk::Ctx::new(file, text, base, files);
    let settings = walk::settings(&mut ctx);
    let (mut problems, mut warnings) = ctx.finish();
    match settings {
        Some(settings) if problems.is_empty() => {
            warnings.sort_by_key(|d| (d.line, d.col));
            Ok(Loaded { settings, warnings })
        }
        _ => {
            problems.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
            Err(ConfigError::Invalid {
                path: file.to_path_buf(),
                problems,
            })
        }
    }
}

#[cfg(test)]
mod tests;
