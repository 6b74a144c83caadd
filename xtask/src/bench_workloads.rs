//! `cargo xtask bench workloads`: the reference servers against nginx.
//!
//! Not a timed test: it prints tables. Client and server are pinned to
//! different CPUs, contenders alternate (A B C … A B C …) for several rounds,
//! and medians are reported with the server's CPU time per request and per
//! byte (utime+stime of the server's whole process tree from /proc).

use std::{
    io::{BufRead, BufReader},
    net::TcpStream,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::cpucap::CpuCap;

/// Options for `cargo xtask bench workloads`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Short run: 1 s per measurement and a 64 MiB file (unless set).
    #[arg(long)]
    pub quick: bool,
    /// Rounds; each round runs every contender once, in turn.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Seconds per measurement (default 5, or 1 with --quick).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Server worker threads/processes (same for every contender).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// wrk connections for the HTTP servers.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Response body bytes for the HTTP servers (the reactor's default).
    #[arg(long, default_value_t = 128)]
    pub response_size: usize,
    /// Size of the file the file senders serve, in MiB (default 1024, or 64
    /// with --quick).
    #[arg(long)]
    pub file_size_mib: Option<u64>,
    /// Also run the HTTP servers with their whole process tree capped at
    /// this % of each server CPU (a cpu cgroup, the same cap for every
    /// contender), so that the server, not wrk, sets requests per second;
    /// 0 runs only the uncapped pass.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub cpu_cap: u32,
    /// Concurrent clients fetching the file.
    #[arg(long, default_value_t = 4)]
    pub file_clients: usize,
    /// CPU list for the servers (taskset -c syntax).
    #[arg(long, default_value = "0")]
    pub server_cpus: String,
    /// CPU list for wrk.
    #[arg(long, default_value = "1")]
    pub client_cpus: String,
    /// Only the HTTP servers, or only the file senders.
    #[arg(long, value_enum)]
    pub only: Option<Part>,
    /// Use target/workloads-only/release/iolens as is instead of building it
    /// first.
    #[arg(long)]
    pub no_build: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Http,
    Files,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A contender: how to start it and where it listens.
#[derive(Debug, Clone)]
enum Server {
    Iolens { label: String, args: Vec<String> },
    Nginx { label: String, conf_body: String },
}

impl Server {
    fn label(&self) -> &str {
        match self {
            Self::Iolens { label, .. } | Self::Nginx { label, .. } => label,
        }
    }
}

struct Running {
    child: Child,
    port: u16,
}

struct Ctx {
    /// When set, every server starts inside this cgroup.
    cap: Option<CpuCap>,
    iolens: PathBuf,
    work: PathBuf,
    server_cpus: String,
    client_cpus: String,
    taskset: bool,
    threads: usize,
}

impl Ctx {
    /// A server command: pinned to the server CPUs and, with a cap, moved
    /// into the cap's cgroup before it execs, so that every process it
    /// forks (nginx's workers) is capped too.
    fn server(&self, program: &Path) -> Command {
        let mut c = self.pinned(&self.server_cpus, program);
        if let Some(cap) = &self.cap {
            let fd = cap.procs.as_raw_fd();
            // SAFETY: the closure only calls write(2), which is
            // async-signal-safe, on a descriptor that outlives the spawn.
            unsafe {
                c.pre_exec(move || {
                    // "0" names the writing process itself.
                    if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        c
    }

    fn pinned(&self, cpus: &str, program: &Path) -> Command {
        if self.taskset {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn start(&mut self, s: &Server) -> anyhow::Result<Running> {
        match s {
            Server::Iolens { args, .. } => {
                let mut child = self
                    .server(&self.iolens)
                    .args(args)
                    .args(["--listen", "127.0.0.1:0"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .with_context(|| format!("starting {}", self.iolens.display()))?;
                let mut line = String::new();
                let stdout = child.stdout.take().context("iolens stdout")?;
                BufReader::new(stdout)
                    .read_line(&mut line)
                    .context("reading `listening on`")?;
                let port = line
                    .trim()
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .with_context(|| {
                        format!("iolens {args:?} did not print `listening on ADDR` (got {line:?})")
                    })?;
                Ok(Running { child, port })
            }
            Server::Nginx { conf_body, .. } => {
                // nginx cannot report a port 0 choice: take a free port from
                // the kernel and hand it over (a rare race with another
                // process is caught below and retried by the caller).
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .context("finding a free port for nginx")?
                    .port();
                let dir = self.work.join("nginx");
                std::fs::create_dir_all(&dir).context("creating the nginx prefix")?;
                let user = if is_root() { "user root root;\n" } else { "" };
                let temps: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
                    .iter()
                    .map(|t| format!("  {t}_temp_path {}/{t};\n", dir.display()))
                    .collect();
                let conf = format!(
                    "{user}worker_processes {w};\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
                     events {{ worker_connections 4096; }}\n\
                     http {{\n  access_log off;\n{temps}  keepalive_requests 1000000;\n  \
                     server {{\n    listen 127.0.0.1:{port} reuseport;\n{conf_body}\n  }}\n}}\n",
                    w = self.threads,
                    d = dir.display(),
                );
                let path = dir.join("nginx.conf");
                std::fs::write(&path, conf).context("writing nginx.conf")?;
                let mut child = self
                    .server(Path::new("nginx"))
                    .arg("-c")
                    .arg(&path)
                    .args(["-g", "daemon off;"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting nginx")?;
                let t = Instant::now();
                while TcpStream::connect(("127.0.0.1", port)).is_err() {
                    if child.try_wait().ok().flatten().is_some()
                        || t.elapsed() > Duration::from_secs(5)
                    {
                        let _ = child.kill();
                        let _ = child.wait();
                        bail!(
                            "nginx did not listen on 127.0.0.1:{port} within 5 s; see {}/error.log",
                            dir.display()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(Running { child, port })
            }
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// utime+stime in clock ticks of `pid` and all its descendants.
fn tree_cpu_ticks(pid: u32) -> u64 {
    let mut procs: Vec<(u32, u32, u64)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // Fields after the parenthesised command name.
            let Some(rest) = stat.rsplit_once(')').map(|x| x.1) else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ppid = f.get(1).and_then(|x| x.parse().ok()).unwrap_or(0);
            let ut: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0);
            let st: u64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0);
            procs.push((p, ppid, ut + st));
        }
    }
    let mut set = vec![pid];
    let mut total = 0;
    let mut i = 0;
    while i < set.len() {
        let cur = set[i];
        for &(p, pp, t) in &procs {
            if p == cur {
                total += t;
            }
            if pp == cur && !set.contains(&p) {
                set.push(p);
            }
        }
        i += 1;
    }
    total
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf with a constant name.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rps: f64,
    bytes_per_s: f64,
    p99_us: f64,
    cpu_s: f64,
    requests: f64,
    bytes: f64,
    errors: u64,
}

impl Sample {
    /// Server CPU time per request, in µs.
    fn cpu_us_per_req(&self) -> f64 {
        self.cpu_s / self.requests.max(1.0) * 1e6
    }

    /// Server CPU time per byte sent, in ns.
    fn cpu_ns_per_byte(&self) -> f64 {
        self.cpu_s / self.bytes.max(1.0) * 1e9
    }

    /// Server CPU time over the run's wall time, in % of one CPU: well
    /// below the server CPUs' 100% each, the server waited on the client,
    /// and requests or bytes per second measure the client.
    fn busy_pct(&self) -> f64 {
        let wall = self.requests / self.rps.max(f64::MIN_POSITIVE);
        self.cpu_s / wall.max(f64::MIN_POSITIVE) * 100.0
    }
}

fn parse_size(s: &str) -> Option<f64> {
    let s = s.trim().trim_end_matches(',');
    let (num, mul) = if let Some(n) = s.strip_suffix("GB") {
        (n, 1024.0 * 1024.0 * 1024.0)
    } else if let Some(n) = s.strip_suffix("MB") {
        (n, 1024.0 * 1024.0)
    } else if let Some(n) = s.strip_suffix("KB") {
        (n, 1024.0)
    } else if let Some(n) = s.strip_suffix('B') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().ok().map(|v| v * mul)
}

fn parse_latency_us(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Some(n) = s.strip_suffix("us") {
        n.parse().ok()
    } else if let Some(n) = s.strip_suffix("ms") {
        n.parse::<f64>().ok().map(|v| v * 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        n.parse::<f64>().ok().map(|v| v * 1e6)
    } else {
        None
    }
}

/// Parses wrk's summary: requests, bytes, p99, errors.
fn parse_wrk(out: &str) -> anyhow::Result<(f64, f64, f64, u64)> {
    let mut requests = None;
    let mut bytes = None;
    let mut p99 = f64::NAN;
    let mut errors = 0u64;
    for line in out.lines() {
        let l = line.trim();
        if let Some((n, rest)) = l.split_once(" requests in ") {
            requests = n.trim().parse::<f64>().ok();
            bytes = rest
                .split_once(", ")
                .and_then(|(_, b)| parse_size(b.trim_end_matches(" read")));
        } else if let Some(v) = l.strip_prefix("99%") {
            p99 = parse_latency_us(v).unwrap_or(f64::NAN);
        } else if l.starts_with("Socket errors:") {
            errors += l
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|x| x.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().unwrap_or(0);
        }
    }
    match (requests, bytes) {
        (Some(r), Some(b)) => Ok((r, b, p99, errors)),
        _ => bail!("cannot parse wrk output:\n{out}"),
    }
}

fn measure(
    ctx: &mut Ctx,
    s: &Server,
    url_path: &str,
    conns: usize,
    secs: u64,
) -> anyhow::Result<Sample> {
    let mut run = ctx.start(s)?;
    let pid = run.child.id();
    let url = format!("http://127.0.0.1:{}{url_path}", run.port);
    // Warm-up outside the measurement: connection set-up, page cache.
    let _ = ctx
        .pinned(&ctx.client_cpus, Path::new("wrk"))
        .args(["-t1", "-c", &conns.to_string(), "-d1s", &url])
        .output();
    let before = tree_cpu_ticks(pid);
    let t = Instant::now();
    let out = ctx
        .pinned(&ctx.client_cpus, Path::new("wrk"))
        .args([
            "-t1",
            "-c",
            &conns.to_string(),
            "-d",
            &format!("{secs}s"),
            "--timeout",
            "10s",
            "--latency",
            &url,
        ])
        .output()
        .context("running wrk")?;
    let wall = t.elapsed().as_secs_f64();
    let after = tree_cpu_ticks(pid);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while run.child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = run.child.kill();
            let _ = run.child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (requests, bytes, p99, errors) =
        parse_wrk(&text).with_context(|| format!("{} at {url}", s.label()))?;
    let secs = secs as f64;
    Ok(Sample {
        rps: requests / secs,
        bytes_per_s: bytes / wall.max(secs),
        p99_us: p99,
        cpu_s: after.saturating_sub(before) as f64 / ticks_per_sec(),
        requests,
        bytes,
        errors,
    })
}

/// The median of `f` over `samples`; NaN for none (see [`crate::util::median`]).
fn median_of(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    crate::util::median(samples.iter().map(f).collect())
}

/// The median of the last contender's samples (the nginx reference), NaN
/// if there are none.
fn reference_median(res: &[Vec<Sample>], f: impl Fn(&Sample) -> f64) -> f64 {
    res.last().map_or(f64::NAN, |s| median_of(s, f))
}

/// Runs all contenders `rounds` times, alternating, and returns per
/// contender its samples.
fn alternate(
    ctx: &mut Ctx,
    servers: &[Server],
    path: &str,
    conns: usize,
    secs: u64,
    rounds: usize,
) -> anyhow::Result<Vec<Vec<Sample>>> {
    let mut all = vec![Vec::new(); servers.len()];
    for r in 0..rounds {
        for (i, s) in servers.iter().enumerate() {
            // One retry: a port race or a stray failure should not void a
            // long run.
            let sample = match measure(ctx, s, path, conns, secs) {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("  retrying {} after: {e:#}", s.label());
                    measure(ctx, s, path, conns, secs)?
                }
            };
            eprintln!(
                "  round {}/{rounds} {:<28} {:>10.0} req/s {:>9.1} MiB/s  p99 {:>8.0} µs  cpu {:.2} s  errors {}",
                r + 1,
                s.label(),
                sample.rps,
                sample.bytes_per_s / 1048576.0,
                sample.p99_us,
                sample.cpu_s,
                sample.errors
            );
            all[i].push(sample);
        }
    }
    Ok(all)
}

fn reactor_models(iolens: &Path) -> Vec<String> {
    let Ok(out) = Command::new(iolens)
        .args(["workload", "reactor", "-h"])
        .output()
    else {
        return Vec::new();
    };
    if !out.status.success() {
        return Vec::new();
    }
    let help = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    // clap lists a ValueEnum's choices as `[possible values: a, b, c]`.
    let Some(i) = help.find("--model") else {
        return Vec::new();
    };
    let rest = &help[i..];
    let Some(j) = rest.find("[possible values: ") else {
        return Vec::new();
    };
    let list = &rest[j + 18..];
    let Some(end) = list.find(']') else {
        return Vec::new();
    };
    list[..end]
        .split(',')
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<()> {
    for tool in ["wrk", "nginx"] {
        if !which(tool) {
            bail!(
                "{tool} is not installed: install the Debian packages `wrk` and `nginx-light` (or run `cargo xtask setup`)"
            );
        }
    }
    let taskset = which("taskset");
    if !taskset {
        eprintln!(
            "warning: taskset (util-linux) missing; client and server are not pinned, expect more noise"
        );
    }
    let root = workspace_root();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    // A build without the eBPF object (the workloads need none, and this
    // needs no kernel-side toolchain), in its own target directory so it
    // never replaces the agent that `cargo xtask run` and the overhead
    // benchmark use in target/release.
    let build_dir = target.join("workloads-only");
    if !args.no_build {
        eprintln!(
            "building iolens (release, without the eBPF object) in {} …",
            build_dir.display()
        );
        let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .env("AYA_BUILD_SKIP", "1")
            .args(["build", "--release", "-p", "iolens", "--target-dir"])
            .arg(&build_dir)
            .status()
            .context("running cargo build")?;
        anyhow::ensure!(st.success(), "cargo build --release -p iolens failed");
    }
    let iolens = build_dir.join("release/iolens");
    anyhow::ensure!(
        iolens.exists(),
        "{} not found; run without --no-build",
        iolens.display()
    );
    let work = target.join("bench-workloads");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    let secs = args.duration.unwrap_or(if args.quick { 1 } else { 5 });
    let rounds = args.rounds.max(1);
    let threads = args.threads.max(1).to_string();
    let mut ctx = Ctx {
        cap: None,
        iolens: iolens.clone(),
        work: work.clone(),
        server_cpus: args.server_cpus.clone(),
        client_cpus: args.client_cpus.clone(),
        taskset,
        threads: args.threads.max(1),
    };
    println!(
        "# cargo xtask bench workloads: {rounds} alternating rounds × {secs} s, server CPUs {}, client CPUs {}, {} server thread(s)",
        args.server_cpus, args.client_cpus, threads
    );

    if args.only != Some(Part::Files) {
        let body: String = (0..args.response_size)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let common = |w: &str| {
            vec![
                "workload".to_owned(),
                w.to_owned(),
                "--threads".to_owned(),
                threads.clone(),
                "--response-size".to_owned(),
                args.response_size.to_string(),
            ]
        };
        let mut servers = Vec::new();
        let models = reactor_models(&iolens);
        if models.is_empty() {
            eprintln!(
                "note: `iolens workload reactor --model …` not found in this build; reactor rows omitted"
            );
        }
        for m in models {
            let mut a = common("reactor");
            a.extend(["--model".to_owned(), m.clone()]);
            servers.push(Server::Iolens {
                label: format!("reactor --model {m}"),
                args: a,
            });
        }
        servers.push(Server::Iolens {
            label: "proactor".into(),
            args: common("proactor"),
        });
        servers.push(Server::Nginx {
            label: "nginx".into(),
            conf_body: format!(
                "    location / {{ default_type text/plain; return 200 \"{body}\"; }}"
            ),
        });
        println!(
            "\n## HTTP: wrk -t1 -c{} , {}-byte bodies (medians of {rounds})",
            args.connections, args.response_size
        );
        let res = alternate(&mut ctx, &servers, "/", args.connections, secs, rounds)?;
        print_http_table(&servers, &res);
        if args.cpu_cap > 0 {
            let cpus = cpu_count(&args.server_cpus);
            match CpuCap::create(args.cpu_cap, cpus) {
                Ok(cap) => {
                    ctx.cap = Some(cap);
                    println!(
                        "\n## HTTP, each server capped at {}% of its {cpus} CPU(s): the server, not wrk, sets req/s (medians of {rounds}; throttling inflates p99)",
                        args.cpu_cap
                    );
                    let res = alternate(&mut ctx, &servers, "/", args.connections, secs, rounds);
                    ctx.cap = None;
                    print_http_table(&servers, &res?);
                }
                Err(e) => eprintln!("warning: skipping the CPU-capped pass: {e:#}"),
            }
        }
    }

    if args.only != Some(Part::Http) {
        let mib = args
            .file_size_mib
            .unwrap_or(if args.quick { 64 } else { 1024 });
        let dir = work.join("files");
        std::fs::create_dir_all(&dir).context("creating the file directory")?;
        let file = dir.join("payload");
        let want = mib << 20;
        if std::fs::metadata(&file).map(|m| m.len()).ok() != Some(want) {
            eprintln!("writing a {mib} MiB file …");
            write_payload(&file, want).with_context(|| format!("writing {}", file.display()))?;
        }
        // Warm the page cache so sendfile-like modes measure CPU, not disk.
        let _ = Command::new("cat")
            .arg(&file)
            .stdout(Stdio::null())
            .status();
        let root_s = dir.display().to_string();
        let mut servers = Vec::new();
        for mode in [
            "read-write",
            "mmap-write",
            "sendfile",
            "splice",
            "direct-aio",
        ] {
            servers.push(Server::Iolens {
                label: format!("filesend --mode {mode}"),
                args: vec![
                    "workload".into(),
                    "filesend".into(),
                    "--root".into(),
                    root_s.clone(),
                    "--mode".into(),
                    mode.into(),
                ],
            });
        }
        servers.push(Server::Nginx {
            label: "nginx sendfile on".into(),
            conf_body: format!("    root {root_s};\n    sendfile on;\n    location / {{ }}"),
        });
        println!(
            "\n## Files: {} clients fetching a {mib} MiB cached file with wrk (medians of {rounds}); direct-aio reads the disk by design",
            args.file_clients
        );
        let res = alternate(
            &mut ctx,
            &servers,
            "/payload",
            args.file_clients,
            secs.max(2),
            rounds,
        )?;
        let nginx_bps = reference_median(&res, |x| x.bytes_per_s);
        let nginx_cpu = reference_median(&res, Sample::cpu_ns_per_byte);
        println!(
            "| {:<26} | {:>10} | {:>10} | {:>6} | {:>10} | {:>10} | {:>6} |",
            "sender", "MiB/s", "CPU ns/B", "busy %", "MiB/s ÷ng", "CPU/B ÷ng", "errors"
        );
        println!(
            "|{:-<28}|{:->12}|{:->12}|{:->8}|{:->12}|{:->12}|{:->8}|",
            "", "", "", "", "", "", ""
        );
        for (s, samples) in servers.iter().zip(&res) {
            let bps = median_of(samples, |x| x.bytes_per_s);
            let cpu_b = median_of(samples, Sample::cpu_ns_per_byte);
            let busy = median_of(samples, Sample::busy_pct);
            let errors: u64 = samples.iter().map(|x| x.errors).sum();
            println!(
                "| {:<26} | {:>10.0} | {:>10.3} | {:>6.0} | {:>10.2} | {:>10.2} | {:>6} |",
                s.label(),
                bps / 1048576.0,
                cpu_b,
                busy,
                bps / nginx_bps,
                cpu_b / nginx_cpu,
                errors
            );
        }
        print_round_ratios(&servers, &res, "MiB/s", |x| x.bytes_per_s);
    }
    println!(
        "\nbusy % = server CPU time / wall time (100 per server CPU). A server well below \
         its CPUs' 100 was waiting on the client: its req/s or MiB/s then measure wrk, and \
         CPU per request or byte is the server's figure."
    );
    Ok(())
}

fn print_http_table(servers: &[Server], res: &[Vec<Sample>]) {
    let nginx = reference_median(res, |x| x.rps);
    let nginx_cpu = reference_median(res, Sample::cpu_us_per_req);
    println!(
        "| {:<26} | {:>10} | {:>9} | {:>12} | {:>10} | {:>6} | {:>10} | {:>11} | {:>6} |",
        "server",
        "req/s",
        "p99 µs",
        "CPU µs/req",
        "CPU ns/B",
        "busy %",
        "req/s ÷ng",
        "CPU/req ÷ng",
        "errors"
    );
    println!(
        "|{:-<28}|{:->12}|{:->11}|{:->14}|{:->12}|{:->8}|{:->12}|{:->13}|{:->8}|",
        "", "", "", "", "", "", "", "", ""
    );
    for (s, samples) in servers.iter().zip(res) {
        let rps = median_of(samples, |x| x.rps);
        let cpu_req = median_of(samples, Sample::cpu_us_per_req);
        let errors: u64 = samples.iter().map(|x| x.errors).sum();
        println!(
            "| {:<26} | {:>10.0} | {:>9.0} | {:>12.2} | {:>10.3} | {:>6.0} | {:>10.2} | {:>11.2} | {:>6} |",
            s.label(),
            rps,
            median_of(samples, |x| x.p99_us),
            cpu_req,
            median_of(samples, Sample::cpu_ns_per_byte),
            median_of(samples, Sample::busy_pct),
            rps / nginx,
            cpu_req / nginx_cpu,
            errors
        );
    }
    print_round_ratios(servers, res, "req/s", |x| x.rps);
}

/// Ratios of medians hide how they spread: the range of per-round ratios
/// (round i against the reference's round i, run back to back).
fn print_round_ratios(servers: &[Server], res: &[Vec<Sample>], what: &str, f: fn(&Sample) -> f64) {
    let Some(reference) = res.last() else {
        return;
    };
    for (s, samples) in servers.iter().zip(res).take(servers.len() - 1) {
        let r: Vec<f64> = samples
            .iter()
            .zip(reference)
            .map(|(a, b)| f(a) / f(b))
            .collect();
        let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "  {:<26} {what} ÷ {} per round: {lo:.2}–{hi:.2}",
            s.label(),
            servers[servers.len() - 1].label()
        );
    }
}

/// How many CPUs a taskset-style list ("0", "0-3", "0,2") names; 1 if it
/// cannot be read.
fn cpu_count(list: &str) -> usize {
    let n: usize = list
        .split(',')
        .map(|part| match part.trim().split_once('-') {
            Some((a, b)) => match (a.parse::<usize>(), b.parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 0,
            },
            None => usize::from(part.trim().parse::<usize>().is_ok()),
        })
        .sum();
    n.max(1)
}

/// A deterministic, incompressible-enough payload, written in 1 MiB blocks.
fn write_payload(path: &Path, size: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut left = size;
    while left > 0 {
        for c in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}
