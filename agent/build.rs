//! Builds the kernel side (`iolens-ebpf`) with aya-build and leaves the
//! object in OUT_DIR for `include_bytes_aligned!`.
//!
//! The kernel side needs `-Z build-std=core` for bpfel-unknown-none. It is
//! built with Debian's rustc (LLVM 22, core sources in /usr/lib/rustlib/src),
//! linked into rustup as the toolchain named below by `cargo xtask setup`,
//! with RUSTC_BOOTSTRAP=1 so that stable rustc accepts `-Z`.

use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// Must match `BPF_TOOLCHAIN` in xtask.
const BPF_TOOLCHAIN: &str = "iolens-bpf";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=IOLENS_BPF_TOOLCHAIN");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    if env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v == "true") {
        // User-space-only builds (editing workloads without bpf-linker): an
        // empty object, which the agent refuses to load with a clear error.
        fs::write(out_dir.join("iolens"), b"").context("writing placeholder object")?;
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "iolens-ebpf")
        .ok_or_else(|| anyhow!("iolens-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let toolchain = env::var("IOLENS_BPF_TOOLCHAIN").unwrap_or_else(|_| BPF_TOOLCHAIN.to_owned());
    // SAFETY: build scripts are single-threaded at this point; aya-build reads
    // this to decide on `-Z build-std=core` and passes it to the child cargo.
    unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
    .with_context(|| {
        format!("building the eBPF programs with toolchain `{toolchain}` failed; run `cargo xtask setup`")
    })
}
