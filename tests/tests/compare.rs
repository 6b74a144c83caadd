//! `iolens compare` end to end: the real binary runs the real workloads under
//! the real probes, and its report must show what the copy model and the
//! page cache predict, exactly where the kernel is exact.

use std::process::Command;

use iolens_tests::{agent_bin, can_load_probes};

/// Runs `iolens compare --suite SUITE ARGS --json` and returns the report.
/// One `iolens compare` at a time: the disk figures are exact for a quiet
/// disk, and suites run side by side shared one (a CI run read 88 KiB
/// more than a cold 64 KiB file for its first case, with the servers and
/// demux suites running at once; alone, after dropping every cache, it
/// reads the file's 65,536 bytes exactly).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn compare(suite: &str, args: &[&str]) -> serde_json::Value {
    // A test that failed while holding it poisons nothing the next needs.
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let out = Command::new(agent_bin())
        .args(["compare", "--suite", suite, "--json"])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run iolens compare");
    assert!(
        out.status.success(),
        "iolens compare --suite {suite} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("compare --json output")
}

fn rows(v: &serde_json::Value) -> &Vec<serde_json::Value> {
    v["rows"].as_array().expect("rows")
}

fn f(row: &serde_json::Value, key: &str) -> f64 {
    row[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} in {row}"))
}

#[test]
fn filesend_suite_shows_the_copy_model_and_the_page_cache() {
    if !can_load_probes("filesend_suite_shows_the_copy_model_and_the_page_cache") {
        return;
    }
    let report = compare("filesend", &["--quick", "--requests", "40"]);
    let rows = rows(&report);
    assert_eq!(rows.len(), 24, "6 modes x cold/warm x 2 sizes");
    for r in rows {
        let name = r["case"]["name"].as_str().expect("name");
        assert_eq!(r["load"]["errors"], 0, "{name}: load errors");
        if r["verdict"] != "measured" {
            assert_eq!(r["verdict"], "confirmed", "{name}: {}", r["claim"]);
        }
        let copies = f(r, "est_cpu_copies_per_byte");
        let misses = f(r, "page_cache_misses") as u64;
        let mode = name.split_whitespace().next().expect("mode");
        // Native AIO reads, measured by the aio family: the file's bytes
        // (and an aligned over-read at its end, cut short by EOF: none
        // for these sizes, multiples of 4096) in direct-native-aio only.
        let aio = f(r, "aio_bytes") as u64;
        let pages = if name.ends_with("64K") { 16 } else { 2048 };
        if mode == "direct-native-aio" {
            assert_eq!(aio, r["load"]["bytes"].as_u64().expect("bytes"), "{name}");
            // One read per 1 MiB chunk of the body (the file sender's
            // default --chunk-size), each a completion: 1 for 64 KiB, 8
            // for 8 MiB, per request.
            let reads_per_body = (pages * 4096u64).div_ceil(1 << 20);
            let requests = r["load"]["requests"].as_u64().expect("requests");
            assert_eq!(
                f(r, "aio_ops") as u64,
                requests * reads_per_body,
                "{name}: AIO completions"
            );
        } else {
            assert_eq!(aio, 0, "{name}");
        }
        let cold = name.contains(" cold ");
        // Bytes through user space per byte served. Response heads (about
        // 100 bytes per response) go through user space in every mode.
        match mode {
            "read-write" => assert!((1.99..=2.01).contains(&copies), "{name}: {copies}"),
            "mmap-write" | "direct-aio" | "direct-native-aio" => {
                assert!((0.99..=1.01).contains(&copies), "{name}: {copies}")
            }
            "sendfile" | "splice" => assert!(copies < 0.01, "{name}: {copies}"),
            other => panic!("unexpected mode {other}"),
        }
        // Page cache. The workload is charged with every page it brings
        // into the cache, not only the served file's: a path it runs for the
        // first time can page in a few pages of its own binary. Allow that
        // much (STRAY). A warm file then misses at most STRAY, and O_DIRECT
        // never goes through the cache. A cold file misses each of its
        // pages once (readahead stops at EOF), less up to 1% that
        // posix_fadvise(DONTNEED) could not drop at that instant. (The exact
        // oracles — 256 and 0 for a child doing nothing else, mincore
        // checked first — are in probes_full.rs.) 8 is half the 64 KiB
        // file, so a fully cold read can never pass for a warm one. Seen: 5.
        const STRAY: u64 = 8;
        // Disk reads (block family), measured: O_DIRECT reads the file
        // from disk for every response (served bytes include ~100-byte
        // heads, hence a little under 1); a cold file is read from disk
        // once, readahead stopping at EOF, with the same STRAY pages of
        // slack as the misses; a warm one not at all, STRAY aside.
        let disk = f(r, "disk_bytes_per_byte") * f(&r["load"], "bytes");
        let file = pages * 4096;
        let stray = STRAY * 4096;
        match mode {
            m if m.starts_with("direct-") => assert!(
                (0.95..=1.0).contains(&f(r, "disk_bytes_per_byte")),
                "{name}: disk B/B {}",
                f(r, "disk_bytes_per_byte")
            ),
            _ if cold => assert!(
                (file as f64 * 0.99..=(file + stray) as f64 + 0.5).contains(&disk),
                "{name}: {disk} disk bytes for a {file}-byte file"
            ),
            _ => assert!(disk <= stray as f64 + 0.5, "{name}: {disk} disk bytes warm"),
        }
        assert_eq!(f(r, "model_disk_dma_per_byte"), 1.0);
        if mode.starts_with("direct-") || !cold {
            assert!(misses <= STRAY, "{name}: {misses} page-cache misses");
        } else {
            let slack = (pages / 100).max(1);
            assert!(
                (pages - slack..=pages + STRAY).contains(&misses),
                "{name}: {misses} misses for {pages} pages"
            );
        }
    }
    // The headline: sendfile costs the sender less CPU per MiB than
    // read+write on the same warm large file.
    let cpu = |n: &str| {
        rows.iter()
            .find(|r| {
                r["case"]["name"]
                    .as_str()
                    .is_some_and(|x| x.starts_with(n) && x.contains("warm") && !x.ends_with("64K"))
            })
            .map(|r| f(r, "cpu_ms_per_mib"))
            .expect("row")
    };
    assert!(
        cpu("sendfile") < cpu("read-write"),
        "sendfile {} vs read-write {}",
        cpu("sendfile"),
        cpu("read-write")
    );
}

