//! The waits family's exposition: events, timeouts and scanned fds of
//! readiness waits per process, the epoll blocked-time histogram by
//! process name, and the time threads slept inside each syscall.

use iolens_common::{OFFCPU_OTHER, Syscall, WAIT_BUCKETS};
use syscalls::x86_64::Sysno;

use super::{Family, Kind, Mode, Tracker, comm_string};

impl Tracker {
    pub(super) fn wait_families<'m>(&self, mode: Mode<'m>) -> Vec<Family<'m>> {
        let mut wait_events = Family::new(
            "iolens_wait_events_total",
            "Ready events (epoll) or ready fds (poll, select) returned by readiness waits.",
            Kind::Counter,
        )
        .with_mode(mode);
        let mut wait_timeouts = Family::new(
            "iolens_wait_timeouts_total",
            "Readiness waits that returned 0: the timeout expired with nothing ready.",
            Kind::Counter,
        )
        .with_mode(mode);
        let mut wait_scanned = Family::new(
            "iolens_wait_fds_scanned_total",
            "File descriptors passed to poll/ppoll (nfds) or select/pselect6 (nfds, the highest fd + 1): the linear scan epoll avoids.",
            Kind::Counter,
        )
        .with_mode(mode);
        for (key, series) in &self.series {
            let Some(sc) = Syscall::from_u8(key.syscall) else {
                continue;
            };
            if !sc.is_wait() || key.failed != 0 {
                continue;
            }
            let t = series.total();
            let labels = [("syscall", sc.name())];
            wait_events.proc_sample(self, key.tgid, &labels, t.bytes as f64);
            wait_timeouts.proc_sample(self, key.tgid, &labels, t.zero as f64);
            if !sc.is_epoll() {
                wait_scanned.proc_sample(self, key.tgid, &labels, t.scanned as f64);
            }
        }
        let (offcpu_seconds, offcpu_calls) = self.offcpu_families(mode);
        vec![
            wait_events,
            wait_timeouts,
            wait_scanned,
            self.wait_histogram(mode),
            offcpu_seconds,
            offcpu_calls,
        ]
    }

    /// Time slept inside each syscall, and the calls that slept.
    fn offcpu_families<'m>(&self, mode: Mode<'m>) -> (Family<'m>, Family<'m>) {
        let mut seconds = Family::new(
            "iolens_offcpu_seconds_total",
            "Time threads slept (switched out voluntarily) inside each syscall, settled when the call returned; by the x86_64 syscall table's name, \"other\" for the rest (ia32 calls without an x86_64 twin, unknown numbers). Sleeps outside syscalls (page faults from user space) are only in iolens_sleep_seconds_total. A sleep already in progress when the agent attached is not counted (its start was not seen).",
            Kind::Counter,
        )
        .with_mode(mode);
        let mut calls = Family::new(
            "iolens_offcpu_calls_total",
            "Syscalls that slept at least once before returning, by syscall as in iolens_offcpu_seconds_total.",
            Kind::Counter,
        )
        .with_mode(mode);
        for (key, series) in &self.oseries {
            let t = series.total();
            let labels = [("syscall", offcpu_syscall_name(key.nr))];
            seconds.proc_sample(self, key.tgid, &labels, t.ns as f64 / 1e9);
            calls.proc_sample(self, key.tgid, &labels, t.calls as f64);
        }
        (seconds, calls)
    }

    /// The epoll blocked-time histogram, by process name.
    fn wait_histogram<'m>(&self, mode: Mode<'m>) -> Family<'m> {
        let mut f = Family::new(
            "iolens_epoll_wait_seconds",
            "Time threads slept (off CPU) inside each epoll_wait/epoll_pwait/epoll_pwait2 call, by process name (log2 buckets); a call that found events at once observes 0.",
            Kind::Histogram,
        )
        .with_mode(mode);
        let mut buckets = Vec::with_capacity(WAIT_BUCKETS);
        for (comm, slots) in &self.wait_hist {
            f.log2_histogram(&[("comm", comm_string(comm).as_str())], slots, &mut buckets);
        }
        f
    }
}

/// The label of an off-CPU tally's syscall number: its name in the x86_64
/// table, or "other" (a bounded set either way).
pub(crate) fn offcpu_syscall_name(nr: u32) -> &'static str {
    if nr == OFFCPU_OTHER {
        return "other";
    }
    usize::try_from(nr)
        .ok()
        .and_then(Sysno::new)
        .map_or("other", |s| s.name())
}

#[cfg(test)]
mod tests {
    use super::offcpu_syscall_name;

    #[test]
    fn offcpu_names_come_from_the_x86_64_table() {
        assert_eq!(offcpu_syscall_name(0), "read");
        assert_eq!(offcpu_syscall_name(35), "nanosleep");
        assert_eq!(offcpu_syscall_name(202), "futex");
        assert_eq!(offcpu_syscall_name(232), "epoll_wait");
        // A hole in the table and the catch-all are one bucket.
        assert_eq!(offcpu_syscall_name(1000), "other");
        assert_eq!(offcpu_syscall_name(u32::MAX), "other");
    }
}
