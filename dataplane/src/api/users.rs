//! Sessions, user accounts (created by site administrators) and the caller's own profile.

use actix_web::{HttpResponse, web};
use aerugo_auth::token::TokenKind;
use aerugo_auth::{apikey, password};
use aerugo_db::tenancy::{self, MANAGED_BY_KUBERNETES, User};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{ApiCaller, ApiError, ApiResult, ErrorBody, record};
use crate::auth::Auth;

/// A user as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    /// Login name.
    pub username: String,
    /// Contact address.
    pub email: Option<String>,
    /// Site administrator.
    pub site_admin: bool,
    /// Disabled accounts cannot log in.
    pub disabled: bool,
    /// `api`, `kubernetes` or `system`.
    pub managed_by: String,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            username: u.username,
            email: u.email,
            site_admin: u.is_site_admin,
            disabled: u.disabled,
            managed_by: u.managed_by,
            created_at: u.created_at,
        }
    }
}

/// A new user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewUser {
    /// Login name: lowercase letters, digits, `.`, `_`, `-`; at most 64 characters.
    pub username: String,
    /// At least 8 characters.
    pub password: String,
    /// Contact address.
    pub email: Option<String>,
    /// Make the user a site administrator.
    #[serde(default)]
    pub site_admin: bool,
}

/// Changes to the caller's profile.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileUpdate {
    /// New contact address (`null` clears it).
    pub email: Option<String>,
}

/// A password change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordChange {
    /// The current password.
    pub current_password: String,
    /// The new password (at least 8 characters).
    pub new_password: String,
}

/// Username and password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Login name.
    pub username: String,
    /// Password (not an API key).
    pub password: String,
}

/// A session token for the management API.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// Expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

pub(super) fn valid_username(name: &str) -> ApiResult<()> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid(
            "usernames are 1–64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit".into(),
        ))
    }
}

fn valid_password(password: &str) -> ApiResult<()> {
    if (8..=1024).contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(ApiError::Invalid("passwords are 8 to 1024 characters".into()))
    }
}

fn valid_email(email: Option<&str>) -> ApiResult<()> {
    match email {
        Some(e) if e.len() > 254 || !e.contains('@') || e.chars().any(char::is_whitespace) => {
            Err(ApiError::Invalid("email must look like name@domain".into()))
        }
        _ => Ok(()),
    }
}

async fn hash(password: &str) -> ApiResult<String> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Log in with a password; the token authenticates later management calls.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "session", request_body = LoginRequest, security(()),
    responses((status = 200, body = Session), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(super) async fn login(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    body: web::Json<LoginRequest>,
) -> ApiResult<web::Json<Session>> {
    if apikey::parse(&body.password).is_some() {
        return Err(ApiError::Invalid("log in with a password; API keys authenticate each request with Basic".into()));
    }
    let principal = auth.authenticate(&body.username, &body.password, caller.source(), String::new).await?;
    let issued = auth.mint(Some(&principal), TokenKind::Session, Vec::new(), auth.settings().session_ttl)?;
    Ok(web::Json(Session {
        token: issued.token,
        expires_at: OffsetDateTime::from(issued.issued_at) + auth.settings().session_ttl,
    }))
}

/// Create a user (site administrators only).
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = UserView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    body: web::Json<NewUser>,
) -> ApiResult<HttpResponse> {
    let principal = caller.principal().await?;
    if !principal.site_admin {
        return Err(ApiError::Forbidden("only site administrators create users".into()));
    }
    valid_username(&body.username)?;
    valid_password(&body.password)?;
    valid_email(body.email.as_deref())?;
    let hash = hash(&body.password).await?;
    let client = auth.client().await?;
    let user =
        tenancy::create_user(&client, &body.username, body.email.as_deref(), Some(&hash), body.site_admin, "api")
            .await?
            .ok_or_else(|| ApiError::Conflict(format!("user {} already exists", body.username)))?;
    record(
        &client,
        &principal,
        caller.source(),
        "user.create",
        &user.username,
        None,
        json!({ "siteAdmin": user.is_site_admin }),
    )
    .await?;
    Ok(HttpResponse::Created().json(UserView::from(user)))
}

