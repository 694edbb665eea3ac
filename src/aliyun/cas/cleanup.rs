//! The opt-in cleanup of `[cas] delete_superseded = true`: `DeleteUserCertificate` for CAS
//! certificates certrotd uploaded and no longer needs.
//!
//! A certificate is deleted only when all hold:
//! 1. certrotd uploaded it: the state records it as uploaded by certrotd *and* its name is
//!    the one certrotd gives that content ([`super::cas_name`]) — never a user's upload;
//! 2. it is superseded: no managed domain's recorded deployment is it, and a newer
//!    certificate (later notAfter) of the same lineage — one on record in CAS with the same
//!    DNS names — is deployed and verified, on every managed domain where a certificate of
//!    that lineage is deployed;
//! 3. the grace period (`delete_after_hours`) has passed since a pass first saw 2 hold;
//! 4. no managed domain of any product serves it, checked by reading each domain through its
//!    own product's target (`DescribeDomainCertificateInfo` for the CDN's,
//!    `DescribeDcdnDomainCertificateInfo` for DCDN's) right before the delete, not only from
//!    the state;
//! 5. the pass was clean (the caller runs the cleanup only then).
//!
//! [`review`] decides 1–3 (pure: values and `now` in); [`run`] reads, deletes and records.

use std::time::Duration;

use time::OffsetDateTime;

use super::{CasStore, is_own_name};
use crate::cert::{Fingerprint, covers};
use crate::push::{RATE_WINDOW, RateLimiter, Target};
use crate::state::cas::{CasRecord, CasRecords};
use crate::state::{State, StateStore, Verification};

/// A certificate the review found deletable (subject to the read check).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) fingerprint: Fingerprint,
    pub(crate) cert_id: u64,
    pub(crate) name: String,
    pub(crate) names: Vec<String>,
}

/// What the cleanup did, for the report.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Cleanup {
    /// `(CertId, name)` deleted (or, in a dry run, that would be).
    pub(crate) deleted: Vec<(u64, String)>,
    /// `(CertId, name, why)` kept although the state made them candidates.
    pub(crate) kept: Vec<(u64, String, String)>,
    /// Errors of reads, deletes or the state save.
    pub(crate) errors: Vec<String>,
}

impl Cleanup {
    /// Report lines (empty when nothing happened).
    pub(crate) fn render(&self, dry_run: bool) -> String {
        let mut out = String::new();
        let verb = if dry_run {
            "would delete from CAS"
        } else {
            "deleted from CAS"
        };
        for (id, name) in &self.deleted {
            out.push_str(&format!("{verb}: {name} (CertId {id})\n"));
        }
        for (id, name, why) in &self.kept {
            out.push_str(&format!("kept in CAS: {name} (CertId {id}): {why}\n"));
        }
        for e in &self.errors {
            out.push_str(&format!("CAS cleanup: {e}\n"));
        }
        out
    }
}

/// Marks superseded records (`superseded_at`, first sighting) and clears the mark of those
/// current again; returns the certificates past their grace period. `managed` are the
/// managed domains of every product.
pub(crate) fn review(
    state: &State,
    records: &mut CasRecords,
    managed: &[String],
    now: OffsetDateTime,
    grace: Duration,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    let lineage_of: std::collections::HashMap<String, Vec<String>> = records
        .iter()
        .map(|(hex, r)| (hex.clone(), sorted(&r.cert.names)))
        .collect();
    for (hex, record) in records.iter_mut() {
        let Some(fp) = Fingerprint::from_hex(hex) else {
            continue;
        };
        if !owned(record, &fp) {
            continue;
        }
        if !superseded(state, record, &fp, managed, &lineage_of) {
            record.superseded_at = None;
            continue;
        }
        let since = *record.superseded_at.get_or_insert(now);
        let grace = time::Duration::try_from(grace).unwrap_or(time::Duration::MAX);
        if now - since >= grace {
            out.push(Candidate {
                fingerprint: fp,
                cert_id: record.cert.cert_id,
                name: record.cert.name.clone(),
                names: record.cert.names.clone(),
            });
        }
    }
    out
}

/// Rule 1: certrotd uploaded it (the record says so and the name is certrotd's own).
fn owned(record: &CasRecord, fp: &Fingerprint) -> bool {
    record.cert.uploaded_by_certrotd && is_own_name(&record.cert.name, fp)
}

