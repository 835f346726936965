//! The emulated API server: the store behind the Kubernetes REST paths, as a `tower::Service`
//! for `kube::Client::new` and on a loopback socket for real binaries, with the hooks tests
//! need (seeding, waiting on the event bus, fault injection, dropped watches, compaction and a
//! record of every request).

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::store::now_rfc3339;
use crate::types::{self, CrdTypes};
use crate::{
    ApiError, DeleteOptions, Event, EventType, Filter, ListOptions, PatchKind, ResourceType, Store, Subresource,
    WriteOptions,
};

/// The response body: a whole JSON document, or a watch stream of one event per line.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The Kubernetes verbs, as RBAC names them (an apply is a `patch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    /// GET an object.
    Get,
    /// GET a collection.
    List,
    /// GET a collection with `watch=true`.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH, any format (server-side apply included).
    Patch,
    /// DELETE an object.
    Delete,
    /// DELETE a collection.
    DeleteCollection,
}

impl Verb {
    /// The RBAC name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }
}

/// One request the emulator served (discovery and `/version` are not recorded).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// The verb.
    pub verb: Verb,
    /// API group (`""` for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural.
    pub resource: String,
    /// Namespace, if the path named one.
    pub namespace: Option<String>,
    /// Object name, for item requests.
    pub name: Option<String>,
    /// `status`, for subresource requests.
    pub subresource: Option<String>,
    /// `fieldManager`.
    pub field_manager: Option<String>,
    /// For a patch: `apply`, `merge`, `json` or `strategic`.
    pub patch: Option<&'static str>,
    /// The HTTP status answered (200 for a watch that started).
    pub code: u16,
    /// The `User-Agent` header, as an audit log records it: tells clients apart.
    pub user_agent: Option<String>,
}

/// Fails the next matching requests (test hook).
#[derive(Debug, Clone)]
pub struct Fault {
    verb: Option<Verb>,
    resource: Option<String>,
    name: Option<String>,
    status: Option<bool>,
    code: u16,
    remaining: usize,
}

impl Fault {
    /// Fails the next request with `code` (500, 409, 429, …).
    pub fn new(code: u16) -> Self {
        Fault { verb: None, resource: None, name: None, status: None, code, remaining: 1 }
    }

    /// Only requests with this verb.
    pub fn verb(mut self, verb: Verb) -> Self {
        self.verb = Some(verb);
        self
    }

    /// Only requests for this plural.
    pub fn resource(mut self, plural: &str) -> Self {
        self.resource = Some(plural.to_owned());
        self
    }

    /// Only requests naming this object.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Only requests to the `/status` subresource (`true`) or to the object itself (`false`).
    pub fn status(mut self, status: bool) -> Self {
        self.status = Some(status);
        self
    }

    /// The next `n` matching requests, not just one.
    pub fn times(mut self, n: usize) -> Self {
        self.remaining = n;
        self
    }

    fn matches(&self, verb: Verb, target: &Target) -> bool {
        let (ty, name) = (&target.ty, target.name.as_deref());
        self.status.is_none_or(|s| s == target.subresource.is_some())
            && self.verb.is_none_or(|v| v == verb)
            && self.resource.as_deref().is_none_or(|r| r == ty.plural)
            && self.name.as_deref().is_none_or(|n| Some(n) == name)
    }
}

/// `wait_for` ran out of time.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {0:?} waiting for the condition")]
pub struct WaitTimeout(pub Duration);

struct State {
    store: Store,
    faults: Vec<Fault>,
    requests: Vec<RequestRecord>,
    /// Discovery facts of installed CRDs, by `group/plural`: (singular, short names).
    crd_names: BTreeMap<String, (String, Vec<String>)>,
}

struct Inner {
    state: Mutex<State>,
    events: broadcast::Sender<Arc<Event>>,
    revision: watch::Sender<u64>,
    epoch: watch::Sender<u64>,
    bookmark_interval: Mutex<Duration>,
}

/// An emulated Kubernetes API server. Cheap to clone; clones share one server.
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator").finish_non_exhaustive()
    }
}

impl Default for Emulator {
    fn default() -> Self {
        Self::new()
    }
}

/// Events kept for watches resuming from a resourceVersion.
const HISTORY: usize = 10_000;

