//! `Registry`: a data-plane deployment — replicas, image, storage, database, cache and token
//! key — that Organizations live in.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A registry: the data-plane Deployment and what it needs.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "aerugo.io",
    version = "v1alpha1",
    kind = "Registry",
    namespaced,
    status = "RegistryStatus",
    shortname = "aereg",
    category = "aerugo",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RegistrySpec {
    /// Data-plane replicas (when autoscaling is off). Default 2.
    #[serde(default = "two")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// The data-plane image.
    #[schemars(length(min = 1))]
    pub image: String,
    /// The public host clients push to (`registry.example.com`), used in pull Secrets and token
    /// realms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Blob storage.
    pub storage: RegistryStorage,
    /// A Secret (same namespace) whose `url` key is the Postgres URL.
    pub database_secret: SecretKeyRef,
    /// A Secret whose `url` key is the Redis URL of the data plane's shared cache. Without it
    /// a single replica caches in its own memory and several replicas do not cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_secret: Option<SecretKeyRef>,
    /// The Secret holding the token signing key; generated when absent. Default
    /// `<name>-token-key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_key_secret: Option<String>,
    /// The Service in front of the data plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,
    /// Autoscaling on CPU. Default: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// The reverse proxies in front of the data plane (ingress controller, load balancer), as
    /// CIDRs (`10.0.0.0/8`) or addresses. Only from these are `X-Forwarded-For` / `Forwarded`
    /// believed, so rate limits and login backoff apply per real client address; without them,
    /// every client behind an ingress shares the ingress's address. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    /// CPU and memory of each data-plane container (a core/v1 ResourceRequirements).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
}

fn two() -> i32 {
    2
}

/// The registry's S3 storage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStorage {
    /// The S3 endpoint URL (any S3-compatible service).
    pub endpoint: String,
    /// The bucket; created with a lifecycle rule and a bucket policy when missing.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"))]
    pub bucket: String,
    /// The region. Default `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A Secret with `accessKeyId` and `secretAccessKey`.
    pub credentials_secret: String,
    /// Path-style addressing (`endpoint/bucket/key`), for most self-hosted S3. Default true.
    #[serde(default = "yes")]
    pub path_style: bool,
    /// Presign (pulls redirected to presigned URLs) or Proxy (blobs streamed by the data
    /// plane). Default Presign.
    #[serde(default)]
    pub redirect: Redirect,
    /// Lifetime of presigned URLs in seconds. Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604_800))]
    pub presign_ttl_seconds: Option<u32>,
    /// Whether the operator creates the bucket and keeps its lifecycle rule (abort multipart
    /// uploads left incomplete for a day) and policy. Turn off when the bucket is managed
    /// elsewhere. Default true.
    #[serde(default = "yes")]
    pub manage_bucket: bool,
    /// The bucket policy to keep on the bucket (with `manageBucket`). Default: leave the
    /// policy alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<BucketPolicy>,
}

/// A bucket policy: the registry's principal reads and writes, optional readers read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketPolicy {
    /// The principal (an ARN, or what the S3 service uses) the data plane signs as.
    #[schemars(length(min = 1))]
    pub principal: String,
    /// Principals allowed to read blobs directly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readers: Vec<String>,
    /// Deny every request not made over TLS (`aws:SecureTransport`).
    #[serde(default)]
    pub deny_insecure_transport: bool,
}

fn yes() -> bool {
    true
}

/// How pulls get blob bytes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum Redirect {
    /// 307 to a presigned URL.
    #[default]
    Presign,
    /// Streamed through the data plane.
    Proxy,
}

/// A key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub struct SecretKeyRef {
    /// The Secret.
    pub name: String,
    /// The key. Default `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The data-plane Service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// ClusterIP, NodePort or LoadBalancer. Default ClusterIP.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The port. Default 5000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// CPU autoscaling.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Autoscaling {
    /// Minimum replicas.
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Maximum replicas.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Target average CPU utilisation, percent. Default 70.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_percent: Option<i32>,
}

/// What the operator reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStatus {
    /// Ready data-plane replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Where clients reach the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, and what is wrong when it is not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
