//! Filesystem backend: blobs under `<root>/blobs/…`, uploads appended to `<root>/uploads/<id>`
//! and renamed into place once verified. Reads stream from the file with range support.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aerugo_oci::Digest;
use aerugo_oci::range::ReadRange;
use bytes::Bytes;
use tokio::fs::{self, File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio_util::io::ReaderStream;
use uuid::Uuid;

use crate::{BlobStore, ByteStream, Error, Result, UploadState, UploadWriter, blob_key};

/// Write buffer between the request body and the upload file.
const WRITE_BUFFER: usize = 1 << 20;
/// Read buffer when streaming a blob out.
const READ_CHUNK: usize = 256 << 10;

/// Blobs on a local (or shared) filesystem.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// The store of a dedicated location: `locations/<name>` under this root (the caller
    /// checked the name).
    pub async fn location(&self, name: &str) -> Result<Self> {
        Self::new(self.root.join("locations").join(name)).await
    }

    /// A store rooted at `root`, created if missing.
    pub async fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join("blobs")).await?;
        fs::create_dir_all(root.join("uploads")).await?;
        Ok(FsStore { root })
    }

    fn upload_path(&self, id: Uuid) -> PathBuf {
        self.root.join("uploads").join(id.simple().to_string())
    }

    fn object_path(&self, key: &str) -> Result<PathBuf> {
        let relative = Path::new(key);
        let safe = relative.components().all(|c| matches!(c, std::path::Component::Normal(_)));
        if !safe {
            return Err(Error::NotFound(key.to_owned()));
        }
        Ok(self.root.join(relative))
    }
}

/// Appends one request's bytes to an upload file.
pub struct FsWriter {
    file: BufWriter<File>,
    path: PathBuf,
    written: u64,
}

impl UploadWriter for FsWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.file.write_all(&chunk).await?;
        self.written += chunk.len() as u64;
        Ok(())
    }

    async fn pause(mut self) -> Result<(UploadState, Vec<u8>)> {
        self.file.flush().await?;
        self.file.get_ref().sync_data().await?;
        Ok((UploadState { written: self.written, ..UploadState::default() }, Vec::new()))
    }
}

impl BlobStore for FsStore {
    type Writer = FsWriter;

