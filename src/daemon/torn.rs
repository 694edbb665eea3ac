//! Torn renewals: telling "a renewal is being written" from "this lineage is broken". Pure.
//!
//! An ACME client renews a lineage file by file (certbot swaps four symlinks one by one,
//! acme.sh writes the certificate seconds before the key), so a pass can see a lineage whose
//! files disagree. When a lineage that *was* valid turns invalid for such a reason, it is a
//! renewal in progress: the caller keeps using the last valid certificate of that lineage,
//! looks again after another quiet period, and warns only when it stays torn for
//! [`WARN_AFTER`] quiet periods (one observation = one quiet period). A lineage never seen
//! valid gets no such grace: its problem is reported at once.
//!
//! Which invalid reasons count as "torn" (key mismatch, a link or file missing, …) is the
//! caller's predicate: see [`Observed::of`]; [`renewal_in_progress`] is the one for
//! `source` errors.
//!
//! Owns: the last valid value of each lineage and its torn streak. Invariant: a held value
//! is always the one from the lineage's last `Valid` observation; an `Invalid` observation
//! drops it. The caller still checks a held certificate's validity window.

use std::collections::HashMap;
use std::hash::Hash;

use crate::cert::Invalid;
use crate::source::SourceError;

/// Quiet periods a lineage may stay torn before a warning is due.
pub(crate) const WARN_AFTER: u32 = 10;

/// What a pass saw for one lineage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Observed<V> {
    /// The lineage is valid; `V` is what to keep (e.g. the `cert::Certificate`).
    Valid(V),
    /// Invalid because its files disagree (a renewal may be in progress).
    Torn,
    /// Invalid for another reason (expired, unparseable, …).
    Invalid,
}

impl<V: Clone> Observed<V> {
    /// Classifies a validation result: `Ok` is valid, an error for which `is_torn` holds is
    /// torn, any other error is invalid.
    pub(crate) fn of<E>(result: &Result<V, E>, is_torn: impl FnOnce(&E) -> bool) -> Observed<V> {
        match result {
            Ok(v) => Observed::Valid(v.clone()),
            Err(e) if is_torn(e) => Observed::Torn,
            Err(_) => Observed::Invalid,
        }
    }
}

/// The default "torn" predicate for a lineage's [`SourceError`]: the problems an ACME client
/// causes for a moment while it writes a renewal file by file: a link or file missing
/// (certbot swaps its four `live/` links one by one), the key not matching the certificate
/// (one file renewed, not yet the other), and a file caught half-written by an in-place
/// rewrite (acme.sh, lego: empty, truncated, not yet PEM).
pub(crate) fn renewal_in_progress(error: &SourceError) -> bool {
    match error {
        SourceError::MissingKey { .. }
        | SourceError::MissingCertificate { .. }
        | SourceError::Dangling { .. } => true,
        SourceError::Invalid { reason, .. } => matches!(
            reason,
            Invalid::KeyMismatch
                | Invalid::Empty { .. }
                | Invalid::TruncatedPem { .. }
                | Invalid::NotPem { .. }
                | Invalid::MalformedPem { .. }
                | Invalid::NoCertificate { .. }
                | Invalid::NoPrivateKey { .. }
        ),
        _ => false,
    }
}

/// What the caller does with one observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Use the observation as it is: a valid lineage serves, an invalid one is reported.
    Accept,
    /// A renewal in progress: keep serving [`TornTracker::last_valid`], report nothing, and
    /// look again after a quiet period. `periods` counts the torn observations so far.
    Hold { periods: u32 },
    /// Torn for [`WARN_AFTER`] quiet periods: warn now (once per streak), keep holding.
    Warn { periods: u32 },
}

#[derive(Clone, Debug)]
struct Entry<V> {
    last_valid: V,
    torn_periods: u32,
}

/// Per-lineage memory of the last valid value and the current torn streak.
#[derive(Clone, Debug)]
pub(crate) struct TornTracker<K, V> {
    entries: HashMap<K, Entry<V>>,
    warn_after: u32,
}

impl<K: Eq + Hash + Clone, V> Default for TornTracker<K, V> {
    fn default() -> Self {
        TornTracker::new()
    }
}

impl<K: Eq + Hash + Clone, V> TornTracker<K, V> {
    /// A tracker that warns after [`WARN_AFTER`] torn quiet periods.
    pub(crate) fn new() -> Self {
        TornTracker::with_warn_after(WARN_AFTER)
    }

    /// A tracker that warns after `warn_after` (at least 1) torn quiet periods.
    pub(crate) fn with_warn_after(warn_after: u32) -> Self {
        TornTracker {
            entries: HashMap::new(),
            warn_after: warn_after.max(1),
        }
    }

