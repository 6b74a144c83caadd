//! How the agent behaves as a program: privileges, filters, scrapes that
//! leak nothing, valid exposition, bad input.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use iolens_tests::{
    Agent, TestChild, agent_bin, can_load_probes, http_get, in_ci, is_root, tempdir, wait_until,
};

const CHILD: &str = env!("CARGO_BIN_EXE_iolens-testchild");

/// Runs the agent with `args` and returns (exit code, stderr).
fn run_agent(args: &[&str], uid: Option<u32>) -> (Option<i32>, String) {
    use std::os::unix::process::CommandExt as _;
    let mut c = Command::new(agent_bin());
    c.args(args).env("NO_COLOR", "1").stdin(Stdio::null());
    if let Some(uid) = uid {
        c.uid(uid).gid(uid);
    }
    let out = c.output().expect("run iolens");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn non_root_start_fails_with_the_documented_message() {
    if !is_root() {
        // Already unprivileged: the plain start must refuse the same way.
        let (code, err) = run_agent(&["run", "--listen", "127.0.0.1:0"], None);
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains("iolens needs root, or the capabilities CAP_BPF and CAP_PERFMON"),
            "{err}"
        );
        return;
    }
    // Drop to nobody (65534) for the child; the binary must be readable by
    // it, which target/ under a root-owned checkout normally is.
    let (code, err) = run_agent(&["run", "--listen", "127.0.0.1:0"], Some(65534));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("iolens needs root, or the capabilities CAP_BPF and CAP_PERFMON"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
}

#[test]
fn bad_flags_are_one_clear_line_and_exit_2() {
    for (args, needle) in [
        (
            vec!["run", "--listen", "not-an-address"],
            "invalid value 'not-an-address'",
        ),
        (vec!["run", "--pid", "0"], "pid 0 is the idle task"),
        (vec!["run", "--pid", "abc"], "`abc` is not a process id"),
        (
            vec!["run", "--comm", "a-name-longer-than-15"],
            "at most 15 bytes",
        ),
        (vec!["run", "--exit-ttl", "soon"], "is not a duration"),
        (
            vec!["run", "--max-stats-entries", "1"],
            "not in 16..=4000000",
        ),
        (
            vec!["run", "--web.header-timeout", "0"],
            "must be longer than 0",
        ),
        (
            vec!["run", "--web.max-connections", "0"],
            "not in 1..=1000000",
        ),
    ] {
        let (code, err) = run_agent(&args, None);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected `{needle}` in {err}"
        );
    }
}

#[test]
fn port_in_use_is_one_clear_line_and_exit_2() {
    if !can_load_probes("port_in_use_is_one_clear_line_and_exit_2") {
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, err) = run_agent(&["run", "--listen", &addr], None);
    assert_eq!(code, Some(2), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!("cannot listen on {addr}: the address is in use")),
        "{err}"
    );
}

#[test]
fn pid_filter_counts_only_that_process() {
    if !can_load_probes("pid_filter_counts_only_that_process") {
        return;
    }
    let dir_a = tempdir("filter-a");
    let dir_b = tempdir("filter-b");
    let mut a = TestChild::spawn(CHILD, &["rw", &dir_a]);
    let mut b = TestChild::spawn(CHILD, &["rw", &dir_b]);
    let pid_a = a.pid().to_string();
    let agent = Agent::start(&["--pid", &pid_a]);
    a.go();
    b.go();
    let m = agent.scrape();
    let a_writes = m.sum(
        "iolens_io_bytes_total",
        &[
            ("pid", &pid_a),
            ("syscall", "write"),
            ("path", "user_to_file"),
        ],
    );
    // Started after the child's set-up: exactly the 1000 x 100 bytes.
    assert_eq!(a_writes, 100_000);
    let pids: std::collections::BTreeSet<&str> = m
        .samples
        .iter()
        .filter_map(|s| s.labels.get("pid").map(String::as_str))
        .collect();
    assert_eq!(
        pids.into_iter().collect::<Vec<_>>(),
        vec![pid_a.as_str()],
        "only the filtered pid"
    );
    a.finish();
    b.finish();
    let _ = std::fs::remove_dir_all(dir_a);
    let _ = std::fs::remove_dir_all(dir_b);
}

