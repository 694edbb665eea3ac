//! `certrotd completions` and `certrotd man`: generated from the real command line, so every
//! subcommand and its options appear; a bad folder is a clear error that writes nothing.

use std::fs;

use crate::harness::{Env, certrotd, run_with};

const SUBCOMMANDS: [&str; 6] = ["check", "sync", "status", "run", "emulate", "demo"];

#[test]
fn completions_name_every_subcommand_and_option() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let mut cmd = certrotd(env.path());
        cmd.args(["completions", shell]);
        let out = run_with(cmd);
        out.expect_status(0);
        for sub in SUBCOMMANDS {
            assert!(
                out.stdout.contains(sub),
                "{shell}: no {sub} in\n{}",
                out.stdout
            );
        }
        assert!(
            out.stdout.contains("dry-run"),
            "{shell}: sync --dry-run missing"
        );
    }
    let mut cmd = certrotd(env.path());
    cmd.args(["completions", "tcsh"]);
    run_with(cmd)
        .expect_status(2)
        .expect_contains("invalid value 'tcsh'");
}

#[test]
fn man_writes_one_page_per_command() {
    let env = Env::new();
    let dir = env.join("man");
    fs::create_dir(&dir).unwrap();
    let mut cmd = certrotd(env.path());
    cmd.args(["man", "--dir"]).arg(&dir);
    let out = run_with(cmd);
    out.expect_status(0);
    let top = fs::read_to_string(dir.join("certrotd.1")).unwrap();
    assert!(top.contains(".TH certrotd 1"), "{top}");
    for sub in SUBCOMMANDS {
        let page = dir.join(format!("certrotd-{sub}.1"));
        let text = fs::read_to_string(&page).unwrap_or_else(|e| panic!("{page:?}: {e}"));
        assert!(
            text.contains(&format!("certrotd\\-{sub}")),
            "{page:?}:\n{text}"
        );
        assert!(
            out.stdout.contains(&*page.to_string_lossy()),
            "{}",
            out.stdout
        );
    }
    assert!(!dir.join("certrotd-help.1").exists());
}

#[test]
fn man_into_a_missing_folder_is_named_and_writes_nothing() {
    let env = Env::new();
    let missing = env.join("no-such-folder");
    let mut cmd = certrotd(env.path());
    cmd.args(["man", "--dir"]).arg(&missing);
    run_with(cmd)
        .expect_status(1)
        .expect_contains("cannot write the man pages to")
        .expect_contains("no-such-folder");
    assert!(!missing.exists());
}
