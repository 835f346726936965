//! The one error type of the data plane and the one place it becomes an HTTP response: status,
//! OCI error code, `{"errors":[{"code","message","detail"}]}` body and any headers the spec
//! requires. Internal failures are logged here, once, and answered with an opaque message.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use aerugo_oci::ParseError;
use aerugo_oci::manifest::ManifestError;
use serde_json::{Value, json};

/// Everything a registry request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// `BLOB_UNKNOWN`: the blob is not in the repository.
    #[error("blob unknown to registry")]
    BlobUnknown(String),
    /// `BLOB_UPLOAD_INVALID`: the chunk or final PUT is malformed.
    #[error("blob upload invalid: {0}")]
    BlobUploadInvalid(String),
    /// `BLOB_UPLOAD_UNKNOWN`: no such upload session (or it expired).
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown,
    /// 416 with the session's current position: a chunk did not start at the current offset.
    #[error("chunk out of order: upload is at offset {offset}")]
    RangeMismatch {
        /// Upload URL to continue at.
        location: String,
        /// Upload id.
        upload_id: String,
        /// Bytes received so far.
        offset: u64,
    },
    /// 416: a blob read range outside the blob.
    #[error("requested range not satisfiable")]
    RangeNotSatisfiable {
        /// Blob size, for `Content-Range: bytes */size`.
        size: u64,
    },
    /// `DIGEST_INVALID`: malformed digest, or content that does not match it.
    #[error("provided digest did not match uploaded content")]
    DigestInvalid(String),
    /// `MANIFEST_BLOB_UNKNOWN`: a manifest references a blob or manifest not in the repository.
    #[error("manifest references a blob or manifest unknown to the repository")]
    ManifestBlobUnknown(String),
    /// `MANIFEST_INVALID`.
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    /// `MANIFEST_UNKNOWN`.
    #[error("manifest unknown to registry")]
    ManifestUnknown(String),
    /// `NAME_INVALID`.
    #[error("invalid repository name")]
    NameInvalid(String),
    /// `NAME_UNKNOWN`.
    #[error("repository name not known to registry")]
    NameUnknown(String),
    /// `TAG_INVALID`.
    #[error("manifest tag did not match URI")]
    TagInvalid(String),
    /// `SIZE_INVALID`: content over a limit or not matching its declared length.
    #[error("provided length did not match content length")]
    SizeInvalid {
        /// Over a size limit (413) rather than a length mismatch (400).
        over_limit: bool,
        /// What was wrong.
        detail: String,
    },
    /// `PAGINATION_NUMBER_INVALID`.
    #[error("invalid number of results requested")]
    PaginationInvalid(String),
    /// `DENIED`: the operation is refused (e.g. deleting content still referenced).
    #[error("requested access to the resource is denied")]
    Denied(String),
    /// `DENIED`: the push would take the organization over its storage quota (the message
    /// names the quota and the numbers).
    #[error("{0}")]
    OverQuota(String),
    /// `DENIED` with 409: the push or delete would move or remove an immutable tag.
    #[error("the tag is immutable")]
    ImmutableTag(String),
    /// `UNSUPPORTED`.
    #[error("the operation is unsupported")]
    Unsupported(String),
    /// 401 `UNAUTHORIZED`: no credentials, bad credentials, or a token that does not cover the
    /// request; `challenge` is the `WWW-Authenticate` value telling the client how to get one.
    #[error("authentication required")]
    Unauthorized {
        /// `WWW-Authenticate` header value.
        challenge: String,
        /// What was wrong (never which part of a credential).
        detail: String,
    },
    /// 403 `DENIED` with a challenge naming the scope (RFC 6750's `insufficient_scope`): a
    /// valid token whose holder could not get a token allowing the request either. The
    /// challenge lets clients that refresh only after a 403 (oras-py) try once, then stop.
    #[error("requested access to the resource is denied")]
    DeniedWithChallenge {
        /// `WWW-Authenticate` header value naming the scope needed.
        challenge: String,
    },
    /// 404: an authenticated caller may not pull a repository (which may or may not exist).
    /// It answers exactly as a missing repository does; the pull endpoints turn it into their
    /// own "unknown" error with [`RegistryError::or_unknown`].
    #[error("repository name not known to registry")]
    NotVisible(String),
    /// 429 `TOOMANYREQUESTS` with `Retry-After`: over a rate limit, or too many failed logins.
    #[error("too many requests, retry later")]
    TooManyRequests {
        /// Seconds until the next attempt is allowed.
        retry_after: u64,
    },
    /// 400 `INVALID_REQUEST`: a request this registry cannot make sense of (malformed scope,
    /// unknown grant type, malformed parameters).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// 404: the path names no endpoint of the API.
    #[error("no such endpoint")]
    NoRoute,
    /// 503 with `Retry-After`: a dependency (database, storage) is unavailable.
    #[error("service unavailable, retry later")]
    Unavailable(String),
    /// 503 with `Retry-After`: a mirror's upstream could not give what the mirror does not
    /// hold. `message` tells the client what failed (not where: the upstream's address and
    /// answer, `cause`, stay in the log).
    #[error("{message}")]
    Upstream {
        /// For the client.
        message: String,
        /// For the log.
        cause: String,
    },
    /// 500: a bug or an unexpected dependency failure. The message stays in the log.
    #[error("internal server error")]
    Internal(String),
}

