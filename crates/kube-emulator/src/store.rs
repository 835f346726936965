//! The object store: every object of every served resource type, one global resourceVersion
//! bumped on each write, and a bounded history of watch events. Writes follow the API server's
//! rules that operators depend on: generation moves only with the spec, the status subresource
//! splits writes, finalizers hold a deleted object in a terminating state, stale
//! resourceVersions conflict, and custom resources refuse unconditional updates.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ApiError;
use crate::selector::LabelSelector;
use crate::ssa::{self, ManagedEntry, Shapes};

/// A resource type the store serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceType {
    /// API group (`""` for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural (the path segment).
    pub plural: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Whether `/status` is a subresource (writes to the main resource ignore `.status`).
    pub status_subresource: bool,
    /// A custom resource (updates must name a resourceVersion; no strategic merge).
    pub custom: bool,
    /// Fields a field selector may name besides `metadata.name` and `metadata.namespace` (a
    /// CRD's `selectableFields`, as JSON paths).
    pub selectable_fields: Vec<String>,
}

impl ResourceType {
    /// `apiVersion` of its objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `group/plural`: where its objects are stored, whatever the version.
    pub fn key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    fn versioned_key(&self) -> String {
        format!("{}/{}/{}", self.group, self.version, self.plural)
    }
}

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// The object itself.
    Main,
    /// `/status`.
    Status,
}

/// Patch formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// RFC 7386 merge patch.
    Merge,
    /// RFC 6902 JSON patch.
    Json,
    /// Strategic merge patch (built-ins only; treated as a merge patch).
    Strategic,
}

/// Watch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed (the object's last state, with a new resourceVersion).
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as a watch reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// What happened.
    pub kind: EventType,
    /// The resourceVersion of the change.
    pub resource_version: u64,
    /// `group/plural` of the object.
    pub resource: String,
    /// Its namespace (`""` for cluster-scoped).
    pub namespace: String,
    /// The object after the change (before it, for deletions, with the new resourceVersion).
    pub object: Value,
    /// The object before a modification (a watch with a selector turns a change that makes an
    /// object stop or start matching into DELETED or ADDED).
    pub previous: Option<Value>,
}

/// Options of a write.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `fieldManager`: who owns the fields this write sets (required for apply).
    pub field_manager: Option<String>,
    /// `dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
    /// `force=true` (apply only): take conflicting fields from their owners.
    pub force: bool,
}

/// Preconditions and options of a delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// List parameters.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub label_selector: Option<String>,
    /// `fieldSelector` (`metadata.name` and `metadata.namespace` only).
    pub field_selector: Option<String>,
    /// `limit` (0: no limit).
    pub limit: usize,
    /// `continue`.
    pub continue_token: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    /// The objects.
    pub items: Vec<Value>,
    /// The store's resourceVersion when the list was taken.
    pub resource_version: u64,
    /// Set when more objects follow.
    pub continue_token: Option<String>,
}

type ObjectKey = (String, String, String);

/// Every object, the global resourceVersion and the event history.
#[derive(Debug)]
pub struct Store {
    types: Vec<ResourceType>,
    objects: BTreeMap<ObjectKey, Value>,
    resource_version: u64,
    history: VecDeque<Event>,
    history_limit: usize,
    /// Events at or below this resourceVersion are gone from the history.
    compacted_through: u64,
    /// `openAPIV3Schema` of custom resource types, by `group/version/plural`.
    schemas: BTreeMap<String, Value>,
    /// Events not yet handed to watchers.
    outbox: Vec<Event>,
}

fn metadata(obj: &Value) -> &Value {
    &obj["metadata"]
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

fn finalizers(obj: &Value) -> Vec<String> {
    metadata(obj)["finalizers"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn labels(obj: &Value) -> BTreeMap<String, String> {
    metadata(obj)["labels"]
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned()))).collect())
        .unwrap_or_default()
}

