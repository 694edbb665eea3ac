use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const FILE: &str = "/etc/certrotd/certrotd.toml";

fn ok(text: &str) -> Loaded {
    match parse(Path::new(FILE), text, Path::new("/etc/certrotd")) {
        Ok(loaded) => loaded,
        Err(e) => panic!("expected a valid config, got: {e}"),
    }
}

fn problems(text: &str) -> Vec<Diagnostic> {
    problems_in(text, Path::new("/etc/certrotd"))
}

fn problems_in(text: &str, base: &Path) -> Vec<Diagnostic> {
    match parse(Path::new(FILE), text, base) {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(ConfigError::Invalid { problems, .. }) => problems,
        Err(e) => panic!("unexpected error kind {}: {e}", e.kind()),
    }
}

/// The only problem of `text`.
fn problem(text: &str) -> Diagnostic {
    let mut all = problems(text);
    assert_eq!(all.len(), 1, "expected one problem, got {all:#?}");
    all.remove(0)
}

#[test]
fn an_empty_file_gives_the_documented_defaults() {
    let loaded = ok("");
    let s = loaded.settings;
    assert_eq!(s.path, PathBuf::from(FILE));
    assert_eq!(s.aliyun.endpoint, "https://cdn.aliyuncs.com");
    assert_eq!(s.aliyun.region.as_deref(), Some("cn-hangzhou"));
    assert_eq!(s.aliyun.access_key_id, None);
    assert_eq!(s.aliyun.access_key_secret_file, None);
    assert_eq!(s.aliyun.requests_per_second, 10);
    assert_eq!(s.aliyun.read_requests_per_second, 50);
    assert_eq!(s.aliyun.max_domains_per_call, 10);
    assert_eq!(s.aliyun.api, Api::Batch);
    assert_eq!(s.aliyun.per_domain_requests_per_second, 30);
    assert_eq!(s.aliyun.domains_per_call(), 10);
    assert_eq!(s.aliyun.max_attempts, 6);
    assert_eq!(s.aliyun.timeout, Duration::from_secs(30));
    assert!(s.aliyun.verify);
    assert_eq!(s.aliyun.signature, Signature::V1);
    assert_eq!(s.watch.paths, [PathBuf::from("/etc/letsencrypt/live")]);
    assert_eq!(s.watch.debounce, Duration::from_millis(2000));
    assert_eq!(s.watch.rescan, Duration::from_secs(3600));
    assert_eq!(s.state.dir, PathBuf::from("/var/lib/certrotd"));
    assert!(s.cdn.domains.is_empty());
    // No domains at all is allowed, but worth a warning.
    assert_eq!(loaded.warnings.len(), 1);
    assert_eq!(loaded.warnings[0].key.as_deref(), Some("cdn.domains"));
}

