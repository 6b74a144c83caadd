//! `--group-by`, exact: known children in one cgroup are summed into one
//! group whose counters equal the sum of their known calls and bytes, and
//! stay exactly where they were once the children exited and their own
//! series were dropped (their final counts folded into the group).

use std::{collections::BTreeMap, time::Duration};

use iolens_tests::{Agent, Metrics, TestChild, can_load_probes, in_ci, tempdir, wait_until};

const CHILD: &str = env!("CARGO_BIN_EXE_iolens-testchild");
const CHILDREN: usize = 3;

fn cgroup2_mount() -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next()? == "cgroup2")
            .then(|| pre.split_whitespace().nth(4).map(str::to_owned))?
    })
}

/// A group's samples: (name, labels other than the group's) -> value.
type View = BTreeMap<(String, Vec<(String, String)>), u64>;

/// Every sample of the group `cgroup=<label>` (values truncated to whole
/// numbers, as the seconds families are sums of floats).
fn group_view(m: &Metrics, label: &str) -> View {
    m.samples
        .iter()
        .filter(|s| s.labels.get("cgroup").map(String::as_str) == Some(label))
        .filter(|s| s.name != "iolens_group_members")
        .map(|s| {
            assert!(
                !s.labels.contains_key("pid"),
                "a pid label when grouped: {s:?}"
            );
            let rest = s
                .labels
                .iter()
                .filter(|(k, _)| k.as_str() != "cgroup")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            ((s.name.clone(), rest), s.value as u64)
        })
        .collect()
}

/// (syscall, path) -> (calls, bytes) of the group.
fn transfers(v: &View) -> BTreeMap<(String, String), (u64, u64)> {
    let mut out: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for ((name, labels), value) in v {
        let get = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let (Some(sc), Some(path)) = (get("syscall"), get("path")) else {
            continue;
        };
        let e = out.entry((sc, path)).or_default();
        match name.as_str() {
            "iolens_syscalls_total" => e.0 += value,
            "iolens_io_bytes_total" => e.1 += value,
            _ => {}
        }
    }
    out
}

