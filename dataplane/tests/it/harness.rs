//! Test harness: a registry on a fresh database, its app service, and request helpers.

use std::time::Duration;

use actix_web::HttpMessage;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::HeaderValue;
use actix_web::http::{Method, StatusCode};
use actix_web::test::{self, TestRequest};
use actix_web::web;
use aerugo_auth::apikey;
use aerugo_auth::token::TokenKeys;
use aerugo_dataplane::auth::Auth;
use aerugo_dataplane::config::{AuthSettings, RedirectMode, Settings};
use aerugo_dataplane::{Registry, server};
use aerugo_db::tenancy;
use aerugo_oci::Digest;
use aerugo_storage::{AnyStore, FsStore, S3Config, S3Store};
use bytes::Bytes;
use serde_json::{Value, json};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A registry under test: its database URL, the core, authentication, and what keeps its
/// storage alive. `admin` is the `Authorization` value of a site administrator's API key.
pub struct TestRegistry {
    pub database_url: String,
    pub registry: web::Data<Registry>,
    pub auth: web::Data<Auth>,
    pub admin: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestRegistry {
    /// The directory of a filesystem registry's blobs.
    pub fn storage_dir(&self) -> &std::path::Path {
        self._dir.as_ref().map(tempfile::TempDir::path).expect("a filesystem registry")
    }
}

/// Authentication over `database_url` with a fresh signing key.
pub fn test_auth(database_url: &str) -> web::Data<Auth> {
    let pool = aerugo_db::pool(database_url, 8).expect("pool");
    web::Data::new(Auth::new(pool, TokenKeys::generate(), AuthSettings::default()))
}

/// Creates site administrator `admin` with an API key for every repository and action;
/// returns the `Authorization` header value that presents the key.
pub async fn seed_admin(database_url: &str) -> String {
    let pool = aerugo_db::pool(database_url, 1).expect("pool");
    let client = pool.get().await.expect("client");
    let user = tenancy::upsert_site_admin(&client, "admin", "!no-password-login").await.expect("admin");
    let key = apikey::generate().expect("key");
    let scopes = json!([{ "repositories": "**", "actions": ["pull", "push", "delete"] }]);
    tenancy::create_api_key(
        &client,
        &tenancy::NewApiKey {
            key_id: &key.key_id,
            key_hash: &key.secret_hash,
            name: Some("test admin"),
            owner_user_id: user.id,
            scopes: &scopes,
            expires_at: None,
        },
    )
    .await
    .expect("admin key");
    basic("admin", &key.token)
}

/// `Basic base64(user:secret)`.
pub fn basic(user: &str, secret: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}")))
}

pub async fn fresh_db() -> String {
    aerugo_db::testing::fresh_database().await.expect("fresh test database (is Postgres running?)")
}

/// A registry on a fresh database with blobs in a temporary directory.
pub async fn fs_registry() -> TestRegistry {
    fs_registry_with(Settings { redirect: RedirectMode::Proxy, ..Settings::default() }).await
}

pub async fn fs_registry_with(settings: Settings) -> TestRegistry {
    let database_url = fresh_db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = AnyStore::Fs(FsStore::new(dir.path()).await.expect("fs store"));
    let pool = aerugo_db::pool(&database_url, 8).expect("pool");
    let admin = seed_admin(&database_url).await;
    TestRegistry {
        auth: test_auth(&database_url),
        registry: web::Data::new(Registry::new(pool, store, settings)),
        database_url,
        admin,
        _dir: Some(dir),
    }
}

