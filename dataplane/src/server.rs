//! The actix application: middleware, health endpoints and the `/v2/` routes. `main` and the
//! in-process HTTP tests build exactly this app, so tests exercise the real pipeline.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::{DefaultHeaders, Next, from_fn};
use actix_web::{App, Error, HttpResponse, web};

use crate::Registry;
use crate::routes::{self, API_VERSION_HEADER};

/// Builds the application around a shared registry.
pub fn app(
    registry: web::Data<Registry>,
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
        .wrap(DefaultHeaders::new().add(API_VERSION_HEADER))
        .wrap(from_fn(log_request))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .configure(routes::configure)
        .default_service(web::to(routes::no_route))
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

/// One structured log line per request. The query string is left out: it may carry
/// credentials once token auth exists.
async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let response = next.call(req).await?;
    let status = response.status().as_u16();
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(%method, %path, status, duration_ms, "request failed");
    } else {
        tracing::debug!(%method, %path, status, duration_ms, "request");
    }
    Ok(response)
}
