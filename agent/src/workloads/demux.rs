//! The synchronous event demultiplexer of the Reactor pattern: blocks until
//! some registered descriptors are ready and reports which. Three
//! implementations sit behind one small trait so the same reactor code can be
//! measured on `epoll`, `poll` and `select`.
//!
//! Tokens are the file descriptors themselves: the reactor indexes its
//! handlers by fd, so no extra map is needed.

use std::{io, os::fd::RawFd, time::Duration};

use clap::ValueEnum;

/// Which system call waits for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemuxKind {
    /// epoll(7): O(ready) wake-ups, level or edge triggered.
    Epoll,
    /// poll(2): O(registered) per wait, level triggered only.
    Poll,
    /// select(2): like poll, and limited to fds below FD_SETSIZE (1024).
    Select,
}

/// Readiness notification mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Trigger {
    /// Reported while the condition holds.
    Level,
    /// Reported on changes only (EPOLLET): handlers must drain to EAGAIN.
    Edge,
}

/// What a registration waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
    /// EPOLLEXCLUSIVE: wake only one of the loops sharing this fd.
    pub exclusive: bool,
}

impl Interest {
    pub const READ: Interest = Interest {
        read: true,
        write: false,
        exclusive: false,
    };
    pub const READ_WRITE: Interest = Interest {
        read: true,
        write: true,
        exclusive: false,
    };
}

/// One readiness report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub fd: RawFd,
    pub readable: bool,
    pub writable: bool,
    /// Error or hang-up: the handler should read to find out what happened.
    pub hangup: bool,
}

/// The synchronous event demultiplexer.
pub trait Demultiplexer: Send {
    fn register(&mut self, fd: RawFd, interest: Interest) -> io::Result<()>;
    fn modify(&mut self, fd: RawFd, interest: Interest) -> io::Result<()>;
    fn deregister(&mut self, fd: RawFd) -> io::Result<()>;
    /// Blocks up to `timeout`, replacing `events` with the ready set. An
    /// interrupted wait (EINTR) returns no events.
    fn wait(&mut self, events: &mut Vec<Event>, timeout: Duration) -> io::Result<()>;
}

/// Creates a demultiplexer; `Edge` is only meaningful for epoll.
pub fn new(kind: DemuxKind, trigger: Trigger) -> io::Result<Box<dyn Demultiplexer>> {
    Ok(match kind {
        DemuxKind::Epoll => Box::new(Epoll::new(trigger)?),
        DemuxKind::Poll => Box::new(Poll::default()),
        DemuxKind::Select => Box::new(Select::default()),
    })
}

fn timeout_ms(t: Duration) -> libc::c_int {
    t.as_millis().min(i32::MAX as u128) as libc::c_int
}

/// The result of a wait call (epoll_wait, poll, select): how many
/// descriptors are ready, with an interrupted wait (EINTR) counted as none.
fn ready_count(n: libc::c_int) -> io::Result<usize> {
    if n >= 0 {
        return Ok(n as usize);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::Interrupted {
        Ok(0)
    } else {
        Err(e)
    }
}

/// epoll(7).
#[derive(Debug)]
pub struct Epoll {
    epfd: std::os::fd::OwnedFd,
    edge: bool,
    buf: Vec<libc::epoll_event>,
}

impl Epoll {
    pub fn new(trigger: Trigger) -> io::Result<Self> {
        // SAFETY: plain epoll_create1 call; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: `fd` is a fresh descriptor owned by no one else.
            epfd: unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) },
            edge: trigger == Trigger::Edge,
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
        })
    }

    fn ctl(&mut self, op: libc::c_int, fd: RawFd, interest: Interest) -> io::Result<()> {
        // EPOLLEXCLUSIVE rejects EPOLLRDHUP (EINVAL), and a handler that
        // paused reading must not be woken by the peer's FIN either.
        let mut flags = if interest.exclusive || !interest.read {
            0
        } else {
            libc::EPOLLRDHUP as u32
        };
        if interest.read {
            flags |= libc::EPOLLIN as u32;
        }
        if interest.write {
            flags |= libc::EPOLLOUT as u32;
        }
        if interest.exclusive {
            flags |= libc::EPOLLEXCLUSIVE as u32;
        }
        if self.edge {
            flags |= libc::EPOLLET as u32;
        }
        let mut ev = libc::epoll_event {
            events: flags,
            u64: fd as u64,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        if unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Demultiplexer for Epoll {
    fn register(&mut self, fd: RawFd, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, interest)
    }

    fn modify(&mut self, fd: RawFd, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, interest)
    }

    fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, Interest::READ)
    }

    fn wait(&mut self, events: &mut Vec<Event>, timeout: Duration) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        events.clear();
        // SAFETY: `buf` has room for `buf.len()` events and outlives the call.
        let n = ready_count(unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.buf.as_mut_ptr(),
                self.buf.len() as libc::c_int,
                timeout_ms(timeout),
            )
        })?;
        let err = (libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) as u32;
        for ev in &self.buf[..n] {
            let flags = ev.events;
            events.push(Event {
                fd: ev.u64 as RawFd,
                readable: flags & libc::EPOLLIN as u32 != 0,
                writable: flags & libc::EPOLLOUT as u32 != 0,
                hangup: flags & err != 0,
            });
        }
        Ok(())
    }
}

