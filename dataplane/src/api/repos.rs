//! Repositories of an organization: create, list, details (tags, sizes, last push), change
//! visibility, delete. A repository is visible to whoever may pull it; Owners, Admins and
//! Members create repositories; Owners and Admins change or delete them.

use actix_web::{HttpResponse, web};
use aerugo_auth::permission::OrgRole;
use aerugo_db::tenancy::{self, MANAGED_BY_KUBERNETES, RepositorySummary, TagSummary};
use aerugo_oci::RepoName;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::orgs::{valid_visibility, visible_org};
use super::{ApiCaller, ApiError, ApiResult, ErrorBody, record};
use crate::auth::Auth;

/// A repository as the API lists it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepoView {
    /// Path inside the organization (`team/app`).
    pub name: String,
    /// Full name clients pull (`org/team/app`).
    pub full_name: String,
    /// `private` or `public`.
    pub visibility: String,
    /// `api`, `kubernetes` or `system`.
    pub managed_by: String,
    /// Number of tags.
    pub tag_count: i64,
    /// Bytes of the distinct blobs it holds.
    pub size_bytes: i64,
    /// Latest push.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_push_at: Option<OffsetDateTime>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A tag.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TagView {
    /// Tag name.
    pub name: String,
    /// Manifest digest.
    pub digest: String,
    /// Manifest media type.
    pub media_type: String,
    /// Manifest plus the content it references.
    pub size_bytes: i64,
    /// When the tag last moved.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A repository with its tags.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepoDetails {
    /// The repository.
    #[serde(flatten)]
    pub repository: RepoView,
    /// Tags, most recently updated first.
    pub tags: Vec<TagView>,
}

/// A new repository.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRepo {
    /// Path inside the organization; may contain `/`.
    pub name: String,
    /// `private` (default: the organization's default) or `public`.
    pub visibility: Option<String>,
}

/// Changes to a repository.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoUpdate {
    /// `private` or `public`.
    pub visibility: String,
}

fn view(org: &str, r: RepositorySummary) -> RepoView {
    let name = r.name.strip_prefix(&format!("{org}/")).unwrap_or(&r.name).to_owned();
    RepoView {
        name,
        full_name: r.name,
        visibility: r.visibility,
        managed_by: r.managed_by,
        tag_count: r.tag_count,
        size_bytes: r.size_bytes,
        last_push_at: r.last_push_at,
        created_at: r.created_at,
    }
}

fn tag_view(t: TagSummary) -> TagView {
    TagView {
        name: t.name,
        digest: t.digest,
        media_type: t.media_type,
        size_bytes: t.size_bytes,
        updated_at: t.updated_at,
    }
}

fn full_name(org: &str, name: &str) -> ApiResult<RepoName> {
    format!("{org}/{name}").parse().map_err(|_| {
        ApiError::Invalid(format!(
            "invalid repository name {name:?}: lowercase path components separated by '/', each of letters and digits joined by '.', '_', '__' or dashes"
        ))
    })
}

/// Create a repository (Owners, Admins and Members).
#[utoipa::path(post, path = "/api/v1/orgs/{org}/repositories", tag = "repositories", params(("org" = String, Path)),
    request_body = NewRepo,
    responses((status = 201, body = RepoView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<String>,
    body: web::Json<NewRepo>,
) -> ApiResult<HttpResponse> {
    let principal = caller.principal().await?;
    let client = auth.client().await?;
    let (org, role) = visible_org(&client, &principal, &path).await?;
    if role == OrgRole::Viewer {
        return Err(ApiError::Forbidden("viewers cannot create repositories".into()));
    }
    let name = full_name(&org.name, &body.name)?;
    let visibility = body.visibility.as_deref().unwrap_or(&org.default_visibility);
    valid_visibility(visibility)?;
    let repo = tenancy::create_repository(&client, org.id, name.as_str(), visibility)
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("repository {name} already exists")))?;
    record(
        &client,
        &principal,
        caller.source(),
        "repository.create",
        name.as_str(),
        Some(org.id),
        json!({ "visibility": visibility }),
    )
    .await?;
    Ok(HttpResponse::Created().json(view(&org.name, repo)))
}

/// Repositories of an organization.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/repositories", tag = "repositories", params(("org" = String, Path)),
    responses((status = 200, body = [RepoView]), (status = 404, body = ErrorBody)))]
