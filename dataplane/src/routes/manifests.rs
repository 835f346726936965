//! `/v2/<name>/manifests/<reference>`: GET, HEAD, PUT, DELETE.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use aerugo_oci::Reference;
use aerugo_oci::manifest::{DOCKER_MANIFEST_LIST, MAX_MANIFEST_BYTES, OCI_INDEX};
use futures_util::StreamExt;

use super::{header as header_value, pull_name, repo_name};
use crate::Registry;
use crate::auth::Caller;
use crate::error::{RegistryError, Result};
use crate::registry::StoredManifest;
use aerugo_auth::Action;

type Path = web::Path<(String, String)>;

fn parse(path: &Path) -> Result<(aerugo_oci::RepoName, Reference)> {
    Ok((repo_name(&path.0)?, path.1.parse()?))
}

fn found(manifest: StoredManifest) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(manifest.media_type)
        .insert_header(("Docker-Content-Digest", manifest.digest.as_str()))
        .insert_header((header::ETAG, format!("\"{}\"", manifest.digest)))
        .body(manifest.payload)
}

/// Whether a client whose `Accept` is `accept` takes a manifest of `media_type`. Single-image
/// manifests are served as stored whatever the client names (as Distribution does). An index
/// (OCI index, Docker manifest list) is served only to a client that names its type, a
/// wildcard, or nothing: one that names only single-image types cannot read an index, and gets
/// `404 MANIFEST_UNKNOWN` (Distribution answers such clients with the default platform's
/// manifest instead; Aerugo does not pick a platform for a client that did not ask for one).
fn acceptable(accept: &[&str], media_type: &str) -> bool {
    if media_type != OCI_INDEX && media_type != DOCKER_MANIFEST_LIST {
        return true;
    }
    let mut named = accept.iter().flat_map(|v| v.split(',')).map(|t| t.split(';').next().unwrap_or("").trim());
    let mut any = false;
    let found = named.any(|t| {
        any |= !t.is_empty();
        t == media_type || t == "*/*" || t == "application/*"
    });
    found || !any
}

pub(super) async fn get(
    registry: web::Data<Registry>,
    caller: Caller,
    path: Path,
    req: HttpRequest,
) -> Result<HttpResponse> {
    let (name, reference) = (pull_name(&registry, &req, &path.0)?, path.1.parse::<Reference>()?);
    let view = registry.cache().view(name.as_str()).await;
    caller.authorize_pull(&view, &name, || RegistryError::ManifestUnknown(reference.to_string())).await?;
    let manifest = match registry.mirrors().route(name.as_str()) {
        Some(routed) => registry.mirror_manifest(&view, &name, &routed, &reference).await?,
        None => registry.manifest(&view, &reference).await?,
    };
    let accept: Vec<&str> = req.headers().get_all(header::ACCEPT).filter_map(|v| v.to_str().ok()).collect();
    if !acceptable(&accept, &manifest.media_type) {
        return Err(RegistryError::ManifestUnknown(format!(
            "{reference} is a {}, which the request's Accept does not name",
            manifest.media_type
        )));
    }
    registry.mark_pulled(name.as_str(), &manifest.digest);
    Ok(found(manifest))
}

pub(super) async fn head(
    registry: web::Data<Registry>,
    caller: Caller,
    path: Path,
    req: HttpRequest,
) -> Result<HttpResponse> {
    // The payload is small and already loaded; actix sends its length but not its bytes.
    get(registry, caller, path, req).await
}

pub(super) async fn put(
    registry: web::Data<Registry>,
    caller: Caller,
    path: Path,
    req: HttpRequest,
    mut body: web::Payload,
) -> Result<HttpResponse> {
    let (name, reference) = parse(&path)?;
    let actor = caller.authorize(&name, Action::Push).await?;
    let too_large = || RegistryError::SizeInvalid {
        over_limit: true,
        detail: format!("manifests are limited to {MAX_MANIFEST_BYTES} bytes"),
    };
    let declared = header_value(&req, "content-length").and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_MANIFEST_BYTES) {
        return Err(too_large());
    }
    let mut payload = Vec::with_capacity(declared.unwrap_or(4096));
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| RegistryError::ManifestInvalid(format!("reading request body: {e}")))?;
        if payload.len() + chunk.len() > MAX_MANIFEST_BYTES {
            return Err(too_large());
        }
        payload.extend_from_slice(&chunk);
    }
    let content_type = header_value(&req, "content-type");
    let (digest, subject) = registry.put_manifest(&name, &reference, content_type, &payload, &actor).await?;
    let mut response = HttpResponse::Created();
    response
        .insert_header((header::LOCATION, registry.url(&format!("/v2/{name}/manifests/{digest}"))))
        .insert_header(("Docker-Content-Digest", digest.as_str()));
    if let Some(subject) = subject {
        response.insert_header(("OCI-Subject", subject.as_str()));
    }
    Ok(response.finish())
}

pub(super) async fn delete(registry: web::Data<Registry>, caller: Caller, path: Path) -> Result<HttpResponse> {
    let (name, reference) = parse(&path)?;
    let actor = caller.authorize(&name, Action::Delete).await?;
    registry.delete_manifest(&name, &reference, &actor).await?;
    Ok(HttpResponse::Accepted().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_go_to_clients_that_name_them_single_manifests_to_everyone() {
        let single = aerugo_oci::manifest::OCI_MANIFEST;
        assert!(acceptable(&[], OCI_INDEX), "no Accept: as stored");
        assert!(acceptable(&["*/*"], OCI_INDEX));
        assert!(acceptable(&[&format!("{single}, {OCI_INDEX};q=0.5")], OCI_INDEX));
        assert!(acceptable(&[single, OCI_INDEX], OCI_INDEX), "over two header lines");
        assert!(!acceptable(&[single], OCI_INDEX));
        assert!(!acceptable(&[DOCKER_MANIFEST_LIST], OCI_INDEX), "another index type is not this one");
        assert!(!acceptable(&[aerugo_oci::manifest::DOCKER_MANIFEST], DOCKER_MANIFEST_LIST));
        assert!(acceptable(&[aerugo_oci::manifest::DOCKER_MANIFEST], single), "single manifests as stored");
    }
}
