//! Mirror → the `mirrors` row of its organization, which every data-plane node reads (within
//! two seconds) and serves; the status reports what the mirror holds. `validate` is pure;
//! `sync` resolves the organization and the credentials Secret and writes.

use aerugo_crds::Mirror;
use aerugo_crds::mirror::MirrorStatus;
use aerugo_crds::organization::quantity_bytes;
use aerugo_db::mirrors::{self, Declared, MirrorSpec};
use kube::ResourceExt as _;
use uuid::Uuid;

use crate::context::Context;
use crate::controller::{Readiness, Synced};
use crate::error::{Error, Result};
use crate::org::uid_of;

/// How often a mirror's status (what it holds) is read again.
const STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// `staleAfter` when the spec does not say.
pub const DEFAULT_STALE_AFTER: &str = "10m";

/// A Mirror that can be reconciled.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidMirror {
    /// The object's UID.
    pub uid: Uuid,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The Organization object it fills.
    pub organization: String,
    /// The upstream root URL, as stored.
    pub upstream: String,
    /// `?ns=` host names, lowercased, each once.
    pub registry_hosts: Vec<String>,
    /// The credentials Secret's name.
    pub credentials_secret: Option<String>,
    /// Upstream repository globs.
    pub repositories: Vec<String>,
    /// Seconds a tag is trusted.
    pub stale_after_seconds: i64,
    /// Serve stale on upstream errors.
    pub serve_stale_on_error: bool,
    /// Byte cap.
    pub max_bytes: Option<i64>,
}

/// Checks a Mirror: the database crate's checks of the upstream, globs and hosts, a
/// `staleAfter` duration and a `maxSize` quantity.
pub fn validate(mirror: &Mirror) -> Result<ValidMirror> {
    let spec = &mirror.spec;
    let upstream = mirrors::check_upstream(&spec.upstream).map_err(Error::InvalidSpec)?;
    let mut registry_hosts: Vec<String> = Vec::new();
    let declared = if spec.registry_hosts.is_empty() {
        mirrors::default_registry_host(&upstream).into_iter().collect()
    } else {
        spec.registry_hosts.clone()
    };
    for host in declared {
        let host = host.to_ascii_lowercase();
        if !registry_hosts.contains(&host) {
            registry_hosts.push(host);
        }
    }
    let stale_text = spec.stale_after.as_deref().unwrap_or(DEFAULT_STALE_AFTER);
    let stale_after_seconds = aerugo_db::retention::parse_duration(stale_text)
        .map(|d| d.whole_seconds())
        .ok_or_else(|| Error::InvalidSpec(format!("staleAfter {stale_text:?} is not a duration (90s, 15m, 6h, 1d)")))?;
    let max_bytes = spec
        .max_size
        .as_deref()
        .map(|q| quantity_bytes(q).ok_or_else(|| Error::InvalidSpec(format!("maxSize {q:?} is not a quantity"))))
        .transpose()?;
    let valid = ValidMirror {
        uid: uid_of(mirror.metadata.uid.as_deref())?,
        namespace: mirror.namespace().unwrap_or_default(),
        name: mirror.name_any(),
        organization: spec.organization_ref.name.clone(),
        upstream,
        registry_hosts,
        credentials_secret: spec.credentials_secret.as_ref().map(|s| s.name.clone()),
        repositories: spec.repositories.clone(),
        stale_after_seconds,
        serve_stale_on_error: spec.serve_stale_on_error.unwrap_or(true),
        max_bytes,
    };
    valid.spec(None).check().map_err(Error::InvalidSpec)?;
    Ok(valid)
}

impl ValidMirror {
    fn spec<'a>(&'a self, credentials: Option<(&'a str, &'a str)>) -> MirrorSpec<'a> {
        MirrorSpec {
            upstream: &self.upstream,
            registry_hosts: &self.registry_hosts,
            credentials,
            repositories: &self.repositories,
            stale_after_seconds: self.stale_after_seconds,
            serve_stale_on_error: self.serve_stale_on_error,
            max_bytes: self.max_bytes,
        }
    }
}

