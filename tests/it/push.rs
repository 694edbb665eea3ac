//! The executor end to end: real HTTP on 127.0.0.1 to the in-process emulator, real
//! certificates from `testca`, injected faults (30 % 503, 10 % resets, 5 % throttling).
//! Asserted from the emulator's side: its served state, its request log (nonces, arrival
//! times).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use certrotd::aliyun::cdn::{AliyunCdn, batch_limits};
use certrotd::aliyun::client::Client;
use certrotd::aliyun::credentials::{Credentials, Secret};
use certrotd::cert::{self, Certificate};
use certrotd::config::AliyunSettings;
use certrotd::emulator::{self, Emulator, EmulatorConfig, Faults};
use certrotd::push::limiter::max_in_any_window;
use certrotd::push::{Backoff, Event, Executor, Job, Options, Outcome, Upload, Verification};
use certrotd::testca::{Leaf, TestCa};
use time::OffsetDateTime;

const CERTS: usize = 8;
const PER_CERT: usize = 12;
const BATCH: usize = 4;
const RATE: u32 = 10;

fn settings(endpoint: &str) -> AliyunSettings {
    AliyunSettings {
        requests_per_second: RATE,
        read_requests_per_second: 100,
        max_domains_per_call: BATCH,
        max_attempts: 12,
        timeout: Duration::from_secs(10),
        ..AliyunSettings::defaults(endpoint)
    }
}

fn certificate(ca: &TestCa, names: &[String]) -> Certificate {
    let now = OffsetDateTime::now_utc();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let leaf = Leaf::new(
        &names,
        now - time::Duration::days(1),
        now + time::Duration::days(60),
    );
    let issued = ca.issue(&leaf).expect("test CA issues a leaf");
    cert::parse(issued.fullchain_pem.as_bytes(), issued.key_pem.as_bytes()).expect("valid leaf")
}

fn job(i: usize, cert: &Certificate, domains: &[String]) -> Job {
    Job {
        target: 0,
        upload: Arc::new(Upload {
            cert_name: format!("push-it-{i}"),
            chain: cert.chain().clone(),
            key: Arc::clone(&cert.key),
            fingerprint: cert.fingerprint,
            not_after: cert.not_after,
        }),
        batches: domains.chunks(BATCH).map(<[String]>::to_vec).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_domain_deploys_under_faults_politely() {
    let domains: Vec<Vec<String>> = (0..CERTS)
        .map(|c| {
            (0..PER_CERT)
                .map(|d| format!("d{d:02}.c{c}.example.com"))
                .collect()
        })
        .collect();
    let mut cfg = EmulatorConfig::with_domains(domains.iter().flatten().cloned());
    cfg.faults = Faults {
        fail_rate: 0.30,
        reset_rate: 0.10,
        throttle_rate: 0.05,
        internal_rate: 0.0,
    };
    cfg.seed = 7;
    let emu = Emulator::start("127.0.0.1:0".parse().expect("addr"), cfg)
        .await
        .expect("emulator starts");
    let s = settings(&emu.endpoint());
    let creds = Credentials::new(
        emulator::DEFAULT_ACCESS_KEY_ID,
        Secret::from(emulator::DEFAULT_ACCESS_KEY_SECRET.to_string()),
        None,
        "test",
    );
    let client = Client::new(&s, creds).expect("client");
    let mut opts = Options::new(s.max_attempts, s.verify);
    // Shorter waits than production (1 s / 60 s) keep the test quick; same policy.
    opts.retry_backoff = Arc::new(Backoff::seeded(
        Duration::from_millis(200),
        Duration::from_secs(3),
        11,
    ));
    opts.poll_backoff = Arc::new(Backoff::seeded(
        Duration::from_millis(200),
        Duration::from_secs(1),
        12,
    ));
    let target = AliyunCdn::new(client, None, batch_limits(&s));
    let ex = Executor::new(Arc::new(target), opts);

    let ca = TestCa::new("push-it").expect("test CA");
    let certs: Vec<Certificate> = domains.iter().map(|d| certificate(&ca, d)).collect();
    let jobs = (0..CERTS).map(|i| job(i, &certs[i], &domains[i])).collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let report = ex.run(jobs, Some(tx)).await;

    // Every domain deployed, as the emulator serves it, and verified by read-back.
    assert!(report.stopped.is_none());
    let served = emu.served();
    for (i, list) in domains.iter().enumerate() {
        for d in list {
            match report.outcomes.get(d) {
                Some(Outcome::Deployed {
                    fingerprint,
                    verification,
                    ..
                }) => {
                    assert_eq!(*fingerprint, certs[i].fingerprint);
                    assert!(
                        matches!(verification, Verification::Verified),
                        "{d}: {verification:?}"
                    );
                }
                other => panic!("{d}: {other:?}"),
            }
            assert_eq!(
                served.get(d).map(|s| s.fingerprint),
                Some(certs[i].fingerprint),
                "{d}"
            );
        }
    }

    let log = emu.log();
    let writes: Vec<_> = log.iter().filter(|e| e.is_write()).collect();
    // Faults really happened, and were retried.
    assert!(
        writes.iter().any(|e| e.injected && e.status.is_none()),
        "no reset injected"
    );
    assert!(writes.iter().any(|e| e.injected && e.status == Some(503)));
    let floor = (CERTS * PER_CERT).div_ceil(BATCH) as u64;
    assert!(report.write_calls > floor);
    assert_eq!(report.write_calls, writes.len() as u64);
    assert_eq!(
        writes.iter().filter(|e| e.succeeded()).count() as u64,
        floor
    );
    // The emulator never had to throttle on its own (only injected throttling).
    assert!(
        writes.iter().all(|e| e.injected
            || e.code
                .as_deref()
                .is_none_or(|c| !c.starts_with("Throttling"))),
        "the emulator throttled a call"
    );
    // Never more than RATE write arrivals in any rolling second, first second included.
    let arrivals: Vec<Duration> = writes.iter().map(|e| e.at).collect();
    let busiest = max_in_any_window(&arrivals, Duration::from_secs(1));
    eprintln!(
        "writes {} (floor {floor}), reads {}, busiest second {busiest}",
        report.write_calls, report.read_calls
    );
    assert!(busiest <= RATE as usize, "{busiest} calls in one second");
    // Every attempt freshly signed: no nonce seen twice, reads included.
    let mut nonces = HashSet::new();
    for e in &log {
        assert!(
            nonces.insert(e.signature_nonce.clone()),
            "nonce repeated: {}",
            e.signature_nonce
        );
    }

    // One Deployed event per successful call, each followed (eventually) by Verified.
    let (mut deployed, mut verified) = (0u64, 0u64);
    while let Ok(ev) = rx.try_recv() {
        match ev {
            Event::Deployed { .. } => deployed += 1,
            Event::Verified { .. } => verified += 1,
            Event::Unverified { domains, .. } => panic!("unverified: {domains:?}"),
            Event::Prepared { .. } => panic!("the batch call prepares nothing"),
        }
    }
    assert_eq!((deployed, verified), (floor, floor));
    emu.shutdown().await;
}
