//! Blob storage behind one [`BlobStore`] trait, with a local filesystem backend (the embedded
//! default) and an S3 backend (any S3-compatible service). Uploads stream: bytes go to storage
//! as they arrive, and the state needed to continue an upload on another node is returned to
//! the caller to persist. This crate knows nothing of HTTP or the database.

mod fs;
mod s3;

use std::pin::Pin;
use std::time::Duration;

use aerugo_oci::Digest;
use aerugo_oci::range::ReadRange;
use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use fs::FsStore;
pub use s3::{S3Config, S3Store, secret_access_key};

/// A stream of blob bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Storage failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Local IO failed.
    #[error("storage io: {0}")]
    Io(#[from] std::io::Error),
    /// The S3 service refused or failed a request.
    #[error("s3 {operation}: {message}")]
    S3 {
        /// The S3 operation.
        operation: &'static str,
        /// The service's or transport's message.
        message: String,
    },
    /// The object does not exist.
    #[error("object not found: {0}")]
    NotFound(String),
    /// Another request is writing the same upload right now.
    #[error("upload {0} is being written by another request")]
    Busy(Uuid),
    /// Persisted upload state does not fit this backend.
    #[error("corrupt upload state: {0}")]
    CorruptState(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The key a blob is stored under: `blobs/<algorithm>/<first 2 hex>/<hex>`.
pub fn blob_key(digest: &Digest) -> String {
    let hex = digest.hex();
    format!("blobs/{}/{}/{}", digest.algorithm(), &hex[..2], hex)
}

/// One S3 multipart part already uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// 1-based part number.
    pub number: i32,
    /// ETag the service returned.
    pub etag: String,
    /// Bytes in the part.
    pub size: u64,
}

/// Backend state of an upload, persisted between requests (as JSON) by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadState {
    /// Bytes durably handed to the backend (excludes the caller's pending tail).
    pub written: u64,
    /// S3 multipart upload id, once the first part was flushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipart_id: Option<String>,
    /// S3 parts uploaded so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
}

/// What to do with a blob read request.
pub enum BlobRead {
    /// Send the client here (presigned URL).
    Redirect(String),
    /// Stream these bytes.
    Stream(ByteStream),
}

/// Keys per batched delete: S3's `DeleteObjects` limit.
pub const DELETE_BATCH: usize = 1000;

/// A blob store. Writers are created per request from persisted state and paused back into
/// state at the end of the request, so any node can continue any upload.
pub trait BlobStore: Send + Sync {
    /// A writer holding one request's worth of an upload in progress.
    type Writer: UploadWriter;

    /// Opens a writer for upload `id` positioned after `state.written` + `pending`.
    fn resume_upload(
        &self,
        id: Uuid,
        state: UploadState,
        pending: Vec<u8>,
    ) -> impl Future<Output = Result<Self::Writer>>;

    /// Finishes an upload whose content has `digest`; returns the storage key of the blob.
    fn complete_upload(&self, writer: Self::Writer, digest: &Digest) -> impl Future<Output = Result<String>>;

    /// Releases everything an unfinished upload holds.
    fn abort_upload(&self, id: Uuid, state: &UploadState) -> impl Future<Output = Result<()>>;

    /// Streams a blob, or a range of it.
    fn read(&self, key: &str, range: Option<ReadRange>) -> impl Future<Output = Result<ByteStream>>;

    /// A presigned GET URL valid for `ttl`, when the backend can give one.
    fn presign(&self, key: &str, ttl: Duration) -> impl Future<Output = Result<Option<String>>>;

    /// Size of a stored object, or `None` if absent.
    fn size(&self, key: &str) -> impl Future<Output = Result<Option<u64>>>;

    /// Deletes a blob (absent is fine).
    fn delete(&self, key: &str) -> impl Future<Output = Result<()>>;

    /// Deletes blobs (absent is fine), [`DELETE_BATCH`] per request where the backend can;
    /// returns the keys it could not delete.
    fn delete_many(&self, keys: &[String]) -> impl Future<Output = Result<Vec<String>>>;

    /// Checks that the backend is reachable (readiness).
    fn check(&self) -> impl Future<Output = Result<()>>;
}

/// Accepts an upload's bytes during one request.
pub trait UploadWriter {
    /// Appends bytes.
    fn write(&mut self, chunk: Bytes) -> impl Future<Output = Result<()>>;

    /// Ends the request: flushes what the backend can take and returns the state to persist
    /// plus the tail the backend could not take yet (below the S3 part minimum).
    fn pause(self) -> impl Future<Output = Result<(UploadState, Vec<u8>)>>;
}

/// The configured backend: static dispatch over the two implementations.
#[derive(Clone)]
pub enum AnyStore {
    /// Local filesystem.
    Fs(FsStore),
    /// S3-compatible service.
    S3(S3Store),
}

