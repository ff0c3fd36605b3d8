//! The API's server: binding (loopback unless opted in), the accept loop
//! with a connection cap, hyper's HTTP/1 connections with a header read
//! timeout, the tower/tower-http layers that bound each request, and a
//! graceful shutdown that ends within a bound even under a flood.
//!
//! What bounds what (the `[api]` keys are in [`ApiSettings`]):
//!
//! | resource | bound | by |
//! |---|---|---|
//! | open connections (file descriptors) | `max_connections` | a semaphore permit held by each connection; when none is left the loop stops accepting and further connections wait in the kernel's backlog |
//! | a slow or idle client | `header_timeout_ms` | hyper's `header_read_timeout` (also runs while a keep-alive connection waits for its next request) |
//! | a request's life | `request_timeout_ms` | tower-http's `TimeoutLayer` (408) |
//! | requests being handled | `max_in_flight` | tower's `GlobalConcurrencyLimitLayer`: more wait, first come first served, holding nothing but their connection (so at most `max_connections` wait), each within its `request_timeout_ms` |
//! | store threads | `read_threads`, `read_queue` | [`ReadPool`](super::pool::ReadPool) (503 `busy` when the queue is full) |
//! | a reading list's size | `max_response_bytes` | the list stops before it (`truncated`, `next_from`) |
//! | the request head | [`MAX_URI_BYTES`], [`MAX_HEADER_BYTES`], [`MAX_HEADERS`] | [`guard`] (414, 431 as JSON); hyper's read buffer [`MAX_HEAD_BUF`] |
//! | a request body | [`MAX_BODY_BYTES`](super::MAX_BODY_BYTES) | axum's `DefaultBodyLimit` (413) |
//! | a panic in a handler | — | tower-http's `CatchPanicLayer` (generic 500 `internal`, logged) |

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{Semaphore, watch};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

use super::autoerr::JsonAutoErrors;
use super::pool::{ReadPool, panic_text};
use super::tls::{ApiTls, check_exposure};
use super::{ApiError, AuthOptions, clip, router_with};
use crate::config::ApiSettings;
use crate::node::Node;

/// Longest request target (path and query) answered; longer: 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Most bytes of all request headers (names, values); more: 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Most request headers; more: 431.
pub const MAX_HEADERS: usize = 64;

/// hyper's read buffer for a request head. A head that does not fit gets
/// hyper's own 431 (given a JSON body by `JsonAutoErrors`, as hyper's
/// 400 for a head that is not HTTP); every head up to this size is checked
/// against the limits above by the request guard.
pub const MAX_HEAD_BUF: usize = 64 * 1024;

/// hyper's cap on the number of headers it parses (above [`MAX_HEADERS`] so
/// that [`guard`] answers the excess as JSON).
const HYPER_MAX_HEADERS: usize = 256;

/// Checks `listen.api` against the `[api]` settings and binds it as plain
/// HTTP (a non-loopback address needs `api.allow_non_loopback`, which now
/// means `listen.allow_plaintext`); see [`bind_with`] for TLS.
pub async fn bind(addr: &str, settings: &ApiSettings) -> anyhow::Result<tokio::net::TcpListener> {
    bind_with(addr, settings, &ApiTls::default()).await
}

/// Checks `listen.api` against the `[api]` settings and the exposure rule
/// of `tls` ([`check_exposure`](super::tls::check_exposure): a non-loopback
/// address needs TLS or `allow_plaintext`), and binds it. The listener is
/// then handed to [`serve_secure`].
pub async fn bind_with(
    addr: &str,
    settings: &ApiSettings,
    tls: &ApiTls,
) -> anyhow::Result<tokio::net::TcpListener> {
    settings.check().map_err(|e| anyhow::anyhow!("{e}"))?;
    let a = check_listen_with(addr, settings, tls)?;
    tokio::net::TcpListener::bind(a)
        .await
        .with_context(|| format!("cannot listen for the HTTP API on {a} (listen.api)"))
}

/// Parses `listen.api` and applies the exposure rule without TLS: a
/// non-loopback address only with `api.allow_non_loopback` (a warning).
pub fn check_listen(addr: &str, settings: &ApiSettings) -> anyhow::Result<SocketAddr> {
    check_listen_with(addr, settings, &ApiTls::default())
}

/// Parses `listen.api` and applies the exposure rule of `tls`.
pub fn check_listen_with(
    addr: &str,
    settings: &ApiSettings,
    tls: &ApiTls,
) -> anyhow::Result<SocketAddr> {
    let a: SocketAddr = addr.parse().with_context(|| {
        format!("listen.api = {addr:?} is not an address (write it as \"127.0.0.1:7480\")")
    })?;
    check_exposure(a, tls, settings.allow_non_loopback)?;
    Ok(a)
}

/// The Host names a request may carry: loopback names, the bound address,
/// and `api.allowed_hosts` (lowercase, without port). `None`: any.
#[derive(Debug, Clone)]
pub(crate) struct Hosts(Option<Arc<Vec<String>>>);

