use aya_ebpf::{helpers::bpf_get_current_task_btf, macros::map, maps::PerCpuArray};
use iolens_common::{Endpoint, counter};

use crate::{
    epoch::epoch,
    health::bump,
    kernel::{OFFSETS, imm, load, rd, rdonly_cast, read_at},
};

/// Classes of fds recently seen on this CPU, for fd tables past the inline
/// 64 walked with probe reads (kernels without bpf_rdonly_cast); see
/// `iolens_fd_class_reads`.
#[map]
pub(crate) static FD_CLASS_CACHE: PerCpuArray<FdCache> = PerCpuArray::with_max_entries(1, 0);

pub(crate) const FD_CACHE_ENTRIES: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct FdCache {
    entries: [FdEntry; FD_CACHE_ENTRIES],
    next: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct FdEntry {
    /// The fd table (`task->files`): threads may have their own.
    files: u64,
    /// EPOCH when it was classified: read before the fd table, so a
    /// close that races the classification leaves an entry already old.
    epoch: u64,
    fd: i32,
    endpoint: u8,
    /// READ_END when the file is a pipe open without FMODE_WRITE.
    read_end: u8,
    _pad: [u8; 2],
}

/// Classifies fd `fd` of the current task by its inode type.
#[inline(always)]
pub(crate) fn fd_endpoint(task: *const u8, fd: i32) -> Endpoint {
    match fd_class(task, fd) {
        Some(e) => e,
        None => {
            bump(counter::FD_LOOKUP_FAILURES);
            Endpoint::Unknown
        }
    }
}

/// `task`: the current task, as bpf_get_current_task_btf returned it: a
/// typed (BTF) pointer, so the verifier lets the program load its fields
/// directly, fault-safe, at the constant offsets read from BTF.
#[inline(always)]
pub(crate) fn fd_class(task: *const u8, fd: i32) -> Option<Endpoint> {
    if rd(&OFFSETS.valid) == 0 || fd < 0 {
        return None;
    }
    if rd(&OFFSETS.cast_valid) == 0 {
        let class = iolens_fd_class_reads(fd);
        return (class != NO_CLASS).then(|| Endpoint::from_u8(class as u8));
    }
    // SAFETY: fd_file's pointer comes from typed loads. Not `?` on it:
    // that spilled one more register in sys_exit (264 bytes of stack, not
    // 256), its combined stack then 512 of 512 on kernels without private
    // stacks.
    unsafe { file_endpoint(fd_file(task, fd).unwrap_or(core::ptr::null())) }
}

/// The `struct file *` in fd `fd`'s slot of the current task's table, as a
/// typed pointer (casts only: `cast_valid` set).
#[inline(always)]
pub(crate) fn fd_file(task: *const u8, fd: i32) -> Option<*const u8> {
    let (_, fd_array) = fd_table(task)?;
    // The fd's slot, inline table or grown, read as a `struct kiocb`,
    // whose `ki_filp` is a `struct file *`: from there the walk is typed,
    // fault-safe loads, cheap enough to need no memory of earlier walks.
    let filp = rd(&OFFSETS.kiocb_filp);
    let slot_addr = (fd_array as u64).wrapping_add(fd as u64 * 8);
    // SAFETY: loads through cast pointers at verifier-known offsets; the
    // verifier makes them fault-safe.
    unsafe {
        let holder = rdonly_cast(slot_addr.wrapping_sub(filp as u64), rd(&OFFSETS.btf_kiocb));
        let file: *const u8 = load(holder, filp);
        (!file.is_null()).then_some(file)
    }
}

/// `FMODE_WRITE` (include/linux/fs.h).
pub(crate) const FMODE_WRITE: u32 = 2;
/// Set in what `iolens_fd_class_reads` returns when the fd is a pipe open
/// without FMODE_WRITE: a pipe's read end.
pub(crate) const READ_END: u32 = 1 << 8;

/// The ends of a vmsplice on fd `fd`, by the pipe end it names: into the
/// pipe through a file open for writing, else out of it into user memory
/// (fs/splice.c, vmsplice_type). An fd that cannot be classified keeps
/// the user -> fd direction every other write has, with an unknown end.
#[inline(always)]
pub(crate) fn pipe_ends(fd: i32) -> (Endpoint, Endpoint) {
    let class = iolens_pipe_class(fd);
    if class == NO_CLASS {
        bump(counter::FD_LOOKUP_FAILURES);
        return (Endpoint::User, Endpoint::Unknown);
    }
    let end = Endpoint::from_u8(class as u8);
    if class & READ_END != 0 {
        (end, Endpoint::User)
    } else {
        (Endpoint::User, end)
    }
}

/// The current task's `fd` classified, with READ_END set for a pipe's read
/// end, or NO_CLASS.
///
/// A global function, verified once on its own: inlined, its walk made
/// sys_exit's own stack 8 bytes larger, the combined stack with flush then
/// 512 of 512 bytes on kernels without private stacks. It is called for
/// vmsplice only, so its helper call (the task, ~25 ns) is rarely paid.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn iolens_pipe_class(fd: i32) -> u32 {
    // As in iolens_fd_class_reads: the constant prunes the walk where the
    // offsets are unknown.
    if rd(&OFFSETS.valid) == 0 || fd < 0 {
        return NO_CLASS;
    }
    if rd(&OFFSETS.cast_valid) == 0 {
        return iolens_fd_class_reads(fd);
    }
    // SAFETY: the current task, as a typed pointer.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    let Some(file) = fd_file(task, fd) else {
        return NO_CLASS;
    };
    // SAFETY: typed pointers from fd_file's loads, at verifier-known
    // offsets.
    unsafe {
        match file_endpoint(file) {
            Some(e) => e as u32 | file_read_end(file, e),
            None => NO_CLASS,
        }
    }
}

