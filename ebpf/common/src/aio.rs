//! The aio family (Linux native AIO: io_submit, io_getevents,
//! io_pgetevents, io_cancel): per (process, opcode, ends) tallies, and the
//! iocbs in flight between their submission and their completion.

use crate::{Accumulate, Endpoint};

/// Capacity of the per-process, per-opcode AIO statistics.
pub const AIO_ENTRIES: u32 = 8_192;
/// Capacity of the in-flight iocb table. A process with more iocbs in
/// flight than this loses the oldest ones' opcodes (LRU): their
/// completions count under op="unknown".
pub const AIO_INFLIGHT_ENTRIES: u32 = 16_384;
/// iocbs read per io_submit, and events per io_getevents: a bound the
/// verifier can walk. Past it an io_submit's iocbs count as submitted with
/// op="unknown", and an io_getevents's events are not read (counted in
/// `counter::AIO_UNREAD`).
pub const AIO_BATCH: u64 = 64;

/// Opcode recorded when the iocb could not be read (or was past
/// [`AIO_BATCH`], or its submission was not seen).
pub const AIO_OP_UNKNOWN: u8 = 255;

/// `IOCB_CMD_*` (include/uapi/linux/aio_abi.h).
pub const IOCB_CMD_PREAD: u8 = 0;
pub const IOCB_CMD_PWRITE: u8 = 1;
pub const IOCB_CMD_FSYNC: u8 = 2;
pub const IOCB_CMD_FDSYNC: u8 = 3;
pub const IOCB_CMD_POLL: u8 = 5;
pub const IOCB_CMD_NOOP: u8 = 6;
pub const IOCB_CMD_PREADV: u8 = 7;
pub const IOCB_CMD_PWRITEV: u8 = 8;

/// x86_64 syscall numbers. The ia32 ones (245-249, 385) are not
/// translated: an ia32 process's AIO is not counted (its iocb pointers and
/// io_event layout would need their own reading).
pub const NR_IO_GETEVENTS: u64 = 208;
pub const NR_IO_SUBMIT: u64 = 209;
pub const NR_IO_CANCEL: u64 = 210;
pub const NR_IO_PGETEVENTS: u64 = 333;

/// The uapi `struct io_event` { data, obj, res, res2 }: 32 bytes, the
/// kernel side reads the first 24 (`obj` is the user iocb's address).
pub const IO_EVENT_SIZE: u64 = 32;

/// The name of an opcode (the `op` label): the IOCB_CMD_ name, lower case.
pub const fn aio_op_name(op: u8) -> &'static str {
    match op {
        IOCB_CMD_PREAD => "pread",
        IOCB_CMD_PWRITE => "pwrite",
        IOCB_CMD_FSYNC => "fsync",
        IOCB_CMD_FDSYNC => "fdsync",
        IOCB_CMD_POLL => "poll",
        IOCB_CMD_NOOP => "noop",
        IOCB_CMD_PREADV => "preadv",
        IOCB_CMD_PWRITEV => "pwritev",
        _ => "unknown",
    }
}

/// Whether an opcode's positive result is a byte count.
pub const fn aio_op_moves_bytes(op: u8) -> bool {
    matches!(
        op,
        IOCB_CMD_PREAD | IOCB_CMD_PWRITE | IOCB_CMD_PREADV | IOCB_CMD_PWRITEV
    )
}

/// The ends of an opcode's transfer on a file of class `fd`: reads go
/// from the file to user memory, writes the other way; the rest move no
/// bytes and keep the file as their source.
pub const fn aio_op_ends(op: u8, fd: Endpoint) -> (Endpoint, Endpoint) {
    match op {
        IOCB_CMD_PREAD | IOCB_CMD_PREADV => (fd, Endpoint::User),
        IOCB_CMD_PWRITE | IOCB_CMD_PWRITEV => (Endpoint::User, fd),
        _ => (fd, Endpoint::Other),
    }
}

/// Key of the AIO statistics: process, opcode and the transfer's ends
/// ([`Endpoint`]s; `Unknown` when the fd could not be classified or the
/// submission was not seen).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AioKey {
    pub tgid: u32,
    pub opcode: u8,
    pub src: u8,
    pub dst: u8,
    pub _pad: u8,
}

/// AIO statistics per key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AioValue {
    /// iocbs io_submit accepted.
    pub submitted: u64,
    /// io_events io_getevents/io_pgetevents returned.
    pub completed: u64,
    /// Completions with res < 0.
    pub failed: u64,
    /// Sum of res > 0 of reads and writes.
    pub bytes: u64,
    /// io_cancel calls the kernel accepted (the completion still arrives
    /// through io_getevents).
    pub cancelled: u64,
}

impl Accumulate for AioValue {
    #[inline(always)]
    fn accumulate(&mut self, o: &Self) {
        self.submitted += o.submitted;
        self.completed += o.completed;
        self.failed += o.failed;
        self.bytes += o.bytes;
        self.cancelled += o.cancelled;
    }
}

/// Key of the in-flight table: the process, its iocb's user address and
/// its `aio_data` (what io_event's `obj` and `data` give back). Both: the
/// kernel copies an iocb at submission, so a program may reuse the
/// memory while the first is in flight (the file sender's reads do, from
/// one stack slot), and then tells its completions apart by the data.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AioInflightKey {
    pub tgid: u32,
    pub _pad: u32,
    pub iocb: u64,
    pub data: u64,
}

/// What a completion needs of its submission.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AioInflight {
    pub opcode: u8,
    pub src: u8,
    pub dst: u8,
    pub _pad: u8,
    /// iocbs in flight under this key (a program that cannot tell them
    /// apart either may submit the same one again).
    pub count: u32,
}