impl Emulator {
    /// A server with the built-in kinds and the namespaces a cluster starts with (`default`,
    /// `kube-system`, `kube-public`, `kube-node-lease`).
    pub fn new() -> Self {
        let mut store = Store::new(types::builtin_types(), HISTORY);
        let namespaces = ResourceType { group: String::new(), version: "v1".into(), ..Default::default() };
        let namespaces = store.resource_type("", "v1", "namespaces").cloned().unwrap_or(namespaces);
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            // The store is empty and the names are valid: this cannot fail.
            let _ = store.create(&namespaces, "", json!({ "metadata": { "name": ns } }), &WriteOptions::default());
        }
        // A real server's watch history starts when it does; so does this one's.
        store.compact();
        store.drain_events();
        let (events, _) = broadcast::channel(65_536);
        Emulator {
            inner: Arc::new(Inner {
                revision: watch::Sender::new(store.resource_version()),
                state: Mutex::new(State {
                    store,
                    faults: Vec::new(),
                    requests: Vec::new(),
                    crd_names: BTreeMap::new(),
                }),
                events,
                epoch: watch::Sender::new(0),
                bookmark_interval: Mutex::new(Duration::from_secs(60)),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the store consistent (writes are applied whole).
        self.inner.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A `kube::Client` talking to this server in process, default namespace `default`.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    /// How often a watch that allows bookmarks gets one (default 60 s, as the API server).
    pub fn set_bookmark_interval(&self, interval: Duration) {
        *self.inner.bookmark_interval.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = interval;
    }

    /// Hands new store events to watches and waiters, and runs what the API server's own
    /// controllers would: CRDs get established (or their types removed).
    fn publish(&self, state: &mut State) {
        loop {
            let events = state.store.drain_events();
            if events.is_empty() {
                break;
            }
            for event in events {
                if event.resource == "apiextensions.k8s.io/customresourcedefinitions" {
                    crd_changed(state, &event);
                }
                // No receivers is fine: nobody is watching.
                let _ = self.inner.events.send(Arc::new(event));
            }
        }
        self.inner.revision.send_replace(state.store.resource_version());
    }

    /// Installs a CRD (a `CustomResourceDefinition` object) as `kubectl apply` would; its
    /// resources are served from now on.
    pub fn install_crd(&self, crd: Value) -> Result<(), ApiError> {
        let mut state = self.state();
        let ty = crd_type(&state.store);
        let name = crd["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let options = WriteOptions { field_manager: Some("emulator".into()), ..Default::default() };
        let result = match state.store.get(&ty, "", &name) {
            Ok(_) => {
                state.store.apply(&ty, "", &name, &crd, Subresource::Main, &WriteOptions { force: true, ..options })
            }
            Err(_) => state.store.create(&ty, "", crd, &options),
        };
        self.publish(&mut state);
        result.map(drop)
    }

    /// Installs every CRD in the YAML files (one or more documents each) of `dir`.
    pub fn install_crds_from(&self, dir: &std::path::Path) -> Result<usize, String> {
        let mut installed = 0;
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let docs: Vec<Value> =
                serde_saphyr::from_multiple(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            for doc in docs.into_iter().filter(|d| d["kind"] == "CustomResourceDefinition") {
                self.install_crd(doc).map_err(|e| format!("{}: {e}", path.display()))?;
                installed += 1;
            }
        }
        Ok(installed)
    }

    /// Creates `obj` (any served kind, by its `apiVersion` and `kind`), creating its namespace
    /// first if it is missing. Returns the stored object.
    pub fn seed(&self, obj: Value) -> Result<Value, ApiError> {
        let mut state = self.state();
        let ty = type_of(&state.store, &obj)?;
        let namespace = if ty.namespaced {
            obj["metadata"]["namespace"].as_str().unwrap_or("default").to_owned()
        } else {
            String::new()
        };
        let namespaces = namespace_type(&state.store);
        if ty.namespaced && state.store.get(&namespaces, "", &namespace).is_err() {
            state.store.create(
                &namespaces,
                "",
                json!({ "metadata": { "name": namespace } }),
                &WriteOptions::default(),
            )?;
        }
        let result = state.store.create(&ty, &namespace, obj, &WriteOptions::default());
        self.publish(&mut state);
        result
    }

    /// The stored object of `group/version/plural`, if it exists.
    pub fn get_raw(&self, api_version: &str, plural: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let state = self.state();
        let ty = state.store.resource_type(group, version, plural)?.clone();
        state.store.get(&ty, namespace.unwrap_or(""), name).ok().map(|o| relabel(o, &ty))
    }

    /// The stored objects of `group/version/plural` in `namespace` (every namespace when
    /// `None`), read past the API: no request is recorded. How a test plays another cluster
    /// component (a kubelet, the Deployment controller) beside the one under test.
    pub fn list_raw(&self, api_version: &str, plural: &str, namespace: Option<&str>) -> Vec<Value> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let state = self.state();
        let Some(ty) = state.store.resource_type(group, version, plural).cloned() else { return Vec::new() };
        let options = ListOptions::default();
        state
            .store
            .list(&ty, namespace, &options)
            .map(|page| page.items.into_iter().map(|o| relabel(o, &ty)).collect())
            .unwrap_or_default()
    }

    /// Merge-patches the status of an object past the API (no request recorded), as the
    /// component that owns that status in a cluster would: watchers see the change.
    pub fn merge_status(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
        status: Value,
    ) -> Result<Value, ApiError> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let mut state = self.state();
        let ty = state
            .store
            .resource_type(group, version, plural)
            .cloned()
            .ok_or_else(|| ApiError::not_found(group, plural, name))?;
        let result = state.store.patch(
            &ty,
            namespace.unwrap_or(""),
            name,
            PatchKind::Merge,
            &json!({ "status": status }),
            Subresource::Status,
            &WriteOptions::default(),
        );
        self.publish(&mut state);
        result.map(|o| relabel(o, &ty))
    }

    /// The stored object `name` as a `K`.
    pub fn get<K>(&self, namespace: Option<&str>, name: &str) -> Option<K>
    where
        K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
    {
        let api_version = K::api_version(&());
        let obj = self.get_raw(&api_version, &K::plural(&()), namespace, name)?;
        serde_json::from_value(obj).ok()
    }

    /// Waits until `pred` holds for the object `name` (`None`: it does not exist), woken by the
    /// emulator's own writes (no polling). Returns the object as it was when `pred` held.
    pub async fn wait_for<K, P>(
        &self,
        namespace: Option<&str>,
        name: &str,
        timeout: Duration,
        pred: P,
    ) -> Result<Option<K>, WaitTimeout>
    where
        K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
        P: Fn(Option<&K>) -> bool,
    {
        let deadline = Instant::now() + timeout;
        let mut revision = self.inner.revision.subscribe();
        loop {
            revision.borrow_and_update();
            let current = self.get::<K>(namespace, name);
            if pred(current.as_ref()) {
                return Ok(current);
            }
            if tokio::time::timeout_at(deadline, revision.changed()).await.is_err() {
                return Err(WaitTimeout(timeout));
            }
        }
    }

    /// Fails the next requests matching `fault`.
    pub fn fail_next(&self, fault: Fault) {
        self.state().faults.push(fault);
    }

    /// Ends every open watch (clients re-watch from their last resourceVersion).
    pub fn drop_watches(&self) {
        self.inner.epoch.send_modify(|e| *e += 1);
    }

    /// Forgets the event history: watches resuming from before now get `410 Expired`, as do
    /// continue tokens. Open watches are ended too.
    pub fn compact(&self) {
        let mut state = self.state();
        state.store.compact();
        self.publish(&mut state);
        drop(state);
        self.drop_watches();
    }

    /// Every request served so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state().store.resource_version()
    }

    /// Serves the API on `127.0.0.1:<free port>` over HTTP/1.1 until the returned handle is
    /// dropped.
    pub async fn serve(&self) -> std::io::Result<Loopback> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let emulator = self.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let emulator = emulator.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let emulator = emulator.clone();
                        async move { Ok::<_, Infallible>(emulator.respond(req).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                        tracing::debug!(error = %e, "emulator connection ended");
                    }
                });
            }
        });
        Ok(Loopback { addr, task })
    }

    /// Answers one request.
    pub async fn respond<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: http_body::Body,
        B::Error: std::fmt::Display,
    {
        let (parts, body) = request.into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => return error_response(&ApiError::bad_request(format!("reading the body: {e}"))),
        };
        self.handle(&parts, body)
    }

    fn handle(&self, parts: &http::request::Parts, body: Bytes) -> Response<Body> {
        let path = parts.uri.path().trim_end_matches('/');
        let query: BTreeMap<String, String> = url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match segments.as_slice() {
            ["version"] => return json_response(StatusCode::OK, &version()),
            ["api"] => return json_response(StatusCode::OK, &api_versions()),
            ["apis"] => return json_response(StatusCode::OK, &self.group_list()),
            ["api", "v1"] => return self.resource_list("", "v1"),
            ["apis", group] => return self.group(group),
            ["apis", group, version] => return self.resource_list(group, version),
            ["healthz" | "readyz" | "livez"] => return text_response(StatusCode::OK, "ok"),
            _ => {}
        }
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return error_response(&not_served()),
        };
        let target = {
            let state = self.state();
            match route(&state.store, group, version, rest) {
                Some(t) => t,
                None => return error_response(&not_served()),
            }
        };
        let verb = match (&parts.method, target.name.is_some()) {
            (&Method::GET, true) => Verb::Get,
            (&Method::GET, false) if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) => {
                Verb::Watch
            }
            (&Method::GET, false) => Verb::List,
            (&Method::POST, false) => Verb::Create,
            (&Method::PUT, true) => Verb::Update,
            (&Method::PATCH, true) => Verb::Patch,
            (&Method::DELETE, true) => Verb::Delete,
            (&Method::DELETE, false) => Verb::DeleteCollection,
            _ => {
                return error_response(&ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                ));
            }
        };
        let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let patch = (verb == Verb::Patch).then(|| patch_format(content_type));
        let field_manager = query.get("fieldManager").cloned().or_else(|| {
            // The API server names an unnamed writer after its user agent.
            matches!(verb, Verb::Create | Verb::Update | Verb::Patch)
                .then(|| {
                    parts
                        .headers
                        .get(header::USER_AGENT)
                        .and_then(|v| v.to_str().ok())
                        .map(|ua| ua.split('/').next().unwrap_or(ua).to_owned())
                })
                .flatten()
                .filter(|_| patch != Some(Some("apply")))
        });
        let mut record = RequestRecord {
            verb,
            group: target.ty.group.clone(),
            version: target.ty.version.clone(),
            resource: target.ty.plural.clone(),
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            subresource: target.subresource.map(|_| "status".to_owned()),
            field_manager: field_manager.clone(),
            patch: patch.flatten(),
            code: 200,
            user_agent: parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned),
        };
        let injected = {
            let mut state = self.state();
            let hit = state.faults.iter_mut().find(|f| f.remaining > 0 && f.matches(verb, &target));
            hit.map(|f| {
                f.remaining -= 1;
                ApiError::injected(f.code)
            })
        };
        let outcome = match injected {
            Some(e) => Err(e),
            None => {
                let options = WriteOptions {
                    field_manager,
                    dry_run: query.get("dryRun").is_some_and(|d| d == "All"),
                    force: query.get("force").is_some_and(|f| f == "true"),
                };
                self.execute(verb, &target, &query, &options, patch.flatten(), &body)
            }
        };
        let response = match outcome {
            Ok(Reply::Json(code, value)) => json_response(code, &value),
            Ok(Reply::Watch(stream)) => stream,
            Err(e) => error_response(&e),
        };
        record.code = response.status().as_u16();
        self.state().requests.push(record);
        response
    }

    fn execute(
        &self,
        verb: Verb,
        target: &Target,
        query: &BTreeMap<String, String>,
        options: &WriteOptions,
        patch: Option<&'static str>,
        body: &Bytes,
    ) -> Result<Reply, ApiError> {
        let ty = &target.ty;
        let ns = target.namespace.as_deref().unwrap_or("");
        let name = target.name.as_deref().unwrap_or("");
        let sub = if target.subresource.is_some() { Subresource::Status } else { Subresource::Main };
        if ty.namespaced && target.namespace.is_none() && !matches!(verb, Verb::List | Verb::Watch) {
            return Err(not_served());
        }
        if verb == Verb::Watch {
            return self.watch(target, query).map(Reply::Watch);
        }
        let mut state = self.state();
        let result = match verb {
            Verb::Get => state.store.get(ty, ns, name).map(|o| Reply::Json(StatusCode::OK, relabel(o, ty))),
            Verb::List => {
                list(&state.store, ty, target.namespace.as_deref(), query).map(|l| Reply::Json(StatusCode::OK, l))
            }
            Verb::Create => {
                let obj = parse_json(body)?;
                check_version(ty, &obj)?;
                state.store.create(ty, ns, obj, options).map(|o| Reply::Json(StatusCode::CREATED, o))
            }
            Verb::Update => {
                let obj = parse_json(body)?;
                check_version(ty, &obj)?;
                state.store.replace(ty, ns, name, obj, sub, options).map(|o| Reply::Json(StatusCode::OK, o))
            }
            Verb::Patch => {
                let existed = state.store.get(ty, ns, name).is_ok();
                let result = match patch {
                    Some("apply") => {
                        let config = parse_yaml_or_json(body)?;
                        state.store.apply(ty, ns, name, &config, sub, options)
                    }
                    Some(kind) => {
                        let kind = match kind {
                            "merge" => PatchKind::Merge,
                            "json" => PatchKind::Json,
                            _ => PatchKind::Strategic,
                        };
                        state.store.patch(ty, ns, name, kind, &parse_json(body)?, sub, options)
                    }
                    None => Err(ApiError::unsupported_media_type(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                    )),
                };
                let code = if existed { StatusCode::OK } else { StatusCode::CREATED };
                result.map(|o| Reply::Json(code, o))
            }
            Verb::Delete => {
                let delete = delete_options(body, query)?;
                if ty.group.is_empty()
                    && ty.plural == "namespaces"
                    && state.store.get(ty, "", name).is_ok()
                    && !delete.dry_run
                {
                    // The namespace controller's work, done at once: the contents go first.
                    state.store.delete_namespace_contents(name);
                }
                state.store.delete(ty, ns, name, &delete).map(|o| Reply::Json(StatusCode::OK, o))
            }
            Verb::DeleteCollection => {
                let delete = delete_options(body, query)?;
                let page = state.store.list(
                    ty,
                    target.namespace.as_deref(),
                    &ListOptions {
                        label_selector: query.get("labelSelector").cloned(),
                        field_selector: query.get("fieldSelector").cloned(),
                        ..Default::default()
                    },
                )?;
                let mut deleted = Vec::new();
                for item in page.items {
                    let (item_ns, item_name) = (
                        item["metadata"]["namespace"].as_str().unwrap_or_default().to_owned(),
                        item["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
                    );
                    deleted.push(state.store.delete(ty, &item_ns, &item_name, &delete)?);
                }
                let list = json!({
                    "kind": format!("{}List", ty.kind),
                    "apiVersion": ty.api_version(),
                    "metadata": { "resourceVersion": state.store.resource_version().to_string() },
                    "items": deleted,
                });
                Ok(Reply::Json(StatusCode::OK, list))
            }
            Verb::Watch => Err(not_served()),
        };
        self.publish(&mut state);
        result
    }

    fn watch(&self, target: &Target, query: &BTreeMap<String, String>) -> Result<Response<Body>, ApiError> {
        let ty = target.ty.clone();
        let filter = Filter::parse(
            query.get("labelSelector").map(String::as_str),
            query.get("fieldSelector").map(String::as_str),
        )?;
        filter.check_fields(&ty)?;
        let timeout = match query.get("timeoutSeconds") {
            Some(t) => {
                Duration::from_secs(t.parse().map_err(|_| ApiError::bad_request("timeoutSeconds must be an integer"))?)
            }
            None => Duration::from_secs(1800),
        };
        let bookmarks = query.get("allowWatchBookmarks").is_some_and(|b| b == "true");
        let send_initial = query.get("sendInitialEvents").is_some_and(|b| b == "true");
        if send_initial && query.get("resourceVersionMatch").is_none_or(|m| m != "NotOlderThan") {
            return Err(ApiError::invalid(
                &ty.group,
                &ty.plural,
                "",
                "resourceVersionMatch",
                "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        let rv = query.get("resourceVersion").filter(|rv| !rv.is_empty() && *rv != "0");
        let namespace = target.namespace.clone();
        let bookmark_interval = *self.inner.bookmark_interval.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut watch = WatchStream {
            ty: ty.clone(),
            namespace: namespace.clone(),
            filter,
            pending: VecDeque::new(),
            finished: false,
            bookmarks,
            last_rv: 0,
            events: self.inner.events.subscribe(),
            epoch: self.inner.epoch.subscribe(),
            deadline: Instant::now() + timeout,
            next_bookmark: Instant::now() + bookmark_interval,
            bookmark_interval,
        };
        watch.epoch.borrow_and_update();
        {
            // Subscribed above while no write can happen: nothing falls between the initial
            // state and the live events.
            let state = self.state();
            let current = state.store.resource_version();
            match rv {
                Some(rv) if !send_initial => {
                    let since: u64 =
                        rv.parse().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
                    match state.store.events_since(&ty, namespace.as_deref(), since) {
                        Ok(events) => {
                            for e in &events {
                                watch.push_event(e);
                            }
                            // Every event up to `current` has been looked at.
                            watch.last_rv = since.max(current);
                        }
                        Err(e) => {
                            watch.pending.push_back(line(&json!({ "type": "ERROR", "object": e.status() })));
                            watch.finished = true;
                        }
                    }
                }
                _ => {
                    let page = state.store.list(&ty, namespace.as_deref(), &ListOptions::default())?;
                    for item in page.items.into_iter().filter(|o| watch.filter.matches(o)) {
                        watch.pending.push_back(line(&json!({ "type": "ADDED", "object": relabel(item, &ty) })));
                    }
                    watch.last_rv = current;
                    if send_initial {
                        let mut bookmark = watch.bookmark();
                        bookmark["object"]["metadata"]["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
                        watch.pending.push_back(line(&bookmark));
                    }
                }
            }
        }
        let stream = futures_util::stream::unfold(watch, |mut w| async move {
            let line = w.next_line().await?;
            Some((Ok::<_, Infallible>(Frame::data(line)), w))
        });
        let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
        Ok(response)
    }

    fn group_list(&self) -> Value {
        let state = self.state();
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for ty in state.store.types().iter().filter(|t| !t.group.is_empty()) {
            let versions = groups.entry(&ty.group).or_default();
            if !versions.contains(&ty.version.as_str()) {
                versions.push(&ty.version);
            }
        }
        let groups: Vec<Value> = groups.iter().map(|(g, versions)| group_json(g, versions)).collect();
        json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
    }

    fn group(&self, group: &str) -> Response<Body> {
        let state = self.state();
        let mut versions: Vec<&str> = Vec::new();
        for ty in state.store.types().iter().filter(|t| t.group == group) {
            if !versions.contains(&ty.version.as_str()) {
                versions.push(&ty.version);
            }
        }
        if versions.is_empty() {
            return error_response(&not_served());
        }
        let mut body = group_json(group, &versions);
        body["kind"] = json!("APIGroup");
        body["apiVersion"] = json!("v1");
        json_response(StatusCode::OK, &body)
    }

    fn resource_list(&self, group: &str, version: &str) -> Response<Body> {
        let state = self.state();
        let mut resources = Vec::new();
        for ty in state.store.types().iter().filter(|t| t.group == group && t.version == version) {
            let (singular, short_names) = state
                .crd_names
                .get(&ty.key())
                .cloned()
                .unwrap_or_else(|| (ty.kind.to_lowercase(), types::short_names(ty)));
            let mut resource = json!({
                "name": ty.plural,
                "singularName": singular,
                "namespaced": ty.namespaced,
                "kind": ty.kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            });
            if !short_names.is_empty() {
                resource["shortNames"] = json!(short_names);
            }
            resources.push(resource);
            if ty.status_subresource {
                resources.push(json!({
                    "name": format!("{}/status", ty.plural),
                    "singularName": "",
                    "namespaced": ty.namespaced,
                    "kind": ty.kind,
                    "verbs": ["get", "patch", "update"],
                }));
            }
        }
        if resources.is_empty() {
            return error_response(&not_served());
        }
        let group_version = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
        json_response(
            StatusCode::OK,
            &json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources }),
        )
    }
}

impl<B> tower_service::Service<Request<B>> for Emulator
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::fmt::Display,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let emulator = self.clone();
        Box::pin(async move { Ok(emulator.respond(request).await) })
    }
}

