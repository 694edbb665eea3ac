//! The reader on every kind of path (regular, FIFO, socket, device, folder, missing, too
//! large, growing), the permission check, and the writer's steps and ownership.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::mpsc;
use std::time::Duration;

use super::*;

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo: {}", io::Error::last_os_error());
}

/// Runs `f` on another thread; fails (instead of hanging) if it does not return, first
/// opening `fifo` for writing so that a reader stuck in `open` is released.
fn bounded<T: Send + 'static>(fifo: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(v) => v,
        Err(_) => {
            let _ = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(fifo);
            panic!("reading {} blocked", fifo.display());
        }
    }
}

#[test]
fn reads_a_regular_file_and_its_descriptor_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, b"hello").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let opened = open(&path).unwrap();
    assert_eq!(opened.metadata().len(), 5);
    assert_eq!(opened.metadata().mode() & 0o777, 0o640);
    assert_eq!(opened.read(5).unwrap(), b"hello");
    assert_eq!(*open(&path).unwrap().read_secret(100).unwrap(), b"hello");
    assert_eq!(read(&path, 5).unwrap(), b"hello");
    // The descriptor reads blocking again.
    let opened = open(&path).unwrap();
    // SAFETY: a valid descriptor owned by `opened`.
    let flags = unsafe { libc::fcntl(opened.file.as_raw_fd(), libc::F_GETFL) };
    assert_eq!(flags & libc::O_NONBLOCK, 0);
    // Through a symlink, and an empty file.
    std::os::unix::fs::symlink(&path, dir.path().join("link")).unwrap();
    assert_eq!(read(&dir.path().join("link"), 5).unwrap(), b"hello");
    fs::write(dir.path().join("empty"), b"").unwrap();
    assert!(read(&dir.path().join("empty"), 0).unwrap().is_empty());
}

