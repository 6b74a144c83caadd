//! `cargo xtask bench scale`: what many processes cost the agent.
//!
//! Not a timed test: it prints one table. A helper (`__scale-helper`, a
//! hidden mode of this binary) forks N idle processes; for every step of
//! N and every `--group-by`, a fresh `iolens run` is started, the helper
//! makes each process do a little known I/O (so the agent, attached only
//! now, sees it), and once the agent exports them all:
//! - agent memory: VmRSS and VmHWM (peak) from /proc/PID/status;
//! - scrape time (median of several GETs of /metrics), size, series
//!   (sample lines), families (`# TYPE` lines) and, grouped, the groups
//!   (`iolens_group_members` series) and the series that carry the group;
//! - agent CPU (utime+stime of the whole process from /proc/PID/stat, % of
//!   one core) over an idle interval, and over as long an interval with a
//!   scrape every second.
//!
//! Then fork storms: bursts of short-lived processes (fork, one write,
//! exit) under one agent with per-pid series and its default flags, a
//! scrape and the agent's memory after each.
//!
//! Each idle process, per round: `read` of 1 byte from a pipe (the go
//! signal), 4 `write`s of 64 bytes to /dev/null, a `read` of 64 bytes from
//! /dev/zero, a `write` of 1 byte to a pipe (ready); it then blocks in the
//! next `read` of the go pipe, asleep, until it is killed.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::fd::RawFd,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::util::{is_root, median, repo_root};

/// Options for `cargo xtask bench scale`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Live idle processes, one step each (comma-separated, increasing:
    /// each step forks the difference).
    #[arg(long, value_delimiter = ',', default_values = ["1000", "5000", "10000"])]
    pub processes: Vec<usize>,
    /// The agent's --group-by values to measure at every step.
    #[arg(long = "group-by", value_delimiter = ',',
          default_values = ["pid", "cgroup", "unit", "container", "pod"])]
    pub group_by: Vec<String>,
    /// Seconds of each CPU interval (idle, and with a scrape every second).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Scrapes whose median time is reported.
    #[arg(long, default_value_t = 7)]
    pub scrapes: usize,
    /// Short-lived processes per fork storm (0: no storms).
    #[arg(long, default_value_t = 20_000)]
    pub storm: usize,
    /// Fork storms, one after the other under the same agent.
    #[arg(long, default_value_t = 5)]
    pub storms: usize,
    /// Measure this iolens binary instead of building this tree's (A/B of
    /// two builds).
    #[arg(long, value_name = "IOLENS_BINARY")]
    pub iolens: Option<PathBuf>,
}

/// The label that carries the group, per --group-by (pid has none).
fn group_label(by: &str) -> Option<&'static str> {
    match by {
        "cgroup" => Some("cgroup"),
        "unit" => Some("unit"),
        "container" => Some("container_id"),
        "pod" => Some("pod_uid"),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// The helper: forks and holds the processes the agent is measured with.

/// Hidden entry `__scale-helper`: reads commands on stdin, one a line, and
/// answers each with one line: `spawn K` (fork K more idle processes; `ok
/// TOTAL`), `go` (every idle process does its round of I/O; `done`),
/// `storm K` (fork K short-lived processes as fast as they can be reaped;
/// `stormed K SECONDS`). At EOF it kills and reaps its processes and exits.
pub fn helper() -> anyhow::Result<()> {
    // SAFETY: plain syscalls on this process.
    unsafe {
        // Its own process group: the bench's last resort kills the group.
        libc::setpgid(0, 0);
        let unlimited = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // Root is not held to RLIMIT_NPROC, others are: try.
        libc::setrlimit(libc::RLIMIT_NPROC, &unlimited);
    }
    let go = [pipe()?, pipe()?];
    let (ready_r, ready_w) = pipe()?;
    let null = open(c"/dev/null", libc::O_WRONLY)?;
    let zero = open(c"/dev/zero", libc::O_RDONLY)?;
    let fds = ChildFds {
        go,
        ready_r,
        ready_w,
        null,
        zero,
    };
    let mut kids: Vec<libc::pid_t> = Vec::new();
    let result = serve_helper(&fds, &mut kids);
    for &pid in &kids {
        // SAFETY: signalling and reaping our own children.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for &pid in &kids {
        // SAFETY: as above; a null status pointer is allowed.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    result
}

/// The pipes and files the idle processes use. Rounds alternate between
/// the two go pipes, and a process waits on the next round's pipe as soon
/// as it has done one: so each of N bytes written for a round goes to a
/// different process (with one pipe, a quick process could take a second
/// byte and a slow one none).
struct ChildFds {
    /// (read end, write end) of the go pipes.
    go: [(RawFd, RawFd); 2],
    ready_r: RawFd,
    ready_w: RawFd,
    null: RawFd,
    zero: RawFd,
}

fn serve_helper(fds: &ChildFds, kids: &mut Vec<libc::pid_t>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    // The round the next `go` starts: processes forked now wait for it.
    let mut round = 0usize;
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading the helper's commands")?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["spawn", k] => {
                let k: usize = k.parse().context("spawn count")?;
                for _ in 0..k {
                    kids.push(fork_idle(fds, round % 2)?);
                }
                writeln!(out, "ok {}", kids.len())?;
            }
            ["go"] => {
                // One byte per process: a pipe hands each byte to one reader.
                let go = vec![1u8; kids.len()];
                write_all(fds.go[round % 2].1, &go)?;
                round += 1;
                let mut ready = vec![0u8; kids.len()];
                read_exact(fds.ready_r, &mut ready)?;
                writeln!(out, "done")?;
            }
            ["storm", k] => {
                let k: usize = k.parse().context("storm count")?;
                let took = storm(k, fds.null)?;
                writeln!(out, "stormed {k} {:.3}", took.as_secs_f64())?;
            }
            _ => bail!("helper: unknown command `{line}`"),
        }
        out.flush()?;
    }
    Ok(())
}

