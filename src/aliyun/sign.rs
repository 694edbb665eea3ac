//! Alibaba Cloud RPC signatures, pure: no I/O, no clock, no randomness. Two algorithms:
//! v1 (HMAC-SHA1, Alibaba's "V2") and V3 (`ACS3-HMAC-SHA256`).
//!
//! Owns: the RFC 3986 percent-encoder (only `A-Za-z0-9-_.~` stay literal, every other UTF-8
//! byte becomes `%XX` with upper-case hex), and for each algorithm its canonical form and
//! signature:
//! - v1: the canonical string over all request parameters (query and form body together,
//!   `Signature` excluded, sorted by key bytes), the string-to-sign `METHOD&%2F&enc(canonical)`,
//!   the signature `base64(HMAC-SHA1(secret + "&", string_to_sign))`, and the common parameters
//!   of every call;
//! - V3: the canonical request `METHOD\nURI\nquery\nheaders\nsigned headers\nbody hash`
//!   over the query parameters alone (the form body is covered by its SHA-256, sent as
//!   `x-acs-content-sha256`), the string-to-sign `ACS3-HMAC-SHA256\n` + hex SHA-256 of it,
//!   the signature hex `HMAC-SHA256(secret, string_to_sign)` (no `&`), and the headers a call
//!   adds ([`sign_v3`]), `Authorization` last.
//!
//! Invariants: the timestamp and nonce are parameters (the client draws them per attempt);
//! strings that can contain `SSLPri` (the canonical strings, the string-to-sign of v1, the
//! form body) are built in pre-sized [`Zeroizing`] buffers, so no copy of the key is left
//! behind by a reallocation or a drop; no `Debug` output of this module's types shows a
//! secret, a security token or a body.
//!
//! The emulator recomputes signatures with the same functions: for v1 it decodes the received
//! form body into pairs, calls [`string_to_sign`] and [`signature`], compares with
//! `Signature`; for V3 it rebuilds [`canonical_request_v3`] from the headers the request lists
//! as signed, then [`string_to_sign_v3`] and [`signature_v3`].

use std::collections::BTreeMap;

use base64::Engine as _;
use time::OffsetDateTime;
use time::macros::format_description;
use zeroize::Zeroizing;

/// The CDN API version certrotd speaks.
pub(crate) const API_VERSION: &str = "2018-05-10";
/// The name of the parameter that carries the signature (never signed itself).
pub(crate) const SIGNATURE_PARAM: &str = "Signature";

/// Percent-encodes `s` per RFC 3986: `A-Za-z0-9-_.~` stay, every other byte of the UTF-8
/// text becomes `%XX` (upper-case hex). Space is `%20`, never `+`.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(encoded_len(s));
    encode_into(&mut out, s);
    out
}

/// True for the bytes RFC 3986 calls unreserved, the only ones left literal.
pub(crate) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

fn encoded_len(s: &str) -> usize {
    s.bytes()
        .map(|b| if is_unreserved(b) { 1 } else { 3 })
        .sum()
}

fn encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// Encodes `pairs` as `k=v&k=v` in the given order (RFC 3986 encoding of keys and values),
/// in an exactly pre-sized zeroizing buffer. This is also a valid
/// `application/x-www-form-urlencoded` body.
pub fn encode_pairs<'a, I>(pairs: I) -> Zeroizing<String>
where
    I: IntoIterator<Item = (&'a str, &'a str)> + Clone,
{
    let len: usize = pairs
        .clone()
        .into_iter()
        .enumerate()
        .map(|(i, (k, v))| usize::from(i > 0) + encoded_len(k) + 1 + encoded_len(v))
        .sum();
    let mut out = Zeroizing::new(String::with_capacity(len));
    for (i, (k, v)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_into(&mut out, k);
        out.push('=');
        encode_into(&mut out, v);
    }
    out
}

/// The canonical string: every parameter except `Signature`, sorted by key bytes (then value
/// bytes, so duplicate keys are deterministic), encoded and joined as `k=v&…`.
pub(crate) fn canonical_query(params: &[(String, String)]) -> Zeroizing<String> {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| k != SIGNATURE_PARAM)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    sorted.sort_unstable();
    encode_pairs(sorted.iter().copied())
}

