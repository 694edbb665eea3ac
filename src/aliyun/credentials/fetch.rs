//! The fetchers of temporary credentials: STS `AssumeRoleWithOIDC` (unsigned, the OIDC token
//! re-read from its file at every fetch), STS `AssumeRole` (signed v1 with a base key), the ECS
//! instance metadata service (IMDSv2: a session token first; IMDSv1 only when allowed), and a
//! credentials URI.
//!
//! Invariants: every parameter travels in a POST form body (never the URL) with
//! `Format=JSON`; no answer is read past [`MAX_ANSWER`]; no error carries a secret, a token
//! or the OIDC token (server texts pass [`untrusted::redact`]); the metadata client never
//! uses a proxy and gives up quickly (a host that is no ECS instance falls through).

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::provider::{Fetch, FetchFuture, Temporary};
use super::{CredentialsError, Secret};
use crate::aliyun::http::{self, read_capped};
use crate::aliyun::sign;
use crate::untrusted;

/// STS's API version.
pub(crate) const STS_VERSION: &str = "2015-04-01";
/// Largest answer read from STS, the metadata service or a credentials URI.
const MAX_ANSWER: usize = 64 * 1024;
/// Longest OIDC token file read.
const MAX_TOKEN_FILE: u64 = 64 * 1024;
/// The metadata service's session token lifetime asked for.
const IMDS_TOKEN_TTL: &str = "21600";
/// Connect and answer time for the metadata service: it is on the same host's link.
pub(crate) const IMDS_TIMEOUT: Duration = Duration::from_secs(2);

fn fetch_error(source: &str, detail: impl Into<String>, temporary: bool) -> CredentialsError {
    CredentialsError::Fetch {
        source_name: source.to_string(),
        detail: detail.into(),
        temporary,
    }
}

/// An STS endpoint and the client to reach it (proxies from the environment).
#[derive(Clone)]
pub(crate) struct Sts {
    pub(crate) http: reqwest::Client,
    pub(crate) endpoint: Url,
    pub(crate) timeout: Duration,
}

/// STS's `Credentials` object (also the metadata service's and a credentials URI's
/// fields, at the top level there).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsCredentials {
    access_key_id: String,
    #[serde(deserialize_with = "secret")]
    access_key_secret: Secret,
    #[serde(deserialize_with = "secret")]
    security_token: Secret,
    expiration: String,
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    <String as Deserialize>::deserialize(d).map(Secret::from)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsAnswer {
    credentials: StsCredentials,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
}

impl StsCredentials {
    fn into_temporary(self, source: &str) -> Result<Temporary, CredentialsError> {
        let expiration = OffsetDateTime::parse(
            self.expiration.trim(),
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|_| fetch_error(source, "the answer's Expiration is not a UTC time", false))?;
        if self.access_key_id.is_empty()
            || self.access_key_secret.expose().is_empty()
            || self.security_token.expose().is_empty()
        {
            return Err(fetch_error(
                source,
                "the answer lacks AccessKeyId, AccessKeySecret or SecurityToken",
                false,
            ));
        }
        Ok(Temporary {
            access_key_id: self.access_key_id.trim().to_string(),
            secret: self.access_key_secret,
            token: self.security_token,
            expiration,
        })
    }
}

impl Sts {
    /// One STS call with `params` (all in the form body); its credentials.
    async fn call(
        &self,
        source: &str,
        params: &[(String, String)],
    ) -> Result<Temporary, CredentialsError> {
        let mut body = sign::encode_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let bytes = Zeroizing::new(std::mem::take(&mut *body).into_bytes());
        let request = self
            .http
            .post(self.endpoint.clone())
            .header(reqwest::header::CONTENT_TYPE, sign::FORM_CONTENT_TYPE)
            .header(reqwest::header::ACCEPT, "application/json")
            .body(reqwest::Body::from(bytes::Bytes::from_owner(OwnedSecret(
                bytes,
            ))));
        let where_ = format!("STS {}", self.endpoint.as_str().trim_end_matches('/'));
        let (status, answer) = send(request, self.timeout, source, &where_).await?;
        if status == 200 {
            let parsed: StsAnswer = serde_json::from_slice(&answer).map_err(|_| {
                fetch_error(source, format!("{where_} answered HTTP 200 without the documented Credentials (is sts_endpoint STS?)"), false)
            })?;
            return parsed.credentials.into_temporary(source);
        }
        Err(refusal(source, &where_, status, &answer))
    }
}

