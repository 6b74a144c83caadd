//! The metrics endpoint under hostile clients (`--web.*` flags): half-sent
//! requests are closed at the header timeout, a flood of them neither
//! locks a scraper out nor leaks fds, keep-alive pauses end at the idle
//! timeout; TLS and basic auth from `--web.config.file` (curl and a real
//! Prometheus as clients, certificates made with the openssl CLI).

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use iolens_tests::{
    Agent, Metrics, agent_bin, can_load_probes, http_get, in_ci, tempdir, wait_until,
};

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Raises this process's soft RLIMIT_NOFILE to `want` (or the hard limit).
fn raise_nofile(want: u64) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        r.rlim_cur = want.min(r.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
    }
    r.rlim_cur
}

fn dropped(m: &Metrics, reason: &str) -> u64 {
    m.sum(
        "iolens_http_connections_dropped_total",
        &[("reason", reason)],
    )
}

const HALF: usize = 2_000;

#[test]
fn half_sent_requests_are_closed_at_the_header_timeout_and_leak_nothing() {
    let test = "half_sent_requests_are_closed_at_the_header_timeout_and_leak_nothing";
    if !can_load_probes(test) {
        return;
    }
    let limit = raise_nofile(HALF as u64 + 1_000);
    assert!(limit > HALF as u64 + 100, "RLIMIT_NOFILE {limit} too low");
    let timeout = Duration::from_secs(2);
    let agent = Agent::start(&["--web.header-timeout", "2s"]);
    // Baseline after one scrape (the blocking pool's thread exists then).
    let (status, _) = http_get(agent.addr, "/metrics");
    assert_eq!(status, 200);
    let baseline = open_fds(agent.pid());

    // 2,000 connections that each send half a request head and stop.
    let started = Instant::now();
    let mut held = Vec::with_capacity(HALF);
    for _ in 0..HALF {
        let mut s = TcpStream::connect(agent.addr).expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n")
            .expect("half a request");
        held.push(s);
    }
    let opened = started.elapsed();
    let peak = open_fds(agent.pid());

    // A scrape in the middle of them is answered.
    let t = Instant::now();
    let (status, body) = http_get(agent.addr, "/metrics");
    let scrape = t.elapsed();
    assert_eq!(status, 200, "a scrape during the flood");
    assert!(body.contains("iolens_probe_attached"), "{body}");

    // Every one is closed by the agent, none later than the timeout after
    // the last was opened (slack: scheduling on a loaded 2-vCPU machine).
    let last_opened = Instant::now();
    let mut answered = 0;
    for s in &mut held {
        s.set_read_timeout(Some(timeout + Duration::from_secs(5)))
            .expect("read timeout");
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    assert!(
                        buf[..n].starts_with(b"HTTP/1.1 503") || answered > 0,
                        "unexpected bytes: {:?}",
                        String::from_utf8_lossy(&buf[..n])
                    );
                    answered += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("a half-sent connection was not closed: {e}"),
            }
        }
    }
    let all_closed = last_opened.elapsed();
    assert!(
        all_closed < timeout + Duration::from_secs(2),
        "closing took {all_closed:?} after the last connection (timeout {timeout:?})"
    );
    drop(held);

    // The agent's fds come back to the baseline.
    let back = wait_until(Duration::from_secs(10), || {
        open_fds(agent.pid()) <= baseline
    });
    let after = open_fds(agent.pid());
    assert!(back, "fds: baseline {baseline}, peak {peak}, after {after}");

    // Each was closed by the agent: at the cap to make room, or at the
    // header timeout. None was refused: none was being answered.
    let m = agent.scrape();
    let (timed_out, evicted, refused) = (
        dropped(&m, "header_timeout"),
        dropped(&m, "evicted"),
        dropped(&m, "refused"),
    );
    assert_eq!(
        timed_out + evicted,
        HALF as u64,
        "header_timeout {timed_out} + evicted {evicted}"
    );
    assert_eq!(refused, 0);
    assert_eq!(answered, 0, "no 503 was due");
    // How many of each depends on how fast they were opened: any that
    // waited 2 s before the cap was reached timed out first.
    assert!(evicted > 0, "the cap (256) was never reached");
    println!(
        "{HALF} half-sent: opened in {opened:?}; agent fds baseline {baseline}, peak {peak}, after {after}; \
         scrape during them {scrape:?}; all closed {all_closed:?} after the last; \
         header_timeout {timed_out}, evicted {evicted}"
    );
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
}

