//! Blob reads and deletes. A blob is visible in a repository only through its link there.

use aerugo_db::registry::{self, Blob, BlobUnlink};
use aerugo_oci::range::{RangeRequest, ReadRange, resolve_range};
use aerugo_oci::{Digest, RepoName};
use aerugo_storage::{BlobStore, ByteStream};
use bytes::Bytes;
use serde_json::json;

use super::{Actor, Registry};
use crate::cache::codec::{Decoder, Encoder};
use crate::cache::{Kind, View};
use crate::config::RedirectMode;
use crate::error::{RegistryError, Result};

/// How a blob GET is answered.
pub enum BlobBody {
    /// `307` to this URL.
    Redirect(String),
    /// The bytes, with the range served if one was asked for.
    Stream {
        /// Blob bytes (or the requested part).
        stream: ByteStream,
        /// The part served, if a range was requested.
        range: Option<ReadRange>,
    },
}

impl Registry {
    /// The blob `digest` of the repository `view` is of (for HEAD): from the cache, else with
    /// one database round trip. Only blobs that are there are cached: a blob's link appears
    /// without invalidating anything, so an absence would go stale.
    pub async fn blob(&self, view: &View<'_>, digest: &Digest) -> Result<Blob> {
        if let Some(found) = view.get(Kind::Blob, digest.as_str()).await.and_then(decode_blob) {
            return Ok(found);
        }
        let client = self.client().await?;
        match registry::blob_by_repository_name(&client, view.repository(), digest.as_str()).await? {
            None | Some(None) => Err(RegistryError::BlobUnknown(digest.to_string())),
            Some(Some(blob)) => {
                view.put(Kind::Blob, digest.as_str(), encode_blob(&blob)).await;
                Ok(blob)
            }
        }
    }

    /// Reads a blob: a presigned redirect when configured and possible, else a stream.
    pub async fn read_blob(&self, view: &View<'_>, digest: &Digest, range: Option<&str>) -> Result<(Blob, BlobBody)> {
        let blob = self.blob(view, digest).await?;
        let store = self.store.location(&blob.location).await?;
        if self.settings.redirect == RedirectMode::Presign
            && let Some(url) = store.presign(&blob.storage_key, self.settings.presign_ttl).await?
        {
            return Ok((blob, BlobBody::Redirect(url)));
        }
        let size = u64::try_from(blob.size).unwrap_or(0);
        let range = match resolve_range(range, size) {
            RangeRequest::Full => None,
            RangeRequest::Partial(r) => Some(r),
            RangeRequest::Unsatisfiable => return Err(RegistryError::RangeNotSatisfiable { size }),
        };
        let stream = match store.read(&blob.storage_key, range).await {
            Err(aerugo_storage::Error::NotFound(key)) => {
                return Err(RegistryError::Internal(format!("blob {digest} has a row but no object at {key}")));
            }
            other => other?,
        };
        Ok((blob, BlobBody::Stream { stream, range }))
    }

    /// Removes a blob from a repository. Refused while a manifest there references it, so no
    /// manifest ever points at a blob its repository cannot serve.
    pub async fn delete_blob(&self, name: &RepoName, digest: &Digest, actor: &Actor) -> Result<()> {
        let mut client = self.client().await?;
        let repo = self.repository(&client, name).await?;
        let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
        match registry::unlink_blob(&tx, repo.id, digest.as_str()).await? {
            BlobUnlink::NotFound => return Err(RegistryError::BlobUnknown(digest.to_string())),
            BlobUnlink::InUse => {
                return Err(RegistryError::Denied(format!(
                    "blob {digest} is referenced by a manifest in {name}; delete the manifest first"
                )));
            }
            BlobUnlink::Unlinked => {}
        }
        actor.record(&tx, "blob.delete", &repo, json!({ "digest": digest })).await?;
        tx.commit().await.map_err(aerugo_db::Error::from)?;
        self.repository_changed(name).await;
        Ok(())
    }
}

fn encode_blob(blob: &Blob) -> Bytes {
    Encoder::default().str(&blob.digest).i64(blob.size).str(&blob.storage_key).str(&blob.location).finish()
}

fn decode_blob(value: Bytes) -> Option<Blob> {
    let mut d = Decoder::new(value);
    let blob = Blob { digest: d.string()?, size: d.i64()?, storage_key: d.string()?, location: d.string()? };
    d.done().then_some(blob)
}
