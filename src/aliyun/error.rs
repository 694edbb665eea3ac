//! Errors of one Alibaba Cloud API call, and their classification — in one place.
//!
//! Owns: [`ApiError`] (transport, timeout, API refusal, non-JSON body, malformed success),
//! [`classify`] (by `Code` first, HTTP status second, the call's domain count third) into a
//! [`Class`], the advice each class gives, the parsing of the retry hint and `Date` headers,
//! and the decoding of an error body (which falls back to the HTTP status whenever the body
//! is unusable: not JSON, cut off, of the wrong shape or too large to read).
//!
//! Invariants: every text taken from a response is made safe when the error is built, by the
//! rules of [`crate::untrusted`]: identifiers (`Code`, `RequestId`, `HostId`) only when they
//! match a strict pattern, else a placeholder; free text (message, `Recommend`, an HTML
//! excerpt, a transport error's text) stripped of anything that could be key material,
//! whatever its spacing or encoding, with no control characters. So no `Display`, `Debug` or
//! log line of an `ApiError` can carry the server's echoed string-to-sign, a PEM block or
//! anything that looks like key material, nor break a log line. `SignatureDoesNotMatch`
//! echoes the whole string-to-sign, `SSLPri` included; that is why this matters.

use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;
use time::macros::format_description;

use crate::untrusted;

/// Alibaba's documented maximum of domains per `BatchSetCdnDomainServerCertificate` call.
/// A 400 `InvalidParameter*` refusal of a larger call is taken as a size refusal.
pub(crate) const DOCUMENTED_MAX_DOMAINS_PER_CALL: usize = 10;

/// Longest API message kept (characters), after redaction.
const MAX_MESSAGE_CHARS: usize = 400;
/// Longest excerpt of a non-JSON body kept (characters).
const MAX_EXCERPT_CHARS: usize = 160;
/// Server retry hints above this are clamped (a hint of hours is not believed).
const MAX_RETRY_HINT: Duration = Duration::from_secs(600);

/// What the caller should do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Temporary: retry with backoff, freshly signed (transport, timeout, 5xx, throttling,
    /// `ServiceUnavailable`, `InternalError`, `UnknownError`, `ServiceBusy`).
    Retryable,
    /// `InvalidTimeStamp.Expired`: the local clock is off; retrying will not help.
    Clock,
    /// The AccessKey is wrong, disabled or lacks permission: stop, do not retry.
    Credentials,
    /// One domain is unknown, offline or locked; the other domains of a batch can proceed.
    Domain,
    /// Alibaba refused the certificate or the key.
    Certificate,
    /// Too many domains in one call: retry smaller.
    BatchSize,
    /// A configuration problem on this side (TLS trust: the server's certificate does not
    /// verify): stop, do not retry.
    Config,
    /// Anything else: not retried.
    Other,
}

impl Class {
    /// Whether the same call may be tried again (freshly signed).
    pub(crate) fn is_retryable(self) -> bool {
        self == Class::Retryable
    }

    /// What to do, for a person reading the error.
    pub(crate) fn advice(self) -> &'static str {
        match self {
            Class::Retryable => "this is temporary; certrotd retries it with backoff",
            Class::Clock => {
                "the request timestamp was refused: set this host's clock right \
                 (enable NTP, e.g. `timedatectl set-ntp true`) and run again"
            }
            Class::Credentials => {
                "stopping without retry: check the AccessKey ID and secret (`certrotd check` \
                 shows which source was used), that the key is enabled, and that the RAM user \
                 may call the CDN certificate actions (e.g. policy AliyunCDNFullAccess)"
            }
            Class::Domain => {
                "check that the domain exists on this account's CDN, is online and not locked, \
                 or remove it from `[cdn] domains`"
            }
            Class::Certificate => {
                "Alibaba refused the certificate or key: run `certrotd check` on the lineage \
                 (chain order, key match, validity dates)"
            }
            Class::BatchSize => {
                "too many domains in one call: certrotd retries with fewer; lower \
                 `max_domains_per_call` to avoid this"
            }
            Class::Config => {
                "stopping without retry: fix the configuration named in the message and run \
                 again"
            }
            Class::Other => "see the message and Recommend link; report it if it persists",
        }
    }
}

/// Classifies by `Code` first, HTTP status second. `domains` is how many domains the call
/// carried (0 for calls that carry none); it decides whether a 400 `InvalidParameter*` is a
/// size refusal. `code` and `status` both `None` means the request never got an answer.
pub(crate) fn classify(code: Option<&str>, status: Option<u16>, domains: usize) -> Class {
    if let Some(class) = code.and_then(|c| classify_code(c, status, domains)) {
        return class;
    }
    match status {
        None => Class::Retryable,
        Some(s) if s >= 500 || s == 429 || s == 408 => Class::Retryable,
        Some(401 | 403) => Class::Credentials,
        Some(_) => Class::Other,
    }
}

