//! Organization → an `organizations` row (keyed by the object's UID) and its members.
//! `validate` and `desired` are pure; `sync` writes; `cleanup` applies the reclaim policy.

use aerugo_crds::organization::{OrganizationStatus, Usage, quantity_bytes};
use aerugo_crds::{Organization, ReclaimPolicy};
use aerugo_db::declared::{self, Claim, DeclaredOrg};
use kube::ResourceExt as _;
use uuid::Uuid;

use crate::context::{Context, StorageAccess};
use crate::controller::{Readiness, Synced};
use crate::error::{Error, Result};

/// An Organization that can be reconciled.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidOrg {
    /// The object's UID.
    pub uid: Uuid,
    /// Its namespace.
    pub namespace: String,
    /// Registry-wide name.
    pub name: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Quota in bytes.
    pub quota_bytes: Option<i64>,
    /// Dedicated bucket, with its policy readers and TLS requirement.
    pub storage: Option<aerugo_crds::organization::OrganizationStorage>,
    /// `autoCreateRepositories`.
    pub auto_create_repos: bool,
    /// `private` / `public`.
    pub default_visibility: &'static str,
    /// (username, role) pairs.
    pub members: Vec<(String, &'static str)>,
    /// Delete data with the object.
    pub delete_data: bool,
    /// The default retention policy of its repositories, as stored.
    pub retention: Option<serde_json::Value>,
}

/// The object's UID (file mode derives one from the kind, namespace and name).
pub fn uid_of(meta_uid: Option<&str>) -> Result<Uuid> {
    meta_uid
        .and_then(|u| Uuid::parse_str(u).ok())
        .ok_or_else(|| Error::InvalidSpec("the object has no metadata.uid".into()))
}

/// Whether `name` is usable as a path component of repository names (the OCI grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`).
pub fn is_path_component(name: &str) -> bool {
    static COMPONENT: std::sync::LazyLock<Option<regex::Regex>> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$").ok());
    COMPONENT.as_ref().is_some_and(|re| re.is_match(name))
}

/// Checks an Organization: a name usable as the first segment of repository names, distinct
/// members, a parseable quota.
pub fn validate(org: &Organization) -> Result<ValidOrg> {
    let name = org.name_any();
    if !is_path_component(&name) || name.len() > 64 {
        return Err(Error::InvalidSpec(format!(
            "the name {name:?} cannot be the first segment of repository names: lowercase letters and digits, separated by '.', '_' or '-', at most 64 characters"
        )));
    }
    let mut members: Vec<(String, &'static str)> = Vec::new();
    for m in &org.spec.members {
        if members.iter().any(|(u, _)| *u == m.user) {
            return Err(Error::InvalidSpec(format!("member {:?} is listed twice", m.user)));
        }
        members.push((m.user.clone(), m.role.as_db()));
    }
    let quota_bytes = match &org.spec.quota {
        Some(q) => Some(
            quantity_bytes(&q.storage)
                .ok_or_else(|| Error::InvalidSpec(format!("quota.storage {:?} is not a quantity", q.storage)))?,
        ),
        None => None,
    };
    if let Some(storage) = &org.spec.storage
        && !aerugo_storage::is_location_name(&storage.bucket)
    {
        return Err(Error::InvalidSpec(format!(
            "storage.bucket {:?} is not a bucket name: 3 to 63 lowercase letters, digits, '.' and '-'",
            storage.bucket
        )));
    }
    Ok(ValidOrg {
        uid: uid_of(org.metadata.uid.as_deref())?,
        namespace: org.namespace().unwrap_or_default(),
        name,
        display_name: org.spec.display_name.clone(),
        quota_bytes,
        storage: org.spec.storage.clone(),
        auto_create_repos: org.spec.auto_create_repositories,
        default_visibility: org.spec.default_visibility.as_db(),
        members,
        delete_data: org.spec.reclaim_policy == ReclaimPolicy::Delete,
        retention: crate::repo::retention_value(org.spec.retention.as_ref())?,
    })
}

/// The row an Organization declares.
pub fn desired(org: &ValidOrg) -> DeclaredOrg<'_> {
    DeclaredOrg {
        uid: org.uid,
        namespace: &org.namespace,
        name: &org.name,
        display_name: org.display_name.as_deref(),
        quota_bytes: org.quota_bytes,
        bucket: org.storage.as_ref().map(|s| s.bucket.as_str()),
        auto_create_repos: org.auto_create_repos,
        default_visibility: org.default_visibility,
        reclaim_policy: if org.delete_data { "delete" } else { "retain" },
    }
}

