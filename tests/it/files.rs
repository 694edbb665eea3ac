//! Hostile and unlucky files, through the real binary: a FIFO or a device where certrotd
//! expects a file (configuration, domains file, state, certificate) is refused at once with
//! a clear error, never a hang (every child is bounded and must exit by itself) and never an
//! unbounded read; a lineage folder whose name is not UTF-8 is reported, not skipped; a
//! `sync` run as root keeps the state file's owner and mode.

use std::fs;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _, symlink};
use std::time::Duration;

use certrotd::emulator::Emulator;
use certrotd::state;

use crate::harness::{
    self, Bounded, Certbot, Config, Env, RunningDaemon, is_root, issue, mkfifo, run_bounded,
    wait_for, write, write_mode,
};

/// Long enough for a loaded 2-core machine; a hang is what it catches.
const LIMIT: Duration = Duration::from_secs(60);

fn bounded(env: &Env, args: &[&str]) -> Bounded {
    run_bounded(env.command(args), LIMIT)
}

/// A configuration with credentials for `emu` (or for nothing) and `domains`.
fn config(env: &Env, endpoint: &str, domains: &[&str]) -> Config {
    harness::emulator_credentials(env, endpoint, domains)
}

async fn emulator(domains: &[&str]) -> Emulator {
    harness::start_emulator(domains).await
}

#[test]
fn a_fifo_as_the_config_file_is_refused_at_once() {
    let env = Env::new();
    mkfifo(&env.join("certrotd.toml"));
    for args in [&["check"][..], &["status"], &["sync"]] {
        let run = bounded(&env, args);
        let out = run.expect_exited();
        out.expect_status(78)
            .expect_contains("cannot read the configuration file")
            .expect_contains("a FIFO (named pipe)")
            .expect_contains("replace it with a regular file");
    }
}

#[test]
fn a_fifo_as_the_domains_file_is_refused_at_once() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("le"));
    certbot.add("a.example.com", &issue(&["a.example.com"]));
    mkfifo(&env.join("domains.txt"));
    Config::new()
        .watch(certbot.live())
        .set("cdn", "domains_file = \"domains.txt\"")
        .write(&env);
    for args in [&["check"][..], &["status"], &["sync"]] {
        let run = bounded(&env, args);
        let out = run.expect_exited();
        out.expect_status(78)
            .expect_contains("cdn.domains_file")
            .expect_contains("a FIFO (named pipe), not a regular file");
    }
}

#[test]
fn a_fifo_as_state_json_is_a_clear_error_for_status_sync_and_check() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("le"));
    certbot.add("a.example.com", &issue(&["a.example.com"]));
    config(&env, "http://127.0.0.1:9/", &["a.example.com"])
        .watch(certbot.live())
        .write(&env);
    let path = env.join("state").join(state::STATE_FILE);
    mkfifo(&path);
    for args in [&["status"][..], &["sync"]] {
        let run = bounded(&env, args);
        let out = run.expect_exited();
        out.expect_status(1)
            .expect_contains("cannot read the state file")
            .expect_contains(&path.display().to_string())
            .expect_contains("a FIFO (named pipe)");
    }
    // `check` never reads the state: it judges the configuration and the certificates.
    let run = bounded(&env, &["check"]);
    run.expect_exited()
        .expect_status(0)
        .expect_contains("every managed domain covered");
    assert!(
        fs::symlink_metadata(&path).unwrap().file_type().is_fifo(),
        "the FIFO is left alone"
    );
}

#[test]
fn state_json_linked_to_dev_zero_is_refused_in_bounded_memory() {
    let env = Env::new();
    Config::new().domains(&["a.example.com"]).write(&env);
    let path = env.join("state").join(state::STATE_FILE);
    fs::create_dir_all(env.join("state")).unwrap();
    symlink("/dev/zero", &path).unwrap();
    let run = bounded(&env, &["status"]);
    run.expect_exited()
        .expect_status(1)
        .expect_contains("cannot read the state file")
        .expect_contains("a character device");
    assert!(
        run.max_rss_kib < 200 * 1024,
        "status used {} KiB",
        run.max_rss_kib
    );
}

