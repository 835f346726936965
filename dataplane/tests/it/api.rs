//! Every endpoint and its error paths, through the real app.

use actix_web::http::{Method, StatusCode};
use actix_web::test::TestRequest;
use aerugo_oci::Digest;
use serde_json::json;

use crate::harness::*;

#[actix_web::test]
async fn invalid_names_tags_and_digests_are_400_with_their_codes() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let cases = [
        ("/v2/UPPER/manifests/latest", "NAME_INVALID"),
        ("/v2/a..b/tags/list", "NAME_INVALID"),
        ("/v2/ok/manifests/-bad-tag", "TAG_INVALID"),
        ("/v2/ok/manifests/sha256:nothex", "DIGEST_INVALID"),
        ("/v2/ok/blobs/sha256:abc", "DIGEST_INVALID"),
        ("/v2/ok/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", "DIGEST_INVALID"),
        ("/v2/ok/referrers/nope", "DIGEST_INVALID"),
    ];
    for (uri, code) in cases {
        let reply = call(&app, Method::GET, uri).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(reply.error_code(), code, "{uri}");
    }
}

#[actix_web::test]
async fn multi_segment_names_route_to_the_right_endpoint() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    // `manifests`, `blobs` and `tags` are valid name components; the suffix decides.
    for repo in ["a", "org/team/app", "x/manifests/y", "x/blobs/uploads/z", "t/tags/list/u"] {
        let digest = push_image(&app, repo, "v1", 3).await;
        let reply = call(&app, Method::GET, &format!("/v2/{repo}/manifests/v1")).await;
        assert_eq!(reply.status, StatusCode::OK, "{repo}");
        assert_eq!(reply.header("docker-content-digest"), Some(digest.as_str()));
        let tags = call(&app, Method::GET, &format!("/v2/{repo}/tags/list")).await.json();
        assert_eq!(tags, json!({"name": repo, "tags": ["v1"]}));
    }
    let catalog = call(&app, Method::GET, "/v2/_catalog").await.json();
    assert_eq!(
        catalog["repositories"],
        json!(["a", "org/team/app", "t/tags/list/u", "x/blobs/uploads/z", "x/manifests/y"])
    );
}

#[actix_web::test]
async fn unknown_paths_and_methods_are_not_500() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    assert_eq!(call(&app, Method::GET, "/v2/foo/bar").await.status, StatusCode::NOT_FOUND);
    assert_eq!(call(&app, Method::GET, "/nope").await.status, StatusCode::NOT_FOUND);
    assert_eq!(call(&app, Method::POST, "/v2/foo/manifests/x").await.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[actix_web::test]
async fn chunked_upload_with_content_range_and_status() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let data = bytes_of(300_000, 1);
    let mut location = start_upload(&app, "chunky").await;
    for (i, chunk) in data.chunks(100_000).enumerate() {
        let start = i * 100_000;
        let reply = send(
            &app,
            TestRequest::patch()
                .uri(&location)
                .insert_header(("content-range", format!("{}-{}", start, start + chunk.len() - 1)))
                .insert_header(("content-type", "application/octet-stream"))
                .set_payload(chunk.to_vec()),
        )
        .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
        assert_eq!(reply.header("range"), Some(format!("0-{}", start + chunk.len() - 1).as_str()));
        assert!(reply.header("docker-upload-uuid").is_some());
        location = reply.header("location").expect("location").to_owned();
    }
    let status = call(&app, Method::GET, &location).await;
    assert_eq!(status.status, StatusCode::NO_CONTENT);
    assert_eq!(status.header("range"), Some("0-299999"));

    let digest = Digest::sha256_of(&data);
    let reply = call(&app, Method::PUT, &format!("{location}?digest={digest}")).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(reply.header("location"), Some(format!("/v2/chunky/blobs/{digest}").as_str()));
    let blob = call(&app, Method::GET, &format!("/v2/chunky/blobs/{digest}")).await;
    assert_eq!(blob.body, data);
    // The session is gone once completed.
    assert_eq!(call(&app, Method::GET, &location).await.error_code(), "BLOB_UPLOAD_UNKNOWN");
}

