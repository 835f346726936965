//! Tenancy and credentials: users, organizations and their members, repositories as the
//! management API shows them, repository grants, API keys, the facts an authorization decision
//! needs, and the shared failed-login counters. Rows with `managed_by = 'kubernetes'` belong to
//! the operator; the functions that change rows for the management API refuse to touch them.

use serde_json::Value;
use time::OffsetDateTime;
use tokio_postgres::Row;

use crate::{GenericClient, Result};

/// Who manages a row.
pub const MANAGED_BY_KUBERNETES: &str = "kubernetes";

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Row id.
    pub id: i64,
    /// Login name.
    pub username: String,
    /// Contact address.
    pub email: Option<String>,
    /// May do anything anywhere.
    pub is_site_admin: bool,
    /// Disabled users cannot authenticate.
    pub disabled: bool,
    /// `api`, `kubernetes` or `system`.
    pub managed_by: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

impl From<&Row> for User {
    fn from(row: &Row) -> Self {
        User {
            id: row.get("id"),
            username: row.get("username"),
            email: row.get("email"),
            is_site_admin: row.get("is_site_admin"),
            disabled: row.get("disabled"),
            managed_by: row.get("managed_by"),
            created_at: row.get("created_at"),
        }
    }
}

const USER_COLUMNS: &str = "id, username, email, is_site_admin, disabled, managed_by, created_at";

/// A user and its password hash (`None`: no password login).
pub async fn user_credentials(client: &impl GenericClient, username: &str) -> Result<Option<(User, Option<String>)>> {
    let stmt =
        client.prepare_cached(&format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE username = $1")).await?;
    Ok(client.query_opt(&stmt, &[&username]).await?.map(|r| (User::from(&r), r.get("password_hash"))))
}

/// The user `username`.
pub async fn user(client: &impl GenericClient, username: &str) -> Result<Option<User>> {
    Ok(user_credentials(client, username).await?.map(|(u, _)| u))
}

/// Creates a user; `None` when the name is taken.
pub async fn create_user(
    client: &impl GenericClient,
    username: &str,
    email: Option<&str>,
    password_hash: Option<&str>,
    site_admin: bool,
    managed_by: &str,
) -> Result<Option<User>> {
    let stmt = client
        .prepare_cached(&format!(
            "INSERT INTO users (username, email, password_hash, is_site_admin, managed_by)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (username) DO NOTHING RETURNING {USER_COLUMNS}"
        ))
        .await?;
    Ok(client
        .query_opt(&stmt, &[&username, &email, &password_hash, &site_admin, &managed_by])
        .await?
        .as_ref()
        .map(User::from))
}

/// Creates or updates a site administrator with `password_hash` (bootstrap).
pub async fn upsert_site_admin(client: &impl GenericClient, username: &str, password_hash: &str) -> Result<User> {
    let stmt = client
        .prepare_cached(&format!(
            "INSERT INTO users (username, password_hash, is_site_admin, managed_by) VALUES ($1, $2, true, 'system')
             ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash, is_site_admin = true,
                                                  disabled = false
             RETURNING {USER_COLUMNS}"
        ))
        .await?;
    Ok(User::from(&client.query_one(&stmt, &[&username, &password_hash]).await?))
}

/// Every user, by name.
pub async fn list_users(client: &impl GenericClient) -> Result<Vec<User>> {
    let stmt = client.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY username")).await?;
    Ok(client.query(&stmt, &[]).await?.iter().map(User::from).collect())
}

/// Changes a user's password hash.
pub async fn set_password(client: &impl GenericClient, user_id: i64, password_hash: &str) -> Result<()> {
    let stmt = client.prepare_cached("UPDATE users SET password_hash = $2 WHERE id = $1").await?;
    client.execute(&stmt, &[&user_id, &password_hash]).await?;
    Ok(())
}

/// Changes a user's email address.
pub async fn set_email(client: &impl GenericClient, user_id: i64, email: Option<&str>) -> Result<()> {
    let stmt = client.prepare_cached("UPDATE users SET email = $2 WHERE id = $1").await?;
    client.execute(&stmt, &[&user_id, &email]).await?;
    Ok(())
}

/// An organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    /// Row id.
    pub id: i64,
    /// Name (first segment of its repositories' names).
    pub name: String,
    /// Human-readable name.
    pub display_name: Option<String>,
    /// Whether a push may create a repository.
    pub auto_create_repos: bool,
    /// Visibility of repositories created by push.
    pub default_visibility: String,
    /// `api`, `kubernetes` or `system`.
    pub managed_by: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

impl From<&Row> for Organization {
    fn from(row: &Row) -> Self {
        Organization {
            id: row.get("id"),
            name: row.get("name"),
            display_name: row.get("display_name"),
            auto_create_repos: row.get("auto_create_repos"),
            default_visibility: row.get("default_visibility"),
            managed_by: row.get("managed_by"),
            created_at: row.get("created_at"),
        }
    }
}

const ORG_COLUMNS: &str =
    "o.id, o.name, o.display_name, o.auto_create_repos, o.default_visibility, o.managed_by, o.created_at";

/// What a new organization looks like.
#[derive(Debug, Clone)]
pub struct NewOrganization<'a> {
    /// Name.
    pub name: &'a str,
    /// Human-readable name.
    pub display_name: Option<&'a str>,
    /// Whether a push may create a repository.
    pub auto_create_repos: bool,
    /// `private` or `public`.
    pub default_visibility: &'a str,
}

