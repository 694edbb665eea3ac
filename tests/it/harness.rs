//! Shared integration-test harness: temporary folders, a configuration writer, a runner for
//! the real `certrotd` binary, certificates from `certrotd::testca`, and trees laid out
//! exactly as certbot, acme.sh, Kubernetes and lego write them (including their renewals).
//!
//! Every helper panics on an I/O failure: these are test fixtures, and a failure to set one
//! up is a broken test, not a case under test.
// Not every test module uses every helper.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use certrotd::testca::{Issued, Leaf, LeafKey, TestCa};
use time::{Duration, OffsetDateTime};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_certrotd");

/// RSA-2048 fixture keys (PKCS#8), made once with openssl (see tests/fixtures/README.md).
pub const RSA_A: &str = include_str!("../fixtures/rsa-2048-a.pkcs8.pem");
pub const RSA_B: &str = include_str!("../fixtures/rsa-2048-b.pkcs8.pem");
/// Key `a`, encrypted PKCS#8 (password `fixture`).
pub const RSA_A_ENCRYPTED: &str = include_str!("../fixtures/rsa-2048-a.encrypted-pkcs8.pem");

// ---------------------------------------------------------------------------------------
// Folders and configuration

/// A temporary folder for one test, removed when dropped.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("temporary folder"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `certrotd.toml` in the folder and returns its path.
    pub fn write_config(&self, text: &str) -> PathBuf {
        let path = self.join("certrotd.toml");
        fs::write(&path, text).expect("write config");
        path
    }

    /// Runs `certrotd -c <folder>/certrotd.toml <args>` with a clean environment.
    pub fn run(&self, args: &[&str]) -> Output {
        run_with(self.command(args))
    }

    /// The command `run` uses (for adding environment variables or spawning).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = certrotd(self.path());
        cmd.arg("-c").arg(self.join("certrotd.toml")).args(args);
        cmd
    }
}

/// A configuration file, section by section. `render` gives TOML.
#[derive(Clone, Debug, Default)]
pub struct Config {
    watch: Vec<PathBuf>,
    domains: Vec<String>,
    state_dir: Option<PathBuf>,
    endpoint: Option<String>,
    extra: Vec<(String, String)>,
}

impl Config {
    pub fn new() -> Config {
        Config::default()
    }

    pub fn watch(mut self, path: impl AsRef<Path>) -> Config {
        self.watch.push(path.as_ref().to_path_buf());
        self
    }

    pub fn domains(mut self, domains: &[&str]) -> Config {
        self.domains.extend(domains.iter().map(|d| d.to_string()));
        self
    }

