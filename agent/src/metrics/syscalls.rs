//! The syscalls family's exposition: completed calls, errors and bytes
//! per process, by syscall and path.

use std::collections::BTreeMap;

use iolens_common::{Endpoint, Syscall};
use prometheus::proto::{MetricFamily, MetricType};

use super::{Tracker, counter_metric, family, label, path_label};

impl Tracker {
    pub(super) fn syscall_families(&self) -> Vec<MetricFamily> {
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
            let failed = key.failed != 0;
            // Waits and io_uring_enter move no bytes of their own: their
            // results are the waits' and io_uring's families.
            let transfer = !sc.is_wait() && sc != Syscall::IoUringEnter;
            let path = if failed {
                "error".to_owned()
            } else if transfer {
                path_label(Endpoint::from_u8(key.src), Endpoint::from_u8(key.dst))
            } else {
                "none".to_owned()
            };
            let mut labels = self.proc_labels(key.tgid);
            labels.push(label("syscall", sc.name()));
            labels.push(label("path", &path));
            if transfer && !failed {
                bytes
                    .mut_metric()
                    .push(counter_metric(labels.clone(), t.bytes as f64));
            }
            calls
                .mut_metric()
                .push(counter_metric(labels, t.calls as f64));
        }
        for ((tgid, sc), e) in per_syscall {
            let Some(sc) = Syscall::from_u8(sc) else {
                continue;
            };
            let mut labels = self.proc_labels(tgid);
            labels.push(label("syscall", sc.name()));
            errors.mut_metric().push(counter_metric(labels, e as f64));
        }
        vec![calls, errors, bytes]
    }
}
