//! The status rows and table, from a hand-made state and an injected `now`.

use std::collections::BTreeMap;

use time::{Duration, OffsetDateTime};

use super::*;
use crate::cert::Fingerprint;

fn now() -> OffsetDateTime {
    // 2027-01-15 08:00:00 UTC
    OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("valid")
}

fn fp(byte: &str) -> Fingerprint {
    Fingerprint::from_hex(&byte.repeat(32)).expect("64 hex characters")
}

fn deployment(days_left: i64, verification: Verification) -> Deployment {
    Deployment {
        fingerprint: fp("c3"),
        cert_name: "example.com-20270301-0123456789abcdef".into(),
        not_after: now() + Duration::days(days_left) + Duration::hours(1),
        deployed_at: now() - Duration::days(2),
        request_id: "REQ-1".into(),
        verification,
        checked_at: None,
    }
}

fn error(message: &str) -> LastError {
    LastError {
        at: now() - Duration::minutes(5),
        kind: "domain".into(),
        message: message.into(),
    }
}

fn state(entries: Vec<(&str, Option<Deployment>, Option<LastError>)>) -> State {
    let domains: BTreeMap<String, DomainState> = entries
        .into_iter()
        .map(|(d, deployed, last_error)| {
            (
                d.to_string(),
                DomainState {
                    deployed,
                    last_error: last_error.map(Box::new),
                },
            )
        })
        .collect();
    State {
        version: crate::state::STATE_VERSION,
        domains,
        ..State::default()
    }
}

fn managed(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn rows_cover_managed_domains_and_those_only_the_state_knows() {
    let st = state(vec![
        (
            "a.example",
            Some(deployment(30, Verification::Verified)),
            None,
        ),
        (
            "gone.example",
            Some(deployment(5, Verification::Pending)),
            None,
        ),
    ]);
    let domains = managed(&["b.example", "a.example"]);
    let rows = rows(&domains, &st, now());
    let names: Vec<(&str, bool)> = rows.iter().map(|r| (r.domain, r.managed)).collect();
    assert_eq!(
        names,
        [
            ("a.example", true),
            ("b.example", true),
            ("gone.example", false)
        ]
    );
    assert_eq!(rows[0].days_left, Some(30));
    assert!(!rows[0].expired);
    assert!(rows[1].deployed.is_none() && rows[1].days_left.is_none());
}

#[test]
fn the_table_shows_name_short_fingerprint_validity_and_verification() {
    let st = state(vec![
        (
            "a.example",
            Some(deployment(30, Verification::Verified)),
            None,
        ),
        (
            "b.example",
            Some(deployment(1, Verification::Pending)),
            None,
        ),
        (
            "c.example",
            Some(deployment(-3, Verification::Failed)),
            Some(error("read-back did not confirm")),
        ),
        ("d.example", None, Some(error("InvalidDomain.NotFound"))),
    ]);
    let domains = managed(&["a.example", "b.example", "c.example", "d.example"]);
    let text = render(&rows(&domains, &st, now()));
    let line = |d: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(d))
            .unwrap_or_else(|| panic!("no {d} row in\n{text}"))
            .to_string()
    };
    let a = line("a.example");
    for cell in [
        "example.com-20270301-0123456789abcdef",
        "c3c3c3c3c3c3 ",
        "VALID: 30 days",
        "yes",
        "2027-01-13 08:00Z",
    ] {
        assert!(a.contains(cell), "{cell:?} not in {a:?}");
    }
    assert!(
        !a.contains("c3c3c3c3c3c3c"),
        "the fingerprint is shortened: {a}"
    );
    let b = line("b.example");
    assert!(b.contains("VALID: 1 day ") && b.contains("pending"), "{b}");
    let c = line("c.example");
    assert!(c.contains("EXPIRED") && c.contains("NO"), "{c}");
    assert!(
        c.contains("2027-01-15 07:55Z domain: read-back did not confirm"),
        "{c}"
    );
    let d = line("d.example");
    assert!(
        d.contains("never deployed") && d.contains("InvalidDomain.NotFound"),
        "{d}"
    );
    assert!(
        text.lines()
            .next()
            .is_some_and(|h| h.contains("DOMAIN") && h.contains("LAST ERROR"))
    );
}

