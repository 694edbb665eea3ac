//! `certrotd emulate` as a subprocess: prints `listening on ADDR` on stdout, answers signed
//! calls, keeps its state dump, and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use certrotd::aliyun::sign;
use certrotd::emulator::Dump;
use time::OffsetDateTime;

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_certrotd"))
        .arg("emulate")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start certrotd emulate")
}

/// Waits for the child to exit (a subprocess: no virtual clock to use), up to 10 s.
fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait for certrotd") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("certrotd emulate did not exit within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A signed `DescribeUserDomains` POST over a fresh connection; returns status and JSON body.
fn describe_user_domains(addr: SocketAddr, secret: &str) -> (u16, serde_json::Value) {
    let mut params = sign::common_params("emulator", OffsetDateTime::now_utc(), "it-nonce-1", None);
    params.push(("Action".into(), "DescribeUserDomains".into()));
    params.push(("PageSize".into(), "500".into()));
    let signature = sign::sign("POST", secret, &params);
    params.push(("Signature".into(), signature));
    let body = sign::encode_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut stream = TcpStream::connect(addr).expect("connect to the emulator");
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        body.as_str()
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the answer");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let json = response.split("\r\n\r\n").nth(1).expect("a body");
    (status, serde_json::from_str(json).expect("a JSON body"))
}

fn write_domains(dir: &Path, text: &str) -> String {
    let path = dir.join("domains.txt");
    std::fs::write(&path, text).expect("write the domains file");
    path.display().to_string()
}

#[test]
fn emulate_prints_its_address_answers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let domains = write_domains(
        dir.path(),
        "# test\nb.example.com\na.example.com\n.example.com\n",
    );
    let dump = dir.path().join("dump.json");
    let dump_arg = dump.display().to_string();
    let mut child = spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--domains-file",
        &domains,
        "--state-dump",
        &dump_arg,
        "--access-key-secret",
        "it-secret",
    ]);
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read stdout");
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("an address");
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    // The dump exists as soon as the address is printed.
    assert!(Dump::read(&dump).expect("a dump").log.is_empty());

    let (status, body) = describe_user_domains(addr, "it-secret");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["TotalCount"], 3);
    let names: Vec<&str> = body["Domains"]["PageData"]
        .as_array()
        .expect("a page")
        .iter()
        .filter_map(|d| d["DomainName"].as_str())
        .collect();
    assert_eq!(names, [".example.com", "a.example.com", "b.example.com"]);

    let (status, body) = describe_user_domains(addr, "wrong-secret");
    assert_eq!(
        (status, body["Code"].as_str()),
        (400, Some("SignatureDoesNotMatch"))
    );

    // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = wait(&mut child);
    assert!(status.success(), "exit status {status:?}");

    let dump = Dump::read(&dump).expect("the final dump");
    let log: Vec<(&str, Option<u16>)> = dump
        .log
        .iter()
        .map(|e| (e.action.as_str(), e.status))
        .collect();
    assert_eq!(
        log,
        [
            ("DescribeUserDomains", Some(200)),
            ("DescribeUserDomains", Some(400))
        ]
    );
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(
        !stderr.contains("it-secret"),
        "the secret is never printed: {stderr}"
    );
}

#[test]
fn emulate_refuses_a_bad_domains_file_with_its_line() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let domains = write_domains(dir.path(), "a.example.com\n*.example.com\n");
    let mut child = spawn(&["--domains-file", &domains]);
    let status = wait(&mut child);
    assert_eq!(status.code(), Some(1));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(stderr.contains(&format!("{domains}:2:")), "{stderr}");
    assert!(stderr.contains(".example.com"), "{stderr}");
}

#[test]
fn emulate_refuses_impossible_fault_rates() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let domains = write_domains(dir.path(), "a.example.com\n");
    let mut child = spawn(&[
        "--domains-file",
        &domains,
        "--fail-rate",
        "0.7",
        "--reset-rate",
        "0.7",
    ]);
    let status = wait(&mut child);
    assert_eq!(status.code(), Some(1));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(stderr.contains("at most 1"), "{stderr}");
}

#[test]
fn emulate_refuses_a_per_domain_budget_of_zero() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let domains = write_domains(dir.path(), "a.example.com\n");
    let mut child = spawn(&[
        "--domains-file",
        &domains,
        "--per-domain-writes-per-second",
        "0",
    ]);
    let status = wait(&mut child);
    assert_eq!(status.code(), Some(1));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(
        stderr.contains("--per-domain-writes-per-second must be at least 1"),
        "{stderr}"
    );
}

#[test]
fn emulate_refuses_an_offline_domain_it_does_not_know() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let domains = write_domains(dir.path(), "a.example.com\n");
    let mut child = spawn(&[
        "--domains-file",
        &domains,
        "--product",
        "dcdn",
        "--offline-domain",
        "nope.example.com",
    ]);
    let status = wait(&mut child);
    assert_eq!(status.code(), Some(1));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(
        stderr.contains("--offline-domain nope.example.com is not one of the emulator's domains"),
        "{stderr}"
    );
}