/// Creates an organization with `owner` as its Owner; `None` when the name is taken.
/// Call inside a transaction so the membership and the organization appear together.
pub async fn create_organization(
    client: &impl GenericClient,
    org: &NewOrganization<'_>,
    owner_user_id: i64,
) -> Result<Option<Organization>> {
    let stmt = client
        .prepare_cached(&format!(
            "WITH o AS (
                 INSERT INTO organizations (name, display_name, auto_create_repos, default_visibility, managed_by)
                 VALUES ($1, $2, $3, $4, 'api') ON CONFLICT (name) DO NOTHING
                 RETURNING *)
             SELECT {ORG_COLUMNS} FROM o"
        ))
        .await?;
    let Some(row) = client
        .query_opt(&stmt, &[&org.name, &org.display_name, &org.auto_create_repos, &org.default_visibility])
        .await?
    else {
        return Ok(None);
    };
    let created = Organization::from(&row);
    put_member(client, created.id, owner_user_id, "owner").await?;
    Ok(Some(created))
}

/// The organization `name`.
pub async fn organization(client: &impl GenericClient, name: &str) -> Result<Option<Organization>> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {ORG_COLUMNS} FROM organizations o WHERE o.name = $1 AND o.deleted_at IS NULL"
        ))
        .await?;
    Ok(client.query_opt(&stmt, &[&name]).await?.as_ref().map(Organization::from))
}

/// Organizations `user_id` belongs to (every one when `all`), by name.
pub async fn list_organizations(client: &impl GenericClient, user_id: i64, all: bool) -> Result<Vec<Organization>> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {ORG_COLUMNS} FROM organizations o
             WHERE o.deleted_at IS NULL
               AND ($2 OR EXISTS (SELECT 1 FROM org_members m WHERE m.org_id = o.id AND m.user_id = $1))
             ORDER BY o.name"
        ))
        .await?;
    Ok(client.query(&stmt, &[&user_id, &all]).await?.iter().map(Organization::from).collect())
}

