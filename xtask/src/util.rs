//! Small process helpers shared by the xtask commands.

use std::{
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

pub fn cmd(program: &str) -> Command {
    Command::new(program)
}

/// Runs a command with inherited stdio; fails if it exits non-zero.
pub fn run(c: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{c:?}");
    // Say what runs: CI logs are read by people who were not there.
    eprintln!("xtask: running {shown}");
    let status = c
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

/// Replaces this process with the command (so signals reach it directly).
pub fn exec(mut c: Command) -> anyhow::Result<()> {
    let err = c.exec();
    Err(err).context("exec")
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The workspace root (xtask lives one level below it).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// A finished command's status and its stdout (also echoed as it ran).
pub struct Teed {
    pub status: std::process::ExitStatus,
    pub stdout: String,
}

/// Runs a command, echoing its stdout while keeping a copy.
pub fn run_tee(c: &mut Command) -> anyhow::Result<Teed> {
    use std::io::{BufRead as _, BufReader, Write as _};
    let shown = format!("{c:?}");
    eprintln!("xtask: running {shown}");
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let mut stdout = String::new();
    let out = child.stdout.take().context("stdout")?;
    let mut me = std::io::stdout().lock();
    for line in BufReader::new(out).lines() {
        let line = line.context("reading test output")?;
        // A closed stdout (piped into `head`) must not abort the run.
        let _ = writeln!(me, "{line}");
        stdout.push_str(&line);
        stdout.push('\n');
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for {shown}"))?;
    Ok(Teed { status, stdout })
}

/// Sums libtest's `test result: ok. N passed; M failed; K ignored` lines.
pub fn sum_test_results(out: &str) -> (u64, u64, u64) {
    let mut sums = (0, 0, 0);
    for line in out.lines().filter(|l| l.starts_with("test result:")) {
        let num = |word: &str| -> u64 {
            line.split(';')
                .find(|part| part.trim_end().ends_with(word))
                .and_then(|part| part.split_whitespace().rev().nth(1))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        sums.0 += num("passed");
        sums.1 += num("failed");
        sums.2 += num("ignored");
    }
    sums
}

/// The median of the finite values; NaN if there are none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_libtest_summaries() {
        let out = "running 2 tests\n\
            test result: ok. 9 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.38s\n\
            test result: FAILED. 2 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out\n\
            test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";
        assert_eq!(super::sum_test_results(out), (11, 3, 1));
    }
}