fn classify_code(code: &str, status: Option<u16>, domains: usize) -> Option<Class> {
    const RETRYABLE: &[&str] = &[
        "ServiceUnavailable",
        "InternalError",
        "UnknownError",
        "ServiceBusy",
        "SignatureNonceUsed",
    ];
    const CREDENTIALS: &[&str] = &[
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "InvalidAccessKeyId",
        "InvalidAccessKeySecret",
        "InvalidSecurityToken",
        "MissingSecurityToken",
        "Forbidden",
        "NoPermission",
    ];
    const DOMAIN: &[&str] = &["InvalidDomain", "DomainInProtectedMode", "DomainNotExist"];
    const CERTIFICATE: &[&str] = &[
        "Certificate",
        "InvalidCert",
        "InvalidSSLPri",
        "InvalidSSLPub",
        "SSLPri",
        "SSLPub",
    ];
    let has = |list: &[&str]| list.iter().any(|p| code.starts_with(p));
    let class = if code.starts_with("Throttling") || RETRYABLE.contains(&code) {
        Class::Retryable
    } else if code == "InvalidTimeStamp.Expired" {
        Class::Clock
    } else if code == "InvalidParameter.DomainNameOverLimit"
        || (status == Some(400)
            && code.starts_with("InvalidParameter")
            && domains > DOCUMENTED_MAX_DOMAINS_PER_CALL)
    {
        Class::BatchSize
    } else if has(CREDENTIALS) {
        Class::Credentials
    } else if has(DOMAIN) {
        Class::Domain
    } else if has(CERTIFICATE) {
        Class::Certificate
    } else {
        return None;
    };
    Some(class)
}

/// What the client knows about a response besides its body.
#[derive(Clone, Debug, Default)]
pub(crate) struct ResponseMeta {
    pub(crate) status: u16,
    /// From `x-acs-retry-after` (milliseconds) or `Retry-After` (seconds).
    pub(crate) retry_after: Option<Duration>,
    /// The response's `Date` header.
    pub(crate) server_date: Option<OffsetDateTime>,
    /// `server_date` minus the local clock when the response arrived (positive: the local
    /// clock is behind).
    pub(crate) clock_offset: Option<time::Duration>,
}

/// An API refusal with a JSON error body. Every text field is redacted.
#[derive(Clone, Debug)]
pub struct ApiFailure {
    pub(crate) action: &'static str,
    pub(crate) status: u16,
    pub(crate) code: Option<String>,
    pub(crate) message: String,
    pub(crate) request_id: Option<String>,
    pub host_id: Option<String>,
    pub(crate) recommend: Option<String>,
    pub(crate) retry_after: Option<Duration>,
    pub server_date: Option<OffsetDateTime>,
    pub(crate) clock_offset: Option<time::Duration>,
    /// How many domains the call carried.
    pub(crate) domains: usize,
    /// The call's domain the message names (or the call's only domain).
    pub(crate) domain: Option<String>,
}

impl ApiFailure {
    /// The `Code` says the caller was throttled (`Throttling*`).
    pub(crate) fn is_throttling(&self) -> bool {
        self.code
            .as_deref()
            .is_some_and(|c| c.starts_with("Throttling"))
    }

    pub(crate) fn class(&self) -> Class {
        classify(self.code.as_deref(), Some(self.status), self.domains)
    }
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let class = self.class();
        write!(
            f,
            "{} refused by Alibaba Cloud (HTTP {}, Code {}",
            self.action,
            self.status,
            self.code.as_deref().unwrap_or("<none>")
        )?;
        if let Some(id) = &self.request_id {
            write!(f, ", RequestId {id}")?;
        }
        write!(f, "): {}", self.message)?;
        if let Some(domain) = &self.domain {
            write!(f, " [domain {domain}]")?;
        }
        if class == Class::Clock
            && let Some(offset) = self.clock_offset
        {
            write!(f, "; {}", describe_offset(offset))?;
        }
        write!(f, "; {}", class.advice())?;
        if let Some(rec) = &self.recommend {
            write!(f, " (Alibaba's diagnosis: {rec})")?;
        }
        Ok(())
    }
}

/// "this host's clock is 1234 s behind the server's" (from the `Date` header).
pub(crate) fn describe_offset(offset: time::Duration) -> String {
    let secs = offset.whole_seconds();
    let way = if secs >= 0 { "behind" } else { "ahead of" };
    format!(
        "this host's clock is {} s {way} the API server's (response Date header)",
        secs.unsigned_abs()
    )
}

/// The metrics' `result` label of one attempt: `ok`, the API's `Code` (it passed
/// `untrusted::code` when the error was built), `transport` when no answer came, else the
/// error's kind (`tls-trust` for a server certificate that does not verify; `no-credentials`
/// never reaches an HTTP attempt, but would be labelled so).
pub(crate) fn attempt_label<T>(outcome: &Result<T, ApiError>) -> &str {
    match outcome {
        Ok(_) => "ok",
        Err(ApiError::Transport { .. } | ApiError::Timeout { .. }) => "transport",
        Err(e) => e.code().unwrap_or(e.kind()),
    }
}

