//! Registry metadata: organizations and repositories as the data plane needs them, blobs and
//! their repository links, manifests with their blob/child references, tags and referrers.
//! Listing is keyset-paginated in byte order (`COLLATE "C"`), never a storage walk.

use tokio_postgres::Row;

use crate::{GenericClient, Result};

/// A repository as the data plane resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// Row id.
    pub id: i64,
    /// Owning organization's id.
    pub org_id: i64,
    /// Full repository name (`org/team/app`).
    pub name: String,
    /// `private` or `public`.
    pub visibility: String,
    /// Tag patterns (globs) whose tags never move once pushed.
    pub immutable_tag_patterns: Vec<String>,
    /// Where its blobs are stored: `""` for the registry's store, else its organization's
    /// dedicated bucket.
    pub location: String,
    /// Its organization's storage quota, if it has one.
    pub quota_bytes: Option<i64>,
}

impl From<Row> for Repository {
    fn from(row: Row) -> Self {
        Repository {
            id: row.get("id"),
            org_id: row.get("org_id"),
            name: row.get("name"),
            visibility: row.get("visibility"),
            immutable_tag_patterns: row.get("immutable_tag_patterns"),
            location: row.get("location"),
            quota_bytes: row.get("quota_bytes"),
        }
    }
}

/// A stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:…`
    pub digest: String,
    /// Size in bytes.
    pub size: i64,
    /// Where the backend keeps it, in `location`.
    pub storage_key: String,
    /// The store holding this object (`""`: the registry's).
    pub location: String,
}

/// A stored manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Row id.
    pub id: i64,
    /// `sha256:…` of the payload.
    pub digest: String,
    /// Media type served as `Content-Type`.
    pub media_type: String,
    /// Byte-exact payload.
    pub payload: Vec<u8>,
    /// Subject digest, served as `OCI-Subject`.
    pub subject_digest: Option<String>,
}

impl From<Row> for Manifest {
    fn from(row: Row) -> Self {
        Manifest {
            id: row.get("id"),
            digest: row.get("digest"),
            media_type: row.get("media_type"),
            payload: row.get("payload"),
            subject_digest: row.get("subject_digest"),
        }
    }
}

/// A manifest to insert.
#[derive(Debug, Clone)]
pub struct NewManifest<'a> {
    /// Repository row id.
    pub repository_id: i64,
    /// Digest of `payload`.
    pub digest: &'a str,
    /// Effective media type.
    pub media_type: &'a str,
    /// Artifact type reported by the referrers API.
    pub artifact_type: Option<&'a str>,
    /// Subject digest, if any.
    pub subject_digest: Option<&'a str>,
    /// Config blob digest, if any.
    pub config_digest: Option<&'a str>,
    /// Top-level annotations.
    pub annotations: Option<serde_json::Value>,
    /// Byte-exact payload.
    pub payload: &'a [u8],
    /// Payload plus referenced content size.
    pub total_size: i64,
    /// Digests of referenced blobs (already verified present).
    pub blob_digests: &'a [String],
    /// Row ids of referenced child manifests (already verified present).
    pub child_ids: &'a [i64],
}

/// A referrer of a subject manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Referrer {
    /// Digest of the referring manifest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its payload size.
    pub size: i64,
    /// Its artifact type.
    pub artifact_type: Option<String>,
    /// Its annotations.
    pub annotations: Option<serde_json::Value>,
}

/// Outcome of deleting a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestDeletion {
    /// Deleted (tags pointing at it went with it).
    Deleted,
    /// No such manifest in the repository.
    NotFound,
    /// An index in the repository still lists it.
    ReferencedByIndex,
}

/// Outcome of removing a blob from a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobUnlink {
    /// Unlinked.
    Unlinked,
    /// Not linked to the repository.
    NotFound,
    /// A manifest in the repository still references it.
    InUse,
}

/// Returns the id of the organization `name`, creating it (owned by the system) if missing.
/// Safe under concurrency: `DO UPDATE` returns the row a racing insert committed, where
/// `DO NOTHING` plus a select would miss it (the select's snapshot predates that commit).
pub async fn ensure_organization(client: &impl GenericClient, name: &str) -> Result<i64> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO organizations (name, managed_by) VALUES ($1, 'system')
             ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        )
        .await?;
    Ok(client.query_one(&stmt, &[&name]).await?.get(0))
}

