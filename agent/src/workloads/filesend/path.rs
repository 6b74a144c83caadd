//! Mapping request targets to files under the root, and `Range` headers.

use std::path::{Path, PathBuf};

/// Resolves a request target to a regular file under `root` (already
/// canonical). Errors are HTTP status codes: 403 for anything that would
/// leave the root (`..`, or a symlink pointing outside), 404 otherwise.
pub(crate) fn resolve(root: &Path, target: &str) -> Result<PathBuf, u16> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(404);
    }
    let decoded = percent_decode(path).ok_or(404u16)?;
    let mut rel = PathBuf::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err(403),
            s if s.contains('\0') => return Err(404),
            s => rel.push(s),
        }
    }
    let full = root.join(rel);
    // canonicalize follows every symlink, so the prefix check below sees
    // where the file really is.
    let canon = full.canonicalize().map_err(|_| 404u16)?;
    if !canon.starts_with(root) {
        return Err(403);
    }
    if !canon.is_file() {
        return Err(404);
    }
    Ok(canon)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What a `Range` header asks for, given the file size.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Range {
    /// Inclusive byte range within the file.
    Satisfiable(u64, u64),
    /// A single well-formed range that lies past the end (416).
    Unsatisfiable,
    /// Not a single `bytes=` range we serve: send the whole file (RFC 9110
    /// allows ignoring Range).
    Ignore,
}

pub(crate) fn parse_range(value: &str, size: u64) -> Range {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Range::Ignore;
    };
    if spec.contains(',') {
        return Range::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Ignore;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix range: the last N bytes.
        let Ok(n) = b.parse::<u64>() else {
            return Range::Ignore;
        };
        if n == 0 || size == 0 {
            return Range::Unsatisfiable;
        }
        return Range::Satisfiable(size - n.min(size), size - 1);
    }
    let Ok(first) = a.parse::<u64>() else {
        return Range::Ignore;
    };
    let last = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(l) if l >= first => l,
            _ => return Range::Ignore,
        }
    };
    if first >= size {
        return Range::Unsatisfiable;
    }
    Range::Satisfiable(first, last.min(size - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-0", 10), Range::Satisfiable(0, 0));
        assert_eq!(parse_range("bytes=2-", 10), Range::Satisfiable(2, 9));
        assert_eq!(parse_range("bytes=-3", 10), Range::Satisfiable(7, 9));
        assert_eq!(parse_range("bytes=5-100", 10), Range::Satisfiable(5, 9));
        assert_eq!(parse_range("bytes=10-", 10), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,3-4", 10), Range::Ignore);
        assert_eq!(parse_range("items=0-1", 10), Range::Ignore);
        assert_eq!(parse_range("bytes=5-2", 10), Range::Ignore);
    }
}
