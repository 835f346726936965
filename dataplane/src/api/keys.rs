//! The caller's API keys: create (the key is shown once), list, revoke. A key narrows its
//! owner's rights to repository globs × actions and may expire; revoking it ends its tokens.

use actix_web::{HttpResponse, web};
use aerugo_auth::Action;
use aerugo_auth::apikey::{self, CompiledScopes, KeyScope};
use aerugo_db::tenancy::{self, ApiKey, MANAGED_BY_KUBERNETES, NewApiKey};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{ApiCaller, ApiError, ApiResult, ErrorBody, record};
use crate::auth::Auth;

/// Most scopes one key may have.
const MAX_SCOPES: usize = 64;

/// One scope of a key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeView {
    /// Glob over full repository names: `*` stays within a path segment, `**` crosses them.
    pub repositories: String,
    /// `pull`, `push` and/or `delete`.
    #[schema(value_type = Vec<String>)]
    pub actions: Vec<Action>,
}

/// A new key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewKey {
    /// Label.
    pub name: String,
    /// What the key may do; it never exceeds its owner's rights.
    pub scopes: Vec<ScopeView>,
    /// Expiry (RFC 3339); omit for none.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// A key as listed (never its secret).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    /// Public id (the part after `ak_`).
    pub key_id: String,
    /// Label.
    pub name: Option<String>,
    /// Scopes.
    #[schema(value_type = Object)]
    pub scopes: serde_json::Value,
    /// Expiry.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Last authentication (updated within a minute of use).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// Revocation time.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// `api`, `kubernetes` or `system`.
    pub managed_by: String,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A created key: `key` is shown this once.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    /// The key, `ak_<id>_<secret>`: use it as the password with your username.
    pub key: String,
    /// The stored key.
    #[serde(flatten)]
    pub details: KeyView,
}

fn view(k: ApiKey) -> KeyView {
    KeyView {
        key_id: k.key_id,
        name: k.name,
        scopes: k.scopes,
        expires_at: k.expires_at,
        last_used_at: k.last_used_at,
        revoked_at: k.revoked_at,
        managed_by: k.managed_by,
        created_at: k.created_at,
    }
}

fn owner(principal: &crate::auth::Principal) -> ApiResult<i64> {
    principal.user_id.ok_or_else(|| ApiError::Forbidden("organization keys have no keys of their own".into()))
}

/// Create an API key for the caller.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys", request_body = NewKey,
    responses((status = 201, body = CreatedKey), (status = 400, body = ErrorBody)))]
pub(super) async fn create(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    body: web::Json<NewKey>,
) -> ApiResult<HttpResponse> {
    let principal = caller.principal().await?;
    let user_id = owner(&principal)?;
    let body = body.into_inner();
    if body.name.trim().is_empty() || body.name.len() > 128 {
        return Err(ApiError::Invalid("name must be 1 to 128 characters".into()));
    }
    if body.scopes.is_empty() || body.scopes.len() > MAX_SCOPES {
        return Err(ApiError::Invalid(format!("a key needs 1 to {MAX_SCOPES} scopes")));
    }
    if body.scopes.iter().any(|s| s.actions.is_empty()) {
        return Err(ApiError::Invalid("every scope needs at least one action".into()));
    }
    if body.expires_at.is_some_and(|e| e <= OffsetDateTime::now_utc()) {
        return Err(ApiError::Invalid("expiresAt is in the past".into()));
    }
    let scopes: Vec<KeyScope> = body
        .scopes
        .iter()
        .map(|s| KeyScope { repositories: s.repositories.clone(), actions: s.actions.clone() })
        .collect();
    CompiledScopes::new(&scopes).map_err(|e| ApiError::Invalid(e.to_string()))?;
    let scopes_json = serde_json::to_value(&scopes).map_err(|e| ApiError::Internal(e.to_string()))?;
    let generated = apikey::generate().map_err(|e| ApiError::Internal(e.to_string()))?;
    let client = auth.client().await?;
    let stored = tenancy::create_api_key(
        &client,
        &NewApiKey {
            key_id: &generated.key_id,
            key_hash: &generated.secret_hash,
            name: Some(body.name.trim()),
            owner_user_id: user_id,
            scopes: &scopes_json,
            expires_at: body.expires_at,
        },
    )
    .await?;
    record(
        &client,
        &principal,
        caller.source(),
        "api_key.create",
        &stored.key_id,
        None,
        json!({ "scopes": scopes_json }),
    )
    .await?;
    Ok(HttpResponse::Created().json(CreatedKey { key: generated.token, details: view(stored) }))
}

/// The caller's API keys, newest first.
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys", responses((status = 200, body = [KeyView])))]
pub(super) async fn list(auth: web::Data<Auth>, caller: ApiCaller) -> ApiResult<web::Json<Vec<KeyView>>> {
    let principal = caller.principal().await?;
    let user_id = owner(&principal)?;
    let client = auth.client().await?;
    Ok(web::Json(tenancy::list_api_keys(&client, user_id).await?.into_iter().map(view).collect()))
}

/// Revoke one of the caller's keys; tokens issued for it stop working.
#[utoipa::path(delete, path = "/api/v1/api-keys/{key_id}", tag = "api-keys", params(("key_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn revoke(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let principal = caller.principal().await?;
    let user_id = owner(&principal)?;
    let client = auth.client().await?;
    let key = tenancy::api_key(&client, &path)
        .await?
        .filter(|k| k.owner.as_ref().is_some_and(|(id, _)| *id == user_id))
        .ok_or_else(|| ApiError::NotFound(format!("API key {}", path.as_str())))?;
    if key.managed_by == MANAGED_BY_KUBERNETES {
        return Err(ApiError::managed_by_kubernetes(&format!("API key {}", key.key_id)));
    }
    tenancy::revoke_api_key(&client, key.id).await?;
    auth.revoke_key_locally(&key.key_id);
    record(&client, &principal, caller.source(), "api_key.revoke", &key.key_id, None, json!({})).await?;
    Ok(HttpResponse::NoContent().finish())
}
