//! Pull-through mirrors: the `mirrors` rows the operator declares from Mirror objects, and the
//! queries the data plane's pull-through path needs (tag revalidation times, blob rows known
//! from an upstream manifest before their bytes are fetched, eviction under a byte cap, and the
//! cross-node lock that makes one node fetch each digest).

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Result;

/// A mirror as the data plane serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// Row id.
    pub id: i64,
    /// The organization it fills.
    pub org_id: i64,
    /// That organization's name: the first segment of the mirror's repository names.
    pub org: String,
    /// The Mirror object's name.
    pub name: String,
    /// The upstream's base URL (`https://host[:port]`, no trailing slash).
    pub upstream: String,
    /// The registry host names (`?ns=`) routed to this mirror.
    pub registry_hosts: Vec<String>,
    /// Upstream credentials.
    pub credentials: Option<(String, String)>,
    /// Upstream repository globs; empty: every repository.
    pub repositories: Vec<String>,
    /// How long a tag is served without asking the upstream again.
    pub stale_after: std::time::Duration,
    /// Serve the cached copy when the upstream fails.
    pub serve_stale_on_error: bool,
    /// Byte cap of what the mirror keeps; `None`: no cap.
    pub max_bytes: Option<i64>,
}

/// What a Mirror object declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSpec<'a> {
    /// Upstream base URL.
    pub upstream: &'a str,
    /// `?ns=` host names.
    pub registry_hosts: &'a [String],
    /// Upstream credentials.
    pub credentials: Option<(&'a str, &'a str)>,
    /// Upstream repository globs.
    pub repositories: &'a [String],
    /// Seconds a tag is trusted.
    pub stale_after_seconds: i64,
    /// Serve stale on upstream errors.
    pub serve_stale_on_error: bool,
    /// Byte cap.
    pub max_bytes: Option<i64>,
}

/// The upstream URL as stored: `http(s)://host[:port]`, with no path, query or credentials.
pub fn check_upstream(upstream: &str) -> std::result::Result<String, String> {
    let url = url::Url::parse(upstream).map_err(|e| format!("upstream {upstream:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!("upstream {upstream:?} is not an http:// or https:// URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("upstream {upstream:?} carries credentials; put them in a Secret (credentialsSecret)"));
    }
    if !url.path().trim_end_matches('/').is_empty() || url.query().is_some() {
        return Err(format!("upstream {upstream:?} has a path or query; name the registry's root URL"));
    }
    Ok(upstream.trim_end_matches('/').to_owned())
}

/// The `?ns=` name clients use for `upstream` when none is declared: its `host[:port]`.
pub fn default_registry_host(upstream: &str) -> Option<String> {
    let url = url::Url::parse(upstream).ok()?;
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

/// A compiled repository glob (`*` stays within a path segment, `**` spans them).
pub fn repository_glob(pattern: &str) -> std::result::Result<globset::GlobMatcher, String> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("repository pattern {pattern:?}: {}", e.kind()))
}

impl MirrorSpec<'_> {
    /// Checks the spec: an upstream [`check_upstream`] accepts, globs that compile, host names
    /// without scheme or path, a non-negative staleness and a positive cap.
    pub fn check(&self) -> std::result::Result<(), String> {
        check_upstream(self.upstream)?;
        for pattern in self.repositories {
            repository_glob(pattern)?;
        }
        for host in self.registry_hosts {
            let valid = !host.is_empty()
                && host.len() <= 253
                && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
            if !valid {
                return Err(format!("registry host {host:?} is not a host name (as in docker.io or ghcr.io)"));
            }
        }
        if self.stale_after_seconds < 0 {
            return Err("staleAfter is negative".into());
        }
        if self.max_bytes.is_some_and(|m| m <= 0) {
            return Err("maxBytes must be positive".into());
        }
        Ok(())
    }
}

/// The outcome of declaring a mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Declared {
    /// The row of the object (created or updated).
    Owned(i64),
    /// The organization already has another mirror.
    OrganizationTaken(String),
    /// Another mirror already answers for this `?ns=` host.
    HostTaken(String, String),
}

