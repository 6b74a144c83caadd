//! The waits family's exposition: events, timeouts and scanned fds of
//! readiness waits per process, and the epoll blocked-time histogram by
//! process name.

use iolens_common::{Syscall, WAIT_BUCKETS, WAIT_SLOT_COUNT, WAIT_SLOT_SUM_NS};

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
        vec![
            wait_events,
            wait_timeouts,
            wait_scanned,
            self.wait_histogram(mode),
        ]
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
            buckets.clear();
            let mut cum = 0u64;
            // Bucket i holds [2^i, 2^(i+1)) ns; publish upper bounds from
            // 1 us (2^10 ns) so the series stay few.
            for (i, n) in slots[..WAIT_BUCKETS - 1].iter().enumerate() {
                cum += n;
                if i >= 9 {
                    buckets.push(((1u64 << (i + 1)) as f64 / 1e9, cum));
                }
            }
            f.histogram(
                &[("comm", comm_string(comm).as_str())],
                &buckets,
                slots[WAIT_SLOT_COUNT],
                slots[WAIT_SLOT_SUM_NS] as f64 / 1e9,
            );
        }
        f
    }
}
