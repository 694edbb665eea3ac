//! Tests of the source module on real folders laid out as each ACME client writes them.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::*;
use crate::testca::{Issued, Leaf, TestCa};

const NOW: OffsetDateTime = datetime!(2026-02-01 12:00 UTC);

fn ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| TestCa::new("Source test").unwrap())
}

fn issue(names: &[&str]) -> Issued {
    let leaf = Leaf::new(names, NOW - Duration::days(10), NOW + Duration::days(80));
    ca().issue(&leaf).unwrap()
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// certbot: live/<name>/*.pem → ../../archive/<name>/*<n>.pem.
fn certbot(base: &Path, name: &str, n: u32, issued: &Issued) -> PathBuf {
    let archive = base.join("archive").join(name);
    for (file, text) in [
        ("cert", &issued.cert_pem),
        ("chain", &issued.chain_pem),
        ("fullchain", &issued.fullchain_pem),
        ("privkey", &issued.key_pem),
    ] {
        write(&archive.join(format!("{file}{n}.pem")), text);
        let live = base.join("live").join(name);
        fs::create_dir_all(&live).unwrap();
        let link = live.join(format!("{file}.pem"));
        let _ = fs::remove_file(&link);
        symlink(format!("../../archive/{name}/{file}{n}.pem"), &link).unwrap();
    }
    base.join("live").join(name)
}

/// `n` certbot lineages `s<i>.example.com` of the test CA under `base`; its `live` folder.
fn certbot_lineages(base: &Path, n: usize) -> PathBuf {
    for i in 0..n {
        let name = format!("s{i}.example.com");
        certbot(base, &name, 1, &issue(&[&name]));
    }
    base.join("live")
}

fn scan(paths: &[&Path]) -> Vec<Lineage> {
    let paths: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
    Scanner::new().scan(&paths)
}

fn only(lineages: &[Lineage]) -> &Lineage {
    assert_eq!(lineages.len(), 1, "{lineages:#?}");
    &lineages[0]
}

fn error(lineage: &Lineage) -> &SourceError {
    match &lineage.result {
        Err(e) => e,
        Ok(c) => panic!("expected a problem for {}, got {:?}", lineage.id, c.names),
    }
}

#[test]
fn certbot_live_root_and_lineage_folder() {
    let dir = tempfile::tempdir().unwrap();
    let a = certbot(dir.path(), "a.example.com", 1, &issue(&["a.example.com"]));
    certbot(dir.path(), "b.example.com", 1, &issue(&["b.example.com"]));
    write(&dir.path().join("live/README"), "certbot's README\n");

    let lineages = scan(&[&dir.path().join("live")]);
    let ids: Vec<_> = lineages.iter().map(|l| l.id.clone()).collect();
    assert_eq!(
        ids,
        [
            a.display().to_string(),
            dir.path().join("live/b.example.com").display().to_string()
        ]
    );
    for l in &lineages {
        assert_eq!(l.layout, Layout::Certbot);
        assert!(l.result.is_ok(), "{:?}", l.result);
        assert_eq!(l.chain_path, Path::new(&l.id).join("fullchain.pem"));
        assert_eq!(l.key_path, Path::new(&l.id).join("privkey.pem"));
    }
    let cert = lineages[0].result.as_ref().unwrap();
    assert_eq!(cert.names, ["a.example.com"]);

    // The lineage folder itself as the watch path.
    let l = scan(&[&a]);
    assert_eq!(only(&l).id, a.display().to_string());
    assert!(l[0].result.is_ok());
}

#[test]
fn acme_sh_folders_including_ecc() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    write(&home.join("account.conf"), "ACCOUNT_EMAIL=x\n");
    write(&home.join("ca/acme-v02/account.key"), "not a lineage\n");
    for folder in ["rsa.example.com", "ecc.example.com_ecc"] {
        let stem = folder.trim_end_matches("_ecc");
        let issued = issue(&[stem]);
        let f = home.join(folder);
        write(&f.join("fullchain.cer"), &issued.fullchain_pem);
        write(&f.join(format!("{stem}.cer")), &issued.cert_pem);
        write(&f.join("ca.cer"), &issued.chain_pem);
        write(&f.join(format!("{stem}.key")), &issued.key_pem);
        write(&f.join(format!("{stem}.conf")), "Le_Domain=x\n");
    }
    let lineages = scan(&[home]);
    assert_eq!(
        lineages.len(),
        2,
        "the ca/ folder of an acme.sh home is skipped: {lineages:#?}"
    );
    assert_eq!(
        lineages[0].id,
        home.join("ecc.example.com_ecc").display().to_string()
    );
    assert_eq!(
        lineages[0].key_path,
        home.join("ecc.example.com_ecc/ecc.example.com.key")
    );
    for l in &lineages {
        assert_eq!(l.layout, Layout::AcmeSh);
        assert!(l.result.is_ok(), "{:?}", l.result);
    }
}

