//! Context switches, CPU time, mode switches, page cache, readiness waits
//! and io_uring, each against an independent oracle: the kernel's own
//! per-thread counters in /proc, mincore(2), or a child that makes an
//! exactly known number of calls.

use iolens_tests::{
    Agent, Metrics, PinnedFile, TestChild, can_load_probes, resident_pages, schedstat_ns,
    stat_cpu_seconds, status_sum, tcp_sink, tempdir, wait_all_asleep,
};

const CHILD: &str = env!("CARGO_BIN_EXE_iolens-testchild");

/// An unfiltered agent and, started under it so that every event of its life
/// is seen, the test child running one scenario in its own scratch directory.
struct Scenario {
    agent: Agent,
    child: TestChild,
    pid: u32,
    dir: String,
}

impl Scenario {
    /// Starts the agent, then `iolens-testchild NAME DIR EXTRA…` (DIR is a
    /// fresh scratch directory named after the scenario).
    fn start(name: &str, extra: &[&str]) -> Scenario {
        let agent = Agent::start(&[]);
        let dir = tempdir(name);
        let mut args = vec![name, dir.as_str()];
        args.extend_from_slice(extra);
        let child = TestChild::spawn(CHILD, &args);
        let pid = child.pid();
        Scenario {
            agent,
            child,
            pid,
            dir,
        }
    }

    fn scrape(&self) -> Metrics {
        self.agent.scrape()
    }

    /// Lets the child exit and removes its scratch directory.
    fn finish(self) {
        self.child.finish();
        let _ = std::fs::remove_dir_all(self.dir);
    }
}

fn get(m: &Metrics, name: &str, pid: u32, more: &[(&str, &str)]) -> u64 {
    let pid = pid.to_string();
    let mut want = vec![("pid", pid.as_str())];
    want.extend_from_slice(more);
    m.sum(name, &want)
}

/// How much `name` (with labels `more`) grew for `pid` from `a` to `b`.
fn grew(a: &Metrics, b: &Metrics, name: &str, pid: u32, more: &[(&str, &str)]) -> u64 {
    get(b, name, pid, more) - get(a, name, pid, more)
}

fn get_f(m: &Metrics, name: &str, pid: u32) -> f64 {
    let pid = pid.to_string();
    m.samples
        .iter()
        .filter(|s| s.name == name && s.labels.get("pid") == Some(&pid))
        .map(|s| s.value)
        .sum()
}

/// (voluntary, involuntary) switches of `pid`'s live threads, as the
/// kernel counts them in /proc/PID/task/*/status.
fn proc_switches(pid: u32) -> (u64, u64) {
    (
        status_sum(pid, "voluntary_ctxt_switches"),
        status_sum(pid, "nonvoluntary_ctxt_switches"),
    )
}

/// (voluntary, involuntary) switches iolens counted for `pid`.
fn iolens_switches(m: &Metrics, pid: u32) -> (u64, u64) {
    let kind = |k: &str| get(m, "iolens_context_switches_total", pid, &[("kind", k)]);
    (kind("voluntary"), kind("involuntary"))
}

/// Signals landing as a thread goes to sleep: the kernel counts those
/// switches voluntary though the tracepoint reports the task runnable.
#[test]
fn context_switches_with_signals_equal_the_kernels_counts() {
    if !can_load_probes("context_switches_with_signals_equal_the_kernels_counts") {
        return;
    }
    let mut run = Scenario::start("ctxsw-signals", &[]);
    let pid = run.pid;
    run.child.go();
    wait_all_asleep(pid);
    let (vol, invol) = proc_switches(pid);
    let m = run.scrape();
    assert!(vol >= 200, "the scenario did not run as designed: {vol}");
    assert_eq!(
        iolens_switches(&m, pid),
        (vol, invol),
        "(voluntary, involuntary) vs /proc/{pid}/task/*/status"
    );
    run.finish();
}

/// A thread whose entry in the kernel side's per-thread array another live
/// thread holds keeps its state in task local storage: the signals
/// scenario, with the sleeper (whose switches only that state tells apart)
/// as such a thread.
#[test]
fn context_switches_of_a_thread_sharing_an_entry_equal_the_kernels_counts() {
    if !can_load_probes("context_switches_of_a_thread_sharing_an_entry_equal_the_kernels_counts") {
        return;
    }
    let mut run = Scenario::start("ctxsw-shared", &[]);
    let pid = run.pid;
    let r = run.child.step();
    assert_eq!(r.end, "phase shared");
    let tids: Vec<u32> = r
        .notes
        .iter()
        .find_map(|l| l.strip_prefix("tids "))
        .expect("tids line")
        .split_whitespace()
        .map(|t| t.parse().expect("tid"))
        .collect();
    let slots = iolens_common::THREAD_SLOTS;
    assert!(
        tids[0] != tids[1] && tids[0] % slots == tids[1] % slots,
        "the scenario did not run as designed: {tids:?}"
    );
    // The threads spawned on the way to a shared index are gone from
    // /proc: compare what happens from here on, among the live threads.
    wait_all_asleep(pid);
    let (vol0, invol0) = proc_switches(pid);
    let m0 = run.scrape();
    assert_eq!(run.child.step().end, "done");
    wait_all_asleep(pid);
    let (vol1, invol1) = proc_switches(pid);
    let m1 = run.scrape();
    assert!(
        vol1 - vol0 >= 200,
        "the scenario did not run as designed: {}",
        vol1 - vol0
    );
    let ((v0, i0), (v1, i1)) = (iolens_switches(&m0, pid), iolens_switches(&m1, pid));
    assert_eq!(
        (v1 - v0, i1 - i0),
        (vol1 - vol0, invol1 - invol0),
        "(voluntary, involuntary) vs /proc/{pid}/task/*/status"
    );
    run.finish();
}

