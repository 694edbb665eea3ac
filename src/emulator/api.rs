//! The API's behaviour, free of HTTP: one request's parameters in, one answer out, with the
//! emulator's whole state (served certificates, nonces, rate windows, log) updated.
//!
//! Order of checks for every request: injected fault (decided by the seeded generator, one
//! draw per request, so a seed gives the same fault sequence), then the signature envelope,
//! the action, the rate limit, and the action's own checks. An injected fault changes
//! nothing but the log; any refusal changes no served state.
//!
//! Two envelopes, told apart by the `Authorization` header:
//! - v1 (no `Authorization`): common parameters, the AccessKeyId, the HMAC-SHA1 `Signature`
//!   over every parameter, `Timestamp`, `SignatureNonce`; the action is `Action`.
//! - V3 (`Authorization: ACS3-HMAC-SHA256 …`): the header's shape (`IncompleteSignature`),
//!   the required `x-acs-*` headers and `host` (`MissingParameter`), `x-acs-version`,
//!   `host` and every `x-acs-*` header among `SignedHeaders` (`IncompleteSignature`), the
//!   AccessKeyId, the signature recomputed by certrotd's own signer over the listed headers
//!   as received, the query and `x-acs-content-sha256` (`SignatureDoesNotMatch`, whose
//!   message echoes only the string-to-sign: a hash), then that header against the body's
//!   SHA-256 (`SignatureDoesNotMatch`: Alibaba documents no code of its own for it),
//!   `x-acs-date` and `x-acs-signature-nonce` under the same 15-minute window and nonce rule
//!   as v1; the action is `x-acs-action`, the parameters are the query and the form body.
//!
//! Invariant: no key material is stored. `SSLPri` is read only to check the pair; the v1
//! `SignatureDoesNotMatch` message echoes it back to the caller (as Alibaba does) but is
//! never logged or kept.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::format_description;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::cas::{self, Cas, SharedCas};
use super::dcdn::{self, Op};
#[path = "imds.rs"]
mod imds;
#[path = "sts.rs"]
mod sts;

use super::record::{LogEntry, LogJson, Served};
use super::{EmulatorConfig, Faults};
use crate::aliyun::sign::{self, V3Authorization};
use crate::cert::Fingerprint;
use crate::config::Product;

pub(crate) const ACTION_SET: &str = "BatchSetCdnDomainServerCertificate";
/// The per-domain write: one domain, no `ForceSet`, on its own rate budget.
pub(crate) const ACTION_SET_SSL: &str = "SetCdnDomainSSLCertificate";
pub(crate) const ACTION_DESCRIBE_CERT: &str = "DescribeDomainCertificateInfo";
pub(crate) const ACTION_USER_DOMAINS: &str = "DescribeUserDomains";
/// The API version the emulator speaks.
pub(crate) const VERSION: &str = "2018-05-10";
/// Timestamps further than this from the emulator's clock are refused.
pub(crate) const TIMESTAMP_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The rate limit counts calls in any rolling window this long: one second less an allowance
/// for the jitter between a client starting a call and the emulator reading it, so a client
/// that keeps the rule exactly is not throttled for transit noise.
pub(crate) const RATE_WINDOW: Duration = Duration::from_millis(950);
const MAX_CERT_NAME: usize = 128;
const MAX_PAGE_SIZE: u64 = 500;
/// Longest URL query accepted; Alibaba's gateway answers a longer URL (certificates sent as
/// query parameters) with an HTML 414 page, and so does the emulator.
pub(crate) const MAX_QUERY: usize = 8 * 1024;

/// One HTTP request, reduced to what the API looks at.
pub(super) struct Incoming {
    pub(crate) method: String,
    /// The URL path (V3's canonical URI).
    pub(crate) path: String,
    /// The headers with a text value, names lower case, in arrival order.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) query: Option<String>,
    pub(crate) body: Bytes,
    /// The body was over the size limit (and is empty here).
    pub(crate) too_large: bool,
}

/// What to send back.
pub(super) enum Reply {
    Json {
        status: u16,
        request_id: String,
        body: Vec<u8>,
    },
    /// A gateway's HTML error page (not the API's JSON).
    Html { status: u16, body: Vec<u8> },
    /// A plain-text answer (the instance metadata service's).
    Text { status: u16, body: Vec<u8> },
    /// Close the connection without an answer.
    Reset,
}

impl Incoming {
    /// The first value of header `name` (lower case).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `Authorization` header: present means a V3-signed request.
    fn authorization(&self) -> Option<&str> {
        self.header("authorization")
    }
}

/// Who signed the request and what it asks for, read from the v1 parameters or the V3
/// headers (for the log; the checks read the same places).
struct Envelope {
    action: String,
    access_key_id: String,
    nonce: String,
    timestamp: String,
}

impl Envelope {
    fn of(req: &Incoming, p: &Params) -> Envelope {
        match req.authorization() {
            None => Envelope {
                action: p.text("Action"),
                access_key_id: p.text("AccessKeyId"),
                nonce: p.text("SignatureNonce"),
                timestamp: p.text("Timestamp"),
            },
            Some(auth) => {
                let header = |n: &str| req.header(n).unwrap_or_default().to_string();
                Envelope {
                    action: header("x-acs-action"),
                    access_key_id: sign::parse_authorization_v3(auth)
                        .map(|a| a.access_key_id.to_string())
                        .unwrap_or_default(),
                    nonce: header("x-acs-signature-nonce"),
                    timestamp: header("x-acs-date"),
                }
            }
        }
    }
}

/// Headers a V3 request must carry.
const V3_REQUIRED: [&str; 6] = [
    "host",
    "x-acs-action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-content-sha256",
];

/// A refusal: HTTP status, `Code`, `Message`.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: u16,
    pub(super) code: &'static str,
    pub(super) message: String,
}

