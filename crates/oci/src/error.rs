//! Parse failures of the edge newtypes; each maps to exactly one OCI error code upstream.

/// Why a name, tag, digest or range from a request was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The repository name does not match the distribution spec grammar.
    #[error(
        "invalid repository name {0:?}: must match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)* and be at most 255 characters"
    )]
    Name(String),
    /// The tag does not match `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
    #[error("invalid tag {0:?}: must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    Tag(String),
    /// The digest is malformed or uses an unsupported algorithm.
    #[error("invalid digest {0:?}: {1}")]
    Digest(String, &'static str),
    /// A `Range` or `Content-Range` header could not be parsed.
    #[error("invalid range {0:?}")]
    Range(String),
}
