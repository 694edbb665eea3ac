//! The deployed-state file: what certrotd last pushed to each CDN domain.
//!
//! Owns `<[state] dir>/state.json` and the lock `<[state] dir>/certrotd.lock`.
//!
//! Format (version [`STATE_VERSION`]), pretty-printed JSON:
//! ```json
//! { "version": 1,
//!   "domains": {
//!     "www.example.com": {
//!       "deployed": { "fingerprint": "<64 hex>", "cert_name": "www.example.com-20270227-…",
//!                     "not_after": "2027-02-27T00:00:00Z", "deployed_at": "2026-…Z",
//!                     "request_id": "…", "verification": "pending" | "verified" | "failed",
//!                     "checked_at": null | "2026-…Z" },
//!       "last_error": null | { "at": "2026-…Z", "kind": "throttling", "message": "…" } } } }
//! ```
//! `deployed` is null for a domain that only has an error on record.
//! A top-level `"batch_gone": { "probed_at": "2026-…Z", "config_digest": "<16 hex>" }` says
//! the CDN batch call was found retired (see `aliyun::fallback`); absent otherwise.
//!
//! Invariants:
//! - Writes are atomic ([`crate::fsio::AtomicWrite`]): temp file in the same folder, write,
//!   fsync, rename over `state.json`, fsync the folder; an existing file's owner, group and
//!   mode are kept (a `sync` run as root leaves the service user's file its own). A kill at any instant leaves the old or the new file;
//!   stray temp files (`.state.json.*.tmp`) are ignored by readers and removed by
//!   [`StateStore::open`].
//! - One writer per folder: [`StateStore`] holds an exclusive lock on `certrotd.lock`
//!   (`flock`) for its whole life; the kernel releases it when the process dies.
//! - The lock file names its holder: one line `<pid> <role>` ([`LockRecord`], role `run` for
//!   the daemon, `sync` for a one-shot command), rewritten each time the lock is taken. The
//!   record is a hint for [`read_lock_record`]'s readers (a `sync` handing its work to a
//!   running daemon): it may be stale or missing, only the `flock` is authoritative.
//! - A missing file is an empty state; a corrupt file or one from a newer version is an error
//!   and is never overwritten.
//! - The file holds fingerprints, names, times, request ids and short error texts — never key
//!   material. Free texts are scrubbed of anything that looks like PEM before they are stored.
//!
//! Planning rule ([`State::deployed_fingerprints`]): a deployment whose read-back failed is
//! not deployed; one not yet read back counts only when read-back is off (`verify = false`),
//! so with `verify = true` a batch interrupted before its read-back is pushed again.

pub mod cas;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::cert::Fingerprint;
use crate::fsio::{self, AtomicWrite, FsError, Step};

/// The format version this build reads and writes.
pub(crate) const STATE_VERSION: u32 = 1;
/// The state file's name inside `[state] dir`.
pub const STATE_FILE: &str = "state.json";
/// The lock file's name inside `[state] dir`.
pub const LOCK_FILE: &str = "certrotd.lock";
const TEMP_PREFIX: &str = ".state.json.";
const TEMP_SUFFIX: &str = ".tmp";
/// Longest free text (error message, name, request id) kept in the file, in characters.
const MAX_TEXT: usize = 500;
/// The largest state file read (some 500 000 domains; bigger is not a certrotd state).
const MAX_STATE_BYTES: u64 = 256 * 1024 * 1024;

