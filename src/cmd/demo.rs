//! `certrotd demo`: certrotd's whole job with no configuration and no network. Starts the
//! emulator on a free loopback port, lays out a temporary certbot-style tree with freshly
//! issued certificates, syncs (the emulator answers like an account whose batch call Alibaba
//! has retired, so the first sync shows certrotd falling back to the per-domain call by
//! itself), renews one certificate the way certbot does (new files in
//! `archive/`, then each `live/` link re-pointed), syncs again, and prints each step. The
//! temporary folder is removed at the end, whatever happens.
//!
//! `--store cas` runs the same steps with `[aliyun] store = "cas"` and cleanup on (no grace):
//! one lineage's certificate is in CAS already as a user's upload (reused, never uploaded
//! or deleted), the other is uploaded; the renewal is uploaded once, and its superseded
//! predecessor deleted.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::{Path, PathBuf};

use time::{Duration, OffsetDateTime};

use super::sync::{self, SyncArgs};
use super::{CmdResult, Exit, status};
use crate::config;
use crate::emulator::{DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, Emulator, EmulatorConfig};
use crate::state;
use crate::testca::{Issued, Leaf, TestCa};

/// The demo's CDN domains: `.demo.example` is Alibaba's form of a wildcard CDN domain.
const DOMAINS: [&str; 6] = [
    "demo.example",
    "www.demo.example",
    "api.demo.example",
    ".demo.example",
    "static.demo.example",
    "shop.demo.example",
];

/// (lineage name, certificate names)
const LINEAGES: [(&str, &[&str]); 2] = [
    ("demo.example", &["demo.example", "*.demo.example"]),
    ("shop.demo.example", &["shop.demo.example"]),
];

type Boxed = Box<dyn std::error::Error + Send + Sync>;

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Where certificates are kept: upload (every call carries them) or cas (uploaded once
    /// to the SSL Certificates Service, bound by reference, cleaned up)
    #[arg(long, default_value = "upload", value_parser = ["upload", "cas"])]
    pub(crate) store: String,
}

pub fn run(args: &DemoArgs) -> CmdResult {
    let cas = args.store == "cas";
    let dir = tempfile::Builder::new()
        .prefix("certrotd-demo-")
        .tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(demo(dir.path(), cas));
    let shown = dir.path().display().to_string();
    dir.close()?;
    println!("\ncleaned up {shown}");
    result
}

async fn demo(dir: &Path, cas: bool) -> CmdResult {
    let config = EmulatorConfig {
        batch_gone: true,
        ..EmulatorConfig::with_domains(DOMAINS)
    };
    let emulator = Emulator::start("127.0.0.1:0".parse()?, config).await?;
    let result = steps(dir, &emulator, cas).await;
    emulator.shutdown().await;
    result
}

async fn steps(dir: &Path, emulator: &Emulator, cas: bool) -> CmdResult {
    let now = OffsetDateTime::now_utc();
    say(&format!(
        "[1/5] emulator of the CDN certificate API listening on {} (knows {} domains: {})",
        emulator.endpoint(),
        DOMAINS.len(),
        DOMAINS.join(" ")
    ));
    say(
        "      it answers the batch call as Alibaba will once it is retired (404 InvalidAction.NotFound), \
         so watch certrotd switch to the per-domain call SetCdnDomainSSLCertificate by itself",
    );
    let ca = TestCa::new("certrotd demo")?;
    let letsencrypt = dir.join("letsencrypt");
    for (name, names) in LINEAGES {
        let issued = issue(&ca, names, now)?;
        install(&letsencrypt, name, 1, &issued)?;
        if cas && name == LINEAGES[1].0 {
            let id = emulator
                .seed_cas(
                    "shop-uploaded-by-hand",
                    &issued.fullchain_pem,
                    &issued.key_pem,
                )
                .await?;
            say(&format!(
                "      CAS already holds {name}'s certificate as a user's upload \"shop-uploaded-by-hand\" (CertId {id})"
            ));
        }
    }
    let config_path = write_config(dir, &letsencrypt, &emulator.endpoint(), cas)?;
    say(&format!(
        "[2/5] certbot-style tree {} with lineages {} and {}; config {}",
        letsencrypt.display(),
        LINEAGES[0].0,
        LINEAGES[1].0,
        config_path.display()
    ));
    let settings = config::load(&config_path)?.settings;

    say(
        "\n[3/5] certrotd sync (first pass: every domain needs its certificate; one batch call, \
         answered \"gone\", then one call per domain)",
    );
    let first = sync_step(&settings, emulator, 0).await?;

    let renewed = LINEAGES[0];
    // Issued a minute later, so it expires later: the newer certificate of its lineage.
    let later = now + Duration::minutes(1);
    install(&letsencrypt, renewed.0, 2, &issue(&ca, renewed.1, later)?)?;
    say(&format!(
        "\n[4/5] renewed {} as certbot does: archive/{}/cert2.pem … written, then live/ links re-pointed",
        renewed.0, renewed.0
    ));

    say("\n[5/5] certrotd sync (second pass: only the renewed certificate's domains)");
    let second = sync_step(&settings, emulator, first).await?;
    say(&format!(
        "\ndemo complete: {} write calls in all ({first} then {}).",
        first + second,
        second
    ));
    if cas {
        say_cas(emulator);
    }
    Ok(Exit::Ok)
}

