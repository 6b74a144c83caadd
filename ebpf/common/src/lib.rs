//! Types shared by the iolens eBPF programs and the agent.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel side writes it into
//! BPF maps and the agent reads the same bytes back. Changing a layout means
//! rebuilding both sides, which the workspace does in one `cargo build`.
#![no_std]

/// Length of `task_struct::comm`, NUL included.
pub const COMM_LEN: usize = 16;

/// Default capacity of the per-process statistics map (keys, not processes:
/// one process uses one key per syscall and path it exercises).
pub const DEFAULT_STATS_ENTRIES: u32 = 16_384;
/// Default capacity of the process table (comm and exit state per tgid).
pub const DEFAULT_PROC_ENTRIES: u32 = 8_192;
/// Capacity of the in-kernel filter maps (`--pid`, `--comm`).
pub const FILTER_ENTRIES: u32 = 1_024;
/// Capacity of the epoll blocked-time histograms (one per process name).
pub const WAIT_HIST_ENTRIES: u32 = 1_024;
/// Capacity of the per-process, per-opcode io_uring statistics.
pub const URING_ENTRIES: u32 = 8_192;
/// Capacity of the io_uring ring -> owner table.
pub const RING_ENTRIES: u32 = 4_096;
/// Entries of the kernel side's per-thread state array, indexed by thread
/// id modulo this (a power of two); a thread whose entry another live
/// thread holds keeps its state in task local storage instead.
pub const THREAD_SLOTS: u32 = 16_384;

/// The immediate of the kernel side's placeholder `call` instructions for
/// the `bpf_rdonly_cast` kfunc. aya 0.14 cannot relocate kfunc calls, so
/// the agent rewrites each such call into a kfunc call (src_reg
/// BPF_PSEUDO_KFUNC_CALL, imm the kfunc's id in the running kernel's BTF)
/// before loading. No helper has this number.
pub const RDONLY_CAST_PLACEHOLDER: i32 = 0x7fff_0001;

/// log2 buckets of the epoll blocked-time histogram: bucket i counts waits
/// of [2^i, 2^(i+1)) ns, the last one everything longer; then the count
/// and the sum in ns.
pub const WAIT_BUCKETS: usize = 40;
pub const WAIT_SLOT_COUNT: usize = WAIT_BUCKETS;
pub const WAIT_SLOT_SUM_NS: usize = WAIT_BUCKETS + 1;
pub const WAIT_SLOTS: usize = WAIT_BUCKETS + 2;

/// Map names, shared so the agent cannot ask for a map the object lacks.
pub mod maps {
    pub const STATS: &str = "STATS";
    pub const PROCS: &str = "PROCS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const PID_FILTER: &str = "PID_FILTER";
    pub const COMM_FILTER: &str = "COMM_FILTER";
    pub const CGROUP_FILTER: &str = "CGROUP_FILTER";
    pub const PSTATS: &str = "PSTATS";
    pub const WAIT_HIST: &str = "WAIT_HIST";
    pub const URING: &str = "URING";
    pub const RINGS: &str = "RINGS";
    pub const EPOCH: &str = "EPOCH";
}

/// Set in EPOCH by the agent once thread exits are traced (each bumps the
/// epoch): from then on sys_exit may remember the current task per CPU.
pub const EPOCH_LIVE: u64 = 1 << 63;

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

/// Syscalls whose bytes iolens accounts. The discriminant is the
/// `StatKey::syscall` byte; the x86_64 syscall number maps onto it in the
/// kernel program.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Syscall {
    Read = 0,
    Write = 1,
    Readv = 2,
    Writev = 3,
    Pread64 = 4,
    Pwrite64 = 5,
    Preadv = 6,
    Pwritev = 7,
    Preadv2 = 8,
    Pwritev2 = 9,
    Recvfrom = 10,
    Sendto = 11,
    Recvmsg = 12,
    Sendmsg = 13,
    Sendfile = 14,
    Splice = 15,
    Vmsplice = 16,
    Tee = 17,
    CopyFileRange = 18,
    EpollWait = 19,
    EpollPwait = 20,
    EpollPwait2 = 21,
    Poll = 22,
    Ppoll = 23,
    Select = 24,
    Pselect6 = 25,
    IoUringEnter = 26,
    Sendmmsg = 27,
    Recvmmsg = 28,
}

