//! `[notify] command` end to end: a real `certrotd run` against the in-process emulator runs
//! a small program (a shell script written by the test) on each event, with the documented
//! environment; a program that hangs neither stalls deployment nor a stop.

use std::fs;
use std::path::Path;

use certrotd::testca::LeafKey;

use crate::harness::{self, Certbot, Env, RunningDaemon, issue, issue_with, write_mode};

/// A notify program that appends one line per run to `out`:
/// `EVENT|DOMAINS|LINEAGE|MESSAGE|names of its environment variables`.
pub(crate) fn recorder(env: &Env, out: &Path) -> String {
    let script = env.join("notify.sh");
    let text = format!(
        "#!/bin/sh\nnames=$(env | cut -d= -f1 | sort | tr '\\n' ' ')\n\
         printf '%s|%s|%s|%s|%s\\n' \"$CERTROTD_EVENT\" \"$CERTROTD_DOMAINS\" \"$CERTROTD_LINEAGE\" \"$CERTROTD_MESSAGE\" \"$names\" >> {:?}\n\
         echo \"told $CERTROTD_EVENT\"\n",
        out.display().to_string()
    );
    write_mode(&script, text, 0o755);
    format!("command = [{:?}]", script.display().to_string())
}

pub(crate) fn events(out: &Path) -> Vec<Vec<String>> {
    fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

fn event<'e>(all: &'e [Vec<String>], kind: &str) -> Option<&'e Vec<String>> {
    all.iter().find(|e| e[0] == kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_fires_once_with_the_documented_environment() {
    let env = Env::new();
    let known = ["a.example.com", "b.example.com"];
    let managed = ["a.example.com", "b.example.com", "gone.example.com"];
    let emu = harness::start_emulator(&known).await;
    let certbot = Certbot::new(env.join("letsencrypt"));
    // 10 of 90 days left: expiring (less than a third of the lifetime).
    let site = certbot.add("site", &issue_with(&managed, -80, 10, LeafKey::EcdsaP256));
    let old = certbot.add(
        "old",
        &issue_with(&["old.example.com"], -100, -10, LeafKey::EcdsaP256),
    );
    let out = env.join("events.txt");
    harness::emulator_config(&env, &emu.endpoint(), &managed)
        .watch(certbot.live())
        .set("notify", &recorder(&env, &out))
        .write(&env);
    let daemon = RunningDaemon::start(&env);
    harness::wait_for(
        "deployed, push-failed, expiring and invalid notifications",
        20,
        || {
            let all = events(&out);
            ["deployed", "push-failed", "expiring", "invalid"]
                .iter()
                .all(|k| event(&all, k).is_some())
        },
        || format!("{:?}\n{}", events(&out), daemon.log()),
    )
    .await;
    let all = events(&out);
    let site_id = site.display().to_string();
    let deployed = event(&all, "deployed").expect("deployed");
    assert_eq!(deployed[1], "a.example.com,b.example.com", "{all:?}");
    assert_eq!(deployed[2], site_id);
    let failed = event(&all, "push-failed").expect("push-failed");
    assert_eq!(failed[1], "gone.example.com");
    assert!(failed[3].contains("InvalidDomain.NotFound"), "{failed:?}");
    let expiring = event(&all, "expiring").expect("expiring");
    assert_eq!(expiring[1], "a.example.com,b.example.com,gone.example.com");
    assert!(expiring[3].contains("expires in"), "{expiring:?}");
    let invalid = event(&all, "invalid").expect("invalid");
    assert_eq!(invalid[2], old.display().to_string());
    assert!(invalid[3].contains("expired"), "{invalid:?}");
    // One deployed event per certificate; every message one line; no credential in the
    // environment.
    assert_eq!(
        all.iter().filter(|e| e[0] == "deployed").count(),
        1,
        "{all:?}"
    );
    let allowed = ["PATH", "HOME", "LANG", "TZ", "PWD", "OLDPWD", "SHLVL", "_"];
    for e in &all {
        assert_eq!(e.len(), 5, "one line per run: {e:?}");
        for name in e[4].split_whitespace() {
            assert!(
                name.starts_with("CERTROTD_") || allowed.contains(&name),
                "unexpected variable {name} in the notify environment"
            );
        }
    }
    let log = daemon.log();
    harness::wait_for(
        "the command's output in the log",
        10,
        || RunningDaemon::log(&daemon).contains("notify output: told deployed"),
        || daemon.log(),
    )
    .await;
    assert!(!log.contains("notify: cannot start"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_command_stalls_neither_deployment_nor_a_stop() {
    let env = Env::new();
    let domains = ["a.example.com"];
    let emu = harness::start_emulator(&domains).await;
    let certbot = Certbot::new(env.join("letsencrypt"));
    let first = issue(&domains);
    certbot.add("a", &first);
    let script = env.join("hang.sh");
    write_mode(&script, "#!/bin/sh\nexec sleep 300\n", 0o755);
    harness::emulator_config(&env, &emu.endpoint(), &domains)
        .watch(certbot.live())
        .set(
            "notify",
            &format!("command = [{:?}]", script.display().to_string()),
        )
        .set("notify", "timeout_secs = 120")
        .write(&env);
    let mut daemon = RunningDaemon::start(&env);
    let fp = |i: &certrotd::testca::Issued| {
        harness::fingerprint_of(i.fullchain_pem.as_bytes(), i.key_pem.as_bytes())
    };
    harness::wait_for(
        "the first deployment",
        15,
        || harness::emulator_serves(&emu, "a.example.com", fp(&first)),
        || daemon.log(),
    )
    .await;
    // The deployed notification of the first certificate is hanging now; a renewal still
    // goes out.
    let second = issue(&domains);
    certbot.renew("a", &second);
    harness::wait_for(
        "the renewal, while the notification hangs",
        15,
        || harness::emulator_serves(&emu, "a.example.com", fp(&second)),
        || daemon.log(),
    )
    .await;
    assert!(
        !daemon.log().contains("notify: command done"),
        "{}",
        daemon.log()
    );
    // A stop kills it after a short grace instead of waiting for its timeout.
    assert_eq!(daemon.terminate(15).await, 0, "{}", daemon.log());
    assert!(daemon.log().contains("killed at stop"), "{}", daemon.log());
}

/// A torn renewal in progress (acme.sh has written the new chain, its key lands seconds
/// later) is not `invalid`: no `invalid` event fires, and the completed renewal fires one
/// `deployed` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_renewal_in_progress_is_not_reported_invalid() {
    let env = Env::new();
    let domains = ["shop.example.com"];
    let emu = harness::start_emulator(&domains).await;
    let acme = harness::AcmeSh::new(env.join("acme.sh"));
    acme.add("shop.example.com", true, &issue(&domains));
    let out = env.join("events.txt");
    harness::emulator_config(&env, &emu.endpoint(), &domains)
        .watch(&acme.home)
        .set("notify", &recorder(&env, &out))
        .write(&env);
    let daemon = RunningDaemon::start(&env);
    let deployed = |out: &Path| {
        events(out)
            .iter()
            .filter(|e| e[0] == "deployed" && e[1] == "shop.example.com")
            .count()
    };
    harness::wait_for(
        "the first deployed event",
        20,
        || deployed(&out) == 1,
        || daemon.log(),
    )
    .await;

    let new = issue(&domains);
    acme.write_cert("shop.example.com", true, &new);
    // The key lands 1.5 s (several quiet periods) after the chain.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    acme.write_key("shop.example.com", true, &new);
    let fp = harness::fingerprint_of(new.fullchain_pem.as_bytes(), new.key_pem.as_bytes());
    harness::wait_for(
        "the renewal deployed and told",
        20,
        || harness::emulator_serves(&emu, "shop.example.com", fp) && deployed(&out) == 2,
        || daemon.log(),
    )
    .await;
    assert!(
        daemon.log().contains("renewal in progress"),
        "the renewal was seen torn: {}",
        daemon.log()
    );
    let all = events(&out);
    assert!(event(&all, "invalid").is_none(), "{all:?}");
    emu.shutdown().await;
}
