//! The executor's view of the real API: [`Failure`] for [`ApiError`] and [`CdnApi`] for the
//! [`Client`] (with the account's optional `Region`).
//!
//! Owns the mapping from the client's error classes to the executor's handling; every call
//! here is one client call, so one freshly signed attempt.

use super::{BatchSet, CdnApi, Failure, Handling};
use crate::aliyun::{ApiError, BatchSetRequest, Class, Client};
use crate::cert::Fingerprint;

impl Failure for ApiError {
    fn handling(&self) -> Handling<'_> {
        match self.class() {
            Class::Retryable => Handling::Retry {
                after: self.retry_after(),
            },
            Class::Credentials => Handling::Credentials,
            Class::Clock => Handling::Clock,
            Class::Domain => Handling::Domain(self.domain()),
            Class::Certificate => Handling::Certificate(self.domain()),
            Class::BatchSize => Handling::BatchSize,
            Class::Other => Handling::Other,
        }
    }

    fn kind(&self) -> &'static str {
        ApiError::kind(self)
    }
}

/// The CDN API through [`Client`], sending `Region` when the configuration names one.
#[derive(Debug, Clone)]
pub struct AliyunCdn {
    client: Client,
    region: Option<String>,
}

impl AliyunCdn {
    pub fn new(client: Client, region: Option<String>) -> AliyunCdn {
        AliyunCdn { client, region }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl CdnApi for AliyunCdn {
    type Error = ApiError;

    async fn batch_set(&self, call: &BatchSet<'_>) -> Result<String, ApiError> {
        let req = BatchSetRequest {
            domains: call.domains,
            cert_name: &call.upload.cert_name,
            ssl_pub: &call.upload.chain_pem,
            ssl_pri: &call.upload.key,
            region: self.region.as_deref(),
        };
        self.client.batch_set(&req).await
    }

    async fn served_fingerprint(&self, domain: &str) -> Result<Option<Fingerprint>, ApiError> {
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
                Class::Credentials => assert_eq!(h, Handling::Credentials),
                Class::Clock => assert_eq!(h, Handling::Clock),
                Class::Domain => assert_eq!(h, Handling::Domain(Some("b.example.com"))),
                Class::Certificate => assert_eq!(h, Handling::Certificate(None)),
                Class::BatchSize => assert_eq!(h, Handling::BatchSize),
                Class::Other => assert_eq!(h, Handling::Other),
            }
            assert_eq!(Failure::kind(&e), e.kind());
        }
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
