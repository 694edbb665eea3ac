//! The deployed state: what certrotd last pushed to each CDN domain, kept in an SQLite
//! store an admin can query.
//!
//! Owns `<[state] dir>/state.db` (with SQLite's `state.db-wal` and `state.db-shm` while it
//! is open), the lock `<[state] dir>/certrotd.lock`, and the one-time import of the JSON
//! file of earlier releases (`state.json`, [`legacy`]), kept afterwards as
//! `state.json.imported`.
//!
//! Schema (version `db::SCHEMA_VERSION` = 1 in `PRAGMA user_version`, `PRAGMA
//! application_id` `0x43525444` ("CRTD"); older stores are migrated on open, see `db`):
//! - `records(seq INTEGER PRIMARY KEY, domain, removed, fingerprint, cert_name, not_after,
//!   deployed_at, request_id, verification, checked_at, error_kind, error_message,
//!   error_at)`: an append-only log, one row per domain per save that changed it (the
//!   latest row of a domain is its state; `removed = 1`: dropped). Times as RFC 3339 text,
//!   `verification` one of `pending`, `verified`, `failed`; the deployment columns are NULL
//!   for a domain with only an error on record, the `error_*` ones when it has none.
//!   Compacted at open (one row per domain) once it holds more than twice the live domains.
//! - view `domains(domain, fingerprint, …, error_at)`: the latest record of each live
//!   domain — what an admin queries.
//! - `meta(key PRIMARY KEY, value)`: every other top-level field of [`State`], one row
//!   each, its value as JSON (a field that serializes to nothing has no row); e.g.
//!   `last_pass` = `{"at": "2026-…Z", "by": "run" | "sync"}`, the last pass that ran to its
//!   end (absent before the first).
//!
//! Invariants:
//! - Crash-safe: the store is in WAL mode with `synchronous = FULL`; each save is one
//!   transaction (the reconcile pass saves once per batch of executor events), so a kill
//!   at any instant leaves the store as of the last committed save. A new store is built
//!   whole in a temp file (`.state.db.*.tmp`) and renamed into place; stray temp files
//!   of a killed run are removed by [`StateStore::open`].
//! - Writes proportional to the change: the in-memory [`State`] is the model; the store
//!   appends one record per domain a `note_*`/`record_*` call changed since the last save
//!   and writes the `meta` rows whose JSON changed, nothing else.
//! - One writer per folder: [`StateStore`] holds an exclusive lock on `certrotd.lock`
//!   (`flock`) for its whole life; the kernel releases it when the process dies. Readers
//!   ([`load`], `certrotd status`) take no lock: they open the store read-only, which WAL
//!   allows while a writer commits.
//! - The lock file names its holder: one line `<pid> <role>` ([`LockRecord`], role `run` for
//!   the daemon, `sync` for a one-shot command), rewritten each time the lock is taken. The
//!   record is a hint for [`read_lock_record`]'s readers (a `sync` handing its work to a
//!   running daemon): it may be stale or missing, only the `flock` is authoritative.
//! - A missing store is an empty state (opening writes nothing; the first save creates
//!   it). A `state.db` that is not a certrotd store, fails SQLite's `quick_check`, or has a
//!   newer schema is refused, checked through a read-only connection so that it is never
//!   written; a corrupt or newer `state.json` is refused as before and not imported.
//! - An existing store's owner, group and mode are kept (SQLite gives its side files the
//!   same); an imported store takes those of the `state.json` it replaces.
//! - The store holds fingerprints, names, times, request ids and short error texts — never
//!   key material. Free texts are scrubbed of anything that looks like PEM before they are
//!   stored.
//!
//! Planning rule ([`State::deployed_fingerprints`]): a deployment whose read-back failed is
//! not deployed; one not yet read back counts only when read-back is off (`verify = false`),
//! so with `verify = true` a batch interrupted before its read-back is pushed again.

mod db;
mod legacy;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::cert::Fingerprint;
use crate::fsio::FsError;

pub use legacy::parse;