/// `METHOD&%2F&` + percent-encoded canonical string.
pub(crate) fn string_to_sign(method: &str, params: &[(String, String)]) -> Zeroizing<String> {
    let canonical = canonical_query(params);
    let prefix = format!("{}&{}&", method.to_ascii_uppercase(), percent_encode("/"));
    let mut out = Zeroizing::new(String::with_capacity(
        prefix.len() + encoded_len(canonical.as_str()),
    ));
    out.push_str(&prefix);
    encode_into(&mut out, canonical.as_str());
    out
}

/// `base64(HMAC-SHA1(key = secret + "&", string_to_sign))`.
pub(crate) fn signature(secret: &str, string_to_sign: &str) -> String {
    let mut key_bytes = Zeroizing::new(Vec::with_capacity(secret.len() + 1));
    key_bytes.extend_from_slice(secret.as_bytes());
    key_bytes.push(b'&');
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &key_bytes);
    let tag = ring::hmac::sign(&key, string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// Signs `params` for `method` with `secret`: [`string_to_sign`] then [`signature`].
pub fn sign(method: &str, secret: &str, params: &[(String, String)]) -> String {
    signature(secret, &string_to_sign(method, params))
}

/// `yyyy-MM-ddTHH:mm:ssZ` in UTC, as the API wants `Timestamp`.
pub(crate) fn format_timestamp(t: OffsetDateTime) -> String {
    let utc = t.to_offset(time::UtcOffset::UTC);
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    // Invariant: a four-digit-or-less year formats without error for every date the
    // certificates and clocks certrotd sees can hold; fall back to RFC 3339 otherwise.
    utc.format(&fmt).unwrap_or_else(|_| utc.to_string())
}

/// The parameters every call carries: `Format=JSON`, `Version`, `AccessKeyId`,
/// `SignatureMethod=HMAC-SHA1`, `SignatureVersion=1.0`, `SignatureNonce`, `Timestamp`, and
/// `SecurityToken` when the credentials are temporary (STS).
pub fn common_params(
    access_key_id: &str,
    timestamp: OffsetDateTime,
    nonce: &str,
    security_token: Option<&str>,
) -> Vec<(String, String)> {
    let mut params = vec![
        ("Format".to_string(), "JSON".to_string()),
        ("Version".to_string(), API_VERSION.to_string()),
        ("AccessKeyId".to_string(), access_key_id.to_string()),
        ("SignatureMethod".to_string(), "HMAC-SHA1".to_string()),
        ("SignatureVersion".to_string(), "1.0".to_string()),
        ("SignatureNonce".to_string(), nonce.to_string()),
        ("Timestamp".to_string(), format_timestamp(timestamp)),
    ];
    if let Some(token) = security_token {
        params.push(("SecurityToken".to_string(), token.to_string()));
    }
    params
}

// ---- V3: ACS3-HMAC-SHA256 ------------------------------------------------------------------
// The client signs V3 with `[aliyun] signature = "v3"` ([`sign_v3`]); the emulator
// verifies both algorithms with the pieces below.

/// The V3 algorithm: the first word of `Authorization` and the first line of the
/// string-to-sign.
pub(crate) const V3_ALGORITHM: &str = "ACS3-HMAC-SHA256";
/// The content type of an RPC form body (signed as `content-type` when there is a body).
pub(crate) const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";
/// The canonical URI of every RPC call.
pub(crate) const RPC_URI: &str = "/";

/// The AccessKey a V3 call is signed with. `Debug` shows the AccessKeyId only.
#[derive(Clone, Copy)]
pub(crate) struct V3Key<'a> {
    pub(crate) access_key_id: &'a str,
    pub(crate) secret: &'a str,
    /// Present for temporary (STS) credentials: sent, and signed, as `x-acs-security-token`.
    pub(crate) security_token: Option<&'a str>,
}

impl std::fmt::Debug for V3Key<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V3Key")
            .field("access_key_id", &self.access_key_id)
            .field("secret", &"<redacted>")
            .field("security_token", &self.security_token.map(|_| "<redacted>"))
            .finish()
    }
}

