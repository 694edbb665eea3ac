//! DCDN as a second product: CDN and DCDN domains in one configuration, each product reached
//! only through its own endpoint (an emulator each: `--product dcdn` for DCDN) and its own
//! actions; `status` and `sync --dry-run` name each domain's product; a renewal under `run`
//! reaches both.

use std::collections::BTreeSet;

use certrotd::emulator::{Emulator, EmulatorConfig, Product};

use crate::harness::{
    Certbot, Env, RunningDaemon, emulator_config, emulator_serves, fingerprint_of, issue, run_with,
    wait_for,
};

const CDN_DOMAINS: [&str; 3] = ["a.example.com", "b.example.com", "c.example.com"];
const DCDN_DOMAINS: [&str; 2] = ["edge1.example.com", "edge2.example.com"];

async fn emulators() -> (Emulator, Emulator) {
    let addr = || "127.0.0.1:0".parse().expect("addr");
    let cdn = Emulator::start(addr(), EmulatorConfig::with_domains(CDN_DOMAINS))
        .await
        .expect("cdn emulator");
    let mut dcdn = EmulatorConfig::with_domains(DCDN_DOMAINS);
    dcdn.product = Product::Dcdn;
    let dcdn = Emulator::start(addr(), dcdn).await.expect("dcdn emulator");
    (cdn, dcdn)
}

fn configure(env: &Env, certbot: &Certbot, cdn: &Emulator, dcdn: &Emulator) {
    let dcdn_domains: Vec<String> = DCDN_DOMAINS.iter().map(|d| format!("{d:?}")).collect();
    emulator_config(env, &cdn.endpoint(), &CDN_DOMAINS)
        .watch(certbot.live())
        .set("dcdn", &format!("endpoint = {:?}", dcdn.endpoint()))
        .set("dcdn", &format!("domains = [{}]", dcdn_domains.join(", ")))
        .write(env);
}

fn actions(emu: &Emulator) -> BTreeSet<String> {
    emu.log().into_iter().map(|e| e.action).collect()
}

fn touched(emu: &Emulator) -> BTreeSet<String> {
    emu.log().into_iter().flat_map(|e| e.domains).collect()
}

