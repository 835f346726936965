//! Audit trail: one row per write and per denied request, readable per organization.

use serde_json::Value;
use time::OffsetDateTime;

use crate::{GenericClient, Result};

/// One audited event.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// Who: a username, `key:<id>`, or `anonymous`.
    pub actor: &'a str,
    /// What, as `noun.verb` (`manifest.push`, `auth.denied`, …).
    pub action: &'a str,
    /// On what: a repository, organization, user or key name.
    pub target: &'a str,
    /// The organization the target belongs to, when there is one.
    pub org_id: Option<i64>,
    /// The client's address.
    pub source: Option<&'a str>,
    /// False for a denied request.
    pub allowed: bool,
    /// Details (digests, tags, roles).
    pub detail: Value,
}

/// Records an event.
pub async fn record(client: &impl GenericClient, event: &Event<'_>) -> Result<()> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO audit_events (actor, action, target, org_id, source, outcome, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await?;
    let outcome = if event.allowed { "ok" } else { "denied" };
    client
        .execute(
            &stmt,
            &[&event.actor, &event.action, &event.target, &event.org_id, &event.source, &outcome, &event.detail],
        )
        .await?;
    Ok(())
}

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Row id (pagination cursor).
    pub id: i64,
    /// When.
    pub at: OffsetDateTime,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// From where.
    pub source: Option<String>,
    /// `ok` or `denied`.
    pub outcome: String,
    /// Details.
    pub detail: Option<Value>,
}

/// Events, newest first, of one organization (every event when `org_id` is `None`), with ids
/// below `before`, at most `limit`.
pub async fn list(
    client: &impl GenericClient,
    org_id: Option<i64>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<StoredEvent>> {
    let stmt = client
        .prepare_cached(
            "SELECT id, at, actor, action, target, source, outcome, detail FROM audit_events
             WHERE ($1::bigint IS NULL OR org_id = $1) AND ($2::bigint IS NULL OR id < $2)
             ORDER BY id DESC LIMIT $3",
        )
        .await?;
    Ok(client
        .query(&stmt, &[&org_id, &before, &limit])
        .await?
        .iter()
        .map(|r| StoredEvent {
            id: r.get(0),
            at: r.get(1),
            actor: r.get(2),
            action: r.get(3),
            target: r.get(4),
            source: r.get(5),
            outcome: r.get(6),
            detail: r.get(7),
        })
        .collect())
}
