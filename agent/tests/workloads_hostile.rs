//! Malformed and hostile input against the reactor server: each case gets
//! its exact response, and the server keeps serving everyone else. Also the
//! C10K case: 10,000 idle connections plus active load.

mod workloads_common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    thread,
    time::Duration,
};

use workloads_common::{Server, load, ok_response, raise_nofile};

/// A few arrangements that exercise different read paths.
const CONFIGS: &[&[&str]] = &[
    &["--model", "single"],
    &["--model", "single", "--trigger", "edge"],
    &["--model", "pool", "--threads", "2"],
    &["--model", "multi", "--threads", "2", "--demux", "select"],
];

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

/// Sends `req`, then reads until the server closes (bounded by the read
/// timeout, which fails the read).
fn exchange(addr: SocketAddr, req: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    s.write_all(req).expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("server should answer and close");
    out
}

fn error_response(status_line: &str, allow: bool) -> Vec<u8> {
    let reason = &status_line["HTTP/1.1 ".len()..];
    format!(
        "{status_line}\r\nServer: iolens\r\nContent-Length: {}\r\nConnection: close\r\n{}Content-Type: text/plain\r\n\r\n{reason}\n",
        reason.len() + 1,
        if allow { "Allow: GET, HEAD\r\n" } else { "" }
    )
    .into_bytes()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The server still answers a short burst of normal load with no errors.
fn still_serving(addr: SocketAddr) {
    let r = load(
        addr,
        &[
            "--conns",
            "4",
            "--threads",
            "1",
            "--requests",
            "500",
            "--verify-body",
        ],
    );
    assert_eq!(r["errors"]["total"], 0, "{r}");
    assert_eq!(r["requests"], 500, "{r}");
}

fn with_each_server(f: impl Fn(SocketAddr)) {
    for args in CONFIGS {
        let server = Server::start(args);
        f(server.addr);
        still_serving(server.addr);
        server.stop();
    }
}

#[test]
fn rejections_get_exact_error_responses() {
    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 9000));
    big.extend_from_slice(b"\r\n\r\n");
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"\x00\x01\x02garbage\r\n\r\n".to_vec(), error_response("HTTP/1.1 400 Bad Request", false)),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), error_response("HTTP/1.1 400 Bad Request", false)),
        (big, error_response("HTTP/1.1 431 Request Header Fields Too Large", false)),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            error_response("HTTP/1.1 413 Content Too Large", false),
        ),
        // A body larger than the read buffer: the response must survive the
        // unread remainder (no RST before the client reads it).
        (
            [
                &b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n"[..],
                &[b'x'; 100_000][..],
            ]
            .concat(),
            error_response("HTTP/1.1 413 Content Too Large", false),
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            error_response("HTTP/1.1 413 Content Too Large", false),
        ),
        (b"POST / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), error_response("HTTP/1.1 405 Method Not Allowed", true)),
        (b"GET / HTTP/3.0\r\nHost: a\r\n\r\n".to_vec(), error_response("HTTP/1.1 505 HTTP Version Not Supported", false)),
        (
            format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "x".repeat(5000)).into_bytes(),
            error_response("HTTP/1.1 414 URI Too Long", false),
        ),
        (
            b"GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_vec(),
            b"HTTP/1.1 404 Not Found\r\nServer: iolens\r\nContent-Length: 14\r\nConnection: close\r\n\r\n404 Not Found\n".to_vec(),
        ),
        (
            b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nServer: iolens\r\nContent-Length: 128\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        // HTTP/1.0 without keep-alive closes after one response.
        (b"GET /bytes/3 HTTP/1.0\r\n\r\n".to_vec(), ok_response(3, false)),
    ];
    with_each_server(|addr| {
        for (req, want) in &cases {
            assert_eq!(
                text(&exchange(addr, req)),
                text(want),
                "request {:?}",
                text(&req[..req.len().min(60)])
            );
        }
    });
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut req = Vec::new();
    let mut want = Vec::new();
    for n in [1usize, 200_000, 0, 17] {
        req.extend_from_slice(format!("GET /bytes/{n} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        want.extend(ok_response(n, true));
    }
    req.extend_from_slice(b"HEAD /bytes/5 HTTP/1.1\r\nHost: a\r\n\r\nGET /bytes/9 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    want.extend_from_slice(
        b"HTTP/1.1 200 OK\r\nServer: iolens\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
    );
    want.extend(ok_response(9, false));
    with_each_server(|addr| {
        let got = exchange(addr, &req);
        assert_eq!(got.len(), want.len());
        assert!(
            got == want,
            "pipelined responses differ from the expected sequence"
        );
    });
}

#[test]
fn requests_split_into_single_bytes_are_parsed() {
    let req = b"GET /bytes/33 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    with_each_server(|addr| {
        let mut s = connect(addr);
        s.set_nodelay(true).expect("nodelay");
        for b in req {
            s.write_all(&[*b]).expect("write");
            thread::sleep(Duration::from_micros(300));
        }
        let mut out = Vec::new();
        s.read_to_end(&mut out).expect("read");
        assert_eq!(text(&out), text(&ok_response(33, false)));
    });
}

