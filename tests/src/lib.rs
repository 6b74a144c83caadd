//! Helpers for the end-to-end tests: start the real agent binary, scrape and
//! parse its metrics, drive the test child, read the kernel's own counters.
//!
//! Tests that load probes need root. In CI (`CI=true`) they must run: a
//! missing privilege or binary fails the test. Elsewhere they skip with a
//! printed reason.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| v == "true")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a probe-loading test can run here. In CI it must: panics.
pub fn can_load_probes(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        !in_ci(),
        "{test}: CI=true but not root; probe-loading tests must run in CI"
    );
    eprintln!("skipped {test}: needs root to load eBPF programs");
    false
}

/// The agent binary under test: $IOLENS_BIN (set by `cargo xtask test`) or
/// target/debug/iolens.
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("IOLENS_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = root.join("target/debug/iolens");
    let built = std::fs::metadata(&p)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} does not exist: run `cargo build -p iolens` first (or use `cargo xtask test`)",
                p.display()
            )
        });
    // `cargo test` does not rebuild a binary it does not test: an old one
    // fails the probe tests with numbers that look like bugs.
    let newest = ["agent/src", "ebpf/src", "ebpf/common/src"]
        .iter()
        .filter_map(|d| newest_mtime(&root.join(d)))
        .max();
    assert!(
        newest.is_none_or(|n| n <= built),
        "{} is older than the sources: run `cargo build -p iolens` (or use `cargo xtask test`)",
        p.display()
    );
    p
}

/// The latest modification time of the files under `dir`.
fn newest_mtime(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let path = e.path();
            if path.is_dir() {
                newest_mtime(&path)
            } else {
                e.metadata().and_then(|m| m.modified()).ok()
            }
        })
        .max()
}

/// A running `iolens run`.
pub struct Agent {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<String>>,
}

impl Agent {
    /// Starts `iolens run --listen 127.0.0.1:0 <args>` and waits until it
    /// serves metrics.
    pub fn start(args: &[&str]) -> Agent {
        Agent::start_env(args, &[])
    }

    /// [`Agent::start`] with extra environment variables.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut child = Command::new(agent_bin())
            .args(["run", "--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn iolens");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    // Logged before the address is handed over, so a test
                    // that reads the log after start sees this line (CI
                    // once read it just before it was pushed).
                    if let Ok(mut l) = log.lock() {
                        l.push_str(&line);
                        l.push('\n');
                    }
                    // `metrics on http://ADDR/metrics`, or https with TLS.
                    if let Some(addr) = line
                        .split("metrics on http")
                        .nth(1)
                        .map(|r| r.trim_start_matches('s').trim_start_matches("://"))
                        .and_then(|r| r.split('/').next())
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(addr);
                    }
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                let log = log.lock().map(|l| l.clone()).unwrap_or_default();
                panic!("iolens did not start serving (status {status:?}); log:\n{log}");
            }
        };
        Agent { child, addr, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn scrape(&self) -> Metrics {
        Metrics::parse(&self.scrape_text())
    }

    pub fn scrape_text(&self) -> String {
        http_get(self.addr, "/metrics").1
    }

    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// SIGTERM, then the exit status and the whole log.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "iolens did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        // Let the log reader drain the pipe.
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log_text();
        (status, log)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Whether it was still running: a failed test says if the agent
        // died under it, and shows its log.
        let exited = self.child.try_wait().ok().flatten();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "iolens {} ; the last lines of its log:",
                exited.map_or("was still running".to_owned(), |s| format!(
                    "had exited: {s}"
                ))
            );
            for l in tail.iter().rev() {
                eprintln!("  {l}");
            }
        }
    }
}

/// A plain HTTP/1.0 GET: the server closes the connection after replying.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to iolens");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read response");
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// One sample of the exposition.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses the text format as iolens writes it (no escapes in values
    /// other than what comm names need, which the tests do not use).
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (head, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = value.parse().expect("sample value");
            let (name, labels) = match head.split_once('{') {
                Some((n, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let mut labels = BTreeMap::new();
                    for pair in body.split("\",").filter(|p| !p.is_empty()) {
                        let (k, v) = pair.split_once("=\"").expect("label pair");
                        labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                    }
                    (n.to_owned(), labels)
                }
                None => (head.to_owned(), BTreeMap::new()),
            };
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        Metrics { samples }
    }

    /// Sum of the samples of `name` whose labels include all of `want`.
    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> u64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                want.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value as u64)
            .sum()
    }

    pub fn has(&self, name: &str, want: &[(&str, &str)]) -> bool {
        self.samples.iter().any(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }
}