pub(super) async fn list(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<String>,
) -> ApiResult<web::Json<Vec<RepoView>>> {
    let principal = caller.principal().await?;
    let client = auth.client().await?;
    let (org, _) = visible_org(&client, &principal, &path).await?;
    let repos = tenancy::list_org_repositories(&client, org.id).await?;
    let key = principal.key.as_ref();
    Ok(web::Json(
        repos
            .into_iter()
            .filter(|r| key.is_none_or(|k| !k.scopes.allowed(&r.name).is_empty()))
            .map(|r| view(&org.name, r))
            .collect(),
    ))
}

/// Loads a repository the caller may pull (404 otherwise) and the caller's rights on it.
pub(super) async fn visible_repo(
    auth: &Auth,
    client: &impl aerugo_db::GenericClient,
    principal: &crate::auth::Principal,
    org: &str,
    name: &str,
) -> ApiResult<(RepositorySummary, crate::auth::Rights)> {
    let full = full_name(org, name)?;
    let not_found = || ApiError::NotFound(format!("repository {full}"));
    let rights = auth.rights(client, Some(principal), &full).await?;
    if !rights.actions.contains(aerugo_auth::Action::Pull) {
        return Err(not_found());
    }
    let repo = tenancy::repository_summary(client, full.as_str()).await?.ok_or_else(not_found)?;
    Ok((repo, rights))
}

/// A repository with its tags, sizes and last push.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/repositories/{name}", tag = "repositories",
    params(("org" = String, Path), ("name" = String, Path, description = "path inside the organization; may contain '/'")),
    responses((status = 200, body = RepoDetails), (status = 404, body = ErrorBody)))]
pub(super) async fn get(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<(String, String)>,
) -> ApiResult<web::Json<RepoDetails>> {
    let principal = caller.principal().await?;
    let client = auth.client().await?;
    let (repo, _) = visible_repo(&auth, &client, &principal, &path.0, &path.1).await?;
    let tags = tenancy::tag_summaries(&client, repo.id).await?;
    Ok(web::Json(RepoDetails { repository: view(&path.0, repo), tags: tags.into_iter().map(tag_view).collect() }))
}

pub(super) fn may_administer(rights: &crate::auth::Rights) -> ApiResult<()> {
    // Administration is a right of its own (Owner, Admin, an Admin grant; never an API key),
    // not "holds every action": a Delete grant includes push and delete, not this.
    if rights.administer {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "changing or deleting a repository takes the Owner or Admin role, or an Admin grant, and a person's credentials (not an API key)".into(),
        ))
    }
}

/// Change a repository's visibility (Owners, Admins, admin grantees).
#[utoipa::path(patch, path = "/api/v1/orgs/{org}/repositories/{name}", tag = "repositories",
    params(("org" = String, Path), ("name" = String, Path)), request_body = RepoUpdate,
    responses((status = 200, body = RepoView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn update(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<(String, String)>,
    body: web::Json<RepoUpdate>,
) -> ApiResult<web::Json<RepoView>> {
    let principal = caller.principal().await?;
    valid_visibility(&body.visibility)?;
    let client = auth.client().await?;
    let (repo, rights) = visible_repo(&auth, &client, &principal, &path.0, &path.1).await?;
    may_administer(&rights)?;
    let org_id = rights.org_id;
    if repo.managed_by == MANAGED_BY_KUBERNETES {
        return Err(ApiError::managed_by_kubernetes(&format!("repository {}", repo.name)));
    }
    tenancy::set_visibility(&client, repo.id, &body.visibility).await?;
    record(
        &client,
        &principal,
        caller.source(),
        "repository.update",
        &repo.name,
        org_id,
        json!({ "visibility": body.visibility }),
    )
    .await?;
    let updated =
        tenancy::repository_summary(&client, &repo.name).await?.ok_or_else(|| ApiError::NotFound(repo.name.clone()))?;
    Ok(web::Json(view(&path.0, updated)))
}

/// Delete a repository with its tags and manifests (Owners, Admins, admin grantees).
#[utoipa::path(delete, path = "/api/v1/orgs/{org}/repositories/{name}", tag = "repositories",
    params(("org" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn delete(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let principal = caller.principal().await?;
    let mut client = auth.client().await?;
    let (repo, rights) = visible_repo(&auth, &client, &principal, &path.0, &path.1).await?;
    may_administer(&rights)?;
    let org_id = rights.org_id;
    if repo.managed_by == MANAGED_BY_KUBERNETES {
        return Err(ApiError::managed_by_kubernetes(&format!("repository {}", repo.name)));
    }
    let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
    tenancy::delete_repository(&tx, repo.id).await?;
    record(&tx, &principal, caller.source(), "repository.delete", &repo.name, org_id, json!({})).await?;
    tx.commit().await.map_err(aerugo_db::Error::from)?;
    Ok(HttpResponse::NoContent().finish())
}
