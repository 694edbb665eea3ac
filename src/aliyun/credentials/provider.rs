//! What the client signs with: fixed credentials, or temporary ones (STS, the instance's RAM
//! role, a credentials URI) kept fresh.
//!
//! Owns the refresh rule: a temporary set is refreshed at the later of 15 minutes before its
//! `Expiration` and 80 % of its lifetime, by a background task (calls never wait for a
//! refresh while the current set is valid); a failed refresh keeps the current set while it
//! is valid, is logged, and is retried with backoff (1 s doubling to 60 s); only when no
//! valid set is left does a call wait for a fetch. Of several fetchers (the ECS RAM role, then
//! the credentials URI) the first that works is used from then on.
//!
//! Invariants: a call gets a set valid (for at least [`MARGIN`]) when it is signed; one fetch
//! at a time; the background task ends when the last clone of the provider is dropped; no
//! secret or token reaches a log line or an error (fetchers' errors never carry them).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use time::OffsetDateTime;

use super::{Credentials, CredentialsError, Secret, Source};

/// A set is not handed out for signing when it expires within this.
pub(crate) const MARGIN: Duration = Duration::from_secs(3);
/// Refresh no later than this before expiry.
const EARLY: time::Duration = time::Duration::minutes(15);
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Temporary credentials as a fetcher got them (`Debug` redacts the secrets).
#[derive(Debug)]
pub(crate) struct Temporary {
    pub(crate) access_key_id: String,
    pub(crate) secret: Secret,
    pub(crate) token: Secret,
    pub(crate) expiration: OffsetDateTime,
}

pub(crate) type FetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Temporary, CredentialsError>> + Send + 'a>>;

/// One way of getting temporary credentials (one STS exchange, one metadata read, …).
pub(crate) trait Fetch: Send + Sync {
    /// What it is, for logs and `check` (never a secret).
    fn describe(&self) -> String;
    fn fetch(&self) -> FetchFuture<'_>;
}

/// What the client signs with. Cheap to clone (clones share the current set).
#[derive(Clone)]
pub struct CredentialProvider {
    inner: Arc<Inner>,
}

enum Inner {
    Fixed(Arc<Credentials>),
    Temporary(Refresher),
}

impl From<Credentials> for CredentialProvider {
    fn from(creds: Credentials) -> CredentialProvider {
        CredentialProvider {
            inner: Arc::new(Inner::Fixed(Arc::new(creds))),
        }
    }
}

impl fmt::Debug for CredentialProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CredentialProvider")
            .field(&self.describe())
            .finish()
    }
}

/// The set in use and when to replace it.
#[derive(Clone)]
struct Lease {
    creds: Arc<Credentials>,
    expiration: OffsetDateTime,
    refresh_at: OffsetDateTime,
}

struct Refresher {
    fetchers: Vec<Box<dyn Fetch>>,
    /// The fetcher that worked (index into `fetchers`).
    chosen: Mutex<Option<usize>>,
    current: Mutex<Option<Lease>>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    task_started: AtomicBool,
    source: Source,
    description: String,
}

impl CredentialProvider {
    /// Temporary credentials from the first of `fetchers` that works (then that one only).
    pub(crate) fn temporary(
        fetchers: Vec<Box<dyn Fetch>>,
        source: Source,
        description: String,
    ) -> CredentialProvider {
        CredentialProvider {
            inner: Arc::new(Inner::Temporary(Refresher {
                fetchers,
                chosen: Mutex::new(None),
                current: Mutex::new(None),
                fetching: tokio::sync::Mutex::new(()),
                task_started: AtomicBool::new(false),
                source,
                description,
            })),
        }
    }

    /// Where the credentials come from, for `check` and the log (never a secret).
    pub(crate) fn describe(&self) -> String {
        match &*self.inner {
            Inner::Fixed(c) => c.source().to_string(),
            Inner::Temporary(r) => r.description.clone(),
        }
    }