/// Result alias for the data plane.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

impl RegistryError {
    /// This error, except that a repository the caller may not pull answers as `unknown` (what
    /// the endpoint answers for something missing), so the two cannot be told apart.
    pub fn or_unknown(self, unknown: impl FnOnce() -> RegistryError) -> RegistryError {
        match self {
            RegistryError::NotVisible(_) => unknown(),
            other => other,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::BlobUnknown(_) => "BLOB_UNKNOWN",
            Self::BlobUploadInvalid(_) | Self::RangeMismatch { .. } => "BLOB_UPLOAD_INVALID",
            Self::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Self::RangeNotSatisfiable { .. } => "RANGE_INVALID",
            Self::DigestInvalid(_) => "DIGEST_INVALID",
            Self::ManifestBlobUnknown(_) => "MANIFEST_BLOB_UNKNOWN",
            Self::ManifestInvalid(_) => "MANIFEST_INVALID",
            Self::ManifestUnknown(_) => "MANIFEST_UNKNOWN",
            Self::NameInvalid(_) => "NAME_INVALID",
            Self::NameUnknown(_) | Self::NotVisible(_) => "NAME_UNKNOWN",
            Self::TagInvalid(_) => "TAG_INVALID",
            Self::SizeInvalid { .. } => "SIZE_INVALID",
            Self::PaginationInvalid(_) => "PAGINATION_NUMBER_INVALID",
            Self::Denied(_) | Self::OverQuota(_) | Self::ImmutableTag(_) | Self::DeniedWithChallenge { .. } => "DENIED",
            Self::Unsupported(_) => "UNSUPPORTED",
            Self::Unauthorized { .. } => "UNAUTHORIZED",
            Self::TooManyRequests { .. } => "TOOMANYREQUESTS",
            Self::InvalidRequest(_) => "INVALID_REQUEST",
            Self::NoRoute => "NOT_FOUND",
            Self::Unavailable(_) | Self::Upstream { .. } => "UNAVAILABLE",
            Self::Internal(_) => "UNKNOWN",
        }
    }

    fn detail(&self) -> Value {
        match self {
            Self::BlobUnknown(d)
            | Self::BlobUploadInvalid(d)
            | Self::DigestInvalid(d)
            | Self::ManifestBlobUnknown(d)
            | Self::ManifestInvalid(d)
            | Self::ManifestUnknown(d)
            | Self::NameInvalid(d)
            | Self::NameUnknown(d)
            | Self::NotVisible(d)
            | Self::TagInvalid(d)
            | Self::PaginationInvalid(d)
            | Self::Denied(d)
            | Self::OverQuota(d)
            | Self::ImmutableTag(d)
            | Self::Unsupported(d)
            | Self::InvalidRequest(d) => json!(d),
            Self::Unauthorized { detail, .. } => json!(detail),
            Self::DeniedWithChallenge { .. } => json!("no token for this scope would be granted to this caller"),
            Self::TooManyRequests { retry_after } => json!({ "retryAfterSeconds": retry_after }),
            Self::SizeInvalid { detail, .. } => json!(detail),
            Self::RangeMismatch { offset, .. } => json!({ "offset": offset }),
            Self::RangeNotSatisfiable { size } => json!({ "size": size }),
            Self::BlobUploadUnknown
            | Self::NoRoute
            | Self::Unavailable(_)
            | Self::Upstream { .. }
            | Self::Internal(_) => Value::Null,
        }
    }
}

