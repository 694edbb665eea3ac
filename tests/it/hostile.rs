//! `certrotd sync` and `status` against a hostile API server: a small test server (not the
//! emulator, which stays a faithful copy of the real API) that decodes each request's own
//! form body and echoes its `SSLPri` back in every shape a server could — as the `RequestId`
//! (raw PEM, without markers, percent-encoded), in the `x-acs-request-id` header, as a
//! forged log line, in an `InvalidSSLPri` message (32-character chunks, JSON-escaped, the
//! PEM without its BEGIN line), in an HTML error page — and a 503 with a 20 MiB body.
//!
//! For each shape the real binary runs `sync` at `RUST_LOG=trace` (human and JSON logs) and
//! then `status --json`; no 16-character window of either key (RSA and EC, in the PKCS#8
//! form on disk and the PKCS#1/SEC1 form uploaded) may appear in stdout, stderr, the state
//! folder or the status output, however that output spells it, and no line may be forged.

use std::collections::HashSet;
use std::convert::Infallible;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use certrotd::cert;
use certrotd::state;
use certrotd::testca::Issued;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::harness::{Certbot, Config, Env, Output, issue, issue_rsa, run_with, write_mode};

/// How the server answers `BatchSetCdnDomainServerCertificate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// 200, `RequestId` = "echo " + the received `SSLPri` (PEM, line breaks and all).
    RequestIdRaw,
    /// 200, `RequestId` = "echo " + the key's base64 lines without the PEM markers.
    RequestIdNoMarkers,
    /// 200, `RequestId` = "echo " + the form-encoded `SSLPri`.
    RequestIdPercent,
    /// 200 with a good `RequestId`, and `x-acs-request-id` = the key's lines joined by
    /// spaces (a header cannot hold a line break).
    Header,
    /// 200, `RequestId` = a line break and a forged log line.
    ForgedLine,
    /// 400 `InvalidSSLPri`, `Message` = "bad key " + the base64 in 32-character chunks.
    Chunks,
    /// 400 `InvalidSSLPri`, `Message` = the PEM JSON-escaped once more (`\n`, `\u002b`, `\/`).
    JsonEscaped,
    /// 400 `InvalidSSLPri`, `Message` = the PEM without its BEGIN line (ends with the short
    /// last base64 line).
    NoBeginLine,
    /// 502 HTML page with the key's lines in a `<pre>`.
    Html,
    /// 503 with a 20 MiB body.
    HugeBody,
}

const FORGED: &str = "2026-12-01T00:00:00.000000Z  INFO deployed domains=99 FORGED";
const HUGE: usize = 20 << 20;

/// What the server saw and served.
#[derive(Default)]
struct Seen {
    batch_calls: AtomicUsize,
    /// The certificate each domain serves (its `SSLPub`), for the read-back.
    served: Mutex<Vec<(String, String)>>,
}

