use aya_ebpf::{
    helpers::bpf_get_current_task_btf,
    macros::map,
    maps::{Array, LruPerCpuHashMap, PerCpuHashMap},
};
use iolens_common::{
    COMM_LEN, OFFCPU_ENTRIES, OFFCPU_OTHER, OffcpuKey, OffcpuValue, THREAD_SLOTS, WAIT_BUCKETS,
    WAIT_HIST_ENTRIES, WAIT_SLOT_COUNT, WAIT_SLOT_SUM_NS, WAIT_SLOTS, counter,
};

use crate::{
    kernel::{OFFSETS, fresh, load, rd, rdonly_cast},
    process::process_comm,
    regs::{PT_REGS_ORIG_AX, REGS_AT, learn_regs_at},
    slot::{SLOT_OFFCPU, Slot},
    tally::add_to,
    thread::{THREAD_ENTRIES, thread_state},
};

/// Process name -> blocked-time histogram of epoll waits.
#[map]
pub(crate) static EPOLL_WAIT_HIST: PerCpuHashMap<[u8; COMM_LEN], [u64; WAIT_SLOTS]> =
    PerCpuHashMap::with_max_entries(WAIT_HIST_ENTRIES, 0);

/// An all-zero histogram, never written: the value a new process name's
/// histogram is inserted with (see `record_wait_time`).
#[map]
pub(crate) static ZERO_HIST: Array<[u64; WAIT_SLOTS]> = Array::with_max_entries(1, 0);

/// Process and syscall -> time its threads slept inside that syscall.
#[map]
pub(crate) static SYSCALL_OFFCPU: LruPerCpuHashMap<OffcpuKey, OffcpuValue> =
    LruPerCpuHashMap::with_max_entries(OFFCPU_ENTRIES, 0);

/// Settles the syscall `nr` that returned: the time the thread slept
/// inside it, which sched_switch gathers, goes to SYSCALL_OFFCPU if it
/// slept at all, and an epoll wait (`epoll` set) is recorded in the
/// histogram of the process's name even if it slept 0 ns (it found events
/// at once).
///
/// A global function, which the verifier checks once on its own: inlined
/// into sys_exit, the ways to the thread's state (its entry, taking one,
/// task local storage) were walked again along every path that reaches
/// them, past the verifier's limit. It finds the current task itself (a
/// global function takes no typed pointers).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn iolens_record_wait(tgid: u32, nr: u64, epoll: u32) -> u32 {
    record_wait_time(tgid, nr, epoll != 0);
    // The verifier supports only global functions that return a number.
    0
}

#[inline(always)]
pub(crate) fn record_wait_time(tgid: u32, nr: u64, epoll: bool) {
    if rd(&OFFSETS.valid) == 0 {
        return;
    }
    // SAFETY: the current task, as a typed pointer.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    // SAFETY: a typed task pointer at a verifier-known offset.
    let tid: u32 = unsafe { load(task, rd(&OFFSETS.task_pid)) };
    let Some(t) = thread_state(task, tid) else {
        return;
    };
    // SAFETY: the task's own storage, written only in its own context (its
    // switch-outs and syscall exits); `task` is a typed task pointer.
    let ns = unsafe {
        let mut ns = core::mem::replace(&mut (*t).wait_blocked, 0);
        let slept = core::mem::replace(&mut (*t).wait_sleep, 0);
        if slept != 0 && rd(&OFFSETS.sched_info_valid) != 0 {
            // The last sleep ended when the thread came back on CPU.
            let arrival: u64 = load(task, rd(&OFFSETS.task_last_arrival));
            ns += arrival.saturating_sub(slept);
        }
        ns
    };
    if ns != 0 {
        offcpu_account(tgid, offcpu_nr(nr), &OffcpuValue { ns, calls: 1 });
    }
    if !epoll {
        return;
    }
    add_log2(&EPOLL_WAIT_HIST, &process_comm(tgid), ns);
}

