//! The I/O step of loading a configuration: every file the configuration names is read (the
//! domains file, capped, through [`crate::fsio`]) or inspected (the AccessKey secret file:
//! its type and mode, never its content) here, once, before any validation. What was found
//! is plain data ([`Files`]) for the pure walk.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::fsio::{self, FsError};

/// The paths of the files a configuration names (resolved against its folder).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Named {
    /// `cdn.domains_file`: read.
    pub(crate) read: Vec<PathBuf>,
    /// `aliyun.access_key_secret_file`: inspected only (credentials reads it).
    pub(crate) inspect: Vec<PathBuf>,
}

/// What a file that is only inspected is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Facts {
    pub(crate) regular: bool,
    /// Permission bits (`0o7777`).
    pub(crate) mode: u32,
}

/// Everything the validation may know about the named files.
#[derive(Debug, Default)]
pub(crate) struct Files {
    contents: BTreeMap<PathBuf, Result<Vec<u8>, FsError>>,
    facts: BTreeMap<PathBuf, Result<Facts, io::Error>>,
}

impl Files {
    /// The bytes of a file that was read, or why it could not be; `None` if not gathered.
    pub(crate) fn contents(&self, path: &Path) -> Option<&Result<Vec<u8>, FsError>> {
        self.contents.get(path)
    }

    /// The facts of a file that was inspected, or why it could not be; `None` if not
    /// gathered.
    pub(crate) fn facts(&self, path: &Path) -> Option<&Result<Facts, io::Error>> {
        self.facts.get(path)
    }

    /// Records a read file (tests build `Files` by hand).
    pub(crate) fn with_contents(mut self, path: PathBuf, read: Result<Vec<u8>, FsError>) -> Files {
        self.contents.insert(path, read);
        self
    }

    /// Records an inspected file.
    pub(crate) fn with_facts(mut self, path: PathBuf, facts: Result<Facts, io::Error>) -> Files {
        self.facts.insert(path, facts);
        self
    }
}

/// Reads or inspects every named file (the only I/O of validation).
pub(super) fn gather(named: &Named, max: u64) -> Files {
    let mut files = Files::default();
    for path in &named.read {
        let read = fsio::read(path, max);
        files = files.with_contents(path.clone(), read);
    }
    for path in &named.inspect {
        // `stat` only: it never blocks, and the content is not certrotd's to read here.
        let facts = std::fs::metadata(path).map(|meta| Facts {
            regular: meta.is_file(),
            mode: meta.permissions().mode() & 0o7777,
        });
        files = files.with_facts(path.clone(), facts);
    }
    files
}
