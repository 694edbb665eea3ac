//! `certrotd check` on real folders: every layout, the bad-input corpus, configuration
//! errors and the command line's exit codes.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use certrotd::testca::LeafKey;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::harness::*;

#[test]
fn each_layout_checks_ok() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    certbot.add("www.example.com", &issue(&["www.example.com"]));
    certbot.add("rsa.example.com", &issue_rsa(&["rsa.example.com"]));
    let acme = AcmeSh::new(env.join("acme.sh"));
    acme.add("acme.example.com", false, &issue_rsa(&["acme.example.com"]));
    acme.add("ecc.example.com", true, &issue(&["ecc.example.com"]));
    let k8s = K8sSecret::new(env.join("secrets/k8s-tls"), &issue(&["k8s.example.com"]));
    let lego = Lego::new(env.join(".lego"));
    lego.put("_.example.org", &issue(&["*.example.org", "example.org"]));
    lego.put("lego.example.com", &issue(&["lego.example.com"]));

    // (watch path, managed domains, layout, lineages expected)
    let cases: [(&Path, &[&str], &str, usize); 4] = [
        (
            &certbot.live(),
            &["www.example.com", "rsa.example.com"],
            "certbot",
            2,
        ),
        (
            &acme.home,
            &["acme.example.com", "ecc.example.com"],
            "acme.sh",
            2,
        ),
        (&env.join("secrets"), &["k8s.example.com"], "kubernetes", 1),
        (
            &lego.dir,
            &["lego.example.com", ".example.org", "example.org"],
            "lego",
            2,
        ),
    ];
    for (watch, domains, layout, lineages) in cases {
        Config::new().watch(watch).domains(domains).write(&env);
        let out = env.run(&["check"]);
        out.expect_status(0)
            .expect_contains("every managed domain covered");
        for domain in domains {
            let row = out.row(domain);
            assert!(!row.contains("no valid certificate"), "{row}");
        }
        let valid_rows: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| l.contains("VALID: "))
            .collect();
        assert_eq!(valid_rows.len(), lineages, "{}", out.all());
        for row in valid_rows {
            assert!(row.contains(&format!("  {layout}  ")), "{layout}: {row}");
        }
    }

    // All four at once, with the lineage folders named in the table.
    let mut config = Config::new();
    for (watch, _, _, _) in cases {
        config = config.watch(watch);
    }
    config
        .domains(&["www.example.com", "k8s.example.com"])
        .write(&env);
    let out = env.run(&["check"]);
    out.expect_status(0);
    for lineage in [
        certbot.lineage("rsa.example.com"),
        acme.folder("ecc.example.com", true),
        k8s.dir.clone(),
        lego.lineage("_.example.org"),
    ] {
        assert!(
            out.line_with(&lineage.display().to_string())
                .contains("VALID: ")
        );
    }
    let rsa = out.line_with("live/rsa.example.com ");
    assert!(
        rsa.contains(" certbot ") && rsa.contains(" RSA-2048 "),
        "{rsa}"
    );
}

/// One bad lineage of the corpus: its folder and the message `check` must print for it.
struct Bad {
    name: &'static str,
    expect: &'static str,
}