/// `Code: Message` of an error answer, redacted; temporary for 5xx and throttling.
fn refusal(source: &str, where_: &str, status: u16, answer: &[u8]) -> CredentialsError {
    let temporary = status >= 500 || status == 429;
    match serde_json::from_slice::<StsError>(answer) {
        Ok(e) => {
            let code = e.code.as_deref().map(untrusted::code).unwrap_or_default();
            let message = untrusted::redact(e.message.as_deref().unwrap_or(""), 300);
            let request_id = e
                .request_id
                .as_deref()
                .map(untrusted::request_id)
                .unwrap_or_default();
            let temporary = temporary || code.starts_with("Throttling");
            fetch_error(
                source,
                format!(
                    "{where_} refused: HTTP {status} {code}: {message} (RequestId {request_id})"
                ),
                temporary,
            )
        }
        Err(_) => fetch_error(
            source,
            format!("{where_} answered HTTP {status} (not JSON)"),
            temporary,
        ),
    }
}

/// Sends `request` within `timeout`; status and the (capped) body. A failure to get an
/// answer is temporary, except a TLS verification failure.
async fn send(
    request: reqwest::RequestBuilder,
    timeout: Duration,
    source: &str,
    where_: &str,
) -> Result<(u16, bytes::Bytes), CredentialsError> {
    let exchange = async {
        let mut response = request.send().await?;
        let status = response.status().as_u16();
        let (body, _) = read_capped(&mut response, MAX_ANSWER).await?;
        Ok::<_, reqwest::Error>((status, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Err(fetch_error(
            source,
            format!("{where_}: no answer within {} s", timeout.as_secs_f64()),
            true,
        )),
        Ok(Err(e)) => match http::tls_verification_failure(&e) {
            Some(detail) => Err(fetch_error(
                source,
                format!(
                    "{where_}: the TLS certificate does not verify ({detail}); check the endpoint, or add the root CA with [aliyun] ca_file"
                ),
                false,
            )),
            None => Err(fetch_error(
                source,
                format!(
                    "cannot reach {where_}: {}",
                    untrusted::redact(&http::error_chain(&e), 300)
                ),
                true,
            )),
        },
        Ok(Ok(answer)) => Ok(answer),
    }
}

/// Body bytes, zeroized on drop.
struct OwnedSecret(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for OwnedSecret {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A `RoleSessionName` STS accepts: 2-64 of `[A-Za-z0-9.@_-]`; other characters become `-`.
pub(crate) fn session_name(wanted: Option<&str>) -> String {
    let base = match wanted {
        Some(w) if !w.trim().is_empty() => w.trim().to_string(),
        _ => format!("certrotd-{}", OffsetDateTime::now_utc().unix_timestamp()),
    };
    let mut name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '@' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    while name.len() < 2 {
        name.push('-');
    }
    name
}

/// STS `AssumeRoleWithOIDC`.
pub(crate) struct Oidc {
    pub(crate) sts: Sts,
    pub(crate) role_arn: String,
    pub(crate) provider_arn: String,
    pub(crate) token_file: PathBuf,
    pub(crate) session_name: String,
    pub(crate) duration_secs: u32,
}

impl Fetch for Oidc {
    fn describe(&self) -> String {
        format!(
            "OIDC role {} via {} (token file {})",
            self.role_arn,
            self.sts.endpoint.as_str().trim_end_matches('/'),
            self.token_file.display()
        )
    }

    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let source = "OIDC (AssumeRoleWithOIDC)";
            let token = read_token(&self.token_file)?;
            let mut params = Zeroizing::new(vec![
                ("Action".to_string(), "AssumeRoleWithOIDC".to_string()),
                ("Format".to_string(), "JSON".to_string()),
                ("Version".to_string(), STS_VERSION.to_string()),
                (
                    "Timestamp".to_string(),
                    sign::format_timestamp(OffsetDateTime::now_utc()),
                ),
                (
                    "DurationSeconds".to_string(),
                    self.duration_secs.to_string(),
                ),
                ("RoleArn".to_string(), self.role_arn.clone()),
                ("OIDCProviderArn".to_string(), self.provider_arn.clone()),
                ("RoleSessionName".to_string(), self.session_name.clone()),
            ]);
            params.push(("OIDCToken".to_string(), token.expose().to_string()));
            self.sts.call(source, &params).await
        })
    }
}

/// The OIDC token file, read now (the kubelet rotates it): trimmed, not empty.
fn read_token(path: &std::path::Path) -> Result<Secret, CredentialsError> {
    let what = "OIDC token file (ALIBABA_CLOUD_OIDC_TOKEN_FILE)";
    let bytes =
        crate::fsio::read(path, MAX_TOKEN_FILE).map_err(|e| CredentialsError::Unreadable {
            path: path.to_path_buf(),
            what: what.to_string(),
            detail: e.reason(),
            hint: "check the path and that the pod mounts the token (RRSA)".to_string(),
        })?;
    let bytes = Zeroizing::new(bytes);
    let text = std::str::from_utf8(&bytes).map_err(|_| CredentialsError::BadFile {
        path: path.to_path_buf(),
        what: what.to_string(),
        problem: "not UTF-8 text".to_string(),
    })?;
    if text.trim().is_empty() {
        return Err(CredentialsError::BadFile {
            path: path.to_path_buf(),
            what: what.to_string(),
            problem: "empty; it should hold the OIDC token".to_string(),
        });
    }
    Ok(Secret::from(text.trim().to_string()))
}

/// STS `AssumeRole`, signed (v1) with a base AccessKey.
pub(crate) struct AssumeRole {
    pub(crate) sts: Sts,
    pub(crate) base_id: String,
    pub(crate) base_secret: Secret,
    pub(crate) base_token: Option<Secret>,
    pub(crate) role_arn: String,
    pub(crate) session_name: String,
    pub(crate) duration_secs: u32,
    pub(crate) external_id: Option<String>,
}

impl Fetch for AssumeRole {
    fn describe(&self) -> String {
        format!(
            "RAM role {} assumed with AccessKey {} via {}",
            self.role_arn,
            super::mask_id(&self.base_id),
            self.sts.endpoint.as_str().trim_end_matches('/')
        )
    }

    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let nonce: [u8; 16] = rand::random();
            let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
            let mut params = Zeroizing::new(sign::common_params(
                &self.base_id,
                OffsetDateTime::now_utc(),
                &nonce,
                self.base_token.as_ref().map(Secret::expose),
            ));
            for (k, v) in params.iter_mut() {
                if k == "Version" {
                    *v = STS_VERSION.to_string();
                }
            }
            params.push(("Action".to_string(), "AssumeRole".to_string()));
            params.push(("RoleArn".to_string(), self.role_arn.clone()));
            params.push(("RoleSessionName".to_string(), self.session_name.clone()));
            params.push((
                "DurationSeconds".to_string(),
                self.duration_secs.to_string(),
            ));
            if let Some(id) = &self.external_id {
                params.push(("ExternalId".to_string(), id.clone()));
            }
            let signature = sign::sign("POST", self.base_secret.expose(), &params);
            params.push((sign::SIGNATURE_PARAM.to_string(), signature));
            self.sts.call("ram_role_arn (AssumeRole)", &params).await
        })
    }
}

