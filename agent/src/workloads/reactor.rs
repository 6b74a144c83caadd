//! `iolens workload reactor`: an HTTP/1.1 server built on the Reactor
//! pattern, in the four arrangements production servers use.
//!
//! Roles, named as in the pattern literature:
//! - **Synchronous event demultiplexer**: [`Demultiplexer`] (epoll, poll or
//!   select) blocks until descriptors are ready.
//! - **Reactor**: [`Reactor`], one event loop that owns a demultiplexer and
//!   dispatches each readiness event to its handler.
//! - **Acceptor**: [`Reactor::on_acceptable`], the handler of the listening
//!   socket; it accepts until EAGAIN (edge) or a batch (level) and either
//!   registers the connection with its own reactor or hands it to a
//!   sub-reactor.
//! - **Handler**: [`Handler`], per connection: read → parse → respond, with
//!   pipelining answered in order and back-pressure when the peer reads
//!   slowly.
//!
//! Models (`--model`):
//! - `single`: one reactor thread does everything (Redis).
//! - `pool`: one reactor does the I/O; a pool of `--threads` workers runs
//!   the business step (`--work-us`) and hands results back through a
//!   channel plus an eventfd wake-up (the "Reactor + thread pool" variant).
//! - `multi`: a main reactor accepts and deals connections round-robin to
//!   `--threads` sub-reactors, one loop per thread (Netty, memcached).
//! - `reuseport`: `--threads` independent loops that each accept for
//!   themselves (nginx); `--accept` picks how they share the port.

use std::{
    io::{self, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd, RawFd},
    sync::{
        Arc, LazyLock, Mutex,
        mpsc::{self, Receiver, Sender},
    },
    thread,
    time::Instant,
};

use anyhow::Context;
use clap::ValueEnum;
use tracing::{debug, info, warn};

use super::{
    demux::{self, Demultiplexer, DemuxKind, Event, Interest, Trigger},
    http::{self, Method, Parsed, Route, Status},
    sys::{self, EventFd},
};

/// How the server's threads are arranged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Model {
    /// One event loop thread (Redis).
    Single,
    /// One event loop for I/O plus a worker pool for the per-request work.
    Pool,
    /// A main reactor that accepts and N sub-reactors that serve (Netty, memcached).
    Multi,
    /// N independent loops that each accept (nginx).
    Reuseport,
}

/// How independent loops (`--model reuseport`) share the listening port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcceptMode {
    /// One SO_REUSEPORT listener per loop: the kernel spreads connections.
    Reuseport,
    /// One listener registered in every loop with EPOLLEXCLUSIVE: one loop woken per connection.
    Exclusive,
    /// One listener registered in every loop without it: every loop wakes (thundering herd).
    Shared,
}

/// Flags of `iolens workload reactor`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Thread arrangement (the values name the production servers they mimic).
    #[arg(long, value_enum, default_value_t = Model::Single)]
    pub model: Model,
    /// Worker threads (pool), sub-reactors (multi) or loops (reuseport).
    /// Default: the number of CPUs.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Address to listen on; port 0 picks a free port. The bound address is
    /// printed as the first line of stdout: `listening on ADDR`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Level- or edge-triggered readiness (edge requires --demux epoll).
    #[arg(long, value_enum, default_value_t = Trigger::Level)]
    pub trigger: Trigger,
    /// Port sharing for --model reuseport (default reuseport; exclusive
    /// requires --demux epoll). Not accepted by the other models, whose
    /// single acceptor owns the only listener.
    #[arg(long, value_enum)]
    pub accept: Option<AcceptMode>,
    /// Readiness system call. select refuses (closes and logs) connections
    /// whose fd is ≥ 1024.
    #[arg(long, value_enum, default_value_t = DemuxKind::Epoll)]
    pub demux: DemuxKind,
    /// Simulated business work per request, in microseconds of busy CPU.
    #[arg(long, default_value_t = 0)]
    pub work_us: u64,
    /// Body size of `GET /`. `GET /bytes/N` returns N bytes instead.
    #[arg(long, default_value_t = 128)]
    pub response_size: u64,
    /// Largest N that `/bytes/N` serves; larger is 404.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_response_size: u64,
}

