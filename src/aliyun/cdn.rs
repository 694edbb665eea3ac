//! The CDN and DCDN as [`Target`]s of the executor. The CDN in one of two ways chosen by
//! `[aliyun] api` (and the batch call's fallback, [`super::fallback`]):
//! `BatchSetCdnDomainServerCertificate` (`cdn-batch`: up to `max_domains_per_call` domains a
//! call at `requests_per_second`) or `SetCdnDomainSSLCertificate` (`cdn-per-domain`: one
//! domain a call at `per_domain_requests_per_second`); both read back with
//! `DescribeDomainCertificateInfo` at `read_requests_per_second`. DCDN (`[dcdn]`) in one way:
//! `SetDcdnDomainSSLCertificate` (`dcdn-per-domain`), read back with
//! `DescribeDcdnDomainCertificateInfo`, with the per-domain limits on its own limiters.
//! [`connect_all`] builds the three targets of one executor ([`CDN_BATCH`] falling back to
//! [`CDN_PER_DOMAIN`]; [`DCDN`]) and [`routes`] says which one each managed domain's jobs
//! go to. And [`Failure`] for [`ApiError`], shared by every way.
//!
//! With `[aliyun] store = "cas"` [`connect_all`] builds one CAS store and gives every target
//! the same one ([`AliyunCdn::with_cas`]): a certificate is found or uploaded once whichever
//! products deploy it, and each write call (the CDN's batch or per-domain call, DCDN's
//! per-domain call) binds by reference to it, never carrying the key.
//!
//! Owns the mapping from the client's error classes to the executor's handling (including
//! the limit a size refusal names), and the target's limits from the `[aliyun]` settings;
//! every call here is one client call, so one freshly signed attempt.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::cas::{CasStore, SharedCas};
use super::client::CasBinding;
use super::credentials::{self, CredentialsError, Environment};
use super::fallback::{self, Start};
use super::{ApiError, BatchSetRequest, Class, Client, ClientError, SetSslRequest};
use crate::cert::Fingerprint;
use crate::config::{AliyunSettings, Api, CasSettings, Product, Settings, Store};
use crate::push::{
    Deploy, Failure, Handling, Limits, Options, RATE_WINDOW, Rate, Target, TargetIndex, TargetSpec,
    Upload,
};
use crate::state::cas::CasRef;
use crate::state::{State, StateStore};

/// The executor's targets as [`connect_all`] builds them (indices into its list).
pub(crate) const CDN_BATCH: TargetIndex = 0;
pub(crate) const CDN_PER_DOMAIN: TargetIndex = 1;
pub(crate) const DCDN: TargetIndex = 2;

impl Failure for ApiError {
    fn handling(&self) -> Handling<'_> {
        if self.action_gone() {
            return Handling::Gone;
        }
        match self.class() {
            Class::Retryable => Handling::Retry {
                after: self.retry_after(),
            },
            // Both stop the run: retrying cannot help until the configuration changes.
            Class::Credentials | Class::Config => Handling::Credentials,
            Class::Clock => Handling::Clock,
            Class::Domain => Handling::Domain(self.domain()),
            Class::Certificate => Handling::Certificate(self.domain()),
            Class::BatchSize => Handling::BatchSize {
                limit: self.batch_limit(),
            },
            Class::Other => Handling::Other,
        }
    }

    fn kind(&self) -> &'static str {
        ApiError::kind(self)
    }
}

/// The batch call's limits from the configuration: `max_domains_per_call` domains a call,
/// `requests_per_second` write and `read_requests_per_second` read calls in any rolling
/// second (plus the window guard).
pub fn batch_limits(s: &AliyunSettings) -> Limits {
    Limits {
        domains_per_call: s.max_domains_per_call,
        writes: Rate::per_second(s.requests_per_second),
        reads: Rate::per_second(s.read_requests_per_second),
        prepares: None,
    }
}

/// The per-domain call's limits: one domain a call, `per_domain_requests_per_second` write
/// and `read_requests_per_second` read calls in any rolling second (plus the window guard).
/// Write starts are spread evenly (one every window / rate) rather than let out in bursts of
/// the whole rate: a burst that reaches the server a little late would share a second with
/// the next burst, and at 30 one-domain calls a second that jitter is enough to go over.
pub fn per_domain_limits(s: &AliyunSettings) -> Limits {
    let rate = s.per_domain_requests_per_second.max(1);
    Limits {
        domains_per_call: 1,
        writes: Rate {
            calls: 1,
            per: RATE_WINDOW / rate,
        },
        reads: Rate::per_second(s.read_requests_per_second),
        prepares: None,
    }
}

