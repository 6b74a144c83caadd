//! Metric families written straight into the Prometheus text format.
//!
//! Each sample becomes its line of text as it is added, so a scrape holds
//! the exposition and nothing more: with 10,000 processes (190,000 series)
//! the prometheus crate's `MetricFamily` structs, a few hundred bytes and
//! several allocations per series before a byte was encoded, took most of
//! a scrape's time and held some 100 MB. The text is byte for byte what
//! that crate's `TextEncoder` writes (escaping, number formatting,
//! histogram lines), so the exposition did not change.
//!
//! Under `--group-by` a per-process sample is not written but summed into
//! its group's (see `group.rs`); the sums are written when the family is
//! finished.

use std::{
    collections::{BTreeMap, HashSet},
    io::Write as _,
};

use iolens_common::{WAIT_BUCKETS, WAIT_SLOT_COUNT, WAIT_SLOT_SUM_NS, WAIT_SLOTS};

use super::Tracker;

/// The metric types the agent exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// What a family does with per-process samples.
#[derive(Debug, Clone, Copy)]
pub(super) enum Mode<'a> {
    /// One series per process: `pid`, `comm` (and `cgroup`) labels.
    PerProcess,
    /// Summed into the process's group (--group-by), on top of what its
    /// dropped members had counted (by family name, then group and labels:
    /// the sums start from these, in the order the prometheus-crate
    /// exposition added them).
    Grouped(&'a BTreeMap<(&'static str, GroupKey), f64>),
    /// Only these processes' samples, summed by group (their final counts,
    /// folded into the groups before their series are dropped); nothing is
    /// written.
    Fold(&'a HashSet<u32>),
}

/// A grouped sample's labels: the group's, then the family's own.
pub(super) type GroupKey = Vec<(&'static str, String)>;

/// One metric family: its header and its sample lines.
#[derive(Debug)]
pub struct Family<'a> {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    mode: Mode<'a>,
    /// Sample lines in the text format.
    text: Vec<u8>,
    /// Series written into `text`.
    series: usize,
    /// Grouped (or folded) per-process samples, written at `finish`.
    sums: BTreeMap<GroupKey, f64>,
}

