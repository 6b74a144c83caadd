//! From a scrape to rows: the per-process counters `top` reads out of the
//! exposition (the README's metrics table), and the rates between two
//! scrapes. Pure logic, no I/O.

use std::{collections::BTreeMap, time::Instant};

use serde::Serialize;

use super::expo::Sample;

/// How samples are grouped into rows. Only per process today; `--group-by`
/// (another issue) adds variants here and a key for them in [`GroupKey`],
/// and nothing downstream of [`Snapshot`] changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GroupBy {
    #[default]
    Process,
}

/// The key of one row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupKey {
    Pid(u32),
}

impl GroupBy {
    /// The row a per-process sample belongs to; None for machine-wide
    /// samples (and for per-process samples without a usable pid).
    fn key(self, s: &Sample<'_>) -> Option<GroupKey> {
        match self {
            GroupBy::Process => s.label("pid")?.parse().ok().map(GroupKey::Pid),
        }
    }
}

/// Counter values of one row, as the agent exports them (totals since the
/// agent saw the process), or their change over an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Counters {
    /// Bytes on paths with user space at the destination (`*_to_user`).
    pub user_in_bytes: u64,
    /// Bytes on paths with user space at the source (`user_to_*`).
    pub user_out_bytes: u64,
    /// Bytes on zero-copy paths (no `user` end; `error`, `none` and paths
    /// with an `unknown` end excluded) that went into a pipe.
    pub zero_copy_to_pipe_bytes: u64,
    /// … that came out of a pipe.
    pub zero_copy_from_pipe_bytes: u64,
    /// … from a pipe into a pipe (tee).
    pub zero_copy_pipe_to_pipe_bytes: u64,
    /// … with no pipe at either end (`file_to_socket`, sendfile).
    pub zero_copy_other_bytes: u64,
    /// Every syscall of the process (`iolens_process_syscalls_total`).
    pub syscalls: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub cpu_seconds: f64,
    pub cache_lookup_pages: u64,
    pub cache_added_pages: u64,
    pub cache_dirtied_pages: u64,
    /// Successful epoll_wait/epoll_pwait/epoll_pwait2 calls.
    pub epoll_waits: u64,
    /// … of which returned no event (timed out).
    pub epoll_timeouts: u64,
    pub epoll_events: u64,
    /// SQEs consumed by io_uring_enter.
    pub uring_submitted: u64,
    /// io_uring_enter calls.
    pub uring_enters: u64,
    /// Bytes disks read for the process's own block requests
    /// (`iolens_block_bytes_total{op="read"}`: reads, O_DIRECT, readahead).
    pub disk_read_bytes: u64,
    /// … wrote (`op="write"`: O_DIRECT and sync writes it issued; page-cache
    /// writeback counts for the flush workers that issue it).
    pub disk_write_bytes: u64,
    /// Seconds its threads slept inside syscalls
    /// (`iolens_offcpu_seconds_total`, every syscall).
    pub offcpu_seconds: f64,
}

impl Counters {
    /// Bytes that went through user space (each one CPU copy, in the copy
    /// model).
    pub fn user_bytes(&self) -> u64 {
        self.user_in_bytes + self.user_out_bytes
    }

    /// Bytes on zero-copy paths, as the README counts them: each path's
    /// bytes once.
    pub fn zero_copy_bytes(&self) -> u64 {
        self.zero_copy_to_pipe_bytes
            + self.zero_copy_from_pipe_bytes
            + self.zero_copy_pipe_to_pipe_bytes
            + self.zero_copy_other_bytes
    }

    /// The change from `prev` to `self`. A counter that went down was reset
    /// (the agent restarted, or a pid was reused): its new value is all
    /// change, as in Prometheus's `rate()`.
    pub fn since(&self, prev: &Counters) -> Counters {
        fn d(now: u64, then: u64) -> u64 {
            if now >= then { now - then } else { now }
        }
        fn df(now: f64, then: f64) -> f64 {
            if now >= then { now - then } else { now }
        }
        Counters {
            user_in_bytes: d(self.user_in_bytes, prev.user_in_bytes),
            user_out_bytes: d(self.user_out_bytes, prev.user_out_bytes),
            zero_copy_to_pipe_bytes: d(self.zero_copy_to_pipe_bytes, prev.zero_copy_to_pipe_bytes),
            zero_copy_from_pipe_bytes: d(
                self.zero_copy_from_pipe_bytes,
                prev.zero_copy_from_pipe_bytes,
            ),
            zero_copy_pipe_to_pipe_bytes: d(
                self.zero_copy_pipe_to_pipe_bytes,
                prev.zero_copy_pipe_to_pipe_bytes,
            ),
            zero_copy_other_bytes: d(self.zero_copy_other_bytes, prev.zero_copy_other_bytes),
            syscalls: d(self.syscalls, prev.syscalls),
            voluntary_switches: d(self.voluntary_switches, prev.voluntary_switches),
            involuntary_switches: d(self.involuntary_switches, prev.involuntary_switches),
            cpu_seconds: df(self.cpu_seconds, prev.cpu_seconds),
            cache_lookup_pages: d(self.cache_lookup_pages, prev.cache_lookup_pages),
            cache_added_pages: d(self.cache_added_pages, prev.cache_added_pages),
            cache_dirtied_pages: d(self.cache_dirtied_pages, prev.cache_dirtied_pages),
            epoll_waits: d(self.epoll_waits, prev.epoll_waits),
            epoll_timeouts: d(self.epoll_timeouts, prev.epoll_timeouts),
            epoll_events: d(self.epoll_events, prev.epoll_events),
            uring_submitted: d(self.uring_submitted, prev.uring_submitted),
            uring_enters: d(self.uring_enters, prev.uring_enters),
            disk_read_bytes: d(self.disk_read_bytes, prev.disk_read_bytes),
            disk_write_bytes: d(self.disk_write_bytes, prev.disk_write_bytes),
            offcpu_seconds: df(self.offcpu_seconds, prev.offcpu_seconds),
        }
    }

