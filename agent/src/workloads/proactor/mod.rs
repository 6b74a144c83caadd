//! `iolens workload proactor`: an HTTP server in the Proactor pattern on
//! io_uring, one ring per thread (thread-per-core).
//!
//! Roles, as in the seed notes (POSA2 Proactor):
//! - **Proactive Initiator**: [`Proactor::initiate`] and the `submit_*`
//!   helpers, which queue asynchronous operations (accept, recv, send) as SQEs;
//! - **Asynchronous Operation Processor**: the kernel, which performs them;
//! - **Completion Event Queue**: the ring's CQ;
//! - **Proactor**: [`Proactor`], which owns the ring and runs the completion
//!   dispatch loop ([`Proactor::run`]);
//! - **Completion Handler**: [`handler::Conn`], the per-connection state
//!   machine that reacts to each completion.
//!
//! Accept and recv are multishot; recv draws from a provided-buffer ring so
//! idle connections hold no receive buffer. Every buffer an operation uses is
//! owned by the connection state (or the buffer ring) until that operation's
//! final completion arrives; a connection is freed only when it has no
//! operation in flight.

mod bufring;
mod handler;

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context;
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use tracing::{debug, info, warn};

use self::{
    bufring::BufRing,
    handler::{Conn, Slab},
};
use crate::workloads::http;

/// Options for `iolens workload proactor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port). The first stdout line
    /// is `listening on ADDR` with the actual address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Threads, each with its own io_uring and its own SO_REUSEPORT listener
    /// (thread-per-core). Default: number of CPUs.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Use a kernel submission-polling thread per ring (IORING_SETUP_SQPOLL):
    /// fewer io_uring_enter calls, one extra busy kernel thread per ring.
    /// Disables DEFER_TASKRUN, which the kernel refuses together with SQPOLL.
    #[arg(long)]
    pub sqpoll: bool,
    /// Idle time in milliseconds before an SQPOLL thread sleeps.
    #[arg(long, default_value_t = 1000)]
    pub sqpoll_idle_ms: u32,
    /// Busy-spin this many microseconds per request (simulated CPU work).
    #[arg(long, default_value_t = 0)]
    pub work_us: u64,
    /// Body size of `GET /`. `GET /bytes/N` returns N bytes instead.
    #[arg(long, default_value_t = 128)]
    pub response_size: u64,
    /// Largest N that `/bytes/N` serves; larger is 404. Each response is
    /// built whole in memory before it is sent.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_response_size: u64,
    /// Submission queue entries per ring (the completion queue is 4× larger).
    #[arg(long, default_value_t = 1024)]
    pub ring_entries: u32,
    /// Provided receive buffers per ring (power of two). When all are in use,
    /// receives pause until the dispatch loop recycles some.
    #[arg(long, default_value_t = 1024)]
    pub recv_buffers: u16,
    /// Size of each provided receive buffer in bytes.
    #[arg(long, default_value_t = 4096)]
    pub recv_buffer_size: u32,
}

/// Errors of the proactor's own setup and loop.
#[derive(Debug, thiserror::Error)]
pub enum ProactorError {
    #[error(
        "cannot create io_uring with {entries} entries: {source} (is io_uring disabled? see /proc/sys/kernel/io_uring_disabled)"
    )]
    Ring { entries: u32, source: io::Error },
    #[error("cannot register the provided-buffer ring: {0} (needs Linux ≥ 5.19)")]
    BufRing(io::Error),
    #[error("io_uring_enter failed: {0}")]
    Enter(io::Error),
    #[error("cannot create eventfd: {0}")]
    EventFd(io::Error),
}

/// Longest a lingering close waits for the peer's FIN.
const LINGER: Duration = Duration::from_secs(5);

/// User-data tags: the operation kind in the top byte, the connection slot in
/// the next 24 bits, the slot's generation in the low 32 bits (so a stale
/// completion can never be mistaken for a new connection's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    Accept = 1,
    Recv = 2,
    Send = 3,
    Wake = 4,
    Cancel = 5,
    Tick = 6,
}

fn tag(op: Op, slot: u32, generation: u32) -> u64 {
    (u64::from(op as u8) << 56) | (u64::from(slot & 0x00ff_ffff) << 32) | u64::from(generation)
}

