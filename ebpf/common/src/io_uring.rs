//! The io_uring family: per (owner, opcode) tallies and ring owners.

use crate::Accumulate;

/// Capacity of the per-process, per-opcode io_uring statistics.
pub const URING_ENTRIES: u32 = 8_192;
/// Capacity of the io_uring ring -> owner table.
pub const RING_ENTRIES: u32 = 4_096;

/// Key of the io_uring statistics: process and opcode.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UringKey {
    pub tgid: u32,
    pub opcode: u8,
    pub _pad: [u8; 3],
}

/// io_uring statistics per process and opcode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UringValue {
    pub submitted: u64,
    pub completed: u64,
    /// Completions with res < 0.
    pub failed: u64,
    /// Sum of res > 0 for opcodes whose result is a byte count.
    pub bytes: u64,
}

impl Accumulate for UringValue {
    #[inline(always)]
    fn accumulate(&mut self, o: &Self) {
        self.submitted += o.submitted;
        self.completed += o.completed;
        self.failed += o.failed;
        self.bytes += o.bytes;
    }
}

/// Opcode recorded when the request could not be read.
pub const URING_OP_UNKNOWN: u8 = 255;

/// Whether an io_uring opcode's positive result is a byte count.
pub const fn uring_op_moves_bytes(op: u8) -> bool {
    // READV WRITEV READ_FIXED WRITE_FIXED SENDMSG RECVMSG READ WRITE SEND
    // RECV SPLICE TEE SEND_ZC SENDMSG_ZC READ_MULTISHOT RECV_ZC READV_FIXED
    // WRITEV_FIXED
    matches!(
        op,
        1 | 2 | 4 | 5 | 9 | 10 | 22 | 23 | 26 | 27 | 30 | 33 | 47 | 48 | 49 | 58 | 60 | 61
    )
}