/// Deletes an organization with its repositories, members, grants and keys. Blobs stay in
/// storage (linked elsewhere, or collected later from the review queue).
pub async fn delete_organization(client: &impl GenericClient, org_id: i64) -> Result<()> {
    let refs = client
        .prepare_cached(
            "DELETE FROM manifest_references mr USING manifests m, repositories r
             WHERE mr.parent_id = m.id AND m.repository_id = r.id AND r.org_id = $1",
        )
        .await?;
    client.execute(&refs, &[&org_id]).await?;
    let stmt = client.prepare_cached("DELETE FROM organizations WHERE id = $1").await?;
    client.execute(&stmt, &[&org_id]).await?;
    Ok(())
}

/// A member of an organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Username.
    pub username: String,
    /// `owner`, `admin`, `member` or `viewer`.
    pub role: String,
}

/// Members of an organization, by name.
pub async fn members(client: &impl GenericClient, org_id: i64) -> Result<Vec<Member>> {
    let stmt = client
        .prepare_cached(
            "SELECT u.username, m.role FROM org_members m JOIN users u ON u.id = m.user_id
             WHERE m.org_id = $1 ORDER BY u.username",
        )
        .await?;
    Ok(client.query(&stmt, &[&org_id]).await?.iter().map(|r| Member { username: r.get(0), role: r.get(1) }).collect())
}

/// The role of `user_id` in `org_id`.
pub async fn member_role(client: &impl GenericClient, org_id: i64, user_id: i64) -> Result<Option<String>> {
    let stmt = client.prepare_cached("SELECT role FROM org_members WHERE org_id = $1 AND user_id = $2").await?;
    Ok(client.query_opt(&stmt, &[&org_id, &user_id]).await?.map(|r| r.get(0)))
}

/// Sets a member's role (adding the member if needed).
pub async fn put_member(client: &impl GenericClient, org_id: i64, user_id: i64, role: &str) -> Result<()> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO org_members (org_id, user_id, role) VALUES ($1, $2, $3)
             ON CONFLICT (org_id, user_id) DO UPDATE SET role = EXCLUDED.role",
        )
        .await?;
    client.execute(&stmt, &[&org_id, &user_id, &role]).await?;
    Ok(())
}

/// Removes a member; false when it was not one.
pub async fn remove_member(client: &impl GenericClient, org_id: i64, user_id: i64) -> Result<bool> {
    let stmt = client.prepare_cached("DELETE FROM org_members WHERE org_id = $1 AND user_id = $2").await?;
    Ok(client.execute(&stmt, &[&org_id, &user_id]).await? == 1)
}

/// Number of owners of an organization (the last one cannot leave). Locks the organization's
/// row until the transaction ends, so two concurrent demotions cannot both see a second owner.
pub async fn owner_count(client: &impl GenericClient, org_id: i64) -> Result<i64> {
    let lock = client.prepare_cached("SELECT 1 FROM organizations WHERE id = $1 FOR UPDATE").await?;
    client.query_opt(&lock, &[&org_id]).await?;
    let stmt = client.prepare_cached("SELECT count(*) FROM org_members WHERE org_id = $1 AND role = 'owner'").await?;
    Ok(client.query_one(&stmt, &[&org_id]).await?.get(0))
}

/// A repository as the management API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositorySummary {
    /// Row id.
    pub id: i64,
    /// Full name (`org/team/app`).
    pub name: String,
    /// `private` or `public`.
    pub visibility: String,
    /// `api`, `kubernetes` or `system`.
    pub managed_by: String,
    /// Number of tags.
    pub tag_count: i64,
    /// Bytes of the distinct blobs linked to it.
    pub size_bytes: i64,
    /// Latest push.
    pub last_push_at: Option<OffsetDateTime>,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

impl From<&Row> for RepositorySummary {
    fn from(row: &Row) -> Self {
        RepositorySummary {
            id: row.get("id"),
            name: row.get("name"),
            visibility: row.get("visibility"),
            managed_by: row.get("managed_by"),
            tag_count: row.get("tag_count"),
            size_bytes: row.get("size_bytes"),
            last_push_at: row.get("last_push_at"),
            created_at: row.get("created_at"),
        }
    }
}

