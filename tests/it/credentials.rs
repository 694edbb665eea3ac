//! Temporary credentials end to end: the real `certrotd` against `certrotd emulate` (its STS
//! and instance metadata stand-ins issuing short-lived credentials that its CDN side expires):
//! OIDC (RRSA) with no AccessKey anywhere across several expiries and a rotated token file,
//! the ECS RAM role through IMDSv2, a metadata service that is down (the next source, or a
//! clear error), a `ram_role_arn` profile chosen by `ALIBABA_CLOUD_PROFILE`, and a profile
//! type certrotd does not support. Nothing secret shows at `RUST_LOG=trace`.

use std::fs;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use certrotd::emulator::{self, Dump, LogEntry};

use crate::harness::{Certbot, Config, Emulate, Env, RunningDaemon, issue, run_with, write_mode};

const ROLE_ARN: &str = "acs:ram::1234567890123456:role/certrotd-cdn";
const PROVIDER_ARN: &str = "acs:ram::1234567890123456:oidc-provider/ack-rrsa";
const BASE_SECRET: &str = "Base-Key-Secret-7Hq2";

/// A JWT-shaped OIDC token (the emulator checks its shape and `exp`, not a signature).
fn oidc_token(n: u32) -> String {
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    format!(
        "{}.{}.c2lnbmF0dXJlLW9mLXRva2Vu{n}",
        b64(serde_json::json!({"alg": "RS256", "kid": "k1"})),
        b64(
            serde_json::json!({"sub": "system:serviceaccount:certrotd:certrotd", "exp": exp, "jti": n})
        ),
    )
}