/// Creates or updates the mirror of the Mirror object `uid`, filling organization `org_id`.
pub async fn declare(
    client: &impl GenericClient,
    uid: Uuid,
    namespace: &str,
    org_id: i64,
    name: &str,
    spec: &MirrorSpec<'_>,
) -> Result<Declared> {
    let other = client
        .query_opt(
            "SELECT m.name, m.k8s_namespace FROM mirrors m WHERE m.org_id = $1 AND m.k8s_uid <> $2",
            &[&org_id, &uid],
        )
        .await?;
    if let Some(row) = other {
        return Ok(Declared::OrganizationTaken(format!("{}/{}", row.get::<_, String>(1), row.get::<_, String>(0))));
    }
    let clash = client
        .query_opt(
            "SELECT h, m.k8s_namespace || '/' || m.name FROM mirrors m, unnest(m.registry_hosts) AS h
              WHERE m.k8s_uid <> $1 AND lower(h) = ANY($2) LIMIT 1",
            &[&uid, &spec.registry_hosts.iter().map(|h| h.to_ascii_lowercase()).collect::<Vec<_>>()],
        )
        .await?;
    if let Some(row) = clash {
        return Ok(Declared::HostTaken(row.get(0), row.get(1)));
    }
    let (username, password) = match spec.credentials {
        Some((u, p)) => (Some(u), Some(p)),
        None => (None, None),
    };
    let row = client
        .query_one(
            "INSERT INTO mirrors (org_id, name, k8s_uid, k8s_namespace, upstream, registry_hosts, username, password,
                                  repositories, stale_after_seconds, serve_stale_on_error, max_bytes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (k8s_uid) DO UPDATE SET org_id = EXCLUDED.org_id, upstream = EXCLUDED.upstream,
                 registry_hosts = EXCLUDED.registry_hosts, username = EXCLUDED.username,
                 password = EXCLUDED.password, repositories = EXCLUDED.repositories,
                 stale_after_seconds = EXCLUDED.stale_after_seconds,
                 serve_stale_on_error = EXCLUDED.serve_stale_on_error, max_bytes = EXCLUDED.max_bytes,
                 updated_at = now()
             RETURNING id",
            &[
                &org_id,
                &name,
                &uid,
                &namespace,
                &spec.upstream,
                &spec.registry_hosts,
                &username,
                &password,
                &spec.repositories,
                &spec.stale_after_seconds,
                &spec.serve_stale_on_error,
                &spec.max_bytes,
            ],
        )
        .await?;
    Ok(Declared::Owned(row.get(0)))
}

/// Deletes the mirror of the Mirror object `uid` (its organization and what it cached stay:
/// they are the Organization's). Returns whether there was one.
pub async fn forget_declared(client: &impl GenericClient, uid: Uuid) -> Result<bool> {
    Ok(client.execute("DELETE FROM mirrors WHERE k8s_uid = $1", &[&uid]).await? > 0)
}

/// Every mirror.
pub async fn all(client: &impl GenericClient) -> Result<Vec<Mirror>> {
    let rows = client
        .query(
            "SELECT m.id, m.org_id, o.name, m.name, m.upstream, m.registry_hosts, m.username, m.password,
                    m.repositories, m.stale_after_seconds, m.serve_stale_on_error, m.max_bytes
               FROM mirrors m JOIN organizations o ON o.id = m.org_id
              WHERE o.deleted_at IS NULL ORDER BY m.id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (username, password): (Option<String>, Option<String>) = (r.get(6), r.get(7));
            Mirror {
                id: r.get(0),
                org_id: r.get(1),
                org: r.get(2),
                name: r.get(3),
                upstream: r.get(4),
                registry_hosts: r.get(5),
                credentials: username.zip(password),
                repositories: r.get(8),
                stale_after: std::time::Duration::from_secs(u64::try_from(r.get::<_, i64>(9)).unwrap_or(0)),
                serve_stale_on_error: r.get(10),
                max_bytes: r.get(11),
            }
        })
        .collect())
}

/// When tag `tag` of repository `repository` was last confirmed against the upstream.
pub async fn tag_checked(client: &impl GenericClient, repository: &str, tag: &str) -> Result<Option<OffsetDateTime>> {
    let stmt = client
        .prepare_cached(
            "SELECT mt.checked_at FROM mirror_tags mt JOIN repositories r ON r.id = mt.repository_id
              WHERE r.name = $1 AND mt.name = $2",
        )
        .await?;
    Ok(client.query_opt(&stmt, &[&repository, &tag]).await?.map(|r| r.get(0)))
}

/// Records that tag `tag` of repository `repository_id` was confirmed against the upstream now.
pub async fn mark_checked(client: &impl GenericClient, repository_id: i64, tag: &str) -> Result<()> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO mirror_tags (repository_id, name, checked_at)
             SELECT $1, $2, now() WHERE EXISTS (SELECT 1 FROM tags WHERE repository_id = $1 AND name = $2)
             ON CONFLICT (repository_id, name) DO UPDATE SET checked_at = now()",
        )
        .await?;
    client.execute(&stmt, &[&repository_id, &tag]).await?;
    Ok(())
}

