//! The command line: `-c/--config` only where a configuration is read.

use crate::harness::{Env, certrotd, run_with};

#[test]
fn emulate_and_demo_do_not_offer_a_configuration_file() {
    let env = Env::new();
    for sub in ["emulate", "demo"] {
        let mut cmd = certrotd(env.path());
        cmd.args([sub, "--help"]);
        let out = run_with(cmd);
        out.expect_status(0);
        assert!(
            !out.stdout.contains("--config"),
            "{sub} --help:\n{}",
            out.stdout
        );
    }
    for sub in ["check", "sync", "status", "run"] {
        let mut cmd = certrotd(env.path());
        cmd.args([sub, "--help"]);
        let out = run_with(cmd);
        assert!(
            out.stdout.contains("-c, --config <PATH>"),
            "{sub} --help:\n{}",
            out.stdout
        );
    }
}

#[test]
fn an_error_does_not_repeat_its_cause() {
    let env = Env::new();
    let mut cmd = certrotd(env.path());
    cmd.args(["emulate", "--domains-file", "/nonexistent/domains.txt"]);
    let out = run_with(cmd);
    out.expect_status(1)
        .expect_contains("/nonexistent/domains.txt");
    assert_eq!(
        out.stderr.matches("No such file or directory").count(),
        1,
        "{}",
        out.stderr
    );
}
