use aya_ebpf::{
    helpers::bpf_get_current_task_btf,
    macros::{btf_tracepoint, map},
    maps::LruPerCpuHashMap,
    programs::BtfTracePointContext,
};
use iolens_common::{
    Accumulate, DEFAULT_STATS_ENTRIES, EPOCH_LIVE, Endpoint, SYSCALL_INFO, Shape, StatKey,
    StatValue, SyscallInfo, counter,
};

use self::{
    fd_class::{fd_endpoint, pipe_ends, remembers_fd_classes},
    mmsg::iolens_mmsg_bytes,
};
use crate::{
    epoch::{bump_epoch, epoch},
    filter::passes_filters,
    kernel::{OFFSETS, current_tgid, load, rd, rdonly_cast},
    process::remember_process,
    regs::{SyscallArgs, in_compat_syscall},
    slot::{CPU_SLOT, SLOT_FLUSH_EVENTS, SLOT_KEYS, Slot, flush, slot_tag, zero},
    tally::add_to,
    waits::{entry_taken, iolens_offcpu_add, iolens_record_wait, offcpu_to_slot, own_sleep},
};

pub(crate) mod fd_class;
pub(crate) mod mmsg;

#[map]
pub(crate) static SYSCALL_STATS: LruPerCpuHashMap<StatKey, StatValue> =
    LruPerCpuHashMap::with_max_entries(DEFAULT_STATS_ENTRIES, 0);

/// x86_64 syscalls that close or replace fds: close, dup2, dup3, execve
/// (close-on-exec), execveat, close_range.
pub(crate) const CLOSES_FDS: [u64; 6] = [3, 33, 292, 59, 322, 436];

/// ioctl(2) (x86_64 16) requests that close or replace fds of a process:
/// SECCOMP_IOCTL_NOTIF_ADDFD (a supervisor may replace the target's fd)
/// and binder's BINDER_WRITE_READ (freeing a transaction closes fds).
pub(crate) const IOCTL: u64 = 16;
pub(crate) const REPLACES_FDS: [u32; 2] = [0x4018_2103, 0xc030_6201];

#[btf_tracepoint(function = "sys_exit")]
#[inline(always)]
pub fn iolens_sys_exit(ctx: BtfTracePointContext) -> i32 {
    try_sys_exit(&ctx);
    0
}