/// Bodies up to this size are copied into the write buffer so head and body
/// leave in one write; larger ones are streamed from [`PATTERN`].
const INLINE_BODY_MAX: u64 = 16 * 1024;
/// Stop parsing pipelined requests while this much output is unsent.
const WRITE_BACKLOG_MAX: usize = 64 * 1024;
/// Read buffer per connection, allocated on first read so idle connections
/// cost no memory. Larger than the head limit so a too-large head is always
/// detected (431) rather than stalling on a full buffer.
const READ_BUF: usize = http::MAX_HEAD_LEN + 8 * 1024;
/// Level-triggered acceptors accept at most this many per wake-up so one
/// busy listener cannot starve connections.
const ACCEPT_BATCH: usize = 64;

/// The body pattern, long enough to stream large bodies with few writes.
static PATTERN: LazyLock<Box<[u8]>> = LazyLock::new(|| {
    let mut b = vec![0u8; 256 * 1024 + http::BODY_PATTERN.len()];
    http::fill_body(0, &mut b);
    b.into_boxed_slice()
});

#[derive(Debug)]
struct Config {
    trigger: Trigger,
    demux: DemuxKind,
    work_us: u64,
    response_size: u64,
    max_response_size: u64,
}

/// Runs the server until SIGINT/SIGTERM.
pub fn run(args: Args) -> anyhow::Result<()> {
    let threads = match args.threads {
        Some(n) => n as usize,
        None => thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if args.trigger == Trigger::Edge && args.demux != DemuxKind::Epoll {
        anyhow::bail!("--trigger edge needs --demux epoll: poll and select only report levels");
    }
    if args.accept.is_some() && args.model != Model::Reuseport {
        anyhow::bail!(
            "--accept only applies to --model reuseport (the other models have one acceptor)"
        );
    }
    let accept = args.accept.unwrap_or(AcceptMode::Reuseport);
    if args.model == Model::Reuseport
        && accept == AcceptMode::Exclusive
        && args.demux != DemuxKind::Epoll
    {
        anyhow::bail!("--accept exclusive needs --demux epoll (EPOLLEXCLUSIVE)");
    }
    let cfg = Arc::new(Config {
        trigger: args.trigger,
        demux: args.demux,
        work_us: args.work_us,
        response_size: args.response_size,
        max_response_size: args.max_response_size,
    });
    match sys::raise_nofile_limit(1 << 20) {
        Ok(n) => debug!(limit = n, "RLIMIT_NOFILE"),
        Err(e) => warn!("cannot raise RLIMIT_NOFILE: {e}"),
    }
    sys::install_stop_handlers().context("installing SIGINT/SIGTERM handlers")?;

    let reuseport = args.model == Model::Reuseport && accept == AcceptMode::Reuseport;
    let first = sys::listen(args.listen, reuseport)?;
    let bound = first.local_addr().context("reading the bound address")?;
    announce(bound)?;
    info!(?args.model, threads, %bound, "reactor server started");

    match args.model {
        Model::Single => Reactor::new(&cfg, Some(Arc::new(first)), false)?.run(),
        Model::Pool => run_pool(&cfg, first, threads),
        Model::Multi => run_multi(&cfg, first, threads),
        Model::Reuseport => run_independent(&cfg, first, bound, threads, accept),
    }
}

fn announce(bound: SocketAddr) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {bound}")
        .and_then(|()| out.flush())
        .context("writing the bound address to stdout")
}

/// Joins loop threads; the first error stops the others.
fn join_all(handles: Vec<thread::JoinHandle<anyhow::Result<()>>>) -> anyhow::Result<()> {
    let mut result = Ok(());
    for h in handles {
        let r = match h.join() {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("an event loop thread panicked")),
        };
        if let Err(e) = r {
            sys::request_stop();
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}

fn spawn_loop(
    name: String,
    f: impl FnOnce() -> anyhow::Result<()> + Send + 'static,
) -> anyhow::Result<thread::JoinHandle<anyhow::Result<()>>> {
    thread::Builder::new()
        .name(name)
        .spawn(move || {
            let r = f();
            if r.is_err() {
                sys::request_stop();
            }
            r
        })
        .context("spawning an event loop thread")
}

fn run_pool(cfg: &Arc<Config>, listener: TcpListener, threads: usize) -> anyhow::Result<()> {
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::channel::<Job>();
    let wake = Arc::new(EventFd::new().context("creating the pool wake-up eventfd")?);
    let mut workers = Vec::with_capacity(threads);
    for i in 0..threads {
        let (rx, tx, wake, cfg) = (job_rx.clone(), done_tx.clone(), wake.clone(), cfg.clone());
        workers.push(spawn_loop(format!("worker-{i}"), move || {
            worker(&cfg, &rx, &tx, &wake);
            Ok(())
        })?);
    }
    drop(done_tx);
    let mut reactor = Reactor::new(cfg, Some(Arc::new(listener)), false)?;
    reactor.set_pool(PoolLink {
        jobs: job_tx,
        done: done_rx,
        wake,
    })?;
    let r = reactor.run();
    // Dropping the reactor drops the job sender, which ends the workers.
    drop(reactor);
    r.and(join_all(workers))
}

/// A worker of `--model pool`: the business step off the I/O thread.
fn worker(cfg: &Config, jobs: &Mutex<Receiver<Job>>, done: &Sender<Job>, wake: &EventFd) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        sys::spin_work(cfg.work_us);
        if done.send(job).is_err() {
            return;
        }
        wake.wake();
    }
}