/// The limits of the call `s.api` chooses.
pub fn limits(s: &AliyunSettings) -> Limits {
    match s.api {
        Api::Batch => batch_limits(s),
        Api::PerDomain => per_domain_limits(s),
    }
}

/// Why [`connect_all`] could not build the targets.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl ConnectError {
    /// Kebab-case label for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ConnectError::Credentials(_) => "credentials",
            ConnectError::Client(_) => "client",
        }
    }
}

/// The CDN (or DCDN) API through [`Client`], deploying with the call `api` names; the batch
/// call sends `Region` when the configuration names one (the per-domain call has none). With
/// a CAS store ([`AliyunCdn::with_cas`]) each certificate is first found or uploaded in CAS
/// (the prepare step) and the write calls bind by reference.
#[derive(Debug, Clone)]
pub struct AliyunCdn {
    client: Client,
    region: Option<String>,
    limits: Limits,
    api: Api,
    product: Product,
    cas: Option<SharedCas>,
}

impl AliyunCdn {
    /// The batch target (`cdn-batch`).
    pub fn new(client: Client, region: Option<String>, limits: Limits) -> AliyunCdn {
        AliyunCdn {
            client,
            region,
            limits,
            api: Api::Batch,
            product: Product::Cdn,
            cas: None,
        }
    }

    /// The per-domain target (`cdn-per-domain`); `limits.domains_per_call` should be 1.
    pub fn per_domain(client: Client, limits: Limits) -> AliyunCdn {
        AliyunCdn {
            client,
            region: None,
            limits,
            api: Api::PerDomain,
            product: Product::Cdn,
            cas: None,
        }
    }

    /// The DCDN target (`dcdn-per-domain`): `client` is made to speak the DCDN API (its
    /// endpoint must be DCDN's); `limits.domains_per_call` should be 1.
    pub fn dcdn(client: Client, limits: Limits) -> AliyunCdn {
        AliyunCdn {
            client: client.for_product(Product::Dcdn),
            region: None,
            limits,
            api: Api::PerDomain,
            product: Product::Dcdn,
            cas: None,
        }
    }

    /// The client this target calls through (read-only checks share it).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The same API binding by reference to certificates in `cas` (uploaded once each, in
    /// the prepare step, on the prepare budget of CAS's list rate).
    pub fn with_cas(self, cas: SharedCas) -> AliyunCdn {
        let limits = Limits {
            prepares: Some(Rate::per_second(super::cas::LISTS_PER_SECOND)),
            ..self.limits
        };
        AliyunCdn {
            cas: Some(cas),
            limits,
            ..self
        }
    }

    /// The CAS store this target binds through, if any.
    pub(crate) fn cas(&self) -> Option<&SharedCas> {
        self.cas.as_ref()
    }

    /// What the clients sign with (one provider, shared by every target's client).
    pub(crate) fn credentials(&self) -> &credentials::CredentialProvider {
        self.client.credentials()
    }

    /// The same API with other limits (the daemon spaces its write starts).
    /// A CAS store's prepare budget stays.
    pub(crate) fn with_limits(self, limits: Limits) -> AliyunCdn {
        let limits = Limits {
            prepares: limits.prepares.or(self.limits.prepares),
            ..limits
        };
        AliyunCdn { limits, ..self }
    }
}

impl AliyunCdn {
    /// `SetCdnDomainSSLCertificate` for the call's domain: the executor never hands a call
    /// more than `domains_per_call` (1) domains, so this is one client call.
    async fn deploy_one(&self, call: &Deploy<'_>) -> Result<String, ApiError> {
        let reference = self.reference(call)?;
        let cert_id = reference.as_ref().map(|r| r.cert_id.to_string());
        let cas = binding(reference.as_ref(), cert_id.as_deref());
        let mut request_id = String::new();
        let chain = call.upload.chain.pem();
        for domain in call.domains {
            let req = SetSslRequest {
                cas,
                domain,
                cert_name: &call.upload.cert_name,
                ssl_pub: &chain,
                ssl_pri: &call.upload.key,
            };
            request_id = self.client.set_domain_ssl(&req).await?;
        }
        Ok(request_id)
    }
}

