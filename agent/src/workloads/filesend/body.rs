//! The ways of moving a file range to a socket. Each sends exactly
//! `len` bytes starting at `off`, or fails (the caller then drops the
//! connection: the Content-Length already promised cannot be kept).

use std::{
    fs::File,
    io::{self, Write},
    net::TcpStream,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    ptr::NonNull,
    sync::{Condvar, Mutex},
};

use io_uring::{IoUring, opcode, types};

/// Largest single sendfile/splice request; Linux caps one call at
/// 0x7ffff000 bytes anyway.
const MAX_CHUNK: u64 = 0x7fff_f000;

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being sent")
}

/// read(2)/pread(2) into a reused user buffer, then write(2) to the socket:
/// two copies per byte, the baseline.
pub(crate) fn read_write(
    sock: &mut TcpStream,
    file: &File,
    mut off: u64,
    len: u64,
    buf: &mut Vec<u8>,
    chunk: usize,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    buf.resize(chunk, 0);
    let mut rem = len;
    while rem > 0 {
        let want = rem.min(chunk as u64) as usize;
        let n = file.read_at(&mut buf[..want], off)?;
        if n == 0 {
            return Err(truncated());
        }
        sock.write_all(&buf[..n])?;
        off += n as u64;
        rem -= n as u64;
    }
    Ok(())
}

/// An mmap of a file range, unmapped on drop.
struct Mapping {
    base: NonNull<u8>,
    map_len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `mmap_write`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.map_len) };
    }
}

/// mmap(2) the range and write(2) from the mapping: one copy (page cache →
/// socket buffer), page faults instead of read calls.
pub(crate) fn mmap_write(sock: &mut TcpStream, file: &File, off: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let page = page_size() as u64;
    let start = off & !(page - 1);
    let skip = (off - start) as usize;
    let map_len = usize::try_from(len).map_err(io::Error::other)? + skip;
    // SAFETY: read-only shared mapping of a file we hold open; the offset is
    // page aligned; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            start as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let map = Mapping {
        base: NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))?,
        map_len,
    };
    // SAFETY: advisory only, on our mapping.
    unsafe { libc::madvise(p, map_len, libc::MADV_SEQUENTIAL) };
    // SAFETY: the mapping is map_len bytes long and lives until `map` drops.
    // A concurrent truncation would raise SIGBUS; the served tree is assumed
    // not to be truncated underneath the server (as for nginx).
    let data = unsafe { std::slice::from_raw_parts(map.base.as_ptr().add(skip), map_len - skip) };
    sock.write_all(data)
}

/// sendfile(2) in large chunks: zero copy from the page cache.
pub(crate) fn sendfile(sock: &TcpStream, file: &File, off: u64, len: u64) -> io::Result<()> {
    let mut pos = off as libc::off_t;
    let mut rem = len;
    while rem > 0 {
        let want = rem.min(MAX_CHUNK) as usize;
        // SAFETY: valid descriptors; `pos` is a live off_t the kernel updates.
        let n = unsafe { libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &mut pos, want) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(truncated());
        }
        rem -= n as u64;
    }
    Ok(())
}

/// A pipe for splice, with its capacity.
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    cap: usize,
}

impl Pipe {
    fn new(size: usize) -> io::Result<Self> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two-element array; the result is checked.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors are fresh and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on our pipe; failure (EPERM above pipe-max-size or
        // the per-user soft limit) leaves the default 64 KiB, which works.
        let got =
            unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) };
        let cap = if got > 0 {
            got as usize
        } else {
            // SAFETY: fcntl query on our pipe.
            let cur = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
            if cur > 0 { cur as usize } else { 65536 }
        };
        Ok(Self { read, write, cap })
    }
}

/// A bounded pool of pipes shared by all connections. One pipe per
/// connection would hit fs.pipe-user-pages-soft near 1024 connections
/// (after which new pipes shrink to one page); a response holds a pipe only
/// while it is being spliced.
pub(crate) struct PipePool {
    idle: Mutex<(Vec<Pipe>, usize)>,
    freed: Condvar,
    max: usize,
    size: usize,
}

impl PipePool {
    pub(crate) fn new(max: usize, size: usize) -> Self {
        Self {
            idle: Mutex::new((Vec::new(), 0)),
            freed: Condvar::new(),
            max: max.max(1),
            size,
        }
    }

    /// Takes an idle pipe, creates one while under the bound, or waits.
    fn acquire(&self) -> io::Result<Pipe> {
        let mut g = self
            .idle
            .lock()
            .map_err(|_| io::Error::other("pipe pool poisoned"))?;
        loop {
            if let Some(p) = g.0.pop() {
                return Ok(p);
            }
            if g.1 < self.max {
                g.1 += 1;
                drop(g);
                return Pipe::new(self.size).inspect_err(|_| self.forget());
            }
            g = self
                .freed
                .wait(g)
                .map_err(|_| io::Error::other("pipe pool poisoned"))?;
        }
    }

