//! The deployment files under deploy/: the systemd unit's hardening score
//! and syntax, the agent running in (an emulation of) that unit's sandbox,
//! the Kubernetes manifests against the Kubernetes schemas (offline), the
//! ServiceMonitor against its CRD's fields, and the Prometheus example
//! config through promtool.
//!
//! Tools: systemd-analyze (Debian's systemd), promtool (prometheus), and a
//! venv with kubernetes-validate at $IOLENS_VENV or /opt/iolens-venv; all
//! three are installed by `cargo xtask setup`. Without one a test skips
//! with the reason, and fails under CI=true.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use iolens_tests::{agent_bin, http_get, in_ci, is_root};

/// The kubernetes-validate release `cargo xtask setup` pins.
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";
/// Kubernetes API versions the manifests are validated against: the oldest
/// minor still widely run and the newest the pinned validator knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];
/// The exposure `systemd-analyze security` may give the unit at most.
const MAX_EXPOSURE: f64 = 3.0;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn unit_file() -> PathBuf {
    repo().join("deploy/systemd/iolens.service")
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A tool on PATH, or a skip (a failure in CI).
fn tool(name: &str, package: &str, test: &str) -> Option<PathBuf> {
    let found = find_on_path(name);
    if found.is_none() {
        assert!(
            !in_ci(),
            "{test}: CI=true but `{name}` is not on PATH; `cargo xtask setup` installs Debian's {package}"
        );
        eprintln!("skipped {test}: `{name}` not installed (apt-get install {package})");
    }
    found
}

/// The venv with kubernetes-validate, or a skip (a failure in CI).
fn venv(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("IOLENS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/iolens-venv"));
    if dir.join("bin/kubernetes-validate").is_file() {
        return Some(dir);
    }
    assert!(
        !in_ci(),
        "{test}: CI=true but {} has no kubernetes-validate; run `cargo xtask setup`",
        dir.display()
    );
    eprintln!(
        "skipped {test}: no kubernetes-validate in {} (`cargo xtask setup` makes it)",
        dir.display()
    );
    None
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The value of `Key=` in the unit file (the last one wins, as in systemd).
fn unit_setting(key: &str) -> String {
    let unit = std::fs::read_to_string(unit_file()).expect("read the unit file");
    unit.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("the unit has no {key}="))
        .trim()
        .to_owned()
}

/// The exposure line: `→ Overall exposure level for iolens.service: 2.2 OK 🙂`.
fn parse_exposure(stdout: &str) -> Option<f64> {
    stdout
        .lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))?
        .split_once(": ")?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn exposure_line_parses() {
    assert_eq!(
        parse_exposure("x\n→ Overall exposure level for iolens.service: 2.2 OK 🙂\n"),
        Some(2.2)
    );
    assert_eq!(
        parse_exposure("→ Overall exposure level for a.service: 9.6 UNSAFE 😨"),
        Some(9.6)
    );
    assert_eq!(parse_exposure("nothing here"), None);
}

#[test]
fn systemd_unit_exposure_is_at_most_3() {
    let test = "systemd_unit_exposure_is_at_most_3";
    let Some(analyze) = tool("systemd-analyze", "systemd", test) else {
        return;
    };
    let out = run(Command::new(analyze)
        .args(["security", "--offline=yes"])
        .arg(unit_file()));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    // A misspelt directive is ignored with a warning, and would silently
    // lower the hardening.
    assert!(
        !stderr.contains("Unknown") && !stderr.contains("ignoring"),
        "systemd-analyze warns about the unit:\n{stderr}"
    );
    let score = parse_exposure(&stdout).unwrap_or_else(|| {
        panic!(
            "no exposure line (status {}):\n{stdout}\n{stderr}",
            out.status
        )
    });
    println!("systemd-analyze security --offline=yes: exposure {score}");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{stdout}"
    );
}

#[test]
fn systemd_unit_verifies() {
    let test = "systemd_unit_verifies";
    let Some(analyze) = tool("systemd-analyze", "systemd", test) else {
        return;
    };
    // verify wants ExecStart's binary to exist; the install path need not
    // on a build machine.
    let dir = std::env::temp_dir().join(format!("iolens-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = std::fs::read_to_string(unit_file())
        .unwrap()
        .replace("/usr/local/bin/iolens", "/bin/true");
    let copy = dir.join("iolens.service");
    std::fs::write(&copy, unit).unwrap();
    let out = run(Command::new(analyze).arg("verify").arg(&copy));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}\n{}",
        out.status,
        text(&out.stderr)
    );
}

