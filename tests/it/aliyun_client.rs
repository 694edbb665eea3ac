//! `aliyun::client` against the in-process emulator over loopback: success, every error
//! class, faults, a timeout, a wrong secret, and nothing in the URL.
//! (HTML bodies and TLS verification are covered by the client's unit tests, whose raw test
//! server can send what the emulator never does.)

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use certrotd::aliyun::client::{BatchSetRequest, Client, WallClock};
use certrotd::aliyun::credentials::{Credentials, Secret};
use certrotd::aliyun::error::Class;
use certrotd::cert::{self, Certificate};
use certrotd::config::AliyunSettings;
use certrotd::emulator::{self, Emulator, EmulatorConfig, Faults};
use certrotd::testca::{Leaf, TestCa};
use time::{OffsetDateTime, macros::datetime};

const DOMAINS: &[&str] = &["a.example.com", "b.example.com", ".example.com"];

fn settings(endpoint: &str, timeout: Duration) -> AliyunSettings {
    AliyunSettings {
        read_requests_per_second: 100,
        max_attempts: 1,
        timeout,
        ..AliyunSettings::defaults(endpoint)
    }
}

fn creds(id: &str, secret: &str) -> Credentials {
    Credentials::new(id, Secret::from(secret.to_string()), None, "test")
}

fn client_for(emu: &Emulator, secret: &str) -> Client {
    Client::new(
        &settings(&emu.endpoint(), Duration::from_secs(10)),
        creds(emulator::DEFAULT_ACCESS_KEY_ID, secret),
    )
    .expect("client")
}

