//! `ApiKey`: an organization API key whose secret lives only in a Kubernetes Secret — a ready
//! `imagePullSecrets` entry, or username and key for CI.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::LocalRef;

/// An API key of an organization. The key is generated once; the registry stores only its hash.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "aerugo.io",
    version = "v1alpha1",
    kind = "ApiKey",
    namespaced,
    status = "ApiKeyStatus",
    shortname = "aekey",
    category = "aerugo",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Org","type":"string","jsonPath":".spec.organizationRef.name"}"#,
    printcolumn = r#"{"name":"Secret","type":"string","jsonPath":".status.secretName"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.expiresAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySpec {
    /// The Organization (same namespace) the key acts for. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("organizationRef is immutable"))]
    pub organization_ref: LocalRef,
    /// What the key may do. At least one scope.
    #[schemars(length(min = 1))]
    pub scopes: Vec<KeyScope>,
    /// Lifetime of each key (`720h`, `90d`). Default: no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(s|m|h|d)$"))]
    pub expires_after: Option<String>,
    /// Generate a new key this often (`720h`, `30d`); the previous key keeps working for
    /// `rotationOverlap`. Default: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(s|m|h|d)$"))]
    pub rotate_every: Option<String>,
    /// How long the previous key keeps working after a rotation (`1h`). Default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(s|m|h|d)$"))]
    pub rotation_overlap: Option<String>,
    /// The Secret to write (same namespace; an RFC 1123 name). Default: the object's name. The
    /// operator only writes a Secret that does not exist or that this ApiKey owns (its owner
    /// reference); any other leaves the key `Ready=False`, `SecretConflict`, and the Secret as
    /// it was. Deleting the ApiKey deletes only its own Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// DockerConfigJson (a `kubernetes.io/dockerconfigjson` Secret usable in
    /// `imagePullSecrets`) or Opaque (`username`, `apiKey` and `registry` keys). Default
    /// DockerConfigJson.
    #[serde(default)]
    pub secret_type: SecretType,
}

/// One scope: a repository glob inside the organization and actions on it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct KeyScope {
    /// Repositories of the organization, as a glob relative to it (`*`, `team/*`, `app`).
    #[schemars(length(min = 1))]
    pub repositories: String,
    /// Allowed actions.
    #[schemars(length(min = 1))]
    pub actions: Vec<KeyAction>,
}

/// Actions a key may be allowed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum KeyAction {
    /// Pull.
    Pull,
    /// Push.
    Push,
    /// Delete manifests and tags.
    Delete,
}

impl KeyAction {
    /// The registry's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAction::Pull => "pull",
            KeyAction::Push => "push",
            KeyAction::Delete => "delete",
        }
    }
}

/// The kind of Secret written.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum SecretType {
    /// `kubernetes.io/dockerconfigjson`.
    #[default]
    DockerConfigJson,
    /// `Opaque` with `username`, `apiKey` and `registry`.
    Opaque,
}

/// What the operator reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyStatus {
    /// The public id of the current key (`ak_<keyId>_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The Secret holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// When the current key expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When the current key was generated (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotated_at: Option<String>,
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, and what is wrong when it is not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Parses a duration (`90s`, `30m`, `72h`, `30d`) into seconds.
pub fn duration_seconds(text: &str) -> Option<i64> {
    let unit = text.chars().last()?;
    let number: i64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let factor = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    number.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_seconds("90s"), Some(90));
        assert_eq!(duration_seconds("72h"), Some(72 * 3600));
        assert_eq!(duration_seconds("30d"), Some(30 * 86_400));
        assert_eq!(duration_seconds("5w"), None);
        assert_eq!(duration_seconds("h"), None);
    }
}
