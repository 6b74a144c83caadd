//! The sched family: context switches and CPU time against the kernel's
//! own per-thread counts in /proc.

mod common;

use common::{Scenario, get, get_f};
use iolens_tests::{
    Metrics, can_load_probes, schedstat_ns, stat_cpu_seconds, status_sum, wait_all_asleep,
};

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
