//! The SSL Certificates Service (CAS, API version `2020-04-07`) as the emulator answers it:
//! one account's uploaded certificates, and the CDN write calls' bindings to them.
//!
//! One emulator process answers the CDN and CAS: requests are told apart by their action and
//! `Version` (each action is answered only under its own API's version; `InvalidVersion`
//! otherwise), so `[aliyun] endpoint` and `[cas] endpoint` may name the same emulator.
//!
//! Actions: `UploadUserCertificate` (`Name` required, at most 63 characters, unique in the
//! account → `NameRepeat`; `Cert`/`Key` parsed and matched with the checks the CDN write
//! calls use; the same content under another name is accepted, as CAS does; `ClientToken`
//! is accepted and ignored — CAS gives no idempotence for it), `ListUserCertificateOrder`
//! (`OrderType` `UPLOAD`, `Keyword` matched against the certificate's domain names,
//! `CurrentPage`/`ShowSize` paging), `GetUserCertificateDetail` (`CertId`),
//! `DeleteUserCertificate` (`CertId`; refused with `CertificateInUse` while a domain is
//! bound to it). Rate limits per account: uploads 100 in any rolling second, every other
//! CAS call 10.
//!
//! Bindings (`CertType=cas` in a CDN write call): the batch call by `CertName` (the CAS
//! name); the per-domain call (and DCDN's, through [`Cas::binding`]) by `CertId` and
//! `CertRegion` (a missing one is `SSLPri.MissingParameter`, as peers report from the real
//! API). A bound domain serves the CAS certificate and remembers its `CertId`.
//!
//! One account, one CAS: the CDN and DCDN emulators of one process may share it
//! ([`SharedCas`]; `Emulator::start_sharing_cas`), as both products bind to the account's
//! one CAS. CAS keeps which domain of which product is bound to which certificate (each
//! product's emulator tells it whenever a domain's certificate changes), so
//! `DeleteUserCertificate` is refused while a domain of either product is bound. A DCDN
//! emulator in a process of its own (`certrotd emulate --product dcdn`) has a CAS of its own
//! and knows nothing of the CDN emulator's (no emulator talks to another over the network):
//! `store = "cas"` with DCDN domains is emulated by both products' emulators in one process
//! (the library's `Emulator::start_sharing_cas`, as the integration tests do).
//!
//! Invariant: no key material is kept: the key is read only to check the pair.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::api::{ApiError, Params, Window, check_certificate, missing, refuse};
use super::record::Served;
use crate::cert::{Certificate, Fingerprint};
use crate::config::Product;

/// The account's CAS as the emulators of one process share it.
pub(crate) type SharedCas = Arc<Mutex<Cas>>;

/// The shared CAS, locked (always after the emulator's own state: CAS never locks one).
pub(super) fn lock(cas: &SharedCas) -> MutexGuard<'_, Cas> {
    cas.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The API version CAS actions are answered under.
pub(crate) const VERSION: &str = "2020-04-07";
pub(crate) const ACTION_UPLOAD: &str = "UploadUserCertificate";
pub(crate) const ACTION_LIST: &str = "ListUserCertificateOrder";
pub(crate) const ACTION_DETAIL: &str = "GetUserCertificateDetail";
pub(crate) const ACTION_DELETE: &str = "DeleteUserCertificate";
/// Every CAS action.
pub(crate) const ACTIONS: &[&str] = &[ACTION_UPLOAD, ACTION_LIST, ACTION_DETAIL, ACTION_DELETE];
/// CAS's documented limit on certificate names.
pub(crate) const MAX_NAME: usize = 63;
const UPLOADS_PER_SECOND: u32 = 100;
const OTHERS_PER_SECOND: u32 = 10;
const MAX_SHOW_SIZE: u64 = 100;
/// The first `CertId` handed out (real ids are large numbers).
const FIRST_ID: u64 = 14_000_001;

