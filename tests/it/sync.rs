//! `certrotd sync`, `status` and `demo`: the real binary against real certbot trees and the
//! in-process emulator over loopback. What was sent is asserted from the emulator's side (its
//! request log and what it serves), what was recorded from the state store.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use certrotd::cert::{self, Fingerprint};
use certrotd::emulator::{self, Emulator, EmulatorConfig, LogEntry};
use certrotd::state::{self, Verification};
use certrotd::testca::{Issued, LeafKey};

use crate::harness::{
    Certbot, Config, Emulate, Env, Output, issue, issue_rsa, issue_with, run_with, write_mode,
};

/// A test's world: a temporary folder with a certbot tree, an emulator, credentials.
struct World {
    env: Env,
    certbot: Certbot,
    emu: Emulator,
    secret: String,
}

impl World {
    /// Starts an emulator knowing `known` (plus whatever `tweak` changes).
    async fn new(known: &[String], tweak: impl FnOnce(&mut EmulatorConfig)) -> World {
        let env = Env::new();
        let certbot = Certbot::new(env.join("letsencrypt"));
        let mut cfg = EmulatorConfig::with_domains(known.iter().cloned());
        cfg.access_key_secret = "Sync-It-Secret-9f3Kq7Zw".to_string();
        tweak(&mut cfg);
        let secret = cfg.access_key_secret.clone();
        let emu = Emulator::start("127.0.0.1:0".parse().expect("addr"), cfg)
            .await
            .expect("emulator starts");
        write_mode(&env.join("ak-secret"), format!("{secret}\n"), 0o600);
        World {
            env,
            certbot,
            emu,
            secret,
        }
    }

    /// A configuration watching the certbot tree, pointed at the emulator with credentials.
    fn config(&self, domains: &[String]) -> Config {
        let secret_file = self.env.join("ak-secret");
        let refs: Vec<&str> = domains.iter().map(String::as_str).collect();
        Config::new()
            .watch(self.certbot.live())
            .domains(&refs)
            .endpoint(&self.emu.endpoint())
            .set(
                "aliyun",
                &format!("access_key_id = {:?}", emulator::DEFAULT_ACCESS_KEY_ID),
            )
            .set(
                "aliyun",
                &format!(
                    "access_key_secret_file = {:?}",
                    secret_file.display().to_string()
                ),
            )
    }

    fn state_dir(&self) -> PathBuf {
        self.env.join("state")
    }

    /// Runs `certrotd -c … <args>` on a blocking thread (the emulator keeps serving).
    async fn run(&self, args: &[&str]) -> Output {
        let cmd = self.env.command(args);
        tokio::task::spawn_blocking(move || run_with(cmd))
            .await
            .expect("runner thread")
    }

    fn writes(&self) -> Vec<LogEntry> {
        self.emu
            .log()
            .into_iter()
            .filter(|e| e.is_write())
            .collect()
    }

    /// The recorded state (panics on a torn or unreadable store).
    fn state(&self) -> state::State {
        assert!(
            self.state_dir().join(state::STATE_FILE).exists(),
            "state.db exists"
        );
        state::load(&self.state_dir()).expect("the state store reads")
    }

    /// Every domain `state.json` records as deployed is served by the emulator with that
    /// fingerprint.
    fn assert_state_within_served(&self) {
        let served = self.emu.served();
        for (domain, s) in &self.state().domains {
            if let Some(d) = &s.deployed {
                assert_eq!(
                    served.get(domain).map(|s| s.fingerprint),
                    Some(d.fingerprint),
                    "{domain} recorded as deployed but the emulator does not serve it"
                );
            }
        }
    }

    /// Panics unless the emulator serves `fp` for each of `domains`.
    fn assert_served(&self, domains: &[String], fp: Fingerprint) {
        let served = self.emu.served();
        for d in domains {
            assert_eq!(served.get(d).map(|s| s.fingerprint), Some(fp), "{d}");
        }
    }
}

fn fingerprint(issued: &Issued) -> Fingerprint {
    parsed(issued).fingerprint
}