#[test]
fn comm_filter_counts_only_that_name() {
    if !can_load_probes("comm_filter_counts_only_that_name") {
        return;
    }
    // The kernel truncates comm to 15 bytes: "iolens-testchil".
    let agent = Agent::start(&["--comm", "iolens-testchil"]);
    let dir = tempdir("comm");
    let mut c = TestChild::spawn(CHILD, &["rw", &dir]);
    c.go();
    let m = agent.scrape();
    let comms: std::collections::BTreeSet<&str> = m
        .samples
        .iter()
        .filter_map(|s| s.labels.get("comm").map(String::as_str))
        .collect();
    assert_eq!(
        comms.into_iter().collect::<Vec<_>>(),
        vec!["iolens-testchil"]
    );
    assert_eq!(
        m.sum(
            "iolens_io_bytes_total",
            &[
                ("pid", &c.pid().to_string()),
                ("syscall", "write"),
                ("path", "user_to_file")
            ]
        ),
        // set-up wrote the 4 MiB input file too, before "ready".
        100_000 + (4 << 20)
    );
    c.finish();
    let _ = std::fs::remove_dir_all(dir);
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .expect("list fds")
}

#[test]
fn a_hundred_scrapes_leak_no_fds() {
    if !can_load_probes("a_hundred_scrapes_leak_no_fds") {
        return;
    }
    let agent = Agent::start(&[]);
    // Warm up: the runtime's blocking pool creates its threads lazily.
    for _ in 0..5 {
        agent.scrape_text();
    }
    // The server closes a connection just after its reply: let the warm-up's
    // last socket go before counting.
    let mut before = open_fds(agent.pid());
    wait_until(Duration::from_secs(5), || {
        std::thread::sleep(Duration::from_millis(100));
        let now = open_fds(agent.pid());
        let stable = now == before;
        before = now;
        stable
    });
    for _ in 0..100 {
        assert!(agent.scrape_text().contains("iolens_probe_attached"));
    }
    // Connections are closed by the server after each HTTP/1.0 reply; give
    // the last one a moment to be torn down.
    let settled = wait_until(Duration::from_secs(5), || open_fds(agent.pid()) <= before);
    assert!(
        settled,
        "fds before {before}, after {}",
        open_fds(agent.pid())
    );
}

#[test]
fn exposition_passes_promtool_and_landing_page_links_it() {
    if !can_load_probes("exposition_passes_promtool_and_landing_page_links_it") {
        return;
    }
    let have_promtool = Command::new("promtool").arg("--version").output().is_ok();
    if !have_promtool {
        assert!(
            !in_ci(),
            "CI needs promtool (Debian package prometheus; `cargo xtask setup`)"
        );
        eprintln!("skipped: promtool not installed");
        return;
    }
    let agent = Agent::start(&["--program-stats"]);
    // Some traffic so per-process families are present.
    let dir = tempdir("promtool");
    let mut c = TestChild::spawn(CHILD, &["rw", &dir]);
    c.go();
    let text = agent.scrape_text();
    for family in [
        "iolens_syscalls_total",
        "iolens_syscall_errors_total",
        "iolens_io_bytes_total",
        "iolens_probe_attached",
        "iolens_probe_run_seconds_total",
        "iolens_probe_runs_total",
        "iolens_map_entries",
        "iolens_map_capacity",
        "iolens_map_evictions_total",
    ] {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "no HELP for {family}"
        );
    }
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    {
        use std::io::Write as _;
        p.stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("feed promtool");
    }
    let out = p.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = http_get(agent.addr, "/");
    assert_eq!(status, 200);
    assert!(body.contains("href=\"/metrics\""));
    assert_eq!(http_get(agent.addr, "/nope").0, 404);
    c.finish();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sigterm_detaches_and_exits_0() {
    if !can_load_probes("sigterm_detaches_and_exits_0") {
        return;
    }
    let agent = Agent::start(&[]);
    let (status, log) = agent.stop();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("SIGTERM received; detaching"), "{log}");
    assert!(log.contains("detached and stopped in "), "{log}");
}

