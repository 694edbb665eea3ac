//! `[metrics]` end to end: a real `certrotd run` against the in-process emulator, scraped
//! over loopback. The exposition must agree with what the emulator serves and saw (per-domain
//! up-to-date and expiry, a refused domain's 0, API attempts by action and result), move
//! after a renewal, hold no secret, and pass `promtool check metrics` (required when
//! `CERTROTD_REQUIRE_PROMTOOL=1`, as CI sets it; skipped with a note otherwise).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use certrotd::emulator::DEFAULT_ACCESS_KEY_SECRET;

use crate::harness::{self, Certbot, Env, RunningDaemon, issue};

/// The address the daemon logged it serves metrics on.
pub(crate) fn metrics_addr(daemon: &RunningDaemon) -> Option<String> {
    let log = daemon.log();
    let line = log.lines().find(|l| l.contains("serving /metrics"))?;
    let at = line.find("listen=")? + "listen=".len();
    Some(line[at..].split_whitespace().next()?.to_string())
}

/// Waits for the daemon's metrics listener and returns its address.
async fn listening(daemon: &RunningDaemon) -> String {
    let mut addr = None;
    harness::wait_for(
        "the metrics listener",
        15,
        || {
            addr = metrics_addr(daemon);
            addr.is_some()
        },
        || daemon.log(),
    )
    .await;
    addr.expect("an address")
}

/// Waits until `/healthz` says the daemon has no usable credentials, and checks that it
/// is still up and its metric says so too.
async fn up_without_credentials(daemon: &mut RunningDaemon, addr: &str, secs: u64) {
    harness::wait_for(
        "/healthz to say why it is unhealthy",
        secs,
        || {
            let (status, body) = get(addr, "/healthz", "*/*");
            status == 503 && body.contains("no usable credentials")
        },
        || daemon.log(),
    )
    .await;
    assert!(daemon.running(), "still up: {}", daemon.log());
    let s = samples(&get(addr, "/metrics", "*/*").1);
    assert_eq!(s.get("certrotd_credentials_available"), Some(&0.0));
}

/// `GET path` with `accept`; (status, body).
pub(crate) fn get(addr: &str, path: &str, accept: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the answer");
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

/// Samples of the classic text format: `name{labels}` → value.
pub(crate) fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// `certrotd_api_requests_total` by (action, result), from the exposition.
fn api_counts(s: &BTreeMap<String, f64>) -> BTreeMap<(String, String), u64> {
    s.iter()
        .filter_map(|(k, v)| {
            let labels = k.strip_prefix("certrotd_api_requests_total{")?;
            let field = |name: &str| {
                let at = labels.find(&format!("{name}=\""))? + name.len() + 2;
                Some(labels[at..].split('"').next()?.to_string())
            };
            Some(((field("action")?, field("result")?), *v as u64))
        })
        .collect()
}

/// The same counts from the emulator's request log.
fn emulator_counts(emu: &certrotd::emulator::Emulator) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for e in emu.log() {
        let result = e.code.clone().unwrap_or_else(|| "ok".to_string());
        *out.entry((e.action.clone(), result)).or_insert(0) += 1;
    }
    out
}

fn not_after_of(issued: &certrotd::testca::Issued) -> f64 {
    let c = certrotd::cert::parse(issued.fullchain_pem.as_bytes(), issued.key_pem.as_bytes())
        .expect("a valid certificate");
    c.not_after.unix_timestamp() as f64
}

fn up(domain: &str) -> String {
    format!("certrotd_domain_up_to_date{{domain=\"{domain}\",product=\"cdn\"}}")
}

fn expiry(domain: &str) -> String {
    format!(
        "certrotd_domain_certificate_expiry_timestamp_seconds{{domain=\"{domain}\",product=\"cdn\"}}"
    )
}