#[test]
fn servers_suite_measures_every_model_and_the_proactor() {
    if !can_load_probes("servers_suite_measures_every_model_and_the_proactor") {
        return;
    }
    let report = compare("servers", &["--quick", "--requests", "200"]);
    let rows = rows(&report);
    assert_eq!(rows.len(), 9, "4 models x 2 triggers + proactor");
    for r in rows {
        let name = r["case"]["name"].as_str().expect("name");
        assert_eq!(r["load"]["errors"], 0, "{name}");
        assert_eq!(
            r["load"]["requests"], r["case"]["requests"],
            "{name}: fixed work"
        );
        assert_eq!(r["verdict"], "confirmed", "{name}: {}", r["claim"]);
        // Every request costs the server at least a receive and a send.
        assert!(f(r, "syscalls_per_request") >= 1.0, "{name}");
        if name.starts_with("reactor") {
            assert!(f(r, "wait_calls") > 0.0, "{name}: no readiness waits seen");
        } else {
            let requests = r["case"]["requests"].as_f64().expect("requests");
            assert!(
                f(r, "uring_completions") >= requests,
                "{name}: one CQE per request at least"
            );
        }
    }
}

/// Descriptors of this process, other than stdio, that a child inherits (no
/// FD_CLOEXEC): `iolens compare` passes them on to its workloads.
fn inherited_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&fd| fd > 2)
        .filter(|&fd| {
            // SAFETY: F_GETFD only reads the flags of a descriptor number.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            flags >= 0 && flags & libc::FD_CLOEXEC == 0
        })
        .count() as u64
}

