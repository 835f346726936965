//! Repository → a `repositories` row of its organization, with grants for users and API keys.
//! `validate` and `desired` are pure; `sync` resolves references and writes.

use aerugo_crds::repository::RepositoryStatus;
use aerugo_crds::{ReclaimPolicy, Repository, Visibility};
use aerugo_db::declared::{self, Claim, DeclaredRepo};
use kube::ResourceExt as _;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::context::Context;
use crate::controller::{Readiness, Synced};
use crate::error::{Error, Result};
use crate::org::{is_path_component, uid_of};

/// A grant subject as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A registry user.
    User(String),
    /// An ApiKey object of the namespace.
    ApiKey(String),
}

/// A Repository that can be reconciled.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRepo {
    /// The object's UID.
    pub uid: Uuid,
    /// Its namespace.
    pub namespace: String,
    /// The Organization object it belongs to.
    pub organization: String,
    /// The path inside the organization.
    pub path: String,
    /// Visibility, if set (else the organization's default).
    pub visibility: Option<Visibility>,
    /// Grants.
    pub grants: Vec<(Subject, &'static str)>,
    /// Immutable tag patterns.
    pub immutable_tags: Vec<String>,
    /// Retention, as stored.
    pub retention: Option<Value>,
    /// `reclaimPolicy: Delete`.
    pub delete_data: bool,
}

/// Checks a Repository: a path of valid components, grants naming one subject each, valid
/// tag patterns.
pub fn validate(repo: &Repository) -> Result<ValidRepo> {
    let path = repo.spec.name.clone().unwrap_or_else(|| repo.name_any());
    if path.len() > 200 || !path.split('/').all(is_path_component) {
        return Err(Error::InvalidSpec(format!(
            "the repository name {path:?} is not valid: path components of lowercase letters and digits separated by '.', '_' or '-', joined by '/'"
        )));
    }
    let mut grants = Vec::new();
    for grant in &repo.spec.grants {
        let subject = match (&grant.user, &grant.api_key_ref) {
            (Some(user), None) => Subject::User(user.clone()),
            (None, Some(key)) => Subject::ApiKey(key.name.clone()),
            _ => return Err(Error::InvalidSpec("each grant names exactly one of user or apiKeyRef".into())),
        };
        if grants.iter().any(|(s, _)| *s == subject) {
            return Err(Error::InvalidSpec(format!("{subject:?} is granted twice")));
        }
        grants.push((subject, grant.access.as_db()));
    }
    for pattern in &repo.spec.immutable_tags {
        globset::Glob::new(pattern).map_err(|e| Error::InvalidSpec(format!("immutableTags: {pattern:?}: {e}")))?;
    }
    let retention = retention_value(repo.spec.retention.as_ref())?;
    Ok(ValidRepo {
        uid: uid_of(repo.metadata.uid.as_deref())?,
        namespace: repo.namespace().unwrap_or_default(),
        organization: repo.spec.organization_ref.name.clone(),
        path,
        visibility: repo.spec.visibility,
        grants,
        immutable_tags: repo.spec.immutable_tags.clone(),
        retention,
        delete_data: repo.spec.reclaim_policy == ReclaimPolicy::Delete,
    })
}

/// A declared retention policy as stored, once checked (durations, patterns).
pub fn retention_value(retention: Option<&aerugo_crds::Retention>) -> Result<Option<Value>> {
    let Some(retention) = retention else { return Ok(None) };
    let value = serde_json::to_value(retention).map_err(|e| Error::InvalidSpec(format!("retention: {e}")))?;
    let policy: aerugo_db::retention::Policy =
        serde_json::from_value(value.clone()).map_err(|e| Error::InvalidSpec(format!("retention: {e}")))?;
    policy.check().map_err(|e| Error::InvalidSpec(format!("retention: {e}")))?;
    Ok(Some(value))
}

/// The Event a retention run is worth.
pub fn notice(
    before: Option<&RepositoryStatus>,
    after: &RepositoryStatus,
) -> Option<(&'static str, &'static str, String)> {
    let after = after.retention.as_ref()?;
    crate::retention::notice(before.and_then(|b| b.retention.as_ref()), after).map(|(r, n)| ("Retention", r, n))
}

