//! Contract tests: what the operator relies on from the Kubernetes API, written as functions over
//! a `kube::Client` and a namespace they may use. The same functions run against the emulator
//! (in process and over loopback HTTP) and, with `KUBE_E2E=1`, against a real cluster, so drift
//! between the emulator and the API server shows up as a failing contract.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use futures_util::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Error};
use serde_json::{Value, json};

/// The contract CRD: a namespaced `Gadget` with a status subresource, defaults, validation and a
/// `map` list.
pub fn gadget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "gadgets.contract.aerugo.io" },
        "spec": {
            "group": "contract.aerugo.io",
            "names": { "kind": "Gadget", "plural": "gadgets", "singular": "gadget", "listKind": "GadgetList", "shortNames": ["gd"] },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["color"],
                            "properties": {
                                "color": { "type": "string", "enum": ["red", "green", "blue"] },
                                "size": { "type": "integer", "minimum": 1, "maximum": 10, "default": 3 },
                                "note": { "type": "string" },
                                "ports": {
                                    "type": "array",
                                    "x-kubernetes-list-type": "map",
                                    "x-kubernetes-list-map-keys": ["name"],
                                    "items": {
                                        "type": "object",
                                        "required": ["name"],
                                        "properties": { "name": { "type": "string" }, "port": { "type": "integer" } }
                                    }
                                },
                                "extra": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
                            }
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "observedGeneration": { "type": "integer" },
                                "phase": { "type": "string" }
                            }
                        }
                    }
                }}
            }]
        }
    })
}

fn gadget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("contract.aerugo.io", "v1", "Gadget"), "gadgets")
}

/// Installs the contract CRD (idempotent) and waits until it is established.
pub async fn install_crd(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(gadget_crd())?;
    crds.patch("gadgets.contract.aerugo.io", &PatchParams::apply("contract-tests").force(), &Patch::Apply(&crd))
        .await?;
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(crds, "gadgets.contract.aerugo.io", conditions::is_crd_established()),
    )
    .await
    .context("the CRD was not established")??;
    Ok(())
}

/// Creates the namespace a contract runs in.
pub async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({ "metadata": { "name": name } }))?)
        .await?;
    Ok(())
}

/// Deletes it again (best effort: a real cluster finishes asynchronously).
pub async fn delete_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(name, &DeleteParams::default()).await;
}

fn gadgets(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &gadget_resource())
}

fn gadget(name: &str, spec: Value) -> Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "contract.aerugo.io/v1",
        "kind": "Gadget",
        "metadata": { "name": name },
        "spec": spec,
    }))?)
}

fn api_error(result: Result<impl std::fmt::Debug, Error>) -> Result<(u16, String, Value)> {
    match result {
        Err(Error::Api(status)) => Ok((status.code, status.reason.clone(), serde_json::to_value(&status)?)),
        other => bail!("expected an API error, got {other:?}"),
    }
}

fn rv(obj: &DynamicObject) -> Result<u64> {
    obj.metadata
        .resource_version
        .as_deref()
        .context("no resourceVersion")?
        .parse()
        .context("resourceVersion is not a number")
}

fn generation(obj: &DynamicObject) -> i64 {
    obj.metadata.generation.unwrap_or_default()
}