/// Problems with the state folder or file. Each message names the path and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "another certrotd is using {dir} (lock {lock} is held); stop it or use another [state] dir"
    )]
    Locked { dir: PathBuf, lock: PathBuf },
    #[error(
        "cannot create the state folder {dir}: {cause}; create it (mode 0700) for the user \
         certrotd runs as, or set another [state] dir"
    )]
    CreateDir { dir: PathBuf, cause: io::Error },
    #[error(
        "cannot lock {lock}: {cause}; the [state] dir must be a local folder certrotd can \
         write (flock support)"
    )]
    Lock { lock: PathBuf, cause: io::Error },
    #[error(
        "cannot read the state file {path}: {}; check that it is a regular file certrotd \
         can read and write",
        cause.reason()
    )]
    Read { path: PathBuf, cause: FsError },
    #[error(
        "the state file {path} is not a valid certrotd state ({detail}); certrotd will not \
         overwrite it: inspect it, then move it aside to start from an empty state (every \
         domain is then pushed once more)"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "the state file {path} has format version {found}, but this certrotd understands only \
         version {supported}; upgrade certrotd, or move the file aside to start from an empty \
         state"
    )]
    TooNew {
        path: PathBuf,
        found: u64,
        supported: u32,
    },
    #[error(
        "cannot write the state file {path}: {cause}; check free space and permissions of the \
         [state] dir (the previous state file is intact)"
    )]
    Write { path: PathBuf, cause: io::Error },
}

impl StateError {
    /// Short label for logs, the status table and metrics.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            StateError::Locked { .. } => "state-locked",
            StateError::CreateDir { .. } | StateError::Lock { .. } => "state-dir",
            StateError::Read { .. } => "state-read",
            StateError::Corrupt { .. } => "state-corrupt",
            StateError::TooNew { .. } => "state-version",
            StateError::Write { .. } => "state-write",
        }
    }
}

/// The whole file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub(crate) version: u32,
    #[serde(default)]
    pub domains: BTreeMap<String, DomainState>,
    /// The CDN batch call answered that it does not exist: later runs start on the
    /// per-domain call (see `aliyun::fallback`). Absent while the batch call works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_gone: Option<BatchGone>,
    /// CAS certificates certrotd uploaded or found (`[aliyun] store = "cas"`), by leaf
    /// fingerprint; see [`cas`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cas: cas::CasRecords,
}

impl Default for State {
    fn default() -> State {
        State {
            version: STATE_VERSION,
            domains: BTreeMap::new(),
            batch_gone: None,
            cas: BTreeMap::new(),
        }
    }
}

/// When the CDN batch call was last tried and found gone, and a digest of the `[aliyun]`
/// settings then in force (a change of them allows one new try a day).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchGone {
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) probed_at: OffsetDateTime,
    pub(crate) config_digest: String,
}

/// What is known about one CDN domain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainState {
    /// The last certificate a call for this domain succeeded with.
    #[serde(default)]
    pub deployed: Option<Deployment>,
    /// The last error for this domain; cleared by a later successful push or read-back.
    #[serde(default)]
    pub last_error: Option<LastError>,
}

/// One accepted `BatchSetCdnDomainServerCertificate` for a domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub fingerprint: Fingerprint,
    pub cert_name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) not_after: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) deployed_at: OffsetDateTime,
    pub request_id: String,
    pub verification: Verification,
    /// When the read-back concluded (verified or failed).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub(crate) checked_at: Option<OffsetDateTime>,
}

/// Whether read-back (`DescribeDomainCertificateInfo`) confirmed a deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verification {
    /// Accepted by the API, not (yet) read back.
    Pending,
    /// The domain was seen serving this fingerprint.
    Verified,
    /// Read-back gave up without seeing it: the domain is out of date for planning.
    Failed,
}

/// The last thing that went wrong for a domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) at: OffsetDateTime,
    /// The error's `kind()` label.
    pub(crate) kind: String,
    /// Redacted, human message.
    pub(crate) message: String,
}

/// A successful call, as [`StateStore::record_deployed`] records it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Push<'a> {
    pub(crate) fingerprint: Fingerprint,
    pub(crate) cert_name: &'a str,
    pub(crate) not_after: OffsetDateTime,
    pub(crate) request_id: &'a str,
    pub(crate) at: OffsetDateTime,
}

