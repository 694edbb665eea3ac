//! `[aliyun] store = "cas"`: the real binary uploads each certificate once to the SSL
//! Certificates Service and binds domains by reference, against the emulator (which answers
//! the CDN and CAS on one port).

use std::collections::BTreeSet;

use certrotd::cert::Fingerprint;
use certrotd::emulator::{Dump, Emulator, EmulatorConfig, LogEntry};
use certrotd::testca::LeafKey;
use zeroize::Zeroizing;

use crate::harness::{
    Certbot, Config, Emulate, Env, emulator_credentials, fingerprint_of, issue, issue_with,
    run_with, wait_for,
};

const UPLOAD: &str = "UploadUserCertificate";
const DELETE: &str = "DeleteUserCertificate";

async fn run(env: &Env, args: &[&str]) -> crate::harness::Output {
    let cmd = env.command(args);
    tokio::task::spawn_blocking(move || run_with(cmd))
        .await
        .expect("runner thread")
}

fn uploads(log: &[LogEntry]) -> Vec<&LogEntry> {
    log.iter().filter(|e| e.action == UPLOAD).collect()
}

/// No CDN write call carried the certificate or key; every one bound by reference.
fn assert_by_reference(log: &[LogEntry], per_domain: bool) {
    let writes: Vec<&LogEntry> = log.iter().filter(|e| e.is_write()).collect();
    assert!(!writes.is_empty());
    for w in writes {
        assert!(
            !w.has_param("SSLPub") && !w.has_param("SSLPri"),
            "{w:?} carried the material"
        );
        assert!(w.has_param("CertType") && w.has_param("CertName"), "{w:?}");
        assert_eq!(w.has_param("CertId"), per_domain, "{w:?}");
        assert_eq!(w.has_param("CertRegion"), per_domain, "{w:?}");
    }
}

fn cas_config(env: &Env, emu: &str, domains: &[&str], certbot: &Certbot) -> Config {
    emulator_credentials(env, emu, domains)
        .watch(certbot.live())
        .set("aliyun", "store = \"cas\"")
        .set("cas", &format!("endpoint = {emu:?}"))
}

async fn emulator(domains: &[&str], cfg: impl FnOnce(&mut EmulatorConfig)) -> Emulator {
    let mut config = EmulatorConfig::with_domains(domains.iter().copied());
    cfg(&mut config);
    Emulator::start("127.0.0.1:0".parse().expect("addr"), config)
        .await
        .expect("emulator starts")
}

fn own_name(fp: &Fingerprint) -> String {
    format!("certrotd-{}", &fp.hex()[..32])
}

/// Both calls: one upload per certificate, bindings by reference only, every domain serving
/// its certificate; a second sync uploads nothing; after a renewal one new upload and the
/// domains move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_apis_upload_each_certificate_once_and_bind_by_reference() {
    for api in ["batch", "per-domain"] {
        let env = Env::new();
        let certbot = Certbot::new(env.join("letsencrypt"));
        let a = issue(&["a.example.com", "*.a.example.com"]);
        let b = issue(&["b.example.com", "*.b.example.com"]);
        certbot.add("a.example.com", &a);
        certbot.add("b.example.com", &b);
        let domains = [
            "a.example.com",
            "x.a.example.com",
            "y.a.example.com",
            "b.example.com",
            "x.b.example.com",
        ];
        let emu = emulator(&domains, |_| {}).await;
        cas_config(&env, &emu.endpoint(), &domains, &certbot)
            .set("aliyun", &format!("api = {api:?}"))
            .write(&env);

        run(&env, &["sync"]).await.expect_status(0);
        let log = emu.log();
        let up = uploads(&log);
        assert_eq!(up.len(), 2, "{api}: one upload per certificate");
        let fa = fingerprint_of(a.fullchain_pem.as_bytes(), a.key_pem.as_bytes());
        let fb = fingerprint_of(b.fullchain_pem.as_bytes(), b.key_pem.as_bytes());
        let uploaded: BTreeSet<Fingerprint> = up.iter().filter_map(|e| e.fingerprint).collect();
        assert_eq!(uploaded, [fa, fb].into());
        for e in &up {
            assert!(e.succeeded());
            let name = e.cert_name.as_deref().unwrap_or_default();
            assert!(name.starts_with("certrotd-") && name.len() <= 63, "{name}");
            assert!(e.has_param("ClientToken") && e.has_param("Key") && e.has_param("Cert"));
        }
        assert_by_reference(&log, api == "per-domain");
        let served = emu.served();
        for d in domains {
            let want = if d.contains(".a.") || d == "a.example.com" {
                fa
            } else {
                fb
            };
            let s = &served[d];
            assert_eq!(s.fingerprint, want, "{api}: {d}");
            assert!(s.cas_cert_id.is_some(), "{api}: {d} is not bound to CAS");
        }

        run(&env, &["sync"]).await.expect_status(0);
        assert_eq!(
            uploads(&emu.log()).len(),
            2,
            "{api}: a second sync uploaded"
        );

        let renewed = issue_with(
            &["a.example.com", "*.a.example.com"],
            -1,
            120,
            LeafKey::EcdsaP256,
        );
        certbot.renew("a.example.com", &renewed);
        let fr = fingerprint_of(renewed.fullchain_pem.as_bytes(), renewed.key_pem.as_bytes());
        run(&env, &["sync"]).await.expect_status(0);
        let log = emu.log();
        let up = uploads(&log);
        assert_eq!(up.len(), 3, "{api}: one new upload for the renewal");
        assert_eq!(up[2].fingerprint, Some(fr));
        assert_by_reference(&log, api == "per-domain");
        let served = emu.served();
        for d in ["a.example.com", "x.a.example.com", "y.a.example.com"] {
            assert_eq!(served[d].fingerprint, fr, "{api}: {d} did not move");
        }
        assert_eq!(served["b.example.com"].fingerprint, fb);
        // Cleanup is opt-in: nothing was deleted.
        assert!(log.iter().all(|e| e.action != DELETE));
        assert_eq!(emu.cas_certs().len(), 3);
        emu.shutdown().await;
    }
}

