//! A process that performs an exactly known sequence of I/O syscalls, for
//! the end-to-end tests to compare iolens's counts against.
//!
//! Protocol (stdout/stdin, line based, so the test controls timing):
//! 1. the child does its set-up (creates files, connects sockets) and prints
//!    `ready`;
//! 2. on any line from stdin it performs the scenario and prints one
//!    `count <syscall> <path> <calls> <bytes> <errors>` line per kind of
//!    call it made, then `done`;
//! 3. it then blocks reading stdin and exits when stdin closes, so the test
//!    can read /proc/PID/io while the process is alive.
//!
//! The handshake itself makes syscalls (a read from the stdin pipe, writes to
//! the stdout pipe); the tests compare deltas between scrapes taken while the
//! child is blocked, which contain exactly the scenario's calls and the
//! handshake reads/writes, which are reported too.
//!
//! Usage: iolens-testchild <scenario> <dir> [<tcp-port>]

use std::{
    ffi::CString,
    io::{BufRead as _, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    time::Duration,
};

use iolens_tests::aio::{IoEvent, Iocb, aligned};

#[derive(Default)]
struct Tally {
    rows: Vec<(String, String, u64, u64, u64)>,
}

impl Tally {
    fn add(&mut self, syscall: &str, path: &str, ret: isize) {
        let row = match self.rows.iter_mut().find(|r| r.0 == syscall && r.1 == path) {
            Some(r) => r,
            None => {
                self.rows.push((syscall.into(), path.into(), 0, 0, 0));
                self.rows.last_mut().expect("just pushed")
            }
        };
        row.2 += 1;
        if ret < 0 {
            row.4 += 1;
        } else {
            row.3 += ret as u64;
        }
    }
}

fn check(ret: isize, what: &str) -> isize {
    if ret < 0 {
        panic!("{what}: {}", std::io::Error::last_os_error());
    }
    ret
}

fn open(path: &str, flags: i32) -> OwnedFd {
    let c = CString::new(path).expect("path");
    // SAFETY: valid C string; the returned fd is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    check(fd as isize, path);
    // SAFETY: fd is a fresh, valid descriptor we own.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A file of `len` bytes, written with one large write per MiB in set-up.
fn make_file(path: &str, len: usize) {
    let fd = open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC);
    let chunk = vec![0x5au8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        // SAFETY: valid buffer of at least n bytes.
        let r = unsafe { libc::write(fd.as_raw_fd(), chunk.as_ptr().cast(), n) };
        left -= check(r, "write") as usize;
    }
}

fn tcp_connect(port: u16) -> std::net::TcpStream {
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the test's sink")
}

/// The read/write family on files, a bad fd, readv/writev, pread/pwrite.
fn scenario_rw(dir: &str, t: &mut Tally) {
    let out = open(&format!("{dir}/out"), libc::O_WRONLY);
    let inp = open(&format!("{dir}/in"), libc::O_RDONLY);
    let buf = [7u8; 100];
    for _ in 0..1000 {
        // SAFETY: valid 100-byte buffer.
        let r = unsafe { libc::write(out.as_raw_fd(), buf.as_ptr().cast(), 100) };
        t.add("write", "user_to_file", check(r, "write"));
    }
    let mut big = vec![0u8; 4096];
    for _ in 0..500 {
        // SAFETY: valid 4096-byte buffer.
        let r = unsafe { libc::read(inp.as_raw_fd(), big.as_mut_ptr().cast(), 4096) };
        t.add("read", "file_to_user", check(r, "read"));
    }
    let (mut a, mut b) = ([0u8; 100], [0u8; 100]);
    for _ in 0..10 {
        let iov = [
            libc::iovec {
                iov_base: buf.as_ptr() as *mut _,
                iov_len: 10,
            },
            libc::iovec {
                iov_base: buf.as_ptr() as *mut _,
                iov_len: 20,
            },
        ];
        // SAFETY: two valid iovecs over live buffers.
        let r = unsafe { libc::writev(out.as_raw_fd(), iov.as_ptr(), 2) };
        t.add("writev", "user_to_file", check(r, "writev"));
        let iov = [
            libc::iovec {
                iov_base: a.as_mut_ptr().cast(),
                iov_len: 100,
            },
            libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: 100,
            },
        ];
        // SAFETY: two valid iovecs over live buffers.
        let r = unsafe { libc::readv(inp.as_raw_fd(), iov.as_ptr(), 2) };
        t.add("readv", "file_to_user", check(r, "readv"));
    }
    for i in 0..5 {
        // SAFETY: valid buffers; offsets inside the files.
        let r = unsafe { libc::pread(inp.as_raw_fd(), big.as_mut_ptr().cast(), 512, i * 512) };
        t.add("pread64", "file_to_user", check(r, "pread"));
        // SAFETY: as above.
        let r = unsafe { libc::pwrite(out.as_raw_fd(), buf.as_ptr().cast(), 64, i * 64) };
        t.add("pwrite64", "user_to_file", check(r, "pwrite"));
    }
    // A descriptor number that is not open: EBADF, three times.
    for _ in 0..3 {
        // SAFETY: the kernel rejects the fd; the buffer is valid anyway.
        let r = unsafe { libc::read(9999, big.as_mut_ptr().cast(), 10) };
        assert!(r < 0, "fd 9999 unexpectedly open");
        t.add("read", "error", r);
    }
}

/// An ia32 system call made from this 64-bit process with `int 0x80`: the
/// kernel takes the ia32 numbers and the arguments in ebx, ecx, edx and
/// esi, exactly as for a 32-bit process. Pointers must be below 4 GiB.
fn int80(nr: u32, a0: u32, a1: u32, a2: u32, a3: u32) -> isize {
    let ret: u32;
    // SAFETY: a system call whose arguments the caller vouches for. rbx
    // cannot be named as an operand, so it is swapped in and out; r8-r15
    // are declared clobbered in case the compat entry does not keep them.
    unsafe {
        std::arch::asm!(
            "xchg {a0:r}, rbx",
            "int 0x80",
            "xchg {a0:r}, rbx",
            a0 = inout(reg) u64::from(a0) => _,
            inlateout("eax") nr => ret,
            in("ecx") a1,
            in("edx") a2,
            in("esi") a3,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
        );
    }
    // A negative errno comes back in eax.
    ret as i32 as isize
}