impl State {
    /// Per domain, the fingerprint the planner should consider deployed: verified
    /// deployments always; pending ones only when `verify` (read-back) is off; failed never.
    pub(crate) fn deployed_fingerprints(&self, verify: bool) -> BTreeMap<String, Fingerprint> {
        self.domains
            .iter()
            .filter_map(|(domain, s)| {
                let d = s.deployed.as_ref()?;
                let counts = match d.verification {
                    Verification::Verified => true,
                    Verification::Pending => !verify,
                    Verification::Failed => false,
                };
                counts.then(|| (domain.clone(), d.fingerprint))
            })
            .collect()
    }
}

/// Reads the state of `dir` without locking (for `certrotd status` while the daemon runs).
/// A missing folder or file is an empty state.
pub fn load(dir: &Path) -> Result<State, StateError> {
    let path = dir.join(STATE_FILE);
    match fsio::read(&path, MAX_STATE_BYTES) {
        Ok(bytes) => parse(&path, &bytes),
        Err(FsError::NotFound { .. }) => Ok(State::default()),
        Err(cause) => Err(StateError::Read { path, cause }),
    }
}

/// Decodes a state file's bytes; `path` is only for messages.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<State, StateError> {
    #[derive(Deserialize)]
    struct Header {
        version: Option<u64>,
    }
    let corrupt = |detail: String| StateError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let header: Header = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    match header.version {
        None => return Err(corrupt("no \"version\" field".into())),
        Some(0) => return Err(corrupt("version 0 does not exist".into())),
        Some(v) if v > u64::from(STATE_VERSION) => {
            return Err(StateError::TooNew {
                path: path.to_path_buf(),
                found: v,
                supported: STATE_VERSION,
            });
        }
        Some(_) => {}
    }
    serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))
}

/// The state of one folder, owned exclusively (lock held) until dropped.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    path: PathBuf,
    /// Holds the `flock`; closing it (drop, or process death) releases the lock.
    _lock: File,
    state: State,
}

impl StateStore {
    /// Creates `dir` (mode 0700) if missing, takes the lock, removes stray temp files of a
    /// killed run, and loads the state.
    /// The lock file records the holder as a one-shot command ([`Role::Sync`]).
    pub fn open(dir: &Path) -> Result<StateStore, StateError> {
        StateStore::open_as(dir, Role::Sync)
    }