/// List users (site administrators only).
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    responses((status = 200, body = [UserView]), (status = 403, body = ErrorBody)))]
pub(super) async fn list(auth: web::Data<Auth>, caller: ApiCaller) -> ApiResult<web::Json<Vec<UserView>>> {
    let principal = caller.principal().await?;
    if !principal.site_admin {
        return Err(ApiError::Forbidden("only site administrators list users".into()));
    }
    let client = auth.client().await?;
    Ok(web::Json(tenancy::list_users(&client).await?.into_iter().map(UserView::from).collect()))
}

async fn own_user(auth: &Auth, caller: &ApiCaller) -> ApiResult<(std::sync::Arc<crate::auth::Principal>, User)> {
    let principal = caller.principal().await?;
    if principal.user_id.is_none() {
        return Err(ApiError::Forbidden("organization keys have no user profile".into()));
    }
    let client = auth.client().await?;
    let user = tenancy::user(&client, &principal.name).await?.ok_or(ApiError::Unauthorized)?;
    Ok((principal, user))
}

/// The caller's profile.
#[utoipa::path(get, path = "/api/v1/user", tag = "users", responses((status = 200, body = UserView), (status = 401, body = ErrorBody)))]
pub(super) async fn me(auth: web::Data<Auth>, caller: ApiCaller) -> ApiResult<web::Json<UserView>> {
    Ok(web::Json(own_user(&auth, &caller).await?.1.into()))
}

/// Change the caller's profile.
#[utoipa::path(patch, path = "/api/v1/user", tag = "users", request_body = ProfileUpdate,
    responses((status = 200, body = UserView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn update_me(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    body: web::Json<ProfileUpdate>,
) -> ApiResult<web::Json<UserView>> {
    let (principal, user) = own_user(&auth, &caller).await?;
    if user.managed_by == MANAGED_BY_KUBERNETES {
        return Err(ApiError::managed_by_kubernetes("this user"));
    }
    valid_email(body.email.as_deref())?;
    let client = auth.client().await?;
    tenancy::set_email(&client, user.id, body.email.as_deref()).await?;
    record(&client, &principal, caller.source(), "user.update", &user.username, None, json!({})).await?;
    let updated = tenancy::user(&client, &user.username).await?.ok_or(ApiError::Unauthorized)?;
    Ok(web::Json(updated.into()))
}

/// Change the caller's password (the current one is required).
#[utoipa::path(put, path = "/api/v1/user/password", tag = "users", request_body = PasswordChange,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn change_password(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    body: web::Json<PasswordChange>,
) -> ApiResult<HttpResponse> {
    let (principal, user) = own_user(&auth, &caller).await?;
    valid_password(&body.new_password)?;
    if apikey::parse(&body.current_password).is_some() {
        return Err(ApiError::Forbidden("the current password is wrong".into()));
    }
    // Checked like a login: wrong guesses count against the limit.
    auth.authenticate(&user.username, &body.current_password, caller.source(), String::new).await.map_err(|e| {
        match ApiError::from(e) {
            ApiError::Unauthorized => ApiError::Forbidden("the current password is wrong".into()),
            other => other,
        }
    })?;
    let hash = hash(&body.new_password).await?;
    let mut client = auth.client().await?;
    let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
    tenancy::set_password(&tx, user.id, &hash).await?;
    // Sessions and refresh tokens issued before the change stop working (API keys do not).
    tenancy::reset_credentials(&tx, &user.username, false).await?;
    record(&tx, &principal, caller.source(), "user.password", &user.username, None, json!({})).await?;
    tx.commit().await.map_err(aerugo_db::Error::from)?;
    credentials_changed(&auth).await;
    Ok(HttpResponse::NoContent().finish())
}

/// After a credential change is committed: this node forgets remembered logins and reloads
/// revocations at once (the others do when the database tells them, within a second).
async fn credentials_changed(auth: &Auth) {
    auth.forget_logins();
    if let Err(e) = auth.refresh_revocations().await {
        tracing::error!(error = %e, "reloading revocations after a credential change failed; the periodic refresh will");
    }
}

/// A site administrator's change to another user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserUpdate {
    /// Disable (every session, token and API key of the user stops working at once; enabling
    /// again does not bring the old ones back) or enable the account.
    pub disabled: bool,
}

