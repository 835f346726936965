//! `Mirror`: a pull-through mirror of an upstream registry, filling one Organization.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::LocalRef;

/// Fills an Organization (same namespace) with what an upstream registry serves. A pull of
/// `<organization>/<upstream repository>` — or of the upstream name itself with `?ns=<registry
/// host>`, as containerd sends it when `hosts.toml` names Aerugo as a mirror — that the
/// organization does not hold is fetched from the upstream once across all nodes, verified
/// against its digest, stored, and streamed to the client. Tags are confirmed with the upstream
/// after `staleAfter`; while the upstream is down, rate limits or fails, what is held is served.
/// Pushes into the organization are refused; its quota and retention policy apply.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "aerugo.io",
    version = "v1alpha1",
    kind = "Mirror",
    namespaced,
    status = "MirrorStatus",
    shortname = "aemirror",
    category = "aerugo",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Upstream","type":"string","jsonPath":".spec.upstream"}"#,
    printcolumn = r#"{"name":"Org","type":"string","jsonPath":".spec.organizationRef.name"}"#,
    printcolumn = r#"{"name":"Cached","type":"string","jsonPath":".status.cached"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MirrorSpec {
    /// The Organization (same namespace) the mirror fills; one mirror per organization.
    /// Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("organizationRef is immutable"))]
    pub organization_ref: LocalRef,
    /// The upstream registry's root URL (`https://registry-1.docker.io`, `https://ghcr.io`).
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub upstream: String,
    /// The registry host names clients use for the upstream in image references, which
    /// containerd sends as `?ns=` (`docker.io` for Docker Hub). Default: the upstream URL's
    /// host. A host name belongs to one mirror.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registry_hosts: Vec<String>,
    /// A Secret (same namespace) with `username` and `password` keys: the credentials sent to
    /// the upstream (Basic, or to its token realm). Default: anonymous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<LocalRef>,
    /// Upstream repositories mirrored, as globs (`library/*`, `myorg/**`). Default: all.
    /// Others are not fetched (`NAME_UNKNOWN` unless held).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<String>,
    /// How long a cached tag is served without asking the upstream (`90s`, `15m`, `6h`,
    /// `1d`); `0s` asks on every pull. Default `10m`. Manifests pulled by digest never go
    /// stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+[smhdw]$"))]
    pub stale_after: Option<String>,
    /// Serve the cached manifest of a tag when the upstream cannot confirm it (down, `429`,
    /// `5xx`, refused credentials). Default true; false answers `503` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve_stale_on_error: Option<bool>,
    /// The most the mirror keeps, as a Kubernetes quantity (`100Gi`). Past it, the least
    /// recently pulled images are evicted (the collector then gives their storage back).
    /// Default: no cap (the organization's quota still applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    pub max_size: Option<String>,
}

/// What the operator reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MirrorStatus {
    /// The mirror's id in the registry database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_id: Option<i64>,
    /// The `?ns=` host names routed to this mirror.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registry_hosts: Vec<String>,
    /// Bytes the mirror holds (manifests, and each stored blob once).
    #[serde(default)]
    pub cached_bytes: i64,
    /// `cachedBytes` in binary units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<String>,
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the data plane serves the mirror.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
