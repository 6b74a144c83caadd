//! The syscalls family's exposition: completed calls, errors and bytes
//! per process, by syscall and path.

use std::collections::BTreeMap;

use iolens_common::{Endpoint, Syscall};

use super::{Family, Kind, Mode, Tracker, path_label};

impl Tracker {
    pub(super) fn syscall_families<'m>(&self, mode: Mode<'m>) -> Vec<Family<'m>> {
        let mut calls = Family::new(
            "iolens_syscalls_total",
            "Completed read/write-family, sendfile, splice, vmsplice, tee and copy_file_range syscalls per process, by path as in iolens_io_bytes_total; failed calls have path=\"error\".",
            Kind::Counter,
        )
        .with_mode(mode);
        let mut errors = Family::new(
            "iolens_syscall_errors_total",
            "Syscalls counted in iolens_syscalls_total that returned an error.",
            Kind::Counter,
        )
        .with_mode(mode);
        let mut bytes = Family::new(
            "iolens_io_bytes_total",
            "Bytes moved by successful syscalls, by path: <source>_to_<destination> where user is a user-space buffer and file, socket, pipe, other are the fd's type. Paths without `user` are zero-copy in the sense that the bytes never enter user space.",
            Kind::Counter,
        )
        .with_mode(mode);

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
            let labels = [("syscall", sc.name()), ("path", path.as_str())];
            if transfer && !failed {
                bytes.proc_sample(self, key.tgid, &labels, t.bytes as f64);
            }
            calls.proc_sample(self, key.tgid, &labels, t.calls as f64);
        }
        for ((tgid, sc), e) in per_syscall {
            let Some(sc) = Syscall::from_u8(sc) else {
                continue;
            };
            errors.proc_sample(self, tgid, &[("syscall", sc.name())], e as f64);
        }
        vec![calls, errors, bytes]
    }
}