impl ResponseError for RegistryError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BlobUnknown(_)
            | Self::BlobUploadUnknown
            | Self::ManifestUnknown(_)
            | Self::NameUnknown(_)
            | Self::NotVisible(_)
            | Self::NoRoute => StatusCode::NOT_FOUND,
            Self::RangeMismatch { .. } | Self::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::SizeInvalid { over_limit: true, .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Denied(_) | Self::OverQuota(_) | Self::DeniedWithChallenge { .. } => StatusCode::FORBIDDEN,
            Self::ImmutableTag(_) => StatusCode::CONFLICT,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable(_) | Self::Upstream { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Internal(cause) => tracing::error!(error = %cause, "internal error"),
            Self::Unavailable(cause) => tracing::warn!(error = %cause, "dependency unavailable"),
            Self::Upstream { message, cause } => tracing::warn!(error = %cause, "{message}"),
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        match self {
            Self::RangeMismatch { location, upload_id, offset } => {
                response
                    .insert_header((header::LOCATION, location.as_str()))
                    .insert_header(("Docker-Upload-UUID", upload_id.as_str()))
                    .insert_header((header::RANGE, upload_range(*offset)));
            }
            Self::RangeNotSatisfiable { size } => {
                response.insert_header((header::CONTENT_RANGE, format!("bytes */{size}")));
            }
            Self::Unavailable(_) | Self::Upstream { .. } => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("5")));
            }
            Self::Unauthorized { challenge, .. } | Self::DeniedWithChallenge { challenge } => {
                response.insert_header((header::WWW_AUTHENTICATE, challenge.as_str()));
            }
            Self::TooManyRequests { retry_after } => {
                response.insert_header((header::RETRY_AFTER, retry_after.to_string()));
            }
            _ => {}
        }
        response.json(json!({
            "errors": [{ "code": self.code(), "message": self.to_string(), "detail": self.detail() }]
        }))
    }
}

/// The `Range` header value describing an upload's progress: `0-<last byte>`.
pub fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

impl From<ParseError> for RegistryError {
    fn from(err: ParseError) -> Self {
        match err {
            ParseError::Name(_) => Self::NameInvalid(err.to_string()),
            ParseError::Tag(_) => Self::TagInvalid(err.to_string()),
            ParseError::Digest(..) => Self::DigestInvalid(err.to_string()),
            ParseError::Range(_) => Self::BlobUploadInvalid(err.to_string()),
        }
    }
}

impl From<ManifestError> for RegistryError {
    fn from(err: ManifestError) -> Self {
        match err {
            ManifestError::TooLarge(_) => Self::SizeInvalid { over_limit: true, detail: err.to_string() },
            ManifestError::Invalid(_) | ManifestError::Unsupported(_) => Self::ManifestInvalid(err.to_string()),
        }
    }
}

impl From<aerugo_db::Error> for RegistryError {
    fn from(err: aerugo_db::Error) -> Self {
        if err.is_unavailable() { Self::Unavailable(err.to_string()) } else { Self::Internal(err.to_string()) }
    }
}

impl From<aerugo_storage::Error> for RegistryError {
    fn from(err: aerugo_storage::Error) -> Self {
        match err {
            aerugo_storage::Error::S3 { operation, .. } => {
                crate::metrics::storage_error(operation);
                Self::Unavailable(err.to_string())
            }
            _ => Self::Internal(err.to_string()),
        }
    }
}