    pub fn state_dir(mut self, dir: impl AsRef<Path>) -> Config {
        self.state_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    pub fn endpoint(mut self, url: &str) -> Config {
        self.endpoint = Some(url.to_string());
        self
    }

    /// An extra `key = value` line (value in TOML syntax) in `[section]`.
    pub fn set(mut self, section: &str, line: &str) -> Config {
        self.extra.push((section.to_string(), line.to_string()));
        self
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let quote = |p: &Path| format!("{:?}", p.display().to_string());
        const ALWAYS: [&str; 6] = ["aliyun", "watch", "state", "cdn", "dcdn", "cas"];
        for section in ALWAYS {
            let _ = writeln!(out, "[{section}]");
            match section {
                "aliyun" => {
                    if let Some(e) = &self.endpoint {
                        let _ = writeln!(out, "endpoint = {e:?}");
                    }
                }
                "watch" if !self.watch.is_empty() => {
                    let paths: Vec<String> = self.watch.iter().map(|p| quote(p)).collect();
                    let _ = writeln!(out, "paths = [{}]", paths.join(", "));
                }
                "state" => {
                    if let Some(d) = &self.state_dir {
                        let _ = writeln!(out, "dir = {}", quote(d));
                    }
                }
                "cdn" => {
                    let _ = writeln!(out, "domains = {:?}", self.domains);
                }
                _ => {}
            }
            for (_, line) in self.extra.iter().filter(|(s, _)| s == section) {
                let _ = writeln!(out, "{line}");
            }
        }
        // Other sections ([metrics], [notify], …) in the order they were first set.
        let mut others: Vec<&str> = Vec::new();
        for (s, _) in &self.extra {
            if !ALWAYS.contains(&s.as_str()) && !others.contains(&s.as_str()) {
                others.push(s);
            }
        }
        for section in others {
            let _ = writeln!(out, "[{section}]");
            for (_, line) in self.extra.iter().filter(|(s, _)| s == section) {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }

    /// Writes the configuration into `env` (with `state.dir` defaulting into the env).
    pub fn write(&self, env: &Env) -> PathBuf {
        let mut me = self.clone();
        if me.state_dir.is_none() {
            me.state_dir = Some(env.join("state"));
        }
        env.write_config(&me.render())
    }
}

// ---------------------------------------------------------------------------------------
// Running the binary

/// What a run of the binary produced. `status` is the exit code, or 128 + signal.
#[derive(Debug)]
pub struct Output {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stdout then stderr.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Panics (with the output) unless the binary exited with `code` and did not panic.
    pub fn expect_status(&self, code: i32) -> &Output {
        assert!(
            !self.stderr.contains("panicked"),
            "certrotd panicked:\n{}",
            self.all()
        );
        assert_eq!(
            self.status,
            code,
            "unexpected exit status; output:\n{}",
            self.all()
        );
        self
    }

    /// Panics (with the output) unless stdout or stderr contains `needle`.
    pub fn expect_contains(&self, needle: &str) -> &Output {
        assert!(
            self.all().contains(needle),
            "expected {needle:?} in the output:\n{}",
            self.all()
        );
        self
    }

    /// The stdout table row whose first cell is `cell` (e.g. a domain in `check`'s table).
    pub fn row(&self, cell: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(cell))
            .unwrap_or_else(|| panic!("no row starting with {cell:?} in:\n{}", self.all()))
    }

    /// The first stdout line containing `needle`.
    pub fn line_with(&self, needle: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{}", self.all()))
    }
}

/// `certrotd` with a clean environment: no `CERTROTD_CONFIG`, no Alibaba credentials,
/// `HOME` set to `home` so that no real credentials file is found.
pub fn certrotd(home: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("ALIBABA_CLOUD_")
            || name.starts_with("ALICLOUD_")
            || name == "CERTROTD_CONFIG"
            || name == "RUST_LOG"
            || name == "JOURNAL_STREAM"
            || name == "NOTIFY_SOCKET"
        {
            cmd.env_remove(&key);
        }
    }
    cmd.env("HOME", home).stdin(Stdio::null());
    cmd
}

/// Runs a command to completion and captures its output.
pub fn run_with(mut cmd: Command) -> Output {
    let out = cmd.output().expect("run certrotd");
    Output {
        status: out
            .status
            .code()
            .or_else(|| out.status.signal().map(|s| 128 + s))
            .unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// Certificates

/// One throwaway CA for the whole test binary.
pub fn ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| TestCa::new("certrotd integration tests").expect("test CA"))
}

/// Now plus `days` (negative for the past).
pub fn days(days: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::days(days)
}

/// A P-256 certificate for `names`, valid from yesterday for 90 days.
pub fn issue(names: &[&str]) -> Issued {
    issue_with(names, -1, 89, LeafKey::EcdsaP256)
}

/// A certificate for `names` valid from `from` to `to` days from now, with `key`.
pub fn issue_with(names: &[&str], from: i64, to: i64, key: LeafKey) -> Issued {
    let leaf = Leaf::new(names, days(from), days(to)).with_key(key);
    ca().issue(&leaf).expect("issue certificate")
}

/// An RSA-2048 certificate (fixture key `a`) for `names`, valid like [`issue`].
pub fn issue_rsa(names: &[&str]) -> Issued {
    issue_with(names, -1, 89, LeafKey::RsaPkcs8Pem(RSA_A.to_string()))
}

// ---------------------------------------------------------------------------------------
// Files

/// Writes a file, creating its folder.
pub fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create folder");
    }
    fs::write(path, bytes).expect("write file");
}

/// Writes a file with `mode` (e.g. 0o600 for keys).
pub fn write_mode(path: &Path, bytes: impl AsRef<[u8]>, mode: u32) {
    write(path, bytes);
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Rewrites an existing file in place (same inode: truncate and write), as acme.sh and
/// lego do.
pub fn rewrite_in_place(path: &Path, bytes: impl AsRef<[u8]>) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .expect("open for rewrite");
    f.write_all(bytes.as_ref()).expect("rewrite");
}

