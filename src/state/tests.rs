use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};

use time::macros::datetime;

use super::*;

const T0: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

fn fp(n: u8) -> Fingerprint {
    Fingerprint([n; 32])
}

fn ds(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn push(n: u8, request_id: &str) -> Push<'_> {
    Push {
        fingerprint: fp(n),
        cert_name: "wildcard.example.com-20270227-0101010101010101",
        not_after: datetime!(2027-02-27 0:00 UTC),
        request_id,
        at: T0,
    }
}

fn temps(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| is_temp(n))
        .collect()
}

#[test]
fn missing_folder_is_created_private_and_empty() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("var/lib/certrotd");
    let store = StateStore::open(&dir).unwrap();
    assert_eq!(store.state(), &State::default());
    let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(!store.path().exists(), "opening writes nothing");
    assert_eq!(
        load(&root.path().join("nowhere")).unwrap(),
        State::default()
    );
}

#[test]
fn round_trip_through_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = StateStore::open(dir.path()).unwrap();
    store
        .record_deployed(&ds(&["a.example.com", ".example.com"]), &push(1, "REQ-1"))
        .unwrap();
    store
        .record_verified(
            &ds(&["a.example.com"]),
            fp(1),
            T0 + time::Duration::seconds(5),
        )
        .unwrap();
    store
        .record_error(
            &ds(&["b.example.com"]),
            "domain-not-found",
            "InvalidDomain.NotFound: b.example.com",
            T0,
        )
        .unwrap();
    let expected = store.state().clone();
    drop(store);

    assert_eq!(load(dir.path()).unwrap(), expected);
    let again = StateStore::open(dir.path()).unwrap();
    assert_eq!(again.state(), &expected);

    let a = &expected.domains["a.example.com"];
    let d = a.deployed.as_ref().unwrap();
    assert_eq!((d.fingerprint, d.request_id.as_str()), (fp(1), "REQ-1"));
    assert_eq!(d.verification, Verification::Verified);
    assert_eq!(d.checked_at, Some(T0 + time::Duration::seconds(5)));
    assert_eq!(
        expected.domains[".example.com"]
            .deployed
            .as_ref()
            .unwrap()
            .verification,
        Verification::Pending
    );
    let b = &expected.domains["b.example.com"];
    assert!(b.deployed.is_none());
    assert_eq!(b.last_error.as_ref().unwrap().kind, "domain-not-found");

    let text = fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(
        json["domains"]["a.example.com"]["deployed"]["fingerprint"],
        fp(1).hex()
    );
    assert_eq!(
        json["domains"]["a.example.com"]["deployed"]["not_after"],
        "2027-02-27T00:00:00Z"
    );
    let mode = fs::metadata(dir.path().join(STATE_FILE))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn planner_view_counts_verified_always_pending_only_without_verify_failed_never() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::open(dir.path()).unwrap();
    s.record_deployed(&ds(&["v", "p", "f", "stale"]), &push(1, "R1"))
        .unwrap();
    s.record_verified(&ds(&["v"]), fp(1), T0).unwrap();
    s.record_verify_failed(
        &ds(&["f"]),
        fp(1),
        "still serves the old certificate after 10 tries",
        T0,
    )
    .unwrap();
    // A newer push supersedes; a late verification of the old fingerprint must not count.
    s.record_deployed(&ds(&["stale"]), &push(2, "R2")).unwrap();
    s.record_verified(&ds(&["stale"]), fp(1), T0).unwrap();
    s.record_error(&ds(&["only-error"]), "throttling", "Throttling.User", T0)
        .unwrap();

    let with_verify = s.deployed_fingerprints(true);
    assert_eq!(
        with_verify.into_iter().collect::<Vec<_>>(),
        vec![("v".to_string(), fp(1))]
    );
    let without = s.deployed_fingerprints(false);
    let keys: Vec<&str> = without.keys().map(String::as_str).collect();
    assert_eq!(keys, vec!["p", "stale", "v"]);
    assert_eq!(without["stale"], fp(2));

    let f = &s.state().domains["f"];
    assert_eq!(
        f.deployed.as_ref().unwrap().verification,
        Verification::Failed
    );
    assert_eq!(f.last_error.as_ref().unwrap().kind, "verify");
    assert_eq!(
        s.state().domains["stale"]
            .deployed
            .as_ref()
            .unwrap()
            .verification,
        Verification::Pending
    );
}

