//! The SQLite file behind [`super::StateStore`]: its schema and migrations, opening and
//! checking a store, reading it whole, and writing only what changed.
//!
//! Invariants: a store is created whole or not at all (built in a temp file, then renamed
//! into place), so a `state.db` that is empty, torn or someone else's is never ours and is
//! refused; a store is checked (application id, schema version, `quick_check`) through a
//! read-only connection before anything opens it for writing, so a refused store is left
//! byte for byte as it was; a save is one transaction appending one `records` row per
//! domain that changed and writing the `meta` rows whose value changed, nothing else — the
//! appended rows are adjacent whatever the domains' names, so a save writes about the
//! bytes of its rows (a B-tree keyed by domain would rewrite one page per changed domain);
//! the log is compacted at open once it holds more than twice the live domains.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, ErrorCode, OpenFlags, Row, Transaction, params};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{
    Deployment, DomainState, LastError, MAX_STATE_BYTES, STATE_VERSION, State, StateError,
    Verification,
};
use crate::cert::Fingerprint;
use crate::fsio::{FileKind, FsError};

/// The schema version this build reads and writes (`PRAGMA user_version`).
pub(crate) const SCHEMA_VERSION: u32 = 1;
/// `PRAGMA application_id` of a certrotd store: "CRTD".
pub(crate) const APPLICATION_ID: i32 = 0x4352_5444;
/// Prefix and suffix of the temp file a new store is built in.
pub(super) const TEMP_PREFIX: &str = ".state.db.";
pub(super) const TEMP_SUFFIX: &str = ".tmp";

/// `MIGRATIONS[i]` takes a store from schema version `i` to `i + 1` (version 0: a new,
/// empty file). A later schema adds one entry; a store is migrated in one transaction.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [SCHEMA_V1];

/// `records` is append-only: a save appends one row per changed domain (`removed = 1`: the
/// domain was dropped), so the rows of one save are adjacent and a save writes about the
/// bytes of its rows, whatever the domains' names. `domains` is the view an admin queries:
/// the latest record of each domain. [`Writer::open`] compacts the log.
const SCHEMA_V1: &str = "
CREATE TABLE records (
    seq           INTEGER PRIMARY KEY,
    domain        TEXT NOT NULL,
    removed       INTEGER NOT NULL DEFAULT 0,
    fingerprint   TEXT,
    cert_name     TEXT,
    not_after     TEXT,
    deployed_at   TEXT,
    request_id    TEXT,
    verification  TEXT,
    checked_at    TEXT,
    error_kind    TEXT,
    error_message TEXT,
    error_at      TEXT
);
CREATE VIEW domains AS
    SELECT domain, fingerprint, cert_name, not_after, deployed_at, request_id, verification,
           checked_at, error_kind, error_message, error_at
    FROM (SELECT *, max(seq) FROM records GROUP BY domain)
    WHERE removed = 0;
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;
";

const APPEND: &str = "INSERT INTO records (domain, fingerprint, cert_name, not_after, \
    deployed_at, request_id, verification, checked_at, error_kind, error_message, error_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
const SELECT: &str = "SELECT domain, fingerprint, cert_name, not_after, deployed_at, \
    request_id, verification, checked_at, error_kind, error_message, error_at, removed \
    FROM records ORDER BY seq";
/// The log is compacted at open once it holds more than twice the live domains and this
/// many rows besides.
const COMPACT_SLACK: u64 = 1024;
/// Page size of a new store: a save's rows are appended, so smaller pages mean fewer bytes
/// rewritten around them.
pub(super) const PAGE_SIZE: u32 = 1024;

/// An error of SQLite on `path`: a file that is no (sound) database is corrupt, anything
/// else a read error.
pub(super) fn read_error(path: &Path, e: &rusqlite::Error) -> StateError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StateError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
        _ => StateError::Read {
            path: path.to_path_buf(),
            cause: FsError::Open {
                path: path.to_path_buf(),
                source: io::Error::other(e.to_string()),
            },
        },
    }
}