    /// [`StateStore::open`], recording `role` and this process's PID in the lock file.
    pub(crate) fn open_as(dir: &Path, role: Role) -> Result<StateStore, StateError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|cause| StateError::CreateDir {
                dir: dir.to_path_buf(),
                cause,
            })?;
        let lock = take_lock(dir)?;
        record_holder(dir, &lock, role);
        remove_stray_temps(dir);
        let state = load(dir)?;
        Ok(StateStore {
            dir: dir.to_path_buf(),
            path: dir.join(STATE_FILE),
            _lock: lock,
            state,
        })
    }

    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// Records (or with `None` clears) that the CDN batch call is gone, and saves.
    pub(crate) fn record_batch_gone(&mut self, gone: Option<BatchGone>) -> Result<(), StateError> {
        if self.state.batch_gone == gone {
            return Ok(());
        }
        self.state.batch_gone = gone;
        self.save()
    }

    /// The CAS records, to change in memory (the caller saves).
    pub(crate) fn cas_mut(&mut self) -> &mut cas::CasRecords {
        &mut self.state.cas
    }

    /// The state file's path.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// See [`State::deployed_fingerprints`].
    #[cfg(test)]
    pub(crate) fn deployed_fingerprints(&self, verify: bool) -> BTreeMap<String, Fingerprint> {
        self.state.deployed_fingerprints(verify)
    }

    /// Records a successful call for `domains` (verification pending, last error cleared) and
    /// saves. On a save error the in-memory state keeps the record; the next save writes it.
    #[cfg(test)]
    pub(crate) fn record_deployed(
        &mut self,
        domains: &[String],
        push: &Push<'_>,
    ) -> Result<(), StateError> {
        self.note_deployed(domains, push);
        self.save()
    }

    /// [`StateStore::record_deployed`] without the save: the caller must [`StateStore::save`]
    /// before it treats the record as kept (used to save a queue of events once).
    pub(crate) fn note_deployed(&mut self, domains: &[String], push: &Push<'_>) {
        for domain in domains {
            let entry = self.state.domains.entry(domain.clone()).or_default();
            entry.deployed = Some(Deployment {
                fingerprint: push.fingerprint,
                cert_name: scrub(push.cert_name),
                not_after: push.not_after,
                deployed_at: push.at,
                request_id: scrub(push.request_id),
                verification: Verification::Pending,
                checked_at: None,
            });
            entry.last_error = None;
        }
    }

    /// Marks `domains` verified where their recorded deployment is `fingerprint` (others were
    /// superseded by a later push and are left alone), and saves.
    pub(crate) fn record_verified(
        &mut self,
        domains: &[String],
        fingerprint: Fingerprint,
        at: OffsetDateTime,
    ) -> Result<(), StateError> {
        self.note_verified(domains, fingerprint, at);
        self.save()
    }

    /// [`StateStore::record_verified`] without the save (see [`StateStore::note_deployed`]).
    pub(crate) fn note_verified(
        &mut self,
        domains: &[String],
        fingerprint: Fingerprint,
        at: OffsetDateTime,
    ) {
        self.conclude(domains, fingerprint, Verification::Verified, at);
        for domain in domains {
            if let Some(entry) = self.state.domains.get_mut(domain) {
                entry.last_error = None;
            }
        }
    }

    /// Marks `domains` as failed read-back of `fingerprint` (so the planner pushes them
    /// again), records `message` as their last error (kind `verify`), and saves.
    pub(crate) fn record_verify_failed(
        &mut self,
        domains: &[String],
        fingerprint: Fingerprint,
        message: &str,
        at: OffsetDateTime,
    ) -> Result<(), StateError> {
        self.note_verify_failed(domains, fingerprint, message, at);
        self.save()
    }

    /// [`StateStore::record_verify_failed`] without the save (see
    /// [`StateStore::note_deployed`]).
    pub(crate) fn note_verify_failed(
        &mut self,
        domains: &[String],
        fingerprint: Fingerprint,
        message: &str,
        at: OffsetDateTime,
    ) {
        self.conclude(domains, fingerprint, Verification::Failed, at);
        self.set_error(domains, "verify", message, at);
    }

    /// Records an error for `domains` (their deployment, if any, is unchanged) and saves.
    pub(crate) fn record_error(
        &mut self,
        domains: &[String],
        kind: &str,
        message: &str,
        at: OffsetDateTime,
    ) -> Result<(), StateError> {
        self.set_error(domains, kind, message, at);
        self.save()
    }

    fn conclude(
        &mut self,
        domains: &[String],
        fp: Fingerprint,
        v: Verification,
        at: OffsetDateTime,
    ) {
        for domain in domains {
            let deployed = self
                .state
                .domains
                .get_mut(domain)
                .and_then(|e| e.deployed.as_mut());
            if let Some(d) = deployed.filter(|d| d.fingerprint == fp) {
                d.verification = v;
                d.checked_at = Some(at);
            }
        }
    }

    fn set_error(&mut self, domains: &[String], kind: &str, message: &str, at: OffsetDateTime) {
        for domain in domains {
            let entry = self.state.domains.entry(domain.clone()).or_default();
            entry.last_error = Some(LastError {
                at,
                kind: scrub(kind),
                message: scrub(message),
            });
        }
    }

    /// Writes the current state atomically.
    pub(crate) fn save(&self) -> Result<(), StateError> {
        let write = |cause| StateError::Write {
            path: self.path.clone(),
            cause,
        };
        let bytes = encode(&self.state).map_err(write)?;
        write_atomic(&self.dir, &bytes, &mut |_| Ok(())).map_err(write)
    }
}

fn encode(state: &State) -> io::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn take_lock(dir: &Path) -> Result<File, StateError> {
    let lock = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock)
        .map_err(|cause| StateError::Lock {
            lock: lock.clone(),
            cause,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StateError::Locked {
            dir: dir.to_path_buf(),
            lock,
        }),
        Err(TryLockError::Error(cause)) => Err(StateError::Lock { lock, cause }),
    }
}