/// Rule 2: no managed domain has it on record; every managed domain with a certificate of
/// its lineage (same names, by the CAS records) on record has a newer one, verified; and
/// there is at least one.
fn superseded(
    state: &State,
    record: &CasRecord,
    fp: &Fingerprint,
    managed: &[String],
    lineage_of: &std::collections::HashMap<String, Vec<String>>,
) -> bool {
    let lineage = sorted(&record.cert.names);
    let mut newer = 0;
    for domain in managed {
        let Some(d) = state.domains.get(domain).and_then(|s| s.deployed.as_ref()) else {
            continue;
        };
        if d.fingerprint == *fp {
            return false;
        }
        if lineage_of.get(&d.fingerprint.hex()) != Some(&lineage) {
            continue;
        }
        let ok = d.verification == Verification::Verified && d.not_after > record.cert.not_after;
        if !ok {
            return false;
        }
        newer += 1;
    }
    newer > 0
}

fn sorted(names: &[String]) -> Vec<String> {
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    names
}

/// The cleanup after a clean pass: [`review`] over every product's managed domains, then for
/// each candidate a read of every managed domain it covers through that domain's product
/// (`products`: each reader with its domains; a domain serving it keeps it), at
/// most `read_rate` reads in any rolling second, then `DeleteUserCertificate`; the state
/// records the marks and drops deleted records (saved once at the end).
pub(crate) async fn run<T: Target>(
    cas: &CasStore,
    products: &[(&T, &[String])],
    store: &mut StateStore,
    now: OffsetDateTime,
    grace: Duration,
    read_rate: u32,
) -> Cleanup {
    let reads = RateLimiter::with_window(read_rate.max(1), RATE_WINDOW);
    let mut report = Cleanup::default();
    let state = store.state().clone();
    let mut managed: Vec<String> = products
        .iter()
        .flat_map(|(_, d)| d.iter().cloned())
        .collect();
    managed.sort();
    let candidates = review(&state, store.cas_mut(), &managed, now, grace);
    for c in candidates {
        match bound_domain(products, &reads, &c).await {
            Ok(Some(domain)) => {
                let why = format!("{domain} still serves it");
                report.kept.push((c.cert_id, c.name, why));
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                report
                    .errors
                    .push(format!("cannot check {}: {e}; kept", c.name));
                continue;
            }
        }
        match cas.delete(c.cert_id).await {
            Ok(()) => {
                tracing::info!(cert_id = c.cert_id, name = %c.name, "superseded certificate deleted from CAS");
                store.cas_mut().remove(&c.fingerprint.hex());
                cas.forget(&c.fingerprint);
                report.deleted.push((c.cert_id, c.name));
            }
            Err(e) => report.errors.push(format!(
                "cannot delete {} (CertId {}): {e}",
                c.name, c.cert_id
            )),
        }
    }
    if let Err(e) = store.save() {
        report.errors.push(e.to_string());
    }
    report
}

/// What a dry run would delete: the review on a copy of the records (nothing is saved).
pub(crate) fn dry_run(
    state: &State,
    managed: &[String],
    now: OffsetDateTime,
    grace: Duration,
) -> Cleanup {
    let mut records = state.cas.clone();
    let candidates = review(state, &mut records, managed, now, grace);
    Cleanup {
        deleted: candidates
            .into_iter()
            .map(|c| (c.cert_id, c.name))
            .collect(),
        ..Cleanup::default()
    }
}

