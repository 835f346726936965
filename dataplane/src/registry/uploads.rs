//! Blob uploads: sessions persisted in Postgres so any node continues any upload, bodies
//! streamed to storage while hashed, and verification before anything becomes visible.

use std::fmt::Display;

use aerugo_db::registry::Repository;
use aerugo_db::{PooledClient, binary_units, registry, uploads};
use aerugo_oci::range::ChunkRange;
use aerugo_oci::{Algorithm, Digest, RepoName, ResumableHash};
use aerugo_storage::{AnyStore, AnyWriter, BlobStore, UploadState, UploadWriter};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::json;
use uuid::Uuid;

use super::{Actor, Registry};
use crate::error::{RegistryError, Result};

/// Where an upload stands, as the `Location`/`Range` headers report it.
#[derive(Debug, Clone)]
pub struct UploadProgress {
    /// URL to send the next chunk to.
    pub location: String,
    /// Session id.
    pub id: Uuid,
    /// Bytes received so far.
    pub offset: u64,
}

/// Result of `POST /v2/<name>/blobs/uploads/`.
#[derive(Debug)]
pub enum StartUpload {
    /// A session was opened (202).
    Session(UploadProgress),
    /// The blob is now in the repository (mounted, or uploaded monolithically) (201).
    Done {
        /// The blob's digest.
        digest: Digest,
        /// The blob's URL.
        location: String,
    },
}

/// The bytes one request carried, written and hashed.
struct Written<W> {
    hasher: ResumableHash,
    writer: W,
    received: u64,
}

impl Registry {
    fn upload_url(&self, name: &RepoName, id: Uuid) -> String {
        self.url(&format!("/v2/{name}/blobs/uploads/{id}"))
    }

    fn blob_url(&self, name: &RepoName, digest: &Digest) -> String {
        self.url(&format!("/v2/{name}/blobs/{digest}"))
    }