/// A certificate a user uploaded (under their own name) is reused: never uploaded again,
/// and never deleted even when superseded with cleanup on and no grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_upload_is_reused_and_never_deleted() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let a = issue(&["www.example.com"]);
    certbot.add("www.example.com", &a);
    let domains = ["www.example.com"];
    let seed = (
        "my-www-cert".to_string(),
        a.fullchain_pem.clone(),
        Zeroizing::new(a.key_pem.clone()),
    );
    let emu = emulator(&domains, |c| c.cas_user_certs = vec![seed]).await;
    let user_id = emu.cas_certs()[0].cert_id;
    cas_config(&env, &emu.endpoint(), &domains, &certbot)
        .set("cas", "delete_superseded = true")
        .set("cas", "delete_after_hours = 0")
        .write(&env);

    run(&env, &["sync"]).await.expect_status(0);
    assert!(
        uploads(&emu.log()).is_empty(),
        "the user's certificate was uploaded again"
    );
    let served = &emu.served()["www.example.com"];
    assert_eq!(served.cas_cert_id, Some(user_id));
    assert_eq!(served.cert_name, "my-www-cert");

    let renewed = issue_with(&["www.example.com"], -1, 120, LeafKey::EcdsaP256);
    certbot.renew("www.example.com", &renewed);
    run(&env, &["sync"]).await.expect_status(0);
    run(&env, &["sync"]).await.expect_status(0);
    assert_eq!(uploads(&emu.log()).len(), 1, "the renewal is uploaded once");
    assert!(
        emu.log().iter().all(|e| e.action != DELETE),
        "a delete was tried"
    );
    assert!(
        emu.cas_certs()
            .iter()
            .any(|c| c.cert_id == user_id && c.by_user),
        "the user's upload was deleted"
    );
    run(&env, &["sync", "--dry-run"])
        .await
        .expect_status(0)
        .expect_contains("dry run");
    emu.shutdown().await;
}

