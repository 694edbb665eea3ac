//! Measure issue 10's table: SaaS scale, certbot trees of L lineages with 20 domains each
//! (20 SANs per certificate), `requests_per_second = 100`, `read_requests_per_second = 100`,
//! `max_domains_per_call = 50`,
//! against the in-process emulator at 100 writes/s and 20 ms latency, read-back on; the
//! real binary, release build. At 20 000 domains / 1 000 lineages and 100 000 / 5 000:
//!
//! - `check` wall (goal <= 2 s at 100 000);
//! - `sync` floor/actual (floor: one call per certificate at 100/s; goal >= 0.9);
//! - sync CPU, user + system, from the child's `wait4` rusage (goal <= 10 s);
//! - bytes the sync wrote to storage: `write_bytes` of its `/proc/<pid>/io`, read while it
//!   is a zombie (it writes nothing but the state folder), against the final store size
//!   (goal <= 4x);
//! - the sync's peak RSS, rusage `ru_maxrss` (goal <= 150 MB);
//! - a second sync: write calls (goal 0) and wall (goal <= 3 s);
//! - then, at the largest size, `certrotd run` on the converged state: VmRSS from
//!   `/proc/<pid>/status` once its first pass is done.
//!
//! Run with `cargo bench --bench scale`. `CERTROTD_BENCH_LINEAGES=1000` (a comma list) picks
//! the sizes; `CERTROTD_BENCH_KEEP=1` prints the folder of the largest run and keeps it
//! (for `perf record` of a sync by hand).

#[path = "../tests/it/harness.rs"]
mod harness;

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use certrotd::emulator::{Emulator, EmulatorConfig};
use harness::{Certbot, Env, issue};

type Boxed = Box<dyn std::error::Error>;

const PER_CERT: usize = 20;
const BATCH: usize = 50;
const RATE: u32 = 100;
const LATENCY: Duration = Duration::from_millis(20);

fn main() -> Result<(), Boxed> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let sizes: Vec<usize> = std::env::var("CERTROTD_BENCH_LINEAGES")
        .unwrap_or_else(|_| "1000,5000".to_string())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let mut rows = Vec::new();
    for (i, &lineages) in sizes.iter().enumerate() {
        let last = i + 1 == sizes.len();
        rows.push(rt.block_on(measure(lineages, last))?);
    }
    println!();
    println!(
        "| work | `check` | `sync` wall (floor) | floor/actual | sync CPU | peak RSS | store | bytes written by sync | second sync |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{}", r.line());
    }
    for r in &rows {
        if let Some(rss) = r.daemon_rss_kib {
            println!(
                "daemon (`certrotd run`) after its first pass at {} domains / {} lineages: VmRSS {:.1} MiB",
                r.domains,
                r.lineages,
                rss as f64 / 1024.0
            );
        }
    }
    Ok(())
}

struct Row {
    lineages: usize,
    domains: usize,
    check: Duration,
    wall: Duration,
    floor: Duration,
    cpu: Duration,
    maxrss_kib: u64,
    write_bytes: u64,
    store_bytes: u64,
    calls: usize,
    second_calls: usize,
    second_wall: Duration,
    daemon_rss_kib: Option<u64>,
}

impl Row {
    fn line(&self) -> String {
        let mb = |b: u64| b as f64 / 1e6;
        format!(
            "| {} domains / {} lineages | {:.2} s | {:.1} s ({:.0} s; {} calls) | {:.2} | {:.1} s | {:.0} MB | {:.1} MB | {:.1} MB ({:.1}x store) | {} calls, {:.2} s |",
            self.domains,
            self.lineages,
            self.check.as_secs_f64(),
            self.wall.as_secs_f64(),
            self.floor.as_secs_f64(),
            self.calls,
            self.floor.as_secs_f64() / self.wall.as_secs_f64(),
            self.cpu.as_secs_f64(),
            self.maxrss_kib as f64 / 1024.0,
            mb(self.store_bytes),
            mb(self.write_bytes),
            self.write_bytes as f64 / self.store_bytes.max(1) as f64,
            self.second_calls,
            self.second_wall.as_secs_f64()
        )
    }
}

fn names_of(c: usize) -> Vec<String> {
    (0..PER_CERT)
        .map(|d| format!("shop{d:02}.t{c:04}.saas.example"))
        .collect()
}