impl Syscall {
    pub const ALL: [Syscall; 29] = [
        Syscall::Read,
        Syscall::Write,
        Syscall::Readv,
        Syscall::Writev,
        Syscall::Pread64,
        Syscall::Pwrite64,
        Syscall::Preadv,
        Syscall::Pwritev,
        Syscall::Preadv2,
        Syscall::Pwritev2,
        Syscall::Recvfrom,
        Syscall::Sendto,
        Syscall::Recvmsg,
        Syscall::Sendmsg,
        Syscall::Sendfile,
        Syscall::Splice,
        Syscall::Vmsplice,
        Syscall::Tee,
        Syscall::CopyFileRange,
        Syscall::EpollWait,
        Syscall::EpollPwait,
        Syscall::EpollPwait2,
        Syscall::Poll,
        Syscall::Ppoll,
        Syscall::Select,
        Syscall::Pselect6,
        Syscall::IoUringEnter,
        Syscall::Sendmmsg,
        Syscall::Recvmmsg,
    ];

    /// Maps an x86_64 syscall number to the syscall it accounts.
    #[inline(always)]
    pub const fn from_x86_64_nr(nr: u64) -> Option<Syscall> {
        Some(match nr {
            0 => Syscall::Read,
            1 => Syscall::Write,
            17 => Syscall::Pread64,
            18 => Syscall::Pwrite64,
            19 => Syscall::Readv,
            20 => Syscall::Writev,
            40 => Syscall::Sendfile,
            44 => Syscall::Sendto,
            45 => Syscall::Recvfrom,
            46 => Syscall::Sendmsg,
            47 => Syscall::Recvmsg,
            299 => Syscall::Recvmmsg,
            307 => Syscall::Sendmmsg,
            275 => Syscall::Splice,
            276 => Syscall::Tee,
            278 => Syscall::Vmsplice,
            295 => Syscall::Preadv,
            296 => Syscall::Pwritev,
            326 => Syscall::CopyFileRange,
            7 => Syscall::Poll,
            23 => Syscall::Select,
            232 => Syscall::EpollWait,
            270 => Syscall::Pselect6,
            271 => Syscall::Ppoll,
            281 => Syscall::EpollPwait,
            426 => Syscall::IoUringEnter,
            441 => Syscall::EpollPwait2,
            327 => Syscall::Preadv2,
            328 => Syscall::Pwritev2,
            _ => return None,
        })
    }

    /// The x86_64 number of the ia32 syscall `nr` (a 32-bit process's, or
    /// `int 0x80`; arch/x86/entry/syscalls/syscall_32.tbl), for the calls
    /// iolens accounts or watches (those that close or replace fds), so
    /// that everything downstream reads one numbering. `u64::MAX` for the
    /// rest, including the old `socketcall` multiplexer and the old
    /// `select` with its argument block.
    #[inline(always)]
    pub const fn i386_to_x86_64(nr: u64) -> u64 {
        match nr {
            3 => 0,     // read
            4 => 1,     // write
            6 => 3,     // close
            11 => 59,   // execve
            54 => 16,   // ioctl
            63 => 33,   // dup2
            142 => 23,  // _newselect
            145 => 19,  // readv
            146 => 20,  // writev
            168 => 7,   // poll
            180 => 17,  // pread64
            181 => 18,  // pwrite64
            187 => 40,  // sendfile
            239 => 40,  // sendfile64
            256 => 232, // epoll_wait
            308 => 270, // pselect6
            309 => 271, // ppoll
            313 => 275, // splice
            315 => 276, // tee
            316 => 278, // vmsplice
            319 => 281, // epoll_pwait
            330 => 292, // dup3
            333 => 295, // preadv
            334 => 296, // pwritev
            337 => 299, // recvmmsg
            345 => 307, // sendmmsg
            358 => 322, // execveat
            369 => 44,  // sendto
            370 => 46,  // sendmsg
            371 => 45,  // recvfrom
            372 => 47,  // recvmsg
            377 => 326, // copy_file_range
            378 => 327, // preadv2
            379 => 328, // pwritev2
            // Numbers from 403 on are shared by both tables.
            426 | 436 | 441 => nr,
            _ => u64::MAX,
        }
    }

    pub const fn from_u8(v: u8) -> Option<Syscall> {
        if (v as usize) < Self::ALL.len() {
            Some(Self::ALL[v as usize])
        } else {
            None
        }
    }