/// ia32 calls through `int 0x80`, on memory below 4 GiB: getpid (ia32 20,
/// x86_64's writev: read as x86_64 it would be a writev of pid bytes),
/// write and read of a file (ia32 4 and 3, x86_64's stat and close),
/// writev (ia32 146) from two 32-bit iovecs, and sendmmsg (ia32 345) of
/// three messages, whose headers are the 32-byte `compat_mmsghdr`.
fn scenario_ia32(dir: &str, t: &mut Tally) {
    // SAFETY: an anonymous mapping the kernel places below 2 GiB.
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
            -1,
            0,
        )
    };
    assert_ne!(mem, libc::MAP_FAILED, "mmap(MAP_32BIT)");
    let base = mem as usize;
    assert!(base + 4096 <= 1 << 32, "MAP_32BIT gave {base:#x}");
    let buf = base as u32;
    let path = format!("{dir}/ia32");
    let wf = open(&path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC);
    let rf = open(&path, libc::O_RDONLY);
    let (r, w) = (rf.as_raw_fd(), wf.as_raw_fd());
    for _ in 0..20 {
        let pid = int80(20, 0, 0, 0, 0);
        // SAFETY: no arguments.
        assert_eq!(pid, unsafe { libc::getpid() } as isize, "ia32 getpid");
    }
    for _ in 0..10 {
        let n = int80(4, w as u32, buf, 100, 0);
        t.add("write", "user_to_file", check(n, "ia32 write"));
        let n = int80(3, r as u32, buf, 100, 0);
        t.add("read", "file_to_user", check(n, "ia32 read"));
    }
    // Two `struct compat_iovec { u32 base; u32 len; }` after the data.
    let iov = base + 2048;
    // SAFETY: inside the mapping, 4-byte aligned.
    unsafe {
        let p = iov as *mut u32;
        *p = buf;
        *p.add(1) = 10;
        *p.add(2) = buf + 100;
        *p.add(3) = 20;
    }
    let n = int80(146, w as u32, iov as u32, 2, 0);
    t.add("writev", "user_to_file", check(n, "ia32 writev"));
    assert_eq!(n, 30, "ia32 writev");
    let n = int80(3, r as u32, buf, 100, 0);
    t.add("read", "file_to_user", check(n, "ia32 read"));
    assert_eq!(n, 30, "ia32 read of what writev wrote");
    // Three `struct compat_mmsghdr` (a 28-byte compat_msghdr: name,
    // namelen, iov, iovlen, control, controllen, flags; then msg_len), each
    // with one compat_iovec, to a connected UDP socket.
    let rx = udp_socket();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    tx.connect(rx.local_addr().expect("addr")).expect("connect");
    let (hdrs, iovs) = (base + 3072, base + 3328);
    for (i, len) in [5u32, 7, 9].into_iter().enumerate() {
        // SAFETY: inside the mapping, 4-byte aligned, zeroed by mmap.
        unsafe {
            let iov = (iovs + 8 * i) as *mut u32;
            *iov = buf;
            *iov.add(1) = len;
            let h = (hdrs + 32 * i) as *mut u32;
            *h.add(2) = iov as u32;
            *h.add(3) = 1;
        }
    }
    let n = int80(345, tx.as_raw_fd() as u32, hdrs as u32, 3, 0);
    assert_eq!(check(n, "ia32 sendmmsg"), 3, "ia32 sendmmsg");
    // SAFETY: the msg_len words the kernel wrote, inside the mapping.
    let sent: u32 = (0..3)
        .map(|i| unsafe { *((hdrs + 32 * i + 28) as *const u32) })
        .sum();
    assert_eq!(sent, 21, "msg_len of 5 + 7 + 9 bytes");
    t.add("sendmmsg", "user_to_socket", sent as isize);
    // SAFETY: unmapping our own mapping.
    unsafe { libc::munmap(mem, 4096) };
}

/// A loopback UDP socket with room for a few hundred small datagrams.
fn udp_socket() -> std::net::UdpSocket {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    let size: libc::c_int = 4 << 20;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: a valid socket and a c_int option value.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&raw const size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            break;
        }
    }
    s
}

/// One message header per buffer, for sendmmsg/recvmmsg; they point into
/// `iovs`, which must outlive them.
fn mmsg_headers(iovs: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    iovs.iter_mut()
        .map(|iov| {
            // SAFETY: all-zero is a valid mmsghdr (null pointers, 0 lengths).
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect()
}

/// sendmmsg/recvmmsg over loopback UDP: batches of 1, 10 and 150 messages
/// of 1..=50 bytes, all received with one recvmmsg where they fit (more
/// messages a call than any per-call limit of the kernel side would show),
/// and a bad fd. Bytes are the msg_len the kernel reported per message.
fn scenario_mmsg(t: &mut Tally) {
    let rx = udp_socket();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    tx.connect(rx.local_addr().expect("addr")).expect("connect");
    let payload = [0x42u8; 64];
    let mut sent = 0usize;
    for batch in [1usize, 10, 150] {
        let mut iovs: Vec<libc::iovec> = (0..batch)
            .map(|i| libc::iovec {
                iov_base: payload.as_ptr() as *mut _,
                iov_len: i % 50 + 1,
            })
            .collect();
        let mut hdrs = mmsg_headers(&mut iovs);
        let mut done = 0;
        while done < batch {
            let rest = &mut hdrs[done..];
            // SAFETY: `rest` are valid headers over live iovecs.
            let r =
                unsafe { libc::sendmmsg(tx.as_raw_fd(), rest.as_mut_ptr(), rest.len() as u32, 0) };
            let n = check(r as isize, "sendmmsg") as usize;
            let bytes: u32 = rest[..n].iter().map(|h| h.msg_len).sum();
            t.add("sendmmsg", "user_to_socket", bytes as isize);
            done += n;
        }
        sent += batch;
    }
    let mut bufs = vec![[0u8; 64]; 200];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut hdrs = mmsg_headers(&mut iovs);
    let mut received = 0;
    while received < sent {
        // SAFETY: valid headers over live buffers; no timeout.
        let r = unsafe {
            libc::recvmmsg(
                rx.as_raw_fd(),
                hdrs.as_mut_ptr(),
                hdrs.len() as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            // Loopback UDP dropped some (a full receive buffer): stop, and
            // count the failed call like any other.
            t.add("recvmmsg", "error", r as isize);
            break;
        }
        let n = r as usize;
        let bytes: u32 = hdrs[..n].iter().map(|h| h.msg_len).sum();
        t.add("recvmmsg", "socket_to_user", bytes as isize);
        received += n;
    }
    // SAFETY: the kernel rejects the fd before touching the (valid) array.
    let r = unsafe { libc::sendmmsg(9999, hdrs.as_mut_ptr(), 1, 0) };
    assert!(r < 0, "fd 9999 unexpectedly open");
    t.add("sendmmsg", "error", r as isize);
}

/// sendfile(2) until `len` bytes of `file` went to `sock`.
fn sendfile_all(sock: &std::net::TcpStream, file: &OwnedFd, len: usize, t: &mut Tally) {
    let mut left = len;
    while left > 0 {
        // SAFETY: valid fds; a null offset uses and advances the file offset.
        let r = unsafe {
            libc::sendfile(
                sock.as_raw_fd(),
                file.as_raw_fd(),
                std::ptr::null_mut(),
                left,
            )
        };
        left -= check(r, "sendfile") as usize;
        t.add("sendfile64", "file_to_socket", r);
    }
}

/// sendfile file -> TCP socket, and splice file -> pipe -> TCP socket.
fn scenario_zerocopy(dir: &str, port: u16, t: &mut Tally) {
    let sock = tcp_connect(port);
    let file = open(&format!("{dir}/in"), libc::O_RDONLY);
    sendfile_all(&sock, &file, 1 << 20, t);
    let (rd, wr) = pipe();
    // SAFETY: two fresh descriptors we own.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(rd), OwnedFd::from_raw_fd(wr)) };
    let mut left: usize = 256 << 10;
    while left > 0 {
        // SAFETY: valid fds; null offsets use the file offset.
        let n = unsafe {
            libc::splice(
                file.as_raw_fd(),
                std::ptr::null_mut(),
                wr.as_raw_fd(),
                std::ptr::null_mut(),
                left.min(64 << 10),
                0,
            )
        };
        check(n, "splice file->pipe");
        t.add("splice", "file_to_pipe", n);
        let mut in_pipe = n as usize;
        while in_pipe > 0 {
            // SAFETY: as above.
            let m = unsafe {
                libc::splice(
                    rd.as_raw_fd(),
                    std::ptr::null_mut(),
                    sock.as_raw_fd(),
                    std::ptr::null_mut(),
                    in_pipe,
                    0,
                )
            };
            check(m, "splice pipe->socket");
            t.add("splice", "pipe_to_socket", m);
            in_pipe -= m as usize;
        }
        left -= n as usize;
    }
    // Socket writes through the user buffer, for contrast.
    let buf = [1u8; 1000];
    for _ in 0..10 {
        // SAFETY: valid buffer; blocking socket.
        let r = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                buf.as_ptr().cast(),
                1000,
                0,
                std::ptr::null(),
                0,
            )
        };
        t.add("sendto", "user_to_socket", check(r, "sendto"));
    }
}

/// SIGUSR1's handler in ctxsw-signals: the signal only has to arrive.
extern "C" fn on_sigusr1(_: libc::c_int) {}

/// A pipe (read end, write end); close-on-exec.
fn pipe() -> (RawFd, RawFd) {
    let mut p: [RawFd; 2] = [0; 2];
    // SAFETY: room for two fds.
    unsafe {
        check(
            libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) as isize,
            "pipe2",
        )
    };
    (p[0], p[1])
}

