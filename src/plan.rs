//! The planner (pure): what must be pushed where, with the fewest calls.
//!
//! Owns: choosing each managed domain's target certificate (via a [`cert::CoverIndex`] built
//! once per plan, so planning costs O(domains + names)), comparing it with the deployed
//! state, grouping the out-of-date
//! domains into `BatchSetCdnDomainServerCertificate` calls, and the certificate's
//! `CertName` ([`cert_name`]).
//!
//! No I/O and no clock: `now` is a parameter. Invariants of every [`Plan`]:
//! - each managed domain is in exactly one of: a batch, `uncovered`, `up_to_date`;
//! - batches of one certificate hold its domains sorted and cut into chunks of at most
//!   `batch` domains, so the number of calls is the floor Σ ⌈domains per certificate / batch⌉;
//! - batches are ordered by (lineage id, first domain); the same inputs (in any order) give
//!   the same plan.
//!
//! A lineage only counts if `now` is within its [notBefore, notAfter] (the caller passes
//! valid lineages; this is the planner's own guard against pushing an expired one when a
//! pass is planned later than the scan).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use time::OffsetDateTime;

use crate::cert::{self, Candidate, Fingerprint};

/// Hex characters of the fingerprint in a [`cert_name`] (64 bits: two different
/// certificates with the same readable part collide with probability 2⁻⁶⁴).
pub(crate) const NAME_FINGERPRINT_HEX: usize = 16;
/// Alibaba's limit on `CertName`.
pub(crate) const CERT_NAME_MAX: usize = 128;
// The fingerprint part must be long enough to tell certificates apart (≥ 12 hex) and fit.
const _: () = assert!(NAME_FINGERPRINT_HEX >= 12 && NAME_FINGERPRINT_HEX <= 64);

/// The planner's light view of one valid lineage (no key material).
#[derive(Clone, Copy, Debug)]
pub struct PlanLineage<'a> {
    /// The lineage's path; unique per lineage (ties in the best-lineage rule and batch order
    /// are broken by it).
    pub id: &'a str,
    pub fingerprint: Fingerprint,
    /// DNS names of the leaf, lowercased, in certificate order.
    pub names: &'a [String],
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// Everything the planner looks at.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    /// Managed CDN domains, normalised (lowercase; `.example.com` is Alibaba's wildcard
    /// domain). Order and duplicates do not matter.
    pub domains: &'a [String],
    /// The valid lineages. [`Batch::lineage`] indexes into this slice.
    pub lineages: &'a [PlanLineage<'a>],
    /// What each domain serves, as far as the state knows
    /// (see `state::State::deployed_fingerprints`).
    pub deployed: &'a BTreeMap<String, Fingerprint>,
    pub now: OffsetDateTime,
    /// Most domains per call; 0 is treated as 1.
    pub batch: usize,
    /// Treat every covered domain as out of date (`sync --force`).
    pub force: bool,
}

/// One `BatchSetCdnDomainServerCertificate` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Index into [`PlanInput::lineages`]: the certificate to send.
    pub(crate) lineage: usize,
    /// The `CertName` to send ([`cert_name`] of that certificate).
    pub(crate) cert_name: String,
    /// Sorted, 1..=batch domains.
    pub(crate) domains: Vec<String>,
}

/// The difference between desired and deployed state, as calls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The calls to make, ordered by (lineage id, first domain).
    pub(crate) batches: Vec<Batch>,
    /// Managed domains no lineage (valid at `now`) covers; sorted.
    pub uncovered: Vec<String>,
    /// Covered domains already serving their target certificate; sorted. Empty with `force`.
    pub(crate) up_to_date: Vec<String>,
    /// Every covered domain → index of its target lineage (also the up-to-date ones).
    pub targets: BTreeMap<String, usize>,
}

/// Per certificate: what a dry run shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CertSummary {
    pub(crate) lineage: usize,
    pub(crate) cert_name: String,
    /// Sorted domains to push this certificate to.
    pub(crate) domains: Vec<String>,
    /// Calls needed for them.
    pub(crate) calls: usize,
}