/// Records the blobs an upstream manifest names, by digest and size, before their bytes are
/// fetched (a manifest's references need the rows; the bytes come on the first pull of each).
/// Returns a descriptor whose size disagrees with the blob already known under its digest.
pub async fn known_blobs(client: &impl GenericClient, blobs: &[(String, i64)]) -> Result<Option<(String, i64, i64)>> {
    let (digests, sizes): (Vec<&str>, Vec<i64>) = blobs.iter().map(|(d, s)| (d.as_str(), *s)).unzip();
    client
        .execute(
            "INSERT INTO blobs (digest, size) SELECT * FROM unnest($1::text[], $2::bigint[])
             ON CONFLICT (digest) DO NOTHING",
            &[&digests, &sizes],
        )
        .await?;
    let row = client
        .query_opt(
            "SELECT b.digest, x.size, b.size FROM blobs b JOIN unnest($1::text[], $2::bigint[]) AS x(digest, size)
               ON x.digest = b.digest WHERE b.size <> x.size LIMIT 1",
            &[&digests, &sizes],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
}

/// The size recorded for blob `digest`, if it is known.
pub async fn blob_size(client: &impl GenericClient, digest: &str) -> Result<Option<i64>> {
    let stmt = client.prepare_cached("SELECT size FROM blobs WHERE digest = $1").await?;
    Ok(client.query_opt(&stmt, &[&digest]).await?.map(|r| r.get(0)))
}

/// Whether blob `digest` is referenced by a manifest of repository `repository_id` (a mirror
/// only fetches the blobs its manifests name).
pub async fn referenced(client: &impl GenericClient, repository_id: i64, digest: &str) -> Result<bool> {
    let stmt = client
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM manifest_blobs mb JOIN manifests m ON m.id = mb.manifest_id
                             WHERE m.repository_id = $1 AND mb.digest = $2)",
        )
        .await?;
    Ok(client.query_one(&stmt, &[&repository_id, &digest]).await?.get(0))
}

/// Links manifest `child_id` (digest `digest`) under the indexes of its repository that list
/// it: a mirrored index is stored before the manifests it lists, which come on their first pull.
pub async fn adopt(client: &impl GenericClient, repository_id: i64, child_id: i64, digest: &str) -> Result<()> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO manifest_references (parent_id, child_id)
             SELECT p.id, $2 FROM manifests p
              WHERE p.repository_id = $1 AND p.id <> $2
                AND jsonb_typeof(convert_from(p.payload, 'UTF8')::jsonb -> 'manifests') = 'array'
                AND convert_from(p.payload, 'UTF8')::jsonb -> 'manifests' @> jsonb_build_array(jsonb_build_object('digest', $3::text))
             ON CONFLICT DO NOTHING",
        )
        .await?;
    client.execute(&stmt, &[&repository_id, &child_id, &digest]).await?;
    Ok(())
}

/// Bytes a mirror's organization holds: its manifests' payloads and each distinct blob stored
/// in its location once.
pub async fn cached_bytes(client: &impl GenericClient, org_id: i64) -> Result<i64> {
    let row = client
        .query_one(
            "SELECT (SELECT COALESCE(sum(octet_length(m.payload)), 0)::bigint FROM manifests m
                       JOIN repositories r ON r.id = m.repository_id WHERE r.org_id = o.id)
                  + (SELECT COALESCE(sum(b.size), 0)::bigint FROM blobs b
                      WHERE b.digest IN (SELECT mb.digest FROM manifest_blobs mb JOIN manifests m ON m.id = mb.manifest_id
                                           JOIN repositories r ON r.id = m.repository_id WHERE r.org_id = o.id)
                        AND EXISTS (SELECT 1 FROM blob_objects bo
                                     WHERE bo.digest = b.digest AND bo.location = COALESCE(o.bucket, '')))
               FROM organizations o WHERE o.id = $1",
            &[&org_id],
        )
        .await?;
    Ok(row.get(0))
}

/// A manifest evicted from a mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evicted {
    /// Its repository.
    pub repository: String,
    /// Its digest.
    pub digest: String,
}