const REPO_SUMMARY: &str = "SELECT r.id, r.name, r.visibility, r.managed_by, r.last_push_at, r.created_at,
        (SELECT count(*) FROM tags t WHERE t.repository_id = r.id) AS tag_count,
        (SELECT coalesce(sum(b.size), 0)::bigint FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
          WHERE rb.repository_id = r.id) AS size_bytes
     FROM repositories r";

/// Creates a repository; `None` when the name is taken.
pub async fn create_repository(
    client: &impl GenericClient,
    org_id: i64,
    name: &str,
    visibility: &str,
) -> Result<Option<RepositorySummary>> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO repositories (org_id, name, visibility, managed_by) VALUES ($1, $2, $3, 'api')
             ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .await?;
    if client.query_opt(&stmt, &[&org_id, &name, &visibility]).await?.is_none() {
        return Ok(None);
    }
    repository_summary(client, name).await
}

/// Repositories of an organization, by name.
pub async fn list_org_repositories(client: &impl GenericClient, org_id: i64) -> Result<Vec<RepositorySummary>> {
    let stmt = client
        .prepare_cached(&format!("{REPO_SUMMARY} WHERE r.org_id = $1 AND r.deleted_at IS NULL ORDER BY r.name"))
        .await?;
    Ok(client.query(&stmt, &[&org_id]).await?.iter().map(RepositorySummary::from).collect())
}

/// One repository by full name.
pub async fn repository_summary(client: &impl GenericClient, name: &str) -> Result<Option<RepositorySummary>> {
    let stmt = client.prepare_cached(&format!("{REPO_SUMMARY} WHERE r.name = $1 AND r.deleted_at IS NULL")).await?;
    Ok(client.query_opt(&stmt, &[&name]).await?.as_ref().map(RepositorySummary::from))
}

/// A tag as the management API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagSummary {
    /// Tag name.
    pub name: String,
    /// Manifest digest.
    pub digest: String,
    /// Manifest media type.
    pub media_type: String,
    /// Manifest payload plus referenced content.
    pub size_bytes: i64,
    /// When the tag last moved.
    pub updated_at: OffsetDateTime,
}

/// Tags of a repository, most recently updated first.
pub async fn tag_summaries(client: &impl GenericClient, repository_id: i64) -> Result<Vec<TagSummary>> {
    let stmt = client
        .prepare_cached(
            "SELECT t.name, m.digest, m.media_type, m.total_size, t.updated_at FROM tags t
             JOIN manifests m ON m.id = t.manifest_id WHERE t.repository_id = $1
             ORDER BY t.updated_at DESC, t.name",
        )
        .await?;
    Ok(client
        .query(&stmt, &[&repository_id])
        .await?
        .iter()
        .map(|r| TagSummary {
            name: r.get(0),
            digest: r.get(1),
            media_type: r.get(2),
            size_bytes: r.get(3),
            updated_at: r.get(4),
        })
        .collect())
}

/// Changes a repository's visibility.
pub async fn set_visibility(client: &impl GenericClient, repository_id: i64, visibility: &str) -> Result<()> {
    let stmt = client.prepare_cached("UPDATE repositories SET visibility = $2 WHERE id = $1").await?;
    client.execute(&stmt, &[&repository_id, &visibility]).await?;
    Ok(())
}

/// Deletes a repository with its manifests, tags, links, grants and uploads. Index→child
/// references are removed first: they restrict deleting a child on its own.
pub async fn delete_repository(client: &impl GenericClient, repository_id: i64) -> Result<()> {
    let refs = client
        .prepare_cached(
            "DELETE FROM manifest_references mr USING manifests m WHERE mr.parent_id = m.id AND m.repository_id = $1",
        )
        .await?;
    client.execute(&refs, &[&repository_id]).await?;
    let stmt = client.prepare_cached("DELETE FROM repositories WHERE id = $1").await?;
    client.execute(&stmt, &[&repository_id]).await?;
    Ok(())
}

