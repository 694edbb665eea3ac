//! Alibaba Cloud RPC signature v1 (HMAC-SHA1), pure: no I/O, no clock, no randomness.
//!
//! Owns: the RFC 3986 percent-encoder (only `A-Za-z0-9-_.~` stay literal, every other UTF-8
//! byte becomes `%XX` with upper-case hex), the canonical string over all request parameters
//! (query and form body together, `Signature` excluded, sorted by key bytes), the
//! string-to-sign `METHOD&%2F&enc(canonical)`, the signature
//! `base64(HMAC-SHA1(secret + "&", string_to_sign))`, and the common parameters of every call.
//!
//! Invariants: the timestamp and nonce are parameters (the client draws them per attempt);
//! strings that can contain `SSLPri` (the canonical string, the string-to-sign, the form body)
//! are built in pre-sized [`Zeroizing`] buffers, so no copy of the key is left behind by a
//! reallocation or a drop.
//!
//! The emulator recomputes signatures with the same functions: decode the received form body
//! into pairs, call [`string_to_sign`] and [`signature`], compare with `Signature`.

use base64::Engine as _;
use time::OffsetDateTime;
use time::macros::format_description;
use zeroize::Zeroizing;

/// The CDN API version certrotd speaks.
pub const API_VERSION: &str = "2018-05-10";
/// The name of the parameter that carries the signature (never signed itself).
pub const SIGNATURE_PARAM: &str = "Signature";

/// Percent-encodes `s` per RFC 3986: `A-Za-z0-9-_.~` stay, every other byte of the UTF-8
/// text becomes `%XX` (upper-case hex). Space is `%20`, never `+`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(encoded_len(s));
    encode_into(&mut out, s);
    out
}

/// True for the bytes RFC 3986 calls unreserved, the only ones left literal.
pub fn is_unreserved(b: u8) -> bool {
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
pub fn canonical_query(params: &[(String, String)]) -> Zeroizing<String> {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| k != SIGNATURE_PARAM)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    sorted.sort_unstable();
    encode_pairs(sorted.iter().copied())
}

/// `METHOD&%2F&` + percent-encoded canonical string.
pub fn string_to_sign(method: &str, params: &[(String, String)]) -> Zeroizing<String> {
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
pub fn signature(secret: &str, string_to_sign: &str) -> String {
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
pub fn format_timestamp(t: OffsetDateTime) -> String {
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
