//! The registry core: what each OCI operation means in terms of Postgres rows and stored
//! blobs. Handlers call it with parsed, validated arguments; it never sees actix types, and it
//! never decides who may do what (the caller was authorized before it is called).

mod blobs;
mod listing;
mod manifests;
mod mirror;
mod uploads;

use std::sync::Arc;

use aerugo_db::notify::{self, Change};
use aerugo_db::registry::Repository;
use aerugo_db::{GenericClient, Pool, PooledClient, audit, registry, tenancy};
use aerugo_oci::RepoName;
use aerugo_storage::{AnyStore, BlobStore};
use serde_json::Value;

pub use blobs::BlobBody;
pub use listing::CatalogFilter;
pub use listing::{Page, PageOf};
pub use manifests::StoredManifest;
pub use uploads::{StartUpload, UploadProgress};

use crate::cache::Cache;
use crate::config::Settings;
use crate::error::{RegistryError, Result};

/// Who performs a write, as the audit log records it. Handlers build it from the authorized
/// caller; the core only records it.
#[derive(Debug, Clone)]
pub struct Actor {
    /// Username, `key:<id>` for an organization key, or `anonymous`.
    pub name: String,
    /// Client address.
    pub source: Option<String>,
    /// A site administrator: a push may create a missing organization.
    pub site_admin: bool,
}

impl Actor {
    /// Records `action` on `repo` by this actor, in the caller's transaction.
    async fn record(&self, client: &impl GenericClient, action: &str, repo: &Repository, detail: Value) -> Result<()> {
        let event = audit::Event {
            actor: &self.name,
            action,
            target: &repo.name,
            org_id: Some(repo.org_id),
            source: self.source.as_deref(),
            allowed: true,
            detail,
        };
        Ok(audit::record(client, &event).await?)
    }
}

/// How long a readiness probe's outcome is served before the database and the store are asked
/// again. `/readyz` answers on the public port too, so no caller can make a node probe more
/// than once per period, however often it asks.
pub const READY_PROBE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// The last readiness probe: when it ran and what it found (`Err`: why not ready).
type Probe = Option<(std::time::Instant, Result<(), String>)>;

/// The registry core, shared by every worker of a node.
pub struct Registry {
    db: Pool,
    store: AnyStore,
    settings: Settings,
    cache: Arc<Cache>,
    upload_seconds: prometheus::Histogram,
    last_probe: tokio::sync::Mutex<Probe>,
    pulls: std::sync::Mutex<Pulls>,
    mirrors: Arc<crate::mirror::Mirrors>,
}

/// Manifest pulls not yet written: repository → digest → when, and how many. Nested so that
/// a pull already held is updated without allocating (the pull path's steady state).
#[derive(Default)]
struct Pulls {
    by_repository: std::collections::HashMap<String, std::collections::HashMap<String, (time::OffsetDateTime, i64)>>,
    held: usize,
}

/// Pulls held between writes at most; past it, further ones wait for the next write (a pull
/// already held is updated in place).
const MAX_PENDING_PULLS: usize = 100_000;

impl Registry {
    /// A registry over `db` and `store`, with an in-process cache.
    pub fn new(db: Pool, store: AnyStore, settings: Settings) -> Self {
        let upload_seconds = crate::metrics::upload_histogram();
        let mirrors = Arc::new(crate::mirror::Mirrors::new(
            settings.mirror_timeout,
            crate::mirror::MirrorMetrics::unregistered(),
        ));
        Registry {
            db,
            store,
            settings,
            cache: Arc::new(Cache::local()),
            upload_seconds,
            last_probe: tokio::sync::Mutex::new(None),
            pulls: std::sync::Mutex::default(),
            mirrors,
        }
    }

    /// Records that manifest `digest` of `repository` was pulled now (for `keepPulledWithin`);
    /// written by [`Registry::flush_pulls`] in one statement per batch, not one per pull.
    pub fn mark_pulled(&self, repository: &str, digest: &str) {
        let Ok(mut pulls) = self.pulls.lock() else { return };
        let now = time::OffsetDateTime::now_utc();
        if let Some((at, count)) = pulls.by_repository.get_mut(repository).and_then(|d| d.get_mut(digest)) {
            *at = now;
            *count += 1;
        } else if pulls.held < MAX_PENDING_PULLS {
            pulls.held += 1;
            pulls.by_repository.entry(repository.to_owned()).or_default().insert(digest.to_owned(), (now, 1));
        }
    }

