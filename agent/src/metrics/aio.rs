//! The aio family's exposition (Linux native AIO): iocbs submitted,
//! completed and failed by opcode, and the bytes of reads and writes by
//! opcode and path.
//!
//! AIO bytes are not added to iolens_io_bytes_total: every series there is
//! the bytes a named syscall returned (label `syscall`), and no syscall
//! returns these (io_getevents returns events); a `syscall="io_getevents"`
//! series would say otherwise, and sums by syscall would stop matching
//! /proc/PID/io, which AIO does not feed either. io_uring's bytes are kept
//! in their family for the same reason. The `path` label here has the
//! same values as there, so a bytes-by-path panel sums the two families
//! by path.

use std::collections::BTreeMap;

use iolens_common::{AioValue, Endpoint, aio_op_moves_bytes, aio_op_name};

use super::{Family, Kind, Mode, Tracker, path_label};

impl Tracker {
    pub(super) fn aio_families<'m>(&self, mode: Mode<'m>) -> Vec<Family<'m>> {
        let mut submitted = Family::new(
            "iolens_aio_submitted_total",
            "Linux native AIO iocbs io_submit accepted, by opcode (op=\"unknown\": not readable, or past 64 in one call). ia32 processes' AIO is not counted.",
            Kind::Counter,
        )
        .with_mode(mode);
        let mut completed = Family::new(
            "iolens_aio_completed_total",
            "Linux native AIO completions io_getevents/io_pgetevents returned, by opcode of the iocb's submission (op=\"unknown\" if it was not seen).",
            Kind::Counter,
        )
        .with_mode(mode);
        let mut failed = Family::new(
            "iolens_aio_failed_total",
            "Linux native AIO completions with a negative result (an errno), by opcode.",
            Kind::Counter,
        )
        .with_mode(mode);
        let mut cancelled = Family::new(
            "iolens_aio_cancelled_total",
            "io_cancel calls the kernel accepted, by opcode (the cancelled iocb's completion still counts in iolens_aio_completed_total).",
            Kind::Counter,
        )
        .with_mode(mode);
        let mut bytes = Family::new(
            "iolens_aio_bytes_total",
            "Bytes moved by completed Linux native AIO reads and writes (pread, pwrite, preadv, pwritev; positive results), by opcode and path as in iolens_io_bytes_total (which does not include them).",
            Kind::Counter,
        )
        .with_mode(mode);
        // One series per (process, opcode) whatever the ends, and per
        // (process, opcode, path) for bytes.
        let mut by_op: BTreeMap<(u32, u8), AioValue> = BTreeMap::new();
        let mut by_path: BTreeMap<(u32, u8, String), u64> = BTreeMap::new();
        for (key, series) in &self.aseries {
            let t = series.total();
            let v = by_op.entry((key.tgid, key.opcode)).or_default();
            iolens_common::Accumulate::accumulate(v, &t);
            if aio_op_moves_bytes(key.opcode) {
                let path = path_label(Endpoint::from_u8(key.src), Endpoint::from_u8(key.dst));
                *by_path.entry((key.tgid, key.opcode, path)).or_default() += t.bytes;
            }
        }
        for ((tgid, op), t) in &by_op {
            let labels = [("op", aio_op_name(*op))];
            submitted.proc_sample(self, *tgid, &labels, t.submitted as f64);
            completed.proc_sample(self, *tgid, &labels, t.completed as f64);
            failed.proc_sample(self, *tgid, &labels, t.failed as f64);
            cancelled.proc_sample(self, *tgid, &labels, t.cancelled as f64);
        }
        for ((tgid, op, path), b) in &by_path {
            let labels = [("op", aio_op_name(*op)), ("path", path.as_str())];
            bytes.proc_sample(self, *tgid, &labels, *b as f64);
        }
        vec![submitted, completed, failed, cancelled, bytes]
    }
}
