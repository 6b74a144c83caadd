//! Who a process belongs to, from its cgroup v2 path alone: the systemd unit,
//! the container id and the Kubernetes pod UID and QoS class. No API call, no
//! file read: the path (as in `/proc/PID/cgroup`, `0::/…`) is the whole input,
//! so this is cheap enough to run once per process and total on any input.
//!
//! The shapes recognised, all taken from real machines:
//!
//! | what | cgroup driver | path (components of interest) |
//! |---|---|---|
//! | systemd unit | — | `system.slice/nginx.service`, `system.slice/system-getty.slice/getty@tty1.service`, `init.scope` |
//! | user session / manager | — | `user.slice/user-1000.slice/session-3.scope`, `user.slice/user-1000.slice/user@1000.service/app.slice/…` |
//! | docker | systemd / cgroupfs | `docker-<id>.scope` / `docker/<id>` |
//! | containerd (CRI) | systemd / cgroupfs | `cri-containerd-<id>.scope` / `kubepods/…/pod<uid>/<id>` |
//! | cri-o | systemd / cgroupfs | `crio-<id>.scope`, `crio-conmon-<id>.scope` / `crio-<id>` |
//! | podman | systemd / cgroupfs | `libpod-<id>.scope`, `libpod-conmon-<id>.scope` / `libpod_parent/libpod-<id>` |
//! | pod, Burstable | systemd | `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice` |
//! | pod, BestEffort | systemd | `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid with _>.slice` |
//! | pod, Guaranteed | systemd | `kubepods.slice/kubepods-pod<uid with _>.slice` (no QoS level) |
//! | pod | cgroupfs | `kubepods/burstable/pod<uid>`, `kubepods/besteffort/pod<uid>`, `kubepods/pod<uid>` |
//!
//! A kubelet with a non-root `--cgroup-root` (kind runs its nodes so) prefixes
//! the slices (`kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod….slice`);
//! that is recognised too. Runc given a systemd cgroups path that it did not
//! expand (a kubelet and a runtime that disagree on the cgroup driver) leaves
//! the literal `kubepods-…-pod<uid>.slice:cri-containerd:<id>` as one
//! directory: its container is recognised, its pod is not claimed.
//!
//! Container ids are the runtimes' 64 lowercase hex digits; anything else is
//! not taken for one (a `docker-foo.scope` is a unit, not a container). The
//! systemd driver writes the pod UID with `_` for `-` (a `-` in a slice name
//! means nesting); the UID returned always has the API's dashes, so it joins
//! with kube-state-metrics's `kube_pod_info{uid=…}`:
//!
//! ```promql
//! sum by (pod_uid) (rate(iolens_syscall_bytes_total[5m]))
//!   * on (pod_uid) group_left (namespace, pod)
//!   label_replace(kube_pod_info, "pod_uid", "$1", "uid", "(.+)")
//! ```
//!
//! Read inside a cgroup namespace (an agent in a pod: Kubernetes gives
//! containers their own), `/proc/PID/cgroup` is relative to the reader's
//! namespace root and cgroups outside it start with `/..` components. Those
//! stand for ancestors that cannot be seen; what the rest of the path says is
//! still returned: systemd's names carry their whole ancestry, so units, pods
//! and their QoS classes survive, but a cgroupfs-driver pod whose QoS level
//! is cut off has `qos: None`.
//!
//! A static pod's cgroup carries the kubelet's hash of its manifest (32 hex
//! digits, returned as is), which is not necessarily the mirror pod's UID in
//! the API, so that join can miss static pods.

use std::fmt;

/// What the cgroup path says about a process. Every field is independent:
/// a pod's container is also a systemd scope under the systemd driver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The unit of the system manager the cgroup is in.
    pub unit: Option<Unit>,
    /// With `unit` a per-user manager (`user@UID.service`): the unit of that
    /// manager, its path relative to the manager's cgroup.
    pub user_unit: Option<Unit>,
    /// The UID of the `user.slice/user-UID.slice` the unit is in.
    pub user_slice_uid: Option<u32>,
    /// The innermost container (below the pod, when there is a pod).
    pub container: Option<Container>,
    pub pod: Option<Pod>,
}

