//! The Grafana dashboards against a real Prometheus scraping the real agent:
//! every PromQL expression of every panel must evaluate without an error
//! and return at least one finite value while a workload exercises every
//! metric family. Also `promtool check metrics` on a live scrape.
//!
//! The workload runs in this process, in a thread, for the whole test: a
//! rate() only sees an increase between two scrapes of the same series, so
//! a short-lived child whose work happens before its series' first scrape
//! shows nothing, however right the expression is.

use std::{
    io::Write as _,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd as _, RawFd},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use iolens_tests::{Agent, can_load_probes, http_get, in_ci, tcp_sink, wait_until};
use serde_json::Value;

/// Longest any single wait in this test may take.
const WAIT: Duration = Duration::from_secs(60);

/// What the test substitutes for Grafana's `$__rate_interval`: Grafana's
/// own value is max(4 x scrape interval, step + scrape interval), 20s with
/// the provisioned 5s; 30s here leaves room for a slow machine while the
/// workload keeps every counter moving.
const RATE_INTERVAL: &str = "30s";

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Prometheus and promtool, or a skip (a failure in CI).
fn prometheus_tools(test: &str) -> Option<(PathBuf, PathBuf)> {
    match (find_on_path("prometheus"), find_on_path("promtool")) {
        (Some(p), Some(t)) => Some((p, t)),
        _ => {
            assert!(
                !in_ci(),
                "{test}: CI=true but `prometheus`/`promtool` are not on PATH; `cargo xtask setup` installs Debian's prometheus package"
            );
            eprintln!(
                "skipped {test}: prometheus/promtool not installed (apt-get install prometheus)"
            );
            None
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// A Prometheus server with its own config and storage, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    fn start(bin: &Path, target: SocketAddr) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("iolens-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("prometheus tempdir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: iolens\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("write prometheus.yml");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("prometheus log");
        // The port may be taken between free_port() and Prometheus binding
        // it; then the readiness wait below fails with the log.
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let mut p = Prometheus { child, addr, dir };
        let ready = wait_until(WAIT, || {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", p.log());
            }
            TcpStream::connect(p.addr).is_ok() && http_get(p.addr, "/-/ready").0 == 200
        });
        assert!(ready, "prometheus not ready after {WAIT:?}:\n{}", p.log());
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query: the result array, or the error Prometheus gave.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let (status, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", percent_encode(expr)),
        );
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| format!("HTTP {status}, not JSON ({e}): {body}"))?;
        if v["status"] != "success" {
            return Err(format!(
                "HTTP {status}: {} {}",
                v["errorType"].as_str().unwrap_or("?"),
                v["error"].as_str().unwrap_or(&body)
            ));
        }
        match &v["data"]["result"] {
            Value::Array(a) => Ok(a.clone()),
            // A scalar result is [time, "value"]: one value.
            other => Ok(vec![other.clone()]),
        }
    }

    /// The single value of a query that returns one series, if any.
    fn value(&self, expr: &str) -> Option<f64> {
        let r = self.query(expr).ok()?;
        r.first()?["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One panel target of one dashboard.
#[derive(Debug)]
struct Target {
    dashboard: String,
    panel: String,
    ref_id: String,
    expr: String,
}

/// A `label_values(<selector>, <label>)` template variable.
#[derive(Debug)]
struct VarQuery {
    dashboard: String,
    name: String,
    selector: String,
    label: String,
}

fn dashboards_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

fn collect_targets(panels: &[Value], dashboard: &str, out: &mut Vec<Target>) {
    for p in panels {
        let title = p["title"].as_str().unwrap_or("(untitled)");
        if let Some(ds) = p.get("datasource") {
            assert_eq!(
                ds["uid"], "${datasource}",
                "{dashboard}: panel `{title}` must use the ${{datasource}} variable, not a fixed datasource"
            );
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or("").to_owned();
            assert!(
                !expr.trim().is_empty(),
                "{dashboard}: panel `{title}` has a target without an expression"
            );
            out.push(Target {
                dashboard: dashboard.to_owned(),
                panel: title.to_owned(),
                ref_id: t["refId"].as_str().unwrap_or("?").to_owned(),
                expr,
            });
        }
        // Collapsed rows keep their panels inside.
        if let Some(inner) = p["panels"].as_array() {
            collect_targets(inner, dashboard, out);
        }
    }
}

/// Every target and query variable of every dashboard, after checking the
/// dashboard-level conventions (schema version, datasource variable).
fn dashboard_targets() -> (Vec<Target>, Vec<VarQuery>) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dashboards_dir())
        .expect("read dashboards/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "expected the three dashboards: {files:?}");
    let mut targets = Vec::new();
    let mut var_queries = Vec::new();
    for f in files {
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&f).expect("read dashboard");
        let d: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            d["schemaVersion"].as_u64().is_some_and(|v| v >= 39),
            "{name}: schemaVersion must be >= 39"
        );
        assert!(
            d["uid"].as_str().is_some_and(|u| !u.is_empty()),
            "{name}: uid"
        );
        let vars = d["templating"]["list"].as_array().expect("templating.list");
        assert!(
            vars.iter().any(|v| v["name"] == "datasource"
                && v["type"] == "datasource"
                && v["query"] == "prometheus"),
            "{name}: needs a `datasource` variable of type prometheus"
        );
        for v in vars.iter().filter(|v| v["type"] == "query") {
            let var = v["name"].as_str().unwrap_or("?");
            let def = v["definition"].as_str().unwrap_or("");
            let (selector, label) = def
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|r| r.rsplit_once(','))
                .unwrap_or_else(|| {
                    panic!("{name}: variable `{var}`: expected label_values(<selector>, <label>), got `{def}`")
                });
            var_queries.push(VarQuery {
                dashboard: name.clone(),
                name: var.to_owned(),
                selector: selector.trim().to_owned(),
                label: label.trim().to_owned(),
            });
        }
        let before = targets.len();
        collect_targets(d["panels"].as_array().expect("panels"), &name, &mut targets);
        assert!(targets.len() > before, "{name}: no panel targets");
    }
    (targets, var_queries)
}

