//! The kernel side's own health counters.

/// Indices into the per-CPU `HEALTH` array: the kernel side's own health.
pub mod counter {
    /// New keys inserted into SYSCALL_STATS (compared with live entries to derive
    /// LRU evictions).
    pub const SYSCALL_STATS_INSERTS: u32 = 0;
    /// Updates that failed (the event was lost).
    pub const SYSCALL_STATS_DROPS: u32 = 1;
    /// Fd type lookups that failed (the bytes are counted, path unknown).
    pub const FD_LOOKUP_FAILURES: u32 = 2;
    /// New keys inserted into PROC_INFO.
    pub const PROC_INFO_INSERTS: u32 = 3;
    /// New keys inserted into PROC_COUNTERS.
    pub const PROC_COUNTERS_INSERTS: u32 = 4;
    /// New keys inserted into URING_STATS.
    pub const URING_STATS_INSERTS: u32 = 5;
    /// Updates to the other maps that failed.
    pub const OTHER_DROPS: u32 = 6;
    /// New keys inserted into SYSCALL_OFFCPU.
    pub const OFFCPU_INSERTS: u32 = 7;
    /// New keys inserted into BLOCK_STATS.
    pub const BLOCK_STATS_INSERTS: u32 = 8;
    /// New keys inserted into AIO_STATS.
    pub const AIO_STATS_INSERTS: u32 = 9;
    /// AIO iocbs or events the kernel side could not read (user memory
    /// paged out, or past AIO_BATCH in one call): counted without opcode,
    /// or, for events, not at all.
    pub const AIO_UNREAD: u32 = 10;
    pub const COUNT: u32 = 11;
}
