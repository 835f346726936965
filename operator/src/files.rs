//! File mode: reconcile a directory of Organization, Repository and ApiKey YAML into Postgres
//! with no cluster. ApiKey Secrets are written as manifests under the secrets directory; each
//! object's resulting `Ready` condition is reported. Objects removed from the directory are not
//! deleted (file mode only applies).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aerugo_crds::{ApiKey, Organization, Repository};
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
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

/// The aerugo.io objects in `dir` (recursively), with namespace and UID filled in.
pub fn load(dir: &Path) -> Result<(Vec<Organization>, Vec<Repository>, Vec<ApiKey>)> {
    let mut paths = Vec::new();
    yaml_files(dir, &mut paths)?;
    paths.sort();
    let (mut orgs, mut repos, mut keys) = (Vec::new(), Vec::new(), Vec::new());
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
                _ => {
                    tracing::info!(%kind, %namespace, %name, path = %path.display(), "skipped: reconciled only in a cluster")
                }
            }
        }
    }
    Ok((orgs, repos, keys))
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
        });
    }
}

/// Reconciles every object of `dir`: organizations, then API keys, then repositories (whose
/// grants name keys).
pub async fn apply(db: aerugo_db::Pool, dir: &Path, secrets_dir: PathBuf, settings: Settings) -> Result<Vec<Outcome>> {
    let (orgs, repos, keys) = load(dir)?;
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
    if let World::Files(files) = &ctx.world {
        for path in files.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
            tracing::info!(path = %path.display(), "wrote a Secret manifest");
        }
    }
    Ok(out)
}
