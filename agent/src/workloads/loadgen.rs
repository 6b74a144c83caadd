//! `iolens workload load`: an HTTP/1.1 keep-alive load generator.
//!
//! Each thread runs its own level-triggered epoll loop over non-blocking
//! sockets, so thousands of connections need no thread each. Two modes:
//! - closed loop (default): every connection sends its next request as soon
//!   as the previous response is complete;
//! - open loop (`--rate R`): connection *i* of *C* is scheduled to send at
//!   `start + i/R + k·C/R`, and latency is measured from that intended time,
//!   not from the actual send, so a stalled server is charged for the queue
//!   it causes (no coordinated omission, as in wrk2).
//!
//! Every response is validated: status 200, a `Content-Length`, exactly that
//! many body bytes, optionally the expected length (`--expect-body-len`) and
//! the deterministic body pattern of the iolens servers (`--verify-body`).
//!
//! `--json` prints one object with this stable schema (`"schema":
//! "iolens.load.v1"`; fields are only ever added):
//! ```text
//! schema            string  "iolens.load.v1"
//! target            string  "IP:PORT"
//! path              string  request path
//! threads, conns, idle_conns            integers (as configured)
//! idle_connected    integer idle connections that were established
//! rate              number|null  requested total rate (req/s)
//! duration_s        number  measured wall time of the load phase
//! requests          integer successful (200, validated) responses
//! bytes             integer response bytes (head + body) of those
//! body_bytes        integer body bytes of those
//! requests_per_sec, bytes_per_sec       numbers
//! errors            object  {connect, read, write, status, parse, timeout,
//!                            idle_closed, total}: integers
//! latency_us        object  {min, mean, p50, p90, p99, p999, max}: numbers,
//!                           microseconds, over successful requests
//! ```

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    os::fd::{AsRawFd, RawFd},
    sync::{
        Arc, Barrier,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::{
    demux::{Demultiplexer, Epoll, Interest, Trigger},
    http, sys,
};

/// Flags of `iolens workload load`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Target as a URL, http://HOST[:PORT]/PATH, instead of --addr and --path.
    #[arg(long, conflicts_with_all = ["addr", "path"])]
    pub url: Option<String>,
    /// Target address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Request path.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Active keep-alive connections.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub conns: u32,
    /// Extra connections opened first and then kept idle (C10K).
    #[arg(long, default_value_t = 0)]
    pub idle_conns: u32,
    /// Client threads, each with its own epoll loop. Default: number of CPUs.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Load phase length in seconds (default 10 unless --requests is given).
    #[arg(long, conflicts_with = "requests")]
    pub duration: Option<f64>,
    /// Issue this many requests in total (successful or not), then stop.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Open loop: total requests per second, latency measured from the
    /// intended send time. Without it: closed loop, as fast as possible.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Per-request (and per-connect) timeout in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Check every body byte against the iolens servers' body pattern.
    #[arg(long)]
    pub verify_body: bool,
    /// Count a response whose body length differs from this as a parse error.
    #[arg(long)]
    pub expect_body_len: Option<u64>,
    /// Print the report as one JSON object (schema in the module docs).
    #[arg(long)]
    pub json: bool,
}

/// Error counts by kind.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Errors {
    /// Connect failed or timed out.
    pub connect: u64,
    /// Read failed or the peer closed mid-response.
    pub read: u64,
    /// Sending the request failed.
    pub write: u64,
    /// Status other than 200.
    pub status: u64,
    /// Malformed response, wrong length or wrong body bytes.
    pub parse: u64,
    /// No complete response within --timeout-ms.
    pub timeout: u64,
    /// An idle connection was closed by the server.
    pub idle_closed: u64,
    pub total: u64,
}

impl Errors {
    fn add(&mut self, o: &Errors) {
        self.connect += o.connect;
        self.read += o.read;
        self.write += o.write;
        self.status += o.status;
        self.parse += o.parse;
        self.timeout += o.timeout;
        self.idle_closed += o.idle_closed;
    }

    fn sum(&self) -> u64 {
        self.connect
            + self.read
            + self.write
            + self.status
            + self.parse
            + self.timeout
            + self.idle_closed
    }
}

