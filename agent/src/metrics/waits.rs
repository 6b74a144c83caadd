//! The waits family's exposition: events, timeouts and scanned fds of
//! readiness waits per process, and the epoll blocked-time histogram by
//! process name.

use iolens_common::{Syscall, WAIT_BUCKETS, WAIT_SLOT_COUNT, WAIT_SLOT_SUM_NS};
use prometheus::proto::{Bucket, Histogram, Metric, MetricFamily, MetricType};

use super::{Tracker, comm_string, counter_metric, family, label};

impl Tracker {
    pub(super) fn wait_families(&self) -> Vec<MetricFamily> {
        let mut wait_events = family(
            "iolens_wait_events_total",
            "Ready events (epoll) or ready fds (poll, select) returned by readiness waits.",
            MetricType::COUNTER,
        );
        let mut wait_timeouts = family(
            "iolens_wait_timeouts_total",
            "Readiness waits that returned 0: the timeout expired with nothing ready.",
            MetricType::COUNTER,
        );
        let mut wait_scanned = family(
            "iolens_wait_fds_scanned_total",
            "File descriptors passed to poll/ppoll (nfds) or select/pselect6 (nfds, the highest fd + 1): the linear scan epoll avoids.",
            MetricType::COUNTER,
        );
        for (key, series) in &self.series {
            let Some(sc) = Syscall::from_u8(key.syscall) else {
                continue;
            };
            if !sc.is_wait() || key.failed != 0 {
                continue;
            }
            let t = series.total();
            let labels = || {
                let mut l = self.proc_labels(key.tgid);
                l.push(label("syscall", sc.name()));
                l
            };
            wait_events
                .mut_metric()
                .push(counter_metric(labels(), t.bytes as f64));
            wait_timeouts
                .mut_metric()
                .push(counter_metric(labels(), t.zero as f64));
            if !sc.is_epoll() {
                wait_scanned
                    .mut_metric()
                    .push(counter_metric(labels(), t.scanned as f64));
            }
        }
        vec![
            wait_events,
            wait_timeouts,
            wait_scanned,
            self.wait_histogram(),
        ]
    }

    /// The epoll blocked-time histogram, by process name.
    fn wait_histogram(&self) -> MetricFamily {
        let mut f = family(
            "iolens_epoll_wait_seconds",
            "Time threads slept (off CPU) inside each epoll_wait/epoll_pwait/epoll_pwait2 call, by process name (log2 buckets); a call that found events at once observes 0.",
            MetricType::HISTOGRAM,
        );
        for (comm, slots) in &self.wait_hist {
            let mut h = Histogram::default();
            let mut buckets = Vec::new();
            let mut cum = 0u64;
            // Bucket i holds [2^i, 2^(i+1)) ns; publish upper bounds from
            // 1 us (2^10 ns) so the series stay few.
            for (i, n) in slots[..WAIT_BUCKETS - 1].iter().enumerate() {
                cum += n;
                if i >= 9 {
                    let mut b = Bucket::default();
                    b.set_upper_bound((1u64 << (i + 1)) as f64 / 1e9);
                    b.set_cumulative_count(cum);
                    buckets.push(b);
                }
            }
            h.set_bucket(buckets);
            h.set_sample_count(slots[WAIT_SLOT_COUNT]);
            h.set_sample_sum(slots[WAIT_SLOT_SUM_NS] as f64 / 1e9);
            let mut m = Metric::from_label(vec![label("comm", &comm_string(comm))]);
            m.set_histogram(h);
            f.mut_metric().push(m);
        }
        f
    }
}