async fn start(cfg: EmulatorConfig) -> Emulator {
    Emulator::start("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .expect("emulator")
}

/// A parsed certificate and its chain in upload form (what a request borrows).
struct Cert {
    cert: Certificate,
    chain_pem: String,
}

impl std::ops::Deref for Cert {
    type Target = Certificate;
    fn deref(&self) -> &Certificate {
        &self.cert
    }
}

fn issue(names: &[&str], not_before: OffsetDateTime, not_after: OffsetDateTime) -> Cert {
    let ca = TestCa::new("aliyun-client-test").expect("test CA");
    let issued = ca
        .issue(&Leaf::new(names, not_before, not_after))
        .expect("leaf");
    let cert =
        cert::parse(issued.fullchain_pem.as_bytes(), issued.key_pem.as_bytes()).expect("valid");
    Cert {
        chain_pem: cert.chain_pem(),
        cert,
    }
}

fn current(names: &[&str]) -> Cert {
    let now = OffsetDateTime::now_utc();
    issue(
        names,
        now - time::Duration::days(1),
        now + time::Duration::days(60),
    )
}

fn owned(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn request<'a>(c: &'a Cert, domains: &'a [String]) -> BatchSetRequest<'a> {
    BatchSetRequest {
        cas: None,
        domains,
        cert_name: "test-cert",
        ssl_pub: &c.chain_pem,
        ssl_pri: &c.key,
        region: None,
    }
}

fn key_body(c: &Certificate) -> String {
    // A line from the middle of the key's PEM: what must never show up anywhere.
    let pem = c.key.expose_upload_pem();
    pem.lines().nth(1).unwrap_or(pem).to_string()
}

#[tokio::test]
async fn deploys_and_reads_back_over_loopback() {
    let emu = start(EmulatorConfig::with_domains(DOMAINS.iter().copied())).await;
    let c = client_for(&emu, emulator::DEFAULT_ACCESS_KEY_SECRET);
    let cert = current(&["example.com", "*.example.com"]);
    let domains = owned(DOMAINS);
    let request_id = c
        .batch_set(&request(&cert, &domains))
        .await
        .expect("deployed");
    assert!(!request_id.is_empty());
    let served = emu.served();
    for d in DOMAINS {
        assert_eq!(
            served.get(*d).map(|s| s.fingerprint),
            Some(cert.fingerprint),
            "{d}"
        );
        assert_eq!(
            served.get(*d).map(|s| s.request_id.as_str()),
            Some(request_id.as_str())
        );
    }
    let back = c
        .describe_domain_certificate("a.example.com")
        .await
        .expect("read back")
        .expect("serves a certificate");
    assert_eq!(back.leaf_fingerprint(), Some(cert.fingerprint));
    assert_eq!(back.cert_name, "test-cert");
    assert_eq!(back.status, "on");
    assert!(back.expire_time.is_some());
    let log = emu.log();
    assert_eq!(log.len(), 2);
    assert!(
        log.iter().all(|e| !e.params_in_query),
        "no parameter in any URL"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn domain_serving_nothing_reads_back_as_none() {
    let emu = start(EmulatorConfig::with_domains(DOMAINS.iter().copied())).await;
    let c = client_for(&emu, emulator::DEFAULT_ACCESS_KEY_SECRET);
    assert_eq!(
        c.describe_domain_certificate("b.example.com")
            .await
            .unwrap(),
        None
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn lists_every_domain_across_pages() {
    let many: Vec<String> = (0..1203).map(|i| format!("d{i:04}.example.com")).collect();
    let emu = start(EmulatorConfig::with_domains(many.iter().cloned())).await;
    let c = client_for(&emu, emulator::DEFAULT_ACCESS_KEY_SECRET);
    let mut listed = c.describe_user_domains().await.expect("listed");
    listed.sort();
    let mut want = many.clone();
    want.sort();
    assert_eq!(listed, want);
    let log = emu.log();
    assert_eq!(log.len(), 3, "ceil(1203 / 500) pages");
    assert!(log.iter().all(|e| !e.params_in_query));
    emu.shutdown().await;
}

#[tokio::test]
async fn wrong_secret_fails_fast_with_one_request_and_no_leak() {
    let emu = start(EmulatorConfig::with_domains(DOMAINS.iter().copied())).await;
    let c = client_for(&emu, "not-the-secret");
    let cert = current(&["a.example.com"]);
    let domains = owned(&["a.example.com"]);
    let started = Instant::now();
    let err = c.batch_set(&request(&cert, &domains)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(err.class(), Class::Credentials, "{err}");
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"));
    assert!(!err.is_retryable());
    assert_eq!(emu.log().len(), 1, "exactly one request");
    let shown = format!("{err} | {err:?}");
    for leak in [key_body(&cert).as_str(), "PRIVATE KEY", "not-the-secret"] {
        assert!(!shown.contains(leak), "{leak} leaked: {shown}");
    }
    assert!(
        shown.contains("certrotd check"),
        "says what to fix: {shown}"
    );
    assert!(emu.served().is_empty());
    emu.shutdown().await;
}

#[tokio::test]
async fn unknown_access_key_id_is_a_credentials_error() {
    let emu = start(EmulatorConfig::with_domains(DOMAINS.iter().copied())).await;
    let c = Client::new(
        &settings(&emu.endpoint(), Duration::from_secs(10)),
        creds("LTAInobody", emulator::DEFAULT_ACCESS_KEY_SECRET),
    )
    .unwrap();
    let err = c.describe_user_domains().await.unwrap_err();
    assert_eq!(err.class(), Class::Credentials, "{err}");
    assert_eq!(err.kind(), "credentials");
    emu.shutdown().await;
}

#[tokio::test]
async fn unknown_domain_is_a_domain_error_naming_it() {
    let emu = start(EmulatorConfig::with_domains(DOMAINS.iter().copied())).await;
    let c = client_for(&emu, emulator::DEFAULT_ACCESS_KEY_SECRET);
    let cert = current(&["*.example.com"]);
    let domains = owned(&["a.example.com", "zz.example.com", "b.example.com"]);
    let err = c.batch_set(&request(&cert, &domains)).await.unwrap_err();
    assert_eq!(err.class(), Class::Domain, "{err}");
    assert_eq!(err.domain(), Some("zz.example.com"));
    assert_eq!(err.kind(), "domain");
    assert!(emu.served().is_empty(), "a refused call changes nothing");
    emu.shutdown().await;
}

#[tokio::test]
async fn refused_certificates_are_certificate_errors() {
    let emu = start(EmulatorConfig::with_domains(DOMAINS.iter().copied())).await;
    let c = client_for(&emu, emulator::DEFAULT_ACCESS_KEY_SECRET);
    let domains = owned(&["a.example.com"]);

    let expired = issue(
        &["a.example.com"],
        datetime!(2020-01-01 00:00 UTC),
        datetime!(2021-01-01 00:00 UTC),
    );
    let err = c.batch_set(&request(&expired, &domains)).await.unwrap_err();
    assert_eq!(err.class(), Class::Certificate, "{err}");
    assert_eq!(err.kind(), "certificate");

    let one = current(&["a.example.com"]);
    let other = current(&["a.example.com"]);
    let mismatched = BatchSetRequest {
        cas: None,
        ssl_pri: &other.key,
        ..request(&one, &domains)
    };
    let err = c.batch_set(&mismatched).await.unwrap_err();
    assert_eq!(err.class(), Class::Certificate, "{err}");
    let shown = format!("{err} | {err:?}");
    assert!(!shown.contains(&key_body(&other)), "{shown}");
    emu.shutdown().await;
}

#[tokio::test]
async fn too_many_domains_is_a_batch_size_error() {
    let many: Vec<String> = (0..11).map(|i| format!("d{i}.example.com")).collect();
    let mut cfg = EmulatorConfig::with_domains(many.iter().cloned());
    cfg.max_domains_per_call = 10;
    let emu = start(cfg).await;
    let c = client_for(&emu, emulator::DEFAULT_ACCESS_KEY_SECRET);
    let cert = current(&["*.example.com"]);
    let err = c.batch_set(&request(&cert, &many)).await.unwrap_err();
    assert_eq!(err.class(), Class::BatchSize, "{err}");
    assert_eq!(err.kind(), "batch-size");
    let ok = c.batch_set(&request(&cert, &many[..10])).await;
    assert!(ok.is_ok(), "{ok:?}");
    emu.shutdown().await;
}

#[tokio::test]
async fn skewed_clock_is_a_clock_error_with_the_offset() {
    let emu = start(EmulatorConfig::with_domains(DOMAINS.iter().copied())).await;
    let skewed: WallClock = Arc::new(|| OffsetDateTime::now_utc() - time::Duration::minutes(40));
    let c = client_for(&emu, emulator::DEFAULT_ACCESS_KEY_SECRET).with_clock(skewed);
    let err = c.describe_user_domains().await.unwrap_err();
    assert_eq!(err.class(), Class::Clock, "{err}");
    assert_eq!(err.kind(), "clock-skew");
    assert!(!err.is_retryable());
    let offset = err.clock_offset().expect("emulator sends Date");
    assert!((offset.whole_seconds() - 2400).abs() <= 5, "{offset}");
    emu.shutdown().await;
}

#[tokio::test]
async fn injected_faults_are_retryable() {
    let emu = start(EmulatorConfig::with_domains(DOMAINS.iter().copied())).await;
    let c = client_for(&emu, emulator::DEFAULT_ACCESS_KEY_SECRET);
    let cases = [
        (
            Faults {
                fail_rate: 1.0,
                ..Faults::default()
            },
            "server-busy",
            Some(503),
        ),
        (
            Faults {
                internal_rate: 1.0,
                ..Faults::default()
            },
            "server-busy",
            Some(500),
        ),
        (
            Faults {
                throttle_rate: 1.0,
                ..Faults::default()
            },
            "throttled",
            Some(400),
        ),
        (
            Faults {
                reset_rate: 1.0,
                ..Faults::default()
            },
            "transport",
            None,
        ),
    ];
    for (faults, kind, status) in cases {
        emu.set_faults(faults).unwrap();
        let err = c.describe_user_domains().await.unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
        assert_eq!(err.status(), status, "{err}");
        assert_eq!(err.class(), Class::Retryable);
    }
    // Each attempt was a fresh request with a fresh nonce.
    let log = emu.log();
    let nonces: HashSet<&str> = log.iter().map(|e| e.signature_nonce.as_str()).collect();
    assert_eq!(nonces.len(), log.len());
    emu.shutdown().await;
}

#[tokio::test]
async fn slow_answer_is_a_timeout() {
    let mut cfg = EmulatorConfig::with_domains(DOMAINS.iter().copied());
    cfg.latency = Duration::from_millis(1500);
    let emu = start(cfg).await;
    let c = Client::new(
        &settings(&emu.endpoint(), Duration::from_millis(200)),
        creds(
            emulator::DEFAULT_ACCESS_KEY_ID,
            emulator::DEFAULT_ACCESS_KEY_SECRET,
        ),
    )
    .unwrap();
    let started = Instant::now();
    let err = c.describe_user_domains().await.unwrap_err();
    assert_eq!(err.kind(), "timeout", "{err}");
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(
        emu.log().len(),
        1,
        "the request arrived; the answer was late"
    );
}