    /// Opens an upload whose chunks are hashed with `algorithm` (`?digest-algorithm=`), mounts
    /// a blob from `mount_from`, or stores a monolithic body.
    pub async fn start_upload<S, E>(
        &self,
        name: &RepoName,
        actor: &Actor,
        mount: Option<(Digest, Option<RepoName>)>,
        monolithic: Option<(Digest, S)>,
        algorithm: Algorithm,
    ) -> Result<StartUpload>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let mut client = self.client().await?;
        let repo = self.repository_for_push(&client, name, actor).await?;
        if let Some((digest, from)) = mount
            && self.mount_blob(&mut client, &repo, &digest, from.as_ref(), actor).await?
        {
            return Ok(StartUpload::Done { location: self.blob_url(name, &digest), digest });
        }
        if let Some(over) = registry::over_quota(&client, &repo, None, 0).await? {
            drop(client);
            return Err(self.refused_by_quota(&repo, &over, None).await);
        }
        if let Some((digest, body)) = monolithic {
            // No connection is held while the body streams in.
            drop(client);
            let id = Uuid::new_v4();
            let store = self.store.location(&repo.location).await?;
            let writer = store.resume_upload(id, UploadState::default(), Vec::new()).await?;
            let hasher = ResumableHash::new(digest.kind());
            let written = write_body(writer, hasher, 0, body, self.settings.body_idle_timeout).await?;
            self.publish(&repo, &repo.location, id, written, &digest, actor).await?;
            return Ok(StartUpload::Done { location: self.blob_url(name, &digest), digest });
        }
        let id = Uuid::new_v4();
        let upload = uploads::Upload {
            id,
            repository_id: repo.id,
            received_bytes: 0,
            hash_state: ResumableHash::new(algorithm).to_state(),
            store_state: json!(UploadState::default()),
            pending: Vec::new(),
            version: 0,
            location: repo.location.clone(),
        };
        uploads::create(&client, &upload, self.settings.upload_ttl.as_secs_f64()).await?;
        Ok(StartUpload::Session(UploadProgress { location: self.upload_url(name, id), id, offset: 0 }))
    }

    /// Appends a chunk (`PATCH`), with or without `Content-Range`.
    pub async fn append_upload<S, E>(
        &self,
        name: &RepoName,
        id: Uuid,
        range: Option<ChunkRange>,
        body: S,
    ) -> Result<UploadProgress>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let (repo, upload, written) = self.receive(name, id, range, None, body).await?;
        let (state, pending) = written.writer.pause().await?;
        let saved = uploads::Upload {
            received_bytes: i64::try_from(written.received).map_err(|_| too_large())?,
            hash_state: written.hasher.to_state(),
            store_state: json!(state),
            pending,
            ..upload
        };
        let client = self.client().await?;
        if !uploads::save(&client, &saved, self.settings.upload_ttl.as_secs_f64()).await? {
            // Another request moved the session meanwhile: report where it now stands.
            let current = uploads::get(&client, id, repo.id).await?.ok_or(RegistryError::BlobUploadUnknown)?;
            return Err(self.range_mismatch(name, &current));
        }
        Ok(UploadProgress { location: self.upload_url(name, id), id, offset: written.received })
    }

    /// Completes an upload (`PUT ?digest=`), with an optional last chunk.
    pub async fn finish_upload<S, E>(
        &self,
        name: &RepoName,
        actor: &Actor,
        id: Uuid,
        digest: &Digest,
        range: Option<ChunkRange>,
        body: S,
    ) -> Result<String>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let (repo, upload, written) = self.receive(name, id, range, Some(digest), body).await?;
        let client = self.client().await?;
        let Some(lasted) = uploads::finish(&client, id, upload.version).await? else {
            return Err(RegistryError::BlobUploadUnknown);
        };
        drop(client);
        self.publish(&repo, &upload.location, id, written, digest, actor).await?;
        self.upload_seconds.observe(lasted.max(0.0));
        Ok(self.blob_url(name, digest))
    }

    /// The progress of an upload session (`GET`).
    pub async fn upload_status(&self, name: &RepoName, id: Uuid) -> Result<UploadProgress> {
        let (_, upload) = self.session(name, id).await?;
        Ok(UploadProgress { location: self.upload_url(name, id), id, offset: offset(&upload) })
    }

    /// Cancels an upload session and frees its storage (`DELETE`).
    pub async fn cancel_upload(&self, name: &RepoName, id: Uuid) -> Result<()> {
        let client = self.client().await?;
        let repo = self.repository(&client, name).await?;
        let upload = uploads::cancel(&client, id, repo.id).await?.ok_or(RegistryError::BlobUploadUnknown)?;
        drop(client);
        self.store.location(&upload.location).await?.abort_upload(id, &store_state(&upload)?).await?;
        Ok(())
    }

    /// Ends expired upload sessions and frees their storage; returns how many were removed.
    pub async fn expire_uploads(&self) -> Result<usize> {
        let mut removed = 0;
        loop {
            let client = self.client().await?;
            let batch = uploads::take_expired(&client, 100).await?;
            drop(client);
            if batch.is_empty() {
                return Ok(removed);
            }
            for upload in &batch {
                match store_state(upload) {
                    Ok(state) => {
                        let store = self.store.location(&upload.location).await?;
                        if let Err(e) = store.abort_upload(upload.id, &state).await {
                            tracing::warn!(upload = %upload.id, error = %e, "freeing expired upload storage failed");
                        }
                    }
                    Err(e) => tracing::warn!(upload = %upload.id, error = %e, "expired upload has corrupt state"),
                }
            }
            removed += batch.len();
        }
    }

    async fn session(&self, name: &RepoName, id: Uuid) -> Result<(Repository, uploads::Upload)> {
        let client = self.client().await?;
        let repo = self.repository(&client, name).await?;
        let upload = uploads::get(&client, id, repo.id).await?.ok_or(RegistryError::BlobUploadUnknown)?;
        Ok((repo, upload))
    }

    fn check_range(&self, name: &RepoName, upload: &uploads::Upload, range: Option<ChunkRange>) -> Result<()> {
        match range {
            Some(r) if r.start != offset(upload) => Err(self.range_mismatch(name, upload)),
            _ => Ok(()),
        }
    }

    fn range_mismatch(&self, name: &RepoName, upload: &uploads::Upload) -> RegistryError {
        RegistryError::RangeMismatch {
            location: self.upload_url(name, upload.id),
            upload_id: upload.id.to_string(),
            offset: offset(upload),
        }
    }

    /// Loads session `id`, checks the chunk starts where the session stands, and streams the
    /// body into it; the caller then records (PATCH) or publishes (PUT, with the blob's
    /// `digest`) what was written.
    async fn receive<S, E>(
        &self,
        name: &RepoName,
        id: Uuid,
        range: Option<ChunkRange>,
        digest: Option<&Digest>,
        body: S,
    ) -> Result<(Repository, uploads::Upload, Written<AnyWriter>)>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let (repo, upload) = self.session(name, id).await?;
        self.check_range(name, &upload, range)?;
        let mut hasher = ResumableHash::from_state(&upload.hash_state)
            .map_err(|e| RegistryError::Internal(format!("upload {}: {e}", upload.id)))?;
        if let Some(digest) = digest
            && digest.kind() != hasher.algorithm()
        {
            // Nothing hashed yet (POST, then one PUT with the whole blob): hash with the
            // digest's algorithm. Chunks already hashed cannot be hashed again without reading
            // them back; the session stays as it was.
            if upload.received_bytes != 0 {
                return Err(RegistryError::DigestInvalid(format!(
                    "this upload hashed its chunks with {}; to push a {} blob in chunks, open the upload with ?digest-algorithm={}",
                    hasher.algorithm(),
                    digest.algorithm(),
                    digest.algorithm()
                )));
            }
            hasher = ResumableHash::new(digest.kind());
        }
        let (state, pending) = (store_state(&upload)?, upload.pending.clone());
        let store = self.store.location(&upload.location).await?;
        let writer = match store.resume_upload(upload.id, state, pending).await {
            // A concurrent chunk holds the session: answer as for any chunk that does not start
            // where the session stands, with the session intact.
            Err(aerugo_storage::Error::Busy(_)) => return Err(self.range_mismatch(name, &upload)),
            other => other?,
        };
        let written = write_body(writer, hasher, offset(&upload), body, self.settings.body_idle_timeout).await?;
        check_length(&upload, range, written.received)?;
        Ok((repo, upload, written))
    }

    /// Verifies the content against `digest` and makes the blob visible in `repo`; on a
    /// mismatch the upload's storage is released and nothing becomes visible. `location` is
    /// where the upload wrote.
    async fn publish(
        &self,
        repo: &Repository,
        location: &str,
        id: Uuid,
        written: Written<AnyWriter>,
        digest: &Digest,
        actor: &Actor,
    ) -> Result<()> {
        let store = self.store.location(location).await?;
        let computed = written.hasher.finish();
        if &computed != digest {
            let (state, _) = written.writer.pause().await?;
            store.abort_upload(id, &state).await?;
            return Err(RegistryError::DigestInvalid(format!("content has digest {computed}, not {digest}")));
        }
        if location != repo.location {
            let (state, _) = written.writer.pause().await?;
            store.abort_upload(id, &state).await?;
            return Err(RegistryError::Unavailable(format!(
                "the storage of {} changed during this upload; upload it again",
                repo.name
            )));
        }
        let size = i64::try_from(written.received).map_err(|_| too_large())?;
        // Over quota: nothing is completed (the final check, under the organization's lock,
        // comes with the link).
        let over = match repo.quota_bytes {
            Some(_) => registry::over_quota(&self.client().await?, repo, Some(digest.as_str()), size).await?,
            None => None,
        };
        if let Some(over) = over {
            let (state, _) = written.writer.pause().await?;
            store.abort_upload(id, &state).await?;
            return Err(self.refused_by_quota(repo, &over, Some(digest)).await);
        }
        let key = store.complete_upload(written.writer, digest).await?;
        self.record_blob(
            repo,
            digest,
            size,
            &key,
            &store,
            actor,
            json!({ "digest": digest, "size": size }),
            "blob.push",
        )
        .await?;
        tracing::debug!(repo = %repo.name, %digest, size_bytes = size, "blob stored");
        Ok(())
    }

    /// Records the object `key` of `digest` in `repo`'s location and links it there, in one
    /// transaction, unless the garbage collector took the object meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn record_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        size: i64,
        key: &str,
        store: &AnyStore,
        actor: &Actor,
        detail: serde_json::Value,
        action: &str,
    ) -> Result<()> {
        let collected = || {
            RegistryError::Unavailable(format!(
                "blob {digest} was collected while it was being stored; upload it again"
            ))
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
        // A new row while the object may have been there before us (completion keeps an existing
        // object instead of writing it again): make sure the garbage collector did not delete
        // that object while this upload completed.
        let new_object = registry::insert_blob(&tx, digest.as_str(), size, &repo.location, key).await?;
        if new_object && store.size(key).await?.is_none() {
            return Err(collected());
        }
        if let Some(over) = registry::over_quota(&tx, repo, Some(digest.as_str()), size).await? {
            drop(tx);
            // No row points at an object this push wrote: remove it.
            if new_object {
                store.delete(key).await?;
            }
            drop(client);
            return Err(self.refused_by_quota(repo, &over, Some(digest)).await);
        }
        // The link waited for any collector holding the blob; one that removed this location's
        // object meanwhile is seen now.
        if !registry::link_blob(&tx, repo.id, digest.as_str()).await?
            || !registry::object_present(&tx, digest.as_str(), &repo.location).await?
        {
            return Err(collected());
        }
        actor.record(&tx, action, repo, detail).await?;
        tx.commit().await.map_err(aerugo_db::Error::from)?;
        Ok(())
    }

    /// Links `digest` into `repo` if it is readable in `from` (or already there). Within one
    /// storage location that is a link; across locations (organizations with dedicated
    /// buckets) the object is copied first. The caller's connection is used: a request never
    /// holds two pool connections at once.
    async fn mount_blob(
        &self,
        client: &mut PooledClient,
        repo: &Repository,
        digest: &Digest,
        from: Option<&RepoName>,
        actor: &Actor,
    ) -> Result<bool> {
        if registry::repository_blob(&*client, repo, digest.as_str()).await?.is_some() {
            return Ok(true);
        }
        let Some(from) = from else { return Ok(false) };
        let Some(source) = registry::find_repository(&*client, from.as_str()).await? else {
            return Ok(false);
        };
        let Some(blob) = registry::repository_blob(&*client, &source, digest.as_str()).await? else {
            return Ok(false);
        };
        let detail = json!({ "digest": digest, "from": from.as_str() });
        if source.location != repo.location {
            let target = self.store.location(&repo.location).await?;
            let key =
                copy_object(&self.store.location(&source.location).await?, &blob.storage_key, &target, digest).await?;
            self.record_blob(repo, digest, blob.size, &key, &target, actor, detail, "blob.mount").await?;
            return Ok(true);
        }
        let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
        if let Some(over) = registry::over_quota(&tx, repo, Some(digest.as_str()), blob.size).await? {
            // The organization's lock goes before the event is written on another connection.
            drop(tx);
            return Err(self.refused_by_quota(repo, &over, Some(digest)).await);
        }
        if !registry::link_blob(&tx, repo.id, digest.as_str()).await?
            || !registry::object_present(&tx, digest.as_str(), &repo.location).await?
        {
            return Ok(false);
        }
        actor.record(&tx, "blob.mount", repo, detail).await?;
        tx.commit().await.map_err(aerugo_db::Error::from)?;
        Ok(true)
    }
}

