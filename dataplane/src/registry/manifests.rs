//! Manifests and tags: validation against the repository's content, byte-exact storage,
//! tag moves and deletes.

use aerugo_db::GenericClient;
use aerugo_db::registry::{self, ManifestDeletion, NewManifest};
use aerugo_oci::manifest::{self, ParsedManifest};
use aerugo_oci::{Digest, Reference, RepoName};
use bytes::Bytes;
use serde_json::json;

use super::{Actor, Registry};
use crate::cache::codec::{Decoder, Encoder};
use crate::cache::{Kind, View};
use crate::error::{RegistryError, Result};

/// A manifest as served.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    /// Digest of the payload.
    pub digest: String,
    /// `Content-Type` to serve.
    pub media_type: String,
    /// Byte-exact payload.
    pub payload: Bytes,
    /// Subject digest, for `OCI-Subject`.
    pub subject: Option<String>,
}

impl From<registry::Manifest> for StoredManifest {
    fn from(m: registry::Manifest) -> Self {
        StoredManifest {
            digest: m.digest,
            media_type: m.media_type,
            payload: Bytes::from(m.payload),
            subject: m.subject_digest,
        }
    }
}

impl StoredManifest {
    fn encode(&self) -> Bytes {
        Encoder::with_capacity(self.payload.len() + self.digest.len() + self.media_type.len() + 96)
            .str(&self.digest)
            .str(&self.media_type)
            .opt_str(self.subject.as_deref())
            .bytes(&self.payload)
            .finish()
    }

    fn decode(value: Bytes) -> Option<StoredManifest> {
        let mut d = Decoder::new(value);
        let manifest = StoredManifest {
            digest: d.string()?,
            media_type: d.string()?,
            subject: d.opt_string()?,
            payload: d.bytes()?,
        };
        d.done().then_some(manifest)
    }
}

impl Registry {
    /// The manifest `reference` of the repository `view` is of: from the cache, else with one
    /// database round trip (and then cached under the view's stamp).
    pub async fn manifest(&self, view: &View<'_>, reference: &Reference) -> Result<StoredManifest> {
        let tagged = match reference {
            Reference::Tag(tag) => view.get(Kind::Tag, tag.as_str()).await,
            Reference::Digest(_) => None,
        };
        let digest = match reference {
            Reference::Tag(_) => tagged.as_deref().and_then(|d| std::str::from_utf8(d).ok()),
            Reference::Digest(digest) => Some(digest.as_str()),
        };
        if let Some(digest) = digest
            && let Some(found) = view.get(Kind::Manifest, digest).await.and_then(StoredManifest::decode)
        {
            return Ok(found);
        }
        let found = self.load_manifest(view.repository(), reference).await?;
        view.put(Kind::Manifest, &found.digest, found.encode()).await;
        if let Reference::Tag(tag) = reference {
            view.put(Kind::Tag, tag.as_str(), Bytes::copy_from_slice(found.digest.as_bytes())).await;
        }
        Ok(found)
    }

    pub(super) async fn load_manifest(&self, name: &str, reference: &Reference) -> Result<StoredManifest> {
        let client = self.client().await?;
        let (key, by_tag) = match reference {
            Reference::Tag(tag) => (tag.as_str(), true),
            Reference::Digest(digest) => (digest.as_str(), false),
        };
        match registry::manifest_by_repository_name(&client, name, key, by_tag).await? {
            // A missing manifest is MANIFEST_UNKNOWN whether or not its repository exists yet
            // (a caller who may push there must not see a different answer).
            None | Some(None) => Err(RegistryError::ManifestUnknown(reference.to_string())),
            Some(Some(found)) => Ok(found.into()),
        }
    }