/// What CAS saw: uploads, deletes, what it holds now.
fn say_cas(emulator: &Emulator) {
    let log = emulator.log();
    let count = |action: &str| {
        log.iter()
            .filter(|e| e.action == action && e.succeeded())
            .count()
    };
    say(&format!(
        "CAS: {} upload(s), {} delete(s); no CDN write call carried a key ({} bound by reference)",
        count("UploadUserCertificate"),
        count("DeleteUserCertificate"),
        log.iter()
            .filter(|e| e.is_write() && !e.has_param("SSLPri"))
            .count()
    ));
    for c in emulator.cas_certs() {
        let owner = if c.by_user {
            "user's upload"
        } else {
            "uploaded by certrotd"
        };
        say(&format!("  CertId {} {} ({owner})", c.cert_id, c.name));
    }
}

/// Runs one sync, then prints the emulator's count of write calls and the status table.
/// Returns the number of write calls this step made.
async fn sync_step(
    settings: &config::Settings,
    emulator: &Emulator,
    before: usize,
) -> Result<usize, Boxed> {
    let mut out = std::io::stdout();
    let exit = sync::sync(settings, &SyncArgs::default(), &mut out, false).await?;
    let writes = emulator.log().iter().filter(|e| e.is_write()).count() - before;
    say(&format!(
        "sync exit code {}; the emulator received {writes} write call(s) in this step",
        exit.code()
    ));
    if exit != Exit::Ok {
        return Err(format!("the demo's sync exited {}", exit.code()).into());
    }
    let state = state::load(&settings.state.dir)?;
    let now = OffsetDateTime::now_utc();
    let domains = settings.all_domains();
    let mut rows = status::rows(&domains, &state, now);
    status::set_products(&mut rows, settings);
    say(&status::render(&rows));
    Ok(writes)
}

fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

fn issue(ca: &TestCa, names: &[&str], now: OffsetDateTime) -> Result<Issued, Boxed> {
    let leaf = Leaf::new(names, now - Duration::hours(1), now + Duration::days(90));
    Ok(ca.issue(&leaf)?)
}

/// Writes version `n` of a lineage into `archive/` and points `live/` at it, link by link in
/// certbot's order (cert, privkey, chain, fullchain).
fn install(root: &Path, name: &str, n: u32, issued: &Issued) -> std::io::Result<()> {
    let archive = root.join("archive").join(name);
    let live = root.join("live").join(name);
    fs::create_dir_all(&archive)?;
    fs::create_dir_all(&live)?;
    let files = [
        ("cert", &issued.cert_pem, 0o644),
        ("privkey", &issued.key_pem, 0o600),
        ("chain", &issued.chain_pem, 0o644),
        ("fullchain", &issued.fullchain_pem, 0o644),
    ];
    for (stem, text, mode) in files {
        write_file(&archive.join(format!("{stem}{n}.pem")), text, mode)?;
    }
    for (stem, _, _) in files {
        let link = live.join(format!("{stem}.pem"));
        if link.symlink_metadata().is_ok() {
            fs::remove_file(&link)?;
        }
        symlink(format!("../../archive/{name}/{stem}{n}.pem"), &link)?;
    }
    Ok(())
}

fn write_file(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(text.as_bytes())
}

fn write_config(
    dir: &Path,
    letsencrypt: &Path,
    endpoint: &str,
    cas: bool,
) -> std::io::Result<PathBuf> {
    let secret = dir.join("access-key-secret");
    write_file(&secret, DEFAULT_ACCESS_KEY_SECRET, 0o600)?;
    let domains: Vec<String> = DOMAINS.iter().map(|d| format!("{d:?}")).collect();
    // One batch call a second: the second batch job waits, then finds the call gone and
    // goes per-domain, so the demo always shows exactly one batch call (not two racing).
    let mut text = format!(
        "[aliyun]\nendpoint = {endpoint:?}\naccess_key_id = {DEFAULT_ACCESS_KEY_ID:?}\n\
         requests_per_second = 1\n\
         access_key_secret_file = {secret:?}\n\n[watch]\npaths = [{live:?}]\n\n\
         [state]\ndir = {state:?}\n\n[cdn]\ndomains = [{domains}]\n",
        secret = secret.display().to_string(),
        live = letsencrypt.join("live").display().to_string(),
        state = dir.join("state").display().to_string(),
        domains = domains.join(", "),
    );
    if cas {
        text = text.replacen("[aliyun]\n", "[aliyun]\nstore = \"cas\"\n", 1);
        text.push_str(&format!(
            "\n[cas]\nendpoint = {endpoint:?}\ndelete_superseded = true\ndelete_after_hours = 0\n"
        ));
    }
    let path = dir.join("certrotd.toml");
    write_file(&path, &text, 0o600)?;
    Ok(path)
}