/// One certificate in CAS (no key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CasCert {
    pub cert_id: u64,
    pub name: String,
    pub fingerprint: Fingerprint,
    pub(crate) names: Vec<String>,
    /// Uploaded with a `--cas-user-cert` seed (someone other than certrotd).
    pub by_user: bool,
    #[serde(skip)]
    pub(crate) chain_pem: String,
    #[serde(skip)]
    serial: String,
    #[serde(skip)]
    issuer: String,
    #[serde(skip)]
    not_before: OffsetDateTime,
    #[serde(skip)]
    not_after: OffsetDateTime,
}

/// The account's CAS.
pub(crate) struct Cas {
    certs: BTreeMap<u64, CasCert>,
    /// Which CAS certificate each product's domain is bound to (only bound domains).
    bound: BTreeMap<(Product, String), u64>,
    next_id: u64,
    region: String,
    uploads: Window,
    others: Window,
}

impl Cas {
    /// An empty CAS in `region`.
    pub(super) fn new(region: &str) -> Cas {
        Cas {
            certs: BTreeMap::new(),
            bound: BTreeMap::new(),
            next_id: FIRST_ID,
            region: region.to_string(),
            uploads: Window::default(),
            others: Window::default(),
        }
    }

    /// The certificates held, by id.
    pub(super) fn certs(&self) -> impl Iterator<Item = &CasCert> {
        self.certs.values()
    }

    /// Adds a certificate as a user's upload under `name` (a seed); its id.
    pub(super) fn seed(
        &mut self,
        name: &str,
        chain: &str,
        key: &str,
        wall: OffsetDateTime,
    ) -> Result<u64, String> {
        self.add(name, chain, key, true, wall)
            .map_err(|e| format!("{}: {}", e.code, e.message))
    }

    /// Records what `product`'s `domain` now serves: bound to CAS certificate `cert_id`, or
    /// (`None`) something else or nothing.
    pub(super) fn note_served(&mut self, product: Product, domain: &str, cert_id: Option<u64>) {
        let key = (product, domain.to_string());
        match cert_id {
            Some(id) => self.bound.insert(key, id),
            None => self.bound.remove(&key),
        };
    }

    /// Answers one CAS action (the envelope already checked).
    pub(super) fn answer(
        &mut self,
        action: &str,
        p: &Params,
        now: Instant,
        wall: OffsetDateTime,
    ) -> Result<Value, ApiError> {
        let admitted = if action == ACTION_UPLOAD {
            self.uploads.admit(now, UPLOADS_PER_SECOND)
        } else {
            self.others.admit(now, OTHERS_PER_SECOND)
        };
        if !admitted {
            return Err(super::api::throttled());
        }
        match action {
            ACTION_UPLOAD => self.upload(p, wall),
            ACTION_LIST => self.list(p, wall),
            ACTION_DETAIL => self.detail(p, wall),
            _ => self.delete(p),
        }
    }

    fn upload(&mut self, p: &Params, wall: OffsetDateTime) -> Result<Value, ApiError> {
        let name = p.require("Name")?.to_string();
        let chain = p.require("Cert")?.to_string();
        let key = Zeroizing::new(p.require("Key")?.to_string());
        let id = self.add(&name, &chain, &key, false, wall)?;
        Ok(json!({ "CertId": id, "ResourceId": format!("acs:cas:{}:cert/{id}", self.region) }))
    }

    fn add(
        &mut self,
        name: &str,
        chain: &str,
        key: &str,
        by_user: bool,
        wall: OffsetDateTime,
    ) -> Result<u64, ApiError> {
        if name.chars().count() > MAX_NAME {
            return Err(refuse(
                400,
                "InvalidParameter",
                format!("The Name is longer than {MAX_NAME} characters."),
            ));
        }
        if self.certs.values().any(|c| c.name == name) {
            return Err(refuse(
                400,
                "NameRepeat",
                format!(
                    "A certificate named {name} already exists; certificate names must be unique."
                ),
            ));
        }
        let cert = check_certificate(chain, key, wall)?;
        let id = self.next_id;
        self.next_id += 1;
        self.certs.insert(id, cas_cert(id, name, &cert, by_user));
        Ok(id)
    }

