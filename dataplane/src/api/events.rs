//! An organization's events (the feed, newest first, paginated with `before=<id>`) and its
//! event subscriptions: created, read, replayed and deleted here for organizations the API
//! manages; those of a Kubernetes-managed organization are EventSubscription objects (409).
//! Owners and Admins only.

use actix_web::{HttpResponse, web};
use aerugo_auth::permission::OrgRole;
use aerugo_db::events::{self, Subscription, SubscriptionSpec};
use aerugo_db::tenancy::{MANAGED_BY_KUBERNETES, Organization};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::orgs::visible_org;
use super::{ApiCaller, ApiError, ApiResult, ErrorBody, record};
use crate::auth::{Auth, Principal};
use crate::events::cloudevents;

/// Page parameters of the feed.
#[derive(Debug, Deserialize, IntoParams)]
pub struct FeedQuery {
    /// Only events older than this id (the `id` of the last event of the previous page).
    pub before: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<i64>,
}

/// A subscription to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSubscription {
    /// Its name in the organization (lowercase letters, digits and '-').
    pub name: String,
    /// The URL events are POSTed to.
    pub endpoint: String,
    /// CloudEvents types delivered (`io.aerugo.manifest.pushed`, …).
    pub types: Vec<String>,
    /// Repository globs relative to the organization; default: all.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Events per request (1: structured, more: batched). Default 1.
    pub batch_size: Option<i32>,
    /// HMAC-SHA256 key of the `Aerugo-Signature` header (at least 16 bytes); never returned.
    pub signing_secret: Option<String>,
}

/// A replay request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// Deliver again every event kept since this time (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
}

/// A subscription and how its delivery goes.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    /// Name.
    pub name: String,
    /// `api` or `kubernetes`.
    pub managed_by: String,
    /// Endpoint URL.
    pub endpoint: String,
    /// CloudEvents types delivered.
    pub types: Vec<String>,
    /// Repository globs.
    pub repositories: Vec<String>,
    /// Events per request.
    pub batch_size: i32,
    /// Whether requests are signed.
    pub signed: bool,
    /// Events delivered so far.
    pub delivered: i64,
    /// When the endpoint last accepted events.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_delivered_at: Option<OffsetDateTime>,
    /// The id of the last event it accepted.
    pub last_delivered_id: Option<i64>,
    /// Whether the endpoint refused the last attempts (events wait and are retried).
    pub failing: bool,
    /// What the last failed attempt got.
    pub last_error: Option<String>,
    /// Events waiting.
    pub backlog: i64,
}

async fn view(client: &impl aerugo_db::GenericClient, sub: Subscription) -> ApiResult<SubscriptionView> {
    let backlog = events::backlog(client, &sub).await?;
    let failing = sub.failing();
    Ok(SubscriptionView {
        name: sub.name,
        managed_by: sub.managed_by,
        endpoint: sub.endpoint,
        types: sub.types,
        repositories: sub.repositories,
        batch_size: sub.batch_size,
        signed: sub.signing_secret.is_some(),
        delivered: sub.delivered,
        last_delivered_at: sub.last_delivered_at,
        last_delivered_id: sub.last_delivered_id,
        failing,
        last_error: if sub.failures > 0 { sub.last_error } else { None },
        backlog,
    })
}

/// The organization, if the caller administers it.
async fn administered(
    client: &impl aerugo_db::GenericClient,
    principal: &Principal,
    org: &str,
) -> ApiResult<Organization> {
    let (org, role) = visible_org(client, principal, org).await?;
    if !matches!(role, OrgRole::Owner | OrgRole::Admin) {
        return Err(ApiError::Forbidden("events and subscriptions take the Owner or Admin role".into()));
    }
    Ok(org)
}

