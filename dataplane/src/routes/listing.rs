//! Listings: `/v2/_catalog`, `/v2/<name>/tags/list`, `/v2/<name>/referrers/<digest>`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use aerugo_oci::manifest::OCI_INDEX;
use serde_json::{Map, Value, json};

use super::{digest, pull_name, query};
use crate::Registry;
use crate::auth::Caller;
use crate::error::{RegistryError, Result};
use crate::registry::{CatalogFilter, Page};
use aerugo_auth::Action;

fn page(req: &HttpRequest) -> Result<Page> {
    let n =
        match query(req, "n") {
            Some(raw) => Some(raw.parse::<u32>().map_err(|_| {
                RegistryError::PaginationInvalid(format!("n must be a non-negative integer, got {raw:?}"))
            })?),
            None => None,
        };
    Ok(Page { n, last: query(req, "last") })
}

/// Adds `Link: <path?[filter&]n=…&last=…>; rel="next"` when another page follows (`next`).
fn link(
    response: &mut actix_web::HttpResponseBuilder,
    path: &str,
    filter: Option<(&str, &str)>,
    page: &Page,
    next: Option<&str>,
) {
    if let Some(last) = next {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some((key, value)) = filter {
            query.append_pair(key, value);
        }
        if let Some(n) = page.n {
            query.append_pair("n", &n.to_string());
        }
        query.append_pair("last", last);
        response.insert_header((header::LINK, format!("<{path}?{}>; rel=\"next\"", query.finish())));
    }
}

pub(super) async fn catalog(registry: web::Data<Registry>, caller: Caller, req: HttpRequest) -> Result<HttpResponse> {
    let page = page(&req)?;
    let seen = caller.catalog_viewer().await?;
    let key = seen.principal.as_ref().and_then(|p| p.key.as_ref());
    let keep = |name: &str| key.is_none_or(|k| k.scopes.allowed(name).contains(Action::Pull));
    let result = registry.catalog(&page, &CatalogFilter { viewer: seen.viewer, keep: &keep }).await?;
    let body = json!({ "repositories": result.items });
    let mut response = HttpResponse::Ok();
    response.content_type("application/json");
    link(&mut response, "/v2/_catalog", None, &page, result.next.as_deref());
    Ok(response.body(body.to_string()))
}

pub(super) async fn tags(
    registry: web::Data<Registry>,
    caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse> {
    let name = pull_name(&registry, &req, &path)?;
    let view = registry.cache().view(name.as_str()).await;
    caller.authorize_pull(&view, &name, || RegistryError::NameUnknown(name.to_string())).await?;
    let page = page(&req)?;
    let result = registry.tags(&view, &name, &page).await?;
    let body = json!({ "name": name.as_str(), "tags": result.items });
    let mut response = HttpResponse::Ok();
    response.content_type("application/json");
    link(&mut response, &format!("/v2/{name}/tags/list"), None, &page, result.next.as_deref());
    Ok(response.body(body.to_string()))
}

pub(super) async fn referrers(
    registry: web::Data<Registry>,
    caller: Caller,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse> {
    let (name, subject) = (pull_name(&registry, &req, &path.0)?, digest(&path.1)?);
    caller
        .authorize(&name, Action::Pull)
        .await
        .map_err(|e| e.or_unknown(|| RegistryError::NameUnknown(name.to_string())))?;
    let artifact_type = query(&req, "artifactType");
    let page = page(&req)?;
    let (found, next) = registry.referrers(&name, &subject, artifact_type.as_deref(), &page).await?;
    let manifests: Vec<Value> = found
        .into_iter()
        .map(|r| {
            let mut d = Map::new();
            d.insert("mediaType".into(), r.media_type.into());
            d.insert("digest".into(), r.digest.into());
            d.insert("size".into(), r.size.into());
            if let Some(t) = r.artifact_type {
                d.insert("artifactType".into(), t.into());
            }
            if let Some(a) = r.annotations {
                d.insert("annotations".into(), a);
            }
            Value::Object(d)
        })
        .collect();
    let body = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let mut response = HttpResponse::Ok();
    response.content_type(OCI_INDEX);
    if artifact_type.is_some() {
        response.insert_header(("OCI-Filters-Applied", "artifactType"));
    }
    // The next page keeps the filter.
    let filter = artifact_type.as_deref().map(|t| ("artifactType", t));
    link(&mut response, req.path(), filter, &page, next.as_deref());
    Ok(response.body(body.to_string()))
}