    fn list(&self, p: &Params, wall: OffsetDateTime) -> Result<Value, ApiError> {
        let page = number(p, "CurrentPage", 1, u64::MAX)?;
        let size = number(p, "ShowSize", 50, MAX_SHOW_SIZE)?;
        let uploads = match p.get("OrderType") {
            None | Some("UPLOAD") => true,
            Some("CPACK" | "BUY" | "CERT") => false,
            Some(other) => {
                return Err(refuse(
                    400,
                    "InvalidParameter",
                    format!("OrderType {other:?} is not one of CPACK, BUY, UPLOAD, CERT."),
                ));
            }
        };
        let keyword = p.get("Keyword").unwrap_or("").to_ascii_lowercase();
        let matching: Vec<&CasCert> = self
            .certs
            .values()
            .filter(|_| uploads)
            .filter(|c| keyword.is_empty() || c.names.iter().any(|n| n.contains(&keyword)))
            .collect();
        let skip = usize::try_from(size.saturating_mul(page - 1)).unwrap_or(usize::MAX);
        let entries: Vec<Value> = matching
            .iter()
            .skip(skip)
            .take(usize::try_from(size).unwrap_or(usize::MAX))
            .map(|c| c.list_entry(wall))
            .collect();
        Ok(json!({
            "TotalCount": matching.len(),
            "CurrentPage": page,
            "ShowSize": size,
            "CertificateOrderList": entries,
        }))
    }

    fn cert_id(p: &Params) -> Result<u64, ApiError> {
        let raw = p.require("CertId")?;
        raw.trim().parse().map_err(|_| {
            refuse(
                400,
                "InvalidParameter",
                format!("CertId {raw:?} is not a number."),
            )
        })
    }

    fn get(&self, id: u64) -> Result<&CasCert, ApiError> {
        self.certs.get(&id).ok_or_else(|| {
            refuse(
                404,
                "CertificateNotFound",
                format!("The certificate {id} does not exist."),
            )
        })
    }

    fn detail(&self, p: &Params, wall: OffsetDateTime) -> Result<Value, ApiError> {
        let c = self.get(Cas::cert_id(p)?)?;
        Ok(json!({
            "Id": c.cert_id,
            "Name": c.name,
            "Cert": c.chain_pem,
            "Sha2": c.sha2(),
            "SerialNo": c.serial,
            "CommonName": c.names.first().cloned().unwrap_or_default(),
            "Sans": c.names.join(","),
            "Issuer": c.issuer,
            "StartDate": date(c.not_before),
            "EndDate": date(c.not_after),
            "NotBefore": c.not_before.unix_timestamp() * 1000,
            "NotAfter": c.not_after.unix_timestamp() * 1000,
            "Expired": c.not_after <= wall,
            "BuyInAliyun": false,
        }))
    }

    fn delete(&mut self, p: &Params) -> Result<Value, ApiError> {
        let id = Cas::cert_id(p)?;
        self.get(id)?;
        if let Some(((_, domain), _)) = self.bound.iter().find(|(_, bound)| **bound == id) {
            return Err(refuse(
                400,
                "CertificateInUse",
                format!("The certificate {id} is in use by {domain}; unbind it first."),
            ));
        }
        self.certs.remove(&id);
        Ok(json!({}))
    }

