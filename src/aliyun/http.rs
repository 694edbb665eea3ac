//! The HTTP plumbing every Alibaba Cloud call shares: `reqwest` built on rustls with `ring`
//! (no OpenSSL, no aws-lc), the trusted roots (the built-in web PKI roots plus the PEM roots
//! of `[aliyun] ca_file`), capped body reads, and telling a certificate-verification failure
//! apart from other transport failures.
//!
//! Invariants: no redirect is ever followed; reqwest retries nothing (each call is one
//! attempt); API clients honour `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` (and the lower-case
//! forms) as reqwest reads them from the environment, the metadata client never uses a proxy;
//! a body is read chunk by chunk and never past its cap.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

/// Idle keep-alive connections the pool keeps (per host).
const IDLE_CONNECTIONS: usize = 4;
const USER_AGENT_VALUE: &str = concat!("certrotd/", env!("CARGO_PKG_VERSION"));

/// Whether a client may use the environment's proxy settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proxies {
    /// `HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY` (every API endpoint).
    FromEnvironment,
    /// Never (the instance metadata service is link-local).
    Never,
}

/// Why the HTTP client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error(
        "[aliyun] ca_file = {}: {reason}; name a PEM file of one or more CA certificates \
         (-----BEGIN CERTIFICATE-----)",
        path.display()
    )]
    CaFile { path: PathBuf, reason: String },
    #[error("cannot set up TLS (rustls, ring): {detail}; this is a build problem, report it")]
    Tls { detail: String },
}

impl HttpSetupError {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            HttpSetupError::CaFile { .. } => "ca-file",
            HttpSetupError::Tls { .. } => "tls",
        }
    }
}

/// Reads and parses `ca_file` (capped at 1 MiB).
pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, HttpSetupError> {
    let bad = |reason: String| HttpSetupError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = crate::fsio::read(path, 1 << 20).map_err(|e| bad(e.reason()))?;
    crate::config::parse_ca_pem(&bytes).map_err(bad)
}

/// rustls on ring, trusting the web PKI roots and `extra`.
fn tls_config(extra: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, HttpSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in extra {
        roots.add(der.clone()).map_err(|e| HttpSetupError::Tls {
            detail: e.to_string(),
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpSetupError::Tls {
            detail: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A reqwest client: HTTP/1.1, rustls on ring with `ca_file`'s roots, no redirects, no
/// retries, `connect_timeout` to connect, proxies as `proxies` says, https only unless
/// `plain_http`.
pub(crate) fn build(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
    proxies: Proxies,
    plain_http: bool,
) -> Result<reqwest::Client, HttpSetupError> {
    let extra = match ca_file {
        Some(path) => read_ca_file(path)?,
        None => Vec::new(),
    };
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config(&extra)?)
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .http1_only()
        .tcp_nodelay(true)
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        // Enough for the calls one pass keeps in flight; more idle connections (each with
        // its buffers and task) would only sit in an idle daemon's memory.
        .pool_max_idle_per_host(IDLE_CONNECTIONS)
        .user_agent(USER_AGENT_VALUE)
        .https_only(!plain_http);
    if proxies == Proxies::Never {
        builder = builder.no_proxy();
    }
    builder.build().map_err(|e| HttpSetupError::Tls {
        detail: error_chain(&e),
    })
}

/// The first `cap` bytes of the body (all of it when shorter) and whether there was more;
/// the rest is never read (the connection is dropped with the response).
pub(crate) async fn read_capped(
    response: &mut reqwest::Response,
    cap: usize,
) -> Result<(bytes::Bytes, bool), reqwest::Error> {
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap - out.len();
        if chunk.len() > room {
            out.extend_from_slice(&chunk[..room]);
            return Ok((out.freeze(), true));
        }
        out.extend_from_slice(&chunk);
    }
    Ok((out.freeze(), false))
}

/// The certificate-verification failure in `e`'s chain (unknown issuer, wrong name,
/// expired, …), as rustls words it; `None` for any other failure.
pub(crate) fn tls_verification_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(found) = as_cert_error(err) {
            return Some(found);
        }
        // io::Error hides its inner error from `source()` (and may wrap another io::Error):
        // look inside it.
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            let inner: &(dyn std::error::Error + 'static) = inner;
            current = Some(inner);
            continue;
        }
        current = err.source();
    }
    None
}

fn as_cert_error(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    match err.downcast_ref::<rustls::Error>()? {
        e @ (rustls::Error::InvalidCertificate(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::InvalidCertRevocationList(_)) => Some(e.to_string()),
        _ => None,
    }
}

/// `e` and its sources, joined with ": ".
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_ca_pem;

    #[test]
    fn ca_pem_needs_a_certificate() {
        assert!(
            parse_ca_pem(b"")
                .unwrap_err()
                .contains("no PEM certificate")
        );
        assert!(
            parse_ca_pem(b"hello\n")
                .unwrap_err()
                .contains("no PEM certificate")
        );
        let bad = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(parse_ca_pem(bad).is_err());
    }

    #[test]
    fn ca_pem_reads_a_real_ca() {
        let ca = crate::testca::TestCa::new("certrotd test root").expect("test CA");
        let certs = parse_ca_pem(ca.root_pem().as_bytes()).expect("CA parses");
        assert_eq!(certs.len(), 1);
    }

    #[test]
    fn a_rustls_certificate_error_inside_io_error_is_found() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::other(tls);
        let found = tls_verification_failure(&io).expect("found");
        assert!(
            found.contains("UnknownIssuer") || found.contains("unknown issuer"),
            "{found}"
        );
        let plain = std::io::Error::other("connection reset");
        assert!(tls_verification_failure(&plain).is_none());
    }
}
