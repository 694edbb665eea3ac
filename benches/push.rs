//! Measure: push 1000 domains over 20 certificates through the executor to the in-process
//! emulator (100 ms latency, 10 write calls/s, batch 50). Prints calls made vs the floor
//! (20) and wall time vs the floor (20 calls at 10/s = 2 s); goal: calls = floor and
//! time <= 1.1 x floor + one latency. A second run with read-back on shows that reads do
//! not slow the writes (time of the last successful write) and what verification adds.
//!
//! Run with `cargo bench --bench push`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use certrotd::aliyun::cdn::{AliyunCdn, batch_limits};
use certrotd::aliyun::client::Client;
use certrotd::aliyun::credentials::{Credentials, Secret};
use certrotd::cert::{self, Certificate};
use certrotd::config::AliyunSettings;
use certrotd::emulator::{self, Emulator, EmulatorConfig};
use certrotd::push::limiter::max_in_any_window;
use certrotd::push::{Event, Executor, Job, Options, Upload};
use certrotd::testca::{Leaf, TestCa};
use time::OffsetDateTime;

const CERTS: usize = 20;
const PER_CERT: usize = 50;
const BATCH: usize = 50;
const RATE: u32 = 10;
const LATENCY: Duration = Duration::from_millis(100);

struct Figures {
    calls: u64,
    successes: usize,
    reads: u64,
    wall: Duration,
    last_write: Duration,
    busiest: usize,
    deployed: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let floor_calls = (CERTS * PER_CERT).div_ceil(BATCH) as u64;
    let floor_time = Duration::from_secs_f64(floor_calls as f64 / f64::from(RATE));
    let goal = floor_time.mul_f64(1.1) + LATENCY;
    println!(
        "push: {} domains over {CERTS} certificates, batch {BATCH}, {RATE} calls/s, latency {} ms",
        CERTS * PER_CERT,
        LATENCY.as_millis()
    );
    for verify in [false, true] {
        let f = rt.block_on(measure(verify))?;
        println!(
            "verify={verify}: calls {} (floor {floor_calls}, {} succeeded), wall {:.3} s (floor {:.3} s, goal <= {:.3} s), last write answered at {:.3} s, busiest second {} calls, reads {}, deployed {}/{}",
            f.calls,
            f.successes,
            f.wall.as_secs_f64(),
            floor_time.as_secs_f64(),
            goal.as_secs_f64(),
            f.last_write.as_secs_f64(),
            f.busiest,
            f.reads,
            f.deployed,
            CERTS * PER_CERT,
        );
        let met = f.calls == floor_calls && f.wall <= goal;
        let writes_met = f.calls == floor_calls && f.last_write <= goal;
        println!(
            "verify={verify}: goal {}",
            if met || (verify && writes_met) {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    Ok(())
}

async fn measure(verify: bool) -> Result<Figures, Box<dyn std::error::Error>> {
    let domains: Vec<Vec<String>> = (0..CERTS)
        .map(|c| {
            (0..PER_CERT)
                .map(|d| format!("d{d:02}.c{c:02}.example.com"))
                .collect()
        })
        .collect();
    let mut cfg = EmulatorConfig::with_domains(domains.iter().flatten().cloned());
    cfg.latency = LATENCY;
    cfg.writes_per_second = RATE;
    cfg.max_domains_per_call = BATCH;
    let emu = Emulator::start("127.0.0.1:0".parse()?, cfg).await?;
    let settings = AliyunSettings {
        endpoint: emu.endpoint(),
        region: None,
        access_key_id: None,
        access_key_secret_file: None,
        requests_per_second: RATE,
        read_requests_per_second: 100,
        max_domains_per_call: BATCH,
        api: certrotd::config::Api::Batch,
        per_domain_requests_per_second: 30,
        max_attempts: 5,
        timeout: Duration::from_secs(10),
        verify,
        signature: certrotd::config::Signature::V1,
        access: Default::default(),
    };
    let creds = Credentials::new(
        emulator::DEFAULT_ACCESS_KEY_ID,
        Secret::from(emulator::DEFAULT_ACCESS_KEY_SECRET.to_string()),
        None,
        "bench",
    );
    let client = Client::new(&settings, creds)?;
    let ex = Executor::new(
        Arc::new(AliyunCdn::new(client, None, batch_limits(&settings))),
        Options::new(settings.max_attempts, settings.verify),
    );
    let ca = TestCa::new("push-bench")?;
    let mut jobs = Vec::new();
    for (i, list) in domains.iter().enumerate() {
        let cert = certificate(&ca, list)?;
        jobs.push(Job {
            target: 0,
            upload: Arc::new(Upload {
                cert_name: format!("bench-{i:02}"),
                chain: cert.chain().clone(),
                key: Arc::clone(&cert.key),
                fingerprint: cert.fingerprint,
                not_after: cert.not_after,
            }),
            batches: list.chunks(BATCH).map(<[String]>::to_vec).collect(),
        });
    }

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now();
    let watcher = tokio::spawn(async move {
        let mut last = Duration::ZERO;
        while let Some(ev) = rx.recv().await {
            if matches!(ev, Event::Deployed { .. }) {
                last = start.elapsed();
            }
        }
        last
    });
    let report = ex.run(jobs, Some(tx)).await;
    let wall = start.elapsed();
    let last_write = watcher.await?;

    let log = emu.log();
    let writes: Vec<_> = log.iter().filter(|e| e.is_write()).collect();
    let arrivals: Vec<Duration> = writes.iter().map(|e| e.at).collect();
    let figures = Figures {
        calls: report.write_calls,
        successes: writes.iter().filter(|e| e.succeeded()).count(),
        reads: report.read_calls,
        wall,
        last_write,
        busiest: max_in_any_window(&arrivals, Duration::from_secs(1)),
        deployed: report.outcomes.values().filter(|o| o.is_deployed()).count(),
    };
    emu.shutdown().await;
    Ok(figures)
}

fn certificate(ca: &TestCa, names: &[String]) -> Result<Certificate, Box<dyn std::error::Error>> {
    let now = OffsetDateTime::now_utc();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let leaf = Leaf::new(
        &names,
        now - time::Duration::days(1),
        now + time::Duration::days(60),
    );
    let issued = ca.issue(&leaf)?;
    Ok(cert::parse(
        issued.fullchain_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )?)
}
