//! Helpers the family test files share: a scenario (the agent and, started
//! under it, the test child) and reading one pid's counters.
#![allow(dead_code)]

use iolens_tests::{Agent, Metrics, TestChild, tempdir};

pub const CHILD: &str = env!("CARGO_BIN_EXE_iolens-testchild");

/// An unfiltered agent and, started under it so that every event of its life
/// is seen, the test child running one scenario in its own scratch directory.
pub struct Scenario {
    pub agent: Agent,
    pub child: TestChild,
    pub pid: u32,
    pub dir: String,
}

impl Scenario {
    /// Starts the agent, then `iolens-testchild NAME DIR EXTRA…` (DIR is a
    /// fresh scratch directory named after the scenario).
    pub fn start(name: &str, extra: &[&str]) -> Scenario {
        let agent = Agent::start(&[]);
        let dir = tempdir(name);
        let mut args = vec![name, dir.as_str()];
        args.extend_from_slice(extra);
        let child = TestChild::spawn(CHILD, &args);
        let pid = child.pid();
        Scenario {
            agent,
            child,
            pid,
            dir,
        }
    }

    pub fn scrape(&self) -> Metrics {
        self.agent.scrape()
    }

    /// Lets the child exit and removes its scratch directory.
    pub fn finish(self) {
        self.child.finish();
        let _ = std::fs::remove_dir_all(self.dir);
    }
}

pub fn get(m: &Metrics, name: &str, pid: u32, more: &[(&str, &str)]) -> u64 {
    let pid = pid.to_string();
    let mut want = vec![("pid", pid.as_str())];
    want.extend_from_slice(more);
    m.sum(name, &want)
}

/// How much `name` (with labels `more`) grew for `pid` from `a` to `b`.
pub fn grew(a: &Metrics, b: &Metrics, name: &str, pid: u32, more: &[(&str, &str)]) -> u64 {
    get(b, name, pid, more) - get(a, name, pid, more)
}

pub fn get_f(m: &Metrics, name: &str, pid: u32) -> f64 {
    get_f_with(m, name, pid, &[])
}

/// The sum of `name`'s samples for `pid` with labels `more`, unrounded (for
/// seconds).
pub fn get_f_with(m: &Metrics, name: &str, pid: u32, more: &[(&str, &str)]) -> f64 {
    let pid = pid.to_string();
    m.samples
        .iter()
        .filter(|s| {
            s.name == name
                && s.labels.get("pid") == Some(&pid)
                && more
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}
