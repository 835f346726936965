//! Registry → the data plane: a ConfigMap, the token signing-key Secret (generated once, never
//! overwritten), a migration Job per image, a Deployment, a Service, a PodDisruptionBudget and,
//! with autoscaling, a HorizontalPodAutoscaler — all owned by the Registry and written with
//! server-side apply. `desired` builds them without IO; `sync` applies them and reads back
//! readiness. Reconciled in a cluster only (file mode has no Deployments).

use std::collections::BTreeMap;
use std::time::Duration;

use aerugo_crds::registry::{Redirect, RegistryStatus};
use aerugo_crds::{Registry, RegistrySpec};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource as _, ResourceExt as _};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::context::Context;
use crate::controller::{Readiness, Synced};
use crate::error::{Error, Result};
use crate::world::{MANAGER, World};

/// The data plane's client port.
pub const HTTP_PORT: i32 = 5000;
/// The data plane's admin port (`/metrics`).
pub const ADMIN_PORT: i32 = 9090;

/// A Registry that can be reconciled.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRegistry {
    /// Name (and the name of its children).
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// The spec.
    pub spec: RegistrySpec,
    /// The token signing-key Secret.
    pub token_key_secret: String,
    /// The Service port.
    pub port: i32,
}

/// Checks a Registry: replicas and autoscaling bounds, a service type Kubernetes knows.
pub fn validate(registry: &Registry) -> Result<ValidRegistry> {
    let spec = &registry.spec;
    if let Some(a) = &spec.autoscaling
        && a.min_replicas > a.max_replicas
    {
        return Err(Error::InvalidSpec("autoscaling.minReplicas is above maxReplicas".into()));
    }
    if let Some(kind) = spec.service.as_ref().and_then(|s| s.type_.as_deref())
        && !matches!(kind, "ClusterIP" | "NodePort" | "LoadBalancer")
    {
        return Err(Error::InvalidSpec(format!("service.type {kind:?} is not ClusterIP, NodePort or LoadBalancer")));
    }
    if !spec.storage.endpoint.starts_with("http://") && !spec.storage.endpoint.starts_with("https://") {
        return Err(Error::InvalidSpec(format!("storage.endpoint {:?} is not an http(s) URL", spec.storage.endpoint)));
    }
    for cidr in &spec.trusted_proxies {
        let address = cidr.split_once('/').map_or(cidr.as_str(), |(address, _)| address);
        let prefix_ok = cidr.split_once('/').is_none_or(|(_, bits)| {
            bits.parse::<u8>().is_ok_and(|b| b <= if address.contains(':') { 128 } else { 32 })
        });
        if address.parse::<std::net::IpAddr>().is_err() || !prefix_ok {
            return Err(Error::InvalidSpec(format!(
                "trustedProxies: {cidr:?} is not a CIDR (10.0.0.0/8, fd00::/8) or an address"
            )));
        }
    }
    let name = registry.name_any();
    Ok(ValidRegistry {
        token_key_secret: spec.token_key_secret.clone().unwrap_or_else(|| format!("{name}-token-key")),
        port: spec.service.as_ref().and_then(|s| s.port).unwrap_or(HTTP_PORT),
        namespace: registry.namespace().unwrap_or_default(),
        name,
        spec: spec.clone(),
    })
}

fn labels(r: &ValidRegistry) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "aerugo".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), r.name.clone()),
        ("app.kubernetes.io/component".to_owned(), "dataplane".to_owned()),
    ])
}

fn metadata(r: &ValidRegistry, name: &str, owner: &Value) -> Value {
    let mut all = labels(r);
    all.insert("app.kubernetes.io/managed-by".to_owned(), "aerugo-operator".to_owned());
    json!({ "name": name, "namespace": r.namespace, "labels": all, "ownerReferences": [owner] })
}

/// Where clients reach the registry.
pub fn endpoint(r: &ValidRegistry) -> String {
    r.spec.host.clone().unwrap_or_else(|| format!("{}.{}.svc:{}", r.name, r.namespace, r.port))
}

