//! Measure `certrotd run` (the real binary, against the in-process emulator):
//! (a) change → deployed latency over 20 lego-style in-place renewals with debounce_ms = 500
//!     (median, max; goal ≤ debounce + 1 s);
//! (b) idle footprint with 1000 certbot lineages watched, after convergence: RSS from
//!     /proc/PID/status (goal ≤ 15 MiB) and CPU time over 10 s from /proc/PID/stat
//!     (goal ≤ 0.01 s);
//! (c) the `systemd-analyze security --offline=yes` exposure of systemd/certrotd.service
//!     (through .ci/check-unit).
//!
//! Run with `cargo bench --bench daemon`; `CERTROTD_BENCH_PART=b` runs only part (b) (any of
//! `a`, `b`, `c`, combinable: `ab`).

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certrotd::cert::{self, Fingerprint};
use certrotd::emulator::{
    DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, Emulator, EmulatorConfig,
};
use certrotd::testca::{Issued, Leaf, TestCa};
use time::OffsetDateTime;

type Boxed = Box<dyn std::error::Error>;

const BIN: &str = env!("CARGO_BIN_EXE_certrotd");
const RENEWALS: usize = 20;
const LINEAGES: usize = 1000;

fn main() -> Result<(), Boxed> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ca = TestCa::new("certrotd daemon bench")?;
    let parts = std::env::var("CERTROTD_BENCH_PART").unwrap_or_else(|_| "abc".to_string());
    if parts.contains('a') {
        rt.block_on(latency(&ca))?;
    }
    if parts.contains('b') {
        rt.block_on(idle(&ca))?;
    }
    if parts.contains('c') {
        unit_exposure();
    }
    Ok(())
}

fn issue(ca: &TestCa, names: &[&str]) -> Result<Issued, Boxed> {
    let now = OffsetDateTime::now_utc();
    let leaf = Leaf::new(
        names,
        now - time::Duration::hours(1),
        now + time::Duration::days(60),
    );
    Ok(ca.issue(&leaf)?)
}

fn fingerprint(i: &Issued) -> Result<Fingerprint, Boxed> {
    Ok(cert::parse(i.fullchain_pem.as_bytes(), i.key_pem.as_bytes())?.fingerprint)
}

fn write_config(
    dir: &Path,
    endpoint: &str,
    watch: &Path,
    domains: &[String],
    debounce: u64,
    extra_aliyun: &str,
) -> Result<PathBuf, Boxed> {
    let secret = dir.join("access-key-secret");
    fs::write(&secret, DEFAULT_ACCESS_KEY_SECRET)?;
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600))?;
    let list: Vec<String> = domains.iter().map(|d| format!("{d:?}")).collect();
    let text = format!(
        "[aliyun]\nendpoint = {endpoint:?}\naccess_key_id = {DEFAULT_ACCESS_KEY_ID:?}\n\
         access_key_secret_file = {:?}\nmax_domains_per_call = 50\n{extra_aliyun}\n[watch]\npaths = [{:?}]\n\
         debounce_ms = {debounce}\nrescan_secs = 3600\n\n[state]\ndir = {:?}\n\n[cdn]\ndomains = [{}]\n",
        secret.display().to_string(),
        watch.display().to_string(),
        dir.join("state").display().to_string(),
        list.join(", ")
    );
    let path = dir.join("certrotd.toml");
    fs::write(&path, text)?;
    Ok(path)
}

fn spawn(config: &Path, log: &Path) -> Result<Child, Boxed> {
    let mut cmd = Command::new(BIN);
    if let Some(raw) = std::env::var_os("CERTROTD_BENCH_HEAPTRACK") {
        cmd.env("LD_PRELOAD", "/usr/lib/heaptrack/libheaptrack_preload.so")
            .env("DUMP_HEAPTRACK_OUTPUT", raw);
    }
    Ok(cmd
        .arg("-c")
        .arg(config)
        .arg("run")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(fs::File::create(log)?))
        .spawn()?)
}

async fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) -> Result<(), Boxed> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn put_in_place(path: &Path, text: &str) -> Result<(), Boxed> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// (a) 20 lego renewals (key then certificate rewritten in place), debounce 500 ms.
async fn latency(ca: &TestCa) -> Result<(), Boxed> {
    let dir = tempfile::tempdir()?;
    let domain = "latency.example.com".to_string();
    let emu = Emulator::start(
        "127.0.0.1:0".parse()?,
        EmulatorConfig::with_domains([domain.clone()]),
    )
    .await?;
    let certs = dir.path().join("certificates");
    fs::create_dir_all(&certs)?;
    let put = |i: &Issued| -> Result<(), Boxed> {
        put_in_place(&certs.join("latency.example.com.key"), &i.key_pem)?;
        put_in_place(&certs.join("latency.example.com.crt"), &i.fullchain_pem)
    };
    let first = issue(ca, &[&domain])?;
    put(&first)?;
    let config = write_config(
        dir.path(),
        &emu.endpoint(),
        &certs,
        std::slice::from_ref(&domain),
        500,
        "",
    )?;
    let mut child = spawn(&config, &dir.path().join("daemon.log"))?;
    let fp = fingerprint(&first)?;
    wait_for("first deployment", 20, || {
        emu.served()
            .get(&domain)
            .is_some_and(|s| s.fingerprint == fp)
    })
    .await?;
    let mut samples = Vec::new();
    for _ in 0..RENEWALS {
        let next = issue(ca, &[&domain])?;
        let fp = fingerprint(&next)?;
        let t0 = Instant::now();
        put(&next)?;
        wait_for("renewal deployed", 20, || {
            emu.served()
                .get(&domain)
                .is_some_and(|s| s.fingerprint == fp)
        })
        .await?;
        samples.push(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    samples.sort();
    let median = samples[samples.len() / 2];
    let max = samples[samples.len() - 1];
    println!(
        "(a) change -> deployed over {RENEWALS} renewals, debounce 500 ms: median {} ms, max {} ms (goal <= 1500 ms)",
        median.as_millis(),
        max.as_millis()
    );
    Ok(())
}

/// (b) 1000 certbot lineages, converged, then 10 s idle.
async fn idle(ca: &TestCa) -> Result<(), Boxed> {
    let dir = tempfile::tempdir()?;
    let base = dir.path().join("letsencrypt");
    let domains: Vec<String> = (0..LINEAGES)
        .map(|i| format!("l{i:04}.idle.example.com"))
        .collect();
    for d in &domains {
        let issued = issue(ca, &[d])?;
        let archive = base.join("archive").join(d);
        let live = base.join("live").join(d);
        fs::create_dir_all(&archive)?;
        fs::create_dir_all(&live)?;
        for (stem, text) in [
            ("cert", &issued.cert_pem),
            ("chain", &issued.chain_pem),
            ("fullchain", &issued.fullchain_pem),
            ("privkey", &issued.key_pem),
        ] {
            fs::write(archive.join(format!("{stem}1.pem")), text)?;
            symlink(
                format!("../../archive/{d}/{stem}1.pem"),
                live.join(format!("{stem}.pem")),
            )?;
        }
    }
    // CERTROTD_BENCH_FAST: writes at 100/s (emulator and config) so that convergence
    // takes ~10 s instead of ~100 s; for quick iterations, not for the reported figure.
    let fast = std::env::var_os("CERTROTD_BENCH_FAST").is_some();
    let mut emu_config = EmulatorConfig::with_domains(domains.clone());
    if fast {
        emu_config.writes_per_second = 100;
    }
    let emu = Emulator::start("127.0.0.1:0".parse()?, emu_config).await?;
    let config = write_config(
        dir.path(),
        &emu.endpoint(),
        &base.join("live"),
        &domains,
        2000,
        if fast {
            "requests_per_second = 100\n"
        } else {
            ""
        },
    )?;
    let log = dir.path().join("daemon.log");
    let mut child = spawn(&config, &log)?;
    let t0 = Instant::now();
    wait_for("convergence", 180, || emu.served().len() == LINEAGES).await?;
    wait_for("the first pass to end", 60, || {
        fs::read_to_string(&log).is_ok_and(|l| l.contains("pass done"))
    })
    .await?;
    println!(
        "    1000 lineages: converged in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = child.id();
    let cpu0 = cpu_ticks(pid)?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu1 = cpu_ticks(pid)?;
    let rss = rss_kib(pid)?;
    if std::env::var_os("CERTROTD_BENCH_DETAIL").is_some() {
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        for l in status
            .lines()
            .filter(|l| l.starts_with("Rss") || l.starts_with("Threads"))
        {
            println!("    {l}");
        }
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("awk '/^[0-9a-f]+-/{{name=$1\" \"$6}} /^Rss:/{{if ($2>200) print $2, \"kB\", name}}' /proc/{pid}/smaps | sort -rn | head -15"))
            .status();
    }
    let hz = 100.0; // USER_HZ on Linux
    println!(
        "(b) idle with {LINEAGES} lineages watched: RSS {:.1} MiB (goal <= 15), CPU over 10 s {:.2} s (goal <= 0.01)",
        rss as f64 / 1024.0,
        (cpu1 - cpu0) as f64 / hz
    );
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64, Boxed> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .ok_or("odd /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let utime: u64 = fields.get(11).ok_or("no utime")?.parse()?;
    let stime: u64 = fields.get(12).ok_or("no stime")?.parse()?;
    Ok(utime + stime)
}

fn rss_kib(pid: u32) -> Result<u64, Boxed> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("odd VmRSS")?.parse()?)
}

/// (c) `.ci/check-unit` (systemd-analyze verify + security --offline=yes).
fn unit_exposure() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match Command::new(root.join(".ci/check-unit")).output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let err = String::from_utf8_lossy(&out.stderr);
            let exposure = text
                .lines()
                .chain(err.lines())
                .filter(|l| l.contains("xposure") || l.contains("skipped") || l.contains("FAIL"))
                .collect::<Vec<_>>();
            println!(
                "(c) .ci/check-unit (exit {:?}): {}",
                out.status.code(),
                exposure.join(" | ")
            );
        }
        Err(e) => println!("(c) cannot run .ci/check-unit: {e}"),
    }
}