/// One RPC call as V3 signs it. `Debug` shows no parameter value and no body byte.
#[derive(Clone, Copy)]
pub(crate) struct V3Call<'a> {
    /// `GET` or `POST` (upper-cased when signed).
    pub(crate) method: &'a str,
    /// The `Host` header as sent: the endpoint's authority (`cdn.aliyuncs.com`,
    /// `127.0.0.1:8080`).
    pub(crate) host: &'a str,
    /// The URL's query parameters, decoded (any order).
    pub(crate) query: &'a [(String, String)],
    /// The form body exactly as sent (empty for none). A body is sent with
    /// `content-type: application/x-www-form-urlencoded`.
    pub(crate) body: &'a [u8],
    pub(crate) action: &'a str,
    pub(crate) version: &'a str,
    /// `x-acs-date`; formatted in UTC to the second.
    pub(crate) date: OffsetDateTime,
    /// `x-acs-signature-nonce`: unique per attempt.
    pub(crate) nonce: &'a str,
}

impl std::fmt::Debug for V3Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.query.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("V3Call")
            .field("method", &self.method)
            .field("host", &self.host)
            .field("query_keys", &keys)
            .field("body_len", &self.body.len())
            .field("action", &self.action)
            .field("version", &self.version)
            .field("date", &self.date)
            .field("nonce", &self.nonce)
            .finish()
    }
}

/// The headers [`sign_v3`] makes, lower-case names, sorted, `authorization` last. The
/// caller sends every one of them (`host` too, with this value). `Debug` redacts the
/// security token; `authorization` holds only a signature.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct V3Headers(pub(crate) Vec<(&'static str, String)>);

impl V3Headers {
    /// The value of header `name` (lower case).
    #[cfg(test)]
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl std::fmt::Debug for V3Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        for (name, value) in &self.0 {
            if *name == "x-acs-security-token" {
                list.entry(&(name, "<redacted>"));
            } else {
                list.entry(&(name, value));
            }
        }
        list.finish()
    }
}

/// Signs `call` with `key`: the headers to add to the request (see [`V3Headers`]). The
/// signed headers are `host`, `content-type` (with a body), and every `x-acs-*` header:
/// action, version, date, nonce, content hash, and the security token with STS.
pub(crate) fn sign_v3(call: &V3Call<'_>, key: &V3Key<'_>) -> V3Headers {
    let content_sha256 = hex_sha256(call.body);
    let mut headers: Vec<(&'static str, String)> = vec![
        ("host", call.host.to_string()),
        ("x-acs-action", call.action.to_string()),
        ("x-acs-content-sha256", content_sha256.clone()),
        ("x-acs-date", format_timestamp(call.date)),
        ("x-acs-signature-nonce", call.nonce.to_string()),
        ("x-acs-version", call.version.to_string()),
    ];
    if !call.body.is_empty() {
        headers.push(("content-type", FORM_CONTENT_TYPE.to_string()));
    }
    if let Some(token) = key.security_token {
        headers.push(("x-acs-security-token", token.to_string()));
    }
    headers.sort_unstable();
    let canonical = canonical_request_v3(
        call.method,
        RPC_URI,
        &canonical_query_v3(call.query),
        headers.iter().map(|(n, v)| (*n, v.as_str())),
        &content_sha256,
    );
    let signature = signature_v3(key.secret, &string_to_sign_v3(&canonical.request));
    let authorization = authorization_v3(key.access_key_id, &canonical.signed_headers, &signature);
    headers.push(("authorization", authorization));
    V3Headers(headers)
}

/// Lower-case hex SHA-256 of `bytes` (the `x-acs-content-sha256` of a body).
pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// V3's canonical query string: every query parameter, sorted by key bytes (then value
/// bytes), keys and values RFC 3986-encoded, joined as `k=v&…`; empty for no parameters.
pub(crate) fn canonical_query_v3(params: &[(String, String)]) -> Zeroizing<String> {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    sorted.sort_unstable();
    encode_pairs(sorted.iter().copied())
}

/// A V3 canonical request and the `SignedHeaders` list it was made with.
pub(crate) struct CanonicalRequestV3 {
    pub(crate) request: Zeroizing<String>,
    /// Lower-case header names, sorted, `;`-joined.
    pub(crate) signed_headers: String,
}

