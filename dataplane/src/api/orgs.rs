//! Organizations (tenants) and their members. Any user may create an organization and becomes
//! its Owner; Owners and Admins manage members (only Owners grant or remove the Owner role, and
//! the last Owner stays). Non-members see no trace of an organization: 404.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use aerugo_auth::permission::OrgRole;
use aerugo_db::tenancy::{self, MANAGED_BY_KUBERNETES, NewOrganization, Organization};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{ApiCaller, ApiError, ApiResult, ErrorBody, parse_role, record, role_in};
use crate::auth::{Auth, Principal};

/// An organization as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrgView {
    /// Name: the first path segment of its repositories.
    pub name: String,
    /// Human-readable name.
    pub display_name: Option<String>,
    /// Whether a push may create a repository.
    pub auto_create_repositories: bool,
    /// Visibility of repositories created by push.
    pub default_visibility: String,
    /// `api`, `kubernetes` or `system`.
    pub managed_by: String,
    /// The caller's role (`owner`, `admin`, `member`, `viewer`; site admins see `owner`).
    pub role: Option<String>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

fn role_name(role: OrgRole) -> &'static str {
    match role {
        OrgRole::Owner => "owner",
        OrgRole::Admin => "admin",
        OrgRole::Member => "member",
        OrgRole::Viewer => "viewer",
    }
}

fn view(org: Organization, role: Option<OrgRole>) -> OrgView {
    OrgView {
        name: org.name,
        display_name: org.display_name,
        auto_create_repositories: org.auto_create_repos,
        default_visibility: org.default_visibility,
        managed_by: org.managed_by,
        role: role.map(|r| role_name(r).to_owned()),
        created_at: org.created_at,
    }
}

/// A new organization.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewOrg {
    /// Lowercase letters and digits, separated by `.`, `_`, `__` or dashes; at most 64 characters.
    pub name: String,
    /// Human-readable name.
    pub display_name: Option<String>,
    /// Whether pushes create repositories (default true).
    pub auto_create_repositories: Option<bool>,
    /// `private` (default) or `public`.
    pub default_visibility: Option<String>,
}

/// A member.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    /// Username.
    pub username: String,
    /// `owner`, `admin`, `member` or `viewer`.
    pub role: String,
}

/// A role to give.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberUpdate {
    /// `owner`, `admin`, `member` or `viewer`.
    pub role: String,
}

pub(super) fn valid_org_name(name: &str) -> ApiResult<()> {
    // An organization name is exactly a one-segment repository name, at most 64 characters.
    let ok = name.len() <= 64 && !name.contains('/') && name.parse::<aerugo_oci::RepoName>().is_ok();
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid(
            "organization names are lowercase letters and digits separated by '.', '_', '__' or dashes, at most 64 characters"
                .into(),
        ))
    }
}

pub(super) fn valid_visibility(v: &str) -> ApiResult<()> {
    match v {
        "private" | "public" => Ok(()),
        other => Err(ApiError::Invalid(format!("visibility must be private or public, not {other:?}"))),
    }
}

/// The organization `name` and the caller's role in it; 404 when the caller has none.
pub(super) async fn visible_org(
    client: &impl aerugo_db::GenericClient,
    principal: &Principal,
    name: &str,
) -> ApiResult<(Organization, OrgRole)> {
    let not_found = || ApiError::NotFound(format!("organization {name}"));
    let org = tenancy::organization(client, name).await?.ok_or_else(not_found)?;
    let role = role_in(client, principal, org.id).await?.ok_or_else(not_found)?;
    Ok((org, role))
}

fn require(role: OrgRole, allowed: &[OrgRole], what: &str) -> ApiResult<()> {
    if allowed.contains(&role) { Ok(()) } else { Err(ApiError::Forbidden(format!("your role does not allow {what}"))) }
}

