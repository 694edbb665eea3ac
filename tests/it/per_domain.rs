//! `[aliyun] api = "per-domain"`: the real binary deploys with `SetCdnDomainSSLCertificate`,
//! one domain a call, at `per_domain_requests_per_second`, against the emulator.

use std::collections::BTreeSet;
use std::time::Duration;

use certrotd::emulator::{Emulator, EmulatorConfig, LogEntry};

use crate::harness::{Certbot, Env, emulator_credentials, fingerprint_of, issue, run_with};

const PER_DOMAIN: &str = "SetCdnDomainSSLCertificate";
const BATCH: &str = "BatchSetCdnDomainServerCertificate";
const DESCRIBE: &str = "DescribeDomainCertificateInfo";

/// Most entries in any rolling second of `entries` (sorted by arrival).
fn busiest_second(entries: &[LogEntry]) -> usize {
    let mut most = 0;
    for (i, e) in entries.iter().enumerate() {
        let within = entries[i..]
            .iter()
            .take_while(|f| f.at < e.at + Duration::from_secs(1))
            .count();
        most = most.max(within);
    }
    most
}

fn calls(emu: &Emulator, action: &str) -> Vec<LogEntry> {
    emu.log()
        .into_iter()
        .filter(|e| e.action == action)
        .collect()
}

/// Runs `certrotd -c … <args>` on a blocking thread (the emulator keeps serving).
async fn run(env: &Env, args: &[&str]) -> crate::harness::Output {
    let cmd = env.command(args);
    tokio::task::spawn_blocking(move || run_with(cmd))
        .await
        .expect("runner thread")
}

/// 300 domains over 10 wildcard lineages: 300 per-domain calls (none of the batch call),
/// never more than 30 in any rolling second, every domain serving and read back; a second
/// sync makes no write call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_domains_take_three_hundred_per_domain_calls_at_thirty_a_second() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let mut domains = Vec::new();
    let mut expected = Vec::new();
    for l in 0..10 {
        let parent = format!("l{l}.example.com");
        let issued = issue(&[parent.as_str(), format!("*.{parent}").as_str()]);
        certbot.add(&parent, &issued);
        let fp = fingerprint_of(issued.fullchain_pem.as_bytes(), issued.key_pem.as_bytes());
        for d in 0..30 {
            let domain = format!("d{d:02}.{parent}");
            expected.push((domain.clone(), fp));
            domains.push(domain);
        }
    }
    let emu = Emulator::start(
        "127.0.0.1:0".parse().expect("addr"),
        EmulatorConfig::with_domains(domains.iter().cloned()),
    )
    .await
    .expect("emulator starts");
    let refs: Vec<&str> = domains.iter().map(String::as_str).collect();
    emulator_credentials(&env, &emu.endpoint(), &refs)
        .watch(certbot.live())
        .set("aliyun", "api = \"per-domain\"")
        .write(&env);

    run(&env, &["sync"])
        .await
        .expect_status(0)
        .expect_contains("300 domain(s) to update in 300 call(s)");
    let writes: Vec<LogEntry> = emu.log().into_iter().filter(|e| e.is_write()).collect();
    assert_eq!(writes.len(), 300, "one call per domain, no retries");
    assert!(
        writes
            .iter()
            .all(|e| e.action == PER_DOMAIN && e.succeeded())
    );
    assert!(calls(&emu, BATCH).is_empty(), "the batch call was used");
    assert!(writes.iter().all(|e| e.domains.len() == 1));
    let written: BTreeSet<&str> = writes.iter().map(|e| e.domains[0].as_str()).collect();
    assert_eq!(written.len(), 300, "each domain written once");
    let busiest = busiest_second(&writes);
    let span = writes[writes.len() - 1].at - writes[0].at;
    eprintln!("300 per-domain writes over {span:?}, busiest second {busiest}");
    assert!(busiest <= 30, "{busiest} per-domain calls in one second");

    let served = emu.served();
    for (domain, fp) in &expected {
        assert_eq!(
            served.get(domain).map(|s| s.fingerprint),
            Some(*fp),
            "{domain}"
        );
    }
    let read_back: BTreeSet<String> = calls(&emu, DESCRIBE)
        .into_iter()
        .flat_map(|e| e.domains)
        .collect();
    for domain in &domains {
        assert!(read_back.contains(domain), "{domain} was not read back");
    }

    run(&env, &["sync"])
        .await
        .expect_status(0)
        .expect_contains("0 domain(s) to update in 0 call(s); 300 up to date");
    let after = emu.log().into_iter().filter(|e| e.is_write()).count();
    assert_eq!(after, 300, "a second sync made a write call");
    emu.shutdown().await;
}
