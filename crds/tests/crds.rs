//! The CRD YAML in `crds/` is what the types generate, the schemas are structural, and a real
//! API server's pruning keeps every field the types can hold.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

use std::path::Path;

use aerugo_crds::*;
use aerugo_kube_emulator::Emulator;
use serde_json::{Value, json};

fn crds_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn committed_yaml_matches_the_types() {
    // The chart carries a copy (Helm reads files inside the chart only).
    let chart = crds_dir().join("../charts/aerugo/files/crds");
    for dir in [crds_dir().to_path_buf(), chart] {
        for (file, yaml) in files() {
            let committed = std::fs::read_to_string(dir.join(&file)).unwrap_or_else(|_| {
                panic!(
                    "{} is missing: run `aerugo-operator crd --out crds --out charts/aerugo/files/crds`",
                    dir.join(&file).display()
                )
            });
            assert!(
                committed == yaml,
                "{} is out of date: run `aerugo-operator crd --out crds --out charts/aerugo/files/crds`",
                dir.join(&file).display()
            );
        }
        let yaml_files = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "yaml"))
            .count();
        assert_eq!(yaml_files, files().len(), "{} holds a YAML file no type generates", dir.display());
    }
}

/// Structural: every node has a type (or says it may hold anything), no references, no
/// `additionalProperties` beside `properties`.
fn assert_structural(schema: &Value, path: &str) {
    let free = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true))
        || schema.get("x-kubernetes-int-or-string") == Some(&json!(true));
    assert!(free || schema.get("type").is_some(), "{path}: no type");
    for forbidden in ["$ref", "definitions", "$defs", "oneOf"] {
        assert!(schema.get(forbidden).is_none(), "{path}: {forbidden} is not structural");
    }
    assert!(
        !(schema.get("properties").is_some() && schema.get("additionalProperties").is_some()),
        "{path}: properties and additionalProperties"
    );
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in properties {
            assert!(
                sub.get("description").is_some()
                    || path.contains("metadata")
                    || path.contains(".resources")
                    || path.contains(".conditions"),
                "{path}.{name}: no description (a /// doc)"
            );
            assert_structural(sub, &format!("{path}.{name}"));
        }
    }
    if let Some(items) = schema.get("items") {
        assert_structural(items, &format!("{path}[]"));
    }
    if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        assert_structural(additional, &format!("{path}{{}}"));
    }
}

#[test]
fn schemas_are_structural_and_documented() {
    for crd in all() {
        let crd = serde_json::to_value(&crd).unwrap();
        let name = crd["metadata"]["name"].as_str().unwrap().to_owned();
        assert_eq!(crd["spec"]["scope"], "Namespaced", "{name}: namespaced");
        assert_eq!(crd["spec"]["names"]["categories"], json!(["aerugo"]), "{name}");
        let version = &crd["spec"]["versions"][0];
        assert!(version["subresources"].get("status").is_some(), "{name}: status subresource");
        let columns = version["additionalPrinterColumns"].as_array().unwrap();
        assert!(columns.iter().any(|c| c["name"] == "Ready"), "{name}: a Ready column");
        assert_structural(&version["schema"]["openAPIV3Schema"], &name);
    }
}

fn condition() -> Value {
    json!({ "type": "Ready", "status": "True", "reason": "Reconciled", "message": "ok", "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z" })
}