    /// Writes the pulls recorded since the last write (called periodically and at shutdown),
    /// and the pull events of organizations subscribed to them, in one transaction.
    pub async fn flush_pulls(&self) -> Result<usize> {
        let batch: Vec<((String, String), (time::OffsetDateTime, i64))> = match self.pulls.lock() {
            Ok(mut pulls) => {
                pulls.held = 0;
                pulls
                    .by_repository
                    .drain()
                    .flat_map(|(repository, digests)| {
                        digests.into_iter().map(move |(d, at)| ((repository.clone(), d), at))
                    })
                    .collect()
            }
            Err(_) => return Ok(0),
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
        let times: Vec<_> = batch.iter().map(|(key, (at, _))| (key.clone(), *at)).collect();
        registry::record_pulls(&tx, &times).await?;
        let counted: Vec<_> = batch.iter().map(|((r, d), (at, n))| (r.as_str(), d.as_str(), *n, *at)).collect();
        aerugo_db::events::record_pulls(&tx, &counted).await?;
        tx.commit().await.map_err(aerugo_db::Error::from)?;
        Ok(batch.len())
    }

    /// Uses `cache` (the node's) instead of a private in-process one.
    pub fn with_cache(mut self, cache: Arc<Cache>) -> Self {
        self.cache = cache;
        self
    }

    /// Records upload durations in `histogram` (the node's registered one).
    pub fn with_upload_histogram(mut self, histogram: prometheus::Histogram) -> Self {
        self.upload_seconds = histogram;
        self
    }

    /// Uses `mirrors` (the node's, with registered metrics and a refresh task).
    pub fn with_mirrors(mut self, mirrors: Arc<crate::mirror::Mirrors>) -> Self {
        self.mirrors = mirrors;
        self
    }

    /// The node's pull-through mirrors.
    pub fn mirrors(&self) -> &crate::mirror::Mirrors {
        &self.mirrors
    }

    /// The pull-path cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Retires what every node caches of repository `name` after a committed write, before it
    /// is acknowledged. When this node cannot reach Redis while others may, they learn it
    /// through Postgres instead (their listeners bump the generation).
    async fn repository_changed(&self, name: &RepoName) {
        if !self.cache.repository_changed(name.as_str(), "write").await {
            self.announce(Change::Repository(name.as_str())).await;
        }
    }

    /// [`Registry::repository_changed`] for tenancy state (management API writes).
    pub async fn tenancy_changed(&self) {
        if !self.cache.tenancy_changed("write").await {
            self.announce(Change::Everything("api")).await;
        }
    }

    /// Tells the other nodes of a change through Postgres.
    async fn announce(&self, change: Change<'_>) {
        let announced = match self.client().await {
            Ok(client) => notify::announce(&client, change).await.map_err(RegistryError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = announced {
            tracing::error!(error = %e, "could not announce a change to other nodes; they may serve it stale until their cache TTL");
        }
    }

    /// Checks that the database and the blob store answer (readiness).
    /// At most one probe runs per [`READY_PROBE_TTL`]: callers meanwhile get its outcome
    /// (concurrent callers wait for the one probe in flight). `Err` says why not.
    pub async fn ready(&self) -> Result<(), String> {
        let mut last = self.last_probe.lock().await;
        if let Some((at, outcome)) = last.as_ref()
            && at.elapsed() < READY_PROBE_TTL
        {
            return outcome.clone();
        }
        let outcome = self.probe().await.map_err(|e| e.to_string());
        *last = Some((std::time::Instant::now(), outcome.clone()));
        outcome
    }

    async fn probe(&self) -> Result<()> {
        let client = self.client().await?;
        client.query_one("SELECT 1", &[]).await.map_err(aerugo_db::Error::from)?;
        self.store.check().await?;
        Ok(())
    }

    /// The database pool's current state, for metrics.
    pub fn pool_status(&self) -> crate::metrics::PoolStatus {
        let status = self.db.status();
        crate::metrics::PoolStatus {
            in_use: status.size.saturating_sub(status.available),
            idle: status.available,
            waiting: status.waiting,
            max: status.max_size,
        }
    }

    async fn client(&self) -> Result<PooledClient> {
        Ok(self.db.get().await.map_err(aerugo_db::Error::from)?)
    }

    /// The repository `name`, or `NAME_UNKNOWN`.
    async fn repository(&self, client: &impl GenericClient, name: &RepoName) -> Result<Repository> {
        registry::find_repository(client, name.as_str())
            .await?
            .ok_or_else(|| RegistryError::NameUnknown(name.to_string()))
    }

    /// The repository `name`, created on first push where its organization (named by the
    /// first path segment) creates repositories on push. A site administrator's push also
    /// creates a missing organization. The caller was authorized to push to `name` already.
    async fn repository_for_push(
        &self,
        client: &impl GenericClient,
        name: &RepoName,
        actor: &Actor,
    ) -> Result<Repository> {
        if let Some(entry) = self.mirrors.of_org(name.namespace()) {
            return Err(RegistryError::Denied(format!(
                "organization {} is a pull-through mirror of {}: it is filled by pulls, not pushes",
                name.namespace(),
                entry.mirror.upstream
            )));
        }
        if let Some(repo) = registry::find_repository(client, name.as_str()).await? {
            return Ok(repo);
        }
        let org_id = match tenancy::organization(client, name.namespace()).await? {
            Some(org) if org.auto_create_repos || actor.site_admin => org.id,
            Some(org) => {
                return Err(RegistryError::NameUnknown(format!(
                    "repository {name} does not exist and organization {} does not create repositories on push",
                    org.name
                )));
            }
            None if actor.site_admin => registry::ensure_organization(client, name.namespace()).await?,
            None => {
                return Err(RegistryError::NameUnknown(format!("organization {} does not exist", name.namespace())));
            }
        };
        Ok(registry::ensure_repository(client, org_id, name.as_str()).await?)
    }

    /// `OCI-Chunk-Min-Length` to advertise on a new upload session, if the store has one.
    pub fn chunk_min_length(&self) -> Option<u64> {
        self.store.chunk_min_length()
    }

    /// The configured public base URL, without a trailing slash.
    pub fn public_url(&self) -> Option<&str> {
        self.settings.public_url.as_deref()
    }

    /// An absolute URL when a public base URL is configured, else an absolute path.
    pub fn url(&self, path: &str) -> String {
        match &self.settings.public_url {
            Some(base) => format!("{base}{path}"),
            None => path.to_owned(),
        }
    }
}
