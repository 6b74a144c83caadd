//! Reference workloads run under measurement: reactor and proactor servers,
//! a zero-copy file sender and a load generator.

pub mod demux;
pub mod http;
pub mod loadgen;
pub mod reactor;
pub mod sys;

use clap::Subcommand;

/// `iolens workload …`
#[derive(Debug, Subcommand)]
pub enum WorkloadCmd {
    /// HTTP/1.1 server on an epoll/poll/select reactor (single, pool, multi, reuseport).
    Reactor(reactor::Args),
    /// HTTP/1.1 load generator: closed loop or constant rate, latency percentiles.
    Load(loadgen::Args),
}

/// Runs a workload to completion (servers: until SIGINT/SIGTERM).
pub fn run(cmd: WorkloadCmd) -> anyhow::Result<()> {
    match cmd {
        WorkloadCmd::Reactor(args) => reactor::run(args),
        WorkloadCmd::Load(args) => loadgen::run(args),
    }
}