/// One failed attempt of one API call. Texts are redacted at construction.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "{action}: cannot reach {endpoint}: {detail}; check the network, DNS, proxy and \
         firewall and the `endpoint` setting (certrotd retries this)"
    )]
    Transport {
        action: &'static str,
        endpoint: String,
        detail: String,
    },
    #[error(
        "{action}: no complete answer from {endpoint} within {} s (the `timeout` setting); \
         certrotd retries this — raise `timeout` if the network is slow",
        timeout.as_secs_f64()
    )]
    Timeout {
        action: &'static str,
        endpoint: String,
        timeout: Duration,
    },
    #[error(
        "{action}: the TLS certificate of {endpoint} does not verify ({detail}); {}; \
         certrotd does not retry this",
        match ca_file {
            Some(path) => format!("it is not issued for this host by a root of the built-in web PKI roots or of [aliyun] ca_file = {} — check the endpoint and that ca_file holds the root of the proxy or server that answers", path.display()),
            None => "it is not issued for this host by a root of the built-in web PKI roots; check the endpoint, and if a TLS-intercepting proxy answers, add its root CA (PEM) with [aliyun] ca_file".to_string(),
        }
    )]
    TlsTrust {
        action: &'static str,
        endpoint: String,
        ca_file: Option<std::path::PathBuf>,
        detail: String,
    },
    #[error("{action}: no usable Alibaba Cloud credentials: {detail}")]
    NoCredentials {
        action: &'static str,
        detail: String,
        /// A fetch that may work later (a network failure, a busy STS).
        temporary: bool,
    },
    #[error("{0}")]
    Api(Box<ApiFailure>),
    #[error(
        "{action}: HTTP {status} with a body that is not JSON (starts: {excerpt:?}) — a proxy \
         or gateway answered instead of the API; check the `endpoint` setting and any proxy{}",
        if classify(None, Some(*status), *domains).is_retryable() { " (certrotd retries this)" } else { "" }
    )]
    NonJson {
        action: &'static str,
        status: u16,
        excerpt: String,
        retry_after: Option<Duration>,
        domains: usize,
    },
    #[error(
        "{action}: HTTP {status} but the answer does not have the documented shape \
         ({detail}); is `endpoint` the CDN API (https://cdn.aliyuncs.com)?"
    )]
    BadResponse {
        action: &'static str,
        status: u16,
        detail: String,
    },
}