/// Create, get, replace and their errors: one resourceVersion per write, 409 on a stale one,
/// 422 without one on a custom resource, 409 on a duplicate, 404 for missing objects and
/// namespaces.
pub async fn crud_and_conflicts(client: Client, ns: String) -> Result<()> {
    let ns = ns.as_str();
    let api = gadgets(&client, ns);
    let created = api.create(&PostParams::default(), &gadget("one", json!({ "color": "red" }))?).await?;
    ensure!(generation(&created) == 1, "generation starts at 1");
    ensure!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let fetched = api.get("one").await?;
    ensure!(rv(&fetched)? == rv(&created)?);

    let mut first = fetched.clone();
    first.data["spec"]["note"] = json!("first");
    let replaced = api.replace("one", &PostParams::default(), &first).await?;
    ensure!(rv(&replaced)? > rv(&created)?, "every write moves the resourceVersion");

    let mut stale = fetched.clone();
    stale.data["spec"]["note"] = json!("stale");
    let (code, reason, _) = api_error(api.replace("one", &PostParams::default(), &stale).await)?;
    ensure!((code, reason.as_str()) == (409, "Conflict"), "stale update: {code} {reason}");

    let mut unconditional = replaced.clone();
    unconditional.metadata.resource_version = None;
    let (code, _, _) = api_error(api.replace("one", &PostParams::default(), &unconditional).await)?;
    ensure!(code == 422, "a custom resource refuses an unconditional update: {code}");

    let (code, reason, _) =
        api_error(api.create(&PostParams::default(), &gadget("one", json!({ "color": "red" }))?).await)?;
    ensure!((code, reason.as_str()) == (409, "AlreadyExists"));
    let (code, reason, _) = api_error(api.get("missing").await)?;
    ensure!((code, reason.as_str()) == (404, "NotFound"));
    let elsewhere = gadgets(&client, &format!("{ns}-missing"));
    let (code, _, _) =
        api_error(elsewhere.create(&PostParams::default(), &gadget("x", json!({ "color": "red" }))?).await)?;
    ensure!(code == 404, "creating into a missing namespace: {code}");
    ensure!(api.get_opt("missing").await?.is_none());
    Ok(())
}

/// Generation moves with the spec only; status is a subresource in both directions.
pub async fn generation_and_status(client: Client, ns: String) -> Result<()> {
    let ns = ns.as_str();
    let api = gadgets(&client, ns);
    let mut obj = gadget("g", json!({ "color": "green" }))?;
    obj.data["status"] = json!({ "phase": "dropped" });
    let created = api.create(&PostParams::default(), &obj).await?;
    ensure!(created.data.get("status").is_none_or(Value::is_null), "status is dropped on create");

    let labelled = api
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "a": "b" }, "finalizers": ["x.io/f"] } })),
        )
        .await?;
    ensure!(generation(&labelled) == 1, "metadata changes do not bump generation");

    let status = api
        .patch_status(
            "g",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "status": { "phase": "Ready", "observedGeneration": 1 }, "spec": { "color": "blue" } }),
            ),
        )
        .await?;
    ensure!(status.data["status"]["phase"] == "Ready");
    ensure!(status.data["spec"]["color"] == "green", "a status write changes only .status");
    ensure!(generation(&status) == 1, "status writes do not bump generation");

    let spec = api
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "color": "blue" }, "status": { "phase": "Ignored" } })),
        )
        .await?;
    ensure!(generation(&spec) == 2, "a spec change bumps generation");
    ensure!(spec.data["status"]["phase"] == "Ready", "the main resource ignores .status");

    let again = api.patch("g", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "color": "blue" } }))).await?;
    ensure!(rv(&again)? == rv(&spec)?, "a write that changes nothing is not stored");
    api.patch("g", &PatchParams::default(), &Patch::Merge(json!({ "metadata": { "finalizers": null } }))).await?;
    Ok(())
}