/// The data plane's settings, as environment.
pub fn desired_config(r: &ValidRegistry, owner: &Value) -> Value {
    let s = &r.spec.storage;
    let mut data = json!({
        "AERUGO_LISTEN": format!("0.0.0.0:{HTTP_PORT}"),
        "AERUGO_ADMIN_LISTEN": format!("0.0.0.0:{ADMIN_PORT}"),
        "AERUGO_STORAGE": "s3",
        "AERUGO_S3_ENDPOINT": s.endpoint,
        "AERUGO_S3_BUCKET": s.bucket,
        "AERUGO_S3_REGION": s.region.clone().unwrap_or_else(|| "us-east-1".into()),
        "AERUGO_S3_PATH_STYLE": s.path_style.to_string(),
        "AERUGO_S3_SECRET_ACCESS_KEY_FILE": "/etc/aerugo/s3/secretAccessKey",
        "AERUGO_REDIRECT": match s.redirect { Redirect::Presign => "presign", Redirect::Proxy => "proxy" },
        "AERUGO_PRESIGN_TTL": s.presign_ttl_seconds.unwrap_or(300).to_string(),
        "AERUGO_TOKEN_KEY_FILE": "/etc/aerugo/token/key",
        "AERUGO_LOG": "info",
        // Several replicas share cache generations through Redis; without Redis only a single
        // replica may cache (in its own memory), or a tag moved on one could be served old by
        // another.
        "AERUGO_CACHE": match (&r.spec.redis_secret, r.spec.autoscaling.is_some() || r.spec.replicas > 1) {
            (Some(_), _) => "redis",
            (None, false) => "local",
            (None, true) => "off",
        },
        "AERUGO_REDIS_PREFIX": format!("aerugo.{}.{}", r.namespace, r.name),
    });
    if let Some(host) = &r.spec.host {
        data["AERUGO_PUBLIC_URL"] = json!(format!("https://{host}"));
    }
    if !r.spec.trusted_proxies.is_empty() {
        data["AERUGO_TRUSTED_PROXIES"] = json!(r.spec.trusted_proxies.join(","));
    }
    json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(r, &format!("{}-dataplane", r.name), owner), "data": data })
}

fn secret_env(name: &str, secret: &str, key: &str) -> Value {
    json!({ "name": name, "valueFrom": { "secretKeyRef": { "name": secret, "key": key } } })
}

fn container_env(r: &ValidRegistry) -> Vec<Value> {
    let db = &r.spec.database_secret;
    let mut env = vec![
        secret_env("AERUGO_DATABASE_URL", &db.name, db.key.as_deref().unwrap_or("url")),
        secret_env("AERUGO_S3_ACCESS_KEY_ID", &r.spec.storage.credentials_secret, "accessKeyId"),
        // Event subscription leases name the pod that holds them.
        json!({ "name": "AERUGO_NODE_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }),
    ];
    if let Some(redis) = &r.spec.redis_secret {
        env.push(secret_env("AERUGO_REDIS_URL", &redis.name, redis.key.as_deref().unwrap_or("url")));
    }
    env
}

/// A short hash naming what a rollout or migration is for.
fn short_hash(value: &impl serde::Serialize) -> String {
    let digest = Sha256::digest(serde_json::to_vec(value).unwrap_or_default());
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

/// The migration Job for the current image: `aerugo-dataplane migrate`.
pub fn desired_migration(r: &ValidRegistry, owner: &Value) -> Value {
    let name = format!("{}-migrate-{}", r.name, short_hash(&r.spec.image));
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(r, &name, owner),
        "spec": {
            "backoffLimit": 6,
            "template": {
                "metadata": { "labels": labels(r) },
                "spec": {
                    "restartPolicy": "OnFailure",
                    "containers": [{
                        "name": "migrate",
                        "image": r.spec.image,
                        "args": ["migrate"],
                        "env": [secret_env("AERUGO_DATABASE_URL", &r.spec.database_secret.name, r.spec.database_secret.key.as_deref().unwrap_or("url"))],
                    }],
                },
            },
        },
    })
}

/// The data-plane Deployment. The pod template carries a hash of the settings, so a change
/// rolls the pods.
pub fn desired_deployment(r: &ValidRegistry, config: &Value, owner: &Value) -> Value {
    let mut pod_labels = labels(r);
    pod_labels.insert("app.kubernetes.io/managed-by".to_owned(), "aerugo-operator".to_owned());
    let probe = |path: &str| json!({ "httpGet": { "path": path, "port": "http" }, "periodSeconds": 10 });
    let mut container = json!({
        "name": "dataplane",
        "image": r.spec.image,
        "args": ["serve"],
        "envFrom": [{ "configMapRef": { "name": format!("{}-dataplane", r.name) } }],
        "env": container_env(r),
        "ports": [
            { "name": "http", "containerPort": HTTP_PORT, "protocol": "TCP" },
            { "name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP" },
        ],
        "readinessProbe": probe("/readyz"),
        "livenessProbe": probe("/healthz"),
        "volumeMounts": [
            { "name": "token-key", "mountPath": "/etc/aerugo/token", "readOnly": true },
            { "name": "s3", "mountPath": "/etc/aerugo/s3", "readOnly": true },
        ],
        "securityContext": { "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "runAsNonRoot": true },
    });
    if let Some(resources) = &r.spec.resources {
        container["resources"] = serde_json::to_value(resources).unwrap_or_default();
    }
    let mut spec = json!({
        "selector": { "matchLabels": labels(r) },
        "template": {
            "metadata": {
                "labels": pod_labels,
                "annotations": { "aerugo.io/config-hash": short_hash(&(config, &r.spec)) },
            },
            "spec": {
                "containers": [container],
                "volumes": [
                    { "name": "token-key", "secret": { "secretName": r.token_key_secret } },
                    { "name": "s3", "secret": { "secretName": r.spec.storage.credentials_secret, "items": [{ "key": "secretAccessKey", "path": "secretAccessKey" }] } },
                ],
            },
        },
    });
    // With autoscaling the HPA owns the replica count.
    if r.spec.autoscaling.is_none() {
        spec["replicas"] = json!(r.spec.replicas);
    }
    json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(r, &r.name, owner), "spec": spec })
}

