//! The sched family: per-thread scheduler state.

/// Entries of the kernel side's per-thread state array, indexed by thread
/// id modulo this (a power of two); a thread whose entry another live
/// thread holds keeps its state in task local storage instead.
pub const THREAD_SLOTS: u32 = 16_384;

/// Per-thread scheduler state, written only at the thread's own
/// switch-outs and syscall returns, so that nothing runs for the task coming
/// on CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadState {
    /// The thread's `se.sum_exec_runtime` at its last switch-out (valid
    /// when `nvcsw_seen` is set).
    pub runtime_seen: u64,
    /// Run-queue clock when the thread last switched out voluntarily (0: it
    /// did not).
    pub sleep_start: u64,
    /// The thread's `nvcsw` at its last switch-out, plus one (0: unknown),
    /// and its `nivcsw` then: the state is the thread's last switch-out's
    /// only if exactly one of the two moved on by one since, and that one
    /// is what the kernel counted.
    pub nvcsw_seen: u64,
    pub nivcsw_seen: u64,
    /// Run-queue clock when the thread last went to sleep inside a
    /// syscall (0: not asleep in one).
    pub wait_sleep: u64,
    /// ns slept so far in the current syscall, before that last sleep;
    /// both are settled (and cleared) when the call returns.
    pub wait_blocked: u64,
}
