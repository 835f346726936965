//! Rows declared by Kubernetes objects: what the operator writes. Every row is keyed by its
//! object's UID (so a same-named object elsewhere can never adopt it) and carries
//! `managed_by = 'kubernetes'`. Each sync compares before it writes: a resync of unchanged
//! objects writes nothing.

use deadpool_postgres::GenericClient;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Result;

/// The outcome of claiming a registry-wide name for an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The row is the object's: its id, and whether this sync wrote anything.
    Owned {
        /// Row id.
        id: i64,
        /// Something was inserted or updated.
        changed: bool,
    },
    /// Another owner holds the name: an object in `namespace`, or (`None`) the management API.
    Taken {
        /// The namespace of the object that holds it, if it is one.
        namespace: Option<String>,
    },
}

/// What a claim found for an object's UID and name.
enum Found {
    /// The row the object owns.
    Mine(i64),
    /// A row of that name orphaned by an object of the same namespace: the object adopts it.
    Adoptable(i64),
    /// A row of that name no object owns and none orphaned (management API or push).
    Unowned(i64, String),
    /// A row of that name owned by another object, or orphaned in another namespace.
    Taken(Option<String>),
    /// Nothing: insert.
    Absent,
}

/// Looks up (and locks) the rows of `table` an object with `uid`, `name` and `namespace` may
/// claim. `table` is `organizations` or `repositories`.
async fn find(client: &impl GenericClient, table: &str, uid: Uuid, name: &str, namespace: &str) -> Result<Found> {
    let rows = client
        .query(
            &format!(
                "SELECT id, k8s_uid, k8s_namespace, orphaned_at IS NOT NULL AS orphaned, name, managed_by
                   FROM {table} WHERE k8s_uid = $1 OR name = $2 FOR UPDATE"
            ),
            &[&uid, &name],
        )
        .await?;
    if let Some(row) = rows.iter().find(|r| r.get::<_, Option<Uuid>>("k8s_uid") == Some(uid)) {
        return Ok(Found::Mine(row.get("id")));
    }
    let Some(row) = rows.iter().find(|r| r.get::<_, String>("name") == name) else { return Ok(Found::Absent) };
    let (orphaned, owner_namespace) = (row.get::<_, bool>("orphaned"), row.get::<_, Option<String>>("k8s_namespace"));
    Ok(if orphaned && owner_namespace.as_deref() == Some(namespace) {
        Found::Adoptable(row.get("id"))
    } else if !orphaned && row.get::<_, Option<Uuid>>("k8s_uid").is_none() {
        Found::Unowned(row.get("id"), row.get("managed_by"))
    } else {
        Found::Taken(owner_namespace)
    })
}

/// An Organization object's row.
#[derive(Debug, Clone)]
pub struct DeclaredOrg<'a> {
    /// The object's UID.
    pub uid: Uuid,
    /// The object's namespace.
    pub namespace: &'a str,
    /// Registry-wide name (`metadata.name`).
    pub name: &'a str,
    /// `displayName`.
    pub display_name: Option<&'a str>,
    /// Quota in bytes.
    pub quota_bytes: Option<i64>,
    /// Dedicated bucket.
    pub bucket: Option<&'a str>,
    /// `autoCreateRepositories`.
    pub auto_create_repos: bool,
    /// `private` or `public`.
    pub default_visibility: &'a str,
    /// `retain` or `delete`.
    pub reclaim_policy: &'a str,
}

