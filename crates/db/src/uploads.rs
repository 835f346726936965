//! Upload sessions: the persisted state (offset, serialized hash, backend part list, pending
//! tail) that lets any node continue an upload. Updates are compare-and-swap on `version`, so
//! two chunks racing on one session can never both be recorded.

use tokio_postgres::Row;
use uuid::Uuid;

use crate::{GenericClient, Result};

/// A persisted upload session.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    /// Session id (the `<uuid>` in the upload URL).
    pub id: Uuid,
    /// Repository the upload belongs to.
    pub repository_id: i64,
    /// Bytes received so far.
    pub received_bytes: i64,
    /// Serialized SHA-256 state after `received_bytes`.
    pub hash_state: Vec<u8>,
    /// Storage backend state (multipart id, parts).
    pub store_state: serde_json::Value,
    /// Received bytes not yet handed to storage.
    pub pending: Vec<u8>,
    /// Optimistic-lock version.
    pub version: i64,
    /// The storage location it writes to (its repository's when it opened).
    pub location: String,
}

impl From<Row> for Upload {
    fn from(row: Row) -> Self {
        Upload {
            id: row.get("id"),
            repository_id: row.get("repository_id"),
            received_bytes: row.get("received_bytes"),
            hash_state: row.get("hash_state"),
            store_state: row.get("store_state"),
            pending: row.get("pending"),
            version: row.get("version"),
            location: row.get("location"),
        }
    }
}

const COLUMNS: &str = "id, repository_id, received_bytes, hash_state, store_state, pending, version, location";

/// Persists a new session that expires after `ttl_secs` of inactivity.
pub async fn create(client: &impl GenericClient, upload: &Upload, ttl_secs: f64) -> Result<()> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO uploads (id, repository_id, received_bytes, hash_state, store_state, pending, version, expires_at,
                                  location)
             VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8), $9)",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[
                &upload.id,
                &upload.repository_id,
                &upload.received_bytes,
                &upload.hash_state,
                &upload.store_state,
                &upload.pending,
                &upload.version,
                &ttl_secs,
                &upload.location,
            ],
        )
        .await?;
    Ok(())
}

/// The live session `id` of the repository.
pub async fn get(client: &impl GenericClient, id: Uuid, repository_id: i64) -> Result<Option<Upload>> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM uploads WHERE id = $1 AND repository_id = $2 AND expires_at > now()"
        ))
        .await?;
    Ok(client.query_opt(&stmt, &[&id, &repository_id]).await?.map(Upload::from))
}

/// Saves progress if nobody else did since `upload.version` was read; returns whether it won.
pub async fn save(client: &impl GenericClient, upload: &Upload, ttl_secs: f64) -> Result<bool> {
    let stmt = client
        .prepare_cached(
            "UPDATE uploads SET received_bytes = $3, hash_state = $4, store_state = $5, pending = $6,
                    version = version + 1, updated_at = now(), expires_at = now() + make_interval(secs => $7)
             WHERE id = $1 AND version = $2",
        )
        .await?;
    let n = client
        .execute(
            &stmt,
            &[
                &upload.id,
                &upload.version,
                &upload.received_bytes,
                &upload.hash_state,
                &upload.store_state,
                &upload.pending,
                &ttl_secs,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Ends a session if it is still at `version`; returns how long it lasted (seconds) if it
/// was removed.
pub async fn finish(client: &impl GenericClient, id: Uuid, version: i64) -> Result<Option<f64>> {
    let stmt = client
        .prepare_cached(
            "DELETE FROM uploads WHERE id = $1 AND version = $2
             RETURNING extract(epoch FROM clock_timestamp() - created_at)::float8",
        )
        .await?;
    Ok(client.query_opt(&stmt, &[&id, &version]).await?.map(|row| row.get(0)))
}

/// Removes a session whatever its version (client cancel); returns it if it existed.
pub async fn cancel(client: &impl GenericClient, id: Uuid, repository_id: i64) -> Result<Option<Upload>> {
    let stmt = client
        .prepare_cached(&format!("DELETE FROM uploads WHERE id = $1 AND repository_id = $2 RETURNING {COLUMNS}"))
        .await?;
    Ok(client.query_opt(&stmt, &[&id, &repository_id]).await?.map(Upload::from))
}

/// Removes up to `limit` expired sessions and returns them so their storage can be released.
/// Concurrent collectors skip each other's rows.
pub async fn take_expired(client: &impl GenericClient, limit: i64) -> Result<Vec<Upload>> {
    let stmt = client
        .prepare_cached(&format!(
            "DELETE FROM uploads WHERE id IN (
                 SELECT id FROM uploads WHERE expires_at <= now()
                 ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING {COLUMNS}"
        ))
        .await?;
    Ok(client.query(&stmt, &[&limit]).await?.into_iter().map(Upload::from).collect())
}