/// The emulator on a loopback socket; stops serving when dropped.
#[derive(Debug)]
pub struct Loopback {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Loopback {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig whose current context points at this server (namespace `default`).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {}\ncontexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: emulator\n    namespace: default\ncurrent-context: emulator\nusers:\n- name: emulator\n  user: {{}}\npreferences: {{}}\n",
            self.url()
        )
    }

    /// Writes [`Loopback::kubeconfig`] to `path` (for `KUBECONFIG`).
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Reply {
    Json(StatusCode, Value),
    Watch(Response<Body>),
}

struct Target {
    ty: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<Subresource>,
}

/// Resolves the part of a path after `/api/v1` or `/apis/{group}/{version}`.
fn route(store: &Store, group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let namespaced_plural = |plural: &str| store.resource_type(group, version, plural).is_some_and(|t| t.namespaced);
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, ..] if namespaced_plural(plural) => (Some((*ns).to_owned()), &rest[2..]),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some((*name).to_owned()), None),
        [plural, name, "status"] => (*plural, Some((*name).to_owned()), Some(Subresource::Status)),
        _ => return None,
    };
    let ty = store.resource_type(group, version, plural)?.clone();
    if namespace.is_some() && !ty.namespaced {
        return None;
    }
    if subresource.is_some() && !ty.status_subresource {
        return None;
    }
    Some(Target { ty, namespace, name, subresource })
}