impl AliyunCdn {
    /// The CAS certificate a call binds: `None` without a CAS store; with one, the
    /// reference the prepare step gave (a call without it is refused here, so no write
    /// call falls back to carrying the key).
    fn reference(&self, call: &Deploy<'_>) -> Result<Option<CasRef>, ApiError> {
        if self.cas.is_none() {
            return Ok(None);
        }
        match call.prepared.and_then(CasRef::from_reference) {
            Some(r) => Ok(Some(r)),
            None => Err(ApiError::bad_response(
                "UploadUserCertificate",
                0,
                "no CAS certificate was prepared for this write call",
            )),
        }
    }
}

/// The binding parameters of a CAS reference (`cert_id` is its id as text).
fn binding<'a>(reference: Option<&'a CasRef>, cert_id: Option<&'a str>) -> Option<CasBinding<'a>> {
    Some(CasBinding {
        cert_id: cert_id?,
        region: &reference?.region,
        name: &reference?.name,
    })
}

impl Target for AliyunCdn {
    type Error = ApiError;

    fn prepares(&self) -> bool {
        self.cas.is_some()
    }

    async fn prepare(&self, upload: &Upload) -> Result<Option<String>, ApiError> {
        let Some(cas) = &self.cas else {
            return Ok(None);
        };
        Ok(Some(cas.find_or_upload(upload).await?.to_reference()))
    }

    fn name(&self) -> &'static str {
        match (self.product, self.api) {
            (Product::Cdn, Api::Batch) => "cdn-batch",
            (Product::Cdn, Api::PerDomain) => "cdn-per-domain",
            (Product::Dcdn, _) => "dcdn-per-domain",
        }
    }

    fn product(&self) -> &'static str {
        self.product.label()
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    async fn deploy(&self, call: &Deploy<'_>) -> Result<String, ApiError> {
        if self.api == Api::PerDomain {
            return self.deploy_one(call).await;
        }
        let reference = self.reference(call)?;
        let cert_id = reference.as_ref().map(|r| r.cert_id.to_string());
        let chain = call.upload.chain.pem();
        let req = BatchSetRequest {
            cas: binding(reference.as_ref(), cert_id.as_deref()),
            domains: call.domains,
            cert_name: &call.upload.cert_name,
            ssl_pub: &chain,
            ssl_pri: &call.upload.key,
            region: self.region.as_deref(),
        };
        self.client.batch_set(&req).await
    }

    async fn served(&self, domain: &str) -> Result<Option<Fingerprint>, ApiError> {
        let served = self.client.describe_domain_certificate(domain).await?;
        Ok(served.and_then(|s| s.leaf_fingerprint()))
    }
}

/// The three targets of one executor, in index order ([`CDN_BATCH`], [`CDN_PER_DOMAIN`],
/// [`DCDN`]): one [`credentials::CredentialProvider`] (clones share its refresh), a CDN client on `[aliyun] endpoint` and a DCDN client on
/// `[dcdn] endpoint`, each target with its own limits (so its own limiters).
pub(crate) fn connect_all(settings: &Settings) -> Result<[AliyunCdn; 3], ConnectError> {
    let a = &settings.aliyun;
    let creds = credentials::provider(a, &Environment::from_process())?;
    tracing::info!(source = %creds.describe(), "using Alibaba Cloud credentials");
    let cas = cas_store(a, &settings.cas, &creds)?;
    let cdn = Client::new(a, creds.clone())?;
    let dcdn_settings = AliyunSettings {
        endpoint: settings.dcdn.endpoint.clone(),
        ..a.clone()
    };
    let dcdn = Client::new(&dcdn_settings, creds)?;
    let targets = [
        AliyunCdn::new(cdn.clone(), a.region.clone(), batch_limits(a)),
        AliyunCdn::per_domain(cdn, per_domain_limits(a)),
        AliyunCdn::dcdn(dcdn, per_domain_limits(a)),
    ];
    Ok(match cas {
        Some(store) => targets.map(|t| t.with_cas(Arc::clone(&store))),
        None => targets,
    })
}