/// Computes the plan. Pure and deterministic.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let batch = input.batch.max(1);
    let domains: BTreeSet<&str> = input.domains.iter().map(String::as_str).collect();
    let (candidates, index): (Vec<Candidate<'_>>, Vec<usize>) = input
        .lineages
        .iter()
        .enumerate()
        .filter(|(_, l)| l.not_before <= input.now && input.now <= l.not_after)
        .map(|(i, l)| (candidate(l), i))
        .unzip();

    let cover = cert::CoverIndex::new(&candidates);

    let mut out = Plan::default();
    // Grouped per target lineage, which is per certificate: copies of one leaf in several
    // lineages have the same names and notAfter, so the index always picks the first id.
    // Key: (lineage id, lineage index) so equal ids (a caller bug) still order stably.
    let mut todo: BTreeMap<(&str, usize), Vec<String>> = BTreeMap::new();
    for domain in domains {
        let Some((best, _)) = cover.best(domain) else {
            out.uncovered.push(domain.to_string());
            continue;
        };
        // `best` is an index into `candidates`, which `index` parallels.
        let lineage = index[best];
        let target = &input.lineages[lineage];
        out.targets.insert(domain.to_string(), lineage);
        let current = input.deployed.get(domain);
        if !input.force && current == Some(&target.fingerprint) {
            out.up_to_date.push(domain.to_string());
        } else {
            todo.entry((target.id, lineage))
                .or_default()
                .push(domain.to_string());
        }
    }
    for ((_, lineage), domains) in todo {
        let name = lineage_cert_name(&input.lineages[lineage]);
        for chunk in domains.chunks(batch) {
            out.batches.push(Batch {
                lineage,
                cert_name: name.clone(),
                domains: chunk.to_vec(),
            });
        }
    }
    out
}

fn candidate<'a>(l: &PlanLineage<'a>) -> Candidate<'a> {
    Candidate {
        id: l.id,
        names: l.names,
        not_after: l.not_after,
    }
}

fn lineage_cert_name(l: &PlanLineage<'_>) -> String {
    cert_name(l.names, l.not_after, &l.fingerprint)
}

impl Plan {
    /// Cuts every batch again by where its domains go: `route(domain)` gives a group (e.g.
    /// the executor target) and the most domains one call of that group carries. A batch
    /// whose domains all share a group and fit stays as it is; otherwise it becomes one run
    /// of batches per group (in order of first appearance), each cut to the group's size.
    pub(crate) fn rebatch(&mut self, route: impl Fn(&str) -> (usize, usize)) {
        let mut out = Vec::with_capacity(self.batches.len());
        for b in std::mem::take(&mut self.batches) {
            let mut groups: Vec<(usize, usize, Vec<String>)> = Vec::new();
            for d in b.domains {
                let (group, size) = route(&d);
                match groups.iter_mut().find(|(g, _, _)| *g == group) {
                    Some((_, _, list)) => list.push(d),
                    None => groups.push((group, size.max(1), vec![d])),
                }
            }
            for (_, size, domains) in groups {
                for chunk in domains.chunks(size) {
                    out.push(Batch {
                        lineage: b.lineage,
                        cert_name: b.cert_name.clone(),
                        domains: chunk.to_vec(),
                    });
                }
            }
        }
        self.batches = out;
    }

    /// Number of write calls the plan makes.
    pub fn calls(&self) -> usize {
        self.batches.len()
    }

    /// Number of domains to push.
    pub(crate) fn pending(&self) -> usize {
        self.batches.iter().map(|b| b.domains.len()).sum()
    }

