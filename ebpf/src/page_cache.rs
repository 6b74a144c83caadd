use aya_ebpf::{
    macros::{btf_tracepoint, fentry, fexit, tracepoint},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, TracePointContext},
};
use iolens_common::ProcCounters;

use crate::{
    filter::passes_filters,
    kernel::{OFFSETS, current_tgid, load, rd},
    process::with_proc,
    slot::CPU_SLOT,
};

/// Adds to a page-cache counter of the current process: in this CPU's slot
/// when the process holds it (a read's lookups follow its own syscall on
/// the same CPU), else in the map.
#[inline(always)]
pub(crate) fn page_cache(f: impl Fn(&mut ProcCounters)) {
    let tgid = current_tgid();
    if tgid == 0 || !passes_filters(tgid) {
        return;
    }
    if let Some(s) = CPU_SLOT.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; these programs are not preempted, and a
        // sys_exit run they interrupted has `busy` set.
        let s = unsafe { &mut *s };
        if s.busy == 0 && s.tgid == tgid {
            f(&mut s.proc);
            return;
        }
    }
    with_proc(tgid, true, f);
}

/// Pages in [first, last], from a filemap tracepoint's arguments.
#[inline(always)]
pub(crate) fn page_range(first: u64, last: u64) -> u64 {
    if last >= first { last - first + 1 } else { 0 }
}

/// `mm_filemap_get_pages(mapping, index, last_index)`: a read looked up
/// [index, last_index].
#[btf_tracepoint(function = "mm_filemap_get_pages")]
pub fn iolens_fm_get_pages(ctx: BtfTracePointContext) -> i32 {
    let n = page_range(ctx.arg(1), ctx.arg(2));
    page_cache(|p| p.cache_lookup_pages += n);
    0
}

/// `mm_filemap_map_pages(mapping, start, last)`: fault-around mapped
/// [start, last].
#[btf_tracepoint(function = "mm_filemap_map_pages")]
pub fn iolens_fm_map_pages(ctx: BtfTracePointContext) -> i32 {
    let n = page_range(ctx.arg(1), ctx.arg(2));
    page_cache(|p| p.cache_mapped_pages += n);
    0
}

/// `mm_filemap_fault(mapping, index)`: a fault on a file mapping.
#[btf_tracepoint(function = "mm_filemap_fault")]
pub fn iolens_fm_fault(_ctx: BtfTracePointContext) -> i32 {
    page_cache(|p| p.cache_faults += 1);
    0
}

// Kernels without the three filemap tracepoints above (before 6.10;
// Debian 12's 6.1): the same counts from the functions that fire them,
// attached with fentry/fexit (BTF-typed arguments, as tp_btf, through a
// trampoline: no kprobe trap).

/// `filemap_get_pages(iocb, iter, fbatch)` returned 0: a read looked up
/// the pages of [ki_pos, ki_pos + count). That is the range
/// mm_filemap_get_pages reports where it exists, and it fires just before
/// the same `return 0`; an fexit, so a call that fails (-EAGAIN of a
/// non-blocking attempt that io_uring retries) is not counted twice.
#[fexit(function = "filemap_get_pages")]
pub fn iolens_fm_get_pages_fexit(ctx: FExitContext) -> i32 {
    // The return value follows the three arguments; an int.
    let ret: u64 = ctx.arg(3);
    let iocb: *const u8 = ctx.arg(0);
    let iter: *const u8 = ctx.arg(1);
    if ret as i32 != 0 || rd(&OFFSETS.read_range_valid) == 0 || iocb.is_null() || iter.is_null() {
        return 0;
    }
    // SAFETY: typed `struct kiocb *` and `struct iov_iter *` arguments and
    // verifier-known offsets.
    let (pos, count): (i64, u64) = unsafe {
        (
            load(iocb, rd(&OFFSETS.kiocb_pos)),
            load(iter, rd(&OFFSETS.iter_count)),
        )
    };
    if pos < 0 || count == 0 {
        return 0;
    }
    // [pos >> PAGE_SHIFT, DIV_ROUND_UP(pos + count, PAGE_SIZE) - 1], as the
    // kernel computes index and last_index.
    let first = (pos as u64) >> 12;
    let end = (pos as u64).saturating_add(count).saturating_add(4095) >> 12;
    let n = page_range(first, end.saturating_sub(1));
    page_cache(|p| p.cache_lookup_pages += n);
    0
}

/// `filemap_map_pages(vmf, start_pgoff, end_pgoff)`: fault-around of
/// [start, end], what mm_filemap_map_pages reports.
#[fentry(function = "filemap_map_pages")]
pub fn iolens_fm_map_pages_fentry(ctx: FEntryContext) -> i32 {
    let n = page_range(ctx.arg(1), ctx.arg(2));
    page_cache(|p| p.cache_mapped_pages += n);
    0
}

/// `filemap_fault(vmf)`: a fault on a file mapping, where mm_filemap_fault
/// fires.
#[fentry(function = "filemap_fault")]
pub fn iolens_fm_fault_fentry(_ctx: FEntryContext) -> i32 {
    page_cache(|p| p.cache_faults += 1);
    0
}

/// `filemap:mm_filemap_add_to_page_cache`: a folio of 2^order pages was
/// added: a miss (or readahead of one). Classic: the record carries the
/// folio's order, which the typed folio would need page-flag decoding for.
/// Where `order` sits comes from the tracepoint's tracefs format (36 on
/// 6.1 to 6.18); records without it (before folios) add one page each.
#[tracepoint]
pub fn iolens_fm_add(ctx: TracePointContext) -> u32 {
    let at = rd(&OFFSETS.fm_add_order);
    let order = if at == 0 {
        0
    } else {
        // SAFETY: `order` is a u8 at `at` in this tracepoint's record
        // (read with a probe read, bounds-checked by the helper).
        unsafe { ctx.read_at::<u8>(at) }.unwrap_or(0).min(20)
    };
    page_cache(|p| p.cache_added_pages += 1u64 << order);
    0
}

/// `writeback_dirty_folio(folio, mapping)`: a folio became dirty; counted
/// as its pages (ext4 here dirties large folios: one event for up to
/// hundreds of pages), sized the way folio_order() does. Before folios
/// (5.15) the agent attaches it to `writeback_dirty_page(page, mapping)`
/// with `folio_valid` off: a page each.
#[btf_tracepoint(function = "writeback_dirty_folio")]
pub fn iolens_wb_dirty(ctx: BtfTracePointContext) -> i32 {
    let folio: *const u8 = ctx.arg(0);
    let pages = if rd(&OFFSETS.folio_valid) != 0 && !folio.is_null() {
        // SAFETY: a typed `struct folio *` and verifier-known offsets.
        unsafe {
            let flags: u64 = load(folio, rd(&OFFSETS.folio_flags));
            if flags & (1u64 << (rd(&OFFSETS.pg_head) & 63)) != 0 {
                let order: u8 = load(folio, rd(&OFFSETS.folio_order));
                1u64 << order.min(20)
            } else {
                1
            }
        }
    } else {
        1
    };
    page_cache(|p| p.cache_dirtied_pages += pages);
    0
}