    fn add(&mut self, o: &Counters) {
        self.user_in_bytes += o.user_in_bytes;
        self.user_out_bytes += o.user_out_bytes;
        self.zero_copy_to_pipe_bytes += o.zero_copy_to_pipe_bytes;
        self.zero_copy_from_pipe_bytes += o.zero_copy_from_pipe_bytes;
        self.zero_copy_pipe_to_pipe_bytes += o.zero_copy_pipe_to_pipe_bytes;
        self.zero_copy_other_bytes += o.zero_copy_other_bytes;
        self.syscalls += o.syscalls;
        self.voluntary_switches += o.voluntary_switches;
        self.involuntary_switches += o.involuntary_switches;
        self.cpu_seconds += o.cpu_seconds;
        self.cache_lookup_pages += o.cache_lookup_pages;
        self.cache_added_pages += o.cache_added_pages;
        self.cache_dirtied_pages += o.cache_dirtied_pages;
        self.epoll_waits += o.epoll_waits;
        self.epoll_timeouts += o.epoll_timeouts;
        self.epoll_events += o.epoll_events;
        self.uring_submitted += o.uring_submitted;
        self.uring_enters += o.uring_enters;
        self.disk_read_bytes += o.disk_read_bytes;
        self.disk_write_bytes += o.disk_write_bytes;
        self.offcpu_seconds += o.offcpu_seconds;
    }

    /// Adds one per-process sample of the exposition to these counters.
    fn absorb(&mut self, s: &Sample<'_>) {
        // Counters are integers in the exposition; f64 holds them exactly
        // up to 2^53.
        let v = if s.value.is_finite() && s.value > 0.0 {
            s.value as u64
        } else {
            0
        };
        match s.name {
            "iolens_io_bytes_total" => {
                let path = s.label("path").unwrap_or("");
                let (src, dst) = path.split_once("_to_").unwrap_or((path, ""));
                if src == "user" || dst == "user" {
                    if dst == "user" {
                        self.user_in_bytes += v;
                    }
                    if src == "user" {
                        self.user_out_bytes += v;
                    }
                } else if dst.is_empty() || src == "unknown" || dst == "unknown" {
                    // error, none, or an fd whose type could not be read:
                    // not known to be zero-copy.
                } else {
                    match (src == "pipe", dst == "pipe") {
                        (true, true) => self.zero_copy_pipe_to_pipe_bytes += v,
                        (false, true) => self.zero_copy_to_pipe_bytes += v,
                        (true, false) => self.zero_copy_from_pipe_bytes += v,
                        (false, false) => self.zero_copy_other_bytes += v,
                    }
                }
            }
            "iolens_process_syscalls_total" => self.syscalls += v,
            "iolens_context_switches_total" => match s.label("kind") {
                Some("voluntary") => self.voluntary_switches += v,
                Some("involuntary") => self.involuntary_switches += v,
                _ => {}
            },
            "iolens_cpu_seconds_total" if s.value.is_finite() && s.value > 0.0 => {
                self.cpu_seconds += s.value;
            }
            "iolens_page_cache_lookup_pages_total" => self.cache_lookup_pages += v,
            "iolens_page_cache_added_pages_total" => self.cache_added_pages += v,
            "iolens_page_cache_dirtied_pages_total" => self.cache_dirtied_pages += v,
            "iolens_syscalls_total" => match s.label("syscall") {
                Some(sc) if is_epoll(sc) && s.label("path") == Some("none") => {
                    self.epoll_waits += v;
                }
                Some("io_uring_enter") => self.uring_enters += v,
                _ => {}
            },
            "iolens_wait_timeouts_total" if s.label("syscall").is_some_and(is_epoll) => {
                self.epoll_timeouts += v;
            }
            "iolens_wait_events_total" if s.label("syscall").is_some_and(is_epoll) => {
                self.epoll_events += v;
            }
            "iolens_io_uring_enter_submitted_total" => self.uring_submitted += v,
            "iolens_block_bytes_total" => match s.label("op") {
                Some("read") => self.disk_read_bytes += v,
                Some("write") => self.disk_write_bytes += v,
                _ => {}
            },
            "iolens_offcpu_seconds_total" if s.value.is_finite() && s.value > 0.0 => {
                self.offcpu_seconds += s.value;
            }
            _ => {}
        }
    }
}

fn is_epoll(syscall: &str) -> bool {
    syscall.starts_with("epoll_")
}

