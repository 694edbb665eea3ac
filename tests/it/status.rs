//! `certrotd status` for monitoring: exit 1 while a managed domain is not up to date (each
//! with its reason), `--domain` / `--lineage` filters, `--json`, the last pass and the
//! daemon's PID; a stale LAST ERROR cleared once the domain is found up to date.

use std::path::PathBuf;

use crate::harness::{self, Certbot, Env, Output, RunningDaemon, issue, run_with};

struct World {
    env: Env,
    certbot: Certbot,
    emu: certrotd::emulator::Emulator,
}

impl World {
    async fn new(known: &[&str], managed: &[&str]) -> World {
        let env = Env::new();
        let emu = harness::start_emulator(known).await;
        let certbot = Certbot::new(env.join("letsencrypt"));
        harness::emulator_config(&env, &emu.endpoint(), managed)
            .watch(certbot.live())
            .write(&env);
        World { env, certbot, emu }
    }

    async fn run(&self, args: &[&str]) -> Output {
        let cmd = self.env.command(args);
        tokio::task::spawn_blocking(move || run_with(cmd))
            .await
            .expect("runner thread")
    }

    fn state_file(&self) -> PathBuf {
        self.env.join("state").join(certrotd::state::STATE_FILE)
    }

    async fn json(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let out = self.run(args).await;
        let json =
            serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.all()));
        (out.status, json)
    }
}

fn condition<'j>(json: &'j serde_json::Value, domain: &str) -> &'j str {
    json["domains"]
        .as_array()
        .expect("domains")
        .iter()
        .find(|r| r["domain"] == domain)
        .unwrap_or_else(|| panic!("no {domain} in {json}"))["condition"]
        .as_str()
        .expect("a condition")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_exit_codes_filters_and_reasons() {
    let managed = [
        "a.example.com",
        "b.example.com",
        "gone.example.com",
        "bare.example.org",
    ];
    let w = World::new(&["a.example.com", "b.example.com"], &managed).await;
    w.certbot
        .add("ab", &issue(&["a.example.com", "b.example.com"]));
    w.certbot.add("gone", &issue(&["gone.example.com"]));
    w.run(&["status"]).await.expect_status(1);
    w.run(&["sync"]).await.expect_status(1);

    let out = w.run(&["status"]).await;
    out.expect_status(1);
    assert!(out.stdout.starts_with("last pass: "), "{}", out.all());
    assert!(out.stdout.contains(" by sync "), "{}", out.all());
    assert!(out.stdout.contains("daemon: not running"), "{}", out.all());
    assert!(
        out.row("a.example.com").contains("up to date"),
        "{}",
        out.all()
    );
    assert!(
        out.row("gone.example.com").contains("FAILED"),
        "{}",
        out.all()
    );
    let bare = out.row("bare.example.org");
    assert!(
        bare.contains("UNCOVERED") && bare.contains("no"),
        "says why: {bare}"
    );

    w.run(&["status", "--domain", "a.example.com"])
        .await
        .expect_status(0);
    w.run(&[
        "status",
        "--domain",
        "A.example.com",
        "--domain",
        "b.example.com",
    ])
    .await
    .expect_status(0);
    let out = w.run(&["status", "--lineage", "ab"]).await;
    out.expect_status(0);
    assert!(!out.stdout.contains("gone.example.com"), "{}", out.all());
    w.run(&["status", "--lineage", "gone"])
        .await
        .expect_status(1);
    w.run(&["status", "--domain", "nothing.example.com"])
        .await
        .expect_status(1)
        .expect_contains("no domain matches");

    let (code, sync) = w.json(&["sync", "--json"]).await;
    assert_eq!(
        (code, &sync["exit_code"]),
        (1, &serde_json::json!(1)),
        "{sync}"
    );
    assert_eq!(sync["dry_run"], false);
    assert_eq!(sync["failed"][0][0], "gone.example.com", "{sync}");
    assert_eq!(sync["up_to_date"], 2, "{sync}");
    let (code, dry) = w.json(&["sync", "--dry-run", "--json"]).await;
    assert_eq!(
        (code, &dry["dry_run"]),
        (1, &serde_json::json!(true)),
        "{dry}"
    );
    assert_eq!(dry["uncovered"][0][0], "bare.example.org", "{dry}");

    let (code, json) = w.json(&["status", "--json"]).await;
    assert_eq!(code, 1);
    assert_eq!(json["last_pass"]["by"], "sync", "{json}");
    assert!(json["daemon_pid"].is_null());
    assert_eq!(condition(&json, "a.example.com"), "up-to-date");
    assert_eq!(condition(&json, "gone.example.com"), "failed");
    assert_eq!(condition(&json, "bare.example.org"), "uncovered");
    let lineage = w.certbot.lineage("ab").display().to_string();
    let a = &json["domains"].as_array().expect("rows")[0];
    assert_eq!(a["lineage"], lineage.as_str(), "{a}");
    w.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_last_error_is_cleared_once_the_domain_is_found_up_to_date() {
    let w = World::new(&["a.example.com"], &["a.example.com"]).await;
    w.certbot.add("a", &issue(&["a.example.com"]));
    w.run(&["sync"]).await.expect_status(0);
    w.run(&["status"]).await.expect_status(0);

    // An error left on record by an earlier run (say, credentials since fixed): set on the
    // domain's latest record in the store, as an earlier release's failed push left it.
    let db = rusqlite::Connection::open(w.state_file()).expect("open the store");
    let changed = db
        .execute(
            "UPDATE records SET error_kind = 'credentials', \
             error_message = 'InvalidAccessKeyId.NotFound', error_at = '2026-11-30T10:00:00Z' \
             WHERE seq = (SELECT max(seq) FROM records WHERE domain = 'a.example.com')",
            [],
        )
        .expect("update the store");
    assert_eq!(changed, 1);
    drop(db);
    let out = w.run(&["status"]).await;
    out.expect_status(1);
    assert!(
        out.row("a.example.com").contains("InvalidAccessKeyId"),
        "{}",
        out.all()
    );

    let writes_before = w.emu.log().iter().filter(|e| e.is_write()).count();
    w.run(&["sync"]).await.expect_status(0);
    let writes_after = w.emu.log().iter().filter(|e| e.is_write()).count();
    assert_eq!(
        writes_before, writes_after,
        "found up to date: nothing pushed"
    );
    let out = w.run(&["status"]).await;
    out.expect_status(0);
    assert!(
        !out.row("a.example.com").contains("InvalidAccessKeyId"),
        "{}",
        out.all()
    );
    w.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_running_daemon_and_its_last_pass() {
    let w = World::new(&["a.example.com"], &["a.example.com"]).await;
    w.certbot.add("a", &issue(&["a.example.com"]));
    let daemon = RunningDaemon::start(&w.env);
    harness::wait_for(
        "the daemon's first pass on record",
        15,
        || {
            let out = w.env.run(&["status", "--json"]);
            serde_json::from_str::<serde_json::Value>(&out.stdout)
                .is_ok_and(|json| !json["last_pass"].is_null())
        },
        || daemon.log(),
    )
    .await;
    let (code, json) = w.json(&["status", "--json"]).await;
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["daemon_pid"], daemon.pid(), "{json}");
    assert_eq!(json["last_pass"]["by"], "run");
    let out = w.run(&["status"]).await;
    out.expect_contains(&format!("daemon: running (PID {})", daemon.pid()));
    w.emu.shutdown().await;
}
