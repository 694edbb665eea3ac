//! `certrotd check --online`: one read-only look at the account through the emulator — an
//! unknown domain, an offline one and wrong credentials, each named, with its exit code.

use certrotd::emulator::{Emulator, EmulatorConfig};

use crate::harness::{Certbot, Env, emulator_credentials, issue, run_with, write_mode};

async fn run(env: &Env, args: &[&str]) -> crate::harness::Output {
    let cmd = env.command(args);
    tokio::task::spawn_blocking(move || run_with(cmd))
        .await
        .expect("runner thread")
}

async fn emulator() -> Emulator {
    let mut config = EmulatorConfig::with_domains([
        "www.example.com",
        "down.example.com",
        "spare.example.com",
        "other.test",
    ]);
    config.offline = vec!["down.example.com".to_string()];
    Emulator::start("127.0.0.1:0".parse().expect("addr"), config)
        .await
        .expect("emulator starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_check_names_unknown_and_offline_domains_and_hints() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    certbot.add("example.com", &issue(&["example.com", "*.example.com"]));
    let emu = emulator().await;
    let managed = ["www.example.com", "down.example.com", "gone.example.com"];
    emulator_credentials(&env, &emu.endpoint(), &managed)
        .watch(certbot.live())
        .write(&env);

    let out = run(&env, &["check", "--online"]).await;
    out.expect_status(1)
        .expect_contains("the account has 4 domain(s); the credentials work")
        .expect_contains("MISSING gone.example.com (cdn)")
        .expect_contains("OFFLINE down.example.com (cdn): status offline")
        .expect_contains("ok www.example.com (cdn): online, HTTPS off; certrotd will turn HTTPS on")
        .expect_contains("hint: spare.example.com (cdn) is covered by");
    assert!(!out.all().contains("hint: other.test"), "{}", out.all());
    // Reads only.
    assert!(emu.log().iter().all(|e| e.action == "DescribeUserDomains"));
    assert!(!emu.log().is_empty());
    // Without --online the same configuration is fine (no network).
    let before = emu.log().len();
    run(&env, &["check"]).await.expect_status(0);
    assert_eq!(
        emu.log().len(),
        before,
        "check without --online called the API"
    );

    // Without the unknown domain: the offline one is named, but is no reason to fail.
    emulator_credentials(&env, &emu.endpoint(), &managed[..2])
        .watch(certbot.live())
        .write(&env);
    run(&env, &["check", "--online"])
        .await
        .expect_status(0)
        .expect_contains("OFFLINE down.example.com");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_check_reports_a_wrong_access_key() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    certbot.add("example.com", &issue(&["example.com", "*.example.com"]));
    let emu = emulator().await;
    write_mode(&env.join("access-key-secret"), "not-the-secret", 0o600);
    emulator_credentials(&env, &emu.endpoint(), &["www.example.com"])
        .watch(certbot.live())
        .write(&env);
    let out = run(&env, &["check", "--online"]).await;
    out.expect_status(1)
        .expect_contains("PROBLEM cdn: the credentials were refused")
        .expect_contains("SignatureDoesNotMatch");
    assert!(!out.all().contains("not-the-secret"), "{}", out.all());
    assert_eq!(emu.log().len(), 1, "one call, then stop");
    emu.shutdown().await;
}

/// DCDN domains are looked up in the DCDN account through `DescribeDcdnUserDomains`, and only
/// there; a CDN domain is not found in DCDN's list nor the other way round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_check_looks_up_each_product_in_its_own_api() {
    use certrotd::emulator::Product;
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    certbot.add("example.com", &issue(&["example.com", "*.example.com"]));
    let cdn = emulator().await;
    let mut dcdn = EmulatorConfig::with_domains(["edge.example.com", "www.example.com"]);
    dcdn.product = Product::Dcdn;
    let dcdn = Emulator::start("127.0.0.1:0".parse().expect("addr"), dcdn)
        .await
        .expect("dcdn emulator");
    emulator_credentials(&env, &cdn.endpoint(), &["spare.example.com"])
        .watch(certbot.live())
        .set("dcdn", &format!("endpoint = {:?}", dcdn.endpoint()))
        .set(
            "dcdn",
            "domains = [\"edge.example.com\", \"down.example.com\"]",
        )
        .write(&env);
    let out = run(&env, &["check", "--online"]).await;
    out.expect_status(1)
        .expect_contains("dcdn: the account has 2 domain(s)")
        .expect_contains("ok edge.example.com (dcdn): online, HTTPS off")
        // down.example.com is a CDN domain of the account, not a DCDN one.
        .expect_contains("MISSING down.example.com (dcdn)")
        .expect_contains("ok spare.example.com (cdn)")
        .expect_contains("hint: www.example.com (dcdn) is covered by");
    assert!(cdn.log().iter().all(|e| e.action == "DescribeUserDomains"));
    assert!(
        dcdn.log()
            .iter()
            .all(|e| e.action == "DescribeDcdnUserDomains")
    );
    assert!(!dcdn.log().is_empty());
    cdn.shutdown().await;
    dcdn.shutdown().await;
}

/// `--online` is text only: asked together with `--json` it is refused before anything is
/// read or sent (a usage error, exit 2), naming both flags.
#[test]
fn online_and_json_together_are_a_usage_error() {
    let env = Env::new();
    let out = env.run(&["check", "--json", "--online"]);
    out.expect_status(2);
    assert!(
        out.stderr.contains("--online") && out.stderr.contains("--json"),
        "{}",
        out.all()
    );
    assert!(out.stdout.is_empty(), "{}", out.all());
}