/// The version of the in-memory model and of the JSON file it was once stored in.
pub(crate) const STATE_VERSION: u32 = 1;
/// The state store's name inside `[state] dir`.
pub const STATE_FILE: &str = "state.db";
/// The JSON state file of earlier releases, imported on first open.
pub const LEGACY_FILE: &str = "state.json";
/// What an imported [`LEGACY_FILE`] is renamed to.
pub const IMPORTED_FILE: &str = "state.json.imported";
/// The lock file's name inside `[state] dir`.
pub const LOCK_FILE: &str = "certrotd.lock";
/// Temp files of earlier releases' atomic `state.json` writes.
const LEGACY_TEMP_PREFIX: &str = ".state.json.";
/// Longest free text (error message, name, request id) kept in the store, in characters.
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

/// The whole deployed state. It serializes WITHOUT its domains (they are rows of their
/// own): what it serializes to is the store's `meta` table, one row per top-level field
/// but `version`. New persistent data goes in new top-level fields here
/// (`#[serde(default, skip_serializing_if = …)]`), not in [`DomainState`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub(crate) version: u32,
    #[serde(default, skip_serializing)]
    pub domains: BTreeMap<String, DomainState>,
    /// The last pass that ran to its end (for `status` and monitoring); absent in files
    /// written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_pass: Option<LastPass>,
}

impl Default for State {
    fn default() -> State {
        State {
            version: STATE_VERSION,
            domains: BTreeMap::new(),
            last_pass: None,
        }
    }
}

/// When a pass last ran to its end, and which command ran it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastPass {
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) at: OffsetDateTime,
    /// `run` or `sync`.
    pub(crate) by: String,
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

/// Reads the state of `dir` without locking (for `certrotd status` while the daemon runs):
/// the store read-only, else a `state.json` not yet imported. A missing folder or store is
/// an empty state.
pub fn load(dir: &Path) -> Result<State, StateError> {
    let path = dir.join(STATE_FILE);
    if path.exists() {
        return db::load(&path);
    }
    match legacy::read(&dir.join(LEGACY_FILE))? {
        Some(state) => Ok(state),
        // Imported between the two looks.
        None if path.exists() => db::load(&path),
        None => Ok(State::default()),
    }
}

/// The state of one folder, owned exclusively (lock held) until dropped.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    /// Holds the `flock`; closing it (drop, or process death) releases the lock.
    _lock: File,
    state: State,
    /// The store's connection and what changed since the last save. Behind a mutex so
    /// that [`StateStore::save`] takes `&self` and the store is `Sync` (a connection is
    /// only `Send`); never contended.
    writer: Mutex<db::Writer>,
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
        let path = dir.join(STATE_FILE);
        let (state, writer) = if path.exists() {
            let (state, records) = db::load_counted(&path)?;
            let writer = db::Writer::open(&path, &state, records)?;
            set_aside_imported(dir, false);
            (state, writer)
        } else {
            match legacy::read(&dir.join(LEGACY_FILE))? {
                Some(state) => {
                    let writer = import(dir, &state)?;
                    (state, writer)
                }
                None => (State::default(), db::Writer::default()),
            }
        };
        Ok(StateStore {
            path,
            _lock: lock,
            state,
            writer: Mutex::new(writer),
        })
    }

    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// The store's path.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Row statements written to the store so far (each an `INSERT` or `DELETE` of one
    /// domain or `meta` row).
    #[cfg(test)]
    pub(crate) fn write_statements(&self) -> u64 {
        self.writer().statements
    }

    /// Makes the store refuse writes (or accept them again), for tests of failed saves.
    #[cfg(test)]
    pub(crate) fn refuse_writes(&mut self, on: bool) {
        self.writer_mut().set_query_only(on);
    }

    /// Copies the WAL into the store and empties it, for tests that measure writes.
    #[cfg(test)]
    pub(crate) fn checkpoint(&self) {
        self.writer().checkpoint();
    }

    fn writer(&self) -> MutexGuard<'_, db::Writer> {
        // A panic while saving leaves the writer as it was: the next save retries.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn writer_mut(&mut self) -> &mut db::Writer {
        self.writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks `domains` for writing at the next save.
    fn touch(&mut self, domains: &[String]) {
        let dirty = &mut self.writer_mut().dirty;
        dirty.extend(domains.iter().cloned());
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
        self.touch(domains);
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
        let mut cleared = Vec::new();
        for domain in domains {
            if let Some(entry) = self.state.domains.get_mut(domain)
                && entry.last_error.take().is_some()
            {
                cleared.push(domain.clone());
            }
        }
        self.touch(&cleared);
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

    /// Notes (without saving) that a pass by `by` (`run`, `sync`) ran to its end at `at`.
    pub(crate) fn note_pass(&mut self, by: &str, at: OffsetDateTime) {
        self.state.last_pass = Some(LastPass {
            at,
            by: by.to_string(),
        });
    }

    /// Clears (without saving) the last error of those `domains` that have one: they were
    /// found up to date, so the error is stale. Whether anything changed.
    pub(crate) fn clear_stale_errors(&mut self, domains: &[String]) -> bool {
        let stale: Vec<String> = domains
            .iter()
            .filter(|d| {
                self.state
                    .domains
                    .get(*d)
                    .is_some_and(|e| e.last_error.is_some())
            })
            .cloned()
            .collect();
        self.touch(&stale);
        for d in &stale {
            if let Some(e) = self.state.domains.get_mut(d) {
                e.last_error = None;
            }
        }
        !stale.is_empty()
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
        let mut concluded = Vec::new();
        for domain in domains {
            let deployed = self
                .state
                .domains
                .get_mut(domain)
                .and_then(|e| e.deployed.as_mut());
            if let Some(d) = deployed.filter(|d| d.fingerprint == fp) {
                d.verification = v;
                d.checked_at = Some(at);
                concluded.push(domain.clone());
            }
        }
        self.touch(&concluded);
    }

    fn set_error(&mut self, domains: &[String], kind: &str, message: &str, at: OffsetDateTime) {
        self.touch(domains);
        for domain in domains {
            let entry = self.state.domains.entry(domain.clone()).or_default();
            entry.last_error = Some(LastError {
                at,
                kind: scrub(kind),
                message: scrub(message),
            });
        }
    }

    /// Writes what changed since the last save to the store, in one transaction (creating
    /// the store if there is none yet). On an error nothing of it is written and the
    /// in-memory state keeps everything: the next save writes it.
    pub(crate) fn save(&self) -> Result<(), StateError> {
        self.writer()
            .save(&self.path, &self.state)
            .map_err(|cause| StateError::Write {
                path: self.path.clone(),
                cause,
            })
    }
}