#[test]
fn errors_keep_the_deployment_and_a_later_success_clears_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::open(dir.path()).unwrap();
    s.record_deployed(&ds(&["a"]), &push(1, "R1")).unwrap();
    s.record_error(&ds(&["a"]), "certificate", "Certificate.Expired", T0)
        .unwrap();
    let a = &s.state().domains["a"];
    assert_eq!(a.deployed.as_ref().unwrap().fingerprint, fp(1));
    assert_eq!(
        a.last_error.as_ref().unwrap().message,
        "Certificate.Expired"
    );
    s.record_deployed(&ds(&["a"]), &push(2, "R2")).unwrap();
    assert!(s.state().domains["a"].last_error.is_none());
    s.record_error(&ds(&["a"]), "throttling", "Throttling.User", T0)
        .unwrap();
    s.record_verified(&ds(&["a"]), fp(2), T0).unwrap();
    assert!(s.state().domains["a"].last_error.is_none());
}

// ---- lock ----

#[test]
fn a_second_open_of_the_same_folder_is_refused_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let first = StateStore::open(dir.path()).unwrap();
    let err = StateStore::open(dir.path()).unwrap_err();
    assert_eq!(err.kind(), "state-locked");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "another certrotd is using {}",
            dir.path().display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains(LOCK_FILE) && msg.contains("stop it or use another [state] dir"),
        "{msg}"
    );
    // Read-only loading works while locked (status while the daemon runs).
    assert_eq!(load(dir.path()).unwrap(), State::default());
    drop(first);
    StateStore::open(dir.path()).unwrap();
}

#[test]
fn the_lock_file_names_its_holder_and_role_and_is_rewritten_by_each_holder() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(read_lock_record(dir.path()), None, "no lock file yet");
    // A longer, stale record of an earlier holder is replaced, not overwritten in part.
    fs::write(
        dir.path().join(LOCK_FILE),
        "4000000000 sync and more text\n",
    )
    .unwrap();
    let run = StateStore::open_as(dir.path(), Role::Run).unwrap();
    let me = std::process::id();
    assert_eq!(
        fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap(),
        format!("{me} run\n")
    );
    assert_eq!(
        read_lock_record(dir.path()),
        Some(LockRecord {
            pid: me,
            role: Role::Run
        })
    );
    drop(run);
    let _sync = StateStore::open(dir.path()).unwrap();
    assert_eq!(
        read_lock_record(dir.path()),
        Some(LockRecord {
            pid: me,
            role: Role::Sync
        }),
        "open() records a one-shot holder"
    );
}