#[test]
fn a_cgroup_group_sums_its_members_exactly_and_keeps_their_counts_after_exit() {
    let test = "a_cgroup_group_sums_its_members_exactly_and_keeps_their_counts_after_exit";
    if !can_load_probes(test) {
        return;
    }
    let Some(mount) = cgroup2_mount() else {
        assert!(!in_ci(), "CI machines of this kind mount cgroup2");
        eprintln!("skipped {test}: no cgroup2 mount");
        return;
    };
    let name = format!("iolens-group-{}", std::process::id());
    let cg = format!("{mount}/{name}");
    std::fs::create_dir(&cg).expect("create a cgroup");
    let label = format!("/{name}");

    // The children, moved into the cgroup before the agent first sees them
    // (a process's group is named from its cgroup when first seen).
    let dirs: Vec<String> = (0..CHILDREN)
        .map(|i| tempdir(&format!("group-{i}")))
        .collect();
    let mut children: Vec<TestChild> = dirs
        .iter()
        .map(|d| TestChild::spawn(CHILD, &["rw", d.as_str()]))
        .collect();
    for c in &children {
        std::fs::write(format!("{cg}/cgroup.procs"), c.pid().to_string()).expect("move a child");
    }
    let agent = Agent::start(&[
        "--group-by",
        "cgroup",
        "--exit-ttl",
        "2s",
        "--refresh",
        "200ms",
    ]);
    let before = group_view(&agent.scrape(), &label);

    // Each child's known calls and bytes, plus its handshake: one read of
    // "go\n" from the stdin pipe, the report in one write to stdout.
    let mut want: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for c in &mut children {
        let report = c.step();
        assert_eq!(report.end, "done");
        for k in &report.counts {
            let e = want.entry((k.syscall.clone(), k.path.clone())).or_default();
            e.0 += k.calls;
            e.1 += k.bytes;
        }
        let e = want
            .entry(("read".into(), "pipe_to_user".into()))
            .or_default();
        e.0 += 1;
        e.1 += 3;
        let e = want
            .entry(("write".into(), "user_to_pipe".into()))
            .or_default();
        e.0 += 1;
        e.1 += report.bytes;
    }
    let m = agent.scrape();
    assert!(
        m.has("iolens_group_members", &[("cgroup", &label)])
            && m.sum("iolens_group_members", &[("cgroup", &label)]) == CHILDREN as u64,
        "members of {label}"
    );
    let after = group_view(&m, &label);
    let (t0, t1) = (transfers(&before), transfers(&after));
    let got: BTreeMap<(String, String), (u64, u64)> = t1
        .iter()
        .filter_map(|(k, a)| {
            let b = t0.get(k).copied().unwrap_or_default();
            let d = (a.0 - b.0, a.1 - b.1);
            (d != (0, 0)).then(|| (k.clone(), d))
        })
        .collect();
    assert_eq!(
        got, want,
        "the group's delta vs the sum of its children's tallies"
    );

    // They exit. Once their counts have settled, the group's are fixed...
    let pids: Vec<u32> = children.iter().map(TestChild::pid).collect();
    for c in children {
        c.finish();
    }
    assert!(wait_until(Duration::from_secs(10), || pids
        .iter()
        .all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())));
    let mut settled = group_view(&agent.scrape(), &label);
    assert!(wait_until(Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(300));
        let now = group_view(&agent.scrape(), &label);
        let same = now == settled;
        settled = now;
        same
    }));
    // ...and stay exactly so after the members' series are dropped (2 s
    // exit-ttl): their final counts were folded into the group.
    let dropped = wait_until(Duration::from_secs(20), || {
        !agent
            .scrape()
            .has("iolens_group_members", &[("cgroup", &label)])
    });
    assert!(dropped, "the exited members were never dropped");
    let kept = group_view(&agent.scrape(), &label);
    assert_eq!(
        kept, settled,
        "the group's counters after its members were dropped"
    );
    for (k, v) in &after {
        assert!(kept.get(k).is_some_and(|k| k >= v), "{k:?} went backwards");
    }
    println!(
        "group {label}: {} samples, {} (syscall, path) pairs exact over {CHILDREN} children, unchanged after they were dropped",
        kept.len(),
        got.len()
    );
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
    let _ = std::fs::remove_dir(&cg);
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A group's labels.
type GroupLabels = Vec<(&'static str, String)>;

/// Every sample whose labels include all of `group`, keyed by name and its
/// other labels (values truncated to whole numbers).
fn view_of(m: &Metrics, group: &[(&str, String)]) -> View {
    m.samples
        .iter()
        .filter(|s| s.name != "iolens_group_members")
        .filter(|s| {
            group
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v.as_str()))
        })
        .map(|s| {
            let rest = s
                .labels
                .iter()
                .filter(|(k, _)| !group.iter().any(|(g, _)| g == k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            ((s.name.clone(), rest), s.value as u64)
        })
        .collect()
}

/// Unit, container and pod groups, each from a cgroup of the shape systemd,
/// containerd and the kubelet make (under a test cgroup): two known
/// children in it are one group with the labels the path names, and its
/// calls and bytes are their sum.
#[test]
fn unit_container_and_pod_groups_are_named_from_the_cgroup_path() {
    let test = "unit_container_and_pod_groups_are_named_from_the_cgroup_path";
    if !can_load_probes(test) {
        return;
    }
    let Some(mount) = cgroup2_mount() else {
        assert!(!in_ci(), "CI machines of this kind mount cgroup2");
        eprintln!("skipped {test}: no cgroup2 mount");
        return;
    };
    let me = std::process::id();
    let id = format!("{:016x}", 0x1010_u64 * u64::from(me)).repeat(4);
    let uid = "0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6";
    let pod_path = format!(
        "iolens-group-{me}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
        uid.replace('-', "_")
    );
    let unit_path = format!("iolensgroup{me}.slice/iolens{me}.service");
    // (--group-by, the cgroup, the group's labels)
    let cases: [(&str, &str, GroupLabels); 3] = [
        ("unit", &unit_path, vec![("unit", unit_path.clone())]),
        (
            "container",
            &pod_path,
            vec![
                ("container_id", id.clone()),
                ("runtime", "containerd".into()),
            ],
        ),
        (
            "pod",
            &pod_path,
            vec![("pod_uid", uid.into()), ("qos_class", "Burstable".into())],
        ),
    ];
    for (by, path, labels) in &cases {
        let cg = format!("{mount}/{path}");
        std::fs::create_dir_all(&cg).expect("create the cgroups");
        let dirs: Vec<String> = (0..2).map(|i| tempdir(&format!("{by}-{i}"))).collect();
        let mut children: Vec<TestChild> = dirs
            .iter()
            .map(|d| TestChild::spawn(CHILD, &["rw", d.as_str()]))
            .collect();
        for c in &children {
            std::fs::write(format!("{cg}/cgroup.procs"), c.pid().to_string())
                .expect("move a child");
        }
        let agent = Agent::start(&["--group-by", by]);
        let before = transfers(&view_of(&agent.scrape(), labels));
        let mut want: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        for c in &mut children {
            let report = c.step();
            for k in &report.counts {
                let e = want.entry((k.syscall.clone(), k.path.clone())).or_default();
                e.0 += k.calls;
                e.1 += k.bytes;
            }
            let e = want
                .entry(("read".into(), "pipe_to_user".into()))
                .or_default();
            e.0 += 1;
            e.1 += 3;
            let e = want
                .entry(("write".into(), "user_to_pipe".into()))
                .or_default();
            e.0 += 1;
            e.1 += report.bytes;
        }
        let m = agent.scrape();
        let members: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            m.sum("iolens_group_members", &members),
            2,
            "--group-by {by}: members of {labels:?}"
        );
        let after = transfers(&view_of(&m, labels));
        let got: BTreeMap<(String, String), (u64, u64)> = after
            .iter()
            .filter_map(|(k, a)| {
                let b = before.get(k).copied().unwrap_or_default();
                let d = (a.0 - b.0, a.1 - b.1);
                (d != (0, 0)).then(|| (k.clone(), d))
            })
            .collect();
        assert_eq!(
            got, want,
            "--group-by {by}: the group's delta vs its children's tallies"
        );
        println!("--group-by {by}: {labels:?} exact over 2 children");
        for c in children {
            c.finish();
        }
        let (status, log) = agent.stop();
        assert!(status.success(), "{log}");
        for d in dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    // Deepest first; the children have exited.
    for path in [&pod_path, &unit_path] {
        let mut p = std::path::PathBuf::from(format!("{mount}/{path}"));
        while p != std::path::Path::new(&mount) {
            let _ = std::fs::remove_dir(&p);
            p.pop();
        }
    }
}
