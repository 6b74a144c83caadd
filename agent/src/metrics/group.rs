//! `--group-by`: per-process series summed into groups in the agent (the
//! kernel stays per process), so a fleet's Prometheus sees one series per
//! group, not per pid.
//!
//! A group is named from the process's cgroup v2 path, read once when the
//! agent first sees the process ([`crate::identity`]): the cgroup itself,
//! its systemd unit, its container, or its Kubernetes pod. A group's
//! counters never go backwards: when a member's series are dropped (its
//! exit-ttl ended, or `--max-processes` evicted it) its final counts are
//! folded into the group's base first. At most `--max-groups` groups are
//! made; the processes of any further group are summed into one group whose
//! labels all read `other`, and iolens_groups_overflowed_total counts them.

use std::collections::{BTreeMap, HashSet};

use super::{Expired, Family, Kind, Mode, Tracker, text::GroupKey};
use crate::identity;

/// What per-process series are summed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum GroupBy {
    /// One series per process (`pid`, `comm`): no grouping.
    #[default]
    Pid,
    /// The cgroup v2 path (`cgroup`).
    Cgroup,
    /// The systemd unit (`unit`: `system.slice/nginx.service`; `none`).
    Unit,
    /// The container (`container_id`, `runtime`; `none`).
    Container,
    /// The Kubernetes pod (`pod_uid`, `qos_class`; `none`).
    Pod,
}

