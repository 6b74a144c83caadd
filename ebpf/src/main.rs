//! iolens kernel side.
//!
//! One raw tracepoint on `raw_syscalls:sys_exit` accounts the read/write
//! family, sendfile, splice, vmsplice, tee and copy_file_range: the syscall
//! number and arguments are still in the saved user registers at exit, and the
//! return value is the byte count, so no `sys_enter` program and no per-thread
//! scratch map are needed. The ends of a transfer are classified from the
//! fds' inode types, walked with offsets the agent reads from BTF.
//!
//! Everything is aggregated here in per-CPU maps; user space only reads them.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::{HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray},
    programs::{RawTracePointContext, TracePointContext},
};
use iolens_common::{
    COMM_LEN, DEFAULT_PROC_ENTRIES, DEFAULT_STATS_ENTRIES, Endpoint, FILTER_ENTRIES, KernelOffsets,
    ProcInfo, Shape, StatKey, StatValue, Syscall, counter,
};

/// Set by the agent at load time (`EbpfLoader::set_global`); read volatile so
/// the compiler cannot fold the initial value in.
#[unsafe(no_mangle)]
static FILTER_PIDS: u8 = 0;
#[unsafe(no_mangle)]
static FILTER_COMMS: u8 = 0;
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets {
    valid: 0,
    task_files: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_inode: 0,
    inode_mode: 0,
    task_group_leader: 0,
    task_comm: 0,
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

/// x86_64 `struct pt_regs` offsets (uapi, stable): the saved user registers.
const REGS_DI: usize = 112;
const REGS_SI: usize = 104;
const REGS_DX: usize = 96;
const REGS_ORIG_AX: usize = 120;

const BPF_NOEXIST: u64 = 1;

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn iolens_sys_exit(ctx: RawTracePointContext) -> i32 {
    match try_sys_exit(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[inline(always)]
fn try_sys_exit(ctx: &RawTracePointContext) -> Result<i32, i32> {
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    // This program runs for every syscall on the machine: reject the ones we
    // do not account before doing anything else.
    let nr: u64 = read_at(regs, REGS_ORIG_AX)?;
    let Some(syscall) = Syscall::from_x86_64_nr(nr) else {
        return Ok(0);
    };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !passes_filters(tgid) {
        return Ok(0);
    }

    let (src, dst) = if ret < 0 {
        // A failed call moved nothing; leave the path unknown rather than
        // spend reads classifying fds that may not exist.
        (Endpoint::Unknown, Endpoint::Unknown)
    } else {
        let arg = |off| read_at::<u64>(regs, off).map(|v| v as i32).unwrap_or(-1);
        match syscall.shape() {
            Shape::FdToUser => (fd_endpoint(arg(REGS_DI)), Endpoint::User),
            Shape::UserToFd => (Endpoint::User, fd_endpoint(arg(REGS_DI))),
            Shape::Arg1ToArg0 => (fd_endpoint(arg(REGS_SI)), fd_endpoint(arg(REGS_DI))),
            Shape::Arg0ToArg2 => (fd_endpoint(arg(REGS_DI)), fd_endpoint(arg(REGS_DX))),
            Shape::Arg0ToArg1 => (fd_endpoint(arg(REGS_DI)), fd_endpoint(arg(REGS_SI))),
        }
    };

    let key = StatKey {
        tgid,
        syscall: syscall as u8,
        src: src as u8,
        dst: dst as u8,
        _pad: 0,
    };
    let (errors, bytes) = if ret < 0 { (1, 0) } else { (0, ret as u64) };
    account(tgid, &key, errors, bytes);
    Ok(0)
}

#[inline(always)]
fn account(tgid: u32, key: &StatKey, errors: u64, bytes: u64) {
    if let Some(v) = STATS.get_ptr_mut(key) {
        // SAFETY: a per-CPU value; this program cannot be re-entered on this
        // CPU (the kernel skips recursive runs), so nothing else writes it.
        unsafe {
            (*v).calls += 1;
            (*v).errors += errors;
            (*v).bytes += bytes;
        }
        return;
    }
    let value = StatValue {
        calls: 1,
        errors,
        bytes,
    };
    match STATS.insert(key, value, BPF_NOEXIST) {
        Ok(()) => {
            bump(counter::STATS_INSERTS);
            remember_process(tgid);
        }
        // Another CPU inserted the key between our lookup and insert; this
        // CPU's slot was created zeroed with it, so add to that.
        Err(_) => match STATS.get_ptr_mut(key) {
            // SAFETY: as above.
            Some(v) => unsafe {
                (*v).calls += 1;
                (*v).errors += errors;
                (*v).bytes += bytes;
            },
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
        comm: leader_comm().unwrap_or_else(|| bpf_get_current_comm().unwrap_or([0; COMM_LEN])),
        exit_ns: 0,
    };
    if PROCS.insert(tgid, info, BPF_NOEXIST).is_ok() {
        bump(counter::PROC_INSERTS);
    }
}

#[inline(always)]
fn leader_comm() -> Option<[u8; COMM_LEN]> {
    let off = offsets();
    if off.valid == 0 {
        return None;
    }
    // SAFETY: bpf_get_current_task returns the current task_struct; every
    // dereference below goes through bpf_probe_read_kernel, which faults
    // safely.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let leader: *const u8 = read_at(task, off.task_group_leader as usize).ok()?;
    read_at(leader, off.task_comm as usize).ok()
}

/// `sched:sched_process_exec`: the process has a new name.
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn iolens_exec(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some(p) = PROCS.get_ptr_mut(tgid)
        && let Ok(comm) = bpf_get_current_comm()
    {
        // SAFETY: a valid map value pointer; a concurrent reader sees either
        // name, both of which were true.
        unsafe { (*p).comm = comm };
    }
    0
}

/// `sched:sched_process_exit`: stamp the exit of a thread group leader so
/// the agent can keep its series for the grace period and then drop them.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn iolens_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, pid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if tgid != pid {
        return 0;
    }
    if let Some(p) = PROCS.get_ptr_mut(tgid) {
        // SAFETY: a valid map value pointer.
        unsafe { (*p).exit_ns = bpf_ktime_get_ns() };
    }
    0
}

#[inline(always)]
fn passes_filters(tgid: u32) -> bool {
    // SAFETY: plain reads of globals the loader wrote before attaching.
    let (by_pid, by_comm) = unsafe {
        (
            core::ptr::read_volatile(&FILTER_PIDS),
            core::ptr::read_volatile(&FILTER_COMMS),
        )
    };
    if by_pid != 0 && PID_FILTER.get_ptr(tgid).is_none() {
        return false;
    }
    if by_comm != 0 {
        let comm = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
        if COMM_FILTER.get_ptr(comm).is_none() {
            return false;
        }
    }
    true
}

#[inline(always)]
fn offsets() -> KernelOffsets {
    // SAFETY: a plain read of a global the loader wrote before attaching.
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

/// Classifies fd `fd` of the current task by its inode type.
#[inline(always)]
fn fd_endpoint(fd: i32) -> Endpoint {
    match fd_mode(fd) {
        Some(mode) => Endpoint::from_mode(mode),
        None => {
            bump(counter::FD_LOOKUP_FAILURES);
            Endpoint::Unknown
        }
    }
}

#[inline(always)]
fn fd_mode(fd: i32) -> Option<u16> {
    let off = offsets();
    if off.valid == 0 || fd < 0 {
        return None;
    }
    // SAFETY: see leader_comm: every dereference is a probe read.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let files: *const u8 = read_at(task, off.task_files as usize).ok()?;
    let fdt: *const u8 = read_at(files, off.files_fdt as usize).ok()?;
    let max_fds: u32 = read_at(fdt, off.fdt_max_fds as usize).ok()?;
    if fd as u32 >= max_fds {
        return None;
    }
    let fd_array: *const u8 = read_at(fdt, off.fdt_fd as usize).ok()?;
    let file: *const u8 = read_at(fd_array, fd as usize * 8).ok()?;
    if file.is_null() {
        return None;
    }
    let inode: *const u8 = read_at(file, off.file_inode as usize).ok()?;
    read_at(inode, off.inode_mode as usize).ok()
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
