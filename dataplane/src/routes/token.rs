//! `/v2/token`: the Docker/OCI token endpoint. `GET` with optional Basic credentials and
//! `scope=` parameters (what docker, skopeo, podman and oras send), and the OAuth2 `POST` form
//! (`grant_type=password` or `refresh_token`) that docker and containerd use. The answer grants
//! the subset of the requested actions the caller holds; an empty grant is still a token.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use aerugo_auth::Scope;
use aerugo_auth::token::TokenKind;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::auth::caller::source_address;
use crate::auth::{Auth, Presented, Principal};
use crate::error::{RegistryError, Result};

/// Most scopes one token request may ask for.
const MAX_SCOPES: usize = 64;

/// Largest token request form accepted.
const MAX_FORM_BYTES: usize = 16 * 1024;

fn basic_challenge(auth: &Auth) -> String {
    format!("Basic realm=\"{}\"", auth.settings().service.replace('"', ""))
}

fn parse_scopes<'a>(values: impl Iterator<Item = &'a str>) -> Result<Vec<Scope>> {
    let scopes: Vec<Scope> = values
        .flat_map(str::split_whitespace)
        .map(|s| s.parse::<Scope>().map_err(|e| RegistryError::InvalidRequest(e.to_string())))
        .collect::<Result<_>>()?;
    if scopes.len() > MAX_SCOPES {
        return Err(RegistryError::InvalidRequest(format!("at most {MAX_SCOPES} scopes per token request")));
    }
    Ok(scopes)
}

fn pairs(raw: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// `GET /v2/token`.
pub(super) async fn get(auth: web::Data<Auth>, req: HttpRequest) -> Result<HttpResponse> {
    let query = pairs(req.query_string().as_bytes());
    let scopes = parse_scopes(query.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.as_str()))?;
    let source = source_address(&req, &auth.settings().trusted_proxies);
    let principal = match Presented::parse(req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes())) {
        Presented::Nothing => None,
        Presented::Basic { username, secret } => {
            Some(auth.authenticate(&username, &secret, source.as_deref(), || basic_challenge(&auth)).await?)
        }
        Presented::Bearer(_) => {
            return Err(RegistryError::Unauthorized {
                challenge: basic_challenge(&auth),
                detail: "the token endpoint takes Basic credentials or none".into(),
            });
        }
        Presented::Malformed(why) => {
            return Err(RegistryError::Unauthorized { challenge: basic_challenge(&auth), detail: why.into() });
        }
    };
    let offline = first(&query, "offline_token") == Some("true");
    respond(&auth, principal, &scopes, offline).await
}

/// `POST /v2/token` (OAuth2 form).
pub(super) async fn post(auth: web::Data<Auth>, req: HttpRequest, body: web::Bytes) -> Result<HttpResponse> {
    if body.len() > MAX_FORM_BYTES {
        return Err(RegistryError::InvalidRequest("token request form too large".into()));
    }
    let form = pairs(&body);
    let scopes = parse_scopes(form.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.as_str()))?;
    let source = source_address(&req, &auth.settings().trusted_proxies);
    let offline = first(&form, "access_type") == Some("offline");
    let principal = match first(&form, "grant_type") {
        Some("password") => {
            let (Some(username), Some(password)) = (first(&form, "username"), first(&form, "password")) else {
                return Err(RegistryError::InvalidRequest("grant_type=password needs username and password".into()));
            };
            auth.authenticate(username, password, source.as_deref(), || basic_challenge(&auth)).await?
        }
        Some("refresh_token") => {
            let Some(refresh) = first(&form, "refresh_token") else {
                return Err(RegistryError::InvalidRequest("grant_type=refresh_token needs refresh_token".into()));
            };
            let invalid = || RegistryError::Unauthorized {
                challenge: basic_challenge(&auth),
                detail: "the refresh token is invalid, expired or revoked".into(),
            };
            let token = auth.verify_token(refresh, TokenKind::Refresh).map_err(|_| invalid())?;
            let principal = auth.principal_of(&token.facts.subject, token.facts.key_id.as_deref()).await?;
            Arc::new(principal.ok_or_else(invalid)?)
        }
        Some(other) => {
            return Err(RegistryError::InvalidRequest(format!(
                "unsupported grant_type {:?} (use password or refresh_token)",
                other.chars().take(32).collect::<String>()
            )));
        }
        None => return Err(RegistryError::InvalidRequest("grant_type is required".into())),
    };
    respond(&auth, Some(principal), &scopes, offline).await
}

async fn respond(
    auth: &Auth,
    principal: Option<Arc<Principal>>,
    scopes: &[Scope],
    offline: bool,
) -> Result<HttpResponse> {
    let principal = principal.as_deref();
    let granted = auth.grant(principal, scopes).await?;
    let issued = auth.mint(principal, TokenKind::Access, granted, auth.settings().token_ttl)?;
    let issued_at = OffsetDateTime::from(issued.issued_at)
        .format(&Rfc3339)
        .map_err(|e| RegistryError::Internal(format!("formatting time: {e}")))?;
    let mut body = json!({
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": issued_at,
    });
    if offline && principal.is_some() {
        let refresh = auth.mint(principal, TokenKind::Refresh, Vec::new(), auth.settings().refresh_token_ttl)?;
        body["refresh_token"] = json!(refresh.token);
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("application/json")
        .body(body.to_string()))
}
