//! File I/O primitives: the one capped reader and the one atomic writer. Every file certrotd
//! reads (configuration, domains file, secret files, state, certificates, keys) goes through
//! [`open`]; every file it replaces (the state file, the emulator's dump) through
//! [`AtomicWrite`].
//!
//! Invariants of the reader:
//! - Opening never blocks: `O_NONBLOCK | O_NOCTTY` (and `O_CLOEXEC`, as std always does), so
//!   a FIFO, a terminal or a device where a file should be is opened at once and refused.
//! - What is checked is the *opened* descriptor (`fstat`): a regular file, else
//!   [`FsError::NotRegular`] naming what it is. The permission check of a secret file is made
//!   on the same descriptor ([`Opened::refuse_access`]), so nothing can be swapped in between.
//! - At most `max` bytes are read: a file whose size is over the cap is not read at all, and
//!   one that grows while being read is cut off at `max + 1` bytes and refused.
//! - [`Opened::read_secret`] keeps the bytes in a zeroizing buffer, grown without leaving
//!   copies behind.
//!
//! Invariants of the writer: temp file in the target's folder → (owner, group and mode of the
//! existing target, when there is one) → write → fsync → rename over the target → fsync of
//! the folder. A kill at any instant leaves the old file or the new one; a failure before the
//! rename removes the temp file.

use std::fmt;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Why a file could not be read or written. Each message names the path, says what is wrong
/// and what to do; none carries file content.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{}: {}; create it, or correct the path", path.display(), self.reason())]
    NotFound { path: PathBuf, source: io::Error },
    #[error(
        "{}: {}; check that certrotd's user may read it and the folders above it",
        path.display(),
        self.reason()
    )]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "{}: {}; certrotd reads only regular files here (a symlink to one is fine): replace it",
        path.display(),
        self.reason()
    )]
    NotRegular { path: PathBuf, kind: FileKind },
    #[error("{}: {}; this is not the file certrotd expects, replace it", path.display(), self.reason())]
    TooLarge {
        path: PathBuf,
        /// The size found: the `fstat` size, or what was read when the file grew.
        size: u64,
        limit: u64,
    },
    #[error("{}: {}; check the file and the disk it is on", path.display(), self.reason())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{}: {}; a secret must be private: run `chmod 600 {}`",
        path.display(),
        self.reason(),
        path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "{}: {}; check free space and permissions of its folder (the previous file is intact)",
        path.display(),
        self.reason()
    )]
    Write { path: PathBuf, source: io::Error },
}

/// What a path holds when it is not a regular file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Other,
}

impl FileKind {
    /// The kind of a non-regular file (`Other` for anything unexpected).
    pub(crate) fn of(meta: &Metadata) -> FileKind {
        let t = meta.file_type();
        if t.is_dir() {
            FileKind::Directory
        } else if t.is_fifo() {
            FileKind::Fifo
        } else if t.is_socket() {
            FileKind::Socket
        } else if t.is_char_device() {
            FileKind::CharDevice
        } else if t.is_block_device() {
            FileKind::BlockDevice
        } else {
            FileKind::Other
        }
    }

    /// `a FIFO (named pipe)`, `a folder`, …
    pub(crate) fn describe(self) -> &'static str {
        match self {
            FileKind::Directory => "a folder",
            FileKind::Fifo => "a FIFO (named pipe)",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Other => "a special file",
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

impl FsError {
    /// Short stable label for logs and metrics.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "part of the label set (ARCHITECTURE.md); only tests read it yet"
        )
    )]
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            FsError::NotFound { .. } => "file-not-found",
            FsError::Open { .. } => "file-open",
            FsError::NotRegular { .. } => "not-a-regular-file",
            FsError::TooLarge { .. } => "file-too-large",
            FsError::Read { .. } => "file-read",
            FsError::Permissions { .. } => "file-permissions",
            FsError::Write { .. } => "file-write",
        }
    }

    /// What is wrong, without the path or a remedy (for callers that give their own).
    pub(crate) fn reason(&self) -> String {
        match self {
            FsError::NotFound { source, .. }
            | FsError::Open { source, .. }
            | FsError::Read { source, .. }
            | FsError::Write { source, .. } => source.to_string(),
            FsError::NotRegular { kind, .. } => format!("it is {kind}, not a regular file"),
            FsError::TooLarge { size, limit, .. } => {
                format!("it is {size} bytes or more, over the {limit}-byte limit")
            }
            FsError::Permissions { mode, .. } => {
                format!("it is readable or writable by group or others (mode {mode:04o})")
            }
        }
    }

    /// The underlying I/O error, when there is one (`ELOOP`, `EACCES`, `ENOSPC`, …).
    pub(crate) fn io_error(&self) -> Option<&io::Error> {
        match self {
            FsError::NotFound { source, .. }
            | FsError::Open { source, .. }
            | FsError::Read { source, .. }
            | FsError::Write { source, .. } => Some(source),
            _ => None,
        }
    }

    /// As an `io::Error`: the underlying one when there is one, else this error wrapped.
    pub(crate) fn into_io(self) -> io::Error {
        match self {
            FsError::NotFound { source, .. }
            | FsError::Open { source, .. }
            | FsError::Read { source, .. }
            | FsError::Write { source, .. } => source,
            other => io::Error::other(other),
        }
    }
}