#[test]
fn every_setting_is_read() {
    let s = ok(r#"
        [aliyun]
        endpoint = "http://127.0.0.1:8080/"
        region = ""
        access_key_id = "LTAI5tExample"
        requests_per_second = 5
        read_requests_per_second = 0x10
        max_domains_per_call = 50
        max_attempts = 1
        timeout_secs = 1_0
        verify = false
        signature = "v3"
        [watch]
        paths = ["live", "/abs/k8s", "live"]
        debounce_ms = 1
        rescan_secs = 60
        [state]
        dir = "state"
        [cdn]
        domains = ["WWW.example.com.", ".example.com", "www.example.com"]
        "#)
    .settings;
    assert_eq!(s.aliyun.endpoint, "http://127.0.0.1:8080");
    assert_eq!(s.aliyun.region, None);
    assert_eq!(s.aliyun.access_key_id.as_deref(), Some("LTAI5tExample"));
    assert_eq!(s.aliyun.requests_per_second, 5);
    assert_eq!(s.aliyun.read_requests_per_second, 16);
    assert_eq!(s.aliyun.max_domains_per_call, 50);
    assert_eq!(s.aliyun.max_attempts, 1);
    assert_eq!(s.aliyun.timeout, Duration::from_secs(10));
    assert!(!s.aliyun.verify);
    assert_eq!(s.aliyun.signature, Signature::V3);
    // Relative paths are resolved against the configuration file's folder; duplicates go.
    assert_eq!(
        s.watch.paths,
        [
            PathBuf::from("/etc/certrotd/live"),
            PathBuf::from("/abs/k8s")
        ]
    );
    assert_eq!(s.watch.debounce, Duration::from_millis(1));
    assert_eq!(s.watch.rescan, Duration::from_secs(60));
    assert_eq!(s.state.dir, PathBuf::from("/etc/certrotd/state"));
    assert_eq!(s.cdn.domains, [".example.com", "www.example.com"]);
}

#[test]
fn the_shipped_example_is_valid() {
    let text = include_str!("../../config/certrotd.toml");
    let loaded = ok(text);
    assert_eq!(loaded.settings.aliyun.endpoint, "https://cdn.aliyuncs.com");
    assert!(!loaded.settings.cdn.domains.is_empty());
    assert_eq!(loaded.settings.aliyun.signature, Signature::V1);
    // It spells out the defaults.
    assert_eq!(loaded.settings.aliyun.api, Api::Batch);
    assert_eq!(loaded.settings.aliyun.per_domain_requests_per_second, 30);
}

#[test]
fn an_unknown_signature_version_is_located_and_explained() {
    for bad in ["\"V3\"", "\"v2\"", "\"\"", "\"hmac-sha256\""] {
        let p = problem(&format!("[aliyun]\nsignature = {bad}\n"));
        assert_eq!(p.key.as_deref(), Some("aliyun.signature"), "{bad}");
        assert_eq!((p.line, p.col), (2, 13), "{bad}");
        assert!(
            p.message.contains("is not a signature version")
                && p.message.contains("use \"v1\"")
                && p.message.contains("\"v3\""),
            "{}",
            p.message
        );
        assert!(p.to_string().starts_with(&format!("{FILE}:2:13: ")), "{p}");
    }
    let p = problem("[aliyun]\nsignature = 3\n");
    assert!(
        p.message
            .contains("`aliyun.signature` must be a string, found integer"),
        "{}",
        p.message
    );
}

#[test]
fn unknown_keys_are_named_with_their_location() {
    let p = problem("[aliyun]\nendpiont = \"https://x.example\"\n");
    assert_eq!(p.key.as_deref(), Some("aliyun.endpiont"));
    assert_eq!((p.line, p.col), (2, 1));
    assert!(
        p.message.contains("did you mean `endpoint`"),
        "{}",
        p.message
    );
    assert_eq!(
        p.to_string(),
        format!("{FILE}:2:1: {}", p.message),
        "Display is file:line:col: message"
    );

    let p = problem("\n\n[colour]\nred = 1\n");
    assert_eq!(p.key.as_deref(), Some("colour"));
    assert_eq!(p.line, 3);
    assert!(
        p.message
            .contains("known keys here: aliyun, watch, state, cdn")
    );
}

#[test]
fn wrong_types_are_named() {
    let p = problem("[aliyun]\nrequests_per_second = \"10\"\n");
    assert_eq!(p.key.as_deref(), Some("aliyun.requests_per_second"));
    assert_eq!((p.line, p.col), (2, 23));
    assert!(
        p.message.contains("must be an integer, found string"),
        "{}",
        p.message
    );

    let p = problem("[aliyun]\nverify = 1\n");
    assert!(
        p.message
            .contains("`aliyun.verify` must be true or false, found integer")
    );

    let p = problem("[aliyun]\ntimeout_secs = 1.5\n");
    assert!(p.message.contains("found float"));

    let p = problem("aliyun = 5\n");
    assert!(
        p.message.contains("`aliyun` must be a table"),
        "{}",
        p.message
    );

    let p = problem("[watch]\npaths = \"/etc/letsencrypt/live\"\n");
    assert!(
        p.message
            .contains("must be an array of strings, found string")
    );

    let p = problem("[cdn]\ndomains = [\"a.example.com\", 7]\n");
    assert!(
        p.message
            .contains("`cdn.domains[1]` must be a string, found integer")
    );
    assert_eq!((p.line, p.col), (2, 29));
}

#[test]
fn ranges_are_enforced_and_explained() {
    for (key, bad, hint) in [
        ("requests_per_second", "0", "use 1 to 100"),
        ("requests_per_second", "101", "use 1 to 100"),
        ("read_requests_per_second", "0", "use 1 to 100"),
        ("max_domains_per_call", "51", "use 1 to 50"),
        ("max_domains_per_call", "-1", "use 1 to 50"),
        ("per_domain_requests_per_second", "0", "use 1 to 100"),
        ("per_domain_requests_per_second", "101", "use 1 to 100"),
        ("max_attempts", "0", "use 1 to 100"),
        ("timeout_secs", "0", "use 1 to 3600"),
        ("timeout_secs", "99999999999999999999", "use 1 to 3600"),
    ] {
        let p = problem(&format!("[aliyun]\n{key} = {bad}\n"));
        assert_eq!(p.key.as_deref(), Some(format!("aliyun.{key}").as_str()));
        assert!(
            p.message.contains("out of range") && p.message.contains(hint),
            "{p}"
        );
        assert_eq!(p.line, 2);
    }
    let p = problem("[watch]\ndebounce_ms = 0\n");
    assert_eq!(p.key.as_deref(), Some("watch.debounce_ms"));
    let p = problem("[watch]\nrescan_secs = 0\n");
    assert_eq!(p.key.as_deref(), Some("watch.rescan_secs"));
}

#[test]
fn a_write_rate_above_alibabas_quota_is_a_warning() {
    let loaded = ok("[aliyun]\nrequests_per_second = 20\n[cdn]\ndomains = [\"a.example.com\"]\n");
    assert_eq!(loaded.settings.aliyun.requests_per_second, 20);
    assert_eq!(loaded.warnings.len(), 1);
    let w = &loaded.warnings[0];
    assert_eq!(w.key.as_deref(), Some("aliyun.requests_per_second"));
    assert_eq!(w.line, 2);
    assert!(w.message.contains("quota of 10"));
}

#[test]
fn api_chooses_the_write_call() {
    let s = ok("[aliyun]\napi = \"per-domain\"\nper_domain_requests_per_second = 12\n").settings;
    assert_eq!(s.aliyun.api, Api::PerDomain);
    assert_eq!(s.aliyun.per_domain_requests_per_second, 12);
    assert_eq!(
        s.aliyun.domains_per_call(),
        1,
        "one domain a per-domain call"
    );
    let s = ok("[aliyun]\napi = \"batch\"\nmax_domains_per_call = 7\n").settings;
    assert_eq!(s.aliyun.api, Api::Batch);
    assert_eq!(s.aliyun.domains_per_call(), 7);
}

#[test]
fn an_unknown_api_is_refused_with_the_choices() {
    let p = problem("[aliyun]\napi = \"per_domain\"\n");
    assert_eq!(p.key.as_deref(), Some("aliyun.api"));
    assert_eq!(p.line, 2);
    assert!(
        p.message.contains("\"per_domain\"")
            && p.message.contains("\"batch\"")
            && p.message.contains("\"per-domain\""),
        "{}",
        p.message
    );
    let p = problem("[aliyun]\napi = 1\n");
    assert_eq!(p.key.as_deref(), Some("aliyun.api"));
    assert!(p.message.contains("found integer"), "{}", p.message);
}

#[test]
fn a_per_domain_rate_above_alibabas_quota_is_a_warning() {
    assert!(
        ok("[aliyun]\nper_domain_requests_per_second = 30\n[cdn]\ndomains = [\"a.example.com\"]\n")
            .warnings
            .is_empty()
    );
    let loaded =
        ok("[aliyun]\nper_domain_requests_per_second = 31\n[cdn]\ndomains = [\"a.example.com\"]\n");
    assert_eq!(loaded.settings.aliyun.per_domain_requests_per_second, 31);
    assert_eq!(loaded.warnings.len(), 1);
    let w = &loaded.warnings[0];
    assert_eq!(
        w.key.as_deref(),
        Some("aliyun.per_domain_requests_per_second")
    );
    assert_eq!(w.line, 2);
    assert!(w.message.contains("quota of 30"), "{}", w.message);
}

#[test]
fn plain_http_is_refused_outside_loopback() {
    let p = problem("[aliyun]\nendpoint = \"http://example.com\"\n");
    assert_eq!(p.key.as_deref(), Some("aliyun.endpoint"));
    assert_eq!(p.line, 2);
    assert!(p.message.contains("only for loopback"), "{}", p.message);
    assert!(
        ok("[aliyun]\nendpoint = \"http://[::1]:1234\"\n")
            .warnings
            .len()
            == 1
    );
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let all = problems(
        "[aliyun]\nendpoint = \"http://example.com\"\nmax_attempts = 0\ncolour = 1\n\
         [watch]\npaths = []\n[cdn]\ndomains = [\"*.example.com\"]\n",
    );
    let keys: Vec<_> = all
        .iter()
        .map(|p| p.key.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        keys,
        [
            "aliyun.endpoint",
            "aliyun.max_attempts",
            "aliyun.colour",
            "watch.paths",
            "cdn.domains"
        ]
    );
    let lines: Vec<_> = all.iter().map(|p| p.line).collect();
    assert_eq!(lines, [2, 3, 4, 6, 8]);
    let err = parse(
        Path::new(FILE),
        "[aliyun]\nmax_attempts = 0\ncolour = 1\n",
        Path::new("/"),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("2 problems"), "{text}");
    assert!(text.contains(&format!("{FILE}:2:")) && text.contains(&format!("{FILE}:3:")));
    assert_eq!(err.problems().len(), 2);
    assert_eq!(err.kind(), "config-invalid");
}

#[test]
fn syntax_errors_are_located() {
    let all = problems("[aliyun]\nendpoint = \n[watch\n");
    assert!(!all.is_empty());
    assert!(
        all.iter().all(|p| p.key.is_none() && p.line >= 2),
        "{all:#?}"
    );
    assert!(all[0].message.starts_with("TOML syntax error"));
    let dup = problems("[state]\ndir = \"a\"\ndir = \"b\"\n");
    assert!(dup.iter().any(|p| p.line == 3), "{dup:#?}");
}

#[test]
fn domains_are_validated_with_hints() {
    let p = problem("[cdn]\ndomains = [\"*.example.com\"]\n");
    assert!(
        p.message.contains("write \".example.com\""),
        "{}",
        p.message
    );
    let p = problem("[cdn]\ndomains = [\"bad_name.example.com\"]\n");
    assert!(p.message.contains("'_'"), "{}", p.message);
}

#[test]
fn domains_file_is_merged_sorted_and_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("domains.txt"),
        "# managed\nB.example.com\n\n  a.example.com  # trailing comment\nwww.example.com.\n",
    )
    .unwrap();
    let text = "[cdn]\ndomains = [\"www.example.com\"]\ndomains_file = \"domains.txt\"\n";
    let s = parse(Path::new(FILE), text, dir.path()).unwrap().settings;
    assert_eq!(
        s.cdn.domains,
        ["a.example.com", "b.example.com", "www.example.com"]
    );
    assert_eq!(s.cdn.domains_file, Some(dir.path().join("domains.txt")));
}