impl<'a> Family<'a> {
    pub(super) fn new(name: &'static str, help: &'static str, kind: Kind) -> Family<'a> {
        Family {
            name,
            help,
            kind,
            mode: Mode::PerProcess,
            text: Vec::new(),
            series: 0,
            sums: BTreeMap::new(),
        }
    }

    pub(super) fn with_mode(mut self, mode: Mode<'a>) -> Family<'a> {
        self.mode = mode;
        if let Mode::Grouped(folded) = mode {
            self.sums = folded
                .range((self.name, Vec::new())..)
                .take_while(|((n, _), _)| *n == self.name)
                .map(|((_, key), v)| (key.clone(), *v))
                .collect();
        }
        self
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// No series (such a family is left out of the exposition).
    pub fn is_empty(&self) -> bool {
        self.series == 0 && self.sums.is_empty()
    }

    /// A sample that belongs to no process.
    pub(super) fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        if matches!(self.mode, Mode::Fold(_)) {
            return;
        }
        self.text.extend_from_slice(self.name.as_bytes());
        write_labels(&mut self.text, labels, None);
        write_value(&mut self.text, value);
        self.series += 1;
    }

    /// A process's sample: `pid`, `comm` (and with --cgroup-label `cgroup`)
    /// from the tracker, then `labels`; grouped, summed into its group.
    pub(super) fn proc_sample(
        &mut self,
        t: &Tracker,
        tgid: u32,
        labels: &[(&'static str, &str)],
        value: f64,
    ) {
        match self.mode {
            Mode::PerProcess => {}
            Mode::Grouped(_) => return self.add_to_group(t, tgid, labels, value),
            Mode::Fold(gone) if gone.contains(&tgid) => {
                return self.add_to_group(t, tgid, labels, value);
            }
            Mode::Fold(_) => return,
        }
        let p = t.procs.get(&tgid);
        let out = &mut self.text;
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(b"{pid=\"");
        let _ = write!(out, "{tgid}");
        out.extend_from_slice(b"\",comm=\"");
        escape_into(out, p.map_or("unknown", |p| p.comm.as_str()), true);
        out.push(b'"');
        if t.cgroup_label {
            out.extend_from_slice(b",cgroup=\"");
            escape_into(
                out,
                p.and_then(|p| p.cgroup.as_deref()).unwrap_or("unknown"),
                true,
            );
            out.push(b'"');
        }
        for (k, v) in labels {
            label_into(out, b",", k, v);
        }
        out.push(b'}');
        write_value(out, value);
        self.series += 1;
    }

    fn add_to_group(
        &mut self,
        t: &Tracker,
        tgid: u32,
        labels: &[(&'static str, &str)],
        value: f64,
    ) {
        let mut key = t.group_key(tgid);
        key.extend(labels.iter().map(|(k, v)| (*k, (*v).to_owned())));
        *self.sums.entry(key).or_default() += value;
    }

    /// A histogram sample: cumulative `buckets` (upper bound, count), then
    /// the `+Inf` bucket, the sum and the count, as the text format has them.
    pub(super) fn histogram(
        &mut self,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        count: u64,
        sum: f64,
    ) {
        if matches!(self.mode, Mode::Fold(_)) {
            return;
        }
        let mut inf_seen = false;
        for (upper, cum) in buckets {
            let le = upper.to_string();
            self.histogram_line("_bucket", labels, Some(le.as_str()), *cum as f64);
            inf_seen |= upper.is_sign_positive() && upper.is_infinite();
        }
        if !inf_seen {
            self.histogram_line("_bucket", labels, Some("+Inf"), count as f64);
        }
        self.histogram_line("_sum", labels, None, sum);
        self.histogram_line("_count", labels, None, count as f64);
        self.series += 1;
    }

    /// A histogram sample from the kernel side's log2 slots (the epoll
    /// and block latency histograms): bucket i holds [2^i, 2^(i+1)) ns,
    /// the last everything longer, then the count and the sum in ns.
    /// Upper bounds are published from 1 µs (2^10 ns) so the series stay
    /// few; `buckets` is a scratch vector kept across samples.
    pub(super) fn log2_histogram(
        &mut self,
        labels: &[(&str, &str)],
        slots: &[u64; WAIT_SLOTS],
        buckets: &mut Vec<(f64, u64)>,
    ) {
        buckets.clear();
        let mut cum = 0u64;
        for (i, n) in slots[..WAIT_BUCKETS - 1].iter().enumerate() {
            cum += n;
            if i >= 9 {
                buckets.push(((1u64 << (i + 1)) as f64 / 1e9, cum));
            }
        }
        self.histogram(
            labels,
            buckets,
            slots[WAIT_SLOT_COUNT],
            slots[WAIT_SLOT_SUM_NS] as f64 / 1e9,
        );
    }

    fn histogram_line(&mut self, suffix: &str, labels: &[(&str, &str)], le: Option<&str>, v: f64) {
        self.text.extend_from_slice(self.name.as_bytes());
        self.text.extend_from_slice(suffix.as_bytes());
        write_labels(&mut self.text, labels, le.map(|le| ("le", le)));
        write_value(&mut self.text, v);
    }

    /// Writes the grouped sums, in label order.
    pub(super) fn finish(&mut self) {
        if !matches!(self.mode, Mode::Grouped(_)) {
            return;
        }
        let sums = std::mem::take(&mut self.sums);
        for (key, v) in &sums {
            let labels: Vec<(&str, &str)> = key.iter().map(|(k, v)| (*k, v.as_str())).collect();
            self.sample(&labels, *v);
        }
    }

    /// Takes the folded sums out (Mode::Fold).
    pub(super) fn into_sums(self) -> BTreeMap<GroupKey, f64> {
        self.sums
    }
}

/// `{a="x",b="y"}` (nothing when there are no labels), escaped.
fn write_labels(out: &mut Vec<u8>, labels: &[(&str, &str)], extra: Option<(&str, &str)>) {
    if labels.is_empty() && extra.is_none() {
        return;
    }
    let mut sep: &[u8] = b"{";
    for (k, v) in labels.iter().chain(extra.as_ref()) {
        label_into(out, sep, k, v);
        sep = b",";
    }
    out.push(b'}');
}

fn label_into(out: &mut Vec<u8>, sep: &[u8], name: &str, value: &str) {
    out.extend_from_slice(sep);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    escape_into(out, value, true);
    out.push(b'"');
}

/// ` VALUE\n`, the number as Rust's `Display` writes an f64 (what the
/// prometheus crate writes).
fn write_value(out: &mut Vec<u8>, value: f64) {
    let _ = writeln!(out, " {value}");
}

/// The text format's escapes: backslash and newline everywhere, and the
/// double quote in label values.
fn escape_into(out: &mut Vec<u8>, s: &str, quote: bool) {
    for &b in s.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' if quote => out.extend_from_slice(b"\\\""),
            _ => out.push(b),
        }
    }
}

/// The exposition: every non-empty family, header and samples.
pub fn encode(families: &[Family<'_>]) -> Vec<u8> {
    let size = families
        .iter()
        .map(|f| f.text.len() + 2 * f.name.len() + f.help.len() + 32)
        .sum();
    let mut out = Vec::with_capacity(size);
    for f in families.iter().filter(|f| f.series > 0) {
        out.extend_from_slice(b"# HELP ");
        out.extend_from_slice(f.name.as_bytes());
        out.push(b' ');
        escape_into(&mut out, f.help, false);
        out.extend_from_slice(b"\n# TYPE ");
        out.extend_from_slice(f.name.as_bytes());
        out.push(b' ');
        out.extend_from_slice(f.kind.name().as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&f.text);
    }
    out
}