/// Everything outside `.metadata` and `.status`: what the generation tracks.
fn spec_part(obj: &Value) -> Map<String, Value> {
    obj.as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn now_rfc3339() -> String {
    OffsetDateTime::now_utc().replace_nanosecond(0).ok().and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default()
}

fn set_meta(obj: &mut Value, field: &str, value: Value) {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"][field] = value;
}

fn remove_meta(obj: &mut Value, field: &str) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove(field);
    }
}

/// Applies a JSON patch, treating `test` of `null` on a missing path as success (the API server
/// does, and kube-runtime's finalizer helper relies on it). A failed test is 422.
fn json_patch(target: &mut Value, ops: &Value, invalid: impl Fn(&str) -> ApiError) -> Result<(), ApiError> {
    let ops = ops.as_array().ok_or_else(|| ApiError::bad_request("a JSON patch is an array of operations"))?;
    let mut kept = Vec::with_capacity(ops.len());
    for op in ops {
        let is_null_test = op["op"] == "test" && op.get("value").is_some_and(Value::is_null);
        let path = op["path"].as_str().unwrap_or_default();
        if is_null_test && target.pointer(path).is_none_or(Value::is_null) {
            continue;
        }
        kept.push(op.clone());
    }
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(kept))
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(target, &patch).map_err(|e| invalid(&e.to_string()))
}

impl Store {
    /// An empty store serving `types`, remembering the last `history_limit` events.
    pub fn new(types: Vec<ResourceType>, history_limit: usize) -> Self {
        Store {
            types,
            objects: BTreeMap::new(),
            resource_version: 0,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted_through: 0,
            schemas: BTreeMap::new(),
            outbox: Vec::new(),
        }
    }

    /// Sets the structural schema objects of `ty` are pruned, defaulted and validated with.
    pub fn set_schema(&mut self, ty: &ResourceType, schema: Value) {
        self.schemas.insert(ty.versioned_key(), schema);
    }

