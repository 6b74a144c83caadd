//! The agent's report on itself: which programs are attached, their
//! verifier figures and run time, map fill and evictions, drops.

use iolens_common::counter;
use prometheus::proto::{MetricFamily, MetricType};

use super::{MAPS, SelfInfo, Tracker, counter_metric, family, gauge_metric, label};

impl Tracker {
    pub(super) fn health_families(&self, me: &SelfInfo<'_>) -> Vec<MetricFamily> {
        let mut attached = family(
            "iolens_probe_attached",
            "1 if the probe is attached (by the variant in `program` at `attach`), 0 if no variant could be on this kernel (see `iolens check` or the agent log for why).",
            MetricType::GAUGE,
        );
        for s in me.probes {
            attached.mut_metric().push(gauge_metric(
                vec![
                    label("probe", s.spec.name),
                    label("family", s.spec.family.name()),
                    label("program", s.program()),
                    label("attach", &s.attach().to_string()),
                ],
                if s.attached { 1.0 } else { 0.0 },
            ));
        }
        let mut families = family(
            "iolens_family_info",
            "1 per probe family: how it is attached on this kernel (`mechanism`) and whether it counts everything it does on the newest kernels (`status`: complete, degraded, unavailable; `iolens check` says what is lost and why).",
            MetricType::GAUGE,
        );
        for f in me.families {
            families.mut_metric().push(gauge_metric(
                vec![
                    label("family", f.family.name()),
                    label("mechanism", &f.mechanism()),
                    label("status", f.status()),
                ],
                1.0,
            ));
        }
        let mut verified = family(
            "iolens_probe_verified_instructions",
            "Instructions the kernel's verifier processed to accept the eBPF program (verified_insns; its limit is 1,000,000). Absent before Linux 5.16.",
            MetricType::GAUGE,
        );
        let mut stack = family(
            "iolens_probe_stack_bytes",
            "Stack of the eBPF program's deepest call chain as the verifier counts it (frames rounded to 32 bytes), read from the object; kernels without private BPF stacks refuse more than 512.",
            MetricType::GAUGE,
        );
        for s in me.probes {
            let program = || vec![label("program", s.program())];
            if let Some(n) = s.verified_insns {
                verified
                    .mut_metric()
                    .push(gauge_metric(program(), f64::from(n)));
            }
            if let Some(st) = &s.stack {
                stack
                    .mut_metric()
                    .push(gauge_metric(program(), f64::from(st.combined)));
            }
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
            "Maximum entries of a kernel map (--max-stats-entries; --max-proc-entries for PROC_INFO and PROC_COUNTERS; URING_STATS is fixed).",
            MetricType::GAUGE,
        );
        let caps = [
            me.stats_capacity,
            me.procs_capacity,
            me.procs_capacity,
            iolens_common::URING_ENTRIES,
        ];
        for (i, (map, _)) in MAPS.iter().enumerate() {
            let (live, cap) = (self.live[i], caps[i]);
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
        for (i, (map, _)) in MAPS.iter().enumerate() {
            evictions.mut_metric().push(counter_metric(
                vec![label("map", map)],
                self.evictions[i] as f64,
            ));
        }
        let mut drops = family(
            "iolens_events_dropped_total",
            "Events the kernel side could not record (map update failed).",
            MetricType::COUNTER,
        );
        // Both kinds of loss: SYSCALL_STATS updates, and those of every
        // other map (process counters, io_uring, the epoll histograms, the
        // mmsg reads), which were counted in the kernel but never shown.
        drops.mut_metric().push(counter_metric(
            vec![],
            (self.counters[counter::SYSCALL_STATS_DROPS as usize]
                + self.counters[counter::OTHER_DROPS as usize]) as f64,
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
        let mut evicted = family(
            "iolens_processes_evicted_total",
            "Live processes dropped from the export (and the kernel maps) to stay under --max-processes, least recently active first.",
            MetricType::COUNTER,
        );
        evicted
            .mut_metric()
            .push(counter_metric(vec![], self.processes_evicted as f64));
        let mut http_dropped = family(
            "iolens_http_connections_dropped_total",
            "Metrics connections the agent closed without waiting for the client: header_timeout (no complete request head within --web.header-timeout), idle_timeout (a keep-alive pause over --web.idle-timeout), evicted (the oldest connection not being answered, closed at --web.max-connections to make room), refused (answered 503 at the cap: every connection was being answered).",
            MetricType::COUNTER,
        );
        let mut http_open = family(
            "iolens_http_connections",
            "Metrics connections open (at most --web.max-connections).",
            MetricType::GAUGE,
        );
        if let Some(http) = me.http {
            for why in super::http::Dropped::ALL {
                http_dropped.mut_metric().push(counter_metric(
                    vec![label("reason", why.name())],
                    http.dropped(why) as f64,
                ));
            }
            http_open
                .mut_metric()
                .push(gauge_metric(vec![], http.open() as f64));
        }
        vec![
            attached,
            families,
            verified,
            stack,
            run_time,
            run_count,
            entries,
            capacity,
            evictions,
            drops,
            fd_failures,
            processes,
            evicted,
            http_dropped,
            http_open,
        ]
    }
}