    /// The certificate a `CertType=cas` write call binds, as the domains will serve it:
    /// by `CertName` (`by_id = false`, the batch call) or by `CertId` and `CertRegion`
    /// (the per-domain calls).
    pub(crate) fn binding(
        &self,
        p: &Params,
        by_id: bool,
        request_id: &str,
        wall: OffsetDateTime,
    ) -> Result<(Served, Fingerprint, Vec<String>), ApiError> {
        let cert = if by_id {
            for name in ["CertId", "CertRegion"] {
                if p.get(name).is_none_or(str::is_empty) {
                    return Err(refuse(
                        400,
                        "SSLPri.MissingParameter",
                        format!(
                            "The SSLPri parameter is required (a CertType=cas binding lacks {name})."
                        ),
                    ));
                }
            }
            let region = p.get("CertRegion").unwrap_or_default();
            if region != self.region {
                return Err(refuse(
                    400,
                    "InvalidParameter.CertRegion",
                    format!(
                        "CertRegion {region:?} is not this account's CAS region ({}).",
                        self.region
                    ),
                ));
            }
            self.get(Cas::cert_id(p)?)?
        } else {
            let name = p
                .get("CertName")
                .filter(|n| !n.is_empty())
                .ok_or_else(|| missing("CertName"))?;
            self.certs
                .values()
                .find(|c| c.name == name)
                .ok_or_else(|| {
                    refuse(
                        404,
                        "CertificateNotFound",
                        format!("No CAS certificate is named {name}."),
                    )
                })?
        };
        if cert.not_after <= wall {
            return Err(refuse(
                400,
                "Certificate.Expired",
                "The CAS certificate has expired.",
            ));
        }
        Ok((
            cert.served(request_id, wall),
            cert.fingerprint,
            cert.names.clone(),
        ))
    }

    /// What a domain bound to `cert_id` serves (a console binding), if CAS holds it.
    pub(super) fn served_as(&self, cert_id: u64, wall: OffsetDateTime) -> Option<Served> {
        Some(self.certs.get(&cert_id)?.served("console", wall))
    }
}

impl CasCert {
    /// A domain bound to this certificate.
    fn served(&self, request_id: &str, wall: OffsetDateTime) -> Served {
        let cert = self;
        Served {
            cert_name: cert.name.clone(),
            fingerprint: cert.fingerprint,
            names: cert.names.clone(),
            not_before: cert.not_before,
            not_after: cert.not_after,
            updated_at: wall,
            request_id: request_id.to_string(),
            chain_pem: cert.chain_pem.clone(),
            cas_cert_id: Some(cert.cert_id),
        }
    }

    /// Upper-case hex of the leaf's SHA-256, as CAS shows it.
    fn sha2(&self) -> String {
        self.fingerprint.hex().to_ascii_uppercase()
    }

    fn list_entry(&self, wall: OffsetDateTime) -> Value {
        json!({
            "CertificateId": self.cert_id,
            "Name": self.name,
            "Sha2": self.sha2(),
            "SerialNo": self.serial,
            "CommonName": self.names.first().cloned().unwrap_or_default(),
            "Sans": self.names.join(","),
            "Domain": self.names.join(","),
            "Issuer": self.issuer,
            "StartDate": date(self.not_before),
            "EndDate": date(self.not_after),
            "CertStartTime": self.not_before.unix_timestamp() * 1000,
            "CertEndTime": self.not_after.unix_timestamp() * 1000,
            "Expired": self.not_after <= wall,
            "Upload": true,
            "SourceType": "upload",
            "Status": if self.not_after <= wall { "EXPIRED" } else { "ISSUED" },
        })
    }
}

fn cas_cert(id: u64, name: &str, cert: &Certificate, by_user: bool) -> CasCert {
    let (serial, issuer) = serial_and_issuer(&cert.chain_pem());
    CasCert {
        cert_id: id,
        name: name.to_string(),
        fingerprint: cert.fingerprint,
        names: cert.names.clone(),
        by_user,
        chain_pem: cert.chain_pem(),
        serial,
        issuer,
        not_before: cert.not_before,
        not_after: cert.not_after,
    }
}

