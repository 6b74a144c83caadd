//! The io_uring family's exposition: SQEs, CQEs, failures and bytes by
//! opcode, attributed to the ring's owner; SQEs per io_uring_enter; rings
//! created.

use iolens_common::{ProcCounters, Syscall};

use super::{Family, Kind, Mode, ProcGet, Tracker};

impl Tracker {
    pub(super) fn io_uring_families<'m>(
        &self,
        procs: &[(u32, ProcCounters)],
        mode: Mode<'m>,
    ) -> Vec<Family<'m>> {
        let mut enter_sqes = Family::new(
            "iolens_io_uring_enter_submitted_total",
            "SQEs consumed by io_uring_enter calls (their return values); with iolens_syscalls_total{syscall=\"io_uring_enter\"} this gives operations per syscall. SQPOLL rings submit without io_uring_enter.",
            Kind::Counter,
        )
        .with_mode(mode);
        for (key, series) in &self.series {
            if Syscall::from_u8(key.syscall) == Some(Syscall::IoUringEnter) && key.failed == 0 {
                enter_sqes.proc_sample(self, key.tgid, &[], series.total().bytes as f64);
            }
        }
        let specs: [(&'static str, &'static str, ProcGet); 1] = [(
            "iolens_io_uring_rings_created_total",
            "io_uring instances the process created.",
            |p| p.rings_created as f64,
        )];
        let mut all = self.uring_families(mode);
        all.push(enter_sqes);
        // Most processes never create a ring: no series for them.
        all.extend(self.proc_counter_families(procs, &specs, true, mode));
        all
    }

    fn uring_families<'m>(&self, mode: Mode<'m>) -> Vec<Family<'m>> {
        let mut sqes = Family::new(
            "iolens_io_uring_sqes_total",
            "io_uring submission queue entries the kernel took, by opcode; work of io-wq and SQPOLL threads counts for the ring's owner.",
            Kind::Counter,
        )
        .with_mode(mode);
        let mut cqes = Family::new(
            "iolens_io_uring_cqes_total",
            "io_uring completions posted, by opcode (multishot requests post several per SQE).",
            Kind::Counter,
        )
        .with_mode(mode);
        let mut failed = Family::new(
            "iolens_io_uring_failures_total",
            "io_uring completions with a negative result, by opcode.",
            Kind::Counter,
        )
        .with_mode(mode);
        let mut bytes = Family::new(
            "iolens_io_uring_bytes_total",
            "Bytes moved by io_uring read, write, send, recv, splice and tee opcodes (positive results).",
            Kind::Counter,
        )
        .with_mode(mode);
        for (key, series) in &self.useries {
            let t = series.total();
            let op = uring_op_name(key.opcode);
            let labels = [("opcode", op.as_str())];
            sqes.proc_sample(self, key.tgid, &labels, t.submitted as f64);
            cqes.proc_sample(self, key.tgid, &labels, t.completed as f64);
            failed.proc_sample(self, key.tgid, &labels, t.failed as f64);
            if iolens_common::uring_op_moves_bytes(key.opcode) {
                bytes.proc_sample(self, key.tgid, &labels, t.bytes as f64);
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
