//! The emulator's STS: `AssumeRoleWithOIDC` (unsigned) and `AssumeRole` (signed v1 with the
//! emulator's AccessKey), Version `2015-04-01`, issuing temporary credentials
//! (`STS.`-prefixed AccessKeyId, secret, `SecurityToken`, `Expiration`) that the CDN side
//! accepts until they expire and then refuses with `InvalidSecurityToken.Expired`.
//!
//! Checks, in order, as STS documents them: `Version` (`InvalidVersion`), `Format` (this
//! stand-in answers JSON only), the role ARN (`InvalidParameter.RoleArn`), the session name
//! (2-64 of `[A-Za-z0-9.@_-]`, `InvalidParameter.RoleSessionName`), `DurationSeconds`
//! (900-43200, `InvalidParameter.DurationSeconds`); for OIDC the provider ARN
//! (`InvalidParameter.OIDCProviderArn`) and the token: a JWT whose `exp`, when present, is in
//! the future (`AuthenticationFail.OIDCToken.Invalid` / `.Expired`). Issued credentials live
//! `DurationSeconds`, or `--sts-lifetime-secs` when set (short lives for tests).
//!
//! Invariant: issued secrets and tokens live only in this state (zeroized on drop) and the
//! answer; the log records a short digest of an OIDC token, never the token.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use rand::RngExt;
use serde_json::{Value, json};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{ApiError, Params, refuse};
use crate::aliyun::sign;

pub(crate) const VERSION: &str = "2015-04-01";
pub(crate) const ACTION_OIDC: &str = "AssumeRoleWithOIDC";
pub(crate) const ACTION_ASSUME_ROLE: &str = "AssumeRole";
/// The code a call signed with an expired token gets.
pub(crate) const EXPIRED: &str = "InvalidSecurityToken.Expired";

/// Temporary credentials the emulator issued.
struct Issued {
    secret: Zeroizing<String>,
    token: Zeroizing<String>,
    expires: OffsetDateTime,
}

/// Issued credentials and the lifetime override.
#[derive(Default)]
pub(crate) struct Sts {
    issued: HashMap<String, Issued>,
    /// `--sts-lifetime-secs`: the life of every issued set, whatever was asked.
    lifetime: Option<Duration>,
}

/// Is `action` one of STS's (answered here, not by the CDN side)?
pub(crate) fn is_sts_action(action: Option<&str>) -> bool {
    matches!(action, Some(ACTION_OIDC | ACTION_ASSUME_ROLE))
}

impl Sts {
    pub(crate) fn new(lifetime: Option<Duration>) -> Sts {
        Sts {
            issued: HashMap::new(),
            lifetime,
        }
    }

    /// The secret to verify a call signed by issued key `id` with, after its token checks;
    /// `None` when `id` is not an issued key.
    pub(crate) fn secret_for(
        &self,
        id: &str,
        token: Option<&str>,
        wall: OffsetDateTime,
    ) -> Option<Result<&str, ApiError>> {
        let issued = self.issued.get(id)?;
        Some(match token {
            None | Some("") => Err(refuse(
                400,
                "MissingSecurityToken",
                "The SecurityToken is required for a temporary AccessKeyId (STS.…).",
            )),
            Some(t) if t != issued.token.as_str() => Err(refuse(
                400,
                "InvalidSecurityToken.MismatchWithAccessKey",
                "Specified SecurityToken mismatch with the AccessKey.",
            )),
            Some(_) if wall >= issued.expires => {
                Err(refuse(400, EXPIRED, "Specified SecurityToken is expired."))
            }
            Some(_) => Ok(issued.secret.as_str()),
        })
    }

    /// `AssumeRole` or `AssumeRoleWithOIDC` after the envelope passed (for `AssumeRole` the
    /// caller verified the v1 signature with the emulator's key).
    pub(crate) fn answer(
        &mut self,
        action: &str,
        p: &Params,
        wall: OffsetDateTime,
    ) -> Result<Value, ApiError> {
        check_common(p)?;
        let role_arn = p.require("RoleArn")?;
        check_role_arn(role_arn)?;
        let session = p.require("RoleSessionName")?;
        check_session_name(session)?;
        let duration = duration(p)?;
        if action == ACTION_OIDC {
            check_provider_arn(p.require("OIDCProviderArn")?)?;
            check_oidc_token(p.require("OIDCToken")?, wall)?;
        }
        let life = self.lifetime.unwrap_or(duration);
        Ok(self.issue(role_arn, session, life, wall))
    }

    /// Credentials of an ECS instance's role (six hours, or the override), in STS's
    /// `Credentials` shape.
    pub(crate) fn issue_for_instance(&mut self, role_arn: &str, wall: OffsetDateTime) -> Value {
        let life = self.lifetime.unwrap_or(Duration::from_secs(6 * 3600));
        let mut body = self.issue(role_arn, "ecs-instance", life, wall);
        body["Credentials"].take()
    }

