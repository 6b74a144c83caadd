use which::which;

/// Building this crate depends on the `bpf-linker` binary, which cargo cannot
/// express; rebuild when it changes so a relinked object is never stale.
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(e) => {
            println!("cargo:warning=bpf-linker not found on PATH ({e}); run `cargo xtask setup`")
        }
    }
}
