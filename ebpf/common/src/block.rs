//! The block family: disk requests per owning process, device and
//! operation, and their latency by process name.

use crate::{Accumulate, COMM_LEN};

/// Capacity of the per-(process, device, op) block statistics.
pub const BLOCK_ENTRIES: u32 = 8_192;
/// Capacity of the in-flight request table (`struct request *` -> owner).
/// A device's queue holds at most a few thousand requests at once.
pub const BLOCK_REQ_ENTRIES: u32 = 16_384;
/// Capacity of the latency histograms (one per process name and op).
pub const BLOCK_HIST_ENTRIES: u32 = 1_024;

/// The owner of requests no start, insert or issue was seen for (issued
/// before iolens attached): counted, not dropped, and exported apart.
pub const BLOCK_UNATTRIBUTED: u32 = 0;

/// Operations, from `cmd_flags & REQ_OP_MASK` (include/linux/blk_types.h:
/// REQ_OP_READ 0, REQ_OP_WRITE 1, REQ_OP_FLUSH 2, REQ_OP_DISCARD 3).
pub const BLOCK_OP_READ: u8 = 0;
pub const BLOCK_OP_WRITE: u8 = 1;
pub const BLOCK_OP_FLUSH: u8 = 2;
pub const BLOCK_OP_DISCARD: u8 = 3;
/// Everything else (secure erase, write zeroes, zone and driver ops).
pub const BLOCK_OP_OTHER: u8 = 4;

/// The op label of a `cmd_flags & REQ_OP_MASK` value, folded to the five
/// kept apart.
pub const fn block_op(raw: u32) -> u8 {
    match raw {
        0 => BLOCK_OP_READ,
        1 => BLOCK_OP_WRITE,
        2 => BLOCK_OP_FLUSH,
        3 => BLOCK_OP_DISCARD,
        _ => BLOCK_OP_OTHER,
    }
}

pub const fn block_op_name(op: u8) -> &'static str {
    match op {
        BLOCK_OP_READ => "read",
        BLOCK_OP_WRITE => "write",
        BLOCK_OP_FLUSH => "flush",
        BLOCK_OP_DISCARD => "discard",
        _ => "other",
    }
}

/// A request struct's entry: its current use completed (no owner).
pub const BLOCK_REQ_DONE: u32 = 0;
/// In flight, owned by `tgid`.
pub const BLOCK_REQ_LIVE: u32 = 1;
/// In flight, owned by a process outside --pid/--comm/--cgroup: not
/// counted.
pub const BLOCK_REQ_SKIP: u32 = 2;

/// A request struct's current use: who owns it, since when.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockReq {
    /// Owner's tgid.
    pub tgid: u32,
    /// `BLOCK_REQ_*`.
    pub state: u32,
    /// bpf_ktime_get_ns at the last issue to the driver; 0 before.
    pub issue_ns: u64,
    /// The owner's process name, for the latency histogram (the owner is
    /// not the current task at completion).
    pub comm: [u8; COMM_LEN],
}

/// Key of the block statistics: owner, device (dev_t of the whole disk,
/// `MKDEV(major, first_minor)` as the kernel encodes it: major << 20 |
/// minor) and op.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockKey {
    pub tgid: u32,
    pub dev: u32,
    pub op: u8,
    pub _pad: [u8; 7],
}

/// Completed requests and their bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockValue {
    pub bytes: u64,
    pub requests: u64,
}

impl Accumulate for BlockValue {
    #[inline(always)]
    fn accumulate(&mut self, o: &Self) {
        self.bytes += o.bytes;
        self.requests += o.requests;
    }
}

/// Key of the latency histograms: process name and op. The value has the
/// layout of the epoll histogram (`WAIT_SLOTS`: log2 ns buckets, count,
/// sum).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockHistKey {
    pub comm: [u8; COMM_LEN],
    pub op: u8,
    pub _pad: [u8; 7],
}

/// dev_t's major and minor (include/linux/kdev_t.h: MINORBITS 20).
pub const fn dev_major(dev: u32) -> u32 {
    dev >> 20
}
pub const fn dev_minor(dev: u32) -> u32 {
    dev & ((1 << 20) - 1)
}
