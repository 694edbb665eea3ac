//! Real folders, real inotify. Waiting is bounded (10 s) and ends as soon as the expected
//! notice arrives. "Nothing happened" is asserted without sleeping: inotify keeps events in
//! order, so after an action we write a sentinel file and check that everything that
//! arrived before the sentinel's notice is unrelated to the action.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{
    AccessKind, AccessMode, CreateKind, DataChange, EventKind, ModifyKind, RemoveKind, RenameMode,
};
use tokio::sync::mpsc::{self, Receiver};

use super::*;

const WAIT: Duration = Duration::from_secs(10);

fn base() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = fs::canonicalize(dir.path()).expect("canonical tempdir");
    (dir, path)
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// `base/archive/<name>/{cert,privkey,chain,fullchain}1.pem` and relative `live/` links, as
/// certbot lays them out. Returns (live lineage folder, archive lineage folder).
fn certbot_lineage(base: &Path, name: &str) -> (PathBuf, PathBuf) {
    let archive = base.join("archive").join(name);
    let live = base.join("live").join(name);
    fs::create_dir_all(&archive).expect("archive");
    fs::create_dir_all(&live).expect("live");
    for kind in ["cert", "privkey", "chain", "fullchain"] {
        write(&archive.join(format!("{kind}1.pem")), kind);
        symlink(
            format!("../../archive/{name}/{kind}1.pem"),
            live.join(format!("{kind}.pem")),
        )
        .expect("link");
    }
    (live, archive)
}

async fn expect(rx: &mut Receiver<Notice>, what: &str, want: impl Fn(&Notice) -> bool) -> Notice {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(n)) if want(&n) => return n,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the notice channel closed while waiting for {what}"),
            Err(_) => panic!("no notice for {what} within {WAIT:?}"),
        }
    }
}

fn changed(path: &Path) -> impl Fn(&Notice) -> bool + '_ {
    move |n| matches!(n, Notice::Changed(p) if p == path)
}

fn root_changed(path: &Path) -> impl Fn(&Notice) -> bool + '_ {
    move |n| matches!(n, Notice::RootChanged(p) if p == path)
}

/// Writes `dir/.sentinel-<tag>` and returns every notice received up to its own.
async fn until_sentinel(rx: &mut Receiver<Notice>, dir: &Path, tag: &str) -> Vec<Notice> {
    let sentinel = dir.join(format!(".sentinel-{tag}"));
    write(&sentinel, tag);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Notice::Changed(p))) if p == sentinel => return seen,
            Ok(Some(n)) => seen.push(n),
            Ok(None) => panic!("the notice channel closed"),
            Err(_) => panic!("sentinel {} not seen within {WAIT:?}", sentinel.display()),
        }
    }
}

/// Notices not caused by sentinel files.
fn not_sentinels(notices: Vec<Notice>) -> Vec<Notice> {
    notices
        .into_iter()
        .filter(|n| {
            !matches!(n, Notice::Changed(p)
                if p.file_name().is_some_and(|f| f.to_string_lossy().starts_with(".sentinel-")))
        })
        .collect()
}

#[tokio::test]
async fn certbot_renewal_is_seen_in_archive_and_in_each_live_link_swap() {
    let (_dir, base) = base();
    let (live, archive) = certbot_lineage(&base, "example.com");
    certbot_lineage(&base, "other.org");
    let root = base.join("live");
    let (mut watch, mut rx) = Watch::new(std::slice::from_ref(&root)).expect("watch");
    let report = watch.refresh();
    assert_eq!(report.armed, vec![root.clone()]);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(
        report.link_targets,
        vec![archive.clone(), base.join("archive/other.org")],
        "live/ links point into archive/: those folders are watched too"
    );
    assert!(!watch.degraded());

    // certbot writes the new versions into archive/ first …
    for kind in ["cert", "privkey", "chain", "fullchain"] {
        let new = archive.join(format!("{kind}2.pem"));
        write(&new, "renewed");
        expect(&mut rx, "a new file in archive/", changed(&new)).await;
    }
    // … then swaps each live/ link: unlink, symlink (cert, privkey, chain, fullchain).
    for kind in ["cert", "privkey", "chain", "fullchain"] {
        let link = live.join(format!("{kind}.pem"));
        fs::remove_file(&link).expect("unlink");
        expect(&mut rx, "the live link removed", changed(&link)).await;
        symlink(format!("../../archive/example.com/{kind}2.pem"), &link).expect("symlink");
        expect(&mut rx, "the live link re-created", changed(&link)).await;
    }
}

