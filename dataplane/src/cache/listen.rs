//! Applies change notifications from Postgres (see `aerugo_db::notify`) to this node: tenancy
//! changes retire every cached entry, repository changes that repository's, and key or user
//! changes also reload revocations at once instead of at the next periodic refresh.

use std::sync::Arc;
use std::time::Duration;

use aerugo_db::notify::{self, REPOSITORY_PREFIX};

use super::Cache;
use crate::auth::Auth;

/// Listens on `database_url` for as long as the node runs, reconnecting after failures.
/// After every (re)connection everything is retired: notifications sent while the node was
/// not listening are lost.
pub async fn run(database_url: String, cache: Arc<Cache>, auth: Arc<Auth>) {
    let mut connected_before = false;
    loop {
        match notify::listen(&database_url).await {
            Ok(mut listener) => {
                if connected_before {
                    tracing::info!("change notifications resumed");
                }
                connected_before = true;
                cache.tenancy_changed("notify").await;
                while let Some(payload) = listener.payloads.recv().await {
                    apply(&payload, &cache, &auth).await;
                }
                tracing::warn!("change notification connection closed; reconnecting");
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for change notifications; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn apply(payload: &str, cache: &Cache, auth: &Auth) {
    if let Some(repository) = payload.strip_prefix(REPOSITORY_PREFIX) {
        cache.repository_changed(repository, "notify").await;
        return;
    }
    cache.tenancy_changed("notify").await;
    if payload == "api_keys" || payload == "users" {
        auth.forget_logins();
        if let Err(e) = auth.refresh_revocations().await {
            tracing::warn!(error = %e, "reloading revoked credentials after a change failed");
        }
    }
}