async fn run(env: &Env, args: &[&str]) -> crate::harness::Output {
    let cmd = env.command(args);
    tokio::task::spawn_blocking(move || run_with(cmd))
        .await
        .expect("runner thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdn_and_dcdn_domains_are_each_served_through_their_own_api() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let issued = issue(&["example.com", "*.example.com"]);
    certbot.add("example.com", &issued);
    let fp = fingerprint_of(issued.fullchain_pem.as_bytes(), issued.key_pem.as_bytes());
    let (cdn, dcdn) = emulators().await;
    configure(&env, &certbot, &cdn, &dcdn);

    let dry = run(&env, &["sync", "--dry-run"]).await;
    dry.expect_status(0)
        .expect_contains("product cdn: 3 domain(s) via BatchSetCdnDomainServerCertificate")
        .expect_contains("product dcdn: 2 domain(s) via SetDcdnDomainSSLCertificate: edge1.example.com, edge2.example.com");
    assert!(
        cdn.log().is_empty() && dcdn.log().is_empty(),
        "a dry run sent a call"
    );

    // One batch call for the CDN's three, one call per DCDN domain.
    run(&env, &["sync"])
        .await
        .expect_status(0)
        .expect_contains("5 domain(s) to update in 3 call(s)")
        .expect_contains("5 domain(s) deployed (5 confirmed by read-back) in 3 write call(s)");
    for d in CDN_DOMAINS {
        assert!(emulator_serves(&cdn, d, fp), "{d}");
    }
    for d in DCDN_DOMAINS {
        assert!(emulator_serves(&dcdn, d, fp), "{d}");
    }
    let cdn_actions: BTreeSet<String> = [
        "BatchSetCdnDomainServerCertificate",
        "DescribeDomainCertificateInfo",
    ]
    .map(String::from)
    .into();
    assert_eq!(actions(&cdn), cdn_actions);
    let dcdn_actions: BTreeSet<String> = [
        "SetDcdnDomainSSLCertificate",
        "DescribeDcdnDomainCertificateInfo",
    ]
    .map(String::from)
    .into();
    assert_eq!(actions(&dcdn), dcdn_actions);
    assert_eq!(touched(&cdn), CDN_DOMAINS.map(String::from).into());
    assert_eq!(touched(&dcdn), DCDN_DOMAINS.map(String::from).into());
    // Every DCDN write is one domain; every request of each emulator was accepted.
    assert!(
        dcdn.log()
            .iter()
            .all(|e| e.succeeded() && e.domains.len() == 1)
    );
    assert!(cdn.log().iter().all(|e| e.succeeded()));

    let status = run(&env, &["status"]).await;
    status.expect_status(0).expect_contains("PRODUCT");
    assert!(
        status.row("edge1.example.com").contains(" dcdn "),
        "{}",
        status.all()
    );
    assert!(
        status.row("a.example.com").contains(" cdn "),
        "{}",
        status.all()
    );
    let json = run(&env, &["status", "--json"]).await;
    let report: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    let rows = report["domains"].as_array().expect("domains");
    let product = |d: &str| {
        rows.iter()
            .find(|r| r["domain"] == d)
            .map(|r| r["product"].clone())
    };
    assert_eq!(product("edge2.example.com"), Some("dcdn".into()));
    assert_eq!(product("b.example.com"), Some("cdn".into()));
    assert!(
        rows.iter().all(|r| r.get("managed").is_some()),
        "old fields kept"
    );

    let check = run(&env, &["check"]).await;
    check.expect_status(0);
    assert!(
        check.row("edge1.example.com").contains("dcdn"),
        "{}",
        check.all()
    );

    cdn.shutdown().await;
    dcdn.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_under_run_reaches_both_products() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let first = issue(&["example.com", "*.example.com"]);
    certbot.add("example.com", &first);
    let (cdn, dcdn) = emulators().await;
    configure(&env, &certbot, &cdn, &dcdn);
    let mut daemon = RunningDaemon::start(&env);
    let fp1 = fingerprint_of(first.fullchain_pem.as_bytes(), first.key_pem.as_bytes());
    let all_serve = |fp| {
        CDN_DOMAINS.iter().all(|d| emulator_serves(&cdn, d, fp))
            && DCDN_DOMAINS.iter().all(|d| emulator_serves(&dcdn, d, fp))
    };
    wait_for("the first pass", 30, || all_serve(fp1), || daemon.log()).await;

    let renewed = issue(&["example.com", "*.example.com"]);
    certbot.renew("example.com", &renewed);
    let fp2 = fingerprint_of(renewed.fullchain_pem.as_bytes(), renewed.key_pem.as_bytes());
    wait_for(
        "the renewal on both products",
        30,
        || all_serve(fp2),
        || daemon.log(),
    )
    .await;
    assert_eq!(daemon.terminate(20).await, 0, "{}", daemon.log());
    assert!(
        dcdn.log()
            .iter()
            .filter(|e| e.is_write())
            .all(|e| e.action == "SetDcdnDomainSSLCertificate")
    );
    cdn.shutdown().await;
    dcdn.shutdown().await;
}

/// Under `run`, the metrics' per-domain series and the `deployed` notification cover the
/// DCDN domains too, each series labelled with its domain's product.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_notifications_cover_both_products() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let lineage = certbot.add("example.com", &issue(&["example.com", "*.example.com"]));
    let (cdn, dcdn) = emulators().await;
    let dcdn_domains: Vec<String> = DCDN_DOMAINS.iter().map(|d| format!("{d:?}")).collect();
    let out = env.join("events.txt");
    emulator_config(&env, &cdn.endpoint(), &CDN_DOMAINS)
        .watch(certbot.live())
        .set("dcdn", &format!("endpoint = {:?}", dcdn.endpoint()))
        .set("dcdn", &format!("domains = [{}]", dcdn_domains.join(", ")))
        .set("metrics", "listen = \"127.0.0.1:0\"")
        .set("notify", &crate::notify::recorder(&env, &out))
        .write(&env);
    let mut daemon = RunningDaemon::start(&env);
    let labelled = |d: &str, product: &str| {
        format!("certrotd_domain_up_to_date{{domain=\"{d}\",product=\"{product}\"}}")
    };
    let expected: Vec<String> = CDN_DOMAINS
        .iter()
        .map(|d| labelled(d, "cdn"))
        .chain(DCDN_DOMAINS.iter().map(|d| labelled(d, "dcdn")))
        .collect();
    wait_for(
        "every domain up to date in the metrics, with its product",
        30,
        || {
            let Some(addr) = crate::metrics::metrics_addr(&daemon) else {
                return false;
            };
            let s = crate::metrics::samples(&crate::metrics::get(&addr, "/metrics", "*/*").1);
            expected.iter().all(|k| s.get(k) == Some(&1.0))
        },
        || daemon.log(),
    )
    .await;
    let deployed = || -> BTreeSet<String> {
        crate::notify::events(&out)
            .into_iter()
            .filter(|e| e[0] == "deployed")
            .flat_map(|e| e[1].split(',').map(str::to_string).collect::<Vec<_>>())
            .collect()
    };
    let all: BTreeSet<String> = CDN_DOMAINS
        .iter()
        .chain(DCDN_DOMAINS.iter())
        .map(|d| d.to_string())
        .collect();
    wait_for(
        "a deployed event naming every domain",
        20,
        || deployed() == all,
        || format!("{:?}\n{}", crate::notify::events(&out), daemon.log()),
    )
    .await;
    let events = crate::notify::events(&out);
    assert!(
        events
            .iter()
            .filter(|e| e[0] == "deployed")
            .all(|e| e[2] == lineage.display().to_string()),
        "{events:?}"
    );
    assert_eq!(daemon.terminate(20).await, 0, "{}", daemon.log());
    cdn.shutdown().await;
    dcdn.shutdown().await;
}