/// Every syscall of a systemd syscall set (`@system-service`, or a name),
/// nested sets expanded.
fn expand_syscall_set(analyze: &Path, set: &str, into: &mut BTreeSet<String>) {
    if !set.starts_with('@') {
        into.insert(set.to_owned());
        return;
    }
    let out = run(Command::new(analyze).args(["syscall-filter", set]));
    assert!(out.status.success(), "systemd-analyze syscall-filter {set}");
    for line in text(&out.stdout).lines().skip(1) {
        let name = line.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        expand_syscall_set(analyze, name, into);
    }
}

/// systemd is not PID 1 on every build machine (it is not on this one), so
/// the unit cannot always be started. This emulates what of its sandbox
/// matters to the agent and runs the real agent in it: the capability
/// bounding set from the unit (as uid 0, so the effective set is exactly
/// it), no_new_privs, a read-only root, /proc mounted with subset=pid; the
/// agent must load and attach every probe and serve a scrape, and every
/// syscall it made (strace) must be in the unit's SystemCallFilter.
#[test]
fn agent_runs_in_the_units_sandbox() {
    let test = "agent_runs_in_the_units_sandbox";
    if !is_root() {
        assert!(!in_ci(), "{test}: CI=true but not root");
        eprintln!("skipped {test}: needs root (mount namespace, eBPF)");
        return;
    }
    let (Some(analyze), Some(strace), Some(setpriv), Some(unshare)) = (
        tool("systemd-analyze", "systemd", test),
        tool("strace", "strace", test),
        tool("setpriv", "util-linux", test),
        tool("unshare", "util-linux", test),
    ) else {
        return;
    };

    // CapabilityBoundingSet=CAP_BPF CAP_PERFMON → setpriv's -all,+bpf,+perfmon.
    let caps: Vec<String> = unit_setting("CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect();
    let bounding = format!(
        "-all,{}",
        caps.iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let filter = unit_setting("SystemCallFilter");
    let mut allowed = BTreeSet::new();
    for set in filter.split_whitespace() {
        assert!(
            !set.starts_with('~'),
            "a deny list: this test expects an allow list"
        );
        expand_syscall_set(&analyze, set, &mut allowed);
    }

    let dir = std::env::temp_dir().join(format!("iolens-sandbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The trace goes to /dev/shm, outside the read-only root.
    let trace = PathBuf::from(format!(
        "/dev/shm/iolens-sandbox-{}.strace",
        std::process::id()
    ));
    let script = format!(
        "set -e\n\
         mount --make-rprivate /\n\
         mount -o remount,bind,ro /\n\
         mount -t proc -o subset=pid proc /proc\n\
         exec {setpriv} --no-new-privs --bounding-set {bounding} --inh-caps -all \
         {strace} -f -qq -o {trace} {bin} run --listen 127.0.0.1:0\n",
        setpriv = setpriv.display(),
        strace = strace.display(),
        trace = trace.display(),
        bin = agent_bin().display(),
    );
    let mut child = Command::new(unshare)
        .args(["--mount", "sh", "-c", &script])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the sandboxed agent");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut log = String::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let addr = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if let Some(a) = line
                    .split("metrics on http://")
                    .nth(1)
                    .and_then(|r| r.split('/').next())
                    .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                {
                    break a;
                }
            }
            Err(_) if Instant::now() < deadline && child.try_wait().ok().flatten().is_none() => {}
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the sandboxed agent did not start serving; log:\n{log}");
            }
        }
    };
    let (status, body) = http_get(addr, "/metrics");
    // The agent's own capabilities. unshare, sh and setpriv exec, so the
    // child is strace by now and the agent is its only child.
    let agent_pid = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
        .ok()
        .and_then(|c| c.split_whitespace().next()?.parse::<u32>().ok());
    let status_hex = |key: &str| {
        agent_pid.and_then(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
        })
    };
    let cap_eff = status_hex("CapEff:");
    let cap_bnd = status_hex("CapBnd:");
    // SIGTERM to the agent: it detaches and exits, then strace does.
    if let Some(pid) = agent_pid {
        // SAFETY: kill(2) on a pid this test started; no memory involved.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let exit = {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > end {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        log.push_str(&line);
        log.push('\n');
    }
    let traced = std::fs::read_to_string(&trace).unwrap_or_default();
    let _ = std::fs::remove_file(&trace);
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(status, 200, "scrape in the sandbox; log:\n{log}");
    let attached: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("iolens_probe_attached{"))
        .collect();
    assert!(
        !attached.is_empty(),
        "no iolens_probe_attached series:\n{body}"
    );
    assert!(
        attached.iter().all(|l| l.ends_with(" 1")),
        "a probe did not attach in the sandbox: {attached:?}\nlog:\n{log}"
    );
    // CAP_BPF is bit 39, CAP_PERFMON 38: nothing else may be in the
    // bounding set, and once attached the agent drops both (privdrop),
    // keeping CAP_BPF only where the kernel refuses reads of held map fds
    // without it (it logs that).
    let bounding: u64 = caps
        .iter()
        .map(|c| match c.as_str() {
            "bpf" => 1u64 << 39,
            "perfmon" => 1 << 38,
            other => panic!("update this test for CAP_{}", other.to_uppercase()),
        })
        .sum();
    let hex = |h: &Option<String>| h.as_deref().map(|h| u64::from_str_radix(h, 16).unwrap());
    assert_eq!(hex(&cap_bnd), Some(bounding), "the agent's CapBnd");
    let kept = if log.contains("dropped every capability but CAP_BPF") {
        1 << 39
    } else {
        0
    };
    assert!(
        log.contains("dropped every capability"),
        "no capability drop in the log:\n{log}"
    );
    assert_eq!(
        hex(&cap_eff),
        Some(kept),
        "the agent's CapEff after the drop"
    );
    assert!(
        exit.success(),
        "the agent under strace exited {exit}; log:\n{log}"
    );

    // `1234 openat(...)`, `1234 <... futex resumed>...`, `1234 +++ exited`.
    let used: BTreeSet<&str> = traced
        .lines()
        .filter_map(|l| {
            let rest = l.split_once(' ')?.1.trim_start();
            let rest = rest.strip_prefix("<... ").unwrap_or(rest);
            let name = rest.split(['(', ' ']).next()?;
            (!name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
            .then_some(name)
        })
        .collect();
    assert!(
        used.contains("bpf") && used.contains("perf_event_open"),
        "trace: {used:?}"
    );
    // socket(2)'s families against RestrictAddressFamilies (socketpair(2)
    // is not restricted by it).
    let families = unit_setting("RestrictAddressFamilies");
    let refused: Vec<&str> = traced
        .lines()
        .filter_map(|l| l.split(" socket(").nth(1)?.split(',').next())
        .filter(|f| !families.split_whitespace().any(|a| a == *f))
        .collect();
    assert!(
        refused.is_empty(),
        "socket families RestrictAddressFamilies={families} would refuse: {refused:?}"
    );
    let outside: Vec<&&str> = used.iter().filter(|s| !allowed.contains(**s)).collect();
    println!(
        "sandboxed agent: CapEff {:?}, {} distinct syscalls, all in SystemCallFilter={filter}",
        cap_eff,
        used.len()
    );
    assert!(
        outside.is_empty(),
        "syscalls the unit's SystemCallFilter={filter} would refuse: {outside:?}"
    );
}

