//! `iolens workload proactor` end to end: curl, wrk, pipelining, malformed
//! input, SQPOLL, clean exit on SIGTERM. Traffic stays on 127.0.0.1.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::Command,
    time::Duration,
};

mod workloads_common;

use workloads_common::{Server, body, wrk_clean};

/// Whether `tool` is on PATH (the Debian package has the same name).
fn have(tool: &str) -> bool {
    workloads_common::have_tool(tool, tool)
}

/// Starts `iolens workload proactor` with `args`.
fn proactor(args: &[&str]) -> Server {
    Server::workload("proactor", args)
}

/// Reads exactly `count` responses framed by Content-Length; returns
/// (status, body) pairs.
fn read_responses(s: &mut TcpStream, count: usize) -> Vec<(u16, Vec<u8>)> {
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut tmp = [0u8; 65536];
    while out.len() < count {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status: u16 = head[9..12].parse().expect("status code");
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().expect("len"))
                })
                .expect("content-length");
            if buf.len() >= end + 4 + len {
                out.push((status, buf[end + 4..end + 4 + len].to_vec()));
                buf.drain(..end + 4 + len);
                continue;
            }
        }
        let n = s.read(&mut tmp).expect("read response");
        assert!(
            n > 0,
            "connection closed after {} of {count} responses",
            out.len()
        );
        buf.extend_from_slice(&tmp[..n]);
    }
    assert!(
        buf.is_empty(),
        "extra bytes after {count} responses: {buf:?}"
    );
    out
}

#[test]
fn curl_gets_headers_and_body() {
    if !have("curl") {
        return;
    }
    let srv = proactor(&["--threads", "2", "--response-size", "100"]);
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "5", &srv.url("/")])
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    let (head, b) = text.split_once("\r\n\r\n").expect("header end");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\ncontent-length: 100"),
        "{head}"
    );
    assert_eq!(b.as_bytes(), body(100));
    srv.stop_by(libc::SIGTERM);
}

#[test]
fn large_response_arrives_whole() {
    // 4 MiB exceeds the socket buffer, so sends complete partially and must
    // be resumed from the right offset.
    let srv = proactor(&["--threads", "1", "--response-size", "4194304"]);
    let mut s = TcpStream::connect(srv.addr).expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    let r = read_responses(&mut s, 2);
    for (st, b) in r {
        assert_eq!(st, 200);
        assert!(b == body(4 << 20), "body differs");
    }
    srv.stop_by(libc::SIGTERM);
}

