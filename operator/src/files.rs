//! File mode: reconcile a directory of Organization, Repository, ApiKey and EventSubscription YAML into Postgres
//! with no cluster. ApiKey Secrets are written as manifests under the secrets directory; each
//! object's resulting `Ready` condition is reported. With `prune`, objects file mode applied
//! before that the directory no longer holds are released as a deleted object is: by the
//! reclaim policy their rows remember, keys revoked and their Secret manifests removed.
//!
//! A file object's UID is derived from its kind, namespace and name (a version 8 UUID;
//! Kubernetes assigns random version 4 UUIDs), so the same file always claims the same rows and
//! file mode can tell its own rows from a cluster's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aerugo_crds::{ApiKey, EventSubscription, Organization, Repository};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::context::{Context, Metrics, Settings};
use crate::controller::{Kind, next_status, sync_once};
use crate::error::{Error, Result};
use crate::world::{Files, World};

/// One object's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Kind.
    pub kind: &'static str,
    /// `namespace/name`.
    pub object: String,
    /// `Ready=True`.
    pub ready: bool,
    /// The condition reason.
    pub reason: String,
    /// The condition message.
    pub message: String,
    /// Released because the directory no longer holds it (`object` is then its UID).
    pub pruned: bool,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.pruned {
            return write!(f, "{} {}: pruned: {}", self.kind, self.object, self.message);
        }
        let state = if self.ready { "True" } else { "False" };
        write!(f, "{} {}: Ready={state} ({})", self.kind, self.object, self.reason)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// A stable UID for an object read from a file (unless it names one): the same file always
