//! Linux native AIO (io_submit and its completions), read at sys_exit:
//! nothing runs on syscall entry, and AIO has no tracepoints of its own.
//!
//! io_submit's return says how many of the caller's iocbs the kernel took:
//! those are read from the caller's memory (its array of iocb pointers),
//! counted per opcode, and remembered by their user address and tag
//! (aio_data), with their fd's class, until io_getevents or io_pgetevents
//! hands back an io_event whose `obj` and `data` are those: its `res` is
//! the result (bytes, or -errno). A sys_exit hook calls one global function, which the verifier
//! checks once on its own with its bounded loops, so that sys_exit's own
//! walk and stack stay as they were.

use aya_ebpf::{
    helpers::{bpf_get_current_task_btf, bpf_probe_read_user},
    macros::map,
    maps::{LruHashMap, LruPerCpuHashMap},
};
use iolens_common::{
    AIO_BATCH, AIO_ENTRIES, AIO_INFLIGHT_ENTRIES, AIO_OP_UNKNOWN, Accumulate, AioInflight,
    AioInflightKey, AioKey, AioValue, Endpoint, IO_EVENT_SIZE, NR_IO_CANCEL, NR_IO_GETEVENTS,
    NR_IO_PGETEVENTS, NR_IO_SUBMIT, aio_op_ends, aio_op_moves_bytes, counter,
};

use crate::{
    health::{bump, bump_by},
    kernel::{current_tgid, load},
    syscalls::fd_class::fd_endpoint,
    tally::add_to,
};

#[map]
pub(crate) static AIO_STATS: LruPerCpuHashMap<AioKey, AioValue> =
    LruPerCpuHashMap::with_max_entries(AIO_ENTRIES, 0);

/// iocbs submitted and not yet completed: (tgid, user iocb address) ->
/// opcode and ends. Shared by all CPUs: a completion is often reaped on
/// another CPU than its submission.
#[map]
pub(crate) static AIO_INFLIGHT: LruHashMap<AioInflightKey, AioInflight> =
    LruHashMap::with_max_entries(AIO_INFLIGHT_ENTRIES, 0);

/// `-EINPROGRESS`: what io_cancel returns when it cancelled (the event is
/// then delivered through the ring, as any completion).
const EINPROGRESS: i64 = -115;
/// x86_64 `struct pt_regs` offsets (uapi) of a syscall's arguments 1 to 3
/// (si, dx, r10).
const PT_REGS_SI: usize = 104;
const PT_REGS_DX: usize = 96;
const PT_REGS_R10: usize = 56;

/// The sys_exit hook: hands an AIO syscall's exit to `iolens_aio_exit`.
/// `nr` is sys_exit's x86_64 number: ia32 calls were translated, and no
/// ia32 AIO call is (their iocb pointers are 32-bit), so an ia32 call
/// never gets here, even one whose own number is 208-210 or 333.
#[inline(always)]
pub(crate) fn on_sys_exit(nr: u64, ret: i64) {
    if (NR_IO_GETEVENTS..=NR_IO_CANCEL).contains(&nr) || nr == NR_IO_PGETEVENTS {
        let _ = iolens_aio_exit(nr, ret);
    }
}

