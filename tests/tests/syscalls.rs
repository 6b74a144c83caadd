//! The syscalls family, proven: a child performs an exactly known
//! sequence of I/O syscalls under the real agent, and iolens's counters for
//! that pid must equal (a) the child's own tally, exactly, and (b) the
//! kernel's own accounting in /proc/PID/io, exactly, on the subset of
//! syscalls that feeds it.

mod common;

use std::collections::BTreeMap;

use common::{CHILD, Scenario, get, grew};
use iolens_tests::{
    Agent, Count, Metrics, ProcIo, TestChild, can_load_probes, in_ci, tcp_sink, tempdir,
};

/// Which syscalls feed /proc/PID/io (Linux 6.18, fs/read_write.c; see
/// DESIGN notes in the README):
/// - `syscr`/`rchar`: read and pread64 (in vfs_read, reached only with a
///   valid fd: a bad fd fails in fdget first and is NOT counted), readv,
///   preadv, preadv2 (do_readv/do_preadv count even when the fd is bad),
///   sendfile and copy_file_range (both sides).
/// - `syscw`/`wchar`: the write-side mirror: write, pwrite64, writev,
///   pwritev, pwritev2, sendfile, copy_file_range.
/// - socket calls (recvfrom, sendto, recvmsg, sendmsg), splice, vmsplice and
///   tee feed none of them.
///
/// `rchar`/`wchar` add the return value when it is positive.
const READ_SIDE: &[&str] = &[
    "read",
    "pread64",
    "readv",
    "preadv",
    "preadv2",
    "sendfile64",
    "copy_file_range",
];
const WRITE_SIDE: &[&str] = &[
    "write",
    "pwrite64",
    "writev",
    "pwritev",
    "pwritev2",
    "sendfile64",
    "copy_file_range",
];
/// Syscalls whose /proc/PID/io accounting happens only after the fd was
/// looked up, so a bad-fd failure is not counted there.
const FDGET_FIRST: &[&str] = &["read", "pread64", "write", "pwrite64"];

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

fn delta(
    after: &BTreeMap<(String, String), (u64, u64)>,
    before: &BTreeMap<(String, String), (u64, u64)>,
) -> BTreeMap<(String, String), (u64, u64)> {
    after
        .iter()
        .filter_map(|(k, a)| {
            let b = before.get(k).copied().unwrap_or_default();
            let d = (a.0 - b.0, a.1 - b.1);
            (d != (0, 0)).then(|| (k.clone(), d))
        })
        .collect()
}

/// What /proc/PID/io should say, computed from iolens's counters alone.
fn predicted_proc_io(m: &Metrics, pid: u32) -> ProcIo {
    let pid_s = pid.to_string();
    let sum = |name: &str, syscalls: &[&str]| -> u64 {
        syscalls
            .iter()
            .map(|sc| m.sum(name, &[("pid", &pid_s), ("syscall", sc)]))
            .sum()
    };
    let bad_fd = |syscalls: &[&str]| -> u64 {
        syscalls
            .iter()
            .filter(|sc| FDGET_FIRST.contains(sc))
            .map(|sc| {
                m.sum(
                    "iolens_syscall_errors_total",
                    &[("pid", &pid_s), ("syscall", sc)],
                )
            })
            .sum()
    };
    ProcIo {
        rchar: sum("iolens_io_bytes_total", READ_SIDE),
        wchar: sum("iolens_io_bytes_total", WRITE_SIDE),
        // The only failures these children provoke are bad fds.
        syscr: sum("iolens_syscalls_total", READ_SIDE) - bad_fd(READ_SIDE),
        syscw: sum("iolens_syscalls_total", WRITE_SIDE) - bad_fd(WRITE_SIDE),
    }
}

/// The child's report plus the handshake: one read of the "go" line from
/// the stdin pipe.
fn expected(counts: &[Count]) -> BTreeMap<(String, String), (u64, u64)> {
    let mut want: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for c in counts {
        let e = want.entry((c.syscall.clone(), c.path.clone())).or_default();
        e.0 += c.calls;
        e.1 += c.bytes;
    }
    let e = want
        .entry(("read".into(), "pipe_to_user".into()))
        .or_default();
    e.0 += 1;
    e.1 += 3;
    want
}

/// A path as it reads when no fd can be classified (the kernel's offsets
/// unusable): every end but user space is `unknown`; failures stay errors.
fn unclassified(path: &str) -> String {
    if path == "error" {
        return path.to_owned();
    }
    match path.split_once("_to_") {
        Some((src, dst)) => {
            let end = |e: &str| if e == "user" { "user" } else { "unknown" };
            format!("{}_to_{}", end(src), end(dst))
        }
        None => path.to_owned(),
    }
}

fn run_scenario(test: &str, scenario: &str, port: Option<u16>) {
    run_scenario_env(test, scenario, port, &[]);
}

