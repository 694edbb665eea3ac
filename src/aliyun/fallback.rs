//! The rule for the retired CDN batch call (`BatchSetCdnDomainServerCertificate`): which CDN
//! call a run starts on, and what it records afterwards.
//!
//! With `[aliyun] api = "batch"`, an answer that the batch call does not exist switches the
//! rest of the run to the per-domain call (the executor's `Gone` + fallback) and is recorded
//! in the state file ([`BatchGone`]). Later runs then start on the per-domain call and never
//! send the batch call, except to re-probe it: at most once a day (since the last probe), and
//! only when asked to — a `--force` run, or `[aliyun]` settings that differ from those of the
//! last probe ([`digest`]). A probe that succeeds through the batch call clears the record;
//! one that is answered "gone" again renews it. `api = "per-domain"` never sends it.
//!
//! Pure: the record, the settings' digest, `force` and `now` in; a decision out.

use time::{Duration, OffsetDateTime};

use crate::config::{AliyunSettings, Api};
use crate::state::BatchGone;

/// A re-probe of the batch call waits at least this long after the last one.
pub(crate) const REPROBE_AFTER: Duration = Duration::days(1);

/// The CDN call a run starts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// The batch call, falling back to per-domain if it is gone.
    Batch,
    /// The per-domain call only.
    PerDomain,
}

/// Which call a run starts on: `api` as configured, unless the batch call was recorded gone
/// and no re-probe is due (see the module docs).
pub(crate) fn start(
    api: Api,
    record: Option<&BatchGone>,
    digest: &str,
    force: bool,
    now: OffsetDateTime,
) -> Start {
    match (api, record) {
        (Api::PerDomain, _) => Start::PerDomain,
        (Api::Batch, None) => Start::Batch,
        (Api::Batch, Some(r)) => {
            let asked = force || r.config_digest != digest;
            let due = now - r.probed_at >= REPROBE_AFTER;
            if asked && due {
                Start::Batch
            } else {
                Start::PerDomain
            }
        }
    }
}

/// The record after a run that started on `start`: `gone` — the batch call answered that
/// it does not exist; `batch_worked` — a batch call deployed something.
pub(crate) fn after_run(
    start: Start,
    record: Option<&BatchGone>,
    gone: bool,
    batch_worked: bool,
    digest: &str,
    now: OffsetDateTime,
) -> Option<BatchGone> {
    if start == Start::PerDomain {
        return record.cloned();
    }
    if gone {
        return Some(BatchGone {
            probed_at: now,
            config_digest: digest.to_string(),
        });
    }
    if batch_worked { None } else { record.cloned() }
}

/// A short digest of the `[aliyun]` settings (no secret is among them: the secret is a
/// file path there), so a change of endpoint, account or call allows a re-probe.
pub(crate) fn digest(settings: &AliyunSettings) -> String {
    let text = format!("{settings:?}");
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The one warning a switch deserves: what happened, what certrotd did, how to make it
/// permanent.
pub(crate) fn switch_warning() -> &'static str {
    "the CDN API answered that BatchSetCdnDomainServerCertificate does not exist \
     (InvalidAction.NotFound): Alibaba has retired the batch call for this account. certrotd \
     switched to the per-domain call SetCdnDomainSSLCertificate for the rest of this run and \
     recorded it in the state file, so later runs start there (re-trying the batch call at \
     most once a day, and only after a config change or with --force); to make this \
     permanent, set [aliyun] api = \"per-domain\""
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: OffsetDateTime = time::macros::datetime!(2026-12-01 12:00 UTC);

    fn gone(hours_ago: i64, digest: &str) -> BatchGone {
        BatchGone {
            probed_at: NOW - Duration::hours(hours_ago),
            config_digest: digest.to_string(),
        }
    }

    #[test]
    fn the_start_follows_the_config_and_the_record() {
        use Start::{Batch, PerDomain};
        // (api, record, digest now, force, start)
        let cases: &[(Api, Option<BatchGone>, &str, bool, Start)] = &[
            (Api::Batch, None, "d1", false, Batch),
            (Api::Batch, None, "d1", true, Batch),
            (Api::PerDomain, None, "d1", true, PerDomain),
            (Api::PerDomain, Some(gone(48, "d0")), "d1", true, PerDomain),
            // Recorded gone: stay on per-domain unless asked, and asked only once a day.
            (Api::Batch, Some(gone(1, "d1")), "d1", false, PerDomain),
            (Api::Batch, Some(gone(48, "d1")), "d1", false, PerDomain),
            (Api::Batch, Some(gone(1, "d1")), "d1", true, PerDomain),
            (Api::Batch, Some(gone(23, "d0")), "d1", false, PerDomain),
            (Api::Batch, Some(gone(24, "d1")), "d1", true, Batch),
            (Api::Batch, Some(gone(25, "d0")), "d1", false, Batch),
            (Api::Batch, Some(gone(-1, "d0")), "d1", true, PerDomain),
        ];
        for (api, record, digest, force, want) in cases {
            assert_eq!(
                start(*api, record.as_ref(), digest, *force, NOW),
                *want,
                "{api:?} {record:?} {digest} force={force}"
            );
        }
    }

    #[test]
    fn the_record_after_a_run() {
        let old = gone(48, "d0");
        let fresh = Some(BatchGone {
            probed_at: NOW,
            config_digest: "d1".to_string(),
        });
        // Found gone: recorded now, with the digest in force.
        assert_eq!(after_run(Start::Batch, None, true, false, "d1", NOW), fresh);
        assert_eq!(
            after_run(Start::Batch, Some(&old), true, false, "d1", NOW),
            fresh
        );
        // A probe that deployed through the batch call clears it.
        assert_eq!(
            after_run(Start::Batch, Some(&old), false, true, "d1", NOW),
            None
        );
        // A probe that sent nothing keeps it; a per-domain run never touches it.
        assert_eq!(
            after_run(Start::Batch, Some(&old), false, false, "d1", NOW),
            Some(old.clone())
        );
        assert_eq!(
            after_run(Start::PerDomain, Some(&old), true, true, "d1", NOW),
            Some(old.clone())
        );
        assert_eq!(
            after_run(Start::PerDomain, None, false, false, "d1", NOW),
            None
        );
    }

    #[test]
    fn the_digest_changes_with_the_aliyun_settings() {
        let dir = std::path::Path::new("/etc/certrotd");
        let parse = |text: &str| {
            crate::config::parse(&dir.join("certrotd.toml"), text, dir)
                .expect("valid")
                .settings
                .aliyun
        };
        let a = digest(&parse(""));
        assert_eq!(a, digest(&parse("")));
        assert_eq!(a.len(), 16);
        assert_ne!(
            a,
            digest(&parse("[aliyun]\nendpoint = \"https://cdn.example.com\"\n"))
        );
    }
}