#[actix_web::test]
async fn streamed_patch_without_content_range_then_empty_put() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let data = bytes_of(1 << 20, 2);
    let location = start_upload(&app, "streamed").await;
    let reply = send(&app, TestRequest::patch().uri(&location).set_payload(data.clone())).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(reply.header("range"), Some("0-1048575"));
    let location = reply.header("location").expect("location").to_owned();
    let digest = Digest::sha256_of(&data);
    let reply = call(&app, Method::PUT, &format!("{location}?digest={digest}")).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let head = call(&app, Method::HEAD, &format!("/v2/streamed/blobs/{digest}")).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.length, Some(1048576));
}

#[actix_web::test]
async fn put_with_final_chunk_completes_the_upload() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let data = bytes_of(5000, 3);
    let location = start_upload(&app, "final").await;
    let reply = send(&app, TestRequest::patch().uri(&location).set_payload(data[..2000].to_vec())).await;
    let location = reply.header("location").expect("location").to_owned();
    let digest = Digest::sha256_of(&data);
    let reply = send(
        &app,
        TestRequest::put()
            .uri(&format!("{location}?digest={digest}"))
            .insert_header(("content-range", "2000-4999"))
            .set_payload(data[2000..].to_vec()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(call(&app, Method::GET, &format!("/v2/final/blobs/{digest}")).await.body, data);
}

#[actix_web::test]
async fn out_of_order_chunk_is_416_and_the_session_stays_resumable() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let data = bytes_of(3000, 4);
    let location = start_upload(&app, "ooo").await;
    let first = send(
        &app,
        TestRequest::patch()
            .uri(&location)
            .insert_header(("content-range", "0-999"))
            .set_payload(data[..1000].to_vec()),
    )
    .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let location = first.header("location").expect("location").to_owned();
    let skipped = send(
        &app,
        TestRequest::patch()
            .uri(&location)
            .insert_header(("content-range", "2000-2999"))
            .set_payload(data[2000..].to_vec()),
    )
    .await;
    assert_eq!(skipped.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(skipped.header("range"), Some("0-999"));
    assert!(skipped.header("location").is_some());
    assert_eq!(skipped.error_code(), "BLOB_UPLOAD_INVALID");
    // A chunk whose body is shorter than its Content-Range is refused and not recorded.
    let short = send(
        &app,
        TestRequest::patch()
            .uri(&location)
            .insert_header(("content-range", "1000-1999"))
            .set_payload(data[1000..1500].to_vec()),
    )
    .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert_eq!(short.error_code(), "SIZE_INVALID");
    // Resume from where the registry says.
    let rest = send(
        &app,
        TestRequest::patch()
            .uri(&location)
            .insert_header(("content-range", "1000-2999"))
            .set_payload(data[1000..].to_vec()),
    )
    .await;
    assert_eq!(rest.status, StatusCode::ACCEPTED);
    let digest = Digest::sha256_of(&data);
    let done = call(&app, Method::PUT, &format!("{location}?digest={digest}")).await;
    assert_eq!(done.status, StatusCode::CREATED);
    assert_eq!(call(&app, Method::GET, &format!("/v2/ooo/blobs/{digest}")).await.body, data);
}

#[actix_web::test]
async fn digest_mismatch_stores_nothing() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let data = b"the real content".to_vec();
    let wrong = Digest::sha256_of(b"something else");
    let reply =
        send(&app, TestRequest::post().uri(&format!("/v2/mm/blobs/uploads/?digest={wrong}")).set_payload(data.clone()))
            .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "DIGEST_INVALID");
    for d in [&wrong, &Digest::sha256_of(&data)] {
        assert_eq!(call(&app, Method::HEAD, &format!("/v2/mm/blobs/{d}")).await.status, StatusCode::NOT_FOUND);
    }

    let location = start_upload(&app, "mm").await;
    let reply = send(&app, TestRequest::put().uri(&format!("{location}?digest={wrong}")).set_payload(data)).await;
    assert_eq!(reply.error_code(), "DIGEST_INVALID");
    assert_eq!(call(&app, Method::HEAD, &format!("/v2/mm/blobs/{wrong}")).await.status, StatusCode::NOT_FOUND);
    let client = aerugo_db::pool(&reg.database_url, 1).expect("pool").get().await.expect("conn");
    let blobs: i64 = client.query_one("SELECT count(*) FROM blobs", &[]).await.expect("count").get(0);
    let uploads: i64 = client.query_one("SELECT count(*) FROM uploads", &[]).await.expect("count").get(0);
    assert_eq!((blobs, uploads), (0, 0));
}