/// The ECS instance's RAM role through the metadata service.
pub(crate) struct EcsRole {
    /// Never through a proxy.
    pub(crate) http: reqwest::Client,
    /// `http://host[:port]`, no trailing `/`.
    pub(crate) endpoint: String,
    pub(crate) role_name: Option<String>,
    pub(crate) imds_v1: bool,
}

const IMDS_SOURCE: &str = "ECS RAM role (instance metadata)";

impl Fetch for EcsRole {
    fn describe(&self) -> String {
        match &self.role_name {
            Some(role) => format!(
                "ECS RAM role {role} via the metadata service {}",
                self.endpoint
            ),
            None => format!(
                "ECS RAM role (discovered) via the metadata service {}",
                self.endpoint
            ),
        }
    }

    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let token = self.session_token().await?;
            let role = match &self.role_name {
                Some(r) => r.clone(),
                None => self.discover_role(token.as_ref()).await?,
            };
            let path = format!("/latest/meta-data/ram/security-credentials/{role}");
            let (status, body) = self.get(&path, token.as_ref()).await?;
            if status != 200 {
                return Err(fetch_error(
                    IMDS_SOURCE,
                    format!(
                        "{}{path} answered HTTP {status}; is the RAM role {role:?} attached to this instance?",
                        self.endpoint
                    ),
                    status >= 500,
                ));
            }
            metadata_credentials(IMDS_SOURCE, &body)
        })
    }
}

