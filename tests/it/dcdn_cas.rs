//! DCDN with `[aliyun] store = "cas"`: CDN and DCDN domains bind by reference to one CAS
//! (the account has one), each certificate uploaded once for both products; the cleanup
//! reads back each product's domains through that product and keeps what a DCDN domain is
//! bound to. The DCDN emulator shares the CDN emulator's CAS (`Emulator::start_sharing_cas`),
//! as both products of one account do.

use std::collections::{BTreeMap, BTreeSet};

use certrotd::cert::Fingerprint;
use certrotd::emulator::{Emulator, EmulatorConfig, LogEntry, Product};
use certrotd::testca::LeafKey;

use crate::harness::{
    Certbot, Env, emulator_credentials, fingerprint_of, issue, issue_with, run_with,
};

const CDN_DOMAINS: [&str; 2] = ["a.example.com", "b.example.com"];
const DCDN_DOMAINS: [&str; 2] = ["edge.example.com", "shop.example.net"];
/// Known to the DCDN emulator, not managed by certrotd.
const UNMANAGED: &str = "other.example.com";

async fn run(env: &Env, args: &[&str]) -> crate::harness::Output {
    let cmd = env.command(args);
    tokio::task::spawn_blocking(move || run_with(cmd))
        .await
        .expect("runner thread")
}

async fn emulators() -> (Emulator, Emulator) {
    let addr = || "127.0.0.1:0".parse().expect("addr");
    let cdn = Emulator::start(addr(), EmulatorConfig::with_domains(CDN_DOMAINS))
        .await
        .expect("cdn emulator");
    let mut dcdn = EmulatorConfig::with_domains(DCDN_DOMAINS.into_iter().chain([UNMANAGED]));
    dcdn.product = Product::Dcdn;
    let dcdn = Emulator::start_sharing_cas(addr(), dcdn, &cdn)
        .await
        .expect("dcdn emulator");
    (cdn, dcdn)
}

fn configure(env: &Env, certbot: &Certbot, cdn: &Emulator, dcdn: &Emulator, cleanup: bool) {
    let dcdn_domains: Vec<String> = DCDN_DOMAINS.iter().map(|d| format!("{d:?}")).collect();
    emulator_credentials(env, &cdn.endpoint(), &CDN_DOMAINS)
        .watch(certbot.live())
        .set("aliyun", "store = \"cas\"")
        .set("cas", &format!("endpoint = {:?}", cdn.endpoint()))
        .set("cas", &format!("delete_superseded = {cleanup}"))
        .set("cas", "delete_after_hours = 0")
        .set("dcdn", &format!("endpoint = {:?}", dcdn.endpoint()))
        .set("dcdn", &format!("domains = [{}]", dcdn_domains.join(", ")))
        .write(env);
}

fn uploads(log: &[LogEntry]) -> Vec<Fingerprint> {
    log.iter()
        .filter(|e| e.is_cas_upload() && e.succeeded())
        .filter_map(|e| e.fingerprint)
        .collect()
}

/// Every write call bound by reference: no material; the DCDN (per-domain) call by id and
/// region as well as name.
fn assert_by_reference(log: &[LogEntry], by_id: bool) {
    let writes: Vec<&LogEntry> = log.iter().filter(|e| e.is_write()).collect();
    assert!(!writes.is_empty());
    for w in writes {
        assert!(!w.has_param("SSLPub") && !w.has_param("SSLPri"), "{w:?}");
        assert!(w.has_param("CertType") && w.has_param("CertName"), "{w:?}");
        assert_eq!(w.has_param("CertId"), by_id, "{w:?}");
        assert_eq!(w.has_param("CertRegion"), by_id, "{w:?}");
    }
}