#[test]
fn kubernetes_secret_mount_through_data_link() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("www-tls");
    let issued = issue(&["www.example.com"]);
    let ts = mount.join("..2026_11_29_10_00_00.000000001");
    write(&ts.join("tls.crt"), &issued.fullchain_pem);
    write(&ts.join("tls.key"), &issued.key_pem);
    symlink("..2026_11_29_10_00_00.000000001", mount.join("..data")).unwrap();
    symlink("..data/tls.crt", mount.join("tls.crt")).unwrap();
    symlink("..data/tls.key", mount.join("tls.key")).unwrap();

    for watch in [dir.path(), mount.as_path()] {
        let lineages = scan(&[watch]);
        let l = only(&lineages);
        assert_eq!(l.layout, Layout::Kubernetes);
        assert_eq!(l.id, mount.display().to_string());
        assert!(l.result.is_ok(), "{:?}", l.result);
    }
}

#[test]
fn lego_pairs_are_separate_lineages_and_issuer_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let lego = dir.path().join(".lego");
    let certs = lego.join("certificates");
    write(&lego.join("accounts/acme/x@example.com/account.json"), "{}");
    for name in ["a.example.com", "_.example.com"] {
        let issued = issue(&[&name.replace('_', "*")]);
        write(&certs.join(format!("{name}.crt")), &issued.fullchain_pem);
        write(&certs.join(format!("{name}.issuer.crt")), &issued.chain_pem);
        write(&certs.join(format!("{name}.key")), &issued.key_pem);
        write(&certs.join(format!("{name}.json")), "{}");
    }
    write(
        &certs.join("lonely.example.com.key"),
        &issue(&["x.example.com"]).key_pem,
    );

    for watch in [lego.as_path(), certs.as_path()] {
        let lineages = scan(&[watch]);
        let ids: Vec<_> = lineages.iter().map(|l| l.id.clone()).collect();
        let id = |n: &str| certs.join(n).display().to_string();
        assert_eq!(
            ids,
            [
                id("_.example.com"),
                id("a.example.com"),
                id("lonely.example.com")
            ]
        );
        assert!(lineages.iter().all(|l| l.layout == Layout::Lego));
        assert_eq!(
            lineages[0].result.as_ref().unwrap().names,
            ["*.example.com"]
        );
        assert!(lineages[1].result.is_ok());
        assert_eq!(error(&lineages[2]).kind(), "missing-certificate");
    }
    // A root holding the lego folder as a subfolder works too.
    assert_eq!(
        scan(&[dir.path()]).len(),
        0,
        "dot-folders of a root are skipped"
    );
}

