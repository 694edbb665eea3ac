//! Coverage: which certificate names serve which CDN domain, and the best lineage for one.
//!
//! Rules: names compare case-insensitively (ASCII); a SAN equal to the domain is an exact
//! match; a `*.example.com` SAN covers exactly one extra left-most label (`a.example.com`,
//! not `example.com`, not `a.b.example.com`, not `*.example.com`) and Alibaba's wildcard CDN
//! domain `.example.com`.
//!
//! The best lineage for a domain: exact beats wildcard, then the later notAfter, then the
//! lexically first id (then, for equal ids, the later candidate). [`CoverIndex`] answers
//! that in O(length of the domain) after one O(total names) build, so a pass over D domains
//! and L lineages of N names each costs O(D + L·N), not O(D·L·N); [`DomainSet`] answers the
//! reverse question ("does this certificate cover any managed domain?") the same way. The
//! linear [`best_for`] is kept, in tests only, as the reference both are checked against.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

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

/// `example.com` for the SAN `*.example.com`; `None` for a name that is no wildcard.
/// (The index's own reading of the rules above; [`name_covers`] is the reference.)
fn wildcard_base(name: &str) -> Option<&str> {
    name.strip_prefix("*.").filter(|b| !b.is_empty())
}

/// The base a wildcard SAN must have to cover `domain`: `example.com` for `a.example.com`
/// and for Alibaba's wildcard domain `.example.com` (which is `*.example.com` itself);
/// `None` when no wildcard can cover it (one label, empty or `*` left-most label).
fn wildcard_key(domain: &str) -> Option<&str> {
    if let Some(alibaba) = domain.strip_prefix('.') {
        return Some(alibaba);
    }
    let (label, parent) = domain.split_once('.')?;
    (!label.is_empty() && label != "*").then_some(parent)
}

/// Index of the best candidate covering `domain`: exact beats wildcard, then the later
/// notAfter, then the lexically first id. `None` when nothing covers it. Linear in the
/// candidates: the reference [`CoverIndex`] is tested against.
#[cfg(test)]
pub(crate) fn best_for(domain: &str, candidates: &[Candidate<'_>]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter_map(|(i, c)| covers(c.names, domain).map(|m| (i, c, m)))
        .max_by_key(|(_, c, m)| rank(c, *m))
        .map(|(i, _, _)| i)
}

#[cfg(test)]
fn rank<'a>(c: &Candidate<'a>, m: Match) -> (Match, time::OffsetDateTime, Reverse<&'a str>) {
    (m, c.not_after, Reverse(c.id))
}

/// `s` in ASCII lower case, borrowed when it already is.
fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// The best candidate per exact name and per wildcard base, built once per pass.
///
/// A candidate covers a domain exactly through its name equal to the domain, and by
/// wildcard through its `*.base` name with `base` equal to the domain's [`wildcard_key`].
/// Every candidate covering exactly outranks every one covering only by wildcard, so the
/// best is the best of the exact entry if there is one, else of the wildcard entry; each
/// entry keeps its best by (notAfter, lexically first id, later index) — the order
/// [`best_for`]'s `max_by_key` gives.
pub struct CoverIndex<'a> {
    candidates: &'a [Candidate<'a>],
    exact: HashMap<Cow<'a, str>, usize>,
    wildcard: HashMap<Cow<'a, str>, usize>,
}

impl<'a> CoverIndex<'a> {
    /// Indexes every name of every candidate: O(total names).
    pub fn new(candidates: &'a [Candidate<'a>]) -> CoverIndex<'a> {
        let names = candidates.iter().map(|c| c.names.len()).sum();
        let mut index = CoverIndex {
            candidates,
            exact: HashMap::with_capacity(names),
            wildcard: HashMap::new(),
        };
        for (i, c) in candidates.iter().enumerate() {
            for name in c.names {
                index.offer_exact(lower(name), i);
                if let Some(base) = wildcard_base(name) {
                    index.offer_wildcard(lower(base), i);
                }
            }
        }
        index
    }

    fn offer_exact(&mut self, key: Cow<'a, str>, i: usize) {
        let candidates = self.candidates;
        keep_best(self.exact.entry(key).or_insert(i), i, candidates);
    }

    fn offer_wildcard(&mut self, key: Cow<'a, str>, i: usize) {
        let candidates = self.candidates;
        keep_best(self.wildcard.entry(key).or_insert(i), i, candidates);
    }

    /// The best candidate covering `domain` (an index into the candidates) and how it
    /// covers it; `None` when nothing does. Same answer as [`best_for`] and [`covers`].
    pub fn best(&self, domain: &str) -> Option<(usize, Match)> {
        if domain.is_empty() {
            return None;
        }
        if let Some(&i) = self.exact.get(lower(domain).as_ref()) {
            return Some((i, Match::Exact));
        }
        let key = wildcard_key(domain)?;
        self.wildcard
            .get(lower(key).as_ref())
            .map(|&i| (i, Match::Wildcard))
    }
}

