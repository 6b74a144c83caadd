//! Whole-map reads with `BPF_MAP_LOOKUP_BATCH` (Linux 5.6): thousands of
//! entries per syscall, where aya's iterators make two per key (next key,
//! then lookup). With 10,000 processes the maps hold some 60,000 keys, and
//! the background read every second was then 120,000 bpf(2) calls a second.
//!
//! Hash maps are read bucket by bucket; the kernel hands back an opaque
//! bucket index to resume from. Like iteration, a batch read races with
//! inserts and deletes (a key inserted meanwhile may be missed until the
//! next read), but unlike get-next-key it never restarts from the first
//! bucket when the key it stood on was deleted.

use std::os::fd::{AsRawFd as _, BorrowedFd};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// The kernel's ENOTSUPP (not in libc): an operation the map type lacks.
const ENOTSUPP: i32 = 524;
/// Entries asked for per call (grown if one hash bucket holds more).
const FIRST_BATCH: usize = 4096;

/// `union bpf_attr`'s `batch` member (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Buffers kept between reads, so a read allocates only when the maps grew.
#[derive(Debug, Default)]
pub(crate) struct BatchBuf {
    keys: Vec<u64>,
    values: Vec<u64>,
}

/// Reads every entry of the hash map `fd`, calling `each(key, value)` with
/// the raw bytes of each: `key_len` bytes, and `value_len` bytes of value
/// (for per-CPU maps, every possible CPU's value, each rounded up to 8
/// bytes). Returns `Ok(false)`, having called nothing, when this kernel or
/// map type has no batch lookup: the caller then iterates.
pub(crate) fn lookup_all(
    fd: BorrowedFd<'_>,
    key_len: usize,
    value_len: usize,
    buf: &mut BatchBuf,
    mut each: impl FnMut(&[u8], &[u8]),
) -> std::io::Result<bool> {
    let mut batch = FIRST_BATCH;
    // The bucket to resume from: what the last call wrote to out_batch.
    let mut resume: Option<u32> = None;
    loop {
        // u64 buffers: 8-byte aligned, as the kernel lays out values.
        buf.keys.resize((batch * key_len).div_ceil(8), 0);
        buf.values.resize((batch * value_len).div_ceil(8), 0);
        let token = resume.unwrap_or(0);
        let mut next: u32 = 0;
        let mut attr = BatchAttr {
            in_batch: if resume.is_some() {
                std::ptr::from_ref(&token) as u64
            } else {
                0
            },
            out_batch: std::ptr::from_mut(&mut next) as u64,
            keys: buf.keys.as_mut_ptr() as u64,
            values: buf.values.as_mut_ptr() as u64,
            count: batch as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the attribute points at buffers with room for `count`
        // keys and values of the sizes the caller gave for this map, and at
        // two u32s for the bucket tokens; all outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                std::ptr::from_mut(&mut attr),
                std::mem::size_of::<BatchAttr>() as u32,
            )
        };
        let errno = (rc < 0).then(std::io::Error::last_os_error);
        let code = errno.as_ref().and_then(std::io::Error::raw_os_error);
        let n = attr.count as usize;
        match code {
            None | Some(libc::ENOENT) => {}
            // One bucket holds more keys than a batch: ask for more.
            Some(libc::ENOSPC) if n == 0 => {
                batch *= 2;
                continue;
            }
            Some(libc::EINVAL | ENOTSUPP | libc::EOPNOTSUPP) if resume.is_none() => {
                return Ok(false);
            }
            Some(_) => return Err(errno.unwrap_or_else(std::io::Error::last_os_error)),
        }
        // SAFETY: u64 buffers viewed as the bytes they hold; the kernel
        // filled the first n keys and values.
        let (keys, values) = unsafe {
            (
                std::slice::from_raw_parts(buf.keys.as_ptr().cast::<u8>(), n * key_len),
                std::slice::from_raw_parts(buf.values.as_ptr().cast::<u8>(), n * value_len),
            )
        };
        for (k, v) in keys
            .chunks_exact(key_len)
            .zip(values.chunks_exact(value_len))
        {
            each(k, v);
        }
        // ENOENT: the last bucket was read.
        if code == Some(libc::ENOENT) {
            return Ok(true);
        }
        resume = Some(next);
    }
}