fn untag(ud: u64) -> (Option<Op>, u32, u32) {
    let op = match (ud >> 56) as u8 {
        1 => Some(Op::Accept),
        2 => Some(Op::Recv),
        3 => Some(Op::Send),
        4 => Some(Op::Wake),
        5 => Some(Op::Cancel),
        6 => Some(Op::Tick),
        _ => None,
    };
    (op, ((ud >> 32) & 0x00ff_ffff) as u32, ud as u32)
}

/// Per-thread settings shared by all connections of a ring.
pub(crate) struct Config {
    /// The complete keep-alive answer to `GET /`, built once: the common
    /// case costs one copy and no formatting.
    pub(crate) default_response: Vec<u8>,
    pub(crate) response_size: u64,
    pub(crate) max_response_size: u64,
    /// Busy work per request, in µs (`--work-us`).
    pub(crate) work_us: u64,
}

impl Config {
    fn new(response_size: u64, max_response_size: u64, work_us: u64) -> Self {
        let mut default_response = Vec::new();
        http::write_head(&mut default_response, http::Status::Ok, response_size, true);
        let start = default_response.len();
        default_response.resize(start + response_size as usize, 0);
        http::fill_body(0, &mut default_response[start..]);
        Self {
            default_response,
            response_size,
            max_response_size,
            work_us,
        }
    }

    /// Appends the response to one request: `/` → `--response-size` bytes,
    /// `/bytes/N` → N bytes (up to `--max-response-size`), else 404; HEAD gets
    /// the head only.
    pub(crate) fn respond(&self, out: &mut Vec<u8>, req: &http::Request<'_>) {
        let get = req.method == http::Method::Get;
        match http::route(req.path, self.response_size, self.max_response_size) {
            http::Route::Bytes(n) if get && req.keep_alive && n == self.response_size => {
                out.extend_from_slice(&self.default_response);
            }
            http::Route::Bytes(n) => {
                http::write_head(out, http::Status::Ok, n, req.keep_alive);
                if get {
                    let start = out.len();
                    out.resize(start + n as usize, 0);
                    http::fill_body(0, &mut out[start..]);
                }
            }
            http::Route::NotFound => {
                http::write_head(out, http::Status::NotFound, 0, req.keep_alive)
            }
        }
    }
}

/// The Proactor: owns the ring (whose CQ is the Completion Event Queue), the
/// listener, the buffer ring and the connection slab; runs the completion
/// dispatch loop. Field order matters: the ring is dropped before the buffer
/// memory and the connections' buffers it may reference.
struct Proactor {
    ring: IoUring,
    bufs: BufRing,
    conns: Slab,
    listener: OwnedFd,
    wake: OwnedFd,
    /// Target of the pending eventfd read; boxed so its address is stable.
    wake_buf: Box<u64>,
    stop: Arc<AtomicBool>,
    cfg: Config,
    /// Operations submitted whose final completion has not arrived yet.
    inflight: usize,
    stopping: bool,
    /// Slots whose connections asked to close; freed when idle.
    closing: Vec<(u32, u32)>,
    /// Completions copied out of the CQ, dispatched after the copy so
    /// handlers may submit while iterating.
    batch: Vec<(u64, i32, u32)>,
    /// Period of the housekeeping timeout (lingering-close deadlines);
    /// boxed so the kernel's pointer to it stays valid.
    tick: Box<types::Timespec>,
}

/// Ring flags actually obtained, for the log.
#[derive(Debug)]
enum RingMode {
    DeferTaskrun,
    SqPoll,
    Plain,
}

fn build_ring(args: &Args) -> Result<(IoUring, RingMode), ProactorError> {
    let entries = args.ring_entries.max(8);
    let cq = entries.saturating_mul(4);
    let err = |source| ProactorError::Ring { entries, source };
    if args.sqpoll {
        // SQPOLL + DEFER_TASKRUN is EINVAL: task work must run in the
        // submitter's context, which SQPOLL moves to a kernel thread.
        match IoUring::builder()
            .setup_cqsize(cq)
            .setup_sqpoll(args.sqpoll_idle_ms)
            .setup_single_issuer()
            .build(entries)
        {
            Ok(r) => return Ok((r, RingMode::SqPoll)),
            Err(e) => warn!(error = %e, "kernel refused SQPOLL|SINGLE_ISSUER; trying SQPOLL alone"),
        }
        match IoUring::builder()
            .setup_cqsize(cq)
            .setup_sqpoll(args.sqpoll_idle_ms)
            .build(entries)
        {
            Ok(r) => return Ok((r, RingMode::SqPoll)),
            Err(e) => warn!(error = %e, "kernel refused SQPOLL; falling back to a plain ring"),
        }
    } else {
        match IoUring::builder()
            .setup_cqsize(cq)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(entries)
        {
            Ok(r) => return Ok((r, RingMode::DeferTaskrun)),
            Err(e) => warn!(
                error = %e,
                "kernel refused SINGLE_ISSUER|DEFER_TASKRUN (needs Linux ≥ 6.1); falling back to a plain ring"
            ),
        }
    }
    let r = IoUring::builder()
        .setup_cqsize(cq)
        .build(entries)
        .map_err(err)?;
    Ok((r, RingMode::Plain))
}

