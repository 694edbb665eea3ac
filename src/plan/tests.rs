use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use time::OffsetDateTime;
use time::macros::datetime;

use super::*;

const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

fn fp(n: u8) -> Fingerprint {
    let mut b = [0u8; 32];
    b[0] = n;
    b[31] = n;
    Fingerprint(b)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Owned lineage data the tests borrow `PlanLineage`s from.
#[derive(Clone, Debug)]
struct L {
    id: String,
    fp: Fingerprint,
    names: Vec<String>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

fn lin(id: &str, n: u8, names: &[&str], not_after: OffsetDateTime) -> L {
    L {
        id: id.to_string(),
        fp: fp(n),
        names: strings(names),
        not_before: datetime!(2026-01-01 0:00 UTC),
        not_after,
    }
}

fn view(ls: &[L]) -> Vec<PlanLineage<'_>> {
    ls.iter()
        .map(|l| PlanLineage {
            id: &l.id,
            fingerprint: l.fp,
            names: &l.names,
            not_before: l.not_before,
            not_after: l.not_after,
        })
        .collect()
}

fn run(
    domains: &[String],
    ls: &[L],
    deployed: &BTreeMap<String, Fingerprint>,
    batch: usize,
    force: bool,
) -> Plan {
    let v = view(ls);
    plan(&PlanInput {
        domains,
        lineages: &v,
        deployed,
        now: NOW,
        batch,
        force,
    })
}

fn none() -> BTreeMap<String, Fingerprint> {
    BTreeMap::new()
}

fn example_121() -> (Vec<String>, Vec<L>) {
    let mut domains = strings(&["example.com", ".example.com"]);
    domains.extend((0..119).map(|i| format!("d{i:03}.example.com")));
    let ls = vec![lin(
        "/etc/letsencrypt/live/example.com",
        7,
        &["*.example.com", "example.com"],
        datetime!(2026-08-01 0:00 UTC),
    )];
    (domains, ls)
}

#[test]
fn wildcard_plus_apex_121_domains_at_50_is_50_50_21() {
    let (domains, ls) = example_121();
    let p = run(&domains, &ls, &none(), 50, false);
    let sizes: Vec<usize> = p.batches.iter().map(|b| b.domains.len()).collect();
    assert_eq!(sizes, vec![50, 50, 21]);
    assert!(p.batches.iter().all(|b| b.lineage == 0));
    let all: Vec<String> = p.batches.iter().flat_map(|b| b.domains.clone()).collect();
    let mut sorted = domains.clone();
    sorted.sort();
    assert_eq!(all, sorted, "every domain once, sorted across batches");
    assert!(p.uncovered.is_empty() && p.up_to_date.is_empty());
    assert_eq!(p.calls(), 3);
    assert_eq!(p.pending(), 121);
}

#[test]
fn second_pass_after_recording_everything_makes_no_call_and_force_makes_them_again() {
    let (domains, ls) = example_121();
    let deployed: BTreeMap<String, Fingerprint> =
        domains.iter().map(|d| (d.clone(), ls[0].fp)).collect();
    let p = run(&domains, &ls, &deployed, 50, false);
    assert!(p.batches.is_empty());
    assert_eq!(p.up_to_date.len(), 121);
    let forced = run(&domains, &ls, &deployed, 50, true);
    let sizes: Vec<usize> = forced.batches.iter().map(|b| b.domains.len()).collect();
    assert_eq!(sizes, vec![50, 50, 21]);
    assert!(forced.up_to_date.is_empty());
}

#[test]
fn up_to_date_only_when_deployed_fingerprint_equals_target() {
    let ls = vec![lin(
        "/l/a",
        1,
        &["a.example.com", "b.example.com", "c.example.com"],
        datetime!(2026-09-01 0:00 UTC),
    )];
    let domains = strings(&["a.example.com", "b.example.com", "c.example.com"]);
    let mut deployed = none();
    deployed.insert("a.example.com".into(), fp(1)); // current
    deployed.insert("b.example.com".into(), fp(2)); // an older certificate
    let p = run(&domains, &ls, &deployed, 10, false);
    assert_eq!(p.up_to_date, strings(&["a.example.com"]));
    assert_eq!(p.batches.len(), 1);
    assert_eq!(
        p.batches[0].domains,
        strings(&["b.example.com", "c.example.com"])
    );
    assert_eq!(p.targets.len(), 3);
}

#[test]
fn force_pushes_every_covered_domain_but_never_uncovered_ones() {
    let ls = vec![lin(
        "/l/a",
        1,
        &["a.example.com"],
        datetime!(2026-09-01 0:00 UTC),
    )];
    let domains = strings(&["a.example.com", "zzz.other.org"]);
    let mut deployed = none();
    deployed.insert("a.example.com".into(), fp(1));
    let p = run(&domains, &ls, &deployed, 10, true);
    assert_eq!(p.batches.len(), 1);
    assert_eq!(p.batches[0].domains, strings(&["a.example.com"]));
    assert_eq!(p.uncovered, strings(&["zzz.other.org"]));
    assert!(p.up_to_date.is_empty());
}

#[test]
fn uncovered_when_no_lineage_covers_or_the_only_one_is_outside_its_validity() {
    let expired = lin(
        "/l/old",
        1,
        &["old.example.com"],
        datetime!(2026-05-01 0:00 UTC),
    );
    let mut future = lin(
        "/l/new",
        2,
        &["new.example.com"],
        datetime!(2027-01-01 0:00 UTC),
    );
    future.not_before = datetime!(2026-07-01 0:00 UTC);
    let ok = lin(
        "/l/ok",
        3,
        &["*.example.com"],
        datetime!(2026-09-01 0:00 UTC),
    );
    let domains = strings(&[
        "old.example.com",
        "new.example.com",
        "a.b.example.com",
        "example.com",
        "x.example.com",
    ]);
    let p = run(&domains, &[expired, future, ok], &none(), 10, false);
    // old/new fall back to the wildcard; the others are not covered by anything valid.
    assert_eq!(p.uncovered, strings(&["a.b.example.com", "example.com"]));
    let pushed: Vec<&str> = p
        .batches
        .iter()
        .flat_map(|b| b.domains.iter())
        .map(|s| s.as_str())
        .collect();
    assert_eq!(
        pushed,
        vec!["new.example.com", "old.example.com", "x.example.com"]
    );
    assert!(p.batches.iter().all(|b| b.lineage == 2));

    // Without the wildcard, the expired and not-yet-valid lineages serve nothing.
    let expired = lin(
        "/l/old",
        1,
        &["old.example.com"],
        datetime!(2026-05-01 0:00 UTC),
    );
    let mut future = lin(
        "/l/new",
        2,
        &["new.example.com"],
        datetime!(2027-01-01 0:00 UTC),
    );
    future.not_before = datetime!(2026-07-01 0:00 UTC);
    let p = run(&domains[..2], &[expired, future], &none(), 10, false);
    assert_eq!(
        p.uncovered,
        strings(&["new.example.com", "old.example.com"])
    );
    assert!(p.batches.is_empty());
}

#[test]
fn validity_bounds_are_inclusive_like_cert_check_time() {
    let mut starts_now = lin(
        "/l/a",
        1,
        &["a.example.com"],
        NOW + time::Duration::days(90),
    );
    starts_now.not_before = NOW;
    let ends_now = lin("/l/b", 2, &["b.example.com"], NOW);
    let mut one_second_early = lin(
        "/l/c",
        3,
        &["c.example.com"],
        NOW + time::Duration::days(90),
    );
    one_second_early.not_before = NOW + time::Duration::seconds(1);
    let one_second_late = lin(
        "/l/d",
        4,
        &["d.example.com"],
        NOW - time::Duration::seconds(1),
    );
    let domains = strings(&[
        "a.example.com",
        "b.example.com",
        "c.example.com",
        "d.example.com",
    ]);
    let p = run(
        &domains,
        &[starts_now, ends_now, one_second_early, one_second_late],
        &none(),
        10,
        false,
    );
    assert_eq!(
        p.targets.keys().collect::<Vec<_>>(),
        vec!["a.example.com", "b.example.com"]
    );
    assert_eq!(p.uncovered, strings(&["c.example.com", "d.example.com"]));
}

#[test]
fn the_same_certificate_in_two_lineages_is_one_group() {
    // E.g. a certbot lineage and a Kubernetes secret mirroring it: same leaf, same names.
    let a = lin(
        "/z/certbot",
        5,
        &["*.example.com", "example.com"],
        NOW + time::Duration::days(60),
    );
    let mut b = a.clone();
    b.id = "/a/k8s-secret".into();
    let domains: Vec<String> = (0..15).map(|i| format!("d{i:02}.example.com")).collect();
    let p = run(&domains, &[a, b], &none(), 10, false);
    let sizes: Vec<(usize, usize)> = p
        .batches
        .iter()
        .map(|x| (x.lineage, x.domains.len()))
        .collect();
    assert_eq!(
        sizes,
        vec![(1, 10), (1, 5)],
        "floor: ceil(15/10) calls, first id"
    );
}

#[test]
fn exact_beats_wildcard_then_later_not_after_then_first_id() {
    let ls = vec![
        lin(
            "/l/wild-late",
            1,
            &["*.example.com"],
            datetime!(2026-12-01 0:00 UTC),
        ),
        lin(
            "/l/www",
            2,
            &["www.example.com"],
            datetime!(2026-07-01 0:00 UTC),
        ),
        lin(
            "/l/wild-early",
            3,
            &["*.example.com"],
            datetime!(2026-08-01 0:00 UTC),
        ),
        lin(
            "/l/b-api",
            4,
            &["api.example.com"],
            datetime!(2026-09-01 0:00 UTC),
        ),
        lin(
            "/l/a-api",
            5,
            &["api.example.com"],
            datetime!(2026-09-01 0:00 UTC),
        ),
    ];
    let domains = strings(&[
        "www.example.com",
        "cdn.example.com",
        ".example.com",
        "api.example.com",
    ]);
    let p = run(&domains, &ls, &none(), 10, false);
    assert_eq!(
        p.targets["www.example.com"], 1,
        "exact beats a later wildcard"
    );
    assert_eq!(p.targets["cdn.example.com"], 0, "later notAfter wins");
    assert_eq!(
        p.targets[".example.com"], 0,
        "wildcard covers Alibaba's wildcard domain"
    );
    assert_eq!(
        p.targets["api.example.com"], 4,
        "lexically first id breaks the tie"
    );
    // Batches ordered by lineage id.
    let ids: Vec<&str> = p
        .batches
        .iter()
        .map(|b| ls[b.lineage].id.as_str())
        .collect();
    assert_eq!(ids, vec!["/l/a-api", "/l/wild-late", "/l/www"]);
}

#[test]
fn batch_zero_is_treated_as_one_and_duplicates_are_ignored() {
    let ls = vec![lin(
        "/l/a",
        1,
        &["*.example.com"],
        datetime!(2026-09-01 0:00 UTC),
    )];
    let domains = strings(&["b.example.com", "a.example.com", "b.example.com"]);
    let p = run(&domains, &ls, &none(), 0, false);
    let got: Vec<Vec<String>> = p.batches.iter().map(|b| b.domains.clone()).collect();
    assert_eq!(
        got,
        vec![strings(&["a.example.com"]), strings(&["b.example.com"])]
    );
}

#[test]
fn batches_carry_the_certificate_name() {
    let ls = vec![lin(
        "/l/a",
        9,
        &["*.example.com", "example.com"],
        datetime!(2027-02-27 8:00 UTC),
    )];
    let p = run(&strings(&["x.example.com"]), &ls, &none(), 10, false);
    assert_eq!(
        p.batches[0].cert_name,
        cert_name(&ls[0].names, ls[0].not_after, &ls[0].fp)
    );
    assert!(
        p.batches[0]
            .cert_name
            .starts_with("wildcard.example.com-20270227-09000000")
    );
}

#[test]
fn describe_lists_each_certificate_with_domains_and_calls() {
    let (mut domains, mut ls) = example_121();
    ls.push(lin(
        "/l/other",
        8,
        &["other.org"],
        datetime!(2026-09-01 0:00 UTC),
    ));
    domains.push("other.org".into());
    domains.push("nothing.net".into());
    let v = view(&ls);
    let p = plan(&PlanInput {
        domains: &domains,
        lineages: &v,
        deployed: &none(),
        now: NOW,
        batch: 50,
        force: false,
    });
    let summary = p.by_certificate();
    assert_eq!(summary.len(), 2);
    assert_eq!((summary[0].domains.len(), summary[0].calls), (121, 3));
    assert_eq!((summary[1].domains.len(), summary[1].calls), (1, 1));
    let text = p.describe(&v);
    assert!(
        text.starts_with("plan: 4 call(s) for 122 domain(s); 0 up to date; 1 without"),
        "{text}"
    );
    assert!(
        text.contains("(/etc/letsencrypt/live/example.com): 121 domain(s) in 3 call(s)"),
        "{text}"
    );
    assert!(text.contains(&summary[1].cert_name), "{text}");
    assert!(text.contains("d118.example.com"), "{text}");
    assert!(
        text.contains("no valid certificate covers:\n    nothing.net\n"),
        "{text}"
    );
    // Domain lists are wrapped (headers carry a path and may be longer).
    let lists = text.lines().filter(|l| l.starts_with("    "));
    assert!(lists.clone().count() > 10, "{text}");
    assert!(lists.clone().all(|l| l.len() <= 100), "{text}");
}

// ---- determinism ----

#[test]
fn shuffled_inputs_give_the_same_plan() {
    let (mut domains, mut ls) = example_121();
    ls.push(lin(
        "/l/www",
        2,
        &["www.example.com"],
        datetime!(2026-07-01 0:00 UTC),
    ));
    ls.push(lin(
        "/l/other",
        3,
        &["*.other.org"],
        datetime!(2026-07-01 0:00 UTC),
    ));
    domains.extend(strings(&[
        "www.example.com",
        "a.other.org",
        "b.other.org",
        "none.net",
    ]));
    let mut deployed = none();
    deployed.insert("d005.example.com".into(), ls[0].fp);
    let base = by_id(&run(&domains, &ls, &deployed, 7, false), &ls);
    let mut rng_state = 0x2545_f491_u64;
    for _ in 0..20 {
        shuffle(&mut domains, &mut rng_state);
        shuffle(&mut ls, &mut rng_state);
        assert_eq!(by_id(&run(&domains, &ls, &deployed, 7, false), &ls), base);
    }
}

/// (lineage id, cert name, domains) per batch, then uncovered, then up to date.
type IdPlan = (Vec<(String, String, Vec<String>)>, Vec<String>, Vec<String>);

/// A plan with lineage indices replaced by ids (indices change when lineages are shuffled).
fn by_id(p: &Plan, ls: &[L]) -> IdPlan {
    let batches = p
        .batches
        .iter()
        .map(|b| {
            (
                ls[b.lineage].id.clone(),
                b.cert_name.clone(),
                b.domains.clone(),
            )
        })
        .collect();
    (batches, p.uncovered.clone(), p.up_to_date.clone())
}

fn shuffle<T>(v: &mut [T], state: &mut u64) {
    for i in (1..v.len()).rev() {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let j = (*state % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

// ---- the floor property ----

fn arb_case() -> impl Strategy<
    Value = (
        Vec<String>,
        Vec<L>,
        BTreeMap<String, Fingerprint>,
        usize,
        bool,
    ),
> {
    let zones = ["example.com", "example.net", "a.example.com"];
    let label = prop::sample::select(vec!["www", "api", "cdn", "img", "a", "b", "c", "x1", "x2"]);
    let domain = (
        prop::sample::select(zones.to_vec()),
        prop::option::of(label),
        any::<bool>(),
    )
        .prop_map(|(zone, label, dot)| match (label, dot) {
            (Some(l), _) => format!("{l}.{zone}"),
            (None, true) => format!(".{zone}"),
            (None, false) => zone.to_string(),
        });
    let name = (
        prop::sample::select(zones.to_vec()),
        prop::option::of(prop::sample::select(vec!["*", "www", "api", "img"])),
    )
        .prop_map(|(zone, l)| l.map_or(zone.to_string(), |l| format!("{l}.{zone}")));
    let lineage = (prop::collection::vec(name, 1..4), 0u8..20, 0i64..200);
    (
        prop::collection::vec(domain, 0..80),
        prop::collection::vec(lineage, 0..6),
        prop::collection::vec((0usize..80, 0u8..20), 0..40),
        1usize..60,
        any::<bool>(),
    )
        .prop_map(|(domains, lins, dep, batch, force)| {
            let ls: Vec<L> = lins
                .into_iter()
                .enumerate()
                .map(|(i, (names, n, days))| L {
                    id: format!("/l/{i}"),
                    fp: fp(n.wrapping_add(i as u8 * 20)),
                    names,
                    not_before: NOW - time::Duration::days(30),
                    not_after: NOW + time::Duration::days(days - 20),
                })
                .collect();
            let deployed = dep
                .into_iter()
                .filter_map(|(i, n)| domains.get(i).map(|d| (d.clone(), fp(n))))
                .collect();
            (domains, ls, deployed, batch, force)
        })
}

proptest! {
    #[test]
    fn calls_are_the_floor_and_each_domain_lands_once(
        (domains, ls, deployed, batch, force) in arb_case()
    ) {
        let p = run(&domains, &ls, &deployed, batch, force);
        let v = view(&ls);
        let valid: Vec<usize> = (0..ls.len()).filter(|&i| ls[i].not_after >= NOW).collect();
        let cands: Vec<Candidate<'_>> = valid.iter().map(|&i| candidate(&v[i])).collect();
        let unique: BTreeSet<&String> = domains.iter().collect();

        // Independently: each domain's target, and whether it is out of date.
        let mut per_lineage: BTreeMap<usize, usize> = BTreeMap::new();
        let mut out_of_date = BTreeSet::new();
        for d in &unique {
            if let Some(best) = cert::best_for(d, &cands) {
                let t = valid[best];
                prop_assert_eq!(p.targets.get(*d), Some(&t));
                if force || deployed.get(*d) != Some(&ls[t].fp) {
                    *per_lineage.entry(t).or_default() += 1;
                    out_of_date.insert((*d).clone());
                }
            } else {
                prop_assert!(p.uncovered.contains(d));
            }
        }
        let floor: usize = per_lineage.values().map(|n| n.div_ceil(batch)).sum();
        prop_assert_eq!(p.calls(), floor);

        let mut seen = BTreeSet::new();
        for b in &p.batches {
            prop_assert!(!b.domains.is_empty() && b.domains.len() <= batch);
            prop_assert!(b.domains.windows(2).all(|w| w[0] < w[1]));
            for d in &b.domains {
                prop_assert!(seen.insert(d.clone()), "{} in two batches", d);
                prop_assert!(cert::covers(&ls[b.lineage].names, d).is_some());
            }
        }
        prop_assert_eq!(&seen, &out_of_date);
        // Every managed domain is in exactly one of the three outcomes.
        let total = seen.len() + p.uncovered.len() + p.up_to_date.len();
        prop_assert_eq!(total, unique.len());
        // Batch order: (lineage id, first domain).
        let keys: Vec<(&str, &String)> =
            p.batches.iter().map(|b| (ls[b.lineage].id.as_str(), &b.domains[0])).collect();
        prop_assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }
}

// ---- CertName ----

fn name_ok(n: &str) -> bool {
    n.len() <= CERT_NAME_MAX
        && !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[test]
fn cert_name_is_readable_and_ends_with_date_and_fingerprint() {
    let f = Fingerprint::from_hex(&format!("3f9a1c2b7d10e4f5{}", "0".repeat(48))).unwrap();
    let n = cert_name(
        &strings(&["*.example.com", "example.com"]),
        datetime!(2027-02-27 23:00 UTC),
        &f,
    );
    assert_eq!(n, "wildcard.example.com-20270227-3f9a1c2b7d10e4f5");
    let n = cert_name(
        &strings(&["www.example.com"]),
        datetime!(2027-02-27 23:00 UTC),
        &f,
    );
    assert_eq!(n, "www.example.com-20270227-3f9a1c2b7d10e4f5");
}

#[test]
fn cert_name_uses_the_utc_date() {
    let local = datetime!(2027-02-28 01:00 +03:00); // 2027-02-27 22:00 UTC
    let n = cert_name(&strings(&["a.org"]), local, &fp(1));
    assert!(n.contains("-20270227-"), "{n}");
}

#[test]
fn cert_name_sanitises_and_truncates_only_the_readable_part() {
    let long = format!("{}.example.com", "a".repeat(300));
    let f = fp(0xab);
    let n = cert_name(&[long], datetime!(2027-02-27 0:00 UTC), &f);
    assert_eq!(n.len(), CERT_NAME_MAX);
    assert!(name_ok(&n));
    assert!(
        n.ends_with(&format!("-20270227-{}", &f.hex()[..NAME_FINGERPRINT_HEX])),
        "{n}"
    );

    let odd = cert_name(
        &strings(&["bücher.ex ample/com"]),
        datetime!(2027-02-27 0:00 UTC),
        &f,
    );
    assert!(name_ok(&odd), "{odd}");
    assert!(odd.starts_with("b_cher.ex_ample_com-"), "{odd}");

    let empty = cert_name(&[], datetime!(2027-02-27 0:00 UTC), &f);
    assert!(
        name_ok(&empty) && empty.starts_with("cert-20270227-"),
        "{empty}"
    );
}

proptest! {
    #[test]
    fn cert_name_rules_hold_for_any_input(
        names in prop::collection::vec("\\PC{0,200}", 0..3),
        secs in 0i64..253_402_300_799,
        a in any::<[u8; 32]>(),
        b in any::<[u8; 32]>(),
    ) {
        let at = OffsetDateTime::from_unix_timestamp(secs).unwrap();
        let (fa, fb) = (Fingerprint(a), Fingerprint(b));
        let na = cert_name(&names, at, &fa);
        prop_assert!(name_ok(&na), "{}", na);
        prop_assert_eq!(&na, &cert_name(&names, at, &fa), "stable");
        prop_assert!(na.ends_with(&fa.hex()[..NAME_FINGERPRINT_HEX]));
        if a[..NAME_FINGERPRINT_HEX / 2] != b[..NAME_FINGERPRINT_HEX / 2] {
            prop_assert_ne!(&na, &cert_name(&names, at, &fb), "different certificates, different names");
        }
    }
}

#[test]
fn rebatch_cuts_each_batch_by_route_and_size() {
    let batch = |domains: &[&str]| Batch {
        lineage: 0,
        cert_name: "n".to_string(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
    };
    let mut plan = Plan {
        batches: vec![batch(&["a", "e1", "b", "e2", "c"]), batch(&["d"])],
        ..Plan::default()
    };
    // Names starting with `e` go to group 2, one per call; the rest to group 0, two a call.
    plan.rebatch(|d| if d.starts_with('e') { (2, 1) } else { (0, 2) });
    let shape: Vec<Vec<String>> = plan.batches.iter().map(|b| b.domains.clone()).collect();
    assert_eq!(
        shape,
        [vec!["a", "b"], vec!["c"], vec!["e1"], vec!["e2"], vec!["d"]]
            .iter()
            .map(|v| v.iter().map(|d| d.to_string()).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    );
    assert_eq!(plan.calls(), 5);
    assert_eq!(plan.pending(), 6);
}
