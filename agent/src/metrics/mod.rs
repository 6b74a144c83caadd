//! Prometheus exposition of what the probes counted.
//!
//! The kernel keeps absolute per-key totals in LRU maps. [`Tracker`] turns a
//! sequence of map reads into counters that never go backwards: a key the LRU
//! evicted keeps its last total, and counting resumes on top of it when the
//! key comes back. Exited processes keep their series for a grace period
//! (`--exit-ttl`) so a scrape still sees a short-lived process's final
//! counts, then they are dropped from here and from the kernel maps.

pub mod http;

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use iolens_common::{Endpoint, ProcInfo, StatKey, StatValue, Syscall, counter};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

use crate::probes::{ProbeStatus, ProgramStats, Snapshot};

/// Totals for one kernel key.
#[derive(Debug, Clone, Copy, Default)]
struct Series {
    /// Counts carried over from before the key was last evicted.
    base: StatValue,
    /// The kernel's current value for the key (0 while it is absent).
    last: StatValue,
}

impl Series {
    fn total(&self) -> StatValue {
        StatValue {
            calls: self.base.calls + self.last.calls,
            errors: self.base.errors + self.last.errors,
            bytes: self.base.bytes + self.last.bytes,
        }
    }

    /// Carries the current value into the base: the key left the map.
    fn retire(&mut self) {
        self.base = self.total();
        self.last = StatValue::default();
    }
}

#[derive(Debug, Clone)]
struct Process {
    comm: String,
    /// CLOCK_MONOTONIC ns at which we learned it exited.
    exited_ns: Option<u64>,
}

/// Accumulates map snapshots into monotonic per-process totals.
#[derive(Debug)]
pub struct Tracker {
    series: BTreeMap<StatKey, Series>,
    procs: HashMap<u32, Process>,
    exit_ttl: Duration,
    /// STATS keys this process removed itself (not evictions).
    forgotten_keys: u64,
    evictions: u64,
    counters: [u64; counter::COUNT as usize],
    live_stats_entries: usize,
    live_proc_entries: usize,
}

/// What to delete from the kernel maps after a refresh.
#[derive(Debug, Default)]
pub struct Expired {
    pub tgid: u32,
    pub keys: Vec<StatKey>,
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

fn proc_alive(tgid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{tgid}")).exists()
}

impl Tracker {
    pub fn new(exit_ttl: Duration) -> Tracker {
        Tracker {
            series: BTreeMap::new(),
            procs: HashMap::new(),
            exit_ttl,
            forgotten_keys: 0,
            evictions: 0,
            counters: [0; counter::COUNT as usize],
            live_stats_entries: 0,
            live_proc_entries: 0,
        }
    }