/// Best effort: on a machine without that CPU the scenario runs unpinned
/// (and its test says it did not run as designed).
fn pin_to(cpu: usize) {
    let _ = iolens_tests::pin_thread(cpu);
}

/// A thread sleeps for a microsecond over and over on CPU 0 beside a
/// spinning thread, while a third on CPU 1 signals it every few
/// microseconds. Now and then the signal lands as the sleeper goes to
/// sleep: __schedule then leaves it runnable, switches to the spinner and
/// counts a voluntary switch, while the tracepoint reports the sleeper
/// runnable (kernel/sched/core.c, try_to_block_task) — which telling the
/// two kinds apart by the reported state gets wrong.
///
/// The threads stay (parked) so their counts stay in /proc. `spawn` starts
/// the sleeper, which waits until `spawned` has returned.
fn scenario_ctxsw_signals(
    run_for: Duration,
    spawn: impl FnOnce(Box<dyn FnOnce() + Send>) -> std::thread::JoinHandle<()>,
    spawned: impl FnOnce(),
) -> std::thread::JoinHandle<()> {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering},
    };
    // SAFETY: installs a handler that does nothing; no SA_RESTART, so the
    // sleep returns early, which is fine.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let (park_rd, park_wr) = pipe();
    // Blocks until the process exits (the pipe is never written).
    let park = move || {
        let mut byte = [0u8; 1];
        // SAFETY: a valid fd and one-byte buffer.
        unsafe { libc::read(park_rd, byte.as_mut_ptr().cast(), 1) };
        let _ = park_wr;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let tid = Arc::new(AtomicI32::new(0));
    // The sleeper's voluntary switches so far (getrusage, RUSAGE_THREAD).
    let switches = Arc::new(AtomicU64::new(0));
    let (stop_s, tid_s, switches_s) = (stop.clone(), tid.clone(), switches.clone());
    let (start_rd, start_wr) = pipe();
    let sleeper = spawn(Box::new(move || {
        pin_to(0);
        let mut byte = [0u8; 1];
        // SAFETY: a valid fd and one-byte buffer.
        unsafe { libc::read(start_rd, byte.as_mut_ptr().cast(), 1) };
        // SAFETY: gettid has no preconditions.
        tid_s.store(unsafe { libc::gettid() }, Ordering::SeqCst);
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 1000,
        };
        while !stop_s.load(Ordering::Relaxed) {
            // SAFETY: a valid timespec; an early return is fine.
            unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
            // SAFETY: a zeroed rusage is valid; getrusage fills it.
            let nvcsw = unsafe {
                let mut ru: libc::rusage = std::mem::zeroed();
                libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
                ru.ru_nvcsw
            };
            switches_s.store(nvcsw as u64, Ordering::Relaxed);
        }
        park();
    }));
    spawned();
    // SAFETY: a valid fd and one-byte buffer.
    unsafe { libc::write(start_wr, [1u8].as_ptr().cast(), 1) };
    let stop_h = stop.clone();
    let hog = std::thread::spawn(move || {
        pin_to(0);
        let mut x = 0u64;
        while !stop_h.load(Ordering::Relaxed) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        park();
    });
    pin_to(1);
    while tid.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    let target = tid.load(Ordering::SeqCst);
    // `run_for`, and until the sleeper switched out voluntarily 400 times
    // (its tests want 200 in the process): under an emulated CPU (TCG) the
    // hog beside it leaves it few turns in 1.5 s (fewer than 200 sleeps
    // were seen on 6.12). Switches, not sleeps: a nanosleep the signal cuts
    // short before it blocks is no switch, and a run on 6.1 under TCG that
    // waited for 400 sleeps had 180 voluntary switches. At most 30 s more.
    let start = std::time::Instant::now();
    while start.elapsed() < run_for
        || (switches.load(Ordering::Relaxed) < 400
            && start.elapsed() < run_for + Duration::from_secs(30))
    {
        // SAFETY: signals a thread of this process.
        unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), target, libc::SIGUSR1) };
        let spin = std::time::Instant::now() + Duration::from_micros(3);
        while std::time::Instant::now() < spin {
            std::hint::spin_loop();
        }
    }
    stop.store(true, Ordering::Relaxed);
    drop(hog);
    sleeper
}

/// A thread id (the kernel's, as /proc/self/task names it).
fn gettid() -> u32 {
    // SAFETY: no arguments.
    unsafe { libc::gettid() as u32 }
}

/// The index of a thread's entry in the kernel side's per-thread array.
fn thread_slot(tid: u32) -> u32 {
    tid % iolens_common::THREAD_SLOTS
}

/// Starts a thread that sleeps a few times (so its entry in the kernel
/// side's per-thread array is taken) and then parks for good; returns its
/// id.
fn spawn_entry_holder() -> u32 {
    let (tx, rx) = std::sync::mpsc::channel();
    // The write end stays open and unwritten: the read never returns.
    let (park_rd, _) = pipe();
    std::thread::spawn(move || {
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(1));
        }
        tx.send(gettid()).expect("send tid");
        let mut byte = [0u8; 1];
        // SAFETY: valid fd and one-byte buffer.
        unsafe { libc::read(park_rd, byte.as_mut_ptr().cast(), 1) };
    });
    rx.recv().expect("holder tid")
}

/// Spawns threads until one gets an id whose per-thread array index is
/// `slot`'s, and runs `f` on that one; the others exit at once. Thread ids
/// are handed out in order, so this takes at most THREAD_SLOTS spawns
/// (more if other processes take the id first: tries three rounds).
/// Returns that thread's id and handle.
fn spawn_at_slot(
    slot: u32,
    f: impl FnOnce() + Send + 'static,
) -> (u32, std::thread::JoinHandle<()>) {
    let mut f = Some(f);
    for _ in 0..3 * iolens_common::THREAD_SLOTS {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (run_tx, run_rx) = std::sync::mpsc::channel::<Option<Box<dyn FnOnce() + Send>>>();
        let h = std::thread::spawn(move || {
            tid_tx.send(gettid()).expect("send tid");
            if let Ok(Some(f)) = run_rx.recv() {
                f();
            }
        });
        let tid = tid_rx.recv().expect("tid");
        if thread_slot(tid) == slot {
            let f: Box<dyn FnOnce() + Send> = Box::new(f.take().expect("once"));
            run_tx.send(Some(f)).expect("run");
            return (tid, h);
        }
        run_tx.send(None).expect("stop");
        h.join().expect("join");
    }
    panic!(
        "no thread id with index {slot} in {} spawns",
        3 * iolens_common::THREAD_SLOTS
    );
}