/// Who took the lock, as its file records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// `certrotd run`: a daemon that takes SIGUSR1 as "run a pass now".
    Run,
    /// A one-shot command (`certrotd sync`): not to be signalled.
    Sync,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Role::Run => "run",
            Role::Sync => "sync",
        }
    }
}

/// The lock file's record of its holder (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LockRecord {
    pub(crate) pid: u32,
    pub(crate) role: Role,
}

impl LockRecord {
    /// The line the lock file holds.
    fn line(&self) -> String {
        format!("{} {}\n", self.pid, self.role.label())
    }

    /// Decodes a lock file's bytes; `None` for anything but one well-formed line.
    pub(crate) fn parse(bytes: &[u8]) -> Option<LockRecord> {
        let text = std::str::from_utf8(bytes).ok()?.strip_suffix('\n')?;
        let (pid, role) = text.split_once(' ')?;
        let role = match role {
            "run" => Role::Run,
            "sync" => Role::Sync,
            _ => return None,
        };
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let pid = pid.parse().ok().filter(|p| *p > 0)?;
        Some(LockRecord { pid, role })
    }
}

/// The longest lock file [`read_lock_record`] reads; a record is far shorter.
const MAX_LOCK_RECORD: u64 = 64;

/// Reads the record of `dir`'s lock file without taking the lock. `None` when the file is
/// missing, not a regular file, unreadable, longer than a record or not a record: the
/// holder is then unknown.
pub(crate) fn read_lock_record(dir: &Path) -> Option<LockRecord> {
    use std::io::Read as _;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(dir.join(LOCK_FILE))
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MAX_LOCK_RECORD + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    LockRecord::parse(&bytes)
}

/// Writes this process's [`LockRecord`] into the lock file just taken. Best effort: without
/// a record the lock still holds; a `sync` then cannot hand its work over (it exits 75).
fn record_holder(dir: &Path, lock: &File, role: Role) {
    use std::os::unix::fs::FileExt as _;
    let record = LockRecord {
        pid: std::process::id(),
        role,
    };
    let written = lock
        .set_len(0)
        .and_then(|()| lock.write_all_at(record.line().as_bytes(), 0));
    if let Err(e) = written {
        tracing::warn!(path = %dir.join(LOCK_FILE).display(), error = %e,
            "cannot record this process in the lock file; a `certrotd sync` cannot hand its \
             work to this process and exits 75 instead");
    }
}

fn is_temp(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX)
}

/// Best effort: a temp file left by a killed writer is garbage (the rename never happened).
fn remove_stray_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_str().is_some_and(is_temp) {
            continue;
        }
        if let Err(e) = fs::remove_file(entry.path()) {
            tracing::warn!(path = %entry.path().display(), error = %e,
                "cannot remove a stray temporary state file; it is ignored");
        }
    }
}

/// Replaces `STATE_FILE` in `dir` with [`AtomicWrite`] (which keeps an existing file's
/// owner and mode); `fault` runs after each [`Step`] (fault injection in tests).
fn write_atomic(
    dir: &Path,
    bytes: &[u8],
    fault: &mut dyn FnMut(Step) -> io::Result<()>,
) -> io::Result<()> {
    let path = dir.join(STATE_FILE);
    let writer = AtomicWrite {
        path: &path,
        temp_prefix: TEMP_PREFIX,
        temp_suffix: TEMP_SUFFIX,
    };
    writer.write_with(bytes, fault).map_err(FsError::into_io)
}

/// Free text as stored: nothing PEM-like, at most [`MAX_TEXT`] characters.
fn scrub(text: &str) -> String {
    if text.contains("-----BEGIN") || text.contains("PRIVATE KEY") {
        return "<withheld: the text contained PEM data>".to_string();
    }
    if text.chars().count() <= MAX_TEXT {
        return text.to_string();
    }
    let mut short: String = text.chars().take(MAX_TEXT).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests;