    /// Records what this pass saw for `lineage` and says what to do with it.
    pub(crate) fn observe(&mut self, lineage: &K, seen: Observed<V>) -> Decision {
        match seen {
            Observed::Valid(v) => {
                self.entries.insert(
                    lineage.clone(),
                    Entry {
                        last_valid: v,
                        torn_periods: 0,
                    },
                );
                Decision::Accept
            }
            Observed::Invalid => {
                self.entries.remove(lineage);
                Decision::Accept
            }
            Observed::Torn => match self.entries.get_mut(lineage) {
                None => Decision::Accept,
                Some(entry) => {
                    entry.torn_periods = entry.torn_periods.saturating_add(1);
                    let periods = entry.torn_periods;
                    if periods == self.warn_after {
                        Decision::Warn { periods }
                    } else {
                        Decision::Hold { periods }
                    }
                }
            },
        }
    }

    /// The value from the lineage's last valid observation, if it has not turned invalid
    /// since (while torn, this is what keeps serving).
    pub(crate) fn last_valid(&self, lineage: &K) -> Option<&V> {
        self.entries.get(lineage).map(|e| &e.last_valid)
    }

    #[cfg(test)]
    /// Torn quiet periods in the lineage's current streak (0 when not torn).
    pub(crate) fn torn_periods(&self, lineage: &K) -> u32 {
        self.entries.get(lineage).map_or(0, |e| e.torn_periods)
    }

    #[cfg(test)]
    /// Some lineage is held as torn: the scheduler should look again after a quiet period.
    pub(crate) fn holding(&self) -> bool {
        self.entries.values().any(|e| e.torn_periods > 0)
    }