fn run_multi(cfg: &Arc<Config>, listener: TcpListener, threads: usize) -> anyhow::Result<()> {
    let mut handles = Vec::with_capacity(threads);
    let mut targets = Vec::with_capacity(threads);
    for i in 0..threads {
        let (tx, rx) = mpsc::channel::<TcpStream>();
        let wake = Arc::new(EventFd::new().context("creating a sub-reactor wake-up eventfd")?);
        let mut sub = Reactor::new(cfg, None, false)?;
        sub.set_inbox(rx, wake.clone())?;
        targets.push((tx, wake));
        handles.push(spawn_loop(format!("sub-reactor-{i}"), move || sub.run())?);
    }
    let mut main = Reactor::new(cfg, Some(Arc::new(listener)), false)?;
    main.handoff = targets;
    let r = main.run();
    sys::request_stop();
    drop(main);
    r.and(join_all(handles))
}

fn run_independent(
    cfg: &Arc<Config>,
    first: TcpListener,
    bound: SocketAddr,
    threads: usize,
    accept: AcceptMode,
) -> anyhow::Result<()> {
    let first = Arc::new(first);
    let mut handles = Vec::with_capacity(threads);
    for i in 0..threads {
        let listener = match accept {
            AcceptMode::Reuseport if i > 0 => Arc::new(sys::listen(bound, true)?),
            _ => first.clone(),
        };
        let exclusive = accept == AcceptMode::Exclusive;
        let mut r = Reactor::new(cfg, Some(listener), exclusive)?;
        handles.push(spawn_loop(format!("loop-{i}"), move || r.run())?);
    }
    join_all(handles)
}

/// Work sent to the pool, and sent back unchanged once the business step is
/// done. The reactor already routed the request (the path borrows its read
/// buffer), so a job is a few plain values and sending one copies no request
/// bytes. The fd and id route it back to its connection (the id guards
/// against the fd having been reused meanwhile).
struct Job {
    fd: RawFd,
    conn_id: u64,
    route: Route,
    head_only: bool,
    keep_alive: bool,
}

struct PoolLink {
    jobs: Sender<Job>,
    done: Receiver<Job>,
    wake: Arc<EventFd>,
}

/// One event loop: owns the demultiplexer, the handlers of its connections
/// and optionally the acceptor, a hand-off inbox or a pool link.
pub struct Reactor {
    cfg: Arc<Config>,
    demux: Box<dyn Demultiplexer>,
    edge: bool,
    /// Handlers indexed by fd.
    conns: Vec<Option<Handler>>,
    listener: Option<Arc<TcpListener>>,
    /// multi: sub-reactors that accepted connections are dealt to.
    handoff: Vec<(Sender<TcpStream>, Arc<EventFd>)>,
    next_target: usize,
    /// multi sub-reactor: connections from the main reactor.
    inbox: Option<(Receiver<TcpStream>, Arc<EventFd>)>,
    pool: Option<PoolLink>,
    next_id: u64,
    emfile_logged: Option<Instant>,
}

impl Reactor {
    fn new(
        cfg: &Arc<Config>,
        listener: Option<Arc<TcpListener>>,
        exclusive: bool,
    ) -> anyhow::Result<Self> {
        let mut demux = demux::new(cfg.demux, cfg.trigger).context("creating the demultiplexer")?;
        if let Some(l) = &listener {
            let interest = Interest {
                exclusive,
                ..Interest::READ
            };
            demux
                .register(l.as_raw_fd(), interest)
                .context("registering the listening socket")?;
        }
        Ok(Self {
            cfg: cfg.clone(),
            demux,
            edge: cfg.trigger == Trigger::Edge,
            conns: Vec::new(),
            listener,
            handoff: Vec::new(),
            next_target: 0,
            inbox: None,
            pool: None,
            next_id: 0,
            emfile_logged: None,
        })
    }