/// poll(2): keeps a dense pollfd array and an fd → slot index.
#[derive(Debug, Default)]
pub struct Poll {
    fds: Vec<libc::pollfd>,
    slot: Vec<usize>,
}

const NO_SLOT: usize = usize::MAX;

fn poll_events(interest: Interest) -> i16 {
    let mut e = 0;
    if interest.read {
        e |= libc::POLLIN;
    }
    if interest.write {
        e |= libc::POLLOUT;
    }
    e
}

impl Poll {
    fn slot_of(&self, fd: RawFd) -> Option<usize> {
        self.slot
            .get(fd as usize)
            .copied()
            .filter(|&s| s != NO_SLOT)
    }
}

impl Demultiplexer for Poll {
    fn register(&mut self, fd: RawFd, interest: Interest) -> io::Result<()> {
        if fd < 0 || self.slot_of(fd).is_some() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        let i = fd as usize;
        if self.slot.len() <= i {
            self.slot.resize(i + 1, NO_SLOT);
        }
        self.slot[i] = self.fds.len();
        self.fds.push(libc::pollfd {
            fd,
            events: poll_events(interest),
            revents: 0,
        });
        Ok(())
    }

    fn modify(&mut self, fd: RawFd, interest: Interest) -> io::Result<()> {
        let s = self
            .slot_of(fd)
            .ok_or(io::Error::from_raw_os_error(libc::ENOENT))?;
        self.fds[s].events = poll_events(interest);
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        let s = self
            .slot_of(fd)
            .ok_or(io::Error::from_raw_os_error(libc::ENOENT))?;
        self.fds.swap_remove(s);
        if let Some(moved) = self.fds.get(s) {
            self.slot[moved.fd as usize] = s;
        }
        self.slot[fd as usize] = NO_SLOT;
        Ok(())
    }

    fn wait(&mut self, events: &mut Vec<Event>, timeout: Duration) -> io::Result<()> {
        events.clear();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds.
        let n = ready_count(unsafe {
            libc::poll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                timeout_ms(timeout),
            )
        })?;
        // poll returns how many entries have revents set: stop scanning
        // once all of them are found (none on a timeout or EINTR).
        for p in self.fds.iter().filter(|p| p.revents != 0).take(n) {
            events.push(Event {
                fd: p.fd,
                readable: p.revents & libc::POLLIN != 0,
                writable: p.revents & libc::POLLOUT != 0,
                hangup: p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0,
            });
        }
        Ok(())
    }
}

/// select(2). Registering an fd ≥ FD_SETSIZE fails with EINVAL instead of
/// writing past the fd_set (which would be undefined behaviour).
#[derive(Debug, Default)]
pub struct Select {
    /// Interest per fd, indexed by fd; `None` when not registered.
    interest: Vec<Option<Interest>>,
}

/// Why select cannot take an fd; the reactor logs it and closes that
/// connection.
pub fn fd_setsize_error(fd: RawFd) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "fd {fd} is not below FD_SETSIZE ({}): select(2) cannot watch it; use --demux epoll or poll",
            libc::FD_SETSIZE
        ),
    )
}

impl Demultiplexer for Select {
    fn register(&mut self, fd: RawFd, interest: Interest) -> io::Result<()> {
        if fd < 0 || fd as usize >= libc::FD_SETSIZE {
            return Err(fd_setsize_error(fd));
        }
        let i = fd as usize;
        if self.interest.len() <= i {
            self.interest.resize(i + 1, None);
        }
        self.interest[i] = Some(interest);
        Ok(())
    }