/// Latency summary in microseconds.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// The `--json` report (schema `iolens.load.v1`, see the module docs).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub target: String,
    pub path: String,
    pub threads: u32,
    pub conns: u32,
    pub idle_conns: u32,
    pub idle_connected: u64,
    pub rate: Option<f64>,
    pub duration_s: f64,
    pub requests: u64,
    pub bytes: u64,
    pub body_bytes: u64,
    pub requests_per_sec: f64,
    pub bytes_per_sec: f64,
    pub errors: Errors,
    pub latency_us: Latency,
}

#[derive(Debug)]
struct Plan {
    addr: SocketAddr,
    request: Vec<u8>,
    /// Remaining request tickets when --requests is set.
    tickets: Option<AtomicU64>,
    timeout: Duration,
    verify_body: bool,
    expect_body_len: Option<u64>,
    /// Open loop: per-connection interval between intended sends.
    interval: Option<Duration>,
    rate: Option<f64>,
    completed: AtomicU64,
}

fn parse_target(args: &Args) -> anyhow::Result<(SocketAddr, String, String)> {
    let (hostport, path) = match &args.url {
        Some(url) => {
            let rest = url
                .strip_prefix("http://")
                .with_context(|| format!("--url {url}: only http:// URLs are supported"))?;
            match rest.find('/') {
                Some(i) => (rest[..i].to_owned(), rest[i..].to_owned()),
                None => (rest.to_owned(), "/".to_owned()),
            }
        }
        None => (args.addr.clone(), args.path.clone()),
    };
    if !path.starts_with('/') || path.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        anyhow::bail!(
            "request path {path:?} must start with / and be printable ASCII without spaces"
        );
    }
    let with_port = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        hostport.clone()
    } else {
        format!("{hostport}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {with_port}"))?
        .next()
        .with_context(|| format!("{with_port} resolves to no address"))?;
    Ok((addr, hostport, path))
}

/// Runs the load and prints the report.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (addr, host, path) = parse_target(&args)?;
    let threads = args
        .threads
        .map(|t| t as usize)
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()))
        .min((args.conns as usize).max(1));
    if let Some(r) = args.rate
        && !(r.is_finite() && r > 0.0)
    {
        anyhow::bail!("--rate must be a positive number of requests per second, got {r}");
    }
    if let Some(d) = args.duration
        && !(d.is_finite() && d > 0.0)
    {
        anyhow::bail!("--duration must be a positive number of seconds, got {d}");
    }
    let want_fds = u64::from(args.conns) + u64::from(args.idle_conns) + 256;
    let limit = sys::raise_nofile_limit(want_fds).context("raising RLIMIT_NOFILE")?;
    if limit < want_fds {
        anyhow::bail!(
            "{} connections need about {want_fds} open files but the hard limit is {limit}; raise it (ulimit -Hn)",
            args.conns + args.idle_conns
        );
    }
    sys::install_stop_handlers().context("installing SIGINT/SIGTERM handlers")?;

    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: iolens-load\r\n\r\n")
        .into_bytes();
    let duration = match (args.duration, args.requests) {
        (Some(d), _) => Some(Duration::from_secs_f64(d)),
        (None, None) => Some(Duration::from_secs(10)),
        (None, Some(_)) => None,
    };
    let plan = Plan {
        addr,
        request,
        tickets: args.requests.map(AtomicU64::new),
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
        verify_body: args.verify_body,
        expect_body_len: args.expect_body_len,
        interval: args
            .rate
            .map(|r| Duration::from_secs_f64(f64::from(args.conns) / r)),
        rate: args.rate,
        completed: AtomicU64::new(0),
    };

    // Idle connections are established by the threads before the barrier;
    // the load phase and its clock start together after it.
    let barrier = Arc::new(Barrier::new(threads + 1));
    let start_cell = Arc::new(std::sync::OnceLock::<Instant>::new());
    let plan = Arc::new(plan);
    let mut handles = Vec::with_capacity(threads);
    let mut first_conn = 0;
    for t in 0..threads {
        let share = |total: u32| {
            let base = total as usize / threads;
            base + usize::from(t < total as usize % threads)
        };
        let (active, idle) = (share(args.conns), share(args.idle_conns));
        let (plan, barrier, start_cell) = (plan.clone(), barrier.clone(), start_cell.clone());
        handles.push(
            thread::Builder::new()
                .name(format!("load-{t}"))
                .spawn(move || {
                    let mut w = Worker::new(plan, active, first_conn, idle)?;
                    w.connect_idle();
                    barrier.wait();
                    let start = *start_cell.get_or_init(Instant::now);
                    w.run(start, duration.map(|d| start + d));
                    Ok::<_, io::Error>(w.stats)
                })
                .context("spawning a load thread")?,
        );
        first_conn += active;
    }
    barrier.wait();
    let start = *start_cell.get_or_init(Instant::now);

    let progress = sys::stderr_is_tty() && !args.json;
    let mut last_print = Instant::now();
    while !handles.iter().all(|h| h.is_finished()) {
        thread::sleep(Duration::from_millis(50));
        if progress && last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let n = plan.completed.load(Ordering::Relaxed);
            let secs = start.elapsed().as_secs_f64();
            eprint!(
                "\r{secs:6.1} s  {n} requests  {:.0} req/s   ",
                n as f64 / secs
            );
        }
    }
    let elapsed = start.elapsed();
    if progress {
        eprintln!();
    }

    let mut total = Stats::new();
    for h in handles {
        let stats = h
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))?
            .context("setting up a load thread")?;
        total.merge(&stats);
    }
    let report = total.report(&plan, &path, threads as u32, &args, elapsed);
    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report).context("writing the JSON report")?;
        writeln!(out).context("writing the JSON report")?;
    } else {
        print_table(&mut out, &report).context("writing the report")?;
    }
    Ok(())
}

