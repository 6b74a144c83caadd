use aya_ebpf::{
    macros::{btf_map, map},
    maps::Array,
};
use iolens_common::{THREAD_SLOTS, ThreadState};

use crate::kernel::{OFFSETS, cas, load, rd};

/// Per-thread state (scheduler stamps, the epoll wait in progress) of
/// most threads: the entry at `tid % THREAD_SLOTS`, which the first thread
/// to need it takes and gives back when it exits. Found with no helper
/// call: bpf_task_storage_get, which the rest use (see THREAD_STORAGE), cost ~60
/// ns a call here, twice per context switch round trip.
#[map]
pub(crate) static THREAD_ENTRIES: Array<ThreadEntry> = Array::with_max_entries(THREAD_SLOTS, 0);

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct ThreadEntry {
    /// The task (`struct task_struct *`) that holds the entry, 0 if none.
    /// Taken with a compare-and-swap from 0 (two threads whose ids share
    /// the index may race for it); then only the holder writes the entry.
    pub(crate) owner: u64,
    pub(crate) state: ThreadState,
}

/// Per-thread state in the task itself (task local storage), for threads
/// whose THREAD_ENTRIES entry another live thread holds: found through the task
/// without hashing and freed by the kernel with the task.
#[btf_map]
pub(crate) static THREAD_STORAGE: TaskStorage<ThreadState> = TaskStorage::new();

/// `PF_EXITING` (include/linux/sched.h): set early in do_exit, before
/// sched_process_exit gives the thread's entry back; a thread past it must
/// not take one again.
pub(crate) const PF_EXITING: u32 = 0x4;

/// The state of `task` (a typed pointer; `tid` its thread id): its THREAD_ENTRIES
/// entry if it holds it or can take it, else its task local storage. None
/// if the kernel refused storage.
#[inline(always)]
pub(crate) fn thread_state(task: *const u8, tid: u32) -> Option<*mut ThreadState> {
    if rd(&OFFSETS.valid) != 0
        && let Some(e) = THREAD_ENTRIES.get_ptr_mut(tid & (THREAD_SLOTS - 1))
    {
        let me = task as u64;
        // SAFETY: the map's entry. `owner` changes only by the CAS below
        // (from 0) and by its holder giving it back at exit, and the
        // state only by its holder, in its own context (its switch-outs
        // and syscall exits, which never run at once); `task` is a typed
        // task pointer at a verifier-known offset.
        unsafe {
            let owner = core::ptr::read_volatile(&raw const (*e).owner);
            if owner == me {
                return Some(&raw mut (*e).state);
            }
            if owner == 0
                && load::<u32>(task, rd(&OFFSETS.task_flags)) & PF_EXITING == 0
                && cas(&raw mut (*e).owner, 0, me) == 0
            {
                // Taken: the state comes along from task local storage,
                // where it was kept while another thread held the entry.
                (*e).state = match THREAD_STORAGE.get(task) {
                    Some(t) => *t,
                    None => ThreadState::default(),
                };
                return Some(&raw mut (*e).state);
            }
        }
    }
    THREAD_STORAGE.get_or_create(task)
}

/// `task`, which held its THREAD_ENTRIES entry as thread `from`, is now thread
/// `to` (exec by a thread other than the leader): its state goes to the
/// entry at `to` if free, else to its task local storage.
#[inline(always)]
pub(crate) fn move_thread_entry(task: *const u8, from: u32, to: u32) {
    let me = task as u64;
    let (from, to) = (from & (THREAD_SLOTS - 1), to & (THREAD_SLOTS - 1));
    let Some(src) = THREAD_ENTRIES.get_ptr_mut(from) else {
        return;
    };
    // SAFETY: map entries, under thread_state's rules: `task` holds `src`
    // and takes `dst` only by CAS from 0.
    unsafe {
        if from == to || core::ptr::read_volatile(&raw const (*src).owner) != me {
            return;
        }
        let state = (*src).state;
        core::ptr::write_volatile(&raw mut (*src).owner, 0);
        if let Some(dst) = THREAD_ENTRIES.get_ptr_mut(to)
            && cas(&raw mut (*dst).owner, 0, me) == 0
        {
            (*dst).state = state;
        } else if let Some(t) = THREAD_STORAGE.get_or_create(task) {
            *t = state;
        }
    }
}

/// Gives back the THREAD_ENTRIES entry at `tid` if `task` holds it.
#[inline(always)]
pub(crate) fn release_thread_entry(task: u64, tid: u32) {
    if let Some(e) = THREAD_ENTRIES.get_ptr_mut(tid & (THREAD_SLOTS - 1)) {
        // SAFETY: the map's entry; only its holder clears `owner`, and the
        // next holder overwrites the state when it takes the entry.
        unsafe {
            if core::ptr::read_volatile(&raw const (*e).owner) == task {
                core::ptr::write_volatile(&raw mut (*e).owner, 0);
            }
        }
    }
}

/// A task local storage map (`BPF_MAP_TYPE_TASK_STORAGE`), laid out the
/// way BTF map definitions are (aya-ebpf has none for this type).
#[repr(C)]
pub(crate) struct TaskStorage<T> {
    r#type: *const [i32; BPF_MAP_TYPE_TASK_STORAGE],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC],
}

pub(crate) const BPF_MAP_TYPE_TASK_STORAGE: usize = 29;
pub(crate) const BPF_F_NO_PREALLOC: usize = 1;
pub(crate) const BPF_LOCAL_STORAGE_GET_F_CREATE: u64 = 1;

// SAFETY: placeholders the loader patches; never dereferenced here.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    const fn new() -> Self {
        TaskStorage {
            r#type: core::ptr::null(),
            key: core::ptr::null(),
            value: core::ptr::null(),
            max_entries: core::ptr::null(),
            map_flags: core::ptr::null(),
        }
    }

    /// The task's value, created zeroed on first use; None if the kernel
    /// refused (out of memory, or storage busy on this CPU).
    #[inline(always)]
    fn get_or_create(&self, task: *const u8) -> Option<*mut T> {
        self.storage_get(task, BPF_LOCAL_STORAGE_GET_F_CREATE)
    }

    /// The task's value if it has one.
    #[inline(always)]
    fn get(&self, task: *const u8) -> Option<*mut T> {
        self.storage_get(task, 0)
    }

    #[inline(always)]
    fn storage_get(&self, task: *const u8, flags: u64) -> Option<*mut T> {
        // SAFETY: `task` is a typed task pointer (a tp_btf argument); the
        // helper checks the map and returns NULL on failure.
        let p = unsafe {
            aya_ebpf::helpers::generated::bpf_task_storage_get(
                core::ptr::from_ref(self).cast_mut().cast(),
                task.cast_mut().cast(),
                core::ptr::null_mut(),
                flags,
            )
        };
        (!p.is_null()).then_some(p.cast())
    }
}
