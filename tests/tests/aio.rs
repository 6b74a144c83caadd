//! The aio family (Linux native AIO): a child submits exactly known iocbs
//! of every opcode the kernel runs with raw io_submit calls on an O_DIRECT
//! file, reaps them with io_getevents and io_pgetevents, and checks every
//! result itself; iolens's counts per opcode and path must equal its
//! tally exactly.

mod common;

use std::collections::BTreeMap;

use common::{CHILD, get};
use iolens_tests::{Agent, Metrics, TestChild, can_load_probes, tempdir};

/// (op, path) -> value of `name` for `pid`, over every series.
fn by_op(m: &Metrics, name: &str, pid: u32) -> BTreeMap<(String, String), u64> {
    let pid = pid.to_string();
    let mut out = BTreeMap::new();
    for s in &m.samples {
        if s.name != name || s.labels.get("pid") != Some(&pid) {
            continue;
        }
        let op = s.labels.get("op").cloned().unwrap_or_default();
        let path = s.labels.get("path").cloned().unwrap_or_else(|| "-".into());
        *out.entry((op, path)).or_default() += s.value as u64;
    }
    out
}

fn aio_case(test: &str, env: &[(&str, &str)]) {
    let agent = Agent::start_env(&[], env);
    let dir = tempdir(test);
    let mut child = TestChild::spawn(CHILD, &["aio", dir.as_str()]);
    let pid = child.pid();
    let before = agent.scrape();
    let report = child.step();
    assert_eq!(report.end, "done");
    let after = agent.scrape();
    let grew = |name: &str| -> BTreeMap<(String, String), u64> {
        let (a, b) = (by_op(&before, name, pid), by_op(&after, name, pid));
        b.into_iter()
            .map(|(k, v)| {
                let d = v - a.get(&k).copied().unwrap_or(0);
                (k, d)
            })
            .filter(|(_, d)| *d != 0)
            .collect()
    };
    // The child's tally: one `count aio_<op> <path> <completions> <bytes>
    // <failed>` row per opcode and path.
    let mut calls: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed: BTreeMap<String, u64> = BTreeMap::new();
    let mut bytes: BTreeMap<(String, String), u64> = BTreeMap::new();
    for c in &report.counts {
        let op = c
            .syscall
            .strip_prefix("aio_")
            .unwrap_or_else(|| panic!("not an aio row: {}", c.syscall))
            .to_owned();
        *calls.entry(op.clone()).or_default() += c.calls;
        if c.errors > 0 {
            *failed.entry(op.clone()).or_default() += c.errors;
        }
        if c.path != "-" && c.bytes > 0 {
            *bytes.entry((op, c.path.clone())).or_default() += c.bytes;
        }
    }
    // 8 + 2 + 1 preads (two from one reused iocb, one failing), 4 pwrites,
    // 3 preadv, 2 pwritev, 2 fsync, 2 fdsync, 3 + 1 polls: every kind the
    // kernel runs, and the child checked each result, so this only guards
    // against a child that did less.
    assert_eq!(
        calls.values().sum::<u64>(),
        28,
        "the child's tally: {calls:?}"
    );
    let per_op = |m: BTreeMap<(String, String), u64>| -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for ((op, _), v) in m {
            *out.entry(op).or_default() += v;
        }
        out
    };
    // Submitted and completed alike: the two io_submit calls the kernel
    // refused (a bad fd, a NOOP) submitted nothing.
    assert_eq!(
        per_op(grew("iolens_aio_submitted_total")),
        calls,
        "submitted"
    );
    assert_eq!(
        per_op(grew("iolens_aio_completed_total")),
        calls,
        "completed"
    );
    // The misaligned O_DIRECT read.
    assert_eq!(per_op(grew("iolens_aio_failed_total")), failed, "failed");
    assert_eq!(
        grew("iolens_aio_bytes_total"),
        bytes,
        "bytes by op and path"
    );
    let cancelled: u64 = report
        .notes
        .iter()
        .filter_map(|n| n.strip_prefix("aio cancelled poll "))
        .map(|v| v.parse::<u64>().expect("a count"))
        .sum();
    assert_eq!(cancelled, 1, "the child's notes: {:?}", report.notes);
    assert_eq!(
        get(&after, "iolens_aio_cancelled_total", pid, &[("op", "poll")])
            - get(
                &before,
                "iolens_aio_cancelled_total",
                pid,
                &[("op", "poll")]
            ),
        cancelled
    );
    assert_eq!(
        get(&after, "iolens_aio_cancelled_total", pid, &[]),
        cancelled,
        "cancels of other opcodes"
    );
    // The AIO bytes are not syscall bytes: io_bytes_total has none of them
    // (the step's only accounted syscalls are the handshake's, its pipe
    // write and the report).
    for path in ["file_to_user", "user_to_file"] {
        assert_eq!(
            get(&after, "iolens_io_bytes_total", pid, &[("path", path)]),
            get(&before, "iolens_io_bytes_total", pid, &[("path", path)]),
            "{path}"
        );
    }
    child.finish();
    let (status, log) = agent.stop();
    assert!(status.success(), "agent exit {status:?}\n{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn aio_ops_bytes_and_failures_match_the_child() {
    if can_load_probes("aio_ops_bytes_and_failures_match_the_child") {
        aio_case("aio", &[]);
    }
}

/// The same with the fd walk of kernels without bpf_rdonly_cast, which
/// classifies the iocbs' fds here.
#[test]
fn aio_ops_bytes_and_failures_match_the_child_with_probe_reads() {
    if can_load_probes("aio_ops_bytes_and_failures_match_the_child_with_probe_reads") {
        aio_case("aio-reads", &[("IOLENS_PROBE_READS", "1")]);
    }
}