fn pipe() -> anyhow::Result<(RawFd, RawFd)> {
    let mut p = [0; 2];
    // SAFETY: the array has room for the two fds.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    Ok((p[0], p[1]))
}

fn open(path: &std::ffi::CStr, flags: i32) -> anyhow::Result<RawFd> {
    // SAFETY: a valid C string.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        bail!("open {path:?}: {}", std::io::Error::last_os_error());
    }
    Ok(fd)
}

fn write_all(fd: RawFd, mut buf: &[u8]) -> anyhow::Result<()> {
    while !buf.is_empty() {
        // SAFETY: a valid buffer of buf.len() bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n <= 0 {
            bail!("write: {}", std::io::Error::last_os_error());
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

fn read_exact(fd: RawFd, mut buf: &mut [u8]) -> anyhow::Result<()> {
    while !buf.is_empty() {
        // SAFETY: a valid buffer of buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            bail!("read: {}", std::io::Error::last_os_error());
        }
        buf = &mut buf[n as usize..];
    }
    Ok(())
}

/// Forks one idle process. The helper is single-threaded, so the child may
/// run on after fork; it makes only raw syscalls and never returns.
fn fork_idle(fds: &ChildFds, first: usize) -> anyhow::Result<libc::pid_t> {
    // SAFETY: see above; the child runs `idle_child` only.
    match unsafe { libc::fork() } {
        -1 => bail!(
            "fork: {} (check kernel.pid_max, kernel.threads-max and the pids cgroup)",
            std::io::Error::last_os_error()
        ),
        0 => idle_child(fds, first),
        pid => Ok(pid),
    }
}

fn idle_child(fds: &ChildFds, first: usize) -> ! {
    let mut buf = [0u8; 64];
    let mut b = [0u8; 1];
    // SAFETY: raw syscalls on fds this process holds and buffers it owns.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // Not the helper's stdio nor the pipe ends it alone uses: the bench
        // must see EOF on the helper's stdout when the helper exits.
        libc::close(0);
        libc::close(1);
        libc::close(fds.go[0].1);
        libc::close(fds.go[1].1);
        libc::close(fds.ready_r);
        let mut round = first;
        loop {
            if libc::read(fds.go[round % 2].0, b.as_mut_ptr().cast(), 1) != 1 {
                libc::_exit(0);
            }
            round += 1;
            for _ in 0..4 {
                libc::write(fds.null, buf.as_ptr().cast(), buf.len());
            }
            libc::read(fds.zero, buf.as_mut_ptr().cast(), buf.len());
            libc::write(fds.ready_w, b.as_ptr().cast(), 1);
        }
    }
}

