//! The automatic fallback: the emulator answers the batch call as retired (`--batch-gone`:
//! 404 `InvalidAction.NotFound`); the real binary switches to `SetCdnDomainSSLCertificate`,
//! warns once, records it in the state store (`meta` row `batch_gone`) and does not try the batch call again.

use certrotd::emulator::{Emulator, EmulatorConfig, LogEntry};

use crate::harness::{
    Certbot, Env, emulator_credentials, emulator_serves, fingerprint_of, issue, run_with,
};

const BATCH: &str = "BatchSetCdnDomainServerCertificate";
const PER_DOMAIN: &str = "SetCdnDomainSSLCertificate";
const ADVICE: &str = "set [aliyun] api = \"per-domain\"";

fn calls(emu: &Emulator, action: &str) -> Vec<LogEntry> {
    emu.log()
        .into_iter()
        .filter(|e| e.action == action)
        .collect()
}

/// The state store's top-level fields other than the domains (`batch_gone`, …), as JSON.
fn state_meta(env: &Env) -> String {
    let state = certrotd::state::load(&env.join("state")).expect("the state store");
    serde_json::to_string(&state).expect("JSON")
}

/// The store's `meta` row `batch_gone` (a JSON value), to read and write directly.
fn meta_row(env: &Env) -> (rusqlite::Connection, serde_json::Value) {
    let db = rusqlite::Connection::open(env.join("state").join(certrotd::state::STATE_FILE))
        .expect("open the store");
    let value: String = db
        .query_row("SELECT value FROM meta WHERE key = 'batch_gone'", [], |r| {
            r.get(0)
        })
        .expect("a batch_gone row");
    (db, serde_json::from_str(&value).expect("JSON"))
}

async fn run(env: &Env, args: &[&str]) -> crate::harness::Output {
    let cmd = env.command(args);
    tokio::task::spawn_blocking(move || run_with(cmd))
        .await
        .expect("runner thread")
}

/// 12 domains over 2 lineages: the first sync converges through the per-domain call after
/// one refused batch call, with one warning that says how to make it permanent; a second sync
/// after a renewal (and a `--force` sync the same day) sends no batch call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_batch_call_falls_back_to_per_domain_and_is_not_tried_again() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let mut domains = Vec::new();
    for parent in ["a.example.com", "b.example.com"] {
        certbot.add(parent, &issue(&[parent, &format!("*.{parent}")]));
        for d in 0..6 {
            domains.push(format!("d{d}.{parent}"));
        }
    }
    let mut config = EmulatorConfig::with_domains(domains.iter().cloned());
    config.batch_gone = true;
    let emu = Emulator::start("127.0.0.1:0".parse().expect("addr"), config)
        .await
        .expect("emulator starts");
    let refs: Vec<&str> = domains.iter().map(String::as_str).collect();
    emulator_credentials(&env, &emu.endpoint(), &refs)
        .watch(certbot.live())
        .write(&env);

    let first = run(&env, &["sync"]).await;
    first
        .expect_status(0)
        .expect_contains("12 domain(s) deployed")
        .expect_contains("note: the API answered that cdn-batch's call does not exist");
    assert_eq!(first.stderr.matches(ADVICE).count(), 1, "{}", first.all());
    let batch = calls(&emu, BATCH);
    assert_eq!(batch.len(), 1, "at most one batch attempt");
    assert_eq!(batch[0].status, Some(404));
    assert_eq!(batch[0].code.as_deref(), Some("InvalidAction.NotFound"));
    let per_domain = calls(&emu, PER_DOMAIN);
    assert_eq!(per_domain.len(), 12);
    assert!(per_domain.iter().all(LogEntry::succeeded));
    let state = state_meta(&env);
    assert!(state.contains("\"batch_gone\""), "{state}");
    assert!(state.contains("\"config_digest\""), "{state}");

    let renewed = issue(&["a.example.com", "*.a.example.com"]);
    certbot.renew("a.example.com", &renewed);
    let second = run(&env, &["sync"]).await;
    second
        .expect_status(0)
        .expect_contains("6 domain(s) to update in 6 call(s)")
        .expect_contains("6 domain(s) deployed");
    assert!(!second.all().contains(ADVICE), "{}", second.all());
    assert_eq!(
        calls(&emu, BATCH).len(),
        1,
        "the second sync tried the batch call"
    );
    assert_eq!(calls(&emu, PER_DOMAIN).len(), 18);
    let fp = fingerprint_of(renewed.fullchain_pem.as_bytes(), renewed.key_pem.as_bytes());
    for d in 0..6 {
        assert!(emulator_serves(&emu, &format!("d{d}.a.example.com"), fp));
    }

    // --force re-probes the batch call at most once a day: the last probe was just now.
    run(&env, &["sync", "--force"]).await.expect_status(0);
    assert_eq!(
        calls(&emu, BATCH).len(),
        1,
        "--force re-probed within a day"
    );
    assert_eq!(calls(&emu, PER_DOMAIN).len(), 30);

    // Two days later (the record's time moved back): a plain sync still does not probe …
    let (db, mut gone) = meta_row(&env);
    gone["probed_at"] = "2020-01-01T00:00:00Z".into();
    db.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'batch_gone'",
        [gone.to_string()],
    )
    .expect("update");
    drop(db);
    renew_and_sync(&env, &certbot, "b.example.com").await;
    assert_eq!(calls(&emu, BATCH).len(), 1, "a plain sync re-probed");
    // … but --force does, once: answered gone again, the record is renewed.
    let forced = run(&env, &["sync", "--force"]).await;
    forced.expect_status(0);
    assert_eq!(forced.stderr.matches(ADVICE).count(), 1, "{}", forced.all());
    assert_eq!(
        calls(&emu, BATCH).len(),
        2,
        "--force after a day made one probe"
    );
    let (_, gone) = meta_row(&env);
    let probed = gone["probed_at"].as_str().expect("probed_at");
    assert!(
        !probed.starts_with("2020"),
        "the record was not renewed: {probed}"
    );
    emu.shutdown().await;
}

