//! Table-driven tests of the untrusted-text rules, real Alibaba messages, and a property:
//! whatever the reshaping or encoding of a key, no 16-character window of it survives.

use std::collections::HashSet;

use base64::Engine;
use proptest::prelude::*;

use super::*;

const RSA_PKCS8: &str = include_str!("../../tests/fixtures/rsa-2048-a.pkcs8.pem");

/// The base64 body of a PEM text (all lines between the markers, joined).
fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

/// The key bodies under test: RSA PKCS#8 and its PKCS#1 upload form, EC PKCS#8 and SEC1.
fn keys() -> Vec<String> {
    use crate::testca::{Leaf, LeafKey, TestCa};
    let ca = TestCa::new("untrusted").expect("test CA");
    let mut out = Vec::new();
    for key in [
        LeafKey::RsaPkcs8Pem(RSA_PKCS8.to_string()),
        LeafKey::EcdsaP256,
    ] {
        let leaf = Leaf::new(&["a.example"], now(), now() + time::Duration::days(9));
        let issued = ca.issue(&leaf.with_key(key)).expect("test certificate");
        let cert = crate::cert::parse(issued.fullchain_pem.as_bytes(), issued.key_pem.as_bytes())
            .expect("parses");
        out.push(pem_body(&issued.key_pem));
        out.push(pem_body(cert.key.expose_upload_pem()));
    }
    out
}

fn now() -> time::OffsetDateTime {
    time::macros::datetime!(2026-12-01 00:00 UTC)
}

fn alnum(text: &str) -> String {
    text.chars().filter(char::is_ascii_alphanumeric).collect()
}

/// Every 16-character window of `key`, as is and with only its letters and digits.
fn windows(key: &str) -> (HashSet<String>, HashSet<String>) {
    let w = |s: &str| -> HashSet<String> {
        let c: Vec<char> = s.chars().collect();
        c.windows(16).map(|w| w.iter().collect()).collect()
    };
    (w(key), w(&alnum(key)))
}

/// The first 16-character window of `key` found in `shown` (as is, or among its letters and
/// digits once everything else is dropped).
fn leak(shown: &str, key: &str) -> Option<String> {
    let (raw, plain) = windows(key);
    let find = |s: &str, set: &HashSet<String>| {
        let c: Vec<char> = s.chars().collect();
        c.windows(16)
            .map(|w| w.iter().collect::<String>())
            .find(|w| set.contains(w))
    };
    find(shown, &raw).or_else(|| find(&alnum(shown), &plain))
}

fn percent(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn json_escaped(text: &str) -> String {
    text.replace('\n', "\\n")
        .replace('+', "\\u002b")
        .replace('/', "\\/")
}

fn chunks(text: &str, n: usize, sep: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    c.chunks(n)
        .map(|p| p.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join(sep)
}

// ---------------------------------------------------------------- identifiers

#[test]
fn identifiers_pass_only_when_strict() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // raw, request_id, code, host_id
        (
            "0F2B1C3D-AAAA-BBBB-CCCC-0123456789AB",
            "0F2B1C3D-AAAA-BBBB-CCCC-0123456789AB",
            "0F2B1C3D-AAAA-BBBB-CCCC-0123456789AB",
            "0F2B1C3D-AAAA-BBBB-CCCC-0123456789AB",
        ),
        (
            "cdn.aliyuncs.com",
            "cdn.aliyuncs.com",
            "cdn.aliyuncs.com",
            "cdn.aliyuncs.com",
        ),
        (
            "InvalidParameter.Domain_Name",
            INVALID_REQUEST_ID,
            "InvalidParameter.Domain_Name",
            INVALID_HOST_ID,
        ),
        ("", INVALID_REQUEST_ID, INVALID_CODE, INVALID_HOST_ID),
        (
            "echo MIIE",
            INVALID_REQUEST_ID,
            INVALID_CODE,
            INVALID_HOST_ID,
        ),
        (
            "id\nINFO forged",
            INVALID_REQUEST_ID,
            INVALID_CODE,
            INVALID_HOST_ID,
        ),
        ("a%2Bb", INVALID_REQUEST_ID, INVALID_CODE, INVALID_HOST_ID),
        ("a+b/c=", INVALID_REQUEST_ID, INVALID_CODE, INVALID_HOST_ID),
        (
            "\u{1b}[31mred",
            INVALID_REQUEST_ID,
            INVALID_CODE,
            INVALID_HOST_ID,
        ),
        (
            "ab\u{202e}cd",
            INVALID_REQUEST_ID,
            INVALID_CODE,
            INVALID_HOST_ID,
        ),
        ("é", INVALID_REQUEST_ID, INVALID_CODE, INVALID_HOST_ID),
    ];
    for &(raw, rid, c, host) in cases {
        assert_eq!(request_id(raw), rid, "{raw:?}");
        assert_eq!(code(raw), c, "{raw:?}");
        assert_eq!(host_id(raw), host, "{raw:?}");
    }
    let long = "A".repeat(65);
    assert_eq!(request_id(&long), INVALID_REQUEST_ID);
    assert_eq!(request_id(&long[..64]), long[..64]);
}

