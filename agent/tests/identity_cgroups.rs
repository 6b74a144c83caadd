//! `iolens::identity` on paths the kernel itself writes: cgroups of each
//! shape are made under the cgroup2 mount, a known child is moved into
//! each, and its /proc/PID/cgroup is read and parsed.
//!
//! The shapes are made under a scratch directory, not at the hierarchy's
//! root (where a real system.slice may live). The reader is put in a cgroup
//! namespace rooted at that directory, so it sees the shapes exactly as an
//! agent on the host does (`/system.slice/…`); a second reader, rooted in a
//! pod's container, sees them as an agent in a pod does (`/../../…`).
//!
//! Needs root and unshare(1) (skips with the reason otherwise; fails under
//! CI=true).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use iolens::identity::{
    Identity, QosClass, Runtime, UnitKind, from_cgroup_path, proc_cgroup_v2_path,
};

const ID: &str = "9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d";
const UID: &str = "099b88fb-2a99-45ad-af94-d91eb81a87e9";

fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        pre.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The scratch tree and the children in it; torn down on drop, panics
/// included.
struct Scratch {
    root: PathBuf,
    dirs: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Scratch {
    /// A child (`sleep`) in `root/<rel>`, made with its parents.
    fn child_in(&mut self, rel: &str) -> u32 {
        let mut dir = self.root.clone();
        for part in rel.split('/') {
            dir.push(part);
            if !dir.is_dir() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                self.dirs.push(dir.clone());
            }
        }
        let child = Command::new("sleep")
            .arg("120")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        self.children.push(child);
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", dir.display()));
        pid
    }

    /// /proc/PID/cgroup's v2 path, read by a process in a cgroup namespace
    /// rooted at `root/<ns_root>`.
    fn read_from(&self, ns_root: &str, pid: u32) -> String {
        let ns = if ns_root.is_empty() {
            self.root.clone()
        } else {
            self.root.join(ns_root)
        };
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec unshare --cgroup cat /proc/{pid}/cgroup",
            ns.display()
        );
        let out = Command::new("sh")
            .args(["-c", &script])
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        proc_cgroup_v2_path(&text)
            .unwrap_or_else(|| panic!("no 0:: line in {text}"))
            .to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Readers exited with their shells; the directories are empty now.
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
        let _ = std::fs::remove_dir(&self.root);
    }
}

fn check(seen: &str, want_path: &str, id: &Identity, what: &str) {
    assert_eq!(seen, want_path, "{what}: the kernel's path");
    println!("{what}: {seen} -> {id:?}");
}