/// The finalizer protocol kube-runtime's `finalizer()` drives with JSON patches.
pub async fn finalizers_and_deletion(client: Client, ns: String) -> Result<()> {
    let ns = ns.as_str();
    let api = gadgets(&client, ns);
    api.create(&PostParams::default(), &gadget("f", json!({ "color": "red" }))?).await?;
    // kube-runtime: test that the list is absent (null), then add it.
    let add: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": "/metadata/finalizers", "value": null },
        { "op": "add", "path": "/metadata/finalizers", "value": ["contract.aerugo.io/cleanup"] }
    ]))?;
    let with = api.patch("f", &PatchParams::default(), &Patch::Json::<()>(add.clone())).await?;
    ensure!(with.metadata.finalizers.as_deref() == Some(&["contract.aerugo.io/cleanup".to_owned()][..]));
    let (code, _, _) = api_error(api.patch("f", &PatchParams::default(), &Patch::Json::<()>(add)).await)?;
    ensure!(code == 422, "a failed JSON-patch test is 422: {code}");

    let deleted = api.delete("f", &DeleteParams::default()).await?;
    let marked = deleted.left().context("an object with finalizers is returned, not a Status")?;
    ensure!(marked.metadata.deletion_timestamp.is_some(), "delete marks the object");
    ensure!(generation(&marked) == generation(&with) + 1, "marking for deletion bumps generation");
    ensure!(api.get("f").await?.metadata.deletion_timestamp.is_some(), "the object stays while finalizers remain");
    let (code, _, _) = api_error(
        api.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "finalizers": ["contract.aerugo.io/cleanup", "new.io/x"] } })),
        )
        .await,
    )?;
    ensure!(code == 422, "no new finalizers on a terminating object: {code}");
    let remove: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": "/metadata/finalizers/0", "value": "contract.aerugo.io/cleanup" },
        { "op": "remove", "path": "/metadata/finalizers/0" }
    ]))?;
    api.patch("f", &PatchParams::default(), &Patch::Json::<()>(remove)).await?;
    ensure!(api.get_opt("f").await?.is_none(), "emptying the finalizers removes the object");

    api.create(&PostParams::default(), &gadget("plain", json!({ "color": "red" }))?).await?;
    api.delete("plain", &DeleteParams::default()).await?;
    ensure!(api.get_opt("plain").await?.is_none(), "without finalizers, delete removes");
    let created = api.create(&PostParams::default(), &gadget("pre", json!({ "color": "red" }))?).await?;
    let wrong = DeleteParams {
        preconditions: Some(kube::api::Preconditions { uid: Some("wrong".into()), resource_version: None }),
        ..Default::default()
    };
    let (code, _, _) = api_error(api.delete("pre", &wrong).await)?;
    ensure!(code == 409, "a failed precondition is 409: {code}");
    let right = DeleteParams {
        preconditions: Some(kube::api::Preconditions { uid: created.metadata.uid.clone(), resource_version: None }),
        ..Default::default()
    };
    api.delete("pre", &right).await?;
    Ok(())
}

/// Patch formats: strategic merge is refused on a custom resource; merge patch null removes.
pub async fn patch_formats(client: Client, ns: String) -> Result<()> {
    let ns = ns.as_str();
    let api = gadgets(&client, ns);
    api.create(&PostParams::default(), &gadget("p", json!({ "color": "red", "note": "x" }))?).await?;
    let (code, _, _) = api_error(
        api.patch("p", &PatchParams::default(), &Patch::Strategic(json!({ "spec": { "note": "y" } }))).await,
    )?;
    ensure!(code == 415, "strategic merge on a CR: {code}");
    let removed = api.patch("p", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "note": null } }))).await?;
    ensure!(removed.data["spec"].get("note").is_none());
    // Strategic merge on a built-in kind is accepted.
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    configmaps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "c" }, "data": { "a": "1" } }))?,
        )
        .await?;
    let patched =
        configmaps.patch("c", &PatchParams::default(), &Patch::Strategic(json!({ "data": { "b": "2" } }))).await?;
    ensure!(patched.data.as_ref().is_some_and(|d| d.len() == 2));
    Ok(())
}

/// Structural schema: unknown fields pruned, defaults applied, invalid values refused with causes.
pub async fn schema_pruning_defaults_validation(client: Client, ns: String) -> Result<()> {
    let ns = ns.as_str();
    let api = gadgets(&client, ns);
    let created = api
        .create(
            &PostParams::default(),
            &gadget("s", json!({ "color": "red", "unknown": 1, "extra": { "kept": true } }))?,
        )
        .await?;
    ensure!(created.data["spec"].get("unknown").is_none(), "unknown fields are pruned");
    ensure!(created.data["spec"]["extra"]["kept"] == true, "preserve-unknown-fields keeps them");
    ensure!(created.data["spec"]["size"] == 3, "defaults are applied");
    let (code, reason, status) =
        api_error(api.create(&PostParams::default(), &gadget("bad", json!({ "color": "purple", "size": 11 }))?).await)?;
    ensure!((code, reason.as_str()) == (422, "Invalid"), "{code} {reason}");
    let causes = status["details"]["causes"].as_array().context("causes")?;
    let fields: Vec<&str> = causes.iter().filter_map(|c| c["field"].as_str()).collect();
    ensure!(fields.contains(&"spec.color") && fields.contains(&"spec.size"), "causes name the fields: {fields:?}");
    let (code, _, _) = api_error(api.create(&PostParams::default(), &gadget("none", json!({}))?).await)?;
    ensure!(code == 422, "a required field is required");
    Ok(())
}