impl EcsRole {
    /// IMDSv2's session token; `None` when the request failed and IMDSv1 is allowed.
    async fn session_token(&self) -> Result<Option<Secret>, CredentialsError> {
        let url = format!("{}/latest/api/token", self.endpoint);
        let request = self
            .http
            .put(&url)
            .header("X-aliyun-ecs-metadata-token-ttl-seconds", IMDS_TOKEN_TTL);
        let where_ = format!("the metadata service {}", self.endpoint);
        let failed = match send(request, IMDS_TIMEOUT, IMDS_SOURCE, &where_).await {
            Ok((200, body)) => match std::str::from_utf8(&body) {
                Ok(t) if !t.trim().is_empty() => {
                    return Ok(Some(Secret::from(t.trim().to_string())));
                }
                _ => fetch_error(
                    IMDS_SOURCE,
                    format!("{where_} gave an empty session token"),
                    true,
                ),
            },
            Ok((status, _)) => fetch_error(
                IMDS_SOURCE,
                format!("{where_} refused the IMDSv2 session token request (HTTP {status})"),
                status >= 500,
            ),
            Err(e) => e,
        };
        if self.imds_v1 {
            tracing::warn!(error = %failed, "no IMDSv2 session token; trying IMDSv1 ([aliyun] imds_v1 = true)");
            return Ok(None);
        }
        Err(failed)
    }

    async fn discover_role(&self, token: Option<&Secret>) -> Result<String, CredentialsError> {
        let path = "/latest/meta-data/ram/security-credentials/";
        let (status, body) = self.get(path, token).await?;
        let text = String::from_utf8_lossy(&body);
        let role = text.lines().map(str::trim).find(|l| !l.is_empty());
        match (status, role) {
            (200, Some(r))
                if r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
            {
                Ok(r.to_string())
            }
            (200, _) => Err(fetch_error(
                IMDS_SOURCE,
                "this instance has no RAM role attached; attach one or set [aliyun] role_name",
                false,
            )),
            (s, _) => Err(fetch_error(
                IMDS_SOURCE,
                format!("{}{path} answered HTTP {s}", self.endpoint),
                s >= 500,
            )),
        }
    }

