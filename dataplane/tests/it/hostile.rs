//! Hostile input: numbers chosen to overflow, descriptors that lie about sizes, and a public
//! probe endpoint hammered. Each answers with the spec's error and leaves stored data as it was.

use actix_web::http::{Method, StatusCode};
use actix_web::test::TestRequest;
use serde_json::json;

use crate::harness::*;

/// `Content-Range: 0-18446744073709551615` once overflowed the chunk length (a panic in debug
/// builds, a wrapped length in release): it is refused, and the session goes on.
#[actix_web::test]
async fn a_content_range_whose_length_overflows_is_refused_and_the_session_survives() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let location = start_upload(&app, "hostile/range").await;
    for range in ["0-18446744073709551615", "0-9223372036854775807", "18446744073709551615-18446744073709551615"] {
        let reply = send(
            &app,
            TestRequest::patch().uri(&location).insert_header(("content-range", range)).set_payload(vec![1u8; 10]),
        )
        .await;
        assert!(reply.status.is_client_error(), "{range}: {}", reply.status);
        assert!(!reply.error_code().is_empty(), "{range}: an OCI error body");
    }
    let data = bytes_of(100, 9);
    let chunk = send(
        &app,
        TestRequest::patch().uri(&location).insert_header(("content-range", "0-99")).set_payload(data.clone()),
    )
    .await;
    assert_eq!(chunk.status, StatusCode::ACCEPTED);
    let digest = aerugo_oci::Digest::sha256_of(&data);
    let location = chunk.header("location").expect("location").to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    let done = send(&app, TestRequest::put().uri(&format!("{location}{sep}digest={digest}"))).await;
    assert_eq!(done.status, StatusCode::CREATED);
}

/// A descriptor's size must be the stored blob's (or child manifest's); sizes that add up past
/// 2^64 are refused, not wrapped. Nothing is stored for a refused manifest.
#[actix_web::test]
async fn manifests_whose_descriptor_sizes_lie_are_refused() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let config = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}".to_vec();
    let layer = bytes_of(5000, 3);
    let c = push_blob(&app, "hostile/sizes", &config).await;
    let l = push_blob(&app, "hostile/sizes", &layer).await;
    for (config_size, layer_size) in [(config.len(), layer.len() + 1), (config.len() - 1, layer.len()), (0, 0)] {
        let manifest = image_manifest(&(c.clone(), config_size), &[(l.clone(), layer_size)]);
        let reply = put_manifest(&app, "hostile/sizes", "v1", OCI_MANIFEST, &manifest).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{config_size}/{layer_size}");
        assert_eq!(reply.error_code(), "SIZE_INVALID");
    }
    let huge = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": c, "size": u64::MAX},
        "layers": [{"mediaType": OCI_LAYER, "digest": l, "size": u64::MAX}, {"mediaType": OCI_LAYER, "digest": l, "size": u64::MAX}],
    }))
    .expect("json");
    let reply = put_manifest(&app, "hostile/sizes", "v1", OCI_MANIFEST, &huge).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "SIZE_INVALID");
    assert_eq!(call(&app, Method::GET, "/v2/hostile/sizes/manifests/v1").await.status, StatusCode::NOT_FOUND);
    // An index whose child descriptor has the wrong size is refused the same way.
    let child = push_image(&app, "hostile/sizes", "child", 4).await;
    let child_size = call(&app, Method::GET, &format!("/v2/hostile/sizes/manifests/{child}")).await.body.len() as u64;
    let index = |size: u64| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": child, "size": size, "platform": {"os": "linux", "architecture": "amd64"}}],
        }))
        .expect("json")
    };
    let media = "application/vnd.oci.image.index.v1+json";
    let reply = put_manifest(&app, "hostile/sizes", "multi", media, &index(child_size + 7)).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::BAD_REQUEST, "SIZE_INVALID"));
    let reply = put_manifest(&app, "hostile/sizes", "multi", media, &index(child_size)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "the true size is accepted: {:?}", reply.body);
}

/// `/readyz` is public: however often it is called, the node probes the database and storage
/// at most once per probe period, so its answer within a period is the cached one.
#[actix_web::test]
async fn readyz_probes_at_most_once_per_period() {
    let reg = fs_registry().await;
    let app = raw_app(&reg).await;
    assert_eq!(call(&app, Method::GET, "/readyz").await.status, StatusCode::OK);
    // Storage goes away: callers within the period get the cached answer (no probe ran) ...
    std::fs::rename(reg.storage_dir().join("blobs"), reg.storage_dir().join("gone")).expect("rename");
    let started = std::time::Instant::now();
    for _ in 0..50 {
        assert_eq!(call(&app, Method::GET, "/readyz").await.status, StatusCode::OK);
    }
    assert!(started.elapsed() < aerugo_dataplane::registry::READY_PROBE_TTL, "the loop outlived the period");
    // ... and the first call after it probes again and sees the failure.
    tokio::time::sleep(aerugo_dataplane::registry::READY_PROBE_TTL).await;
    assert_eq!(call(&app, Method::GET, "/readyz").await.status, StatusCode::SERVICE_UNAVAILABLE);
    std::fs::rename(reg.storage_dir().join("gone"), reg.storage_dir().join("blobs")).expect("rename back");
}