    fn shapes(&self, ty: &ResourceType) -> Shapes<'_> {
        Shapes { schema: self.schemas.get(&ty.versioned_key()) }
    }

    /// Applies `ty`'s schema to `obj` (if it has one): 422 with every violation.
    fn conform(&self, ty: &ResourceType, name: &str, obj: &mut Value) -> Result<(), ApiError> {
        let Some(schema) = self.schemas.get(&ty.versioned_key()) else { return Ok(()) };
        let violations = crate::schema::apply(obj, schema);
        if violations.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid_object(&ty.group, &ty.plural, name, &violations))
        }
    }

    /// Serves another resource type (a CRD version being installed), replacing an earlier
    /// definition of the same group, version and plural.
    pub fn add_type(&mut self, ty: ResourceType) {
        self.types.retain(|t| t.versioned_key() != ty.versioned_key());
        self.types.push(ty);
    }

    /// Stops serving every version of `group/plural` and forgets its objects, emitting DELETED
    /// for each (a CRD being deleted).
    pub fn remove_types(&mut self, group: &str, plural: &str) {
        let Some(ty) = self.types.iter().find(|t| t.group == group && t.plural == plural).cloned() else { return };
        let keys: Vec<ObjectKey> = self.objects.keys().filter(|(r, _, _)| *r == ty.key()).cloned().collect();
        for key in keys {
            if let Some(mut gone) = self.objects.remove(&key) {
                let rv = self.bump();
                set_meta(&mut gone, "resourceVersion", json!(rv.to_string()));
                self.record(EventType::Deleted, &ty, &key.1, &gone, None);
            }
        }
        self.types.retain(|t| !(t.group == group && t.plural == plural));
        self.schemas.retain(|k, _| !k.starts_with(&format!("{group}/")) || !k.ends_with(&format!("/{plural}")));
    }

    /// Every served type.
    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    /// The type served at `group` / `version` / `plural`.
    pub fn resource_type(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types.iter().find(|t| t.group == group && t.version == version && t.plural == plural)
    }

    /// Deletes every object in `namespace` (the namespace controller's job), emitting DELETED.
    pub fn delete_namespace_contents(&mut self, namespace: &str) {
        let keys: Vec<ObjectKey> = self.objects.keys().filter(|(_, ns, _)| ns == namespace).cloned().collect();
        for key in keys {
            let Some(ty) = self.types.iter().find(|t| t.key() == key.0).cloned() else { continue };
            if let Some(mut gone) = self.objects.remove(&key) {
                let rv = self.bump();
                set_meta(&mut gone, "resourceVersion", json!(rv.to_string()));
                self.record(EventType::Deleted, &ty, namespace, &gone, None);
            }
        }
    }

    /// Events recorded since the last call, in order (for live watches).
    pub fn drain_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.outbox)
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    fn bump(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    fn record(&mut self, kind: EventType, ty: &ResourceType, namespace: &str, object: &Value, previous: Option<Value>) {
        let resource_version = self.resource_version;
        let event = Event {
            kind,
            resource_version,
            resource: ty.key(),
            namespace: if ty.namespaced { namespace.to_owned() } else { String::new() },
            object: object.clone(),
            previous,
        };
        self.outbox.push(event.clone());
        self.history.push_back(event);
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted_through = dropped.resource_version;
            }
        }
    }

    /// Events of `ty` (in `namespace`, or every namespace) after resourceVersion `since`;
    /// 410 when the history no longer reaches back that far.
    pub fn events_since(&self, ty: &ResourceType, namespace: Option<&str>, since: u64) -> Result<Vec<Event>, ApiError> {
        if since < self.compacted_through {
            return Err(ApiError::expired(format!(
                "too old resource version: {since} ({})",
                self.compacted_through + 1
            )));
        }
        let key = ty.key();
        Ok(self
            .history
            .iter()
            .filter(|e| e.resource_version > since && e.resource == key && namespace.is_none_or(|n| e.namespace == n))
            .cloned()
            .collect())
    }

    /// Forgets the whole history (test hook): every watch or continue token from before now gets
    /// 410. The resourceVersion moves on, so a relist gets a version a watch may resume from.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted_through = self.bump();
    }

    fn namespace_exists(&self, namespace: &str) -> bool {
        self.objects.contains_key(&("/namespaces".to_owned(), String::new(), namespace.to_owned()))
    }

    fn namespace_terminating(&self, namespace: &str) -> bool {
        self.objects
            .get(&("/namespaces".to_owned(), String::new(), namespace.to_owned()))
            .is_some_and(|ns| meta_str(ns, "deletionTimestamp").is_some())
    }

    fn object_key(ty: &ResourceType, namespace: &str, name: &str) -> ObjectKey {
        (ty.key(), if ty.namespaced { namespace.to_owned() } else { String::new() }, name.to_owned())
    }

    /// Creates `obj` in `namespace`.
    pub fn create(
        &mut self,
        ty: &ResourceType,
        namespace: &str,
        obj: Value,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        self.insert_new(ty, namespace, obj, options, None)
    }

    /// The create path, for `POST` and for an apply that creates (`applied` holds its managed
    /// fields).
    fn insert_new(
        &mut self,
        ty: &ResourceType,
        namespace: &str,
        mut obj: Value,
        options: &WriteOptions,
        applied: Option<Vec<ManagedEntry>>,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        let name = match meta_str(&obj, "name") {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => match meta_str(&obj, "generateName") {
                Some(prefix) => format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..5]),
                None => {
                    return Err(ApiError::invalid(
                        &ty.group,
                        &ty.plural,
                        "",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    ));
                }
            },
        };
        check_name(ty, &name)?;
        if ty.namespaced {
            if !self.namespace_exists(namespace) {
                return Err(ApiError::not_found("", "namespaces", namespace));
            }
            if meta_str(&obj, "namespace").is_some_and(|n| n != namespace) {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        let key = Self::object_key(ty, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&ty.group, &ty.plural, &name));
        }
        if ty.namespaced && self.namespace_terminating(namespace) {
            return Err(ApiError::forbidden(
                &ty.group,
                &ty.plural,
                &name,
                &format!("unable to create new content in namespace {namespace} because it is being terminated"),
            ));
        }
        obj["apiVersion"] = json!(ty.api_version());
        obj["kind"] = json!(ty.kind);
        set_meta(&mut obj, "name", json!(name));
        if ty.namespaced {
            set_meta(&mut obj, "namespace", json!(namespace));
        } else {
            remove_meta(&mut obj, "namespace");
        }
        set_meta(&mut obj, "uid", json!(uuid::Uuid::new_v4().to_string()));
        set_meta(&mut obj, "creationTimestamp", json!(now_rfc3339()));
        set_meta(&mut obj, "generation", json!(1));
        remove_meta(&mut obj, "deletionTimestamp");
        remove_meta(&mut obj, "deletionGracePeriodSeconds");
        remove_meta(&mut obj, "managedFields");
        if ty.status_subresource
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        builtin_defaults(ty, &mut obj)?;
        self.conform(ty, &name, &mut obj)?;
        let entries = match applied {
            Some(entries) => Some(entries),
            None => options.field_manager.as_deref().map(|manager| {
                let mut entries = Vec::new();
                ssa::record_update(
                    &mut entries,
                    manager,
                    None,
                    &ty.api_version(),
                    &now_rfc3339(),
                    &json!({}),
                    &obj,
                    self.shapes(ty),
                );
                entries
            }),
        };
        if let Some(entries) = entries.filter(|e| !e.is_empty()) {
            set_meta(&mut obj, "managedFields", ssa::render(&entries));
        }
        if options.dry_run {
            return Ok(obj);
        }
        let rv = self.bump();
        set_meta(&mut obj, "resourceVersion", json!(rv.to_string()));
        self.objects.insert(key, obj.clone());
        self.record(EventType::Added, ty, namespace, &obj, None);
        Ok(obj)
    }

    /// The object `name`.
    pub fn get(&self, ty: &ResourceType, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&Self::object_key(ty, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&ty.group, &ty.plural, name))
    }

    /// Objects of `ty` in `namespace` (every namespace when `None`), in name order, paginated.
    pub fn list(
        &self,
        ty: &ResourceType,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<ListPage, ApiError> {
        let filter = Filter::parse(options.label_selector.as_deref(), options.field_selector.as_deref())?;
        filter.check_fields(ty)?;
        // A continue token is `<resourceVersion>/<namespace>/<name>` of the last item served.
        let after = match &options.continue_token {
            Some(token) => {
                let mut parts = token.splitn(3, '/');
                let (rv, ns, name) = (parts.next(), parts.next(), parts.next());
                let rv: u64 =
                    rv.and_then(|r| r.parse().ok()).ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
                if rv < self.compacted_through {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ));
                }
                Some((ns.unwrap_or_default().to_owned(), name.unwrap_or_default().to_owned()))
            }
            None => None,
        };
        let key = ty.key();
        let mut items = Vec::new();
        let mut continue_token = None;
        for ((resource, ns, name), obj) in &self.objects {
            if *resource != key || namespace.is_some_and(|n| ty.namespaced && n != ns) {
                continue;
            }
            if after.as_ref().is_some_and(|(a_ns, a_name)| (ns, name) <= (a_ns, a_name)) {
                continue;
            }
            if !filter.matches(obj) {
                continue;
            }
            if options.limit > 0 && items.len() == options.limit {
                continue_token = items.last().map(|last: &Value| {
                    format!(
                        "{}/{}/{}",
                        self.resource_version,
                        meta_str(last, "namespace").unwrap_or_default(),
                        meta_str(last, "name").unwrap_or_default()
                    )
                });
                break;
            }
            items.push(obj.clone());
        }
        Ok(ListPage { items, resource_version: self.resource_version, continue_token })
    }

    /// Replaces the object (`PUT`), or its status (`PUT …/status`).
    pub fn replace(
        &mut self,
        ty: &ResourceType,
        namespace: &str,
        name: &str,
        obj: Value,
        subresource: Subresource,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let existing = self.get(ty, namespace, name)?;
        match meta_str(&obj, "resourceVersion") {
            Some(rv) if Some(rv) != meta_str(&existing, "resourceVersion") => {
                return Err(ApiError::conflict(&ty.group, &ty.plural, name));
            }
            None if ty.custom => {
                return Err(ApiError::invalid(
                    &ty.group,
                    &ty.plural,
                    name,
                    "metadata.resourceVersion",
                    "Invalid value: 0x0: must be specified for an update",
                ));
            }
            _ => {}
        }
        self.write(ty, namespace, name, existing, obj, subresource, options, None)
    }

    /// Patches the object or its status. A `metadata.resourceVersion` in the patched result that
    /// differs from the stored one is a precondition failure (409).
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        ty: &ResourceType,
        namespace: &str,
        name: &str,
        kind: PatchKind,
        body: &Value,
        subresource: Subresource,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        if options.force {
            return Err(ApiError::invalid(
                &ty.group,
                &ty.plural,
                name,
                "force",
                "Unsupported value: true: may not be specified for non-apply patch",
            ));
        }
        let existing = self.get(ty, namespace, name)?;
        let mut patched = existing.clone();
        match kind {
            PatchKind::Strategic if ty.custom => {
                return Err(ApiError::unsupported_media_type(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                ));
            }
            PatchKind::Merge | PatchKind::Strategic => {
                if !body.is_object() {
                    return Err(ApiError::bad_request("a merge patch is a JSON object"));
                }
                json_patch::merge(&mut patched, body)
            }
            PatchKind::Json => json_patch(&mut patched, body, |why| {
                ApiError::invalid(
                    &ty.group,
                    &ty.plural,
                    name,
                    "patch",
                    &format!("the JSON patch could not be applied: {why}"),
                )
            })?,
        }
        if meta_str(&patched, "resourceVersion") != meta_str(&existing, "resourceVersion") {
            return Err(ApiError::conflict(&ty.group, &ty.plural, name));
        }
        self.write(ty, namespace, name, existing, patched, subresource, options, None)
    }

    /// Server-side apply of `config`: creates the object if it is missing (not through
    /// `/status`), merges into it otherwise, tracking field ownership per manager; 409 with a
    /// cause per field another manager owns with another value, unless forced.
    pub fn apply(
        &mut self,
        ty: &ResourceType,
        namespace: &str,
        name: &str,
        config: &Value,
        subresource: Subresource,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let invalid = |field: &str, message: &str| ApiError::invalid(&ty.group, &ty.plural, name, field, message);
        let manager = options
            .field_manager
            .as_deref()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| invalid("fieldManager", "Required value: is required for apply patch"))?;
        if !config.is_object() {
            return Err(ApiError::bad_request("an apply patch is an object"));
        }
        if config["apiVersion"].as_str() != Some(&ty.api_version()) || config["kind"].as_str() != Some(&ty.kind) {
            return Err(ApiError::bad_request(format!(
                "the apply configuration must have apiVersion {} and kind {}",
                ty.api_version(),
                ty.kind
            )));
        }
        if meta_str(config, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request("the name of the object does not match the name in the URL"));
        }
        // What this subresource may set: `.status` alone through `/status`, everything else otherwise.
        let mut cut = config.clone();
        if let Some(map) = cut.as_object_mut() {
            match subresource {
                Subresource::Status => map.retain(|k, _| k == "status"),
                Subresource::Main if ty.status_subresource => {
                    map.remove("status");
                }
                Subresource::Main => {}
            }
        }
        let sub = (subresource == Subresource::Status).then_some("status");
        let request = ssa::ApplyRequest {
            manager,
            subresource: sub,
            api_version: &ty.api_version(),
            time: &now_rfc3339(),
            force: options.force,
        };
        let conflict_error = |conflicts: Vec<ssa::Conflict>| {
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|c| {
                    json!({
                        "reason": "FieldManagerConflict",
                        "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version),
                        "field": ssa::dotted(&c.path),
                    })
                })
                .collect();
            ApiError::apply_conflict(&ty.group, &ty.plural, name, causes)
        };
        let existing = match self.get(ty, namespace, name) {
            Ok(existing) => existing,
            Err(e) if e.code == 404 && subresource == Subresource::Main => {
                let mut base = json!({ "apiVersion": ty.api_version(), "kind": ty.kind, "metadata": { "name": name } });
                for field in ["generateName", "namespace"] {
                    if let Some(v) = config["metadata"].get(field) {
                        base["metadata"][field] = v.clone();
                    }
                }
                let applied = ssa::apply(&base, Vec::new(), &cut, request, self.shapes(ty)).map_err(conflict_error)?;
                return self.insert_new(ty, namespace, applied.object, options, Some(applied.entries));
            }
            Err(e) => return Err(e),
        };
        if meta_str(config, "resourceVersion").is_some_and(|rv| Some(rv) != meta_str(&existing, "resourceVersion")) {
            return Err(ApiError::conflict(&ty.group, &ty.plural, name));
        }
        let applied = ssa::apply(&existing, ssa::entries_of(&existing), &cut, request, self.shapes(ty))
            .map_err(conflict_error)?;
        self.write(ty, namespace, name, existing, applied.object, subresource, options, Some(applied.entries))
    }

    /// The shared update path: status split, immutable metadata, finalizer and generation rules,
    /// field ownership.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        ty: &ResourceType,
        namespace: &str,
        name: &str,
        existing: Value,
        requested: Value,
        subresource: Subresource,
        options: &WriteOptions,
        applied: Option<Vec<ManagedEntry>>,
    ) -> Result<Value, ApiError> {
        if !requested.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        if meta_str(&requested, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request("the name of the object does not match the name in the URL"));
        }
        if requested.get("apiVersion").and_then(Value::as_str).is_some_and(|v| v != ty.api_version())
            || requested.get("kind").and_then(Value::as_str).is_some_and(|k| k != ty.kind)
        {
            return Err(ApiError::bad_request(format!(
                "the object must have apiVersion {} and kind {}",
                ty.api_version(),
                ty.kind
            )));
        }
        let next_status_from = |mut target: Value, source: &Value| {
            match source.get("status") {
                Some(status) => target["status"] = status.clone(),
                None => {
                    if let Some(o) = target.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            target
        };
        let mut next = match subresource {
            // A status write changes only `.status`.
            Subresource::Status => next_status_from(existing.clone(), &requested),
            // With a status subresource, the main resource keeps the stored status.
            Subresource::Main if ty.status_subresource => next_status_from(requested.clone(), &existing),
            Subresource::Main => requested.clone(),
        };
        next["apiVersion"] = json!(ty.api_version());
        next["kind"] = json!(ty.kind);
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "managedFields",
        ] {
            match existing["metadata"].get(field) {
                Some(v) => set_meta(&mut next, field, v.clone()),
                None => remove_meta(&mut next, field),
            }
        }
        let terminating = meta_str(&existing, "deletionTimestamp").is_some();
        let (old_finalizers, new_finalizers) = (finalizers(&existing), finalizers(&next));
        if terminating && new_finalizers.iter().any(|f| !old_finalizers.contains(f)) {
            return Err(ApiError::invalid(
                &ty.group,
                &ty.plural,
                name,
                "metadata.finalizers",
                "Forbidden: no new finalizers can be added if the object is being deleted",
            ));
        }
        builtin_defaults(ty, &mut next)?;
        self.conform(ty, name, &mut next)?;
        if subresource == Subresource::Main && spec_part(&next) != spec_part(&existing) {
            let generation = existing["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            set_meta(&mut next, "generation", json!(generation));
        }
        // Field ownership: an apply brings its own; any other write is an update by its manager.
        // A request that sets `managedFields: []` clears them.
        let cleared = requested["metadata"]["managedFields"].as_array().is_some_and(Vec::is_empty);
        let entries = match applied {
            Some(entries) => Some(entries),
            None if cleared => Some(Vec::new()),
            None => options.field_manager.as_deref().map(|manager| {
                let mut entries = ssa::entries_of(&existing);
                ssa::record_update(
                    &mut entries,
                    manager,
                    (subresource == Subresource::Status).then_some("status"),
                    &ty.api_version(),
                    &now_rfc3339(),
                    &existing,
                    &next,
                    self.shapes(ty),
                );
                entries
            }),
        };
        if let Some(entries) = entries {
            if entries.is_empty() {
                remove_meta(&mut next, "managedFields");
            } else {
                set_meta(&mut next, "managedFields", ssa::render(&entries));
            }
        }
        // Nothing changed: the API server answers with the stored object and writes nothing.
        let mut unchanged = next.clone();
        set_meta(&mut unchanged, "resourceVersion", existing["metadata"]["resourceVersion"].clone());
        if without_times(&unchanged) == without_times(&existing) || options.dry_run {
            return Ok(if options.dry_run { unchanged } else { existing });
        }
        let key = Self::object_key(ty, namespace, name);
        let rv = self.bump();
        set_meta(&mut next, "resourceVersion", json!(rv.to_string()));
        if terminating && new_finalizers.is_empty() {
            self.objects.remove(&key);
            self.record(EventType::Deleted, ty, namespace, &next, Some(existing));
            return Ok(next);
        }
        self.objects.insert(key, next.clone());
        self.record(EventType::Modified, ty, namespace, &next, Some(existing));
        Ok(next)
    }

    /// Deletes the object. With finalizers it only becomes terminating (deletionTimestamp set,
    /// generation bumped) until they are removed; a second delete changes nothing. `uid` and
    /// `resource_version` are preconditions.
    pub fn delete(
        &mut self,
        ty: &ResourceType,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let existing = self.get(ty, namespace, name)?;
        if options.uid.as_deref().is_some_and(|u| Some(u) != meta_str(&existing, "uid"))
            || options.resource_version.as_deref().is_some_and(|r| Some(r) != meta_str(&existing, "resourceVersion"))
        {
            return Err(ApiError::conflict(&ty.group, &ty.plural, name));
        }
        let key = Self::object_key(ty, namespace, name);
        if !finalizers(&existing).is_empty() {
            if meta_str(&existing, "deletionTimestamp").is_some() {
                return Ok(existing);
            }
            let mut next = existing.clone();
            set_meta(&mut next, "deletionTimestamp", json!(now_rfc3339()));
            set_meta(&mut next, "deletionGracePeriodSeconds", json!(0));
            let generation = next["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            set_meta(&mut next, "generation", json!(generation));
            if options.dry_run {
                return Ok(next);
            }
            let rv = self.bump();
            set_meta(&mut next, "resourceVersion", json!(rv.to_string()));
            self.objects.insert(key, next.clone());
            self.record(EventType::Modified, ty, namespace, &next, Some(existing));
            return Ok(next);
        }
        if options.dry_run {
            return Ok(existing);
        }
        let mut gone = existing;
        let rv = self.bump();
        set_meta(&mut gone, "resourceVersion", json!(rv.to_string()));
        self.objects.remove(&key);
        self.record(EventType::Deleted, ty, namespace, &gone, None);
        Ok(gone)
    }
}

/// `managedFields` times move whenever a manager writes; a write that changes nothing else is
/// still a no-op.
fn without_times(obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(entries) = out["metadata"].get_mut("managedFields").and_then(Value::as_array_mut) {
        for e in entries {
            if let Some(e) = e.as_object_mut() {
                e.remove("time");
            }
        }
    }
    out
}

/// Names must be DNS subdomains (RFC 1123): what every kind the operator touches requires.
fn check_name(ty: &ResourceType, name: &str) -> Result<(), ApiError> {
    let valid = name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(
            &ty.group,
            &ty.plural,
            name,
            "metadata.name",
            &format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ))
    }
}