fn print_table(out: &mut impl Write, r: &Report) -> io::Result<()> {
    writeln!(out, "target        {} {}", r.target, r.path)?;
    writeln!(
        out,
        "connections   {} active, {} idle ({} connected), {} threads{}",
        r.conns,
        r.idle_conns,
        r.idle_connected,
        r.threads,
        r.rate
            .map_or(String::new(), |x| format!(", open loop at {x} req/s"))
    )?;
    writeln!(out, "duration      {:.3} s", r.duration_s)?;
    writeln!(
        out,
        "requests      {} ({:.1} req/s)",
        r.requests, r.requests_per_sec
    )?;
    writeln!(
        out,
        "bytes         {} ({:.2} MiB/s), body {}",
        r.bytes,
        r.bytes_per_sec / (1024.0 * 1024.0),
        r.body_bytes
    )?;
    let e = &r.errors;
    writeln!(
        out,
        "errors        {} (connect {}, read {}, write {}, status {}, parse {}, timeout {}, idle_closed {})",
        e.total, e.connect, e.read, e.write, e.status, e.parse, e.timeout, e.idle_closed
    )?;
    let l = &r.latency_us;
    writeln!(
        out,
        "latency (µs)  p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}",
        l.p50, l.p90, l.p99, l.p999
    )?;
    writeln!(
        out,
        "              min {:.0}  mean {:.1}  max {:.0}",
        l.min, l.mean, l.max
    )
}

struct Stats {
    ok: u64,
    bytes: u64,
    body_bytes: u64,
    errors: Errors,
    hist: Histogram<u64>,
    idle_connected: u64,
}

impl Stats {
    fn new() -> Self {
        Self {
            ok: 0,
            bytes: 0,
            body_bytes: 0,
            errors: Errors::default(),
            // 1 µs .. 1 h at 3 significant digits; fixed bounds never fail.
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid")),
            idle_connected: 0,
        }
    }

