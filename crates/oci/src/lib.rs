//! The OCI Distribution core: validated names, references and digests, manifest parsing and
//! validation rules, `Content-Range`/`Range` parsing and a resumable SHA-256. Pure code: it may
//! not do IO and knows nothing of HTTP frameworks, databases or storage.

pub mod digest;
pub mod error;
pub mod hash;
pub mod manifest;
pub mod name;
pub mod range;

pub use digest::Algorithm;
pub use digest::Digest;
pub use error::ParseError;
pub use hash::ResumableHash;
pub use manifest::{Descriptor, ManifestKind, ParsedManifest};
pub use name::{Reference, RepoName, TagName};
