//! `privdrop::drop_after_attach` on a real probe, in its own test binary
//! (the drop is process-wide): a program that counts getppid() calls into
//! an array map is loaded and attached to a tracepoint with full root, idle
//! threads are started, then every capability is dropped. Afterwards every
//! thread shows none, the program still counts, the held map fd still reads
//! and writes, and creating a map or opening a tracepoint event is refused.
//!
//! Needs root (skips with the reason otherwise; fails under CI=true).

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
    sync::mpsc,
};

use iolens::privdrop::drop_after_attach;

mod privdrop_common;
use privdrop_common::root_or_skip;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
/// _IOW('$', 8, u32) and _IO('$', 0).
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;

/// The bpf(2) attribute union, as big as any command here uses.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Default for Attr {
    fn default() -> Attr {
        Attr([0; 128])
    }
}

impl Attr {
    fn u32(mut self, off: usize, v: u32) -> Attr {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(mut self, off: usize, v: u64) -> Attr {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

fn bpf(cmd: libc::c_long, attr: &Attr) -> std::io::Result<i32> {
    // SAFETY: bpf(2) with a zero-padded attribute of the size passed; the
    // pointers inside it point to live buffers of this frame's caller.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const Attr, 128u32) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc as i32)
    }
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: a new fd the kernel just returned, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn create_map() -> std::io::Result<OwnedFd> {
    let attr = Attr::default()
        .u32(0, BPF_MAP_TYPE_ARRAY)
        .u32(4, 4) // key_size
        .u32(8, 8) // value_size
        .u32(12, 1); // max_entries
    bpf(BPF_MAP_CREATE, &attr).map(owned)
}

fn lookup(map: &OwnedFd) -> u64 {
    let key = 0u32;
    let mut value = 0u64;
    let attr = Attr::default()
        .u32(0, map.as_raw_fd() as u32)
        .u64(8, &key as *const u32 as u64)
        .u64(16, &mut value as *mut u64 as u64);
    bpf(BPF_MAP_LOOKUP_ELEM, &attr).expect("BPF_MAP_LOOKUP_ELEM");
    value
}

fn update(map: &OwnedFd, v: u64) -> std::io::Result<()> {
    let key = 0u32;
    let attr = Attr::default()
        .u32(0, map.as_raw_fd() as u32)
        .u64(8, &key as *const u32 as u64)
        .u64(16, &v as *const u64 as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &attr).map(|_| ())
}

/// One BPF instruction: opcode, dst | src << 4, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | u64::from(dst | (src << 4)) << 8
        | u64::from(off as u16) << 16
        | u64::from(imm as u32) << 32
}

/// `key = 0; if (v = map_lookup(&key)) __sync_fetch_and_add(v, 1); return 0;`
fn load_counter(map: &OwnedFd) -> std::io::Result<OwnedFd> {
    let fd = map.as_raw_fd();
    let prog = [
        insn(0x62, 10, 0, -4, 0), // *(u32 *)(r10 - 4) = 0
        insn(0xbf, 2, 10, 0, 0),  // r2 = r10
        insn(0x07, 2, 0, 0, -4),  // r2 += -4
        insn(0x18, 1, 1, 0, fd),  // r1 = map (BPF_PSEUDO_MAP_FD)
        0,                        //   (second half of the 64-bit load)
        insn(0x85, 0, 0, 0, 1),   // call bpf_map_lookup_elem
        insn(0x15, 0, 0, 2, 0),   // if r0 == 0 goto +2
        insn(0xb7, 1, 0, 0, 1),   // r1 = 1
        insn(0xdb, 0, 1, 0, 0),   // lock *(u64 *)(r0 + 0) += r1
        insn(0xb7, 0, 0, 0, 0),   // r0 = 0
        insn(0x95, 0, 0, 0, 0),   // exit
    ];
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let attr = Attr::default()
        .u32(0, BPF_PROG_TYPE_TRACEPOINT)
        .u32(4, prog.len() as u32)
        .u64(8, prog.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64)
        .u32(24, 1) // log_level
        .u32(28, log.len() as u32)
        .u64(32, log.as_mut_ptr() as u64);
    bpf(BPF_PROG_LOAD, &attr).map(owned).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        std::io::Error::new(
            e.kind(),
            format!("{e}: {}", String::from_utf8_lossy(&log[..end])),
        )
    })
}

fn tracefs() -> &'static Path {
    let t = Path::new("/sys/kernel/tracing");
    if !t.join("events").is_dir() {
        // As the agent does (root: this test only runs as root).
        let status = std::process::Command::new("mount")
            .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
            .status()
            .expect("mount");
        assert!(status.success(), "mounting tracefs");
    }
    t
}

/// perf_event_open(2) on a tracepoint, on one CPU, all tasks.
fn open_tracepoint(id: u64, cpu: i32) -> std::io::Result<OwnedFd> {
    // struct perf_event_attr, PERF_ATTR_SIZE_VER0 (64 bytes): type, size,
    // config, sample_period; the rest zero.
    let mut attr = [0u8; 64];
    attr[0..4].copy_from_slice(&PERF_TYPE_TRACEPOINT.to_ne_bytes());
    attr[4..8].copy_from_slice(&64u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&id.to_ne_bytes());
    attr[16..24].copy_from_slice(&1u64.to_ne_bytes());
    // SAFETY: a valid 64-byte perf_event_attr of the size it declares.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1 as libc::pid_t,
            cpu,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(owned(fd as i32))
    }
}

