//! Prometheus exposition of what the probes counted.
//!
//! The kernel keeps absolute per-key totals in LRU maps. [`Tracker`] turns a
//! sequence of map reads into counters that never go backwards: a key the LRU
//! evicted keeps its last total, and counting resumes on top of it when the
//! key comes back. Exited processes keep their series for a grace period
//! (`--exit-ttl`) so a scrape still sees a short-lived process's final
//! counts, then they are dropped from here and from the kernel maps.

mod aio;
mod block;
mod group;
mod health;
pub mod http;
mod io_uring;
mod page_cache;
mod process;
mod sched;
mod syscalls;
mod text;
mod waits;
pub mod web_config;

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

pub use group::GroupBy;
pub use io_uring::uring_op_name;
use iolens_common::{
    Accumulate, AioKey, AioValue, BLOCK_UNATTRIBUTED, BlockHistKey, BlockKey, BlockValue, COMM_LEN,
    Endpoint, OffcpuKey, OffcpuValue, ProcCounters, ProcInfo, StatKey, StatValue, UringKey,
    UringValue, WAIT_SLOTS, counter,
};
use text::Mode;
pub use text::{Family, Kind};

use crate::probes::{ProbeStatus, ProgramStats, Snapshot};

/// A kernel value whose fields only grow while its key lives.
pub trait Accum: Accumulate + Copy + Default {
    /// Sum of the fields: smaller than before means the key was re-created.
    fn marker(&self) -> u64;
}

impl Accum for StatValue {
    fn marker(&self) -> u64 {
        self.calls
    }
}

impl Accum for ProcCounters {
    fn marker(&self) -> u64 {
        self.syscalls
            + self.vcsw
            + self.ivcsw
            + self.cache_lookup_pages
            + self.cache_added_pages
            + self.cache_faults
            + self.cache_mapped_pages
            + self.cache_dirtied_pages
            + self.rings_created
    }
}

impl Accum for UringValue {
    fn marker(&self) -> u64 {
        self.submitted + self.completed
    }
}

impl Accum for OffcpuValue {
    fn marker(&self) -> u64 {
        self.calls
    }
}

impl Accum for BlockValue {
    fn marker(&self) -> u64 {
        self.bytes + self.requests
    }
}

impl Accum for AioValue {
    fn marker(&self) -> u64 {
        self.submitted + self.completed + self.cancelled
    }
}

/// The LRU maps whose fill and evictions are exported, with the kernel
/// counter of their inserts. Indices of Tracker's per-map arrays.
const MAPS: [(&str, u32); 7] = [
    ("SYSCALL_STATS", counter::SYSCALL_STATS_INSERTS),
    ("PROC_INFO", counter::PROC_INFO_INSERTS),
    ("PROC_COUNTERS", counter::PROC_COUNTERS_INSERTS),
    ("URING_STATS", counter::URING_STATS_INSERTS),
    ("SYSCALL_OFFCPU", counter::OFFCPU_INSERTS),
    ("BLOCK_STATS", counter::BLOCK_STATS_INSERTS),
    ("AIO_STATS", counter::AIO_STATS_INSERTS),
];

/// Totals for one kernel key.
#[derive(Debug, Clone, Copy, Default)]
struct Series<V> {
    /// Counts carried over from before the key was last evicted.
    base: V,
    /// The kernel's current value for the key (zero while it is absent).
    last: V,
}

impl<V: Accum> Series<V> {
    fn total(&self) -> V {
        let mut t = self.base;
        t.accumulate(&self.last);
        t
    }

    /// Carries the current value into the base: the key left the map.
    fn retire(&mut self) {
        self.base = self.total();
        self.last = V::default();
    }
}

/// Folds one map read into `series`: keys absent from the read were evicted
/// (or forgotten) and keep what they had counted; a value smaller than the
/// last one was evicted and re-created between two reads. `read` is sorted
/// here, in place, so the two walk in key order without a scratch map:
/// the per-tick path allocates only for keys seen for the first time.
/// `changed` is called for every key whose counts moved.
fn fold<K: Ord + Copy, V: Accum>(
    series: &mut BTreeMap<K, Series<V>>,
    read: &mut [(K, V)],
    mut changed: impl FnMut(&K),
) {
    read.sort_unstable_by_key(|(k, _)| *k);
    let mut fresh = Vec::new();
    let mut incoming = read.iter().peekable();
    for (key, s) in series.iter_mut() {
        while let Some((k, v)) = incoming.next_if(|(k, _)| k < key) {
            fresh.push((*k, *v));
        }
        match incoming.next_if(|(k, _)| k == key) {
            Some((_, v)) => {
                if v.marker() < s.last.marker() {
                    s.retire();
                }
                if v.marker() != s.last.marker() {
                    changed(key);
                }
                s.last = *v;
            }
            None => s.retire(),
        }
    }
    fresh.extend(incoming.copied());
    for (key, v) in fresh {
        changed(&key);
        series.insert(
            key,
            Series {
                base: V::default(),
                last: v,
            },
        );
    }
}

