//! The controller driver: for each kind, observe → validate → desired → apply → status, around
//! kube-runtime's `Controller` and `finalizer`. It only sequences; the kind modules decide.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aerugo_crds::common::set_condition;
use aerugo_crds::{ApiKey, EventSubscription, FINALIZER, Mirror, Organization, READY, Registry, Repository};
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::world::MANAGER;
use crate::{key, mirror, org, registry, repo, subscription};

/// Whether an object is Ready, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// `Ready=True`.
    pub ready: bool,
    /// The condition reason.
    pub reason: &'static str,
    /// The condition message.
    pub message: String,
}

impl Readiness {
    /// Reconciled.
    pub fn ready() -> Self {
        Readiness { ready: true, reason: "Reconciled", message: String::new() }
    }

    /// Not ready, for `reason`.
    pub fn not_ready(reason: &'static str, message: String) -> Self {
        Readiness { ready: false, reason, message }
    }
}

/// What a sync produced: the status fields (conditions are set by the driver), readiness and
/// when to look again.
#[derive(Debug, Clone)]
pub struct Synced<S> {
    /// Status fields.
    pub status: S,
    /// Readiness.
    pub readiness: Readiness,
    /// Look again after this long (default: the resync period).
    pub requeue: Option<Duration>,
}

/// A kind the operator reconciles.
pub trait Kind:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// Its status type.
    type Status: Serialize + Clone + Default + PartialEq + Debug + Send + Sync;
    /// The controller's name (metrics, logs, events).
    const CONTROLLER: &'static str;
    /// The stored status.
    fn status(&self) -> Option<&Self::Status>;
    /// The conditions of a status.
    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition>;
    /// Sets `observedGeneration`.
    fn observe(status: &mut Self::Status, generation: Option<i64>);
    /// Brings the world in line with the object.
    fn sync(&self, ctx: &Context) -> impl Future<Output = Result<Synced<Self::Status>>> + Send;
    /// Releases what lives outside Kubernetes.
    fn cleanup(&self, ctx: &Context) -> impl Future<Output = Result<()>> + Send;
    /// A Normal Event a change of status is worth: (action, reason, note).
    fn notice(_before: Option<&Self::Status>, _after: &Self::Status) -> Option<(&'static str, &'static str, String)> {
        None
    }
}

macro_rules! kind {
    ($ty:ty, $status:ty, $name:literal, $module:ident $(, notice = $notice:path)?) => {
        impl Kind for $ty {
            type Status = $status;
            const CONTROLLER: &'static str = $name;
            fn status(&self) -> Option<&Self::Status> {
                self.status.as_ref()
            }
            fn conditions(status: &mut Self::Status) -> &mut Vec<Condition> {
                &mut status.conditions
            }
            fn observe(status: &mut Self::Status, generation: Option<i64>) {
                status.observed_generation = generation;
            }
            fn sync(&self, ctx: &Context) -> impl Future<Output = Result<Synced<Self::Status>>> + Send {
                $module::sync(ctx, self)
            }
            fn cleanup(&self, ctx: &Context) -> impl Future<Output = Result<()>> + Send {
                $module::cleanup(ctx, self)
            }
            $(
            fn notice(before: Option<&Self::Status>, after: &Self::Status) -> Option<(&'static str, &'static str, String)> {
                $notice(before, after)
            }
            )?
        }
    };
}

kind!(Organization, aerugo_crds::OrganizationStatus, "organization", org);
kind!(Repository, aerugo_crds::RepositoryStatus, "repository", repo, notice = repo::notice);
kind!(ApiKey, aerugo_crds::ApiKeyStatus, "apikey", key);
kind!(Registry, aerugo_crds::RegistryStatus, "registry", registry);
kind!(EventSubscription, aerugo_crds::EventSubscriptionStatus, "eventsubscription", subscription);
kind!(Mirror, aerugo_crds::MirrorStatus, "mirror", mirror);