/// claims the same rows.
pub fn file_uid(kind: &str, namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("aerugo.io/{kind}/{namespace}/{name}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::Io(e.to_string()))?.path();
        if path.is_dir() {
            yaml_files(&path, out)?;
        } else if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// The objects of a directory, by kind.
pub type Loaded = (Vec<Organization>, Vec<Repository>, Vec<ApiKey>, Vec<EventSubscription>);

/// The aerugo.io objects in `dir` (recursively), with namespace and UID filled in.
pub fn load(dir: &Path) -> Result<Loaded> {
    let mut paths = Vec::new();
    yaml_files(dir, &mut paths)?;
    paths.sort();
    let (mut orgs, mut repos, mut keys, mut subscriptions) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&text).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        for mut doc in docs.into_iter().filter(|d| d["apiVersion"] == "aerugo.io/v1alpha1") {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            let name = doc["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            if doc["metadata"]["namespace"].as_str().is_none() {
                doc["metadata"]["namespace"] = "default".into();
            }
            let namespace = doc["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
            // Names become paths of Secret manifests (`<secrets-dir>/<namespace>/<name>.yaml`):
            // only what Kubernetes itself would accept.
            if !aerugo_crds::common::is_dns_label(&namespace) || !aerugo_crds::common::is_dns_subdomain(&name) {
                return Err(Error::Io(format!(
                    "{}: {kind} {namespace:?}/{name:?}: a namespace must be an RFC 1123 label and a name an RFC 1123 subdomain (lowercase letters, digits, '-', and '.' in names)",
                    path.display()
                )));
            }
            if doc["metadata"]["uid"].as_str().is_none() {
                doc["metadata"]["uid"] = file_uid(&kind, &namespace, &name).into();
            }
            // File objects have no generation of their own; 1 keeps observedGeneration meaningful.
            doc["metadata"]["generation"] = 1.into();
            let invalid =
                |e: serde_json::Error| Error::Io(format!("{}: {kind} {namespace}/{name}: {e}", path.display()));
            match kind.as_str() {
                "Organization" => orgs.push(serde_json::from_value(doc).map_err(invalid)?),
                "Repository" => repos.push(serde_json::from_value(doc).map_err(invalid)?),
                "ApiKey" => keys.push(serde_json::from_value(doc).map_err(invalid)?),
                "EventSubscription" => subscriptions.push(serde_json::from_value(doc).map_err(invalid)?),
                _ => {
                    tracing::info!(%kind, %namespace, %name, path = %path.display(), "skipped: reconciled only in a cluster")
                }
            }
        }
    }
    Ok((orgs, repos, keys, subscriptions))
}

fn key_of<K: kube::Resource>(obj: &K) -> (String, String) {
    (obj.meta().namespace.clone().unwrap_or_default(), obj.meta().name.clone().unwrap_or_default())
}

async fn reconcile_all<K: Kind>(ctx: &Context, objects: &[K], out: &mut Vec<Outcome>) {
    for obj in objects {
        let outcome = sync_once(obj, ctx).await;
        let (_, readiness) = next_status(obj, &outcome);
        let (namespace, name) = key_of(obj);
        out.push(Outcome {
            kind: K::CONTROLLER,
            object: format!("{namespace}/{name}"),
            ready: readiness.ready,
            reason: readiness.reason.to_owned(),
            message: readiness.message,
            pruned: false,
        });
    }
}

/// Reconciles every object of `dir`: organizations, then API keys, then repositories (whose
/// grants name keys); with `prune`, then releases what file mode applied before and `dir` no
/// longer holds.
pub async fn apply(
    db: aerugo_db::Pool,
    dir: &Path,
    secrets_dir: PathBuf,
    settings: Settings,
    prune: bool,
) -> Result<Vec<Outcome>> {
    let (orgs, repos, keys, subscriptions) = load(dir)?;
    let files = Files {
        organizations: orgs.iter().map(|o| (key_of(o), o.clone())).collect::<BTreeMap<_, _>>(),
        api_keys: keys.iter().map(|k| (key_of(k), k.clone())).collect(),
        secrets_dir,
        written: Mutex::new(Vec::new()),
    };
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).map_err(|e| Error::Io(e.to_string()))?;
    let ctx = Context::new(db, World::Files(files), settings, metrics);
    let mut out = Vec::new();
    reconcile_all(&ctx, &orgs, &mut out).await;
    reconcile_all(&ctx, &keys, &mut out).await;
    reconcile_all(&ctx, &repos, &mut out).await;
    reconcile_all(&ctx, &subscriptions, &mut out).await;
    if prune {
        let present = |objects: Vec<Option<&str>>| -> std::collections::BTreeSet<String> {
            objects.into_iter().flatten().map(str::to_owned).collect()
        };
        let kept = Kept {
            orgs: present(orgs.iter().map(|o| o.metadata.uid.as_deref()).collect()),
            repos: present(repos.iter().map(|r| r.metadata.uid.as_deref()).collect()),
            keys: present(keys.iter().map(|k| k.metadata.uid.as_deref()).collect()),
            subscriptions: present(subscriptions.iter().map(|s| s.metadata.uid.as_deref()).collect()),
        };
        out.extend(prune_absent(&ctx, &kept).await?);
    }
    if let World::Files(files) = &ctx.world {
        for path in files.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
            tracing::info!(path = %path.display(), "wrote a Secret manifest");
        }
    }
    Ok(out)
}

/// The UIDs of the objects the directory holds.
struct Kept {
    orgs: std::collections::BTreeSet<String>,
    repos: std::collections::BTreeSet<String>,
    keys: std::collections::BTreeSet<String>,
    subscriptions: std::collections::BTreeSet<String>,
}

