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
    "block",
    "aio",
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

/// virtme-ng's status when the VM died rather than the command failing.
const DIED: i32 = 255;

/// How long one test binary may run in the guest before the watchdog dumps
/// what every process is waiting on and kills it. The slowest binary
/// (syscalls) took 169 s on 6.1 in CI; a hang once ate the whole VM's
/// 2400 s with nothing to show but the name of the test that never ended.
const BINARY_LIMIT_S: u64 = 600;

/// The guest's watchdog dump: each process's state and wait channel, the
/// kernel stacks of the test's processes, and the kernel log's tail.
const HANG_DUMP: &str = r#"hang_dump() {
  echo "xtask: guest: $1 still running after $2 s; what each process waits on:" >&2
  ps -eo pid,ppid,pgid,stat,wchan:32,etime,args | grep -v ' \[' >&2
  for t in /proc/[0-9]*/task/[0-9]*; do
    p=${t#/proc/}; p=${p%%/*}
    [ "$(cut -d' ' -f5 /proc/$p/stat 2>/dev/null)" = "$3" ] || continue
    echo "--- task ${t##*/} of $p ($(cat $t/comm 2>/dev/null)): $(cut -d' ' -f3 $t/stat 2>/dev/null) in $(cat $t/wchan 2>/dev/null)" >&2
    cat $t/stack >&2 2>/dev/null
  done
  dmesg | tail -40 >&2
}
"#;

/// The guest's script: each binary in turn under a watchdog, its wall
/// time, and a non-zero exit if any failed.
fn guest_script(bins: &[PathBuf], extra: &[String], limit_s: u64) -> anyhow::Result<String> {
    let mut s = String::from(
        "#!/bin/sh\n# Written by `cargo xtask test`: the probe suites in a VM.\n\
         export TMPDIR=\"$IOLENS_TEST_DISK/tmp\"\nmkdir -p \"$TMPDIR\" || exit 125\nrc=0\n",
    );
    s.push_str(HANG_DUMP);
    let extra: Vec<String> = extra.iter().map(|a| vm::sh_quote(a)).collect();
    for b in bins {
        let b = b.to_str().context("non-UTF-8 test binary path")?;
        // setsid: the binary leads its own process group (a background job
        // of a script is not a group leader, so setsid execs in place and
        // $! is that group), so a kill takes its agents and children too.
        let _ = writeln!(
            s,
            "t0=$(cut -d' ' -f1 /proc/uptime)\n\
             echo \"xtask: guest: {b}\" >&2\n\
             setsid {} --test-threads=1 {} &\n\
             pid=$!; waited=0\n\
             while kill -0 $pid 2>/dev/null && [ $waited -lt {limit_s} ]; do sleep 1; waited=$((waited + 1)); done\n\
             if kill -0 $pid 2>/dev/null; then hang_dump $(basename {b}) $waited $pid; kill -9 -$pid; rc=1; fi\n\
             wait $pid || rc=1\n\
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
    std::fs::write(&script, guest_script(&bins, extra, BINARY_LIMIT_S)?)
        .with_context(|| format!("writing {}", script.display()))?;
    let script_s = script.to_str().context("non-UTF-8 path")?.to_owned();
    let vm = vm::Vm {
        // The suite of one kernel takes about ten minutes under TCG.
        timeout: std::time::Duration::from_secs(40 * 60),
        // The guest's console in the log: when the guest kernel dies, its
        // oops is the only account of why.
        verbose: true,
        ..vm::Vm::new(kernel)
    };
    let mut run = vm::run_vm(&vm, &["sh", script_s.as_str()]);
    // vng exits 255 only when the VM itself died: the guest script exits
    // 0, 1 or 125. Under TCG with a host thread per vCPU, Debian's 6.12
    // kernel has oopsed on a stale int3 in patched kernel text (`Oops:
    // int3`; see `vm::Vm::new`, which now runs the vCPUs in one thread):
    // the emulator's, not the suite's. Should a VM still die, it reruns
    // the kernel's suites once, loudly; a second death, or any test
    // failure, still fails.
    if matches!(&run, Ok(r) if r.status.code() == Some(DIED)) {
        eprintln!(
            "xtask: vm: the {kernel} VM died (vng exited {DIED}; its console above says why): \
             running its suites again, once"
        );
        run = vm::run_vm(&vm, &["sh", script_s.as_str()]);
    }
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
            BINARY_LIMIT_S,
        )
        .expect("script");
        assert!(s.contains("setsid /t/a-1 --test-threads=1 'name with space' &"));
        assert!(s.contains("setsid /t/b-2 --test-threads=1 'name with space' &"));
        assert_eq!(s.matches("wait $pid || rc=1").count(), 2);
        assert_eq!(s.matches("kill -9 -$pid; rc=1").count(), 2);
        assert!(s.trim_end().ends_with("exit $rc"));
    }

    /// The watchdog for real, with sh: a binary that passes, one that
    /// fails, and one that hangs with a child of its own; the hung one is
    /// dumped and killed with its child, and the script still reaches the
    /// next binary and exits non-zero.
    #[test]
    fn the_watchdog_kills_a_hung_binary_with_its_children_and_goes_on() {
        let dir = std::env::temp_dir().join(format!("iolens-watchdog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let bin = |name: &str, body: &str| {
            let p = dir.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write");
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .expect("chmod");
            p
        };
        let marker = dir.join("child-pid");
        let bins = [
            bin("ok", "exit 0"),
            bin(
                "hangs",
                &format!("sleep 1000 & echo $! > {}; wait", marker.display()),
            ),
            bin("fails", "exit 3"),
            bin("after", &format!("touch {}/after-ran", dir.display())),
        ];
        let script = guest_script(&bins, &[], 2).expect("script");
        // The script runs in a process group of its own, under a bound of
        // this test's: a watchdog that fails to kill would otherwise hang
        // the script's `wait`, and this test with it, instead of failing.
        let mut sh = std::process::Command::new("sh");
        std::os::unix::process::CommandExt::process_group(&mut sh, 0);
        let mut sh = sh
            .arg("-c")
            .arg(script.replace("$IOLENS_TEST_DISK", &dir.display().to_string()))
            // Files, not pipes: the hang dump (ps, stacks, dmesg) can fill
            // a pipe that nobody reads while the loop below waits.
            .stdout(std::fs::File::create(dir.join("stdout")).expect("stdout file"))
            .stderr(std::fs::File::create(dir.join("stderr")).expect("stderr file"))
            .spawn()
            .expect("sh");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while sh.try_wait().expect("try_wait").is_none() {
            if std::time::Instant::now() > deadline {
                // SAFETY: kills the process group this test made for sh.
                unsafe { libc::kill(-(sh.id() as i32), libc::SIGKILL) };
                let _ = sh.wait();
                panic!("the guest script still ran after 60 s: its watchdog did not kill");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let status = sh.wait().expect("sh status");
        let err = std::fs::read_to_string(dir.join("stderr")).expect("stderr");
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(
            err.contains("xtask: guest: hangs still running after 2 s"),
            "{err}"
        );
        assert!(!err.contains("xtask: guest: ok still running"), "{err}");
        assert!(dir.join("after-ran").exists(), "{err}");
        let child: i32 = std::fs::read_to_string(&marker)
            .expect("marker")
            .trim()
            .parse()
            .expect("pid");
        // SAFETY: signal 0 only checks that the pid exists.
        let alive = unsafe { libc::kill(child, 0) } == 0;
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!alive, "the hung binary's child {child} outlived the kill");
    }
}
