use aya_ebpf::{macros::map, maps::Array};

use crate::kernel::atomic_add;

/// Bumped whenever a kernel address the programs remember may come to name
/// something else; what was remembered before the last bump is not
/// trusted:
/// - every ring creation: a new ring may sit at a freed one's address
///   (ring owners in the slots);
/// - every thread exit: its fd table's memory may come back as another's,
///   and its kernel stack, where its saved registers sit, may go to
///   another task (remembered fd classes; the slots' current tasks, see
///   `current_task`);
/// - where fd classes are remembered (see `remembers_fd_classes`), after
///   everything that closes or replaces fds (the syscalls in CLOSES_FDS,
///   the ioctls in REPLACES_FDS, io_uring closes). An fd can only come to
///   hold another file through one of those or an exit.
///
/// Its top bit (EPOCH_LIVE), which the agent sets once the exit program is
/// attached, lets sys_exit remember current tasks: without the exit bumps
/// that would not be safe.
#[map]
pub(crate) static EPOCH: Array<u64> = Array::with_max_entries(1, 0);

/// The machine-wide epoch of remembered kernel addresses (see EPOCH).
#[inline(always)]
pub(crate) fn epoch() -> u64 {
    match EPOCH.get_ptr(0) {
        // SAFETY: a valid map value; a torn read is impossible for an
        // aligned u64, and a stale one only costs a cache miss.
        Some(p) => unsafe { core::ptr::read_volatile(p) },
        None => 0,
    }
}

/// Retires everything remembered (see EPOCH). Atomic: with a plain
/// read-modify-write, a CPU held up between its read and its write (a
/// preempted vCPU) could put back a value older than later bumps, and so
/// revive what those retired.
#[inline(always)]
pub(crate) fn bump_epoch() {
    if let Some(p) = EPOCH.get_ptr_mut(0) {
        // SAFETY: a valid map value.
        unsafe { atomic_add(p, 1) };
    }
}
