//! Tests of the `check` report on real folders with a fixed `now`.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::*;
use crate::testca::{Leaf, TestCa};

const NOW: OffsetDateTime = datetime!(2026-02-01 12:00 UTC);

struct Tree {
    dir: tempfile::TempDir,
    ca: TestCa,
}

impl Tree {
    fn new() -> Tree {
        Tree {
            dir: tempfile::tempdir().unwrap(),
            ca: TestCa::new("Check test").unwrap(),
        }
    }

    fn live(&self) -> PathBuf {
        self.dir.path().join("live")
    }

    /// A certbot-style lineage valid from `from` to `to` days around NOW.
    fn lineage(&self, name: &str, names: &[&str], from: i64, to: i64) -> PathBuf {
        let leaf = Leaf::new(names, NOW + Duration::days(from), NOW + Duration::days(to));
        let issued = self.ca.issue(&leaf).unwrap();
        let archive = self.dir.path().join("archive").join(name);
        let live = self.live().join(name);
        fs::create_dir_all(&archive).unwrap();
        fs::create_dir_all(&live).unwrap();
        for (file, text) in [
            ("fullchain", &issued.fullchain_pem),
            ("privkey", &issued.key_pem),
        ] {
            fs::write(archive.join(format!("{file}1.pem")), text).unwrap();
            symlink(
                format!("../../archive/{name}/{file}1.pem"),
                live.join(format!("{file}.pem")),
            )
            .unwrap();
        }
        live
    }

    fn check(&self, domains: &[&str]) -> (String, Exit) {
        let quoted: Vec<String> = domains.iter().map(|d| format!("{d:?}")).collect();
        let text = format!(
            "[watch]\npaths = [{:?}]\n[cdn]\ndomains = [{}]\n",
            self.live(),
            quoted.join(", ")
        );
        let loaded = config::parse(Path::new("/c/certrotd.toml"), &text, self.dir.path()).unwrap();
        let lineages = Scanner::new().scan(&loaded.settings.watch.paths);
        let inputs = Inputs {
            settings: &loaded.settings,
            config_warnings: &loaded.warnings,
            credentials: Ok("environment (ALIBABA_CLOUD_ACCESS_KEY_ID=LTAI…xyz)"),
            lineages: &lineages,
            chain_names: &chain_names(&lineages),
        };
        report(&inputs, NOW)
    }
}

/// The domain table's row for `domain`.
fn row<'a>(text: &'a str, domain: &str) -> &'a str {
    text.lines()
        .find(|l| l.trim_start().split(' ').next() == Some(domain))
        .unwrap_or_else(|| panic!("no row for {domain:?} in:\n{text}"))
}

fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

#[test]
fn all_valid_and_covered_exits_0() {
    let tree = Tree::new();
    tree.lineage("www", &["www.example.com"], -10, 80);
    tree.lineage("wild", &["*.example.com", "example.com"], -10, 60);
    let (text, exit) = tree.check(&["www.example.com", ".example.com", "a.example.com"]);
    assert_eq!(exit, Exit::Ok, "{text}");
    assert!(
        text.starts_with("Configuration /c/certrotd.toml: OK (1 watch path, 3 managed domains)")
    );
    let www = line_with(&text, "live/www ");
    assert!(
        www.contains("certbot") && www.contains("ECDSA P-256") && www.contains("www.example.com")
    );
    assert!(www.contains(&format!("{}", (NOW + Duration::days(80)).date().year())));
    assert!(www.ends_with("VALID: 80 days"), "{www}");
    assert!(row(&text, "www.example.com").contains("live/www (exact name, 80 days)"));
    assert!(row(&text, ".example.com").contains("live/wild (wildcard, 60 days)"));
    assert!(row(&text, "a.example.com").contains("live/wild (wildcard"));
    assert!(text.contains("OK: 2 valid lineages, every managed domain covered."));
    assert!(!text.contains("warning:"), "{text}");
}