/// The keys of one process in `series`, from `first`, its smallest key
/// (the maps are keyed by tgid first).
fn keys_of<K: Ord + Copy, V>(
    series: &BTreeMap<K, V>,
    first: K,
    tgid: impl Fn(&K) -> u32,
) -> Vec<K> {
    let t = tgid(&first);
    series
        .range(first..)
        .take_while(|(k, _)| tgid(k) == t)
        .map(|(k, _)| *k)
        .collect()
}

#[derive(Debug, Clone)]
struct Process {
    comm: String,
    /// cgroup v2 path, read once when the process is first seen (only with
    /// the label on).
    cgroup: Option<String>,
    /// CLOCK_MONOTONIC ns of the last read that saw its counts change.
    active_ns: u64,
    /// CLOCK_MONOTONIC ns at which we learned it exited.
    exited_ns: Option<u64>,
    /// Its group (--group-by), named once from `cgroup`.
    group: Option<group::GroupLabels>,
}

/// Accumulates map snapshots into monotonic per-process totals.
#[derive(Debug)]
pub struct Tracker {
    series: BTreeMap<StatKey, Series<StatValue>>,
    pseries: BTreeMap<u32, Series<ProcCounters>>,
    useries: BTreeMap<UringKey, Series<UringValue>>,
    oseries: BTreeMap<OffcpuKey, Series<OffcpuValue>>,
    aseries: BTreeMap<AioKey, Series<AioValue>>,
    wait_hist: Vec<([u8; COMM_LEN], [u64; WAIT_SLOTS])>,
    bseries: BTreeMap<BlockKey, Series<BlockValue>>,
    block_hist: Vec<(BlockHistKey, [u64; WAIT_SLOTS])>,
    /// dev_t -> block device name (from /sys/dev/block), looked up once.
    devices: BTreeMap<u32, String>,
    procs: HashMap<u32, Process>,
    exit_ttl: Duration,
    /// Keys this process removed itself (not evictions), per [`MAPS`].
    forgotten: [u64; 7],
    /// Derived LRU evictions, per [`MAPS`].
    evictions: [u64; 7],
    /// Entries at the last read, per [`MAPS`].
    live: [usize; 7],
    counters: [u64; counter::COUNT as usize],
    cgroup_label: bool,
    max_processes: usize,
    /// Processes dropped to stay under max_processes.
    processes_evicted: u64,
    /// Reused between updates: tgids whose counts moved.
    scratch_active: Vec<u32>,
    /// --group-by and what it keeps.
    groups: group::Groups,
}

/// What to delete from the kernel maps after a refresh.
#[derive(Debug, Default)]
pub struct Expired {
    pub tgid: u32,
    pub keys: Vec<StatKey>,
    pub uring_keys: Vec<UringKey>,
    pub offcpu_keys: Vec<OffcpuKey>,
    pub block_keys: Vec<BlockKey>,
    pub aio_keys: Vec<AioKey>,
}

