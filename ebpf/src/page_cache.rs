use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
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

/// `filemap:mm_filemap_add_to_page_cache`: a folio of 2^order pages was
/// added: a miss (or readahead of one). Classic: the record carries the
/// folio's order, which the typed folio would need page-flag decoding for.
#[tracepoint]
pub fn iolens_fm_add(ctx: TracePointContext) -> u32 {
    // SAFETY: `order` is at offset 36 in this tracepoint's format.
    let order = unsafe { ctx.read_at::<u8>(36) }.unwrap_or(0).min(20);
    page_cache(|p| p.cache_added_pages += 1u64 << order);
    0
}

/// `writeback_dirty_folio(folio, mapping)`: a folio became dirty; counted
/// as its pages (ext4 here dirties large folios: one event for up to
/// hundreds of pages), sized the way folio_order() does.
#[btf_tracepoint(function = "writeback_dirty_folio")]
pub fn iolens_wb_dirty(ctx: BtfTracePointContext) -> i32 {
    let folio: *const u8 = ctx.arg(0);
    let pages = if rd(&OFFSETS.folio_valid) != 0 && !folio.is_null() {
        // SAFETY: a typed `struct folio *` and verifier-known offsets.
        unsafe {
            let flags: u64 = load(folio, rd(&OFFSETS.folio_flags));
            if flags & (1u64 << (rd(&OFFSETS.pg_head) & 63)) != 0 {
                let order: u64 = load(folio, rd(&OFFSETS.folio_flags_1));
                1u64 << (order & 0xff).min(20)
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
