//! The default Registry of a Helm release. Helm cannot install a Registry in the same release
//! as the CRD that defines it, so the chart renders the Registry into a ConfigMap mounted into
//! the operator, which applies it (server-side apply) once it leads. The Registry is owned by
//! that ConfigMap: when the release drops the ConfigMap, Kubernetes garbage collection removes
//! the Registry and, through its own owner references, the data plane.

use std::path::PathBuf;
use std::time::Duration;

use aerugo_crds::Registry;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource as _, ResourceExt as _};
use serde_json::json;

use crate::error::{Error, Result};
use crate::world::MANAGER;

/// Where the default Registry comes from.
#[derive(Debug, Clone)]
pub struct DefaultRegistry {
    /// The Registry manifest (YAML).
    pub file: PathBuf,
    /// The ConfigMap holding it, in `namespace`: the Registry's owner.
    pub configmap: Option<String>,
    /// The operator's namespace, where the Registry and its ConfigMap live.
    pub namespace: String,
}

/// Reads and checks the manifest: a Registry in the operator's namespace (an owner reference
/// cannot cross namespaces).
pub fn load(default: &DefaultRegistry) -> Result<Registry> {
    let path = default.file.display();
    let text = std::fs::read_to_string(&default.file).map_err(|e| Error::Io(format!("{path}: {e}")))?;
    let mut registry: Registry =
        serde_saphyr::from_str(&text).map_err(|e| Error::InvalidSpec(format!("{path}: not a Registry: {e}")))?;
    match registry.namespace() {
        None => registry.metadata.namespace = Some(default.namespace.clone()),
        Some(ns) if ns == default.namespace => {}
        Some(ns) => {
            return Err(Error::InvalidSpec(format!(
                "{path}: the default Registry is in namespace {ns:?}, not the operator's {:?}",
                default.namespace
            )));
        }
    }
    if registry.metadata.name.as_deref().unwrap_or_default().is_empty() {
        return Err(Error::InvalidSpec(format!("{path}: the default Registry has no name")));
    }
    Ok(registry)
}

/// Applies the default Registry once.
pub async fn apply(client: &kube::Client, default: &DefaultRegistry) -> Result<()> {
    let registry = load(default)?;
    let mut body = json!({
        "apiVersion": Registry::api_version(&()),
        "kind": Registry::kind(&()),
        "metadata": { "name": registry.name_any(), "namespace": default.namespace },
        "spec": registry.spec,
    });
    if let Some(name) = &default.configmap {
        let owner = Api::<ConfigMap>::namespaced(client.clone(), &default.namespace).get(name).await?;
        body["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": name,
            "uid": owner.uid().unwrap_or_default(),
        }]);
    }
    Api::<Registry>::namespaced(client.clone(), &default.namespace)
        .patch(&registry.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body))
        .await?;
    Ok(())
}

/// Applies the default Registry, retrying (the CRD may not be established yet) until it is
/// in place; an invalid manifest is reported once and left alone.
pub async fn keep_applying(client: kube::Client, default: DefaultRegistry) {
    loop {
        match apply(&client, &default).await {
            Ok(()) => {
                tracing::info!(file = %default.file.display(), "default Registry applied");
                return;
            }
            Err(e @ Error::InvalidSpec(_)) => {
                tracing::error!(error = %e, "default Registry not applied");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "default Registry not applied yet; retrying in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}
