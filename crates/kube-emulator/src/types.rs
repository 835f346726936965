//! The resource types served: a static table of the built-in kinds an operator touches, and the
//! types a `CustomResourceDefinition` declares.

use serde_json::{Value, json};

use crate::{ApiError, ResourceType};

/// One built-in kind: (group, version, kind, plural, namespaced, status subresource, short names).
type Builtin = (&'static str, &'static str, &'static str, &'static str, bool, bool, &'static [&'static str]);

const BUILTINS: &[Builtin] = &[
    ("", "v1", "Namespace", "namespaces", false, true, &["ns"]),
    ("", "v1", "Secret", "secrets", true, false, &[]),
    ("", "v1", "ConfigMap", "configmaps", true, false, &["cm"]),
    ("", "v1", "Service", "services", true, true, &["svc"]),
    ("", "v1", "ServiceAccount", "serviceaccounts", true, false, &["sa"]),
    ("", "v1", "Pod", "pods", true, true, &["po"]),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true, true, &["pvc"]),
    ("", "v1", "Event", "events", true, false, &["ev"]),
    ("apps", "v1", "Deployment", "deployments", true, true, &["deploy"]),
    ("apps", "v1", "StatefulSet", "statefulsets", true, true, &["sts"]),
    ("apps", "v1", "DaemonSet", "daemonsets", true, true, &["ds"]),
    ("apps", "v1", "ReplicaSet", "replicasets", true, true, &["rs"]),
    ("batch", "v1", "Job", "jobs", true, true, &[]),
    ("batch", "v1", "CronJob", "cronjobs", true, true, &["cj"]),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true, true, &["pdb"]),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true, true, &["hpa"]),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", true, false, &[]),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true, false, &[]),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false, false, &[]),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", false, false, &[]),
    ("coordination.k8s.io", "v1", "Lease", "leases", true, false, &[]),
    ("events.k8s.io", "v1", "Event", "events", true, false, &["ev"]),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", true, false, &["netpol"]),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", true, true, &["ing"]),
    (
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        true,
        &["crd", "crds"],
    ),
];

/// The built-in types.
pub fn builtin_types() -> Vec<ResourceType> {
    BUILTINS
        .iter()
        .map(|(group, version, kind, plural, namespaced, status, _)| ResourceType {
            group: (*group).into(),
            version: (*version).into(),
            kind: (*kind).into(),
            plural: (*plural).into(),
            namespaced: *namespaced,
            status_subresource: *status,
            custom: false,
            selectable_fields: Vec::new(),
        })
        .collect()
}

/// Short names of a built-in type (for discovery).
pub fn short_names(ty: &ResourceType) -> Vec<String> {
    BUILTINS
        .iter()
        .find(|b| b.0 == ty.group && b.3 == ty.plural)
        .map(|b| b.6.iter().map(|s| (*s).to_owned()).collect())
        .unwrap_or_default()
}

/// Whether `ty` is the CRD type.
pub fn is_crd(ty: &ResourceType) -> bool {
    ty.group == "apiextensions.k8s.io" && ty.plural == "customresourcedefinitions"
}

/// What a CRD declares: the types of its served versions, with their schemas.
#[derive(Debug, Clone)]
pub struct CrdTypes {
    /// `spec.group`.
    pub group: String,
    /// `spec.names.plural`.
    pub plural: String,
    /// One per served version, with its `openAPIV3Schema`.
    pub versions: Vec<(ResourceType, Option<Value>)>,
    /// The storage version.
    pub storage_version: String,
    /// `spec.names.shortNames`.
    pub short_names: Vec<String>,
    /// `spec.names.singular`.
    pub singular: String,
}