impl Hosts {
    pub(crate) fn new(settings: &ApiSettings, local: Option<SocketAddr>) -> Self {
        if settings.allowed_hosts.iter().any(|h| h == "*") {
            return Hosts(None);
        }
        let mut v: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(a) = local
            && !a.ip().is_unspecified()
        {
            v.push(match a.ip() {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            });
        }
        for h in &settings.allowed_hosts {
            v.push(normalise_host(h));
        }
        Hosts(Some(Arc::new(v)))
    }

    fn allows(&self, host: &str) -> bool {
        let Some(list) = &self.0 else { return true };
        let name = normalise_host(host_name(host));
        if list.contains(&name) {
            return true;
        }
        // any loopback IP literal (127.0.0.0/8, ::1): not a rebinding vector
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// The host part of a `Host` header value (`name`, `name:port`, `[v6]:port`).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn normalise_host(h: &str) -> String {
    h.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The request-head checks and the Host rule (before any limit is taken).
async fn guard(State(hosts): State<Hosts>, req: Request, next: Next) -> Response {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "the request target is {target} bytes long; at most {MAX_URI_BYTES} are accepted"
            ),
        )
        .into_response();
    }
    let headers = req.headers();
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "{} headers of {bytes} bytes; at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes are accepted",
                headers.len()
            ),
        )
        .into_response();
    }
    let host = headers
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("\u{fffd}"))
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    match host {
        None => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_host",
                "the request has no Host header",
            )
            .into_response();
        }
        Some(h) if !hosts.allows(h) => {
            tracing::debug!(host = %clip(h), "API request with a foreign Host refused");
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "bad_host",
                format!(
                    "Host {:?} is not served here (allowed: loopback names, the bound address, \
                     and api.allowed_hosts)",
                    clip(h)
                ),
            )
            .into_response();
        }
        Some(_) => {}
    }
    next.run(req).await
}

/// Turns an error answer that is not JSON (one made by a layer: 408 of the
/// timeout, axum's extractor rejections, ...) into the documented shape.
async fn json_errors(res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .filter(|t| !t.trim().is_empty());
    let (code, what) = status_code_name(status);
    let message = match text {
        Some(t) => format!("{what}: {}", clip_message(t.trim())),
        None => what.to_string(),
    };
    let mut out = ApiError::new(status, code, message).into_response();
    for name in [header::RETRY_AFTER, header::ALLOW, header::CONNECTION] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

/// The code and a sentence for a status answered by a layer.
fn status_code_name(s: StatusCode) -> (&'static str, &'static str) {
    match s {
        StatusCode::BAD_REQUEST => ("bad_request", "the request is malformed"),
        StatusCode::NOT_FOUND => ("not_found", "not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed"),
        StatusCode::REQUEST_TIMEOUT => (
            "request_timeout",
            "the request was not completed within api.request_timeout_ms",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("body_too_large", "the request body is too large"),
        StatusCode::URI_TOO_LONG => ("uri_too_long", "the request target is too long"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "unsupported media type"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            ("headers_too_large", "the request headers are too large")
        }
        StatusCode::SERVICE_UNAVAILABLE => ("busy", "the API is busy: retry later"),
        StatusCode::INTERNAL_SERVER_ERROR => ("internal", "internal error"),
        s if s.is_client_error() => ("bad_request", "the request was refused"),
        _ => ("internal", "internal error"),
    }
}

/// A message from a layer, cut to a sane length.
fn clip_message(t: &str) -> String {
    const MAX: usize = 200;
    if t.chars().count() <= MAX {
        t.to_string()
    } else {
        let s: String = t.chars().take(MAX).collect();
        format!("{s}…")
    }
}

/// A panic in a handler: logged, answered as a generic 500.
fn panic_response(p: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!(panic = %panic_text(p.as_ref()), "API handler panicked");
    ApiError::internal_generic().into_response()
}

/// The routes over `node` with every per-request bound of `settings`:
/// the Host rule and head limits, the in-flight limit, the request timeout,
/// the panic catcher and JSON error bodies. `local` is the bound address
/// (accepted as a Host name). This is what [`serve_with_shutdown`] serves.
pub fn app(node: Node, settings: &ApiSettings, local: Option<SocketAddr>) -> Router {
    let pool = ReadPool::new(settings.read_threads, settings.read_queue);
    app_with_pool(node, settings, local, pool, AuthOptions::default())
}

fn app_with_pool(
    node: Node,
    settings: &ApiSettings,
    local: Option<SocketAddr>,
    pool: ReadPool,
    opts: AuthOptions,
) -> Router {
    with_bounds(
        router_with(node, pool, settings.max_response_bytes, opts),
        settings,
        local,
    )
}

/// `routes` inside the per-request bounds of `settings` (see [`app`]).
pub(crate) fn with_bounds(
    routes: Router,
    settings: &ApiSettings,
    local: Option<SocketAddr>,
) -> Router {
    let hosts = Hosts::new(settings, local);
    routes
        // the limit inside the timeout: waiting for a slot counts
        .layer(GlobalConcurrencyLimitLayer::new(settings.max_in_flight))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(settings.request_timeout_ms),
        ))
        .layer(middleware::from_fn_with_state(hosts, guard))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::map_response(json_errors))
}

