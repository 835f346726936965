//! `EventSubscription`: where an organization's events are delivered, as CloudEvents 1.0 over
//! HTTP, at least once and in order per repository.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::LocalRef;
use crate::registry::SecretKeyRef;

/// Delivers the events of an Organization (same namespace) to an HTTP endpoint. Each change
/// (a push, a tag moved, a deletion…) is recorded in the transaction that makes it and POSTed
/// as a CloudEvent until the endpoint answers 2xx; `partitionkey` names the repository and
/// `sequence` numbers its events in commit order (1, 2, 3… over every type: with all types
/// subscribed there are no gaps), so a receiver can check order and drop duplicates (a
/// redelivery keeps the event's `id`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "aerugo.io",
    version = "v1alpha1",
    kind = "EventSubscription",
    namespaced,
    status = "EventSubscriptionStatus",
    shortname = "aesub",
    category = "aerugo",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Org","type":"string","jsonPath":".spec.organizationRef.name"}"#,
    printcolumn = r#"{"name":"Failing","type":"boolean","jsonPath":".status.failing"}"#,
    printcolumn = r#"{"name":"Backlog","type":"integer","jsonPath":".status.backlog"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EventSubscriptionSpec {
    /// The Organization (same namespace) whose events are delivered. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("organizationRef is immutable"))]
    pub organization_ref: LocalRef,
    /// The URL events are POSTed to (`http://` or `https://`).
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub endpoint: String,
    /// The event types delivered. At least one; `ManifestPulled` only when listed (pulls are
    /// counted per repository and digest, at most one event per node every 30 s).
    #[schemars(length(min = 1))]
    pub types: Vec<EventType>,
    /// Repositories of the organization whose events are delivered, as globs relative to it
    /// (`team/*`, `app`, `**`). Default: all. Key events concern no repository and are always
    /// delivered when their type is listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<String>,
    /// A Secret key holding the signing key (key default `secret`). Each request then carries
    /// `Aerugo-Signature: t=<unix time>,sha256=<hex HMAC-SHA256 of "<t>.<body>">`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<SecretKeyRef>,
    /// Events per request: 1 sends one structured CloudEvent
    /// (`application/cloudevents+json`); more sends up to that many as a batch
    /// (`application/cloudevents-batch+json`). Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub batch_size: Option<i32>,
    /// Deliver again every event kept since this time (RFC 3339). Changing it replays once;
    /// events are kept for the data plane's event retention (7 days by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_from: Option<String>,
}

/// The types of events.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum EventType {
    /// A manifest was stored (`io.aerugo.manifest.pushed`).
    ManifestPushed,
    /// A manifest was deleted, by a client or by collection (`io.aerugo.manifest.deleted`).
    ManifestDeleted,
    /// A manifest was pulled (`io.aerugo.manifest.pulled`, batched).
    ManifestPulled,
    /// A tag was created (`io.aerugo.tag.created`).
    TagCreated,
    /// A tag moved to another manifest (`io.aerugo.tag.moved`).
    TagMoved,
    /// A tag was deleted (`io.aerugo.tag.deleted`).
    TagDeleted,
    /// A blob was removed from a repository (`io.aerugo.blob.deleted`).
    BlobDeleted,
    /// A repository was created (`io.aerugo.repository.created`).
    RepositoryCreated,
    /// A repository was deleted (`io.aerugo.repository.deleted`).
    RepositoryDeleted,
    /// A push was refused by the organization's quota (`io.aerugo.quota.exceeded`).
    QuotaExceeded,
    /// A retention run had a new outcome (`io.aerugo.retention.completed`).
    RetentionCompleted,
    /// An API key of the organization was created (`io.aerugo.key.created`).
    KeyCreated,
    /// An API key of the organization was revoked (`io.aerugo.key.revoked`).
    KeyRevoked,
}

impl EventType {
    /// Every type.
    pub const ALL: [EventType; 13] = [
        EventType::ManifestPushed,
        EventType::ManifestDeleted,
        EventType::ManifestPulled,
        EventType::TagCreated,
        EventType::TagMoved,
        EventType::TagDeleted,
        EventType::BlobDeleted,
        EventType::RepositoryCreated,
        EventType::RepositoryDeleted,
        EventType::QuotaExceeded,
        EventType::RetentionCompleted,
        EventType::KeyCreated,
        EventType::KeyRevoked,
    ];

    /// The CloudEvents `type`.
    pub fn cloudevents_type(self) -> &'static str {
        match self {
            EventType::ManifestPushed => "io.aerugo.manifest.pushed",
            EventType::ManifestDeleted => "io.aerugo.manifest.deleted",
            EventType::ManifestPulled => "io.aerugo.manifest.pulled",
            EventType::TagCreated => "io.aerugo.tag.created",
            EventType::TagMoved => "io.aerugo.tag.moved",
            EventType::TagDeleted => "io.aerugo.tag.deleted",
            EventType::BlobDeleted => "io.aerugo.blob.deleted",
            EventType::RepositoryCreated => "io.aerugo.repository.created",
            EventType::RepositoryDeleted => "io.aerugo.repository.deleted",
            EventType::QuotaExceeded => "io.aerugo.quota.exceeded",
            EventType::RetentionCompleted => "io.aerugo.retention.completed",
            EventType::KeyCreated => "io.aerugo.key.created",
            EventType::KeyRevoked => "io.aerugo.key.revoked",
        }
    }
}

/// The last delivery.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastDelivered {
    /// When the endpoint last accepted events (RFC 3339).
    pub time: String,
    /// The `id` of the last event it accepted.
    pub event_id: String,
}

/// What the operator reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventSubscriptionStatus {
    /// The subscription's id in the registry database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<i64>,
    /// The last delivery the endpoint accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivered: Option<LastDelivered>,
    /// Events delivered so far.
    #[serde(default)]
    pub delivered: i64,
    /// Whether delivery is failing: the endpoint refused the last 3 attempts or more. Events
    /// wait (dead-lettered, in order) and are retried with backoff until it answers again.
    #[serde(default)]
    pub failing: bool,
    /// Since when attempts fail (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
    /// What the last failed attempt got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Events waiting to be delivered.
    #[serde(default)]
    pub backlog: i64,
    /// The `replayFrom` last carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_from: Option<String>,
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the subscription is in place (how delivery goes is `failing`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