/// With `[aliyun] store = "cas"`, the one CAS store every target binds through: a CAS
/// client on `[cas] endpoint` with the `[aliyun]` credentials and signature.
fn cas_store(
    a: &AliyunSettings,
    cas: &CasSettings,
    creds: &credentials::CredentialProvider,
) -> Result<Option<SharedCas>, ConnectError> {
    if cas.store == Store::Upload {
        return Ok(None);
    }
    let cas_settings = AliyunSettings {
        endpoint: cas.endpoint.clone(),
        ..a.clone()
    };
    let client = Client::new(&cas_settings, creds.clone())?;
    Ok(Some(Arc::new(CasStore::new(client, &cas.region))))
}

/// The executor's target list for [`connect_all`]'s targets: the batch call falls back to
/// the per-domain call.
pub(crate) fn specs(targets: [AliyunCdn; 3]) -> Vec<TargetSpec<AliyunCdn>> {
    targets
        .into_iter()
        .enumerate()
        .map(|(i, t)| TargetSpec {
            target: Arc::new(t),
            fallback: (i == CDN_BATCH).then_some(CDN_PER_DOMAIN),
        })
        .collect()
}

/// An executor over [`connect_all`]'s targets.
pub(crate) fn executor(
    targets: [AliyunCdn; 3],
    options: Options,
) -> crate::push::Executor<AliyunCdn> {
    crate::push::Executor::with_targets(specs(targets), options)
}

/// The target each managed domain's jobs go to: CDN domains to the call the run starts on,
/// DCDN domains to [`DCDN`].
pub(crate) fn routes(settings: &Settings, start: Start) -> BTreeMap<String, TargetIndex> {
    let cdn = match start {
        Start::Batch => CDN_BATCH,
        Start::PerDomain => CDN_PER_DOMAIN,
    };
    settings
        .managed()
        .into_iter()
        .map(|(d, p)| {
            let t = match p {
                Product::Cdn => cdn,
                Product::Dcdn => DCDN,
            };
            (d, t)
        })
        .collect()
}

/// After a pass that started on `start`: records in `store` what the batch call's fate
/// says ([`fallback::after_run`]) — `gone`: the batch target answered that its call does not
/// exist; `batch_worked`: it deployed something — and logs the switch warning once, when the
/// batch call is newly found gone. A save error is logged (the next save writes it).
pub(crate) fn settle_fallback(
    store: &mut StateStore,
    settings: &AliyunSettings,
    start: Start,
    gone: bool,
    batch_worked: bool,
) {
    let now = time::OffsetDateTime::now_utc();
    let digest = fallback::digest(settings);
    let before = store.state().batch_gone.clone();
    let after = fallback::after_run(start, before.as_ref(), gone, batch_worked, &digest, now);
    if gone && start == Start::Batch {
        tracing::warn!("{}", fallback::switch_warning());
    } else if before.is_some() && after.is_none() {
        tracing::info!("the CDN batch call works again; later runs start on it");
    }
    if let Err(e) = store.record_batch_gone(after) {
        tracing::error!(kind = e.kind(), "{e}");
    }
}

/// Domains per call of the per-domain targets (one each), for `reconcile::Pass::per_call`.
pub(crate) fn per_call() -> BTreeMap<TargetIndex, usize> {
    [(CDN_PER_DOMAIN, 1), (DCDN, 1)].into()
}

/// Domains per call the planner cuts batches to when a run starts on `start`.
pub(crate) fn batch_for(settings: &AliyunSettings, start: Start) -> usize {
    match start {
        Start::Batch => settings.domains_per_call(),
        Start::PerDomain => 1,
    }
}

