//! `cargo xtask vm`: run a command as root inside a QEMU VM on one of
//! Debian's kernels, over the host's root filesystem, with a fresh ext4
//! disk.
//!
//! The kernel is Debian's own package (`linux-image-…-amd64-unsigned`), the
//! newest of its series in the apt lists, fetched once and unpacked under
//! `target/kernels/`, its modules indexed with depmod. virtme-ng (from PyPI,
//! in a venv set up by `cargo xtask setup`) boots it under TCG (a nested KVM
//! guest hangs after decompression on this kind of machine) with the host's
//! root shared read-only over 9p and writable overlays on /tmp, /etc, /var…
//! so the cargo-built binaries and the host's tools are all there.
//!
//! 9p and the tmpfs overlays do not have a disk's page cache, so every VM
//! also gets a fresh ext4 image as a virtio-blk disk, mounted at
//! [`GUEST_DISK`] and named to the command in `IOLENS_TEST_DISK`. Debian
//! builds virtio_blk and ext4 as modules; the guest script loads them.

use std::{
    ffi::OsString,
    fmt::Write as _,
    io::{BufRead as _, BufReader, Read, Write},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::util::{cmd, have, is_root, repo_root, run};

/// virtme-ng's venv. Outside the repository so every worktree shares it.
pub const VNG_VENV: &str = "/opt/iolens-vng";
pub const VNG_VERSION: &str = "1.42";
/// Where the guest mounts the ext4 disk; exported as `IOLENS_TEST_DISK`.
pub const GUEST_DISK: &str = "/mnt/iolens-disk";
const DISK_LABEL: &str = "iolens-disk";

/// Debian packages the VMs need: QEMU, depmod (virtme-ng and the guest's
/// modprobe), mkfs.ext4, udev (virtme-ng-init needs udevd to name its
/// virtio-serial ports; without it the command's stdout and exit status
/// are lost), findfs (util-linux, essential),
/// `file` (virtme-ng reads the kernel's version with it), busybox
/// (virtme-ng builds the initramfs that loads Debian's 9p and virtio
/// modules from it: "initramfs is needed, and no busybox was found" on a
/// machine without it), `bc` (the guest script's timings) and the venv.
pub const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "bc",
    "kmod",
    "e2fsprogs",
    "udev",
    "file",
    "python3-venv",
];

/// The guest's only udev rule. virtme-ng-init finds the command's stdio
/// and exit-status ports by the names udev gives them; with the host's
/// full rule set, coldplug under TCG (module autoloading, persistent names
/// for every device) took 56 s of an 82 s boot, with this rule 3 s. The
/// guest script loads the modules it needs itself.
const UDEV_RULES: &str = "SUBSYSTEM==\"virtio-ports\", KERNEL==\"vport*\", ATTR{name}==\"?*\", \
                          SYMLINK+=\"virtio-ports/$attr{name}\"\n";

/// A Debian kernel series that CI boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kernel {
    /// Debian 12's kernel (`linux-image-6.1.0-NN-amd64-unsigned`).
    #[value(name = "6.1")]
    V6_1,
    /// Debian 13's kernel, as bookworm packages it
    /// (`linux-image-6.12.NNN+debNN-amd64-unsigned`).
    #[value(name = "6.12")]
    V6_12,
}

impl Kernel {
    pub fn series(self) -> &'static str {
        match self {
            Kernel::V6_1 => "6.1",
            Kernel::V6_12 => "6.12",
        }
    }

    /// `apt-cache search` pattern for the series' unsigned generic images.
    fn apt_pattern(self) -> &'static str {
        match self {
            Kernel::V6_1 => r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$",
            Kernel::V6_12 => r"^linux-image-6\.12\.[0-9]+\+deb[0-9]+-amd64-unsigned$",
        }
    }

    /// The sort key of a package name of this series (the ABI number for
    /// 6.1, the stable release and Debian release for 6.12), or None if
    /// the name is not of the series.
    fn rank(self, name: &str) -> Option<(u64, u64)> {
        let mid = name
            .strip_prefix("linux-image-")?
            .strip_suffix("-amd64-unsigned")?;
        match self {
            Kernel::V6_1 => Some((mid.strip_prefix("6.1.0-")?.parse().ok()?, 0)),
            Kernel::V6_12 => {
                let (patch, deb) = mid.strip_prefix("6.12.")?.split_once("+deb")?;
                Some((patch.parse().ok()?, deb.parse().ok()?))
            }
        }
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.series())
    }
}