/// The Service in front of the pods.
pub fn desired_service(r: &ValidRegistry, owner: &Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(r, &r.name, owner),
        "spec": {
            "type": r.spec.service.as_ref().and_then(|s| s.type_.clone()).unwrap_or_else(|| "ClusterIP".into()),
            "selector": labels(r),
            "ports": [{ "name": "http", "port": r.port, "targetPort": "http", "protocol": "TCP" }],
        },
    })
}

/// At most one pod down at a time during voluntary disruptions.
pub fn desired_pdb(r: &ValidRegistry, owner: &Value) -> Value {
    json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(r, &r.name, owner),
        "spec": { "maxUnavailable": 1, "selector": { "matchLabels": labels(r) } },
    })
}

/// The HPA, when autoscaling is on.
pub fn desired_hpa(r: &ValidRegistry, owner: &Value) -> Option<Value> {
    let a = r.spec.autoscaling.as_ref()?;
    Some(json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(r, &r.name, owner),
        "spec": {
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": r.name },
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": [{ "type": "Resource", "resource": { "name": "cpu", "target": { "type": "Utilization", "averageUtilization": a.target_cpu_percent.unwrap_or(70) } } }],
        },
    }))
}

async fn apply_child<K>(client: &kube::Client, namespace: &str, body: &Value) -> Result<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
{
    let name = body["metadata"]["name"].as_str().unwrap_or_default();
    Ok(Api::<K>::namespaced(client.clone(), namespace)
        .patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(body))
        .await?)
}

