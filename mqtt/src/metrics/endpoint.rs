//! The HTTP endpoint of both binaries: `GET /metrics` (OpenMetrics text), `GET /health`
//! (200 or 503 with a small JSON body) and `GET /status` (the JSON the `status` command
//! prints), on a loopback address by default (`[metrics] bind`).
//!
//! # Why hyper
//! hyper 1.x (HTTP/1 server only, no default features) with `hyper-util`'s tokio glue is
//! the maintained HTTP implementation the ecosystem's frameworks are built on; axum would
//! add tower, routing and more code for three fixed paths, and the agent must stay small
//! on armv7. The routing here is a `match` on the path.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] scrapers at once (more are closed at accept),
//! request headers must arrive within [`HEADER_TIMEOUT`], and on shutdown open
//! connections finish their request and close.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::error::Error;

/// Scrapers served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Time a scraper has to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `[metrics]` in both binaries' TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve the endpoint at all.
    pub enabled: bool,
    /// Address to bind; `""` turns the endpoint off; unset: the binary's default
    /// (127.0.0.1:9181 for edge-agent, 127.0.0.1:9182 for cloud-bridge).
    pub bind: Option<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: None,
        }
    }
}

impl MetricsConfig {
    /// The address to serve on (`default` when `bind` is unset), or `None` when turned
    /// off. The error says what is wrong with `bind`.
    pub fn address(&self, default: SocketAddr) -> Result<Option<SocketAddr>, String> {
        match self.bind.as_deref().map(str::trim) {
            _ if !self.enabled => Ok(None),
            Some("") => Ok(None),
            None => Ok(Some(default)),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|e| format!("{s:?} is not an address:port ({e})")),
        }
    }
}

/// The answer of `/health`.
#[derive(Debug, Clone)]
pub struct Health {
    /// Serving: 200; otherwise 503.
    pub ok: bool,
    /// A small JSON object saying why.
    pub json: String,
}

/// What a binary serves on its endpoint; figures are gathered when asked.
pub trait Exporter: Send + Sync + 'static {
    /// The OpenMetrics exposition, ending with `# EOF`.
    fn metrics(&self) -> BoxFuture<'static, String>;
    /// Whether the service is serving.
    fn health(&self) -> BoxFuture<'static, Health>;
    /// Everything a person at the machine wants to see, as JSON.
    fn status(&self) -> BoxFuture<'static, String>;
}

/// Binds the endpoint's address (before anything is served, so a busy port fails start).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Serves `exporter` on `listener` until `shutdown` fires; connections run in `tracker`.
pub async fn run<E: Exporter>(
    listener: TcpListener,
    exporter: Arc<E>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            debug!(%peer, "metrics endpoint: too many scrapers; closing");
            continue;
        };
        let exporter = exporter.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let service = service_fn(move |req| {
                let exporter = exporter.clone();
                async move { Ok::<_, Infallible>(answer(&*exporter, &req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(HEADER_TIMEOUT, conn.as_mut()).await.unwrap_or(Ok(()))
                }
            };
            if let Err(e) = result {
                debug!(%peer, error = %e, "metrics endpoint: connection ended");
            }
            drop(permit);
        });
    }
}

async fn answer<E: Exporter>(exporter: &E, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return page(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => page(StatusCode::OK, OPENMETRICS, exporter.metrics().await),
        "/health" => {
            let h = exporter.health().await;
            let code = if h.ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            page(code, "application/json", h.json)
        }
        "/status" => page(StatusCode::OK, "application/json", exporter.status().await),
        "/" => page(
            StatusCode::OK,
            "text/plain",
            "/metrics /health /status\n".into(),
        ),
        _ => page(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn page(code: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_setting_turns_the_endpoint_on_and_off() {
        let default: SocketAddr = ([127, 0, 0, 1], 9181).into();
        let c = |enabled, bind: Option<&str>| MetricsConfig {
            enabled,
            bind: bind.map(str::to_owned),
        };
        assert_eq!(c(true, None).address(default), Ok(Some(default)));
        assert_eq!(c(true, Some("")).address(default), Ok(None));
        assert_eq!(c(false, Some("127.0.0.1:1")).address(default), Ok(None));
        assert_eq!(
            c(true, Some("[::1]:9")).address(default),
            Ok(Some("[::1]:9".parse().unwrap_or(default)))
        );
        assert!(c(true, Some("localhost")).address(default).is_err());
    }
}
