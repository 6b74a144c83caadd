//! The HTTP endpoint: `GET /metrics` (Prometheus text format) and a short
//! landing page on `/`.
//!
//! A scrape reads the kernel maps right then, so a test (or a person) that
//! scrapes after a process did its work sees all of it, not the state of the
//! last background tick.
//!
//! The endpoint is hardened against clients that hold connections without
//! finishing a request (see [`Limits`]): a connection must deliver a
//! complete request head within the header timeout, from its accept or from
//! its first byte after a keep-alive pause; a keep-alive connection may
//! pause at most the idle timeout; and at most `max_connections` are open.
//! At the cap the oldest connection that is not being answered is closed to
//! make room (a flood of half-sent requests cannot lock a scraper out);
//! only when every open connection is being answered is a new one refused,
//! with a 503. Each phase is tracked per connection (the request head by
//! the bytes read, the response by the body's drop) and a watchdog beside
//! the connection closes it at its deadline.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Frame, Incoming, SizeHint},
    header,
    server::conn::http1,
};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    sync::Notify,
    time::Instant,
};
use tracing::{debug, warn};

use super::web_config::WebConfig;

/// Renders the current metrics; shared with the background refresher.
pub trait Render: Send + Sync + 'static {
    fn render(&self) -> Result<Vec<u8>, String>;
}

const LANDING: &str = r#"<!doctype html>
<html><head><title>iolens</title></head>
<body>
<h1>iolens</h1>
<p>eBPF I/O observability agent: per-process bytes by path (through user space or zero-copy),
syscalls and errors, from kernel tracepoints.</p>
<p><a href="/metrics">/metrics</a> &mdash; Prometheus text format.</p>
</body></html>
"#;

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

async fn handle<R: Render>(
    renderer: Arc<R>,
    web: Arc<WebConfig>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    // Every path, as the exporter toolkit does; bcrypt off the async
    // threads.
    if web.needs_auth() {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        let ok = web.remembered(given.as_deref()) || {
            // Held until the check is done; the semaphore is never closed.
            let _slot = web.bcrypt_slots.acquire().await.ok();
            let check = Arc::clone(&web);
            tokio::task::spawn_blocking(move || check.authorized(given.as_deref()))
                .await
                .unwrap_or(false)
        };
        if !ok {
            let mut r = respond(StatusCode::UNAUTHORIZED, "text/plain", "Unauthorized\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"iolens\""),
            );
            return r;
        }
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => {
            // Map reads are a handful of syscalls; keep them off the async
            // worker threads anyway so a slow read cannot stall accepts.
            let r = Arc::clone(&renderer);
            match tokio::task::spawn_blocking(move || r.render()).await {
                Ok(Ok(body)) => respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    body,
                ),
                Ok(Err(e)) => {
                    warn!("rendering metrics failed: {e}");
                    respond(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        format!("{e}\n"),
                    )
                }
                Err(e) => respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e}\n"),
                ),
            }
        }
        "/" => respond(StatusCode::OK, "text/html; charset=utf-8", LANDING),
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics\n",
        ),
    }
}

/// How long a connection may take and how many may be open.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From the accept (or the first byte after a keep-alive pause) to a
    /// complete request head.
    pub header_timeout: Duration,
    /// From the end of a response to the first byte of the next request.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
        }
    }
}

/// Why the agent closed a connection without waiting for the client; the
/// `reason` label of iolens_http_connections_dropped_total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// No complete request head within the header timeout.
    HeaderTimeout,
    /// A keep-alive connection paused longer than the idle timeout.
    IdleTimeout,
    /// Closed at the connection cap to make room for a new one.
    Evicted,
    /// Refused at the cap (503): every open connection was being answered.
    Refused,
}

impl Dropped {
    pub const ALL: [Dropped; 4] = [
        Dropped::HeaderTimeout,
        Dropped::IdleTimeout,
        Dropped::Evicted,
        Dropped::Refused,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dropped::HeaderTimeout => "header_timeout",
            Dropped::IdleTimeout => "idle_timeout",
            Dropped::Evicted => "evicted",
            Dropped::Refused => "refused",
        }
    }
}

/// The endpoint's report on itself, for the exposition.
#[derive(Debug, Default)]
pub struct HttpStats {
    dropped: [AtomicU64; 4],
    open: AtomicU64,
}