/// Records `ns` in the log2 histogram of `key` (the epoll waits' by
/// process name, the block latency's by name and op): bucket i counts
/// [2^i, 2^(i+1)) ns, the last everything longer; then the count and the
/// sum. A new key's histogram goes in zeroed from ZERO_HIST, not from a
/// 336-byte zero on the stack: with it, sys_exit and the epoll record
/// needed 672 bytes of stack together, and kernels without private BPF
/// stacks (Debian's 6.1 and 6.12) refuse more than 512.
#[inline(always)]
pub(crate) fn add_log2<K>(map: &PerCpuHashMap<K, [u64; WAIT_SLOTS]>, key: &K, ns: u64) {
    let bucket = if ns == 0 {
        0
    } else {
        (63 - ns.leading_zeros() as usize).min(WAIT_BUCKETS - 1)
    };
    add_to(
        map,
        key,
        || ZERO_HIST.get(0),
        |h: &mut [u64; WAIT_SLOTS]| {
            // Checked and used in one fresh register: shared by two
            // programs, the compiler reloaded the spilled bucket between
            // the check and the index in block_complete, which even
            // 6.18's verifier refused.
            let bucket = fresh(bucket as u64) as usize;
            if bucket < WAIT_BUCKETS {
                h[bucket] += 1;
            }
            h[WAIT_SLOT_COUNT] += 1;
            h[WAIT_SLOT_SUM_NS] += ns;
        },
        None,
        counter::OTHER_DROPS,
    );
}

/// The sleep of the current thread (`task`, typed; `tid` its id) inside
/// the syscall now returning, taken from its THREAD_ENTRIES entry (and
/// cleared there): Some(ns), 0 if it did not sleep, if the thread holds
/// the entry; None if it does not (see `entry_taken`). Inline, a few
/// loads: sys_exit asks it at every syscall, and most did not sleep.
#[inline(always)]
pub(crate) fn own_sleep(task: *const u8, tid: u32) -> Option<u64> {
    let e = THREAD_ENTRIES.get_ptr_mut(tid & (THREAD_SLOTS - 1))?;
    // SAFETY: the map's entry; its state is written only by its holder,
    // in its own context (its switch-outs and syscall exits: this one),
    // and `task` is a typed task pointer at a verifier-known offset.
    unsafe {
        if (*e).owner != task as u64 {
            return None;
        }
        let t = &raw mut (*e).state;
        let (slept, blocked) = ((*t).wait_sleep, (*t).wait_blocked);
        if (slept | blocked) == 0 {
            return Some(0);
        }
        (*t).wait_sleep = 0;
        (*t).wait_blocked = 0;
        let mut ns = blocked;
        if slept != 0 && rd(&OFFSETS.sched_info_valid) != 0 {
            // The last sleep ended when the thread came back on CPU.
            let arrival: u64 = load(task, rd(&OFFSETS.task_last_arrival));
            ns += arrival.saturating_sub(slept);
        }
        Some(ns)
    }
}

/// Whether another thread holds the THREAD_ENTRIES entry at `tid`: a
/// thread without its own entry then keeps its state in task local
/// storage. A free entry means the thread never switched out since it
/// was free, so it did not sleep.
#[inline(always)]
pub(crate) fn entry_taken(tid: u32) -> bool {
    THREAD_ENTRIES
        .get(tid & (THREAD_SLOTS - 1))
        .is_some_and(|e| e.owner != 0)
}

/// The off-CPU tally key of syscall `nr` (see `OffcpuKey`).
#[inline(always)]
pub(crate) fn offcpu_nr(nr: u64) -> u32 {
    if nr < 1024 { nr as u32 } else { OFFCPU_OTHER }
}