/// The row a Repository declares, once its organization is known.
pub fn desired<'a>(
    repo: &'a ValidRepo,
    org_id: i64,
    full_name: &'a str,
    default_visibility: Visibility,
) -> DeclaredRepo<'a> {
    DeclaredRepo {
        uid: repo.uid,
        namespace: &repo.namespace,
        org_id,
        name: full_name,
        visibility: repo.visibility.unwrap_or(default_visibility).as_db(),
        immutable_tag_patterns: &repo.immutable_tags,
        retention: repo.retention.as_ref(),
        reclaim_policy: if repo.delete_data { "delete" } else { "retain" },
    }
}

/// Resolves the organization and grant subjects, writes the row and grants.
pub async fn sync(ctx: &Context, repo: &Repository) -> Result<Synced<RepositoryStatus>> {
    let valid = validate(repo)?;
    let (org, org_uid) = crate::org::referenced(ctx, &valid.namespace, &valid.organization).await?;
    let mut client = ctx.db.get().await.map_err(aerugo_db::Error::from)?;
    let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
    let (org_id, org_name) = crate::org::row_of(&tx, org_uid, &valid.organization).await?;
    let full_name = format!("{org_name}/{}", valid.path);
    if full_name.len() > 255 {
        return Err(Error::InvalidSpec(format!("the repository name {full_name:?} is longer than 255 characters")));
    }
    let row = desired(&valid, org_id, &full_name, org.spec.default_visibility);
    let id = match declared::sync_repo(&tx, &row).await? {
        Claim::Owned { id, .. } => id,
        Claim::Taken { namespace } => {
            let holder =
                namespace.map_or("the management API".to_owned(), |ns| format!("a Repository in namespace {ns:?}"));
            return Ok(Synced {
                status: RepositoryStatus { full_name: Some(full_name.clone()), ..Default::default() },
                readiness: Readiness::not_ready("NameTaken", format!("{full_name:?} is held by {holder}")),
                requeue: Some(std::time::Duration::from_secs(60)),
            });
        }
    };
    let mut subjects: Vec<(&str, i64, &str)> = Vec::new();
    let mut missing = Vec::new();
    let users: Vec<&str> = valid
        .grants
        .iter()
        .filter_map(|(s, _)| if let Subject::User(u) = s { Some(u.as_str()) } else { None })
        .collect();
    let user_ids = declared::user_ids(&tx, &users).await?;
    for (subject, access) in &valid.grants {
        match subject {
            Subject::User(name) => match user_ids.iter().find(|(u, _)| u == name) {
                Some((_, id)) => subjects.push(("user", *id, access)),
                None => missing.push(format!("user {name:?}")),
            },
            Subject::ApiKey(name) => {
                let key = ctx.world.api_key(&valid.namespace, name).await?;
                let keys =
                    match key.as_ref().and_then(|k| k.metadata.uid.as_deref()).and_then(|u| Uuid::parse_str(u).ok()) {
                        Some(uid) => declared::live_keys(&tx, uid).await?,
                        None => Vec::new(),
                    };
                if keys.is_empty() {
                    missing.push(format!("ApiKey {name:?}"));
                }
                subjects.extend(keys.iter().map(|k| ("api_key", k.id, *access)));
            }
        }
    }
    declared::sync_grants(&tx, id, &subjects).await?;
    tx.commit().await.map_err(aerugo_db::Error::from)?;
    // One pooled connection at a time: a reconcile holding one while waiting for another could
    // starve the pool under many concurrent reconciles.
    drop(client);
    // The policy in force (its own or its organization's) runs at each reconcile.
    let retention = crate::retention::run(ctx, &full_name).await?.map(|r| crate::retention::status_of(&r));
    let client = ctx.db.get().await.map_err(aerugo_db::Error::from)?;
    let (tags, bytes, last_push) = declared::repo_usage(&client, id).await?;
    let (readiness, requeue) = if missing.is_empty() {
        (Readiness::ready(), None)
    } else {
        // A key not generated yet, or a user not created yet: look again soon.
        let why = format!("no {} (the other grants are in place)", missing.join(", "));
        (Readiness::not_ready("GrantSubjectNotFound", why), Some(std::time::Duration::from_secs(5)))
    };
    Ok(Synced {
        status: RepositoryStatus {
            repository_id: Some(id),
            full_name: Some(full_name),
            tag_count: Some(tags),
            size_bytes: Some(bytes),
            last_push_at: last_push.and_then(|t| t.format(&Rfc3339).ok()),
            retention,
            ..Default::default()
        },
        readiness,
        requeue,
    })
}

