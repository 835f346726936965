//! Pull-through: what a pull of a mirrored repository does when the organization does not hold
//! what is asked, or holds a tag it has not confirmed for `staleAfter`.
//!
//! - A manifest miss is fetched from the upstream, verified against its digest and stored as an
//!   ordinary manifest (with the tag, when pulled by tag). The blobs it names are recorded by
//!   digest and size; their bytes come on their first pull.
//! - A blob miss is fetched once across all nodes: the node that takes the digest's Postgres
//!   advisory lock streams the upstream's bytes to its client while writing them to storage and
//!   hashing them, and records the blob only if the digest matches. The others wait for the
//!   lock's release and serve the stored blob (a client that went away does not stop the fetch).
//! - A tag older than `staleAfter` is confirmed with a HEAD; when the upstream is down, rate
//!   limits or fails, the cached manifest is served (`serveStaleOnError`) and counted.
//! - Stored content counts against the organization's quota; past the mirror's byte cap the
//!   least recently pulled images are evicted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aerugo_db::mirrors;
use aerugo_db::registry::{self, Blob, Repository};
use aerugo_db::{GenericClient, PooledClient};
use aerugo_oci::manifest::{self, MAX_MANIFEST_BYTES};
use aerugo_oci::{Digest, Reference, RepoName, ResumableHash};
use aerugo_storage::{BlobStore, UploadState, UploadWriter};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use http::Method;
use http_body_util::BodyExt as _;
use serde_json::json;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{Actor, BlobBody, Registry, StoredManifest};
use crate::cache::View;
use crate::error::{RegistryError, Result};
use crate::mirror::{Failure, Routed};

/// What a mirror asks an upstream for manifests: every type Aerugo stores.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, \
                      application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// How long a pull waits for another node's fetch of the same thing before giving up.
const WAIT_FOR_FETCH: Duration = Duration::from_secs(600);
/// How often a waiting pull looks whether the other fetch finished.
const POLL: Duration = Duration::from_millis(100);

/// Another node's (or request's) fetch, or ours.
enum Claim<T> {
    /// What was fetched is there now.
    Ready(T),
    /// This request fetches; the lock is held until the guard is released.
    Held(Box<FetchLock>),
}

/// A cross-node fetch lock, held on a connection of its own.
struct FetchLock {
    client: Option<PooledClient>,
    key: String,
}

impl FetchLock {
    /// Releases the lock and returns the connection to the pool.
    async fn release(mut self) {
        if let Some(client) = self.client.take()
            && let Err(e) = mirrors::unlock(&client, &self.key).await
        {
            tracing::warn!(key = %self.key, error = %e, "releasing a mirror fetch lock failed; closing its connection");
            drop(PooledClient::take(client));
        }
    }
}

impl Drop for FetchLock {
    fn drop(&mut self) {
        // Not released (the task was cancelled): close the connection, which ends the lock,
        // instead of returning it to the pool still holding it.
        if let Some(client) = self.client.take() {
            drop(PooledClient::take(client));
        }
    }
}

impl Registry {
    fn mirror_actor(routed: &Routed) -> Actor {
        Actor { name: format!("mirror:{}", routed.entry.mirror.name), source: None, site_admin: false }
    }

    fn count(&self, routed: &Routed, kind: &str, result: std::result::Result<(), &Failure>) {
        let label = result.err().map_or("ok", Failure::label);
        self.mirrors.metrics.upstream_requests.with_label_values(&[&routed.entry.mirror.org, kind, label]).inc();
    }

    fn pulled(&self, routed: &Routed, kind: &str, outcome: &str) {
        self.mirrors.metrics.pulls.with_label_values(&[&routed.entry.mirror.org, kind, outcome]).inc();
    }