// ---------------------------------------------------------------- escaping

#[test]
fn control_and_bidi_characters_are_escaped() {
    let cases: &[(&str, &str)] = &[
        ("plain text", "plain text"),
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\r\\nb"),
        ("tab\there", "tab\\there"),
        ("\u{1b}[31mred", "\\x1b[31mred"),
        ("nul\0", "nul\\x00"),
        ("del\u{7f}", "del\\x7f"),
        ("c1\u{85}\u{9b}", "c1\\u{85}\\u{9b}"),
        ("evil\u{202e}txt.pem", "evil\\u{202e}txt.pem"),
        ("iso\u{2066}late\u{2069}", "iso\\u{2066}late\\u{2069}"),
        ("line\u{2028}sep", "line\\u{2028}sep"),
        ("ünïcödé ok", "ünïcödé ok"),
    ];
    for &(raw, want) in cases {
        assert_eq!(escape(raw), want, "{raw:?}");
        assert!(!escape(raw).chars().any(is_unsafe_char), "{raw:?}");
    }
    assert!(matches!(escape("clean"), Cow::Borrowed(_)));
}

// ---------------------------------------------------------------- free text

#[test]
fn documented_alibaba_messages_stay_readable() {
    let messages = [
        "The specified parameter is invalid.",
        "Specified parameter DomainName is not valid.",
        "Request was denied due to user flow control.",
        "Specified signature is not matched with our calculation.",
        "Specified time stamp or date value is expired.",
        "Specified access key is not found.",
        "User not authorized to operate on the specified resource, or this API doesn't support RAM.",
        "The domain provided does not belong to you.",
        "The request has failed due to a temporary failure of the server.",
        "The input parameter \"DomainName\" that is mandatory for processing this request is not supplied.",
        "The Certificate format is invalid. Please check the PEM content.",
        "The domain b.example.com does not exist.",
        "The domain x-1.cdn.example.com is offline.",
        "https://next.api.aliyun.com/troubleshoot?q=InvalidParameter.DomainNameOverLimit&product=Cdn",
        "https://api.aliyun.com/troubleshoot?q=Throttling.User&product=Cdn",
        "414 Request-URI Too Large Tengine",
        "502 Bad Gateway",
        "The certificate name example.com-2026-12-01-abcdef012345 already exists.",
        "Timestamp 2026-12-01T10:22:32Z is expired.",
        "RequestId 0F2B1C3D-AAAA-BBBB, HostId cdn.aliyuncs.com",
        "The SSLPub and SSLPri of an x509 certificate (RSA 2048, P-256, SHA256) do not match.",
        "指定的参数无效。",
    ];
    for m in messages {
        assert_eq!(redact(m, 1000), m, "{m}");
    }
    assert_eq!(
        redact("  The  private key\tdoes not match.\n", 100),
        "The private key does not match."
    );
}

