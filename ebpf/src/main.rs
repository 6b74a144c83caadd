//! iolens kernel side.
//!
//! One BTF-typed raw tracepoint (`tp_btf`) on `sys_exit` accounts the
//! read/write family, sendfile, splice, vmsplice, tee and copy_file_range,
//! the readiness waits (epoll, poll, select) and io_uring_enter: the syscall
//! number and arguments are still in the saved user registers at exit, and
//! the return value is the byte (or event) count, so no `sys_enter` program
//! runs for every syscall. The ends of a transfer are classified from the
//! fds' inode types, walked with offsets the agent reads from BTF.
//!
//! Around it: `sched_switch` (context switches, on-CPU and sleep time, and
//! sleeps inside epoll waits), filemap/writeback tracepoints (page cache)
//! and io_uring tracepoints (attributed to the ring's owner, so io-wq and
//! SQPOLL threads count for their process). Nothing runs on syscall entry:
//! any syscall-entry tracepoint sends every syscall through the kernel's
//! entry tracing (~20 ns a call here).
//!
//! Cost shapes the code: helper calls (probe reads ~45 ns, clock reads
//! ~70 ns on the VM this was measured on) and hash updates (50-100 ns) are
//! what the programs avoid, with typed loads, the run queue's clock, task
//! local storage, and a per-CPU slot that gathers a process's counts and is
//! flushed to the per-CPU maps when another process runs. User space only
//! reads the maps.
#![no_std]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
#![no_main]

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user,
    },
    macros::{btf_map, btf_tracepoint, map, tracepoint},
    maps::{Array, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, TracePointContext},
};
use iolens_common::{
    Accumulate, COMM_LEN, DEFAULT_PROC_ENTRIES, DEFAULT_STATS_ENTRIES, EPOCH_LIVE, Endpoint,
    FILTER_ENTRIES, KernelOffsets, ProcCounters, ProcInfo, RING_ENTRIES, SYSCALL_INFO, Shape,
    StatKey, StatValue, Syscall, SyscallInfo, THREAD_SLOTS, ThreadState, URING_ENTRIES,
    URING_OP_UNKNOWN, UringKey, UringValue, WAIT_BUCKETS, WAIT_HIST_ENTRIES, WAIT_SLOT_COUNT,
    WAIT_SLOT_SUM_NS, WAIT_SLOTS, counter, uring_op_moves_bytes,
};

/// Set by the agent at load time (`EbpfLoader::set_global`); read volatile so
/// the compiler cannot fold the initial value in.
#[unsafe(no_mangle)]
static FILTER_PIDS: u8 = 0;
#[unsafe(no_mangle)]
static FILTER_COMMS: u8 = 0;
#[unsafe(no_mangle)]
static FILTER_CGROUPS: u8 = 0;
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets {
    valid: 0,
    task_files: 0,
    files_fdt: 0,
    files_fd_array: 0,
    fdt_fd: 0,
    file_inode: 0,
    inode_mode: 0,
    task_group_leader: 0,
    task_comm: 0,
    task_pid: 0,
    task_tgid: 0,
    task_nvcsw: 0,
    task_nivcsw: 0,
    task_flags: 0,
    task_sum_exec: 0,
    task_prev_sum_exec: 0,
    sched_info_valid: 0,
    task_last_arrival: 0,
    kiocb_opcode: 0,
    kiocb_ctx: 0,
    folio_valid: 0,
    folio_flags: 0,
    folio_flags_1: 0,
    pg_head: 0,
    task_se_cfs_rq: 0,
    cfs_rq_rq: 0,
    rq_clock: 0,
    uring_valid: 0,
    cast_valid: 0,
    btf_kiocb: 0,
    kiocb_filp: 0,
    btf_io_kiocb: 0,
    btf_pt_regs: 0,
    task_stack: 0,
    btf_task: 0,
    compat_valid: 0,
    task_ti_status: 0,
};

#[map]
static STATS: LruPerCpuHashMap<StatKey, StatValue> =
    LruPerCpuHashMap::with_max_entries(DEFAULT_STATS_ENTRIES, 0);

#[map]
static PROCS: LruHashMap<u32, ProcInfo> = LruHashMap::with_max_entries(DEFAULT_PROC_ENTRIES, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[map]
static PID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(FILTER_ENTRIES, 0);

#[map]
static COMM_FILTER: HashMap<[u8; COMM_LEN], u8> = HashMap::with_max_entries(FILTER_ENTRIES, 0);

/// cgroup v2 ids (the cgroup directory's inode number) to count.
#[map]
static CGROUP_FILTER: HashMap<u64, u8> = HashMap::with_max_entries(FILTER_ENTRIES, 0);

#[map]
static PSTATS: LruPerCpuHashMap<u32, ProcCounters> =
    LruPerCpuHashMap::with_max_entries(DEFAULT_PROC_ENTRIES, 0);

/// Per-thread state (scheduler stamps, the epoll wait in progress) of
/// most threads: the entry at `tid % THREAD_SLOTS`, which the first thread
/// to need it takes and gives back when it exits. Found with no helper
/// call: bpf_task_storage_get, which the rest use (see THREAD), cost ~60
/// ns a call here, twice per context switch round trip.
#[map]
static THREADS: Array<ThreadEntry> = Array::with_max_entries(THREAD_SLOTS, 0);

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ThreadEntry {
    /// The task (`struct task_struct *`) that holds the entry, 0 if none.
    /// Taken with a compare-and-swap from 0 (two threads whose ids share
    /// the index may race for it); then only the holder writes the entry.
    owner: u64,
    state: ThreadState,
}

/// Per-thread state in the task itself (task local storage), for threads
/// whose THREADS entry another live thread holds: found through the task
/// without hashing and freed by the kernel with the task.
#[btf_map]
static THREAD: TaskStorage<ThreadState> = TaskStorage::new();

/// `PF_EXITING` (include/linux/sched.h): set early in do_exit, before
/// sched_process_exit gives the thread's entry back; a thread past it must
/// not take one again.
const PF_EXITING: u32 = 0x4;

/// The state of `task` (a typed pointer; `tid` its thread id): its THREADS
/// entry if it holds it or can take it, else its task local storage. None
/// if the kernel refused storage.
#[inline(always)]
fn thread_state(task: *const u8, tid: u32) -> Option<*mut ThreadState> {
    if rd(&OFFSETS.valid) != 0
        && let Some(e) = THREADS.get_ptr_mut(tid & (THREAD_SLOTS - 1))
    {
        let me = task as u64;
        // SAFETY: the map's entry. `owner` changes only by the CAS below
        // (from 0) and by its holder giving it back at exit, and the
        // state only by its holder, in its own context (its switch-outs
        // and syscall exits, which never run at once); `task` is a typed
        // task pointer at a verifier-known offset.
        unsafe {
            let owner = core::ptr::read_volatile(&raw const (*e).owner);
            if owner == me {
                return Some(&raw mut (*e).state);
            }
            if owner == 0
                && load::<u32>(task, rd(&OFFSETS.task_flags)) & PF_EXITING == 0
                && cas(&raw mut (*e).owner, 0, me) == 0
            {
                // Taken: the state comes along from task local storage,
                // where it was kept while another thread held the entry.
                (*e).state = match THREAD.get(task) {
                    Some(t) => *t,
                    None => ThreadState::default(),
                };
                return Some(&raw mut (*e).state);
            }
        }
    }
    THREAD.get_or_create(task)
}

/// `task`, which held its THREADS entry as thread `from`, is now thread
/// `to` (exec by a thread other than the leader): its state goes to the
/// entry at `to` if free, else to its task local storage.
#[inline(always)]
fn move_thread_entry(task: *const u8, from: u32, to: u32) {
    let me = task as u64;
    let (from, to) = (from & (THREAD_SLOTS - 1), to & (THREAD_SLOTS - 1));
    let Some(src) = THREADS.get_ptr_mut(from) else {
        return;
    };
    // SAFETY: map entries, under thread_state's rules: `task` holds `src`
    // and takes `dst` only by CAS from 0.
    unsafe {
        if from == to || core::ptr::read_volatile(&raw const (*src).owner) != me {
            return;
        }
        let state = (*src).state;
        core::ptr::write_volatile(&raw mut (*src).owner, 0);
        if let Some(dst) = THREADS.get_ptr_mut(to)
            && cas(&raw mut (*dst).owner, 0, me) == 0
        {
            (*dst).state = state;
        } else if let Some(t) = THREAD.get_or_create(task) {
            *t = state;
        }
    }
}

/// Gives back the THREADS entry at `tid` if `task` holds it.
#[inline(always)]
fn release_thread_entry(task: u64, tid: u32) {
    if let Some(e) = THREADS.get_ptr_mut(tid & (THREAD_SLOTS - 1)) {
        // SAFETY: the map's entry; only its holder clears `owner`, and the
        // next holder overwrites the state when it takes the entry.
        unsafe {
            if core::ptr::read_volatile(&raw const (*e).owner) == task {
                core::ptr::write_volatile(&raw mut (*e).owner, 0);
            }
        }
    }
}

/// A task local storage map (`BPF_MAP_TYPE_TASK_STORAGE`), laid out the
/// way BTF map definitions are (aya-ebpf has none for this type).
#[repr(C)]
struct TaskStorage<T> {
    r#type: *const [i32; BPF_MAP_TYPE_TASK_STORAGE],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC],
}

const BPF_MAP_TYPE_TASK_STORAGE: usize = 29;
const BPF_F_NO_PREALLOC: usize = 1;
const BPF_LOCAL_STORAGE_GET_F_CREATE: u64 = 1;

// SAFETY: placeholders the loader patches; never dereferenced here.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    const fn new() -> Self {
        TaskStorage {
            r#type: core::ptr::null(),
            key: core::ptr::null(),
            value: core::ptr::null(),
            max_entries: core::ptr::null(),
            map_flags: core::ptr::null(),
        }
    }

    /// The task's value, created zeroed on first use; None if the kernel
    /// refused (out of memory, or storage busy on this CPU).
    #[inline(always)]
    fn get_or_create(&self, task: *const u8) -> Option<*mut T> {
        self.storage_get(task, BPF_LOCAL_STORAGE_GET_F_CREATE)
    }

    /// The task's value if it has one.
    #[inline(always)]
    fn get(&self, task: *const u8) -> Option<*mut T> {
        self.storage_get(task, 0)
    }

    #[inline(always)]
    fn storage_get(&self, task: *const u8, flags: u64) -> Option<*mut T> {
        // SAFETY: `task` is a typed task pointer (a tp_btf argument); the
        // helper checks the map and returns NULL on failure.
        let p = unsafe {
            aya_ebpf::helpers::generated::bpf_task_storage_get(
                core::ptr::from_ref(self).cast_mut().cast(),
                task.cast_mut().cast(),
                core::ptr::null_mut(),
                flags,
            )
        };
        (!p.is_null()).then_some(p.cast())
    }
}

