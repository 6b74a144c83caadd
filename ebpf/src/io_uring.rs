use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, map, tracepoint},
    maps::{LruHashMap, LruPerCpuHashMap},
    programs::{BtfTracePointContext, TracePointContext},
};
use iolens_common::{
    Accumulate, RING_ENTRIES, URING_ENTRIES, URING_OP_UNKNOWN, UringKey, UringValue, counter,
    uring_op_moves_bytes,
};

use crate::{
    epoch::{bump_epoch, epoch},
    filter::{passes_filters, passes_pid_filter},
    kernel::{OFFSETS, current_has_flags, current_tgid, load, rd, rdonly_cast, read_at},
    process::{remember_process, with_proc},
    slot::{CPU_SLOT, SLOT_URING},
    syscalls::fd_class::remembers_fd_classes,
    tally::add_to,
};

#[map]
pub(crate) static URING_STATS: LruPerCpuHashMap<UringKey, UringValue> =
    LruPerCpuHashMap::with_max_entries(URING_ENTRIES, 0);

/// io_uring ring (`struct io_ring_ctx *`) -> owning tgid.
#[map]
pub(crate) static RING_OWNERS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(RING_ENTRIES, 0);

/// `io_uring:io_uring_create`: remember who owns the ring, so work done for
/// it by io-wq or SQPOLL threads, or completed from another context, is
/// attributed to the owner.
#[tracepoint]
pub fn iolens_uring_create(ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the ring pointer at `uring_create_ctx` in this tracepoint's
    // record (16 since 5.1, from its tracefs format), a probe read.
    let ring = unsafe { ctx.read_at::<u64>(rd(&OFFSETS.uring_create_ctx)) }.unwrap_or(0);
    let _ = RING_OWNERS.insert(ring, tgid, 0);
    // Rings remembered in slots by address are no longer trusted: this one
    // may sit where a freed one was.
    bump_epoch();
    if passes_filters(tgid) {
        with_proc(tgid, true, |p| p.rings_created += 1);
    }
    0
}

#[inline(always)]
pub(crate) fn ring_owner(ring: u64) -> u32 {
    match RING_OWNERS.get_ptr(ring) {
        // SAFETY: a valid map value pointer.
        Some(t) => unsafe { *t },
        // A ring created before iolens started: io-wq and SQPOLL threads
        // share their owner's tgid, so the current task is right unless the
        // completion ran in another context.
        None => (bpf_get_current_pid_tgid() >> 32) as u32,
    }
}

#[inline(always)]
/// `name`: the current task belongs to `tgid`; see `with_proc`.
pub(crate) fn uring_account(tgid: u32, opcode: u8, delta: &UringValue, name: bool) {
    if tgid == 0 || !passes_pid_filter(tgid) {
        return;
    }
    let key = UringKey {
        tgid,
        opcode,
        _pad: [0; 3],
    };
    let inserted = add_to(
        &URING_STATS,
        &key,
        || Some(UringValue::default()),
        |v: &mut UringValue| v.accumulate(delta),
        Some(counter::URING_STATS_INSERTS),
        counter::OTHER_DROPS,
    );
    if inserted && name {
        remember_process(tgid);
    }
}

/// `io_uring_submit_req(req)` (Linux 6.5+) or `io_uring_submit_sqe(req,
/// force_nonblock)` (5.18-6.4; Debian 12's 6.1): one SQE handed to the
/// kernel. The agent attaches this one program to whichever of the two the
/// kernel's BTF has; both start with the request. BTF-typed, so the ring
/// and opcode are loaded from the request directly.
#[btf_tracepoint(function = "io_uring_submit_req")]
pub fn iolens_uring_submit(ctx: BtfTracePointContext) -> i32 {
    let req: *const u8 = ctx.arg(0);
    if req.is_null() || rd(&OFFSETS.uring_valid) == 0 {
        return 0;
    }
    // SAFETY: a typed `struct io_kiocb *` and verifier-known offsets.
    let (ring, opcode): (u64, u8) = unsafe {
        (
            load(req, rd(&OFFSETS.kiocb_ctx)),
            load(req, rd(&OFFSETS.kiocb_opcode)),
        )
    };
    uring_submitted(ring, opcode);
    0
}

/// `io_uring_submit_sqe(ctx, req, opcode, user_data, flags, force_nonblock,
/// sq_thread)`: the prototype before 5.18 (Ubuntu 22.04's 5.15), where
/// the ring and opcode are arguments. Chosen from the BTF prototype; not
/// tested in CI (no such kernel package can be fetched here).
#[btf_tracepoint(function = "io_uring_submit_sqe")]
pub fn iolens_uring_submit_args(ctx: BtfTracePointContext) -> i32 {
    let ring: u64 = ctx.arg(0);
    let opcode: u64 = ctx.arg(2);
    uring_submitted(ring, opcode as u8);
    0
}

#[inline(always)]
fn uring_submitted(ring: u64, opcode: u8) {
    let delta = UringValue {
        submitted: 1,
        ..UringValue::default()
    };
    uring_event(ring, opcode, &delta);
}

