//! Measure: what the per-domain call (and the fallback to it) costs. `certrotd sync` (the
//! real binary) of 300 domains over 10 certbot lineages against the in-process emulator with
//! 100 ms latency, read-back on, three ways:
//! - `api = "per-domain"`: 300 `SetCdnDomainSSLCertificate` calls at 30/s — floor 10 s;
//! - `api = "batch"`: 30 `BatchSetCdnDomainServerCertificate` calls of 10 at 10/s — floor 3 s;
//! - `api = "batch"` against an emulator that answers it as retired (`batch_gone`): one
//!   refused batch call, then the 300 per-domain calls — floor 10 s.
//!
//! Prints write calls, busiest second, wall time and floor/actual (goal >= 0.9) for each.
//! Run with `cargo bench --bench perdomain`.

#[path = "../tests/it/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use certrotd::emulator::{Emulator, EmulatorConfig, LogEntry};
use certrotd::push::limiter::max_in_any_window;
use harness::{Certbot, Env, Output, issue, run_with};

const CERTS: usize = 10;
const PER_CERT: usize = 30;
const LATENCY: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug)]
enum Way {
    PerDomain,
    Batch,
    Fallback,
}

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
    println!(
        "perdomain: {} domains over {CERTS} certificates, latency {} ms, verify on",
        CERTS * PER_CERT,
        LATENCY.as_millis()
    );
    for way in [Way::PerDomain, Way::Batch, Way::Fallback] {
        rt.block_on(bench(way))?;
    }
    Ok(())
}

async fn bench(way: Way) -> Result<(), Box<dyn std::error::Error>> {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let all: Vec<String> = (0..CERTS).flat_map(domains_of).collect();
    for c in 0..CERTS {
        let name = format!("c{c:02}");
        certbot.add(&name, &issue(&[&format!("*.{name}.bench.example")]));
    }
    let mut cfg = EmulatorConfig::with_domains(all.iter().cloned());
    cfg.latency = LATENCY;
    cfg.max_domains_per_call = 10;
    cfg.batch_gone = matches!(way, Way::Fallback);
    let emu = Emulator::start("127.0.0.1:0".parse()?, cfg).await?;
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let api = match way {
        Way::PerDomain => "per-domain",
        Way::Batch | Way::Fallback => "batch",
    };
    harness::emulator_credentials(&env, &emu.endpoint(), &refs)
        .watch(certbot.live())
        .set("aliyun", &format!("api = {api:?}"))
        .set("aliyun", "max_domains_per_call = 10")
        .write(&env);
    let floor = match way {
        Way::PerDomain | Way::Fallback => Duration::from_secs(10),
        Way::Batch => Duration::from_secs(3),
    };
    let (out, wall) = timed_sync(&env).await;
    if out.status != 0 {
        return Err(format!("{way:?}: sync exited {}:\n{}", out.status, out.all()).into());
    }
    let log = emu.log();
    let writes: Vec<&LogEntry> = log.iter().filter(|e| e.is_write()).collect();
    let refused = writes.iter().filter(|e| !e.succeeded()).count();
    let arrivals: Vec<Duration> = writes.iter().map(|e| e.at).collect();
    let busiest = max_in_any_window(&arrivals, Duration::from_secs(1));
    let served = emu.served();
    let deployed = all.iter().filter(|d| served.contains_key(*d)).count();
    println!(
        "{way:?} (api = {api:?}): write calls {} ({refused} refused), busiest second {busiest}, deployed {deployed}/{}, wall {:.3} s, floor {:.3} s, floor/actual {:.3} (goal >= 0.9)",
        writes.len(),
        all.len(),
        wall.as_secs_f64(),
        floor.as_secs_f64(),
        floor.as_secs_f64() / wall.as_secs_f64()
    );
    emu.shutdown().await;
    Ok(())
}

async fn timed_sync(env: &Env) -> (Output, Duration) {
    let cmd = env.command(&["sync"]);
    let t = Instant::now();
    let out = tokio::task::spawn_blocking(move || run_with(cmd))
        .await
        .expect("runner thread");
    (out, t.elapsed())
}
