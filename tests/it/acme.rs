//! End to end with real ACME clients: pebble (the ACME test server, validating no challenge
//! with `PEBBLE_VA_ALWAYS_VALID=1`) issues; certbot (RSA, ECDSA, a dns-01 wildcard) and lego
//! write and renew their folders for real; `certrotd run` watches certbot's `live/` and
//! lego's `certificates/` and deploys to the in-process emulator. Each renewal must reach
//! its domains and nothing else; certbot running the shipped deploy hook next to the daemon
//! must report no hook error.
//!
//! Needs the Debian packages `pebble`, `certbot` and `lego` (`.ci/run` installs them). Where
//! one is missing the test says so loudly on stderr and passes, unless
//! `CERTROTD_REQUIRE_ACME_TOOLS=1` (set by `.ci/run`), which turns the skip into a failure.
//!
//! pebble gets a TLS certificate for 127.0.0.1 from the harness's test CA, free loopback
//! ports, and the clients trust the CA's root (`REQUESTS_CA_BUNDLE`, `LEGO_CA_CERTIFICATES`).
//! Every external command runs with a deadline; waits poll.

use std::collections::BTreeSet;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certrotd::cert::Fingerprint;
use certrotd::emulator::{Emulator, EmulatorConfig, LogEntry};
use certrotd::testca::Leaf;

use crate::harness::{
    self, Env, RunningDaemon, ca, days, emulator_config, emulator_serves, fingerprint_of, wait_for,
};

const HOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/certbot-deploy-hook.sh");

/// The longest any one client command may take.
const COMMAND_SECS: u64 = 120;

/// The three tools, or `None` after saying loudly which one is missing.
fn tools() -> Option<(PathBuf, PathBuf, PathBuf)> {
    let find = |name: &str| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/bin".into(), "/usr/sbin".into(), "/bin".into()])
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    };
    let missing: Vec<&str> = ["pebble", "certbot", "lego"]
        .into_iter()
        .filter(|t| find(t).is_none())
        .collect();
    if missing.is_empty() {
        return Some((find("pebble")?, find("certbot")?, find("lego")?));
    }
    let message = format!(
        "the real-ACME-client test needs {} (Debian: apt-get install -y pebble lego certbot; \
         .ci/run installs them)",
        missing.join(", ")
    );
    assert!(
        std::env::var_os("CERTROTD_REQUIRE_ACME_TOOLS").is_none_or(|v| v != "1"),
        "CERTROTD_REQUIRE_ACME_TOOLS=1 but {message}"
    );
    let bar = "!".repeat(78);
    eprintln!("\n{bar}\n!!! SKIPPED: {message}\n{bar}\n");
    None
}

/// A loopback port free right now (the OS picks it; the listener is closed again).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// What a bounded command produced.
struct Ran {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn all(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }

    fn expect_ok(self, what: &str) -> Ran {
        assert_eq!(self.status, Some(0), "{what} failed:\n{}", self.all());
        self
    }
}