/// A sparse file of `size` bytes (cheap even for 50 MB).
pub fn sparse(path: &Path, size: u64) {
    write(path, b"");
    let f = fs::OpenOptions::new().write(true).open(path).expect("open");
    f.set_len(size).expect("set_len");
}

/// Replaces `link` by a symlink to `target` (unlink, then create: not atomic, as certbot).
pub fn relink(target: impl AsRef<Path>, link: &Path) {
    match fs::remove_file(link) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("unlink {}: {e}", link.display()),
    }
    symlink(target, link).expect("symlink");
}

// ---------------------------------------------------------------------------------------
// certbot: live/<name>/{cert,chain,fullchain,privkey}.pem → ../../archive/<name>/<file>N.pem

/// A certbot configuration folder (`/etc/letsencrypt`): `archive/` and `live/`.
pub struct Certbot {
    pub base: PathBuf,
}

/// The order in which certbot re-links `live/` on renewal.
pub const CERTBOT_LINK_ORDER: [&str; 4] = ["cert", "privkey", "chain", "fullchain"];

impl Certbot {
    pub fn new(base: impl AsRef<Path>) -> Certbot {
        let base = base.as_ref().to_path_buf();
        fs::create_dir_all(base.join("live")).expect("live/");
        fs::create_dir_all(base.join("archive")).expect("archive/");
        write(
            &base.join("live/README"),
            "This directory contains your keys and certificates.\n",
        );
        Certbot { base }
    }

    /// `live/`, the folder to watch.
    pub fn live(&self) -> PathBuf {
        self.base.join("live")
    }

    /// `live/<name>`, one lineage.
    pub fn lineage(&self, name: &str) -> PathBuf {
        self.live().join(name)
    }

    /// The highest `N` of `archive/<name>/certN.pem` (0 when none).
    pub fn version(&self, name: &str) -> u32 {
        let Ok(entries) = fs::read_dir(self.base.join("archive").join(name)) else {
            return 0;
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_prefix("cert")?.strip_suffix(".pem")?.parse().ok()
            })
            .max()
            .unwrap_or(0)
    }

    /// Creates lineage `name` (version 1) and returns `live/<name>`.
    pub fn add(&self, name: &str, issued: &Issued) -> PathBuf {
        self.renew_with(name, issued, |_| {});
        self.lineage(name)
    }

    /// Renews as certbot does: writes `archive/<name>/*N+1.pem`, then unlinks and
    /// re-creates each `live/` link in the order cert, privkey, chain, fullchain.
    /// Returns the new version.
    pub fn renew(&self, name: &str, issued: &Issued) -> u32 {
        self.renew_with(name, issued, |_| {})
    }

    /// [`Certbot::renew`], calling `between(link)` after each link is re-created.
    pub fn renew_with(&self, name: &str, issued: &Issued, mut between: impl FnMut(&str)) -> u32 {
        let n = self.version(name) + 1;
        let archive = self.base.join("archive").join(name);
        for (file, text, mode) in [
            ("cert", &issued.cert_pem, 0o644),
            ("chain", &issued.chain_pem, 0o644),
            ("fullchain", &issued.fullchain_pem, 0o644),
            ("privkey", &issued.key_pem, 0o600),
        ] {
            write_mode(&archive.join(format!("{file}{n}.pem")), text, mode);
        }
        let live = self.lineage(name);
        fs::create_dir_all(&live).expect("live/<name>");
        for file in CERTBOT_LINK_ORDER {
            let target = format!("../../archive/{name}/{file}{n}.pem");
            relink(target, &live.join(format!("{file}.pem")));
            between(file);
        }
        n
    }
}

// ---------------------------------------------------------------------------------------
// acme.sh: <home>/<domain>[_ecc]/{fullchain.cer, <domain>.cer, ca.cer, <domain>.key, …}

/// An acme.sh home folder (`~/.acme.sh`).
pub struct AcmeSh {
    pub home: PathBuf,
}

impl AcmeSh {
    pub fn new(home: impl AsRef<Path>) -> AcmeSh {
        let home = home.as_ref().to_path_buf();
        write(&home.join("account.conf"), "LOG_FILE=\"acme.sh.log\"\n");
        write(
            &home.join("ca/acme-v02.api.letsencrypt.org/directory/ca.conf"),
            "CA_EMAIL=''\n",
        );
        AcmeSh { home }
    }