#[test]
fn domains_file_problems_point_into_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("domains.txt");
    std::fs::write(&list, "ok.example.com\n  *.example.com\nalso..bad.com\n").unwrap();
    let all = problems_in("[cdn]\ndomains_file = \"domains.txt\"\n", dir.path());
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(
        (all[0].file.clone(), all[0].line, all[0].col),
        (list.clone(), 2, 3)
    );
    assert!(all[0].message.contains("write \".example.com\""));
    assert_eq!(all[1].line, 3);

    std::fs::write(dir.path().join("latin1.txt"), b"caf\xe9.example.com\n").unwrap();
    let all = problems_in("[cdn]\ndomains_file = \"latin1.txt\"\n", dir.path());
    assert!(all[0].message.contains("not UTF-8"), "{}", all[0].message);

    let all = problems_in("[cdn]\ndomains_file = \"missing.txt\"\n", dir.path());
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].key.as_deref(), Some("cdn.domains_file"));
    assert_eq!(all[0].line, 2);
    assert!(
        all[0].message.contains("cannot read it"),
        "{}",
        all[0].message
    );
}

#[test]
fn the_secret_file_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "not-a-real-secret\n").unwrap();
    let text = "[aliyun]\naccess_key_secret_file = \"secret\"\n";

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    let all = problems_in(text, dir.path());
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].key.as_deref(), Some("aliyun.access_key_secret_file"));
    assert!(all[0].message.contains("mode 0640"), "{}", all[0].message);
    assert!(all[0].message.contains("chmod 600"));
    assert!(!all[0].message.contains("not-a-real-secret"));

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = parse(Path::new(FILE), text, dir.path()).unwrap().settings;
    assert_eq!(s.aliyun.access_key_secret_file, Some(secret));

    let all = problems_in("[aliyun]\naccess_key_secret_file = \"nope\"\n", dir.path());
    assert!(all[0].message.contains("cannot be inspected"));
}