fn not_served() -> ApiError {
    let mut e = ApiError::not_found("", "", "");
    e.message = "the server could not find the requested resource".into();
    e
}

fn patch_format(content_type: &str) -> Option<&'static str> {
    match content_type.split(';').next().unwrap_or("").trim() {
        "application/apply-patch+yaml" | "application/apply-patch+json" => Some("apply"),
        "application/merge-patch+json" => Some("merge"),
        "application/json-patch+json" => Some("json"),
        "application/strategic-merge-patch+json" => Some("strategic"),
        _ => None,
    }
}

fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
}

fn parse_yaml_or_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).or_else(|_| {
        let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
        serde_saphyr::from_str::<Value>(text)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid YAML: {e}")))
    })
}

/// A body whose `apiVersion` names another served version of the same resource is stored as
/// the URL's version (no conversion: versions of one CRD share a schema-compatible storage).
fn check_version(ty: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    match obj.get("kind").and_then(Value::as_str) {
        Some(kind) if kind != ty.kind => Err(ApiError::bad_request(format!(
            "the kind of the object ({kind}) does not match the resource ({})",
            ty.kind
        ))),
        _ => Ok(()),
    }
}

fn delete_options(body: &Bytes, query: &BTreeMap<String, String>) -> Result<DeleteOptions, ApiError> {
    let body: Value = if body.is_empty() { json!({}) } else { parse_json(body)? };
    let dry_run = query.get("dryRun").is_some_and(|d| d == "All")
        || body["dryRun"].as_array().is_some_and(|d| d.iter().any(|v| v == "All"));
    Ok(DeleteOptions {
        uid: body["preconditions"]["uid"].as_str().map(str::to_owned),
        resource_version: body["preconditions"]["resourceVersion"].as_str().map(str::to_owned),
        dry_run,
    })
}