#[test]
fn a_fifo_is_refused_without_blocking_even_when_opened_directly() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let p = fifo.clone();
    let err = bounded(&fifo, move || read(&p, 100).unwrap_err());
    assert_eq!(err.kind(), "not-a-regular-file");
    assert!(err.to_string().contains("a FIFO (named pipe)"), "{err}");
    assert!(
        err.to_string().contains(&fifo.display().to_string()),
        "{err}"
    );
    // A regular file swapped for a FIFO after the `stat`: the descriptor check catches it.
    let p = fifo.clone();
    let err = bounded(&fifo, move || open_descriptor(&p).unwrap_err());
    assert!(
        matches!(
            err,
            FsError::NotRegular {
                kind: FileKind::Fifo,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn devices_sockets_and_folders_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let zero = dir.path().join("zero");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    for (path, kind, words) in [
        (zero.clone(), FileKind::CharDevice, "a character device"),
        (dir.path().to_path_buf(), FileKind::Directory, "a folder"),
    ] {
        let err = read(&path, u64::MAX).unwrap_err();
        assert!(
            matches!(&err, FsError::NotRegular { kind: k, .. } if *k == kind),
            "{err:?}"
        );
        assert!(err.to_string().contains(words), "{err}");
        // Opened directly, the descriptor says the same (and nothing is read).
        let err = open_descriptor(&path).unwrap_err();
        assert!(
            matches!(&err, FsError::NotRegular { kind: k, .. } if *k == kind),
            "{err:?}"
        );
    }
    let sock = dir.path().join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let err = open_descriptor(&sock).unwrap_err();
    assert!(
        matches!(
            err,
            FsError::NotRegular {
                kind: FileKind::Socket,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(read(&sock, 1).unwrap_err().to_string().contains("a socket"));
}

#[test]
fn missing_and_unopenable_files_keep_the_os_reason() {
    let dir = tempfile::tempdir().unwrap();
    let err = read(&dir.path().join("nope"), 1).unwrap_err();
    assert_eq!(err.kind(), "file-not-found");
    assert!(err.to_string().contains("create it"), "{err}");
    assert_eq!(
        err.io_error().map(io::Error::kind),
        Some(io::ErrorKind::NotFound)
    );
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    let err = read(&a, 1).unwrap_err();
    assert_eq!(err.kind(), "file-open");
    assert_eq!(
        err.io_error().and_then(io::Error::raw_os_error),
        Some(libc::ELOOP)
    );
}

#[test]
fn the_cap_holds_by_size_and_while_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    fs::write(&path, vec![b'x'; 10_000]).unwrap();
    assert_eq!(read(&path, 10_000).unwrap().len(), 10_000);
    let err = read(&path, 9_999).unwrap_err();
    assert!(
        matches!(
            err,
            FsError::TooLarge {
                size: 10_000,
                limit: 9_999,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("9999-byte limit"), "{err}");
    // A file that grows after the `fstat`: the read stops at the cap + 1 byte.
    let opened = open(&path).unwrap();
    fs::write(&path, vec![b'y'; 50_000]).unwrap();
    let err = opened.read_secret(20_000).unwrap_err();
    assert!(
        matches!(
            err,
            FsError::TooLarge {
                size: 20_001,
                limit: 20_000,
                ..
            }
        ),
        "{err:?}"
    );
    // Grown well past the first buffer, within the cap.
    let opened = open(&dir.path().join("big")).unwrap();
    fs::write(&path, vec![b'z'; 30_000]).unwrap();
    assert_eq!(opened.read(1 << 20).unwrap(), vec![b'z'; 30_000]);
}

#[test]
fn permissions_are_checked_on_the_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    fs::write(&path, b"s").unwrap();
    for (mode, refused) in [(0o600, false), (0o400, false), (0o640, true), (0o604, true)] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let opened = open(&path).unwrap();
        // Changing the path's mode after the open does not change the answer.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        match opened.refuse_access(0o077) {
            Ok(()) => assert!(!refused, "{mode:o}"),
            Err(err) => {
                assert!(refused, "{mode:o}");
                assert_eq!(err.kind(), "file-permissions");
                let text = err.to_string();
                assert!(text.contains(&format!("mode {mode:04o}")), "{text}");
                assert!(
                    text.contains(&format!("chmod 600 {}", path.display())),
                    "{text}"
                );
            }
        }
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    open(&path).unwrap().refuse_access(0o007).unwrap();
}

// ------------------------------------------------------------------------------ writer

fn writer(path: &Path) -> AtomicWrite<'_> {
    AtomicWrite {
        path,
        temp_prefix: ".t.",
        temp_suffix: ".tmp",
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(".t."))
        .collect()
}

#[test]
fn a_fault_at_any_step_leaves_the_old_or_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.json");
    for step in [Step::Created, Step::Written, Step::Synced, Step::Renamed] {
        fs::write(&path, b"old").unwrap();
        let err = writer(&path)
            .write_with(b"new", &mut |s| {
                if s == step {
                    Err(io::Error::other("injected"))
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
        assert_eq!(err.kind(), "file-write");
        assert!(err.to_string().contains("injected"), "{err}");
        let want: &[u8] = if step == Step::Renamed {
            b"new"
        } else {
            b"old"
        };
        assert_eq!(fs::read(&path).unwrap(), want, "after {step:?}");
        assert!(leftovers(dir.path()).is_empty(), "after {step:?}");
    }
}

#[test]
fn a_new_file_is_private_and_an_existing_one_keeps_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.json");
    writer(&path).write(b"one").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"one");
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    writer(&path).write(b"two").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"two");
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o644);
}

#[test]
fn as_root_an_existing_file_keeps_its_owner_and_group() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root to give a file to another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    fs::write(&path, b"old").unwrap();
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    writer(&path).write(b"new").unwrap();
    let meta = fs::metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(fs::read(&path).unwrap(), b"new");
}

#[test]
fn a_vanished_folder_is_a_write_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone/f.json");
    let err = writer(&path).write(b"x").unwrap_err();
    assert_eq!(err.kind(), "file-write");
    assert!(err.to_string().contains("previous file is intact"), "{err}");
    assert_eq!(err.into_io().kind(), io::ErrorKind::NotFound);
}