/// Claims and updates the organization row of an Organization object. The row it owns (by
/// UID) is updated; an orphaned row of the same name left by an object of the same namespace
/// is adopted; a name held by anyone else is `Taken`.
pub async fn sync_org(client: &impl GenericClient, org: &DeclaredOrg<'_>) -> Result<Claim> {
    let id = match find(client, "organizations", org.uid, org.name, org.namespace).await? {
        Found::Mine(id) | Found::Adoptable(id) => id,
        // An organization of the management API is not taken over by a declaration.
        Found::Unowned(..) => return Ok(Claim::Taken { namespace: None }),
        Found::Taken(namespace) => return Ok(Claim::Taken { namespace }),
        Found::Absent => {
            let row = client
                .query_one(
                    "INSERT INTO organizations (name, display_name, k8s_uid, k8s_namespace, managed_by, quota_bytes,
                                                bucket, auto_create_repos, default_visibility, reclaim_policy)
                     VALUES ($1, $2, $3, $4, 'kubernetes', $5, $6, $7, $8, $9) RETURNING id",
                    &[
                        &org.name,
                        &org.display_name,
                        &org.uid,
                        &org.namespace,
                        &org.quota_bytes,
                        &org.bucket,
                        &org.auto_create_repos,
                        &org.default_visibility,
                        &org.reclaim_policy,
                    ],
                )
                .await?;
            return Ok(Claim::Owned { id: row.get("id"), changed: true });
        }
    };
    let changed = client
        .execute(
            "UPDATE organizations
                SET display_name = $2, k8s_uid = $3, k8s_namespace = $4, managed_by = 'kubernetes', quota_bytes = $5,
                    bucket = $6, auto_create_repos = $7, default_visibility = $8, reclaim_policy = $9, orphaned_at = NULL
              WHERE id = $1
                AND (display_name, k8s_uid, k8s_namespace, managed_by, quota_bytes, bucket, auto_create_repos,
                     default_visibility, reclaim_policy, orphaned_at)
                    IS DISTINCT FROM ($2, $3, $4, 'kubernetes', $5, $6, $7, $8, $9, NULL::timestamptz)",
            &[
                &id,
                &org.display_name,
                &org.uid,
                &org.namespace,
                &org.quota_bytes,
                &org.bucket,
                &org.auto_create_repos,
                &org.default_visibility,
                &org.reclaim_policy,
            ],
        )
        .await?;
    Ok(Claim::Owned { id, changed: changed > 0 })
}

/// Sets an organization's default retention policy (its repositories without their own).
pub async fn set_org_retention(client: &impl GenericClient, id: i64, retention: Option<&Value>) -> Result<()> {
    client
        .execute(
            "UPDATE organizations SET retention = $2 WHERE id = $1 AND retention IS DISTINCT FROM $2",
            &[&id, &retention],
        )
        .await?;
    Ok(())
}

/// The dedicated bucket recorded for the Organization object `uid`, and whether any of its
/// repositories holds blobs; `None` when it has no row yet.
pub async fn org_location(client: &impl GenericClient, uid: Uuid) -> Result<Option<(Option<String>, bool)>> {
    Ok(client
        .query_opt(
            "SELECT o.bucket, EXISTS (SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
                                       WHERE r.org_id = o.id)
               FROM organizations o WHERE o.k8s_uid = $1",
            &[&uid],
        )
        .await?
        .map(|r| (r.get(0), r.get(1))))
}

/// Makes the organization's members exactly `members` (username, role). Returns the usernames
/// that do not exist (left out) and whether anything was written.
pub async fn sync_members(
    client: &impl GenericClient,
    org_id: i64,
    members: &[(&str, &str)],
) -> Result<(Vec<String>, bool)> {
    let names: Vec<&str> = members.iter().map(|(u, _)| *u).collect();
    let users = client.query("SELECT id, username FROM users WHERE username = ANY($1)", &[&names]).await?;
    let id_of =
        |name: &str| users.iter().find(|u| u.get::<_, String>("username") == name).map(|u| u.get::<_, i64>("id"));
    let unknown: Vec<String> = names.iter().filter(|n| id_of(n).is_none()).map(|n| (*n).to_owned()).collect();
    let desired: Vec<(i64, &str)> = members.iter().filter_map(|(u, role)| id_of(u).map(|id| (id, *role))).collect();
    let current: Vec<(i64, String)> = client
        .query("SELECT user_id, role FROM org_members WHERE org_id = $1", &[&org_id])
        .await?
        .iter()
        .map(|r| (r.get("user_id"), r.get("role")))
        .collect();
    let mut changed = false;
    for (user_id, _) in current.iter().filter(|(id, _)| !desired.iter().any(|(d, _)| d == id)) {
        client.execute("DELETE FROM org_members WHERE org_id = $1 AND user_id = $2", &[&org_id, user_id]).await?;
        changed = true;
    }
    for (user_id, role) in &desired {
        if current.iter().any(|(id, r)| id == user_id && r == role) {
            continue;
        }
        client
            .execute(
                "INSERT INTO org_members (org_id, user_id, role) VALUES ($1, $2, $3)
                 ON CONFLICT (org_id, user_id) DO UPDATE SET role = EXCLUDED.role",
                &[&org_id, user_id, role],
            )
            .await?;
        changed = true;
    }
    Ok((unknown, changed))
}