    /// Validates and stores a manifest, tagging it when `reference` is a tag. Returns its
    /// digest and subject.
    pub async fn put_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        payload: &[u8],
        actor: &Actor,
    ) -> Result<(Digest, Option<Digest>)> {
        let parsed = manifest::parse(payload, content_type)?;
        // Pushed by digest: verified, and stored, with that digest's algorithm; by tag: sha256.
        let algorithm = match reference {
            Reference::Digest(expected) => expected.kind(),
            Reference::Tag(_) => aerugo_oci::Algorithm::Sha256,
        };
        let digest = algorithm.digest(payload);
        if let Reference::Digest(expected) = reference
            && expected != &digest
        {
            return Err(RegistryError::DigestInvalid(format!("manifest has digest {digest}, not {expected}")));
        }
        let mut client = self.client().await?;
        let repo = self.repository_for_push(&client, name, actor).await?;
        let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
        let child_ids = check_references(&tx, repo.id, &parsed).await?;
        let blob_digests: Vec<String> = dedup(parsed.blobs.iter().map(|b| b.digest.to_string()));
        // Sizes were checked against stored content, which fits in i64; the sum still may not.
        let referenced =
            parsed.blobs.iter().chain(&parsed.children).try_fold(0u64, |sum, d| sum.checked_add(d.size)).ok_or_else(
                || RegistryError::SizeInvalid { over_limit: true, detail: "descriptor sizes add up past 2^64".into() },
            )?;
        let total = referenced.saturating_add(payload.len() as u64);
        let row = new_manifest(repo.id, &digest, &parsed, payload, total, &blob_digests, &child_ids);
        let id = registry::insert_manifest(&tx, &row).await?;
        if let Reference::Tag(tag) = reference {
            match immutable_by(&repo.immutable_tag_patterns, tag.as_str()) {
                Some(pattern) => {
                    if let Some(current) = registry::put_tag_once(&tx, repo.id, tag.as_str(), id).await? {
                        return Err(RegistryError::ImmutableTag(format!(
                            "tag {tag} of {name} is immutable (pattern {pattern:?}) and points to {current}; push under a new tag"
                        )));
                    }
                }
                None => registry::put_tag(&tx, repo.id, tag.as_str(), id).await?,
            }
        }
        registry::touch_repository(&tx, repo.id).await?;
        actor
            .record(
                &tx,
                "manifest.push",
                &repo,
                json!({ "digest": digest, "reference": reference.to_string(), "mediaType": parsed.media_type }),
            )
            .await?;
        tx.commit().await.map_err(aerugo_db::Error::from)?;
        if matches!(reference, Reference::Tag(_)) {
            // Before the push is acknowledged: no node may serve the tag's old digest after.
            self.repository_changed(name).await;
        }
        Ok((digest, parsed.subject.map(|s| s.digest)))
    }

    /// Deletes a tag (by tag) or a manifest and every tag on it (by digest).
    pub async fn delete_manifest(&self, name: &RepoName, reference: &Reference, actor: &Actor) -> Result<()> {
        let mut client = self.client().await?;
        let repo = self.repository(&client, name).await?;
        let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
        let tags = match reference {
            Reference::Tag(tag) => vec![tag.as_str().to_owned()],
            Reference::Digest(digest) => registry::tags_on(&tx, repo.id, digest.as_str()).await?,
        };
        if let Some((tag, pattern)) =
            tags.iter().find_map(|t| immutable_by(&repo.immutable_tag_patterns, t).map(|p| (t, p)))
        {
            return Err(RegistryError::ImmutableTag(format!(
                "tag {tag} of {name} is immutable (pattern {pattern:?}) and cannot be deleted"
            )));
        }
        match reference {
            Reference::Tag(tag) => {
                if !registry::delete_tag(&tx, repo.id, tag.as_str()).await? {
                    return Err(RegistryError::ManifestUnknown(tag.to_string()));
                }
                actor.record(&tx, "tag.delete", &repo, json!({ "tag": tag.as_str() })).await?;
            }
            Reference::Digest(digest) => {
                match registry::delete_manifest(&tx, repo.id, digest.as_str()).await? {
                    ManifestDeletion::NotFound => return Err(RegistryError::ManifestUnknown(digest.to_string())),
                    ManifestDeletion::ReferencedByIndex => {
                        return Err(RegistryError::Denied(format!(
                            "manifest {digest} is listed by an index in {name}; delete the index first"
                        )));
                    }
                    ManifestDeletion::Deleted => {}
                }
                actor.record(&tx, "manifest.delete", &repo, json!({ "digest": digest })).await?;
            }
        }
        tx.commit().await.map_err(aerugo_db::Error::from)?;
        self.repository_changed(name).await;
        Ok(())
    }
}

