//! The error-label vocabulary, checked: every `kind()` label of every edge error enum is
//! kebab-case, and ARCHITECTURE.md's "Error labels" table lists exactly the labels the code
//! has, file by file. A new variant or a renamed label fails here until the table follows.

use std::collections::BTreeMap;

const ARCHITECTURE: &str = include_str!("../../ARCHITECTURE.md");

/// How an error enum's label function starts (after `pub ` or `pub(crate) `).
const KIND_HEAD: &str = "fn kind(&self) -> &'static str {";

/// Where `text` has an error enum's label function: the offsets of its [`KIND_HEAD`]s that
/// follow `pub ` or `pub(crate) ` (a trait impl's `fn kind` only forwards).
fn kind_heads(text: &str) -> Vec<usize> {
    text.match_indices(KIND_HEAD)
        .map(|(at, _)| at)
        .filter(|&at| text[..at].ends_with("pub ") || text[..at].ends_with("pub(crate) "))
        .collect()
}

/// Every file under `src/` with an error enum's `kind()` (found by walking the tree, so a
/// new edge module cannot be missed), and its text.
fn sources() -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut folders = vec![root.join("src")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("src/ is readable") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let rel = path.strip_prefix(root).expect("under the root");
            let rel = rel.to_string_lossy().into_owned();
            if rel != "src/cmd/labels.rs" && !kind_heads(&text).is_empty() {
                files.push((rel, text));
            }
        }
    }
    files.sort();
    files
}

/// Labels recorded in the state file outside any `kind()` (read-back failures).
const OTHER_LABELS: &[&str] = &["verify"];

/// The string literals right after `=>` in the bodies of `pub(crate) fn kind(&self)` (or
/// `pub fn kind`) in `text`.
fn code_labels(text: &str) -> Vec<String> {
    const HEAD: &str = KIND_HEAD;
    let mut labels = Vec::new();
    for at in kind_heads(text) {
        let line = text[..at].rsplit('\n').next().unwrap_or("");
        let indent = &line[..line.len() - line.trim_start().len()];
        let close = format!("\n{indent}}}\n");
        let body = &text[at + HEAD.len()..];
        let body = &body[..body.find(&close).unwrap_or(body.len())];
        for (arrow, _) in body.match_indices("=>") {
            let rest = body[arrow + 2..].trim_start();
            if let Some(quoted) = rest.strip_prefix('"')
                && let Some(end) = quoted.find('"')
            {
                labels.push(quoted[..end].to_string());
            }
        }
    }
    labels
}

/// File → labels, from the table between the `kinds:begin`/`kinds:end` markers.
fn documented() -> BTreeMap<String, Vec<String>> {
    let start = ARCHITECTURE
        .find("<!-- kinds:begin -->")
        .expect("begin marker");
    let end = ARCHITECTURE.find("<!-- kinds:end -->").expect("end marker");
    let mut table = BTreeMap::new();
    for row in ARCHITECTURE[start..end].lines() {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let [_, file, labels, ..] = cells[..] else {
            continue;
        };
        let Some(file) = file.strip_prefix('`').and_then(|f| f.strip_suffix('`')) else {
            continue;
        };
        let labels = labels
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_string())
            .collect();
        table.insert(file.to_string(), labels);
    }
    table
}

fn is_kebab(label: &str) -> bool {
    !label.is_empty()
        && !label.starts_with('-')
        && !label.ends_with('-')
        && !label.contains("--")
        && label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[test]
fn every_label_is_kebab_case() {
    for (file, text) in sources() {
        let labels = code_labels(&text);
        assert!(!labels.is_empty(), "{file}: no kind() labels found");
        for label in labels {
            assert!(
                is_kebab(&label),
                "{file}: label {label:?} is not kebab-case"
            );
        }
    }
    for label in OTHER_LABELS {
        assert!(is_kebab(label), "{label:?}");
    }
}

#[test]
fn the_documented_label_table_matches_the_code() {
    let code: BTreeMap<String, Vec<String>> = sources()
        .into_iter()
        .map(|(file, text)| (file, code_labels(&text)))
        .collect();
    assert_eq!(
        documented(),
        code,
        "ARCHITECTURE.md's error-label table and the code disagree"
    );
    assert!(ARCHITECTURE.contains("the kind `verify`"));
}

#[test]
fn the_label_scanner_sees_what_it_should() {
    let text = "impl E {\n    pub fn kind(&self) -> &'static str {\n        match self {\n            E::A if x.starts_with(\"No\") => \"a-b\",\n            E::B => other.kind(),\n            E::C => \"c\",\n        }\n    }\n}\nfn f() { match 1 { _ => \"not-a-label\" } }\n";
    assert_eq!(code_labels(text), ["a-b", "c"]);
    let crate_only = text.replace("pub fn kind", "pub(crate) fn kind");
    assert_eq!(code_labels(&crate_only), ["a-b", "c"]);
    let forwarding = "impl Failure for E {\n    fn kind(&self) -> &'static str {\n        match self { E::A => \"no\" }\n    }\n}\n";
    assert!(code_labels(forwarding).is_empty());
    assert!(is_kebab("non-json-response") && !is_kebab("clock_skew") && !is_kebab("Clock"));
}

/// A state file written before the labels were kebab-case still loads, and its labels are
/// kept (and shown) as stored.
#[test]
fn an_old_state_file_with_snake_case_labels_still_loads() {
    let old = r#"{
  "version": 1,
  "domains": {
    "a.example.com": {
      "deployed": null,
      "last_error": {
        "at": "2026-11-01T08:00:00Z",
        "kind": "clock_skew",
        "message": "InvalidTimeStamp.Expired"
      }
    }
  }
}
"#;
    let state = crate::state::parse(std::path::Path::new("state.json"), old.as_bytes())
        .expect("an old state file parses");
    let error = state.domains["a.example.com"]
        .last_error
        .as_ref()
        .expect("its last error");
    assert_eq!(error.kind, "clock_skew");
}
