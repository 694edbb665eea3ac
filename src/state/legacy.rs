//! The JSON state file of certrotd 0.1 (`state.json`, format version [`STATE_VERSION`]):
//! read once, imported into the store, then kept as `state.json.imported`.
//!
//! Format, pretty-printed JSON:
//! ```json
//! { "version": 1,
//!   "domains": {
//!     "www.example.com": {
//!       "deployed": { "fingerprint": "<64 hex>", "cert_name": "www.example.com-20270227-…",
//!                     "not_after": "2027-02-27T00:00:00Z", "deployed_at": "2026-…Z",
//!                     "request_id": "…", "verification": "pending" | "verified" | "failed",
//!                     "checked_at": null | "2026-…Z" },
//!       "last_error": null | { "at": "2026-…Z", "kind": "throttling", "message": "…" } } } }
//! ```
//! A corrupt file or one of a newer version is refused, and left as it is.

use std::path::Path;

use serde::Deserialize;

use super::{MAX_STATE_BYTES, STATE_VERSION, State, StateError};
use crate::fsio::{self, FsError};

/// Reads the JSON state file at `path`; `Ok(None)` when there is none.
pub(super) fn read(path: &Path) -> Result<Option<State>, StateError> {
    match fsio::read(path, MAX_STATE_BYTES) {
        Ok(bytes) => parse(path, &bytes).map(Some),
        Err(FsError::NotFound { .. }) => Ok(None),
        Err(cause) => Err(StateError::Read {
            path: path.to_path_buf(),
            cause,
        }),
    }
}

/// Decodes a `state.json`'s bytes; `path` is only for messages.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<State, StateError> {
    #[derive(Deserialize)]
    struct Header {
        version: Option<u64>,
    }
    let corrupt = |detail: String| StateError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let header: Header = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    match header.version {
        None => return Err(corrupt("no \"version\" field".into())),
        Some(0) => return Err(corrupt("version 0 does not exist".into())),
        Some(v) if v > u64::from(STATE_VERSION) => {
            return Err(StateError::TooNew {
                path: path.to_path_buf(),
                found: v,
                supported: STATE_VERSION,
            });
        }
        Some(_) => {}
    }
    serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))
}
