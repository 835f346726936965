//! The garbage collectors' queries. The schema's triggers queue what may have become
//! unreferenced, with a review delay (`gc_settings.review_delay`):
//! - `gc_manifest_review_queue`: a manifest whose last tag went or moved, that was committed
//!   without a tag, whose index or subject was deleted;
//! - `gc_blob_review_queue`: a digest a manifest or a repository stopped referencing.
//!
//! The collector takes due entries with `SKIP LOCKED` (several collectors share the work) and
//! re-checks each under row locks, so it never waits on a push: a row a push holds is skipped
//! (and reviewed again later), and what a push committed first is seen by the re-check.

use std::collections::BTreeSet;

use deadpool_postgres::GenericClient;

use crate::Result;
use crate::retention::Policy;

/// Sets the review delay the queue triggers apply to new entries.
pub async fn set_review_delay(client: &impl GenericClient, delay: std::time::Duration) -> Result<()> {
    let seconds = delay.as_secs_f64();
    client.execute("UPDATE gc_settings SET review_delay = make_interval(secs => $1)", &[&seconds]).await?;
    Ok(())
}

/// What one pass over the manifest queue decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestPass {
    /// Entries taken.
    pub reviewed: usize,
    /// Manifests deleted, as `<repository>@<digest>`.
    pub deleted: Vec<String>,
    /// Manifests kept because a Pod uses them (queued again).
    pub in_use: usize,
    /// Repositories whose content changed.
    pub repositories: BTreeSet<String>,
}

/// Takes up to `limit` due manifest entries and deletes the manifests that nothing keeps: no tag
/// points to them, no index lists them, their subject (for a referrer) is not in the repository,
/// no Pod uses them, and the repository's policy collects untagged manifests. Deleting one
/// releases its blob references (queued for blob review), the manifests it listed, and its
/// referrers (queued for manifest review). Call inside a transaction.
pub async fn collect_manifests(client: &impl GenericClient, limit: i64) -> Result<ManifestPass> {
    let due: Vec<i64> = client
        .query(
            "SELECT manifest_id FROM gc_manifest_review_queue WHERE review_after <= now()
              ORDER BY review_after LIMIT $1 FOR UPDATE SKIP LOCKED",
            &[&limit],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut pass = ManifestPass { reviewed: due.len(), ..Default::default() };
    if due.is_empty() {
        return Ok(pass);
    }
    // A manifest a push is writing right now is locked: skip it, it is reviewed again later.
    let locked: Vec<i64> = client
        .query("SELECT id FROM manifests WHERE id = ANY($1) FOR UPDATE SKIP LOCKED", &[&due])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let rows = client
        .query(
            "SELECT m.id, m.digest, r.name, COALESCE(r.retention, o.retention),
                    EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id)
                 OR EXISTS (SELECT 1 FROM manifest_references x WHERE x.child_id = m.id)
                 OR (m.subject_digest IS NOT NULL AND EXISTS (SELECT 1 FROM manifests s
                       WHERE s.repository_id = m.repository_id AND s.digest = m.subject_digest)),
                    EXISTS (SELECT 1 FROM digests_in_use u WHERE u.digest = m.digest)
               FROM manifests m JOIN repositories r ON r.id = m.repository_id JOIN organizations o ON o.id = r.org_id
              WHERE m.id = ANY($1)",
            &[&locked],
        )
        .await?;
    let mut delete = Vec::new();
    let mut again = Vec::new();
    for row in &rows {
        let id: i64 = row.get(0);
        let policy: Option<serde_json::Value> = row.get(3);
        let (kept, in_use): (bool, bool) = (row.get(4), row.get(5));
        if kept || !Policy::collects_untagged(Policy::from_stored(policy.as_ref()).as_ref()) {
            continue;
        }
        if in_use {
            pass.in_use += 1;
            again.push(id);
            continue;
        }
        delete.push(id);
        let (digest, repository): (String, String) = (row.get(1), row.get(2));
        pass.deleted.push(format!("{repository}@{digest}"));
        pass.repositories.insert(repository);
    }
    if !delete.is_empty() {
        client.execute("DELETE FROM manifests WHERE id = ANY($1)", &[&delete]).await?;
    }
    let existing: Vec<i64> =
        client.query("SELECT id FROM manifests WHERE id = ANY($1)", &[&due]).await?.iter().map(|r| r.get(0)).collect();
    let busy = |id: &i64| existing.contains(id) && !locked.contains(id) && !delete.contains(id);
    let skipped: Vec<i64> = due.iter().copied().filter(|id| busy(id) || again.contains(id)).collect();
    client
        .execute(
            "UPDATE gc_manifest_review_queue
                SET review_after = greatest(gc_review_after(), now() + interval '1 minute'), event = 'deferred'
              WHERE manifest_id = ANY($1)",
            &[&skipped],
        )
        .await?;
    let done: Vec<i64> = due.iter().copied().filter(|id| !skipped.contains(id)).collect();
    client.execute("DELETE FROM gc_manifest_review_queue WHERE manifest_id = ANY($1)", &[&done]).await?;
    for repository in &pass.repositories {
        crate::notify::announce(client, crate::notify::Change::Repository(repository)).await?;
    }
    Ok(pass)
}