    #[cfg(test)]
    pub(crate) fn source_kind(&self) -> Source {
        match &*self.inner {
            Inner::Fixed(c) => c.source_kind(),
            Inner::Temporary(r) => r.source,
        }
    }

    /// A set valid now (for at least [`MARGIN`]): the current one, else a fresh fetch.
    pub(crate) async fn get(&self) -> Result<Arc<Credentials>, CredentialsError> {
        let r = match &*self.inner {
            Inner::Fixed(c) => return Ok(Arc::clone(c)),
            Inner::Temporary(r) => r,
        };
        let now = OffsetDateTime::now_utc();
        if let Some(lease) = r.valid_lease(now) {
            return Ok(lease.creds);
        }
        let lease = r.fetch_if_stale(None).await?;
        self.start_task();
        Ok(lease.creds)
    }

    /// The server refused `used` as expired: fetch a new set unless one already replaced
    /// it. Whether a different set is now current (false for fixed credentials).
    pub(crate) async fn renew_after_refusal(&self, used: &Arc<Credentials>) -> bool {
        let Inner::Temporary(r) = &*self.inner else {
            return false;
        };
        match r.fetch_if_stale(Some(used)).await {
            Ok(lease) => !Arc::ptr_eq(&lease.creds, used),
            Err(e) => {
                tracing::warn!(kind = e.kind(), error = %e, "could not refresh the refused credentials");
                false
            }
        }
    }

    /// Starts the background refresh (once, on the current tokio runtime).
    fn start_task(&self) {
        let Inner::Temporary(r) = &*self.inner else {
            return;
        };
        if r.task_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(refresh_loop(weak));
    }
}

impl Refresher {
    fn lease(&self) -> Option<Lease> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn valid_lease(&self, now: OffsetDateTime) -> Option<Lease> {
        self.lease().filter(|l| l.expiration - now > MARGIN)
    }

    /// Fetches a new set unless the current one is valid (and is not `refused`); returns
    /// the current set after.
    async fn fetch_if_stale(
        &self,
        refused: Option<&Arc<Credentials>>,
    ) -> Result<Lease, CredentialsError> {
        let _one = self.fetching.lock().await;
        let now = OffsetDateTime::now_utc();
        if let Some(lease) = self.valid_lease(now)
            && refused.is_none_or(|used| !Arc::ptr_eq(used, &lease.creds))
        {
            return Ok(lease);
        }
        self.fetch_now().await
    }

    /// One fetch (the caller holds `fetching`): stores and returns the new lease.
    async fn fetch_now(&self) -> Result<Lease, CredentialsError> {
        let temporary = self.fetch_from_chain().await?;
        let now = OffsetDateTime::now_utc();
        let lease = self.lease_for(temporary, now)?;
        tracing::info!(
            source = %self.description,
            access_key_id = %super::mask_id(lease.creds.access_key_id()),
            expires_in_s = (lease.expiration - now).whole_seconds(),
            refresh_in_s = (lease.refresh_at - now).whole_seconds(),
            "obtained temporary Alibaba Cloud credentials"
        );
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(lease.clone());
        Ok(lease)
    }

    async fn fetch_from_chain(&self) -> Result<Temporary, CredentialsError> {
        let chosen = *self.chosen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = chosen {
            return self.fetchers[i].fetch().await;
        }
        let mut failures = Vec::new();
        for (i, fetcher) in self.fetchers.iter().enumerate() {
            match fetcher.fetch().await {
                Ok(t) => {
                    *self.chosen.lock().unwrap_or_else(PoisonError::into_inner) = Some(i);
                    return Ok(t);
                }
                Err(e) if i + 1 < self.fetchers.len() => {
                    tracing::warn!(source = %fetcher.describe(), kind = e.kind(), error = %e, "credential source failed; trying the next one");
                    failures.push(e.to_string());
                }
                Err(e) if failures.is_empty() => return Err(e),
                Err(e) => {
                    failures.push(e.to_string());
                    let temporary = e.is_temporary();
                    return Err(CredentialsError::Fetch {
                        source_name: "the credential chain".to_string(),
                        detail: format!("every source failed: {}", failures.join("; then ")),
                        temporary,
                    });
                }
            }
        }
        Err(CredentialsError::Fetch {
            source_name: self.description.clone(),
            detail: "no source to fetch from".to_string(),
            temporary: false,
        })
    }

