//! `cargo xtask bench overhead`: what the probes cost the traced process.

/// Options for `cargo xtask bench overhead`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not yet implemented")
}
