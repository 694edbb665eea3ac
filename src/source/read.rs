//! Reading certificate files safely: symlinks followed, the size checked before reading and
//! capped while reading, special files refused, and each file's identity recorded so that
//! an unchanged file is never read twice.

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use zeroize::Zeroizing;

use super::{MAX_FILE_BYTES, SourceError};

/// `ELOOP` ("too many levels of symbolic links"): 40 on Linux, 62 on the BSDs and macOS.
#[cfg(target_os = "linux")]
const ELOOP: i32 = 40;
#[cfg(not(target_os = "linux"))]
const ELOOP: i32 = 62;

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
    if e.raw_os_error() == Some(ELOOP) {
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
    let file = File::open(path).map_err(|e| io_problem(path, &e))?;
    let meta = file.metadata().map_err(|e| io_problem(path, &e))?;
    usable(path, &meta)?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_problem(path, &e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(SourceError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
        });
    }
    Ok((FileId::new(&meta), bytes))
}
