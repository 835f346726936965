//! The S3 backend against a real S3 server (Garage, started by `scripts/dev.sh test`):
//! presigned pulls, multipart uploads with parts under and over the minimum, proxy mode with
//! ranges, and an upload begun on one node and finished on another.

use actix_web::http::{Method, StatusCode};
use actix_web::test::TestRequest;
use aerugo_dataplane::config::RedirectMode;
use aerugo_oci::Digest;
use aerugo_storage::{S3Config, S3Store};

use crate::harness::*;

macro_rules! require_s3 {
    () => {
        match s3_config().await {
            Some(config) => config,
            None => {
                aerugo_test_support::skip("Garage (AERUGO_TEST_S3)");
                return;
            }
        }
    };
}

#[actix_web::test]
async fn presigned_pull_redirects_to_a_working_url() {
    let config = require_s3!();
    let db = fresh_db().await;
    let registry = s3_registry(&db, &config, RedirectMode::Presign).await;
    let app = app(&registry).await;
    let data = bytes_of(100_000, 11);
    let digest = push_blob(&app, "s3/presign", &data).await;
    let reply = call(&app, Method::GET, &format!("/v2/s3/presign/blobs/{digest}")).await;
    assert_eq!(reply.status, StatusCode::TEMPORARY_REDIRECT);
    assert!(reply.body.is_empty(), "a presigned pull costs the node one small response");
    let url = reply.header("location").expect("location").to_owned();
    let fetched = tokio::process::Command::new("curl").args(["-sf", &url]).output().await.expect("curl");
    assert!(fetched.status.success(), "presigned URL refused: {url}");
    assert_eq!(Digest::sha256_of(&fetched.stdout), digest);
}

#[actix_web::test]
async fn multipart_upload_across_two_nodes_with_small_chunks() {
    let config = require_s3!();
    let db = fresh_db().await;
    let node_a = app(&s3_registry(&db, &config, RedirectMode::Proxy).await).await;
    let node_b = app(&s3_registry(&db, &config, RedirectMode::Proxy).await).await;
    // 12 MiB + a bit: two full 5 MiB parts and a last part, sent in 3 MiB chunks so every
    // request ends with a tail below the part minimum that the next node must pick up.
    let data = bytes_of(12 * 1024 * 1024 + 12_345, 12);
    let location = start_upload(&node_a, "s3/multi").await;
    let location = patch_in_chunks(&[&node_a, &node_b], &location, &data, 3 * 1024 * 1024).await;
    let digest = Digest::sha256_of(&data);
    let done = call(&node_b, Method::PUT, &format!("{location}?digest={digest}")).await;
    assert_eq!(done.status, StatusCode::CREATED, "{:?}", done.body);
    let pulled = call(&node_a, Method::GET, &format!("/v2/s3/multi/blobs/{digest}")).await;
    assert_eq!(pulled.status, StatusCode::OK);
    assert_eq!(Digest::sha256_of(&pulled.body), digest);
    let part = send(
        &node_a,
        TestRequest::get()
            .uri(&format!("/v2/s3/multi/blobs/{digest}"))
            .insert_header(("range", "bytes=5242870-5242889")),
    )
    .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body, data[5_242_870..5_242_890]);
}

#[actix_web::test]
async fn digest_mismatch_and_cancel_release_multipart_storage() {
    let config = require_s3!();
    let db = fresh_db().await;
    let app = app(&s3_registry(&db, &config, RedirectMode::Proxy).await).await;
    let data = bytes_of(6 * 1024 * 1024, 13);
    let location = start_upload(&app, "s3/abort").await;
    let reply = send(&app, TestRequest::patch().uri(&location).set_payload(data.clone())).await;
    let location = reply.header("location").expect("location").to_owned();
    let wrong = Digest::sha256_of(b"wrong");
    let reply = call(&app, Method::PUT, &format!("{location}?digest={wrong}")).await;
    assert_eq!(reply.error_code(), "DIGEST_INVALID");
    for d in [wrong, Digest::sha256_of(&data)] {
        assert_eq!(call(&app, Method::HEAD, &format!("/v2/s3/abort/blobs/{d}")).await.status, StatusCode::NOT_FOUND);
    }
    let store = aerugo_storage::S3Store::new(&config);
    assert_eq!(store.list_keys("").await.expect("list"), Vec::<String>::new());
    assert_eq!(store.multipart_uploads().await.expect("list"), Vec::<String>::new());

    let location = start_upload(&app, "s3/abort").await;
    send(&app, TestRequest::patch().uri(&location).set_payload(data)).await;
    assert_eq!(call(&app, Method::DELETE, &location).await.status, StatusCode::NO_CONTENT);
    assert_eq!(store.list_keys("").await.expect("list"), Vec::<String>::new());
    assert_eq!(store.multipart_uploads().await.expect("list"), Vec::<String>::new());
}