/// The cgroup v2 mount point, from /proc/self/mountinfo.
fn cgroup2_mount() -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next()? == "cgroup2")
            .then(|| pre.split_whitespace().nth(4).map(str::to_owned))?
    })
}

#[test]
fn cgroup_filter_and_label() {
    if !can_load_probes("cgroup_filter_and_label") {
        return;
    }
    let Some(mount) = cgroup2_mount() else {
        assert!(!in_ci(), "CI machines of this kind mount cgroup2");
        eprintln!("skipped: no cgroup2 mount");
        return;
    };
    let name = format!("iolens-test-{}", std::process::id());
    let cg = format!("{mount}/{name}");
    std::fs::create_dir(&cg).expect("create a cgroup");
    let dir_a = tempdir("cg-a");
    let dir_b = tempdir("cg-b");
    let mut a = TestChild::spawn(CHILD, &["rw", &dir_a]);
    let mut b = TestChild::spawn(CHILD, &["rw", &dir_b]);
    // Move A into the cgroup before it does its work; B stays outside.
    std::fs::write(format!("{cg}/cgroup.procs"), a.pid().to_string()).expect("move A");
    let agent = Agent::start(&["--cgroup", &format!("/{name}"), "--cgroup-label"]);
    a.go();
    b.go();
    let m = agent.scrape();
    let pid_a = a.pid().to_string();
    let cg_label = format!("/{name}");
    assert_eq!(
        m.sum(
            "iolens_io_bytes_total",
            &[
                ("pid", &pid_a),
                ("cgroup", &cg_label),
                ("syscall", "write"),
                ("path", "user_to_file")
            ]
        ),
        100_000
    );
    let pids: std::collections::BTreeSet<&str> = m
        .samples
        .iter()
        .filter_map(|s| s.labels.get("pid").map(String::as_str))
        .collect();
    assert_eq!(pids.into_iter().collect::<Vec<_>>(), vec![pid_a.as_str()]);
    a.finish();
    b.finish();
    drop(agent);
    // Empty now: A exited.
    let _ = std::fs::remove_dir(&cg);
    let _ = std::fs::remove_dir_all(dir_a);
    let _ = std::fs::remove_dir_all(dir_b);
}

/// Filters make the syscall program longer for the verifier (their checks
/// come first on every path), and kernels without bpf_rdonly_cast walk fds
/// another way: with every filter set, on both fd paths, every program
/// still loads and attaches. (A comm filter once pushed `sys_exit` past
/// the verifier's million-instruction limit, and it silently stayed off.)
#[test]
fn every_program_attaches_with_every_filter_on_both_fd_paths() {
    if !can_load_probes("every_program_attaches_with_every_filter_on_both_fd_paths") {
        return;
    }
    let filters = ["--comm", "iolens-testchil", "--pid", "1", "--cgroup", "/"];
    for env in [&[][..], &[("IOLENS_PROBE_READS", "1")][..]] {
        let agent = Agent::start_env(&filters, env);
        // The log is read on another thread: wait for the running line.
        wait_until(Duration::from_secs(5), || {
            agent.log_text().contains("total=")
        });
        let log = agent.log_text();
        // "iolens running; metrics on … attached=N total=M"
        let field = |key: &str| -> u32 {
            log.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in the log:\n{log}"))
        };
        assert_eq!(
            field("attached="),
            field("total="),
            "{env:?}: programs left unattached:\n{log}"
        );
        let m = agent.scrape();
        let attached: Vec<f64> = m
            .samples
            .iter()
            .filter(|s| s.name == "iolens_probe_attached")
            .map(|s| s.value)
            .collect();
        assert_eq!(attached.len() as u32, field("total="));
        assert!(attached.iter().all(|&v| v == 1.0), "{env:?}: {attached:?}");
        let (status, log) = agent.stop();
        assert!(status.success(), "{log}");
    }
}

