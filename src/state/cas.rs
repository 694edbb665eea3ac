//! What the state keeps about certificates in the SSL Certificates Service (CAS): the
//! mapping fingerprint → CAS certificate, recorded as soon as an upload (or a lookup) is
//! answered, so a run killed before its bindings finds the upload again; and when each was
//! first seen superseded (the cleanup's grace period counts from then).
//!
//! Stored as the top-level field `cas` of the state (absent when empty): a map from the
//! leaf's SHA-256 (hex) to a [`CasRecord`]. Never key material: ids, names, regions, times.
//!
//! A prepared reference ([`CasRef`]) is what the CAS step hands the executor
//! (`Event::Prepared`'s `reference`, `Deploy::prepared`): its JSON text, so the recorder
//! and the binding read the same value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::cert::Fingerprint;

/// A CAS certificate as a binding names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasRef {
    /// `CertId` in CAS.
    pub cert_id: u64,
    /// CAS region it lives in.
    pub region: String,
    /// Its `Name` in CAS.
    pub name: String,
    /// certrotd uploaded it (under its own deterministic name); `false` for a certificate
    /// found in CAS that someone else uploaded.
    pub uploaded_by_certrotd: bool,
    /// The leaf's DNS names (to tell which lineage it belongs to).
    #[serde(default)]
    pub names: Vec<String>,
    /// The leaf's notAfter.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

impl CasRef {
    /// The reference text handed through the executor.
    pub(crate) fn to_reference(&self) -> String {
        // Plain strings, numbers and a formatted date: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a reference made by [`CasRef::to_reference`].
    pub(crate) fn from_reference(text: &str) -> Option<CasRef> {
        serde_json::from_str(text).ok()
    }
}

/// One CAS certificate on record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasRecord {
    #[serde(flatten)]
    pub cert: CasRef,
    /// When certrotd first recorded it.
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
    /// When a pass first saw a newer certificate of its lineage deployed and verified
    /// everywhere it was; `None` while it is current.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub superseded_at: Option<OffsetDateTime>,
}

/// The `cas` field of the state: fingerprint (hex) → record.
pub type CasRecords = BTreeMap<String, CasRecord>;

/// Records `cert` for `fingerprint` (kept as it is when the same certificate is on record
/// already, so its first-recorded time and superseded mark stay).
pub(crate) fn note_prepared(
    records: &mut CasRecords,
    fingerprint: Fingerprint,
    cert: CasRef,
    at: OffsetDateTime,
) {
    let entry = records.entry(fingerprint.hex());
    match entry {
        std::collections::btree_map::Entry::Occupied(mut e)
            if e.get().cert.cert_id == cert.cert_id =>
        {
            e.get_mut().cert = cert;
        }
        std::collections::btree_map::Entry::Occupied(mut e) => {
            e.insert(CasRecord {
                cert,
                recorded_at: at,
                superseded_at: None,
            });
        }
        std::collections::btree_map::Entry::Vacant(e) => {
            e.insert(CasRecord {
                cert,
                recorded_at: at,
                superseded_at: None,
            });
        }
    }
}
