//! The blob garbage collector: deletes the objects and rows of blobs no repository or manifest
//! references any more, once their review delay has passed (a day after the last reference
//! went, set by the schema's triggers). The delay and the row locks keep it clear of uploads in
//! flight; the data plane re-checks an object it did not write itself after inserting its row.

use aerugo_storage::{AnyStore, BlobStore as _};

use crate::error::{Error, Result};

/// What one collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Queue entries reviewed.
    pub reviewed: usize,
    /// Blobs deleted (object and row).
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
        for entry in &due {
            if let Some(key) = &entry.unreferenced_key {
                // The object goes first: if the commit then fails, a row of a blob nothing
                // references is left, which no read can reach and the next upload of the
                // digest stores again.
                store
                    .delete(key)
                    .await
                    .map_err(|e| Error::Waiting { reason: "StorageUnavailable", message: e.to_string() })?;
                total.deleted += 1;
            }
            aerugo_db::gc::finish(&tx, &entry.digest, entry.unreferenced_key.is_some()).await?;
        }
        tx.commit().await.map_err(aerugo_db::Error::from)?;
        total.reviewed += due.len();
    }
}
