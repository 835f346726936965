//! Events (migration V11): the outbox the triggers write in the transaction of each change,
//! the subscriptions that deliver them, and the delivery state a data-plane node keeps under
//! its lease. Each stream (a repository, or an organization's own events) is numbered in
//! commit order, so a per-stream cursor never skips nor reorders an event.

use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{GenericClient, Result};

/// The CloudEvents type of a pull (written only for organizations with a subscription to it).
pub const PULLED: &str = "io.aerugo.manifest.pulled";

/// The CloudEvents type of a push refused by the organization's quota.
pub const QUOTA_EXCEEDED: &str = "io.aerugo.quota.exceeded";

/// Every event type, as CloudEvents `type`.
pub const TYPES: &[&str] = &[
    "io.aerugo.manifest.pushed",
    "io.aerugo.manifest.deleted",
    PULLED,
    "io.aerugo.tag.created",
    "io.aerugo.tag.moved",
    "io.aerugo.tag.deleted",
    "io.aerugo.blob.deleted",
    "io.aerugo.repository.created",
    "io.aerugo.repository.deleted",
    QUOTA_EXCEEDED,
    "io.aerugo.retention.completed",
    "io.aerugo.key.created",
    "io.aerugo.key.revoked",
];

/// A recorded event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Registry-wide id (the CloudEvents `id`).
    pub id: i64,
    /// Its stream: the repository's full name, or `""` for the organization's own events.
    pub stream: String,
    /// Its number in the stream (1, 2, 3… in commit order).
    pub seq: i64,
    /// The CloudEvents `type`.
    pub kind: String,
    /// When the change was made.
    pub at: OffsetDateTime,
    /// The event's data.
    pub data: Value,
}

impl From<&tokio_postgres::Row> for Event {
    fn from(r: &tokio_postgres::Row) -> Self {
        Event {
            id: r.get("id"),
            stream: r.get("stream"),
            seq: r.get("seq"),
            kind: r.get("type"),
            at: r.get("at"),
            data: r.get("data"),
        }
    }
}

/// Appends an event to `stream` of organization `org_id`, in the caller's transaction.
pub async fn emit(client: &impl GenericClient, org_id: i64, stream: &str, kind: &str, data: &Value) -> Result<()> {
    let stmt = client.prepare_cached("SELECT aerugo_emit_event($1, $2, $3, $4)").await?;
    client.execute(&stmt, &[&org_id, &stream, &kind, data]).await?;
    Ok(())
}

/// An organization's events, newest first: those with an id below `before`, at most `limit`.
pub async fn list(client: &impl GenericClient, org_id: i64, before: Option<i64>, limit: i64) -> Result<Vec<Event>> {
    let stmt = client
        .prepare_cached(
            "SELECT id, stream, seq, type, at, data FROM events
              WHERE org_id = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        )
        .await?;
    Ok(client.query(&stmt, &[&org_id, &before, &limit]).await?.iter().map(Event::from).collect())
}

/// Deletes events recorded before `cutoff`, oldest ids first, at most `limit` of them; returns
/// how many. Ids grow with time, so the scan of the primary key stops among old events (no
/// index on the time: every push would pay for it).
pub async fn prune(client: &impl GenericClient, cutoff: OffsetDateTime, limit: i64) -> Result<u64> {
    let stmt = client
        .prepare_cached("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < $1 ORDER BY id LIMIT $2)")
        .await?;
    Ok(client.execute(&stmt, &[&cutoff, &limit]).await?)
}

/// The last event id handed out (committed or not): it moves whenever an event is written, so
/// a deliverer polls it (one row) instead of being notified.
pub async fn last_id(client: &impl GenericClient) -> Result<i64> {
    let stmt = client.prepare_cached("SELECT last_value FROM events_id_seq").await?;
    Ok(client.query_one(&stmt, &[]).await?.get(0))
}

/// What a subscription asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec<'a> {
    /// The endpoint events are POSTed to.
    pub endpoint: &'a str,
    /// CloudEvents types delivered.
    pub types: &'a [String],
    /// Repository globs relative to the organization; empty: every repository.
    pub repositories: &'a [String],
    /// Events per request: 1 is one structured CloudEvent, more a batch.
    pub batch_size: i32,
    /// HMAC-SHA256 key of the `Aerugo-Signature` header; `None`: unsigned.
    pub signing_secret: Option<&'a [u8]>,
}