#[actix_web::test]
async fn unknown_and_cancelled_uploads_are_blob_upload_unknown() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    push_image(&app, "up", "v1", 1).await;
    for uri in ["/v2/up/blobs/uploads/not-a-uuid", "/v2/up/blobs/uploads/5f0e2a8e-0000-4000-8000-000000000000"] {
        let reply = call(&app, Method::GET, uri).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.error_code(), "BLOB_UPLOAD_UNKNOWN");
    }
    let location = start_upload(&app, "up").await;
    assert_eq!(call(&app, Method::DELETE, &location).await.status, StatusCode::NO_CONTENT);
    assert_eq!(call(&app, Method::GET, &location).await.error_code(), "BLOB_UPLOAD_UNKNOWN");
    let put = call(&app, Method::PUT, &format!("{location}?digest={}", Digest::sha256_of(b""))).await;
    assert_eq!(put.error_code(), "BLOB_UPLOAD_UNKNOWN");
    // An upload of one repository is not reachable through another's URL.
    let other = start_upload(&app, "up").await.replace("/v2/up/", "/v2/elsewhere/");
    assert_eq!(call(&app, Method::GET, &other).await.status, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn expired_uploads_are_removed_with_their_storage() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let location = start_upload(&app, "exp").await;
    send(&app, TestRequest::patch().uri(&location).set_payload(vec![7u8; 1000])).await;
    let client = aerugo_db::pool(&reg.database_url, 1).expect("pool").get().await.expect("conn");
    client.execute("UPDATE uploads SET expires_at = now() - interval '1 second'", &[]).await.expect("expire");
    assert_eq!(reg.registry.expire_uploads().await.expect("sweep"), 1);
    assert_eq!(call(&app, Method::GET, &location).await.error_code(), "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(reg.registry.expire_uploads().await.expect("sweep"), 0);
}

#[actix_web::test]
async fn cross_repository_mount() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let digest = push_blob(&app, "src/repo", b"shared layer").await;
    let reply = call(&app, Method::POST, &format!("/v2/dst/repo/blobs/uploads/?mount={digest}&from=src/repo")).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.header("location"), Some(format!("/v2/dst/repo/blobs/{digest}").as_str()));
    assert_eq!(call(&app, Method::GET, &format!("/v2/dst/repo/blobs/{digest}")).await.body, "shared layer");
    // Mounting what the source does not have falls back to a new upload session.
    let absent = Digest::sha256_of(b"absent");
    let reply = call(&app, Method::POST, &format!("/v2/dst/repo/blobs/uploads/?mount={absent}&from=src/repo")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert!(reply.header("location").expect("location").contains("/blobs/uploads/"));
}

#[actix_web::test]
async fn blob_ranges_and_head() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let data = bytes_of(10_000, 5);
    let digest = push_blob(&app, "ranges", &data).await;
    let uri = format!("/v2/ranges/blobs/{digest}");
    let head = call(&app, Method::HEAD, &uri).await;
    assert_eq!(head.length, Some(10000));
    assert_eq!(head.header("docker-content-digest"), Some(digest.as_str()));
    assert!(head.body.is_empty());
    let part = send(&app, TestRequest::get().uri(&uri).insert_header(("range", "bytes=100-199"))).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.header("content-range"), Some("bytes 100-199/10000"));
    assert_eq!(part.body, data[100..200]);
    let tail = send(&app, TestRequest::get().uri(&uri).insert_header(("range", "bytes=-10"))).await;
    assert_eq!(tail.body, data[9990..]);
    let beyond = send(&app, TestRequest::get().uri(&uri).insert_header(("range", "bytes=10000-"))).await;
    assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(beyond.header("content-range"), Some("bytes */10000"));
}

