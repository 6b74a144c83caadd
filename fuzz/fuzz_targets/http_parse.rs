//! Fuzzes the shared HTTP/1.1 request parser: no panics, and the results
//! obey the parser's contract.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Included by path so the fuzz build does not compile the whole agent
// (aya, hyper, tokio…); http.rs depends on std only.
#[path = "../../agent/src/workloads/http.rs"]
#[allow(dead_code)]
mod http;

use http::{MAX_HEAD_LEN, Parsed, parse_request};

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(Parsed::Complete(req, n)) => {
            assert!(n <= data.len() && n <= MAX_HEAD_LEN);
            assert!(data[..n].ends_with(b"\r\n\r\n"));
            assert!(req.path.starts_with('/'));
            // The request does not depend on what follows it.
            assert_eq!(parse_request(&data[..n]), Ok(Parsed::Complete(req, n)));
            // One byte less is incomplete, not an error.
            assert_eq!(parse_request(&data[..n - 1]), Ok(Parsed::Partial));
            let mut out = Vec::new();
            http::write_head(&mut out, http::Status::Ok, n as u64, req.keep_alive);
            assert!(out.ends_with(b"\r\n\r\n"));
        }
        // Partial input is never accepted beyond the head limit.
        Ok(Parsed::Partial) => assert!(data.len() <= MAX_HEAD_LEN),
        Err(e) => {
            let mut out = Vec::new();
            http::write_error(&mut out, &e);
            assert!(out.starts_with(b"HTTP/1.1 4") || out.starts_with(b"HTTP/1.1 5"));
        }
    }
});