/// Process name -> blocked-time histogram of epoll waits.
#[map]
static WAIT_HIST: PerCpuHashMap<[u8; COMM_LEN], [u64; WAIT_SLOTS]> =
    PerCpuHashMap::with_max_entries(WAIT_HIST_ENTRIES, 0);

#[map]
static URING: LruPerCpuHashMap<UringKey, UringValue> =
    LruPerCpuHashMap::with_max_entries(URING_ENTRIES, 0);

/// io_uring ring (`struct io_ring_ctx *`) -> owning tgid.
#[map]
static RINGS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(RING_ENTRIES, 0);

/// What the process that last made a syscall on this CPU has done since,
/// not yet in the maps: one per CPU, looked up without hashing. Flushed
/// when another process makes a syscall or is switched in on this CPU, and
/// every `SLOT_FLUSH_EVENTS` syscalls; so when a process is not running,
/// all it did is in the maps.
#[map]
static SLOT: PerCpuArray<Slot> = PerCpuArray::with_max_entries(1, 0);

const SLOT_KEYS: usize = 4;
const SLOT_FLUSH_EVENTS: u32 = 128;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Slot {
    tgid: u32,
    /// Set while sys_exit updates the slot; sched_switch leaves a busy
    /// slot alone.
    busy: u32,
    /// Syscalls since the last flush.
    events: u32,
    tags: [u32; SLOT_KEYS],
    stats: [StatValue; SLOT_KEYS],
    proc: ProcCounters,
    /// io_uring tallies of the slot's process by opcode (tag 0x100|op).
    uring_tags: [u32; SLOT_URING],
    uring: [UringValue; SLOT_URING],
    /// The last ring seen on this CPU and its owner, as of `ring_epoch`.
    ring: u64,
    ring_owner: u32,
    ring_epoch: u64,
    /// The last two tasks that made syscalls on this CPU and the addresses
    /// of their saved registers, most recent first, as of `task_epoch`;
    /// see `current_task`. Kept across flushes.
    regs: [u64; 2],
    tasks: [u64; 2],
    task_epoch: u64,
}

const SLOT_URING: usize = 4;

/// Classes of fds recently seen on this CPU, for fd tables past the inline
/// 64 walked with probe reads (kernels without bpf_rdonly_cast); see
/// `iolens_fd_class_reads`.
#[map]
static FD_CACHE: PerCpuArray<FdCache> = PerCpuArray::with_max_entries(1, 0);

