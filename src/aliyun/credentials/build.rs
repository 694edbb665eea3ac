//! From the resolved chain to what the client signs with: fixed credentials as they are;
//! a fetch plan as fetchers with their HTTP clients (STS and a credentials URI through the
//! environment's proxies and `[aliyun] ca_file`'s roots; the metadata service never through
//! a proxy). No request is sent here.

use std::net::IpAddr;

use reqwest::Url;

use super::fetch::{self, AssumeRole, CredentialsUri, EcsRole, Oidc, Sts};
use super::provider::{CredentialProvider, Fetch};
use super::{CredentialsError, DURATION_SECS, Dynamic, EcsPlan, Environment, Resolved, Source};
use crate::aliyun::http::{self, Proxies};
use crate::config::AliyunSettings;

/// The chain's first source, ready to sign with.
pub(crate) fn provider(
    settings: &AliyunSettings,
    env: &Environment,
) -> Result<CredentialProvider, CredentialsError> {
    match super::resolve(settings, env)? {
        Resolved::Fixed(c) => Ok(CredentialProvider::from(c)),
        Resolved::Dynamic(plan) => dynamic(settings, plan),
    }
}

fn dynamic(
    settings: &AliyunSettings,
    plan: Dynamic,
) -> Result<CredentialProvider, CredentialsError> {
    let description = plan.describe();
    let (fetchers, source): (Vec<Box<dyn Fetch>>, Source) = match plan {
        Dynamic::Oidc {
            role_arn,
            provider_arn,
            token_file,
            session_name,
            ..
        } => (
            vec![Box::new(Oidc {
                sts: sts(settings)?,
                role_arn,
                provider_arn,
                token_file,
                session_name: fetch::session_name(session_name.as_deref()),
                duration_secs: DURATION_SECS,
            })],
            Source::Oidc,
        ),
        Dynamic::AssumeRole {
            base,
            role_arn,
            session_name,
            external_id,
            ..
        } => (
            vec![Box::new(AssumeRole {
                sts: sts(settings)?,
                base_id: base.access_key_id().to_string(),
                base_secret: base.secret().clone(),
                base_token: base.security_token().cloned(),
                role_arn,
                session_name: fetch::session_name(session_name.as_deref()),
                duration_secs: DURATION_SECS,
                external_id,
            })],
            Source::RamRoleArn,
        ),
        Dynamic::Instance { ecs, uri, .. } => {
            let mut list: Vec<Box<dyn Fetch>> = Vec::new();
            if let Some(plan) = ecs {
                list.push(Box::new(ecs_role(plan)?));
            }
            if let Some(uri) = uri {
                list.push(Box::new(credentials_uri(settings, &uri)?));
            }
            (list, Source::Instance)
        }
    };
    Ok(CredentialProvider::temporary(fetchers, source, description))
}

fn setup(e: impl std::fmt::Display) -> CredentialsError {
    CredentialsError::Setup(e.to_string())
}

/// `[aliyun] sts_endpoint` and its client.
fn sts(settings: &AliyunSettings) -> Result<Sts, CredentialsError> {
    let raw = &settings.access.sts_endpoint;
    let (endpoint, plain_http) = crate::aliyun::client::check_endpoint(raw)
        .map_err(|e| setup(format!("[aliyun] sts_endpoint: {e}")))?;
    let http = http::build(
        settings.access.ca_file.as_deref(),
        settings.timeout,
        Proxies::FromEnvironment,
        plain_http,
    )
    .map_err(setup)?;
    Ok(Sts {
        http,
        endpoint,
        timeout: settings.timeout,
    })
}

fn ecs_role(plan: EcsPlan) -> Result<EcsRole, CredentialsError> {
    let http = http::build(None, fetch::IMDS_TIMEOUT, Proxies::Never, true).map_err(setup)?;
    Ok(EcsRole {
        http,
        endpoint: plan.endpoint.trim_end_matches('/').to_string(),
        role_name: plan.role_name,
        imds_v1: plan.imds_v1,
    })
}

