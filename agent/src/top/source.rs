//! Where `top` gets its numbers: the Prometheus text of an agent's
//! `/metrics`, fetched over HTTP. With `--url` that agent runs elsewhere;
//! without it `top` starts one, `iolens run --listen 127.0.0.1:0`, as its
//! own child (see [`LocalAgent`] for why a child and not a thread).

use std::{
    collections::VecDeque,
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;

use crate::agent::UsageError;

/// A scrape larger than this is not an iolens agent's (10,000 processes
/// export a few tens of MiB).
const MAX_BODY: usize = 256 << 20;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a fetch failed, worded for one line after `iolens: `.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot connect to {addr}: {err}; is `iolens run` listening there?")]
    Connect { addr: String, err: std::io::Error },
    #[error("{url} did not answer within {}s", TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error("{url}: {what}")]
    Http { url: String, what: String },
    #[error("{url} answered {status}, not 200 OK; is it an iolens agent's /metrics?")]
    Status { url: String, status: StatusCode },
    #[error(
        "{url} asks for credentials (basic_auth_users in the agent's --web.config.file), which \
         `top` cannot send yet; run `iolens top` on that host without --url instead"
    )]
    Unauthorized { url: String },
}

/// A parsed `--url`.
#[derive(Debug, Clone)]
pub struct Target {
    /// As the user wrote it, for messages.
    pub url: String,
    host: String,
    port: u16,
    /// `Host:` header value.
    authority: String,
    path: String,
}