/// A kernel package unpacked and ready to boot.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub package: String,
    pub version: String,
    /// `uname -r` in the guest.
    pub release: String,
    pub vmlinuz: PathBuf,
}

/// How to run a VM.
#[derive(Debug, Clone)]
pub struct Vm {
    pub kernel: Kernel,
    /// Guest memory, as QEMU's `-m` takes it.
    pub mem: String,
    pub cpus: u32,
    /// Size of the ext4 disk image, in MiB (sparse on the host).
    pub disk_mib: u64,
    /// Kill the VM when the command has not finished after this long.
    pub timeout: Duration,
    /// Show the guest's console (boot log) on stderr.
    pub verbose: bool,
    /// Run every vCPU in one host thread (QEMU's `-accel tcg,thread=single`)
    /// instead of a thread each; see `Vm::new`.
    pub tcg_single_thread: bool,
}

impl Vm {
    pub fn new(kernel: Kernel) -> Self {
        Vm {
            kernel,
            mem: "2G".into(),
            cpus: 2,
            disk_mib: 1024,
            timeout: Duration::from_secs(3600),
            verbose: false,
            // Every vCPU in one host thread. With a thread per vCPU
            // (QEMU's default) both Debian kernels die of a stale int3 in
            // patched kernel text: a vCPU runs code the kernel had already
            // patched back (a static key flip; the sched_switch
            // tracepoint's whenever a probe attaches). 6.12 oopsed now and
            // then in CI; `xtask/vm/poke-stress.sh` kills 6.12 and hangs 6.1
            // within 12 s under `multi`, and neither under `single`. The
            // suites take a little longer (fresh-clone CI: 6.1 415-503 s
            // against 410 with a thread each, 6.12 453 s against 375), the
            // guest's own work being one test at a time.
            tcg_single_thread: true,
        }
    }
}

/// A finished VM run.
#[derive(Debug)]
pub struct VmRun {
    /// The command's exit status (or virtme-ng's, if the VM failed).
    pub status: ExitStatus,
    /// The command's stdout, also echoed as it ran.
    pub stdout: String,
    pub kernel: Prepared,
    pub wall: Duration,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Debian kernel series to boot.
    #[arg(long, value_enum)]
    kernel: Kernel,
    /// Guest memory (QEMU `-m`).
    #[arg(long, default_value = "2G")]
    mem: String,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Size of the guest's ext4 disk in MiB.
    #[arg(long, default_value_t = 1024)]
    disk_mib: u64,
    /// Seconds before the VM is killed.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    /// Show the guest's boot log.
    #[arg(long, short)]
    verbose: bool,
    /// QEMU's TCG threads: `single` (every vCPU in one host thread, the
    /// default) or `multi` (a thread each: faster, but a vCPU can miss the
    /// kernel's patching of its own text and die; see docs/kernels.md).
    #[arg(long, value_enum, default_value = "single")]
    tcg_thread: TcgThread,
    /// The command to run in the guest (as root, in the host's cwd).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TcgThread {
    Single,
    Multi,
}

/// `cargo xtask vm`: exits with the guest command's status.
pub fn main(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let vm = Vm {
        mem: args.mem,
        cpus: args.cpus,
        disk_mib: args.disk_mib,
        timeout: Duration::from_secs(args.timeout),
        verbose: args.verbose,
        tcg_single_thread: args.tcg_thread != TcgThread::Multi,
        ..Vm::new(args.kernel)
    };
    let done = run_vm(&vm, &args.command)?;
    let code = done
        .status
        .code()
        .map(|c| u8::try_from(c).unwrap_or(1))
        .unwrap_or(128);
    Ok(std::process::ExitCode::from(code))
}

