//! Mapping request targets to files under the root, and `Range` headers.

use std::path::{Path, PathBuf};

use crate::workloads::http::ByteRange;

/// Why a target is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// It would leave the root (403).
    Forbidden,
    /// Nothing servable there (404).
    NotFound,
}

/// Resolves a request target to a regular file under `root` (already
/// canonical): `Forbidden` for anything that would leave the root (`..`,
/// or a symlink pointing outside), `NotFound` otherwise.
pub(crate) fn resolve(root: &Path, target: &str) -> Result<PathBuf, Refused> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(Refused::NotFound);
    }
    let decoded = percent_decode(path).ok_or(Refused::NotFound)?;
    let mut rel = PathBuf::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err(Refused::Forbidden),
            s if s.contains('\0') => return Err(Refused::NotFound),
            s => rel.push(s),
        }
    }
    let full = root.join(rel);
    // canonicalize follows every symlink, so the prefix check below sees
    // where the file really is.
    let canon = full.canonicalize().map_err(|_| Refused::NotFound)?;
    if !canon.starts_with(root) {
        return Err(Refused::Forbidden);
    }
    if !canon.is_file() {
        return Err(Refused::NotFound);
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

/// What to send given the parsed `Range` and the file size.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Range {
    /// No range: the whole file (200).
    Whole,
    /// Inclusive byte range within the file (206).
    Part(u64, u64),
    /// The range lies past the end (416).
    Unsatisfiable,
}

pub(crate) fn range(r: Option<ByteRange>, size: u64) -> Range {
    match r {
        None => Range::Whole,
        Some(ByteRange::Suffix(n)) => {
            if n == 0 || size == 0 {
                Range::Unsatisfiable
            } else {
                Range::Part(size - n.min(size), size - 1)
            }
        }
        Some(ByteRange::From { start, end }) => {
            if start >= size {
                return Range::Unsatisfiable;
            }
            let last = end.unwrap_or(u64::MAX).min(size - 1);
            if last < start {
                Range::Whole
            } else {
                Range::Part(start, last)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let from = |start, end| Some(ByteRange::From { start, end });
        assert_eq!(range(None, 10), Range::Whole);
        assert_eq!(range(from(0, Some(0)), 10), Range::Part(0, 0));
        assert_eq!(range(from(2, None), 10), Range::Part(2, 9));
        assert_eq!(range(Some(ByteRange::Suffix(3)), 10), Range::Part(7, 9));
        assert_eq!(range(Some(ByteRange::Suffix(30)), 10), Range::Part(0, 9));
        assert_eq!(range(from(5, Some(100)), 10), Range::Part(5, 9));
        assert_eq!(range(from(10, None), 10), Range::Unsatisfiable);
        assert_eq!(range(Some(ByteRange::Suffix(0)), 10), Range::Unsatisfiable);
        assert_eq!(range(from(0, None), 0), Range::Unsatisfiable);
    }
}
