//! Audit trail: one row per write (and, once auth lands, per denied request).

use serde_json::Value;

use crate::{GenericClient, Result};

/// Records `actor` doing `action` on `target`.
pub async fn record(client: &impl GenericClient, actor: &str, action: &str, target: &str, detail: Value) -> Result<()> {
    let stmt = client
        .prepare_cached("INSERT INTO audit_events (actor, action, target, detail) VALUES ($1, $2, $3, $4)")
        .await?;
    client.execute(&stmt, &[&actor, &action, &target, &detail]).await?;
    Ok(())
}