/// The copy model of the seed notes, per process: a byte on a path with
/// user space at one end took one CPU copy, a zero-copy path none. The
/// bytes a process moved end to end are taken as the larger of what came
/// into user space and what left it or went zero-copy (a relay that reads
/// N and writes N moved N bytes at 2 copies each). A splice moves each
/// byte into a pipe and out again, so those halves count once.
///
/// `None` when nothing moved. `compare` measures the same model against
/// the bytes its load generator received; `top` has no such count.
pub fn cpu_copies_per_byte(c: &Counters) -> Option<f64> {
    let zero_copy = c.zero_copy_to_pipe_bytes.max(c.zero_copy_from_pipe_bytes)
        + c.zero_copy_pipe_to_pipe_bytes
        + c.zero_copy_other_bytes;
    let moved = c.user_in_bytes.max(c.user_out_bytes + zero_copy);
    (moved > 0).then(|| c.user_bytes() as f64 / moved as f64)
}

/// Page-cache hit ratio (README, Design): `clamp((lookups − max(0, added −
/// dirtied)) / lookups, 0, 1)`; None without lookups.
pub fn cache_hit_ratio(c: &Counters) -> Option<f64> {
    let lookups = c.cache_lookup_pages;
    (lookups > 0).then(|| {
        let misses = c.cache_added_pages.saturating_sub(c.cache_dirtied_pages);
        (lookups.saturating_sub(misses) as f64 / lookups as f64).clamp(0.0, 1.0)
    })
}

/// Machine-wide facts of a scrape that tell whether to trust it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Health {
    pub probes_attached: u64,
    pub probes_total: u64,
    pub events_dropped: u64,
    pub map_evictions: u64,
}

/// One scrape, grouped.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: Instant,
    pub rows: BTreeMap<GroupKey, (String, Counters)>,
    pub health: Health,
    /// Samples whose name starts with `iolens_`: 0 means the endpoint is
    /// not an iolens agent.
    pub iolens_samples: usize,
}

impl Snapshot {
    pub fn from_samples(samples: &[Sample<'_>], by: GroupBy, at: Instant) -> Snapshot {
        let mut rows: BTreeMap<GroupKey, (String, Counters)> = BTreeMap::new();
        let mut health = Health::default();
        let mut iolens_samples = 0;
        for s in samples {
            if !s.name.starts_with("iolens_") {
                continue;
            }
            iolens_samples += 1;
            let v = if s.value.is_finite() && s.value > 0.0 {
                s.value as u64
            } else {
                0
            };
            match s.name {
                "iolens_probe_attached" => {
                    health.probes_total += 1;
                    health.probes_attached += u64::from(v > 0);
                    continue;
                }
                "iolens_events_dropped_total" => {
                    health.events_dropped += v;
                    continue;
                }
                "iolens_map_evictions_total" => {
                    health.map_evictions += v;
                    continue;
                }
                _ => {}
            }
            let Some(key) = by.key(s) else { continue };
            let row = rows.entry(key).or_default();
            if let Some(comm) = s.label("comm")
                && row.0 != comm
            {
                comm.clone_into(&mut row.0);
            }
            row.1.absorb(s);
        }
        Snapshot {
            at,
            rows,
            health,
            iolens_samples,
        }
    }
}

/// Rates of one row over an interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rates {
    pub user_bytes_per_sec: f64,
    pub zero_copy_bytes_per_sec: f64,
    pub cpu_copies_per_byte: Option<f64>,
    pub syscalls_per_sec: f64,
    pub voluntary_switches_per_sec: f64,
    pub involuntary_switches_per_sec: f64,
    /// Per cent of one CPU, as top shows it.
    pub cpu_percent: f64,
    pub cache_hit_percent: Option<f64>,
    pub epoll_wakeups_per_sec: f64,
    pub events_per_wakeup: Option<f64>,
    pub uring_ops_per_enter: Option<f64>,
    /// Bytes/s disks read and wrote for the process's block requests.
    pub disk_bytes_per_sec: f64,
    /// Time slept inside syscalls, per cent of one thread's time (summed
    /// over threads: above 100 when several wait).
    pub offcpu_percent: f64,
}

impl Rates {
    pub fn of(d: &Counters, seconds: f64) -> Rates {
        let per = |v: f64| if seconds > 0.0 { v / seconds } else { 0.0 };
        let wakeups = d.epoll_waits.saturating_sub(d.epoll_timeouts);
        Rates {
            user_bytes_per_sec: per(d.user_bytes() as f64),
            zero_copy_bytes_per_sec: per(d.zero_copy_bytes() as f64),
            cpu_copies_per_byte: cpu_copies_per_byte(d),
            syscalls_per_sec: per(d.syscalls as f64),
            voluntary_switches_per_sec: per(d.voluntary_switches as f64),
            involuntary_switches_per_sec: per(d.involuntary_switches as f64),
            cpu_percent: per(d.cpu_seconds) * 100.0,
            cache_hit_percent: cache_hit_ratio(d).map(|r| r * 100.0),
            epoll_wakeups_per_sec: per(wakeups as f64),
            events_per_wakeup: (wakeups > 0).then(|| d.epoll_events as f64 / wakeups as f64),
            uring_ops_per_enter: (d.uring_enters > 0)
                .then(|| d.uring_submitted as f64 / d.uring_enters as f64),
            disk_bytes_per_sec: per((d.disk_read_bytes + d.disk_write_bytes) as f64),
            offcpu_percent: per(d.offcpu_seconds) * 100.0,
        }
    }
}