/// What the API server fills in on built-in kinds that tests read back: a Secret's
/// `stringData` is folded into base64 `data`, a Namespace is `Active`.
fn builtin_defaults(ty: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    if ty.custom {
        return Ok(());
    }
    match (ty.group.as_str(), ty.plural.as_str()) {
        ("", "secrets") => {
            if let Some(Value::Object(string_data)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
                use base64::Engine as _;
                if !obj["data"].is_object() {
                    obj["data"] = json!({});
                }
                for (k, v) in string_data {
                    let v = v.as_str().ok_or_else(|| ApiError::bad_request("stringData values are strings"))?;
                    obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(v));
                }
            }
            if obj.get("type").is_none() {
                obj["type"] = json!("Opaque");
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            crate::types::crd_types(obj)?;
        }
        ("", "namespaces") => {
            let terminating = meta_str(obj, "deletionTimestamp").is_some();
            obj["status"]["phase"] = json!(if terminating { "Terminating" } else { "Active" });
        }
        _ => {}
    }
    crate::types::check_builtin(ty, obj).map_err(|why| {
        let name = meta_str(obj, "name").unwrap_or_default();
        if why.starts_with("missing field") {
            ApiError::invalid(&ty.group, &ty.plural, name, "body", &format!("Required value: {why}"))
        } else {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {why}",
                ty.kind, ty.version, ty.kind
            ))
        }
    })
}

