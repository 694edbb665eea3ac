//! The metrics listener: `GET /metrics` and `GET /healthz` over HTTP/1.1 (hyper, as the
//! emulator serves).
//!
//! Owns the listening socket for the life of `certrotd run`. Invariants: answers only these
//! two paths (404 otherwise, 405 for another method); a request's headers must arrive within
//! [`HEADER_TIMEOUT`] and at most [`MAX_CONNECTIONS`] connections are served at once (more
//! wait in the kernel's backlog), so a slow or greedy client cannot tie the daemon up; the
//! request body is never read. `/metrics` answers OpenMetrics when the client asks for it
//! (Prometheus does), else the classic text format (`curl`, `promtool check metrics`).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::{Health, global, text_format};

/// Connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 8;
/// The longest a client may take to send a request's headers.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Problems with the listener.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MetricsError {
    #[error(
        "cannot listen on {addr} for metrics ([metrics] listen): {cause}; choose a free port \
         or remove the [metrics] section"
    )]
    Bind { addr: SocketAddr, cause: io::Error },
}

impl MetricsError {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            MetricsError::Bind { .. } => "metrics-listen",
        }
    }
}

/// Binds `addr`.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|cause| MetricsError::Bind { addr, cause })
}

/// Serves `/metrics` and `/healthz` on `listener` until the task is aborted.
pub(crate) fn spawn(listener: TcpListener, health: Arc<Health>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            // The semaphore is never closed.
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(kind = "metrics-accept", "metrics listener: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let health = Arc::clone(&health);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let health = Arc::clone(&health);
                    async move { Ok::<_, Infallible>(answer(&req, &health)) }
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                drop(slot);
            });
        }
    })
}

fn answer(req: &Request<Incoming>, health: &Health) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path != "/metrics" && path != "/healthz" {
        return reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: try /metrics or /healthz\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET\n");
    }
    if path == "/healthz" {
        return match health.check(OffsetDateTime::now_utc()) {
            Ok(()) => reply(StatusCode::OK, TEXT, "ok\n"),
            Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, &format!("{why}\n")),
        };
    }
    let exposition = global().openmetrics();
    if wants_openmetrics(req.headers().get(ACCEPT)) {
        reply(StatusCode::OK, OPENMETRICS, &exposition)
    } else {
        reply(StatusCode::OK, TEXT, &text_format(&exposition))
    }
}

/// The client lists OpenMetrics among the types it accepts.
pub(crate) fn wants_openmetrics(accept: Option<&HeaderValue>) -> bool {
    accept
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"))
}

fn reply(status: StatusCode, content_type: &'static str, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
