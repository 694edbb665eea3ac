//! Finding lineages by file name: which folders a watch path covers, and which layout (and
//! which chain/key files) a folder holds. Reads folder listings only, never file content.
//!
//! Layouts, tried in this order for each folder:
//! - certbot: `fullchain.pem` + `privkey.pem` (symlinks into `../../archive`);
//! - Kubernetes TLS secret mount: `tls.crt` + `tls.key` (symlinks through `..data`);
//! - acme.sh: `fullchain.cer` + `<name>.key`, in `<name>` or `<name>_ecc`;
//! - lego: `<name>.crt` + `<name>.key` in `certificates/` (or the folder itself), several
//!   pairs per folder, each its own lineage; `<name>.issuer.crt` is ignored.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::error::NoPairHint;
use super::{Layout, SourceError, read};

/// A chain/key pair named by a layout (the files may still be missing or bad).
#[derive(Clone, Debug)]
pub(super) struct Found {
    pub(crate) id: String,
    pub(crate) layout: Layout,
    pub(crate) chain: PathBuf,
    pub(crate) key: PathBuf,
}

/// One unit of scanning work.
pub(super) enum Work {
    /// Pairs already found (the watch path is itself a lineage folder).
    Pairs(Vec<Found>),
    /// A subfolder of a watch root, to examine; `quiet` skips it silently when it holds no
    /// pair (known non-lineage folders of an acme.sh home).
    Folder { path: PathBuf, quiet: bool },
    /// A problem found while listing a watch path.
    Problem {
        id: String,
        path: PathBuf,
        error: SourceError,
    },
}

/// Folders of an acme.sh home (`~/.acme.sh`) that are not lineages.
const ACME_HOME_DIRS: &[&str] = &["ca", "deploy", "dnsapi", "notify"];

/// The work one watch path gives: its own pairs, or one item per subfolder.
pub(super) fn watch_path(path: &Path) -> Vec<Work> {
    let problem = |error| {
        vec![Work::Problem {
            id: path.display().to_string(),
            path: path.to_path_buf(),
            error,
        }]
    };
    match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return problem(SourceError::WatchPathMissing {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return problem(read::io_problem(path, &e)),
        Ok(meta) if !meta.is_dir() => {
            return problem(SourceError::NotAFolder {
                path: path.to_path_buf(),
            });
        }
        Ok(_) => {}
    }
    let listing = match list(path) {
        Ok(listing) => listing,
        Err(e) => return problem(read::io_problem(path, &e)),
    };
    if let Some(pairs) = pairs_in(path, &listing) {
        return vec![Work::Pairs(pairs)];
    }
    let acme_home = listing.files.iter().any(|f| f == "account.conf");
    listing
        .dirs
        .iter()
        .map(|name| match name.to_str() {
            Some(n) => Work::Folder {
                path: path.join(n),
                quiet: acme_home && ACME_HOME_DIRS.contains(&n),
            },
            None => not_utf8(&path.join(name)),
        })
        .collect()
}

/// A lineage folder whose name is not UTF-8: a problem of its own (never skipped), shown
/// under a lossy, escaped id.
fn not_utf8(path: &Path) -> Work {
    let shown = shown_path(path);
    Work::Problem {
        id: shown.clone(),
        path: path.to_path_buf(),
        error: SourceError::NameNotUtf8 { shown },
    }
}

/// `path` for messages: invalid UTF-8 as U+FFFD, control characters escaped (`\x1b`,
/// `\u{85}`), so that a file name cannot break a line or a terminal.
pub(super) fn shown_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Examines a subfolder of a watch root: its pairs, or the problem it is.
pub(super) fn folder(path: &Path, quiet: bool) -> Result<Vec<Found>, SourceError> {
    let listing = list(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => SourceError::Dangling {
            path: path.to_path_buf(),
        },
        _ => read::io_problem(path, &e),
    })?;
    match pairs_in(path, &listing) {
        Some(pairs) => Ok(pairs),
        None if quiet => Ok(Vec::new()),
        None => Err(SourceError::NoPair {
            folder: path.to_path_buf(),
            hint: match path.file_name() {
                Some(n) if n == "live" => NoPairHint::WatchInstead(path.to_path_buf()),
                _ => NoPairHint::None,
            },
        }),
    }
}

