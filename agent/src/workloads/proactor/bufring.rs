//! Provided-buffer ring (`IORING_REGISTER_PBUF_RING`): the pool the kernel
//! picks receive buffers from when a multishot recv completes, so no buffer is
//! pinned to an idle connection.

use std::{
    io,
    ptr::NonNull,
    sync::atomic::{AtomicU16, Ordering},
};

use io_uring::{Submitter, types::BufRingEntry};

/// A buffer group: `entries` buffers of `size` bytes each, plus the ring of
/// descriptors shared with the kernel. Both live in anonymous mappings (page
/// aligned, as the kernel requires for the ring) and are unmapped on drop,
/// which must happen only after the io_uring that registered them is gone or
/// has no operation in flight (the owner drops the ring first).
pub(crate) struct BufRing {
    ring: NonNull<BufRingEntry>,
    ring_len: usize,
    bufs: NonNull<u8>,
    bufs_len: usize,
    entries: u16,
    size: u32,
    /// Our copy of the tail; published to the kernel with a release store.
    tail: u16,
    pub(crate) bgid: u16,
}

fn map_anon(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: anonymous private mapping with no address hint: touches no
    // existing memory; the result is checked against MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))
}

impl BufRing {
    /// Maps the ring and buffers and registers them as group `bgid`.
    /// `entries` must be a power of two (kernel rule), at most 32768.
    pub(crate) fn new(
        submitter: &Submitter<'_>,
        entries: u16,
        size: u32,
        bgid: u16,
    ) -> io::Result<Self> {
        if !entries.is_power_of_two() || entries > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("buffer ring entries must be a power of two ≤ 32768, got {entries}"),
            ));
        }
        let ring_len = usize::from(entries) * size_of::<BufRingEntry>();
        let bufs_len = usize::from(entries) * size as usize;
        let ring = map_anon(ring_len)?.cast::<BufRingEntry>();
        let bufs = match map_anon(bufs_len) {
            Ok(b) => b,
            Err(e) => {
                // SAFETY: `ring` was mapped just above with `ring_len` and is
                // not registered yet.
                unsafe { libc::munmap(ring.as_ptr().cast(), ring_len) };
                return Err(e);
            }
        };
        let mut this = Self {
            ring,
            ring_len,
            bufs,
            bufs_len,
            entries,
            size,
            tail: 0,
            bgid,
        };
        // SAFETY: the ring mapping is page aligned, `entries` long, and stays
        // mapped until `drop`, which runs after the io_uring is closed.
        unsafe { submitter.register_buf_ring_with_flags(ring.as_ptr() as u64, entries, bgid, 0)? };
        for bid in 0..entries {
            this.push(bid);
        }
        this.publish();
        Ok(this)
    }

    /// Hands buffer `bid` back to the kernel (visible after `publish`).
    pub(crate) fn push(&mut self, bid: u16) {
        let mask = self.entries - 1;
        let idx = usize::from(self.tail & mask);
        // SAFETY: idx < entries, within the ring mapping; the kernel only reads
        // entries between its head and our published tail, and this slot is
        // beyond the published tail.
        let entry = unsafe { &mut *self.ring.as_ptr().add(idx) };
        // SAFETY: bid < entries, so the offset stays inside the buffers mapping.
        let addr = unsafe {
            self.bufs
                .as_ptr()
                .add(usize::from(bid) * self.size as usize)
        };
        entry.set_addr(addr as u64);
        entry.set_len(self.size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes pushed buffers visible to the kernel.
    pub(crate) fn publish(&self) {
        // SAFETY: the ring base points at entry 0 of a live mapping; the tail
        // overlays entry 0's reserved field, which the kernel reads
        // atomically, so it is accessed only through an atomic here.
        let tail = unsafe { &*BufRingEntry::tail(self.ring.as_ptr()).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// The first `len` bytes of buffer `bid`, which the kernel filled and
    /// handed to us with a completion.
    pub(crate) fn get(&self, bid: u16, len: usize) -> &[u8] {
        let bid = usize::from(bid) % usize::from(self.entries);
        let len = len.min(self.size as usize);
        // SAFETY: the range lies inside the buffers mapping; the kernel does
        // not write this buffer again until we push it back.
        unsafe { std::slice::from_raw_parts(self.bufs.as_ptr().add(bid * self.size as usize), len) }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both mappings were created in `new` with these lengths and
        // are unmapped once; the owner guarantees no operation still uses them.
        unsafe {
            libc::munmap(self.bufs.as_ptr().cast(), self.bufs_len);
            libc::munmap(self.ring.as_ptr().cast(), self.ring_len);
        }
    }
}
