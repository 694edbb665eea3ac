//! `certrotd check --online`: one read-only look at the account, after the offline report.
//!
//! Lists the account's domains of each product certrotd manages domains in
//! (`DescribeUserDomains` / `DescribeDcdnUserDomains`, pages of 500, at most
//! `read_requests_per_second` calls in any rolling second) and reports, per managed domain:
//! missing (a problem), offline (a warning: pushes to it are refused), HTTPS on (certrotd
//! replaces its certificate) or off (certrotd turns HTTPS on with its certificate). A refused
//! AccessKey is reported here, before any push. The account's own domains that a valid local
//! certificate covers but that are not managed are listed as a hint.
//!
//! Only Describe* calls are sent. The report is built by a pure function ([`report`]) of
//! what the calls returned; every text from the API is escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use time::OffsetDateTime;

use crate::aliyun::cdn::{self, CDN_PER_DOMAIN, DCDN};
use crate::aliyun::client::{MAX_PAGE_SIZE, UserDomain, UserDomainsRequest};
use crate::aliyun::{ApiError, Class, Client};
use crate::cert::{Candidate, CoverIndex};
use crate::config::{Product, Settings};
use crate::push::{RATE_WINDOW, RateLimiter};
use crate::source::Lineage;
use crate::untrusted;

/// Pages read per product at most (5 million domains).
const MAX_PAGES: u64 = 10_000;

/// What listing one product's domains gave.
pub(super) type Listing = Result<Vec<UserDomain>, ApiError>;

/// Looks at the account and reports; `false` when `check` must exit 1 (a managed domain
/// missing, the credentials refused, or the account unreadable).
pub(super) fn run(
    settings: &Settings,
    lineages: &[Lineage],
    now: OffsetDateTime,
) -> (String, bool) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return (format!("\nOnline: cannot start ({e})\n"), false),
    };
    let targets = match cdn::connect_all(settings) {
        Ok(t) => t,
        Err(e) => {
            let text = format!(
                "\nOnline: cannot reach the account: {}\n",
                untrusted::escape(&e.to_string())
            );
            return (text, false);
        }
    };
    let limiter = RateLimiter::with_window(settings.aliyun.read_requests_per_second, RATE_WINDOW);
    let mut listings = Vec::new();
    for (product, index) in [(Product::Cdn, CDN_PER_DOMAIN), (Product::Dcdn, DCDN)] {
        let managed = match product {
            Product::Cdn => &settings.cdn.domains,
            Product::Dcdn => &settings.dcdn.domains,
        };
        // The CDN is always listed (for the hints); DCDN only when certrotd manages some.
        if product == Product::Dcdn && managed.is_empty() {
            continue;
        }
        let listing = runtime.block_on(list(targets[index].client(), &limiter));
        let stop = matches!(&listing, Err(e) if e.class() == Class::Credentials);
        listings.push((product, listing));
        if stop {
            break;
        }
    }
    let covered = covering(lineages, now);
    report(&settings.managed(), &listings, &covered)
}

/// Every domain of one product's account, page by page.
async fn list(client: &Client, limiter: &RateLimiter) -> Listing {
    let mut out = Vec::new();
    for page_number in 1..=MAX_PAGES {
        limiter.acquire().await;
        let req = UserDomainsRequest {
            page_size: MAX_PAGE_SIZE,
            page_number,
        };
        let page = client.describe_user_domains_page(req).await?;
        let got = page.domains.len() as u64;
        out.extend(page.domains);
        let done = match page.total_count {
            0 => got < MAX_PAGE_SIZE,
            total => out.len() as u64 >= total,
        };
        if got == 0 || done {
            break;
        }
    }
    Ok(out)
}

/// The valid lineages at `now`, as (id, names), for the hints.
fn covering(
    lineages: &[Lineage],
    now: OffsetDateTime,
) -> Vec<(String, Vec<String>, OffsetDateTime)> {
    lineages
        .iter()
        .filter_map(|l| {
            let c = l.valid_at(now).ok()?;
            Some((l.id.clone(), c.names.clone(), c.not_after))
        })
        .collect()
}

