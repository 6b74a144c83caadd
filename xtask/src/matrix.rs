//! The probe-loading end-to-end suite on every kernel of the matrix: the
//! host's, and Debian's 6.1 and 6.12 in VMs (`vm.rs`).
//!
//! The test binaries are built on the host as `cargo test` builds them;
//! the guest sees them (and the agent binary, the test child, and the
//! host's tools) over the VM's 9p root and runs them one after another,
//! one test at a time: under TCG two tests side by side would share two
//! emulated CPUs, and the tests that compare against the kernel's own
//! counts would only get slower and noisier. Their temporary files go to
//! the guest's ext4 disk, where the page cache behaves as on a real one.

use std::{fmt::Write as _, path::PathBuf};

use anyhow::{Context as _, bail};

use crate::{
    util::{self, repo_root},
    vm::{self, Kernel},
};

/// The end-to-end tests that load probes: one binary per probe family,
/// the agent's behaviour (filters, both fd paths, the family report), and
/// its privileges after the drop.
pub const PROBE_SUITES: &[&str] = &[
    "syscalls",
    "sched",
    "waits",
    "page_cache",
    "io_uring",
    "process",
    "agent_behaviour",
    // What capabilities the agent can drop after attaching depends on the
    // kernel (CAP_BPF to read held map fds before 5.19).
    "privileges",
];

/// One kernel's results.
#[derive(Debug, Clone)]
pub struct KernelResult {
    /// `host` or the series.
    pub kernel: String,
    /// Which kernel ran: `uname -r`, and for a VM its Debian package.
    pub release: String,
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Whether the run itself succeeded (every binary exited 0).
    pub ok: bool,
    pub wall_s: f64,
}

/// Builds the suites' test binaries and returns their paths, in
/// [`PROBE_SUITES`] order (or just `only`).
fn test_binaries(only: Option<&str>) -> anyhow::Result<Vec<PathBuf>> {
    let suites: Vec<&str> = match only {
        Some(f) => vec![f],
        None => PROBE_SUITES.to_vec(),
    };
    let mut c = crate::cargo();
    c.args([
        "test",
        "--no-run",
        "--message-format=json",
        "-p",
        "iolens-tests",
    ]);
    for s in &suites {
        c.args(["--test", s]);
    }
    let out = c
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("building the test binaries")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut found: Vec<(usize, PathBuf)> = Vec::new();
    for line in text.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(name), Some(exe)) = (
            msg.pointer("/target/name").and_then(|v| v.as_str()),
            msg.get("executable").and_then(|v| v.as_str()),
        ) else {
            continue;
        };
        if let Some(i) = suites.iter().position(|s| *s == name) {
            found.push((i, PathBuf::from(exe)));
        }
    }
    found.sort();
    found.dedup_by_key(|(i, _)| *i);
    if found.len() != suites.len() {
        bail!(
            "cargo built {} of the {} test binaries {suites:?}",
            found.len(),
            suites.len()
        );
    }
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// The guest's script: each binary in turn, its wall time, and a non-zero
/// exit if any failed.
fn guest_script(bins: &[PathBuf], extra: &[String]) -> anyhow::Result<String> {
    let mut s = String::from(
        "#!/bin/sh\n# Written by `cargo xtask test`: the probe suites in a VM.\n\
         export TMPDIR=\"$IOLENS_TEST_DISK/tmp\"\nmkdir -p \"$TMPDIR\" || exit 125\nrc=0\n",
    );
    let extra: Vec<String> = extra.iter().map(|a| vm::sh_quote(a)).collect();
    for b in bins {
        let b = b.to_str().context("non-UTF-8 test binary path")?;
        let _ = writeln!(
            s,
            "t0=$(cut -d' ' -f1 /proc/uptime)\n\
             echo \"xtask: guest: {b}\" >&2\n\
             {} --test-threads=1 {} || rc=1\n\
             echo \"xtask: guest: $(basename {b}) took $(echo \"$(cut -d' ' -f1 /proc/uptime) - $t0\" | bc) s\" >&2",
            vm::sh_quote(b),
            extra.join(" ")
        );
    }
    s.push_str("exit $rc\n");
    Ok(s)
}

/// Runs the suites (or one family's) in a VM on `kernel`.
pub fn run_in_vm(
    kernel: Kernel,
    family: Option<&str>,
    extra: &[String],
) -> anyhow::Result<KernelResult> {
    let bins = test_binaries(family)?;
    let dir = repo_root().join("target/vm");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let script = dir.join(format!("suite-{kernel}-{}.sh", std::process::id()));
    std::fs::write(&script, guest_script(&bins, extra)?)
        .with_context(|| format!("writing {}", script.display()))?;
    let script_s = script.to_str().context("non-UTF-8 path")?.to_owned();
    let vm = vm::Vm {
        // The suite of one kernel takes about ten minutes under TCG.
        timeout: std::time::Duration::from_secs(40 * 60),
        ..vm::Vm::new(kernel)
    };
    let run = vm::run_vm(&vm, &["sh", script_s.as_str()]);
    let _ = std::fs::remove_file(&script);
    let run = run?;
    let (passed, failed, skipped) = util::sum_test_results(&run.stdout);
    Ok(KernelResult {
        kernel: kernel.series().to_owned(),
        release: format!(
            "{} ({} {})",
            run.kernel.release, run.kernel.package, run.kernel.version
        ),
        passed,
        failed,
        skipped,
        ok: run.status.success(),
        wall_s: run.wall.as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_probe_suite_exists() {
        for s in PROBE_SUITES {
            let f = repo_root().join("tests/tests").join(format!("{s}.rs"));
            assert!(f.is_file(), "{}", f.display());
        }
    }

    #[test]
    fn the_guest_script_runs_each_binary_and_fails_if_one_does() {
        let s = guest_script(
            &[PathBuf::from("/t/a-1"), PathBuf::from("/t/b-2")],
            &["name with space".to_owned()],
        )
        .expect("script");
        assert!(s.contains("/t/a-1 --test-threads=1 'name with space' || rc=1"));
        assert!(s.contains("/t/b-2 --test-threads=1 'name with space' || rc=1"));
        assert!(s.trim_end().ends_with("exit $rc"));
    }
}