    fn set_inbox(&mut self, rx: Receiver<TcpStream>, wake: Arc<EventFd>) -> anyhow::Result<()> {
        self.demux
            .register(wake.fd(), Interest::READ)
            .context("registering the hand-off eventfd")?;
        self.inbox = Some((rx, wake));
        Ok(())
    }

    fn set_pool(&mut self, link: PoolLink) -> anyhow::Result<()> {
        self.demux
            .register(link.wake.fd(), Interest::READ)
            .context("registering the pool eventfd")?;
        self.pool = Some(link);
        Ok(())
    }

    /// The event loop: wait, dispatch, repeat until shutdown.
    pub fn run(&mut self) -> anyhow::Result<()> {
        let mut events = Vec::with_capacity(1024);
        while !sys::stop_requested() {
            self.demux
                .wait(&mut events, sys::STOP_POLL)
                .context("waiting for readiness events")?;
            for ev in &events {
                self.dispatch(*ev);
            }
        }
        Ok(())
    }

    fn dispatch(&mut self, ev: Event) {
        if self
            .listener
            .as_ref()
            .is_some_and(|l| l.as_raw_fd() == ev.fd)
        {
            self.on_acceptable();
        } else if self.inbox.as_ref().is_some_and(|(_, w)| w.fd() == ev.fd) {
            self.on_handoff();
        } else if self.pool.as_ref().is_some_and(|p| p.wake.fd() == ev.fd) {
            self.on_pool_done();
        } else {
            self.drive(ev.fd);
        }
    }