#[test]
fn problems_are_per_lineage() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    certbot(
        dir.path(),
        "good.example.com",
        1,
        &issue(&["good.example.com"]),
    );
    fs::create_dir_all(live.join("empty")).unwrap();
    let no_key = live.join("nokey");
    write(
        &no_key.join("fullchain.pem"),
        &issue(&["n.example.com"]).fullchain_pem,
    );
    let no_cert = live.join("nocert");
    write(
        &no_cert.join("privkey.pem"),
        &issue(&["n.example.com"]).key_pem,
    );
    let looped = live.join("loop");
    fs::create_dir_all(&looped).unwrap();
    symlink("fullchain.pem", looped.join("fullchain.pem")).unwrap();
    write(&looped.join("privkey.pem"), "x");
    let dangling = live.join("dangling");
    fs::create_dir_all(&dangling).unwrap();
    symlink(
        "../../archive/gone/fullchain1.pem",
        dangling.join("fullchain.pem"),
    )
    .unwrap();
    write(&dangling.join("privkey.pem"), "x");
    symlink("self", live.join("self")).unwrap();
    symlink("nowhere", live.join("gone")).unwrap();
    let folder_key = live.join("folder-key");
    write(
        &folder_key.join("fullchain.pem"),
        &issue(&["f.example.com"]).fullchain_pem,
    );
    fs::create_dir_all(folder_key.join("privkey.pem")).unwrap();
    let mismatch = live.join("mismatch");
    write(
        &mismatch.join("fullchain.pem"),
        &issue(&["m.example.com"]).fullchain_pem,
    );
    write(
        &mismatch.join("privkey.pem"),
        &issue(&["m.example.com"]).key_pem,
    );

    let lineages = scan(&[&live]);
    let kinds: Vec<(String, &str)> = lineages
        .iter()
        .map(|l| {
            let name = Path::new(&l.id)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string();
            (name, l.result.as_ref().map_or_else(|e| e.kind(), |_| "ok"))
        })
        .collect();
    let expect = [
        ("dangling", "dangling-symlink"),
        ("empty", "no-pair"),
        ("folder-key", "not-a-file"),
        ("gone", "dangling-symlink"),
        ("good.example.com", "ok"),
        ("loop", "symlink-loop"),
        ("mismatch", "key-mismatch"),
        ("nocert", "missing-certificate"),
        ("nokey", "missing-key"),
        ("self", "symlink-loop"),
    ];
    let expect: Vec<(String, &str)> = expect.iter().map(|(a, b)| (a.to_string(), *b)).collect();
    assert_eq!(kinds, expect);

    let text = |name: &str| {
        let l = lineages.iter().find(|l| l.id.ends_with(name)).unwrap();
        error(l).to_string()
    };
    assert!(text("/nokey").contains(&format!(
        "{}: certificate without a private key",
        no_key.join("fullchain.pem").display()
    )));
    assert!(text("/nokey").contains("privkey.pem is missing"));
    assert!(text("/nocert").starts_with(&no_cert.join("privkey.pem").display().to_string()));
    assert!(text("/loop").starts_with(&looped.join("fullchain.pem").display().to_string()));
    assert!(text("/empty").contains("no recognised certificate/key pair"));
    assert!(text("/folder-key").starts_with(&folder_key.join("privkey.pem").display().to_string()));
    assert!(text("/gone").contains("dangling symlink"));
    assert!(
        text("/mismatch").contains(" and "),
        "both files are named: {}",
        text("/mismatch")
    );
}

#[test]
fn watch_path_problems() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let l = scan(&[&missing]);
    assert_eq!(error(only(&l)).kind(), "watch-path-missing");
    assert_eq!(l[0].layout, Layout::Unknown);
    assert!(
        error(&l[0])
            .to_string()
            .starts_with(&missing.display().to_string())
    );

    let file = dir.path().join("file");
    write(&file, "x");
    assert_eq!(error(only(&scan(&[&file]))).kind(), "not-a-folder");

    // Watching /etc/letsencrypt instead of its live/ folder: the hint says so.
    let le = dir.path().join("letsencrypt");
    certbot(&le, "a.example.com", 1, &issue(&["a.example.com"]));
    let lineages = scan(&[&le]);
    let live = lineages.iter().find(|l| l.id.ends_with("/live")).unwrap();
    assert!(
        error(live)
            .to_string()
            .contains(&format!("watch {} instead", le.join("live").display()))
    );
}