fn list(
    store: &Store,
    ty: &ResourceType,
    namespace: Option<&str>,
    query: &BTreeMap<String, String>,
) -> Result<Value, ApiError> {
    let limit = match query.get("limit") {
        Some(l) => l.parse().map_err(|_| ApiError::bad_request("limit must be an integer"))?,
        None => 0,
    };
    if query.get("resourceVersionMatch").is_some_and(|m| m == "Exact")
        && query.get("resourceVersion").is_some_and(|rv| rv.parse::<u64>().ok() != Some(store.resource_version()))
    {
        return Err(ApiError::expired("too old resource version: the emulator keeps no past states for exact lists"));
    }
    let page = store.list(
        ty,
        namespace,
        &ListOptions {
            label_selector: query.get("labelSelector").cloned(),
            field_selector: query.get("fieldSelector").cloned(),
            limit,
            continue_token: query.get("continue").cloned(),
        },
    )?;
    let mut metadata = json!({ "resourceVersion": page.resource_version.to_string() });
    if let Some(token) = page.continue_token {
        metadata["continue"] = json!(token);
    }
    let items: Vec<Value> = page.items.into_iter().map(|o| relabel(o, ty)).collect();
    Ok(
        json!({ "kind": format!("{}List", ty.kind), "apiVersion": ty.api_version(), "metadata": metadata, "items": items }),
    )
}