    fn release(&self, p: Pipe) {
        if let Ok(mut g) = self.idle.lock() {
            g.0.push(p);
        }
        self.freed.notify_one();
    }

    /// A pipe left with data in it after an error is closed, not reused.
    fn forget(&self) {
        if let Ok(mut g) = self.idle.lock() {
            g.1 -= 1;
        }
        self.freed.notify_one();
    }
}

fn splice(
    from: i32,
    off: Option<&mut libc::loff_t>,
    to: i32,
    len: usize,
    more: bool,
) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | if more { libc::SPLICE_F_MORE } else { 0 };
    let off_ptr = off.map_or(std::ptr::null_mut(), |o| o as *mut libc::loff_t);
    loop {
        // SAFETY: valid descriptors; the offset pointer is null or a live loff_t.
        let n = unsafe { libc::splice(from, off_ptr, to, std::ptr::null_mut(), len, flags) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// file → pipe → socket with splice(2): zero copy, two calls per pipe-full.
pub(crate) fn splice_send(
    sock: &TcpStream,
    file: &File,
    off: u64,
    len: u64,
    pool: &PipePool,
) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let pipe = pool.acquire()?;
    let r = splice_with(sock, file, off, len, &pipe);
    match r {
        Ok(()) => pool.release(pipe),
        Err(_) => {
            drop(pipe);
            pool.forget();
        }
    }
    r
}

fn splice_with(sock: &TcpStream, file: &File, off: u64, len: u64, pipe: &Pipe) -> io::Result<()> {
    let mut pos = off as libc::loff_t;
    let mut rem = len;
    while rem > 0 {
        let want = rem.min(pipe.cap as u64) as usize;
        let n = splice(
            file.as_raw_fd(),
            Some(&mut pos),
            pipe.write.as_raw_fd(),
            want,
            true,
        )?;
        if n == 0 {
            return Err(truncated());
        }
        rem -= n as u64;
        let mut pending = n;
        while pending > 0 {
            let m = splice(
                pipe.read.as_raw_fd(),
                None,
                sock.as_raw_fd(),
                pending,
                rem > 0,
            )?;
            if m == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "socket accepted no bytes",
                ));
            }
            pending -= m;
        }
    }
    Ok(())
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf with a constant name.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