/// An organization's events, newest first, as CloudEvents (Owners and Admins). A full page
/// links the next with `Link: <…?before=<id>>; rel="next"`.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/events", tag = "events", params(("org" = String, Path), FeedQuery),
    responses((status = 200, body = [Object]), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn feed(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<String>,
    query: web::Query<FeedQuery>,
) -> ApiResult<HttpResponse> {
    let limit = match query.limit {
        None => 100,
        Some(n) if (1..=1000).contains(&n) => n,
        Some(_) => return Err(ApiError::Invalid("limit must be between 1 and 1000".into())),
    };
    let principal = caller.principal().await?;
    let client = auth.client().await?;
    let org = administered(&client, &principal, &path).await?;
    let page = events::list(&client, org.id, query.before, limit).await?;
    let mut response = HttpResponse::Ok();
    if let Some(last) = page.last().filter(|_| i64::try_from(page.len()).unwrap_or(0) == limit) {
        response.insert_header((
            "Link",
            format!("</api/v1/orgs/{}/events?before={}&limit={limit}>; rel=\"next\"", org.name, last.id),
        ));
    }
    let body: Vec<Value> = page.iter().map(|e| cloudevents::cloudevent(&org.name, e)).collect();
    Ok(response.json(body))
}

/// An organization's subscriptions (Owners and Admins).
#[utoipa::path(get, path = "/api/v1/orgs/{org}/subscriptions", tag = "events", params(("org" = String, Path)),
    responses((status = 200, body = [SubscriptionView]), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn list(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<String>,
) -> ApiResult<web::Json<Vec<SubscriptionView>>> {
    let principal = caller.principal().await?;
    let client = auth.client().await?;
    let org = administered(&client, &principal, &path).await?;
    let mut views = Vec::new();
    for sub in events::subscriptions(&client, org.id).await? {
        views.push(view(&client, sub).await?);
    }
    Ok(web::Json(views))
}

/// Subscribe an endpoint to the organization's events, from now on. Kubernetes-managed
/// organizations declare EventSubscription objects instead (409).
#[utoipa::path(post, path = "/api/v1/orgs/{org}/subscriptions", tag = "events", params(("org" = String, Path)),
    request_body = NewSubscription,
    responses((status = 201, body = SubscriptionView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<String>,
    body: web::Json<NewSubscription>,
) -> ApiResult<HttpResponse> {
    let principal = caller.principal().await?;
    let mut client = auth.client().await?;
    let org = administered(&client, &principal, &path).await?;
    if org.managed_by == MANAGED_BY_KUBERNETES {
        return Err(ApiError::managed_by_kubernetes(&format!(
            "organization {}; declare an EventSubscription in its namespace, and its subscriptions",
            org.name
        )));
    }
    let new = body.into_inner();
    if !is_name(&new.name) {
        return Err(ApiError::Invalid(format!(
            "subscription name {:?}: 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit",
            new.name
        )));
    }
    let endpoint = events::check_endpoint(&new.endpoint).map_err(ApiError::Invalid)?;
    let spec = SubscriptionSpec {
        endpoint: &endpoint,
        types: &new.types,
        repositories: &new.repositories,
        batch_size: new.batch_size.unwrap_or(1),
        signing_secret: new.signing_secret.as_deref().map(str::as_bytes),
    };
    spec.check().map_err(ApiError::Invalid)?;
    let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
    let id = events::create(&tx, org.id, &new.name, &spec)
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("organization {} has a subscription {:?}", org.name, new.name)))?;
    let detail = json!({ "endpoint": endpoint, "types": new.types, "repositories": new.repositories });
    record(&tx, &principal, caller.source(), "subscription.create", &new.name, Some(org.id), detail).await?;
    let sub = events::subscription(&tx, id).await?.ok_or_else(|| ApiError::Internal("subscription vanished".into()))?;
    tx.commit().await.map_err(aerugo_db::Error::from)?;
    Ok(HttpResponse::Created().json(view(&client, sub).await?))
}

/// One subscription and its delivery (Owners and Admins).
#[utoipa::path(get, path = "/api/v1/orgs/{org}/subscriptions/{name}", tag = "events",
    params(("org" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = SubscriptionView), (status = 404, body = ErrorBody)))]
pub(super) async fn get(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<(String, String)>,
) -> ApiResult<web::Json<SubscriptionView>> {
    let (org, name) = path.into_inner();
    let principal = caller.principal().await?;
    let client = auth.client().await?;
    let org = administered(&client, &principal, &org).await?;
    let sub = named(&client, &org, &name).await?;
    Ok(web::Json(view(&client, sub).await?))
}

/// Deliver again every event kept since `from` (at least once: a receiver sees events it had,
/// with the same `id`).
#[utoipa::path(post, path = "/api/v1/orgs/{org}/subscriptions/{name}/replay", tag = "events",
    params(("org" = String, Path), ("name" = String, Path)), request_body = Replay,
    responses((status = 202), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn replay(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<(String, String)>,
    body: web::Json<Replay>,
) -> ApiResult<HttpResponse> {
    let (org, name) = path.into_inner();
    let (principal, mut client, org, sub) = api_managed(&auth, &caller, &org, &name).await?;
    let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
    events::replay(&tx, sub.id, body.from).await?;
    let from = body.from.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    record(&tx, &principal, caller.source(), "subscription.replay", &name, Some(org.id), json!({ "from": from }))
        .await?;
    tx.commit().await.map_err(aerugo_db::Error::from)?;
    Ok(HttpResponse::Accepted().finish())
}

/// Delete a subscription (events stay in the feed).
#[utoipa::path(delete, path = "/api/v1/orgs/{org}/subscriptions/{name}", tag = "events",
    params(("org" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn delete(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (org, name) = path.into_inner();
    let (principal, mut client, org, sub) = api_managed(&auth, &caller, &org, &name).await?;
    let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
    events::delete(&tx, sub.id).await?;
    record(&tx, &principal, caller.source(), "subscription.delete", &name, Some(org.id), json!({})).await?;
    tx.commit().await.map_err(aerugo_db::Error::from)?;
    Ok(HttpResponse::NoContent().finish())
}

async fn named(client: &impl aerugo_db::GenericClient, org: &Organization, name: &str) -> ApiResult<Subscription> {
    events::subscription_named(client, org.id, name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("subscription {name}")))
}

/// The caller, a connection, organization `org` and its subscription `name`, when the caller
/// administers the organization and the subscription is the API's to change.
async fn api_managed(
    auth: &Auth,
    caller: &ApiCaller,
    org: &str,
    name: &str,
) -> ApiResult<(std::sync::Arc<Principal>, aerugo_db::PooledClient, Organization, Subscription)> {
    let principal = caller.principal().await?;
    let client = auth.client().await?;
    let org = administered(&client, &principal, org).await?;
    let sub = named(&client, &org, name).await?;
    if sub.managed_by == MANAGED_BY_KUBERNETES {
        return Err(ApiError::managed_by_kubernetes(&format!("subscription {}", sub.name)));
    }
    Ok((principal, client, org, sub))
}

fn is_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}
