//! Measure: choosing each domain's lineage at SaaS scale (issue 10) — 100 000 managed
//! domains over 5 000 lineages of 20 names each (one lineage in ten has a wildcard name
//! instead of its first exact name, with a managed domain under it).
//!
//! "before": the linear rule planning used until the index (each domain compared with every
//! lineage's names, best by exact > wildcard, later notAfter, first id), on a sample of the
//! domains (all with `REFERENCE_DOMAINS=all`) and extrapolated. "after": the whole of
//! `plan::plan` (index build, lookups, batching) over every domain, best of 5; plus the
//! index alone. The two must pick the same lineage for every domain the reference ran on.
//!
//! Run: `cargo bench --bench cover` (`DOMAINS=N LINEAGES=M` to change the scale,
//! `REFERENCE_DOMAINS=N|all`, default 5000).

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use certrotd::cert::{self, Candidate, CoverIndex, Fingerprint};
use certrotd::plan::{self, PlanInput, PlanLineage};
use time::OffsetDateTime;
use time::macros::datetime;

const NAMES_PER_LINEAGE: usize = 20;
const NOW: OffsetDateTime = datetime!(2030-01-01 0:00 UTC);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Lineage names and the managed domains (one per name; `a.<base>` under a wildcard).
fn workload(lineages: usize) -> (Vec<Vec<String>>, Vec<String>) {
    let mut names = Vec::with_capacity(lineages);
    let mut domains = Vec::with_capacity(lineages * NAMES_PER_LINEAGE);
    for i in 0..lineages {
        let mut list = Vec::with_capacity(NAMES_PER_LINEAGE);
        for j in 0..NAMES_PER_LINEAGE {
            if j == 0 && i % 10 == 0 {
                list.push(format!("*.w{i}.example.net"));
                domains.push(format!("a.w{i}.example.net"));
            } else {
                let name = format!("d{j}.customer{i}.example.com");
                domains.push(name.clone());
                list.push(name);
            }
        }
        names.push(list);
    }
    (names, domains)
}

/// The linear rule, as planning applied it before the index.
fn reference_best(domain: &str, candidates: &[Candidate<'_>]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter_map(|(i, c)| cert::covers(c.names, domain).map(|m| (i, c, m)))
        .max_by_key(|(_, c, m)| (*m, c.not_after, Reverse(c.id)))
        .map(|(i, _, _)| i)
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let out = f();
        best = best.min(t.elapsed());
        last = Some(out);
    }
    // `runs` is at least 1, so `last` is set.
    (best, last.expect("at least one run"))
}

fn main() {
    let lineage_count = env_usize("LINEAGES", 5_000);
    let (names, domains) = workload(lineage_count);
    let domain_count = env_usize("DOMAINS", domains.len()).min(domains.len());
    let domains = &domains[..domain_count];
    let ids: Vec<String> = (0..lineage_count)
        .map(|i| format!("/etc/letsencrypt/live/c{i}"))
        .collect();
    let lineages: Vec<PlanLineage<'_>> = (0..lineage_count)
        .map(|i| {
            let mut fp = [0u8; 32];
            fp[..8].copy_from_slice(&(i as u64).to_be_bytes());
            PlanLineage {
                id: &ids[i],
                fingerprint: Fingerprint(fp),
                names: &names[i],
                not_before: NOW - time::Duration::days(10),
                not_after: NOW + time::Duration::days(80 - (i % 7) as i64),
            }
        })
        .collect();
    let deployed = BTreeMap::new();
    println!("cover: {domain_count} domains, {lineage_count} lineages x {NAMES_PER_LINEAGE} names");

    let input = PlanInput {
        domains,
        lineages: &lineages,
        deployed: &deployed,
        now: NOW,
        batch: 50,
        force: false,
    };
    let (plan_time, planned) = best_of(5, || plan::plan(&input));
    println!(
        "after:  plan::plan {:.3} s (best of 5): {} calls, {} uncovered",
        plan_time.as_secs_f64(),
        planned.calls(),
        planned.uncovered.len()
    );

    let candidates: Vec<Candidate<'_>> = lineages
        .iter()
        .map(|l| Candidate {
            id: l.id,
            names: l.names,
            not_after: l.not_after,
        })
        .collect();
    let (index_time, found) = best_of(5, || {
        let index = CoverIndex::new(&candidates);
        domains.iter().filter(|d| index.best(d).is_some()).count()
    });
    println!(
        "after:  index build + {domain_count} lookups {:.3} s (best of 5), {found} covered",
        index_time.as_secs_f64()
    );

    let sample = match std::env::var("REFERENCE_DOMAINS").as_deref() {
        Ok("all") => domain_count,
        _ => env_usize("REFERENCE_DOMAINS", 5_000).min(domain_count),
    };
    // An even spread over the domains, so the sample is not one end of the lineage list.
    let step = (domain_count / sample.max(1)).max(1);
    let sampled: Vec<&String> = domains.iter().step_by(step).take(sample).collect();
    let t = Instant::now();
    let reference: Vec<Option<usize>> = sampled
        .iter()
        .map(|d| reference_best(d, &candidates))
        .collect();
    let reference_time = t.elapsed();
    let per_domain = reference_time.as_secs_f64() / sampled.len().max(1) as f64;
    println!(
        "before: linear rule on {} domains {:.3} s -> {:.1} s for {domain_count} domains{}",
        sampled.len(),
        reference_time.as_secs_f64(),
        per_domain * domain_count as f64,
        if sampled.len() == domain_count {
            ""
        } else {
            " (extrapolated)"
        }
    );

    let mismatches = sampled
        .iter()
        .zip(&reference)
        .filter(|(d, r)| planned.targets.get(d.as_str()).copied() != **r)
        .count();
    println!(
        "agreement: {} of {} sampled domains get the same lineage",
        sampled.len() - mismatches,
        sampled.len()
    );
    if mismatches > 0 {
        eprintln!("cover: the index and the linear rule disagree on {mismatches} domains");
        std::process::exit(1);
    }
    println!(
        "summary: before {:.1} s (linear, {}), after {:.3} s (plan::plan), {:.0}x",
        per_domain * domain_count as f64,
        if sampled.len() == domain_count {
            "measured"
        } else {
            "extrapolated"
        },
        plan_time.as_secs_f64(),
        per_domain * domain_count as f64 / plan_time.as_secs_f64().max(1e-9)
    );
}
