//! Proxies and trust: the real `certrotd sync` reaching the emulator behind a TLS-terminating
//! test front (its certificate issued by a CA the test makes) through a small CONNECT proxy
//! (a separate test server, not the emulator). With `[aliyun] ca_file` naming the test CA
//! every connection goes through the proxy and the domain is deployed; `NO_PROXY` goes
//! direct; without `ca_file` the TLS failure is reported once, naming the endpoint and
//! `ca_file`, nothing is pushed and nothing is retried (connections are counted).

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use certrotd::emulator::Dump;
use certrotd::testca::{Leaf, TestCa};

use crate::harness::{Certbot, Emulate, Env, days, emulator_credentials, issue, run_with};

/// A TLS front for `upstream` (plain TCP) on loopback, serving a `localhost` certificate of
/// `ca`; counts the connections it accepts.
async fn tls_front(ca: &TestCa, upstream: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let leaf = ca
        .issue(&Leaf::new(&["localhost"], days(-1), days(30)))
        .expect("front certificate");
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(leaf.fullchain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("chain");
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind front");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut up) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    (addr, count)
}

/// A CONNECT proxy on loopback; counts the tunnels and records their targets.
async fn connect_proxy() -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("addr");
    let targets = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&targets);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    match client.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let mut words = text.split_whitespace();
                let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
                    let _ = client
                        .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                        .await;
                    return;
                };
                seen.lock().expect("lock").push(target.to_string());
                let Ok(mut up) = TcpStream::connect(target.replace("localhost", "127.0.0.1")).await
                else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            });
        }
    });
    (addr, targets)
}

struct Setup {
    env: Env,
    emulate: Emulate,
    dump: std::path::PathBuf,
    front: SocketAddr,
    front_connections: Arc<AtomicUsize>,
    proxy: SocketAddr,
    tunnels: Arc<std::sync::Mutex<Vec<String>>>,
    ca_file: std::path::PathBuf,
    fingerprint: certrotd::cert::Fingerprint,
}

const DOMAIN: &str = "tls.example.com";

async fn setup() -> Setup {
    let env = Env::new();
    fs::write(env.join("domains.txt"), DOMAIN).expect("domains");
    let dump = env.join("dump.json");
    let emulate = Emulate::start(
        &env.join("domains.txt"),
        &dump,
        certrotd::emulator::DEFAULT_ACCESS_KEY_SECRET,
        &[],
    );
    let upstream: SocketAddr = emulate
        .endpoint
        .strip_prefix("http://")
        .expect("http endpoint")
        .parse()
        .expect("addr");
    let ca = TestCa::new("certrotd proxy test root").expect("CA");
    let ca_file = env.join("proxy-ca.pem");
    fs::write(&ca_file, ca.root_pem()).expect("ca file");
    let (front, front_connections) = tls_front(&ca, upstream).await;
    let (proxy, tunnels) = connect_proxy().await;
    let certbot = Certbot::new(env.join("letsencrypt"));
    let issued = issue(&[DOMAIN]);
    certbot.add("example.com", &issued);
    let fingerprint =
        certrotd::cert::parse(issued.fullchain_pem.as_bytes(), issued.key_pem.as_bytes())
            .expect("valid")
            .fingerprint;
    let endpoint = format!("https://localhost:{}", front.port());
    emulator_credentials(&env, &endpoint, &[DOMAIN])
        .watch(certbot.live())
        .write(&env);
    Setup {
        env,
        emulate,
        dump,
        front,
        front_connections,
        proxy,
        tunnels,
        ca_file,
        fingerprint,
    }
}

fn with_ca_file(s: &Setup) {
    let path = s.env.join("certrotd.toml");
    let text = fs::read_to_string(&path).expect("config");
    let text = text.replacen(
        "[aliyun]\n",
        &format!(
            "[aliyun]\nca_file = {:?}\n",
            s.ca_file.display().to_string()
        ),
        1,
    );
    fs::write(&path, text).expect("config");
}