    /// The Acceptor.
    fn on_acceptable(&mut self) {
        let Some(listener) = self.listener.clone() else {
            return;
        };
        let mut n = 0;
        loop {
            if !self.edge && n >= ACCEPT_BATCH {
                return;
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    n += 1;
                    if let Err(e) = stream.set_nonblocking(true) {
                        warn!("cannot make an accepted socket non-blocking: {e}; closing it");
                        continue;
                    }
                    let _ = sys::set_nodelay(stream.as_raw_fd());
                    if self.handoff.is_empty() {
                        self.add_conn(stream);
                    } else {
                        let (tx, wake) = &self.handoff[self.next_target % self.handoff.len()];
                        self.next_target = self.next_target.wrapping_add(1);
                        if tx.send(stream).is_ok() {
                            wake.wake();
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Err(e) => {
                    // EMFILE and friends: the connection waits in the backlog;
                    // log at most once a second so a level-triggered retry
                    // loop cannot flood the log.
                    if self
                        .emfile_logged
                        .is_none_or(|t| t.elapsed().as_secs() >= 1)
                    {
                        warn!("accept failed: {e}; raise the open-files limit (ulimit -n)");
                        self.emfile_logged = Some(Instant::now());
                    }
                    return;
                }
            }
        }
    }

    fn on_handoff(&mut self) {
        let Some((_, wake)) = &self.inbox else {
            return;
        };
        wake.drain();
        while let Some(s) = self.inbox.as_ref().and_then(|(rx, _)| rx.try_recv().ok()) {
            self.add_conn(s);
        }
    }

    fn on_pool_done(&mut self) {
        let Some(pool) = &self.pool else { return };
        pool.wake.drain();
        // One at a time: drive() needs `self` mutably.
        while let Some(d) = self.pool.as_ref().and_then(|p| p.done.try_recv().ok()) {
            let Some(Some(h)) = self.conns.get_mut(d.fd as usize) else {
                continue;
            };
            if h.id != d.conn_id {
                continue;
            }
            h.awaiting_worker = false;
            h.respond(d.route, d.head_only, d.keep_alive);
            self.drive(d.fd);
        }
    }

    fn add_conn(&mut self, stream: TcpStream) {
        let fd = stream.as_raw_fd();
        // Edge: register for both once; EPOLLOUT only fires on transitions,
        // so leaving it on costs nothing and avoids epoll_ctl per write.
        let interest = if self.edge {
            Interest::READ_WRITE
        } else {
            Interest::READ
        };
        if let Err(e) = self.demux.register(fd, interest) {
            warn!("closing a new connection: {e}");
            return;
        }
        let i = fd as usize;
        if self.conns.len() <= i {
            self.conns.resize_with(i + 1, || None);
        }
        self.next_id += 1;
        self.conns[i] = Some(Handler::new(stream, self.next_id, interest));
        if self.edge {
            // Bytes may have arrived before registration; the ADD reports
            // current readiness, but draining now is cheap and certain.
            self.drive(fd);
        }
    }

    /// Runs a connection's handler and applies its verdict.
    fn drive(&mut self, fd: RawFd) {
        let Some(Some(h)) = self.conns.get_mut(fd as usize) else {
            return;
        };
        let pool = self.pool.as_ref().map(|p| &p.jobs);
        let verdict = h.on_ready(&self.cfg, self.edge, pool);
        match verdict {
            Verdict::Close => self.close(fd),
            Verdict::Wait {
                want_read,
                want_write,
            } => {
                let interest = Interest {
                    read: want_read,
                    write: want_write,
                    exclusive: false,
                };
                if !self.edge && h.registered != interest {
                    match self.demux.modify(fd, interest) {
                        Ok(()) => h.registered = interest,
                        Err(e) => {
                            warn!("cannot change interest on fd {fd}: {e}; closing");
                            self.close(fd);
                        }
                    }
                }
            }
        }
    }

    fn close(&mut self, fd: RawFd) {
        if let Some(slot) = self.conns.get_mut(fd as usize)
            && let Some(h) = slot.take()
        {
            // Deregister before the fd is closed (and possibly reused).
            let _ = self.demux.deregister(fd);
            drop(h);
        }
    }
}

enum Verdict {
    Close,
    Wait { want_read: bool, want_write: bool },
}

/// The per-connection handler: read → parse → respond.
struct Handler {
    stream: TcpStream,
    id: u64,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    wbuf: Vec<u8>,
    wpos: usize,
    /// Large body still to stream from [`PATTERN`] after `wbuf`.
    body_left: u64,
    body_off: u64,
    /// Close once everything queued is written.
    closing: bool,
    peer_closed: bool,
    /// The buffered bytes end in an incomplete request: parsing again is
    /// pointless until more arrive.
    need_input: bool,
    awaiting_worker: bool,
    registered: Interest,
}

impl Handler {
    fn new(stream: TcpStream, id: u64, registered: Interest) -> Self {
        Self {
            stream,
            id,
            rbuf: Vec::new(),
            rstart: 0,
            rend: 0,
            wbuf: Vec::new(),
            wpos: 0,
            body_left: 0,
            body_off: 0,
            closing: false,
            peer_closed: false,
            need_input: true,
            awaiting_worker: false,
            registered,
        }
    }

    fn on_ready(&mut self, cfg: &Config, edge: bool, pool: Option<&Sender<Job>>) -> Verdict {
        // Level-triggered: one read per event, the demultiplexer reports
        // again if more is buffered. Edge-triggered: read until EAGAIN,
        // because no further event will come for data already queued.
        let mut reads_left = if edge { usize::MAX } else { 1 };
        loop {
            self.process(cfg, pool);
            match self.flush() {
                Ok(true) => {}
                Ok(false) => {
                    return Verdict::Wait {
                        want_read: true,
                        want_write: true,
                    };
                }
                Err(e) => {
                    debug!("write failed: {e}");
                    return Verdict::Close;
                }
            }
            if self.closing {
                self.linger();
                return Verdict::Close;
            }
            if self.awaiting_worker {
                // Level-triggered: stop watching reads until the worker
                // answers, or buffered input (or EOF) would spin the loop.
                return Verdict::Wait {
                    want_read: false,
                    want_write: false,
                };
            }
            if !self.need_input && self.rstart < self.rend {
                // Output was flushed; requests held back by back-pressure
                // are still buffered, so parse again before reading.
                continue;
            }
            if self.peer_closed {
                return Verdict::Close;
            }
            if reads_left == 0 {
                return Verdict::Wait {
                    want_read: true,
                    want_write: false,
                };
            }
            reads_left -= 1;
            match self.read() {
                Ok(0) => self.peer_closed = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Verdict::Wait {
                        want_read: true,
                        want_write: false,
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("read failed: {e}");
                    return Verdict::Close;
                }
            }
        }
    }

    /// Half-closes and discards input that is already queued, so that
    /// close(2) sends FIN rather than RST: a reset would make the peer drop
    /// the response it has not read yet (e.g. a 413 whose body is still
    /// arriving). Bounded: input arriving later can still cause a reset.
    fn linger(&mut self) {
        use std::io::Read;
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        let mut scratch = [0u8; 16 * 1024];
        for _ in 0..16 {
            match (&self.stream).read(&mut scratch) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }

    fn read(&mut self) -> io::Result<usize> {
        if self.rbuf.is_empty() {
            self.rbuf = vec![0; READ_BUF];
        }
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        } else if self.rend == self.rbuf.len() {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
        }
        use std::io::Read;
        let n = (&self.stream).read(&mut self.rbuf[self.rend..])?;
        self.rend += n;
        self.need_input = false;
        Ok(n)
    }

    /// Answers complete buffered requests in order, stopping at a partial
    /// one, an error, a pool hand-off or write back-pressure.
    fn process(&mut self, cfg: &Config, pool: Option<&Sender<Job>>) {
        while !self.closing
            && !self.awaiting_worker
            && self.body_left == 0
            && self.wbuf.len() - self.wpos < WRITE_BACKLOG_MAX
        {
            let (route, head_only, keep_alive, consumed) =
                match http::parse_request(&self.rbuf[self.rstart..self.rend]) {
                    Ok(Parsed::Partial) => {
                        self.need_input = true;
                        break;
                    }
                    Ok(Parsed::Complete(req, n)) => {
                        let head_only = req.method == Method::Head;
                        if let Some(jobs) = pool {
                            let job = Job {
                                fd: self.stream.as_raw_fd(),
                                conn_id: self.id,
                                route: http::route(
                                    req.path,
                                    cfg.response_size,
                                    cfg.max_response_size,
                                ),
                                head_only,
                                keep_alive: req.keep_alive,
                            };
                            self.rstart += n;
                            if jobs.send(job).is_err() {
                                self.closing = true;
                            } else {
                                self.awaiting_worker = true;
                            }
                            break;
                        }
                        sys::spin_work(cfg.work_us);
                        let route = http::route(req.path, cfg.response_size, cfg.max_response_size);
                        (route, head_only, req.keep_alive, n)
                    }
                    Err(e) => {
                        debug!("rejecting request: {e}");
                        http::write_error(&mut self.wbuf, &e);
                        self.closing = true;
                        break;
                    }
                };
            self.rstart += consumed;
            self.respond(route, head_only, keep_alive);
        }
    }

    fn respond(&mut self, route: Route, head_only: bool, keep_alive: bool) {
        match route {
            Route::Bytes(n) => {
                http::write_head(&mut self.wbuf, Status::Ok, n, keep_alive);
                if !head_only {
                    if n <= INLINE_BODY_MAX {
                        let start = self.wbuf.len();
                        self.wbuf.resize(start + n as usize, 0);
                        http::fill_body(0, &mut self.wbuf[start..]);
                    } else {
                        self.body_left = n;
                        self.body_off = 0;
                    }
                }
            }
            Route::NotFound => {
                const BODY: &[u8] = b"404 Not Found\n";
                http::write_head(
                    &mut self.wbuf,
                    Status::NotFound,
                    BODY.len() as u64,
                    keep_alive,
                );
                if !head_only {
                    self.wbuf.extend_from_slice(BODY);
                }
            }
        }
        if !keep_alive {
            self.closing = true;
        }
    }

    /// Writes queued output with one writev of head bytes plus streamed body.
    /// `Ok(true)`: all written; `Ok(false)`: the socket is full.
    fn flush(&mut self) -> io::Result<bool> {
        loop {
            let head = &self.wbuf[self.wpos..];
            if head.is_empty() && self.body_left == 0 {
                self.wbuf.clear();
                self.wpos = 0;
                return Ok(true);
            }
            let pat_start = (self.body_off % http::BODY_PATTERN.len() as u64) as usize;
            let pat_len = (PATTERN.len() - pat_start).min(self.body_left as usize);
            let body = &PATTERN[pat_start..pat_start + pat_len];
            let iov = [
                libc::iovec {
                    iov_base: head.as_ptr() as *mut libc::c_void,
                    iov_len: head.len(),
                },
                libc::iovec {
                    iov_base: body.as_ptr() as *mut libc::c_void,
                    iov_len: body.len(),
                },
            ];
            // SAFETY: both iovecs point into live buffers of the given
            // lengths that are not mutated during the call.
            let n = unsafe { libc::writev(self.stream.as_raw_fd(), iov.as_ptr(), 2) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(false),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                }
            }
            let mut n = n as usize;
            let from_head = n.min(head.len());
            self.wpos += from_head;
            n -= from_head;
            self.body_left -= n as u64;
            self.body_off += n as u64;
        }
    }
}