/// Serves a stored object through the requested version.
fn relabel(mut obj: Value, ty: &ResourceType) -> Value {
    obj["apiVersion"] = json!(ty.api_version());
    obj
}

fn crd_type(store: &Store) -> ResourceType {
    store.resource_type("apiextensions.k8s.io", "v1", "customresourcedefinitions").cloned().unwrap_or_default()
}

fn namespace_type(store: &Store) -> ResourceType {
    store.resource_type("", "v1", "namespaces").cloned().unwrap_or_default()
}

fn type_of(store: &Store, obj: &Value) -> Result<ResourceType, ApiError> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    store
        .types()
        .iter()
        .find(|t| t.group == group && t.version == version && t.kind == kind)
        .cloned()
        .ok_or_else(|| ApiError::bad_request(format!("no kind {kind:?} is registered for version {api_version:?}")))
}

/// What the API server's CRD controllers do when a CRD changes: establish its types (with
/// their schemas) and report it in `status`, or stop serving them when it is gone.
fn crd_changed(state: &mut State, event: &Event) {
    let crd = &event.object;
    match event.kind {
        EventType::Deleted => {
            if let Ok(CrdTypes { group, plural, .. }) = types::crd_types(crd) {
                state.store.remove_types(&group, &plural);
                state.crd_names.remove(&format!("{group}/{plural}"));
            }
        }
        EventType::Added | EventType::Modified => {
            let Ok(declared) = types::crd_types(crd) else { return };
            for (ty, schema) in &declared.versions {
                state.store.add_type(ty.clone());
                if let Some(schema) = schema {
                    state.store.set_schema(ty, schema.clone());
                }
            }
            state.crd_names.insert(
                format!("{}/{}", declared.group, declared.plural),
                (declared.singular.clone(), declared.short_names.clone()),
            );
            let established = crd["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Established" && c["status"] == "True"))
                && crd["status"]["acceptedNames"]
                    == types::crd_status(crd, &declared.storage_version, "")["acceptedNames"]
                && crd["status"]["storedVersions"]
                    .as_array()
                    .is_some_and(|v| v.iter().any(|v| v == declared.storage_version.as_str()));
            if !established {
                let ty = crd_type(&state.store);
                let name = crd["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                let status = types::crd_status(crd, &declared.storage_version, &now_rfc3339());
                // The CRD exists (this is its own event) and a status patch cannot be invalid.
                let _ = state.store.patch(
                    &ty,
                    "",
                    &name,
                    PatchKind::Merge,
                    &json!({ "status": status }),
                    Subresource::Status,
                    &WriteOptions::default(),
                );
            }
        }
    }
}

