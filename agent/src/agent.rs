//! `iolens run` and `iolens check`: preflight, load probes, serve metrics
//! until SIGINT/SIGTERM.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;
use iolens_common::{COMM_LEN, DEFAULT_PROC_ENTRIES, DEFAULT_STATS_ENTRIES};
use tracing::{info, warn};

use crate::{
    metrics::{
        self, GroupBy, SelfInfo, Tracker,
        http::{HttpStats, Limits, Render},
        web_config::WebConfig,
    },
    privdrop,
    probes::{ProbeConfig, ProbeStatus, Probes, Snapshot, program_names, verifier},
};

/// An error the user can fix by changing how iolens is started: the process
/// exits with status 2 and this one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn parse_comm(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("a comm filter cannot be empty".into());
    }
    if s.len() >= COMM_LEN {
        return Err(format!(
            "`{s}` is {} bytes; the kernel keeps at most {} bytes of a process name (see /proc/PID/comm)",
            s.len(),
            COMM_LEN - 1
        ));
    }
    if s.contains('\0') {
        return Err("a comm filter cannot contain NUL".into());
    }
    Ok(s.to_owned())
}

fn parse_pid(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) => Err("pid 0 is the idle task; give a process id".into()),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("`{s}` is not a process id")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, mul) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (examples: 60, 60s, 500ms, 2m)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("`{s}` must be a non-negative duration"));
    }
    Ok(Duration::from_secs_f64(v * mul))
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Where the cgroup v2 hierarchy is mounted (from /proc/self/mountinfo).
fn cgroup2_mount() -> Option<std::path::PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next()? == "cgroup2")
            .then(|| pre.split_whitespace().nth(4).map(std::path::PathBuf::from))?
    })
}

/// A cgroup v2 directory, absolute or relative to the cgroup2 mount, to the
/// id the kernel uses for it (its inode number).
fn parse_cgroup(s: &str) -> Result<u64, String> {
    use std::os::unix::fs::MetadataExt as _;
    let given = std::path::Path::new(s);
    let candidates: Vec<std::path::PathBuf> = if given.is_absolute() {
        let mut v = vec![given.to_path_buf()];
        if let Some(m) = cgroup2_mount() {
            v.push(m.join(s.trim_start_matches('/')));
        }
        v
    } else {
        cgroup2_mount().map(|m| vec![m.join(s)]).unwrap_or_default()
    };
    for path in &candidates {
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: a zeroed statfs is valid; statfs writes into it.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid C string and out pointer.
        if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0
            && st.f_type as i64 == CGROUP2_SUPER_MAGIC
            && meta.is_dir()
        {
            return Ok(meta.ino());
        }
    }
    Err(match cgroup2_mount() {
        Some(m) => format!(
            "`{s}` is not a cgroup v2 directory (the cgroup2 hierarchy is mounted at {}; give a path under it, e.g. /system.slice/nginx.service)",
            m.display()
        ),
        None => format!("`{s}`: no cgroup v2 hierarchy is mounted on this machine"),
    })
}