/// One row of the view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    #[serde(skip)]
    pub key: GroupKey,
    pub pid: Option<u32>,
    pub comm: String,
    #[serde(flatten)]
    pub rates: Rates,
    /// The counters' change over the interval.
    pub delta: Counters,
    /// The counters at the end of the interval.
    pub total: Counters,
}

impl Row {
    /// Whether anything of this row moved in the interval.
    pub fn active(&self) -> bool {
        self.delta != Counters::default()
    }
}

/// The view over one interval: rows and machine totals.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    pub interval_seconds: f64,
    pub totals: Rates,
    pub processes: usize,
    pub health: Health,
    /// Health counters' change over the interval.
    pub health_delta: Health,
    pub rows: Vec<Row>,
}

impl View {
    pub fn between(prev: &Snapshot, cur: &Snapshot) -> View {
        let seconds = cur.at.saturating_duration_since(prev.at).as_secs_f64();
        let mut sum = Counters::default();
        let rows: Vec<Row> = cur
            .rows
            .iter()
            .map(|(key, (comm, total))| {
                // A row not seen before started from zero in this interval.
                let delta = match prev.rows.get(key) {
                    Some((_, p)) => total.since(p),
                    None => *total,
                };
                sum.add(&delta);
                Row {
                    key: key.clone(),
                    pid: match key {
                        GroupKey::Pid(p) => Some(*p),
                    },
                    comm: comm.clone(),
                    rates: Rates::of(&delta, seconds),
                    delta,
                    total: *total,
                }
            })
            .collect();
        let h = |a: u64, b: u64| a.saturating_sub(b);
        View {
            interval_seconds: seconds,
            totals: Rates::of(&sum, seconds),
            processes: rows.len(),
            health: cur.health,
            health_delta: Health {
                probes_attached: cur.health.probes_attached,
                probes_total: cur.health.probes_total,
                events_dropped: h(cur.health.events_dropped, prev.health.events_dropped),
                map_evictions: h(cur.health.map_evictions, prev.health.map_evictions),
            },
            rows,
        }
    }
}

/// The columns, in display order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Column {
    /// Process id.
    Pid,
    /// Process name.
    Comm,
    /// Bytes/s through user space.
    User,
    /// Bytes/s on zero-copy paths.
    ZeroCopy,
    /// Estimated CPU copies per byte moved.
    Copies,
    /// Syscalls/s.
    Syscalls,
    /// Voluntary context switches/s.
    Vcs,
    /// Involuntary context switches/s.
    Ics,
    /// CPU %.
    Cpu,
    /// Time slept inside syscalls, %.
    Wait,
    /// Bytes/s read and written by disks for it.
    Disk,
    /// Page-cache hit %.
    CacheHit,
    /// Epoll wakeups/s.
    EpollWakeups,
    /// Events per epoll wakeup.
    EventsPerWakeup,
    /// io_uring SQEs per io_uring_enter.
    UringOpsPerEnter,
}

impl Column {
    pub const ALL: [Column; 15] = [
        Column::Pid,
        Column::Comm,
        Column::User,
        Column::ZeroCopy,
        Column::Copies,
        Column::Syscalls,
        Column::Vcs,
        Column::Ics,
        Column::Cpu,
        Column::Wait,
        Column::Disk,
        Column::CacheHit,
        Column::EpollWakeups,
        Column::EventsPerWakeup,
        Column::UringOpsPerEnter,
    ];