/// [`run_scenario`] with the agent started with extra environment.
fn run_scenario_env(test: &str, scenario: &str, port: Option<u16>, env: &[(&str, &str)]) {
    let dir = tempdir(test);
    let agent = Agent::start_env(&[], env);
    if env.contains(&("IOLENS_PROBE_READS", "1")) {
        assert!(
            agent
                .log_text()
                .contains("IOLENS_PROBE_READS=1: using probe reads"),
            "the agent did not take the probe-read path:\n{}",
            agent.log_text()
        );
    }
    let port_s = port.map(|p| p.to_string());
    let mut args = vec![scenario, dir.as_str()];
    if let Some(p) = &port_s {
        args.push(p);
    }
    let mut child = TestChild::spawn(CHILD, &args);
    let pid = child.pid();

    let before_m = agent.scrape();
    let io_before = ProcIo::read(pid);
    let before = view(&before_m, pid);
    let report = child.step();
    assert_eq!(report.end, "done");
    let counts = report.counts;
    let after_m = agent.scrape();
    let io = ProcIo::read(pid);
    let after = view(&after_m, pid);

    // (a) Exactly the child's calls, plus the handshake: the report goes to
    // stdout, a pipe, in one write of exactly what the test read.
    let mut got = delta(&after, &before);
    let blind = env.contains(&("IOLENS_NO_BTF_OFFSETS", "1"));
    let path = |p: &str| if blind { unclassified(p) } else { p.to_owned() };
    let mut want: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for ((sc, p), (calls, bytes)) in expected(&counts) {
        let e = want.entry((sc, path(&p))).or_default();
        e.0 += calls;
        e.1 += bytes;
    }
    if blind {
        // Unclassified, the report write shares its key with the child's
        // own writes: it is one more call of exactly the report's bytes.
        let e = want
            .entry(("write".to_string(), path("user_to_pipe")))
            .or_default();
        e.0 += 1;
        e.1 += report.bytes;
    } else {
        let report_writes = got.remove(&("write".to_string(), "user_to_pipe".to_string()));
        assert_eq!(
            report_writes,
            Some((1, report.bytes)),
            "the report write to stdout: {got:?}"
        );
    }
    assert_eq!(got, want, "iolens delta vs the child's own tally");

    // (b) The kernel's own accounting, over the work phase.
    let (p0, p1) = (
        predicted_proc_io(&before_m, pid),
        predicted_proc_io(&after_m, pid),
    );
    assert_eq!(
        (
            p1.rchar - p0.rchar,
            p1.wchar - p0.wchar,
            p1.syscr - p0.syscr,
            p1.syscw - p0.syscw
        ),
        (
            io.rchar - io_before.rchar,
            io.wchar - io_before.wchar,
            io.syscr - io_before.syscr,
            io.syscw - io_before.syscw
        ),
        "iolens vs /proc/{pid}/io over the work phase (rchar, wchar, syscr, syscw)"
    );
    // Over the child's whole life the write side matches too. The read side
    // does not, by design: execve reads the binary's and the interpreter's
    // headers with kernel_read(), which /proc/PID/io accounts (__kernel_read
    // calls add_rchar/inc_syscr) but which is no syscall of the process.
    assert_eq!(
        (p1.wchar, p1.syscw),
        (io.wchar, io.syscw),
        "write side since fork"
    );
    assert!(
        io.syscr > p1.syscr && io.rchar > p1.rchar,
        "exec's kernel reads: {io:?} vs {p1:?}"
    );

    child.finish();
    let (status, log) = agent.stop();
    assert!(status.success(), "agent exit {status:?}\n{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn read_write_family_matches_child_and_proc_io() {
    if !can_load_probes("read_write_family_matches_child_and_proc_io") {
        return;
    }
    run_scenario("rw", "rw", None);
}

/// An fd number that holds a file, then a socket, then a pipe must be
/// classified anew each time (on kernels without bpf_rdonly_cast the
/// kernel side remembers recent fds' kinds; there this checks that closes
/// retire them).
#[test]
fn reused_fd_numbers_are_classified_by_what_they_hold() {
    if !can_load_probes("reused_fd_numbers_are_classified_by_what_they_hold") {
        return;
    }
    run_scenario("fdreuse", "fdreuse", None);
}

/// The same, with the fd walk of kernels without bpf_rdonly_cast: the
/// inline table by typed loads, a grown one by probe reads with fd kinds
/// remembered per CPU until a close retires them.
#[test]
fn reused_fd_numbers_are_classified_by_what_they_hold_with_probe_reads() {
    if !can_load_probes("reused_fd_numbers_are_classified_by_what_they_hold_with_probe_reads") {
        return;
    }
    run_scenario_env(
        "fdreuse-reads",
        "fdreuse",
        None,
        &[("IOLENS_PROBE_READS", "1")],
    );
}

/// sendmmsg/recvmmsg return messages, not bytes: their bytes are the
/// msg_len the kernel wrote per message, as the child read them back.
#[test]
fn mmsg_calls_count_the_bytes_of_every_message() {
    if !can_load_probes("mmsg_calls_count_the_bytes_of_every_message") {
        return;
    }
    run_scenario("mmsg", "mmsg", None);
}

/// vmsplice moves user memory into a pipe through its write end and pipe
/// pages out to user memory through its read end: classified by the end,
/// with the child's exact calls and bytes each way.
#[test]
fn vmsplice_is_classified_by_the_pipe_end() {
    if !can_load_probes("vmsplice_is_classified_by_the_pipe_end") {
        return;
    }
    run_scenario("vmsplice", "vmsplice", None);
}

/// The same through the fd walk of kernels without bpf_rdonly_cast (Debian
/// 12's 6.1 takes it anyway): the inline table by typed loads, the fds past
/// 300 by probe reads and the per-CPU cache, which keeps the end too.
#[test]
fn vmsplice_is_classified_by_the_pipe_end_with_probe_reads() {
    if !can_load_probes("vmsplice_is_classified_by_the_pipe_end_with_probe_reads") {
        return;
    }
    run_scenario_env(
        "vmsplice-reads",
        "vmsplice",
        None,
        &[("IOLENS_PROBE_READS", "1")],
    );
}

/// Whether this kernel runs ia32 syscalls (`int 0x80` from a 64-bit
/// process): CONFIG_IA32_EMULATION, not disabled on the command line.
/// None if the kernel's config cannot be read.
fn ia32_emulation() -> Option<bool> {
    // In a kernel VM: the config of the package it booted (`cargo xtask
    // test` passes it; Debian's kernels have no /proc/config.gz).
    let packaged =
        std::env::var_os("IOLENS_KERNEL_CONFIG").and_then(|p| std::fs::read_to_string(p).ok());
    let config = packaged.or_else(|| {
        std::process::Command::new("zcat")
            .arg("/proc/config.gz")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .or_else(|| {
                let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
                std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()
            })
    })?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let on_by_default = !config.contains("CONFIG_IA32_EMULATION_DEFAULT_DISABLED=y");
    let enabled = config.contains("CONFIG_IA32_EMULATION=y")
        && !cmdline.contains("ia32_emulation=0")
        && !cmdline.contains("ia32_emulation=false")
        && (on_by_default
            || cmdline.contains("ia32_emulation=1")
            || cmdline.contains("ia32_emulation=true"));
    Some(enabled)
}

/// ia32 syscalls (a 32-bit process's, here `int 0x80`) have their own
/// numbers and argument registers: counted under their names, and an ia32
/// getpid (20) is not an x86_64 writev (20) of pid bytes.
#[test]
fn ia32_syscalls_are_read_with_their_own_numbers_and_registers() {
    if !can_load_probes("ia32_syscalls_are_read_with_their_own_numbers_and_registers") {
        return;
    }
    match ia32_emulation() {
        Some(true) => {}
        other => {
            assert!(
                !in_ci(),
                "CI's kernel is expected to run ia32 syscalls (config: {other:?})"
            );
            eprintln!("skipped: this kernel does not run ia32 syscalls ({other:?})");
            return;
        }
    }
    run_scenario("ia32", "ia32", None);
}

/// With the kernel's offsets unusable no fd can be classified, yet every
/// successful transfer still counts its calls and bytes, under `unknown`
/// ends, and only failed calls count as `error`: a sendfile or splice whose
/// two fd lookups both failed once went under the error key, its bytes
/// dropped.
#[test]
fn unclassified_transfers_keep_their_bytes_under_unknown_paths() {
    if !can_load_probes("unclassified_transfers_keep_their_bytes_under_unknown_paths") {
        return;
    }
    let (port, sink) = tcp_sink();
    run_scenario_env(
        "unclassified",
        "zerocopy",
        Some(port),
        &[("IOLENS_NO_BTF_OFFSETS", "1")],
    );
    assert_eq!(sink.join().expect("sink"), (1 << 20) + (256 << 10) + 10_000);
    // And the ordinary calls, bad-fd failures included.
    run_scenario_env(
        "unclassified-rw",
        "rw",
        None,
        &[("IOLENS_NO_BTF_OFFSETS", "1")],
    );
}

#[test]
fn sendfile_and_splice_are_zero_copy_paths() {
    if !can_load_probes("sendfile_and_splice_are_zero_copy_paths") {
        return;
    }
    let (port, sink) = tcp_sink();
    run_scenario("zerocopy", "zerocopy", Some(port));
    // Everything the child sent arrived: 1 MiB sendfile, 256 KiB splice,
    // 10 x 1000 bytes sendto.
    assert_eq!(sink.join().expect("sink"), (1 << 20) + (256 << 10) + 10_000);
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