    fn merge(&mut self, o: &Stats) {
        self.ok += o.ok;
        self.bytes += o.bytes;
        self.body_bytes += o.body_bytes;
        self.errors.add(&o.errors);
        self.idle_connected += o.idle_connected;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&o.hist);
    }

    fn report(
        &self,
        plan: &Plan,
        path: &str,
        threads: u32,
        args: &Args,
        elapsed: Duration,
    ) -> Report {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let mut errors = self.errors;
        errors.total = errors.sum();
        let h = &self.hist;
        let latency = if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                min: h.min() as f64,
                mean: h.mean(),
                p50: h.value_at_quantile(0.5) as f64,
                p90: h.value_at_quantile(0.9) as f64,
                p99: h.value_at_quantile(0.99) as f64,
                p999: h.value_at_quantile(0.999) as f64,
                max: h.max() as f64,
            }
        };
        Report {
            schema: "iolens.load.v1",
            target: plan.addr.to_string(),
            path: path.to_owned(),
            threads,
            conns: args.conns,
            idle_conns: args.idle_conns,
            idle_connected: self.idle_connected,
            rate: plan.rate,
            duration_s: secs,
            requests: self.ok,
            bytes: self.bytes,
            body_bytes: self.body_bytes,
            requests_per_sec: self.ok as f64 / secs,
            bytes_per_sec: self.bytes as f64 / secs,
            errors,
            latency_us: latency,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not connected; (re)connect when allowed.
    Closed,
    Connecting,
    /// Connected, waiting for its turn (rate) or a ticket.
    Ready,
    Sending,
    Receiving,
    /// Idle connection, established and parked.
    Parked,
    /// No more requests for this connection.
    Finished,
}

/// Longest response head accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

struct Client {
    stream: Option<TcpStream>,
    state: State,
    idle: bool,
    /// When the current request was (or was meant to be) sent.
    started: Instant,
    /// Deadline of the current connect or request.
    deadline: Instant,
    /// Open loop: the next intended send time.
    next_send: Instant,
    /// Earliest reconnect after a failure (avoids spinning on a dead server).
    not_before: Instant,
    /// Holds one request of the --requests budget (taken at connect time).
    ticket: bool,
    sent: usize,
    head: Vec<u8>,
    in_body: bool,
    status: u16,
    close_after: bool,
    content_length: u64,
    body_seen: u64,
    head_len: u64,
}

impl Client {
    fn new(idle: bool, now: Instant) -> Self {
        Self {
            stream: None,
            state: State::Closed,
            idle,
            started: now,
            deadline: now,
            next_send: now,
            not_before: now,
            ticket: false,
            sent: 0,
            head: Vec::new(),
            in_body: false,
            status: 0,
            close_after: false,
            content_length: 0,
            body_seen: 0,
            head_len: 0,
        }
    }
}

enum ErrKind {
    Connect,
    Read,
    Write,
    Status,
    Parse,
    Timeout,
    IdleClosed,
}

struct Worker {
    plan: Arc<Plan>,
    epoll: Epoll,
    clients: Vec<Client>,
    /// fd → client index.
    by_fd: Vec<u32>,
    /// Index of the first active client of this thread among all
    /// connections, to stagger open-loop send times globally.
    first_conn: usize,
    active: usize,
    scratch: Vec<u8>,
    stats: Stats,
    stopping: bool,
}

const NO_CLIENT: u32 = u32::MAX;
/// Idle connects in flight per thread, so a listen backlog is not overrun.
const IDLE_CONNECT_WINDOW: usize = 256;

impl Worker {
    fn new(plan: Arc<Plan>, active: usize, first_conn: usize, idle: usize) -> io::Result<Self> {
        let now = Instant::now();
        let mut clients = Vec::with_capacity(active + idle);
        clients.extend((0..active).map(|_| Client::new(false, now)));
        clients.extend((0..idle).map(|_| Client::new(true, now)));
        Ok(Self {
            plan,
            epoll: Epoll::new(Trigger::Level)?,
            clients,
            by_fd: Vec::new(),
            first_conn,
            active,
            scratch: vec![0; 256 * 1024],
            stats: Stats::new(),
            stopping: false,
        })
    }

    fn error(&mut self, kind: ErrKind) {
        let e = &mut self.stats.errors;
        match kind {
            ErrKind::Connect => e.connect += 1,
            ErrKind::Read => e.read += 1,
            ErrKind::Write => e.write += 1,
            ErrKind::Status => e.status += 1,
            ErrKind::Parse => e.parse += 1,
            ErrKind::Timeout => e.timeout += 1,
            ErrKind::IdleClosed => e.idle_closed += 1,
        }
    }

