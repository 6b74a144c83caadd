//! Least privilege, end to end: the agent started as full root drops every
//! capability once its probes are attached (`iolens::privdrop`), in every
//! thread, and still counts and serves exactly — for a process of another
//! user, whose /proc files it must still read, and through the exit that
//! makes it delete the process's keys from the maps.

use std::{collections::BTreeMap, time::Duration};

use iolens_tests::{Agent, Metrics, TestChild, can_load_probes, tempdir, wait_until};

const CHILD: &str = env!("CARGO_BIN_EXE_iolens-testchild");
/// The child runs as nobody, so the agent reads another user's /proc files.
const NOBODY: u32 = 65534;
const CAP_BPF: u64 = 1 << 39;

/// One thread's capability sets, from /proc/PID/task/TID/status.
#[derive(Debug, PartialEq, Eq)]
struct Caps {
    eff: u64,
    prm: u64,
    amb: u64,
    bnd: u64,
    no_new_privs: bool,
}

fn thread_caps(pid: u32) -> BTreeMap<String, Caps> {
    let mut out = BTreeMap::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("list the agent's threads") {
        let t = t.expect("task");
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
            continue; // exited meanwhile
        };
        let hex = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| u64::from_str_radix(v.trim(), 16).expect("hex capability set"))
                .unwrap_or_else(|| panic!("no {key} in a status file"))
        };
        let caps = Caps {
            eff: hex("CapEff:"),
            prm: hex("CapPrm:"),
            amb: hex("CapAmb:"),
            bnd: hex("CapBnd:"),
            no_new_privs: status
                .lines()
                .any(|l| l.strip_prefix("NoNewPrivs:").map(str::trim) == Some("1")),
        };
        out.insert(t.file_name().to_string_lossy().into_owned(), caps);
    }
    out
}

/// iolens's view of one pid: (syscall, path) -> (calls, bytes).
fn view(m: &Metrics, pid: u32) -> BTreeMap<(String, String), (u64, u64)> {
    let pid = pid.to_string();
    let mut out: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for s in &m.samples {
        if s.labels.get("pid") != Some(&pid) {
            continue;
        }
        let (Some(sc), Some(path)) = (s.labels.get("syscall"), s.labels.get("path")) else {
            continue;
        };
        let e = out.entry((sc.clone(), path.clone())).or_default();
        match s.name.as_str() {
            "iolens_syscalls_total" => e.0 += s.value as u64,
            "iolens_io_bytes_total" => e.1 += s.value as u64,
            _ => {}
        }
    }
    out
}