#[actix_web::test]
async fn blob_delete_is_refused_while_a_manifest_uses_it() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let config = b"{}".to_vec();
    let c = push_blob(&app, "del", &config).await;
    let manifest = image_manifest(&(c.clone(), config.len()), &[]);
    assert_eq!(put_manifest(&app, "del", "v1", OCI_MANIFEST, &manifest).await.status, StatusCode::CREATED);
    let refused = call(&app, Method::DELETE, &format!("/v2/del/blobs/{c}")).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.error_code(), "DENIED");
    let m = Digest::sha256_of(&manifest);
    assert_eq!(call(&app, Method::DELETE, &format!("/v2/del/manifests/{m}")).await.status, StatusCode::ACCEPTED);
    assert_eq!(call(&app, Method::DELETE, &format!("/v2/del/blobs/{c}")).await.status, StatusCode::ACCEPTED);
    let gone = call(&app, Method::GET, &format!("/v2/del/blobs/{c}")).await;
    assert_eq!((gone.status, gone.error_code().as_str()), (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"));
    assert_eq!(call(&app, Method::DELETE, &format!("/v2/del/blobs/{c}")).await.status, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn manifest_validation_errors() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let config = b"{}".to_vec();
    let c = push_blob(&app, "val", &config).await;
    let missing = Digest::sha256_of(b"never pushed");
    let manifest = image_manifest(&(c.clone(), 2), &[(missing.clone(), 12)]);
    let reply = put_manifest(&app, "val", "v1", OCI_MANIFEST, &manifest).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(reply.json()["errors"][0]["detail"], json!(missing.as_str()));

    let ok = image_manifest(&(c, 2), &[]);
    let mismatch = put_manifest(&app, "val", "v1", DOCKER_MANIFEST, &ok).await;
    assert_eq!(mismatch.error_code(), "MANIFEST_INVALID");
    assert_eq!(put_manifest(&app, "val", "v1", OCI_MANIFEST, b"{not json").await.error_code(), "MANIFEST_INVALID");
    let wrong_digest = Digest::sha256_of(b"other");
    let reply = put_manifest(&app, "val", wrong_digest.as_str(), OCI_MANIFEST, &ok).await;
    assert_eq!(reply.error_code(), "DIGEST_INVALID");
    let huge = vec![b' '; 4 * 1024 * 1024 + 1];
    let reply = put_manifest(&app, "val", "big", OCI_MANIFEST, &huge).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.error_code(), "SIZE_INVALID");
    // Nothing of the refused pushes is visible.
    assert_eq!(call(&app, Method::GET, "/v2/val/tags/list").await.json()["tags"], json!([]));
}

#[actix_web::test]
async fn index_requires_its_children_and_protects_them() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let child = push_image(&app, "multi", "amd64", 1).await;
    let child_len = call(&app, Method::GET, &format!("/v2/multi/manifests/{child}")).await.body.len();
    let absent = Digest::sha256_of(b"absent manifest");
    let index = |entries: Vec<(Digest, usize)>| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": entries.iter().map(|(d, s)| json!({"mediaType": OCI_MANIFEST, "digest": d, "size": s,
                "platform": {"os": "linux", "architecture": "amd64"}})).collect::<Vec<_>>(),
        }))
        .expect("json")
    };
    let bad =
        put_manifest(&app, "multi", "all", OCI_INDEX, &index(vec![(child.clone(), child_len), (absent, 9)])).await;
    assert_eq!(bad.error_code(), "MANIFEST_BLOB_UNKNOWN");
    let good = index(vec![(child.clone(), child_len)]);
    assert_eq!(put_manifest(&app, "multi", "all", OCI_INDEX, &good).await.status, StatusCode::CREATED);
    let got = call(&app, Method::GET, "/v2/multi/manifests/all").await;
    assert_eq!(got.header("content-type"), Some(OCI_INDEX));
    assert_eq!(got.body, good);
    let refused = call(&app, Method::DELETE, &format!("/v2/multi/manifests/{child}")).await;
    assert_eq!(refused.error_code(), "DENIED");
}