/// Replaces `*slot` by `i` when candidate `i` ranks higher (same kind of match).
fn keep_best(slot: &mut usize, i: usize, candidates: &[Candidate<'_>]) {
    let key = |j: usize| {
        let c = &candidates[j];
        (c.not_after, Reverse(c.id), j)
    };
    if key(i) > key(*slot) {
        *slot = i;
    }
}

/// A set of managed domains that answers "does a certificate with these names cover any of
/// them?" in O(names).
pub(crate) struct DomainSet<'a> {
    exact: HashSet<Cow<'a, str>>,
    wildcard_keys: HashSet<Cow<'a, str>>,
}

impl<'a> DomainSet<'a> {
    pub(crate) fn new<I>(domains: I) -> DomainSet<'a>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut set = DomainSet {
            exact: HashSet::new(),
            wildcard_keys: HashSet::new(),
        };
        for d in domains.into_iter().filter(|d| !d.is_empty()) {
            if let Some(key) = wildcard_key(d) {
                set.wildcard_keys.insert(lower(key));
            }
            set.exact.insert(lower(d));
        }
        set
    }

    /// True when some domain of the set is covered by a certificate with `names`
    /// (`covers(names, d).is_some()` for some `d`).
    pub(crate) fn any_covered_by(&self, names: &[String]) -> bool {
        names.iter().any(|name| {
            self.exact.contains(lower(name).as_ref())
                || wildcard_base(name)
                    .is_some_and(|b| self.wildcard_keys.contains(lower(b).as_ref()))
        })
    }
}

/// Every item (a lineage's names) covering a domain, not only the best: which lineages,
/// invalid ones included, would serve a domain left uncovered. O(total names) to build,
/// O(length of the domain + items found) per question; the answer is the items `i` with
/// `covers(names_i, domain).is_some()`, in index order.
pub(crate) struct CoverAll<'a> {
    exact: HashMap<Cow<'a, str>, Vec<usize>>,
    wildcard: HashMap<Cow<'a, str>, Vec<usize>>,
}

impl<'a> CoverAll<'a> {
    pub(crate) fn new<I>(items: I) -> CoverAll<'a>
    where
        I: IntoIterator<Item = &'a [String]>,
    {
        let mut index = CoverAll {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        };
        for (i, names) in items.into_iter().enumerate() {
            for name in names {
                push_once(index.exact.entry(lower(name)).or_default(), i);
                if let Some(base) = wildcard_base(name) {
                    push_once(index.wildcard.entry(lower(base)).or_default(), i);
                }
            }
        }
        index
    }

    /// The items covering `domain`, in index order, each once.
    pub(crate) fn covering(&self, domain: &str) -> Vec<usize> {
        if domain.is_empty() {
            return Vec::new();
        }
        let mut found: Vec<usize> = self
            .exact
            .get(lower(domain).as_ref())
            .into_iter()
            .flatten()
            .copied()
            .collect();
        if let Some(key) = wildcard_key(domain)
            && let Some(more) = self.wildcard.get(lower(key).as_ref())
        {
            found.extend(more);
            found.sort_unstable();
            found.dedup();
        }
        found
    }
}