/// Two threads ping-pong a byte over two pipes `rounds` times (each side
/// blocks: voluntary switches), then the main thread burns `spin_ms` of CPU
/// (preemption by other work: involuntary switches) and yields
/// `yields` times. The helper thread stays alive, blocked, so the test can
/// read its /proc/PID/task/TID/status.
fn scenario_ctxsw(rounds: usize, spin_ms: u64, yields: usize) -> std::thread::JoinHandle<()> {
    let ((a_rd, a_wr), (b_rd, b_wr)) = (pipe(), pipe());
    let (park_rd, park_wr) = pipe();
    let helper = std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        for _ in 0..rounds {
            // SAFETY: valid fds and one-byte buffer.
            unsafe {
                libc::read(a_rd, byte.as_mut_ptr().cast(), 1);
                libc::write(b_wr, byte.as_ptr().cast(), 1);
            }
        }
        // Park until the process exits (never written).
        // SAFETY: as above.
        unsafe { libc::read(park_rd, byte.as_mut_ptr().cast(), 1) };
    });
    let mut byte = [1u8; 1];
    for _ in 0..rounds {
        // SAFETY: valid fds and one-byte buffer.
        unsafe {
            libc::write(a_wr, byte.as_ptr().cast(), 1);
            libc::read(b_rd, byte.as_mut_ptr().cast(), 1);
        }
    }
    // Spin on this thread's own CPU clock, so it burns spin_ms of CPU
    // however loaded the machine is.
    let cpu_ns = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: writes one timespec into a valid pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    };
    let until = cpu_ns() + spin_ms * 1_000_000;
    let mut x = 0u64;
    while cpu_ns() < until {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    for _ in 0..yields {
        // SAFETY: no arguments.
        unsafe { libc::sched_yield() };
    }
    let _ = park_wr;
    helper
}

fn evict(path: &str) {
    let f = open(path, libc::O_RDONLY);
    // SAFETY: valid fd; whole file.
    unsafe {
        libc::fsync(f.as_raw_fd());
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

/// Block I/O through O_DIRECT: `len` bytes of `path` from offset 0 in
/// 64 KiB calls, read (`write == false`) or overwritten in place, into or
/// from a page-aligned buffer, as O_DIRECT needs.
fn direct_io(path: &str, len: usize, write: bool) {
    let flags = if write {
        libc::O_WRONLY
    } else {
        libc::O_RDONLY
    };
    let f = open(path, flags | libc::O_DIRECT);
    const CHUNK: usize = 64 << 10;
    let layout = std::alloc::Layout::from_size_align(CHUNK, 4096).expect("layout");
    // SAFETY: a non-zero size; freed below.
    let buf = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!buf.is_null(), "alloc");
    let mut off = 0;
    while off < len {
        let n = CHUNK.min(len - off);
        // SAFETY: valid aligned buffer of at least n bytes and an open fd.
        let r = unsafe {
            if write {
                libc::pwrite(f.as_raw_fd(), buf.cast(), n, off as libc::off_t)
            } else {
                libc::pread(f.as_raw_fd(), buf.cast(), n, off as libc::off_t)
            }
        };
        let r = check(r, if write { "pwrite" } else { "pread" }) as usize;
        assert_eq!(r, n, "short O_DIRECT transfer");
        off += n;
    }
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(buf, layout) };
}

/// Reads a file in 4 KiB reads: one page per read, so each read is one
/// mm_filemap_get_pages covering exactly one page.
fn read_4k(path: &str, t: &mut Tally) {
    let f = open(path, libc::O_RDONLY);
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: valid 4096-byte buffer.
        let r = unsafe { libc::read(f.as_raw_fd(), buf.as_mut_ptr().cast(), 4096) };
        t.add("read", "file_to_user", check(r, "read"));
        if r == 0 {
            break;
        }
    }
}

/// Touches every page of a file through a private read-only mapping.
fn mmap_touch(path: &str) -> u64 {
    let f = open(path, libc::O_RDONLY);
    let len = std::fs::metadata(path).expect("stat").len() as usize;
    // SAFETY: a fresh read-only private mapping of an open file.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap");
    let mut sum = 0u64;
    for off in (0..len).step_by(4096) {
        // SAFETY: inside the mapping.
        sum += u64::from(unsafe { std::ptr::read_volatile((p as *const u8).add(off)) });
    }
    // SAFETY: unmapping what we mapped.
    unsafe { libc::munmap(p, len) };
    sum
}

/// epoll: `rounds` times make 3 pipes readable and collect 3 events, then
/// `timeouts` waits of 1 ms that find nothing.
fn scenario_epoll(rounds: usize, timeouts: usize, t: &mut Tally) {
    // SAFETY: plain syscalls on fds this function owns.
    unsafe {
        let ep = check(
            libc::epoll_create1(libc::EPOLL_CLOEXEC) as isize,
            "epoll_create1",
        ) as i32;
        let mut pipes = Vec::new();
        for i in 0..3 {
            let (rd, wr) = pipe();
            let p = [rd, wr];
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i,
            };
            check(
                libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, p[0], &mut ev) as isize,
                "epoll_ctl",
            );
            pipes.push(p);
        }
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
        let mut byte = [0u8; 1];
        for _ in 0..rounds {
            for p in &pipes {
                libc::write(p[1], byte.as_ptr().cast(), 1);
            }
            let n = libc::epoll_wait(ep, events.as_mut_ptr(), 8, 1000);
            t.add("epoll_wait", "events", check(n as isize, "epoll_wait"));
            for p in &pipes {
                libc::read(p[0], byte.as_mut_ptr().cast(), 1);
            }
        }
        // The waits' own wall time: what they can have slept at most.
        let started = std::time::Instant::now();
        for _ in 0..timeouts {
            let n = libc::epoll_wait(ep, events.as_mut_ptr(), 8, 10);
            assert_eq!(n, 0, "nothing should be ready");
            t.add("epoll_wait", "events", 0);
        }
        println!("timeouts wall ns {}", started.elapsed().as_nanos());
        // poll and select over the same 3 read ends, one of them ready.
        libc::write(pipes[1][1], byte.as_ptr().cast(), 1);
        let mut pfds: Vec<libc::pollfd> = pipes
            .iter()
            .map(|p| libc::pollfd {
                fd: p[0],
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        for _ in 0..rounds {
            let n = libc::poll(pfds.as_mut_ptr(), 3, 1000);
            t.add("poll", "events", check(n as isize, "poll"));
        }
        let maxfd = pipes.iter().map(|p| p[0]).max().unwrap_or(0);
        for _ in 0..rounds {
            let mut set: libc::fd_set = std::mem::zeroed();
            for p in &pipes {
                libc::FD_SET(p[0], &mut set);
            }
            let mut tv = libc::timeval {
                tv_sec: 1,
                tv_usec: 0,
            };
            let n = libc::select(
                maxfd + 1,
                &mut set,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut tv,
            );
            t.add("select", "events", check(n as isize, "select"));
        }
        println!("nfds select {}", maxfd + 1);
    }
}

/// io_uring: `n` NOPs and `n` 100-byte writes on a plain ring, the same with
/// IOSQE_ASYNC (punted to io-wq workers), and on an SQPOLL ring.
fn scenario_uring(dir: &str, n: u32, mode: &str) {
    use io_uring::{IoUring, opcode, squeue, types};
    let mut ring: IoUring = match mode {
        "sqpoll" => IoUring::builder()
            .setup_sqpoll(1000)
            .build(64)
            .expect("SQPOLL ring"),
        _ => IoUring::new(64).expect("ring"),
    };
    let file = open(
        &format!("{dir}/uring-out"),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
    );
    let buf = [9u8; 100];
    let flags = if mode == "async" {
        squeue::Flags::ASYNC
    } else {
        squeue::Flags::empty()
    };
    let mut done = 0;
    for i in 0..n {
        let nop = opcode::Nop::new()
            .build()
            .flags(flags)
            .user_data(u64::from(i));
        let write = opcode::Write::new(types::Fd(file.as_raw_fd()), buf.as_ptr(), 100)
            .offset(u64::from(i) * 100)
            .build()
            .flags(flags)
            .user_data(u64::from(i) | 1 << 32);
        // SAFETY: the buffer and fd outlive the operations: we wait for
        // both completions before the next round.
        unsafe {
            let mut sq = ring.submission();
            sq.push(&nop).expect("sq full");
            sq.push(&write).expect("sq full");
        }
        ring.submit_and_wait(2).expect("submit");
        for cqe in ring.completion() {
            assert!(cqe.result() >= 0, "op failed: {}", cqe.result());
            done += 1;
        }
    }
    while done < 2 * n {
        ring.submit_and_wait(1).expect("wait");
        done += ring.completion().count() as u32;
    }
}