/// S3 settings from the environment `scripts/dev.sh test` sets up (a local Garage), with a
/// bucket of the test's own; `None` when no S3 test server was configured.
pub async fn s3_config() -> Option<S3Config> {
    std::env::var("AERUGO_TEST_S3").ok()?;
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} must be set when AERUGO_TEST_S3 is"));
    let config = S3Config {
        endpoint: Some(var("AERUGO_S3_ENDPOINT")),
        bucket: format!("t-{}", uuid::Uuid::new_v4().simple()),
        region: var("AERUGO_S3_REGION"),
        access_key_id: var("AERUGO_S3_ACCESS_KEY_ID"),
        secret_access_key: var("AERUGO_S3_SECRET_ACCESS_KEY"),
        path_style: true,
    };
    S3Store::new(&config).ensure_bucket().await.expect("create test bucket");
    Some(config)
}

/// A registry node on `database_url` whose blobs live in the S3 bucket of `config`.
pub async fn s3_registry(database_url: &str, config: &S3Config, redirect: RedirectMode) -> TestRegistry {
    let pool = aerugo_db::pool(database_url, 8).expect("pool");
    let settings = Settings { redirect, presign_ttl: Duration::from_secs(60), ..Settings::default() };
    TestRegistry {
        registry: web::Data::new(Registry::new(pool, AnyStore::S3(S3Store::new(config)), settings)),
        auth: test_auth(database_url),
        admin: seed_admin(database_url).await,
        database_url: database_url.to_owned(),
        _dir: None,
    }
}

/// Fresh metrics.
pub fn metrics() -> web::Data<aerugo_dataplane::metrics::Metrics> {
    web::Data::new(aerugo_dataplane::metrics::Metrics::new().expect("metrics"))
}

pub trait App: Service<actix_http::Request, Response = ServiceResponse<BoxBody>, Error = actix_web::Error> {}
impl<S> App for S where S: Service<actix_http::Request, Response = ServiceResponse<BoxBody>, Error = actix_web::Error> {}

/// The real application of `t`; requests without an `Authorization` header are sent as the
/// site administrator.
pub async fn app(t: &TestRegistry) -> impl App + use<> {
    app_with(&t.registry, &t.auth, &metrics(), Some(&t.admin)).await
}

/// The real application of `t`, sending requests exactly as given (anonymous unless they
/// carry credentials).
pub async fn raw_app(t: &TestRegistry) -> impl App + use<> {
    app_with(&t.registry, &t.auth, &metrics(), None).await
}

/// The real application around `registry` and `auth`, recording into `metrics`, adding
/// `default_auth` to requests that carry no credentials.
pub async fn app_with(
    registry: &web::Data<Registry>,
    auth: &web::Data<Auth>,
    metrics: &web::Data<aerugo_dataplane::metrics::Metrics>,
    default_auth: Option<&str>,
) -> impl App + use<> {
    let service = test::init_service(server::app(registry.clone(), auth.clone(), metrics.clone())).await;
    BoxedApp { inner: service, default_auth: default_auth.map(|a| HeaderValue::from_str(a).expect("header")) }
}

/// Adapts the app's concrete body type to `BoxBody` so helpers can be written once, and adds
/// default credentials.
pub struct BoxedApp<S> {
    inner: S,
    default_auth: Option<HeaderValue>,
}

impl<S, B> Service<actix_http::Request> for BoxedApp<S>
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>>>>;

    actix_web::dev::forward_ready!(inner);

    fn call(&self, mut req: actix_http::Request) -> Self::Future {
        if let Some(auth) = &self.default_auth
            && !req.headers().contains_key("authorization")
        {
            req.headers_mut().insert(actix_web::http::header::AUTHORIZATION, auth.clone());
        }
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map(|r| r.map_into_boxed_body()) })
    }
}

/// A response read whole: status, headers and body.
pub struct Reply {
    pub status: StatusCode,
    /// The length the response declares (what `Content-Length` says on the wire).
    pub length: Option<u64>,
    pub headers: actix_web::http::header::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// The OCI error code of an error body.
    pub fn error_code(&self) -> String {
        let v = self.json();
        let first = &v["errors"][0];
        assert!(first["message"].is_string(), "error body lacks message: {v}");
        first["code"].as_str().unwrap_or_else(|| panic!("no error code in {v}")).to_owned()
    }
}

