//! Retention of a repository: the policy in force, the last run, and what a run would delete
//! now (the same plan the operator reports in `Repository.status.retention`). Repositories of
//! the management API set their policy here; the operator runs it with each collection.

use actix_web::web;
use aerugo_db::retention::{self, Policy, Report};
use aerugo_db::tenancy::MANAGED_BY_KUBERNETES;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::repos::{may_administer, visible_repo};
use super::{ApiCaller, ApiError, ApiResult, ErrorBody, record};
use crate::auth::Auth;

/// A repository's retention.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionView {
    /// The repository's full name.
    pub repository: String,
    /// Whose policy is in force: `repository`, `organization` or `none`.
    pub source: String,
    /// The policy in force (the Repository CRD's `spec.retention` fields).
    #[schema(value_type = Object)]
    pub policy: Option<Value>,
    /// What a run would delete now (nothing is deleted by asking).
    #[schema(value_type = Object)]
    pub plan: Option<Value>,
    /// The last run the operator made.
    #[schema(value_type = Object)]
    pub last_run: Option<Value>,
}

/// A repository's own policy; `null` falls back to the organization's default.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionUpdate {
    /// The policy: `mode` (`DryRun`, `Enforce`), `keepLast`, `keepWithin`, `keepPulledWithin`,
    /// `tagPattern`, `protect`, `deleteUntagged`.
    #[schema(value_type = Object)]
    pub policy: Option<Value>,
}

async fn view(client: &impl aerugo_db::GenericClient, name: &str) -> ApiResult<RetentionView> {
    let subject =
        retention::subject(client, name).await?.ok_or_else(|| ApiError::NotFound(format!("repository {name}")))?;
    let row = client
        .query_one("SELECT retention, retention_report FROM repositories WHERE id = $1", &[&subject.id])
        .await
        .map_err(aerugo_db::Error::from)?;
    let (own, last_run): (Option<Value>, Option<Value>) = (row.get(0), row.get(1));
    let source = match (&own, &subject.policy) {
        (Some(_), _) => "repository",
        (None, Some(_)) => "organization",
        (None, None) => "none",
    };
    let plan = match &subject.policy {
        Some(_) => {
            let (report, _) = retention::plan(client, &subject, time::OffsetDateTime::now_utc()).await?;
            Some(serde_json::to_value::<Report>(report).unwrap_or(Value::Null))
        }
        None => None,
    };
    Ok(RetentionView {
        repository: subject.name.clone(),
        source: source.into(),
        policy: subject.policy.as_ref().and_then(|p| serde_json::to_value(p).ok()),
        plan,
        last_run,
    })
}

/// A repository's retention policy, its last run and what a run would delete now (whoever may
/// pull it).
#[utoipa::path(get, path = "/api/v1/orgs/{org}/retention/{name}", tag = "repositories",
    params(("org" = String, Path), ("name" = String, Path, description = "path inside the organization; may contain '/'")),
    responses((status = 200, body = RetentionView), (status = 404, body = ErrorBody)))]
pub(super) async fn get(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<(String, String)>,
) -> ApiResult<web::Json<RetentionView>> {
    let principal = caller.principal().await?;
    let client = auth.client().await?;
    let (repo, _) = visible_repo(&auth, &client, &principal, &path.0, &path.1).await?;
    Ok(web::Json(view(&client, &repo.name).await?))
}

/// Set a repository's own retention policy (Owners, Admins, admin grantees; repositories not
/// declared by a Repository object). The operator runs it with its next collection.
#[utoipa::path(put, path = "/api/v1/orgs/{org}/retention/{name}", tag = "repositories",
    params(("org" = String, Path), ("name" = String, Path)), request_body = RetentionUpdate,
    responses((status = 200, body = RetentionView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn put(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<(String, String)>,
    body: web::Json<RetentionUpdate>,
) -> ApiResult<web::Json<RetentionView>> {
    let principal = caller.principal().await?;
    let client = auth.client().await?;
    let (repo, rights) = visible_repo(&auth, &client, &principal, &path.0, &path.1).await?;
    may_administer(&rights)?;
    if repo.managed_by == MANAGED_BY_KUBERNETES {
        return Err(ApiError::managed_by_kubernetes(&format!("repository {}", repo.name)));
    }
    let policy = match &body.policy {
        None | Some(Value::Null) => None,
        Some(value) => {
            let policy: Policy = serde_json::from_value(value.clone())
                .map_err(|e| ApiError::Invalid(format!("retention policy: {e}")))?;
            policy.check().map_err(|e| ApiError::Invalid(format!("retention policy: {e}")))?;
            Some(serde_json::to_value(&policy).map_err(|e| ApiError::Invalid(e.to_string()))?)
        }
    };
    client
        .execute("UPDATE repositories SET retention = $2 WHERE id = $1", &[&repo.id, &policy])
        .await
        .map_err(aerugo_db::Error::from)?;
    record(
        &client,
        &principal,
        caller.source(),
        "repository.retention",
        &repo.name,
        rights.org_id,
        json!({ "policy": policy }),
    )
    .await?;
    Ok(web::Json(view(&client, &repo.name).await?))
}