/// Options of `iolens run`.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Address to serve metrics on (`/metrics`; a landing page on `/`).
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,

    /// Count only this process (thread group id); repeat for several.
    /// Applied in the kernel: other processes cost one map lookup per call.
    #[arg(long = "pid", value_name = "PID", value_parser = parse_pid)]
    pub pids: Vec<u32>,

    /// Count only tasks with this name (as in /proc/PID/comm, at most 15
    /// bytes); repeat for several. Applied in the kernel.
    #[arg(long = "comm", value_name = "NAME", value_parser = parse_comm)]
    pub comms: Vec<String>,

    /// Count only tasks in this cgroup v2 (exactly this cgroup, not its
    /// children): a path under the cgroup2 mount, absolute or relative to
    /// it, as in /proc/PID/cgroup. Repeat for several. Applied in the kernel.
    #[arg(long = "cgroup", value_name = "PATH", value_parser = parse_cgroup)]
    pub cgroups: Vec<u64>,

    /// Add a `cgroup` label (the process's cgroup v2 path, read once from
    /// /proc/PID/cgroup) to per-process series.
    #[arg(long)]
    pub cgroup_label: bool,

    /// Sum per-process series into groups, in the agent (the kernel stays
    /// per process): pid (one series per process, the default), cgroup
    /// (label `cgroup`), unit (the systemd unit, `unit`), container
    /// (`container_id`, `runtime`) or pod (the Kubernetes pod: `pod_uid`,
    /// `qos_class`). Groups are named from the process's cgroup v2 path, read
    /// when it is first seen; a member's final counts stay in its group
    /// after its series are dropped, so group counters never go backwards.
    #[arg(long, value_enum, default_value_t = GroupBy::Pid, value_name = "KEY")]
    pub group_by: GroupBy,

    /// With --group-by: make at most this many groups; the processes of any
    /// further group are summed into one labelled `other`
    /// (iolens_groups_overflowed_total counts them).
    #[arg(long, default_value_t = 1000, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_groups: u32,

    /// Export at most this many processes; beyond it the least recently
    /// active are dropped (from the export and the kernel maps) and
    /// iolens_processes_evicted_total counts them.
    #[arg(long, default_value_t = 10_000, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=4_000_000))]
    pub max_processes: u32,

    /// How long an exited process's series stay exported, so that a scrape
    /// still sees short-lived processes (a dd, a curl). Examples: 60s, 2m.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub exit_ttl: Duration,

    /// How often the maps are read in the background to notice evictions
    /// and exits between scrapes. Scrapes always read fresh values.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub refresh: Duration,

    /// Capacity of the per-process statistics map (one entry per process,
    /// syscall and path). Full maps evict least-recently-used entries; their
    /// counts are kept and iolens_map_evictions_total rises.
    #[arg(long, default_value_t = DEFAULT_STATS_ENTRIES, value_name = "N",
          value_parser = clap::value_parser!(u32).range(16..=4_000_000))]
    pub max_stats_entries: u32,

    /// Capacity of the process tables (names, exit times, per-process
    /// counters).
    #[arg(long, default_value_t = DEFAULT_PROC_ENTRIES, value_name = "N",
          value_parser = clap::value_parser!(u32).range(16..=4_000_000))]
    pub max_proc_entries: u32,

    /// Exit with an error if any probe family is degraded on this kernel
    /// (something it counts is lost: no variant of a probe attached, or
    /// the kernel's BTF lacks what a count needs), instead of running with
    /// the rest.
    #[arg(long)]
    pub strict: bool,

    /// Export per-program run time (iolens_probe_run_seconds_total) and run
    /// count. Turns on the kernel's BPF run-time accounting (BPF_ENABLE_STATS)
    /// for every BPF program on the machine while iolens runs, which reads
    /// the clock twice per program run: it can double the cost the probes
    /// add to each syscall. Meant for judging the probes, not for always-on.
    #[arg(long)]
    pub program_stats: bool,

    /// Close a connection that has not sent a complete request head within
    /// this time, counted from its accept, or from its first byte after a
    /// keep-alive pause (slow or half-sent requests; counted in
    /// iolens_http_connections_dropped_total{reason="header_timeout"}).
    #[arg(long = "web.header-timeout", default_value = "10s", value_parser = parse_positive_duration,
          value_name = "DURATION")]
    pub web_header_timeout: Duration,

    /// Close a keep-alive connection that sends nothing for this long after
    /// a response (reason="idle_timeout"). Prometheus keeps its connection
    /// between scrapes only if this is longer than its scrape interval.
    #[arg(long = "web.idle-timeout", default_value = "60s", value_parser = parse_positive_duration,
          value_name = "DURATION")]
    pub web_idle_timeout: Duration,

    /// Serve at most this many connections at once. At the cap a new
    /// connection closes the oldest one that is not being answered
    /// (reason="evicted"), so clients holding half-sent requests cannot lock
    /// a scraper out; if all are being answered it gets a 503
    /// (reason="refused"). Each connection holds one file descriptor.
    #[arg(long = "web.max-connections", default_value_t = 256, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub web_max_connections: u32,

    /// TLS and basic auth for the endpoint, from a YAML file in the
    /// Prometheus exporter toolkit's web configuration format (the one
    /// node_exporter's --web.config.file reads): tls_server_config
    /// (cert_file, key_file, client_auth_type, client_ca_file, min_version,
    /// max_version) and basic_auth_users (user: bcrypt hash). Read once at
    /// start; a bad file is one line and exit 2.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<std::path::PathBuf>,
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("`{s}` must be longer than 0"));
    }
    Ok(d)
}