/// The organization row an Organization object owns, by UID: (id, name).
pub async fn org_of(client: &impl GenericClient, uid: Uuid) -> Result<Option<(i64, String)>> {
    Ok(client
        .query_opt("SELECT id, name FROM organizations WHERE k8s_uid = $1", &[&uid])
        .await?
        .map(|r| (r.get("id"), r.get("name"))))
}

/// Usage of an organization: bytes of the distinct blobs its repositories reference, and its
/// repository count.
pub async fn org_usage(client: &impl GenericClient, org_id: i64) -> Result<(i64, i64)> {
    let row = client
        .query_one(
            "SELECT (SELECT COALESCE(SUM(b.size), 0)::bigint FROM blobs b
                      WHERE b.digest IN (SELECT rb.digest FROM repository_blobs rb
                                           JOIN repositories r ON r.id = rb.repository_id WHERE r.org_id = $1)) AS bytes,
                    (SELECT COUNT(*) FROM repositories WHERE org_id = $1) AS repositories",
            &[&org_id],
        )
        .await?;
    Ok((row.get("bytes"), row.get("repositories")))
}

/// What releasing a row on deletion did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Released {
    /// Rows deleted or orphaned.
    pub rows: u64,
    /// Blobs no repository references any more. The `gc_blob_review_queue` triggers queued
    /// them; the garbage collector deletes their objects and rows together.
    pub unreferenced_blobs: i64,
}

/// Releases an Organization object's row: `delete` removes it with its repositories, tags,
/// manifests, members and keys (the blobs nothing references any more are queued for the
/// garbage collector by the schema's triggers); otherwise the row is kept, marked orphaned, for
/// a new object of the same name in the same namespace to adopt.
pub async fn release_org(client: &impl GenericClient, uid: Uuid, delete: bool) -> Result<Released> {
    if !delete {
        let rows = client
            .execute("UPDATE organizations SET k8s_uid = NULL, orphaned_at = now() WHERE k8s_uid = $1", &[&uid])
            .await?;
        return Ok(Released { rows, unreferenced_blobs: 0 });
    }
    let digests: Vec<String> = client
        .query(
            "SELECT DISTINCT rb.digest FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
               JOIN organizations o ON o.id = r.org_id WHERE o.k8s_uid = $1",
            &[&uid],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let rows = client.execute("DELETE FROM organizations WHERE k8s_uid = $1", &[&uid]).await?;
    let unreferenced_blobs = count_unreferenced_blobs(client, &digests).await?;
    Ok(Released { rows, unreferenced_blobs })
}

/// How many of `digests` no repository links any more.
async fn count_unreferenced_blobs(client: &impl GenericClient, digests: &[String]) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT COUNT(*) FROM blobs b WHERE b.digest = ANY($1)
                AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)",
            &[&digests],
        )
        .await?
        .get(0))
}

/// A Repository object's row.
#[derive(Debug, Clone)]
pub struct DeclaredRepo<'a> {
    /// The object's UID.
    pub uid: Uuid,
    /// The object's namespace.
    pub namespace: &'a str,
    /// The organization row.
    pub org_id: i64,
    /// Full name (`org/path`).
    pub name: &'a str,
    /// `private` or `public`.
    pub visibility: &'a str,
    /// Immutable tag patterns.
    pub immutable_tag_patterns: &'a [String],
    /// Retention settings, as JSON.
    pub retention: Option<&'a Value>,
    /// `retain` or `delete`.
    pub reclaim_policy: &'a str,
}