#[test]
fn expired_and_not_yet_valid_are_invalid_and_uncovered_domains_exit_1() {
    let tree = Tree::new();
    let old = tree.lineage("old", &["old.example.com"], -100, -27);
    tree.lineage("future", &["new.example.com"], 3, 90);
    let (text, exit) = tree.check(&["old.example.com", "new.example.com", "none.example.com"]);
    assert_eq!(exit, Exit::Problems);
    let old_row = line_with(&text, "live/old ");
    assert!(
        old_row.contains(&format!(
            "INVALID: {}: expired 2026-01-05 (27 days ago)",
            old.join("fullchain.pem").display()
        )),
        "{old_row}"
    );
    assert!(
        line_with(&text, "live/future ").contains("INVALID: ") && text.contains("not valid until")
    );
    assert!(
        row(&text, "old.example.com").contains("no valid certificate (covered only by invalid")
    );
    assert!(row(&text, "none.example.com").ends_with("no valid certificate"));
    assert!(
        text.contains(
            "PROBLEMS: 2 invalid lineages, 3 managed domains without a valid certificate."
        )
    );
}

#[test]
fn warns_when_renewal_is_overdue_or_a_lineage_serves_nothing() {
    let tree = Tree::new();
    tree.lineage("late", &["late.example.com"], -80, 10);
    tree.lineage("other", &["other.example.net"], -1, 89);
    let (text, exit) = tree.check(&["late.example.com"]);
    assert_eq!(exit, Exit::Ok, "warnings alone do not fail: {text}");
    let late = line_with(&text, "warning: ");
    assert!(
        late.contains("live/late: less than 1/3 of its lifetime left"),
        "{late}"
    );
    assert!(text.contains("live/other: its names (other.example.net) cover no managed domain"));
}

#[test]
fn problems_and_empty_trees_are_reported() {
    let tree = Tree::new();
    fs::create_dir_all(tree.live().join("broken")).unwrap();
    let (text, exit) = tree.check(&["a.example.com"]);
    assert_eq!(exit, Exit::Problems);
    let row = line_with(&text, "live/broken");
    assert!(row.contains("unknown") && row.contains("INVALID: ") && row.contains("no recognised"));

    let empty = Tree::new();
    fs::create_dir_all(empty.live()).unwrap();
    let (text, exit) = empty.check(&[]);
    assert_eq!(exit, Exit::Ok);
    assert!(text.contains("none found under"), "{text}");
    assert!(
        text.contains("warning: /c/certrotd.toml"),
        "config warnings are shown: {text}"
    );
}

#[test]
fn helpers_format_as_documented() {
    let names: Vec<String> = (1..=5).map(|i| format!("n{i}.example.com")).collect();
    assert_eq!(short_names(&names[..2]), "n1.example.com, n2.example.com");
    assert_eq!(
        short_names(&names),
        "n1.example.com, n2.example.com, n3.example.com (+2 more)"
    );
    assert_eq!(days_left(NOW + Duration::hours(30), NOW), "1 day");
    assert_eq!(ymd(datetime!(2026-03-01 23:59 UTC)), "2026-03-01");
    let t = table(
        &["A", "BB"],
        &[
            vec!["xyz".into(), "1".into()],
            vec!["é".into(), "22".into()],
        ],
    );
    assert_eq!(t, "  A    BB\n  xyz  1\n  é    22\n");
}

#[test]
fn credentials_are_shown_and_their_problems_only_warn() {
    let tree = Tree::new();
    tree.lineage("www", &["www.example.com"], -10, 80);
    let (text, exit) = tree.check(&["www.example.com"]);
    assert_eq!(exit, Exit::Ok);
    assert!(text.contains("\nCredentials: environment (ALIBABA_CLOUD_ACCESS_KEY_ID=LTAI…xyz)\n"));

    let loaded = config::parse(Path::new("/c/x.toml"), "", Path::new("/")).unwrap();
    let inputs = Inputs {
        settings: &loaded.settings,
        config_warnings: &[],
        credentials: Err("no Alibaba Cloud credentials found"),
        lineages: &[],
        chain_names: &std::collections::HashMap::new(),
    };
    let (text, exit) = report(&inputs, NOW);
    assert_eq!(exit, Exit::Ok, "{text}");
    assert!(text.contains("Credentials: none usable (see the warning below)"));
    assert!(text.contains("warning: credentials: no Alibaba Cloud credentials found"));
}