/// A systemd unit that owns a cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The cgroup path down to and including the unit, without a leading
    /// slash: `system.slice/nginx.service`, `init.scope`. Of a path cut by
    /// a cgroup namespace, the part below the cut.
    pub path: String,
    /// The unit's name: `nginx.service`.
    pub name: String,
    pub kind: UnitKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitKind {
    Service,
    Scope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub runtime: Runtime,
    /// 64 lowercase hex digits, as the runtime names the container.
    pub id: String,
    /// The runtime's per-container monitor (conmon for cri-o and podman),
    /// not the container's own processes.
    pub monitor: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
    /// A bare id (cgroupfs driver under a pod): containerd or docker's shim
    /// name their cgroups alike.
    Unknown,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Container {
    /// The id as Kubernetes reports it in `status.containerStatuses[].containerID`
    /// and kube-state-metrics in `kube_pod_container_info{container_id=…}`
    /// (`containerd://<id>`), when the runtime is known.
    pub fn kube_container_id(&self) -> Option<String> {
        let scheme = match self.runtime {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman | Runtime::Unknown => return None,
        };
        Some(format!("{scheme}://{}", self.id))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// The pod's UID with dashes (`74c13223-5a00-11e9-b385-42010a80018d`),
    /// or a static pod's 32-digit manifest hash.
    pub uid: String,
    /// None only when the path was cut (see the module's note on cgroup
    /// namespaces) above a cgroupfs pod directory.
    pub qos: Option<QosClass>,
}

/// A pod's QoS class, spelled as the API's `status.qosClass`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

impl fmt::Display for QosClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The cgroup v2 path in the contents of `/proc/PID/cgroup` (its `0::` line).
pub fn proc_cgroup_v2_path(contents: &str) -> Option<&str> {
    contents.lines().find_map(|l| l.strip_prefix("0::"))
}

/// Everything the path says. The path is relative to the cgroup2 mount,
/// with or without its leading slash; empty components are ignored, and so
/// are leading `..` (a path seen from inside a cgroup namespace).
pub fn from_cgroup_path(path: &str) -> Identity {
    let mut parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let cut = parts.iter().take_while(|&&c| c == "..").count();
    parts.drain(..cut);
    let rooted = cut == 0;
    let mut id = Identity::default();

    if let Some((unit, end)) = unit_at(&parts, 0) {
        id.user_slice_uid = user_slice_uid(&parts[..end]);
        if let Some(rest) = unit.name.strip_prefix("user@")
            && rest.strip_suffix(".service").is_some_and(is_uid)
        {
            id.user_unit = unit_at(&parts, end + 1).map(|(u, _)| u);
        }
        id.unit = Some(unit);
    }

    let pod_at = (0..parts.len())
        .rev()
        .find_map(|i| pod_at(&parts, i, rooted).map(|p| (i, p)));
    let below = pod_at.as_ref().map_or(0, |(i, _)| i + 1);
    id.pod = pod_at.map(|(_, p)| p);
    id.container = (below..parts.len())
        .rev()
        .find_map(|i| container_at(&parts, i, id.pod.is_some()));
    id
}

/// The unit whose cgroup is reached from `parts[start..]` through slices
/// only, and its index.
fn unit_at(parts: &[&str], start: usize) -> Option<(Unit, usize)> {
    let mut i = start;
    while i < parts.len() && unit_name(parts[i], ".slice") {
        i += 1;
    }
    let name = *parts.get(i)?;
    let kind = if unit_name(name, ".service") {
        UnitKind::Service
    } else if unit_name(name, ".scope") {
        UnitKind::Scope
    } else {
        return None;
    };
    Some((
        Unit {
            path: parts[start..=i].join("/"),
            name: name.to_owned(),
            kind,
        },
        i,
    ))
}

/// A systemd unit name with this suffix: a non-empty prefix of the
/// characters systemd allows (`\` for its escapes).
fn unit_name(s: &str, suffix: &str) -> bool {
    s.strip_suffix(suffix).is_some_and(|p| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
    })
}

fn is_uid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 10
        && s.bytes().all(|b| b.is_ascii_digit())
        && s.parse::<u32>().is_ok()
}

/// `user.slice/user-UID.slice`, as the slices' first two components.
fn user_slice_uid(slices: &[&str]) -> Option<u32> {
    match slices {
        ["user.slice", user, ..] => user
            .strip_prefix("user-")?
            .strip_suffix(".slice")
            .filter(|u| is_uid(u))?
            .parse()
            .ok(),
        _ => None,
    }
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A pod's UID: a UUID (8-4-4-4-12 hex digits) or a static pod's 32-digit
/// hash.
fn is_pod_uid(s: &str) -> bool {
    let b = s.as_bytes();
    match b.len() {
        32 => b.iter().all(u8::is_ascii_hexdigit),
        36 => b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        }),
        _ => false,
    }
}