// ------------------------------------------------------------------------------ reading

/// A regular file, opened without blocking, with the metadata of the opened descriptor.
#[derive(Debug)]
pub(crate) struct Opened {
    path: PathBuf,
    file: File,
    meta: Metadata,
}

/// Opens `path` (following symlinks) without blocking and checks, on the opened descriptor,
/// that it is a regular file. (A path that already `stat`s as something else is refused
/// without being opened: opening some devices has effects of its own.)
pub(crate) fn open(path: &Path) -> Result<Opened, FsError> {
    if let Ok(meta) = fs::metadata(path)
        && !meta.is_file()
    {
        return Err(FsError::NotRegular {
            path: path.to_path_buf(),
            kind: FileKind::of(&meta),
        });
    }
    open_descriptor(path)
}

/// The open itself and the checks on the opened descriptor: what protects against a path
/// swapped (for a FIFO, say) between the `stat` and the `open`.
fn open_descriptor(path: &Path) -> Result<Opened, FsError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| open_error(path, e))?;
    let meta = file.metadata().map_err(|source| FsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(FsError::NotRegular {
            path: path.to_path_buf(),
            kind: FileKind::of(&meta),
        });
    }
    clear_nonblocking(&file).map_err(|source| FsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Opened {
        path: path.to_path_buf(),
        file,
        meta,
    })
}

/// Reads the whole of `path`, at most `max` bytes.
pub(crate) fn read(path: &Path, max: u64) -> Result<Vec<u8>, FsError> {
    open(path)?.read(max)
}

/// An open error; `ENXIO` (a socket, or a FIFO without a writer when opened for writing)
/// is reported as what the path is.
fn open_error(path: &Path, source: io::Error) -> FsError {
    let path = path.to_path_buf();
    if source.kind() == io::ErrorKind::NotFound {
        return FsError::NotFound { path, source };
    }
    if source.raw_os_error() == Some(libc::ENXIO)
        && let Ok(meta) = fs::metadata(&path)
        && !meta.is_file()
    {
        let kind = FileKind::of(&meta);
        return FsError::NotRegular { path, kind };
    }
    FsError::Open { path, source }
}

/// Reads block again (only a FIFO or a device would have cared; they are refused before).
fn clear_nonblocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is a valid open descriptor owned by `file` for the whole call; F_GETFL
    // and F_SETFL read and set its status flags only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK == 0 {
        return Ok(());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Opened {
    /// The metadata of the opened descriptor (`fstat`).
    pub(crate) fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// Refuses the file when its mode has any bit of `forbidden` (e.g. `0o077`: group or
    /// others may read or write it). Checked on this descriptor.
    pub(crate) fn refuse_access(&self, forbidden: u32) -> Result<(), FsError> {
        let mode = self.meta.mode() & 0o7777;
        if mode & forbidden != 0 {
            return Err(FsError::Permissions {
                path: self.path.clone(),
                mode,
            });
        }
        Ok(())
    }

    /// The whole file, at most `max` bytes.
    pub(crate) fn read(self, max: u64) -> Result<Vec<u8>, FsError> {
        let mut bytes = self.read_secret(max)?;
        Ok(std::mem::take(&mut *bytes))
    }

    /// The whole file, at most `max` bytes, in a buffer zeroized on drop (and on growth).
    pub(crate) fn read_secret(mut self, max: u64) -> Result<Zeroizing<Vec<u8>>, FsError> {
        let size = self.meta.len();
        if size > max {
            return Err(self.too_large(size, max));
        }
        let limit = usize::try_from(max.saturating_add(1)).unwrap_or(usize::MAX);
        let first = usize::try_from(size)
            .unwrap_or(usize::MAX)
            .saturating_add(1)
            .clamp(1, limit);
        let mut buf = Zeroizing::new(vec![0u8; first]);
        let mut filled = 0;
        loop {
            if filled == buf.len() {
                if buf.len() >= limit {
                    return Err(self.too_large(filled as u64, max));
                }
                buf = grown(&buf, filled, limit);
            }
            let spare = buf.get_mut(filled..).unwrap_or_default();
            match self.file.read(spare) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    let path = self.path.clone();
                    return Err(FsError::Read { path, source });
                }
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }

    fn too_large(&self, size: u64, limit: u64) -> FsError {
        FsError::TooLarge {
            path: self.path.clone(),
            size,
            limit,
        }
    }
}

