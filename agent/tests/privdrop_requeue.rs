//! `privdrop::drop_after_attach` must leave no copy of its real-time
//! signal pending. A thread slow to handle the first copy is sent it again,
//! and real-time signals queue; a copy still pending when the default
//! action was restored killed the agent in CI (a TCG guest, "status 63":
//! SIGRTMAX - 1).
//!
//! Made deterministic here: one thread blocks the signal, so every copy
//! the drop sends it stays pending, and drops its own capabilities after
//! 50 ms, so the drop sees it done. After the drop nothing may be pending;
//! then the thread unblocks the signal and the process must live on.
//!
//! Its own test binary: the drop is process-wide. Needs root (skips with
//! the reason otherwise; fails under CI=true).

use std::{sync::mpsc, time::Duration};

use iolens::privdrop::drop_after_attach;

mod privdrop_common;
use privdrop_common::{drop_signal, mask_of, root_or_skip};

fn pending(signal: libc::c_int) -> bool {
    // SAFETY: as in mask_of.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigpending fills the set (this thread's and the process's).
    assert_eq!(unsafe { libc::sigpending(&mut set) }, 0);
    // SAFETY: a set sigpending filled.
    unsafe { libc::sigismember(&set, signal) == 1 }
}

/// What the drop's handler does, by the thread itself: empty bounding set
/// (with CAP_SETPCAP), ambient, effective and permitted sets; no_new_privs.
fn drop_own_capabilities(clear_bounding: bool) {
    if clear_bounding {
        for cap in 0..64 {
            // SAFETY: prctl with integer arguments; EINVAL past the last.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        }
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    let header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [0u32; 6];
    // SAFETY: prctl with integer arguments; capset with a version-3 header
    // and the two (zeroed) data structs it reads.
    unsafe {
        assert_eq!(
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0
            ),
            0
        );
        assert_eq!(
            libc::syscall(libc::SYS_capset, &header, data.as_ptr()),
            0,
            "capset"
        );
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
    }
}

#[test]
fn no_copy_of_the_drop_signal_outlives_the_drop() {
    if !root_or_skip("to have capabilities to drop") {
        return;
    }
    // Full root: CAP_SETPCAP (bit 8), so the drop empties the bounding set.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    let clear_bounding = eff & (1 << 8) != 0;

    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let slow = std::thread::spawn(move || {
        let mask = mask_of(drop_signal());
        // SAFETY: blocks one signal in this thread only.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut()) };
        assert_eq!(rc, 0);
        ready_tx.send(()).unwrap();
        // The drop signals this thread every 5 ms until it shows the drop.
        std::thread::sleep(Duration::from_millis(50));
        drop_own_capabilities(clear_bounding);
        go_rx.recv().unwrap();
        let left = pending(drop_signal());
        // SAFETY: as above; a pending copy with the default action ends the
        // whole test process here.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &mask, std::ptr::null_mut()) };
        assert_eq!(rc, 0);
        left
    });
    ready_rx.recv().unwrap();
    let kept = drop_after_attach().expect("drop_after_attach");
    assert_eq!(
        kept.caps, 0,
        "this test assumes a kernel where nothing is kept: {kept:?}"
    );
    go_tx.send(()).unwrap();
    let left = slow.join().unwrap();
    assert!(
        !left,
        "a copy of signal {} was still pending after the drop",
        drop_signal()
    );
    // Still alive after the unblock; the signal's old action is back.
    std::thread::sleep(Duration::from_millis(20));
}