/// A folder's entries, dot-entries (`..data`, `..2026_…`, `.git`) left out.
struct Listing {
    files: Vec<String>,
    /// Subfolders, and links to folders (or links that cannot be followed: the
    /// examination reports them).
    dirs: Vec<OsString>,
}

fn list(path: &Path) -> io::Result<Listing> {
    let mut listing = Listing {
        files: Vec::new(),
        dirs: Vec::new(),
    };
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let file_type = entry.file_type()?;
        let is_dir = if !file_type.is_symlink() {
            file_type.is_dir()
        } else if name.to_str().is_some_and(looks_like_file) {
            false // certbot's links: no need to follow them here
        } else {
            fs::metadata(entry.path()).map_or(true, |m| m.is_dir())
        };
        if is_dir {
            listing.dirs.push(name);
        } else if let Some(n) = name.to_str() {
            listing.files.push(n.to_string());
        }
    }
    listing.dirs.sort();
    listing.files.sort();
    Ok(listing)
}

/// A name that is certainly meant as a file (a broken link with such a name is a file
/// problem, reported by the layout, not a folder).
fn looks_like_file(name: &str) -> bool {
    [".pem", ".crt", ".cer", ".key"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// The pairs a folder holds, by layout; `None` when it holds none.
fn pairs_in(path: &Path, listing: &Listing) -> Option<Vec<Found>> {
    let has = |name: &str| listing.files.iter().any(|f| f == name);
    let one = |layout, chain: &str, key: &str| {
        Some(vec![Found {
            id: path.display().to_string(),
            layout,
            chain: path.join(chain),
            key: path.join(key),
        }])
    };
    if has("fullchain.pem") || has("privkey.pem") {
        return one(Layout::Certbot, "fullchain.pem", "privkey.pem");
    }
    if has("tls.crt") || has("tls.key") {
        return one(Layout::Kubernetes, "tls.crt", "tls.key");
    }
    if let Some(key) = acme_sh_key(path, listing) {
        return one(Layout::AcmeSh, "fullchain.cer", &key);
    }
    if listing.dirs.iter().any(|d| d == "certificates") {
        let certs = path.join("certificates");
        let inner = list(&certs).ok()?;
        return Some(lego_pairs(&certs, &inner));
    }
    let pairs = lego_pairs(path, listing);
    (!pairs.is_empty()).then_some(pairs)
}

/// The key file name of an acme.sh lineage folder, when the folder is one.
fn acme_sh_key(path: &Path, listing: &Listing) -> Option<String> {
    let folder = path.file_name()?.to_str()?;
    let stem = folder.strip_suffix("_ecc").unwrap_or(folder);
    let own_key = format!("{stem}.key");
    let has = |name: &str| listing.files.iter().any(|f| f == name);
    if has(&own_key) {
        return Some(own_key);
    }
    if !has("fullchain.cer") {
        return None;
    }
    let mut keys = listing.files.iter().filter(|f| f.ends_with(".key"));
    match (keys.next(), keys.next()) {
        (Some(only), None) => Some(only.clone()),
        _ => Some(own_key),
    }
}

/// lego's `<name>.crt` + `<name>.key` pairs (and lone keys) in one folder.
fn lego_pairs(dir: &Path, listing: &Listing) -> Vec<Found> {
    let mut stems: Vec<&str> = listing
        .files
        .iter()
        .filter(|f| !f.ends_with(".issuer.crt"))
        .filter_map(|f| f.strip_suffix(".crt").or_else(|| f.strip_suffix(".key")))
        .filter(|stem| !stem.is_empty())
        .collect();
    stems.sort_unstable();
    stems.dedup();
    stems
        .into_iter()
        .map(|stem| Found {
            id: dir.join(stem).display().to_string(),
            layout: Layout::Lego,
            chain: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        })
        .collect()
}