/// A buffer twice as long (at most `limit`) holding the first `filled` bytes of `buf`; the
/// old one is zeroized when the caller drops it.
fn grown(buf: &[u8], filled: usize, limit: usize) -> Zeroizing<Vec<u8>> {
    let len = buf.len().saturating_mul(2).max(4096).min(limit);
    let mut bigger = Zeroizing::new(vec![0u8; len]);
    if let (Some(to), Some(from)) = (bigger.get_mut(..filled), buf.get(..filled)) {
        to.copy_from_slice(from);
    }
    bigger
}

// ------------------------------------------------------------------------------ writing

/// The steps of [`AtomicWrite::write_with`], for fault injection in tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Created,
    Written,
    Synced,
    Renamed,
}

/// Replaces one file atomically. The temp file is `<temp_prefix><random><temp_suffix>` in
/// the target's folder, so an owner can recognise (and clean up) its own leftovers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AtomicWrite<'a> {
    pub(crate) path: &'a Path,
    pub(crate) temp_prefix: &'a str,
    pub(crate) temp_suffix: &'a str,
}

impl AtomicWrite<'_> {
    /// temp file → keep the target's owner and mode → write → fsync → rename → fsync folder.
    pub(crate) fn write(&self, bytes: &[u8]) -> Result<(), FsError> {
        self.write_with(bytes, &mut |_| Ok(()))
    }

    /// [`AtomicWrite::write`], calling `fault` after each step; an error from it aborts
    /// there (the temp file, if not yet renamed, is removed).
    pub(crate) fn write_with(
        &self,
        bytes: &[u8],
        fault: &mut dyn FnMut(Step) -> io::Result<()>,
    ) -> Result<(), FsError> {
        self.steps(bytes, fault).map_err(|source| FsError::Write {
            path: self.path.to_path_buf(),
            source,
        })
    }

    fn steps(&self, bytes: &[u8], fault: &mut dyn FnMut(Step) -> io::Result<()>) -> io::Result<()> {
        let dir = folder_of(self.path);
        let mut tmp = tempfile::Builder::new()
            .prefix(self.temp_prefix)
            .suffix(self.temp_suffix)
            .tempfile_in(&dir)?;
        keep_owner_and_mode(self.path, tmp.as_file())?;
        fault(Step::Created)?;
        tmp.write_all(bytes)?;
        fault(Step::Written)?;
        tmp.as_file().sync_all()?;
        fault(Step::Synced)?;
        tmp.persist(self.path).map_err(|e| e.error)?;
        fault(Step::Renamed)?;
        File::open(&dir)?.sync_all()
    }
}

/// The folder holding `path` (`.` for a bare file name).
fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Gives `tmp` the owner, group and mode of the regular file at `target`, when there is one
/// (a new file keeps the temp file's: the writer's, mode 0600). An unprivileged writer
/// cannot give a file away (`EPERM`): it then keeps its own owner, as before.
pub(crate) fn keep_owner_and_mode(target: &Path, tmp: &File) -> io::Result<()> {
    let old = match fs::symlink_metadata(target) {
        Ok(meta) if meta.is_file() => meta,
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let now = tmp.metadata()?;
    if (now.uid(), now.gid()) != (old.uid(), old.gid()) {
        match std::os::unix::fs::fchown(tmp, Some(old.uid()), Some(old.gid())) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => return Err(e),
        }
    }
    let mode = old.mode() & 0o7777;
    if now.mode() & 0o7777 != mode {
        use std::os::unix::fs::PermissionsExt as _;
        tmp.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
