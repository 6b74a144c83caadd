//! What the agent tells the kernel side about the running kernel: struct
//! offsets from BTF and the kfunc placeholder.

/// The immediate of the kernel side's placeholder `call` instructions for
/// the `bpf_rdonly_cast` kfunc. aya 0.14 cannot relocate kfunc calls, so
/// the agent rewrites each such call into a kfunc call (src_reg
/// BPF_PSEUDO_KFUNC_CALL, imm the kfunc's id in the running kernel's BTF)
/// before loading. No helper has this number.
pub const RDONLY_CAST_PLACEHOLDER: i32 = 0x7fff_0001;

/// Set in EPOCH by the agent once thread exits are traced (each bumps the
/// epoch): from then on sys_exit may remember the current task per CPU.
pub const EPOCH_LIVE: u64 = 1 << 63;

/// Byte offsets of kernel struct fields the kernel side walks with
/// `bpf_probe_read_kernel`, read from the running kernel's BTF by the agent so
/// the kernel side needs no compile-time layout (CO-RE by hand):
/// `task_struct.files -> files_struct.fdt -> fdtable.fd[fd]
/// -> file.f_inode -> inode.i_mode` classifies an fd, and
/// `task_struct.group_leader -> task_struct.comm` names the process.
/// `valid == 0` means "unknown": fds then classify as `Endpoint::Unknown`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub valid: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    /// `files_struct.fd_array`: the inline table of the first
    /// `FD_INLINE` fds, in use while `fdt->fd` points at it.
    pub files_fd_array: u32,
    pub fdt_fd: u32,
    pub file_inode: u32,
    pub inode_mode: u32,
    pub task_group_leader: u32,
    pub task_comm: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_nvcsw: u32,
    pub task_nivcsw: u32,
    /// `task_struct.flags`, for PF_EXITING.
    pub task_flags: u32,
    /// `task->se.sum_exec_runtime`: the scheduler's own CPU time of the
    /// thread, current when sched_switch fires.
    pub task_sum_exec: u32,
    /// `task->se.prev_sum_exec_runtime`: sum_exec_runtime when the thread
    /// was last picked to run.
    pub task_prev_sum_exec: u32,
    /// `task->sched_info.last_arrival`: the run-queue clock when the thread
    /// last came on CPU (CONFIG_SCHED_INFO). `sched_info_valid` needs it and
    /// the run-queue clock (`task_se_cfs_rq`); without them sleep and epoll
    /// blocked times are not measured.
    pub sched_info_valid: u32,
    pub task_last_arrival: u32,
    /// `io_kiocb.opcode`; 0 with `uring_valid == 0`.
    pub kiocb_opcode: u32,
    /// `io_kiocb.ctx`: the request's ring.
    pub kiocb_ctx: u32,
    /// A folio's pages: `1 << order` when bit `pg_head` of `folio.flags` is
    /// set, else 1, with the order the byte at `folio_order`:
    /// `folio._folio_order` where it exists (6.1), else the low byte of
    /// `folio._flags_1` (6.3+, folio_order() in include/linux/mm.h). 0 with
    /// `folio_valid == 0`, when dirtied folios count one page each (also
    /// the case on kernels that dirty pages, not folios).
    pub folio_valid: u32,
    pub folio_flags: u32,
    pub folio_order: u32,
    pub pg_head: u32,
    /// `task->se.cfs_rq->rq->clock`, the run queue's clock, which the
    /// scheduler has just updated when sched_switch fires: a timestamp
    /// without a clock read, on the clock of `last_arrival`. Needs
    /// CONFIG_FAIR_GROUP_SCHED; part of `sched_info_valid`.
    pub task_se_cfs_rq: u32,
    pub cfs_rq_rq: u32,
    pub rq_clock: u32,
    pub uring_valid: u32,
    /// Set when the agent turned the placeholder calls into calls of the
    /// `bpf_rdonly_cast` kfunc, which the verifier replaces with a register
    /// move that types an address as a (read-only, fault-safe) pointer to
    /// a BTF type: loads through it need no bpf_probe_read_kernel. These
    /// are the BTF ids of the types cast to. 0: probe reads.
    pub cast_valid: u32,
    /// `struct kiocb`, whose `ki_filp` (at `kiocb_filp`) is a
    /// `struct file *`: an fd table slot is read as one.
    pub btf_kiocb: u32,
    pub kiocb_filp: u32,
    /// `struct io_kiocb`: a completion's request, a `void *` in
    /// io_uring_complete.
    pub btf_io_kiocb: u32,
    /// `struct pt_regs` and `task_struct.stack`: a task's saved user
    /// registers sit at a fixed distance from its stack base (learned from
    /// one bpf_task_pt_regs call), so a switching-out task's are read
    /// through a cast instead of that helper. 0: the helper.
    pub btf_pt_regs: u32,
    pub task_stack: u32,
    /// `struct task_struct`: sys_exit casts the current task it remembers
    /// per CPU back to its type instead of asking a helper. 0: the helper.
    pub btf_task: u32,
    /// `task->thread_info.status`, whose TS_COMPAT bit is set from the
    /// entry of an ia32 syscall until the return to user space: such a
    /// call has ia32 numbers and arguments. 0 with `compat_valid == 0`
    /// (then every call is read as x86_64).
    pub compat_valid: u32,
    pub task_ti_status: u32,
    /// `kiocb.ki_pos` and `iov_iter.count`: a read's range, for the fexit
    /// on `filemap_get_pages` that stands in for the mm_filemap_get_pages
    /// tracepoint where the kernel lacks it. 0 with `read_range_valid == 0`.
    pub read_range_valid: u32,
    pub kiocb_pos: u32,
    pub iter_count: u32,
    /// Where `order` sits in the mm_filemap_add_to_page_cache record (from
    /// its tracefs format); 0 where the record has none (before folios),
    /// and each added page counts one.
    pub fm_add_order: u32,
    /// Where `ctx` (the ring) sits in the io_uring_create record.
    pub uring_create_ctx: u32,
    /// 1 if sched_switch has its `prev_state` argument (5.18+); else the
    /// state is loaded from `task_struct.__state` at `task_state`.
    pub switch_prev_state_arg: u32,
    pub task_state: u32,
    /// The block family's request fields: `request.q`, `.cmd_flags`,
    /// `.__data_len` (bytes not yet completed), `request_queue.disk`,
    /// `gendisk.major` and `.first_minor`. 0 with `block_valid == 0`
    /// (then requests are counted with device 0 and op from nothing:
    /// the family reports itself degraded).
    pub block_valid: u32,
    pub rq_q: u32,
    pub rq_cmd_flags: u32,
    pub rq_data_len: u32,
    pub queue_disk: u32,
    pub disk_major: u32,
    pub disk_first_minor: u32,
    /// `file.f_mode` (fmode_t): FMODE_WRITE tells a pipe's write end from
    /// its read end, which sets vmsplice's direction.
    pub file_f_mode: u32,
}