/// Everything needed to decide what a caller may do to one repository name, in one round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessFacts {
    /// The organization named by the repository's first segment: (id, auto-create).
    pub org: Option<(i64, bool)>,
    /// The repository, if it exists: (id, visibility).
    pub repository: Option<(i64, String)>,
    /// The organization's default visibility when a pull-through mirror fills it: a
    /// repository it has not fetched yet is pulled with the visibility it will get.
    pub mirrored: Option<String>,
    /// The user's role in the organization.
    pub role: Option<String>,
    /// Grants on the repository naming the user or the API key.
    pub grants: Vec<String>,
}

/// Facts about repository `name` (in organization `org`) as seen by user `user_id` presenting
/// API key row `key_row_id` (either may be absent).
pub async fn access_facts(
    client: &impl GenericClient,
    name: &str,
    org: &str,
    user_id: Option<i64>,
    key_row_id: Option<i64>,
) -> Result<AccessFacts> {
    let stmt = client
        .prepare_cached(
            "SELECT o.id AS org_id, o.auto_create_repos, r.id AS repo_id, r.visibility,
                    CASE WHEN EXISTS (SELECT 1 FROM mirrors mi WHERE mi.org_id = o.id)
                         THEN o.default_visibility END AS mirrored,
                    (SELECT m.role FROM org_members m WHERE m.org_id = o.id AND m.user_id = $3) AS role,
                    ARRAY(SELECT g.access FROM repository_grants g WHERE g.repository_id = r.id
                           AND ((g.subject_kind = 'user' AND g.subject_id = $3)
                             OR (g.subject_kind = 'api_key' AND g.subject_id = $4))) AS grants
             FROM (SELECT 1) AS one
             LEFT JOIN organizations o ON o.name = $2 AND o.deleted_at IS NULL
             LEFT JOIN repositories r ON r.name = $1 AND r.deleted_at IS NULL",
        )
        .await?;
    let row = client.query_one(&stmt, &[&name, &org, &user_id, &key_row_id]).await?;
    let org_id: Option<i64> = row.get("org_id");
    let repo_id: Option<i64> = row.get("repo_id");
    Ok(AccessFacts {
        org: org_id.map(|id| (id, row.get("auto_create_repos"))),
        repository: repo_id.map(|id| (id, row.get("visibility"))),
        mirrored: row.get("mirrored"),
        role: row.get("role"),
        grants: row.get("grants"),
    })
}

/// Whose repositories a catalog shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Viewer {
    /// The user, if authenticated.
    pub user_id: Option<i64>,
    /// The API key row used, if any (its grants count).
    pub key_row_id: Option<i64>,
    /// An organization key's organization: its repositories are visible.
    pub key_org_id: Option<i64>,
    /// Sees everything.
    pub site_admin: bool,
}