    /// The manifest `reference` of a mirrored repository: held and fresh, confirmed with the
    /// upstream, fetched from it, or (upstream failing) served stale.
    pub async fn mirror_manifest(
        &self,
        view: &View<'_>,
        name: &RepoName,
        routed: &Routed,
        reference: &Reference,
    ) -> Result<StoredManifest> {
        let held = if_held(self.manifest(view, reference).await)?;
        let (tag, held) = match (reference, held) {
            // Content-addressed: what is held never goes stale.
            (Reference::Digest(_), Some(found)) => {
                self.pulled(routed, "manifest", "hit");
                return Ok(found);
            }
            (Reference::Digest(digest), None) => {
                let key = format!("manifest:{name}@{digest}");
                let this = self;
                let fetched =
                    self.single_flight(&key, move || async move {
                        if_held(this.load_manifest(name.as_str(), reference).await)
                    })
                    .await?;
                let lock = match fetched {
                    Claim::Ready(found) => {
                        self.pulled(routed, "manifest", "hit");
                        return Ok(found);
                    }
                    Claim::Held(lock) => *lock,
                };
                let outcome = self.fetch_manifest(name, routed, digest.as_str(), None).await;
                lock.release().await;
                self.pulled(routed, "manifest", "miss");
                return outcome.map_err(|f| upstream_error(routed, &format!("{name}@{digest}"), f));
            }
            (Reference::Tag(tag), held) => (tag.as_str(), held),
        };
        let stale_after = routed.entry.mirror.stale_after;
        if let Some(found) = &held
            && self.confirmed_within(name, tag, stale_after).await?
        {
            self.pulled(routed, "manifest", "hit");
            return Ok(found.clone());
        }
        // Confirm (or fetch) once across the nodes; others wait and then serve what it found.
        let key = format!("tag:{name}:{tag}");
        let lock = match held {
            None => match self
                .single_flight(&key, move || async move { if_held(self.load_manifest(name.as_str(), reference).await) })
                .await?
            {
                Claim::Ready(found) => {
                    self.pulled(routed, "manifest", "hit");
                    return Ok(found);
                }
                Claim::Held(lock) => Some(*lock),
            },
            // A held tag is confirmed by whichever request gets there; the others serve it as is.
            Some(_) => self.try_fetch_lock(&key).await?,
        };
        let Some(lock) = lock else {
            self.pulled(routed, "manifest", "hit");
            return held.ok_or_else(|| RegistryError::ManifestUnknown(reference.to_string()));
        };
        let outcome = self.revalidate(name, routed, tag, held.as_ref()).await;
        lock.release().await;
        match outcome {
            Ok((found, fetched)) => {
                self.pulled(routed, "manifest", if fetched { "miss" } else { "hit" });
                Ok(found)
            }
            Err(Failure::NotFound) => {
                Err(RegistryError::ManifestUnknown(format!("{tag}: not found in {} upstream", routed.upstream_name)))
            }
            Err(failure) => match held {
                Some(found) if routed.entry.mirror.serve_stale_on_error => {
                    tracing::warn!(repo = %name, %tag, error = %failure, "upstream failed; serving the cached manifest");
                    self.mirrors.metrics.stale_serves.with_label_values(&[&routed.entry.mirror.org]).inc();
                    self.pulled(routed, "manifest", "stale");
                    Ok(found)
                }
                _ => Err(upstream_error(routed, &format!("{name}:{tag}"), failure)),
            },
        }
    }

    /// Whether tag `tag` of `name` was confirmed against the upstream less than `fresh` ago,
    /// by this node (remembered) or another (recorded in Postgres).
    async fn confirmed_within(&self, name: &RepoName, tag: &str, fresh: Duration) -> Result<bool> {
        if self.mirrors.recently_checked(name.as_str(), tag, fresh) {
            return Ok(true);
        }
        let client = self.client().await?;
        let Some(at) = mirrors::tag_checked(&client, name.as_str(), tag).await? else { return Ok(false) };
        let age = (time::OffsetDateTime::now_utc() - at).max(time::Duration::ZERO);
        let age = Duration::try_from(age).unwrap_or(Duration::MAX);
        if age >= fresh {
            return Ok(false);
        }
        if let Some(at) = Instant::now().checked_sub(age) {
            self.mirrors.checked(name.as_str(), tag, at);
        }
        Ok(true)
    }

