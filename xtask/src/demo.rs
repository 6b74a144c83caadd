//! `cargo xtask demo`: the agent and a Prometheus scraping it, for pointing
//! Grafana at (dashboards/README.md). Both run until Ctrl-C.

use std::{
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::util::{have, is_root, repo_root, run};

/// Where dashboards/prometheus.yml expects the agent.
const AGENT_LISTEN: &str = "127.0.0.1:9464";
const PROMETHEUS_LISTEN: &str = "127.0.0.1:9090";

/// A child killed (and reaped) when the demo ends, however it ends.
struct Guard(Child, &'static str);

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its pid; SIGTERM lets both
        // programs shut down cleanly (the agent detaches its probes).
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("xtask: {} did not stop on SIGTERM; killing it", self.1);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run_demo() -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "`cargo xtask demo` starts the agent, which loads eBPF programs: run it as root (sudo -E cargo xtask demo)"
        );
    }
    // After the root check, so a non-root run gets that message rather
    // than one from a set-up step; set-up installs prometheus if missing.
    crate::setup()?;
    if !have("prometheus") {
        bail!(
            "prometheus is not installed: run `cargo xtask setup` (it installs Debian's prometheus package) or `apt-get install prometheus`"
        );
    }
    let root = repo_root();
    let config = root.join("dashboards/prometheus.yml");
    if !config.is_file() {
        bail!("{} is missing", config.display());
    }
    run(Command::new("cargo")
        .current_dir(&root)
        .args(["build", "--release", "-p", "iolens"]))?;

    // Ctrl-C reaches the whole foreground process group: the children stop
    // on their own; this flag makes us stop waiting and reap them.
    let stop = Arc::new(AtomicBool::new(false));
    signal_flag(&stop)?;

    let data = std::env::temp_dir().join("iolens-demo-prometheus");
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;

    let agent = Command::new(root.join("target/release/iolens"))
        .args(["run", "--listen", AGENT_LISTEN])
        .stdin(Stdio::null())
        .spawn()
        .context("starting target/release/iolens")?;
    let mut agent = Guard(agent, "iolens");
    let prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address={PROMETHEUS_LISTEN}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .spawn()
        .context("starting prometheus")?;
    let mut prometheus = Guard(prometheus, "prometheus");

    println!("iolens metrics:  http://{AGENT_LISTEN}/metrics");
    println!(
        "prometheus:      http://{PROMETHEUS_LISTEN}/ (data in {})",
        data.display()
    );
    println!(
        "grafana:         add a Prometheus datasource with URL http://{PROMETHEUS_LISTEN}, then import {}/dashboards/*.json (see dashboards/README.md)",
        root.display()
    );
    println!("Ctrl-C stops both.");

    while !stop.load(Ordering::Relaxed) {
        if let Some(status) = agent.0.try_wait().context("waiting for iolens")? {
            bail!("iolens exited: {status}");
        }
        if let Some(status) = prometheus.0.try_wait().context("waiting for prometheus")? {
            bail!("prometheus exited: {status} (is {PROMETHEUS_LISTEN} already in use?)");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("xtask: stopping iolens and prometheus");
    Ok(())
}

static STOP: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    if let Some(flag) = STOP.get() {
        flag.store(true, Ordering::Relaxed);
    }
}

/// Sets `flag` on SIGINT and SIGTERM instead of dying, so the guards'
/// drops run and no child outlives the demo.
fn signal_flag(flag: &Arc<AtomicBool>) -> anyhow::Result<()> {
    if STOP.set(Arc::clone(flag)).is_err() {
        bail!("signal handler installed twice");
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only performs an atomic store through a
        // OnceLock that is set before the handler is installed.
        let prev = unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
        if prev == libc::SIG_ERR {
            bail!("installing a handler for signal {sig}");
        }
    }
    Ok(())
}
