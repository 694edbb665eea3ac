//! Reading certificate files safely, through [`crate::fsio`]: symlinks followed, opened
//! without blocking, special files refused on the opened descriptor, the size checked before
//! reading and capped while reading; and each file's identity recorded so that an unchanged
//! file is never read twice.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use zeroize::Zeroizing;

use super::{MAX_FILE_BYTES, SourceError};
use crate::fsio::{self, FileKind, FsError};

/// What identifies one version of a file: the inode its links resolve to (device,
/// number) and its size, modification and change times. Re-pointing a link changes the
/// inode; rewriting in place changes the times (and usually the size).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn new(meta: &Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The outcome of looking at one file without reading it.
pub(super) enum Probe {
    /// A regular file within the size limit.
    Found(FileId),
    /// Nothing at that path (not even a dangling link).
    Missing,
    Failed(SourceError),
}

/// Stats `path`, following every symlink (one `stat`: the kernel resolves the links).
pub(super) fn probe(path: &Path) -> Probe {
    match fs::metadata(path) {
        Ok(meta) => match usable(path, &meta) {
            Ok(()) => Probe::Found(FileId::new(&meta)),
            Err(problem) => Probe::Failed(problem),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::symlink_metadata(path) {
            Ok(_) => Probe::Failed(SourceError::Dangling {
                path: path.to_path_buf(),
            }),
            Err(_) => Probe::Missing,
        },
        Err(e) => Probe::Failed(io_problem(path, &e)),
    }
}

/// A regular file no bigger than the limit.
fn usable(path: &Path, meta: &Metadata) -> Result<(), SourceError> {
    if !meta.is_file() {
        return Err(SourceError::NotAFile {
            path: path.to_path_buf(),
            what: FileKind::of(meta).describe(),
        });
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(SourceError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
        });
    }
    Ok(())
}

/// Maps an I/O error on `path` to the lineage problem it means.
pub(super) fn io_problem(path: &Path, e: &io::Error) -> SourceError {
    let path = path.to_path_buf();
    if e.raw_os_error() == Some(libc::ELOOP) {
        SourceError::SymlinkLoop { path }
    } else {
        SourceError::Unreadable {
            path,
            error: e.to_string(),
        }
    }
}

/// Reads `path` (following links), at most [`MAX_FILE_BYTES`]. Returns the identity of
/// what was actually read (taken from the open file, so a concurrent rewrite is noticed
/// on the next scan).
pub(super) fn read(path: &Path) -> Result<(FileId, Zeroizing<Vec<u8>>), SourceError> {
    let opened = fsio::open(path).map_err(|e| fs_problem(path, &e))?;
    let id = FileId::new(opened.metadata());
    let bytes = opened
        .read_secret(MAX_FILE_BYTES)
        .map_err(|e| fs_problem(path, &e))?;
    Ok((id, bytes))
}

/// Maps a reader error on `path` to the lineage problem it means.
fn fs_problem(path: &Path, e: &FsError) -> SourceError {
    match e {
        FsError::NotRegular { kind, .. } => SourceError::NotAFile {
            path: path.to_path_buf(),
            what: kind.describe(),
        },
        FsError::TooLarge { size, .. } => SourceError::TooLarge {
            path: path.to_path_buf(),
            size: *size,
        },
        other => match other.io_error() {
            Some(io) => io_problem(path, io),
            None => SourceError::Unreadable {
                path: path.to_path_buf(),
                error: other.reason(),
            },
        },
    }
}