/// Builds the bad-input corpus under `live/`, one lineage folder each.
fn bad_corpus(live: &Path) -> Vec<Bad> {
    let good = issue(&["bad.example.com"]);
    let other = issue(&["bad.example.com"]);
    let pair = |name: &str, chain: &[u8], key: &[u8]| {
        write(&live.join(name).join("fullchain.pem"), chain);
        write(&live.join(name).join("privkey.pem"), key);
    };
    let full = good.fullchain_pem.as_bytes();
    let key = good.key_pem.as_bytes();

    pair("truncated", &full[..full.len() / 2], key);
    pair("random", &pseudo_random(2048), key);
    pair("other-key", full, other.key_pem.as_bytes());
    let expired = issue_with(&["bad.example.com"], -100, -10, LeafKey::EcdsaP256);
    pair(
        "expired",
        expired.fullchain_pem.as_bytes(),
        expired.key_pem.as_bytes(),
    );
    let future = issue_with(&["bad.example.com"], 5, 95, LeafKey::EcdsaP256);
    pair(
        "not-yet-valid",
        future.fullchain_pem.as_bytes(),
        future.key_pem.as_bytes(),
    );
    let stranger = issue(&["stranger.example.net"]);
    pair(
        "wrong-san",
        stranger.fullchain_pem.as_bytes(),
        stranger.key_pem.as_bytes(),
    );
    pair("huge", b"", key);
    sparse(&live.join("huge/fullchain.pem"), 50 * 1024 * 1024);
    fs::create_dir_all(live.join("loop")).expect("loop/");
    symlink("fullchain.pem", live.join("loop/fullchain.pem")).expect("loop link");
    write(&live.join("loop/privkey.pem"), key);
    let der = CertificateDer::from_pem_slice(good.cert_pem.as_bytes()).expect("leaf DER");
    pair("der", der.as_ref(), key);
    pair("empty", b"", key);
    let encrypted = issue_rsa(&["bad.example.com"]);
    pair(
        "encrypted-key",
        encrypted.fullchain_pem.as_bytes(),
        RSA_A_ENCRYPTED.as_bytes(),
    );
    write(&live.join("cert-only/fullchain.pem"), full);
    write(&live.join("key-only/privkey.pem"), key);

    vec![
        Bad {
            name: "truncated",
            expect: "fullchain.pem: truncated PEM",
        },
        Bad {
            name: "random",
            expect: "fullchain.pem: the file is not PEM",
        },
        Bad {
            name: "other-key",
            expect: "private key does not match the certificate",
        },
        Bad {
            name: "expired",
            expect: "fullchain.pem: expired ",
        },
        Bad {
            name: "not-yet-valid",
            expect: "fullchain.pem: not valid until ",
        },
        Bad {
            name: "wrong-san",
            expect: "cover no managed domain",
        },
        Bad {
            name: "huge",
            expect: "fullchain.pem: file is 52428800 bytes, more than the 1 MiB limit",
        },
        Bad {
            name: "loop",
            expect: "fullchain.pem: symlink loop",
        },
        Bad {
            name: "der",
            expect: "fullchain.pem: file is DER, expected PEM",
        },
        Bad {
            name: "empty",
            expect: "fullchain.pem: the file is empty",
        },
        Bad {
            name: "encrypted-key",
            expect: "privkey.pem: encrypted private keys are not supported",
        },
        Bad {
            name: "cert-only",
            expect: "fullchain.pem: certificate without a private key",
        },
        Bad {
            name: "key-only",
            expect: "privkey.pem: private key without a certificate",
        },
    ]
}

/// Deterministic bytes that are neither PEM nor DER (first byte is not 0x30).
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x2545_f491;
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect();
    if let Some(first) = out.first_mut() {
        *first = 0x42;
    }
    out
}

#[test]
fn bad_input_corpus_is_reported_lineage_by_lineage() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let good = certbot.add("good.example.com", &issue(&["good.example.com"]));
    let live = certbot.live();
    let corpus = bad_corpus(&live);

    // All at once: every bad folder named with its message, the good one still VALID.
    Config::new()
        .watch(&live)
        .domains(&["good.example.com"])
        .write(&env);
    let out = env.run(&["check"]);
    out.expect_status(1);
    assert!(
        out.line_with(&format!("{}  ", good.display()))
            .contains("VALID: 88 days")
    );
    for bad in &corpus {
        let folder = live.join(bad.name).display().to_string();
        let line = out
            .all()
            .lines()
            .find(|l| l.contains(&folder) && l.contains(bad.expect))
            .map(str::to_string);
        assert!(
            line.is_some(),
            "{}: no line naming {folder} with {:?}:\n{}",
            bad.name,
            bad.expect,
            out.all()
        );
    }
    out.expect_contains("PROBLEMS: 12 invalid lineages");

    // One at a time: each alone fails the check.
    for bad in &corpus {
        Config::new()
            .watch(live.join(bad.name))
            .domains(&["bad.example.com"])
            .write(&env);
        let out = env.run(&["check"]);
        out.expect_status(1).expect_contains(bad.expect);
        out.expect_contains(&live.join(bad.name).display().to_string());
        assert!(
            out.row("bad.example.com").contains("no valid certificate"),
            "{}: {}",
            bad.name,
            out.all()
        );
    }
}

#[test]
fn no_key_material_is_printed() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("letsencrypt"));
    let issued = issue(&["x.example.com"]);
    certbot.add("x.example.com", &issued);
    // Swapped files: the key sits where the chain should be.
    let swapped = certbot.live().join("swapped");
    write(&swapped.join("fullchain.pem"), &issued.key_pem);
    write(&swapped.join("privkey.pem"), &issued.fullchain_pem);
    Config::new()
        .watch(certbot.live())
        .domains(&["x.example.com"])
        .write(&env);
    let out = env.run(&["check"]);
    out.expect_status(1).expect_contains("swapped");
    let key_body = issued.key_pem.lines().nth(1).expect("key body line");
    assert!(!out.all().contains("PRIVATE KEY-----") && !out.all().contains(key_body));
}

