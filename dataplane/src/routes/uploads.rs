//! `/v2/<name>/blobs/uploads/…`: POST (session, hashed with `?digest-algorithm=`; monolithic;
//! mount), PATCH (chunked or streamed), PUT (complete), GET (status), DELETE (cancel).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use aerugo_oci::range::parse_content_range;
use uuid::Uuid;

use super::{digest, header as header_value, query, repo_name};
use crate::Registry;
use crate::auth::Caller;
use crate::error::{RegistryError, Result, upload_range};
use crate::registry::{StartUpload, UploadProgress};
use aerugo_auth::Action;

type Path = web::Path<(String, String)>;

fn upload_id(raw: &str) -> Result<Uuid> {
    Uuid::parse_str(raw).map_err(|_| RegistryError::BlobUploadUnknown)
}

fn progress(status: actix_web::http::StatusCode, p: &UploadProgress) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::LOCATION, p.location.as_str()))
        .insert_header((header::RANGE, upload_range(p.offset)))
        .insert_header(("Docker-Upload-UUID", p.id.to_string()))
        .finish()
}

fn created(location: &str, digest: &str) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .insert_header(("Docker-Content-Digest", digest))
        .finish()
}

fn content_range(req: &HttpRequest) -> Result<Option<aerugo_oci::range::ChunkRange>> {
    Ok(header_value(req, "content-range").map(parse_content_range).transpose()?)
}

pub(super) async fn start(
    registry: web::Data<Registry>,
    caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse> {
    let name = repo_name(&path)?;
    let actor = caller.authorize(&name, Action::Push).await?;
    // A `from` that is no valid name, or that the caller may not pull, cannot lend the blob:
    // the request falls back to an upload, exactly as if the blob were not there.
    let mount = match query(&req, "mount") {
        Some(d) => {
            let from: Option<aerugo_oci::RepoName> = query(&req, "from").and_then(|f| f.parse().ok());
            let readable = match &from {
                Some(from) => caller.may(from, Action::Pull).await,
                None => false,
            };
            Some((digest(&d)?, from.filter(|_| readable)))
        }
        None => None,
    };
    let monolithic = match (&mount, query(&req, "digest")) {
        (None, Some(d)) => Some((digest(&d)?, body)),
        _ => None,
    };
    // "When pushing a blob with a digest algorithm other than sha256, the post request SHOULD
    // include the digest-algorithm parameter": the session hashes its chunks with it.
    let algorithm = match query(&req, "digest-algorithm") {
        Some(a) => a.parse::<aerugo_oci::Algorithm>()?,
        None => aerugo_oci::Algorithm::default(),
    };
    Ok(match registry.start_upload(&name, &actor, mount, monolithic, algorithm).await? {
        StartUpload::Session(p) => {
            let mut response = progress(actix_web::http::StatusCode::ACCEPTED, &p);
            // "the registry MAY include an OCI-Chunk-Min-Length header": chunks below S3's part
            // size are buffered between requests.
            if let Some(min) = registry.chunk_min_length()
                && let Ok(value) = header::HeaderValue::from_str(&min.to_string())
            {
                response.headers_mut().insert(header::HeaderName::from_static("oci-chunk-min-length"), value);
            }
            response
        }
        StartUpload::Done { digest, location } => created(&location, digest.as_str()),
    })
}

pub(super) async fn patch(
    registry: web::Data<Registry>,
    caller: Caller,
    path: Path,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse> {
    let (name, id) = (repo_name(&path.0)?, upload_id(&path.1)?);
    caller.authorize(&name, Action::Push).await?;
    let p = registry.append_upload(&name, id, content_range(&req)?, body).await?;
    Ok(progress(actix_web::http::StatusCode::ACCEPTED, &p))
}

pub(super) async fn put(
    registry: web::Data<Registry>,
    caller: Caller,
    path: Path,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse> {
    let (name, id) = (repo_name(&path.0)?, upload_id(&path.1)?);
    let actor = caller.authorize(&name, Action::Push).await?;
    let digest = digest(
        &query(&req, "digest")
            .ok_or_else(|| RegistryError::DigestInvalid("the final PUT of an upload needs ?digest=".into()))?,
    )?;
    let location = registry.finish_upload(&name, &actor, id, &digest, content_range(&req)?, body).await?;
    Ok(created(&location, digest.as_str()))
}

pub(super) async fn status(registry: web::Data<Registry>, caller: Caller, path: Path) -> Result<HttpResponse> {
    let (name, id) = (repo_name(&path.0)?, upload_id(&path.1)?);
    caller.authorize(&name, Action::Push).await?;
    let p = registry.upload_status(&name, id).await?;
    Ok(progress(actix_web::http::StatusCode::NO_CONTENT, &p))
}

pub(super) async fn cancel(registry: web::Data<Registry>, caller: Caller, path: Path) -> Result<HttpResponse> {
    let (name, id) = (repo_name(&path.0)?, upload_id(&path.1)?);
    caller.authorize(&name, Action::Push).await?;
    registry.cancel_upload(&name, id).await?;
    Ok(HttpResponse::NoContent().finish())
}
