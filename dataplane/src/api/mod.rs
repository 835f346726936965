//! The management REST API under `/api/v1` (JSON): users, organizations and members,
//! repositories, API keys, the audit log, events and their subscriptions, and sessions.
//! Callers authenticate with Basic (password or API key) or a session token from
//! `POST /api/v1/auth/login`. The OpenAPI 3 document is served at `/api/openapi.json` and
//! rendered at `/api/docs`.
//!
//! Rows the operator manages (`managed_by = kubernetes`) are read-only here: changes answer
//! 409 so GitOps state never drifts. What a caller may not see answers 404, as if absent.

mod audit;
mod events;
mod keys;
mod orgs;
mod repos;
mod retention;
mod users;

use std::future::{Ready, ready};
use std::sync::Arc;

use actix_web::http::{Method, StatusCode};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, dev::Payload, web};
use aerugo_auth::token::TokenKind;
use aerugo_db::tenancy;
use serde::Serialize;
use serde_json::json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::caller::source_address;
use crate::auth::{Auth, Presented, Principal};
use crate::error::RegistryError;

/// The error body of every management API failure.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code (`not_found`, `conflict`, `invalid`, …).
    pub error: String,
    /// What went wrong.
    pub message: String,
}

/// Management API failures.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or a value is invalid.
    #[error("{0}")]
    Invalid(String),
    /// 401: no or bad credentials.
    #[error("authentication required")]
    Unauthorized,
    /// 403: authenticated but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404: absent, or not visible to the caller.
    #[error("{0} not found")]
    NotFound(String),
    /// 409: the name is taken, or the row is managed by Kubernetes.
    #[error("{0}")]
    Conflict(String),
    /// 429: too many failed logins.
    #[error("too many failed login attempts, retry later")]
    TooManyRequests(u64),
    /// 503: the database is unavailable.
    #[error("service unavailable, retry later")]
    Unavailable(String),
    /// 500: a bug; the cause is logged, not answered.
    #[error("internal server error")]
    Internal(String),
}

/// Result alias of the management API.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid(_) => "invalid",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooManyRequests(_) => "too_many_requests",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The refusal for a row the operator owns.
    pub fn managed_by_kubernetes(what: &str) -> ApiError {
        ApiError::Conflict(format!(
            "{what} is managed by Kubernetes; change its custom resource instead (the API does not modify it)"
        ))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Internal(cause) => tracing::error!(error = %cause, "internal error"),
            ApiError::Unavailable(cause) => tracing::warn!(error = %cause, "dependency unavailable"),
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized => {
                response.insert_header(("WWW-Authenticate", "Basic realm=\"aerugo\""));
            }
            ApiError::TooManyRequests(seconds) => {
                response.insert_header(("Retry-After", seconds.to_string()));
            }
            ApiError::Unavailable(_) => {
                response.insert_header(("Retry-After", "5"));
            }
            _ => {}
        }
        response.json(json!({ "error": self.code(), "message": self.to_string() }))
    }
}