/// The first managed domain covered by the candidate that serves it, on any target.
async fn bound_domain<T: Target>(
    products: &[(&T, &[String])],
    reads: &RateLimiter,
    c: &Candidate,
) -> Result<Option<String>, T::Error> {
    for (reader, domains) in products {
        // Every managed domain it covers, read through its own product (CDN, DCDN),
        // whatever the state says is deployed there.
        for domain in domains.iter().filter(|d| covers(&c.names, d).is_some()) {
            reads.acquire().await;
            if reader.served(domain).await? == Some(c.fingerprint) {
                return Ok(Some(domain.clone()));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::cas::CasRef;
    use crate::state::{Deployment, DomainState};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

    fn record(fp: Fingerprint, ours: bool, not_after: OffsetDateTime) -> CasRecord {
        let name = if ours {
            super::super::cas_name(&fp)
        } else {
            "my-own".to_string()
        };
        CasRecord {
            cert: CasRef {
                cert_id: u64::from(fp.0[0]),
                region: "cn-hangzhou".to_string(),
                name,
                uploaded_by_certrotd: ours,
                names: vec!["www.example.com".to_string()],
                not_after,
            },
            recorded_at: NOW,
            superseded_at: None,
        }
    }

    fn state_with(fp: Fingerprint, v: Verification, not_after: OffsetDateTime) -> State {
        let mut state = State::default();
        state.domains.insert(
            "www.example.com".to_string(),
            DomainState {
                deployed: Some(Deployment {
                    fingerprint: fp,
                    cert_name: "x".into(),
                    not_after,
                    deployed_at: NOW,
                    request_id: "r".into(),
                    verification: v,
                    checked_at: None,
                }),
                last_error: None,
            },
        );
        state
    }

    fn managed() -> Vec<String> {
        vec!["www.example.com".to_string()]
    }

    #[test]
    fn superseded_own_upload_is_deleted_after_the_grace_period_only() {
        let (old, new) = (Fingerprint([1; 32]), Fingerprint([2; 32]));
        let state = state_with(new, Verification::Verified, datetime!(2026-09-01 0:00 UTC));
        let mut records = CasRecords::new();
        records.insert(old.hex(), record(old, true, datetime!(2026-07-01 0:00 UTC)));
        records.insert(new.hex(), record(new, true, datetime!(2026-09-01 0:00 UTC)));
        let grace = Duration::from_secs(3600);
        assert!(review(&state, &mut records, &managed(), NOW, grace).is_empty());
        assert_eq!(records[&old.hex()].superseded_at, Some(NOW));
        let later = NOW + time::Duration::minutes(59);
        assert!(review(&state, &mut records, &managed(), later, grace).is_empty());
        let after = NOW + time::Duration::hours(1);
        let got = review(&state, &mut records, &managed(), after, grace);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].fingerprint, old);
    }

    #[test]
    fn user_uploads_current_ones_and_unverified_successors_are_kept() {
        let (old, new) = (Fingerprint([1; 32]), Fingerprint([2; 32]));
        let newer = datetime!(2026-09-01 0:00 UTC);
        let older = datetime!(2026-07-01 0:00 UTC);
        let zero = Duration::ZERO;
        // A user's upload (other name, not ours) is never a candidate.
        let state = state_with(new, Verification::Verified, newer);
        let mut records = CasRecords::new();
        records.insert(old.hex(), record(old, false, older));
        assert!(review(&state, &mut records, &managed(), NOW, zero).is_empty());
        // Ours but the flag says otherwise in the state: kept.
        let mut r = record(old, true, older);
        r.cert.uploaded_by_certrotd = false;
        records.insert(old.hex(), r);
        assert!(review(&state, &mut records, &managed(), NOW, zero).is_empty());
        // The one the domain has on record: kept, and its mark cleared.
        let mut current = record(new, true, newer);
        current.superseded_at = Some(NOW);
        records.insert(new.hex(), current);
        assert!(review(&state, &mut records, &managed(), NOW, zero).is_empty());
        assert_eq!(records[&new.hex()].superseded_at, None);
        // The successor is only pending: not superseded yet.
        let both = |old_after, new_after| {
            let mut records = CasRecords::new();
            records.insert(old.hex(), record(old, true, old_after));
            records.insert(new.hex(), record(new, true, new_after));
            records
        };
        let pending = state_with(new, Verification::Pending, newer);
        assert!(review(&pending, &mut both(older, newer), &managed(), NOW, zero).is_empty());
        // The successor is older (a rollback): not superseded.
        let rollback = state_with(new, Verification::Verified, older);
        assert!(review(&rollback, &mut both(newer, older), &managed(), NOW, zero).is_empty());
        // Nothing of its lineage is managed: not superseded.
        assert!(review(&state, &mut both(older, newer), &[], NOW, zero).is_empty());
        // The control: the same records with a verified, newer successor are.
        assert_eq!(
            review(&state, &mut both(older, newer), &managed(), NOW, zero).len(),
            1
        );
        // A certificate of another lineage (other names) on a domain the old one covers
        // does not hold it back, and is not its successor either.
        let mut other = record(new, true, newer);
        other.cert.names = vec!["*.example.com".to_string()];
        let mut records = CasRecords::new();
        records.insert(old.hex(), record(old, true, older));
        records.insert(new.hex(), other);
        assert!(review(&state, &mut records, &managed(), NOW, zero).is_empty());
    }

    #[test]
    fn dry_run_lists_without_changing_the_state() {
        let (old, new) = (Fingerprint([1; 32]), Fingerprint([2; 32]));
        let mut state = state_with(new, Verification::Verified, datetime!(2026-09-01 0:00 UTC));
        let mut r = record(old, true, datetime!(2026-07-01 0:00 UTC));
        r.superseded_at = Some(NOW - time::Duration::hours(25));
        state.cas.insert(old.hex(), r);
        let current = record(new, true, datetime!(2026-09-01 0:00 UTC));
        state.cas.insert(new.hex(), current);
        let before = state.clone();
        let c = dry_run(&state, &managed(), NOW, Duration::from_secs(24 * 3600));
        assert_eq!(c.deleted, vec![(1, super::super::cas_name(&old))]);
        assert!(c.render(true).contains("would delete from CAS: certrotd-"));
        assert_eq!(state, before);
    }
}
