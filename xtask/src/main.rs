//! `cargo xtask …`: set-up, build, test, run and benchmarks for iolens.
//!
//! `setup` is what makes the README's two commands work on a fresh Debian
//! machine: it installs the Debian packages, links Debian's rustc (LLVM 22,
//! with core sources) into rustup for the kernel-side build, installs
//! bpf-linker, a venv with the deploy tests' pinned Kubernetes validator,
//! and virtme-ng for the kernel VMs (`vm.rs`). Every step checks first, so a
//! second run costs a few `dpkg-query`/`--version` calls.

mod bench_overhead;
mod bench_scale;
mod bench_workloads;
mod cpucap;
mod demo;
mod matrix;
mod util;
mod vm;

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use util::{cmd, is_root, repo_root, run};

/// Name under which Debian's /usr toolchain is linked into rustup. Must
/// match `BPF_TOOLCHAIN` in agent/build.rs.
const BPF_TOOLCHAIN: &str = "iolens-bpf";
const BPF_LINKER_VERSION: &str = "0.13.0";
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// The deploy tests' offline Kubernetes validator (PyPI), pinned with its
/// dependencies in tests/deploy/requirements.txt. Must match
/// `KUBERNETES_VALIDATE_VERSION` in tests/tests/deploy.rs.
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";
/// Where it is installed: outside the tree, so every clone shares it;
/// `$IOLENS_VENV` overrides (the tests read the same variable).
const VENV: &str = "/opt/iolens-venv";

/// Debian packages: the kernel-side toolchain, then what tests, benchmarks
/// and the workloads' peers use.
const PACKAGES: &[&str] = &[
    // Kernel side: rustc 1.96 on LLVM 22 with core sources (build-std), and
    // what bpf-linker needs to link against LLVM 22.
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    // Tests, oracles and peers.
    "bpftrace",
    "bpftool",
    "strace",
    "prometheus",
    "wrk",
    "nginx-light",
    "curl",
    // The TLS tests' certificates (tests/tests/web.rs).
    "openssl",
    "util-linux-extra",
    "tmux",
    // The kernel's syscall numbers (asm/unistd_32.h, unistd_64.h): the
    // oracle for the ia32 translation.
    "linux-libc-dev",
    // Deployment checks: `systemd-analyze security/verify/syscall-filter`
    // on the unit (also where systemd is not PID 1), and a venv for
    // kubernetes-validate.
    "systemd",
    "python3-venv",
];

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Set-up, build, test, run and benchmarks for iolens"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install what is missing: Debian packages, the kernel-side toolchain,
    /// bpf-linker. Idempotent; needs root when something is missing.
    Setup,
    /// Set-up, then build the agent (release).
    Build,
    /// Set-up, fmt check, clippy (warnings denied), unit and end-to-end tests.
    /// The end-to-end tests load real probes: run as root.
    Test {
        /// Run only one probe family's end-to-end tests
        /// (tests/tests/FAMILY.rs: syscalls, sched, waits, page_cache,
        /// io_uring, ...).
        #[arg(long)]
        family: Option<String>,
        /// Where the probe-loading suite runs: `host` (this machine's
        /// kernel, with lint, unit tests and everything else), `6.1` or
        /// `6.12` (Debian's kernels in a QEMU VM). Repeatable; default:
        /// all three. Without `host`, only the probe suites run, in the VMs.
        #[arg(long = "kernel", value_enum)]
        kernels: Vec<TestKernel>,
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name.
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
    /// Set-up, build, then start `iolens run` with the given arguments
    /// (defaults: metrics on 127.0.0.1:9464).
    Run {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build, then run the agent on 127.0.0.1:9464 and Prometheus on
    /// 127.0.0.1:9090 (dashboards/prometheus.yml) until Ctrl-C, for Grafana.
    Demo,
    /// Benchmarks (not timed tests): each runs a peer in the same run and
    /// prints ratios.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
    /// Run a command as root in a QEMU (TCG) VM on a Debian kernel, over the
    /// host's root filesystem, with a fresh ext4 disk at /mnt/iolens-disk
    /// (`IOLENS_TEST_DISK`); exits with the command's status.
    Vm(vm::Args),
    /// Internal: the benchmark's pinned syscall loop.
    #[command(name = "__syscall-loop", hide = true)]
    SyscallLoop {
        kind: String,
        calls: u64,
        cpu: usize,
    },
    /// Internal: `bench scale`'s helper, which forks and holds the
    /// processes the agent is measured with.
    #[command(name = "__scale-helper", hide = true)]
    ScaleHelper,
}

/// A kernel the probe suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TestKernel {
    Host,
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
}