/// Cleanup: a superseded upload of certrotd's is kept during the grace period (a dry run
/// names nothing), then — grace passed — a dry run names it, and a sync deletes it; one
/// still served by a managed domain is kept (read, not only the state), one bound to another
/// domain is refused by CAS and kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superseded_uploads_are_deleted_after_the_grace_period_only_when_unbound() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let names = ["www.example.com", "api.example.com"];
    let first = issue(&names);
    certbot.add("www.example.com", &first);
    let domains = ["www.example.com", "api.example.com"];
    let emu = emulator(&[&domains[..], &["other.example.com"]].concat(), |_| {}).await;
    let config = |hours: u32| {
        cas_config(&env, &emu.endpoint(), &domains, &certbot)
            .set("cas", "delete_superseded = true")
            .set("cas", &format!("delete_after_hours = {hours}"))
            .write(&env)
    };
    config(24);
    run(&env, &["sync"]).await.expect_status(0);
    let f1 = fingerprint_of(first.fullchain_pem.as_bytes(), first.key_pem.as_bytes());
    let id1 = emu.cas_certs()[0].cert_id;

    let second = issue_with(&names, -1, 120, LeafKey::EcdsaP256);
    certbot.renew("www.example.com", &second);
    run(&env, &["sync"]).await.expect_status(0);
    run(&env, &["sync"]).await.expect_status(0);
    assert_eq!(emu.cas_certs().len(), 2, "deleted within the grace period");
    let dry = run(&env, &["sync", "--dry-run"]).await;
    dry.expect_status(0);
    assert!(!dry.all().contains("would delete"), "{}", dry.all());

    config(0);
    run(&env, &["sync", "--dry-run"])
        .await
        .expect_status(0)
        .expect_contains(&format!(
            "would delete from CAS: {} (CertId {id1})",
            own_name(&f1)
        ));
    assert!(
        emu.log().iter().all(|e| e.action != DELETE),
        "a dry run deleted"
    );
    run(&env, &["sync"])
        .await
        .expect_status(0)
        .expect_contains(&format!("deleted from CAS: {}", own_name(&f1)));
    let left: Vec<u64> = emu.cas_certs().iter().map(|c| c.cert_id).collect();
    assert!(!left.contains(&id1), "the superseded upload is still there");
    assert_eq!(left.len(), 1);

    // A third certificate; the second is then superseded, but a managed domain still
    // serves it (changed in the console): kept.
    let id2 = left[0];
    let third = issue_with(&names, -1, 150, LeafKey::EcdsaP256);
    certbot.renew("www.example.com", &third);
    config(24);
    run(&env, &["sync"]).await.expect_status(0);
    emu.bind_cas("api.example.com", id2)
        .await
        .expect("console binding");
    config(0);
    run(&env, &["sync"])
        .await
        .expect_status(0)
        .expect_contains("api.example.com still serves it");
    assert!(emu.cas_certs().iter().any(|c| c.cert_id == id2));

    // Bound to a domain certrotd does not manage: CAS refuses the delete; kept, reported.
    emu.bind_cas(
        "api.example.com",
        emu.cas_certs().last().expect("third").cert_id,
    )
    .await
    .expect("console binding");
    emu.bind_cas("other.example.com", id2)
        .await
        .expect("console binding");
    let out = run(&env, &["sync"]).await;
    out.expect_status(1).expect_contains("CertificateInUse");
    assert!(emu.cas_certs().iter().any(|c| c.cert_id == id2));
    emu.shutdown().await;
}

/// SIGKILL right after the first upload is answered (the binding call is slow): the rerun
/// uploads nothing more and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_killed_after_the_upload_does_not_upload_again() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let a = issue(&["www.example.com"]);
    certbot.add("www.example.com", &a);
    let domains_file = env.join("domains.txt");
    std::fs::write(&domains_file, "www.example.com\n").expect("domains file");
    let dump = env.join("dump.json");
    let emulate = Emulate::start(
        &domains_file,
        &dump,
        certrotd::emulator::DEFAULT_ACCESS_KEY_SECRET,
        &["--write-latency-ms", "3000"],
    );
    cas_config(&env, &emulate.endpoint, &["www.example.com"], &certbot).write(&env);
    let mut child = env
        .command(&["sync"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn sync");
    let uploaded = || {
        Dump::read(&dump).is_ok_and(|d| d.log.iter().any(|e| e.action == UPLOAD && e.succeeded()))
    };
    wait_for("the upload", 20, uploaded, || {
        "no upload in the dump".to_string()
    })
    .await;
    child.kill().expect("SIGKILL the sync");
    let _ = child.wait();

    run(&env, &["sync"]).await.expect_status(0);
    let d = Dump::read(&dump).expect("dump");
    assert_eq!(uploads(&d.log).len(), 1, "uploaded again after the kill");
    let fp = fingerprint_of(a.fullchain_pem.as_bytes(), a.key_pem.as_bytes());
    assert_eq!(d.served["www.example.com"].fingerprint, fp);
    assert_eq!(d.cas.len(), 1);
    emulate.stop();
}

/// Certrotd's name taken by other content in CAS (NameRepeat): a clear error naming the
/// bug, no retry under another name, nothing bound, exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_taken_by_other_content_is_reported_not_worked_around() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let a = issue(&["www.example.com"]);
    certbot.add("www.example.com", &a);
    let fp = fingerprint_of(a.fullchain_pem.as_bytes(), a.key_pem.as_bytes());
    let other = issue(&["elsewhere.example.net"]);
    let seed = (
        own_name(&fp),
        other.fullchain_pem.clone(),
        Zeroizing::new(other.key_pem.clone()),
    );
    let emu = emulator(&["www.example.com"], |c| c.cas_user_certs = vec![seed]).await;
    cas_config(&env, &emu.endpoint(), &["www.example.com"], &certbot).write(&env);
    let out = run(&env, &["sync"]).await;
    out.expect_status(1).expect_contains("NameRepeat");
    let log = emu.log();
    let up = uploads(&log);
    assert_eq!(up.len(), 1, "retried or renamed: {up:?}");
    assert!(
        log.iter().all(|e| !e.is_write()),
        "bound without a CAS certificate"
    );
    assert!(emu.served().is_empty());
    emu.shutdown().await;
}

