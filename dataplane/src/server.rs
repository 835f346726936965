//! The actix applications: the registry app (middleware, health endpoints, the `/v2/` routes)
//! and the admin app (`/metrics`, health). `main` and the in-process HTTP tests build exactly
//! these, so tests exercise the real pipeline.

use std::time::Instant;

use actix_web::body::{BodySize, EitherBody, MessageBody};
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::{DefaultHeaders, Next, from_fn};
use actix_web::{App, Error, HttpResponse, ResponseError as _, web};

use crate::Registry;
use crate::api;
use crate::auth::Auth;
use crate::auth::caller::source_address;
use crate::auth::limits::subjects;
use crate::error::RegistryError;
use crate::metrics::Metrics;
use crate::routes::{self, API_VERSION_HEADER};

/// Builds the registry application around a shared registry, authentication and metrics.
pub fn app(
    registry: web::Data<Registry>,
    auth: web::Data<Auth>,
    metrics: web::Data<Metrics>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(registry)
        .app_data(auth)
        .app_data(metrics)
        .wrap(from_fn(limit_requests))
        .wrap(DefaultHeaders::new().add(API_VERSION_HEADER))
        .wrap(from_fn(observe_request))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .configure(api::configure)
        .configure(routes::configure)
        .default_service(web::to(routes::no_route))
}

/// Builds the admin application: `/metrics`, `/healthz`, `/readyz`.
pub fn admin_app(
    registry: web::Data<Registry>,
    metrics: web::Data<Metrics>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(registry)
        .app_data(metrics)
        .route("/metrics", web::get().to(render_metrics))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
}

async fn render_metrics(registry: web::Data<Registry>, metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(metrics.render(registry.pool_status()))
}

/// Liveness: the process answers.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// Readiness: the database and blob storage answer.
async fn readyz(registry: web::Data<Registry>) -> HttpResponse {
    match registry.ready().await {
        Ok(()) => HttpResponse::Ok().content_type("text/plain").body("ready"),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            HttpResponse::ServiceUnavailable().content_type("text/plain").body("not ready")
        }
    }
}

/// Header bytes a request may carry (names, values and separators): 16 KiB, room for any
/// client's credentials many times over.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Request limits, before any work is done: headers over [`MAX_HEADER_BYTES`] get `431`;
/// over a rate limit (per client address, per organization, per client on the token endpoint)
/// `429 TOOMANYREQUESTS` with `Retry-After`. Health endpoints are never rate limited.
async fn limit_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let header_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if header_bytes > MAX_HEADER_BYTES {
        let response = HttpResponse::build(actix_web::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).json(
            serde_json::json!({ "errors": [{
                "code": "SIZE_INVALID",
                "message": "request headers too large",
                "detail": format!("{header_bytes} bytes of headers; the limit is {MAX_HEADER_BYTES}"),
            }] }),
        );
        return Ok(req.into_response(response).map_into_right_body());
    }
    let path = req.path();
    if path != "/healthz"
        && path != "/readyz"
        && let Some(auth) = req.app_data::<web::Data<Auth>>()
        && !auth.limiter().is_off()
    {
        let source = source_address(req.request(), &auth.settings().trusted_proxies);
        if let Err((limit, retry_after)) = auth.limiter().admit(&subjects(path, source.as_deref())) {
            if let Some(metrics) = req.app_data::<web::Data<Metrics>>() {
                metrics.rate_limited(limit);
            }
            tracing::debug!(limit, retry_after, path, "rate limited");
            let response = RegistryError::TooManyRequests { retry_after }.error_response();
            return Ok(req.into_response(response).map_into_right_body());
        }
    }
    next.call(req).await.map(ServiceResponse::map_into_left_body)
}

/// Metrics and one structured log line per request. The query string is left out of the log:
/// it may carry credentials once token auth exists.
async fn observe_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let bytes_in = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let response = next.call(req).await?;
    let status = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    if let Some(metrics) = metrics {
        let route = response.request().match_pattern().unwrap_or_else(|| "unmatched".to_owned());
        let bytes_out = match response.response().body().size() {
            BodySize::Sized(n) => n,
            _ => 0,
        };
        metrics.observe(&route, method.as_str(), status, seconds, bytes_in, bytes_out);
    }
    let duration_ms = seconds * 1000.0;
    if status >= 500 {
        tracing::warn!(%method, %path, status, duration_ms, "request failed");
    } else {
        tracing::debug!(%method, %path, status, duration_ms, "request");
    }
    Ok(response)
}
