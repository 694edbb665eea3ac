//! `[aliyun] store` and the `[cas]` section: where certificates are kept for binding.
//!
//! Owns the settings of the SSL Certificates Service (CAS) store (endpoint, region, the
//! opt-in cleanup and its grace period). Validated by the walk (`walk::cas`); a value here is
//! fully checked.

use std::time::Duration;

/// `[aliyun] store`: how a write call carries the certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Store {
    /// Every write call carries the chain and the key (`CertType=upload`).
    #[default]
    Upload,
    /// Each certificate is uploaded once to CAS; write calls bind by reference
    /// (`CertType=cas`).
    Cas,
}

/// The CAS regions certrotd knows (China site, international site).
pub(crate) const CAS_REGIONS: &[&str] = &["cn-hangzhou", "ap-southeast-1"];

/// `[aliyun] store` and `[cas]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasSettings {
    pub store: Store,
    /// `https://…`, or `http://` to a loopback host only (default `https://cas.aliyuncs.com`).
    pub endpoint: String,
    /// `cn-hangzhou` or `ap-southeast-1`.
    pub region: String,
    /// Delete superseded certificates certrotd uploaded (opt-in).
    pub delete_superseded: bool,
    /// How long a superseded certificate is kept before it may be deleted.
    pub delete_after: Duration,
}

impl Default for CasSettings {
    fn default() -> CasSettings {
        CasSettings {
            store: Store::Upload,
            endpoint: DEFAULT_ENDPOINT.to_string(),
            region: "cn-hangzhou".to_string(),
            delete_superseded: false,
            delete_after: Duration::from_secs(24 * 3600),
        }
    }
}

/// Alibaba's CAS API endpoint.
pub(crate) const DEFAULT_ENDPOINT: &str = "https://cas.aliyuncs.com";