#[actix_web::test]
async fn docker_schema2_is_stored_and_served_byte_exact() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let c = push_blob(&app, "docker", &config).await;
    // Unusual whitespace and key order must survive untouched.
    let body = format!(
        "{{\n   \"schemaVersion\": 2,\n   \"mediaType\": \"{DOCKER_MANIFEST}\",\n   \"config\": {{\"mediaType\": \"application/vnd.docker.container.image.v1+json\", \"size\": {}, \"digest\": \"{c}\"}},\n   \"layers\": []\n}}",
        config.len()
    );
    assert_eq!(put_manifest(&app, "docker", "v2", DOCKER_MANIFEST, body.as_bytes()).await.status, StatusCode::CREATED);
    let got = call(&app, Method::GET, "/v2/docker/manifests/v2").await;
    assert_eq!(got.body, body.as_bytes());
    assert_eq!(got.header("content-type"), Some(DOCKER_MANIFEST));
    assert_eq!(got.header("docker-content-digest"), Some(Digest::sha256_of(body.as_bytes()).as_str()));
}

#[actix_web::test]
async fn tags_move_and_delete() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let first = push_image(&app, "moving", "latest", 1).await;
    let second = push_image(&app, "moving", "latest", 2).await;
    assert_ne!(first, second);
    let got = call(&app, Method::HEAD, "/v2/moving/manifests/latest").await;
    assert_eq!(got.header("docker-content-digest"), Some(second.as_str()));
    // The old manifest is still there by digest.
    assert_eq!(call(&app, Method::GET, &format!("/v2/moving/manifests/{first}")).await.status, StatusCode::OK);
    assert_eq!(call(&app, Method::DELETE, "/v2/moving/manifests/latest").await.status, StatusCode::ACCEPTED);
    assert_eq!(call(&app, Method::GET, "/v2/moving/manifests/latest").await.error_code(), "MANIFEST_UNKNOWN");
    assert_eq!(call(&app, Method::GET, &format!("/v2/moving/manifests/{second}")).await.status, StatusCode::OK);
    assert_eq!(call(&app, Method::DELETE, "/v2/moving/manifests/latest").await.status, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn immutable_tags_never_move_or_go() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let first = push_image(&app, "frozen", "v1", 1).await;
    let db = aerugo_db::pool(&reg.database_url, 1).expect("pool");
    db.get()
        .await
        .expect("db")
        .execute("UPDATE repositories SET immutable_tag_patterns = '{v*}' WHERE name = 'frozen'", &[])
        .await
        .expect("patterns");
    // The same manifest again is fine; another one under the tag is refused with 409 DENIED.
    assert_eq!(push_image(&app, "frozen", "v1", 1).await, first);
    let config = b"{\"os\":\"linux\",\"seed\":9}".to_vec();
    let c = push_blob(&app, "frozen", &config).await;
    let manifest = image_manifest(&(c, config.len()), &[]);
    let refused = put_manifest(&app, "frozen", "v1", OCI_MANIFEST, &manifest).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.error_code(), "DENIED");
    assert!(
        refused.json()["errors"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("immutable") && d.contains(first.as_str()))
    );
    let got = call(&app, Method::HEAD, "/v2/frozen/manifests/v1").await;
    assert_eq!(got.header("docker-content-digest"), Some(first.as_str()), "the tag did not move");
    // Neither the tag nor its manifest can be deleted; other tags behave as usual.
    assert_eq!(call(&app, Method::DELETE, "/v2/frozen/manifests/v1").await.status, StatusCode::CONFLICT);
    assert_eq!(call(&app, Method::DELETE, &format!("/v2/frozen/manifests/{first}")).await.status, StatusCode::CONFLICT);
    push_image(&app, "frozen", "v2", 2).await;
    push_image(&app, "frozen", "latest", 3).await;
    push_image(&app, "frozen", "latest", 4).await;
    assert_eq!(call(&app, Method::DELETE, "/v2/frozen/manifests/latest").await.status, StatusCode::ACCEPTED);
}

