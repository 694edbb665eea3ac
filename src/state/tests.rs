use std::collections::BTreeMap;
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
    assert_eq!((d.fingerprint, &*d.request_id), (fp(1), "REQ-1"));
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

    let db = rusqlite::Connection::open(dir.path().join(STATE_FILE)).unwrap();
    let row: (String, String, String, String, Option<String>) = db
        .query_row(
            "SELECT fingerprint, not_after, verification, request_id, error_kind \
             FROM domains WHERE domain = 'a.example.com'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(
        row,
        (
            fp(1).hex(),
            "2027-02-27T00:00:00Z".to_string(),
            "verified".to_string(),
            "REQ-1".to_string(),
            None
        )
    );
    let b: (Option<String>, String) = db
        .query_row(
            "SELECT fingerprint, error_kind FROM domains WHERE domain = 'b.example.com'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(b, (None, "domain-not-found".to_string()));
    let version: u32 = db
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, db::SCHEMA_VERSION);
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

/// Everything in `dir`, name → bytes (to show a refusal touched nothing).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            (name != LOCK_FILE).then(|| (name, fs::read(e.path()).unwrap_or_default()))
        })
        .collect()
}

/// `file` holding `content` in a fresh folder is refused by `open` and `load` with `kind`
/// and a message naming it and containing `needle`; the folder is left as it was.
fn assert_refused(file: &str, content: &[u8], kind: &str, needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file);
    fs::write(&path, content).unwrap();
    let before = snapshot(dir.path());
    let err = StateStore::open(dir.path()).unwrap_err();
    assert_eq!(err.kind(), kind, "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(needle), "{msg}");
    assert_eq!(load(dir.path()).unwrap_err().kind(), kind);
    assert_eq!(snapshot(dir.path()), before, "left untouched");
}

#[test]
fn a_newer_state_json_is_refused_and_left_untouched() {
    assert_refused(
        LEGACY_FILE,
        br#"{"version": 2, "domains": {}, "new": true}"#,
        "state-version",
        "upgrade certrotd",
    );
}

#[test]
fn a_corrupt_state_json_is_refused_and_left_untouched() {
    let hint = "move it aside";
    assert_refused(LEGACY_FILE, b"", "state-corrupt", hint);
    assert_refused(LEGACY_FILE, b"\x00\xff garbage", "state-corrupt", hint);
    assert_refused(
        LEGACY_FILE,
        br#"{"version": 1, "domains": {"a": {"deployed": {"#,
        "state-corrupt",
        hint,
    );
    assert_refused(
        LEGACY_FILE,
        br#"{"domains": {}}"#,
        "state-corrupt",
        "no \"version\" field",
    );
    assert_refused(
        LEGACY_FILE,
        br#"{"version": 0}"#,
        "state-corrupt",
        "version 0",
    );
    assert_refused(LEGACY_FILE, br#"{"version": "1"}"#, "state-corrupt", hint);
    assert_refused(LEGACY_FILE, br#"[1, 2]"#, "state-corrupt", hint);
    let bad_fp = br#"{"version": 1, "domains": {"a": {"deployed": {"fingerprint": "xyz",
        "cert_name": "n", "not_after": "2027-02-27T00:00:00Z", "deployed_at": "2026-01-01T00:00:00Z",
        "request_id": "r", "verification": "verified"}}}}"#;
    assert_refused(LEGACY_FILE, bad_fp, "state-corrupt", "64 hex");
}

/// The bytes of a store holding one deployed domain, then `edit` applied to it through a
/// plain SQLite connection (and that connection closed, so the bytes are all in the file).
fn store_bytes(edit: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = StateStore::open(dir.path()).unwrap();
        s.record_deployed(&ds(&["a.example.com"]), &push(1, "R1"))
            .unwrap();
    }
    let path = dir.path().join(STATE_FILE);
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(edit).unwrap();
        let _: String = db
            .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
            .unwrap();
    }
    fs::read(&path).unwrap()
}

#[test]
fn a_newer_store_is_refused_and_left_byte_identical() {
    let newer = store_bytes("PRAGMA user_version = 2; CREATE TABLE future (x);");
    assert_refused(STATE_FILE, &newer, "state-version", "upgrade certrotd");
}