impl TestKernel {
    fn vm(self) -> Option<vm::Kernel> {
        match self {
            TestKernel::Host => None,
            TestKernel::V6_1 => Some(vm::Kernel::V6_1),
            TestKernel::V6_12 => Some(vm::Kernel::V6_12),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// ns iolens and bpftrace add per event on pinned loops: read(), getppid(),
    /// a two-thread pipe ping-pong, io_uring NOPs.
    Overhead(bench_overhead::Args),
    /// Reactor/proactor servers vs nginx, filesend modes vs nginx sendfile.
    Workloads(bench_workloads::Args),
    /// Agent memory, scrape time and size, series and CPU with 1k-10k live
    /// processes for every --group-by, and repeated fork storms.
    Scale(bench_scale::Args),
}

fn dpkg_installed(pkg: &str) -> bool {
    std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
        .unwrap_or(false)
}

fn setup() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .chain(vm::PACKAGES)
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if !missing.is_empty() {
        if !is_root() {
            bail!(
                "these Debian packages are missing: {}; run `cargo xtask setup` as root (it installs them with apt-get)",
                missing.join(" ")
            );
        }
        eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
        run(cmd("apt-get").args(["update", "-qq"]))?;
        run(cmd("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }

    // Debian's rustc as a rustup toolchain for the kernel-side build.
    let linked = cmd("rustup")
        .args(["run", BPF_TOOLCHAIN, "rustc", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !linked {
        eprintln!("xtask: linking Debian's /usr toolchain into rustup as `{BPF_TOOLCHAIN}`");
        run(cmd("rustup").args(["toolchain", "link", BPF_TOOLCHAIN, "/usr"]))?;
    }

    let linker_ok = cmd("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false);
    if !linker_ok {
        eprintln!(
            "xtask: installing bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)"
        );
        run(cmd("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"))?;
    }

    vm::setup()?;

    let fuzz_ok = cmd("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION))
        .unwrap_or(false);
    if !fuzz_ok {
        eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (about a minute and a half)");
        run(cmd("cargo").args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ]))?;
    }

    let venv = std::env::var("IOLENS_VENV").unwrap_or_else(|_| VENV.to_owned());
    let validate_ok = cmd(&format!("{venv}/bin/kubernetes-validate"))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == KUBERNETES_VALIDATE_VERSION)
        .unwrap_or(false);
    if !validate_ok {
        if !std::path::Path::new(&venv).join("bin/pip").is_file() {
            eprintln!("xtask: making a Python venv at {venv} for the deploy tests' validators");
            run(cmd("python3").args(["-m", "venv", &venv]))
                .with_context(|| format!("making {venv} (as root, or set IOLENS_VENV)"))?;
        }
        eprintln!(
            "xtask: installing kubernetes-validate {KUBERNETES_VALIDATE_VERSION} into {venv}"
        );
        run(cmd(&format!("{venv}/bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check", "-r"])
            .arg(repo_root().join("tests/deploy/requirements.txt")))?;
    }
    Ok(())
}

/// A short coverage-guided run of the HTTP parser's fuzz target on its
/// committed corpus (new inputs go to a scratch directory, so the corpus in
/// the repository stays as reviewed). cargo-fuzz needs nightly's sanitizer
/// flags; the fuzz crate is its own workspace.
fn fuzz(seconds: u32) -> anyhow::Result<()> {
    let scratch = std::env::temp_dir().join(format!("iolens-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).context("creating the fuzz scratch corpus")?;
    let result = run(cargo()
        .args(["+nightly", "fuzz", "run", "http_parse"])
        .arg(&scratch)
        .arg("fuzz/corpus/http_parse")
        .arg("--")
        .arg(format!("-max_total_time={seconds}")));
    let _ = std::fs::remove_dir_all(&scratch);
    result.context("fuzzing the HTTP parser found a failure (see fuzz/artifacts)")
}

fn cargo() -> std::process::Command {
    let mut c = cmd("cargo");
    c.current_dir(repo_root());
    c
}

/// rustfmt.toml uses nightly-only options (import grouping); use nightly's
/// rustfmt when the machine has it, stable's otherwise.
fn fmt_check() -> anyhow::Result<()> {
    let nightly = cmd("rustup")
        .args(["run", "nightly", "rustfmt", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let mut c = cargo();
    if nightly {
        c.arg("+nightly");
    } else {
        eprintln!("xtask: nightly rustfmt not found; checking with stable rustfmt");
    }
    run(c.args(["fmt", "--all", "--check"]))
}

/// The release agent, `target/release/iolens` (the benches measure it).
pub(crate) fn build_release() -> anyhow::Result<()> {
    run(cargo().args(["build", "--release", "-p", "iolens"]))
}

fn test(family: Option<&str>, kernels: &[TestKernel], extra: &[String]) -> anyhow::Result<()> {
    if let Some(f) = family {
        let file = repo_root().join("tests/tests").join(format!("{f}.rs"));
        if !file.is_file() {
            bail!("no family `{f}`: there is no tests/tests/{f}.rs");
        }
    }
    let kernels: Vec<TestKernel> = if kernels.is_empty() {
        vec![TestKernel::Host, TestKernel::V6_1, TestKernel::V6_12]
    } else {
        let mut k = kernels.to_vec();
        k.dedup();
        k
    };
    let vms: Vec<vm::Kernel> = kernels.iter().filter_map(|k| k.vm()).collect();
    if let Some(f) = family
        && !vms.is_empty()
        && !matrix::PROBE_SUITES.contains(&f)
    {
        bail!("`{f}` loads no probes, so it does not run in the kernel VMs; add `--kernel host`");
    }
    let in_ci = std::env::var_os("CI").is_some_and(|v| v == "true");
    if in_ci && !is_root() {
        bail!("CI=true but not root: the probe-loading tests must run in CI; run as root");
    }
    setup()?;
    let mut results: Vec<matrix::KernelResult> = Vec::new();
    let mut fuzzed = Ok(());
    // The end-to-end tests start the agent binary; build it first so they
    // test this tree, and tell them where it is (the VMs inherit it).
    let bin = repo_root().join("target/debug/iolens");
    // SAFETY: single-threaded here; nothing reads the environment
    // concurrently.
    unsafe { std::env::set_var("IOLENS_BIN", &bin) };
    if kernels.contains(&TestKernel::Host) {
        fmt_check()?;
        lint()?;
        run(cargo().args(["build", "-p", "iolens", "--bins"]))?;
        let start = std::time::Instant::now();
        let output = util::run_tee(
            cargo()
                .arg("test")
                .args(match family {
                    Some(f) => vec!["-p", "iolens-tests", "--test", f],
                    None => vec!["--workspace", "--exclude", "iolens-ebpf"],
                })
                .arg("--no-fail-fast")
                .arg("--")
                .args(extra),
        )?;
        let (passed, failed, skipped) = util::sum_test_results(&output.stdout);
        results.push(matrix::KernelResult {
            kernel: "host".into(),
            release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|r| r.trim().to_owned())
                .unwrap_or_default(),
            passed,
            failed,
            skipped,
            ok: output.status.success(),
            wall_s: start.elapsed().as_secs_f64(),
        });
        if family.is_none() {
            fuzzed = fuzz(20);
        }
    } else {
        run(cargo().args(["build", "-p", "iolens", "--bins"]))?;
    }
    for k in vms {
        if !is_root() {
            bail!("the kernel VMs need root (run as root, or pass `--kernel host`)");
        }
        results.push(matrix::run_in_vm(k, family, extra)?);
    }
    // cargo's last line is a doc-test binary's "0 passed"; close with each
    // kernel's and the whole run's counts instead.
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for r in &results {
        println!(
            "tests on {} [{}]: {} passed, {} failed, {} skipped in {:.0} s{}",
            r.kernel,
            r.release,
            r.passed,
            r.failed,
            r.skipped,
            r.wall_s,
            if r.ok { "" } else { " (run failed)" }
        );
        passed += r.passed;
        failed += r.failed;
        skipped += r.skipped;
    }
    println!("tests: {passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 || results.iter().any(|r| !r.ok) {
        bail!("tests failed");
    }
    fuzzed?;
    if let Some(r) = results.iter().find(|r| r.passed == 0) {
        bail!("no test ran on {}", r.kernel);
    }
    Ok(())
}

/// Clippy with warnings denied, on the workspace and on the kernel side.
fn lint() -> anyhow::Result<()> {
    run(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "iolens-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Linted alone: with the workspace, feature unification would give its
    // no_std dependencies std. On the host target it needs panic=abort.
    run(cargo()
        .args([
            "clippy",
            "-p",
            "iolens-ebpf",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--target-dir",
            "target/clippy-ebpf",
            "--",
            "-D",
            "warnings",
        ])
        .env("RUSTFLAGS", "-C panic=abort"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Setup => setup(),
        Cmd::Build => setup().and_then(|()| build_release()),
        Cmd::Test {
            family,
            kernels,
            cargo_test_args,
        } => test(family.as_deref(), &kernels, &cargo_test_args),
        Cmd::Run { args } => setup().and_then(|()| build_release()).and_then(|()| {
            let bin = repo_root().join("target/release/iolens");
            let mut c = cmd(bin.to_str().context("non-UTF-8 repository path")?);
            c.arg("run").args(&args);
            util::exec(c)
        }),
        Cmd::Demo => demo::run_demo(),
        Cmd::Bench {
            which: Bench::Overhead(args),
        } => setup().and_then(|()| bench_overhead::run_bench(args)),
        Cmd::Bench {
            which: Bench::Workloads(args),
        } => bench_workloads::run(args),
        Cmd::Bench {
            which: Bench::Scale(args),
        } => bench_scale::run_bench(args),
        Cmd::Vm(args) => match vm::main(args) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Cmd::SyscallLoop { kind, calls, cpu } => bench_overhead::syscall_loop(&kind, calls, cpu),
        Cmd::ScaleHelper => bench_scale::helper(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