/// A config file with `body`, checked: exit 78, and each `(key, line)` named on stderr.
fn expect_config_error(body: &str, named: &[(&str, usize)]) -> Output {
    let env = Env::new();
    let path = env.write_config(body);
    let out = env.run(&["check"]);
    out.expect_status(78);
    for (key, line) in named {
        let at = format!("{}:{line}:", path.display());
        let hit = out
            .stderr
            .lines()
            .any(|l| l.contains(&at) && l.contains(key));
        assert!(hit, "expected {key} at {at} in:\n{}", out.all());
    }
    out
}

#[test]
fn config_errors_exit_78_naming_key_and_line() {
    expect_config_error(
        "[watch]\npaths = [\"/tmp\"]\npath = \"/x\"\n",
        &[("unknown key `watch.path`", 3)],
    )
    .expect_contains("did you mean `paths`?");
    expect_config_error(
        "[aliyun]\nmax_domains_per_call = \"10\"\n",
        &[(
            "`aliyun.max_domains_per_call` must be an integer, found string",
            2,
        )],
    );
    expect_config_error(
        "\n[aliyun]\nendpoint = \"http://example.com\"\n",
        &[("`aliyun.endpoint`", 3)],
    )
    .expect_contains("only for loopback hosts");
    expect_config_error(
        "[aliyun]\nrequests_per_second = 0\n",
        &[(
            "`aliyun.requests_per_second` = 0 is out of range; use 1 to 100",
            2,
        )],
    );
}

#[test]
fn several_config_errors_are_all_reported() {
    let out = expect_config_error(
        "[aliyun]\nendpoint = \"http://example.com\"\nmax_attempts = 0\ncolour = \"blue\"\n\
         [watch]\ndebounce_ms = \"fast\"\n[cdn]\ndomains = [\"*.example.com\"]\n",
        &[
            ("aliyun.endpoint", 2),
            ("aliyun.max_attempts", 3),
            ("aliyun.colour", 4),
            ("watch.debounce_ms", 6),
            ("cdn.domains", 8),
        ],
    );
    out.expect_contains("5 problems")
        .expect_contains("write \".example.com\"");
    assert!(
        out.stdout.is_empty(),
        "no report on a bad config: {}",
        out.stdout
    );
}

#[test]
fn missing_config_and_config_from_the_environment() {
    let env = Env::new();
    let out = env.run(&["check"]);
    out.expect_status(78)
        .expect_contains("cannot read the configuration file");
    out.expect_contains(&env.join("certrotd.toml").display().to_string());

    // $CERTROTD_CONFIG names the file when -c is absent.
    let certbot = Certbot::new(env.join("le"));
    certbot.add("e.example.com", &issue(&["e.example.com"]));
    let path: PathBuf = env.join("elsewhere.toml");
    let text = Config::new()
        .watch(certbot.live())
        .domains(&["e.example.com"])
        .render();
    write(&path, text);
    let mut cmd = certrotd(env.path());
    cmd.arg("check").env("CERTROTD_CONFIG", &path);
    let out = run_with(cmd);
    out.expect_status(0)
        .expect_contains(&path.display().to_string());
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    let out = run_with({
        let mut c = certrotd(env.path());
        c.arg("frobnicate");
        c
    });
    out.expect_status(2);
}

#[test]
fn check_names_the_credential_source_never_the_secret() {
    let env = Env::new();
    let certbot = Certbot::new(env.join("le"));
    certbot.add("c.example.com", &issue(&["c.example.com"]));
    Config::new()
        .watch(certbot.live())
        .domains(&["c.example.com"])
        .write(&env);

    let out = env.run(&["check"]);
    out.expect_status(0)
        .expect_contains("Credentials: none usable");
    out.expect_contains("warning: credentials: no Alibaba Cloud credentials found");

    let secret = "s3cr3t-VALUE-never-printed";
    let mut cmd = env.command(&["check"]);
    cmd.env("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI5tTestKeyId123")
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", secret);
    let out = run_with(cmd);
    out.expect_status(0);
    assert!(
        out.line_with("Credentials: ").contains("environment"),
        "{}",
        out.all()
    );
    assert!(!out.all().contains(secret) && !out.all().contains("LTAI5tTestKeyId123"));
}