    fn modify(&mut self, fd: RawFd, interest: Interest) -> io::Result<()> {
        match self.interest.get_mut(fd as usize) {
            Some(slot @ Some(_)) => {
                *slot = Some(interest);
                Ok(())
            }
            _ => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }

    fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        match self.interest.get_mut(fd as usize) {
            Some(slot @ Some(_)) => {
                *slot = None;
                Ok(())
            }
            _ => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }

    fn wait(&mut self, events: &mut Vec<Event>, timeout: Duration) -> io::Result<()> {
        events.clear();
        // SAFETY: all-zero fd_sets are empty sets; FD_ZERO makes it explicit.
        let (mut rset, mut wset): (libc::fd_set, libc::fd_set) = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to owned fd_sets.
        unsafe {
            libc::FD_ZERO(&mut rset);
            libc::FD_ZERO(&mut wset);
        }
        let mut nfds = 0;
        for (fd, interest) in self.interest.iter().enumerate() {
            let Some(interest) = interest else { continue };
            // register() guarantees fd < FD_SETSIZE.
            let fd = fd as RawFd;
            // SAFETY: fd < FD_SETSIZE, so FD_SET stays inside the set.
            unsafe {
                if interest.read {
                    libc::FD_SET(fd, &mut rset);
                }
                if interest.write {
                    libc::FD_SET(fd, &mut wset);
                }
            }
            nfds = fd + 1;
        }
        let mut tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: the sets and timeval are live and nfds ≤ FD_SETSIZE.
        let n = ready_count(unsafe {
            libc::select(nfds, &mut rset, &mut wset, std::ptr::null_mut(), &mut tv)
        })?;
        if n == 0 {
            // Timed out (the sets came back empty) or interrupted (their
            // contents are unspecified): nothing is ready.
            return Ok(());
        }
        for fd in 0..nfds {
            // SAFETY: fd < nfds ≤ FD_SETSIZE.
            let (r, w) = unsafe { (libc::FD_ISSET(fd, &rset), libc::FD_ISSET(fd, &wset)) };
            if r || w {
                events.push(Event {
                    fd,
                    readable: r,
                    writable: w,
                    hangup: false,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::sys::EventFd;

    /// Registration bookkeeping survives removals, and only ready fds are
    /// reported, for every implementation.
    #[test]
    fn reports_exactly_the_ready_fds() {
        for kind in [DemuxKind::Epoll, DemuxKind::Poll, DemuxKind::Select] {
            let mut d = new(kind, Trigger::Level).expect("demux");
            let fds: Vec<EventFd> = (0..4).map(|_| EventFd::new().expect("eventfd")).collect();
            for f in &fds {
                d.register(f.fd(), Interest::READ).expect("register");
            }
            d.deregister(fds[1].fd()).expect("deregister");
            fds[1].wake();
            fds[3].wake();
            let mut events = Vec::new();
            d.wait(&mut events, Duration::from_secs(1)).expect("wait");
            let ready: Vec<RawFd> = events.iter().filter(|e| e.readable).map(|e| e.fd).collect();
            assert_eq!(ready, vec![fds[3].fd()], "{kind:?}");
            // Level-triggered: still reported until drained.
            d.wait(&mut events, Duration::from_millis(10))
                .expect("wait");
            assert_eq!(events.len(), 1, "{kind:?}");
            fds[3].drain();
            d.wait(&mut events, Duration::from_millis(10))
                .expect("wait");
            assert!(events.is_empty(), "{kind:?}: {events:?}");
            // Write interest on an eventfd is immediately ready.
            d.modify(fds[0].fd(), Interest::READ_WRITE).expect("modify");
            d.wait(&mut events, Duration::from_secs(1)).expect("wait");
            assert_eq!(events.len(), 1, "{kind:?}");
            assert!(events[0].writable && !events[0].readable, "{kind:?}");
        }
    }

    #[test]
    fn edge_trigger_reports_once() {
        let mut d = new(DemuxKind::Epoll, Trigger::Edge).expect("demux");
        let f = EventFd::new().expect("eventfd");
        d.register(f.fd(), Interest::READ).expect("register");
        f.wake();
        let mut events = Vec::new();
        d.wait(&mut events, Duration::from_secs(1)).expect("wait");
        assert_eq!(events.len(), 1);
        d.wait(&mut events, Duration::from_millis(10))
            .expect("wait");
        assert!(events.is_empty(), "edge-triggered fd reported twice");
    }

    #[test]
    fn select_refuses_fds_beyond_fd_setsize() {
        let mut d = Select::default();
        let fd = libc::FD_SETSIZE as RawFd;
        let err = d.register(fd, Interest::READ).expect_err("must refuse");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("FD_SETSIZE"), "{err}");
        d.register(fd - 1, Interest::READ)
            .expect("below FD_SETSIZE is fine");
    }
}
