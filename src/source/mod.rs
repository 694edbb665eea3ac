//! Finding certificate material on disk and turning it into parsed certificates.
//!
//! Owns: the layouts (certbot, acme.sh, Kubernetes secret mount, lego; see [`discover`]),
//! reading files safely (symlinks followed, 1 MiB cap checked before and during reading,
//! special files refused), and the [`Scanner`]'s cache keyed by file identity.
//!
//! Invariants:
//! - A scan never fails as a whole: every problem (missing watch path, symlink loop,
//!   missing key, unreadable or oversized file, folder with no pair, invalid content) is
//!   one [`Lineage`] with an `Err` result; other lineages are unaffected.
//! - A scan is independent of time: it calls [`cert::parse`], never the clock. Callers
//!   apply [`Lineage::valid_at`] (or [`cert::check_time`]) with their own `now`.
//! - A lineage whose files (links followed) have the same (device, inode, size, mtime,
//!   ctime) as at the previous scan is neither read nor parsed again. A known single-pair
//!   folder (certbot, acme.sh, Kubernetes) whose two files are still there is not even
//!   listed again; lego folders and any folder with a missing or bad file are.
//! - Lineages come back sorted by `id`, one per `id`.

mod discover;
mod error;
mod read;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

use crate::cert::{self, Certificate};

pub use error::SourceError;

pub use error::NoPairHint;

use discover::{Found, Work};
use read::{FileId, Probe};

/// The most bytes read from one certificate or key file; bigger files are not read.
pub(crate) const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// How the files of a lineage are laid out (which ACME client wrote them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Layout {
    Certbot,
    AcmeSh,
    Kubernetes,
    Lego,
    /// A folder (or watch path) in which no layout was recognised.
    Unknown,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Certbot => "certbot",
            Layout::AcmeSh => "acme.sh",
            Layout::Kubernetes => "kubernetes",
            Layout::Lego => "lego",
            Layout::Unknown => "unknown",
        })
    }
}

/// One certificate lineage found on disk, parsed (time-independently) or with its problem.
#[derive(Clone, Debug)]
pub struct Lineage {
    /// Display path: the lineage folder (lego: `certificates/<name>`). Stable across
    /// scans; used in messages and to break ties between equally good certificates.
    pub(crate) id: String,
    pub(crate) layout: Layout,
    /// The chain file as named in the lineage (before resolving links); for a problem
    /// found before any file was named, the folder.
    pub(crate) chain_path: PathBuf,
    pub(crate) key_path: PathBuf,
    pub(crate) result: Result<Arc<Certificate>, SourceError>,
}

impl Lineage {
    /// The certificate, when it parsed and `now` is within its validity; otherwise why not
    /// (a time problem is prefixed with the chain file's path).
    pub fn valid_at(&self, now: OffsetDateTime) -> Result<&Arc<Certificate>, SourceError> {
        let cert = self.result.as_ref().map_err(Clone::clone)?;
        cert::check_time(cert, now)
            .map_err(|reason| SourceError::invalid(reason, &self.chain_path, &self.key_path))?;
        Ok(cert)
    }

    fn problem(id: String, layout: Layout, path: &Path, error: SourceError) -> Lineage {
        Lineage {
            id,
            layout,
            chain_path: path.to_path_buf(),
            key_path: path.to_path_buf(),
            result: Err(error),
        }
    }
}

/// Counters of the work a [`Scanner`] did (for tests, the bench and the daemon's logs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    pub(crate) scans: u64,
    /// Lineages returned (problems included).
    pub(crate) lineages: u64,
    /// Lineages whose files were unchanged, answered from the cache.
    pub cache_hits: u64,
    /// Calls of `cert::parse`.
    pub parsed: u64,
    /// Folders listed (watch paths and lineage folders; not known single-pair folders).
    pub folders_listed: u64,
    pub files_read: u64,
    pub bytes_read: u64,
}

impl ScanStats {
    fn add(&mut self, other: &ScanStats) {
        self.scans += other.scans;
        self.lineages += other.lineages;
        self.cache_hits += other.cache_hits;
        self.parsed += other.parsed;
        self.folders_listed += other.folders_listed;
        self.files_read += other.files_read;
        self.bytes_read += other.bytes_read;
    }
}