/// A site administrator's password reset.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordReset {
    /// The new password (at least 8 characters).
    pub new_password: String,
}

/// The user `username` as a site administrator (not the caller) may change it.
async fn other_user(
    client: &impl aerugo_db::GenericClient,
    principal: &crate::auth::Principal,
    username: &str,
    what: &str,
) -> ApiResult<User> {
    if !principal.site_admin || principal.key.is_some() {
        return Err(ApiError::Forbidden(format!("only site administrators {what} users")));
    }
    let user = tenancy::user(client, username).await?.ok_or_else(|| ApiError::NotFound(format!("user {username}")))?;
    if user.username == principal.name {
        return Err(ApiError::Forbidden(format!("site administrators cannot {what} themselves")));
    }
    if user.managed_by == MANAGED_BY_KUBERNETES {
        return Err(ApiError::managed_by_kubernetes(&format!("user {username}")));
    }
    Ok(user)
}

/// Disable or enable a user (site administrators only, not themselves).
#[utoipa::path(patch, path = "/api/v1/users/{username}", tag = "users", request_body = UserUpdate,
    params(("username" = String, Path)),
    responses((status = 200, body = UserView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn update(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<String>,
    body: web::Json<UserUpdate>,
) -> ApiResult<web::Json<UserView>> {
    let principal = caller.principal().await?;
    let mut client = auth.client().await?;
    let user = other_user(&client, &principal, &path, "disable").await?;
    let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
    tenancy::set_disabled(&tx, user.id, body.disabled).await?;
    if body.disabled {
        tenancy::reset_credentials(&tx, &user.username, true).await?;
    }
    let action = if body.disabled { "user.disable" } else { "user.enable" };
    record(&tx, &principal, caller.source(), action, &user.username, None, json!({})).await?;
    tx.commit().await.map_err(aerugo_db::Error::from)?;
    credentials_changed(&auth).await;
    let updated = tenancy::user(&client, &user.username).await?.ok_or(ApiError::NotFound(user.username))?;
    Ok(web::Json(updated.into()))
}

/// Delete a user with its memberships, grants and API keys; every token it held stops working
/// (site administrators only, not themselves).
#[utoipa::path(delete, path = "/api/v1/users/{username}", tag = "users", params(("username" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn delete(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let principal = caller.principal().await?;
    let mut client = auth.client().await?;
    let user = other_user(&client, &principal, &path, "delete").await?;
    let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
    tenancy::reset_credentials(&tx, &user.username, true).await?;
    tenancy::delete_user(&tx, user.id).await?;
    record(&tx, &principal, caller.source(), "user.delete", &user.username, None, json!({})).await?;
    tx.commit().await.map_err(aerugo_db::Error::from)?;
    credentials_changed(&auth).await;
    Ok(HttpResponse::NoContent().finish())
}

/// Set a user's password (site administrators only, not themselves: they use
/// `PUT /api/v1/user/password`). The user's sessions and refresh tokens stop working.
#[utoipa::path(put, path = "/api/v1/users/{username}/password", tag = "users", request_body = PasswordReset,
    params(("username" = String, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn reset_password(
    auth: web::Data<Auth>,
    caller: ApiCaller,
    path: web::Path<String>,
    body: web::Json<PasswordReset>,
) -> ApiResult<HttpResponse> {
    let principal = caller.principal().await?;
    valid_password(&body.new_password)?;
    let mut client = auth.client().await?;
    let user = other_user(&client, &principal, &path, "reset the password of").await?;
    let hash = hash(&body.new_password).await?;
    let tx = client.transaction().await.map_err(aerugo_db::Error::from)?;
    tenancy::set_password(&tx, user.id, &hash).await?;
    tenancy::reset_credentials(&tx, &user.username, false).await?;
    record(&tx, &principal, caller.source(), "user.password_reset", &user.username, None, json!({})).await?;
    tx.commit().await.map_err(aerugo_db::Error::from)?;
    credentials_changed(&auth).await;
    Ok(HttpResponse::NoContent().finish())
}