/// `METHOD\nURI\nquery\nheaders\nsigned headers\nhashed payload`, where `headers` is one
/// `name:value\n` per header (names lower-cased and sorted, values trimmed; several values
/// of one name sorted and joined with `,`) and `signed headers` their names `;`-joined.
/// `headers` are exactly the signed ones; `canonical_query` comes from
/// [`canonical_query_v3`]; `hashed_payload` is the `x-acs-content-sha256` value.
pub(crate) fn canonical_request_v3<'a, I>(
    method: &str,
    uri: &str,
    canonical_query: &str,
    headers: I,
    hashed_payload: &str,
) -> CanonicalRequestV3
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut by_name: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (name, value) in headers {
        by_name
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(value.trim());
    }
    let mut canonical_headers = Zeroizing::new(String::new());
    for (name, values) in &mut by_name {
        values.sort_unstable();
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&values.join(","));
        canonical_headers.push('\n');
    }
    let signed_headers = by_name
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(";");
    let method = method.to_ascii_uppercase();
    let parts = [
        method.as_str(),
        uri,
        canonical_query,
        canonical_headers.as_str(),
        signed_headers.as_str(),
        hashed_payload,
    ];
    let len = parts.iter().map(|p| p.len() + 1).sum::<usize>() - 1;
    let mut request = Zeroizing::new(String::with_capacity(len));
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            request.push('\n');
        }
        request.push_str(part);
    }
    CanonicalRequestV3 {
        request,
        signed_headers,
    }
}

/// `ACS3-HMAC-SHA256\n` + hex SHA-256 of the canonical request (holds no parameter value).
pub(crate) fn string_to_sign_v3(canonical_request: &str) -> String {
    format!(
        "{V3_ALGORITHM}\n{}",
        hex_sha256(canonical_request.as_bytes())
    )
}

/// Lower-case hex `HMAC-SHA256(key = secret, string_to_sign)`: the secret alone, no `&`.
pub(crate) fn signature_v3(secret: &str, string_to_sign: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    hex(ring::hmac::sign(&key, string_to_sign.as_bytes()).as_ref())
}

/// `ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=…,Signature=…`.
pub(crate) fn authorization_v3(
    access_key_id: &str,
    signed_headers: &str,
    signature: &str,
) -> String {
    format!(
        "{V3_ALGORITHM} Credential={access_key_id},SignedHeaders={signed_headers},Signature={signature}"
    )
}

/// The parts of a V3 `Authorization` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct V3Authorization<'a> {
    pub(crate) access_key_id: &'a str,
    /// As sent: `;`-separated names.
    pub(crate) signed_headers: &'a str,
    pub(crate) signature: &'a str,
}

impl V3Authorization<'_> {
    /// The signed header names, as listed.
    pub(crate) fn header_names(&self) -> impl Iterator<Item = &str> {
        self.signed_headers.split(';')
    }
}