/// The online part of the report and whether it found no problem (pure).
pub(super) fn report(
    managed: &[(String, Product)],
    listings: &[(Product, Listing)],
    covering: &[(String, Vec<String>, OffsetDateTime)],
) -> (String, bool) {
    let mut out = String::from("\nOnline (read-only look at the account):\n");
    let mut ok = true;
    let mut known: BTreeMap<(Product, String), &UserDomain> = BTreeMap::new();
    let mut listed: Vec<Product> = Vec::new();
    for (product, listing) in listings {
        match listing {
            Ok(domains) => {
                let _ = writeln!(
                    out,
                    "  {}: the account has {} domain(s); the credentials work",
                    product.label(),
                    domains.len()
                );
                for d in domains {
                    known.insert((*product, d.domain.trim().to_ascii_lowercase()), d);
                }
                listed.push(*product);
            }
            Err(e) => {
                ok = false;
                let what = if e.class() == Class::Credentials {
                    "the credentials were refused"
                } else {
                    "cannot list the domains"
                };
                let _ = writeln!(
                    out,
                    "  PROBLEM {}: {what}: {}",
                    product.label(),
                    untrusted::escape(&e.to_string())
                );
            }
        }
    }
    for (domain, product) in managed {
        if !listed.contains(product) {
            continue;
        }
        let label = product.label();
        let line = match known.get(&(*product, domain.clone())) {
            None => {
                ok = false;
                format!(
                    "  MISSING {domain} ({label}): not a domain of this account's {label}; add it in \
                     the console or remove it from [{label}] domains"
                )
            }
            Some(d) if !d.status.eq_ignore_ascii_case("online") => format!(
                "  OFFLINE {domain} ({label}): status {}; pushes to it are refused until it is \
                 online again",
                untrusted::escape(&d.status)
            ),
            Some(d) if d.ssl_protocol.eq_ignore_ascii_case("on") => format!(
                "  ok {domain} ({label}): online, HTTPS on; certrotd replaces its certificate"
            ),
            Some(_) => format!(
                "  ok {domain} ({label}): online, HTTPS off; certrotd will turn HTTPS on with its \
                 certificate"
            ),
        };
        let _ = writeln!(out, "{line}");
    }
    hints(&mut out, managed, &known, covering);
    (out, ok)
}

/// Account domains a valid local certificate covers but that are not managed.
fn hints(
    out: &mut String,
    managed: &[(String, Product)],
    known: &BTreeMap<(Product, String), &UserDomain>,
    covering: &[(String, Vec<String>, OffsetDateTime)],
) {
    let candidates: Vec<Candidate<'_>> = covering
        .iter()
        .map(|(id, names, not_after)| Candidate {
            id,
            names,
            not_after: *not_after,
        })
        .collect();
    let cover = CoverIndex::new(&candidates);
    for (product, domain) in known.keys() {
        if managed.iter().any(|(d, _)| d == domain) {
            continue;
        }
        if let Some((i, _)) = cover.best(domain)
            && let Some((id, _, _)) = covering.get(i)
        {
            let label = product.label();
            let _ = writeln!(
                out,
                "  hint: {} ({label}) is covered by {} but not managed; add it to [{label}] domains \
                 to keep it in step",
                untrusted::escape(domain),
                untrusted::escape(id)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(name: &str, status: &str, ssl: &str) -> UserDomain {
        UserDomain {
            domain: name.to_string(),
            status: status.to_string(),
            ssl_protocol: ssl.to_string(),
        }
    }

    #[test]
    fn each_managed_domain_is_named_with_what_will_change() {
        let managed = vec![
            ("a.example.com".to_string(), Product::Cdn),
            ("b.example.com".to_string(), Product::Cdn),
            ("c.example.com".to_string(), Product::Cdn),
            ("d.example.com".to_string(), Product::Dcdn),
        ];
        let listings = vec![
            (
                Product::Cdn,
                Ok(vec![
                    domain("a.example.com", "online", "on"),
                    domain("b.example.com", "offline", "off"),
                    domain("www.example.com", "online", "off"),
                    domain("other.test", "online", "off"),
                ]),
            ),
            (
                Product::Dcdn,
                Ok(vec![domain("d.example.com", "online", "off")]),
            ),
        ];
        let covering = vec![(
            "live/example.com".to_string(),
            vec!["*.example.com".to_string()],
            OffsetDateTime::UNIX_EPOCH,
        )];
        let (text, ok) = report(&managed, &listings, &covering);
        assert!(!ok, "c.example.com is missing: {text}");
        assert!(
            text.contains("ok a.example.com (cdn): online, HTTPS on"),
            "{text}"
        );
        assert!(
            text.contains("OFFLINE b.example.com (cdn): status offline"),
            "{text}"
        );
        assert!(text.contains("MISSING c.example.com (cdn)"), "{text}");
        assert!(
            text.contains(
                "ok d.example.com (dcdn): online, HTTPS off; certrotd will turn HTTPS on"
            ),
            "{text}"
        );
        assert!(
            text.contains("hint: www.example.com (cdn) is covered by live/example.com"),
            "{text}"
        );
        assert!(!text.contains("other.test"), "{text}");
    }

    #[test]
    fn an_offline_domain_alone_is_not_a_problem() {
        let managed = vec![("b.example.com".to_string(), Product::Cdn)];
        let listings = vec![(
            Product::Cdn,
            Ok(vec![domain("b.example.com", "offline", "on")]),
        )];
        let (text, ok) = report(&managed, &listings, &[]);
        assert!(ok, "{text}");
        assert!(text.contains("OFFLINE b.example.com"), "{text}");
    }
}