#[actix_web::test]
async fn a_blob_pushed_twice_is_stored_once_and_its_second_upload_released() {
    let config = require_s3!();
    let db = fresh_db().await;
    let app = app(&s3_registry(&db, &config, RedirectMode::Proxy).await).await;
    let data = bytes_of(6 * 1024 * 1024, 14);
    let digest = Digest::sha256_of(&data);
    for repo in ["s3/first", "s3/second"] {
        let location = start_upload(&app, repo).await;
        let reply = send(&app, TestRequest::patch().uri(&location).set_payload(data.clone())).await;
        let location = reply.header("location").expect("location").to_owned();
        assert_eq!(call(&app, Method::PUT, &format!("{location}?digest={digest}")).await.status, StatusCode::CREATED);
        let pulled = call(&app, Method::GET, &format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(Digest::sha256_of(&pulled.body), digest);
    }
    let store = aerugo_storage::S3Store::new(&config);
    assert_eq!(store.list_keys("").await.expect("list"), vec![aerugo_storage::blob_key(&digest)]);
    assert_eq!(store.multipart_uploads().await.expect("list"), Vec::<String>::new());
}

#[actix_web::test]
async fn parts_uploaded_concurrently_are_assembled_in_order() {
    let config = require_s3!();
    let db = fresh_db().await;
    let app = app(&s3_registry(&db, &config, RedirectMode::Proxy).await).await;
    // One request carrying three full parts and a tail: parts overlap in flight, and the stored
    // object must still be the bytes in order (the digest check alone would not notice).
    let data = bytes_of(17 * 1024 * 1024 + 4321, 15);
    let location = start_upload(&app, "s3/order").await;
    let reply = send(&app, TestRequest::patch().uri(&location).set_payload(data.clone())).await;
    let location = reply.header("location").expect("location").to_owned();
    let digest = Digest::sha256_of(&data);
    assert_eq!(call(&app, Method::PUT, &format!("{location}?digest={digest}")).await.status, StatusCode::CREATED);
    let pulled = call(&app, Method::GET, &format!("/v2/s3/order/blobs/{digest}")).await;
    assert_eq!(pulled.body.len(), data.len());
    assert!(pulled.body == data, "stored object differs from the uploaded bytes");
}

/// An organization with a dedicated bucket (`organizations.bucket`, what the operator writes
/// for `Organization.spec.storage`) keeps its blobs there: uploads (chunked and monolithic) land
/// in it, pulls and presigned redirects read from it, a layer shared with an organization on the
/// registry's bucket is stored once in each, and a mount across the two copies the object.
#[actix_web::test]
async fn a_dedicated_bucket_holds_its_organizations_blobs() {
    let config = require_s3!();
    let db = fresh_db().await;
    let registry = s3_registry(&db, &config, RedirectMode::Presign).await;
    let app = app(&registry).await;
    let dedicated = S3Config { bucket: format!("d-{}", uuid::Uuid::new_v4().simple()), ..config.clone() };
    let own = S3Store::new(&dedicated);
    own.ensure_bucket().await.expect("dedicated bucket");
    let shared = S3Store::new(&config);
    let client = aerugo_db::pool(&db, 1).expect("pool").get().await.expect("client");
    client
        .execute("INSERT INTO organizations (name, bucket) VALUES ('own', $1)", &[&dedicated.bucket])
        .await
        .expect("organization");

    // The same image in both organizations: one object per bucket.
    push_image(&app, "own/app", "v1", 7).await;
    push_image(&app, "plain/app", "v1", 7).await;
    let in_own = own.list_keys("").await.expect("list");
    assert_eq!(in_own.len(), 2, "config and layer: {in_own:?}");
    assert_eq!(shared.list_keys("").await.expect("list"), in_own, "the registry's bucket holds its own copies");

    // A chunked upload (multipart, over the part minimum) goes to the dedicated bucket too.
    let data = bytes_of(6 * 1024 * 1024, 21);
    let digest = Digest::sha256_of(&data);
    let location = start_upload(&app, "own/app").await;
    let reply = send(&app, TestRequest::patch().uri(&location).set_payload(data.clone())).await;
    let location = reply.header("location").expect("location").to_owned();
    assert_eq!(call(&app, Method::PUT, &format!("{location}?digest={digest}")).await.status, StatusCode::CREATED);
    assert!(own.list_keys("").await.expect("list").contains(&aerugo_storage::blob_key(&digest)));
    assert!(!shared.list_keys("").await.expect("list").contains(&aerugo_storage::blob_key(&digest)));
    assert_eq!(own.multipart_uploads().await.expect("list"), Vec::<String>::new());
    // Pulls are redirected into the dedicated bucket.
    let reply = call(&app, Method::GET, &format!("/v2/own/app/blobs/{digest}")).await;
    assert_eq!(reply.status, StatusCode::TEMPORARY_REDIRECT);
    let url = reply.header("location").expect("presigned URL").to_owned();
    assert!(url.contains(&dedicated.bucket), "{url}");
    let fetched = tokio::process::Command::new("curl").args(["-sf", &url]).output().await.expect("curl");
    assert!(fetched.status.success(), "presigned URL refused: {url}");
    assert_eq!(Digest::sha256_of(&fetched.stdout), digest);

    // A mount from the registry's bucket into the dedicated one copies the object.
    let only_plain = bytes_of(300_000, 22);
    let d = push_blob(&app, "plain/src", &only_plain).await;
    let reply = call(&app, Method::POST, &format!("/v2/own/copy/blobs/uploads/?mount={d}&from=plain/src")).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert!(own.list_keys("").await.expect("list").contains(&aerugo_storage::blob_key(&d)));
    let rows: i64 = client
        .query_one("SELECT COUNT(*) FROM blob_objects WHERE digest = $1", &[&d.to_string()])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 2, "one object per location");
}