/// Lists: pagination with continue tokens, label and field selectors.
pub async fn lists_and_selectors(client: Client, ns: String) -> Result<()> {
    let ns = ns.as_str();
    let api = gadgets(&client, ns);
    for (i, tier) in ["gold", "gold", "silver", "bronze", "gold"].iter().enumerate() {
        let mut obj = gadget(&format!("item-{i}"), json!({ "color": "red" }))?;
        obj.metadata.labels = Some([("tier".to_owned(), (*tier).to_owned())].into());
        api.create(&PostParams::default(), &obj).await?;
    }
    let first = api.list(&ListParams::default().limit(2)).await?;
    ensure!(first.items.len() == 2);
    let token = first.metadata.continue_.clone().context("a continue token")?;
    ensure!(first.metadata.resource_version.as_deref().is_some_and(|r| !r.is_empty()));
    let second = api.list(&ListParams::default().limit(2).continue_token(&token)).await?;
    let third = api
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(second.metadata.continue_.as_deref().context("second token")?),
        )
        .await?;
    ensure!(third.items.len() == 1 && third.metadata.continue_.as_deref().is_none_or(str::is_empty));
    let names: Vec<String> =
        first.items.iter().chain(&second.items).chain(&third.items).filter_map(|o| o.metadata.name.clone()).collect();
    ensure!(names == ["item-0", "item-1", "item-2", "item-3", "item-4"], "pages in name order: {names:?}");

    let gold = api.list(&ListParams::default().labels("tier=gold")).await?;
    ensure!(gold.items.len() == 3);
    let not_gold = api.list(&ListParams::default().labels("tier notin (gold),tier")).await?;
    ensure!(not_gold.items.len() == 2);
    let by_name = api.list(&ListParams::default().fields("metadata.name=item-3")).await?;
    ensure!(by_name.items.len() == 1);
    let (code, _, _) = api_error(api.list(&ListParams::default().fields("spec.color=red")).await)?;
    ensure!(code == 400, "an unsupported field selector is 400: {code}");
    let (code, _, _) = api_error(api.list(&ListParams::default().labels("tier in (gold")).await)?;
    ensure!(code == 400, "a malformed label selector is 400: {code}");

    let deleted = api.delete_collection(&DeleteParams::default(), &ListParams::default().labels("tier=gold")).await?;
    ensure!(deleted.left().is_some_and(|l| l.items.len() == 3), "deletecollection returns what it deleted");
    ensure!(api.list(&ListParams::default()).await?.items.len() == 2);
    Ok(())
}

/// Watch from a resourceVersion: every change in order, one event per line, with the
/// resourceVersions; a label selector turns a change out of the selection into DELETED.
pub async fn watch_streams_changes(client: Client, ns: String) -> Result<()> {
    let ns = ns.as_str();
    let api = gadgets(&client, ns);
    let start = api.list(&ListParams::default()).await?.metadata.resource_version.context("list rv")?;
    let mut events = api.watch(&WatchParams::default().timeout(20), &start).await?.boxed();
    let mut selected = api.watch(&WatchParams::default().labels("watched=yes").timeout(20), &start).await?.boxed();

    let mut obj = gadget("w", json!({ "color": "red" }))?;
    obj.metadata.labels = Some([("watched".to_owned(), "yes".to_owned())].into());
    let created = api.create(&PostParams::default(), &obj).await?;
    api.patch("w", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "note": "n" } }))).await?;
    api.patch("w", &PatchParams::default(), &Patch::Merge(json!({ "metadata": { "labels": { "watched": "no" } } })))
        .await?;
    api.delete("w", &DeleteParams::default()).await?;

    let mut kinds = Vec::new();
    let mut last_rv = 0;
    while kinds.len() < 4 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.try_next()).await??.context("stream ended")?;
        let (kind, obj) = match event {
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => bail!("watch error: {e:?}"),
        };
        let this_rv = rv(&obj)?;
        ensure!(this_rv > last_rv, "resourceVersions increase along the stream");
        last_rv = this_rv;
        kinds.push(kind);
    }
    ensure!(kinds == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"], "{kinds:?}");
    ensure!(last_rv > rv(&created)?);

    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(10), selected.try_next()).await??.context("stream ended")? {
            WatchEvent::Added(_) => seen.push("ADDED"),
            WatchEvent::Modified(_) => seen.push("MODIFIED"),
            WatchEvent::Deleted(_) => seen.push("DELETED"),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => bail!("watch error: {e:?}"),
        }
    }
    ensure!(seen == ["ADDED", "MODIFIED", "DELETED"], "leaving the selection is DELETED: {seen:?}");
    Ok(())
}