/// One fd number, three kinds of file in turn: a regular file, a socket,
/// a pipe. Each close frees the `struct file`, and the next one is likely
/// allocated at the same address, so a classifier that remembered the fd
/// (or the file pointer alone) would get the next kind wrong. Run once on
/// the table the process has, then again after growing it past the 64
/// inline fds, which the kernel side walks differently.
fn scenario_fdreuse(dir: &str, t: &mut Tally) {
    let path = format!("{dir}/out");
    let round = |t: &mut Tally| {
        for _ in 0..30 {
            let f = open(&path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC);
            let n = f.as_raw_fd();
            // SAFETY: valid 3-byte buffer and open fd.
            let r = unsafe { libc::write(n, b"abc".as_ptr().cast(), 3) };
            t.add("write", "user_to_file", check(r, "write file"));
            drop(f);

            let mut sv = [0i32; 2];
            // SAFETY: sv has room for two fds.
            let r = unsafe {
                libc::socketpair(
                    libc::AF_UNIX,
                    libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                    0,
                    sv.as_mut_ptr(),
                )
            };
            check(r as isize, "socketpair");
            // The lowest free fd: the number the file just had.
            assert_eq!(sv[0], n, "socketpair did not reuse fd {n}");
            // SAFETY: valid buffer and open fd.
            let r = unsafe { libc::write(sv[0], b"abc".as_ptr().cast(), 3) };
            t.add("write", "user_to_socket", check(r, "write socket"));
            // SAFETY: closing the fds socketpair gave us.
            unsafe {
                libc::close(sv[0]);
                libc::close(sv[1]);
            }

            let (rd, wr) = pipe();
            let p = [rd, wr];
            assert_eq!(p[0], n, "pipe2 did not reuse fd {n}");
            let mut b = [0u8; 3];
            // SAFETY: valid buffers and open fds.
            unsafe {
                // writev: the harness sets write/user_to_pipe aside for
                // the report on stdout.
                let iov = libc::iovec {
                    iov_base: b"abc".as_ptr() as *mut libc::c_void,
                    iov_len: 3,
                };
                let r = libc::writev(p[1], &iov, 1);
                t.add("writev", "user_to_pipe", check(r, "writev pipe"));
                let r = libc::read(p[0], b.as_mut_ptr().cast(), 3);
                t.add("read", "pipe_to_user", check(r, "read pipe"));
                libc::close(p[0]);
                libc::close(p[1]);
            }
        }
    };
    round(t);
    // SAFETY: duplicating stdin to fd 300 grows the fd table for good.
    let hi = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 300) };
    check(hi as isize, "F_DUPFD 300");
    // SAFETY: our own fd.
    unsafe { libc::close(hi) };
    round(t);
}

/// vmsplice both ways: 3 x 1000 bytes into a pipe through its write end
/// (user_to_pipe), then 2 x 1200 out of it through its read end
/// (pipe_to_user), on the inline fd table and again on fds past 300, which
/// kernels without bpf_rdonly_cast walk (and remember) differently.
fn scenario_vmsplice(t: &mut Tally) {
    let round = |t: &mut Tally, rd: RawFd, wr: RawFd| {
        let src = [0x42u8; 1000];
        let mut dst = [0u8; 1200];
        for _ in 0..3 {
            let iov = libc::iovec {
                iov_base: src.as_ptr() as *mut libc::c_void,
                iov_len: src.len(),
            };
            // SAFETY: a valid iovec over a live buffer, and our pipe.
            let r = unsafe { libc::vmsplice(wr, &iov, 1, 0) };
            assert_eq!(check(r, "vmsplice into the pipe"), 1000);
            t.add("vmsplice", "user_to_pipe", r);
        }
        for _ in 0..2 {
            let iov = libc::iovec {
                iov_base: dst.as_mut_ptr().cast(),
                iov_len: dst.len(),
            };
            // SAFETY: as above; the kernel copies pipe pages into `dst`.
            let r = unsafe { libc::vmsplice(rd, &iov, 1, 0) };
            assert_eq!(check(r, "vmsplice out of the pipe"), 1200);
            t.add("vmsplice", "pipe_to_user", r);
        }
    };
    let (rd, wr) = pipe();
    round(t, rd, wr);
    // SAFETY: duplicating our own fds past the inline table, then closing
    // all four.
    unsafe {
        let hi_rd = libc::fcntl(rd, libc::F_DUPFD_CLOEXEC, 300);
        let hi_wr = libc::fcntl(wr, libc::F_DUPFD_CLOEXEC, 300);
        check(hi_rd.min(hi_wr) as isize, "F_DUPFD 300");
        libc::close(rd);
        libc::close(wr);
        round(t, hi_rd, hi_wr);
        libc::close(hi_rd);
        libc::close(hi_wr);
    }
}

