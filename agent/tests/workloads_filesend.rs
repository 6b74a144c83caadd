//! `iolens workload filesend` end to end: every mode serves 0 B … 256 MiB
//! byte-exact, direct-aio bypasses the page cache while sendfile fills it,
//! ranges, and path traversal is refused. Traffic stays on 127.0.0.1.

use std::{
    fs::File,
    io::{Read, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use sha2::{Digest, Sha256};

mod workloads_common;

use workloads_common::Server;

/// Whether `tool` is on PATH (the Debian package has the same name).
fn have(tool: &str) -> bool {
    workloads_common::have_tool(tool, tool)
}

/// Starts `iolens workload filesend --root ROOT` with `args`.
fn filesend(root: &Path, args: &[&str]) -> Server {
    let root = root.to_str().expect("UTF-8 fixture path");
    let mut all = vec!["--root", root];
    all.extend_from_slice(args);
    Server::workload("filesend", &all)
}

/// Writes `size` bytes of a cheap deterministic pattern (xorshift per 8
/// bytes, from `seed`) and returns its sha256.
fn make_file(path: &Path, size: u64, seed: u64) -> [u8; 32] {
    let mut f = File::create(path).expect("create");
    let mut h = Sha256::new();
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for c in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).expect("write");
        h.update(&buf[..n]);
        left -= n as u64;
    }
    f.sync_all().expect("fsync");
    h.finalize().into()
}

struct Fixture {
    root: PathBuf,
    files: Vec<(String, u64, [u8; 32])>,
}

const SIZES: [(&str, u64); 5] = [
    ("zero", 0),
    ("one", 1),
    ("page-1", 4095),
    ("one-mib", 1 << 20),
    ("big", 256 << 20),
];

/// One set of files shared by the tests of this binary, created once, on
/// the target directory's (disk-backed) filesystem.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("filesend-fixture");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        let files = SIZES
            .iter()
            .enumerate()
            .map(|(i, (name, size))| {
                let sha = make_file(&root.join(name), *size, 0x9e37_79b9_7f4a_7c15 ^ i as u64);
                ((*name).to_owned(), *size, sha)
            })
            .collect();
        std::fs::write(root.join("sub/inner"), b"inner").expect("write");
        std::os::unix::fs::symlink("/etc/hostname", root.join("escape")).expect("symlink");
        std::os::unix::fs::symlink("sub/inner", root.join("inside")).expect("symlink");
        Fixture { root, files }
    })
}