impl SubscriptionSpec<'_> {
    /// Checks what a subscription asks for: known types (at least one), repository globs that
    /// compile, a batch size of 1 to 1000 and an endpoint [`check_endpoint`] accepts.
    pub fn check(&self) -> std::result::Result<(), String> {
        check_endpoint(self.endpoint)?;
        if self.types.is_empty() {
            return Err("list at least one event type".into());
        }
        if let Some(unknown) = self.types.iter().find(|t| !TYPES.contains(&t.as_str())) {
            return Err(format!("unknown event type {unknown:?} (known: {})", TYPES.join(", ")));
        }
        for pattern in self.repositories {
            globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("repository pattern {pattern:?}: {}", e.kind()))?;
        }
        if !(1..=1000).contains(&self.batch_size) {
            return Err(format!("batch size {} is not between 1 and 1000", self.batch_size));
        }
        if self.signing_secret.is_some_and(|s| s.len() < 16) {
            return Err("a signing secret needs at least 16 bytes".into());
        }
        Ok(())
    }
}

/// The endpoint as stored, if it is an absolute `http`/`https` URL with a host and without
/// credentials (they would be stored and logged in clear; sign with a secret instead).
pub fn check_endpoint(endpoint: &str) -> std::result::Result<String, String> {
    let url = url::Url::parse(endpoint).map_err(|e| format!("endpoint {endpoint:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!("endpoint {endpoint:?} is not an http:// or https:// URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "the endpoint must not hold credentials (they would be stored in clear); use a signing secret".into()
        );
    }
    Ok(url.to_string())
}

/// A subscription row: what it asks for, and how delivery is going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Row id.
    pub id: i64,
    /// Its organization.
    pub org_id: i64,
    /// The organization's name.
    pub org: String,
    /// Its name, unique in the organization.
    pub name: String,
    /// `api` or `kubernetes`.
    pub managed_by: String,
    /// Endpoint URL.
    pub endpoint: String,
    /// CloudEvents types delivered.
    pub types: Vec<String>,
    /// Repository globs relative to the organization; empty: all.
    pub repositories: Vec<String>,
    /// Events per request.
    pub batch_size: i32,
    /// Signing key, if any.
    pub signing_secret: Option<Vec<u8>>,
    /// Events before this time are not delivered.
    pub start_at: OffsetDateTime,
    /// The last replay asked for.
    pub replayed_from: Option<OffsetDateTime>,
    /// Bumped by a replay: a deliverer that read an older epoch must not move cursors.
    pub epoch: i32,
    /// Events delivered so far.
    pub delivered: i64,
    /// When the last delivery succeeded.
    pub last_delivered_at: Option<OffsetDateTime>,
    /// The id of the last event delivered.
    pub last_delivered_id: Option<i64>,
    /// Consecutive failed attempts.
    pub failures: i32,
    /// Since when attempts fail.
    pub failing_since: Option<OffsetDateTime>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// No attempt before this time (backoff).
    pub next_attempt_at: Option<OffsetDateTime>,
}

/// Consecutive failed attempts from which a subscription is reported failing.
pub const FAILING_AFTER: i32 = 3;

impl Subscription {
    /// Whether delivery is failing (dead-lettered until the endpoint answers again).
    pub fn failing(&self) -> bool {
        self.failures >= FAILING_AFTER
    }
}

const SUBSCRIPTION_COLUMNS: &str = "s.id, s.org_id, o.name AS org, s.name, s.managed_by, s.endpoint, s.types,
    s.repositories, s.batch_size, s.signing_secret, s.start_at, s.replayed_from, s.epoch, s.delivered,
    s.last_delivered_at, s.last_delivered_id, s.failures, s.failing_since, s.last_error, s.next_attempt_at";

impl From<&tokio_postgres::Row> for Subscription {
    fn from(r: &tokio_postgres::Row) -> Self {
        Subscription {
            id: r.get("id"),
            org_id: r.get("org_id"),
            org: r.get("org"),
            name: r.get("name"),
            managed_by: r.get("managed_by"),
            endpoint: r.get("endpoint"),
            types: r.get("types"),
            repositories: r.get("repositories"),
            batch_size: r.get("batch_size"),
            signing_secret: r.get("signing_secret"),
            start_at: r.get("start_at"),
            replayed_from: r.get("replayed_from"),
            epoch: r.get("epoch"),
            delivered: r.get("delivered"),
            last_delivered_at: r.get("last_delivered_at"),
            last_delivered_id: r.get("last_delivered_id"),
            failures: r.get("failures"),
            failing_since: r.get("failing_since"),
            last_error: r.get("last_error"),
            next_attempt_at: r.get("next_attempt_at"),
        }
    }
}