#[test]
fn lock_records_other_than_one_well_formed_line_name_nobody() {
    for bad in [
        &b""[..],
        b"123 run",
        b"123 run\n\n",
        b"123  run\n",
        b"+123 run\n",
        b"0 run\n",
        b"-1 run\n",
        b"99999999999 run\n",
        b"123 daemon\n",
        b"abc run\n",
        b"\xff\xfe run\n",
    ] {
        assert_eq!(
            LockRecord::parse(bad),
            None,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(
        LockRecord::parse(b"42 sync\n"),
        Some(LockRecord {
            pid: 42,
            role: Role::Sync
        })
    );
    let dir = tempfile::tempdir().unwrap();
    let long = format!("42 run\n{}", " ".repeat(100));
    fs::write(dir.path().join(LOCK_FILE), long).unwrap();
    assert_eq!(read_lock_record(dir.path()), None, "longer than a record");
    fs::remove_file(dir.path().join(LOCK_FILE)).unwrap();
    fs::create_dir(dir.path().join(LOCK_FILE)).unwrap();
    assert_eq!(read_lock_record(dir.path()), None, "not a regular file");
    fs::remove_dir(dir.path().join(LOCK_FILE)).unwrap();
    let fifo = std::ffi::CString::new(
        dir.path()
            .join(LOCK_FILE)
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    assert_eq!(
        read_lock_record(dir.path()),
        None,
        "a FIFO: no hang, no record"
    );
}

#[test]
fn lock_file_that_cannot_be_opened_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join(LOCK_FILE)).unwrap();
    let err = StateStore::open(dir.path()).unwrap_err();
    assert_eq!(err.kind(), "state-dir");
    assert!(
        err.to_string()
            .contains(&dir.path().join(LOCK_FILE).display().to_string()),
        "{err}"
    );
}

#[test]
fn folder_that_cannot_be_created_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    fs::write(&file, b"x").unwrap();
    let err = StateStore::open(&file.join("state")).unwrap_err();
    assert_eq!(err.kind(), "state-dir");
    let msg = err.to_string();
    assert!(
        msg.contains("cannot create the state folder") && msg.contains("a-file/state"),
        "{msg}"
    );
}

// ---- refusing bad files, never overwriting them ----

fn assert_refused(content: &[u8], kind: &str, needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(STATE_FILE);
    fs::write(&path, content).unwrap();
    let err = StateStore::open(dir.path()).unwrap_err();
    assert_eq!(err.kind(), kind, "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(needle), "{msg}");
    assert_eq!(load(dir.path()).unwrap_err().kind(), kind);
    assert_eq!(fs::read(&path).unwrap(), content, "left untouched");
}

#[test]
fn newer_version_is_refused_and_left_untouched() {
    assert_refused(
        br#"{"version": 2, "domains": {}, "new": true}"#,
        "state-version",
        "upgrade certrotd",
    );
}

#[test]
fn corrupt_files_are_refused_and_left_untouched() {
    let hint = "move it aside";
    assert_refused(b"", "state-corrupt", hint);
    assert_refused(b"\x00\xff garbage", "state-corrupt", hint);
    assert_refused(
        br#"{"version": 1, "domains": {"a": {"deployed": {"#,
        "state-corrupt",
        hint,
    );
    assert_refused(
        br#"{"domains": {}}"#,
        "state-corrupt",
        "no \"version\" field",
    );
    assert_refused(br#"{"version": 0}"#, "state-corrupt", "version 0");
    assert_refused(br#"{"version": "1"}"#, "state-corrupt", hint);
    assert_refused(br#"[1, 2]"#, "state-corrupt", hint);
    let bad_fp = br#"{"version": 1, "domains": {"a": {"deployed": {"fingerprint": "xyz",
        "cert_name": "n", "not_after": "2027-02-27T00:00:00Z", "deployed_at": "2026-01-01T00:00:00Z",
        "request_id": "r", "verification": "verified"}}}}"#;
    assert_refused(bad_fp, "state-corrupt", "64 hex");
}

#[test]
fn unreadable_state_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join(STATE_FILE)).unwrap();
    let err = StateStore::open(dir.path()).unwrap_err();
    assert_eq!(err.kind(), "state-read");
    assert!(
        err.to_string().contains("cannot read the state file"),
        "{err}"
    );
}

#[test]
fn save_into_a_vanished_folder_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("state");
    let mut s = StateStore::open(&dir).unwrap();
    fs::remove_dir_all(&dir).unwrap();
    let err = s.record_deployed(&ds(&["a"]), &push(1, "R")).unwrap_err();
    assert_eq!(err.kind(), "state-write");
    assert!(
        err.to_string().contains("previous state file is intact"),
        "{err}"
    );
    // The record is kept in memory for the next save.
    assert!(s.state().domains.contains_key("a"));
}

// ---- atomicity ----