#[tokio::test]
async fn a_new_certbot_lineage_gets_its_archive_folder_watched_at_the_next_refresh() {
    let (_dir, base) = base();
    certbot_lineage(&base, "example.com");
    let root = base.join("live");
    let (mut watch, mut rx) = Watch::new(std::slice::from_ref(&root)).expect("watch");
    watch.refresh();
    let (live, archive) = certbot_lineage(&base, "new.org");
    expect(&mut rx, "the new lineage folder", changed(&live)).await;
    let report = watch.refresh();
    assert!(report.link_targets.contains(&archive), "{report:?}");
    let renewed = archive.join("cert2.pem");
    write(&renewed, "renewed");
    expect(
        &mut rx,
        "a write into the new archive folder",
        changed(&renewed),
    )
    .await;
    // Its lineage deleted: the folder is no longer watched.
    fs::remove_dir_all(&live).expect("rm live");
    fs::remove_dir_all(&archive).expect("rm archive");
    expect(&mut rx, "the lineage folder deleted", changed(&live)).await;
    let report = watch.refresh();
    assert!(!report.link_targets.contains(&archive), "{report:?}");
}

#[tokio::test]
async fn kubernetes_data_symlink_swap_is_seen() {
    let (_dir, base) = base();
    let root = base.join("secret");
    let old = root.join("..2026_11_29_10_00_00.1");
    fs::create_dir_all(&old).expect("mkdir");
    write(&old.join("tls.crt"), "crt");
    write(&old.join("tls.key"), "key");
    symlink("..2026_11_29_10_00_00.1", root.join("..data")).expect("..data");
    symlink("..data/tls.crt", root.join("tls.crt")).expect("tls.crt");
    symlink("..data/tls.key", root.join("tls.key")).expect("tls.key");
    let (mut watch, mut rx) = Watch::new(std::slice::from_ref(&root)).expect("watch");
    let report = watch.refresh();
    assert!(
        report.link_targets.is_empty(),
        "links stay inside the root: {report:?}"
    );

    // What the kubelet does: new timestamped folder, ..data_tmp link, rename over ..data.
    let new = root.join("..2026_11_29_11_00_00.2");
    fs::create_dir(&new).expect("mkdir");
    write(&new.join("tls.crt"), "crt2");
    write(&new.join("tls.key"), "key2");
    symlink("..2026_11_29_11_00_00.2", root.join("..data_tmp")).expect("tmp link");
    fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
    expect(&mut rx, "..data replaced", changed(&root.join("..data"))).await;
    fs::remove_dir_all(&old).expect("rm old");
    expect(&mut rx, "the old folder removed", changed(&old)).await;
}

#[tokio::test]
async fn acme_sh_and_lego_rewriting_files_in_place_are_seen() {
    let (_dir, base) = base();
    let acme = base.join("acme");
    let lineage = acme.join("example.com_ecc");
    fs::create_dir_all(&lineage).expect("mkdir");
    write(&lineage.join("fullchain.cer"), "v1");
    write(&lineage.join("example.com.key"), "k1");
    let lego = base.join("lego");
    let certs = lego.join("certificates");
    fs::create_dir_all(&certs).expect("mkdir");
    write(&certs.join("example.org.crt"), "v1");
    write(&certs.join("example.org.key"), "k1");
    let (mut watch, mut rx) = Watch::new(&[acme, lego]).expect("watch");
    assert_eq!(watch.refresh().armed.len(), 2);

    let fullchain = lineage.join("fullchain.cer");
    write(&fullchain, "v2: rewritten in place");
    expect(&mut rx, "acme.sh fullchain rewritten", changed(&fullchain)).await;
    let key = lineage.join("example.com.key");
    write(&key, "k2");
    expect(&mut rx, "acme.sh key rewritten", changed(&key)).await;
    let crt = certs.join("example.org.crt");
    write(&crt, "v2: rewritten in place");
    expect(&mut rx, "lego certificate rewritten", changed(&crt)).await;
    // A permission change can make a key readable: it counts too.
    let key = certs.join("example.org.key");
    let mut perms = fs::metadata(&key).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o640);
    fs::set_permissions(&key, perms).expect("chmod");
    expect(&mut rx, "lego key chmod", changed(&key)).await;
}