/// Grafana's variables replaced by values that select what exists here.
fn substitute(expr: &str, instance: &str, pid: u32) -> String {
    let pid = pid.to_string();
    let mut e = expr.to_owned();
    for (var, value) in [
        ("$__rate_interval", RATE_INTERVAL),
        ("$__interval", "5s"),
        ("$__range", "5m"),
        ("${instance}", instance),
        ("$instance", instance),
        ("${comm}", ".*"),
        ("$comm", ".*"),
        ("${pid}", pid.as_str()),
        ("$pid", pid.as_str()),
    ] {
        e = e.replace(var, value);
    }
    assert!(!e.contains('$'), "unsubstituted variable in `{expr}`");
    e
}

/// I/O that moves every counter the dashboards read, repeated until `stop`:
/// copies both ways, sendfile and splice to a socket, a failing read,
/// epoll with events and with a timeout, poll, select, io_uring (NOP, a
/// write and a failing read), page-cache reads, writes and mapped faults,
/// sleeps (voluntary context switches), and disk reads: O_DIRECT, by
/// pread and by Linux native AIO (io_submit).
fn workload(dir: PathBuf, stop: Arc<AtomicBool>) {
    use io_uring::{IoUring, opcode, types};
    use iolens_tests::aio::{IoEvent, Iocb, aligned};

    let (port, sink) = tcp_sink();
    let sock = TcpStream::connect(("127.0.0.1", port)).expect("connect to sink");
    let path = dir.join("workload");
    let mut ring = IoUring::new(8).expect("io_uring");
    let chunk = vec![0x5au8; 64 << 10];
    let mut buf = vec![0u8; 64 << 10];
    let (mut p, mut q): ([RawFd; 2], [RawFd; 2]) = ([0; 2], [0; 2]);
    // SAFETY: arrays with room for two fds each.
    unsafe {
        assert_eq!(libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC), 0, "pipe2");
        assert_eq!(libc::pipe2(q.as_mut_ptr(), libc::O_CLOEXEC), 0, "pipe2");
    }
    // SAFETY: a fresh epoll fd watching the read end of `p`.
    let ep = unsafe {
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        assert!(ep >= 0, "epoll_create1");
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        assert_eq!(
            libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, p[0], &mut ev),
            0,
            "epoll_ctl"
        );
        ep
    };
    // A file read with O_DIRECT (from the disk each time), written and
    // synced once, and an AIO context to read it through io_submit too.
    let direct = dir.join("direct");
    std::fs::write(&direct, vec![0x33u8; 64 << 10]).expect("write direct file");
    std::fs::File::open(&direct)
        .and_then(|f| f.sync_all())
        .expect("sync direct file");
    let direct = std::ffi::CString::new(direct.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a NUL-terminated path.
    let dfd = unsafe {
        libc::open(
            direct.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECT | libc::O_CLOEXEC,
        )
    };
    assert!(
        dfd >= 0,
        "open O_DIRECT: {}",
        std::io::Error::last_os_error()
    );
    let dbuf = aligned(4096);
    let mut aio_ctx: libc::c_ulong = 0;
    // SAFETY: a valid context pointer.
    let r = unsafe { libc::syscall(libc::SYS_io_setup, 4, &mut aio_ctx) };
    assert_eq!(r, 0, "io_setup: {}", std::io::Error::last_os_error());
    let mut round = 0i64;
    while !stop.load(Ordering::Relaxed) {
        // Disk reads: an O_DIRECT pread, then the same through AIO.
        let off = (round % 16) * 4096;
        round += 1;
        // SAFETY: an aligned 4096-byte buffer, an O_DIRECT fd, and an iocb
        // and event that outlive the calls using them.
        unsafe {
            assert_eq!(
                libc::pread(dfd, dbuf.as_mut_ptr().cast(), 4096, off),
                4096,
                "O_DIRECT pread"
            );
            let mut cb = Iocb {
                aio_fildes: dfd as u32,
                aio_buf: dbuf.as_mut_ptr() as u64,
                aio_nbytes: 4096,
                aio_offset: off,
                ..Iocb::default()
            };
            let mut cbs = [&raw mut cb];
            assert_eq!(
                libc::syscall(libc::SYS_io_submit, aio_ctx, 1, cbs.as_mut_ptr()),
                1,
                "io_submit"
            );
            let mut ev = IoEvent::default();
            assert_eq!(
                libc::syscall(
                    libc::SYS_io_getevents,
                    aio_ctx,
                    1,
                    1,
                    &mut ev,
                    std::ptr::null_mut::<libc::timespec>()
                ),
                1,
                "io_getevents"
            );
            assert_eq!(ev.res, 4096, "AIO O_DIRECT read");
        }
        // user_to_file (new pages: added and dirtied), then file_to_user.
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create workload file");
        f.write_all(&chunk).expect("write workload file");
        let fd = f.as_raw_fd();
        // SAFETY: valid buffer of buf.len() bytes; fd open for the whole
        // block. Each call's result is checked.
        unsafe {
            let in_fd = libc::open(c"/proc/self/exe".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            assert!(in_fd >= 0, "open /proc/self/exe");
            // Page-cache lookups on a file that stays cached.
            assert!(libc::pread(in_fd, buf.as_mut_ptr().cast(), buf.len(), 0) > 0);
            // file_to_socket (sendfile), file_to_pipe and pipe_to_socket
            // (splice).
            let mut off: libc::off_t = 0;
            assert!(libc::sendfile(sock.as_raw_fd(), in_fd, &mut off, 16 << 10) > 0);
            let mut off: libc::loff_t = 0;
            let n = libc::splice(in_fd, &mut off, q[1], std::ptr::null_mut(), 4096, 0);
            assert!(n > 0, "splice file_to_pipe");
            let n2 = libc::splice(
                q[0],
                std::ptr::null_mut(),
                sock.as_raw_fd(),
                std::ptr::null_mut(),
                n as usize,
                0,
            );
            assert_eq!(n2, n, "splice pipe_to_socket");
            // user_to_socket.
            assert!(libc::write(sock.as_raw_fd(), chunk.as_ptr().cast(), 4096) > 0);
            // A file mapping touched page by page: filemap faults.
            let len = 64 << 10;
            let m = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                in_fd,
                0,
            );
            assert_ne!(m, libc::MAP_FAILED, "mmap");
            for i in (0..len).step_by(4096) {
                std::hint::black_box(*(m as *const u8).add(i));
            }
            libc::munmap(m, len);
            libc::close(in_fd);
            // file_to_user from the file just written.
            assert!(libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) >= 0);
            // A failed call: fd 9999 is not open.
            assert!(libc::read(9999, buf.as_mut_ptr().cast(), 1) < 0);
            // epoll: one wakeup with an event, one timeout.
            assert_eq!(libc::write(p[1], b"x".as_ptr().cast(), 1), 1);
            let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
            assert_eq!(libc::epoll_wait(ep, evs.as_mut_ptr(), 4, 1000), 1);
            // poll and select see the same byte.
            let mut pfd = libc::pollfd {
                fd: p[0],
                events: libc::POLLIN,
                revents: 0,
            };
            assert_eq!(libc::poll(&mut pfd, 1, 1000), 1);
            let mut set: libc::fd_set = std::mem::zeroed();
            libc::FD_SET(p[0], &mut set);
            let mut tv = libc::timeval {
                tv_sec: 1,
                tv_usec: 0,
            };
            assert_eq!(
                libc::select(
                    p[0] + 1,
                    &mut set,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    &mut tv
                ),
                1
            );
            assert_eq!(libc::read(p[0], buf.as_mut_ptr().cast(), 1), 1);
            assert_eq!(libc::epoll_wait(ep, evs.as_mut_ptr(), 4, 1), 0);
            // io_uring: a NOP, a write, and a read of a bad fd (a failed
            // completion, so the failures panel has a real series).
            let ops = [
                opcode::Nop::new().build().user_data(1),
                opcode::Write::new(types::Fd(fd), chunk.as_ptr(), 4096)
                    .offset(0)
                    .build()
                    .user_data(2),
                opcode::Read::new(types::Fd(9999), buf.as_mut_ptr(), 16)
                    .build()
                    .user_data(3),
            ];
            for op in &ops {
                ring.submission().push(op).expect("sq full");
            }
        }
        ring.submit_and_wait(3).expect("io_uring_enter");
        let results: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        assert_eq!(results.len(), 3, "{results:?}");
        assert!(
            results.iter().any(|&(u, r)| u == 3 && r < 0),
            "the bad-fd read must fail: {results:?}"
        );
        drop(f);
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(sock);
    // SAFETY: closing the fds and the AIO context opened above, once.
    unsafe {
        libc::syscall(libc::SYS_io_destroy, aio_ctx);
        for fd in [p[0], p[1], q[0], q[1], ep, dfd] {
            libc::close(fd);
        }
    }
    let sent = sink.join().expect("sink thread");
    assert!(sent > 0, "the sink received nothing");
}

