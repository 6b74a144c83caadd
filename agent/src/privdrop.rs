//! Least privilege once the probes are attached: drop every capability.
//!
//! What the agent does after attaching, and why none of it needs a
//! capability:
//! - reads, updates and deletes map entries through map fds it holds
//!   (BPF_MAP_LOOKUP_ELEM, _LOOKUP_BATCH, _GET_NEXT_KEY, _DELETE_ELEM): the
//!   kernel checks the fd's mode, not the caller's capabilities;
//! - asks for program information through program fds it holds
//!   (BPF_OBJ_GET_INFO_BY_FD: run time and count are reported without
//!   CAP_BPF; only the instruction dumps are withheld);
//! - keeps the BPF_ENABLE_STATS fd (--program-stats) it opened at load;
//!   opening it needs CAP_SYS_ADMIN, holding it nothing;
//! - detaches at exit by closing link and perf event fds.
//!
//! tracefs is mounted before the probes load, and nothing is loaded or
//! attached later, so CAP_PERFMON and (when started as full root)
//! everything else can go, and CAP_BPF too where the kernel allows it.
//! `agent/tests/privdrop.rs` proves it with a real program on a tracepoint:
//! it keeps counting into its map and the map reads through the held fd,
//! while creating a new map fails.
//!
//! The one exception is CAP_BPF on kernels before 5.19 (Ubuntu 22.04's
//! 5.15): there bpf(2) refuses every command, reads of held fds included, to
//! a caller without CAP_BPF while `kernel.unprivileged_bpf_disabled` is set
//! (the distributions' default); from 5.19 on only map creation and program
//! loads check it (Debian 12's 6.1 with the sysctl at 2: nothing kept, tried
//! under QEMU with `agent/tests/privdrop.rs`). The
//! drop tries it rather than reading the version: it makes a one-entry map,
//! lowers this thread's effective set for a lookup on it, and keeps CAP_BPF
//! if that lookup says EPERM.
//!
//! Capabilities are per thread in Linux and capset(2) changes only the
//! calling thread, while the agent's async runtime already runs worker
//! threads when the probes are attached. So the calling thread drops its
//! own, then every other thread of the process is sent a signal whose
//! handler does the same (what glibc does for setuid(2) and libcap's psx for
//! capabilities), and /proc/self/task/*/status is read back until every
//! thread shows the result. Each thread also gets no_new_privs, so no later
//! exec can gain privileges back; and the bounding set is emptied when the
//! process has CAP_SETPCAP (full root). Started by the shipped systemd unit
//! it has not, and its bounding set already is CAP_BPF and CAP_PERFMON, in
//! no thread's permitted set any more.

use std::{
    sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// CAP_SETPCAP, needed to shrink the bounding set.
const CAP_SETPCAP: u32 = 8;
/// CAP_SYS_ADMIN: what bpf(2) accepts in place of CAP_BPF.
const CAP_SYS_ADMIN: u32 = 21;
/// CAP_BPF: kept only where reads of held map fds need it.
pub const CAP_BPF: u32 = 39;

/// What [`drop_after_attach`] left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Capabilities still permitted (and effective) in every thread, as a
    /// bit mask (bit N = capability N): 0, or CAP_BPF alone on a kernel
    /// that refuses bpf(2) on held fds without it.
    pub caps: u64,
    /// Whether the bounding set was emptied too (needs CAP_SETPCAP).
    pub bounding_cleared: bool,
    /// Threads of the process when the drop finished.
    pub threads: usize,
}