/// READ_END for a pipe (or FIFO) `file` open without FMODE_WRITE, else 0.
/// Only pipes are asked: no other kind of file is vmspliced.
///
/// # Safety
/// `file` must come from a typed load, as for `file_endpoint`.
#[inline(always)]
unsafe fn file_read_end(file: *const u8, class: Endpoint) -> u32 {
    if class != Endpoint::Pipe {
        return 0;
    }
    // SAFETY: the caller's contract.
    let mode: u32 = unsafe { load(file, rd(&OFFSETS.file_f_mode)) };
    if mode & FMODE_WRITE == 0 { READ_END } else { 0 }
}

/// `task->files` and its fd array (`files->fdt->fd`), both non-null.
#[inline(always)]
pub(crate) fn fd_table(task: *const u8) -> Option<(*const u8, *const u8)> {
    // SAFETY: typed pointers at verifier-known offsets (see fd_class).
    unsafe {
        let files: *const u8 = load(task, rd(&OFFSETS.task_files));
        if files.is_null() {
            return None;
        }
        let fdt: *const u8 = load(files, rd(&OFFSETS.files_fdt));
        if fdt.is_null() {
            return None;
        }
        // No bound check against fdt->max_fds: this runs only after the
        // syscall succeeded on the fd, so it is in the table, and fd
        // tables only grow.
        Some((files, load(fdt, rd(&OFFSETS.fdt_fd))))
    }
}

/// What `iolens_fd_class_reads` returns for an fd it could not classify.
pub(crate) const NO_CLASS: u32 = u32::MAX;

/// The current task's `fd` classified without bpf_rdonly_cast (Linux <
/// 6.2, or IOLENS_PROBE_READS=1): an `Endpoint` as u32, with READ_END set
/// for a pipe's read end, or NO_CLASS.
///
/// A global function, which the verifier checks once on its own: inlined
/// into sys_exit, its one-branch-per-fd walk of the inline table and its
/// cache loop were walked again along every path there, past the
/// verifier's limit once a comm filter was set.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn iolens_fd_class_reads(fd: i32) -> u32 {
    // Its callers check this too, but a global function is verified on its
    // own, for any arguments, and before 6.8 even when no caller is left:
    // on 6.1 without offsets (all 0) the walk below loaded through
    // task+0, a scalar, and sys_exit was refused. The constant prunes it.
    if rd(&OFFSETS.valid) == 0 {
        return NO_CLASS;
    }
    // SAFETY: the current task, as a typed pointer.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    fd_class_reads(task, fd).unwrap_or(NO_CLASS)
}