#[test]
fn a_fifo_as_a_certificate_file_is_reported_by_check() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("le"));
    certbot.add("good.example.com", &issue(&["good.example.com"]));
    let bad = env.join("le/live/fifo.example.com");
    write_mode(
        &bad.join("privkey.pem"),
        &issue(&["fifo.example.com"]).key_pem,
        0o600,
    );
    mkfifo(&bad.join("fullchain.pem"));
    Config::new()
        .watch(certbot.live())
        .domains(&["good.example.com"])
        .write(&env);
    let run = bounded(&env, &["check"]);
    let out = run.expect_exited();
    out.expect_status(1).expect_contains("1 invalid lineage");
    let row = out.row(&bad.display().to_string());
    assert!(
        row.contains("INVALID") && row.contains("a FIFO (named pipe), not a regular file"),
        "{row}"
    );
    assert!(
        out.row(&certbot.lineage("good.example.com").display().to_string())
            .contains("VALID")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_as_a_certificate_file_does_not_stop_run() {
    let env = Env::new();
    let emu = emulator(&["good.example.com", "fifo.example.com"]).await;
    let certbot = Certbot::new(env.join("le"));
    certbot.add("good.example.com", &issue(&["good.example.com"]));
    let bad = certbot.lineage("fifo.example.com");
    write_mode(
        &bad.join("privkey.pem"),
        &issue(&["fifo.example.com"]).key_pem,
        0o600,
    );
    mkfifo(&bad.join("fullchain.pem"));
    config(
        &env,
        &emu.endpoint(),
        &["good.example.com", "fifo.example.com"],
    )
    .watch(certbot.live())
    .set("watch", "debounce_ms = 200")
    .write(&env);
    let mut daemon = RunningDaemon::start(&env);
    let secs = LIMIT.as_secs();
    wait_for(
        "good.example.com deployed",
        secs,
        || emu.served().contains_key("good.example.com"),
        || daemon.log(),
    )
    .await;
    wait_for(
        "the FIFO lineage reported",
        secs,
        || daemon.log().contains("a FIFO (named pipe)"),
        || daemon.log(),
    )
    .await;
    assert!(!emu.served().contains_key("fifo.example.com"));
    let code = daemon.terminate(secs).await;
    assert_eq!(code, 0, "{}", daemon.log());
}

#[test]
fn a_lineage_folder_named_in_invalid_utf8_fails_check() {
    use std::os::unix::ffi::OsStrExt as _;
    let env = Env::new();
    let certbot = Certbot::new(env.join("le"));
    certbot.add("good.example.com", &issue(&["good.example.com"]));
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9\x1b[2J.example.com");
    let bad = certbot.live().join(name);
    let issued = issue(&["cafe.example.com"]);
    write(&bad.join("fullchain.pem"), &issued.fullchain_pem);
    write_mode(&bad.join("privkey.pem"), &issued.key_pem, 0o600);
    Config::new()
        .watch(certbot.live())
        .domains(&["good.example.com"])
        .write(&env);
    let run = bounded(&env, &["check"]);
    let out = run.expect_exited();
    out.expect_status(1).expect_contains("1 invalid lineage");
    let shown = format!(
        "{}/caf\u{fffd}\\x1b[2J.example.com",
        certbot.live().display()
    );
    let row = out.row(&shown);
    assert!(
        row.contains("INVALID") && row.contains("not valid UTF-8"),
        "{row}"
    );
    assert!(
        !out.stdout.contains('\x1b'),
        "no raw control character reaches the table:\n{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_as_root_keeps_the_owner_and_mode_of_state_json() {
    if !is_root() {
        eprintln!("SKIPPED sync_as_root_keeps_the_owner_and_mode_of_state_json: needs root");
        return;
    }
    let env = Env::new();
    let emu = emulator(&["a.example.com", "b.example.com"]).await;
    let certbot = Certbot::new(env.join("le"));
    certbot.add("a.example.com", &issue(&["a.example.com"]));
    config(&env, &emu.endpoint(), &["a.example.com", "b.example.com"])
        .watch(certbot.live())
        .write(&env);
    let sync = |env: &Env| {
        let cmd = env.command(&["sync"]);
        tokio::task::spawn_blocking(move || run_bounded(cmd, LIMIT))
    };
    // The first run leaves b uncovered (exit 1) and records a.
    sync(&env).await.unwrap().expect_exited().expect_status(1);
    let path = env.join("state").join(state::STATE_FILE);
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();

    certbot.add("b.example.com", &issue(&["b.example.com"]));
    sync(&env).await.unwrap().expect_exited().expect_status(0);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "owner kept");
    assert_eq!(meta.mode() & 0o7777, 0o640, "mode kept");
    let st = state::load(&env.join("state")).unwrap();
    assert!(
        st.domains["b.example.com"].deployed.is_some(),
        "the save happened"
    );
}
