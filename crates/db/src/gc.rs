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
    /// The blob's storage key, when its row exists and nothing references it: delete it.
    pub unreferenced_key: Option<String>,
}

/// Takes up to `limit` due entries and locks their blob rows. Whether each is still
/// unreferenced is checked after the lock, so a concurrent link either committed before (and
/// is seen) or waits for this transaction (and then fails its foreign key, and is retried).
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
        let key: Option<String> = client
            .query_opt("SELECT storage_key FROM blobs WHERE digest = $1 FOR UPDATE", &[&digest])
            .await?
            .map(|r| r.get(0));
        let referenced: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM repository_blobs WHERE digest = $1)
                     OR EXISTS (SELECT 1 FROM manifest_blobs WHERE digest = $1)",
                &[&digest],
            )
            .await?
            .get(0);
        due.push(Due { unreferenced_key: key.filter(|_| !referenced), digest });
    }
    Ok(due)
}

/// Removes a reviewed entry, and the blob row when `delete_blob`.
pub async fn finish(client: &impl GenericClient, digest: &str, delete_blob: bool) -> Result<()> {
    if delete_blob {
        client.execute("DELETE FROM blobs WHERE digest = $1", &[&digest]).await?;
    }
    client.execute("DELETE FROM gc_blob_review_queue WHERE digest = $1", &[&digest]).await?;
    Ok(())
}