/// Installs what the VMs need: [`PACKAGES`] are installed with the rest of
/// setup's Debian packages; this makes virtme-ng's venv. Cheap when done.
pub fn setup() -> anyhow::Result<()> {
    if vng_version().is_some_and(|v| v == VNG_VERSION) {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "virtme-ng {VNG_VERSION} is missing from {VNG_VENV}; run `cargo xtask setup` as root"
        );
    }
    // Debian's python3, not whatever python3 comes first on PATH (pyenv):
    // python3-venv is what setup installed for it.
    eprintln!("xtask: installing virtme-ng {VNG_VERSION} in {VNG_VENV}");
    run(cmd("/usr/bin/python3").args(["-m", "venv", VNG_VENV]))?;
    run(cmd(&format!("{VNG_VENV}/bin/pip")).args([
        "install",
        "-q",
        "--disable-pip-version-check",
        &format!("virtme-ng=={VNG_VERSION}"),
    ]))?;
    match vng_version() {
        Some(v) if v == VNG_VERSION => Ok(()),
        other => bail!("after installing, {VNG_VENV}/bin/vng reports version {other:?}"),
    }
}

fn vng_version() -> Option<String> {
    let out = Command::new(format!("{VNG_VENV}/bin/vng"))
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "virtme-ng 1.42"
    text.split_whitespace().nth(1).map(str::to_owned)
}

/// Fails with what to do when a tool the VM runner needs is missing.
fn check_tools() -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for (tool, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("depmod", "kmod"),
        ("mkfs.ext4", "e2fsprogs"),
        ("file", "file"),
        ("busybox", "busybox-static"),
        ("bc", "bc"),
        ("dpkg", "dpkg"),
        ("apt-get", "apt"),
    ] {
        if !have(tool) {
            missing.push(format!("{tool} ({package})"));
        }
    }
    if !Path::new("/lib/systemd/systemd-udevd").exists() {
        missing.push("systemd-udevd (udev)".into());
    }
    if vng_version().is_none_or(|v| v != VNG_VERSION) {
        missing.push(format!("virtme-ng {VNG_VERSION} in {VNG_VENV}"));
    }
    if !missing.is_empty() {
        bail!(
            "the VM runner needs: {}; run `cargo xtask setup` as root",
            missing.join(", ")
        );
    }
    Ok(())
}

fn kernels_dir() -> PathBuf {
    repo_root().join("target/kernels")
}

/// The newest package of the series in the apt lists, with its candidate
/// version. Refreshes the lists once if they know no such package.
fn newest_package(kernel: Kernel) -> anyhow::Result<(String, String)> {
    let search = || -> anyhow::Result<Option<String>> {
        let out = cmd("apt-cache")
            .args(["search", "--names-only", kernel.apt_pattern()])
            .output()
            .context("running apt-cache search")?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|name| kernel.rank(name).map(|r| (r, name.to_owned())))
            .max()
            .map(|(_, name)| name))
    };
    let name = match search()? {
        Some(n) => n,
        None if is_root() => {
            eprintln!("xtask: vm: no {kernel} kernel in the apt lists; running apt-get update");
            run(cmd("apt-get").stdout(to_stderr()?).args(["update", "-qq"]))?;
            search()?.with_context(|| {
                format!(
                    "apt knows no package matching {} even after apt-get update",
                    kernel.apt_pattern()
                )
            })?
        }
        None => bail!(
            "apt knows no package matching {}; run `apt-get update` as root",
            kernel.apt_pattern()
        ),
    };
    let out = cmd("apt-cache")
        .args(["show", "--no-all-versions", &name])
        .output()
        .context("running apt-cache show")?;
    let version = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .map(str::to_owned)
        .with_context(|| format!("apt-cache show {name} gives no version"))?;
    Ok((name, version))
}

/// The cache directory of one package version.
fn cache_dir(package: &str, version: &str) -> PathBuf {
    kernels_dir().join(format!("{package}_{}", version.replace([':', '~'], "_")))
}

/// Fetches and unpacks the newest kernel of the series, once. Falls back to
/// the newest one already cached when apt cannot name one (offline).
pub fn prepare(kernel: Kernel) -> anyhow::Result<Prepared> {
    let (package, version) = match newest_package(kernel) {
        Ok(pv) => pv,
        Err(e) => match newest_cached(kernel) {
            Some(p) => {
                eprintln!(
                    "xtask: vm: {e:#}; using the cached {} {}",
                    p.package, p.version
                );
                return Ok(p);
            }
            None => return Err(e),
        },
    };
    let dir = cache_dir(&package, &version);
    if let Some(p) = load_cached(&dir) {
        return Ok(p);
    }
    fetch(&package, &version, &dir)?;
    load_cached(&dir).with_context(|| format!("{} is incomplete after unpacking", dir.display()))
}