#[test]
fn oversized_files_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let lineage = dir.path().join("big");
    write(
        &lineage.join("privkey.pem"),
        &issue(&["b.example.com"]).key_pem,
    );
    let big = fs::File::create(lineage.join("fullchain.pem")).unwrap();
    big.set_len(50 * 1024 * 1024).unwrap();
    let mut scanner = Scanner::new();
    let l = scanner.scan(std::slice::from_ref(&lineage));
    let e = error(only(&l));
    assert_eq!(e.kind(), "too-large");
    assert!(
        e.to_string()
            .contains("52428800 bytes, more than the 1 MiB limit"),
        "{e}"
    );
    assert_eq!(scanner.last_scan().bytes_read, 0);

    // Exactly at the limit is read (and is not a certificate).
    let big = fs::OpenOptions::new()
        .write(true)
        .open(lineage.join("fullchain.pem"))
        .unwrap();
    big.set_len(MAX_FILE_BYTES).unwrap();
    let l = scanner.scan(&[lineage]);
    assert_eq!(error(only(&l)).kind(), "not-pem");
    assert!(scanner.last_scan().bytes_read > MAX_FILE_BYTES);
}

#[test]
fn io_errors_map_to_problems() {
    let p = Path::new("/x/privkey.pem");
    let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
    let e = read::io_problem(p, &denied);
    assert_eq!(e.kind(), "unreadable");
    assert!(e.to_string().starts_with("/x/privkey.pem: cannot read it"));
    assert!(e.to_string().contains("read access"));
    let looped = std::io::Error::from_raw_os_error(40);
    assert_eq!(read::io_problem(p, &looped).kind(), "symlink-loop");
}

#[test]
fn unchanged_lineages_come_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let live = certbot_lineages(dir.path(), 5);
    let mut scanner = Scanner::with_threads(3);
    let first = scanner.scan(std::slice::from_ref(&live));
    let cold = scanner.last_scan();
    assert_eq!(
        (cold.lineages, cold.parsed, cold.files_read, cold.cache_hits),
        (5, 5, 10, 0)
    );
    assert_eq!(cold.folders_listed, 6, "the root and each lineage folder");
    assert!(cold.bytes_read > 0);

    let second = scanner.scan(std::slice::from_ref(&live));
    let warm = scanner.last_scan();
    assert_eq!(
        (
            warm.lineages,
            warm.parsed,
            warm.files_read,
            warm.bytes_read,
            warm.cache_hits
        ),
        (5, 0, 0, 0, 5)
    );
    assert_eq!(
        warm.folders_listed, 1,
        "known certbot folders are not listed again"
    );
    for (a, b) in first.iter().zip(&second) {
        assert!(Arc::ptr_eq(
            a.result.as_ref().unwrap(),
            b.result.as_ref().unwrap()
        ));
    }

    // A certbot renewal (new archive files, re-linked) re-reads that lineage only.
    let renewed = issue(&["s2.example.com"]);
    certbot(dir.path(), "s2.example.com", 2, &renewed);
    let third = scanner.scan(std::slice::from_ref(&live));
    let after = scanner.last_scan();
    assert_eq!(
        (after.parsed, after.files_read, after.cache_hits),
        (1, 2, 4)
    );
    assert_eq!(after.folders_listed, 1, "re-pointed links need no listing");
    assert_eq!(
        third[2].result.as_ref().unwrap().chain_pem().lines().next(),
        renewed.fullchain_pem.lines().next()
    );

    // An in-place rewrite (same inode, new content) is seen too.
    let s3 = live.join("s3.example.com/privkey.pem");
    let other = issue(&["s3.example.com"]);
    fs::write(fs::canonicalize(&s3).unwrap(), &other.key_pem).unwrap();
    let fourth = scanner.scan(std::slice::from_ref(&live));
    assert_eq!(scanner.last_scan().parsed, 1);
    assert_eq!(error(&fourth[3]).kind(), "key-mismatch");

    // Invalid content is cached too: not re-read while unchanged.
    scanner.scan(std::slice::from_ref(&live));
    assert_eq!(scanner.last_scan().parsed, 0);
    assert_eq!(scanner.stats().scans, 5);
    assert_eq!(scanner.stats().parsed, 7);

    // A missing file sends the folder back to listing (and is reported).
    let s4_key = live.join("s4.example.com/privkey.pem");
    let s4_target = fs::read_link(&s4_key).unwrap();
    fs::remove_file(&s4_key).unwrap();
    let missing = scanner.scan(std::slice::from_ref(&live));
    assert_eq!(scanner.last_scan().folders_listed, 2);
    assert_eq!(error(&missing[4]).kind(), "missing-key");
    symlink(&s4_target, &s4_key).unwrap();
    assert!(scanner.scan(std::slice::from_ref(&live))[4].result.is_ok());

    // A removed lineage disappears.
    fs::remove_dir_all(live.join("s0.example.com")).unwrap();
    assert_eq!(scanner.scan(&[live]).len(), 4);
}