/// Applies the children and reports readiness: the migration done and a pod ready.
pub async fn sync(ctx: &Context, registry: &Registry) -> Result<Synced<RegistryStatus>> {
    let World::Cluster(client) = &ctx.world else {
        return Err(Error::InvalidSpec("a Registry is reconciled in a cluster only".into()));
    };
    let r = validate(registry)?;
    // The registry's bucket is claimed as a registry's, so no organization can name it (and one
    // an organization already holds is not used).
    let db = ctx.db.get().await.map_err(aerugo_db::Error::from)?;
    if let Some(holder) = aerugo_db::declared::claim_registry_bucket(&db, &r.spec.storage.bucket).await? {
        return Ok(Synced {
            status: RegistryStatus::default(),
            readiness: Readiness::not_ready(
                "BucketTaken",
                format!("bucket {:?} is the dedicated bucket of {holder}", r.spec.storage.bucket),
            ),
            requeue: Some(Duration::from_secs(60)),
        });
    }
    drop(db);
    let owner =
        serde_json::to_value(registry.controller_owner_ref(&()).ok_or_else(|| Error::Io("no owner reference".into()))?)
            .map_err(|e| Error::Io(e.to_string()))?;
    let ns = &r.namespace;
    // The token signing key: generated once; an existing Secret is never overwritten.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    if secrets.get_opt(&r.token_key_secret).await?.is_none() {
        let key = aerugo_auth::token::TokenKeys::generate().private_hex();
        let mut secret: Secret = serde_json::from_value(json!({
            "metadata": metadata(&r, &r.token_key_secret, &owner),
            "type": "Opaque",
            "stringData": { "key": key },
        }))
        .map_err(|e| Error::Io(e.to_string()))?;
        secret.metadata.namespace = Some(ns.clone());
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    if r.spec.storage.manage_bucket {
        let credentials = secrets.get_opt(&r.spec.storage.credentials_secret).await?.ok_or_else(|| Error::Waiting {
            reason: "CredentialsNotFound",
            message: format!("no Secret {:?} with accessKeyId and secretAccessKey", r.spec.storage.credentials_secret),
        })?;
        let value = |key: &str| {
            credentials
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .ok_or_else(|| Error::Waiting {
                    reason: "CredentialsNotFound",
                    message: format!("Secret {:?} has no {key}", r.spec.storage.credentials_secret),
                })
        };
        let changes = crate::bucket::sync(&r.spec.storage, &value("accessKeyId")?, &value("secretAccessKey")?).await?;
        if changes != crate::bucket::BucketChanges::default() {
            tracing::info!(bucket = %r.spec.storage.bucket, ?changes, "bucket configured");
        }
    }
    let config = desired_config(&r, &owner);
    apply_child::<ConfigMap>(client, ns, &config).await?;
    let job: Job = apply_child(client, ns, &desired_migration(&r, &owner)).await?;
    let deployment: Deployment = apply_child(client, ns, &desired_deployment(&r, &config["data"], &owner)).await?;
    apply_child::<Service>(client, ns, &desired_service(&r, &owner)).await?;
    apply_child::<PodDisruptionBudget>(client, ns, &desired_pdb(&r, &owner)).await?;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
    match desired_hpa(&r, &owner) {
        Some(hpa) => {
            apply_child::<HorizontalPodAutoscaler>(client, ns, &hpa).await?;
        }
        None => match hpas.delete(&r.name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        },
    }
    let migrated = job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0;
    let failed_migration = job.status.as_ref().and_then(|s| s.failed).unwrap_or(0) > 6;
    let ready_replicas = deployment.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    let readiness = if failed_migration {
        Readiness::not_ready("MigrationFailed", format!("Job {} failed; see its pods' logs", job.name_any()))
    } else if !migrated {
        Readiness::not_ready("MigrationPending", format!("waiting for Job {}", job.name_any()))
    } else if ready_replicas == 0 {
        Readiness::not_ready("Progressing", format!("no ready pod of Deployment {} yet", r.name))
    } else {
        Readiness::ready()
    };
    let requeue = (!readiness.ready).then_some(Duration::from_secs(10));
    Ok(Synced {
        status: RegistryStatus {
            ready_replicas: Some(ready_replicas),
            endpoint: Some(endpoint(&r)),
            ..Default::default()
        },
        readiness,
        requeue,
    })
}

