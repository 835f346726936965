//! ApiKey → organization key rows (hash only) and the Secret that holds the key: a ready
//! `imagePullSecrets` entry or username/key for CI. Keys rotate on `rotateEvery` with an overlap
//! during which the previous key still works; deleting the object revokes its keys at once.

use std::collections::BTreeMap;
use std::time::Duration;

use aerugo_crds::apikey::{ApiKeyStatus, duration_seconds};
use aerugo_crds::{ApiKey, SecretType};
use aerugo_db::declared::{self, NewDeclaredKey};
use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use kube::{Resource as _, ResourceExt as _};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::context::Context;
use crate::controller::{Readiness, Synced};
use crate::error::{Error, Result};
use crate::org::uid_of;

/// Overlap of a rotation when `rotationOverlap` is not set.
const DEFAULT_OVERLAP: i64 = 3600;

/// An ApiKey that can be reconciled.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidKey {
    /// The object's UID.
    pub uid: Uuid,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The Organization object.
    pub organization: String,
    /// (glob relative to the organization, actions).
    pub scopes: Vec<(String, Vec<&'static str>)>,
    /// Lifetime of each key, seconds.
    pub expires_after: Option<i64>,
    /// Rotation period, seconds.
    pub rotate_every: Option<i64>,
    /// Rotation overlap, seconds.
    pub overlap: i64,
    /// The Secret.
    pub secret_name: String,
    /// Its type.
    pub secret_type: SecretType,
}

fn duration(field: &str, value: Option<&String>) -> Result<Option<i64>> {
    value
        .map(|v| {
            duration_seconds(v)
                .filter(|s| *s > 0)
                .ok_or_else(|| Error::InvalidSpec(format!("{field} {v:?} is not a duration like 90m, 72h or 30d")))
        })
        .transpose()
}

/// Checks an ApiKey: scopes with valid globs and actions, durations, an overlap shorter than
/// the rotation period.
pub fn validate(key: &ApiKey) -> Result<ValidKey> {
    if key.spec.scopes.is_empty() {
        return Err(Error::InvalidSpec("a key needs at least one scope".into()));
    }
    let mut scopes = Vec::new();
    for scope in &key.spec.scopes {
        if scope.repositories.starts_with('/') || scope.actions.is_empty() {
            return Err(Error::InvalidSpec(format!(
                "scope {:?}: a glob relative to the organization and at least one action",
                scope.repositories
            )));
        }
        globset::GlobBuilder::new(&scope.repositories)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::InvalidSpec(format!("scope {:?}: {e}", scope.repositories)))?;
        scopes.push((scope.repositories.clone(), scope.actions.iter().map(|a| a.as_str()).collect()));
    }
    let secret_name = key.spec.secret_name.clone().unwrap_or_else(|| key.name_any());
    if !aerugo_crds::common::is_dns_subdomain(&secret_name) {
        return Err(Error::InvalidSpec(format!(
            "secretName {secret_name:?} is not a Secret name (RFC 1123: lowercase letters, digits, '-' and '.', at most 253 characters)"
        )));
    }
    let rotate_every = duration("rotateEvery", key.spec.rotate_every.as_ref())?;
    let overlap = duration("rotationOverlap", key.spec.rotation_overlap.as_ref())?.unwrap_or(DEFAULT_OVERLAP);
    if rotate_every.is_some_and(|r| overlap >= r) {
        return Err(Error::InvalidSpec("rotationOverlap must be shorter than rotateEvery".into()));
    }
    Ok(ValidKey {
        uid: uid_of(key.metadata.uid.as_deref())?,
        namespace: key.namespace().unwrap_or_default(),
        name: key.name_any(),
        organization: key.spec.organization_ref.name.clone(),
        scopes,
        expires_after: duration("expiresAfter", key.spec.expires_after.as_ref())?,
        rotate_every,
        overlap,
        secret_name,
        secret_type: key.spec.secret_type,
    })
}

/// The key's scopes as the registry stores them: globs over full repository names.
pub fn desired_scopes(key: &ValidKey, org_name: &str) -> Value {
    Value::Array(
        key.scopes
            .iter()
            .map(|(glob, actions)| json!({ "repositories": format!("{org_name}/{glob}"), "actions": actions }))
            .collect(),
    )
}