/// A group's labels, in order.
pub(super) type GroupLabels = Vec<(&'static str, String)>;

/// The group a cgroup path names.
pub(super) fn group_labels(by: GroupBy, cgroup: &str) -> GroupLabels {
    let none = || "none".to_owned();
    let id = identity::from_cgroup_path(cgroup);
    match by {
        GroupBy::Pid => Vec::new(),
        GroupBy::Cgroup => vec![("cgroup", cgroup.to_owned())],
        GroupBy::Unit => vec![("unit", id.unit.map_or_else(none, |u| u.path))],
        GroupBy::Container => match id.container {
            Some(c) => vec![
                ("container_id", c.id),
                ("runtime", c.runtime.as_str().to_owned()),
            ],
            None => vec![("container_id", none()), ("runtime", none())],
        },
        GroupBy::Pod => match id.pod {
            Some(p) => vec![
                ("pod_uid", p.uid),
                (
                    "qos_class",
                    p.qos.map_or_else(none, |q| q.as_str().to_owned()),
                ),
            ],
            None => vec![("pod_uid", none()), ("qos_class", none())],
        },
    }
}

/// One grouped sample: its family and its labels (group first).
type SampleKey = (&'static str, GroupKey);

/// The grouping state the tracker keeps.
#[derive(Debug, Default)]
pub(super) struct Groups {
    pub by: GroupBy,
    pub max: usize,
    /// Groups made so far (never forgotten: their base keeps them).
    known: HashSet<GroupLabels>,
    /// Processes summed into the `other` group.
    pub overflowed: u64,
    /// Final counts of members whose series were dropped.
    pub(super) folded: BTreeMap<SampleKey, f64>,
}

impl Groups {
    pub fn new(by: GroupBy, max: usize) -> Groups {
        Groups {
            by,
            max: max.max(1),
            ..Groups::default()
        }
    }

    /// The group of a process first seen in `cgroup`, within the bound.
    pub fn assign(&mut self, cgroup: &str) -> GroupLabels {
        let g = group_labels(self.by, cgroup);
        if self.known.contains(&g) {
            return g;
        }
        if self.known.len() >= self.max {
            self.overflowed += 1;
            return g
                .into_iter()
                .map(|(k, _)| (k, "other".to_owned()))
                .collect();
        }
        self.known.insert(g.clone());
        g
    }
}

impl Tracker {
    /// The labels of a process's group: `unknown` values for a process
    /// whose cgroup was never read.
    pub(super) fn group_key(&self, tgid: u32) -> GroupKey {
        self.procs
            .get(&tgid)
            .and_then(|p| p.group.clone())
            .unwrap_or_else(|| {
                group_labels(self.groups.by, "unknown")
                    .into_iter()
                    .map(|(k, _)| (k, "unknown".to_owned()))
                    .collect()
            })
    }

    /// Folds the final counts of processes about to be dropped into their
    /// groups. Call before deleting their keys and [`Tracker::forgot`].
    pub fn fold_expired(&mut self, expired: &[Expired]) {
        if self.groups.by == GroupBy::Pid || expired.is_empty() {
            return;
        }
        let gone: HashSet<u32> = expired.iter().map(|e| e.tgid).collect();
        let mut add = Vec::new();
        for f in self.per_process_families(Mode::Fold(&gone)) {
            if f.kind() != Kind::Counter {
                continue;
            }
            let name = f.name();
            add.extend(f.into_sums().into_iter().map(|(k, v)| ((name, k), v)));
        }
        for (key, v) in add {
            *self.groups.folded.entry(key).or_default() += v;
        }
    }

    /// Members per group and the overflow counter (grouped runs only).
    pub(super) fn group_families(&self) -> Vec<Family<'static>> {
        let mut members = Family::new(
            "iolens_group_members",
            "Processes with series summed into the group now (--group-by), exited ones in their grace period included.",
            Kind::Gauge,
        );
        let mut overflowed = Family::new(
            "iolens_groups_overflowed_total",
            "Processes summed into the group labelled `other` because --max-groups groups already existed.",
            Kind::Counter,
        );
        if self.groups.by == GroupBy::Pid {
            return vec![members, overflowed];
        }
        let mut count: BTreeMap<&GroupLabels, u64> = BTreeMap::new();
        for p in self.procs.values() {
            if let Some(g) = &p.group {
                *count.entry(g).or_default() += 1;
            }
        }
        for (g, n) in count {
            let labels: Vec<(&str, &str)> = g.iter().map(|(k, v)| (*k, v.as_str())).collect();
            members.sample(&labels, n as f64);
        }
        overflowed.sample(&[], self.groups.overflowed as f64);
        vec![members, overflowed]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_from_cgroup_paths() {
        assert_eq!(
            group_labels(GroupBy::Unit, "/system.slice/nginx.service"),
            vec![("unit", "system.slice/nginx.service".to_owned())]
        );
        assert_eq!(
            group_labels(GroupBy::Unit, "/"),
            vec![("unit", "none".to_owned())]
        );
        let id = "0123456789abcdef".repeat(4);
        let docker = format!("/system.slice/docker-{id}.scope");
        assert_eq!(
            group_labels(GroupBy::Container, &docker),
            vec![
                ("container_id", id.clone()),
                ("runtime", "docker".to_owned())
            ]
        );
        let pod = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_0000_1111_2222_333344445555.slice/cri-containerd-{id}.scope"
        );
        assert_eq!(
            group_labels(GroupBy::Pod, &pod),
            vec![
                ("pod_uid", "1b2c3d4e-0000-1111-2222-333344445555".to_owned()),
                ("qos_class", "Burstable".to_owned())
            ]
        );
    }

    /// The shapes tests/tests/group_by.rs makes under a test cgroup.
    #[test]
    fn groups_below_a_test_cgroup() {
        let id = "ab".repeat(32);
        let pod = format!(
            "/iolens-group-1/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0d1e2f3a_4b5c_6d7e_8f90_a1b2c3d4e5f6.slice/cri-containerd-{id}.scope"
        );
        assert_eq!(
            group_labels(GroupBy::Pod, &pod),
            vec![
                ("pod_uid", "0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6".to_owned()),
                ("qos_class", "Burstable".to_owned())
            ]
        );
        assert_eq!(
            group_labels(GroupBy::Container, &pod),
            vec![("container_id", id), ("runtime", "containerd".to_owned())]
        );
        assert_eq!(
            group_labels(GroupBy::Unit, "/iolensgroup1.slice/iolens1.service"),
            vec![("unit", "iolensgroup1.slice/iolens1.service".to_owned())]
        );
    }

    #[test]
    fn groups_beyond_the_bound_are_other() {
        let mut g = Groups::new(GroupBy::Cgroup, 2);
        assert_eq!(g.assign("/a"), vec![("cgroup", "/a".to_owned())]);
        assert_eq!(g.assign("/b"), vec![("cgroup", "/b".to_owned())]);
        assert_eq!(g.assign("/a"), vec![("cgroup", "/a".to_owned())]);
        assert_eq!(g.assign("/c"), vec![("cgroup", "other".to_owned())]);
        assert_eq!(g.overflowed, 1);
    }
}
