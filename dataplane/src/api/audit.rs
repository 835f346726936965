//! Reading the audit log: an organization's events for its Owners and Admins, every event for
//! site administrators. Newest first, paginated with `before=<id>`.

use actix_web::web;
use aerugo_auth::permission::OrgRole;
use aerugo_db::audit::{self, StoredEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::orgs::visible_org;
use super::{ApiCaller, ApiError, ApiResult, ErrorBody};
use crate::auth::Auth;

/// One event.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    /// Id (pass as `before` for the next page).
    pub id: i64,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who: a username, `key:<id>`, or `anonymous`.
    pub actor: String,
    /// What (`manifest.push`, `access.denied`, `org.member.put`, …).
    pub action: String,
    /// On what.
    pub target: String,
    /// Client address.
    pub source: Option<String>,
    /// `ok` or `denied`.
    pub outcome: String,
    /// Details.
    #[schema(value_type = Object)]
    pub detail: Option<serde_json::Value>,
}

/// Page parameters.
#[derive(Debug, Deserialize, IntoParams)]
pub struct PageQuery {
    /// Only events older than this id.
    pub before: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<i64>,
}

fn views(events: Vec<StoredEvent>) -> Vec<EventView> {
    events
        .into_iter()
        .map(|e| EventView {
            id: e.id,
            at: e.at,
            actor: e.actor,
            action: e.action,
            target: e.target,
            source: e.source,
            outcome: e.outcome,
            detail: e.detail,
        })
        .collect()
}

fn limit(q: &PageQuery) -> ApiResult<i64> {
    match q.limit {
        None => Ok(100),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::Invalid("limit must be between 1 and 1000".into())),
    }
}

/// An organization's audit events (Owners and Admins).
#[utoipa::path(get, path = "/api/v1/orgs/{org}/audit", tag = "audit", params(("org" = String, Path), PageQuery),
    responses((status = 200, body = [EventView]), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn org_events(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> ApiResult<web::Json<Vec<EventView>>> {
    let principal = caller.principal().await?;
    let client = auth.client().await?;
    let (org, role) = visible_org(&client, &principal, &path).await?;
    if !matches!(role, OrgRole::Owner | OrgRole::Admin) {
        return Err(ApiError::Forbidden("reading the audit log takes the Owner or Admin role".into()));
    }
    Ok(web::Json(views(audit::list(&client, Some(org.id), query.before, limit(&query)?).await?)))
}

/// Every audit event (site administrators).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(PageQuery),
    responses((status = 200, body = [EventView]), (status = 403, body = ErrorBody)))]
pub(super) async fn all_events(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    query: web::Query<PageQuery>,
) -> ApiResult<web::Json<Vec<EventView>>> {
    let principal = caller.principal().await?;
    if !principal.site_admin {
        return Err(ApiError::Forbidden("only site administrators read the whole audit log".into()));
    }
    let client = auth.client().await?;
    Ok(web::Json(views(audit::list(&client, None, query.before, limit(&query)?).await?)))
}
