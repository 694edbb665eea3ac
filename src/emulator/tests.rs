//! In-process tests: raw signed HTTP requests (a tiny hyper client) against a running emulator.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::net::TcpStream;

use super::*;
use crate::config::Product;
use crate::testca::{Leaf, LeafKey, TestCa};

const SECRET: &str = DEFAULT_ACCESS_KEY_SECRET;

// ---------------------------------------------------------------- requests

/// A request under construction: parameters, where they travel, how it is signed.
struct Call {
    method: &'static str,
    params: Vec<(String, String)>,
    in_query: bool,
    secret: String,
    sign: bool,
}

fn nonce() -> String {
    use rand::RngExt;
    let b: [u8; 16] = rand::rng().random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn timestamp(at: OffsetDateTime) -> String {
    api::api_time(at)
}

impl Call {
    fn new(action: &str) -> Call {
        let params = [
            ("Action", action.to_string()),
            ("Format", "JSON".to_string()),
            ("Version", VERSION.to_string()),
            ("AccessKeyId", DEFAULT_ACCESS_KEY_ID.to_string()),
            ("SignatureMethod", "HMAC-SHA1".to_string()),
            ("SignatureVersion", "1.0".to_string()),
            ("SignatureNonce", nonce()),
            ("Timestamp", timestamp(OffsetDateTime::now_utc())),
        ];
        Call {
            method: "POST",
            params: params
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            in_query: false,
            secret: SECRET.to_string(),
            sign: true,
        }
    }

    /// Sets (or replaces) a parameter.
    fn set(mut self, key: &str, value: &str) -> Call {
        self.params.retain(|(k, _)| k != key);
        self.params.push((key.to_string(), value.to_string()));
        self
    }

    fn without(mut self, key: &str) -> Call {
        self.params.retain(|(k, _)| k != key);
        self
    }

    fn get_method(mut self) -> Call {
        self.method = "GET";
        self.in_query = true;
        self
    }

    fn secret(mut self, s: &str) -> Call {
        self.secret = s.to_string();
        self
    }

    fn nonce(&self) -> String {
        self.params
            .iter()
            .find(|(k, _)| k == "SignatureNonce")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    fn signed_params(&self) -> Vec<(String, String)> {
        let mut params = self.params.clone();
        if self.sign {
            let sig = crate::aliyun::sign::sign(self.method, &self.secret, &params);
            params.push(("Signature".to_string(), sig));
        }
        params
    }

    async fn send(&self, addr: SocketAddr) -> Result<(u16, Value), hyper::Error> {
        let encoded = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.signed_params())
            .finish();
        let (uri, body) = if self.in_query {
            (format!("/?{encoded}"), String::new())
        } else {
            ("/".to_string(), encoded)
        };
        raw(addr, self.method, &uri, body).await
    }

    /// Sends and expects an answer.
    async fn answer(&self, addr: SocketAddr) -> (u16, Value) {
        match self.send(addr).await {
            Ok(a) => a,
            Err(e) => panic!("no answer: {e}"),
        }
    }
}

async fn raw(
    addr: SocketAddr,
    method: &str,
    uri: &str,
    body: String,
) -> Result<(u16, Value), hyper::Error> {
    let (status, _, bytes) = raw_parts(addr, method, uri, body).await?;
    let value = serde_json::from_slice(&bytes).expect("a JSON body");
    Ok((status, value))
}

async fn raw_parts(
    addr: SocketAddr,
    method: &str,
    uri: &str,
    body: String,
) -> Result<(u16, hyper::HeaderMap, Bytes), hyper::Error> {
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to the emulator");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(hyper::header::HOST, addr.to_string())
        .header(
            hyper::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request");
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, headers, bytes))
}

fn code(v: &Value) -> &str {
    v["Code"].as_str().unwrap_or("")
}

fn message(v: &Value) -> &str {
    v["Message"].as_str().unwrap_or("")
}

// ---------------------------------------------------------------- certificates

struct Pair {
    chain: String,
    key: String,
    fingerprint: crate::cert::Fingerprint,
    cert: crate::cert::Certificate,
}

fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}

fn issue_with(
    ca: &TestCa,
    names: &[&str],
    from: time::Duration,
    to: time::Duration,
    key: LeafKey,
) -> (String, String) {
    let now = OffsetDateTime::now_utc();
    let issued = ca
        .issue(&Leaf::new(names, now + from, now + to).with_key(key))
        .expect("issue a test certificate");
    (issued.fullchain_pem, issued.key_pem)
}

/// A valid pair for `names`, with the key in upload form (as certrotd sends it).
fn pair(ca: &TestCa, names: &[&str]) -> Pair {
    let (chain, key) = issue_with(ca, names, -days(1), days(60), LeafKey::EcdsaP256);
    let cert = crate::cert::parse(chain.as_bytes(), key.as_bytes()).expect("a valid test pair");
    Pair {
        chain: cert.chain_pem(),
        key: cert.key.expose_upload_pem().to_string(),
        fingerprint: cert.fingerprint,
        cert,
    }
}

fn set_call(domains: &str, p: &Pair, name: &str) -> Call {
    Call::new(ACTION_SET)
        .set("DomainName", domains)
        .set("SSLProtocol", "on")
        .set("CertType", "upload")
        .set("CertName", name)
        .set("ForceSet", "1")
        .set("SSLPub", &p.chain)
        .set("SSLPri", &p.key)
}

fn describe(domain: &str) -> Call {
    Call::new(ACTION_DESCRIBE_CERT).set("DomainName", domain)
}

const DOMAINS: [&str; 4] = [
    "a.example.com",
    "b.example.com",
    "c.example.com",
    ".example.com",
];

async fn emulator_with(cfg: EmulatorConfig) -> Emulator {
    Emulator::start("127.0.0.1:0".parse().expect("an address"), cfg)
        .await
        .expect("start the emulator")
}

async fn emulator() -> Emulator {
    emulator_with(EmulatorConfig::with_domains(DOMAINS)).await
}

fn ca() -> TestCa {
    TestCa::new("emulator test").expect("a test CA")
}

// ---------------------------------------------------------------- writes

#[tokio::test]
async fn good_call_updates_state_and_log() {
    let emu = emulator().await;
    let ca = ca();
    let p = pair(&ca, &["a.example.com", "b.example.com"]);
    let call = set_call("a.example.com,B.example.com", &p, "example-cert");
    let (status, body) = call.answer(emu.addr()).await;
    assert_eq!(status, 200, "{body}");
    let request_id = body["RequestId"].as_str().expect("a RequestId").to_string();
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "only RequestId: {body}"
    );

    let served = emu.served();
    assert_eq!(
        served.keys().collect::<Vec<_>>(),
        ["a.example.com", "b.example.com"]
    );
    for s in served.values() {
        assert_eq!(s.fingerprint, p.fingerprint);
        assert_eq!(s.cert_name, "example-cert");
        assert_eq!(s.chain_pem, p.chain);
        assert_eq!(s.not_after, p.cert.not_after);
        assert_eq!(s.request_id, request_id);
    }

    let log = emu.log();
    assert_eq!(log.len(), 1);
    let e = &log[0];
    assert!(e.is_write() && e.succeeded() && !e.injected && !e.params_in_query);
    assert_eq!(e.domains, ["a.example.com", "b.example.com"]);
    assert_eq!(e.signature_nonce, call.nonce());
    assert_eq!(e.signature, "v1");
    assert_eq!(e.request_id, request_id);
    assert_eq!(e.cert_name.as_deref(), Some("example-cert"));
    assert_eq!(e.fingerprint, Some(p.fingerprint));
    assert_eq!(e.code, None);
    emu.shutdown().await;
}

#[tokio::test]
async fn bad_signature_is_refused_with_the_server_string_to_sign() {
    let emu = emulator().await;
    let p = pair(&ca(), &["a.example.com"]);
    let (status, body) = set_call("a.example.com", &p, "n")
        .secret("wrong")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (400, "SignatureDoesNotMatch"));
    // As the real API does: the message echoes the whole string-to-sign (so clients must redact it).
    assert!(message(&body).contains("server string to sign is:POST&%2F&AccessKeyId%3Demulator"));
    assert!(emu.served().is_empty());

    // A parameter changed after signing breaks the signature too.
    let mut call = set_call("a.example.com", &p, "n");
    let mut params = call.signed_params();
    params.retain(|(k, _)| k != "CertName");
    params.push(("CertName".into(), "other".into()));
    call.params = params;
    call.sign = false;
    let (status, body) = call.answer(emu.addr()).await;
    assert_eq!((status, code(&body)), (400, "SignatureDoesNotMatch"));
    emu.shutdown().await;
}