/// Forks `count` processes that each write 64 bytes to /dev/null and exit,
/// keeping at most `MAX_OUTSTANDING` unreaped (pid_max is 32768 here).
fn storm(count: usize, null: RawFd) -> anyhow::Result<Duration> {
    const MAX_OUTSTANDING: usize = 2000;
    let start = Instant::now();
    let mut outstanding = 0usize;
    let reap = |block: bool, outstanding: &mut usize| {
        let flags = if block { 0 } else { libc::WNOHANG };
        // SAFETY: reaping our own children; a null status is allowed.
        while *outstanding > 0 && unsafe { libc::waitpid(-1, std::ptr::null_mut(), flags) } > 0 {
            *outstanding -= 1;
            if block {
                break;
            }
        }
    };
    for _ in 0..count {
        reap(false, &mut outstanding);
        while outstanding >= MAX_OUTSTANDING {
            reap(true, &mut outstanding);
        }
        // SAFETY: single-threaded helper; the child makes raw syscalls only.
        match unsafe { libc::fork() } {
            -1 => bail!("fork: {}", std::io::Error::last_os_error()),
            0 => {
                let buf = [0u8; 64];
                // SAFETY: a valid buffer and fd; _exit never returns.
                unsafe {
                    libc::write(null, buf.as_ptr().cast(), buf.len());
                    libc::_exit(0)
                }
            }
            _ => outstanding += 1,
        }
    }
    while outstanding > 0 {
        reap(true, &mut outstanding);
    }
    Ok(start.elapsed())
}

// ---------------------------------------------------------------------------
// The bench's side.

/// The helper process, talked to line by line.
struct Helper {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Helper {
    fn start() -> anyhow::Result<Helper> {
        let me = std::env::current_exe().context("locating xtask")?;
        let mut child = Command::new(me)
            .arg("__scale-helper")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the scale helper")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("helper stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Helper {
            child,
            stdin,
            lines,
        })
    }

    fn ask(&mut self, command: &str, timeout: Duration) -> anyhow::Result<String> {
        let stdin = self.stdin.as_mut().context("helper closed")?;
        writeln!(stdin, "{command}").context("writing to the helper")?;
        stdin.flush()?;
        self.lines
            .recv_timeout(timeout)
            .map_err(|_| anyhow::anyhow!("the helper did not answer `{command}` in {timeout:?}"))
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // EOF: it kills and reaps its processes, then exits.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: signalling our own child's process group.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// A running `iolens run`; stopped with SIGINT on drop.
struct Agent {
    child: Child,
    addr: SocketAddr,
}

impl Agent {
    fn start(bin: &Path, args: &[String]) -> anyhow::Result<Agent> {
        let mut child = Command::new(bin)
            .arg("run")
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().context("agent stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            // Keep draining: the agent must never block on a full pipe.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("agent: {line}");
                }
                // `metrics on http://ADDR/metrics`, as tests/src/lib.rs reads it.
                if let Some(addr) = line
                    .split("metrics on http://")
                    .nth(1)
                    .and_then(|r| r.split('/').next())
                    .and_then(|a| a.parse::<SocketAddr>().ok())
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                }
            }
        });
        let mut agent = Agent {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        agent.addr = rx
            .recv_timeout(Duration::from_secs(120))
            .map_err(|_| anyhow::anyhow!("iolens did not start serving in 120 s"))?;
        Ok(agent)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One GET of /metrics: its wall time (connect to last byte) and body.
fn scrape(addr: SocketAddr) -> anyhow::Result<(Duration, String)> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).context("reading /metrics")?;
    let took = start.elapsed();
    let text = String::from_utf8(raw).context("/metrics is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no HTTP head in the answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET /metrics: {}", head.lines().next().unwrap_or_default());
    }
    Ok((took, body.to_owned()))
}

/// What one exposition holds.
#[derive(Debug, Default, Clone)]
struct Exposition {
    bytes: usize,
    series: usize,
    families: usize,
    /// iolens_group_members series (grouped runs).
    groups: usize,
    /// Series that carry the group label.
    grouped_series: usize,
    /// iolens_processes.
    processes: f64,
}