#[test]
fn other_string_values_are_checked() {
    let p = problem("[aliyun]\nregion = \"CN Hangzhou\"\n");
    assert_eq!(p.key.as_deref(), Some("aliyun.region"));
    let p = problem("[aliyun]\naccess_key_id = \"\"\n");
    assert_eq!(p.key.as_deref(), Some("aliyun.access_key_id"));
    let p = problem("[state]\ndir = \"\"\n");
    assert_eq!(p.key.as_deref(), Some("state.dir"));
    let p = problem("[watch]\npaths = [\"\"]\n");
    assert_eq!(p.key.as_deref(), Some("watch.paths"));
}

#[test]
fn load_reports_unreadable_and_non_utf8_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let err = load(&missing).unwrap_err();
    assert_eq!(err.kind(), "config-unreadable");
    let text = err.to_string();
    assert!(text.contains(&missing.display().to_string()) && text.contains("-c/--config"));

    let err = load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("folder"), "{err}");

    let binary = dir.path().join("binary.toml");
    std::fs::write(&binary, b"a = \"\xff\"\n").unwrap();
    let err = load(&binary).unwrap_err();
    assert!(err.to_string().contains("not UTF-8"), "{err}");

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[watch]\npaths = [\"live\"]\n").unwrap();
    let s = load(&good).unwrap().settings;
    assert_eq!(s.watch.paths, [dir.path().join("live")]);
    assert_eq!(s.path, good);
}

