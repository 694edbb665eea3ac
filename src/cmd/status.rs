//! `certrotd status [--json]`: what the state file says each domain serves. No network, no
//! lock (it works while the daemon runs). Exit 0; 78 for a bad configuration; 1 when the
//! state file cannot be read.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use serde::Serialize;
use time::OffsetDateTime;

use super::sync::load_settings;
use super::text::table;
use super::{CmdResult, Exit};
use crate::config::{Product, Settings};
use crate::state::{self, Deployment, DomainState, LastError, State, Verification};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct StatusArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub(crate) json: bool,
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
    let domains = settings.all_domains();
    let mut rows = rows(&domains, &state, now);
    set_products(&mut rows, &settings);
    let text = if args.json {
        let mut json = serde_json::to_string_pretty(&Report { domains: rows })?;
        json.push('\n');
        json
    } else {
        render(&rows)
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(Exit::Ok)
}

#[derive(Serialize)]
struct Report<'a> {
    domains: Vec<Row<'a>>,
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
            Row {
                domain,
                product: managed.then_some(Product::Cdn.label()),
                managed,
                deployed,
                days_left: deployed.map(|d| (d.not_after - now).whole_days()),
                expired: deployed.is_some_and(|d| d.not_after < now),
                last_error: entry.and_then(|e| e.last_error.as_ref()),
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

/// The table a person reads.
pub(crate) fn render(rows: &[Row<'_>]) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(row_cells).collect();
    table(
        &[
            "DOMAIN",
            "PRODUCT",
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
        .unwrap_or_else(|| "-".to_string());
    let product = row.product.unwrap_or("-").to_string();
    let Some(d) = row.deployed else {
        let dash = || "-".to_string();
        return vec![
            domain,
            product,
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
        d.cert_name.clone(),
        d.fingerprint.short(),
        validity,
        timestamp(d.deployed_at),
        verified.to_string(),
        error,
    ]
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