    pub fn header(self) -> &'static str {
        match self {
            Column::Pid => "PID",
            Column::Comm => "COMM",
            Column::User => "USER/s",
            Column::ZeroCopy => "ZCOPY/s",
            Column::Copies => "CPY/B",
            Column::Syscalls => "SYSC/s",
            Column::Vcs => "VCSW/s",
            Column::Ics => "ICSW/s",
            Column::Cpu => "CPU%",
            Column::Wait => "WAIT%",
            Column::Disk => "DISK/s",
            Column::CacheHit => "HIT%",
            Column::EpollWakeups => "EPWK/s",
            Column::EventsPerWakeup => "EV/WK",
            Column::UringOpsPerEnter => "OP/ENT",
        }
    }

    /// What the column means, for the help overlay and `--help`.
    pub fn meaning(self) -> &'static str {
        match self {
            Column::Pid => "process id (thread group)",
            Column::Comm => "process name",
            Column::User => "bytes/s through user space (paths with `user`)",
            Column::ZeroCopy => "bytes/s that never entered user space (sendfile, splice)",
            Column::Copies => "estimated CPU copies per byte moved (copy model)",
            Column::Syscalls => "syscalls/s, all of them",
            Column::Vcs => "voluntary context switches/s (blocked)",
            Column::Ics => "involuntary context switches/s (preempted)",
            Column::Cpu => "on-CPU time, % of one CPU",
            Column::Wait => "slept inside syscalls, % of one thread (its threads summed)",
            Column::Disk => "bytes/s disks read and wrote for its own block requests",
            Column::CacheHit => "page-cache hit % of reads' page lookups",
            Column::EpollWakeups => "epoll waits/s that returned events",
            Column::EventsPerWakeup => "events per epoll wakeup",
            Column::UringOpsPerEnter => "io_uring SQEs per io_uring_enter",
        }
    }

    /// Display width in cells (COMM is the flexible one: its minimum).
    pub fn width(self) -> u16 {
        match self {
            Column::Pid => 7,
            Column::Comm => 12,
            Column::User | Column::ZeroCopy | Column::Disk => 10,
            Column::Syscalls => 7,
            Column::Vcs | Column::Ics | Column::EpollWakeups => 7,
            Column::Copies | Column::Cpu | Column::Wait | Column::CacheHit => 6,
            Column::EventsPerWakeup | Column::UringOpsPerEnter => 6,
        }
    }

    /// Which columns go first when the terminal is narrow: higher goes
    /// first. PID, COMM and the two byte rates always stay.
    pub fn drop_order(self) -> u8 {
        match self {
            Column::Pid | Column::Comm | Column::User | Column::ZeroCopy => 0,
            Column::Cpu => 1,
            Column::Syscalls => 2,
            Column::Copies => 3,
            Column::Wait => 4,
            Column::Disk => 5,
            Column::CacheHit => 6,
            Column::Vcs => 7,
            Column::Ics => 8,
            Column::EpollWakeups => 9,
            Column::UringOpsPerEnter => 10,
            Column::EventsPerWakeup => 11,
        }
    }

    /// Text columns sort ascending by default, numbers descending.
    pub fn ascending_by_default(self) -> bool {
        matches!(self, Column::Pid | Column::Comm)
    }

    pub fn numeric(self, r: &Row) -> Option<f64> {
        let x = &r.rates;
        match self {
            Column::Pid => r.pid.map(f64::from),
            Column::Comm => None,
            Column::User => Some(x.user_bytes_per_sec),
            Column::ZeroCopy => Some(x.zero_copy_bytes_per_sec),
            Column::Copies => x.cpu_copies_per_byte,
            Column::Syscalls => Some(x.syscalls_per_sec),
            Column::Vcs => Some(x.voluntary_switches_per_sec),
            Column::Ics => Some(x.involuntary_switches_per_sec),
            Column::Cpu => Some(x.cpu_percent),
            Column::Wait => Some(x.offcpu_percent),
            Column::Disk => Some(x.disk_bytes_per_sec),
            Column::CacheHit => x.cache_hit_percent,
            Column::EpollWakeups => Some(x.epoll_wakeups_per_sec),
            Column::EventsPerWakeup => x.events_per_wakeup,
            Column::UringOpsPerEnter => x.uring_ops_per_enter,
        }
    }

    /// The cell's text, in human units.
    pub fn cell(self, r: &Row) -> String {
        let x = &r.rates;
        match self {
            Column::Pid => r.pid.map(|p| p.to_string()).unwrap_or_default(),
            Column::Comm => r.comm.clone(),
            Column::User => bytes(x.user_bytes_per_sec),
            Column::ZeroCopy => bytes(x.zero_copy_bytes_per_sec),
            Column::Syscalls => count(x.syscalls_per_sec),
            Column::Vcs => count(x.voluntary_switches_per_sec),
            Column::Ics => count(x.involuntary_switches_per_sec),
            Column::EpollWakeups => count(x.epoll_wakeups_per_sec),
            Column::Cpu => format!("{:.1}", x.cpu_percent),
            Column::Wait => format!("{:.1}", x.offcpu_percent),
            Column::Disk => bytes(x.disk_bytes_per_sec),
            Column::Copies => opt(x.cpu_copies_per_byte, |v| format!("{v:.2}")),
            Column::CacheHit => opt(x.cache_hit_percent, |v| format!("{v:.1}")),
            Column::EventsPerWakeup => opt(x.events_per_wakeup, count),
            Column::UringOpsPerEnter => opt(x.uring_ops_per_enter, count),
        }
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".to_owned())
}

/// Bytes (a rate's unit is in the header) with IEC prefixes, three
/// significant digits: `0`, `512 B`, `1.00 KiB`, `97.7 MiB`, `977 GiB`.
pub fn bytes(v: f64) -> String {
    if !v.is_finite() || v <= 0.0 {
        return "0".to_owned();
    }
    if v < 1024.0 {
        return format!("{v:.0} B");
    }
    let mut x = v;
    let mut unit = "B";
    for u in ["KiB", "MiB", "GiB", "TiB", "PiB"] {
        if x < 1024.0 {
            break;
        }
        x /= 1024.0;
        unit = u;
    }
    sig3(x, unit)
}

/// A count with SI prefixes: `0`, `0.5`, `12.3`, `999`, `1.23k`, `45.6M`.
pub fn count(v: f64) -> String {
    if !v.is_finite() || v <= 0.0 {
        return "0".to_owned();
    }
    if v < 1000.0 {
        return if v < 10.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.0}")
        };
    }
    let mut x = v;
    let mut unit = "";
    for u in ["k", "M", "G", "T"] {
        if x < 1000.0 {
            break;
        }
        x /= 1000.0;
        unit = u;
    }
    let s = sig3(x, unit);
    s.replace(' ', "")
}

fn sig3(x: f64, unit: &str) -> String {
    if x < 10.0 {
        format!("{x:.2} {unit}")
    } else if x < 100.0 {
        format!("{x:.1} {unit}")
    } else {
        format!("{x:.0} {unit}")
    }
}

