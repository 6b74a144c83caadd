//! The agent's report on itself: which programs are attached, their
//! verifier figures and run time, map fill and evictions, drops.

use iolens_common::counter;

use super::{Family, Kind, MAPS, SelfInfo, Tracker};

impl Tracker {
    pub(super) fn health_families(&self, me: &SelfInfo<'_>) -> Vec<Family<'static>> {
        let mut attached = Family::new(
            "iolens_probe_attached",
            "1 if the probe is attached (by the variant in `program` at `attach`), 0 if no variant could be on this kernel (see `iolens check` or the agent log for why).",
            Kind::Gauge,
        );
        for s in me.probes {
            attached.sample(
                &[
                    ("probe", s.spec.name),
                    ("family", s.spec.family.name()),
                    ("program", s.program()),
                    ("attach", s.attach().to_string().as_str()),
                ],
                if s.attached { 1.0 } else { 0.0 },
            );
        }
        let mut families = Family::new(
            "iolens_family_info",
            "1 per probe family: how it is attached on this kernel (`mechanism`) and whether it counts everything it does on the newest kernels (`status`: complete, degraded, unavailable; `iolens check` says what is lost and why).",
            Kind::Gauge,
        );
        for f in me.families {
            families.sample(
                &[
                    ("family", f.family.name()),
                    ("mechanism", f.mechanism().as_str()),
                    ("status", f.status()),
                ],
                1.0,
            );
        }
        let mut verified = Family::new(
            "iolens_probe_verified_instructions",
            "Instructions the kernel's verifier processed to accept the eBPF program (verified_insns; its limit is 1,000,000). Absent before Linux 5.16.",
            Kind::Gauge,
        );
        let mut stack = Family::new(
            "iolens_probe_stack_bytes",
            "Stack of the eBPF program's deepest call chain as the verifier counts it (frames rounded to 32 bytes), read from the object; kernels without private BPF stacks refuse more than 512.",
            Kind::Gauge,
        );
        for s in me.probes {
            let program = [("program", s.program())];
            if let Some(n) = s.verified_insns {
                verified.sample(&program, f64::from(n));
            }
            if let Some(st) = &s.stack {
                stack.sample(&program, f64::from(st.combined));
            }
        }
        let mut run_time = Family::new(
            "iolens_probe_run_seconds_total",
            "Time the kernel spent running the eBPF program since iolens started it (BPF_ENABLE_STATS).",
            Kind::Counter,
        );
        let mut run_count = Family::new(
            "iolens_probe_runs_total",
            "Times the kernel ran the eBPF program (BPF_ENABLE_STATS).",
            Kind::Counter,
        );
        for (program, st) in me.program_stats {
            run_time.sample(&[("program", program)], st.run_time_ns as f64 / 1e9);
            run_count.sample(&[("program", program)], st.run_count as f64);
        }
        let mut entries = Family::new(
            "iolens_map_entries",
            "Entries in a kernel map at the last read.",
            Kind::Gauge,
        );
        let mut capacity = Family::new(
            "iolens_map_capacity",
            "Maximum entries of a kernel map (--max-stats-entries; --max-proc-entries for PROC_INFO and PROC_COUNTERS; URING_STATS, SYSCALL_OFFCPU, BLOCK_STATS and AIO_STATS are fixed).",
            Kind::Gauge,
        );
        // Typed with MAPS' length: a map added there and not here fails to
        // compile instead of panicking at the first scrape.
        let caps: [u32; MAPS.len()] = [
            me.stats_capacity,
            me.procs_capacity,
            me.procs_capacity,
            iolens_common::URING_ENTRIES,
            iolens_common::OFFCPU_ENTRIES,
            iolens_common::BLOCK_ENTRIES,
            iolens_common::AIO_ENTRIES,
        ];
        for (i, (map, _)) in MAPS.iter().enumerate() {
            let (live, cap) = (self.live[i], caps[i]);
            entries.sample(&[("map", map)], live as f64);
            capacity.sample(&[("map", map)], f64::from(cap));
        }
        let mut evictions = Family::new(
            "iolens_map_evictions_total",
            "Keys the kernel evicted from a full LRU map. Their counts are kept; a non-zero rate means the map is too small for the workload.",
            Kind::Counter,
        );
        for (i, (map, _)) in MAPS.iter().enumerate() {
            evictions.sample(&[("map", map)], self.evictions[i] as f64);
        }
        let mut drops = Family::new(
            "iolens_events_dropped_total",
            "Events the kernel side could not record (map update failed; AIO iocbs and events it could not read from the process's memory or that were past 64 in one call).",
            Kind::Counter,
        );
        // Both kinds of loss: SYSCALL_STATS updates, and those of every
        // other map (process counters, io_uring, the epoll histograms, the
        // mmsg reads), which were counted in the kernel but never shown.
        drops.sample(
            &[],
            (self.counters[counter::SYSCALL_STATS_DROPS as usize]
                + self.counters[counter::OTHER_DROPS as usize]
                + self.counters[counter::AIO_UNREAD as usize]) as f64,
        );
        let mut fd_failures = Family::new(
            "iolens_fd_lookup_failures_total",
            "Successful transfers whose fd type could not be read; their bytes are counted under an `unknown` path.",
            Kind::Counter,
        );
        fd_failures.sample(
            &[],
            self.counters[counter::FD_LOOKUP_FAILURES as usize] as f64,
        );
        let mut processes = Family::new(
            "iolens_processes",
            "Processes with series in this exposition, exited ones in their grace period included.",
            Kind::Gauge,
        );
        processes.sample(&[], self.procs.len() as f64);
        let mut evicted = Family::new(
            "iolens_processes_evicted_total",
            "Live processes dropped from the export (and the kernel maps) to stay under --max-processes, least recently active first.",
            Kind::Counter,
        );
        evicted.sample(&[], self.processes_evicted as f64);
        let mut http_dropped = Family::new(
            "iolens_http_connections_dropped_total",
            "Metrics connections the agent closed without waiting for the client: header_timeout (no complete request head within --web.header-timeout), idle_timeout (a keep-alive pause over --web.idle-timeout), evicted (the oldest connection not being answered, closed at --web.max-connections to make room), refused (answered 503 at the cap: every connection was being answered).",
            Kind::Counter,
        );
        let mut http_open = Family::new(
            "iolens_http_connections",
            "Metrics connections open (at most --web.max-connections).",
            Kind::Gauge,
        );
        if let Some(http) = me.http {
            for why in super::http::Dropped::ALL {
                http_dropped.sample(&[("reason", why.name())], http.dropped(why) as f64);
            }
            http_open.sample(&[], http.open() as f64);
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