fn kubernetes_validate(venv: &Path, version: &str, files: &[PathBuf]) -> String {
    let out = run(Command::new(venv.join("bin/kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", version])
        .args(files));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "kubernetes-validate -k {version}: {}\n{all}",
        out.status
    );
    all
}

#[test]
fn kubernetes_manifests_validate() {
    let test = "kubernetes_manifests_validate";
    let Some(venv) = venv(test) else { return };
    let out = run(Command::new(venv.join("bin/kubernetes-validate")).arg("--version"));
    assert_eq!(
        text(&out.stdout).trim(),
        KUBERNETES_VALIDATE_VERSION,
        "the venv's kubernetes-validate is not the pinned one; run `cargo xtask setup`"
    );
    let k8s = repo().join("deploy/kubernetes");
    for version in KUBERNETES_VERSIONS {
        let log = kubernetes_validate(&venv, version, &[k8s.join("daemonset.yaml")]);
        let short = version.rsplit_once('.').unwrap().0;
        for resource in [
            "namespace/iolens",
            "serviceaccount/iolens",
            "daemonset/iolens",
            "service/iolens",
        ] {
            let line = format!("passed for resource {resource} against version {short}");
            assert!(log.contains(&line), "-k {version}: no `{line}`:\n{log}");
        }
        assert!(
            !log.contains("WARN") && !log.contains("ERROR"),
            "-k {version}:\n{log}"
        );
        println!(
            "kubernetes-validate {KUBERNETES_VALIDATE_VERSION} --strict -k {version}: daemonset.yaml: 4 resources passed"
        );
    }
}

fn check_manifests(venv: &Path, args: &[&Path]) -> Output {
    run(Command::new(venv.join("bin/python"))
        .arg(repo().join("tests/deploy/check_manifests.py"))
        .args(args))
}

