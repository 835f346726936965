//! Types shared by the kinds: references, visibility, reclaim policy and status conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to an object of the same namespace (references never cross namespaces: the
/// namespace is the tenant boundary).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct LocalRef {
    /// The name of the object, in this object's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Who may pull without credentials.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Visibility {
    /// Only members, grants and keys.
    #[default]
    Private,
    /// Anyone may pull; pushing still needs rights.
    Public,
}

impl Visibility {
    /// The database spelling.
    pub fn as_db(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Public => "public",
        }
    }
}

/// What happens to the data outside Kubernetes when the object is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReclaimPolicy {
    /// Keep the rows and blobs; they are marked orphaned and a new object with the same name in
    /// the same namespace adopts them.
    #[default]
    Retain,
    /// Delete the rows, and the blobs no other repository references.
    Delete,
}

/// The `Ready` condition type.
pub const READY: &str = "Ready";

/// Sets condition `type_` in `conditions`, keeping `lastTransitionTime` unless the status flips.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
) {
    let status = if status { "True" } else { "False" };
    let next = |last_transition_time: Time| Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation,
        last_transition_time,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            let time =
                if existing.status == status { existing.last_transition_time.clone() } else { Time(Timestamp::now()) };
            *existing = next(time);
        }
        None => conditions.push(next(Time(Timestamp::now()))),
    }
}

/// Whether `conditions` says `Ready=True`.
pub fn is_ready(conditions: &[Condition]) -> bool {
    conditions.iter().any(|c| c.type_ == READY && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, READY, false, "InvalidSpec", "bad", Some(1));
        let first = conditions[0].last_transition_time.clone();
        set_condition(&mut conditions, READY, false, "InvalidSpec", "still bad", Some(2));
        assert_eq!(conditions[0].last_transition_time, first);
        assert_eq!(conditions[0].message, "still bad");
        std::thread::sleep(std::time::Duration::from_millis(2));
        set_condition(&mut conditions, READY, true, "Reconciled", "", Some(3));
        assert_ne!(conditions[0].last_transition_time, first);
        assert!(is_ready(&conditions));
        assert_eq!(conditions.len(), 1);
    }
}

/// Whether `name` is an RFC 1123 label, as Kubernetes requires of namespaces: at most 63
/// lowercase letters, digits and '-', starting and ending with a letter or digit.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// Whether `name` is an RFC 1123 subdomain, as Kubernetes requires of most object names
/// (Secrets, ConfigMaps, custom objects): at most 253 characters, labels joined by '.'.
pub fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn rfc_1123_names() {
        for good in ["a", "team", "ci-push", "a1", "0", "a.b", "x.y-z.0"] {
            assert!(is_dns_subdomain(good), "{good}");
        }
        for bad in ["", "A", "-a", "a-", "a..b", ".a", "a/b", "..", "../etc", "a_b", "a b", &"a".repeat(64)] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
        assert!(is_dns_label("team") && !is_dns_label("a.b") && is_dns_label(&"a".repeat(63)));
        assert!(!is_dns_subdomain(&format!("{}.{}", "a".repeat(63), "b".repeat(190))), "254 characters");
    }
}