const FD_CACHE_ENTRIES: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FdCache {
    entries: [FdEntry; FD_CACHE_ENTRIES],
    next: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FdEntry {
    /// The fd table (`task->files`): threads may have their own.
    files: u64,
    /// EPOCH when it was classified: read before the fd table, so a
    /// close that races the classification leaves an entry already old.
    epoch: u64,
    fd: i32,
    endpoint: u8,
    _pad: [u8; 3],
}

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
static EPOCH: Array<u64> = Array::with_max_entries(1, 0);

/// Where a task's saved user registers (`task_pt_regs()`) lie, as an
/// offset from its stack base (`task->stack`): THREAD_SIZE less the
/// registers and any top-of-stack padding, the same for every task. Learned
/// from the first bpf_task_pt_regs answer in_epoll_wait gets; 0 until
/// then, 1 if what was seen made no sense (the helper is used then).
#[map]
static REGS_AT: Array<u64> = Array::with_max_entries(1, 0);

/// x86_64 `struct pt_regs` offsets (uapi, stable): the saved user registers.
/// dx, si, di and orig_ax follow each other from here: the syscall number
/// and the three arguments any accounted call needs.
const REGS_DX: usize = 96;
/// Indices into those four words.
const DX: usize = 0;
const SI: usize = 1;
const DI: usize = 2;
const ORIG_AX: usize = 3;

const BPF_NOEXIST: u64 = 1;

/// x86_64 syscalls that close or replace fds: close, dup2, dup3, execve
/// (close-on-exec), execveat, close_range.
const CLOSES_FDS: [u64; 6] = [3, 33, 292, 59, 322, 436];

/// ia32 arguments 0 and 1 (`bx`, `cx` in `struct pt_regs`); argument 2 is
/// in `dx`, as on x86_64.
const REGS_BX: usize = 40;
const REGS_CX: usize = 88;
/// `TS_COMPAT` (arch/x86/include/asm/thread_info.h).
const TS_COMPAT: u32 = 0x2;

/// ioctl(2) (x86_64 16) requests that close or replace fds of a process:
/// SECCOMP_IOCTL_NOTIF_ADDFD (a supervisor may replace the target's fd)
/// and binder's BINDER_WRITE_READ (freeing a transaction closes fds).
const IOCTL: u64 = 16;
const REPLACES_FDS: [u32; 2] = [0x4018_2103, 0xc030_6201];

#[btf_tracepoint(function = "sys_exit")]
#[inline(always)]
pub fn iolens_sys_exit(ctx: BtfTracePointContext) -> i32 {
    try_sys_exit(&ctx);
    0
}

#[inline(always)]
fn try_sys_exit(ctx: &BtfTracePointContext) {
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    let Some(slot) = SLOT.get_ptr_mut(0) else {
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
    // be a writev of pid bytes. Translated here to the x86_64 layout and
    // numbers, so nothing below branches on `compat` (two variants of
    // every path below would not fit the verifier's limit).
    let compat = in_compat_syscall(task);
    // SAFETY: `regs` is the tracepoint's typed `struct pt_regs *`: the
    // verifier turns these loads into fault-safe kernel loads, with no
    // helper call (bpf_probe_read_kernel costs ~45 ns a call here).
    let words: [u64; 4] = unsafe {
        if compat {
            [
                load::<u64>(regs, REGS_DX) & 0xffff_ffff,
                load::<u64>(regs, REGS_CX) & 0xffff_ffff,
                load::<u64>(regs, REGS_BX) & 0xffff_ffff,
                iolens_i386_nr(load(regs, REGS_DX + 8 * ORIG_AX)),
            ]
        } else {
            [
                load(regs, REGS_DX + 8 * DX),
                load(regs, REGS_DX + 8 * SI),
                load(regs, REGS_DX + 8 * DI),
                load(regs, REGS_DX + 8 * ORIG_AX),
            ]
        }
    };
    slot.busy = 1;
    if slot.tgid != tgid {
        flush(slot);
        slot.tgid = tgid;
        // Named here, in the process's own context: a flush may run in
        // another task's (sched_switch) and must not name it after that.
        remember_process(tgid);
    }
    match syscall_info(words[ORIG_AX]) {
        // Every syscall is a user->kernel->user round trip. Accounted ones
        // are counted in STATS; user space adds the two.
        None => slot.proc.syscalls += 1,
        Some(info) => account_syscall(slot, task, info, &words, ret),
    }
    slot.events += 1;
    if slot.events >= SLOT_FLUSH_EVENTS {
        // Bounds how far a busy process's counters can lag behind it when
        // its CPU never switches to another process.
        flush(slot);
        slot.tgid = tgid;
    }
    slot.busy = 0;
    let nr = words[ORIG_AX];
    // remembers_fd_classes first: with casts it is a constant false the
    // verifier knows, and it drops the compares with the branch, which
    // every successful syscall paid before.
    if remembers_fd_classes()
        && ret >= 0
        && (CLOSES_FDS.contains(&nr) || nr == IOCTL && REPLACES_FDS.contains(&(words[SI] as u32)))
    {
        // An fd was closed or replaced: its remembered class is retired.
        bump_epoch();
    }
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
fn current_task(slot: &mut Slot, regs: *const u8) -> *const u8 {
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

/// [`Syscall::i386_to_x86_64`] as a global function, which the verifier
/// checks once on its own: inlined, each of its answers was a known
/// constant walked down the rest of sys_exit, past the verifier's limit
/// once a comm filter made that rest longer.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn iolens_i386_nr(nr: u64) -> u64 {
    Syscall::i386_to_x86_64(nr)
}

/// Whether the current syscall of `task` (the current task, or one
/// switching out) is an ia32 one: TS_COMPAT in `thread_info.status`.
#[inline(always)]
fn in_compat_syscall(task: *const u8) -> bool {
    rd(&OFFSETS.compat_valid) != 0
        // SAFETY: a typed task pointer at a verifier-known offset.
        && unsafe { load::<u32>(task, rd(&OFFSETS.task_ti_status)) } & TS_COMPAT != 0
}

/// Records, once, how far `task`'s saved user registers (`regs`, from
/// bpf_task_pt_regs) lie from its stack base; see REGS_AT.
#[inline(always)]
fn learn_regs_at(regs: *const u8, task: *const u8) {
    let Some(at) = REGS_AT.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the map's one value; `task` is a typed task pointer at a
    // verifier-known offset. The registers' address goes through the map
    // because the verifier allows no arithmetic between it and a number
    // it has not seen come from a pointer; read back, it is a number.
    unsafe {
        if core::ptr::read_volatile(at) != 0 {
            return;
        }
        core::ptr::write_volatile(at, regs as u64);
        let regs_addr = core::ptr::read_volatile(at);
        let stack: u64 = load(task, rd(&OFFSETS.task_stack));
        let off = regs_addr.wrapping_sub(stack);
        // A stack is at most a few pages; anything else is not a layout
        // this understands.
        let off = if stack != 0 && off > 1 && off < 1 << 16 {
            off
        } else {
            1
        };
        core::ptr::write_volatile(at, off);
    }
}

/// What sys_exit accounts of x86_64 syscall `nr`; None if it only counts it.
#[inline(always)]
fn syscall_info(nr: u64) -> Option<SyscallInfo> {
    let info = *SYSCALL_INFO.get(usize::try_from(nr).ok()?)?;
    (info != SyscallInfo::NONE).then_some(info)
}

#[inline(always)]
fn account_syscall(
    slot: &mut Slot,
    task: *const u8,
    info: SyscallInfo,
    words: &[u64; 4],
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
        let [dx, si, di, _] = words.map(|w| w as i32);
        match info.shape() {
            Shape::FdToUser => (fd_endpoint(task, di), Endpoint::User),
            Shape::UserToFd => (Endpoint::User, fd_endpoint(task, di)),
            Shape::Arg1ToArg0 => (fd_endpoint(task, si), fd_endpoint(task, di)),
            Shape::Arg0ToArg2 => (fd_endpoint(task, di), fd_endpoint(task, dx)),
            Shape::Arg0ToArg1 => (fd_endpoint(task, di), fd_endpoint(task, si)),
            Shape::ScanArg0 => {
                scanned = words[DI] & 0xffff_ffff;
                (Endpoint::Other, Endpoint::Other)
            }
            Shape::ScanArg1 => {
                scanned = words[SI] & 0xffff_ffff;
                (Endpoint::Other, Endpoint::Other)
            }
            Shape::Events => (Endpoint::Other, Endpoint::Other),
        }
    };
    if info.is_epoll() {
        let _ = iolens_record_wait(slot.tgid);
    }
    let bytes = if ret <= 0 {
        0
    } else if info.counts_messages() {
        iolens_mmsg_bytes(words[SI], ret as u64)
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
    let tag = slot_tag(info.syscall(), src, dst);
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
        _pad: 0,
    };
    account(&key, &delta);
}

/// x86_64 `struct mmsghdr` (uapi): a 56-byte `struct msghdr`, then the
/// `unsigned int msg_len` the kernel fills in, padded to 64 bytes; an ia32
/// caller's `struct compat_mmsghdr`: a 28-byte msghdr, then msg_len.
const MMSGHDR_SIZE: [u64; 2] = [64, 32];
const MMSGHDR_MSG_LEN: [u64; 2] = [56, 28];
/// The kernel handles at most UIO_MAXIOV messages per call.
const MMSG_MAX: u64 = 1024;

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

/// A slot tally's tag: never 0, which marks a free tally.
#[inline(always)]
fn slot_tag(syscall: u8, src: Endpoint, dst: Endpoint) -> u32 {
    1 << 24 | (syscall as u32) << 16 | (src as u32) << 8 | dst as u32
}

/// Moves what the slot holds into the maps and empties it. Not inlined:
/// it runs once per process change or 128 syscalls, and inlined at each
/// call site it multiplied the paths the verifier walks past its limit.
#[inline(never)]
fn flush(slot: &mut Slot) {
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
                    _pad: 0,
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
        let d = slot.proc;
        if d != ProcCounters::default() {
            with_proc(tgid, false, |p| p.accumulate(&d));
        }
    }
    clear(slot);
}

/// Empties the slot but for `busy`. The tallies' values are left: a tally
/// is overwritten when its tag is taken. Volatile stores, field by field
/// (see `zero`): `*slot = Slot::default()` was some 2,100 instructions of
/// `memset`, run at every process change on a CPU.
#[inline(always)]
fn clear(slot: &mut Slot) {
    zero(&mut slot.tags);
    zero(&mut slot.uring_tags);
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
fn zero<T: Copy + Default, const N: usize>(a: &mut [T; N]) {
    for x in a {
        // SAFETY: a valid, aligned element of a live array.
        unsafe { core::ptr::write_volatile(x, T::default()) };
    }
}

/// Records an epoll wait that returned in the histogram of the process's
/// name: the time the thread slept inside it, which sched_switch gathers
/// (a wait that found events at once blocked 0 ns).
///
/// A global function, which the verifier checks once on its own: inlined
/// into sys_exit, the ways to the thread's state (its entry, taking one,
/// task local storage) were walked again along every path that reaches
/// them, past the verifier's limit. It finds the current task itself (a
/// global function takes no typed pointers).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn iolens_record_wait(tgid: u32) -> u32 {
    record_wait_time(tgid);
    // The verifier supports only global functions that return a number.
    0
}

#[inline(always)]
fn record_wait_time(tgid: u32) {
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
    let bucket = if ns == 0 {
        0
    } else {
        (63 - ns.leading_zeros() as usize).min(WAIT_BUCKETS - 1)
    };
    let comm = process_comm(tgid);
    let hist = match WAIT_HIST.get_ptr_mut(comm) {
        Some(h) => h,
        None => {
            let _ = WAIT_HIST.insert(comm, [0u64; WAIT_SLOTS], BPF_NOEXIST);
            match WAIT_HIST.get_ptr_mut(comm) {
                Some(h) => h,
                None => {
                    bump(counter::OTHER_DROPS);
                    return;
                }
            }
        }
    };
    // SAFETY: a per-CPU value; indices are bounded by the array length.
    unsafe {
        if bucket < WAIT_BUCKETS {
            (*hist)[bucket] += 1;
        }
        (*hist)[WAIT_SLOT_COUNT] += 1;
        (*hist)[WAIT_SLOT_SUM_NS] += ns;
    }
}

/// The process's name as recorded in PROCS, else the thread's.
#[inline(always)]
fn process_comm(tgid: u32) -> [u8; COMM_LEN] {
    match PROCS.get_ptr(tgid) {
        // SAFETY: a valid map value pointer.
        Some(p) => unsafe { (*p).comm },
        None => current_comm(),
    }
}

/// Adds to the process's counters, creating them on first use.
/// `name`: the current task belongs to `tgid`, so a new process may be
/// named after it.
#[inline(always)]
fn with_proc(tgid: u32, name: bool, f: impl Fn(&mut ProcCounters)) {
    if let Some(p) = PSTATS.get_ptr_mut(tgid) {
        // SAFETY: a per-CPU value only this CPU writes.
        f(unsafe { &mut *p });
        return;
    }
    let mut v = ProcCounters::default();
    f(&mut v);
    match PSTATS.insert(tgid, v, BPF_NOEXIST) {
        Ok(()) => {
            bump(counter::PSTATS_INSERTS);
            if name {
                remember_process(tgid);
            }
        }
        Err(_) => match PSTATS.get_ptr_mut(tgid) {
            // SAFETY: as above; this CPU's slot was created zeroed.
            Some(p) => f(unsafe { &mut *p }),
            None => bump(counter::OTHER_DROPS),
        },
    }
}

/// `sched_switch(preempt, prev, next, prev_state)`, BTF-typed so prev and
/// next are loaded from directly. It runs in prev's context, right after the
/// kernel incremented prev's nvcsw (a voluntary switch) or nivcsw, and
/// charged prev's CPU time. All per-thread work happens for prev: what
/// happened while a thread was off CPU is settled at its next switch-out,
/// from the time the scheduler stamped at its switch-in.
#[btf_tracepoint(function = "sched_switch")]
pub fn iolens_sched_switch(ctx: BtfTracePointContext) -> i32 {
    let preempt: u64 = ctx.arg(0);
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    let prev_state: u64 = ctx.arg(3);
    let valid = rd(&OFFSETS.valid) != 0 && !prev.is_null() && !next.is_null();
    let (prev_tgid, prev_tid) = if valid {
        // SAFETY: a BTF-typed task pointer and verifier-known offsets.
        unsafe {
            (
                load::<u32>(prev, rd(&OFFSETS.task_tgid)),
                load::<u32>(prev, rd(&OFFSETS.task_pid)),
            )
        }
    } else {
        let pid_tgid = bpf_get_current_pid_tgid();
        ((pid_tgid >> 32) as u32, pid_tgid as u32)
    };
    // SAFETY (for `slot`): this CPU's slot; sched_switch is not preempted,
    // and a sys_exit run it interrupted (if the kernel ever preempts one)
    // has `busy` set, so the slot is left alone.
    let mut slot = match SLOT.get_ptr_mut(0) {
        Some(s) if unsafe { (*s).busy } == 0 => Some(unsafe { &mut *s }),
        _ => None,
    };
    if prev_tid != 0 && passes_filters(prev_tgid) {
        let voluntary_guess = preempt & 1 == 0 && prev_state as u32 != 0;
        let d = switch_out(prev, prev_tid, valid, voluntary_guess);
        let add = |p: &mut ProcCounters| d.add_to(p);
        match slot.as_deref_mut() {
            Some(s) if s.tgid == prev_tgid => add(&mut s.proc),
            _ => with_proc(prev_tgid, true, add),
        }
    }
    // Another process (or idle) takes the CPU: what the slot holds goes to
    // the maps, so a process that is not running is fully accounted.
    let next_tgid: u32 = if valid {
        // SAFETY: a BTF-typed task pointer and a verifier-known offset.
        unsafe { load(next, rd(&OFFSETS.task_tgid)) }
    } else {
        0
    };
    if let Some(s) = slot
        && s.tgid != 0
        && (s.tgid != next_tgid || !valid)
    {
        flush(s);
    }
    0
}

/// What one switch adds to the switching-out process's counters.
#[derive(Default)]
struct SwitchDelta {
    vcsw: u64,
    ivcsw: u64,
    oncpu_ns: u64,
    sleep_ns: u64,
}

impl SwitchDelta {
    /// Adds these four, not all of ProcCounters (whose other seven would
    /// each be a load, an add of 0 and a store, at every switch).
    #[inline(always)]
    fn add_to(&self, p: &mut ProcCounters) {
        p.vcsw += self.vcsw;
        p.ivcsw += self.ivcsw;
        p.oncpu_ns += self.oncpu_ns;
        p.sleep_ns += self.sleep_ns;
    }
}

/// prev's side of a switch, as counter deltas: the switch (voluntary or
/// not), the CPU time since its last switch-out, and the sleep that ended
/// when this run began. `guess`: voluntary by the tracepoint's arguments,
/// for when the kernel's own count cannot be compared.
#[inline(always)]
fn switch_out(prev: *const u8, tid: u32, valid: bool, guess: bool) -> SwitchDelta {
    let mut d = SwitchDelta::default();
    let Some(t) = thread_state(prev, tid) else {
        bump(counter::OTHER_DROPS);
        if guess {
            d.vcsw = 1;
        } else {
            d.ivcsw = 1;
        }
        return d;
    };
    // SAFETY: prev is a BTF-typed task pointer (offsets verifier-known),
    // and `t` its state, which only its own context writes: its
    // switch-outs (serialised by the scheduler) and its syscall exits.
    unsafe {
        let (nvcsw, nivcsw, runtime): (u64, u64, u64) = if valid {
            (
                load(prev, rd(&OFFSETS.task_nvcsw)),
                load(prev, rd(&OFFSETS.task_nivcsw)),
                load(prev, rd(&OFFSETS.task_sum_exec)),
            )
        } else {
            (0, 0, 0)
        };
        // The kernel's own verdict: which of prev's counters it just
        // bumped. prev_state alone misses a task that went to sleep with a
        // signal pending (counted voluntary, but traced as running). The
        // state is the last switch-out's only if exactly one counter moved
        // by one since; else (a switch this did not see, say) it is stale.
        let (nv_seen, niv_seen) = ((*t).nvcsw_seen.wrapping_sub(1), (*t).nivcsw_seen);
        let by_nvcsw = nvcsw == nv_seen.wrapping_add(1) && nivcsw == niv_seen;
        let by_nivcsw = nivcsw == niv_seen.wrapping_add(1) && nvcsw == nv_seen;
        let seen = valid && (*t).nvcsw_seen != 0 && (by_nvcsw || by_nivcsw);
        let voluntary = if seen { by_nvcsw } else { guess };
        if voluntary {
            d.vcsw = 1;
        } else {
            d.ivcsw = 1;
        }
        // CPU time is the scheduler's own: sum_exec_runtime since the last
        // switch-out, or at the first one seen, since the thread was
        // picked (from its start, for a thread started under iolens).
        if valid {
            let base = if seen {
                (*t).runtime_seen
            } else {
                load(prev, rd(&OFFSETS.task_prev_sum_exec))
            };
            d.oncpu_ns = runtime.saturating_sub(base);
        }
        (*t).nvcsw_seen = if valid { nvcsw + 1 } else { 0 };
        (*t).nivcsw_seen = nivcsw;
        (*t).runtime_seen = runtime;
        let (sleep, wait) = ((*t).sleep_start, (*t).wait_sleep);
        if (sleep | wait) != 0 && seen && rd(&OFFSETS.sched_info_valid) != 0 {
            let arrival: u64 = load(prev, rd(&OFFSETS.task_last_arrival));
            if sleep != 0 {
                d.sleep_ns = arrival.saturating_sub(sleep);
            }
            if wait != 0 {
                (*t).wait_blocked += arrival.saturating_sub(wait);
            }
        }
        (*t).sleep_start = 0;
        (*t).wait_sleep = 0;
        if voluntary && valid && rd(&OFFSETS.sched_info_valid) != 0 {
            let now = rq_clock(prev);
            (*t).sleep_start = now;
            if now != 0 && in_epoll_wait(prev) {
                (*t).wait_sleep = now;
            }
        }
    }
    d
}

/// Whether `task`, switching out, sleeps inside an epoll wait: the syscall
/// number in its saved user registers. Asked only at voluntary switches.
#[inline(always)]
fn in_epoll_wait(task: *const u8) -> bool {
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
    let nr: u64 = unsafe { load(regs, REGS_DX + 8 * ORIG_AX) };
    let nr = if in_compat_syscall(task) {
        Syscall::i386_to_x86_64(nr)
    } else {
        nr
    };
    syscall_info(nr).is_some_and(SyscallInfo::is_epoll)
}

/// ns now on the run queue's clock, which __schedule updated just before
/// this tracepoint and which stamped the threads' switch-ins: read through
/// the switching task, without a clock read (~70 ns here). 0 if a pointer
/// on the way is NULL. Only with `sched_info_valid`, which implies the
/// offsets.
#[inline(always)]
fn rq_clock(task: *const u8) -> u64 {
    // SAFETY: typed pointers (a tp_btf task argument, then the pointers
    // loaded from it) at verifier-known offsets.
    unsafe {
        let cfs_rq: *const u8 = load(task, rd(&OFFSETS.task_se_cfs_rq));
        if cfs_rq.is_null() {
            return 0;
        }
        let rq: *const u8 = load(cfs_rq, rd(&OFFSETS.cfs_rq_rq));
        if rq.is_null() {
            return 0;
        }
        load(rq, rd(&OFFSETS.rq_clock))
    }
}

/// Adds to a page-cache counter of the current process: in this CPU's slot
/// when the process holds it (a read's lookups follow its own syscall on
/// the same CPU), else in the map.
#[inline(always)]
fn page_cache(f: impl Fn(&mut ProcCounters)) {
    let tgid = current_tgid();
    if tgid == 0 || !passes_filters(tgid) {
        return;
    }
    if let Some(s) = SLOT.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; these programs are not preempted, and a
        // sys_exit run they interrupted has `busy` set.
        let s = unsafe { &mut *s };
        if s.busy == 0 && s.tgid == tgid {
            f(&mut s.proc);
            return;
        }
    }
    with_proc(tgid, true, f);
}