/// The leaf's serial number as CAS shows it (hex, left-padded with `0` to 32 digits) and
/// its issuer's common name.
fn serial_and_issuer(chain_pem: &str) -> (String, String) {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use x509_parser::prelude::FromDer;
    let Some(Ok(der)) = CertificateDer::pem_slice_iter(chain_pem.as_bytes()).next() else {
        return (String::new(), String::new());
    };
    let Ok((_, x)) = x509_parser::certificate::X509Certificate::from_der(der.as_ref()) else {
        return (String::new(), String::new());
    };
    let hex: String = x.raw_serial().iter().map(|b| format!("{b:02x}")).collect();
    let hex = hex.trim_start_matches('0');
    let serial = format!("{hex:0>32}");
    let issuer = x
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    (serial, issuer)
}

fn date(t: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// A page parameter: absent → `default`, else 1..=`max`.
fn number(p: &Params, name: &str, default: u64, max: u64) -> Result<u64, ApiError> {
    match p.get(name) {
        None | Some("") => Ok(default),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(refuse(
                400,
                "InvalidParameter",
                format!("{name} {v:?} must be a number from 1 to {max}."),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testca::{Issued, Leaf, TestCa};

    fn issue(names: &[&str]) -> Issued {
        let ca = TestCa::new("cas tests").expect("ca");
        let now = OffsetDateTime::now_utc();
        let leaf = Leaf::new(
            names,
            now - time::Duration::days(1),
            now + time::Duration::days(30),
        );
        ca.issue(&leaf).expect("issue")
    }

    fn upload(cas: &mut Cas, at: Instant, name: &str, c: &Issued) -> Result<Value, ApiError> {
        let p = Params::from_pairs(&[
            ("Name", name),
            ("Cert", &c.fullchain_pem),
            ("Key", &c.key_pem),
        ]);
        cas.answer(ACTION_UPLOAD, &p, at, OffsetDateTime::now_utc())
    }

    fn code(r: Result<Value, ApiError>) -> &'static str {
        r.err().map_or("ok", |e| e.code)
    }

    #[test]
    fn names_are_unique_and_short_but_content_may_repeat() {
        let mut cas = Cas::new("cn-hangzhou");
        let c = issue(&["www.example.com"]);
        let t = Instant::now();
        assert_eq!(
            code(upload(&mut cas, t, &"n".repeat(64), &c)),
            "InvalidParameter"
        );
        assert_eq!(code(upload(&mut cas, t, &"n".repeat(63), &c)), "ok");
        assert_eq!(code(upload(&mut cas, t, &"n".repeat(63), &c)), "NameRepeat");
        assert_eq!(code(upload(&mut cas, t, "again", &c)), "ok");
        let other = issue(&["www.example.com"]);
        let mismatched = Issued {
            key_pem: other.key_pem.clone(),
            ..c.clone()
        };
        assert_eq!(
            code(upload(&mut cas, t, "x", &mismatched)),
            "Certificate.MissMatch"
        );
        assert_eq!(cas.certs().count(), 2);
    }

    #[test]
    fn list_matches_the_domain_names_and_pages() {
        let mut cas = Cas::new("cn-hangzhou");
        let t = Instant::now();
        for i in 0..3 {
            upload(&mut cas, t, &format!("w{i}"), &issue(&["www.example.com"])).expect("upload");
        }
        upload(&mut cas, t, "api", &issue(&["api.example.org"])).expect("upload");
        let list = |cas: &mut Cas, page: &str, at: Instant| {
            let p = Params::from_pairs(&[
                ("OrderType", "UPLOAD"),
                ("Keyword", "www.example.com"),
                ("CurrentPage", page),
                ("ShowSize", "2"),
            ]);
            cas.answer(ACTION_LIST, &p, at, OffsetDateTime::now_utc())
        };
        let first = list(&mut cas, "1", t).expect("page 1");
        assert_eq!(first["TotalCount"], 3);
        assert_eq!(
            first["CertificateOrderList"].as_array().map(Vec::len),
            Some(2)
        );
        let entry = &first["CertificateOrderList"][0];
        assert_eq!(entry["Sha2"].as_str().map(str::len), Some(64));
        assert_eq!(entry["SerialNo"].as_str().map(str::len), Some(32));
        let second = list(&mut cas, "2", t).expect("page 2");
        assert_eq!(
            second["CertificateOrderList"].as_array().map(Vec::len),
            Some(1)
        );
        // Ten calls other than uploads in a window: the eleventh is throttled.
        for _ in 2..10 {
            list(&mut cas, "1", t).expect("within the limit");
        }
        assert_eq!(code(list(&mut cas, "1", t)), "Throttling.User");
    }

    #[test]
    fn uploads_have_a_budget_of_a_hundred_a_second() {
        let mut cas = Cas::new("cn-hangzhou");
        let c = issue(&["www.example.com"]);
        let t = Instant::now();
        for i in 0..100 {
            upload(&mut cas, t, &format!("n{i}"), &c).expect("within the limit");
        }
        assert_eq!(code(upload(&mut cas, t, "n100", &c)), "Throttling.User");
    }

    #[test]
    fn a_bound_certificate_cannot_be_deleted_and_bindings_need_id_and_region() {
        let mut cas = Cas::new("cn-hangzhou");
        let c = issue(&["www.example.com"]);
        let t = Instant::now();
        let id = upload(&mut cas, t, "mine", &c).expect("upload")["CertId"]
            .as_u64()
            .expect("id");
        let id_text = id.to_string();
        let wall = OffsetDateTime::now_utc();
        let no_region = Params::from_pairs(&[("CertType", "cas"), ("CertId", &id_text)]);
        assert_eq!(
            cas.binding(&no_region, true, "r", wall)
                .err()
                .map(|e| e.code),
            Some("SSLPri.MissingParameter")
        );
        let wrong = Params::from_pairs(&[("CertId", &id_text), ("CertRegion", "ap-southeast-1")]);
        assert_eq!(
            cas.binding(&wrong, true, "r", wall).err().map(|e| e.code),
            Some("InvalidParameter.CertRegion")
        );
        let by_id = Params::from_pairs(&[("CertId", &id_text), ("CertRegion", "cn-hangzhou")]);
        let (_, fp, _) = cas.binding(&by_id, true, "r", wall).expect("bound by id");
        let by_name = Params::from_pairs(&[("CertName", "mine")]);
        assert_eq!(
            cas.binding(&by_name, false, "r", wall).expect("by name").1,
            fp
        );
        let unknown = Params::from_pairs(&[("CertName", "nobody")]);
        assert!(cas.binding(&unknown, false, "r", wall).is_err());
        // Bound by a CDN domain, then (that one moved on) by a DCDN domain of the same
        // name: in use either way; deletable once neither product's domain is bound.
        let del = Params::from_pairs(&[("CertId", &id_text)]);
        cas.note_served(Product::Cdn, "www.example.com", Some(id));
        assert_eq!(
            code(cas.answer(ACTION_DELETE, &del, t, wall)),
            "CertificateInUse"
        );
        cas.note_served(Product::Dcdn, "www.example.com", Some(id));
        cas.note_served(Product::Cdn, "www.example.com", None);
        assert_eq!(
            code(cas.answer(ACTION_DELETE, &del, t, wall)),
            "CertificateInUse"
        );
        let detail = cas.answer(ACTION_DETAIL, &del, t, wall).expect("detail");
        assert_eq!(detail["Name"], "mine");
        assert!(detail.get("Key").is_none(), "the emulator keeps no key");
        cas.note_served(Product::Dcdn, "www.example.com", None);
        cas.answer(ACTION_DELETE, &del, t, wall).expect("deleted");
        assert_eq!(
            code(cas.answer(ACTION_DETAIL, &del, t, wall)),
            "CertificateNotFound"
        );
    }
}