/// kubernetes-validate has no schema for a CRD: it says so and passes. The
/// ServiceMonitor is checked against its CRD's fields instead
/// (tests/deploy/servicemonitor-v1.schema.json).
#[test]
fn servicemonitor_validates_against_its_crd_fields() {
    let test = "servicemonitor_validates_against_its_crd_fields";
    let Some(venv) = venv(test) else { return };
    let file = repo().join("deploy/kubernetes/servicemonitor.yaml");
    let log = kubernetes_validate(&venv, KUBERNETES_VERSIONS[0], std::slice::from_ref(&file));
    assert!(
        log.contains("Couldn't find schema for kind ServiceMonitor") || log.contains("passed"),
        "{log}"
    );
    let out = check_manifests(&venv, &[Path::new("servicemonitor"), &file]);
    let said = text(&out.stdout);
    assert!(
        out.status.success() && said.contains("PASS"),
        "{said}{}",
        text(&out.stderr)
    );
    println!("{}", said.trim());

    // The schema is not vacuous: a misspelt field and a bad duration fail.
    let dir = std::env::temp_dir().join(format!("iolens-sm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = std::fs::read_to_string(&file).unwrap();
    for (what, bad) in [
        (
            "a misspelt field",
            good.replace("scrapeTimeout:", "scrapeTimout:"),
        ),
        (
            "a bad duration",
            good.replace("interval: 15s", "interval: 15 seconds"),
        ),
        (
            "a bad action",
            good.replace("action: replace", "action: rename"),
        ),
    ] {
        assert_ne!(bad, good, "{what}: the replacement did not apply");
        let path = dir.join("bad.yaml");
        std::fs::write(&path, bad).unwrap();
        let out = check_manifests(&venv, &[Path::new("servicemonitor"), &path]);
        assert!(
            !out.status.success(),
            "{what} passed: {}",
            text(&out.stdout)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Debian's promtool is built without Kubernetes discovery and rejects
/// `kubernetes_sd_configs` as an unknown field. Then the discovery blocks
/// are checked against Prometheus's documented fields and the rest of the
/// file (relabelling above all) by promtool, with a static target in their
/// place. A promtool with Kubernetes discovery checks the file as it is.
#[test]
fn prometheus_scrape_example_checks() {
    let test = "prometheus_scrape_example_checks";
    let Some(promtool) = tool("promtool", "prometheus", test) else {
        return;
    };
    let file = repo().join("deploy/kubernetes/prometheus-scrape.yml");
    let out = run(Command::new(&promtool).args(["check", "config"]).arg(&file));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    if out.status.success() {
        println!("promtool check config: the file as it is: SUCCESS");
        return;
    }
    assert!(
        all.contains("field kubernetes_sd_configs not found"),
        "promtool check config failed:\n{all}"
    );
    let Some(venv) = venv(test) else { return };
    let dir = std::env::temp_dir().join(format!("iolens-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("prometheus.yml");
    let out = check_manifests(&venv, &[Path::new("promconfig"), &file, &copy]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let checked = run(Command::new(&promtool).args(["check", "config"]).arg(&copy));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        checked.status.success(),
        "promtool check config (static targets for kubernetes_sd_configs):\n{}{}",
        text(&checked.stdout),
        text(&checked.stderr)
    );
    println!(
        "promtool lacks Kubernetes discovery; {}; promtool check config on the rest: SUCCESS",
        text(&out.stdout).trim().replace('\n', "; ")
    );
}

/// The agent's arguments in the DaemonSet (its container's `args:` list).
fn daemonset_args() -> Vec<String> {
    let yaml = std::fs::read_to_string(repo().join("deploy/kubernetes/daemonset.yaml")).unwrap();
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "args:");
    let head = lines.next().expect("the DaemonSet has no args:");
    let indent = head.len() - head.trim_start().len();
    lines
        .take_while(|l| l.len() - l.trim_start().len() > indent && l.trim().starts_with("- "))
        .map(|l| {
            l.trim()
                .trim_start_matches("- ")
                .trim_matches('"')
                .to_owned()
        })
        .collect()
}

/// The flags the unit and the DaemonSet pass still parse: `iolens run
/// <args> --help` exits 0 only if every flag before `--help` exists and its
/// value parses (clap checks them in order).
#[test]
fn deployed_agent_flags_parse() {
    let args = daemonset_args();
    assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
    let exec = unit_setting("ExecStart");
    let unit_args: Vec<&str> = exec
        .split_whitespace()
        .skip(1)
        .filter(|a| !a.starts_with('$'))
        .collect();
    assert_eq!(unit_args.first(), Some(&"run"), "{exec}");
    for (what, args) in [
        (
            "daemonset.yaml",
            args.iter().map(String::as_str).collect::<Vec<_>>(),
        ),
        ("iolens.service", unit_args),
    ] {
        let out = run(Command::new(agent_bin()).args(&args).arg("--help"));
        assert!(
            out.status.success(),
            "{what}: `iolens {}` does not parse: {}",
            args.join(" "),
            text(&out.stderr)
        );
    }
}
