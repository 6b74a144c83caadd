//! `iolens workload filesend`: serves files under a root over HTTP/1.1 with a
//! chosen data path, to compare CPU per byte of read/write, mmap/write,
//! sendfile, splice and O_DIRECT reads through io_uring or Linux native
//! AIO.
//!
//! Architecture: one blocking thread per connection (bounded by
//! `--max-conns`). The data paths all move large chunks with one or two
//! syscalls per chunk, so the thread model adds nothing per byte; it keeps
//! each mode's loop plain and makes the per-byte cost the one measured.

mod body;
mod path;

use std::{
    fs::File,
    io::{self, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::Context;
use tracing::{debug, info, warn};

use self::body::{DirectReader, PipePool};
use super::proactor::{block_term_signals, wait_term_signal};
use crate::workloads::http;

/// How file bytes reach the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// read(2) into a user buffer, then write(2): two copies per byte.
    ReadWrite,
    /// mmap(2) the file, write(2) from the mapping: one copy, page faults.
    MmapWrite,
    /// sendfile(2): zero copy from the page cache.
    Sendfile,
    /// splice(2) file → pipe → socket, pipes from a bounded pool.
    Splice,
    /// O_DIRECT reads through io_uring into aligned buffers, then send:
    /// bypasses (and does not fill) the page cache.
    DirectAio,
    /// The same O_DIRECT reads through Linux native AIO (io_submit and
    /// io_getevents), as nginx's `aio on` on Linux.
    DirectNativeAio,
    /// sendfile below --directio-threshold, direct-aio at or above it (as
    /// nginx's `sendfile on; aio on; directio SIZE;`).
    Auto,
}

/// Options for `iolens workload filesend`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port). The first stdout line
    /// is `listening on ADDR` with the actual address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory whose files are served (`GET /a/b` → ROOT/a/b). Paths that
    /// leave it, including through symlinks, are refused with 403.
    #[arg(long)]
    pub root: PathBuf,
    /// Data path from file to socket.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// In `auto` mode, files of at least this many bytes use direct-aio.
    #[arg(long, default_value_t = 1 << 30)]
    pub directio_threshold: u64,
    /// Buffer size in bytes for read-write and for each of direct-aio's two
    /// buffers (rounded up to 4096 for direct-aio).
    #[arg(long, default_value_t = 1 << 20)]
    pub chunk_size: usize,
    /// Most pipes the splice mode keeps (shared by all connections; a
    /// response waits when all are busy).
    #[arg(long, default_value_t = 32)]
    pub pipes: usize,
    /// Requested pipe capacity in bytes (F_SETPIPE_SZ; capped by
    /// /proc/sys/fs/pipe-max-size, else the default 64 KiB stays). The
    /// defaults (32 × 1 MiB) stay under fs.pipe-user-pages-soft (64 MiB).
    #[arg(long, default_value_t = 1 << 20)]
    pub pipe_size: usize,
    /// Most concurrent connections; more get 503 and are closed.
    #[arg(long, default_value_t = 1024)]
    pub max_conns: usize,
}

struct Shared {
    root: PathBuf,
    mode: Mode,
    threshold: u64,
    chunk: usize,
    pipes: PipePool,
}

/// Runs the server until SIGINT/SIGTERM.
pub fn run(args: Args) -> anyhow::Result<()> {
    let sigset = block_term_signals().context("blocking SIGINT/SIGTERM for the signal waiter")?;
    let root = args.root.canonicalize().with_context(|| {
        format!(
            "cannot open --root {}: give an existing directory",
            args.root.display()
        )
    })?;
    anyhow::ensure!(
        root.is_dir(),
        "--root {} is not a directory",
        root.display()
    );
    let listener = TcpListener::bind(args.listen).with_context(|| {
        format!(
            "cannot listen on {}: choose another --listen address",
            args.listen
        )
    })?;
    let addr = listener
        .local_addr()
        .context("reading the listener's address")?;
    println!("listening on {addr}");
    info!(%addr, root = %root.display(), mode = ?args.mode, "filesend listening");

    let shared = Arc::new(Shared {
        root,
        mode: args.mode,
        threshold: args.directio_threshold,
        chunk: args.chunk_size.max(4096),
        pipes: PipePool::new(args.pipes, args.pipe_size),
    });
    let max = args.max_conns.max(1);
    let active = Arc::new(AtomicUsize::new(0));
    let acceptor = thread::Builder::new()
        .name("filesend-accept".into())
        .spawn(move || accept_loop(&listener, &shared, &active, max))
        .context("spawning the accept thread")?;
    while !wait_term_signal(&sigset, Duration::from_millis(200)) {
        if acceptor.is_finished() {
            return match acceptor.join() {
                Ok(r) => r.context("accept loop failed"),
                Err(_) => anyhow::bail!("accept thread panicked"),
            };
        }
    }
    // Connection threads are detached; the process exit ends them.
    info!("filesend stopped");
    Ok(())
}

fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    active: &Arc<AtomicUsize>,
    max: usize,
) -> io::Result<()> {
    loop {
        let (mut sock, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)
                ) =>
            {
                warn!(error = %e, "accept failed; retrying in 10 ms");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    || e.kind() == io::ErrorKind::ConnectionAborted =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        if active.fetch_add(1, Ordering::AcqRel) >= max {
            active.fetch_sub(1, Ordering::AcqRel);
            let mut out = Vec::new();
            http::write_head(&mut out, http::Status::ServiceUnavailable, 0, false);
            let _ = sock.write_all(&out);
            continue;
        }
        let shared = Arc::clone(shared);
        let active2 = Arc::clone(active);
        let spawned = thread::Builder::new().stack_size(256 << 10).spawn(move || {
            if let Err(e) = serve(sock, &shared) {
                debug!(%peer, error = %e, "connection ended with an error");
            }
            active2.fetch_sub(1, Ordering::AcqRel);
        });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::AcqRel);
            warn!(error = %e, "cannot spawn a connection thread");
        }
    }
}

/// 403 is not among the shared statuses (only the file sender refuses
/// paths), so its head is written here in the same shape.
fn forbidden(keep_alive: bool) -> Vec<u8> {
    let conn = if keep_alive { "keep-alive" } else { "close" };
    format!("HTTP/1.1 403 Forbidden\r\nServer: iolens\r\nContent-Length: 0\r\nConnection: {conn}\r\n\r\n")
        .into_bytes()
}

fn empty_response(status: http::Status, keep_alive: bool) -> Vec<u8> {
    let mut out = Vec::new();
    http::write_head(&mut out, status, 0, keep_alive);
    out
}

/// Lingering close after an error response: send FIN, then drain input
/// until the peer closes (bounded in time and bytes). Closing with unread
/// input would send RST, which can destroy the response before the client
/// reads it.
fn linger(sock: &mut TcpStream) {
    if sock.shutdown(std::net::Shutdown::Write).is_err()
        || sock.set_read_timeout(Some(Duration::from_secs(2))).is_err()
    {
        return;
    }
    let mut sink = [0u8; 4096];
    let mut budget = 1usize << 20;
    while budget > 0 {
        match sock.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => budget = budget.saturating_sub(n),
        }
    }
}

/// How long a connection may make no progress before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Per-connection reusable state.
struct ConnBufs {
    scratch: Vec<u8>,
    direct: Option<DirectReader>,
}

/// One connection: parse each request, answer it, until close.
fn serve(mut sock: TcpStream, shared: &Shared) -> io::Result<()> {
    // A thread per connection must not be held forever by a client that
    // went silent (idle keep-alive or a stalled receiver).
    sock.set_read_timeout(Some(IDLE_TIMEOUT))?;
    sock.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let mut inbuf: Vec<u8> = Vec::with_capacity(4096);
    let mut bufs = ConnBufs {
        scratch: Vec::new(),
        direct: None,
    };
    let mut tmp = [0u8; 4096];
    loop {
        match http::parse_request(&inbuf) {
            Ok(http::Parsed::Complete(req, consumed)) => {
                let keep = answer(&mut sock, shared, &req, &mut bufs)?;
                inbuf.drain(..consumed);
                if !keep {
                    return Ok(());
                }
            }
            Ok(http::Parsed::Partial) => {
                let n = sock.read(&mut tmp)?;
                if n == 0 {
                    return Ok(());
                }
                inbuf.extend_from_slice(&tmp[..n]);
            }
            Err(e) => {
                let mut out = Vec::new();
                http::write_error(&mut out, &e);
                sock.write_all(&out)?;
                linger(&mut sock);
                return Ok(());
            }
        }
    }
}