/// Accounts the exit of io_submit, io_getevents, io_pgetevents or
/// io_cancel (x86_64 number `nr`, return `ret`) of the current process,
/// its arguments read from its saved registers. Returns 0.
///
/// A global function, verified once, for any arguments, and reached by
/// AIO calls only: the helper calls here (the task, its registers, ~25 ns
/// each) are paid by them alone.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn iolens_aio_exit(nr: u64, ret: i64) -> u32 {
    // SAFETY: the current task, as a typed pointer; the helper returns
    // its saved user registers as a typed `struct pt_regs *`.
    let regs = unsafe {
        let task = bpf_get_current_task_btf();
        aya_ebpf::helpers::generated::bpf_task_pt_regs(task.cast()) as *const u8
    };
    if regs.is_null() {
        return 0;
    }
    // SAFETY: a typed pointer and constant offsets inside pt_regs.
    let (arg1, arg2, arg3): (u64, u64, u64) = unsafe {
        (
            load(regs, PT_REGS_SI),
            load(regs, PT_REGS_DX),
            load(regs, PT_REGS_R10),
        )
    };
    let tgid = current_tgid();
    if nr == NR_IO_SUBMIT && ret > 0 {
        submitted(tgid, arg2, ret as u64);
    } else if (nr == NR_IO_GETEVENTS || nr == NR_IO_PGETEVENTS) && ret > 0 {
        completed(tgid, arg3, ret as u64);
    } else if nr == NR_IO_CANCEL && (ret == 0 || ret == EINPROGRESS) {
        let (opcode, src, dst) = inflight(tgid, arg1);
        account(
            tgid,
            opcode,
            src,
            dst,
            &AioValue {
                cancelled: 1,
                ..AioValue::default()
            },
        );
    }
    0
}

/// The first `n` iocbs of the array at `iocbpp` (user memory), which
/// io_submit took: one call of `iolens_aio_submitted_one` each, so the
/// verifier walks this loop's iterations without the body.
#[inline(always)]
fn submitted(tgid: u32, iocbpp: u64, n: u64) {
    let mut i = 0;
    while i < AIO_BATCH && i < n {
        let _ = iolens_aio_submitted_one(tgid, iocbpp.wrapping_add(i * 8));
        i += 1;
    }
    if n > AIO_BATCH {
        let v = AioValue {
            submitted: n - AIO_BATCH,
            ..AioValue::default()
        };
        account(tgid, AIO_OP_UNKNOWN, 0, 0, &v);
        bump_by(counter::AIO_UNREAD, n - AIO_BATCH);
    }
}

/// One iocb io_submit took, its pointer at user address `at`: counted by
/// opcode and remembered until its completion. Returns 0. A global
/// function, verified once: inlined in the loop above, its fd walk and
/// map updates were walked once per iteration (850,000 instructions).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn iolens_aio_submitted_one(tgid: u32, at: u64) -> u32 {
    let one = AioValue {
        submitted: 1,
        ..AioValue::default()
    };
    // SAFETY: fault-safe reads of the caller's own memory.
    let Ok(iocb) = (unsafe { bpf_probe_read_user(at as *const u64) }) else {
        bump(counter::AIO_UNREAD);
        account(tgid, AIO_OP_UNKNOWN, 0, 0, &one);
        return 0;
    };
    // aio_data, aio_key and aio_rw_flags, then aio_lio_opcode (u16),
    // aio_reqprio (s16), aio_fildes (u32).
    // SAFETY: as above.
    let Ok([data, _, head]) = (unsafe { bpf_probe_read_user(iocb as *const [u64; 3]) }) else {
        bump(counter::AIO_UNREAD);
        account(tgid, AIO_OP_UNKNOWN, 0, 0, &one);
        return 0;
    };
    let opcode = match head as u16 {
        op @ 0..=254 => op as u8,
        _ => AIO_OP_UNKNOWN,
    };
    // The kernel took the iocb, so its fd was open then (io_submit fails
    // the iocb with EBADF first otherwise).
    // SAFETY: the current task, as a typed pointer.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    let fd = fd_endpoint(task, (head >> 32) as u32 as i32);
    let (src, dst) = aio_op_ends(opcode, fd);
    let (src, dst) = (src as u8, dst as u8);
    let key = AioInflightKey {
        tgid,
        _pad: 0,
        iocb,
        data,
    };
    match AIO_INFLIGHT.get_ptr_mut(key) {
        // The same iocb again (same memory, same tag) before the first
        // completed: counted, so both completions find it.
        // SAFETY: a valid map value pointer.
        Some(f) if unsafe { ((*f).opcode, (*f).src, (*f).dst) } == (opcode, src, dst) => unsafe {
            (*f).count += 1;
        },
        _ => {
            let _ = AIO_INFLIGHT.insert(
                key,
                AioInflight {
                    opcode,
                    src,
                    dst,
                    _pad: 0,
                    count: 1,
                },
                0,
            );
        }
    }
    account(tgid, opcode, src, dst, &one);
    0
}

