//! In-use protection: the operator watches Pods in every namespace and writes the digests they
//! reference to `digests_in_use`, which retention and the collector never delete. A Pod counts
//! until it has finished (phase Succeeded or Failed); its digests are those of images named by
//! digest (`image: registry/app@sha256:…`) and those its containers report running (`imageID`,
//! which a tag pull resolves to the digest).

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use kube::{Api, Client, ResourceExt as _};

/// How often the set is written even when no Pod changed (it proves it is current).
const HEARTBEAT: Duration = Duration::from_secs(60);
/// How long to gather Pod changes before writing.
const DEBOUNCE: Duration = Duration::from_secs(1);

/// The digest an image reference or image ID names (`…@sha256:<hex>`), if it names one.
pub fn digest_of(reference: &str) -> Option<String> {
    let (_, digest) = reference.rsplit_once('@')?;
    digest.parse::<aerugo_oci::Digest>().ok().map(|d| d.to_string())
}

/// The digests a Pod uses; none once it has finished.
pub fn digests(pod: &Pod) -> Vec<String> {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return Vec::new();
    }
    let mut found = Vec::new();
    if let Some(spec) = &pod.spec {
        let images = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .filter_map(|c| c.image.as_deref())
            .chain(spec.ephemeral_containers.iter().flatten().filter_map(|c| c.image.as_deref()));
        found.extend(images.filter_map(digest_of));
    }
    if let Some(status) = &pod.status {
        let ids = status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten())
            .chain(status.ephemeral_container_statuses.iter().flatten())
            .map(|s| s.image_id.as_str());
        found.extend(ids.filter_map(digest_of));
    }
    found.sort();
    found.dedup();
    found
}

/// digest → (Pods using it, one of them).
pub fn in_use<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> BTreeMap<String, (i32, String)> {
    let mut set: BTreeMap<String, (i32, String)> = BTreeMap::new();
    for pod in pods {
        let name = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
        for digest in digests(pod) {
            let entry = set.entry(digest).or_insert((0, name.clone()));
            entry.0 += 1;
        }
    }
    set
}

/// Watches Pods and keeps `digests_in_use` current until the process ends.
pub async fn protect(client: Client, db: aerugo_db::Pool) {
    let (reader, writer) = reflector::store::<Pod>();
    let changed = std::sync::Arc::new(tokio::sync::Notify::new());
    let watch = {
        let changed = changed.clone();
        reflector(writer, watcher(Api::<Pod>::all(client), watcher::Config::default()))
            .default_backoff()
            .touched_objects()
            .for_each(move |event| {
                match event {
                    Ok(_) => changed.notify_one(),
                    Err(e) => tracing::warn!(error = %e, "watching Pods failed; retrying"),
                }
                std::future::ready(())
            })
    };
    let watch = tokio::spawn(watch);
    if reader.wait_until_ready().await.is_err() {
        return;
    }
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut written: Option<BTreeMap<String, (i32, String)>> = None;
    while !watch.is_finished() {
        let set = in_use(reader.state().iter().map(AsRef::as_ref));
        let changed_set = written.as_ref() != Some(&set);
        let result = async {
            let client = db.get().await?;
            if changed_set {
                aerugo_db::gc::replace_in_use(&client, &set).await
            } else {
                aerugo_db::gc::confirm_in_use(&client).await
            }
        }
        .await;
        match result {
            Ok(()) => {
                if changed_set {
                    tracing::info!(digests = set.len(), "digests in use by Pods written");
                }
                written = Some(set);
            }
            Err(e) => tracing::warn!(error = %e, "writing the digests Pods use failed; retrying"),
        }
        tokio::select! {
            () = changed.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = heartbeat.tick() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_come_from_images_by_digest_and_running_image_ids() {
        let hex = "a".repeat(64);
        let other = "b".repeat(64);
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web", "namespace": "team" },
            "spec": {
                "containers": [ { "name": "app", "image": format!("registry.test/acme/app@sha256:{hex}") },
                                { "name": "side", "image": "registry.test/acme/side:1.0" } ],
                "initContainers": [ { "name": "init", "image": "busybox" } ],
            },
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    { "name": "side", "image": "registry.test/acme/side:1.0", "imageID": format!("docker-pullable://registry.test/acme/side@sha256:{other}"),
                      "ready": true, "restartCount": 0 },
                    { "name": "app", "image": "x", "imageID": "sha256:cccc", "ready": true, "restartCount": 0 },
                ],
            },
        }))
        .expect("pod");
        assert_eq!(digests(&pod), [format!("sha256:{hex}"), format!("sha256:{other}")]);
        let set = in_use([&pod, &pod]);
        assert_eq!(set[&format!("sha256:{hex}")], (2, "team/web".to_owned()));
        let mut done = pod.clone();
        done.status.as_mut().expect("status").phase = Some("Succeeded".into());
        assert!(digests(&done).is_empty());
        assert_eq!(digest_of("app@sha256:xyz"), None);
        let sha512 = format!("sha512:{}", "c".repeat(128));
        assert_eq!(digest_of(&format!("registry.test/acme/app@{sha512}")), Some(sha512));
    }
}