/// S3 unreachable: pushes fail fast with `503 UNAVAILABLE` and `Retry-After`, readiness says
/// so, and no metadata is left pointing at storage that holds nothing.
#[actix_web::test]
async fn unreachable_s3_fails_clearly_and_records_nothing() {
    let db = fresh_db().await;
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let config = S3Config {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        bucket: "nowhere".into(),
        region: "us-east-1".into(),
        access_key_id: "id".into(),
        secret_access_key: "secret".into(),
        path_style: true,
    };
    let registry = s3_registry(&db, &config, RedirectMode::Presign).await;
    let app = app(&registry).await;
    let data = bytes_of(6 * 1024 * 1024, 31);
    let digest = Digest::sha256_of(&data);
    let started = std::time::Instant::now();
    let reply = send(
        &app,
        TestRequest::post()
            .uri(&format!("/v2/down/app/blobs/uploads/?digest={digest}"))
            .insert_header(("content-type", "application/octet-stream"))
            .set_payload(data.clone()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error_code(), "UNAVAILABLE");
    assert!(reply.header("retry-after").is_some());
    let location = start_upload(&app, "down/app").await;
    let reply = send(&app, TestRequest::patch().uri(&location).set_payload(data)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "failures are fast: {:?}", started.elapsed());
    assert_eq!(call(&app, Method::GET, "/readyz").await.status, StatusCode::SERVICE_UNAVAILABLE);
    let client = aerugo_db::pool(&db, 1).expect("pool").get().await.expect("client");
    for table in ["blobs", "blob_objects", "repository_blobs"] {
        let n: i64 = client.query_one(&format!("SELECT COUNT(*) FROM {table}"), &[]).await.expect("count").get(0);
        assert_eq!(n, 0, "{table} holds nothing");
    }
    assert_eq!(call(&app, Method::HEAD, &format!("/v2/down/app/blobs/{digest}")).await.status, StatusCode::NOT_FOUND);
}

/// "The registry MAY include an OCI-Chunk-Min-Length header" on a new session: on S3 the part
/// minimum (smaller chunks are buffered between requests; the filesystem store has none). Blob
/// HEAD carries `Content-Length` and `Docker-Content-Digest`, and a `Range` read is `206` with
/// `Content-Range` both streamed (Proxy) and at the presigned URL a pull is redirected to.
#[actix_web::test]
async fn chunk_minimum_head_headers_and_ranges_on_s3() {
    let config = require_s3!();
    let db = fresh_db().await;
    let proxied = app(&s3_registry(&db, &config, RedirectMode::Proxy).await).await;
    let presigned = app(&s3_registry(&db, &config, RedirectMode::Presign).await).await;
    let session = call(&proxied, Method::POST, "/v2/s3/edges/blobs/uploads/").await;
    assert_eq!(session.status, StatusCode::ACCEPTED);
    assert_eq!(session.header("oci-chunk-min-length"), Some("5242880"));
    let fs = fs_registry().await;
    let on_fs = call(&app(&fs).await, Method::POST, "/v2/fs/edges/blobs/uploads/").await;
    assert!(on_fs.header("oci-chunk-min-length").is_none(), "the filesystem store takes any chunk");

    let data = bytes_of(300_000, 31);
    let digest = push_blob(&proxied, "s3/edges", &data).await;
    for node in [&proxied, &presigned] {
        let head = call(node, Method::HEAD, &format!("/v2/s3/edges/blobs/{digest}")).await;
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.length, Some(300_000));
        assert_eq!(head.header("docker-content-digest"), Some(digest.as_str()));
    }
    let ranged = |node| {
        send(
            node,
            TestRequest::get().uri(&format!("/v2/s3/edges/blobs/{digest}")).insert_header(("range", "bytes=1000-1999")),
        )
    };
    let part = ranged(&proxied).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.header("content-range"), Some("bytes 1000-1999/300000"));
    assert_eq!(part.body, data[1000..2000]);
    let redirect = ranged(&presigned).await;
    assert_eq!(redirect.status, StatusCode::TEMPORARY_REDIRECT);
    let url = redirect.header("location").expect("location").to_owned();
    let fetched = tokio::process::Command::new("curl")
        .args(["-sf", "-D", "-", "-r", "1000-1999", "-o", "/dev/null", &url])
        .output()
        .await
        .expect("curl");
    let headers = String::from_utf8_lossy(&fetched.stdout).to_lowercase();
    assert!(headers.starts_with("http/1.1 206"), "{headers}");
    assert!(headers.contains("content-range: bytes 1000-1999/300000"), "{headers}");
}
