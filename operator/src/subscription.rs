//! EventSubscription → an `event_subscriptions` row of its organization, which the data-plane
//! nodes deliver; the status reports how delivery goes (last delivery, failing, backlog).
//! `validate` is pure; `sync` resolves the organization and the signing Secret and writes.

use aerugo_crds::subscription::{EventSubscriptionStatus, LastDelivered};
use aerugo_crds::{EventSubscription, EventType};
use aerugo_db::events::{self, Declared, SubscriptionSpec};
use kube::ResourceExt as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::context::Context;
use crate::controller::{Readiness, Synced};
use crate::error::{Error, Result};
use crate::org::uid_of;

/// How often a subscription's delivery status is read again.
const STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// An EventSubscription that can be reconciled.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSubscription {
    /// The object's UID.
    pub uid: Uuid,
    /// Its namespace.
    pub namespace: String,
    /// Its name (the subscription's name in the organization).
    pub name: String,
    /// The Organization object it watches.
    pub organization: String,
    /// The endpoint URL.
    pub endpoint: String,
    /// CloudEvents types, in the order declared, each once.
    pub types: Vec<String>,
    /// Repository globs.
    pub repositories: Vec<String>,
    /// Events per request.
    pub batch_size: i32,
    /// (Secret, key) of the signing key.
    pub signing_secret: Option<(String, String)>,
    /// Replay from this time.
    pub replay_from: Option<OffsetDateTime>,
}

/// Checks an EventSubscription: an http(s) URL with a host, valid globs, a batch size of 1 to
/// 1000, an RFC 3339 `replayFrom` (the database crate's checks, and the CRD's).
pub fn validate(sub: &EventSubscription) -> Result<ValidSubscription> {
    let spec = &sub.spec;
    let endpoint = events::check_endpoint(&spec.endpoint).map_err(Error::InvalidSpec)?;
    let mut types: Vec<String> = Vec::new();
    for t in &spec.types {
        let t = EventType::cloudevents_type(*t).to_owned();
        if !types.contains(&t) {
            types.push(t);
        }
    }
    let batch_size = spec.batch_size.unwrap_or(1);
    SubscriptionSpec {
        endpoint: &endpoint,
        types: &types,
        repositories: &spec.repositories,
        batch_size,
        signing_secret: None,
    }
    .check()
    .map_err(Error::InvalidSpec)?;
    let replay_from = spec
        .replay_from
        .as_deref()
        .map(|t| {
            OffsetDateTime::parse(t, &Rfc3339)
                .map_err(|_| Error::InvalidSpec(format!("replayFrom {t:?} is not an RFC 3339 time")))
        })
        .transpose()?;
    let signing_secret =
        spec.signing_secret.as_ref().map(|s| (s.name.clone(), s.key.clone().unwrap_or_else(|| "secret".to_owned())));
    Ok(ValidSubscription {
        uid: uid_of(sub.metadata.uid.as_deref())?,
        namespace: sub.namespace().unwrap_or_default(),
        name: sub.name_any(),
        organization: spec.organization_ref.name.clone(),
        endpoint,
        types,
        repositories: spec.repositories.clone(),
        batch_size,
        signing_secret,
        replay_from,
    })
}

/// Writes the row, replays when `replayFrom` changed, and reports delivery.
pub async fn sync(ctx: &Context, obj: &EventSubscription) -> Result<Synced<EventSubscriptionStatus>> {
    let valid = validate(obj)?;
    let (_, org_uid) = crate::org::referenced(ctx, &valid.namespace, &valid.organization).await?;
    let secret = match &valid.signing_secret {
        None => None,
        Some((name, key)) => Some(signing_key(ctx, &valid.namespace, name, key).await?),
    };
    let mut client = ctx.db.get().await.map_err(aerugo_db::Error::from)?;
    let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
    let (org_id, org_name) = crate::org::row_of(&tx, org_uid, &valid.organization).await?;
    let spec = SubscriptionSpec {
        endpoint: &valid.endpoint,
        types: &valid.types,
        repositories: &valid.repositories,
        batch_size: valid.batch_size,
        signing_secret: secret.as_deref(),
    };
    spec.check().map_err(|e| Error::Waiting { reason: "InvalidSigningSecret", message: e })?;
    let id = match events::declare(&tx, valid.uid, &valid.namespace, org_id, &valid.name, &spec).await? {
        Declared::Owned(id) => id,
        Declared::Taken => {
            return Ok(Synced {
                status: EventSubscriptionStatus::default(),
                readiness: Readiness::not_ready(
                    "NameTaken",
                    format!(
                        "organization {org_name:?} has a subscription {:?} created through the management API",
                        valid.name
                    ),
                ),
                requeue: Some(std::time::Duration::from_secs(60)),
            });
        }
    };
    let row = events::subscription(&tx, id).await?.ok_or_else(|| Error::Io("the subscription row vanished".into()))?;
    if let Some(from) = valid.replay_from
        && row.replayed_from != Some(from)
    {
        events::replay(&tx, id, from).await?;
        tracing::info!(subscription = %valid.name, org = %org_name, from = %from, "replaying events");
    }
    tx.commit().await.map_err(aerugo_db::Error::from)?;
    let row =
        events::subscription(&client, id).await?.ok_or_else(|| Error::Io("the subscription row vanished".into()))?;
    let backlog = events::backlog(&client, &row).await?;
    Ok(Synced { status: status_of(&row, backlog), readiness: Readiness::ready(), requeue: Some(STATUS_EVERY) })
}