#[tokio::test]
async fn lineage_folders_created_and_deleted_are_seen() {
    let (_dir, base) = base();
    let root = base.join("live");
    fs::create_dir(&root).expect("mkdir");
    let (mut watch, mut rx) = Watch::new(std::slice::from_ref(&root)).expect("watch");
    watch.refresh();
    let lineage = root.join("new.example");
    fs::create_dir(&lineage).expect("mkdir lineage");
    expect(&mut rx, "lineage created", changed(&lineage)).await;
    fs::remove_dir(&lineage).expect("rmdir lineage");
    expect(&mut rx, "lineage deleted", changed(&lineage)).await;
}

#[tokio::test]
async fn reading_the_files_produces_no_notice() {
    let (_dir, base) = base();
    let (live, archive) = certbot_lineage(&base, "example.com");
    let root = base.join("live");
    let (mut watch, mut rx) = Watch::new(std::slice::from_ref(&root)).expect("watch");
    watch.refresh();
    until_sentinel(&mut rx, &root, "before").await;

    // Everything a pass does: list folders, stat, resolve and read every file.
    for dir in [&root, &live, &archive] {
        for entry in fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            fs::symlink_metadata(&path).expect("lstat");
            if path.is_file() {
                fs::canonicalize(&path).expect("canonicalize");
                fs::read(&path).expect("read");
                let _ = fs::read_link(&path);
            }
        }
    }
    // And the watcher's own refresh walks the tree.
    watch.refresh();

    let seen = not_sentinels(until_sentinel(&mut rx, &root, "after").await);
    assert!(seen.is_empty(), "reading produced notices: {seen:?}");
}

#[tokio::test]
async fn a_deleted_and_recreated_root_is_rearmed() {
    let (_dir, base) = base();
    certbot_lineage(&base, "example.com");
    let root = base.join("live");
    let (mut watch, mut rx) = Watch::new(std::slice::from_ref(&root)).expect("watch");
    watch.refresh();

    fs::remove_dir_all(&root).expect("rm root");
    expect(&mut rx, "root deleted", root_changed(&root)).await;
    let report = watch.refresh();
    assert_eq!(report.missing, vec![root.clone()]);

    fs::create_dir(&root).expect("mkdir root");
    expect(&mut rx, "root re-created", root_changed(&root)).await;
    let report = watch.refresh();
    assert_eq!(report.rearmed, vec![root.clone()], "{report:?}");

    let lineage = root.join("example.com");
    fs::create_dir(&lineage).expect("mkdir lineage");
    expect(
        &mut rx,
        "a change in the re-created root",
        changed(&lineage),
    )
    .await;
}

#[tokio::test]
async fn a_root_replaced_by_rename_is_rearmed_and_the_old_folder_forgotten() {
    let (_dir, base) = base();
    let root = base.join("live");
    fs::create_dir(&root).expect("mkdir");
    let (mut watch, mut rx) = Watch::new(std::slice::from_ref(&root)).expect("watch");
    watch.refresh();

    let old = base.join("live.old");
    fs::rename(&root, &old).expect("mv away");
    fs::create_dir(&root).expect("mkdir new root");
    expect(&mut rx, "root replaced", root_changed(&root)).await;
    let report = watch.refresh();
    assert_eq!(report.rearmed, vec![root.clone()], "{report:?}");

    write(&old.join("stale.pem"), "x");
    let seen = not_sentinels(until_sentinel(&mut rx, &root, "new").await);
    assert!(
        !seen
            .iter()
            .any(|n| matches!(n, Notice::Changed(p) if p.ends_with("stale.pem"))),
        "a write in the renamed-away folder was reported under the root: {seen:?}"
    );
}