/// `api.max_connections`, lowered to half the process's open-file limit
/// (read from `/proc/self/limits` where there is one) with a warning, so
/// that API connections cannot take the descriptors sensors and the store
/// need.
fn connection_cap(configured: usize) -> usize {
    match crate::procfs::open_files_limit() {
        Some(soft) if configured > soft / 2 => {
            let cap = (soft / 2).max(1);
            tracing::warn!(
                configured,
                open_file_limit = soft,
                "api.max_connections is above half the open-file limit; serving at most {cap} \
                 connections (raise the limit with ulimit -n, or lower api.max_connections)"
            );
            cap
        }
        _ => configured,
    }
}

/// Serves the API as plain HTTP on `listener` (from [`bind`]); see
/// [`serve_secure`].
pub async fn serve_with_shutdown(
    node: Node,
    listener: tokio::net::TcpListener,
    settings: ApiSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_secure(node, listener, settings, None, shutdown).await
}

/// Serves the API on `listener` (from [`bind_with`]), over TLS when `tls`
/// is given, with the bounds of `settings` until `shutdown` completes; then
/// stops accepting, closes idle connections, lets the requests in flight
/// finish (each is bounded by `request_timeout_ms`) and returns within
/// `request_timeout_ms` + 1 s. A TLS handshake must complete within
/// `header_timeout_ms`. Each request carries its peer address
/// (`ConnectInfo`, for the login rate limit).
pub async fn serve_secure(
    node: Node,
    listener: tokio::net::TcpListener,
    settings: ApiSettings,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    settings.check().map_err(|e| anyhow::anyhow!("{e}"))?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        addr = %local,
        tls = tls.is_some(),
        max_connections = settings.max_connections,
        max_in_flight = settings.max_in_flight,
        read_threads = settings.read_threads,
        "HTTP API listening on {scheme}://{local}{}: public without a login: health, chain head, \
         block headers, finality certificates, consistency and inclusion proofs, metrics, \
         POST /txs of signed transactions; readings, block bodies, transactions, identities \
         and the access log need a login (docs/API.md, \"Access control\")",
        if local.ip().is_loopback() { " (loopback only)" } else { " (reachable from the network)" },
    );
    let pool = ReadPool::new(settings.read_threads, settings.read_queue);
    let opts = AuthOptions {
        tls: tls.is_some(),
        ..AuthOptions::default()
    };
    let app = app_with_pool(node, &settings, Some(local), pool.clone(), opts);
    let max_connections = connection_cap(settings.max_connections);
    let conns = Arc::new(Semaphore::new(max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let header_timeout = Duration::from_millis(settings.header_timeout_ms);
    let grace = Duration::from_millis(settings.request_timeout_ms) + Duration::from_secs(1);
    tokio::pin!(shutdown);
    let mut full_logged = false;
    loop {
        let permit = match conns.clone().try_acquire_owned() {
            Ok(p) => {
                full_logged = false;
                p
            }
            Err(_) => {
                if !full_logged {
                    tracing::warn!(
                        max = max_connections,
                        "HTTP API: api.max_connections connections open; not accepting until one closes"
                    );
                    full_logged = true;
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    p = conns.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                }
            }
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // out of descriptors or a transient error: back off
                    // rather than spin
                    tracing::warn!("HTTP API accept error: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let svc = TowerToHyperService::new(
            tower::ServiceBuilder::new()
                .map_request(move |mut r: axum::http::Request<hyper::body::Incoming>| {
                    r.extensions_mut().insert(ConnectInfo(peer));
                    r
                })
                .service(app.clone()),
        );
        let mut stop = stop_rx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tls {
                None => tokio_util::either::Either::Left(stream),
                Some(acc) => match tokio::time::timeout(header_timeout, acc.accept(stream)).await {
                    Ok(Ok(s)) => tokio_util::either::Either::Right(s),
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %peer, "HTTP API TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(peer = %peer, "HTTP API TLS handshake timed out");
                        return;
                    }
                },
            };
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(MAX_HEAD_BUF)
                .max_headers(HYPER_MAX_HEADERS)
                .keep_alive(true);
            let io = TokioIo::new(JsonAutoErrors::new(stream));
            let conn = b.serve_connection(io, svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("HTTP API connection: {e}");
                    }
                }
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(grace, conn).await;
                }
            }
        });
    }
    drop(listener);
    pool.close();
    let _ = stop_tx.send(true);
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace + Duration::from_millis(200), conns.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            open = max_connections - conns.available_permits(),
            "HTTP API: connections still open after the shutdown grace period"
        );
    }
    tracing::info!(addr = %local, "HTTP API stopped");
    Ok(())
}