/// Runs `promtool check metrics` on `text` when promtool is installed (or required).
fn promtool_check(text: &str) {
    let required = std::env::var_os("CERTROTD_REQUIRE_PROMTOOL").is_some_and(|v| v == "1");
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                !required,
                "promtool is required (CERTROTD_REQUIRE_PROMTOOL=1): {e}"
            );
            eprintln!("skipped promtool check metrics: promtool not found ({e})");
            return;
        }
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics failed: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_agree_with_the_emulator_and_move_after_a_renewal() {
    let env = Env::new();
    // gone.example.com is managed but unknown to the emulator: refused, so never up to date.
    let known = ["a.example.com", "b.example.com"];
    let managed = ["a.example.com", "b.example.com", "gone.example.com"];
    let emu = harness::start_emulator(&known).await;
    let certbot = Certbot::new(env.join("letsencrypt"));
    let first = issue(&managed);
    let lineage = certbot.add("site", &first);
    harness::emulator_config(&env, &emu.endpoint(), &managed)
        .watch(certbot.live())
        .set("metrics", "listen = \"127.0.0.1:0\"")
        .write(&env);
    let daemon = RunningDaemon::start(&env);
    let addr = listening(&daemon).await;

    let fp = harness::fingerprint_of(first.fullchain_pem.as_bytes(), first.key_pem.as_bytes());
    let text = std::cell::RefCell::new(String::new());
    harness::wait_for(
        "metrics that agree with the emulator",
        20,
        || {
            let (status, body) = get(&addr, "/metrics", "*/*");
            let s = samples(&body);
            *text.borrow_mut() = body;
            status == 200
                && harness::emulator_serves(&emu, "a.example.com", fp)
                && s.get(&up("a.example.com")) == Some(&1.0)
                && s.get(&up("b.example.com")) == Some(&1.0)
                && s.get(&up("gone.example.com")) == Some(&0.0)
                && api_counts(&s) == emulator_counts(&emu)
                && s.get("certrotd_last_successful_pass_timestamp_seconds")
                    .is_some_and(|t| *t > 0.0)
        },
        || {
            format!(
                "exposition:\n{}\nemulator: {:?}\nlog:\n{}",
                text.borrow(),
                emulator_counts(&emu),
                daemon.log()
            )
        },
    )
    .await;
    let text = text.into_inner();
    let s = samples(&text);
    let not_after = not_after_of(&first);
    assert_eq!(s.get(&expiry("a.example.com")), Some(&not_after), "{text}");
    assert_eq!(s.get(&expiry("gone.example.com")), None, "{text}");
    let lineage_id = lineage.display().to_string();
    assert_eq!(
        s.get(&format!(
            "certrotd_certificate_expiry_timestamp_seconds{{lineage=\"{lineage_id}\"}}"
        )),
        Some(&not_after),
        "{text}"
    );
    assert_eq!(
        s.get(&format!(
            "certrotd_certificate_valid{{lineage=\"{lineage_id}\"}}"
        )),
        Some(&1.0),
        "{text}"
    );
    let counts = api_counts(&s);
    assert!(
        counts.keys().any(|(_, r)| r == "InvalidDomain.NotFound"),
        "the refusal is counted by its Code: {counts:?}"
    );
    assert!(
        s.get("certrotd_last_successful_pass_timestamp_seconds")
            .is_some_and(|t| *t > 0.0)
    );
    assert_eq!(
        s.get("certrotd_build_info{version=\"0.1.0\"}"),
        Some(&1.0),
        "{text}"
    );
    assert_eq!(
        s.get("certrotd_credentials_available"),
        Some(&1.0),
        "{text}"
    );
    assert!(
        !text.contains(DEFAULT_ACCESS_KEY_SECRET),
        "no secret in the exposition"
    );
    assert!(!text.contains("PRIVATE KEY"), "no key in the exposition");
    promtool_check(&text);
    let (status, om) = get(
        &addr,
        "/metrics",
        "application/openmetrics-text; version=1.0.0",
    );
    assert_eq!(status, 200);
    assert!(
        om.trim_end().ends_with("# EOF"),
        "OpenMetrics when asked for: {om}"
    );
    harness::wait_for(
        "/healthz 200 after a pass that ran to its end",
        10,
        || get(&addr, "/healthz", "*/*").0 == 200,
        || daemon.log(),
    )
    .await;
    assert_eq!(get(&addr, "/nothing", "*/*").0, 404);

    let second = harness::issue_with(&managed, -1, 60, certrotd::testca::LeafKey::EcdsaP256);
    certbot.renew("site", &second);
    let moved = not_after_of(&second);
    harness::wait_for(
        "the expiry metric to move after the renewal",
        20,
        || {
            let s = samples(&get(&addr, "/metrics", "*/*").1);
            s.get(&expiry("a.example.com")) == Some(&moved)
                && s.get(&up("a.example.com")) == Some(&1.0)
        },
        || daemon.log(),
    )
    .await;
}

