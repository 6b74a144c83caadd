//! The process family's exposition: every syscall of each process,
//! accounted or not, and the mode switches they cost.

use iolens_common::ProcCounters;

use super::{Family, Mode, ProcGet, Tracker};

impl Tracker {
    pub(super) fn process_families<'m>(
        &self,
        procs: &[(u32, ProcCounters)],
        mode: Mode<'m>,
    ) -> Vec<Family<'m>> {
        let specs: [(&'static str, &'static str, ProcGet); 2] = [
            (
                "iolens_process_syscalls_total",
                "Every syscall the process completed, accounted or not.",
                |p| p.syscalls as f64,
            ),
            (
                "iolens_mode_switches_total",
                "User/kernel mode switches: 2 per syscall (entry and return). The seed notes call these context switches; they are not scheduler switches (see iolens_context_switches_total).",
                |p| 2.0 * p.syscalls as f64,
            ),
        ];
        self.proc_counter_families(procs, &specs, false, mode)
    }
}
