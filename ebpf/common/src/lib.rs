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

/// Map names, shared so the agent cannot ask for a map the object lacks.
pub mod maps {
    pub const STATS: &str = "STATS";
    pub const PROCS: &str = "PROCS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const PID_FILTER: &str = "PID_FILTER";
    pub const COMM_FILTER: &str = "COMM_FILTER";
}

/// Names of the global configuration variables the agent sets at load time.
pub mod globals {
    /// Non-zero: only tgids present in `PID_FILTER` are counted.
    pub const FILTER_PIDS: &str = "FILTER_PIDS";
    /// Non-zero: only tasks whose comm is present in `COMM_FILTER` are counted.
    pub const FILTER_COMMS: &str = "FILTER_COMMS";
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
}

impl Syscall {
    pub const ALL: [Syscall; 19] = [
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
            275 => Syscall::Splice,
            276 => Syscall::Tee,
            278 => Syscall::Vmsplice,
            295 => Syscall::Preadv,
            296 => Syscall::Pwritev,
            326 => Syscall::CopyFileRange,
            327 => Syscall::Preadv2,
            328 => Syscall::Pwritev2,
            _ => return None,
        })
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
        }
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
            | Syscall::Recvmsg => Shape::FdToUser,
            Syscall::Write
            | Syscall::Writev
            | Syscall::Pwrite64
            | Syscall::Pwritev
            | Syscall::Pwritev2
            | Syscall::Sendto
            | Syscall::Sendmsg
            | Syscall::Vmsplice => Shape::UserToFd,
            // sendfile(out_fd, in_fd, ...): source is the second argument.
            Syscall::Sendfile => Shape::Arg1ToArg0,
            // splice(fd_in, off_in, fd_out, ...), copy_file_range likewise.
            Syscall::Splice | Syscall::CopyFileRange => Shape::Arg0ToArg2,
            // tee(fd_in, fd_out, ...).
            Syscall::Tee => Shape::Arg0ToArg1,
        }
    }
}

/// Where a syscall's source and destination come from in its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    FdToUser,
    UserToFd,
    Arg1ToArg0,
    Arg0ToArg2,
    Arg0ToArg1,
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
    /// Sum of positive return values: bytes moved.
    pub bytes: u64,
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
    pub const COUNT: u32 = 4;
}

/// Byte offsets of kernel struct fields the kernel side walks with
/// `bpf_probe_read_kernel`, read from the running kernel's BTF by the agent so
/// the kernel side needs no compile-time layout (CO-RE by hand):
/// `task_struct.files -> files_struct.fdt -> fdtable.{max_fds,fd}[fd]
/// -> file.f_inode -> inode.i_mode` classifies an fd, and
/// `task_struct.group_leader -> task_struct.comm` names the process.
/// `valid == 0` means "unknown": fds then classify as `Endpoint::Unknown`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub valid: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_inode: u32,
    pub inode_mode: u32,
    pub task_group_leader: u32,
    pub task_comm: u32,
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
}