#[test]
fn the_readme_alert_rules_pass_promtool() {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("\ngroups:\n")
        .expect("the alert rules in README.md")
        + 1;
    let rules = &readme[start..];
    let rules = &rules[..rules.find("```").expect("the end of the rules")];
    for series in [
        "certrotd_domain_certificate_expiry_timestamp_seconds",
        "certrotd_domain_up_to_date",
        "certrotd_last_successful_pass_timestamp_seconds",
    ] {
        assert!(rules.contains(series), "{series} in the README's rules");
    }
    let required = std::env::var_os("CERTROTD_REQUIRE_PROMTOOL").is_some_and(|v| v == "1");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, rules).expect("write the rules");
    match std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check rules: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            assert!(
                !required,
                "promtool is required (CERTROTD_REQUIRE_PROMTOOL=1): {e}"
            );
            eprintln!("skipped promtool check rules: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_without_credentials_stays_up_says_so_and_recovers_when_they_appear() {
    use certrotd::emulator::DEFAULT_ACCESS_KEY_ID;
    let env = Env::new();
    let domains = ["a.example.com"];
    let emu = harness::start_emulator(&domains).await;
    let certbot = Certbot::new(env.join("letsencrypt"));
    let issued = issue(&domains);
    certbot.add("a", &issued);
    // No credentials anywhere (the harness clears the environment; HOME is the test folder).
    crate::harness::Config::new()
        .endpoint(&emu.endpoint())
        .domains(&domains)
        .watch(certbot.live())
        .set("watch", "debounce_ms = 200")
        .set("metrics", "listen = \"127.0.0.1:0\"")
        .write(&env);
    let mut daemon = RunningDaemon::start(&env);
    let addr = listening(&daemon).await;
    up_without_credentials(&mut daemon, &addr, 15).await;
    let log = daemon.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("no Alibaba Cloud credentials"))
        .collect();
    assert_eq!(lines.len(), 1, "the error once, on one line:\n{log}");
    assert!(
        lines[0].contains("looked, in this order, at: 1."),
        "{}",
        lines[0]
    );

    // A credentials file provisioned later; a nudge (as a deploy hook gives) and it deploys.
    let profile = env.join(".alibabacloud/credentials");
    fs::create_dir_all(profile.parent().expect("parent")).expect("mkdir");
    crate::harness::write_mode(
        &profile,
        format!(
            "[default]\ntype = access_key\naccess_key_id = {DEFAULT_ACCESS_KEY_ID}\naccess_key_secret = {DEFAULT_ACCESS_KEY_SECRET}\n"
        ),
        0o600,
    );
    daemon.signal(libc::SIGUSR1);
    let fp = harness::fingerprint_of(issued.fullchain_pem.as_bytes(), issued.key_pem.as_bytes());
    harness::wait_for(
        "the deployment once credentials exist",
        20,
        || harness::emulator_serves(&emu, "a.example.com", fp),
        || daemon.log(),
    )
    .await;
    harness::wait_for(
        "/healthz to recover",
        15,
        || get(&addr, "/healthz", "*/*").0 == 200,
        || daemon.log(),
    )
    .await;
    assert!(
        daemon.log().contains("credentials found; resuming"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.terminate(15).await, 0);
}

#[test]
fn sync_without_credentials_prints_one_line_naming_the_sources() {
    let env = Env::new();
    crate::harness::Config::new()
        .endpoint("http://127.0.0.1:9")
        .domains(&["a.example.com"])
        .watch(env.join("live"))
        .write(&env);
    let out = env.run(&["sync"]);
    out.expect_status(1);
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("credentials"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", out.all());
    assert!(
        lines[0].contains("1. config file") && lines[0].contains("2. environment"),
        "{}",
        lines[0]
    );
}

/// Forwards every connection to `127.0.0.1:port` to `to` (`host:port`), from now on.
async fn forward(port: u16, to: String) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the metadata port");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let to = to.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_whose_ram_role_cannot_be_read_yet_stays_up_and_recovers_when_it_can() {
    let env = Env::new();
    let domains = ["role.example.com"];
    let emu = harness::start_emulator(&domains).await;
    let certbot = Certbot::new(env.join("letsencrypt"));
    let issued = issue(&domains);
    certbot.add("role", &issued);
    // The ECS RAM role is the source; its metadata service is not answering yet.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let metadata = format!("http://127.0.0.1:{port}");
    crate::harness::Config::new()
        .endpoint(&emu.endpoint())
        .domains(&domains)
        .watch(certbot.live())
        .set("aliyun", &format!("metadata_endpoint = {metadata:?}"))
        .set("metrics", "listen = \"127.0.0.1:0\"")
        .write(&env);
    let mut daemon = RunningDaemon::start(&env);
    let addr = listening(&daemon).await;
    up_without_credentials(&mut daemon, &addr, 30).await;
    let log = daemon.log();
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("keeps running and tries again"))
        .collect();
    assert_eq!(said.len(), 1, "said once, on one line:\n{log}");
    assert!(
        said[0].contains(&metadata),
        "names the service: {}",
        said[0]
    );

    // The metadata service answers from now on (the emulator's); a nudge and it deploys.
    let emulator_addr = emu.endpoint().trim_start_matches("http://").to_string();
    forward(port, emulator_addr).await;
    daemon.signal(libc::SIGUSR1);
    let fp = harness::fingerprint_of(issued.fullchain_pem.as_bytes(), issued.key_pem.as_bytes());
    harness::wait_for(
        "the deployment once the role can be read",
        30,
        || harness::emulator_serves(&emu, "role.example.com", fp),
        || daemon.log(),
    )
    .await;
    harness::wait_for(
        "/healthz and the metric to recover",
        15,
        || {
            get(&addr, "/healthz", "*/*").0 == 200
                && samples(&get(&addr, "/metrics", "*/*").1).get("certrotd_credentials_available")
                    == Some(&1.0)
        },
        || daemon.log(),
    )
    .await;
    assert!(
        daemon.log().contains("credentials found; resuming"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.terminate(15).await, 0);
}