/// Reads and checks a CRD (`apiextensions.k8s.io/v1`); 422 names what is wrong.
pub fn crd_types(crd: &Value) -> Result<CrdTypes, ApiError> {
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    let invalid = |field: &str, message: &str| {
        ApiError::invalid("apiextensions.k8s.io", "customresourcedefinitions", name, field, message)
    };
    let spec = &crd["spec"];
    let group = spec["group"]
        .as_str()
        .filter(|g| g.contains('.'))
        .ok_or_else(|| invalid("spec.group", "Invalid value: should be a domain with at least one dot"))?;
    let names = &spec["names"];
    let plural = names["plural"]
        .as_str()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| invalid("spec.names.plural", "Required value"))?;
    let kind =
        names["kind"].as_str().filter(|k| !k.is_empty()).ok_or_else(|| invalid("spec.names.kind", "Required value"))?;
    if name != format!("{plural}.{group}") {
        return Err(invalid(
            "metadata.name",
            &format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => return Err(invalid("spec.scope", "Unsupported value: supported values: \"Cluster\", \"Namespaced\"")),
    };
    let versions = spec["versions"]
        .as_array()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid("spec.versions", "Required value"))?;
    let storage: Vec<&str> =
        versions.iter().filter(|v| v["storage"].as_bool() == Some(true)).filter_map(|v| v["name"].as_str()).collect();
    let [storage_version] = storage.as_slice() else {
        return Err(invalid("spec.versions", "Invalid value: must have exactly one version marked as storage version"));
    };
    let mut served = Vec::new();
    for v in versions.iter().filter(|v| v["served"].as_bool() == Some(true)) {
        let version = v["name"].as_str().ok_or_else(|| invalid("spec.versions[].name", "Required value"))?;
        let schema = v["schema"]["openAPIV3Schema"].clone();
        let ty = ResourceType {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            namespaced,
            status_subresource: v["subresources"].get("status").is_some(),
            custom: true,
            selectable_fields: v["selectableFields"]
                .as_array()
                .map(|f| f.iter().filter_map(|f| f["jsonPath"].as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
        };
        served.push((ty, (!schema.is_null()).then_some(schema)));
    }
    Ok(CrdTypes {
        group: group.to_owned(),
        plural: plural.to_owned(),
        versions: served,
        storage_version: (*storage_version).to_owned(),
        short_names: names["shortNames"]
            .as_array()
            .map(|s| s.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default(),
        singular: names["singular"].as_str().unwrap_or(&kind.to_lowercase()).to_owned(),
    })
}

/// The status the API server's CRD controllers give an accepted CRD.
pub fn crd_status(crd: &Value, storage_version: &str, now: &str) -> Value {
    let condition = |ty: &str, reason: &str, message: &str| json!({ "type": ty, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now });
    let mut names = crd["spec"]["names"].clone();
    if names.get("singular").is_none() {
        names["singular"] = json!(crd["spec"]["names"]["kind"].as_str().unwrap_or_default().to_lowercase());
    }
    if names.get("listKind").is_none() {
        names["listKind"] = json!(format!("{}List", crd["spec"]["names"]["kind"].as_str().unwrap_or_default()));
    }
    json!({
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "acceptedNames": names,
        "storedVersions": [storage_version],
    })
}

/// Decodes a built-in object into its k8s-openapi type, as the API server decodes every write:
/// a wrongly typed or missing required field is refused.
pub fn check_builtin(ty: &ResourceType, obj: &Value) -> Result<(), String> {
    use k8s_openapi::api;
    fn decode<T: serde::de::DeserializeOwned>(obj: &Value) -> Result<(), String> {
        serde_json::from_value::<T>(obj.clone()).map(drop).map_err(|e| e.to_string())
    }
    match (ty.group.as_str(), ty.kind.as_str()) {
        ("", "Namespace") => decode::<api::core::v1::Namespace>(obj),
        ("", "Secret") => decode::<api::core::v1::Secret>(obj),
        ("", "ConfigMap") => decode::<api::core::v1::ConfigMap>(obj),
        ("", "Service") => decode::<api::core::v1::Service>(obj),
        ("", "ServiceAccount") => decode::<api::core::v1::ServiceAccount>(obj),
        ("", "Pod") => decode::<api::core::v1::Pod>(obj),
        ("", "PersistentVolumeClaim") => decode::<api::core::v1::PersistentVolumeClaim>(obj),
        ("", "Event") => decode::<api::core::v1::Event>(obj),
        ("apps", "Deployment") => decode::<api::apps::v1::Deployment>(obj),
        ("apps", "StatefulSet") => decode::<api::apps::v1::StatefulSet>(obj),
        ("apps", "DaemonSet") => decode::<api::apps::v1::DaemonSet>(obj),
        ("apps", "ReplicaSet") => decode::<api::apps::v1::ReplicaSet>(obj),
        ("batch", "Job") => decode::<api::batch::v1::Job>(obj),
        ("batch", "CronJob") => decode::<api::batch::v1::CronJob>(obj),
        ("policy", "PodDisruptionBudget") => decode::<api::policy::v1::PodDisruptionBudget>(obj),
        ("autoscaling", "HorizontalPodAutoscaler") => decode::<api::autoscaling::v2::HorizontalPodAutoscaler>(obj),
        ("rbac.authorization.k8s.io", "Role") => decode::<api::rbac::v1::Role>(obj),
        ("rbac.authorization.k8s.io", "RoleBinding") => decode::<api::rbac::v1::RoleBinding>(obj),
        ("rbac.authorization.k8s.io", "ClusterRole") => decode::<api::rbac::v1::ClusterRole>(obj),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => decode::<api::rbac::v1::ClusterRoleBinding>(obj),
        ("coordination.k8s.io", "Lease") => decode::<api::coordination::v1::Lease>(obj),
        ("events.k8s.io", "Event") => decode::<api::events::v1::Event>(obj),
        ("networking.k8s.io", "NetworkPolicy") => decode::<api::networking::v1::NetworkPolicy>(obj),
        ("networking.k8s.io", "Ingress") => decode::<api::networking::v1::Ingress>(obj),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            decode::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(obj)
        }
        _ => Ok(()),
    }
}