fn corrupt(path: &Path, detail: impl Into<String>) -> StateError {
    StateError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Refuses anything at `path` but a regular file within the size limit, before SQLite
/// opens it (a FIFO would block it, a device is not a store).
fn check_file(path: &Path) -> Result<(), StateError> {
    let meta = fs::metadata(path).map_err(|source| StateError::Read {
        path: path.to_path_buf(),
        cause: FsError::Open {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let cause = if !meta.is_file() {
        FsError::NotRegular {
            path: path.to_path_buf(),
            kind: FileKind::of(&meta),
        }
    } else if meta.len() > MAX_STATE_BYTES {
        FsError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit: MAX_STATE_BYTES,
        }
    } else {
        return Ok(());
    };
    Err(StateError::Read {
        path: path.to_path_buf(),
        cause,
    })
}

/// Reads and checks the store at `path` through a read-only connection (which writes
/// nothing to it): the whole state.
pub(super) fn load(path: &Path) -> Result<State, StateError> {
    load_counted(path).map(|(state, _)| state)
}

/// [`load`], and the number of records read.
pub(super) fn load_counted(path: &Path) -> Result<(State, u64), StateError> {
    check_file(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| read_error(path, &e))?;
    check(&conn, path)?;
    read_all(&conn, path)
}

/// Is this a certrotd store of a schema this build can read?
fn check(conn: &Connection, path: &Path) -> Result<(), StateError> {
    let pragma = |name: &str| -> Result<i64, StateError> {
        conn.pragma_query_value(None, name, |r| r.get(0))
            .map_err(|e| read_error(path, &e))
    };
    let app = pragma("application_id")?;
    if app != i64::from(APPLICATION_ID) {
        return Err(corrupt(
            path,
            format!("not a certrotd state store (SQLite application_id {app:#x})"),
        ));
    }
    match pragma("user_version")? {
        v if v > i64::from(SCHEMA_VERSION) => {
            return Err(StateError::TooNew {
                path: path.to_path_buf(),
                found: u64::try_from(v).unwrap_or(u64::MAX),
                supported: SCHEMA_VERSION,
            });
        }
        v if v < 1 => return Err(corrupt(path, format!("schema version {v} does not exist"))),
        _ => {}
    }
    let verdict: String = conn
        .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
        .map_err(|e| read_error(path, &e))?;
    if verdict != "ok" {
        return Err(corrupt(path, format!("integrity check: {verdict}")));
    }
    Ok(())
}

/// Every record (the latest of each domain wins) and every `meta` row, as a [`State`]; and
/// the number of records.
fn read_all(conn: &Connection, path: &Path) -> Result<(State, u64), StateError> {
    let sql_error = |e: rusqlite::Error| match e {
        rusqlite::Error::SqliteFailure(..) => read_error(path, &e),
        other => corrupt(path, other.to_string()),
    };
    let mut state = read_meta(conn, path)?;
    let mut stmt = conn.prepare(SELECT).map_err(sql_error)?;
    let mut rows = stmt.query([]).map_err(sql_error)?;
    let mut records = 0;
    let mut texts = Interner::default();
    while let Some(row) = rows.next().map_err(sql_error)? {
        records += 1;
        let removed: bool = row.get(11).map_err(sql_error)?;
        let raw = RawRow::of(row).map_err(sql_error)?;
        let domain = raw.domain.clone();
        if removed {
            state.domains.remove(&domain);
            continue;
        }
        let entry = raw
            .into_state(&mut texts)
            .map_err(|detail| corrupt(path, format!("the row of {domain:?}: {detail}")))?;
        state.domains.insert(domain, entry);
    }
    Ok((state, records))
}

/// The `meta` rows (each a top-level field of [`State`] as JSON) decoded into a [`State`]
/// without domains. Rows this build does not know are ignored (and never rewritten).
fn read_meta(conn: &Connection, path: &Path) -> Result<State, StateError> {
    let mut map = serde_json::Map::new();
    let mut stmt = conn
        .prepare("SELECT key, value FROM meta")
        .map_err(|e| read_error(path, &e))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(|e| read_error(path, &e))?;
    for row in rows {
        let (key, text) = row.map_err(|e| corrupt(path, e.to_string()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| corrupt(path, format!("the meta row {key:?} is not JSON: {e}")))?;
        map.insert(key, value);
    }
    map.insert("version".into(), STATE_VERSION.into());
    map.insert(
        "domains".into(),
        serde_json::Value::Object(Default::default()),
    );
    serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| corrupt(path, format!("the meta rows: {e}")))
}

/// One shared copy of each cert name and request id read: the domains of one call share
/// them, as they did when the call was recorded.
#[derive(Default)]
struct Interner(HashSet<Arc<str>>);

impl Interner {
    fn get(&mut self, text: String) -> Arc<str> {
        if let Some(shared) = self.0.get(text.as_str()) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = text.into();
        self.0.insert(Arc::clone(&shared));
        shared
    }
}

/// One `domains` row as stored.
struct RawRow {
    domain: String,
    fingerprint: Option<String>,
    cert_name: Option<String>,
    not_after: Option<String>,
    deployed_at: Option<String>,
    request_id: Option<String>,
    verification: Option<String>,
    checked_at: Option<String>,
    error_kind: Option<String>,
    error_message: Option<String>,
    error_at: Option<String>,
}

impl RawRow {
    fn of(r: &Row<'_>) -> rusqlite::Result<RawRow> {
        Ok(RawRow {
            domain: r.get(0)?,
            fingerprint: r.get(1)?,
            cert_name: r.get(2)?,
            not_after: r.get(3)?,
            deployed_at: r.get(4)?,
            request_id: r.get(5)?,
            verification: r.get(6)?,
            checked_at: r.get(7)?,
            error_kind: r.get(8)?,
            error_message: r.get(9)?,
            error_at: r.get(10)?,
        })
    }

    /// A deployment when `fingerprint` is set, an error when `error_kind` is.
    fn into_state(self, texts: &mut Interner) -> Result<DomainState, String> {
        let deployed = match self.fingerprint {
            None => None,
            Some(fp) => Some(Deployment {
                fingerprint: Fingerprint::from_hex(&fp)
                    .ok_or("fingerprint is not 64 hex digits")?,
                cert_name: texts.get(required(self.cert_name, "cert_name")?),
                not_after: time_of(&required(self.not_after, "not_after")?, "not_after")?,
                deployed_at: time_of(&required(self.deployed_at, "deployed_at")?, "deployed_at")?,
                request_id: texts.get(required(self.request_id, "request_id")?),
                verification: verification_of(&required(self.verification, "verification")?)?,
                checked_at: self
                    .checked_at
                    .map(|t| time_of(&t, "checked_at"))
                    .transpose()?,
            }),
        };
        let last_error = match self.error_kind {
            None => None,
            Some(kind) => Some(Box::new(LastError {
                kind,
                message: required(self.error_message, "error_message")?,
                at: time_of(&required(self.error_at, "error_at")?, "error_at")?,
            })),
        };
        Ok(DomainState {
            deployed,
            last_error,
        })
    }
}

fn required(v: Option<String>, column: &str) -> Result<String, String> {
    v.ok_or_else(|| format!("{column} is missing"))
}

fn time_of(text: &str, column: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| format!("{column} {text:?} is not an RFC 3339 time ({e})"))
}

fn verification_of(text: &str) -> Result<Verification, String> {
    match text {
        "pending" => Ok(Verification::Pending),
        "verified" => Ok(Verification::Verified),
        "failed" => Ok(Verification::Failed),
        other => Err(format!(
            "verification {other:?} is not pending, verified or failed"
        )),
    }
}

fn verification_label(v: Verification) -> &'static str {
    match v {
        Verification::Pending => "pending",
        Verification::Verified => "verified",
        Verification::Failed => "failed",
    }
}

fn rfc3339(t: OffsetDateTime) -> rusqlite::Result<String> {
    t.format(&Rfc3339)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// The top-level fields of `state` other than `version` and `domains`, each as JSON text.
pub(super) fn meta_of(state: &State) -> io::Result<BTreeMap<String, String>> {
    // `State` serializes without its domains (they are rows of their own).
    let value = serde_json::to_value(state).map_err(io::Error::other)?;
    let serde_json::Value::Object(map) = value else {
        return Err(io::Error::other(
            "the state does not serialize as an object",
        ));
    };
    Ok(map
        .into_iter()
        .filter(|(k, _)| k != "version" && k != "domains")
        .map(|(k, v)| (k, v.to_string()))
        .collect())
}

/// The writing side: the open store (once there is one) and what changed since the last
/// save.
#[derive(Debug, Default)]
pub(super) struct Writer {
    open: Option<Open>,
    /// Domains whose row must be written (or deleted) at the next save.
    pub(super) dirty: BTreeSet<String>,
    /// The `meta` rows as last written (or read).
    pub(super) meta: BTreeMap<String, String>,
    /// Row statements executed (`INSERT`/`DELETE`), for the tests' write counts.
    pub(super) statements: u64,
}

#[derive(Debug)]
struct Open {
    /// `None` between passes of an idle daemon ([`Writer::release_memory`]): reopened by
    /// the next save that writes, on the same file.
    conn: Option<Connection>,
    /// `(dev, ino)` of the file the connection has (or had) open.
    id: (u64, u64),
}

fn identity(path: &Path) -> io::Result<Option<(u64, u64)>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some((m.dev(), m.ino()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Writer {
    /// Opens the checked store at `path` for writing (migrating an older schema); `state`
    /// is what was read from it, in `records` rows. A log of more than twice the live
    /// domains (plus [`COMPACT_SLACK`]) is first compacted: the store is rebuilt with one
    /// record per domain (owner, group and mode kept) and renamed over the old one.
    pub(super) fn open(path: &Path, state: &State, records: u64) -> Result<Writer, StateError> {
        let live = u64::try_from(state.domains.len()).unwrap_or(u64::MAX);
        if records > live.saturating_mul(2).saturating_add(COMPACT_SLACK) {
            create(path, Some(path), state).map_err(|cause| StateError::Write {
                path: path.to_path_buf(),
                cause,
            })?;
            tracing::info!(path = %path.display(), records, domains = live,
                "compacted the state store");
        }
        let open = open_write(path).map_err(|e| read_error(path, &e))?;
        let meta = meta_of(state).map_err(|cause| StateError::Write {
            path: path.to_path_buf(),
            cause,
        })?;
        Ok(Writer {
            open: Some(open),
            meta,
            ..Writer::default()
        })
    }

    /// Writes what changed in one transaction; creates the store (with everything) when
    /// there is none at `path` yet, or no longer (removed under a running process).
    pub(super) fn save(&mut self, path: &Path, state: &State) -> io::Result<()> {
        let meta = meta_of(state)?;
        let on_disk = identity(path)?;
        match (&self.open, on_disk) {
            (Some(open), Some(id)) if open.id == id => {}
            (_, None) => return self.recreate(path, state, meta),
            (_, Some(_)) => {
                return Err(io::Error::other(
                    "it was replaced by another file while certrotd had it open; certrotd \
                     does not write over it: stop certrotd, move one of them aside",
                ));
            }
        }
        if self.dirty.is_empty() && meta == self.meta {
            return Ok(());
        }
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        if open.conn.is_none() {
            let reopened = open_write(path).map_err(io::Error::other)?;
            if reopened.id != open.id {
                return Err(io::Error::other(
                    "it was replaced by another file while certrotd had it open; certrotd \
                     does not write over it: stop certrotd, move one of them aside",
                ));
            }
            open.conn = reopened.conn;
        }
        let Some(conn) = open.conn.as_mut() else {
            return Ok(());
        };
        let tx = conn.transaction().map_err(io::Error::other)?;
        let mut n = 0;
        for domain in &self.dirty {
            n += put_domain(&tx, domain, state.domains.get(domain)).map_err(io::Error::other)?;
        }
        n += put_meta(&tx, &self.meta, &meta).map_err(io::Error::other)?;
        tx.commit().map_err(io::Error::other)?;
        self.statements += n;
        self.dirty.clear();
        self.meta = meta;
        Ok(())
    }

    /// A new store with all of `state` (nothing when there is nothing to keep).
    fn recreate(
        &mut self,
        path: &Path,
        state: &State,
        meta: BTreeMap<String, String>,
    ) -> io::Result<()> {
        // Close the old connection (of a removed file) before its side files are removed.
        self.open = None;
        if state.domains.is_empty() && meta.is_empty() {
            self.dirty.clear();
            return Ok(());
        }
        self.statements += create(path, None, state)?;
        self.open = Some(open_write(path).map_err(io::Error::other)?);
        self.dirty.clear();
        self.meta = meta;
        Ok(())
    }

    /// Closes the connection (its page cache, schema and statements; the next save that
    /// writes reopens it on the same file). Closing the last connection checkpoints the
    /// WAL into the store and removes its side files.
    pub(super) fn release_memory(&mut self) {
        if let Some(open) = self.open.as_mut()
            && let Some(conn) = open.conn.take()
            && let Err((_, e)) = conn.close()
        {
            tracing::debug!(error = %e, "the state store's connection did not close cleanly");
        }
    }

    /// `PRAGMA wal_checkpoint(TRUNCATE)`, for tests that measure writes.
    #[cfg(test)]
    pub(super) fn checkpoint(&self) {
        if let Some(conn) = self.open.as_ref().and_then(|o| o.conn.as_ref()) {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .expect("checkpoint");
        }
    }

    /// Makes every write statement fail (`PRAGMA query_only`), for tests of failed saves.
    #[cfg(test)]
    pub(super) fn set_query_only(&mut self, on: bool) {
        if let Some(conn) = self.open.as_ref().and_then(|o| o.conn.as_ref()) {
            conn.pragma_update(None, "query_only", on)
                .expect("query_only is a settable pragma");
        }
    }
}

/// Opens `path` read-write: WAL, every commit synced, migrated to [`SCHEMA_VERSION`].
fn open_write(path: &Path) -> rusqlite::Result<Open> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), journal_mode = %mode,
            "the state store could not be put in WAL mode; `certrotd status` may wait for writes");
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    // A small page cache (the whole state is in memory anyway, and saves only append):
    // 256 KiB, so the store adds little to the idle daemon's footprint.
    conn.pragma_update(None, "cache_size", -256)?;
    conn.set_prepared_statement_cache_capacity(8);
    // A checkpointed WAL is cut back to this size, so it does not stay at its high mark.
    conn.pragma_update(None, "journal_size_limit", 4 * 1024 * 1024)?;
    migrate(&mut conn)?;
    let meta = fs::metadata(path).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
    Ok(Open {
        conn: Some(conn),
        id: (meta.dev(), meta.ino()),
    })
}

/// Runs the migrations from the store's `user_version` up to [`SCHEMA_VERSION`] in one
/// transaction.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let from: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let from = usize::try_from(from).unwrap_or(0);
    if from >= MIGRATIONS.len() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    for sql in &MIGRATIONS[from..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}

/// Builds a store holding `state` in a temp file next to `path`, with the owner, group and
/// mode of `like` (the imported `state.json`) when given, else the writer's and 0600, and
/// renames it into place. Returns the number of row statements.
pub(super) fn create(path: &Path, like: Option<&Path>, state: &State) -> io::Result<u64> {
    let dir = folder_of(path);
    let tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
        .tempfile_in(&dir)?;
    if let Some(like) = like {
        crate::fsio::keep_owner_and_mode(like, tmp.as_file())?;
    }
    let n = fill(tmp.path(), state).map_err(io::Error::other)?;
    tmp.as_file().sync_all()?;
    // Side files of an earlier store at `path` would be read as this one's.
    for side in side_files(path) {
        match fs::remove_file(&side) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    tmp.persist(path).map_err(|e| e.error)?;
    fs::File::open(&dir)?.sync_all()?;
    Ok(n)
}

/// Schema and rows into the new file at `tmp`, then WAL mode (kept in its header). No
/// journal and no syncs: the file is not the store until the caller has synced and
/// renamed it.
fn fill(tmp: &Path, state: &State) -> rusqlite::Result<u64> {
    let mut conn = Connection::open_with_flags(
        tmp,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    let _off: String = conn.query_row("PRAGMA journal_mode = OFF", [], |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "application_id", APPLICATION_ID)?;
    migrate(&mut conn)?;
    let tx = conn.transaction()?;
    let mut n = 0;
    for (domain, entry) in &state.domains {
        n += put_domain(&tx, domain, Some(entry))?;
    }
    let meta = meta_of(state).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
    n += put_meta(&tx, &BTreeMap::new(), &meta)?;
    tx.commit()?;
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.close().map_err(|(_, e)| e).map(|()| n)
}

fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// SQLite's side files of the store at `path`.
pub(super) fn side_files(path: &Path) -> [PathBuf; 2] {
    let with = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    [with("-wal"), with("-shm")]
}

/// Appends `domain`'s record (when it has no entry: a `removed` one): one statement.
fn put_domain(
    tx: &Transaction<'_>,
    domain: &str,
    entry: Option<&DomainState>,
) -> rusqlite::Result<u64> {
    let Some(entry) = entry else {
        tx.prepare_cached("INSERT INTO records (domain, removed) VALUES (?1, 1)")?
            .execute([domain])?;
        return Ok(1);
    };
    let d = entry.deployed.as_ref();
    let e = entry.last_error.as_ref();
    let time = |t: Option<OffsetDateTime>| t.map(rfc3339).transpose();
    tx.prepare_cached(APPEND)?.execute(params![
        domain,
        d.map(|d| d.fingerprint.hex()),
        d.map(|d| &*d.cert_name),
        time(d.map(|d| d.not_after))?,
        time(d.map(|d| d.deployed_at))?,
        d.map(|d| &*d.request_id),
        d.map(|d| verification_label(d.verification)),
        time(d.and_then(|d| d.checked_at))?,
        e.map(|e| e.kind.as_str()),
        e.map(|e| e.message.as_str()),
        time(e.map(|e| e.at))?,
    ])?;
    Ok(1)
}

/// Brings the `meta` rows from `old` to `new`: changed and new keys written, keys gone from
/// `new` deleted. Returns the number of statements.
fn put_meta(
    tx: &Transaction<'_>,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> rusqlite::Result<u64> {
    let mut n = 0;
    for (key, value) in new {
        if old.get(key) != Some(value) {
            tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
                .execute([key, value])?;
            n += 1;
        }
    }
    for key in old.keys().filter(|k| !new.contains_key(*k)) {
        tx.prepare_cached("DELETE FROM meta WHERE key = ?1")?
            .execute([key])?;
        n += 1;
    }
    Ok(n)
}