/// Catalog page for `viewer`: names after `last` of repositories it may pull, at most `limit`.
pub async fn list_visible_repositories(
    client: &impl GenericClient,
    viewer: Viewer,
    last: Option<&str>,
    limit: i64,
) -> Result<Vec<String>> {
    let stmt = client
        .prepare_cached(
            "SELECT r.name FROM repositories r
             WHERE r.deleted_at IS NULL AND ($1::text IS NULL OR r.name > $1)
               AND ($3 OR r.visibility = 'public' OR r.org_id = $6
                    OR EXISTS (SELECT 1 FROM org_members m WHERE m.org_id = r.org_id AND m.user_id = $4)
                    OR EXISTS (SELECT 1 FROM repository_grants g WHERE g.repository_id = r.id
                               AND ((g.subject_kind = 'user' AND g.subject_id = $4)
                                 OR (g.subject_kind = 'api_key' AND g.subject_id = $5))))
             ORDER BY r.name LIMIT $2",
        )
        .await?;
    Ok(client
        .query(&stmt, &[&last, &limit, &viewer.site_admin, &viewer.user_id, &viewer.key_row_id, &viewer.key_org_id])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// An API key row.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    /// Row id.
    pub id: i64,
    /// Public key id.
    pub key_id: String,
    /// SHA-256 of the secret.
    pub key_hash: Vec<u8>,
    /// Label.
    pub name: Option<String>,
    /// Owning user (user keys).
    pub owner: Option<(i64, String)>,
    /// Owning organization (organization keys).
    pub org: Option<(i64, String)>,
    /// Whether the owning user is a site admin.
    pub owner_site_admin: bool,
    /// Whether the owning user is disabled.
    pub owner_disabled: bool,
    /// `[{"repositories": glob, "actions": [...]}]`.
    pub scopes: Value,
    /// Expiry.
    pub expires_at: Option<OffsetDateTime>,
    /// Last authentication with it (flushed periodically).
    pub last_used_at: Option<OffsetDateTime>,
    /// Revocation time.
    pub revoked_at: Option<OffsetDateTime>,
    /// `api`, `kubernetes` or `system`.
    pub managed_by: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

impl From<&Row> for ApiKey {
    fn from(row: &Row) -> Self {
        let owner_id: Option<i64> = row.get("owner_user_id");
        let org_id: Option<i64> = row.get("org_id");
        ApiKey {
            id: row.get("id"),
            key_id: row.get("key_id"),
            key_hash: row.get("key_hash"),
            name: row.get("name"),
            owner: owner_id.map(|id| (id, row.get("username"))),
            org: org_id.map(|id| (id, row.get("org_name"))),
            owner_site_admin: row.get::<_, Option<bool>>("is_site_admin").unwrap_or(false),
            owner_disabled: row.get::<_, Option<bool>>("disabled").unwrap_or(false),
            scopes: row.get("scopes"),
            expires_at: row.get("expires_at"),
            last_used_at: row.get("last_used_at"),
            revoked_at: row.get("revoked_at"),
            managed_by: row.get("managed_by"),
            created_at: row.get("created_at"),
        }
    }
}

const KEY_SELECT: &str = "SELECT k.id, k.key_id, k.key_hash, k.name, k.owner_user_id, k.org_id, k.scopes,
        k.expires_at, k.last_used_at, k.revoked_at, k.managed_by, k.created_at,
        u.username, u.is_site_admin, u.disabled, o.name AS org_name
     FROM api_keys k LEFT JOIN users u ON u.id = k.owner_user_id LEFT JOIN organizations o ON o.id = k.org_id";

/// The key with public id `key_id`.
pub async fn api_key(client: &impl GenericClient, key_id: &str) -> Result<Option<ApiKey>> {
    let stmt = client.prepare_cached(&format!("{KEY_SELECT} WHERE k.key_id = $1")).await?;
    Ok(client.query_opt(&stmt, &[&key_id]).await?.as_ref().map(ApiKey::from))
}

/// A key to insert.
#[derive(Debug, Clone)]
pub struct NewApiKey<'a> {
    /// Public key id.
    pub key_id: &'a str,
    /// SHA-256 of the secret.
    pub key_hash: &'a [u8],
    /// Label.
    pub name: Option<&'a str>,
    /// Owning user.
    pub owner_user_id: i64,
    /// Scopes as JSON.
    pub scopes: &'a Value,
    /// Expiry.
    pub expires_at: Option<OffsetDateTime>,
}

/// Stores a new user key.
pub async fn create_api_key(client: &impl GenericClient, key: &NewApiKey<'_>) -> Result<ApiKey> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO api_keys (key_id, key_hash, name, owner_user_id, scopes, expires_at, managed_by)
             VALUES ($1, $2, $3, $4, $5, $6, 'api') RETURNING key_id",
        )
        .await?;
    let key_id: String = client
        .query_one(&stmt, &[&key.key_id, &key.key_hash, &key.name, &key.owner_user_id, key.scopes, &key.expires_at])
        .await?
        .get(0);
    api_key(client, &key_id).await?.ok_or_else(|| crate::Error::Corrupt("inserted key vanished".into()))
}

