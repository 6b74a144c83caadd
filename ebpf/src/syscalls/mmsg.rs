use aya_ebpf::helpers::{bpf_get_current_task_btf, bpf_probe_read_user};
use iolens_common::counter;

use crate::{health::bump, regs::in_compat_syscall};

/// x86_64 `struct mmsghdr` (uapi): a 56-byte `struct msghdr`, then the
/// `unsigned int msg_len` the kernel fills in, padded to 64 bytes; an ia32
/// caller's `struct compat_mmsghdr`: a 28-byte msghdr, then msg_len.
pub(crate) const MMSGHDR_SIZE: [u64; 2] = [64, 32];
pub(crate) const MMSGHDR_MSG_LEN: [u64; 2] = [56, 28];
/// The kernel handles at most UIO_MAXIOV messages per call.
pub(crate) const MMSG_MAX: u64 = 1024;

/// Bytes moved by a sendmmsg/recvmmsg that returned `n` messages: the sum
/// of the `msg_len` the kernel just wrote into the first `n` entries of the
/// caller's array at `vec`. One user read per message (the syscall itself
/// moved a packet per message, which costs far more). A message whose
/// entry cannot be read (paged out since) counts 0 bytes and a drop.
///
/// A global function: the verifier checks it once, on its own. Inlined
/// into sys_exit, its loop was walked again along every path that reaches
/// it, past the verifier's million-instruction limit. It asks itself
/// whether the call is an ia32 one, which sys_exit does not pass along:
/// a known 0 or 1 there would double the paths the verifier walks.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn iolens_mmsg_bytes(vec: u64, n: u64) -> u64 {
    // SAFETY: the current task, as a typed pointer.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    let (size, len_at) = if in_compat_syscall(task) {
        (MMSGHDR_SIZE[1], MMSGHDR_MSG_LEN[1])
    } else {
        (MMSGHDR_SIZE[0], MMSGHDR_MSG_LEN[0])
    };
    let mut sum = 0u64;
    let mut i = 0u64;
    while i < n && i < MMSG_MAX {
        let at = vec + i * size + len_at;
        // SAFETY: a fault-safe read of the caller's own memory.
        match unsafe { bpf_probe_read_user(at as *const u32) } {
            Ok(len) => sum += u64::from(len),
            Err(_) => bump(counter::OTHER_DROPS),
        }
        i += 1;
    }
    sum
}
