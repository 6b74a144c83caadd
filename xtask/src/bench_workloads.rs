//! `cargo xtask bench workloads`: the reference servers against nginx.

/// Options for `cargo xtask bench workloads`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not yet implemented")
}