/// A heap buffer aligned for O_DIRECT.
struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    fn new(len: usize, align: usize) -> io::Result<Self> {
        let layout = std::alloc::Layout::from_size_align(len, align).map_err(io::Error::other)?;
        // SAFETY: layout has non-zero size (chunk ≥ align > 0).
        let p = unsafe { std::alloc::alloc(layout) };
        let ptr =
            NonNull::new(p).ok_or_else(|| io::Error::other("out of memory for O_DIRECT buffer"))?;
        Ok(Self { ptr, layout })
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// What submits a DirectReader's reads: io_uring, or Linux native AIO
/// (io_submit/io_getevents, what nginx's `aio on` uses on Linux).
/// The ring is boxed: one per connection, made once, and the enum would
/// otherwise carry its 272 bytes for the native variant too.
enum Engine {
    Uring(Box<IoUring>),
    Native(NativeAio),
}

/// A Linux native AIO context (io_setup), destroyed on drop.
struct NativeAio {
    ctx: libc::c_ulong,
}

/// uapi `struct iocb` (include/uapi/linux/aio_abi.h, little endian).
#[repr(C)]
#[derive(Default)]
struct Iocb {
    aio_data: u64,
    aio_key: u32,
    aio_rw_flags: i32,
    aio_lio_opcode: u16,
    aio_reqprio: i16,
    aio_fildes: u32,
    aio_buf: u64,
    aio_nbytes: u64,
    aio_offset: i64,
    aio_reserved2: u64,
    aio_flags: u32,
    aio_resfd: u32,
}

/// uapi `struct io_event`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

const IOCB_CMD_PREAD: u16 = 0;

impl NativeAio {
    fn new(depth: i64) -> io::Result<Self> {
        let mut ctx: libc::c_ulong = 0;
        // SAFETY: io_setup writes the new context's id into `ctx`.
        let r = unsafe { libc::syscall(libc::SYS_io_setup, depth, &mut ctx) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { ctx })
    }

    /// Submits one read of `len` bytes at `off` into `buf`, tagged `data`.
    ///
    /// # Safety
    /// `buf` must stay valid and untouched until the read's completion is
    /// reaped.
    unsafe fn read(
        &self,
        fd: i32,
        buf: *mut u8,
        len: usize,
        off: u64,
        data: u64,
    ) -> io::Result<()> {
        // The kernel copies the iocb at submission; only its address comes
        // back (io_event.obj), and the data tag is what is matched on.
        let mut iocb = Iocb {
            aio_data: data,
            aio_lio_opcode: IOCB_CMD_PREAD,
            aio_fildes: fd as u32,
            aio_buf: buf as u64,
            aio_nbytes: len as u64,
            aio_offset: off as i64,
            ..Iocb::default()
        };
        let mut ptrs = [&mut iocb as *mut Iocb];
        loop {
            // SAFETY: one pointer to a live iocb; the buffer's contract is
            // the caller's.
            let r = unsafe { libc::syscall(libc::SYS_io_submit, self.ctx, 1, ptrs.as_mut_ptr()) };
            match r {
                1 => return Ok(()),
                r if r < 0 => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
                _ => return Err(io::Error::other("io_submit took no iocb")),
            }
        }
    }

    /// Waits for at least one completion; returns (data, res) of each.
    fn wait(&self, out: &mut Vec<(u64, i64)>) -> io::Result<()> {
        let mut events = [IoEvent::default(); 2];
        // SAFETY: room for 2 events; no timeout.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_getevents,
                self.ctx,
                1,
                events.len(),
                events.as_mut_ptr(),
                std::ptr::null::<libc::timespec>(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        out.extend(events[..r as usize].iter().map(|e| (e.data, e.res)));
        Ok(())
    }
}

impl Drop for NativeAio {
    fn drop(&mut self) {
        // Waits for (or cancels) reads still in flight; DirectReader has
        // reaped them all by now unless the context failed.
        // SAFETY: our context, destroyed once.
        unsafe { libc::syscall(libc::SYS_io_destroy, self.ctx) };
    }
}

/// O_DIRECT reads through io_uring or Linux native AIO into two aligned
/// buffers, sending one while the kernel fills the other: the page cache is
/// bypassed, as nginx's `aio on; directio …;`. Reused for all requests of
/// a connection.
pub(crate) struct DirectReader {
    engine: Engine,
    /// Completions reaped by the native engine, reused.
    reaped: Vec<(u64, i64)>,
    bufs: std::mem::ManuallyDrop<[AlignedBuf; 2]>,
    chunk: usize,
    /// Reads submitted and not yet reaped; their buffers must stay alive.
    in_flight: [bool; 2],
    /// Results reaped but not yet consumed, per buffer.
    results: [Option<i64>; 2],
}

/// Alignment of the O_DIRECT buffers and chunk lengths: a multiple of the
/// logical block size of every common device (512 or 4096).
pub(crate) const DIRECT_ALIGN: usize = 4096;

/// The file offset alignment O_DIRECT needs on this file (its logical block
/// size, from statx STATX_DIOALIGN, Linux ≥ 6.1), or `DIRECT_ALIGN` when the
/// kernel or filesystem does not say.
fn dio_offset_align(file: &File) -> usize {
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: AT_EMPTY_PATH with an empty C string queries the open fd
    // itself; `stx` is a valid out-pointer.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc == 0
        && stx.stx_mask & libc::STATX_DIOALIGN != 0
        && stx.stx_dio_offset_align.is_power_of_two()
    {
        stx.stx_dio_offset_align as usize
    } else {
        DIRECT_ALIGN
    }
}

impl DirectReader {
    /// `native`: Linux native AIO instead of io_uring.
    pub(crate) fn new(chunk: usize, native: bool) -> io::Result<Self> {
        let chunk = chunk.max(DIRECT_ALIGN).div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
        let engine = if native {
            Engine::Native(NativeAio::new(4)?)
        } else {
            Engine::Uring(Box::new(IoUring::new(4)?))
        };
        Ok(Self {
            engine,
            reaped: Vec::with_capacity(2),
            bufs: std::mem::ManuallyDrop::new([
                AlignedBuf::new(chunk, DIRECT_ALIGN)?,
                AlignedBuf::new(chunk, DIRECT_ALIGN)?,
            ]),
            chunk,
            in_flight: [false; 2],
            results: [None; 2],
        })
    }

    fn submit_read(&mut self, file: &File, which: usize, at: u64) -> io::Result<()> {
        if self.in_flight[which] {
            return Err(io::Error::other(
                "O_DIRECT buffer still owned by an earlier read",
            ));
        }
        let buf = self.bufs[which].ptr.as_ptr();
        match &mut self.engine {
            Engine::Uring(ring) => {
                let sqe = opcode::Read::new(types::Fd(file.as_raw_fd()), buf, self.chunk as u32)
                    .offset(at)
                    .build()
                    .user_data(which as u64);
                // SAFETY: the target buffer is owned by self and is not
                // read, reused or freed until this read's completion is
                // reaped (`in_flight`).
                unsafe { ring.submission().push(&sqe) }
                    .map_err(|_| io::Error::other("io_uring SQ full"))?;
                ring.submit()?;
            }
            // SAFETY: as above.
            Engine::Native(aio) => unsafe {
                aio.read(file.as_raw_fd(), buf, self.chunk, at, which as u64)?
            },
        }
        self.in_flight[which] = true;
        Ok(())
    }

    /// Waits for the read into buffer `which`; returns its byte count.
    /// Completions for the other buffer reaped on the way are kept.
    fn wait_read(&mut self, which: usize) -> io::Result<usize> {
        while self.results[which].is_none() {
            if !self.in_flight[which] {
                return Err(io::Error::other(
                    "no O_DIRECT read outstanding on this buffer",
                ));
            }
            let waited = match &mut self.engine {
                Engine::Uring(ring) => ring.submit_and_wait(1).map(|_| {
                    for cqe in ring.completion() {
                        self.reaped.push((cqe.user_data(), i64::from(cqe.result())));
                    }
                }),
                Engine::Native(aio) => aio.wait(&mut self.reaped),
            };
            match waited {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for (data, res) in self.reaped.drain(..) {
                let w = (data as usize) & 1;
                self.in_flight[w] = false;
                self.results[w] = Some(res);
            }
        }
        match self.results[which].take() {
            Some(r) if r >= 0 => Ok(r as usize),
            Some(r) => Err(io::Error::from_raw_os_error(-r as i32)),
            None => Err(io::Error::other("O_DIRECT read completion lost")),
        }
    }

    /// Reaps every outstanding read so no buffer is in the kernel's hands;
    /// false if the ring failed with a read still outstanding.
    fn drain(&mut self) -> bool {
        for w in 0..2 {
            if self.in_flight[w] {
                // The read's own result is irrelevant here: only the
                // buffer's release matters.
                let _ = self.wait_read(w);
            }
            self.results[w] = None;
        }
        !self.in_flight.iter().any(|&f| f)
    }

    /// Sends `len` bytes from `off` of `file` (opened with O_DIRECT). Reads
    /// start at `off` rounded down to the alignment; the tail is read by an
    /// aligned over-read that the short read at EOF ends, and only the
    /// requested bytes are sent.
    pub(crate) fn send(
        &mut self,
        sock: &mut TcpStream,
        file: &File,
        off: u64,
        len: u64,
    ) -> io::Result<()> {
        let r = self.send_inner(sock, file, off, len);
        if !self.drain() {
            return Err(io::Error::other(
                "the AIO engine failed with an O_DIRECT read outstanding",
            ));
        }
        r
    }

    fn send_inner(
        &mut self,
        sock: &mut TcpStream,
        file: &File,
        off: u64,
        len: u64,
    ) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        // Round reads down to the device's own alignment (less over-read at
        // the head than a page); chunks, multiples of DIRECT_ALIGN, keep
        // every later read aligned too.
        let align = dio_offset_align(file);
        if align > DIRECT_ALIGN {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "O_DIRECT alignment {align} exceeds the {DIRECT_ALIGN} supported; use --mode sendfile"
                ),
            ));
        }
        let align = align as u64;
        let chunk = self.chunk as u64;
        let end = off + len;
        let mut next = off & !(align - 1);
        let mut skip = (off - next) as usize;
        let mut cur = 0usize;
        self.submit_read(file, cur, next)?;
        let mut cur_at = next;
        next += chunk;
        loop {
            // Prefetch the next chunk into the other buffer while this one is
            // sent.
            if next < end {
                self.submit_read(file, cur ^ 1, next)?;
            }
            let got = self.wait_read(cur)?;
            let want_end = (end - cur_at).min(chunk) as usize;
            if got < want_end {
                return Err(truncated());
            }
            // SAFETY: the kernel wrote `got` ≥ want_end bytes into this
            // buffer and its read has completed.
            let data = unsafe { std::slice::from_raw_parts(self.bufs[cur].ptr.as_ptr(), want_end) };
            sock.write_all(&data[skip..])?;
            skip = 0;
            if next >= end {
                return Ok(());
            }
            cur ^= 1;
            cur_at = next;
            next += chunk;
        }
    }
}

impl Drop for DirectReader {
    fn drop(&mut self) {
        if self.drain() {
            // SAFETY: no read targets the buffers any more; dropped once.
            unsafe { std::mem::ManuallyDrop::drop(&mut self.bufs) };
        }
        // Otherwise the buffers are leaked: the kernel may still write them.
    }
}

/// Opens `path` for direct I/O, or falls back to buffered reads when the
/// filesystem refuses O_DIRECT (tmpfs before 6.6, some FUSE).
pub(crate) fn open_direct(path: &std::path::Path) -> io::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)?;
            Ok((f, false))
        }
        Err(e) => Err(e),
    }
}