#[tokio::test]
async fn unknown_access_key_and_missing_parameters() {
    let emu = emulator().await;
    let (status, body) = describe("a.example.com")
        .set("AccessKeyId", "nobody")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (404, "InvalidAccessKeyId.NotFound"));

    let (status, body) = describe("a.example.com")
        .without("SignatureNonce")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (400, "MissingParameter"));
    assert!(message(&body).contains("SignatureNonce"));

    let (status, body) = describe("a.example.com")
        .set("Version", "2014-11-11")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (400, "InvalidVersion"));

    let (status, body) = describe("a.example.com")
        .set("SignatureMethod", "HMAC-SHA256")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (400, "InvalidSignatureMethod"));

    let (status, body) = describe("a.example.com")
        .set("Format", "XML")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (400, "InvalidParameter.Format"));

    let (status, body) = describe("a.example.com")
        .set("SignatureVersion", "2.0")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (400, "InvalidSignatureVersion"));

    let (status, body) = raw(emu.addr(), "PUT", "/", String::new())
        .await
        .expect("an answer");
    assert_eq!((status, code(&body)), (400, "UnsupportedHTTPMethod"));

    let (status, body) = Call::new("DeleteCdnDomain").answer(emu.addr()).await;
    assert_eq!((status, code(&body)), (404, "InvalidAction.NotFound"));
    emu.shutdown().await;
}

#[tokio::test]
async fn timestamps_outside_fifteen_minutes_are_refused() {
    let emu = emulator().await;
    let now = OffsetDateTime::now_utc();
    for (offset, want) in [
        (
            time::Duration::minutes(-16),
            Some("InvalidTimeStamp.Expired"),
        ),
        (
            time::Duration::minutes(16),
            Some("InvalidTimeStamp.Expired"),
        ),
        (time::Duration::minutes(-14), None),
        (time::Duration::minutes(14), None),
    ] {
        let (status, body) = describe("a.example.com")
            .set("Timestamp", &timestamp(now + offset))
            .answer(emu.addr())
            .await;
        match want {
            Some(c) => assert_eq!((status, code(&body)), (400, c), "offset {offset}"),
            None => assert_eq!(status, 200, "offset {offset}: {body}"),
        }
    }
    let (status, body) = describe("a.example.com")
        .set("Timestamp", "2026-01-01 00:00:00")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (400, "InvalidTimeStamp.Format"));
    emu.shutdown().await;
}

#[tokio::test]
async fn a_nonce_is_accepted_once() {
    let emu = emulator().await;
    let call = describe("a.example.com");
    assert_eq!(call.answer(emu.addr()).await.0, 200);
    let (status, body) = call.answer(emu.addr()).await;
    assert_eq!((status, code(&body)), (400, "SignatureNonceUsed"));
    // Even with a new timestamp (re-signed), the nonce stays used.
    let (status, body) = call
        .set("Timestamp", &timestamp(OffsetDateTime::now_utc()))
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (400, "SignatureNonceUsed"));
    emu.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_eleventh_write_within_a_second_is_throttled() {
    let emu = emulator().await;
    let p = pair(&ca(), &["a.example.com"]);
    for i in 0..10 {
        let (status, body) = set_call("a.example.com", &p, "n").answer(emu.addr()).await;
        assert_eq!(status, 200, "call {i}: {body}");
    }
    let (status, body) = set_call("a.example.com", &p, "n").answer(emu.addr()).await;
    assert_eq!((status, code(&body)), (400, "Throttling.User"));
    // Reads have their own budget.
    assert_eq!(describe("a.example.com").answer(emu.addr()).await.0, 200);
    tokio::time::advance(Duration::from_secs(1)).await;
    let (status, body) = set_call("a.example.com", &p, "n").answer(emu.addr()).await;
    assert_eq!(status, 200, "a second later: {body}");

    let log = emu.log();
    let at: Vec<Duration> = log.iter().map(|e| e.at).collect();
    assert!(at[..12].iter().all(|t| *t == at[0]), "paused clock: {at:?}");
    assert_eq!(at[12] - at[0], Duration::from_secs(1));
    emu.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_hundred_and_first_read_within_a_second_is_throttled() {
    let emu = emulator().await;
    for _ in 0..100 {
        assert_eq!(describe("a.example.com").answer(emu.addr()).await.0, 200);
    }
    let (status, body) = describe("a.example.com").answer(emu.addr()).await;
    assert_eq!((status, code(&body)), (400, "Throttling.User"));
    tokio::time::advance(RATE_WINDOW).await;
    assert_eq!(describe("a.example.com").answer(emu.addr()).await.0, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn too_many_domains_in_one_call() {
    let cfg = EmulatorConfig {
        max_domains_per_call: 2,
        ..EmulatorConfig::with_domains(DOMAINS)
    };
    let emu = emulator_with(cfg).await;
    let p = pair(&ca(), &["a.example.com", "b.example.com", "c.example.com"]);
    let three = "a.example.com,b.example.com,c.example.com";
    let (status, body) = set_call(three, &p, "n").answer(emu.addr()).await;
    assert_eq!(
        (status, code(&body)),
        (400, "InvalidParameter.DomainNameOverLimit")
    );
    assert!(emu.served().is_empty());
    emu.set_max_domains_per_call(3);
    let (status, body) = set_call(three, &p, "n").answer(emu.addr()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(emu.served().len(), 3);
    emu.shutdown().await;
}

#[tokio::test]
async fn an_unknown_domain_is_named_and_nothing_changes() {
    let emu = emulator().await;
    let p = pair(&ca(), &["a.example.com", "x.example.com"]);
    let (status, body) = set_call("a.example.com,x.example.com", &p, "n")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (404, "InvalidDomain.NotFound"));
    assert!(message(&body).contains("x.example.com"), "{body}");
    assert!(emu.served().is_empty(), "a refused batch changes nothing");

    let (status, body) = describe("x.example.com").answer(emu.addr()).await;
    assert_eq!((status, code(&body)), (404, "InvalidDomain.NotFound"));

    let (status, body) = set_call("a.example.com,,b.example.com", &p, "n")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (400, "InvalidParameter.DomainName"));
    emu.shutdown().await;
}

#[tokio::test]
async fn certificate_defects_get_their_codes() {
    let emu = emulator().await;
    let ca = ca();
    let good = pair(&ca, &["a.example.com"]);
    let other = pair(&ca, &["a.example.com"]);
    let addr = emu.addr();

    let garbage = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n";
    let (status, body) = set_call("a.example.com", &good, "n")
        .set("SSLPub", garbage)
        .answer(addr)
        .await;
    assert_eq!(
        (status, code(&body)),
        (400, "Certificate.FormatError"),
        "{body}"
    );

    let (status, body) = set_call("a.example.com", &good, "n")
        .set("SSLPub", "hello")
        .answer(addr)
        .await;
    assert_eq!(
        (status, code(&body)),
        (400, "Certificate.FormatError"),
        "{body}"
    );

    let bad_key = "-----BEGIN EC PRIVATE KEY-----\nbm90IGEga2V5\n-----END EC PRIVATE KEY-----\n";
    let (status, body) = set_call("a.example.com", &good, "n")
        .set("SSLPri", bad_key)
        .answer(addr)
        .await;
    assert_eq!((status, code(&body)), (400, "InvalidSSLPri"), "{body}");

    let (status, body) = set_call("a.example.com", &good, "n")
        .set("SSLPri", &other.key)
        .answer(addr)
        .await;
    assert_eq!(
        (status, code(&body)),
        (400, "Certificate.MissMatch"),
        "{body}"
    );

    let (chain, key) = issue_with(
        &ca,
        &["a.example.com"],
        -days(90),
        -days(1),
        LeafKey::EcdsaP256,
    );
    let expired = crate::cert::parse(chain.as_bytes(), key.as_bytes()).expect("parses");
    let (status, body) = set_call("a.example.com", &good, "n")
        .set("SSLPub", &expired.chain_pem())
        .set("SSLPri", expired.key.expose_upload_pem())
        .answer(addr)
        .await;
    assert_eq!(
        (status, code(&body)),
        (400, "Certificate.Expired"),
        "{body}"
    );

    let (chain, key) = issue_with(
        &ca,
        &["a.example.com"],
        days(1),
        days(90),
        LeafKey::EcdsaP256,
    );
    let future = crate::cert::parse(chain.as_bytes(), key.as_bytes()).expect("parses");
    let (status, body) = set_call("a.example.com", &good, "n")
        .set("SSLPub", &future.chain_pem())
        .set("SSLPri", future.key.expose_upload_pem())
        .answer(addr)
        .await;
    assert_eq!(
        (status, code(&body)),
        (400, "Certificate.NotYetValid"),
        "{body}"
    );

    let (status, body) = set_call("b.example.com", &good, "n").answer(addr).await;
    assert_eq!(
        (status, code(&body)),
        (400, "Certificate.DomainMismatch"),
        "{body}"
    );
    assert!(message(&body).contains("b.example.com"));

    let (status, body) = set_call("a.example.com", &good, "n")
        .without("SSLPri")
        .answer(addr)
        .await;
    assert_eq!((status, code(&body)), (400, "SSLPri.MissingParameter"));
    let (status, body) = set_call("a.example.com", &good, "n")
        .without("SSLPub")
        .answer(addr)
        .await;
    assert_eq!((status, code(&body)), (400, "SSLPub.MissingParameter"));

    assert!(emu.served().is_empty(), "no refused call changed anything");
    let log = emu.log();
    assert!(log.iter().all(|e| !e.succeeded()));
    emu.shutdown().await;
}

#[tokio::test]
async fn rsa_keys_must_be_pkcs1() {
    let emu = emulator().await;
    let rsa = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rsa-2048-a.pkcs8.pem"
    ))
    .expect("RSA fixture");
    let (chain, key) = issue_with(
        &ca(),
        &["a.example.com"],
        -days(1),
        days(30),
        LeafKey::RsaPkcs8Pem(rsa),
    );
    let cert = crate::cert::parse(chain.as_bytes(), key.as_bytes()).expect("parses");
    let call = |key: &str| {
        Call::new(ACTION_SET)
            .set("DomainName", "a.example.com")
            .set("SSLProtocol", "on")
            .set("CertName", "rsa")
            .set("SSLPub", &cert.chain_pem())
            .set("SSLPri", key)
    };
    let (status, body) = call(&key).answer(emu.addr()).await;
    assert_eq!(
        (status, code(&body)),
        (400, "InvalidSSLPri"),
        "PKCS#8 RSA: {body}"
    );
    assert!(message(&body).contains("PKCS#1"));
    let upload = cert.key.expose_upload_pem();
    assert!(upload.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let (status, body) = call(upload).answer(emu.addr()).await;
    assert_eq!(status, 200, "{body}");
    emu.shutdown().await;
}

#[tokio::test]
async fn cert_names_are_checked() {
    let emu = emulator().await;
    let p = pair(&ca(), &["a.example.com"]);
    let long = "n".repeat(129);
    for bad in ["", "has space", "star*", "é", long.as_str()] {
        let (status, body) = set_call("a.example.com", &p, bad).answer(emu.addr()).await;
        assert_eq!(
            (status, code(&body)),
            (400, "InvalidParameter.CertName"),
            "{bad:?}"
        );
    }
    let (status, body) = set_call("a.example.com", &p, "x")
        .without("CertName")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (400, "InvalidParameter.CertName"));
    let ok = format!("A-z_0.9{}", "n".repeat(121));
    assert_eq!(ok.len(), 128);
    let (status, body) = set_call("a.example.com", &p, &ok).answer(emu.addr()).await;
    assert_eq!(status, 200, "{body}");
    emu.shutdown().await;
}