    fn lease_for(&self, t: Temporary, now: OffsetDateTime) -> Result<Lease, CredentialsError> {
        let lifetime = t.expiration - now;
        if lifetime <= MARGIN {
            return Err(CredentialsError::Fetch {
                source_name: self.description.clone(),
                detail: format!(
                    "the credentials it gave expire at {} (in {} s): is this host's clock right?",
                    super::super::sign::format_timestamp(t.expiration),
                    lifetime.whole_seconds()
                ),
                temporary: true,
            });
        }
        let creds = Credentials {
            access_key_id: t.access_key_id,
            secret: t.secret,
            security_token: Some(t.token),
            source: self.source,
            description: self.description.clone(),
        };
        Ok(Lease {
            creds: Arc::new(creds),
            expiration: t.expiration,
            refresh_at: refresh_time(now, t.expiration),
        })
    }
}

/// When to refresh a set obtained at `now` that expires at `expiration`: the later of 15
/// minutes before expiry and 80 % of the lifetime.
pub(crate) fn refresh_time(now: OffsetDateTime, expiration: OffsetDateTime) -> OffsetDateTime {
    let lifetime = expiration - now;
    let at_80 = now + lifetime * 0.8;
    (expiration - EARLY).max(at_80)
}

/// Refreshes at each lease's refresh time; backs off after a failure; ends with the
/// provider.
async fn refresh_loop(inner: Weak<Inner>) {
    let mut backoff = BACKOFF_START;
    loop {
        let wait = {
            let Some(strong) = inner.upgrade() else {
                return;
            };
            let Inner::Temporary(r) = &*strong else {
                return;
            };
            let now = OffsetDateTime::now_utc();
            r.lease()
                .map(|l| l.refresh_at - now)
                .and_then(|d| Duration::try_from(d).ok())
                .unwrap_or(Duration::ZERO)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let Inner::Temporary(r) = &*strong else {
            return;
        };
        let result = {
            let _one = r.fetching.lock().await;
            let now = OffsetDateTime::now_utc();
            match r.lease() {
                // Someone else refreshed meanwhile.
                Some(l) if l.refresh_at > now => Ok(l),
                _ => r.fetch_now().await,
            }
        };
        match result {
            Ok(_) => backoff = BACKOFF_START,
            Err(e) => {
                let left = r
                    .lease()
                    .map(|l| (l.expiration - OffsetDateTime::now_utc()).whole_seconds());
                tracing::warn!(
                    kind = e.kind(),
                    error = %e,
                    current_expires_in_s = ?left,
                    retry_in_s = backoff.as_secs(),
                    "refreshing the temporary credentials failed; keeping the current ones while they are valid"
                );
                drop(strong);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use time::macros::datetime;

    #[test]
    fn refresh_is_the_later_of_15_minutes_before_and_80_percent() {
        let now = datetime!(2026-01-01 00:00:00 UTC);
        // One hour: 15 minutes before (45 min) is later than 80 % (48 min)? No: 48 > 45.
        assert_eq!(
            refresh_time(now, now + time::Duration::hours(1)),
            now + time::Duration::minutes(48)
        );
        // Six hours: 15 minutes before wins.
        assert_eq!(
            refresh_time(now, now + time::Duration::hours(6)),
            now + time::Duration::minutes(345)
        );
        // 20 seconds: 80 % = 16 s.
        assert_eq!(
            refresh_time(now, now + time::Duration::seconds(20)),
            now + time::Duration::seconds(16)
        );
    }

    struct Counting {
        calls: Arc<AtomicUsize>,
        life: time::Duration,
        fail_from: usize,
    }

    impl Fetch for Counting {
        fn describe(&self) -> String {
            "counting".to_string()
        }
        fn fetch(&self) -> FetchFuture<'_> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let life = self.life;
            let fail = n >= self.fail_from;
            Box::pin(async move {
                if fail {
                    return Err(CredentialsError::Fetch {
                        source_name: "counting".to_string(),
                        detail: "down".to_string(),
                        temporary: true,
                    });
                }
                Ok(Temporary {
                    access_key_id: format!("STS.key{n}"),
                    secret: Secret::from(format!("secret{n}")),
                    token: Secret::from(format!("token{n}")),
                    expiration: OffsetDateTime::now_utc() + life,
                })
            })
        }
    }

    fn provider(calls: &Arc<AtomicUsize>, life: i64, fail_from: usize) -> CredentialProvider {
        let f = Counting {
            calls: Arc::clone(calls),
            life: time::Duration::seconds(life),
            fail_from,
        };
        CredentialProvider::temporary(vec![Box::new(f)], Source::Given, "test".to_string())
    }

    #[tokio::test]
    async fn a_valid_set_is_reused_and_carries_its_token() {
        let calls = Arc::new(AtomicUsize::new(0));
        let p = provider(&calls, 3600, usize::MAX);
        let a = p.get().await.unwrap();
        let b = p.get().await.unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(a.security_token().unwrap().expose(), "token0");
        assert!(!format!("{p:?} {a:?}").contains("secret0"));
    }

    #[tokio::test]
    async fn a_refused_set_is_replaced_once() {
        let calls = Arc::new(AtomicUsize::new(0));
        let p = provider(&calls, 3600, usize::MAX);
        let a = p.get().await.unwrap();
        assert!(p.renew_after_refusal(&a).await);
        let b = p.get().await.unwrap();
        assert_eq!(b.access_key_id(), "STS.key1");
        // The old set refused again: the new one is already current, no third fetch.
        assert!(p.renew_after_refusal(&a).await);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let fixed = CredentialProvider::from(Credentials::new(
            "id",
            Secret::from("s".to_string()),
            None,
            "t",
        ));
        let c = fixed.get().await.unwrap();
        assert!(!fixed.renew_after_refusal(&c).await);
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_valid_set_and_an_expired_one_is_an_error() {
        let calls = Arc::new(AtomicUsize::new(0));
        let p = provider(&calls, 3600, 1);
        let a = p.get().await.unwrap();
        assert!(!p.renew_after_refusal(&a).await);
        assert!(Arc::ptr_eq(&p.get().await.unwrap(), &a));
        // Lifetime below the margin: refused as unusable.
        let calls = Arc::new(AtomicUsize::new(0));
        let short = provider(&calls, 1, usize::MAX);
        let err = short.get().await.unwrap_err();
        assert_eq!(err.kind(), "fetch");
        assert!(err.to_string().contains("clock"), "{err}");
    }

    #[tokio::test]
    async fn the_first_working_fetcher_is_kept() {
        let down = Arc::new(AtomicUsize::new(0));
        let up = Arc::new(AtomicUsize::new(0));
        let fetchers: Vec<Box<dyn Fetch>> = vec![
            Box::new(Counting {
                calls: Arc::clone(&down),
                life: time::Duration::hours(1),
                fail_from: 0,
            }),
            Box::new(Counting {
                calls: Arc::clone(&up),
                life: time::Duration::hours(1),
                fail_from: usize::MAX,
            }),
        ];
        let p = CredentialProvider::temporary(fetchers, Source::Given, "chain".to_string());
        let a = p.get().await.unwrap();
        assert!(p.renew_after_refusal(&a).await);
        assert_eq!(
            down.load(Ordering::SeqCst),
            1,
            "the failed source is not asked again"
        );
        assert_eq!(up.load(Ordering::SeqCst), 2);
    }
}