#[test]
fn pipelined_requests_answered_in_order() {
    let srv = proactor(&["--threads", "2"]);
    let mut s = TcpStream::connect(srv.addr).expect("connect");
    // 20 requests for bodies of 0..20 bytes: the lengths show the order. The
    // batch is split mid-request so parsing must resume across receives.
    let mut batch = Vec::new();
    for i in 0..20 {
        batch.extend_from_slice(format!("GET /bytes/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    }
    let (a, b) = batch.split_at(batch.len() / 2 + 3);
    s.write_all(a).expect("send");
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b).expect("send");
    let r = read_responses(&mut s, 20);
    let want: Vec<(u16, Vec<u8>)> = (0..20).map(|i| (200, body(i))).collect();
    assert_eq!(r, want);
    srv.stop_by(libc::SIGTERM);
}

/// Sends `req` on a new connection and returns everything until the server
/// closes it.
fn one_shot(addr: SocketAddr, req: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(req).expect("send");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .expect("server must close after an error response");
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn errors_get_their_status_and_others_are_served() {
    let srv = proactor(&["--threads", "2"]);
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let cases: [(&[u8], &str); 5] = [
        (b"THIS IS NOT HTTP\r\n\r\n", "HTTP/1.1 400 "),
        (b"DELETE / HTTP/1.1\r\nHost: t\r\n\r\n", "HTTP/1.1 405 "),
        (
            b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
            "HTTP/1.1 413 ",
        ),
        (big_header.as_bytes(), "HTTP/1.1 431 "),
        (
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 200 ",
        ),
    ];
    for (req, want) in cases {
        let text = one_shot(srv.addr, req);
        assert!(
            text.starts_with(want),
            "{:?} → {text:?}",
            String::from_utf8_lossy(&req[..req.len().min(40)])
        );
    }
    // Unknown paths are 404 on a connection that stays usable.
    let mut good = TcpStream::connect(srv.addr).expect("connect");
    good.write_all(b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    let r = read_responses(&mut good, 2);
    assert_eq!(r, vec![(404, Vec::new()), (200, body(128))]);
    srv.stop_by(libc::SIGTERM);
}

/// Runs wrk for 2 s on `threads` threads and `conns` connections: no
/// socket errors, no non-2xx responses, and more than 1000 requests.
fn wrk_2s(srv: &Server, threads: &str, conns: &str) {
    let reqs = wrk_clean(
        &srv.desc,
        &srv.url("/"),
        &["-t", threads, "-c", conns, "-d", "2s", "--timeout", "2s"],
    );
    assert!(reqs > 1000, "only {reqs} requests in 2 s");
}

#[test]
fn wrk_multithread_zero_errors() {
    if !have("wrk") {
        return;
    }
    let srv = proactor(&["--threads", "2"]);
    wrk_2s(&srv, "2", "64");
    srv.stop_by(libc::SIGTERM);
}

#[test]
fn wrk_sqpoll_zero_errors() {
    if !have("wrk") {
        return;
    }
    let srv = proactor(&["--threads", "2", "--sqpoll"]);
    wrk_2s(&srv, "1", "32");
    srv.stop_by(libc::SIGTERM);
}

#[test]
fn abrupt_disconnects_with_sends_in_flight_then_sigint() {
    let srv = proactor(&["--threads", "1"]);
    // Each client asks for 4 × 4 MiB and vanishes without reading: the
    // server's sends fail or stall with buffers in flight, and the
    // connection state must outlive them without disturbing others.
    for _ in 0..20 {
        let mut s = TcpStream::connect(srv.addr).expect("connect");
        for _ in 0..4 {
            s.write_all(b"GET /bytes/4194304 HTTP/1.1\r\nHost: t\r\n\r\n")
                .expect("send");
        }
        let mut first = [0u8; 1024];
        let n = s.read(&mut first).expect("read");
        assert!(
            first[..n].starts_with(b"HTTP/1.1 200 "),
            "{:?}",
            String::from_utf8_lossy(&first[..n])
        );
        drop(s);
    }
    let mut good = TcpStream::connect(srv.addr).expect("connect");
    good.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    assert_eq!(read_responses(&mut good, 1), vec![(200, body(128))]);
    // A client idle on a connection must not hold up shutdown either.
    srv.stop_by(libc::SIGINT);
    drop(good);
}

#[test]
fn tiny_buffer_ring_runs_dry_and_recovers() {
    // Two 64-byte provided buffers for 8 clients sending ~1.5 KiB heads:
    // multishot receives end with ENOBUFS and must be re-armed, and heads
    // spread over many buffers must be reassembled.
    let srv = proactor(&[
        "--threads",
        "1",
        "--recv-buffers",
        "2",
        "--recv-buffer-size",
        "64",
    ]);
    let req = format!(
        "GET /bytes/7 HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(1500)
    );
    let mut clients: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(srv.addr).expect("connect"))
        .collect();
    for c in &mut clients {
        for _ in 0..3 {
            c.write_all(req.as_bytes()).expect("send");
        }
    }
    for c in &mut clients {
        assert_eq!(read_responses(c, 3), vec![(200, body(7)); 3]);
    }
    srv.stop_by(libc::SIGTERM);
}

#[test]
fn load_generator_counts_exact_requests_with_verified_bodies() {
    let srv = proactor(&["--threads", "2", "--response-size", "1000"]);
    let out = Command::new(workloads_common::BIN)
        .args([
            "workload",
            "load",
            "--url",
            &srv.url("/"),
            "--conns",
            "32",
            "--requests",
            "20000",
            "--verify-body",
            "--json",
        ])
        .output()
        .expect("run the load generator");
    assert!(
        out.status.success(),
        "load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["requests"], 20000, "{report}");
    assert_eq!(report["body_bytes"], 20000 * 1000, "{report}");
    assert_eq!(report["errors"]["total"], 0, "{report}");
    srv.stop_by(libc::SIGTERM);
}

#[test]
fn error_response_survives_late_input() {
    // Input arriving after the 400 was decided must not make the server
    // close with unread data (RST), which can destroy the response before
    // the client reads it: the server lingers, draining until our FIN.
    let srv = proactor(&["--threads", "1"]);
    for _ in 0..5 {
        let mut s = TcpStream::connect(srv.addr).expect("connect");
        s.write_all(b"BAD REQUEST\r\n\r\n").expect("send");
        std::thread::sleep(Duration::from_millis(100));
        // The server may already have shut down its side; a failed write
        // here is fine, a lost response is not.
        let _ = s.write_all(&[b'x'; 65536]);
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut got = Vec::new();
        s.read_to_end(&mut got)
            .expect("the 400 and a clean FIN, not a reset");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
        assert!(text.ends_with("Bad Request\n"), "{text}");
    }
    srv.stop_by(libc::SIGTERM);
}
