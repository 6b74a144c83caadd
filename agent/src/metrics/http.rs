//! The HTTP endpoint: `GET /metrics` (Prometheus text format) and a short
//! landing page on `/`.
//!
//! A scrape reads the kernel maps right then, so a test (or a person) that
//! scrapes after a process did its work sees all of it, not the state of the
//! last background tick.

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, server::conn::http1};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, warn};

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
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    Ok(match req.uri().path() {
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
    })
}

/// Serves until the task is dropped.
pub async fn serve<R: Render>(listener: TcpListener, renderer: Arc<R>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!("accept on the metrics listener failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let renderer = Arc::clone(&renderer);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(Arc::clone(&renderer), req));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                debug!(%peer, "metrics connection ended: {e}");
            }
        });
    }
}