/// Imports `state` (read from `dir`'s `state.json`): the store is built with the file's
/// owner, group and mode, then the file is renamed to `state.json.imported`.
fn import(dir: &Path, state: &State) -> Result<db::Writer, StateError> {
    let path = dir.join(STATE_FILE);
    let json = dir.join(LEGACY_FILE);
    db::create(&path, Some(&json), state).map_err(|cause| StateError::Write {
        path: path.clone(),
        cause,
    })?;
    let records = u64::try_from(state.domains.len()).unwrap_or(u64::MAX);
    let writer = db::Writer::open(&path, state, records)?;
    tracing::info!(from = %json.display(), to = %path.display(), domains = state.domains.len(),
        "imported the state file of an earlier certrotd");
    set_aside_imported(dir, true);
    Ok(writer)
}

/// Renames an imported `state.json` to `state.json.imported` (best effort: a file left
/// over is renamed at the next open; the store wins over it). `fresh`: the import just
/// happened (else a kill came between the import and the rename).
fn set_aside_imported(dir: &Path, fresh: bool) {
    let json = dir.join(LEGACY_FILE);
    if !fresh && fs::symlink_metadata(&json).is_err() {
        return;
    }
    if !fresh {
        tracing::warn!(path = %json.display(),
            "both state.db and state.json exist; state.db is the state, state.json was \
             already imported and is set aside as state.json.imported");
    }
    let renamed =
        fs::rename(&json, dir.join(IMPORTED_FILE)).and_then(|()| File::open(dir)?.sync_all());
    if let Err(e) = renamed {
        tracing::warn!(path = %json.display(), error = %e,
            "cannot rename the imported state file; it is ignored (state.db is the state)");
    }
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

/// A temp file of a new store (`.state.db.*.tmp`, and SQLite's side files of it while it
/// was open) or of an earlier release's `state.json` write.
fn is_temp(name: &str) -> bool {
    let db_temp = name.starts_with(db::TEMP_PREFIX)
        && ["", "-journal", "-wal", "-shm"].iter().any(|side| {
            name.strip_suffix(side)
                .is_some_and(|n| n.ends_with(db::TEMP_SUFFIX))
        });
    let json_temp = name.starts_with(LEGACY_TEMP_PREFIX) && name.ends_with(db::TEMP_SUFFIX);
    db_temp || json_temp
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