/// The call a run starts on, from the configuration and the state's record.
pub(crate) fn start_for(settings: &AliyunSettings, state: &State, force: bool) -> Start {
    let digest = fallback::digest(settings);
    let now = time::OffsetDateTime::now_utc();
    fallback::start(settings.api, state.batch_gone.as_ref(), &digest, force, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::aliyun::error::{ResponseMeta, classify};

    /// Builds an API refusal the way the client decodes one.
    fn refusal(status: u16, code: &str, message: &str, domains: &[String]) -> ApiError {
        let body = format!(
            r#"{{"RequestId":"r-1","HostId":"cdn.aliyuncs.com","Code":"{code}","Message":"{message}"}}"#
        );
        let meta = ResponseMeta {
            status,
            retry_after: Some(Duration::from_secs(3)),
            ..ResponseMeta::default()
        };
        ApiError::from_response(
            "BatchSetCdnDomainServerCertificate",
            meta,
            body.as_bytes(),
            domains,
        )
    }

    #[test]
    fn handling_follows_the_client_classes() {
        let two = vec!["a.example.com".to_string(), "b.example.com".to_string()];
        let cases: &[(u16, &str, &str)] = &[
            (503, "ServiceUnavailable", "busy"),
            (400, "Throttling.User", "slow down"),
            (400, "SignatureDoesNotMatch", "bad"),
            (400, "InvalidTimeStamp.Expired", "late"),
            (
                404,
                "InvalidDomain.NotFound",
                "The domain b.example.com does not exist",
            ),
            (400, "Certificate.MissMatch", "mismatch"),
            (400, "InvalidParameter.DomainNameOverLimit", "too many"),
            (400, "SomethingElse", "odd"),
        ];
        for &(status, code, message) in cases {
            let e = refusal(status, code, message, &two);
            let expected = classify(Some(code), Some(status), two.len());
            assert_eq!(e.class(), expected, "{code}");
            let h = e.handling();
            match expected {
                Class::Retryable => assert_eq!(
                    h,
                    Handling::Retry {
                        after: Some(Duration::from_secs(3))
                    }
                ),
                Class::Credentials | Class::Config => assert_eq!(h, Handling::Credentials),
                Class::Clock => assert_eq!(h, Handling::Clock),
                Class::Domain => assert_eq!(h, Handling::Domain(Some("b.example.com"))),
                Class::Certificate => assert_eq!(h, Handling::Certificate(None)),
                Class::BatchSize => assert_eq!(h, Handling::BatchSize { limit: None }),
                Class::Other => assert_eq!(h, Handling::Other),
            }
            assert_eq!(Failure::kind(&e), e.kind());
        }
    }

    fn settings(api: Api) -> AliyunSettings {
        AliyunSettings {
            region: Some("cn-hangzhou".to_string()),
            api,
            ..AliyunSettings::defaults("https://cdn.aliyuncs.com")
        }
    }

    #[test]
    fn api_picks_the_limits() {
        let batch = limits(&settings(Api::Batch));
        assert_eq!(batch, batch_limits(&settings(Api::Batch)));
        assert_eq!((batch.domains_per_call, batch.writes.calls), (10, 10));
        let per = limits(&settings(Api::PerDomain));
        assert_eq!(per.domains_per_call, 1);
        // 30 a window, one start every window / 30.
        assert_eq!(
            per.writes,
            Rate {
                calls: 1,
                per: RATE_WINDOW / 30
            }
        );
        assert_eq!(per.reads, Rate::per_second(50));
        assert_eq!(per.prepares, None);
    }

    #[test]
    fn an_action_that_does_not_exist_is_gone() {
        let one = vec!["a.example.com".to_string()];
        for code in ["InvalidAction.NotFound", "InvalidAction"] {
            let e = refusal(404, code, "Specified api is not found", &one);
            assert_eq!(e.handling(), Handling::Gone, "{code}");
        }
        // A missing domain is not a missing action.
        let e = refusal(404, "InvalidDomain.NotFound", "no such domain", &one);
        assert_eq!(e.handling(), Handling::Domain(Some("a.example.com")));
    }

    #[test]
    fn routes_send_each_product_to_its_target() {
        let dir = std::path::Path::new("/etc/certrotd");
        let text = "[cdn]\ndomains = [\"a.example.com\"]\n[dcdn]\ndomains = [\"e.example.com\"]\n";
        let s = crate::config::parse(&dir.join("certrotd.toml"), text, dir)
            .expect("valid")
            .settings;
        let r = routes(&s, Start::Batch);
        assert_eq!(r["a.example.com"], CDN_BATCH);
        assert_eq!(r["e.example.com"], DCDN);
        let r = routes(&s, Start::PerDomain);
        assert_eq!(r["a.example.com"], CDN_PER_DOMAIN);
        assert_eq!(r["e.example.com"], DCDN);
    }

    #[test]
    fn transport_errors_are_retried() {
        let e = ApiError::transport(
            "BatchSetCdnDomainServerCertificate",
            "http://127.0.0.1:1/",
            "reset",
        );
        assert_eq!(e.handling(), Handling::Retry { after: None });
    }
}
