//! `cargo xtask bench overhead`: what the probes cost the traced process.
//!
//! A syscall loop (1-byte `read()` of /dev/zero; and `getppid()`, which
//! iolens does not account, to show what every other syscall on the machine
//! pays) runs pinned to one CPU in several contenders, alternated round by
//! round so drift hits all of them alike:
//! - bare: no tracing;
//! - iolens: `iolens run` (all its probes);
//! - bpftrace: `tracepoint:syscalls:sys_enter_read { @[pid] = count(); }`,
//!   a classic syscall tracepoint counting only reads, by pid;
//! - bpftrace on `tracepoint:raw_syscalls:sys_exit`: the same map update
//!   through the classic (perf trace) mechanism on the event iolens hooks as
//!   a raw tracepoint, for every syscall. (Debian's bpftrace 0.17 has no
//!   `rawtracepoint` probe type.)
//!
//! The cost lands on the traced process (enabling syscall tracepoints sends
//! every syscall through the slow entry path), so it is measured there, as
//! ns per call from the loop's own clock. Reported: medians over rounds,
//! ns added over bare, and iolens's added ns over bpftrace's.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::util::{have, repo_root, run};

/// Options for `cargo xtask bench overhead`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Calls per measurement.
    #[arg(long, default_value_t = 3_000_000)]
    pub calls: u64,
    /// Rounds; each round measures every contender once.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// CPU the loop is pinned to (the tracer runs wherever it likes).
    #[arg(long, default_value_t = 1)]
    pub cpu: usize,
}

/// Hidden entry: `cargo xtask __syscall-loop <read|getppid> <calls> <cpu>`
/// prints ns per call.
pub fn syscall_loop(kind: &str, calls: u64, cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    let zero = std::fs::File::open("/dev/zero").context("opening /dev/zero")?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&zero);
    let mut b = [0u8; 1];
    let start = Instant::now();
    match kind {
        "read" => {
            for _ in 0..calls {
                // SAFETY: valid one-byte buffer and open fd.
                unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
            }
        }
        "getppid" => {
            for _ in 0..calls {
                // SAFETY: no arguments, cannot fail. The raw syscall avoids
                // any libc caching.
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
        }
        other => bail!("unknown loop `{other}`"),
    }
    let ns = start.elapsed().as_nanos() as f64 / calls as f64;
    println!("{ns:.2}");
    Ok(())
}

