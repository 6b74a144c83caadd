//! The waits family: the epoll blocked-time histograms.

/// Capacity of the epoll blocked-time histograms (one per process name).
pub const WAIT_HIST_ENTRIES: u32 = 1_024;

/// log2 buckets of the epoll blocked-time histogram: bucket i counts waits
/// of [2^i, 2^(i+1)) ns, the last one everything longer; then the count
/// and the sum in ns.
pub const WAIT_BUCKETS: usize = 40;
pub const WAIT_SLOT_COUNT: usize = WAIT_BUCKETS;
pub const WAIT_SLOT_SUM_NS: usize = WAIT_BUCKETS + 1;
pub const WAIT_SLOTS: usize = WAIT_BUCKETS + 2;

/// Capacity of the off-CPU-by-syscall tallies (per process and syscall).
pub const OFFCPU_ENTRIES: u32 = 16_384;

/// The syscall number recorded for calls outside the x86_64 table: an ia32
/// call with no x86_64 twin (see `Syscall::i386_to_x86_64`), or a number
/// the kernel did not know (an ENOSYS call). Exported as one bucket.
pub const OFFCPU_OTHER: u32 = u32::MAX;

/// Key of the off-CPU-by-syscall tallies: process and x86_64 syscall
/// number (or [`OFFCPU_OTHER`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OffcpuKey {
    pub tgid: u32,
    pub nr: u32,
}

/// Time a process's threads slept inside one syscall: settled when each
/// call returned, from the voluntary switch-outs while it was in progress.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffcpuValue {
    /// ns slept (off CPU, voluntarily) inside the syscall.
    pub ns: u64,
    /// Calls that slept at least once.
    pub calls: u64,
}

impl crate::Accumulate for OffcpuValue {
    #[inline(always)]
    fn accumulate(&mut self, o: &Self) {
        self.ns += o.ns;
        self.calls += o.calls;
    }
}