#[tokio::test]
async fn a_cert_name_reused_for_other_content_needs_force_set() {
    let emu = emulator().await;
    let ca = ca();
    let first = pair(&ca, &["a.example.com"]);
    let second = pair(&ca, &["a.example.com"]);
    assert_eq!(
        set_call("a.example.com", &first, "same")
            .answer(emu.addr())
            .await
            .0,
        200
    );
    // The same content under the same name is fine without ForceSet.
    let (status, _) = set_call("a.example.com", &first, "same")
        .without("ForceSet")
        .answer(emu.addr())
        .await;
    assert_eq!(status, 200);
    let (status, body) = set_call("a.example.com", &second, "same")
        .without("ForceSet")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (400, "Certificate.Duplicated"));
    assert_eq!(emu.served()["a.example.com"].fingerprint, first.fingerprint);
    let (status, _) = set_call("a.example.com", &second, "same")
        .answer(emu.addr())
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        emu.served()["a.example.com"].fingerprint,
        second.fingerprint
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn ssl_protocol_must_be_on_and_cert_type_upload() {
    let emu = emulator().await;
    let p = pair(&ca(), &["a.example.com"]);
    let (status, body) = set_call("a.example.com", &p, "n")
        .set("SSLProtocol", "off")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (400, "InvalidParameter.SSLProtocol"));
    let (status, body) = set_call("a.example.com", &p, "n")
        .set("SSLProtocol", "yes")
        .answer(emu.addr())
        .await;
    assert_eq!(
        (status, code(&body)),
        (400, "InvalidSSLProtocol.ValueNotSupported")
    );
    let (status, body) = set_call("a.example.com", &p, "n")
        .set("CertType", "free")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (400, "InvalidParameter.CertType"));
    // CertType=cas binds a CAS certificate by CertName: none is named "n".
    let (status, body) = set_call("a.example.com", &p, "n")
        .set("CertType", "cas")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (404, "CertificateNotFound"));
    assert!(emu.served().is_empty());
    emu.shutdown().await;
}

// ---------------------------------------------------------------- per-domain writes

/// `SetCdnDomainSSLCertificate` as certrotd sends it (no `ForceSet`).
fn set_ssl_call(domain: &str, p: &Pair, name: &str) -> Call {
    Call::new(ACTION_SET_SSL)
        .set("DomainName", domain)
        .set("SSLProtocol", "on")
        .set("CertType", "upload")
        .set("CertName", name)
        .set("SSLPub", &p.chain)
        .set("SSLPri", &p.key)
}

#[tokio::test]
async fn a_per_domain_call_is_served_and_logged_as_a_write() {
    let emu = emulator().await;
    let p = pair(&ca(), &["a.example.com"]);
    let call = set_ssl_call("A.example.com", &p, "example-cert");
    let (status, body) = call.answer(emu.addr()).await;
    assert_eq!(status, 200, "{body}");
    let request_id = body["RequestId"].as_str().expect("a RequestId").to_string();

    let served = emu.served();
    assert_eq!(served.keys().collect::<Vec<_>>(), ["a.example.com"]);
    let s = &served["a.example.com"];
    assert_eq!(s.fingerprint, p.fingerprint);
    assert_eq!(s.cert_name, "example-cert");
    assert_eq!(s.chain_pem, p.chain);
    assert_eq!(s.request_id, request_id);

    let log = emu.log();
    assert_eq!(log.len(), 1);
    let e = &log[0];
    assert!(e.is_write() && e.succeeded());
    assert_eq!(e.action, ACTION_SET_SSL);
    assert_eq!(e.domains, ["a.example.com"]);
    assert_eq!(e.cert_name.as_deref(), Some("example-cert"));
    assert_eq!(e.fingerprint, Some(p.fingerprint));
    assert_eq!(e.request_id, request_id);
    emu.shutdown().await;
}

#[tokio::test]
async fn a_per_domain_call_names_exactly_one_known_domain() {
    let emu = emulator().await;
    let p = pair(&ca(), &["a.example.com", "b.example.com"]);
    let (status, body) = set_ssl_call("a.example.com,b.example.com", &p, "n")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (400, "InvalidParameter.DomainName"));
    assert!(message(&body).contains("exactly one"), "{body}");
    let (status, body) = set_ssl_call("x.example.org", &p, "n")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (404, "InvalidDomain.NotFound"));
    assert!(message(&body).contains("x.example.org"), "{body}");
    let (status, body) = set_ssl_call("a.example.com", &p, "n")
        .without("DomainName")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (400, "MissingParameter"));
    assert!(emu.served().is_empty());
    emu.shutdown().await;
}

#[tokio::test]
async fn a_per_domain_call_gets_the_batch_calls_checks() {
    let emu = emulator().await;
    let ca = ca();
    let p = pair(&ca, &["a.example.com"]);
    let other = pair(&ca, &["a.example.com"]);
    let elsewhere = pair(&ca, &["z.example.org"]);
    let refused = [
        (
            set_ssl_call("a.example.com", &p, "n").set("SSLProtocol", "off"),
            "InvalidParameter.SSLProtocol",
        ),
        (
            set_ssl_call("a.example.com", &p, "n").set("CertType", "free"),
            "InvalidParameter.CertType",
        ),
        (
            // A CAS binding by CertId needs CertRegion too (peers see this code).
            set_ssl_call("a.example.com", &p, "n")
                .set("CertType", "cas")
                .set("CertId", "1"),
            "SSLPri.MissingParameter",
        ),
        (
            set_ssl_call("a.example.com", &p, "has space"),
            "InvalidParameter.CertName",
        ),
        (
            set_ssl_call("a.example.com", &p, "n").set("SSLPri", &other.key),
            "Certificate.MissMatch",
        ),
    ];
    for (call, expected) in refused {
        let (status, body) = call.answer(emu.addr()).await;
        assert_eq!((status, code(&body)), (400, expected), "{body}");
    }
    let (status, _) = set_ssl_call("a.example.com", &elsewhere, "n")
        .answer(emu.addr())
        .await;
    assert_eq!(status, 400, "a certificate that does not cover the domain");
    assert!(emu.served().is_empty());

    // A CertName names one content, and this call has no ForceSet to take it over.
    let (status, _) = set_ssl_call("a.example.com", &p, "same")
        .answer(emu.addr())
        .await;
    assert_eq!(status, 200);
    let (status, body) = set_ssl_call("a.example.com", &other, "same")
        .set("ForceSet", "1")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (400, "Certificate.Duplicated"));
    assert_eq!(emu.served()["a.example.com"].fingerprint, p.fingerprint);
    emu.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn per_domain_writes_have_their_own_budget() {
    let emu = emulator().await;
    let p = pair(&ca(), &["a.example.com"]);
    for i in 0..30 {
        let (status, body) = set_ssl_call("a.example.com", &p, "n")
            .answer(emu.addr())
            .await;
        assert_eq!(status, 200, "call {i}: {body}");
    }
    let (status, body) = set_ssl_call("a.example.com", &p, "n")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (400, "Throttling.User"));
    // The batch call's 10/s are untouched by the per-domain calls, and the other way round.
    for i in 0..10 {
        let (status, body) = set_call("a.example.com", &p, "n").answer(emu.addr()).await;
        assert_eq!(status, 200, "batch call {i}: {body}");
    }
    let (status, body) = set_call("a.example.com", &p, "n").answer(emu.addr()).await;
    assert_eq!((status, code(&body)), (400, "Throttling.User"));
    tokio::time::advance(Duration::from_secs(1)).await;
    let (status, body) = set_ssl_call("a.example.com", &p, "n")
        .answer(emu.addr())
        .await;
    assert_eq!(status, 200, "a second later: {body}");
    emu.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_per_domain_budget_is_configurable() {
    let emu = emulator_with(EmulatorConfig {
        per_domain_writes_per_second: 3,
        ..EmulatorConfig::with_domains(DOMAINS)
    })
    .await;
    let p = pair(&ca(), &["a.example.com"]);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            set_ssl_call("a.example.com", &p, "n")
                .answer(emu.addr())
                .await
                .0,
        );
    }
    assert_eq!(statuses, [200, 200, 200, 400]);
    emu.shutdown().await;

    let cfg = EmulatorConfig {
        per_domain_writes_per_second: 0,
        ..EmulatorConfig::default()
    };
    let err = Emulator::start("127.0.0.1:0".parse().expect("an address"), cfg)
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), "config");
    assert!(
        err.to_string().contains("--per-domain-writes-per-second"),
        "{err}"
    );
}