/// Starts the hostile server; returns its endpoint and what it saw.
async fn hostile(shape: Shape) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let state = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(answer(shape, &state, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

fn json_response(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn base64_lines(pem: &str) -> Vec<&str> {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

fn percent(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn answer(shape: Shape, seen: &Seen, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    match get("Action").as_str() {
        "BatchSetCdnDomainServerCertificate" => {
            seen.batch_calls.fetch_add(1, Ordering::SeqCst);
            let domains = get("DomainName");
            let mut served = seen.served.lock().expect("lock");
            for d in domains.split(',') {
                served.push((d.to_string(), get("SSLPub")));
            }
            drop(served);
            batch_answer(shape, &get("SSLPri"))
        }
        "DescribeDomainCertificateInfo" => {
            let domain = get("DomainName");
            let served = seen.served.lock().expect("lock");
            let pem = served
                .iter()
                .rev()
                .find(|(d, _)| *d == domain)
                .map(|(_, p)| p.clone())
                .unwrap_or_default();
            let info = serde_json::json!({
                "DomainName": domain, "CertName": "c", "CertType": "upload",
                "ServerCertificateStatus": "on", "ServerCertificate": pem,
            });
            let body = serde_json::json!({
                "RequestId": "5C6B2E9A-0000-4000-8000-000000000001",
                "CertInfos": { "CertInfo": [info] },
            });
            json_response(200, body.to_string())
        }
        _ => json_response(400, r#"{"Code":"InvalidAction.NotFound"}"#.to_string()),
    }
}

fn batch_answer(shape: Shape, key: &str) -> Response<Full<Bytes>> {
    let lines = base64_lines(key);
    let ok_id = "5C6B2E9A-0000-4000-8000-000000000002";
    let with_id =
        |id: String| json_response(200, serde_json::json!({ "RequestId": id }).to_string());
    let refusal = |message: String| {
        let body = serde_json::json!({
            "RequestId": ok_id, "HostId": "cdn.aliyuncs.com", "Code": "InvalidSSLPri",
            "Message": message,
        });
        json_response(400, body.to_string())
    };
    match shape {
        Shape::RequestIdRaw => with_id(format!("echo {key}")),
        Shape::RequestIdNoMarkers => with_id(format!("echo {}", lines.join("\n"))),
        Shape::RequestIdPercent => with_id(format!("echo{}", percent(key))),
        Shape::Header => {
            let mut r = with_id(ok_id.to_string());
            let value = format!("echo {}", lines.join(" "));
            r.headers_mut().insert(
                "x-acs-request-id",
                HeaderValue::from_bytes(value.as_bytes()).expect("header value"),
            );
            r
        }
        Shape::ForgedLine => with_id(format!("ok\n{FORGED}\n\u{1b}[2K")),
        Shape::Chunks => {
            let b64: String = lines.concat();
            let chunks: Vec<String> = b64
                .as_bytes()
                .chunks(32)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            refusal(format!("bad key {}", chunks.join(" ")))
        }
        Shape::JsonEscaped => refusal(
            key.replace('\n', "\\n")
                .replace('+', "\\u002b")
                .replace('/', "\\/"),
        ),
        Shape::NoBeginLine => refusal(key.lines().skip(1).collect::<Vec<_>>().join("\n")),
        Shape::Html => {
            let page = format!(
                "<html><head><title>502 Bad Gateway</title></head><body><pre>{}</pre></body></html>",
                lines.join("\n")
            );
            let mut r = json_response(502, page);
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("text/html"),
            );
            r
        }
        Shape::HugeBody => json_response(503, "x".repeat(HUGE)),
    }
}

// ---------------------------------------------------------------------------------------
// Looking for the key in whatever was written

/// The base64 bodies of both keys, in the form on disk and the form uploaded.
fn key_bodies(keys: &[&Issued]) -> Vec<String> {
    let mut out = Vec::new();
    for issued in keys {
        let parsed = cert::parse(issued.fullchain_pem.as_bytes(), issued.key_pem.as_bytes())
            .expect("valid lineage");
        for pem in [issued.key_pem.as_str(), parsed.key.expose_upload_pem()] {
            out.push(base64_lines(pem).concat());
        }
    }
    out
}

fn alnum(text: &str) -> String {
    text.chars().filter(char::is_ascii_alphanumeric).collect()
}

/// Every 16-character window of every key, as is and with letters and digits only.
struct Windows {
    raw: HashSet<String>,
    plain: HashSet<String>,
}

impl Windows {
    fn of(keys: &[String]) -> Windows {
        let windows = |s: &str| -> Vec<String> {
            let c: Vec<char> = s.chars().collect();
            c.windows(16).map(|w| w.iter().collect()).collect()
        };
        let mut me = Windows {
            raw: HashSet::new(),
            plain: HashSet::new(),
        };
        for k in keys {
            me.raw.extend(windows(k));
            me.plain.extend(windows(&alnum(k)));
        }
        me
    }

    /// The first window found in `text` read as is, percent-decoded (twice) or JSON-unescaped.
    fn find(&self, text: &str) -> Option<String> {
        let once = percent_decode(text);
        let readings = [
            text.to_string(),
            percent_decode(&once),
            once,
            text.replace("\\n", "\n")
                .replace("\\u002b", "+")
                .replace("\\/", "/"),
        ];
        readings.iter().find_map(|t| {
            let hit = |s: &str, set: &HashSet<String>| {
                let c: Vec<char> = s.chars().collect();
                c.windows(16)
                    .map(|w| w.iter().collect::<String>())
                    .find(|w| set.contains(w))
            };
            hit(t, &self.raw).or_else(|| hit(&alnum(t), &self.plain))
        })
    }
}

fn percent_decode(text: &str) -> String {
    let bytes: Vec<u8> =
        form_urlencoded::parse(format!("x={}", text.replace('&', "%26")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned().into_bytes())
            .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn all_files(dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            all_files(&path, out);
        } else {
            let text = String::from_utf8_lossy(&fs::read(&path).expect("read")).into_owned();
            out.push((path.display().to_string(), text));
        }
    }
}

/// Every text value in the state store at `path` (all columns of all rows), one per line.
fn store_texts(path: &Path) -> String {
    let db =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the store");
    let mut out = String::new();
    for table in ["domains", "meta"] {
        let mut stmt = db
            .prepare(&format!("SELECT * FROM {table}"))
            .expect("select");
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).expect("query");
        while let Some(row) = rows.next().expect("row") {
            for i in 0..columns {
                if let Ok(Some(text)) = row.get::<_, Option<String>>(i) {
                    out.push_str(&text);
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// Panics when a key window or a forged line shows up in `what`.
fn assert_clean(windows: &Windows, name: &str, what: &str) {
    if let Some(w) = windows.find(what) {
        panic!("{name} leaks key text {w:?}:\n{what}");
    }
    assert!(
        !what.contains("FORGED"),
        "{name} carries the forged line:\n{what}"
    );
    for bad in ['\u{1b}', '\r', '\u{202e}'] {
        assert!(!what.contains(bad), "{name} carries {bad:?} raw:\n{what}");
    }
}

// ---------------------------------------------------------------------------------------
// The runs

struct World {
    env: Env,
    keys: Vec<String>,
}

fn world(endpoint: &str) -> World {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let rsa = issue_rsa(&["rsa.example.com"]);
    let ec = issue(&["ec.example.com"]);
    certbot.add("rsa", &rsa);
    certbot.add("ec", &ec);
    write_mode(&env.join("ak-secret"), "Hostile-Test-Secret-1\n", 0o600);
    Config::new()
        .watch(certbot.live())
        .domains(&["rsa.example.com", "ec.example.com"])
        .endpoint(endpoint)
        .set("aliyun", "access_key_id = \"LTAIhostiletest\"")
        .set(
            "aliyun",
            &format!(
                "access_key_secret_file = {:?}",
                env.join("ak-secret").display().to_string()
            ),
        )
        .set("aliyun", "max_attempts = 3")
        .write(&env);
    World {
        keys: key_bodies(&[&rsa, &ec]),
        env,
    }
}

async fn run(env: &Env, args: &[&str]) -> Output {
    let mut cmd = env.command(args);
    cmd.env("RUST_LOG", "trace");
    tokio::task::spawn_blocking(move || run_with(cmd))
        .await
        .expect("runner thread")
}

/// `sync` (human then JSON logs, each on a fresh state) and `status --json` after each;
/// asserts nothing leaks anywhere. Returns the batch calls the server saw.
async fn check_shape(shape: Shape) -> usize {
    let (endpoint, seen) = hostile(shape).await;
    let w = world(&endpoint);
    let windows = Windows::of(&w.keys);
    assert!(windows.raw.len() > 1000, "the windows are the keys'");
    for log_format in ["human", "json"] {
        let _ = fs::remove_dir_all(w.env.join("state"));
        let sync = run(&w.env, &["--log-format", log_format, "sync"]).await;
        assert!(
            !sync.stderr.contains("panicked") && matches!(sync.status, 0 | 1),
            "{shape:?}: {}",
            sync.all()
        );
        assert!(sync.stderr.contains("TRACE"), "trace logging is on");
        if log_format == "json" {
            for line in sync.stderr.lines() {
                assert!(
                    serde_json::from_str::<serde_json::Value>(line).is_ok(),
                    "{shape:?}: not one JSON object: {line:?}"
                );
            }
        } else {
            for line in sync.stderr.lines() {
                assert!(
                    line.starts_with("20") || line.trim().is_empty(),
                    "{shape:?}: a log line that does not start with a timestamp: {line:?}"
                );
            }
        }
        let status = run(&w.env, &["status", "--json"]).await;
        // 1 while a domain is not up to date (the hostile server refused or garbled it).
        assert!(
            matches!(status.status, 0 | 1) && !status.stderr.contains("panicked"),
            "{}",
            status.all()
        );
        let tag = format!("{shape:?} {log_format}");
        assert_clean(&windows, &format!("{tag} sync stdout"), &sync.stdout);
        assert_clean(&windows, &format!("{tag} sync stderr"), &sync.stderr);
        assert_clean(&windows, &format!("{tag} status --json"), &status.stdout);
        let mut files = Vec::new();
        all_files(&w.env.join("state"), &mut files);
        assert!(
            files.iter().any(|(p, _)| p.ends_with(state::STATE_FILE)),
            "{tag}: a state file"
        );
        for (path, text) in &files {
            if path.ends_with(state::STATE_FILE) {
                // Binary pages: key windows are looked for in the raw bytes, control
                // characters in the texts the store holds.
                if let Some(w) = windows.find(text) {
                    panic!("{tag} {path} leaks key text {w:?}");
                }
                let texts = store_texts(Path::new(path));
                assert_clean(&windows, &format!("{tag} {path} (rows)"), &texts);
            } else {
                assert_clean(&windows, &format!("{tag} {path}"), text);
            }
        }
    }
    seen.batch_calls.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_echoing_the_key_never_reaches_log_state_or_status() {
    for shape in [
        Shape::RequestIdRaw,
        Shape::RequestIdNoMarkers,
        Shape::RequestIdPercent,
        Shape::ForgedLine,
    ] {
        // Two lineages, two syncs: two calls each, all accepted.
        assert_eq!(check_shape(shape).await, 4, "{shape:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_header_echoing_the_key_is_not_logged_raw() {
    assert_eq!(check_shape(Shape::Header).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_messages_echoing_the_key_are_redacted_everywhere() {
    for shape in [Shape::Chunks, Shape::JsonEscaped, Shape::NoBeginLine] {
        // A certificate refusal is final: one call per lineage and sync.
        assert_eq!(check_shape(shape).await, 4, "{shape:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_error_page_echoing_the_key_is_redacted() {
    // 502 is retried: three attempts per lineage and sync.
    assert_eq!(check_shape(Shape::Html).await, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_with_a_body_too_large_to_read_is_retried() {
    // Classified by its status: every attempt is made (3 per lineage and sync).
    assert_eq!(check_shape(Shape::HugeBody).await, 12);
}

// ---------------------------------------------------------------------------------------
// Hostile files: PEM labels, lineage names and certificate names

/// Panics when a raw control or bidi character, or a line starting with `forged`, is in
/// `what`.
fn assert_unforged(name: &str, what: &str) {
    for bad in ['\u{1b}', '\r', '\u{7}', '\u{202e}'] {
        assert!(!what.contains(bad), "{name} carries {bad:?} raw:\n{what}");
    }
    for line in what.lines() {
        assert!(
            !line.trim_start().starts_with("FORGED"),
            "{name} has a forged line:\n{what}"
        );
    }
}

#[test]
fn check_never_quotes_a_hostile_pem_label() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let secret = "hunter2 PASSWORD=Tr0ub4dor&3";
    let good = issue(&["label.example.com"]);
    let dir = certbot.add("label", &good);
    let key =
        format!("-----BEGIN {secret} PRIVATE KEY-----\nAAAA\n-----END {secret} PRIVATE KEY-----\n");
    write_mode(
        &env.join("letsencrypt/archive/label/privkey1.pem"),
        &key,
        0o600,
    );
    let cut = issue(&["cut.example.com"]);
    certbot.add("cut", &cut);
    let chain = format!("{}-----BEGIN {secret}-----\nAAAA\n", cut.fullchain_pem);
    crate::harness::write(&env.join("letsencrypt/archive/cut/fullchain1.pem"), chain);
    Config::new()
        .watch(certbot.live())
        .domains(&["label.example.com", "cut.example.com"])
        .write(&env);
    let mut cmd = env.command(&["check"]);
    cmd.env("RUST_LOG", "trace");
    let out = run_with(cmd);
    out.expect_status(1);
    assert!(dir.exists());
    for word in ["hunter2", "PASSWORD", "Tr0ub4dor"] {
        assert!(!out.all().contains(word), "{word} quoted:\n{}", out.all());
    }
    assert_eq!(
        out.all().matches("unexpected PEM label").count(),
        2,
        "both lineages say why:\n{}",
        out.all()
    );
}

#[test]
fn control_characters_in_lineage_and_certificate_names_are_escaped() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let lineage = "evil\nFORGED OK: 1 valid lineage\u{1b}[2K\u{7}\u{202e}gpj";
    let san = "x\nFORGED.example.com\u{1b}[31m\r";
    certbot.add(lineage, &issue(&["ok.example.com", san]));
    Config::new()
        .watch(certbot.live())
        .domains(&["other.example.com"])
        .write(&env);
    let mut cmd = env.command(&["check"]);
    cmd.env("RUST_LOG", "trace");
    let out = run_with(cmd);
    out.expect_status(1);
    assert_unforged("check stdout", &out.stdout);
    assert_unforged("check stderr", &out.stderr);
    // The names are shown, escaped: in the table and in the "covers no managed domain"
    // warning.
    assert!(
        out.stdout
            .contains("evil\\nFORGED OK: 1 valid lineage\\x1b[2K\\x07\\u{202e}gpj"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("x\\nforged.example.com\\x1b[31m\\r"),
        "{}",
        out.stdout
    );
    // The lineage is one table row.
    let rows: Vec<&str> = out.stdout.lines().filter(|l| l.contains("evil")).collect();
    assert!(
        rows.len() >= 2 && rows.iter().any(|r| r.contains("VALID")),
        "{}",
        out.stdout
    );
}