#[test]
fn a_corrupt_or_foreign_store_is_refused_and_left_byte_identical() {
    let hint = "move it aside";
    assert_refused(
        STATE_FILE,
        b"",
        "state-corrupt",
        "not a certrotd state store",
    );
    assert_refused(STATE_FILE, &[0x5a; 8192], "state-corrupt", "not a database");
    let foreign = {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        drop(db);
        fs::read(&path).unwrap()
    };
    assert_refused(STATE_FILE, &foreign, "state-corrupt", "application_id 0x0");
    let bad_row =
        store_bytes("UPDATE records SET fingerprint = 'xyz' WHERE domain = 'a.example.com';");
    assert_refused(STATE_FILE, &bad_row, "state-corrupt", "\"a.example.com\"");
    let bad_time = store_bytes("UPDATE records SET not_after = 'tomorrow';");
    assert_refused(
        STATE_FILE,
        &bad_time,
        "state-corrupt",
        "not_after \"tomorrow\"",
    );
    let bad_meta = store_bytes("INSERT INTO meta VALUES ('x', '{not json');");
    assert_refused(STATE_FILE, &bad_meta, "state-corrupt", "meta row \"x\"");
    // A page of the table overwritten: SQLite's own check finds it.
    let mut torn = store_bytes("");
    let page = db::PAGE_SIZE as usize;
    assert!(torn.len() >= 3 * page, "a store of at least 3 pages");
    for b in &mut torn[page + 8..2 * page] {
        *b = 0xa5;
    }
    assert_refused(STATE_FILE, &torn, "state-corrupt", hint);
    let mut cut = store_bytes("");
    cut.truncate(page + 100);
    assert_refused(STATE_FILE, &cut, "state-corrupt", hint);
}

#[test]
fn unreadable_state_file_is_a_clear_error() {
    for file in [STATE_FILE, LEGACY_FILE] {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(file)).unwrap();
        let err = StateStore::open(dir.path()).unwrap_err();
        assert_eq!(err.kind(), "state-read", "{file}");
        assert!(
            err.to_string().contains("cannot read the state file"),
            "{err}"
        );
    }
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

// ---- failed saves, stray files ----

#[test]
fn a_failed_save_writes_nothing_and_the_next_save_writes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::open(dir.path()).unwrap();
    s.record_deployed(&ds(&["a"]), &push(1, "R1")).unwrap();
    let saved = load(dir.path()).unwrap();
    s.refuse_writes(true);
    let err = s
        .record_deployed(&ds(&["b", "c"]), &push(2, "R2"))
        .unwrap_err();
    assert_eq!(err.kind(), "state-write");
    assert!(
        err.to_string().contains(&s.path().display().to_string()),
        "{err}"
    );
    s.record_verified(&ds(&["a"]), fp(1), T0).unwrap_err();
    assert_eq!(
        load(dir.path()).unwrap(),
        saved,
        "nothing of the failed saves"
    );
    s.refuse_writes(false);
    s.save().unwrap();
    assert_eq!(&load(dir.path()).unwrap(), s.state());
    assert_eq!(s.state().domains.len(), 3);
}

#[test]
fn a_store_removed_under_a_running_process_is_written_anew_at_the_next_save() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::open(dir.path()).unwrap();
    s.record_deployed(&ds(&["a", "b"]), &push(1, "R1")).unwrap();
    for f in [STATE_FILE, "state.db-wal", "state.db-shm"] {
        let _ = fs::remove_file(dir.path().join(f));
    }
    s.record_deployed(&ds(&["c"]), &push(2, "R2")).unwrap();
    let on_disk = load(dir.path()).unwrap();
    assert_eq!(&on_disk, s.state());
    assert_eq!(
        on_disk.domains.len(),
        3,
        "the whole state, not only the change"
    );
}

#[test]
fn a_store_replaced_under_a_running_process_is_not_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::open(dir.path()).unwrap();
    s.record_deployed(&ds(&["a"]), &push(1, "R1")).unwrap();
    let path = dir.path().join(STATE_FILE);
    fs::rename(&path, dir.path().join("aside.db")).unwrap();
    fs::write(&path, b"someone else's").unwrap();
    let err = s.record_deployed(&ds(&["b"]), &push(1, "R2")).unwrap_err();
    assert_eq!(err.kind(), "state-write");
    assert!(
        err.to_string().contains("replaced by another file"),
        "{err}"
    );
    assert_eq!(fs::read(&path).unwrap(), b"someone else's");
}

