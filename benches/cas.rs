//! Measure: `[aliyun] store = "upload"` against `"cas"` for 1000 domains on 20 certificates
//! (50 domains a wildcard certificate), with the batch call (50 domains a call, 10 calls/s)
//! and the per-domain call (30 calls/s): API calls by action, bytes sent (query + body of
//! every request), how many requests carried the private key, and the wall time of one
//! `certrotd sync` (the real binary, release build) against the in-process emulator (CDN and
//! CAS on one port, no added latency, read-back on).
//!
//! Run with `cargo bench --bench cas`. One run (2026-12-01, 2 shared cores):
//!
//! | api | store | calls | sent | key sent | wall |
//! |---|---|---|---|---|---|
//! | batch | upload | 40 (20 writes, 20 reads) | 69.5 KiB | 20 | 1.11 s |
//! | batch | cas | 80 (+20 lists, 20 uploads) | 82.1 KiB | 20 | 1.12 s |
//! | per-domain | upload | 2000 (1000 writes, 1000 reads) | 2288.6 KiB | 1000 | 37.4 s |
//! | per-domain | cas | 2040 (+20 lists, 20 uploads) | 731.3 KiB | 20 | 36.5 s |

#[path = "../tests/it/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use certrotd::emulator::{Emulator, EmulatorConfig};
use harness::{Certbot, Env, issue, run_with};

const CERTS: usize = 20;
const PER_CERT: usize = 50;

fn domains_of(c: usize) -> Vec<String> {
    (0..PER_CERT)
        .map(|d| format!("d{d:02}.c{c:02}.bench.example"))
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        println!(
            "cas: {} domains on {CERTS} certificates; one sync each, from an empty state",
            CERTS * PER_CERT
        );
        for api in ["batch", "per-domain"] {
            for store in ["upload", "cas"] {
                one(api, store).await?;
            }
        }
        Ok(())
    })
}

async fn one(api: &str, store: &str) -> Result<(), Box<dyn std::error::Error>> {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let all: Vec<String> = (0..CERTS).flat_map(domains_of).collect();
    for c in 0..CERTS {
        certbot.add(
            &format!("c{c:02}"),
            &issue(&[&format!("*.c{c:02}.bench.example")]),
        );
    }
    let mut cfg = EmulatorConfig::with_domains(all.iter().cloned());
    cfg.max_domains_per_call = PER_CERT;
    let emu = Emulator::start("127.0.0.1:0".parse()?, cfg).await?;
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    harness::emulator_credentials(&env, &emu.endpoint(), &refs)
        .watch(certbot.live())
        .set("aliyun", &format!("max_domains_per_call = {PER_CERT}"))
        .set("aliyun", &format!("api = {api:?}"))
        .set("aliyun", &format!("store = {store:?}"))
        .set("cas", &format!("endpoint = {:?}", emu.endpoint()))
        .write(&env);
    let cmd = env.command(&["sync"]);
    let t = Instant::now();
    let out = tokio::task::spawn_blocking(move || run_with(cmd)).await?;
    let wall: Duration = t.elapsed();
    if out.status != 0 {
        return Err(format!("sync exited {}:\n{}", out.status, out.all()).into());
    }
    let log = emu.log();
    let mut calls: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &log {
        *calls.entry(e.action.as_str()).or_default() += 1;
    }
    let bytes: u64 = log.iter().map(|e| e.request_bytes).sum();
    let keys = log
        .iter()
        .filter(|e| e.has_param("SSLPri") || e.has_param("Key"))
        .count();
    let served = emu.served();
    let deployed = all.iter().filter(|d| served.contains_key(*d)).count();
    let by_action: Vec<String> = calls.iter().map(|(a, n)| format!("{a} {n}")).collect();
    println!(
        "api={api:<10} store={store:<6}: {} calls ({}), {:.1} KiB sent, key sent {keys} times, deployed {deployed}/{}, wall {:.3} s",
        log.len(),
        by_action.join(", "),
        bytes as f64 / 1024.0,
        all.len(),
        wall.as_secs_f64()
    );
    emu.shutdown().await;
    Ok(())
}
