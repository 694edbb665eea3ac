//! `certrotd status [--json] [--domain D]… [--lineage L]…`: what the state file says each
//! domain serves, judged against the certificates on disk. No network, no lock (it works
//! while the daemon runs); it scans the watch paths read-only.
//!
//! Each managed domain gets a condition ([`Condition`]): `up-to-date`, or why not —
//! `uncovered` (with the reason), `never-deployed`, `failed` (a last error is on record),
//! `unverified` (read-back pending or failed), `outdated` (a better valid certificate is on
//! disk), `expiring` (what it serves has less than a third of its lifetime left). Above the
//! table: the last pass that ran to its end (the state file's `last_pass`) and whether a
//! daemon holds the lock (the lock file's record, its PID alive).
//!
//! Exit 0 when every managed domain shown is up to date; 1 when one is not, when a filter
//! matches no domain, or when the state file cannot be read; 78 for a bad configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use serde::Serialize;
use time::OffsetDateTime;

use super::sync::load_settings;
use super::text::table;
use super::{CmdResult, Exit};
use crate::config::{Product, Settings};
use crate::reconcile::{NoHolds, Pass, Planned};
use crate::source::Scanner;
use crate::state::{self, Deployment, DomainState, LastError, LastPass, Role, State, Verification};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct StatusArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub(crate) json: bool,
    /// Show only this domain (repeatable)
    #[arg(long, value_name = "DOMAIN")]
    pub(crate) domain: Vec<String>,
    /// Show only the domains this lineage (its folder name or path) should serve (repeatable)
    #[arg(long, value_name = "LINEAGE")]
    pub(crate) lineage: Vec<String>,
}

/// Whether a managed domain is up to date, or why not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Condition {
    UpToDate,
    Uncovered,
    NeverDeployed,
    Failed,
    Unverified,
    Outdated,
    Expiring,
    /// Not managed (only the state file knows it): not judged.
    NotManaged,
}

impl Condition {
    fn label(self) -> &'static str {
        match self {
            Condition::UpToDate => "up to date",
            Condition::Uncovered => "UNCOVERED",
            Condition::NeverDeployed => "NEVER DEPLOYED",
            Condition::Failed => "FAILED",
            Condition::Unverified => "UNVERIFIED",
            Condition::Outdated => "OUTDATED",
            Condition::Expiring => "EXPIRING",
            Condition::NotManaged => "-",
        }
    }
}

pub fn run(config: &Path, args: &StatusArgs) -> CmdResult {
    let Some(settings) = load_settings(config) else {
        return Ok(Exit::Config);
    };
    let state = match state::load(&settings.state.dir) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("certrotd: {e}");
            return Ok(Exit::Problems);
        }
    };
    let now = OffsetDateTime::now_utc();
    let lineages = Scanner::new().scan(&settings.watch.paths);
    let domains = settings.all_domains();
    // Only what is up to date and what is pending matters here, not which call deploys it.
    let (routes, per_call) = (BTreeMap::new(), BTreeMap::new());
    let pass = Pass {
        domains: &domains,
        routes: &routes,
        per_call: &per_call,
        batch: settings.aliyun.domains_per_call(),
        verify: settings.aliyun.verify,
        force: false,
    };
    let planned = pass.plan(&lineages, &mut NoHolds, &state, now);
    let mut rows = rows(&domains, &state, now);
    set_products(&mut rows, &settings);
    judge(&mut rows, &planned, now);
    let rows = filter(rows, args);
    if rows.is_empty() && !(args.domain.is_empty() && args.lineage.is_empty()) {
        eprintln!("certrotd: no domain matches the --domain / --lineage filters");
        return Ok(Exit::Problems);
    }
    let daemon = daemon_pid(&settings.state.dir);
    let all_fine = rows
        .iter()
        .all(|r| matches!(r.condition, Condition::UpToDate | Condition::NotManaged));
    let text = if args.json {
        let report = Report {
            last_pass: state.last_pass.as_ref(),
            daemon_pid: daemon,
            domains: rows,
        };
        let mut json = serde_json::to_string_pretty(&report)?;
        json.push('\n');
        json
    } else {
        format!(
            "{}{}",
            header(state.last_pass.as_ref(), daemon, now),
            render(&rows)
        )
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(if all_fine { Exit::Ok } else { Exit::Problems })
}