/// Drops every capability in every thread of the process, sets
/// no_new_privs, and, with CAP_SETPCAP, empties the bounding set. Call it
/// once, after the probes are attached and before serving. Fails if some
/// thread could not be brought down within two seconds.
pub fn drop_after_attach() -> anyhow::Result<Kept> {
    let before =
        read_caps("/proc/thread-self/status").context("reading this thread's capabilities")?;
    let clear_bounding = before.effective & (1 << CAP_SETPCAP) != 0;
    let last_cap = last_cap();
    let keep = match held_fds_need_cap_bpf(before) {
        // bpf(2) takes CAP_SYS_ADMIN for CAP_BPF; keep whichever is there.
        Ok(true) if before.permitted & (1 << CAP_BPF) != 0 => 1 << CAP_BPF,
        Ok(true) => 1 << CAP_SYS_ADMIN,
        Ok(false) => 0,
        Err(e) => return Err(e.context("trying whether bpf(2) on held fds needs CAP_BPF")),
    };
    TARGET_KEEP.store(keep, Ordering::SeqCst);
    CLEAR_BOUNDING.store(clear_bounding, Ordering::SeqCst);
    LAST_CAP.store(last_cap, Ordering::SeqCst);
    HANDLER_FAILED.store(0, Ordering::SeqCst);

    // The other threads first (while this one still may do anything), by
    // signal; then this one.
    let signal = libc::SIGRTMAX() - 1;
    // SAFETY: sigaction is plain data; all zeroes is a valid value to fill.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above. The handler installed in it only makes
    // async-signal-safe system calls and touches atomics.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: `action.sa_mask` is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: valid pointers to initialised sigaction structs.
    if unsafe { libc::sigaction(signal, &action, &mut old) } != 0 {
        return Err(std::io::Error::last_os_error())
            .context("installing the capability-drop signal handler");
    }
    let result = broadcast(signal, keep, clear_bounding);
    // A thread slow to handle the first signal was sent it again, and
    // real-time signals queue: a copy may still be pending when every
    // thread already shows the drop. Delivered after the default action is
    // back, it killed the agent (CI, a TCG guest: "status 63"). Setting the
    // action to SIG_IGN discards every pending copy, in every thread,
    // blocked or not (POSIX; Linux's do_sigaction); only then the old one
    // comes back. No copy is sent after this point.
    // SAFETY: sigaction is plain data; SIG_IGN with an empty mask.
    let mut ignore: libc::sigaction = unsafe { std::mem::zeroed() };
    ignore.sa_sigaction = libc::SIG_IGN;
    // SAFETY: valid pointers to initialised sigaction structs; restores
    // the handler saved above after the discard.
    unsafe {
        libc::sigaction(signal, &ignore, std::ptr::null_mut());
        libc::sigaction(signal, &old, std::ptr::null_mut());
    }
    let threads = result?;

    Ok(Kept {
        caps: keep,
        bounding_cleared: clear_bounding,
        threads,
    })
}