    fn connect(&mut self, i: usize, now: Instant) {
        let stream = match sys::connect_nonblocking(self.plan.addr) {
            Ok(fd) => TcpStream::from(fd),
            Err(_) => {
                self.error(ErrKind::Connect);
                let c = &mut self.clients[i];
                c.ticket = false;
                c.not_before = now + Duration::from_millis(10);
                return;
            }
        };
        let fd = stream.as_raw_fd();
        if self.epoll.register(fd, Interest::READ_WRITE).is_err() {
            self.error(ErrKind::Connect);
            let c = &mut self.clients[i];
            c.ticket = false;
            c.not_before = now + Duration::from_millis(10);
            return;
        }
        if self.by_fd.len() <= fd as usize {
            self.by_fd.resize(fd as usize + 1, NO_CLIENT);
        }
        self.by_fd[fd as usize] = i as u32;
        let c = &mut self.clients[i];
        c.stream = Some(stream);
        c.state = State::Connecting;
        c.deadline = now + self.plan.timeout;
    }

    fn close(&mut self, i: usize, now: Instant, backoff: bool) {
        let c = &mut self.clients[i];
        if let Some(s) = c.stream.take() {
            let fd = s.as_raw_fd();
            let _ = self.epoll.deregister(fd);
            self.by_fd[fd as usize] = NO_CLIENT;
        }
        c.state = if c.idle {
            State::Finished
        } else {
            State::Closed
        };
        c.head.clear();
        c.in_body = false;
        if backoff {
            c.not_before = now + Duration::from_millis(10);
        }
    }

    /// Opens the idle connections before the load starts, a window at a
    /// time, and waits (bounded by the timeout) until they are established.
    fn connect_idle(&mut self) {
        let idle: Vec<usize> = (self.active..self.clients.len()).collect();
        let deadline = Instant::now() + self.plan.timeout + Duration::from_secs(5);
        let mut next = 0;
        let mut events = Vec::with_capacity(1024);
        loop {
            let now = Instant::now();
            let pending = idle
                .iter()
                .filter(|&&i| self.clients[i].state == State::Connecting)
                .count();
            let mut room = IDLE_CONNECT_WINDOW.saturating_sub(pending);
            while room > 0 && next < idle.len() {
                self.connect(idle[next], now);
                if self.clients[idle[next]].state != State::Connecting {
                    self.clients[idle[next]].state = State::Finished;
                }
                next += 1;
                room -= 1;
            }
            let pending = idle
                .iter()
                .any(|&i| self.clients[i].state == State::Connecting);
            if (!pending && next == idle.len()) || now >= deadline || sys::stop_requested() {
                break;
            }
            if self
                .epoll
                .wait(&mut events, Duration::from_millis(50))
                .is_err()
            {
                break;
            }
            for ev in &events {
                self.on_event(ev.fd, ev.readable || ev.hangup, ev.writable, Instant::now());
            }
        }
        for &i in &idle {
            if self.clients[i].state == State::Connecting {
                self.error(ErrKind::Connect);
                self.close(i, Instant::now(), false);
            }
        }
        self.stats.idle_connected = idle
            .iter()
            .filter(|&&i| self.clients[i].state == State::Parked)
            .count() as u64;
    }

    fn run(&mut self, start: Instant, stop_at: Option<Instant>) {
        let per_conn_offset = self.plan.rate.map(|r| Duration::from_secs_f64(1.0 / r));
        for i in 0..self.active {
            let c = &mut self.clients[i];
            c.next_send = match per_conn_offset {
                Some(step) => start + step * (self.first_conn + i) as u32,
                None => start,
            };
            c.not_before = start;
        }
        let mut events = Vec::with_capacity(1024);
        let mut last_timeout_scan = Instant::now();
        loop {
            let now = Instant::now();
            if stop_at.is_some_and(|t| now >= t) || sys::stop_requested() {
                break;
            }
            // Start whatever is due; compute when the next thing is due.
            let mut next_due = now + sys::STOP_POLL;
            let mut live = false;
            for i in 0..self.active {
                match self.clients[i].state {
                    State::Finished => continue,
                    State::Closed => {
                        live = true;
                        if self.clients[i].not_before <= now {
                            // The ticket is taken before connecting so that a
                            // failed connect counts as one failed request and
                            // --requests always terminates.
                            if !self.clients[i].ticket {
                                if !self.claim_ticket() {
                                    self.clients[i].state = State::Finished;
                                    continue;
                                }
                                self.clients[i].ticket = true;
                            }
                            self.connect(i, now);
                        } else {
                            next_due = next_due.min(self.clients[i].not_before);
                        }
                    }
                    State::Ready => {
                        live = true;
                        self.try_send(i, now);
                        if self.clients[i].state == State::Ready {
                            next_due = next_due.min(self.clients[i].next_send);
                        }
                    }
                    _ => live = true,
                }
            }
            if !live {
                break;
            }
            if let Some(t) = stop_at {
                next_due = next_due.min(t);
            }
            let wait = next_due.saturating_duration_since(Instant::now());
            if self.epoll.wait(&mut events, wait).is_err() {
                break;
            }
            let now = Instant::now();
            for ev in &events {
                self.on_event(ev.fd, ev.readable || ev.hangup, ev.writable, now);
            }
            if now.duration_since(last_timeout_scan) >= Duration::from_millis(20) {
                last_timeout_scan = now;
                self.scan_timeouts(now);
            }
        }
        self.stopping = true;
    }

