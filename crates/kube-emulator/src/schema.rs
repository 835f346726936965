//! Structural schemas of custom resources, applied as the API server applies them on every
//! write: unknown fields are pruned (unless `x-kubernetes-preserve-unknown-fields`), `default`s
//! are filled in, and the result is validated (`type`, `required`, `enum`, `pattern`,
//! `minimum`/`maximum`, `minLength`/`maxLength`, `minItems`/`maxItems`, `nullable`). Pruning is
//! the classic "works in a unit test, broken in a cluster" bug: a status field missing from the
//! CRD silently vanishes.

use serde_json::{Map, Value, json};

/// One validation failure, as a `Status` cause.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// JSON path of the field (`spec.members[0].role`).
    pub field: String,
    /// What is wrong, worded as the API server words it.
    pub message: String,
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, `FieldValueTypeInvalid`.
    pub reason: &'static str,
}

impl Violation {
    /// The `details.causes[]` entry.
    pub fn cause(&self) -> Value {
        json!({ "reason": self.reason, "message": self.message, "field": self.field })
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

/// Prunes unknown fields and fills defaults in `value` (the object without `apiVersion`, `kind`
/// and `metadata`, which the API server handles itself).
pub fn prune_and_default(value: &mut Value, schema: &Value) {
    if schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true)
        && schema.get("properties").is_none()
    {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                let preserve =
                    schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true);
                if !preserve {
                    map.retain(|k, _| properties.contains_key(k));
                }
                for (key, sub) in properties {
                    if !map.contains_key(key)
                        && let Some(default) = sub.get("default")
                    {
                        map.insert(key.clone(), default.clone());
                    }
                    if let Some(v) = map.get_mut(key) {
                        prune_and_default(v, sub);
                    }
                }
            } else if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for v in map.values_mut() {
                    prune_and_default(v, additional);
                }
            } else if schema.get("type").and_then(Value::as_str) == Some("object") {
                map.clear();
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    prune_and_default(item, item_schema);
                }
            }
        }
        _ => {}
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Validates `value` against `schema`; every violation is reported, in document order.
pub fn validate(value: &Value, schema: &Value, path: &str, out: &mut Vec<Violation>) {
    let mut violation = |reason, message: String| out.push(Violation { field: path.to_owned(), message, reason });
    if value.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true) {
            violation("FieldValueTypeInvalid", "Invalid value: \"null\": must not be null".into());
        }
        return;
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(value);
        let fits = actual == expected || (expected == "number" && actual == "integer");
        if !fits {
            violation(
                "FieldValueTypeInvalid",
                format!("Invalid value: \"{actual}\": {path} in body must be of type {expected}"),
            );
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        violation(
            "FieldValueNotSupported",
            format!("Unsupported value: {value}: supported values: {}", list.join(", ")),
        );
    }
    match value {
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if schema.get("minLength").and_then(Value::as_u64).is_some_and(|m| len < m) {
                violation(
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: {value}: {path} in body should be at least {} chars long",
                        schema["minLength"]
                    ),
                );
            }
            if schema.get("maxLength").and_then(Value::as_u64).is_some_and(|m| len > m) {
                violation("TooLong", format!("Too long: may not be longer than {}", schema["maxLength"]));
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                match regex::Regex::new(pattern) {
                    Ok(re) if !re.is_match(s) => violation(
                        "FieldValueInvalid",
                        format!("Invalid value: {value}: {path} in body should match '{pattern}'"),
                    ),
                    Ok(_) => {}
                    Err(_) => {
                        violation("FieldValueInvalid", format!("the schema's pattern '{pattern}' does not compile"))
                    }
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if schema.get("minimum").and_then(Value::as_f64).is_some_and(|m| x < m) {
                violation(
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: {value}: {path} in body should be greater than or equal to {}",
                        schema["minimum"]
                    ),
                );
            }
            if schema.get("maximum").and_then(Value::as_f64).is_some_and(|m| x > m) {
                violation(
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: {value}: {path} in body should be less than or equal to {}",
                        schema["maximum"]
                    ),
                );
            }
        }
        Value::Array(items) => {
            let len = items.len() as u64;
            if schema.get("minItems").and_then(Value::as_u64).is_some_and(|m| len < m) {
                violation(
                    "FieldValueInvalid",
                    format!("Invalid value: {len}: {path} in body should have at least {} items", schema["minItems"]),
                );
            }
            if schema.get("maxItems").and_then(Value::as_u64).is_some_and(|m| len > m) {
                violation("TooMany", format!("Too many: {len}: must have at most {} items", schema["maxItems"]));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(item, item_schema, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(map) => validate_object(map, schema, path, out),
        _ => {}
    }
}

fn validate_object(map: &Map<String, Value>, schema: &Value, path: &str, out: &mut Vec<Violation>) {
    for required in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        if !map.contains_key(required) {
            out.push(Violation {
                field: child(path, required),
                message: "Required value".into(),
                reason: "FieldValueRequired",
            });
        }
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (key, sub) in properties {
            if let Some(v) = map.get(key) {
                validate(v, sub, &child(path, key), out);
            }
        }
    } else if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        for (key, v) in map {
            validate(v, additional, &child(path, key), out);
        }
    }
}