    /// Asks the upstream what `tag` is now: the held manifest if it is the same (the tag is
    /// then confirmed), else the upstream's, fetched and stored. `true`: fetched.
    async fn revalidate(
        &self,
        name: &RepoName,
        routed: &Routed,
        tag: &str,
        held: Option<&StoredManifest>,
    ) -> std::result::Result<(StoredManifest, bool), Failure> {
        let upstream = &self.mirrors.upstream;
        let mirror = &routed.entry.mirror;
        let head =
            upstream.send(mirror, Method::HEAD, &routed.upstream_name, &format!("manifests/{tag}"), Some(ACCEPT)).await;
        self.count(routed, "check", head.as_ref().map(|_| ()));
        let current = head?
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        if let (Some(current), Some(held)) = (&current, held)
            && current.as_str() == held.digest
        {
            let confirmed = async {
                let client = self.client().await?;
                let repo = self.repository(&client, name).await?;
                mirrors::mark_checked(&client, repo.id, tag).await?;
                Ok::<_, RegistryError>(())
            };
            if let Err(e) = confirmed.await {
                tracing::warn!(repo = %name, %tag, error = %e, "recording a confirmed tag failed");
            }
            self.mirrors.checked(name.as_str(), tag, Instant::now());
            return Ok((held.clone(), false));
        }
        // Moved (or the upstream does not say): fetch by digest when known, so the tag cannot
        // move again between the HEAD and the GET.
        let reference = current.as_ref().map_or(tag.to_owned(), |d| d.to_string());
        let stored = self.fetch_manifest(name, routed, &reference, Some(tag)).await?;
        self.mirrors.checked(name.as_str(), tag, Instant::now());
        Ok((stored, true))
    }

