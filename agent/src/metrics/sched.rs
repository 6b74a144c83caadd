//! The sched family's exposition: context switches, on-CPU and sleep
//! time per process.

use iolens_common::ProcCounters;
use prometheus::proto::{MetricFamily, MetricType};

use super::{ProcGet, Tracker, counter_metric, family, label};

impl Tracker {
    pub(super) fn sched_families(&self, procs: &[(u32, ProcCounters)]) -> Vec<MetricFamily> {
        let specs: [(&str, &str, ProcGet); 2] = [
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
        let mut fams = self.proc_counter_families(procs, &specs, false);
        let mut cs = family(
            "iolens_context_switches_total",
            "Scheduler context switches away from the process's threads: voluntary (blocked, nvcsw) or involuntary (preempted or yielded while runnable, nivcsw).",
            MetricType::COUNTER,
        );
        for (tgid, t) in procs {
            for (kind, v) in [("voluntary", t.vcsw), ("involuntary", t.ivcsw)] {
                let mut labels = self.proc_labels(*tgid);
                labels.push(label("kind", kind));
                cs.mut_metric().push(counter_metric(labels, v as f64));
            }
        }
        fams.push(cs);
        fams
    }
}
