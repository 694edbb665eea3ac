//! The HTTP client of the CDN API: one signed POST per call attempt.
//!
//! Owns: endpoint checks (https with certificate verification through rustls + webpki roots;
//! plain http only to a loopback host), building each request with a fresh nonce and
//! timestamp, signed as `[aliyun] signature` says — v1: common + action parameters and the
//! signature, all in the form body; V3: the action parameters in the form body, action,
//! version, date, nonce, body hash (and security token) in `x-acs-*` headers, the signature
//! in `Authorization` — the URL is always `/`,
//! the timeout, decoding success bodies into typed replies and every failure into an
//! [`ApiError`], and the three actions certrotd uses.
//!
//! Invariants: nothing goes in the URL; the request body and the parameter list (which hold
//! `SSLPri`) live in zeroizing buffers and are never logged; the secret never leaves the
//! signer, and the security token and `Authorization` header values are marked sensitive
//! (hidden from `Debug`); what the server sends is
//! untrusted: the `RequestId` a call returns and every header value logged pass
//! [`untrusted::request_id`] (a strict pattern, else a placeholder) here, so the executor,
//! the state file, `status` and every log line only see sanitized ids; each method is exactly one
//! attempt (retries, freshly signed, are the executor's job: call the method again); a
//! response never causes a panic, whatever its body.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Url;
use reqwest::header::{
    ACCEPT, CONTENT_TYPE, DATE, HOST, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER,
};
use serde::Deserialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::credentials::{CredentialProvider, Credentials};
use super::dcdn::{self, Actions};
use super::error::{
    ApiError, Class, ResponseMeta, describe_offset, parse_http_date, parse_retry_after,
};
use super::http::{self, HttpSetupError, Proxies};
use super::sign;
use crate::cert::{Fingerprint, PrivateKey};
use crate::config::{AliyunSettings, Product, Signature};
use crate::untrusted;

/// Largest page `DescribeUserDomains` serves.
pub(crate) const MAX_PAGE_SIZE: u64 = 500;
/// Largest response body read (a page of 500 domains or a long chain is far below this).
const MAX_RESPONSE_BODY: usize = 16 << 20;
/// Largest part of an error body read (an Alibaba error body is a few KiB, a
/// `SignatureDoesNotMatch` echo of a full chain some tens).
const MAX_ERROR_BODY: usize = 1 << 20;
/// Pages fetched at most by [`Client::describe_user_domains`] (5 million domains).
const MAX_PAGES: u64 = 10_000;

/// The wall clock the client stamps requests with (injectable for tests).
pub type WallClock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// Why a client cannot be built from the settings.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "[aliyun] endpoint = {endpoint:?}: {reason}; write it as https://host[:port] \
         (default https://cdn.aliyuncs.com)"
    )]
    Endpoint { endpoint: String, reason: String },
    #[error(
        "[aliyun] endpoint = {endpoint:?}: plain http is allowed only to a loopback host \
         (127.0.0.1, ::1, localhost, e.g. the emulator); use https:// for {host}"
    )]
    InsecureEndpoint { endpoint: String, host: String },
    #[error(transparent)]
    Http(#[from] HttpSetupError),
}

impl ClientError {
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "part of the label set (ARCHITECTURE.md); only tests read it yet"
        )
    )]
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ClientError::Endpoint { .. } => "endpoint",
            ClientError::InsecureEndpoint { .. } => "insecure-endpoint",
            ClientError::Http(e) => e.kind(),
        }
    }
}

/// `BatchSetCdnDomainServerCertificate`: deploy one certificate to up to 50 domains.
/// Always `SSLProtocol=on`, `CertType=upload`, `ForceSet=1`.
#[derive(Clone, Copy, Debug)]
pub struct BatchSetRequest<'a> {
    pub domains: &'a [String],
    pub cert_name: &'a str,
    /// Full chain PEM, leaf first.
    pub ssl_pub: &'a str,
    pub ssl_pri: &'a PrivateKey,
    pub region: Option<&'a str>,
    /// With `[aliyun] store = "cas"`: bind by reference (`CertType=cas`, `CertName`); the
    /// chain and key are then not sent.
    pub cas: Option<CasBinding<'a>>,
}

