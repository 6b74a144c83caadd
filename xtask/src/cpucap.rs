//! A CPU-time cap for benchmark servers: a cpu cgroup (v2 `cpu.max`, or
//! v1 `cpu.cfs_quota_us`) that the server joins before it execs.
//!
//! Why: on a small machine one wrk thread and one server thread cost about
//! the same per request, so an efficient server waits on wrk and its
//! requests per second measure the client. Capping every contender at the
//! same share of a CPU, below what wrk can drive, makes the server the
//! bottleneck; requests per second then compare the servers at equal CPU.

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};

/// Quota period. Short, so that a throttled server stalls its clients for
/// at most a few milliseconds at a time.
const PERIOD_US: u64 = 10_000;

pub struct CpuCap {
    dir: PathBuf,
    /// `cgroup.procs` of `dir`, opened before any fork: a child writes "0"
    /// to it (itself) between fork and exec.
    pub procs: File,
}

impl CpuCap {
    /// A fresh cgroup capped at `pct` % of each of `cpus` CPUs.
    pub fn create(pct: u32, cpus: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(pct > 0 && pct <= 100, "a CPU cap is 1..=100 %, not {pct}");
        let quota = PERIOD_US * u64::from(pct) * cpus.max(1) as u64 / 100;
        let name = format!("iolens-bench-{}", std::process::id());
        let unified = Path::new("/sys/fs/cgroup/cgroup.controllers");
        let dir = if unified.exists() {
            let controllers =
                std::fs::read_to_string(unified).context("reading cgroup.controllers")?;
            if !controllers.split_whitespace().any(|c| c == "cpu") {
                bail!(
                    "the cgroup v2 root has no cpu controller ({})",
                    controllers.trim()
                );
            }
            // Lets children of the root use cpu.max; a no-op if enabled.
            std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+cpu")
                .context("enabling the cpu controller in /sys/fs/cgroup/cgroup.subtree_control")?;
            let dir = Path::new("/sys/fs/cgroup").join(&name);
            mkdir(&dir)?;
            write(&dir, "cpu.max", &format!("{quota} {PERIOD_US}"))?;
            dir
        } else {
            let mount = v1_cpu_mount().context(
                "no cgroup v2 at /sys/fs/cgroup and no cgroup v1 hierarchy with the cpu controller",
            )?;
            let dir = mount.join(&name);
            mkdir(&dir)?;
            write(&dir, "cpu.cfs_period_us", &PERIOD_US.to_string())?;
            write(&dir, "cpu.cfs_quota_us", &quota.to_string())?;
            dir
        };
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .with_context(|| format!("opening {}/cgroup.procs", dir.display()))?;
        Ok(Self { dir, procs })
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        // The servers have exited by now; an rmdir that still fails leaves
        // an empty, harmless cgroup behind, so say where.
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            eprintln!("note: could not remove {}: {e}", self.dir.display());
        }
    }
}

fn mkdir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {} (root is needed)", dir.display())),
    }
}

fn write(dir: &Path, file: &str, value: &str) -> anyhow::Result<()> {
    std::fs::write(dir.join(file), value)
        .with_context(|| format!("writing {value:?} to {}/{file}", dir.display()))
}

/// Where the cgroup v1 hierarchy holding the cpu controller is mounted.
fn v1_cpu_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        // "… mountpoint options … - fstype source superoptions"
        let (pre, post) = l.split_once(" - ")?;
        let mut post = post.split_whitespace();
        if post.next()? != "cgroup" {
            return None;
        }
        let supers = post.nth(1)?;
        if !supers.split(',').any(|o| o == "cpu") {
            return None;
        }
        pre.split_whitespace().nth(4).map(PathBuf::from)
    })
}
