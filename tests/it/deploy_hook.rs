//! `config/certbot-deploy-hook.sh`, run by `sh` with stub `systemctl` and `certrotd` commands
//! on a PATH that holds nothing else (plus the few tools the hook uses), and what it relies
//! on next to a running daemon outside systemd: `certrotd sync` handing its work to the
//! `certrotd run` that holds the state lock (the real binary against the emulator).

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const HOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/certbot-deploy-hook.sh");

struct Env {
    dir: tempfile::TempDir,
    bin: PathBuf,
    log: PathBuf,
}

impl Env {
    /// Makes the folder whose presence tells the hook that systemd is running.
    fn boot_systemd(&self) {
        fs::create_dir(self.systemd_dir()).expect("systemd dir");
    }

    fn systemd_dir(&self) -> PathBuf {
        self.dir.path().join("run-systemd-system")
    }
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).expect("bin");
    for tool in ["getent", "chgrp", "chmod"] {
        let real = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} not found in /usr/bin or /bin"));
        symlink(real, bin.join(tool)).expect("link tool");
    }
    let log = dir.path().join("calls.log");
    Env { dir, bin, log }
}

fn stub(env: &Env, name: &str, body: &str) {
    let path = env.bin.join(name);
    let script = format!("#!/bin/sh\necho \"{name} $*\" >> \"$CALLS\"\n{body}\n");
    fs::write(&path, script).expect("stub");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod stub");
}

fn systemctl(env: &Env, active: bool) {
    let rc = if active { 0 } else { 3 };
    stub(
        env,
        "systemctl",
        &format!("case \"$1\" in is-active) exit {rc};; *) exit 0;; esac"),
    );
}

