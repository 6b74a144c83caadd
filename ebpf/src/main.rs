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

mod aio;
mod block;
mod epoch;
mod filter;
mod health;
mod io_uring;
mod kernel;
mod page_cache;
mod process;
mod regs;
mod sched;
mod slot;
mod syscalls;
mod tally;
mod thread;
mod waits;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