fn getppid_times(n: usize) {
    for _ in 0..n {
        // SAFETY: getppid cannot fail.
        unsafe { libc::getppid() };
    }
}

fn status_field(path: &str, key: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {key} in {path}"))
}

#[test]
fn drops_every_capability_and_the_probe_keeps_working() {
    if !root_or_skip("to load and attach an eBPF program") {
        return;
    }

    // Attach with full privileges.
    let map = create_map().expect("BPF_MAP_CREATE");
    let prog = load_counter(&map).expect("BPF_PROG_LOAD");
    let id: u64 = std::fs::read_to_string(tracefs().join("events/syscalls/sys_enter_getppid/id"))
        .expect("the sys_enter_getppid tracepoint")
        .trim()
        .parse()
        .unwrap();
    // One event, as libbpf opens it: a tracepoint's programs run on every
    // CPU once any event enables it (a second attach says EEXIST).
    let events: Vec<OwnedFd> = [0]
        .into_iter()
        .map(|cpu| {
            let ev = open_tracepoint(id, cpu).expect("perf_event_open");
            // SAFETY: an ioctl on a perf event fd this test owns, with a
            // program fd it owns.
            let set =
                unsafe { libc::ioctl(ev.as_raw_fd(), PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd()) };
            let why = std::io::Error::last_os_error();
            assert_eq!(set, 0, "PERF_EVENT_IOC_SET_BPF: {why}");
            // SAFETY: as above.
            let on = unsafe { libc::ioctl(ev.as_raw_fd(), PERF_EVENT_IOC_ENABLE, 0) };
            let why = std::io::Error::last_os_error();
            assert_eq!(on, 0, "PERF_EVENT_IOC_ENABLE: {why}");
            ev
        })
        .collect();
    let start = lookup(&map);
    getppid_times(1000);
    let before = lookup(&map) - start;
    assert!(
        before >= 1000,
        "the probe counted {before} of 1000 calls before the drop"
    );

    // Threads that exist before the drop, blocked as a runtime's would be.
    let (tx, rx) = mpsc::channel::<()>();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let idle: Vec<_> = (0..3)
        .map(|_| {
            let rx = std::sync::Arc::clone(&rx);
            std::thread::spawn(move || {
                let _ = rx.lock().unwrap().recv();
            })
        })
        .collect();

    // Full root has CAP_SETPCAP (bit 8) and empties the bounding set too;
    // started with CAP_BPF and CAP_PERFMON only (the systemd unit) it
    // cannot, and the bounding set stays those two.
    let eff = u64::from_str_radix(&status_field("/proc/self/status", "CapEff:"), 16).unwrap();
    let setpcap = eff & (1 << 8) != 0;
    let kept = drop_after_attach().expect("drop_after_attach");
    println!("drop_after_attach: {kept:?}");
    // CAP_BPF stays only on kernels that refuse bpf(2) on held fds without
    // it (before 5.19, with kernel.unprivileged_bpf_disabled set).
    let unpriv_bpf_off = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
        .is_ok_and(|v| v.trim() != "0");
    assert!(
        kept.caps == 0 || (kept.caps == 1 << 39 && unpriv_bpf_off),
        "{kept:?}"
    );
    let kept_hex = format!("{:016x}", kept.caps);
    assert_eq!(kept.bounding_cleared, setpcap, "{kept:?}");
    assert!(kept.threads >= 4, "{kept:?}");

    // Every thread, and one started afterwards.
    let late = std::thread::spawn(|| status_field("/proc/thread-self/status", "CapPrm:"))
        .join()
        .unwrap();
    assert_eq!(late, kept_hex, "a thread started after the drop");
    for entry in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = format!("{}/status", entry.unwrap().path().display());
        // The joined `late` thread can still be listed for a moment after
        // its exit, and its status is gone then (seen under QEMU).
        let Ok(status) = std::fs::read_to_string(&path) else {
            continue;
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
                .unwrap_or_else(|| panic!("no {key} in {path}"))
        };
        for key in ["CapEff:", "CapPrm:"] {
            assert_eq!(field(key), kept_hex, "{path} {key}");
        }
        for key in ["CapAmb:", "CapInh:"] {
            assert_eq!(field(key), "0000000000000000", "{path} {key}");
        }
        if setpcap {
            assert_eq!(field("CapBnd:"), kept_hex, "{path}");
        }
        assert_eq!(field("NoNewPrivs:"), "1", "{path}");
    }

    // The attached program still counts, and the held fd reads and writes.
    let mid = lookup(&map);
    getppid_times(1000);
    let after = lookup(&map) - mid;
    assert!(
        after >= 1000,
        "the probe counted {after} of 1000 calls after the drop"
    );
    update(&map, 0).expect("BPF_MAP_UPDATE_ELEM through the held fd");

    // And nothing new can be made (a map can, where CAP_BPF had to stay).
    if kept.caps == 0 {
        let err = create_map().expect_err("BPF_MAP_CREATE after the drop");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    }
    assert!(
        open_tracepoint(id, 0).is_err(),
        "perf_event_open after the drop"
    );

    drop(tx);
    for t in idle {
        t.join().unwrap();
    }
    // Detach: closing needs no capability either.
    drop(events);
    drop(prog);
    drop(map);
}