async fn sync(env: &Path, vars: Vec<(&'static str, String)>) -> crate::harness::Output {
    let home = env.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut cmd = crate::harness::certrotd(&home);
        cmd.arg("-c").arg(home.join("certrotd.toml")).arg("sync");
        cmd.env("RUST_LOG", "trace");
        for name in [
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "NO_PROXY",
            "no_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            cmd.env_remove(name);
        }
        for (k, v) in vars {
            cmd.env(k, v);
        }
        run_with(cmd)
    })
    .await
    .expect("runner")
}

fn served(dump: &Path) -> Option<certrotd::cert::Fingerprint> {
    Dump::read(dump)
        .ok()?
        .served
        .get(DOMAIN)
        .map(|s| s.fingerprint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_connect_proxy_with_ca_file_every_connection_is_tunnelled() {
    let s = setup().await;
    with_ca_file(&s);
    let proxy = format!("http://{}", s.proxy);
    let out = sync(s.env.path(), vec![("HTTPS_PROXY", proxy)]).await;
    out.expect_status(0);
    assert_eq!(served(&s.dump), Some(s.fingerprint));
    let tunnels = s.tunnels.lock().expect("lock").clone();
    assert!(!tunnels.is_empty(), "the proxy was used");
    let target = format!("localhost:{}", s.front.port());
    assert!(tunnels.iter().all(|t| *t == target), "{tunnels:?}");
    assert_eq!(
        s.front_connections.load(Ordering::SeqCst),
        tunnels.len(),
        "every connection to the endpoint came through the proxy"
    );
    let secret = certrotd::emulator::DEFAULT_ACCESS_KEY_SECRET;
    assert!(
        !out.all().contains(secret),
        "the secret leaked at trace level"
    );
    drop(s.emulate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_goes_direct() {
    let s = setup().await;
    with_ca_file(&s);
    let proxy = format!("http://{}", s.proxy);
    let out = sync(
        s.env.path(),
        vec![
            ("https_proxy", proxy),
            ("NO_PROXY", "localhost".to_string()),
        ],
    )
    .await;
    out.expect_status(0);
    assert_eq!(served(&s.dump), Some(s.fingerprint));
    assert!(
        s.tunnels.lock().expect("lock").is_empty(),
        "NO_PROXY: the proxy is not used"
    );
    assert!(s.front_connections.load(Ordering::SeqCst) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ca_file_the_tls_failure_is_named_once_and_not_retried() {
    let s = setup().await;
    let proxy = format!("http://{}", s.proxy);
    let out = sync(s.env.path(), vec![("HTTPS_PROXY", proxy)]).await;
    assert_ne!(out.status, 0, "{}", out.all());
    let text = out.all();
    let endpoint = format!("https://localhost:{}/", s.front.port());
    assert!(text.contains("tls-trust"), "{text}");
    assert!(
        text.contains(&endpoint) && text.contains("ca_file"),
        "{text}"
    );
    assert!(text.contains("does not verify"), "{text}");
    assert_eq!(served(&s.dump), None, "nothing pushed");
    assert_eq!(
        s.front_connections.load(Ordering::SeqCst),
        1,
        "one attempt, not retried"
    );
    assert_eq!(s.tunnels.lock().expect("lock").len(), 1);
    let log = Dump::read(&s.dump).expect("dump").log;
    assert!(log.is_empty(), "no request reached the API: {log:?}");
}

#[test]
fn a_ca_file_that_is_not_pem_is_a_configuration_error() {
    let env = Env::new();
    fs::write(env.join("bad-ca.pem"), "not a certificate\n").expect("write");
    emulator_credentials(&env, "https://cdn.aliyuncs.com", &[DOMAIN])
        .set(
            "aliyun",
            &format!(
                "ca_file = {:?}",
                env.join("bad-ca.pem").display().to_string()
            ),
        )
        .write(&env);
    let out = env.run(&["check"]);
    out.expect_status(78);
    let text = out.all();
    assert!(
        text.contains("aliyun.ca_file") && text.contains("no PEM certificate"),
        "{text}"
    );
    assert!(text.contains("bad-ca.pem"), "{text}");
}