/// Answers one request; returns whether the connection stays open.
fn answer(
    sock: &mut TcpStream,
    shared: &Shared,
    req: &http::Request<'_>,
    bufs: &mut ConnBufs,
) -> io::Result<bool> {
    let keep = req.keep_alive;
    let head_only = req.method == http::Method::Head;
    let resolved = match path::resolve(&shared.root, req.path) {
        Ok(p) => p,
        Err(path::Refused::Forbidden) => {
            sock.write_all(&forbidden(keep))?;
            return Ok(keep);
        }
        Err(path::Refused::NotFound) => {
            sock.write_all(&empty_response(http::Status::NotFound, keep))?;
            return Ok(keep);
        }
    };
    let mut mode = shared.mode;
    let size = match std::fs::metadata(&resolved) {
        Ok(m) => m.len(),
        Err(_) => {
            sock.write_all(&empty_response(http::Status::NotFound, keep))?;
            return Ok(keep);
        }
    };
    if mode == Mode::Auto {
        mode = if size >= shared.threshold {
            Mode::DirectAio
        } else {
            Mode::Sendfile
        };
    }
    let opened = if matches!(mode, Mode::DirectAio | Mode::DirectNativeAio) {
        body::open_direct(&resolved).map(|(f, direct)| {
            if !direct {
                warn!(path = %resolved.display(), "filesystem refuses O_DIRECT; reading through the page cache");
            }
            f
        })
    } else {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&resolved)
    };
    let file: File = match opened {
        Ok(f) => f,
        Err(_) => {
            sock.write_all(&empty_response(http::Status::NotFound, keep))?;
            return Ok(keep);
        }
    };
    let (status, off, len) = match path::range(req.range, size) {
        path::Range::Whole => (http::Status::Ok, 0, size),
        path::Range::Part(a, b) => (http::Status::PartialContent, a, b - a + 1),
        path::Range::Unsatisfiable => {
            let mut out = Vec::new();
            let cr = format!("bytes */{size}");
            http::write_head_with(
                &mut out,
                http::Status::RangeNotSatisfiable,
                0,
                keep,
                &[("Content-Range", cr.as_bytes())],
            );
            sock.write_all(&out)?;
            return Ok(keep);
        }
    };
    let mut head = Vec::with_capacity(256);
    // Content-Range only on 206: a whole-file 200 formats and allocates
    // nothing for it.
    let partial = status == http::Status::PartialContent;
    let cr = if partial {
        format!("bytes {off}-{}/{size}", (off + len).saturating_sub(1))
    } else {
        String::new()
    };
    let extra: [(&str, &[u8]); 3] = [
        ("Content-Type", b"application/octet-stream"),
        ("Accept-Ranges", b"bytes"),
        ("Content-Range", cr.as_bytes()),
    ];
    let extra = if partial { &extra[..] } else { &extra[..2] };
    http::write_head_with(&mut head, status, len, keep, extra);
    let body_follows = len > 0 && !head_only;
    send_head(sock, &head, body_follows)?;
    if !body_follows {
        return Ok(keep);
    }
    match mode {
        Mode::ReadWrite => {
            body::read_write(sock, &file, off, len, &mut bufs.scratch, shared.chunk)?
        }
        Mode::MmapWrite => body::mmap_write(sock, &file, off, len)?,
        Mode::Sendfile | Mode::Auto => body::sendfile(sock, &file, off, len)?,
        Mode::Splice => body::splice_send(sock, &file, off, len, &shared.pipes)?,
        Mode::DirectAio | Mode::DirectNativeAio => {
            let reader = match &mut bufs.direct {
                Some(r) => r,
                None => bufs.direct.insert(DirectReader::new(
                    shared.chunk,
                    mode == Mode::DirectNativeAio,
                )?),
            };
            reader.send(sock, &file, off, len)?;
        }
    }
    Ok(keep)
}

/// Sends the header with MSG_MORE when a body follows, so header and first
/// body bytes share a segment without an extra copy into one buffer.
fn send_head(sock: &TcpStream, head: &[u8], more: bool) -> io::Result<()> {
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    let mut sent = 0;
    while sent < head.len() {
        // SAFETY: valid socket; the slice outlives the call.
        let n = unsafe {
            libc::send(
                sock.as_raw_fd(),
                head[sent..].as_ptr().cast(),
                head.len() - sent,
                flags,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        sent += n as usize;
    }
    Ok(())
}
