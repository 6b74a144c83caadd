//! `iolens compare`: run the reference workloads one after another under the
//! probes, drive each with the built-in load generator for a fixed amount of
//! work, and report what the kernel did for the workload's own process —
//! per request and per MiB — next to the claim in the seed notes each row
//! confirms or refutes.
//!
//! The probes are loaded in this process (no filter: the workload's pid is
//! not known before it starts); every figure is the change in the workload
//! pid's counters between just before and just after the load.

mod report;

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use iolens_common::{Endpoint, ProcCounters, StatKey, StatValue, Syscall};
use serde::Serialize;

use crate::{
    agent::{check_privileges, ensure_tracefs},
    metrics::{Tracker, monotonic_ns, path_label},
    probes::{ProbeConfig, Probes, Snapshot},
};

/// Which comparison to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    /// File sender modes (read-write, mmap-write, sendfile, splice,
    /// direct-aio), cold and warm page cache, small and large files.
    Filesend,
    /// Reactor models x trigger, and the io_uring proactor.
    Servers,
    /// epoll vs poll vs select with idle connections beside the active ones.
    Demux,
}

/// Options of `iolens compare`.
#[derive(Debug, Args, Clone)]
pub struct CompareArgs {
    /// The comparison to run.
    #[arg(long, value_enum, default_value_t = Suite::Filesend)]
    pub suite: Suite,
    /// Requests per workload (fixed work, so per-request figures compare).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: u64,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub conns: u32,
    /// Fewer cases and requests: a quick look rather than a measurement.
    #[arg(long)]
    pub quick: bool,
    /// Demux suite: idle connections held open beside the active ones, one
    /// epoll, poll and select case per value (comma-separated or repeated;
    /// default 1000, and 5000 too without --quick). select cannot watch fds
    /// at or above FD_SETSIZE (1024), so its cases hold at most 900.
    #[arg(
        long,
        value_name = "N",
        value_delimiter = ',',
        value_parser = clap::value_parser!(u32).range(0..=1_000_000)
    )]
    pub idle_conns: Vec<u32>,
    /// Print the report as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write grouped bar charts as an SVG file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Also write a self-contained HTML report (table and charts).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Directory for the files the filesend suite serves (default: a
    /// temporary directory, removed afterwards).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// One workload configuration to measure.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    /// Short name shown in the table, e.g. `sendfile cold 64M`.
    pub name: String,
    /// `iolens workload …` arguments (the listen address is added).
    pub args: Vec<String>,
    /// Request path.
    pub path: String,
    /// Evict this file from the page cache before the load (cold case).
    #[serde(skip)]
    pub evict: Option<PathBuf>,
    /// Idle connections held open beside the active ones.
    pub idle_conns: u32,
    pub requests: u64,
    /// The seed-note claim this row tests.
    #[serde(skip)]
    pub claim: Claim,
}

/// A claim from the seed notes and how to check it on a row.
#[derive(Debug, Clone, Copy, Default)]
pub enum Claim {
    #[default]
    None,
    /// read+write: the bytes cross user space (2 CPU copies in the model).
    ThroughUser,
    /// mmap+write: no read copy; one copy from the mapping to the socket.
    MmapOneCopy,
    /// sendfile: 0 bytes through user space, 1 syscall per chunk.
    SendfileZeroCopy,
    /// splice: 0 bytes through user space, file->pipe->socket.
    SpliceZeroCopy,
    /// O_DIRECT + AIO: no page cache.
    DirectBypassesCache,
    /// epoll: no per-call scan of all fds.
    EpollNoScan,
    /// poll/select: every call scans all fds.
    PollScans,
    /// io_uring: one io_uring_enter reaps several completions.
    UringBatches,
    /// A reactor: readiness waits return events.
    ReactorWakeups,
}