/// The reclaim policy: keep the row (orphaned, adoptable) or delete it with its data.
pub async fn cleanup(ctx: &Context, repo: &Repository) -> Result<()> {
    let uid = uid_of(repo.metadata.uid.as_deref())?;
    release(ctx, uid, repo.spec.reclaim_policy == ReclaimPolicy::Delete, &repo.name_any()).await
}

/// Releases the row of the Repository object `uid`: orphaned, or deleted with its data.
pub async fn release(ctx: &Context, uid: Uuid, delete: bool, name: &str) -> Result<()> {
    let mut client = ctx.db.get().await.map_err(aerugo_db::Error::from)?;
    let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
    let released = declared::release_repo(&tx, uid, delete).await?;
    tx.commit().await.map_err(aerugo_db::Error::from)?;
    tracing::info!(repository = %name, delete, rows = released.rows, unreferenced_blobs = released.unreferenced_blobs, "repository released");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aerugo_crds::{Access, Grant, LocalRef, RepositorySpec};

    fn repo(name: &str, spec: RepositorySpec) -> Repository {
        let mut r = Repository::new(name, spec);
        r.metadata.namespace = Some("team".into());
        r.metadata.uid = Some("6f1c1d2e-0000-4000-8000-000000000002".into());
        r
    }

    fn spec() -> RepositorySpec {
        RepositorySpec { organization_ref: LocalRef { name: "acme".into() }, ..Default::default() }
    }

    #[test]
    fn validates_paths_grants_and_patterns() {
        let ok = validate(&repo("app", RepositorySpec { name: Some("team/app".into()), ..spec() })).expect("valid");
        assert_eq!(ok.path, "team/app");
        assert_eq!(validate(&repo("app", spec())).expect("default name").path, "app");
        let row = desired(&ok, 7, "acme/team/app", Visibility::Public);
        assert_eq!((row.org_id, row.visibility), (7, "public"));

        for bad in ["Team/app", "team//app", "/app", "app/", "a b"] {
            assert!(validate(&repo("app", RepositorySpec { name: Some(bad.into()), ..spec() })).is_err(), "{bad}");
        }
        let both =
            Grant { user: Some("u".into()), api_key_ref: Some(LocalRef { name: "k".into() }), access: Access::Pull };
        assert!(validate(&repo("app", RepositorySpec { grants: vec![both], ..spec() })).is_err());
        let neither = Grant { user: None, api_key_ref: None, access: Access::Pull };
        assert!(validate(&repo("app", RepositorySpec { grants: vec![neither], ..spec() })).is_err());
        assert!(validate(&repo("app", RepositorySpec { immutable_tags: vec!["v[".into()], ..spec() })).is_err());
    }

    #[test]
    fn every_retention_field_reaches_the_policy_the_collector_reads() {
        // The stored policy refuses unknown fields: a CRD field it did not know would fail here.
        let full = aerugo_crds::Retention {
            mode: aerugo_crds::RetentionMode::Enforce,
            keep_last: Some(3),
            keep_within: Some("30d".into()),
            keep_pulled_within: Some("2w".into()),
            tag_pattern: Some("build-*".into()),
            protect: vec!["v*".into()],
            delete_untagged: false,
        };
        let stored = retention_value(Some(&full)).expect("valid").expect("stored");
        let policy: aerugo_db::retention::Policy = serde_json::from_value(stored).expect("policy");
        assert_eq!(policy.mode, aerugo_db::retention::Mode::Enforce);
        assert_eq!(
            (policy.keep_last, policy.keep_pulled_within.as_deref(), policy.delete_untagged),
            (Some(3), Some("2w"), false)
        );
        let bad = aerugo_crds::Retention { protect: vec!["v[".into()], ..full };
        assert!(matches!(retention_value(Some(&bad)), Err(Error::InvalidSpec(_))));
    }
}