impl BatchSetRequest<'_> {
    /// The action's parameters (without `Action` and the common ones).
    pub(crate) fn params(&self) -> Zeroizing<Vec<(String, String)>> {
        let domains = self.domains.join(",");
        let cert = CertParams::of(self.cas, self.cert_name, self.ssl_pub, self.ssl_pri);
        let mut p = upload_params(&domains, &cert, false);
        p.push(("ForceSet".to_string(), "1".to_string()));
        if let Some(region) = self.region {
            p.push(("Region".to_string(), region.to_string()));
        }
        p
    }
}

/// `SetCdnDomainSSLCertificate`: deploy one certificate to one domain. Always
/// `SSLProtocol=on`, `CertType=upload`; the call has no `ForceSet` and no `Region` (the
/// official SDK's request names neither).
#[derive(Clone, Copy, Debug)]
pub struct SetSslRequest<'a> {
    pub domain: &'a str,
    pub cert_name: &'a str,
    /// Full chain PEM, leaf first.
    pub ssl_pub: &'a str,
    pub ssl_pri: &'a PrivateKey,
    /// With `[aliyun] store = "cas"`: bind by reference (`CertType=cas`, `CertId`,
    /// `CertRegion`, `CertName`); the chain and key are then not sent.
    pub cas: Option<CasBinding<'a>>,
}

impl SetSslRequest<'_> {
    /// The action's parameters (without `Action` and the common ones).
    pub(crate) fn params(&self) -> Zeroizing<Vec<(String, String)>> {
        let cert = CertParams::of(self.cas, self.cert_name, self.ssl_pub, self.ssl_pri);
        upload_params(self.domain, &cert, true)
    }
}

/// A certificate already in the SSL Certificates Service (CAS), as a write call binds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CasBinding<'a> {
    /// CAS `CertId` (decimal).
    pub cert_id: &'a str,
    /// CAS region (`cn-hangzhou`, `ap-southeast-1`).
    pub region: &'a str,
    /// The certificate's name in CAS.
    pub name: &'a str,
}

/// What a write call carries of the certificate: the material itself, or a CAS reference.
pub(crate) enum CertParams<'a> {
    Upload {
        cert_name: &'a str,
        ssl_pub: &'a str,
        ssl_pri: &'a PrivateKey,
    },
    Cas(CasBinding<'a>),
}

impl<'a> CertParams<'a> {
    pub(crate) fn of(
        cas: Option<CasBinding<'a>>,
        cert_name: &'a str,
        ssl_pub: &'a str,
        ssl_pri: &'a PrivateKey,
    ) -> CertParams<'a> {
        match cas {
            Some(binding) => CertParams::Cas(binding),
            None => CertParams::Upload {
                cert_name,
                ssl_pub,
                ssl_pri,
            },
        }
    }
}

/// The parameters every write call shares (`DomainName`, `SSLProtocol=on`, and the
/// certificate), in a zeroizing buffer. The certificate is either carried
/// (`CertType=upload`, `SSLPub`, `SSLPri`, `CertName`) or bound by reference
/// (`CertType=cas`, `CertName` = the CAS name, and with `by_id` — the per-domain calls —
/// `CertId` and `CertRegion` too: peers report `SSLPri.MissingParameter` when one of the
/// three is missing). A binding never carries `SSLPub` or `SSLPri`.
pub(crate) fn upload_params(
    domain_name: &str,
    cert: &CertParams<'_>,
    by_id: bool,
) -> Zeroizing<Vec<(String, String)>> {
    let mut p = Zeroizing::new(Vec::with_capacity(9));
    p.push(("DomainName".to_string(), domain_name.to_string()));
    p.push(("SSLProtocol".to_string(), "on".to_string()));
    match cert {
        CertParams::Upload {
            cert_name,
            ssl_pub,
            ssl_pri,
        } => {
            p.push(("SSLPub".to_string(), (*ssl_pub).to_string()));
            p.push((
                "SSLPri".to_string(),
                ssl_pri.expose_upload_pem().to_string(),
            ));
            p.push(("CertName".to_string(), (*cert_name).to_string()));
            p.push(("CertType".to_string(), "upload".to_string()));
        }
        CertParams::Cas(b) => {
            p.push(("CertName".to_string(), b.name.to_string()));
            p.push(("CertType".to_string(), "cas".to_string()));
            if by_id {
                p.push(("CertId".to_string(), b.cert_id.to_string()));
                p.push(("CertRegion".to_string(), b.region.to_string()));
            }
        }
    }
    p
}