#[test]
fn real_messages_with_echoed_keys_keep_their_words() {
    for key in keys() {
        let cases = [
            (
                format!("bad key {}", chunks(&key, 32, " ")),
                "bad key [redacted]",
            ),
            (
                format!("Specified signature is not matched with our calculation. {key} end"),
                "Specified signature is not matched with our calculation. [redacted] end",
            ),
            (
                format!(
                    "Throttling.User: Request was denied due to user flow control. {}",
                    chunks(&key, 64, "\n")
                ),
                "Throttling.User: Request was denied due to user flow control. [redacted]",
            ),
            (
                format!(
                    "InvalidParameter: The specified parameter is invalid ({})",
                    percent(&key)
                ),
                "InvalidParameter: The specified parameter is invalid ([redacted])",
            ),
        ];
        for (message, want) in cases {
            let shown = redact(&message, 400);
            assert_eq!(shown, want);
            assert_eq!(leak(&shown, &key), None);
        }
    }
}

#[test]
fn every_documented_echo_shape_is_redacted() {
    for key in keys() {
        let lines = chunks(&key, 64, "\n");
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{lines}\n-----END PRIVATE KEY-----\n");
        let last_line = key.chars().rev().take(key.len() % 64).collect::<String>();
        let shapes = [
            format!("echo {pem}"),
            format!("echo {lines}"),
            format!("echo {}", percent(&pem)),
            format!("echo {}", percent(&lines)),
            format!("echo {}", percent(&percent(&lines))),
            format!("bad key {}", chunks(&key, 32, " ")),
            format!("bad key {}", json_escaped(&lines)),
            format!("bad key {}", json_escaped(&pem)),
            format!("bad key {}", chunks(&key, 76, "\r\n")),
            format!(
                "<pre>{}</pre>",
                lines.replace('+', "&#43;").replace('/', "&#x2F;")
            ),
            format!("SSLPri={}&SSLProtocol=on", percent(&pem)),
            format!("{lines} is not a key"),
            format!("key: {}", chunks(&key, 5, " ")),
            format!("key: {}", chunks(&key, 1, " ")),
            format!("key: {}", chunks(&key, 2, "\\n")),
            format!("key: \"{}\"", chunks(&key, 8, "\", \"")),
            format!("tail {last_line} of {}", &key[key.len() - 40..]),
        ];
        for shape in shapes {
            let shown = redact(&shape, 100_000);
            assert_eq!(leak(&shown, &key), None, "{shape:?} -> {shown:?}");
            assert!(!shown.contains('\n') && !shown.contains('\r'), "{shown:?}");
        }
    }
}

#[test]
fn echoed_request_is_cut_at_its_markers() {
    let shown = redact(
        "Specified signature is not matched with our calculation. server string to sign is:POST&%2F&AccessKeyId%3Dtestid",
        400,
    );
    assert_eq!(
        shown,
        "Specified signature is not matched with our calculation. server [rest removed: it may echo request parameters]"
    );
    // Encoded markers are found once decoded.
    let shown = redact("see stringToSign%3DSSLPri%253Dabc", 400);
    assert!(shown.starts_with("see [rest removed"), "{shown}");
    let shown = redact("x %2D%2D%2D%2D%2DBEGIN RSA PRIVATE KEY", 400);
    assert!(!shown.contains("BEGIN"), "{shown}");
}

#[test]
fn redacted_text_has_no_control_characters_and_is_capped() {
    let shown = redact(
        "line one\nINFO forged line\r\n\u{1b}[2Kgone \u{202e}evil",
        400,
    );
    assert_eq!(shown, "line one INFO forged line [2Kgone evil");
    let shown = redact("line\\nINFO forged %0A next", 400);
    assert_eq!(shown, "line INFO forged next");
    let long = "word ".repeat(500);
    let shown = redact(&long, 100);
    assert_eq!(shown.chars().count(), 101);
    assert!(shown.ends_with('…'));
    assert_eq!(redact("é", 0), "…");
    // Input beyond the bound is never looked at, so never shown.
    let huge = format!("{}TAIL", "a ".repeat(MAX_INPUT_CHARS));
    assert!(!redact(&huge, usize::MAX).contains("TAIL"));
}

#[test]
fn undecodable_escapes_do_not_panic() {
    for text in [
        "%",
        "%G1",
        "%f",
        "\\",
        "\\u12",
        "\\uD800 x",
        "&#;",
        "&#xZZ;",
        "&#99999999;",
        "&",
        "%FF%FE",
        "\\x",
        "&amp",
        "\u{feff}",
    ] {
        let shown = redact(text, 100);
        assert!(!shown.chars().any(is_unsafe_char), "{text:?} -> {shown:?}");
    }
}

