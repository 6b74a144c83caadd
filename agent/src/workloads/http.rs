//! Strict, zero-copy HTTP/1.1 request parser and response writers shared by
//! every workload server (reactor, proactor, file sender) and the load
//! generator.
//!
//! This file has no dependencies beyond `std` so that the fuzz target can
//! include it with `#[path]` without pulling in the whole agent.
//!
//! # Public API
//!
//! Parsing (borrows the caller's read buffer, never allocates):
//! - [`parse_request`]`(buf) -> Result<`[`Parsed`]`<'_>, `[`HttpError`]`>`
//!   - `Ok(Parsed::Complete(req, consumed))`: one request head of `consumed`
//!     bytes at the start of `buf`; call again on `&buf[consumed..]` for
//!     pipelined requests.
//!   - `Ok(Parsed::Partial)`: read more bytes and call again (everything seen
//!     so far is valid and under the limits).
//!   - `Err(e)`: answer with [`write_error`] (status from [`HttpError::status`])
//!     and close the connection; the stream cannot be resynchronised.
//! - [`Request`] `{ method, path, query, version_minor, keep_alive, range }`.
//! - [`Method`]: `Get` or `Head` (anything else is [`HttpError::MethodNotAllowed`]).
//! - [`ByteRange`]: a single `Range: bytes=…` spec; anything else is ignored
//!   (RFC 9110 §14.2 allows ignoring Range).
//!
//! Accepted subset: `GET`/`HEAD`, origin-form target, `HTTP/1.1` or
//! `HTTP/1.0`, CRLF line endings, no obs-fold, exactly one `Host` on
//! HTTP/1.1, no request body (`Content-Length` > 0 or any
//! `Transfer-Encoding` is 413). Limits: [`MAX_HEAD_LEN`] bytes of head (431),
//! [`MAX_TARGET_LEN`] bytes of request target (414), [`MAX_HEADERS`] header
//! lines (431).
//!
//! Responses (append to a reused `Vec<u8>`, no other allocation):
//! - [`write_head`]`(out, status, content_length, keep_alive)`
//! - [`write_head_with`]`(out, status, content_length, keep_alive, extra)`
//!   with extra header lines such as `Content-Range`.
//! - [`write_error`]`(out, &err)`: a complete error response with
//!   `Connection: close` (and `Allow` for 405).
//! - [`Status`]: the codes the servers use, with reason phrases.
//!
//! Bodies are deterministic so that clients can verify them:
//! [`body_byte`]`(i)` is byte `i` of every generated body, [`fill_body`]
//! fills a buffer from an offset, and [`route`] maps a path to a [`Route`]
//! (`/` → default size, `/bytes/N` → N bytes up to a cap).

use std::fmt;

/// Longest request head (request line + headers + final CRLF) accepted.
pub const MAX_HEAD_LEN: usize = 8 * 1024;
/// Longest request target accepted.
pub const MAX_TARGET_LEN: usize = 4 * 1024;
/// Most header lines accepted in one request.
pub const MAX_HEADERS: usize = 100;

/// Request method. Only the safe methods the servers implement exist here;
/// the parser turns every other token into [`HttpError::MethodNotAllowed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

/// A single byte range from `Range: bytes=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=start-` (`end` is `None`) or `bytes=start-end` (inclusive end).
    From { start: u64, end: Option<u64> },
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

/// A parsed request head, borrowing the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method,
    /// Target path without the query, always starting with `/`. Raw: not
    /// percent-decoded.
    pub path: &'a str,
    /// The part after `?`, if any.
    pub query: Option<&'a str>,
    /// 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version_minor: u8,
    /// Whether the connection stays open after the response (HTTP/1.1
    /// default unless `Connection: close`; HTTP/1.0 only with
    /// `Connection: keep-alive`).
    pub keep_alive: bool,
    /// The request's single byte range, if it sent a valid one.
    pub range: Option<ByteRange>,
}

/// Outcome of [`parse_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A complete request and the number of bytes its head used.
    Complete(Request<'a>, usize),
    /// Valid so far but incomplete: read more.
    Partial,
}