/// The subscription with row id `id`.
pub async fn subscription(client: &impl GenericClient, id: i64) -> Result<Option<Subscription>> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM event_subscriptions s JOIN organizations o ON o.id = s.org_id WHERE s.id = $1"
        ))
        .await?;
    Ok(client.query_opt(&stmt, &[&id]).await?.as_ref().map(Subscription::from))
}

/// The subscription `name` of organization `org_id`.
pub async fn subscription_named(client: &impl GenericClient, org_id: i64, name: &str) -> Result<Option<Subscription>> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM event_subscriptions s JOIN organizations o ON o.id = s.org_id
              WHERE s.org_id = $1 AND s.name = $2"
        ))
        .await?;
    Ok(client.query_opt(&stmt, &[&org_id, &name]).await?.as_ref().map(Subscription::from))
}

/// The subscriptions of organization `org_id`, by name.
pub async fn subscriptions(client: &impl GenericClient, org_id: i64) -> Result<Vec<Subscription>> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM event_subscriptions s JOIN organizations o ON o.id = s.org_id
              WHERE s.org_id = $1 ORDER BY s.name"
        ))
        .await?;
    Ok(client.query(&stmt, &[&org_id]).await?.iter().map(Subscription::from).collect())
}

/// Outcome of writing a declared subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Declared {
    /// The row of the object (created or updated).
    Owned(i64),
    /// The name is held by a subscription created through the management API.
    Taken,
}

/// Creates or updates the subscription of the EventSubscription object `uid`. A new one
/// starts with the events committed from now on.
pub async fn declare(
    client: &impl GenericClient,
    uid: Uuid,
    namespace: &str,
    org_id: i64,
    name: &str,
    spec: &SubscriptionSpec<'_>,
) -> Result<Declared> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO event_subscriptions (org_id, name, k8s_uid, k8s_namespace, managed_by, endpoint, types,
                                              repositories, batch_size, signing_secret)
             VALUES ($1, $2, $3, $4, 'kubernetes', $5, $6, $7, $8, $9)
             ON CONFLICT (k8s_uid) DO UPDATE SET endpoint = EXCLUDED.endpoint, types = EXCLUDED.types,
                 repositories = EXCLUDED.repositories, batch_size = EXCLUDED.batch_size,
                 signing_secret = EXCLUDED.signing_secret
             RETURNING id",
        )
        .await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
        &org_id,
        &name,
        &uid,
        &namespace,
        &spec.endpoint,
        &spec.types,
        &spec.repositories,
        &spec.batch_size,
        &spec.signing_secret,
    ];
    match client.query_one(&stmt, &params).await {
        Ok(row) => Ok(Declared::Owned(row.get(0))),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => Ok(Declared::Taken),
        Err(e) => Err(e.into()),
    }
}

