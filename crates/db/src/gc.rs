//! The blob garbage collector's queries. The schema's triggers queue a digest in
//! `gc_blob_review_queue` whenever a repository or manifest stops referencing it, with a review
//! delay; the collector takes due entries (`SKIP LOCKED`, so several collectors share the work)
//! and deletes the blobs nothing references any more.

use deadpool_postgres::GenericClient;

use crate::Result;

/// A due queue entry, locked until the transaction ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The digest.
    pub digest: String,
    /// The blob's objects (location, storage key) that no repository of their location
    /// references: delete them.
    pub unreferenced: Vec<(String, String)>,
    /// Nothing references the blob anywhere: its row goes too.
    pub delete_blob: bool,
}

/// Takes up to `limit` due entries and locks their blob rows. Whether each object is still
/// unreferenced is checked after the lock, so a concurrent link either committed before (and
/// is seen) or waits for this transaction (its foreign key locks the blob row) and then finds
/// its location's object gone (the data plane checks, and the client uploads again).
pub async fn take_due(client: &impl GenericClient, limit: i64) -> Result<Vec<Due>> {
    let digests: Vec<String> = client
        .query(
            "SELECT digest FROM gc_blob_review_queue WHERE review_after <= now()
              ORDER BY review_after LIMIT $1 FOR UPDATE SKIP LOCKED",
            &[&limit],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut due = Vec::with_capacity(digests.len());
    for digest in digests {
        let exists = client.query_opt("SELECT 1 FROM blobs WHERE digest = $1 FOR UPDATE", &[&digest]).await?.is_some();
        // Per location: does a repository reading from it link or reference the blob?
        let objects = client
            .query(
                "SELECT bo.location, bo.storage_key,
                        EXISTS (SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
                                  JOIN organizations o ON o.id = r.org_id
                                 WHERE rb.digest = bo.digest AND COALESCE(o.bucket, '') = bo.location)
                     OR EXISTS (SELECT 1 FROM manifest_blobs mb JOIN manifests m ON m.id = mb.manifest_id
                                  JOIN repositories r ON r.id = m.repository_id JOIN organizations o ON o.id = r.org_id
                                 WHERE mb.digest = bo.digest AND COALESCE(o.bucket, '') = bo.location)
                   FROM blob_objects bo WHERE bo.digest = $1 ORDER BY bo.location",
                &[&digest],
            )
            .await?;
        let referenced: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM repository_blobs WHERE digest = $1)
                     OR EXISTS (SELECT 1 FROM manifest_blobs WHERE digest = $1)",
                &[&digest],
            )
            .await?
            .get(0);
        let unreferenced =
            objects.iter().filter(|r| !r.get::<_, bool>(2)).map(|r| (r.get(0), r.get(1))).collect::<Vec<_>>();
        due.push(Due { unreferenced, delete_blob: exists && !referenced, digest });
    }
    Ok(due)
}

/// Removes a reviewed entry and the object rows of `locations` (their objects were deleted),
/// and the blob row when `delete_blob`.
pub async fn finish(client: &impl GenericClient, digest: &str, locations: &[String], delete_blob: bool) -> Result<()> {
    client.execute("DELETE FROM blob_objects WHERE digest = $1 AND location = ANY($2)", &[&digest, &locations]).await?;
    if delete_blob {
        client.execute("DELETE FROM blobs WHERE digest = $1", &[&digest]).await?;
    }
    client.execute("DELETE FROM gc_blob_review_queue WHERE digest = $1", &[&digest]).await?;
    Ok(())
}