/// Writes the row and reports what the mirror holds.
pub async fn sync(ctx: &Context, obj: &Mirror) -> Result<Synced<MirrorStatus>> {
    let valid = validate(obj)?;
    let (_, org_uid) = crate::org::referenced(ctx, &valid.namespace, &valid.organization).await?;
    let credentials = match &valid.credentials_secret {
        None => None,
        Some(name) => Some(credentials(ctx, &valid.namespace, name).await?),
    };
    let mut client = ctx.db.get().await.map_err(aerugo_db::Error::from)?;
    let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
    let (org_id, org_name) = crate::org::row_of(&tx, org_uid, &valid.organization).await?;
    let spec = valid.spec(credentials.as_ref().map(|(u, p)| (u.as_str(), p.as_str())));
    let not_ready = |reason, message| {
        Ok(Synced {
            status: MirrorStatus::default(),
            readiness: Readiness::not_ready(reason, message),
            requeue: Some(std::time::Duration::from_secs(60)),
        })
    };
    let id = match mirrors::declare(&tx, valid.uid, &valid.namespace, org_id, &valid.name, &spec).await? {
        Declared::Owned(id) => id,
        Declared::OrganizationTaken(other) => {
            return not_ready("OrganizationTaken", format!("organization {org_name:?} is filled by Mirror {other}"));
        }
        Declared::HostTaken(host, other) => {
            return not_ready("RegistryHostTaken", format!("registry host {host:?} is served by Mirror {other}"));
        }
    };
    tx.commit().await.map_err(aerugo_db::Error::from)?;
    let cached_bytes = mirrors::cached_bytes(&client, org_id).await?;
    Ok(Synced {
        status: MirrorStatus {
            mirror_id: Some(id),
            registry_hosts: valid.registry_hosts.clone(),
            cached_bytes,
            cached: Some(aerugo_db::binary_units(cached_bytes)),
            ..Default::default()
        },
        readiness: Readiness::ready(),
        requeue: Some(STATUS_EVERY),
    })
}

/// The `username` and `password` keys of Secret `name`; waits while either is missing.
async fn credentials(ctx: &Context, namespace: &str, name: &str) -> Result<(String, String)> {
    let secret = ctx.world.secret(namespace, name).await?.ok_or_else(|| Error::Waiting {
        reason: "SecretNotFound",
        message: format!("no Secret {name:?} in namespace {namespace:?} (credentialsSecret)"),
    })?;
    let value = |key: &str| {
        let bytes = secret.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.clone()).unwrap_or_default();
        String::from_utf8(bytes).ok().filter(|v| !v.is_empty()).ok_or_else(|| Error::Waiting {
            reason: "SecretKeyNotFound",
            message: format!("Secret {name:?} has no UTF-8 key {key:?} (credentialsSecret)"),
        })
    };
    Ok((value("username")?, value("password")?))
}

/// Deletes the mirror row; the organization keeps what was fetched, and serves it as ordinary
/// content (accepting pushes again).
pub async fn cleanup(ctx: &Context, obj: &Mirror) -> Result<()> {
    let uid = uid_of(obj.metadata.uid.as_deref())?;
    let client = ctx.db.get().await.map_err(aerugo_db::Error::from)?;
    if mirrors::forget_declared(&client, uid).await? {
        tracing::info!(mirror = %obj.name_any(), "mirror deleted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aerugo_crds::{LocalRef, MirrorSpec as Spec};

    fn mirror(spec: Spec) -> Mirror {
        let mut m = Mirror::new("hub", spec);
        m.metadata.namespace = Some("platform".into());
        m.metadata.uid = Some("6f1c1d2e-0000-4000-8000-00000000000a".into());
        m
    }

    fn spec() -> Spec {
        Spec {
            organization_ref: LocalRef { name: "dockerhub".into() },
            upstream: "https://registry-1.docker.io/".into(),
            ..Default::default()
        }
    }

    #[test]
    fn validates_upstream_hosts_staleness_and_cap() {
        let ok = validate(&mirror(spec())).expect("valid");
        assert_eq!(ok.upstream, "https://registry-1.docker.io");
        assert_eq!(ok.registry_hosts, ["registry-1.docker.io"], "the upstream's host by default");
        assert_eq!((ok.stale_after_seconds, ok.serve_stale_on_error, ok.max_bytes), (600, true, None));
        let full = validate(&mirror(Spec {
            registry_hosts: vec!["Docker.io".into(), "docker.io".into()],
            stale_after: Some("0s".into()),
            serve_stale_on_error: Some(false),
            max_size: Some("10Gi".into()),
            repositories: vec!["library/*".into()],
            ..spec()
        }))
        .expect("valid");
        assert_eq!(full.registry_hosts, ["docker.io"]);
        assert_eq!((full.stale_after_seconds, full.serve_stale_on_error, full.max_bytes), (0, false, Some(10 << 30)));
        for bad in [
            Spec { upstream: "https://u:p@registry.test".into(), ..spec() },
            Spec { upstream: "https://registry.test/v2/".into(), ..spec() },
            Spec { stale_after: Some("soon".into()), ..spec() },
            Spec { max_size: Some("lots".into()), ..spec() },
            Spec { max_size: Some("0".into()), ..spec() },
            Spec { repositories: vec!["[".into()], ..spec() },
            Spec { registry_hosts: vec!["https://docker.io".into()], ..spec() },
        ] {
            assert!(validate(&mirror(bad.clone())).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(aerugo_db::binary_units(512), "512 B");
        assert_eq!(aerugo_db::binary_units(3 << 29), "1.5 GiB");
    }
}