#[actix_web::test]
async fn pagination_of_tags_and_catalog() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let digest = push_image(&app, "pages", "t0", 1).await;
    let manifest = call(&app, Method::GET, &format!("/v2/pages/manifests/{digest}")).await.body;
    // Byte order, not locale order: upper case before lower case, "1" < "10" < "2".
    let names = ["B", "a", "b", "t0", "t1", "t10", "t2"];
    for tag in names {
        assert_eq!(put_manifest(&app, "pages", tag, OCI_MANIFEST, &manifest).await.status, StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut uri = "/v2/pages/tags/list?n=3".to_owned();
    loop {
        let reply = call(&app, Method::GET, &uri).await;
        let tags: Vec<String> = serde_json::from_value(reply.json()["tags"].clone()).expect("tags");
        assert!(tags.len() <= 3);
        seen.extend(tags);
        match reply.header("link") {
            Some(link) => {
                assert!(link.ends_with("; rel=\"next\""), "{link}");
                uri = link.trim_start_matches('<').split('>').next().expect("link target").to_owned();
            }
            None => break,
        }
    }
    assert_eq!(seen, names);
    let after = call(&app, Method::GET, "/v2/pages/tags/list?last=t1").await.json();
    assert_eq!(after["tags"], json!(["t10", "t2"]));
    assert_eq!(call(&app, Method::GET, "/v2/pages/tags/list?n=0").await.json()["tags"], json!([]));
    assert_eq!(call(&app, Method::GET, "/v2/pages/tags/list?n=x").await.error_code(), "PAGINATION_NUMBER_INVALID");
    assert_eq!(call(&app, Method::GET, "/v2/absent/tags/list").await.error_code(), "NAME_UNKNOWN");

    for repo in ["c/one", "c/two", "c/three"] {
        push_blob(&app, repo, b"x").await;
    }
    let page = call(&app, Method::GET, "/v2/_catalog?n=2").await;
    assert_eq!(page.json()["repositories"], json!(["c/one", "c/three"]));
    assert_eq!(page.header("link"), Some("</v2/_catalog?n=2&last=c%2Fthree>; rel=\"next\""));
    let rest = call(&app, Method::GET, "/v2/_catalog?n=2&last=c%2Fthree").await;
    assert_eq!(rest.json()["repositories"], json!(["c/two", "pages"]));
}

#[actix_web::test]
async fn referrers_with_artifact_type_filter() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let subject = push_image(&app, "refs", "v1", 1).await;
    let subject_len = call(&app, Method::GET, "/v2/refs/manifests/v1").await.body.len();
    let empty = push_blob(&app, "refs", b"{}").await;
    let mut pushed = Vec::new();
    for (artifact_type, note) in [("application/vnd.example.sbom", "sbom"), ("application/vnd.example.sig", "sig")] {
        let body = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_len},
            "annotations": {"note": note},
        }))
        .expect("json");
        let digest = Digest::sha256_of(&body);
        let reply = put_manifest(&app, "refs", digest.as_str(), OCI_MANIFEST, &body).await;
        assert_eq!(reply.status, StatusCode::CREATED);
        assert_eq!(reply.header("oci-subject"), Some(subject.as_str()));
        pushed.push((digest, body.len(), artifact_type));
    }
    let all = call(&app, Method::GET, &format!("/v2/refs/referrers/{subject}")).await;
    assert_eq!(all.header("content-type"), Some(OCI_INDEX));
    assert!(all.header("oci-filters-applied").is_none());
    let index = all.json();
    assert_eq!(index["mediaType"], json!(OCI_INDEX));
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(2));
    let filtered =
        call(&app, Method::GET, &format!("/v2/refs/referrers/{subject}?artifactType=application/vnd.example.sig"))
            .await;
    assert_eq!(filtered.header("oci-filters-applied"), Some("artifactType"));
    let (digest, size, artifact_type) = &pushed[1];
    assert_eq!(
        filtered.json()["manifests"],
        json!([{"mediaType": OCI_MANIFEST, "digest": digest, "size": size, "artifactType": artifact_type, "annotations": {"note": "sig"}}])
    );
    // A subject with no referrers (even an unknown one) gives an empty index.
    let none = call(&app, Method::GET, &format!("/v2/refs/referrers/{}", Digest::sha256_of(b"zzz"))).await;
    assert_eq!(none.status, StatusCode::OK);
    assert_eq!(none.json()["manifests"], json!([]));
}