fn run(env: &Env, vars: &[(&str, &str)]) -> (Output, Vec<String>) {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg(HOOK)
        .env_clear()
        .env("PATH", &env.bin)
        .env("CALLS", &env.log)
        .env("CERTROTD_SYSTEMD_DIR", env.systemd_dir());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run hook");
    let calls = fs::read_to_string(&env.log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    (out, calls)
}

#[test]
fn a_running_service_is_reloaded_and_sync_is_not_run() {
    let env = env();
    env.boot_systemd();
    systemctl(&env, true);
    stub(&env, "certrotd", "exit 0");
    let (out, calls) = run(&env, &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        calls,
        [
            "systemctl is-active --quiet certrotd.service",
            "systemctl reload certrotd.service"
        ]
    );
}

#[test]
fn without_a_running_service_it_runs_one_sync_and_passes_its_exit_code() {
    let env = env();
    env.boot_systemd();
    systemctl(&env, false);
    stub(&env, "certrotd", "exit 1");
    let (out, calls) = run(&env, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "sync's exit code reaches certbot"
    );
    assert_eq!(
        calls,
        [
            "systemctl is-active --quiet certrotd.service",
            "certrotd sync"
        ]
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "the hook adds nothing to stderr"
    );
}

#[test]
fn without_systemd_at_all_it_runs_sync() {
    let env = env();
    stub(&env, "certrotd", "exit 0");
    let (out, calls) = run(&env, &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(calls, ["certrotd sync"]);
}

#[test]
fn with_systemctl_but_without_systemd_running_it_asks_no_systemctl_and_runs_sync_quietly() {
    let env = env();
    // What systemctl does in a container or on a host booted without systemd.
    stub(
        &env,
        "systemctl",
        "echo 'System has not been booted with systemd as init system (PID 1). Can'\''t operate.' >&2; exit 1",
    );
    stub(&env, "certrotd", "echo 'certrotd: handed over'");
    let (out, calls) = run(&env, &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(calls, ["certrotd sync"]);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "certrotd: handed over\n"
    );
}

#[test]
fn with_systemd_running_but_no_active_unit_errors_of_systemctl_stay_quiet() {
    let env = env();
    env.boot_systemd();
    stub(
        &env,
        "systemctl",
        "echo 'Failed to connect to bus: No such file or directory' >&2; exit 1",
    );
    stub(&env, "certrotd", "exit 0");
    let (out, calls) = run(&env, &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        calls,
        [
            "systemctl is-active --quiet certrotd.service",
            "certrotd sync"
        ]
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn without_service_or_binary_it_fails_and_says_what_to_set() {
    let env = env();
    let (out, calls) = run(&env, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(calls.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CERTROTD=/path/to/certrotd"), "{err}");
}

#[test]
fn the_key_of_the_lineage_gets_group_read_access() {
    let env = env();
    stub(&env, "certrotd", "exit 0");
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("archive/example.com");
    let live = dir.path().join("live/example.com");
    fs::create_dir_all(&archive).expect("archive");
    fs::create_dir_all(&live).expect("live");
    let key = archive.join("privkey1.pem");
    fs::write(&key, "key").expect("key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("0600");
    symlink(
        "../../archive/example.com/privkey1.pem",
        live.join("privkey.pem"),
    )
    .expect("link");
    let group = Command::new("id").arg("-gn").output().expect("id -gn");
    let group = String::from_utf8_lossy(&group.stdout).trim().to_string();

    let lineage = live.to_string_lossy().into_owned();
    let (out, _) = run(
        &env,
        &[
            ("RENEWED_LINEAGE", lineage.as_str()),
            ("CERTROTD_KEY_GROUP", group.as_str()),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let mode = fs::metadata(&key).expect("stat").permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o640,
        "the key in archive/ (the link's target) is group-readable"
    );

    // Disabled with an empty group: the mode stays as it is.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("0600");
    let (out, _) = run(
        &env,
        &[
            ("RENEWED_LINEAGE", lineage.as_str()),
            ("CERTROTD_KEY_GROUP", ""),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let mode = fs::metadata(&key).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

// ---- `certrotd sync` next to a running `certrotd run` (the real binary, the emulator) ----

use std::process::{Child, Stdio};

use certrotd::emulator::Emulator;
use certrotd::testca::Issued;

use crate::harness::{
    self, RunningDaemon, emulator_config, emulator_serves, fingerprint_of, issue, wait_for,
};

async fn emulator(domains: &[&str]) -> Emulator {
    harness::start_emulator(domains).await
}

fn fp(issued: &Issued) -> certrotd::cert::Fingerprint {
    fingerprint_of(issued.fullchain_pem.as_bytes(), issued.key_pem.as_bytes())
}

fn writes(emu: &Emulator) -> usize {
    emu.log().iter().filter(|e| e.is_write()).count()
}

/// The lineage `live/a` as links to links: `live/a/*.pem → ../../mid/a/*.pem →
/// ../../store/a/*.pem`. The daemon watches `live/` and the folder its links point into
/// (`mid/a`), not `store/`: a rewrite in `store/` is seen by a pass, never by the watcher.
struct Hidden {
    store: PathBuf,
}

impl Hidden {
    fn new(env: &harness::Env, issued: &Issued) -> Hidden {
        let hidden = Hidden {
            store: env.join("store/a"),
        };
        hidden.write(issued);
        for (dir, target) in [("mid/a", "store/a"), ("live/a", "mid/a")] {
            fs::create_dir_all(env.join(dir)).expect("folder");
            for file in ["fullchain.pem", "privkey.pem"] {
                symlink(format!("../../{target}/{file}"), env.join(dir).join(file)).expect("link");
            }
        }
        hidden
    }

    /// A renewal the watcher does not see.
    fn write(&self, issued: &Issued) {
        harness::write(&self.store.join("fullchain.pem"), &issued.fullchain_pem);
        harness::write_mode(&self.store.join("privkey.pem"), &issued.key_pem, 0o600);
    }
}

/// A daemon on `live/` against `emu`, after its first pass deployed `first`.
async fn daemon_after_first_pass(
    env: &harness::Env,
    emu: &Emulator,
    first: &Issued,
) -> RunningDaemon {
    emulator_config(env, &emu.endpoint(), &["a.example.com"])
        .watch(env.join("live"))
        .write(env);
    let daemon = RunningDaemon::start(env);
    wait_for(
        "the daemon's first pass",
        20,
        || emulator_serves(emu, "a.example.com", fp(first)) && daemon.log().contains("pass done"),
        || daemon.log(),
    )
    .await;
    daemon
}

fn passes_started(daemon: &RunningDaemon) -> usize {
    daemon.log().matches("pass starts").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_hands_its_work_to_the_running_daemon_and_exits_0() {
    let env = harness::Env::new();
    let emu = emulator(&["a.example.com"]).await;
    let first = issue(&["a.example.com"]);
    let hidden = Hidden::new(&env, &first);
    let mut daemon = daemon_after_first_pass(&env, &emu, &first).await;
    let before = (passes_started(&daemon), writes(&emu));

    let renewed = issue(&["a.example.com"]);
    hidden.write(&renewed);
    let out = env.run(&["sync"]);
    out.expect_status(0);
    assert_eq!(
        out.stdout,
        format!(
            "certrotd: handed over to the certrotd daemon (PID {}) that holds {}: it runs a \
             pass now\n",
            daemon.pid(),
            env.join("state").display()
        ),
        "{}",
        out.all()
    );
    assert_eq!(out.stderr, "", "nothing on stderr");
    wait_for(
        "the handed-over pass to deploy the renewal",
        20,
        || emulator_serves(&emu, "a.example.com", fp(&renewed)),
        || daemon.log(),
    )
    .await;
    assert!(daemon.running(), "SIGUSR1 did not stop the daemon");
    assert_eq!(passes_started(&daemon), before.0 + 1, "{}", daemon.log());
    assert_eq!(writes(&emu), before.1 + 1, "one call for the renewal");
    assert!(
        !daemon.log().contains("configuration reloaded"),
        "a pass, not a reload:\n{}",
        daemon.log()
    );

    // A forced push is not what a daemon's pass does: not handed over.
    let out = env.run(&["sync", "--force"]);
    out.expect_status(75);
    out.expect_contains("--force is not handed to a running daemon");
    assert_eq!(out.stdout, "", "{}", out.all());
    assert!(daemon.running());
    assert_eq!(passes_started(&daemon), before.0 + 1, "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_hook_without_systemd_is_quiet_and_exits_0_while_a_daemon_runs() {
    let env = harness::Env::new();
    let emu = emulator(&["a.example.com"]).await;
    let first = issue(&["a.example.com"]);
    let hidden = Hidden::new(&env, &first);
    let daemon = daemon_after_first_pass(&env, &emu, &first).await;

    let renewed = issue(&["a.example.com"]);
    hidden.write(&renewed);
    let hook = self::env();
    // systemctl is installed, but systemd is not running (a container, a sidecar).
    stub(
        &hook,
        "systemctl",
        "echo 'System has not been booted with systemd' >&2; exit 1",
    );
    let config = env.join("certrotd.toml").display().to_string();
    let lineage = env.join("live/a").display().to_string();
    let (out, calls) = run(
        &hook,
        &[
            ("CERTROTD", harness::BIN),
            ("CERTROTD_CONFIG", config.as_str()),
            ("RENEWED_LINEAGE", lineage.as_str()),
            ("CERTROTD_KEY_GROUP", ""),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("handed over to the certrotd daemon"),
        "{out:?}"
    );
    assert!(calls.is_empty(), "systemctl was asked: {calls:?}");
    wait_for(
        "the renewal deployed",
        20,
        || emulator_serves(&emu, "a.example.com", fp(&renewed)),
        || daemon.log(),
    )
    .await;
}

/// Holds an exclusive `flock` on `path` in another process (util-linux `flock`), as a
/// program that is not certrotd would; killed when dropped.
struct ForeignHolder(Child);

impl ForeignHolder {
    fn lock(path: &Path) -> ForeignHolder {
        let child = Command::new("flock")
            .arg("--exclusive")
            .arg(path)
            .args(["sleep", "120"])
            .stdin(Stdio::null())
            .spawn()
            .expect("run flock (util-linux)");
        let holder = ForeignHolder(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !is_locked(path) {
            assert!(std::time::Instant::now() < deadline, "flock did not lock");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        holder
    }

    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for ForeignHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn is_locked(path: &Path) -> bool {
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    matches!(file.try_lock(), Err(fs::TryLockError::WouldBlock))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_by_a_program_that_is_not_certrotd_is_not_signalled_and_sync_exits_75() {
    let env = harness::Env::new();
    let emu = emulator(&["a.example.com"]).await;
    Hidden::new(&env, &issue(&["a.example.com"]));
    emulator_config(&env, &emu.endpoint(), &["a.example.com"])
        .watch(env.join("live"))
        .write(&env);
    let lock = env.join("state").join(certrotd::state::LOCK_FILE);
    fs::create_dir_all(env.join("state")).expect("state dir");
    let mut holder = ForeignHolder::lock(&lock);
    // The lock file names the holder as if it were a daemon (SIGUSR1 would kill `flock`).
    fs::write(&lock, format!("{} run\n", holder.0.id())).expect("record");

    let out = env.run(&["sync"]);
    out.expect_status(75);
    out.expect_contains(&format!(
        "the lock is held by PID {} (`flock`), which is not certrotd; nothing was signalled",
        holder.0.id()
    ));
    out.expect_contains("another certrotd is using");
    assert_eq!(out.stdout, "", "{}", out.all());
    assert!(holder.alive(), "the foreign holder was signalled");
    assert_eq!(writes(&emu), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lock_record_naming_a_live_foreign_process_is_ignored_when_the_lock_is_free() {
    let env = harness::Env::new();
    let emu = emulator(&["a.example.com"]).await;
    let issued = issue(&["a.example.com"]);
    Hidden::new(&env, &issued);
    emulator_config(&env, &emu.endpoint(), &["a.example.com"])
        .watch(env.join("live"))
        .write(&env);
    // Killed when dropped.
    let mut sleeper = ForeignHolder(Command::new("sleep").arg("120").spawn().expect("run sleep"));
    let lock = env.join("state").join(certrotd::state::LOCK_FILE);
    harness::write(&lock, format!("{} run\n", sleeper.0.id()));

    let out = env.run(&["sync"]);
    out.expect_status(0);
    assert!(!out.stdout.contains("handed over"), "{}", out.all());
    assert!(emulator_serves(&emu, "a.example.com", fp(&issued)));
    assert!(
        sleeper.alive(),
        "the process the stale record names was signalled"
    );
    let record = fs::read_to_string(&lock).expect("lock file");
    let (pid, role) = record.split_once(' ').expect("a record");
    assert_eq!(
        role, "sync\n",
        "the record names the sync that took the lock"
    );
    assert_ne!(pid, sleeper.0.id().to_string());
}
