use std::process::ExitCode;

use clap::{Parser, Subcommand};
use iolens::{
    agent::{self, RunArgs, UsageError},
    compare::{self, CompareArgs},
    top::{self, TopArgs},
    workloads::{self, sys::ListenError},
};

/// eBPF I/O observability agent: per-process bytes by path (through user space
/// or zero-copy), syscalls and errors, exported as Prometheus metrics; plus
/// reference I/O workloads to measure.
///
/// Logging goes to stderr; set the level with RUST_LOG (default: info).
#[derive(Debug, Parser)]
#[command(name = "iolens", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Load the probes and serve Prometheus metrics until SIGINT/SIGTERM.
    /// Needs root (or CAP_BPF and CAP_PERFMON).
    Run(RunArgs),
    /// Check that this machine can run iolens: privileges, tracefs, and
    /// that every probe loads and attaches. Prints per probe the variant
    /// this kernel gets and its verifier figures, and per family the
    /// mechanisms and what is lost and why. Exits non-zero if any family
    /// is degraded.
    Check {
        /// Fail at load, before printing, when a family is degraded.
        #[arg(long)]
        strict: bool,
    },
    /// Run the reference workloads one after another under the probes and
    /// report, per request and per MiB, what each I/O model cost its own
    /// process: CPU, syscalls, context switches, copies, page cache, wakeups.
    /// Needs root.
    Compare(CompareArgs),
    /// A live terminal view, one row per process: bytes/s through user space
    /// and zero-copy, copies per byte, syscalls, context switches, CPU,
    /// time slept in syscalls, disk bytes, page-cache hits, epoll and
    /// io_uring efficiency. Loads the probes
    /// here (root), or reads a running agent with --url (no privileges).
    Top(TopArgs),
    /// Run reference I/O workloads (servers, file sender, load generator).
    Workload {
        #[command(subcommand)]
        cmd: workloads::WorkloadCmd,
    },
}

fn init_logging() {
    use std::io::IsTerminal as _;

    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // aya logs through `log`; tracing-subscriber's default features bridge it.
    // Colours only for a person at a terminal, not in log files.
    let _ = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.cmd {
        Cmd::Run(args) => agent::run(args),
        Cmd::Check { strict } => agent::check(strict),
        Cmd::Workload { cmd } => workloads::run(cmd),
        Cmd::Compare(args) => compare::run(args),
        Cmd::Top(args) => top::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Errors the user fixes by starting differently: one line, exit 2.
        Err(e)
            if e.downcast_ref::<UsageError>().is_some()
                || matches!(
                    e.downcast_ref::<ListenError>(),
                    Some(ListenError::AddrInUse(_))
                ) =>
        {
            eprintln!("iolens: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("iolens: {e:#}");
            ExitCode::FAILURE
        }
    }
}