/// Looks a repository up by full name.
pub async fn find_repository(client: &impl GenericClient, name: &str) -> Result<Option<Repository>> {
    let stmt = client
        .prepare_cached(
            "SELECT r.id, r.org_id, r.name, r.visibility, r.immutable_tag_patterns, COALESCE(o.bucket, '') AS location,
                    o.quota_bytes
               FROM repositories r JOIN organizations o ON o.id = r.org_id
              WHERE r.name = $1 AND r.deleted_at IS NULL",
        )
        .await?;
    Ok(client.query_opt(&stmt, &[&name]).await?.map(Repository::from))
}

/// Returns the repository `name`, creating it in `org_id` if missing (concurrency-safe, as
/// [`ensure_organization`]).
pub async fn ensure_repository(client: &impl GenericClient, org_id: i64, name: &str) -> Result<Repository> {
    let stmt = client
        .prepare_cached(
            "WITH r AS (
                 INSERT INTO repositories (org_id, name, visibility, managed_by)
                 SELECT $1, $2, o.default_visibility, 'api' FROM organizations o WHERE o.id = $1
                 ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
                 RETURNING id, org_id, name, visibility, immutable_tag_patterns)
             SELECT r.*, COALESCE(o.bucket, '') AS location, o.quota_bytes FROM r JOIN organizations o ON o.id = r.org_id",
        )
        .await?;
    Ok(client.query_one(&stmt, &[&org_id, &name]).await?.into())
}

/// Records the time of the latest push into a repository.
pub async fn touch_repository(client: &impl GenericClient, repository_id: i64) -> Result<()> {
    let stmt = client.prepare_cached("UPDATE repositories SET last_push_at = now() WHERE id = $1").await?;
    client.execute(&stmt, &[&repository_id]).await?;
    Ok(())
}

/// The blob `digest` if it is linked to the repository, with its object in the repository's
/// location.
pub async fn repository_blob(client: &impl GenericClient, repo: &Repository, digest: &str) -> Result<Option<Blob>> {
    let stmt = client
        .prepare_cached(
            "SELECT b.digest, b.size, bo.storage_key, bo.location FROM repository_blobs rb
             JOIN blobs b ON b.digest = rb.digest
             JOIN blob_objects bo ON bo.digest = rb.digest AND bo.location = $3
             WHERE rb.repository_id = $1 AND rb.digest = $2",
        )
        .await?;
    Ok(client.query_opt(&stmt, &[&repo.id, &digest, &repo.location]).await?.map(|r| Blob {
        digest: r.get(0),
        size: r.get(1),
        storage_key: r.get(2),
        location: r.get(3),
    }))
}

/// Resolves repository `name` and, in the same round trip, the blob `digest` linked there
/// with its object in the repository's location: `None` when the repository does not exist,
/// `Some(None)` when the blob is not linked.
pub async fn blob_by_repository_name(
    client: &impl GenericClient,
    name: &str,
    digest: &str,
) -> Result<Option<Option<Blob>>> {
    let stmt = client
        .prepare_cached(
            "SELECT b.digest, b.size, bo.storage_key, bo.location FROM repositories r
             JOIN organizations o ON o.id = r.org_id
             LEFT JOIN repository_blobs rb ON rb.repository_id = r.id AND rb.digest = $2
             LEFT JOIN blobs b ON b.digest = rb.digest
             LEFT JOIN blob_objects bo ON bo.digest = rb.digest AND bo.location = COALESCE(o.bucket, '')
             WHERE r.name = $1 AND r.deleted_at IS NULL",
        )
        .await?;
    Ok(client.query_opt(&stmt, &[&name, &digest]).await?.map(|r| {
        let key: Option<String> = r.get(2);
        key.map(|storage_key| Blob { digest: r.get(0), size: r.get(1), storage_key, location: r.get(3) })
    }))
}