    /// The batches grouped per certificate, in batch order.
    pub(crate) fn by_certificate(&self) -> Vec<CertSummary> {
        let mut out: Vec<CertSummary> = Vec::new();
        for b in &self.batches {
            match out.last_mut() {
                Some(last) if last.lineage == b.lineage => {
                    last.domains.extend(b.domains.iter().cloned());
                    last.calls += 1;
                }
                _ => out.push(CertSummary {
                    lineage: b.lineage,
                    cert_name: b.cert_name.clone(),
                    domains: b.domains.clone(),
                    calls: 1,
                }),
            }
        }
        out
    }

    /// A person-readable description of the plan (for `sync --dry-run`): per certificate
    /// its lineage, name, domains and the calls it needs, then the uncovered and up-to-date
    /// domains. `lineages` must be the slice the plan was made from.
    pub(crate) fn describe(&self, lineages: &[PlanLineage<'_>]) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "plan: {} call(s) for {} domain(s); {} up to date; {} without a valid certificate",
            self.calls(),
            self.pending(),
            self.up_to_date.len(),
            self.uncovered.len()
        );
        for c in self.by_certificate() {
            let path = lineages.get(c.lineage).map_or("?", |l| l.id);
            let _ = writeln!(
                s,
                "  {} ({path}): {} domain(s) in {} call(s)",
                c.cert_name,
                c.domains.len(),
                c.calls
            );
            wrap_list(&mut s, "    ", &c.domains);
        }
        if !self.uncovered.is_empty() {
            let _ = writeln!(s, "  no valid certificate covers:");
            wrap_list(&mut s, "    ", &self.uncovered);
        }
        if !self.up_to_date.is_empty() {
            let _ = writeln!(s, "  up to date:");
            wrap_list(&mut s, "    ", &self.up_to_date);
        }
        s
    }
}

/// Appends `items` comma-separated, wrapped near 100 columns, each line indented.
fn wrap_list(s: &mut String, indent: &str, items: &[String]) {
    let mut line = String::new();
    for (i, item) in items.iter().enumerate() {
        let sep = if i + 1 < items.len() { "," } else { "" };
        if !line.is_empty() && indent.len() + line.len() + item.len() + 2 > 100 {
            let _ = writeln!(s, "{indent}{}", line.trim_end());
            line.clear();
        }
        line.push_str(item);
        line.push_str(sep);
        line.push(' ');
    }
    if !line.is_empty() {
        let _ = writeln!(s, "{indent}{}", line.trim_end());
    }
}

/// The `CertName` of a certificate, derived from it alone:
/// `<first SAN, '*' → "wildcard">-<notAfter as YYYYMMDD, UTC>-<16 hex of the fingerprint>`,
/// e.g. `wildcard.example.com-20270227-3f9a1c2b7d10e4f5`.
///
/// At most [`CERT_NAME_MAX`] characters of `A-Za-z0-9._-`: other characters of the
/// readable part become `_`, and only the readable part is shortened, never the date or the
/// fingerprint. The same certificate always gets the same name; different certificates
/// differ in the fingerprint part.
pub(crate) fn cert_name(names: &[String], not_after: OffsetDateTime, fp: &Fingerprint) -> String {
    let utc = not_after.to_offset(time::UtcOffset::UTC);
    let date = format!(
        "{:04}{:02}{:02}",
        utc.year(),
        u8::from(utc.month()),
        utc.day()
    );
    let hex = fp.hex();
    // `hex` is always 64 ASCII characters (32 bytes), so this slice is in bounds.
    let suffix = format!("-{date}-{}", &hex[..NAME_FINGERPRINT_HEX]);
    let suffix = sanitize(&suffix);
    let first = names.first().map_or("cert", String::as_str);
    let readable = sanitize(&first.replace('*', "wildcard"));
    let budget = CERT_NAME_MAX.saturating_sub(suffix.len());
    // `readable` is ASCII after `sanitize`, so byte truncation is char truncation.
    let mut readable: String = readable.chars().take(budget).collect();
    if readable.is_empty() {
        readable.push_str("cert");
    }
    format!("{readable}{suffix}")
}

/// Keeps `A-Za-z0-9._-`; anything else becomes `_`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
