//! Every reactor model × trigger × demultiplexer (× accept mode) answers the
//! built-in load generator, wrk and curl correctly; CLI errors and signals
//! behave.

mod workloads_common;

use std::{process::Command, time::Duration};

use workloads_common::{BIN, Server, have_tool, load, ok_response, run_bounded, wrk_clean};

/// Demultiplexer/trigger combinations every model is run with (edge is
/// epoll-only by design).
const DEMUX: &[&[&str]] = &[
    &["--demux", "epoll", "--trigger", "level"],
    &["--demux", "epoll", "--trigger", "edge"],
    &["--demux", "poll"],
    &["--demux", "select"],
];

const REQUESTS: u64 = 2000;
const BODY: u64 = 300;

fn check_server(args: &[&str]) {
    let server = Server::start(args);
    let addr = server.addr;

    // Built-in load generator: exact counts, every body byte verified.
    let path = format!("/bytes/{BODY}");
    let r = load(
        addr,
        &[
            "--path",
            &path,
            "--conns",
            "16",
            "--threads",
            "2",
            "--requests",
            &REQUESTS.to_string(),
            "--verify-body",
            "--expect-body-len",
            &BODY.to_string(),
        ],
    );
    let per_response = ok_response(BODY as usize, true).len() as u64;
    assert_eq!(r["errors"]["total"], 0, "{args:?}: errors {}", r["errors"]);
    assert_eq!(r["requests"], REQUESTS, "{args:?}: {r}");
    assert_eq!(r["body_bytes"], REQUESTS * BODY, "{args:?}: {r}");
    assert_eq!(r["bytes"], REQUESTS * per_response, "{args:?}: {r}");

    // curl sees exact headers and body.
    if have_tool("curl", "curl") {
        let url = format!("http://{addr}/bytes/17");
        let out = run_bounded(
            Command::new("curl").args(["-sS", "-i", &url]),
            Duration::from_secs(10),
        );
        assert!(
            out.status.success(),
            "{args:?}: curl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&ok_response(17, true)),
            "{args:?}"
        );
    }

    // wrk: zero socket errors, zero non-2xx.
    if have_tool("wrk", "wrk") {
        let requests = wrk_clean(
            &format!("{args:?}"),
            &format!("http://{addr}/"),
            &["-t1", "-c8", "-d1s", "--timeout", "5s"],
        );
        assert!(requests > 0, "{args:?}: wrk completed no requests");
    }

    server.stop();
}

fn check_model(model_args: &[&str]) {
    for demux in DEMUX {
        let args: Vec<&str> = model_args.iter().chain(demux.iter()).copied().collect();
        check_server(&args);
    }
}

#[test]
fn single() {
    check_model(&["--model", "single"]);
}

#[test]
fn pool() {
    check_model(&["--model", "pool", "--threads", "2", "--work-us", "20"]);
}

#[test]
fn multi() {
    check_model(&["--model", "multi", "--threads", "2"]);
}

#[test]
fn reuseport_accept_reuseport() {
    check_model(&[
        "--model",
        "reuseport",
        "--threads",
        "2",
        "--accept",
        "reuseport",
    ]);
}

#[test]
fn reuseport_accept_shared() {
    check_model(&[
        "--model",
        "reuseport",
        "--threads",
        "2",
        "--accept",
        "shared",
    ]);
}

#[test]
fn reuseport_accept_exclusive() {
    // EPOLLEXCLUSIVE exists only for epoll.
    for trigger in ["level", "edge"] {
        check_server(&[
            "--model",
            "reuseport",
            "--threads",
            "2",
            "--accept",
            "exclusive",
            "--trigger",
            trigger,
        ]);
    }
}

fn run_cli(args: &[&str]) -> std::process::Output {
    run_bounded(Command::new(BIN).args(args), Duration::from_secs(10))
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = run_cli(&["workload", "reactor", "--model", "bogus"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run_cli(&["workload", "load", "--conns", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn impossible_combinations_are_refused() {
    for (args, needle) in [
        (
            &["--trigger", "edge", "--demux", "poll"][..],
            "--trigger edge needs --demux epoll",
        ),
        (
            &["--model", "multi", "--accept", "shared"][..],
            "--accept only applies to --model reuseport",
        ),
        (
            &[
                "--model",
                "reuseport",
                "--accept",
                "exclusive",
                "--demux",
                "select",
            ][..],
            "--accept exclusive needs --demux epoll",
        ),
    ] {
        let mut full = vec!["workload", "reactor", "--listen", "127.0.0.1:0"];
        full.extend_from_slice(args);
        let out = run_cli(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn port_in_use_is_one_clear_line() {
    let server = Server::start(&[]);
    let addr = server.addr.to_string();
    let out = run_cli(&["workload", "reactor", "--listen", &addr]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("iolens: "))
            .collect::<Vec<_>>(),
        vec![format!(
            "iolens: address {addr} is already in use: stop the other server or choose another --listen port"
        )]
    );
    server.stop();
}

#[test]
fn sigterm_is_a_clean_exit() {
    let mut server = Server::start(&["--model", "multi", "--threads", "2"]);
    assert!(server.alive());
    assert_eq!(server.stop_with(libc::SIGTERM), Some(0));
}