/// Items are offered in index order: a repeat can only be the last one.
fn push_once(list: &mut Vec<usize>, i: usize) {
    if list.last() != Some(&i) {
        list.push(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::OffsetDateTime;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2030-01-01 0:00 UTC);

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn candidates<'a>(ls: &'a [(String, Vec<String>, i64)]) -> Vec<Candidate<'a>> {
        ls.iter()
            .map(|(id, names, days)| Candidate {
                id,
                names,
                not_after: T0 + time::Duration::days(*days),
            })
            .collect()
    }

    fn reference(domain: &str, cands: &[Candidate<'_>]) -> Option<(usize, Match)> {
        best_for(domain, cands).map(|i| (i, covers(cands[i].names, domain).unwrap()))
    }

    #[test]
    fn index_follows_the_documented_cases() {
        let ls = vec![
            ("/a".to_string(), strings(&["*.Example.com"]), 90),
            ("/b".to_string(), strings(&["www.example.com"]), 10),
            (
                "/c".to_string(),
                strings(&["*.example.com", "EXAMPLE.com"]),
                90,
            ),
            ("/d".to_string(), strings(&["*."]), 90),
        ];
        let c = candidates(&ls);
        let idx = CoverIndex::new(&c);
        // Exact beats a longer-lived wildcard; case does not matter.
        assert_eq!(idx.best("WWW.example.com"), Some((1, Match::Exact)));
        // Equal wildcard rank and notAfter: the lexically first id.
        assert_eq!(idx.best("cdn.example.com"), Some((0, Match::Wildcard)));
        assert_eq!(idx.best(".example.com"), Some((0, Match::Wildcard)));
        assert_eq!(idx.best("example.com"), Some((2, Match::Exact)));
        for none in [
            "a.b.example.com",
            "*.example.org",
            ".b.example.com",
            "",
            ".",
            "a.",
            "com",
        ] {
            assert_eq!(idx.best(none), reference(none, &c), "{none:?}");
        }
        assert_eq!(idx.best("a.b.example.com"), None);
        assert_eq!(idx.best(""), None);
        // A `*` left-most label is no host a wildcard covers, but the same name exactly.
        assert_eq!(idx.best("*.example.com"), Some((0, Match::Exact)));
    }

    #[test]
    fn equal_ids_pick_the_later_candidate_like_the_reference() {
        let ls = vec![
            ("/same".to_string(), strings(&["a.example.com"]), 5),
            ("/same".to_string(), strings(&["a.example.com"]), 5),
            ("/other".to_string(), strings(&["a.example.com"]), 4),
        ];
        let c = candidates(&ls);
        assert_eq!(
            CoverIndex::new(&c).best("a.example.com"),
            Some((1, Match::Exact))
        );
        assert_eq!(reference("a.example.com", &c), Some((1, Match::Exact)));
    }

    #[test]
    fn domain_set_answers_like_covers() {
        let set = DomainSet::new(["www.example.com", ".example.org", "", "Mixed.Example.NET"]);
        assert!(set.any_covered_by(&strings(&["WWW.example.com"])));
        assert!(set.any_covered_by(&strings(&["*.example.com"])));
        assert!(set.any_covered_by(&strings(&["*.example.org"])));
        assert!(set.any_covered_by(&strings(&["*.EXAMPLE.net"])));
        assert!(!set.any_covered_by(&strings(&["example.com", "example.org", "*.com"])));
        assert!(!set.any_covered_by(&strings(&[""])));
        assert!(!set.any_covered_by(&[]));
    }

    /// Labels from a small alphabet so that random names collide often; `*` and upper case
    /// included to reach the edge cases.
    fn label() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("B".to_string()),
            Just("*".to_string()),
            Just(String::new()),
            Just("example".to_string()),
        ]
    }

    fn host() -> impl Strategy<Value = String> {
        prop::collection::vec(label(), 1..4).prop_map(|ls| ls.join("."))
    }

    /// A name or a domain: a host, a wildcard `*.host`, or Alibaba's `.host`.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            host(),
            host().prop_map(|h| format!("*.{h}")),
            host().prop_map(|h| format!(".{h}")),
        ]
    }

    fn lineages() -> impl Strategy<Value = Vec<(String, Vec<String>, i64)>> {
        // Few ids and expiries: ties on both are common.
        prop::collection::vec((0u8..4, prop::collection::vec(name(), 0..5), 0i64..3), 0..8)
            .prop_map(|ls| {
                ls.into_iter()
                    .map(|(id, names, days)| (format!("/l/{id}"), names, days))
                    .collect()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn index_picks_what_the_linear_reference_picks(
            ls in lineages(),
            domains in prop::collection::vec(name(), 1..12),
        ) {
            let c = candidates(&ls);
            let idx = CoverIndex::new(&c);
            for d in &domains {
                prop_assert_eq!(idx.best(d), reference(d, &c), "domain {:?}", d);
            }
            // Names of the lineages themselves as domains: every exact hit is exercised.
            for (_, names, _) in &ls {
                for d in names {
                    prop_assert_eq!(idx.best(d), reference(d, &c), "domain {:?}", d);
                }
            }
            let all = CoverAll::new(ls.iter().map(|(_, names, _)| names.as_slice()));
            for d in domains.iter().chain(ls.iter().flat_map(|(_, n, _)| n)) {
                let linear: Vec<usize> = ls
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, names, _))| covers(names, d).is_some())
                    .map(|(i, _)| i)
                    .collect();
                prop_assert_eq!(all.covering(d), linear, "domain {:?}", d);
            }
            let set = DomainSet::new(domains.iter().map(String::as_str));
            for (_, names, _) in &ls {
                let linear = domains.iter().any(|d| covers(names, d).is_some());
                prop_assert_eq!(set.any_covered_by(names), linear, "names {:?}", names);
            }
        }
    }
}