/// The status an object should have after a sync (or a failed one): the sync's fields (or the
/// stored ones on failure) with the `Ready` condition set.
pub fn next_status<K: Kind>(obj: &K, outcome: &Result<Synced<K::Status>>) -> (K::Status, Readiness) {
    let stored = obj.status().cloned().unwrap_or_default();
    let (mut status, readiness) = match outcome {
        Ok(synced) => (synced.status.clone(), synced.readiness.clone()),
        Err(e) => (stored.clone(), Readiness::not_ready(e.reason(), e.to_string())),
    };
    let mut stored_for_conditions = stored;
    *K::conditions(&mut status) = std::mem::take(K::conditions(&mut stored_for_conditions));
    let generation = obj.meta().generation;
    set_condition(K::conditions(&mut status), READY, readiness.ready, readiness.reason, &readiness.message, generation);
    K::observe(&mut status, generation);
    (status, readiness)
}

/// Runs one sync of `obj` and records it in the metrics.
pub async fn sync_once<K: Kind>(obj: &K, ctx: &Context) -> Result<Synced<K::Status>> {
    let started = Instant::now();
    let outcome = obj.sync(ctx).await;
    let metrics = &ctx.metrics;
    metrics.runs.with_label_values(&[K::CONTROLLER]).inc();
    metrics.duration.with_label_values(&[K::CONTROLLER]).observe(started.elapsed().as_secs_f64());
    if let Err(e) = &outcome {
        metrics.failures.with_label_values(&[K::CONTROLLER, e.reason()]).inc();
    }
    outcome
}

/// What the cluster controllers share.
pub struct ClusterContext {
    /// The common context.
    pub ctx: Context,
    /// The cluster.
    pub client: Client,
    /// Events for reconcile failures.
    pub recorder: Recorder,
}

impl ClusterContext {
    /// The context the cluster controllers share: `client` is the cluster, events are
    /// reported as `aerugo-operator`.
    pub fn new(
        client: Client,
        db: aerugo_db::Pool,
        settings: crate::context::Settings,
        metrics: crate::context::Metrics,
    ) -> Arc<Self> {
        Arc::new(ClusterContext {
            recorder: Recorder::new(client.clone(), "aerugo-operator".into()),
            ctx: Context::new(db, crate::world::World::Cluster(client.clone()), settings, metrics),
            client,
        })
    }
}