/// Fetches `url` with curl, hashing the body as it streams; returns (http
/// code, bytes, sha256).
fn curl_sha(url: &str, extra: &[&str]) -> (u16, u64, [u8; 32]) {
    let mut child = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-w", "%{stderr}%{http_code}"])
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut out = child.stdout.take().expect("stdout");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = out.read(&mut buf).expect("read curl output");
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    let res = child.wait_with_output().expect("curl wait");
    assert!(
        res.status.success(),
        "curl {url} failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let code = String::from_utf8_lossy(&res.stderr)
        .trim()
        .parse()
        .expect("http code");
    (code, n, h.finalize().into())
}

fn serves_all_sizes(mode: &str, extra: &[&str]) {
    if !have("curl") {
        return;
    }
    let fx = fixture();
    let mut args = vec!["--mode", mode];
    args.extend_from_slice(extra);
    let srv = filesend(&fx.root, &args);
    for (name, size, sha) in &fx.files {
        let (code, n, got) = curl_sha(&srv.url(&format!("/{name}")), &[]);
        assert_eq!(code, 200, "{mode} {name}");
        assert_eq!(n, *size, "{mode} {name}: byte count");
        assert_eq!(got, *sha, "{mode} {name}: sha256");
    }
    srv.stop_by(libc::SIGTERM);
}

#[test]
fn read_write_byte_exact() {
    serves_all_sizes("read-write", &[]);
}

#[test]
fn mmap_write_byte_exact() {
    serves_all_sizes("mmap-write", &[]);
}

#[test]
fn sendfile_byte_exact() {
    serves_all_sizes("sendfile", &[]);
}

#[test]
fn splice_byte_exact() {
    // A small pool and small pipes so the 256 MiB file takes many rounds.
    serves_all_sizes("splice", &["--pipes", "2", "--pipe-size", "65536"]);
}

#[test]
fn direct_aio_byte_exact() {
    // A chunk that is not a power of two exercises the tail arithmetic.
    serves_all_sizes("direct-aio", &["--chunk-size", "12288"]);
}

#[test]
fn auto_byte_exact() {
    // Threshold 1 MiB: the 1 MiB and 256 MiB files take direct-aio, the
    // others sendfile.
    serves_all_sizes("auto", &["--directio-threshold", "1048576"]);
}

#[test]
fn ranges_are_exact() {
    if !have("curl") {
        return;
    }
    let fx = fixture();
    let data = std::fs::read(fx.root.join("one-mib")).expect("read");
    for mode in [
        "sendfile",
        "direct-aio",
        "splice",
        "read-write",
        "mmap-write",
    ] {
        let srv = filesend(&fx.root, &["--mode", mode]);
        // Unaligned start and end inside the file, an open end, a suffix.
        for (spec, a, b) in [
            ("100-5000", 100, 5000),
            ("1048000-", 1_048_000, (1 << 20) - 1),
            ("-10", (1 << 20) - 10, (1 << 20) - 1),
        ] {
            let (code, n, got) = curl_sha(&srv.url("/one-mib"), &["-r", spec]);
            assert_eq!(code, 206, "{mode} {spec}");
            assert_eq!(n, (b - a + 1) as u64, "{mode} {spec}");
            let want: [u8; 32] = Sha256::digest(&data[a..=b]).into();
            assert_eq!(got, want, "{mode} {spec}");
        }
        let (code, n, _) = curl_sha(&srv.url("/one-mib"), &["-r", "2000000-"]);
        assert_eq!((code, n), (416, 0), "{mode}");
        srv.stop_by(libc::SIGTERM);
    }
}

#[test]
fn path_traversal_refused() {
    if !have("curl") {
        return;
    }
    let fx = fixture();
    let srv = filesend(&fx.root, &["--mode", "sendfile"]);
    let code = |p: &str| curl_sha(&srv.url(p), &["--path-as-is"]).0;
    assert_eq!(code("/../../../../etc/passwd"), 403);
    assert_eq!(code("/sub/../../etc/passwd"), 403);
    assert_eq!(code("/%2e%2e/%2e%2e/etc/passwd"), 403);
    assert_eq!(code("/escape"), 403, "symlink leaving the root");
    assert_eq!(code("/inside"), 200, "symlink staying inside the root");
    assert_eq!(code("/sub/inner"), 200);
    assert_eq!(code("/sub"), 404, "directories are not served");
    assert_eq!(code("/missing"), 404);
    srv.stop_by(libc::SIGTERM);
}

/// Resident pages of `path` per mincore(2) on a fresh mapping, and the
/// total page count.
fn resident(path: &Path) -> (usize, usize) {
    let f = File::open(path).expect("open");
    let len = f.metadata().expect("stat").len() as usize;
    // SAFETY: read-only shared mapping of an open file; checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap");
    let pages = len.div_ceil(4096);
    let mut vec = vec![0u8; pages];
    // SAFETY: vec has one byte per page of the mapping.
    let rc = unsafe { libc::mincore(p, len, vec.as_mut_ptr()) };
    // SAFETY: unmapping the mapping created above.
    unsafe { libc::munmap(p, len) };
    assert_eq!(rc, 0, "mincore");
    (vec.iter().filter(|&&b| b & 1 != 0).count(), pages)
}

fn on_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: statfs is plain old data; all-zero is valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type == libc::TMPFS_MAGIC
}

fn evict(path: &Path) {
    let f = File::open(path).expect("open");
    // SAFETY: advisory call on an open file.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "fadvise");
}

