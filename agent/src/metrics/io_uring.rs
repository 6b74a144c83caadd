//! The io_uring family's exposition: SQEs, CQEs, failures and bytes by
//! opcode, attributed to the ring's owner; SQEs per io_uring_enter; rings
//! created.

use iolens_common::{ProcCounters, Syscall};
use prometheus::proto::{MetricFamily, MetricType};

use super::{ProcGet, Tracker, counter_metric, family, label};

impl Tracker {
    pub(super) fn io_uring_families(&self, procs: &[(u32, ProcCounters)]) -> Vec<MetricFamily> {
        let mut enter_sqes = family(
            "iolens_io_uring_enter_submitted_total",
            "SQEs consumed by io_uring_enter calls (their return values); with iolens_syscalls_total{syscall=\"io_uring_enter\"} this gives operations per syscall. SQPOLL rings submit without io_uring_enter.",
            MetricType::COUNTER,
        );
        for (key, series) in &self.series {
            if Syscall::from_u8(key.syscall) == Some(Syscall::IoUringEnter) && key.failed == 0 {
                enter_sqes.mut_metric().push(counter_metric(
                    self.proc_labels(key.tgid),
                    series.total().bytes as f64,
                ));
            }
        }
        let specs: [(&str, &str, ProcGet); 1] = [(
            "iolens_io_uring_rings_created_total",
            "io_uring instances the process created.",
            |p| p.rings_created as f64,
        )];
        let mut all = self.uring_families();
        all.push(enter_sqes);
        // Most processes never create a ring: no series for them.
        all.extend(self.proc_counter_families(procs, &specs, true));
        all
    }

    fn uring_families(&self) -> Vec<MetricFamily> {
        let mut sqes = family(
            "iolens_io_uring_sqes_total",
            "io_uring submission queue entries the kernel took, by opcode; work of io-wq and SQPOLL threads counts for the ring's owner.",
            MetricType::COUNTER,
        );
        let mut cqes = family(
            "iolens_io_uring_cqes_total",
            "io_uring completions posted, by opcode (multishot requests post several per SQE).",
            MetricType::COUNTER,
        );
        let mut failed = family(
            "iolens_io_uring_failures_total",
            "io_uring completions with a negative result, by opcode.",
            MetricType::COUNTER,
        );
        let mut bytes = family(
            "iolens_io_uring_bytes_total",
            "Bytes moved by io_uring read, write, send, recv, splice and tee opcodes (positive results).",
            MetricType::COUNTER,
        );
        for (key, series) in &self.useries {
            let t = series.total();
            let labels = || {
                let mut l = self.proc_labels(key.tgid);
                l.push(label("opcode", &uring_op_name(key.opcode)));
                l
            };
            sqes.mut_metric()
                .push(counter_metric(labels(), t.submitted as f64));
            cqes.mut_metric()
                .push(counter_metric(labels(), t.completed as f64));
            failed
                .mut_metric()
                .push(counter_metric(labels(), t.failed as f64));
            if iolens_common::uring_op_moves_bytes(key.opcode) {
                bytes
                    .mut_metric()
                    .push(counter_metric(labels(), t.bytes as f64));
            }
        }
        vec![sqes, cqes, failed, bytes]
    }
}

/// io_uring opcode names (include/uapi/linux/io_uring.h), lower case.
pub fn uring_op_name(op: u8) -> String {
    const NAMES: [&str; 63] = [
        "nop",
        "readv",
        "writev",
        "fsync",
        "read_fixed",
        "write_fixed",
        "poll_add",
        "poll_remove",
        "sync_file_range",
        "sendmsg",
        "recvmsg",
        "timeout",
        "timeout_remove",
        "accept",
        "async_cancel",
        "link_timeout",
        "connect",
        "fallocate",
        "openat",
        "close",
        "files_update",
        "statx",
        "read",
        "write",
        "fadvise",
        "madvise",
        "send",
        "recv",
        "openat2",
        "epoll_ctl",
        "splice",
        "provide_buffers",
        "remove_buffers",
        "tee",
        "shutdown",
        "renameat",
        "unlinkat",
        "mkdirat",
        "symlinkat",
        "linkat",
        "msg_ring",
        "fsetxattr",
        "setxattr",
        "fgetxattr",
        "getxattr",
        "socket",
        "uring_cmd",
        "send_zc",
        "sendmsg_zc",
        "read_multishot",
        "waitid",
        "futex_wait",
        "futex_wake",
        "futex_waitv",
        "fixed_fd_install",
        "ftruncate",
        "bind",
        "listen",
        "recv_zc",
        "epoll_wait",
        "readv_fixed",
        "writev_fixed",
        "pipe",
    ];
    match NAMES.get(op as usize) {
        Some(n) => (*n).to_owned(),
        None if op == iolens_common::URING_OP_UNKNOWN => "unknown".to_owned(),
        None => format!("op_{op}"),
    }
}
