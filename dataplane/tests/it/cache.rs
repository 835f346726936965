//! The pull-path cache: two nodes sharing Redis never serve a tag's old digest after a push
//! one of them acknowledged, deletes are seen at once, a change made by another writer (the
//! operator, SQL) reaches cached decisions through Postgres notifications, and Redis going
//! away fails no request: the node reads Postgres until Redis is back, then resumes under a
//! new epoch.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use actix_web::test::TestRequest;
use actix_web::web;
use aerugo_dataplane::Registry;
use aerugo_dataplane::cache::{Cache, CacheSettings, listen};
use aerugo_dataplane::config::{RedirectMode, Settings};
use aerugo_storage::{AnyStore, FsStore};
use serde_json::json;

use crate::harness::*;

/// A manifest over `config` and `layer` that differs per `round` (an annotation).
fn manifest(config: &(aerugo_oci::Digest, usize), layer: &(aerugo_oci::Digest, usize), round: u32) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.0, "size": config.1},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer.0, "size": layer.1}],
        "annotations": {"round": round.to_string()},
    }))
    .expect("json")
}

#[actix_web::test]
async fn a_tag_moved_on_one_node_is_never_read_old_on_another() {
    let Some(url) = aerugo_test_support::service_env("AERUGO_TEST_REDIS_URL") else { return };
    let t = fs_registry().await;
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let (metrics_a, metrics_b) = (metrics(), metrics());
    let a =
        app_with(&node(&t, redis_cache(&url, &prefix, &metrics_a).await).await, &t.auth, &metrics_a, Some(&t.admin))
            .await;
    let b =
        app_with(&node(&t, redis_cache(&url, &prefix, &metrics_b).await).await, &t.auth, &metrics_b, Some(&t.admin))
            .await;
    let nodes = [&a, &b];

    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = bytes_of(4_000, 7);
    let config = (push_blob(&a, "acme/app", config).await, config.len());
    let layer = (push_blob(&a, "acme/app", &layer).await, layer.len());
    for round in 0..40u32 {
        let body = manifest(&config, &layer, round);
        let writer = nodes[(round % 2) as usize];
        assert_eq!(put_manifest(writer, "acme/app", "latest", OCI_MANIFEST, &body).await.status, StatusCode::CREATED);
        // Both nodes, twice each (the second read is served from the cache).
        for reader in [nodes[((round + 1) % 2) as usize], writer, nodes[((round + 1) % 2) as usize], writer] {
            let got = call(reader, Method::GET, "/v2/acme/app/manifests/latest").await;
            assert_eq!(got.status, StatusCode::OK);
            assert!(got.body == body, "round {round}: a node served an older digest of the tag");
        }
    }
    for m in [&metrics_a, &metrics_b] {
        assert!(sample(m, "aerugo_cache_lookups_total{kind=\"manifest\",result=\"local_hit\"}") >= 20.0);
        assert!(sample(m, "aerugo_cache_redis_up") == 1.0);
    }

    // Blob HEADs cached on node b; deletes through node a are seen by b at once.
    assert_eq!(call(&b, Method::HEAD, &format!("/v2/acme/app/blobs/{}", layer.0)).await.status, StatusCode::OK);
    assert_eq!(call(&b, Method::HEAD, &format!("/v2/acme/app/blobs/{}", layer.0)).await.status, StatusCode::OK);
    assert!(sample(&metrics_b, "aerugo_cache_lookups_total{kind=\"blob\",result=\"local_hit\"}") >= 1.0);
    let tagged = aerugo_oci::Digest::sha256_of(&manifest(&config, &layer, 39));
    assert_eq!(call(&a, Method::DELETE, "/v2/acme/app/manifests/latest").await.status, StatusCode::ACCEPTED);
    assert_eq!(call(&b, Method::GET, "/v2/acme/app/manifests/latest").await.error_code(), "MANIFEST_UNKNOWN");
    assert_eq!(call(&b, Method::GET, &format!("/v2/acme/app/manifests/{tagged}")).await.status, StatusCode::OK);
    for round in 0..40u32 {
        let digest = aerugo_oci::Digest::sha256_of(&manifest(&config, &layer, round));
        call(&a, Method::DELETE, &format!("/v2/acme/app/manifests/{digest}")).await;
    }
    assert_eq!(call(&b, Method::GET, &format!("/v2/acme/app/manifests/{tagged}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(call(&a, Method::DELETE, &format!("/v2/acme/app/blobs/{}", layer.0)).await.status, StatusCode::ACCEPTED);
    assert_eq!(call(&b, Method::HEAD, &format!("/v2/acme/app/blobs/{}", layer.0)).await.status, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn changes_by_other_writers_reach_cached_decisions_through_notifications() {
    let t = fs_registry().await;
    let m = metrics();
    let cache = Arc::new(Cache::new(&CacheSettings::default(), m.cache.clone()).expect("cache"));
    let registry = node(&t, cache.clone()).await;
    actix_web::rt::spawn(listen::run(t.database_url.clone(), cache, t.auth.clone().into_inner()));
    let admin = app_with(&registry, &t.auth, &m, Some(&t.admin)).await;
    let anonymous = app_with(&registry, &t.auth, &m, None).await;
    push_image(&admin, "open/app", "v1", 3).await;
    let db = aerugo_db::pool(&t.database_url, 1).expect("pool").get().await.expect("client");
    let visibility = |v: &'static str| {
        let db = &db;
        async move {
            db.execute("UPDATE repositories SET visibility = $1 WHERE name = 'open/app'", &[&v]).await.expect("update");
        }
    };
    let anonymous_pull = || call(&anonymous, Method::GET, "/v2/open/app/manifests/v1");
    assert_eq!(anonymous_pull().await.status, StatusCode::UNAUTHORIZED);

    // As the operator would: straight to the database.
    visibility("public").await;
    // Up to 5 s for the notification to arrive, polling every 50 ms.
    let settles_at = async |want: StatusCode| {
        for _ in 0..100 {
            if anonymous_pull().await.status == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(settles_at(StatusCode::OK).await, "making the repository public reached the node");
    assert_eq!(anonymous_pull().await.status, StatusCode::OK);
    assert!(sample(&m, "aerugo_cache_lookups_total{kind=\"rights\",result=\"local_hit\"}") >= 1.0);

    visibility("private").await;
    assert!(settles_at(StatusCode::UNAUTHORIZED).await, "making the repository private retired the cached decision");
    assert_eq!(anonymous_pull().await.status, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn management_writes_retire_cached_decisions_before_they_answer() {
    let t = fs_registry().await;
    let app = app(&t).await;
    let anonymous = raw_app(&t).await;
    push_image(&app, "shown/app", "v1", 4).await;
    let root = seed_user(&t.database_url, "root", true).await;
    let patch = |visibility: &str| {
        TestRequest::patch()
            .uri("/api/v1/orgs/shown/repositories/app")
            .insert_header(("authorization", root.basic.as_str()))
            .set_json(json!({ "visibility": visibility }))
    };
    assert_eq!(send(&app, patch("public")).await.status, StatusCode::OK);
    let pull = || call(&anonymous, Method::GET, "/v2/shown/app/manifests/v1");
    assert_eq!(pull().await.status, StatusCode::OK);
    assert_eq!(pull().await.status, StatusCode::OK);
    assert_eq!(send(&app, patch("private")).await.status, StatusCode::OK);
    // No notification listener runs here: the API's own invalidation did it.
    assert_eq!(pull().await.status, StatusCode::UNAUTHORIZED);
}

/// A `redis-server` of the test's own, which it can stop and start.
struct RedisServer {
    port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    fn start(port: u16) -> RedisServer {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (scripts/dev.sh installs it)");
        // Dropping the server kills and reaps the process.
        let server = RedisServer { port, child: Some(child) };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {port}");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[actix_web::test]
async fn redis_going_away_fails_no_request_and_the_cache_resumes_when_it_returns() {
    let t = fs_registry().await;
    let mut redis = RedisServer::start(free_port());
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let m = metrics();
    let cache = redis_cache(&url, "outage", &m).await;
    let registry = node(&t, cache.clone()).await;
    let app = app_with(&registry, &t.auth, &m, Some(&t.admin)).await;

    let config = br#"{"architecture":"arm64","os":"linux"}"#;
    let layer = bytes_of(2_000, 9);
    let config = (push_blob(&app, "acme/outage", config).await, config.len());
    let layer = (push_blob(&app, "acme/outage", &layer).await, layer.len());
    let mut round = 0u32;
    let mut push_and_read = async |reads: usize| {
        round += 1;
        let body = manifest(&config, &layer, round);
        assert_eq!(put_manifest(&app, "acme/outage", "latest", OCI_MANIFEST, &body).await.status, StatusCode::CREATED);
        for _ in 0..reads {
            let got = call(&app, Method::GET, "/v2/acme/outage/manifests/latest").await;
            assert_eq!(got.status, StatusCode::OK, "round {round}: a read failed");
            assert!(got.body == body, "round {round}: an older digest of the tag was served");
            let head = call(&app, Method::HEAD, &format!("/v2/acme/outage/blobs/{}", layer.0)).await;
            assert_eq!(head.status, StatusCode::OK, "round {round}: a blob HEAD failed");
        }
    };
    for _ in 0..5 {
        push_and_read(4).await;
    }
    let hits = |m| sample(m, "aerugo_cache_lookups_total{kind=\"manifest\",result=\"local_hit\"}");
    assert!(hits(&m) >= 10.0);

    redis.stop();
    for _ in 0..10 {
        push_and_read(4).await;
    }
    assert!(!cache.is_serving(), "the node stopped using Redis");
    assert_eq!(sample(&m, "aerugo_cache_redis_up"), 0.0);
    let bypassed = sample(&m, "aerugo_cache_lookups_total{kind=\"tag\",result=\"bypass\"}");
    assert!(bypassed >= 30.0, "reads went to Postgres while Redis was away ({bypassed})");

    let _redis = RedisServer::start(redis.port);
    assert!(cache.wait_serving(Duration::from_secs(5)).await, "the cache resumed once Redis was back");
    let before = hits(&m);
    for _ in 0..5 {
        push_and_read(4).await;
    }
    assert!(hits(&m) > before, "reads are served from the cache again");
    assert!(sample(&m, "aerugo_cache_invalidations_total{origin=\"recovery\",scope=\"epoch\"}") >= 1.0);
}

#[actix_web::test]
async fn a_cached_pull_with_a_verified_token_needs_no_database() {
    let t = fs_registry().await;
    let store = AnyStore::Fs(FsStore::new(t.storage_dir()).await.expect("store"));
    let pool = aerugo_db::pool(&t.database_url, 4).expect("pool");
    let settings = Settings { redirect: RedirectMode::Proxy, ..Settings::default() };
    let registry = web::Data::new(Registry::new(pool.clone(), store, settings));
    let app = app_with(&registry, &t.auth, &metrics(), Some(&t.admin)).await;
    let digest = push_image(&app, "hot/app", "v1", 5).await;
    let bearer = token(&app, Some(&t.admin), &["repository:hot/app:pull"]).await;
    let manifest = send_as(&app, &bearer, TestRequest::get().uri("/v2/hot/app/manifests/v1")).await;
    assert_eq!(manifest.status, StatusCode::OK);
    let layer = manifest.json()["layers"][0]["digest"].as_str().expect("layer").to_owned();
    let head = |uri: String| send_as(&app, &bearer, TestRequest::default().method(Method::HEAD).uri(&uri));
    assert_eq!(head(format!("/v2/hot/app/blobs/{layer}")).await.status, StatusCode::OK);

    // No connection can be had any more: what answers now answered without Postgres.
    pool.close();
    for uri in ["/v2/hot/app/manifests/v1".to_owned(), format!("/v2/hot/app/manifests/{digest}")] {
        assert_eq!(send_as(&app, &bearer, TestRequest::get().uri(&uri)).await.status, StatusCode::OK, "{uri}");
    }
    assert_eq!(head(format!("/v2/hot/app/blobs/{layer}")).await.status, StatusCode::OK);
    // An uncached read does need it, and fails cleanly.
    let uncached = send_as(&app, &bearer, TestRequest::get().uri("/v2/hot/app/manifests/v2")).await;
    assert_eq!(uncached.status, StatusCode::SERVICE_UNAVAILABLE);
}

/// Tag pages are cached only as the default first page: callers sending any `n` and `last`
/// (anonymous ones included) cannot fill Redis with pages nobody else asks for.
#[actix_web::test]
async fn tag_pages_of_arbitrary_n_and_last_are_not_cached() {
    let Some(url) = aerugo_test_support::service_env("AERUGO_TEST_REDIS_URL") else { return };
    let t = fs_registry().await;
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let m = metrics();
    let registry = node(&t, redis_cache(&url, &prefix, &m).await).await;
    let app = app_with(&registry, &t.auth, &m, Some(&t.admin)).await;
    push_image(&app, "acme/pages", "v1", 1).await;
    let port = url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse::<u16>().ok()).unwrap_or(6379);
    let cached = || {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "--scan", "--pattern", &format!("{prefix}:c:*:tags:*")])
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    for _ in 0..2 {
        assert_eq!(call(&app, Method::GET, "/v2/acme/pages/tags/list").await.status, StatusCode::OK);
    }
    assert_eq!(cached(), 1, "the default first page is cached");
    for i in 0..100 {
        let reply = call(&app, Method::GET, &format!("/v2/acme/pages/tags/list?n={}&last=junk-{i}", i % 7 + 1)).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!(cached(), 1, "pages keyed by the caller's n and last are not cached");
}
