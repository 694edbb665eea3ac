//! Watching the certificate folders (inotify through the `notify` crate).
//!
//! Owns: the inotify watches and the translation of raw events into [`Notice`]s on a tokio
//! channel. A notice only says "something changed here": it schedules a pass and carries
//! nothing a pass relies on (its path is a hint for logs).
//!
//! What is watched, for each configured watch path ("root"):
//! - the root, recursively, **without following symlinks** (new sub-folders are added as they
//!   appear);
//! - the folders that symlinks in the root point into, when those lie outside every root,
//!   non-recursively. certbot's `live/<name>/*.pem` are relative links into
//!   `../../archive/<name>/`: watching `live` alone sees the link swaps of a renewal but not
//!   the new files in `archive/`; watching the link targets' folders sees both without
//!   watching all of `/etc/letsencrypt` (accounts, renewal configs, logs' lock files). These
//!   folders are recomputed by [`Watch::refresh`], so a new lineage's archive folder is
//!   watched from the pass that first sees it;
//! - the root's parent folder (or, when the root does not exist, its nearest existing
//!   ancestor), non-recursively, filtered to events about the root itself: a root that is
//!   deleted, renamed away or re-created is noticed at once ([`Notice::RootChanged`]) and
//!   re-armed by the next [`Watch::refresh`], which also compares the root's identity
//!   (device, inode) so a replacement missed by events is re-armed too. Re-arming is logged.
//!
//! Ignored: access events (open, read, close without writing). certrotd reading the files
//! must not trigger passes. Kept: create, delete, rename, modify, attribute changes
//! (`chmod`/`chgrp` can make a key readable) and close-after-write.
//!
//! When the inotify watch limit is hit (ENOSPC from `inotify_add_watch`), the error names
//! `fs.inotify.max_user_watches` and how to raise it; the watches already placed keep
//! working, [`Watch::degraded`] turns true, and the periodic rescan covers the rest.
//!
//! Contract for the main loop: call [`Watch::refresh`] right after [`Watch::new`] and at the
//! start of every pass, *before* scanning. Then anything that changed before the refresh is
//! seen by the scan, and anything after it by the watches.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

/// Notices queued before the main loop reads them. When full, further notices are dropped
/// and a [`Notice::Lost`] follows as soon as there is room (a pass is pending anyway).
pub(crate) const CHANNEL_CAPACITY: usize = 256;

/// How deep below a root symlinks are looked for: `live/<lineage>/<file>` from
/// `/etc/letsencrypt`, `<lineage>/<file>` from `live`, `certificates/<file>` for lego.
const LINK_SEARCH_DEPTH: usize = 3;

/// `EMFILE` on Linux: `inotify_init1` fails with it at `fs.inotify.max_user_instances`.
const EMFILE: i32 = 24;

/// What the watcher tells the main loop. Every notice means "schedule a pass".
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Notice {
    /// Something changed at or under this path (file, link or folder).
    Changed(PathBuf),
    /// This watch root appeared, disappeared, or was replaced: the next
    /// [`Watch::refresh`] re-arms it.
    RootChanged(PathBuf),
    /// Events may have been missed (inotify queue overflow, a watch error, a full channel):
    /// do not rely on the paths of earlier notices.
    Lost,
}

/// A problem with watching. None is fatal: the periodic rescan still finds every change.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WatchError {
    #[error(
        "cannot start watching files: the inotify instance limit is reached \
         (fs.inotify.max_user_instances{current}): {source}. Raise it, e.g. \
         `sysctl -w fs.inotify.max_user_instances=512`, and make it permanent with a file in \
         /etc/sysctl.d/; until then certrotd notices changes only at its periodic rescans \
         (rescan_secs)"
    )]
    Instances {
        current: String,
        #[source]
        source: notify::Error,
    },
    #[error(
        "cannot start watching files: {source}; until this is fixed certrotd notices \
         changes only at its periodic rescans (rescan_secs)"
    )]
    Init {
        #[source]
        source: notify::Error,
    },
    #[error(
        "cannot watch {path}: the inotify watch limit is reached \
         (fs.inotify.max_user_watches{current}). Raise it, e.g. \
         `sysctl -w fs.inotify.max_user_watches=524288`, and make it permanent with a file in \
         /etc/sysctl.d/; until then certrotd notices changes only at its periodic rescans \
         (rescan_secs)"
    )]
    Limit { path: PathBuf, current: String },
    #[error(
        "cannot watch {path}: {source}; check that certrotd's user may read and search this \
         folder (group permissions; ReadOnlyPaths= in the systemd unit)"
    )]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error(
        "cannot watch {path}: it is not a folder; a watch path must be a lineage folder or a \
         folder of lineages ([watch] paths in the configuration)"
    )]
    NotAFolder { path: PathBuf },
    #[error("file watching reported an error: {source}; certrotd rescans everything to be safe")]
    Event {
        #[source]
        source: notify::Error,
    },
}