#[tokio::test]
async fn a_root_missing_at_start_is_armed_when_it_appears_even_deep_down() {
    let (_dir, base) = base();
    let root = base.join("etc/letsencrypt/live");
    let (mut watch, mut rx) = Watch::new(std::slice::from_ref(&root)).expect("watch");
    let report = watch.refresh();
    assert_eq!(report.missing, vec![root.clone()]);
    assert!(report.armed.is_empty());

    fs::create_dir(base.join("etc")).expect("mkdir etc");
    expect(&mut rx, "an ancestor appears", root_changed(&root)).await;
    assert_eq!(watch.refresh().missing, vec![root.clone()]);
    fs::create_dir_all(&root).expect("mkdir -p");
    expect(&mut rx, "the rest of the path appears", root_changed(&root)).await;
    let report = watch.refresh();
    assert_eq!(report.armed, vec![root.clone()], "{report:?}");

    let file = root.join("README");
    write(&file, "x");
    expect(&mut rx, "a write in the new root", changed(&file)).await;
}

#[tokio::test]
async fn a_root_that_is_a_file_is_reported() {
    let (_dir, base) = base();
    let file = base.join("fullchain.pem");
    write(&file, "x");
    let (mut watch, _rx) = Watch::new(std::slice::from_ref(&file)).expect("watch");
    let report = watch.refresh();
    assert_eq!(report.errors.len(), 1);
    let err = &report.errors[0];
    assert_eq!(err.kind(), "not-a-folder");
    let msg = err.to_string();
    assert!(
        msg.contains(&file.display().to_string()) && msg.contains("[watch] paths"),
        "{msg}"
    );
}

#[tokio::test]
async fn an_unreadable_root_is_reported_with_what_to_check() {
    let (_dir, base) = base();
    let root = base.join("live");
    fs::create_dir(&root).expect("mkdir");
    // An error other than "not found" while looking at the root (here: not a folder on the
    // way, ENOTDIR).
    let odd = base.join("file");
    write(&odd, "x");
    let bad = odd.join("live");
    let (mut watch, _rx) = Watch::new(&[root, bad.clone()]).expect("watch");
    let report = watch.refresh();
    assert_eq!(report.armed.len(), 1);
    let err = report.errors.first().expect("an error for the bad path");
    assert_eq!(err.kind(), "watch");
    let msg = err.to_string();
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
    assert!(msg.contains("permissions"), "{msg}");
}

#[tokio::test]
async fn symlinked_folders_are_not_followed_recursively_and_loops_are_harmless() {
    let (_dir, base) = base();
    let root = base.join("certs");
    fs::create_dir(&root).expect("mkdir");
    let outside = base.join("outside");
    fs::create_dir_all(outside.join("deep")).expect("mkdir");
    symlink(&outside, root.join("ext")).expect("link out");
    symlink(&root, root.join("loop")).expect("loop");
    symlink("..", root.join("up")).expect("up");
    let (mut watch, mut rx) = Watch::new(std::slice::from_ref(&root)).expect("watch");
    let report = watch.refresh();
    assert!(report.link_targets.contains(&outside), "{report:?}");
    assert!(!report.link_targets.contains(&root));

    // Only the linked folder's own entries matter (a lineage's files); deeper is not watched.
    write(&outside.join("deep/x.pem"), "x");
    let seen = not_sentinels(until_sentinel(&mut rx, &root, "deep").await);
    assert!(
        seen.is_empty(),
        "a deep write under a linked folder was seen: {seen:?}"
    );
    let direct = outside.join("tls.crt");
    write(&direct, "x");
    expect(&mut rx, "a file in the linked folder", changed(&direct)).await;
}

#[tokio::test]
async fn set_paths_moves_the_watches() {
    let (_dir, base) = base();
    let a = base.join("a");
    let b = base.join("b");
    fs::create_dir(&a).expect("mkdir");
    fs::create_dir(&b).expect("mkdir");
    let (mut watch, mut rx) = Watch::new(std::slice::from_ref(&a)).expect("watch");
    watch.refresh();
    let report = watch.set_paths(std::slice::from_ref(&b));
    assert_eq!(report.armed, vec![b.clone()]);
    assert_eq!(watch.paths(), vec![b.clone()]);
    write(&a.join("ignored"), "x");
    let seen = not_sentinels(until_sentinel(&mut rx, &b, "b").await);
    assert!(
        seen.is_empty(),
        "the dropped path is still watched: {seen:?}"
    );
}

