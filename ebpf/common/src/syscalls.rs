//! The syscalls family: which syscalls sys_exit accounts, how their
//! ends are classified, and the per (process, syscall, path) tallies.

use crate::Accumulate;

/// Default capacity of the per-process statistics map (keys, not processes:
/// one process uses one key per syscall and path it exercises).
pub const DEFAULT_STATS_ENTRIES: u32 = 16_384;

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
            | Syscall::Sendmmsg => Shape::UserToFd,
            // vmsplice(fd, iov, ...): into the pipe through its write end,
            // out of it (pipe pages to user memory) through its read end.
            Syscall::Vmsplice => Shape::ByPipeEnd,
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
/// low byte, then its [`Shape`] (4 bits), then whether it is an epoll wait and
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
    /// user -> fd when the first argument's file is open for writing, else
    /// fd -> user: vmsplice, whose direction is the pipe end's (fs/splice.c
    /// vmsplice_type: FMODE_WRITE wins on a FIFO opened read-write).
    ByPipeEnd,
}

impl Shape {
    /// The shape numbered `bits & 15` (Events past the last one; the
    /// compiler folds this into the value itself).
    #[inline(always)]
    const fn from_bits(bits: u16) -> Shape {
        match bits & 15 {
            0 => Shape::FdToUser,
            1 => Shape::UserToFd,
            2 => Shape::Arg1ToArg0,
            3 => Shape::Arg0ToArg2,
            4 => Shape::Arg0ToArg1,
            5 => Shape::ScanArg0,
            6 => Shape::ScanArg1,
            8 => Shape::ByPipeEnd,
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
    /// 1: the calls failed (src and dst are then `Unknown`); 0: they
    /// succeeded, whatever their ends could be classified as. Apart from
    /// the ends, because a success whose fds could not be classified
    /// (both `Unknown`) still moved bytes.
    pub failed: u8,
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