impl WatchError {
    /// A short label for logs and metrics.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            WatchError::Instances { .. } => "inotify-instances",
            WatchError::Init { .. } => "watch-init",
            WatchError::Limit { .. } => "inotify-limit",
            WatchError::Watch { .. } => "watch",
            WatchError::NotAFolder { .. } => "not-a-folder",
            WatchError::Event { .. } => "watch-event",
        }
    }

    fn init(source: notify::Error) -> WatchError {
        let emfile =
            matches!(&source.kind, notify::ErrorKind::Io(e) if e.raw_os_error() == Some(EMFILE));
        if emfile {
            WatchError::Instances {
                current: current_sysctl("max_user_instances"),
                source,
            }
        } else {
            WatchError::Init { source }
        }
    }

    fn watching(path: &Path, source: notify::Error) -> WatchError {
        match source.kind {
            notify::ErrorKind::MaxFilesWatch => WatchError::Limit {
                path: source
                    .paths
                    .first()
                    .cloned()
                    .unwrap_or_else(|| path.to_path_buf()),
                current: current_sysctl("max_user_watches"),
            },
            _ => WatchError::Watch {
                path: path.to_path_buf(),
                source,
            },
        }
    }
}

/// " = 8192" from /proc, or "" when it cannot be read (e.g. `ProcSubset=pid`).
fn current_sysctl(name: &str) -> String {
    fs::read_to_string(format!("/proc/sys/fs/inotify/{name}"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or_else(String::new, |n| format!(" = {n}"))
}

/// What a [`Watch::refresh`] did.
#[derive(Debug, Default)]
pub(crate) struct Refresh {
    /// Roots watched for the first time.
    pub(crate) armed: Vec<PathBuf>,
    /// Roots watched again after being deleted, renamed away or replaced.
    pub(crate) rearmed: Vec<PathBuf>,
    /// Roots that do not exist: waited for (their nearest existing ancestor is watched).
    pub(crate) missing: Vec<PathBuf>,
    /// Folders outside the roots that symlinks point into, now watched (all of them).
    pub(crate) link_targets: Vec<PathBuf>,
    /// Problems met (also logged).
    pub(crate) errors: Vec<WatchError>,
}

/// The device and inode of a folder: tells a re-created root from the one we watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

#[derive(Debug)]
struct Root {
    path: PathBuf,
    armed: Option<FileId>,
    ever_armed: bool,
    missing_logged: bool,
    last_error: Option<String>,
}

impl Root {
    fn new(path: PathBuf) -> Root {
        Root {
            path,
            armed: None,
            ever_armed: false,
            missing_logged: false,
            last_error: None,
        }
    }
}

/// Which event paths matter; read by the event handler on notify's thread.
#[derive(Debug, Default)]
struct Scope {
    roots: Vec<PathBuf>,
    link_targets: BTreeSet<PathBuf>,
}

impl Scope {
    fn classify(&self, path: &Path, kind: &EventKind) -> Option<Notice> {
        let structural = matches!(
            kind,
            EventKind::Create(_) | EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
        );
        for root in &self.roots {
            // The root itself, or a folder on the way to it (from the ancestor watch).
            if root.starts_with(path) {
                return Some(if structural {
                    Notice::RootChanged(root.clone())
                } else {
                    Notice::Changed(root.clone())
                });
            }
            if path.starts_with(root) {
                return Some(Notice::Changed(path.to_path_buf()));
            }
        }
        let in_target = self.link_targets.contains(path)
            || path.parent().is_some_and(|p| self.link_targets.contains(p));
        in_target.then(|| Notice::Changed(path.to_path_buf()))
    }
}

/// State shared with notify's event-handler thread.
#[derive(Debug)]
struct Shared {
    tx: mpsc::Sender<Notice>,
    scope: RwLock<Scope>,
    /// Roots an event said were deleted, renamed or re-created: re-arm them.
    dirty: Mutex<BTreeSet<PathBuf>>,
    /// A notice did not fit in the channel: send [`Notice::Lost`] when there is room.
    lost: AtomicBool,
    /// The inotify watch limit was hit.
    degraded: AtomicBool,
}

impl Shared {
    fn handle(&self, result: notify::Result<notify::Event>) {
        let event = match result {
            Ok(event) => event,
            Err(err) => return self.on_error(err),
        };
        if event.need_rescan() {
            warn!("the inotify event queue overflowed; certrotd rescans everything");
            self.send(Notice::Lost);
        }
        if !relevant(&event.kind) {
            return;
        }
        let notices: Vec<Notice> = {
            let scope = self.scope.read().unwrap_or_else(PoisonError::into_inner);
            event
                .paths
                .iter()
                .filter_map(|p| scope.classify(p, &event.kind))
                .collect()
        };
        for notice in notices {
            if let Notice::RootChanged(root) = &notice {
                info!(path = %root.display(), "watch path changed (created, deleted or renamed); it is re-armed before the next pass");
                self.dirty
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(root.clone());
            }
            debug!(notice = ?notice, "file event");
            self.send(notice);
        }
    }

    fn on_error(&self, err: notify::Error) {
        let limit = matches!(err.kind, notify::ErrorKind::MaxFilesWatch);
        let path = err.paths.first().cloned().unwrap_or_default();
        let err = if limit {
            WatchError::watching(&path, err)
        } else {
            WatchError::Event { source: err }
        };
        if limit {
            if !self.degraded.swap(true, Ordering::Relaxed) {
                error!(kind = err.kind(), "{err}");
            }
        } else {
            warn!(kind = err.kind(), "{err}");
        }
        self.send(Notice::Lost);
    }

    fn send(&self, notice: Notice) {
        if self.lost.load(Ordering::Relaxed) {
            if self.tx.try_send(Notice::Lost).is_err() {
                return; // still full (a pass is pending) or closed
            }
            self.lost.store(false, Ordering::Relaxed);
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(notice) {
            self.lost.store(true, Ordering::Relaxed);
        }
    }
}

/// Access events (open, read, close without write) never matter; everything else may.
fn relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// The watches on the configured paths. Dropping it stops watching and closes the channel.
pub(crate) struct Watch {
    watcher: notify::RecommendedWatcher,
    shared: Arc<Shared>,
    roots: Vec<Root>,
    /// Folders watched non-recursively: link targets and ancestors of roots.
    flat: BTreeSet<PathBuf>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("roots", &self.roots)
            .field("flat", &self.flat)
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// Starts the inotify watcher for `paths` (relative paths are taken from the current
    /// folder) and returns it with the receiving end of its notices. Nothing is watched
    /// until the first [`Watch::refresh`].
    pub(crate) fn new(paths: &[PathBuf]) -> Result<(Watch, mpsc::Receiver<Notice>), WatchError> {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let shared = Arc::new(Shared {
            tx,
            scope: RwLock::new(Scope::default()),
            dirty: Mutex::new(BTreeSet::new()),
            lost: AtomicBool::new(false),
            degraded: AtomicBool::new(false),
        });
        let handler_shared = Arc::clone(&shared);
        let config = notify::Config::default().with_follow_symlinks(false);
        let watcher =
            notify::RecommendedWatcher::new(move |result| handler_shared.handle(result), config)
                .map_err(WatchError::init)?;
        let mut watch = Watch {
            watcher,
            shared,
            roots: Vec::new(),
            flat: BTreeSet::new(),
        };
        watch.set_roots(paths);
        Ok((watch, rx))
    }

    /// The configured watch paths (absolute, nested ones dropped).
    pub(crate) fn paths(&self) -> Vec<PathBuf> {
        self.roots.iter().map(|r| r.path.clone()).collect()
    }

    #[cfg(test)]
    /// The inotify watch limit was hit: some changes are only seen at periodic rescans.
    pub(crate) fn degraded(&self) -> bool {
        self.shared.degraded.load(Ordering::Relaxed)
    }

    /// Replaces the watch paths (after a reload) and refreshes.
    pub(crate) fn set_paths(&mut self, paths: &[PathBuf]) -> Refresh {
        self.set_roots(paths);
        self.refresh()
    }

    fn set_roots(&mut self, paths: &[PathBuf]) {
        let wanted = normalize_roots(paths);
        let (keep, drop): (Vec<Root>, Vec<Root>) = std::mem::take(&mut self.roots)
            .into_iter()
            .partition(|r| wanted.contains(&r.path));
        for root in drop {
            if root.armed.is_some() {
                let _ = self.watcher.unwatch(&root.path);
            }
            info!(path = %root.path.display(), "no longer watching");
        }
        self.roots = keep;
        for path in wanted {
            if !self.roots.iter().any(|r| r.path == path) {
                self.roots.push(Root::new(path));
            }
        }
        self.roots.sort_by(|a, b| a.path.cmp(&b.path));
        self.scope_mut().roots = self.paths();
    }

    fn scope_mut(&self) -> std::sync::RwLockWriteGuard<'_, Scope> {
        self.shared
            .scope
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Arms roots that appeared or were replaced, drops the ones that vanished, and
    /// recomputes the link-target and ancestor watches. Call before every pass's scan.
    pub(crate) fn refresh(&mut self) -> Refresh {
        let mut report = Refresh::default();
        let dirty = std::mem::take(
            &mut *self
                .shared
                .dirty
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for i in 0..self.roots.len() {
            let force = self.roots.get(i).is_some_and(|r| dirty.contains(&r.path));
            self.arm_root(i, force, &mut report);
        }
        let targets = self.link_target_folders();
        self.scope_mut().link_targets = targets.iter().cloned().collect();
        let mut wanted: BTreeSet<PathBuf> = targets.iter().cloned().collect();
        wanted.extend(self.ancestor_folders());
        self.reconcile_flat(&wanted, &mut report);
        report.link_targets = targets
            .into_iter()
            .filter(|t| self.flat.contains(t))
            .collect();
        debug!(
            roots = self.roots.len(),
            link_targets = report.link_targets.len(),
            flat_watches = self.flat.len(),
            "watches refreshed"
        );
        report
    }

    fn arm_root(&mut self, i: usize, force: bool, report: &mut Refresh) {
        let Some(root) = self.roots.get(i) else {
            return;
        };
        let (path, armed) = (root.path.clone(), root.armed);
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                let id = FileId::of(&meta);
                if armed == Some(id) && !force {
                    return;
                }
                if armed.is_some() || force {
                    // Gone, moved away or replaced: drop what notify still holds for it.
                    let _ = self.watcher.unwatch(&path);
                }
                match self.watcher.watch(&path, RecursiveMode::Recursive) {
                    Ok(()) => self.armed(i, id, report),
                    Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => {
                        self.set_armed(i, None);
                        report.missing.push(path);
                    }
                    Err(e) => {
                        self.set_armed(i, None);
                        self.record_error(i, WatchError::watching(&path, e), report);
                    }
                }
            }
            Ok(_) => {
                self.set_armed(i, None);
                self.record_error(i, WatchError::NotAFolder { path }, report);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if armed.is_some() {
                    let _ = self.watcher.unwatch(&path);
                }
                self.set_armed(i, None);
                if let Some(root) = self.roots.get_mut(i)
                    && !root.missing_logged
                {
                    root.missing_logged = true;
                    warn!(path = %path.display(), "watch path does not exist; certrotd watches for it to appear");
                }
                report.missing.push(path);
            }
            Err(e) => {
                self.set_armed(i, None);
                let source = notify::Error::io(e).add_path(path.clone());
                self.record_error(i, WatchError::watching(&path, source), report);
            }
        }
    }

    fn set_armed(&mut self, i: usize, id: Option<FileId>) {
        if let Some(root) = self.roots.get_mut(i) {
            root.armed = id;
        }
    }

    /// Root `i` is now watched: record and log it.
    fn armed(&mut self, i: usize, id: FileId, report: &mut Refresh) {
        let Some(root) = self.roots.get_mut(i) else {
            return;
        };
        root.armed = Some(id);
        root.missing_logged = false;
        root.last_error = None;
        let path = root.path.clone();
        if root.ever_armed {
            info!(path = %path.display(), "watch path re-armed (it was deleted, renamed or re-created)");
            report.rearmed.push(path);
        } else {
            info!(path = %path.display(), "watching");
            report.armed.push(path);
        }
        root.ever_armed = true;
    }

    /// Logs an error once per distinct message per root, and reports it every time.
    fn record_error(&mut self, i: usize, err: WatchError, report: &mut Refresh) {
        if let WatchError::Limit { .. } = err {
            self.shared.degraded.store(true, Ordering::Relaxed);
        }
        let message = err.to_string();
        if let Some(root) = self.roots.get_mut(i)
            && root.last_error.as_deref() != Some(message.as_str())
        {
            error!(path = %root.path.display(), kind = err.kind(), "{message}");
            root.last_error = Some(message);
        }
        report.errors.push(err);
    }

    /// Folders outside every root that symlinks in an armed root point into.
    fn link_target_folders(&self) -> BTreeSet<PathBuf> {
        let mut candidates = HashSet::new();
        let mut inside: Vec<PathBuf> = Vec::new();
        for root in self.roots.iter().filter(|r| r.armed.is_some()) {
            collect_link_targets(&root.path, LINK_SEARCH_DEPTH, &mut candidates);
            inside.push(root.path.clone());
            if let Ok(canonical) = fs::canonicalize(&root.path) {
                inside.push(canonical);
            }
        }
        for root in self.roots.iter().filter(|r| r.armed.is_none()) {
            inside.push(root.path.clone());
        }
        candidates
            .into_iter()
            .filter_map(|c| fs::canonicalize(c).ok())
            .filter(|c| c.is_dir() && !inside.iter().any(|r| c.starts_with(r)))
            .collect()
    }

    /// For each root, its parent (armed) or its nearest existing ancestor (missing), unless
    /// that lies inside a root (then the root's own watch covers it).
    fn ancestor_folders(&self) -> BTreeSet<PathBuf> {
        let roots: Vec<&Path> = self.roots.iter().map(|r| r.path.as_path()).collect();
        self.roots
            .iter()
            .filter_map(|r| r.path.ancestors().skip(1).find(|a| a.is_dir()))
            .filter(|a| !roots.iter().any(|r| a.starts_with(r)))
            .map(Path::to_path_buf)
            .collect()
    }

    fn reconcile_flat(&mut self, wanted: &BTreeSet<PathBuf>, report: &mut Refresh) {
        let stale: Vec<PathBuf> = self.flat.difference(wanted).cloned().collect();
        for path in stale {
            let _ = self.watcher.unwatch(&path);
            self.flat.remove(&path);
        }
        for path in wanted.difference(&self.flat.clone()) {
            match self.watcher.watch(path, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.flat.insert(path.clone());
                }
                Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => {}
                Err(e) => {
                    let err = WatchError::watching(path, e);
                    if let WatchError::Limit { .. } = err {
                        if !self.shared.degraded.swap(true, Ordering::Relaxed) {
                            error!(path = %path.display(), kind = err.kind(), "{err}");
                        }
                    } else {
                        warn!(path = %path.display(), kind = err.kind(), "{err}");
                    }
                    report.errors.push(err);
                }
            }
        }
    }
}

/// Absolute, deduplicated roots, without those inside another root (already covered).
fn normalize_roots(paths: &[PathBuf]) -> Vec<PathBuf> {
    let abs: BTreeSet<PathBuf> = paths
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    abs.iter()
        .filter(|p| !abs.iter().any(|q| q != *p && p.starts_with(q)))
        .cloned()
        .collect()
}

/// Adds, for every symlink within `depth` levels below `dir` (not following links), the
/// folder its target lives in (or the target itself when it is a folder), unresolved.
fn collect_link_targets(dir: &Path, depth: usize, out: &mut HashSet<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if file_type.is_symlink() {
            let Ok(target) = fs::read_link(&path) else {
                continue;
            };
            let lexical = dir.join(target);
            let target_is_dir = fs::metadata(&path).is_ok_and(|m| m.is_dir());
            let folder = if target_is_dir {
                Some(lexical)
            } else {
                lexical.parent().map(Path::to_path_buf)
            };
            out.extend(folder);
        } else if file_type.is_dir() && depth > 1 {
            collect_link_targets(&path, depth - 1, out);
        }
    }
}

#[cfg(test)]
mod tests;