/// Linux native AIO with raw syscalls on an O_DIRECT file (`<dir>/aio-data`,
/// 1 MiB, made in set-up): exactly known iocbs of each opcode the kernel
/// runs, two reads submitted from one iocb's memory, one failing read (misaligned for O_DIRECT: the kernel takes the
/// iocb and completes it with -EINVAL), two iocbs io_submit refuses (a bad
/// fd, and IOCB_CMD_NOOP, which no kernel runs), and a poll cancelled with
/// io_cancel. Each completion is reported as `count aio_<op> <path> 1
/// <bytes> <failed>` (bytes only for reads and writes), the cancel as
/// `aio cancelled poll 1`. Half the completions are reaped with
/// io_getevents, half with io_pgetevents.
fn scenario_aio(dir: &str, t: &mut Tally) {
    const PREAD: u16 = 0;
    const PWRITE: u16 = 1;
    const FSYNC: u16 = 2;
    const FDSYNC: u16 = 3;
    const POLL: u16 = 5;
    const NOOP: u16 = 6;
    const PREADV: u16 = 7;
    const PWRITEV: u16 = 8;
    let file = open(&format!("{dir}/aio-data"), libc::O_RDWR | libc::O_DIRECT);
    let fd = file.as_raw_fd() as u32;
    let (prd, pwr) = pipe();
    let mut ctx: libc::c_ulong = 0;
    // SAFETY: io_setup writes the context id into `ctx`.
    let r = unsafe { libc::syscall(libc::SYS_io_setup, 64, &mut ctx) };
    check(r as isize, "io_setup");
    let submit = |iocbs: &mut [Iocb]| -> isize {
        let mut ptrs: Vec<*mut Iocb> = iocbs.iter_mut().map(|i| i as *mut Iocb).collect();
        // SAFETY: an array of pointers to live iocbs whose buffers outlive
        // their completions (all leaked or static).
        unsafe { libc::syscall(libc::SYS_io_submit, ctx, ptrs.len(), ptrs.as_mut_ptr()) as isize }
    };
    let name = |op: u16| match op {
        PREAD => "pread",
        PWRITE => "pwrite",
        FSYNC => "fsync",
        FDSYNC => "fdsync",
        POLL => "poll",
        PREADV => "preadv",
        PWRITEV => "pwritev",
        _ => "unknown",
    };
    // Reaps `n` completions of `iocbs` (matched by their address) with
    // io_getevents or io_pgetevents, checking each result.
    let reap = |t: &mut Tally, iocbs: &[Iocb], want: &[i64], n: usize, pgetevents: bool| {
        let mut events = vec![IoEvent::default(); n];
        let mut got = 0;
        while got < n {
            let left = n - got;
            // SAFETY: room for `left` events; no timeout, no signal mask.
            let r = unsafe {
                if pgetevents {
                    // x86_64 io_pgetevents (libc has no constant).
                    libc::syscall(
                        333,
                        ctx,
                        left,
                        left,
                        events[got..].as_mut_ptr(),
                        std::ptr::null::<libc::timespec>(),
                        std::ptr::null::<libc::c_void>(),
                    )
                } else {
                    libc::syscall(
                        libc::SYS_io_getevents,
                        ctx,
                        left,
                        left,
                        events[got..].as_mut_ptr(),
                        std::ptr::null::<libc::timespec>(),
                    )
                }
            };
            got += check(r as isize, "io_getevents") as usize;
        }
        for e in &events {
            let i = iocbs
                .iter()
                .position(|c| std::ptr::eq(c, e.obj as *const Iocb))
                .expect("an event of ours");
            assert_eq!(e.res, want[i], "iocb {i} (op {})", iocbs[i].aio_lio_opcode);
            let op = iocbs[i].aio_lio_opcode;
            let path = match op {
                PREAD | PREADV => "file_to_user",
                PWRITE | PWRITEV => "user_to_file",
                _ => "-",
            };
            let moves = matches!(op, PREAD | PREADV | PWRITE | PWRITEV);
            t.add(
                &format!("aio_{}", name(op)),
                path,
                if moves || e.res < 0 {
                    e.res as isize
                } else {
                    0
                },
            );
        }
    };
    let rw = |op: u16, buf: u64, len: u64, off: i64| Iocb {
        aio_lio_opcode: op,
        aio_fildes: fd,
        aio_buf: buf,
        aio_nbytes: len,
        aio_offset: off,
        ..Iocb::default()
    };

    // Batch 1, one io_submit: 8 reads of 64 KiB, 4 writes of 16 KiB past
    // them, 1 read misaligned for O_DIRECT (its buffer at an odd address).
    let mut b1 = Vec::new();
    let mut want1 = Vec::new();
    for i in 0..8 {
        let buf = aligned(64 << 10);
        b1.push(rw(PREAD, buf.as_mut_ptr() as u64, 64 << 10, i * (64 << 10)));
        want1.push(64 << 10);
    }
    for i in 0..4 {
        let buf = aligned(16 << 10);
        buf.fill(0x11);
        b1.push(rw(
            PWRITE,
            buf.as_mut_ptr() as u64,
            16 << 10,
            (512 << 10) + i * (16 << 10),
        ));
        want1.push(16 << 10);
    }
    let odd = aligned(8192);
    b1.push(rw(PREAD, odd.as_mut_ptr() as u64 + 1, 4096, 0));
    want1.push(-i64::from(libc::EINVAL));
    let n1 = b1.len();
    assert_eq!(submit(&mut b1), n1 as isize, "io_submit batch 1");
    reap(t, &b1, &want1, n1, false);

    // Two reads from one iocb's memory, both in flight until reaped: the
    // kernel copied the first at submission, and their completions differ
    // by aio_data alone (as the file sender's reads from one stack slot).
    let (r1, r2) = (aligned(4096), aligned(8192));
    let mut one = [Iocb {
        aio_data: 1,
        ..rw(PREAD, r1.as_mut_ptr() as u64, 4096, 0)
    }];
    assert_eq!(submit(&mut one), 1, "io_submit of the reused iocb, 1st");
    one[0] = Iocb {
        aio_data: 2,
        ..rw(PREAD, r2.as_mut_ptr() as u64, 8192, 4096)
    };
    assert_eq!(submit(&mut one), 1, "io_submit of the reused iocb, 2nd");
    let mut ev = [IoEvent::default(); 2];
    let mut got = 0;
    while got < 2 {
        // SAFETY: room for the events asked for; no timeout.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_getevents,
                ctx,
                2 - got,
                2 - got,
                ev[got..].as_mut_ptr(),
                std::ptr::null::<libc::timespec>(),
            )
        };
        got += check(r as isize, "io_getevents") as usize;
    }
    for e in &ev {
        assert!(std::ptr::eq(e.obj as *const Iocb, &one[0]), "obj");
        let want = if e.data == 1 { 4096 } else { 8192 };
        assert_eq!(e.res, want, "reused iocb, data {}", e.data);
        t.add("aio_pread", "file_to_user", e.res as isize);
    }

    // Refused by io_submit, nothing submitted: a bad fd, and a NOOP.
    let mut bad = [Iocb {
        aio_fildes: u32::MAX,
        ..rw(PREAD, odd.as_mut_ptr() as u64, 4096, 0)
    }];
    assert_eq!(submit(&mut bad), -1, "io_submit of a bad fd");
    let mut noop = [Iocb {
        aio_lio_opcode: NOOP,
        aio_fildes: fd,
        ..Iocb::default()
    }];
    assert_eq!(submit(&mut noop), -1, "io_submit of a NOOP");

    // Batch 2, one iocb per io_submit: 3 preadv of 4 + 8 KiB, 2 pwritev of
    // 4 + 4 KiB, 2 fsync, 2 fdsync, 3 polls of a pipe made readable first.
    let mut b2 = Vec::new();
    let mut want2 = Vec::new();
    let iov = |a: u64, b: u64| -> u64 {
        let v: &'static mut [libc::iovec; 2] = Box::leak(Box::new([
            libc::iovec {
                iov_base: aligned(a as usize).as_mut_ptr().cast(),
                iov_len: a as usize,
            },
            libc::iovec {
                iov_base: aligned(b as usize).as_mut_ptr().cast(),
                iov_len: b as usize,
            },
        ]));
        v.as_mut_ptr() as u64
    };
    for i in 0..3 {
        b2.push(rw(PREADV, iov(4096, 8192), 2, i * 12288));
        want2.push(12288);
    }
    for i in 0..2 {
        b2.push(rw(PWRITEV, iov(4096, 4096), 2, (768 << 10) + i * 8192));
        want2.push(8192);
    }
    for op in [FSYNC, FSYNC, FDSYNC, FDSYNC] {
        b2.push(Iocb {
            aio_lio_opcode: op,
            aio_fildes: fd,
            ..Iocb::default()
        });
        want2.push(0);
    }
    // SAFETY: a valid 1-byte buffer and our pipe.
    check(
        unsafe { libc::write(pwr, b"x".as_ptr().cast(), 1) },
        "write pipe",
    );
    for _ in 0..3 {
        b2.push(Iocb {
            aio_lio_opcode: POLL,
            aio_fildes: prd as u32,
            aio_buf: libc::POLLIN as u64,
            ..Iocb::default()
        });
        want2.push(i64::from(libc::POLLIN));
    }
    for i in 0..b2.len() {
        assert_eq!(submit(&mut b2[i..i + 1]), 1, "io_submit batch 2, iocb {i}");
    }
    let n2 = b2.len();
    reap(t, &b2, &want2, n2, true);

    // A poll of an empty pipe, cancelled: io_cancel says -EINPROGRESS and
    // the poll completes with no events (res 0).
    let (erd, _ewr) = pipe();
    let mut p = [Iocb {
        aio_lio_opcode: POLL,
        aio_fildes: erd as u32,
        aio_buf: libc::POLLIN as u64,
        ..Iocb::default()
    }];
    assert_eq!(submit(&mut p), 1, "io_submit of the poll to cancel");
    let mut ev = IoEvent::default();
    // SAFETY: our context, the iocb we submitted, room for one event.
    let r = unsafe { libc::syscall(libc::SYS_io_cancel, ctx, p.as_mut_ptr(), &mut ev) };
    assert_eq!(
        (r, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EINPROGRESS)),
        "io_cancel of a pending poll"
    );
    println!("aio cancelled poll 1");
    reap(t, &p, &[0], 1, false);
    // SAFETY: our context.
    unsafe { libc::syscall(libc::SYS_io_destroy, ctx) };
}

