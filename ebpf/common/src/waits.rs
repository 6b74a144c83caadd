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