#[test]
fn a_domain_only_in_the_state_is_marked_not_managed() {
    let st = state(vec![(
        "old.example",
        Some(deployment(10, Verification::Verified)),
        None,
    )]);
    let text = render(&rows(&[], &st, now()));
    assert!(text.contains("old.example (not managed)"), "{text}");
}

#[test]
fn json_rows_carry_the_deployment_and_days_left() {
    let st = state(vec![(
        "a.example",
        Some(deployment(12, Verification::Verified)),
        None,
    )]);
    let domains = managed(&["a.example"]);
    let json = serde_json::to_value(Report {
        last_pass: None,
        daemon_pid: None,
        domains: rows(&domains, &st, now()),
    })
    .expect("serialises");
    let row = &json["domains"][0];
    assert_eq!(row["domain"], "a.example");
    assert_eq!(row["days_left"], 12);
    assert_eq!(row["expired"], false);
    assert_eq!(row["deployed"]["fingerprint"], "c3".repeat(32));
    assert_eq!(row["deployed"]["verification"], "verified");
    assert!(row["last_error"].is_null());
}

#[test]
fn table_cells_from_the_state_file_are_escaped() {
    // A state file written by an older version, or edited by hand: its texts are not trusted.
    let mut d = deployment(30, Verification::Verified);
    d.cert_name = "name\u{1b}[2K\u{202e}".into();
    let s = state(vec![(
        "a.example\nFORGED",
        Some(d),
        Some(error("refused\r\nFORGED line")),
    )]);
    let domains = managed(&[]);
    let text = render(&rows(&domains, &s, now()));
    assert_eq!(text.lines().count(), 2, "header and one row:\n{text}");
    for bad in ['\u{1b}', '\r', '\u{202e}'] {
        assert!(!text.contains(bad), "{bad:?} in {text:?}");
    }
    assert!(text.contains("a.example\\nFORGED (not managed)"), "{text}");
    assert!(text.contains("name\\x1b[2K\\u{202e}"), "{text}");
    assert!(text.contains("refused\\r\\nFORGED line"), "{text}");
}

#[test]
fn the_recorded_condition_says_why_a_domain_is_not_up_to_date() {
    let st = state(vec![
        (
            "a.example",
            Some(deployment(30, Verification::Verified)),
            None,
        ),
        (
            "b.example",
            Some(deployment(30, Verification::Pending)),
            None,
        ),
        (
            "c.example",
            Some(deployment(30, Verification::Verified)),
            Some(error("throttled")),
        ),
        (
            "old.example",
            Some(deployment(30, Verification::Verified)),
            None,
        ),
    ]);
    let domains = managed(&["a.example", "b.example", "c.example", "d.example"]);
    let got: Vec<(&str, Condition)> = rows(&domains, &st, now())
        .iter()
        .map(|r| (r.domain, r.condition))
        .collect();
    assert_eq!(
        got,
        [
            ("a.example", Condition::UpToDate),
            ("b.example", Condition::Unverified),
            ("c.example", Condition::Failed),
            ("d.example", Condition::NeverDeployed),
            ("old.example", Condition::NotManaged),
        ]
    );
}

#[test]
fn expiring_is_less_than_a_third_of_the_lifetime_left() {
    let t = now();
    let day = time::Duration::days(1);
    assert!(expiring(t - day * 61, t + day * 29, t));
    assert!(!expiring(t - day * 59, t + day * 31, t));
}

#[test]
fn a_long_error_stays_on_one_line_of_the_table() {
    let long = "word ".repeat(100);
    assert_eq!(one_line(&long).chars().count(), MAX_ERROR_CELL + 1);
    assert!(one_line(&long).ends_with('…'));
    assert_eq!(one_line("short"), "short");
}