/// A watch from a resourceVersion the server no longer has: 200 and an ERROR event with 410.
pub async fn watch_too_old_is_an_error_event(client: Client, ns: String) -> Result<()> {
    let ns = ns.as_str();
    let api = gadgets(&client, ns);
    // Make sure the cluster has moved well past resourceVersion 1.
    api.create(&PostParams::default(), &gadget("old", json!({ "color": "red" }))?).await?;
    let mut stream = api.watch(&WatchParams::default().timeout(10), "1").await?.boxed();
    match tokio::time::timeout(Duration::from_secs(10), stream.next()).await?.context("no event")? {
        Ok(WatchEvent::Error(e)) => ensure!(e.code == 410, "code {}", e.code),
        Err(Error::Api(s)) => ensure!(s.code == 410, "code {}", s.code),
        other => bail!("expected a 410 ERROR event, got {other:?}"),
    }
    Ok(())
}

/// A watch with `timeoutSeconds` ends on its own.
pub async fn watch_timeout_ends_the_stream(client: Client, ns: String) -> Result<()> {
    let ns = ns.as_str();
    let api = gadgets(&client, ns);
    let rv = api.list(&ListParams::default()).await?.metadata.resource_version.context("rv")?;
    let mut stream = api.watch(&WatchParams::default().timeout(1).disable_bookmarks(), &rv).await?.boxed();
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(event) = stream.next().await {
            event?;
        }
        Ok::<_, Error>(())
    })
    .await;
    ensure!(ended.is_ok(), "the stream ended after its timeout");
    Ok(())
}