/// Lineages from one CA share one copy of its intermediate (what the idle daemon holds per
/// lineage is its leaf and key); a second CA's lineage adds one; once that lineage is
/// gone, its intermediate is forgotten.
#[test]
fn lineages_with_the_same_issuers_share_them_and_gone_ones_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let live = certbot_lineages(dir.path(), 4);
    let other = TestCa::new("Another source test CA").unwrap();
    let leaf = Leaf::new(
        &["o.example.com"],
        NOW - Duration::days(1),
        NOW + Duration::days(80),
    );
    let issued = other.issue(&leaf).unwrap();
    certbot(dir.path(), "o.example.com", 1, &issued);
    let mut scanner = Scanner::with_threads(2);
    let lineages = scanner.scan(std::slice::from_ref(&live));
    let certs: Vec<&Arc<Certificate>> = lineages
        .iter()
        .map(|l| l.result.as_ref().unwrap())
        .collect();
    assert_eq!(certs.len(), 5);
    // Sorted by id: o.example.com first, then s0..s3.
    assert!(!certs[0].shares_issuers_with(certs[1]));
    assert!(certs[1..].iter().all(|c| c.shares_issuers_with(certs[1])));
    assert_eq!(scanner.issuers.len(), 2);
    assert_eq!(certs[0].chain_pem(), issued.fullchain_pem);
    drop(lineages);

    fs::remove_dir_all(live.join("o.example.com")).unwrap();
    let after = scanner.scan(std::slice::from_ref(&live));
    assert_eq!(after.len(), 4);
    assert_eq!(
        scanner.issuers.len(),
        1,
        "the gone lineage's issuers are kept"
    );
}

#[test]
fn thread_count_does_not_change_results() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..7 {
        let name = format!("t{i}.example.com");
        certbot(dir.path(), &name, 1, &issue(&[&name]));
    }
    fs::create_dir_all(dir.path().join("live/bad")).unwrap();
    let live = vec![dir.path().join("live")];
    let one = Scanner::with_threads(1).scan(&live);
    let many = Scanner::with_threads(4).scan(&live);
    let summary = |ls: &[Lineage]| -> Vec<(String, bool)> {
        ls.iter()
            .map(|l| (l.id.clone(), l.result.is_ok()))
            .collect()
    };
    assert_eq!(summary(&one), summary(&many));
    assert_eq!(one.len(), 8);
}

#[test]
fn duplicate_watch_paths_give_one_lineage_each() {
    let dir = tempfile::tempdir().unwrap();
    let a = certbot(dir.path(), "a.example.com", 1, &issue(&["a.example.com"]));
    let live = dir.path().join("live");
    assert_eq!(scan(&[&live, &a, &live]).len(), 1);
}

#[test]
fn valid_at_applies_time_with_the_chain_path() {
    let dir = tempfile::tempdir().unwrap();
    let leaf = Leaf::new(
        &["old.example.com"],
        NOW - Duration::days(100),
        NOW - Duration::days(10),
    );
    let lineage = certbot(dir.path(), "old", 1, &ca().issue(&leaf).unwrap());
    let l = scan(&[&lineage]);
    let l = only(&l);
    assert!(l.result.is_ok(), "scan is time-independent");
    let e = l.valid_at(NOW).unwrap_err();
    assert_eq!(e.kind(), "expired");
    assert!(
        e.to_string().starts_with(&format!(
            "{}: expired",
            lineage.join("fullchain.pem").display()
        )),
        "{e}"
    );
    assert!(l.valid_at(NOW - Duration::days(50)).is_ok());
}