    async fn get(
        &self,
        path: &str,
        token: Option<&Secret>,
    ) -> Result<(u16, bytes::Bytes), CredentialsError> {
        let mut request = self.http.get(format!("{}{path}", self.endpoint));
        if let Some(t) = token {
            let mut value = reqwest::header::HeaderValue::from_str(t.expose()).map_err(|_| {
                fetch_error(
                    IMDS_SOURCE,
                    "the session token is not a header value",
                    false,
                )
            })?;
            value.set_sensitive(true);
            request = request.header("X-aliyun-ecs-metadata-token", value);
        }
        let where_ = format!("the metadata service {}", self.endpoint);
        send(request, IMDS_TIMEOUT, IMDS_SOURCE, &where_).await
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MetadataAnswer {
    #[serde(default)]
    code: Option<String>,
    #[serde(flatten)]
    credentials: Option<StsCredentials>,
}

/// The metadata service's (and a credentials URI's) JSON: `Code: Success` and the fields.
fn metadata_credentials(source: &str, body: &[u8]) -> Result<Temporary, CredentialsError> {
    let parsed: MetadataAnswer = serde_json::from_slice(body)
        .map_err(|_| fetch_error(source, "the answer is not the documented JSON", false))?;
    if parsed.code.as_deref() != Some("Success") {
        let code = parsed
            .code
            .as_deref()
            .map(untrusted::code)
            .unwrap_or_default();
        return Err(fetch_error(
            source,
            format!("the answer's Code is {code:?}, not Success"),
            true,
        ));
    }
    parsed
        .credentials
        .ok_or_else(|| {
            fetch_error(
                source,
                "the answer lacks AccessKeyId, AccessKeySecret, SecurityToken or Expiration",
                false,
            )
        })?
        .into_temporary(source)
}

/// `ALIBABA_CLOUD_CREDENTIALS_URI`: a GET answering the metadata service's JSON.
pub(crate) struct CredentialsUri {
    pub(crate) http: reqwest::Client,
    pub(crate) uri: Url,
    pub(crate) timeout: Duration,
}

impl Fetch for CredentialsUri {
    fn describe(&self) -> String {
        format!(
            "credentials URI {}{}",
            self.uri.origin().ascii_serialization(),
            self.uri.path()
        )
    }

    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let source = "credentials URI (ALIBABA_CLOUD_CREDENTIALS_URI)";
            let where_ = format!(
                "{}{}",
                self.uri.origin().ascii_serialization(),
                self.uri.path()
            );
            let request = self
                .http
                .get(self.uri.clone())
                .header(reqwest::header::ACCEPT, "application/json");
            let (status, body) = send(request, self.timeout, source, &where_).await?;
            if status != 200 {
                return Err(fetch_error(
                    source,
                    format!("{where_} answered HTTP {status}"),
                    status >= 500,
                ));
            }
            metadata_credentials(source, &body)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_fit_sts_rules() {
        assert_eq!(session_name(Some("certrotd")), "certrotd");
        assert_eq!(session_name(Some("a b/c")), "a-b-c");
        assert_eq!(session_name(Some("x")), "x-");
        assert_eq!(session_name(Some(&"y".repeat(80))).len(), 64);
        let default = session_name(None);
        assert!(
            default.starts_with("certrotd-") && default.len() <= 64,
            "{default}"
        );
    }

    #[test]
    fn metadata_answers_decode_or_say_what_is_wrong() {
        let ok = br#"{"Code":"Success","AccessKeyId":"STS.a","AccessKeySecret":"s3cr3t","SecurityToken":"tok","Expiration":"2030-01-01T00:00:00Z","LastUpdated":"2029-12-31T18:00:00Z"}"#;
        let t = metadata_credentials("x", ok).unwrap();
        assert_eq!(t.access_key_id, "STS.a");
        let failed = br#"{"Code":"Failed"}"#;
        let err = metadata_credentials("x", failed).unwrap_err();
        assert!(err.to_string().contains("Failed"), "{err}");
        let err = metadata_credentials("x", b"<html>").unwrap_err();
        assert!(err.to_string().contains("documented JSON"), "{err}");
        let no_secret = br#"{"Code":"Success","AccessKeyId":"STS.a","SecurityToken":"t","Expiration":"2030-01-01T00:00:00Z"}"#;
        assert!(metadata_credentials("x", no_secret).is_err());
    }

    #[test]
    fn sts_refusals_name_code_and_never_echo_secrets() {
        let body = br#"{"Code":"AuthenticationFail.OIDCToken.Invalid","Message":"bad token","RequestId":"A-1"}"#;
        let e = refusal("OIDC", "STS x", 400, body);
        let text = e.to_string();
        assert!(
            text.contains("AuthenticationFail.OIDCToken.Invalid"),
            "{text}"
        );
        assert!(!e.is_temporary());
        assert!(refusal("OIDC", "STS x", 503, b"busy").is_temporary());
    }
}