async fn apply<K: Kind>(obj: Arc<K>, cluster: &ClusterContext) -> Result<Action> {
    let ctx = &cluster.ctx;
    let outcome = sync_once(obj.as_ref(), ctx).await;
    let (status, readiness) = next_status(obj.as_ref(), &outcome);
    let uid = obj.meta().uid.clone().unwrap_or_default();
    if obj.status() != Some(&status) {
        let api = Api::<K>::namespaced(cluster.client.clone(), &obj.namespace().unwrap_or_default());
        let body = json!({ "apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status });
        api.patch_status(&obj.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body)).await?;
        let previous = obj.status().cloned().and_then(|mut s| {
            K::conditions(&mut s).iter().find(|c| c.type_ == READY).map(|c| (c.status.clone(), c.reason.clone()))
        });
        if let Some((action, reason, note)) = K::notice(obj.status(), &status) {
            let event = Event {
                type_: EventType::Normal,
                reason: reason.to_owned(),
                note: Some(note.chars().take(1000).collect()),
                action: action.into(),
                secondary: None,
            };
            if let Err(e) = cluster.recorder.publish(&event, &obj.object_ref(&())).await {
                tracing::warn!(error = %e, "could not publish an event");
            }
        }
        // One Event per change of what is wrong, not one per retry.
        if !readiness.ready && previous != Some(("False".to_owned(), readiness.reason.to_owned())) {
            let event = Event {
                type_: EventType::Warning,
                reason: readiness.reason.to_owned(),
                note: Some(readiness.message.chars().take(1000).collect()),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(e) = cluster.recorder.publish(&event, &obj.object_ref(&())).await {
                tracing::warn!(error = %e, "could not publish an event");
            }
        }
    }
    match outcome {
        Ok(synced) => {
            ctx.succeeded(&uid);
            Ok(Action::requeue(synced.requeue.unwrap_or(ctx.settings.resync).min(ctx.settings.resync)))
        }
        Err(Error::InvalidSpec(message)) => {
            tracing::info!(controller = K::CONTROLLER, object = %obj.name_any(), %message, "invalid spec");
            Ok(Action::await_change())
        }
        Err(e) => Err(e),
    }
}

async fn reconcile<K: Kind>(obj: Arc<K>, cluster: Arc<ClusterContext>) -> Result<Action> {
    let api = Api::<K>::namespaced(cluster.client.clone(), &obj.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => apply(obj, &cluster).await,
            Finalizer::Cleanup(obj) => {
                obj.cleanup(&cluster.ctx).await?;
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

fn error_policy<K: Kind>(obj: Arc<K>, error: &Error, cluster: Arc<ClusterContext>) -> Action {
    let delay = cluster.ctx.backoff(obj.meta().uid.as_deref().unwrap_or_default());
    tracing::warn!(controller = K::CONTROLLER, object = %obj.name_any(), error = %error, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
    Action::requeue(delay)
}

fn controller<K: Kind>(cluster: Arc<ClusterContext>) -> impl Future<Output = ()> + Send {
    let api = Api::<K>::all(cluster.client.clone());
    Controller::new(api, watcher::Config::default()).run(reconcile::<K>, error_policy::<K>, cluster).for_each(
        |result| async move {
            if let Err(e) = result {
                tracing::debug!(controller = K::CONTROLLER, error = %e, "controller event");
            }
        },
    )
}

/// Runs the Registry, Organization, Repository, ApiKey, EventSubscription and Mirror controllers until
/// they stop. ApiKeys
/// also watch the Secrets they own, so a deleted or edited Secret is rewritten; Registries
/// watch their Deployment and migration Jobs.
pub async fn run(cluster: Arc<ClusterContext>) {
    let keys = {
        let cluster = cluster.clone();
        let api = Api::<ApiKey>::all(cluster.client.clone());
        let secrets = Api::<Secret>::all(cluster.client.clone());
        Controller::new(api, watcher::Config::default())
            .owns(secrets, watcher::Config::default().labels("app.kubernetes.io/managed-by=aerugo-operator"))
            .run(reconcile::<ApiKey>, error_policy::<ApiKey>, cluster)
            .for_each(|_| async {})
    };
    let registries = {
        let cluster = cluster.clone();
        let owned = || watcher::Config::default().labels("app.kubernetes.io/managed-by=aerugo-operator");
        Controller::new(Api::<Registry>::all(cluster.client.clone()), watcher::Config::default())
            .owns(Api::<k8s_openapi::api::apps::v1::Deployment>::all(cluster.client.clone()), owned())
            .owns(Api::<k8s_openapi::api::batch::v1::Job>::all(cluster.client.clone()), owned())
            .run(reconcile::<Registry>, error_policy::<Registry>, cluster)
            .for_each(|_| async {})
    };
    // Repositories whose grants name an ApiKey follow its rotations: a changed ApiKey requeues them.
    let repositories = {
        let cluster = cluster.clone();
        let repositories = Controller::new(Api::<Repository>::all(cluster.client.clone()), watcher::Config::default());
        let known = repositories.store();
        repositories
            .watches(Api::<ApiKey>::all(cluster.client.clone()), watcher::Config::default(), move |key: ApiKey| {
                let (namespace, name) = (key.namespace(), key.name_any());
                known
                    .state()
                    .into_iter()
                    .filter(|r| {
                        r.namespace() == namespace
                            && r.spec.grants.iter().any(|g| g.api_key_ref.as_ref().is_some_and(|k| k.name == name))
                    })
                    .map(|r| kube::runtime::reflector::ObjectRef::from_obj(r.as_ref()))
                    .collect::<Vec<_>>()
            })
            .run(reconcile::<Repository>, error_policy::<Repository>, cluster)
            .for_each(|_| async {})
    };
    tokio::join!(
        controller::<Organization>(cluster.clone()),
        controller::<EventSubscription>(cluster.clone()),
        controller::<Mirror>(cluster.clone()),
        repositories,
        keys,
        registries
    );
}