    /// GETs manifest `reference` from the upstream, verifies it and stores it (tagged `tag`).
    async fn fetch_manifest(
        &self,
        name: &RepoName,
        routed: &Routed,
        reference: &str,
        tag: Option<&str>,
    ) -> std::result::Result<StoredManifest, Failure> {
        let upstream = &self.mirrors.upstream;
        let mirror = &routed.entry.mirror;
        let sent = upstream
            .send(mirror, Method::GET, &routed.upstream_name, &format!("manifests/{reference}"), Some(ACCEPT))
            .await;
        self.count(routed, "manifest", sent.as_ref().map(|_| ()));
        let response = sent?;
        let header = |n: &str| response.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let media_type = header("content-type").map(|t| manifest::essence(&t).to_owned());
        let announced = header("docker-content-digest").and_then(|d| d.parse::<Digest>().ok());
        if header("content-length").and_then(|l| l.parse::<usize>().ok()).is_some_and(|l| l > MAX_MANIFEST_BYTES) {
            return Err(Failure::Refused(format!(
                "{reference}: the upstream's manifest is over {MAX_MANIFEST_BYTES} bytes"
            )));
        }
        let mut body = response.into_body().into_data_stream();
        let mut payload = BytesMut::new();
        loop {
            let next = tokio::time::timeout(upstream.timeout(), body.next())
                .await
                .map_err(|_| Failure::Unavailable(format!("{reference}: the upstream stopped sending")))?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| Failure::Unavailable(format!("{reference}: {e}")))?;
            if payload.len() + chunk.len() > MAX_MANIFEST_BYTES {
                return Err(Failure::Refused(format!(
                    "{reference}: the upstream's manifest is over {MAX_MANIFEST_BYTES} bytes"
                )));
            }
            payload.extend_from_slice(&chunk);
        }
        let payload = payload.freeze();
        self.mirrors.metrics.upstream_bytes.with_label_values(&[&mirror.org]).inc_by(payload.len() as u64);
        let expected = reference.parse::<Digest>().ok().or(announced);
        let digest = match &expected {
            Some(expected) => expected.kind().digest(&payload),
            None => aerugo_oci::Algorithm::Sha256.digest(&payload),
        };
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(Failure::Refused(format!(
                "{reference}: the upstream's manifest has digest {digest}, not {expected}"
            )));
        }
        self.store_manifest(name, routed, tag, &digest, media_type.as_deref(), payload)
            .await
            .map_err(|e| Failure::Refused(format!("{reference}: storing the upstream's manifest: {e}")))
    }

    /// Stores a verified upstream manifest in the mirror's repository `name` (created on first
    /// pull): the blobs it names are recorded by digest and size, the manifests it lists that
    /// are already held are linked under it, and it is linked under the indexes that list it.
    async fn store_manifest(
        &self,
        name: &RepoName,
        routed: &Routed,
        tag: Option<&str>,
        digest: &Digest,
        media_type: Option<&str>,
        payload: Bytes,
    ) -> Result<StoredManifest> {
        let parsed = manifest::parse(&payload, media_type)?;
        let mut client = self.client().await?;
        let repo = registry::ensure_repository(&client, routed.entry.mirror.org_id, name.as_str()).await?;
        let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
        let sizes: Vec<(String, i64)> =
            parsed.blobs.iter().map(|b| (b.digest.to_string(), i64::try_from(b.size).unwrap_or(i64::MAX))).collect();
        if let Some((blob, said, known)) = mirrors::known_blobs(&tx, &sizes).await? {
            return Err(RegistryError::SizeInvalid {
                over_limit: false,
                detail: format!("the upstream's manifest says blob {blob} has {said} bytes; it has {known}"),
            });
        }
        let children: Vec<String> = parsed.children.iter().map(|c| c.digest.to_string()).collect();
        let child_ids: Vec<i64> = if children.is_empty() {
            Vec::new()
        } else {
            registry::manifest_ids(&tx, repo.id, &children).await?.into_values().map(|(id, _)| id).collect()
        };
        let blob_digests = super::manifests::dedup(sizes.iter().map(|(d, _)| d.clone()));
        let total =
            parsed.blobs.iter().chain(&parsed.children).fold(payload.len() as u64, |sum, d| sum.saturating_add(d.size));
        let row = super::manifests::new_manifest(repo.id, digest, &parsed, &payload, total, &blob_digests, &child_ids);
        let id = registry::insert_manifest(&tx, &row).await?;
        mirrors::adopt(&tx, repo.id, id, digest.as_str()).await?;
        if let Some(tag) = tag {
            registry::put_tag(&tx, repo.id, tag, id).await?;
            mirrors::mark_checked(&tx, repo.id, tag).await?;
        }
        Self::mirror_actor(routed)
            .record(
                &tx,
                "manifest.mirror",
                &repo,
                json!({ "digest": digest, "tag": tag, "upstream": routed.entry.mirror.upstream }),
            )
            .await?;
        tx.commit().await.map_err(aerugo_db::Error::from)?;
        if tag.is_some() {
            self.repository_changed(name).await;
        }
        Ok(StoredManifest {
            digest: digest.to_string(),
            media_type: parsed.media_type,
            payload,
            subject: parsed.subject.map(|s| s.digest.to_string()),
        })
    }

    /// A mirrored blob for HEAD: held, or named by a held manifest (its size is known; no
    /// bytes are fetched for a HEAD).
    pub async fn mirror_blob(&self, view: &View<'_>, name: &RepoName, digest: &Digest) -> Result<Blob> {
        if let Some(found) = if_held(self.blob(view, digest).await)? {
            return Ok(found);
        }
        let (repo, size) = self.named_blob(name, digest).await?;
        Ok(Blob { digest: digest.to_string(), size, storage_key: String::new(), location: repo.location })
    }

    /// The repository `name` and the size of blob `digest`, which a held manifest there names
    /// (a mirror serves or fetches no other blob); `BLOB_UNKNOWN` otherwise.
    async fn named_blob(&self, name: &RepoName, digest: &Digest) -> Result<(Repository, i64)> {
        let unknown = || RegistryError::BlobUnknown(digest.to_string());
        let client = self.client().await?;
        let repo = self.repository(&client, name).await.map_err(|_| unknown())?;
        if !mirrors::referenced(&client, repo.id, digest.as_str()).await? {
            return Err(unknown());
        }
        let size = mirrors::blob_size(&client, digest.as_str()).await?.ok_or_else(unknown)?;
        Ok((repo, size))
    }

    /// Reads a mirrored blob: held (as any blob), or fetched once across the nodes while it
    /// streams to this client. Only blobs a held manifest of the repository names are fetched.
    pub async fn mirror_read_blob(
        self: Arc<Self>,
        view: &View<'_>,
        name: &RepoName,
        routed: &Routed,
        digest: &Digest,
        range: Option<&str>,
    ) -> Result<(Blob, BlobBody)> {
        if let Some(found) = if_held(self.read_blob(view, digest, range).await)? {
            self.pulled(routed, "blob", "hit");
            return Ok(found);
        }
        let (repo, size) = self.named_blob(name, digest).await?;
        let key = format!("blob:{}:{digest}", repo.location);
        let (this, held_in) = (&*self, &repo);
        let claim = self
            .single_flight(&key, move || async move {
                let client = this.client().await?;
                Ok(registry::repository_blob(&client, held_in, digest.as_str()).await?.map(|_| ()))
            })
            .await?;
        let lock = match claim {
            Claim::Ready(()) => {
                self.pulled(routed, "blob", "hit");
                return self.read_blob(view, digest, range).await;
            }
            Claim::Held(lock) => *lock,
        };
        let response = match self.start_fetch(&repo, routed, digest, size).await {
            Ok(None) => {
                // Stored for another repository of the location already: linked, no fetch.
                lock.release().await;
                self.pulled(routed, "blob", "hit");
                return self.read_blob(view, digest, range).await;
            }
            Ok(Some(response)) => response,
            Err(e) => {
                lock.release().await;
                return Err(e);
            }
        };
        self.pulled(routed, "blob", "miss");
        let (sender, receiver) = mpsc::channel::<std::io::Result<Bytes>>(16);
        let (registry, routed, digest_owned, name_owned) = (self.clone(), routed.clone(), digest.clone(), name.clone());
        tokio::spawn(async move {
            let outcome = registry.fetch_blob(&repo, &routed, &digest_owned, size, response, &sender).await;
            lock.release().await;
            match outcome {
                Ok(()) => registry.evict_over_cap(&routed).await,
                Err(e) => {
                    tracing::warn!(repo = %name_owned, digest = %digest_owned, error = %e, "mirror fetch failed");
                    let _ = sender.send(Err(std::io::Error::other(e.to_string()))).await;
                }
            }
        });
        let stream =
            futures_util::stream::unfold(receiver, |mut r| async move { r.recv().await.map(|item| (item, r)) });
        let blob = Blob { digest: digest.to_string(), size, storage_key: String::new(), location: String::new() };
        Ok((blob, BlobBody::Stream { stream: Box::pin(stream), range: None }))
    }

    /// Under the fetch lock: links the blob when its location stores it already (`None`), else
    /// checks the quota and asks the upstream for it (its answer's body is not read yet).
    async fn start_fetch(
        &self,
        repo: &Repository,
        routed: &Routed,
        digest: &Digest,
        size: i64,
    ) -> Result<Option<http::Response<hyper::body::Incoming>>> {
        if self.link_held(repo, digest, routed).await? {
            return Ok(None);
        }
        {
            let db = self.client().await?;
            if let Some(over) = registry::over_quota(&db, repo, Some(digest.as_str()), size).await? {
                drop(db);
                return Err(self.refused_by_quota(repo, &over, Some(digest)).await);
            }
        }
        let mirror = &routed.entry.mirror;
        let sent = self
            .mirrors
            .upstream
            .send(mirror, Method::GET, &routed.upstream_name, &format!("blobs/{digest}"), None)
            .await;
        self.count(routed, "blob", sent.as_ref().map(|_| ()));
        match sent {
            Ok(response) => Ok(Some(response)),
            Err(Failure::NotFound) => Err(RegistryError::BlobUnknown(format!("{digest}: not found upstream"))),
            Err(failure) => Err(upstream_error(routed, digest.as_str(), failure)),
        }
    }

    /// Links `digest` into `repo` when its location already stores it; returns whether it did.
    async fn link_held(&self, repo: &Repository, digest: &Digest, routed: &Routed) -> Result<bool> {
        let mut client = self.client().await?;
        if !registry::object_present(&client, digest.as_str(), &repo.location).await? {
            return Ok(false);
        }
        let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
        if let Some(over) = registry::over_quota(&tx, repo, Some(digest.as_str()), 0).await? {
            drop(tx);
            drop(client);
            return Err(self.refused_by_quota(repo, &over, Some(digest)).await);
        }
        if !registry::link_blob(&tx, repo.id, digest.as_str()).await?
            || !registry::object_present(&tx, digest.as_str(), &repo.location).await?
        {
            return Ok(false);
        }
        Self::mirror_actor(routed)
            .record(&tx, "blob.mirror", repo, json!({ "digest": digest, "linked": true }))
            .await?;
        tx.commit().await.map_err(aerugo_db::Error::from)?;
        Ok(true)
    }

    /// Streams blob `digest` from the upstream's `response` into storage and to `client` (a client that went
    /// away does not stop it), verifies size and digest, and records it.
    async fn fetch_blob(
        &self,
        repo: &Repository,
        routed: &Routed,
        digest: &Digest,
        size: i64,
        response: http::Response<hyper::body::Incoming>,
        client: &mpsc::Sender<std::io::Result<Bytes>>,
    ) -> Result<()> {
        let upstream = &self.mirrors.upstream;
        let mirror = &routed.entry.mirror;
        let expected = u64::try_from(size).unwrap_or(0);
        let store = self.store.location(&repo.location).await?;
        let id = Uuid::new_v4();
        let mut writer = store.resume_upload(id, UploadState::default(), Vec::new()).await?;
        let mut hasher = ResumableHash::new(digest.kind());
        let mut received = 0u64;
        let mut body = response.into_body().into_data_stream();
        let bytes = self.mirrors.metrics.upstream_bytes.with_label_values(&[&mirror.org]);
        let failed = loop {
            let next = match tokio::time::timeout(upstream.timeout(), body.next()).await {
                Err(_) => break Some(format!("the upstream sent nothing for {} s", upstream.timeout().as_secs())),
                Ok(next) => next,
            };
            let chunk = match next {
                None => break None,
                Some(Err(e)) => break Some(format!("reading from the upstream: {e}")),
                Some(Ok(chunk)) => chunk,
            };
            received += chunk.len() as u64;
            if received > expected {
                break Some(format!("the upstream sent more than the {expected} bytes the manifest names"));
            }
            bytes.inc_by(chunk.len() as u64);
            hasher.update(&chunk);
            if let Err(e) = writer.write(chunk.clone()).await {
                break Some(format!("writing to storage: {e}"));
            }
            // The client may have gone: the fetch goes on for the next pull.
            let _ = client.send(Ok(chunk)).await;
        };
        let computed = hasher.finish();
        let failed = failed.or_else(|| {
            if received != expected {
                Some(format!("the upstream sent {received} bytes; the manifest names {expected}"))
            } else if &computed != digest {
                Some(format!("the upstream's bytes have digest {computed}"))
            } else {
                None
            }
        });
        if let Some(why) = failed {
            let (state, _) = writer.pause().await?;
            store.abort_upload(id, &state).await?;
            return Err(RegistryError::Upstream {
                message: format!("fetching blob {digest} from the upstream of mirror {} failed", mirror.name),
                cause: format!("{}: {why}", mirror.upstream),
            });
        }
        let key = store.complete_upload(writer, digest).await?;
        let detail = json!({ "digest": digest, "size": size, "upstream": mirror.upstream });
        self.record_blob(repo, digest, size, &key, &store, &Self::mirror_actor(routed), detail, "blob.mirror").await
    }

    /// Evicts least recently pulled images while the mirror holds more than its byte cap.
    async fn evict_over_cap(&self, routed: &Routed) {
        let Some(max) = routed.entry.mirror.max_bytes else { return };
        // This node's pulls count in the order of eviction.
        if let Err(e) = self.flush_pulls().await {
            tracing::warn!(error = %e, "recording manifest pulls before an eviction failed");
        }
        let evicted = async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
            let evicted = mirrors::evict(&tx, routed.entry.mirror.org_id, max).await?;
            tx.commit().await.map_err(aerugo_db::Error::from)?;
            Ok::<_, RegistryError>(evicted)
        };
        match evicted.await {
            Ok(evicted) => {
                let mut changed: Vec<&str> = evicted.iter().map(|e| e.repository.as_str()).collect();
                changed.sort_unstable();
                changed.dedup();
                for repository in changed {
                    if let Ok(name) = repository.parse::<RepoName>() {
                        self.repository_changed(&name).await;
                    }
                }
                if !evicted.is_empty() {
                    let org = &routed.entry.mirror.org;
                    self.mirrors.metrics.evictions.with_label_values(&[org]).inc_by(evicted.len() as u64);
                    tracing::info!(mirror = %org, evicted = evicted.len(), max_bytes = max, "evicted least recently pulled images");
                }
            }
            Err(e) => tracing::warn!(mirror = %routed.entry.mirror.org, error = %e, "mirror eviction failed"),
        }
    }

    /// Takes the fetch lock `key` unless `ready` finds the thing there; while another holds
    /// the lock, waits (without holding a connection) and looks again.
    async fn single_flight<T, F, Fut>(&self, key: &str, ready: F) -> Result<Claim<T>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<T>>>,
    {
        let started = Instant::now();
        loop {
            if let Some(found) = ready().await? {
                return Ok(Claim::Ready(found));
            }
            if let Some(lock) = self.try_fetch_lock(key).await? {
                // The holder before us may have finished between the look and the lock.
                if let Some(found) = ready().await? {
                    lock.release().await;
                    return Ok(Claim::Ready(found));
                }
                return Ok(Claim::Held(Box::new(lock)));
            }
            if started.elapsed() > WAIT_FOR_FETCH {
                return Err(RegistryError::Unavailable(format!(
                    "another request has been fetching {key} for {} s",
                    WAIT_FOR_FETCH.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The fetch lock `key`, if no one holds it.
    async fn try_fetch_lock(&self, key: &str) -> Result<Option<FetchLock>> {
        let client = self.client().await?;
        if mirrors::try_lock(&client, key).await? {
            Ok(Some(FetchLock { client: Some(client), key: key.to_owned() }))
        } else {
            Ok(None)
        }
    }
}

/// What a lookup found: `None` when it is not held (`MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`), other
/// errors as they are.
fn if_held<T>(found: Result<T>) -> Result<Option<T>> {
    match found {
        Ok(found) => Ok(Some(found)),
        Err(RegistryError::ManifestUnknown(_) | RegistryError::BlobUnknown(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The error a client gets when the upstream could not give what a mirror needs.
fn upstream_error(routed: &Routed, what: &str, failure: Failure) -> RegistryError {
    let mirror = &routed.entry.mirror;
    match failure {
        Failure::NotFound => RegistryError::ManifestUnknown(format!("{what}: not found upstream")),
        Failure::Unavailable(cause) => RegistryError::Upstream {
            message: format!("{what} is not cached and the upstream of mirror {} is unavailable", mirror.name),
            cause: format!("{}: {cause}", mirror.upstream),
        },
        Failure::Refused(cause) => RegistryError::Upstream {
            message: format!("{what} could not be mirrored: the upstream of mirror {} refused it", mirror.name),
            cause: format!("{}: {cause}", mirror.upstream),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aerugo_oci::manifest::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};

    #[test]
    fn the_accept_header_names_every_stored_manifest_type() {
        for t in [OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST] {
            assert!(ACCEPT.contains(t), "{t}");
        }
    }
}
