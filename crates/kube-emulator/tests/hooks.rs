//! What only the emulator can do or show: CRD installation and removal, discovery, the test
//! hooks (faults, compaction, dropped watches, the request record, bookmarks, waiting), and
//! `kubectl` driving the loopback server.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

use std::time::Duration;

use aerugo_kube_emulator::{Emulator, Fault, Verb};
use futures_util::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use kube::discovery::Discovery;
use serde_json::{Value, json};

fn widget_crd(group: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("widgets.{group}") },
        "spec": {
            "group": group,
            "names": { "kind": "Widget", "plural": "widgets", "shortNames": ["wd"] },
            "scope": "Namespaced",
            "versions": [
                { "name": "v1", "served": true, "storage": true, "subresources": { "status": {} },
                  "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } },
                { "name": "v1beta1", "served": true, "storage": false,
                  "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } }
            ]
        }
    })
}

fn widgets(client: &kube::Client, version: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("hooks.aerugo.io", version, "Widget");
    Api::namespaced_with(client.clone(), "default", &ApiResource::from_gvk_with_plural(&gvk, "widgets"))
}

fn widget(name: &str) -> DynamicObject {
    serde_json::from_value(json!({ "apiVersion": "hooks.aerugo.io/v1", "kind": "Widget", "metadata": { "name": name }, "spec": { "n": 1 } }))
        .unwrap()
}

#[tokio::test]
async fn custom_resources_are_served_only_while_their_crd_exists() {
    let emulator = Emulator::new();
    let client = emulator.client();
    let api = widgets(&client, "v1");
    let before = api.list(&ListParams::default()).await.expect_err("no CRD yet");
    assert!(matches!(before, kube::Error::Api(s) if s.code == 404));

    emulator.install_crd(widget_crd("hooks.aerugo.io")).expect("install");
    let crd = emulator
        .get_raw("apiextensions.k8s.io/v1", "customresourcedefinitions", None, "widgets.hooks.aerugo.io")
        .expect("stored");
    let conditions = crd["status"]["conditions"].as_array().expect("conditions");
    assert!(conditions.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
    assert_eq!(crd["status"]["acceptedNames"]["listKind"], "WidgetList");

    api.create(&PostParams::default(), &widget("a")).await.expect("create");
    // Another served version reads the same object under its own apiVersion.
    let old = widgets(&client, "v1beta1").get("a").await.expect("v1beta1");
    assert_eq!(old.types.expect("types").api_version, "hooks.aerugo.io/v1beta1");

    let mut watch = api.watch(&WatchParams::default().timeout(10), "0").await.expect("watch").boxed();
    assert!(matches!(watch.try_next().await.expect("event"), Some(WatchEvent::Added(_))));

    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    crds.delete("widgets.hooks.aerugo.io", &DeleteParams::default()).await.expect("delete CRD");
    assert!(matches!(watch.try_next().await.expect("event"), Some(WatchEvent::Deleted(_))), "its objects go with it");
    assert!(api.get("a").await.is_err());
    assert!(emulator.get_raw("hooks.aerugo.io/v1", "widgets", Some("default"), "a").is_none());

    // An invalid CRD is refused with the field named.
    let mut bad = widget_crd("nodots");
    bad["metadata"]["name"] = json!("widgets.nodots");
    let err = emulator.install_crd(bad).expect_err("invalid");
    assert_eq!(err.code, 422);
    assert!(err.message.contains("spec.group"), "{}", err.message);
}

#[tokio::test]
async fn crds_install_from_a_directory_of_yaml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let crd = widget_crd("files.aerugo.io");
    let yaml = serde_saphyr::to_string(&crd).expect("yaml");
    std::fs::write(
        dir.path().join("widgets.yaml"),
        format!("# a comment\n{yaml}---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ignored\n"),
    )
    .expect("write");
    let emulator = Emulator::new();
    assert_eq!(emulator.install_crds_from(dir.path()).expect("install"), 1);
    assert!(
        emulator
            .get_raw("apiextensions.k8s.io/v1", "customresourcedefinitions", None, "widgets.files.aerugo.io")
            .is_some()
    );
}