#[test]
fn direct_aio_bypasses_page_cache_sendfile_fills_it() {
    if !have("curl") {
        return;
    }
    // Its own file: the other tests run in parallel and would warm a shared one.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("filesend-pagecache");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    if on_tmpfs(&dir) {
        // tmpfs pages are the file itself: they can be neither evicted nor
        // bypassed, so the measurement would be meaningless there.
        eprintln!(
            "SKIPPED: {} is on tmpfs; page-cache behaviour needs a disk-backed filesystem",
            dir.display()
        );
        return;
    }
    let path = dir.join("cold");
    let sha = make_file(&path, 64 << 20, 42);
    evict(&path);
    let (before, pages) = resident(&path);
    // fsync'ed clean pages are all droppable; allow 1% for pages something
    // else (e.g. a backup or indexer) touches meanwhile.
    assert!(
        before * 100 <= pages,
        "eviction left {before}/{pages} pages resident"
    );

    // Serves the file once with `mode`, checks it arrived whole, and
    // returns how many of its pages are resident afterwards.
    let resident_after = |mode: &str| {
        let srv = filesend(&dir, &["--mode", mode]);
        let (code, n, got) = curl_sha(&srv.url("/cold"), &[]);
        srv.stop_by(libc::SIGTERM);
        assert_eq!((code, n, got), (200, 64 << 20, sha), "{mode}");
        resident(&path).0
    };

    let after_direct = resident_after("direct-aio");
    // O_DIRECT reads do not populate the cache: same 1% allowance as above.
    assert!(
        after_direct * 100 <= pages,
        "direct-aio left {after_direct}/{pages} pages resident (was {before})"
    );

    let after_sendfile = resident_after("sendfile");
    // sendfile reads through the cache, so it should hold the whole file;
    // 90% tolerates reclaim under memory pressure from parallel tests.
    assert!(
        after_sendfile * 10 >= pages * 9,
        "sendfile left only {after_sendfile}/{pages} pages resident"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads one response head from `s` (up to the blank line) and returns it
/// with any body bytes that came along.
fn read_head(s: &mut std::net::TcpStream, buf: &mut Vec<u8>) -> String {
    let mut tmp = [0u8; 65536];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return head;
        }
        let n = s.read(&mut tmp).expect("read");
        assert!(n > 0, "closed before a full head");
        buf.extend_from_slice(&tmp[..n]);
    }
}

#[test]
fn keep_alive_head_and_malformed() {
    let fx = fixture();
    let data = std::fs::read(fx.root.join("page-1")).expect("read");
    let srv = filesend(&fx.root, &["--mode", "splice"]);
    let mut s = std::net::TcpStream::connect(srv.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // Pipelined on one connection: GET, HEAD, 404, GET again.
    s.write_all(
        b"GET /page-1 HTTP/1.1\r\nHost: t\r\n\r\nHEAD /page-1 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /nope HTTP/1.1\r\nHost: t\r\n\r\nGET /one HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .expect("send");
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    let mut body = |s: &mut std::net::TcpStream, buf: &mut Vec<u8>, n: usize| {
        while buf.len() < n {
            let k = s.read(&mut tmp).expect("read");
            assert!(k > 0, "closed mid-body");
            buf.extend_from_slice(&tmp[..k]);
        }
        buf.drain(..n).collect::<Vec<u8>>()
    };
    let h = read_head(&mut s, &mut buf);
    assert!(
        h.starts_with("HTTP/1.1 200 ") && h.contains("Content-Length: 4095"),
        "{h}"
    );
    assert!(body(&mut s, &mut buf, 4095) == data, "GET body differs");
    let h = read_head(&mut s, &mut buf);
    assert!(
        h.starts_with("HTTP/1.1 200 ") && h.contains("Content-Length: 4095"),
        "HEAD: {h}"
    );
    let h = read_head(&mut s, &mut buf);
    assert!(
        h.starts_with("HTTP/1.1 404 ") && h.contains("Content-Length: 0"),
        "{h}"
    );
    let h = read_head(&mut s, &mut buf);
    assert!(
        h.starts_with("HTTP/1.1 200 ") && h.contains("Content-Length: 1"),
        "{h}"
    );
    let one = std::fs::read(fx.root.join("one")).expect("read");
    assert_eq!(body(&mut s, &mut buf, 1), one);
    assert!(buf.is_empty(), "HEAD must not carry a body: extra {buf:?}");

    // Malformed input: 400, then the connection closes.
    let mut bad = std::net::TcpStream::connect(srv.addr).expect("connect");
    bad.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    bad.write_all(b"GARBAGE\r\n\r\n").expect("send");
    let mut got = Vec::new();
    bad.read_to_end(&mut got).expect("server closes after 400");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    srv.stop_by(libc::SIGTERM);
}