impl Target {
    /// Parses `http://HOST[:PORT][/PATH]` (the path defaults to /metrics).
    pub fn parse(url: &str) -> Result<Target, UsageError> {
        let bad = |why: &str| {
            UsageError(format!(
                "--url `{url}` {why}; give the agent's metrics address, like http://127.0.0.1:9464/metrics"
            ))
        };
        let uri: Uri = url.parse().map_err(|_| bad("is not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "uses https, which `top` cannot read yet: it speaks plain HTTP only (an agent \
                     with TLS in its --web.config.file is for Prometheus; run `iolens top` on that \
                     host without --url instead)",
                ));
            }
            Some(_) => return Err(bad("is not an http:// URL")),
            None => return Err(bad("has no scheme")),
        }
        let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad(
                "carries user info, but `top` cannot send basic auth yet (an agent with \
                 basic_auth_users in its --web.config.file is for Prometheus; run `iolens top` \
                 on that host without --url instead)",
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("") | Some("/") => "/metrics".to_owned(),
            Some(p) => p.to_owned(),
        };
        Ok(Target {
            url: url.to_owned(),
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path,
        })
    }

    /// One GET, the body as text.
    pub async fn fetch(&self) -> Result<String, FetchError> {
        tokio::time::timeout(TIMEOUT, self.fetch_inner())
            .await
            .map_err(|_| FetchError::Timeout {
                url: self.url.clone(),
            })?
    }

    async fn fetch_inner(&self) -> Result<String, FetchError> {
        let http = |what: String| FetchError::Http {
            url: self.url.clone(),
            what,
        };
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|err| FetchError::Connect {
                addr: format!("{}:{}", self.host, self.port),
                err,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(format!("HTTP handshake failed: {e}")))?;
        // The connection is driven by its own task; it ends with `sender`.
        let conn = tokio::spawn(conn);
        let req = Request::get(self.path.as_str())
            .header(header::HOST, self.authority.as_str())
            .header(header::ACCEPT, "text/plain;version=0.0.4")
            .header(header::USER_AGENT, "iolens-top")
            .body(Empty::<Bytes>::new())
            .map_err(|e| http(format!("building the request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| http(format!("no HTTP response: {e}")))?;
        if resp.status() != StatusCode::OK {
            conn.abort();
            let url = self.url.clone();
            return Err(if resp.status() == StatusCode::UNAUTHORIZED {
                FetchError::Unauthorized { url }
            } else {
                FetchError::Status {
                    url,
                    status: resp.status(),
                }
            });
        }
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| http(format!("reading the body: {e}")))?
            .to_bytes();
        drop(sender);
        conn.abort();
        String::from_utf8(body.into())
            .map_err(|_| http("the body is not UTF-8 text, so not Prometheus metrics".into()))
    }
}

/// An `iolens run` started by `top` for itself: the same binary, on
/// 127.0.0.1 at a port the kernel picks, found from its log line.
///
/// A child rather than the agent's machinery on a thread: `iolens run`
/// owns its signal handling and logs to stderr (which the full-screen view
/// owns), its state types are private to `agent.rs`, and the probe and
/// exposition layers under it are being reorganised. Talking to it over
/// HTTP means one code path for both sources, and the child detaches its
/// probes on SIGTERM as it always does.
pub struct LocalAgent {
    child: Child,
    pub target: Target,
    /// The child's last log lines, for a failure message.
    log: Arc<Mutex<VecDeque<String>>>,
}

impl LocalAgent {
    pub fn start() -> anyhow::Result<LocalAgent> {
        use std::os::unix::process::CommandExt as _;

        let exe = std::env::current_exe().map_err(|e| {
            anyhow::anyhow!("finding this program's own path to start the agent: {e}")
        })?;
        let mut cmd = Command::new(&exe);
        cmd.args(["run", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the forked child before exec and only
        // calls prctl, which is async-signal-safe; it touches no memory of
        // the parent. It makes the agent get SIGTERM (detach and exit) if
        // top dies without stopping it, e.g. on SIGKILL.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting `{} run`: {e}", exe.display()))?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                // Drained to the end so the agent never blocks on a full pipe.
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(addr) = line
                        .split("metrics on http://")
                        .nth(1)
                        .and_then(|r| r.split('/').next())
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(addr.to_owned());
                    }
                    if let Ok(mut l) = log.lock() {
                        if l.len() == 20 {
                            l.pop_front();
                        }
                        l.push_back(line);
                    }
                }
            });
        }
        let mut agent = LocalAgent {
            child,
            // Replaced below; a placeholder keeps Drop in charge of the child
            // from here on.
            target: Target::parse("http://127.0.0.1:0/metrics")?,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => break addr,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = agent.child.try_wait() {
                        // Let the reader take the last lines.
                        std::thread::sleep(Duration::from_millis(50));
                        return Err(agent.failed(&format!("the agent exited ({status})")));
                    }
                }
                Err(_) => {
                    return Err(agent.failed("the agent did not start serving within 60 s"));
                }
            }
        };
        agent.target = Target::parse(&format!("http://{addr}/metrics"))?;
        Ok(agent)
    }

    /// The agent's own last error line if it printed one (`iolens: …`),
    /// else `what` and its last log line.
    fn failed(&self, what: &str) -> anyhow::Error {
        let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        if let Some(l) = log.iter().rev().find(|l| l.starts_with("iolens: ")) {
            return UsageError(format!(
                "{} (from the agent `iolens top` started)",
                l.trim_start_matches("iolens: ")
            ))
            .into();
        }
        match log.back() {
            Some(last) => anyhow::anyhow!("{what}; its last log line: {last}"),
            None => anyhow::anyhow!("{what}"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for LocalAgent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signals our own child, which has not been reaped
            // (try_wait just said it is running), so the pid is still its.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("http://127.0.0.1:9464/metrics").expect("ok");
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 9464, "/metrics")
        );
        let t = Target::parse("http://box.example").expect("ok");
        assert_eq!((t.port, t.path.as_str()), (80, "/metrics"));
        let t = Target::parse("http://[::1]:9464/").expect("ok");
        assert_eq!(
            (t.host.as_str(), t.authority.as_str()),
            ("::1", "[::1]:9464")
        );
        for bad in [
            "",
            "127.0.0.1:9464",
            "ftp://x/metrics",
            "https://x/metrics",
            "http://",
            "http://u:p@x/metrics",
            "not a url",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?}");
        }
    }
}