    /// The name the kernel uses (`syscalls:sys_enter_<name>`), used as the
    /// `syscall` label.
    pub const fn name(self) -> &'static str {
        match self {
            Syscall::Read => "read",
            Syscall::Write => "write",
            Syscall::Readv => "readv",
            Syscall::Writev => "writev",
            Syscall::Pread64 => "pread64",
            Syscall::Pwrite64 => "pwrite64",
            Syscall::Preadv => "preadv",
            Syscall::Pwritev => "pwritev",
            Syscall::Preadv2 => "preadv2",
            Syscall::Pwritev2 => "pwritev2",
            Syscall::Recvfrom => "recvfrom",
            Syscall::Sendto => "sendto",
            Syscall::Recvmsg => "recvmsg",
            Syscall::Sendmsg => "sendmsg",
            Syscall::Sendfile => "sendfile64",
            Syscall::Splice => "splice",
            Syscall::Vmsplice => "vmsplice",
            Syscall::Tee => "tee",
            Syscall::CopyFileRange => "copy_file_range",
            Syscall::EpollWait => "epoll_wait",
            Syscall::EpollPwait => "epoll_pwait",
            Syscall::EpollPwait2 => "epoll_pwait2",
            Syscall::Poll => "poll",
            Syscall::Ppoll => "ppoll",
            Syscall::Select => "select",
            Syscall::Pselect6 => "pselect6",
            Syscall::IoUringEnter => "io_uring_enter",
            Syscall::Sendmmsg => "sendmmsg",
            Syscall::Recvmmsg => "recvmmsg",
        }
    }

    /// Waits for readiness (epoll, poll, select): no bytes, but events.
    pub const fn is_wait(self) -> bool {
        matches!(
            self,
            Syscall::EpollWait
                | Syscall::EpollPwait
                | Syscall::EpollPwait2
                | Syscall::Poll
                | Syscall::Ppoll
                | Syscall::Select
                | Syscall::Pselect6
        )
    }

    /// Returns a count of messages, each of whose byte counts the kernel
    /// wrote into the caller's `struct mmsghdr` array (`msg_len`).
    pub const fn counts_messages(self) -> bool {
        matches!(self, Syscall::Sendmmsg | Syscall::Recvmmsg)
    }

    pub const fn is_epoll(self) -> bool {
        matches!(
            self,
            Syscall::EpollWait | Syscall::EpollPwait | Syscall::EpollPwait2
        )
    }

    /// How the syscall's arguments name the two ends of the transfer.
    #[inline(always)]
    pub const fn shape(self) -> Shape {
        match self {
            Syscall::Read
            | Syscall::Readv
            | Syscall::Pread64
            | Syscall::Preadv
            | Syscall::Preadv2
            | Syscall::Recvfrom
            | Syscall::Recvmsg
            | Syscall::Recvmmsg => Shape::FdToUser,
            Syscall::Write
            | Syscall::Writev
            | Syscall::Pwrite64
            | Syscall::Pwritev
            | Syscall::Pwritev2
            | Syscall::Sendto
            | Syscall::Sendmsg
            | Syscall::Sendmmsg
            | Syscall::Vmsplice => Shape::UserToFd,
            // sendfile(out_fd, in_fd, ...): source is the second argument.
            Syscall::Sendfile => Shape::Arg1ToArg0,
            // splice(fd_in, off_in, fd_out, ...), copy_file_range likewise.
            Syscall::Splice | Syscall::CopyFileRange => Shape::Arg0ToArg2,
            // tee(fd_in, fd_out, ...).
            Syscall::Tee => Shape::Arg0ToArg1,
            // poll(fds, nfds, ...), ppoll(fds, nfds, ...): fds scanned is
            // the second argument; select/pselect6(nfds, ...): the first.
            Syscall::Poll | Syscall::Ppoll => Shape::ScanArg1,
            Syscall::Select | Syscall::Pselect6 => Shape::ScanArg0,
            Syscall::EpollWait | Syscall::EpollPwait | Syscall::EpollPwait2 => Shape::Events,
            // io_uring_enter(fd, to_submit, ...).
            Syscall::IoUringEnter => Shape::ScanArg1,
        }
    }
}

/// The x86_64 numbers [`SYSCALL_INFO`] covers: every number
/// [`Syscall::from_x86_64_nr`] knows is below it (the highest is 441).
pub const X86_64_NRS: usize = 448;

/// What the eBPF side needs to know of an x86_64 syscall number, packed in
/// a `u16` so that it is one load from [`SYSCALL_INFO`]: the syscall in the
/// low byte, then its [`Shape`], then whether it is an epoll wait and
/// whether it counts messages. Decoding with `match` compiled to a tree of
/// some ten branches, then another for the shape, on every syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallInfo(u16);

