//! The CDN as a [`Target`] of the executor, in one of two ways chosen by `[aliyun] api`:
//! `BatchSetCdnDomainServerCertificate` (`cdn-batch`: up to `max_domains_per_call` domains a
//! call at `requests_per_second`) or `SetCdnDomainSSLCertificate` (`cdn-per-domain`: one
//! domain a call at `per_domain_requests_per_second`); both read back with
//! `DescribeDomainCertificateInfo` at `read_requests_per_second`. And [`Failure`] for
//! [`ApiError`], shared by both ways.
//!
//! Owns the mapping from the client's error classes to the executor's handling (including
//! the limit a size refusal names), and the target's limits from the `[aliyun]` settings;
//! every call here is one client call, so one freshly signed attempt.

use super::credentials::{self, CredentialsError, Environment};
use super::{ApiError, BatchSetRequest, Class, Client, ClientError, SetSslRequest};
use crate::cert::Fingerprint;
use crate::config::{AliyunSettings, Api};
use crate::push::{Deploy, Failure, Handling, Limits, RATE_WINDOW, Rate, Target};

impl Failure for ApiError {
    fn handling(&self) -> Handling<'_> {
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

/// Why [`AliyunCdn::connect`] could not build the target.
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

/// The CDN API through [`Client`], deploying with the call `api` names; the batch call
/// sends `Region` when the configuration names one (the per-domain call has none).
#[derive(Debug, Clone)]
pub struct AliyunCdn {
    client: Client,
    region: Option<String>,
    limits: Limits,
    api: Api,
}

impl AliyunCdn {
    /// The batch target (`cdn-batch`).
    pub fn new(client: Client, region: Option<String>, limits: Limits) -> AliyunCdn {
        AliyunCdn {
            client,
            region,
            limits,
            api: Api::Batch,
        }
    }

    /// The per-domain target (`cdn-per-domain`); `limits.domains_per_call` should be 1.
    pub fn per_domain(client: Client, limits: Limits) -> AliyunCdn {
        AliyunCdn {
            client,
            region: None,
            limits,
            api: Api::PerDomain,
        }
    }

    /// The credential chain (from the process environment) and the client for these
    /// settings: the target `settings.api` chooses, with its [`limits`].
    pub(crate) fn connect(settings: &AliyunSettings) -> Result<AliyunCdn, ConnectError> {
        let creds = credentials::provider(settings, &Environment::from_process())?;
        tracing::info!(source = %creds.describe(), "using Alibaba Cloud credentials");
        let client = Client::new(settings, creds)?;
        Ok(match settings.api {
            Api::Batch => AliyunCdn::new(client, settings.region.clone(), limits(settings)),
            Api::PerDomain => AliyunCdn::per_domain(client, limits(settings)),
        })
    }

    /// What the client signs with.
    pub(crate) fn credentials(&self) -> &credentials::CredentialProvider {
        self.client.credentials()
    }

    /// The same API with other limits (the daemon spaces its write starts).
    pub(crate) fn with_limits(self, limits: Limits) -> AliyunCdn {
        AliyunCdn { limits, ..self }
    }
}

impl AliyunCdn {
    /// `SetCdnDomainSSLCertificate` for the call's domain: the executor never hands a call
    /// more than `domains_per_call` (1) domains, so this is one client call.
    async fn deploy_one(&self, call: &Deploy<'_>) -> Result<String, ApiError> {
        let mut request_id = String::new();
        for domain in call.domains {
            let req = SetSslRequest {
                domain,
                cert_name: &call.upload.cert_name,
                ssl_pub: &call.upload.chain_pem,
                ssl_pri: &call.upload.key,
            };
            request_id = self.client.set_domain_ssl(&req).await?;
        }
        Ok(request_id)
    }
}

impl Target for AliyunCdn {
    type Error = ApiError;

    fn name(&self) -> &'static str {
        match self.api {
            Api::Batch => "cdn-batch",
            Api::PerDomain => "cdn-per-domain",
        }
    }

    fn product(&self) -> &'static str {
        "cdn"
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    async fn deploy(&self, call: &Deploy<'_>) -> Result<String, ApiError> {
        if self.api == Api::PerDomain {
            return self.deploy_one(call).await;
        }
        let req = BatchSetRequest {
            domains: call.domains,
            cert_name: &call.upload.cert_name,
            ssl_pub: &call.upload.chain_pem,
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
            endpoint: "https://cdn.aliyuncs.com".to_string(),
            region: Some("cn-hangzhou".to_string()),
            access_key_id: None,
            access_key_secret_file: None,
            requests_per_second: 10,
            read_requests_per_second: 50,
            max_domains_per_call: 10,
            api,
            per_domain_requests_per_second: 30,
            max_attempts: 6,
            timeout: Duration::from_secs(30),
            verify: true,
            signature: crate::config::Signature::V1,
            access: Default::default(),
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
    fn transport_errors_are_retried() {
        let e = ApiError::transport(
            "BatchSetCdnDomainServerCertificate",
            "http://127.0.0.1:1/",
            "reset",
        );
        assert_eq!(e.handling(), Handling::Retry { after: None });
    }
}