#[tokio::test]
async fn dropping_the_watch_closes_the_channel() {
    let (_dir, base) = base();
    let (mut watch, mut rx) = Watch::new(std::slice::from_ref(&base)).expect("watch");
    watch.refresh();
    drop(watch);
    let end = tokio::time::timeout(WAIT, async { while rx.recv().await.is_some() {} }).await;
    assert!(end.is_ok(), "the channel stayed open");
}

#[test]
fn roots_are_absolute_deduplicated_and_not_nested() {
    let roots = normalize_roots(&[
        PathBuf::from("/etc/letsencrypt/live/example.com"),
        PathBuf::from("/etc/letsencrypt/live"),
        PathBuf::from("/etc/letsencrypt/live"),
        PathBuf::from("/srv/certs"),
        PathBuf::from("relative"),
    ]);
    let cwd = std::env::current_dir().expect("cwd");
    let mut want = vec![
        PathBuf::from("/etc/letsencrypt/live"),
        PathBuf::from("/srv/certs"),
        cwd.join("relative"),
    ];
    want.sort();
    assert_eq!(roots, want);
}

#[test]
fn access_events_are_ignored_and_writes_kept() {
    assert!(!relevant(&EventKind::Access(AccessKind::Open(
        AccessMode::Any
    ))));
    assert!(!relevant(&EventKind::Access(AccessKind::Close(
        AccessMode::Read
    ))));
    assert!(!relevant(&EventKind::Access(AccessKind::Read)));
    assert!(relevant(&EventKind::Access(AccessKind::Close(
        AccessMode::Write
    ))));
    assert!(relevant(&EventKind::Create(CreateKind::File)));
    assert!(relevant(&EventKind::Remove(RemoveKind::Folder)));
    assert!(relevant(&EventKind::Modify(ModifyKind::Data(
        DataChange::Any
    ))));
}

#[test]
fn classify_keeps_roots_their_ancestors_and_link_targets_only() {
    let scope = Scope {
        roots: vec![PathBuf::from("/etc/letsencrypt/live")],
        link_targets: [PathBuf::from("/etc/letsencrypt/archive/a")]
            .into_iter()
            .collect(),
    };
    let create = EventKind::Create(CreateKind::File);
    let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));
    let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::From));
    let c = |p: &str, k: &EventKind| scope.classify(Path::new(p), k);
    let root = PathBuf::from("/etc/letsencrypt/live");
    assert_eq!(
        c("/etc/letsencrypt/live/a/cert.pem", &create),
        Some(Notice::Changed(PathBuf::from(
            "/etc/letsencrypt/live/a/cert.pem"
        )))
    );
    assert_eq!(
        c("/etc/letsencrypt/live", &renamed),
        Some(Notice::RootChanged(root.clone()))
    );
    assert_eq!(
        c("/etc/letsencrypt", &create),
        Some(Notice::RootChanged(root.clone()))
    );
    assert_eq!(
        c("/etc/letsencrypt/live", &data),
        Some(Notice::Changed(root.clone()))
    );
    assert_eq!(
        c("/etc/letsencrypt/archive/a/cert2.pem", &create),
        Some(Notice::Changed(PathBuf::from(
            "/etc/letsencrypt/archive/a/cert2.pem"
        )))
    );
    // Siblings seen through the parent watch, and deeper than a link target: ignored.
    assert_eq!(c("/etc/letsencrypt/renewal/a.conf", &data), None);
    assert_eq!(c("/etc/letsencrypt/.certbot.lock", &create), None);
    assert_eq!(c("/etc/letsencrypt/archive/a/sub/x", &create), None);
    assert_eq!(c("/etc/letsencrypt/live.bak/a", &create), None);
}