    fn issue(
        &mut self,
        role_arn: &str,
        session: &str,
        life: Duration,
        wall: OffsetDateTime,
    ) -> Value {
        let mut rng = rand::rng();
        let hex = |n: usize, rng: &mut rand::rngs::ThreadRng| -> String {
            (0..n)
                .map(|_| format!("{:02x}", rng.random::<u8>()))
                .collect()
        };
        let id = format!("STS.NT{}", hex(10, &mut rng));
        let secret = Zeroizing::new(hex(20, &mut rng));
        let token = Zeroizing::new(format!("CAIS{}", hex(48, &mut rng)));
        let expires = wall + life;
        // Whole seconds, as STS writes it.
        let expires = expires.replace_nanosecond(0).unwrap_or(expires);
        let account = role_arn.split(':').nth(3).unwrap_or("0");
        let role = role_arn.rsplit('/').next().unwrap_or("role");
        let body = json!({
            "Credentials": {
                "AccessKeyId": id,
                "AccessKeySecret": secret.as_str(),
                "SecurityToken": token.as_str(),
                "Expiration": sign::format_timestamp(expires),
            },
            "AssumedRoleUser": {
                "Arn": format!("{role_arn}/{session}"),
                "AssumedRoleId": format!("3{account}:{session}"),
            },
            "SourceIdentity": "",
            "RoleName": role,
        });
        self.issued.insert(
            id,
            Issued {
                secret,
                token,
                expires,
            },
        );
        body
    }
}

fn check_common(p: &Params) -> Result<(), ApiError> {
    if p.get("Version") != Some(VERSION) {
        return Err(refuse(
            400,
            "InvalidVersion",
            format!("Specified parameter Version is not valid: STS speaks {VERSION}."),
        ));
    }
    match p.get("Format") {
        Some(f) if f.eq_ignore_ascii_case("JSON") => Ok(()),
        _ => Err(refuse(
            400,
            "InvalidParameter.Format",
            "STS answers XML unless Format=JSON; this stand-in answers JSON only: send Format=JSON.",
        )),
    }
}

fn check_role_arn(arn: &str) -> Result<(), ApiError> {
    if arn_shaped(arn, "role/") {
        return Ok(());
    }
    Err(refuse(
        400,
        "InvalidParameter.RoleArn",
        "The parameter RoleArn is wrongly formed: acs:ram::<account>:role/<name>.",
    ))
}

fn check_provider_arn(arn: &str) -> Result<(), ApiError> {
    if arn_shaped(arn, "oidc-provider/") {
        return Ok(());
    }
    Err(refuse(
        400,
        "InvalidParameter.OIDCProviderArn",
        "The parameter OIDCProviderArn is wrongly formed: acs:ram::<account>:oidc-provider/<name>.",
    ))
}

/// `acs:ram::<digits>:<kind><name>`.
fn arn_shaped(arn: &str, kind: &str) -> bool {
    let Some(rest) = arn.strip_prefix("acs:ram::") else {
        return false;
    };
    let Some((account, resource)) = rest.split_once(':') else {
        return false;
    };
    !account.is_empty()
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource.strip_prefix(kind).is_some_and(|n| !n.is_empty())
}

fn check_session_name(name: &str) -> Result<(), ApiError> {
    let ok = (2..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'@' | b'_' | b'-'));
    if ok {
        return Ok(());
    }
    Err(refuse(
        400,
        "InvalidParameter.RoleSessionName",
        "The parameter RoleSessionName must be 2-64 characters of letters, digits, '.', '@', '_' and '-'.",
    ))
}

fn duration(p: &Params) -> Result<Duration, ApiError> {
    let Some(raw) = p.get("DurationSeconds") else {
        return Ok(Duration::from_secs(3600));
    };
    match raw.parse::<u64>() {
        Ok(n) if (900..=43200).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(refuse(
            400,
            "InvalidParameter.DurationSeconds",
            "The parameter DurationSeconds must be from 900 to the role's maximum session duration.",
        )),
    }
}

/// A JWT (three base64url parts, a JSON payload) whose `exp`, when present, is after `wall`.
fn check_oidc_token(token: &str, wall: OffsetDateTime) -> Result<(), ApiError> {
    let invalid = || {
        refuse(
            400,
            "AuthenticationFail.OIDCToken.Invalid",
            "The OIDC token is not a valid JWT.",
        )
    };
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [_, payload, _] = parts.as_slice() else {
        return Err(invalid());
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| invalid())?;
    let claims: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if let Some(exp) = claims.get("exp").and_then(Value::as_i64)
        && exp <= wall.unix_timestamp()
    {
        return Err(refuse(
            400,
            "AuthenticationFail.OIDCToken.Expired",
            "The OIDC token has expired.",
        ));
    }
    Ok(())
}