/// What the cache remembers about one lineage's files and their parse.
#[derive(Clone, Debug)]
struct Entry {
    /// Where the pair was found (reused to skip listing a known single-pair folder).
    found: Found,
    chain: FileId,
    key: FileId,
    result: Result<Arc<Certificate>, SourceError>,
}

/// Scans watch paths, re-reading only lineages whose files changed since the last scan.
#[derive(Debug)]
pub struct Scanner {
    cache: HashMap<String, Arc<Entry>>,
    /// The issuers' PEM of the cached certificates, one copy per distinct issuer chain.
    issuers: cert::Issuers,
    threads: usize,
    totals: ScanStats,
    last: ScanStats,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner::new()
    }
}

impl Scanner {
    /// A scanner with an empty cache, using every available core for cold parsing.
    pub fn new() -> Scanner {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Scanner::with_threads(threads)
    }

    /// A scanner using at most `threads` threads (at least 1).
    pub(crate) fn with_threads(threads: usize) -> Scanner {
        Scanner {
            cache: HashMap::new(),
            issuers: cert::Issuers::default(),
            threads: threads.max(1),
            totals: ScanStats::default(),
            last: ScanStats::default(),
        }
    }

    /// Finds every lineage under `watch_paths` and parses the changed ones. Sorted by id.
    pub fn scan(&mut self, watch_paths: &[PathBuf]) -> Vec<Lineage> {
        let work: Vec<Work> = watch_paths
            .iter()
            .flat_map(|p| discover::watch_path(p))
            .collect();
        let (outcomes, mut stats) = self.run(work);
        stats.folders_listed += watch_paths.len() as u64;
        let mut lineages = Vec::with_capacity(outcomes.len());
        let mut cache = HashMap::with_capacity(outcomes.len());
        for (lineage, entry) in outcomes {
            if let Some(entry) = entry {
                cache.insert(lineage.id.clone(), entry);
            }
            lineages.push(lineage);
        }
        lineages.sort_by(|a, b| a.id.cmp(&b.id));
        lineages.dedup_by(|a, b| a.id == b.id);
        self.cache = cache;
        self.issuers.prune();
        stats.scans = 1;
        stats.lineages = lineages.len() as u64;
        self.totals.add(&stats);
        self.last = stats;
        lineages
    }

    /// Work done since the scanner was made.
    #[cfg(test)]
    pub(crate) fn stats(&self) -> ScanStats {
        self.totals
    }

    /// Work done by the last scan.
    pub fn last_scan(&self) -> ScanStats {
        self.last
    }

