//! The load generator's accounting: exact error kinds against misbehaving
//! servers, and open-loop latency measured from the intended send time.

mod workloads_common;

use std::{
    io::Read,
    net::TcpListener,
    thread,
    time::{Duration, Instant},
};

use workloads_common::{Server, load};

#[test]
fn connect_errors_count_against_the_request_budget() {
    // A port with nothing listening: bind, note the port, close.
    let addr = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let r = load(addr, &["--conns", "1", "--threads", "1", "--requests", "5"]);
    assert_eq!(r["errors"]["connect"], 5, "{r}");
    assert_eq!(r["errors"]["total"], 5, "{r}");
    assert_eq!(r["requests"], 0, "{r}");
}

#[test]
fn non_200_statuses_are_counted() {
    let server = Server::start(&[]);
    let r = load(
        server.addr,
        &[
            "--conns",
            "2",
            "--threads",
            "1",
            "--requests",
            "10",
            "--path",
            "/nope",
        ],
    );
    assert_eq!(r["errors"]["status"], 10, "{r}");
    assert_eq!(r["errors"]["total"], 10, "{r}");
    assert_eq!(r["requests"], 0, "{r}");
    server.stop();
}

#[test]
fn silent_server_times_out() {
    // Connections complete in the kernel backlog; nothing ever answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let started = Instant::now();
    let r = load(
        addr,
        &[
            "--conns",
            "2",
            "--threads",
            "1",
            "--requests",
            "2",
            "--timeout-ms",
            "300",
        ],
    );
    assert_eq!(r["errors"]["timeout"], 2, "{r}");
    assert_eq!(r["errors"]["total"], 2, "{r}");
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(listener);
}

#[test]
fn server_closing_mid_request_is_a_read_error() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    let acceptor = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut accepted = 0;
        while accepted < 3 && Instant::now() < deadline {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).expect("blocking");
                    s.set_read_timeout(Some(Duration::from_secs(5)))
                        .expect("timeout");
                    let mut buf = [0u8; 1024];
                    // Read the request, then close without answering.
                    let _ = s.read(&mut buf);
                    accepted += 1;
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
        accepted
    });
    let r = load(addr, &["--conns", "1", "--threads", "1", "--requests", "3"]);
    assert_eq!(acceptor.join().expect("acceptor"), 3);
    assert_eq!(r["errors"]["read"], 3, "{r}");
    assert_eq!(r["errors"]["total"], 3, "{r}");
    assert_eq!(r["requests"], 0, "{r}");
}

#[test]
fn open_loop_paces_requests() {
    let server = Server::start(&[]);
    let r = load(
        server.addr,
        &[
            "--conns",
            "4",
            "--threads",
            "1",
            "--rate",
            "1000",
            "--requests",
            "400",
        ],
    );
    assert_eq!(r["requests"], 400, "{r}");
    assert_eq!(r["errors"]["total"], 0, "{r}");
    // 400 requests at 1000/s: the last is scheduled 0.399 s after the start.
    let secs = r["duration_s"].as_f64().expect("duration");
    assert!((0.39..2.0).contains(&secs), "took {secs} s: {r}");
    server.stop();
}

#[test]
fn open_loop_charges_queueing_to_latency() {
    // 2 ms of CPU per request: at most 500 req/s on the single loop, so an
    // offered 1000 req/s for 1 s builds a queue of about 500 requests
    // (about 1 s of wait) by the end. Latency is measured from each intended
    // send time, so the p99 must include that queue; a closed-loop or
    // coordinated-omission measurement would report about 2-8 ms.
    let server = Server::start(&["--work-us", "2000"]);
    let r = load(
        server.addr,
        &[
            "--conns",
            "4",
            "--threads",
            "1",
            "--rate",
            "1000",
            "--duration",
            "1",
        ],
    );
    assert_eq!(r["errors"]["total"], 0, "{r}");
    let p99 = r["latency_us"]["p99"].as_f64().expect("p99");
    assert!(p99 > 200_000.0, "p99 {p99} µs does not show the queue: {r}");
    server.stop();
}