/// Records a completed blob's object in `location` (idempotent: content-addressed rows never
/// change). Returns whether the object row is new.
pub async fn insert_blob(
    client: &impl GenericClient,
    digest: &str,
    size: i64,
    location: &str,
    storage_key: &str,
) -> Result<bool> {
    let blob = client
        .prepare_cached("INSERT INTO blobs (digest, size) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING")
        .await?;
    // The row is share-locked until the transaction ends, so the collector cannot delete it
    // under this upload. One the collector is deleting right now makes the lock wait for it and
    // then find no row: insert it again.
    let lock = client.prepare_cached("SELECT 1 FROM blobs WHERE digest = $1 FOR KEY SHARE").await?;
    for _ in 0..3 {
        client.execute(&blob, &[&digest, &size]).await?;
        if client.query_opt(&lock, &[&digest]).await?.is_some() {
            break;
        }
    }
    let object = client
        .prepare_cached(
            "INSERT INTO blob_objects (digest, location, storage_key) VALUES ($1, $2, $3)
             ON CONFLICT (digest, location) DO NOTHING",
        )
        .await?;
    Ok(client.execute(&object, &[&digest, &location, &storage_key]).await? > 0)
}

/// An organization's storage quota that a push would exceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverQuota {
    /// The organization's name.
    pub org: String,
    /// Its quota, bytes.
    pub quota: i64,
    /// Bytes its repositories hold now (each distinct blob once).
    pub used: i64,
    /// Bytes the push adds (0 when the organization already holds the blob).
    pub adds: i64,
}

/// Whether adding blob `digest` (`size` bytes; `None`: just opening an upload) to `repo`
/// exceeds its organization's quota. Usage counts each distinct blob once, so a blob the
/// organization already holds adds nothing. Without a quota (as `repo` was read) nothing is
/// queried; with one, the organization row is locked (`FOR NO KEY UPDATE`: repositories can
/// still be created) until the caller's transaction ends, so concurrent pushes are counted one
/// after another.
pub async fn over_quota(
    client: &impl GenericClient,
    repo: &Repository,
    digest: Option<&str>,
    size: i64,
) -> Result<Option<OverQuota>> {
    if repo.quota_bytes.is_none() {
        return Ok(None);
    }
    let stmt = client
        .prepare_cached(
            "SELECT o.name, o.quota_bytes,
                    (SELECT COALESCE(SUM(b.size), 0)::bigint FROM blobs b
                      WHERE b.digest IN (SELECT rb.digest FROM repository_blobs rb
                                           JOIN repositories r ON r.id = rb.repository_id WHERE r.org_id = o.id)),
                    EXISTS (SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
                             WHERE r.org_id = o.id AND rb.digest = $2)
               FROM organizations o WHERE o.id = $1 FOR NO KEY UPDATE OF o",
        )
        .await?;
    let row = client.query_one(&stmt, &[&repo.org_id, &digest.unwrap_or_default()]).await?;
    let (org, quota, used, held): (String, Option<i64>, i64, bool) = (row.get(0), row.get(1), row.get(2), row.get(3));
    let Some(quota) = quota else { return Ok(None) };
    let adds = if held { 0 } else { size };
    let exceeded = match digest {
        Some(_) => adds > 0 && used + adds > quota,
        None => used >= quota,
    };
    Ok(exceeded.then_some(OverQuota { org, quota, used, adds }))
}

/// Whether the object of `digest` in `location` is recorded. Called after a link, whose
/// foreign key waited for any collector holding the blob: a collection that removed the object
/// meanwhile is seen here, and the link must not be published.
pub async fn object_present(client: &impl GenericClient, digest: &str, location: &str) -> Result<bool> {
    let stmt = client.prepare_cached("SELECT 1 FROM blob_objects WHERE digest = $1 AND location = $2").await?;
    Ok(client.query_opt(&stmt, &[&digest, &location]).await?.is_some())
}

