//! The io_uring family: SQEs, CQEs and bytes by opcode, attributed to
//! the ring's owner from io-wq and SQPOLL threads too.

mod common;

use common::{Scenario, get};
use iolens_tests::can_load_probes;

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
