use aya_ebpf::{macros::map, maps::Array};
use iolens_common::Syscall;

use crate::kernel::{OFFSETS, load, rd};

/// Where a task's saved user registers (`task_pt_regs()`) lie, as an
/// offset from its stack base (`task->stack`): THREAD_SIZE less the
/// registers and any top-of-stack padding, the same for every task. Learned
/// from the first bpf_task_pt_regs answer in_epoll_wait gets; 0 until
/// then, 1 if what was seen made no sense (the helper is used then).
#[map]
pub(crate) static REGS_AT: Array<u64> = Array::with_max_entries(1, 0);

/// x86_64 `struct pt_regs` offsets (uapi, stable) of the saved user
/// registers a syscall's number and first three arguments are in. An
/// x86_64 call passes them in di, si, dx (and its number in orig_ax); an
/// ia32 one in bx, cx, dx.
const PT_REGS_BX: usize = 40;
const PT_REGS_CX: usize = 88;
const PT_REGS_DX: usize = 96;
const PT_REGS_SI: usize = 104;
const PT_REGS_DI: usize = 112;
pub(crate) const PT_REGS_ORIG_AX: usize = 120;

/// A syscall's x86_64 number and its first three arguments, whatever ABI
/// the call came in by. Fields in the order of the saved registers they
/// are loaded from on x86_64 (dx, si, di, orig_ax), which is the order the
/// loads were always emitted in.
#[derive(Clone, Copy)]
pub(crate) struct SyscallArgs {
    pub(crate) arg2: u64,
    pub(crate) arg1: u64,
    pub(crate) arg0: u64,
    pub(crate) nr: u64,
}

impl SyscallArgs {
    /// Reads them from the saved registers at `regs`. An ia32 call
    /// (`compat`) is translated to the x86_64 layout and numbers here, so
    /// nothing after it branches on the ABI: two variants of every path
    /// in sys_exit would not fit the verifier's limit.
    ///
    /// # Safety
    /// `regs` must be a BTF-typed `struct pt_regs *` (see `load`).
    #[inline(always)]
    pub(crate) unsafe fn read(regs: *const u8, compat: bool) -> SyscallArgs {
        // SAFETY: the caller's contract; constant offsets inside pt_regs.
        unsafe {
            if compat {
                SyscallArgs {
                    arg2: load::<u64>(regs, PT_REGS_DX) & 0xffff_ffff,
                    arg1: load::<u64>(regs, PT_REGS_CX) & 0xffff_ffff,
                    arg0: load::<u64>(regs, PT_REGS_BX) & 0xffff_ffff,
                    nr: iolens_i386_nr(load(regs, PT_REGS_ORIG_AX)),
                }
            } else {
                SyscallArgs {
                    arg2: load(regs, PT_REGS_DX),
                    arg1: load(regs, PT_REGS_SI),
                    arg0: load(regs, PT_REGS_DI),
                    nr: load(regs, PT_REGS_ORIG_AX),
                }
            }
        }
    }
}
/// `TS_COMPAT` (arch/x86/include/asm/thread_info.h).
pub(crate) const TS_COMPAT: u32 = 0x2;

/// Whether the current syscall of `task` (the current task, or one
/// switching out) is an ia32 one: TS_COMPAT in `thread_info.status`.
#[inline(always)]
pub(crate) fn in_compat_syscall(task: *const u8) -> bool {
    rd(&OFFSETS.compat_valid) != 0
        // SAFETY: a typed task pointer at a verifier-known offset.
        && unsafe { load::<u32>(task, rd(&OFFSETS.task_ti_status)) } & TS_COMPAT != 0
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

/// Records, once, how far `task`'s saved user registers (`regs`, from
/// bpf_task_pt_regs) lie from its stack base; see REGS_AT.
#[inline(always)]
pub(crate) fn learn_regs_at(regs: *const u8, task: *const u8) {
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
