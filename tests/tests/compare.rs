//! `iolens compare` end to end: the real binary runs the real workloads under
//! the real probes, and its report must show what the copy model and the
//! page cache predict, exactly where the kernel is exact.

use std::process::Command;

use iolens_tests::{agent_bin, can_load_probes};

fn compare(suite: &str, requests: &str) -> serde_json::Value {
    let out = Command::new(agent_bin())
        .args([
            "compare",
            "--suite",
            suite,
            "--quick",
            "--requests",
            requests,
            "--json",
        ])
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
    let report = compare("filesend", "40");
    let rows = rows(&report);
    assert_eq!(rows.len(), 20, "5 modes x cold/warm x 2 sizes");
    for r in rows {
        let name = r["case"]["name"].as_str().expect("name");
        assert_eq!(r["load"]["errors"], 0, "{name}: load errors");
        if r["verdict"] != "measured" {
            assert_eq!(r["verdict"], "confirmed", "{name}: {}", r["claim"]);
        }
        let copies = f(r, "est_cpu_copies_per_byte");
        let misses = f(r, "page_cache_misses") as u64;
        let mode = name.split_whitespace().next().expect("mode");
        let cold = name.contains(" cold ");
        let pages = if name.ends_with("64K") { 16 } else { 2048 };
        // Bytes through user space per byte served. Response heads (about
        // 100 bytes per response) go through user space in every mode.
        match mode {
            "read-write" => assert!((1.99..=2.01).contains(&copies), "{name}: {copies}"),
            "mmap-write" | "direct-aio" => {
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
        if mode == "direct-aio" || !cold {
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
    let report = compare("servers", "200");
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
