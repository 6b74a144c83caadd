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