    /// `<home>/<domain>` or `<home>/<domain>_ecc`.
    pub fn folder(&self, domain: &str, ecc: bool) -> PathBuf {
        let suffix = if ecc { "_ecc" } else { "" };
        self.home.join(format!("{domain}{suffix}"))
    }

    /// Creates the lineage and returns its folder.
    pub fn add(&self, domain: &str, ecc: bool, issued: &Issued) -> PathBuf {
        let f = self.folder(domain, ecc);
        write(
            &f.join(format!("{domain}.conf")),
            format!("Le_Domain='{domain}'\n"),
        );
        write(
            &f.join(format!("{domain}.csr")),
            "-----BEGIN CERTIFICATE REQUEST-----\n",
        );
        write_mode(&f.join(format!("{domain}.key")), &issued.key_pem, 0o600);
        self.write_cert(domain, ecc, issued);
        f
    }

    /// Writes the certificate files in place (fullchain.cer, <domain>.cer, ca.cer).
    pub fn write_cert(&self, domain: &str, ecc: bool, issued: &Issued) {
        let f = self.folder(domain, ecc);
        for (name, text) in [
            (format!("{domain}.cer"), &issued.cert_pem),
            ("ca.cer".to_string(), &issued.chain_pem),
            ("fullchain.cer".to_string(), &issued.fullchain_pem),
        ] {
            put_in_place(&f.join(name), text);
        }
    }

    /// Writes the key in place (`<domain>.key`).
    pub fn write_key(&self, domain: &str, ecc: bool, issued: &Issued) {
        put_in_place(
            &self.folder(domain, ecc).join(format!("{domain}.key")),
            &issued.key_pem,
        );
    }
}

/// Rewrites in place when the file exists, else creates it.
fn put_in_place(path: &Path, text: &str) {
    if path.exists() {
        rewrite_in_place(path, text);
    } else {
        write(path, text);
    }
}

// ---------------------------------------------------------------------------------------
// Kubernetes TLS secret mount: tls.crt → ..data/tls.crt, ..data → ..<timestamp>/

/// A mounted `kubernetes.io/tls` secret, updated the way the kubelet's AtomicWriter does.
pub struct K8sSecret {
    pub dir: PathBuf,
}

/// Distinct timestamp folder names within one test binary.
static K8S_GENERATION: AtomicU64 = AtomicU64::new(1);

impl K8sSecret {
    /// Mounts the secret at `dir` (created) and returns it.
    pub fn new(dir: impl AsRef<Path>, issued: &Issued) -> K8sSecret {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).expect("mount folder");
        let secret = K8sSecret { dir };
        let ts = secret.write_generation(issued);
        symlink(&ts, secret.dir.join("..data")).expect("..data");
        symlink("..data/tls.crt", secret.dir.join("tls.crt")).expect("tls.crt");
        symlink("..data/tls.key", secret.dir.join("tls.key")).expect("tls.key");
        secret
    }

    /// Writes a new `..2026_11_29_…` folder and returns its name.
    fn write_generation(&self, issued: &Issued) -> String {
        let n = K8S_GENERATION.fetch_add(1, Ordering::Relaxed);
        let ts = format!("..2026_11_29_10_00_00.{n:09}");
        write(&self.dir.join(&ts).join("tls.crt"), &issued.fullchain_pem);
        write(&self.dir.join(&ts).join("tls.key"), &issued.key_pem);
        ts
    }

    /// The secret changes: a new timestamp folder, `..data_tmp` → it, renamed over
    /// `..data` (atomic), then the old folder removed.
    pub fn swap(&self, issued: &Issued) {
        let old = fs::read_link(self.dir.join("..data")).expect("read ..data");
        let ts = self.write_generation(issued);
        let tmp = self.dir.join("..data_tmp");
        symlink(&ts, &tmp).expect("..data_tmp");
        fs::rename(&tmp, self.dir.join("..data")).expect("rename ..data");
        fs::remove_dir_all(self.dir.join(old)).expect("remove old generation");
    }
}

// ---------------------------------------------------------------------------------------
// lego: <dir>/certificates/<name>.{crt,key,issuer.crt,json}

/// A lego folder (`.lego`), several certificates in `certificates/`.
pub struct Lego {
    pub dir: PathBuf,
}

impl Lego {
    pub fn new(dir: impl AsRef<Path>) -> Lego {
        let dir = dir.as_ref().to_path_buf();
        write(
            &dir.join("accounts/acme-v02.api.letsencrypt.org/a@example.com/account.json"),
            "{}",
        );
        fs::create_dir_all(dir.join("certificates")).expect("certificates/");
        Lego { dir }
    }

