//! What the emulator remembers and shows: the per-domain served state, the request log, and
//! the JSON state dump that a test or a person can read while the emulator runs.
//!
//! Invariant: nothing here holds key material. A served certificate is its chain, names,
//! dates and fingerprint; a log entry names the call, never its certificate or key text.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::EmulatorError;
use crate::cert::{Certificate, Fingerprint};
use crate::fsio::{self, AtomicWrite};

/// The largest state dump read back (a long emulator run logs many requests).
const MAX_DUMP_BYTES: u64 = 1024 * 1024 * 1024;

/// The certificate a CDN domain serves, as the emulator records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    /// The `CertName` it was uploaded under.
    pub cert_name: String,
    /// SHA-256 of the leaf certificate's DER.
    pub fingerprint: Fingerprint,
    /// DNS names of the leaf.
    pub(crate) names: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) not_after: OffsetDateTime,
    /// When the emulator applied it (wall clock).
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) updated_at: OffsetDateTime,
    /// The `RequestId` of the call that set it (`console` for [`super::Emulator::set_served`]).
    pub request_id: String,
    /// The chain as uploaded (`SSLPub`). Left out of the state dump to keep it small.
    #[serde(skip_serializing, default)]
    pub(crate) chain_pem: String,
    /// The CAS `CertId` the domain is bound to (`CertType=cas`), if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cas_cert_id: Option<u64>,
}

impl Served {
    /// The served state for `cert` uploaded under `cert_name` at `now`.
    pub(crate) fn new(
        cert: &Certificate,
        cert_name: &str,
        request_id: &str,
        now: OffsetDateTime,
    ) -> Served {
        Served {
            cert_name: cert_name.to_string(),
            fingerprint: cert.fingerprint,
            names: cert.names.clone(),
            not_before: cert.not_before,
            not_after: cert.not_after,
            updated_at: now,
            request_id: request_id.to_string(),
            chain_pem: cert.chain_pem(),
            cas_cert_id: None,
        }
    }
}

/// One request as the emulator saw it (in arrival order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Arrival time since the emulator started, on tokio's clock (paused time works).
    #[serde(rename = "at_us", with = "micros")]
    pub at: Duration,
    /// HTTP method.
    pub(crate) method: String,
    /// `Action` (empty when missing).
    pub action: String,
    pub access_key_id: String,
    /// How the request was signed: `"v3"` with an `Authorization` header, else `"v1"`
    /// (dumps written before this field read as `"v1"`).
    #[serde(default = "v1")]
    pub signature: String,
    pub signature_nonce: String,
    pub(crate) timestamp: String,
    /// `DomainName` split at commas, trimmed and lowercased.
    pub domains: Vec<String>,
    /// Whether any parameter arrived in the URL query (certrotd sends none there).
    pub params_in_query: bool,
    /// HTTP status; `None` when the connection was dropped without an answer.
    pub status: Option<u16>,
    /// Error `Code`; `None` on success.
    pub code: Option<String>,
    /// Whether the answer was an injected fault.
    pub injected: bool,
    pub request_id: String,
    /// `CertName` of a write call (`Name` of a CAS upload).
    pub cert_name: Option<String>,
    /// Fingerprint of the first certificate in a write call's `SSLPub` (an upload's
    /// `Cert`), when it decodes.
    pub fingerprint: Option<Fingerprint>,
    /// The names (never the values) of the action's parameters, query and body together,
    /// sorted; the common envelope parameters left out (dumps written before this field
    /// read as empty).
    #[serde(default)]
    pub params: Vec<String>,
    /// Bytes of the request's query and body (what a client sent besides headers).
    #[serde(default)]
    pub request_bytes: u64,
    /// `AssumeRoleWithOIDC`: the first 16 hex digits of the SHA-256 of the `OIDCToken` (which
    /// token was exchanged; never the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_token_digest: Option<String>,
}

impl LogEntry {
    /// Is this a write call (`BatchSetCdnDomainServerCertificate`,
    /// `SetCdnDomainSSLCertificate` or `SetDcdnDomainSSLCertificate`)?
    pub fn is_write(&self) -> bool {
        super::dcdn::is_write(&self.action)
    }
    /// Is this a CAS `UploadUserCertificate`?
    pub fn is_cas_upload(&self) -> bool {
        self.action == super::cas::ACTION_UPLOAD
    }

    /// Did the request carry a parameter named `name`?
    pub fn has_param(&self, name: &str) -> bool {
        self.params.iter().any(|p| p == name)
    }

    /// Did the call succeed (HTTP 200)?
    pub fn succeeded(&self) -> bool {
        self.status == Some(200)
    }
}

fn v1() -> String {
    "v1".to_string()
}

mod micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_micros)
    }
}

/// The state dump file's content (`--state-dump`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dump {
    /// Format version (1).
    pub(crate) version: u32,
    /// Per-domain served state (without the PEM text).
    pub served: BTreeMap<String, Served>,
    /// Every request so far, in arrival order.
    pub log: Vec<LogEntry>,
    /// The certificates in the emulated CAS (without PEM text).
    #[serde(default)]
    pub cas: Vec<DumpedCas>,
}

/// One CAS certificate in the state dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpedCas {
    pub cert_id: u64,
    pub name: String,
    pub fingerprint: Fingerprint,
    /// Seeded as a user's upload (`--cas-user-cert`).
    pub by_user: bool,
}

impl Dump {
    /// The current format version.
    pub(crate) const VERSION: u32 = 1;

    /// Reads a state dump written by a running (or stopped) emulator.
    pub fn read(path: &Path) -> Result<Dump, EmulatorError> {
        let bytes = fsio::read(path, MAX_DUMP_BYTES).map_err(|e| EmulatorError::DumpRead {
            path: path.to_path_buf(),
            reason: e.reason(),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| EmulatorError::DumpRead {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

/// The log serialized incrementally, so a dump costs O(served) + a copy, not a re-encode of
/// the whole log.
#[derive(Default)]
pub(super) struct LogJson {
    entries: Vec<u8>,
}

impl LogJson {
    pub(super) fn push(&mut self, entry: &LogEntry) {
        if !self.entries.is_empty() {
            self.entries.push(b',');
        }
        // Serializing plain strings, numbers and options cannot fail.
        if let Ok(bytes) = serde_json::to_vec(entry) {
            self.entries.extend_from_slice(&bytes);
        }
    }

    /// The whole dump, `{"version":1,"served":{…},"cas":[…],"log":[…]}`, around the
    /// encoded served map and CAS list.
    pub(super) fn dump(&self, served: &[u8], cas: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(served.len() + cas.len() + self.entries.len() + 64);
        out.extend_from_slice(format!("{{\"version\":{},\"served\":", Dump::VERSION).as_bytes());
        out.extend_from_slice(served);
        out.extend_from_slice(b",\"cas\":");
        out.extend_from_slice(cas);
        out.extend_from_slice(b",\"log\":[");
        out.extend_from_slice(&self.entries);
        out.extend_from_slice(b"]}\n");
        out
    }
}

/// Replaces `path` atomically with `bytes` ([`AtomicWrite`]: temp file in the same folder,
/// fsync, rename, fsync of the folder), so a reader sees either the previous dump or this
/// one, never a torn file.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), EmulatorError> {
    let writer = AtomicWrite {
        path,
        temp_prefix: ".certrotd-emulator-dump",
        temp_suffix: "",
    };
    writer.write(bytes).map_err(|e| EmulatorError::StateDump {
        path: path.to_path_buf(),
        source: e.into_io(),
    })
}
