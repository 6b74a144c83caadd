//! The waits family: epoll, poll and select calls, events, timeouts and
//! scanned fds, and epoll blocked time, against a child that makes an
//! exactly known number of calls.

mod common;

use common::{Scenario, grew};
use iolens_tests::{Metrics, can_load_probes};

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