/// A watch in progress.
struct WatchStream {
    ty: ResourceType,
    namespace: Option<String>,
    filter: Filter,
    pending: VecDeque<Bytes>,
    finished: bool,
    bookmarks: bool,
    last_rv: u64,
    events: broadcast::Receiver<Arc<Event>>,
    epoch: watch::Receiver<u64>,
    deadline: Instant,
    next_bookmark: Instant,
    bookmark_interval: Duration,
}

impl WatchStream {
    fn bookmark(&self) -> Value {
        json!({
            "type": "BOOKMARK",
            "object": {
                "kind": self.ty.kind,
                "apiVersion": self.ty.api_version(),
                "metadata": { "resourceVersion": self.last_rv.to_string() },
            },
        })
    }

    /// Queues `event` if this watch sees it. With a selector, a change that makes an object
    /// start matching is ADDED and one that makes it stop matching is DELETED.
    fn push_event(&mut self, event: &Event) {
        self.last_rv = self.last_rv.max(event.resource_version);
        if event.resource != self.ty.key() || self.namespace.as_deref().is_some_and(|n| n != event.namespace) {
            return;
        }
        let now = self.filter.matches(&event.object);
        let before = event.previous.as_ref().map_or(now, |p| self.filter.matches(p));
        let kind = match (event.kind, before, now) {
            (EventType::Added, _, true) => "ADDED",
            (EventType::Deleted, _, true) => "DELETED",
            (EventType::Modified, true, true) => "MODIFIED",
            (EventType::Modified, false, true) => "ADDED",
            (EventType::Modified, true, false) => "DELETED",
            _ => return,
        };
        let object = relabel(event.object.clone(), &self.ty);
        self.pending.push_back(line(&json!({ "type": kind, "object": object })));
    }