/// The status a subscription row reports.
pub fn status_of(row: &events::Subscription, backlog: i64) -> EventSubscriptionStatus {
    let rfc3339 = |t: OffsetDateTime| t.format(&Rfc3339).ok();
    EventSubscriptionStatus {
        subscription_id: Some(row.id),
        last_delivered: row.last_delivered_at.and_then(rfc3339).map(|time| LastDelivered {
            time,
            event_id: row.last_delivered_id.map(|i| i.to_string()).unwrap_or_default(),
        }),
        delivered: row.delivered,
        failing: row.failing(),
        failing_since: if row.failing() { row.failing_since.and_then(rfc3339) } else { None },
        last_error: if row.failing() { row.last_error.clone() } else { None },
        backlog,
        replayed_from: row.replayed_from.and_then(rfc3339),
        ..Default::default()
    }
}

/// The signing key in `key` of Secret `name`; waits while either is missing.
async fn signing_key(ctx: &Context, namespace: &str, name: &str, key: &str) -> Result<Vec<u8>> {
    let secret = ctx.world.secret(namespace, name).await?.ok_or_else(|| Error::Waiting {
        reason: "SecretNotFound",
        message: format!("no Secret {name:?} in namespace {namespace:?} (signingSecret)"),
    })?;
    let value = secret.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.clone());
    match value {
        Some(bytes) if !bytes.is_empty() => Ok(bytes),
        _ => Err(Error::Waiting {
            reason: "SecretKeyNotFound",
            message: format!("Secret {name:?} has no key {key:?} (signingSecret)"),
        }),
    }
}

/// Deletes the subscription row (its cursors go with it; events stay for the feed).
pub async fn cleanup(ctx: &Context, obj: &EventSubscription) -> Result<()> {
    let uid = uid_of(obj.metadata.uid.as_deref())?;
    let client = ctx.db.get().await.map_err(aerugo_db::Error::from)?;
    if events::forget_declared(&client, uid).await? {
        tracing::info!(subscription = %obj.name_any(), "event subscription deleted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aerugo_crds::{EventSubscriptionSpec, LocalRef};

    fn sub(spec: EventSubscriptionSpec) -> EventSubscription {
        let mut s = EventSubscription::new("ci", spec);
        s.metadata.namespace = Some("team".into());
        s.metadata.uid = Some("6f1c1d2e-0000-4000-8000-000000000009".into());
        s
    }

    fn spec() -> EventSubscriptionSpec {
        EventSubscriptionSpec {
            organization_ref: LocalRef { name: "acme".into() },
            endpoint: "https://hooks.example.test/aerugo".into(),
            types: vec![EventType::ManifestPushed, EventType::TagMoved, EventType::ManifestPushed],
            ..Default::default()
        }
    }

    #[test]
    fn validates_endpoint_types_globs_batch_and_replay() {
        let ok = validate(&sub(spec())).expect("valid");
        assert_eq!(ok.types, ["io.aerugo.manifest.pushed", "io.aerugo.tag.moved"], "each type once");
        assert_eq!((ok.batch_size, ok.name.as_str(), ok.organization.as_str()), (1, "ci", "acme"));
        for bad in ["ftp://x/", "http://", "hooks.example.test", "https://user:pw@x/", "not a url"] {
            assert!(validate(&sub(EventSubscriptionSpec { endpoint: bad.into(), ..spec() })).is_err(), "{bad}");
        }
        assert!(validate(&sub(EventSubscriptionSpec { types: vec![], ..spec() })).is_err());
        assert!(validate(&sub(EventSubscriptionSpec { repositories: vec!["team/[".into()], ..spec() })).is_err());
        assert!(validate(&sub(EventSubscriptionSpec { batch_size: Some(0), ..spec() })).is_err());
        assert!(validate(&sub(EventSubscriptionSpec { batch_size: Some(1001), ..spec() })).is_err());
        assert!(validate(&sub(EventSubscriptionSpec { replay_from: Some("yesterday".into()), ..spec() })).is_err());
        let replay =
            validate(&sub(EventSubscriptionSpec { replay_from: Some("2026-12-01T00:00:00Z".into()), ..spec() }));
        assert_eq!(replay.expect("valid").replay_from.map(|t| t.unix_timestamp()), Some(1_796_083_200));
        let signed = EventSubscriptionSpec {
            signing_secret: Some(aerugo_crds::registry::SecretKeyRef { name: "hook".into(), key: None }),
            ..spec()
        };
        assert_eq!(validate(&sub(signed)).expect("valid").signing_secret, Some(("hook".into(), "secret".into())));
    }

    #[test]
    fn every_crd_event_type_is_one_the_database_writes() {
        for t in EventType::ALL {
            assert!(aerugo_db::events::TYPES.contains(&t.cloudevents_type()), "{t:?}");
        }
        assert_eq!(EventType::ALL.len(), aerugo_db::events::TYPES.len());
    }
}