fn fetch(package: &str, version: &str, dir: &Path) -> anyhow::Result<()> {
    let staging = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    eprintln!("xtask: vm: fetching {package} {version}");
    run(cmd("apt-get")
        .stdout(to_stderr()?)
        .current_dir(&staging)
        // The download directory is root's; do not drop to _apt for it.
        .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
        .arg(format!("{package}={version}")))?;
    let deb = std::fs::read_dir(&staging)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", staging.display()))?;
    let root = staging.join("root");
    run(cmd("dpkg")
        .stdout(to_stderr()?)
        .arg("-x")
        .arg(&deb)
        .arg(&root))?;
    let release = module_release(&root)?;
    // The package's postinst would run depmod; dpkg -x does not.
    run(cmd("depmod")
        .stdout(to_stderr()?)
        .args(["-a", "-b"])
        .arg(&root)
        .arg(&release))?;
    std::fs::remove_file(&deb)?;
    std::fs::write(
        staging.join("package"),
        format!("{package}\n{version}\n{release}\n"),
    )?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&staging, dir)
        .with_context(|| format!("moving {} to {}", staging.display(), dir.display()))?;
    Ok(())
}

/// Our stderr, for a child's stdout: `cargo xtask vm`'s stdout is the
/// guest command's alone.
fn to_stderr() -> anyhow::Result<Stdio> {
    use std::os::fd::AsFd as _;
    Ok(Stdio::from(std::io::stderr().as_fd().try_clone_to_owned()?))
}

/// The one kernel release under lib/modules of an unpacked package.
fn module_release(root: &Path) -> anyhow::Result<String> {
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.is_dir())
        .with_context(|| format!("no lib/modules in {}", root.display()))?;
    let mut releases: Vec<String> = std::fs::read_dir(&modules)?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    match releases.len() {
        1 => Ok(releases.remove(0)),
        _ => bail!(
            "expected one kernel under {}, found {releases:?}",
            modules.display()
        ),
    }
}

fn load_cached(dir: &Path) -> Option<Prepared> {
    let text = std::fs::read_to_string(dir.join("package")).ok()?;
    let mut lines = text.lines();
    let (package, version, release) = (lines.next()?, lines.next()?, lines.next()?);
    let vmlinuz = dir.join("root/boot").join(format!("vmlinuz-{release}"));
    let root = dir.join("root");
    let indexed = ["lib/modules", "usr/lib/modules"]
        .iter()
        .any(|d| root.join(d).join(release).join("modules.dep").is_file());
    (vmlinuz.is_file() && indexed).then(|| Prepared {
        package: package.into(),
        version: version.into(),
        release: release.into(),
        vmlinuz,
    })
}

fn newest_cached(kernel: Kernel) -> Option<Prepared> {
    std::fs::read_dir(kernels_dir())
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| load_cached(&e.path()))
        .filter_map(|p| kernel.rank(&p.package).map(|r| (r, p)))
        .max_by_key(|(r, _)| *r)
        .map(|(_, p)| p)
}

/// POSIX shell quoting.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script the guest runs: load the disk's modules, mount the disk,
/// pass the host's IOLENS_*/RUST_* variables and CI on, run the command in the
/// host's cwd and exit with its status.
fn guest_script(cwd: &Path, command: &[String], env: &[(String, String)]) -> String {
    let mut s = String::from("#!/bin/sh\n# Written by `cargo xtask vm`.\n");
    let _ = writeln!(
        s,
        r#"echo "xtask: vm: guest up $(cut -d' ' -f1 /proc/uptime) s, $(uname -r)" >&2
modprobe -a virtio_blk ext4 || {{ echo "xtask: vm: cannot load virtio_blk/ext4" >&2; exit 125; }}
i=0; until dev=$(findfs LABEL={DISK_LABEL} 2>/dev/null); do
  i=$((i+1)); [ $i -lt 100 ] || {{ echo "xtask: vm: no disk labelled {DISK_LABEL}" >&2; exit 125; }}; sleep 0.1
done
mkdir -p {GUEST_DISK} && mount -t ext4 "$dev" {GUEST_DISK} || {{ echo "xtask: vm: cannot mount $dev" >&2; exit 125; }}
export IOLENS_TEST_DISK={GUEST_DISK}"#
    );
    for (k, v) in env {
        let _ = writeln!(s, "export {k}={}", sh_quote(v));
    }
    let _ = writeln!(s, "cd {} || exit 125", sh_quote(&cwd.to_string_lossy()));
    let line: Vec<String> = command.iter().map(|a| sh_quote(a)).collect();
    let _ = writeln!(s, "{}\nrc=$?", line.join(" "));
    let _ = writeln!(s, "umount {GUEST_DISK} 2>/dev/null\nexit $rc");
    s
}