/// A keep-alive connection serves a second request after a short pause,
/// and is closed once a pause exceeds the idle timeout.
#[test]
fn keep_alive_pauses_end_at_the_idle_timeout() {
    let test = "keep_alive_pauses_end_at_the_idle_timeout";
    if !can_load_probes(test) {
        return;
    }
    let agent = Agent::start(&["--web.idle-timeout", "1s", "--web.header-timeout", "5s"]);
    let mut s = TcpStream::connect(agent.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let get = |s: &mut TcpStream| {
        s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .expect("send");
        // The landing page: headers, then Content-Length bytes.
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "closed mid-response");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_owned())
                    })
                    .and_then(|v| v.parse().ok())
                    .expect("content-length");
                if body.len() >= len {
                    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                    return;
                }
            }
        }
    };
    get(&mut s);
    std::thread::sleep(Duration::from_millis(400));
    get(&mut s);
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    let closed = t.elapsed();
    assert_eq!(n, 0, "the idle connection was closed");
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_secs(3),
        "closed after {closed:?} with --web.idle-timeout 1s"
    );
    let m = agent.scrape();
    assert_eq!(dropped(&m, "idle_timeout"), 1);
    assert_eq!(dropped(&m, "header_timeout"), 0);
    println!("idle keep-alive connection closed after {closed:?}");
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
}

/// A throwaway PKI made with the openssl CLI: a CA, a server certificate
/// for 127.0.0.1 and localhost, a client certificate, and a client
/// certificate from another CA.
struct Pki {
    dir: std::path::PathBuf,
}