/// Pages in [first, last], from a filemap tracepoint's arguments.
#[inline(always)]
fn page_range(first: u64, last: u64) -> u64 {
    if last >= first { last - first + 1 } else { 0 }
}

/// `mm_filemap_get_pages(mapping, index, last_index)`: a read looked up
/// [index, last_index].
#[btf_tracepoint(function = "mm_filemap_get_pages")]
pub fn iolens_fm_get_pages(ctx: BtfTracePointContext) -> i32 {
    let n = page_range(ctx.arg(1), ctx.arg(2));
    page_cache(|p| p.cache_lookup_pages += n);
    0
}

/// `mm_filemap_map_pages(mapping, start, last)`: fault-around mapped
/// [start, last].
#[btf_tracepoint(function = "mm_filemap_map_pages")]
pub fn iolens_fm_map_pages(ctx: BtfTracePointContext) -> i32 {
    let n = page_range(ctx.arg(1), ctx.arg(2));
    page_cache(|p| p.cache_mapped_pages += n);
    0
}

/// `mm_filemap_fault(mapping, index)`: a fault on a file mapping.
#[btf_tracepoint(function = "mm_filemap_fault")]
pub fn iolens_fm_fault(_ctx: BtfTracePointContext) -> i32 {
    page_cache(|p| p.cache_faults += 1);
    0
}