    pub fn certificates(&self) -> PathBuf {
        self.dir.join("certificates")
    }

    /// The lineage id of `name` (`certificates/<name>`; a wildcard is `_.example.com`).
    pub fn lineage(&self, name: &str) -> PathBuf {
        self.certificates().join(name)
    }

    /// Writes (or rewrites in place) the files of certificate `name`.
    pub fn put(&self, name: &str, issued: &Issued) -> PathBuf {
        let c = self.certificates();
        put_in_place(&c.join(format!("{name}.crt")), &issued.fullchain_pem);
        put_in_place(&c.join(format!("{name}.issuer.crt")), &issued.chain_pem);
        put_in_place(&c.join(format!("{name}.key")), &issued.key_pem);
        put_in_place(
            &c.join(format!("{name}.json")),
            &format!("{{\"domain\":\"{name}\"}}"),
        );
        self.lineage(name)
    }
}

// ---------------------------------------------------------------------------------------
// Bounded runs and special files

/// What [`run_bounded`] saw: the output, whether the child had to be killed at the time
/// limit, and its peak resident memory.
#[derive(Debug)]
pub struct Bounded {
    pub out: Output,
    pub timed_out: bool,
    /// `ru_maxrss` of the child alone, in KiB.
    pub max_rss_kib: i64,
}

impl Bounded {
    /// Panics (with the output) if the child had to be killed.
    pub fn expect_exited(&self) -> &Output {
        assert!(
            !self.timed_out,
            "certrotd did not exit by itself (killed at the time limit); output:\n{}",
            self.out.all()
        );
        &self.out
    }
}

/// Runs `cmd` to completion, but for at most `limit`: past that the child is killed
/// (SIGKILL) and `timed_out` is set. The child is reaped with `wait4` for its own rusage.
// The child is reaped by `wait4` below (std's `wait` would lose its rusage).
#[allow(clippy::zombie_processes)]
pub fn run_bounded(mut cmd: Command, limit: std::time::Duration) -> Bounded {
    use std::io::Read as _;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn certrotd");
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let pid = i32::try_from(child.id()).expect("pid");
    let started = std::time::Instant::now();
    let mut timed_out = false;
    let (status, rusage) = loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        let flags = if timed_out { 0 } else { libc::WNOHANG };
        // SAFETY: wait4 on our own child's pid, with valid pointers to locals.
        let rc = unsafe { libc::wait4(pid, &mut status, flags, &mut rusage) };
        if rc == pid {
            break (status, rusage);
        }
        assert!(rc == 0, "wait4: {}", std::io::Error::last_os_error());
        if started.elapsed() > limit {
            timed_out = true;
            // SAFETY: kill(2) on our own (not yet reaped) child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        } else {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        -1
    };
    Bounded {
        out: Output {
            status: code,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        },
        timed_out,
        max_rss_kib: rusage.ru_maxrss,
    }
}

