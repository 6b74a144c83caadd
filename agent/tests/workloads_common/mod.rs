//! Helpers for the workload integration tests: run the real binary, find
//! the address it bound, drive the load generator, wrk and curl, and bound
//! every wait in time.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_iolens");

/// A server child process, stopped with SIGINT on drop.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub desc: String,
}

impl Server {
    /// Starts `iolens workload reactor --listen 127.0.0.1:0 ARGS`; see
    /// [`Server::workload`].
    pub fn start(args: &[&str]) -> Server {
        Server::workload("reactor", args)
    }

    /// Starts `iolens workload KIND --listen 127.0.0.1:0 ARGS` and waits
    /// (up to 10 s) for its `listening on ADDR` line.
    pub fn workload(kind: &str, args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["workload", kind, "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning the {kind} server: {e}"));
        let desc = format!("{kind} {}", args.join(" "));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("server {desc} printed no address within 10 s"));
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("server {desc}: unexpected first line {line:?}"))
            .parse()
            .expect("bound address");
        Server {
            child: Some(child),
            addr,
            desc,
        }
    }

    /// `http://ADDR` followed by `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends SIGINT and asserts a clean exit (status 0) within 5 s.
    pub fn stop(self) {
        self.stop_by(libc::SIGINT);
    }

    /// Sends `sig` and asserts a clean exit (status 0) within 5 s.
    pub fn stop_by(self, sig: libc::c_int) {
        let desc = self.desc.clone();
        let status = self.stop_with(sig);
        assert_eq!(
            status,
            Some(0),
            "server {desc} did not exit 0 within 5 s of signal {sig}"
        );
    }

    /// Sends `sig` and returns the exit code (None: killed or hung > 5 s).
    pub fn stop_with(mut self, sig: libc::c_int) -> Option<i32> {
        let child = self.child.take().expect("running");
        signal_and_wait(child, sig)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            signal_and_wait(child, libc::SIGKILL);
        }
    }
}

/// Signals the child and waits up to 5 s; returns its exit code.
pub fn signal_and_wait(mut child: Child, sig: libc::c_int) -> Option<i32> {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a command to completion, killing it after `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: t_out.join().expect("stdout reader"),
        stderr: t_err.join().expect("stderr reader"),
    }
}

/// Runs the built-in load generator with `--json` and returns the report.
pub fn load(addr: SocketAddr, args: &[&str]) -> serde_json::Value {
    let addr = addr.to_string();
    let mut cmd = Command::new(BIN);
    cmd.args(["workload", "load", "--addr", &addr, "--json"]);
    if !args.contains(&"--timeout-ms") {
        cmd.args(["--timeout-ms", "5000"]);
    }
    let out = run_bounded(cmd.args(args), Duration::from_secs(90));
    assert!(
        out.status.success(),
        "load generator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "load generator output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Runs `wrk ARGS URL` (bounded to 60 s), asserts it succeeded with no
/// socket errors and no non-2xx responses, and returns how many requests it
/// completed. `what` names the case in failure messages.
pub fn wrk_clean(what: &str, url: &str, args: &[&str]) -> u64 {
    let out = run_bounded(
        Command::new("wrk").args(args).arg(url),
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{what}: wrk failed: {text}");
    assert!(
        !text.contains("Socket errors"),
        "{what}: wrk saw socket errors:\n{text}"
    );
    assert!(
        !text.contains("Non-2xx"),
        "{what}: wrk saw non-2xx responses:\n{text}"
    );
    text.lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .map(|(n, _)| n.trim().parse().expect("wrk request count"))
        })
        .unwrap_or_else(|| panic!("{what}: no wrk summary line:\n{text}"))
}

/// Whether an external tool exists. Missing in CI (`CI=true`) is a failure;
/// elsewhere the caller skips, and this prints why.
pub fn have_tool(name: &str, debian_package: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "`{name}` is required in CI: install the Debian package `{debian_package}` (cargo xtask setup)"
            );
        }
        eprintln!("SKIPPED: `{name}` not found; install the Debian package `{debian_package}`");
    }
    found
}

/// Byte `i` of every generated body (mirrors `http::body_byte`).
pub fn body(n: usize) -> Vec<u8> {
    const P: &[u8; 64] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-\n";
    (0..n).map(|i| P[i % 64]).collect()
}

/// The exact 200 response the servers send for a body of `n` bytes.
pub fn ok_response(n: usize, keep_alive: bool) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 200 OK\r\nServer: iolens\r\nContent-Length: {n}\r\nConnection: {}\r\n\r\n",
        if keep_alive { "keep-alive" } else { "close" }
    )
    .into_bytes();
    v.extend(body(n));
    v
}

/// Raises this test process's soft RLIMIT_NOFILE to its hard limit and
/// returns the hard limit.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into a live struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit with a live, initialised struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    lim.rlim_max
}