/// Reads CLOCK_MONOTONIC, the clock `bpf_ktime_get_ns` uses.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn comm_string(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// The process's cgroup v2 path from /proc/PID/cgroup (`0::/path`).
fn read_cgroup(tgid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{tgid}/cgroup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn proc_alive(tgid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{tgid}")).exists()
}

impl Tracker {
    pub fn new(exit_ttl: Duration) -> Tracker {
        Tracker {
            series: BTreeMap::new(),
            pseries: BTreeMap::new(),
            useries: BTreeMap::new(),
            oseries: BTreeMap::new(),
            aseries: BTreeMap::new(),
            wait_hist: Vec::new(),
            bseries: BTreeMap::new(),
            block_hist: Vec::new(),
            devices: BTreeMap::new(),
            procs: HashMap::new(),
            exit_ttl,
            forgotten: [0; 7],
            evictions: [0; 7],
            live: [0; 7],
            counters: [0; counter::COUNT as usize],
            cgroup_label: false,
            max_processes: usize::MAX,
            processes_evicted: 0,
            scratch_active: Vec::new(),
            groups: group::Groups::new(GroupBy::Pid, usize::MAX),
        }
    }

    /// Sums per-process series into groups (see [`GroupBy`]), at most
    /// `max_groups` of them.
    pub fn with_group_by(mut self, by: GroupBy, max_groups: usize) -> Tracker {
        self.groups = group::Groups::new(by, max_groups);
        self
    }

    pub fn with_cgroup_label(mut self, on: bool) -> Tracker {
        self.cgroup_label = on;
        self
    }

    pub fn with_max_processes(mut self, max: usize) -> Tracker {
        self.max_processes = max.max(1);
        self
    }

    /// Folds one read of the maps in. `now_ns` is CLOCK_MONOTONIC. Returns
    /// the processes whose grace period ended, for the caller to delete from
    /// the kernel maps (and then to report with [`Tracker::forgot`]).
    pub fn update(&mut self, snap: &mut Snapshot, now_ns: u64) -> Vec<Expired> {
        let mut active = std::mem::take(&mut self.scratch_active);
        active.clear();
        // A map the background refresh did not read again holds what was
        // folded last time: folding it again would change nothing.
        if !snap.unchanged[0] {
            fold(&mut self.series, &mut snap.stats, |k| active.push(k.tgid));
        }
        if !snap.unchanged[1] {
            fold(&mut self.pseries, &mut snap.pstats, |k| active.push(*k));
        }
        if !snap.unchanged[2] {
            fold(&mut self.useries, &mut snap.uring, |k| active.push(k.tgid));
        }
        if !snap.unchanged[3] {
            fold(&mut self.oseries, &mut snap.offcpu, |k| active.push(k.tgid));
        }
        if !snap.unchanged[4] {
            let devices = &mut self.devices;
            fold(&mut self.bseries, &mut snap.block, |k| {
                // Named once, when a key first counts (a readlink in /sys).
                devices
                    .entry(k.dev)
                    .or_insert_with(|| block::device_name(k.dev));
                if k.tgid != BLOCK_UNATTRIBUTED {
                    active.push(k.tgid);
                }
            });
        }
        if !snap.unchanged[5] {
            fold(&mut self.aseries, &mut snap.aio, |k| active.push(k.tgid));
        }
        self.wait_hist.clone_from(&snap.wait_hist);
        self.block_hist.clone_from(&snap.block_hist);

        for (tgid, info) in &snap.procs {
            self.observe_proc(*tgid, info, now_ns);
        }
        // Series whose process the kernel table lost (LRU) still need a name
        // and an exit time; only they are looked up in /proc.
        let Tracker {
            series,
            pseries,
            useries,
            oseries,
            bseries,
            aseries,
            procs,
            ..
        } = self;
        let tgids = series
            .keys()
            .map(|k| k.tgid)
            .chain(pseries.keys().copied())
            .chain(useries.keys().map(|k| k.tgid))
            .chain(oseries.keys().map(|k| k.tgid))
            .chain(aseries.keys().map(|k| k.tgid))
            // The unattributed owner is no process.
            .chain(
                bseries
                    .keys()
                    .map(|k| k.tgid)
                    .filter(|t| *t != BLOCK_UNATTRIBUTED),
            );
        // Keys come in tgid order: look each process up once.
        let mut last = None;
        for tgid in tgids {
            if last == Some(tgid) {
                continue;
            }
            last = Some(tgid);
            procs.entry(tgid).or_insert_with(|| {
                let comm = std::fs::read_to_string(format!("/proc/{tgid}/comm"))
                    .map(|s| s.trim_end().to_owned())
                    .unwrap_or_else(|_| "unknown".to_owned());
                Process {
                    comm,
                    cgroup: None,
                    active_ns: now_ns,
                    exited_ns: None,
                    group: None,
                }
            });
        }
        for tgid in &active {
            if let Some(p) = self.procs.get_mut(tgid) {
                p.active_ns = now_ns;
            }
        }
        self.scratch_active = active;
        let grouped = self.groups.by != GroupBy::Pid;
        if self.cgroup_label || grouped {
            for (tgid, p) in self.procs.iter_mut() {
                if p.cgroup.is_none() {
                    p.cgroup = Some(read_cgroup(*tgid));
                }
                if grouped
                    && p.group.is_none()
                    && let Some(c) = &p.cgroup
                {
                    p.group = Some(self.groups.assign(c));
                }
            }
        }
        // The kernel stamps the exits of the processes in its table; the
        // others are checked in /proc (procs is keyed by tgid and snap.procs
        // came from a hash map: sort it once to search it).
        snap.procs.sort_unstable_by_key(|(t, _)| *t);
        for (tgid, p) in self.procs.iter_mut() {
            if p.exited_ns.is_none()
                && snap.procs.binary_search_by_key(tgid, |(t, _)| *t).is_err()
                && !proc_alive(*tgid)
            {
                p.exited_ns = Some(now_ns);
            }
        }

        self.counters = snap.counters;
        self.live = [
            snap.stats.len(),
            snap.procs.len(),
            snap.pstats.len(),
            snap.uring.len(),
            snap.offcpu.len(),
            snap.block.len(),
            snap.aio.len(),
        ];
        // Every key the kernel inserted is live, was removed by us, or was
        // evicted. Reads race with inserts, so never let it go backwards.
        for (i, (_, insert_counter)) in MAPS.iter().enumerate() {
            let derived = self.counters[*insert_counter as usize]
                .saturating_sub(self.live[i] as u64 + self.forgotten[i]);
            self.evictions[i] = self.evictions[i].max(derived);
        }

        let ttl = self.exit_ttl.as_nanos() as u64;
        let mut doomed: Vec<u32> = self
            .procs
            .iter()
            // The leader exiting does not end a process whose other threads
            // run on; /proc says whether the thread group is still there.
            .filter(|(tgid, p)| {
                p.exited_ns
                    .is_some_and(|e| now_ns.saturating_sub(e) >= ttl && !proc_alive(**tgid))
            })
            .map(|(tgid, _)| *tgid)
            .collect();
        let over = self
            .procs
            .len()
            .saturating_sub(doomed.len())
            .saturating_sub(self.max_processes);
        if over > 0 {
            let mut by_age: Vec<(u64, u32)> = self
                .procs
                .iter()
                .filter(|(t, _)| !doomed.contains(t))
                .map(|(t, p)| (p.active_ns, *t))
                .collect();
            by_age.sort_unstable();
            doomed.extend(by_age.iter().take(over).map(|(_, t)| *t));
            self.processes_evicted += over as u64;
        }
        let mut expired = Vec::new();
        for tgid in &doomed {
            // Every map is keyed by tgid first: a range walk per map, not a
            // scan of every key (per expiring process, at 10,000 processes).
            let t = *tgid;
            let keys = keys_of(
                &self.series,
                StatKey {
                    tgid: t,
                    syscall: 0,
                    src: 0,
                    dst: 0,
                    failed: 0,
                },
                |k| k.tgid,
            );
            let uring_keys = keys_of(
                &self.useries,
                UringKey {
                    tgid: t,
                    opcode: 0,
                    _pad: [0; 3],
                },
                |k| k.tgid,
            );
            let offcpu_keys = keys_of(&self.oseries, OffcpuKey { tgid: t, nr: 0 }, |k| k.tgid);
            let block_keys = keys_of(
                &self.bseries,
                BlockKey {
                    tgid: t,
                    dev: 0,
                    op: 0,
                    _pad: [0; 7],
                },
                |k| k.tgid,
            );
            let aio_keys = keys_of(
                &self.aseries,
                AioKey {
                    tgid: t,
                    opcode: 0,
                    src: 0,
                    dst: 0,
                    _pad: 0,
                },
                |k| k.tgid,
            );
            expired.push(Expired {
                tgid: *tgid,
                keys,
                uring_keys,
                offcpu_keys,
                block_keys,
                aio_keys,
            });
        }
        expired
    }

    fn observe_proc(&mut self, tgid: u32, info: &ProcInfo, now_ns: u64) {
        let p = self.procs.entry(tgid).or_insert_with(|| Process {
            comm: comm_string(&info.comm),
            cgroup: None,
            active_ns: now_ns,
            exited_ns: None,
            group: None,
        });
        // Compared as bytes: no String per process per read.
        let raw = &info.comm[..info.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN)];
        if p.comm.as_bytes() != raw {
            p.comm = comm_string(&info.comm);
        }
        if info.exit_ns != 0 {
            // The kernel's stamp is exact; ours is when we noticed.
            let stamp = info.exit_ns.min(now_ns);
            p.exited_ns = Some(p.exited_ns.map_or(stamp, |e| e.min(stamp)));
        }
    }

    /// Drops an expired process's series after the caller deleted its keys
    /// from the kernel maps.
    pub fn forgot(&mut self, expired: &Expired) {
        // A series whose last read was zero had no kernel key to delete.
        for key in &expired.keys {
            if self.series.remove(key).is_some_and(|s| s.last.marker() > 0) {
                self.forgotten[0] += 1;
            }
        }
        if self.procs.remove(&expired.tgid).is_some() {
            self.forgotten[1] += 1;
        }
        if self
            .pseries
            .remove(&expired.tgid)
            .is_some_and(|s| s.last.marker() > 0)
        {
            self.forgotten[2] += 1;
        }
        for key in &expired.uring_keys {
            if self
                .useries
                .remove(key)
                .is_some_and(|s| s.last.marker() > 0)
            {
                self.forgotten[3] += 1;
            }
        }
        for key in &expired.offcpu_keys {
            if self
                .oseries
                .remove(key)
                .is_some_and(|s| s.last.marker() > 0)
            {
                self.forgotten[4] += 1;
            }
        }
        for key in &expired.block_keys {
            if self
                .bseries
                .remove(key)
                .is_some_and(|s| s.last.marker() > 0)
            {
                self.forgotten[5] += 1;
            }
        }
        for key in &expired.aio_keys {
            if self
                .aseries
                .remove(key)
                .is_some_and(|s| s.last.marker() > 0)
            {
                self.forgotten[6] += 1;
            }
        }
    }

    pub fn processes(&self) -> usize {
        self.procs.len()
    }

    /// Per-process counters (for `compare`), `syscalls` being every
    /// syscall of the process.
    pub fn proc_totals(&self, tgid: u32) -> ProcCounters {
        let mut t = self
            .pseries
            .get(&tgid)
            .map(Series::total)
            .unwrap_or_default();
        t.syscalls += self
            .series
            .iter()
            .filter(|(k, _)| k.tgid == tgid)
            .map(|(_, s)| s.total().calls)
            .sum::<u64>();
        t
    }

    /// io_uring totals of one process, by opcode (for `compare`).
    pub fn uring_totals(&self, tgid: u32) -> BTreeMap<u8, UringValue> {
        self.useries
            .iter()
            .filter(|(k, _)| k.tgid == tgid)
            .map(|(k, s)| (k.opcode, s.total()))
            .collect()
    }

    /// Block totals of one process, by (device, op) (for `compare`).
    pub fn block_totals(&self, tgid: u32) -> BTreeMap<(u32, u8), BlockValue> {
        self.bseries
            .iter()
            .filter(|(k, _)| k.tgid == tgid)
            .map(|(k, s)| ((k.dev, k.op), s.total()))
            .collect()
    }

    /// Linux native AIO totals of one process, all opcodes (for `compare`).
    pub fn aio_totals(&self, tgid: u32) -> AioValue {
        let mut t = AioValue::default();
        for (_, s) in self.aseries.iter().filter(|(k, _)| k.tgid == tgid) {
            t.accumulate(&s.total());
        }
        t
    }

    /// Totals for one process, by syscall (for tests and `compare`).
    pub fn totals_for(&self, tgid: u32) -> BTreeMap<StatKey, StatValue> {
        self.series
            .iter()
            .filter(|(k, _)| k.tgid == tgid)
            .map(|(k, s)| (*k, s.total()))
            .collect()
    }
}

