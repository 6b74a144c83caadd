use aya_ebpf::{macros::map, maps::PerCpuArray};
use iolens_common::counter;

#[map]
pub(crate) static HEALTH: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[inline(always)]
pub(crate) fn bump(index: u32) {
    bump_by(index, 1);
}

/// Adds `n` to health counter `index` on this CPU.
#[inline(always)]
pub(crate) fn bump_by(index: u32, n: u64) {
    if let Some(c) = HEALTH.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot only this CPU writes.
        unsafe { *c += n };
    }
}