static TARGET_KEEP: AtomicU64 = AtomicU64::new(0);
static CLEAR_BOUNDING: AtomicBool = AtomicBool::new(false);
static LAST_CAP: AtomicI32 = AtomicI32::new(40);
/// The errno of the first failing handler, 0 if none failed.
static HANDLER_FAILED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    // SAFETY: errno is thread-local; saved and restored so the interrupted
    // code does not see this handler's.
    let errno = unsafe { *libc::__errno_location() };
    if let Err(e) = drop_this_thread(
        TARGET_KEEP.load(Ordering::SeqCst),
        CLEAR_BOUNDING.load(Ordering::SeqCst),
        LAST_CAP.load(Ordering::SeqCst),
    ) {
        let _ = HANDLER_FAILED.compare_exchange(0, e.max(1), Ordering::SeqCst, Ordering::SeqCst);
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Drops the calling thread's capabilities to `keep`. Only raw system calls:
/// it runs in a signal handler. Returns the errno of the call that failed.
fn drop_this_thread(keep: u64, clear_bounding: bool, last_cap: i32) -> Result<(), i32> {
    let errno = || {
        // SAFETY: reading this thread's errno.
        unsafe { *libc::__errno_location() }
    };
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // Done already (a copy of the signal re-sent while this thread was slow
    // to run the first, delivered after it): the bounding-set drop would
    // now fail with EPERM (CAP_SETPCAP is gone), which failed the whole
    // drop in CI (6.1 under single-threaded TCG). The permitted set equal
    // to `keep` says the capset below happened, or had nothing to do, in
    // which case CAP_SETPCAP was not there to clear the bounding set with.
    let mut now = [CapData::default(), CapData::default()];
    // SAFETY: capget(2) with a version-3 header and room for the two data
    // structs that version writes; both outlive the call.
    if unsafe { libc::syscall(libc::SYS_capget, &header, now.as_mut_ptr()) } != 0 {
        return Err(errno());
    }
    let permitted = u64::from(now[0].permitted) | u64::from(now[1].permitted) << 32;
    let done = permitted == keep;
    // Bounding set first: dropping from it needs CAP_SETPCAP, which the
    // capset below removes.
    if clear_bounding && !done {
        for cap in 0..=last_cap {
            if keep & (1u64 << cap) != 0 {
                continue;
            }
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                return Err(errno());
            }
        }
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(errno());
    }
    let half = |shift: u32| CapData {
        effective: (keep >> shift) as u32,
        permitted: (keep >> shift) as u32,
        inheritable: 0,
    };
    let data = [half(0), half(32)];
    // SAFETY: capset(2) with a version-3 header and the two data structs
    // that version reads; both outlive the call. Lowering to the permitted
    // set a thread already has needs no capability, so a repeat succeeds.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(errno());
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(errno());
    }
    Ok(())
}

/// Whether bpf(2) on a map fd this process holds is refused without CAP_BPF
/// (kernels before 5.19 with `kernel.unprivileged_bpf_disabled` set). Tried:
/// a one-entry array map is made, then looked up with this thread's
/// effective set emptied for the moment (the permitted set stays, so the
/// effective set comes back).
fn held_fds_need_cap_bpf(now: ThreadCaps) -> anyhow::Result<bool> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    // The bpf(2) attribute union, as large as the commands here read.
    #[repr(C, align(8))]
    struct Attr([u32; 16]);
    let bpf = |cmd: libc::c_long, attr: &Attr| {
        // SAFETY: bpf(2) with a zero-padded attribute of the size passed;
        // the pointers inside point to this frame's live locals.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *const Attr,
                std::mem::size_of::<Attr>() as u32,
            )
        };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    };
    let mut create = Attr([0; 16]);
    // map_type, key_size, value_size, max_entries.
    create.0[..4].copy_from_slice(&[BPF_MAP_TYPE_ARRAY, 4, 4, 1]);
    let fd = bpf(BPF_MAP_CREATE, &create).context("creating a one-entry test map")?;
    // SAFETY: a new fd the kernel just returned, owned by nobody else.
    let map = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let key = 0u32;
    let mut value = 0u32;
    let mut lookup = Attr([0; 16]);
    lookup.0[0] = map.as_raw_fd() as u32;
    // key and value pointers, 64-bit at offsets 8 and 16.
    let (k, v) = (&key as *const u32 as u64, &mut value as *mut u32 as u64);
    lookup.0[2..6].copy_from_slice(&[k as u32, (k >> 32) as u32, v as u32, (v >> 32) as u32]);

    set_this_thread(0, now.permitted).context("lowering this thread's effective set")?;
    let tried = bpf(BPF_MAP_LOOKUP_ELEM, &lookup);
    set_this_thread(now.effective, now.permitted)
        .context("restoring this thread's effective set")?;
    match tried {
        Ok(_) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(true),
        Err(e) => Err(anyhow::Error::new(e).context("looking up the test map")),
    }
}

