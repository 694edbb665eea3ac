use std::sync::Arc;

use time::Duration;
use time::macros::datetime;

use super::*;
use crate::testca::{Leaf, TestCa};

const NOW: OffsetDateTime = datetime!(2026-12-01 0:00 UTC);

fn lineage(id: &str, names: &[&str], from_days: i64, to_days: i64) -> ValidLineage {
    let ca = TestCa::new("alerts test CA").expect("a CA");
    let leaf = Leaf::new(
        names,
        NOW + Duration::days(from_days),
        NOW + Duration::days(to_days),
    );
    let issued = ca.issue(&leaf).expect("issued");
    let cert = crate::cert::parse(issued.fullchain_pem.as_bytes(), issued.key_pem.as_bytes())
        .expect("a certificate");
    ValidLineage::new(id, &Arc::new(cert))
}

fn targets(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(d, i)| (d.to_string(), *i)).collect()
}

struct Case {
    valid: Vec<ValidLineage>,
    targets: BTreeMap<String, usize>,
    before: BTreeMap<String, Fingerprint>,
    after: BTreeMap<String, Fingerprint>,
    failed: Vec<(String, String)>,
    invalid: Vec<(String, String)>,
}

impl Case {
    fn facts(&self) -> PassFacts<'_> {
        PassFacts {
            valid: &self.valid,
            targets: &self.targets,
            before: &self.before,
            after: &self.after,
            failed: &self.failed,
            invalid: &self.invalid,
            now: NOW,
        }
    }
}

fn case(valid: Vec<ValidLineage>, targets: BTreeMap<String, usize>) -> Case {
    Case {
        valid,
        targets,
        before: BTreeMap::new(),
        after: BTreeMap::new(),
        failed: Vec::new(),
        invalid: Vec::new(),
    }
}

#[test]
fn one_deployed_alert_per_certificate_names_all_its_newly_deployed_domains() {
    let (a, b) = (
        lineage("/l/a", &["a.example.com", "c.example.com"], -1, 89),
        lineage("/l/b", &["b.example.com"], -1, 89),
    );
    let (fa, fb) = (a.cert.fingerprint, b.cert.fingerprint);
    let mut c = case(
        vec![a, b],
        targets(&[
            ("a.example.com", 0),
            ("c.example.com", 0),
            ("b.example.com", 1),
        ]),
    );
    // b was already deployed; a and c are new.
    c.before.insert("b.example.com".into(), fb);
    c.after = [
        ("a.example.com", fa),
        ("c.example.com", fa),
        ("b.example.com", fb),
    ]
    .into_iter()
    .map(|(d, f)| (d.to_string(), f))
    .collect();
    let alerts = Tracker::default().alerts(&c.facts());
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, Kind::Deployed);
    assert_eq!(alerts[0].domains, ["a.example.com", "c.example.com"]);
    assert_eq!(alerts[0].lineage, "/l/a");
}

#[test]
fn push_failures_are_grouped_by_lineage_with_one_line_messages() {
    let a = lineage("/l/a", &["a.example.com", "b.example.com"], -1, 89);
    let mut c = case(
        vec![a],
        targets(&[("a.example.com", 0), ("b.example.com", 0)]),
    );
    c.failed = vec![
        ("b.example.com".into(), "refused\nby the\tAPI".into()),
        ("a.example.com".into(), "refused again".into()),
    ];
    let alerts = Tracker::default().alerts(&c.facts());
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, Kind::PushFailed);
    assert_eq!(alerts[0].domains, ["a.example.com", "b.example.com"]);
    assert_eq!(alerts[0].message, "refused by the API");
}

#[test]
fn expiring_fires_below_a_third_of_the_lifetime_once_per_certificate() {
    // 90-day lifetimes: 29 days left is expiring, 31 is not.
    let soon = lineage("/l/soon", &["a.example.com"], -61, 29);
    let fine = lineage("/l/fine", &["b.example.com"], -59, 31);
    let c = case(
        vec![soon, fine],
        targets(&[("a.example.com", 0), ("b.example.com", 1)]),
    );
    let mut tracker = Tracker::default();
    let alerts = tracker.alerts(&c.facts());
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        (alerts[0].kind, alerts[0].lineage.as_str()),
        (Kind::Expiring, "/l/soon")
    );
    assert!(
        alerts[0].message.contains("29 day(s)"),
        "{}",
        alerts[0].message
    );
    assert!(tracker.alerts(&c.facts()).is_empty(), "told once per run");
    // A certificate no managed domain uses tells nobody.
    let unused = case(
        vec![lineage("/l/x", &["x.example.com"], -80, 10)],
        BTreeMap::new(),
    );
    assert!(Tracker::default().alerts(&unused.facts()).is_empty());
}

#[test]
fn invalid_fires_when_a_lineage_turns_invalid_or_its_reason_changes() {
    let mut c = case(Vec::new(), BTreeMap::new());
    let mut tracker = Tracker::default();
    c.invalid = vec![("/l/old".into(), "expired".into())];
    assert_eq!(tracker.alerts(&c.facts()).len(), 1);
    assert!(
        tracker.alerts(&c.facts()).is_empty(),
        "same reason: told already"
    );
    c.invalid = vec![("/l/old".into(), "key-mismatch".into())];
    assert_eq!(tracker.alerts(&c.facts())[0].message, "key-mismatch");
    c.invalid.clear();
    assert!(tracker.alerts(&c.facts()).is_empty());
    c.invalid = vec![("/l/old".into(), "key-mismatch".into())];
    assert_eq!(
        tracker.alerts(&c.facts()).len(),
        1,
        "invalid again after a valid pass"
    );
}

#[test]
fn same_subject_compares_kind_lineage_and_domains() {
    let a = Alert {
        kind: Kind::PushFailed,
        domains: vec!["a.example.com".into()],
        lineage: "/l/a".into(),
        message: "one".into(),
    };
    let mut b = a.clone();
    b.message = "two".into();
    assert!(a.same_subject(&b));
    b.domains.push("b.example.com".into());
    assert!(!a.same_subject(&b));
}