/// Makes `digest` readable in the repository (idempotent). An existing link is renewed: the
/// collector leaves a link no manifest references alone for the review delay after its last
/// upload, so the manifest that follows an upload finds it. False when the blob's row is gone
/// (the collector deleted it meanwhile; the transaction is then aborted).
pub async fn link_blob(client: &impl GenericClient, repository_id: i64, digest: &str) -> Result<bool> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO repository_blobs (repository_id, digest) VALUES ($1, $2)
             ON CONFLICT (repository_id, digest) DO UPDATE SET created_at = now()",
        )
        .await?;
    match client.execute(&stmt, &[&repository_id, &digest]).await {
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) => Ok(false),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(true),
    }
}

/// Removes a blob from a repository unless a manifest there still references it. Call inside
/// a transaction: the link is locked first, so a manifest push that is checking the same link
/// (see [`missing_blobs`]) either finishes first and is seen, or sees the link gone.
pub async fn unlink_blob(client: &impl GenericClient, repository_id: i64, digest: &str) -> Result<BlobUnlink> {
    let lock = client
        .prepare_cached("SELECT 1 FROM repository_blobs WHERE repository_id = $1 AND digest = $2 FOR UPDATE")
        .await?;
    if client.query_opt(&lock, &[&repository_id, &digest]).await?.is_none() {
        return Ok(BlobUnlink::NotFound);
    }
    let used = client
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM manifest_blobs mb JOIN manifests m ON m.id = mb.manifest_id
                            WHERE m.repository_id = $1 AND mb.digest = $2)",
        )
        .await?;
    if client.query_one(&used, &[&repository_id, &digest]).await?.get::<_, bool>(0) {
        return Ok(BlobUnlink::InUse);
    }
    let delete = client.prepare_cached("DELETE FROM repository_blobs WHERE repository_id = $1 AND digest = $2").await?;
    client.execute(&delete, &[&repository_id, &digest]).await?;
    Ok(BlobUnlink::Unlinked)
}