/// Whether one series of a query result holds a finite value.
fn finite(series: &Value) -> bool {
    // A vector element is {"metric": …, "value": [t, "v"]}; a scalar is
    // [t, "v"].
    let v = series.get("value").unwrap_or(series);
    v[1].as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

#[test]
fn every_dashboard_expression_returns_data_from_a_real_prometheus() {
    let test = "every_dashboard_expression_returns_data_from_a_real_prometheus";
    // Read and check the JSON before anything else: a broken dashboard
    // fails even where the end-to-end part is skipped.
    let (targets, var_queries) = dashboard_targets();
    if !can_load_probes(test) {
        return;
    }
    let Some((prometheus, promtool)) = prometheus_tools(test) else {
        return;
    };
    let started = Instant::now();
    // --program-stats: the agent-health row reads the per-program run time.
    // --pid: only this process (its workload thread) is counted, so panels
    // that keep the top 10 processes cannot drop it on a busy machine.
    let me = std::process::id().to_string();
    let agent = Agent::start(&["--program-stats", "--pid", &me]);

    let dir = std::env::temp_dir().join(format!("iolens-dash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tempdir");
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (dir, stop) = (dir.clone(), Arc::clone(&stop));
        std::thread::spawn(move || workload(dir, stop))
    };

    // promtool: the exposition must pass Prometheus's own linter.
    let scrape = agent.scrape_text();
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(scrape.as_bytes())
        .expect("feed promtool");
    let out = check.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let prom = Prometheus::start(&prometheus, agent.addr);
    let instance = agent.addr.to_string();
    // Enough scrapes that every rate() has several points of moving
    // counters, and the newest scrape is recent.
    let scraped = wait_until(WAIT, || {
        // A workload that died would leave the counters still: say why.
        if worker.is_finished() {
            return true;
        }
        prom.value(&format!(
            "count_over_time(iolens_processes{{instance=\"{instance}\"}}[1m])"
        ))
        .is_some_and(|n| n >= 5.0)
            && prom
                .value("max(timestamp(iolens_processes))")
                .is_some_and(|t| unix_now() - t < 3.0)
    });
    if worker.is_finished() {
        worker.join().expect("workload thread");
        panic!("the workload thread stopped early");
    }
    assert!(
        scraped,
        "prometheus did not scrape the agent 5 times in {WAIT:?}; up: {:?}\n{}",
        prom.query("up"),
        prom.log()
    );

    // Evaluate everything; retry what is empty for a while (a family whose
    // first increase the last scrape has not seen yet), never what errors.
    let pid = std::process::id();
    let mut pending: Vec<(&Target, String)> = targets
        .iter()
        .map(|t| (t, substitute(&t.expr, &instance, pid)))
        .collect();
    let mut errors = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut empty = Vec::new();
        for (t, q) in pending {
            match prom.query(&q) {
                Err(e) => errors.push(format!(
                    "{} / `{}` ({}): error: {e}\n    {q}",
                    t.dashboard, t.panel, t.ref_id
                )),
                // NaN (0/0 in a quantile of an idle process name) may
                // appear beside real values, but a panel with no finite
                // value at all would draw nothing.
                Ok(r) if !r.iter().any(finite) => empty.push((t, q)),
                Ok(_) => {}
            }
        }
        pending = empty;
        if pending.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // Two formulas whose value this workload pins down: it moves bytes
    // both through user buffers and zero-copy (so 0 < copies per byte < 1),
    // and rereads a cached file (so the hit ratio is above 0, never above 1).
    let copies = |v: f64| v > 0.0 && v < 1.0;
    let ratio = |v: f64| v > 0.0 && v <= 1.0;
    for (dashboard, panel, want, ok) in [
        (
            "iolens-overview.json",
            "Estimated CPU copies per byte moved",
            "in (0, 1)",
            &copies as &dyn Fn(f64) -> bool,
        ),
        (
            "iolens-process.json",
            "Page-cache hit ratio",
            "in (0, 1]",
            &ratio,
        ),
    ] {
        let t = targets
            .iter()
            .find(|t| t.dashboard == dashboard && t.panel == panel)
            .unwrap_or_else(|| panic!("{dashboard}: no panel `{panel}`"));
        let q = substitute(&t.expr, &instance, pid);
        let mine = prom.query(&q).ok().and_then(|r| {
            r.iter()
                .find(|s| s["metric"]["pid"].as_str() == Some(pid.to_string().as_str()))
                .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
        });
        match mine {
            Some(v) if ok(v) => eprintln!("{panel} for the workload: {v:.3}"),
            other => errors.push(format!(
                "{dashboard} / `{panel}`: workload (pid {pid}) value {other:?}, want {want}\n    {q}"
            )),
        }
    }

    // The template variables must offer what exists: this agent's address,
    // the workload's pid, some process name.
    for v in &var_queries {
        let sel = substitute(&v.selector, &instance, pid);
        let (status, body) = http_get(
            prom.addr,
            &format!(
                "/api/v1/label/{}/values?match%5B%5D={}",
                v.label,
                percent_encode(&sel)
            ),
        );
        let values: Vec<String> = serde_json::from_str::<Value>(&body)
            .ok()
            .filter(|j| j["status"] == "success")
            .and_then(|j| j["data"].as_array().cloned())
            .unwrap_or_else(|| {
                errors.push(format!(
                    "{} / variable `{}`: HTTP {status}: {body}",
                    v.dashboard, v.name
                ));
                Vec::new()
            })
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect();
        // Each variable is named after the label it lists; a variable
        // `pid` offering comms would filter nothing that exists.
        if v.label != v.name {
            errors.push(format!(
                "{} / variable `{}` lists label `{}`",
                v.dashboard, v.name, v.label
            ));
        }
        let want = match v.label.as_str() {
            "instance" => Some(instance.clone()),
            "pid" => Some(pid.to_string()),
            _ => None,
        };
        let ok = match &want {
            Some(w) => values.contains(w),
            None => !values.is_empty(),
        };
        if !ok {
            errors.push(format!(
                "{} / variable `{}`: label_values({sel}, {}) gave {values:?}, want {}",
                v.dashboard,
                v.name,
                v.label,
                want.as_deref().unwrap_or("some value")
            ));
        }
    }
    stop.store(true, Ordering::Relaxed);
    worker.join().expect("workload thread");
    let _ = std::fs::remove_dir_all(&dir);
    for (t, q) in &pending {
        errors.push(format!(
            "{} / `{}` ({}): empty result or no finite value\n    {q}",
            t.dashboard, t.panel, t.ref_id
        ));
    }
    assert!(
        errors.is_empty(),
        "{} problems in {} dashboard expressions and {} template variables:\n{}",
        errors.len(),
        targets.len(),
        var_queries.len(),
        errors.join("\n")
    );
    eprintln!(
        "{} dashboard expressions and {} template variables returned data ({:.1}s)",
        targets.len(),
        var_queries.len(),
        started.elapsed().as_secs_f64()
    );
    drop(prom);
    drop(agent);
}

#[test]
fn percent_encoding_keeps_only_unreserved_characters() {
    assert_eq!(
        percent_encode(r#"rate(a{b=~"c.*"}[5m]) / 2"#),
        "rate%28a%7Bb%3D~%22c.%2A%22%7D%5B5m%5D%29%20%2F%202"
    );
    assert_eq!(percent_encode("é"), "%C3%A9");
}
