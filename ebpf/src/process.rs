use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::{Array, LruHashMap, LruPerCpuHashMap},
    programs::TracePointContext,
};
use iolens_common::{COMM_LEN, DEFAULT_PROC_ENTRIES, ProcCounters, ProcInfo, counter};

use crate::{
    epoch::bump_epoch,
    health::bump,
    kernel::{BPF_NOEXIST, OFFSETS, current_comm, load, rd},
    slot::{CPU_SLOT, flush},
    tally::add_to,
    thread::{move_thread_entry, release_thread_entry},
};

#[map]
pub(crate) static PROC_INFO: LruHashMap<u32, ProcInfo> =
    LruHashMap::with_max_entries(DEFAULT_PROC_ENTRIES, 0);

#[map]
pub(crate) static PROC_COUNTERS: LruPerCpuHashMap<u32, ProcCounters> =
    LruPerCpuHashMap::with_max_entries(DEFAULT_PROC_ENTRIES, 0);

/// All-zero counters, never written: the value a new process's counters
/// are inserted with (see `with_proc`).
#[map]
pub(crate) static ZERO_PROC: Array<ProcCounters> = Array::with_max_entries(1, 0);

/// The process's name as recorded in PROC_INFO, else the thread's.
#[inline(always)]
pub(crate) fn process_comm(tgid: u32) -> [u8; COMM_LEN] {
    match PROC_INFO.get_ptr(tgid) {
        // SAFETY: a valid map value pointer.
        Some(p) => unsafe { (*p).comm },
        None => current_comm(),
    }
}

/// Adds to the process's counters, creating them on first use.
/// `name`: the current task belongs to `tgid`, so a new process may be
/// named after it.
#[inline(always)]
pub(crate) fn with_proc(tgid: u32, name: bool, f: impl Fn(&mut ProcCounters)) {
    let inserted = add_to(
        &PROC_COUNTERS,
        &tgid,
        // From ZERO_PROC, not an 88-byte zero (and a memset call) on the
        // stack of every caller: in the slot's flush it set the deepest
        // stack of sys_exit and sched_switch (see `slot::flush`).
        || ZERO_PROC.get(0),
        &f,
        Some(counter::PROC_COUNTERS_INSERTS),
        counter::OTHER_DROPS,
    );
    if inserted && name {
        remember_process(tgid);
    }
}

/// Records the process's name the first time it is seen, from its group
/// leader: a thread's own comm may have been renamed (`tokio-runtime-w`).
#[inline(always)]
pub(crate) fn remember_process(tgid: u32) {
    if PROC_INFO.get_ptr(tgid).is_some() {
        return;
    }
    let info = ProcInfo {
        comm: leader_comm().unwrap_or_else(current_comm),
        exit_ns: 0,
    };
    if PROC_INFO.insert(tgid, info, BPF_NOEXIST).is_ok() {
        bump(counter::PROC_INFO_INSERTS);
    }
}

#[inline(always)]
pub(crate) fn leader_comm() -> Option<[u8; COMM_LEN]> {
    if rd(&OFFSETS.valid) == 0 {
        return None;
    }
    // SAFETY: the current task as a typed pointer, and the leader loaded
    // from it: typed loads at verifier-known offsets.
    unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        let leader: *const u8 = load(task, rd(&OFFSETS.task_group_leader));
        if leader.is_null() {
            return None;
        }
        Some(load(leader, rd(&OFFSETS.task_comm)))
    }
}

/// `sched:sched_process_exec`: the process has a new name; and a thread
/// other than the leader that called exec now has the leader's id.
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn iolens_exec(ctx: TracePointContext) -> u32 {
    // SAFETY: `pid` and `old_pid` are at offsets 12 and 16 in this
    // tracepoint's format.
    let (pid, old_pid) = unsafe { (ctx.read_at::<u32>(12), ctx.read_at::<u32>(16)) };
    if let (Ok(pid), Ok(old_pid)) = (pid, old_pid)
        && pid != old_pid
    {
        // SAFETY: the current task, as a typed pointer.
        let task = unsafe { bpf_get_current_task_btf() } as *const u8;
        move_thread_entry(task, old_pid, pid);
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some(p) = PROC_INFO.get_ptr_mut(tgid) {
        // SAFETY: a valid map value pointer; a concurrent reader sees either
        // name, both of which were true.
        unsafe { (*p).comm = current_comm() };
    }
    0
}

/// `sched:sched_process_exit`, for every exiting thread: stamp the exit of
/// a thread group leader so the agent can keep its series for the grace
/// period and then drop them.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn iolens_exit(_ctx: TracePointContext) -> u32 {
    // Before exit_files and before the stack is freed: the thread's fd
    // table and stack may come back as another thread's.
    bump_epoch();
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, pid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // SAFETY: the current task; only its address is used.
    release_thread_entry(unsafe { bpf_get_current_task_btf() } as u64, pid);
    // What the exiting thread's process did on this CPU goes to the maps
    // now, before exit_notify wakes the parent: its final switch-out, which
    // would flush otherwise, can come after the parent has reaped it and
    // scraped (seen in a 6.12 VM under single-threaded TCG: a child's 7
    // writes read as 0 right after its wait returned). This runs in the
    // exiting task, not preempted; a busy slot belongs to a sys_exit run
    // this CPU interrupted, of another task.
    if let Some(s) = CPU_SLOT.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, and no other program runs on it now.
        let s = unsafe { &mut *s };
        if s.busy == 0 && s.tgid == tgid {
            flush(s);
        }
    }
    if tgid != pid {
        return 0;
    }
    if let Some(p) = PROC_INFO.get_ptr_mut(tgid) {
        // SAFETY: a valid map value pointer.
        unsafe { (*p).exit_ns = bpf_ktime_get_ns() };
    }
    0
}