    fn scan_timeouts(&mut self, now: Instant) {
        for i in 0..self.clients.len() {
            let c = &self.clients[i];
            let timed_out = now >= c.deadline;
            match c.state {
                State::Connecting if timed_out => {
                    self.error(ErrKind::Connect);
                    self.clients[i].ticket = false;
                    self.close(i, now, true);
                }
                State::Sending | State::Receiving if timed_out => {
                    self.error(ErrKind::Timeout);
                    self.close(i, now, false);
                }
                _ => {}
            }
        }
    }

    /// Takes one request from the --requests budget (always succeeds
    /// without --requests).
    fn claim_ticket(&self) -> bool {
        self.plan.tickets.as_ref().is_none_or(|t| {
            t.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        })
    }

    /// Sends the next request if this connection's turn and a ticket allow.
    fn try_send(&mut self, i: usize, now: Instant) {
        let plan = self.plan.clone();
        if plan.interval.is_some() && self.clients[i].next_send > now {
            return;
        }
        if !self.clients[i].ticket && !self.claim_ticket() {
            self.close(i, now, false);
            self.clients[i].state = State::Finished;
            return;
        }
        let c = &mut self.clients[i];
        c.ticket = false;
        c.started = match plan.interval {
            Some(iv) => {
                let intended = c.next_send;
                c.next_send += iv;
                intended
            }
            None => now,
        };
        c.deadline = now + plan.timeout;
        c.sent = 0;
        c.state = State::Sending;
        self.write_request(i, now);
    }