pub async fn send(app: &impl App, req: TestRequest) -> Reply {
    let response = test::call_service(app, req.to_request()).await;
    let status = response.status();
    let headers = response.headers().clone();
    let length = match response.response().body().size() {
        actix_web::body::BodySize::Sized(n) => Some(n),
        _ => None,
    };
    let body = test::read_body(response).await;
    Reply { status, length, headers, body }
}

pub async fn call(app: &impl App, method: Method, uri: &str) -> Reply {
    send(app, TestRequest::default().method(method).uri(uri)).await
}

/// Uploads `data` monolithically (`POST ?digest=`) and returns its digest.
pub async fn push_blob(app: &impl App, repo: &str, data: &[u8]) -> Digest {
    let digest = Digest::sha256_of(data);
    let reply = send(
        app,
        TestRequest::post()
            .uri(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
            .insert_header(("content-type", "application/octet-stream"))
            .set_payload(data.to_vec()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "blob push: {:?}", reply.body);
    digest
}

/// An OCI image manifest over a config and layers already pushed.
pub fn image_manifest(config: &(Digest, usize), layers: &[(Digest, usize)]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.0, "size": config.1},
        "layers": layers.iter().map(|(d, s)| json!({"mediaType": OCI_LAYER, "digest": d, "size": s})).collect::<Vec<_>>(),
    }))
    .expect("json")
}

pub async fn put_manifest(app: &impl App, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Reply {
    send(
        app,
        TestRequest::put()
            .uri(&format!("/v2/{repo}/manifests/{reference}"))
            .insert_header(("content-type", media_type))
            .set_payload(body.to_vec()),
    )
    .await
}

/// Pushes a small image (config + one layer) tagged `tag`; returns the manifest digest.
pub async fn push_image(app: &impl App, repo: &str, tag: &str, seed: u8) -> Digest {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}").into_bytes();
    let layer = vec![seed; 1000 + usize::from(seed)];
    let c = push_blob(app, repo, &config).await;
    let l = push_blob(app, repo, &layer).await;
    let manifest = image_manifest(&(c, config.len()), &[(l, layer.len())]);
    let reply = put_manifest(app, repo, tag, OCI_MANIFEST, &manifest).await;
    assert_eq!(reply.status, StatusCode::CREATED, "manifest push: {:?}", reply.body);
    Digest::sha256_of(&manifest)
}

/// Starts an upload session; returns its Location.
pub async fn start_upload(app: &impl App, repo: &str) -> String {
    let reply = call(app, Method::POST, &format!("/v2/{repo}/blobs/uploads/")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    reply.header("location").expect("location").to_owned()
}

/// Sends `data` to the upload at `location` in `chunk`-byte PATCHes with `Content-Range`, each
/// to the next of `nodes` in turn; returns the Location to close the upload at.
pub async fn patch_in_chunks<A: App>(nodes: &[&A], location: &str, data: &[u8], chunk: usize) -> String {
    let mut location = location.to_owned();
    for (i, part) in data.chunks(chunk).enumerate() {
        let start = i * chunk;
        let reply = send(
            nodes[i % nodes.len()],
            TestRequest::patch()
                .uri(&location)
                .insert_header(("content-range", format!("{start}-{}", start + part.len() - 1)))
                .set_payload(part.to_vec()),
        )
        .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "chunk {i}: {:?}", reply.body);
        location = reply.header("location").expect("location").to_owned();
    }
    location
}

