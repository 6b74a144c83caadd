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

/// Enough digits to compare, no more: 12345, 12.35, 0.123.
fn num(v: Option<f64>) -> String {
    let prec = match v {
        Some(x) if x.abs() >= 100.0 => 0,
        Some(x) if x.abs() >= 1.0 => 2,
        _ => 3,
    };
    opt(v, prec)
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
                    ("disk B/B", |r| Some(r.disk_bytes_per_byte)),
                    ("model disk/B", |r| Some(r.model_disk_dma_per_byte)),
                    ("misses", |r| Some(r.page_cache_misses as f64)),
                    ("hit ratio", |r| r.page_cache_hit_ratio),
                    // What native AIO read per byte served (direct-native-aio).
                    ("aio B/B", |r| {
                        (r.aio_ops > 0).then(|| r.aio_bytes as f64 / r.load.bytes.max(1) as f64)
                    }),
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
            let _ = write!(out, " {:>13}", num(f(r)));
        }
        out.push('\n');
    }
    out.push_str(
        "\nCPU and syscalls are the workload process's own (from the probes); copies/B is bytes through user space per byte served, the copy model's CPU copies (an estimate: loopback has no NIC DMA). disk B/B is measured: bytes the disk read for the workload (its requests, readahead included) per byte served; model disk/B is the copy model's one disk DMA per byte, which a warm page cache makes 0.\n\n",
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

/// The group a row belongs to (its first word: `sendfile`, `reactor`, …),
/// which picks its colour so a mode reads the same in every chart.
fn group(name: &str) -> &str {
    name.split_whitespace().next().unwrap_or(name)
}

/// Grouped bar charts: one small chart per metric, two columns, a bar per
/// workload coloured by its group, with a legend.
pub fn svg(suite: Suite, rows: &[Row]) -> String {
    let cols = columns(suite);
    let palette = [
        "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
        "#9c755f", "#bab0ac",
    ];
    let mut groups: Vec<&str> = Vec::new();
    for r in rows {
        let g = group(&r.case.name);
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    let colour = |name: &str| {
        let i = groups.iter().position(|g| *g == group(name)).unwrap_or(0);
        palette[i % palette.len()]
    };
    let (chart_w, bar_h, gap, label_w, value_w) = (470.0, 14.0, 3.0, 170.0, 70.0);
    let chart_h = rows.len() as f64 * (bar_h + gap) + 34.0;
    let legend_h = 28.0;
    let n_rows = cols.len().div_ceil(2);
    let (w, h) = (
        2.0 * chart_w + 20.0,
        legend_h + chart_h * n_rows as f64 + 10.0,
    );
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h:.0}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>"#
    );
    let mut x = 10.0;
    for g in &groups {
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="8" width="12" height="12" fill="{}"/><text x="{:.1}" y="18">{}</text>"#,
            colour(g),
            x + 16.0,
            esc(g)
        );
        x += 22.0 + 7.0 * g.len() as f64;
    }
    for (ci, (header, f)) in cols.iter().enumerate() {
        let x0 = if ci % 2 == 0 { 0.0 } else { chart_w + 20.0 };
        let y0 = legend_h + (ci / 2) as f64 * chart_h;
        let max = rows.iter().filter_map(f).fold(0.0f64, f64::max).max(1e-12);
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-weight="bold" font-size="12">{}</text>"#,
            x0 + 4.0,
            y0 + 14.0,
            esc(header)
        );
        for (ri, r) in rows.iter().enumerate() {
            let y = y0 + 22.0 + ri as f64 * (bar_h + gap);
            let v = f(r);
            let len = v.map_or(0.0, |v| (v / max).max(0.0) * (chart_w - label_w - value_w));
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{:.1}" y="{y:.1}" width="{len:.1}" height="{bar_h}" fill="{}"/><text x="{:.1}" y="{:.1}" fill="dimgray">{}</text>"#,
                x0 + label_w - 6.0,
                y + bar_h - 3.0,
                esc(&r.case.name),
                x0 + label_w,
                colour(&r.case.name),
                x0 + label_w + len + 4.0,
                y + bar_h - 3.0,
                num(v)
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
            let _ = write!(out, "<td>{}</td>", num(f(r)));
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
