//! Scan + validate 10,000 certbot lineages (half RSA-2048, half ECDSA P-256), cold (empty
//! cache) and warm (second pass over the unchanged tree). Prints the figures.
//!
//! Goal on a 2-core machine: cold ≤ 2 s, warm ≤ 0.2 s.
//!
//! The tree is generated once under `target/bench-scan-tree/` (reused while complete):
//! RSA leaves reuse the two fixture keys (rcgen's ring backend cannot generate RSA keys),
//! each with its own certificate; P-256 leaves get fresh keys. Validity 2025–2099 so that
//! the cached tree stays valid.
//!
//! Run: `cargo bench --bench scan` (LINEAGES=N to change the count).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use certrotd::source::{Lineage, ScanStats, Scanner};
use certrotd::testca::{Leaf, LeafKey, TestCa};
use time::OffsetDateTime;
use time::macros::datetime;

const RSA_A: &str = include_str!("../tests/fixtures/rsa-2048-a.pkcs8.pem");
const RSA_B: &str = include_str!("../tests/fixtures/rsa-2048-b.pkcs8.pem");

fn main() {
    let count: usize = std::env::var("LINEAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let base = target_dir().join(format!("bench-scan-tree-{count}"));
    let t = Instant::now();
    let generated = ensure_tree(&base, count);
    if generated {
        println!(
            "generated {count} lineages in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let live = vec![base.join("live")];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("scan + validate {count} certbot lineages (RSA-2048 / P-256), {cores} cores");

    let mut scanner = Scanner::new();
    let (cold, cpu, valid) = measured(|| validate(scanner.scan(&live)));
    report("cold", cold, cpu, valid, scanner.last_scan(), 2.0);
    let mut warm_best = Duration::MAX;
    for _ in 0..5 {
        let (warm, cpu, valid) = measured(|| validate(scanner.scan(&live)));
        report("warm", warm, cpu, valid, scanner.last_scan(), 0.2);
        warm_best = warm_best.min(warm);
    }
    parse_split(&base, count.min(1000));
    println!(
        "summary: cold {:.3} s (goal ≤ 2 s), warm best {:.3} s (goal ≤ 0.2 s)",
        cold.as_secs_f64(),
        warm_best.as_secs_f64()
    );
}

/// Where cold time goes: `cert::parse` alone (bytes in memory, one thread) per key type.
fn parse_split(base: &Path, n: usize) {
    let mut rsa = Vec::new();
    let mut ec = Vec::new();
    for i in 0..n {
        let name = format!("site{i:05}.example.com");
        let dir = base.join("live").join(&name);
        let read = |f: &str| fs::read(dir.join(f)).expect("read fixture");
        let pair = (read("fullchain.pem"), read("privkey.pem"));
        if i % 2 == 0 {
            rsa.push(pair)
        } else {
            ec.push(pair)
        }
    }
    for (label, pairs) in [("RSA-2048", &rsa), ("P-256", &ec)] {
        let (took, ok) = timed(|| {
            pairs
                .iter()
                .filter(|(c, k)| certrotd::cert::parse(c, k).is_ok())
                .count()
        });
        let each = took.as_secs_f64() * 1e6 / pairs.len().max(1) as f64;
        println!(
            "parse only, {label}: {each:.0} µs per lineage ({ok} of {} parsed, 1 thread)",
            pairs.len()
        );
    }
}

/// Applies `now` to every lineage (what `check`, `sync` and the daemon do); counts valid.
fn validate(lineages: Vec<Lineage>) -> (usize, usize) {
    let now = OffsetDateTime::now_utc();
    let valid = lineages.iter().filter(|l| l.valid_at(now).is_ok()).count();
    (lineages.len(), valid)
}

fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t = Instant::now();
    let out = f();
    (t.elapsed(), out)
}

/// CPU time (user + system) of the whole process so far, from /proc/self/stat (the
/// machine is shared, so wall time alone says little). `None` where unavailable.
fn cpu_secs() -> Option<f64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12th and 13th after ')'.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// Wall time, CPU seconds used, and the result.
fn measured<T>(f: impl FnOnce() -> T) -> (Duration, Option<f64>, T) {
    let cpu0 = cpu_secs();
    let (took, out) = timed(f);
    let cpu = cpu_secs().zip(cpu0).map(|(b, a)| b - a);
    (took, cpu, out)
}

fn report(
    label: &str,
    took: Duration,
    cpu: Option<f64>,
    (found, valid): (usize, usize),
    s: ScanStats,
    goal: f64,
) {
    let secs = took.as_secs_f64();
    let verdict = if secs <= goal { "ok" } else { "OVER GOAL" };
    let cpu = cpu.map_or("?".to_string(), |c| format!("{c:.2}"));
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?");
    println!(
        "{label}: {secs:.3} s wall ({verdict}, goal {goal} s), {cpu} s CPU, load {load}: \
         {found} lineages, {valid} valid; \
         parsed {}, cache hits {}, folders listed {}, files read {}, bytes read {}",
        s.parsed, s.cache_hits, s.folders_listed, s.files_read, s.bytes_read
    );
    assert_eq!(found, valid, "every generated lineage must be valid");
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Generates the tree unless a complete one is there; `true` when generated.
fn ensure_tree(base: &Path, count: usize) -> bool {
    let marker = base.join("complete");
    if marker.exists() {
        return false;
    }
    let _ = fs::remove_dir_all(base);
    let ca = TestCa::new("certrotd bench").expect("bench CA");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for t in 0..threads {
            let ca = &ca;
            s.spawn(move || {
                for i in (t..count).step_by(threads) {
                    lineage(base, ca, i);
                }
            });
        }
    });
    fs::write(marker, "").expect("marker");
    true
}

/// Lineage `i`: even → RSA-2048 (fixture key a or b), odd → P-256.
fn lineage(base: &Path, ca: &TestCa, i: usize) {
    let name = format!("site{i:05}.example.com");
    let key = match i % 4 {
        0 => LeafKey::RsaPkcs8Pem(RSA_A.to_string()),
        2 => LeafKey::RsaPkcs8Pem(RSA_B.to_string()),
        _ => LeafKey::EcdsaP256,
    };
    let leaf = Leaf::new(
        &[name.as_str(), &format!("www.{name}")],
        datetime!(2025-01-01 0:00 UTC),
        datetime!(2099-01-01 0:00 UTC),
    )
    .with_key(key);
    let issued = ca.issue(&leaf).expect("issue");
    let archive = base.join("archive").join(&name);
    let live = base.join("live").join(&name);
    fs::create_dir_all(&archive).expect("archive");
    fs::create_dir_all(&live).expect("live");
    for (file, text) in [
        ("cert", &issued.cert_pem),
        ("chain", &issued.chain_pem),
        ("fullchain", &issued.fullchain_pem),
        ("privkey", &issued.key_pem),
    ] {
        fs::write(archive.join(format!("{file}1.pem")), text).expect("write");
        symlink(
            format!("../../archive/{name}/{file}1.pem"),
            live.join(format!("{file}.pem")),
        )
        .expect("link");
    }
}