/// `filemap:mm_filemap_add_to_page_cache`: a folio of 2^order pages was
/// added: a miss (or readahead of one). Classic: the record carries the
/// folio's order, which the typed folio would need page-flag decoding for.
#[tracepoint]
pub fn iolens_fm_add(ctx: TracePointContext) -> u32 {
    // SAFETY: `order` is at offset 36 in this tracepoint's format.
    let order = unsafe { ctx.read_at::<u8>(36) }.unwrap_or(0).min(20);
    page_cache(|p| p.cache_added_pages += 1u64 << order);
    0
}

/// `writeback_dirty_folio(folio, mapping)`: a folio became dirty; counted
/// as its pages (ext4 here dirties large folios: one event for up to
/// hundreds of pages), sized the way folio_order() does.
#[btf_tracepoint(function = "writeback_dirty_folio")]
pub fn iolens_wb_dirty(ctx: BtfTracePointContext) -> i32 {
    let folio: *const u8 = ctx.arg(0);
    let pages = if rd(&OFFSETS.folio_valid) != 0 && !folio.is_null() {
        // SAFETY: a typed `struct folio *` and verifier-known offsets.
        unsafe {
            let flags: u64 = load(folio, rd(&OFFSETS.folio_flags));
            if flags & (1u64 << (rd(&OFFSETS.pg_head) & 63)) != 0 {
                let order: u64 = load(folio, rd(&OFFSETS.folio_flags_1));
                1u64 << (order & 0xff).min(20)
            } else {
                1
            }
        }
    } else {
        1
    };
    page_cache(|p| p.cache_dirtied_pages += pages);
    0
}