/// Releases the file-declared rows whose object is gone: event subscriptions, repositories,
/// then API keys, then organizations.
async fn prune_absent(ctx: &Context, kept: &Kept) -> Result<Vec<Outcome>> {
    let (orgs, repos, keys) = {
        let client = ctx.db.get().await.map_err(aerugo_db::Error::from)?;
        aerugo_db::declared::file_owners(&client).await?
    };
    let pruned = |kind: &'static str, uid: &uuid::Uuid, delete: bool| Outcome {
        kind,
        object: uid.to_string(),
        ready: false,
        reason: "Pruned".into(),
        message: if delete { "data deleted".into() } else { "data retained (orphaned)".into() },
        pruned: true,
    };
    let mut out = Vec::new();
    let subscriptions = {
        let client = ctx.db.get().await.map_err(aerugo_db::Error::from)?;
        aerugo_db::declared::file_subscriptions(&client).await?
    };
    for uid in subscriptions.iter().filter(|uid| !kept.subscriptions.contains(&uid.to_string())) {
        let client = ctx.db.get().await.map_err(aerugo_db::Error::from)?;
        aerugo_db::events::forget_declared(&client, *uid).await?;
        out.push(Outcome { message: "subscription deleted".into(), ..pruned("eventsubscription", uid, true) });
    }
    for repo in repos.iter().filter(|r| !kept.repos.contains(&r.uid.to_string())) {
        crate::repo::release(ctx, repo.uid, repo.delete, &repo.uid.to_string()).await?;
        out.push(pruned("repository", &repo.uid, repo.delete));
    }
    let gone: Vec<&uuid::Uuid> = keys.iter().filter(|uid| !kept.keys.contains(&uid.to_string())).collect();
    for uid in &gone {
        let client = ctx.db.get().await.map_err(aerugo_db::Error::from)?;
        aerugo_db::declared::revoke_keys(&client, **uid, None).await?;
        out.push(Outcome { message: "keys revoked".into(), ..pruned("apikey", uid, true) });
    }
    if let World::Files(files) = &ctx.world {
        remove_secret_manifests(&files.secrets_dir, &gone)?;
    }
    for org in orgs.iter().filter(|o| !kept.orgs.contains(&o.uid.to_string())) {
        crate::org::release(ctx, org.uid, org.delete, &org.uid.to_string()).await?;
        out.push(pruned("organization", &org.uid, org.delete));
    }
    Ok(out)
}

/// Removes the Secret manifests (`<dir>/<namespace>/<name>.yaml`) written for the ApiKeys
/// `gone`: each carries its ApiKey's name in the label `aerugo.io/api-key`.
fn remove_secret_manifests(dir: &Path, gone: &[&uuid::Uuid]) -> Result<()> {
    if gone.is_empty() || !dir.is_dir() {
        return Ok(());
    }
    let mut paths = Vec::new();
    yaml_files(dir, &mut paths)?;
    for path in paths {
        let Some(namespace) = path.parent().and_then(Path::file_name).and_then(|n| n.to_str()) else { continue };
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        let Ok(secret) = serde_saphyr::from_str::<Value>(&text) else { continue };
        let Some(key) = secret["metadata"]["labels"]["aerugo.io/api-key"].as_str() else { continue };
        let uid = file_uid("ApiKey", namespace, key);
        if gone.iter().any(|g| g.to_string() == uid) {
            std::fs::remove_file(&path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
            tracing::info!(path = %path.display(), "removed the Secret manifest of a pruned ApiKey");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Namespaces and names become paths under the secrets directory: a name that is not a
    /// Kubernetes name could escape it, so the whole directory is refused.
    #[test]
    fn names_that_could_escape_the_secrets_directory_are_refused() {
        let object = |namespace: &str, name: &str| {
            format!(
                "apiVersion: aerugo.io/v1alpha1\nkind: ApiKey\nmetadata:\n  name: {name:?}\n  namespace: {namespace:?}\nspec:\n  organizationRef: {{ name: acme }}\n  scopes: [{{ repositories: '**', actions: [Pull] }}]\n"
            )
        };
        for (namespace, name) in [("../../tmp", "x"), ("team", "../../../etc/passwd"), ("Team", "x"), ("team", "a/b")] {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("k.yaml"), object(namespace, name)).expect("write");
            let refused = load(dir.path());
            assert!(matches!(&refused, Err(Error::Io(m)) if m.contains("RFC 1123")), "{namespace}/{name}: {refused:?}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("k.yaml"), object("team", "ci-push")).expect("write");
        let (_, _, keys, _) = load(dir.path()).expect("a valid name loads");
        assert_eq!(keys.len(), 1);
    }
}
