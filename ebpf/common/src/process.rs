//! The process family: per-process names and exit stamps, and the
//! per-process counters the other families add to (syscalls not
//! accounted per syscall, switches, CPU and sleep time, page cache).

use crate::{Accumulate, COMM_LEN};

/// Default capacity of the process table (comm and exit state per tgid).
pub const DEFAULT_PROC_ENTRIES: u32 = 8_192;

/// Per-process counters that are not per syscall.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcCounters {
    /// Syscalls iolens does not account per syscall (those are in SYSCALL_STATS);
    /// user space adds the two for the process's total.
    pub syscalls: u64,
    /// Switches out while blocked (nvcsw).
    pub vcsw: u64,
    /// Switches out while runnable: preempted, or yielded (nivcsw).
    pub ivcsw: u64,
    /// ns on CPU, from switch-in to switch-out.
    pub oncpu_ns: u64,
    /// ns off CPU after voluntary switches (sleeping/blocked), to switch-in.
    pub sleep_ns: u64,
    /// Page-cache pages looked up by reads (mm_filemap_get_pages ranges).
    pub cache_lookup_pages: u64,
    /// Pages added to the page cache (misses; readahead included).
    pub cache_added_pages: u64,
    /// Page faults on file mappings (mm_filemap_fault).
    pub cache_faults: u64,
    /// Pages mapped by fault-around (mm_filemap_map_pages ranges).
    pub cache_mapped_pages: u64,
    /// Pages dirtied: writeback_dirty_folio events, each counted as its
    /// folio's pages (one event can stand for hundreds with large folios).
    pub cache_dirtied_pages: u64,
    /// io_uring instances created.
    pub rings_created: u64,
}

impl Accumulate for ProcCounters {
    #[inline(always)]
    fn accumulate(&mut self, o: &Self) {
        self.syscalls += o.syscalls;
        self.vcsw += o.vcsw;
        self.ivcsw += o.ivcsw;
        self.oncpu_ns += o.oncpu_ns;
        self.sleep_ns += o.sleep_ns;
        self.cache_lookup_pages += o.cache_lookup_pages;
        self.cache_added_pages += o.cache_added_pages;
        self.cache_faults += o.cache_faults;
        self.cache_mapped_pages += o.cache_mapped_pages;
        self.cache_dirtied_pages += o.cache_dirtied_pages;
        self.rings_created += o.rings_created;
    }
}

/// What the kernel side knows about a process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcInfo {
    /// `comm` of the thread group leader, updated at exec.
    pub comm: [u8; COMM_LEN],
    /// CLOCK_MONOTONIC nanoseconds when the group leader exited; 0 while it
    /// runs.
    pub exit_ns: u64,
}