/// `io_uring:io_uring_create`: remember who owns the ring, so work done for
/// it by io-wq or SQPOLL threads, or completed from another context, is
/// attributed to the owner.
#[tracepoint]
pub fn iolens_uring_create(ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: ctx at offset 16 in this tracepoint's format.
    let ring = unsafe { ctx.read_at::<u64>(16) }.unwrap_or(0);
    let _ = RINGS.insert(ring, tgid, 0);
    // Rings remembered in slots by address are no longer trusted: this one
    // may sit where a freed one was.
    bump_epoch();
    if passes_filters(tgid) {
        with_proc(tgid, true, |p| p.rings_created += 1);
    }
    0
}

#[inline(always)]
fn ring_owner(ring: u64) -> u32 {
    match RINGS.get_ptr(ring) {
        // SAFETY: a valid map value pointer.
        Some(t) => unsafe { *t },
        // A ring created before iolens started: io-wq and SQPOLL threads
        // share their owner's tgid, so the current task is right unless the
        // completion ran in another context.
        None => (bpf_get_current_pid_tgid() >> 32) as u32,
    }
}

#[inline(always)]
/// `name`: the current task belongs to `tgid`; see `with_proc`.
fn uring_account(tgid: u32, opcode: u8, delta: &UringValue, name: bool) {
    if tgid == 0 || !passes_pid_filter(tgid) {
        return;
    }
    let key = UringKey {
        tgid,
        opcode,
        _pad: [0; 3],
    };
    // SAFETY: a per-CPU value only this CPU writes.
    let add = |v: *mut UringValue| unsafe { &mut *v }.accumulate(delta);
    if let Some(v) = URING.get_ptr_mut(key) {
        add(v);
        return;
    }
    match URING.insert(key, *delta, BPF_NOEXIST) {
        Ok(()) => {
            bump(counter::URING_INSERTS);
            if name {
                remember_process(tgid);
            }
        }
        Err(_) => match URING.get_ptr_mut(key) {
            Some(v) => add(v),
            None => bump(counter::OTHER_DROPS),
        },
    }
}

/// `io_uring_submit_req(req)`: one SQE handed to the kernel. BTF-typed, so
/// the ring and opcode are loaded from the request directly.
#[btf_tracepoint(function = "io_uring_submit_req")]
pub fn iolens_uring_submit(ctx: BtfTracePointContext) -> i32 {
    let req: *const u8 = ctx.arg(0);
    if req.is_null() || rd(&OFFSETS.uring_valid) == 0 {
        return 0;
    }
    // SAFETY: a typed `struct io_kiocb *` and verifier-known offsets.
    let (ring, opcode): (u64, u8) = unsafe {
        (
            load(req, rd(&OFFSETS.kiocb_ctx)),
            load(req, rd(&OFFSETS.kiocb_opcode)),
        )
    };
    let delta = UringValue {
        submitted: 1,
        ..UringValue::default()
    };
    uring_event(ring, opcode, &delta);
    0
}

/// `io_uring_complete(ctx, req, cqe)`: one CQE posted.
#[btf_tracepoint(function = "io_uring_complete")]
pub fn iolens_uring_complete(ctx: BtfTracePointContext) -> i32 {
    let ring: u64 = ctx.arg(0);
    let req: *const u8 = ctx.arg(1);
    let cqe: *const u8 = ctx.arg(2);
    if cqe.is_null() {
        return 0;
    }
    // SAFETY: a typed `struct io_uring_cqe *`; `res` follows the u64
    // user_data (uapi).
    let res: i32 = unsafe { load(cqe, 8) };
    // `req` is a `void *` here: cast to its type, else one probe read.
    let opcode = if rd(&OFFSETS.uring_valid) == 0 || req.is_null() {
        URING_OP_UNKNOWN
    } else if rd(&OFFSETS.cast_valid) != 0 {
        // SAFETY: a fault-safe load through a pointer typed by the cast,
        // at a verifier-known offset inside `struct io_kiocb`.
        unsafe {
            load::<u8>(
                rdonly_cast(req as u64, rd(&OFFSETS.btf_io_kiocb)),
                rd(&OFFSETS.kiocb_opcode),
            )
        }
    } else {
        read_at::<u8>(req, rd(&OFFSETS.kiocb_opcode)).unwrap_or(URING_OP_UNKNOWN)
    };
    let delta = UringValue {
        submitted: 0,
        completed: 1,
        failed: u64::from(res < 0),
        bytes: if res > 0 && uring_op_moves_bytes(opcode) {
            res as u64
        } else {
            0
        },
    };
    if remembers_fd_classes() && opcode == IORING_OP_CLOSE && res >= 0 {
        // The fd is gone before the process can see the completion and
        // open something in its place.
        bump_epoch();
    }
    uring_event(ring, opcode, &delta);
    0
}

/// Accounts an io_uring event to the ring's owner: in this CPU's slot when
/// the owner holds it (the common case: the owner's own io_uring_enter),
/// else in the map.
#[inline(always)]
fn uring_event(ring: u64, opcode: u8, delta: &UringValue) {
    let slot = match SLOT.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; these programs are not preempted, and a
        // sys_exit run they interrupted has `busy` set.
        Some(s) if unsafe { (*s).busy } == 0 => Some(unsafe { &mut *s }),
        _ => None,
    };
    let Some(slot) = slot else {
        let owner = ring_owner(ring);
        uring_account(owner, opcode, delta, owner == current_tgid());
        return;
    };
    // The owner of the last ring seen, unless a ring was created since
    // (a new ring may sit at a freed one's address).
    let epoch = epoch();
    let owner = if slot.ring == ring && slot.ring_epoch == epoch && ring != 0 {
        slot.ring_owner
    } else {
        let owner = ring_owner(ring);
        slot.ring = ring;
        slot.ring_owner = owner;
        slot.ring_epoch = epoch;
        owner
    };
    if owner != 0 && owner == slot.tgid {
        let tag = 0x100 | u32::from(opcode);
        for i in 0..SLOT_URING {
            if slot.uring_tags[i] == tag {
                slot.uring[i].accumulate(delta);
                return;
            }
            if slot.uring_tags[i] == 0 {
                slot.uring_tags[i] = tag;
                slot.uring[i] = *delta;
                return;
            }
        }
    }
    uring_account(owner, opcode, delta, owner == current_tgid());
}

/// The current task's name; zeros if the helper fails (it fails only for
/// a bad buffer). aya's
/// bpf_get_current_comm zeroes its buffer first, which compiled to a call
/// to the BPF target's byte-wise memset before every call (every event,
/// with a comm filter); the helper writes all 16 bytes itself, so the
/// buffer starts uninitialised here, as u64s so it is copied in two loads.
#[inline(always)]
fn current_comm() -> [u8; COMM_LEN] {
    let mut buf = core::mem::MaybeUninit::<[u64; COMM_LEN / 8]>::uninit();
    // SAFETY: the helper writes COMM_LEN bytes (NUL-padded) into `buf`,
    // whose size that is, or returns an error.
    let rc = unsafe {
        aya_ebpf::helpers::generated::bpf_get_current_comm(buf.as_mut_ptr().cast(), COMM_LEN as u32)
    };
    // SAFETY: `buf` was written in full when the helper returned 0.
    let words = if rc == 0 {
        unsafe { buf.assume_init() }
    } else {
        [0; COMM_LEN / 8]
    };
    // SAFETY: 16 bytes as 16 bytes.
    unsafe { core::mem::transmute::<[u64; COMM_LEN / 8], [u8; COMM_LEN]>(words) }
}