impl Proactor {
    fn new(
        args: &Args,
        listener: OwnedFd,
        wake: OwnedFd,
        stop: Arc<AtomicBool>,
        cfg: Config,
    ) -> Result<Self, ProactorError> {
        let (ring, mode) = build_ring(args)?;
        debug!(?mode, "ring ready");
        let bufs = BufRing::new(
            &ring.submitter(),
            args.recv_buffers,
            args.recv_buffer_size,
            0,
        )
        .map_err(ProactorError::BufRing)?;
        Ok(Self {
            ring,
            bufs,
            conns: Slab::default(),
            listener,
            wake,
            wake_buf: Box::new(0),
            stop,
            cfg,
            inflight: 0,
            stopping: false,
            closing: Vec::new(),
            batch: Vec::with_capacity(256),
            tick: Box::new(types::Timespec::new().sec(1)),
        })
    }

    /// Proactive Initiator: queues one SQE, flushing the SQ to the kernel when
    /// it is full. `counts` says whether a completion will be owed to us.
    fn initiate(&mut self, sqe: squeue::Entry, counts: bool) -> Result<(), ProactorError> {
        loop {
            // SAFETY: every buffer an SQE points to is owned by the Proactor
            // (wake_buf, buffer ring) or by a connection in the slab, and is
            // neither moved nor freed before the operation's final completion
            // (connections are freed only when they have nothing in flight).
            let pushed = unsafe { self.ring.submission().push(&sqe) };
            if pushed.is_ok() {
                break;
            }
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // CQ overflow backlog: reap before submitting more.
                    self.dispatch_ready()?;
                }
                Err(e) => return Err(ProactorError::Enter(e)),
            }
        }
        if counts {
            self.inflight += 1;
        }
        Ok(())
    }

    fn submit_accept(&mut self) -> Result<(), ProactorError> {
        let sqe = opcode::AcceptMulti::new(types::Fd(self.listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(tag(Op::Accept, 0, 0));
        self.initiate(sqe, true)
    }

    fn submit_wake_read(&mut self) -> Result<(), ProactorError> {
        let ptr: *mut u64 = &mut *self.wake_buf;
        let sqe = opcode::Read::new(types::Fd(self.wake.as_raw_fd()), ptr.cast(), 8)
            .build()
            .user_data(tag(Op::Wake, 0, 0));
        self.initiate(sqe, true)
    }

    fn submit_recv(&mut self, slot: u32, generation: u32, fd: RawFd) -> Result<(), ProactorError> {
        let sqe = opcode::RecvMulti::new(types::Fd(fd), self.bufs.bgid)
            .build()
            .user_data(tag(Op::Recv, slot, generation));
        self.initiate(sqe, true)
    }

    fn submit_send(&mut self, slot: u32, generation: u32) -> Result<(), ProactorError> {
        let Some(conn) = self.conns.get_mut(slot, generation) else {
            return Ok(());
        };
        let Some((ptr, len)) = conn.start_send() else {
            return Ok(());
        };
        let fd = conn.fd.as_raw_fd();
        let sqe = opcode::Send::new(types::Fd(fd), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(tag(Op::Send, slot, generation));
        self.initiate(sqe, true)
    }

    fn submit_tick(&mut self) -> Result<(), ProactorError> {
        let ts: *const types::Timespec = &*self.tick;
        let sqe = opcode::Timeout::new(ts)
            .build()
            .user_data(tag(Op::Tick, 0, 0));
        self.initiate(sqe, true)
    }

    fn submit_cancel(&mut self, target: u64) -> Result<(), ProactorError> {
        let sqe = opcode::AsyncCancel::new(target)
            .build()
            .user_data(tag(Op::Cancel, 0, 0));
        self.initiate(sqe, true)
    }

    /// The completion dispatch loop: wait for completions, hand each to its
    /// handler, until asked to stop and nothing is in flight.
    fn run(&mut self) -> Result<(), ProactorError> {
        self.submit_wake_read()?;
        self.submit_tick()?;
        self.submit_accept()?;
        let mut drain_deadline: Option<Instant> = None;
        loop {
            if self.stopping {
                if self.inflight == 0 {
                    return Ok(());
                }
                let deadline =
                    *drain_deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(2));
                if Instant::now() >= deadline {
                    warn!(
                        inflight = self.inflight,
                        "operations still in flight after 2 s; leaking their buffers"
                    );
                    // Freeing memory the kernel may still write is unsound;
                    // leaking it at exit is not.
                    std::mem::forget(std::mem::take(&mut self.conns));
                    return Ok(());
                }
                let ts = types::Timespec::new().nsec(100_000_000);
                let args = types::SubmitArgs::new().timespec(&ts);
                match self.ring.submitter().submit_with_args(1, &args) {
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                        ) => {}
                    Err(e) => return Err(ProactorError::Enter(e)),
                }
            } else {
                match self.ring.submit_and_wait(1) {
                    Ok(_) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                    Err(e) => return Err(ProactorError::Enter(e)),
                }
            }
            self.dispatch_ready()?;
        }
    }

    /// Drains the Completion Event Queue and dispatches every entry.
    fn dispatch_ready(&mut self) -> Result<(), ProactorError> {
        // Reused across calls (a nested call, from `initiate` on a full SQ,
        // just starts with an empty one).
        let mut batch = std::mem::take(&mut self.batch);
        let r = self.dispatch_batches(&mut batch);
        batch.clear();
        self.batch = batch;
        r
    }

    fn dispatch_batches(&mut self, batch: &mut Vec<(u64, i32, u32)>) -> Result<(), ProactorError> {
        loop {
            batch.clear();
            batch.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            if batch.is_empty() {
                break;
            }
            for &(ud, res, flags) in batch.iter() {
                self.dispatch(ud, res, flags)?;
            }
            self.bufs.publish();
            self.reap_closing();
        }
        Ok(())
    }

    fn dispatch(&mut self, ud: u64, res: i32, flags: u32) -> Result<(), ProactorError> {
        let (op, slot, generation) = untag(ud);
        let more = cqueue::more(flags);
        match op {
            Some(Op::Accept) => {
                if !more {
                    self.inflight -= 1;
                }
                if res >= 0 {
                    // SAFETY: a successful accept completion carries a new
                    // descriptor that nothing else owns.
                    let fd = unsafe { OwnedFd::from_raw_fd(res) };
                    if self.stopping {
                        drop(fd);
                    } else {
                        self.on_accepted(fd)?;
                    }
                } else if res != -libc::ECANCELED {
                    // EMFILE/ENFILE and friends: keep serving existing
                    // connections and try again.
                    warn!(error = %io::Error::from_raw_os_error(-res), "accept failed");
                }
                if !more && !self.stopping {
                    self.submit_accept()?;
                }
            }
            Some(Op::Recv) => {
                if !more {
                    self.inflight -= 1;
                }
                let bid = cqueue::buffer_select(flags);
                let Some(conn) = self.conns.get_mut(slot, generation) else {
                    // Buffer recycled even for an unknown connection so the
                    // pool cannot leak (cannot happen: slots outlive their ops).
                    if let Some(bid) = bid {
                        self.bufs.push(bid);
                    }
                    return Ok(());
                };
                if !more {
                    conn.recv_armed = false;
                }
                if res > 0 {
                    if let Some(bid) = bid {
                        let data = self.bufs.get(bid, res as usize);
                        conn.on_recv(data, &self.cfg);
                        self.bufs.push(bid);
                    }
                } else if res == 0 {
                    conn.on_peer_closed();
                } else if res == -libc::ENOBUFS {
                    // All provided buffers were taken in this batch; they are
                    // recycled before the rearm below is processed.
                    debug!(slot, "provided buffers exhausted; re-arming recv");
                } else if res != -libc::ECANCELED {
                    conn.on_error();
                }
                self.after_event(slot, generation)?;
            }
            Some(Op::Send) => {
                self.inflight -= 1;
                if let Some(conn) = self.conns.get_mut(slot, generation) {
                    conn.on_sent(res, &self.cfg);
                    self.after_event(slot, generation)?;
                }
            }
            Some(Op::Wake) => {
                self.inflight -= 1;
                if self.stop.load(Ordering::Acquire) {
                    self.begin_stop()?;
                } else if res >= 0 || res == -libc::EINTR {
                    self.submit_wake_read()?;
                }
            }
            Some(Op::Cancel) => self.inflight -= 1,
            Some(Op::Tick) => {
                self.inflight -= 1;
                if !self.stopping {
                    self.expire_lingering()?;
                    self.submit_tick()?;
                }
            }
            None => warn!(user_data = ud, "completion with unknown tag"),
        }
        Ok(())
    }

    fn on_accepted(&mut self, fd: OwnedFd) -> Result<(), ProactorError> {
        let one: libc::c_int = 1;
        // SAFETY: valid socket fd and a c_int option of the right size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let raw = fd.as_raw_fd();
        let Some((slot, generation)) = self.conns.insert(Conn::new(fd)) else {
            warn!("connection table full (16M); dropping connection");
            return Ok(());
        };
        if let Some(c) = self.conns.get_mut(slot, generation) {
            c.recv_armed = true;
        }
        self.submit_recv(slot, generation, raw)
    }

    /// After a completion changed a connection: start the next send, rearm
    /// receiving, or start closing.
    fn after_event(&mut self, slot: u32, generation: u32) -> Result<(), ProactorError> {
        let Some(conn) = self.conns.get_mut(slot, generation) else {
            return Ok(());
        };
        if conn.closing() {
            if !conn.in_closing {
                conn.in_closing = true;
                self.closing.push((slot, generation));
            }
            if conn.broken() {
                let cancel = conn.recv_armed && !conn.cancel_sent;
                conn.cancel_sent |= cancel;
                if cancel {
                    self.submit_cancel(tag(Op::Recv, slot, generation))?;
                }
                return Ok(());
            }
            // Lingering close: once everything owed is sent, send FIN and
            // keep reading (and discarding) until the peer closes or the
            // deadline passes. Closing with unread input would send RST,
            // which can destroy the response (a 400) before the client
            // reads it.
            if conn.flushed() && conn.start_linger(Instant::now() + LINGER) {
                // SAFETY: shutdown on a socket we own.
                unsafe { libc::shutdown(conn.fd.as_raw_fd(), libc::SHUT_WR) };
            }
            if !conn.recv_armed && !conn.peer_eof() {
                conn.recv_armed = true;
                let fd = conn.fd.as_raw_fd();
                self.submit_recv(slot, generation, fd)?;
            }
            return self.submit_send(slot, generation);
        }
        if !conn.recv_armed {
            conn.recv_armed = true;
            let fd = conn.fd.as_raw_fd();
            self.submit_recv(slot, generation, fd)?;
        }
        self.submit_send(slot, generation)
    }

    /// Cuts off connections whose lingering close outlived its deadline.
    fn expire_lingering(&mut self) -> Result<(), ProactorError> {
        let now = Instant::now();
        for i in 0..self.closing.len() {
            let (slot, generation) = self.closing[i];
            if let Some(c) = self.conns.get_mut(slot, generation)
                && c.linger_expired(now)
            {
                c.force_close();
                self.after_event(slot, generation)?;
            }
        }
        self.reap_closing();
        Ok(())
    }

    /// Frees connections that asked to close and have nothing in flight.
    fn reap_closing(&mut self) {
        let mut i = 0;
        while i < self.closing.len() {
            let (slot, generation) = self.closing[i];
            match self.conns.get_mut(slot, generation) {
                Some(c) if c.idle() => {
                    self.conns.remove(slot, generation);
                    self.closing.swap_remove(i);
                }
                Some(_) => i += 1,
                None => {
                    self.closing.swap_remove(i);
                }
            }
        }
    }

    /// Stops accepting and shuts every connection down; their pending
    /// operations then complete (recv with 0, send with an error) and the
    /// loop ends when nothing is in flight.
    fn begin_stop(&mut self) -> Result<(), ProactorError> {
        if self.stopping {
            return Ok(());
        }
        self.stopping = true;
        self.submit_cancel(tag(Op::Accept, 0, 0))?;
        self.submit_cancel(tag(Op::Tick, 0, 0))?;
        let mut live = Vec::new();
        for (slot, generation, conn) in self.conns.iter_mut() {
            conn.force_close();
            // SAFETY: shutdown on a socket we own: stops the peer and fails
            // pending sends at once.
            unsafe { libc::shutdown(conn.fd.as_raw_fd(), libc::SHUT_RDWR) };
            live.push((slot, generation));
        }
        // Cancels every armed receive and lists the connection for freeing.
        for (slot, generation) in live {
            self.after_event(slot, generation)?;
        }
        self.reap_closing();
        Ok(())
    }
}