/// Every field a type can hold, for each kind.
fn full_objects() -> Vec<(Value, Value)> {
    let org = serde_json::to_value(Organization::new(
        "acme",
        OrganizationSpec {
            registry_ref: Some(LocalRef { name: "main".into() }),
            display_name: Some("Acme".into()),
            members: vec![Member { user: "ada".into(), role: Role::Owner }],
            quota: Some(Quota { storage: "50Gi".into() }),
            storage: Some(organization::OrganizationStorage {
                bucket: "acme-blobs".into(),
                readers: vec!["arn:aws:iam::1:root".into()],
                deny_insecure_transport: true,
            }),
            auto_create_repositories: false,
            retention: Some(Retention { keep_last: Some(20), ..Default::default() }),
            default_visibility: Visibility::Public,
            reclaim_policy: ReclaimPolicy::Delete,
        },
    ))
    .unwrap();
    let org_status = json!({ "orgId": 7, "usage": { "storedBytes": 10, "repositories": 2 }, "observedGeneration": 1, "conditions": [condition()] });
    let repo = serde_json::to_value(Repository::new(
        "app",
        RepositorySpec {
            organization_ref: LocalRef { name: "acme".into() },
            name: Some("team/app".into()),
            visibility: Some(Visibility::Public),
            grants: vec![
                Grant { user: Some("bob".into()), api_key_ref: None, access: Access::Push },
                Grant { user: None, api_key_ref: Some(LocalRef { name: "ci".into() }), access: Access::Pull },
            ],
            immutable_tags: vec!["v*".into()],
            retention: Some(Retention {
                mode: RetentionMode::Enforce,
                keep_last: Some(10),
                keep_within: Some("30d".into()),
                keep_pulled_within: Some("2w".into()),
                tag_pattern: Some("*".into()),
                protect: vec!["v*".into()],
                delete_untagged: false,
            }),
            reclaim_policy: ReclaimPolicy::Delete,
        },
    ))
    .unwrap();
    let repo_status = json!({ "repositoryId": 3, "fullName": "acme/team/app", "tagCount": 4, "sizeBytes": 100, "lastPushAt": "2026-01-01T00:00:00Z", "retention": { "mode": "DryRun", "ranAt": "2026-01-01T00:00:00Z", "tags": 2, "firstTags": ["b1", "b2"], "manifests": 2, "bytes": 100, "protectedInUse": 1, "protected": 0, "deleted": 0 }, "observedGeneration": 1, "conditions": [condition()] });
    let key = serde_json::to_value(ApiKey::new(
        "ci",
        ApiKeySpec {
            organization_ref: LocalRef { name: "acme".into() },
            scopes: vec![KeyScope { repositories: "team/*".into(), actions: vec![KeyAction::Pull, KeyAction::Push] }],
            expires_after: Some("90d".into()),
            rotate_every: Some("30d".into()),
            rotation_overlap: Some("1h".into()),
            secret_name: Some("ci-push".into()),
            secret_type: SecretType::Opaque,
        },
    ))
    .unwrap();
    let key_status = json!({ "keyId": "abc", "secretName": "ci-push", "expiresAt": "2026-01-01T00:00:00Z", "lastRotatedAt": "2026-01-01T00:00:00Z", "observedGeneration": 1, "conditions": [condition()] });
    let registry = serde_json::to_value(Registry::new(
        "main",
        RegistrySpec {
            replicas: 3,
            image: "aerugo/dataplane:0.1".into(),
            host: Some("registry.example.com".into()),
            storage: registry::RegistryStorage {
                endpoint: "http://s3:3900".into(),
                bucket: "blobs".into(),
                region: Some("garage".into()),
                credentials_secret: "s3".into(),
                path_style: false,
                redirect: registry::Redirect::Proxy,
                presign_ttl_seconds: Some(60),
                manage_bucket: false,
                policy: Some(registry::BucketPolicy {
                    principal: "arn:aws:iam::1:user/registry".into(),
                    readers: vec!["arn:aws:iam::2:root".into()],
                    deny_insecure_transport: true,
                }),
            },
            database_secret: registry::SecretKeyRef { name: "db".into(), key: Some("dsn".into()) },
            redis_secret: Some(registry::SecretKeyRef { name: "redis".into(), key: None }),
            token_key_secret: Some("key".into()),
            service: Some(registry::ServiceSpec { type_: Some("LoadBalancer".into()), port: Some(443) }),
            autoscaling: Some(registry::Autoscaling { min_replicas: 2, max_replicas: 5, target_cpu_percent: Some(60) }),
            trusted_proxies: vec!["10.0.0.0/8".into()],
            resources: Some(
                serde_json::from_value(json!({ "limits": { "memory": "512Mi" }, "requests": { "cpu": "250m" } }))
                    .unwrap(),
            ),
        },
    ))
    .unwrap();
    let registry_status = json!({ "readyReplicas": 3, "endpoint": "registry.example.com", "observedGeneration": 1, "conditions": [condition()] });
    vec![(org, org_status), (repo, repo_status), (key, key_status), (registry, registry_status)]
}

/// Pruning round trip: what the API server stores is what was written, field for field.
#[tokio::test]
async fn pruning_keeps_every_field() {
    let emulator = Emulator::new();
    assert_eq!(emulator.install_crds_from(crds_dir()).expect("install"), 6);
    for (mut object, status) in full_objects() {
        object["metadata"]["namespace"] = json!("default");
        let stored = emulator.seed(object.clone()).expect("create");
        assert_eq!(stored["spec"], object["spec"], "{} lost spec fields", object["kind"]);
        let (api_version, kind) = (object["apiVersion"].as_str().unwrap(), object["kind"].as_str().unwrap());
        let plural = format!("{}s", kind.to_lowercase())
            .replace("registrys", "registries")
            .replace("repositorys", "repositories");
        let client = emulator.client();
        let gvk = kube::api::GroupVersionKind::gvk("aerugo.io", "v1alpha1", kind);
        let api: kube::Api<kube::api::DynamicObject> =
            kube::Api::namespaced_with(client, "default", &kube::api::ApiResource::from_gvk_with_plural(&gvk, &plural));
        let name = object["metadata"]["name"].as_str().unwrap();
        let patched = api
            .patch_status(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({ "status": status })),
            )
            .await
            .expect("status");
        assert_eq!(patched.data["status"], status, "{kind} ({api_version}) lost status fields");
    }
}
