//! Adding to per-CPU map values: the one lookup-or-insert every program
//! uses.

use core::borrow::Borrow;

use aya_ebpf::maps::{LruPerCpuHashMap, PerCpuHashMap};

use crate::{health::bump, kernel::BPF_NOEXIST};

/// A per-CPU hash map whose values the programs add to.
pub(crate) trait PerCpuTally<K, V> {
    /// This CPU's value of `key`, if the key is in the map.
    fn value(&self, key: &K) -> Option<*mut V>;
    /// Inserts `key` with `value` on this CPU (zeroed on the others) if it
    /// is absent; false if it was present or the map refused.
    fn insert_new(&self, key: &K, value: &V) -> bool;
}

impl<K, V> PerCpuTally<K, V> for LruPerCpuHashMap<K, V> {
    #[inline(always)]
    fn value(&self, key: &K) -> Option<*mut V> {
        self.get_ptr_mut(key)
    }

    #[inline(always)]
    fn insert_new(&self, key: &K, value: &V) -> bool {
        self.insert(key, value, BPF_NOEXIST).is_ok()
    }
}

impl<K, V> PerCpuTally<K, V> for PerCpuHashMap<K, V> {
    #[inline(always)]
    fn value(&self, key: &K) -> Option<*mut V> {
        self.get_ptr_mut(key)
    }

    #[inline(always)]
    fn insert_new(&self, key: &K, value: &V) -> bool {
        self.insert(key, value, BPF_NOEXIST).is_ok()
    }
}

/// Adds to `key`'s value on this CPU with `add`. A new key goes in with
/// `zero` on every CPU, counted in `inserted` if given (user space derives
/// LRU evictions from that count), and is then added to through a second
/// lookup, the same way as when another CPU inserted it between the lookup
/// and the insert (which then fails). If even that lookup finds nothing,
/// `dropped` counts the loss. Returns whether this call inserted the key.
///
/// Inserting the zero value rather than the value with the addition in it
/// costs one more lookup on a key's first event only, and lets a large
/// value's zero come from a map instead of the stack (see
/// `waits::ZERO_HIST`): `zero` makes the value or hands a reference to
/// one, which may be a map value (the insert helper reads it as memory of
/// the value's size wherever it is), or None if it has none to give (the
/// key is then not inserted, and the event counts as dropped unless another
/// CPU inserted it).
///
/// The per-CPU values are written only on their own CPU, by programs that
/// do not run at once there (sys_exit marks the slot busy while it
/// updates, and every other program leaves a busy slot alone), so a plain
/// read-modify-write through the pointer is safe.
#[inline(always)]
pub(crate) fn add_to<K, V, Z: Borrow<V>>(
    map: &impl PerCpuTally<K, V>,
    key: &K,
    zero: impl FnOnce() -> Option<Z>,
    add: impl Fn(&mut V),
    inserted: Option<u32>,
    dropped: u32,
) -> bool {
    if let Some(v) = map.value(key) {
        // SAFETY: a valid map value of this CPU; see above for why nothing
        // else writes it now.
        add(unsafe { &mut *v });
        return false;
    }
    // Made only here, on a key's first event: a zero made before the
    // lookup would be zeroed on every event.
    let new = zero().is_some_and(|z| map.insert_new(key, z.borrow()));
    if new && let Some(counter) = inserted {
        bump(counter);
    }
    match map.value(key) {
        // SAFETY: as above.
        Some(v) => add(unsafe { &mut *v }),
        None => bump(dropped),
    }
    new
}