/// Why a request was rejected. Every variant maps to one response status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// Malformed syntax (400); the string names the rule broken.
    BadRequest(&'static str),
    /// A method other than GET/HEAD (405).
    MethodNotAllowed,
    /// The request carries a body (413).
    PayloadTooLarge,
    /// The request target exceeds [`MAX_TARGET_LEN`] (414).
    UriTooLong,
    /// The head exceeds [`MAX_HEAD_LEN`] or [`MAX_HEADERS`] (431).
    HeadersTooLarge,
    /// An HTTP version other than 1.0/1.1 (505).
    VersionNotSupported,
}

impl HttpError {
    /// The response status for this error.
    pub fn status(&self) -> Status {
        match self {
            HttpError::BadRequest(_) => Status::BadRequest,
            HttpError::MethodNotAllowed => Status::MethodNotAllowed,
            HttpError::PayloadTooLarge => Status::PayloadTooLarge,
            HttpError::UriTooLong => Status::UriTooLong,
            HttpError::HeadersTooLarge => Status::HeadersTooLarge,
            HttpError::VersionNotSupported => Status::VersionNotSupported,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::BadRequest(why) => write!(f, "malformed request: {why}"),
            HttpError::MethodNotAllowed => f.write_str("method not allowed (only GET and HEAD)"),
            HttpError::PayloadTooLarge => f.write_str("request bodies are not accepted"),
            HttpError::UriTooLong => write!(f, "request target longer than {MAX_TARGET_LEN} bytes"),
            HttpError::HeadersTooLarge => write!(
                f,
                "request head larger than {MAX_HEAD_LEN} bytes or {MAX_HEADERS} headers"
            ),
            HttpError::VersionNotSupported => {
                f.write_str("only HTTP/1.0 and HTTP/1.1 are supported")
            }
        }
    }
}

impl std::error::Error for HttpError {}

/// Response statuses used by the workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    PartialContent,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    UriTooLong,
    RangeNotSatisfiable,
    HeadersTooLarge,
    InternalServerError,
    ServiceUnavailable,
    VersionNotSupported,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::PartialContent => 206,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::PayloadTooLarge => 413,
            Status::UriTooLong => 414,
            Status::RangeNotSatisfiable => 416,
            Status::HeadersTooLarge => 431,
            Status::InternalServerError => 500,
            Status::ServiceUnavailable => 503,
            Status::VersionNotSupported => 505,
        }
    }

    /// The status line without CRLF, e.g. `HTTP/1.1 200 OK`.
    pub fn status_line(self) -> &'static str {
        match self {
            Status::Ok => "HTTP/1.1 200 OK",
            Status::PartialContent => "HTTP/1.1 206 Partial Content",
            Status::BadRequest => "HTTP/1.1 400 Bad Request",
            Status::NotFound => "HTTP/1.1 404 Not Found",
            Status::MethodNotAllowed => "HTTP/1.1 405 Method Not Allowed",
            Status::PayloadTooLarge => "HTTP/1.1 413 Content Too Large",
            Status::UriTooLong => "HTTP/1.1 414 URI Too Long",
            Status::RangeNotSatisfiable => "HTTP/1.1 416 Range Not Satisfiable",
            Status::HeadersTooLarge => "HTTP/1.1 431 Request Header Fields Too Large",
            Status::InternalServerError => "HTTP/1.1 500 Internal Server Error",
            Status::ServiceUnavailable => "HTTP/1.1 503 Service Unavailable",
            Status::VersionNotSupported => "HTTP/1.1 505 HTTP Version Not Supported",
        }
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Field-value byte: VCHAR, SP, HTAB or obs-text.
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// Bytes that can never appear in a valid head outside line endings; used to
/// reject garbage before a full line arrives.
fn is_never_valid(b: u8) -> bool {
    (b < 0x20 && b != b'\t' && b != b'\r' && b != b'\n') || b == 0x7f
}

