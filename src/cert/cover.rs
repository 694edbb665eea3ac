//! Coverage: which certificate names serve which CDN domain, and the best lineage for one.
//!
//! Rules: names compare case-insensitively; a SAN equal to the domain is an exact match; a
//! `*.example.com` SAN covers exactly one extra left-most label (`a.example.com`, not
//! `example.com`, not `a.b.example.com`) and Alibaba's wildcard CDN domain `.example.com`.

use std::cmp::Reverse;

use super::{Candidate, Match};

/// Does a certificate with these DNS names cover the managed CDN `domain`?
pub fn covers(names: &[String], domain: &str) -> Option<Match> {
    names
        .iter()
        .filter_map(|name| name_covers(name, domain))
        .max()
}

fn name_covers(name: &str, domain: &str) -> Option<Match> {
    if domain.is_empty() {
        return None;
    }
    if name.eq_ignore_ascii_case(domain) {
        return Some(Match::Exact);
    }
    let base = name.strip_prefix("*.").filter(|b| !b.is_empty())?;
    let rest = match domain.strip_prefix('.') {
        // Alibaba's wildcard domain `.example.com` is `*.example.com` itself.
        Some(alibaba) => {
            return alibaba
                .eq_ignore_ascii_case(base)
                .then_some(Match::Wildcard);
        }
        None => domain,
    };
    let (label, parent) = rest.split_once('.')?;
    (!label.is_empty() && label != "*" && parent.eq_ignore_ascii_case(base))
        .then_some(Match::Wildcard)
}

/// Index of the best candidate covering `domain`: exact beats wildcard, then the later
/// notAfter, then the lexically first id. `None` when nothing covers it.
pub fn best_for(domain: &str, candidates: &[Candidate<'_>]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter_map(|(i, c)| covers(c.names, domain).map(|m| (i, c, m)))
        .max_by_key(|(_, c, m)| rank(c, *m))
        .map(|(i, _, _)| i)
}

fn rank<'a>(c: &Candidate<'a>, m: Match) -> (Match, time::OffsetDateTime, Reverse<&'a str>) {
    (m, c.not_after, Reverse(c.id))
}