#[test]
fn a_released_connection_is_reopened_by_the_next_save() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::open(dir.path()).unwrap();
    s.record_deployed(&ds(&["a"]), &push(1, "R1")).unwrap();
    let [wal, _] = db::side_files(s.path());
    assert!(wal.exists(), "the open connection has a WAL");
    s.release_memory();
    assert!(
        !wal.exists(),
        "closing the connection checkpointed and removed the WAL"
    );
    // `certrotd status` reads the store while the daemon idles.
    assert!(load(dir.path()).unwrap().domains.contains_key("a"));
    s.record_deployed(&ds(&["b"]), &push(2, "R2")).unwrap();
    let back = load(dir.path()).unwrap();
    assert_eq!(back.domains.len(), 2);
    assert_eq!(
        &*back.domains["b"].deployed.as_ref().unwrap().request_id,
        "R2"
    );
}

#[test]
fn a_store_replaced_while_its_connection_is_released_is_not_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::open(dir.path()).unwrap();
    s.record_deployed(&ds(&["a"]), &push(1, "R1")).unwrap();
    s.release_memory();
    let path = dir.path().join(STATE_FILE);
    fs::rename(&path, dir.path().join("aside.db")).unwrap();
    fs::write(&path, b"someone else's").unwrap();
    let err = s.record_deployed(&ds(&["b"]), &push(1, "R2")).unwrap_err();
    assert_eq!(err.kind(), "state-write");
    assert!(
        err.to_string().contains("replaced by another file"),
        "{err}"
    );
    assert_eq!(fs::read(&path).unwrap(), b"someone else's");
}

#[test]
fn the_domains_of_one_call_share_its_texts_in_memory_and_after_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::open(dir.path()).unwrap();
    s.record_deployed(&ds(&["a", "b"]), &push(1, "R1")).unwrap();
    s.record_deployed(&ds(&["c"]), &push(2, "R2")).unwrap();
    let shared = |st: &State, x: &str, y: &str| {
        let (x, y) = (
            st.domains[x].deployed.as_ref().unwrap(),
            st.domains[y].deployed.as_ref().unwrap(),
        );
        Arc::ptr_eq(&x.request_id, &y.request_id) && Arc::ptr_eq(&x.cert_name, &y.cert_name)
    };
    assert!(shared(s.state(), "a", "b"));
    assert!(!shared(s.state(), "a", "c"));
    drop(s);
    let back = StateStore::open(dir.path()).unwrap();
    assert!(shared(back.state(), "a", "b"));
    assert!(!shared(back.state(), "a", "c"));
    assert_eq!(
        &*back.state().domains["c"]
            .deployed
            .as_ref()
            .unwrap()
            .request_id,
        "R2"
    );
}

#[test]
fn stray_temp_files_are_ignored_by_readers_and_removed_by_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = StateStore::open(dir.path()).unwrap();
        s.record_deployed(&ds(&["a"]), &push(1, "R")).unwrap();
    }
    let strays = [
        ".state.db.Xy12ab.tmp",
        ".state.db.Xy12ab.tmp-journal",
        ".state.db.Xy12ab.tmp-wal",
        ".state.json.Qr34cd.tmp",
    ];
    for stray in strays {
        fs::write(dir.path().join(stray), b"torn").unwrap();
    }
    let other = dir.path().join("notes.tmp");
    fs::write(&other, b"mine").unwrap();
    assert!(load(dir.path()).unwrap().domains.contains_key("a"));
    let s = StateStore::open(dir.path()).unwrap();
    assert!(s.state().domains.contains_key("a"));
    for stray in strays {
        assert!(!dir.path().join(stray).exists(), "{stray} removed");
    }
    assert!(other.exists(), "other files are not ours to remove");
}

// ---- import of state.json (format version 1) ----