impl ApiError {
    /// Builds the error for a non-2xx response from its body: a JSON error body becomes
    /// [`ApiError::Api`], anything else [`ApiError::NonJson`]. `call_domains` are the domains
    /// the call carried (empty when none).
    pub(crate) fn from_response(
        action: &'static str,
        meta: ResponseMeta,
        body: &[u8],
        call_domains: &[String],
    ) -> ApiError {
        // A JSON object whose text fields are read one by one: a field of the wrong type
        // counts as absent, so an odd body still classifies by its status.
        let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body) else {
            return ApiError::NonJson {
                action,
                status: meta.status,
                excerpt: excerpt(body),
                retry_after: meta.retry_after,
                domains: call_domains.len(),
            };
        };
        let text = |name: &str| fields.get(name).and_then(|v| v.as_str());
        let message = untrusted::redact(text("Message").unwrap_or(""), MAX_MESSAGE_CHARS);
        let domain = named_domain(&message, call_domains);
        ApiError::Api(Box::new(ApiFailure {
            action,
            status: meta.status,
            code: text("Code").map(untrusted::code),
            message,
            request_id: text("RequestId").map(untrusted::request_id),
            host_id: text("HostId").map(untrusted::host_id),
            recommend: text("Recommend").map(|r| untrusted::redact(r, MAX_MESSAGE_CHARS)),
            retry_after: meta.retry_after,
            server_date: meta.server_date,
            clock_offset: meta.clock_offset,
            domains: call_domains.len(),
            domain,
        }))
    }

    /// A request that got no answer (connection refused, reset, TLS failure, …).
    pub(crate) fn transport(action: &'static str, endpoint: &str, detail: &str) -> ApiError {
        ApiError::Transport {
            action,
            endpoint: endpoint.to_string(),
            detail: untrusted::redact(detail, MAX_MESSAGE_CHARS),
        }
    }

    /// A server certificate that does not verify: a trust configuration problem.
    pub(crate) fn tls_trust(
        action: &'static str,
        endpoint: &str,
        ca_file: Option<&std::path::Path>,
        detail: &str,
    ) -> ApiError {
        ApiError::TlsTrust {
            action,
            endpoint: endpoint.to_string(),
            ca_file: ca_file.map(std::path::Path::to_path_buf),
            detail: untrusted::redact(detail, MAX_MESSAGE_CHARS),
        }
    }

    /// The credential chain could not give credentials to sign with.
    pub(crate) fn no_credentials(
        action: &'static str,
        e: &crate::aliyun::credentials::CredentialsError,
    ) -> ApiError {
        ApiError::NoCredentials {
            action,
            detail: e.to_string(),
            temporary: e.is_temporary(),
        }
    }

    /// A 2xx answer that does not decode as documented.
    pub(crate) fn bad_response(action: &'static str, status: u16, detail: &str) -> ApiError {
        ApiError::BadResponse {
            action,
            status,
            detail: untrusted::redact(detail, MAX_MESSAGE_CHARS),
        }
    }

    /// The class that decides retry / stop / split.
    pub fn class(&self) -> Class {
        match self {
            ApiError::Transport { .. } | ApiError::Timeout { .. } => Class::Retryable,
            ApiError::TlsTrust { .. } => Class::Config,
            ApiError::NoCredentials { temporary, .. } => match temporary {
                true => Class::Retryable,
                false => Class::Credentials,
            },
            ApiError::Api(f) => f.class(),
            ApiError::NonJson {
                status, domains, ..
            } => classify(None, Some(*status), *domains),
            ApiError::BadResponse { .. } => Class::Other,
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.class().is_retryable()
    }

    /// Kebab-case label for logs, the status table, the state file and metrics: the one
    /// label set of an API error (a class's label is its errors' label; retryable errors
    /// say which kind of temporary failure they were).
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::Transport { .. } => "transport",
            ApiError::Timeout { .. } => "timeout",
            ApiError::TlsTrust { .. } => "tls-trust",
            ApiError::NoCredentials { .. } => "no-credentials",
            ApiError::NonJson { .. } => "non-json-response",
            ApiError::BadResponse { .. } => "bad-response",
            ApiError::Api(f) => match f.class() {
                Class::Retryable if f.is_throttling() => "throttled",
                Class::Retryable => "server-busy",
                Class::Clock => "clock-skew",
                Class::Credentials => "credentials",
                Class::Domain => "domain",
                Class::Certificate => "certificate",
                Class::BatchSize => "batch-size",
                Class::Config => "config",
                Class::Other => "api-error",
            },
        }
    }

    /// The server's hint of how long to wait before retrying.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Api(f) => f.retry_after,
            ApiError::NonJson { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// HTTP status, when an answer came.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Api(f) => Some(f.status),
            ApiError::NonJson { status, .. } | ApiError::BadResponse { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// The answer says the called action does not exist (`InvalidAction.NotFound`, or any
    /// `InvalidAction*` code): the call has been retired, not refused.
    pub(crate) fn action_gone(&self) -> bool {
        self.code().is_some_and(|c| c.starts_with("InvalidAction"))
    }

    /// The API's error `Code`, when the body carried one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Api(f) => f.code.as_deref(),
            _ => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn request_id(&self) -> Option<&str> {
        match self {
            ApiError::Api(f) => f.request_id.as_deref(),
            _ => None,
        }
    }

    /// For an API refusal: the call's domain that the message names (as a whole word), or
    /// the call's only domain. `None` when the message names several or none of several.
    /// Meaningful for [`Class::Domain`] and [`Class::Certificate`].
    pub fn domain(&self) -> Option<&str> {
        match self {
            ApiError::Api(f) => f.domain.as_deref(),
            _ => None,
        }
    }

    /// For [`Class::BatchSize`]: the most domains per call the refusal says are allowed,
    /// when its message names it (see [`named_limit`]).
    pub(crate) fn batch_limit(&self) -> Option<usize> {
        match self {
            ApiError::Api(f) if f.class() == Class::BatchSize => named_limit(&f.message),
            _ => None,
        }
    }

    /// For [`Class::Clock`]: server time minus local time, from the `Date` header.
    pub fn clock_offset(&self) -> Option<time::Duration> {
        match self {
            ApiError::Api(f) => f.clock_offset,
            _ => None,
        }
    }
}

/// The limit a size refusal's message names: the number after "at most" or "up to"
/// (any case), or before "domains are allowed"/"domains allowed". The emulator says "The
/// call names 3 domains; at most 2 are allowed in one call."; `None` when no such number
/// (or 0) is found.
pub(crate) fn named_limit(message: &str) -> Option<usize> {
    let lower = message.to_ascii_lowercase();
    let after = |marker: &str| {
        lower.match_indices(marker).find_map(|(i, m)| {
            let rest = lower[i + m.len()..].trim_start();
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<usize>().ok()
        })
    };
    let before = |marker: &str| {
        lower.match_indices(marker).find_map(|(i, _)| {
            let head = lower[..i].trim_end();
            let start = head
                .char_indices()
                .rev()
                .take_while(|(_, c)| c.is_ascii_digit())
                .last()
                .map(|(at, _)| at)?;
            head[start..].parse::<usize>().ok()
        })
    };
    after("at most")
        .or_else(|| after("up to"))
        .or_else(|| after("maximum of"))
        .or_else(|| before("domains are allowed"))
        .or_else(|| before("domains allowed"))
        .filter(|&n| n > 0)
}

/// The call's domain named in `message`: the single one found as a whole word, or the
/// call's only domain. `None` when none or several are named.
fn named_domain(message: &str, call_domains: &[String]) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    let mut found = call_domains
        .iter()
        .filter(|d| !d.is_empty() && contains_word(&lower, &d.to_ascii_lowercase()));
    match (found.next(), found.next()) {
        (Some(d), None) => Some(d.clone()),
        (Some(_), Some(_)) => None,
        (None, _) => match call_domains {
            [only] => Some(only.clone()),
            _ => None,
        },
    }
}