/// Of `digests`, those linked to the repository, with their stored size: (digest, size). The
/// links found are share-locked until the transaction ends, so they cannot be removed under a
/// manifest being stored.
pub async fn linked_blobs(
    client: &impl GenericClient,
    repository_id: i64,
    digests: &[String],
) -> Result<std::collections::HashMap<String, i64>> {
    let stmt = client
        .prepare_cached(
            "SELECT rb.digest, b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
              WHERE rb.repository_id = $1 AND rb.digest = ANY($2) FOR KEY SHARE OF rb",
        )
        .await?;
    Ok(client.query(&stmt, &[&repository_id, &digests]).await?.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The manifests among `digests` present in the repository, as digest → (row id, payload
/// size). The rows are share-locked until the transaction ends, so they cannot be deleted under
/// an index being stored.
pub async fn manifest_ids(
    client: &impl GenericClient,
    repository_id: i64,
    digests: &[String],
) -> Result<std::collections::HashMap<String, (i64, i64)>> {
    let stmt = client
        .prepare_cached(
            "SELECT digest, id, octet_length(payload)::bigint FROM manifests
              WHERE repository_id = $1 AND digest = ANY($2) FOR KEY SHARE",
        )
        .await?;
    Ok(client
        .query(&stmt, &[&repository_id, &digests])
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

/// Resolves repository `name` and, in the same round trip, the manifest `reference` (a tag when
/// `by_tag`, else a digest): `None` when the repository does not exist, `Some(None)` when the
/// manifest is not there.
pub async fn manifest_by_repository_name(
    client: &impl GenericClient,
    name: &str,
    reference: &str,
    by_tag: bool,
) -> Result<Option<Option<Manifest>>> {
    let sql = if by_tag {
        "SELECT m.id, m.digest, m.media_type, m.payload, m.subject_digest FROM repositories r
         LEFT JOIN tags t ON t.repository_id = r.id AND t.name = $2
         LEFT JOIN manifests m ON m.id = t.manifest_id
         WHERE r.name = $1 AND r.deleted_at IS NULL"
    } else {
        "SELECT m.id, m.digest, m.media_type, m.payload, m.subject_digest FROM repositories r
         LEFT JOIN manifests m ON m.repository_id = r.id AND m.digest = $2
         WHERE r.name = $1 AND r.deleted_at IS NULL"
    };
    let stmt = client.prepare_cached(sql).await?;
    Ok(client.query_opt(&stmt, &[&name, &reference]).await?.map(|r| {
        let id: Option<i64> = r.get("id");
        id.map(|_| Manifest::from(r))
    }))
}

/// Records manifest pulls ((repository, digest) → when), never moving a time backwards (one
/// statement per batch).
pub async fn record_pulls(
    client: &impl GenericClient,
    pulls: &[((String, String), time::OffsetDateTime)],
) -> Result<()> {
    let mut names = Vec::with_capacity(pulls.len());
    let mut digests = Vec::with_capacity(pulls.len());
    let mut times = Vec::with_capacity(pulls.len());
    for ((name, digest), at) in pulls {
        names.push(name.as_str());
        digests.push(digest.as_str());
        times.push(*at);
    }
    let stmt = client
        .prepare_cached(
            "UPDATE manifests m SET last_pulled_at = p.at
               FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS p(name, digest, at)
               JOIN repositories r ON r.name = p.name
              WHERE m.repository_id = r.id AND m.digest = p.digest
                AND (m.last_pulled_at IS NULL OR m.last_pulled_at < p.at)",
        )
        .await?;
    client.execute(&stmt, &[&names, &digests, &times]).await?;
    Ok(())
}

/// Stores a manifest and its references; returns its id. Re-pushing the same digest keeps the
/// existing row (the payload is identical by construction).
pub async fn insert_manifest(client: &impl GenericClient, m: &NewManifest<'_>) -> Result<i64> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO manifests (repository_id, digest, media_type, artifact_type, subject_digest,
                                    config_digest, annotations, payload, total_size)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (repository_id, digest) DO UPDATE SET digest = EXCLUDED.digest
             RETURNING id",
        )
        .await?;
    let id: i64 = client
        .query_one(
            &stmt,
            &[
                &m.repository_id,
                &m.digest,
                &m.media_type,
                &m.artifact_type,
                &m.subject_digest,
                &m.config_digest,
                &m.annotations,
                &m.payload,
                &m.total_size,
            ],
        )
        .await?
        .get(0);
    if !m.blob_digests.is_empty() {
        let stmt = client
            .prepare_cached(
                "INSERT INTO manifest_blobs (manifest_id, digest)
                 SELECT $1, d FROM unnest($2::text[]) AS d ON CONFLICT DO NOTHING",
            )
            .await?;
        client.execute(&stmt, &[&id, &m.blob_digests]).await?;
    }
    if !m.child_ids.is_empty() {
        let stmt = client
            .prepare_cached(
                "INSERT INTO manifest_references (parent_id, child_id)
                 SELECT $1, c FROM unnest($2::bigint[]) AS c ON CONFLICT DO NOTHING",
            )
            .await?;
        client.execute(&stmt, &[&id, &m.child_ids]).await?;
    }
    Ok(id)
}

/// Points `tag` at `manifest_id` (creating or moving it).
pub async fn put_tag(client: &impl GenericClient, repository_id: i64, tag: &str, manifest_id: i64) -> Result<()> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO tags (repository_id, name, manifest_id) VALUES ($1, $2, $3)
             ON CONFLICT (repository_id, name) DO UPDATE
             SET manifest_id = EXCLUDED.manifest_id, updated_at = now()
             WHERE tags.manifest_id <> EXCLUDED.manifest_id",
        )
        .await?;
    client.execute(&stmt, &[&repository_id, &tag, &manifest_id]).await?;
    Ok(())
}

/// Creates `tag` on `manifest_id` unless it exists: an immutable tag never moves. Returns the
/// digest it already points to when that is another manifest.
pub async fn put_tag_once(
    client: &impl GenericClient,
    repository_id: i64,
    tag: &str,
    manifest_id: i64,
) -> Result<Option<String>> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO tags (repository_id, name, manifest_id) VALUES ($1, $2, $3)
             ON CONFLICT (repository_id, name) DO NOTHING",
        )
        .await?;
    if client.execute(&stmt, &[&repository_id, &tag, &manifest_id]).await? > 0 {
        return Ok(None);
    }
    let stmt = client
        .prepare_cached(
            "SELECT m.digest, t.manifest_id FROM tags t JOIN manifests m ON m.id = t.manifest_id
              WHERE t.repository_id = $1 AND t.name = $2",
        )
        .await?;
    Ok(client
        .query_opt(&stmt, &[&repository_id, &tag])
        .await?
        .filter(|r| r.get::<_, i64>(1) != manifest_id)
        .map(|r| r.get(0)))
}

