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
