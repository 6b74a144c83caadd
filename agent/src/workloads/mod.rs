//! Reference workloads run under measurement: reactor and proactor servers,
//! a zero-copy file sender and a load generator.

pub mod demux;
pub mod filesend;
pub mod http;
pub mod loadgen;
pub mod proactor;
pub mod reactor;
pub mod sys;

use clap::Subcommand;

/// `iolens workload …`
#[derive(Debug, Subcommand)]
pub enum WorkloadCmd {
    /// HTTP/1.1 server on an epoll/poll/select reactor (single, pool, multi, reuseport).
    Reactor(reactor::Args),
    /// io_uring HTTP server in the Proactor pattern (thread-per-core rings).
    Proactor(proactor::Args),
    /// HTTP file server comparing data paths (read-write, mmap, sendfile,
    /// splice, O_DIRECT through io_uring).
    Filesend(filesend::Args),
    /// HTTP/1.1 load generator: closed loop or constant rate, latency percentiles.
    Load(loadgen::Args),
}

/// Runs a workload to completion (servers: until SIGINT/SIGTERM).
pub fn run(cmd: WorkloadCmd) -> anyhow::Result<()> {
    match cmd {
        WorkloadCmd::Reactor(args) => reactor::run(args),
        WorkloadCmd::Proactor(args) => proactor::run(args),
        WorkloadCmd::Filesend(args) => filesend::run(args),
        WorkloadCmd::Load(args) => loadgen::run(args),
    }
}