/// The variant each probe should get on this kernel, derived apart from
/// the agent: which tracepoints tracefs lists, and the io_uring_complete
/// prototype as bpftool (another BTF reader) prints it.
fn expected_attachments() -> Vec<(&'static str, String)> {
    let tracefs = std::path::Path::new("/sys/kernel/tracing/events");
    let has = |cat: &str, name: &str| tracefs.join(cat).join(name).is_dir();
    let btf_c = Command::new("bpftool")
        .args([
            "btf",
            "dump",
            "file",
            "/sys/kernel/btf/vmlinux",
            "format",
            "c",
        ])
        .output()
        .expect("bpftool (installed by cargo xtask setup)");
    assert!(btf_c.status.success(), "bpftool btf dump failed");
    let btf_c = String::from_utf8_lossy(&btf_c.stdout);
    let complete = btf_c
        .lines()
        .find(|l| l.contains("(*btf_trace_io_uring_complete)("))
        .expect("io_uring_complete's prototype in the kernel's BTF");
    let or = |cond: bool, a: &str, b: &str| if cond { a } else { b }.to_owned();
    vec![
        ("sys_exit", "tp_btf/sys_exit".into()),
        ("sched_switch", "tp_btf/sched_switch".into()),
        ("exec", "tracepoint/sched:sched_process_exec".into()),
        ("exit", "tracepoint/sched:sched_process_exit".into()),
        (
            "fm_get_pages",
            or(
                has("filemap", "mm_filemap_get_pages"),
                "tp_btf/mm_filemap_get_pages",
                "fexit/filemap_get_pages",
            ),
        ),
        (
            "fm_map_pages",
            or(
                has("filemap", "mm_filemap_map_pages"),
                "tp_btf/mm_filemap_map_pages",
                "fentry/filemap_map_pages",
            ),
        ),
        (
            "fm_fault",
            or(
                has("filemap", "mm_filemap_fault"),
                "tp_btf/mm_filemap_fault",
                "fentry/filemap_fault",
            ),
        ),
        (
            "fm_add",
            "tracepoint/filemap:mm_filemap_add_to_page_cache".into(),
        ),
        (
            "wb_dirty",
            or(
                has("writeback", "writeback_dirty_folio"),
                "tp_btf/writeback_dirty_folio",
                "tp_btf/writeback_dirty_page",
            ),
        ),
        ("uring_create", "tracepoint/io_uring:io_uring_create".into()),
        (
            "uring_submit",
            or(
                has("io_uring", "io_uring_submit_req"),
                "tp_btf/io_uring_submit_req",
                "tp_btf/io_uring_submit_sqe",
            ),
        ),
        (
            "uring_complete",
            // The program, not the attach point, differs here.
            or(
                complete.contains("struct io_uring_cqe *"),
                "iolens_uring_complete",
                "iolens_uring_complete_res",
            ),
        ),
        (
            "block_start",
            or(
                has("block", "block_io_start"),
                "tp_btf/block_io_start",
                "tp_btf/block_rq_insert",
            ),
        ),
        ("block_issue", "tp_btf/block_rq_issue".into()),
        ("block_complete", "tp_btf/block_rq_complete".into()),
    ]
}