pub(super) fn refuse(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        code,
        message: message.into(),
    }
}

pub(super) fn missing(name: &str) -> ApiError {
    refuse(
        400,
        "MissingParameter",
        format!(
            "The input parameter \"{name}\" that is mandatory for processing this request is not supplied."
        ),
    )
}

enum Outcome {
    Ok(Value),
    Err(ApiError),
    /// The gateway refused the URL as too long.
    UriTooLong,
    Reset,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Write,
    PerDomainWrite,
    Read,
}

/// Query and form-body parameters together, in arrival order.
pub(super) struct Params {
    all: Vec<(String, String)>,
    in_query: bool,
}

impl Params {
    fn parse(req: &Incoming) -> Params {
        let mut all: Vec<(String, String)> = Vec::new();
        if let Some(q) = &req.query {
            all.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        let in_query = !all.is_empty();
        if req.method == "POST" {
            all.extend(form_urlencoded::parse(&req.body).into_owned());
        }
        Params { all, in_query }
    }

    /// Parameters as given (tests of the actions behind the envelope).
    #[cfg(test)]
    pub(super) fn from_pairs(pairs: &[(&str, &str)]) -> Params {
        let all = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        Params {
            all,
            in_query: false,
        }
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.all
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or_default().to_string()
    }

    pub(super) fn require(&self, name: &str) -> Result<&str, ApiError> {
        match self.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(missing(name)),
        }
    }