/// Create an organization; the caller becomes its Owner.
#[utoipa::path(post, path = "/api/v1/orgs", tag = "organizations", request_body = NewOrg,
    responses((status = 201, body = OrgView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    body: web::Json<NewOrg>,
) -> ApiResult<HttpResponse> {
    let principal = caller.principal().await?;
    let Some(user_id) = principal.user_id else {
        return Err(ApiError::Forbidden("organization keys cannot create organizations".into()));
    };
    valid_org_name(&body.name)?;
    let visibility = body.default_visibility.as_deref().unwrap_or("private");
    valid_visibility(visibility)?;
    let mut client = auth.client().await?;
    let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
    let new = NewOrganization {
        name: &body.name,
        display_name: body.display_name.as_deref(),
        auto_create_repos: body.auto_create_repositories.unwrap_or(true),
        default_visibility: visibility,
    };
    let org = tenancy::create_organization(&tx, &new, user_id)
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("organization {} already exists", body.name)))?;
    record(&tx, &principal, caller.source(), "org.create", &org.name, Some(org.id), json!({})).await?;
    tx.commit().await.map_err(aerugo_db::Error::from)?;
    Ok(HttpResponse::Created().json(view(org, Some(OrgRole::Owner))))
}

/// Organizations the caller belongs to (every one, for site administrators).
#[utoipa::path(get, path = "/api/v1/orgs", tag = "organizations", responses((status = 200, body = [OrgView])))]
pub(super) async fn list(auth: web::Data<Auth>, caller: ApiCaller) -> ApiResult<web::Json<Vec<OrgView>>> {
    let principal = caller.principal().await?;
    let client = auth.client().await?;
    let orgs = match (principal.user_id, &principal.key) {
        (Some(user_id), _) => tenancy::list_organizations(&client, user_id, principal.site_admin).await?,
        (None, Some(key)) => match &key.org {
            Some((_, name)) => tenancy::organization(&client, name).await?.into_iter().collect(),
            None => Vec::new(),
        },
        (None, None) => Vec::new(),
    };
    let mut views = Vec::with_capacity(orgs.len());
    for org in orgs {
        let role = role_in(&client, &principal, org.id).await?;
        views.push(view(org, role));
    }
    Ok(web::Json(views))
}

/// One organization.
#[utoipa::path(get, path = "/api/v1/orgs/{org}", tag = "organizations", params(("org" = String, Path)),
    responses((status = 200, body = OrgView), (status = 404, body = ErrorBody)))]
pub(super) async fn get(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<String>,
) -> ApiResult<web::Json<OrgView>> {
    let principal = caller.principal().await?;
    let client = auth.client().await?;
    let (org, role) = visible_org(&client, &principal, &path).await?;
    Ok(web::Json(view(org, Some(role))))
}

/// Delete an organization with its repositories (Owners only).
#[utoipa::path(delete, path = "/api/v1/orgs/{org}", tag = "organizations", params(("org" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn delete(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let principal = caller.principal().await?;
    let mut client = auth.client().await?;
    let (org, role) = visible_org(&client, &principal, &path).await?;
    require(role, &[OrgRole::Owner], "deleting the organization")?;
    if org.managed_by == MANAGED_BY_KUBERNETES {
        return Err(ApiError::managed_by_kubernetes(&format!("organization {}", org.name)));
    }
    let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
    record(&tx, &principal, caller.source(), "org.delete", &org.name, None, json!({})).await?;
    tenancy::delete_organization(&tx, org.id).await?;
    tx.commit().await.map_err(aerugo_db::Error::from)?;
    Ok(HttpResponse::NoContent().finish())
}

/// Members of an organization.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/members", tag = "organizations", params(("org" = String, Path)),
    responses((status = 200, body = [MemberView]), (status = 404, body = ErrorBody)))]
pub(super) async fn members(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<String>,
) -> ApiResult<web::Json<Vec<MemberView>>> {
    let principal = caller.principal().await?;
    let client = auth.client().await?;
    let (org, _) = visible_org(&client, &principal, &path).await?;
    let members = tenancy::members(&client, org.id).await?;
    Ok(web::Json(members.into_iter().map(|m| MemberView { username: m.username, role: m.role }).collect()))
}