/// At debug level, no line of the output and nothing in the state folder holds the key,
/// with store = "cas" (the key travels in the upload only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_is_never_logged_or_stored_with_cas() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let a = issue(&["www.example.com"]);
    certbot.add("www.example.com", &a);
    let emu = emulator(&["www.example.com"], |_| {}).await;
    cas_config(&env, &emu.endpoint(), &["www.example.com"], &certbot).write(&env);
    let mut cmd = env.command(&["sync"]);
    cmd.env("RUST_LOG", "debug");
    let out = tokio::task::spawn_blocking(move || run_with(cmd))
        .await
        .expect("runner thread");
    out.expect_status(0);
    let key_lines: Vec<&str> = a
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .collect();
    assert!(!key_lines.is_empty());
    let mut stored = String::new();
    for entry in std::fs::read_dir(env.join("state")).expect("state folder") {
        let path = entry.expect("entry").path();
        stored.push_str(&String::from_utf8_lossy(
            &std::fs::read(&path).unwrap_or_default(),
        ));
    }
    assert!(
        stored.contains("certrotd-"),
        "the CAS mapping is not in the state"
    );
    for line in key_lines {
        assert!(!out.all().contains(line), "the key is in the output");
        assert!(!stored.contains(line), "the key is in the state folder");
    }
    emu.shutdown().await;
}

/// CAS unreachable: the certificate's domains fail, no write call falls back to carrying
/// the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cas_fails_the_domains_without_sending_the_key() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    certbot.add("www.example.com", &issue(&["www.example.com"]));
    let emu = emulator(&["www.example.com"], |_| {}).await;
    emulator_credentials(&env, &emu.endpoint(), &["www.example.com"])
        .watch(certbot.live())
        .set("aliyun", "store = \"cas\"")
        .set("aliyun", "max_attempts = 1")
        .set("cas", "endpoint = \"http://127.0.0.1:1\"")
        .write(&env);
    run(&env, &["sync"])
        .await
        .expect_status(1)
        .expect_contains("127.0.0.1:1");
    assert!(emu.log().iter().all(|e| !e.is_write()));
    emu.shutdown().await;
}

/// Bad `[aliyun] store` / `[cas]` values: exit 78 naming each key.
#[test]
fn bad_cas_settings_are_configuration_errors() {
    let env = Env::new();
    Config::new()
        .domains(&["www.example.com"])
        .set("aliyun", "store = \"vault\"")
        .set("cas", "region = \"us-west-1\"")
        .set("cas", "endpoint = \"http://cas.example.com\"")
        .set("cas", "delete_after_hours = -1")
        .set("cas", "delete_superseded = \"yes\"")
        .write(&env);
    let out = env.run(&["check"]);
    out.expect_status(78)
        .expect_contains("aliyun.store")
        .expect_contains("cas.region")
        .expect_contains("cas.endpoint")
        .expect_contains("cas.delete_after_hours")
        .expect_contains("cas.delete_superseded");
    Config::new()
        .domains(&["www.example.com"])
        .set("cas", "colour = 1")
        .write(&env);
    env.run(&["check"])
        .expect_status(78)
        .expect_contains("cas.colour");
}

/// `certrotd demo --store cas` shows an upload, a reuse and a cleanup.
#[test]
fn demo_with_cas_uploads_reuses_and_cleans_up() {
    let env = Env::new();
    let out = env.run(&["demo", "--store", "cas"]);
    out.expect_status(0)
        .expect_contains("as a user's upload \"shop-uploaded-by-hand\"")
        .expect_contains("deleted from CAS: certrotd-")
        // The demo's emulator has the batch call retired: one batch call (answered gone),
        // six per-domain calls, then five for the renewal; none carried the key.
        .expect_contains(
            "CAS: 2 upload(s), 1 delete(s); no CDN write call carried a key (12 bound by reference)",
        )
        .expect_contains("shop-uploaded-by-hand (user's upload)");
    env.run(&["demo", "--store", "vault"]).expect_status(2);
}