/// Prunes, defaults and validates the non-metadata part of `object` against a CRD version's
/// `openAPIV3Schema`; returns the violations (empty: valid).
pub fn apply(object: &mut Value, schema: &Value) -> Vec<Violation> {
    let Some(map) = object.as_object_mut() else {
        return vec![Violation {
            field: String::new(),
            message: "must be an object".into(),
            reason: "FieldValueTypeInvalid",
        }];
    };
    let metadata = map.remove("metadata");
    let api_version = map.remove("apiVersion");
    let kind = map.remove("kind");
    let mut body = Value::Object(std::mem::take(map));
    let mut schema = schema.clone();
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        for reserved in ["metadata", "apiVersion", "kind"] {
            properties.remove(reserved);
        }
    }
    prune_and_default(&mut body, &schema);
    let mut violations = Vec::new();
    validate(&body, &schema, "", &mut violations);
    if let (Value::Object(pruned), Some(target)) = (body, object.as_object_mut()) {
        *target = pruned;
        for (key, value) in [("metadata", metadata), ("apiVersion", api_version), ("kind", kind)] {
            if let Some(v) = value {
                target.insert(key.to_owned(), v);
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["registryRef"],
                    "properties": {
                        "registryRef": { "type": "object", "required": ["name"], "properties": { "name": { "type": "string", "minLength": 1 } } },
                        "autoCreateRepositories": { "type": "boolean", "default": true },
                        "defaultVisibility": { "type": "string", "enum": ["Private", "Public"], "default": "Private" },
                        "quota": { "type": "string", "pattern": "^[0-9]+(Ki|Mi|Gi|Ti)?$", "nullable": true },
                        "replicas": { "type": "integer", "minimum": 1, "maximum": 10 },
                        "members": { "type": "array", "maxItems": 2, "items": {
                            "type": "object", "required": ["user"],
                            "properties": { "user": { "type": "string" }, "role": { "type": "string", "enum": ["Owner", "Viewer"], "default": "Viewer" } }
                        } },
                        "labels": { "type": "object", "additionalProperties": { "type": "string" } },
                        "extra": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
                    }
                },
                "status": { "type": "object", "properties": { "orgId": { "type": "integer" } } }
            }
        })
    }

    #[test]
    fn unknown_fields_are_pruned_and_defaults_filled() {
        let mut obj = json!({
            "apiVersion": "aerugo.io/v1alpha1", "kind": "Organization", "metadata": { "name": "acme", "whatever": 1 },
            "spec": { "registryRef": { "name": "main", "typo": 1 }, "members": [{ "user": "alice" }], "unknown": true,
                      "labels": { "a": "b" }, "extra": { "anything": { "goes": 1 } } },
            "status": { "orgId": 3, "undeclared": "vanishes" },
            "top": 1
        });
        assert!(apply(&mut obj, &schema()).is_empty());
        assert_eq!(obj["spec"]["registryRef"], json!({ "name": "main" }));
        assert!(obj["spec"].get("unknown").is_none() && obj.get("top").is_none());
        assert_eq!(obj["status"], json!({ "orgId": 3 }), "undeclared status fields are pruned");
        assert_eq!(obj["spec"]["autoCreateRepositories"], true);
        assert_eq!(obj["spec"]["defaultVisibility"], "Private");
        assert_eq!(obj["spec"]["members"][0]["role"], "Viewer");
        assert_eq!(obj["spec"]["extra"], json!({ "anything": { "goes": 1 } }));
        assert_eq!(obj["metadata"]["whatever"], 1, "metadata is not the schema's business");
    }

    #[test]
    fn violations_name_their_fields() {
        let mut obj = json!({
            "spec": { "registryRef": {}, "defaultVisibility": "Secret", "quota": "lots", "replicas": 0,
                      "members": [{ "role": "Owner" }, { "user": "b" }, { "user": "c" }], "autoCreateRepositories": "yes" }
        });
        let fields: Vec<(String, &str)> = apply(&mut obj, &schema()).into_iter().map(|v| (v.field, v.reason)).collect();
        for expected in [
            ("spec.registryRef.name".to_owned(), "FieldValueRequired"),
            ("spec.defaultVisibility".to_owned(), "FieldValueNotSupported"),
            ("spec.quota".to_owned(), "FieldValueInvalid"),
            ("spec.replicas".to_owned(), "FieldValueInvalid"),
            ("spec.members".to_owned(), "TooMany"),
            ("spec.members[0].user".to_owned(), "FieldValueRequired"),
            ("spec.autoCreateRepositories".to_owned(), "FieldValueTypeInvalid"),
        ] {
            assert!(fields.contains(&expected), "{expected:?} missing from {fields:?}");
        }
        let mut null_quota = json!({ "spec": { "registryRef": { "name": "m" }, "quota": null } });
        assert!(apply(&mut null_quota, &schema()).is_empty(), "nullable allows null");
        let mut missing = json!({ "spec": {} });
        assert_eq!(apply(&mut missing, &schema())[0].field, "spec.registryRef");
    }
}
