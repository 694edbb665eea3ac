//! Configuration: TOML file → raw structs → validated [`Settings`].
//!
//! Owns: the schema, its defaults, and every configuration error (with file:line:col).
//! Invariant: a `Settings` value is fully validated; no other module re-checks it.
//! (SKELETON: `load` and the error type are implemented by the config module's owner;
//! the `Settings` fields below are the contract other modules build on.)

use std::path::PathBuf;
use std::time::Duration;

/// Default location of the configuration file.
pub const DEFAULT_PATH: &str = "/etc/certrotd/certrotd.toml";

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The file the settings came from.
    pub path: PathBuf,
    pub aliyun: AliyunSettings,
    pub watch: WatchSettings,
    pub state: StateSettings,
    pub cdn: CdnSettings,
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
    /// Attempts per call for retryable errors (>= 1).
    pub max_attempts: u32,
    pub timeout: Duration,
    pub verify: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WatchSettings {
    pub paths: Vec<PathBuf>,
    pub debounce: Duration,
    pub rescan: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StateSettings {
    pub dir: PathBuf,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CdnSettings {
    /// Managed domains from `domains` and `domains_file`, lowercased, deduplicated, sorted.
    pub domains: Vec<String>,
    pub domains_file: Option<PathBuf>,
}