#[test]
fn capabilities_are_dropped_in_every_thread_and_counting_stays_exact() {
    let test = "capabilities_are_dropped_in_every_thread_and_counting_stays_exact";
    if !can_load_probes(test) {
        return;
    }
    // A short grace period so the exited child's keys are deleted (through
    // the held map fds, unprivileged) within the test.
    let agent = Agent::start(&["--exit-ttl", "1s", "--refresh", "200ms"]);
    let log = agent.log_text();
    assert!(
        log.contains("dropped every capability"),
        "no capability drop in the log:\n{log}"
    );
    // CAP_BPF stays only where the kernel refuses bpf(2) on held fds
    // without it (before 5.19, with unprivileged_bpf_disabled set): then the
    // log says so and the sysctl must be on.
    let kept = if log.contains("dropped every capability but CAP_BPF") {
        let sysctl = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
            .unwrap_or_default();
        assert_ne!(
            sysctl.trim(),
            "0",
            "CAP_BPF kept though unprivileged bpf is on"
        );
        CAP_BPF
    } else {
        0
    };
    let want = Caps {
        eff: kept,
        prm: kept,
        amb: 0,
        // Started as full root (CAP_SETPCAP), it empties the bounding set.
        bnd: kept,
        no_new_privs: true,
    };
    let check_threads = |when: &str| {
        let threads = thread_caps(agent.pid());
        assert!(threads.len() >= 3, "{when}: {threads:?}");
        for (tid, caps) in &threads {
            assert_eq!(caps, &want, "{when}: thread {tid} of the agent");
        }
        threads.len()
    };
    let at_start = check_threads("after start");

    // Known I/O by another user's process, counted exactly after the drop.
    let dir = tempdir("privileges");
    let c = std::ffi::CString::new(dir.as_str()).expect("path");
    // SAFETY: chown(2) on a directory this test made, with a valid C string.
    let rc = unsafe { libc::chown(c.as_ptr(), NOBODY, NOBODY) };
    assert_eq!(rc, 0, "chown {dir}");
    let mut child = TestChild::spawn_as(CHILD, &["rw", dir.as_str()], NOBODY);
    let pid = child.pid();
    let before = view(&agent.scrape(), pid);
    let report = child.step();
    assert_eq!(report.end, "done");
    let after_m = agent.scrape();
    let after = view(&after_m, pid);
    let mut got: BTreeMap<(String, String), (u64, u64)> = after
        .iter()
        .filter_map(|(k, a)| {
            let b = before.get(k).copied().unwrap_or_default();
            let d = (a.0 - b.0, a.1 - b.1);
            (d != (0, 0)).then(|| (k.clone(), d))
        })
        .collect();
    let mut expected: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for c in &report.counts {
        let e = expected
            .entry((c.syscall.clone(), c.path.clone()))
            .or_default();
        e.0 += c.calls;
        e.1 += c.bytes;
    }
    // The handshake: one read of "go\n" from the stdin pipe, and the report
    // in one write to the stdout pipe.
    let e = expected
        .entry(("read".into(), "pipe_to_user".into()))
        .or_default();
    e.0 += 1;
    e.1 += 3;
    assert_eq!(
        got.remove(&("write".to_string(), "user_to_pipe".to_string())),
        Some((1, report.bytes)),
        "the report write"
    );
    assert_eq!(got, expected, "iolens delta vs the child's own tally");
    assert!(
        after_m.has(
            "iolens_process_syscalls_total",
            &[("pid", &pid.to_string()), ("comm", "iolens-testchil")]
        ),
        "the other user's process is named"
    );

    // The scrapes ran on threads made after the drop (blocking pool): they
    // inherited nothing more.
    let later = check_threads("after the scrapes");

    // Its exit: the agent forgets it (map deletes through held fds) once
    // the grace period is over, and keeps serving.
    child.finish();
    let gone = wait_until(Duration::from_secs(20), || {
        !agent.scrape().has(
            "iolens_process_syscalls_total",
            &[("pid", &pid.to_string())],
        )
    });
    assert!(gone, "the exited child's series were not dropped");
    let log = agent.log_text();
    assert!(
        !log.contains("background map read failed"),
        "a map read failed after the drop:\n{log}"
    );
    let (status, log) = agent.stop();
    assert!(status.success(), "agent exit {status:?}\n{log}");
    println!(
        "capabilities kept: {kept:#x}; threads checked: {at_start} at start, {later} after scrapes"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `iolens top` starts its agent with PR_SET_PDEATHSIG so that the agent
/// detaches and exits when top dies; a credential change can clear that
/// signal (commit_creds does when the permitted set grows, not when it
/// shrinks), so it must be shown to survive the drop. The agent is started from a
/// thread (the parent-death signal follows the parent thread), which ends
/// once the agent serves.
#[test]
fn the_parent_death_signal_survives_the_drop() {
    use std::{
        io::BufRead as _,
        os::unix::process::CommandExt as _,
        process::{Command, Stdio},
    };
    let test = "the_parent_death_signal_survives_the_drop";
    if !can_load_probes(test) {
        return;
    }
    let spawner = std::thread::spawn(|| {
        let mut cmd = Command::new(iolens_tests::agent_bin());
        cmd.args(["run", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: only prctl, async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn iolens");
        let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut log = String::new();
        for line in lines.by_ref().map_while(Result::ok) {
            log.push_str(&line);
            log.push('\n');
            if line.contains("metrics on http://") {
                break;
            }
        }
        (child, lines, log)
    });
    let (mut child, lines, mut log) = spawner.join().expect("spawner thread");
    assert!(log.contains("dropped every capability"), "{log}");
    // The spawning thread is gone: the agent must get SIGTERM, detach and
    // exit 0.
    let exited = wait_until(Duration::from_secs(20), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait");
    for line in lines.map_while(Result::ok) {
        log.push_str(&line);
        log.push('\n');
    }
    assert!(exited, "the agent outlived its parent thread:\n{log}");
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("SIGTERM received"), "{log}");
}
