use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel};
use iolens_common::{COMM_LEN, KernelOffsets};

#[unsafe(no_mangle)]
pub(crate) static OFFSETS: KernelOffsets = KernelOffsets {
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
    folio_order: 0,
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
    read_range_valid: 0,
    kiocb_pos: 0,
    iter_count: 0,
    fm_add_order: 0,
    uring_create_ctx: 0,
    switch_prev_state_arg: 0,
    task_state: 0,
    block_valid: 0,
    rq_q: 0,
    rq_cmd_flags: 0,
    rq_data_len: 0,
    queue_disk: 0,
    disk_major: 0,
    disk_first_minor: 0,
    file_f_mode: 0,
};

pub(crate) const BPF_NOEXIST: u64 = 1;

/// One field of a global the loader wrote before attaching, read where it is
/// used: a load from the frozen .rodata map is a constant the verifier
/// knows, which BTF-typed loads need for their offsets.
#[inline(always)]
pub(crate) fn rd(field: &u32) -> usize {
    // SAFETY: a plain read of a global.
    unsafe { core::ptr::read_volatile(field) as usize }
}

/// Loads a `T` at `base + off` from a BTF-typed kernel pointer.
///
/// # Safety
/// Only for pointers the verifier knows as BTF pointers (tracepoint
/// arguments of `tp_btf` programs, `bpf_get_current_task_btf`, and pointers
/// loaded from those) with `off` a verifier-known constant: the verifier
/// then emits a load that cannot fault the kernel.
#[inline(always)]
pub(crate) unsafe fn load<T: Copy>(base: *const u8, off: usize) -> T {
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
pub(crate) unsafe fn rdonly_cast(addr: u64, btf_id: usize) -> *const u8 {
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

/// The host build exists only for clippy (BPF registers do not exist
/// there); nothing runs it.
#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
pub(crate) unsafe fn rdonly_cast(addr: u64, _btf_id: usize) -> *const u8 {
    addr as *const u8
}

/// Atomic compare-and-swap (BPF_CMPXCHG, Linux 5.12): stores `new` at `at`
/// if it holds `old`; returns what it held. Written out because Rust's
/// BPF target offers no atomic compare-exchange.
///
/// # Safety
/// `at` must be a map value the program may write.
#[cfg(target_arch = "bpf")]
#[inline(always)]
pub(crate) unsafe fn cas(at: *mut u64, old: u64, new: u64) -> u64 {
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

/// The host build exists only for clippy; nothing runs it.
#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
pub(crate) unsafe fn cas(at: *mut u64, old: u64, new: u64) -> u64 {
    // SAFETY: the caller's contract.
    unsafe {
        let held = *at;
        if held == old {
            *at = new;
        }
        held
    }
}

/// Atomic `*at += v` (BPF_ATOMIC BPF_ADD), written out for the same reason.
///
/// # Safety
/// `at` must be a map value the program may write.
#[cfg(target_arch = "bpf")]
#[inline(always)]
pub(crate) unsafe fn atomic_add(at: *mut u64, v: u64) {
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
pub(crate) unsafe fn atomic_add(at: *mut u64, v: u64) {
    // SAFETY: the caller's contract.
    unsafe { *at += v };
}

/// Reads a `T` at `base + off` from kernel memory.
#[inline(always)]
pub(crate) fn read_at<T>(base: *const u8, off: usize) -> Result<T, i32> {
    if base.is_null() {
        return Err(0);
    }
    // SAFETY: bpf_probe_read_kernel validates the address and returns an
    // error instead of faulting; wrapping_add keeps the pointer arithmetic
    // defined even for garbage.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off) as *const T) }.map_err(|_| 0)
}

#[inline(always)]
pub(crate) fn imm<const K: usize>() -> usize {
    let v: usize;
    // SAFETY: loads an immediate into a register; nothing else.
    unsafe { core::arch::asm!("{0} = {1}", out(reg) v, const K, options(pure, nomem, nostack)) };
    v
}

/// `v`, as a new value the compiler cannot trace back to where `v` lives:
/// a value spilled to the stack is otherwise reloaded at each use, and
/// the verifiers before 6.x's spill tracking (6.1) lose a bound checked on
/// one reload by the next (`math between map_value pointer and register
/// with unbounded min value`).
#[inline(always)]
pub(crate) fn fresh(v: u64) -> u64 {
    let out: u64;
    // SAFETY: a register move; nothing else.
    unsafe {
        core::arch::asm!("{0} = {1}", out(reg) out, in(reg) v, options(pure, nomem, nostack))
    };
    out
}

/// The current task's name; zeros if the helper fails (it fails only for
/// a bad buffer). aya's
/// bpf_get_current_comm zeroes its buffer first, which compiled to a call
/// to the BPF target's byte-wise memset before every call (every event,
/// with a comm filter); the helper writes all 16 bytes itself, so the
/// buffer starts uninitialised here, as u64s so it is copied in two loads.
#[inline(always)]
pub(crate) fn current_comm() -> [u8; COMM_LEN] {
    let mut buf = core::mem::MaybeUninit::<[u64; COMM_LEN / 8]>::uninit();
    // SAFETY: the helper writes COMM_LEN bytes (NUL-padded) into `buf`,
    // whose size that is, or returns an error.
    let rc = unsafe {
        aya_ebpf::helpers::generated::bpf_get_current_comm(buf.as_mut_ptr().cast(), COMM_LEN as u32)
    };
    let words = if rc == 0 {
        // SAFETY: `buf` was written in full when the helper returned 0.
        unsafe { buf.assume_init() }
    } else {
        [0; COMM_LEN / 8]
    };
    // SAFETY: 16 bytes as 16 bytes.
    unsafe { core::mem::transmute::<[u64; COMM_LEN / 8], [u8; COMM_LEN]>(words) }
}

/// Whether the current task has any of the `PF_*` bits in `mask`
/// (include/linux/sched.h); false without BTF offsets.
#[inline(always)]
pub(crate) fn current_has_flags(mask: u32) -> bool {
    if rd(&OFFSETS.valid) == 0 {
        return false;
    }
    // SAFETY: the current task as a typed pointer, a verifier-known offset.
    let flags: u32 = unsafe {
        load(
            aya_ebpf::helpers::bpf_get_current_task_btf() as *const u8,
            rd(&OFFSETS.task_flags),
        )
    };
    flags & mask != 0
}

#[inline(always)]
pub(crate) fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}
