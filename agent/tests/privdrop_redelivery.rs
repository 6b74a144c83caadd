//! `privdrop::drop_after_attach` must survive its signal's handler running
//! twice in one thread. A thread slow to handle the first copy is sent it
//! again, and real-time signals queue: when the thread gets to run, every
//! copy is delivered, one after the other. The second run found the
//! bounding set no longer droppable (CAP_SETPCAP already gone: EPERM), and
//! the whole drop failed ("a thread could not drop its capabilities:
//! Operation not permitted"; CI, 6.1 under single-threaded TCG).
//!
//! Made deterministic here: one thread blocks the signal for 60 ms, so the
//! drop sends it a copy every 5 ms that stays queued, then unblocks it, so
//! all of them run its handler back to back. The drop must succeed and
//! leave that thread with nothing.
//!
//! Its own test binary: the drop is process-wide. Needs root (skips with
//! the reason otherwise; fails under CI=true).

use std::time::Duration;

use iolens::privdrop::drop_after_attach;

mod privdrop_common;
use privdrop_common::{drop_signal, mask_of, root_or_skip};

#[test]
fn the_drop_handler_may_run_again_in_a_thread_that_already_dropped() {
    if !root_or_skip("to have capabilities to drop") {
        return;
    }
    let signal = drop_signal();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let slow = std::thread::spawn(move || {
        let mask = mask_of(signal);
        // SAFETY: a valid sigset_t; blocks the signal in this thread only.
        unsafe {
            assert_eq!(
                libc::pthread_sigmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut()),
                0
            );
        }
        ready_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        // SAFETY: a set of pending signals, filled by sigpending.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let queued = unsafe {
            assert_eq!(libc::sigpending(&mut set), 0);
            libc::sigismember(&set, signal) == 1
        };
        // SAFETY: as above; every queued copy runs the handler now.
        unsafe {
            assert_eq!(
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &mask, std::ptr::null_mut()),
                0
            );
        }
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        (queued, status)
    });
    ready_rx.recv().unwrap();
    let kept = drop_after_attach().expect("drop_after_attach");
    let (queued, status) = slow.join().unwrap();
    assert!(queued, "the blocked thread was never sent the drop signal");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap()
    };
    assert_eq!(field("CapEff:"), kept.caps, "{status}");
    assert_eq!(field("CapPrm:"), kept.caps, "{status}");
    assert!(
        kept.threads >= 2,
        "the drop counted {} threads",
        kept.threads
    );
}
