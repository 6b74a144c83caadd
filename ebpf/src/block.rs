//! The block family: requests to disks, attributed to the process that
//! submitted them, and their issue-to-completion latency.
//!
//! A request's owner is the task in whose context it was started
//! (`block_io_start`, 6.5+: fires in `blk_mq_bio_to_request`, inside the
//! submitter's `submit_bio`) or, where that tracepoint is missing (6.1),
//! inserted into the scheduler (`block_rq_insert`, the elevator path, run
//! by the submitter or its plug flush). A request no start or insert was
//! seen for (direct issue on a queue without a scheduler, a plug flushed
//! at `schedule()`) belongs to the task that issued it (`block_rq_issue`):
//! those issues run in the submitter's context too. Completion runs in
//! interrupt context, where `current` is whoever was interrupted: it only
//! reads the owner remembered for the request. iolens does not guess an
//! owner it does not know: a request completed with no owner seen (issued
//! before iolens attached) is counted under `BLOCK_UNATTRIBUTED`.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map},
    maps::{LruHashMap, LruPerCpuHashMap, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use iolens_common::{
    BLOCK_ENTRIES, BLOCK_HIST_ENTRIES, BLOCK_OP_FLUSH, BLOCK_OP_WRITE, BLOCK_REQ_DONE,
    BLOCK_REQ_ENTRIES, BLOCK_REQ_LIVE, BLOCK_REQ_SKIP, BLOCK_UNATTRIBUTED, BlockHistKey, BlockKey,
    BlockReq, BlockValue, WAIT_SLOTS, block_op, counter,
};

use crate::{
    filter::{filters_active, passes_filters},
    kernel::{OFFSETS, current_has_flags, current_tgid, load, rd},
    process::{PROC_INFO, process_comm, remember_process},
    tally::add_to,
    waits::add_log2,
};

/// Request structs (`struct request *`) -> owner of their current use.
/// An entry stays after its request completed, marked done, and is
/// overwritten in place when the struct is used again: the structs are a
/// fixed pool per queue, so the keys stay few. LRU: the structs of a
/// queue that went away age out.
#[map]
pub(crate) static BLOCK_REQS: LruHashMap<u64, BlockReq> =
    LruHashMap::with_max_entries(BLOCK_REQ_ENTRIES, 0);

/// (owner, device, op) -> bytes and requests completed.
#[map]
pub(crate) static BLOCK_STATS: LruPerCpuHashMap<BlockKey, BlockValue> =
    LruPerCpuHashMap::with_max_entries(BLOCK_ENTRIES, 0);

/// (process name, op) -> issue-to-completion latency (log2 ns buckets).
#[map]
pub(crate) static BLOCK_HIST: PerCpuHashMap<BlockHistKey, [u64; WAIT_SLOTS]> =
    PerCpuHashMap::with_max_entries(BLOCK_HIST_ENTRIES, 0);

/// PF_KTHREAD (include/linux/sched.h).
const PF_KTHREAD: u32 = 0x0020_0000;

/// Makes the current task the owner of request entry `e`, issued at
/// `issue_ns` (0: not yet).
#[inline(always)]
fn own(e: &mut BlockReq, issue_ns: u64) {
    let tgid = current_tgid();
    e.tgid = tgid;
    e.issue_ns = issue_ns;
    if !passes_filters(tgid) {
        e.state = BLOCK_REQ_SKIP;
        return;
    }
    e.state = BLOCK_REQ_LIVE;
    // Named in the process table, so the agent labels the owner even when
    // it does nothing else iolens sees (a kworker doing writeback): one
    // lookup when it is there (two, remember then read, cost ~40 ns more
    // per request here).
    e.comm = match PROC_INFO.get_ptr(tgid) {
        // SAFETY: a valid map value pointer.
        Some(p) => unsafe { (*p).comm },
        None => {
            remember_process(tgid);
            process_comm(tgid)
        }
    };
}

/// Owns `rq` for the current task: in place when the request struct has
/// an entry from an earlier use (no allocation: an LRU insert took more
/// than a lookup and the rest of the program together), else in a new
/// entry, filled in place too (the verifier refuses one store
/// instruction for both a map value and the stack).
#[inline(always)]
fn own_request(rq: u64, issue_ns: u64) {
    let mut e = BLOCK_REQS.get_ptr_mut(rq);
    if e.is_none() {
        let blank = BlockReq {
            tgid: 0,
            state: BLOCK_REQ_DONE,
            issue_ns: 0,
            comm: [0; 16],
        };
        let _ = BLOCK_REQS.insert(rq, blank, 0);
        e = BLOCK_REQS.get_ptr_mut(rq);
    }
    if let Some(e) = e {
        // SAFETY: a valid map value pointer; a request is started, issued
        // and completed one after another, never at once.
        own(unsafe { &mut *e }, issue_ns);
    }
}

/// `block_io_start(rq)` (6.5+) or `block_rq_insert(rq)` (6.1): the
/// current task started (or queued) the request and owns it. The same
/// request struct is reused for later requests, so a start overwrites
/// what was there, except that a request that was issued and is inserted
/// again by a kernel thread (a requeue, run by kblockd) keeps its owner.
#[btf_tracepoint(function = "block_io_start")]
pub fn iolens_block_start(ctx: BtfTracePointContext) -> i32 {
    let rq: u64 = ctx.arg(0);
    // The entry first, and the task's flags only for a live, issued one
    // (a requeue's case): the helper call and a second lookup that came
    // before cost every request ~75 ns here.
    if let Some(e) = BLOCK_REQS.get_ptr_mut(rq) {
        // SAFETY: a valid map value pointer; a request is started, issued
        // and completed one after another, never at once.
        unsafe {
            if (*e).state != BLOCK_REQ_DONE && (*e).issue_ns != 0 && current_has_flags(PF_KTHREAD) {
                return 0;
            }
            own(&mut *e, 0);
        }
        return 0;
    }
    own_request(rq, 0);
    0
}

/// `block_rq_issue(rq)`: handed to the driver. Starts the latency clock;
/// a request no start was seen for is owned by the issuing task.
#[btf_tracepoint(function = "block_rq_issue")]
pub fn iolens_block_issue(ctx: BtfTracePointContext) -> i32 {
    let rq: u64 = ctx.arg(0);
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    match BLOCK_REQS.get_ptr_mut(rq) {
        // SAFETY: a valid map value pointer; see own_request.
        Some(e) if unsafe { (*e).state } != BLOCK_REQ_DONE => unsafe { (*e).issue_ns = now },
        _ => own_request(rq, now),
    }
    0
}

/// `block_rq_complete(rq, error, nr_bytes)`: `nr_bytes` of the request
/// are done (fired before the kernel subtracts them from `__data_len`;
/// the request is finished when they cover it). Interrupt context: the
/// owner comes from the table, never from `current`.
#[btf_tracepoint(function = "block_rq_complete")]
pub fn iolens_block_complete(ctx: BtfTracePointContext) -> i32 {
    let rq: *const u8 = ctx.arg(0);
    let nr_bytes: u64 = ctx.arg(2);
    let nr_bytes = nr_bytes & 0xffff_ffff;
    let key = rq as u64;
    let (op, dev, left) = if rd(&OFFSETS.block_valid) != 0 && !rq.is_null() {
        // SAFETY: a typed `struct request *` and loads through it at
        // verifier-known offsets (fault-safe; a queue without a disk reads
        // as null).
        unsafe {
            let flags: u32 = load(rq, rd(&OFFSETS.rq_cmd_flags));
            let left: u32 = load(rq, rd(&OFFSETS.rq_data_len));
            let q: *const u8 = load(rq, rd(&OFFSETS.rq_q));
            let dev = if q.is_null() {
                0
            } else {
                let disk: *const u8 = load(q, rd(&OFFSETS.queue_disk));
                if disk.is_null() {
                    0
                } else {
                    let major: i32 = load(disk, rd(&OFFSETS.disk_major));
                    let minor: i32 = load(disk, rd(&OFFSETS.disk_first_minor));
                    ((major as u32) << 20) | (minor as u32 & 0xf_ffff)
                }
            };
            // REQ_OP_MASK: the low 8 bits (REQ_OP_BITS) since 4.10. A write
            // with no data is a cache flush (REQ_PREFLUSH: an fsync's,
            // from blkdev_issue_flush; the kernel may have cleared the
            // flag already): the flush machinery completes it once the
            // device flushed, through a flush request of its own that
            // kblockd issues, so it is never issued itself. It also
            // completes a write it had to follow with a flush a second
            // time, with no data left: no owner is left for that one, and
            // it counts as an unattributed flush.
            let op = block_op(flags & 0xff);
            let op = if op == BLOCK_OP_WRITE && left == 0 && nr_bytes == 0 {
                BLOCK_OP_FLUSH
            } else {
                op
            };
            (op, dev, u64::from(left))
        }
    } else {
        (block_op(u32::MAX), 0, 0)
    };
    let done = nr_bytes >= left;
    let bytes = if done && left != 0 { left } else { nr_bytes };
    // The entry stays for the struct's next use (see own_request),
    // marked done.
    let owner = match BLOCK_REQS.get_ptr_mut(key) {
        // SAFETY: a valid map value pointer, copied at once; see
        // own_request.
        Some(e) if unsafe { (*e).state } != BLOCK_REQ_DONE => unsafe {
            let owner = *e;
            if done {
                (*e).state = BLOCK_REQ_DONE;
            }
            Some(owner)
        },
        _ => None,
    };
    let tgid = match &owner {
        Some(e) if e.state == BLOCK_REQ_SKIP => return 0,
        Some(e) => e.tgid,
        // Unattributed work is outside any filter the user asked for.
        None if filters_active() => return 0,
        None => BLOCK_UNATTRIBUTED,
    };
    let skey = BlockKey {
        tgid,
        dev,
        op,
        _pad: [0; 7],
    };
    let requests = u64::from(done);
    add_to(
        &BLOCK_STATS,
        &skey,
        || Some(BlockValue::default()),
        |v: &mut BlockValue| {
            v.bytes += bytes;
            v.requests += requests;
        },
        Some(counter::BLOCK_STATS_INSERTS),
        counter::OTHER_DROPS,
    );
    if let Some(e) = owner
        && done
        && e.issue_ns != 0
    {
        // SAFETY: no preconditions.
        let ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(e.issue_ns);
        record_latency(&e.comm, op, ns);
    }
    0
}

#[inline(always)]
fn record_latency(comm: &[u8; 16], op: u8, ns: u64) {
    let hkey = BlockHistKey {
        comm: *comm,
        op,
        _pad: [0; 7],
    };
    add_log2(&BLOCK_HIST, &hkey, ns);
}