/// The pod whose cgroup is `parts[i]`. Not `rooted`: the path's ancestors
/// above `parts[0]` are unknown.
fn pod_at(parts: &[&str], i: usize, rooted: bool) -> Option<Pod> {
    let name = parts[i];
    let parent = i.checked_sub(1).map(|p| parts[p]);

    // systemd driver: `<root>kubepods[-<qos>]-pod<uid_>.slice` directly in
    // the slice it names (systemd nests `a-b.slice` in `a.slice`).
    if let Some(stem) = name.strip_suffix(".slice")
        && let Some(at) = stem.rfind("-pod")
    {
        let (level, raw_uid) = (&stem[..at], &stem[at + 4..]);
        let uid = raw_uid.replace('_', "-");
        let qos = qos_of_level(level)?;
        let nested = match parent {
            Some(p) => p.strip_suffix(".slice") == Some(level),
            None => !rooted,
        };
        return (nested && is_pod_uid(&uid)).then_some(Pod {
            uid,
            qos: Some(qos),
        });
    }

    // cgroupfs driver: `kubepods/[burstable|besteffort/]pod<uid>`.
    let uid = name.strip_prefix("pod").filter(|u| is_pod_uid(u))?;
    let grandparent = i.checked_sub(2).map(|g| parts[g]);
    let qos = match (grandparent, parent) {
        (_, Some("kubepods")) => Some(QosClass::Guaranteed),
        (Some("kubepods"), Some("burstable")) => Some(QosClass::Burstable),
        (Some("kubepods"), Some("besteffort")) => Some(QosClass::BestEffort),
        // Cut: `../burstable/pod…`, or `../pod…` (under kubepods itself or
        // under a QoS level: it cannot be told).
        (None, Some("burstable")) if !rooted => Some(QosClass::Burstable),
        (None, Some("besteffort")) if !rooted => Some(QosClass::BestEffort),
        (None, None) if !rooted => None,
        _ => return None,
    };
    Some(Pod {
        uid: uid.to_owned(),
        qos,
    })
}

/// The QoS class a systemd pod slice's parent level names:
/// `[<root>-]kubepods[-burstable|-besteffort]`.
fn qos_of_level(level: &str) -> Option<QosClass> {
    let (kubepods, qos) = if let Some(k) = level.strip_suffix("-burstable") {
        (k, QosClass::Burstable)
    } else if let Some(k) = level.strip_suffix("-besteffort") {
        (k, QosClass::BestEffort)
    } else {
        (level, QosClass::Guaranteed)
    };
    (kubepods == "kubepods" || kubepods.ends_with("-kubepods")).then_some(qos)
}