/// capset(2) on the calling thread, the inheritable set emptied.
fn set_this_thread(effective: u64, permitted: u64) -> std::io::Result<()> {
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let half = |shift: u32| CapData {
        effective: (effective >> shift) as u32,
        permitted: (permitted >> shift) as u32,
        inheritable: 0,
    };
    let data = [half(0), half(32)];
    // SAFETY: capset(2) with a version-3 header and the two data structs
    // that version reads; both outlive the call.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The highest capability this kernel knows: the first PR_CAPBSET_READ that
/// says EINVAL, less one (/proc/sys may be hidden, as under ProcSubset=pid).
fn last_cap() -> i32 {
    (0..64)
        // SAFETY: prctl with integer arguments only.
        .find(|&c| unsafe { libc::prctl(libc::PR_CAPBSET_READ, c as libc::c_ulong, 0, 0, 0) } < 0)
        .map_or(63, |c| c - 1)
}

/// Signals every other thread until each shows the drop in its status, then
/// drops this thread's. Returns the number of threads.
fn broadcast(signal: libc::c_int, keep: u64, clear_bounding: bool) -> anyhow::Result<usize> {
    // SAFETY: getpid and gettid cannot fail.
    let (pid, me) = unsafe { (libc::getpid(), libc::gettid()) };
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut pending = Vec::new();
        let mut threads = 0;
        for tid in tasks()? {
            threads += 1;
            if tid == me {
                continue;
            }
            match read_caps(&format!("/proc/self/task/{tid}/status")) {
                Ok(c) if c.done(keep, clear_bounding) => {}
                Ok(_) => pending.push(tid),
                // Exited meanwhile.
                Err(_) => threads -= 1,
            }
        }
        let failed = HANDLER_FAILED.load(Ordering::SeqCst);
        if failed != 0 {
            bail!(
                "a thread could not drop its capabilities: {}",
                std::io::Error::from_raw_os_error(failed)
            );
        }
        if pending.is_empty() {
            drop_this_thread(keep, clear_bounding, LAST_CAP.load(Ordering::SeqCst)).map_err(
                |e| {
                    anyhow::anyhow!(
                        "dropping this thread's capabilities: {}",
                        std::io::Error::from_raw_os_error(e)
                    )
                },
            )?;
            let mine = read_caps("/proc/thread-self/status")?;
            if !mine.done(keep, clear_bounding) {
                bail!("this thread still has capabilities after capset: {mine:?}");
            }
            return Ok(threads);
        }
        if Instant::now() > deadline {
            bail!("threads {pending:?} did not drop their capabilities within 2 s");
        }
        for tid in pending {
            // SAFETY: tgkill to a thread of this process; the handler is
            // installed. ESRCH (it exited) is fine.
            unsafe { libc::tgkill(pid, tid, signal) };
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn tasks() -> anyhow::Result<Vec<libc::pid_t>> {
    Ok(std::fs::read_dir("/proc/self/task")
        .context("listing /proc/self/task")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

/// A thread's capability sets and no_new_privs, from its status file.
#[derive(Debug, Clone, Copy, Default)]
struct ThreadCaps {
    effective: u64,
    permitted: u64,
    ambient: u64,
    bounding: u64,
    no_new_privs: bool,
}

impl ThreadCaps {
    fn done(&self, keep: u64, clear_bounding: bool) -> bool {
        self.effective == keep
            && self.permitted == keep
            && self.ambient == 0
            && self.no_new_privs
            && (!clear_bounding || self.bounding == keep)
    }
}

fn read_caps(path: &str) -> anyhow::Result<ThreadCaps> {
    let status = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let mut c = ThreadCaps::default();
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let hex = || u64::from_str_radix(value.trim(), 16).unwrap_or(u64::MAX);
        match key {
            "CapEff" => c.effective = hex(),
            "CapPrm" => c.permitted = hex(),
            "CapAmb" => c.ambient = hex(),
            "CapBnd" => c.bounding = hex(),
            "NoNewPrivs" => c.no_new_privs = value.trim() == "1",
            _ => {}
        }
    }
    Ok(c)
}