#[test]
fn demux_suite_poll_and_select_scan_every_idle_connection_epoll_none() {
    if !can_load_probes("demux_suite_poll_and_select_scan_every_idle_connection_epoll_none") {
        return;
    }
    // One active connection, so a wakeup has about one ready fd, beside
    // two counts of idle ones; enough requests that the calls made while
    // connections open and close cannot dominate (see below).
    const IDLE: [u64; 2] = [50, 400];
    const ACTIVE: u64 = 1;
    const REQUESTS: u64 = 2000;
    let inherited = inherited_fds();
    let report = compare(
        "demux",
        &[
            "--idle-conns",
            &format!("{},{}", IDLE[0], IDLE[1]),
            "--conns",
            &ACTIVE.to_string(),
            "--requests",
            &REQUESTS.to_string(),
        ],
    );
    assert_eq!(report["suite"], "demux");
    let rows = rows(&report);
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["case"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "epoll 50 idle",
            "poll 50 idle",
            "select 50 idle",
            "epoll 400 idle",
            "poll 400 idle",
            "select 400 idle"
        ]
    );
    let scanned = |demux: &str, idle: u64| -> f64 {
        let name = format!("{demux} {idle} idle");
        let r = rows
            .iter()
            .find(|r| r["case"]["name"] == name.as_str())
            .expect("row");
        f(r, "fds_scanned_per_wait")
    };
    for (r, name) in rows.iter().zip(&names) {
        let (demux, idle) = name_parts(name);
        let args: Vec<&str> = r["case"]["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("arg"))
            .collect();
        assert!(
            args.windows(2).any(|w| w == ["--demux", demux]),
            "{name}: {args:?}"
        );
        assert_eq!(r["case"]["idle_conns"], idle, "{name}");
        // Fixed work, every idle connection established (a failed connect
        // is an error), none dropped.
        assert_eq!(r["load"]["errors"], 0, "{name}");
        assert_eq!(r["load"]["requests"], REQUESTS, "{name}");
        assert!(r["wait_calls"].as_u64().expect("wait_calls") > 0, "{name}");
        if demux == "epoll" {
            // epoll_wait takes no fd set: nothing is scanned, whatever the
            // number of idle connections. Exact.
            assert!(r["fds_scanned_per_wait"].is_null(), "{name}: {r}");
            assert_eq!(r["verdict"], "confirmed", "{name}: {}", r["claim"]);
            continue;
        }
        // poll is handed the listener and every open connection: at most
        // 1 + idle + active fds per call, exactly that many while the load
        // runs. select is handed the highest registered fd + 1: at least
        // that many too (stdio sits below), and at most the number of
        // descriptors open in the server, which adds stdio and what it
        // inherited from this process. No average can exceed its maximum.
        let all = 1 + idle + ACTIVE;
        let most = match demux {
            "poll" => all,
            "select" => all + 3 + inherited,
            other => panic!("unexpected demux {other}"),
        };
        // Calls that hand over fewer fds are those that accept (the
        // listener stays ready until the backlog is drained, so at most one
        // per connection), those that see connections close at the end (at
        // most one per connection), and 100 ms timeouts (a few); every
        // request needs a call, and all but those served while accepting
        // see every fd. With REQUESTS >= 3 x (idle + active) + 2 x
        // timeouts, the average is at least half of `all`.
        let per_call = scanned(demux, idle);
        assert!(
            (all as f64 / 2.0..=most as f64).contains(&per_call),
            "{name}: {per_call} fds scanned per call, expected {}..={most}",
            all as f64 / 2.0
        );
        // Hence the claim: at least 10 fds scanned per ready fd (about 1
        // ready per wakeup with one active connection).
        assert_eq!(r["verdict"], "confirmed", "{name}: {}", r["claim"]);
    }
    // The scan grows with the idle connections: 350 more add over a third
    // of that to every call on average (implied by the bounds above; said
    // directly here).
    for demux in ["poll", "select"] {
        let (few, many) = (scanned(demux, IDLE[0]), scanned(demux, IDLE[1]));
        assert!(
            many - few >= (IDLE[1] - IDLE[0]) as f64 / 3.0,
            "{demux}: {many} fds per call with {} idle vs {few} with {}",
            IDLE[1],
            IDLE[0]
        );
    }
}

/// `("poll", 400)` from the case name `poll 400 idle`.
fn name_parts(name: &str) -> (&str, u64) {
    let mut words = name.split_whitespace();
    let demux = words.next().expect("demux in the case name");
    let idle = words
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no idle count in {name:?}"));
    (demux, idle)
}