impl From<aerugo_db::Error> for ApiError {
    fn from(err: aerugo_db::Error) -> Self {
        if err.is_unavailable() { ApiError::Unavailable(err.to_string()) } else { ApiError::Internal(err.to_string()) }
    }
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> Self {
        match err {
            RegistryError::Unauthorized { .. } => ApiError::Unauthorized,
            RegistryError::TooManyRequests { retry_after } => ApiError::TooManyRequests(retry_after),
            RegistryError::Unavailable(cause) => ApiError::Unavailable(cause),
            RegistryError::InvalidRequest(why) => ApiError::Invalid(why),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The credentials of a management request, checked on demand.
pub struct ApiCaller {
    auth: web::Data<Auth>,
    presented: Presented,
    source: Option<String>,
    read_only: bool,
}

impl ApiCaller {
    /// The authenticated principal, or 401. API keys may only read: they are scoped to
    /// repositories, not to management operations.
    pub async fn principal(&self) -> ApiResult<Arc<Principal>> {
        let principal = match &self.presented {
            Presented::Nothing | Presented::Malformed(_) => return Err(ApiError::Unauthorized),
            Presented::Basic { username, secret } => {
                self.auth.authenticate(username, secret, self.source.as_deref(), String::new).await?
            }
            Presented::Bearer(token) => {
                let session = self.auth.verify_token(token, TokenKind::Session).map_err(|_| ApiError::Unauthorized)?;
                let principal = self.auth.principal_of(&session.facts.subject, None).await?;
                Arc::new(principal.ok_or(ApiError::Unauthorized)?)
            }
        };
        if principal.key.is_some() && !self.read_only {
            return Err(ApiError::Forbidden(
                "API keys can only read through the management API; log in with a password to make changes".into(),
            ));
        }
        Ok(principal)
    }

    /// The client's address.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }
}

impl FromRequest for ApiCaller {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let Some(auth) = req.app_data::<web::Data<Auth>>().cloned() else {
            return ready(Err(ApiError::Internal("authentication is not configured".into())));
        };
        let presented = Presented::parse(req.headers().get("authorization").map(|v| v.as_bytes()));
        let source = source_address(req, &auth.settings().trusted_proxies);
        let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
        ready(Ok(ApiCaller { auth, presented, source, read_only }))
    }
}

/// Records a management write (or refusal) in the audit log.
pub(crate) async fn record(
    client: &impl aerugo_db::GenericClient,
    principal: &Principal,
    source: Option<&str>,
    action: &str,
    target: &str,
    org_id: Option<i64>,
    detail: serde_json::Value,
) -> ApiResult<()> {
    let event =
        aerugo_db::audit::Event { actor: &principal.actor(), action, target, org_id, source, allowed: true, detail };
    Ok(aerugo_db::audit::record(client, &event).await?)
}

/// Role names, in order of power.
pub(crate) fn parse_role(role: &str) -> ApiResult<aerugo_auth::permission::OrgRole> {
    role.parse().map_err(|_| ApiError::Invalid(format!("unknown role {role:?} (owner, admin, member or viewer)")))
}

/// The role of `principal` in organization `org_id`: site admins count as owners.
pub(crate) async fn role_in(
    client: &impl aerugo_db::GenericClient,
    principal: &Principal,
    org_id: i64,
) -> ApiResult<Option<aerugo_auth::permission::OrgRole>> {
    use aerugo_auth::permission::OrgRole;
    if principal.site_admin {
        return Ok(Some(OrgRole::Owner));
    }
    if let Some(key) = &principal.key
        && key.org.as_ref().is_some_and(|(id, _)| *id == org_id)
    {
        return Ok(Some(OrgRole::Viewer));
    }
    let Some(user_id) = principal.user_id else { return Ok(None) };
    Ok(tenancy::member_role(client, org_id, user_id).await?.and_then(|r| r.parse().ok()))
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("basic", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
        components.add_security_scheme("session", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The OpenAPI document of the management API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Aerugo management API", description = "Users, organizations, repositories, API keys, the audit log and events of an Aerugo registry."),
    paths(
        users::login, users::create, users::list, users::me, users::update_me, users::change_password,
        users::update, users::delete, users::reset_password,
        orgs::create, orgs::list, orgs::get, orgs::delete, orgs::members, orgs::put_member, orgs::remove_member,
        repos::create, repos::list, repos::get, repos::update, repos::delete, retention::get, retention::put,
        keys::create, keys::list, keys::revoke,
        audit::org_events, audit::all_events,
        events::feed, events::list, events::create, events::get, events::replay, events::delete,
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes),
    security(("basic" = []), ("session" = [])),
    tags(
        (name = "session", description = "Logging in"),
        (name = "users", description = "Accounts and profiles"),
        (name = "organizations", description = "Tenants and their members"),
        (name = "repositories", description = "Repositories of an organization"),
        (name = "api-keys", description = "Scoped credentials for machines"),
        (name = "audit", description = "Who did what"),
        (name = "events", description = "What changed, as CloudEvents, and where it is delivered"),
    )
)]
pub struct ApiDoc;

fn json_error(err: actix_web::error::JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::Invalid(format!("invalid JSON body: {err}")).into()
}

/// After a management write succeeds, and before it is acknowledged, retires every cached
/// entry on every node: members, grants, visibility and repositories decide who may pull
/// what. (The database triggers notify too, for writers that are not this API.)
async fn retire_cached_decisions(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let writes = !matches!(*req.method(), actix_web::http::Method::GET | actix_web::http::Method::HEAD)
        && !req.path().ends_with("/auth/login");
    let registry = req.app_data::<web::Data<crate::Registry>>().cloned();
    let response = next.call(req).await?;
    if writes
        && response.status().is_success()
        && let Some(registry) = registry
    {
        registry.tenancy_changed().await;
    }
    Ok(response)
}

/// Registers `/api/v1`, `/api/openapi.json` and `/api/docs`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .wrap(actix_web::middleware::from_fn(retire_cached_decisions))
            .app_data(web::JsonConfig::default().limit(64 * 1024).error_handler(json_error))
            .route("/auth/login", web::post().to(users::login))
            .route("/users", web::post().to(users::create))
            .route("/users", web::get().to(users::list))
            .route("/users/{username}", web::patch().to(users::update))
            .route("/users/{username}", web::delete().to(users::delete))
            .route("/users/{username}/password", web::put().to(users::reset_password))
            .route("/user", web::get().to(users::me))
            .route("/user", web::patch().to(users::update_me))
            .route("/user/password", web::put().to(users::change_password))
            .route("/orgs", web::post().to(orgs::create))
            .route("/orgs", web::get().to(orgs::list))
            .route("/orgs/{org}", web::get().to(orgs::get))
            .route("/orgs/{org}", web::delete().to(orgs::delete))
            .route("/orgs/{org}/members", web::get().to(orgs::members))
            .route("/orgs/{org}/members/{username}", web::put().to(orgs::put_member))
            .route("/orgs/{org}/members/{username}", web::delete().to(orgs::remove_member))
            .route("/orgs/{org}/audit", web::get().to(audit::org_events))
            .route("/orgs/{org}/events", web::get().to(events::feed))
            .route("/orgs/{org}/subscriptions", web::get().to(events::list))
            .route("/orgs/{org}/subscriptions", web::post().to(events::create))
            .route("/orgs/{org}/subscriptions/{name}", web::get().to(events::get))
            .route("/orgs/{org}/subscriptions/{name}", web::delete().to(events::delete))
            .route("/orgs/{org}/subscriptions/{name}/replay", web::post().to(events::replay))
            .route("/orgs/{org}/retention/{name:.+}", web::get().to(retention::get))
            .route("/orgs/{org}/retention/{name:.+}", web::put().to(retention::put))
            .route("/orgs/{org}/repositories", web::post().to(repos::create))
            .route("/orgs/{org}/repositories", web::get().to(repos::list))
            .route("/orgs/{org}/repositories/{name:.+}", web::get().to(repos::get))
            .route("/orgs/{org}/repositories/{name:.+}", web::patch().to(repos::update))
            .route("/orgs/{org}/repositories/{name:.+}", web::delete().to(repos::delete))
            .route("/api-keys", web::post().to(keys::create))
            .route("/api-keys", web::get().to(keys::list))
            .route("/api-keys/{key_id}", web::delete().to(keys::revoke))
            .route("/audit", web::get().to(audit::all_events))
            .default_service(web::to(|| async { ApiError::NotFound("endpoint".into()).error_response() })),
    )
    .route(
        "/api/docs",
        web::get().to(|| async { HttpResponse::Found().insert_header(("Location", "/api/docs/")).finish() }),
    )
    .service(SwaggerUi::new("/api/docs/{_:.*}").url("/api/openapi.json", ApiDoc::openapi()));
}