/// Claims and updates a Repository object's row, as [`sync_org`] does for organizations.
pub async fn sync_repo(client: &impl GenericClient, repo: &DeclaredRepo<'_>) -> Result<Claim> {
    let id = match find(client, "repositories", repo.uid, repo.name, repo.namespace).await? {
        Found::Mine(id) | Found::Adoptable(id) => id,
        // A repository created by a push or the management API is adopted by the object that
        // declares it; one the system made is not.
        Found::Unowned(id, managed_by) if managed_by == "api" => id,
        Found::Unowned(..) => return Ok(Claim::Taken { namespace: None }),
        Found::Taken(namespace) => return Ok(Claim::Taken { namespace }),
        Found::Absent => {
            let row = client
                .query_one(
                    "INSERT INTO repositories (org_id, name, visibility, k8s_uid, k8s_namespace, managed_by,
                                               immutable_tag_patterns, retention, reclaim_policy)
                     VALUES ($1, $2, $3, $4, $5, 'kubernetes', $6, $7, $8) RETURNING id",
                    &[
                        &repo.org_id,
                        &repo.name,
                        &repo.visibility,
                        &repo.uid,
                        &repo.namespace,
                        &repo.immutable_tag_patterns,
                        &repo.retention,
                        &repo.reclaim_policy,
                    ],
                )
                .await?;
            return Ok(Claim::Owned { id: row.get("id"), changed: true });
        }
    };
    let changed = client
        .execute(
            "UPDATE repositories
                SET org_id = $2, visibility = $3, k8s_uid = $4, k8s_namespace = $5, managed_by = 'kubernetes',
                    immutable_tag_patterns = $6, retention = $7, reclaim_policy = $8, orphaned_at = NULL
              WHERE id = $1
                AND (org_id, visibility, k8s_uid, k8s_namespace, managed_by, immutable_tag_patterns, retention,
                     reclaim_policy, orphaned_at)
                    IS DISTINCT FROM ($2, $3, $4, $5, 'kubernetes', $6::text[], $7::jsonb, $8, NULL::timestamptz)",
            &[
                &id,
                &repo.org_id,
                &repo.visibility,
                &repo.uid,
                &repo.namespace,
                &repo.immutable_tag_patterns,
                &repo.retention,
                &repo.reclaim_policy,
            ],
        )
        .await?;
    Ok(Claim::Owned { id, changed: changed > 0 })
}