/// Server-side apply: create, shared and conflicting ownership, force, removal of fields a
/// manager stops applying, keyed lists merged by key, and status applied on its subresource.
pub async fn server_side_apply(client: Client, ns: String) -> Result<()> {
    let ns = ns.as_str();
    let api = gadgets(&client, ns);
    let config = |spec: Value| json!({ "apiVersion": "contract.aerugo.io/v1", "kind": "Gadget", "metadata": { "name": "a" }, "spec": spec });
    let created = api
        .patch(
            "a",
            &PatchParams::apply("alpha"),
            &Patch::Apply(config(json!({ "color": "red", "note": "mine", "ports": [{ "name": "http", "port": 80 }] }))),
        )
        .await?;
    ensure!(generation(&created) == 1, "apply creates");
    let managers: Vec<String> =
        created.metadata.managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect();
    ensure!(managers == ["alpha"], "{managers:?}");

    let (code, reason, status) = api_error(
        api.patch("a", &PatchParams::apply("beta"), &Patch::Apply(config(json!({ "color": "blue" })))).await,
    )?;
    ensure!((code, reason.as_str()) == (409, "Conflict"), "{code} {reason}");
    let causes = status["details"]["causes"].as_array().context("causes")?;
    ensure!(causes.iter().any(|c| c["reason"] == "FieldManagerConflict" && c["field"] == ".spec.color"), "{causes:?}");

    // Same value: shared ownership, no conflict. Another key of a map list merges in.
    let shared = api
        .patch(
            "a",
            &PatchParams::apply("beta"),
            &Patch::Apply(config(json!({ "color": "red", "ports": [{ "name": "metrics", "port": 9090 }] }))),
        )
        .await?;
    let ports = shared.data["spec"]["ports"].as_array().context("ports")?;
    ensure!(ports.len() == 2, "map lists merge by key: {ports:?}");

    let forced = api
        .patch(
            "a",
            &PatchParams::apply("beta").force(),
            &Patch::Apply(config(json!({ "color": "blue", "ports": [{ "name": "metrics", "port": 9090 }] }))),
        )
        .await?;
    ensure!(forced.data["spec"]["color"] == "blue");

    // alpha stops applying `note` and its port: they go; `color` is beta's now.
    let trimmed =
        api.patch("a", &PatchParams::apply("alpha"), &Patch::Apply(config(json!({ "color": "blue" })))).await?;
    ensure!(trimmed.data["spec"].get("note").is_none(), "a field its manager stopped applying is removed");
    let ports = trimmed.data["spec"]["ports"].as_array().context("ports")?;
    ensure!(ports.len() == 1 && ports[0]["name"] == "metrics", "{ports:?}");

    let status = api
        .patch_status(
            "a",
            &PatchParams::apply("alpha").force(),
            &Patch::Apply(json!({ "apiVersion": "contract.aerugo.io/v1", "kind": "Gadget", "metadata": { "name": "a" }, "status": { "phase": "Ready" } })),
        )
        .await?;
    ensure!(status.data["status"]["phase"] == "Ready");
    ensure!(generation(&status) == generation(&trimmed), "status apply leaves generation");
    let entries = status.metadata.managed_fields.clone().unwrap_or_default();
    ensure!(
        entries.iter().any(|m| m.manager.as_deref() == Some("alpha") && m.subresource.as_deref() == Some("status")),
        "status fields are managed under the status subresource"
    );
    // An update by another writer takes ownership; the next apply of the old value conflicts.
    api.patch(
        "a",
        &PatchParams { field_manager: Some("editor".into()), ..Default::default() },
        &Patch::Merge(json!({ "spec": { "size": 7 } })),
    )
    .await?;
    let (code, _, _) = api_error(
        api.patch("a", &PatchParams::apply("alpha"), &Patch::Apply(config(json!({ "color": "blue", "size": 3 }))))
            .await,
    )?;
    ensure!(code == 409, "applying over an updater's field conflicts: {code}");
    Ok(())
}

/// `dryRun=All` answers without storing.
pub async fn dry_run_stores_nothing(client: Client, ns: String) -> Result<()> {
    let ns = ns.as_str();
    let api = gadgets(&client, ns);
    let answer = api
        .create(&PostParams { dry_run: true, ..Default::default() }, &gadget("dry", json!({ "color": "red" }))?)
        .await?;
    ensure!(answer.data["spec"]["size"] == 3, "a dry run is defaulted and validated");
    ensure!(api.get_opt("dry").await?.is_none(), "a dry run stores nothing");
    Ok(())
}

/// Built-in kinds the operator writes: a Secret's `stringData` becomes base64 `data`.
pub async fn secret_string_data(client: Client, ns: String) -> Result<()> {
    let ns = ns.as_str();
    let secrets: Api<Secret> = Api::namespaced(client, ns);
    let created = secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "pull" }, "type": "kubernetes.io/dockerconfigjson", "stringData": { ".dockerconfigjson": "{}" } }))?,
        )
        .await?;
    let data = created.data.context("data")?;
    ensure!(data.get(".dockerconfigjson").is_some_and(|v| v.0 == b"{}"), "stringData is folded into data");
    ensure!(created.string_data.is_none());
    Ok(())
}

/// `/version` answers.
pub async fn version_answers(client: Client, _ns: String) -> Result<()> {
    let info = client.apiserver_version().await?;
    ensure!(info.major == "1" && !info.git_version.is_empty());
    Ok(())
}

/// Runs one contract in a fresh namespace.
pub async fn run<F, Fut>(client: Client, test: &str, contract: F) -> Result<()>
where
    F: FnOnce(Client, String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    install_crd(&client).await?;
    let ns = format!("contract-{}-{}", test.replace('_', "-"), &uuid::Uuid::new_v4().simple().to_string()[..6]);
    create_namespace(&client, &ns).await?;
    let result = contract(client.clone(), ns.clone()).await;
    delete_namespace(&client, &ns).await;
    result.map_err(|e| anyhow!("contract {test}: {e:#}"))
}
