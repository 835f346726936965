//! The garbage collector. Each pass drains the two review queues of entries whose review delay
//! has passed (`gc_settings.review_delay`, a day by default):
//! 1. manifests nothing keeps (no tag, index, live subject or running Pod; the repository's
//!    policy collects untagged manifests) are deleted, which queues their blobs, the manifests
//!    they listed and their referrers;
//! 2. blob links no manifest of their repository needs are removed, then the objects no
//!    repository of their location references are deleted from storage (`DeleteObjects`, a
//!    thousand keys a call) and, once nothing references a blob anywhere, its row.
//!
//! The delay and the row locks keep it clear of pushes in flight (see `aerugo_db::gc`); the
//! data plane re-checks an object it did not write itself after inserting its row, and its
//! location's object after linking. A dry run does the same work in one transaction that is
//! rolled back, without touching storage, so it reports exactly what a pass would delete now.

use std::collections::BTreeMap;

use aerugo_storage::{AnyStore, BlobStore as _};

use crate::error::{Error, Result};

/// How a pass runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Queue entries per transaction.
    pub batch: i64,
    /// Report, delete nothing.
    pub dry_run: bool,
    /// Pods are watched: review no manifest unless the digests they use were written
    /// recently (blobs are safe either way: a manifest that exists references its blobs).
    pub require_in_use: bool,
}

/// What one pass did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// Manifest queue entries reviewed.
    pub manifests_reviewed: usize,
    /// Manifests deleted.
    pub manifests_deleted: usize,
    /// The first of them, `<repository>@<digest>`.
    pub first_manifests: Vec<String>,
    /// Manifests kept because a Pod uses them.
    pub in_use: usize,
    /// Blob queue entries reviewed.
    pub reviewed: usize,
    /// Repository links to blobs removed.
    pub unlinked: usize,
    /// Objects deleted (one per location that no longer needed one).
    pub deleted: usize,
    /// Their bytes.
    pub bytes: i64,
    /// Objects storage failed to delete (kept, reviewed again next pass).
    pub failed: usize,
}

const LISTED: usize = 20;

fn unavailable(e: aerugo_storage::Error) -> Error {
    Error::Waiting { reason: "StorageUnavailable", message: e.to_string() }
}

/// Reviews due entries of both queues until none is left (manifests first: what they release
/// is queued with a new delay, so it goes in a later pass).
pub async fn collect(db: &aerugo_db::Pool, store: &AnyStore, options: Options) -> Result<Collected> {
    let mut total = Collected::default();
    let mut client = db.get().await.map_err(aerugo_db::Error::from)?;
    let manifests = crate::retention::in_use_known(&client, options.require_in_use).await?;
    if !manifests {
        tracing::warn!("manifests are not collected: the digests running Pods use are not known yet");
    }
    if options.dry_run {
        // One transaction for everything, rolled back: what it took stays taken within it.
        let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
        while manifests && manifest_batch(&tx, options.batch, &mut total).await? {}
        while blob_batch(&tx, store, options, &mut total).await? {}
        tx.rollback().await.map_err(aerugo_db::Error::from)?;
        return Ok(total);
    }
    let mut more = manifests;
    while more {
        let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
        more = manifest_batch(&tx, options.batch, &mut total).await?;
        tx.commit().await.map_err(aerugo_db::Error::from)?;
    }
    loop {
        let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
        let more = blob_batch(&tx, store, options, &mut total).await?;
        tx.commit().await.map_err(aerugo_db::Error::from)?;
        if !more {
            return Ok(total);
        }
    }
}

async fn manifest_batch(tx: &aerugo_db::Transaction<'_>, batch: i64, total: &mut Collected) -> Result<bool> {
    let pass = aerugo_db::gc::collect_manifests(tx, batch).await?;
    total.manifests_reviewed += pass.reviewed;
    total.manifests_deleted += pass.deleted.len();
    total.in_use += pass.in_use;
    let room = LISTED.saturating_sub(total.first_manifests.len());
    total.first_manifests.extend(pass.deleted.into_iter().take(room));
    Ok(pass.reviewed > 0)
}

async fn blob_batch(
    tx: &aerugo_db::Transaction<'_>,
    store: &AnyStore,
    options: Options,
    total: &mut Collected,
) -> Result<bool> {
    let pass = aerugo_db::gc::take_blobs(tx, options.batch).await?;
    if pass.reviewed == 0 {
        return Ok(false);
    }
    let mut by_location: BTreeMap<&str, Vec<&aerugo_db::gc::Object>> = BTreeMap::new();
    for object in &pass.unreferenced {
        by_location.entry(object.location.as_str()).or_default().push(object);
    }
    let mut deleted = Vec::with_capacity(pass.unreferenced.len());
    for (location, objects) in by_location {
        let failed = if options.dry_run {
            Vec::new()
        } else {
            // The objects go first: if the commit then fails, rows of objects nothing
            // references are left, which no read can reach and the next upload of the digest
            // there stores again.
            let keys: Vec<String> = objects.iter().map(|o| o.storage_key.clone()).collect();
            store.location(location).await.map_err(unavailable)?.delete_many(&keys).await.map_err(unavailable)?
        };
        for object in objects {
            if failed.contains(&object.storage_key) {
                total.failed += 1;
            } else {
                total.deleted += 1;
                total.bytes += object.size;
                deleted.push((object.digest.clone(), object.location.clone()));
            }
        }
    }
    if total.failed > 0 {
        tracing::warn!(failed = total.failed, "storage kept objects the collector deleted; they are reviewed again");
    }
    // A blob with an object left (a failed delete) keeps its entry: `done` only lists digests
    // whose every unreferenced object went.
    let kept: Vec<&str> = pass
        .unreferenced
        .iter()
        .filter(|o| !deleted.iter().any(|(d, l)| *d == o.digest && *l == o.location))
        .map(|o| o.digest.as_str())
        .collect();
    let (retry, done): (Vec<String>, Vec<String>) = pass.done.iter().cloned().partition(|d| kept.contains(&d.as_str()));
    aerugo_db::gc::finish_blobs(tx, &deleted, &pass.bare, &done).await?;
    aerugo_db::gc::defer_blobs(tx, &retry).await?;
    for repository in &pass.repositories {
        aerugo_db::notify::announce(tx, aerugo_db::notify::Change::Repository(repository)).await?;
    }
    total.reviewed += pass.reviewed;
    total.unlinked += pass.unlinked;
    Ok(true)
}