// ---- the pure validation, with the named files gathered by hand ----

#[test]
fn named_files_are_what_the_walk_looks_up() {
    let base = Path::new("/etc/certrotd");
    let named = walk::named_files(
        "[aliyun]\naccess_key_secret_file = \"ak\"\n[cdn]\ndomains_file = \"/d.txt\"\n",
        base,
    );
    assert_eq!(named.read, [PathBuf::from("/d.txt")]);
    assert_eq!(named.inspect, [base.join("ak")]);
    // Wrong types and an empty secret path name no file (the walk reports them).
    let named = walk::named_files(
        "[aliyun]\naccess_key_secret_file = \"\"\n[cdn]\ndomains_file = 3\n",
        base,
    );
    assert_eq!(named, files::Named::default());
    assert_eq!(
        walk::named_files("cdn = 1\n", base),
        files::Named::default()
    );
    // `.` is a path (a folder: the walk says it is not a regular file), not an empty one.
    let named = walk::named_files("[aliyun]\naccess_key_secret_file = \".\"\n", base);
    assert_eq!(named.inspect, [base.join(".")]);
}

#[test]
fn validation_uses_the_gathered_bytes_and_facts_only() {
    let base = Path::new("/nowhere");
    let text = "[aliyun]\naccess_key_secret_file = \"ak\"\n[cdn]\ndomains_file = \"d.txt\"\n";
    let facts = |mode| files::Facts {
        regular: true,
        mode,
    };
    let gathered = Files::default()
        .with_contents(
            base.join("d.txt"),
            Ok(b"a.example.com\n# c\nB.example.com\n".to_vec()),
        )
        .with_facts(base.join("ak"), Ok(facts(0o600)));
    let s = validate(Path::new(FILE), text, base, &gathered)
        .unwrap()
        .settings;
    assert_eq!(s.cdn.domains, ["a.example.com", "b.example.com"]);
    assert_eq!(s.aliyun.access_key_secret_file, Some(base.join("ak")));

    let open = Files::default()
        .with_contents(base.join("d.txt"), Ok(b"a.example.com\n".to_vec()))
        .with_facts(base.join("ak"), Ok(facts(0o644)));
    let Err(ConfigError::Invalid { problems, .. }) = validate(Path::new(FILE), text, base, &open)
    else {
        panic!("expected problems")
    };
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].message.contains("mode 0644"),
        "{}",
        problems[0].message
    );

    let not_a_file = Files::default()
        .with_contents(base.join("d.txt"), Ok(b"a.example.com\n".to_vec()))
        .with_facts(
            base.join("ak"),
            Ok(files::Facts {
                regular: false,
                mode: 0o700,
            }),
        );
    let Err(ConfigError::Invalid { problems, .. }) =
        validate(Path::new(FILE), text, base, &not_a_file)
    else {
        panic!("expected problems")
    };
    assert!(
        problems[0].message.contains("not a regular file"),
        "{problems:#?}"
    );
}