/// What the load generator measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Load {
    pub requests: u64,
    pub errors: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// One measured row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub case: Case,
    pub load: Load,
    pub requests_per_sec: f64,
    pub mib_per_sec: f64,
    /// On-CPU time of the workload process.
    pub cpu_us_per_request: f64,
    pub cpu_ms_per_mib: f64,
    pub syscalls_per_request: f64,
    pub syscalls_per_mib: f64,
    pub mode_switches_per_request: f64,
    pub voluntary_cs_per_request: f64,
    pub involuntary_cs_per_request: f64,
    /// Bytes the workload moved, by path (`file_to_user`, …).
    pub bytes_by_path: BTreeMap<String, u64>,
    /// Bytes through user space per byte served: the copy model's CPU
    /// copies (an estimate: loopback has no NIC DMA).
    pub est_cpu_copies_per_byte: f64,
    /// Bytes the disk read for the workload process per byte served
    /// (block family: requests it submitted, readahead included), measured.
    pub disk_bytes_per_byte: f64,
    /// What the copy model assumes for the same: one disk DMA per byte
    /// served, on every path (its table counts it in "DMA copies"), cold
    /// or warm; the measured column says when the page cache made it 0.
    pub model_disk_dma_per_byte: f64,
    /// Largest transfer syscall count per MiB served on a zero-copy path.
    pub transfer_calls_per_mib: f64,
    pub page_cache_misses: u64,
    pub page_cache_hit_ratio: Option<f64>,
    pub wait_calls: u64,
    pub events_per_wakeup: Option<f64>,
    pub fds_scanned_per_wait: Option<f64>,
    /// SQEs the kernel took (multishot requests take one for many CQEs).
    pub uring_ops: u64,
    pub uring_ops_per_enter: Option<f64>,
    /// Completions posted.
    pub uring_completions: u64,
    pub uring_completions_per_enter: Option<f64>,
    /// Linux native AIO completions reaped, and the bytes they read or
    /// wrote (not in `bytes_by_path`: an O_DIRECT read is DMA into the
    /// user buffer, no CPU copy).
    pub aio_ops: u64,
    pub aio_bytes: u64,
    /// The claim this row tests and the verdict.
    pub claim: String,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Confirmed,
    Refuted,
    /// No claim attached to this row.
    Measured,
}

/// A workload process under measurement.
struct Workload {
    child: Child,
    addr: SocketAddr,
}