/// Creates a subscription through the management API; `None` when the name is taken.
pub async fn create(
    client: &impl GenericClient,
    org_id: i64,
    name: &str,
    spec: &SubscriptionSpec<'_>,
) -> Result<Option<i64>> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO event_subscriptions (org_id, name, managed_by, endpoint, types, repositories, batch_size,
                                              signing_secret)
             VALUES ($1, $2, 'api', $3, $4, $5, $6, $7)
             ON CONFLICT (org_id, name) DO NOTHING RETURNING id",
        )
        .await?;
    let row = client
        .query_opt(
            &stmt,
            &[&org_id, &name, &spec.endpoint, &spec.types, &spec.repositories, &spec.batch_size, &spec.signing_secret],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Deletes the subscription of the EventSubscription object `uid` (its cursors go with it).
pub async fn forget_declared(client: &impl GenericClient, uid: Uuid) -> Result<bool> {
    Ok(client.execute("DELETE FROM event_subscriptions WHERE k8s_uid = $1", &[&uid]).await? > 0)
}

/// Deletes subscription `id`.
pub async fn delete(client: &impl GenericClient, id: i64) -> Result<bool> {
    Ok(client.execute("DELETE FROM event_subscriptions WHERE id = $1", &[&id]).await? > 0)
}

/// Delivers again every retained event committed at or after `from`: the cursors are reset
/// and a deliverer in the middle of a batch will not move them (the epoch changes).
pub async fn replay(client: &impl GenericClient, id: i64, from: OffsetDateTime) -> Result<()> {
    client
        .execute(
            "UPDATE event_subscriptions SET start_at = $2, replayed_from = $2, epoch = epoch + 1,
                    failures = 0, next_attempt_at = NULL WHERE id = $1",
            &[&id, &from],
        )
        .await?;
    client.execute("DELETE FROM event_cursors WHERE subscription_id = $1", &[&id]).await?;
    Ok(())
}

/// Events the subscription has not passed yet: per stream, its last number minus the
/// subscription's cursor. One row per stream, whatever the number of events; events of types the
/// subscription does not select count until its deliverer passes over them (at once, unless the
/// endpoint is failing).
pub async fn backlog(client: &impl GenericClient, sub: &Subscription) -> Result<i64> {
    let stmt = client
        .prepare_cached(
            "SELECT COALESCE(SUM(s.last_seq - COALESCE(c.delivered_seq, 0)), 0)::bigint FROM event_streams s
               LEFT JOIN event_cursors c ON c.subscription_id = $1 AND c.stream = s.name
              WHERE s.org_id = $2 AND s.last_at >= $3 AND s.last_seq > COALESCE(c.delivered_seq, 0)",
        )
        .await?;
    Ok(client.query_one(&stmt, &[&sub.id, &sub.org_id, &sub.start_at]).await?.get(0))
}

/// Renews the leases `owner` holds and takes those no live node holds; returns the ids `owner`
/// holds for `ttl` from now. Its own rows are renewed even while its deliverer has them locked
/// (waiting a moment for that): skipping them would read as a lost lease.
pub async fn claim(client: &impl GenericClient, owner: &str, ttl: std::time::Duration) -> Result<Vec<i64>> {
    let stmt = client
        .prepare_cached(
            "WITH renewed AS (
                 UPDATE event_subscriptions SET lease_until = now() + make_interval(secs => $2)
                  WHERE lease_owner = $1 RETURNING id),
             taken AS (
                 UPDATE event_subscriptions SET lease_owner = $1, lease_until = now() + make_interval(secs => $2)
                  WHERE id IN (SELECT id FROM event_subscriptions
                                WHERE lease_owner IS DISTINCT FROM $1 AND (lease_owner IS NULL OR lease_until < now())
                                FOR UPDATE SKIP LOCKED)
                  RETURNING id)
             SELECT id FROM renewed UNION ALL SELECT id FROM taken",
        )
        .await?;
    Ok(client.query(&stmt, &[&owner, &ttl.as_secs_f64()]).await?.iter().map(|r| r.get(0)).collect())
}

/// Gives up every lease `owner` holds (a node shutting down), so another node takes over now.
pub async fn release(client: &impl GenericClient, owner: &str) -> Result<u64> {
    Ok(client
        .execute(
            "UPDATE event_subscriptions SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1",
            &[&owner],
        )
        .await?)
}

/// A stream with events a subscription has not seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingStream {
    /// The stream's name.
    pub name: String,
    /// Its last committed number.
    pub last_seq: i64,
    /// The last number the subscription delivered or skipped.
    pub delivered_seq: i64,
}

/// The streams of the subscription's organization with events past its cursors.
pub async fn pending_streams(client: &impl GenericClient, sub: &Subscription) -> Result<Vec<PendingStream>> {
    let stmt = client
        .prepare_cached(
            "SELECT s.name, s.last_seq, COALESCE(c.delivered_seq, 0) FROM event_streams s
               LEFT JOIN event_cursors c ON c.subscription_id = $1 AND c.stream = s.name
              WHERE s.org_id = $2 AND s.last_at >= $3 AND s.last_seq > COALESCE(c.delivered_seq, 0)",
        )
        .await?;
    Ok(client
        .query(&stmt, &[&sub.id, &sub.org_id, &sub.start_at])
        .await?
        .iter()
        .map(|r| PendingStream { name: r.get(0), last_seq: r.get(1), delivered_seq: r.get(2) })
        .collect())
}

/// The next events of `streams` (each after its cursor, in stream order), at most `limit` of
/// each, merged in id order (which, within a stream, is its order).
pub async fn next_events(
    client: &impl GenericClient,
    org_id: i64,
    streams: &[&PendingStream],
    limit: i64,
) -> Result<Vec<Event>> {
    let names: Vec<&str> = streams.iter().map(|s| s.name.as_str()).collect();
    let after: Vec<i64> = streams.iter().map(|s| s.delivered_seq).collect();
    let stmt = client
        .prepare_cached(
            "SELECT e.id, e.stream, e.seq, e.type, e.at, e.data
               FROM unnest($2::text[], $3::bigint[]) AS p(stream, after)
               CROSS JOIN LATERAL (SELECT * FROM events e
                                    WHERE e.org_id = $1 AND e.stream = p.stream AND e.seq > p.after
                                    ORDER BY e.seq LIMIT $4) e
              ORDER BY e.id LIMIT $4",
        )
        .await?;
    Ok(client.query(&stmt, &[&org_id, &names, &after, &limit]).await?.iter().map(Event::from).collect())
}