/// A label and field selector, as list and watch take them.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    labels: LabelSelector,
    /// (field path, value, equal?).
    fields: Vec<(String, String, bool)>,
}

impl Filter {
    /// Parses `labelSelector` and `fieldSelector`; fields are checked against `ty` by
    /// [`Filter::check_fields`].
    pub fn parse(label_selector: Option<&str>, field_selector: Option<&str>) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(label_selector.unwrap_or(""))?;
        let fields = field_selector
            .unwrap_or("")
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|part| {
                let (field, value, eq) = if let Some((f, v)) = part.split_once("!=") {
                    (f, v, false)
                } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                    (f, v, true)
                } else {
                    return Err(ApiError::bad_request(format!("invalid field selector: {part:?}")));
                };
                Ok((field.trim().to_owned(), value.trim().to_owned(), eq))
            })
            .collect::<Result<_, _>>()?;
        Ok(Filter { labels, fields })
    }

    /// 400 for a field `ty` cannot be selected by: `metadata.name` and `metadata.namespace`
    /// everywhere, a CRD's `selectableFields`, and the few fields built-in kinds index.
    pub fn check_fields(&self, ty: &ResourceType) -> Result<(), ApiError> {
        for (field, _, _) in &self.fields {
            let builtin: &[&str] = match (ty.custom, ty.group.as_str(), ty.plural.as_str()) {
                (false, "", "secrets") => &["type"],
                (false, "", "events") => &[
                    "involvedObject.kind",
                    "involvedObject.name",
                    "involvedObject.namespace",
                    "involvedObject.uid",
                    "reason",
                    "type",
                ],
                (false, "events.k8s.io", "events") => {
                    &["regarding.kind", "regarding.name", "regarding.namespace", "reason", "type"]
                }
                (false, "", "pods") => &["spec.nodeName", "status.phase"],
                _ => &[],
            };
            let allowed = matches!(field.as_str(), "metadata.name" | "metadata.namespace")
                || builtin.contains(&field.as_str())
                || ty.selectable_fields.iter().any(|f| f.trim_start_matches('.') == field);
            if !allowed {
                return Err(ApiError::bad_request(format!("field label not supported: {field}")));
            }
        }
        Ok(())
    }

    /// Whether `obj` is selected.
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(&labels(obj))
            && self.fields.iter().all(|(f, v, eq)| {
                let actual = f.split('.').try_fold(obj, |node, key| node.get(key));
                let actual = match actual {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                (actual == *v) == *eq
            })
    }
}