#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// `IORING_OP_CLOSE` (uapi).
const IORING_OP_CLOSE: u8 = 19;

/// Adds to a STATS tally. The process was named when it took the slot.
#[inline(always)]
fn account(key: &StatKey, delta: &StatValue) {
    // SAFETY: a per-CPU value; only the slot's owner (busy) or a flush from
    // sched_switch (not busy) writes it on this CPU, never both at once.
    let add = |v: *mut StatValue| unsafe { &mut *v }.accumulate(delta);
    if let Some(v) = STATS.get_ptr_mut(key) {
        add(v);
        return;
    }
    match STATS.insert(key, delta, BPF_NOEXIST) {
        Ok(()) => bump(counter::STATS_INSERTS),
        // Another CPU inserted the key between our lookup and insert; this
        // CPU's slot was created zeroed with it, so add to that.
        Err(_) => match STATS.get_ptr_mut(key) {
            Some(v) => add(v),
            None => bump(counter::STATS_DROPS),
        },
    }
}

/// Records the process's name the first time it is seen, from its group
/// leader: a thread's own comm may have been renamed (`tokio-runtime-w`).
#[inline(always)]
fn remember_process(tgid: u32) {
    if PROCS.get_ptr(tgid).is_some() {
        return;
    }
    let info = ProcInfo {
        comm: leader_comm().unwrap_or_else(current_comm),
        exit_ns: 0,
    };
    if PROCS.insert(tgid, info, BPF_NOEXIST).is_ok() {
        bump(counter::PROC_INSERTS);
    }
}

#[inline(always)]
fn leader_comm() -> Option<[u8; COMM_LEN]> {
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
    if let Some(p) = PROCS.get_ptr_mut(tgid) {
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
    if tgid != pid {
        return 0;
    }
    if let Some(p) = PROCS.get_ptr_mut(tgid) {
        // SAFETY: a valid map value pointer.
        unsafe { (*p).exit_ns = bpf_ktime_get_ns() };
    }
    0
}

/// The pid filter alone: for work attributed to a process other than the
/// current task's (a ring's owner), whose comm and cgroup are not at hand.
#[inline(always)]
fn passes_pid_filter(tgid: u32) -> bool {
    // SAFETY: a plain read of a global the loader wrote before attaching.
    let by_pid = unsafe { core::ptr::read_volatile(&FILTER_PIDS) };
    by_pid == 0 || PID_FILTER.get_ptr(tgid).is_some()
}

#[inline(always)]
fn passes_filters(tgid: u32) -> bool {
    // SAFETY: plain reads of globals the loader wrote before attaching.
    let (by_pid, by_comm, by_cgroup) = unsafe {
        (
            core::ptr::read_volatile(&FILTER_PIDS),
            core::ptr::read_volatile(&FILTER_COMMS),
            core::ptr::read_volatile(&FILTER_CGROUPS),
        )
    };
    if by_pid != 0 && PID_FILTER.get_ptr(tgid).is_none() {
        return false;
    }
    if by_comm != 0 {
        let comm = current_comm();
        if COMM_FILTER.get_ptr(comm).is_none() {
            return false;
        }
    }
    if by_cgroup != 0 {
        // SAFETY: no preconditions; the current task's default-hierarchy
        // (v2) cgroup id.
        let id = unsafe { aya_ebpf::helpers::bpf_get_current_cgroup_id() };
        if CGROUP_FILTER.get_ptr(id).is_none() {
            return false;
        }
    }
    true
}

/// One field of a global the loader wrote before attaching, read where it is
/// used: a load from the frozen .rodata map is a constant the verifier
/// knows, which BTF-typed loads need for their offsets.
#[inline(always)]
fn rd(field: &u32) -> usize {
    // SAFETY: a plain read of a global.
    unsafe { core::ptr::read_volatile(field) as usize }
}

/// Classifies fd `fd` of the current task by its inode type.
#[inline(always)]
fn fd_endpoint(task: *const u8, fd: i32) -> Endpoint {
    match fd_class(task, fd) {
        Some(e) => e,
        None => {
            bump(counter::FD_LOOKUP_FAILURES);
            Endpoint::Unknown
        }
    }
}

/// `task`: the current task, as bpf_get_current_task_btf returned it: a
/// typed (BTF) pointer, so the verifier lets the program load its fields
/// directly, fault-safe, at the constant offsets read from BTF.
#[inline(always)]
fn fd_class(task: *const u8, fd: i32) -> Option<Endpoint> {
    if rd(&OFFSETS.valid) == 0 || fd < 0 {
        return None;
    }
    if rd(&OFFSETS.cast_valid) == 0 {
        let class = iolens_fd_class_reads(fd);
        return (class != NO_CLASS).then(|| Endpoint::from_u8(class as u8));
    }
    let (_, fd_array) = fd_table(task)?;
    // The fd's slot, inline table or grown, read as a `struct kiocb`,
    // whose `ki_filp` is a `struct file *`: from there the walk is typed,
    // fault-safe loads, cheap enough to need no memory of earlier walks.
    let filp = rd(&OFFSETS.kiocb_filp);
    let slot_addr = (fd_array as u64).wrapping_add(fd as u64 * 8);
    // SAFETY: loads through cast pointers at verifier-known offsets; the
    // verifier makes them fault-safe.
    unsafe {
        let holder = rdonly_cast(slot_addr.wrapping_sub(filp as u64), rd(&OFFSETS.btf_kiocb));
        file_endpoint(load(holder, filp))
    }
}

/// `task->files` and its fd array (`files->fdt->fd`), both non-null.
#[inline(always)]
fn fd_table(task: *const u8) -> Option<(*const u8, *const u8)> {
    // SAFETY: typed pointers at verifier-known offsets (see fd_class).
    unsafe {
        let files: *const u8 = load(task, rd(&OFFSETS.task_files));
        if files.is_null() {
            return None;
        }
        let fdt: *const u8 = load(files, rd(&OFFSETS.files_fdt));
        if fdt.is_null() {
            return None;
        }
        // No bound check against fdt->max_fds: this runs only after the
        // syscall succeeded on the fd, so it is in the table, and fd
        // tables only grow.
        Some((files, load(fdt, rd(&OFFSETS.fdt_fd))))
    }
}

/// What `iolens_fd_class_reads` returns for an fd it could not classify.
const NO_CLASS: u32 = u32::MAX;

/// The current task's `fd` classified without bpf_rdonly_cast (Linux <
/// 6.2, or IOLENS_PROBE_READS=1): an `Endpoint` as u32, or NO_CLASS.
///
/// A global function, which the verifier checks once on its own: inlined
/// into sys_exit, its one-branch-per-fd walk of the inline table and its
/// cache loop were walked again along every path there, past the
/// verifier's limit once a comm filter was set.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn iolens_fd_class_reads(fd: i32) -> u32 {
    // SAFETY: the current task, as a typed pointer.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    fd_class_reads(task, fd).map_or(NO_CLASS, |e| e as u32)
}

