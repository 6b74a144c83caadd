//! The metrics endpoint under hostile clients (`--web.*` flags): half-sent
//! requests are closed at the header timeout, a flood of them neither
//! locks a scraper out nor leaks fds, keep-alive pauses end at the idle
//! timeout.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use iolens_tests::{Agent, Metrics, can_load_probes, http_get, wait_until};

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Raises this process's soft RLIMIT_NOFILE to `want` (or the hard limit).
fn raise_nofile(want: u64) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        r.rlim_cur = want.min(r.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
    }
    r.rlim_cur
}

fn dropped(m: &Metrics, reason: &str) -> u64 {
    m.sum(
        "iolens_http_connections_dropped_total",
        &[("reason", reason)],
    )
}

const HALF: usize = 2_000;

#[test]
fn half_sent_requests_are_closed_at_the_header_timeout_and_leak_nothing() {
    let test = "half_sent_requests_are_closed_at_the_header_timeout_and_leak_nothing";
    if !can_load_probes(test) {
        return;
    }
    let limit = raise_nofile(HALF as u64 + 1_000);
    assert!(limit > HALF as u64 + 100, "RLIMIT_NOFILE {limit} too low");
    let timeout = Duration::from_secs(2);
    let agent = Agent::start(&["--web.header-timeout", "2s"]);
    // Baseline after one scrape (the blocking pool's thread exists then).
    let (status, _) = http_get(agent.addr, "/metrics");
    assert_eq!(status, 200);
    let baseline = open_fds(agent.pid());

    // 2,000 connections that each send half a request head and stop.
    let started = Instant::now();
    let mut held = Vec::with_capacity(HALF);
    for _ in 0..HALF {
        let mut s = TcpStream::connect(agent.addr).expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n")
            .expect("half a request");
        held.push(s);
    }
    let opened = started.elapsed();
    let peak = open_fds(agent.pid());

    // A scrape in the middle of them is answered.
    let t = Instant::now();
    let (status, body) = http_get(agent.addr, "/metrics");
    let scrape = t.elapsed();
    assert_eq!(status, 200, "a scrape during the flood");
    assert!(body.contains("iolens_probe_attached"), "{body}");

    // Every one is closed by the agent, none later than the timeout after
    // the last was opened (slack: scheduling on a loaded 2-vCPU machine).
    let last_opened = Instant::now();
    let mut answered = 0;
    for s in &mut held {
        s.set_read_timeout(Some(timeout + Duration::from_secs(5)))
            .expect("read timeout");
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    assert!(
                        buf[..n].starts_with(b"HTTP/1.1 503") || answered > 0,
                        "unexpected bytes: {:?}",
                        String::from_utf8_lossy(&buf[..n])
                    );
                    answered += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("a half-sent connection was not closed: {e}"),
            }
        }
    }
    let all_closed = last_opened.elapsed();
    assert!(
        all_closed < timeout + Duration::from_secs(2),
        "closing took {all_closed:?} after the last connection (timeout {timeout:?})"
    );
    drop(held);

    // The agent's fds come back to the baseline.
    let back = wait_until(Duration::from_secs(10), || {
        open_fds(agent.pid()) <= baseline
    });
    let after = open_fds(agent.pid());
    assert!(back, "fds: baseline {baseline}, peak {peak}, after {after}");

    // Each was closed by the agent: at the cap to make room, or at the
    // header timeout. None was refused: none was being answered.
    let m = agent.scrape();
    let (timed_out, evicted, refused) = (
        dropped(&m, "header_timeout"),
        dropped(&m, "evicted"),
        dropped(&m, "refused"),
    );
    assert_eq!(
        timed_out + evicted,
        HALF as u64,
        "header_timeout {timed_out} + evicted {evicted}"
    );
    assert_eq!(refused, 0);
    assert_eq!(answered, 0, "no 503 was due");
    // How many of each depends on how fast they were opened: any that
    // waited 2 s before the cap was reached timed out first.
    assert!(evicted > 0, "the cap (256) was never reached");
    println!(
        "{HALF} half-sent: opened in {opened:?}; agent fds baseline {baseline}, peak {peak}, after {after}; \
         scrape during them {scrape:?}; all closed {all_closed:?} after the last; \
         header_timeout {timed_out}, evicted {evicted}"
    );
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
}

/// A keep-alive connection serves a second request after a short pause,
/// and is closed once a pause exceeds the idle timeout.
#[test]
fn keep_alive_pauses_end_at_the_idle_timeout() {
    let test = "keep_alive_pauses_end_at_the_idle_timeout";
    if !can_load_probes(test) {
        return;
    }
    let agent = Agent::start(&["--web.idle-timeout", "1s", "--web.header-timeout", "5s"]);
    let mut s = TcpStream::connect(agent.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let get = |s: &mut TcpStream| {
        s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .expect("send");
        // The landing page: headers, then Content-Length bytes.
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "closed mid-response");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_owned())
                    })
                    .and_then(|v| v.parse().ok())
                    .expect("content-length");
                if body.len() >= len {
                    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                    return;
                }
            }
        }
    };
    get(&mut s);
    std::thread::sleep(Duration::from_millis(400));
    get(&mut s);
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    let closed = t.elapsed();
    assert_eq!(n, 0, "the idle connection was closed");
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_secs(3),
        "closed after {closed:?} with --web.idle-timeout 1s"
    );
    let m = agent.scrape();
    assert_eq!(dropped(&m, "idle_timeout"), 1);
    assert_eq!(dropped(&m, "header_timeout"), 0);
    println!("idle keep-alive connection closed after {closed:?}");
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
}