#[test]
fn identity_of_children_in_real_cgroups() {
    // SAFETY: geteuid cannot fail.
    let root_user = unsafe { libc::geteuid() } == 0;
    let ci = std::env::var_os("CI").is_some_and(|v| v == "true");
    let unshare = Path::new("/usr/bin/unshare").is_file();
    let Some(mount) = cgroup2_mount().filter(|_| root_user && unshare) else {
        assert!(
            !ci,
            "CI=true but no root, unshare(1) or cgroup2 mount: this test must run in CI"
        );
        eprintln!("skipped: needs root, unshare(1) and a cgroup2 mount");
        return;
    };
    let root = mount.join(format!("iolens-identity-{}", std::process::id()));
    std::fs::create_dir(&root).expect("mkdir the scratch cgroup");
    let mut s = Scratch {
        root,
        dirs: Vec::new(),
        children: Vec::new(),
    };
    let uid_ = UID.replace('-', "_");

    // As an agent on the host sees them.
    let p = s.child_in("system.slice/nginx.service");
    let seen = s.read_from("", p);
    let id = from_cgroup_path(&seen);
    check(&seen, "/system.slice/nginx.service", &id, "service");
    let unit = id.unit.unwrap();
    assert_eq!(
        (unit.path.as_str(), unit.kind),
        ("system.slice/nginx.service", UnitKind::Service)
    );

    let p = s.child_in("user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope");
    let seen = s.read_from("", p);
    let id = from_cgroup_path(&seen);
    check(
        &seen,
        "/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope",
        &id,
        "user unit",
    );
    assert_eq!(id.user_slice_uid, Some(1000));
    assert_eq!(id.user_unit.unwrap().path, "app.slice/app-foo.scope");

    let cases: Vec<(String, Runtime, Option<QosClass>)> = vec![
        (
            format!("system.slice/docker-{ID}.scope"),
            Runtime::Docker,
            None,
        ),
        (
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope"
            ),
            Runtime::Containerd,
            Some(QosClass::Burstable),
        ),
        (
            format!(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/crio-{ID}.scope"
            ),
            Runtime::CriO,
            Some(QosClass::BestEffort),
        ),
        (
            format!("kubepods.slice/kubepods-pod{uid_}.slice/docker-{ID}.scope"),
            Runtime::Docker,
            Some(QosClass::Guaranteed),
        ),
        (
            format!("kubepods/besteffort/pod{UID}/{ID}"),
            Runtime::Unknown,
            Some(QosClass::BestEffort),
        ),
        (
            format!("kubepods/pod{UID}/{ID}"),
            Runtime::Unknown,
            Some(QosClass::Guaranteed),
        ),
        (
            format!("kubepods/burstable/pod{UID}/crio-{ID}"),
            Runtime::CriO,
            Some(QosClass::Burstable),
        ),
        (
            format!("machine.slice/libpod-{ID}.scope/container"),
            Runtime::Podman,
            None,
        ),
    ];
    let mut pids = Vec::new();
    for (rel, runtime, qos) in &cases {
        let p = s.child_in(rel);
        pids.push(p);
        let seen = s.read_from("", p);
        let id = from_cgroup_path(&seen);
        check(&seen, &format!("/{rel}"), &id, runtime.as_str());
        let c = id
            .container
            .as_ref()
            .unwrap_or_else(|| panic!("{seen}: no container"));
        assert_eq!((c.runtime, c.id.as_str()), (*runtime, ID), "{seen}");
        match qos {
            Some(q) => {
                let pod = id.pod.as_ref().unwrap_or_else(|| panic!("{seen}: no pod"));
                assert_eq!((pod.uid.as_str(), pod.qos), (UID, Some(*q)), "{seen}");
            }
            None => assert_eq!(id.pod, None, "{seen}"),
        }
    }

    // As an agent in a pod sees them: its namespace is rooted at its own
    // container's scope, in the Burstable pod (cases[1]).
    let agent_ns = &cases[1].0;
    for (i, want_qos) in [(2, QosClass::BestEffort), (3, QosClass::Guaranteed)] {
        let seen = s.read_from(agent_ns, pids[i]);
        assert!(seen.starts_with("/.."), "{seen}: not namespace-relative");
        let id = from_cgroup_path(&seen);
        println!("from a pod: {seen} -> {id:?}");
        assert_eq!(
            id.pod.as_ref().map(|p| (p.uid.as_str(), p.qos)),
            Some((UID, Some(want_qos))),
            "{seen}"
        );
        assert_eq!(id.container.map(|c| c.runtime), Some(cases[i].1), "{seen}");
    }
    let seen = s.read_from(agent_ns, p_of(&s, "system.slice/nginx.service"));
    let id = from_cgroup_path(&seen);
    println!("from a pod: {seen} -> {id:?}");
    assert_eq!(
        id.unit.map(|u| u.path),
        Some("system.slice/nginx.service".to_owned())
    );
    // Its own container: the namespace root.
    assert_eq!(s.read_from(agent_ns, pids[1]), "/");
}

/// The pid of the first child in `root/<rel>`.
fn p_of(s: &Scratch, rel: &str) -> u32 {
    let procs = std::fs::read_to_string(s.root.join(rel).join("cgroup.procs")).unwrap();
    procs.lines().next().unwrap().trim().parse().unwrap()
}