/// A `state.json` as certrotd 0.1 wrote it.
const V1_JSON: &str = r#"{
  "version": 1,
  "domains": {
    ".example.com": {
      "deployed": {
        "fingerprint": "0101010101010101010101010101010101010101010101010101010101010101",
        "cert_name": "wildcard.example.com-20270227-0101010101010101",
        "not_after": "2027-02-27T00:00:00Z",
        "deployed_at": "2026-06-01T12:00:00Z",
        "request_id": "REQ-1",
        "verification": "verified",
        "checked_at": "2026-06-01T12:00:05Z"
      },
      "last_error": null
    },
    "www.example.com": {
      "deployed": {
        "fingerprint": "0202020202020202020202020202020202020202020202020202020202020202",
        "cert_name": "www.example.com-20270227-0202020202020202",
        "not_after": "2027-02-27T00:00:00Z",
        "deployed_at": "2026-06-01T12:00:00Z",
        "request_id": "REQ-2",
        "verification": "pending"
      },
      "last_error": {
        "at": "2026-06-01T12:01:00Z",
        "kind": "throttling",
        "message": "Throttling.User"
      }
    },
    "gone.example.com": {
      "deployed": null,
      "last_error": {
        "at": "2026-06-01T12:01:00Z",
        "kind": "domain-not-found",
        "message": "InvalidDomain.NotFound"
      }
    }
  }
}
"#;

#[test]
fn a_version_1_state_json_is_imported_once_and_kept_as_imported() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join(LEGACY_FILE);
    fs::write(&json, V1_JSON).unwrap();
    fs::set_permissions(&json, fs::Permissions::from_mode(0o640)).unwrap();
    let expected = parse(&json, V1_JSON.as_bytes()).unwrap();
    assert_eq!(expected.domains.len(), 3);
    // Before the import, readers read the JSON file.
    assert_eq!(load(dir.path()).unwrap(), expected);

    let s = StateStore::open(dir.path()).unwrap();
    assert_eq!(s.state(), &expected);
    assert!(!json.exists(), "state.json renamed");
    assert_eq!(
        fs::read_to_string(dir.path().join(IMPORTED_FILE)).unwrap(),
        V1_JSON,
        "kept byte for byte"
    );
    let mode = fs::metadata(s.path()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640, "the store takes the imported file's mode");
    drop(s);
    assert_eq!(
        load(dir.path()).unwrap(),
        expected,
        "read back from state.db"
    );
    let again = StateStore::open(dir.path()).unwrap();
    assert_eq!(again.state(), &expected);
    let www = &expected.domains["www.example.com"];
    assert_eq!(
        www.deployed.as_ref().unwrap().verification,
        Verification::Pending
    );
    assert_eq!(www.last_error.as_ref().unwrap().kind, "throttling");
}

#[test]
fn a_state_json_left_next_to_its_store_by_a_kill_is_set_aside_and_the_store_wins() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(LEGACY_FILE), V1_JSON).unwrap();
    drop(StateStore::open(dir.path()).unwrap());
    // A kill between the store's rename and the JSON file's.
    fs::rename(dir.path().join(IMPORTED_FILE), dir.path().join(LEGACY_FILE)).unwrap();
    let mut s = StateStore::open(dir.path()).unwrap();
    s.record_deployed(&ds(&["new.example.com"]), &push(3, "R3"))
        .unwrap();
    drop(s);
    assert!(!dir.path().join(LEGACY_FILE).exists());
    assert!(dir.path().join(IMPORTED_FILE).exists());
    let s = StateStore::open(dir.path()).unwrap();
    assert_eq!(s.state().domains.len(), 4, "the store, not the old file");
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

    let mut bytes = fs::read(dir.path().join(STATE_FILE)).unwrap();
    bytes.extend(fs::read(dir.path().join("state.db-wal")).unwrap_or_default());
    let text = String::from_utf8_lossy(&bytes);
    for needle in ["PRIVATE KEY", "BEGIN", "MIGHAgEAMBMG"] {
        assert!(!text.contains(needle), "{needle} in the state store");
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
fn a_fifo_as_the_legacy_state_file_is_refused_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    mkfifo(&dir.path().join(LEGACY_FILE));
    let err = StateStore::open(dir.path()).unwrap_err();
    assert_eq!(err.kind(), "state-read");
    assert!(err.to_string().contains("a FIFO (named pipe)"), "{err}");
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
    drop(s);
    // SQLite gives the side files of a reopened store the store's mode.
    let mut s = StateStore::open(dir.path()).unwrap();
    s.record_deployed(&ds(&["c"]), &push(1, "R3")).unwrap();
    for side in ["state.db-wal", "state.db-shm"] {
        let meta = fs::metadata(dir.path().join(side)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640, "{side}");
    }
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
}