/// `ALIBABA_CLOUD_CREDENTIALS_URI`: https, or http to a loopback host (a local sidecar).
fn credentials_uri(
    settings: &AliyunSettings,
    raw: &str,
) -> Result<CredentialsUri, CredentialsError> {
    let bad = |why: &str| CredentialsError::Incomplete {
        source_name: super::ENV_CREDENTIALS_URI.to_string(),
        what: format!("{why}; write it as https://host/path (or http:// to a loopback host)"),
    };
    let uri = Url::parse(raw.trim()).map_err(|_| bad("not a URL"))?;
    let loopback = match uri.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => return Err(bad("it has no host")),
    };
    let plain_http = match uri.scheme() {
        "https" => false,
        "http" if loopback => true,
        "http" => return Err(bad("plain http is allowed only to a loopback host")),
        _ => return Err(bad("the scheme must be https")),
    };
    if !uri.username().is_empty() || uri.password().is_some() {
        return Err(bad("it must not carry a user name or password"));
    }
    let http = http::build(
        settings.access.ca_file.as_deref(),
        settings.timeout,
        Proxies::FromEnvironment,
        plain_http,
    )
    .map_err(setup)?;
    Ok(CredentialsUri {
        http,
        uri,
        timeout: settings.timeout,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::aliyun::Client;
    use crate::aliyun::credentials::provider::{FetchFuture, Temporary};
    use crate::emulator::{
        DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, Emulator, EmulatorConfig,
    };

    fn settings(endpoint: &str) -> AliyunSettings {
        AliyunSettings {
            read_requests_per_second: 100,
            max_attempts: 3,
            timeout: Duration::from_secs(5),
            signature: crate::config::Signature::V3,
            access: crate::config::AccessSettings {
                sts_endpoint: endpoint.to_string(),
                ..Default::default()
            },
            ..AliyunSettings::defaults(endpoint)
        }
    }

    /// An `AssumeRole` fetcher that believes its credentials live an hour longer than STS
    /// says: the server is the one to refuse them as expired.
    struct Optimist(AssumeRole);

    impl Fetch for Optimist {
        fn describe(&self) -> String {
            self.0.describe()
        }
        fn fetch(&self) -> FetchFuture<'_> {
            Box::pin(async move {
                let mut t: Temporary = self.0.fetch().await?;
                t.expiration += time::Duration::hours(1);
                Ok(t)
            })
        }
    }

    #[tokio::test]
    async fn a_call_refused_for_an_expired_token_refreshes_and_retries_once() {
        let cfg = EmulatorConfig {
            sts_lifetime: Some(Duration::from_secs(1)),
            ..EmulatorConfig::with_domains(["a.example.com"])
        };
        let emu = Emulator::start("127.0.0.1:0".parse().unwrap(), cfg)
            .await
            .unwrap();
        let s = settings(&emu.endpoint());
        let fetcher = AssumeRole {
            sts: sts(&s).unwrap(),
            base_id: DEFAULT_ACCESS_KEY_ID.to_string(),
            base_secret: super::super::Secret::from(DEFAULT_ACCESS_KEY_SECRET.to_string()),
            base_token: None,
            role_arn: "acs:ram::1234567890123456:role/cdn".to_string(),
            session_name: fetch::session_name(Some("test")),
            duration_secs: 900,
            external_id: None,
        };
        let provider = CredentialProvider::temporary(
            vec![Box::new(Optimist(fetcher))],
            Source::RamRoleArn,
            "test".to_string(),
        );
        let client = Client::new(&s, provider).unwrap();
        client.describe_user_domains().await.expect("first call");
        // The emulator's clock is the wall clock: let the issued set expire there.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        client
            .describe_user_domains()
            .await
            .expect("refreshed and retried");
        let log = emu.log();
        let codes: Vec<Option<&str>> = log.iter().map(|e| e.code.as_deref()).collect();
        let expired = codes
            .iter()
            .filter(|c| **c == Some("InvalidSecurityToken.Expired"))
            .count();
        assert_eq!(expired, 1, "{codes:?}");
        let assumed = log
            .iter()
            .filter(|e| e.action == "AssumeRole" && e.succeeded())
            .count();
        assert_eq!(assumed, 2, "one fetch per set: {log:?}");
        let cdn: Vec<_> = log
            .iter()
            .filter(|e| e.action == "DescribeUserDomains")
            .collect();
        assert_eq!(
            cdn.len(),
            3,
            "one call, one refused and retried once: {cdn:?}"
        );
        assert!(
            cdn.iter()
                .all(|e| e.signature == "v3" && e.access_key_id.starts_with("STS."))
        );
        emu.shutdown().await;
    }
}
