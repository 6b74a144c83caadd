//! Reference workloads run under measurement: reactor and proactor servers,
//! a zero-copy file sender and a load generator.

pub mod http;

use clap::Subcommand;

/// `iolens workload …`
#[derive(Debug, Subcommand)]
pub enum WorkloadCmd {
    /// Placeholder until the workloads land.
    Placeholder,
}

/// Runs a workload to completion (servers: until SIGINT/SIGTERM).
pub fn run(cmd: WorkloadCmd) -> anyhow::Result<()> {
    match cmd {
        WorkloadCmd::Placeholder => anyhow::bail!("no workloads yet"),
    }
}