/// `/proc/PID/io`: the kernel's own count of read/write-family calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcIo {
    pub rchar: u64,
    pub wchar: u64,
    pub syscr: u64,
    pub syscw: u64,
}

impl ProcIo {
    pub fn read(pid: u32) -> ProcIo {
        let text = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("read /proc/PID/io");
        let mut io = ProcIo::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v: u64 = v.trim().parse().unwrap_or(0);
            match k {
                "rchar" => io.rchar = v,
                "wchar" => io.wchar = v,
                "syscr" => io.syscr = v,
                "syscw" => io.syscw = v,
                _ => {}
            }
        }
        io
    }
}

/// The test child (tests/src/bin/iolens-testchild.rs), driven line by line.
pub struct TestChild {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

/// What the child printed for one step.
#[derive(Debug, Default)]
pub struct Report {
    pub counts: Vec<Count>,
    /// Other lines (`nfds select 7`, ...).
    pub notes: Vec<String>,
    /// `done` or `phase <name>`.
    pub end: String,
    /// Bytes the child wrote for this step, newlines included.
    pub bytes: u64,
}

/// Sum of a `/proc/PID/task/*/status` field over the live threads.
pub fn status_sum(pid: u32, field: &str) -> u64 {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("list tasks") {
        let t = t.expect("task");
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        total += status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim_start_matches(':').trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

/// Sum over live threads of /proc/PID/task/TID/schedstat's first field:
/// the scheduler's own on-CPU time, in ns.
pub fn schedstat_ns(pid: u32) -> u64 {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("list tasks") {
        let t = t.expect("task");
        let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        total += s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

/// utime + stime of the process from /proc/PID/stat, in seconds.
pub fn stat_cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the parenthesised comm; utime and stime are fields 14
    // and 15, i.e. 12 and 13 after it.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks: u64 = f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
    ticks as f64 / hz
}

/// Keeps a file's resident pages in the page cache (mapped and mlocked by
/// this process) until dropped, so reclaim between two phases of a test
/// (this VM runs DAMON-based reclaim) cannot turn hits into misses.
pub struct PinnedFile {
    addr: *mut libc::c_void,
    len: usize,
}

impl PinnedFile {
    /// Maps `path` and mlocks it. Call only once the file is fully cached:
    /// mlock faults every page in.
    pub fn lock(path: &str) -> PinnedFile {
        let (addr, len) = map_file(path);
        assert!(len > 0, "pinning an empty file");
        // SAFETY: mlock on the mapping just made; unmapped on drop.
        let r = unsafe { libc::mlock(addr, len) };
        assert_eq!(r, 0, "mlock: {}", std::io::Error::last_os_error());
        PinnedFile { addr, len }
    }
}

/// A read-only shared mapping of the whole file (null and 0 if empty);
/// the caller unmaps it.
fn map_file(path: &str) -> (*mut libc::c_void, usize) {
    use std::os::fd::AsRawFd as _;
    let f = std::fs::File::open(path).expect("open");
    let len = f.metadata().expect("stat").len() as usize;
    if len == 0 {
        return (std::ptr::null_mut(), 0);
    }
    // SAFETY: a read-only shared mapping of an open file; it outlives the
    // fd, as mappings do.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED, "mmap");
    (addr, len)
}

impl Drop for PinnedFile {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `lock`.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// Pages of `path` resident in the page cache (mincore).
pub fn resident_pages(path: &str) -> usize {
    let (p, len) = map_file(path);
    if len == 0 {
        return 0;
    }
    let mut vec = vec![0u8; len.div_ceil(4096)];
    // SAFETY: the mapping just made, unmapped right after; vec has a byte
    // per page.
    unsafe {
        assert_eq!(libc::mincore(p, len, vec.as_mut_ptr()), 0, "mincore");
        libc::munmap(p, len);
    }
    vec.iter().filter(|&&b| b & 1 == 1).count()
}

/// One `count` line of the child's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    pub syscall: String,
    pub path: String,
    pub calls: u64,
    pub bytes: u64,
    pub errors: u64,
}

impl TestChild {
    /// Spawns the child with `args` and waits for its `ready`.
    pub fn spawn(bin: &str, args: &[&str]) -> TestChild {
        TestChild::spawn_cmd(Command::new(bin).args(args))
    }

    /// [`TestChild::spawn`] as another user (uid and gid `uid`).
    pub fn spawn_as(bin: &str, args: &[&str], uid: u32) -> TestChild {
        use std::os::unix::process::CommandExt as _;
        TestChild::spawn_cmd(Command::new(bin).args(args).uid(uid).gid(uid))
    }

    fn spawn_cmd(cmd: &mut Command) -> TestChild {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn test child");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut c = TestChild {
            child,
            stdin,
            stdout,
        };
        assert_eq!(c.line(), "ready");
        c
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.stdout.read_line(&mut l).expect("read child stdout");
        l.trim_end().to_owned()
    }

    /// Tells the child to run its scenario; returns its report once done.
    pub fn go(&mut self) -> Vec<Count> {
        let r = self.step();
        assert_eq!(r.end, "done", "child stopped at a phase: use step()");
        r.counts
    }

    /// Sends one line to the child and reads its report up to `done` or
    /// `phase <name>`.
    pub fn step(&mut self) -> Report {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(b"go\n").expect("write child stdin");
        stdin.flush().expect("flush");
        let mut report = Report::default();
        loop {
            let l = self.line();
            report.bytes += l.len() as u64 + 1;
            if l == "done" || l.starts_with("phase ") || l.is_empty() {
                report.end = l;
                break;
            }
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.first() == Some(&"count") {
                assert!(f.len() == 6, "bad child line `{l}`");
                report.counts.push(Count {
                    syscall: f[1].into(),
                    path: f[2].into(),
                    calls: f[3].parse().expect("calls"),
                    bytes: f[4].parse().expect("bytes"),
                    errors: f[5].parse().expect("errors"),
                });
            } else {
                report.notes.push(l);
            }
        }
        report
    }

    /// Closes stdin (the child exits) and waits.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// A TCP sink on 127.0.0.1 that reads and discards everything; returns the
/// port and a handle yielding the byte count.
pub fn tcp_sink() -> (u16, std::thread::JoinHandle<u64>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let port = l.local_addr().expect("addr").port();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n as u64,
            }
        }
        total
    });
    (port, h)
}

