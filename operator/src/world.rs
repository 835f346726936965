//! Where the operator reads the objects it references and writes Secrets: the Kubernetes API,
//! or (file mode) the objects loaded from a directory and Secret manifests written to files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use aerugo_crds::{ApiKey, Organization};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt as _};

use crate::error::{Error, Result};

/// The field manager of every write the operator makes.
pub const MANAGER: &str = "aerugo-operator";

/// The operator's view of the world.
pub enum World {
    /// A cluster.
    Cluster(Client),
    /// A directory of YAML files.
    Files(Files),
}

/// File mode: the objects read from the directory, and where Secrets go.
pub struct Files {
    /// Organizations, by (namespace, name).
    pub organizations: BTreeMap<(String, String), Organization>,
    /// API keys, by (namespace, name).
    pub api_keys: BTreeMap<(String, String), ApiKey>,
    /// `<dir>/<namespace>/<name>.yaml` holds each Secret.
    pub secrets_dir: PathBuf,
    /// Secrets written in this run (for the summary).
    pub written: Mutex<Vec<PathBuf>>,
}

impl World {
    /// The Organization `name` of `namespace`.
    pub async fn organization(&self, namespace: &str, name: &str) -> Result<Option<Organization>> {
        match self {
            World::Cluster(client) => {
                Ok(Api::<Organization>::namespaced(client.clone(), namespace).get_opt(name).await?)
            }
            World::Files(files) => Ok(files.organizations.get(&(namespace.to_owned(), name.to_owned())).cloned()),
        }
    }

    /// The ApiKey `name` of `namespace`.
    pub async fn api_key(&self, namespace: &str, name: &str) -> Result<Option<ApiKey>> {
        match self {
            World::Cluster(client) => Ok(Api::<ApiKey>::namespaced(client.clone(), namespace).get_opt(name).await?),
            World::Files(files) => Ok(files.api_keys.get(&(namespace.to_owned(), name.to_owned())).cloned()),
        }
    }

    /// The Secret `name` of `namespace`.
    pub async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>> {
        match self {
            World::Cluster(client) => Ok(Api::<Secret>::namespaced(client.clone(), namespace).get_opt(name).await?),
            World::Files(files) => {
                let path = files.secret_path(namespace, name);
                match std::fs::read_to_string(&path) {
                    Ok(text) => serde_saphyr::from_str(&text)
                        .map(Some)
                        .map_err(|e| Error::Io(format!("{}: {e}", path.display()))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Error::Io(format!("{}: {e}", path.display()))),
                }
            }
        }
    }

    /// Writes `secret` (server-side apply in a cluster, a manifest file otherwise).
    pub async fn put_secret(&self, secret: &Secret) -> Result<()> {
        let (namespace, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
        match self {
            World::Cluster(client) => {
                Api::<Secret>::namespaced(client.clone(), &namespace)
                    .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(secret))
                    .await?;
                Ok(())
            }
            World::Files(files) => {
                let path = files.secret_path(&namespace, &name);
                let mut value = serde_json::to_value(secret).map_err(|e| Error::Io(e.to_string()))?;
                if let Some(meta) = value.get_mut("metadata").and_then(serde_json::Value::as_object_mut) {
                    // Owner references name objects of a cluster; a file has none.
                    meta.remove("ownerReferences");
                }
                // Plain scalars, not folded blocks: the key stays on one line for `grep` and `awk`.
                let mut options = serde_saphyr::SerializerOptions::default();
                options.prefer_block_scalars = false;
                let yaml =
                    serde_saphyr::to_string_with_options(&value, options).map_err(|e| Error::Io(e.to_string()))?;
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| Error::Io(format!("{}: {e}", parent.display())))?;
                }
                write_private(&path, yaml.as_bytes()).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
                files.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(path);
                Ok(())
            }
        }
    }

    /// Deletes the Secret `name` of `namespace`, if it exists.
    pub async fn delete_secret(&self, namespace: &str, name: &str) -> Result<()> {
        match self {
            World::Cluster(client) => {
                match Api::<Secret>::namespaced(client.clone(), namespace).delete(name, &DeleteParams::default()).await
                {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            World::Files(files) => match std::fs::remove_file(files.secret_path(namespace, name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io(e.to_string())),
                _ => Ok(()),
            },
        }
    }
}

impl Files {
    fn secret_path(&self, namespace: &str, name: &str) -> PathBuf {
        self.secrets_dir.join(namespace).join(format!("{name}.yaml"))
    }
}

/// Writes a file only its owner can read (it holds a key).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(bytes)
}