/// Makes a repository's grants exactly `grants` (subject kind, subject id, access); returns
/// whether anything was written.
pub async fn sync_grants(
    client: &impl GenericClient,
    repository_id: i64,
    grants: &[(&str, i64, &str)],
) -> Result<bool> {
    let current: Vec<(String, i64, String)> = client
        .query(
            "SELECT subject_kind, subject_id, access FROM repository_grants WHERE repository_id = $1",
            &[&repository_id],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut changed = false;
    for (kind, id, _) in current.iter().filter(|(k, i, _)| !grants.iter().any(|(gk, gi, _)| gk == k && gi == i)) {
        client
            .execute(
                "DELETE FROM repository_grants WHERE repository_id = $1 AND subject_kind = $2 AND subject_id = $3",
                &[&repository_id, kind, id],
            )
            .await?;
        changed = true;
    }
    for (kind, id, access) in grants {
        if current.iter().any(|(k, i, a)| k == kind && i == id && a == access) {
            continue;
        }
        client
            .execute(
                "INSERT INTO repository_grants (repository_id, subject_kind, subject_id, access) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (repository_id, subject_kind, subject_id) DO UPDATE SET access = EXCLUDED.access",
                &[&repository_id, kind, id, access],
            )
            .await?;
        changed = true;
    }
    Ok(changed)
}

/// User ids by username (missing users are absent).
pub async fn user_ids(client: &impl GenericClient, usernames: &[&str]) -> Result<Vec<(String, i64)>> {
    Ok(client
        .query("SELECT username, id FROM users WHERE username = ANY($1)", &[&usernames])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// A repository's tag count, referenced bytes and last push.
pub async fn repo_usage(client: &impl GenericClient, repository_id: i64) -> Result<(i64, i64, Option<OffsetDateTime>)> {
    let row = client
        .query_one(
            "SELECT (SELECT COUNT(*) FROM tags WHERE repository_id = $1) AS tags,
                    (SELECT COALESCE(SUM(b.size), 0)::bigint FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
                      WHERE rb.repository_id = $1) AS bytes,
                    (SELECT last_push_at FROM repositories WHERE id = $1) AS last_push_at",
            &[&repository_id],
        )
        .await?;
    Ok((row.get("tags"), row.get("bytes"), row.get("last_push_at")))
}

/// Releases a Repository object's row (see [`release_org`]).
pub async fn release_repo(client: &impl GenericClient, uid: Uuid, delete: bool) -> Result<Released> {
    if !delete {
        let rows = client
            .execute("UPDATE repositories SET k8s_uid = NULL, orphaned_at = now() WHERE k8s_uid = $1", &[&uid])
            .await?;
        return Ok(Released { rows, unreferenced_blobs: 0 });
    }
    let digests: Vec<String> = client
        .query(
            "SELECT rb.digest FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id WHERE r.k8s_uid = $1",
            &[&uid],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let rows = client.execute("DELETE FROM repositories WHERE k8s_uid = $1", &[&uid]).await?;
    let unreferenced_blobs = count_unreferenced_blobs(client, &digests).await?;
    Ok(Released { rows, unreferenced_blobs })
}

/// One key row of an ApiKey object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredKey {
    /// Row id.
    pub id: i64,
    /// Public key id.
    pub key_id: String,
    /// Expiry.
    pub expires_at: Option<OffsetDateTime>,
    /// Creation.
    pub created_at: OffsetDateTime,
}

/// The key rows of an ApiKey object that still work (not revoked, not expired), newest first.
pub async fn live_keys(client: &impl GenericClient, uid: Uuid) -> Result<Vec<DeclaredKey>> {
    Ok(client
        .query(
            "SELECT id, key_id, expires_at, created_at FROM api_keys
              WHERE k8s_uid = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
              ORDER BY created_at DESC, id DESC",
            &[&uid],
        )
        .await?
        .iter()
        .map(|r| DeclaredKey {
            id: r.get("id"),
            key_id: r.get("key_id"),
            expires_at: r.get("expires_at"),
            created_at: r.get("created_at"),
        })
        .collect())
}

/// A new key row for an ApiKey object.
#[derive(Debug, Clone)]
pub struct NewDeclaredKey<'a> {
    /// The object's UID.
    pub uid: Uuid,
    /// The organization the key acts for.
    pub org_id: i64,
    /// Public key id.
    pub key_id: &'a str,
    /// SHA-256 of the secret.
    pub key_hash: &'a [u8],
    /// Label (`namespace/name`).
    pub name: &'a str,
    /// Scopes over full repository names, as JSON.
    pub scopes: &'a Value,
    /// Expiry.
    pub expires_at: Option<OffsetDateTime>,
}

/// Inserts a key row; returns its id.
pub async fn insert_key(client: &impl GenericClient, key: &NewDeclaredKey<'_>) -> Result<i64> {
    Ok(client
        .query_one(
            "INSERT INTO api_keys (key_id, key_hash, name, org_id, scopes, expires_at, k8s_uid, managed_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'kubernetes') RETURNING id",
            &[&key.key_id, &key.key_hash, &key.name, &key.org_id, &key.scopes, &key.expires_at, &key.uid],
        )
        .await?
        .get(0))
}

/// Sets the scopes of an object's live keys; returns whether anything changed.
pub async fn set_key_scopes(client: &impl GenericClient, uid: Uuid, scopes: &Value) -> Result<bool> {
    Ok(client
        .execute(
            "UPDATE api_keys SET scopes = $2 WHERE k8s_uid = $1 AND revoked_at IS NULL AND scopes IS DISTINCT FROM $2",
            &[&uid, scopes],
        )
        .await?
        > 0)
}

/// Shortens a key's life to `until` (the end of a rotation overlap).
pub async fn expire_key(client: &impl GenericClient, id: i64, until: OffsetDateTime) -> Result<bool> {
    Ok(client
        .execute(
            "UPDATE api_keys SET expires_at = $2 WHERE id = $1 AND (expires_at IS NULL OR expires_at > $2)",
            &[&id, &until],
        )
        .await?
        > 0)
}

/// Revokes every key of an object except `keep`; returns how many were revoked.
pub async fn revoke_keys(client: &impl GenericClient, uid: Uuid, keep: Option<i64>) -> Result<u64> {
    Ok(client
        .execute(
            "UPDATE api_keys SET revoked_at = now() WHERE k8s_uid = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $2",
            &[&uid, &keep],
        )
        .await?)
}

/// An object that owns rows, as the rows remember it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The object's UID.
    pub uid: Uuid,
    /// Its reclaim policy asked to delete the data (organizations and repositories).
    pub delete: bool,
}

/// The owners of declared rows whose UID is of the kind file mode derives (a name-based UUID,
/// version 8, where Kubernetes assigns random version 4 UUIDs): organizations, repositories,
/// and API keys with a key that still works.
pub async fn file_owners(client: &impl GenericClient) -> Result<(Vec<Owner>, Vec<Owner>, Vec<Uuid>)> {
    let owners = |rows: Vec<tokio_postgres::Row>| {
        rows.iter().map(|r| Owner { uid: r.get(0), delete: r.get::<_, String>(1) == "delete" }).collect::<Vec<_>>()
    };
    const FILE_UID: &str = "k8s_uid IS NOT NULL AND substr(k8s_uid::text, 15, 1) = '8' AND managed_by = 'kubernetes'";
    let orgs =
        client.query(&format!("SELECT k8s_uid, reclaim_policy FROM organizations WHERE {FILE_UID}"), &[]).await?;
    let repos =
        client.query(&format!("SELECT k8s_uid, reclaim_policy FROM repositories WHERE {FILE_UID}"), &[]).await?;
    let keys = client
        .query(&format!("SELECT DISTINCT k8s_uid FROM api_keys WHERE {FILE_UID} AND revoked_at IS NULL"), &[])
        .await?;
    Ok((owners(orgs), owners(repos), keys.iter().map(|r| r.get(0)).collect()))
}

/// The event subscriptions declared by files (`aerugo-operator apply`).
pub async fn file_subscriptions(client: &impl GenericClient) -> Result<Vec<Uuid>> {
    let rows = client
        .query(
            "SELECT k8s_uid FROM event_subscriptions
              WHERE k8s_uid IS NOT NULL AND substr(k8s_uid::text, 15, 1) = '8' AND managed_by = 'kubernetes'",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Who holds a bucket another claim wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketHolder {
    /// A Registry's (its blobs live there).
    Registry,
    /// Another organization: its name and, when declared, its namespace.
    Organization {
        /// Registry-wide name.
        name: String,
        /// Namespace of the object that declares it.
        namespace: Option<String>,
    },
}

impl std::fmt::Display for BucketHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BucketHolder::Registry => f.write_str("the registry (its own blobs)"),
            BucketHolder::Organization { name, namespace: Some(ns) } => {
                write!(f, "organization {name:?} (namespace {ns:?})")
            }
            BucketHolder::Organization { name, namespace: None } => write!(f, "organization {name:?}"),
        }
    }
}