#[test]
fn context_switches_equal_the_kernels_per_thread_counts() {
    if !can_load_probes("context_switches_equal_the_kernels_per_thread_counts") {
        return;
    }
    // Started under the agent: every switch of its life is seen.
    let mut run = Scenario::start("ctxsw", &[]);
    let pid = run.pid;
    run.child.go();
    // The child prints its report before it blocks for the next line:
    // wait until both threads sleep, then nothing switches until we write.
    wait_all_asleep(pid);
    let (vol, invol) = proc_switches(pid);
    let sched_ns = schedstat_ns(pid);
    let stat_s = stat_cpu_seconds(pid);
    let m = run.scrape();
    // 2000 ping-pong rounds block each thread about 2000 times.
    assert!(vol >= 2000, "the scenario did not run as designed: {vol}");
    assert_eq!(
        iolens_switches(&m, pid),
        (vol, invol),
        "(voluntary, involuntary) vs /proc/{pid}/task/*/status"
    );

    // On-CPU time. schedstat's sum_exec_runtime is the scheduler's own
    // figure in ns; ours is stamped at the same switches with the run
    // queue's clock, which also counts interrupt time the scheduler's task
    // clock may leave out: allow 5%
    // or 2 ms. utime+stime are in clock ticks (10 ms each, per thread, per
    // field): allow 2 ticks per thread per field and 5%.
    let ours = get_f(&m, "iolens_cpu_seconds_total", pid);
    let sched = sched_ns as f64 / 1e9;
    assert!(sched >= 0.3, "the 300 ms CPU spin did not happen: {sched}");
    assert!(
        (ours - sched).abs() <= (0.05 * sched).max(0.002),
        "cpu seconds: iolens {ours} vs schedstat {sched}"
    );
    assert!(
        (ours - stat_s).abs() <= 0.05 * stat_s + 2.0 * 2.0 * 0.01 * 2.0,
        "cpu seconds: iolens {ours} vs /proc/{pid}/stat utime+stime {stat_s}"
    );
    run.finish();
}

#[test]
fn mode_switches_are_two_per_syscall_of_the_process() {
    if !can_load_probes("mode_switches_are_two_per_syscall_of_the_process") {
        return;
    }
    let mut run = Scenario::start("syscalls", &[]);
    let pid = run.pid;
    let before = run.scrape();
    run.child.go();
    let after = run.scrape();
    let d = |name: &str| grew(&before, &after, name, pid, &[]);
    // 10,000 getppid plus the handshake: the read of "go" from the stdin
    // pipe and the one write of the report to the stdout pipe. Nothing
    // else: the loop allocates nothing.
    let io = |syscall: &str, path: &str| {
        grew(
            &before,
            &after,
            "iolens_syscalls_total",
            pid,
            &[("syscall", syscall), ("path", path)],
        )
    };
    assert_eq!(
        (io("read", "pipe_to_user"), io("write", "user_to_pipe")),
        (1, 1)
    );
    assert_eq!(d("iolens_syscalls_total"), 2, "no other accounted call");
    assert_eq!(d("iolens_process_syscalls_total"), 10_002);
    assert_eq!(
        get(&after, "iolens_mode_switches_total", pid, &[]),
        2 * get(&after, "iolens_process_syscalls_total", pid, &[])
    );
    run.finish();
}

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