/// Self-description of the agent for the exposition.
pub struct SelfInfo<'a> {
    pub probes: &'a [ProbeStatus],
    pub families: &'a [crate::probes::FamilyReport],
    pub program_stats: &'a [(String, ProgramStats)],
    pub stats_capacity: u32,
    pub procs_capacity: u32,
    /// The metrics endpoint's own counters (none when no endpoint serves).
    pub http: Option<&'a http::HttpStats>,
}

/// `file_to_user`, `pipe_to_socket`, …: the `path` label.
pub fn path_label(src: Endpoint, dst: Endpoint) -> String {
    format!("{}_to_{}", src.name(), dst.name())
}

/// How a per-process counter family reads its value from a process's
/// totals.
type ProcGet = fn(&ProcCounters) -> f64;

impl Tracker {
    /// Builds every metric family, family by family: per-process counters
    /// and the agent's report on itself. Families without a series are
    /// left out.
    pub fn families(&self, me: &SelfInfo<'_>) -> Vec<Family<'_>> {
        let mode = if self.groups.by == GroupBy::Pid {
            Mode::PerProcess
        } else {
            Mode::Grouped(&self.groups.folded)
        };
        let mut all = self.per_process_families(mode);
        for f in &mut all {
            f.finish();
        }
        all.extend(self.health_families(me));
        all.extend(self.group_families());
        all.into_iter().filter(|f| !f.is_empty()).collect()
    }

    /// The families with per-process series (and the by-comm histogram),
    /// per process, grouped, or only some processes' (`mode`).
    fn per_process_families<'m>(&self, mode: Mode<'m>) -> Vec<Family<'m>> {
        let procs = self.proc_counters();
        let mut all = self.syscall_families(mode);
        all.extend(self.process_families(&procs, mode));
        all.extend(self.sched_families(&procs, mode));
        all.extend(self.wait_families(mode));
        all.extend(self.page_cache_families(&procs, mode));
        all.extend(self.io_uring_families(&procs, mode));
        all.extend(self.block_families(mode));
        all.extend(self.aio_families(mode));
        all
    }

    /// Every process's totals from PROC_COUNTERS, with the syscalls
    /// accounted per syscall in SYSCALL_STATS added back into `syscalls`
    /// (the kernel keeps each syscall in one of the two; a process may
    /// have only one). In tgid order.
    fn proc_counters(&self) -> Vec<(u32, ProcCounters)> {
        let mut out: Vec<(u32, ProcCounters)> = self
            .pseries
            .iter()
            .map(|(tgid, s)| (*tgid, s.total()))
            .collect();
        // Both maps are in tgid order: merge the syscall counts in.
        let mut i = 0;
        let mut extra = Vec::new();
        let mut series = self.series.iter().peekable();
        while let Some((key, _)) = series.peek() {
            let tgid = key.tgid;
            let mut calls = 0;
            while let Some((_, s)) = series.next_if(|(k, _)| k.tgid == tgid) {
                calls += s.total().calls;
            }
            while i < out.len() && out[i].0 < tgid {
                i += 1;
            }
            match out.get_mut(i) {
                Some((t, c)) if *t == tgid => c.syscalls += calls,
                _ => extra.push((
                    tgid,
                    ProcCounters {
                        syscalls: calls,
                        ..ProcCounters::default()
                    },
                )),
            }
        }
        if !extra.is_empty() {
            out.extend(extra);
            out.sort_unstable_by_key(|(t, _)| *t);
        }
        out
    }

    /// One counter family per (name, help, value) spec, a series per
    /// process; `skip_zero`: no series for a process whose value is 0.
    fn proc_counter_families<'m>(
        &self,
        procs: &[(u32, ProcCounters)],
        specs: &[(&'static str, &'static str, ProcGet)],
        skip_zero: bool,
        mode: Mode<'m>,
    ) -> Vec<Family<'m>> {
        specs
            .iter()
            .map(|(name, help, get)| {
                let mut f = Family::new(name, help, Kind::Counter).with_mode(mode);
                for (tgid, t) in procs {
                    let v = get(t);
                    if skip_zero && v == 0.0 {
                        continue;
                    }
                    f.proc_sample(self, *tgid, &[], v);
                }
                f
            })
            .collect()
    }
}