async fn measure(lineages: usize, last: bool) -> Result<Row, Boxed> {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let t = Instant::now();
    let mut all = Vec::with_capacity(lineages * PER_CERT);
    for c in 0..lineages {
        let names = names_of(c);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        certbot.add(&format!("t{c:04}"), &issue(&refs));
        all.extend(names);
    }
    eprintln!(
        "{} domains / {lineages} lineages: tree built in {:.1} s",
        all.len(),
        t.elapsed().as_secs_f64()
    );
    let mut cfg = EmulatorConfig::with_domains(all.iter().cloned());
    cfg.latency = LATENCY;
    cfg.writes_per_second = RATE;
    cfg.max_domains_per_call = BATCH;
    let emu = Emulator::start("127.0.0.1:0".parse()?, cfg).await?;
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    harness::emulator_credentials(&env, &emu.endpoint(), &refs)
        .watch(certbot.live())
        .set("aliyun", &format!("max_domains_per_call = {BATCH}"))
        .set("aliyun", &format!("requests_per_second = {RATE}"))
        // The read-backs at the API's documented 100/s (the default, 50/s, would make
        // them, not the writes, the floor).
        .set("aliyun", &format!("read_requests_per_second = {RATE}"))
        .write(&env);

    let check = timed(&env, "check").await?.wall;
    let sync = timed(&env, "sync").await?;
    let calls = writes(&emu);
    let log = emu.log();
    let refused = log
        .iter()
        .filter(|e| e.is_write() && !e.succeeded())
        .count();
    let reads = log.iter().filter(|e| !e.is_write()).count();
    eprintln!("  sync: {calls} write calls ({refused} refused), {reads} read calls");
    let store_bytes = fs::metadata(env.join("state").join(certrotd::state::STATE_FILE))?.len();
    let second = timed(&env, "sync").await?;
    let second_calls = writes(&emu) - calls;
    let daemon_rss_kib = if last {
        Some(daemon_rss(&env).await?)
    } else {
        None
    };
    if last && std::env::var_os("CERTROTD_BENCH_KEEP").is_some() {
        let kept = env.dir.keep();
        eprintln!("kept {}", kept.display());
    }
    emu.shutdown().await;
    let floor_calls = lineages * PER_CERT.div_ceil(BATCH);
    Ok(Row {
        lineages,
        domains: all.len(),
        check,
        wall: sync.wall,
        floor: Duration::from_secs_f64(floor_calls as f64 / f64::from(RATE)),
        cpu: sync.cpu,
        maxrss_kib: sync.maxrss_kib,
        write_bytes: sync.write_bytes,
        store_bytes,
        calls,
        second_calls,
        second_wall: second.wall,
        daemon_rss_kib,
    })
}

fn writes(emu: &Emulator) -> usize {
    emu.log().iter().filter(|e| e.is_write()).count()
}

/// What one run of the binary cost.
struct Run {
    wall: Duration,
    cpu: Duration,
    maxrss_kib: u64,
    write_bytes: u64,
}

/// Runs `certrotd <sub>` to its end; fails unless it exits 0.
async fn timed(env: &Env, sub: &str) -> Result<Run, Boxed> {
    let mut cmd = env.command(&[sub]);
    let out = env.join(format!("{sub}.out"));
    cmd.stdout(Stdio::from(fs::File::create(&out)?))
        .stderr(Stdio::from(fs::File::create(
            env.join(format!("{sub}.err")),
        )?));
    let t = Instant::now();
    let child = cmd.spawn()?;
    let (status, run) = tokio::task::spawn_blocking(move || reap(child.id())).await??;
    let run = Run {
        wall: t.elapsed(),
        ..run
    };
    if status != 0 {
        let err = fs::read_to_string(env.join(format!("{sub}.err")))?;
        return Err(format!("{sub} exited {status}:\n{err}").into());
    }
    eprintln!(
        "  {sub}: {:.2} s wall, {:.2} s CPU",
        run.wall.as_secs_f64(),
        run.cpu.as_secs_f64()
    );
    Ok(run)
}

/// Waits for `pid` to exit, reads its I/O counters while it is a zombie, then reaps it
/// with its rusage. Returns its wait status and the costs (wall left zero).
fn reap(pid: u32) -> Result<(i32, Run), String> {
    let id = libc::id_t::from(pid);
    // SAFETY: waitid on our own child; `info` is a valid out-parameter.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT) } != 0 {
        return Err(format!("waitid: {}", std::io::Error::last_os_error()));
    }
    let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let write_bytes = io
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut status = 0;
    // SAFETY: as above; `usage` is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid_t = libc::pid_t::try_from(pid).map_err(|e| e.to_string())?;
    if unsafe { libc::wait4(pid_t, &mut status, 0, &mut usage) } != pid_t {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()));
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok((
        code,
        Run {
            wall: Duration::ZERO,
            cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
            maxrss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
            write_bytes,
        },
    ))
}

/// `certrotd run` on the converged state: VmRSS once its first pass is done (and 2 s of
/// idling after it).
async fn daemon_rss(env: &Env) -> Result<u64, Boxed> {
    let log = env.join("run.err");
    let mut child: std::process::Child = env
        .command(&["run"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(fs::File::create(&log)?))
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while !fs::read_to_string(&log).is_ok_and(|l| l.contains("pass done")) {
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the daemon's first pass:\n{}", fs::read_to_string(&log)?).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = fs::read_to_string(format!("/proc/{}/status", child.id()))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or("no VmRSS")?;
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let _ = child.wait();
    Ok(rss)
}