/// What the emulator logs of a token: the first 16 hex digits of its SHA-256.
fn digest(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn dump(path: &Path) -> Dump {
    Dump::read(path).expect("the emulator's dump")
}

/// Polls the dump (up to `secs`) until `done` holds; panics with `what` and the log.
async fn wait_for(
    path: &Path,
    secs: u64,
    what: &str,
    log: impl Fn() -> String,
    done: impl Fn(&Dump) -> bool,
) -> Dump {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(d) = Dump::read(path)
            && done(&d)
        {
            return d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; daemon log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn exchanges<'a>(log: &'a [LogEntry], action: &'a str) -> impl Iterator<Item = &'a LogEntry> + 'a {
    log.iter()
        .filter(move |e| e.action == action && e.succeeded())
}

fn served_fp(d: &Dump, domain: &str) -> Option<certrotd::cert::Fingerprint> {
    d.served.get(domain).map(|s| s.fingerprint)
}

fn fingerprint(issued: &certrotd::testca::Issued) -> certrotd::cert::Fingerprint {
    certrotd::cert::parse(issued.fullchain_pem.as_bytes(), issued.key_pem.as_bytes())
        .expect("valid")
        .fingerprint
}

struct World {
    env: Env,
    certbot: Certbot,
    dump: std::path::PathBuf,
    emulate: Emulate,
}

fn world(domains: &[&str], emulate_args: &[&str]) -> World {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    fs::write(env.join("domains.txt"), domains.join("\n")).expect("domains file");
    let dump = env.join("dump.json");
    let emulate = Emulate::start(&env.join("domains.txt"), &dump, BASE_SECRET, emulate_args);
    World {
        env,
        certbot,
        dump,
        emulate,
    }
}

/// A configuration with no AccessKey, STS and the metadata service at the emulator.
fn keyless(w: &World, domains: &[&str]) -> Config {
    Config::new()
        .watch(w.certbot.live())
        .domains(domains)
        .endpoint(&w.emulate.endpoint)
        .set(
            "aliyun",
            &format!("sts_endpoint = {:?}", w.emulate.endpoint),
        )
}

fn assert_nothing_secret(text: &str, also: &[&str]) {
    // The emulator's security tokens start CAIS; its STS AccessKeyIds show only masked.
    assert!(!text.contains("CAIS"), "a security token leaked:\n{text}");
    assert!(!text.contains(BASE_SECRET), "the base secret leaked");
    for s in also {
        assert!(!text.contains(s), "{s} leaked:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_run_renews_credentials_across_expiries_and_reads_the_rotated_token() {
    let domains = ["www.example.com"];
    let w = world(&domains, &["--sts-lifetime-secs", "20"]);
    let first = issue(&["www.example.com"]);
    w.certbot.add("example.com", &first);
    keyless(&w, &domains).write(&w.env);
    let token_file = w.env.join("oidc-token");
    let (old, new) = (oidc_token(1), oidc_token(2));
    fs::write(&token_file, &old).expect("token");
    let mut cmd = w.env.command(&["run"]);
    cmd.env("ALIBABA_CLOUD_ROLE_ARN", ROLE_ARN)
        .env("ALIBABA_CLOUD_OIDC_PROVIDER_ARN", PROVIDER_ARN)
        .env("ALIBABA_CLOUD_OIDC_TOKEN_FILE", &token_file)
        .env("RUST_LOG", "trace");
    let mut daemon = RunningDaemon::start_command(&w.env, cmd);
    let log = || fs::read_to_string(w.env.join("daemon.log")).unwrap_or_default();
    let fp1 = fingerprint(&first);
    wait_for(&w.dump, 30, "the first deploy", log, |d| {
        served_fp(d, domains[0]) == Some(fp1)
    })
    .await;

    // Three exchanges: at least two sets have expired (each lives 20 s, refreshed at 16 s).
    wait_for(&w.dump, 60, "three OIDC exchanges", log, |d| {
        exchanges(&d.log, "AssumeRoleWithOIDC").count() >= 3
    })
    .await;
    let second = issue(&["www.example.com"]);
    w.certbot.renew("example.com", &second);
    let fp2 = fingerprint(&second);
    wait_for(&w.dump, 30, "the second deploy", log, |d| {
        served_fp(d, domains[0]) == Some(fp2)
    })
    .await;

    // The kubelet rotates the token: the next exchange sends the new one.
    fs::write(&token_file, &new).expect("rotate the token");
    let before = exchanges(&dump(&w.dump).log, "AssumeRoleWithOIDC").count();
    wait_for(
        &w.dump,
        40,
        "an exchange with the rotated token",
        log,
        |d| exchanges(&d.log, "AssumeRoleWithOIDC").count() > before + 1,
    )
    .await;
    let third = issue(&["www.example.com"]);
    w.certbot.renew("example.com", &third);
    let fp3 = fingerprint(&third);
    let d = wait_for(&w.dump, 30, "the third deploy", log, |d| {
        served_fp(d, domains[0]) == Some(fp3)
    })
    .await;
    assert!(daemon.running(), "the daemon keeps running:\n{}", log());
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.exit_code(30).await, 0, "{}", log());

    let oidc: Vec<&LogEntry> = exchanges(&d.log, "AssumeRoleWithOIDC").collect();
    let digests: Vec<&str> = oidc
        .iter()
        .map(|e| e.oidc_token_digest.as_deref().unwrap_or(""))
        .collect();
    let (old_d, new_d) = (digest(&old), digest(&new));
    assert_eq!(
        digests.first().copied(),
        Some(old_d.as_str()),
        "{digests:?}"
    );
    assert_eq!(digests.last().copied(), Some(new_d.as_str()), "{digests:?}");
    let switch = digests
        .iter()
        .position(|d| *d == new_d)
        .expect("the new token was sent");
    assert!(
        digests[switch..].iter().all(|d| *d == new_d),
        "the old token is not read again: {digests:?}"
    );
    assert!(digests[..switch].iter().all(|d| *d == old_d), "{digests:?}");
    // Every CDN call was signed with an issued STS key, none refused; writes used more than
    // one set (the renewals came after expiries).
    let cdn: Vec<&LogEntry> = d
        .log
        .iter()
        .filter(|e| e.action.starts_with("Describe") || e.is_write())
        .collect();
    assert!(
        cdn.iter().all(|e| e.access_key_id.starts_with("STS.")),
        "{cdn:?}"
    );
    assert!(
        cdn.iter().all(|e| e.succeeded()),
        "no CDN call refused: {cdn:?}"
    );
    let keys: std::collections::HashSet<&str> = cdn
        .iter()
        .filter(|e| e.is_write())
        .map(|e| e.access_key_id.as_str())
        .collect();
    assert!(
        keys.len() >= 3,
        "each deploy signed with a fresh set: {keys:?}"
    );
    assert_nothing_secret(&log(), &[&old, &new]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_ram_role_via_imdsv2_is_refreshed_before_expiry() {
    let domains = ["ecs.example.com"];
    let w = world(&domains, &["--sts-lifetime-secs", "20"]);
    let first = issue(&["ecs.example.com"]);
    w.certbot.add("example.com", &first);
    keyless(&w, &domains)
        .set(
            "aliyun",
            &format!("metadata_endpoint = {:?}", w.emulate.endpoint),
        )
        .write(&w.env);
    let mut cmd = w.env.command(&["run"]);
    cmd.env("RUST_LOG", "trace");
    let mut daemon = RunningDaemon::start_command(&w.env, cmd);
    let log = || fs::read_to_string(w.env.join("daemon.log")).unwrap_or_default();
    let fp1 = fingerprint(&first);
    wait_for(&w.dump, 30, "the first deploy", log, |d| {
        served_fp(d, domains[0]) == Some(fp1)
    })
    .await;
    // Refreshed in the background before the 20 s are up (at 16 s).
    wait_for(&w.dump, 40, "a second metadata read", log, |d| {
        exchanges(&d.log, "imds:credentials").count() >= 2
    })
    .await;
    let second = issue(&["ecs.example.com"]);
    w.certbot.renew("example.com", &second);
    let fp2 = fingerprint(&second);
    let d = wait_for(&w.dump, 30, "the second deploy", log, |d| {
        served_fp(d, domains[0]) == Some(fp2)
    })
    .await;
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.exit_code(30).await, 0, "{}", log());

    // IMDSv2: every read follows a session token; the role was discovered.
    let imds: Vec<&LogEntry> = d
        .log
        .iter()
        .filter(|e| e.action.starts_with("imds:"))
        .collect();
    assert!(imds.iter().all(|e| e.succeeded()), "{imds:?}");
    assert_eq!(
        imds.first().map(|e| e.action.as_str()),
        Some("imds:token"),
        "{imds:?}"
    );
    assert!(
        imds.iter().any(|e| e.action == "imds:role"),
        "the role was discovered: {imds:?}"
    );
    let tokens = imds.iter().filter(|e| e.action == "imds:token").count();
    assert_eq!(
        tokens,
        exchanges(&d.log, "imds:credentials").count(),
        "one session token per read: {imds:?}"
    );
    let writes: Vec<&LogEntry> = d.log.iter().filter(|e| e.is_write()).collect();
    assert!(
        writes
            .iter()
            .all(|e| e.succeeded() && e.access_key_id.starts_with("STS.")),
        "{writes:?}"
    );
    assert_nothing_secret(&log(), &[]);
}

/// A loopback port with nothing listening.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_service_that_is_down_falls_through_to_the_credentials_uri_or_says_so() {
    let domains = ["down.example.com"];
    let w = world(&domains, &[]);
    let issued = issue(&["down.example.com"]);
    w.certbot.add("example.com", &issued);
    let metadata = format!("http://127.0.0.1:{}", closed_port());
    keyless(&w, &domains)
        .set("aliyun", &format!("metadata_endpoint = {metadata:?}"))
        .write(&w.env);
    let uri = format!("{}/emulator/credentials-uri", w.emulate.endpoint);
    let w2 = &w;
    let out = tokio::task::spawn_blocking({
        let uri = uri.clone();
        let cmd_env = w2.env.path().to_path_buf();
        move || {
            let mut cmd = crate::harness::certrotd(&cmd_env);
            cmd.arg("-c").arg(cmd_env.join("certrotd.toml")).arg("sync");
            cmd.env("RUST_LOG", "trace")
                .env("ALIBABA_CLOUD_CREDENTIALS_URI", &uri);
            run_with(cmd)
        }
    })
    .await
    .expect("runner");
    out.expect_status(0);
    assert!(
        out.all().contains(&metadata),
        "the failed metadata service is named:\n{}",
        out.all()
    );
    assert!(out.all().contains("trying the next one"), "{}", out.all());
    let d = dump(&w.dump);
    assert_eq!(served_fp(&d, domains[0]), Some(fingerprint(&issued)));
    assert_eq!(exchanges(&d.log, "credentials-uri").count(), 1);
    assert_nothing_secret(&out.all(), &[]);

    // No URI: a clear error naming the metadata service, nothing pushed.
    let second = issue(&["down.example.com"]);
    w.certbot.renew("example.com", &second);
    let out = tokio::task::spawn_blocking({
        let p = w.env.path().to_path_buf();
        move || {
            let mut cmd = crate::harness::certrotd(&p);
            cmd.arg("-c").arg(p.join("certrotd.toml")).arg("sync");
            run_with(cmd)
        }
    })
    .await
    .expect("runner");
    assert_ne!(out.status, 0, "{}", out.all());
    let text = out.all();
    assert!(
        text.contains("ECS RAM role") && text.contains(&metadata),
        "{text}"
    );
    assert_eq!(
        served_fp(&dump(&w.dump), domains[0]),
        Some(fingerprint(&issued)),
        "nothing new pushed"
    );
}

fn write_ini(env: &Env, text: &str) {
    write_mode(&env.join(".alibabacloud/credentials"), text, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ram_role_arn_profile_chosen_by_alibaba_cloud_profile_assumes_the_role() {
    let domains = ["arn.example.com"];
    let w = world(&domains, &["--sts-lifetime-secs", "900"]);
    let issued = issue(&["arn.example.com"]);
    w.certbot.add("example.com", &issued);
    keyless(&w, &domains).write(&w.env);
    write_ini(
        &w.env,
        &format!(
            "[default]\ntype = access_key\naccess_key_id = LTAIwrongdefault01\naccess_key_secret = nope\n\n\
             [deploy]\ntype = ram_role_arn\naccess_key_id = {}\naccess_key_secret = {BASE_SECRET}\n\
             role_arn = {ROLE_ARN}\nrole_session_name = certrotd-test\n",
            emulator::DEFAULT_ACCESS_KEY_ID
        ),
    );
    let out = tokio::task::spawn_blocking({
        let p = w.env.path().to_path_buf();
        move || {
            let mut cmd = crate::harness::certrotd(&p);
            cmd.arg("-c").arg(p.join("certrotd.toml")).arg("sync");
            cmd.env("RUST_LOG", "trace")
                .env("ALIBABA_CLOUD_PROFILE", "deploy");
            run_with(cmd)
        }
    })
    .await
    .expect("runner");
    out.expect_status(0);
    let d = dump(&w.dump);
    assert_eq!(served_fp(&d, domains[0]), Some(fingerprint(&issued)));
    let assumed: Vec<&LogEntry> = exchanges(&d.log, "AssumeRole").collect();
    assert_eq!(assumed.len(), 1, "{:?}", d.log);
    assert_eq!(
        assumed[0].access_key_id,
        emulator::DEFAULT_ACCESS_KEY_ID,
        "signed with the base key"
    );
    assert!(
        d.log
            .iter()
            .filter(|e| e.is_write())
            .all(|e| e.access_key_id.starts_with("STS."))
    );
    assert_nothing_secret(&out.all(), &["nope"]);

    // `check` names the profile and the role, no secret.
    let out = w.env.run(&["check"]);
    let text = out.all();
    assert!(
        text.contains("[default]"),
        "without ALIBABA_CLOUD_PROFILE the default profile: {text}"
    );
    let mut cmd = w.env.command(&["check"]);
    cmd.env("ALIBABA_CLOUD_PROFILE", "deploy");
    let text = run_with(cmd).all();
    assert!(
        text.contains("[deploy]") && text.contains(ROLE_ARN) && text.contains("AssumeRole"),
        "{text}"
    );
    assert_nothing_secret(&text, &[]);
}

#[test]
fn a_profile_type_certrotd_does_not_support_is_named() {
    let env = Env::new();
    Config::new()
        .endpoint("http://127.0.0.1:9")
        .domains(&["x.example.com"])
        .write(&env);
    write_ini(
        &env,
        "[default]\ntype = rsa_key_pair\npublic_key_id = x\nprivate_key_file = /k\n",
    );
    let out = env.run(&["sync"]);
    assert_ne!(out.status, 0);
    let text = out.all();
    assert!(
        text.contains("type = rsa_key_pair, which certrotd does not support"),
        "{text}"
    );
    assert!(text.contains(".alibabacloud/credentials"), "{text}");
}