// ---------------------------------------------------------------- reads

#[tokio::test]
async fn describe_returns_what_was_pushed() {
    let emu = emulator().await;
    let ca = ca();
    let (status, body) = describe("a.example.com").answer(emu.addr()).await;
    assert_eq!(status, 200);
    let info = &body["CertInfos"]["CertInfo"][0];
    assert_eq!(info["ServerCertificateStatus"], "off");
    assert_eq!(info["DomainName"], "a.example.com");

    let p = pair(&ca, &["*.example.com", "example.com"]);
    let (status, body) = set_call("a.example.com,.example.com", &p, "wild")
        .answer(emu.addr())
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = describe(".example.com").answer(emu.addr()).await;
    assert_eq!(status, 200);
    assert!(body["RequestId"].is_string());
    let infos = body["CertInfos"]["CertInfo"].as_array().expect("a list");
    assert_eq!(infos.len(), 1);
    let info = &infos[0];
    assert_eq!(info["DomainName"], ".example.com");
    assert_eq!(info["CertName"], "wild");
    assert_eq!(info["CertType"], "upload");
    assert_eq!(info["ServerCertificateStatus"], "on");
    assert_eq!(info["ServerCertificate"], p.chain.as_str());
    assert_eq!(
        info["CertExpireTime"],
        api::api_time(p.cert.not_after).as_str()
    );
    assert_eq!(
        info["CertStartTime"],
        api::api_time(p.cert.not_before).as_str()
    );
    assert_eq!(info["CertDomainName"], "*.example.com,example.com");
    emu.shutdown().await;
}