#[test]
fn slowloris_does_not_block_others() {
    with_each_server(|addr| {
        let mut slow: Vec<TcpStream> = (0..20)
            .map(|_| {
                let mut s = connect(addr);
                s.write_all(b"GET /bytes/7 HTTP/1.1\r\nHo").expect("write");
                s
            })
            .collect();
        // Others are served meanwhile.
        still_serving(addr);
        for s in &mut slow {
            s.write_all(b"st: a\r\nConnection: close\r\n\r\n")
                .expect("write");
        }
        for s in &mut slow {
            let mut out = Vec::new();
            s.read_to_end(&mut out).expect("read");
            assert_eq!(text(&out), text(&ok_response(7, false)));
        }
    });
}

/// Closes with RST instead of FIN.
fn reset(s: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a pointer to a live linger struct and its size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_LINGER");
    drop(s);
}

#[test]
fn abrupt_resets_are_survived() {
    with_each_server(|addr| {
        // Reset with a partial request buffered.
        let mut s = connect(addr);
        s.write_all(b"GET / HTTP/1.1\r\nHost").expect("write");
        reset(s);
        // Reset in the middle of a large response.
        let mut s = connect(addr);
        s.write_all(b"GET /bytes/33554432 HTTP/1.1\r\nHost: a\r\n\r\n")
            .expect("write");
        let mut first = [0u8; 4096];
        s.read_exact(&mut first).expect("read");
        reset(s);
        // Reset before sending anything.
        reset(connect(addr));
        // Reset with unread pipelined requests queued.
        let mut s = connect(addr);
        for _ in 0..50 {
            s.write_all(b"GET /bytes/1000 HTTP/1.1\r\nHost: a\r\n\r\n")
                .expect("write");
        }
        reset(s);
        thread::sleep(Duration::from_millis(50));
    });
}

#[test]
fn large_body_is_exact() {
    let server = Server::start(&["--model", "single", "--trigger", "edge"]);
    let got = exchange(
        server.addr,
        b"GET /bytes/3000001 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    let want = ok_response(3_000_001, false);
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "the 3 MB response differs from the expected bytes"
    );
    server.stop();
}

/// Open files the test's children need for 10,000 idle connections.
const C10K_FDS: u64 = 10_500;

#[test]
fn c10k_idle_plus_active_load_on_multi() {
    // Both children raise their own soft limit to the hard limit; the test
    // only checks that the hard limit allows it.
    let hard = raise_nofile();
    if hard < C10K_FDS {
        let msg = format!("hard RLIMIT_NOFILE {hard} < {C10K_FDS}: raise it (ulimit -Hn)");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return;
    }

    let server = Server::start(&["--model", "multi", "--threads", "2"]);
    let r = load(
        server.addr,
        &[
            "--idle-conns",
            "10000",
            "--conns",
            "50",
            "--threads",
            "2",
            "--requests",
            "20000",
            "--path",
            "/bytes/64",
            "--verify-body",
            "--expect-body-len",
            "64",
        ],
    );
    assert_eq!(r["idle_connected"], 10000, "{r}");
    assert_eq!(r["errors"]["total"], 0, "{r}");
    assert_eq!(r["requests"], 20000, "{r}");
    assert_eq!(r["body_bytes"], 20000 * 64, "{r}");
    server.stop();
}

#[test]
fn select_closes_connections_beyond_fd_setsize_and_keeps_serving() {
    const OPEN: usize = 1100;
    assert!(
        raise_nofile() >= OPEN as u64 + 100,
        "this test needs about {} open files",
        OPEN + 100
    );
    let server = Server::start(&["--model", "single", "--demux", "select"]);
    let streams: Vec<TcpStream> = (0..OPEN).map(|_| connect(server.addr)).collect();
    // Let the server accept them all, then see which it closed.
    thread::sleep(Duration::from_millis(500));
    let mut closed = 0;
    for s in &streams {
        s.set_nonblocking(true).expect("nonblocking");
        let mut b = [0u8; 1];
        match (&*s).read(&mut b) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("unexpected read result {other:?}"),
        }
    }
    // The server holds a handful of fds of its own (stdio, listener), so
    // between 1000 and 1021 connections fit below FD_SETSIZE (1024).
    assert!(
        (OPEN - 1021..=OPEN - 1000).contains(&closed),
        "closed {closed} of {OPEN}"
    );
    drop(streams);
    thread::sleep(Duration::from_millis(200));
    still_serving(server.addr);
    server.stop();
}
