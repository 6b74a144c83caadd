//! Reference workloads run under measurement: reactor and proactor servers,
//! a zero-copy file sender and a load generator.

pub mod filesend;
pub mod http;
pub mod proactor;

use clap::Subcommand;

/// `iolens workload …`
#[derive(Debug, Subcommand)]
pub enum WorkloadCmd {
    /// Placeholder until the workloads land.
    Placeholder,
    /// io_uring HTTP server in the Proactor pattern (thread-per-core rings).
    Proactor(proactor::Args),
    /// HTTP file server comparing data paths (read-write, mmap, sendfile,
    /// splice, O_DIRECT through io_uring).
    Filesend(filesend::Args),
}

/// Runs a workload to completion (servers: until SIGINT/SIGTERM).
pub fn run(cmd: WorkloadCmd) -> anyhow::Result<()> {
    match cmd {
        WorkloadCmd::Placeholder => anyhow::bail!("no workloads yet"),
        WorkloadCmd::Proactor(args) => proactor::run(args),
        WorkloadCmd::Filesend(args) => filesend::run(args),
    }
}
