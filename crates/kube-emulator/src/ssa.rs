//! Field ownership: `metadata.managedFields` and server-side apply, the subset of
//! structured-merge-diff that controllers meet. Every write records which manager set which
//! fields (FieldsV1 paths). An apply merges the caller's configuration into the live object
//! (maps recursively, `map` lists by key, `set` lists by value, other lists atomically), removes
//! fields the same manager applied before and now omits (unless someone else owns them), and
//! refuses to change a field another manager owns to a different value unless forced, which
//! moves the ownership.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// One FieldsV1 path: `f:<field>`, `k:<key object>` (an item of a `map` list), `v:<value>` (an
/// item of a `set` list) and `.` (the list item itself).
pub type FieldPath = Vec<String>;

/// A set of owned fields.
pub type FieldSet = BTreeSet<FieldPath>;

/// How a list merges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole.
    Atomic,
    /// Scalars merged by value.
    Set,
    /// Objects merged by these key fields.
    Map(Vec<String>),
}

/// Where list types come from: a custom resource's structural schema
/// (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`), or the keys of the built-in kinds.
#[derive(Debug, Clone, Copy)]
pub struct Shapes<'a> {
    /// The schema of a custom resource version; `None` for built-in kinds.
    pub schema: Option<&'a Value>,
}

impl Shapes<'_> {
    /// The list type of the field at `names` (field names from the root, list items skipped).
    pub fn list_type(&self, names: &[String], first_item: Option<&Value>) -> ListType {
        match names {
            [m, f] if m == "metadata" && f == "finalizers" => return ListType::Set,
            [m, f] if m == "metadata" && f == "ownerReferences" => return ListType::Map(vec!["uid".into()]),
            _ => {}
        }
        let Some(schema) = self.schema else { return builtin_list_type(names, first_item) };
        let mut node = schema;
        for name in names {
            if node.get("type").and_then(Value::as_str) == Some("array") {
                node = &node["items"];
            }
            node = match node.get("properties").and_then(|p| p.get(name)) {
                Some(n) => n,
                None => match node.get("additionalProperties").filter(|a| a.is_object()) {
                    Some(n) => n,
                    None => return ListType::Atomic,
                },
            };
        }
        match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => ListType::Map(
                node["x-kubernetes-list-map-keys"]
                    .as_array()
                    .map(|keys| keys.iter().filter_map(|k| k.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default(),
            ),
            _ => ListType::Atomic,
        }
    }
}

/// The merge keys of the built-in kinds' lists that operators apply.
fn builtin_list_type(names: &[String], first_item: Option<&Value>) -> ListType {
    let keys: &[&str] = match names.last().map(String::as_str) {
        Some(
            "containers"
            | "initContainers"
            | "ephemeralContainers"
            | "volumes"
            | "env"
            | "imagePullSecrets"
            | "secrets"
            | "topologySpreadConstraints",
        ) => &["name"],
        Some("volumeMounts") => &["mountPath"],
        Some("conditions") => &["type"],
        Some("ports") if first_item.is_some_and(|i| i.get("containerPort").is_some()) => &["containerPort"],
        Some("ports") => &["port"],
        _ => return ListType::Atomic,
    };
    ListType::Map(keys.iter().map(|k| (*k).to_owned()).collect())
}

/// The part of an object whose fields are owned: everything but `apiVersion`, `kind` and the
/// server-set metadata.
pub fn ownable(object: &Value) -> Value {
    let mut out = object.as_object().cloned().unwrap_or_default();
    out.remove("apiVersion");
    out.remove("kind");
    if let Some(meta) = out.get("metadata").and_then(Value::as_object) {
        let kept: Map<String, Value> = meta
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "labels" | "annotations" | "finalizers" | "ownerReferences"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if kept.is_empty() {
            out.remove("metadata");
        } else {
            out.insert("metadata".into(), Value::Object(kept));
        }
    }
    Value::Object(out)
}

/// The leaf fields set in `value`.
pub fn fields_of(value: &Value, shapes: Shapes<'_>) -> FieldSet {
    let mut out = FieldSet::new();
    if let Some(map) = value.as_object() {
        collect_map(map, &mut Vec::new(), &mut Vec::new(), shapes, &mut out);
    }
    out
}

