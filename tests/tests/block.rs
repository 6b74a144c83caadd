//! The block family: a test child's disk reads and writes against the
//! device's own count (`/sys/block/DEV/stat`), on a disk of the test's
//! own: a loop device with a fresh ext4 on the host, the VM's ext4 disk
//! ($IOLENS_TEST_DISK) in the kernel VMs.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::{CHILD, grew};
use iolens_tests::{Agent, Metrics, PinnedFile, TestChild, can_load_probes};

/// The child's file: 1 MiB, written, synced and evicted in its set-up.
const SIZE: u64 = 1 << 20;

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A directory on a disk, and that disk's name in /sys/block.
struct Disk {
    dir: String,
    dev: String,
    /// Host only: the loop device, its image and mount point.
    own: Option<(String, String, String)>,
}

impl Disk {
    fn new(test: &str) -> Disk {
        if let Ok(root) = std::env::var("IOLENS_TEST_DISK") {
            // The VM's ext4 disk, which only the tests use.
            let dir = format!("{root}/iolens-{test}-{}", std::process::id());
            std::fs::create_dir_all(&dir).expect("test dir");
            let dev = disk_of(&dir);
            return Disk {
                dir,
                dev,
                own: None,
            };
        }
        // The host's disks are shared with everything else: a loop device
        // of the test's own (its image on /var/tmp), with ext4 made
        // without lazy initialisation so nothing writes to it in the
        // background.
        let base = format!("/var/tmp/iolens-{test}-{}", std::process::id());
        let img = format!("{base}.img");
        let mnt = format!("{base}.mnt");
        std::fs::write(&img, []).expect("image");
        run("truncate", &["-s", "64M", &img]);
        let loopdev = run("losetup", &["--find", "--show", &img]);
        run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
                &loopdev,
            ],
        );
        std::fs::create_dir_all(&mnt).expect("mount point");
        run("mount", &[&loopdev, &mnt]);
        let dev = disk_of(&mnt);
        Disk {
            dir: mnt.clone(),
            dev,
            own: Some((loopdev, img, mnt)),
        }
    }

    /// Sectors read and written so far (fields 3 and 7 of the stat file,
    /// in 512-byte units whatever the device's block size).
    fn sectors(&self) -> [u64; 2] {
        let s = std::fs::read_to_string(format!("/sys/block/{}/stat", self.dev))
            .expect("/sys/block/DEV/stat");
        let f: Vec<u64> = s
            .split_whitespace()
            .map(|v| v.parse().expect("stat field"))
            .collect();
        [f[2], f[6]]
    }

    /// A scrape and the device's counts at the same moment: the stat file
    /// read before and after the scrape, again until nothing completed in
    /// between.
    fn snapshot(&self, agent: &Agent) -> (Metrics, [u64; 2]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let a = self.sectors();
            let m = agent.scrape();
            if self.sectors() == a {
                return (m, a);
            }
            assert!(Instant::now() < deadline, "{} never quiet", self.dev);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        match &self.own {
            Some((loopdev, img, mnt)) => {
                let _ = Command::new("umount").arg(mnt).status();
                let _ = Command::new("losetup").args(["-d", loopdev]).status();
                let _ = std::fs::remove_file(img);
                let _ = std::fs::remove_dir(mnt);
            }
            None => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }
}

/// The whole disk under `path`'s file system, as /sys/block names it.
fn disk_of(path: &str) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let dev = std::fs::metadata(path).expect("stat").dev();
    let id = format!("{}:{}", libc::major(dev), libc::minor(dev));
    let link = std::fs::canonicalize(format!("/sys/dev/block/{id}"))
        .unwrap_or_else(|e| panic!("{path} is on {id}, not a block device: {e}"));
    // A partition's directory sits in its disk's.
    let disk = if link.join("partition").exists() {
        link.parent().expect("disk of a partition").to_path_buf()
    } else {
        link
    };
    disk.file_name()
        .expect("device name")
        .to_string_lossy()
        .into_owned()
}

/// Everything iolens counted on `dev` for `op`: every owner's, the
/// unattributed included.
fn device_bytes(m: &Metrics, dev: &str, op: &str) -> u64 {
    let l = [("device", dev), ("op", op)];
    m.sum("iolens_block_bytes_total", &l) + m.sum("iolens_block_unattributed_bytes_total", &l)
}

/// The latency histogram's count for `comm` against the read and write
/// requests of every process of that name: the same completions, settled
/// by one program run. (Flushes are left out: the kernel sends one flush
/// for several waiting ones, and those complete without being issued
/// themselves, so they have requests but no latency.) Counted from
/// `base`, what both were when the child was ready: the reads of its own
/// binary while it exec'd (many when the binary was cold, just built)
/// were started under its parent's name, and their latency is that
/// name's, while the requests are the pid's, now named after the child.
fn block_counts(m: &Metrics, comm: &str) -> [(u64, u64); 2] {
    ["read", "write"].map(|op| {
        let l = [("comm", comm), ("op", op)];
        (
            m.sum("iolens_block_requests_total", &l),
            m.sum("iolens_block_latency_seconds_count", &l),
        )
    })
}