/// A write call's answer: only its `RequestId`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SetReply {
    request_id: String,
}

/// `DescribeDomainCertificateInfo` for one domain.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DescribeCertRequest<'a> {
    pub(crate) domain: &'a str,
}

impl DescribeCertRequest<'_> {
    pub(crate) fn params(&self) -> Zeroizing<Vec<(String, String)>> {
        Zeroizing::new(vec![("DomainName".to_string(), self.domain.to_string())])
    }
}

/// One page of `DescribeUserDomains`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UserDomainsRequest {
    /// 1..=500.
    pub(crate) page_size: u64,
    /// From 1.
    pub(crate) page_number: u64,
}

impl UserDomainsRequest {
    pub(crate) fn params(&self) -> Zeroizing<Vec<(String, String)>> {
        Zeroizing::new(vec![
            (
                "PageSize".to_string(),
                self.page_size.clamp(1, MAX_PAGE_SIZE).to_string(),
            ),
            (
                "PageNumber".to_string(),
                self.page_number.max(1).to_string(),
            ),
        ])
    }
}

/// The certificate a CDN domain serves, as `DescribeDomainCertificateInfo` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedCert {
    pub(crate) domain: String,
    pub cert_name: String,
    pub(crate) cert_type: String,
    /// `ServerCertificateStatus` (`on`).
    pub status: String,
    /// `ServerCertificate`: the served chain PEM (leaf first).
    pub(crate) certificate_pem: String,
    pub expire_time: Option<OffsetDateTime>,
    pub(crate) start_time: Option<OffsetDateTime>,
    /// `CertDomainName`: the names the certificate carries.
    pub(crate) cert_domain_name: String,
}

impl ServedCert {
    /// SHA-256 of the first certificate of the served chain; `None` when there is none
    /// or it is not PEM.
    pub fn leaf_fingerprint(&self) -> Option<Fingerprint> {
        ServedCert::chain_fingerprint(&self.certificate_pem)
    }

    /// SHA-256 of the first certificate of a chain PEM; `None` when there is none or it is
    /// not PEM.
    pub(crate) fn chain_fingerprint(pem: &str) -> Option<Fingerprint> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let leaf = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()?
            .ok()?;
        let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
        let bytes: [u8; 32] = digest.as_ref().try_into().ok()?;
        Some(Fingerprint(bytes))
    }
}

/// One domain as `DescribeUserDomains` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UserDomain {
    pub(crate) domain: String,
    /// `DomainStatus` (`online`, `offline`, `configuring`, …).
    pub(crate) status: String,
    /// `SslProtocol` (`on`, `off`).
    pub(crate) ssl_protocol: String,
}

/// One page of `DescribeUserDomains`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DomainsPage {
    pub(crate) page_number: u64,
    pub(crate) page_size: u64,
    pub(crate) total_count: u64,
    pub(crate) domains: Vec<UserDomain>,
}

/// A 2xx answer: status and body.
struct Reply {
    status: u16,
    body: bytes::Bytes,
}

/// The CDN API client. Cheap to clone (shares its connection pool and credentials).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `scheme://authority/`.
    endpoint: Url,
    /// The endpoint's authority as written (V3 signs it as `host`).
    host: String,
    timeout: Duration,
    credentials: CredentialProvider,
    clock: WallClock,
    signature: Signature,
    /// The names of the product calls' actions (CDN unless [`Client::for_product`]).
    actions: Actions,
    /// The API version every call names: the product's, or another API's for
    /// [`Client::rpc`] calls ([`Client::with_version`], e.g. CAS's `2020-04-07`).
    version: &'static str,
    ca_file: Option<PathBuf>,
}

