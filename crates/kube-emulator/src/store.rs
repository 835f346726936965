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

/// A resource type the store serves.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

impl ResourceType {
    /// `apiVersion` of its objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
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
    /// `openAPIV3Schema` of custom resource types, by `group/plural`.
    schemas: BTreeMap<String, Value>,
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

fn now_rfc3339() -> String {
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
        }
    }

    /// Sets the structural schema objects of `ty` are pruned, defaulted and validated with.
    pub fn set_schema(&mut self, ty: &ResourceType, schema: Value) {
        self.schemas.insert(ty.key(), schema);
    }

    /// Applies `ty`'s schema to `obj` (if it has one): 422 with every violation.
    fn conform(&self, ty: &ResourceType, name: &str, obj: &mut Value) -> Result<(), ApiError> {
        let Some(schema) = self.schemas.get(&ty.key()) else { return Ok(()) };
        let violations = crate::schema::apply(obj, schema);
        if violations.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid_object(&ty.group, &ty.plural, name, &violations))
        }
    }

    /// Serves another resource type (a CRD being installed).
    pub fn add_type(&mut self, ty: ResourceType) {
        if !self.types.contains(&ty) {
            self.types.push(ty);
        }
    }

    /// The type served at `group` / `plural`.
    pub fn resource_type(&self, group: &str, plural: &str) -> Option<&ResourceType> {
        self.types.iter().find(|t| t.group == group && t.plural == plural)
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    fn bump(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    fn record(&mut self, kind: EventType, ty: &ResourceType, namespace: &str, object: &Value) {
        let resource_version = self.resource_version;
        self.history.push_back(Event {
            kind,
            resource_version,
            resource: ty.key(),
            namespace: namespace.to_owned(),
            object: object.clone(),
        });
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

    fn object_key(ty: &ResourceType, namespace: &str, name: &str) -> ObjectKey {
        (ty.key(), if ty.namespaced { namespace.to_owned() } else { String::new() }, name.to_owned())
    }

    /// Creates `obj` in `namespace`.
    pub fn create(&mut self, ty: &ResourceType, namespace: &str, mut obj: Value) -> Result<Value, ApiError> {
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
        if ty.namespaced {
            if !self.namespace_exists(namespace) {
                return Err(ApiError::not_found("", "namespaces", namespace));
            }
            if meta_str(&obj, "namespace").is_some_and(|n| n != namespace) {
                return Err(ApiError::bad_request(
                    "the namespace of the object does not match the namespace of the request",
                ));
            }
        }
        let key = Self::object_key(ty, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&ty.group, &ty.plural, &name));
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
        if ty.status_subresource
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        self.conform(ty, &name, &mut obj)?;
        let rv = self.bump();
        set_meta(&mut obj, "resourceVersion", json!(rv.to_string()));
        self.objects.insert(key, obj.clone());
        self.record(EventType::Added, ty, namespace, &obj);
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
        let labels_wanted = LabelSelector::parse(options.label_selector.as_deref().unwrap_or(""))?;
        let fields = parse_field_selector(options.field_selector.as_deref().unwrap_or(""))?;
        // A continue token is `<resourceVersion>/<namespace>/<name>` of the last item served.
        let after = match &options.continue_token {
            Some(token) => {
                let mut parts = token.splitn(3, '/');
                let (rv, ns, name) = (parts.next(), parts.next(), parts.next());
                let rv: u64 =
                    rv.and_then(|r| r.parse().ok()).ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
                if rv < self.compacted_through {
                    return Err(ApiError::expired("the provided continue parameter is too old"));
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
            if !labels_wanted.matches(&labels(obj)) || !fields.iter().all(|(f, v, eq)| (field(obj, f) == *v) == *eq) {
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
        self.write(ty, namespace, name, existing, obj, subresource)
    }

    /// Patches the object or its status. A `metadata.resourceVersion` in the patched result that
    /// differs from the stored one is a precondition failure (409).
    pub fn patch(
        &mut self,
        ty: &ResourceType,
        namespace: &str,
        name: &str,
        kind: PatchKind,
        body: &Value,
        subresource: Subresource,
    ) -> Result<Value, ApiError> {
        let existing = self.get(ty, namespace, name)?;
        let mut patched = existing.clone();
        match kind {
            PatchKind::Strategic if ty.custom => {
                return Err(ApiError::unsupported_media_type(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                ));
            }
            PatchKind::Merge | PatchKind::Strategic => json_patch::merge(&mut patched, body),
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
        self.write(ty, namespace, name, existing, patched, subresource)
    }

    /// The shared update path: status split, immutable metadata, finalizer and generation rules.
    fn write(
        &mut self,
        ty: &ResourceType,
        namespace: &str,
        name: &str,
        existing: Value,
        requested: Value,
        subresource: Subresource,
    ) -> Result<Value, ApiError> {
        if !requested.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        if meta_str(&requested, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request("the name of the object does not match the name in the URL"));
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
            Subresource::Main if ty.status_subresource => next_status_from(requested, &existing),
            Subresource::Main => requested,
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
        self.conform(ty, name, &mut next)?;
        if subresource == Subresource::Main && spec_part(&next) != spec_part(&existing) {
            let generation = existing["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            set_meta(&mut next, "generation", json!(generation));
        }
        // Nothing changed: the API server answers with the stored object and writes nothing.
        let mut unchanged = next.clone();
        set_meta(&mut unchanged, "resourceVersion", existing["metadata"]["resourceVersion"].clone());
        if unchanged == existing {
            return Ok(existing);
        }
        let key = Self::object_key(ty, namespace, name);
        let rv = self.bump();
        set_meta(&mut next, "resourceVersion", json!(rv.to_string()));
        if terminating && new_finalizers.is_empty() {
            self.objects.remove(&key);
            self.record(EventType::Deleted, ty, namespace, &next);
            return Ok(next);
        }
        self.objects.insert(key, next.clone());
        self.record(EventType::Modified, ty, namespace, &next);
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
        uid: Option<&str>,
        resource_version: Option<&str>,
    ) -> Result<Value, ApiError> {
        let existing = self.get(ty, namespace, name)?;
        if uid.is_some_and(|u| Some(u) != meta_str(&existing, "uid"))
            || resource_version.is_some_and(|r| Some(r) != meta_str(&existing, "resourceVersion"))
        {
            return Err(ApiError::conflict(&ty.group, &ty.plural, name));
        }
        let key = Self::object_key(ty, namespace, name);
        if !finalizers(&existing).is_empty() {
            if meta_str(&existing, "deletionTimestamp").is_some() {
                return Ok(existing);
            }
            let mut next = existing;
            set_meta(&mut next, "deletionTimestamp", json!(now_rfc3339()));
            set_meta(&mut next, "deletionGracePeriodSeconds", json!(0));
            let generation = next["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            set_meta(&mut next, "generation", json!(generation));
            let rv = self.bump();
            set_meta(&mut next, "resourceVersion", json!(rv.to_string()));
            self.objects.insert(key, next.clone());
            self.record(EventType::Modified, ty, namespace, &next);
            return Ok(next);
        }
        let mut gone = existing;
        let rv = self.bump();
        set_meta(&mut gone, "resourceVersion", json!(rv.to_string()));
        self.objects.remove(&key);
        self.record(EventType::Deleted, ty, namespace, &gone);
        Ok(gone)
    }
}

/// Field selectors on `metadata.name` / `metadata.namespace`: (field, value, equal?).
fn parse_field_selector(raw: &str) -> Result<Vec<(String, String, bool)>, ApiError> {
    raw.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|part| {
            let (field, value, eq) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, v, true)
            } else {
                return Err(ApiError::bad_request(format!("invalid field selector {part:?}")));
            };
            let field = field.trim();
            if !matches!(field, "metadata.name" | "metadata.namespace") {
                return Err(ApiError::bad_request(format!("field label not supported: {field}")));
            }
            Ok((field.to_owned(), value.trim().to_owned(), eq))
        })
        .collect()
}

fn field(obj: &Value, path: &str) -> String {
    match path {
        "metadata.name" => meta_str(obj, "name").unwrap_or_default().to_owned(),
        "metadata.namespace" => meta_str(obj, "namespace").unwrap_or_default().to_owned(),
        _ => String::new(),
    }
}
