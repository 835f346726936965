//! `Repository`: a repository of an organization, its visibility, grants, immutable tags and
//! retention settings.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{LocalRef, ReclaimPolicy, Visibility};

/// A repository: `<organization>/<name>` in the registry.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "aerugo.io",
    version = "v1alpha1",
    kind = "Repository",
    namespaced,
    status = "RepositoryStatus",
    shortname = "aerepo",
    category = "aerugo",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Org","type":"string","jsonPath":".spec.organizationRef.name"}"#,
    printcolumn = r#"{"name":"Repository","type":"string","jsonPath":".status.fullName"}"#,
    printcolumn = r#"{"name":"Tags","type":"integer","jsonPath":".status.tagCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RepositorySpec {
    /// The Organization (same namespace) the repository belongs to. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("organizationRef is immutable"))]
    pub organization_ref: LocalRef,
    /// The path inside the organization (`team/app`; may contain `/`). Default: the object's
    /// name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$"),
        length(max = 200)
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("name is immutable"))]
    pub name: Option<String>,
    /// Private or Public. Default: the organization's `defaultVisibility`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<Visibility>,
    /// Access for users and API keys beyond their organization role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
    /// Tag patterns (`v*`, `release-*`, `latest`) whose tags, once pushed, can never be moved
    /// or deleted: a push that would move one is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub immutable_tags: Vec<String>,
    /// Which tags and untagged manifests are deleted. Default: the organization's
    /// `retention`; without either, untagged manifests are collected and tags are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// What happens to the repository's data when this object is deleted. Default Retain.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
}

/// One grant: a user or an API key, and what it may do.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    /// A registry username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// An ApiKey object (same namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_ref: Option<LocalRef>,
    /// Rights are ordered, each including the ones before it: Pull (read manifests, blobs,
    /// tags), Push (also upload and tag), Delete (also delete manifests, tags and blobs), Admin
    /// (also change the repository's visibility and delete the repository). Only Admin, and the
    /// organization's Owner and Admin roles, administer; an ApiKey never does.
    pub access: Access,
}

/// Grant levels.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Access {
    /// Pull.
    Pull,
    /// Pull and push.
    Push,
    /// Pull, push and delete (manifests, tags, blobs).
    Delete,
    /// Pull, push, delete and administration: visibility, deleting the repository.
    Admin,
}

impl Access {
    /// The database spelling.
    pub fn as_db(self) -> &'static str {
        match self {
            Access::Pull => "pull",
            Access::Push => "push",
            Access::Delete => "delete",
            Access::Admin => "admin",
        }
    }
}

/// A retention policy: which tags go, and whether untagged manifests are collected. A run
/// deletes tags only; the manifests they leave untagged (and the blobs only those used) are then
/// collected after the operator's review delay (`--gc-review-delay`, a day by default).
///
/// The keep rules apply to the tags matching `tagPattern` that are not protected. Such a tag
/// goes unless one of the rules keeps it: it is among the newest `keepLast` of them, it was
/// pushed within `keepWithin`, or its manifest was pulled within `keepPulledWithin`. A policy
/// with no keep rule deletes no tag. Protected tags — a `protect` pattern, an `immutableTags`
/// pattern, or a digest a running Pod uses — are always kept and do not count towards
/// `keepLast`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// DryRun (the default) reports in `status.retention` and an Event what a run would delete
    /// and deletes nothing, untagged manifests included; Enforce deletes.
    #[serde(default)]
    pub mode: RetentionMode,
    /// Keep the newest N tags (by push time) among those the policy applies to. 0 keeps none
    /// (other rules may still keep some).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep tags pushed (created or moved) within this duration: a number and s, m, h, d or w
    /// (`30d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,9}(s|m|h|d|w)$"))]
    pub keep_within: Option<String>,
    /// Keep tags whose manifest was pulled (GET or HEAD) within this duration (`30d`). Pull
    /// times are recorded by the data plane in batches, within a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,9}(s|m|h|d|w)$"))]
    pub keep_pulled_within: Option<String>,
    /// The tags the keep rules apply to (a glob: `*`, `pr-*`); other tags are kept. Default:
    /// all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_pattern: Option<String>,
    /// Tags (globs, `v*`) never deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protect: Vec<String>,
    /// Collect manifests that no tag, index or subject keeps (untagged images, platform
    /// manifests of deleted indexes, signatures of deleted images). Default true; with false
    /// they stay until deleted by digest.
    #[serde(default = "yes")]
    pub delete_untagged: bool,
}

fn yes() -> bool {
    true
}

/// Whether a retention policy deletes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum RetentionMode {
    /// Report, delete nothing.
    #[default]
    DryRun,
    /// Delete.
    Enforce,
}

/// The last retention run: what it deleted or, in DryRun, would delete.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionStatus {
    /// The mode of the run.
    pub mode: RetentionMode,
    /// When a run first had this outcome (RFC 3339); later runs with the same outcome keep it,
    /// so an unchanged repository's status is not rewritten at every resync.
    pub ran_at: String,
    /// Tags the policy selects.
    pub tags: i64,
    /// The first 20 of them, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first_tags: Vec<String>,
    /// Manifests collected once those tags are gone (untagged ones waiting included).
    pub manifests: i64,
    /// Bytes of blobs the repository stops holding then.
    pub bytes: i64,
    /// Tags kept only because a running Pod uses their digest.
    pub protected_in_use: i64,
    /// Tags kept only because a `protect` or `immutableTags` pattern matches them.
    pub protected: i64,
    /// Tags this run deleted (0 in DryRun).
    pub deleted: i64,
}

/// What the operator reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryStatus {
    /// The repository's id in the registry database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_id: Option<i64>,
    /// `<organization>/<name>`: what to push to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_name: Option<String>,
    /// Tags in the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_count: Option<i64>,
    /// Bytes of the blobs the repository references.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// When something was last pushed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_push_at: Option<String>,
    /// The last retention run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionStatus>,
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, and what is wrong when it is not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