/// Children go with their owner (garbage collection); nothing lives outside Kubernetes.
pub async fn cleanup(_ctx: &Context, _registry: &Registry) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aerugo_crds::registry::{Autoscaling, RegistryStorage, SecretKeyRef, ServiceSpec};

    fn registry(spec: RegistrySpec) -> Registry {
        let mut r = Registry::new("main", spec);
        r.metadata.namespace = Some("infra".into());
        r.metadata.uid = Some("6f1c1d2e-0000-4000-8000-000000000004".into());
        r
    }

    fn spec() -> RegistrySpec {
        RegistrySpec {
            replicas: 3,
            image: "aerugo/dataplane:1".into(),
            host: None,
            storage: RegistryStorage {
                endpoint: "http://s3:3900".into(),
                bucket: "blobs".into(),
                credentials_secret: "s3".into(),
                path_style: true,
                ..Default::default()
            },
            database_secret: SecretKeyRef { name: "db".into(), key: None },
            ..Default::default()
        }
    }

    #[test]
    fn children_follow_the_spec() {
        let r = validate(&registry(spec())).expect("valid");
        let owner = json!({ "apiVersion": "aerugo.io/v1alpha1", "kind": "Registry", "name": "main", "uid": "u", "controller": true });
        let config = desired_config(&r, &owner);
        assert_eq!(config["data"]["AERUGO_S3_PATH_STYLE"], "true");
        assert_eq!(config["metadata"]["ownerReferences"][0]["name"], "main");
        let deployment = desired_deployment(&r, &config["data"], &owner);
        assert_eq!(deployment["spec"]["replicas"], 3);
        let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(env[0]["valueFrom"]["secretKeyRef"], json!({ "name": "db", "key": "url" }));
        assert_eq!(endpoint(&r), "main.infra.svc:5000");
        assert!(desired_hpa(&r, &owner).is_none());
        // A new image means a new migration Job and a new rollout.
        let newer = validate(&registry(RegistrySpec { image: "aerugo/dataplane:2".into(), ..spec() })).expect("valid");
        assert_ne!(
            desired_migration(&r, &owner)["metadata"]["name"],
            desired_migration(&newer, &owner)["metadata"]["name"]
        );
        let rolled = desired_deployment(&newer, &desired_config(&newer, &owner)["data"], &owner);
        assert_ne!(
            rolled["spec"]["template"]["metadata"]["annotations"],
            deployment["spec"]["template"]["metadata"]["annotations"]
        );
        // Autoscaling hands the replica count to the HPA.
        let scaled = validate(&registry(RegistrySpec {
            autoscaling: Some(Autoscaling { min_replicas: 2, max_replicas: 6, target_cpu_percent: None }),
            ..spec()
        }))
        .expect("valid");
        assert!(desired_deployment(&scaled, &config["data"], &owner)["spec"].get("replicas").is_none());
        assert_eq!(desired_hpa(&scaled, &owner).expect("hpa")["spec"]["maxReplicas"], 6);
    }

    #[test]
    fn the_cache_follows_redis_and_replicas() {
        let owner = json!({ "apiVersion": "aerugo.io/v1alpha1", "kind": "Registry", "name": "main", "uid": "u" });
        let cache = |spec: RegistrySpec| {
            let r = validate(&registry(spec)).expect("valid");
            let config = desired_config(&r, &owner);
            let env =
                desired_deployment(&r, &config["data"], &owner)["spec"]["template"]["spec"]["containers"][0]["env"]
                    .clone();
            (config["data"]["AERUGO_CACHE"].as_str().unwrap_or_default().to_owned(), env)
        };
        // Several replicas without Redis must not cache in process: each would serve its own
        // view of a tag.
        assert_eq!(cache(spec()).0, "off");
        assert_eq!(cache(RegistrySpec { replicas: 1, ..spec() }).0, "local");
        let scaled = Some(Autoscaling { min_replicas: 1, max_replicas: 3, target_cpu_percent: None });
        assert_eq!(cache(RegistrySpec { replicas: 1, autoscaling: scaled, ..spec() }).0, "off");
        let redis = Some(SecretKeyRef { name: "redis".into(), key: Some("uri".into()) });
        let (mode, env) = cache(RegistrySpec { redis_secret: redis, ..spec() });
        assert_eq!(mode, "redis");
        let url = env.as_array().into_iter().flatten().find(|e| e["name"] == "AERUGO_REDIS_URL").expect("redis env");
        assert_eq!(url["valueFrom"]["secretKeyRef"], json!({ "name": "redis", "key": "uri" }));
    }

    #[test]
    fn invalid_specs_are_refused() {
        let bad_scaling = RegistrySpec {
            autoscaling: Some(Autoscaling { min_replicas: 5, max_replicas: 2, target_cpu_percent: None }),
            ..spec()
        };
        assert!(validate(&registry(bad_scaling)).is_err());
        let bad_service =
            RegistrySpec { service: Some(ServiceSpec { type_: Some("Ingress".into()), port: None }), ..spec() };
        assert!(validate(&registry(bad_service)).is_err());
        let mut bad_endpoint = spec();
        bad_endpoint.storage.endpoint = "s3:3900".into();
        assert!(validate(&registry(bad_endpoint)).is_err());
        for bad in ["10.0.0.0/33", "fd00::/129", "ingress", "10.0.0/8", ""] {
            let spec = RegistrySpec { trusted_proxies: vec![bad.into()], ..spec() };
            assert!(
                matches!(validate(&registry(spec)), Err(Error::InvalidSpec(m)) if m.contains("trustedProxies")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn trusted_proxies_reach_the_data_plane() {
        let owner = json!({ "apiVersion": "aerugo.io/v1alpha1", "kind": "Registry", "name": "main", "uid": "u" });
        let proxies = vec!["10.0.0.0/8".to_owned(), "fd00::/8".to_owned(), "192.0.2.1".to_owned()];
        let r = validate(&registry(RegistrySpec { trusted_proxies: proxies, ..spec() })).expect("valid");
        assert_eq!(desired_config(&r, &owner)["data"]["AERUGO_TRUSTED_PROXIES"], "10.0.0.0/8,fd00::/8,192.0.2.1");
        let none = validate(&registry(spec())).expect("valid");
        assert!(desired_config(&none, &owner)["data"].get("AERUGO_TRUSTED_PROXIES").is_none());
    }
}