    async fn resume_upload(&self, id: Uuid, state: UploadState, pending: Vec<u8>) -> Result<FsWriter> {
        let path = self.upload_path(id);
        let file = OpenOptions::new().create(true).write(true).truncate(false).open(&path).await?.into_std().await;
        // One writer per upload at a time: two racing chunks would write the same region, and
        // only one of them can be recorded. The lock goes with the file handle (or the process).
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Busy(id)),
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        let mut file = File::from_std(file);
        let on_disk = file.metadata().await?.len();
        if on_disk < state.written {
            return Err(Error::CorruptState(format!(
                "upload {id} has {on_disk} bytes on disk, {} recorded",
                state.written
            )));
        }
        // Bytes past the recorded offset belong to a request that failed before it was
        // recorded; the client resends them.
        file.set_len(state.written).await?;
        file.seek(SeekFrom::Start(state.written)).await?;
        let mut writer = FsWriter { file: BufWriter::with_capacity(WRITE_BUFFER, file), path, written: state.written };
        if !pending.is_empty() {
            writer.write(Bytes::from(pending)).await?;
        }
        Ok(writer)
    }

    async fn complete_upload(&self, mut writer: FsWriter, digest: &Digest) -> Result<String> {
        writer.file.flush().await?;
        writer.file.get_ref().sync_all().await?;
        let key = blob_key(digest);
        let target = self.object_path(&key)?;
        if fs::try_exists(&target).await? {
            // Content-addressed: the stored copy already holds these bytes; never overwrite it.
            fs::remove_file(&writer.path).await?;
            return Ok(key);
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).await?;
        }
        fs::rename(&writer.path, &target).await?;
        Ok(key)
    }

    async fn abort_upload(&self, id: Uuid, _state: &UploadState) -> Result<()> {
        match fs::remove_file(self.upload_path(id)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn read(&self, key: &str, range: Option<ReadRange>) -> Result<ByteStream> {
        let path = self.object_path(key)?;
        let mut file = match File::open(&path).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound(key.to_owned())),
            other => other?,
        };
        Ok(match range {
            Some(r) => {
                file.seek(SeekFrom::Start(r.start)).await?;
                Box::pin(ReaderStream::with_capacity(file.take(r.end - r.start + 1), READ_CHUNK))
            }
            None => Box::pin(ReaderStream::with_capacity(file, READ_CHUNK)),
        })
    }

    async fn presign(&self, _key: &str, _ttl: Duration) -> Result<Option<String>> {
        Ok(None)
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        match fs::metadata(self.object_path(key)?).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match fs::remove_file(self.object_path(key)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn delete_many(&self, keys: &[String]) -> Result<Vec<String>> {
        let mut failed = Vec::new();
        for key in keys {
            if self.delete(key).await.is_err() {
                failed.push(key.clone());
            }
        }
        Ok(failed)
    }

    async fn check(&self) -> Result<()> {
        fs::metadata(self.root.join("blobs")).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures_util::TryStreamExt;

    use super::*;

    async fn read_all(store: &FsStore, key: &str, range: Option<ReadRange>) -> Vec<u8> {
        let chunks: Vec<Bytes> = store.read(key, range).await.expect("read").try_collect().await.expect("stream");
        chunks.concat()
    }

    #[tokio::test]
    async fn upload_resumes_from_persisted_state_and_truncates_unrecorded_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsStore::new(dir.path()).await.expect("store");
        let id = Uuid::new_v4();
        let mut w = store.resume_upload(id, UploadState::default(), Vec::new()).await.expect("open");
        w.write(Bytes::from_static(b"hello ")).await.expect("write");
        let (state, pending) = w.pause().await.expect("pause");
        assert_eq!(state.written, 6);
        assert!(pending.is_empty());

        // A request that wrote bytes but was never recorded: its bytes must not survive.
        let mut lost = store.resume_upload(id, state.clone(), Vec::new()).await.expect("open");
        lost.write(Bytes::from_static(b"GARBAGE")).await.expect("write");
        let _ = lost.pause().await.expect("pause");

        let mut w = store.resume_upload(id, state, Vec::new()).await.expect("reopen");
        w.write(Bytes::from_static(b"world")).await.expect("write");
        let digest = Digest::sha256_of(b"hello world");
        let key = store.complete_upload(w, &digest).await.expect("complete");
        assert_eq!(read_all(&store, &key, None).await, b"hello world");
        assert_eq!(read_all(&store, &key, Some(ReadRange { start: 6, end: 10 })).await, b"world");
        assert_eq!(store.size(&key).await.expect("size"), Some(11));
        store.delete(&key).await.expect("delete");
        assert_eq!(store.size(&key).await.expect("size"), None);
    }

    #[tokio::test]
    async fn one_writer_per_upload_and_existing_blobs_are_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsStore::new(dir.path()).await.expect("store");
        let id = Uuid::new_v4();
        let mut first = store.resume_upload(id, UploadState::default(), Vec::new()).await.expect("open");
        assert!(matches!(store.resume_upload(id, UploadState::default(), Vec::new()).await, Err(Error::Busy(_))));
        first.write(Bytes::from_static(b"good")).await.expect("write");
        let digest = Digest::sha256_of(b"good");
        let key = store.complete_upload(first, &digest).await.expect("complete");

        // A second upload claiming the same digest cannot replace the stored bytes.
        let other = Uuid::new_v4();
        let mut w = store.resume_upload(other, UploadState::default(), Vec::new()).await.expect("open");
        w.write(Bytes::from_static(b"evil")).await.expect("write");
        store.complete_upload(w, &digest).await.expect("complete");
        assert_eq!(read_all(&store, &key, None).await, b"good");
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsStore::new(dir.path().join("root")).await.expect("store");
        assert!(matches!(store.read("../secret", None).await, Err(Error::NotFound(_))));
        assert!(matches!(store.read("/etc/passwd", None).await, Err(Error::NotFound(_))));
    }
}