    fn write_request(&mut self, i: usize, now: Instant) {
        let plan = self.plan.clone();
        let c = &mut self.clients[i];
        let Some(stream) = c.stream.as_mut() else {
            return;
        };
        while c.sent < plan.request.len() {
            match stream.write(&plan.request[c.sent..]) {
                Ok(n) => c.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.error(ErrKind::Write);
                    self.close(i, now, true);
                    return;
                }
            }
        }
        c.state = State::Receiving;
        c.head.clear();
        c.in_body = false;
    }

    fn on_event(&mut self, fd: RawFd, readable: bool, writable: bool, now: Instant) {
        let Some(&i) = self.by_fd.get(fd as usize) else {
            return;
        };
        if i == NO_CLIENT {
            return;
        }
        let i = i as usize;
        match self.clients[i].state {
            State::Connecting if writable || readable => {
                let ok = sys::take_socket_error(fd).is_ok();
                if !ok {
                    self.error(ErrKind::Connect);
                    self.clients[i].ticket = false;
                    self.close(i, now, true);
                    return;
                }
                // Connected: from now on only reads are interesting (requests
                // are tiny and written whole).
                let _ = self.epoll.modify(fd, Interest::READ);
                let c = &mut self.clients[i];
                if c.idle {
                    c.state = State::Parked;
                } else {
                    c.state = State::Ready;
                    self.try_send(i, now);
                }
            }
            State::Sending if writable => self.write_request(i, now),
            State::Receiving if readable => self.read_response(i, now),
            State::Parked | State::Ready if readable => {
                // Nothing is expected: EOF or an error means the server closed.
                let c = &mut self.clients[i];
                let closed = match c.stream.as_mut().map(|s| s.read(&mut self.scratch[..])) {
                    Some(Ok(0)) | Some(Err(_)) | None => true,
                    Some(Ok(_)) => false,
                };
                let idle = c.idle;
                if closed {
                    if idle {
                        self.error(ErrKind::IdleClosed);
                    }
                    self.close(i, now, false);
                } else {
                    self.error(ErrKind::Parse);
                    self.close(i, now, false);
                }
            }
            _ => {}
        }
    }

    fn read_response(&mut self, i: usize, now: Instant) {
        let Some(stream) = self.clients[i].stream.as_mut() else {
            return;
        };
        let n = match stream.read(&mut self.scratch[..]) {
            Ok(0) => {
                self.error(ErrKind::Read);
                self.close(i, now, true);
                return;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return;
            }
            Err(_) => {
                self.error(ErrKind::Read);
                self.close(i, now, true);
                return;
            }
        };
        let mut data = 0..n;
        let c = &mut self.clients[i];
        if !c.in_body {
            let old = c.head.len();
            c.head.extend_from_slice(&self.scratch[..n]);
            let Some(end) = find_head_end(&c.head) else {
                if c.head.len() > MAX_RESPONSE_HEAD {
                    self.error(ErrKind::Parse);
                    self.close(i, now, false);
                }
                return;
            };
            match parse_response_head(&c.head[..end]) {
                Some((status, len, close)) => {
                    c.status = status;
                    c.content_length = len;
                    c.close_after = close;
                }
                None => {
                    self.error(ErrKind::Parse);
                    self.close(i, now, false);
                    return;
                }
            }
            c.in_body = true;
            c.body_seen = 0;
            c.head_len = end as u64;
            data = (end - old)..n;
        }
        let body = &self.scratch[data];
        let c = &mut self.clients[i];
        if c.body_seen + body.len() as u64 > c.content_length {
            // More than announced: this generator never pipelines.
            self.error(ErrKind::Parse);
            self.close(i, now, false);
            return;
        }
        if self.plan.verify_body && c.status == 200 {
            let off = c.body_seen;
            if body
                .iter()
                .enumerate()
                .any(|(k, &b)| b != http::body_byte(off + k as u64))
            {
                self.error(ErrKind::Parse);
                self.close(i, now, false);
                return;
            }
        }
        c.body_seen += body.len() as u64;
        if c.body_seen < c.content_length {
            return;
        }
        // Complete response.
        let (status, len, head_len, close) =
            (c.status, c.content_length, c.head_len, c.close_after);
        c.in_body = false;
        c.head.clear();
        c.state = State::Ready;
        if status != 200 {
            self.error(ErrKind::Status);
        } else if self.plan.expect_body_len.is_some_and(|want| want != len) {
            self.error(ErrKind::Parse);
        } else {
            let us = now.saturating_duration_since(c.started).as_micros() as u64;
            self.stats.hist.saturating_record(us.max(1));
            self.stats.ok += 1;
            self.stats.bytes += head_len + len;
            self.stats.body_bytes += len;
            self.plan.completed.fetch_add(1, Ordering::Relaxed);
        }
        if close {
            self.close(i, now, false);
        } else if !self.stopping {
            self.try_send(i, now);
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Parses a response head: status, Content-Length (required) and whether
/// the server will close.
fn parse_response_head(head: &[u8]) -> Option<(u16, u64, bool)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let rest = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?;
    let close_default = status_line.starts_with("HTTP/1.0");
    let code = rest.get(..3)?.parse::<u16>().ok()?;
    let mut len = None;
    let mut close = close_default;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            len = Some(value.parse::<u64>().ok()?);
        } else if name.eq_ignore_ascii_case("connection") {
            close = value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
        }
    }
    Some((code, len?, close))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads() {
        assert_eq!(
            parse_response_head(
                b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n"
            ),
            Some((200, 12, false))
        );
        assert_eq!(
            parse_response_head(
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nConnection: close\r\n\r\n"
            ),
            Some((404, 0, true))
        );
        assert_eq!(
            parse_response_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n"),
            Some((200, 1, true))
        );
        assert_eq!(parse_response_head(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        assert_eq!(parse_response_head(b"garbage\r\n\r\n"), None);
        assert_eq!(find_head_end(b"a\r\n\r\nbody"), Some(5));
    }
}