async fn member_change(
    auth: &Auth,
    caller: &ApiCaller,
    org_name: &str,
    username: &str,
) -> ApiResult<(Arc<Principal>, aerugo_db::PooledClient, Organization, OrgRole, i64)> {
    let principal = caller.principal().await?;
    let client = auth.client().await?;
    let (org, role) = visible_org(&client, &principal, org_name).await?;
    require(role, &[OrgRole::Owner, OrgRole::Admin], "managing members")?;
    if org.managed_by == MANAGED_BY_KUBERNETES {
        return Err(ApiError::managed_by_kubernetes(&format!("the membership of organization {}", org.name)));
    }
    let user = tenancy::user(&client, username).await?.ok_or_else(|| ApiError::NotFound(format!("user {username}")))?;
    Ok((principal, client, org, role, user.id))
}

/// Add a member or change a member's role (Owners and Admins; only Owners touch the Owner role).
#[utoipa::path(put, path = "/api/v1/orgs/{org}/members/{username}", tag = "organizations",
    params(("org" = String, Path), ("username" = String, Path)), request_body = MemberUpdate,
    responses((status = 200, body = MemberView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn put_member(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<(String, String)>,
    body: web::Json<MemberUpdate>,
) -> ApiResult<web::Json<MemberView>> {
    let (org_name, username) = path.into_inner();
    let new_role = parse_role(&body.role)?;
    let (principal, mut client, org, role, user_id) = member_change(&auth, &caller, &org_name, &username).await?;
    let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
    let current = tenancy::member_role(&tx, org.id, user_id).await?;
    let touches_owner = new_role == OrgRole::Owner || current.as_deref() == Some("owner");
    if touches_owner {
        require(role, &[OrgRole::Owner], "granting or removing the Owner role")?;
    }
    if current.as_deref() == Some("owner")
        && new_role != OrgRole::Owner
        && tenancy::owner_count(&tx, org.id).await? <= 1
    {
        return Err(ApiError::Conflict("an organization keeps at least one Owner".into()));
    }
    tenancy::put_member(&tx, org.id, user_id, role_name(new_role)).await?;
    record(
        &tx,
        &principal,
        caller.source(),
        "org.member.put",
        &org.name,
        Some(org.id),
        json!({ "user": username, "role": role_name(new_role) }),
    )
    .await?;
    tx.commit().await.map_err(aerugo_db::Error::from)?;
    Ok(web::Json(MemberView { username, role: role_name(new_role).to_owned() }))
}

/// Remove a member (Owners and Admins; only Owners remove an Owner; the last Owner stays).
#[utoipa::path(delete, path = "/api/v1/orgs/{org}/members/{username}", tag = "organizations",
    params(("org" = String, Path), ("username" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn remove_member(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (org_name, username) = path.into_inner();
    let (principal, mut client, org, role, user_id) = member_change(&auth, &caller, &org_name, &username).await?;
    let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
    let current = tenancy::member_role(&tx, org.id, user_id).await?;
    match current.as_deref() {
        None => return Err(ApiError::NotFound(format!("member {username}"))),
        Some("owner") => {
            require(role, &[OrgRole::Owner], "removing an Owner")?;
            if tenancy::owner_count(&tx, org.id).await? <= 1 {
                return Err(ApiError::Conflict("an organization keeps at least one Owner".into()));
            }
        }
        Some(_) => {}
    }
    tenancy::remove_member(&tx, org.id, user_id).await?;
    record(&tx, &principal, caller.source(), "org.member.remove", &org.name, Some(org.id), json!({ "user": username }))
        .await?;
    tx.commit().await.map_err(aerugo_db::Error::from)?;
    Ok(HttpResponse::NoContent().finish())
}