/// The Secret holding `token` for `org_name` on `host`.
pub fn desired_secret(key: &ValidKey, host: &str, org_name: &str, token: &str, owner: Option<&ApiKey>) -> Secret {
    let mut data = BTreeMap::new();
    let type_ = match key.secret_type {
        SecretType::DockerConfigJson => {
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("{org_name}:{token}"));
            let config = json!({ "auths": { host: { "username": org_name, "password": token, "auth": auth } } });
            data.insert(".dockerconfigjson".to_owned(), ByteString(config.to_string().into_bytes()));
            "kubernetes.io/dockerconfigjson"
        }
        SecretType::Opaque => {
            data.insert("username".to_owned(), ByteString(org_name.as_bytes().to_vec()));
            data.insert("apiKey".to_owned(), ByteString(token.as_bytes().to_vec()));
            data.insert("registry".to_owned(), ByteString(host.as_bytes().to_vec()));
            "Opaque"
        }
    };
    Secret {
        metadata: ObjectMeta {
            name: Some(key.secret_name.clone()),
            namespace: Some(key.namespace.clone()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".to_owned(), "aerugo-operator".to_owned()),
                ("aerugo.io/api-key".to_owned(), key.name.clone()),
            ])),
            owner_references: owner.and_then(|o| o.controller_owner_ref(&())).map(|r| vec![r]),
            ..Default::default()
        },
        type_: Some(type_.to_owned()),
        data: Some(data),
        ..Default::default()
    }
}

/// Whether `secret` is the one the ApiKey `key` writes, so the operator may overwrite or delete
/// it. In a cluster the Secret names the ApiKey (its UID) as an owner; in file mode, where
/// manifests carry no owner references, its labels name the operator and the ApiKey. Any other
/// Secret of that name belongs to someone else and is never touched.
pub fn owns(key: &ValidKey, secret: &Secret, in_cluster: bool) -> bool {
    if in_cluster {
        let uid = key.uid.to_string();
        return secret.metadata.owner_references.iter().flatten().any(|r| r.uid == uid);
    }
    let labels = secret.metadata.labels.as_ref();
    let label = |name: &str| labels.and_then(|l| l.get(name)).map(String::as_str);
    label("app.kubernetes.io/managed-by") == Some("aerugo-operator") && label("aerugo.io/api-key") == Some(&key.name)
}

/// The Secret `key` may write: `Ok(None)` when none exists yet, `Ok(Some)` when it is the
/// key's own; `Err` (the reason to report) when a Secret of that name is someone else's.
async fn own_secret(ctx: &Context, key: &ValidKey) -> Result<Result<Option<Secret>, Readiness>> {
    let in_cluster = matches!(ctx.world, crate::world::World::Cluster(_));
    match ctx.world.secret(&key.namespace, &key.secret_name).await? {
        Some(secret) if !owns(key, &secret, in_cluster) => Ok(Err(Readiness::not_ready(
            "SecretConflict",
            format!(
                "a Secret {:?} already exists and is not this ApiKey's: it is left as it is; choose another secretName or delete that Secret",
                key.secret_name
            ),
        ))),
        existing => Ok(Ok(existing)),
    }
}

/// The key a Secret holds, if it holds one.
pub fn token_in(secret: &Secret) -> Option<String> {
    let data = secret.data.as_ref()?;
    if let Some(ByteString(bytes)) = data.get("apiKey") {
        return String::from_utf8(bytes.clone()).ok();
    }
    let config: Value = serde_json::from_slice(&data.get(".dockerconfigjson")?.0).ok()?;
    config["auths"].as_object()?.values().find_map(|a| a["password"].as_str().map(str::to_owned))
}

fn rfc3339(t: OffsetDateTime) -> Option<String> {
    t.format(&Rfc3339).ok()
}