/// Deletes the least recently pulled images of the mirror's organization until what it holds
/// is at most `max_bytes`: one top-level manifest (no index lists it) at a time, oldest
/// `last_pulled_at` (or, never pulled, oldest stored) first; an index takes with it the
/// manifests it lists that no other index does. Their tags go with them; the collector then
/// unlinks the blobs no manifest references and deletes their objects. One eviction runs per
/// organization at a time (others return at once). Call inside a transaction.
pub async fn evict(client: &impl GenericClient, org_id: i64, max_bytes: i64) -> Result<Vec<Evicted>> {
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_xact_lock(hashtextextended('aerugo-mirror-evict', $1))", &[&org_id])
        .await?
        .get(0);
    let mut evicted = Vec::new();
    if !locked {
        return Ok(evicted);
    }
    while cached_bytes(client, org_id).await? > max_bytes {
        let Some(row) = client
            .query_opt(
                "SELECT m.id, m.digest, r.name FROM manifests m JOIN repositories r ON r.id = m.repository_id
                  WHERE r.org_id = $1
                    AND NOT EXISTS (SELECT 1 FROM manifest_references x WHERE x.child_id = m.id)
                  ORDER BY COALESCE(m.last_pulled_at, m.created_at), m.id LIMIT 1",
                &[&org_id],
            )
            .await?
        else {
            break;
        };
        let (id, digest, repository): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
        let children: Vec<i64> = client
            .query("DELETE FROM manifest_references WHERE parent_id = $1 RETURNING child_id", &[&id])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        client.execute("DELETE FROM manifests WHERE id = $1", &[&id]).await?;
        let orphans = client
            .query(
                "DELETE FROM manifests m WHERE m.id = ANY($1)
                    AND NOT EXISTS (SELECT 1 FROM manifest_references x WHERE x.child_id = m.id)
                    AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id)
                  RETURNING m.digest",
                &[&children],
            )
            .await?;
        evicted.extend(orphans.iter().map(|r| Evicted { repository: repository.clone(), digest: r.get(0) }));
        evicted.push(Evicted { repository, digest });
    }
    Ok(evicted)
}

/// The cross-node lock of one fetch (`key`: what is fetched). Taken on a connection of its own
/// and held until [`unlock`] or until that connection closes (a node that dies mid-fetch lets
/// another take over at once). Returns whether it was taken.
pub async fn try_lock(client: &impl GenericClient, key: &str) -> Result<bool> {
    let stmt = client.prepare_cached("SELECT pg_try_advisory_lock(hashtextextended($1, 7))").await?;
    Ok(client.query_one(&stmt, &[&key]).await?.get(0))
}

/// Releases a lock [`try_lock`] took on this connection.
pub async fn unlock(client: &impl GenericClient, key: &str) -> Result<()> {
    let stmt = client.prepare_cached("SELECT pg_advisory_unlock(hashtextextended($1, 7))").await?;
    client.query_one(&stmt, &[&key]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_root_urls_without_credentials() {
        assert_eq!(check_upstream("https://registry-1.docker.io/").as_deref(), Ok("https://registry-1.docker.io"));
        assert_eq!(check_upstream("http://127.0.0.1:5001").as_deref(), Ok("http://127.0.0.1:5001"));
        for bad in ["ftp://x", "https://u:p@x", "https://x/v2/", "https://x/?a=b", "x", "https://"] {
            assert!(check_upstream(bad).is_err(), "{bad}");
        }
        assert_eq!(default_registry_host("https://ghcr.io").as_deref(), Some("ghcr.io"));
        assert_eq!(default_registry_host("http://127.0.0.1:5001").as_deref(), Some("127.0.0.1:5001"));
    }

    #[test]
    fn specs_are_checked() {
        let ok = MirrorSpec {
            upstream: "https://registry-1.docker.io",
            registry_hosts: &["docker.io".into()],
            credentials: None,
            repositories: &["library/*".into()],
            stale_after_seconds: 300,
            serve_stale_on_error: true,
            max_bytes: Some(1 << 30),
        };
        assert_eq!(ok.check(), Ok(()));
        assert!(MirrorSpec { registry_hosts: &["https://docker.io".into()], ..ok.clone() }.check().is_err());
        assert!(MirrorSpec { repositories: &["library/[".into()], ..ok.clone() }.check().is_err());
        assert!(MirrorSpec { max_bytes: Some(0), ..ok.clone() }.check().is_err());
        assert!(MirrorSpec { stale_after_seconds: -1, ..ok.clone() }.check().is_err());
        let glob = repository_glob("library/*").expect("glob");
        assert!(glob.is_match("library/alpine") && !glob.is_match("library/a/b"));
    }
}