/// The fields of each member of `map`, under `names` / `path`.
fn collect_map(
    map: &Map<String, Value>,
    names: &mut Vec<String>,
    path: &mut FieldPath,
    shapes: Shapes<'_>,
    out: &mut FieldSet,
) {
    for (k, v) in map {
        names.push(k.clone());
        path.push(format!("f:{k}"));
        collect(v, names, path, shapes, out);
        path.pop();
        names.pop();
    }
}

fn collect(value: &Value, names: &mut Vec<String>, path: &mut FieldPath, shapes: Shapes<'_>, out: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() => collect_map(map, names, path, shapes, out),
        Value::Array(items) if !items.is_empty() => match shapes.list_type(names, items.first()) {
            ListType::Map(keys) => {
                for item in items {
                    path.push(key_element(item, &keys));
                    let mut own = path.clone();
                    own.push(".".into());
                    out.insert(own);
                    if let Some(map) = item.as_object() {
                        collect_map(map, names, path, shapes, out);
                    }
                    path.pop();
                }
            }
            ListType::Set => {
                for item in items {
                    path.push(format!("v:{item}"));
                    out.insert(path.clone());
                    path.pop();
                }
            }
            ListType::Atomic => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

fn key_element(item: &Value, keys: &[String]) -> String {
    let key: Map<String, Value> =
        keys.iter().map(|k| (k.clone(), item.get(k).cloned().unwrap_or(Value::Null))).collect();
    format!("k:{}", Value::Object(key))
}

fn item_matches(item: &Value, element: &str) -> bool {
    if let Some(key) = element.strip_prefix("k:") {
        let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key) else { return false };
        key.iter().all(|(k, v)| item.get(k).unwrap_or(&Value::Null) == v)
    } else if let Some(v) = element.strip_prefix("v:") {
        serde_json::from_str::<Value>(v).is_ok_and(|v| *item == v)
    } else {
        false
    }
}

/// The value at `path`, if it is set.
pub fn value_at<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut node = value;
    for element in path {
        node = if let Some(field) = element.strip_prefix("f:") {
            node.get(field)?
        } else if element == "." {
            node
        } else {
            node.as_array()?.iter().find(|item| item_matches(item, element))?
        };
    }
    Some(node)
}

/// Removes the field or list item at `path` (an item when the path ends in `.`).
fn remove_at(value: &mut Value, path: &[String]) {
    let path = if path.last().is_some_and(|e| e == ".") { &path[..path.len() - 1] } else { path };
    let Some((last, parents)) = path.split_last() else { return };
    let mut node = value;
    for element in parents {
        let next = if let Some(field) = element.strip_prefix("f:") {
            node.get_mut(field)
        } else {
            node.as_array_mut().and_then(|items| items.iter_mut().find(|item| item_matches(item, element)))
        };
        match next {
            Some(n) => node = n,
            None => return,
        }
    }
    if let Some(field) = last.strip_prefix("f:") {
        if let Some(map) = node.as_object_mut() {
            map.remove(field);
        }
    } else if let Some(items) = node.as_array_mut() {
        items.retain(|item| !item_matches(item, last));
    }
}

/// Merges an applied configuration into `live`.
fn merge(live: &mut Value, applied: &Value, names: &mut Vec<String>, shapes: Shapes<'_>) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, av) in a {
                names.push(k.clone());
                match l.get_mut(k) {
                    Some(lv) => merge(lv, av, names, shapes),
                    None => {
                        l.insert(k.clone(), av.clone());
                    }
                }
                names.pop();
            }
        }
        (Value::Array(l), Value::Array(a)) => match shapes.list_type(names, a.first()) {
            ListType::Map(keys) => {
                for item in a {
                    let element = key_element(item, &keys);
                    match l.iter_mut().find(|li| item_matches(li, &element)) {
                        Some(li) => merge(li, item, names, shapes),
                        None => l.push(item.clone()),
                    }
                }
            }
            ListType::Set => {
                for item in a {
                    if !l.contains(item) {
                        l.push(item.clone());
                    }
                }
            }
            ListType::Atomic => *l = a.clone(),
        },
        (l, a) => *l = a.clone(),
    }
}