/// Parses one request head at the start of `buf`. See the module docs.
pub fn parse_request(buf: &[u8]) -> Result<Parsed<'_>, HttpError> {
    // Request line.
    let Some(line_end) = find_crlf(buf)? else {
        return partial_check(buf, true);
    };
    let line = &buf[..line_end];
    let (method, target, version_minor) = parse_request_line(line)?;
    let (path, query) = split_target(target)?;

    let mut keep_alive = version_minor == 1;
    let mut saw_close = false;
    let mut saw_keep_alive = false;
    let mut host_count = 0usize;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut range = None;
    let mut range_count = 0usize;

    let mut pos = line_end + 2;
    let mut headers = 0usize;
    loop {
        if pos > MAX_HEAD_LEN {
            return Err(HttpError::HeadersTooLarge);
        }
        let rest = &buf[pos..];
        let Some(end) = find_crlf(rest)? else {
            return partial_check(rest, false).and_then(|p| {
                if buf.len() > MAX_HEAD_LEN {
                    Err(HttpError::HeadersTooLarge)
                } else {
                    Ok(p)
                }
            });
        };
        if pos + end + 2 > MAX_HEAD_LEN {
            return Err(HttpError::HeadersTooLarge);
        }
        if end == 0 {
            pos += 2;
            break;
        }
        headers += 1;
        if headers > MAX_HEADERS {
            return Err(HttpError::HeadersTooLarge);
        }
        let (name, value) = parse_header_line(&rest[..end])?;
        if name.eq_ignore_ascii_case(b"host") {
            host_count += 1;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim_ows(token);
                if token.eq_ignore_ascii_case(b"close") {
                    saw_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    saw_keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(value)?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(HttpError::BadRequest("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
        } else if name.eq_ignore_ascii_case(b"range") {
            range_count += 1;
            range = parse_range(value);
        }
        pos += end + 2;
    }

    if version_minor == 1 && host_count != 1 {
        return Err(HttpError::BadRequest(
            "HTTP/1.1 requires exactly one Host header",
        ));
    }
    if host_count > 1 {
        return Err(HttpError::BadRequest("more than one Host header"));
    }
    if transfer_encoding && content_length.is_some() {
        return Err(HttpError::BadRequest(
            "both Transfer-Encoding and Content-Length",
        ));
    }
    if transfer_encoding || content_length.is_some_and(|n| n > 0) {
        return Err(HttpError::PayloadTooLarge);
    }
    if range_count > 1 {
        range = None;
    }
    if saw_close {
        keep_alive = false;
    } else if saw_keep_alive {
        keep_alive = true;
    }
    let req = Request {
        method,
        path,
        query,
        version_minor,
        keep_alive,
        range,
    };
    Ok(Parsed::Complete(req, pos))
}

/// Position of the first CRLF; a bare LF is an error (strict parsing stops
/// request-smuggling ambiguities).
fn find_crlf(buf: &[u8]) -> Result<Option<usize>, HttpError> {
    match buf.iter().position(|&b| b == b'\n') {
        None => Ok(None),
        Some(0) => Err(HttpError::BadRequest("bare LF")),
        Some(i) if buf[i - 1] == b'\r' => Ok(Some(i - 1)),
        Some(_) => Err(HttpError::BadRequest("bare LF")),
    }
}

/// Validates an incomplete trailing line so garbage is rejected early
/// instead of waiting for a full head, and enforces the limits.
fn partial_check(tail: &[u8], request_line: bool) -> Result<Parsed<'static>, HttpError> {
    let body = tail.strip_suffix(b"\r").unwrap_or(tail);
    if body.iter().any(|&b| b == b'\r' || is_never_valid(b)) {
        return Err(HttpError::BadRequest("control character in request head"));
    }
    if request_line {
        // The method comes first: reject non-token bytes before the first SP.
        let method_end = body.iter().position(|&b| b == b' ').unwrap_or(body.len());
        if !body[..method_end].iter().all(|&b| is_tchar(b)) {
            return Err(HttpError::BadRequest("invalid method token"));
        }
        if tail.len() > MAX_HEAD_LEN {
            return Err(HttpError::UriTooLong);
        }
    }
    Ok(Parsed::Partial)
}

fn parse_request_line(line: &[u8]) -> Result<(Method, &[u8], u8), HttpError> {
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts
        .next()
        .ok_or(HttpError::BadRequest("request line has no target"))?;
    let version = parts
        .next()
        .ok_or(HttpError::BadRequest("request line has no version"))?;
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(HttpError::BadRequest("invalid method token"));
    }
    if target.len() > MAX_TARGET_LEN {
        return Err(HttpError::UriTooLong);
    }
    let version_minor = match version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(HttpError::VersionNotSupported);
        }
        _ => return Err(HttpError::BadRequest("invalid HTTP version")),
    };
    if target.first() != Some(&b'/') {
        return Err(HttpError::BadRequest(
            "request target is not an absolute path",
        ));
    }
    if !target.iter().all(|&b| (0x21..0x7f).contains(&b)) {
        return Err(HttpError::BadRequest("invalid byte in request target"));
    }
    let method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        _ => return Err(HttpError::MethodNotAllowed),
    };
    Ok((method, target, version_minor))
}