/// Creates a listening TCP socket with SO_REUSEPORT so every thread can own
/// one on the same port and the kernel spreads connections among them.
pub(crate) fn reuseport_listener(addr: SocketAddr) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) call; the result is checked.
    let raw = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: valid socket and a c_int option of the right size.
        let rc = unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                opt,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let (storage, len) = super::sys::sockaddr_of(addr);
    // SAFETY: storage holds a sockaddr of `len` bytes matching the domain.
    if unsafe { libc::bind(raw, (&raw const storage).cast(), len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen on a bound socket we own.
    if unsafe { libc::listen(raw, 4096) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

pub(crate) fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    // `std::net::TcpListener` reads the address for us; borrow the fd
    // without taking ownership.
    let dup = fd.try_clone()?;
    std::net::TcpListener::from(dup).local_addr()
}

/// Blocks SIGINT/SIGTERM in the calling thread (and threads it spawns later)
/// so they can be taken synchronously with `sigtimedwait`.
pub(crate) fn block_term_signals() -> io::Result<libc::sigset_t> {
    // SAFETY: sigset manipulation on a local set, then pthread_sigmask on the
    // calling thread only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(set)
    }
}

/// Waits up to `timeout` for SIGINT/SIGTERM; true if one arrived.
pub(crate) fn wait_term_signal(set: &libc::sigset_t, timeout: Duration) -> bool {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `set` is an initialized sigset; no siginfo requested.
    unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) > 0 }
}

