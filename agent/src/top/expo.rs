//! A parser for the Prometheus text exposition format (version 0.0.4), the
//! part `iolens top` needs: samples with their labels and values. Comments
//! (`# HELP`, `# TYPE`) are skipped; timestamps are accepted and ignored.
//!
//! Written here rather than taken from a crate: the format is small, the
//! crates for it pull in regex and chrono, and `top` parses one scrape a
//! second, so borrowing names and label values from the text (instead of
//! allocating each) is worth having.

use std::borrow::Cow;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: Vec<(&'a str, Cow<'a, str>)>,
    pub value: f64,
}

impl Sample<'_> {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// A line that is not valid exposition text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct ParseError {
    pub line: usize,
    pub what: String,
}

/// Parses a whole exposition.
pub fn parse(text: &str) -> Result<Vec<Sample<'_>>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_line(line).map_err(|what| ParseError { line: i + 1, what })?);
    }
    Ok(out)
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_name_char(c: u8) -> bool {
    is_name_start(c) || c.is_ascii_digit()
}

/// The longest metric or label name at the start of `s`.
fn take_name(s: &str, colon: bool) -> (&str, &str) {
    let b = s.as_bytes();
    let ok = |c: u8| (colon || c != b':') && is_name_char(c);
    if b.first().is_none_or(|&c| !(is_name_start(c) && ok(c))) {
        return ("", s);
    }
    let end = b.iter().position(|&c| !ok(c)).unwrap_or(b.len());
    s.split_at(end)
}

fn parse_line(line: &str) -> Result<Sample<'_>, String> {
    let (name, mut rest) = take_name(line, true);
    if name.is_empty() {
        return Err(format!("expected a metric name, found `{}`", excerpt(line)));
    }
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let (key, r) = take_name(rest, false);
            if key.is_empty() {
                return Err(format!("expected a label name, found `{}`", excerpt(rest)));
            }
            let r = r
                .trim_start()
                .strip_prefix('=')
                .ok_or_else(|| format!("expected `=` after label `{key}`"))?;
            let r = r
                .trim_start()
                .strip_prefix('"')
                .ok_or_else(|| format!("expected `\"` to open the value of label `{key}`"))?;
            let (value, r) =
                take_quoted(r).ok_or_else(|| format!("unterminated value of label `{key}`"))?;
            labels.push((key, value));
            rest = r.trim_start();
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            } else if !rest.starts_with('}') {
                return Err(format!("expected `,` or `}}` after label `{key}`"));
            }
        }
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields
        .next()
        .ok_or_else(|| format!("sample `{name}` has no value"))?;
    let value =
        parse_value(value).ok_or_else(|| format!("`{}` is not a sample value", excerpt(value)))?;
    if let Some(ts) = fields.next()
        && ts.parse::<i64>().is_err()
    {
        return Err(format!("`{}` is not a timestamp", excerpt(ts)));
    }
    if fields.next().is_some() {
        return Err(format!("trailing text after the sample of `{name}`"));
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// A label value up to its closing quote (escapes: `\\`, `\"`, `\n`), and
/// what follows it.
fn take_quoted(s: &str) -> Option<(Cow<'_, str>, &str)> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut owned: Option<String> = None;
    let mut plain_from = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let value = match owned {
                    None => Cow::Borrowed(&s[..i]),
                    Some(mut o) => {
                        o.push_str(&s[plain_from..i]);
                        Cow::Owned(o)
                    }
                };
                return Some((value, &s[i + 1..]));
            }
            b'\\' => {
                let o = owned.get_or_insert_with(String::new);
                o.push_str(&s[plain_from..i]);
                match b.get(i + 1)? {
                    b'n' => o.push('\n'),
                    b'\\' => o.push('\\'),
                    b'"' => o.push('"'),
                    // The format keeps any other escaped character as is.
                    &c => {
                        o.push('\\');
                        o.push(c as char);
                    }
                }
                i += 2;
                plain_from = i;
            }
            _ => i += 1,
        }
    }
    None
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

fn excerpt(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_agents_output() {
        let text = "\
# HELP iolens_io_bytes_total Bytes moved.
# TYPE iolens_io_bytes_total counter
iolens_io_bytes_total{pid=\"42\",comm=\"dd\",syscall=\"write\",path=\"user_to_file\"} 1000
iolens_processes 3
iolens_epoll_wait_seconds_bucket{comm=\"nginx\",le=\"+Inf\"} 7

iolens_cpu_seconds_total{pid=\"42\",comm=\"dd\"} 1.5e-3 1700000000000
";
        let s = parse(text).expect("parses");
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "iolens_io_bytes_total");
        assert_eq!(s[0].label("pid"), Some("42"));
        assert_eq!(s[0].label("path"), Some("user_to_file"));
        assert_eq!(s[0].value, 1000.0);
        assert!(s[1].labels.is_empty());
        assert_eq!(s[2].label("le"), Some("+Inf"));
        assert_eq!(s[3].value, 1.5e-3);
        assert!(matches!(s[0].labels[0].1, Cow::Borrowed(_)));
    }

    #[test]
    fn label_escapes_and_odd_spacing() {
        let s = parse("m{a=\"x\\\"y\\\\z\\n\", b = \"\",} +Inf\nn{} NaN\n").expect("parses");
        assert_eq!(s[0].label("a"), Some("x\"y\\z\n"));
        assert_eq!(s[0].label("b"), Some(""));
        assert_eq!(s[0].value, f64::INFINITY);
        assert!(s[1].value.is_nan());
        // A comm with a space or a brace inside its quotes.
        let s = parse("m{comm=\"a b}c\"} 2").expect("parses");
        assert_eq!(s[0].label("comm"), Some("a b}c"));
    }

    #[test]
    fn rejects_what_is_not_exposition() {
        for bad in [
            "<!DOCTYPE html>",
            "<html><body>hi</body></html>",
            "m{a=\"x} 1",
            "m{a=x} 1",
            "m 1 2 3",
            "m abc",
            "m",
            "{a=\"b\"} 1",
            "m{a=\"b\" c=\"d\"} 1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        let e = parse("ok 1\nbad").expect_err("second line");
        assert_eq!(e.line, 2);
    }
}