/// A short digest of an OIDC token for the log (the first 16 hex digits of its SHA-256).
pub(crate) fn token_digest(token: &str) -> String {
    sign::hex_sha256(token.trim().as_bytes())[..16].to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use base64::Engine as _;
    use serde_json::Value;

    use crate::aliyun::sign;
    use crate::emulator::{
        DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, Emulator, EmulatorConfig,
    };

    async fn emulator(lifetime: Option<Duration>) -> Emulator {
        let cfg = EmulatorConfig {
            sts_lifetime: lifetime,
            ..EmulatorConfig::with_domains(["a.example.com"])
        };
        Emulator::start("127.0.0.1:0".parse().unwrap(), cfg)
            .await
            .unwrap()
    }

    fn jwt(exp: i64) -> String {
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.sig",
            b64(serde_json::json!({"alg": "RS256"})),
            b64(serde_json::json!({"exp": exp}))
        )
    }

    fn oidc_params(token: &str) -> Vec<(String, String)> {
        [
            ("Action", "AssumeRoleWithOIDC"),
            ("Format", "JSON"),
            ("Version", super::VERSION),
            ("RoleArn", "acs:ram::123:role/r"),
            ("OIDCProviderArn", "acs:ram::123:oidc-provider/p"),
            ("RoleSessionName", "test-session"),
            ("DurationSeconds", "900"),
            ("OIDCToken", token),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    async fn post(emu: &Emulator, params: &[(String, String)]) -> (u16, Value) {
        let body = sign::encode_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let resp = test_http()
            .post(emu.endpoint())
            .header("content-type", sign::FORM_CONTENT_TYPE)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// A plain-http client (reqwest here has no default crypto provider: build it as
    /// certrotd does).
    fn test_http() -> reqwest::Client {
        crate::aliyun::http::build(
            None,
            Duration::from_secs(5),
            crate::aliyun::http::Proxies::Never,
            true,
        )
        .expect("client")
    }

    fn code(v: &Value) -> &str {
        v["Code"].as_str().unwrap_or("")
    }

    fn with(mut p: Vec<(String, String)>, key: &str, value: Option<&str>) -> Vec<(String, String)> {
        p.retain(|(k, _)| k != key);
        if let Some(v) = value {
            p.push((key.to_string(), v.to_string()));
        }
        p
    }

    #[tokio::test]
    async fn oidc_exchange_issues_credentials_and_refuses_what_sts_refuses() {
        let emu = emulator(None).await;
        let good = jwt(i64::MAX / 2);
        let (status, v) = post(&emu, &oidc_params(&good)).await;
        assert_eq!(status, 200, "{v}");
        let c = &v["Credentials"];
        assert!(c["AccessKeyId"].as_str().unwrap().starts_with("STS."));
        assert!(c["SecurityToken"].as_str().unwrap().starts_with("CAIS"));
        assert!(c["Expiration"].as_str().unwrap().ends_with('Z'));
        let cases = [
            (
                with(oidc_params(&good), "Version", Some("2018-05-10")),
                "InvalidVersion",
            ),
            (
                with(oidc_params(&good), "Format", None),
                "InvalidParameter.Format",
            ),
            (
                with(oidc_params(&good), "RoleArn", Some("arn:aws:iam::1:role/x")),
                "InvalidParameter.RoleArn",
            ),
            (
                with(oidc_params(&good), "RoleSessionName", Some("a")),
                "InvalidParameter.RoleSessionName",
            ),
            (
                with(oidc_params(&good), "RoleSessionName", Some("has space")),
                "InvalidParameter.RoleSessionName",
            ),
            (
                with(oidc_params(&good), "DurationSeconds", Some("60")),
                "InvalidParameter.DurationSeconds",
            ),
            (
                with(
                    oidc_params(&good),
                    "OIDCProviderArn",
                    Some("acs:ram::1:role/x"),
                ),
                "InvalidParameter.OIDCProviderArn",
            ),
            (
                oidc_params("not-a-jwt"),
                "AuthenticationFail.OIDCToken.Invalid",
            ),
            (oidc_params(&jwt(1)), "AuthenticationFail.OIDCToken.Expired"),
            (
                with(oidc_params(&good), "OIDCToken", None),
                "MissingParameter",
            ),
        ];
        for (params, want) in cases {
            let (status, v) = post(&emu, &params).await;
            assert_eq!((status, code(&v)), (400, want), "{v}");
            assert_eq!(v["HostId"], "sts.aliyuncs.com", "{v}");
        }
        let digests: Vec<_> = emu
            .log()
            .iter()
            .filter_map(|e| e.oidc_token_digest.clone())
            .collect();
        assert_eq!(digests[0], super::token_digest(&good));
        assert!(
            !digests.iter().any(|d| good.contains(d.as_str())),
            "a digest, not the token"
        );
        emu.shutdown().await;
    }

    #[tokio::test]
    async fn issued_credentials_sign_cdn_calls_until_they_expire() {
        // Issued credentials live 3 s; their Expiration is cut to the whole second, so they
        // are good for at least 2 s, room for the calls below on a loaded machine.
        let emu = emulator(Some(Duration::from_secs(3))).await;
        // AssumeRole, signed v1 with the emulator's key.
        let mut p = sign::common_params(
            DEFAULT_ACCESS_KEY_ID,
            time::OffsetDateTime::now_utc(),
            "n1",
            None,
        );
        for (k, v) in p.iter_mut() {
            if k == "Version" {
                *v = super::VERSION.to_string();
            }
        }
        p.extend(
            [
                ("Action", "AssumeRole"),
                ("RoleArn", "acs:ram::1:role/r"),
                ("RoleSessionName", "s1"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let mut bad = p.clone();
        bad.push(("Signature".to_string(), sign::sign("POST", "wrong", &p)));
        let (status, v) = post(&emu, &bad).await;
        assert_eq!((status, code(&v)), (400, "SignatureDoesNotMatch"), "{v}");
        let mut p2 = p.clone();
        for (k, v) in p2.iter_mut() {
            if k == "SignatureNonce" {
                *v = "n2".to_string();
            }
        }
        let sig = sign::sign("POST", DEFAULT_ACCESS_KEY_SECRET, &p2);
        p2.push(("Signature".to_string(), sig));
        let (status, v) = post(&emu, &p2).await;
        assert_eq!(status, 200, "{v}");
        let id = v["Credentials"]["AccessKeyId"]
            .as_str()
            .unwrap()
            .to_string();
        let secret = v["Credentials"]["AccessKeySecret"]
            .as_str()
            .unwrap()
            .to_string();
        let token = v["Credentials"]["SecurityToken"]
            .as_str()
            .unwrap()
            .to_string();
        let call = |nonce: &str, token: Option<&str>| {
            let mut p = sign::common_params(&id, time::OffsetDateTime::now_utc(), nonce, token);
            p.push(("Action".to_string(), "DescribeUserDomains".to_string()));
            let sig = sign::sign("POST", &secret, &p);
            p.push(("Signature".to_string(), sig));
            p
        };
        let (status, v) = post(&emu, &call("c1", Some(&token))).await;
        assert_eq!(status, 200, "{v}");
        let (_, v) = post(&emu, &call("c2", None)).await;
        assert_eq!(code(&v), "MissingSecurityToken");
        let (_, v) = post(&emu, &call("c3", Some("CAISother"))).await;
        assert_eq!(code(&v), "InvalidSecurityToken.MismatchWithAccessKey");
        tokio::time::sleep(Duration::from_millis(3200)).await;
        let (status, v) = post(&emu, &call("c4", Some(&token))).await;
        assert_eq!((status, code(&v)), (400, super::EXPIRED), "{v}");
        emu.shutdown().await;
    }

    #[tokio::test]
    async fn the_metadata_service_wants_a_session_token() {
        let emu = emulator(None).await;
        let http = test_http();
        let base = emu.endpoint();
        let creds = format!("{base}/latest/meta-data/ram/security-credentials/");
        let put = http
            .put(format!("{base}/latest/api/token"))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status().as_u16(), 400, "no TTL header");
        let get = http.get(&creds).send().await.unwrap();
        assert_eq!(get.status().as_u16(), 401, "IMDSv1 is refused");
        let token = http
            .put(format!("{base}/latest/api/token"))
            .header("X-aliyun-ecs-metadata-token-ttl-seconds", "60")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let get = |path: String| {
            http.get(path)
                .header("X-aliyun-ecs-metadata-token", token.clone())
                .send()
        };
        let role = get(creds.clone()).await.unwrap().text().await.unwrap();
        assert_eq!(role, super::super::imds::ROLE);
        let v: Value = get(format!("{creds}{role}"))
            .await
            .unwrap()
            .bytes()
            .await
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap();
        assert_eq!(v["Code"], "Success");
        assert!(v["AccessKeyId"].as_str().unwrap().starts_with("STS."));
        assert_eq!(
            get(format!("{creds}other-role"))
                .await
                .unwrap()
                .status()
                .as_u16(),
            404
        );
        let labels: Vec<String> = emu.log().iter().map(|e| e.action.clone()).collect();
        assert!(labels.iter().all(|l| l.starts_with("imds:")), "{labels:?}");
        emu.shutdown().await;
    }
}