#[test]
fn a_named_file_left_out_of_the_gathered_files_is_a_problem() {
    let text = "[aliyun]\naccess_key_secret_file = \"ak\"\n[cdn]\ndomains_file = \"d.txt\"\n";
    let Err(ConfigError::Invalid { problems, .. }) =
        validate(Path::new(FILE), text, Path::new("/x"), &Files::default())
    else {
        panic!("expected problems")
    };
    let keys: Vec<_> = problems.iter().map(|p| p.key.as_deref()).collect();
    assert_eq!(
        keys,
        [
            Some("aliyun.access_key_secret_file"),
            Some("cdn.domains_file")
        ]
    );
    for p in &problems {
        assert!(
            p.message.contains("was not read before validation"),
            "{}",
            p.message
        );
    }
}

#[test]
fn a_domains_file_that_is_a_fifo_or_too_large_is_a_located_problem() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.txt");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let all = problems_in("[cdn]\ndomains_file = \"fifo.txt\"\n", dir.path());
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].line, all[0].col), (2, 16));
    assert!(
        all[0]
            .message
            .contains("a FIFO (named pipe), not a regular file"),
        "{}",
        all[0].message
    );
    let big = std::fs::File::create(dir.path().join("big.txt")).unwrap();
    big.set_len(MAX_FILE_BYTES + 1).unwrap();
    let all = problems_in("[cdn]\ndomains_file = \"big.txt\"\n", dir.path());
    assert!(all[0].message.contains("byte limit"), "{}", all[0].message);
}

#[test]
fn a_config_file_that_is_a_fifo_is_unreadable_with_a_remedy() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("certrotd.toml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let err = load(&fifo).unwrap_err();
    assert_eq!(err.kind(), "config-unreadable");
    let text = err.to_string();
    assert!(text.contains("a FIFO (named pipe)"), "{text}");
    assert!(text.contains("replace it with a regular file"), "{text}");
    let big = dir.path().join("big.toml");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(MAX_FILE_BYTES + 1)
        .unwrap();
    let text = load(&big).unwrap_err().to_string();
    assert!(text.contains("not a certrotd configuration"), "{text}");
    let looped = dir.path().join("loop.toml");
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    let text = load(&looped).unwrap_err().to_string();
    assert!(text.contains("give certrotd's user read access"), "{text}");
}

#[test]
fn metrics_and_notify_are_off_by_default() {
    let s = ok("").settings;
    assert_eq!(s.metrics.listen, None);
    assert!(s.notify.command.is_empty());
    assert_eq!(s.notify.timeout, Duration::from_secs(60));
}