async fn renew_and_sync(env: &Env, certbot: &Certbot, parent: &str) {
    certbot.renew(parent, &issue(&[parent, &format!("*.{parent}")]));
    run(env, &["sync"]).await.expect_status(0);
}

/// With `api = "per-domain"` the batch call is never sent, even against an emulator that
/// still has it, and nothing is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_domain_by_configuration_records_nothing() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    certbot.add("a.example.com", &issue(&["a.example.com"]));
    let emu = Emulator::start(
        "127.0.0.1:0".parse().expect("addr"),
        EmulatorConfig::with_domains(["a.example.com"]),
    )
    .await
    .expect("emulator starts");
    emulator_credentials(&env, &emu.endpoint(), &["a.example.com"])
        .watch(certbot.live())
        .set("aliyun", "api = \"per-domain\"")
        .write(&env);
    run(&env, &["sync"]).await.expect_status(0);
    assert!(calls(&emu, BATCH).is_empty());
    let state = state_meta(&env);
    assert!(!state.contains("batch_gone"), "{state}");
    emu.shutdown().await;
}

/// Under `run`: the first pass falls back, warns once and records it; a renewal later is
/// pushed per-domain with no further batch call, and no second warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_falls_back_once_and_stays_on_per_domain() {
    use crate::harness::{RunningDaemon, emulator_config, wait_for};
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let first = issue(&["a.example.com", "*.a.example.com"]);
    certbot.add("a.example.com", &first);
    let domains = ["a.example.com", "x.a.example.com", "y.a.example.com"];
    let mut config = EmulatorConfig::with_domains(domains);
    config.batch_gone = true;
    let emu = Emulator::start("127.0.0.1:0".parse().expect("addr"), config)
        .await
        .expect("emulator starts");
    emulator_config(&env, &emu.endpoint(), &domains)
        .watch(certbot.live())
        .write(&env);
    let mut daemon = RunningDaemon::start(&env);
    let serve_all = |issued: &certrotd::testca::Issued| {
        let fp = fingerprint_of(issued.fullchain_pem.as_bytes(), issued.key_pem.as_bytes());
        move |emu: &Emulator| domains.iter().all(|d| emulator_serves(emu, d, fp))
    };
    let ok1 = serve_all(&first);
    wait_for("the first pass", 30, || ok1(&emu), || daemon.log()).await;
    assert_eq!(calls(&emu, BATCH).len(), 1);

    let renewed = issue(&["a.example.com", "*.a.example.com"]);
    certbot.renew("a.example.com", &renewed);
    let ok2 = serve_all(&renewed);
    wait_for("the renewal", 30, || ok2(&emu), || daemon.log()).await;
    assert_eq!(daemon.terminate(20).await, 0, "{}", daemon.log());
    assert_eq!(
        calls(&emu, BATCH).len(),
        1,
        "the daemon tried the batch call again"
    );
    assert_eq!(calls(&emu, PER_DOMAIN).len(), 6);
    assert_eq!(daemon.log().matches(ADVICE).count(), 1, "{}", daemon.log());
    let state = state_meta(&env);
    assert!(state.contains("\"batch_gone\""), "{state}");
    emu.shutdown().await;
}
