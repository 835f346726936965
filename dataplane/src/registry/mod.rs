//! The registry core: what each OCI operation means in terms of Postgres rows and stored
//! blobs. Handlers call it with parsed, validated arguments; it never sees actix types, and it
//! never decides who may do what (the caller was authorized before it is called).

mod blobs;
mod listing;
mod manifests;
mod uploads;

use aerugo_db::registry::Repository;
use aerugo_db::{GenericClient, Pool, PooledClient, registry};
use aerugo_oci::RepoName;
use aerugo_storage::{AnyStore, BlobStore};

pub use blobs::BlobBody;
pub use listing::{Page, PageOf};
pub use manifests::StoredManifest;
pub use uploads::{StartUpload, UploadProgress};

use crate::config::Settings;
use crate::error::{RegistryError, Result};

/// Actor recorded in audit events until authentication names one.
const ANONYMOUS: &str = "anonymous";

/// The registry core, shared by every worker of a node.
pub struct Registry {
    db: Pool,
    store: AnyStore,
    settings: Settings,
}

impl Registry {
    /// A registry over `db` and `store`.
    pub fn new(db: Pool, store: AnyStore, settings: Settings) -> Self {
        Registry { db, store, settings }
    }

    /// Checks that the database and the blob store answer (readiness).
    pub async fn ready(&self) -> Result<()> {
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

    /// The repository `name`, created on first push in the organization named by its first
    /// path segment.
    async fn repository_for_push(&self, client: &impl GenericClient, name: &RepoName) -> Result<Repository> {
        if let Some(repo) = registry::find_repository(client, name.as_str()).await? {
            return Ok(repo);
        }
        let org_id = registry::ensure_organization(client, name.namespace()).await?;
        Ok(registry::ensure_repository(client, org_id, name.as_str()).await?)
    }

    /// An absolute URL when a public base URL is configured, else an absolute path.
    pub fn url(&self, path: &str) -> String {
        match &self.settings.public_url {
            Some(base) => format!("{base}{path}"),
            None => path.to_owned(),
        }
    }
}