impl Pki {
    fn make(name: &str) -> Option<Pki> {
        if Command::new("openssl").arg("version").output().is_err() {
            assert!(
                !in_ci(),
                "CI=true but the openssl CLI is missing (apt-get install openssl)"
            );
            eprintln!("skipped: the openssl CLI is missing (apt-get install openssl)");
            return None;
        }
        let dir = std::path::PathBuf::from(tempdir(name));
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        for ca in ["ca", "rogue-ca"] {
            let mut a = vec!["req", "-x509"];
            a.extend_from_slice(&ec);
            let (key, crt, subj) = (
                format!("{ca}.key"),
                format!("{ca}.crt"),
                format!("/CN=iolens test {ca}"),
            );
            a.extend_from_slice(&[
                "-keyout",
                &key,
                "-out",
                &crt,
                "-days",
                "2",
                "-subj",
                &subj,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            run(&a);
        }
        for (leaf, ca, ext) in [
            (
                "server",
                "ca",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "ca", "extendedKeyUsage=clientAuth\n"),
            ("rogue-client", "rogue-ca", "extendedKeyUsage=clientAuth\n"),
        ] {
            let extfile = format!("{leaf}.ext");
            std::fs::write(
                dir.join(&extfile),
                format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{ext}"),
            )
            .expect("ext file");
            let (key, csr, crt, subj) = (
                format!("{leaf}.key"),
                format!("{leaf}.csr"),
                format!("{leaf}.crt"),
                format!("/CN=iolens test {leaf}"),
            );
            let mut a = vec!["req", "-new"];
            a.extend_from_slice(&ec);
            a.extend_from_slice(&["-keyout", &key, "-out", &csr, "-subj", &subj]);
            run(&a);
            let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_crt,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &extfile,
            ]);
        }
        Some(Pki { dir })
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// Writes a web config file next to the certificates (relative paths
    /// in it resolve there) and returns its path.
    fn config(&self, name: &str, yaml: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, yaml).expect("web config");
        p.display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// curl's HTTP status for `url` (0: no HTTP answer) and its exit code.
fn curl(url: &str, extra: &[&str]) -> (u16, i32) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    (
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        out.status.code().unwrap_or(-1),
    )
}

const USER: &str = "prometheus";
const PASSWORD: &str = "s3cret scrape";

fn users_yaml() -> String {
    // Cost 4, the lowest bcrypt has: the test checks the scheme, not cost.
    let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
    format!("basic_auth_users:\n  {USER}: '{hash}'\n")
}

#[test]
fn tls_with_basic_auth_answers_200_to_the_right_password_only() {
    let test = "tls_with_basic_auth_answers_200_to_the_right_password_only";
    if !can_load_probes(test) {
        return;
    }
    let Some(pki) = Pki::make("web-tls-auth") else {
        return;
    };
    let config = pki.config(
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{}",
            users_yaml()
        ),
    );
    let agent = Agent::start(&["--web.config.file", &config]);
    assert!(
        agent.log_text().contains("metrics on https://"),
        "{}",
        agent.log_text()
    );
    let url = format!("https://localhost:{}/metrics", agent.addr.port());
    let ca = pki.path("ca.crt");
    let right = format!("{USER}:{PASSWORD}");
    let wrong = format!("{USER}:not it");
    let other = format!("someone:{PASSWORD}");
    assert_eq!(
        curl(&url, &["--cacert", &ca, "-u", &right]).0,
        200,
        "right password"
    );
    assert_eq!(
        curl(&url, &["--cacert", &ca, "-u", &wrong]).0,
        401,
        "wrong password"
    );
    assert_eq!(
        curl(&url, &["--cacert", &ca, "-u", &other]).0,
        401,
        "unknown user"
    );
    assert_eq!(curl(&url, &["--cacert", &ca]).0, 401, "no credentials");
    let landing = format!("https://127.0.0.1:{}/", agent.addr.port());
    assert_eq!(
        curl(&landing, &["--cacert", &ca]).0,
        401,
        "every path is protected"
    );
    // The body, over TLS with the password.
    let out = Command::new("curl")
        .args(["-sf", "--cacert", &ca, "-u", &right, &url])
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("iolens_probe_attached{"), "{body}");
    // Neither plain HTTP nor a server the client cannot verify.
    let plain = format!("http://127.0.0.1:{}/metrics", agent.addr.port());
    assert_eq!(
        curl(&plain, &["-u", &right]).0,
        0,
        "plain HTTP to the TLS port"
    );
    let (code, exit) = curl(&url, &["-u", &right]);
    assert_eq!(
        code, 0,
        "without the CA, curl must refuse the certificate (exit {exit})"
    );
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn a_required_client_certificate_must_come_from_the_client_ca() {
    let test = "a_required_client_certificate_must_come_from_the_client_ca";
    if !can_load_probes(test) {
        return;
    }
    let Some(pki) = Pki::make("web-mtls") else {
        return;
    };
    let config = pki.config(
        "web.yml",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
    );
    let agent = Agent::start(&["--web.config.file", &config]);
    let url = format!("https://127.0.0.1:{}/metrics", agent.addr.port());
    let ca = pki.path("ca.crt");
    let (cert, key) = (pki.path("client.crt"), pki.path("client.key"));
    let (rogue, rogue_key) = (pki.path("rogue-client.crt"), pki.path("rogue-client.key"));
    assert_eq!(
        curl(&url, &["--cacert", &ca, "--cert", &cert, "--key", &key]).0,
        200,
        "a client certificate from the client CA"
    );
    let (code, exit) = curl(&url, &["--cacert", &ca]);
    assert_eq!(
        code, 0,
        "no client certificate: the handshake fails (curl exit {exit})"
    );
    assert_ne!(exit, 0);
    let (code, exit) = curl(
        &url,
        &["--cacert", &ca, "--cert", &rogue, "--key", &rogue_key],
    );
    assert_eq!(code, 0, "a certificate of another CA (curl exit {exit})");
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn a_bad_web_config_is_one_line_and_exit_2() {
    let dir = std::path::PathBuf::from(tempdir("web-bad-config"));
    for (name, yaml, needle) in [
        (
            "unknown.yml",
            "tls_server_config:\n  certfile: x\n",
            "unknown field `certfile`",
        ),
        (
            "missing.yml",
            "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n",
            "nope.crt",
        ),
        (
            "hash.yml",
            "basic_auth_users:\n  prom: hunter2\n",
            "not a bcrypt hash",
        ),
        (
            "nocert.yml",
            "tls_server_config:\n  key_file: server.key\n",
            "cert_file is missing",
        ),
        (
            "syntax.yml",
            "basic_auth_users: [prom\n",
            "basic_auth_users",
        ),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, yaml).expect("write");
        let out = Command::new(agent_bin())
            .args(["run", "--listen", "127.0.0.1:0", "--web.config.file"])
            .arg(&p)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run iolens");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains("--web.config.file") && err.contains(needle),
            "{name}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: one line: {err}");
    }
    let out = Command::new(agent_bin())
        .args(["run", "--web.config.file", "/nonexistent/web.yml"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run iolens");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot read it"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A real Prometheus (Debian's) scrapes iolens over TLS with basic auth and
/// stores its samples.
#[test]
fn prometheus_scrapes_over_tls_with_basic_auth() {
    let test = "prometheus_scrapes_over_tls_with_basic_auth";
    if !can_load_probes(test) {
        return;
    }
    let Some(prom) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("prometheus"))
            .find(|p| p.is_file())
    }) else {
        assert!(!in_ci(), "{test}: CI=true but prometheus is not installed");
        eprintln!("skipped {test}: prometheus not installed (apt-get install prometheus)");
        return;
    };
    let Some(pki) = Pki::make("web-prometheus") else {
        return;
    };
    let config = pki.config(
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{}",
            users_yaml()
        ),
    );
    let agent = Agent::start(&["--web.config.file", &config]);
    let prom_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let prom_addr: std::net::SocketAddr = format!("127.0.0.1:{prom_port}").parse().expect("addr");
    let prom_yml = pki.config(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n\
             scrape_configs:\n  - job_name: iolens\n    scheme: https\n\
             \x20   tls_config:\n      ca_file: {ca}\n      server_name: localhost\n\
             \x20   basic_auth:\n      username: {USER}\n      password: '{PASSWORD}'\n\
             \x20   static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
            ca = pki.path("ca.crt"),
            port = agent.addr.port(),
        ),
    );
    let log_path = pki.dir.join("prometheus.log");
    let mut child = Command::new(prom)
        .arg(format!("--config.file={prom_yml}"))
        .arg(format!("--storage.tsdb.path={}", pki.path("data")))
        .arg(format!("--web.listen-address={prom_addr}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log"))
        .spawn()
        .expect("spawn prometheus");
    let value = |expr: &str| -> Option<f64> {
        let (status, body) = http_get(prom_addr, &format!("/api/v1/query?query={expr}"));
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let up = wait_until(Duration::from_secs(60), || {
        std::net::TcpStream::connect(prom_addr).is_ok()
            && value("count(iolens_probe_attached)").is_some_and(|n| n > 0.0)
    });
    let samples = value("count(iolens_probe_attached)");
    let health = value("up");
    let (_, targets) = if std::net::TcpStream::connect(prom_addr).is_ok() {
        http_get(prom_addr, "/api/v1/targets")
    } else {
        (0, String::new())
    };
    let _ = child.kill();
    let _ = child.wait();
    let plog = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        up,
        "no iolens samples in Prometheus; targets: {targets}\nlog:\n{plog}"
    );
    assert_eq!(health, Some(1.0), "up; targets: {targets}");
    assert!(
        targets.contains("\"scrapeUrl\":\"https://127.0.0.1:"),
        "{targets}"
    );
    println!("Prometheus stored {samples:?} iolens_probe_attached series over TLS with basic auth");
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
}
