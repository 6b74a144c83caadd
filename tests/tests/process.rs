//! The process family: a process's series live while it does, an exited
//! one keeps its final counts for the grace period and is then gone, and
//! processes forked one after another each get exactly their own calls.

use std::time::Duration;

use iolens_tests::{Agent, TestChild, can_load_probes, pin_thread, tempdir, wait_until};

const CHILD: &str = env!("CARGO_BIN_EXE_iolens-testchild");

#[test]
fn exited_process_keeps_final_counts_until_the_ttl() {
    if !can_load_probes("exited_process_keeps_final_counts_until_the_ttl") {
        return;
    }
    let agent = Agent::start(&["--exit-ttl", "3s", "--refresh", "200ms"]);
    let dir = tempdir("exit");
    let mut c = TestChild::spawn(CHILD, &["exit", &dir]);
    let pid = c.pid().to_string();
    c.go();
    // The child exits by itself after its report; reap it.
    c.finish();
    let m = agent.scrape();
    let want = [
        ("pid", pid.as_str()),
        ("syscall", "write"),
        ("path", "user_to_file"),
    ];
    assert_eq!(
        m.sum("iolens_syscalls_total", &want),
        7,
        "final count visible after exit"
    );
    assert_eq!(m.sum("iolens_io_bytes_total", &want), 21);
    let gone = wait_until(Duration::from_secs(15), || {
        !agent
            .scrape()
            .has("iolens_syscalls_total", &[("pid", pid.as_str())])
    });
    assert!(
        gone,
        "series of pid {pid} still exported well after the 3 s TTL"
    );
    // Nowhere near full: the keys the agent deleted for the expired process
    // must not be mistaken for LRU evictions.
    let m = agent.scrape();
    for map in [
        "SYSCALL_STATS",
        "PROC_INFO",
        "PROC_COUNTERS",
        "URING_STATS",
        "AIO_STATS",
    ] {
        assert!(
            m.has("iolens_map_evictions_total", &[("map", map)]),
            "{map}"
        );
        assert_eq!(
            m.sum("iolens_map_evictions_total", &[("map", map)]),
            0,
            "{map}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// sys_exit remembers the current task per CPU by the address of its saved
/// registers, which sit on its kernel stack; once a thread exits, its stack
/// goes to the next task forked on that CPU. Short-lived processes forked
/// one after another on one CPU, each making a different number of calls,
/// must each get exactly their own: a stale memory would hand a child's
/// calls to the child before it.
#[test]
fn processes_forked_on_one_cpu_after_exits_get_exactly_their_own_calls() {
    if !can_load_probes("processes_forked_on_one_cpu_after_exits_get_exactly_their_own_calls") {
        return;
    }
    let agent = Agent::start(&[]);
    // Pin this test's thread: the children are forked, run and exit on
    // CPU 0, where the kernel keeps the freed stacks for the next fork.
    pin_thread(0).expect("pinning the test thread to CPU 0");
    let children: Vec<(String, u64)> = (0..24u64)
        .map(|i| {
            let n = 5 + i;
            let mut c = std::process::Command::new("dd")
                .args(["if=/dev/zero", "of=/dev/null", "bs=1", "status=none"])
                .arg(format!("count={n}"))
                .spawn()
                .expect("dd runs");
            let pid = c.id().to_string();
            assert!(c.wait().expect("dd is reaped").success());
            (pid, n)
        })
        .collect();
    let m = agent.scrape();
    for (pid, n) in &children {
        for (syscall, path) in [("read", "other_to_user"), ("write", "user_to_other")] {
            let want = [("pid", pid.as_str()), ("syscall", syscall), ("path", path)];
            assert_eq!(
                m.sum("iolens_syscalls_total", &want),
                *n,
                "{syscall} {path} of dd pid {pid}, which made {n}"
            );
        }
    }
}