#[tokio::test]
async fn discovery_lists_builtin_and_custom_resources() {
    let emulator = Emulator::new();
    emulator.install_crd(widget_crd("hooks.aerugo.io")).expect("install");
    let discovery = Discovery::new(emulator.client()).run().await.expect("discovery");
    let groups: Vec<String> = discovery.groups().map(|g| g.name().to_owned()).collect();
    for wanted in ["", "apps", "rbac.authorization.k8s.io", "coordination.k8s.io", "events.k8s.io", "hooks.aerugo.io"] {
        assert!(groups.iter().any(|g| g == wanted), "{wanted:?} missing from {groups:?}");
    }
    let (resource, caps) = discovery
        .groups()
        .find(|g| g.name() == "hooks.aerugo.io")
        .and_then(|g| g.recommended_resources().into_iter().find(|(r, _)| r.plural == "widgets"))
        .expect("widgets");
    assert_eq!(resource.kind, "Widget");
    assert!(
        caps.subresources.iter().any(|(s, _)| s.plural == "widgets/status")
            || caps.scope == kube::discovery::Scope::Namespaced
    );
}

#[tokio::test]
async fn faults_fail_matching_requests_and_are_recorded() {
    let emulator = Emulator::new();
    let configmaps: Api<ConfigMap> = Api::namespaced(emulator.client(), "default");
    emulator.fail_next(Fault::new(409).verb(Verb::Create).resource("configmaps").times(2));
    let cm: ConfigMap = serde_json::from_value(json!({ "metadata": { "name": "c" } })).unwrap();
    for _ in 0..2 {
        let err = configmaps.create(&PostParams::default(), &cm).await.expect_err("injected");
        assert!(matches!(err, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"));
    }
    configmaps.create(&PostParams::default(), &cm).await.expect("the third goes through");
    emulator.fail_next(Fault::new(429).name("c"));
    assert!(configmaps.get("c").await.is_err());

    configmaps
        .patch(
            "c",
            &PatchParams::apply("tester"),
            &Patch::Apply(json!({ "apiVersion": "v1", "kind": "ConfigMap", "data": { "k": "v" } })),
        )
        .await
        .expect("apply");
    let records = emulator.requests();
    let codes: Vec<(Verb, u16)> =
        records.iter().filter(|r| r.resource == "configmaps").map(|r| (r.verb, r.code)).collect();
    assert_eq!(
        codes,
        [(Verb::Create, 409), (Verb::Create, 409), (Verb::Create, 201), (Verb::Get, 429), (Verb::Patch, 200)]
    );
    let apply = records.last().expect("apply");
    assert_eq!(
        (apply.field_manager.as_deref(), apply.patch, apply.namespace.as_deref()),
        (Some("tester"), Some("apply"), Some("default"))
    );
    emulator.clear_requests();
    assert!(emulator.requests().is_empty());
}

#[tokio::test]
async fn compaction_expires_watches_and_continue_tokens() {
    let emulator = Emulator::new();
    let client = emulator.client();
    let configmaps: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..3 {
        configmaps
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({ "metadata": { "name": format!("c{i}") } })).unwrap(),
            )
            .await
            .expect("create");
    }
    let page = configmaps.list(&ListParams::default().limit(1)).await.expect("page");
    let rv = page.metadata.resource_version.clone().expect("rv");
    let mut open = configmaps.watch(&WatchParams::default().timeout(30), &rv).await.expect("watch").boxed();
    emulator.compact();
    // The open watch ends; resuming from before the compaction is an ERROR event with 410.
    assert!(tokio::time::timeout(Duration::from_secs(5), open.next()).await.expect("ended").is_none());
    let mut resumed = configmaps.watch(&WatchParams::default(), &rv).await.expect("watch").boxed();
    match resumed.next().await.expect("an event") {
        Ok(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    let token = page.metadata.continue_.expect("token");
    let err = configmaps.list(&ListParams::default().limit(1).continue_token(&token)).await.expect_err("expired");
    assert!(matches!(err, kube::Error::Api(s) if s.code == 410));
}

#[tokio::test]
async fn streaming_lists_end_their_initial_events_with_a_bookmark() {
    let emulator = Emulator::new();
    emulator.set_bookmark_interval(Duration::from_millis(100));
    emulator.seed(json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "seeded", "namespace": "default" } })).expect("seed");
    let configmaps: Api<ConfigMap> = Api::namespaced(emulator.client(), "default");
    let params = WatchParams::streaming_lists().timeout(5);
    let mut stream = configmaps.watch(&params, "").await.expect("watch").boxed();
    assert!(
        matches!(stream.try_next().await.expect("event"), Some(WatchEvent::Added(c)) if c.metadata.name.as_deref() == Some("seeded"))
    );
    match stream.try_next().await.expect("event") {
        Some(WatchEvent::Bookmark(b)) => {
            assert_eq!(b.metadata.annotations.get("k8s.io/initial-events-end").map(String::as_str), Some("true"));
            assert!(!b.metadata.resource_version.is_empty());
        }
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
    // Periodic bookmarks follow while nothing changes.
    assert!(matches!(stream.try_next().await.expect("event"), Some(WatchEvent::Bookmark(_))));
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_contents() {
    let emulator = Emulator::new();
    emulator
        .seed(json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "c", "namespace": "doomed" } }))
        .expect("seed");
    let namespaces: Api<Namespace> = Api::all(emulator.client());
    assert_eq!(namespaces.get("doomed").await.expect("ns").status.and_then(|s| s.phase).as_deref(), Some("Active"));
    namespaces.delete("doomed", &DeleteParams::default()).await.expect("delete");
    assert!(emulator.get::<ConfigMap>(Some("doomed"), "c").is_none());
    assert!(emulator.get::<Namespace>(None, "doomed").is_none());
}