#[derive(Serialize)]
struct Report<'a> {
    last_pass: Option<&'a LastPass>,
    /// The PID of the `certrotd run` holding the state lock, if one does.
    daemon_pid: Option<u32>,
    domains: Vec<Row<'a>>,
}

/// The lines above the table: the last pass and the daemon.
fn header(last: Option<&LastPass>, daemon: Option<u32>, now: OffsetDateTime) -> String {
    let pass = match last {
        Some(p) => format!(
            "last pass: {} by {} ({} min ago)",
            timestamp(p.at),
            p.by,
            (now - p.at).whole_minutes().max(0)
        ),
        None => "last pass: none recorded".to_string(),
    };
    let daemon = match daemon {
        Some(pid) => format!("daemon: running (PID {pid})"),
        None => "daemon: not running".to_string(),
    };
    format!("{pass}\n{daemon}\n\n")
}

/// The PID of a live `certrotd run` recorded in the lock file (a hint: the record may be
/// stale, so the process must exist).
fn daemon_pid(dir: &Path) -> Option<u32> {
    let record = state::read_lock_record(dir)?;
    let pid = i32::try_from(record.pid).ok()?;
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    (record.role == Role::Run && alive).then_some(record.pid)
}

/// Refines each managed row's condition with what is on disk (see the module docs).
pub(crate) fn judge(rows: &mut [Row<'_>], planned: &Planned, now: OffsetDateTime) {
    let up: BTreeSet<&str> = planned.plan.up_to_date.iter().map(String::as_str).collect();
    for row in rows.iter_mut().filter(|r| r.managed) {
        row.lineage = planned
            .plan
            .targets
            .get(row.domain)
            .and_then(|&i| planned.valid.get(i))
            .map(|v| v.id.clone());
        if let Some((_, why)) = planned
            .summary
            .uncovered
            .iter()
            .find(|(d, _)| d == row.domain)
        {
            row.condition = Condition::Uncovered;
            row.why = Some(why.clone());
            continue;
        }
        if row.condition != Condition::UpToDate {
            continue;
        }
        if !up.contains(row.domain) {
            row.condition = Condition::Outdated;
            continue;
        }
        let served = planned
            .plan
            .targets
            .get(row.domain)
            .and_then(|&i| planned.valid.get(i));
        if served.is_some_and(|v| expiring(v.cert.not_before, v.cert.not_after, now)) {
            row.condition = Condition::Expiring;
        }
    }
}

/// Less than a third of the lifetime left (certbot's renewal rule).
fn expiring(not_before: OffsetDateTime, not_after: OffsetDateTime, now: OffsetDateTime) -> bool {
    (not_after - now) * 3 < not_after - not_before
}

/// The rows `args`' filters keep (all without filters).
fn filter<'a>(rows: Vec<Row<'a>>, args: &StatusArgs) -> Vec<Row<'a>> {
    let lineage_matches = |id: &str| {
        args.lineage.iter().any(|l| {
            id == l
                || Path::new(id)
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy() == *l)
        })
    };
    rows.into_iter()
        .filter(|r| {
            args.domain.is_empty() || args.domain.iter().any(|d| d.eq_ignore_ascii_case(r.domain))
        })
        .filter(|r| args.lineage.is_empty() || r.lineage.as_deref().is_some_and(lineage_matches))
        .collect()
}

/// One domain's line of the status report.
#[derive(Debug, Serialize)]
pub(crate) struct Row<'a> {
    pub(crate) domain: &'a str,
    /// The product (`cdn`, `dcdn`) the configuration manages it under; `None` when not
    /// managed (added after the first release: readers of `--json` may not expect it).
    pub(crate) product: Option<&'static str>,
    /// In the configuration's managed domains (else: only in the state file).
    pub(crate) managed: bool,
    pub(crate) deployed: Option<&'a Deployment>,
    /// Whole days until the deployed certificate's notAfter.
    pub(crate) days_left: Option<i64>,
    /// The deployed certificate's notAfter has passed.
    pub(crate) expired: bool,
    pub(crate) last_error: Option<&'a LastError>,
    /// Up to date, or why not (managed domains only).
    pub(crate) condition: Condition,
    /// Why, when the condition needs a reason (`uncovered`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) why: Option<String>,
    /// The lineage whose certificate the domain should serve.
    pub(crate) lineage: Option<String>,
}

