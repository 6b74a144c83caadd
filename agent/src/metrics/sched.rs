//! The sched family's exposition: context switches, on-CPU and sleep
//! time per process.

use iolens_common::ProcCounters;

use super::{Family, Kind, Mode, ProcGet, Tracker};

impl Tracker {
    pub(super) fn sched_families<'m>(
        &self,
        procs: &[(u32, ProcCounters)],
        mode: Mode<'m>,
    ) -> Vec<Family<'m>> {
        let specs: [(&'static str, &'static str, ProcGet); 2] = [
            (
                "iolens_cpu_seconds_total",
                "Time on CPU: the scheduler's own runtime of each thread (se.sum_exec_runtime), counted at its switch-outs.",
                |p| p.oncpu_ns as f64 / 1e9,
            ),
            (
                "iolens_sleep_seconds_total",
                "Time off CPU after voluntary switches (blocked or sleeping), until switched in again; counted at the thread's next switch-out.",
                |p| p.sleep_ns as f64 / 1e9,
            ),
        ];
        let mut fams = self.proc_counter_families(procs, &specs, false, mode);
        let mut cs = Family::new(
            "iolens_context_switches_total",
            "Scheduler context switches away from the process's threads: voluntary (blocked, nvcsw) or involuntary (preempted or yielded while runnable, nivcsw).",
            Kind::Counter,
        )
        .with_mode(mode);
        for (tgid, t) in procs {
            for (kind, v) in [("voluntary", t.vcsw), ("involuntary", t.ivcsw)] {
                cs.proc_sample(self, *tgid, &[("kind", kind)], v as f64);
            }
        }
        fams.push(cs);
        fams
    }
}
