//! Repository names, tags and manifest references, validated against the distribution spec
//! grammar at the edge so nothing below ever sees a raw, unchecked name.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;

use crate::{Digest, ParseError};

static NAME_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$")
        .unwrap_or_else(|e| unreachable!("static regex: {e}"))
});
static TAG_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$").unwrap_or_else(|e| unreachable!("static regex: {e}"))
});

/// Longest repository name accepted (the spec's recommended client limit).
pub const MAX_NAME_LEN: usize = 255;

/// A repository name such as `library/alpine` or `org/team/app`.
///
/// The grammar admits no `..`, no leading `/` and no empty segment, so a name can be used as a
/// path or key component without traversal.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first path segment: the organization that owns the repository.
    pub fn namespace(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

impl FromStr for RepoName {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_NAME_LEN || !NAME_RE.is_match(s) {
            return Err(ParseError::Name(s.chars().take(MAX_NAME_LEN + 1).collect()));
        }
        Ok(RepoName(s.to_owned()))
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoName({})", self.0)
    }
}

/// A tag such as `latest` or `v1.2.3`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagName(String);

impl TagName {
    /// The tag as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TagName {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !TAG_RE.is_match(s) {
            return Err(ParseError::Tag(s.chars().take(130).collect()));
        }
        Ok(TagName(s.to_owned()))
    }
}

impl fmt::Display for TagName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TagName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TagName({})", self.0)
    }
}

/// The `<reference>` of a manifest URL: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A mutable tag.
    Tag(TagName),
    /// An immutable content digest.
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') { s.parse().map(Reference::Digest) } else { s.parse().map(Reference::Tag) }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_names() {
        for ok in ["a", "library/alpine", "org/team/app", "a.b_c__d-e--f", "x0/y-1/z.2", "foo/manifests/bar"] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok:?} rejected");
        }
    }

    #[test]
    fn rejects_bad_names() {
        let long = "a".repeat(256);
        for bad in ["", "A", "a/", "/a", "a//b", "a/../b", "..", "a..b", "a___b", "-a", "a-", "a b", "a/B", &long] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn namespace_is_first_segment() {
        let name: RepoName = "org/team/app".parse().expect("valid");
        assert_eq!(name.namespace(), "org");
    }

    #[test]
    fn tags() {
        assert!("latest".parse::<TagName>().is_ok());
        assert!("_x.Y-1".parse::<TagName>().is_ok());
        assert!("a".repeat(128).parse::<TagName>().is_ok());
        assert!("a".repeat(129).parse::<TagName>().is_err());
        assert!(".x".parse::<TagName>().is_err());
        assert!("-x".parse::<TagName>().is_err());
        assert!("x/y".parse::<TagName>().is_err());
    }

    #[test]
    fn references() {
        assert!(matches!("v1".parse::<Reference>(), Ok(Reference::Tag(_))));
        let d = format!("sha256:{}", "a".repeat(64));
        assert!(matches!(d.parse::<Reference>(), Ok(Reference::Digest(_))));
        assert!("sha256:zz".parse::<Reference>().is_err());
    }
}