/// Writes the row and members; reports the id, usage and readiness.
pub async fn sync(ctx: &Context, org: &Organization) -> Result<Synced<OrganizationStatus>> {
    let valid = validate(org)?;
    let mut client = ctx.db.get().await.map_err(aerugo_db::Error::from)?;
    let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
    // Repositories read their blobs where their organization's are: the location cannot move
    // under stored blobs. The bucket exists before any row routes a write to it.
    let bucket = valid.storage.as_ref().map(|s| s.bucket.as_str());
    if let Some((current, holds_blobs)) = declared::org_location(&tx, valid.uid).await?
        && current.as_deref() != bucket
        && holds_blobs
    {
        return Err(Error::InvalidSpec(format!(
            "storage cannot change from {} to {} once the organization holds blobs",
            current.as_deref().map_or("the registry's bucket".to_owned(), |b| format!("bucket {b:?}")),
            bucket.map_or("the registry's bucket".to_owned(), |b| format!("bucket {b:?}")),
        )));
    }
    let id = match declared::sync_org(&tx, &desired(&valid)).await? {
        Claim::Owned { id, .. } => id,
        Claim::Taken { namespace } => {
            let holder = match namespace {
                Some(ns) => format!("an Organization in namespace {ns:?}"),
                None => "an organization created through the management API".to_owned(),
            };
            return Ok(Synced {
                status: OrganizationStatus::default(),
                readiness: Readiness::not_ready("NameTaken", format!("the name {:?} is held by {holder}", valid.name)),
                requeue: Some(std::time::Duration::from_secs(60)),
            });
        }
    };
    // The bucket is claimed before any S3 call (an uncommitted claim holds concurrent claims of
    // the same bucket back); one held by the registry or another organization is not touched.
    if let Some(holder) = declared::claim_org_bucket(&tx, id, bucket).await? {
        return Ok(Synced {
            status: OrganizationStatus::default(),
            readiness: Readiness::not_ready(
                "BucketTaken",
                format!(
                    "bucket {:?} is held by {holder}: name a bucket of this organization's own",
                    bucket.unwrap_or("")
                ),
            ),
            requeue: Some(std::time::Duration::from_secs(60)),
        });
    }
    if let Some(storage) = &valid.storage {
        ensure_bucket(ctx, storage).await?;
    }
    let members: Vec<(&str, &str)> = valid.members.iter().map(|(u, r)| (u.as_str(), *r)).collect();
    let (unknown, _) = declared::sync_members(&tx, id, &members).await?;
    declared::set_org_retention(&tx, id, valid.retention.as_ref()).await?;
    let (stored_bytes, repositories) = declared::org_usage(&tx, id).await?;
    tx.commit().await.map_err(aerugo_db::Error::from)?;
    // Users are created outside Kubernetes (management API, bootstrap): look again soon.
    let (readiness, requeue) = if unknown.is_empty() {
        (Readiness::ready(), None)
    } else {
        let why = format!("no registry user named {}", unknown.join(", "));
        (Readiness::not_ready("UnknownUser", why), Some(std::time::Duration::from_secs(30)))
    };
    Ok(Synced {
        status: OrganizationStatus {
            org_id: Some(id),
            usage: Some(Usage { stored_bytes, repositories }),
            ..Default::default()
        },
        readiness,
        requeue,
    })
}

/// Creates the dedicated bucket if needed, with the lifecycle rule and, when readers or TLS are
/// asked for, the bucket policy.
async fn ensure_bucket(ctx: &Context, storage: &aerugo_crds::organization::OrganizationStorage) -> Result<()> {
    use aerugo_crds::registry::{BucketPolicy, RegistryStorage};
    match &ctx.settings.storage {
        None => Err(Error::InvalidSpec(
            "spec.storage needs the operator to reach the registry's storage (AERUGO_STORAGE and its settings)".into(),
        )),
        // The data plane creates the location's directory on first write.
        Some(StorageAccess::File) => Ok(()),
        Some(StorageAccess::S3 { bucket, .. }) if *bucket == storage.bucket => Err(Error::InvalidSpec(format!(
            "storage.bucket {bucket:?} is the registry's own bucket: name a bucket of this organization's own"
        ))),
        Some(StorageAccess::S3 {
            endpoint, region, path_style, access_key_id, secret_access_key, principal, ..
        }) => {
            let wants_policy = !storage.readers.is_empty() || storage.deny_insecure_transport;
            let policy = match (wants_policy, principal) {
                (false, _) => None,
                (true, Some(principal)) => Some(BucketPolicy {
                    principal: principal.clone(),
                    readers: storage.readers.clone(),
                    deny_insecure_transport: storage.deny_insecure_transport,
                }),
                (true, None) => {
                    return Err(Error::InvalidSpec(
                        "storage.readers and storage.denyInsecureTransport need a bucket policy, which needs the registry's principal (AERUGO_S3_PRINCIPAL)".into(),
                    ));
                }
            };
            let target = RegistryStorage {
                endpoint: endpoint.clone(),
                bucket: storage.bucket.clone(),
                region: Some(region.clone()),
                path_style: *path_style,
                manage_bucket: true,
                policy,
                ..Default::default()
            };
            let changes = crate::bucket::sync(&target, access_key_id, secret_access_key).await?;
            if changes != crate::bucket::BucketChanges::default() {
                tracing::info!(bucket = %storage.bucket, ?changes, "organization bucket configured");
            }
            Ok(())
        }
    }
}