/// The row of manifest `digest` (`parsed` from `payload`) in repository `repository_id`:
/// `total` bytes with what it references, the (deduplicated) blobs and child manifest rows.
pub(super) fn new_manifest<'a>(
    repository_id: i64,
    digest: &'a Digest,
    parsed: &'a ParsedManifest,
    payload: &'a [u8],
    total: u64,
    blob_digests: &'a [String],
    child_ids: &'a [i64],
) -> NewManifest<'a> {
    NewManifest {
        repository_id,
        digest: digest.as_str(),
        media_type: &parsed.media_type,
        artifact_type: parsed.artifact_type.as_deref(),
        subject_digest: parsed.subject.as_ref().map(|s| s.digest.as_str()),
        config_digest: parsed.config.as_ref().map(|c| c.digest.as_str()),
        annotations: parsed.annotations.clone().map(serde_json::Value::Object),
        payload,
        total_size: i64::try_from(total).unwrap_or(i64::MAX),
        blob_digests,
        child_ids,
    }
}

/// The first of `patterns` (globs) that makes `tag` immutable.
fn immutable_by<'a>(patterns: &'a [String], tag: &str) -> Option<&'a str> {
    patterns.iter().find(|p| globset::Glob::new(p).is_ok_and(|g| g.compile_matcher().is_match(tag))).map(String::as_str)
}

/// Checks that every blob and child manifest the manifest references is in the repository;
/// returns the children's row ids.
async fn check_references(
    client: &impl GenericClient,
    repository_id: i64,
    parsed: &ParsedManifest,
) -> Result<Vec<i64>> {
    let blobs = dedup(parsed.blobs.iter().map(|b| b.digest.to_string()));
    let linked = registry::linked_blobs(client, repository_id, &blobs).await?;
    for descriptor in &parsed.blobs {
        match linked.get(descriptor.digest.as_str()) {
            None => return Err(RegistryError::ManifestBlobUnknown(descriptor.digest.to_string())),
            Some(size) => same_size(descriptor, *size, "blob")?,
        }
    }
    let children = dedup(parsed.children.iter().map(|c| c.digest.to_string()));
    if children.is_empty() {
        return Ok(Vec::new());
    }
    let found = registry::manifest_ids(client, repository_id, &children).await?;
    for descriptor in &parsed.children {
        match found.get(descriptor.digest.as_str()) {
            None => return Err(RegistryError::ManifestBlobUnknown(descriptor.digest.to_string())),
            Some((_, size)) => same_size(descriptor, *size, "manifest")?,
        }
    }
    Ok(found.into_values().map(|(id, _)| id).collect())
}

/// A descriptor's `size` must be the stored content's: a client that trusts the descriptor
/// (to allocate, or to verify a download) must not be lied to.
fn same_size(descriptor: &manifest::Descriptor, stored: i64, what: &str) -> Result<()> {
    if u64::try_from(stored).ok() == Some(descriptor.size) {
        return Ok(());
    }
    Err(RegistryError::SizeInvalid {
        over_limit: false,
        detail: format!(
            "descriptor of {what} {} says {} bytes; the stored {what} has {stored}",
            descriptor.digest, descriptor.size
        ),
    })
}

pub(super) fn dedup(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = items.collect();
    v.sort();
    v.dedup();
    v
}