/// Adds `ns` slept in syscall `nr` to the slot's tallies (of the slot's
/// process, the current one); false if they hold two other syscalls.
#[inline(always)]
pub(crate) fn offcpu_to_slot(slot: &mut Slot, nr: u64, ns: u64) -> bool {
    // Tag: the key's number + 1 (0 marks a free tally; OFFCPU_OTHER
    // wraps to 0, so it takes 1024 + 1, which no syscall number gives).
    let tag = if nr < 1024 { nr as u32 + 1 } else { 1025 };
    for i in 0..SLOT_OFFCPU {
        if slot.offcpu_tags[i] == tag {
            slot.offcpu[i].ns += ns;
            slot.offcpu[i].calls += 1;
            return true;
        }
        if slot.offcpu_tags[i] == 0 {
            slot.offcpu_tags[i] = tag;
            slot.offcpu[i] = OffcpuValue { ns, calls: 1 };
            return true;
        }
    }
    false
}

/// The syscall number of a slot tally's tag (see `offcpu_to_slot`).
#[inline(always)]
pub(crate) fn offcpu_tag_nr(tag: u32) -> u32 {
    if tag > 1024 { OFFCPU_OTHER } else { tag - 1 }
}

/// Adds to SYSCALL_OFFCPU: `ns` slept in syscall `nr` (key number) by one
/// or more calls of process `tgid`.
#[inline(always)]
pub(crate) fn offcpu_account(tgid: u32, nr: u32, v: &OffcpuValue) {
    add_to(
        &SYSCALL_OFFCPU,
        &OffcpuKey { tgid, nr },
        || Some(OffcpuValue::default()),
        |t: &mut OffcpuValue| {
            t.ns += v.ns;
            t.calls += v.calls;
        },
        Some(counter::OFFCPU_INSERTS),
        counter::OTHER_DROPS,
    );
}

/// One sleeping call of syscall `nr` (`ns` slept) of process `tgid`,
/// straight to SYSCALL_OFFCPU: when the slot's tallies are taken. A global
/// function, checked once by the verifier, not once per path of sys_exit.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn iolens_offcpu_add(tgid: u32, nr: u64, ns: u64) -> u32 {
    offcpu_account(tgid, offcpu_nr(nr), &OffcpuValue { ns, calls: 1 });
    0
}

/// Whether `task`, switching out, sleeps inside a syscall: the syscall
/// number in its saved user registers is not -1 (an interrupt or exception
/// from user space, a page fault say, stores -1 there). Asked only at
/// voluntary switches; which syscall it was is settled at its exit.
#[inline(always)]
pub(crate) fn in_syscall(task: *const u8) -> bool {
    let at = REGS_AT.get(0).copied().unwrap_or(0);
    let regs = if at > 1 && rd(&OFFSETS.cast_valid) != 0 && rd(&OFFSETS.btf_pt_regs) != 0 {
        // SAFETY: a typed task pointer at a verifier-known offset; then its
        // registers' address, cast (fault-safe) to the type it holds,
        // which saves a helper call (~30 ns here) per voluntary switch.
        unsafe {
            let stack: u64 = load(task, rd(&OFFSETS.task_stack));
            if stack == 0 {
                return false;
            }
            rdonly_cast(stack + at, rd(&OFFSETS.btf_pt_regs))
        }
    } else {
        // SAFETY: `task` is a BTF-typed task pointer; the helper returns
        // its user registers as a typed `struct pt_regs *`.
        let regs = unsafe { aya_ebpf::helpers::generated::bpf_task_pt_regs(task.cast_mut().cast()) }
            as *const u8;
        // The first time, the helper's answer teaches the cast path where
        // registers lie, for every switch after it.
        if at == 0
            && !regs.is_null()
            && rd(&OFFSETS.cast_valid) != 0
            && rd(&OFFSETS.btf_pt_regs) != 0
        {
            learn_regs_at(regs, task);
        }
        regs
    };
    if regs.is_null() {
        return false;
    }
    // SAFETY: a typed pointer and a constant offset (uapi pt_regs).
    let nr: i64 = unsafe { load(regs, PT_REGS_ORIG_AX) };
    nr >= 0
}