impl SyscallInfo {
    const SHAPE_SHIFT: u16 = 8;
    const EPOLL: u16 = 1 << 12;
    const MESSAGES: u16 = 1 << 13;
    /// An entry for a number that is not accounted.
    pub const NONE: SyscallInfo = SyscallInfo(u16::MAX);

    pub const fn of(s: Syscall) -> SyscallInfo {
        let mut v = s as u16 | (s.shape() as u16) << Self::SHAPE_SHIFT;
        if s.is_epoll() {
            v |= Self::EPOLL;
        }
        if s.counts_messages() {
            v |= Self::MESSAGES;
        }
        SyscallInfo(v)
    }

    /// The syscall's number in [`Syscall`] (`Syscall as u8`).
    #[inline(always)]
    pub const fn syscall(self) -> u8 {
        self.0 as u8
    }

    #[inline(always)]
    pub const fn shape(self) -> Shape {
        Shape::from_bits(self.0 >> Self::SHAPE_SHIFT)
    }

    #[inline(always)]
    pub const fn is_epoll(self) -> bool {
        self.0 & Self::EPOLL != 0
    }

    #[inline(always)]
    pub const fn counts_messages(self) -> bool {
        self.0 & Self::MESSAGES != 0
    }
}

/// [`SyscallInfo`] by x86_64 syscall number, [`SyscallInfo::NONE`] for
/// numbers not accounted. A static, so that the eBPF object holds it once,
/// in its read-only data, where sys_exit reads it with one bounded load.
pub static SYSCALL_INFO: [SyscallInfo; X86_64_NRS] = {
    let mut t = [SyscallInfo::NONE; X86_64_NRS];
    let mut nr = 0;
    while nr < X86_64_NRS {
        if let Some(s) = Syscall::from_x86_64_nr(nr as u64) {
            t[nr] = SyscallInfo::of(s);
        }
        nr += 1;
    }
    t
};

/// Where a syscall's source and destination come from in its arguments.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    FdToUser,
    UserToFd,
    Arg1ToArg0,
    Arg0ToArg2,
    Arg0ToArg1,
    /// No transfer; the return value counts events, and the first argument
    /// is a count to accumulate (fds scanned, SQEs offered).
    ScanArg0,
    /// As ScanArg0, with the count in the second argument.
    ScanArg1,
    /// No transfer; the return value counts events.
    Events,
}

impl Shape {
    /// The shape numbered `bits & 7`: every value names one (the compiler
    /// folds this into the value itself).
    #[inline(always)]
    const fn from_bits(bits: u16) -> Shape {
        match bits & 7 {
            0 => Shape::FdToUser,
            1 => Shape::UserToFd,
            2 => Shape::Arg1ToArg0,
            3 => Shape::Arg0ToArg2,
            4 => Shape::Arg0ToArg1,
            5 => Shape::ScanArg0,
            6 => Shape::ScanArg1,
            _ => Shape::Events,
        }
    }
}

/// One end of a transfer, from the fd's inode type (or user memory).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// The fd could not be resolved (bad fd, or the call failed first).
    Unknown = 0,
    /// A user-space buffer.
    User = 1,
    /// A regular file (S_IFREG).
    File = 2,
    /// A socket (S_IFSOCK).
    Socket = 3,
    /// A pipe or FIFO (S_IFIFO).
    Pipe = 4,
    /// Anything else: character and block devices, anonymous inodes.
    Other = 5,
}

impl Endpoint {
    pub const fn from_u8(v: u8) -> Endpoint {
        match v {
            1 => Endpoint::User,
            2 => Endpoint::File,
            3 => Endpoint::Socket,
            4 => Endpoint::Pipe,
            5 => Endpoint::Other,
            _ => Endpoint::Unknown,
        }
    }

    /// Classifies an inode's `i_mode`.
    #[inline(always)]
    pub const fn from_mode(mode: u16) -> Endpoint {
        const S_IFMT: u16 = 0o170000;
        match mode & S_IFMT {
            0o100000 => Endpoint::File,
            0o140000 => Endpoint::Socket,
            0o010000 => Endpoint::Pipe,
            _ => Endpoint::Other,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Endpoint::Unknown => "unknown",
            Endpoint::User => "user",
            Endpoint::File => "file",
            Endpoint::Socket => "socket",
            Endpoint::Pipe => "pipe",
            Endpoint::Other => "other",
        }
    }
}

