//! The page_cache family's exposition: pages looked up, added (misses),
//! dirtied, faults and fault-around per process.

use iolens_common::ProcCounters;

use super::{Family, Mode, ProcGet, Tracker};

impl Tracker {
    pub(super) fn page_cache_families<'m>(
        &self,
        procs: &[(u32, ProcCounters)],
        mode: Mode<'m>,
    ) -> Vec<Family<'m>> {
        let specs: [(&'static str, &'static str, ProcGet); 5] = [
            (
                "iolens_page_cache_lookup_pages_total",
                "Page-cache pages looked up by reads (filemap:mm_filemap_get_pages ranges). Hit ratio, after bcc cachestat: (lookups - max(0, added - dirtied)) / lookups, clamped to [0, 1]; readahead can add more pages than a read looked up, and dirtied counts folios, so for processes that write it is a lower bound.",
                |p| p.cache_lookup_pages as f64,
            ),
            (
                "iolens_page_cache_added_pages_total",
                "Pages added to the page cache on this process's behalf (misses, readahead included; filemap:mm_filemap_add_to_page_cache, 2^order pages each).",
                |p| p.cache_added_pages as f64,
            ),
            (
                "iolens_page_cache_faults_total",
                "Page faults on file mappings (filemap:mm_filemap_fault).",
                |p| p.cache_faults as f64,
            ),
            (
                "iolens_page_cache_mapped_pages_total",
                "Pages mapped by fault-around on file mappings (filemap:mm_filemap_map_pages ranges).",
                |p| p.cache_mapped_pages as f64,
            ),
            (
                "iolens_page_cache_dirtied_pages_total",
                "Page-cache pages this process dirtied (writeback:writeback_dirty_folio, each folio counted as its pages).",
                |p| p.cache_dirtied_pages as f64,
            ),
        ];
        self.proc_counter_families(procs, &specs, false, mode)
    }
}
