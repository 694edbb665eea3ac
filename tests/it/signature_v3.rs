//! `[aliyun] signature = "v3"`: the real `certrotd sync` against `certrotd emulate` (a
//! subprocess) injecting 503s, resets and throttling; every domain ends up deployed and
//! every request the emulator saw was V3-signed, each with its own nonce, and no trace-level
//! output shows the secret or the key.

use std::collections::HashSet;
use std::fs;

use certrotd::cert;
use certrotd::emulator::{self, LogEntry};

use crate::harness::{Certbot, Config, Emulate, Env, issue, run_with, write_mode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v3_sync_under_faults_deploys_every_domain_with_v3_requests_only() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let domains: Vec<String> = (1..=12).map(|i| format!("s{i}.example.com")).collect();
    fs::write(env.join("domains.txt"), domains.join("\n")).expect("domains file");
    let secret = "V3-Sync-Secret-4Kp9";
    write_mode(&env.join("ak-secret"), format!("{secret}\n"), 0o600);
    let dump = env.join("dump.json");
    let emulate = Emulate::start(
        &env.join("domains.txt"),
        &dump,
        secret,
        &[
            "--fail-rate",
            "0.3",
            "--reset-rate",
            "0.1",
            "--throttle-rate",
            "0.05",
            "--seed",
            "13",
        ],
    );
    let issued = issue(&["*.example.com"]);
    certbot.add("example.com", &issued);
    let refs: Vec<&str> = domains.iter().map(String::as_str).collect();
    let secret_file = env.join("ak-secret").display().to_string();
    Config::new()
        .watch(certbot.live())
        .domains(&refs)
        .endpoint(&emulate.endpoint)
        .set(
            "aliyun",
            &format!("access_key_id = {:?}", emulator::DEFAULT_ACCESS_KEY_ID),
        )
        .set(
            "aliyun",
            &format!("access_key_secret_file = {secret_file:?}"),
        )
        .set("aliyun", "signature = \"v3\"")
        .set("aliyun", "max_domains_per_call = 2")
        .set("aliyun", "max_attempts = 30")
        .write(&env);

    let mut cmd = env.command(&["sync"]);
    cmd.env("RUST_LOG", "trace");
    let out = tokio::task::spawn_blocking(move || run_with(cmd))
        .await
        .expect("runner thread");
    emulate.stop();
    out.expect_status(0);
    let key_body: String = issued
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for leak in [secret, &key_body[..40]] {
        assert!(!out.all().contains(leak), "{leak} leaked at trace level");
    }

    let dump = emulator::Dump::read(&dump).expect("the dump");
    let fp = cert::parse(issued.fullchain_pem.as_bytes(), issued.key_pem.as_bytes())
        .expect("valid")
        .fingerprint;
    for d in &domains {
        assert_eq!(dump.served.get(d).map(|s| s.fingerprint), Some(fp), "{d}");
    }
    let log: &[LogEntry] = &dump.log;
    assert!(
        log.iter().any(|e| e.injected) && log.iter().any(|e| e.status.is_none()),
        "faults (answers and resets) were injected: {log:?}"
    );
    assert!(log.iter().any(|e| e.is_write() && e.succeeded()));
    for e in log {
        assert_eq!(e.signature, "v3", "{e:?}");
        assert!(!e.params_in_query, "{e:?}");
        assert_eq!(e.signature_nonce.len(), 32, "{e:?}");
    }
    let nonces: HashSet<&str> = log.iter().map(|e| e.signature_nonce.as_str()).collect();
    assert_eq!(nonces.len(), log.len(), "no nonce is used twice");
}