/// Keys owned by `user_id`, newest first.
pub async fn list_api_keys(client: &impl GenericClient, user_id: i64) -> Result<Vec<ApiKey>> {
    let stmt = client.prepare_cached(&format!("{KEY_SELECT} WHERE k.owner_user_id = $1 ORDER BY k.id DESC")).await?;
    Ok(client.query(&stmt, &[&user_id]).await?.iter().map(ApiKey::from).collect())
}

/// Revokes a key (idempotent); returns the revocation time.
pub async fn revoke_api_key(client: &impl GenericClient, key_row_id: i64) -> Result<OffsetDateTime> {
    let stmt = client
        .prepare_cached(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING revoked_at",
        )
        .await?;
    Ok(client.query_one(&stmt, &[&key_row_id]).await?.get(0))
}

/// Public ids of keys revoked since `since` or owned by a disabled user, and names of disabled
/// users: credentials whose outstanding tokens must stop working.
pub async fn revoked_since(client: &impl GenericClient, since: OffsetDateTime) -> Result<Revocations> {
    let keys = client
        .prepare_cached(
            "SELECT key_id FROM api_keys
             WHERE revoked_at >= $1 OR owner_user_id IN (SELECT id FROM users WHERE disabled)",
        )
        .await?;
    let users = client.prepare_cached("SELECT username FROM users WHERE disabled").await?;
    let resets = client
        .prepare_cached("SELECT username, reset_at, all_tokens FROM credential_resets WHERE reset_at >= $1")
        .await?;
    Ok(Revocations {
        keys: client.query(&keys, &[&since]).await?.iter().map(|r| r.get(0)).collect(),
        users: client.query(&users, &[]).await?.iter().map(|r| r.get(0)).collect(),
        resets: client
            .query(&resets, &[&since])
            .await?
            .iter()
            .map(|r| CredentialReset { username: r.get(0), at: r.get(1), all_tokens: r.get(2) })
            .collect(),
    })
}

/// Credentials that must stop working before their tokens expire.
#[derive(Debug, Clone, Default)]
pub struct Revocations {
    /// Revoked API keys (and those of disabled users), by key id.
    pub keys: Vec<String>,
    /// Disabled users.
    pub users: Vec<String>,
    /// Users whose tokens issued before a moment are void.
    pub resets: Vec<CredentialReset>,
}

/// A user's tokens issued before `at` are void.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialReset {
    /// The token subject.
    pub username: String,
    /// Tokens issued before this are void.
    pub at: OffsetDateTime,
    /// Also the tokens of the user's API keys (deleted or disabled users).
    pub all_tokens: bool,
}

/// Voids `username`'s tokens issued before now: password-derived ones, or with `all_tokens`
/// every one (its API keys' too). Run it in the transaction of the change that causes it.
pub async fn reset_credentials(client: &impl GenericClient, username: &str, all_tokens: bool) -> Result<()> {
    client
        .execute(
            "INSERT INTO credential_resets (username, reset_at, all_tokens) VALUES ($1, now(), $2)
             ON CONFLICT (username) DO UPDATE
                SET reset_at = now(), all_tokens = credential_resets.all_tokens OR EXCLUDED.all_tokens",
            &[&username, &all_tokens],
        )
        .await?;
    Ok(())
}

/// Disables or enables user `id`; false when there is no such user.
pub async fn set_disabled(client: &impl GenericClient, id: i64, disabled: bool) -> Result<bool> {
    Ok(client.execute("UPDATE users SET disabled = $2 WHERE id = $1", &[&id, &disabled]).await? > 0)
}

/// Deletes user `id` with its memberships, grants and API keys; false when there is no such
/// user.
pub async fn delete_user(client: &impl GenericClient, id: i64) -> Result<bool> {
    client.execute("DELETE FROM repository_grants WHERE subject_kind = 'user' AND subject_id = $1", &[&id]).await?;
    Ok(client.execute("DELETE FROM users WHERE id = $1", &[&id]).await? > 0)
}