/// Parses what [`bytes`] prints back to bytes (for tests and scripts).
pub fn parse_bytes(s: &str) -> Option<f64> {
    let s = s.trim();
    if s == "0" {
        return Some(0.0);
    }
    let (num, unit) = s.split_once(' ')?;
    let mul = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024f64.powi(4),
        "PiB" => 1024f64.powi(5),
        _ => return None,
    };
    num.parse::<f64>().ok().map(|n| n * mul)
}

/// Sorts rows by `col` (its natural direction, or the other one with
/// `reverse`); rows without a value go last either way, ties by key.
pub fn sort(rows: &mut [Row], col: Column, reverse: bool) {
    let asc = col.ascending_by_default() != reverse;
    rows.sort_by(|a, b| {
        let ord = if col == Column::Comm {
            let o = a.comm.cmp(&b.comm);
            if asc { o } else { o.reverse() }
        } else {
            match (col.numeric(a), col.numeric(b)) {
                (Some(x), Some(y)) => {
                    let o = x.total_cmp(&y);
                    if asc { o } else { o.reverse() }
                }
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            }
        };
        ord.then_with(|| a.key.cmp(&b.key))
    });
}

/// A filter typed by the user: a number matches that pid exactly, anything
/// else matches names containing it (case-insensitive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    text: String,
    lower: String,
    pid: Option<u32>,
}