    /// Folds one read of the maps in. `now_ns` is CLOCK_MONOTONIC. Returns
    /// the processes whose grace period ended, for the caller to delete from
    /// the kernel maps (and then to report with [`Tracker::forgot`]).
    pub fn update(&mut self, snap: &Snapshot, now_ns: u64) -> Vec<Expired> {
        // Keys absent from this read were evicted (or forgotten) since the
        // last one: keep what they had counted.
        let mut seen: HashMap<StatKey, StatValue> = snap.stats.iter().copied().collect();
        for (key, series) in self.series.iter_mut() {
            match seen.remove(key) {
                Some(v) => {
                    // Smaller than before: evicted and re-created between
                    // two reads; the old total is the base.
                    if v.calls < series.last.calls {
                        series.retire();
                    }
                    series.last = v;
                }
                None => series.retire(),
            }
        }
        for (key, v) in seen {
            self.series.insert(
                key,
                Series {
                    base: StatValue::default(),
                    last: v,
                },
            );
        }

        for (tgid, info) in &snap.procs {
            self.observe_proc(*tgid, info, now_ns);
        }
        // Series whose process the kernel table lost (LRU) still need a name
        // and an exit time.
        let tgids: Vec<u32> = self.series.keys().map(|k| k.tgid).collect();
        for tgid in tgids {
            self.procs.entry(tgid).or_insert_with(|| {
                let comm = std::fs::read_to_string(format!("/proc/{tgid}/comm"))
                    .map(|s| s.trim_end().to_owned())
                    .unwrap_or_else(|_| "unknown".to_owned());
                Process {
                    comm,
                    exited_ns: None,
                }
            });
        }
        for (tgid, p) in self.procs.iter_mut() {
            if p.exited_ns.is_none() && !proc_alive(*tgid) {
                p.exited_ns = Some(now_ns);
            }
        }

        self.counters = snap.counters;
        self.live_stats_entries = snap.stats.len();
        self.live_proc_entries = snap.procs.len();
        // Every key the kernel inserted is live, was removed by us, or was
        // evicted. Reads race with inserts, so never let it go backwards.
        let derived = self.counters[counter::STATS_INSERTS as usize]
            .saturating_sub(self.live_stats_entries as u64 + self.forgotten_keys);
        self.evictions = self.evictions.max(derived);

        let ttl = self.exit_ttl.as_nanos() as u64;
        let mut expired = Vec::new();
        for (tgid, p) in &self.procs {
            let Some(exited) = p.exited_ns else { continue };
            // The leader exiting does not end a process whose other threads
            // run on; /proc says whether the thread group is still there.
            if now_ns.saturating_sub(exited) >= ttl && !proc_alive(*tgid) {
                let keys = self
                    .series
                    .range(
                        StatKey {
                            tgid: *tgid,
                            syscall: 0,
                            src: 0,
                            dst: 0,
                            _pad: 0,
                        }..,
                    )
                    .take_while(|(k, _)| k.tgid == *tgid)
                    .map(|(k, _)| *k)
                    .collect();
                expired.push(Expired { tgid: *tgid, keys });
            }
        }
        expired
    }

