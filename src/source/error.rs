//! [`SourceError`]: why one lineage yields no certificate. Each message names the file or
//! folder, says what is wrong and what to do. None contains file content.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::cert::{Invalid, Part};

use super::MAX_FILE_BYTES;

/// Why a lineage (or a watch path) yields no usable certificate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error(
        "{}: the watch path does not exist; create it, correct [watch] paths, or let the \
         ACME client create it (certrotd looks again on the next scan)",
        path.display()
    )]
    WatchPathMissing { path: PathBuf },

    #[error(
        "{}: not a folder; [watch] paths name a lineage folder or a folder of lineages",
        path.display()
    )]
    NotAFolder { path: PathBuf },

    #[error(
        "{}: no recognised certificate/key pair (certbot fullchain.pem + privkey.pem, acme.sh \
         fullchain.cer + <name>.key, Kubernetes tls.crt + tls.key, lego \
         certificates/<name>.crt + <name>.key){hint}",
        folder.display()
    )]
    NoPair { folder: PathBuf, hint: NoPairHint },

    #[error(
        "{}: certificate without a private key: {} is missing; restore the key, or remove \
         the lineage",
        chain.display(),
        key.display()
    )]
    MissingKey { chain: PathBuf, key: PathBuf },

    #[error(
        "{}: private key without a certificate: {} is missing; restore the certificate, or \
         remove the lineage",
        key.display(),
        chain.display()
    )]
    MissingCertificate { chain: PathBuf, key: PathBuf },

    #[error(
        "{}: symlink loop (too many levels of symbolic links); point the link at the real file",
        path.display()
    )]
    SymlinkLoop { path: PathBuf },

    #[error(
        "{}: dangling symlink (its target does not exist); restore the target or re-create the \
         link",
        path.display()
    )]
    Dangling { path: PathBuf },

    #[error(
        "{}: {what}, not a regular file; expected a PEM file here (or a symlink to one)",
        path.display()
    )]
    NotAFile {
        path: PathBuf,
        /// What is there instead (`a FIFO (named pipe)`, `a folder`, …).
        what: &'static str,
    },

    #[error(
        "{}: file is {size} bytes, more than the {} limit for certificate and key files, so it \
         was not read; this is not a PEM certificate or key, replace it",
        path.display(),
        limit()
    )]
    TooLarge { path: PathBuf, size: u64 },

    #[error(
        "{}: cannot read it ({error}); give certrotd read access (for certbot's keys: a group \
         with read access, see the README)",
        path.display()
    )]
    Unreadable { path: PathBuf, error: String },

    #[error(
        "{shown}: the folder name is not valid UTF-8, so certrotd cannot name this lineage in \
         its messages and state; rename the folder (e.g. to the domain it holds)"
    )]
    NameNotUtf8 {
        /// The folder's path, lossy and with control characters escaped.
        shown: String,
    },

    #[error("{files}: {reason}")]
    Invalid {
        /// The file the reason concerns, or both files for a mismatched pair.
        files: String,
        reason: Invalid,
    },
}

/// An extra hint for a folder with no recognised pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoPairHint {
    None,
    /// The folder holds lineages itself (e.g. `/etc/letsencrypt/live` under
    /// `/etc/letsencrypt`): watch it instead.
    WatchInstead(PathBuf),
}

impl fmt::Display for NoPairHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoPairHint::None => f.write_str(
                "; put the certificate files there, or move the folder out of the watch path",
            ),
            NoPairHint::WatchInstead(p) => {
                write!(
                    f,
                    "; it looks like a folder of lineages: watch {} instead",
                    p.display()
                )
            }
        }
    }
}

fn limit() -> String {
    format!("{} MiB", MAX_FILE_BYTES / (1024 * 1024))
}

impl SourceError {
    /// A short stable label for logs, the status table and metrics.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            SourceError::WatchPathMissing { .. } => "watch-path-missing",
            SourceError::NotAFolder { .. } => "not-a-folder",
            SourceError::NoPair { .. } => "no-pair",
            SourceError::MissingKey { .. } => "missing-key",
            SourceError::MissingCertificate { .. } => "missing-certificate",
            SourceError::SymlinkLoop { .. } => "symlink-loop",
            SourceError::Dangling { .. } => "dangling-symlink",
            SourceError::NotAFile { .. } => "not-a-file",
            SourceError::TooLarge { .. } => "too-large",
            SourceError::Unreadable { .. } => "unreadable",
            SourceError::NameNotUtf8 { .. } => "name-not-utf8",
            SourceError::Invalid { reason, .. } => reason.kind(),
        }
    }

    /// A validation failure, prefixed with the file it concerns.
    pub(crate) fn invalid(reason: Invalid, chain: &Path, key: &Path) -> SourceError {
        let files = match reason.part() {
            Some(Part::Chain) => chain.display().to_string(),
            Some(Part::Key) => key.display().to_string(),
            None => format!("{} and {}", chain.display(), key.display()),
        };
        SourceError::Invalid { files, reason }
    }
}