/// Capability bits from linux/capability.h.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn effective_caps() -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .context("no CapEff line in /proc/self/status")?
        .trim();
    u64::from_str_radix(hex, 16).context("parsing CapEff")
}

/// Loading tracing programs needs CAP_BPF and CAP_PERFMON (or
/// CAP_SYS_ADMIN on its own); say so before the kernel says EPERM.
pub fn check_privileges() -> anyhow::Result<()> {
    let caps = effective_caps()?;
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    Err(UsageError(
        "iolens needs root, or the capabilities CAP_BPF and CAP_PERFMON, to load eBPF programs: \
         run it with sudo, or grant them with `setcap cap_bpf,cap_perfmon+ep $(which iolens)`"
            .into(),
    )
    .into())
}

use crate::probes::TRACEFS;

/// Classic tracepoints are found through tracefs, which some systems do
/// not mount at boot. Mount it when it is missing (we are root by now).
pub fn ensure_tracefs() -> anyhow::Result<()> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    let src = c"tracefs";
    let target = c"/sys/kernel/tracing";
    // SAFETY: valid NUL-terminated strings; a null data pointer is allowed.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(UsageError(format!(
            "tracefs is not mounted at {TRACEFS} and mounting it failed ({err}); \
             mount it with `mount -t tracefs tracefs {TRACEFS}` and start iolens again"
        ))
        .into());
    }
    info!("tracefs was not mounted; mounted it at {TRACEFS}");
    Ok(())
}

/// The state a scrape renders: probes plus the tracker, behind one lock so
/// a scrape and the background refresh never interleave.
struct Agent {
    probes: Probes,
    /// Whether run-time accounting is on; without it the kernel reports 0s,
    /// which are not exported.
    program_stats: bool,
    tracker: Tracker,
    snapshot: Snapshot,
}

struct Shared {
    agent: Mutex<Agent>,
    http: Arc<HttpStats>,
}

impl Agent {
    /// `full`: read every map (a scrape); else only what may have changed
    /// in a way a later read could not see (the background refresh).
    fn refresh(&mut self, full: bool) -> anyhow::Result<()> {
        if full {
            self.probes.read(&mut self.snapshot)?;
        } else {
            self.probes.read_changed(&mut self.snapshot)?;
        }
        let expired = self
            .tracker
            .update(&mut self.snapshot, metrics::monotonic_ns());
        // Grouped, the members' final counts stay in their groups.
        self.tracker.fold_expired(&expired);
        for e in &expired {
            self.probes
                .forget(e.tgid, &e.keys, &e.uring_keys, &e.aio_keys);
            self.tracker.forgot(e);
        }
        if !expired.is_empty() {
            // The snapshot still holds the deleted keys.
            self.snapshot.invalidate();
        }
        Ok(())
    }
}

impl Render for Shared {
    fn render(&self) -> Result<Vec<u8>, String> {
        let mut agent = self
            .agent
            .lock()
            .map_err(|_| "metrics state poisoned by an earlier panic".to_owned())?;
        agent.refresh(true).map_err(|e| format!("{e:#}"))?;
        let program_stats: Vec<_> = program_names()
            .into_iter()
            .filter(|_| agent.program_stats)
            .filter_map(|p| agent.probes.program_stats(p).map(|s| (p.to_owned(), s)))
            .collect();
        let me = SelfInfo {
            probes: agent.probes.status(),
            families: agent.probes.families(),
            program_stats: &program_stats,
            stats_capacity: agent.probes.stats_capacity(),
            procs_capacity: agent.probes.procs_capacity(),
            http: Some(&self.http),
        };
        let families = agent.tracker.families(&me);
        let body = metrics::encode(&families);
        drop(families);
        release_free_memory();
        Ok(body)
    }
}