/// Key of the per-process statistics map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatKey {
    pub tgid: u32,
    /// [`Syscall`] discriminant.
    pub syscall: u8,
    /// [`Endpoint`] the bytes came from.
    pub src: u8,
    /// [`Endpoint`] the bytes went to.
    pub dst: u8,
    pub _pad: u8,
}

/// Value of the per-process statistics map (one per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatValue {
    /// Completed calls, failed ones included.
    pub calls: u64,
    /// Calls that returned a negative errno.
    pub errors: u64,
    /// Sum of positive return values: bytes moved; for waits, ready events;
    /// for io_uring_enter, SQEs consumed.
    pub bytes: u64,
    /// Calls that returned 0: end of file, or a wait that timed out.
    pub zero: u64,
    /// Sum of a count argument: fds scanned by poll/select, SQEs offered to
    /// io_uring_enter.
    pub scanned: u64,
}

/// Per-process counters that are not per syscall.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcCounters {
    /// Syscalls iolens does not account per syscall (those are in STATS);
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

/// Per-thread scheduler state, written only at the thread's own
/// switch-outs and epoll returns, so that nothing runs for the task coming
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
    /// Run-queue clock when the thread last went to sleep inside an epoll
    /// wait (0: not asleep in one).
    pub wait_sleep: u64,
    /// ns slept so far in the current epoll wait.
    pub wait_blocked: u64,
}

/// Key of the io_uring statistics: process and opcode.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UringKey {
    pub tgid: u32,
    pub opcode: u8,
    pub _pad: [u8; 3],
}

/// io_uring statistics per process and opcode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UringValue {
    pub submitted: u64,
    pub completed: u64,
    /// Completions with res < 0.
    pub failed: u64,
    /// Sum of res > 0 for opcodes whose result is a byte count.
    pub bytes: u64,
}

/// Field-wise sums, one definition for both sides: the kernel adds deltas
/// into map values and its per-CPU slot, user space folds per-CPU values
/// and totals. Inline: the kernel side cannot afford a call per add.
pub trait Accumulate {
    fn accumulate(&mut self, o: &Self);
}

impl Accumulate for StatValue {
    #[inline(always)]
    fn accumulate(&mut self, o: &Self) {
        self.calls += o.calls;
        self.errors += o.errors;
        self.bytes += o.bytes;
        self.zero += o.zero;
        self.scanned += o.scanned;
    }
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

impl Accumulate for UringValue {
    #[inline(always)]
    fn accumulate(&mut self, o: &Self) {
        self.submitted += o.submitted;
        self.completed += o.completed;
        self.failed += o.failed;
        self.bytes += o.bytes;
    }
}

/// Opcode recorded when the request could not be read.
pub const URING_OP_UNKNOWN: u8 = 255;

/// Whether an io_uring opcode's positive result is a byte count.
pub const fn uring_op_moves_bytes(op: u8) -> bool {
    // READV WRITEV READ_FIXED WRITE_FIXED SENDMSG RECVMSG READ WRITE SEND
    // RECV SPLICE TEE SEND_ZC SENDMSG_ZC READ_MULTISHOT RECV_ZC READV_FIXED
    // WRITEV_FIXED
    matches!(
        op,
        1 | 2 | 4 | 5 | 9 | 10 | 22 | 23 | 26 | 27 | 30 | 33 | 47 | 48 | 49 | 58 | 60 | 61
    )
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

/// Indices into the per-CPU `COUNTERS` array: the kernel side's own health.
pub mod counter {
    /// New keys inserted into STATS (compared with live entries to derive
    /// LRU evictions).
    pub const STATS_INSERTS: u32 = 0;
    /// Updates that failed (the event was lost).
    pub const STATS_DROPS: u32 = 1;
    /// Fd type lookups that failed (the bytes are counted, path unknown).
    pub const FD_LOOKUP_FAILURES: u32 = 2;
    /// New keys inserted into PROCS.
    pub const PROC_INSERTS: u32 = 3;
    /// New keys inserted into PSTATS.
    pub const PSTATS_INSERTS: u32 = 4;
    /// New keys inserted into URING.
    pub const URING_INSERTS: u32 = 5;
    /// Updates to the other maps that failed.
    pub const OTHER_DROPS: u32 = 6;
    pub const COUNT: u32 = 7;
}

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
    /// A folio's pages: `1 << (folio._flags_1 & 0xff)` when bit `pg_head`
    /// of `folio.flags` is set, else 1. 0 with `folio_valid == 0`, when
    /// dirtied folios count one page each.
    pub folio_valid: u32,
    pub folio_flags: u32,
    pub folio_flags_1: u32,
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
}
