//! Rendering a comparison: a terminal table, JSON, grouped bar charts (SVG)
//! and a self-contained HTML page.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Row, Suite, Verdict};

#[derive(Serialize)]
pub struct Json<'a> {
    pub suite: Suite,
    pub rows: &'a [Row],
}

pub fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal()
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:.prec$}"))
}

/// Metrics charted and tabled per suite: (header, value).
type Col = (&'static str, fn(&Row) -> Option<f64>);

fn columns(suite: Suite) -> Vec<Col> {
    let mut c: Vec<Col> = vec![
        ("req/s", |r| Some(r.requests_per_sec)),
        ("p99 us", |r| Some(r.load.p99_us)),
        ("cpu us/req", |r| Some(r.cpu_us_per_request)),
        ("syscalls/req", |r| Some(r.syscalls_per_request)),
        ("vol cs/req", |r| Some(r.voluntary_cs_per_request)),
        ("invol cs/req", |r| Some(r.involuntary_cs_per_request)),
    ];
    match suite {
        Suite::Filesend => {
            c.splice(
                0..1,
                [
                    (
                        "MiB/s",
                        (|r: &Row| Some(r.mib_per_sec)) as fn(&Row) -> Option<f64>,
                    ),
                    ("cpu ms/MiB", |r| Some(r.cpu_ms_per_mib)),
                    ("syscalls/MiB", |r| Some(r.syscalls_per_mib)),
                    ("copies/B", |r| Some(r.est_cpu_copies_per_byte)),
                    ("misses", |r| Some(r.page_cache_misses as f64)),
                    ("hit ratio", |r| r.page_cache_hit_ratio),
                ],
            );
        }
        Suite::Servers => {
            c.push(("events/wakeup", |r| r.events_per_wakeup));
            c.push(("sqes/enter", |r| r.uring_ops_per_enter));
            c.push(("cqes/enter", |r| r.uring_completions_per_enter));
        }
        Suite::Demux => {
            c.push(("events/wakeup", |r| r.events_per_wakeup));
            c.push(("fds scanned/wait", |r| r.fds_scanned_per_wait));
        }
    }
    c
}

pub fn table(suite: Suite, rows: &[Row]) -> String {
    let cols = columns(suite);
    let name_w = rows
        .iter()
        .map(|r| r.case.name.len())
        .max()
        .unwrap_or(4)
        .max(8);
    let mut out = String::new();
    let _ = write!(out, "{:<name_w$}", "workload");
    for (h, _) in &cols {
        let _ = write!(out, " {h:>13}");
    }
    out.push('\n');
    for r in rows {
        let _ = write!(out, "{:<name_w$}", r.case.name);
        for (_, f) in &cols {
            let v = f(r);
            let prec = match v {
                Some(x) if x.abs() >= 100.0 => 0,
                Some(x) if x.abs() >= 1.0 => 2,
                _ => 3,
            };
            let _ = write!(out, " {:>13}", opt(v, prec));
        }
        out.push('\n');
    }
    out.push_str(
        "\nCPU and syscalls are the workload process's own (from the probes); copies/B is bytes through user space per byte served, the copy model's CPU copies (an estimate: loopback has no NIC DMA).\n\n",
    );
    for r in rows.iter().filter(|r| r.verdict != Verdict::Measured) {
        let mark = match r.verdict {
            Verdict::Confirmed => "confirmed",
            Verdict::Refuted => "REFUTED",
            Verdict::Measured => "",
        };
        let _ = writeln!(out, "{:<name_w$}  {mark:<9}  {}", r.case.name, r.claim);
    }
    let errors: u64 = rows.iter().map(|r| r.load.errors).sum();
    if errors > 0 {
        let _ = writeln!(out, "\nwarning: the load generator saw {errors} errors");
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One small bar chart per metric, a bar per workload.
pub fn svg(suite: Suite, rows: &[Row]) -> String {
    let cols = columns(suite);
    let (w, bar_h, gap, label_w) = (760.0, 16.0, 4.0, 200.0);
    let chart_h = rows.len() as f64 * (bar_h + gap) + 40.0;
    let total_h = chart_h * cols.len() as f64 + 20.0;
    let palette = [
        "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
        "#9c755f", "#bab0ac",
    ];
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{total_h}" font-family="sans-serif" font-size="12">"#
    );
    for (ci, (header, f)) in cols.iter().enumerate() {
        let y0 = ci as f64 * chart_h + 10.0;
        let max = rows.iter().filter_map(f).fold(0.0f64, f64::max).max(1e-12);
        let _ = write!(
            out,
            r#"<text x="0" y="{:.1}" font-weight="bold">{}</text>"#,
            y0 + 14.0,
            esc(header)
        );
        for (ri, r) in rows.iter().enumerate() {
            let y = y0 + 24.0 + ri as f64 * (bar_h + gap);
            let v = f(r);
            let len = v.map_or(0.0, |v| (v / max).max(0.0) * (w - label_w - 90.0));
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{label_w}" y="{y:.1}" width="{len:.1}" height="{bar_h}" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                label_w - 6.0,
                y + bar_h - 4.0,
                esc(&r.case.name),
                palette[ri % palette.len()],
                label_w + len + 4.0,
                y + bar_h - 4.0,
                opt(v, 3)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

pub fn html(suite: Suite, rows: &[Row]) -> String {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>iolens compare</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}\
         .confirmed{color:#2a7}.refuted{color:#c33;font-weight:bold}</style></head><body>",
    );
    let _ = write!(
        out,
        "<h1>iolens compare: {suite:?}</h1><table><tr><th>workload</th>"
    );
    let cols = columns(suite);
    for (h, _) in &cols {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("<th>claim</th></tr>");
    for r in rows {
        let _ = write!(out, "<tr><td>{}</td>", esc(&r.case.name));
        for (_, f) in &cols {
            let _ = write!(out, "<td>{}</td>", opt(f(r), 3));
        }
        let class = match r.verdict {
            Verdict::Confirmed => "confirmed",
            Verdict::Refuted => "refuted",
            Verdict::Measured => "",
        };
        let _ = write!(
            out,
            "<td class=\"{class}\" style=\"text-align:left\">{} {}</td></tr>",
            match r.verdict {
                Verdict::Confirmed => "confirmed:",
                Verdict::Refuted => "refuted:",
                Verdict::Measured => "",
            },
            esc(&r.claim)
        );
    }
    out.push_str("</table><p>CPU and syscalls are the workload process's own, measured by the probes. copies/B is an estimate from the copy model.</p>");
    out.push_str(&svg(suite, rows));
    out.push_str("</body></html>\n");
    out
}