/// Copies a verified blob's object from one store to another (streamed, never whole in
/// memory); returns its key in `to`.
async fn copy_object(from: &AnyStore, key: &str, to: &AnyStore, digest: &Digest) -> Result<String> {
    let mut stream = match from.read(key, None).await {
        Err(aerugo_storage::Error::NotFound(key)) => {
            return Err(RegistryError::Internal(format!("blob {digest} has a row but no object at {key}")));
        }
        other => other?,
    };
    let id = Uuid::new_v4();
    let mut writer = to.resume_upload(id, UploadState::default(), Vec::new()).await?;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => writer.write(chunk).await?,
            Err(e) => {
                let (state, _) = writer.pause().await?;
                to.abort_upload(id, &state).await?;
                return Err(aerugo_storage::Error::Io(e).into());
            }
        }
    }
    Ok(to.complete_upload(writer, digest).await?)
}

/// Streams `body` into the upload's storage while hashing it; nothing is held whole. A body
/// that sends nothing for `idle` is refused (what it sent is not recorded: the session stays
/// where it was, and the client resumes from there).
async fn write_body<S, E>(
    mut writer: AnyWriter,
    mut hasher: ResumableHash,
    mut received: u64,
    mut body: S,
    idle: std::time::Duration,
) -> Result<Written<AnyWriter>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    loop {
        let Ok(next) = tokio::time::timeout(idle, body.next()).await else {
            return Err(RegistryError::BlobUploadInvalid(format!(
                "the request body sent nothing for {} s",
                idle.as_secs()
            )));
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| RegistryError::BlobUploadInvalid(format!("reading request body: {e}")))?;
        hasher.update(&chunk);
        received += chunk.len() as u64;
        writer.write(chunk).await?;
    }
    Ok(Written { hasher, writer, received })
}