/// Waits until `f` holds or the time runs out.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Waits until every thread of `pid` is asleep (state S in
/// /proc/PID/task/*/stat) and its voluntary switch count has stopped
/// moving, so counters read now are final until it is woken.
pub fn wait_all_asleep(pid: u32) {
    let asleep = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.filter_map(Result::ok).all(|t| {
                    std::fs::read_to_string(t.path().join("stat"))
                        .ok()
                        .and_then(|s| {
                            s.rsplit_once(')')
                                .and_then(|(_, r)| r.split_whitespace().next().map(|st| st == "S"))
                        })
                        .unwrap_or(false)
                })
            })
            .unwrap_or(false)
    };
    let mut last = status_sum(pid, "voluntary_ctxt_switches");
    let settled = wait_until(Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(20));
        let now = status_sum(pid, "voluntary_ctxt_switches");
        let stable = now == last;
        last = now;
        stable && asleep()
    });
    assert!(settled, "pid {pid} did not settle asleep");
}

/// A scratch directory for one test, unique per test process.
pub fn tempdir(test: &str) -> String {
    let dir = std::env::temp_dir().join(format!("iolens-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tempdir");
    dir.to_str().expect("utf-8 tempdir").to_owned()
}

/// Pins the calling thread (and what it forks from now on) to `cpu`.
pub fn pin_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Linux native AIO's uapi structs, for the test child and workloads that
/// call io_submit with raw syscalls (no library), and O_DIRECT buffers.
pub mod aio {
    /// uapi `struct iocb` (include/uapi/linux/aio_abi.h, little endian).
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    pub struct Iocb {
        pub aio_data: u64,
        pub aio_key: u32,
        pub aio_rw_flags: i32,
        pub aio_lio_opcode: u16,
        pub aio_reqprio: i16,
        pub aio_fildes: u32,
        pub aio_buf: u64,
        pub aio_nbytes: u64,
        pub aio_offset: i64,
        pub aio_reserved2: u64,
        pub aio_flags: u32,
        pub aio_resfd: u32,
    }

    /// uapi `struct io_event`.
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    pub struct IoEvent {
        pub data: u64,
        pub obj: u64,
        pub res: i64,
        pub res2: i64,
    }

    /// A zeroed buffer of `len` bytes aligned for O_DIRECT (4096), leaked:
    /// the scenario's buffers live as long as the process.
    pub fn aligned(len: usize) -> &'static mut [u8] {
        let layout = std::alloc::Layout::from_size_align(len, 4096).expect("layout");
        // SAFETY: a non-zero size; the allocation is never freed.
        unsafe {
            let p = std::alloc::alloc_zeroed(layout);
            assert!(!p.is_null(), "out of memory");
            std::slice::from_raw_parts_mut(p, len)
        }
    }
}