/// Parses `ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…` (parts in any order,
/// spaces around them allowed). `None` when the algorithm differs or a part is missing,
/// empty or repeated.
pub(crate) fn parse_authorization_v3(value: &str) -> Option<V3Authorization<'_>> {
    let rest = value.trim().strip_prefix(V3_ALGORITHM)?;
    if !rest.starts_with(' ') {
        return None;
    }
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (name, v) = part.trim().split_once('=')?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => return None,
        };
        if slot.is_some() || v.is_empty() {
            return None;
        }
        *slot = Some(v);
    }
    Some(V3Authorization {
        access_key_id: credential?,
        signed_headers: signed?,
        signature: signature?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn vector1() -> Vec<(String, String)> {
        pairs(&[
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("Format", "XML"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2016-02-23T12:46:24Z"),
            ("Version", "2014-05-26"),
        ])
    }

    /// Vector 2, deliberately listed out of order: sorting is part of what is tested.
    fn vector2() -> Vec<(String, String)> {
        pairs(&[
            ("Version", "2018-05-10"),
            (
                "SSLPub",
                "-----BEGIN CERTIFICATE-----\nMIIB+/ab*c~d e\n-----END CERTIFICATE-----\n",
            ),
            ("Action", "BatchSetCdnDomainServerCertificate"),
            ("CertName", "example-2024 é"),
            ("CertType", "upload"),
            ("DomainName", "a.example.com,b.example.com"),
            ("ForceSet", "1"),
            ("Format", "JSON"),
            (
                "SSLPri",
                "-----BEGIN PRIVATE KEY-----\nMIIE+key/=\n-----END PRIVATE KEY-----\n",
            ),
            ("SSLProtocol", "on"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("AccessKeyId", "testid"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2016-02-23T12:46:24Z"),
        ])
    }

    const V1_STS: &str = "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26";

    const V2_CANONICAL: &str = "AccessKeyId=testid&Action=BatchSetCdnDomainServerCertificate&CertName=example-2024%20%C3%A9&CertType=upload&DomainName=a.example.com%2Cb.example.com&ForceSet=1&Format=JSON&SSLPri=-----BEGIN%20PRIVATE%20KEY-----%0AMIIE%2Bkey%2F%3D%0A-----END%20PRIVATE%20KEY-----%0A&SSLProtocol=on&SSLPub=-----BEGIN%20CERTIFICATE-----%0AMIIB%2B%2Fab%2Ac~d%20e%0A-----END%20CERTIFICATE-----%0A&SignatureMethod=HMAC-SHA1&SignatureNonce=3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf&SignatureVersion=1.0&Timestamp=2016-02-23T12%3A46%3A24Z&Version=2018-05-10";

    #[test]
    fn vector1_string_to_sign_and_signature() {
        let sts = string_to_sign("GET", &vector1());
        assert_eq!(sts.as_str(), V1_STS);
        assert_eq!(
            signature("testsecret", &sts),
            "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
        );
        assert_eq!(
            sign("GET", "testsecret", &vector1()),
            "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
        );
    }

    #[test]
    fn vector1_negative_control_key_without_ampersand() {
        // Same HMAC but with the raw secret as key: proves the "&" is appended exactly once.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"testsecret");
        let tag = ring::hmac::sign(&key, V1_STS.as_bytes());
        let raw = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        assert_eq!(raw, "R8VkbeU3DqhHmAVCdxW/CjqsRK0=");
        assert_ne!(signature("testsecret", V1_STS), raw);
    }

    #[test]
    fn vector2_canonical_string_and_signature() {
        let canonical = canonical_query(&vector2());
        assert_eq!(canonical.as_str(), V2_CANONICAL);
        assert_eq!(canonical.len(), 527);
        let sts = string_to_sign("POST", &vector2());
        assert_eq!(
            sts.as_str(),
            format!("POST&%2F&{}", percent_encode(V2_CANONICAL))
        );
        assert_eq!(
            signature("testsecret", &sts),
            "O/z8h+GZ6wLYNoyugXahj8LCEKo="
        );
    }

    #[test]
    fn signature_param_is_not_signed() {
        let mut params = vector2();
        let before = canonical_query(&params);
        params.push(("Signature".to_string(), "anything".to_string()));
        assert_eq!(canonical_query(&params), before);
    }

    #[test]
    fn method_is_upper_cased() {
        assert_eq!(
            string_to_sign("post", &vector2()),
            string_to_sign("POST", &vector2())
        );
    }

    #[test]
    fn duplicate_keys_sort_by_value() {
        let a = canonical_query(&pairs(&[("K", "b"), ("K", "a")]));
        assert_eq!(a.as_str(), "K=a&K=b");
    }

    #[test]
    fn encoder_special_characters() {
        assert_eq!(percent_encode(" *+~/=:é"), "%20%2A%2B~%2F%3D%3A%C3%A9");
        assert_eq!(percent_encode(""), "");
    }

    #[test]
    fn encode_pairs_is_exactly_presized() {
        let body = encode_pairs([("a b", "c/d"), ("é", "")]);
        assert_eq!(body.as_str(), "a%20b=c%2Fd&%C3%A9=");
        assert_eq!(body.capacity(), body.len());
    }

    #[test]
    fn common_params_shape() {
        let t = datetime!(2024-03-05 06:07:08 +02:00);
        let p = common_params("LTAIid", t, "nonce-1", None);
        let get = |k: &str| p.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.as_str());
        assert_eq!(get("Format"), Some("JSON"));
        assert_eq!(get("Version"), Some("2018-05-10"));
        assert_eq!(get("AccessKeyId"), Some("LTAIid"));
        assert_eq!(get("SignatureMethod"), Some("HMAC-SHA1"));
        assert_eq!(get("SignatureVersion"), Some("1.0"));
        assert_eq!(get("SignatureNonce"), Some("nonce-1"));
        assert_eq!(get("Timestamp"), Some("2024-03-05T04:07:08Z"));
        assert_eq!(get("SecurityToken"), None);
        let sts = common_params("STS.id", t, "n", Some("tok"));
        assert!(sts.contains(&("SecurityToken".to_string(), "tok".to_string())));
    }

    // ---- V3 ----

    const V3_1_QUERY: &str =
        "ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai";
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn v3_1_query() -> Vec<(String, String)> {
        // Out of order: sorting is part of what is tested.
        pairs(&[
            ("RegionId", "cn-shanghai"),
            (
                "ImageId",
                "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
            ),
        ])
    }

    fn v3_1_call(query: &[(String, String)]) -> V3Call<'_> {
        V3Call {
            method: "POST",
            host: "ecs.cn-shanghai.aliyuncs.com",
            query,
            body: b"",
            action: "RunInstances",
            version: "2014-05-26",
            date: datetime!(2023-10-26 10:22:32 UTC),
            nonce: "3156853299f313e23d1673dc12e1703d",
        }
    }

    const DOC_KEY: V3Key<'static> = V3Key {
        access_key_id: "YourAccessKeyId",
        secret: "YourAccessKeySecret",
        security_token: None,
    };

    /// The documentation's canonical request, written out by hand.
    fn v3_1_canonical_text() -> String {
        [
            "POST",
            "/",
            V3_1_QUERY,
            "host:ecs.cn-shanghai.aliyuncs.com\nx-acs-action:RunInstances\n\
             x-acs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-acs-date:2023-10-26T10:22:32Z\nx-acs-signature-nonce:3156853299f313e23d1673dc12e1703d\n\
             x-acs-version:2014-05-26\n",
            "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version",
            EMPTY_SHA256,
        ]
        .join("\n")
    }

    #[test]
    fn v3_official_vector_canonical_request_string_to_sign_and_signature() {
        let text = v3_1_canonical_text();
        assert_eq!(
            hex_sha256(text.as_bytes()),
            "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
        );
        let query = v3_1_query();
        assert_eq!(canonical_query_v3(&query).as_str(), V3_1_QUERY);
        let headers = [
            ("x-acs-version", "2014-05-26"),
            ("host", "ecs.cn-shanghai.aliyuncs.com"),
            ("x-acs-signature-nonce", "3156853299f313e23d1673dc12e1703d"),
            ("x-acs-date", "2023-10-26T10:22:32Z"),
            ("x-acs-content-sha256", EMPTY_SHA256),
            ("x-acs-action", "RunInstances"),
        ];
        let c = canonical_request_v3("POST", "/", V3_1_QUERY, headers, EMPTY_SHA256);
        assert_eq!(c.request.as_str(), text);
        assert_eq!(
            c.signed_headers,
            "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version"
        );
        let sts = string_to_sign_v3(&c.request);
        assert_eq!(
            sts,
            "ACS3-HMAC-SHA256\n7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
        );
        assert_eq!(
            signature_v3("YourAccessKeySecret", &sts),
            "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        );
    }

    #[test]
    fn v3_official_vector_through_sign_v3() {
        let query = v3_1_query();
        let h = sign_v3(&v3_1_call(&query), &DOC_KEY);
        let names: Vec<&str> = h.0.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "host",
                "x-acs-action",
                "x-acs-content-sha256",
                "x-acs-date",
                "x-acs-signature-nonce",
                "x-acs-version",
                "authorization"
            ]
        );
        assert_eq!(h.get("x-acs-content-sha256"), Some(EMPTY_SHA256));
        assert_eq!(h.get("x-acs-date"), Some("2023-10-26T10:22:32Z"));
        assert_eq!(h.get("content-type"), None, "no body, no content-type");
        assert_eq!(
            h.get("authorization"),
            Some(
                "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,\
                 SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,\
                 Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
            )
        );
    }

    #[test]
    fn v3_negative_control_secret_with_ampersand_differs() {
        let sts = string_to_sign_v3(&v3_1_canonical_text());
        let good = signature_v3("YourAccessKeySecret", &sts);
        assert_ne!(signature_v3("YourAccessKeySecret&", &sts), good);
    }

    const V3_2_BODY: &str = "CertName=example-2026&CertType=upload&DomainName=a.example.com&SSLPri=-----BEGIN%20EC%20PRIVATE%20KEY-----%0AMHc%2B%2F%3D%0A-----END%20EC%20PRIVATE%20KEY-----%0A&SSLProtocol=on&SSLPub=-----BEGIN%20CERTIFICATE-----%0AMIIB%2B%2F%3D%0A-----END%20CERTIFICATE-----%0A";

    fn v3_2_params() -> Vec<(String, String)> {
        pairs(&[
            ("CertName", "example-2026"),
            ("CertType", "upload"),
            ("DomainName", "a.example.com"),
            (
                "SSLPri",
                "-----BEGIN EC PRIVATE KEY-----\nMHc+/=\n-----END EC PRIVATE KEY-----\n",
            ),
            ("SSLProtocol", "on"),
            (
                "SSLPub",
                "-----BEGIN CERTIFICATE-----\nMIIB+/=\n-----END CERTIFICATE-----\n",
            ),
        ])
    }

    #[test]
    fn v3_form_body_vector() {
        let params = v3_2_params();
        let body = encode_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(body.as_str(), V3_2_BODY);
        let call = V3Call {
            method: "POST",
            host: "cdn.aliyuncs.com",
            query: &[],
            body: body.as_bytes(),
            action: "SetCdnDomainSSLCertificate",
            version: "2018-05-10",
            date: datetime!(2026-01-01 00:00:00 UTC),
            nonce: "00000000000000000000000000000001",
        };
        let key = V3Key {
            access_key_id: "testid",
            secret: "testsecret",
            security_token: None,
        };
        let h = sign_v3(&call, &key);
        let sha = "af681fdba2030becb031e2ac8e79b6a17b6620d6f2726878e081be12649f9fd7";
        assert_eq!(h.get("x-acs-content-sha256"), Some(sha));
        assert_eq!(h.get("content-type"), Some(FORM_CONTENT_TYPE));
        let text = [
            "POST",
            "/",
            "",
            &format!(
                "content-type:application/x-www-form-urlencoded\nhost:cdn.aliyuncs.com\n\
                 x-acs-action:SetCdnDomainSSLCertificate\nx-acs-content-sha256:{sha}\n\
                 x-acs-date:2026-01-01T00:00:00Z\nx-acs-signature-nonce:00000000000000000000000000000001\n\
                 x-acs-version:2018-05-10\n"
            ),
            "content-type;host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version",
            sha,
        ]
        .join("\n");
        assert_eq!(
            hex_sha256(text.as_bytes()),
            "afebd51577795ecaa366739507246522c3a823589272d296e49317e2f4aa300f"
        );
        let signature = "da804d801193dec0c5fdf170e7b50d8f979657b288e77fca722ff817abe3f8cb";
        assert_eq!(
            signature_v3("testsecret", &string_to_sign_v3(&text)),
            signature
        );
        assert_eq!(
            h.get("authorization"),
            Some(
                format!(
                    "ACS3-HMAC-SHA256 Credential=testid,SignedHeaders=content-type;host;x-acs-action;\
                     x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature={signature}"
                )
                .as_str()
            )
        );
    }

    #[test]
    fn v3_security_token_is_sent_signed_and_never_debugged() {
        let query = v3_1_query();
        let key = V3Key {
            access_key_id: "STS.id",
            secret: "the-secret-value",
            security_token: Some("the-token-value"),
        };
        let h = sign_v3(&v3_1_call(&query), &key);
        assert_eq!(h.get("x-acs-security-token"), Some("the-token-value"));
        let auth = parse_authorization_v3(h.get("authorization").unwrap()).unwrap();
        assert!(auth.header_names().any(|n| n == "x-acs-security-token"));
        // The token is signed: another token gives another signature.
        let other = V3Key {
            security_token: Some("another-token"),
            ..key
        };
        let h2 = sign_v3(&v3_1_call(&query), &other);
        assert_ne!(h.get("authorization"), h2.get("authorization"));
        let debug = format!("{key:?} {h:?} {:?}", v3_1_call(&query));
        assert!(!debug.contains("the-secret-value"), "{debug}");
        assert!(!debug.contains("the-token-value"), "{debug}");
        assert!(debug.contains("STS.id"));
    }

    #[test]
    fn v3_call_debug_shows_no_body_or_parameter_value() {
        let params = v3_2_params();
        let body = encode_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let call = V3Call {
            body: body.as_bytes(),
            query: &params,
            ..v3_1_call(&[])
        };
        let debug = format!("{call:?}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
        assert!(!debug.contains("MHc"), "{debug}");
        assert!(debug.contains("SSLPri"), "keys are shown: {debug}");
    }

    #[test]
    fn v3_canonical_headers_trim_lowercase_and_join_repeats() {
        let c = canonical_request_v3(
            "get",
            "/",
            "",
            [("X-Acs-B", "  two "), ("x-acs-b", "one"), ("Host", "h")],
            "p",
        );
        assert_eq!(
            c.request.as_str(),
            "GET\n/\n\nhost:h\nx-acs-b:one,two\n\nhost;x-acs-b\np"
        );
        assert_eq!(c.signed_headers, "host;x-acs-b");
    }

    #[test]
    fn v3_canonical_query_encodes_and_sorts() {
        let q = canonical_query_v3(&pairs(&[("b", "x y*~"), ("a", ""), ("a b", "/")]));
        assert_eq!(q.as_str(), "a=&a%20b=%2F&b=x%20y%2A~");
        assert_eq!(canonical_query_v3(&[]).as_str(), "");
    }

    #[test]
    fn v3_authorization_parses_and_rejects_malformed() {
        let a = parse_authorization_v3(
            "ACS3-HMAC-SHA256 Credential=AK, SignedHeaders=host;x-acs-date ,Signature=ab12",
        )
        .unwrap();
        assert_eq!(a.access_key_id, "AK");
        assert_eq!(a.header_names().collect::<Vec<_>>(), ["host", "x-acs-date"]);
        assert_eq!(a.signature, "ab12");
        for bad in [
            "",
            "ACS3-HMAC-SHA256",
            "ACS3-HMAC-SHA256Credential=AK,SignedHeaders=host,Signature=ab",
            "ACS3-HMAC-SM3 Credential=AK,SignedHeaders=host,Signature=ab",
            "ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=host",
            "ACS3-HMAC-SHA256 Credential=,SignedHeaders=host,Signature=ab",
            "ACS3-HMAC-SHA256 Credential=AK,Credential=B,SignedHeaders=host,Signature=ab",
            "ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=host,Signature=ab,Extra=1",
            "ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=host,Signature",
        ] {
            assert_eq!(parse_authorization_v3(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn encoder_leaves_exactly_unreserved_literal(s in "\\PC*") {
            let enc = percent_encode(&s);
            let mut expected = String::new();
            for b in s.bytes() {
                let literal = b.is_ascii_alphanumeric() || b"-_.~".contains(&b);
                if literal {
                    expected.push(char::from(b));
                } else {
                    expected.push_str(&format!("%{b:02X}"));
                }
            }
            prop_assert_eq!(enc, expected);
        }

        #[test]
        fn encoder_output_decodes_back(s in any::<String>()) {
            let enc = percent_encode(&s);
            prop_assert!(enc.bytes().all(|b| is_unreserved(b) || b == b'%'
                || b.is_ascii_hexdigit()));
            let decoded: String = form_urlencoded::parse(format!("k={enc}").as_bytes())
                .map(|(_, v)| v.into_owned())
                .collect();
            prop_assert_eq!(decoded, s);
        }

        #[test]
        fn every_byte_is_literal_iff_unreserved(b in any::<u8>()) {
            let s = [b];
            if let Ok(text) = std::str::from_utf8(&s) {
                let enc = percent_encode(text);
                let unreserved = matches!(b, b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9'
                    | b'-' | b'_' | b'.' | b'~');
                prop_assert_eq!(enc.len() == 1, unreserved);
            }
        }
    }
}
