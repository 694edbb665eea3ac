//! The SSL Certificates Service (CAS, API `2020-04-07`) as the certificate store of
//! `[aliyun] store = "cas"`: each certificate is uploaded once (`UploadUserCertificate`)
//! and write calls bind domains to it by reference.
//!
//! Owns: the look-before-upload rule — a certificate already in CAS (certrotd's own earlier
//! upload, e.g. of a run killed before its bindings, or one a user uploaded) is found and
//! reused: first the mapping on record (confirmed with `GetUserCertificateDetail`), then
//! `ListUserCertificateOrder` (`OrderType=UPLOAD`, `Keyword` = a DNS name of the leaf, paged
//! with `CurrentPage`/`ShowSize`), a match confirmed by content (the `Sha2` fingerprint, else
//! the detail's PEM); the deterministic name ([`cas_name`]); the CAS rate limits (uploads
//! 100/s, every other CAS call 10/s); and `DeleteUserCertificate` for the cleanup
//! (`cleanup`).
//!
//! Invariants: `Key` travels only in `UploadUserCertificate`'s form body, once per
//! certificate (retries aside); `ClientToken` is sent but never relied on (CAS gives no
//! idempotence for it: the lookup is what prevents a second upload); a `NameRepeat` answer
//! means the lookup missed a certificate of certrotd's own name — a bug, reported as such,
//! never retried under another name.

pub(crate) mod cleanup;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Deserialize;
use zeroize::Zeroizing;

use super::{ApiError, Client};
use crate::cert::Fingerprint;
use crate::push::{RATE_WINDOW, RateLimiter, Upload};
use crate::state::cas::{CasRecords, CasRef};

/// The CAS API version.
pub(crate) const CAS_VERSION: &str = "2020-04-07";
pub(crate) const ACTION_UPLOAD: &str = "UploadUserCertificate";
pub(crate) const ACTION_LIST: &str = "ListUserCertificateOrder";
pub(crate) const ACTION_DETAIL: &str = "GetUserCertificateDetail";
pub(crate) const ACTION_DELETE: &str = "DeleteUserCertificate";
/// CAS's documented limits: uploads, and lists (used for every other CAS call too).
pub(crate) const UPLOADS_PER_SECOND: u32 = 100;
pub(crate) const LISTS_PER_SECOND: u32 = 10;
/// The prefix of every name certrotd uploads under.
pub(crate) const NAME_PREFIX: &str = "certrotd-";
/// Entries asked for per list page, and the most pages read for one lookup.
const SHOW_SIZE: u64 = 50;
const MAX_PAGES: u64 = 200;

/// The name certrotd uploads `fingerprint`'s certificate under: `certrotd-` and the first
/// 32 hex digits of the leaf's SHA-256 (41 characters; CAS allows 63).
pub(crate) fn cas_name(fingerprint: &Fingerprint) -> String {
    format!("{NAME_PREFIX}{}", &fingerprint.hex()[..32])
}

/// Whether `name` is the name certrotd gives `fingerprint`'s certificate.
pub(crate) fn is_own_name(name: &str, fingerprint: &Fingerprint) -> bool {
    name == cas_name(fingerprint)
}

