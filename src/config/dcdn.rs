//! The `[dcdn]` section: DCDN (Edge Security Acceleration) domains, served by
//! `SetDcdnDomainSSLCertificate` on `endpoint`. Keys as `[cdn]` (`domains`, `domains_file`,
//! same rules) plus `endpoint` (`https://dcdn.aliyuncs.com` by default, the
//! `aliyun.endpoint` rule).
//!
//! Pure, like the rest of the walk. Invariant: a domain is managed under one product only;
//! one listed under both `[cdn]` and `[dcdn]` is a problem located where `[dcdn]` lists it.

use super::walk::{Ctx, Managed, Section, managed};
use super::{DcdnSettings, endpoint};

/// The keys `[dcdn]` knows.
pub(super) const KEYS: &[&str] = &["endpoint", "domains", "domains_file"];
/// Alibaba's DCDN API endpoint.
pub(crate) const DEFAULT_ENDPOINT: &str = "https://dcdn.aliyuncs.com";

/// `[dcdn]`; `cdn` is what `[cdn]` manages (when it was valid), to refuse domains under both.
pub(super) fn dcdn(
    ctx: &mut Ctx<'_>,
    s: &Section<'_, '_>,
    cdn: Option<&Managed>,
) -> Option<DcdnSettings> {
    let endpoint = endpoint_of(ctx, s);
    let managed = managed(ctx, s)?;
    let mut ok = true;
    if let Some(cdn) = cdn {
        for (domain, listed) in &managed.domains {
            if cdn.domains.contains_key(domain) {
                let message = format!(
                    "{domain} is listed under both [cdn] and [dcdn]; a domain belongs to one \
                     product: remove it from the section it is not served by"
                );
                ctx.problem_at(listed, "dcdn.domains", message);
                ok = false;
            }
        }
    }
    let endpoint = endpoint?;
    ok.then(|| DcdnSettings {
        endpoint,
        domains: managed.domains.into_keys().collect(),
        domains_file: managed.domains_file,
    })
}

fn endpoint_of(ctx: &mut Ctx<'_>, s: &Section<'_, '_>) -> Option<String> {
    let Some(raw) = s.string(ctx, "endpoint") else {
        return s
            .value("endpoint")
            .is_none()
            .then(|| DEFAULT_ENDPOINT.to_string());
    };
    match endpoint::check(raw.get_ref()) {
        Ok(e) => Some(e),
        Err(why) => {
            let why = why.replace(endpoint::DEFAULT, DEFAULT_ENDPOINT);
            let message = format!("`dcdn.endpoint` = {:?}: {why}", raw.get_ref());
            ctx.problem(&raw.span(), "dcdn.endpoint", message);
            None
        }
    }
}