/// `io_uring_complete(ctx, req, cqe)` (after 6.12; 6.18 here): one CQE
/// posted, its result in the CQE.
#[btf_tracepoint(function = "io_uring_complete")]
pub fn iolens_uring_complete(ctx: BtfTracePointContext) -> i32 {
    let ring: u64 = ctx.arg(0);
    let req: *const u8 = ctx.arg(1);
    let cqe: *const u8 = ctx.arg(2);
    if cqe.is_null() {
        return 0;
    }
    // SAFETY: a typed `struct io_uring_cqe *`; `res` follows the u64
    // user_data (uapi).
    let res: i32 = unsafe { load(cqe, 8) };
    uring_completed(ring, request_opcode(req), res);
    0
}

/// `io_uring_complete(ctx, req, user_data, res, cflags, extra1, extra2)`:
/// the prototype of 5.19 to 6.12 (Debian 12's 6.1, Debian 13's 6.12), the
/// result an argument. (The CQE variant's third argument there is a u64,
/// which the verifier refuses to load through.)
#[btf_tracepoint(function = "io_uring_complete")]
pub fn iolens_uring_complete_res(ctx: BtfTracePointContext) -> i32 {
    let ring: u64 = ctx.arg(0);
    let req: *const u8 = ctx.arg(1);
    let res: u64 = ctx.arg(3);
    uring_completed(ring, request_opcode(req), res as i32);
    0
}

/// `io_uring_complete(ctx, user_data, res, cflags)`: the prototype before
/// 5.18 (5.15), without the request, so the opcode is unknown. Chosen from
/// the BTF prototype; not tested in CI.
#[btf_tracepoint(function = "io_uring_complete")]
pub fn iolens_uring_complete_noreq(ctx: BtfTracePointContext) -> i32 {
    let ring: u64 = ctx.arg(0);
    let res: u64 = ctx.arg(2);
    uring_completed(ring, URING_OP_UNKNOWN, res as i32);
    0
}

/// The opcode of a request the tracepoint passes as `void *`: cast to its
/// type, else one probe read.
#[inline(always)]
fn request_opcode(req: *const u8) -> u8 {
    if rd(&OFFSETS.uring_valid) == 0 || req.is_null() {
        URING_OP_UNKNOWN
    } else if rd(&OFFSETS.cast_valid) != 0 {
        // SAFETY: a fault-safe load through a pointer typed by the cast,
        // at a verifier-known offset inside `struct io_kiocb`.
        unsafe {
            load::<u8>(
                rdonly_cast(req as u64, rd(&OFFSETS.btf_io_kiocb)),
                rd(&OFFSETS.kiocb_opcode),
            )
        }
    } else {
        read_at::<u8>(req, rd(&OFFSETS.kiocb_opcode)).unwrap_or(URING_OP_UNKNOWN)
    }
}

#[inline(always)]
fn uring_completed(ring: u64, opcode: u8, res: i32) {
    let delta = UringValue {
        submitted: 0,
        completed: 1,
        failed: u64::from(res < 0),
        bytes: if res > 0 && uring_op_moves_bytes(opcode) {
            res as u64
        } else {
            0
        },
    };
    if remembers_fd_classes() && opcode == IORING_OP_CLOSE && res >= 0 {
        // The fd is gone before the process can see the completion and
        // open something in its place.
        bump_epoch();
    }
    uring_event(ring, opcode, &delta);
}

/// Accounts an io_uring event to the ring's owner: in this CPU's slot when
/// the owner holds it (the common case: the owner's own io_uring_enter),
/// else in the map. An io worker's (SQPOLL or io-wq thread's) events go to
/// the map: it shares the owner's tgid, so switching to it never flushes
/// the slot, and an SQPOLL thread polling on a CPU whose slot held its
/// owner kept what it did there out of the maps until it idled (1 s in
/// the test; a CI run scraped 1 of 50 SQEs).
#[inline(always)]
pub(crate) fn uring_event(ring: u64, opcode: u8, delta: &UringValue) {
    let slot = match CPU_SLOT.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; these programs are not preempted, and a
        // sys_exit run they interrupted has `busy` set.
        Some(s) if unsafe { (*s).busy } == 0 && !current_has_flags(PF_IO_WORKER) => {
            // SAFETY: as above.
            Some(unsafe { &mut *s })
        }
        _ => None,
    };
    let Some(slot) = slot else {
        let owner = ring_owner(ring);
        uring_account(owner, opcode, delta, owner == current_tgid());
        return;
    };
    // The owner of the last ring seen, unless a ring was created since
    // (a new ring may sit at a freed one's address).
    let epoch = epoch();
    let owner = if slot.ring == ring && slot.ring_epoch == epoch && ring != 0 {
        slot.ring_owner
    } else {
        let owner = ring_owner(ring);
        slot.ring = ring;
        slot.ring_owner = owner;
        slot.ring_epoch = epoch;
        owner
    };
    if owner != 0 && owner == slot.tgid {
        let tag = 0x100 | u32::from(opcode);
        for i in 0..SLOT_URING {
            if slot.uring_tags[i] == tag {
                slot.uring[i].accumulate(delta);
                return;
            }
            if slot.uring_tags[i] == 0 {
                slot.uring_tags[i] = tag;
                slot.uring[i] = *delta;
                return;
            }
        }
    }
    uring_account(owner, opcode, delta, owner == current_tgid());
}

/// `IORING_OP_CLOSE` (uapi).
pub(crate) const IORING_OP_CLOSE: u8 = 19;

/// `PF_IO_WORKER` (include/linux/sched.h): an io-wq or SQPOLL thread.
const PF_IO_WORKER: u32 = 0x10;