fn parsed(issued: &Issued) -> cert::Certificate {
    cert::parse(issued.fullchain_pem.as_bytes(), issued.key_pem.as_bytes()).expect("valid leaf")
}

/// `n` subdomains of `parent`: `d000.<parent>`, `d001.<parent>`, …
fn subdomains(parent: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("d{i:03}.{parent}")).collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn sorted_sizes(writes: &[LogEntry]) -> Vec<usize> {
    let mut sizes: Vec<usize> = writes.iter().map(|e| e.domains.len()).collect();
    sizes.sort_unstable();
    sizes
}

/// The apex, Alibaba's wildcard domain and 119 subdomains: 121 domains of one lineage.
fn domains_121() -> Vec<String> {
    let mut d = strings(&["example.com", ".example.com"]);
    d.extend(subdomains("example.com", 119));
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_lineage_of_121_domains_takes_3_calls_then_none_then_3_with_force() {
    let domains = domains_121();
    let w = World::new(&domains, |_| {}).await;
    let issued = issue(&["example.com", "*.example.com"]);
    w.certbot.add("example.com", &issued);
    w.config(&domains)
        .set("aliyun", "max_domains_per_call = 50")
        .write(&w.env);

    let out = w.run(&["sync"]).await;
    out.expect_status(0)
        .expect_contains("121 domain(s) to update in 3 call(s)");
    let first = w.writes();
    assert_eq!(sorted_sizes(&first), [21, 50, 50], "{first:?}");
    assert!(first.iter().all(LogEntry::succeeded));
    w.assert_served(&domains, fingerprint(&issued));
    w.assert_state_within_served();

    let out = w.run(&["sync"]).await;
    out.expect_status(0)
        .expect_contains("0 domain(s) to update in 0 call(s); 121 up to date");
    assert_eq!(w.writes().len(), 3, "a second sync made a write call");

    let out = w.run(&["sync", "--force"]).await;
    out.expect_status(0)
        .expect_contains("121 domain(s) to update in 3 call(s)");
    let forced = w.writes();
    assert_eq!(sorted_sizes(&forced[3..]), [21, 50, 50]);
    w.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_lineage_and_uncovered_domain_are_never_sent_and_exit_1() {
    let known = strings(&["good.example.com", "old.example.org", "nocert.example.net"]);
    let w = World::new(&known, |_| {}).await;
    w.certbot.add("good", &issue(&["good.example.com"]));
    w.certbot.add(
        "old",
        &issue_with(&["old.example.org"], -100, -10, LeafKey::EcdsaP256),
    );
    w.config(&known).write(&w.env);

    let out = w.run(&["sync"]).await;
    out.expect_status(1);
    let sent: Vec<String> = w.writes().into_iter().flat_map(|e| e.domains).collect();
    assert_eq!(sent, ["good.example.com"]);
    let invalid = out.line_with("invalid lineage");
    assert!(
        invalid.contains("live/old") && invalid.to_lowercase().contains("expired"),
        "{invalid}"
    );
    let old = out.line_with("UNCOVERED old.example.org");
    assert!(old.contains("covered only by invalid") && old.contains("live/old"));
    out.line_with("UNCOVERED nocert.example.net: no valid certificate");
    assert!(!w.emu.served().contains_key("old.example.org"));
    w.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_certificate_beats_a_longer_lived_wildcard() {
    let domains = strings(&["example.com", "www.example.com", "cdn.example.com"]);
    let w = World::new(&domains, |_| {}).await;
    // The wildcard lives longer: only the exact-match rule makes www choose the exact one.
    let wildcard = issue_with(
        &["example.com", "*.example.com"],
        -1,
        80,
        LeafKey::EcdsaP256,
    );
    let exact = issue_with(&["www.example.com"], -1, 30, LeafKey::EcdsaP256);
    w.certbot.add("example.com", &wildcard);
    w.certbot.add("www.example.com", &exact);
    w.config(&domains).write(&w.env);

    w.run(&["sync"]).await.expect_status(0);
    w.assert_served(&strings(&["www.example.com"]), fingerprint(&exact));
    w.assert_served(
        &strings(&["example.com", "cdn.example.com"]),
        fingerprint(&wildcard),
    );
    assert_eq!(w.writes().len(), 2);
    w.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_domain_in_a_batch_fails_alone() {
    let good = subdomains("example.com", 8);
    let mut domains = good.clone();
    domains.push("ghost.example.com".to_string());
    let w = World::new(&good, |_| {}).await;
    let issued = issue(&["*.example.com"]);
    w.certbot.add("example.com", &issued);
    w.config(&domains).write(&w.env);

    let out = w.run(&["sync"]).await;
    out.expect_status(1);
    w.assert_served(&good, fingerprint(&issued));
    assert!(!w.emu.served().contains_key("ghost.example.com"));
    let failed = out.line_with("FAILED ghost.example.com");
    assert!(
        failed.len() > "FAILED ghost.example.com: ".len(),
        "{failed}"
    );
    assert_eq!(out.stdout.matches("FAILED").count(), 1, "{}", out.all());
    let state = w.state();
    assert!(state.domains["ghost.example.com"].last_error.is_some());
    assert!(state.domains["ghost.example.com"].deployed.is_none());
    w.assert_state_within_served();
    w.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_size_refusal_lowers_the_batch_once_for_the_whole_run() {
    let domains = subdomains("example.com", 35);
    let w = World::new(&domains, |c| c.max_domains_per_call = 10).await;
    let issued = issue(&["*.example.com"]);
    w.certbot.add("example.com", &issued);
    w.config(&domains)
        .set("aliyun", "max_domains_per_call = 50")
        .write(&w.env);

    let out = w.run(&["sync"]).await;
    out.expect_status(0)
        .expect_contains("10 domains per call were used");
    w.assert_served(&domains, fingerprint(&issued));
    let writes = w.writes();
    let refusals: Vec<&LogEntry> = writes.iter().filter(|e| !e.succeeded()).collect();
    assert_eq!(refusals.len(), 1, "{writes:?}");
    assert_eq!(
        refusals[0].code.as_deref(),
        Some("InvalidParameter.DomainNameOverLimit")
    );
    assert!(!writes[0].succeeded(), "the refusal came first");
    assert!(writes[1..].iter().all(|e| e.domains.len() <= 10));
    assert_eq!(sorted_sizes(&writes[1..]), [5, 10, 10, 10]);
    w.emu.shutdown().await;
}

/// `certrotd emulate --max-domains-per-call 2` (a subprocess) and a config asking for 10:
/// the refusal names the limit ("at most 2"), so the batch size drops to 2, not to 1 by
/// halving, in one refused call; `sync` advises `max_domains_per_call = 2`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_size_refusal_that_names_the_limit_uses_it() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let domains = subdomains("example.com", 7);
    fs::write(env.join("domains.txt"), domains.join("\n")).expect("domains file");
    let secret = "Limit-Two-Secret-7Hq2";
    write_mode(&env.join("ak-secret"), format!("{secret}\n"), 0o600);
    let dump = env.join("dump.json");
    let emulate = Emulate::start(
        &env.join("domains.txt"),
        &dump,
        secret,
        &["--max-domains-per-call", "2"],
    );
    let issued = issue(&["*.example.com"]);
    certbot.add("example.com", &issued);
    let refs: Vec<&str> = domains.iter().map(String::as_str).collect();
    let secret_file = env.join("ak-secret").display().to_string();
    Config::new()
        .watch(certbot.live())
        .domains(&refs)
        .endpoint(&emulate.endpoint)
        .set(
            "aliyun",
            &format!("access_key_id = {:?}", emulator::DEFAULT_ACCESS_KEY_ID),
        )
        .set(
            "aliyun",
            &format!("access_key_secret_file = {secret_file:?}"),
        )
        .set("aliyun", "max_domains_per_call = 10")
        .write(&env);

    let cmd = env.command(&["sync"]);
    let out = tokio::task::spawn_blocking(move || run_with(cmd))
        .await
        .expect("runner thread");
    emulate.stop();
    out.expect_status(0)
        .expect_contains("2 domains per call were used (set [aliyun] max_domains_per_call = 2)");
    let log = emulator::Dump::read(&dump).expect("the dump").log;
    let writes: Vec<&LogEntry> = log.iter().filter(|e| e.is_write()).collect();
    let refused: Vec<usize> = writes
        .iter()
        .filter(|e| !e.succeeded())
        .map(|e| e.domains.len())
        .collect();
    assert_eq!(refused, [7], "one refusal, of the first call: {writes:?}");
    assert_eq!(
        writes[0].code.as_deref(),
        Some("InvalidParameter.DomainNameOverLimit")
    );
    let sizes: Vec<LogEntry> = writes[1..].iter().map(|e| (*e).clone()).collect();
    assert_eq!(sorted_sizes(&sizes), [1, 2, 2, 2]);
    let fp = fingerprint(&issued);
    let dump = emulator::Dump::read(&dump).expect("the dump");
    for d in &domains {
        assert_eq!(dump.served.get(d).map(|s| s.fingerprint), Some(fp), "{d}");
    }
}

/// Unmounts a tmpfs when dropped.
pub(crate) struct Tmpfs(PathBuf);

impl Tmpfs {
    /// A `size`-byte tmpfs on `dir` (created), or `None` when mounting is not permitted.
    pub(crate) fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(dir).expect("mount point");
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .stderr(Stdio::null())
            .status();
        matches!(status, Ok(s) if s.success()).then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system `dir` is on: writes zeros to `dir/filler` until it is full.
pub(crate) fn fill(dir: &Path) {
    use std::io::Write as _;
    let mut f = fs::File::create(dir.join("filler")).expect("filler");
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

/// A full disk under the state folder (ENOSPC on the save): the pass deploys, cannot record
/// it, says which domains are deployed but not recorded, and exits 74 — not 0, which would
/// hide that the next run pushes everything again. With space again, the next sync
/// records and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_state_folder_fails_the_pass_with_74() {
    let domains = subdomains("example.com", 3);
    let w = World::new(&domains, |_| {}).await;
    let Some(_mount) = Tmpfs::mount(&w.state_dir(), "256k") else {
        eprintln!(
            "SKIPPED a_full_disk_under_the_state_folder_fails_the_pass_with_74: \
             `mount -t tmpfs` is not permitted here (needs root / CAP_SYS_ADMIN)"
        );
        w.emu.shutdown().await;
        return;
    };
    let issued = issue(&["*.example.com"]);
    w.certbot.add("example.com", &issued);
    w.config(&domains).write(&w.env);
    fill(&w.state_dir());

    let out = w.run(&["sync"]).await;
    out.expect_status(74).expect_contains(
        "NOT RECORDED: the state file could not be saved, so it does not hold this pass's outcome; 3 domain(s) deployed but not recorded: ",
    );
    for d in &domains {
        assert!(
            out.line_with("NOT RECORDED").contains(d.as_str()),
            "{}",
            out.all()
        );
    }
    assert!(
        out.all().contains("No space left on device"),
        "{}",
        out.all()
    );
    w.assert_served(&domains, fingerprint(&issued));
    assert!(!w.state_dir().join(state::STATE_FILE).exists());

    fs::remove_file(w.state_dir().join("filler")).expect("free the space");
    let out = w.run(&["sync"]).await;
    out.expect_status(0);
    assert_eq!(w.state().domains.len(), 3);
    w.emu.shutdown().await;
}

/// 400 domains over 4 lineages at batch 10: 40 calls, about 4 s at 10 calls/s, each call
/// answered after 200 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_any_point_then_rerun_converges() {
    let parents = ["a.example", "b.example", "c.example", "d.example"];
    let per: Vec<Vec<String>> = parents.iter().map(|p| subdomains(p, 100)).collect();
    let domains: Vec<String> = per.iter().flatten().cloned().collect();
    // The emulator's own rate limit is generous: a rerun's limiter cannot know the calls
    // its killed predecessor made in the same second.
    let w = World::new(&domains, |c| {
        c.latency = Duration::from_millis(200);
        c.writes_per_second = 100;
    })
    .await;
    let issued: Vec<Issued> = parents
        .iter()
        .map(|p| {
            let i = issue(&[&format!("*.{p}")]);
            w.certbot.add(p, &i);
            i
        })
        .collect();
    w.config(&domains)
        .set("aliyun", "max_domains_per_call = 10")
        .write(&w.env);

    // After each kill: was the run still going, and how many domains had it recorded.
    let mut kills = Vec::new();
    let mut lost = 0;
    // Kill once the emulator has seen `calls` more write calls of this run, plus `extra_ms`:
    // during the canary, in the middle of a burst, between bursts, during read-backs; then
    // at random points (seeded), most of which fall in a state transaction or its fsync.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut random = |below: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % below
    };
    let mut points = vec![(1, 0), (6, 40), (11, 150), (4, 500)];
    for _ in 0..3 {
        points.push((1 + random(4) as usize, random(200)));
    }
    for (calls, extra_ms) in points {
        let before = w.writes().len();
        let mut child = w
            .env
            .command(&["sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sync");
        let started = Instant::now();
        while w.writes().len() < before + calls {
            assert!(started.elapsed() < Duration::from_secs(20), "no progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(extra_ms)).await;
        let running = child.try_wait().expect("poll child").is_none();
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        let (recorded, ids) = if w.state_dir().join(state::STATE_FILE).exists() {
            w.assert_state_within_served();
            let st = w.state();
            let ids: BTreeSet<String> = st
                .domains
                .values()
                .filter_map(|d| Some(d.deployed.as_ref()?.request_id.clone()))
                .collect();
            (st.domains.len(), ids)
        } else {
            (0, BTreeSet::new())
        };
        // Calls the emulator accepted whose answer the killed run never recorded: only
        // these may be pushed again (a recorded call, even one not yet read back, is
        // confirmed by the rerun's read-back instead).
        lost += w
            .writes()
            .iter()
            .skip(before)
            .filter(|e| e.succeeded() && !ids.contains(&e.request_id))
            .count();
        kills.push((running, recorded));
    }
    eprintln!(
        "(still running, domains recorded) after each kill: {kills:?}; unrecorded calls: {lost}"
    );
    assert!(kills.iter().all(|(running, _)| *running), "{kills:?}");
    assert!(
        kills.iter().any(|(_, n)| (1..domains.len()).contains(n)),
        "no kill left a partial state: {kills:?}"
    );

    w.run(&["sync"]).await.expect_status(0);
    for (list, i) in per.iter().zip(&issued) {
        w.assert_served(list, fingerprint(i));
    }
    // The floor: 4 certificates x 100 domains at 10 per call.
    let floor = parents.len() * 10;
    let total = w.writes().len();
    assert!(
        total <= floor + lost,
        "{total} write calls for a floor of {floor} and {lost} calls lost to kills"
    );
    let state = w.state();
    w.assert_state_within_served();
    for d in &domains {
        let rec = state.domains[d].deployed.as_ref().expect("recorded");
        assert_eq!(rec.verification, Verification::Verified, "{d}");
    }
    // No stray temp files of the killed runs remain.
    let names: Vec<String> = fs::read_dir(w.state_dir())
        .expect("state folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    w.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sync_on_the_same_state_is_refused_with_75() {
    let domains = subdomains("example.com", 3);
    let w = World::new(&domains, |c| c.latency = Duration::from_millis(2500)).await;
    w.certbot.add("example.com", &issue(&["*.example.com"]));
    w.config(&domains).write(&w.env);

    let first = w
        .env
        .command(&["sync"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn first sync");
    // The first call reaches the emulator after the lock is taken.
    let started = Instant::now();
    while w.emu.log().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(20), "no call came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = w.run(&["sync"]).await;
    second.expect_status(75);
    let state_dir = w.state_dir().display().to_string();
    assert!(
        second
            .stderr
            .contains(&format!("another certrotd is using {state_dir}")),
        "{}",
        second.all()
    );
    let first = tokio::task::spawn_blocking(move || first.wait_with_output())
        .await
        .expect("join")
        .expect("first sync output");
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    w.emu.shutdown().await;
}

/// Non-empty lines of a PEM body, plus their form-urlencoded form (as in a request body).
fn key_fragments(pem: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
    {
        out.push(line.to_string());
        out.push(form_urlencoded::byte_serialize(line.as_bytes()).collect());
    }
    out
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            all_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_text_or_secret_in_state_or_trace_output() {
    let domains = strings(&["rsa.example.com", "ec.example.com", "ghost.example.com"]);
    // ghost is unknown to the emulator: an error path is logged too.
    let w = World::new(&domains[..2], |_| {}).await;
    let rsa = issue_rsa(&["rsa.example.com", "ghost.example.com"]);
    let ec = issue(&["ec.example.com"]);
    w.certbot.add("rsa", &rsa);
    w.certbot.add("ec", &ec);
    w.config(&domains).write(&w.env);

    let mut cmd = w.env.command(&["sync"]);
    cmd.env("RUST_LOG", "trace");
    let out = tokio::task::spawn_blocking(move || run_with(cmd))
        .await
        .expect("join");
    out.expect_status(1)
        .expect_contains("FAILED ghost.example.com");
    w.assert_served(&strings(&["rsa.example.com"]), fingerprint(&rsa));
    w.assert_served(&strings(&["ec.example.com"]), fingerprint(&ec));
    assert!(out.stderr.contains("TRACE"), "trace logging is on");

    let mut secrets = vec![w.secret.clone(), "PRIVATE KEY-----".to_string()];
    for issued in [&rsa, &ec] {
        // certbot's PKCS#8, and the PKCS#1 / SEC1 form certrotd converts it to.
        secrets.extend(key_fragments(&issued.key_pem));
        secrets.extend(key_fragments(parsed(issued).key.expose_upload_pem()));
    }
    assert!(
        key_fragments(&rsa.key_pem).len() > 40,
        "fragments are the key lines"
    );
    let mut files = Vec::new();
    all_files(&w.state_dir(), &mut files);
    assert!(files.iter().any(|f| f.ends_with(state::STATE_FILE)));
    let texts: Vec<(&PathBuf, String)> = files
        .iter()
        .map(|f| {
            (
                f,
                String::from_utf8_lossy(&fs::read(f).expect("read")).into_owned(),
            )
        })
        .collect();
    let output = out.all();
    for s in &secrets {
        assert!(!output.contains(s.as_str()), "output leaks {s:?}");
        for (f, text) in &texts {
            assert!(!text.contains(s.as_str()), "{} leaks {s:?}", f.display());
        }
    }
    w.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_plan_without_credentials_or_calls() {
    let mut domains = subdomains("example.com", 12);
    domains.push("shop.example.org".to_string());
    domains.push("nocert.example.net".to_string());
    let w = World::new(&domains, |_| {}).await;
    w.certbot.add("example.com", &issue(&["*.example.com"]));
    w.certbot.add("shop", &issue(&["shop.example.org"]));
    // No access_key_id, no secret file: the dry run needs none.
    Config::new()
        .watch(w.certbot.live())
        .domains(&domains.iter().map(String::as_str).collect::<Vec<_>>())
        .endpoint(&w.emu.endpoint())
        .set("aliyun", "max_domains_per_call = 5")
        .write(&w.env);

    let out = w.run(&["sync", "--dry-run"]).await;
    out.expect_status(1)
        .expect_contains("dry run: nothing is sent");
    let wildcard = out.line_with("live/example.com)");
    assert!(wildcard.contains("12 domain(s) in 3 call(s)"), "{wildcard}");
    let shop = out.line_with("live/shop)");
    assert!(shop.contains("1 domain(s) in 1 call(s)"), "{shop}");
    out.expect_contains("d000.example.com, d001.example.com")
        .expect_contains("no valid certificate covers:")
        .expect_contains("UNCOVERED nocert.example.net");
    // The plan once, in one wording, and no "pushed:" line for a run that pushes nothing.
    assert_eq!(out.stdout.matches("plan: ").count(), 1, "{}", out.stdout);
    assert!(!out.stdout.contains("pushed:"), "{}", out.stdout);
    assert!(w.emu.log().is_empty(), "the dry run called the API");
    assert!(!w.state_dir().join(state::STATE_FILE).exists());
    w.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_what_sync_recorded_even_while_locked() {
    let domains = strings(&["www.example.com", "api.example.com", "never.example.net"]);
    let w = World::new(&domains, |_| {}).await;
    let issued = issue_with(&["*.example.com"], -1, 40, LeafKey::EcdsaP256);
    w.certbot.add("example.com", &issued);
    w.config(&domains).write(&w.env);
    w.run(&["sync"]).await.expect_status(1);

    // Another holder of the lock (as a running daemon would be) does not stop `status`.
    let _lock = state::StateStore::open(&w.state_dir()).expect("lock");
    let fp = fingerprint(&issued);
    let cert_name = w.state().domains["www.example.com"]
        .deployed
        .as_ref()
        .expect("deployed")
        .cert_name
        .clone();
    // never.example.net is managed but never deployed: status exits 1 for it.
    let out = w.run(&["status"]).await;
    out.expect_status(1);
    for d in ["www.example.com", "api.example.com"] {
        let row = out.row(d);
        for cell in [cert_name.as_str(), &fp.short(), "yes"] {
            assert!(row.contains(cell), "{cell:?} not in {row:?}");
        }
        assert!(
            row.contains("VALID: 39 days") || row.contains("VALID: 38 days"),
            "{row}"
        );
    }
    assert!(out.row("never.example.net").contains("never deployed"));

    let out = w.run(&["status", "--json"]).await;
    out.expect_status(1);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let rows = json["domains"].as_array().expect("domains array");
    let by_domain: BTreeMap<&str, &serde_json::Value> = rows
        .iter()
        .map(|r| (r["domain"].as_str().expect("domain"), r))
        .collect();
    assert_eq!(by_domain.len(), 3);
    let www = by_domain["www.example.com"];
    assert_eq!(www["deployed"]["fingerprint"], fp.hex());
    assert_eq!(www["deployed"]["cert_name"], cert_name.as_str());
    assert_eq!(www["deployed"]["verification"], "verified");
    assert!(matches!(www["days_left"].as_i64(), Some(38..=39)), "{www}");
    assert_eq!(www["expired"], false);
    assert!(by_domain["never.example.net"]["deployed"].is_null());
    w.emu.shutdown().await;
}

#[test]
fn bad_config_is_78_for_sync_and_status() {
    let env = Env::new();
    env.write_config("[aliyun]\nno_such_key = 1\n");
    for args in [&["sync"][..], &["sync", "--dry-run"], &["status"]] {
        env.run(args)
            .expect_status(78)
            .expect_contains("no_such_key");
    }
}

#[test]
fn missing_credentials_is_a_clear_error_and_exit_1() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    certbot.add("example.com", &issue(&["example.com"]));
    // A loopback endpoint nobody listens on: no call may be attempted anyway.
    Config::new()
        .watch(certbot.live())
        .domains(&["example.com"])
        .endpoint("http://127.0.0.1:9")
        .write(&env);
    let out = env.run(&["sync"]);
    out.expect_status(1);
    out.expect_contains("no Alibaba Cloud credentials found")
        .expect_contains("access_key_secret_file");
}

#[test]
fn demo_runs_end_to_end_and_cleans_up() {
    let env = Env::new();
    let out = env.run(&["demo"]);
    out.expect_status(0);
    for step in ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]", "demo complete"] {
        out.expect_contains(step);
    }
    // The emulator answers the batch call as retired: the first sync falls back by itself.
    out.expect_contains("InvalidAction.NotFound")
        .expect_contains("note: the API answered that cdn-batch's call does not exist");
    let cleaned = out.line_with("cleaned up ");
    let dir = cleaned.trim().trim_start_matches("cleaned up ").trim();
    assert!(dir.contains("certrotd-demo-"), "{cleaned}");
    assert!(!Path::new(dir).exists(), "{dir} is left behind");
}

/// `status --json` while a `sync` records batch after batch into the store (the writer
/// holds the lock; readers open the store read-only): every run answers, with a count of
/// deployed domains that only grows, and some answer falls in the middle of the pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_the_store_while_a_sync_writes_it() {
    let parents = ["a.example", "b.example", "c.example"];
    let domains: Vec<String> = parents.iter().flat_map(|p| subdomains(p, 60)).collect();
    let w = World::new(&domains, |c| {
        c.latency = Duration::from_millis(150);
        c.writes_per_second = 100;
    })
    .await;
    for p in parents {
        w.certbot.add(p, &issue(&[&format!("*.{p}")]));
    }
    w.config(&domains)
        .set("aliyun", "max_domains_per_call = 10")
        .write(&w.env);
    let mut sync = w
        .env
        .command(&["sync"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sync");
    let mut seen = Vec::new();
    loop {
        let done = sync.try_wait().expect("poll sync").is_some();
        let out = w.run(&["status", "--json"]).await;
        let report: serde_json::Value =
            serde_json::from_str(&out.stdout).expect("status --json is JSON");
        let rows = report["domains"].as_array().expect("a list of domains");
        assert_eq!(rows.len(), domains.len(), "every managed domain has a row");
        let deployed = rows.iter().filter(|r| !r["deployed"].is_null()).count();
        // `status` exits 1 while a domain is not up to date (not yet deployed or read back).
        let all_fine = rows.iter().all(|r| r["condition"] == "up-to-date");
        out.expect_status(if all_fine { 0 } else { 1 });
        seen.push(deployed);
        if done {
            break;
        }
    }
    assert!(seen.windows(2).all(|p| p[0] <= p[1]), "went back: {seen:?}");
    assert_eq!(seen.last(), Some(&domains.len()), "{seen:?}");
    assert!(
        seen.iter().any(|n| (1..domains.len()).contains(n)),
        "no status run saw the pass half done: {seen:?}"
    );
    w.emu.shutdown().await;
}

/// Upgrading from the JSON state file: a `state.json` of the current format (version 1) in
/// the state folder is what `status` shows, and the next `sync` imports it — keeping it as
/// `state.json.imported` — and pushes nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_state_json_is_imported_by_the_next_sync_and_nothing_is_pushed_again() {
    let domains = subdomains("example.com", 12);
    let w = World::new(&domains, |_| {}).await;
    w.certbot.add("example.com", &issue(&["*.example.com"]));
    w.config(&domains).write(&w.env);
    w.run(&["sync"]).await.expect_status(0);
    let recorded = w.state();
    let status = w.run(&["status", "--json"]).await;
    status.expect_status(0);

    // The folder as the previous release left it: only state.json.
    // Its top-level fields (`last_pass`, …) as the store has them, and the domains.
    let mut json = serde_json::to_value(&recorded).expect("encode");
    json["domains"] = serde_json::to_value(&recorded.domains).expect("encode");
    let text = serde_json::to_string_pretty(&json).expect("encode") + "\n";
    fs::remove_file(w.state_dir().join(state::STATE_FILE)).expect("remove state.db");
    let legacy = w.state_dir().join(state::LEGACY_FILE);
    fs::write(&legacy, &text).expect("write state.json");
    // The same domains (the last pass is not in a state.json of the previous release).
    let rows = |stdout: &str| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(stdout).expect("status JSON")["domains"].clone()
    };
    let before_import = w.run(&["status", "--json"]).await;
    before_import.expect_status(0);
    assert_eq!(
        rows(&before_import.stdout),
        rows(&status.stdout),
        "status reads state.json before the import"
    );

    let writes = w.writes().len();
    let out = w.run(&["sync"]).await;
    out.expect_status(0);
    assert_eq!(
        w.writes().len(),
        writes,
        "nothing pushed again: {}",
        out.all()
    );
    assert!(!legacy.exists());
    assert_eq!(
        fs::read_to_string(w.state_dir().join(state::IMPORTED_FILE)).expect("kept"),
        text
    );
    // The same domains; only `last_pass` moved (the sync ran a pass).
    assert_eq!(w.state().domains, recorded.domains);
    let domains_of = |stdout: &str| {
        let report: serde_json::Value = serde_json::from_str(stdout).expect("JSON");
        report["domains"].clone()
    };
    assert_eq!(
        domains_of(&w.run(&["status", "--json"]).await.stdout),
        domains_of(&status.stdout)
    );
    w.emu.shutdown().await;
}
