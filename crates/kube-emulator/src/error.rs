//! API errors as the Kubernetes API server reports them: an HTTP code, a reason and a
//! `Status` body that `kube::Client` parses into `Error::Api`.

use serde_json::{Value, json};

/// A failed API request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `Expired`, …
    pub reason: &'static str,
    /// Human-readable message, worded as the API server words it.
    pub message: String,
    /// `details`, boxed to keep results small.
    pub details: Box<Details>,
}

/// The `details` of a `Status`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Details {
    /// `details.name`.
    pub name: String,
    /// `details.group`.
    pub group: String,
    /// `details.kind` (the plural, as the API server reports it).
    pub kind: String,
    /// `details.causes`.
    pub causes: Vec<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        ApiError { code, reason, message, details: Box::default() }
    }

    /// Names the object the error is about.
    pub fn about(mut self, group: &str, plural: &str, name: &str) -> Self {
        self.details.group = group.to_owned();
        self.details.kind = plural.to_owned();
        self.details.name = name.to_owned();
        self
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into())
    }

    /// 404 NotFound for `plural.group "name"`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", qualified(plural, group)))
            .about(group, plural, name)
    }

    /// 409 AlreadyExists.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", qualified(plural, group)))
            .about(group, plural, name)
    }

    /// 409 Conflict: the object changed since the caller read it.
    pub fn conflict(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(plural, group)
            ),
        )
        .about(group, plural, name)
    }

    /// 409 Conflict from server-side apply: fields another manager owns.
    pub fn apply_conflict(group: &str, plural: &str, name: &str, causes: Vec<Value>) -> Self {
        let fields: Vec<String> = causes
            .iter()
            .map(|c| {
                format!("{}: {}", c["message"].as_str().unwrap_or_default(), c["field"].as_str().unwrap_or_default())
            })
            .collect();
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict{}: {}",
                causes.len(),
                if causes.len() == 1 { "" } else { "s" },
                fields.join("; ")
            ),
        )
        .about(group, plural, name);
        e.details.causes = causes;
        e
    }

    /// 403 Forbidden.
    pub fn forbidden(group: &str, plural: &str, name: &str, why: &str) -> Self {
        Self::new(403, "Forbidden", format!("{} \"{name}\" is forbidden: {why}", qualified(plural, group)))
            .about(group, plural, name)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message.into())
    }

    /// Any code, for fault injection: the reason the API server gives it.
    pub fn injected(code: u16) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            410 => "Expired",
            422 => "Invalid",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        Self::new(code, reason, format!("injected failure ({code} {reason})"))
    }

    /// 410 Expired: a resourceVersion or continue token older than the retained history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message.into())
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message.into())
    }

    /// 422 Invalid with one cause on `field`.
    pub fn invalid(group: &str, plural: &str, name: &str, field: &str, message: &str) -> Self {
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {field}: {message}", qualified(plural, group)),
        )
        .about(group, plural, name);
        e.details.causes.push(json!({ "reason": "FieldValueInvalid", "message": message, "field": field }));
        e
    }

    /// 422 Invalid listing every schema violation.
    pub fn invalid_object(group: &str, plural: &str, name: &str, violations: &[crate::schema::Violation]) -> Self {
        let summary: Vec<String> = violations.iter().map(|v| format!("{}: {}", v.field, v.message)).collect();
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: [{}]", qualified(plural, group), summary.join(", ")),
        )
        .about(group, plural, name);
        e.details.causes = violations.iter().map(crate::schema::Violation::cause).collect();
        e
    }

    /// The `Status` body.
    pub fn status(&self) -> Value {
        let d = &self.details;
        let mut details = json!({ "name": d.name, "group": d.group, "kind": d.kind });
        if !d.causes.is_empty() {
            details["causes"] = Value::Array(d.causes.clone());
        }
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": details,
            "code": self.code,
        })
    }
}

/// `plural.group`, or `plural` for the core group.
fn qualified(plural: &str, group: &str) -> String {
    if group.is_empty() { plural.to_owned() } else { format!("{plural}.{group}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bodies_look_like_the_api_servers() {
        let e = ApiError::conflict("aerugo.io", "organizations", "acme");
        let s = e.status();
        assert_eq!(s["code"], 409);
        assert_eq!(s["reason"], "Conflict");
        assert_eq!(s["details"]["kind"], "organizations");
        assert!(
            s["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Operation cannot be fulfilled on organizations.aerugo.io \"acme\""))
        );
        assert_eq!(ApiError::not_found("", "secrets", "x").message, "secrets \"x\" not found");
        assert_eq!(
            ApiError::invalid("", "secrets", "x", "metadata.name", "bad").status()["details"]["causes"][0]["field"],
            "metadata.name"
        );
    }
}