/// Each managed domain serves `want[domain]`, bound to the CAS certificate of that content.
fn assert_served(cdn: &Emulator, dcdn: &Emulator, want: &BTreeMap<&str, Fingerprint>) {
    let ids: BTreeMap<Fingerprint, u64> = cdn
        .cas_certs()
        .iter()
        .map(|c| (c.fingerprint, c.cert_id))
        .collect();
    let (on_cdn, on_dcdn) = (cdn.served(), dcdn.served());
    for (d, fp) in want {
        let s = on_cdn.get(*d).or(on_dcdn.get(*d)).expect("served");
        assert_eq!(s.fingerprint, *fp, "{d}");
        assert_eq!(
            s.cas_cert_id,
            ids.get(fp).copied(),
            "{d} not bound to its CAS certificate"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdn_and_dcdn_bind_one_upload_per_certificate_and_cleanup_reads_both() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let shared = issue(&["example.com", "*.example.com"]);
    let shop = issue(&["shop.example.net"]);
    certbot.add("example.com", &shared);
    certbot.add("shop.example.net", &shop);
    let fs = fingerprint_of(shared.fullchain_pem.as_bytes(), shared.key_pem.as_bytes());
    let fh = fingerprint_of(shop.fullchain_pem.as_bytes(), shop.key_pem.as_bytes());
    let (cdn, dcdn) = emulators().await;
    configure(&env, &certbot, &cdn, &dcdn, false);

    run(&env, &["sync"]).await.expect_status(0);
    // One upload per certificate (the one covering both products' domains included), all
    // to CAS; the DCDN API saw no upload and no material.
    let up = uploads(&cdn.log());
    assert_eq!(up.len(), 2, "one upload per certificate");
    assert_eq!(up.iter().copied().collect::<BTreeSet<_>>(), [fs, fh].into());
    assert!(uploads(&dcdn.log()).is_empty());
    assert_by_reference(&cdn.log(), false);
    assert_by_reference(&dcdn.log(), true);
    let mut want: BTreeMap<&str, Fingerprint> = BTreeMap::new();
    for d in ["a.example.com", "b.example.com", "edge.example.com"] {
        want.insert(d, fs);
    }
    want.insert("shop.example.net", fh);
    assert_served(&cdn, &dcdn, &want);
    run(&env, &["sync"]).await.expect_status(0);
    assert_eq!(uploads(&cdn.log()).len(), 2, "a second sync uploaded");

    // A renewal: one new upload, both products move to it.
    let renewed = issue_with(
        &["example.com", "*.example.com"],
        -1,
        120,
        LeafKey::EcdsaP256,
    );
    certbot.renew("example.com", &renewed);
    let fr = fingerprint_of(renewed.fullchain_pem.as_bytes(), renewed.key_pem.as_bytes());
    run(&env, &["sync"]).await.expect_status(0);
    let up = uploads(&cdn.log());
    assert_eq!(up.len(), 3, "one new upload for the renewal");
    assert_eq!(up[2], fr);
    for d in ["a.example.com", "b.example.com", "edge.example.com"] {
        want.insert(d, fr);
    }
    assert_served(&cdn, &dcdn, &want);
    let old = cdn
        .cas_certs()
        .iter()
        .find(|c| c.fingerprint == fs)
        .expect("the superseded upload")
        .cert_id;

    // The DCDN domain is bound back to the old certificate in the console: the cleanup reads
    // it through DCDN and keeps the certificate.
    dcdn.bind_cas("edge.example.com", old)
        .await
        .expect("console binding");
    configure(&env, &certbot, &cdn, &dcdn, true);
    run(&env, &["sync"])
        .await
        .expect_status(0)
        .expect_contains("edge.example.com still serves it");
    assert!(cdn.cas_certs().iter().any(|c| c.cert_id == old));
    assert!(
        cdn.log()
            .iter()
            .all(|e| e.action != "DeleteUserCertificate")
    );

    // Bound only by a DCDN domain certrotd does not manage: CAS (in the CDN emulator)
    // refuses the delete, as it sees the DCDN binding.
    let new = cdn
        .cas_certs()
        .iter()
        .find(|c| c.fingerprint == fr)
        .expect("new")
        .cert_id;
    dcdn.bind_cas("edge.example.com", new)
        .await
        .expect("console binding");
    dcdn.bind_cas(UNMANAGED, old)
        .await
        .expect("console binding");
    run(&env, &["sync"])
        .await
        .expect_status(1)
        .expect_contains("CertificateInUse");
    assert!(cdn.cas_certs().iter().any(|c| c.cert_id == old));

    // Unbound everywhere: deleted, once.
    dcdn.bind_cas(UNMANAGED, new)
        .await
        .expect("console binding");
    run(&env, &["sync"])
        .await
        .expect_status(0)
        .expect_contains("deleted from CAS: certrotd-");
    let left: BTreeSet<Fingerprint> = cdn.cas_certs().iter().map(|c| c.fingerprint).collect();
    assert_eq!(left, [fh, fr].into());
    assert_served(&cdn, &dcdn, &want);
    cdn.shutdown().await;
    dcdn.shutdown().await;
}