fn latency_count_matches_requests(agent: &Agent, comm: &str, base: [(u64, u64); 2]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = agent.scrape();
        let counts = |op: &str| {
            let l = [("comm", comm), ("op", op)];
            (
                m.sum("iolens_block_requests_total", &l),
                m.sum("iolens_block_latency_seconds_count", &l),
            )
        };
        let [(r0, rl0), (w0, wl0)] = base;
        let [(r1, rl1), (w1, wl1)] = block_counts(&m, comm);
        let (r, w) = ((r1 - r0, rl1 - rl0), (w1 - w0, wl1 - wl0));
        // Another process of that name may complete a request between
        // the two maps' reads: read again until both agree.
        if r.0 == r.1 && w.0 == w.1 && r.0 > 0 && w.0 > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{comm}: (requests, latency count) read {r:?}, write {w:?}; flush {:?}",
            counts("flush")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn block_direct_cold_and_warm_io_of_a_child() {
    if !can_load_probes("block_direct_cold_and_warm_io_of_a_child") {
        return;
    }
    let disk = Disk::new("block");
    let agent = Agent::start(&[]);
    let mut child = TestChild::spawn(CHILD, &["block", &disk.dir]);
    let pid = child.pid();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .expect("child comm")
        .trim()
        .to_owned();
    let dev = disk.dev.clone();
    let on = |op: &'static str| [("device", dev.as_str()), ("op", op)];
    let dedicated = disk.own.is_some();

    // O_DIRECT read of 1 MiB: exactly the child's, and what the disk read.
    let (m0, s0) = disk.snapshot(&agent);
    let base = block_counts(&m0, &comm);
    assert_eq!(child.step().end, "phase direct-write");
    let (m1, s1) = disk.snapshot(&agent);
    assert_eq!(
        grew(&m0, &m1, "iolens_block_bytes_total", pid, &on("read")),
        SIZE,
        "O_DIRECT read"
    );
    assert_eq!(
        grew(&m0, &m1, "iolens_block_bytes_total", pid, &on("write")),
        0
    );
    assert!(grew(&m0, &m1, "iolens_block_requests_total", pid, &on("read")) >= 1);
    // Every byte the device counted, iolens counted for some owner (or
    // as unattributed): exact on any disk.
    let read = (s1[0] - s0[0]) * 512;
    assert_eq!(
        device_bytes(&m1, &dev, "read") - device_bytes(&m0, &dev, "read"),
        read,
        "{dev} stat"
    );
    // On a disk of its own nobody else reads; on the VM's, ext4 may read
    // metadata for itself.
    if dedicated {
        assert_eq!(read, SIZE, "{dev} read sectors");
    } else {
        assert!(read >= SIZE, "{dev} read {read}");
    }

    // O_DIRECT overwrite of the file's written blocks: nothing to
    // allocate, so the data is the child's exactly. The inode's new mtime
    // goes to disk through the journal: jbd2's writes, not the child's,
    // so the device may count more (and iolens counts it for jbd2).
    assert_eq!(child.step().end, "phase cold");
    let (m2, s2) = disk.snapshot(&agent);
    assert_eq!(
        grew(&m1, &m2, "iolens_block_bytes_total", pid, &on("write")),
        SIZE,
        "O_DIRECT overwrite"
    );
    assert_eq!(
        grew(&m1, &m2, "iolens_block_bytes_total", pid, &on("read")),
        0
    );
    let written = (s2[1] - s1[1]) * 512;
    assert_eq!(
        device_bytes(&m2, &dev, "write") - device_bytes(&m1, &dev, "write"),
        written,
        "{dev} stat"
    );
    assert!(written >= SIZE, "{dev} wrote {written}");

    // Cold buffered read of the evicted file: its pages come from disk
    // through readahead, which the reader submits. Readahead stops at EOF,
    // so the data is the file's size; 64 KiB of slack is for metadata
    // ext4 may read for the reader (an extent block), which was never
    // seen here.
    assert_eq!(child.step().end, "phase warm");
    let (m3, s3) = disk.snapshot(&agent);
    let cold = grew(&m2, &m3, "iolens_block_bytes_total", pid, &on("read"));
    assert!(
        (SIZE..=SIZE + (64 << 10)).contains(&cold),
        "cold read {cold}"
    );
    assert_eq!(
        device_bytes(&m3, &dev, "read") - device_bytes(&m2, &dev, "read"),
        (s3[0] - s2[0]) * 512,
        "{dev} stat"
    );
    let file = format!("{}/data", disk.dir);
    // Kept cached until the warm read is done (reclaim would turn hits
    // into misses).
    let pin = PinnedFile::lock(&file);

    // Warm: nothing from disk for the child.
    assert_eq!(child.step().end, "done");
    let (m4, _) = disk.snapshot(&agent);
    assert_eq!(
        grew(&m3, &m4, "iolens_block_bytes_total", pid, &on("read")),
        0,
        "warm read"
    );
    drop(pin);
    latency_count_matches_requests(&agent, &comm, base);
    child.finish();
}

/// The help text says how owners are chosen, and where writeback goes.
#[test]
fn block_help_states_attribution() {
    if !can_load_probes("block_help_states_attribution") {
        return;
    }
    let agent = Agent::start(&[]);
    let disk = Disk::new("block-help");
    // Some block I/O on the disk so the families have series.
    let path = format!("{}/f", disk.dir);
    std::fs::write(&path, vec![1u8; 8192]).expect("write");
    run("sync", &["-f", &path]);
    let text = agent.scrape_text();
    for needle in [
        "readahead",
        "writeback",
        "kworker",
        "jbd2",
        "does not guess",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("# HELP iolens_block_bytes_total") && l.contains(needle)),
            "HELP of iolens_block_bytes_total lacks `{needle}`"
        );
    }
}
