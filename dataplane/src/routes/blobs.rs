//! `/v2/<name>/blobs/<digest>`: GET (redirect or ranged stream), HEAD, DELETE.

use actix_web::body::SizedStream;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use super::{HeadBody, digest, header as header_value, pull_name, repo_name};
use crate::Registry;
use crate::auth::Caller;
use crate::error::{RegistryError, Result};
use crate::registry::BlobBody;
use aerugo_auth::Action;

type Path = web::Path<(String, String)>;

pub(super) async fn head(
    registry: web::Data<Registry>,
    caller: Caller,
    path: Path,
    req: HttpRequest,
) -> Result<HttpResponse> {
    let (name, digest) = (pull_name(&registry, &req, &path.0)?, digest(&path.1)?);
    let view = registry.cache().view(name.as_str()).await;
    caller.authorize_pull(&view, &name, || RegistryError::BlobUnknown(digest.to_string())).await?;
    let blob = match registry.mirrors().route(name.as_str()) {
        Some(_) => registry.mirror_blob(&view, &name, &digest).await?,
        None => registry.blob(&view, &digest).await?,
    };
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("Docker-Content-Digest", blob.digest.as_str()))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::ETAG, format!("\"{}\"", blob.digest)))
        .body(HeadBody(u64::try_from(blob.size).unwrap_or(0))))
}

pub(super) async fn get(
    registry: web::Data<Registry>,
    caller: Caller,
    path: Path,
    req: HttpRequest,
) -> Result<HttpResponse> {
    let (name, digest) = (pull_name(&registry, &req, &path.0)?, digest(&path.1)?);
    let view = registry.cache().view(name.as_str()).await;
    caller.authorize_pull(&view, &name, || RegistryError::BlobUnknown(digest.to_string())).await?;
    let range = header_value(&req, "range");
    let (blob, body) = match registry.mirrors().route(name.as_str()) {
        Some(routed) => registry.clone().into_inner().mirror_read_blob(&view, &name, &routed, &digest, range).await?,
        None => registry.read_blob(&view, &digest, range).await?,
    };
    let size = u64::try_from(blob.size).unwrap_or(0);
    Ok(match body {
        BlobBody::Redirect(url) => HttpResponse::TemporaryRedirect()
            .insert_header((header::LOCATION, url))
            .insert_header(("Docker-Content-Digest", blob.digest.as_str()))
            .finish(),
        BlobBody::Stream { stream, range: None } => HttpResponse::Ok()
            .content_type("application/octet-stream")
            .insert_header(("Docker-Content-Digest", blob.digest.as_str()))
            .insert_header((header::ACCEPT_RANGES, "bytes"))
            .insert_header((header::ETAG, format!("\"{}\"", blob.digest)))
            .body(SizedStream::new(size, stream)),
        BlobBody::Stream { stream, range: Some(r) } => HttpResponse::PartialContent()
            .content_type("application/octet-stream")
            .insert_header(("Docker-Content-Digest", blob.digest.as_str()))
            .insert_header((header::ACCEPT_RANGES, "bytes"))
            .insert_header((header::CONTENT_RANGE, format!("bytes {}-{}/{size}", r.start, r.end)))
            .body(SizedStream::new(r.end - r.start + 1, stream)),
    })
}

pub(super) async fn delete(registry: web::Data<Registry>, caller: Caller, path: Path) -> Result<HttpResponse> {
    let (name, digest) = (repo_name(&path.0)?, digest(&path.1)?);
    let actor = caller.authorize(&name, Action::Delete).await?;
    registry.delete_blob(&name, &digest, &actor).await?;
    Ok(HttpResponse::Accepted().finish())
}