/// Makes sure the Secret holds a live key with the declared scopes, rotating when due.
pub async fn sync(ctx: &Context, key: &ApiKey) -> Result<Synced<ApiKeyStatus>> {
    let valid = validate(key)?;
    let (_, org_uid) = crate::org::referenced(ctx, &valid.namespace, &valid.organization).await?;
    let existing_secret = match own_secret(ctx, &valid).await? {
        Ok(existing) => existing,
        Err(conflict) => {
            return Ok(Synced {
                status: ApiKeyStatus::default(),
                readiness: conflict,
                requeue: Some(Duration::from_secs(60)),
            });
        }
    };
    let token = existing_secret.as_ref().and_then(token_in);
    let mut client = ctx.db.get().await.map_err(aerugo_db::Error::from)?;
    let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
    let (org_id, org_name) = crate::org::row_of(&tx, org_uid, &valid.organization).await?;
    let scopes = desired_scopes(&valid, &org_name);
    let live = declared::live_keys(&tx, valid.uid).await?;
    let presented = token.as_deref().and_then(aerugo_auth::apikey::parse);
    let current = presented.as_ref().and_then(|p| live.iter().find(|k| k.key_id == p.key_id)).cloned();
    let now = OffsetDateTime::now_utc();
    let rotation_due =
        |created: OffsetDateTime| valid.rotate_every.is_some_and(|r| created + time::Duration::seconds(r) <= now);
    let (token, row) = match (&token, current) {
        (Some(token), Some(row)) if !rotation_due(row.created_at) => {
            declared::set_key_scopes(&tx, valid.uid, &scopes).await?;
            (token.clone(), row)
        }
        (_, previous) => {
            let new = aerugo_auth::apikey::generate().map_err(|e| Error::Io(e.to_string()))?;
            let expires_at = valid.expires_after.map(|s| now + time::Duration::seconds(s));
            let label = format!("{}/{}", valid.namespace, valid.name);
            let id = declared::insert_key(
                &tx,
                &NewDeclaredKey {
                    uid: valid.uid,
                    org_id,
                    key_id: &new.key_id,
                    key_hash: &new.secret_hash,
                    name: &label,
                    scopes: &scopes,
                    expires_at,
                },
            )
            .await?;
            match previous {
                // A rotation: the previous key keeps working for the overlap.
                Some(old) => {
                    declared::expire_key(&tx, old.id, now + time::Duration::seconds(valid.overlap)).await?;
                    declared::set_key_scopes(&tx, valid.uid, &scopes).await?;
                }
                // The Secret lost its key (or never had one): keys it does not hold are revoked.
                None => {
                    declared::revoke_keys(&tx, valid.uid, Some(id)).await?;
                }
            }
            tracing::info!(key = %label, key_id = %new.key_id, "generated an API key");
            let row = declared::DeclaredKey { id, key_id: new.key_id.clone(), expires_at, created_at: now };
            (new.token.clone(), row)
        }
    };
    tx.commit().await.map_err(aerugo_db::Error::from)?;
    let owner = matches!(ctx.world, crate::world::World::Cluster(_)).then_some(key);
    let secret = desired_secret(&valid, &ctx.settings.registry_host, &org_name, &token, owner);
    if existing_secret.as_ref().is_none_or(|s| s.data != secret.data || s.type_ != secret.type_) {
        ctx.world.put_secret(&secret).await?;
    }
    let next_rotation = valid.rotate_every.map(|r| row.created_at + time::Duration::seconds(r));
    let wake = [next_rotation, row.expires_at].into_iter().flatten().min();
    let requeue = wake.map(|t| Duration::from_secs(u64::try_from((t - now).whole_seconds().max(1)).unwrap_or(1)));
    Ok(Synced {
        status: ApiKeyStatus {
            key_id: Some(row.key_id.clone()),
            secret_name: Some(valid.secret_name.clone()),
            expires_at: row.expires_at.and_then(rfc3339),
            last_rotated_at: rfc3339(row.created_at),
            ..Default::default()
        },
        readiness: Readiness::ready(),
        requeue,
    })
}