impl AnyStore {
    /// The smallest chunk, other than the last, that this store takes without buffering it
    /// between requests (S3's minimum multipart part); `None`: any size.
    pub fn chunk_min_length(&self) -> Option<u64> {
        match self {
            AnyStore::Fs(_) => None,
            AnyStore::S3(_) => u64::try_from(s3::MIN_PART_SIZE).ok(),
        }
    }

    /// The store of `location`: `""` is this store; any other value is a dedicated bucket on
    /// the same S3 service with the same credentials, or (filesystem) the directory
    /// `locations/<location>` under this store's root. Location names follow S3 bucket naming
    /// (lowercase letters, digits, `.` and `-`), so no name reaches outside the root.
    pub async fn location(&self, location: &str) -> Result<AnyStore> {
        if location.is_empty() {
            return Ok(self.clone());
        }
        if !is_location_name(location) {
            return Err(Error::CorruptState(format!("{location:?} is not a storage location name")));
        }
        Ok(match self {
            AnyStore::Fs(fs) => AnyStore::Fs(fs.location(location).await?),
            AnyStore::S3(s3) => AnyStore::S3(s3.in_bucket(location)),
        })
    }
}

/// Whether `name` may name a dedicated location: an S3 bucket name (3 to 63 lowercase letters,
/// digits, '.' and '-', starting with a letter or digit, no "..") and so a safe directory name.
pub fn is_location_name(name: &str) -> bool {
    name.len() >= 3
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !name.starts_with(['.', '-'])
        && !name.contains("..")
}

/// A writer of either backend.
pub enum AnyWriter {
    /// Filesystem writer.
    Fs(fs::FsWriter),
    /// S3 writer.
    S3(s3::S3Writer),
}

impl UploadWriter for AnyWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        match self {
            AnyWriter::Fs(w) => w.write(chunk).await,
            AnyWriter::S3(w) => w.write(chunk).await,
        }
    }

    async fn pause(self) -> Result<(UploadState, Vec<u8>)> {
        match self {
            AnyWriter::Fs(w) => w.pause().await,
            AnyWriter::S3(w) => w.pause().await,
        }
    }
}

impl BlobStore for AnyStore {
    type Writer = AnyWriter;

    async fn resume_upload(&self, id: Uuid, state: UploadState, pending: Vec<u8>) -> Result<AnyWriter> {
        match self {
            AnyStore::Fs(s) => s.resume_upload(id, state, pending).await.map(AnyWriter::Fs),
            AnyStore::S3(s) => s.resume_upload(id, state, pending).await.map(AnyWriter::S3),
        }
    }

    async fn complete_upload(&self, writer: AnyWriter, digest: &Digest) -> Result<String> {
        match (self, writer) {
            (AnyStore::Fs(s), AnyWriter::Fs(w)) => s.complete_upload(w, digest).await,
            (AnyStore::S3(s), AnyWriter::S3(w)) => s.complete_upload(w, digest).await,
            _ => Err(Error::CorruptState("writer from another backend".into())),
        }
    }

    async fn abort_upload(&self, id: Uuid, state: &UploadState) -> Result<()> {
        match self {
            AnyStore::Fs(s) => s.abort_upload(id, state).await,
            AnyStore::S3(s) => s.abort_upload(id, state).await,
        }
    }

    async fn read(&self, key: &str, range: Option<ReadRange>) -> Result<ByteStream> {
        match self {
            AnyStore::Fs(s) => s.read(key, range).await,
            AnyStore::S3(s) => s.read(key, range).await,
        }
    }

    async fn presign(&self, key: &str, ttl: Duration) -> Result<Option<String>> {
        match self {
            AnyStore::Fs(s) => s.presign(key, ttl).await,
            AnyStore::S3(s) => s.presign(key, ttl).await,
        }
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        match self {
            AnyStore::Fs(s) => s.size(key).await,
            AnyStore::S3(s) => s.size(key).await,
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self {
            AnyStore::Fs(s) => s.delete(key).await,
            AnyStore::S3(s) => s.delete(key).await,
        }
    }

    async fn delete_many(&self, keys: &[String]) -> Result<Vec<String>> {
        match self {
            AnyStore::Fs(s) => s.delete_many(keys).await,
            AnyStore::S3(s) => s.delete_many(keys).await,
        }
    }

    async fn check(&self) -> Result<()> {
        match self {
            AnyStore::Fs(s) => s.check().await,
            AnyStore::S3(s) => s.check().await,
        }
    }
}

#[cfg(test)]
mod location_tests {
    use super::*;

    #[tokio::test]
    async fn locations_are_directories_under_the_root_and_names_cannot_escape_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AnyStore::Fs(FsStore::new(dir.path()).await.expect("store"));
        assert!(store.location("").await.is_ok());
        store.location("acme-blobs.v2").await.expect("a bucket name is a location");
        assert!(dir.path().join("locations/acme-blobs.v2/blobs").is_dir());
        for bad in ["..", "../x", "a/b", "Acme", "-acme", ".acme", "a..b", "ab", "x y"] {
            assert!(store.location(bad).await.is_err(), "{bad:?} must be refused");
        }
    }
}