#[inline(always)]
pub(crate) fn try_sys_exit(ctx: &BtfTracePointContext) {
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    let Some(slot) = CPU_SLOT.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot. The program is not re-entered on a CPU (the
    // kernel skips recursive runs), and `busy` keeps sched_switch from
    // flushing it under us should this run ever be preempted.
    let slot = unsafe { &mut *slot };
    if regs.is_null() {
        return;
    }
    // The current task as a typed pointer: its tgid is one load
    // (bpf_get_current_pid_tgid would be a helper call, ~25 ns).
    let task = current_task(slot, regs);
    let tgid = if rd(&OFFSETS.valid) != 0 {
        // SAFETY: a typed task pointer at a verifier-known offset.
        unsafe { load::<u32>(task, rd(&OFFSETS.task_tgid)) }
    } else {
        current_tgid()
    };
    if tgid == 0 || !passes_filters(tgid) {
        return;
    }
    // An ia32 call (a 32-bit process, or int 0x80) passes its arguments in
    // bx, cx, dx and has its own numbers: read as x86_64, its getpid would
    // be a writev of pid bytes.
    let compat = in_compat_syscall(task);
    // SAFETY: `regs` is the tracepoint's typed `struct pt_regs *`: the
    // verifier turns these loads into fault-safe kernel loads, with no
    // helper call (bpf_probe_read_kernel costs ~45 ns a call here).
    let args = unsafe { SyscallArgs::read(regs, compat) };
    slot.busy = 1;
    if slot.tgid != tgid {
        claim(slot, tgid);
    }
    // The bound check and the index on one fresh register: `nr` lives
    // (spilled) to the end of sys_exit, and the 6.1 verifier refused a
    // reload of it after the check (`math between map_value pointer and
    // register with unbounded min value`). Here, not in syscall_info:
    // there it cost sched_switch's epoll check 3 instructions.
    match syscall_info(crate::kernel::fresh(args.nr)) {
        // Every syscall is a user->kernel->user round trip. Accounted ones
        // are counted in SYSCALL_STATS; user space adds the two.
        None => slot.proc.syscalls += 1,
        Some(info) => account_syscall(slot, task, info, &args, ret),
    }
    slot.events += 1;
    if slot.events >= SLOT_FLUSH_EVENTS {
        // Bounds how far a busy process's counters can lag behind it when
        // its CPU never switches to another process.
        flush(slot);
        slot.tgid = tgid;
    }
    slot.busy = 0;
    let nr = args.nr;
    // remembers_fd_classes first: with casts it is a constant false the
    // verifier knows, and it drops the compares with the branch, which
    // every successful syscall paid before.
    if remembers_fd_classes()
        && ret >= 0
        && (CLOSES_FDS.contains(&nr) || nr == IOCTL && REPLACES_FDS.contains(&(args.arg1 as u32)))
    {
        // An fd was closed or replaced: its remembered class is retired.
        bump_epoch();
    }
    // The time the thread slept inside this call, if it did (off CPU by
    // syscall); an epoll wait is recorded in its histogram either way.
    // Asked at every call, so the common answer (no sleep) is a few loads.
    settle_sleep(slot, task, tgid, nr);
    // Last, and given only what is live here anyway: passing the
    // arguments kept them live through sys_exit, 16 more bytes of stack.
    crate::aio::on_sys_exit(nr, ret);
}

/// Gives the slot to `tgid`, after flushing what another process left in
/// it (a slot whose tgid is 0 is empty: flushed at a switch to idle, or
/// never used).
///
/// The process is named here, in its own context (a flush may run in
/// another task's, sched_switch, and must not name it after that), unless
/// this slot named it since the last epoch bump: no thread exited since,
/// so the tgid cannot belong to another process yet. A process that
/// sleeps in every syscall (O_DIRECT reads, a blocking accept) finds its
/// CPU's slot flushed at each switch to idle and claims it at each
/// syscall exit: the PROC_INFO lookup and the clear of an empty slot were
/// ~120 ns of sys_exit's ~510 in each such call here (odirect loop,
/// `--program-stats`, three A/B pairs), all of it on the caller's CPU
/// time. Only while the exit program bumps the epoch (EPOCH_LIVE). A name
/// PROC_INFO's LRU evicted meanwhile comes back at the next bump.
#[inline(always)]
fn claim(slot: &mut Slot, tgid: u32) {
    if slot.tgid != 0 {
        flush(slot);
    }
    slot.tgid = tgid;
    let epoch = epoch();
    if epoch & EPOCH_LIVE == 0 || slot.named != tgid || slot.named_epoch != epoch {
        remember_process(tgid);
        slot.named = tgid;
        slot.named_epoch = epoch;
    }
}

/// Settles the off-CPU time of the syscall `nr` now returning, if the
/// thread slept in it: into the slot's tallies when the thread holds its
/// THREAD_ENTRIES entry (the common case: a few loads, and no hash update,
/// which cost the pipe ping-pong ~100 ns a sleeping read), else (its state
/// in task local storage, or an epoll wait, whose histogram needs the
/// process name) through `iolens_record_wait`.
#[inline(always)]
fn settle_sleep(slot: &mut Slot, task: *const u8, tgid: u32, nr: u64) {
    if rd(&OFFSETS.valid) == 0 {
        return;
    }
    let epoll = syscall_info(nr).is_some_and(SyscallInfo::is_epoll);
    // SAFETY: a typed task pointer at a verifier-known offset.
    let tid: u32 = unsafe { load(task, rd(&OFFSETS.task_pid)) };
    if epoll {
        // The histogram's way, which also settles the off-CPU time.
        let _ = iolens_record_wait(tgid, nr, 1);
        return;
    }
    let Some(ns) = own_sleep(task, tid) else {
        // Not its entry: a free one means the thread never switched out
        // (so never slept), another's that its state is in task storage.
        if entry_taken(tid) {
            let _ = iolens_record_wait(tgid, nr, 0);
        }
        return;
    };
    if ns == 0 {
        return;
    }
    slot.busy = 1;
    if !offcpu_to_slot(slot, nr, ns) {
        // The slot's tallies hold other syscalls: straight to the map.
        let _ = iolens_offcpu_add(tgid, nr, ns);
    }
    slot.busy = 0;
}

/// The current task, whose saved user registers are at `regs`. With
/// casts, remembered per CPU with that address, which is the task's own
/// while it lives (the registers sit on its kernel stack): a syscall of
/// one of the last two tasks that made one on this CPU (a loop, or two
/// threads taking turns) needs no helper call (~25 ns here, a call and a
/// return under the SRSO mitigation). A stack, and so the address, can
/// pass to another task only after its task exited, and every thread exit
/// bumps EPOCH first.
///
/// Both ways end in the same cast, so that the verifier walks the rest of
/// sys_exit with one pointer type, not once per way.
#[inline(always)]
pub(crate) fn current_task(slot: &mut Slot, regs: *const u8) -> *const u8 {
    if rd(&OFFSETS.cast_valid) == 0 || rd(&OFFSETS.btf_task) == 0 {
        // SAFETY: no preconditions; the current task, typed.
        return unsafe { bpf_get_current_task_btf() } as *const u8;
    }
    let epoch = epoch();
    if slot.task_epoch != epoch {
        zero(&mut slot.tasks);
        slot.task_epoch = epoch;
    }
    let live = epoch & EPOCH_LIVE != 0;
    let regs = regs as u64;
    let addr = if live && slot.tasks[0] != 0 && slot.regs[0] == regs {
        slot.tasks[0]
    } else if live && slot.tasks[1] != 0 && slot.regs[1] == regs {
        slot.tasks[1]
    } else {
        // SAFETY: no preconditions; the current task.
        let task = unsafe { bpf_get_current_task_btf() } as u64;
        slot.regs = [regs, slot.regs[0]];
        slot.tasks = [task, slot.tasks[0]];
        task
    };
    // SAFETY: cast_valid is set; a task_struct's address, typed as one.
    unsafe { rdonly_cast(addr, rd(&OFFSETS.btf_task)) }
}

/// What sys_exit accounts of x86_64 syscall `nr`; None if it only counts it.
#[inline(always)]
pub(crate) fn syscall_info(nr: u64) -> Option<SyscallInfo> {
    let info = *SYSCALL_INFO.get(usize::try_from(nr).ok()?)?;
    (info != SyscallInfo::NONE).then_some(info)
}

#[inline(always)]
pub(crate) fn account_syscall(
    slot: &mut Slot,
    task: *const u8,
    info: SyscallInfo,
    args: &SyscallArgs,
    ret: i64,
) {
    let mut scanned = 0;
    let (src, dst) = if ret < 0 {
        // A failed call moved nothing; leave the path unknown rather than
        // spend reads classifying fds that may not exist.
        (Endpoint::Unknown, Endpoint::Unknown)
    } else {
        // Plain calls of an always-inlined fn, not a closure: the compiler
        // outlined the closure into a BPF subprogram, and every call and
        // return costs ~30 ns on a kernel with the SRSO "safe RET"
        // mitigation.
        let (fd0, fd1, fd2) = (args.arg0 as i32, args.arg1 as i32, args.arg2 as i32);
        match info.shape() {
            Shape::FdToUser => (fd_endpoint(task, fd0), Endpoint::User),
            Shape::UserToFd => (Endpoint::User, fd_endpoint(task, fd0)),
            Shape::Arg1ToArg0 => (fd_endpoint(task, fd1), fd_endpoint(task, fd0)),
            Shape::Arg0ToArg2 => (fd_endpoint(task, fd0), fd_endpoint(task, fd2)),
            Shape::Arg0ToArg1 => (fd_endpoint(task, fd0), fd_endpoint(task, fd1)),
            Shape::ScanArg0 => {
                scanned = args.arg0 & 0xffff_ffff;
                (Endpoint::Other, Endpoint::Other)
            }
            Shape::ScanArg1 => {
                scanned = args.arg1 & 0xffff_ffff;
                (Endpoint::Other, Endpoint::Other)
            }
            Shape::Events => (Endpoint::Other, Endpoint::Other),
            Shape::ByPipeEnd => pipe_ends(fd0),
        }
    };
    let bytes = if ret <= 0 {
        0
    } else if info.counts_messages() {
        iolens_mmsg_bytes(args.arg1, ret as u64)
    } else {
        ret as u64
    };
    let delta = StatValue {
        calls: 1,
        errors: u64::from(ret < 0),
        bytes,
        zero: u64::from(ret == 0),
        scanned,
    };
    // The slot keeps a few (syscall, src, dst) tallies of the process in
    // hand: a loop repeats the same few calls, and a hash update per call
    // was the largest cost left.
    let tag = slot_tag(info.syscall(), src, dst, ret < 0);
    for i in 0..SLOT_KEYS {
        if slot.tags[i] == tag {
            slot.stats[i].accumulate(&delta);
            return;
        }
        if slot.tags[i] == 0 {
            slot.tags[i] = tag;
            slot.stats[i] = delta;
            return;
        }
    }
    let key = StatKey {
        tgid: slot.tgid,
        syscall: info.syscall(),
        src: src as u8,
        dst: dst as u8,
        failed: u8::from(ret < 0),
    };
    account(&key, &delta);
}

/// Adds to a SYSCALL_STATS tally. The process was named when it took the slot.
#[inline(always)]
pub(crate) fn account(key: &StatKey, delta: &StatValue) {
    add_to(
        &SYSCALL_STATS,
        key,
        || Some(StatValue::default()),
        |v: &mut StatValue| v.accumulate(delta),
        Some(counter::SYSCALL_STATS_INSERTS),
        counter::SYSCALL_STATS_DROPS,
    );
}