/// Records when keys were last used, never moving a time backwards (one statement per batch).
pub async fn touch_api_keys(client: &impl GenericClient, used: &[(String, OffsetDateTime)]) -> Result<()> {
    let (ids, times): (Vec<&str>, Vec<OffsetDateTime>) = used.iter().map(|(k, t)| (k.as_str(), *t)).unzip();
    let stmt = client
        .prepare_cached(
            "UPDATE api_keys k SET last_used_at = v.at
             FROM unnest($1::text[], $2::timestamptz[]) AS v(key_id, at)
             WHERE k.key_id = v.key_id AND (k.last_used_at IS NULL OR k.last_used_at < v.at)",
        )
        .await?;
    client.execute(&stmt, &[&ids, &times]).await?;
    Ok(())
}

/// Seconds until the first of `keys` that is over `max` failures in its window is allowed
/// again; `None` when none is.
pub async fn login_blocked(
    client: &impl GenericClient,
    keys: &[String],
    max: i32,
    window_seconds: f64,
) -> Result<Option<u64>> {
    let stmt = client
        .prepare_cached(
            "SELECT max(ceil(extract(epoch FROM window_start + make_interval(secs => $3) - now())))::bigint
             FROM login_failures
             WHERE key = ANY($1) AND failures >= $2 AND window_start + make_interval(secs => $3) > now()",
        )
        .await?;
    let wait: Option<i64> = client.query_one(&stmt, &[&keys, &max, &window_seconds]).await?.get(0);
    Ok(wait.map(|w| u64::try_from(w.max(1)).unwrap_or(1)))
}

/// Seconds `key` must still wait under a backoff: its first `free` failures in a window cost
/// nothing, then each further one waits 1 s, doubling up to `window_seconds`, counted from the
/// last failure; `None` when it need not wait.
pub async fn login_backoff(
    client: &impl GenericClient,
    key: &str,
    free: i32,
    window_seconds: f64,
) -> Result<Option<u64>> {
    let stmt = client
        .prepare_cached(
            "SELECT ceil(extract(epoch FROM last_failure_at
                         + make_interval(secs => least(power(2, failures - $2)::float8, $3)) - now()))::bigint
             FROM login_failures
             WHERE key = $1 AND failures >= $2 AND window_start + make_interval(secs => $3) > now()",
        )
        .await?;
    let wait: Option<i64> = client.query_opt(&stmt, &[&key, &free, &window_seconds]).await?.and_then(|r| r.get(0));
    Ok(wait.filter(|w| *w > 0).map(|w| u64::try_from(w).unwrap_or(1)))
}

/// Counts a failed attempt against each of `keys`, starting a new window where the old one ended.
pub async fn login_failed(client: &impl GenericClient, keys: &[String], window_seconds: f64) -> Result<()> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO login_failures (key, window_start, failures) SELECT k, now(), 1 FROM unnest($1::text[]) k
             ON CONFLICT (key) DO UPDATE SET
               failures = CASE WHEN login_failures.window_start + make_interval(secs => $2) > now()
                               THEN login_failures.failures + 1 ELSE 1 END,
               window_start = CASE WHEN login_failures.window_start + make_interval(secs => $2) > now()
                                   THEN login_failures.window_start ELSE now() END,
               last_failure_at = now()",
        )
        .await?;
    client.execute(&stmt, &[&keys, &window_seconds]).await?;
    Ok(())
}

/// Clears the failure count of `key` after a successful login.
pub async fn login_succeeded(client: &impl GenericClient, key: &str) -> Result<()> {
    let stmt = client.prepare_cached("DELETE FROM login_failures WHERE key = $1").await?;
    client.execute(&stmt, &[&key]).await?;
    Ok(())
}