/// `needle` occurs in `hay` not preceded or followed by a hostname character.
fn contains_word(hay: &str, needle: &str) -> bool {
    let is_host = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-');
    let is_host_or_dot = |c: Option<char>| is_host(c) || c == Some('.');
    hay.match_indices(needle).any(|(i, m)| {
        let before = hay[..i].chars().next_back();
        let after_text = &hay[i + m.len()..];
        let mut after = after_text.chars();
        let first_after = after.next();
        // A trailing '.' ends a sentence unless a hostname label follows it.
        let after_ok = match first_after {
            Some('.') => !is_host(after.next()),
            c => !is_host(c),
        };
        !is_host_or_dot(before) && after_ok
    })
}

/// Parses the retry hint: `x-acs-retry-after` (milliseconds, Alibaba's SDK convention) wins
/// over `Retry-After` (seconds). Zero, negative or unparsable hints are ignored; long ones
/// are clamped to 10 minutes.
pub(crate) fn parse_retry_after(
    x_acs: Option<&str>,
    retry_after: Option<&str>,
) -> Option<Duration> {
    let ms = x_acs
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis);
    let secs = || {
        retry_after
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&s| s > 0)
            .map(Duration::from_secs)
    };
    ms.or_else(secs).map(|d| d.min(MAX_RETRY_HINT))
}

/// Parses an HTTP `Date` header (`Tue, 15 Nov 1994 08:12:31 GMT`).
pub(crate) fn parse_http_date(value: &str) -> Option<OffsetDateTime> {
    let fmt = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(value.trim(), &fmt)
        .ok()
        .map(|t| t.assume_utc())
}