    fn check_duplicates(&self) -> Result<(), ApiError> {
        let mut seen = HashSet::new();
        for (k, _) in &self.all {
            if !seen.insert(k.as_str()) {
                return Err(refuse(
                    400,
                    "InvalidParameter",
                    format!(
                        "The parameter \"{k}\" appears more than once; send each parameter once."
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `DomainName` split at commas, trimmed, lowercased (for the log and the checks).
    fn domains(&self) -> Vec<String> {
        match self.get("DomainName") {
            Some(list) if !list.is_empty() => list
                .split(',')
                .map(|d| d.trim().to_ascii_lowercase())
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Calls that arrived in the last [`RATE_WINDOW`].
#[derive(Default)]
pub(super) struct Window {
    arrivals: VecDeque<Instant>,
}

impl Window {
    /// Admits a call that arrived at `now` unless `limit` calls are already in the window
    /// before it.
    pub(super) fn admit(&mut self, now: Instant, limit: u32) -> bool {
        while let Some(first) = self.arrivals.front() {
            if now.saturating_duration_since(*first) >= RATE_WINDOW {
                self.arrivals.pop_front();
            } else {
                break;
            }
        }
        if self.arrivals.len() >= limit as usize {
            return false;
        }
        // Arrival times are taken before the state lock, so they may come in a little out
        // of order: keep the window sorted.
        let at = self.arrivals.partition_point(|t| *t <= now);
        self.arrivals.insert(at, now);
        true
    }
}

/// The emulator's whole mutable state.
pub(super) struct State {
    /// The product this emulator is (its version, actions and answer shapes).
    product: Product,
    /// The batch call answers `InvalidAction.NotFound`, as once Alibaba retires it.
    batch_gone: bool,
    /// Known domains that are offline (listed so; writes refused).
    offline: BTreeSet<String>,
    access_key_id: String,
    access_key_secret: Zeroizing<String>,
    domains: BTreeSet<String>,
    max_domains_per_call: usize,
    writes_per_second: u32,
    per_domain_writes_per_second: u32,
    reads_per_second: u32,
    faults: Faults,
    served: BTreeMap<String, Served>,
    /// `served` encoded for the dump; `None` after a change.
    served_json: Option<Vec<u8>>,
    /// CertName → fingerprint of the content uploaded under it.
    cert_names: HashMap<String, Fingerprint>,
    nonces: HashSet<String>,
    writes: Window,
    per_domain_writes: Window,
    reads: Window,
    log: Vec<LogEntry>,
    log_json: LogJson,
    fault_rng: StdRng,
    id_rng: StdRng,
    started: Instant,
    generation: u64,
    /// The account's SSL Certificates Service (shared with the other product's emulator
    /// when they run as one process).
    cas: SharedCas,
    sts: sts::Sts,
    imds: imds::Imds,
}

impl State {
    pub(super) fn new(cfg: &EmulatorConfig, started: Instant) -> State {
        State {
            product: cfg.product,
            batch_gone: cfg.batch_gone,
            offline: cfg.offline.iter().map(|d| d.to_ascii_lowercase()).collect(),
            access_key_id: cfg.access_key_id.clone(),
            access_key_secret: Zeroizing::new(cfg.access_key_secret.clone()),
            domains: cfg.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            max_domains_per_call: cfg.max_domains_per_call,
            writes_per_second: cfg.writes_per_second,
            per_domain_writes_per_second: cfg.per_domain_writes_per_second,
            reads_per_second: cfg.reads_per_second,
            faults: cfg.faults,
            served: BTreeMap::new(),
            served_json: None,
            cert_names: HashMap::new(),
            nonces: HashSet::new(),
            writes: Window::default(),
            per_domain_writes: Window::default(),
            reads: Window::default(),
            log: Vec::new(),
            log_json: LogJson::default(),
            fault_rng: StdRng::seed_from_u64(cfg.seed),
            // Seeded afresh at each start: RequestIds never repeat across restarts (the
            // seed fixes the fault sequence only).
            id_rng: rand::make_rng(),
            started,
            generation: 0,
            cas: std::sync::Arc::new(std::sync::Mutex::new(Cas::new(&cfg.cas_region))),
            sts: sts::Sts::new(cfg.sts_lifetime),
            imds: imds::Imds::default(),
        }
    }

    /// Counts changes: every request (it adds a log entry) and every direct change.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    pub(super) fn log(&self) -> &[LogEntry] {
        &self.log
    }

    pub(super) fn served(&self) -> &BTreeMap<String, Served> {
        &self.served
    }

    pub(super) fn cas(&self) -> std::sync::MutexGuard<'_, Cas> {
        cas::lock(&self.cas)
    }

    /// The CAS this emulator binds to, to share with another product's emulator.
    pub(super) fn cas_handle(&self) -> SharedCas {
        std::sync::Arc::clone(&self.cas)
    }

    /// Binds to `cas` (another product's emulator's, the account's one CAS) instead of its
    /// own, which must still be empty.
    pub(super) fn share_cas(&mut self, cas: SharedCas) {
        self.cas = cas;
    }

    /// `domain` now serves `served`: the served map and CAS's record of bindings.
    fn serve(&mut self, domain: &str, served: Served) {
        let cert_id = served.cas_cert_id;
        self.served.insert(domain.to_string(), served);
        cas::lock(&self.cas).note_served(self.product, domain, cert_id);
        self.served_json = None;
    }

    /// Adds a user's upload to CAS (a seed), as the console would; its `CertId`.
    pub(super) fn seed_cas(
        &mut self,
        name: &str,
        chain: &str,
        key: &str,
        wall: OffsetDateTime,
    ) -> Result<u64, String> {
        let id = cas::lock(&self.cas).seed(name, chain, key, wall)?;
        self.served_json = None;
        self.generation += 1;
        Ok(id)
    }

    /// The state dump's bytes; the served map is re-encoded only after it changed.
    pub(super) fn dump_json(&mut self) -> Vec<u8> {
        let served = self.served_json.get_or_insert_with(|| {
            serde_json::to_vec(&self.served).unwrap_or_else(|_| b"{}".to_vec())
        });
        let cas: Vec<super::record::DumpedCas> = cas::lock(&self.cas)
            .certs()
            .map(|c| super::record::DumpedCas {
                cert_id: c.cert_id,
                name: c.name.clone(),
                fingerprint: c.fingerprint,
                by_user: c.by_user,
            })
            .collect();
        let cas = serde_json::to_vec(&cas).unwrap_or_else(|_| b"[]".to_vec());
        self.log_json.dump(served, &cas)
    }

    #[cfg(test)]
    pub(super) fn set_max_domains_per_call(&mut self, n: usize) {
        self.max_domains_per_call = n;
    }

    pub(super) fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    pub(super) fn set_batch_gone(&mut self, gone: bool) {
        self.batch_gone = gone;
        self.generation += 1;
    }

    /// Sets (or with `None` clears) what `domain` serves, as a change in the console would.
    /// `false` when the domain is unknown.
    pub(super) fn set_served(&mut self, domain: &str, served: Option<Served>) -> bool {
        let domain = domain.to_ascii_lowercase();
        if !self.domains.contains(&domain) {
            return false;
        }
        match served {
            Some(s) => self.serve(&domain, s),
            None => {
                self.served.remove(&domain);
                cas::lock(&self.cas).note_served(self.product, &domain, None);
                self.served_json = None;
            }
        }
        self.generation += 1;
        true
    }

    /// Answers one request at arrival time `now` (tokio clock) and wall-clock time `wall`.
    pub(super) fn process(&mut self, req: &Incoming, now: Instant, wall: OffsetDateTime) -> Reply {
        self.generation += 1;
        let draw: f64 = self.fault_rng.random();
        let request_id = self.new_request_id();
        let params = Params::parse(req);
        // Whole microseconds, as the dump stores them, so the log and the dump agree exactly.
        let since_start = now.saturating_duration_since(self.started);
        let at = Duration::from_micros(u64::try_from(since_start.as_micros()).unwrap_or(u64::MAX));
        let envelope = Envelope::of(req, &params);
        let mut entry = new_entry(&params, &envelope, req, at);
        entry.params = param_names(&params);
        entry.request_id.clone_from(&request_id);
        if imds::is_metadata_path(&req.path) {
            // The metadata service is the instance's own: no faults, no API envelope.
            let reply = self.imds.answer(req, &mut self.sts, wall);
            entry.action = imds::label(&req.path).to_string();
            entry.status = match &reply {
                Reply::Json { status, .. }
                | Reply::Text { status, .. }
                | Reply::Html { status, .. } => Some(*status),
                Reply::Reset => None,
            };
            self.log_json.push(&entry);
            self.log.push(entry);
            return reply;
        }
        if params.get("Action") == Some(sts::ACTION_OIDC) {
            entry.oidc_token_digest = params.get("OIDCToken").map(sts::token_digest);
        }
        let too_long = req.query.as_ref().is_some_and(|q| q.len() > MAX_QUERY);
        let outcome = match self.faults.pick(draw) {
            _ if too_long => Outcome::UriTooLong,
            Some(fault) => {
                entry.injected = true;
                fault
            }
            None => match self.answer(req, &params, now, wall, &request_id) {
                Ok(v) => Outcome::Ok(v),
                Err(e) => Outcome::Err(e),
            },
        };
        let reply = match outcome {
            Outcome::Reset => {
                entry.status = None;
                entry.code = Some("ConnectionReset".to_string());
                Reply::Reset
            }
            Outcome::UriTooLong => {
                entry.status = Some(414);
                entry.code = Some("RequestURITooLong".to_string());
                Reply::Html {
                    status: 414,
                    body: URI_TOO_LONG_PAGE.as_bytes().to_vec(),
                }
            }
            Outcome::Ok(body) => {
                entry.status = Some(200);
                success(body, &request_id)
            }
            Outcome::Err(e) => {
                entry.status = Some(e.status);
                entry.code = Some(e.code.to_string());
                let product = match sts::is_sts_action(params.get("Action")) {
                    true => ("sts.aliyuncs.com", "Sts"),
                    false => (
                        dcdn::host_id(self.product),
                        dcdn::recommend_product(self.product),
                    ),
                };
                failure(&e, &request_id, product)
            }
        };
        tracing::debug!(
            action = %entry.action,
            status = ?entry.status,
            code = ?entry.code,
            "emulator request"
        );
        self.log_json.push(&entry);
        self.log.push(entry);
        reply
    }

    fn new_request_id(&mut self) -> String {
        let b: [u8; 16] = self.id_rng.random();
        let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
        // 32 ASCII hex digits: the slices below are in bounds.
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }

    fn answer(
        &mut self,
        req: &Incoming,
        p: &Params,
        now: Instant,
        wall: OffsetDateTime,
        request_id: &str,
    ) -> Result<Value, ApiError> {
        if req.too_large {
            return Err(refuse(
                413,
                "RequestEntityTooLarge",
                "The request body is larger than the emulator accepts (1 MiB).",
            ));
        }
        if req.method != "GET" && req.method != "POST" {
            return Err(refuse(
                400,
                "UnsupportedHTTPMethod",
                format!(
                    "The HTTP method {} is not supported; use POST or GET.",
                    req.method
                ),
            ));
        }
        p.check_duplicates()?;
        if req.authorization().is_none() && sts::is_sts_action(p.get("Action")) {
            let action = p.text("Action");
            if action == sts::ACTION_ASSUME_ROLE {
                self.authenticate(&req.method, p, wall, &[sts::VERSION])?;
            }
            return self.sts.answer(&action, p, wall);
        }
        let action = match req.authorization() {
            None => {
                self.authenticate(
                    &req.method,
                    p,
                    wall,
                    &[dcdn::version(self.product), cas::VERSION],
                )?;
                p.require("Action")?.to_string()
            }
            Some(auth) => self.authenticate_v3(req, auth, wall)?,
        };
        let cas_action = cas::ACTIONS.contains(&action.as_str());
        let version = match req.authorization() {
            None => p.get("Version"),
            Some(_) => req.header("x-acs-version"),
        };
        if cas_action {
            if version != Some(cas::VERSION) {
                return Err(invalid_version(cas::VERSION));
            }
            return cas::lock(&self.cas).answer(&action, p, now, wall);
        }
        let op = match dcdn::op(self.product, &action) {
            Some(Op::BatchSet) if self.batch_gone => None,
            op => op,
        };
        let Some(op) = op else {
            return Err(refuse(
                404,
                "InvalidAction.NotFound",
                format!("Specified api is not found, please check your url and method: {action}"),
            ));
        };
        let product_version = dcdn::version(self.product);
        if version != Some(product_version) {
            return Err(invalid_version(product_version));
        }
        let class = match op {
            Op::BatchSet => Class::Write,
            Op::SetSsl => Class::PerDomainWrite,
            Op::DescribeCert | Op::UserDomains => Class::Read,
        };
        self.throttle(class, now)?;
        match op {
            Op::BatchSet => {
                let domains = self.domain_list(p)?;
                self.check_online(&domains)?;
                let force = p.get("ForceSet") == Some("1");
                self.set_certificate(p, &domains, force, false, wall, request_id)
            }
            Op::SetSsl => {
                let domain = self.one_domain(p, &action)?;
                self.check_online(std::slice::from_ref(&domain))?;
                self.set_certificate(p, &[domain], false, true, wall, request_id)
            }
            Op::DescribeCert => self.describe_certificate(p, &action),
            Op::UserDomains => self.user_domains(p),
        }
    }

    /// Common parameters (`Version` one of `versions`), AccessKeyId (the emulator's own or
    /// one its STS issued), signature, timestamp, nonce (recorded when all pass).
    fn authenticate(
        &mut self,
        method: &str,
        p: &Params,
        wall: OffsetDateTime,
        versions: &[&str],
    ) -> Result<(), ApiError> {
        check_common_params(p, versions)?;
        let secret = self.secret_for(p.get("AccessKeyId"), p.get("SecurityToken"), wall)?;
        self.check_signature(method, p, &secret)?;
        check_timestamp(p.get("Timestamp").unwrap_or_default(), wall)?;
        self.use_nonce(p.get("SignatureNonce").unwrap_or_default())
    }

    /// The V3 envelope (see the module's documentation); the action when all pass (the nonce
    /// is recorded then).
    fn authenticate_v3(
        &mut self,
        req: &Incoming,
        authorization: &str,
        wall: OffsetDateTime,
    ) -> Result<String, ApiError> {
        let Some(auth) = sign::parse_authorization_v3(authorization) else {
            return Err(incomplete_signature(
                "send Authorization: ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…",
            ));
        };
        for name in V3_REQUIRED {
            match req.header(name) {
                Some(v) if !v.trim().is_empty() => {}
                _ => return Err(missing(name)),
            }
        }
        let version = dcdn::version(self.product);
        if !matches!(req.header("x-acs-version"), Some(v) if v == version || v == cas::VERSION) {
            return Err(invalid_version(version));
        }
        check_v3_signed_headers(req, &auth)?;
        let secret = self.secret_for(
            Some(auth.access_key_id),
            req.header("x-acs-security-token"),
            wall,
        )?;
        self.check_signature_v3(req, &auth, &secret)?;
        let claimed = req.header("x-acs-content-sha256").unwrap_or_default();
        if !claimed
            .trim()
            .eq_ignore_ascii_case(&sign::hex_sha256(&req.body))
        {
            return Err(refuse(
                400,
                "SignatureDoesNotMatch",
                "The x-acs-content-sha256 header does not match the SHA-256 of the request body.",
            ));
        }
        check_timestamp(req.header("x-acs-date").unwrap_or_default().trim(), wall)?;
        self.use_nonce(req.header("x-acs-signature-nonce").unwrap_or_default())?;
        Ok(req.header("x-acs-action").unwrap_or_default().to_string())
    }

    /// The secret that key `id` signs with: the emulator's own key, or temporary
    /// credentials its STS issued (their token must come along and be live).
    fn secret_for(
        &self,
        id: Option<&str>,
        token: Option<&str>,
        wall: OffsetDateTime,
    ) -> Result<Zeroizing<String>, ApiError> {
        let id = id.unwrap_or_default();
        if id == self.access_key_id {
            return Ok(self.access_key_secret.clone());
        }
        match self.sts.secret_for(id, token, wall) {
            Some(found) => found.map(|s| Zeroizing::new(s.to_string())),
            None => Err(unknown_access_key()),
        }
    }

    fn check_signature_v3(
        &self,
        req: &Incoming,
        auth: &V3Authorization<'_>,
        secret: &str,
    ) -> Result<(), ApiError> {
        let (string_to_sign, expected) = expected_signature_v3(req, auth, secret);
        if auth.signature == expected {
            return Ok(());
        }
        Err(refuse(
            400,
            "SignatureDoesNotMatch",
            format!(
                "Specified signature does not match our calculation. server StringToSign is [{string_to_sign}]"
            ),
        ))
    }

    /// Records `nonce`; refused when it was seen before (v1 and V3 share one set).
    fn use_nonce(&mut self, nonce: &str) -> Result<(), ApiError> {
        if self.nonces.insert(nonce.to_string()) {
            return Ok(());
        }
        Err(refuse(
            400,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        ))
    }

    fn check_signature(&self, method: &str, p: &Params, secret: &str) -> Result<(), ApiError> {
        let (string_to_sign, expected) = expected_signature(method, &p.all, secret);
        if p.get("Signature") == Some(expected.as_str()) {
            return Ok(());
        }
        Err(refuse(
            400,
            "SignatureDoesNotMatch",
            format!(
                "Specified signature is not matched with our calculation. server string to sign is:{}",
                string_to_sign.as_str()
            ),
        ))
    }

    fn throttle(&mut self, class: Class, now: Instant) -> Result<(), ApiError> {
        let admitted = match class {
            Class::Write => self.writes.admit(now, self.writes_per_second),
            Class::PerDomainWrite => self
                .per_domain_writes
                .admit(now, self.per_domain_writes_per_second),
            Class::Read => self.reads.admit(now, self.reads_per_second),
        };
        if admitted { Ok(()) } else { Err(throttled()) }
    }

    /// The checks both write calls share (certificate, key, `CertName`, `SSLProtocol`,
    /// `CertType`, coverage of `domains`), then `domains` serve the certificate. `force`:
    /// the call may take a `CertName` over from other content (`ForceSet=1`). With
    /// `CertType=cas` the call binds a CAS certificate instead ([`State::bind_cas`]): by
    /// `CertId` when `by_id` (the per-domain calls), else by `CertName`.
    pub(super) fn set_certificate(
        &mut self,
        p: &Params,
        domains: &[String],
        force: bool,
        by_id: bool,
        wall: OffsetDateTime,
        request_id: &str,
    ) -> Result<Value, ApiError> {
        check_ssl_protocol(p.get("SSLProtocol"))?;
        if p.get("CertType") == Some("cas") {
            return self.bind_cas(p, domains, by_id, wall, request_id);
        }
        check_cert_type(p.get("CertType"))?;
        let cert_name = check_cert_name(p.get("CertName"))?;
        let chain = required_pem(p, "SSLPub")?;
        let key = Zeroizing::new(required_pem(p, "SSLPri")?.to_string());
        let cert = check_certificate(chain, &key, wall)?;
        check_coverage(&cert, domains)?;
        self.claim_cert_name(cert_name, cert.fingerprint, force)?;
        let mut served = Served::new(&cert, cert_name, request_id, wall);
        chain.clone_into(&mut served.chain_pem);
        for d in domains {
            self.serve(d, served.clone());
        }
        Ok(json!({}))
    }

    /// A `CertType=cas` write: `domains` bind the CAS certificate the call names (by
    /// `CertName` in the batch call, by `CertId` and `CertRegion` in a per-domain call),
    /// which must cover each of them.
    fn bind_cas(
        &mut self,
        p: &Params,
        domains: &[String],
        by_id: bool,
        wall: OffsetDateTime,
        request_id: &str,
    ) -> Result<Value, ApiError> {
        let (served, _, names) = cas::lock(&self.cas).binding(p, by_id, request_id, wall)?;
        if let Some(d) = domains
            .iter()
            .find(|d| crate::cert::covers(&names, d).is_none())
        {
            return Err(refuse(
                400,
                "Certificate.MissMatch",
                format!("The certificate does not cover the domain {d}."),
            ));
        }
        for d in domains {
            self.serve(d, served.clone());
        }
        Ok(json!({}))
    }

    /// A `CertName` names one content; another content needs `ForceSet=1` to take it over.
    fn claim_cert_name(
        &mut self,
        name: &str,
        fingerprint: Fingerprint,
        force: bool,
    ) -> Result<(), ApiError> {
        if let Some(existing) = self.cert_names.get(name)
            && *existing != fingerprint
            && !force
        {
            return Err(refuse(
                400,
                "Certificate.Duplicated",
                format!(
                    "A different certificate is already named {name}; choose another CertName or set ForceSet=1."
                ),
            ));
        }
        self.cert_names.insert(name.to_string(), fingerprint);
        Ok(())
    }

    /// Writes to an offline domain are refused as the API refuses an operation the domain's
    /// state does not permit (`IllegalOperation`, 403).
    fn check_online(&self, domains: &[String]) -> Result<(), ApiError> {
        match domains.iter().find(|d| self.offline.contains(*d)) {
            None => Ok(()),
            Some(d) => Err(refuse(
                403,
                "IllegalOperation",
                format!("Illegal domain operate is not permitted: {d} is offline."),
            )),
        }
    }

    /// `DomainName` of a per-domain write: present, exactly one domain, known.
    fn one_domain(&self, p: &Params, action: &str) -> Result<String, ApiError> {
        p.require("DomainName")?;
        let domains = p.domains();
        let [domain] = domains.as_slice() else {
            return Err(refuse(
                400,
                "InvalidParameter.DomainName",
                format!(
                    "{action} takes exactly one DomainName; the call names {}.",
                    domains.len()
                ),
            ));
        };
        if domain.is_empty() {
            return Err(missing("DomainName"));
        }
        if !self.domains.contains(domain) {
            return Err(domain_not_found(domain));
        }
        Ok(domain.clone())
    }

    /// `DomainName` of a write: present, well formed, within the per-call limit, all known.
    fn domain_list(&self, p: &Params) -> Result<Vec<String>, ApiError> {
        p.require("DomainName")?;
        let mut domains = p.domains();
        if domains.iter().any(String::is_empty) {
            return Err(refuse(
                400,
                "InvalidParameter.DomainName",
                "DomainName has an empty entry: separate domains with single commas.",
            ));
        }
        domains.sort();
        domains.dedup();
        if domains.len() > self.max_domains_per_call {
            return Err(refuse(
                400,
                "InvalidParameter.DomainNameOverLimit",
                format!(
                    "The call names {} domains; at most {} are allowed in one call.",
                    domains.len(),
                    self.max_domains_per_call
                ),
            ));
        }
        for d in p.domains() {
            if !self.domains.contains(&d) {
                return Err(domain_not_found(&d));
            }
        }
        Ok(domains)
    }

    fn describe_certificate(&self, p: &Params, action: &str) -> Result<Value, ApiError> {
        let domain = p.require("DomainName")?.trim().to_ascii_lowercase();
        if domain.contains(',') {
            return Err(refuse(
                400,
                "InvalidParameter.DomainName",
                format!("{action} takes one domain name."),
            ));
        }
        if !self.domains.contains(&domain) {
            return Err(domain_not_found(&domain));
        }
        let info = dcdn::cert_info(self.product, &domain, self.served.get(&domain));
        Ok(json!({ "CertInfos": { "CertInfo": [info] } }))
    }

    fn user_domains(&self, p: &Params) -> Result<Value, ApiError> {
        let page_size = page_param(p, "PageSize", 20, MAX_PAGE_SIZE)?;
        let page_number = page_param(p, "PageNumber", 1, u64::MAX)?;
        let skip = page_size.saturating_mul(page_number - 1);
        let page: Vec<Value> = self
            .domains
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .take(usize::try_from(page_size).unwrap_or(usize::MAX))
            .map(|d| {
                let online = !self.offline.contains(d);
                dcdn::page_entry(self.product, d, online, self.served.contains_key(d))
            })
            .collect();
        Ok(json!({
            "PageNumber": page_number,
            "PageSize": page_size,
            "TotalCount": self.domains.len(),
            "Domains": { "PageData": page },
        }))
    }
}

/// The names of the request's parameters (query and form body; never their values),
/// sorted, without the envelope's common ones and the signature.
fn param_names(p: &Params) -> Vec<String> {
    const COMMON: [&str; 10] = [
        "Action",
        "Version",
        "Format",
        "AccessKeyId",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "Timestamp",
        "SecurityToken",
    ];
    let names: BTreeSet<&str> = p
        .all
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !COMMON.contains(k))
        .collect();
    names.into_iter().map(str::to_string).collect()
}

fn new_entry(p: &Params, envelope: &Envelope, req: &Incoming, at: Duration) -> LogEntry {
    let is_write = dcdn::is_write(&envelope.action);
    let is_upload = envelope.action == cas::ACTION_UPLOAD;
    LogEntry {
        at,
        method: req.method.clone(),
        action: envelope.action.clone(),
        access_key_id: envelope.access_key_id.clone(),
        signature: if req.authorization().is_some() {
            "v3"
        } else {
            "v1"
        }
        .to_string(),
        signature_nonce: envelope.nonce.clone(),
        timestamp: envelope.timestamp.clone(),
        domains: p.domains(),
        params_in_query: p.in_query,
        status: None,
        code: None,
        injected: false,
        request_id: String::new(),
        cert_name: if is_write {
            p.get("CertName").map(str::to_string)
        } else if is_upload {
            p.get("Name").map(str::to_string)
        } else {
            None
        },
        fingerprint: if is_write {
            p.get("SSLPub").and_then(leaf_fingerprint)
        } else if is_upload {
            p.get("Cert").and_then(leaf_fingerprint)
        } else {
            None
        },
        params: Vec::new(),
        request_bytes: (req.body.len() + req.query.as_ref().map_or(0, String::len)) as u64,
        oidc_token_digest: None,
    }
}

/// SHA-256 of the first `CERTIFICATE` block's DER, if it decodes.
fn leaf_fingerprint(pem: &str) -> Option<Fingerprint> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()?;
    let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    let bytes: [u8; 32] = digest.as_ref().try_into().ok()?;
    Some(Fingerprint(bytes))
}

const URI_TOO_LONG_PAGE: &str = "<html>\r\n<head><title>414 Request-URI Too Large</title></head>\r\n<body>\r\n<center><h1>414 Request-URI Too Large</h1></center>\r\n<hr><center>Tengine</center>\r\n</body>\r\n</html>\r\n";

fn invalid_version(version: &str) -> ApiError {
    refuse(
        400,
        "InvalidVersion",
        format!("Specified parameter Version is not valid: this API speaks {version}."),
    )
}

fn unknown_access_key() -> ApiError {
    refuse(
        404,
        "InvalidAccessKeyId.NotFound",
        "Specified access key is not found.",
    )
}

fn incomplete_signature(what: &str) -> ApiError {
    refuse(
        400,
        "IncompleteSignature",
        format!("The request signature does not conform to Aliyun standards: {what}."),
    )
}

/// `host` and every `x-acs-*` header the request carries must be signed: an unsigned one
/// could be changed on the way (the action, the date, the content hash).
fn check_v3_signed_headers(req: &Incoming, auth: &V3Authorization<'_>) -> Result<(), ApiError> {
    let signed: BTreeSet<String> = auth
        .header_names()
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    let unsigned = req
        .headers
        .iter()
        .map(|(n, _)| n.as_str())
        .find(|n| (*n == "host" || n.starts_with("x-acs-")) && !signed.contains(*n));
    match unsigned {
        None => Ok(()),
        Some(name) => Err(incomplete_signature(&format!(
            "the header {name} must be listed in SignedHeaders"
        ))),
    }
}

pub(super) fn throttled() -> ApiError {
    refuse(
        400,
        "Throttling.User",
        "Request was denied due to user flow control.",
    )
}

fn domain_not_found(domain: &str) -> ApiError {
    refuse(
        404,
        "InvalidDomain.NotFound",
        format!("The domain provided does not belong to you: {domain}"),
    )
}

/// Every common parameter present, with the values this API version accepts.
fn check_common_params(p: &Params, versions: &[&str]) -> Result<(), ApiError> {
    for name in [
        "Action",
        "Version",
        "AccessKeyId",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "Timestamp",
    ] {
        p.require(name)?;
    }
    if !p.get("Version").is_some_and(|v| versions.contains(&v)) {
        return Err(invalid_version(
            versions.first().copied().unwrap_or_default(),
        ));
    }
    if let Some(f) = p.get("Format")
        && !f.eq_ignore_ascii_case("JSON")
    {
        return Err(refuse(
            400,
            "InvalidParameter.Format",
            "The emulator answers in JSON only: send Format=JSON.",
        ));
    }
    if p.get("SignatureMethod") != Some("HMAC-SHA1") {
        return Err(refuse(
            400,
            "InvalidSignatureMethod",
            "Specified signature method is not supported: use HMAC-SHA1.",
        ));
    }
    if p.get("SignatureVersion") != Some("1.0") {
        return Err(refuse(
            400,
            "InvalidSignatureVersion",
            "Specified signature version is not supported: use 1.0.",
        ));
    }
    Ok(())
}

fn check_ssl_protocol(value: Option<&str>) -> Result<(), ApiError> {
    match value {
        Some("on") => Ok(()),
        Some("off") => Err(refuse(
            400,
            "InvalidParameter.SSLProtocol",
            "The emulator refuses SSLProtocol=off: certrotd must never turn HTTPS off.",
        )),
        Some(_) => Err(refuse(
            400,
            "InvalidSSLProtocol.ValueNotSupported",
            "The specified SSLProtocol is invalid.",
        )),
        None => Err(missing("SSLProtocol")),
    }
}

fn check_cert_type(value: Option<&str>) -> Result<(), ApiError> {
    match value {
        None | Some("upload") => Ok(()),
        Some(t) => Err(refuse(
            400,
            "InvalidParameter.CertType",
            format!("The emulator supports CertType=upload or cas, not {t:?}."),
        )),
    }
}

/// `SSLPub` or `SSLPri`, present and not empty.
fn required_pem<'a>(p: &'a Params, name: &'static str) -> Result<&'a str, ApiError> {
    match p.get(name) {
        Some(v) if !v.is_empty() => Ok(v),
        _ if name == "SSLPub" => Err(refuse(
            400,
            "SSLPub.MissingParameter",
            "The SSLPub parameter is required.",
        )),
        _ => Err(refuse(
            400,
            "SSLPri.MissingParameter",
            "The SSLPri parameter is required.",
        )),
    }
}

/// Every domain of the call is covered by the certificate (a stricter check than Alibaba
/// documents, to catch a planner that sends a certificate to a domain it does not cover).
fn check_coverage(cert: &crate::cert::Certificate, domains: &[String]) -> Result<(), ApiError> {
    match domains
        .iter()
        .find(|d| crate::cert::covers(&cert.names, d).is_none())
    {
        None => Ok(()),
        Some(d) => Err(refuse(
            400,
            "Certificate.DomainMismatch",
            format!(
                "The certificate does not cover the domain {d} (it names {}).",
                cert.names.join(", ")
            ),
        )),
    }
}

fn check_cert_name(name: Option<&str>) -> Result<&str, ApiError> {
    let name = match name {
        Some(n) if !n.is_empty() => n,
        _ => {
            return Err(refuse(
                400,
                "InvalidParameter.CertName",
                "CertName is required: name the certificate (up to 128 characters of A-Za-z0-9._-).",
            ));
        }
    };
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.len() > MAX_CERT_NAME || !ok_chars {
        return Err(refuse(
            400,
            "InvalidParameter.CertName",
            "CertName must be 1 to 128 characters of A-Za-z0-9._-",
        ));
    }
    Ok(name)
}

fn check_timestamp(ts: &str, wall: OffsetDateTime) -> Result<(), ApiError> {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    let Ok(t) = time::PrimitiveDateTime::parse(ts, format) else {
        return Err(refuse(
            400,
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted (yyyy-MM-ddTHH:mm:ssZ, UTC).",
        ));
    };
    let offset = (wall - t.assume_utc()).abs();
    if offset > TIMESTAMP_WINDOW {
        return Err(refuse(
            400,
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired.",
        ));
    }
    Ok(())
}

fn page_param(p: &Params, name: &str, default: u64, max: u64) -> Result<u64, ApiError> {
    let Some(raw) = p.get(name) else {
        return Ok(default);
    };
    match raw.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(refuse(
            400,
            if name == "PageSize" {
                "InvalidParameter.PageSize"
            } else {
                "InvalidParameter.PageNumber"
            },
            format!("{name} must be a whole number from 1 to {max}, not {raw:?}."),
        )),
    }
}

/// `yyyy-MM-ddTHH:mm:ssZ` in UTC, as the API writes times.
pub(super) fn api_time(t: OffsetDateTime) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(format)
        .unwrap_or_default()
}

fn success(mut body: Value, request_id: &str) -> Reply {
    if let Some(obj) = body.as_object_mut() {
        obj.insert("RequestId".to_string(), Value::from(request_id));
    }
    Reply::Json {
        status: 200,
        request_id: request_id.to_string(),
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

/// The error body; `(host, product)` are the answering service's (`HostId`, `Recommend`).
fn failure(e: &ApiError, request_id: &str, (host, product): (&str, &str)) -> Reply {
    let body = json!({
        "RequestId": request_id,
        "HostId": host,
        "Code": e.code,
        "Message": e.message,
        "Recommend": format!("https://api.aliyun.com/troubleshoot?q={}&product={product}&requestId={request_id}", e.code),
    });
    Reply::Json {
        status: e.status,
        request_id: request_id.to_string(),
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

impl Faults {
    /// The injected fault for a uniform draw in [0, 1), if any.
    fn pick(&self, draw: f64) -> Option<Outcome> {
        let mut edge = self.reset_rate;
        if draw < edge {
            return Some(Outcome::Reset);
        }
        edge += self.fail_rate;
        if draw < edge {
            return Some(Outcome::Err(refuse(
                503,
                "ServiceUnavailable",
                "The request has failed due to a temporary failure of the server.",
            )));
        }
        edge += self.internal_rate;
        if draw < edge {
            return Some(Outcome::Err(refuse(
                500,
                "InternalError",
                "The request processing has failed due to some unknown error, exception or failure.",
            )));
        }
        edge += self.throttle_rate;
        if draw < edge {
            return Some(Outcome::Err(throttled()));
        }
        None
    }
}

/// The server's string-to-sign and signature for these parameters (`Signature` itself is
/// left out by the signer), computed with certrotd's own signer.
pub(super) fn expected_signature(
    method: &str,
    params: &[(String, String)],
    secret: &str,
) -> (Zeroizing<String>, String) {
    let sts = crate::aliyun::sign::string_to_sign(method, params);
    let sig = crate::aliyun::sign::signature(secret, &sts);
    (sts, sig)
}

/// The server's V3 string-to-sign and signature for what `req` carries: the headers
/// `SignedHeaders` lists (as received; an absent one counts as empty), the path, the query
/// (not the body: its hash is the `x-acs-content-sha256` header), computed with certrotd's
/// own signer.
pub(super) fn expected_signature_v3(
    req: &Incoming,
    auth: &V3Authorization<'_>,
    secret: &str,
) -> (String, String) {
    let query: Vec<(String, String)> = req
        .query
        .as_deref()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let mut headers: Vec<(&str, &str)> = Vec::new();
    for name in auth.header_names() {
        let name = name.trim();
        let lower = name.to_ascii_lowercase();
        let before = headers.len();
        headers.extend(
            req.headers
                .iter()
                .filter(|(n, _)| *n == lower)
                .map(|(_, v)| (name, v.as_str())),
        );
        if headers.len() == before {
            headers.push((name, ""));
        }
    }
    let hashed_payload = req
        .header("x-acs-content-sha256")
        .unwrap_or_default()
        .trim();
    let canonical = sign::canonical_request_v3(
        &req.method,
        &req.path,
        &sign::canonical_query_v3(&query),
        headers,
        hashed_payload,
    );
    let string_to_sign = sign::string_to_sign_v3(&canonical.request);
    let signature = sign::signature_v3(secret, &string_to_sign);
    (string_to_sign, signature)
}

/// Parses the pair with certrotd's own validation (`cert::parse`, `cert::check_time`) and
/// maps each defect to the code Alibaba answers with. `Invalid` messages hold no key text.
pub(super) fn check_certificate(
    chain: &str,
    key: &str,
    wall: OffsetDateTime,
) -> Result<crate::cert::Certificate, ApiError> {
    use crate::cert::{Invalid, KeyType, Part};
    let cert = crate::cert::parse(chain.as_bytes(), key.as_bytes()).map_err(|e| match e {
        Invalid::KeyMismatch => refuse(
            400,
            "Certificate.MissMatch",
            "The certificate and the private key do not match.",
        ),
        e if e.part() == Some(Part::Key) => refuse(
            400,
            "InvalidSSLPri",
            format!("The private key (SSLPri) is invalid: {e}."),
        ),
        e => refuse(
            400,
            "Certificate.FormatError",
            format!("The certificate (SSLPub) is invalid: {e}."),
        ),
    })?;
    if matches!(cert.key_type, KeyType::Rsa { .. }) && key.contains("-----BEGIN PRIVATE KEY-----") {
        return Err(refuse(
            400,
            "InvalidSSLPri",
            "RSA private keys must be sent in PKCS#1 form (-----BEGIN RSA PRIVATE KEY-----), not PKCS#8.",
        ));
    }
    crate::cert::check_time(&cert, wall).map_err(|e| match e {
        Invalid::NotYetValid { .. } => refuse(
            400,
            "Certificate.NotYetValid",
            format!("The certificate is not valid yet: {e}."),
        ),
        e => refuse(
            400,
            "Certificate.Expired",
            format!("The certificate has expired: {e}."),
        ),
    })?;
    Ok(cert)
}
