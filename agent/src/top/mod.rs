//! `iolens top`: a live terminal view, one row per process, of how bytes
//! move (through user space or zero-copy), at what cost in copies,
//! syscalls, context switches and CPU, with page-cache and epoll/io_uring
//! efficiency — rates over an interval, computed from the agent's
//! Prometheus exposition. `top` reads only that text, so it works against
//! any `iolens run`, local or remote, and is independent of how the agent
//! reads its maps.

pub mod expo;
pub mod model;
mod source;
mod ui;

use std::{
    io::{IsTerminal as _, Write as _},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use tracing::info;

pub use self::model::{Column, GroupBy};
use self::{
    model::{Filter, Snapshot, View},
    source::{LocalAgent, Target},
};
use crate::agent::UsageError;

/// Options of `iolens top`.
#[derive(Debug, Args, Clone)]
#[command(after_long_help = AFTER_HELP)]
pub struct TopArgs {
    /// Read the metrics of a running `iolens run` at this address instead of
    /// loading the probes here. Needs no privileges; works across machines.
    /// Plain HTTP without credentials only, so far: an agent whose
    /// --web.config.file turns on TLS or basic auth is not readable by
    /// `top` yet. Without it, `top` needs root: it starts `iolens run --listen
    /// 127.0.0.1:0` as its child and stops it on exit.
    #[arg(long, value_name = "http://HOST:PORT/metrics")]
    pub url: Option<String>,

    /// Time between refreshes; rates are averages over it (e.g. 1s, 500ms, 2s).
    #[arg(long, default_value = "1s", value_parser = parse_interval, value_name = "DURATION")]
    pub interval: Duration,

    /// Print one snapshot (rates over one interval) as a plain table and
    /// exit. Implied when stdout is not a terminal.
    #[arg(long)]
    pub once: bool,

    /// Print the snapshot as JSON instead (implies --once; schema
    /// `iolens.top.v1`): rates, the counters' change over the interval and
    /// their totals, per process, and the machine's totals.
    #[arg(long)]
    pub json: bool,

    /// Column to sort by (the keys < and > change it in the live view).
    #[arg(long, value_enum, default_value = "user", value_name = "COLUMN")]
    pub sort: Column,

    /// Reverse the sort order (numbers sort largest first by default).
    #[arg(long)]
    pub reverse: bool,

    /// Show only processes whose name contains this text, or with this pid.
    #[arg(long, value_name = "NAME|PID")]
    pub filter: Option<String>,

    /// Hide processes that did nothing in the interval.
    #[arg(long)]
    pub active: bool,
}

const AFTER_HELP: &str = "\
Columns (rates over the interval):
  USER/s   bytes/s through user space: syscall paths with a `user` end
  ZCOPY/s  bytes/s that never entered user space (sendfile, splice, …)
  CPY/B    estimated CPU copies per byte moved (copy model: a byte through
           user space is one copy; a zero-copy byte none)
  SYSC/s   syscalls/s          VCSW/s ICSW/s  voluntary/involuntary switches/s
  CPU%     % of one CPU        HIT%   page-cache hit % (README, Design)
  WAIT%    time slept inside syscalls, % of one thread (threads summed)
  DISK/s   bytes/s disks read and wrote for its own block requests
  EPWK/s   epoll wakeups/s     EV/WK  events per wakeup
  OP/ENT   io_uring SQEs per io_uring_enter

Keys in the live view: < > (or ← →) sort column, r reverse, / filter,
space pause, i hide idle, ↑ ↓ PgUp PgDn scroll, h or ? help, q or Ctrl-C quit.

Exit status: 0; 2 when the source cannot be used (a bad --url, a refused
connection, an endpoint without iolens_ metrics, no root without --url).";

fn parse_interval(s: &str) -> Result<Duration, String> {
    let (num, mul) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (examples: 1s, 500ms, 2)"))?;
    let d = v * mul;
    if !d.is_finite() || !(0.1..=3600.0).contains(&d) {
        return Err(format!("`{s}`: the interval must be between 100ms and 1h"));
    }
    Ok(Duration::from_secs_f64(d))
}

/// The source of snapshots: an HTTP target, and the agent behind it when
/// `top` started one.
struct Source {
    target: Target,
    rt: tokio::runtime::Runtime,
    by: GroupBy,
    /// Stopped (SIGTERM, probes detached) when dropped.
    _local: Option<LocalAgent>,
}

impl Source {
    fn open(args: &TopArgs) -> anyhow::Result<Source> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let (target, local) = match &args.url {
            Some(url) => (Target::parse(url)?, None),
            None => {
                crate::agent::check_privileges().map_err(|e| {
                    UsageError(format!(
                        "{e}; or watch a running agent without privileges: iolens top --url http://HOST:PORT/metrics"
                    ))
                })?;
                let local = LocalAgent::start()?;
                (local.target.clone(), Some(local))
            }
        };
        Ok(Source {
            target,
            rt,
            by: GroupBy::default(),
            _local: local,
        })
    }

    /// The first scrape: every way a source can be unusable is found here,
    /// before the terminal is touched, and is a one-line exit 2.
    fn first(&self) -> anyhow::Result<Snapshot> {
        let s = self.sample().map_err(|e| UsageError(e.to_string()))?;
        if s.iolens_samples == 0 {
            return Err(UsageError(format!(
                "{} serves no iolens_ metrics: it is not an iolens agent's /metrics",
                self.target.url
            ))
            .into());
        }
        Ok(s)
    }

    fn sample(&self) -> Result<Snapshot, String> {
        let text = self
            .rt
            .block_on(self.target.fetch())
            .map_err(|e| e.to_string())?;
        let at = Instant::now();
        let samples = expo::parse(&text).map_err(|e| {
            format!(
                "{} did not serve Prometheus text metrics ({e}); is it an iolens agent's /metrics?",
                self.target.url
            )
        })?;
        Ok(Snapshot::from_samples(&samples, self.by, at))
    }

    fn describe(&self) -> String {
        match &self._local {
            Some(a) => format!("local agent (pid {})", a.pid()),
            None => self.target.url.clone(),
        }
    }
}