/// A domain under both products is a configuration error naming where.
#[test]
fn a_domain_under_both_products_is_a_config_error() {
    let env = Env::new();
    let domains_file = env.join("dcdn-domains.txt");
    std::fs::write(&domains_file, "# edge\nedge.example.com\n  a.example.com\n").expect("write");
    crate::harness::emulator_credentials(&env, "https://cdn.aliyuncs.com", &["a.example.com"])
        .set(
            "dcdn",
            &format!("domains_file = {:?}", domains_file.display().to_string()),
        )
        .write(&env);
    let out = env.run(&["check"]);
    out.expect_status(78)
        .expect_contains(&format!("{}:3:3", domains_file.display()));
    out.expect_contains("a.example.com is listed under both [cdn] and [dcdn]");
}

/// The drift audit covers DCDN domains too: a DCDN domain changed in the console is read
/// back through DCDN's own API at the next rescan and pushed again, alone, with DCDN's call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dcdn_domain_changed_in_the_console_is_found_by_the_audit_and_repaired() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let issued = issue(&["example.com", "*.example.com"]);
    certbot.add("example.com", &issued);
    let (cdn, dcdn) = emulators().await;
    let dcdn_domains: Vec<String> = DCDN_DOMAINS.iter().map(|d| format!("{d:?}")).collect();
    crate::harness::emulator_credentials(&env, &cdn.endpoint(), &CDN_DOMAINS)
        .watch(certbot.live())
        .set("watch", "debounce_ms = 200")
        .set("watch", "rescan_secs = 2")
        .set("dcdn", &format!("endpoint = {:?}", dcdn.endpoint()))
        .set("dcdn", &format!("domains = [{}]", dcdn_domains.join(", ")))
        .write(&env);
    let mut daemon = RunningDaemon::start(&env);
    let fp = fingerprint_of(issued.fullchain_pem.as_bytes(), issued.key_pem.as_bytes());
    let all_serve = || {
        CDN_DOMAINS.iter().all(|d| emulator_serves(&cdn, d, fp))
            && DCDN_DOMAINS.iter().all(|d| emulator_serves(&dcdn, d, fp))
    };
    wait_for("the first pass", 30, all_serve, || daemon.log()).await;
    let dcdn_reads = |emu: &Emulator| emu.log().iter().filter(|e| !e.is_write()).count();
    let settled = dcdn_reads(&dcdn);
    wait_for(
        "an audit read of the DCDN domains",
        20,
        || dcdn_reads(&dcdn) > settled,
        || daemon.log(),
    )
    .await;
    let (cdn_before, dcdn_before) = (writes(&cdn), writes(&dcdn));

    let other = issue(&[DCDN_DOMAINS[0]]);
    let other_cert =
        certrotd::cert::parse(other.fullchain_pem.as_bytes(), other.key_pem.as_bytes())
            .expect("a valid test certificate");
    dcdn.set_served(DCDN_DOMAINS[0], &other_cert, "changed-in-console")
        .await
        .expect("console change");
    wait_for(
        "the DCDN drift repaired",
        30,
        || emulator_serves(&dcdn, DCDN_DOMAINS[0], fp),
        || daemon.log(),
    )
    .await;
    assert_eq!(daemon.terminate(20).await, 0, "{}", daemon.log());
    assert_eq!(writes(&cdn), cdn_before, "no CDN domain pushed again");
    let repairs: Vec<_> = dcdn
        .log()
        .into_iter()
        .filter(|e| e.is_write())
        .skip(dcdn_before)
        .collect();
    assert!(!repairs.is_empty());
    for call in &repairs {
        assert_eq!(call.action, "SetDcdnDomainSSLCertificate");
        assert_eq!(call.domains, vec![DCDN_DOMAINS[0].to_string()], "{call:?}");
    }
    assert!(emulator_serves(&dcdn, DCDN_DOMAINS[1], fp));
    cdn.shutdown().await;
    dcdn.shutdown().await;
}

fn writes(emu: &Emulator) -> usize {
    emu.log().iter().filter(|e| e.is_write()).count()
}