/// A short readable excerpt of a non-JSON body: tags removed, whitespace collapsed,
/// redacted.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut plain = String::with_capacity(text.len().min(4096));
    let mut in_tag = false;
    for c in text.chars().take(8192) {
        match c {
            '<' => {
                in_tag = true;
                plain.push(' ');
            }
            '>' if in_tag => in_tag = false,
            c if !in_tag => plain.push(c),
            _ => {}
        }
    }
    untrusted::redact(&plain, MAX_EXCERPT_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(status: u16) -> ResponseMeta {
        ResponseMeta {
            status,
            ..ResponseMeta::default()
        }
    }

    fn api(status: u16, code: &str, message: &str, domains: &[&str]) -> ApiError {
        let body = serde_json::json!({
            "RequestId": "0F2B1C3D-AAAA-BBBB-CCCC-0123456789AB",
            "HostId": "cdn.aliyuncs.com",
            "Code": code,
            "Message": message,
            "Recommend": "https://api.aliyun.com/troubleshoot?q=X&product=Cdn",
        });
        let domains: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
        ApiError::from_response(
            "BatchSetCdnDomainServerCertificate",
            meta(status),
            body.to_string().as_bytes(),
            &domains,
        )
    }

    #[test]
    fn classify_by_code_first() {
        let cases: &[(&str, u16, Class)] = &[
            ("Throttling", 400, Class::Retryable),
            ("Throttling.User", 400, Class::Retryable),
            ("Throttling.Api", 400, Class::Retryable),
            ("Throttling.Whatever", 400, Class::Retryable),
            ("ServiceUnavailable", 503, Class::Retryable),
            ("InternalError", 500, Class::Retryable),
            ("UnknownError", 500, Class::Retryable),
            ("ServiceBusy", 403, Class::Retryable),
            ("InvalidTimeStamp.Expired", 400, Class::Clock),
            ("SignatureDoesNotMatch", 400, Class::Credentials),
            ("InvalidAccessKeyId.NotFound", 404, Class::Credentials),
            ("InvalidAccessKeyId.Inactive", 400, Class::Credentials),
            ("Forbidden.RAM", 403, Class::Credentials),
            ("Forbidden.AccessKeyDisabled", 403, Class::Credentials),
            ("InvalidSecurityToken.Expired", 400, Class::Credentials),
            ("InvalidDomain.NotFound", 404, Class::Domain),
            ("InvalidDomain.Offline", 400, Class::Domain),
            ("DomainInProtectedMode", 400, Class::Domain),
            ("Certificate.FormatError", 400, Class::Certificate),
            ("Certificate.MissMatch", 400, Class::Certificate),
            ("Certificate.Expired", 400, Class::Certificate),
            ("InvalidSSLPri", 400, Class::Certificate),
            ("InvalidSSLPub", 400, Class::Certificate),
            (
                "InvalidParameter.DomainNameOverLimit",
                400,
                Class::BatchSize,
            ),
            ("InvalidParameter", 400, Class::Other),
            ("MissingParameter", 400, Class::Other),
        ];
        for (code, status, want) in cases {
            assert_eq!(classify(Some(code), Some(*status), 3), *want, "{code}");
        }
    }

    #[test]
    fn throttling_is_retryable_whatever_the_status() {
        for status in [400, 403, 429, 503] {
            assert_eq!(
                classify(Some("Throttling.User"), Some(status), 1),
                Class::Retryable
            );
        }
    }

    #[test]
    fn invalid_parameter_is_batch_size_only_above_ten_domains_and_400() {
        assert_eq!(
            classify(Some("InvalidParameter.DomainName"), Some(400), 11),
            Class::BatchSize
        );
        assert_eq!(
            classify(Some("InvalidParameter.DomainName"), Some(400), 10),
            Class::Other
        );
        assert_eq!(
            classify(Some("InvalidParameter"), Some(500), 50),
            Class::Retryable
        );
        assert_eq!(
            classify(Some("InvalidParameter.DomainNameOverLimit"), Some(400), 2),
            Class::BatchSize
        );
    }

    #[test]
    fn a_size_refusal_names_its_limit() {
        let err = api(
            400,
            "InvalidParameter.DomainNameOverLimit",
            "The call names 3 domains; at most 2 are allowed in one call.",
            &["a.example", "b.example", "c.example"],
        );
        assert_eq!(err.class(), Class::BatchSize);
        assert_eq!(err.batch_limit(), Some(2));
        let cases: &[(&str, Option<usize>)] = &[
            ("at most 10 are allowed", Some(10)),
            ("AT MOST 7 domains", Some(7)),
            ("You can specify up to 50 domain names.", Some(50)),
            ("a maximum of 20 per request", Some(20)),
            ("only 5 domains are allowed per call", Some(5)),
            ("too many domains", None),
            ("at most 0 are allowed", None),
            ("at most many", None),
            ("", None),
        ];
        for (message, want) in cases {
            assert_eq!(named_limit(message), *want, "{message}");
        }
        // Only size refusals carry a limit.
        let other = api(
            400,
            "InvalidDomain.Offline",
            "at most 2 are allowed",
            &["a.b"],
        );
        assert_eq!(other.batch_limit(), None);
    }

    #[test]
    fn classify_by_status_without_code() {
        assert_eq!(classify(None, None, 0), Class::Retryable);
        assert_eq!(classify(None, Some(502), 0), Class::Retryable);
        assert_eq!(classify(None, Some(429), 0), Class::Retryable);
        assert_eq!(classify(None, Some(403), 0), Class::Credentials);
        assert_eq!(classify(None, Some(414), 0), Class::Other);
        assert_eq!(
            classify(Some("SomethingNew"), Some(503), 0),
            Class::Retryable
        );
        assert_eq!(classify(Some("SomethingNew"), Some(400), 0), Class::Other);
    }

    #[test]
    fn attempt_labels_tell_ok_codes_transport_and_trust_apart() {
        let label = |e: ApiError| attempt_label::<()>(&Err(e)).to_string();
        assert_eq!(attempt_label::<()>(&Ok(())), "ok");
        assert_eq!(label(ApiError::transport("A", "e", "refused")), "transport");
        let timeout = ApiError::Timeout {
            action: "A",
            endpoint: "e".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(label(timeout), "transport");
        assert_eq!(
            label(ApiError::tls_trust("A", "e", None, "bad")),
            "tls-trust"
        );
        let none = ApiError::NoCredentials {
            action: "A",
            detail: "nothing".into(),
            temporary: true,
        };
        assert_eq!(label(none), "no-credentials");
        assert_eq!(label(ApiError::bad_response("A", 200, "x")), "bad-response");
    }

    #[test]
    fn kinds_are_short_labels() {
        let kinds = [
            (api(400, "Throttling.User", "slow", &[]), "throttled"),
            (api(503, "ServiceUnavailable", "x", &[]), "server-busy"),
            (api(400, "InvalidTimeStamp.Expired", "x", &[]), "clock-skew"),
            (api(400, "SignatureDoesNotMatch", "x", &[]), "credentials"),
            (api(404, "InvalidDomain.NotFound", "x", &["a.b"]), "domain"),
            (api(400, "InvalidSSLPri", "x", &[]), "certificate"),
            (
                api(400, "InvalidParameter.DomainNameOverLimit", "x", &[]),
                "batch-size",
            ),
            (api(400, "MissingParameter", "x", &[]), "api-error"),
            (ApiError::transport("A", "https://e", "reset"), "transport"),
            (
                ApiError::bad_response("A", 200, "no RequestId"),
                "bad-response",
            ),
        ];
        for (err, kind) in kinds {
            assert_eq!(err.kind(), kind, "{err}");
        }
        let timeout = ApiError::Timeout {
            action: "A",
            endpoint: "https://e".into(),
            timeout: Duration::from_secs(3),
        };
        assert_eq!(timeout.kind(), "timeout");
        assert!(timeout.is_retryable());
        assert!(timeout.to_string().contains("3 s"));
    }

    #[test]
    fn api_fields_are_kept() {
        let err = api(
            404,
            "InvalidDomain.NotFound",
            "The domain does not exist.",
            &[],
        );
        assert_eq!(err.code(), Some("InvalidDomain.NotFound"));
        assert_eq!(err.status(), Some(404));
        assert_eq!(
            err.request_id(),
            Some("0F2B1C3D-AAAA-BBBB-CCCC-0123456789AB")
        );
        let text = err.to_string();
        assert!(text.contains("HTTP 404"), "{text}");
        assert!(text.contains("The domain does not exist."), "{text}");
        assert!(text.contains("troubleshoot"), "{text}");
        assert!(text.contains("[cdn] domains"), "{text}");
    }

    #[test]
    fn domain_named_in_message_is_identified() {
        let domains = ["a.example.com", "b.example.com", "ab.example.com"];
        let err = api(
            404,
            "InvalidDomain.NotFound",
            "The domain b.example.com does not exist.",
            &domains,
        );
        assert_eq!(err.class(), Class::Domain);
        assert_eq!(err.domain(), Some("b.example.com"));
        // Only whole names count: "ab.example.com" must not match "b.example.com".
        let err = api(
            400,
            "InvalidDomain.Offline",
            "ab.example.com is offline",
            &domains,
        );
        assert_eq!(err.domain(), Some("ab.example.com"));
        let err = api(
            400,
            "InvalidDomain.Offline",
            "The domain is offline.",
            &domains,
        );
        assert_eq!(err.domain(), None);
        let err = api(
            400,
            "InvalidDomain.Offline",
            "offline",
            &["only.example.com"],
        );
        assert_eq!(err.domain(), Some("only.example.com"));
    }

    #[test]
    fn wildcard_cdn_domain_is_not_found_inside_a_longer_name() {
        let err = api(
            404,
            "InvalidDomain.NotFound",
            "no such domain: x.example.com",
            &[".example.com", "x.example.com"],
        );
        assert_eq!(err.domain(), Some("x.example.com"));
        let err = api(
            404,
            "InvalidDomain.NotFound",
            "no such domain: .example.com",
            &[".example.com", "x.example.com"],
        );
        assert_eq!(err.domain(), Some(".example.com"));
    }

    const KEY_BODY: &str = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7";

    #[test]
    fn signature_mismatch_echo_never_reaches_display_or_debug() {
        let sts = format!(
            "POST&%2F&AccessKeyId%3Dtestid%26SSLPri%3D-----BEGIN%2520RSA%2520PRIVATE%2520KEY-----%250A{KEY_BODY}%250A"
        );
        let message = format!(
            "Specified signature is not matched with our calculation. server string to sign is:{sts}"
        );
        let err = api(400, "SignatureDoesNotMatch", &message, &["a.example.com"]);
        let shown = format!("{err} {err:?}");
        for leak in [KEY_BODY, "PRIVATE", "SSLPri", "BEGIN", "AccessKeyId%3D"] {
            assert!(!shown.contains(leak), "{leak} leaked: {shown}");
        }
        assert!(shown.contains("signature is not matched"), "{shown}");
        assert_eq!(err.class(), Class::Credentials);
    }

    #[test]
    fn pem_and_key_material_are_removed_anywhere() {
        let raw =
            format!("bad key -----BEGIN PRIVATE KEY-----\n{KEY_BODY}\n-----END PRIVATE KEY-----");
        let err = api(400, "InvalidSSLPri", &raw, &[]);
        let shown = format!("{err} {err:?}");
        assert!(
            !shown.contains(KEY_BODY) && !shown.contains("BEGIN"),
            "{shown}"
        );
        assert!(shown.contains("bad key"), "{shown}");
        // A bare base64 run with no marker is masked too.
        let err = api(400, "InvalidSSLPri", &format!("got {KEY_BODY} here"), &[]);
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(KEY_BODY), "{shown}");
        assert!(shown.contains("got [redacted] here"), "{shown}");
    }

    #[test]
    fn recommend_and_ids_are_redacted_too() {
        let body = serde_json::json!({
            "Code": "SignatureDoesNotMatch",
            "Message": "x",
            "RequestId": format!("id {KEY_BODY}"),
            "Recommend": format!("see stringToSign=SSLPri%3D{KEY_BODY}"),
        });
        let err = ApiError::from_response("A", meta(400), body.to_string().as_bytes(), &[]);
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(KEY_BODY), "{shown}");
    }

    #[test]
    fn hostile_ids_become_placeholders() {
        let body = serde_json::json!({
            "RequestId": format!("echo {KEY_BODY}\nINFO forged"),
            "HostId": "cdn.aliyuncs.com\u{1b}[2K",
            "Code": "InvalidSSLPri\nWARN forged",
            "Message": "bad key",
        });
        let err = ApiError::from_response("A", meta(400), body.to_string().as_bytes(), &[]);
        let ApiError::Api(f) = &err else {
            panic!("expected Api, got {err:?}")
        };
        assert_eq!(f.request_id.as_deref(), Some(untrusted::INVALID_REQUEST_ID));
        assert_eq!(f.host_id.as_deref(), Some(untrusted::INVALID_HOST_ID));
        assert_eq!(f.code.as_deref(), Some(untrusted::INVALID_CODE));
        // An unusable Code classifies by the status.
        assert_eq!(err.class(), Class::Other);
        let shown = format!("{err} {err:?}");
        assert!(
            !shown.contains(KEY_BODY) && !shown.contains("forged"),
            "{shown}"
        );
        assert!(
            !shown.contains('\n') && !shown.contains('\u{1b}'),
            "{shown}"
        );
    }

    #[test]
    fn reshaped_key_in_a_message_is_redacted() {
        let key: String = KEY_BODY.repeat(8);
        let spaced: Vec<String> = key
            .as_bytes()
            .chunks(32)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        let err = api(
            400,
            "InvalidSSLPri",
            &format!("bad key {}", spaced.join(" ")),
            &[],
        );
        let shown = format!("{err} {err:?}");
        for piece in &spaced {
            assert!(!shown.contains(&piece[..16]), "{piece} leaked: {shown}");
        }
        assert!(shown.contains("bad key [redacted]"), "{shown}");
    }

    #[test]
    fn fields_of_the_wrong_type_fall_back_to_the_status() {
        let err = ApiError::from_response(
            "A",
            meta(503),
            br#"{"Code":5,"Message":["x"],"RequestId":{}}"#,
            &[],
        );
        assert!(err.is_retryable(), "{err:?}");
        assert_eq!(err.code(), None);
        assert_eq!(err.request_id(), None);
    }

    #[test]
    fn long_messages_are_truncated() {
        let long = "word ".repeat(500);
        let err = api(400, "MissingParameter", &long, &[]);
        let ApiError::Api(f) = &err else {
            panic!("expected Api, got {err:?}")
        };
        assert!(f.message.chars().count() <= MAX_MESSAGE_CHARS + 1);
        assert!(f.message.ends_with('…'));
    }

    #[test]
    fn html_body_is_non_json_with_excerpt() {
        let html = b"<html><head><title>414 Request-URI Too Large</title></head>\
            <body><center><h1>414 Request-URI Too Large</h1></center><hr>\
            <center>Tengine</center></body></html>";
        let err = ApiError::from_response("A", meta(414), html, &[]);
        assert_eq!(err.kind(), "non-json-response");
        assert_eq!(err.status(), Some(414));
        assert_eq!(err.class(), Class::Other);
        let text = err.to_string();
        assert!(text.contains("414 Request-URI Too Large"), "{text}");
        assert!(!text.contains('<'), "{text}");
        let bad_gateway = ApiError::from_response("A", meta(502), b"<h1>502 Bad Gateway</h1>", &[]);
        assert!(bad_gateway.is_retryable());
        assert!(bad_gateway.to_string().contains("retries"));
    }

    #[test]
    fn binary_and_empty_bodies_do_not_panic() {
        let err = ApiError::from_response("A", meta(500), &[0xff, 0xfe, 0x00, b'<'], &[]);
        assert_eq!(err.kind(), "non-json-response");
        let err = ApiError::from_response("A", meta(503), b"", &[]);
        assert!(err.is_retryable());
        let excerpt_len = excerpt(&[b'a'; 100_000]).chars().count();
        assert!(excerpt_len <= MAX_EXCERPT_CHARS + 1);
    }

    #[test]
    fn json_error_without_code_classifies_by_status() {
        let err = ApiError::from_response("A", meta(503), br#"{"RequestId":"r"}"#, &[]);
        assert_eq!(err.kind(), "server-busy");
        let err = ApiError::from_response("A", meta(400), br#"{"Message":"?"}"#, &[]);
        assert_eq!(err.class(), Class::Other);
    }

    #[test]
    fn retry_hint_is_kept_and_parsed() {
        assert_eq!(
            parse_retry_after(Some(" 2000 "), None),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse_retry_after(None, Some("3")),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after(Some("1500"), Some("9")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after(Some("0"), None), None);
        assert_eq!(parse_retry_after(Some("soon"), Some("-1")), None);
        assert_eq!(parse_retry_after(None, Some("99999")), Some(MAX_RETRY_HINT));
        let m = ResponseMeta {
            status: 400,
            retry_after: Some(Duration::from_millis(700)),
            ..ResponseMeta::default()
        };
        let body = br#"{"Code":"Throttling.User","Message":"Request was denied due to user flow control."}"#;
        let err = ApiError::from_response("A", m, body, &[]);
        assert_eq!(err.retry_after(), Some(Duration::from_millis(700)));
    }

    #[test]
    fn http_date_parses() {
        let t = parse_http_date("Tue, 15 Nov 1994 08:12:31 GMT");
        assert_eq!(t, Some(time::macros::datetime!(1994-11-15 08:12:31 UTC)));
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn clock_error_states_the_offset() {
        let m = ResponseMeta {
            status: 400,
            clock_offset: Some(time::Duration::seconds(-1234)),
            ..ResponseMeta::default()
        };
        let body = br#"{"Code":"InvalidTimeStamp.Expired","Message":"Specified time stamp or date value is expired."}"#;
        let err = ApiError::from_response("A", m, body, &[]);
        assert_eq!(err.class(), Class::Clock);
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("1234 s ahead of"), "{text}");
        assert!(text.contains("NTP"), "{text}");
    }

    #[test]
    fn transport_detail_is_redacted() {
        let err = ApiError::transport("A", "https://e", &format!("reset; {KEY_BODY}"));
        assert!(!err.to_string().contains(KEY_BODY));
        assert!(err.is_retryable());
    }

    #[test]
    fn redact_keeps_ordinary_text() {
        use crate::untrusted::redact;
        assert_eq!(
            redact("  The  private key\tdoes not match. ", 100),
            "The private key does not match."
        );
        assert_eq!(redact("é", 0), "…");
    }
}