fn measure(kind: &str, calls: u64, cpu: usize) -> anyhow::Result<f64> {
    let me = std::env::current_exe().context("locating xtask")?;
    let out = Command::new(me)
        .args(["__syscall-loop", kind, &calls.to_string(), &cpu.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .context("running the syscall loop")?;
    if !out.status.success() {
        bail!("syscall loop failed: {}", out.status);
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("parsing the loop's ns/call")
}

/// A tracer running beside the loop; killed on drop.
struct Tracer(Child);

impl Drop for Tracer {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` and waits until a line on `stream` contains `ready`.
fn start_tracer(mut cmd: Command, ready: &str, on_stderr: bool) -> anyhow::Result<Tracer> {
    cmd.stdin(Stdio::null());
    if on_stderr {
        cmd.stderr(Stdio::piped()).stdout(Stdio::null());
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let stream: Box<dyn std::io::Read + Send> = if on_stderr {
        Box::new(child.stderr.take().context("stderr")?)
    } else {
        Box::new(child.stdout.take().context("stdout")?)
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_owned();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        // Keep draining so the tracer never blocks on a full pipe.
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if line.contains(&ready)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(());
            }
        }
    });
    let tracer = Tracer(child);
    rx.recv_timeout(Duration::from_secs(60))
        .map_err(|_| anyhow::anyhow!("{cmd:?} did not become ready"))?;
    // Let attachment settle (bpftrace prints before its last attach).
    std::thread::sleep(Duration::from_millis(300));
    Ok(tracer)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Contender {
    Bare,
    Iolens,
    Bpftrace,
    BpftraceRaw,
}

impl Contender {
    const ALL: [Contender; 4] = [
        Contender::Bare,
        Contender::Iolens,
        Contender::Bpftrace,
        Contender::BpftraceRaw,
    ];

    fn name(self) -> &'static str {
        match self {
            Contender::Bare => "bare",
            Contender::Iolens => "iolens",
            Contender::Bpftrace => "bpftrace (classic tp)",
            Contender::BpftraceRaw => "bpftrace (raw_syscalls tp)",
        }
    }

    fn start(self) -> anyhow::Result<Option<Tracer>> {
        Ok(match self {
            Contender::Bare => None,
            Contender::Iolens => {
                let mut c = Command::new(repo_root().join("target/release/iolens"));
                c.args(["run", "--listen", "127.0.0.1:0"])
                    .env("NO_COLOR", "1")
                    .env("RUST_LOG", "info");
                Some(start_tracer(c, "iolens running", true)?)
            }
            Contender::Bpftrace => {
                let mut c = Command::new("bpftrace");
                c.args([
                    "-e",
                    "tracepoint:syscalls:sys_enter_read { @[pid] = count(); }",
                ]);
                Some(start_tracer(c, "Attaching", false)?)
            }
            Contender::BpftraceRaw => {
                let mut c = Command::new("bpftrace");
                c.args([
                    "-e",
                    "tracepoint:raw_syscalls:sys_exit { @[pid] = count(); }",
                ]);
                Some(start_tracer(c, "Attaching", false)?)
            }
        })
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn run_bench(args: Args) -> anyhow::Result<()> {
    if !crate::util::is_root() {
        bail!("the overhead benchmark loads eBPF programs: run it as root");
    }
    if !have("bpftrace") {
        bail!("bpftrace is not installed: run `cargo xtask setup`");
    }
    run(Command::new("cargo").current_dir(repo_root()).args([
        "build",
        "--release",
        "-p",
        "iolens",
    ]))?;
    if args.calls == 0 || args.rounds == 0 {
        bail!("--calls and --rounds must be positive");
    }
    let kinds = ["read", "getppid"];
    // results[kind][contender] = ns per call, one per round.
    let mut results = vec![vec![Vec::new(); Contender::ALL.len()]; kinds.len()];
    for round in 0..args.rounds {
        for (ci, c) in Contender::ALL.iter().enumerate() {
            let tracer = c.start()?;
            for (ki, k) in kinds.iter().enumerate() {
                let ns = measure(k, args.calls, args.cpu)?;
                results[ki][ci].push(ns);
            }
            drop(tracer);
            eprintln!("round {}/{}: {} done", round + 1, args.rounds, c.name());
        }
    }
    println!(
        "\nsyscall loop, {} calls x {} rounds, pinned to CPU {}; medians in ns/call\n",
        args.calls, args.rounds, args.cpu
    );
    for (ki, k) in kinds.iter().enumerate() {
        let med: Vec<f64> = results[ki].iter_mut().map(|v| median(v)).collect();
        let bare = med[0];
        println!("{k}():");
        println!("  {:<24} {:>10} {:>12}", "contender", "ns/call", "added ns");
        for (ci, c) in Contender::ALL.iter().enumerate() {
            println!(
                "  {:<24} {:>10.1} {:>12.1}",
                c.name(),
                med[ci],
                med[ci] - bare
            );
        }
        let (io, bt, raw) = (med[1] - bare, med[2] - bare, med[3] - bare);
        if bt > 0.0 {
            println!(
                "  ratio iolens added / bpftrace (sys_enter_read) added: {:.2}",
                io / bt
            );
        }
        if raw > 0.0 {
            println!(
                "  ratio iolens added / bpftrace (raw_syscalls) added: {:.2}",
                io / raw
            );
        }
        println!();
    }
    println!(
        "iolens counts, per call: syscall, bytes, errors and the path of both ends (fd types walked \
         through task->files), per process; bpftrace counts calls per pid only."
    );
    Ok(())
}
