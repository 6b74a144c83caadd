//! Types shared by the iolens eBPF programs and the agent.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel side writes it into
//! BPF maps and the agent reads the same bytes back. Changing a layout means
//! rebuilding both sides, which the workspace does in one `cargo build`.
#![no_std]

mod aio;
mod block;
mod health;
mod io_uring;
mod kernel;
mod process;
mod sched;
mod syscalls;
mod waits;

pub use aio::*;
pub use block::*;
pub use health::counter;
pub use io_uring::*;
pub use kernel::*;
pub use process::*;
pub use sched::*;
pub use syscalls::*;
pub use waits::*;

/// Length of `task_struct::comm`, NUL included.
pub const COMM_LEN: usize = 16;

/// Capacity of the in-kernel filter maps (`--pid`, `--comm`).
pub const FILTER_ENTRIES: u32 = 1_024;

/// Map names, shared so the agent cannot ask for a map the object lacks.
pub mod maps {
    pub const SYSCALL_STATS: &str = "SYSCALL_STATS";
    pub const PROC_INFO: &str = "PROC_INFO";
    pub const HEALTH: &str = "HEALTH";
    pub const PID_FILTER: &str = "PID_FILTER";
    pub const COMM_FILTER: &str = "COMM_FILTER";
    pub const CGROUP_FILTER: &str = "CGROUP_FILTER";
    pub const PROC_COUNTERS: &str = "PROC_COUNTERS";
    pub const EPOLL_WAIT_HIST: &str = "EPOLL_WAIT_HIST";
    pub const URING_STATS: &str = "URING_STATS";
    pub const RING_OWNERS: &str = "RING_OWNERS";
    pub const EPOCH: &str = "EPOCH";
    pub const SYSCALL_OFFCPU: &str = "SYSCALL_OFFCPU";
    pub const BLOCK_STATS: &str = "BLOCK_STATS";
    pub const BLOCK_HIST: &str = "BLOCK_HIST";
    pub const AIO_STATS: &str = "AIO_STATS";
}

/// Names of the global configuration variables the agent sets at load time.
pub mod globals {
    /// Non-zero: only tgids present in `PID_FILTER` are counted.
    pub const FILTER_PIDS: &str = "FILTER_PIDS";
    /// Non-zero: only tasks whose comm is present in `COMM_FILTER` are counted.
    pub const FILTER_COMMS: &str = "FILTER_COMMS";
    /// Non-zero: only tasks whose cgroup v2 id is in `CGROUP_FILTER` are
    /// counted.
    pub const FILTER_CGROUPS: &str = "FILTER_CGROUPS";
    /// [`super::KernelOffsets`] resolved from the running kernel's BTF.
    pub const OFFSETS: &str = "OFFSETS";
}

/// Field-wise sums, one definition for both sides: the kernel adds deltas
/// into map values and its per-CPU slot, user space folds per-CPU values
/// and totals. Inline: the kernel side cannot afford a call per add.
pub trait Accumulate {
    fn accumulate(&mut self, o: &Self);
}

/// Histograms (the epoll blocked-time buckets) sum slot by slot.
impl<const N: usize> Accumulate for [u64; N] {
    #[inline(always)]
    fn accumulate(&mut self, o: &Self) {
        for (a, b) in self.iter_mut().zip(o) {
            *a += b;
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)] plain integers and byte arrays
    // with no padding the kernel could leave uninitialised (StatKey's pad is
    // an explicit field), so any bit pattern is valid.
    unsafe impl aya::Pod for super::StatKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StatValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ThreadState {}
    // SAFETY: as above (explicit padding field).
    unsafe impl aya::Pod for super::UringKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UringValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OffcpuKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OffcpuValue {}
    // SAFETY: as above (explicit padding field).
    unsafe impl aya::Pod for super::BlockKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BlockValue {}
    // SAFETY: as above (explicit padding field).
    unsafe impl aya::Pod for super::BlockHistKey {}
    // SAFETY: as above (explicit padding field).
    unsafe impl aya::Pod for super::AioKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AioValue {}
}