fn eventfd() -> Result<OwnedFd, ProactorError> {
    // SAFETY: eventfd(2) with constant flags; the result is checked.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if raw < 0 {
        return Err(ProactorError::EventFd(io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Runs the server until SIGINT/SIGTERM.
pub fn run(args: Args) -> anyhow::Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let sigset = block_term_signals().context("blocking SIGINT/SIGTERM for the signal waiter")?;

    // The first listener resolves port 0; the others join the same port.
    let first = reuseport_listener(args.listen).with_context(|| {
        format!(
            "cannot listen on {}: choose another --listen address",
            args.listen
        )
    })?;
    let addr = local_addr(&first).context("reading the listener's address")?;
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(
            reuseport_listener(addr)
                .with_context(|| format!("cannot add a SO_REUSEPORT listener on {addr}"))?,
        );
    }
    println!("listening on {addr}");
    info!(%addr, threads, sqpoll = args.sqpoll, "proactor listening");

    let stop = Arc::new(AtomicBool::new(false));
    let args = Arc::new(args);
    let mut workers = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let wake = eventfd()?;
        let wake_writer = wake.try_clone().context("duplicating the wake eventfd")?;
        let stop = Arc::clone(&stop);
        let args = Arc::clone(&args);
        let handle = thread::Builder::new()
            .name(format!("proactor-{i}"))
            .spawn(move || -> Result<(), ProactorError> {
                let cfg = Config::new(args.response_size, args.max_response_size, args.work_us);
                // The ring is created on its own thread: SINGLE_ISSUER ties
                // it to the creating task.
                let mut p = Proactor::new(&args, listener, wake, stop, cfg)?;
                p.run()
            })
            .context("spawning a proactor thread")?;
        workers.push((handle, wake_writer));
    }

    // Wait for a signal, or for a worker that ended on its own (an error).
    while !wait_term_signal(&sigset, Duration::from_millis(200)) {
        if workers.iter().any(|(h, _)| h.is_finished()) {
            break;
        }
    }
    stop.store(true, Ordering::Release);
    for (_, w) in &workers {
        let one: u64 = 1;
        // SAFETY: 8-byte write of a u64 to an eventfd we own.
        unsafe { libc::write(w.as_raw_fd(), (&raw const one).cast(), 8) };
    }
    let mut first_err = None;
    for (h, _) in workers {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(anyhow::Error::new(e));
            }
            Err(_) => {
                first_err.get_or_insert(anyhow::anyhow!("a proactor thread panicked"));
            }
        }
    }
    match first_err {
        Some(e) => Err(e.context("proactor thread failed")),
        None => {
            info!("proactor stopped");
            Ok(())
        }
    }
}
