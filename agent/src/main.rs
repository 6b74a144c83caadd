use std::process::ExitCode;

use clap::{Parser, Subcommand};
use iolens::workloads;

/// eBPF I/O observability agent: per-process bytes by path (through user space
/// or zero-copy), syscalls, context switches, page cache, epoll and io_uring,
/// exported as Prometheus metrics; plus reference I/O workloads to measure.
#[derive(Debug, Parser)]
#[command(name = "iolens", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run reference I/O workloads (servers, file sender, load generator).
    Workload {
        #[command(subcommand)]
        cmd: workloads::WorkloadCmd,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Workload { cmd } => workloads::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iolens: {e:#}");
            ExitCode::FAILURE
        }
    }
}
