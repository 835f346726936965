//! `Organization`: a tenant of the registry — the first segment of its repositories' names, its
//! members and their roles, its quota and, optionally, a bucket of its own.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{LocalRef, ReclaimPolicy, Visibility};

/// An organization of the registry. Its `metadata.name` is its registry-wide name: the first
/// segment of every repository in it (`<name>/<repository>`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "aerugo.io",
    version = "v1alpha1",
    kind = "Organization",
    namespaced,
    status = "OrganizationStatus",
    shortname = "aeorg",
    category = "aerugo",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Org ID","type":"integer","jsonPath":".status.orgId"}"#,
    printcolumn = r#"{"name":"Repositories","type":"integer","jsonPath":".status.usage.repositories"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationSpec {
    /// The Registry this organization lives in (same namespace). Optional when the operator
    /// serves one registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_ref: Option<LocalRef>,
    /// A human-readable name, shown by the management API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub display_name: Option<String>,
    /// Registry users and their roles in the organization. Users are matched by username; a
    /// user that does not exist yet is reported in the `Ready` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["user".into()]))]
    pub members: Vec<Member>,
    /// Storage quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    /// A dedicated bucket for this organization's blobs instead of the registry's, on the
    /// registry's S3 service. It cannot change once the organization holds blobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<OrganizationStorage>,
    /// Whether a push to a repository that does not exist creates it (members with push rights
    /// only). Default true.
    #[serde(default = "yes")]
    pub auto_create_repositories: bool,
    /// The retention policy of repositories that do not set their own (a repository's
    /// `retention` replaces it whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::repository::Retention>,
    /// Visibility of repositories that do not set their own. Default Private.
    #[serde(default)]
    pub default_visibility: Visibility,
    /// What happens to the organization's data when this object is deleted. Default Retain.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
}

fn yes() -> bool {
    true
}

/// A member and its role.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct Member {
    /// The registry username.
    #[schemars(length(min = 1, max = 64))]
    pub user: String,
    /// The role: Owner and Admin manage the organization, Member pushes, Viewer pulls.
    pub role: Role,
}

/// Organization roles.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Role {
    /// Everything, including members.
    Owner,
    /// Repositories, keys and members except owners.
    Admin,
    /// Push and pull every repository.
    Member,
    /// Pull every repository.
    Viewer,
}

impl Role {
    /// The database spelling.
    pub fn as_db(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }
}

/// Storage quota.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct Quota {
    /// Stored bytes allowed, as a Kubernetes quantity (`50Gi`, `500M`).
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    pub storage: String,
}

/// A dedicated bucket.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationStorage {
    /// The bucket name (S3 naming rules). A bucket is one organization's: naming the registry's
    /// own bucket is refused (`InvalidSpec`), and one another organization holds leaves this
    /// one `Ready=False`, `BucketTaken`, with nothing written to the bucket. A bucket policy the
    /// operator did not write (a statement whose `Sid` does not start with `Aerugo`) is never
    /// replaced (`BucketPolicyConflict`).
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"))]
    pub bucket: String,
    /// Extra principals (ARNs or account ids) the bucket policy lets read the bucket.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readers: Vec<String>,
    /// Deny requests that do not use TLS (`aws:SecureTransport`).
    #[serde(default)]
    pub deny_insecure_transport: bool,
}

/// What the operator reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationStatus {
    /// The organization's id in the registry database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<i64>,
    /// Stored bytes and repository count, refreshed periodically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, and what is wrong when it is not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// An organization's usage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Bytes of the blobs its repositories reference, each counted once.
    pub stored_bytes: i64,
    /// Its repositories.
    pub repositories: i64,
}

/// Parses a Kubernetes quantity (`50Gi`, `1.5G`, `1000`) into bytes.
pub fn quantity_bytes(quantity: &str) -> Option<i64> {
    let split = quantity.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    let bytes = (number * multiplier).round();
    (bytes.is_finite() && bytes >= 0.0 && bytes < i64::MAX as f64).then_some(bytes as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity_bytes("50Gi"), Some(50 * 1024 * 1024 * 1024));
        assert_eq!(quantity_bytes("1.5G"), Some(1_500_000_000));
        assert_eq!(quantity_bytes("1000"), Some(1000));
        assert_eq!(quantity_bytes("5Zi"), None);
        assert_eq!(quantity_bytes("Gi"), None);
    }
}