fn examine(body: &str, label: Option<&str>) -> Exposition {
    let mut e = Exposition {
        bytes: body.len(),
        ..Exposition::default()
    };
    let needles = label.map(|l| (format!("{{{l}=\""), format!(",{l}=\"")));
    for line in body.lines() {
        if line.starts_with("# TYPE ") {
            e.families += 1;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        e.series += 1;
        if line.starts_with("iolens_group_members{") {
            e.groups += 1;
        }
        if let Some((a, b)) = &needles
            && (line.contains(a.as_str()) || line.contains(b.as_str()))
        {
            e.grouped_series += 1;
        }
        if let Some(v) = line.strip_prefix("iolens_processes ") {
            e.processes = v.trim().parse().unwrap_or(0.0);
        }
    }
    e
}

/// utime+stime of the whole process, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // After the `(comm)`: state is the first field (field 3 of stat(5)),
    // utime and stime fields 14 and 15.
    let rest = stat.rsplit_once(')').context("odd /proc/PID/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}

/// VmRSS and VmHWM in MB (10^6 bytes).
fn memory_mb(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb = |key: &str| -> anyhow::Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("no {key} in /proc/{pid}/status"))?;
        let n: f64 = line.split_whitespace().nth(1).context("value")?.parse()?;
        Ok(n * 1024.0 / 1e6)
    };
    Ok((kb("VmRSS:")?, kb("VmHWM:")?))
}

/// One row of the table.
#[derive(Debug, Clone)]
struct Row {
    processes: usize,
    group_by: String,
    exp: Exposition,
    scrape_ms: f64,
    rss_mb: f64,
    peak_mb: f64,
    cpu_idle_pct: f64,
    cpu_scraped_pct: f64,
}

/// One fork storm.
#[derive(Debug, Clone)]
struct StormRow {
    forked: usize,
    seconds: f64,
    exp: Exposition,
    scrape_ms: f64,
    rss_mb: f64,
    peak_mb: f64,
}

/// Processes on the machine now (the agent sees them too).
fn processes_now() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .count()
        })
        .unwrap_or(0)
}