#[test]
fn token_classes() {
    let cases: &[(&str, Token)] = &[
        ("key", Token::Word),
        ("Invalid", Token::Word),
        ("a", Token::Word),
        ("I", Token::Word),
        ("q", Token::Name),
        ("HTTP", Token::Name),
        ("DomainName", Token::Name),
        ("SSLPri", Token::Name),
        ("RequestId", Token::Name),
        ("requestId", Token::Name),
        ("SHA256", Token::Name),
        ("x509", Token::Name),
        ("2026", Token::Name),
        ("MIIEvQIB", Token::Suspect),
        ("0F2B1C3D", Token::Suspect),
        ("x9Kq", Token::Suspect),
        ("aBcD", Token::Suspect),
        ("12345678901", Token::Suspect),
        ("Ed2551900", Token::Suspect),
    ];
    for &(token, want) in cases {
        assert_eq!(classify(token), want, "{token}");
    }
}

// ---------------------------------------------------------------- property

/// Ways a server may wrap the pieces of a key it echoes.
const SEPARATORS: &[&str] = &[
    " ", "\n", "\r\n", "\t", "  ", "\\n", "\\r\\n", "%0A", "%250A", "%20", "&#10;", "\", \"",
    " | ", "",
];

#[derive(Clone, Copy, Debug)]
enum Encoding {
    Raw,
    Percent,
    DoublePercent,
    Json,
    Html,
}

fn encode(text: &str, how: Encoding) -> String {
    match how {
        Encoding::Raw => text.to_string(),
        Encoding::Percent => percent(text),
        Encoding::DoublePercent => percent(&percent(text)),
        Encoding::Json => json_escaped(text),
        Encoding::Html => text.replace('+', "&#43;").replace('/', "&#x2f;"),
    }
}

fn reshape(key: &str, sizes: &[usize], seps: &[usize]) -> String {
    let mut out = String::new();
    let mut rest = key;
    let mut k = 0;
    while !rest.is_empty() {
        let n = sizes[k % sizes.len()].min(rest.len());
        if k > 0 {
            out.push_str(SEPARATORS[seps[k % seps.len()] % SEPARATORS.len()]);
        }
        out.push_str(&rest[..n]);
        rest = &rest[n..];
        k += 1;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_window_of_a_reshaped_key_survives(
        der in proptest::collection::vec(any::<u8>(), 48..1300),
        sizes in proptest::collection::vec(1usize..=80, 1..12),
        seps in proptest::collection::vec(0usize..SEPARATORS.len(), 1..6),
        how in prop_oneof![
            Just(Encoding::Raw), Just(Encoding::Percent), Just(Encoding::DoublePercent),
            Just(Encoding::Json), Just(Encoding::Html),
        ],
        before in prop_oneof![Just(""), Just("bad key "), Just("The key "), Just("echo: ")],
        after in prop_oneof![Just(""), Just(" is invalid."), Just("\n"), Just(" end")],
    ) {
        let key = base64::engine::general_purpose::STANDARD.encode(&der);
        let echoed = format!("{before}{}{after}", encode(&reshape(&key, &sizes, &seps), how));
        let shown = redact(&echoed, 100_000);
        prop_assert_eq!(leak(&shown, &key), None, "{:?} -> {:?}", echoed, shown);
        prop_assert!(!shown.chars().any(is_unsafe_char));
    }

    #[test]
    fn escape_leaves_nothing_unsafe(text in ".*") {
        prop_assert!(!escape(&text).chars().any(is_unsafe_char));
        prop_assert!(!redact(&text, 1000).chars().any(is_unsafe_char));
    }
}

#[test]
fn one_line_joins_a_list_message() {
    assert_eq!(
        one_line("none found; looked at:\n  1. a (not set)\n  2. b\n\nset one"),
        "none found; looked at: 1. a (not set); 2. b; set one"
    );
    assert_eq!(one_line("single"), "single");
}