/// The daemon binds through CAS too and, after a clean pass, deletes the superseded upload
/// (no grace); the renewal is uploaded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_uploads_once_and_cleans_up_after_a_renewal() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let first = issue(&["www.example.com"]);
    certbot.add("www.example.com", &first);
    let emu = emulator(&["www.example.com"], |_| {}).await;
    crate::harness::emulator_config(&env, &emu.endpoint(), &["www.example.com"])
        .watch(certbot.live())
        .set("aliyun", "store = \"cas\"")
        .set("cas", &format!("endpoint = {:?}", emu.endpoint()))
        .set("cas", "delete_superseded = true")
        .set("cas", "delete_after_hours = 0")
        .write(&env);
    let mut daemon = crate::harness::RunningDaemon::start(&env);
    let f1 = fingerprint_of(first.fullchain_pem.as_bytes(), first.key_pem.as_bytes());
    let serves = |fp| {
        let emu = &emu;
        move || {
            emu.served()
                .get("www.example.com")
                .is_some_and(|s| s.fingerprint == fp && s.cas_cert_id.is_some())
        }
    };
    wait_for("the first deployment", 20, serves(f1), || daemon.log()).await;
    let renewed = issue_with(&["www.example.com"], -1, 120, LeafKey::EcdsaP256);
    certbot.renew("www.example.com", &renewed);
    let f2 = fingerprint_of(renewed.fullchain_pem.as_bytes(), renewed.key_pem.as_bytes());
    wait_for("the renewal", 20, serves(f2), || daemon.log()).await;
    let deleted = || {
        emu.log()
            .iter()
            .any(|e| e.action == DELETE && e.succeeded())
    };
    wait_for("the cleanup", 20, deleted, || daemon.log()).await;
    let left = emu.cas_certs();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].fingerprint, f2);
    assert_eq!(uploads(&emu.log()).len(), 2, "one upload per certificate");
    assert_by_reference(&emu.log(), false);
    assert_eq!(daemon.terminate(10).await, 0);
    emu.shutdown().await;
}

/// A binding that fails (here: the wrong `[cas] region` for the account) leaves the upload
/// recorded; once the region is fixed, the next sync reuses it instead of uploading again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_binding_leaves_the_upload_for_reuse() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    certbot.add("www.example.com", &issue(&["www.example.com"]));
    let emu = emulator(&["www.example.com"], |c| {
        c.cas_region = "ap-southeast-1".to_string();
    })
    .await;
    let config = |region: &str| {
        cas_config(&env, &emu.endpoint(), &["www.example.com"], &certbot)
            .set("aliyun", "api = \"per-domain\"")
            .set("cas", &format!("region = {region:?}"))
            .write(&env)
    };
    config("cn-hangzhou");
    run(&env, &["sync"])
        .await
        .expect_status(1)
        .expect_contains("InvalidParameter.CertRegion");
    assert_eq!(uploads(&emu.log()).len(), 1);
    let state = std::fs::read_dir(env.join("state"))
        .expect("state folder")
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect::<String>();
    assert!(state.contains("certrotd-"), "the upload is not recorded");
    config("ap-southeast-1");
    run(&env, &["sync"]).await.expect_status(0);
    assert_eq!(uploads(&emu.log()).len(), 1, "uploaded again");
    assert!(emu.served()["www.example.com"].cas_cert_id.is_some());
    emu.shutdown().await;
}

/// The mapping on record is tried first: a forced re-deploy confirms it with one
/// `GetUserCertificateDetail` (no list, no upload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorded_mapping_is_confirmed_before_any_lookup() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    certbot.add("www.example.com", &issue(&["www.example.com"]));
    let emu = emulator(&["www.example.com"], |_| {}).await;
    cas_config(&env, &emu.endpoint(), &["www.example.com"], &certbot).write(&env);
    run(&env, &["sync"]).await.expect_status(0);
    let count = |action: &str| emu.log().iter().filter(|e| e.action == action).count();
    let lists = count("ListUserCertificateOrder");
    assert_eq!((lists, count(UPLOAD)), (1, 1));
    run(&env, &["sync", "--force"]).await.expect_status(0);
    assert_eq!(count("GetUserCertificateDetail"), 1);
    assert_eq!((count("ListUserCertificateOrder"), count(UPLOAD)), (1, 1));
    emu.shutdown().await;
}