fn read_sysctl(name: &str) -> Option<usize> {
    std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn run_bench(args: Args) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "the scale benchmark loads eBPF programs and forks thousands of processes: run it as root"
        );
    }
    let mut steps = args.processes.clone();
    steps.sort_unstable();
    steps.dedup();
    if steps.is_empty() || steps[0] == 0 {
        bail!("--processes: give positive counts, e.g. 1000,5000,10000");
    }
    for g in &args.group_by {
        if g != "pid" && group_label(g).is_none() {
            bail!("--group-by {g}: the agent groups by pid, cgroup, unit, container or pod");
        }
    }
    if args.scrapes == 0 || args.seconds == 0 {
        bail!("--scrapes and --seconds must be positive");
    }
    let most = *steps.last().unwrap_or(&0);
    let others = processes_now();
    // The storm keeps at most 2,000 unreaped; each idle process is one task.
    for (name, need) in [
        ("pid_max", most + others + 2_500),
        ("threads-max", most + others + 2_500),
    ] {
        if let Some(have) = read_sysctl(name)
            && have < need
        {
            bail!(
                "kernel.{name} is {have}; {most} processes need about {need}: raise it (sysctl -w kernel.{name}={})",
                need * 2
            );
        }
    }
    let bin = match &args.iolens {
        Some(b) if b.is_file() => b.clone(),
        Some(b) => bail!("--iolens {}: no such file", b.display()),
        None => {
            crate::build_release()?;
            repo_root().join("target/release/iolens")
        }
    };
    let build = describe_build(&bin);
    let started = chrono_like_now();

    let mut rows = Vec::new();
    let mut helper = Helper::start()?;
    let mut spawned = 0usize;
    for &n in &steps {
        let t = Instant::now();
        let ok = helper.ask(&format!("spawn {}", n - spawned), Duration::from_secs(600))?;
        spawned = n;
        eprintln!(
            "scale: {ok} idle processes ({:.1} s to fork {})",
            t.elapsed().as_secs_f64(),
            n
        );
        // Room for every process on the machine, so that none is evicted
        // and the figures are those of all N: --max-processes and the
        // kernel's process tables with headroom, and SYSCALL_STATS with
        // room for the 4 keys of each idle process and the others'.
        let room = processes_now() + 1_000;
        let capacity = [
            "--max-processes".to_owned(),
            room.to_string(),
            "--max-proc-entries".to_owned(),
            room.to_string(),
            "--max-stats-entries".to_owned(),
            (8 * room).max(16_384).to_string(),
        ];
        for by in &args.group_by {
            let mut flags = vec![
                "--listen".to_owned(),
                "127.0.0.1:0".to_owned(),
                "--group-by".to_owned(),
                by.clone(),
            ];
            flags.extend(capacity.iter().cloned());
            eprintln!("scale: {n} processes, iolens run {}", flags.join(" "));
            rows.push(measure(&bin, &flags, &mut helper, n, by, &args)?);
            print_row(rows.last().context("a row")?, true);
        }
    }
    drop(helper);

    let mut storms = Vec::new();
    if args.storm > 0 && args.storms > 0 {
        let mut helper = Helper::start()?;
        let flags = ["--listen", "127.0.0.1:0", "--group-by", "pid"].map(str::to_owned);
        eprintln!(
            "scale: {} fork storms of {}, iolens run {} (default limits)",
            args.storms,
            args.storm,
            flags.join(" ")
        );
        let agent = Agent::start(&bin, &flags)?;
        // Let it settle (the first background reads) before the first storm.
        std::thread::sleep(Duration::from_secs(3));
        for i in 0..args.storms {
            let answer = helper.ask(&format!("storm {}", args.storm), Duration::from_secs(600))?;
            let seconds: f64 = answer
                .split_whitespace()
                .nth(2)
                .and_then(|s| s.parse().ok())
                .unwrap_or(f64::NAN);
            // Two background reads: the exits are noticed.
            std::thread::sleep(Duration::from_secs(2));
            let (took, body) = scrape(agent.addr)?;
            let (rss_mb, peak_mb) = memory_mb(agent.pid())?;
            let row = StormRow {
                forked: args.storm,
                seconds,
                exp: examine(&body, None),
                scrape_ms: took.as_secs_f64() * 1e3,
                rss_mb,
                peak_mb,
            };
            eprintln!(
                "scale: storm {}: {} processes in {:.1} s; {} series, scrape {:.0} ms, RSS {:.1} MB",
                i + 1,
                row.forked,
                row.seconds,
                row.exp.series,
                row.scrape_ms,
                row.rss_mb
            );
            storms.push(row);
        }
        drop(agent);
    }

    println!("\ncargo xtask bench scale, {started}; {build}");
    println!(
        "{} CPUs, Linux {}; idle processes: each did 2 reads and 5 writes (pipes, /dev/null, /dev/zero) \
         under the agent, then sleeps; agent sized so none is evicted (--max-processes, \
         --max-proc-entries, --max-stats-entries); CPU over {} s, % of one core; scrape: median of {}\n",
        std::thread::available_parallelism().map_or(0, usize::from),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|r| r.trim().to_owned())
            .unwrap_or_default(),
        args.seconds,
        args.scrapes
    );
    print_header();
    for r in &rows {
        print_row(r, false);
    }
    if !storms.is_empty() {
        println!(
            "\nfork storms under one agent (--group-by pid, default limits: --max-processes 10000, --exit-ttl 60s):"
        );
        println!(
            "{:<6} {:>8} {:>8} {:>9} {:>10} {:>11} {:>9} {:>9}",
            "storm", "forked", "seconds", "series", "exported", "scrape ms", "RSS MB", "peak MB"
        );
        for (i, s) in storms.iter().enumerate() {
            println!(
                "{:<6} {:>8} {:>8.1} {:>9} {:>10.0} {:>11.0} {:>9.1} {:>9.1}",
                i + 1,
                s.forked,
                s.seconds,
                s.exp.series,
                s.exp.processes,
                s.scrape_ms,
                s.rss_mb,
                s.peak_mb
            );
        }
    }
    print_targets(&rows, &storms);
    Ok(())
}