#[inline(always)]
fn fd_class_reads(task: *const u8, fd: i32) -> Option<Endpoint> {
    if fd < 0 {
        return None;
    }
    let (files, fd_array) = fd_table(task)?;
    if fd_array == files.wrapping_add(rd(&OFFSETS.files_fd_array)) {
        // The process still uses the inline table (its first 64 fds): a
        // typed array, so with a constant index the whole walk is typed
        // loads. fd_slot turns the fd into that constant, one branch per
        // fd, because the verifier refuses a variable index.
        let off = fd_slot(fd)?;
        // SAFETY: typed pointers and verifier-known offsets throughout.
        return unsafe { file_endpoint(load(files, rd(&OFFSETS.files_fd_array) + off)) };
    }
    // A grown table is an untyped pointer array: probe reads, ~45 ns each.
    // FD_CACHE remembers a few fds' classes, trusted until the next
    // EPOCH bump: until then no fd anywhere has come to hold another
    // file.
    // SAFETY: this CPU's cache; only this function, which is not re-entered
    // on a CPU (sys_exit runs are not), touches it.
    let cache = unsafe { &mut *FD_CACHE.get_ptr_mut(0)? };
    let epoch = epoch();
    for e in &cache.entries {
        if e.fd == fd && e.files == files as u64 && e.epoch == epoch {
            return Some(Endpoint::from_u8(e.endpoint));
        }
    }
    let file: *const u8 = read_at(fd_array, fd as usize * 8).ok()?;
    if file.is_null() {
        return None;
    }
    let inode: *const u8 = read_at(file, rd(&OFFSETS.file_inode)).ok()?;
    let endpoint = Endpoint::from_mode(read_at(inode, rd(&OFFSETS.inode_mode)).ok()?);
    let i = (cache.next as usize) % FD_CACHE_ENTRIES;
    cache.next = cache.next.wrapping_add(1);
    if let Some(e) = cache.entries.get_mut(i) {
        *e = FdEntry {
            files: files as u64,
            epoch,
            fd,
            endpoint: endpoint as u8,
            _pad: [0; 3],
        };
    }
    Some(endpoint)
}

/// The class of a `struct file *` loaded as a typed (or cast) pointer.
///
/// # Safety
/// `file` must come from a typed load, so the loads below are verifier
/// checked and fault-safe.
#[inline(always)]
unsafe fn file_endpoint(file: *const u8) -> Option<Endpoint> {
    if file.is_null() {
        return None;
    }
    // SAFETY: the caller's contract.
    unsafe {
        let inode: *const u8 = load(file, rd(&OFFSETS.file_inode));
        if inode.is_null() {
            return None;
        }
        Some(Endpoint::from_mode(load(inode, rd(&OFFSETS.inode_mode))))
    }
}

/// Whether fd classes are remembered (FD_CACHE): only where grown tables
/// are walked with probe reads (no cast). A constant to the verifier, so
/// asked before anything else on the way to a close's epoch bump.
#[inline(always)]
fn remembers_fd_classes() -> bool {
    rd(&OFFSETS.cast_valid) == 0
}

/// The machine-wide epoch of remembered kernel addresses (see EPOCH).
#[inline(always)]
fn epoch() -> u64 {
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
fn bump_epoch() {
    if let Some(p) = EPOCH.get_ptr_mut(0) {
        // SAFETY: a valid map value.
        unsafe { atomic_add(p, 1) };
    }
}

/// `fd * 8` for an fd of the inline table, as a constant the verifier can
/// see: each arm loads its own immediate from an asm block the compiler
/// cannot fold into `fd * 8` (which the verifier would refuse as a
/// variable offset).
#[inline(always)]
fn fd_slot(fd: i32) -> Option<usize> {
    macro_rules! arms {
        ($($k:literal)*) => {
            match fd {
                $($k => Some(imm::<{ $k * 8 }>()),)*
                _ => None,
            }
        };
    }
    arms!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
          32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63)
}

#[inline(always)]
fn imm<const K: usize>() -> usize {
    let v: usize;
    // SAFETY: loads an immediate into a register; nothing else.
    unsafe { core::arch::asm!("{0} = {1}", out(reg) v, const K, options(pure, nomem, nostack)) };
    v
}

/// Loads a `T` at `base + off` from a BTF-typed kernel pointer.
///
/// # Safety
/// Only for pointers the verifier knows as BTF pointers (tracepoint
/// arguments of `tp_btf` programs, `bpf_get_current_task_btf`, and pointers
/// loaded from those) with `off` a verifier-known constant: the verifier
/// then emits a load that cannot fault the kernel.
#[inline(always)]
unsafe fn load<T: Copy>(base: *const u8, off: usize) -> T {
    // SAFETY: the caller's contract.
    unsafe { core::ptr::read_volatile(base.wrapping_add(off) as *const T) }
}

/// `bpf_rdonly_cast(addr, btf_id)`: `addr` as an untrusted pointer to the
/// kernel BTF type `btf_id`, which the verifier lets the program load
/// from (fault-safe, as for typed tracepoint arguments) at offsets inside
/// that type. The verifier replaces the call with a register move, so it
/// costs nothing where a bpf_probe_read_kernel costs ~45 ns here. Emitted
/// as a placeholder call the agent rewrites (see RDONLY_CAST_PLACEHOLDER);
/// only with `cast_valid`, and `btf_id` read from OFFSETS (the kfunc wants
/// a constant).
///
/// # Safety
/// Only call when `OFFSETS.cast_valid` is set.
#[cfg(target_arch = "bpf")]
#[inline(always)]
unsafe fn rdonly_cast(addr: u64, btf_id: usize) -> *const u8 {
    let out: u64;
    // SAFETY: the caller's contract; a call clobbers r1-r5.
    unsafe {
        core::arch::asm!(
            "call {placeholder}",
            placeholder = const iolens_common::RDONLY_CAST_PLACEHOLDER,
            inlateout("r1") addr => _,
            inlateout("r2") btf_id as u64 => _,
            lateout("r0") out,
            lateout("r3") _,
            lateout("r4") _,
            lateout("r5") _,
            options(nostack),
        );
    }
    out as *const u8
}

/// Atomic compare-and-swap (BPF_CMPXCHG, Linux 5.12): stores `new` at `at`
/// if it holds `old`; returns what it held. Written out because Rust's
/// BPF target offers no atomic compare-exchange.
///
/// # Safety
/// `at` must be a map value the program may write.
#[cfg(target_arch = "bpf")]
#[inline(always)]
unsafe fn cas(at: *mut u64, old: u64, new: u64) -> u64 {
    let out: u64;
    // SAFETY: the caller's contract; the instruction reads and writes
    // only `*at` and r0.
    unsafe {
        core::arch::asm!(
            "r0 = cmpxchg_64({at} + 0, r0, {new})",
            at = in(reg) at,
            new = in(reg) new,
            inlateout("r0") old => out,
            options(nostack),
        );
    }
    out
}

/// Atomic `*at += v` (BPF_ATOMIC BPF_ADD), written out for the same reason.
///
/// # Safety
/// `at` must be a map value the program may write.
#[cfg(target_arch = "bpf")]
#[inline(always)]
unsafe fn atomic_add(at: *mut u64, v: u64) {
    // SAFETY: the caller's contract; the instruction writes only `*at`.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({at} + 0) += {v}",
            at = in(reg) at,
            v = in(reg) v,
            options(nostack),
        );
    }
}

/// The host build exists only for clippy; nothing runs it.
#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
unsafe fn atomic_add(at: *mut u64, v: u64) {
    // SAFETY: the caller's contract.
    unsafe { *at += v };
}

/// The host build exists only for clippy; nothing runs it.
#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
unsafe fn cas(at: *mut u64, old: u64, new: u64) -> u64 {
    // SAFETY: the caller's contract.
    unsafe {
        let held = *at;
        if held == old {
            *at = new;
        }
        held
    }
}

/// The host build exists only for clippy (BPF registers do not exist
/// there); nothing runs it.
#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
unsafe fn rdonly_cast(addr: u64, _btf_id: usize) -> *const u8 {
    addr as *const u8
}

/// Reads a `T` at `base + off` from kernel memory.
#[inline(always)]
fn read_at<T>(base: *const u8, off: usize) -> Result<T, i32> {
    if base.is_null() {
        return Err(0);
    }
    // SAFETY: bpf_probe_read_kernel validates the address and returns an
    // error instead of faulting; wrapping_add keeps the pointer arithmetic
    // defined even for garbage.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off) as *const T) }.map_err(|_| 0)
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot only this CPU writes.
        unsafe { *c += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
