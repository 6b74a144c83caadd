use aya_ebpf::{macros::map, maps::HashMap};
use iolens_common::{COMM_LEN, FILTER_ENTRIES};

use crate::kernel::current_comm;

/// Set by the agent at load time (`EbpfLoader::set_global`); read volatile so
/// the compiler cannot fold the initial value in.
#[unsafe(no_mangle)]
pub(crate) static FILTER_PIDS: u8 = 0;
#[unsafe(no_mangle)]
pub(crate) static FILTER_COMMS: u8 = 0;
#[unsafe(no_mangle)]
pub(crate) static FILTER_CGROUPS: u8 = 0;

#[map]
pub(crate) static PID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(FILTER_ENTRIES, 0);

#[map]
pub(crate) static COMM_FILTER: HashMap<[u8; COMM_LEN], u8> =
    HashMap::with_max_entries(FILTER_ENTRIES, 0);

/// cgroup v2 ids (the cgroup directory's inode number) to count.
#[map]
pub(crate) static CGROUP_FILTER: HashMap<u64, u8> = HashMap::with_max_entries(FILTER_ENTRIES, 0);

/// The pid filter alone: for work attributed to a process other than the
/// current task's (a ring's owner), whose comm and cgroup are not at hand.
#[inline(always)]
pub(crate) fn passes_pid_filter(tgid: u32) -> bool {
    // SAFETY: a plain read of a global the loader wrote before attaching.
    let by_pid = unsafe { core::ptr::read_volatile(&FILTER_PIDS) };
    by_pid == 0 || PID_FILTER.get_ptr(tgid).is_some()
}

#[inline(always)]
pub(crate) fn passes_filters(tgid: u32) -> bool {
    // SAFETY: plain reads of globals the loader wrote before attaching.
    let (by_pid, by_comm, by_cgroup) = unsafe {
        (
            core::ptr::read_volatile(&FILTER_PIDS),
            core::ptr::read_volatile(&FILTER_COMMS),
            core::ptr::read_volatile(&FILTER_CGROUPS),
        )
    };
    if by_pid != 0 && PID_FILTER.get_ptr(tgid).is_none() {
        return false;
    }
    if by_comm != 0 {
        let comm = current_comm();
        if COMM_FILTER.get_ptr(comm).is_none() {
            return false;
        }
    }
    if by_cgroup != 0 {
        // SAFETY: no preconditions; the current task's default-hierarchy
        // (v2) cgroup id.
        let id = unsafe { aya_ebpf::helpers::bpf_get_current_cgroup_id() };
        if CGROUP_FILTER.get_ptr(id).is_none() {
            return false;
        }
    }
    true
}

/// Whether any of --pid, --comm, --cgroup is in force.
#[inline(always)]
pub(crate) fn filters_active() -> bool {
    // SAFETY: plain reads of globals the loader wrote before attaching.
    unsafe {
        core::ptr::read_volatile(&FILTER_PIDS) != 0
            || core::ptr::read_volatile(&FILTER_COMMS) != 0
            || core::ptr::read_volatile(&FILTER_CGROUPS) != 0
    }
}