/// `paced <dir> <port> <user B/s> <zero-copy B/s>`, for `iolens top`: a
/// thread pwrites to a file (user_to_file) and sendfiles a file to the TCP
/// socket (file_to_socket), each at its rate over the time it has run (so
/// a late wake-up is made up at the next tick), until stdin says:
/// `pause` (answers `paused` once the thread is parked on a condvar),
/// `resume` (`resumed`), `burst` (while paused, from this thread: 10
/// pwrites of 4096 bytes and 81920 bytes by sendfile; answers
/// `burst 40960 81920`). The end of stdin stops it.
fn scenario_paced(
    dir: &str,
    port: u16,
    args: &[String],
    stdin: &std::io::Stdin,
    stdout: &mut impl std::io::Write,
) {
    use std::{
        sync::{Condvar, Mutex},
        time::Instant,
    };
    let rate = |i: usize| -> f64 {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .expect("paced needs <user B/s> <zero-copy B/s>")
    };
    let (user_bps, zc_bps) = (rate(4), rate(5));
    let sock = tcp_connect(port);
    let out = open(
        &format!("{dir}/paced-out"),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
    );
    let inp = open(&format!("{dir}/paced-in"), libc::O_RDONLY);
    const WINDOW: usize = 1 << 20;
    let buf = vec![0x33u8; 64 << 10];
    let write_user = |n: usize, off: &mut usize| {
        // SAFETY: valid fd and a buffer of at least n bytes.
        let r = unsafe { libc::pwrite(out.as_raw_fd(), buf.as_ptr().cast(), n, *off as i64) };
        *off = (*off + n) % WINDOW;
        check(r, "pwrite") as u64
    };
    let send_zc = |n: usize, off: &mut libc::off_t| {
        if *off as usize + n > WINDOW {
            *off = 0;
        }
        // SAFETY: valid fds; the kernel advances the offset it is given.
        let r = unsafe { libc::sendfile(sock.as_raw_fd(), inp.as_raw_fd(), off, n) };
        check(r, "sendfile") as u64
    };
    // (paused, stop, parked)
    let state = Mutex::new((false, false, false));
    let cv = Condvar::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            let (mut user, mut zc, mut uoff, mut zoff) = (0u64, 0u64, 0usize, 0 as libc::off_t);
            let mut ran = Duration::ZERO;
            let mut since = Instant::now();
            loop {
                {
                    let mut st = state.lock().expect("state");
                    if st.0 || st.1 {
                        ran += since.elapsed();
                        st.2 = true;
                        cv.notify_all();
                        while st.0 && !st.1 {
                            st = cv.wait(st).expect("state");
                        }
                        if st.1 {
                            return;
                        }
                        st.2 = false;
                        since = Instant::now();
                    }
                }
                let t = (ran + since.elapsed()).as_secs_f64();
                while (user as f64) < user_bps * t {
                    let n = (user_bps * t - user as f64).ceil().min(buf.len() as f64) as usize;
                    user += write_user(n, &mut uoff);
                }
                while (zc as f64) < zc_bps * t {
                    let n = (zc_bps * t - zc as f64).ceil().min(buf.len() as f64) as usize;
                    zc += send_zc(n, &mut zoff);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        writeln!(stdout, "pacing").expect("stdout");
        stdout.flush().expect("stdout");
        let set = |paused: bool, stop: bool| {
            let mut st = state.lock().expect("state");
            (st.0, st.1) = (paused, stop);
            cv.notify_all();
            while paused && !st.2 {
                st = cv.wait(st).expect("state");
            }
        };
        let mut line = String::new();
        loop {
            line.clear();
            if stdin.lock().read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let reply = match line.trim() {
                "pause" => {
                    set(true, false);
                    "paused".to_owned()
                }
                "resume" => {
                    set(false, false);
                    "resumed".to_owned()
                }
                "burst" => {
                    let (mut u, mut z, mut uoff, mut zoff) = (0, 0, 0, 0 as libc::off_t);
                    for _ in 0..10 {
                        u += write_user(4096, &mut uoff);
                    }
                    while z < 81920 {
                        z += send_zc(81920 - z as usize, &mut zoff);
                    }
                    format!("burst {u} {z}")
                }
                other => panic!("paced: unknown command `{other}`"),
            };
            writeln!(stdout, "{reply}").expect("stdout");
            stdout.flush().expect("stdout");
        }
        set(false, true);
    });
}