/// On every kernel of the matrix (6.1, 6.12, this machine's) every probe
/// family is complete, each probe through the variant this kernel's
/// tracepoints and prototypes call for: `iolens check` says so per probe
/// and per family, and the running agent exports the same.
#[test]
fn every_family_is_complete_through_the_variant_this_kernel_has() {
    if !can_load_probes("every_family_is_complete_through_the_variant_this_kernel_has") {
        return;
    }
    let expected = expected_attachments();
    let out = Command::new(agent_bin())
        .arg("check")
        .env("NO_COLOR", "1")
        .output()
        .expect("iolens check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "iolens check failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (probe, want) in &expected {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(probe))
            .unwrap_or_else(|| panic!("no line for {probe}:\n{text}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[0], "ok", "{line}");
        assert!(
            words[2] == want || words[3] == want,
            "{probe}: want {want}: {line}"
        );
    }
    let families = [
        "syscalls",
        "sched",
        "waits",
        "page_cache",
        "io_uring",
        "process",
        "block",
        "aio",
    ];
    for f in families {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(f))
            .unwrap_or_else(|| panic!("no family line for {f}:\n{text}"));
        assert_eq!(line.split_whitespace().nth(1), Some("complete"), "{line}");
    }

    let agent = Agent::start(&[]);
    let m = agent.scrape();
    let info: Vec<_> = m
        .samples
        .iter()
        .filter(|s| s.name == "iolens_family_info")
        .collect();
    assert_eq!(info.len(), families.len(), "{info:?}");
    for s in &info {
        assert_eq!(
            s.labels.get("status").map(String::as_str),
            Some("complete"),
            "{s:?}"
        );
        assert_eq!(s.value, 1.0);
    }
    for (probe, want) in &expected {
        let s = m
            .samples
            .iter()
            .find(|s| {
                s.name == "iolens_probe_attached"
                    && s.labels.get("probe").map(String::as_str) == Some(probe)
            })
            .unwrap_or_else(|| panic!("no iolens_probe_attached for {probe}"));
        assert_eq!(s.value, 1.0, "{s:?}");
        let got = [&s.labels["attach"], &s.labels["program"]];
        assert!(got.contains(&want), "{probe}: want {want}, got {got:?}");
    }
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
}

/// What a kernel whose BTF gives no struct offsets loses is reported per
/// family, and `--strict` refuses to run so degraded: `iolens check`
/// exits non-zero naming the families and why, the running agent exports
/// them as degraded, and `iolens run --strict` exits with the same reasons.
#[test]
fn a_degraded_family_is_reported_and_strict_refuses_it() {
    if !can_load_probes("a_degraded_family_is_reported_and_strict_refuses_it") {
        return;
    }
    let blind = [("IOLENS_NO_BTF_OFFSETS", "1")];
    let out = Command::new(agent_bin())
        .arg("check")
        .envs(blind)
        .env("NO_COLOR", "1")
        .output()
        .expect("iolens check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "check passed though degraded:\n{text}"
    );
    let family = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{text}"))
            .to_owned()
    };
    for f in ["syscalls", "sched", "waits"] {
        let line = family(f);
        assert_eq!(line.split_whitespace().nth(1), Some("degraded"), "{line}");
        assert!(line.contains("lost: "), "{line}");
        assert!(line.contains("BTF gave no usable struct offsets"), "{line}");
    }
    // Offsets lost do not take whole probes: every one still attaches.
    let expected = expected_attachments();
    for (probe, _) in &expected {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(probe))
            .unwrap_or_else(|| panic!("no line for {probe}:\n{text}"));
        assert!(line.starts_with("ok "), "{line}");
    }
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ok ")).count(),
        expected.len(),
        "{text}"
    );
    let agent = Agent::start_env(&[], &blind);
    let m = agent.scrape();
    let status = |f: &str| {
        m.samples
            .iter()
            .find(|s| {
                s.name == "iolens_family_info"
                    && s.labels.get("family").map(String::as_str) == Some(f)
            })
            .and_then(|s| s.labels.get("status").cloned())
    };
    assert_eq!(status("syscalls").as_deref(), Some("degraded"));
    assert_eq!(status("process").as_deref(), Some("complete"));
    let (st, log) = agent.stop();
    assert!(st.success(), "{log}");

    let strict = Command::new(agent_bin())
        .args(["run", "--strict", "--listen", "127.0.0.1:0"])
        .envs(blind)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("iolens run --strict");
    let err = String::from_utf8_lossy(&strict.stderr);
    assert!(!strict.status.success(), "--strict ran degraded:\n{err}");
    assert!(
        err.contains("--strict: degraded on this kernel: syscalls:"),
        "{err}"
    );
}
