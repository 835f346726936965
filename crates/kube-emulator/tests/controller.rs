//! A small controller (finalizer, status with observedGeneration, one owned child, an Event)
//! run through kube-runtime's `Controller`, unmodified, against the emulator: the lifecycle an
//! operator goes through, including dropped watches, a compacted history and injected failures.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aerugo_kube_emulator::{Emulator, Fault, Verb};
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Client, CustomResource, CustomResourceExt as _, Resource as _, ResourceExt as _};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The sample custom resource.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(group = "sample.aerugo.io", version = "v1", kind = "Widget", namespaced, status = "WidgetStatus")]
pub struct WidgetSpec {
    /// Copied into the child ConfigMap.
    pub message: String,
}

/// What the controller reports.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetStatus {
    /// The generation last reconciled.
    pub observed_generation: Option<i64>,
    /// The child is in place.
    pub ready: bool,
}

const FINALIZER: &str = "sample.aerugo.io/cleanup";
const MANAGER: &str = "widget-controller";
const WAIT: Duration = Duration::from_secs(20);

struct Context {
    client: Client,
    recorder: Recorder,
    cleanups: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Error(String);

async fn reconcile(widget: Arc<Widget>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = widget.namespace().unwrap_or_default();
    let widgets: Api<Widget> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&widgets, FINALIZER, widget, |event| async {
        match event {
            Finalizer::Apply(widget) => apply(&widget, &ctx).await,
            Finalizer::Cleanup(widget) => cleanup(&widget, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error(e.to_string()))
}

async fn apply(widget: &Widget, ctx: &Context) -> Result<Action, Error> {
    let (ns, name) = (widget.namespace().unwrap_or_default(), widget.name_any());
    let configmaps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let owner = widget.controller_owner_ref(&()).ok_or_else(|| Error("no owner reference".into()))?;
    let child = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": format!("{name}-config"), "ownerReferences": [owner] },
        "data": { "message": widget.spec.message },
    });
    configmaps
        .patch(&format!("{name}-config"), &PatchParams::apply(MANAGER).force(), &Patch::Apply(child))
        .await
        .map_err(|e| Error(e.to_string()))?;
    let widgets: Api<Widget> = Api::namespaced(ctx.client.clone(), &ns);
    let status = json!({
        "apiVersion": "sample.aerugo.io/v1",
        "kind": "Widget",
        "status": { "observedGeneration": widget.metadata.generation, "ready": true },
    });
    widgets
        .patch_status(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(status))
        .await
        .map_err(|e| Error(e.to_string()))?;
    let event = Event {
        type_: EventType::Normal,
        reason: "Reconciled".into(),
        note: Some(format!("generation {}", widget.metadata.generation.unwrap_or_default())),
        action: "Reconcile".into(),
        secondary: None,
    };
    ctx.recorder.publish(&event, &widget.object_ref(&())).await.map_err(|e| Error(e.to_string()))?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

async fn cleanup(widget: &Widget, ctx: &Context) -> Result<Action, Error> {
    let configmaps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &widget.namespace().unwrap_or_default());
    match configmaps.delete(&format!("{}-config", widget.name_any()), &DeleteParams::default()).await {
        Ok(_) | Err(kube::Error::Api(_)) => {}
        Err(e) => return Err(Error(e.to_string())),
    }
    ctx.cleanups.fetch_add(1, Ordering::SeqCst);
    Ok(Action::await_change())
}

fn start(emulator: &Emulator, config: watcher::Config) -> Arc<Context> {
    let client = emulator.client();
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), "widget-controller".into()),
        cleanups: AtomicUsize::new(0),
    });
    let controller = Controller::new(Api::<Widget>::all(client.clone()), config.clone())
        .owns(Api::<ConfigMap>::all(client), config)
        .run(reconcile, |_, _, _| Action::requeue(Duration::from_millis(50)), ctx.clone())
        .for_each(|_| async {});
    tokio::spawn(controller);
    ctx
}

async fn observed(emulator: &Emulator, generation: i64) -> Widget {
    emulator
        .wait_for::<Widget, _>(Some("apps"), "w", WAIT, |w| {
            w.and_then(|w| w.status.as_ref()).is_some_and(|s| s.ready && s.observed_generation == Some(generation))
        })
        .await
        .unwrap_or_else(|_| panic!("generation {generation} was never reconciled"))
        .expect("exists")
}