impl Workload {
    fn start(args: &[String]) -> anyhow::Result<Workload> {
        let exe = std::env::current_exe().context("locating the iolens binary")?;
        let mut child = Command::new(exe)
            .arg("workload")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            // The report is the output; the servers' info logs would only
            // interleave with it.
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting `iolens workload {}`", args.join(" ")))?;
        let stdout = child.stdout.take().context("workload stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the workload never blocks on stdout.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                bail!(
                    "`iolens workload {}` did not report its address",
                    args.join(" ")
                );
            }
        };
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.trim().parse().ok())
            .with_context(|| format!("unexpected first line from the workload: `{line}`"))?;
        Ok(Workload { child, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Drives `addr` with the built-in load generator and returns its report.
fn drive(addr: SocketAddr, case: &Case, conns: u32) -> anyhow::Result<Load> {
    let exe = std::env::current_exe().context("locating the iolens binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["workload", "load", "--json"])
        .args(["--addr", &addr.to_string()])
        .args(["--path", &case.path])
        .args(["--requests", &case.requests.to_string()])
        .args(["--conns", &conns.to_string()]);
    if case.idle_conns > 0 {
        cmd.args(["--idle-conns", &case.idle_conns.to_string()]);
    }
    let out = cmd
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running the load generator")?;
    if !out.status.success() {
        bail!(
            "the load generator failed ({}) on {}",
            out.status,
            case.name
        );
    }
    parse_load(&out.stdout)
        .with_context(|| format!("reading the load generator's report for {}", case.name))
}

/// Reads the load generator's `--json` report (schema `iolens.load.v1`).
fn parse_load(json: &[u8]) -> anyhow::Result<Load> {
    let v: serde_json::Value = serde_json::from_slice(json).context("not JSON")?;
    let num = |path: &[&str]| -> Option<f64> {
        let mut cur = &v;
        for p in path {
            cur = cur.get(p)?;
        }
        cur.as_f64()
    };
    let req =
        |path: &[&str]| num(path).with_context(|| format!("field {} missing", path.join(".")));
    Ok(Load {
        requests: req(&["requests"])? as u64,
        errors: req(&["errors", "total"]).or_else(|_| req(&["errors"]))? as u64,
        // Body bytes: what was served; heads are the same for every mode.
        bytes: req(&["body_bytes"])? as u64,
        seconds: req(&["duration_s"])?,
        p50_us: req(&["latency_us", "p50"])?,
        p99_us: req(&["latency_us", "p99"])?,
    })
}

/// Per-pid totals at one moment.
#[derive(Debug, Clone, Default)]
struct Totals {
    stats: BTreeMap<StatKey, StatValue>,
    proc: ProcCounters,
    uring_submitted: u64,
    uring_completed: u64,
    /// Block bytes read for the process, every device.
    disk_read: u64,
    aio_completed: u64,
    aio_bytes: u64,
}

fn totals(
    probes: &Probes,
    tracker: &mut Tracker,
    snap: &mut Snapshot,
    pid: u32,
) -> anyhow::Result<Totals> {
    probes.read(snap)?;
    tracker.update(snap, monotonic_ns());
    let uring = tracker.uring_totals(pid);
    let aio = tracker.aio_totals(pid);
    Ok(Totals {
        aio_completed: aio.completed,
        aio_bytes: aio.bytes,
        stats: tracker.totals_for(pid),
        proc: tracker.proc_totals(pid),
        uring_submitted: uring.values().map(|v| v.submitted).sum(),
        uring_completed: uring.values().map(|v| v.completed).sum(),
        disk_read: tracker
            .block_totals(pid)
            .iter()
            .filter(|((_, op), _)| *op == iolens_common::BLOCK_OP_READ)
            .map(|(_, v)| v.bytes)
            .sum(),
    })
}

fn evict(path: &Path) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd as _;
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // Written back first: DONTNEED leaves dirty pages and pages under
    // writeback in the cache. On a host busy writing (a CI run right after
    // its build) a "cold" 8 MiB file made moments before read only 7.0 MiB
    // from disk.
    f.sync_data()
        .with_context(|| format!("writing {} back before evicting it", path.display()))?;
    // SAFETY: valid fd; the whole file.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        bail!("posix_fadvise(DONTNEED) on {}: errno {rc}", path.display());
    }
    Ok(())
}

fn measure(
    case: &Case,
    conns: u32,
    probes: &Probes,
    tracker: &mut Tracker,
    snap: &mut Snapshot,
) -> anyhow::Result<Row> {
    let w = Workload::start(&case.args)?;
    if let Some(f) = &case.evict {
        evict(f)?;
    }
    let before = totals(probes, tracker, snap, w.pid())?;
    let load = drive(w.addr, case, conns)?;
    let after = totals(probes, tracker, snap, w.pid())?;
    drop(w);
    Ok(derive(case, load, &before, &after))
}

fn derive(case: &Case, load: Load, before: &Totals, after: &Totals) -> Row {
    let mut by_path: BTreeMap<String, u64> = BTreeMap::new();
    let mut calls_by: BTreeMap<(u8, String), u64> = BTreeMap::new();
    let mut wait = (0u64, 0u64, 0u64, 0u64); // calls, events, timeouts, scanned
    let mut enters = 0u64;
    for (k, a) in &after.stats {
        let b = before.stats.get(k).copied().unwrap_or_default();
        let d = StatValue {
            calls: a.calls - b.calls,
            errors: a.errors - b.errors,
            bytes: a.bytes - b.bytes,
            zero: a.zero - b.zero,
            scanned: a.scanned - b.scanned,
        };
        let Some(sc) = Syscall::from_u8(k.syscall) else {
            continue;
        };
        if sc.is_wait() {
            wait.0 += d.calls;
            wait.1 += d.bytes;
            wait.2 += d.zero;
            wait.3 += d.scanned;
            continue;
        }
        if sc == Syscall::IoUringEnter {
            enters += d.calls;
            continue;
        }
        let (src, dst) = (Endpoint::from_u8(k.src), Endpoint::from_u8(k.dst));
        if k.failed != 0 {
            continue;
        }
        let path = path_label(src, dst);
        *by_path.entry(path.clone()).or_default() += d.bytes;
        *calls_by.entry((k.syscall, path)).or_default() += d.calls;
    }
    by_path.retain(|_, v| *v > 0);
    let p = |f: fn(&ProcCounters) -> u64| f(&after.proc) - f(&before.proc);
    let served = load.bytes.max(1) as f64;
    let mib = served / (1u64 << 20) as f64;
    let reqs = load.requests.max(1) as f64;
    let user_bytes: u64 = by_path
        .iter()
        .filter(|(k, _)| k.starts_with("user_to_") || k.ends_with("_to_user"))
        .map(|(_, v)| *v)
        .sum();
    // Response bytes only: what the workload sent to sockets, through user
    // space or not. Request bytes read from sockets are not part of serving.
    let sent_through_user = by_path.get("user_to_socket").copied().unwrap_or(0);
    let read_to_user = by_path.get("file_to_user").copied().unwrap_or(0);
    let zero_copy_calls: u64 = calls_by
        .iter()
        .filter(|((_, path), _)| matches!(path.as_str(), "file_to_socket" | "pipe_to_socket"))
        .map(|(_, c)| *c)
        .max()
        .unwrap_or(0);
    let lookups = p(|c| c.cache_lookup_pages);
    let added = p(|c| c.cache_added_pages);
    let dirtied = p(|c| c.cache_dirtied_pages);
    let hit_ratio = (lookups > 0).then(|| {
        let misses = added.saturating_sub(dirtied);
        (lookups.saturating_sub(misses) as f64 / lookups as f64).clamp(0.0, 1.0)
    });
    let wakeups = wait.0.saturating_sub(wait.2);
    let uring_ops = after.uring_submitted - before.uring_submitted;
    let uring_completions = after.uring_completed - before.uring_completed;
    let syscalls = p(|c| c.syscalls);
    let mut row = Row {
        case: case.clone(),
        requests_per_sec: load.requests as f64 / load.seconds.max(1e-9),
        mib_per_sec: load.bytes as f64 / (1u64 << 20) as f64 / load.seconds.max(1e-9),
        cpu_us_per_request: p(|c| c.oncpu_ns) as f64 / 1e3 / reqs,
        cpu_ms_per_mib: p(|c| c.oncpu_ns) as f64 / 1e6 / mib,
        syscalls_per_request: syscalls as f64 / reqs,
        syscalls_per_mib: syscalls as f64 / mib,
        mode_switches_per_request: 2.0 * syscalls as f64 / reqs,
        voluntary_cs_per_request: p(|c| c.vcsw) as f64 / reqs,
        involuntary_cs_per_request: p(|c| c.ivcsw) as f64 / reqs,
        est_cpu_copies_per_byte: user_bytes as f64 / served,
        disk_bytes_per_byte: after.disk_read.saturating_sub(before.disk_read) as f64 / served,
        model_disk_dma_per_byte: 1.0,
        transfer_calls_per_mib: zero_copy_calls as f64 / mib,
        bytes_by_path: by_path,
        page_cache_misses: added.saturating_sub(dirtied),
        page_cache_hit_ratio: hit_ratio,
        wait_calls: wait.0,
        events_per_wakeup: (wakeups > 0).then(|| wait.1 as f64 / wakeups as f64),
        fds_scanned_per_wait: (wait.0 > 0 && wait.3 > 0).then(|| wait.3 as f64 / wait.0 as f64),
        uring_ops,
        uring_ops_per_enter: (enters > 0).then(|| uring_ops as f64 / enters as f64),
        uring_completions,
        uring_completions_per_enter: (enters > 0).then(|| uring_completions as f64 / enters as f64),
        aio_ops: after.aio_completed - before.aio_completed,
        aio_bytes: after.aio_bytes - before.aio_bytes,
        claim: String::new(),
        verdict: Verdict::Measured,
        load,
    };
    let (claim, ok) = judge(case.claim, &row, sent_through_user, read_to_user);
    row.claim = claim;
    row.verdict = match ok {
        None => Verdict::Measured,
        Some(true) => Verdict::Confirmed,
        Some(false) => Verdict::Refuted,
    };
    row
}

/// The claim's text with the measured figure, and whether it held.
fn judge(claim: Claim, r: &Row, sent_user: u64, read_user: u64) -> (String, Option<bool>) {
    let served = r.load.bytes.max(1) as f64;
    match claim {
        Claim::None => (String::new(), None),
        Claim::ThroughUser => (
            format!(
                "read+write copies file->user->socket: {:.2} user-space copies per byte, {:.1} syscalls per MiB",
                r.est_cpu_copies_per_byte, r.syscalls_per_mib
            ),
            Some(read_user as f64 >= 0.99 * served && sent_user as f64 >= 0.99 * served),
        ),
        Claim::MmapOneCopy => (
            format!(
                "mmap+write skips the read copy: {:.2} bytes read to user per byte, {:.2} written from user",
                read_user as f64 / served,
                sent_user as f64 / served
            ),
            Some(read_user as f64 <= 0.01 * served && sent_user as f64 >= 0.99 * served),
        ),
        Claim::SendfileZeroCopy => (
            format!(
                "sendfile: {:.3} user-space copies per byte, {:.1} sendfile calls per MiB",
                r.est_cpu_copies_per_byte, r.transfer_calls_per_mib
            ),
            Some(sent_user as f64 <= 0.01 * served && read_user as f64 <= 0.01 * served),
        ),
        Claim::SpliceZeroCopy => (
            format!(
                "splice file->pipe->socket: {:.3} user-space copies per byte, {:.1} splice calls per MiB to the socket",
                r.est_cpu_copies_per_byte, r.transfer_calls_per_mib
            ),
            Some(sent_user as f64 <= 0.01 * served && read_user as f64 <= 0.01 * served),
        ),
        Claim::DirectBypassesCache => (
            format!(
                "O_DIRECT bypasses the page cache: {} pages added for {:.0} MiB served",
                r.page_cache_misses,
                served / (1u64 << 20) as f64
            ),
            // A few pages can come from metadata reads; the data (256 pages
            // per MiB) must not.
            Some((r.page_cache_misses as f64) < 0.02 * served / 4096.0 + 8.0),
        ),
        Claim::EpollNoScan => (
            format!(
                "epoll returns only ready fds: {:.2} events per wakeup, no fd scan",
                r.events_per_wakeup.unwrap_or(0.0)
            ),
            Some(r.fds_scanned_per_wait.is_none() && r.wait_calls > 0),
        ),
        Claim::PollScans => {
            let scanned = r.fds_scanned_per_wait.unwrap_or(0.0);
            let ready = r.events_per_wakeup.unwrap_or(0.0).max(1.0);
            (
                format!(
                    "poll/select hand every watched fd to the kernel on each call: {scanned:.0} fds per call for {ready:.1} ready ({} idle connections opened during the run)",
                    r.case.idle_conns
                ),
                // The cost follows the watched fds, not the ready ones.
                Some(scanned >= 10.0 * ready),
            )
        }
        Claim::UringBatches => (
            format!(
                "proactor: {:.2} completions reaped per io_uring_enter ({} SQEs for {} CQEs: multishot accept/recv), {:.1} syscalls per request",
                r.uring_completions_per_enter.unwrap_or(0.0),
                r.uring_ops,
                r.uring_completions,
                r.syscalls_per_request
            ),
            Some(r.uring_completions_per_enter.unwrap_or(0.0) > 1.0),
        ),
        Claim::ReactorWakeups => (
            format!(
                "reactor: {:.2} events per wakeup, {:.1} syscalls per request",
                r.events_per_wakeup.unwrap_or(0.0),
                r.syscalls_per_request
            ),
            Some(r.wait_calls > 0),
        ),
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

fn make_file(path: &Path, len: u64) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let block: Vec<u8> = (0..1u32 << 20).map(|i| (i * 31 % 251) as u8).collect();
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(())
}

/// The most idle connections a select case holds (see `--idle-conns`).
const SELECT_MAX_IDLE: u32 = 900;

fn cases(args: &CompareArgs, dir: &Path) -> anyhow::Result<Vec<Case>> {
    let requests = if args.quick {
        (args.requests / 4).max(50)
    } else {
        args.requests
    };
    let mut out = Vec::new();
    match args.suite {
        Suite::Filesend => {
            let small = dir.join("small.bin");
            let large = dir.join("large.bin");
            let large_len: u64 = if args.quick { 8 << 20 } else { 64 << 20 };
            make_file(&small, 64 << 10)?;
            make_file(&large, large_len)?;
            let modes: [(&str, Claim); 6] = [
                ("read-write", Claim::ThroughUser),
                ("mmap-write", Claim::MmapOneCopy),
                ("sendfile", Claim::SendfileZeroCopy),
                ("splice", Claim::SpliceZeroCopy),
                ("direct-aio", Claim::DirectBypassesCache),
                ("direct-native-aio", Claim::DirectBypassesCache),
            ];
            for (mode, claim) in modes {
                for (size, file, reqs) in [
                    ("64K", &small, requests),
                    (
                        if args.quick { "8M" } else { "64M" },
                        &large,
                        (requests / 50).max(8),
                    ),
                ] {
                    for cold in [true, false] {
                        // Cold means: evicted before the load. Only the first
                        // request per file is cold; many requests would warm it.
                        out.push(Case {
                            name: format!("{mode} {} {size}", if cold { "cold" } else { "warm" }),
                            args: s(&["filesend", "--mode", mode, "--root"])
                                .into_iter()
                                .chain([dir.display().to_string()])
                                .collect(),
                            path: format!(
                                "/{}",
                                file.file_name().and_then(|n| n.to_str()).unwrap_or("x")
                            ),
                            evict: cold.then(|| file.to_path_buf()),
                            idle_conns: 0,
                            requests: if cold { (reqs / 4).max(4) } else { reqs },
                            claim: if mode.starts_with("direct-") || !cold {
                                claim
                            } else {
                                Claim::None
                            },
                        });
                    }
                }
            }
        }
        Suite::Servers => {
            let models = ["single", "pool", "multi", "reuseport"];
            for model in models {
                for trigger in ["level", "edge"] {
                    out.push(Case {
                        name: format!("reactor {model} {trigger}"),
                        args: s(&[
                            "reactor",
                            "--model",
                            model,
                            "--trigger",
                            trigger,
                            "--threads",
                            "2",
                        ]),
                        path: "/".into(),
                        evict: None,
                        idle_conns: 0,
                        requests,
                        claim: Claim::ReactorWakeups,
                    });
                }
            }
            out.push(Case {
                name: "proactor io_uring".into(),
                args: s(&["proactor", "--threads", "2"]),
                path: "/".into(),
                evict: None,
                idle_conns: 0,
                requests,
                claim: Claim::UringBatches,
            });
        }
        Suite::Demux => {
            let idles = match (&args.idle_conns[..], args.quick) {
                ([], true) => vec![1000],
                ([], false) => vec![1000, 5000],
                (given, _) => given.to_vec(),
            };
            for idle in idles {
                for demux in ["epoll", "poll", "select"] {
                    // select cannot watch fds >= FD_SETSIZE (1024); the
                    // active connections, the listener and stdio need room.
                    let idle = if demux == "select" {
                        idle.min(SELECT_MAX_IDLE)
                    } else {
                        idle
                    };
                    let name = format!("{demux} {idle} idle");
                    // Capped select cases repeat: measure each once.
                    if out.iter().any(|c| c.name == name) {
                        continue;
                    }
                    out.push(Case {
                        name,
                        args: s(&["reactor", "--model", "single", "--demux", demux]),
                        path: "/".into(),
                        evict: None,
                        idle_conns: idle,
                        requests,
                        claim: if demux == "epoll" {
                            Claim::EpollNoScan
                        } else {
                            Claim::PollScans
                        },
                    });
                }
            }
        }
    }
    Ok(out)
}

/// `iolens compare`.
pub fn run(args: CompareArgs) -> anyhow::Result<()> {
    check_privileges()?;
    ensure_tracefs()?;
    raise_nofile();
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = TempDir::new()?;
            tmp.0.clone()
        }
    };
    let probes = Probes::load(&ProbeConfig::default()).context("loading the eBPF probes")?;
    let mut tracker = Tracker::new(Duration::from_secs(3600));
    let mut snap = Snapshot::default();
    let cases = cases(&args, &dir)?;
    let progress = !args.json && report::stderr_is_terminal();
    let mut rows = Vec::with_capacity(cases.len());
    for (i, case) in cases.iter().enumerate() {
        if progress {
            eprint!("\r\x1b[K[{}/{}] {} …", i + 1, cases.len(), case.name);
        } else if !args.json {
            eprintln!("[{}/{}] {}", i + 1, cases.len(), case.name);
        }
        let row = measure(case, args.conns, &probes, &mut tracker, &mut snap)
            .with_context(|| format!("measuring {}", case.name))?;
        rows.push(row);
    }
    if progress {
        eprint!("\r\x1b[K");
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report::Json {
                suite: args.suite,
                rows: &rows
            })?
        );
    } else {
        print!("{}", report::table(args.suite, &rows));
    }
    if let Some(p) = &args.svg {
        std::fs::write(p, report::svg(args.suite, &rows))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.html {
        std::fs::write(p, report::html(args.suite, &rows))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Idle-connection cases open thousands of sockets in the workload and the
/// load generator, both children of this process: raise the limit they
/// inherit.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max.min(65_536).max(lim.rlim_cur);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        let p = std::env::temp_dir().join(format!("iolens-compare-{}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sc: Syscall, src: Endpoint, dst: Endpoint) -> StatKey {
        StatKey {
            tgid: 1,
            syscall: sc as u8,
            src: src as u8,
            dst: dst as u8,
            failed: 0,
        }
    }

    fn case(claim: Claim) -> Case {
        Case {
            name: "t".into(),
            args: vec![],
            path: "/".into(),
            evict: None,
            idle_conns: 0,
            requests: 10,
            claim,
        }
    }

    fn load(bytes: u64) -> Load {
        Load {
            requests: 10,
            errors: 0,
            bytes,
            seconds: 1.0,
            p50_us: 1.0,
            p99_us: 2.0,
        }
    }

    #[test]
    fn sendfile_row_is_zero_copy_and_read_write_is_not() {
        let mib = 1u64 << 20;
        let before = Totals::default();
        let mut after = Totals::default();
        after.stats.insert(
            key(Syscall::Sendfile, Endpoint::File, Endpoint::Socket),
            StatValue {
                calls: 16,
                bytes: 10 * mib,
                ..Default::default()
            },
        );
        let r = derive(
            &case(Claim::SendfileZeroCopy),
            load(10 * mib),
            &before,
            &after,
        );
        assert_eq!(r.verdict, Verdict::Confirmed, "{}", r.claim);
        assert_eq!(r.est_cpu_copies_per_byte, 0.0);
        assert!((r.transfer_calls_per_mib - 1.6).abs() < 1e-9);

        let mut after = Totals::default();
        after.stats.insert(
            key(Syscall::Read, Endpoint::File, Endpoint::User),
            StatValue {
                calls: 160,
                bytes: 10 * mib,
                ..Default::default()
            },
        );
        after.stats.insert(
            key(Syscall::Write, Endpoint::User, Endpoint::Socket),
            StatValue {
                calls: 160,
                bytes: 10 * mib,
                ..Default::default()
            },
        );
        let r = derive(&case(Claim::ThroughUser), load(10 * mib), &before, &after);
        assert_eq!(r.verdict, Verdict::Confirmed, "{}", r.claim);
        assert!((r.est_cpu_copies_per_byte - 2.0).abs() < 1e-9);
        // The same row refutes the sendfile claim.
        let r = derive(
            &case(Claim::SendfileZeroCopy),
            load(10 * mib),
            &before,
            &after,
        );
        assert_eq!(r.verdict, Verdict::Refuted);
    }

    fn demux_case_names(flags: &[&str]) -> Vec<String> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: CompareArgs,
        }
        let cli = <Cli as clap::Parser>::try_parse_from(
            ["iolens", "--suite", "demux"].iter().chain(flags),
        )
        .expect("flags parse");
        cases(&cli.args, Path::new("/nonexistent"))
            .expect("demux cases")
            .into_iter()
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn demux_cases_follow_idle_conns_and_cap_select_once() {
        assert_eq!(
            demux_case_names(&["--quick"]),
            ["epoll 1000 idle", "poll 1000 idle", "select 900 idle"]
        );
        // The capped select case is measured once, not once per value.
        assert_eq!(
            demux_case_names(&[]),
            [
                "epoll 1000 idle",
                "poll 1000 idle",
                "select 900 idle",
                "epoll 5000 idle",
                "poll 5000 idle"
            ]
        );
        assert_eq!(
            demux_case_names(&["--quick", "--idle-conns", "50,2000", "--idle-conns", "50"]),
            [
                "epoll 50 idle",
                "poll 50 idle",
                "select 50 idle",
                "epoll 2000 idle",
                "poll 2000 idle",
                "select 900 idle"
            ]
        );
    }

    #[test]
    fn load_report_parses() {
        let j = br#"{"schema": "iolens.load.v1", "requests": 100, "errors": {"total": 0},
                     "bytes": 20000, "body_bytes": 12800, "duration_s": 0.5,
                     "latency_us": {"p50": 40.0, "p99": 90.5}}"#;
        let l = parse_load(j).expect("parse");
        assert_eq!((l.requests, l.errors, l.bytes), (100, 0, 12800));
        assert!(parse_load(b"{}").is_err());
    }
}