#[test]
fn readiness_waits_count_calls_events_timeouts_and_scans() {
    if !can_load_probes("readiness_waits_count_calls_events_timeouts_and_scans") {
        return;
    }
    let mut run = Scenario::start("epoll", &[]);
    let pid = run.pid;
    let m0 = run.scrape();
    let r = run.child.step();
    assert_eq!(r.end, "done");
    let nfds: u64 = r
        .notes
        .iter()
        .find_map(|n| n.strip_prefix("nfds select "))
        .and_then(|v| v.parse().ok())
        .expect("nfds note");
    let m1 = run.scrape();
    let d = |name: &str, sc: &str| grew(&m0, &m1, name, pid, &[("syscall", sc)]);
    // 100 waits that find 3 ready pipes, 10 that time out after 1 ms.
    assert_eq!(d("iolens_syscalls_total", "epoll_wait"), 110);
    assert_eq!(d("iolens_wait_events_total", "epoll_wait"), 300);
    assert_eq!(d("iolens_wait_timeouts_total", "epoll_wait"), 10);
    // poll over 3 fds, 1 ready, 100 times; select likewise over nfds.
    assert_eq!(d("iolens_syscalls_total", "poll"), 100);
    assert_eq!(d("iolens_wait_events_total", "poll"), 100);
    assert_eq!(d("iolens_wait_fds_scanned_total", "poll"), 300);
    // glibc implements select() with the pselect6 syscall on x86_64.
    assert_eq!(d("iolens_syscalls_total", "pselect6"), 100);
    assert_eq!(d("iolens_wait_events_total", "pselect6"), 100);
    assert_eq!(d("iolens_wait_fds_scanned_total", "pselect6"), 100 * nfds);

    // The blocked-time histogram of this process name gained the 110 waits.
    // The 100 that found events ready never slept: 0 ns, in the first
    // bucket (le 1.024 µs). The 10 timeouts each slept from just after
    // their start, when the kernel set the 1 ms deadline, until the timer:
    // all above 524 µs, together at least 9.5 ms (a few µs of each call
    // precede the sleep; 950 µs allows 50) and at most the calls' own wall
    // time as the child clocked it.
    let timeouts_wall: f64 = r
        .notes
        .iter()
        .find_map(|n| n.strip_prefix("timeouts wall ns "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("timeouts wall note")
        / 1e9;
    let hist = |m: &Metrics, suffix: &str, le_ns: Option<u64>| -> f64 {
        m.samples
            .iter()
            .filter(|s| {
                s.name == format!("iolens_epoll_wait_seconds{suffix}")
                    && s.labels.get("comm").map(String::as_str) == Some("iolens-testchil")
                    && le_ns.is_none_or(|ns| {
                        s.labels
                            .get("le")
                            .and_then(|le| le.parse::<f64>().ok())
                            .is_some_and(|le| (le * 1e9 - ns as f64).abs() < 0.5)
                    })
            })
            .map(|s| s.value)
            .sum()
    };
    let grew_h =
        |suffix: &str, le_ns: Option<u64>| hist(&m1, suffix, le_ns) - hist(&m0, suffix, le_ns);
    assert_eq!(grew_h("_count", None), 110.0);
    assert_eq!(
        grew_h("_bucket", Some(1 << 10)),
        100.0,
        "waits that slept 0"
    );
    assert_eq!(
        grew_h("_bucket", Some(1 << 19)),
        100.0,
        "no timeout under 524 µs"
    );
    let slept = grew_h("_sum", None);
    assert!(
        (0.0095..=timeouts_wall).contains(&slept),
        "10 timeouts of 1 ms slept {slept} s in {timeouts_wall} s of calls"
    );
    run.finish();
}

fn uring_case(scenario: &str, expect_enter: bool) {
    let mut run = Scenario::start(scenario, &[]);
    let pid = run.pid;
    run.child.go();
    let m = run.scrape();
    let op = |name: &str, opcode: &str| get(&m, name, pid, &[("opcode", opcode)]);
    // 50 NOPs and 50 writes of 100 bytes, each submitted and completed once,
    // whichever thread of the process did the work.
    assert_eq!(op("iolens_io_uring_sqes_total", "nop"), 50, "{scenario}");
    assert_eq!(op("iolens_io_uring_cqes_total", "nop"), 50, "{scenario}");
    assert_eq!(op("iolens_io_uring_sqes_total", "write"), 50, "{scenario}");
    assert_eq!(op("iolens_io_uring_cqes_total", "write"), 50, "{scenario}");
    assert_eq!(
        op("iolens_io_uring_bytes_total", "write"),
        5_000,
        "{scenario}"
    );
    assert_eq!(get(&m, "iolens_io_uring_failures_total", pid, &[]), 0);
    assert_eq!(get(&m, "iolens_io_uring_rings_created_total", pid, &[]), 1);
    // Nothing may be attributed to a process that is not the child: its
    // io-wq workers and SQPOLL thread share its tgid.
    let stray: u64 = m
        .samples
        .iter()
        .filter(|s| s.name == "iolens_io_uring_sqes_total")
        .filter(|s| s.labels.get("comm").is_some_and(|c| c.starts_with("iou-")))
        .map(|s| s.value as u64)
        .sum();
    assert_eq!(stray, 0, "work attributed to io_uring threads as processes");
    if expect_enter {
        // 50 io_uring_enter calls each consumed a NOP and a write.
        assert_eq!(
            get(&m, "iolens_io_uring_enter_submitted_total", pid, &[]),
            100
        );
    }
    run.finish();
}

#[test]
fn io_uring_plain_ring() {
    if can_load_probes("io_uring_plain_ring") {
        uring_case("uring", true);
    }
}

#[test]
fn io_uring_async_punts_count_for_the_owner() {
    if can_load_probes("io_uring_async_punts_count_for_the_owner") {
        uring_case("uring-async", true);
    }
}

#[test]
fn io_uring_sqpoll_counts_for_the_owner() {
    if can_load_probes("io_uring_sqpoll_counts_for_the_owner") {
        // The SQ thread submits; io_uring_enter only waits.
        uring_case("uring-sqpoll", false);
    }
}