/// Makes a FIFO (named pipe) at `path`.
pub fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt as _;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create folder");
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL in path");
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(
        rc,
        0,
        "mkfifo {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Whether the tests run as root (for the tests that need to give files away).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

// ---------------------------------------------------------------------------------------
// A running daemon against the in-process emulator (the deploy-hook and ACME-client tests)

/// A configuration for `endpoint` (an emulator) with its default credentials (the secret in
/// `<env>/access-key-secret`), a 200 ms debounce and no periodic rescan during a test.
pub fn emulator_config(env: &Env, endpoint: &str, domains: &[&str]) -> Config {
    emulator_credentials(env, endpoint, domains)
        .set("watch", "debounce_ms = 200")
        .set("watch", "rescan_secs = 3600")
}

/// A configuration for `endpoint` (an emulator) and `domains` with the emulator's default
/// credentials (the secret in `<env>/access-key-secret`, mode 0600), nothing else set.
pub fn emulator_credentials(env: &Env, endpoint: &str, domains: &[&str]) -> Config {
    use certrotd::emulator::{DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET};
    let secret = env.join("access-key-secret");
    if !secret.exists() {
        write_mode(&secret, DEFAULT_ACCESS_KEY_SECRET, 0o600);
    }
    Config::new()
        .endpoint(endpoint)
        .domains(domains)
        .set(
            "aliyun",
            &format!("access_key_id = {DEFAULT_ACCESS_KEY_ID:?}"),
        )
        .set(
            "aliyun",
            &format!(
                "access_key_secret_file = {:?}",
                secret.display().to_string()
            ),
        )
}

/// The in-process emulator on a free loopback port, knowing `domains`.
pub async fn start_emulator(domains: &[&str]) -> certrotd::emulator::Emulator {
    use certrotd::emulator::{Emulator, EmulatorConfig};
    Emulator::start(
        "127.0.0.1:0".parse().expect("addr"),
        EmulatorConfig::with_domains(domains.iter().copied()),
    )
    .await
    .expect("emulator starts")
}

/// A running `certrotd -c <env>/certrotd.toml run`, its stderr in `<env>/daemon.log`;
/// killed (SIGKILL) when dropped.
pub struct RunningDaemon {
    child: std::process::Child,
    log: PathBuf,
}

impl RunningDaemon {
    pub fn start(env: &Env) -> RunningDaemon {
        RunningDaemon::start_command(env, env.command(&["run"]))
    }

    /// Starts `cmd` (a `run` command with its own environment), logging to `daemon.log`.
    pub fn start_command(env: &Env, mut cmd: Command) -> RunningDaemon {
        let log = env.join("daemon.log");
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("daemon log");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn certrotd run");
        RunningDaemon { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) on our own child's pid, no memory involved.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
    }

    /// Waits (polling) up to `secs` for the process to exit; its exit code, or 128 + signal.
    /// Panics with the log when it does not exit in time.
    pub async fn exit_code(&mut self, secs: u64) -> i32 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status
                    .code()
                    .or_else(|| status.signal().map(|s| 128 + s))
                    .unwrap_or(-1);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "certrotd run did not exit within {secs} s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then [`RunningDaemon::exit_code`].
    pub async fn terminate(&mut self, secs: u64) -> i32 {
        self.signal(libc::SIGTERM);
        self.exit_code(secs).await
    }
}

impl Drop for RunningDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `ok` every 50 ms for up to `secs`; on time-out panics naming `what`, with
/// `context()` (e.g. the daemon's log).
pub async fn wait_for(
    what: &str,
    secs: u64,
    mut ok: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}\n{}",
            context()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The emulator's view: does `domain` serve the certificate with `fp`?
pub fn emulator_serves(
    emu: &certrotd::emulator::Emulator,
    domain: &str,
    fp: certrotd::cert::Fingerprint,
) -> bool {
    emu.served()
        .get(domain)
        .is_some_and(|s| s.fingerprint == fp)
}

/// The SHA-256 fingerprint certrotd computes for a chain and key.
pub fn fingerprint_of(fullchain_pem: &[u8], key_pem: &[u8]) -> certrotd::cert::Fingerprint {
    certrotd::cert::parse(fullchain_pem, key_pem)
        .expect("a valid certificate and key")
        .fingerprint
}

// ---------------------------------------------------------------------------------------
// `certrotd emulate` as a subprocess (for tests that need its command-line options)

/// A running `certrotd emulate` knowing the domains in `domains_file`, accepting the
/// default AccessKeyId with `secret`, keeping its state dump in `dump`; `args` are more
/// options (faults, limits). Stopped with [`Emulate::stop`], killed when dropped.
pub struct Emulate {
    child: Child,
    /// `http://127.0.0.1:PORT`, for `[aliyun] endpoint`.
    pub endpoint: String,
}

impl Emulate {
    pub fn start(domains_file: &Path, dump: &Path, secret: &str, args: &[&str]) -> Emulate {
        let mut child = Command::new(env!("CARGO_BIN_EXE_certrotd"))
            .arg("emulate")
            .args(["--listen", "127.0.0.1:0", "--access-key-secret", secret])
            .args(args)
            .arg("--domains-file")
            .arg(domains_file)
            .arg("--state-dump")
            .arg(dump)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start certrotd emulate");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("read the address");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .expect("an address");
        Emulate {
            endpoint: format!("http://{addr}"),
            child,
        }
    }

    /// SIGTERM, then asserts a clean exit (the dump is complete).
    pub fn stop(mut self) {
        let pid = i32::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status = self.child.wait().expect("emulate exits");
        assert!(status.success(), "{status:?}");
    }
}

impl Drop for Emulate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
