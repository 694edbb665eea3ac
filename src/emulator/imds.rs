//! The emulator's ECS instance metadata service (IMDSv2, hardened mode) and a credentials
//! URI stand-in, both handing out credentials issued by the emulator's STS:
//! - `PUT /latest/api/token` with `X-aliyun-ecs-metadata-token-ttl-seconds` (1-21600) → a
//!   session token (text); without the header 400;
//! - `GET /latest/meta-data/ram/security-credentials/` → the role name (text);
//! - `GET /latest/meta-data/ram/security-credentials/<role>` → `Code`, `AccessKeyId`,
//!   `AccessKeySecret`, `SecurityToken`, `Expiration`, `LastUpdated` (JSON); an unknown role
//!   404. Each GET needs `X-aliyun-ecs-metadata-token` with a live session token (else 401,
//!   as hardened mode answers);
//! - `GET /emulator/credentials-uri` → the same JSON (what `ALIBABA_CLOUD_CREDENTIALS_URI`
//!   points a client at).
//!
//! Invariant: session tokens live only here; the log names the path, never a token.

use rand::RngExt;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::sts::Sts;
use super::{Incoming, Reply};
use crate::aliyun::sign;

/// The RAM role the emulated instance has.
pub(crate) const ROLE: &str = "certrotd-emulator-role";
const ROLE_ARN: &str = "acs:ram::1234567890123456:role/certrotd-emulator-role";
pub(crate) const TOKEN_PATH: &str = "/latest/api/token";
pub(crate) const CREDENTIALS_PATH: &str = "/latest/meta-data/ram/security-credentials/";
pub(crate) const URI_PATH: &str = "/emulator/credentials-uri";

/// Session tokens handed out and when they expire.
#[derive(Default)]
pub(crate) struct Imds {
    tokens: Vec<(Zeroizing<String>, OffsetDateTime)>,
}

/// Is `path` the metadata service's or the credentials URI's?
pub(crate) fn is_metadata_path(path: &str) -> bool {
    path.starts_with("/latest/") || path == URI_PATH
}

/// A short label of the request for the log's `action`.
pub(crate) fn label(path: &str) -> &'static str {
    match path {
        TOKEN_PATH => "imds:token",
        CREDENTIALS_PATH => "imds:role",
        URI_PATH => "credentials-uri",
        p if p.starts_with(CREDENTIALS_PATH) => "imds:credentials",
        _ => "imds:other",
    }
}

fn text(status: u16, body: &str) -> Reply {
    Reply::Text {
        status,
        body: body.as_bytes().to_vec(),
    }
}

impl Imds {
    pub(crate) fn answer(&mut self, req: &Incoming, sts: &mut Sts, wall: OffsetDateTime) -> Reply {
        if req.path == URI_PATH {
            return match req.method.as_str() {
                "GET" => credentials(sts, wall),
                _ => text(405, "Method Not Allowed"),
            };
        }
        if req.path == TOKEN_PATH {
            return match req.method.as_str() {
                "PUT" => self.new_token(req, wall),
                _ => text(405, "Method Not Allowed"),
            };
        }
        if req.method != "GET" {
            return text(405, "Method Not Allowed");
        }
        let live = req
            .header("x-aliyun-ecs-metadata-token")
            .and_then(|t| self.tokens.iter().find(|(known, _)| known.as_str() == t))
            .is_some_and(|(_, expires)| *expires > wall);
        if !live {
            return text(401, "Unauthorized");
        }
        match req.path.strip_prefix(CREDENTIALS_PATH) {
            Some("") => text(200, ROLE),
            Some(ROLE) => credentials(sts, wall),
            Some(_) => text(404, "Not Found"),
            None => text(404, "Not Found"),
        }
    }

    fn new_token(&mut self, req: &Incoming, wall: OffsetDateTime) -> Reply {
        let ttl = req
            .header("x-aliyun-ecs-metadata-token-ttl-seconds")
            .and_then(|v| v.trim().parse::<i64>().ok());
        let Some(ttl) = ttl.filter(|t| (1..=21600).contains(t)) else {
            return text(400, "Bad Request");
        };
        self.tokens.retain(|(_, expires)| *expires > wall);
        let mut rng = rand::rng();
        let token: String = (0..24)
            .map(|_| format!("{:02x}", rng.random::<u8>()))
            .collect();
        self.tokens.push((
            Zeroizing::new(token.clone()),
            wall + time::Duration::seconds(ttl),
        ));
        text(200, &token)
    }
}

/// Fresh credentials of the instance's role, in the metadata service's shape.
fn credentials(sts: &mut Sts, wall: OffsetDateTime) -> Reply {
    let issued = sts.issue_for_instance(ROLE_ARN, wall);
    let body = serde_json::json!({
        "AccessKeyId": issued["AccessKeyId"],
        "AccessKeySecret": issued["AccessKeySecret"],
        "Expiration": issued["Expiration"],
        "SecurityToken": issued["SecurityToken"],
        "LastUpdated": sign::format_timestamp(wall),
        "Code": "Success",
    });
    Reply::Json {
        status: 200,
        request_id: String::new(),
        body: serde_json::to_vec(&body).unwrap_or_default(),
    }
}