#[test]
fn errors_carry_no_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let lineage = dir.path().join("x");
    let issued = issue(&["x.example.com"]);
    write(&lineage.join("fullchain.pem"), &issued.key_pem);
    write(&lineage.join("privkey.pem"), &issued.fullchain_pem);
    let l = scan(&[&lineage]);
    let e = error(only(&l));
    let text = format!("{e} {e:?} {l:?}");
    assert!(!text.contains("PRIVATE KEY-----"), "{text}");
    let body = issued.key_pem.lines().nth(1).unwrap();
    assert!(!text.contains(body));
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn a_fifo_as_a_certificate_file_is_a_lineage_problem() {
    let dir = tempfile::tempdir().unwrap();
    let lineage = dir.path().join("fifo.example.com");
    write(
        &lineage.join("privkey.pem"),
        &issue(&["fifo.example.com"]).key_pem,
    );
    mkfifo(&lineage.join("fullchain.pem"));
    let l = scan(&[&lineage]);
    let e = error(only(&l));
    assert_eq!(e.kind(), "not-a-file");
    assert!(
        e.to_string()
            .contains("a FIFO (named pipe), not a regular file"),
        "{e}"
    );
}

#[test]
fn a_file_swapped_for_a_fifo_after_the_probe_is_refused_by_the_read() {
    // The probe saw a regular file; by the time of the read a FIFO is there. The read
    // must neither block in `open` nor read it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fullchain.pem");
    mkfifo(&path);
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        let _ = tx.send(read::read(&p).map(|_| ()));
    });
    let answer = rx.recv_timeout(std::time::Duration::from_secs(30));
    if answer.is_err() {
        // Release the blocked reader before failing.
        let _ = fs::OpenOptions::new().write(true).open(&path);
        panic!("reading a FIFO blocked");
    }
    let e = answer.unwrap().unwrap_err();
    assert_eq!(e.kind(), "not-a-file");
    assert!(
        e.to_string().starts_with(&path.display().to_string()),
        "{e}"
    );
}

#[test]
fn a_lineage_folder_whose_name_is_not_utf8_is_reported() {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = tempfile::tempdir().unwrap();
    let good = certbot(
        dir.path(),
        "good.example.com",
        1,
        &issue(&["good.example.com"]),
    );
    let name = std::ffi::OsStr::from_bytes(b"bad\xff\x1b[31m\n.example.com");
    let bad = dir.path().join("live").join(name);
    fs::create_dir_all(&bad).unwrap();
    let issued = issue(&["bad.example.com"]);
    write(&bad.join("fullchain.pem"), &issued.fullchain_pem);
    write(&bad.join("privkey.pem"), &issued.key_pem);

    let lineages = scan(&[&dir.path().join("live")]);
    assert_eq!(lineages.len(), 2, "{lineages:#?}");
    let ok = lineages.iter().find(|l| l.id == good.display().to_string());
    assert!(ok.is_some_and(|l| l.result.is_ok()), "{lineages:#?}");
    let problem = lineages.iter().find(|l| l.result.is_err()).unwrap();
    let e = error(problem);
    assert_eq!(e.kind(), "name-not-utf8");
    let live = dir.path().join("live").display().to_string();
    let shown = format!("{live}/bad\u{fffd}\\x1b[31m\\x0a.example.com");
    assert_eq!(problem.id, shown);
    assert!(!problem.id.chars().any(char::is_control), "{}", problem.id);
    let text = e.to_string();
    assert!(text.starts_with(&shown), "{text}");
    assert!(text.contains("rename the folder"), "{text}");
    assert!(!text.chars().any(char::is_control), "{text}");
    assert_eq!(
        problem.chain_path, bad,
        "the real path is kept for the scan"
    );
}