/// Renders families in the Prometheus text format.
pub fn encode(families: &[Family<'_>]) -> Vec<u8> {
    text::encode(families)
}

#[cfg(test)]
mod tests {
    use iolens_common::Syscall;

    use super::*;

    fn key(tgid: u32, sc: Syscall) -> StatKey {
        StatKey {
            tgid,
            syscall: sc as u8,
            src: Endpoint::File as u8,
            dst: Endpoint::User as u8,
            failed: 0,
        }
    }

    fn val(calls: u64, bytes: u64) -> StatValue {
        StatValue {
            calls,
            bytes,
            ..StatValue::default()
        }
    }

    fn snap(stats: &[(StatKey, StatValue)], inserts: u64) -> Snapshot {
        let mut s = Snapshot {
            stats: stats.to_vec(),
            ..Default::default()
        };
        s.counters[counter::SYSCALL_STATS_INSERTS as usize] = inserts;
        s
    }

    /// Our own pid is alive for the duration of the test, so exit handling
    /// does not interfere with the counter logic under test.
    fn me() -> u32 {
        std::process::id()
    }

    /// Every family the agent can export is in the README's metrics table,
    /// and every family the table names is exported: a snapshot with every
    /// kind of kernel data and every self-metric turned on.
    #[test]
    fn the_readme_metrics_table_names_every_exported_family() {
        let readme = include_str!("../../../README.md");
        let table = readme
            .split("### Metrics")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("the README has a Metrics section");
        let mut documented = std::collections::BTreeSet::new();
        for row in table.lines().filter(|l| l.starts_with("| `iolens_")) {
            let first = row.split('|').nth(1).unwrap_or_default();
            for name in first.split('`').filter(|w| w.starts_with("iolens_")) {
                documented.insert(name.to_owned());
            }
        }
        let pid = me();
        let mut s = snap(&[(key(pid, Syscall::Read), val(1, 1))], 1);
        s.pstats.push((
            pid,
            ProcCounters {
                syscalls: 1,
                rings_created: 1,
                ..ProcCounters::default()
            },
        ));
        s.stats.push((
            StatKey {
                syscall: Syscall::EpollWait as u8,
                ..key(pid, Syscall::Read)
            },
            StatValue {
                calls: 2,
                bytes: 3,
                zero: 1,
                scanned: 0,
                errors: 0,
            },
        ));
        s.stats.push((
            StatKey {
                syscall: Syscall::IoUringEnter as u8,
                ..key(pid, Syscall::Read)
            },
            val(1, 2),
        ));
        s.stats.push((
            StatKey {
                syscall: Syscall::Poll as u8,
                ..key(pid, Syscall::Read)
            },
            StatValue {
                calls: 1,
                scanned: 4,
                ..StatValue::default()
            },
        ));
        s.stats.push((
            StatKey {
                syscall: Syscall::Read as u8,
                failed: 1,
                ..key(pid, Syscall::Read)
            },
            StatValue {
                calls: 1,
                errors: 1,
                ..StatValue::default()
            },
        ));
        s.uring.push((
            UringKey {
                tgid: pid,
                opcode: 1,
                _pad: [0; 3],
            },
            UringValue {
                submitted: 1,
                completed: 1,
                failed: 1,
                bytes: 1,
            },
        ));
        s.offcpu.push((
            OffcpuKey { tgid: pid, nr: 202 },
            OffcpuValue {
                ns: 1_000,
                calls: 1,
            },
        ));
        for tgid in [pid, BLOCK_UNATTRIBUTED] {
            s.block.push((
                BlockKey {
                    tgid,
                    dev: 7 << 20,
                    op: iolens_common::BLOCK_OP_READ,
                    _pad: [0; 7],
                },
                BlockValue {
                    bytes: 4096,
                    requests: 1,
                },
            ));
        }
        s.aio.push((
            AioKey {
                tgid: pid,
                opcode: iolens_common::IOCB_CMD_PREAD,
                src: Endpoint::File as u8,
                dst: Endpoint::User as u8,
                _pad: 0,
            },
            AioValue {
                submitted: 1,
                completed: 1,
                failed: 1,
                bytes: 1,
                cancelled: 1,
            },
        ));
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"test");
        let mut hist = [0u64; iolens_common::WAIT_SLOTS];
        hist[0] = 1;
        hist[iolens_common::WAIT_SLOT_COUNT] = 1;
        s.wait_hist.push((comm, hist));
        s.block_hist.push((
            BlockHistKey {
                comm,
                op: iolens_common::BLOCK_OP_READ,
                _pad: [0; 7],
            },
            hist,
        ));
        s.procs.push((pid, ProcInfo { comm, exit_ns: 0 }));
        for c in 0..counter::COUNT as usize {
            s.counters[c] += 1;
        }
        let mut t = Tracker::new(Duration::from_secs(60));
        // The same data grouped (--group-by), for the families only
        // grouped runs export.
        let mut grouped = Tracker::new(Duration::from_secs(60)).with_group_by(GroupBy::Cgroup, 4);
        grouped.update(&mut s, 0);
        t.update(&mut s, 0);
        let probes = crate::probes::PROBES
            .iter()
            .map(|spec| ProbeStatus {
                spec,
                attached: true,
                choice: crate::probes::plan::Choice {
                    variant: Some(&spec.variants[0]),
                    passed_over: Vec::new(),
                },
                error: None,
                verified_insns: Some(1),
                stack: Some(crate::probes::verifier::StackFigures {
                    own: 8,
                    combined: 32,
                    chain: vec![spec.variants[0].program.to_owned()],
                }),
            })
            .collect::<Vec<_>>();
        let choices: Vec<_> = probes.iter().map(|p| p.choice.clone()).collect();
        let families = crate::probes::plan::report(&choices, &Default::default());
        let program_stats = vec![("iolens_sys_exit".to_owned(), ProgramStats::default())];
        let http_stats = http::HttpStats::default();
        let me = SelfInfo {
            probes: &probes,
            families: &families,
            program_stats: &program_stats,
            stats_capacity: 16,
            procs_capacity: 16,
            http: Some(&http_stats),
        };
        let exported: std::collections::BTreeSet<String> = t
            .families(&me)
            .iter()
            .chain(grouped.families(&me).iter())
            .map(|f| f.name().to_owned())
            .collect();
        let missing: Vec<_> = exported.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&exported).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "exported but not in the README's table: {missing:?}; in the table but never exported: {stale:?}"
        );
    }

    #[test]
    fn counts_survive_eviction_and_recreation() {
        let mut t = Tracker::new(Duration::from_secs(60));
        let k = key(me(), Syscall::Read);
        t.update(&mut snap(&[(k, val(10, 100))], 1), 0);
        // Evicted: absent from the read.
        t.update(&mut snap(&[], 1), 0);
        assert_eq!(t.totals_for(me())[&k], val(10, 100));
        assert_eq!(t.evictions[0], 1);
        // Re-created and counting again from zero.
        t.update(&mut snap(&[(k, val(3, 30))], 2), 0);
        assert_eq!(t.totals_for(me())[&k], val(13, 130));
        // Evicted and re-created between two reads: the value went down.
        t.update(&mut snap(&[(k, val(1, 5))], 3), 0);
        assert_eq!(t.totals_for(me())[&k], val(14, 135));
    }

    #[test]
    fn exited_processes_expire_after_the_ttl_only() {
        let mut t = Tracker::new(Duration::from_secs(60));
        // A tgid that does not exist: pid_max is far below this.
        let dead = 4_000_000_000;
        let k = key(dead, Syscall::Write);
        let mut s = snap(&[(k, val(1, 1))], 1);
        let mut comm = [0u8; 16];
        comm[..2].copy_from_slice(b"dd");
        s.procs.push((
            dead,
            ProcInfo {
                comm,
                exit_ns: 1_000_000_000,
            },
        ));
        assert!(t.update(&mut s, 2_000_000_000).is_empty());
        let fams = t.families(&SelfInfo {
            probes: &[],
            families: &[],
            program_stats: &[],
            stats_capacity: 1,
            procs_capacity: 1,
            http: None,
        });
        let text = String::from_utf8(encode(&fams)).expect("utf8");
        assert!(
            text.contains(r#"iolens_syscalls_total{pid="4000000000",comm="dd",syscall="write",path="file_to_user"} 1"#),
            "{text}"
        );
        let expired = t.update(&mut s, 61_000_000_000);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].keys, vec![k]);
        t.forgot(&expired[0]);
        assert!(t.totals_for(dead).is_empty());
        assert_eq!(t.processes(), 0);
    }

    #[test]
    fn max_processes_evicts_the_least_recently_active() {
        let mut t = Tracker::new(Duration::from_secs(60)).with_max_processes(2);
        // Three live pids: ours, our parent's, and init.
        let (a, b, c) = (me(), std::os::unix::process::parent_id(), 1);
        let mut s1 = snap(&[(key(a, Syscall::Read), val(1, 1))], 1);
        assert!(t.update(&mut s1, 10).is_empty());
        let mut s2 = snap(
            &[
                (key(a, Syscall::Read), val(1, 1)),
                (key(b, Syscall::Read), val(1, 1)),
            ],
            2,
        );
        assert!(t.update(&mut s2, 20).is_empty());
        // c arrives; a has not changed since t=10: it goes.
        let mut s3 = snap(
            &[
                (key(a, Syscall::Read), val(1, 1)),
                (key(b, Syscall::Read), val(2, 2)),
                (key(c, Syscall::Read), val(1, 1)),
            ],
            3,
        );
        let gone = t.update(&mut s3, 30);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].tgid, a);
        t.forgot(&gone[0]);
        assert_eq!(t.processes(), 2);
        assert_eq!(t.processes_evicted, 1);
    }

    #[test]
    fn path_labels() {
        assert_eq!(
            path_label(Endpoint::File, Endpoint::Socket),
            "file_to_socket"
        );
        assert_eq!(path_label(Endpoint::User, Endpoint::Pipe), "user_to_pipe");
    }
}