/// `iolens top`.
pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let once = args.once || args.json || !std::io::stdout().is_terminal();
    let source = Source::open(&args)?;
    let first = source.first()?;
    if once {
        return print_once(&args, &source, first);
    }
    ui::run(&args, &source, first)
}

/// What `--once --json` prints.
#[derive(Serialize)]
struct OnceJson<'a> {
    schema: &'static str,
    source: String,
    #[serde(flatten)]
    view: &'a View,
}

fn print_once(args: &TopArgs, source: &Source, first: Snapshot) -> anyhow::Result<()> {
    info!(
        "first sample taken from {}; the next in {:.1} s",
        source.target.url,
        args.interval.as_secs_f64()
    );
    std::thread::sleep(args.interval);
    let second = source.sample().map_err(|e| anyhow::anyhow!(e))?;
    let mut view = View::between(&first, &second);
    let filter = Filter::new(args.filter.as_deref().unwrap_or(""));
    view.rows
        .retain(|r| filter.matches(r) && (!args.active || r.active()));
    model::sort(&mut view.rows, args.sort, args.reverse);

    let out = if args.json {
        let mut s = serde_json::to_string_pretty(&OnceJson {
            schema: "iolens.top.v1",
            source: source.describe(),
            view: &view,
        })
        .context("encoding JSON")?;
        s.push('\n');
        s
    } else {
        table(&view, args.sort)
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A closed pipe (`| head`) is a clean exit.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

/// The machine totals, in two lines of at most 80 columns (the live
/// view's header; `--once` joins them).
fn totals_lines(v: &View) -> [String; 2] {
    let t = &v.totals;
    [
        format!(
            "{} procs  user {}/s  zero-copy {}/s  CPU {:.0}%  disk {}/s",
            v.processes,
            model::bytes(t.user_bytes_per_sec),
            model::bytes(t.zero_copy_bytes_per_sec),
            t.cpu_percent,
            model::bytes(t.disk_bytes_per_sec),
        ),
        format!(
            "syscalls {}/s  switches {}/s vol {}/s invol  probes {}/{}",
            model::count(t.syscalls_per_sec),
            model::count(t.voluntary_switches_per_sec),
            model::count(t.involuntary_switches_per_sec),
            v.health.probes_attached,
            v.health.probes_total,
        ),
    ]
}

/// Kernel updates lost in the interval, if any: then counts are low.
fn health_warning(v: &View) -> Option<String> {
    let h = &v.health_delta;
    (h.events_dropped > 0 || h.map_evictions > 0).then(|| {
        format!(
            "{} kernel updates dropped, {} map evictions in the interval: counts may be low",
            h.events_dropped, h.map_evictions
        )
    })
}

/// The plain table of `--once`: every column, aligned, no colours.
fn table(v: &View, sort: Column) -> String {
    let [a, b] = totals_lines(v);
    let mut s = format!("{a}  {b}  (over {:.2} s)\n", v.interval_seconds);
    if let Some(w) = health_warning(v) {
        s.push_str(&w);
        s.push('\n');
    }
    let comm_w = v
        .rows
        .iter()
        .map(|r| r.comm.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 16);
    let width = |c: Column| match c {
        Column::Comm => comm_w,
        c => c.width() as usize,
    };
    let line = |cells: &mut dyn Iterator<Item = (Column, String)>| {
        let mut l = String::new();
        for (c, text) in cells {
            if !l.is_empty() {
                l.push(' ');
            }
            let w = width(c);
            if c == Column::Comm {
                let t: String = text.chars().take(w).collect();
                l.push_str(&format!("{t:<w$}"));
            } else {
                l.push_str(&format!("{text:>w$}"));
            }
        }
        l.truncate(l.trim_end().len());
        l.push('\n');
        l
    };
    s.push_str(&line(&mut Column::ALL.iter().map(|&c| {
        let h = if c == sort {
            format!("{}*", c.header())
        } else {
            c.header().to_owned()
        };
        (c, h)
    })));
    for r in &v.rows {
        s.push_str(&line(&mut Column::ALL.iter().map(|&c| (c, c.cell(r)))));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_interval("10ms").is_err());
        assert!(parse_interval("soon").is_err());
        assert!(parse_interval("-1").is_err());
    }

    #[test]
    fn plain_table() {
        let t0 = Instant::now();
        let text = |n: u64| {
            format!(
                "iolens_io_bytes_total{{pid=\"7\",comm=\"a-long-process-name\",syscall=\"write\",path=\"user_to_file\"}} {n}\n\
                 iolens_probe_attached{{program=\"p\",tracepoint=\"t\"}} 1\n"
            )
        };
        let snap = |n, at| {
            let t = text(n);
            Snapshot::from_samples(&expo::parse(&t).expect("parses"), GroupBy::Process, at)
        };
        let v = View::between(&snap(0, t0), &snap(2048, t0 + Duration::from_secs(1)));
        let out = table(&v, Column::User);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("1 procs  user 2.00 KiB/s  zero-copy 0/s"),
            "{out}"
        );
        assert!(lines[1].contains("USER/s*"), "{out}");
        assert!(lines[2].contains("a-long-process-n "), "{out}");
        assert!(lines[2].contains("2.00 KiB"), "{out}");
        assert_eq!(lines.len(), 3);
    }
}