/// The calling thread's CPU time (the kernel's own).
fn thread_cpu_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// Sleeps of known length inside three syscalls, one after another, each
/// `rounds` times `nap`: nanosleep; read on an empty pipe that a helper
/// thread writes a byte into every `nap` (it sleeps in clock_nanosleep,
/// another syscall); a futex wait the helper wakes every `nap`. Prints
/// each loop's wall time, which bounds what its calls can have slept.
fn scenario_offcpu(rounds: u32, nap: Duration) {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: nap.as_nanos() as libc::c_long,
    };
    let helper_nap = move || {
        // SAFETY: a valid timespec; raw, so it is clock_nanosleep whatever
        // libc's nanosleep() uses.
        unsafe {
            libc::syscall(
                libc::SYS_clock_nanosleep,
                libc::CLOCK_MONOTONIC,
                0,
                &ts,
                std::ptr::null_mut::<libc::timespec>(),
            )
        };
    };
    let (started, cpu) = (std::time::Instant::now(), thread_cpu_ns());
    for _ in 0..rounds {
        // SAFETY: a valid timespec; raw nanosleep (glibc's nanosleep()
        // calls clock_nanosleep).
        let r = unsafe {
            libc::syscall(
                libc::SYS_nanosleep,
                &ts,
                std::ptr::null_mut::<libc::timespec>(),
            )
        };
        check(r as isize, "nanosleep");
    }
    println!("offcpu nanosleep ns {}", started.elapsed().as_nanos());
    println!("offcpu nanosleep cpu ns {}", thread_cpu_ns() - cpu);

    let (rd, wr) = pipe();
    let writer = std::thread::spawn(move || {
        for _ in 0..rounds {
            helper_nap();
            // SAFETY: a valid one-byte buffer and the pipe's write end.
            check(
                unsafe { libc::write(wr, [1u8].as_ptr().cast(), 1) },
                "write",
            );
        }
    });
    let (started, cpu) = (std::time::Instant::now(), thread_cpu_ns());
    let mut byte = [0u8; 1];
    for _ in 0..rounds {
        // SAFETY: a valid one-byte buffer and the pipe's read end.
        check(
            unsafe { libc::read(rd, byte.as_mut_ptr().cast(), 1) },
            "read",
        );
    }
    println!("offcpu read ns {}", started.elapsed().as_nanos());
    println!("offcpu read cpu ns {}", thread_cpu_ns() - cpu);
    // Not joined: pthread_join sleeps in a futex wait, and this process's
    // futex sleeps are measured next.
    drop(writer);

    static WORD: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let waker = std::thread::spawn(move || {
        for i in 1..=rounds {
            helper_nap();
            WORD.store(i, std::sync::atomic::Ordering::SeqCst);
            // SAFETY: FUTEX_WAKE on a static word.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    WORD.as_ptr(),
                    libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                    1,
                )
            };
        }
    });
    let (started, cpu) = (std::time::Instant::now(), thread_cpu_ns());
    let mut waits = 0;
    for i in 0..rounds {
        while WORD.load(std::sync::atomic::Ordering::SeqCst) == i {
            // SAFETY: FUTEX_WAIT on a static word while it holds `i`, no
            // timeout.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    WORD.as_ptr(),
                    libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                    i,
                    std::ptr::null::<libc::timespec>(),
                )
            };
            waits += 1;
        }
    }
    println!("offcpu futex ns {}", started.elapsed().as_nanos());
    println!("offcpu futex cpu ns {}", thread_cpu_ns() - cpu);
    println!("futex waits {waits}");
    drop(waker);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let scenario = args.get(1).map(String::as_str).unwrap_or("");
    let dir = args.get(2).cloned().unwrap_or_else(|| ".".into());
    let port: u16 = args.get(3).and_then(|p| p.parse().ok()).unwrap_or(0);

    // Set-up, before the test's baseline scrape.
    match scenario {
        "rw" => {
            make_file(&format!("{dir}/in"), 4 << 20);
            make_file(&format!("{dir}/out"), 0);
        }
        "zerocopy" => make_file(&format!("{dir}/in"), 2 << 20),
        "aio" => make_file(&format!("{dir}/aio-data"), 1 << 20),
        "paced" => make_file(&format!("{dir}/paced-in"), 1 << 20),
        "cache" | "cache-mmap" | "cache-sendfile" => {
            make_file(&format!("{dir}/cached"), 1 << 20);
            evict(&format!("{dir}/cached"));
        }
        // The file's blocks allocated and written, the journal committed
        // (syncfs), the pages evicted: the steps' I/O is then the child's
        // own reads and overwrites, nothing to allocate.
        "block" => {
            let path = format!("{dir}/data");
            make_file(&path, 1 << 20);
            evict(&path);
            let f = open(&path, libc::O_RDONLY);
            // SAFETY: valid fd.
            check(unsafe { libc::syncfs(f.as_raw_fd()) } as isize, "syncfs");
        }
        "exit" | "idle" | "ctxsw" | "syscalls" | "epoll" | "uring" | "uring-async"
        | "uring-sqpoll" | "fdreuse" | "ctxsw-signals" | "ctxsw-shared" | "cache-dirty"
        | "mmsg" | "ia32" | "offcpu" | "vmsplice" => {}
        other => panic!("unknown scenario `{other}`"),
    }
    if scenario.starts_with("cache") || scenario == "block" {
        // The child's own code and libraries, faulted in and locked now: a
        // page-in of them during the step (reclaim evicts idle file pages
        // on this VM) would be a page-cache miss of the child's too, and
        // these scenarios count its misses exactly.
        // SAFETY: no pointers; locks the mappings that exist now.
        check(
            unsafe { libc::mlockall(libc::MCL_CURRENT) } as isize,
            "mlockall",
        );
    }

    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    let mut line = String::new();
    writeln!(stdout, "ready").expect("stdout");
    stdout.flush().expect("stdout");
    if scenario == "offcpu" {
        // Waits for the go in poll, so that the read below does not sleep:
        // that sleep would be settled (as read's) after the baseline.
        let mut pfd = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        check(unsafe { libc::poll(&mut pfd, 1, -1) } as isize, "poll");
    }
    stdin.lock().read_line(&mut line).expect("stdin");

    let mut t = Tally::default();
    let mut keep = None;
    match scenario {
        "ctxsw" => keep = Some(scenario_ctxsw(2000, 300, 50)),
        // ctxsw-signals, with the sleeper at an entry index another live
        // thread took first: its state lives in task local storage.
        "ctxsw-shared" => {
            let holder = spawn_entry_holder();
            let sleeper = std::cell::Cell::new(0);
            let spawn = |f| {
                let (tid, h) = spawn_at_slot(thread_slot(holder), f);
                sleeper.set(tid);
                h
            };
            let spawned = || {
                writeln!(stdout, "tids {holder} {}", sleeper.get()).expect("stdout");
                writeln!(stdout, "phase shared").expect("stdout");
                stdout.flush().expect("stdout");
                line.clear();
                stdin.lock().read_line(&mut line).expect("stdin");
            };
            keep = Some(scenario_ctxsw_signals(
                Duration::from_millis(1500),
                spawn,
                spawned,
            ));
        }
        "ctxsw-signals" => {
            keep = Some(scenario_ctxsw_signals(
                Duration::from_millis(1500),
                std::thread::spawn,
                || {},
            ));
        }
        "syscalls" => {
            for _ in 0..10_000 {
                // SAFETY: no arguments; the raw syscall bypasses any cache.
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
        }
        // Cold read (evicted in set-up), then a warm one.
        "cache" => {
            read_4k(&format!("{dir}/cached"), &mut t);
            writeln!(stdout, "phase warm").expect("stdout");
            stdout.flush().expect("stdout");
            line.clear();
            stdin.lock().read_line(&mut line).expect("stdin");
            read_4k(&format!("{dir}/cached"), &mut t);
        }
        // O_DIRECT read, O_DIRECT overwrite, a cold buffered read (evicted
        // first), a warm one: a phase each.
        "block" => {
            let path = format!("{dir}/data");
            let mut phase = |name: &str| {
                writeln!(stdout, "phase {name}").expect("stdout");
                stdout.flush().expect("stdout");
                line.clear();
                stdin.lock().read_line(&mut line).expect("stdin");
            };
            direct_io(&path, 1 << 20, false);
            phase("direct-write");
            direct_io(&path, 1 << 20, true);
            phase("cold");
            evict(&path);
            read_4k(&path, &mut t);
            phase("warm");
            read_4k(&path, &mut t);
        }
        "cache-mmap" => {
            std::hint::black_box(mmap_touch(&format!("{dir}/cached")));
        }
        // 1 MiB into a new file, 256 KiB a call: every page added and
        // dirtied once.
        "cache-dirty" => {
            let f = open(
                &format!("{dir}/dirty"),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            );
            let chunk = vec![7u8; 256 << 10];
            for _ in 0..4 {
                // SAFETY: valid buffer and open fd.
                let r = unsafe { libc::write(f.as_raw_fd(), chunk.as_ptr().cast(), chunk.len()) };
                t.add("write", "user_to_file", check(r, "write"));
            }
        }
        "cache-sendfile" => {
            let sock = tcp_connect(port);
            let file = open(&format!("{dir}/cached"), libc::O_RDONLY);
            sendfile_all(&sock, &file, 1 << 20, &mut t);
        }
        "epoll" => scenario_epoll(100, 10, &mut t),
        "offcpu" => scenario_offcpu(5, Duration::from_millis(20)),
        "uring" => scenario_uring(&dir, 50, "plain"),
        "uring-async" => scenario_uring(&dir, 50, "async"),
        "uring-sqpoll" => scenario_uring(&dir, 50, "sqpoll"),
        "rw" => scenario_rw(&dir, &mut t),
        "fdreuse" => scenario_fdreuse(&dir, &mut t),
        "mmsg" => scenario_mmsg(&mut t),
        "vmsplice" => scenario_vmsplice(&mut t),
        "aio" => scenario_aio(&dir, &mut t),
        "ia32" => scenario_ia32(&dir, &mut t),
        "zerocopy" => scenario_zerocopy(&dir, port, &mut t),
        "paced" => scenario_paced(&dir, port, &args, &stdin, &mut stdout),
        "exit" => {
            // Seven writes to a file, then exit without waiting.
            let out = open(&format!("{dir}/out"), libc::O_WRONLY | libc::O_CREAT);
            for _ in 0..7 {
                // SAFETY: valid 3-byte buffer.
                let r = unsafe { libc::write(out.as_raw_fd(), b"abc".as_ptr().cast(), 3) };
                t.add("write", "user_to_file", check(r, "write"));
            }
        }
        _ => {}
    }
    let mut report = String::new();
    for (sc, path, calls, bytes, errors) in &t.rows {
        report.push_str(&format!("count {sc} {path} {calls} {bytes} {errors}\n"));
    }
    report.push_str("done\n");
    // One write for the whole report, so the handshake's cost is one call.
    stdout.write_all(report.as_bytes()).expect("stdout");
    stdout.flush().expect("stdout");
    if scenario == "exit" {
        return;
    }
    line.clear();
    let _ = stdin.lock().read_line(&mut line);
    drop(keep);
}