/// One attempt's signed request: the form body and the headers the signature adds (none
/// for v1; the V3 headers, `host` included, for V3).
struct Signed {
    body: Zeroizing<String>,
    headers: Vec<(&'static str, String)>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint.as_str())
            .field("timeout", &self.timeout)
            .field("credentials", &self.credentials)
            .field("signature", &self.signature)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `settings.endpoint` with `settings.timeout` per attempt, signing with
    /// `credentials` (fixed [`Credentials`], or a [`CredentialProvider`] that refreshes
    /// temporary ones). Proxies come from the environment (`HTTPS_PROXY`, `NO_PROXY`, …);
    /// `[aliyun] ca_file` adds trusted roots.
    pub fn new(
        settings: &AliyunSettings,
        credentials: impl Into<CredentialProvider>,
    ) -> Result<Client, ClientError> {
        let (endpoint, plain_http) = check_endpoint(&settings.endpoint)?;
        let ca_file = settings.access.ca_file.clone();
        let http = http::build(
            ca_file.as_deref(),
            settings.timeout,
            Proxies::FromEnvironment,
            plain_http,
        )?;
        let host = authority(&endpoint);
        Ok(Client {
            http,
            endpoint,
            host,
            timeout: settings.timeout,
            credentials: credentials.into(),
            clock: Arc::new(OffsetDateTime::now_utc),
            signature: settings.signature,
            actions: dcdn::CDN,
            version: dcdn::CDN.version,
            ca_file,
        })
    }

    /// What the client signs with (the daemon asks it for a set before a pass).
    pub(crate) fn credentials(&self) -> &CredentialProvider {
        &self.credentials
    }

    /// The same client speaking `product`'s API (its version and action names); the
    /// endpoint stays the one it was built for.
    pub(crate) fn for_product(mut self, product: Product) -> Client {
        self.actions = dcdn::actions(product);
        self.version = self.actions.version;
        self
    }

    /// The same client speaking another API version (another service's API, e.g. CAS's
    /// `2020-04-07`, on the endpoint the settings named) through [`Client::rpc`].
    pub(crate) fn with_version(mut self, version: &'static str) -> Client {
        self.version = version;
        self
    }

    /// One signed attempt of any `action` of this client's API version, its success body
    /// decoded as `T`; `call_domains` as for the write calls (empty when none).
    pub(crate) async fn rpc<T: serde::de::DeserializeOwned>(
        &self,
        action: &'static str,
        params: Zeroizing<Vec<(String, String)>>,
        call_domains: &[String],
    ) -> Result<T, ApiError> {
        let reply = self.call(action, params, call_domains).await?;
        decode(action, &reply)
    }

    /// Replaces the wall clock that stamps `Timestamp` (tests of clock skew).
    pub fn with_clock(mut self, clock: WallClock) -> Client {
        self.clock = clock;
        self
    }

    /// One `BatchSetCdnDomainServerCertificate` attempt; returns the `RequestId`.
    pub async fn batch_set(&self, req: &BatchSetRequest<'_>) -> Result<String, ApiError> {
        let action = self.actions.batch_set;
        let reply = self.call(action, req.params(), req.domains).await?;
        let parsed: SetReply = decode(action, &reply)?;
        // Untrusted: it goes on to the log, the state file and `status`.
        Ok(untrusted::request_id(&parsed.request_id))
    }

    /// One `SetCdnDomainSSLCertificate` attempt; returns the `RequestId`.
    pub async fn set_domain_ssl(&self, req: &SetSslRequest<'_>) -> Result<String, ApiError> {
        let domains = [req.domain.to_string()];
        let action = self.actions.set_ssl;
        let reply = self.call(action, req.params(), &domains).await?;
        let parsed: SetReply = decode(action, &reply)?;
        // Untrusted: it goes on to the log, the state file and `status`.
        Ok(untrusted::request_id(&parsed.request_id))
    }

    /// One `DescribeDomainCertificateInfo` attempt: the certificate `domain` serves now,
    /// `None` when it serves none (HTTPS off or nothing uploaded).
    pub async fn describe_domain_certificate(
        &self,
        domain: &str,
    ) -> Result<Option<ServedCert>, ApiError> {
        let req = DescribeCertRequest { domain };
        let action = self.actions.describe_cert;
        let reply = self
            .call(action, req.params(), &[domain.to_string()])
            .await?;
        let parsed: CertReply = decode(action, &reply)?;
        Ok(served_for(domain, parsed))
    }

    /// One `DescribeUserDomains` attempt for one page.
    pub(crate) async fn describe_user_domains_page(
        &self,
        req: UserDomainsRequest,
    ) -> Result<DomainsPage, ApiError> {
        let action = self.actions.user_domains;
        let reply = self.call(action, req.params(), &[]).await?;
        let parsed: PageReply = decode(action, &reply)?;
        Ok(parsed.into_page(req))
    }

    /// Every domain of the account: pages of 500 until `TotalCount` is reached (or, without
    /// one, a short page arrives) or a page comes back empty. One attempt per page; the first failure is returned.
    pub async fn describe_user_domains(&self) -> Result<Vec<String>, ApiError> {
        let mut out: Vec<String> = Vec::new();
        for page_number in 1..=MAX_PAGES {
            let page = self
                .describe_user_domains_page(UserDomainsRequest {
                    page_size: MAX_PAGE_SIZE,
                    page_number,
                })
                .await?;
            let got = page.domains.len() as u64;
            out.extend(page.domains.into_iter().map(|d| d.domain));
            let done = match page.total_count {
                // No TotalCount in the answer: a short page is the last one.
                0 => got < MAX_PAGE_SIZE,
                total => out.len() as u64 >= total,
            };
            if got == 0 || done {
                break;
            }
        }
        Ok(out)
    }

    /// One call of `action` with `params`: one signed attempt — and, when the server
    /// refuses the security token as expired, one more with freshly fetched credentials.
    /// `call_domains` are the domains the call names (they classify size refusals and
    /// identify a refused domain).
    async fn call(
        &self,
        action: &'static str,
        params: Zeroizing<Vec<(String, String)>>,
        call_domains: &[String],
    ) -> Result<Reply, ApiError> {
        let creds = self.credentials_for(action).await?;
        let first = self.attempt(action, &params, call_domains, &creds).await;
        match first {
            Err(ref e)
                if is_expired_token(e) && self.credentials.renew_after_refusal(&creds).await =>
            {
                tracing::info!(
                    action,
                    "the security token was refused as expired; retrying once with fresh credentials"
                );
                let creds = self.credentials_for(action).await?;
                self.attempt(action, &params, call_domains, &creds).await
            }
            other => other,
        }
    }

    /// The credentials to sign with now (valid now; a temporary set is refreshed in the
    /// background before it expires).
    async fn credentials_for(&self, action: &'static str) -> Result<Arc<Credentials>, ApiError> {
        self.credentials
            .get()
            .await
            .map_err(|e| ApiError::no_credentials(action, &e))
    }

    /// One signed HTTP attempt, its outcome classified in [`Client::finish_attempt`].
    async fn attempt(
        &self,
        action: &'static str,
        params: &Zeroizing<Vec<(String, String)>>,
        call_domains: &[String],
        creds: &Credentials,
    ) -> Result<Reply, ApiError> {
        let started = Instant::now();
        let signed = match self.signature {
            Signature::V1 => Signed {
                body: self.signed_body(action, params, creds),
                headers: Vec::new(),
            },
            Signature::V3 => self.signed_v3(action, params, creds),
        };
        let result = tokio::time::timeout(self.timeout, self.send(action, signed)).await;
        let result = match result {
            Err(_) => Err(ApiError::Timeout {
                action,
                endpoint: self.endpoint.to_string(),
                timeout: self.timeout,
            }),
            Ok(r) => r,
        };
        self.finish_attempt(action, call_domains, started, result)
    }

    /// THE point where one HTTP attempt's outcome is known: a 2xx reply, or the
    /// [`ApiError`] it becomes (HTTP error, transport, timeout, TLS trust). Logged and
    /// counted in the metrics here (`certrotd_api_requests_total`, one per HTTP attempt).
    fn finish_attempt(
        &self,
        action: &'static str,
        call_domains: &[String],
        started: Instant,
        result: Result<(u16, HeaderMap, bytes::Bytes), ApiError>,
    ) -> Result<Reply, ApiError> {
        let outcome = self.outcome_of(action, call_domains, started, result);
        crate::metrics::api_attempt(action, super::error::attempt_label(&outcome));
        outcome
    }

    /// The reply, or the error, one attempt's answer amounts to; failures logged.
    fn outcome_of(
        &self,
        action: &'static str,
        call_domains: &[String],
        started: Instant,
        result: Result<(u16, HeaderMap, bytes::Bytes), ApiError>,
    ) -> Result<Reply, ApiError> {
        let (status, headers, bytes) = match result {
            Ok(answer) => answer,
            Err(e) => {
                if let ApiError::TlsTrust { .. } = e {
                    tracing::error!(action, kind = e.kind(), error = %e, "TLS verification failed");
                }
                return Err(e);
            }
        };
        let elapsed_ms = started.elapsed().as_millis();
        let request_id = headers
            .get("x-acs-request-id")
            .map(|v| untrusted::request_id(v.to_str().unwrap_or("")))
            .unwrap_or_default();
        tracing::debug!(
            action,
            domains = call_domains.len(),
            status,
            %request_id,
            elapsed_ms,
            "API call answered"
        );
        if (200..300).contains(&status) {
            return Ok(Reply {
                status,
                body: bytes,
            });
        }
        let meta = self.response_meta(status, &headers);
        let err = ApiError::from_response(action, meta, &bytes, call_domains);
        if err.class() == Class::Clock {
            log_clock_skew(&err);
        }
        Err(err)
    }

    /// Common + action parameters, a fresh nonce and timestamp, the signature; encoded as
    /// the form body.
    fn signed_body(
        &self,
        action: &'static str,
        action_params: &Zeroizing<Vec<(String, String)>>,
        creds: &Credentials,
    ) -> Zeroizing<String> {
        let token = creds.security_token().map(|t| t.expose());
        let mut params = Zeroizing::new(sign::common_params(
            creds.access_key_id(),
            (self.clock)(),
            &new_nonce(),
            token,
        ));
        params.push(("Action".to_string(), action.to_string()));
        for (k, v) in params.iter_mut() {
            if k == "Version" {
                self.version.clone_into(v);
            }
        }
        params.extend(action_params.iter().cloned());
        let signature = sign::sign("POST", creds.secret().expose(), &params);
        params.push((sign::SIGNATURE_PARAM.to_string(), signature));
        sign::encode_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// The action parameters as the form body, signed V3 with a fresh nonce and date: the
    /// headers of [`sign::sign_v3`] (`host` as the endpoint's authority).
    fn signed_v3(
        &self,
        action: &'static str,
        params: &[(String, String)],
        creds: &Credentials,
    ) -> Signed {
        let body = sign::encode_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let nonce = new_nonce();
        let call = sign::V3Call {
            method: "POST",
            host: &self.host,
            query: &[],
            body: body.as_bytes(),
            action,
            version: self.version,
            date: (self.clock)(),
            nonce: &nonce,
        };
        let key = sign::V3Key {
            access_key_id: creds.access_key_id(),
            secret: creds.secret().expose(),
            security_token: creds.security_token().map(|t| t.expose()),
        };
        let headers = sign::sign_v3(&call, &key).0;
        Signed { body, headers }
    }

    /// Sends the request and reads the answer (bounded): a certificate-verification
    /// failure is [`ApiError::TlsTrust`], any other failure to get an answer a transport
    /// error.
    async fn send(
        &self,
        action: &'static str,
        signed: Signed,
    ) -> Result<(u16, HeaderMap, bytes::Bytes), ApiError> {
        let endpoint = self.endpoint.to_string();
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(sign::FORM_CONTENT_TYPE),
        );
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(
            HOST,
            header_value("host", self.host.clone()).map_err(|_| {
                ApiError::transport(
                    action,
                    &endpoint,
                    "the endpoint's host is not a valid header value",
                )
            })?,
        );
        for (name, value) in signed.headers {
            let value = header_value(name, value).map_err(|_| {
                let why = format!("the signed header {name} is not a valid header value");
                ApiError::transport(action, &endpoint, &why)
            })?;
            // Insert, not append: a signed header (content-type, host) is sent once, with
            // the value signed.
            headers.insert(header_name(name), value);
        }
        let mut response = self
            .http
            .post(self.endpoint.clone())
            .headers(headers)
            .body(secret_body(signed.body))
            .send()
            .await
            .map_err(|e| self.send_error(action, &e))?;
        let status = response.status().as_u16();
        let headers = std::mem::take(response.headers_mut());
        if !(200..300).contains(&status) {
            // An error answer is only read for its first part: a body too large (or cut
            // off, or not JSON) is unusable and the error classifies by its status.
            return match http::read_capped(&mut response, MAX_ERROR_BODY).await {
                Ok((bytes, _)) => Ok((status, headers, bytes)),
                Err(e) => Err(ApiError::transport(
                    action,
                    &endpoint,
                    &format!("reading the response: {}", http::error_chain(&e)),
                )),
            };
        }
        match http::read_capped(&mut response, MAX_RESPONSE_BODY).await {
            Ok((_, true)) => Err(ApiError::bad_response(
                action,
                status,
                "the response body is larger than 16 MiB",
            )),
            Ok((bytes, false)) => Ok((status, headers, bytes)),
            Err(e) => Err(ApiError::transport(
                action,
                &endpoint,
                &format!("reading the response: {}", http::error_chain(&e)),
            )),
        }
    }

    /// The error a failed send means: a certificate-verification failure is a trust
    /// configuration problem, anything else transport.
    fn send_error(&self, action: &'static str, e: &reqwest::Error) -> ApiError {
        let endpoint = self.endpoint.to_string();
        match http::tls_verification_failure(e) {
            Some(detail) => {
                ApiError::tls_trust(action, &endpoint, self.ca_file.as_deref(), &detail)
            }
            None => ApiError::transport(action, &endpoint, &http::error_chain(e)),
        }
    }

    fn response_meta(&self, status: u16, headers: &HeaderMap) -> ResponseMeta {
        let server_date = header_str(headers, DATE.as_str()).and_then(parse_http_date);
        ResponseMeta {
            status,
            retry_after: parse_retry_after(
                header_str(headers, "x-acs-retry-after"),
                header_str(headers, RETRY_AFTER.as_str()),
            ),
            server_date,
            clock_offset: server_date.map(|d| d - (self.clock)()),
        }
    }
}

fn log_clock_skew(err: &ApiError) {
    match err.clock_offset() {
        Some(offset) => tracing::error!(
            offset_seconds = offset.whole_seconds(),
            "Alibaba Cloud refused the request timestamp: {}; fix the system clock (NTP)",
            describe_offset(offset)
        ),
        None => tracing::error!(
            "Alibaba Cloud refused the request timestamp (the response had no Date header to \
             compare with); check this host's clock (NTP)"
        ),
    }
}

/// 128 bits from the thread-local CSPRNG, as 32 lowercase hex characters.
fn new_nonce() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `host` as the header constant (so it replaces the default, not adds a second one).
fn header_name(name: &'static str) -> HeaderName {
    if name == "host" {
        HOST
    } else {
        HeaderName::from_static(name)
    }
}

/// A signed header's value; the security token and `Authorization` are marked sensitive.
/// An error (naming no value) when it is not a valid header value.
fn header_value(
    name: &str,
    value: String,
) -> Result<HeaderValue, reqwest::header::InvalidHeaderValue> {
    let mut v = HeaderValue::try_from(value)?;
    v.set_sensitive(matches!(name, "authorization" | "x-acs-security-token"));
    Ok(v)
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether the server refused the call's security token as expired.
fn is_expired_token(e: &ApiError) -> bool {
    e.code() == Some(EXPIRED_TOKEN_CODE)
}

/// The code Alibaba answers a call signed with an expired STS token with.
pub(crate) const EXPIRED_TOKEN_CODE: &str = "InvalidSecurityToken.Expired";

/// `scheme://host[:port]` of `url` as the `host` header carries it.
fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// Checks the endpoint: https anywhere, http only to loopback, no path or query. Returns the
/// URL to POST to (`scheme://authority/`) and whether it is plain http.
pub(crate) fn check_endpoint(endpoint: &str) -> Result<(Url, bool), ClientError> {
    let bad = |reason: &str| ClientError::Endpoint {
        endpoint: endpoint.to_string(),
        reason: reason.to_string(),
    };
    let uri: hyper::Uri = endpoint.trim().parse().map_err(|_| bad("not a URL"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(bad("it needs a scheme and a host"));
    };
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(bad("it must not have a path or query"));
    }
    if authority.as_str().contains('@') {
        return Err(bad("it must not carry a user name or password"));
    }
    let plain_http = match scheme {
        "https" => false,
        "http" if is_loopback(authority.host()) => true,
        "http" => {
            return Err(ClientError::InsecureEndpoint {
                endpoint: endpoint.to_string(),
                host: authority.host().to_string(),
            });
        }
        _ => return Err(bad("the scheme must be https (or http to a loopback host)")),
    };
    let target = Url::parse(&format!("{scheme}://{authority}/")).map_err(|_| bad("not a URL"))?;
    Ok((target, plain_http))
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn decode<T: serde::de::DeserializeOwned>(
    action: &'static str,
    reply: &Reply,
) -> Result<T, ApiError> {
    serde_json::from_slice(&reply.body)
        .map_err(|e| ApiError::bad_response(action, reply.status, &e.to_string()))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CertReply {
    #[serde(default)]
    cert_infos: Option<CertInfos>,
}

#[derive(Deserialize)]
struct CertInfos {
    #[serde(rename = "CertInfo", default)]
    cert_info: Vec<CertInfo>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CertInfo {
    #[serde(default)]
    domain_name: Option<String>,
    #[serde(default)]
    cert_name: Option<String>,
    #[serde(default)]
    cert_type: Option<String>,
    #[serde(default)]
    server_certificate_status: Option<String>,
    #[serde(default)]
    server_certificate: Option<String>,
    /// DCDN's name for `ServerCertificateStatus`.
    #[serde(rename = "SSLProtocol", default)]
    ssl_protocol: Option<String>,
    /// DCDN's name for `ServerCertificate`.
    #[serde(rename = "SSLPub", default)]
    ssl_pub: Option<String>,
    #[serde(default)]
    cert_expire_time: Option<String>,
    #[serde(default)]
    cert_start_time: Option<String>,
    #[serde(default)]
    cert_domain_name: Option<String>,
}

/// The entry for `domain` (case-insensitive); `None` when absent, HTTPS is off, or it
/// carries neither a status nor a certificate.
fn served_for(domain: &str, reply: CertReply) -> Option<ServedCert> {
    let info = reply.cert_infos?.cert_info.into_iter().find(|i| {
        i.domain_name
            .as_deref()
            .is_some_and(|d| d.trim().eq_ignore_ascii_case(domain.trim()))
    })?;
    let status = info
        .server_certificate_status
        .or(info.ssl_protocol)
        .unwrap_or_default();
    let pem = info.server_certificate.or(info.ssl_pub).unwrap_or_default();
    if status.eq_ignore_ascii_case("off") || (status.is_empty() && pem.trim().is_empty()) {
        return None;
    }
    let time = |t: Option<String>| {
        t.and_then(|t| {
            OffsetDateTime::parse(t.trim(), &time::format_description::well_known::Rfc3339).ok()
        })
    };
    Some(ServedCert {
        domain: info.domain_name.unwrap_or_default(),
        cert_name: info.cert_name.unwrap_or_default(),
        cert_type: info.cert_type.unwrap_or_default(),
        status,
        certificate_pem: pem,
        expire_time: time(info.cert_expire_time),
        start_time: time(info.cert_start_time),
        cert_domain_name: info.cert_domain_name.unwrap_or_default(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PageReply {
    #[serde(default)]
    page_number: Option<u64>,
    #[serde(default)]
    page_size: Option<u64>,
    #[serde(default)]
    total_count: u64,
    #[serde(default)]
    domains: Option<PageData>,
}

#[derive(Deserialize)]
struct PageData {
    #[serde(rename = "PageData", default)]
    page_data: Vec<PageDomain>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PageDomain {
    domain_name: String,
    #[serde(default)]
    domain_status: Option<String>,
    /// `SslProtocol` (CDN) or `SSLProtocol` (DCDN).
    #[serde(default, alias = "SSLProtocol")]
    ssl_protocol: Option<String>,
}

impl PageReply {
    fn into_page(self, req: UserDomainsRequest) -> DomainsPage {
        DomainsPage {
            page_number: self.page_number.unwrap_or(req.page_number),
            page_size: self.page_size.unwrap_or(req.page_size),
            total_count: self.total_count,
            domains: self
                .domains
                .map(|d| d.page_data)
                .unwrap_or_default()
                .into_iter()
                .map(|d| UserDomain {
                    domain: d.domain_name,
                    status: d.domain_status.unwrap_or_default(),
                    ssl_protocol: d.ssl_protocol.unwrap_or_default(),
                })
                .collect(),
        }
    }
}

/// The form body as a request body whose bytes are zeroized when the last reference to
/// them is dropped (the buffer is moved, never copied).
fn secret_body(mut text: Zeroizing<String>) -> reqwest::Body {
    let bytes = SecretBytes(Zeroizing::new(std::mem::take(&mut *text).into_bytes()));
    reqwest::Body::from(bytes::Bytes::from_owner(bytes))
}

/// Body bytes, zeroized on drop.
struct SecretBytes(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for SecretBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests;