// ---- writes proportional to the change ----

/// A store of `n` deployed domains, then 20 read-back events of 10 domains each (spread
/// over the whole store), each saved on its own: (row statements, WAL bytes) per event.
fn cost_per_event(n: usize) -> (u64, u64) {
    const EVENTS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::open(dir.path()).unwrap();
    let all: Vec<String> = (0..n).map(|i| format!("d{i:06}.example.com")).collect();
    s.note_deployed(&all, &push(1, "R1"));
    s.save().unwrap();
    s.checkpoint();
    let wal = dir.path().join("state.db-wal");
    assert_eq!(fs::metadata(&wal).unwrap().len(), 0, "checkpointed");
    let before = s.write_statements();
    for chunk in all.chunks(10).step_by(n / 10 / EVENTS) {
        s.record_verified(chunk, fp(1), T0).unwrap();
    }
    let statements = s.write_statements() - before;
    let bytes = fs::metadata(&wal).unwrap().len();
    // Nothing changed, nothing written: a save without changes, a read-back of a
    // fingerprint the domains no longer carry.
    s.save().unwrap();
    s.record_verified(&all[..10], fp(9), T0).unwrap();
    assert_eq!(s.write_statements() - before, statements);
    assert_eq!(fs::metadata(&wal).unwrap().len(), bytes);
    (statements / EVENTS as u64, bytes / EVENTS as u64)
}

#[test]
fn the_writes_per_recorded_event_do_not_grow_with_the_store() {
    let (small_rows, small_bytes) = cost_per_event(200);
    let (large_rows, large_bytes) = cost_per_event(20_000);
    assert_eq!(
        (small_rows, large_rows),
        (10, 10),
        "one row per changed domain"
    );
    // 100 times the domains: the B-tree is a level or two deeper, nothing more.
    assert!(
        large_bytes <= 2 * small_bytes,
        "WAL bytes per event: {small_bytes} at 200 domains, {large_bytes} at 20 000"
    );
    assert!(large_bytes < 64 * 1024, "{large_bytes} bytes for 10 rows");
}

fn records(dir: &Path) -> i64 {
    let db = rusqlite::Connection::open(dir.join(STATE_FILE)).unwrap();
    db.query_row("SELECT count(*) FROM records", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn the_log_of_records_is_compacted_at_open_keeping_the_state_and_the_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::open(dir.path()).unwrap();
    let all: Vec<String> = (0..100).map(|i| format!("d{i:03}.example.com")).collect();
    // 30 rounds of 100 changes: 3000 records of 100 domains (one removed at the end).
    for round in 0..30 {
        s.record_deployed(&all, &push(1, &format!("R{round}")))
            .unwrap();
    }
    s.state.domains.remove(&all[0]);
    s.touch(&all[..1]);
    s.save().unwrap();
    let expected = s.state().clone();
    assert_eq!(expected.domains.len(), 99);
    drop(s);
    assert_eq!(records(dir.path()), 3001);
    fs::set_permissions(
        dir.path().join(STATE_FILE),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    assert_eq!(
        load(dir.path()).unwrap(),
        expected,
        "readers see the latest records"
    );

    let s = StateStore::open(dir.path()).unwrap();
    assert_eq!(s.state(), &expected);
    drop(s);
    assert_eq!(records(dir.path()), 99, "one record per live domain");
    assert_eq!(load(dir.path()).unwrap(), expected);
    let mode = fs::metadata(dir.path().join(STATE_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o640);
    // The view an admin queries: the latest record of each live domain.
    let db = rusqlite::Connection::open(dir.path().join(STATE_FILE)).unwrap();
    let (n, request): (i64, String) = db
        .query_row("SELECT count(*), max(request_id) FROM domains", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((n, request.as_str()), (99, "R29"));
}
