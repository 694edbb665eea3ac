//! Which notifications a pass of `certrotd run` gives (pure: values in, [`Alert`]s out).
//!
//! Events:
//! - `deployed`: a certificate now recorded for domains that did not have it (with read-back
//!   on: confirmed); one alert per certificate, naming all its domains;
//! - `push-failed`: domains whose push failed, one alert per lineage;
//! - `expiring`: a certificate some managed domain is planned to serve has less than a third
//!   of its lifetime left (certbot's renewal rule); once per certificate per run, so it fires
//!   at the first scan of `run` too;
//! - `invalid`: a lineage is invalid (new, or for another reason than at the last pass). A
//!   torn renewal in progress is held by `torn` and never reaches the invalid list.
//!
//! Invariants: messages are one line ([`one_line`]) of texts redacted when their error was
//! built; an alert names
//! domains from the configuration and lineage ids from the scan only.

use std::collections::{BTreeMap, HashMap, HashSet};

use time::OffsetDateTime;

use crate::cert::Fingerprint;
use crate::reconcile::ValidLineage;
use crate::untrusted;

/// Longest `CERTROTD_MESSAGE`, in characters.
const MAX_MESSAGE: usize = 400;

/// The event kinds, in a fixed order (one notification queue each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Deployed,
    PushFailed,
    Expiring,
    Invalid,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] = [
        Kind::Deployed,
        Kind::PushFailed,
        Kind::Expiring,
        Kind::Invalid,
    ];

    /// `CERTROTD_EVENT`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Deployed => "deployed",
            Kind::PushFailed => "push-failed",
            Kind::Expiring => "expiring",
            Kind::Invalid => "invalid",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// One notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Alert {
    pub(crate) kind: Kind,
    /// Sorted.
    pub(crate) domains: Vec<String>,
    /// The lineage id (empty when none applies).
    pub(crate) lineage: String,
    /// One redacted line.
    pub(crate) message: String,
}

impl Alert {
    /// Two alerts about the same thing (a repeat, coalesced while one waits).
    pub(crate) fn same_subject(&self, other: &Alert) -> bool {
        self.kind == other.kind && self.lineage == other.lineage && self.domains == other.domains
    }
}

/// What one pass saw, for [`Tracker::alerts`].
pub(crate) struct PassFacts<'a> {
    pub(crate) valid: &'a [ValidLineage],
    /// Covered domain → index into `valid` of the certificate it should serve.
    pub(crate) targets: &'a BTreeMap<String, usize>,
    /// Recorded fingerprints before and after the push.
    pub(crate) before: &'a BTreeMap<String, Fingerprint>,
    pub(crate) after: &'a BTreeMap<String, Fingerprint>,
    /// (domain, why) of failed pushes.
    pub(crate) failed: &'a [(String, String)],
    /// (lineage, why) of invalid lineages.
    pub(crate) invalid: &'a [(String, String)],
    pub(crate) now: OffsetDateTime,
}

/// What was told already, across passes.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    expiring: HashSet<Fingerprint>,
    invalid: HashMap<String, String>,
}

/// `text` as one line: whitespace runs become one space, control characters are escaped,
/// at most [`MAX_MESSAGE`] characters. The texts are error messages, redacted when the
/// error was built (ARCHITECTURE.md, "Invariants"); redacting again would mask their
/// RequestIds.
pub(crate) fn one_line(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    untrusted::truncate_chars(&untrusted::escape(&collapsed), MAX_MESSAGE)
}

impl Tracker {
    /// The alerts of one pass (see the module docs).
    pub(crate) fn alerts(&mut self, f: &PassFacts<'_>) -> Vec<Alert> {
        let mut out = deployed(f);
        out.extend(push_failed(f));
        out.extend(self.expiring(f));
        out.extend(self.invalid(f));
        out
    }

    fn expiring(&mut self, f: &PassFacts<'_>) -> Vec<Alert> {
        let mut out = Vec::new();
        for (i, v) in f.valid.iter().enumerate() {
            let c = &v.cert;
            let left = c.not_after - f.now;
            if left * 3 >= c.not_after - c.not_before || self.expiring.contains(&c.fingerprint) {
                continue;
            }
            let domains = domains_of(f.targets, i);
            if domains.is_empty() {
                continue;
            }
            self.expiring.insert(c.fingerprint);
            out.push(Alert {
                kind: Kind::Expiring,
                domains,
                lineage: v.id.clone(),
                message: one_line(&format!(
                    "the certificate expires in {} day(s) ({}) and has not been renewed: check the ACME client",
                    left.whole_days(),
                    c.not_after.date()
                )),
            });
        }
        out
    }

    fn invalid(&mut self, f: &PassFacts<'_>) -> Vec<Alert> {
        let now: HashMap<String, String> = f.invalid.iter().cloned().collect();
        let out = f
            .invalid
            .iter()
            .filter(|(id, why)| self.invalid.get(id) != Some(why))
            .map(|(id, why)| Alert {
                kind: Kind::Invalid,
                domains: Vec::new(),
                lineage: id.clone(),
                message: one_line(why),
            })
            .collect();
        self.invalid = now;
        out
    }
}

/// Managed domains whose target is `valid[i]`, sorted.
fn domains_of(targets: &BTreeMap<String, usize>, i: usize) -> Vec<String> {
    targets
        .iter()
        .filter(|(_, t)| **t == i)
        .map(|(d, _)| d.clone())
        .collect()
}

fn deployed(f: &PassFacts<'_>) -> Vec<Alert> {
    let mut by_cert: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (domain, &i) in f.targets {
        let Some(v) = f.valid.get(i) else { continue };
        let now = f.after.get(domain);
        if now == Some(&v.cert.fingerprint) && f.before.get(domain) != now {
            by_cert.entry(i).or_default().push(domain.clone());
        }
    }
    by_cert
        .into_iter()
        .map(|(i, domains)| {
            let v = &f.valid[i];
            Alert {
                kind: Kind::Deployed,
                message: one_line(&format!(
                    "deployed the certificate valid until {} to {} domain(s)",
                    v.cert.not_after.date(),
                    domains.len()
                )),
                domains,
                lineage: v.id.clone(),
            }
        })
        .collect()
}

fn push_failed(f: &PassFacts<'_>) -> Vec<Alert> {
    let mut by_lineage: BTreeMap<String, (Vec<String>, &str)> = BTreeMap::new();
    for (domain, why) in f.failed {
        let lineage = f
            .targets
            .get(domain)
            .and_then(|&i| f.valid.get(i))
            .map_or(String::new(), |v| v.id.clone());
        let entry = by_lineage.entry(lineage).or_insert((Vec::new(), why));
        entry.0.push(domain.clone());
    }
    by_lineage
        .into_iter()
        .map(|(lineage, (mut domains, why))| {
            domains.sort();
            Alert {
                kind: Kind::PushFailed,
                message: one_line(why),
                domains,
                lineage,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