fn split_target(target: &[u8]) -> Result<(&str, Option<&str>), HttpError> {
    // Validated as visible ASCII by parse_request_line, so this cannot fail;
    // map the error anyway rather than unwrap.
    let target =
        std::str::from_utf8(target).map_err(|_| HttpError::BadRequest("non-ASCII target"))?;
    Ok(match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    })
}

fn parse_header_line(line: &[u8]) -> Result<(&[u8], &[u8]), HttpError> {
    if line[0] == b' ' || line[0] == b'\t' {
        return Err(HttpError::BadRequest("obsolete line folding"));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(HttpError::BadRequest("header line without colon"))?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(HttpError::BadRequest("invalid header name"));
    }
    let value = &line[colon + 1..];
    if !value.iter().all(|&b| is_value_byte(b)) {
        return Err(HttpError::BadRequest("invalid byte in header value"));
    }
    Ok((name, trim_ows(value)))
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(d - b'0');
    }
    Some(n)
}

fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    parse_u64(value).ok_or(HttpError::BadRequest("invalid Content-Length"))
}

/// Parses `bytes=a-b`, `bytes=a-` or `bytes=-n`; anything else (other
/// units, several ranges, bad numbers) is ignored as RFC 9110 allows.
fn parse_range(value: &[u8]) -> Option<ByteRange> {
    let spec = value.strip_prefix(b"bytes=")?;
    let dash = spec.iter().position(|&b| b == b'-')?;
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    if first.is_empty() {
        return Some(ByteRange::Suffix(parse_u64(last)?));
    }
    let start = parse_u64(first)?;
    if last.is_empty() {
        return Some(ByteRange::From { start, end: None });
    }
    let end = parse_u64(last)?;
    (end >= start).then_some(ByteRange::From {
        start,
        end: Some(end),
    })
}

/// Appends the decimal form of `n`.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends a response head: status line, `Content-Length`, `Connection`.
pub fn write_head(out: &mut Vec<u8>, status: Status, content_length: u64, keep_alive: bool) {
    write_head_with(out, status, content_length, keep_alive, &[]);
}