/// The Organization `name` of `namespace` that a Repository or ApiKey references (references
/// never leave their namespace).
pub async fn referenced(ctx: &Context, namespace: &str, name: &str) -> Result<(Organization, Uuid)> {
    let org = ctx.world.organization(namespace, name).await?.ok_or_else(|| Error::Waiting {
        reason: "OrganizationNotFound",
        message: format!("no Organization {name:?} in namespace {namespace:?}"),
    })?;
    let uid = uid_of(org.metadata.uid.as_deref())?;
    Ok((org, uid))
}

/// The row of a referenced Organization: (id, registry-wide name); waits while it has none.
pub async fn row_of(client: &impl aerugo_db::GenericClient, uid: Uuid, name: &str) -> Result<(i64, String)> {
    declared::org_of(client, uid).await?.ok_or_else(|| Error::Waiting {
        reason: "OrganizationNotReady",
        message: format!("Organization {name:?} is not reconciled yet"),
    })
}

/// The reclaim policy: keep the data (orphaned, adoptable) or delete it.
pub async fn cleanup(ctx: &Context, org: &Organization) -> Result<()> {
    let uid = uid_of(org.metadata.uid.as_deref())?;
    release(ctx, uid, org.spec.reclaim_policy == ReclaimPolicy::Delete, &org.name_any()).await
}

/// Releases the rows of the Organization object `uid`: orphaned, or deleted with their data.
pub async fn release(ctx: &Context, uid: Uuid, delete: bool, name: &str) -> Result<()> {
    let mut client = ctx.db.get().await.map_err(aerugo_db::Error::from)?;
    let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
    let released = declared::release_org(&tx, uid, delete).await?;
    tx.commit().await.map_err(aerugo_db::Error::from)?;
    tracing::info!(org = %name, delete, rows = released.rows, unreferenced_blobs = released.unreferenced_blobs, "organization released");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aerugo_crds::{Member, OrganizationSpec, Quota, Role};

    fn org(name: &str, spec: OrganizationSpec) -> Organization {
        let mut o = Organization::new(name, spec);
        o.metadata.namespace = Some("team".into());
        o.metadata.uid = Some("6f1c1d2e-0000-4000-8000-000000000001".into());
        o
    }

    #[test]
    fn validates_names_members_and_quota() {
        let ok = validate(&org(
            "acme",
            OrganizationSpec {
                members: vec![Member { user: "ada".into(), role: Role::Owner }],
                quota: Some(Quota { storage: "1Gi".into() }),
                ..Default::default()
            },
        ))
        .expect("valid");
        assert_eq!(ok.quota_bytes, Some(1 << 30));
        assert_eq!(ok.members, [("ada".to_owned(), "owner")]);
        assert_eq!(desired(&ok).default_visibility, "private");

        for bad in ["Acme", "-acme", "acme-", "a..b", "a/b"] {
            assert!(matches!(validate(&org(bad, OrganizationSpec::default())), Err(Error::InvalidSpec(_))), "{bad}");
        }
        let twice = OrganizationSpec {
            members: vec![
                Member { user: "ada".into(), role: Role::Owner },
                Member { user: "ada".into(), role: Role::Viewer },
            ],
            ..Default::default()
        };
        assert!(matches!(validate(&org("acme", twice)), Err(Error::InvalidSpec(m)) if m.contains("twice")));
        let mut no_uid = org("acme", OrganizationSpec::default());
        no_uid.metadata.uid = None;
        assert!(validate(&no_uid).is_err());
        // A dedicated bucket goes into the row.
        let dedicated = OrganizationSpec {
            storage: Some(aerugo_crds::organization::OrganizationStorage {
                bucket: "acme-blobs".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let dedicated = validate(&org("acme", dedicated)).expect("valid");
        assert_eq!(desired(&dedicated).bucket, Some("acme-blobs"));
        // Names that are no bucket (a path out of the blob directory, the registry's own
        // location) are refused, whatever the API server let through.
        for bucket in ["", "../acme-blobs", "a/b", "ab", "Acme"] {
            let spec = OrganizationSpec {
                storage: Some(aerugo_crds::organization::OrganizationStorage {
                    bucket: bucket.into(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            assert!(
                matches!(validate(&org("acme", spec)), Err(Error::InvalidSpec(m)) if m.contains("bucket")),
                "{bucket:?}"
            );
        }
    }

    #[test]
    fn path_components_follow_the_oci_grammar() {
        for good in ["a", "acme", "a.b", "a_b", "a__b", "a-b", "a--b", "0x"] {
            assert!(is_path_component(good), "{good}");
        }
        for bad in ["", "A", "a.", ".a", "a___b", "a_", "a b", "a/b"] {
            assert!(!is_path_component(bad), "{bad}");
        }
    }
}