    fn observe_proc(&mut self, tgid: u32, info: &ProcInfo, now_ns: u64) {
        let comm = comm_string(&info.comm);
        let p = self.procs.entry(tgid).or_insert_with(|| Process {
            comm: comm.clone(),
            exited_ns: None,
        });
        if p.comm != comm {
            p.comm = comm;
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
        for key in &expired.keys {
            if let Some(s) = self.series.remove(key)
                && s.last.calls > 0
            {
                self.forgotten_keys += 1;
            }
        }
        self.procs.remove(&expired.tgid);
    }

    pub fn processes(&self) -> usize {
        self.procs.len()
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
    pub program_stats: &'a [(String, ProgramStats)],
    pub stats_capacity: u32,
    pub procs_capacity: u32,
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_owned());
    l.set_value(value.to_owned());
    l
}

fn family(name: &str, help: &str, kind: MetricType) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(kind);
    f
}

fn counter_metric(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut m = Metric::from_label(labels);
    let mut c = Counter::default();
    c.set_value(value);
    m.set_counter(c);
    m
}

fn gauge_metric(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut m = Metric::from_label(labels);
    let mut g = Gauge::default();
    g.set_value(value);
    m.set_gauge(g);
    m
}

/// `file_to_user`, `pipe_to_socket`, …: the `path` label.
pub fn path_label(src: Endpoint, dst: Endpoint) -> String {
    format!("{}_to_{}", src.name(), dst.name())
}

impl Tracker {
    /// Builds every metric family: per-process counters and self-metrics.
    pub fn families(&self, me: &SelfInfo<'_>) -> Vec<MetricFamily> {
        let mut calls = family(
            "iolens_syscalls_total",
            "Completed read/write-family, sendfile, splice, vmsplice, tee and copy_file_range syscalls per process, by path as in iolens_io_bytes_total; failed calls have path=\"error\".",
            MetricType::COUNTER,
        );
        let mut errors = family(
            "iolens_syscall_errors_total",
            "Syscalls counted in iolens_syscalls_total that returned an error.",
            MetricType::COUNTER,
        );
        let mut bytes = family(
            "iolens_io_bytes_total",
            "Bytes moved by successful syscalls, by path: <source>_to_<destination> where user is a user-space buffer and file, socket, pipe, other are the fd's type. Paths without `user` are zero-copy in the sense that the bytes never enter user space.",
            MetricType::COUNTER,
        );

        // Errors carry no path (the call failed before moving anything), so
        // they are summed per syscall.
        let mut per_syscall: BTreeMap<(u32, u8), u64> = BTreeMap::new();
        for (key, series) in &self.series {
            let t = series.total();
            *per_syscall.entry((key.tgid, key.syscall)).or_default() += t.errors;
            let Some(sc) = Syscall::from_u8(key.syscall) else {
                continue;
            };
            let comm = self.procs.get(&key.tgid).map_or("unknown", |p| &p.comm);
            let src = Endpoint::from_u8(key.src);
            let dst = Endpoint::from_u8(key.dst);
            let failed = src == Endpoint::Unknown && dst == Endpoint::Unknown;
            let path = if failed {
                "error".to_owned()
            } else {
                path_label(src, dst)
            };
            let labels = || {
                vec![
                    label("pid", &key.tgid.to_string()),
                    label("comm", comm),
                    label("syscall", sc.name()),
                    label("path", &path),
                ]
            };
            calls
                .mut_metric()
                .push(counter_metric(labels(), t.calls as f64));
            if !failed {
                bytes
                    .mut_metric()
                    .push(counter_metric(labels(), t.bytes as f64));
            }
        }
        for ((tgid, sc), e) in per_syscall {
            let Some(sc) = Syscall::from_u8(sc) else {
                continue;
            };
            let comm = self.procs.get(&tgid).map_or("unknown", |p| &p.comm);
            errors.mut_metric().push(counter_metric(
                vec![
                    label("pid", &tgid.to_string()),
                    label("comm", comm),
                    label("syscall", sc.name()),
                ],
                e as f64,
            ));
        }

        let mut attached = family(
            "iolens_probe_attached",
            "1 if the eBPF program is attached to its tracepoint, 0 if it could not be (see the agent log for why).",
            MetricType::GAUGE,
        );
        for s in me.probes {
            attached.mut_metric().push(gauge_metric(
                vec![
                    label("program", s.spec.program),
                    label("tracepoint", s.spec.tracepoint),
                ],
                if s.attached { 1.0 } else { 0.0 },
            ));
        }
        let mut run_time = family(
            "iolens_probe_run_seconds_total",
            "Time the kernel spent running the eBPF program since iolens started it (BPF_ENABLE_STATS).",
            MetricType::COUNTER,
        );
        let mut run_count = family(
            "iolens_probe_runs_total",
            "Times the kernel ran the eBPF program (BPF_ENABLE_STATS).",
            MetricType::COUNTER,
        );
        for (program, st) in me.program_stats {
            run_time.mut_metric().push(counter_metric(
                vec![label("program", program)],
                st.run_time_ns as f64 / 1e9,
            ));
            run_count.mut_metric().push(counter_metric(
                vec![label("program", program)],
                st.run_count as f64,
            ));
        }
        let mut entries = family(
            "iolens_map_entries",
            "Entries in a kernel map at the last read.",
            MetricType::GAUGE,
        );
        let mut capacity = family(
            "iolens_map_capacity",
            "Maximum entries of a kernel map (--max-stats-entries, --max-proc-entries).",
            MetricType::GAUGE,
        );
        for (map, live, cap) in [
            ("STATS", self.live_stats_entries, me.stats_capacity),
            ("PROCS", self.live_proc_entries, me.procs_capacity),
        ] {
            entries
                .mut_metric()
                .push(gauge_metric(vec![label("map", map)], live as f64));
            capacity
                .mut_metric()
                .push(gauge_metric(vec![label("map", map)], f64::from(cap)));
        }
        let mut evictions = family(
            "iolens_map_evictions_total",
            "Keys the kernel evicted from a full LRU map. Their counts are kept; a non-zero rate means the map is too small for the workload.",
            MetricType::COUNTER,
        );
        evictions.mut_metric().push(counter_metric(
            vec![label("map", "STATS")],
            self.evictions as f64,
        ));
        let mut drops = family(
            "iolens_events_dropped_total",
            "Events the kernel side could not record (map update failed).",
            MetricType::COUNTER,
        );
        drops.mut_metric().push(counter_metric(
            vec![],
            self.counters[counter::STATS_DROPS as usize] as f64,
        ));
        let mut fd_failures = family(
            "iolens_fd_lookup_failures_total",
            "Successful transfers whose fd type could not be read; their bytes are counted under an `unknown` path.",
            MetricType::COUNTER,
        );
        fd_failures.mut_metric().push(counter_metric(
            vec![],
            self.counters[counter::FD_LOOKUP_FAILURES as usize] as f64,
        ));
        let mut processes = family(
            "iolens_processes",
            "Processes with series in this exposition, exited ones in their grace period included.",
            MetricType::GAUGE,
        );
        processes
            .mut_metric()
            .push(gauge_metric(vec![], self.procs.len() as f64));

        [
            calls,
            errors,
            bytes,
            attached,
            run_time,
            run_count,
            entries,
            capacity,
            evictions,
            drops,
            fd_failures,
            processes,
        ]
        .into_iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect()
    }
}

/// Renders families in the Prometheus text format.
pub fn encode(families: &[MetricFamily]) -> Result<Vec<u8>, prometheus::Error> {
    use prometheus::Encoder as _;
    let mut out = Vec::with_capacity(16 * 1024);
    prometheus::TextEncoder::new().encode(families, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tgid: u32, sc: Syscall) -> StatKey {
        StatKey {
            tgid,
            syscall: sc as u8,
            src: Endpoint::File as u8,
            dst: Endpoint::User as u8,
            _pad: 0,
        }
    }

    fn val(calls: u64, bytes: u64) -> StatValue {
        StatValue {
            calls,
            errors: 0,
            bytes,
        }
    }

    fn snap(stats: &[(StatKey, StatValue)], inserts: u64) -> Snapshot {
        let mut s = Snapshot {
            stats: stats.to_vec(),
            ..Default::default()
        };
        s.counters[counter::STATS_INSERTS as usize] = inserts;
        s
    }

    /// Our own pid is alive for the duration of the test, so exit handling
    /// does not interfere with the counter logic under test.
    fn me() -> u32 {
        std::process::id()
    }

    #[test]
    fn counts_survive_eviction_and_recreation() {
        let mut t = Tracker::new(Duration::from_secs(60));
        let k = key(me(), Syscall::Read);
        t.update(&snap(&[(k, val(10, 100))], 1), 0);
        // Evicted: absent from the read.
        t.update(&snap(&[], 1), 0);
        assert_eq!(t.totals_for(me())[&k], val(10, 100));
        assert_eq!(t.evictions, 1);
        // Re-created and counting again from zero.
        t.update(&snap(&[(k, val(3, 30))], 2), 0);
        assert_eq!(t.totals_for(me())[&k], val(13, 130));
        // Evicted and re-created between two reads: the value went down.
        t.update(&snap(&[(k, val(1, 5))], 3), 0);
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
        assert!(t.update(&s, 2_000_000_000).is_empty());
        let fams = t.families(&SelfInfo {
            probes: &[],
            program_stats: &[],
            stats_capacity: 1,
            procs_capacity: 1,
        });
        let text = String::from_utf8(encode(&fams).expect("encode")).expect("utf8");
        assert!(
            text.contains(r#"iolens_syscalls_total{pid="4000000000",comm="dd",syscall="write",path="file_to_user"} 1"#),
            "{text}"
        );
        let expired = t.update(&s, 61_000_000_000);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].keys, vec![k]);
        t.forgot(&expired[0]);
        assert!(t.totals_for(dead).is_empty());
        assert_eq!(t.processes(), 0);
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
