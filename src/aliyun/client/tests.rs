//! Client tests: exact parameters, endpoint rules, decoding, and behaviour against a tiny
//! raw-TCP loopback server (canned answers, HTML bodies, dropped connections, hangs) and a
//! self-signed TLS server (verification is on).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::aliyun::credentials::Secret;

const SECRET: &str = "test-secret-Zq9";
const KEY_PEM: &str =
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEkeyTEXTabc123/+=\n-----END RSA PRIVATE KEY-----\n";

fn settings(endpoint: &str, timeout: Duration) -> AliyunSettings {
    AliyunSettings {
        read_requests_per_second: 100,
        max_attempts: 3,
        timeout,
        ..AliyunSettings::defaults(endpoint)
    }
}

fn creds() -> Credentials {
    Credentials::new("LTAItestid", Secret::from(SECRET.to_string()), None, "test")
}

fn client(endpoint: &str) -> Client {
    Client::new(&settings(endpoint, Duration::from_secs(5)), creds()).expect("test client")
}

fn key() -> PrivateKey {
    PrivateKey::from_upload_pem(Zeroizing::new(KEY_PEM.to_string()))
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------- parameters

#[test]
fn batch_set_parameters_have_the_exact_names() {
    let domains = names(&["a.example.com", ".example.com"]);
    let key = key();
    let req = BatchSetRequest {
        cas: None,
        domains: &domains,
        cert_name: "example.com-2026-12-01-abcdef012345",
        ssl_pub: "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n",
        ssl_pri: &key,
        region: None,
    };
    let got: Vec<(String, String)> = req.params().to_vec();
    let want: Vec<(String, String)> = [
        ("DomainName", "a.example.com,.example.com"),
        ("SSLProtocol", "on"),
        (
            "SSLPub",
            "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n",
        ),
        ("SSLPri", KEY_PEM),
        ("CertName", "example.com-2026-12-01-abcdef012345"),
        ("CertType", "upload"),
        ("ForceSet", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, want);
    let with_region = BatchSetRequest {
        cas: None,
        region: Some("cn-hangzhou"),
        ..req
    };
    let p = with_region.params();
    assert_eq!(
        p.last(),
        Some(&("Region".to_string(), "cn-hangzhou".to_string()))
    );
    assert!(!p.iter().any(|(k, v)| k == "SSLProtocol" && v != "on"));
}

#[test]
fn set_ssl_parameters_have_the_sdks_names_and_no_force_set_or_region() {
    let key = key();
    let req = SetSslRequest {
        cas: None,
        domain: "a.example.com",
        cert_name: "example.com-2026-12-01-abcdef012345",
        ssl_pub: "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n",
        ssl_pri: &key,
    };
    let got: Vec<(String, String)> = req.params().to_vec();
    let want: Vec<(String, String)> = [
        ("DomainName", "a.example.com"),
        ("SSLProtocol", "on"),
        (
            "SSLPub",
            "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n",
        ),
        ("SSLPri", KEY_PEM),
        ("CertName", "example.com-2026-12-01-abcdef012345"),
        ("CertType", "upload"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, want);
    assert!(
        !format!("{req:?}").contains("MIIEkey"),
        "Debug shows the key"
    );
}

#[tokio::test]
async fn set_ssl_posts_one_domain_in_the_body_signed() {
    let (endpoint, log) = server(vec![json(200, r#"{"RequestId":"REQ-7"}"#)]).await;
    let c = client(&endpoint);
    let key = key();
    let req = SetSslRequest {
        cas: None,
        domain: "a.example.com",
        cert_name: "cert-1",
        ssl_pub: "-----BEGIN CERTIFICATE-----\nMIIB+/ab*c~d e\n-----END CERTIFICATE-----\n",
        ssl_pri: &key,
    };
    assert_eq!(c.set_domain_ssl(&req).await.unwrap(), "REQ-7");
    let seen = seen(&log);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].request_line, "POST / HTTP/1.1");
    let p = seen[0].params();
    for (k, v) in [
        ("Action", "SetCdnDomainSSLCertificate"),
        ("Version", "2018-05-10"),
        ("DomainName", "a.example.com"),
        ("SSLProtocol", "on"),
        ("SSLPri", KEY_PEM),
        ("CertName", "cert-1"),
        ("CertType", "upload"),
    ] {
        assert_eq!(p.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert_eq!(p.get("SSLPub").map(String::as_str), Some(req.ssl_pub));
    assert!(!p.contains_key("ForceSet") && !p.contains_key("Region"));
    let pairs: Vec<(String, String)> = form_urlencoded::parse(&seen[0].body).into_owned().collect();
    assert_eq!(
        p.get("Signature"),
        Some(&sign::sign("POST", SECRET, &pairs))
    );
    assert!(!seen[0].request_line.contains("MIIEkey"));
}

#[test]
fn batch_set_request_debug_hides_the_key() {
    let domains = names(&["a.example.com"]);
    let key = key();
    let req = BatchSetRequest {
        cas: None,
        domains: &domains,
        cert_name: "n",
        ssl_pub: "pub",
        ssl_pri: &key,
        region: None,
    };
    let shown = format!("{req:?}");
    assert!(!shown.contains("MIIEkey"), "{shown}");
}

#[test]
fn describe_parameters_have_the_exact_names() {
    let p = DescribeCertRequest {
        domain: "a.example.com",
    }
    .params();
    assert_eq!(
        p.to_vec(),
        vec![("DomainName".to_string(), "a.example.com".to_string())]
    );
    let p = UserDomainsRequest {
        page_size: 9999,
        page_number: 0,
    }
    .params();
    assert_eq!(
        p.to_vec(),
        vec![
            ("PageSize".to_string(), "500".to_string()),
            ("PageNumber".to_string(), "1".to_string())
        ]
    );
}

// ---------------------------------------------------------------- endpoint rules

#[test]
fn endpoint_rules() {
    for ok in [
        "https://cdn.aliyuncs.com",
        "https://cdn.aliyuncs.com/",
        "http://127.0.0.1:8080",
        "http://127.1.2.3",
        "http://[::1]:9000/",
        "http://localhost:1234",
    ] {
        assert!(check_endpoint(ok).is_ok(), "{ok}");
    }
    let err = check_endpoint("http://cdn.aliyuncs.com").unwrap_err();
    assert_eq!(err.kind(), "insecure-endpoint");
    assert!(err.to_string().contains("https://"), "{err}");
    for bad in [
        "ftp://cdn.aliyuncs.com",
        "https://cdn.aliyuncs.com/path",
        "https://cdn.aliyuncs.com/?Action=x",
        "cdn.aliyuncs.com",
        "https://user:pw@cdn.aliyuncs.com",
        "",
        "http://",
    ] {
        let err = check_endpoint(bad).unwrap_err();
        assert_eq!(err.kind(), "endpoint", "{bad}: {err}");
        assert!(err.to_string().contains("endpoint"), "{err}");
    }
    let (uri, plain) = check_endpoint("https://cdn.aliyuncs.com").unwrap();
    assert_eq!(uri.to_string(), "https://cdn.aliyuncs.com/");
    assert!(!plain);
}

#[test]
fn client_new_refuses_http_to_a_remote_host() {
    let err = Client::new(
        &settings("http://10.0.0.1", Duration::from_secs(1)),
        creds(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), "insecure-endpoint");
}

#[test]
fn nonces_are_128_bit_hex_and_fresh() {
    let a = new_nonce();
    let b = new_nonce();
    assert_eq!(a.len(), 32);
    assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b);
}

#[test]
fn secret_body_carries_the_form_bytes_unchanged() {
    let body = secret_body(Zeroizing::new("a=1&SSLPri=x".to_string()));
    assert_eq!(body.as_bytes(), Some(&b"a=1&SSLPri=x"[..]));
}

// ---------------------------------------------------------------- decoding

fn cert_reply(json: &str) -> CertReply {
    serde_json::from_str(json).expect("test JSON")
}

#[test]
fn served_certificate_is_decoded() {
    let reply = cert_reply(
        r#"{"RequestId":"r","CertInfos":{"CertInfo":[
        {"DomainName":"b.example.com","ServerCertificateStatus":"on","ServerCertificate":"B"},
        {"DomainName":"A.example.com","CertName":"n1","CertType":"upload",
         "ServerCertificateStatus":"on","ServerCertificate":"-----BEGIN CERTIFICATE-----",
         "CertExpireTime":"2026-12-01T00:00:00Z","CertStartTime":"2026-09-02T00:00:00Z",
         "CertDomainName":"a.example.com"}]}}"#,
    );
    let served = served_for("a.example.com", reply).expect("served");
    assert_eq!(served.cert_name, "n1");
    assert_eq!(served.cert_type, "upload");
    assert_eq!(served.status, "on");
    assert_eq!(served.certificate_pem, "-----BEGIN CERTIFICATE-----");
    assert_eq!(
        served.expire_time,
        Some(time::macros::datetime!(2026-12-01 00:00:00 UTC))
    );
    assert_eq!(
        served.start_time,
        Some(time::macros::datetime!(2026-09-02 00:00:00 UTC))
    );
    assert_eq!(served.cert_domain_name, "a.example.com");
    // Not PEM: no fingerprint, no panic.
    assert_eq!(served.leaf_fingerprint(), None);
}

#[test]
fn no_certificate_is_none() {
    let off = r#"{"CertInfos":{"CertInfo":[{"DomainName":"a.example.com",
        "ServerCertificateStatus":"off","ServerCertificate":""}]}}"#;
    assert_eq!(served_for("a.example.com", cert_reply(off)), None);
    let other = r#"{"CertInfos":{"CertInfo":[{"DomainName":"b.example.com",
        "ServerCertificateStatus":"on","ServerCertificate":"x"}]}}"#;
    assert_eq!(served_for("a.example.com", cert_reply(other)), None);
    assert_eq!(
        served_for("a.example.com", cert_reply(r#"{"RequestId":"r"}"#)),
        None
    );
    let empty = r#"{"CertInfos":{"CertInfo":[{"DomainName":"a.example.com"}]}}"#;
    assert_eq!(served_for("a.example.com", cert_reply(empty)), None);
}

#[test]
fn leaf_fingerprint_is_sha256_of_the_first_certificate() {
    let leaf = rcgen::generate_simple_self_signed(vec!["a.example.com".to_string()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["b.example.com".to_string()]).unwrap();
    let served = ServedCert {
        domain: "a.example.com".into(),
        cert_name: String::new(),
        cert_type: String::new(),
        status: "on".into(),
        certificate_pem: format!("{}{}", leaf.cert.pem(), other.cert.pem()),
        expire_time: None,
        start_time: None,
        cert_domain_name: String::new(),
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf.cert.der());
    let want: [u8; 32] = digest.as_ref().try_into().unwrap();
    assert_eq!(served.leaf_fingerprint(), Some(Fingerprint(want)));
}

// ---------------------------------------------------------------- a tiny server

/// What the test server does with one request.
#[derive(Clone)]
enum Act {
    Respond {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Read the request, then close the connection without answering.
    Drop,
    /// Read the request, never answer.
    Hang,
}

fn json(status: u16, body: &str) -> Act {
    Act::Respond {
        status,
        headers: vec![("Content-Type", "application/json".to_string())],
        body: body.to_string(),
    }
}

/// One request as the test server received it.
#[derive(Clone, Debug)]
struct Seen {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn params(&self) -> BTreeMap<String, String> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Serves `acts` in order (the last one repeats), one request per connection.
async fn server(acts: Vec<Act>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut n = 0usize;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let act = acts.get(n).or(acts.last()).cloned().unwrap_or(Act::Drop);
            n += 1;
            let log = log.clone();
            tokio::spawn(async move {
                let Some(req) = read_request(&mut stream).await else {
                    return;
                };
                log.lock().unwrap().push(req);
                match act {
                    Act::Respond {
                        status,
                        headers,
                        body,
                    } => {
                        let mut head = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
                        for (k, v) in headers {
                            head.push_str(&format!("{k}: {v}\r\n"));
                        }
                        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
                        let _ = stream.write_all(head.as_bytes()).await;
                        let _ = stream.write_all(body.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                    Act::Drop => drop(stream),
                    Act::Hang => {
                        std::future::pending::<()>().await;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), seen)
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen {
        request_line,
        headers,
        body,
    })
}

fn seen(log: &Arc<Mutex<Vec<Seen>>>) -> Vec<Seen> {
    log.lock().unwrap().clone()
}

// ---------------------------------------------------------------- requests on the wire

#[tokio::test]
async fn batch_set_posts_everything_in_the_body_signed() {
    let (endpoint, log) = server(vec![json(200, r#"{"RequestId":"REQ-1"}"#)]).await;
    let c = client(&endpoint);
    let domains = names(&["a.example.com", "b.example.com"]);
    let key = key();
    let req = BatchSetRequest {
        cas: None,
        domains: &domains,
        cert_name: "cert-1",
        ssl_pub: "-----BEGIN CERTIFICATE-----\nMIIB+/ab*c~d e\n-----END CERTIFICATE-----\n",
        ssl_pri: &key,
        region: Some("cn-hangzhou"),
    };
    assert_eq!(c.batch_set(&req).await.unwrap(), "REQ-1");
    assert_eq!(c.batch_set(&req).await.unwrap(), "REQ-1");
    let seen = seen(&log);
    assert_eq!(seen.len(), 2);
    let first = &seen[0];
    assert_eq!(first.request_line, "POST / HTTP/1.1");
    assert_eq!(
        first.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let p = first.params();
    let expect = [
        ("Action", "BatchSetCdnDomainServerCertificate"),
        ("DomainName", "a.example.com,b.example.com"),
        ("SSLProtocol", "on"),
        ("SSLPri", KEY_PEM),
        ("CertName", "cert-1"),
        ("CertType", "upload"),
        ("ForceSet", "1"),
        ("Region", "cn-hangzhou"),
        ("Format", "JSON"),
        ("Version", "2018-05-10"),
        ("AccessKeyId", "LTAItestid"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
    ];
    for (k, v) in expect {
        assert_eq!(p.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert_eq!(p.get("SSLPub").map(String::as_str), Some(req.ssl_pub));
    assert!(!p.contains_key("SecurityToken"));
    // The signature verifies over what arrived.
    let pairs: Vec<(String, String)> = form_urlencoded::parse(&first.body).into_owned().collect();
    let want = sign::sign("POST", SECRET, &pairs);
    assert_eq!(p.get("Signature"), Some(&want));
    // Timestamp shape, fresh nonce per attempt.
    let ts = p.get("Timestamp").unwrap();
    assert_eq!(ts.len(), 20, "{ts}");
    assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
    let n1 = p.get("SignatureNonce").unwrap();
    let n2 = seen[1].params().get("SignatureNonce").cloned().unwrap();
    assert_eq!(n1.len(), 32);
    assert_ne!(*n1, n2);
    // The secret travels nowhere; the key only in the body.
    for s in &seen {
        let head = format!("{} {:?}", s.request_line, s.headers);
        assert!(
            !head.contains("MIIEkey") && !head.contains(SECRET),
            "{head}"
        );
        assert!(!String::from_utf8_lossy(&s.body).contains(SECRET));
    }
}

#[tokio::test]
async fn security_token_is_sent_when_present() {
    let (endpoint, log) = server(vec![json(200, r#"{"RequestId":"R"}"#)]).await;
    let creds = Credentials::new(
        "STS.id",
        Secret::from("s".to_string()),
        Some(Secret::from("token-value".to_string())),
        "test",
    );
    let c = Client::new(&settings(&endpoint, Duration::from_secs(5)), creds).unwrap();
    c.describe_domain_certificate("a.example.com")
        .await
        .unwrap();
    let p = seen(&log)[0].params();
    assert_eq!(
        p.get("SecurityToken").map(String::as_str),
        Some("token-value")
    );
    assert_eq!(
        p.get("DomainName").map(String::as_str),
        Some("a.example.com")
    );
    assert_eq!(
        p.get("Action").map(String::as_str),
        Some("DescribeDomainCertificateInfo")
    );
}

#[tokio::test]
async fn user_domains_walks_every_page() {
    let page = |n: u64, total: u64, ds: &[&str]| {
        let data: Vec<serde_json::Value> = ds
            .iter()
            .map(|d| serde_json::json!({"DomainName": d, "DomainStatus": "online", "SslProtocol": "on"}))
            .collect();
        json(
            200,
            &serde_json::json!({"RequestId": "r", "PageNumber": n, "PageSize": 500,
                "TotalCount": total, "Domains": {"PageData": data}})
            .to_string(),
        )
    };
    let (endpoint, log) = server(vec![
        page(1, 3, &["a.example.com", "b.example.com"]),
        page(2, 3, &[".example.com"]),
        page(3, 3, &["never.example.com"]),
    ])
    .await;
    let c = client(&endpoint);
    let all = c.describe_user_domains().await.unwrap();
    assert_eq!(
        all,
        names(&["a.example.com", "b.example.com", ".example.com"])
    );
    let seen = seen(&log);
    assert_eq!(seen.len(), 2);
    for (i, s) in seen.iter().enumerate() {
        let p = s.params();
        assert_eq!(
            p.get("Action").map(String::as_str),
            Some("DescribeUserDomains")
        );
        assert_eq!(p.get("PageSize").map(String::as_str), Some("500"));
        assert_eq!(p.get("PageNumber"), Some(&(i + 1).to_string()));
    }
}

#[tokio::test]
async fn user_domains_stops_at_an_empty_page() {
    let (endpoint, log) = server(vec![json(
        200,
        r#"{"RequestId":"r","PageNumber":1,"PageSize":500,"TotalCount":99,"Domains":{"PageData":[]}}"#,
    )])
    .await;
    assert_eq!(
        client(&endpoint).describe_user_domains().await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(seen(&log).len(), 1);
}

// ---------------------------------------------------------------- failures

#[tokio::test]
async fn html_gateway_page_is_an_error_with_status_and_excerpt() {
    let html = "<html><head><title>414 Request-URI Too Large</title></head><body>\
        <center><h1>414 Request-URI Too Large</h1></center><hr><center>Tengine</center></body></html>";
    let (endpoint, _log) = server(vec![Act::Respond {
        status: 414,
        headers: vec![("Content-Type", "text/html".to_string())],
        body: html.to_string(),
    }])
    .await;
    let err = client(&endpoint)
        .describe_domain_certificate("a.example.com")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "non-json-response");
    assert_eq!(err.status(), Some(414));
    assert!(!err.is_retryable());
    assert!(
        err.to_string().contains("414 Request-URI Too Large"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_gateway_html_is_retryable() {
    let (endpoint, _log) = server(vec![Act::Respond {
        status: 502,
        headers: vec![],
        body: "<html><body><h1>502 Bad Gateway</h1></body></html>".into(),
    }])
    .await;
    let err = client(&endpoint).describe_user_domains().await.unwrap_err();
    assert_eq!(err.status(), Some(502));
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test]
async fn unusable_error_bodies_classify_by_status() {
    let huge = "x".repeat(17 << 20);
    let cases: Vec<(u16, String, bool)> = vec![
        (503, huge.clone(), true),
        (
            503,
            format!("{{\"Code\":\"ServiceUnavailable\",\"Message\":\"{huge}\"}}"),
            true,
        ),
        (429, r#"{"Code":"Throttling.User","Mess"#.to_string(), true),
        (500, "[1, 2]".to_string(), true),
        (502, String::new(), true),
        (400, huge, false),
    ];
    for (status, body, retryable) in cases {
        let (endpoint, _log) = server(vec![Act::Respond {
            status,
            headers: vec![("Content-Type", "application/json".to_string())],
            body,
        }])
        .await;
        let err = client(&endpoint).describe_user_domains().await.unwrap_err();
        assert_eq!(err.status(), Some(status), "{err}");
        assert_eq!(err.is_retryable(), retryable, "HTTP {status}: {err}");
        assert_eq!(err.kind(), "non-json-response", "HTTP {status}: {err}");
    }
}

#[tokio::test]
async fn hostile_request_ids_never_leave_the_client() {
    let key_line = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7";
    let (endpoint, _log) = server(vec![Act::Respond {
        status: 200,
        headers: vec![
            ("Content-Type", "application/json".to_string()),
            ("x-acs-request-id", format!("echo {key_line} {key_line}")),
        ],
        body: serde_json::json!({ "RequestId": format!("echo {KEY_PEM}") }).to_string(),
    }])
    .await;
    let key = key();
    let domains = names(&["a.example.com"]);
    let req = BatchSetRequest {
        cas: None,
        domains: &domains,
        cert_name: "n",
        ssl_pub: "p",
        ssl_pri: &key,
        region: None,
    };
    let id = client(&endpoint).batch_set(&req).await.expect("deployed");
    assert_eq!(id, crate::untrusted::INVALID_REQUEST_ID);
}

#[tokio::test]
async fn malformed_success_body_is_bad_response() {
    let (endpoint, _log) = server(vec![json(200, "{\"NotRequestId\":1}")]).await;
    let key = key();
    let domains = names(&["a.example.com"]);
    let req = BatchSetRequest {
        cas: None,
        domains: &domains,
        cert_name: "n",
        ssl_pub: "p",
        ssl_pri: &key,
        region: None,
    };
    let err = client(&endpoint).batch_set(&req).await.unwrap_err();
    assert_eq!(err.kind(), "bad-response");
    let (endpoint, _log) = server(vec![json(200, "<html>ok</html>")]).await;
    let err = client(&endpoint).describe_user_domains().await.unwrap_err();
    assert_eq!(err.kind(), "bad-response");
    assert!(err.to_string().contains("cdn.aliyuncs.com"), "{err}");
}

#[tokio::test]
async fn dropped_connection_is_a_retryable_transport_error() {
    let (endpoint, log) = server(vec![Act::Drop]).await;
    let err = client(&endpoint)
        .describe_domain_certificate("a.example.com")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "transport", "{err}");
    assert!(err.is_retryable());
    assert!(!seen(&log).is_empty());
}

#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = client(&format!("http://{addr}"))
        .describe_user_domains()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "transport", "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn no_answer_within_the_timeout_is_a_timeout() {
    let (endpoint, log) = server(vec![Act::Hang]).await;
    let c = Client::new(&settings(&endpoint, Duration::from_millis(300)), creds()).unwrap();
    let started = Instant::now();
    let err = c
        .describe_domain_certificate("a.example.com")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "timeout", "{err}");
    assert!(err.is_retryable());
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        seen(&log).len(),
        1,
        "the request arrived; only the answer was missing"
    );
}

#[tokio::test]
async fn signature_mismatch_echo_is_redacted_end_to_end() {
    // Answer with a message that echoes the whole received body, as Alibaba does.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let req = read_request(&mut stream).await.unwrap();
        let echo = sign::string_to_sign(
            "POST",
            &form_urlencoded::parse(&req.body)
                .into_owned()
                .collect::<Vec<_>>(),
        );
        let body = serde_json::json!({
            "RequestId": "R", "HostId": "cdn.aliyuncs.com", "Code": "SignatureDoesNotMatch",
            "Message": format!("Specified signature is not matched with our calculation. server string to sign is:{}", echo.as_str()),
            "Recommend": "https://api.aliyun.com/troubleshoot?q=SignatureDoesNotMatch",
        })
        .to_string();
        let head = format!(
            "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(body.as_bytes()).await;
    });
    let key = key();
    let domains = names(&["a.example.com"]);
    let req = BatchSetRequest {
        cas: None,
        domains: &domains,
        cert_name: "n",
        ssl_pub: "p",
        ssl_pri: &key,
        region: None,
    };
    let err = client(&format!("http://{addr}"))
        .batch_set(&req)
        .await
        .unwrap_err();
    assert_eq!(err.class(), Class::Credentials);
    let shown = format!("{err} | {err:?}");
    for leak in ["MIIEkey", "PRIVATE", "SSLPri", SECRET] {
        assert!(!shown.contains(leak), "{leak} leaked: {shown}");
    }
    assert!(shown.contains("signature is not matched"), "{shown}");
}

#[tokio::test]
async fn refused_timestamp_reports_the_clock_offset() {
    let now = OffsetDateTime::now_utc();
    let date = now
        .format(time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ))
        .unwrap();
    let (endpoint, _log) = server(vec![Act::Respond {
        status: 400,
        headers: vec![
            ("Content-Type", "application/json".to_string()),
            ("Date", date),
        ],
        body: r#"{"RequestId":"R","Code":"InvalidTimeStamp.Expired","Message":"Specified time stamp or date value is expired."}"#.into(),
    }])
    .await;
    let skewed: WallClock = Arc::new(move || OffsetDateTime::now_utc() - time::Duration::hours(1));
    let c = client(&endpoint).with_clock(skewed);
    let err = c.describe_user_domains().await.unwrap_err();
    assert_eq!(err.class(), Class::Clock);
    let offset = err.clock_offset().expect("offset from the Date header");
    assert!((offset.whole_seconds() - 3600).abs() <= 5, "{offset}");
    assert!(err.to_string().contains("behind"), "{err}");
}

#[tokio::test]
async fn retry_hint_header_is_passed_on() {
    let (endpoint, _log) = server(vec![Act::Respond {
        status: 400,
        headers: vec![("x-acs-retry-after", "1500".to_string())],
        body: r#"{"RequestId":"R","Code":"Throttling.User","Message":"Request was denied due to user flow control."}"#.into(),
    }])
    .await;
    let err = client(&endpoint).describe_user_domains().await.unwrap_err();
    assert_eq!(err.kind(), "throttled");
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_millis(1500)));
}

#[tokio::test]
async fn unknown_domain_is_identified() {
    let (endpoint, _log) = server(vec![json(
        404,
        r#"{"RequestId":"R","Code":"InvalidDomain.NotFound","Message":"The domain b.example.com does not exist."}"#,
    )])
    .await;
    let key = key();
    let domains = names(&["a.example.com", "b.example.com"]);
    let req = BatchSetRequest {
        cas: None,
        domains: &domains,
        cert_name: "n",
        ssl_pub: "p",
        ssl_pri: &key,
        region: None,
    };
    let err = client(&endpoint).batch_set(&req).await.unwrap_err();
    assert_eq!(err.class(), Class::Domain);
    assert_eq!(err.domain(), Some("b.example.com"));
}

#[tokio::test]
async fn https_verifies_the_server_certificate() {
    let addr = self_signed_tls_server();
    let err = client(&format!("https://{addr}"))
        .describe_user_domains()
        .await
        .unwrap_err();
    // A verification failure is a configuration problem: not retried, naming the endpoint.
    assert_eq!(err.kind(), "tls-trust", "{err}");
    assert!(!err.is_retryable());
    assert_eq!(err.class(), Class::Config);
    let text = err.to_string().to_ascii_lowercase();
    assert!(text.contains("certificate"), "{text}");
    assert!(text.contains(&format!("https://{addr}/")), "{text}");
    assert!(text.contains("ca_file"), "{text}");
}

/// A TLS server on loopback with a self-signed certificate (untrusted by webpki roots),
/// answering one connection from a plain thread.
fn self_signed_tls_server() -> SocketAddr {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut tcp, _)) = listener.accept() {
            let mut conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            while conn.complete_io(&mut tcp).is_ok() && conn.is_handshaking() {}
        }
    });
    addr
}

#[tokio::test]
async fn user_domains_without_total_count_stops_at_a_short_page() {
    let page = |from: usize, n: usize| {
        let data: Vec<serde_json::Value> = (from..from + n)
            .map(|i| serde_json::json!({"DomainName": format!("d{i}.example.com")}))
            .collect();
        json(
            200,
            &serde_json::json!({"RequestId": "r", "Domains": {"PageData": data}}).to_string(),
        )
    };
    let (endpoint, log) = server(vec![page(0, 500), page(500, 2), page(900, 1)]).await;
    let all = client(&endpoint).describe_user_domains().await.unwrap();
    assert_eq!(all.len(), 502);
    assert_eq!(all.last().map(String::as_str), Some("d501.example.com"));
    assert_eq!(seen(&log).len(), 2);
}

// ---------------------------------------------------------------- signature V3

fn v3_client(endpoint: &str, creds: Credentials) -> Client {
    let mut s = settings(endpoint, Duration::from_secs(5));
    s.signature = Signature::V3;
    Client::new(&s, creds).expect("test client")
}

#[tokio::test]
async fn v3_puts_the_envelope_in_headers_and_only_action_parameters_in_the_body() {
    let (endpoint, log) = server(vec![json(200, r#"{"RequestId":"R"}"#)]).await;
    let at = time::macros::datetime!(2026-12-01 10:22:32 UTC);
    let creds = Credentials::new(
        "STS.id",
        Secret::from(SECRET.to_string()),
        Some(Secret::from("token-value-Xy7".to_string())),
        "test",
    );
    let c = v3_client(&endpoint, creds).with_clock(Arc::new(move || at));
    assert!(!format!("{c:?}").contains(SECRET));
    let domains = names(&["a.example.com"]);
    let key = key();
    let req = BatchSetRequest {
        cas: None,
        domains: &domains,
        cert_name: "cert-1",
        ssl_pub: "-----BEGIN CERTIFICATE-----\nMIIB+/ab*c~d e\n-----END CERTIFICATE-----\n",
        ssl_pri: &key,
        region: None,
    };
    c.batch_set(&req).await.unwrap();
    c.batch_set(&req).await.unwrap();
    let seen = seen(&log);
    assert_eq!(seen.len(), 2);
    let first = &seen[0];
    assert_eq!(first.request_line, "POST / HTTP/1.1", "no query parameters");
    let body_keys: Vec<String> = first.params().into_keys().collect();
    assert_eq!(
        body_keys,
        [
            "CertName",
            "CertType",
            "DomainName",
            "ForceSet",
            "SSLPri",
            "SSLProtocol",
            "SSLPub"
        ],
        "the body holds the action's parameters alone"
    );
    let h = |n: &str| first.header(n).unwrap_or_default().to_string();
    assert_eq!(h("x-acs-action"), crate::aliyun::dcdn::CDN.batch_set);
    assert_eq!(h("x-acs-version"), "2018-05-10");
    assert_eq!(h("x-acs-date"), "2026-12-01T10:22:32Z");
    assert_eq!(h("x-acs-security-token"), "token-value-Xy7");
    assert_eq!(h("x-acs-content-sha256"), sign::hex_sha256(&first.body));
    assert_eq!(h("host"), endpoint.trim_start_matches("http://"));
    for once in ["content-type", "host"] {
        let n = first
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(once))
            .count();
        assert_eq!(n, 1, "{once} is sent once: {:?}", first.headers);
    }
    let nonce = h("x-acs-signature-nonce");
    assert_eq!(nonce.len(), 32);
    assert_ne!(
        seen[1].header("x-acs-signature-nonce"),
        Some(nonce.as_str())
    );
    // The Authorization header is exactly what the signer makes over what arrived.
    let host = h("host");
    let call = sign::V3Call {
        method: "POST",
        host: &host,
        query: &[],
        body: &first.body,
        action: crate::aliyun::dcdn::CDN.batch_set,
        version: sign::API_VERSION,
        date: at,
        nonce: &nonce,
    };
    let key3 = sign::V3Key {
        access_key_id: "STS.id",
        secret: SECRET,
        security_token: Some("token-value-Xy7"),
    };
    let want = sign::sign_v3(&call, &key3);
    assert_eq!(Some(h("authorization").as_str()), want.get("authorization"));
    assert!(
        h("authorization").starts_with(
            "ACS3-HMAC-SHA256 Credential=STS.id,SignedHeaders=content-type;host;x-acs-action;\
             x-acs-content-sha256;x-acs-date;x-acs-security-token;x-acs-signature-nonce;\
             x-acs-version,Signature="
        ),
        "{}",
        h("authorization")
    );
    for s in &seen {
        let all = format!(
            "{} {:?} {}",
            s.request_line,
            s.headers,
            String::from_utf8_lossy(&s.body)
        );
        assert!(!all.contains(SECRET), "{all}");
    }
}

async fn emulator_with(domains: &[&str]) -> crate::emulator::Emulator {
    use crate::emulator::{Emulator, EmulatorConfig};
    Emulator::start(
        "127.0.0.1:0".parse().unwrap(),
        EmulatorConfig::with_domains(domains.iter().copied()),
    )
    .await
    .expect("emulator")
}

fn emulator_creds(secret: &str) -> Credentials {
    Credentials::new(
        crate::emulator::DEFAULT_ACCESS_KEY_ID,
        Secret::from(secret.to_string()),
        None,
        "test",
    )
}

#[tokio::test]
async fn v3_calls_are_accepted_by_the_emulator() {
    let emu = emulator_with(&["a.example.com", "b.example.com"]).await;
    let c = v3_client(
        &emu.endpoint(),
        emulator_creds(crate::emulator::DEFAULT_ACCESS_KEY_SECRET),
    );
    let now = OffsetDateTime::now_utc();
    let ca = crate::testca::TestCa::new("v3-client-test").expect("test CA");
    let issued = ca
        .issue(&crate::testca::Leaf::new(
            &["a.example.com"],
            now - time::Duration::days(1),
            now + time::Duration::days(60),
        ))
        .expect("leaf");
    let cert = crate::cert::parse(issued.fullchain_pem.as_bytes(), issued.key_pem.as_bytes())
        .expect("valid");
    let domains = names(&["a.example.com"]);
    let req = BatchSetRequest {
        cas: None,
        domains: &domains,
        cert_name: "v3-cert",
        ssl_pub: &cert.chain_pem(),
        ssl_pri: &cert.key,
        region: Some("cn-hangzhou"),
    };
    c.batch_set(&req).await.expect("V3 write accepted");
    let served = c
        .describe_domain_certificate("a.example.com")
        .await
        .expect("V3 read accepted")
        .expect("a certificate is served");
    assert_eq!(served.leaf_fingerprint(), Some(cert.fingerprint));
    let mut all = c
        .describe_user_domains()
        .await
        .expect("V3 listing accepted");
    all.sort();
    assert_eq!(all, ["a.example.com", "b.example.com"]);
    let log = emu.log();
    assert_eq!(log.len(), 3);
    for e in &log {
        assert_eq!(e.signature, "v3", "{e:?}");
        assert!(e.succeeded(), "{e:?}");
        assert!(!e.params_in_query, "{e:?}");
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn v3_with_a_wrong_secret_is_a_credentials_error() {
    let emu = emulator_with(&["a.example.com"]).await;
    let c = v3_client(&emu.endpoint(), emulator_creds("not-the-secret-Qw3"));
    let err = c
        .describe_domain_certificate("a.example.com")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"), "{err}");
    assert_eq!(err.class(), Class::Credentials, "{err}");
    assert!(!err.is_retryable());
    let shown = format!("{err} | {err:?}");
    assert!(!shown.contains("not-the-secret-Qw3"), "{shown}");
    let log = emu.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].signature, "v3");
    emu.shutdown().await;
}

// ---------------------------------------------------------------- DCDN

#[tokio::test]
async fn a_dcdn_client_sends_the_dcdn_action_and_version_in_v1_and_v3() {
    let ok = r#"{"RequestId":"REQ-D"}"#;
    for signature in [crate::config::Signature::V1, crate::config::Signature::V3] {
        let (endpoint, log) = server(vec![json(200, ok)]).await;
        let mut s = settings(&endpoint, Duration::from_secs(5));
        s.signature = signature;
        let c = Client::new(&s, creds())
            .expect("test client")
            .for_product(Product::Dcdn);
        let key = key();
        let req = SetSslRequest {
            cas: None,
            domain: "edge.example.com",
            cert_name: "cert-1",
            ssl_pub: "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n",
            ssl_pri: &key,
        };
        assert_eq!(c.set_domain_ssl(&req).await.unwrap(), "REQ-D");
        let seen = seen(&log);
        let p = seen[0].params();
        match signature {
            crate::config::Signature::V1 => {
                assert_eq!(p["Action"], "SetDcdnDomainSSLCertificate");
                assert_eq!(p["Version"], "2018-01-15");
                let pairs: Vec<(String, String)> =
                    form_urlencoded::parse(&seen[0].body).into_owned().collect();
                assert_eq!(
                    p.get("Signature"),
                    Some(&sign::sign("POST", SECRET, &pairs))
                );
            }
            crate::config::Signature::V3 => {
                assert_eq!(
                    seen[0].header("x-acs-action"),
                    Some("SetDcdnDomainSSLCertificate")
                );
                assert_eq!(seen[0].header("x-acs-version"), Some("2018-01-15"));
            }
        }
        assert_eq!(p["DomainName"], "edge.example.com");
    }
}

#[tokio::test]
async fn dcdn_read_answers_are_decoded() {
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let body = format!(
        r#"{{"RequestId":"R","CertInfos":{{"CertInfo":[{{"DomainName":"edge.example.com","CertName":"n","CertType":"upload","SSLProtocol":"on","SSLPub":{pem:?},"Status":"success"}}]}}}}"#
    );
    let (endpoint, log) = server(vec![json(200, &body)]).await;
    let c = client(&endpoint).for_product(Product::Dcdn);
    let served = c
        .describe_domain_certificate("edge.example.com")
        .await
        .unwrap()
        .expect("a served certificate");
    assert_eq!(served.status, "on");
    assert_eq!(served.certificate_pem, pem);
    assert_eq!(
        seen(&log)[0].params()["Action"],
        "DescribeDcdnDomainCertificateInfo"
    );

    let off = r#"{"RequestId":"R","CertInfos":{"CertInfo":[{"DomainName":"edge.example.com","SSLProtocol":"off","SSLPub":""}]}}"#;
    let (endpoint, _) = server(vec![json(200, off)]).await;
    let c = client(&endpoint).for_product(Product::Dcdn);
    assert_eq!(
        c.describe_domain_certificate("edge.example.com")
            .await
            .unwrap(),
        None
    );

    let page = r#"{"RequestId":"R","TotalCount":1,"PageNumber":1,"PageSize":500,"Domains":{"PageData":[{"DomainName":"edge.example.com","DomainStatus":"offline","SSLProtocol":"on"}]}}"#;
    let (endpoint, log) = server(vec![json(200, page)]).await;
    let c = client(&endpoint).for_product(Product::Dcdn);
    let got = c
        .describe_user_domains_page(UserDomainsRequest {
            page_size: 500,
            page_number: 1,
        })
        .await
        .unwrap();
    assert_eq!(seen(&log)[0].params()["Action"], "DescribeDcdnUserDomains");
    assert_eq!(got.domains[0].status, "offline");
    assert_eq!(got.domains[0].ssl_protocol, "on");
}