/// Boots the VM, runs `command`, returns its status and stdout.
pub fn run_vm<S: AsRef<str>>(vm: &Vm, command: &[S]) -> anyhow::Result<VmRun> {
    let command: Vec<String> = command.iter().map(|a| a.as_ref().to_owned()).collect();
    if command.is_empty() {
        bail!("no command to run in the VM");
    }
    if !is_root() {
        bail!(
            "the VM runner needs root: it fetches kernels with apt, and vng runs the guest command as the host user, which must be root"
        );
    }
    check_tools()?;
    let kernel = prepare(vm.kernel)?;
    eprintln!(
        "xtask: vm: kernel {} ({} {})",
        kernel.release, kernel.package, kernel.version
    );

    // Per-run scratch: the disk image and the guest script, both on the
    // host's filesystem (the guest sees it over 9p).
    let scratch =
        repo_root()
            .join("target/vm")
            .join(format!("{}-{}", vm.kernel, std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let result = boot(vm, &kernel, &command, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn boot(vm: &Vm, kernel: &Prepared, command: &[String], scratch: &Path) -> anyhow::Result<VmRun> {
    let disk = scratch.join("disk.img");
    let script = scratch.join("run.sh");
    let shown = |p: &Path| -> anyhow::Result<String> {
        let s = p.to_str().context("non-UTF-8 path")?;
        if s.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            bail!("{s}: the VM runner cannot pass paths with spaces or quotes to QEMU");
        }
        Ok(s.to_owned())
    };
    let rules = scratch.join("udev-rules");
    std::fs::create_dir_all(&rules)?;
    std::fs::write(rules.join("50-iolens-vm.rules"), UDEV_RULES)?;
    let rules_s = shown(&rules)?;
    let disk_s = shown(&disk)?;
    let script_s = shown(&script)?;

    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(vm.disk_mib << 20))
        .with_context(|| format!("creating {}", disk.display()))?;
    let mkfs = cmd("mkfs.ext4")
        .args(["-q", "-F", "-L", DISK_LABEL])
        .arg(&disk)
        .output()
        .context("running mkfs.ext4")?;
    if !mkfs.status.success() {
        bail!(
            "mkfs.ext4 {} failed: {}",
            disk.display(),
            String::from_utf8_lossy(&mkfs.stderr)
        );
    }

    let cwd = std::env::current_dir().context("the current directory")?;
    let mut env: Vec<(String, String)> = std::env::vars()
        // CI=true too: the tests refuse to skip anything under it.
        .filter(|(k, _)| k.starts_with("IOLENS_") || k.starts_with("RUST_") || k == "CI")
        .filter(|(k, _)| k != "IOLENS_TEST_DISK" && k != "IOLENS_KERNEL_CONFIG")
        .collect();
    // The booted kernel's config (Debian's kernels have no /proc/config.gz,
    // and the host's /boot has the host kernel's).
    let config = kernel
        .vmlinuz
        .with_file_name(format!("config-{}", kernel.release));
    if config.is_file() {
        env.push((
            "IOLENS_KERNEL_CONFIG".to_owned(),
            config.to_string_lossy().into_owned(),
        ));
    }
    std::fs::write(&script, guest_script(&cwd, command, &env))
        .with_context(|| format!("writing {}", script.display()))?;

    let mut path = OsString::from(format!("{VNG_VENV}/bin:"));
    path.push(std::env::var_os("PATH").unwrap_or_default());
    let mut c = Command::new(format!("{VNG_VENV}/bin/vng"));
    c.env("PATH", path)
        .arg("--run")
        .arg(&kernel.vmlinuz)
        .args(["--disable-kvm", "--memory", &vm.mem])
        // 9p, not virtiofs: Debian 12's QEMU ships the old C virtiofsd,
        // which vng waits for 3.1 s before falling back to 9p anyway.
        .arg("--force-9p")
        .args(["--cpus", &vm.cpus.to_string()])
        .arg("--cwd")
        .arg(&cwd)
        // A writable /mnt for the disk's mount point.
        .arg("--overlay-rwdir=/mnt")
        // udev with only the rule virtme-ng-init needs (see UDEV_RULES).
        .arg(format!("--rodir=/usr/lib/udev/rules.d={rules_s}"));
    if vm.verbose {
        c.arg("--verbose");
    }
    // The disk: raw, with a serial udev names it by. --qemu-opts must come
    // last; vng passes it through a shell, hence the path check above.
    let accel = if vm.tcg_single_thread {
        "-accel tcg,thread=single "
    } else {
        ""
    };
    c.arg(format!(
        "--qemu-opts={accel}-drive if=none,id=iolensdisk,format=raw,file={disk_s} \
             -device virtio-blk-pci,drive=iolensdisk,serial={DISK_LABEL}"
    ))
    .args(["--", "sh", &script_s])
    // vng runs qemu as a child: one group to kill on timeout.
    .process_group(0)
    .stdin(Stdio::null())
    // Piped, never a file: QEMU opens /proc/self/fd/1 and /2 afresh,
    // and two opens of one file would overwrite each other's output.
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());

    eprintln!(
        "xtask: vm: booting {} under TCG ({} CPUs{}, {}), running: {}",
        kernel.release,
        vm.cpus,
        if vm.tcg_single_thread {
            " in one host thread"
        } else {
            ""
        },
        vm.mem,
        command.join(" ")
    );
    let start = Instant::now();
    let mut child = c.spawn().context("starting vng")?;
    let out = child.stdout.take().context("vng stdout")?;
    let err = child.stderr.take().context("vng stderr")?;
    let out_thread = thread::spawn(move || -> String {
        let mut kept = String::new();
        let me = std::io::stdout();
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = writeln!(me.lock(), "{line}");
            kept.push_str(&line);
            kept.push('\n');
        }
        kept
    });
    let err_thread = thread::spawn(move || forward(err, std::io::stderr()));

    let status = wait_with_timeout(&mut child, vm.timeout)?;
    let stdout = out_thread.join().unwrap_or_default();
    let _ = err_thread.join();
    let wall = start.elapsed();
    let status = match status {
        Some(s) => s,
        None => bail!(
            "the {} VM did not finish within {} s; killed it",
            kernel.release,
            vm.timeout.as_secs()
        ),
    };
    match status.code() {
        Some(125) => eprintln!("xtask: vm: the guest could not set up its disk (see above)"),
        Some(255) => eprintln!(
            "xtask: vm: vng exited 255: the VM may have failed to boot (rerun with --verbose)"
        ),
        _ => {}
    }
    eprintln!(
        "xtask: vm: {} ({} {}) finished in {:.1} s: {status}",
        kernel.release,
        kernel.package,
        kernel.version,
        wall.as_secs_f64()
    );
    Ok(VmRun {
        status,
        stdout,
        kernel: kernel.clone(),
        wall,
    })
}

fn forward(mut from: impl Read, mut to: impl Write) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// Waits for the child; on timeout kills its process group and returns None.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().context("waiting for vng")? {
            return Ok(Some(s));
        }
        if Instant::now() >= deadline {
            let pgid = i32::try_from(child.id()).context("pid")?;
            // SAFETY: kill has no memory preconditions; the group is the
            // one this process made for vng and its QEMU.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_package_names() {
        let k = Kernel::V6_1;
        assert_eq!(k.rank("linux-image-6.1.0-57-amd64-unsigned"), Some((57, 0)));
        assert_eq!(k.rank("linux-image-6.1.0-57-cloud-amd64-unsigned"), None);
        let k = Kernel::V6_12;
        assert_eq!(
            k.rank("linux-image-6.12.118+deb12-amd64-unsigned"),
            Some((118, 12))
        );
        assert_eq!(k.rank("linux-image-6.12.118+deb12-rt-amd64-unsigned"), None);
        assert_eq!(k.rank("linux-image-6.1.0-57-amd64-unsigned"), None);
    }

    #[test]
    fn quotes_for_sh() {
        assert_eq!(sh_quote("target/debug/iolens"), "target/debug/iolens");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }
}
