//! `config/certbot-deploy-hook.sh`, run by `sh` with stub `systemctl` and `certrotd` commands
//! on a PATH that holds nothing else (plus the few tools the hook uses).

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const HOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/certbot-deploy-hook.sh");

struct Env {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    log: PathBuf,
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
    Env {
        _dir: dir,
        bin,
        log,
    }
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
        .env("CALLS", &env.log);
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
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not running"));
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
