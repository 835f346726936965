//! The HTTP edge of the OCI Distribution API: the route table and the helpers every handler
//! uses to parse path and query parts into validated types. Handlers are thin: extract (auth
//! and parse), call the core, and answer with the spec's headers.
//!
//! Repository names may span several path segments (`org/team/app`), so each route matches the
//! name with one regex segment (`{name:.+}`) and the endpoint by its fixed suffix; routes are
//! registered most specific first.

mod blobs;
mod listing;
mod manifests;
mod token;
mod uploads;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use actix_web::{HttpRequest, HttpResponse, web};
use aerugo_oci::{Digest, RepoName};
use bytes::Bytes;

use crate::Registry;
use crate::auth::Caller;
use crate::error::{RegistryError, Result};

/// Header naming the API version, sent on every response.
pub const API_VERSION_HEADER: (&str, &str) = ("Docker-Distribution-API-Version", "registry/2.0");

/// Registers every `/v2/` route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource(["/v2", "/v2/"]).route(web::get().to(api_version)).route(web::head().to(api_version)))
        .service(web::resource("/v2/token").route(web::get().to(token::get)).route(web::post().to(token::post)))
        .service(web::resource("/v2/_catalog").route(web::get().to(listing::catalog)))
        .service(web::resource("/v2/{name:.+}/tags/list").route(web::get().to(listing::tags)))
        .service(
            web::resource("/v2/{name:.+}/manifests/{reference}")
                .route(web::get().to(manifests::get))
                .route(web::head().to(manifests::head))
                .route(web::put().to(manifests::put))
                .route(web::delete().to(manifests::delete)),
        )
        .service(
            web::resource(["/v2/{name:.+}/blobs/uploads/", "/v2/{name:.+}/blobs/uploads"])
                .route(web::post().to(uploads::start)),
        )
        .service(
            web::resource("/v2/{name:.+}/blobs/uploads/{upload}")
                .route(web::get().to(uploads::status))
                .route(web::patch().to(uploads::patch))
                .route(web::put().to(uploads::put))
                .route(web::delete().to(uploads::cancel)),
        )
        .service(
            web::resource("/v2/{name:.+}/blobs/{digest}")
                .route(web::get().to(blobs::get))
                .route(web::head().to(blobs::head))
                .route(web::delete().to(blobs::delete)),
        )
        .service(web::resource("/v2/{name:.+}/referrers/{digest}").route(web::get().to(listing::referrers)));
}

/// `/v2/`: confirms the API and, like every endpoint, challenges callers without valid
/// credentials so clients learn where to get a token.
async fn api_version(caller: Caller) -> Result<HttpResponse> {
    caller.authenticated().await?;
    Ok(HttpResponse::Ok().content_type("application/json").body("{}"))
}

/// Answer for paths under `/v2/` that name no endpoint.
pub async fn no_route() -> Result<HttpResponse> {
    Err(RegistryError::NoRoute)
}

fn repo_name(raw: &str) -> Result<RepoName> {
    Ok(raw.parse()?)
}

/// The repository a pull names. containerd, configured with `hosts.toml` to pull a registry's
/// images through Aerugo, sends that registry's host as `?ns=`: the name is then under the
/// organization of the mirror for that host, if there is one.
fn pull_name(registry: &Registry, req: &HttpRequest, raw: &str) -> Result<RepoName> {
    match query(req, "ns").and_then(|ns| registry.mirrors().local_name(raw, Some(&ns))) {
        Some(local) => repo_name(&local),
        None => repo_name(raw),
    }
}

fn digest(raw: &str) -> Result<Digest> {
    Ok(raw.parse()?)
}

/// The first value of query parameter `key`, percent-decoded.
fn query(req: &HttpRequest, key: &str) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A body that declares `Content-Length: n` but sends nothing: the answer to HEAD requests,
/// which must report the size of what a GET would return.
pub struct HeadBody(pub u64);

impl MessageBody for HeadBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.0)
    }

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(None)
    }
}
