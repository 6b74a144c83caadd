//! Completion Handler: the per-connection state machine that reacts to
//! recv/send completions, and the slab that keeps connection state at a
//! stable place while operations on it are in flight.

use std::{os::fd::OwnedFd, time::Instant};

use super::Config;
use crate::workloads::{http, sys};

/// Stop parsing pipelined requests while this many response bytes wait to be
/// sent; input keeps accumulating and is parsed once the backlog drains.
const MAX_QUEUED: usize = 4 << 20;
/// A client that sends this much without completing requests is cut off.
const MAX_INBUF: usize = 8 << 20;

/// One connection's state. Buffers referenced by an in-flight send
/// (`sending`) are never touched until its completion; new responses go to
/// `queued` meanwhile.
pub(crate) struct Conn {
    pub(crate) fd: OwnedFd,
    inbuf: Vec<u8>,
    sending: Vec<u8>,
    sent: usize,
    queued: Vec<u8>,
    pub(crate) recv_armed: bool,
    pub(crate) cancel_sent: bool,
    /// Already listed in the Proactor's closing list.
    pub(crate) in_closing: bool,
    send_in_flight: bool,
    /// Close once everything owed is sent (error response, `Connection:
    /// close`, or the peer finished sending).
    close_after_send: bool,
    /// Close now, discarding output (socket error, shutdown).
    broken: bool,
    /// The peer sent FIN (recv returned 0).
    peer_eof: bool,
    /// Lingering close under way: FIN sent, draining input until this
    /// deadline.
    linger_until: Option<Instant>,
}

impl Conn {
    pub(crate) fn new(fd: OwnedFd) -> Self {
        Self {
            fd,
            inbuf: Vec::new(),
            sending: Vec::new(),
            sent: 0,
            queued: Vec::new(),
            recv_armed: false,
            cancel_sent: false,
            in_closing: false,
            send_in_flight: false,
            close_after_send: false,
            broken: false,
            peer_eof: false,
            linger_until: None,
        }
    }

    pub(crate) fn on_recv(&mut self, data: &[u8], cfg: &Config) {
        if self.close_after_send || self.broken {
            // Input after an error response or during shutdown is ignored.
            return;
        }
        self.inbuf.extend_from_slice(data);
        self.parse(cfg);
        if self.inbuf.len() > MAX_INBUF {
            self.broken = true;
        }
    }

    /// Answers every complete request in the input, in order.
    fn parse(&mut self, cfg: &Config) {
        let mut consumed = 0;
        while !self.close_after_send && self.queued.len() + self.sending.len() < MAX_QUEUED {
            let out = if self.send_in_flight {
                &mut self.queued
            } else {
                &mut self.sending
            };
            match http::parse_request(&self.inbuf[consumed..]) {
                Ok(http::Parsed::Partial) => break,
                Ok(http::Parsed::Complete(req, len)) => {
                    consumed += len;
                    sys::spin_work(cfg.work_us);
                    cfg.respond(out, &req);
                    self.close_after_send |= !req.keep_alive;
                }
                Err(e) => {
                    // The stream cannot be resynchronised: answer and close.
                    http::write_error(out, &e);
                    self.close_after_send = true;
                }
            }
        }
        self.inbuf.drain(..consumed);
    }

    pub(crate) fn on_peer_closed(&mut self) {
        self.peer_eof = true;
        self.close_after_send = true;
    }

    pub(crate) fn peer_eof(&self) -> bool {
        self.peer_eof
    }

    pub(crate) fn broken(&self) -> bool {
        self.broken
    }

    /// Everything owed has been sent.
    pub(crate) fn flushed(&self) -> bool {
        !self.output_pending()
    }

    /// Starts lingering (once); true if it just started and the caller
    /// should shut down the write side. Not needed when the peer already
    /// closed: nothing more will arrive.
    pub(crate) fn start_linger(&mut self, until: Instant) -> bool {
        if self.linger_until.is_some() || self.peer_eof {
            return false;
        }
        self.linger_until = Some(until);
        true
    }

    pub(crate) fn linger_expired(&self, now: Instant) -> bool {
        self.linger_until.is_some_and(|t| now >= t) && !self.broken
    }

    pub(crate) fn on_error(&mut self) {
        self.broken = true;
    }

    pub(crate) fn force_close(&mut self) {
        self.broken = true;
    }

    /// Takes the next bytes to send, marking a send in flight. The returned
    /// pointer stays valid until `on_sent`: `sending` is not touched before.
    pub(crate) fn start_send(&mut self) -> Option<(*const u8, u32)> {
        if self.send_in_flight || self.broken {
            return None;
        }
        if self.sent >= self.sending.len() {
            self.sending.clear();
            self.sent = 0;
            std::mem::swap(&mut self.sending, &mut self.queued);
        }
        if self.sending.is_empty() {
            return None;
        }
        self.send_in_flight = true;
        let rest = &self.sending[self.sent..];
        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        Some((rest.as_ptr(), len))
    }

    pub(crate) fn on_sent(&mut self, res: i32, cfg: &Config) {
        self.send_in_flight = false;
        if res < 0 {
            self.broken = true;
            return;
        }
        self.sent += res as usize;
        if self.sent >= self.sending.len() {
            self.sending.clear();
            self.sent = 0;
        }
        // Requests held back by the output limit can be answered now.
        if !self.inbuf.is_empty() && !self.closing() {
            self.parse(cfg);
        }
    }

    fn output_pending(&self) -> bool {
        self.send_in_flight || self.sent < self.sending.len() || !self.queued.is_empty()
    }

    /// The connection is winding down: no more receives, only the flush of
    /// what is owed (nothing if broken).
    pub(crate) fn closing(&self) -> bool {
        self.broken || self.close_after_send
    }

    /// Nothing in flight, nothing more to send, and (unless cut off) the
    /// peer has finished: safe to free.
    pub(crate) fn idle(&self) -> bool {
        !self.recv_armed
            && !self.send_in_flight
            && (self.broken || (!self.output_pending() && self.peer_eof))
    }
}

struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

/// Connection states indexed by slot; a slot's generation changes on reuse so
/// a tag `(slot, generation)` names exactly one connection.
#[derive(Default)]
pub(crate) struct Slab {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

impl Slab {
    pub(crate) fn insert(&mut self, conn: Conn) -> Option<(u32, u32)> {
        if let Some(i) = self.free.pop() {
            let s = &mut self.slots[i as usize];
            s.generation = s.generation.wrapping_add(1);
            s.conn = Some(conn);
            return Some((i, s.generation));
        }
        let i = u32::try_from(self.slots.len())
            .ok()
            .filter(|&i| i < 0x00ff_ffff)?;
        self.slots.push(Slot {
            generation: 0,
            conn: Some(conn),
        });
        Some((i, 0))
    }

    pub(crate) fn get_mut(&mut self, slot: u32, generation: u32) -> Option<&mut Conn> {
        let s = self.slots.get_mut(slot as usize)?;
        if s.generation != generation {
            return None;
        }
        s.conn.as_mut()
    }

    pub(crate) fn remove(&mut self, slot: u32, generation: u32) {
        if let Some(s) = self.slots.get_mut(slot as usize)
            && s.generation == generation
            && s.conn.take().is_some()
        {
            self.free.push(slot);
        }
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (u32, u32, &mut Conn)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.conn.as_mut().map(|c| (i as u32, s.generation, c)))
    }
}