impl HttpStats {
    pub fn dropped(&self, why: Dropped) -> u64 {
        self.dropped[why as usize].load(Ordering::Relaxed)
    }

    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    fn count(&self, why: Dropped) {
        self.dropped[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Where a connection is in its life, with the deadline of that phase.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Reading a request head; closed at the deadline.
    Head(Instant),
    /// Between requests of a keep-alive connection; closed at the deadline.
    Idle(Instant),
    /// A request is being answered: no deadline.
    Busy,
}

/// One open connection, shared by its reader, its service, its response
/// bodies and its watchdog.
struct Conn {
    phase: Mutex<Phase>,
    /// Wakes the watchdog when the phase or `evicted` changed.
    wake: Notify,
    evicted: AtomicBool,
    limits: Limits,
}

impl Conn {
    fn set(&self, f: impl FnOnce(Phase) -> Option<Phase>) {
        let mut p = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(next) = f(*p) {
            *p = next;
            drop(p);
            self.wake.notify_one();
        }
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes arrived: a paused keep-alive connection starts its next head.
    fn bytes_in(&self) {
        let t = self.limits.header_timeout;
        self.set(|p| match p {
            Phase::Idle(_) => Some(Phase::Head(Instant::now() + t)),
            _ => None,
        });
    }

    /// A complete request head: hyper called the service.
    fn request(&self) {
        self.set(|_| Some(Phase::Busy));
    }

    /// The response body was dropped: written, or not needed (HEAD).
    fn response_done(&self) {
        let t = self.limits.idle_timeout;
        self.set(|p| match p {
            Phase::Busy => Some(Phase::Idle(Instant::now() + t)),
            _ => None,
        });
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// The open connections, oldest first (ids grow).
#[derive(Default)]
struct Registry {
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next: AtomicU64,
}

/// Removes a connection from the registry when its task ends.
struct Registered {
    registry: Arc<Registry>,
    stats: Arc<HttpStats>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut m = self
            .registry
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        m.remove(&self.id);
        self.stats.open.store(m.len() as u64, Ordering::Relaxed);
    }
}

/// Answers a connection refused at the cap. One non-blocking write into an
/// empty socket buffer: nothing is spawned or kept for it.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 45\r\nRetry-After: 1\r\nConnection: close\r\n\r\niolens: too many connections; try again soon\n";

/// A stream that tells its connection when bytes arrive.
struct Watched<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.bytes_in();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body that marks the response done when hyper drops it.
struct Tracked {
    inner: Full<Bytes>,
    conn: Arc<Conn>,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.conn.response_done();
    }
}

/// Serves until the task is dropped.
pub async fn serve<R: Render>(
    listener: TcpListener,
    renderer: Arc<R>,
    limits: Limits,
    stats: Arc<HttpStats>,
    web: Arc<WebConfig>,
) {
    let registry = Arc::new(Registry::default());
    let tls = web.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!("accept on the metrics listener failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let conn = Arc::new(Conn {
            phase: Mutex::new(Phase::Head(Instant::now() + limits.header_timeout)),
            wake: Notify::new(),
            evicted: AtomicBool::new(false),
            limits,
        });
        let id = registry.next.fetch_add(1, Ordering::Relaxed);
        {
            let mut m = registry.conns.lock().unwrap_or_else(|e| e.into_inner());
            if m.len() >= limits.max_connections.max(1) {
                let victim = m
                    .iter()
                    .find(|(_, c)| !matches!(c.phase(), Phase::Busy))
                    .map(|(id, c)| (*id, Arc::clone(c)));
                match victim {
                    Some((old, c)) => {
                        m.remove(&old);
                        c.evict();
                        stats.count(Dropped::Evicted);
                    }
                    None => {
                        stats.count(Dropped::Refused);
                        drop(m);
                        let _ = stream.try_write(REFUSED);
                        debug!(%peer, "metrics connection refused: at the connection cap");
                        continue;
                    }
                }
            }
            m.insert(id, Arc::clone(&conn));
            stats.open.store(m.len() as u64, Ordering::Relaxed);
        }
        let registered = Registered {
            registry: Arc::clone(&registry),
            stats: Arc::clone(&stats),
            id,
        };
        let renderer = Arc::clone(&renderer);
        let stats = Arc::clone(&stats);
        let web = Arc::clone(&web);
        let tls = tls.clone();
        tokio::spawn(async move {
            let _registered = registered;
            let io = Watched {
                inner: stream,
                conn: Arc::clone(&conn),
            };
            let svc = {
                let conn = Arc::clone(&conn);
                hyper::service::service_fn(move |req| {
                    conn.request();
                    let renderer = Arc::clone(&renderer);
                    let web = Arc::clone(&web);
                    let conn = Arc::clone(&conn);
                    async move {
                        let r = handle(renderer, web, req).await;
                        let (parts, inner) = r.into_parts();
                        Ok::<_, Infallible>(Response::from_parts(parts, Tracked { inner, conn }))
                    }
                })
            };
            // hyper's own header timer is off: the watchdog below keeps
            // the deadlines (hyper's would also cover keep-alive pauses).
            // The TLS handshake runs inside the same future, so the header
            // timeout bounds it too.
            let serving = async move {
                let mut http = http1::Builder::new();
                http.header_read_timeout(None);
                match tls {
                    Some(acceptor) => {
                        let stream = acceptor
                            .accept(io)
                            .await
                            .map_err(|e| format!("TLS handshake: {e}"))?;
                        http.serve_connection(TokioIo::new(stream), svc)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    None => http
                        .serve_connection(TokioIo::new(io), svc)
                        .await
                        .map_err(|e| e.to_string()),
                }
            };
            tokio::pin!(serving);
            loop {
                if conn.evicted.load(Ordering::SeqCst) {
                    debug!(%peer, "metrics connection closed to make room at the cap");
                    return;
                }
                let deadline = match conn.phase() {
                    Phase::Head(d) | Phase::Idle(d) => Some(d),
                    Phase::Busy => None,
                };
                let expired = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = &mut serving => {
                        if let Err(e) = r {
                            debug!(%peer, "metrics connection ended: {e}");
                        }
                        return;
                    }
                    _ = conn.wake.notified() => {}
                    _ = expired => {
                        // The phase may have moved on while this slept.
                        let now = Instant::now();
                        let why = match conn.phase() {
                            Phase::Head(d) if d <= now => Some(Dropped::HeaderTimeout),
                            Phase::Idle(d) if d <= now => Some(Dropped::IdleTimeout),
                            _ => None,
                        };
                        if let Some(why) = why {
                            stats.count(why);
                            debug!(%peer, "metrics connection closed: {}", why.name());
                            return;
                        }
                    }
                }
            }
        });
    }
}