    /// Runs the work items on up to `self.threads` threads, each taking the next item,
    /// so that slow (RSA) lineages spread evenly. Order is restored by the caller's sort.
    fn run(&self, work: Vec<Work>) -> (Vec<Outcome>, ScanStats) {
        let threads = self.threads.min(work.len()).max(1);
        let next = AtomicUsize::new(0);
        let total = Mutex::new(ScanStats::default());
        let worker = || {
            let mut stats = ScanStats::default();
            let mut mine = Vec::new();
            while let Some(item) = work.get(next.fetch_add(1, Ordering::Relaxed)) {
                mine.extend(self.process(item, &mut stats));
            }
            if let Ok(mut t) = total.lock() {
                t.add(&stats);
            }
            mine
        };
        let mut results: Vec<Outcome> = Vec::new();
        if threads == 1 {
            results = worker();
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = (1..threads).map(|_| s.spawn(worker)).collect();
                results = worker();
                for h in handles {
                    // A worker can only panic on a bug; its lineages are lost, not the scan.
                    if let Ok(part) = h.join() {
                        results.extend(part);
                    }
                }
            });
        }
        let stats = total.into_inner().unwrap_or_default();
        (results, stats)
    }

    fn process(&self, item: &Work, stats: &mut ScanStats) -> Vec<Outcome> {
        match item {
            Work::Problem { id, path, error } => {
                let lineage = Lineage::problem(id.clone(), Layout::Unknown, path, error.clone());
                vec![(lineage, None)]
            }
            Work::Pairs(pairs) => pairs.iter().map(|f| self.pair(f, stats)).collect(),
            Work::Folder { path, quiet } => match self.known_folder(path, stats) {
                Some(outcome) => vec![outcome],
                None => self.folder(path, *quiet, stats),
            },
        }
    }

    /// A single-pair folder (certbot, acme.sh, Kubernetes) whose two files are still
    /// there, answered without listing the folder again. Lego folders hold several pairs
    /// and are always listed; any probe problem means listing again too.
    fn known_folder(&self, path: &Path, stats: &mut ScanStats) -> Option<Outcome> {
        let entry = self.cache.get(&path.display().to_string())?;
        if entry.found.layout == Layout::Lego {
            return None;
        }
        let ids = probe_pair(&entry.found).ok()?;
        Some(self.identified(&entry.found, ids, stats))
    }

    fn folder(&self, path: &Path, quiet: bool, stats: &mut ScanStats) -> Vec<Outcome> {
        stats.folders_listed += 1;
        match discover::folder(path, quiet) {
            Ok(pairs) => pairs.iter().map(|f| self.pair(f, stats)).collect(),
            Err(error) => {
                let id = path.display().to_string();
                vec![(Lineage::problem(id, Layout::Unknown, path, error), None)]
            }
        }
    }

    /// Probes, then (unless the cache knows these exact files) reads and parses one pair.
    fn pair(&self, found: &Found, stats: &mut ScanStats) -> Outcome {
        match probe_pair(found) {
            Ok(ids) => self.identified(found, ids, stats),
            Err(error) => (lineage(found, Err(error)), None),
        }
    }

    /// A pair whose files were identified: from the cache when unchanged, else read.
    fn identified(&self, found: &Found, ids: (FileId, FileId), stats: &mut ScanStats) -> Outcome {
        let (chain_id, key_id) = ids;
        if let Some(entry) = self.cache.get(&found.id)
            && entry.chain == chain_id
            && entry.key == key_id
        {
            stats.cache_hits += 1;
            return (lineage(found, entry.result.clone()), Some(entry.clone()));
        }
        match read_and_parse(found, &self.issuers, stats) {
            Ok(entry) => (lineage(found, entry.result.clone()), Some(Arc::new(entry))),
            Err(error) => (lineage(found, Err(error)), None),
        }
    }
}

fn lineage(found: &Found, result: Result<Arc<Certificate>, SourceError>) -> Lineage {
    Lineage {
        id: found.id.clone(),
        layout: found.layout,
        chain_path: found.chain.clone(),
        key_path: found.key.clone(),
        result,
    }
}

/// A lineage and, when its files were identified, the cache entry to keep.
type Outcome = (Lineage, Option<Arc<Entry>>);

/// Identifies both files of a pair, or names the first problem.
fn probe_pair(found: &Found) -> Result<(FileId, FileId), SourceError> {
    let chain = read::probe(&found.chain);
    let key = read::probe(&found.key);
    let missing_key = || SourceError::MissingKey {
        chain: found.chain.clone(),
        key: found.key.clone(),
    };
    let missing_chain = || SourceError::MissingCertificate {
        chain: found.chain.clone(),
        key: found.key.clone(),
    };
    match (chain, key) {
        (Probe::Found(c), Probe::Found(k)) => Ok((c, k)),
        (Probe::Missing, Probe::Missing) => Err(SourceError::NoPair {
            folder: found.chain.parent().unwrap_or(&found.chain).to_path_buf(),
            hint: NoPairHint::None,
        }),
        (Probe::Failed(e), _) => Err(e),
        (Probe::Missing, _) => Err(missing_chain()),
        (Probe::Found(_), Probe::Failed(e)) => Err(e),
        (Probe::Found(_), Probe::Missing) => Err(missing_key()),
    }
}

/// Reads both files (capped) and parses them; the entry is keyed by what was read.
fn read_and_parse(
    found: &Found,
    issuers: &cert::Issuers,
    stats: &mut ScanStats,
) -> Result<Entry, SourceError> {
    let (chain_id, chain) = read::read(&found.chain)?;
    stats.files_read += 1;
    stats.bytes_read += chain.len() as u64;
    let (key_id, key) = read::read(&found.key)?;
    stats.files_read += 1;
    stats.bytes_read += key.len() as u64;
    stats.parsed += 1;
    let result = cert::parse_sharing(&chain, &key, issuers)
        .map(Arc::new)
        .map_err(|reason| SourceError::invalid(reason, &found.chain, &found.key));
    Ok(Entry {
        found: found.clone(),
        chain: chain_id,
        key: key_id,
        result,
    })
}

#[cfg(test)]
mod tests;