#[inline(always)]
pub(crate) fn fd_class_reads(task: *const u8, fd: i32) -> Option<u32> {
    if fd < 0 {
        return None;
    }
    let (files, fd_array) = fd_table(task)?;
    if fd_array == files.wrapping_add(rd(&OFFSETS.files_fd_array)) {
        // The process still uses the inline table (its first 64 fds): a
        // typed array, so with a constant index the whole walk is typed
        // loads. fd_slot turns the fd into that constant, one branch per
        // fd, because the verifier refuses a variable index.
        let off = fd_slot(fd)?;
        // SAFETY: typed pointers and verifier-known offsets throughout.
        return unsafe {
            let file: *const u8 = load(files, rd(&OFFSETS.files_fd_array) + off);
            file_endpoint(file).map(|e| e as u32 | file_read_end(file, e))
        };
    }
    // A grown table is an untyped pointer array: probe reads, ~45 ns each.
    // FD_CLASS_CACHE remembers a few fds' classes, trusted until the next
    // EPOCH bump: until then no fd anywhere has come to hold another
    // file.
    // SAFETY: this CPU's cache; only this function, which is not re-entered
    // on a CPU (sys_exit runs are not), touches it.
    let cache = unsafe { &mut *FD_CLASS_CACHE.get_ptr_mut(0)? };
    let epoch = epoch();
    for e in &cache.entries {
        if e.fd == fd && e.files == files as u64 && e.epoch == epoch {
            return Some(u32::from(e.endpoint) | u32::from(e.read_end) << 8);
        }
    }
    let file: *const u8 = read_at(fd_array, fd as usize * 8).ok()?;
    if file.is_null() {
        return None;
    }
    let inode: *const u8 = read_at(file, rd(&OFFSETS.file_inode)).ok()?;
    let endpoint = Endpoint::from_mode(read_at(inode, rd(&OFFSETS.inode_mode)).ok()?);
    // One more probe read, for pipes only (vmsplice's direction).
    let read_end = endpoint == Endpoint::Pipe
        && read_at::<u32>(file, rd(&OFFSETS.file_f_mode)).ok()? & FMODE_WRITE == 0;
    let i = (cache.next as usize) % FD_CACHE_ENTRIES;
    cache.next = cache.next.wrapping_add(1);
    if let Some(e) = cache.entries.get_mut(i) {
        *e = FdEntry {
            files: files as u64,
            epoch,
            fd,
            endpoint: endpoint as u8,
            read_end: u8::from(read_end),
            _pad: [0; 2],
        };
    }
    Some(endpoint as u32 | u32::from(read_end) << 8)
}

/// The class of a `struct file *` loaded as a typed (or cast) pointer.
///
/// # Safety
/// `file` must come from a typed load, so the loads below are verifier
/// checked and fault-safe.
#[inline(always)]
pub(crate) unsafe fn file_endpoint(file: *const u8) -> Option<Endpoint> {
    if file.is_null() {
        return None;
    }
    // SAFETY: the caller's contract.
    unsafe {
        let inode: *const u8 = load(file, rd(&OFFSETS.file_inode));
        if inode.is_null() {
            return None;
        }
        Some(Endpoint::from_mode(load(inode, rd(&OFFSETS.inode_mode))))
    }
}

/// Whether fd classes are remembered (FD_CLASS_CACHE): only where grown tables
/// are walked with probe reads (no cast). A constant to the verifier, so
/// asked before anything else on the way to a close's epoch bump.
#[inline(always)]
pub(crate) fn remembers_fd_classes() -> bool {
    rd(&OFFSETS.cast_valid) == 0
}

/// `fd * 8` for an fd of the inline table, as a constant the verifier can
/// see: each arm loads its own immediate from an asm block the compiler
/// cannot fold into `fd * 8` (which the verifier would refuse as a
/// variable offset).
#[inline(always)]
pub(crate) fn fd_slot(fd: i32) -> Option<usize> {
    macro_rules! arms {
        ($($k:literal)*) => {
            match fd {
                $($k => Some(imm::<{ $k * 8 }>()),)*
                _ => None,
            }
        };
    }
    arms!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
          32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63)
}