/// Managed domains first-class, plus any domain the state file still knows.
pub(crate) fn rows<'a>(
    managed: &'a [String],
    state: &'a State,
    now: OffsetDateTime,
) -> Vec<Row<'a>> {
    let managed_set: BTreeSet<&str> = managed.iter().map(String::as_str).collect();
    let all: BTreeSet<&str> = managed_set
        .iter()
        .copied()
        .chain(state.domains.keys().map(String::as_str))
        .collect();
    all.into_iter()
        .map(|domain| {
            let entry: Option<&DomainState> = state.domains.get(domain);
            let deployed = entry.and_then(|e| e.deployed.as_ref());
            let managed = managed_set.contains(domain);
            let last_error = entry.and_then(|e| e.last_error.as_deref());
            Row {
                domain,
                product: managed.then_some(Product::Cdn.label()),
                managed,
                deployed,
                days_left: deployed.map(|d| (d.not_after - now).whole_days()),
                expired: deployed.is_some_and(|d| d.not_after < now),
                last_error,
                condition: recorded_condition(managed, deployed, last_error.is_some()),
                why: None,
                lineage: None,
            }
        })
        .collect()
}

/// Sets each managed row's product from the configuration (`rows` calls every managed
/// domain a CDN domain).
pub(crate) fn set_products(rows: &mut [Row<'_>], settings: &Settings) {
    for row in rows.iter_mut().filter(|r| r.managed) {
        if settings
            .dcdn
            .domains
            .binary_search_by(|d| d.as_str().cmp(row.domain))
            .is_ok()
        {
            row.product = Some(Product::Dcdn.label());
        }
    }
}

/// What the state file alone says of a domain ([`judge`] adds what the disk says).
fn recorded_condition(managed: bool, deployed: Option<&Deployment>, error: bool) -> Condition {
    match deployed {
        _ if !managed => Condition::NotManaged,
        _ if error => Condition::Failed,
        None => Condition::NeverDeployed,
        Some(d) if d.verification != Verification::Verified => Condition::Unverified,
        Some(_) => Condition::UpToDate,
    }
}

/// The table a person reads.
pub(crate) fn render(rows: &[Row<'_>]) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(row_cells).collect();
    table(
        &[
            "DOMAIN",
            "PRODUCT",
            "STATE",
            "CERTIFICATE",
            "FINGERPRINT",
            "VALIDITY",
            "DEPLOYED",
            "VERIFIED",
            "LAST ERROR",
        ],
        &cells,
    )
}

fn row_cells(row: &Row<'_>) -> Vec<String> {
    let mut domain = row.domain.to_string();
    if !row.managed {
        domain.push_str(" (not managed)");
    }
    let error = row
        .last_error
        .map(|e| format!("{} {}: {}", timestamp(e.at), e.kind, e.message))
        .or_else(|| row.why.clone())
        .map_or_else(|| "-".to_string(), |t| one_line(&t));
    let product = row.product.unwrap_or("-").to_string();
    let state = row.condition.label().to_string();
    let Some(d) = row.deployed else {
        let dash = || "-".to_string();
        return vec![
            domain,
            product,
            state,
            "never deployed".into(),
            dash(),
            dash(),
            dash(),
            dash(),
            error,
        ];
    };
    let validity = match row.days_left {
        _ if row.expired => "EXPIRED".to_string(),
        Some(1) => "VALID: 1 day".to_string(),
        Some(n) => format!("VALID: {n} days"),
        None => "-".to_string(),
    };
    let verified = match d.verification {
        Verification::Verified => "yes",
        Verification::Pending => "pending",
        Verification::Failed => "NO",
    };
    vec![
        domain,
        product,
        state,
        d.cert_name.to_string(),
        d.fingerprint.short(),
        validity,
        timestamp(d.deployed_at),
        verified.to_string(),
        error,
    ]
}

/// Longest LAST ERROR cell, in characters (rows stay one line; `--json` has it all).
const MAX_ERROR_CELL: usize = 120;

/// `text` cut to [`MAX_ERROR_CELL`] (the table escapes line breaks, so it stays one line).
fn one_line(text: &str) -> String {
    let line = text;
    match line.char_indices().nth(MAX_ERROR_CELL) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

fn timestamp(t: OffsetDateTime) -> String {
    let (d, tm) = (t.date(), t.time());
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}Z",
        d.year(),
        u8::from(d.month()),
        d.day(),
        tm.hour(),
        tm.minute()
    )
}

#[cfg(test)]
mod tests;
