//! `iolens top` end to end: in a real terminal (tmux) against test children
//! that move a known number of bytes per second, `--once --json` against
//! the agent's own /metrics, and the one-line exit 2 for unusable sources.
//!
//! Both sources are tested: `--url` of an `iolens run` the test starts, and
//! the in-process one (top starts its own agent). Both load probes, so they
//! need root; the bad-source tests need nothing but tmux.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use iolens_tests::{
    Agent, Metrics, agent_bin, can_load_probes, in_ci, tcp_sink, tempdir, wait_all_asleep,
    wait_until,
};

const CHILD: &str = env!("CARGO_BIN_EXE_iolens-testchild");
/// The children's name as the kernel keeps it (15 bytes).
const CHILD_COMM: &str = "iolens-testchil";
const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// The probe-loading tests of this file one at a time: each starts one or
/// two agents and paced children, and rates on 2 vCPUs are steadier alone.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn have_tmux(test: &str) -> bool {
    let ok = Command::new("tmux")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        // `cargo xtask test` installs it (xtask's PACKAGES).
        assert!(!in_ci(), "{test}: CI=true but tmux is not installed");
        eprintln!("skipped {test}: needs tmux (apt-get install tmux)");
    }
    ok
}

/// A tmux server of its own with one pane running a plain bash.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, cols: u16, rows: u16) -> Tmux {
        let t = Tmux {
            socket: format!("iolens-{name}-{}", std::process::id()),
        };
        let ok = t
            .cmd()
            .args(["new-session", "-d", "-s", "main", "-x"])
            .arg(cols.to_string())
            .arg("-y")
            .arg(rows.to_string())
            .arg("env PS1='top-test$ ' bash --norc --noprofile")
            .status()
            .expect("run tmux");
        assert!(ok.success(), "tmux new-session failed");
        assert!(
            wait_until(Duration::from_secs(10), || t
                .capture()
                .contains("top-test$")),
            "the shell did not start in tmux"
        );
        t
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"]);
        c
    }

    fn keys(&self, keys: &[&str]) {
        let ok = self
            .cmd()
            .args(["send-keys", "-t", "main"])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(ok.success());
    }

    /// Types a shell line and Enter.
    fn line(&self, text: &str) {
        self.keys(&["-l", text]);
        self.keys(&["Enter"]);
    }

    fn capture(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-J", "-t", "main"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Everything the pane's program writes from now on, raw, into `path`.
    fn record(&self, path: &str) {
        let ok = self
            .cmd()
            .args(["pipe-pane", "-o", "-t", "main"])
            .arg(format!("cat >> {path}"))
            .status()
            .expect("tmux pipe-pane");
        assert!(ok.success());
    }

    fn wait_for(&self, what: &str, timeout: Duration) -> String {
        let mut last = String::new();
        let found = wait_until(timeout, || {
            last = self.capture();
            last.contains(what)
        });
        assert!(found, "`{what}` did not appear in the pane:\n{last}");
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self
            .cmd()
            .arg("kill-server")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The test child in `paced` mode: pwrite to a file and sendfile to a
/// socket at known rates (see scenario_paced in the child).
struct Paced {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    _sink: std::thread::JoinHandle<u64>,
}

impl Paced {
    fn start(dir: &str, user_bps: u64, zc_bps: u64) -> Paced {
        std::fs::create_dir_all(dir).expect("child dir");
        let (port, sink) = tcp_sink();
        let mut child = Command::new(CHILD)
            .args(["paced", dir, &port.to_string()])
            .args([user_bps.to_string(), zc_bps.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn test child");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut p = Paced {
            child,
            stdin,
            stdout,
            _sink: sink,
        };
        assert_eq!(p.read_line(), "ready");
        assert_eq!(p.say("go"), "pacing");
        p
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn read_line(&mut self) -> String {
        let mut l = String::new();
        self.stdout.read_line(&mut l).expect("read child");
        l.trim_end().to_owned()
    }

    /// One command line (written with one write) and the child's answer.
    fn say(&mut self, cmd: &str) -> String {
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .expect("write child");
        self.stdin.flush().expect("flush");
        self.read_line()
    }
}

impl Drop for Paced {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What top prints for bytes (`0`, `512 B`, `1.00 MiB`, …) back to bytes.
fn parse_bytes(num: &str, unit: Option<&str>) -> Option<f64> {
    let mul = match unit {
        None if num == "0" => return Some(0.0),
        Some("B") => 1.0,
        Some("KiB") => KIB as f64,
        Some("MiB") => MIB as f64,
        Some("GiB") => (MIB * KIB) as f64,
        _ => return None,
    };
    num.parse::<f64>().ok().map(|n| n * mul)
}

/// The USER/s and ZCOPY/s cells of `pid`'s row on screen, and the row's
/// index among the table's lines.
fn row_rates(screen: &str, pid: u32) -> Option<(usize, f64, f64)> {
    let pid = pid.to_string();
    screen.lines().enumerate().find_map(|(i, line)| {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.first() != Some(&pid.as_str()) || t.len() < 4 {
            return None;
        }
        // PID COMM then two byte cells, each a number and maybe a unit.
        let mut rest = t[2..].iter().copied().peekable();
        let mut cell = || {
            let num = rest.next()?;
            let unit = rest.next_if(|u| matches!(*u, "B" | "KiB" | "MiB" | "GiB"));
            parse_bytes(num, unit)
        };
        Some((i, cell()?, cell()?))
    })
}

fn within(shown: f64, want: f64, tol: f64) -> bool {
    (shown - want).abs() <= want * tol
}

/// Pid of the `iolens run` whose parent is the `iolens top` running in
/// the pane (the in-process source's agent), by scanning /proc.
fn local_agent_pid() -> Option<u32> {
    let cmdline = |pid: &str| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|&c| c == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let ppid = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok())
            })
    };
    let pids: Vec<String> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    let tops: Vec<u32> = pids
        .iter()
        .filter(|p| {
            let c = cmdline(p);
            c.get(1).map(String::as_str) == Some("top") && c.iter().any(|a| a == CHILD_COMM)
        })
        .filter_map(|p| p.parse().ok())
        .collect();
    pids.iter().find_map(|p| {
        let c = cmdline(p);
        (c.get(1).map(String::as_str) == Some("run")
            && ppid(p).is_some_and(|pp| tops.contains(&pp)))
        .then(|| p.parse().ok())
        .flatten()
    })
}

/// The live view against two paced children: both rates of each within
/// 10% of what the child does, a sort key reorders them, `q` exits 0 with
/// the terminal as it was.
fn tui(source: &str) {
    let test = format!("top_tui_{source}");
    if !can_load_probes(&test) || !have_tmux(&test) {
        return;
    }
    let _serial = serial();
    let agent = (source == "url").then(|| Agent::start(&[]));
    let dir = tempdir(&test);
    // A: mostly through user space; B: mostly zero-copy.
    let (a_user, a_zc) = (MIB, 256 * KIB);
    let (b_user, b_zc) = (256 * KIB, MIB);
    let a = Paced::start(&format!("{dir}/a"), a_user, a_zc);
    let b = Paced::start(&format!("{dir}/b"), b_user, b_zc);

    // The smallest terminal top promises to work in.
    let tmux = Tmux::start(&test, 80, 24);
    tmux.line(&format!("stty -g > {dir}/stty-before"));
    let url = agent
        .as_ref()
        .map(|a| format!(" --url http://{}/metrics", a.addr))
        .unwrap_or_default();
    tmux.line(&format!(
        "{} top{url} --filter {CHILD_COMM}; echo top\"\"-exit=$?",
        agent_bin().display()
    ));

    // Rates over 1 s intervals: the children pace by the time they have
    // run, so each interval holds its rate to about a 10 ms tick (1%);
    // 10% leaves room for a scrape that a busy host delays.
    let mut last = String::new();
    let mut seen = Vec::new();
    let ok = wait_until(Duration::from_secs(60), || {
        last = tmux.capture();
        let (Some(ra), Some(rb)) = (row_rates(&last, a.pid()), row_rates(&last, b.pid())) else {
            return false;
        };
        seen.push((ra.1, ra.2, rb.1, rb.2));
        std::thread::sleep(Duration::from_millis(500));
        within(ra.1, a_user as f64, 0.1)
            && within(ra.2, a_zc as f64, 0.1)
            && within(rb.1, b_user as f64, 0.1)
            && within(rb.2, b_zc as f64, 0.1)
            && ra.0 < rb.0
    });
    eprintln!(
        "{test}: child A {a_user}/{a_zc} B/s, B {b_user}/{b_zc} B/s (user/zero-copy); shown (A user, A zc, B user, B zc): {seen:?}"
    );
    assert!(
        ok,
        "the rows never showed the children's rates within 10% (sorted by USER/s, A first):\n{last}"
    );
    assert!(
        last.contains(" procs  user ") && last.contains("sort USER/s"),
        "no totals or status line:\n{last}"
    );
    let agent_pid = if source == "in-process" {
        let p = local_agent_pid();
        assert!(p.is_some(), "no `iolens run` child of top found");
        p
    } else {
        None
    };

    // `>`: sort by the next column, ZCOPY/s, where B leads.
    tmux.keys(&[">"]);
    let reordered = wait_until(Duration::from_secs(5), || {
        last = tmux.capture();
        matches!(
            (row_rates(&last, a.pid()), row_rates(&last, b.pid())),
            (Some(ra), Some(rb)) if rb.0 < ra.0
        ) && last.contains("sort ZCOPY/s")
    });
    assert!(reordered, "`>` did not sort by ZCOPY/s:\n{last}");

    tmux.keys(&["q"]);
    let screen = tmux.wait_for("top-exit=", Duration::from_secs(20));
    assert!(
        screen.contains("top-exit=0"),
        "top did not exit 0:\n{screen}"
    );
    assert!(
        !screen.contains("USER/s"),
        "the view is still on screen after q:\n{screen}"
    );
    tmux.line(&format!("stty -g > {dir}/stty-after; echo stty-saved"));
    tmux.wait_for("\nstty-saved", Duration::from_secs(10));
    let before = std::fs::read_to_string(format!("{dir}/stty-before")).expect("stty before");
    let after = std::fs::read_to_string(format!("{dir}/stty-after")).expect("stty after");
    assert_eq!(before, after, "terminal modes differ after top exited");
    if let Some(p) = agent_pid {
        assert!(
            wait_until(Duration::from_secs(10), || !std::path::Path::new(&format!(
                "/proc/{p}"
            ))
            .exists()),
            "top's own agent (pid {p}) is still running after q"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn top_tui_url() {
    tui("url");
}

#[test]
fn top_tui_in_process() {
    tui("in-process");
}

/// The counters top reports for `pid`, computed from two scrapes of
/// /metrics by this test's own reading of the README's table.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    user_in: u64,
    user_out: u64,
    zero_copy: u64,
    syscalls: u64,
    vcsw: u64,
    ivcsw: u64,
    disk: u64,
    cpu: f64,
    offcpu: f64,
}

fn expected(m0: &Metrics, m1: &Metrics, pid: u32) -> Expected {
    let pid = pid.to_string();
    let sum = |m: &Metrics, name: &str, f: &dyn Fn(&iolens_tests::Sample) -> bool| -> f64 {
        m.samples
            .iter()
            .filter(|s| s.name == name && s.labels.get("pid") == Some(&pid) && f(s))
            .map(|s| s.value)
            .sum()
    };
    let d =
        |name: &str, f: &dyn Fn(&iolens_tests::Sample) -> bool| sum(m1, name, f) - sum(m0, name, f);
    let path = |s: &iolens_tests::Sample| s.labels.get("path").cloned().unwrap_or_default();
    let kind = |k: &'static str| {
        move |s: &iolens_tests::Sample| s.labels.get("kind").map(String::as_str) == Some(k)
    };
    Expected {
        user_in: d("iolens_io_bytes_total", &|s| path(s).ends_with("_to_user")) as u64,
        user_out: d("iolens_io_bytes_total", &|s| {
            path(s).starts_with("user_to_")
        }) as u64,
        zero_copy: d("iolens_io_bytes_total", &|s| {
            let p = path(s);
            !p.contains("user") && !p.contains("unknown")
        }) as u64,
        syscalls: d("iolens_process_syscalls_total", &|_| true) as u64,
        vcsw: d("iolens_context_switches_total", &kind("voluntary")) as u64,
        ivcsw: d("iolens_context_switches_total", &kind("involuntary")) as u64,
        disk: d("iolens_block_bytes_total", &|s| {
            matches!(
                s.labels.get("op").map(String::as_str),
                Some("read" | "write")
            )
        }) as u64,
        cpu: d("iolens_cpu_seconds_total", &|_| true),
        offcpu: d("iolens_offcpu_seconds_total", &|_| true),
    }
}

/// `--once --json` for a child that is quiet except for one known burst
/// inside top's interval equals what /metrics shows over the same time.
fn once_json(source: &str) {
    let test = format!("top_once_json_{source}");
    if !can_load_probes(&test) {
        return;
    }
    let _serial = serial();
    let agent = Agent::start(&[]);
    let dir = tempdir(&test);
    let mut c = Paced::start(&dir, 512 * KIB, 512 * KIB);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.say("pause"), "paused");
    wait_all_asleep(c.pid());
    let m0 = agent.scrape();

    let mut top = Command::new(agent_bin());
    top.args(["top", "--once", "--json", "--interval", "3s", "--filter"])
        .arg(c.pid().to_string());
    if source == "url" {
        top.arg("--url")
            .arg(format!("http://{}/metrics", agent.addr));
    }
    let mut top = top
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn top");
    let mut stderr = BufReader::new(top.stderr.take().expect("stderr"));
    let mut log = String::new();
    let started = Instant::now();
    loop {
        let mut l = String::new();
        let n = stderr.read_line(&mut l).expect("top stderr");
        log.push_str(&l);
        assert!(n > 0, "top exited before its first sample:\n{log}");
        if l.contains("first sample taken") {
            break;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    let burst = c.say("burst");
    assert_eq!(burst, "burst 40960 81920");
    wait_all_asleep(c.pid());
    let mut out = String::new();
    top.stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("top stdout");
    let status = top.wait().expect("wait top");
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    assert!(
        status.success(),
        "top --once --json failed: {status}\n{log}{rest}"
    );
    let m1 = agent.scrape();

    let json: serde_json::Value = serde_json::from_str(&out).expect("top's JSON");
    assert_eq!(json["schema"], "iolens.top.v1");
    let rows = json["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "--filter PID gives one row: {out}");
    let row = &rows[0];
    assert_eq!(row["pid"], c.pid());
    let delta = &row["delta"];
    let n = |k: &str| {
        delta[k]
            .as_u64()
            .unwrap_or_else(|| panic!("delta.{k}: {delta}"))
    };
    let shown = Expected {
        user_in: n("user_in_bytes"),
        user_out: n("user_out_bytes"),
        zero_copy: n("zero_copy_to_pipe_bytes")
            + n("zero_copy_from_pipe_bytes")
            + n("zero_copy_pipe_to_pipe_bytes")
            + n("zero_copy_other_bytes"),
        syscalls: n("syscalls"),
        vcsw: n("voluntary_switches"),
        ivcsw: n("involuntary_switches"),
        disk: n("disk_read_bytes") + n("disk_write_bytes"),
        cpu: delta["cpu_seconds"].as_f64().expect("cpu_seconds"),
        offcpu: delta["offcpu_seconds"].as_f64().expect("offcpu_seconds"),
    };
    let want = expected(&m0, &m1, c.pid());
    eprintln!("{test}: top {shown:?}\n{test}: /metrics {want:?}");
    // The burst, exactly: the command read from stdin, 10 pwrites of 4096
    // and the answer written, 81920 bytes by sendfile.
    assert_eq!(shown.user_in, "burst\n".len() as u64);
    assert_eq!(shown.user_out, 40960 + format!("{burst}\n").len() as u64);
    assert_eq!(shown.zero_copy, 81920);
    let secs = json["interval_seconds"].as_f64().expect("interval");
    assert!((2.9..4.0).contains(&secs), "interval {secs}");
    let rate = row["user_bytes_per_sec"].as_f64().expect("rate");
    assert!((rate - (shown.user_in + shown.user_out) as f64 / secs).abs() < 1e-6);

    // The burst ended the read the child had slept in since its pause,
    // before top's first sample: that sleep is settled inside the
    // interval. An agent counts a sleep it saw begin: top's own agent
    // (in-process) attached after the pause, so it has none.
    let want_offcpu = if source == "url" { want.offcpu } else { 0.0 };
    assert!(
        want.offcpu > 0.0,
        "off-CPU seconds in /metrics {}",
        want.offcpu
    );
    let wait = row["offcpu_percent"].as_f64().expect("offcpu_percent");
    assert!((wait - shown.offcpu / secs * 100.0).abs() < 1e-6);

    let cpu_close = (shown.cpu - want.cpu).abs() < 1e-6;
    let offcpu_close = (shown.offcpu - want_offcpu).abs() < 1e-6;
    let (shown_ints, want_ints) = (
        Expected {
            cpu: 0.0,
            offcpu: 0.0,
            ..shown
        },
        Expected {
            cpu: 0.0,
            offcpu: 0.0,
            ..want
        },
    );
    assert_eq!(shown_ints, want_ints, "top's delta differs from /metrics'");
    assert!(
        cpu_close,
        "CPU seconds: top {} vs /metrics {}",
        shown.cpu, want.cpu
    );
    assert!(
        offcpu_close,
        "off-CPU seconds: top {} vs {want_offcpu} ({source}; /metrics {})",
        shown.offcpu, want.offcpu
    );

    if source == "url" {
        // A stdout that is not a terminal means --once: a plain table.
        let out = Command::new(agent_bin())
            .args(["top", "--interval", "200ms", "--filter"])
            .arg(c.pid().to_string())
            .arg("--url")
            .arg(format!("http://{}/metrics", agent.addr))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .expect("run top");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.len() == 3 && lines[1].trim_start().starts_with("PID COMM"),
            "{text}"
        );
        assert!(
            lines[2].trim_start().starts_with(&c.pid().to_string()),
            "{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn top_once_json_url() {
    once_json("url");
}

#[test]
fn top_once_json_in_process() {
    once_json("in-process");
}

/// An HTTP server answering every request with `body` (200, text/plain).
fn serve(body: &'static str) -> u16 {
    serve_answer("200 OK", body)
}

/// An HTTP server answering every request with `status` and `body`.
fn serve_answer(status: &'static str, body: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nWWW-Authenticate: Basic realm=\"iolens\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// A port nothing listens on: bound, then closed.
fn refused_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Bad `--url`, a refused connection, a non-iolens endpoint: one line on
/// stderr, exit 2, nothing on stdout; and in a terminal, no alternate
/// screen and the same terminal modes after.
#[test]
fn top_unusable_sources_exit_2_with_one_line() {
    let prom = serve("# TYPE node_load1 gauge\nnode_load1 0.5\n");
    let html = serve("<!DOCTYPE html><html><body>hello</body></html>\n");
    // What an agent with basic_auth_users answers without credentials.
    let locked = serve_answer("401 Unauthorized", "Unauthorized\n");
    let refused = refused_port();
    let cases = [
        (
            "https://127.0.0.1:9464/metrics".to_owned(),
            "`top` cannot read yet",
        ),
        (
            "http://prom:secret@127.0.0.1:9464/metrics".to_owned(),
            "cannot send basic auth yet",
        ),
        (
            format!("http://127.0.0.1:{locked}/metrics"),
            "asks for credentials",
        ),
        ("notaurl".to_owned(), "no scheme"),
        ("ftp://127.0.0.1/metrics".to_owned(), "not an http:// URL"),
        (
            format!("http://127.0.0.1:{refused}/metrics"),
            "cannot connect",
        ),
        (
            format!("http://127.0.0.1:{prom}/metrics"),
            "serves no iolens_ metrics",
        ),
        (
            format!("http://127.0.0.1:{html}/metrics"),
            "did not serve Prometheus text",
        ),
    ];
    for (url, why) in &cases {
        let out = Command::new(agent_bin())
            .args(["top", "--url", url])
            .stdin(Stdio::null())
            .output()
            .expect("run top");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {err}");
        assert!(out.stdout.is_empty(), "{url}: stdout not empty");
        assert_eq!(err.lines().count(), 1, "{url}: not one line: {err}");
        assert!(
            err.starts_with("iolens: ") && err.contains(why),
            "{url}: {err}"
        );
    }

    if !have_tmux("top_unusable_sources_exit_2_with_one_line (terminal part)") {
        return;
    }
    let dir = tempdir("top-unusable");
    let tmux = Tmux::start("top-unusable", 80, 24);
    tmux.line(&format!("stty -g > {dir}/stty-before"));
    let raw = format!("{dir}/raw");
    tmux.record(&raw);
    for (i, (url, why)) in cases.iter().enumerate() {
        tmux.line(&format!(
            "{} top --url '{url}'; echo top\"\"-exit-{i}=$?",
            agent_bin().display()
        ));
        let screen = tmux.wait_for(&format!("top-exit-{i}="), Duration::from_secs(20));
        assert!(
            screen.contains(&format!("top-exit-{i}=2")),
            "{url}:\n{screen}"
        );
        assert!(screen.contains(why), "{url}:\n{screen}");
    }
    tmux.line(&format!("stty -g > {dir}/stty-after; echo stty-saved"));
    tmux.wait_for("\nstty-saved", Duration::from_secs(10));
    let before = std::fs::read_to_string(format!("{dir}/stty-before")).expect("stty before");
    let after = std::fs::read_to_string(format!("{dir}/stty-after")).expect("stty after");
    assert_eq!(before, after, "terminal modes changed");
    let raw = std::fs::read(&raw).expect("raw pane output");
    // smcup, the alternate screen: top must decide before touching the
    // terminal.
    assert!(
        !raw.windows(8).any(|w| w == b"\x1b[?1049h"),
        "top entered the alternate screen for an unusable source"
    );
    let errors = String::from_utf8_lossy(&raw)
        .lines()
        .filter(|l| l.contains("iolens: "))
        .count();
    assert_eq!(errors, cases.len(), "one error line per run");
    let _ = std::fs::remove_dir_all(&dir);
}