#[test]
fn a_fault_at_any_step_leaves_the_old_or_the_new_file_and_no_temp() {
    let dir = tempfile::tempdir().unwrap();
    let old = b"{\"version\": 1, \"domains\": {}}\n".to_vec();
    let new = encode(&State {
        version: 1,
        domains: [("a".to_string(), DomainState::default())].into(),
        cas: Default::default(),
    })
    .unwrap();
    for step in [Step::Created, Step::Written, Step::Synced, Step::Renamed] {
        fs::write(dir.path().join(STATE_FILE), &old).unwrap();
        let err = write_atomic(dir.path(), &new, &mut |s| {
            if s == step {
                Err(io::Error::other("injected"))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "injected");
        let now = fs::read(dir.path().join(STATE_FILE)).unwrap();
        let expected = if step == Step::Renamed { &new } else { &old };
        assert_eq!(&now, expected, "after a fault at {step:?}");
        assert!(
            temps(dir.path()).is_empty(),
            "temp removed after a fault at {step:?}"
        );
    }
    write_atomic(dir.path(), &new, &mut |_| Ok(())).unwrap();
    assert_eq!(fs::read(dir.path().join(STATE_FILE)).unwrap(), new);
}

#[test]
fn stray_temp_files_are_ignored_by_readers_and_removed_by_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = StateStore::open(dir.path()).unwrap();
        s.record_deployed(&ds(&["a"]), &push(1, "R")).unwrap();
    }
    let stray = dir.path().join(".state.json.Xy12ab.tmp");
    fs::write(&stray, b"{\"version\": 1, \"domains\": {\"torn").unwrap();
    let other = dir.path().join("notes.tmp");
    fs::write(&other, b"mine").unwrap();
    assert!(load(dir.path()).unwrap().domains.contains_key("a"));
    let s = StateStore::open(dir.path()).unwrap();
    assert!(s.state().domains.contains_key("a"));
    assert!(!stray.exists(), "stray temp removed");
    assert!(other.exists(), "other files are not ours to remove");
}

/// Env var that turns [`child_writer`] into a writer loop on that folder.
const CHILD_DIR: &str = "CERTROTD_STATE_TEST_CHILD_DIR";
const DOMAINS: usize = 2000;
/// The line the child prints once it holds the lock.
const LOCKED_MARKER: &str = "child-writer-holds-the-lock";

/// Not a test of its own: the body of the child process of
/// [`sigkill_at_random_moments_leaves_a_whole_file_and_releases_the_lock`].
#[test]
#[ignore = "child process helper, run by sigkill_at_random_moments_leaves_a_whole_file_and_releases_the_lock"]
fn child_writer() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let mut store = StateStore::open(Path::new(&dir)).unwrap();
    let mut n = progress(store.state());
    println!("\n{LOCKED_MARKER}");
    let all: Vec<String> = (0..DOMAINS)
        .map(|i| format!("d{i:04}.example.com"))
        .collect();
    // Bounded, so that a parent failing before its kill leaves no process behind.
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(30) {
        n += 1;
        let chunk = &all[(n as usize * 50) % DOMAINS..][..50];
        store
            .record_deployed(chunk, &push(1, &n.to_string()))
            .unwrap();
    }
}

/// The highest request id recorded (the child's write counter).
fn progress(state: &State) -> u64 {
    state
        .domains
        .values()
        .filter_map(|d| d.deployed.as_ref()?.request_id.parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn sigkill_at_random_moments_leaves_a_whole_file_and_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut last = 0;
    let mut seed = 0x9e37_79b9_u64;
    for round in 0..8 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "state::tests::child_writer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(
            lines.any(|l| l.is_ok_and(|l| l == LOCKED_MARKER)),
            "child took the lock"
        );

        // A second process while the child holds the lock is refused.
        assert_eq!(
            StateStore::open(dir.path()).unwrap_err().kind(),
            "state-locked"
        );

        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Real processes: a real delay is the point (kill the writer mid-write).
        std::thread::sleep(std::time::Duration::from_millis(20 + (seed >> 33) % 80));
        child.kill().unwrap();
        child.wait().unwrap();

        let state = load(dir.path()).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let now = progress(&state);
        assert!(
            now >= last,
            "round {round}: state went back from {last} to {now}"
        );
        last = now;
        // The lock died with the child; opening also clears any temp file it left.
        let store = StateStore::open(dir.path()).unwrap();
        assert!(temps(dir.path()).is_empty());
        drop(store);
    }
    assert!(last > 0, "the children made progress");
}