fn offset(upload: &uploads::Upload) -> u64 {
    u64::try_from(upload.received_bytes).unwrap_or(0)
}

fn store_state(upload: &uploads::Upload) -> Result<UploadState> {
    serde_json::from_value(upload.store_state.clone())
        .map_err(|e| RegistryError::Internal(format!("upload {} store state: {e}", upload.id)))
}

/// A chunk sent with `Content-Range` must carry exactly that many bytes.
fn check_length(upload: &uploads::Upload, range: Option<ChunkRange>, received: u64) -> Result<()> {
    let got = received - offset(upload);
    match range {
        Some(r) if r.len() != got => Err(RegistryError::SizeInvalid {
            over_limit: false,
            detail: format!("Content-Range announced {} bytes, body had {got}", r.len()),
        }),
        _ => Ok(()),
    }
}

impl Registry {
    /// `DENIED` for a push over its organization's quota, after recording a
    /// `quota.exceeded` event (in its own transaction: the push's is not committed). Call with no
    /// transaction open on the organization: the event's stream may be locked by a push waiting
    /// for it.
    pub(super) async fn refused_by_quota(
        &self,
        repo: &Repository,
        over: &registry::OverQuota,
        digest: Option<&Digest>,
    ) -> RegistryError {
        let data = json!({
            "repository": repo.name, "quota": over.quota, "used": over.used, "adds": over.adds,
            "digest": digest.map(Digest::as_str),
        });
        let emitted = async {
            let client = self.client().await?;
            aerugo_db::events::emit(&client, repo.org_id, &repo.name, aerugo_db::events::QUOTA_EXCEEDED, &data).await?;
            Ok::<_, RegistryError>(())
        };
        if let Err(e) = emitted.await {
            tracing::warn!(repo = %repo.name, error = %e, "recording a quota event failed");
        }
        quota_denied(over)
    }
}

/// `DENIED`, naming the quota and the numbers.
fn quota_denied(over: &registry::OverQuota) -> RegistryError {
    let push = if over.adds > 0 { format!("; this blob adds {}", binary_units(over.adds)) } else { String::new() };
    RegistryError::OverQuota(format!(
        "organization {} is at its storage quota of {}: {} used{push}",
        over.org,
        binary_units(over.quota),
        binary_units(over.used)
    ))
}

fn too_large() -> RegistryError {
    RegistryError::SizeInvalid { over_limit: true, detail: "blob too large".into() }
}
