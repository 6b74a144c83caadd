use aya_ebpf::{macros::map, maps::PerCpuArray};
use iolens_common::{
    Accumulate, Endpoint, OffcpuValue, ProcCounters, StatKey, StatValue, UringValue,
};

use crate::{
    io_uring::uring_account,
    process::with_proc,
    syscalls::account,
    waits::{offcpu_account, offcpu_tag_nr},
};

/// What the process that last made a syscall on this CPU has done since,
/// not yet in the maps: one per CPU, looked up without hashing. Flushed
/// when another process makes a syscall or is switched in on this CPU,
/// when a thread of its process exits, and every `SLOT_FLUSH_EVENTS`
/// syscalls; so when a process is not running, or has been reaped, all it
/// did is in the maps.
#[map]
pub(crate) static CPU_SLOT: PerCpuArray<Slot> = PerCpuArray::with_max_entries(1, 0);

pub(crate) const SLOT_KEYS: usize = 4;
pub(crate) const SLOT_FLUSH_EVENTS: u32 = 128;

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Slot {
    pub(crate) tgid: u32,
    /// Set while sys_exit updates the slot; sched_switch leaves a busy
    /// slot alone.
    pub(crate) busy: u32,
    /// Syscalls since the last flush.
    pub(crate) events: u32,
    pub(crate) tags: [u32; SLOT_KEYS],
    pub(crate) stats: [StatValue; SLOT_KEYS],
    pub(crate) proc: ProcCounters,
    /// io_uring tallies of the slot's process by opcode (tag 0x100|op).
    pub(crate) uring_tags: [u32; SLOT_URING],
    pub(crate) uring: [UringValue; SLOT_URING],
    /// Off-CPU time of the slot's process by syscall (see
    /// `waits::offcpu_to_slot`; tag 0: free).
    pub(crate) offcpu_tags: [u32; SLOT_OFFCPU],
    pub(crate) offcpu: [OffcpuValue; SLOT_OFFCPU],
    /// The last ring seen on this CPU and its owner, as of `ring_epoch`.
    pub(crate) ring: u64,
    pub(crate) ring_owner: u32,
    pub(crate) ring_epoch: u64,
    /// The last two tasks that made syscalls on this CPU and the addresses
    /// of their saved registers, most recent first, as of `task_epoch`;
    /// see `current_task`. Kept across flushes.
    pub(crate) regs: [u64; 2],
    pub(crate) tasks: [u64; 2],
    pub(crate) task_epoch: u64,
    /// The process last named in PROC_INFO from this slot, as of
    /// `named_epoch`; see `claim`. Kept across flushes.
    pub(crate) named: u32,
    pub(crate) named_epoch: u64,
}

pub(crate) const SLOT_URING: usize = 4;

/// Off-CPU tallies per slot: a process sleeps in a syscall or two (a
/// server in epoll_wait and futex, a ping-pong in read).
pub(crate) const SLOT_OFFCPU: usize = 2;

/// A slot tally's tag: never 0, which marks a free tally.
#[inline(always)]
pub(crate) fn slot_tag(syscall: u8, src: Endpoint, dst: Endpoint, failed: bool) -> u32 {
    (failed as u32) << 25 | 1 << 24 | (syscall as u32) << 16 | (src as u32) << 8 | dst as u32
}

/// Moves what the slot holds into the maps and empties it. Not inlined:
/// it runs once per process change or 128 syscalls, and inlined at each
/// call site it multiplied the paths the verifier walks past its limit.
#[inline(never)]
pub(crate) fn flush(slot: &mut Slot) {
    let tgid = slot.tgid;
    if tgid != 0 {
        for i in 0..SLOT_KEYS {
            let tag = slot.tags[i];
            if tag != 0 {
                let key = StatKey {
                    tgid,
                    syscall: (tag >> 16) as u8,
                    src: (tag >> 8) as u8,
                    dst: tag as u8,
                    failed: (tag >> 25) as u8 & 1,
                };
                account(&key, &slot.stats[i]);
            }
        }
        for i in 0..SLOT_URING {
            let tag = slot.uring_tags[i];
            if tag != 0 {
                uring_account(tgid, tag as u8, &slot.uring[i], false);
            }
        }
        // Added from the slot in place: a copy here (and the zero it was
        // compared with) cost 176 bytes of the 512 that sys_exit and its
        // calls may use together on kernels without private BPF stacks.
        for i in 0..SLOT_OFFCPU {
            let tag = slot.offcpu_tags[i];
            if tag != 0 {
                offcpu_account(tgid, offcpu_tag_nr(tag), &slot.offcpu[i]);
            }
        }
        let d = &slot.proc;
        if d.syscalls
            | d.vcsw
            | d.ivcsw
            | d.oncpu_ns
            | d.sleep_ns
            | d.cache_lookup_pages
            | d.cache_added_pages
            | d.cache_faults
            | d.cache_mapped_pages
            | d.cache_dirtied_pages
            | d.rings_created
            != 0
        {
            with_proc(tgid, false, |p| p.accumulate(d));
        }
    }
    clear(slot);
}

/// Empties the slot but for `busy`. The tallies' values are left: a tally
/// is overwritten when its tag is taken. Volatile stores, field by field
/// (see `zero`): `*slot = Slot::default()` was some 2,100 instructions of
/// `memset`, run at every process change on a CPU.
#[inline(always)]
pub(crate) fn clear(slot: &mut Slot) {
    zero(&mut slot.tags);
    zero(&mut slot.uring_tags);
    zero(&mut slot.offcpu_tags);
    // SAFETY: writes of plain integers inside `slot`; the word count is
    // the size of ProcCounters, which holds u64s only.
    unsafe {
        core::ptr::write_volatile(&raw mut slot.tgid, 0);
        core::ptr::write_volatile(&raw mut slot.events, 0);
        let proc = (&raw mut slot.proc).cast::<u64>();
        for i in 0..size_of::<ProcCounters>() / 8 {
            core::ptr::write_volatile(proc.add(i), 0);
        }
        core::ptr::write_volatile(&raw mut slot.ring, 0);
    }
}

/// Zeroes `a` with volatile stores, one per element. Any plain zeroing of
/// an array or struct, even of 16 bytes, compiled to a call to the BPF
/// target's byte-at-a-time `memset`.
#[inline(always)]
pub(crate) fn zero<T: Copy + Default, const N: usize>(a: &mut [T; N]) {
    for x in a {
        // SAFETY: a valid, aligned element of a live array.
        unsafe { core::ptr::write_volatile(x, T::default()) };
    }
}
