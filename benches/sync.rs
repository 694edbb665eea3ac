//! Measure: `certrotd sync` (the real binary, release build) of 5000 domains over 100
//! certbot lineages (batch 50) against the in-process emulator with 100 ms latency at 10
//! write calls/s, read-back on. Floor: 100 calls at 10/s = 10 s. Goal: exactly 100 write
//! calls and floor/actual >= 0.9. Prints where the time goes: start → first write (config,
//! scan, state lock, credentials), the writes, last write → exit (read-backs, state saves).
//! A second sync (nothing to do) shows the steady-state cost.
//!
//! Run with `cargo bench --bench sync`.

#[path = "../tests/it/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use certrotd::emulator::{Emulator, EmulatorConfig, LogEntry};
use certrotd::push::limiter::max_in_any_window;
use harness::{Certbot, Env, Output, issue, run_with};

const CERTS: usize = 100;
const PER_CERT: usize = 50;
const BATCH: usize = 50;
const RATE: u32 = 10;
const LATENCY: Duration = Duration::from_millis(100);

fn domains_of(c: usize) -> Vec<String> {
    (0..PER_CERT)
        .map(|d| format!("d{d:02}.c{c:03}.bench.example"))
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(bench())
}

async fn bench() -> Result<(), Box<dyn std::error::Error>> {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let all: Vec<String> = (0..CERTS).flat_map(domains_of).collect();
    for c in 0..CERTS {
        certbot.add(
            &format!("c{c:03}"),
            &issue(&[&format!("*.c{c:03}.bench.example")]),
        );
    }
    let mut cfg = EmulatorConfig::with_domains(all.iter().cloned());
    cfg.latency = LATENCY;
    cfg.writes_per_second = RATE;
    cfg.max_domains_per_call = BATCH;
    // The log's arrival times count from (about) here.
    let emu_zero = Instant::now();
    let emu = Emulator::start("127.0.0.1:0".parse()?, cfg).await?;
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    harness::emulator_credentials(&env, &emu.endpoint(), &refs)
        .watch(certbot.live())
        .set("aliyun", &format!("max_domains_per_call = {BATCH}"))
        .set("aliyun", &format!("requests_per_second = {RATE}"))
        .write(&env);

    let floor_calls = (CERTS * PER_CERT).div_ceil(BATCH);
    let floor = Duration::from_secs_f64(floor_calls as f64 / f64::from(RATE));
    println!(
        "sync: {} domains over {CERTS} certificates, batch {BATCH}, {RATE} calls/s, latency {} ms, verify on",
        all.len(),
        LATENCY.as_millis()
    );

    let (out, wall, started_at) = timed_sync(&env, emu_zero).await;
    if out.status != 0 {
        return Err(format!("sync exited {}:\n{}", out.status, out.all()).into());
    }
    let log = emu.log();
    let writes: Vec<&LogEntry> = log.iter().filter(|e| e.is_write()).collect();
    let reads = log.len() - writes.len();
    let ok = writes.iter().filter(|e| e.succeeded()).count();
    let first = writes
        .first()
        .map_or(Duration::ZERO, |e| e.at.saturating_sub(started_at));
    let last = writes
        .last()
        .map_or(Duration::ZERO, |e| e.at.saturating_sub(started_at));
    let arrivals: Vec<Duration> = writes.iter().map(|e| e.at).collect();
    let busiest = max_in_any_window(&arrivals, Duration::from_secs(1));
    let served = emu.served();
    let deployed = all.iter().filter(|d| served.contains_key(*d)).count();
    println!(
        "write calls {} (goal exactly {floor_calls}; {ok} succeeded), read calls {reads}, busiest second {busiest} writes, deployed {deployed}/{}",
        writes.len(),
        all.len()
    );
    println!(
        "wall {:.3} s, floor {:.3} s, floor/actual {:.3} (goal >= 0.9)",
        wall.as_secs_f64(),
        floor.as_secs_f64(),
        floor.as_secs_f64() / wall.as_secs_f64()
    );
    println!(
        "  start -> first write arrives {:.3} s; first -> last write arrives {:.3} s; last write arrives -> exit {:.3} s",
        first.as_secs_f64(),
        (last - first).as_secs_f64(),
        wall.saturating_sub(last).as_secs_f64()
    );

    let (again, wall2, _) = timed_sync(&env, emu_zero).await;
    let writes2 = emu.log().iter().filter(|e| e.is_write()).count() - writes.len();
    println!(
        "second sync: exit {}, {writes2} write calls, wall {:.3} s",
        again.status,
        wall2.as_secs_f64()
    );
    emu.shutdown().await;
    Ok(())
}

/// Runs `certrotd sync`; returns its output, wall time, and its start on the emulator's
/// clock (to place the log's arrival times).
async fn timed_sync(env: &Env, emu_zero: Instant) -> (Output, Duration, Duration) {
    let cmd = env.command(&["sync"]);
    let t = Instant::now();
    let zero = t - emu_zero;
    let out = tokio::task::spawn_blocking(move || run_with(cmd))
        .await
        .expect("runner thread");
    (out, t.elapsed(), zero)
}