/// What a delivered (or wholly filtered) batch moves: each stream's new cursor, and the events
/// sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// (stream, last number consumed).
    pub cursors: Vec<(String, i64)>,
    /// Events sent to the endpoint.
    pub sent: i64,
    /// The id of the last event sent.
    pub last_id: Option<i64>,
}

/// Records progress, if `owner` still holds the lease and no replay came meanwhile (`epoch`);
/// false otherwise (nothing is written: another node delivers now).
pub async fn advance(
    client: &mut crate::PooledClient,
    sub_id: i64,
    owner: &str,
    epoch: i32,
    progress: &Progress,
) -> Result<bool> {
    let tx = client.transaction().await?;
    let held = tx
        .execute(
            "UPDATE event_subscriptions SET delivered = delivered + $4,
                    last_delivered_at = CASE WHEN $4 > 0 THEN now() ELSE last_delivered_at END,
                    last_delivered_id = COALESCE($5, last_delivered_id),
                    failures = CASE WHEN $4 > 0 THEN 0 ELSE failures END,
                    failing_since = CASE WHEN $4 > 0 THEN NULL ELSE failing_since END,
                    last_error = CASE WHEN $4 > 0 THEN NULL ELSE last_error END,
                    next_attempt_at = CASE WHEN $4 > 0 THEN NULL ELSE next_attempt_at END
              WHERE id = $1 AND lease_owner = $2 AND epoch = $3",
            &[&sub_id, &owner, &epoch, &progress.sent, &progress.last_id],
        )
        .await?;
    if held == 0 {
        return Ok(false);
    }
    let (streams, seqs): (Vec<&str>, Vec<i64>) = progress.cursors.iter().map(|(s, q)| (s.as_str(), *q)).unzip();
    tx.execute(
        "INSERT INTO event_cursors (subscription_id, stream, delivered_seq)
         SELECT $1, s, q FROM unnest($2::text[], $3::bigint[]) AS p(s, q)
         ON CONFLICT (subscription_id, stream) DO UPDATE
         SET delivered_seq = GREATEST(event_cursors.delivered_seq, EXCLUDED.delivered_seq)",
        &[&sub_id, &streams, &seqs],
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Records a failed attempt and when to try again; false when `owner` lost the lease.
pub async fn failed(
    client: &impl GenericClient,
    sub_id: i64,
    owner: &str,
    error: &str,
    retry_in: std::time::Duration,
) -> Result<bool> {
    let stmt = client
        .prepare_cached(
            "UPDATE event_subscriptions SET failures = failures + 1, failing_since = COALESCE(failing_since, now()),
                    last_error = $3, next_attempt_at = now() + make_interval(secs => $4)
              WHERE id = $1 AND lease_owner = $2",
        )
        .await?;
    Ok(client.execute(&stmt, &[&sub_id, &owner, &error, &retry_in.as_secs_f64()]).await? > 0)
}

/// Records batched pulls as events, for the organizations with a subscription to pulls:
/// one event per (repository, digest) and batch, with the number of pulls.
pub async fn record_pulls(client: &impl GenericClient, pulls: &[(&str, &str, i64, OffsetDateTime)]) -> Result<()> {
    let mut names = Vec::with_capacity(pulls.len());
    let mut digests = Vec::with_capacity(pulls.len());
    let mut counts = Vec::with_capacity(pulls.len());
    let mut times = Vec::with_capacity(pulls.len());
    for (name, digest, count, at) in pulls {
        names.push(*name);
        digests.push(*digest);
        counts.push(*count);
        times.push(*at);
    }
    let stmt = client
        .prepare_cached(
            "SELECT aerugo_emit_event(r.org_id, r.name, $5, jsonb_build_object(
                        'repository', r.name, 'digest', p.digest, 'pulls', p.count, 'lastPulledAt', p.at))
               FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[]) AS p(name, digest, count, at)
               JOIN repositories r ON r.name = p.name
              WHERE EXISTS (SELECT 1 FROM event_subscriptions s WHERE s.org_id = r.org_id AND $5 = ANY(s.types))
              ORDER BY r.name, p.digest",
        )
        .await?;
    client.execute(&stmt, &[&names, &digests, &counts, &times, &PULLED]).await?;
    Ok(())
}