/// CAS through its own [`Client`] (the CAS endpoint and version), in one region.
#[derive(Debug)]
pub struct CasStore {
    client: Client,
    region: String,
    uploads: RateLimiter,
    others: RateLimiter,
    /// Fingerprint → CAS certificate, from the state file and this process's lookups.
    known: Mutex<HashMap<Fingerprint, CasRef>>,
    /// One lookup-or-upload at a time: two targets (CDN, DCDN) preparing the same
    /// certificate at once would both miss it and the second upload be a `NameRepeat`.
    preparing: tokio::sync::Mutex<()>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UploadReply {
    cert_id: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListReply {
    #[serde(default)]
    total_count: u64,
    #[serde(default)]
    certificate_order_list: Vec<ListEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListEntry {
    certificate_id: u64,
    #[serde(default)]
    name: String,
    #[serde(default)]
    sha2: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DetailReply {
    #[serde(default)]
    name: String,
    #[serde(default)]
    cert: String,
    #[serde(default)]
    sha2: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Empty {}

impl CasStore {
    /// A store speaking CAS through `client` (built for the CAS endpoint), in `region`.
    pub fn new(client: Client, region: &str) -> CasStore {
        CasStore {
            client: client.with_version(CAS_VERSION),
            region: region.to_string(),
            uploads: RateLimiter::with_window(UPLOADS_PER_SECOND, RATE_WINDOW),
            others: RateLimiter::with_window(LISTS_PER_SECOND, RATE_WINDOW),
            known: Mutex::new(HashMap::new()),
            preparing: tokio::sync::Mutex::new(()),
        }
    }

    /// Learns the mappings on record (in this store's region), tried first by
    /// [`CasStore::find_or_upload`].
    pub(crate) fn remember(&self, records: &CasRecords) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        for (hex, r) in records {
            if r.cert.region == self.region
                && let Some(fp) = Fingerprint::from_hex(hex)
            {
                known.insert(fp, r.cert.clone());
            }
        }
    }

    fn known(&self, fp: &Fingerprint) -> Option<CasRef> {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known.get(fp).cloned()
    }

    fn learn(&self, fp: Fingerprint, cert: &CasRef) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known.insert(fp, cert.clone());
    }

    fn forget(&self, fp: &Fingerprint) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known.remove(fp);
    }

    /// The CAS certificate holding `upload`: the one on record or found in CAS, else a new
    /// upload under [`cas_name`].
    pub(crate) async fn find_or_upload(&self, upload: &Upload) -> Result<CasRef, ApiError> {
        let _one_at_a_time = self.preparing.lock().await;
        let leaf = Leaf::of(upload);
        if let Some(known) = self.known(&upload.fingerprint) {
            match self.confirm(known.cert_id, &upload.fingerprint).await {
                Ok(Some(_)) => return Ok(known),
                // Gone, other content, or an answer this rule does not know: look it up.
                Ok(None) => self.forget(&upload.fingerprint),
                Err(e) if e.is_retryable() || e.class() == super::Class::Credentials => {
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(cert_id = known.cert_id, kind = e.kind(), error = %e, "the recorded CAS certificate could not be confirmed; looking it up");
                    self.forget(&upload.fingerprint);
                }
            }
        }
        if let Some(found) = self.find(upload, &leaf).await? {
            tracing::info!(cert_id = found.cert_id, name = %found.name, "certificate already in CAS; reusing it");
            self.learn(upload.fingerprint, &found);
            return Ok(found);
        }
        let uploaded = self.upload(upload, &leaf).await?;
        self.learn(upload.fingerprint, &uploaded);
        Ok(uploaded)
    }

    /// Whether CAS still holds `cert_id` with the certificate `fp`: `Some(name)` when it
    /// does, `None` when it is gone or holds other content.
    async fn confirm(&self, cert_id: u64, fp: &Fingerprint) -> Result<Option<String>, ApiError> {
        match self.detail(cert_id).await {
            Ok(d) if d.matches(fp) => Ok(Some(d.name)),
            Ok(_) => Ok(None),
            Err(e) if e.code().is_some_and(is_not_found) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn detail(&self, cert_id: u64) -> Result<DetailReply, ApiError> {
        self.others.acquire().await;
        let params = Zeroizing::new(vec![("CertId".to_string(), cert_id.to_string())]);
        self.client.rpc(ACTION_DETAIL, params, &[]).await
    }

    /// `ListUserCertificateOrder` pages for the leaf's first DNS name, looking for the same
    /// content.
    async fn find(&self, upload: &Upload, leaf: &Leaf) -> Result<Option<CasRef>, ApiError> {
        let Some(keyword) = leaf.names.first() else {
            return Ok(None);
        };
        let mut seen = 0;
        for page in 1..=MAX_PAGES {
            self.others.acquire().await;
            let params = Zeroizing::new(vec![
                ("OrderType".to_string(), "UPLOAD".to_string()),
                (
                    "Keyword".to_string(),
                    keyword.trim_start_matches("*.").to_string(),
                ),
                ("CurrentPage".to_string(), page.to_string()),
                ("ShowSize".to_string(), SHOW_SIZE.to_string()),
            ]);
            let reply: ListReply = self.client.rpc(ACTION_LIST, params, &[]).await?;
            let got = reply.certificate_order_list.len() as u64;
            for entry in reply.certificate_order_list {
                if self.same_content(&entry, &upload.fingerprint).await? {
                    return Ok(Some(leaf.cas_ref(
                        entry.certificate_id,
                        &self.region,
                        entry.name,
                        &upload.fingerprint,
                    )));
                }
            }
            seen += got;
            if got == 0 || seen >= reply.total_count {
                break;
            }
        }
        Ok(None)
    }

    /// A list entry is the same certificate: by its `Sha2` when it has one, else by the
    /// detail's PEM.
    async fn same_content(&self, entry: &ListEntry, fp: &Fingerprint) -> Result<bool, ApiError> {
        if !entry.sha2.trim().is_empty() {
            return Ok(sha2_matches(&entry.sha2, fp));
        }
        Ok(self.confirm(entry.certificate_id, fp).await?.is_some())
    }

    /// One `UploadUserCertificate` (full chain and key, certrotd's name, a fresh
    /// `ClientToken`).
    async fn upload(&self, upload: &Upload, leaf: &Leaf) -> Result<CasRef, ApiError> {
        let name = cas_name(&upload.fingerprint);
        self.uploads.acquire().await;
        let params = Zeroizing::new(vec![
            ("Name".to_string(), name.clone()),
            ("Cert".to_string(), upload.chain.pem()),
            (
                "Key".to_string(),
                upload.key.expose_upload_pem().to_string(),
            ),
            ("ClientToken".to_string(), client_token()),
        ]);
        let reply: Result<UploadReply, ApiError> =
            self.client.rpc(ACTION_UPLOAD, params, &[]).await;
        let reply = reply.inspect_err(|e| {
            if e.code() == Some("NameRepeat") {
                tracing::error!(
                    %name,
                    "CAS already holds a certificate named {name}, but looking it up did not find it: this is a bug in certrotd's look-before-upload (please report it); nothing is uploaded under another name"
                );
            }
        })?;
        tracing::info!(cert_id = reply.cert_id, %name, "certificate uploaded to CAS");
        Ok(leaf.cas_ref(reply.cert_id, &self.region, name, &upload.fingerprint))
    }

    /// One `DeleteUserCertificate`.
    pub(crate) async fn delete(&self, cert_id: u64) -> Result<(), ApiError> {
        self.others.acquire().await;
        let params = Zeroizing::new(vec![("CertId".to_string(), cert_id.to_string())]);
        let _: Empty = self.client.rpc(ACTION_DELETE, params, &[]).await?;
        Ok(())
    }
}

impl DetailReply {
    fn matches(&self, fp: &Fingerprint) -> bool {
        if !self.sha2.trim().is_empty() {
            return sha2_matches(&self.sha2, fp);
        }
        super::ServedCert::chain_fingerprint(&self.cert) == Some(*fp)
    }
}

/// CAS's `Sha2` (hex, either case, perhaps with colons) is the leaf's SHA-256.
fn sha2_matches(sha2: &str, fp: &Fingerprint) -> bool {
    let clean: String = sha2.chars().filter(|c| *c != ':').collect();
    clean.eq_ignore_ascii_case(&fp.hex())
}

/// `ErrorCode`s meaning the certificate id does not exist (any more).
fn is_not_found(code: &str) -> bool {
    code.contains("NotFound") || code.contains("NotExist")
}

fn client_token() -> String {
    let b: [u8; 16] = rand::random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What the CAS step reads of the leaf: its DNS names and notAfter.
struct Leaf {
    names: Vec<String>,
    not_after: time::OffsetDateTime,
}

impl Leaf {
    fn of(upload: &Upload) -> Leaf {
        let names = crate::cert::parse(
            upload.chain.pem().as_bytes(),
            upload.key.expose_upload_pem().as_bytes(),
        )
        .map(|c| c.names)
        .unwrap_or_default();
        Leaf {
            names,
            not_after: upload.not_after,
        }
    }

    fn cas_ref(&self, cert_id: u64, region: &str, name: String, fp: &Fingerprint) -> CasRef {
        CasRef {
            cert_id,
            region: region.to_string(),
            uploaded_by_certrotd: is_own_name(&name, fp),
            name,
            names: self.names.clone(),
            not_after: self.not_after,
        }
    }
}

/// Shared so the CDN targets (and DCDN's) bind through one store and one set of limiters.
pub(crate) type SharedCas = Arc<CasStore>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_names_are_deterministic_and_short() {
        let fp = Fingerprint([0xab; 32]);
        let name = cas_name(&fp);
        assert_eq!(name, format!("certrotd-{}", "ab".repeat(16)));
        assert!(name.len() <= 63);
        assert!(is_own_name(&name, &fp));
        assert!(!is_own_name("my-upload", &fp));
        assert!(!is_own_name(&name, &Fingerprint([0xac; 32])));
    }

    #[test]
    fn an_upload_refusal_echoing_the_request_does_not_carry_the_key() {
        use crate::aliyun::error::ResponseMeta;
        let key = "MHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oq8V7NFbJ8gToAoGCCqGSM49AwEHoUQDQgAE";
        let echo = format!(
            "Specified signature is not matched with our calculation. server string to sign is:POST&%2F&Action%3DUploadUserCertificate%26Key%3D-----BEGIN%2520EC%2520PRIVATE%2520KEY-----%250A{key}"
        );
        let body =
            format!(r#"{{"RequestId":"r","Code":"SignatureDoesNotMatch","Message":"{echo}"}}"#);
        let meta = ResponseMeta {
            status: 400,
            ..ResponseMeta::default()
        };
        let e = ApiError::from_response(ACTION_UPLOAD, meta, body.as_bytes(), &[]);
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(&key[..20]), "{shown}");
        assert!(!shown.contains("BEGIN"), "{shown}");
        assert_eq!(e.code(), Some("SignatureDoesNotMatch"));
    }

    #[test]
    fn sha2_compares_by_value() {
        let fp = Fingerprint([0x0f; 32]);
        assert!(sha2_matches(&"0F".repeat(32), &fp));
        assert!(sha2_matches(&"0f".repeat(32), &fp));
        let colons = vec!["0F"; 32].join(":");
        assert!(sha2_matches(&colons, &fp));
        assert!(!sha2_matches(&"0e".repeat(32), &fp));
        assert!(!sha2_matches("", &fp));
    }
}