    async fn next_line(&mut self) -> Option<Bytes> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some(line);
            }
            if self.finished {
                return None;
            }
            tokio::select! {
                received = self.events.recv() => match received {
                    Ok(event) => self.push_event(&event),
                    // Too slow a watcher is ended, as the API server does; it re-watches.
                    Err(_) => self.finished = true,
                },
                _ = self.epoch.changed() => self.finished = true,
                () = tokio::time::sleep_until(self.deadline) => {
                    if self.bookmarks {
                        let bookmark = self.bookmark();
                        self.pending.push_back(line(&bookmark));
                    }
                    self.finished = true;
                }
                () = tokio::time::sleep_until(self.next_bookmark) => {
                    self.next_bookmark = Instant::now() + self.bookmark_interval;
                    if self.bookmarks {
                        let bookmark = self.bookmark();
                        self.pending.push_back(line(&bookmark));
                    }
                }
            }
        }
    }
}

fn line(value: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(BodyExt::boxed_unsync(Full::new(Bytes::from(body))));
    *response.status_mut() = code;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn text_response(code: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed_unsync(Full::new(Bytes::from_static(text.as_bytes()))));
    *response.status_mut() = code;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &e.status())
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "35",
        "gitVersion": "v1.35.0-aerugo-emulator",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1" }],
    })
}

fn group_json(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> =
        versions.iter().map(|v| json!({ "groupVersion": format!("{group}/{v}"), "version": v })).collect();
    json!({ "name": group, "versions": versions, "preferredVersion": versions.first().cloned().unwrap_or(Value::Null) })
}