#[test]
fn a_missing_watch_path_is_listed_apart_from_the_lineages() {
    let tree = Tree::new();
    // live/ is never created.
    let (text, exit) = tree.check(&["a.example.com"]);
    assert_eq!(exit, Exit::Problems);
    assert!(text.contains("Missing watch paths (1):"), "{text}");
    assert!(text.contains("Lineages (0):"), "{text}");
    assert!(
        !text.contains("unknown"),
        "not a lineage of layout unknown: {text}"
    );
    assert!(text.contains("1 missing watch path."), "{text}");
}

#[test]
fn expired_and_mismatched_lineages_say_what_to_do() {
    let tree = Tree::new();
    tree.lineage("old", &["a.example.com"], -100, -10);
    let (text, _) = tree.check(&["a.example.com"]);
    assert!(line_with(&text, "live/old").contains("renew it"), "{text}");
}

#[test]
fn the_json_report_has_the_same_findings() {
    let tree = Tree::new();
    tree.lineage("a", &["a.example.com"], -1, 60);
    tree.lineage("old", &["b.example.com"], -100, -10);
    let text = format!(
        "[watch]\npaths = [{:?}, \"/nonexistent/watch\"]\n[cdn]\ndomains = [\"a.example.com\", \"b.example.com\"]\n[dcdn]\ndomains = [\"c.example.com\"]\n",
        tree.live()
    );
    let loaded = config::parse(Path::new("/c/certrotd.toml"), &text, tree.dir.path()).unwrap();
    let lineages = Scanner::new().scan(&loaded.settings.watch.paths);
    let inputs = Inputs {
        settings: &loaded.settings,
        config_warnings: &loaded.warnings,
        credentials: Err("none found; looked at:\n  1. a\n  2. b"),
        lineages: &lineages,
        chain_names: &chain_names(&lineages),
    };
    let (_, exit) = report(&inputs, NOW);
    let json = serde_json::to_value(json_report(&inputs, NOW, exit)).unwrap();
    assert_eq!(json["exit_code"], 1);
    assert_eq!(
        json["credentials"]["Err"],
        "none found; looked at: 1. a; 2. b"
    );
    assert_eq!(json["missing_watch_paths"][0], "/nonexistent/watch");
    assert_eq!(json["lineages"].as_array().unwrap().len(), 2, "{json}");
    assert_eq!(
        json["domains"][0]["served_by"],
        tree.live().join("a").display().to_string()
    );
    assert!(json["domains"][1]["served_by"].is_null());
    assert!(
        json["domains"][1]["problem"]
            .as_str()
            .unwrap()
            .contains("no valid certificate")
    );
    let products: Vec<&str> = json["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["product"].as_str().unwrap())
        .collect();
    assert_eq!(products, ["cdn", "cdn", "dcdn"], "{json}");
    assert_eq!(json["domains"][2]["domain"], "c.example.com");
}

#[test]
fn names_are_shown_for_a_readable_certificate_with_an_unusable_key() {
    let tree = Tree::new();
    let live = tree.lineage("a", &["a.example.com", "www.a.example.com"], -1, 60);
    // The key link now points nowhere (a key certrotd cannot read).
    fs::remove_file(live.join("privkey.pem")).unwrap();
    symlink("../../archive/a/missing.pem", live.join("privkey.pem")).unwrap();
    let (text, exit) = tree.check(&["a.example.com"]);
    assert_eq!(exit, Exit::Problems);
    let row = line_with(&text, "live/a ");
    assert!(
        row.contains("a.example.com, www.a.example.com") && row.contains("INVALID"),
        "{text}"
    );
}