/// Like [`write_head`] with extra header lines, each given as
/// `(name, value)` without CRLF.
pub fn write_head_with(
    out: &mut Vec<u8>,
    status: Status,
    content_length: u64,
    keep_alive: bool,
    extra: &[(&str, &[u8])],
) {
    out.extend_from_slice(status.status_line().as_bytes());
    out.extend_from_slice(b"\r\nServer: iolens\r\nContent-Length: ");
    push_u64(out, content_length);
    out.extend_from_slice(if keep_alive {
        b"\r\nConnection: keep-alive\r\n".as_slice()
    } else {
        b"\r\nConnection: close\r\n".as_slice()
    });
    for (name, value) in extra {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a complete error response (head and a one-line text body) that
/// closes the connection.
pub fn write_error(out: &mut Vec<u8>, err: &HttpError) {
    let status = err.status();
    // The body is the status line's reason phrase, so no formatting is needed.
    let line = status.status_line();
    let reason = &line["HTTP/1.1 ".len()..];
    let extra: &[(&str, &[u8])] = if status == Status::MethodNotAllowed {
        &[("Allow", b"GET, HEAD"), ("Content-Type", b"text/plain")]
    } else {
        &[("Content-Type", b"text/plain")]
    };
    write_head_with(out, status, reason.len() as u64 + 1, false, extra);
    out.extend_from_slice(reason.as_bytes());
    out.push(b'\n');
}

/// The repeating pattern every generated body is made of.
pub const BODY_PATTERN: &[u8; 64] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-\n";

/// Byte `i` of every generated body.
pub fn body_byte(i: u64) -> u8 {
    BODY_PATTERN[(i % BODY_PATTERN.len() as u64) as usize]
}

/// Fills `out` with body bytes starting at body offset `offset`, copying
/// whole runs of the pattern rather than computing each byte.
pub fn fill_body(offset: u64, out: &mut [u8]) {
    let start = (offset % BODY_PATTERN.len() as u64) as usize;
    let mut src = &BODY_PATTERN[start..];
    let mut out = out;
    while !out.is_empty() {
        let n = src.len().min(out.len());
        let (head, rest) = out.split_at_mut(n);
        head.copy_from_slice(&src[..n]);
        out = rest;
        src = BODY_PATTERN;
    }
}

/// What a path asks the byte-generating servers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A generated body of this many bytes.
    Bytes(u64),
    /// Unknown path (404).
    NotFound,
}

/// Maps `/` to `default_size` bytes and `/bytes/N` to N bytes when
/// `N <= max_size`; everything else (including N over the cap or with
/// leading `+`/non-digits) is [`Route::NotFound`].
pub fn route(path: &str, default_size: u64, max_size: u64) -> Route {
    if path == "/" {
        return Route::Bytes(default_size);
    }
    match path
        .strip_prefix("/bytes/")
        .and_then(|n| parse_u64(n.as_bytes()))
    {
        Some(n) if n <= max_size => Route::Bytes(n),
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (Request<'_>, usize) {
        match parse_request(buf) {
            Ok(Parsed::Complete(r, n)) => (r, n),
            other => panic!(
                "expected complete, got {other:?} for {:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    #[test]
    fn simple_get() {
        let buf = b"GET /bytes/10?x=1 HTTP/1.1\r\nHost: a\r\n\r\nGET";
        let (r, n) = complete(buf);
        assert_eq!(n, buf.len() - 3);
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path, "/bytes/10");
        assert_eq!(r.query, Some("x=1"));
        assert_eq!(r.version_minor, 1);
        assert!(r.keep_alive);
        assert_eq!(r.range, None);
        assert_eq!(parse_request(&buf[n..]), Ok(Parsed::Partial));
    }

    #[test]
    fn every_prefix_of_a_valid_request_is_partial() {
        let buf =
            b"HEAD / HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n";
        for i in 0..buf.len() {
            assert_eq!(parse_request(&buf[..i]), Ok(Parsed::Partial), "prefix {i}");
        }
        let (r, n) = complete(buf);
        assert_eq!((r.method, n), (Method::Head, buf.len()));
    }

    #[test]
    fn keep_alive_rules() {
        let (r, _) = complete(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n");
        assert!(!r.keep_alive);
        let (r, _) = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!r.keep_alive);
        assert_eq!(r.version_minor, 0);
        let (r, _) = complete(b"GET / HTTP/1.0\r\nConnection: foo, Keep-Alive\r\n\r\n");
        assert!(r.keep_alive);
        let (r, _) =
            complete(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n");
        assert!(!r.keep_alive);
    }

    #[test]
    fn ranges() {
        let get = |v: &str| {
            let req = format!("GET / HTTP/1.1\r\nHost: a\r\nRange: {v}\r\n\r\n");
            match parse_request(req.as_bytes()) {
                Ok(Parsed::Complete(r, _)) => r.range,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            get("bytes=0-99"),
            Some(ByteRange::From {
                start: 0,
                end: Some(99)
            })
        );
        assert_eq!(
            get("bytes=5-"),
            Some(ByteRange::From {
                start: 5,
                end: None
            })
        );
        assert_eq!(get("bytes=-7"), Some(ByteRange::Suffix(7)));
        assert_eq!(get("bytes=9-3"), None);
        assert_eq!(get("bytes=0-1,3-4"), None);
        assert_eq!(get("items=0-1"), None);
        assert_eq!(get("bytes=-"), None);
    }

    #[test]
    fn errors_map_to_statuses() {
        let cases: &[(&[u8], u16)] = &[
            (b"\x00\x01\x02", 400),
            (b"GET / HTTP/1.1\nHost: a\n\n", 400),
            (b"GET /\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET http://x/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nBad Name: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", 400),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
                400,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (b"G(T / HTTP/1.1\r\n", 400),
            (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
            (b"GET / FTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\n\r\n", 405),
            (
                b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
                405,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
                413,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                413,
            ),
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ];
        for (input, code) in cases {
            match parse_request(input) {
                Err(e) => assert_eq!(
                    e.status().code(),
                    *code,
                    "{:?}: {e}",
                    String::from_utf8_lossy(input)
                ),
                other => panic!(
                    "{:?}: expected {code}, got {other:?}",
                    String::from_utf8_lossy(input)
                ),
            }
        }
        // Content-Length: 0 is not a body.
        complete(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    }

    #[test]
    fn limits() {
        let long_target = format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
            "a".repeat(MAX_TARGET_LEN)
        );
        assert_eq!(
            parse_request(long_target.as_bytes()),
            Err(HttpError::UriTooLong)
        );
        let endless_line = vec![b'a'; MAX_HEAD_LEN + 1];
        assert_eq!(parse_request(&endless_line), Err(HttpError::UriTooLong));

        let mut big = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        while big.len() <= MAX_HEAD_LEN {
            big.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        // Even without the final CRLF the limit is known to be exceeded.
        assert_eq!(parse_request(&big), Err(HttpError::HeadersTooLarge));
        let mut unterminated = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ".to_vec();
        unterminated.resize(MAX_HEAD_LEN + 1, b'a');
        assert_eq!(
            parse_request(&unterminated),
            Err(HttpError::HeadersTooLarge)
        );

        let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for _ in 0..MAX_HEADERS {
            many.extend_from_slice(b"A: b\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_request(&many), Err(HttpError::HeadersTooLarge));

        // Exactly at the limit is accepted.
        let mut exact = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        exact.resize(MAX_HEAD_LEN - 4, b'a');
        exact.extend_from_slice(b"\r\n\r\n");
        assert_eq!(exact.len(), MAX_HEAD_LEN);
        let (_, n) = complete(&exact);
        assert_eq!(n, MAX_HEAD_LEN);
    }

    #[test]
    fn response_heads() {
        let mut out = Vec::new();
        write_head(&mut out, Status::Ok, 1234567, true);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nServer: iolens\r\nContent-Length: 1234567\r\nConnection: keep-alive\r\n\r\n"
        );
        out.clear();
        write_head(&mut out, Status::Ok, 0, false);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nServer: iolens\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        out.clear();
        write_error(&mut out, &HttpError::MethodNotAllowed);
        assert_eq!(
            out,
            b"HTTP/1.1 405 Method Not Allowed\r\nServer: iolens\r\nContent-Length: 23\r\nConnection: close\r\nAllow: GET, HEAD\r\nContent-Type: text/plain\r\n\r\n405 Method Not Allowed\n"
        );
    }

    #[test]
    fn routes_and_bodies() {
        assert_eq!(route("/", 128, 1 << 20), Route::Bytes(128));
        assert_eq!(route("/bytes/0", 128, 1 << 20), Route::Bytes(0));
        assert_eq!(route("/bytes/1048576", 128, 1 << 20), Route::Bytes(1 << 20));
        assert_eq!(route("/bytes/1048577", 128, 1 << 20), Route::NotFound);
        assert_eq!(route("/bytes/", 128, 1 << 20), Route::NotFound);
        assert_eq!(route("/bytes/+1", 128, 1 << 20), Route::NotFound);
        assert_eq!(route("/nope", 128, 1 << 20), Route::NotFound);
        let mut b = [0u8; 66];
        fill_body(0, &mut b);
        assert_eq!(&b[..64], BODY_PATTERN);
        assert_eq!(&b[64..], b"01");
        fill_body(63, &mut b[..2]);
        assert_eq!(&b[..2], b"\n0");
        // Any offset and length agree with body_byte.
        let mut long = vec![0u8; 1000];
        for off in [0u64, 1, 63, 64, 65, 1 << 40] {
            fill_body(off, &mut long);
            let want: Vec<u8> = (0..1000).map(|i| body_byte(off + i)).collect();
            assert_eq!(long, want, "offset {off}");
        }
    }
}