/// Deterministic pseudo-random bytes.
pub fn bytes_of(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

/// A user with a password, and the `Authorization` value that presents it.
pub struct User {
    pub name: String,
    pub password: String,
    pub basic: String,
}

/// Creates user `name` (password `pw-<name>-secret`).
pub async fn seed_user(database_url: &str, name: &str, site_admin: bool) -> User {
    let password = format!("pw-{name}-secret");
    let hash = aerugo_auth::password::hash(&password).expect("hash");
    let pool = aerugo_db::pool(database_url, 1).expect("pool");
    let client = pool.get().await.expect("client");
    tenancy::create_user(&client, name, None, Some(&hash), site_admin, "api").await.expect("user").expect("new user");
    User { name: name.to_owned(), basic: basic(name, &password), password }
}

/// Creates organization `name` owned by `owner`.
pub async fn seed_org(database_url: &str, name: &str, owner: &str) {
    let pool = aerugo_db::pool(database_url, 1).expect("pool");
    let client = pool.get().await.expect("client");
    let owner = tenancy::user(&client, owner).await.expect("query").expect("owner exists");
    let org =
        tenancy::NewOrganization { name, display_name: None, auto_create_repos: true, default_visibility: "private" };
    tenancy::create_organization(&client, &org, owner.id).await.expect("org").expect("new org");
}

/// Sends `req` with `Authorization: auth`.
pub async fn send_as(app: &impl App, auth: &str, req: TestRequest) -> Reply {
    send(app, req.insert_header(("authorization", auth))).await
}

/// A bearer token for `scopes` from the token endpoint, asked with `auth` (or anonymously).
pub async fn token(app: &impl App, auth: Option<&str>, scopes: &[&str]) -> String {
    let query: String = scopes.iter().map(|s| format!("&scope={}", urlencode(s))).collect();
    let mut req = TestRequest::get().uri(&format!("/v2/token?service=aerugo{query}"));
    if let Some(auth) = auth {
        req = req.insert_header(("authorization", auth));
    }
    let reply = send(app, req).await;
    assert_eq!(reply.status, StatusCode::OK, "token request: {:?}", reply.body);
    let body = reply.json();
    assert_eq!(body["token"], body["access_token"]);
    format!("Bearer {}", body["token"].as_str().expect("token"))
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The Redis URL `scripts/dev.sh test` provides, if any.
pub fn test_redis_url() -> Option<String> {
    std::env::var("AERUGO_TEST_REDIS_URL").ok().filter(|u| !u.is_empty())
}

/// A node's cache on the test Redis under `prefix` (nodes given the same prefix share
/// generations and entries), recording into `metrics`; waits until it serves.
pub async fn redis_cache(
    url: &str,
    prefix: &str,
    metrics: &aerugo_dataplane::metrics::Metrics,
) -> std::sync::Arc<aerugo_dataplane::cache::Cache> {
    use aerugo_dataplane::cache::{Cache, CacheMode, CacheSettings, RedisSettings};
    let settings = CacheSettings {
        mode: CacheMode::Redis(RedisSettings {
            url: url.to_owned(),
            timeout: Duration::from_millis(500),
            prefix: prefix.to_owned(),
        }),
        ..CacheSettings::default()
    };
    let cache = std::sync::Arc::new(Cache::new(&settings, metrics.cache.clone()).expect("cache"));
    assert!(cache.wait_serving(Duration::from_secs(5)).await, "the cache did not connect to Redis at {url}");
    cache
}

/// The value of the sample `name{labels}` in the text exposition of `metrics` (0 if absent).
pub fn sample(metrics: &aerugo_dataplane::metrics::Metrics, name_and_labels: &str) -> f64 {
    let pool = aerugo_dataplane::metrics::PoolStatus { in_use: 0, idle: 0, waiting: 0, max: 0 };
    metrics
        .render(pool)
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Another node of filesystem registry `t` (same database and blob directory) with `cache`.
pub async fn node(t: &TestRegistry, cache: std::sync::Arc<aerugo_dataplane::cache::Cache>) -> web::Data<Registry> {
    let store = AnyStore::Fs(FsStore::new(t.storage_dir()).await.expect("store"));
    let pool = aerugo_db::pool(&t.database_url, 8).expect("pool");
    let settings = Settings { redirect: RedirectMode::Proxy, ..Settings::default() };
    web::Data::new(Registry::new(pool, store, settings).with_cache(cache))
}