/// Gives the memory malloc holds free back to the kernel. A scrape builds
/// megabytes of text in buffers that grow as they fill (15 MB at 10,000
/// processes); glibc keeps what is freed in its arenas (one per thread that
/// allocated), so without this the agent's RSS stayed at its peak.
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free pages to the kernel; it has
    // no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `iolens run`.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    // The user's own file, so checked before anything else.
    let web = match &args.web_config_file {
        Some(path) => WebConfig::load(path)
            .map_err(|e| UsageError(format!("--web.config.file {}: {e}", path.display())))?,
        None => WebConfig::default(),
    };
    check_privileges()?;
    ensure_tracefs()?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(args, web))
}

async fn run_async(args: RunArgs, web: WebConfig) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives while probes load must still
    // mean "detach and exit 0", not the default kill.
    let signals = Signals::install()?;
    // Bind before loading probes: a port in use is the commonest start-up
    // failure and should not cost a probe load.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            UsageError(match e.kind() {
                std::io::ErrorKind::AddrInUse => format!(
                    "cannot listen on {}: the address is in use; stop the other process or pick another with --listen",
                    args.listen
                ),
                _ => format!("cannot listen on {}: {e}", args.listen),
            })
        })?;

    let local = listener
        .local_addr()
        .context("reading the metrics listener's address")?;
    let config = ProbeConfig {
        pids: args.pids.clone(),
        comms: args.comms.clone(),
        cgroups: args.cgroups.clone(),
        stats_entries: args.max_stats_entries,
        proc_entries: args.max_proc_entries,
        strict: args.strict,
        program_stats: args.program_stats,
    };
    let probes = Probes::load(&config).context("loading the eBPF probes")?;
    let attached = probes.status().iter().filter(|s| s.attached).count();
    if attached == 0 {
        anyhow::bail!("no probe could attach; see the warnings above");
    }
    // Everything that needs a privilege is done: the listener is bound,
    // tracefs mounted, the probes loaded and attached, the BPF_ENABLE_STATS
    // fd (--program-stats) opened. What follows reads and deletes through
    // held fds and reads world-readable /proc files (privdrop's notes).
    drop_privileges();
    info!(
        attached,
        total = probes.status().len(),
        tls = web.tls.is_some(),
        basic_auth = web.needs_auth(),
        "iolens running; metrics on {}://{local}/metrics",
        if web.tls.is_some() { "https" } else { "http" }
    );
    let http_stats = Arc::new(HttpStats::default());
    let shared = Arc::new(Shared {
        http: Arc::clone(&http_stats),
        agent: Mutex::new(Agent {
            probes,
            program_stats: args.program_stats,
            tracker: Tracker::new(args.exit_ttl)
                .with_cgroup_label(args.cgroup_label)
                .with_max_processes(args.max_processes as usize)
                .with_group_by(args.group_by, args.max_groups as usize),
            snapshot: Snapshot::default(),
        }),
    });

    let limits = Limits {
        header_timeout: args.web_header_timeout,
        idle_timeout: args.web_idle_timeout,
        max_connections: args.web_max_connections as usize,
    };
    let server = tokio::spawn(metrics::http::serve(
        listener,
        Arc::clone(&shared),
        limits,
        http_stats,
        Arc::new(web),
    ));
    let refresher = {
        let shared = Arc::clone(&shared);
        let every = args.refresh.max(Duration::from_millis(50));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let shared = Arc::clone(&shared);
                let r = tokio::task::spawn_blocking(move || match shared.agent.lock() {
                    Ok(mut a) => a.refresh(false),
                    Err(_) => Err(anyhow::anyhow!("state poisoned")),
                })
                .await;
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!("background map read failed: {e:#}"),
                    Err(e) => warn!("background map read panicked: {e}"),
                }
            }
        })
    };

    signals.wait().await;
    let started = Instant::now();
    server.abort();
    refresher.abort();
    let _ = server.await;
    let _ = refresher.await;
    // Dropping the probes detaches every program and frees the maps.
    drop(shared);
    info!(
        "detached and stopped in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

/// Drops every capability the agent no longer needs and logs what is kept.
/// A failure is logged and the agent goes on as it is: it was allowed to
/// start with these privileges, and metrics are worth more than the drop.
fn drop_privileges() {
    match privdrop::drop_after_attach() {
        Ok(kept) if kept.caps == 0 => info!(
            threads = kept.threads,
            bounding_set_cleared = kept.bounding_cleared,
            "dropped every capability (CapEff and CapPrm 0 in every thread, no_new_privs set)"
        ),
        Ok(kept) => info!(
            threads = kept.threads,
            bounding_set_cleared = kept.bounding_cleared,
            "dropped every capability but {}: this kernel refuses bpf(2) on held map fds without it \
             (Linux before 5.19 with kernel.unprivileged_bpf_disabled set)",
            cap_names(kept.caps)
        ),
        Err(e) => warn!(
            "could not drop capabilities ({e:#}); running on with the ones iolens was started with"
        ),
    }
}

fn cap_names(caps: u64) -> String {
    (0..64)
        .filter(|c| caps & (1u64 << c) != 0)
        .map(|c| match c {
            CAP_SYS_ADMIN => "CAP_SYS_ADMIN".to_owned(),
            CAP_BPF => "CAP_BPF".to_owned(),
            other => format!("capability {other}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => info!("SIGTERM received; detaching"),
            _ = self.int.recv() => info!("SIGINT received; detaching"),
        }
    }
}

/// `iolens check`: the preflight and a load/attach of every probe, then exit.
pub fn check(strict: bool) -> anyhow::Result<()> {
    check_privileges()?;
    ensure_tracefs()?;
    let probes = Probes::load(&ProbeConfig {
        strict,
        ..ProbeConfig::default()
    })
    .context("loading the eBPF probes")?;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned());
    println!("probes on Linux {release}:");
    for s in probes.status() {
        match &s.error {
            None => println!(
                "ok      {:<15} {:<38} {:<27} {}",
                s.spec.name,
                s.attach().to_string(),
                s.program(),
                verifier_figures(s)
            ),
            Some(e) => println!("FAILED  {:<15} {e}", s.spec.name),
        }
    }
    println!("families:");
    let mut lost = 0;
    for f in probes.families() {
        let how = f.attachments();
        let mut line = format!("{:<11} {:<12} {how}", f.family.name(), f.status());
        if !f.lost.is_empty() {
            lost += 1;
            line.push_str("; lost: ");
            line.push_str(&f.lost.join("; "));
        }
        println!("{line}");
    }
    if lost > 0 {
        anyhow::bail!("{lost} probe families are degraded on this kernel (see above)");
    }
    Ok(())
}

/// A program's verifier figures against the limits, for `iolens check`:
/// how close each program is to being refused on a kernel.
fn verifier_figures(s: &ProbeStatus) -> String {
    let insns = match s.verified_insns {
        Some(n) => format!("{n} of {} insns", verifier::MAX_PROCESSED_INSNS),
        None => "insns unknown (Linux < 5.16)".to_owned(),
    };
    let stack = match &s.stack {
        Some(st) => format!(
            "stack {} B own, {} of {} B combined ({})",
            st.own,
            st.combined,
            verifier::MAX_COMBINED_STACK,
            st.chain.join(" > ")
        ),
        None => "stack unknown".to_owned(),
    };
    format!("{insns}; {stack}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("60").expect("plain"),
            Duration::from_secs(60)
        );
        assert_eq!(parse_duration("2m").expect("m"), Duration::from_secs(120));
        assert_eq!(
            parse_duration("500ms").expect("ms"),
            Duration::from_millis(500)
        );
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn comms_and_pids() {
        assert!(parse_comm("nginx").is_ok());
        assert!(parse_comm("0123456789abcdef").is_err());
        assert!(parse_comm("").is_err());
        assert!(parse_pid("0").is_err());
        assert!(parse_pid("12x").is_err());
        assert_eq!(parse_pid("42"), Ok(42));
    }

    #[test]
    fn cgroups() {
        assert!(parse_cgroup("/definitely/not/a/cgroup").is_err());
        assert!(
            parse_cgroup("/etc").is_err(),
            "a directory that is not cgroup2"
        );
        if let Some(m) = cgroup2_mount() {
            use std::os::unix::fs::MetadataExt as _;
            let ino = std::fs::metadata(&m).expect("mount").ino();
            assert_eq!(parse_cgroup(m.to_str().expect("utf-8")), Ok(ino));
            assert_eq!(parse_cgroup("/"), Ok(ino), "relative to the mount");
        }
    }
}