/// The tags pointing at manifest `digest`.
pub async fn tags_on(client: &impl GenericClient, repository_id: i64, digest: &str) -> Result<Vec<String>> {
    let stmt = client
        .prepare_cached(
            "SELECT t.name FROM tags t JOIN manifests m ON m.id = t.manifest_id
              WHERE t.repository_id = $1 AND m.digest = $2 ORDER BY t.name",
        )
        .await?;
    Ok(client.query(&stmt, &[&repository_id, &digest]).await?.iter().map(|r| r.get(0)).collect())
}

/// Removes a tag; false when it did not exist.
pub async fn delete_tag(client: &impl GenericClient, repository_id: i64, tag: &str) -> Result<bool> {
    let stmt = client.prepare_cached("DELETE FROM tags WHERE repository_id = $1 AND name = $2").await?;
    Ok(client.execute(&stmt, &[&repository_id, &tag]).await? > 0)
}

/// Tags page in byte order: names after `last`, at most `limit`.
pub async fn list_tags(
    client: &impl GenericClient,
    repository_id: i64,
    last: Option<&str>,
    limit: i64,
) -> Result<Vec<String>> {
    let stmt = client
        .prepare_cached(
            "SELECT name FROM tags WHERE repository_id = $1 AND ($2::text IS NULL OR name > $2)
             ORDER BY name LIMIT $3",
        )
        .await?;
    Ok(client.query(&stmt, &[&repository_id, &last, &limit]).await?.iter().map(|r| r.get(0)).collect())
}

/// Deletes a manifest (and the tags on it) unless an index in the repository lists it.
pub async fn delete_manifest(
    client: &impl GenericClient,
    repository_id: i64,
    digest: &str,
) -> Result<ManifestDeletion> {
    let stmt = client
        .prepare_cached(
            "SELECT m.id, EXISTS (SELECT 1 FROM manifest_references r WHERE r.child_id = m.id)
             FROM manifests m WHERE m.repository_id = $1 AND m.digest = $2 FOR UPDATE",
        )
        .await?;
    let Some(row) = client.query_opt(&stmt, &[&repository_id, &digest]).await? else {
        return Ok(ManifestDeletion::NotFound);
    };
    let (id, referenced): (i64, bool) = (row.get(0), row.get(1));
    if referenced {
        return Ok(ManifestDeletion::ReferencedByIndex);
    }
    let stmt = client.prepare_cached("DELETE FROM manifests WHERE id = $1").await?;
    match client.execute(&stmt, &[&id]).await {
        // An index listing it was committed while we waited for the row lock.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) => {
            Ok(ManifestDeletion::ReferencedByIndex)
        }
        Err(e) => Err(e.into()),
        Ok(_) => Ok(ManifestDeletion::Deleted),
    }
}

/// Manifests in the repository whose subject is `subject`, optionally of one artifact type, in
/// digest order after `after`, at most `limit`.
pub async fn referrers(
    client: &impl GenericClient,
    repository_id: i64,
    subject: &str,
    artifact_type: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Referrer>> {
    let stmt = client
        .prepare_cached(
            "SELECT digest, media_type, octet_length(payload)::bigint, artifact_type, annotations
             FROM manifests
             WHERE repository_id = $1 AND subject_digest = $2
               AND ($3::text IS NULL OR artifact_type = $3)
               AND ($4::text IS NULL OR digest > $4)
             ORDER BY digest
             LIMIT $5",
        )
        .await?;
    Ok(client
        .query(&stmt, &[&repository_id, &subject, &artifact_type, &after, &limit])
        .await?
        .iter()
        .map(|r| Referrer {
            digest: r.get(0),
            media_type: r.get(1),
            size: r.get(2),
            artifact_type: r.get(3),
            annotations: r.get(4),
        })
        .collect())
}