/// `.spec.containers[name="app"].image`, as conflicts are reported.
pub fn dotted(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(field) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(field);
        } else if let Some(key) = element.strip_prefix("k:") {
            let pairs: Vec<String> = serde_json::from_str::<Map<String, Value>>(key)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            out.push_str(&format!("[{}]", pairs.join(",")));
        } else if let Some(v) = element.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        }
    }
    out
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    /// `manager`.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// `apiVersion` the fields were set through.
    pub api_version: String,
    /// `time` of the last change of the set.
    pub time: String,
    /// `subresource` (`status`), if any.
    pub subresource: Option<String>,
    /// The owned fields.
    pub fields: FieldSet,
}

impl ManagedEntry {
    fn same_owner(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager && self.operation == operation && self.subresource.as_deref() == subresource
    }
}

/// Reads `metadata.managedFields`.
pub fn entries_of(object: &Value) -> Vec<ManagedEntry> {
    object["metadata"]["managedFields"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    let mut fields = FieldSet::new();
                    paths_of_tree(&e["fieldsV1"], &mut Vec::new(), &mut fields);
                    ManagedEntry {
                        manager: e["manager"].as_str().unwrap_or_default().to_owned(),
                        operation: e["operation"].as_str().unwrap_or("Update").to_owned(),
                        api_version: e["apiVersion"].as_str().unwrap_or_default().to_owned(),
                        time: e["time"].as_str().unwrap_or_default().to_owned(),
                        subresource: e["subresource"].as_str().map(str::to_owned),
                        fields,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn paths_of_tree(tree: &Value, path: &mut FieldPath, out: &mut FieldSet) {
    let Some(map) = tree.as_object() else { return };
    for (k, v) in map {
        path.push(k.clone());
        if v.as_object().is_none_or(Map::is_empty) {
            out.insert(path.clone());
        } else {
            paths_of_tree(v, path, out);
        }
        path.pop();
    }
}

/// Renders entries as `metadata.managedFields`.
pub fn render(entries: &[ManagedEntry]) -> Value {
    Value::Array(
        entries
            .iter()
            .filter(|e| !e.fields.is_empty())
            .map(|e| {
                let mut tree = Map::new();
                for path in &e.fields {
                    let mut node = &mut tree;
                    for element in path {
                        let entry = node.entry(element.clone()).or_insert_with(|| json!({}));
                        if !entry.is_object() {
                            *entry = json!({});
                        }
                        match entry.as_object_mut() {
                            Some(next) => node = next,
                            None => break,
                        }
                    }
                }
                let mut out = json!({
                    "manager": e.manager,
                    "operation": e.operation,
                    "apiVersion": e.api_version,
                    "time": e.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": Value::Object(tree),
                });
                if let Some(sub) = &e.subresource {
                    out["subresource"] = json!(sub);
                }
                out
            })
            .collect(),
    )
}

/// Whether `path`'s value counts as changed between `old` and `new`: leaves by value, list items
/// (`.` and set values) by presence.
fn changed(old: &Value, new: &Value, path: &[String]) -> bool {
    let presence_only = path.last().is_some_and(|e| e == "." || e.starts_with("v:"));
    match (value_at(old, path), value_at(new, path)) {
        (Some(a), Some(b)) => !presence_only && a != b,
        (None, None) => false,
        _ => true,
    }
}

/// Who changed what in a non-apply write: the writer owns the fields it changed (taken from
/// anyone else; updates never conflict), and removed fields are owned by nobody.
#[allow(clippy::too_many_arguments)]
pub fn record_update(
    entries: &mut Vec<ManagedEntry>,
    manager: &str,
    subresource: Option<&str>,
    api_version: &str,
    time: &str,
    old: &Value,
    new: &Value,
    shapes: Shapes<'_>,
) {
    let (old, new) = (ownable(old), ownable(new));
    let old_set = fields_of(&old, shapes);
    let new_set = fields_of(&new, shapes);
    let touched: FieldSet = new_set.iter().filter(|p| changed(&old, &new, p)).cloned().collect();
    let removed: FieldSet = old_set.difference(&new_set).cloned().collect();
    for e in entries.iter_mut() {
        e.fields.retain(|p| !removed.contains(p));
        if !e.same_owner(manager, "Update", subresource) {
            e.fields.retain(|p| !touched.contains(p));
        }
    }
    if !touched.is_empty() {
        match entries.iter_mut().find(|e| e.same_owner(manager, "Update", subresource)) {
            Some(e) => {
                e.fields.extend(touched);
                e.time = time.to_owned();
                e.api_version = api_version.to_owned();
            }
            None => entries.push(ManagedEntry {
                manager: manager.to_owned(),
                operation: "Update".into(),
                api_version: api_version.to_owned(),
                time: time.to_owned(),
                subresource: subresource.map(str::to_owned),
                fields: touched,
            }),
        }
    }
    entries.retain(|e| !e.fields.is_empty());
}

/// Fields another manager owns with a different value than the applier wants.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The other manager.
    pub manager: String,
    /// The API version it wrote through.
    pub api_version: String,
    /// The field.
    pub path: FieldPath,
}

/// The outcome of an apply.
#[derive(Debug)]
pub struct Applied {
    /// The merged object, before the API server's write rules.
    pub object: Value,
    /// The managed fields after the apply.
    pub entries: Vec<ManagedEntry>,
}

/// What an apply is about.
#[derive(Debug, Clone, Copy)]
pub struct ApplyRequest<'a> {
    /// `fieldManager`.
    pub manager: &'a str,
    /// `Some("status")` for `…/status`.
    pub subresource: Option<&'a str>,
    /// The request's API version.
    pub api_version: &'a str,
    /// Now, for the entry's `time`.
    pub time: &'a str,
    /// `force=true`.
    pub force: bool,
}

/// Server-side apply of `config` (already cut down to what the subresource may set) onto `live`.
pub fn apply(
    live: &Value,
    mut entries: Vec<ManagedEntry>,
    config: &Value,
    request: ApplyRequest<'_>,
    shapes: Shapes<'_>,
) -> Result<Applied, Vec<Conflict>> {
    let config = ownable(config);
    let live_ownable = ownable(live);
    let new_set = fields_of(&config, shapes);
    let is_me = |e: &ManagedEntry| e.same_owner(request.manager, "Apply", request.subresource);
    let mut conflicts = Vec::new();
    for e in entries.iter().filter(|e| !is_me(e) && e.manager != request.manager) {
        for path in e.fields.intersection(&new_set) {
            let presence_only = path.last().is_some_and(|el| el == "." || el.starts_with("v:"));
            if !presence_only && value_at(&live_ownable, path) != value_at(&config, path) {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    path: path.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() {
        if !request.force {
            return Err(conflicts);
        }
        let taken: BTreeMap<&FieldPath, ()> = conflicts.iter().map(|c| (&c.path, ())).collect();
        for e in entries.iter_mut().filter(|e| !is_me(e)) {
            e.fields.retain(|p| !taken.contains_key(p));
        }
    }
    let previous = entries.iter().find(|e| is_me(e)).map(|e| e.fields.clone()).unwrap_or_default();
    let others: FieldSet = entries.iter().filter(|e| !is_me(e)).flat_map(|e| e.fields.iter().cloned()).collect();
    let mut object = live.clone();
    for path in previous.difference(&new_set).filter(|p| !others.contains(*p)) {
        remove_at(&mut object, path);
    }
    merge(&mut object, &config, &mut Vec::new(), shapes);
    match entries.iter_mut().find(|e| is_me(e)) {
        Some(e) => {
            if e.fields != new_set {
                e.time = request.time.to_owned();
            }
            e.fields = new_set;
            e.api_version = request.api_version.to_owned();
        }
        None => entries.push(ManagedEntry {
            manager: request.manager.to_owned(),
            operation: "Apply".into(),
            api_version: request.api_version.to_owned(),
            time: request.time.to_owned(),
            subresource: request.subresource.map(str::to_owned),
            fields: new_set,
        }),
    }
    entries.retain(|e| !e.fields.is_empty());
    Ok(Applied { object, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILTIN: Shapes<'static> = Shapes { schema: None };

    fn req(manager: &str, force: bool) -> ApplyRequest<'_> {
        ApplyRequest { manager, subresource: None, api_version: "apps/v1", time: "t", force }
    }

    #[test]
    fn fields_follow_list_types() {
        let obj = json!({
            "metadata": { "labels": { "app": "x" }, "finalizers": ["a"] },
            "spec": { "replicas": 2, "containers": [{ "name": "c", "image": "i" }], "args": ["x", "y"] }
        });
        let fields = fields_of(&obj, BUILTIN);
        let has = |p: &[&str]| fields.contains(&p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert!(has(&["f:metadata", "f:labels", "f:app"]));
        assert!(has(&["f:metadata", "f:finalizers", "v:\"a\""]));
        assert!(has(&["f:spec", "f:containers", "k:{\"name\":\"c\"}", "."]));
        assert!(has(&["f:spec", "f:containers", "k:{\"name\":\"c\"}", "f:image"]));
        assert!(has(&["f:spec", "f:args"]));
        assert_eq!(fields.len(), 7);
        let rendered = render(&[ManagedEntry {
            manager: "m".into(),
            operation: "Apply".into(),
            api_version: "v1".into(),
            time: "t".into(),
            subresource: None,
            fields: fields.clone(),
        }]);
        let back = entries_of(&json!({ "metadata": { "managedFields": rendered } }));
        assert_eq!(back[0].fields, fields);
    }

    #[test]
    fn apply_merges_removes_and_conflicts() {
        let live = json!({ "metadata": { "name": "d" }, "spec": { "replicas": 1 } });
        let first = apply(
            &live,
            vec![],
            &json!({ "spec": { "replicas": 2, "paused": true, "containers": [{ "name": "a", "image": "1" }] } }),
            req("op", false),
            BUILTIN,
        )
        .expect("no conflict");
        assert_eq!(first.object["spec"]["replicas"], 2);
        // A second manager changes a field the first owns: conflict, unless forced.
        let err = apply(
            &first.object,
            first.entries.clone(),
            &json!({ "spec": { "replicas": 3 } }),
            req("hpa", false),
            BUILTIN,
        )
        .expect_err("conflict");
        assert_eq!(dotted(&err[0].path), ".spec.replicas");
        assert_eq!(err[0].manager, "op");
        // The same value shares ownership without a conflict.
        apply(&first.object, first.entries.clone(), &json!({ "spec": { "replicas": 2 } }), req("hpa", false), BUILTIN)
            .expect("same value");
        let forced =
            apply(&first.object, first.entries, &json!({ "spec": { "replicas": 3 } }), req("hpa", true), BUILTIN)
                .expect("forced");
        assert_eq!(forced.object["spec"]["replicas"], 3);
        // The first manager omits fields it applied before: they go, except the one now owned by hpa.
        let again = apply(
            &forced.object,
            forced.entries,
            &json!({ "spec": { "containers": [{ "name": "a", "image": "2" }] } }),
            req("op", false),
            BUILTIN,
        )
        .expect("no conflict");
        assert_eq!(again.object["spec"], json!({ "replicas": 3, "containers": [{ "name": "a", "image": "2" }] }));
    }

    #[test]
    fn updates_take_ownership_without_conflict() {
        let old = json!({ "spec": { "replicas": 2 } });
        let mut entries = apply(&json!({}), vec![], &old, req("op", false), BUILTIN).expect("apply").entries;
        let new = json!({ "spec": { "replicas": 5 } });
        record_update(&mut entries, "kubectl-edit", None, "apps/v1", "t", &old, &new, BUILTIN);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].manager, "kubectl-edit");
        let err = apply(&new, entries, &old, req("op", false), BUILTIN).expect_err("conflict");
        assert_eq!(err[0].manager, "kubectl-edit");
    }
}