/// Runs `cmd` to its end, killing it after [`COMMAND_SECS`]; output through files in `dir`.
async fn run_bounded(mut cmd: Command, dir: &Path, what: &str) -> Ran {
    fs::create_dir_all(dir).expect("output folder");
    let (out, err) = (dir.join("cmd.stdout"), dir.join("cmd.stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).expect("stdout file"))
        .stderr(fs::File::create(&err).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(COMMAND_SECS);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ran = Ran {
        status,
        stdout: fs::read_to_string(&out).unwrap_or_default(),
        stderr: fs::read_to_string(&err).unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "{what} did not finish in {COMMAND_SECS} s:\n{}",
        ran.all()
    );
    ran
}

/// A running pebble on free loopback ports; killed when dropped.
struct Pebble {
    child: Child,
    directory: String,
    /// The root of the CA that signed pebble's TLS certificate (for the clients to trust).
    root: PathBuf,
    log: PathBuf,
}

impl Pebble {
    async fn start(pebble: &Path, dir: &Path) -> Pebble {
        fs::create_dir_all(dir).expect("pebble folder");
        let tls = ca()
            .issue(&Leaf::new(&["127.0.0.1"], days(-1), days(30)))
            .expect("pebble's TLS certificate");
        let (cert, key, root) = (
            dir.join("cert.pem"),
            dir.join("key.pem"),
            dir.join("root.pem"),
        );
        harness::write(&cert, &tls.fullchain_pem);
        harness::write_mode(&key, &tls.key_pem, 0o600);
        harness::write(&root, ca().root_pem());
        let port = free_port();
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{}", free_port()),
            "certificate": cert,
            "privateKey": key,
            "httpPort": free_port(),
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let config_path = dir.join("pebble-config.json");
        harness::write(&config_path, config.to_string());
        let log = dir.join("pebble.log");
        let file = fs::File::create(&log).expect("pebble log");
        let child = Command::new(pebble)
            .arg("-config")
            .arg(&config_path)
            .env("PEBBLE_VA_ALWAYS_VALID", "1")
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("start pebble");
        let mut me = Pebble {
            child,
            directory: format!("https://127.0.0.1:{port}/dir"),
            root,
            log,
        };
        let context = |log: &Path| fs::read_to_string(log).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = me.child.try_wait().expect("wait").is_some();
            assert!(
                !exited && Instant::now() < deadline,
                "pebble did not start listening on {port}; its log:\n{}",
                context(&me.log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        me
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// certbot with every folder under `base`, talking to pebble.
struct Certbot {
    bin: PathBuf,
    base: PathBuf,
    server: String,
    root: PathBuf,
}

impl Certbot {
    fn live(&self) -> PathBuf {
        self.base.join("config/live")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .arg("--config-dir")
            .arg(self.base.join("config"))
            .arg("--work-dir")
            .arg(self.base.join("work"))
            .arg("--logs-dir")
            .arg(self.base.join("logs"))
            .args(["--non-interactive", "--server", &self.server])
            .env("REQUESTS_CA_BUNDLE", &self.root);
        cmd
    }

    /// `certbot certonly` for `names` as lineage `name`, with the extra `args`.
    async fn issue(&self, name: &str, names: &[&str], args: &[&str]) {
        let mut cmd = self.command(&["certonly", "--cert-name", name]);
        cmd.args(["--agree-tos", "--register-unsafely-without-email"]);
        for n in names {
            cmd.args(["-d", n]);
        }
        cmd.args(args);
        run_bounded(cmd, &self.base, &format!("certbot certonly {name}"))
            .await
            .expect_ok("certbot certonly");
    }

    /// `certbot renew --force-renewal` of one lineage; `extra` e.g. a deploy hook.
    async fn renew(&self, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Ran {
        let mut cmd = self.command(&[
            "renew",
            "--cert-name",
            name,
            "--force-renewal",
            "--no-random-sleep-on-renew",
        ]);
        cmd.args(extra);
        cmd.envs(env.iter().copied());
        run_bounded(cmd, &self.base, &format!("certbot renew {name}"))
            .await
            .expect_ok("certbot renew")
    }

    fn fingerprint(&self, name: &str) -> Fingerprint {
        let live = self.live().join(name);
        let read = |f: &str| fs::read(live.join(f)).expect("certbot's file");
        fingerprint_of(&read("fullchain.pem"), &read("privkey.pem"))
    }
}

/// lego with `--path` under `base`, solving http-01 on a free port (pebble never connects).
struct Lego {
    bin: PathBuf,
    base: PathBuf,
    server: String,
    root: PathBuf,
    http_port: u16,
}

impl Lego {
    fn certificates(&self) -> PathBuf {
        self.base.join("certificates")
    }

    async fn run(&self, domain: &str, action: &[&str]) {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--path")
            .arg(&self.base)
            .args(["--accept-tos", "--email", "acme@example.com"])
            .args(["--server", &self.server, "--key-type", "ec256", "--http"])
            .args(["--http.port", &format!("127.0.0.1:{}", self.http_port)])
            .args(["-d", domain])
            .args(action)
            .env("LEGO_CA_CERTIFICATES", &self.root);
        fs::create_dir_all(&self.base).expect("lego folder");
        run_bounded(cmd, &self.base, &format!("lego {action:?}"))
            .await
            .expect_ok("lego");
    }

    fn fingerprint(&self, domain: &str) -> Fingerprint {
        let read = |ext: &str| {
            fs::read(self.certificates().join(format!("{domain}.{ext}"))).expect("lego's file")
        };
        fingerprint_of(&read("crt"), &read("key"))
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The write calls from `from` on.
fn writes_since(emu: &Emulator, from: usize) -> Vec<LogEntry> {
    emu.log()
        .into_iter()
        .filter(LogEntry::is_write)
        .skip(from)
        .collect()
}

fn write_count(emu: &Emulator) -> usize {
    emu.log().iter().filter(|e| e.is_write()).count()
}

/// Waits until every domain of `domains` serves `fp`, then checks that every write call
/// since `mark` was for those domains only, with `fp`. Returns the new mark.
async fn renewal_deployed_alone(
    what: &str,
    emu: &Emulator,
    daemon: &RunningDaemon,
    mark: usize,
    domains: &[&str],
    fp: Fingerprint,
) -> usize {
    wait_for(
        what,
        60,
        || domains.iter().all(|d| emulator_serves(emu, d, fp)),
        || daemon.log(),
    )
    .await;
    let calls = writes_since(emu, mark);
    assert!(!calls.is_empty(), "{what}: no write call");
    let allowed: BTreeSet<String> = strings(domains).into_iter().collect();
    for call in &calls {
        assert!(
            call.domains.iter().all(|d| allowed.contains(d)),
            "{what}: a call for other domains: {call:?}\n{}",
            daemon.log()
        );
        assert_eq!(call.fingerprint, Some(fp), "{what}: {call:?}");
        assert!(call.succeeded(), "{what}: refused: {call:?}");
    }
    mark + calls.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certbot_and_lego_renewals_are_deployed_alone_and_the_shipped_hook_reports_no_error() {
    let Some((pebble_bin, certbot_bin, lego_bin)) = tools() else {
        return;
    };
    let env = Env::new();
    let pebble = Pebble::start(&pebble_bin, &env.join("pebble")).await;
    let certbot = Certbot {
        bin: certbot_bin,
        base: env.join("letsencrypt"),
        server: pebble.directory.clone(),
        root: pebble.root.clone(),
    };
    let lego = Lego {
        bin: lego_bin,
        base: env.join("lego"),
        server: pebble.directory.clone(),
        root: pebble.root.clone(),
        http_port: free_port(),
    };
    // http-01 through certbot's own server on a free port (pebble never connects to it).
    let http = free_port().to_string();
    let standalone = |key_type| {
        [
            "--standalone",
            "--http-01-address",
            "127.0.0.1",
            "--http-01-port",
            http.as_str(),
            "--key-type",
            key_type,
        ]
    };
    certbot
        .issue("rsa", &["rsa.example.com"], &standalone("rsa"))
        .await;
    certbot
        .issue("ec", &["ec.example.com"], &standalone("ecdsa"))
        .await;
    let manual = [
        "--manual",
        "--preferred-challenges",
        "dns-01",
        "--manual-auth-hook",
        "true",
    ];
    certbot
        .issue("wild", &["*.wild.example.com"], &manual)
        .await;
    lego.run("lego.example.com", &["run"]).await;

    let wild = [".wild.example.com", "shop.wild.example.com"];
    let all = [
        "rsa.example.com",
        "ec.example.com",
        wild[0],
        wild[1],
        "lego.example.com",
    ];
    let emu = Emulator::start(
        "127.0.0.1:0".parse().expect("addr"),
        EmulatorConfig::with_domains(all.iter().copied()),
    )
    .await
    .expect("emulator starts");
    emulator_config(&env, &emu.endpoint(), &all)
        .watch(certbot.live())
        .watch(lego.certificates())
        .write(&env);
    let daemon = RunningDaemon::start(&env);
    let first = [
        ("rsa.example.com", certbot.fingerprint("rsa")),
        ("ec.example.com", certbot.fingerprint("ec")),
        (wild[0], certbot.fingerprint("wild")),
        (wild[1], certbot.fingerprint("wild")),
        ("lego.example.com", lego.fingerprint("lego.example.com")),
    ];
    wait_for(
        "the first deployment of every domain",
        60,
        || first.iter().all(|(d, fp)| emulator_serves(&emu, d, *fp)),
        || format!("{}\npebble:\n{}", daemon.log(), pebble.log()),
    )
    .await;
    let mut mark = write_count(&emu);

    // Each client renews for real; only the renewed lineage's domains are called.
    certbot.renew("rsa", &[], &[]).await;
    let fp = certbot.fingerprint("rsa");
    assert_ne!(fp, first[0].1, "certbot renewed");
    let what = "certbot's RSA renewal";
    mark = renewal_deployed_alone(what, &emu, &daemon, mark, &["rsa.example.com"], fp).await;

    certbot.renew("wild", &[], &[]).await;
    let fp = certbot.fingerprint("wild");
    mark =
        renewal_deployed_alone("certbot's wildcard renewal", &emu, &daemon, mark, &wild, fp).await;

    let days = ["renew", "--days", "9999", "--no-random-sleep"];
    lego.run("lego.example.com", &days).await;
    let fp = lego.fingerprint("lego.example.com");
    assert_ne!(fp, first[4].1, "lego renewed");
    let what = "lego's renewal";
    mark = renewal_deployed_alone(what, &emu, &daemon, mark, &["lego.example.com"], fp).await;

    // certbot runs the shipped deploy hook while the daemon runs, outside systemd (or with
    // no such unit): `certrotd sync` hands over, and certbot sees no hook error.
    let config = env.join("certrotd.toml").display().to_string();
    let hook_env = [
        ("CERTROTD", harness::BIN),
        ("CERTROTD_CONFIG", config.as_str()),
        ("CERTROTD_SERVICE", "certrotd-acme-test-absent.service"),
        ("CERTROTD_KEY_GROUP", ""),
    ];
    let ran = certbot
        .renew("ec", &["--deploy-hook", HOOK], &hook_env)
        .await;
    let output = ran.all();
    for bad in ["reported error code", "ran with error output"] {
        assert!(!output.contains(bad), "certbot reports {bad:?}:\n{output}");
    }
    assert!(
        output.contains("handed over to the certrotd daemon"),
        "the hook's line in certbot's output:\n{output}"
    );
    let fp = certbot.fingerprint("ec");
    assert_ne!(fp, first[1].1, "certbot renewed");
    let what = "certbot's ECDSA renewal with the deploy hook";
    renewal_deployed_alone(what, &emu, &daemon, mark, &["ec.example.com"], fp).await;
}