/// One agent, one (N, group-by) row.
fn measure(
    bin: &Path,
    flags: &[String],
    helper: &mut Helper,
    n: usize,
    by: &str,
    args: &Args,
) -> anyhow::Result<Row> {
    let agent = Agent::start(bin, flags)?;
    // The agent counts from its attach on: a round of I/O it sees.
    helper.ask("go", Duration::from_secs(600))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = scrape(agent.addr)?;
        let e = examine(&body, None);
        if e.processes >= n as f64 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the agent exports {} processes, not the {n} idle ones, after 120 s",
                e.processes
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // Settle: the first scrapes' allocations and the background reads.
    std::thread::sleep(Duration::from_secs(2));
    let pid = agent.pid();
    let interval = Duration::from_secs(args.seconds);

    let c0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    std::thread::sleep(interval);
    let cpu_idle_pct = (cpu_seconds(pid)? - c0) / t0.elapsed().as_secs_f64() * 100.0;

    let mut times = Vec::new();
    let mut last = String::new();
    for _ in 0..args.scrapes {
        let (took, body) = scrape(agent.addr)?;
        times.push(took.as_secs_f64() * 1e3);
        last = body;
    }
    let exp = examine(&last, group_label(by));
    drop(last);

    let c0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    for i in 1..=args.seconds {
        scrape(agent.addr)?;
        let next = t0 + Duration::from_secs(i);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let cpu_scraped_pct = (cpu_seconds(pid)? - c0) / t0.elapsed().as_secs_f64() * 100.0;
    let (rss_mb, peak_mb) = memory_mb(pid)?;
    Ok(Row {
        processes: n,
        group_by: by.to_owned(),
        exp,
        scrape_ms: median(times),
        rss_mb,
        peak_mb,
        cpu_idle_pct,
        cpu_scraped_pct,
    })
}

fn print_header() {
    println!(
        "{:>9} {:<9} {:>8} {:>5} {:>6} {:>8} {:>10} {:>10} {:>7} {:>7} {:>9} {:>9}",
        "processes",
        "group-by",
        "series",
        "fams",
        "groups",
        "grouped",
        "scrape ms",
        "size KB",
        "RSS MB",
        "peak MB",
        "CPU idle",
        "CPU 1/s"
    );
}

fn print_row(r: &Row, progress: bool) {
    let line = format!(
        "{:>9} {:<9} {:>8} {:>5} {:>6} {:>8} {:>10.1} {:>10.0} {:>7.1} {:>7.1} {:>8.2}% {:>8.2}%",
        r.processes,
        r.group_by,
        r.exp.series,
        r.exp.families,
        r.exp.groups,
        if r.group_by == "pid" {
            "-".to_owned()
        } else {
            r.exp.grouped_series.to_string()
        },
        r.scrape_ms,
        r.exp.bytes as f64 / 1e3,
        r.rss_mb,
        r.peak_mb,
        r.cpu_idle_pct,
        r.cpu_scraped_pct
    );
    if progress {
        eprintln!("scale: {line}");
    } else {
        println!("{line}");
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT MET" }
}

fn print_targets(rows: &[Row], storms: &[StormRow]) {
    println!("\ntargets (issue #17):");
    let at = |n: usize, by: &str| rows.iter().find(|r| r.processes == n && r.group_by == by);
    match at(10_000, "pid") {
        Some(r) => {
            println!(
                "  10,000 processes, per-pid series: RSS {:.1} MB (peak {:.1}) <= 50 MB: {}",
                r.rss_mb,
                r.peak_mb,
                verdict(r.rss_mb <= 50.0)
            );
            println!(
                "  10,000 processes, per-pid series: scrape {:.0} ms <= 200 ms: {}",
                r.scrape_ms,
                verdict(r.scrape_ms <= 200.0)
            );
            println!(
                "  10,000 processes, per-pid series: idle CPU {:.2}% <= 1% of a core: {}",
                r.cpu_idle_pct,
                verdict(r.cpu_idle_pct <= 1.0)
            );
        }
        None => println!(
            "  (no 10,000-process per-pid row: run with --processes …,10000 --group-by pid,…)"
        ),
    }
    for r in rows.iter().filter(|r| r.group_by == "cgroup") {
        let bound = r.exp.families * r.exp.groups;
        println!(
            "  {} processes by cgroup: {} grouped series <= {} families x {} groups = {}: {} ({} series in all)",
            r.processes,
            r.exp.grouped_series,
            r.exp.families,
            r.exp.groups,
            bound,
            verdict(r.exp.grouped_series <= bound),
            r.exp.series
        );
    }
    if let Some(first) = storms.first() {
        // Allocator slack: RSS moves by pages with what a scrape happened
        // to allocate; growth beyond 5% is what a leak would show.
        let limit = first.rss_mb * 1.05;
        let worst = storms[1..]
            .iter()
            .map(|s| s.rss_mb)
            .fold(first.rss_mb, f64::max);
        println!(
            "  fork storms: RSS after storm 1 {:.1} MB, highest after storms 2-{} {:.1} MB <= {:.1} MB (+5%): {}",
            first.rss_mb,
            storms.len(),
            worst,
            limit,
            verdict(worst <= limit)
        );
    }
}

/// What was measured: the binary's path, size and mtime, and the tree's
/// commit when it is this tree's build.
fn describe_build(bin: &Path) -> String {
    let commit = Command::new("git")
        .current_dir(repo_root())
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".to_owned());
    let this_tree = bin == repo_root().join("target/release/iolens");
    if this_tree {
        format!("release build of {commit} ({})", bin.display())
    } else {
        format!("{} (tree at {commit})", bin.display())
    }
}

/// UTC date and time now, from `date` (no date crate in xtask).
fn chrono_like_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