/// The first `n` io_events of the array at `events` (user memory), which
/// io_getevents just filled; as `submitted`, one call each.
#[inline(always)]
fn completed(tgid: u32, events: u64, n: u64) {
    let mut i = 0;
    while i < AIO_BATCH && i < n {
        let at = events.wrapping_add(i * IO_EVENT_SIZE);
        let _ = iolens_aio_completed_one(tgid, at);
        i += 1;
    }
    if n > AIO_BATCH {
        // Not read: the events past the bound are not counted at all
        // (AIO_UNREAD says how many).
        bump_by(counter::AIO_UNREAD, n - AIO_BATCH);
    }
}

/// One io_event at user address `at` (its data, obj and res): settles the
/// iocb's submission. Returns 0. A global function, as
/// `iolens_aio_submitted_one`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn iolens_aio_completed_one(tgid: u32, at: u64) -> u32 {
    // data, obj, res.
    // SAFETY: a fault-safe read of the caller's own memory.
    let Ok([data, obj, res]) = (unsafe { bpf_probe_read_user(at as *const [u64; 3]) }) else {
        bump(counter::AIO_UNREAD);
        return 0;
    };
    let key = AioInflightKey {
        tgid,
        _pad: 0,
        iocb: obj,
        data,
    };
    let (opcode, src, dst) = match AIO_INFLIGHT.get_ptr_mut(key) {
        Some(f) => {
            // SAFETY: a valid map value pointer.
            let (op, src, dst, count) = unsafe { ((*f).opcode, (*f).src, (*f).dst, (*f).count) };
            if count > 1 {
                // SAFETY: as above.
                unsafe { (*f).count = count - 1 };
            } else {
                let _ = AIO_INFLIGHT.remove(key);
            }
            (op, src, dst)
        }
        None => (
            AIO_OP_UNKNOWN,
            Endpoint::Unknown as u8,
            Endpoint::Unknown as u8,
        ),
    };
    let res = res as i64;
    let v = AioValue {
        completed: 1,
        failed: u64::from(res < 0),
        bytes: if res > 0 && aio_op_moves_bytes(opcode) {
            res as u64
        } else {
            0
        },
        ..AioValue::default()
    };
    account(tgid, opcode, src, dst, &v);
    0
}

/// What was remembered of the iocb at user address `iocb` (io_cancel's
/// argument; its tag read from there): its opcode and ends, or unknown
/// ones if its submission was not seen.
#[inline(always)]
fn inflight(tgid: u32, iocb: u64) -> (u8, u8, u8) {
    // SAFETY: a fault-safe read of the caller's own memory.
    let data = unsafe { bpf_probe_read_user(iocb as *const u64) }.unwrap_or(0);
    let key = AioInflightKey {
        tgid,
        _pad: 0,
        iocb,
        data,
    };
    match AIO_INFLIGHT.get_ptr(key) {
        // SAFETY: a valid map value pointer.
        Some(f) => unsafe { ((*f).opcode, (*f).src, (*f).dst) },
        None => (
            AIO_OP_UNKNOWN,
            Endpoint::Unknown as u8,
            Endpoint::Unknown as u8,
        ),
    }
}

#[inline(always)]
fn account(tgid: u32, opcode: u8, src: u8, dst: u8, delta: &AioValue) {
    let key = AioKey {
        tgid,
        opcode,
        src,
        dst,
        _pad: 0,
    };
    add_to(
        &AIO_STATS,
        &key,
        || Some(AioValue::default()),
        |v: &mut AioValue| v.accumulate(delta),
        Some(counter::AIO_STATS_INSERTS),
        counter::OTHER_DROPS,
    );
}