/// A blob object to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The blob.
    pub digest: String,
    /// Its location (`""`: the registry's store).
    pub location: String,
    /// Its key there.
    pub storage_key: String,
    /// Its size.
    pub size: i64,
}

/// What one pass over the blob queue found, locked until the transaction ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobPass {
    /// Entries taken.
    pub reviewed: usize,
    /// Repository links removed: no manifest of the repository references the blob, and the
    /// link is older than the review delay.
    pub unlinked: usize,
    /// Objects no repository reading from their location references: delete them, then call
    /// [`finish_blobs`].
    pub unreferenced: Vec<Object>,
    /// Blobs nothing references anywhere: their rows go too.
    pub bare: Vec<String>,
    /// The entries to remove once the objects are deleted.
    pub done: Vec<String>,
    /// Repositories whose links changed.
    pub repositories: BTreeSet<String>,
}

/// Takes up to `limit` due blob entries and locks their blob rows (a blob a push is linking
/// right now is skipped and reviewed again a minute later). First removes the links no manifest
/// of their repository references that are older than the review delay (a fresh link is an
/// upload whose manifest has not come yet: its entry waits until the link is old enough). Then
/// finds the objects no repository of their location links or references, and the blobs nothing
/// references at all. A concurrent link either committed before (and is seen) or waits for this
/// transaction (its foreign key locks the blob row) and then finds its location's object gone
/// (the data plane checks, and the client uploads again).
pub async fn take_blobs(client: &impl GenericClient, limit: i64) -> Result<BlobPass> {
    let due: Vec<String> = client
        .query(
            "SELECT digest FROM gc_blob_review_queue WHERE review_after <= now()
              ORDER BY review_after LIMIT $1 FOR UPDATE SKIP LOCKED",
            &[&limit],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut pass = BlobPass { reviewed: due.len(), ..Default::default() };
    if due.is_empty() {
        return Ok(pass);
    }
    let locked: Vec<String> = client
        .query("SELECT digest FROM blobs WHERE digest = ANY($1) ORDER BY digest FOR UPDATE SKIP LOCKED", &[&due])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let absent: Vec<String> = client
        .query("SELECT d FROM unnest($1::text[]) AS d WHERE NOT EXISTS (SELECT 1 FROM blobs WHERE digest = d)", &[&due])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let busy: Vec<String> = due.iter().filter(|d| !locked.contains(d) && !absent.contains(d)).cloned().collect();
    defer_blobs(client, &busy).await?;
    // Stale links: lock them (skipping any a push holds), then delete those still unreferenced
    // (a new statement, so a manifest committed meanwhile is seen).
    let stale = client
        .query(
            "SELECT rb.repository_id, rb.digest FROM repository_blobs rb
              WHERE rb.digest = ANY($1)
                AND rb.created_at <= now() - (SELECT review_delay FROM gc_settings)
                AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb JOIN manifests m ON m.id = mb.manifest_id
                                 WHERE m.repository_id = rb.repository_id AND mb.digest = rb.digest)
              FOR UPDATE OF rb SKIP LOCKED",
            &[&locked],
        )
        .await?;
    if !stale.is_empty() {
        let (repos, digests): (Vec<i64>, Vec<String>) =
            stale.iter().map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1))).unzip();
        let removed = client
            .query(
                "DELETE FROM repository_blobs rb USING unnest($1::bigint[], $2::text[]) AS s(repository_id, digest),
                        repositories r
                  WHERE rb.repository_id = s.repository_id AND rb.digest = s.digest AND r.id = rb.repository_id
                    AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb JOIN manifests m ON m.id = mb.manifest_id
                                     WHERE m.repository_id = rb.repository_id AND mb.digest = rb.digest)
                 RETURNING r.name",
                &[&repos, &digests],
            )
            .await?;
        pass.unlinked = removed.len();
        pass.repositories.extend(removed.iter().map(|r| r.get::<_, String>(0)));
    }
    // Digests with a young unreferenced link wait until it is old enough.
    let waiting: Vec<String> = client
        .query(
            "UPDATE gc_blob_review_queue q SET review_after = w.at, event = 'young_link'
               FROM (SELECT rb.digest, max(rb.created_at) + (SELECT review_delay FROM gc_settings) AS at
                       FROM repository_blobs rb
                      WHERE rb.digest = ANY($1)
                        AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb JOIN manifests m ON m.id = mb.manifest_id
                                         WHERE m.repository_id = rb.repository_id AND mb.digest = rb.digest)
                      GROUP BY rb.digest) w
              WHERE q.digest = w.digest AND w.at > now()
             RETURNING q.digest",
            &[&locked],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Per object: does a repository reading from its location link or reference the blob?
    let objects = client
        .query(
            "SELECT bo.digest, bo.location, bo.storage_key, b.size,
                    EXISTS (SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
                              JOIN organizations o ON o.id = r.org_id
                             WHERE rb.digest = bo.digest AND COALESCE(o.bucket, '') = bo.location)
                 OR EXISTS (SELECT 1 FROM manifest_blobs mb JOIN manifests m ON m.id = mb.manifest_id
                              JOIN repositories r ON r.id = m.repository_id JOIN organizations o ON o.id = r.org_id
                             WHERE mb.digest = bo.digest AND COALESCE(o.bucket, '') = bo.location)
               FROM blob_objects bo JOIN blobs b ON b.digest = bo.digest
              WHERE bo.digest = ANY($1) ORDER BY bo.digest, bo.location",
            &[&locked],
        )
        .await?;
    pass.unreferenced = objects
        .iter()
        .filter(|r| !r.get::<_, bool>(4))
        .map(|r| Object { digest: r.get(0), location: r.get(1), storage_key: r.get(2), size: r.get(3) })
        .collect();
    pass.bare = client
        .query(
            "SELECT d FROM unnest($1::text[]) AS d
              WHERE NOT EXISTS (SELECT 1 FROM repository_blobs WHERE digest = d)
                AND NOT EXISTS (SELECT 1 FROM manifest_blobs WHERE digest = d)",
            &[&locked],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    pass.done = locked.into_iter().filter(|d| !waiting.contains(d)).chain(absent).collect();
    Ok(pass)
}