#[tokio::test]
async fn built_in_kinds_are_type_checked() {
    let emulator = Emulator::new();
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(emulator.client(), "default");
    // A wrongly typed field is refused, as the API server's decoder does.
    let raw = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "d" }, "spec": { "replicas": "three" } });
    let err = deployments.patch("d", &PatchParams::apply("tester"), &Patch::Apply(raw)).await.expect_err("mistyped");
    assert!(matches!(err, kube::Error::Api(s) if s.code == 400), "a mistyped field is 400");
    let bad_name = json!({ "metadata": { "name": "Not_A_Name" } });
    let configmaps: Api<ConfigMap> = Api::namespaced(emulator.client(), "default");
    let err =
        configmaps.create(&PostParams::default(), &serde_json::from_value(bad_name).unwrap()).await.expect_err("name");
    assert!(matches!(err, kube::Error::Api(s) if s.code == 422));
}

#[tokio::test]
async fn wait_for_wakes_on_writes() {
    let emulator = Emulator::new();
    let waiter = {
        let emulator = emulator.clone();
        tokio::spawn(async move {
            emulator
                .wait_for::<ConfigMap, _>(Some("default"), "later", Duration::from_secs(10), |c| {
                    c.and_then(|c| c.data.as_ref()).is_some_and(|d| d.contains_key("ready"))
                })
                .await
        })
    };
    emulator
        .seed(
            json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "later", "namespace": "default" } }),
        )
        .expect("seed");
    let configmaps: Api<ConfigMap> = Api::namespaced(emulator.client(), "default");
    configmaps
        .patch("later", &PatchParams::default(), &Patch::Merge(json!({ "data": { "ready": "yes" } })))
        .await
        .expect("patch");
    let seen = waiter.await.expect("join").expect("in time").expect("exists");
    assert_eq!(seen.data.expect("data")["ready"], "yes");
    let timeout =
        emulator.wait_for::<ConfigMap, _>(Some("default"), "never", Duration::from_millis(50), |c| c.is_some()).await;
    assert!(timeout.is_err());
}

/// `kubectl apply --server-side` against the loopback server, where kubectl is installed.
#[tokio::test]
async fn kubectl_applies_server_side_against_the_loopback_server() {
    let Ok(kubectl) = which("kubectl") else {
        aerugo_test_support::skip("kubectl");
        return;
    };
    let emulator = Emulator::new();
    let server = emulator.serve().await.expect("serve");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let manifest = dir.path().join("manifest.yaml");
    let crd = serde_saphyr::to_string(&widget_crd("kubectl.aerugo.io")).expect("yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: team\ndata:\n  level: \"3\"\n---\n{crd}"
        ),
    )
    .expect("manifest");
    let run = |args: &[&str]| {
        let kubectl = kubectl.clone();
        let kubeconfig = kubeconfig.clone();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        async move {
            tokio::process::Command::new(kubectl)
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(args)
                .output()
                .await
                .expect("kubectl runs")
        }
    };
    let out = run(&["apply", "--server-side", "--validate=false", "-f", manifest.to_str().unwrap()]).await;
    assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
    let stored = emulator.get::<ConfigMap>(Some("team"), "settings").expect("applied");
    assert_eq!(stored.data.expect("data")["level"], "3");
    let managers: Vec<String> =
        stored.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|m| m.manager).collect();
    assert_eq!(managers, ["kubectl"]);
    assert!(
        emulator
            .get_raw("apiextensions.k8s.io/v1", "customresourcedefinitions", None, "widgets.kubectl.aerugo.io")
            .is_some()
    );

    let out = run(&["get", "configmap", "settings", "-n", "team", "-o", "jsonpath={.data.level}"]).await;
    assert!(out.status.success(), "kubectl get: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "3");
    let out = run(&["delete", "namespace", "team"]).await;
    assert!(out.status.success(), "kubectl delete: {}", String::from_utf8_lossy(&out.stderr));
    assert!(emulator.get::<ConfigMap>(Some("team"), "settings").is_none());
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(program)).find(|p| p.is_file()))
        .ok_or(())
}
