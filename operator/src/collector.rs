//! The blob garbage collector: deletes the objects of blobs that no repository reading from
//! their location references any more (and, once nothing anywhere does, the blob rows), once
//! their review delay has passed (a day after the last reference went, set by the schema's
//! triggers). The delay and the row locks keep it clear of uploads in flight; the data plane
//! re-checks an object it did not write itself after inserting its row, and its location's
//! object after linking.

use aerugo_storage::{AnyStore, BlobStore as _};

use crate::error::{Error, Result};

/// What one collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Queue entries reviewed.
    pub reviewed: usize,
    /// Objects deleted (one per location that no longer needed one).
    pub deleted: usize,
}

/// Reviews due entries in batches of `batch` until none is left.
pub async fn collect(db: &aerugo_db::Pool, store: &AnyStore, batch: i64) -> Result<Collected> {
    let mut total = Collected::default();
    loop {
        let mut client = db.get().await.map_err(aerugo_db::Error::from)?;
        let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
        let due = aerugo_db::gc::take_due(&tx, batch).await?;
        if due.is_empty() {
            return Ok(total);
        }
        let unavailable =
            |e: aerugo_storage::Error| Error::Waiting { reason: "StorageUnavailable", message: e.to_string() };
        for entry in &due {
            let mut locations = Vec::with_capacity(entry.unreferenced.len());
            for (location, key) in &entry.unreferenced {
                // The object goes first: if the commit then fails, a row of an object nothing
                // references is left, which no read can reach and the next upload of the
                // digest there stores again.
                store.location(location).await.map_err(unavailable)?.delete(key).await.map_err(unavailable)?;
                locations.push(location.clone());
                total.deleted += 1;
            }
            aerugo_db::gc::finish(&tx, &entry.digest, &locations, entry.delete_blob).await?;
        }
        tx.commit().await.map_err(aerugo_db::Error::from)?;
        total.reviewed += due.len();
    }
}