/// Reviews `digests` again in a minute (a push held the blob, or storage kept its object).
pub async fn defer_blobs(client: &impl GenericClient, digests: &[String]) -> Result<()> {
    client
        .execute(
            "UPDATE gc_blob_review_queue SET review_after = now() + interval '1 minute' WHERE digest = ANY($1)",
            &[&digests],
        )
        .await?;
    Ok(())
}

/// Removes the rows of the objects deleted (`deleted`: (digest, location)), the blob rows of
/// `bare`, and the reviewed entries `done`.
pub async fn finish_blobs(
    client: &impl GenericClient,
    deleted: &[(String, String)],
    bare: &[String],
    done: &[String],
) -> Result<()> {
    let (digests, locations): (Vec<&str>, Vec<&str>) = deleted.iter().map(|(d, l)| (d.as_str(), l.as_str())).unzip();
    client
        .execute(
            "DELETE FROM blob_objects bo USING unnest($1::text[], $2::text[]) AS x(digest, location)
              WHERE bo.digest = x.digest AND bo.location = x.location",
            &[&digests, &locations],
        )
        .await?;
    client
        .execute(
            "DELETE FROM blobs b WHERE b.digest = ANY($1)
                AND NOT EXISTS (SELECT 1 FROM blob_objects bo WHERE bo.digest = b.digest)",
            &[&bare],
        )
        .await?;
    client.execute("DELETE FROM gc_blob_review_queue WHERE digest = ANY($1)", &[&done]).await?;
    Ok(())
}

/// When the operator last wrote the set of digests running Pods use, and how many there are.
pub async fn in_use_state(client: &impl GenericClient) -> Result<(Option<time::OffsetDateTime>, i64)> {
    let row = client
        .query_one("SELECT in_use_synced_at, (SELECT count(*) FROM digests_in_use) FROM gc_settings", &[])
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// Records that the set of digests Pods use is still current.
pub async fn confirm_in_use(client: &impl GenericClient) -> Result<()> {
    client.execute("UPDATE gc_settings SET in_use_synced_at = now()", &[]).await?;
    Ok(())
}

/// Replaces the set of digests Pods use: digest → (Pods, one of them as `<namespace>/<pod>`).
pub async fn replace_in_use(
    client: &impl GenericClient,
    in_use: &std::collections::BTreeMap<String, (i32, String)>,
) -> Result<()> {
    let digests: Vec<&str> = in_use.keys().map(String::as_str).collect();
    let pods: Vec<i32> = in_use.values().map(|(n, _)| *n).collect();
    let examples: Vec<&str> = in_use.values().map(|(_, e)| e.as_str()).collect();
    client.execute("DELETE FROM digests_in_use WHERE NOT (digest = ANY($1))", &[&digests]).await?;
    client
        .execute(
            "INSERT INTO digests_in_use (digest, pods, example)
             SELECT * FROM unnest($1::text[], $2::int[], $3::text[])
             ON CONFLICT (digest) DO UPDATE SET pods = EXCLUDED.pods, example = EXCLUDED.example, seen_at = now()",
            &[&digests, &pods, &examples],
        )
        .await?;
    client.execute("UPDATE gc_settings SET in_use_synced_at = now()", &[]).await?;
    Ok(())
}