#[tokio::test]
async fn user_domains_are_paged() {
    let domains: Vec<String> = (0..7).map(|i| format!("d{i}.example.com")).collect();
    let emu = emulator_with(EmulatorConfig::with_domains(domains.clone())).await;
    let p = pair(&ca(), &["d1.example.com"]);
    assert_eq!(
        set_call("d1.example.com", &p, "n")
            .answer(emu.addr())
            .await
            .0,
        200
    );
    let mut seen = Vec::new();
    for page in 1..=4 {
        let (status, body) = Call::new(ACTION_USER_DOMAINS)
            .set("PageSize", "3")
            .set("PageNumber", &page.to_string())
            .answer(emu.addr())
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["TotalCount"], 7);
        assert_eq!(body["PageNumber"], page);
        assert_eq!(body["PageSize"], 3);
        let data = body["Domains"]["PageData"].as_array().expect("a list");
        assert_eq!(data.len(), [3, 3, 1, 0][page - 1]);
        for d in data {
            assert_eq!(d["DomainStatus"], "online");
            let name = d["DomainName"].as_str().expect("a name");
            assert_eq!(
                d["SslProtocol"],
                if name == "d1.example.com" {
                    "on"
                } else {
                    "off"
                }
            );
            seen.push(name.to_string());
        }
    }
    assert_eq!(seen, domains);
    let (status, body) = Call::new(ACTION_USER_DOMAINS).answer(emu.addr()).await;
    assert_eq!((status, body["PageSize"].as_u64()), (200, Some(20)));
    let (status, body) = Call::new(ACTION_USER_DOMAINS)
        .set("PageSize", "500")
        .answer(emu.addr())
        .await;
    assert_eq!(
        (status, body["Domains"]["PageData"].as_array().map(Vec::len)),
        (200, Some(7))
    );
    for (k, v) in [
        ("PageSize", "501"),
        ("PageSize", "0"),
        ("PageNumber", "0"),
        ("PageNumber", "x"),
    ] {
        let (status, body) = Call::new(ACTION_USER_DOMAINS)
            .set(k, v)
            .answer(emu.addr())
            .await;
        assert_eq!(status, 400, "{k}={v}");
        assert!(code(&body).starts_with("InvalidParameter."), "{body}");
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn get_with_query_parameters_works_and_is_logged() {
    let emu = emulator().await;
    let (status, body) = describe("a.example.com")
        .get_method()
        .answer(emu.addr())
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = describe("a.example.com").answer(emu.addr()).await;
    assert_eq!(status, 200);
    let log = emu.log();
    assert_eq!(
        (log[0].method.as_str(), log[0].params_in_query),
        ("GET", true)
    );
    assert_eq!(
        (log[1].method.as_str(), log[1].params_in_query),
        ("POST", false)
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn parameters_split_between_query_and_body_are_signed_together() {
    let emu = emulator().await;
    let call = describe("a.example.com");
    let params = call.signed_params();
    let (query, body): (Vec<_>, Vec<_>) = params
        .into_iter()
        .partition(|(k, _)| k == "Action" || k == "Signature");
    let enc = |p: Vec<(String, String)>| {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(p)
            .finish()
    };
    let (status, resp) = raw(emu.addr(), "POST", &format!("/?{}", enc(query)), enc(body))
        .await
        .expect("an answer");
    assert_eq!(status, 200, "{resp}");
    assert!(emu.log()[0].params_in_query);
    emu.shutdown().await;
}

#[tokio::test]
async fn answers_carry_date_request_id_and_json_type() {
    let emu = emulator().await;
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(describe("a.example.com").signed_params())
        .finish();
    let (status, headers, bytes) = raw_parts(emu.addr(), "POST", "/", body)
        .await
        .expect("an answer");
    assert_eq!(status, 200);
    let value: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(
        headers["x-acs-request-id"].to_str().ok(),
        value["RequestId"].as_str()
    );
    assert!(
        headers.contains_key(hyper::header::DATE),
        "clients measure clock skew from Date"
    );
    assert_eq!(
        headers[hyper::header::CONTENT_TYPE],
        "application/json;charset=utf-8"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn a_long_url_gets_the_gateways_html_414() {
    let emu = emulator().await;
    let p = pair(&ca(), &["a.example.com"]);
    let call = set_call("a.example.com", &p, "n")
        .set("Padding", &"x".repeat(MAX_QUERY))
        .get_method();
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(call.signed_params())
        .finish();
    let (status, headers, bytes) =
        raw_parts(emu.addr(), "GET", &format!("/?{query}"), String::new())
            .await
            .expect("an answer");
    assert_eq!(status, 414);
    assert_eq!(headers[hyper::header::CONTENT_TYPE], "text/html");
    assert!(String::from_utf8_lossy(&bytes).starts_with("<html>"));
    assert!(serde_json::from_slice::<Value>(&bytes).is_err(), "not JSON");
    let log = emu.log();
    assert_eq!(
        (log[0].status, log[0].code.as_deref()),
        (Some(414), Some("RequestURITooLong"))
    );
    assert!(emu.served().is_empty());
    emu.shutdown().await;
}

// ---------------------------------------------------------------- faults

async fn statuses(seed: u64, n: usize) -> Vec<Option<u16>> {
    let cfg = EmulatorConfig {
        seed,
        faults: Faults {
            fail_rate: 0.3,
            internal_rate: 0.1,
            reset_rate: 0.1,
            throttle_rate: 0.1,
        },
        ..EmulatorConfig::with_domains(DOMAINS)
    };
    let emu = emulator_with(cfg).await;
    for _ in 0..n {
        let _ = describe("a.example.com").send(emu.addr()).await;
    }
    let out = emu.log().iter().map(|e| e.status).collect();
    emu.shutdown().await;
    out
}

#[tokio::test]
async fn faults_are_deterministic_for_a_seed() {
    let a = statuses(7, 40).await;
    let b = statuses(7, 40).await;
    let c = statuses(8, 40).await;
    assert_eq!(a, b);
    assert_ne!(a, c, "another seed, another sequence");
    for want in [None, Some(200), Some(400), Some(500), Some(503)] {
        assert!(a.contains(&want), "{want:?} in {a:?}");
    }
}

#[tokio::test]
async fn a_faulted_call_changes_nothing() {
    let cfg = EmulatorConfig {
        faults: Faults {
            fail_rate: 1.0,
            ..Faults::default()
        },
        ..EmulatorConfig::with_domains(DOMAINS)
    };
    let emu = emulator_with(cfg).await;
    let p = pair(&ca(), &["a.example.com"]);
    let call = set_call("a.example.com", &p, "n");
    let (status, body) = call.answer(emu.addr()).await;
    assert_eq!((status, code(&body)), (503, "ServiceUnavailable"));
    assert!(emu.served().is_empty());
    assert!(emu.log()[0].injected);

    emu.set_faults(Faults {
        internal_rate: 1.0,
        ..Faults::default()
    })
    .expect("valid rates");
    let (status, body) = call.answer(emu.addr()).await;
    assert_eq!((status, code(&body)), (500, "InternalError"));
    let err = emu
        .set_faults(Faults {
            fail_rate: 2.0,
            ..Faults::default()
        })
        .expect_err("not a probability");
    assert_eq!(err.kind(), "config");

    emu.set_faults(Faults {
        throttle_rate: 1.0,
        ..Faults::default()
    })
    .expect("valid rates");
    let (status, body) = call.answer(emu.addr()).await;
    assert_eq!((status, code(&body)), (400, "Throttling.User"));
    assert!(emu.log()[2].injected);

    // The same signed request (same nonce) goes through once the faults stop.
    emu.set_faults(Faults::default()).expect("valid rates");
    let (status, body) = call.answer(emu.addr()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(emu.served().len(), 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn reset_drops_the_connection_without_an_answer() {
    let cfg = EmulatorConfig {
        faults: Faults {
            reset_rate: 1.0,
            ..Faults::default()
        },
        ..EmulatorConfig::with_domains(DOMAINS)
    };
    let emu = emulator_with(cfg).await;
    let p = pair(&ca(), &["a.example.com"]);
    let err = set_call("a.example.com", &p, "n")
        .send(emu.addr())
        .await
        .expect_err("no answer");
    assert!(err.is_incomplete_message() || err.is_closed(), "{err:?}");
    let log = emu.log();
    assert_eq!(
        (log[0].status, log[0].code.as_deref()),
        (None, Some("ConnectionReset"))
    );
    assert!(emu.served().is_empty());
    emu.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn latency_delays_every_answer() {
    let cfg = EmulatorConfig {
        latency: Duration::from_millis(300),
        ..EmulatorConfig::with_domains(DOMAINS)
    };
    let emu = emulator_with(cfg).await;
    let start = tokio::time::Instant::now();
    assert_eq!(describe("a.example.com").answer(emu.addr()).await.0, 200);
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(400),
        "{elapsed:?}"
    );
    emu.shutdown().await;
}

#[test]
fn fault_rates_are_validated() {
    let bad = [
        Faults {
            fail_rate: 1.5,
            ..Faults::default()
        },
        Faults {
            reset_rate: -0.1,
            ..Faults::default()
        },
        Faults {
            throttle_rate: f64::NAN,
            ..Faults::default()
        },
        Faults {
            fail_rate: 0.6,
            internal_rate: 0.5,
            ..Faults::default()
        },
    ];
    for f in bad {
        let err = f.validate().expect_err("refused");
        assert_eq!(err.kind(), "config");
        assert!(err.to_string().contains("rate"), "{err}");
    }
    assert!(
        Faults {
            fail_rate: 0.5,
            reset_rate: 0.5,
            ..Faults::default()
        }
        .validate()
        .is_ok()
    );
}

#[tokio::test]
async fn bad_settings_are_refused_at_start() {
    let cfg = EmulatorConfig {
        max_domains_per_call: 0,
        ..EmulatorConfig::default()
    };
    let err = Emulator::start("127.0.0.1:0".parse().expect("an address"), cfg)
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), "config");
    assert!(err.to_string().contains("--max-domains-per-call"));

    let taken = emulator().await;
    let err = Emulator::start(taken.addr(), EmulatorConfig::default())
        .await
        .expect_err("port in use");
    assert_eq!(err.kind(), "bind");
    assert!(err.to_string().contains(&taken.addr().to_string()));
    assert_eq!(io::Error::from(err).kind(), io::ErrorKind::AddrInUse);
    taken.shutdown().await;
}

// ---------------------------------------------------------------- console changes, dump

#[tokio::test]
async fn console_changes_show_in_describe() {
    let emu = emulator().await;
    let p = pair(&ca(), &["a.example.com"]);
    emu.set_served("a.example.com", &p.cert, "from-console")
        .await
        .expect("known domain");
    let (_, body) = describe("a.example.com").answer(emu.addr()).await;
    let info = &body["CertInfos"]["CertInfo"][0];
    assert_eq!(info["CertName"], "from-console");
    assert_eq!(info["ServerCertificate"], p.chain.as_str());
    emu.clear_served("a.example.com")
        .await
        .expect("known domain");
    let (_, body) = describe("a.example.com").answer(emu.addr()).await;
    assert_eq!(
        body["CertInfos"]["CertInfo"][0]["ServerCertificateStatus"],
        "off"
    );
    let err = emu
        .clear_served("nope.example.com")
        .await
        .expect_err("unknown");
    assert_eq!(err.kind(), "unknown-domain");
    emu.shutdown().await;
}

#[tokio::test]
async fn the_state_dump_follows_every_request_and_holds_no_key() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("dump.json");
    let cfg = EmulatorConfig {
        state_dump: Some(path.clone()),
        ..EmulatorConfig::with_domains(DOMAINS)
    };
    let emu = emulator_with(cfg).await;
    let first = Dump::read(&path).expect("written at start");
    assert_eq!(
        (first.version, first.served.len(), first.log.len()),
        (Dump::VERSION, 0, 0)
    );

    let p = pair(&ca(), &["a.example.com"]);
    assert_eq!(
        set_call("a.example.com", &p, "n")
            .answer(emu.addr())
            .await
            .0,
        200
    );
    // Readable as soon as the answer arrived.
    let dump = Dump::read(&path).expect("a dump");
    assert_eq!(dump.log, emu.log());
    assert_eq!(dump.served["a.example.com"].fingerprint, p.fingerprint);

    let (_, body) = set_call("a.example.com", &p, "n")
        .secret("wrong")
        .answer(emu.addr())
        .await;
    assert_eq!(code(&body), "SignatureDoesNotMatch");
    emu.set_served("b.example.com", &p.cert, "console")
        .await
        .expect("known");
    emu.shutdown().await;

    let text = std::fs::read_to_string(&path).expect("the final dump");
    let key_body: String = p.key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains(&key_body[..40]),
        "no key material"
    );
    assert!(!text.contains(SECRET));
    let last = Dump::read(&path).expect("a dump");
    assert_eq!(last.log.len(), 2);
    assert!(last.log.iter().all(|e| e.signature == "v1"));
    // A dump written before entries named their signature reads them as v1.
    let mut old: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    for e in old["log"].as_array_mut().expect("a log") {
        e.as_object_mut().expect("an entry").remove("signature");
    }
    std::fs::write(dir.path().join("old.json"), old.to_string()).expect("write");
    let read = Dump::read(&dir.path().join("old.json")).expect("an old dump");
    assert_eq!(read.log, last.log);
    std::fs::remove_file(dir.path().join("old.json")).expect("remove");
    assert_eq!(last.served.len(), 2);
    let names: Vec<_> = std::fs::read_dir(dir.path()).expect("list").collect();
    assert_eq!(names.len(), 1, "no temp files left behind");

    let err = Dump::read(&dir.path().join("missing.json")).expect_err("no file");
    assert_eq!(err.kind(), "dump-read");
    std::fs::write(dir.path().join("bad.json"), "{\"version\":").expect("write");
    let err = Dump::read(&dir.path().join("bad.json")).expect_err("not a dump");
    assert_eq!(err.kind(), "dump-read");
    assert!(err.to_string().contains("bad.json"));
}

#[tokio::test]
async fn an_unwritable_dump_is_refused_at_start() {
    let cfg = EmulatorConfig {
        state_dump: Some("/nonexistent-certrotd-dir/dump.json".into()),
        ..EmulatorConfig::with_domains(DOMAINS)
    };
    let err = Emulator::start("127.0.0.1:0".parse().expect("an address"), cfg)
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), "state-dump");
    assert!(
        err.to_string()
            .contains("/nonexistent-certrotd-dir/dump.json")
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused() {
    let emu = emulator().await;
    let (status, body) = raw(
        emu.addr(),
        "POST",
        "/",
        "a=".to_string() + &"x".repeat(MAX_BODY),
    )
    .await
    .expect("an answer");
    assert_eq!((status, code(&body)), (413, "RequestEntityTooLarge"));
    emu.shutdown().await;
}

#[tokio::test]
async fn duplicate_parameters_are_refused() {
    let emu = emulator().await;
    let call = describe("a.example.com");
    let mut params = call.signed_params();
    params.push(("DomainName".into(), "b.example.com".into()));
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let (status, resp) = raw(emu.addr(), "POST", "/", body).await.expect("an answer");
    assert_eq!((status, code(&resp)), (400, "InvalidParameter"));
    assert!(message(&resp).contains("DomainName"));
    emu.shutdown().await;
}

// ---------------------------------------------------------------- domains file, signer

#[test]
fn domains_files_are_read_and_checked() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("domains");
    std::fs::write(
        &path,
        "# CDN domains\nB.example.com\n\n.example.com  # wildcard\na.example.com\na.example.com\n",
    )
    .expect("write");
    assert_eq!(
        load_domains_file(&path).expect("valid"),
        [".example.com", "a.example.com", "b.example.com"]
    );

    std::fs::write(&path, "a.example.com\n*.example.com\n").expect("write");
    let err = load_domains_file(&path).expect_err("refused");
    assert_eq!(err.kind(), "domain-line");
    let text = err.to_string();
    assert!(
        text.contains(&format!("{}:2:", path.display())) && text.contains(".example.com"),
        "{text}"
    );

    std::fs::write(&path, "a b.example.com\n").expect("write");
    assert_eq!(
        load_domains_file(&path).expect_err("refused").kind(),
        "domain-line"
    );
    std::fs::write(&path, "localhost\n").expect("write");
    assert_eq!(
        load_domains_file(&path).expect_err("refused").kind(),
        "domain-line"
    );

    std::fs::write(&path, "# nothing\n\n").expect("write");
    assert_eq!(
        load_domains_file(&path).expect_err("refused").kind(),
        "no-domains"
    );

    let err = load_domains_file(&dir.path().join("missing")).expect_err("refused");
    assert_eq!(err.kind(), "domains-file");
    assert!(err.to_string().contains("missing"));
}

#[test]
fn the_signature_check_uses_the_documented_algorithm() {
    // Vector 1 of shared/aliyun/signature-vectors.md.
    let params: Vec<(String, String)> = [
        ("AccessKeyId", "testid"),
        ("Action", "DescribeRegions"),
        ("Format", "XML"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
        ("SignatureVersion", "1.0"),
        ("Timestamp", "2016-02-23T12:46:24Z"),
        ("Version", "2014-05-26"),
        ("Signature", "ignored"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (sts, sig) = api::expected_signature("GET", &params, "testsecret");
    assert!(sts.starts_with("GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions"));
    assert_eq!(sig, "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
}

#[test]
fn the_config_debug_hides_the_secret() {
    let cfg = EmulatorConfig::with_domains(DOMAINS);
    let text = format!("{cfg:?}");
    assert!(!text.contains(SECRET) && text.contains("<redacted>"));
}

// ---------------------------------------------------------------- signature V3

/// The v1 envelope parameters, which a V3 request carries in headers instead.
const V1_ENVELOPE: [&str; 8] = [
    "Action",
    "Format",
    "Version",
    "AccessKeyId",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "Timestamp",
];

/// A V3-signed request under construction: the action's parameters in the form body (or,
/// for GET, the query), the envelope in `x-acs-*` headers, signed by certrotd's signer.
struct V3 {
    method: &'static str,
    action: String,
    version: String,
    params: Vec<(String, String)>,
    access_key_id: String,
    secret: String,
    date: OffsetDateTime,
    nonce: String,
}

/// What goes on the wire, open to tampering before it is sent.
struct Wire {
    method: &'static str,
    uri: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Wire {
    fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(n, _)| n != name);
        self.headers.push((name.to_string(), value.to_string()));
    }

    fn without_header(mut self, name: &str) -> Wire {
        self.headers.retain(|(n, _)| n != name);
        self
    }

    async fn send(&self, addr: SocketAddr) -> (u16, Value) {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the emulator");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("a handshake");
        tokio::spawn(conn);
        let mut req = Request::builder().method(self.method).uri(&self.uri);
        for (n, v) in &self.headers {
            req = req.header(n, v);
        }
        let req = req
            .body(Full::new(Bytes::from(self.body.clone())))
            .expect("a valid request");
        let resp = sender.send_request(req).await.expect("an answer");
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("a body").to_bytes();
        (status, serde_json::from_slice(&bytes).expect("a JSON body"))
    }
}

impl V3 {
    fn new(action: &str) -> V3 {
        V3 {
            method: "POST",
            action: action.to_string(),
            version: VERSION.to_string(),
            params: Vec::new(),
            access_key_id: DEFAULT_ACCESS_KEY_ID.to_string(),
            secret: SECRET.to_string(),
            date: OffsetDateTime::now_utc(),
            nonce: nonce(),
        }
    }

    /// The same call as a v1 `Call`, V3-signed.
    fn from_call(call: &Call) -> V3 {
        let action = call
            .params
            .iter()
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let mut v3 = V3::new(&action);
        v3.params = call
            .params
            .iter()
            .filter(|(k, _)| !V1_ENVELOPE.contains(&k.as_str()))
            .cloned()
            .collect();
        v3
    }

    fn wire(&self, addr: SocketAddr) -> Wire {
        let host = addr.to_string();
        let encoded = crate::aliyun::sign::encode_pairs(
            self.params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let (query, body): (&[(String, String)], &str) = if self.method == "GET" {
            (&self.params, "")
        } else {
            (&[], encoded.as_str())
        };
        let call = crate::aliyun::sign::V3Call {
            method: self.method,
            host: &host,
            query,
            body: body.as_bytes(),
            action: &self.action,
            version: &self.version,
            date: self.date,
            nonce: &self.nonce,
        };
        let key = crate::aliyun::sign::V3Key {
            access_key_id: &self.access_key_id,
            secret: &self.secret,
            security_token: None,
        };
        let signed = crate::aliyun::sign::sign_v3(&call, &key);
        let uri = if query.is_empty() {
            "/".to_string()
        } else {
            format!("/?{}", encoded.as_str())
        };
        Wire {
            method: self.method,
            uri,
            headers: signed
                .0
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
            body: body.to_string(),
        }
    }

    async fn answer(&self, addr: SocketAddr) -> (u16, Value) {
        self.wire(addr).send(addr).await
    }
}

fn v3_set(domains: &str, p: &Pair, name: &str) -> V3 {
    V3::from_call(&set_call(domains, p, name))
}

#[tokio::test]
async fn a_v3_signed_batch_set_is_accepted_and_logged() {
    let emu = emulator().await;
    let p = pair(&ca(), &["a.example.com", "b.example.com"]);
    let call = v3_set("a.example.com,b.example.com", &p, "v3-cert");
    let (status, body) = call.answer(emu.addr()).await;
    assert_eq!(status, 200, "{body}");
    let served = emu.served();
    assert_eq!(
        served.keys().collect::<Vec<_>>(),
        ["a.example.com", "b.example.com"]
    );
    assert!(served.values().all(|s| s.fingerprint == p.fingerprint));
    let log = emu.log();
    let e = &log[0];
    assert!(e.is_write() && e.succeeded() && !e.params_in_query);
    assert_eq!(e.action, ACTION_SET);
    assert_eq!(e.access_key_id, DEFAULT_ACCESS_KEY_ID);
    assert_eq!(e.signature, "v3");
    assert_eq!(e.signature_nonce, call.nonce);
    assert_eq!(e.timestamp, timestamp(call.date));
    assert_eq!(e.cert_name.as_deref(), Some("v3-cert"));

    // A read, V3-signed as a GET with its parameters in the query.
    let mut read = V3::from_call(&describe("a.example.com"));
    read.method = "GET";
    let (status, body) = read.answer(emu.addr()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["CertInfos"]["CertInfo"][0]["CertName"].as_str(),
        Some("v3-cert")
    );
    assert!(emu.log()[1].params_in_query);
    emu.shutdown().await;
}

#[tokio::test]
async fn a_v3_call_with_the_wrong_secret_is_refused_without_echoing_parameters() {
    let emu = emulator().await;
    let p = pair(&ca(), &["a.example.com"]);
    let mut call = v3_set("a.example.com", &p, "n");
    call.secret = "wrong".to_string();
    let (status, body) = call.answer(emu.addr()).await;
    assert_eq!((status, code(&body)), (400, "SignatureDoesNotMatch"));
    assert!(
        message(&body).contains("server StringToSign is [ACS3-HMAC-SHA256\n"),
        "{body}"
    );
    assert!(!message(&body).contains("PRIVATE KEY"), "{body}");
    assert!(emu.served().is_empty());
    emu.shutdown().await;
}

#[tokio::test]
async fn a_v3_call_whose_body_or_signed_headers_changed_is_refused() {
    let emu = emulator().await;
    let p = pair(&ca(), &["a.example.com"]);

    // The body changed after signing: its hash no longer matches x-acs-content-sha256.
    let mut wire = v3_set("a.example.com", &p, "name-1").wire(emu.addr());
    wire.body = wire.body.replace("name-1", "name-2");
    let (status, body) = wire.send(emu.addr()).await;
    assert_eq!((status, code(&body)), (400, "SignatureDoesNotMatch"));
    assert!(message(&body).contains("x-acs-content-sha256"), "{body}");

    // The body and its hash both changed: the hash is signed.
    let mut wire = v3_set("a.example.com", &p, "name-1").wire(emu.addr());
    wire.body = wire.body.replace("name-1", "name-2");
    let hash = crate::aliyun::sign::hex_sha256(wire.body.as_bytes());
    wire.set_header("x-acs-content-sha256", &hash);
    let (status, body) = wire.send(emu.addr()).await;
    assert_eq!((status, code(&body)), (400, "SignatureDoesNotMatch"));
    assert!(message(&body).contains("StringToSign"), "{body}");

    // Another signed header (the action) changed.
    let mut wire = v3_set("a.example.com", &p, "name-1").wire(emu.addr());
    wire.set_header("x-acs-action", ACTION_DESCRIBE_CERT);
    let (status, body) = wire.send(emu.addr()).await;
    assert_eq!((status, code(&body)), (400, "SignatureDoesNotMatch"));

    // A query parameter changed after signing.
    let mut read = V3::from_call(&describe("a.example.com"));
    read.method = "GET";
    let mut wire = read.wire(emu.addr());
    assert_eq!(wire.uri, "/?DomainName=a.example.com");
    wire.uri = "/?DomainName=b.example.com".to_string();
    let (status, body) = wire.send(emu.addr()).await;
    assert_eq!((status, code(&body)), (400, "SignatureDoesNotMatch"));
    assert!(emu.served().is_empty());
    emu.shutdown().await;
}

#[tokio::test]
async fn v3_dates_outside_fifteen_minutes_are_refused() {
    let emu = emulator().await;
    let now = OffsetDateTime::now_utc();
    for (minutes, want) in [
        (-16, Some("InvalidTimeStamp.Expired")),
        (16, Some("InvalidTimeStamp.Expired")),
        (-14, None),
        (14, None),
    ] {
        let mut call = V3::from_call(&describe("a.example.com"));
        call.date = now + time::Duration::minutes(minutes);
        let (status, body) = call.answer(emu.addr()).await;
        match want {
            Some(c) => assert_eq!((status, code(&body)), (400, c), "{minutes} min"),
            None => assert_eq!(status, 200, "{minutes} min: {body}"),
        }
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn a_v3_nonce_is_accepted_once_and_shared_with_v1() {
    let emu = emulator().await;
    let call = V3::from_call(&describe("a.example.com"));
    assert_eq!(call.answer(emu.addr()).await.0, 200);
    let (status, body) = call.answer(emu.addr()).await;
    assert_eq!((status, code(&body)), (400, "SignatureNonceUsed"));

    // A nonce a v1 call used is used for V3 too.
    let v1 = describe("a.example.com");
    assert_eq!(v1.answer(emu.addr()).await.0, 200);
    let mut again = V3::from_call(&describe("a.example.com"));
    again.nonce = v1.nonce();
    let (status, body) = again.answer(emu.addr()).await;
    assert_eq!((status, code(&body)), (400, "SignatureNonceUsed"));
    emu.shutdown().await;
}

#[tokio::test]
async fn v3_envelope_defects_get_their_codes() {
    let emu = emulator().await;
    let addr = emu.addr();
    let good = || V3::from_call(&describe("a.example.com"));

    let mut wire = good().wire(addr);
    wire.set_header("authorization", "ACS3-HMAC-SHA256 Credential=emulator");
    let (status, body) = wire.send(addr).await;
    assert_eq!((status, code(&body)), (400, "IncompleteSignature"));

    let mut wire = good().wire(addr);
    wire.set_header(
        "authorization",
        "ACS3-HMAC-SM3 Credential=a,SignedHeaders=host,Signature=b",
    );
    let (status, body) = wire.send(addr).await;
    assert_eq!((status, code(&body)), (400, "IncompleteSignature"));

    for header in [
        "x-acs-date",
        "x-acs-signature-nonce",
        "x-acs-action",
        "x-acs-content-sha256",
    ] {
        let (status, body) = good().wire(addr).without_header(header).send(addr).await;
        assert_eq!((status, code(&body)), (400, "MissingParameter"), "{header}");
        assert!(message(&body).contains(header), "{body}");
    }

    // An x-acs-* header left out of SignedHeaders (here: added after signing).
    let mut wire = good().wire(addr);
    wire.set_header("x-acs-extra", "1");
    let (status, body) = wire.send(addr).await;
    assert_eq!((status, code(&body)), (400, "IncompleteSignature"));
    assert!(message(&body).contains("x-acs-extra"), "{body}");

    let mut call = good();
    call.access_key_id = "nobody".to_string();
    let (status, body) = call.answer(addr).await;
    assert_eq!((status, code(&body)), (404, "InvalidAccessKeyId.NotFound"));

    let mut call = good();
    call.version = "2014-11-11".to_string();
    let (status, body) = call.answer(addr).await;
    assert_eq!((status, code(&body)), (400, "InvalidVersion"));

    let mut wire = good().wire(addr);
    wire.set_header("x-acs-date", "2026-01-01 00:00:00");
    let (status, body) = wire.send(addr).await;
    // The date is signed: changing it breaks the signature before its format is read.
    assert_eq!((status, code(&body)), (400, "SignatureDoesNotMatch"));

    let mut call = good();
    call.action = "DeleteCdnDomain".to_string();
    let (status, body) = call.answer(addr).await;
    assert_eq!((status, code(&body)), (404, "InvalidAction.NotFound"));
    assert!(emu.log().iter().all(|e| !e.succeeded()));
    emu.shutdown().await;
}

/// Hex of SHA-256 and of HMAC-SHA256, straight from ring (not certrotd's signer).
fn sha256_hex(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac_sha256_hex(key: &str, data: &str) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_bytes());
    let tag = ring::hmac::sign(&k, data.as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_request_signed_by_hand_the_documented_way_is_accepted() {
    // The steps of Alibaba's "V3 request structure and signature", written out for a
    // DescribeDomainCertificateInfo GET (parameters in the query, empty body), with an
    // extra signed header as the official SDKs send (`accept`).
    let emu = emulator().await;
    let addr = emu.addr();
    let host = addr.to_string();
    let date = timestamp(OffsetDateTime::now_utc());
    let nonce = nonce();
    let empty = sha256_hex(b"");
    let query = "DomainName=a.example.com";
    let canonical_headers = format!(
        "accept:application/json\nhost:{host}\nx-acs-action:{ACTION_DESCRIBE_CERT}\n\
         x-acs-content-sha256:{empty}\nx-acs-date:{date}\nx-acs-signature-nonce:{nonce}\n\
         x-acs-version:{VERSION}\n"
    );
    let signed = "accept;host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version";
    let canonical = format!("GET\n/\n{query}\n{canonical_headers}\n{signed}\n{empty}");
    let string_to_sign = format!("ACS3-HMAC-SHA256\n{}", sha256_hex(canonical.as_bytes()));
    let signature = hmac_sha256_hex(SECRET, &string_to_sign);
    let wire = Wire {
        method: "GET",
        uri: format!("/?{query}"),
        headers: [
            ("host", host.as_str()),
            ("accept", "application/json"),
            ("x-acs-action", ACTION_DESCRIBE_CERT),
            ("x-acs-version", VERSION),
            ("x-acs-date", &date),
            ("x-acs-signature-nonce", &nonce),
            ("x-acs-content-sha256", &empty),
            ("user-agent", "not signed"),
            (
                "authorization",
                &format!(
                    "ACS3-HMAC-SHA256 Credential={DEFAULT_ACCESS_KEY_ID},SignedHeaders={signed},Signature={signature}"
                ),
            ),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect(),
        body: String::new(),
    };
    let (status, body) = wire.send(addr).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["CertInfos"]["CertInfo"][0]["DomainName"].as_str(),
        Some("a.example.com")
    );
    emu.shutdown().await;
}

#[test]
fn the_v3_check_reproduces_the_official_example() {
    // V3-1 of shared/aliyun/signature-vectors.md, as the emulator would receive it.
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let req = api::Incoming {
        method: "POST".to_string(),
        path: "/".to_string(),
        headers: pairs(&[
            ("host", "ecs.cn-shanghai.aliyuncs.com"),
            ("x-acs-action", "RunInstances"),
            ("x-acs-version", "2014-05-26"),
            ("x-acs-date", "2023-10-26T10:22:32Z"),
            ("x-acs-signature-nonce", "3156853299f313e23d1673dc12e1703d"),
            (
                "x-acs-content-sha256",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
            ("content-length", "0"),
        ]),
        query: Some(
            "RegionId=cn-shanghai&ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd"
                .to_string(),
        ),
        body: Bytes::new(),
        too_large: false,
    };
    let auth = crate::aliyun::sign::parse_authorization_v3(
        "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=x",
    )
    .expect("a V3 Authorization");
    let (sts, sig) = api::expected_signature_v3(&req, &auth, "YourAccessKeySecret");
    assert_eq!(
        sts,
        "ACS3-HMAC-SHA256\n7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
    );
    assert_eq!(
        sig,
        "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
    );
}

#[tokio::test]
async fn request_ids_do_not_repeat_across_restarts_with_the_same_seed() {
    let mut ids = Vec::new();
    for _ in 0..2 {
        let emu = emulator().await;
        let (_, body) = describe("a.example.com").answer(emu.addr()).await;
        ids.push(body["RequestId"].as_str().expect("a RequestId").to_string());
        emu.shutdown().await;
    }
    assert_ne!(ids[0], ids[1], "the same seed, yet a new RequestId");
}

// ---------------------------------------------------------------- DCDN, retired batch call, offline

async fn dcdn_emulator() -> Emulator {
    let mut cfg = EmulatorConfig::with_domains(DOMAINS);
    cfg.product = Product::Dcdn;
    emulator_with(cfg).await
}

fn dcdn(call: Call) -> Call {
    call.set("Version", dcdn::DCDN_VERSION)
}

#[tokio::test]
async fn a_dcdn_emulator_serves_the_dcdn_calls_in_their_own_shapes() {
    let emu = dcdn_emulator().await;
    let p = pair(&ca(), &["a.example.com"]);
    let mut call = set_ssl_call("a.example.com", &p, "edge-cert");
    call = dcdn(call.set("Action", dcdn::ACTION_SET_DCDN_SSL));
    let (status, body) = call.answer(emu.addr()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(emu.served()["a.example.com"].fingerprint, p.fingerprint);

    let read = dcdn(Call::new(dcdn::ACTION_DESCRIBE_DCDN_CERT).set("DomainName", "a.example.com"));
    let (status, body) = read.answer(emu.addr()).await;
    assert_eq!(status, 200, "{body}");
    let info = &body["CertInfos"]["CertInfo"][0];
    assert_eq!(info["SSLProtocol"], "on");
    assert_eq!(info["SSLPub"].as_str(), Some(p.chain.as_str()));
    assert!(info.get("ServerCertificate").is_none(), "{info}");

    let list = dcdn(Call::new(dcdn::ACTION_DCDN_USER_DOMAINS).set("PageSize", "2"));
    let (status, body) = list.answer(emu.addr()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["TotalCount"], 4);
    let page = body["Domains"]["PageData"].as_array().expect("PageData");
    assert_eq!(page.len(), 2);
    assert!(
        page.iter().all(|d| d.get("SSLProtocol").is_some()),
        "{body}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn a_dcdn_emulator_refuses_the_cdn_version_and_actions() {
    let emu = dcdn_emulator().await;
    let p = pair(&ca(), &["a.example.com"]);
    // The CDN's version: refused as the wrong version.
    let call = set_ssl_call("a.example.com", &p, "n").set("Action", dcdn::ACTION_SET_DCDN_SSL);
    let (status, body) = call.answer(emu.addr()).await;
    assert_eq!((status, code(&body)), (400, "InvalidVersion"));
    assert!(message(&body).contains("2018-01-15"), "{body}");
    assert_eq!(body["HostId"], "dcdn.aliyuncs.com");
    // The CDN's actions (and the retired DCDN batch call) do not exist here.
    for action in [
        ACTION_SET_SSL,
        ACTION_SET,
        ACTION_DESCRIBE_CERT,
        "BatchSetDcdnDomainCertificate",
    ] {
        let (status, body) = dcdn(set_ssl_call("a.example.com", &p, "n").set("Action", action))
            .answer(emu.addr())
            .await;
        assert_eq!(
            (status, code(&body)),
            (404, "InvalidAction.NotFound"),
            "{action}"
        );
    }
    assert!(emu.served().is_empty());
    // And a CDN emulator knows no DCDN action.
    let cdn = emulator().await;
    let call = set_ssl_call("a.example.com", &p, "n").set("Action", dcdn::ACTION_SET_DCDN_SSL);
    let (status, body) = call.answer(cdn.addr()).await;
    assert_eq!((status, code(&body)), (404, "InvalidAction.NotFound"));
    cdn.shutdown().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn a_retired_batch_call_answers_invalid_action_and_the_per_domain_call_still_works() {
    let mut cfg = EmulatorConfig::with_domains(DOMAINS);
    cfg.batch_gone = true;
    let emu = emulator_with(cfg).await;
    let p = pair(&ca(), &["a.example.com"]);
    let (status, body) = set_call("a.example.com", &p, "n").answer(emu.addr()).await;
    assert_eq!((status, code(&body)), (404, "InvalidAction.NotFound"));
    assert!(message(&body).contains(ACTION_SET), "{body}");
    assert!(emu.served().is_empty());
    let (status, body) = set_ssl_call("a.example.com", &p, "n")
        .answer(emu.addr())
        .await;
    assert_eq!(status, 200, "{body}");
    emu.shutdown().await;
}

#[tokio::test]
async fn an_offline_domain_is_listed_offline_and_refuses_writes() {
    let mut cfg = EmulatorConfig::with_domains(DOMAINS);
    cfg.offline = vec!["B.example.com".to_string()];
    let emu = emulator_with(cfg).await;
    let p = pair(&ca(), &["a.example.com", "b.example.com"]);
    let (status, body) = set_ssl_call("b.example.com", &p, "n")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (403, "IllegalOperation"));
    assert!(message(&body).contains("b.example.com"), "{body}");
    let (status, body) = set_call("a.example.com,b.example.com", &p, "n")
        .answer(emu.addr())
        .await;
    assert_eq!((status, code(&body)), (403, "IllegalOperation"));
    assert!(
        emu.served().is_empty(),
        "a refused call changed the served state"
    );
    let (_, body) = Call::new(ACTION_USER_DOMAINS).answer(emu.addr()).await;
    let status_of = |d: &str| {
        body["Domains"]["PageData"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["DomainName"] == d))
            .map(|e| e["DomainStatus"].clone())
    };
    assert_eq!(status_of("b.example.com"), Some("offline".into()));
    assert_eq!(status_of("a.example.com"), Some("online".into()));
    emu.shutdown().await;

    let mut cfg = EmulatorConfig::with_domains(DOMAINS);
    cfg.offline = vec!["z.example.org".to_string()];
    let Err(err) = Emulator::start("127.0.0.1:0".parse().expect("addr"), cfg).await else {
        panic!("an unknown offline domain was accepted");
    };
    assert!(
        err.to_string().contains("--offline-domain z.example.org"),
        "{err}"
    );
}

#[tokio::test]
async fn the_log_records_parameter_names_never_values() {
    let emu = emulator().await;
    let p = pair(&ca(), &["a.example.com"]);
    let (status, _) = set_ssl_call("a.example.com", &p, "n")
        .answer(emu.addr())
        .await;
    assert_eq!(status, 200);
    let log = emu.log();
    assert_eq!(
        log[0].params,
        [
            "CertName",
            "CertType",
            "DomainName",
            "SSLPri",
            "SSLProtocol",
            "SSLPub"
        ]
    );
    let dump = serde_json::to_string(&log).expect("JSON");
    assert!(dump.contains("\"params\""), "{dump}");
    assert!(!dump.contains("PRIVATE KEY"), "key material in the log");
    // Dumps written before the field read as no names.
    let mut old: Value = serde_json::to_value(&log[0]).expect("JSON");
    old.as_object_mut().expect("an object").remove("params");
    let read: LogEntry = serde_json::from_value(old).expect("an old entry reads");
    assert!(read.params.is_empty());
    emu.shutdown().await;
}

#[tokio::test]
async fn a_dcdn_emulator_shares_the_cdn_emulators_cas_and_takes_no_seeds_of_its_own() {
    let cdn = emulator().await;
    let p = pair(&ca(), &["a.example.com"]);
    let id = cdn.seed_cas("mine", &p.chain, &p.key).await.expect("seed");
    let mut cfg = EmulatorConfig::with_domains(["edge.example.com"]);
    cfg.product = Product::Dcdn;
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    let mut seeded = cfg.clone();
    seeded.cas_user_certs = vec![("x".to_string(), p.chain.clone(), p.key.clone().into())];
    let err = Emulator::start_sharing_cas(addr, seeded, &cdn)
        .await
        .expect_err("seeds refused");
    assert!(err.to_string().contains("seed the first"), "{err}");
    let dcdn = Emulator::start_sharing_cas(addr, cfg, &cdn)
        .await
        .expect("dcdn emulator");
    let ids: Vec<u64> = dcdn.cas_certs().iter().map(|c| c.cert_id).collect();
    assert_eq!(ids, [id], "the DCDN emulator sees the CDN emulator's CAS");
    dcdn.shutdown().await;
    cdn.shutdown().await;
}

#[test]
fn the_rate_window_counts_arrivals_that_reach_the_lock_out_of_order() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut w = api::Window::default();
    // Arrived at 0, 900 and 10 ms (the last one won the state lock late): a limit of 3 is full.
    assert!(w.admit(t0, 3));
    assert!(w.admit(t0 + ms(900), 3));
    assert!(w.admit(t0 + ms(10), 3));
    assert!(!w.admit(t0 + ms(920), 3), "4 arrivals inside one window");
    // Once the window has passed the two early arrivals, two more fit, and no more.
    assert!(w.admit(t0 + RATE_WINDOW + ms(20), 3));
    assert!(w.admit(t0 + RATE_WINDOW + ms(30), 3));
    assert!(!w.admit(t0 + RATE_WINDOW + ms(40), 3));
}