// ---- no key material ----

#[test]
fn key_text_is_never_written_and_long_texts_are_cut() {
    let key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::open(dir.path()).unwrap();
    let mut p = push(1, key);
    p.cert_name = key;
    s.record_deployed(&ds(&["a", "b"]), &p).unwrap();
    let echo = format!("SignatureDoesNotMatch: POST&%2F&...SSLPri={key}");
    s.record_error(&ds(&["a"]), "credentials", &echo, T0)
        .unwrap();
    s.record_verify_failed(
        &ds(&["b"]),
        fp(1),
        "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49 PRIVATE KEY",
        T0,
    )
    .unwrap();
    s.record_error(&ds(&["c"]), "other", &"x".repeat(5000), T0)
        .unwrap();

    let text = fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
    for needle in ["PRIVATE KEY", "BEGIN", "MIGHAgEAMBMG"] {
        assert!(
            !text.contains(needle),
            "{needle} in the state file:\n{text}"
        );
    }
    let c = s.state().domains["c"].last_error.as_ref().unwrap();
    assert_eq!(c.message.chars().count(), MAX_TEXT + 1);
    assert!(c.message.ends_with('…'));
}

#[test]
fn noted_records_reach_the_file_only_with_the_save() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = StateStore::open(dir.path()).expect("open");
    let at = datetime!(2026-01-02 03:04:05 UTC);
    store.note_deployed(&ds(&["a.example"]), &push(1, "R1"));
    store.note_verified(&ds(&["a.example"]), fp(1), at);
    store.note_deployed(&ds(&["b.example"]), &push(2, "R2"));
    store.note_verify_failed(&ds(&["b.example"]), fp(2), "not served", at);
    let before = load(dir.path()).expect("load");
    assert!(before.domains.is_empty(), "{before:?}");
    store.save().expect("save");
    let after = load(dir.path()).expect("load");
    assert_eq!(&after, store.state());
    let a = after.domains["a.example"].deployed.as_ref().expect("a");
    assert_eq!(a.verification, Verification::Verified);
    let b = &after.domains["b.example"];
    assert_eq!(
        b.deployed.as_ref().map(|d| d.verification),
        Some(Verification::Failed)
    );
    assert!(
        b.last_error
            .as_ref()
            .is_some_and(|e| e.message == "not served")
    );
}

// ---- special files and ownership ----

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn a_fifo_or_a_device_as_the_state_file_is_refused_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(STATE_FILE);
    mkfifo(&path);
    let err = load(dir.path()).unwrap_err();
    assert_eq!(err.kind(), "state-read");
    assert!(err.to_string().contains("a FIFO (named pipe)"), "{err}");
    assert_eq!(
        StateStore::open(dir.path()).unwrap_err().kind(),
        "state-read"
    );
    fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert_eq!(err.kind(), "state-read");
    assert!(err.to_string().contains("a character device"), "{err}");
}

#[test]
fn an_oversized_state_file_is_refused_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    let f = fs::File::create(dir.path().join(STATE_FILE)).unwrap();
    f.set_len(MAX_STATE_BYTES + 1).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert_eq!(err.kind(), "state-read");
    assert!(err.to_string().contains("byte limit"), "{err}");
}

#[test]
fn a_save_keeps_the_existing_files_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::open(dir.path()).unwrap();
    s.record_deployed(&ds(&["a"]), &push(1, "R1")).unwrap();
    let path = dir.path().join(STATE_FILE);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    s.record_deployed(&ds(&["b"]), &push(1, "R2")).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    assert!(load(dir.path()).unwrap().domains.contains_key("b"));
}