impl Filter {
    pub fn new(text: &str) -> Filter {
        let text = text.trim().to_owned();
        Filter {
            lower: text.to_lowercase(),
            pid: text.parse().ok(),
            text,
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    pub fn matches(&self, r: &Row) -> bool {
        if self.text.is_empty() {
            return true;
        }
        if let Some(p) = self.pid
            && r.pid == Some(p)
        {
            return true;
        }
        r.comm.to_lowercase().contains(&self.lower)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{super::expo, *};

    const SCRAPE_A: &str = "\
iolens_io_bytes_total{pid=\"10\",comm=\"relay\",syscall=\"read\",path=\"socket_to_user\"} 1000
iolens_io_bytes_total{pid=\"10\",comm=\"relay\",syscall=\"write\",path=\"user_to_socket\"} 1000
iolens_io_bytes_total{pid=\"20\",comm=\"sender\",syscall=\"sendfile64\",path=\"file_to_socket\"} 0
iolens_io_bytes_total{pid=\"20\",comm=\"sender\",syscall=\"read\",path=\"unknown_to_user\"} 5
iolens_syscalls_total{pid=\"10\",comm=\"relay\",syscall=\"epoll_wait\",path=\"none\"} 10
iolens_syscalls_total{pid=\"10\",comm=\"relay\",syscall=\"epoll_wait\",path=\"error\"} 3
iolens_wait_timeouts_total{pid=\"10\",comm=\"relay\",syscall=\"epoll_wait\"} 2
iolens_wait_events_total{pid=\"10\",comm=\"relay\",syscall=\"epoll_wait\"} 16
iolens_wait_events_total{pid=\"10\",comm=\"relay\",syscall=\"poll\"} 99
iolens_process_syscalls_total{pid=\"10\",comm=\"relay\"} 100
iolens_context_switches_total{pid=\"10\",comm=\"relay\",kind=\"voluntary\"} 7
iolens_context_switches_total{pid=\"10\",comm=\"relay\",kind=\"involuntary\"} 1
iolens_cpu_seconds_total{pid=\"10\",comm=\"relay\"} 0.25
iolens_probe_attached{program=\"sys_exit\",tracepoint=\"raw_syscalls:sys_exit\"} 1
iolens_probe_attached{program=\"x\",tracepoint=\"y:z\"} 0
iolens_epoll_wait_seconds_bucket{comm=\"relay\",le=\"+Inf\"} 8
";

    const SCRAPE_B: &str = "\
iolens_io_bytes_total{pid=\"10\",comm=\"relay\",syscall=\"read\",path=\"socket_to_user\"} 3000
iolens_io_bytes_total{pid=\"10\",comm=\"relay\",syscall=\"write\",path=\"user_to_socket\"} 3000
iolens_io_bytes_total{pid=\"20\",comm=\"sender\",syscall=\"sendfile64\",path=\"file_to_socket\"} 4096
iolens_io_bytes_total{pid=\"20\",comm=\"sender\",syscall=\"read\",path=\"unknown_to_user\"} 5
iolens_io_bytes_total{pid=\"30\",comm=\"new\",syscall=\"splice\",path=\"file_to_pipe\"} 800
iolens_io_bytes_total{pid=\"30\",comm=\"new\",syscall=\"splice\",path=\"pipe_to_socket\"} 800
iolens_syscalls_total{pid=\"10\",comm=\"relay\",syscall=\"epoll_wait\",path=\"none\"} 20
iolens_syscalls_total{pid=\"10\",comm=\"relay\",syscall=\"epoll_wait\",path=\"error\"} 9
iolens_wait_timeouts_total{pid=\"10\",comm=\"relay\",syscall=\"epoll_wait\"} 4
iolens_wait_events_total{pid=\"10\",comm=\"relay\",syscall=\"epoll_wait\"} 40
iolens_process_syscalls_total{pid=\"10\",comm=\"relay\"} 300
iolens_context_switches_total{pid=\"10\",comm=\"relay\",kind=\"voluntary\"} 17
iolens_context_switches_total{pid=\"10\",comm=\"relay\",kind=\"involuntary\"} 2
iolens_cpu_seconds_total{pid=\"10\",comm=\"relay\"} 0.75
iolens_page_cache_lookup_pages_total{pid=\"20\",comm=\"sender\"} 100
iolens_page_cache_added_pages_total{pid=\"20\",comm=\"sender\"} 30
iolens_page_cache_dirtied_pages_total{pid=\"20\",comm=\"sender\"} 10
iolens_io_uring_enter_submitted_total{pid=\"20\",comm=\"sender\"} 64
iolens_syscalls_total{pid=\"20\",comm=\"sender\",syscall=\"io_uring_enter\",path=\"none\"} 4
iolens_block_bytes_total{pid=\"20\",comm=\"sender\",device=\"vda\",op=\"read\"} 8192
iolens_block_bytes_total{pid=\"20\",comm=\"sender\",device=\"vda\",op=\"write\"} 4096
iolens_block_bytes_total{pid=\"20\",comm=\"sender\",device=\"vda\",op=\"discard\"} 65536
iolens_block_unattributed_bytes_total{device=\"vda\",op=\"read\"} 999
iolens_offcpu_seconds_total{pid=\"10\",comm=\"relay\",syscall=\"epoll_wait\"} 1.5
iolens_offcpu_seconds_total{pid=\"10\",comm=\"relay\",syscall=\"futex\"} 0.5
iolens_probe_attached{program=\"sys_exit\",tracepoint=\"raw_syscalls:sys_exit\"} 1
iolens_probe_attached{program=\"x\",tracepoint=\"y:z\"} 0
";

    fn snap(text: &str, at: Instant) -> Snapshot {
        Snapshot::from_samples(&expo::parse(text).expect("parses"), GroupBy::Process, at)
    }

    fn row(v: &View, pid: u32) -> &Row {
        v.rows.iter().find(|r| r.pid == Some(pid)).expect("row")
    }

    #[test]
    fn counters_from_the_metrics_table() {
        let s = snap(SCRAPE_A, Instant::now());
        let (comm, c) = &s.rows[&GroupKey::Pid(10)];
        assert_eq!(comm, "relay");
        assert_eq!((c.user_in_bytes, c.user_out_bytes), (1000, 1000));
        assert_eq!(c.zero_copy_bytes(), 0);
        assert_eq!(
            (c.epoll_waits, c.epoll_timeouts, c.epoll_events),
            (10, 2, 16)
        );
        assert_eq!((c.voluntary_switches, c.involuntary_switches), (7, 1));
        assert_eq!(c.syscalls, 100);
        // unknown_to_user still went through user space.
        assert_eq!(s.rows[&GroupKey::Pid(20)].1.user_in_bytes, 5);
        assert_eq!(s.health.probes_attached, 1);
        assert_eq!(s.health.probes_total, 2);
        // The histogram has no pid: not a row.
        assert_eq!(s.rows.len(), 2);
        assert_eq!(s.iolens_samples, 16);
    }

    #[test]
    fn rates_over_the_interval() {
        let t0 = Instant::now();
        let a = snap(SCRAPE_A, t0);
        let b = snap(SCRAPE_B, t0 + Duration::from_secs(2));
        let v = View::between(&a, &b);
        assert_eq!(v.interval_seconds, 2.0);
        let relay = row(&v, 10);
        assert_eq!(relay.rates.user_bytes_per_sec, 2000.0);
        assert_eq!(relay.rates.zero_copy_bytes_per_sec, 0.0);
        assert_eq!(relay.rates.cpu_copies_per_byte, Some(2.0));
        assert_eq!(relay.rates.syscalls_per_sec, 100.0);
        assert_eq!(relay.rates.voluntary_switches_per_sec, 5.0);
        assert_eq!(relay.rates.involuntary_switches_per_sec, 0.5);
        assert_eq!(relay.rates.cpu_percent, 25.0);
        // 10 waits, 2 of them timeouts: 8 wakeups with 24 events.
        assert_eq!(relay.rates.epoll_wakeups_per_sec, 4.0);
        assert_eq!(relay.rates.events_per_wakeup, Some(3.0));
        assert_eq!(relay.rates.cache_hit_percent, None);
        assert_eq!(relay.rates.uring_ops_per_enter, None);
        // 2 s slept in syscalls over 2 s; no block requests of its own.
        assert_eq!(relay.rates.offcpu_percent, 100.0);
        assert_eq!(relay.rates.disk_bytes_per_sec, 0.0);

        let sender = row(&v, 20);
        assert_eq!(sender.rates.zero_copy_bytes_per_sec, 2048.0);
        assert_eq!(sender.rates.cpu_copies_per_byte, Some(0.0));
        // (100 - (30 - 10)) / 100.
        assert_eq!(sender.rates.cache_hit_percent, Some(80.0));
        assert_eq!(sender.rates.uring_ops_per_enter, Some(16.0));
        assert_eq!(sender.delta.user_in_bytes, 0);
        // Reads and writes, not the discard; the unattributed bytes are
        // nobody's row.
        assert_eq!(sender.rates.disk_bytes_per_sec, (8192.0 + 4096.0) / 2.0);
        assert_eq!(sender.rates.offcpu_percent, 0.0);
        assert_eq!(sender.total.user_in_bytes, 5);

        // First seen in this interval: counted from zero.
        let new = row(&v, 30);
        assert_eq!(new.rates.zero_copy_bytes_per_sec, 800.0);
        assert_eq!(new.rates.cpu_copies_per_byte, Some(0.0));

        assert_eq!(v.totals.user_bytes_per_sec, 2000.0);
        assert_eq!(v.totals.zero_copy_bytes_per_sec, 2048.0 + 800.0);
        assert_eq!(v.processes, 3);
    }

    #[test]
    fn a_reset_counter_counts_from_zero() {
        let t0 = Instant::now();
        let a = snap(SCRAPE_B, t0);
        let b = snap(SCRAPE_A, t0 + Duration::from_secs(1));
        let v = View::between(&a, &b);
        assert_eq!(row(&v, 10).delta.user_in_bytes, 1000);
        assert_eq!(row(&v, 10).delta.cpu_seconds, 0.25);
    }

    #[test]
    fn copy_model() {
        let c = |user_in, user_out, to_pipe, from_pipe, other| Counters {
            user_in_bytes: user_in,
            user_out_bytes: user_out,
            zero_copy_to_pipe_bytes: to_pipe,
            zero_copy_from_pipe_bytes: from_pipe,
            zero_copy_other_bytes: other,
            ..Counters::default()
        };
        // read + write: 2; mmap + write: 1; sendfile and splice: 0.
        assert_eq!(cpu_copies_per_byte(&c(100, 100, 0, 0, 0)), Some(2.0));
        assert_eq!(cpu_copies_per_byte(&c(0, 100, 0, 0, 0)), Some(1.0));
        assert_eq!(cpu_copies_per_byte(&c(0, 0, 0, 0, 100)), Some(0.0));
        assert_eq!(cpu_copies_per_byte(&c(0, 0, 100, 100, 0)), Some(0.0));
        // A reader only: each byte copied once into user space.
        assert_eq!(cpu_copies_per_byte(&c(100, 0, 0, 0, 0)), Some(1.0));
        // Half the response by read + write, half by sendfile.
        assert_eq!(cpu_copies_per_byte(&c(50, 50, 0, 0, 50)), Some(1.0));
        assert_eq!(cpu_copies_per_byte(&c(0, 0, 0, 0, 0)), None);
        // The README's hit ratio, clamped.
        let mut k = Counters {
            cache_lookup_pages: 10,
            cache_added_pages: 50,
            ..Counters::default()
        };
        assert_eq!(cache_hit_ratio(&k), Some(0.0));
        k.cache_dirtied_pages = 50;
        assert_eq!(cache_hit_ratio(&k), Some(1.0));
    }

    #[test]
    fn human_units() {
        assert_eq!(bytes(0.0), "0");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1024.0), "1.00 KiB");
        assert_eq!(bytes(100_000.0), "97.7 KiB");
        assert_eq!(bytes(1_048_576.0), "1.00 MiB");
        assert_eq!(bytes(1000.0 * 1_048_576.0), "1000 MiB");
        assert_eq!(bytes(5.0 * 1024f64.powi(3)), "5.00 GiB");
        for v in [700.0, 12_345.0, 1_000_000.0, 3.3e9] {
            let back = parse_bytes(&bytes(v)).expect("parses back");
            assert!((back - v).abs() / v < 0.01, "{v} -> {back}");
        }
        assert_eq!(count(0.0), "0");
        assert_eq!(count(0.5), "0.5");
        assert_eq!(count(12.34), "12");
        assert_eq!(count(999.0), "999");
        assert_eq!(count(1234.0), "1.23k");
        assert_eq!(count(45_600_000.0), "45.6M");
        for c in Column::ALL {
            assert!(c.header().len() <= c.width() as usize, "{c:?}");
        }
    }

    #[test]
    fn sorting_and_filtering() {
        let t0 = Instant::now();
        let v = View::between(
            &snap(SCRAPE_A, t0),
            &snap(SCRAPE_B, t0 + Duration::from_secs(1)),
        );
        let order = |col, rev| {
            let mut rows = v.rows.clone();
            sort(&mut rows, col, rev);
            rows.iter().filter_map(|r| r.pid).collect::<Vec<_>>()
        };
        assert_eq!(order(Column::User, false), [10, 20, 30]);
        assert_eq!(order(Column::ZeroCopy, false), [20, 30, 10]);
        assert_eq!(order(Column::ZeroCopy, true), [10, 30, 20]);
        assert_eq!(order(Column::Pid, false), [10, 20, 30]);
        assert_eq!(order(Column::Comm, false), [30, 10, 20]);
        // No value (no page-cache lookups) sorts last both ways.
        assert_eq!(order(Column::CacheHit, false)[0], 20);
        assert_eq!(order(Column::CacheHit, true)[0], 20);

        let f = Filter::new("REL");
        assert!(f.matches(row(&v, 10)) && !f.matches(row(&v, 20)));
        let f = Filter::new("20");
        assert!(f.matches(row(&v, 20)) && !f.matches(row(&v, 10)));
        assert!(Filter::new("").matches(row(&v, 30)));
    }
}