#[test]
fn metrics_and_notify_are_read() {
    let loaded = ok("[cdn]\ndomains = [\"a.example.com\"]\n\
                     [metrics]\nlisten = \"127.0.0.1:9466\"\n\
                     [notify]\ncommand = [\"/usr/local/bin/alert\", \"--to\", \"ops\"]\ntimeout_secs = 5\n");
    let s = loaded.settings;
    assert_eq!(
        s.metrics.listen,
        Some("127.0.0.1:9466".parse().expect("addr"))
    );
    assert_eq!(s.notify.command, ["/usr/local/bin/alert", "--to", "ops"]);
    assert_eq!(s.notify.timeout, Duration::from_secs(5));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn the_dcdn_section_has_its_defaults_and_its_domains() {
    let s = ok("").settings;
    assert_eq!(s.dcdn.endpoint, "https://dcdn.aliyuncs.com");
    assert!(s.dcdn.domains.is_empty());
    let loaded = ok(
        "[cdn]\ndomains = [\"a.example.com\"]\n[dcdn]\nendpoint = \"http://127.0.0.1:9\"\n\
         domains = [\"Edge.example.com\", \"edge.example.com\", \".example.org\"]\n",
    );
    let s = loaded.settings;
    assert_eq!(s.dcdn.endpoint, "http://127.0.0.1:9");
    assert_eq!(s.dcdn.domains, [".example.org", "edge.example.com"]);
    assert_eq!(
        s.managed(),
        [
            (".example.org".to_string(), Product::Dcdn),
            ("a.example.com".to_string(), Product::Cdn),
            ("edge.example.com".to_string(), Product::Dcdn),
        ]
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn a_non_loopback_metrics_address_is_a_warning() {
    let loaded = ok("[cdn]\ndomains = [\"a.example.com\"]\n[metrics]\nlisten = \"0.0.0.0:9466\"\n");
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert_eq!(loaded.warnings[0].key.as_deref(), Some("metrics.listen"));
    assert!(
        loaded.warnings[0]
            .message
            .contains("reachable from other hosts")
    );
}

#[test]
fn bad_metrics_and_notify_values_are_located_and_explained() {
    let p = problem("[metrics]\nlisten = \"localhost\"\n");
    assert_eq!((p.line, p.key.as_deref()), (2, Some("metrics.listen")));
    assert!(p.message.contains("127.0.0.1:9466"), "{}", p.message);

    let p = problem("[notify]\ncommand = [\"mail\", \"-s\", \"x\"]\n");
    assert_eq!(p.key.as_deref(), Some("notify.command"));
    assert!(p.message.contains("absolute path"), "{}", p.message);

    let p = problem("[notify]\ncommand = []\n");
    assert!(p.message.contains("absolute path"), "{}", p.message);

    let p = problem("[notify]\ncommand = [\"/bin/true\"]\ntimeout_secs = 0\n");
    assert_eq!(p.key.as_deref(), Some("notify.timeout_secs"));

    let p = problem("[notify]\ncommnd = [\"/bin/true\"]\n");
    assert!(p.message.contains("command"), "{}", p.message);
}

#[test]
fn dcdn_problems_are_located() {
    let p = problem("[dcdn]\nendpoint = \"http://dcdn.example.com\"\n");
    assert_eq!(p.key.as_deref(), Some("dcdn.endpoint"));
    assert_eq!((p.line, p.col), (2, 12));
    assert!(p.message.contains("loopback"), "{}", p.message);
    let p = problem("[dcdn]\ndomians = [\"a.example.com\"]\n");
    assert!(
        p.message.contains("did you mean `domains`?"),
        "{}",
        p.message
    );
    let p = problem("[dcdn]\ndomains = [\"*.example.com\"]\n");
    assert_eq!(p.key.as_deref(), Some("dcdn.domains"));
}

#[test]
fn a_domain_under_both_products_is_refused_where_dcdn_lists_it() {
    let p = problem(
        "[cdn]\ndomains = [\"a.example.com\", \"b.example.com\"]\n[dcdn]\n\
         domains = [\"c.example.com\", \"B.example.com\"]\n",
    );
    assert_eq!(p.key.as_deref(), Some("dcdn.domains"));
    assert_eq!((p.line, p.col), (4, 29));
    assert!(
        p.message
            .contains("b.example.com is listed under both [cdn] and [dcdn]"),
        "{}",
        p.message
    );
    // In a domains file: its line and column.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("edge.txt"),
        "c.example.com\n  a.example.com # dup\n",
    )
    .unwrap();
    let all = problems_in(
        "[cdn]\ndomains = [\"a.example.com\"]\n[dcdn]\ndomains_file = \"edge.txt\"\n",
        dir.path(),
    );
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0].file, dir.path().join("edge.txt"));
    assert_eq!((all[0].line, all[0].col), (2, 3));
}