    /// Forgets lineages for which `keep` is false (e.g. folders that no longer exist, or
    /// watch paths removed by a reload).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.entries.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Why {
        KeyMismatch,
        MissingFile,
        Expired,
    }

    fn is_torn(e: &Why) -> bool {
        matches!(e, Why::KeyMismatch | Why::MissingFile)
    }

    fn tracker() -> TornTracker<String, &'static str> {
        TornTracker::new()
    }

    fn lin() -> String {
        "/etc/letsencrypt/live/example.com".to_string()
    }

    #[test]
    fn classifies_with_the_callers_predicate() {
        let ok: Result<&str, Why> = Ok("cert");
        assert_eq!(Observed::of(&ok, is_torn), Observed::Valid("cert"));
        assert_eq!(
            Observed::of(&Err::<&str, _>(Why::KeyMismatch), is_torn),
            Observed::Torn
        );
        assert_eq!(
            Observed::of(&Err::<&str, _>(Why::MissingFile), is_torn),
            Observed::Torn
        );
        assert_eq!(
            Observed::of(&Err::<&str, _>(Why::Expired), is_torn),
            Observed::Invalid
        );
        // A predicate that counts nothing as torn makes every error invalid.
        assert_eq!(
            Observed::of(&Err::<&str, _>(Why::KeyMismatch), |_| false),
            Observed::Invalid
        );
    }

    #[test]
    fn valid_lineage_is_accepted_and_remembered() {
        let mut t = tracker();
        assert_eq!(t.observe(&lin(), Observed::Valid("v1")), Decision::Accept);
        assert_eq!(t.last_valid(&lin()), Some(&"v1"));
        assert!(!t.holding());
        assert_eq!(t.observe(&lin(), Observed::Valid("v2")), Decision::Accept);
        assert_eq!(t.last_valid(&lin()), Some(&"v2"));
    }

    #[test]
    fn valid_then_torn_holds_the_last_valid_value() {
        let mut t = tracker();
        t.observe(&lin(), Observed::Valid("v1"));
        assert_eq!(
            t.observe(&lin(), Observed::Torn),
            Decision::Hold { periods: 1 }
        );
        assert_eq!(t.last_valid(&lin()), Some(&"v1"));
        assert!(t.holding());
        assert_eq!(t.torn_periods(&lin()), 1);
    }

    #[test]
    fn renewal_completing_ends_the_hold_with_the_new_value() {
        let mut t = tracker();
        t.observe(&lin(), Observed::Valid("v1"));
        t.observe(&lin(), Observed::Torn);
        t.observe(&lin(), Observed::Torn);
        assert_eq!(t.observe(&lin(), Observed::Valid("v2")), Decision::Accept);
        assert_eq!(t.last_valid(&lin()), Some(&"v2"));
        assert!(!t.holding());
        assert_eq!(t.torn_periods(&lin()), 0);
    }

    #[test]
    fn warns_exactly_once_at_the_tenth_torn_period_and_keeps_holding() {
        let mut t = tracker();
        t.observe(&lin(), Observed::Valid("v1"));
        let decisions: Vec<_> = (0..15).map(|_| t.observe(&lin(), Observed::Torn)).collect();
        for (i, d) in decisions.iter().enumerate() {
            let periods = i as u32 + 1;
            if periods == WARN_AFTER {
                assert_eq!(*d, Decision::Warn { periods });
            } else {
                assert_eq!(*d, Decision::Hold { periods });
            }
        }
        assert_eq!(t.last_valid(&lin()), Some(&"v1"));
    }

    #[test]
    fn a_new_streak_after_recovery_counts_from_one_and_warns_again() {
        let mut t = TornTracker::<String, u8>::with_warn_after(2);
        t.observe(&lin(), Observed::Valid(1));
        t.observe(&lin(), Observed::Torn);
        assert_eq!(
            t.observe(&lin(), Observed::Torn),
            Decision::Warn { periods: 2 }
        );
        t.observe(&lin(), Observed::Valid(2));
        assert_eq!(
            t.observe(&lin(), Observed::Torn),
            Decision::Hold { periods: 1 }
        );
        assert_eq!(
            t.observe(&lin(), Observed::Torn),
            Decision::Warn { periods: 2 }
        );
    }

    #[test]
    fn never_valid_lineage_gets_no_grace() {
        let mut t = tracker();
        assert_eq!(t.observe(&lin(), Observed::Torn), Decision::Accept);
        assert_eq!(t.last_valid(&lin()), None);
        assert!(!t.holding());
    }

    #[test]
    fn invalid_for_another_reason_drops_the_held_value() {
        let mut t = tracker();
        t.observe(&lin(), Observed::Valid("v1"));
        t.observe(&lin(), Observed::Torn);
        assert_eq!(t.observe(&lin(), Observed::Invalid), Decision::Accept);
        assert_eq!(t.last_valid(&lin()), None);
        assert!(!t.holding());
        // Torn after a real failure: no grace either.
        assert_eq!(t.observe(&lin(), Observed::Torn), Decision::Accept);
    }

    #[test]
    fn lineages_are_tracked_independently() {
        let mut t = tracker();
        let other = "/etc/letsencrypt/live/other.org".to_string();
        t.observe(&lin(), Observed::Valid("a"));
        t.observe(&other, Observed::Valid("b"));
        assert_eq!(
            t.observe(&lin(), Observed::Torn),
            Decision::Hold { periods: 1 }
        );
        assert_eq!(t.observe(&other, Observed::Valid("b2")), Decision::Accept);
        assert_eq!(t.torn_periods(&other), 0);
        assert_eq!(t.last_valid(&lin()), Some(&"a"));
        assert_eq!(t.last_valid(&other), Some(&"b2"));
    }

    #[test]
    fn retain_forgets_vanished_lineages() {
        let mut t = tracker();
        t.observe(&lin(), Observed::Valid("a"));
        t.observe(&lin(), Observed::Torn);
        t.retain(|k| k != &lin());
        assert_eq!(t.last_valid(&lin()), None);
        assert!(!t.holding());
    }

    #[test]
    fn renewal_in_progress_covers_missing_files_mismatch_and_half_written_files() {
        use crate::cert::Part;
        use std::path::{Path, PathBuf};
        let (chain, key) = (Path::new("/l/fullchain.pem"), Path::new("/l/privkey.pem"));
        let inv = |reason| SourceError::invalid(reason, chain, key);
        let torn = [
            SourceError::MissingKey {
                chain: chain.into(),
                key: key.into(),
            },
            SourceError::MissingCertificate {
                chain: chain.into(),
                key: key.into(),
            },
            SourceError::Dangling { path: chain.into() },
            inv(Invalid::KeyMismatch),
            inv(Invalid::Empty { part: Part::Key }),
            inv(Invalid::TruncatedPem {
                part: Part::Chain,
                label: "CERTIFICATE".into(),
            }),
            inv(Invalid::NotPem { part: Part::Chain }),
            inv(Invalid::NoPrivateKey {
                has_certificate: false,
            }),
        ];
        for e in &torn {
            assert!(renewal_in_progress(e), "{e}");
        }
        let broken = [
            SourceError::Unreadable {
                path: PathBuf::from("/l/privkey.pem"),
                error: "denied".into(),
            },
            SourceError::SymlinkLoop { path: chain.into() },
            SourceError::TooLarge {
                path: chain.into(),
                size: 1 << 30,
            },
            inv(Invalid::EncryptedKey),
            inv(Invalid::NoDnsNames),
            inv(Invalid::UnsupportedKey { what: "DSA".into() }),
        ];
        for e in &broken {
            assert!(!renewal_in_progress(e), "{e}");
        }
    }

    #[test]
    fn warn_after_zero_is_raised_to_one() {
        let mut t = TornTracker::<String, u8>::with_warn_after(0);
        t.observe(&lin(), Observed::Valid(1));
        assert_eq!(
            t.observe(&lin(), Observed::Torn),
            Decision::Warn { periods: 1 }
        );
    }
}
