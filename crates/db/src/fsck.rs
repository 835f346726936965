//! The consistency scan's queries (`aerugo-dataplane fsck`): what must hold between tags,
//! manifests, links and blob objects, and the narrow repairs that never remove anything a
//! manifest still needs.

use crate::{GenericClient, Result};

/// A recorded blob object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The blob.
    pub digest: String,
    /// Its location (`""`: the registry's store).
    pub location: String,
    /// Its storage key there.
    pub storage_key: String,
    /// The blob's size.
    pub size: i64,
}

/// Blob objects in (digest, location) order after `after`, `limit` at a time.
pub async fn objects(client: &impl GenericClient, after: Option<(&str, &str)>, limit: i64) -> Result<Vec<Object>> {
    let (digest, location) = after.unwrap_or(("", ""));
    Ok(client
        .query(
            "SELECT bo.digest, bo.location, bo.storage_key, b.size FROM blob_objects bo JOIN blobs b ON b.digest = bo.digest
              WHERE (bo.digest, bo.location) > ($1, $2) ORDER BY bo.digest, bo.location LIMIT $3",
            &[&digest, &location, &limit],
        )
        .await?
        .iter()
        .map(|r| Object { digest: r.get(0), location: r.get(1), storage_key: r.get(2), size: r.get(3) })
        .collect())
}

/// A repository's link to a blob with no object in the repository's location:
/// (repository, digest, location, a manifest of the repository references it).
pub async fn links_without_object(client: &impl GenericClient) -> Result<Vec<(String, String, String, bool)>> {
    Ok(client
        .query(
            "SELECT r.name, rb.digest, COALESCE(o.bucket, ''),
                    EXISTS (SELECT 1 FROM manifest_blobs mb JOIN manifests m ON m.id = mb.manifest_id
                             WHERE m.repository_id = r.id AND mb.digest = rb.digest)
               FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
               JOIN organizations o ON o.id = r.org_id
              WHERE NOT EXISTS (SELECT 1 FROM blob_objects bo
                                 WHERE bo.digest = rb.digest AND bo.location = COALESCE(o.bucket, ''))
              ORDER BY r.name, rb.digest",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}

/// Blobs a manifest references that its repository does not link: (repository, manifest,
/// blob, the repository's location holds an object of the blob). A pull-through mirror's blobs
/// not fetched yet are not listed.
pub async fn manifest_blobs_not_linked(client: &impl GenericClient) -> Result<Vec<(String, String, String, bool)>> {
    Ok(client
        .query(
            "SELECT r.name, m.digest, mb.digest,
                    EXISTS (SELECT 1 FROM blob_objects bo WHERE bo.digest = mb.digest AND bo.location = COALESCE(o.bucket, ''))
               FROM manifest_blobs mb JOIN manifests m ON m.id = mb.manifest_id
               JOIN repositories r ON r.id = m.repository_id JOIN organizations o ON o.id = r.org_id
              WHERE NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.repository_id = m.repository_id AND rb.digest = mb.digest)
                -- A mirror's manifests name blobs it fetches on their first pull.
                AND NOT (EXISTS (SELECT 1 FROM mirrors mi WHERE mi.org_id = o.id)
                         AND NOT EXISTS (SELECT 1 FROM blob_objects bo
                                          WHERE bo.digest = mb.digest AND bo.location = COALESCE(o.bucket, '')))
              ORDER BY r.name, m.digest, mb.digest",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}

/// Blob rows with no object anywhere that nothing links or references.
pub async fn bare_blobs(client: &impl GenericClient) -> Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT b.digest FROM blobs b
              WHERE NOT EXISTS (SELECT 1 FROM blob_objects bo WHERE bo.digest = b.digest)
                AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)
                AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.digest = b.digest)
              ORDER BY b.digest",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Repair: forgets an object that storage does not hold (the next push of the digest there
/// stores it again).
pub async fn forget_object(client: &impl GenericClient, digest: &str, location: &str) -> Result<bool> {
    Ok(client.execute("DELETE FROM blob_objects WHERE digest = $1 AND location = $2", &[&digest, &location]).await? > 0)
}

/// Repair: removes a link no manifest of its repository references.
pub async fn unlink_unreferenced(client: &impl GenericClient, repository: &str, digest: &str) -> Result<bool> {
    Ok(client
        .execute(
            "DELETE FROM repository_blobs rb USING repositories r
              WHERE r.id = rb.repository_id AND r.name = $1 AND rb.digest = $2
                AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb JOIN manifests m ON m.id = mb.manifest_id
                                 WHERE m.repository_id = r.id AND mb.digest = rb.digest)",
            &[&repository, &digest],
        )
        .await?
        > 0)
}

/// Repair: links a blob a manifest references back into its repository (its object is there).
pub async fn relink(client: &impl GenericClient, repository: &str, digest: &str) -> Result<bool> {
    Ok(client
        .execute(
            "INSERT INTO repository_blobs (repository_id, digest) SELECT id, $2 FROM repositories WHERE name = $1
             ON CONFLICT DO NOTHING",
            &[&repository, &digest],
        )
        .await?
        > 0)
}

/// Repair: deletes a blob row nothing uses and no object backs.
pub async fn drop_bare_blob(client: &impl GenericClient, digest: &str) -> Result<bool> {
    Ok(client
        .execute(
            "DELETE FROM blobs b WHERE b.digest = $1
                AND NOT EXISTS (SELECT 1 FROM blob_objects bo WHERE bo.digest = b.digest)
                AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)
                AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.digest = b.digest)",
            &[&digest],
        )
        .await?
        > 0)
}
