//! `Content-Range` (upload chunks, `<start>-<end>` per the distribution spec) and `Range`
//! (blob reads, `bytes=<start>-<end>`) parsing.

use crate::ParseError;

/// An inclusive byte range `start..=end` of an upload chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    /// First byte offset.
    pub start: u64,
    /// Last byte offset, inclusive.
    pub end: u64,
}

impl ChunkRange {
    /// Number of bytes the range covers (saturating: [`parse_content_range`] only returns
    /// ranges whose length fits).
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start).saturating_add(1)
    }

    /// Always false: a parsed range covers at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// One past the last byte offset an upload can have (offsets and sizes are stored as `i64`).
pub const MAX_OFFSET: u64 = i64::MAX as u64;

/// Parses an upload `Content-Range: <start>-<end>` (a `bytes ` prefix and a `/total` suffix,
/// which some clients send, are tolerated).
pub fn parse_content_range(header: &str) -> Result<ChunkRange, ParseError> {
    let err = || ParseError::Range(header.chars().take(64).collect());
    let mut s = header.trim();
    s = s.strip_prefix("bytes ").or_else(|| s.strip_prefix("bytes=")).unwrap_or(s);
    if let Some((range, _total)) = s.split_once('/') {
        s = range;
    }
    let (start, end) = s.split_once('-').ok_or_else(err)?;
    let start: u64 = start.trim().parse().map_err(|_| err())?;
    let end: u64 = end.trim().parse().map_err(|_| err())?;
    // Offsets are stored as i64 (and no blob is 8 EiB): a range past that is no upload's.
    if end < start || end >= MAX_OFFSET {
        return Err(err());
    }
    Ok(ChunkRange { start, end })
}

/// A satisfiable read range resolved against a blob's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRange {
    /// First byte offset.
    pub start: u64,
    /// Last byte offset, inclusive.
    pub end: u64,
}

/// Outcome of resolving a `Range` request header against a blob of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: serve the whole blob.
    Full,
    /// Serve this part with 206.
    Partial(ReadRange),
    /// Syntactically valid but outside the blob: 416.
    Unsatisfiable,
}

/// Resolves `Range: bytes=a-b`, `bytes=a-` or `bytes=-n` against `size`. Multiple ranges and
/// other units are ignored (RFC 9110 lets a server serve the full representation instead).
pub fn resolve_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeRequest::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.is_empty(), b.is_empty()) {
        (true, true) => return RangeRequest::Full,
        (true, false) => {
            let Ok(n) = b.parse::<u64>() else { return RangeRequest::Full };
            if n == 0 || size == 0 {
                return RangeRequest::Unsatisfiable;
            }
            ReadRange { start: size.saturating_sub(n), end: size - 1 }
        }
        (false, _) => {
            let Ok(start) = a.parse::<u64>() else { return RangeRequest::Full };
            let end = if b.is_empty() {
                size.saturating_sub(1)
            } else {
                let Ok(end) = b.parse::<u64>() else { return RangeRequest::Full };
                if end < start {
                    return RangeRequest::Full;
                }
                end.min(size.saturating_sub(1))
            };
            if start >= size {
                return RangeRequest::Unsatisfiable;
            }
            ReadRange { start, end }
        }
    };
    RangeRequest::Partial(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms() {
        assert_eq!(parse_content_range("0-9"), Ok(ChunkRange { start: 0, end: 9 }));
        assert_eq!(parse_content_range("bytes 10-19/100"), Ok(ChunkRange { start: 10, end: 19 }));
        // Lengths that do not fit are refused, not wrapped (this one overflowed `len`).
        assert!(parse_content_range("0-18446744073709551615").is_err());
        assert!(parse_content_range("0-9223372036854775807").is_err());
        assert_eq!(parse_content_range("0-9223372036854775806").map(|r| r.len()), Ok(MAX_OFFSET));
        assert!(parse_content_range("9-0").is_err());
        assert!(parse_content_range("x-1").is_err());
        assert!(parse_content_range("").is_err());
        assert!(parse_content_range("-5").is_err());
    }

    #[test]
    fn read_ranges() {
        assert_eq!(resolve_range(None, 10), RangeRequest::Full);
        assert_eq!(resolve_range(Some("bytes=2-4"), 10), RangeRequest::Partial(ReadRange { start: 2, end: 4 }));
        assert_eq!(resolve_range(Some("bytes=5-"), 10), RangeRequest::Partial(ReadRange { start: 5, end: 9 }));
        assert_eq!(resolve_range(Some("bytes=-3"), 10), RangeRequest::Partial(ReadRange { start: 7, end: 9 }));
        assert_eq!(resolve_range(Some("bytes=2-400"), 10), RangeRequest::Partial(ReadRange { start: 2, end: 9 }));
        assert_eq!(resolve_range(Some("bytes=10-"), 10), RangeRequest::Unsatisfiable);
        assert_eq!(resolve_range(Some("bytes=0-1,4-5"), 10), RangeRequest::Full);
        assert_eq!(resolve_range(Some("items=0-1"), 10), RangeRequest::Full);
    }
}
