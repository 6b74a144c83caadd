//! The page_cache family: lookups, misses, faults and dirtied pages
//! against mincore(2) on files evicted with posix_fadvise(DONTNEED).

mod common;

use common::{Scenario, get, grew};
use iolens_tests::{Metrics, PinnedFile, can_load_probes, resident_pages, tcp_sink};

/// 1 MiB = 256 pages, evicted in the child's set-up.
const PAGES: u64 = 256;

#[test]
fn page_cache_cold_then_warm_read() {
    if !can_load_probes("page_cache_cold_then_warm_read") {
        return;
    }
    let mut run = Scenario::start("cache", &[]);
    let pid = run.pid;
    let file = format!("{}/cached", run.dir);
    assert_eq!(
        resident_pages(&file),
        0,
        "set-up should have evicted the file"
    );
    let m0 = run.scrape();
    let r = run.child.step();
    assert_eq!(r.end, "phase warm");
    let m1 = run.scrape();
    let d = |a: &Metrics, b: &Metrics, name: &str| grew(a, b, name, pid, &[]);
    // One page per read: each read looks up exactly its page. The last read
    // returns 0 at EOF and looks up none.
    assert_eq!(d(&m0, &m1, "iolens_page_cache_lookup_pages_total"), PAGES);
    // Cold: every page was a miss. Readahead adds whole folios but never
    // past EOF, so the count is the file's pages; allow 0 slack.
    let cold_added = d(&m0, &m1, "iolens_page_cache_added_pages_total");
    assert_eq!(cold_added, PAGES, "cold misses");
    assert_eq!(
        resident_pages(&file),
        PAGES as usize,
        "mincore after the cold read"
    );
    // All cached now; keep it so until the warm read is done. (Once, a
    // warm read here saw misses: reclaim had taken pages in between.)
    let pin = PinnedFile::lock(&file);

    let r = run.child.step();
    assert_eq!(r.end, "done");
    let m2 = run.scrape();
    assert_eq!(d(&m1, &m2, "iolens_page_cache_lookup_pages_total"), PAGES);
    // Warm: no misses; hit ratio (lookups - added) / lookups = 1.
    assert_eq!(
        d(&m1, &m2, "iolens_page_cache_added_pages_total"),
        0,
        "warm misses"
    );
    drop(pin);
    run.finish();
}

/// The kernel's own count of pages dirtied, machine-wide (`nr_dirtied` in
/// /proc/vmstat, bumped where writeback_dirty_folio fires), with the
/// per-CPU deltas folded in first (vm.stat_refresh, root only).
fn vmstat_dirtied() -> u64 {
    std::fs::write("/proc/sys/vm/stat_refresh", "1").expect("folding vm stats (root)");
    std::fs::read_to_string("/proc/vmstat")
        .expect("/proc/vmstat")
        .lines()
        .find_map(|l| l.strip_prefix("nr_dirtied "))
        .and_then(|v| v.trim().parse().ok())
        .expect("nr_dirtied in /proc/vmstat")
}

/// A write of 1 MiB to a new file adds and dirties its 256 pages. ext4 here
/// dirties large folios (two events for the whole MiB), so this checks the
/// folio sizing. Writeback can clean a folio while the writes go on, and
/// dirtying it again counts again (once, 257 was seen): so the count is at
/// least the 256 pages and at most what the kernel counted machine-wide.
#[test]
fn page_cache_dirtied_pages_of_a_new_file() {
    if !can_load_probes("page_cache_dirtied_pages_of_a_new_file") {
        return;
    }
    let mut run = Scenario::start("cache-dirty", &[]);
    let pid = run.pid;
    let m0 = run.scrape();
    let v0 = vmstat_dirtied();
    run.child.go();
    let v1 = vmstat_dirtied();
    let m1 = run.scrape();
    let d = |name: &str| grew(&m0, &m1, name, pid, &[]);
    let dirtied = d("iolens_page_cache_dirtied_pages_total");
    assert!(
        (PAGES..=v1 - v0).contains(&dirtied),
        "dirtied {dirtied}: the kernel counted {} machine-wide",
        v1 - v0
    );
    assert_eq!(d("iolens_page_cache_added_pages_total"), PAGES, "added");
    assert_eq!(d("iolens_page_cache_lookup_pages_total"), 0, "lookups");
    run.finish();
}

#[test]
fn page_cache_mmap_read_path() {
    if !can_load_probes("page_cache_mmap_read_path") {
        return;
    }
    let mut run = Scenario::start("cache-mmap", &[]);
    let pid = run.pid;
    let file = format!("{}/cached", run.dir);
    let m0 = run.scrape();
    run.child.go();
    let m1 = run.scrape();
    let d = |name: &str| grew(&m0, &m1, name, pid, &[]);
    assert_eq!(
        d("iolens_page_cache_added_pages_total"),
        PAGES,
        "cold mmap misses"
    );
    let faults = d("iolens_page_cache_faults_total");
    let mapped = d("iolens_page_cache_mapped_pages_total");
    // Fault-around maps neighbours already in cache, so there are fewer
    // faults than pages, but at least one, and no read(2) lookups at all.
    assert!((1..=PAGES).contains(&faults), "faults {faults}");
    assert!(
        faults + mapped >= PAGES,
        "faults {faults} + fault-around {mapped} < {PAGES}"
    );
    assert_eq!(d("iolens_page_cache_lookup_pages_total"), 0);
    assert_eq!(resident_pages(&file), PAGES as usize);
    run.finish();
}

#[test]
fn page_cache_misses_of_sendfile_belong_to_the_sender() {
    if !can_load_probes("page_cache_misses_of_sendfile_belong_to_the_sender") {
        return;
    }
    let (port, sink) = tcp_sink();
    let mut run = Scenario::start("cache-sendfile", &[&port.to_string()]);
    let pid = run.pid;
    let m0 = run.scrape();
    run.child.go();
    let m1 = run.scrape();
    let d = |name: &str| grew(&m0, &m1, name, pid, &[]);
    assert_eq!(
        d("iolens_page_cache_added_pages_total"),
        PAGES,
        "sendfile's misses"
    );
    assert_eq!(
        get(
            &m1,
            "iolens_io_bytes_total",
            pid,
            &[("path", "file_to_socket")]
        ),
        1 << 20
    );
    run.finish();
    assert_eq!(sink.join().expect("sink"), 1 << 20);
}
