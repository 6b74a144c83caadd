//! Helpers for the capability-drop tests, each its own test binary (the
//! drop is process-wide).

#![allow(dead_code)]

/// The signal `privdrop::drop_after_attach` sends each thread.
pub fn drop_signal() -> libc::c_int {
    libc::SIGRTMAX() - 1
}

/// The set holding `signal` alone.
pub fn mask_of(signal: libc::c_int) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid sigset_t and a valid signal number.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
    }
    set
}

/// Whether the test can run: root has capabilities to drop. Otherwise it
/// says why it skips, and fails under CI=true, where it must run.
pub fn root_or_skip(needs: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none_or(|v| v != "true"),
        "CI=true but not root: this test must run in CI"
    );
    eprintln!("skipped: needs root {needs}");
    false
}