/// The container whose cgroup is `parts[i]`. A bare id counts under a pod
/// (`in_pod`) or under `docker/`.
fn container_at(parts: &[&str], i: usize, in_pod: bool) -> Option<Container> {
    let name = parts[i];
    let found = |runtime, id: &str, monitor| {
        is_container_id(id).then(|| Container {
            runtime,
            id: id.to_owned(),
            monitor,
        })
    };

    // runc's unexpanded systemd cgroups path: `<slice>:<prefix>:<id>`.
    let mut fields = name.split(':');
    if let (Some(slice), Some(prefix), Some(id), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    {
        return slice
            .ends_with(".slice")
            .then_some(())
            .and_then(|()| runtime_of_prefix(prefix))
            .and_then(|(runtime, monitor)| found(runtime, id, monitor));
    }

    let stem = name.strip_suffix(".scope").unwrap_or(name);
    if let Some((prefix, id)) = stem.rsplit_once('-')
        && let Some((runtime, monitor)) = runtime_of_prefix(prefix)
    {
        // Docker and containerd always make scopes; cri-o and podman name
        // their cgroupfs directories the same way without `.scope`.
        let scope_only = matches!(runtime, Runtime::Docker | Runtime::Containerd);
        if scope_only && stem.len() == name.len() {
            return None;
        }
        return found(runtime, id, monitor);
    }

    if i > 0 && parts[i - 1] == "docker" {
        return found(Runtime::Docker, name, false);
    }
    if in_pod {
        return found(Runtime::Unknown, name, false);
    }
    None
}

/// The runtime a cgroup name prefix (`cri-containerd`, `crio-conmon`, …)
/// stands for, and whether it is the runtime's monitor.
fn runtime_of_prefix(prefix: &str) -> Option<(Runtime, bool)> {
    Some(match prefix {
        "docker" => (Runtime::Docker, false),
        "cri-containerd" => (Runtime::Containerd, false),
        "crio" => (Runtime::CriO, false),
        "crio-conmon" => (Runtime::CriO, true),
        "libpod" => (Runtime::Podman, false),
        "libpod-conmon" => (Runtime::Podman, true),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID_A: &str = "9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d";
    const ID_B: &str = "34dc0b5e626f2c5c4c5170e34b10e7654ce36f0fcd532739f4445baabea03376";
    const ID_C: &str = "0bc5eac79e3ae7a0c2651f14722aa10fa333eb2325c2ca97da33aa284cda81b0";
    const ID_D: &str = "cf21d19260ace8544fe8b769fc2638bf2c0873dfbfff0b6253f0569b26a1d5eb";

    fn unit(path: &str, kind: UnitKind) -> Option<Unit> {
        Some(Unit {
            path: path.to_owned(),
            name: path.rsplit('/').next().unwrap().to_owned(),
            kind,
        })
    }

    fn container(runtime: Runtime, id: &str) -> Option<Container> {
        Some(Container {
            runtime,
            id: id.to_owned(),
            monitor: false,
        })
    }

    fn pod(uid: &str, qos: QosClass) -> Option<Pod> {
        Some(Pod {
            uid: uid.to_owned(),
            qos: Some(qos),
        })
    }

    #[test]
    fn system_services_and_scopes() {
        let id = from_cgroup_path("/system.slice/nginx.service");
        assert_eq!(
            id.unit,
            unit("system.slice/nginx.service", UnitKind::Service)
        );
        assert_eq!((id.container, id.pod, id.user_unit), (None, None, None));

        let id = from_cgroup_path("/system.slice/system-getty.slice/getty@tty1.service");
        assert_eq!(
            id.unit,
            unit(
                "system.slice/system-getty.slice/getty@tty1.service",
                UnitKind::Service
            )
        );
        // systemd's escapes stay as they are.
        let p = r"/system.slice/system-systemd\x2dfsck.slice/systemd-fsck@dev-sda1.service";
        assert_eq!(
            from_cgroup_path(p).unit.map(|u| u.name),
            Some("systemd-fsck@dev-sda1.service".to_owned())
        );
        assert_eq!(
            from_cgroup_path("/init.scope").unit,
            unit("init.scope", UnitKind::Scope)
        );
        // Below the unit (a delegated subtree) the unit still owns it.
        let id = from_cgroup_path("/system.slice/containerd.service/sub/dir");
        assert_eq!(
            id.unit,
            unit("system.slice/containerd.service", UnitKind::Service)
        );
        // Without the leading slash, and with doubled slashes.
        assert_eq!(
            from_cgroup_path("system.slice//cron.service").unit,
            unit("system.slice/cron.service", UnitKind::Service)
        );
    }

    #[test]
    fn no_unit_without_one() {
        for p in [
            "/",
            "",
            "/system.slice",
            "/user.slice/user-1000.slice",
            "/docker/4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970",
            "/mygroup/foo.service", // not reached through slices
            "/system.slice/.service",
            "/system.slice/bad name.service",
        ] {
            assert_eq!(from_cgroup_path(p).unit, None, "{p}");
        }
    }

    #[test]
    fn user_sessions_and_managers() {
        let id = from_cgroup_path("/user.slice/user-1000.slice/session-3.scope");
        assert_eq!(
            id.unit,
            unit(
                "user.slice/user-1000.slice/session-3.scope",
                UnitKind::Scope
            )
        );
        assert_eq!(id.user_slice_uid, Some(1000));
        assert_eq!(id.user_unit, None);

        let id = from_cgroup_path(
            "/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-3c5d5ea5-8c9c-4d3d-9bbb-f1d06a4c5c5d.scope",
        );
        assert_eq!(
            id.unit,
            unit(
                "user.slice/user-1000.slice/user@1000.service",
                UnitKind::Service
            )
        );
        assert_eq!(
            id.user_unit,
            unit(
                "app.slice/app-org.gnome.Terminal.slice/vte-spawn-3c5d5ea5-8c9c-4d3d-9bbb-f1d06a4c5c5d.scope",
                UnitKind::Scope
            )
        );
        assert_eq!(id.user_slice_uid, Some(1000));

        let id = from_cgroup_path("/user.slice/user-0.slice/user@0.service/init.scope");
        assert_eq!(id.user_unit, unit("init.scope", UnitKind::Scope));
        assert_eq!(id.user_slice_uid, Some(0));
        // The manager itself, no user unit below it.
        let id = from_cgroup_path("/user.slice/user-1000.slice/user@1000.service");
        assert_eq!(id.user_unit, None);
        // Not a UID.
        let id = from_cgroup_path("/user.slice/user-99999999999.slice/session-1.scope");
        assert_eq!(id.user_slice_uid, None);
        assert!(id.unit.is_some());
    }

    #[test]
    fn docker() {
        let id = from_cgroup_path(&format!("/system.slice/docker-{ID_A}.scope"));
        assert_eq!(id.container, container(Runtime::Docker, ID_A));
        assert_eq!(id.unit.unwrap().name, format!("docker-{ID_A}.scope"));
        assert_eq!(id.pod, None);

        // cgroupfs driver.
        let id = from_cgroup_path(
            "/docker/4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970",
        );
        assert_eq!(
            id.container,
            container(
                Runtime::Docker,
                "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970"
            )
        );
        // Rootless docker: a scope in the user's manager.
        let id = from_cgroup_path(&format!(
            "/user.slice/user-1001.slice/user@1001.service/user.slice/docker-{ID_A}.scope"
        ));
        assert_eq!(id.container, container(Runtime::Docker, ID_A));
        assert_eq!(id.user_unit.unwrap().name, format!("docker-{ID_A}.scope"));
        assert_eq!(
            container(Runtime::Docker, ID_A)
                .unwrap()
                .kube_container_id(),
            Some(format!("docker://{ID_A}"))
        );
    }

    #[test]
    fn podman() {
        // Rootful, systemd manager: the container and its conmon.
        let id = from_cgroup_path(&format!("/machine.slice/libpod-{ID_D}.scope"));
        assert_eq!(id.container, container(Runtime::Podman, ID_D));
        let id = from_cgroup_path(&format!("/machine.slice/libpod-conmon-{ID_D}.scope"));
        assert_eq!(
            id.container,
            Some(Container {
                runtime: Runtime::Podman,
                id: ID_D.to_owned(),
                monitor: true
            })
        );
        // Rootless on cgroup v2: the payload sits in `container` below the
        // scope.
        let id = from_cgroup_path(&format!(
            "/user.slice/user-0.slice/user@0.service/machine.slice/libpod-{ID_D}.scope/container"
        ));
        assert_eq!(id.container, container(Runtime::Podman, ID_D));
        assert_eq!(id.user_slice_uid, Some(0));
        // A podman pod's slice.
        let id = from_cgroup_path(&format!(
            "/machine.slice/machine-libpod_pod_{ID_A}.slice/libpod-{ID_D}.scope"
        ));
        assert_eq!(id.container, container(Runtime::Podman, ID_D));
        // cgroupfs manager.
        let id = from_cgroup_path(&format!("/libpod_parent/libpod-{ID_D}"));
        assert_eq!(id.container, container(Runtime::Podman, ID_D));
        assert_eq!(id.unit, None);
        assert_eq!(
            container(Runtime::Podman, ID_D)
                .unwrap()
                .kube_container_id(),
            None
        );
    }

    #[test]
    fn kubernetes_systemd_driver() {
        // containerd, Burstable.
        let id = from_cgroup_path(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod099b88fb_2a99_45ad_af94_d91eb81a87e9.slice/cri-containerd-{ID_B}.scope"
        ));
        assert_eq!(
            id.pod,
            pod("099b88fb-2a99-45ad-af94-d91eb81a87e9", QosClass::Burstable)
        );
        assert_eq!(id.container, container(Runtime::Containerd, ID_B));
        assert_eq!(
            id.container.unwrap().kube_container_id(),
            Some(format!("containerd://{ID_B}"))
        );
        assert_eq!(id.unit.unwrap().kind, UnitKind::Scope);

        // cri-o's conmon in a Burstable pod (a path from the kubelet's e2e
        // tests).
        let id = from_cgroup_path(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b7632a2_a56e_4278_987a_22de18008dbe.slice/crio-conmon-{ID_C}.scope"
        ));
        assert_eq!(
            id.pod,
            pod("0b7632a2-a56e-4278-987a-22de18008dbe", QosClass::Burstable)
        );
        assert_eq!(
            id.container,
            Some(Container {
                runtime: Runtime::CriO,
                id: ID_C.to_owned(),
                monitor: true
            })
        );

        // cri-o, BestEffort.
        let id = from_cgroup_path(&format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod729d2f46_480d_4796_a76c_e227e2671d31.slice/crio-{ID_C}.scope"
        ));
        assert_eq!(
            id.pod,
            pod("729d2f46-480d-4796-a76c-e227e2671d31", QosClass::BestEffort)
        );
        assert_eq!(id.container, container(Runtime::CriO, ID_C));
        assert_eq!(
            id.container.unwrap().kube_container_id(),
            Some(format!("cri-o://{ID_C}"))
        );

        // Guaranteed: directly under kubepods.slice; docker's scope.
        let id = from_cgroup_path(&format!(
            "/kubepods.slice/kubepods-podd80f4a0e_576f_47a8_a0cf_69dc23dc1980.slice/docker-{ID_A}.scope"
        ));
        assert_eq!(
            id.pod,
            pod("d80f4a0e-576f-47a8-a0cf-69dc23dc1980", QosClass::Guaranteed)
        );
        assert_eq!(id.container, container(Runtime::Docker, ID_A));

        // The pod's own cgroup: a pod and no container.
        let id = from_cgroup_path(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod099b88fb_2a99_45ad_af94_d91eb81a87e9.slice",
        );
        assert_eq!(
            id.pod,
            pod("099b88fb-2a99-45ad-af94-d91eb81a87e9", QosClass::Burstable)
        );
        assert_eq!((id.container, id.unit), (None, None));

        // A static pod: the manifest's hash.
        let id = from_cgroup_path(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7d8a3e1c2fcd2d2e3bb0e9c3b40f6a62.slice/cri-containerd-{ID_B}.scope"
        ));
        assert_eq!(
            id.pod,
            pod("7d8a3e1c2fcd2d2e3bb0e9c3b40f6a62", QosClass::Burstable)
        );
    }

    #[test]
    fn kubernetes_cgroupfs_driver() {
        let id = from_cgroup_path(&format!(
            "/kubepods/besteffort/pod74c13223-5a00-11e9-b385-42010a80018d/{ID_B}"
        ));
        assert_eq!(
            id.pod,
            pod("74c13223-5a00-11e9-b385-42010a80018d", QosClass::BestEffort)
        );
        assert_eq!(id.container, container(Runtime::Unknown, ID_B));
        assert_eq!(id.container.unwrap().kube_container_id(), None);
        assert_eq!(id.unit, None);

        let id = from_cgroup_path(&format!(
            "/kubepods/burstable/pod12345678-1234-1234-1234-123456789abc/{ID_B}"
        ));
        assert_eq!(
            id.pod,
            pod("12345678-1234-1234-1234-123456789abc", QosClass::Burstable)
        );

        // Guaranteed, directly under kubepods (k3s).
        let id = from_cgroup_path(&format!(
            "/kubepods/pod74c13223-5a00-11e9-b385-42010a80018d/{ID_B}"
        ));
        assert_eq!(
            id.pod,
            pod("74c13223-5a00-11e9-b385-42010a80018d", QosClass::Guaranteed)
        );
        assert_eq!(id.container, container(Runtime::Unknown, ID_B));

        // cri-o with cgroupfs names its directory.
        let id = from_cgroup_path(&format!(
            "/kubepods/burstable/pod74c13223-5a00-11e9-b385-42010a80018d/crio-{ID_C}"
        ));
        assert_eq!(id.container, container(Runtime::CriO, ID_C));
        // A kubelet with --cgroup-root=/kubelet.
        let id = from_cgroup_path(&format!(
            "/kubelet/kubepods/besteffort/pod74c13223-5a00-11e9-b385-42010a80018d/{ID_B}"
        ));
        assert_eq!(
            id.pod,
            pod("74c13223-5a00-11e9-b385-42010a80018d", QosClass::BestEffort)
        );
    }

    #[test]
    fn kind_nodes_nest_the_kubelet_in_a_container() {
        // kind: the node is a docker container running systemd; its kubelet
        // uses --cgroup-root=/kubelet, so the slices carry a prefix.
        let id = from_cgroup_path(&format!(
            "/system.slice/docker-{ID_A}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod729d2f46_480d_4796_a76c_e227e2671d31.slice/cri-containerd-{ID_B}.scope"
        ));
        assert_eq!(
            id.pod,
            pod("729d2f46-480d-4796-a76c-e227e2671d31", QosClass::BestEffort)
        );
        // The pod's container, not the node's.
        assert_eq!(id.container, container(Runtime::Containerd, ID_B));
        // The host's unit is the node container's scope.
        assert_eq!(id.unit.unwrap().name, format!("docker-{ID_A}.scope"));
        // The pod's own cgroup in a kind node: the node's container is not
        // the pod's.
        let id = from_cgroup_path(&format!(
            "/system.slice/docker-{ID_A}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod729d2f46_480d_4796_a76c_e227e2671d31.slice"
        ));
        assert_eq!(
            id.pod,
            pod("729d2f46-480d-4796-a76c-e227e2671d31", QosClass::Guaranteed)
        );
        assert_eq!(id.container, None);
    }

    /// Paths as an agent in a pod reads them: relative to its own cgroup
    /// namespace root (here, its container's scope in a Burstable pod).
    #[test]
    fn paths_seen_from_a_cgroup_namespace() {
        // Another Burstable pod: the common ancestor is the QoS slice.
        let id = from_cgroup_path(&format!(
            "/../../kubepods-burstable-pod099b88fb_2a99_45ad_af94_d91eb81a87e9.slice/cri-containerd-{ID_B}.scope"
        ));
        assert_eq!(
            id.pod,
            pod("099b88fb-2a99-45ad-af94-d91eb81a87e9", QosClass::Burstable)
        );
        assert_eq!(id.container, container(Runtime::Containerd, ID_B));
        // A Guaranteed pod: the common ancestor is kubepods.slice.
        let id = from_cgroup_path(&format!(
            "/../../../kubepods-podd80f4a0e_576f_47a8_a0cf_69dc23dc1980.slice/cri-containerd-{ID_B}.scope"
        ));
        assert_eq!(
            id.pod,
            pod("d80f4a0e-576f-47a8-a0cf-69dc23dc1980", QosClass::Guaranteed)
        );
        // A host service.
        let id = from_cgroup_path("/../../../../system.slice/nginx.service");
        assert_eq!(
            id.unit,
            unit("system.slice/nginx.service", UnitKind::Service)
        );
        // cgroupfs driver: the QoS level is known when it is visible…
        let id = from_cgroup_path(&format!(
            "/../../../besteffort/pod74c13223-5a00-11e9-b385-42010a80018d/{ID_B}"
        ));
        assert_eq!(
            id.pod,
            pod("74c13223-5a00-11e9-b385-42010a80018d", QosClass::BestEffort)
        );
        assert_eq!(id.container, container(Runtime::Unknown, ID_B));
        // …and not otherwise.
        let id = from_cgroup_path(&format!(
            "/../../pod74c13223-5a00-11e9-b385-42010a80018d/{ID_B}"
        ));
        assert_eq!(
            id.pod,
            Some(Pod {
                uid: "74c13223-5a00-11e9-b385-42010a80018d".to_owned(),
                qos: None
            })
        );
        // The agent's own container: `/`.
        assert_eq!(from_cgroup_path("/"), Identity::default());
        // Rooted paths keep their strict checks.
        assert_eq!(
            from_cgroup_path("/kubepods-podd80f4a0e_576f_47a8_a0cf_69dc23dc1980.slice").pod,
            None
        );
        assert_eq!(
            from_cgroup_path("/pod74c13223-5a00-11e9-b385-42010a80018d").pod,
            None
        );
    }

    #[test]
    fn runc_unexpanded_systemd_path() {
        let id = from_cgroup_path(&format!(
            "/system.slice/containerd.service/kubepods-burstable-pod099b88fb_2a99_45ad_af94_d91eb81a87e9.slice:cri-containerd:{ID_B}"
        ));
        assert_eq!(id.container, container(Runtime::Containerd, ID_B));
        assert_eq!(
            id.unit,
            unit("system.slice/containerd.service", UnitKind::Service)
        );
        // Not a real nesting of slices, so no pod is claimed from it.
        assert_eq!(id.pod, None);
        assert_eq!(
            from_cgroup_path(&format!("/x.slice:runc:{ID_B}")).container,
            None,
            "unknown prefix"
        );
    }

    #[test]
    fn near_misses_are_not_identities() {
        let short = &ID_A[..63];
        let upper = ID_A.to_uppercase();
        for p in [
            format!("/system.slice/docker-{short}.scope"),
            format!("/system.slice/docker-{upper}.scope"),
            format!("/system.slice/docker-{ID_A}x.scope"),
            "/system.slice/docker-foo.scope".to_owned(),
            // docker and containerd only make scopes.
            format!("/system.slice/docker-{ID_A}"),
            format!("/cri-containerd-{ID_A}"),
            // A bare id outside a pod or docker/.
            format!("/somewhere/{ID_A}"),
            format!("/runc-{ID_A}.scope"),
        ] {
            assert_eq!(from_cgroup_path(&p).container, None, "{p}");
        }
        for p in [
            // A pod slice outside the slice it names.
            "/kubepods-burstable-pod099b88fb_2a99_45ad_af94_d91eb81a87e9.slice",
            "/kubepods.slice/kubepods-burstable-pod099b88fb_2a99_45ad_af94_d91eb81a87e9.slice",
            // Not a QoS level.
            "/kubepods.slice/kubepods-gold.slice/kubepods-gold-pod099b88fb_2a99_45ad_af94_d91eb81a87e9.slice",
            "/notkubepods.slice/notkubepods-pod099b88fb_2a99_45ad_af94_d91eb81a87e9.slice",
            // Not a UID.
            "/kubepods.slice/kubepods-podxyz.slice",
            "/kubepods.slice/kubepods-pod099b88fb_2a99_45ad_af94_d91eb81a87e.slice",
            "/kubepods.slice/kubepods-pod099b88fb_2a99_45ad_af94_d91eb81a87e9_.slice",
            "/kubepods.slice/kubepods-pod.slice",
            "/kubepods/burstable/podnot-a-uid",
            "/kubepods/gold/pod74c13223-5a00-11e9-b385-42010a80018d",
            "/elsewhere/burstable/pod74c13223-5a00-11e9-b385-42010a80018d",
            "/pod74c13223-5a00-11e9-b385-42010a80018d",
            "/kubepods/burstable",
            "/kubepods.slice/kubepods-burstable.slice",
        ] {
            assert_eq!(from_cgroup_path(p).pod, None, "{p}");
        }
    }

    #[test]
    fn proc_cgroup_files() {
        assert_eq!(
            proc_cgroup_v2_path("0::/system.slice/nginx.service\n"),
            Some("/system.slice/nginx.service")
        );
        // Hybrid hierarchy: v1 lines first.
        let hybrid = "12:pids:/system.slice/a.service\n1:name=systemd:/system.slice/a.service\n0::/system.slice/a.service\n";
        assert_eq!(proc_cgroup_v2_path(hybrid), Some("/system.slice/a.service"));
        assert_eq!(proc_cgroup_v2_path("4:memory:/docker/x\n"), None);
        assert_eq!(proc_cgroup_v2_path(""), None);
    }

    /// This very process's own cgroup, whatever it is: a real input.
    #[test]
    fn own_cgroup_parses() {
        if let Ok(s) = std::fs::read_to_string("/proc/self/cgroup")
            && let Some(p) = proc_cgroup_v2_path(&s)
        {
            let _ = from_cgroup_path(p);
        }
    }

    /// Total on any input: no panic on odd strings (multi-byte characters
    /// where the parser slices, separators alone, huge and deep paths) nor on
    /// a million pseudo-random paths built from the tokens it looks for.
    #[test]
    fn total_on_odd_input() {
        let odd = [
            "/",
            "//",
            ":::",
            "a:b:c:d",
            ".slice",
            "-pod.slice",
            "pod",
            "-",
            "é-podé.slice",
            "kubepods-podé.slice",
            "/kubepods.slice/kubepods-pod\u{1F600}.slice/docker-\u{1F600}.scope",
            "\0",
            "user@.service",
            "user.slice/user-.slice/user@.service/x.scope",
            "docker-",
            "docker-.scope",
            "-.slice/-.scope",
        ];
        for s in odd {
            let _ = from_cgroup_path(s);
        }
        let _ = from_cgroup_path(&"a/".repeat(100_000));
        let _ = from_cgroup_path(&"x".repeat(1 << 20));

        // Whole components of the shapes above, and pieces of them.
        let pod_slice = "kubepods-burstable-pod099b88fb_2a99_45ad_af94_d91eb81a87e9.slice";
        let docker_scope = format!("docker-{ID_A}.scope");
        let crio_scope = format!("crio-conmon-{ID_C}.scope");
        let runc_literal = format!("x.slice:cri-containerd:{ID_B}");
        let parts: &[&str] = &[
            "kubepods.slice",
            "kubepods-burstable.slice",
            pod_slice,
            "kubepods",
            "burstable",
            "besteffort",
            "pod74c13223-5a00-11e9-b385-42010a80018d",
            "docker",
            ID_A,
            &docker_scope,
            &crio_scope,
            &runc_literal,
            "system.slice",
            "nginx.service",
            "user.slice",
            "user-1000.slice",
            "user@1000.service",
            "init.scope",
            "-.slice",
            ".slice",
            "-pod",
            ":",
            "_",
            "-",
            "..",
            "..",
            "é",
            "\u{1F600}",
            "\\x2d",
            "",
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            // xorshift64*: reproducible, no dependency.
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let mut path = String::new();
        let mut found = [0usize; 3];
        for _ in 0..200_000 {
            path.clear();
            for _ in 0..(next() % 8) {
                let part = parts[(next() % parts.len() as u64) as usize];
                path.push('/');
                match next() % 4 {
                    // Cut at any byte that is a char boundary, or glue two.
                    0 => {
                        let cut = (next() % (part.len() as u64 + 1)) as usize;
                        let cut = (0..=cut)
                            .rev()
                            .find(|&c| part.is_char_boundary(c))
                            .unwrap_or(0);
                        path.push_str(&part[..cut]);
                    }
                    1 => {
                        path.push_str(part);
                        path.push_str(parts[(next() % parts.len() as u64) as usize]);
                    }
                    _ => path.push_str(part),
                }
            }
            let id = from_cgroup_path(&path);
            // Whatever is found is well-formed.
            if let Some(p) = &id.pod {
                assert!(is_pod_uid(&p.uid) && !p.uid.contains('_'), "{path}: {p:?}");
                found[0] += 1;
            }
            if let Some(c) = &id.container {
                assert!(is_container_id(&c.id), "{path}: {c:?}");
                found[1] += 1;
            }
            if let Some(u) = &id.unit {
                assert!(path.contains(&u.name), "{path}: {u:?}");
                found[2] += 1;
            }
        }
        // The generator reaches the interesting branches.
        assert!(found.iter().all(|&n| n > 0), "{found:?}");
    }
}
