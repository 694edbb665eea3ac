//! Reading certificate files safely: symlinks resolved, the size checked before reading and
//! capped while reading, special files refused, and each file's identity recorded so that
//! an unchanged file is never read twice.

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{MAX_FILE_BYTES, SourceError};

/// `ELOOP` ("too many levels of symbolic links"): 40 on Linux, 62 on the BSDs and macOS.
#[cfg(target_os = "linux")]
const ELOOP: i32 = 40;
#[cfg(not(target_os = "linux"))]
const ELOOP: i32 = 62;

/// What identifies one version of a file: where its link resolves, and the inode's
/// device, number, size, modification and change times. Any rewrite changes one of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FileId {
    resolved: PathBuf,
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn new(resolved: PathBuf, meta: &Metadata) -> FileId {
        FileId {
            resolved,
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

/// Resolves `path` (following every symlink) and stats the result.
pub(super) fn probe(path: &Path) -> Probe {
    let resolved = match fs::canonicalize(path) {
        Ok(resolved) => resolved,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return match fs::symlink_metadata(path) {
                Ok(_) => Probe::Failed(SourceError::Dangling {
                    path: path.to_path_buf(),
                }),
                Err(_) => Probe::Missing,
            };
        }
        Err(e) => return Probe::Failed(io_problem(path, &e)),
    };
    match fs::metadata(&resolved) {
        Ok(meta) => match usable(path, &meta) {
            Ok(()) => Probe::Found(FileId::new(resolved, &meta)),
            Err(problem) => Probe::Failed(problem),
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

/// Reads the file `probe` found (as `path` for messages), at most [`MAX_FILE_BYTES`].
/// Returns the identity of what was actually read (taken from the open file).
pub(super) fn read(path: &Path, id: &FileId) -> Result<(FileId, Zeroizing<Vec<u8>>), SourceError> {
    let file = File::open(&id.resolved).map_err(|e| io_problem(path, &e))?;
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
    Ok((FileId::new(id.resolved.clone(), &meta), bytes))
}