/// The holder of `bucket`, if anyone claimed it.
async fn bucket_holder(client: &impl GenericClient, bucket: &str) -> Result<Option<(Option<i64>, BucketHolder)>> {
    let row = client
        .query_opt(
            "SELECT c.org_id, o.name, o.k8s_namespace FROM bucket_claims c
               LEFT JOIN organizations o ON o.id = c.org_id WHERE c.bucket = $1",
            &[&bucket],
        )
        .await?;
    Ok(row.map(|r| {
        let org_id: Option<i64> = r.get(0);
        let holder = match org_id {
            None => BucketHolder::Registry,
            Some(_) => BucketHolder::Organization { name: r.get(1), namespace: r.get(2) },
        };
        (org_id, holder)
    }))
}

/// Claims `bucket` as the dedicated bucket of organization `org_id` (`None`: it has none, and
/// any claim it held is given up). Returns who holds it when that is someone else; the caller
/// then must not touch the bucket. Run it in the transaction that writes the organization's
/// row, before any S3 call: concurrent claims of one bucket wait on each other.
pub async fn claim_org_bucket(
    client: &impl GenericClient,
    org_id: i64,
    bucket: Option<&str>,
) -> Result<Option<BucketHolder>> {
    client
        .execute("DELETE FROM bucket_claims WHERE org_id = $1 AND bucket IS DISTINCT FROM $2", &[&org_id, &bucket])
        .await?;
    let Some(bucket) = bucket else { return Ok(None) };
    client
        .execute(
            "INSERT INTO bucket_claims (bucket, org_id) VALUES ($1, $2) ON CONFLICT (bucket) DO NOTHING",
            &[&bucket, &org_id],
        )
        .await?;
    Ok(match bucket_holder(client, bucket).await? {
        Some((Some(holder), _)) if holder == org_id => None,
        Some((_, holder)) => Some(holder),
        None => None,
    })
}

/// Claims `bucket` as a Registry's. Several registries may share a bucket; an organization's
/// dedicated bucket is refused (its holder is returned).
pub async fn claim_registry_bucket(client: &impl GenericClient, bucket: &str) -> Result<Option<BucketHolder>> {
    client
        .execute(
            "INSERT INTO bucket_claims (bucket, org_id) VALUES ($1, NULL) ON CONFLICT (bucket) DO NOTHING",
            &[&bucket],
        )
        .await?;
    Ok(match bucket_holder(client, bucket).await? {
        Some((Some(_), holder)) => Some(holder),
        _ => None,
    })
}