fn shared(capacity: usize) -> (Shared, Receiver<Notice>) {
    let (tx, rx) = mpsc::channel(capacity);
    let shared = Shared {
        tx,
        scope: RwLock::new(Scope::default()),
        dirty: Mutex::new(BTreeSet::new()),
        lost: AtomicBool::new(false),
        degraded: AtomicBool::new(false),
    };
    (shared, rx)
}

#[test]
fn the_watch_limit_is_a_clear_error_and_degrades_to_rescans() {
    let (shared, mut rx) = shared(8);
    let err = notify::Error::new(notify::ErrorKind::MaxFilesWatch)
        .add_path(PathBuf::from("/etc/letsencrypt/live/x"));
    shared.handle(Err(err));
    assert!(shared.degraded.load(Ordering::Relaxed));
    assert_eq!(rx.try_recv().ok(), Some(Notice::Lost));

    let err = WatchError::watching(
        Path::new("/etc/letsencrypt/live"),
        notify::Error::new(notify::ErrorKind::MaxFilesWatch),
    );
    assert_eq!(err.kind(), "inotify-limit");
    let msg = err.to_string();
    for needle in [
        "/etc/letsencrypt/live",
        "fs.inotify.max_user_watches",
        "sysctl -w fs.inotify.max_user_watches=",
        "/etc/sysctl.d/",
        "periodic rescans",
    ] {
        assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
    }
}

#[test]
fn too_many_inotify_instances_names_the_sysctl() {
    let io = io::Error::from_raw_os_error(EMFILE);
    let err = WatchError::init(notify::Error::io(io));
    assert_eq!(err.kind(), "inotify-instances");
    assert!(
        err.to_string().contains("fs.inotify.max_user_instances"),
        "{err}"
    );
    let other = WatchError::init(notify::Error::generic("boom"));
    assert_eq!(other.kind(), "watch-init");
    assert!(other.to_string().contains("periodic rescans"), "{other}");
}

#[test]
fn other_event_errors_and_overflows_ask_for_a_full_rescan() {
    let (shared, mut rx) = shared(8);
    shared.handle(Err(notify::Error::generic("read failed")));
    assert!(!shared.degraded.load(Ordering::Relaxed));
    assert_eq!(rx.try_recv().ok(), Some(Notice::Lost));
    let overflow = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
    shared.handle(Ok(overflow));
    assert_eq!(rx.try_recv().ok(), Some(Notice::Lost));
}

#[test]
fn a_full_channel_is_followed_by_lost_when_there_is_room() {
    let (shared, mut rx) = shared(1);
    let (a, b, c) = (
        PathBuf::from("/a"),
        PathBuf::from("/b"),
        PathBuf::from("/c"),
    );
    shared.send(Notice::Changed(a.clone()));
    shared.send(Notice::Changed(b)); // dropped: full
    assert_eq!(rx.try_recv().ok(), Some(Notice::Changed(a)));
    shared.send(Notice::Changed(c.clone()));
    assert_eq!(rx.try_recv().ok(), Some(Notice::Lost));
    // `c` did not fit behind `Lost` (capacity 1): it is lost too, and flagged again.
    assert!(rx.try_recv().is_err());
    assert!(shared.lost.load(Ordering::Relaxed));
    shared.send(Notice::Changed(c.clone()));
    assert_eq!(rx.try_recv().ok(), Some(Notice::Lost));
}

#[test]
fn root_events_mark_the_root_for_re_arming() {
    let (shared, mut rx) = shared(8);
    let root = PathBuf::from("/etc/letsencrypt/live");
    shared.scope.write().expect("lock").roots = vec![root.clone()];
    let removed = notify::Event::new(EventKind::Remove(RemoveKind::Folder)).add_path(root.clone());
    shared.handle(Ok(removed));
    assert_eq!(rx.try_recv().ok(), Some(Notice::RootChanged(root.clone())));
    assert!(shared.dirty.lock().expect("lock").contains(&root));
    // Reading is not a change.
    let opened = notify::Event::new(EventKind::Access(AccessKind::Open(AccessMode::Any)))
        .add_path(root.join("a/privkey.pem"));
    shared.handle(Ok(opened));
    assert!(rx.try_recv().is_err());
}