async fn child_says(emulator: &Emulator, message: &str) -> ConfigMap {
    emulator
        .wait_for::<ConfigMap, _>(Some("apps"), "w-config", WAIT, |c| {
            c.and_then(|c| c.data.as_ref()).and_then(|d| d.get("message")).is_some_and(|m| m == message)
        })
        .await
        .unwrap_or_else(|_| panic!("the child never said {message:?}"))
        .expect("exists")
}

async fn set_message(client: &Client, message: &str) {
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "apps");
    widgets
        .patch("w", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "message": message } })))
        .await
        .expect("spec update");
}

async fn lifecycle(config: watcher::Config) {
    let emulator = Emulator::new();
    emulator.install_crd(serde_json::to_value(Widget::crd()).unwrap()).expect("CRD");
    emulator
        .seed(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "apps" } }))
        .expect("namespace");
    let ctx = start(&emulator, config);
    let client = emulator.client();
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "apps");

    // create → reconciled → status, with the finalizer, the child and an Event.
    widgets
        .create(&PostParams::default(), &Widget::new("w", WidgetSpec { message: "hello".into() }))
        .await
        .expect("create");
    let widget = observed(&emulator, 1).await;
    assert_eq!(widget.finalizers(), [FINALIZER]);
    let child = child_says(&emulator, "hello").await;
    assert_eq!(child.owner_references()[0].name, "w");
    let events =
        emulator.requests().into_iter().filter(|r| r.group == "events.k8s.io" && r.verb == Verb::Create).count();
    assert!(events >= 1, "the controller published an Event");

    // spec update → new observedGeneration.
    set_message(&client, "world").await;
    observed(&emulator, 2).await;
    child_says(&emulator, "world").await;

    // child deleted → recreated (the controller owns ConfigMaps).
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "apps");
    configmaps.delete("w-config", &DeleteParams::default()).await.expect("delete child");
    let recreated = child_says(&emulator, "world").await;
    assert_ne!(recreated.uid(), child.uid(), "a new child");

    // Watches dropped → re-watched, and the controller carries on.
    emulator.drop_watches();
    set_message(&client, "after drop").await;
    observed(&emulator, 3).await;

    // History compacted → the watch resumes with a 410 ERROR event → relist.
    let lists_before = emulator.requests().iter().filter(|r| r.resource == "widgets" && r.verb == Verb::List).count();
    emulator.compact();
    set_message(&client, "after compaction").await;
    observed(&emulator, 4).await;
    child_says(&emulator, "after compaction").await;
    let lists_after = emulator.requests().iter().filter(|r| r.resource == "widgets" && r.verb == Verb::List).count();
    assert!(lists_after > lists_before || config_streams(&emulator), "the watcher relisted after 410");

    // Injected failures → error policy → retried until it works.
    emulator.fail_next(Fault::new(500).verb(Verb::Patch).resource("widgets").status(true).times(3));
    set_message(&client, "after faults").await;
    observed(&emulator, 5).await;
    assert!(emulator.requests().iter().any(|r| r.resource == "widgets" && r.code == 500));

    // delete → finalizer cleanup → gone.
    widgets.delete("w", &DeleteParams::default()).await.expect("delete");
    emulator.wait_for::<Widget, _>(Some("apps"), "w", WAIT, |w| w.is_none()).await.expect("the widget goes");
    assert_eq!(ctx.cleanups.load(Ordering::SeqCst), 1);
    assert!(emulator.get::<ConfigMap>(Some("apps"), "w-config").is_none(), "cleanup removed the child");
}

/// With streaming lists the watcher never lists: it re-watches with `sendInitialEvents`.
fn config_streams(emulator: &Emulator) -> bool {
    !emulator.requests().iter().any(|r| r.resource == "widgets" && r.verb == Verb::List)
}

#[tokio::test]
async fn controller_lifecycle_with_list_watch() {
    lifecycle(watcher::Config::default()).await;
}

#[tokio::test]
async fn controller_lifecycle_with_streaming_lists() {
    lifecycle(watcher::Config::default().streaming_lists()).await;
}