/// Deleting the object revokes its keys at once and removes its Secret.
pub async fn cleanup(ctx: &Context, key: &ApiKey) -> Result<()> {
    let uid = uid_of(key.metadata.uid.as_deref())?;
    let client = ctx.db.get().await.map_err(aerugo_db::Error::from)?;
    let revoked = declared::revoke_keys(&client, uid, None).await?;
    // Only the key's own Secret goes; an invalid spec never wrote one.
    if let Ok(valid) = validate(key)
        && let Ok(Some(_)) = own_secret(ctx, &valid).await?
    {
        ctx.world.delete_secret(&valid.namespace, &valid.secret_name).await?;
    }
    tracing::info!(key = %key.name_any(), revoked, "API key revoked");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aerugo_crds::{ApiKeySpec, KeyAction, KeyScope, LocalRef};

    fn key(spec: ApiKeySpec) -> ApiKey {
        let mut k = ApiKey::new("ci", spec);
        k.metadata.namespace = Some("team".into());
        k.metadata.uid = Some("6f1c1d2e-0000-4000-8000-000000000003".into());
        k
    }

    fn spec() -> ApiKeySpec {
        ApiKeySpec {
            organization_ref: LocalRef { name: "acme".into() },
            scopes: vec![KeyScope { repositories: "team/*".into(), actions: vec![KeyAction::Pull, KeyAction::Push] }],
            ..Default::default()
        }
    }

    #[test]
    fn validates_scopes_and_durations() {
        let ok = validate(&key(ApiKeySpec { rotate_every: Some("30d".into()), ..spec() })).expect("valid");
        assert_eq!((ok.rotate_every, ok.overlap, ok.secret_name.as_str()), (Some(30 * 86_400), 3600, "ci"));
        assert_eq!(
            desired_scopes(&ok, "acme"),
            json!([{ "repositories": "acme/team/*", "actions": ["pull", "push"] }])
        );
        assert!(validate(&key(ApiKeySpec { scopes: vec![], ..spec() })).is_err());
        assert!(validate(&key(ApiKeySpec { expires_after: Some("soon".into()), ..spec() })).is_err());
        assert!(
            validate(&key(ApiKeySpec {
                rotate_every: Some("1h".into()),
                rotation_overlap: Some("2h".into()),
                ..spec()
            }))
            .is_err()
        );
        let bad_glob = KeyScope { repositories: "team/[".into(), actions: vec![KeyAction::Pull] };
        assert!(validate(&key(ApiKeySpec { scopes: vec![bad_glob], ..spec() })).is_err());
    }

    #[test]
    fn secrets_carry_the_key_in_the_declared_shape() {
        let valid = validate(&key(spec())).expect("valid");
        let secret = desired_secret(&valid, "registry.example.com", "acme", "ak_1_2", None);
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
        let config: Value =
            serde_json::from_slice(&secret.data.as_ref().expect("data")[".dockerconfigjson"].0).expect("json");
        let entry = &config["auths"]["registry.example.com"];
        assert_eq!((entry["username"].as_str(), entry["password"].as_str()), (Some("acme"), Some("ak_1_2")));
        let auth =
            base64::engine::general_purpose::STANDARD.decode(entry["auth"].as_str().expect("auth")).expect("b64");
        assert_eq!(auth, b"acme:ak_1_2");
        assert_eq!(token_in(&secret).as_deref(), Some("ak_1_2"));

        let opaque =
            validate(&key(ApiKeySpec { secret_type: SecretType::Opaque, secret_name: Some("push".into()), ..spec() }))
                .expect("valid");
        let secret = desired_secret(&opaque, "h", "acme", "ak_3_4", None);
        assert_eq!((secret.type_.as_deref(), secret.metadata.name.as_deref()), (Some("Opaque"), Some("push")));
        assert_eq!(token_in(&secret).as_deref(), Some("ak_3_4"));
    }

    #[test]
    fn secret_names_are_kubernetes_names_and_ownership_is_checked() {
        for bad in ["../../etc/cron.d/x", "a/b", "Push", "", "-x"] {
            let spec = ApiKeySpec { secret_name: Some(bad.into()), ..spec() };
            assert!(matches!(validate(&key(spec)), Err(Error::InvalidSpec(m)) if m.contains("secretName")), "{bad:?}");
        }
        let valid = validate(&key(spec())).expect("valid");
        let mut owner = ApiKey::new("ci", spec());
        owner.metadata.uid = Some(valid.uid.to_string());
        let written = desired_secret(&valid, "h", "acme", "ak_1_2", Some(&owner));
        assert!(owns(&valid, &written, true), "a cluster Secret the key owns");
        let file = desired_secret(&valid, "h", "acme", "ak_1_2", None);
        assert!(owns(&valid, &file, false), "a file-mode manifest the operator wrote for this key");
        assert!(!owns(&valid, &file, true), "in a cluster, labels alone prove nothing");
        let foreign =
            Secret { metadata: ObjectMeta { name: Some("ci".into()), ..Default::default() }, ..Default::default() };
        assert!(!owns(&valid, &foreign, true) && !owns(&valid, &foreign, false));
        let other_key = ValidKey { name: "other".into(), uid: Uuid::nil(), ..valid.clone() };
        assert!(!owns(&other_key, &written, true) && !owns(&other_key, &file, false), "another key's Secret");
    }
}