#[actix_web::test]
async fn health_endpoints() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    assert_eq!(call(&app, Method::GET, "/healthz").await.status, StatusCode::OK);
    assert_eq!(call(&app, Method::GET, "/readyz").await.status, StatusCode::OK);
}

#[actix_web::test]
async fn database_outage_is_503_with_retry_after() {
    let settings = aerugo_dataplane::config::Settings::default();
    let store = aerugo_storage::AnyStore::Fs(
        aerugo_storage::FsStore::new(tempfile::tempdir().expect("dir").keep()).await.expect("fs"),
    );
    // Nothing listens on port 1.
    let pool = aerugo_db::pool("postgres://postgres@127.0.0.1:1/none", 2).expect("pool");
    let registry = actix_web::web::Data::new(aerugo_dataplane::Registry::new(pool, store, settings));
    let auth = test_auth("postgres://postgres@127.0.0.1:1/none");
    let admin = basic("admin", "ak_0000000000000000_0000000000000000000000000000000000000000000000000000000000000000");
    let app = app_with(&registry, &auth, &metrics(), Some(&admin)).await;
    let reply = call(&app, Method::GET, "/v2/x/manifests/latest").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert_eq!(call(&app, Method::GET, "/readyz").await.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[actix_web::test]
async fn concurrent_first_pushes_into_a_new_repository_all_succeed() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    // Clients push layers in parallel; the first requests race to create org and repository.
    let blobs: Vec<Vec<u8>> = (0..8u64).map(|i| bytes_of(1000, i)).collect();
    let pushes = blobs.iter().map(|data| push_blob(&app, "racing/new/repo", data));
    let digests = futures_util::future::join_all(pushes).await;
    for digest in digests {
        let head = call(&app, Method::HEAD, &format!("/v2/racing/new/repo/blobs/{digest}")).await;
        assert_eq!(head.status, StatusCode::OK);
    }
}

#[actix_web::test]
async fn locations_use_the_public_url_when_configured() {
    let settings = aerugo_dataplane::config::Settings {
        public_url: Some("https://registry.example.test".into()),
        ..aerugo_dataplane::config::Settings::default()
    };
    let reg = fs_registry_with(settings).await;
    let app = app(&reg).await;
    let location = start_upload(&app, "pub").await;
    assert!(location.starts_with("https://registry.example.test/v2/pub/blobs/uploads/"), "{location}");
    let digest = push_blob(&app, "pub", b"x").await;
    let config = b"{}".to_vec();
    let c = push_blob(&app, "pub", &config).await;
    let reply = put_manifest(&app, "pub", "v1", OCI_MANIFEST, &image_manifest(&(c, 2), &[(digest, 1)])).await;
    assert!(
        reply
            .header("location")
            .is_some_and(|l| l.starts_with("https://registry.example.test/v2/pub/manifests/sha256:"))
    );
}

#[actix_web::test]
async fn metrics_count_requests_by_route_pattern_on_the_admin_app() {
    let reg = fs_registry().await;
    let metrics = actix_web::web::Data::new(aerugo_dataplane::metrics::Metrics::new().expect("metrics"));
    let app = app_with(&reg.registry, &reg.auth, &metrics, Some(&reg.admin)).await;
    push_image(&app, "metered/app", "v1", 1).await;
    for _ in 0..3 {
        call(&app, Method::GET, "/v2/metered/app/manifests/v1").await;
    }
    call(&app, Method::GET, "/v2/metered/app/manifests/absent").await;
    call(&app, Method::GET, "/not/a/route").await;

    let admin = actix_web::test::init_service(aerugo_dataplane::server::admin_app(reg.registry.clone(), metrics)).await;
    let scrape = actix_web::test::call_and_read_body(&admin, TestRequest::get().uri("/metrics").to_request()).await;
    let scrape = String::from_utf8_lossy(&scrape);
    let route = "/v2/{name:.+}/manifests/{reference}";
    for line in [
        format!(r#"aerugo_http_requests_total{{method="GET",route="{route}",status="200"}} 3"#),
        format!(r#"aerugo_http_requests_total{{method="GET",route="{route}",status="404"}} 1"#),
        format!(r#"aerugo_http_requests_total{{method="PUT",route="{route}",status="201"}} 1"#),
        r#"aerugo_http_requests_total{method="GET",route="unmatched",status="404"} 1"#.to_owned(),
        format!(r#"aerugo_http_request_duration_seconds_count{{method="GET",route="{route}"}} 4"#),
        r#"aerugo_db_pool_connections{state="max"} 8"#.to_owned(),
    ] {
        assert!(scrape.contains(&line), "missing {line}\n{scrape}");
    }
    // Raw paths never become labels.
    assert!(!scrape.contains("metered/app"), "{scrape}");
    assert!(scrape.contains("process_resident_memory_bytes"), "{scrape}");
}

/// An organization's quota stops pushes with `DENIED` naming it; usage counts a blob the
/// organization already holds once, so pushing or mounting it again always works; a refused
/// blob leaves nothing stored.
#[actix_web::test]
async fn pushes_stop_at_the_organization_quota_counting_shared_blobs_once() {
    let t = fs_registry().await;
    let app = app(&t).await;
    let held = bytes_of(2000, 1);
    let held_digest = push_blob(&app, "q/one", &held).await;
    let client = aerugo_db::pool(&t.database_url, 1).expect("pool").get().await.expect("client");
    client.execute("UPDATE organizations SET quota_bytes = 3000 WHERE name = 'q'", &[]).await.expect("quota");
    push_blob(&app, "q/two", &held).await;
    let mount = format!("/v2/q/three/blobs/uploads/?mount={held_digest}&from=q/one");
    assert_eq!(call(&app, Method::POST, &mount).await.status, StatusCode::CREATED);

    // 2000 + 2000 > 3000: refused, monolithic or chunked, and nothing is stored.
    let big = bytes_of(2000, 2);
    let digest = Digest::sha256_of(&big);
    let reply = send(
        &app,
        TestRequest::post()
            .uri(&format!("/v2/q/one/blobs/uploads/?digest={digest}"))
            .insert_header(("content-type", "application/octet-stream"))
            .set_payload(big.clone()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.error_code(), "DENIED");
    let message = reply.json()["errors"][0]["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains("q is at its storage quota of 2.9 KiB: 2.0 KiB used; this blob adds 2.0 KiB"),
        "{message}"
    );
    let location = start_upload(&app, "q/one").await;
    let reply = send(&app, TestRequest::patch().uri(&location).set_payload(big.clone())).await;
    let location = reply.header("location").expect("location").to_owned();
    let reply = call(&app, Method::PUT, &format!("{location}?digest={digest}")).await;
    assert_eq!((reply.status, reply.error_code()), (StatusCode::FORBIDDEN, "DENIED".to_owned()));
    assert_eq!(call(&app, Method::HEAD, &format!("/v2/q/one/blobs/{digest}")).await.status, StatusCode::NOT_FOUND);
    let rows: i64 = client
        .query_one("SELECT COUNT(*) FROM blob_objects WHERE digest = $1", &[&digest.to_string()])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 0);

    // Exactly up to the quota fits; then even opening an upload is refused, while a blob the
    // organization holds still mounts.
    push_blob(&app, "q/one", &bytes_of(1000, 3)).await;
    let reply = call(&app, Method::POST, "/v2/q/one/blobs/uploads/").await;
    assert_eq!((reply.status, reply.error_code()), (StatusCode::FORBIDDEN, "DENIED".to_owned()));
    let mount = format!("/v2/q/four/blobs/uploads/?mount={held_digest}&from=q/one");
    assert_eq!(call(&app, Method::POST, &mount).await.status, StatusCode::CREATED);
    // Another organization is not affected.
    push_blob(&app, "other/app", &big).await;
}
