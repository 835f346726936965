//! Conformance with the OCI Distribution Spec v1.1, one test per MUST/SHOULD statement (quoted),
//! grouped as the spec's own conformance workflows are: pull, push, content discovery and
//! content management.

use actix_web::http::{Method, StatusCode};
use actix_web::test::TestRequest;
use aerugo_oci::{Algorithm, Digest};
use serde_json::json;

use crate::harness::*;

// --- Pull -----------------------------------------------------------------------------------

/// "GET /v2/ … A 200 OK response from this endpoint indicates that the registry implements
/// this specification."
#[actix_web::test]
async fn end_1_api_version_check_is_200() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    assert_eq!(call(&app, Method::GET, "/v2/").await.status, StatusCode::OK);
    assert_eq!(call(&app, Method::GET, "/v2").await.status, StatusCode::OK);
}

/// "A GET request to an existing manifest URL MUST provide the expected manifest, with a
/// response code that MUST be 200 OK." "The Docker-Content-Digest header … SHOULD match the
/// digest of the manifest." "the Content-Type header SHOULD match what was uploaded."
#[actix_web::test]
async fn pull_manifest_by_tag_and_digest() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let digest = push_image(&app, "pull/me", "tagged", 1).await;
    for reference in ["tagged", digest.as_str()] {
        let reply = call(&app, Method::GET, &format!("/v2/pull/me/manifests/{reference}")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(Digest::sha256_of(&reply.body), digest);
        assert_eq!(reply.header("docker-content-digest"), Some(digest.as_str()));
        assert_eq!(reply.header("content-type"), Some(OCI_MANIFEST));
    }
}

/// "If the manifest is not found in the repository, the response code MUST be 404 Not Found."
/// Also in a repository that does not exist yet but that the caller could push to: by tag and
/// by digest, GET and HEAD, `404 MANIFEST_UNKNOWN`; the same for a missing
/// blob ("If the blob is not found in the registry, the response code MUST be 404 Not Found"),
/// `BLOB_UNKNOWN`.
#[actix_web::test]
async fn pull_missing_manifest_is_404_manifest_unknown() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    push_image(&app, "pull/missing", "here", 1).await;
    let absent = Digest::sha256_of(b"x");
    for repo in ["pull/missing", "pull/never-pushed", "never/pushed"] {
        for reference in ["absent", absent.as_str()] {
            let uri = format!("/v2/{repo}/manifests/{reference}");
            let reply = call(&app, Method::GET, &uri).await;
            assert_eq!(
                (reply.status, reply.error_code().as_str()),
                (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
                "{uri}"
            );
            // (actix-http sends no body for HEAD on the wire.)
            assert_eq!(call(&app, Method::HEAD, &uri).await.status, StatusCode::NOT_FOUND, "HEAD {uri}");
        }
        let uri = format!("/v2/{repo}/blobs/{absent}");
        let reply = call(&app, Method::GET, &uri).await;
        assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"), "{uri}");
        assert_eq!(call(&app, Method::HEAD, &uri).await.status, StatusCode::NOT_FOUND, "HEAD {uri}");
    }
    // Listing the tags of a repository that does not exist is NAME_UNKNOWN ("If the repository
    // does not exist … 404").
    let reply = call(&app, Method::GET, "/v2/never/pushed/tags/list").await;
    assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::NOT_FOUND, "NAME_UNKNOWN"));
}

/// "A HEAD request to an existing manifest or blob URL MUST return 200 OK. A successful
/// response SHOULD contain the digest of the uploaded blob in the header Docker-Content-Digest."
/// A HEAD response carries the length a GET would, and no body.
#[actix_web::test]
async fn head_manifest_and_blob() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let digest = push_image(&app, "head/me", "v1", 1).await;
    let get = call(&app, Method::GET, "/v2/head/me/manifests/v1").await;
    let head = call(&app, Method::HEAD, "/v2/head/me/manifests/v1").await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(head.length, Some(get.body.len() as u64));
    let blob = push_blob(&app, "head/me", b"0123456789").await;
    let head = call(&app, Method::HEAD, &format!("/v2/head/me/blobs/{blob}")).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.length, Some(10));
    assert_eq!(head.header("docker-content-digest"), Some(blob.as_str()));
    let missing = call(&app, Method::HEAD, &format!("/v2/head/me/blobs/{}", Digest::sha256_of(b"no"))).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

/// "A GET request to an existing blob URL MUST provide the expected blob, with a response code
/// that MUST be 200 OK." "If the blob is not found in the repository, the response code MUST be
/// 404 Not Found."
#[actix_web::test]
async fn pull_blob() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let data = bytes_of(70_000, 9);
    let digest = push_blob(&app, "pull/blob", &data).await;
    let reply = call(&app, Method::GET, &format!("/v2/pull/blob/blobs/{digest}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, data);
    let reply = call(&app, Method::GET, &format!("/v2/pull/blob/blobs/{}", Digest::sha256_of(b"n"))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code(), "BLOB_UNKNOWN");
}

// --- Push -----------------------------------------------------------------------------------

/// "POST /v2/<name>/blobs/uploads/ … the registry MUST respond with a 202 Accepted response
/// code and MUST include a Location header." Then "PUT <location>?digest=<digest> … Upon
/// successful completion, the response MUST have code 201 Created and MUST have the following
/// header: Location: <blob-location>".
#[actix_web::test]
async fn push_blob_post_then_put() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let data = b"post then put".to_vec();
    let location = start_upload(&app, "push/two-step").await;
    let digest = Digest::sha256_of(&data);
    let reply = send(
        &app,
        TestRequest::put()
            .uri(&format!("{location}?digest={digest}"))
            .insert_header(("content-type", "application/octet-stream"))
            .set_payload(data.clone()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.header("location"), Some(format!("/v2/push/two-step/blobs/{digest}").as_str()));
    assert_eq!(call(&app, Method::GET, &format!("/v2/push/two-step/blobs/{digest}")).await.body, data);
}

/// "POST /v2/<name>/blobs/uploads/?digest=<digest> … Successful completion of the request MUST
/// return either a 201 Created or a 202 Accepted … and MUST include a Location header."
#[actix_web::test]
async fn push_blob_monolithic_post() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let digest = push_blob(&app, "push/mono", b"single post").await;
    assert_eq!(call(&app, Method::GET, &format!("/v2/push/mono/blobs/{digest}")).await.body, "single post");
}

/// "Each PATCH request MUST contain … Content-Range … the registry MUST respond with 202
/// Accepted … Location … Range: 0-<end-of-range>." "If a chunk is uploaded out of order, the
/// registry MUST respond with a 416 Requested Range Not Satisfiable code."
#[actix_web::test]
async fn push_blob_chunked_in_order_and_out_of_order() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let data = bytes_of(20, 2);
    let location = start_upload(&app, "push/chunks").await;
    let patch = |uri: String, range: &'static str, body: Vec<u8>| {
        TestRequest::patch().uri(&uri).insert_header(("content-range", range)).set_payload(body)
    };
    let first = send(&app, patch(location.clone(), "0-9", data[..10].to_vec())).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(first.header("range"), Some("0-9"));
    let next = first.header("location").expect("location").to_owned();
    let replay = send(&app, patch(next.clone(), "0-9", data[..10].to_vec())).await;
    assert_eq!(replay.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let second = send(&app, patch(next.clone(), "10-19", data[10..].to_vec())).await;
    assert_eq!(second.status, StatusCode::ACCEPTED);
    let digest = Digest::sha256_of(&data);
    assert_eq!(call(&app, Method::PUT, &format!("{next}?digest={digest}")).await.status, StatusCode::CREATED);
}

/// "GET <location> … The response code MUST be 204 No Content … MUST contain a Location header
/// and a Range header."
#[actix_web::test]
async fn upload_status_is_204_with_range() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let location = start_upload(&app, "push/status").await;
    let reply = call(&app, Method::GET, &location).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.header("location").is_some());
    assert_eq!(reply.header("range"), Some("0-0"));
}

/// "If a necessary blob … is not present … the registry MUST reject the manifest … 400 …
/// MANIFEST_BLOB_UNKNOWN"; "PUT /v2/<name>/manifests/<reference> … MUST respond 201 Created
/// … MUST include a Location header."
#[actix_web::test]
async fn push_manifest() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let config = b"{\"os\":\"linux\"}".to_vec();
    let c = push_blob(&app, "push/manifest", &config).await;
    let manifest = image_manifest(&(c, config.len()), &[]);
    let reply = put_manifest(&app, "push/manifest", "v1", OCI_MANIFEST, &manifest).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let digest = Digest::sha256_of(&manifest);
    assert_eq!(reply.header("location"), Some(format!("/v2/push/manifest/manifests/{digest}").as_str()));
    assert_eq!(reply.header("docker-content-digest"), Some(digest.as_str()));
    let unknown = image_manifest(&(Digest::sha256_of(b"?"), 1), &[]);
    let reply = put_manifest(&app, "push/manifest", "v2", OCI_MANIFEST, &unknown).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"));
}

/// "POST …?mount=<digest>&from=<other_namespace> … If the registry has the blob it MUST respond
/// 201 Created … If a registry does not support cross-repository mounting or is unable to mount
/// the requested blob, it SHOULD return a 202."
#[actix_web::test]
async fn mount_blob_from_another_repository() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let digest = push_blob(&app, "mount/src", b"mountable").await;
    let reply = call(&app, Method::POST, &format!("/v2/mount/dst/blobs/uploads/?mount={digest}&from=mount/src")).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let unmountable = Digest::sha256_of(b"elsewhere");
    let reply =
        call(&app, Method::POST, &format!("/v2/mount/dst/blobs/uploads/?mount={unmountable}&from=mount/src")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
}

/// "the registry SHOULD accept a manifest with a subject field even if the subject does not
/// exist" and "the registry MUST include the OCI-Subject header in the response."
#[actix_web::test]
async fn push_manifest_with_subject_not_yet_present() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let empty = push_blob(&app, "push/subject", b"{}").await;
    let subject = Digest::sha256_of(b"not pushed yet");
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 100},
    }))
    .expect("json");
    let reply = put_manifest(&app, "push/subject", Digest::sha256_of(&body).as_str(), OCI_MANIFEST, &body).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.header("oci-subject"), Some(subject.as_str()));
    let referrers = call(&app, Method::GET, &format!("/v2/push/subject/referrers/{subject}")).await.json();
    assert_eq!(referrers["manifests"][0]["artifactType"], json!("application/vnd.example"));
}

// --- Content discovery ----------------------------------------------------------------------

/// "GET /v2/<name>/tags/list … MUST return 200 OK … `{"name": "<name>", "tags": [...]}` …
/// the list MUST be in lexical order." "n … the response MUST include no more than <int>
/// tags." "last … MUST be the tags after <tagname>." "a Link header MUST be set when more
/// results exist … (RFC5988)".
#[actix_web::test]
async fn tags_list_order_and_pagination() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let digest = push_image(&app, "disc/tags", "c", 1).await;
    let body = call(&app, Method::GET, &format!("/v2/disc/tags/manifests/{digest}")).await.body;
    for tag in ["a", "b", "d"] {
        put_manifest(&app, "disc/tags", tag, OCI_MANIFEST, &body).await;
    }
    let all = call(&app, Method::GET, "/v2/disc/tags/tags/list").await;
    assert_eq!(all.json(), json!({"name": "disc/tags", "tags": ["a", "b", "c", "d"]}));
    assert!(all.header("link").is_none());
    let page = call(&app, Method::GET, "/v2/disc/tags/tags/list?n=2&last=a").await;
    assert_eq!(page.json()["tags"], json!(["b", "c"]));
    assert_eq!(page.header("link"), Some("</v2/disc/tags/tags/list?n=2&last=c>; rel=\"next\""));
}

/// "GET /v2/<name>/referrers/<digest> … MUST return a 200 OK with an image index … even if the
/// subject does not exist" and, filtered by artifactType, "MUST include OCI-Filters-Applied".
#[actix_web::test]
async fn referrers_api() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    push_image(&app, "disc/refs", "v1", 1).await;
    let reply =
        call(&app, Method::GET, &format!("/v2/disc/refs/referrers/{}?artifactType=x", Digest::sha256_of(b"s"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some(OCI_INDEX));
    assert_eq!(reply.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(reply.json()["schemaVersion"], json!(2));
    // Also in a repository that does not exist yet.
    let reply = call(&app, Method::GET, &format!("/v2/disc/none-yet/referrers/{}", Digest::sha256_of(b"s"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["manifests"], json!([]));
}

/// "If the referrers list is large, the registry MAY paginate … the Link header … MUST be set
/// according to RFC5988 with the Relation Type rel="next"." Following every `Link` (the filter
/// kept) yields each referrer once.
#[actix_web::test]
async fn referrers_are_paginated_with_link() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let subject = push_image(&app, "disc/many", "v1", 1).await;
    let subject_len = call(&app, Method::GET, "/v2/disc/many/manifests/v1").await.body.len();
    let empty = push_blob(&app, "disc/many", b"{}").await;
    let mut pushed = Vec::new();
    for i in 0..7 {
        let artifact_type = if i % 2 == 0 { "application/vnd.example.sig" } else { "application/vnd.example.sbom" };
        let body = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_len},
            "annotations": {"i": i.to_string()},
        }))
        .expect("json");
        let digest = Digest::sha256_of(&body);
        assert_eq!(
            put_manifest(&app, "disc/many", digest.as_str(), OCI_MANIFEST, &body).await.status,
            StatusCode::CREATED
        );
        pushed.push((digest.to_string(), artifact_type));
    }
    for (filter, expected) in [
        (None, pushed.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>()),
        (
            Some("application/vnd.example.sig"),
            pushed.iter().filter(|(_, t)| t.ends_with("sig")).map(|(d, _)| d.clone()).collect(),
        ),
    ] {
        let mut uri = match filter {
            Some(t) => format!("/v2/disc/many/referrers/{subject}?artifactType={t}&n=2"),
            None => format!("/v2/disc/many/referrers/{subject}?n=2"),
        };
        let mut seen = Vec::new();
        for _ in 0..10 {
            let reply = call(&app, Method::GET, &uri).await;
            assert_eq!(reply.status, StatusCode::OK);
            let page: Vec<String> = reply.json()["manifests"]
                .as_array()
                .expect("manifests")
                .iter()
                .map(|m| m["digest"].as_str().expect("digest").to_owned())
                .collect();
            assert!(page.len() <= 2, "{uri}");
            seen.extend(page);
            match reply.header("link") {
                Some(link) => {
                    assert!(link.ends_with(r#">; rel="next""#), "{link}");
                    if filter.is_some() {
                        assert!(link.contains("artifactType="), "the next page keeps the filter: {link}");
                    }
                    uri = link.trim_start_matches('<').split('>').next().expect("uri").to_owned();
                }
                None => break,
            }
        }
        let (mut got, mut want) = (seen.clone(), expected.clone());
        got.sort();
        want.sort();
        assert_eq!(got, want, "every referrer once ({filter:?})");
        assert_eq!(seen.len(), expected.len());
    }
}

// --- Content management ---------------------------------------------------------------------

/// "DELETE /v2/<name>/manifests/<tag> … the registry MUST respond with 202 Accepted" (tag
/// deletion) and by digest "…MUST respond 202 Accepted. If the manifest does not exist, the
/// registry MUST return 404."
#[actix_web::test]
async fn delete_tag_and_manifest() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let digest = push_image(&app, "mgmt/del", "v1", 1).await;
    assert_eq!(call(&app, Method::DELETE, "/v2/mgmt/del/manifests/v1").await.status, StatusCode::ACCEPTED);
    assert_eq!(call(&app, Method::GET, "/v2/mgmt/del/manifests/v1").await.status, StatusCode::NOT_FOUND);
    let uri = format!("/v2/mgmt/del/manifests/{digest}");
    assert_eq!(call(&app, Method::DELETE, &uri).await.status, StatusCode::ACCEPTED);
    assert_eq!(call(&app, Method::GET, &uri).await.status, StatusCode::NOT_FOUND);
    assert_eq!(call(&app, Method::DELETE, &uri).await.status, StatusCode::NOT_FOUND);
}

/// "DELETE /v2/<name>/blobs/<digest> … If successful, the registry MUST respond with 202
/// Accepted … If the blob is not found, a 404 Not Found code MUST be returned."
#[actix_web::test]
async fn delete_blob() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let digest = push_blob(&app, "mgmt/blob", b"bye").await;
    let uri = format!("/v2/mgmt/blob/blobs/{digest}");
    assert_eq!(call(&app, Method::DELETE, &uri).await.status, StatusCode::ACCEPTED);
    assert_eq!(call(&app, Method::HEAD, &uri).await.status, StatusCode::NOT_FOUND);
    assert_eq!(call(&app, Method::DELETE, &uri).await.status, StatusCode::NOT_FOUND);
}

/// Error bodies: "The body of the response MUST be in the following format: {"errors": [{
/// "code": "<error identifier>", "message": "<message describing condition>", "detail":
/// "<unstructured>" }, …]}".
#[actix_web::test]
async fn error_bodies_have_code_message_detail() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let reply = call(&app, Method::GET, "/v2/no/such/manifests/latest").await;
    let error = &reply.json()["errors"][0];
    assert!(error["code"].is_string() && error["message"].is_string());
    assert!(error.as_object().is_some_and(|o| o.contains_key("detail")));
    assert_eq!(reply.header("content-type"), Some("application/json"));
}

/// "If a chunk is uploaded out of order, the registry MUST respond with a 416 Requested Range
/// Not Satisfiable" — overlapping chunks too — with the current `Range` and `Location`; the
/// session survives, and "the closing PUT request … MAY include the last chunk", with or
/// without a `Content-Range`, which must start where the session stands.
#[actix_web::test]
async fn out_of_order_and_overlapping_chunks_are_416_and_a_closing_put_may_carry_the_last() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let data = bytes_of(3000, 21);
    let digest = Digest::sha256_of(&data);
    let patch = |location: &str, range: &str, body: &[u8]| {
        TestRequest::patch().uri(location).insert_header(("content-range", range.to_owned())).set_payload(body.to_vec())
    };
    let location = start_upload(&app, "push/chunks").await;
    let first = send(&app, patch(&location, "0-999", &data[..1000])).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let location = first.header("location").expect("location").to_owned();
    for (range, body) in [("500-1499", &data[500..1500]), ("2000-2999", &data[2000..]), ("0-999", &data[..1000])] {
        let refused = send(&app, patch(&location, range, body)).await;
        assert_eq!(refused.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(refused.header("range"), Some("0-999"), "{range}");
        assert!(refused.header("location").is_some(), "{range}");
    }
    // A closing PUT whose chunk overlaps is refused the same way, and the session survives it.
    let sep = if location.contains('?') { '&' } else { '?' };
    let overlapping = send(
        &app,
        TestRequest::put()
            .uri(&format!("{location}{sep}digest={digest}"))
            .insert_header(("content-range", "500-2999"))
            .set_payload(data[500..].to_vec()),
    )
    .await;
    assert_eq!(overlapping.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(overlapping.header("range"), Some("0-999"));
    let done = send(
        &app,
        TestRequest::put()
            .uri(&format!("{location}{sep}digest={digest}"))
            .insert_header(("content-range", "1000-2999"))
            .set_payload(data[1000..].to_vec()),
    )
    .await;
    assert_eq!(done.status, StatusCode::CREATED);
    assert_eq!(call(&app, Method::GET, &format!("/v2/push/chunks/blobs/{digest}")).await.body, data);

    // A closing PUT with its last chunk and no Content-Range.
    let other = bytes_of(2500, 22);
    let other_digest = Digest::sha256_of(&other);
    let location = start_upload(&app, "push/chunks").await;
    let first = send(&app, patch(&location, "0-1199", &other[..1200])).await;
    let location = first.header("location").expect("location").to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    let done = send(
        &app,
        TestRequest::put().uri(&format!("{location}{sep}digest={other_digest}")).set_payload(other[1200..].to_vec()),
    )
    .await;
    assert_eq!(done.status, StatusCode::CREATED);
    assert_eq!(call(&app, Method::GET, &format!("/v2/push/chunks/blobs/{other_digest}")).await.body, other);
}

/// Content negotiation: "Clients SHOULD include an Accept header indicating which manifest
/// content types it supports", and the response's `Content-Type` names the stored type. An index
/// goes to clients that name its type (or a wildcard, or send no Accept); a client that names only
/// single-image manifests cannot read it and gets `404 MANIFEST_UNKNOWN` (docs/ARCHITECTURE.md,
/// conformance notes). Single-image manifests are served as stored to every client.
#[actix_web::test]
async fn manifest_get_and_head_honour_accept_for_indexes() {
    let reg = fs_registry().await;
    let app = app(&reg).await;
    let child = push_image(&app, "neg/multi", "amd64", 1).await;
    let child_size = call(&app, Method::GET, "/v2/neg/multi/manifests/amd64").await.body.len();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": child, "size": child_size, "platform": {"os": "linux", "architecture": "amd64"}}],
    }))
    .expect("json");
    assert_eq!(put_manifest(&app, "neg/multi", "v1", OCI_INDEX, &index).await.status, StatusCode::CREATED);
    let get = |accept: Option<&'static str>, method: Method| {
        let mut req = TestRequest::default().method(method).uri("/v2/neg/multi/manifests/v1");
        if let Some(accept) = accept {
            req = req.insert_header(("accept", accept));
        }
        send(&app, req)
    };
    for method in [Method::GET, Method::HEAD] {
        for accept in [
            None,
            Some(OCI_INDEX),
            Some("*/*"),
            Some("application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"),
        ] {
            let reply = get(accept, method.clone()).await;
            assert_eq!(reply.status, StatusCode::OK, "{method} {accept:?}");
            assert_eq!(reply.header("content-type"), Some(OCI_INDEX), "{method} {accept:?}");
        }
        let single_only = get(Some(OCI_MANIFEST), method.clone()).await;
        assert_eq!(single_only.status, StatusCode::NOT_FOUND, "{method}");
        if method == Method::GET {
            assert_eq!(single_only.error_code(), "MANIFEST_UNKNOWN");
        }
        // The image itself goes to any client, as stored.
        let mut req = TestRequest::default().method(method.clone()).uri("/v2/neg/multi/manifests/amd64");
        req = req.insert_header(("accept", "application/vnd.docker.distribution.manifest.v2+json"));
        let image = send(&app, req).await;
        assert_eq!((image.status, image.header("content-type")), (StatusCode::OK, Some(OCI_MANIFEST)));
    }
}

/// "If the manifest is not found in the repository, the response code MUST be 404 Not Found",
/// and a repository the caller may not pull is one it cannot find: another tenant's, existing
/// or not, answers every pull endpoint with the same `404` and the endpoint's code, for a
/// password (Basic) and for a token; only anonymous callers get `401` (so they can log in).
#[actix_web::test]
async fn a_repository_the_caller_may_not_pull_is_404_like_a_missing_one() {
    let reg = fs_registry().await;
    let alice = seed_user(&reg.database_url, "alice", false).await;
    seed_user(&reg.database_url, "bob", false).await;
    seed_org(&reg.database_url, "acme", "alice").await;
    seed_org(&reg.database_url, "globex", "bob").await;
    let admin = app(&reg).await;
    let digest = push_image(&admin, "globex/secret", "v1", 1).await;
    let app = raw_app(&reg).await;
    let bearer = token(&app, Some(&alice.basic), &["repository:globex/secret:pull"]).await;
    for auth in [alice.basic.as_str(), bearer.as_str()] {
        for (path, code) in [
            ("manifests/v1", "MANIFEST_UNKNOWN"),
            (&format!("manifests/{digest}") as &str, "MANIFEST_UNKNOWN"),
            (&format!("blobs/{digest}") as &str, "BLOB_UNKNOWN"),
            ("tags/list", "NAME_UNKNOWN"),
            (&format!("referrers/{digest}") as &str, "NAME_UNKNOWN"),
        ] {
            let mut seen = Vec::new();
            for repo in ["globex/secret", "globex/absent"] {
                let reply = send_as(&app, auth, TestRequest::get().uri(&format!("/v2/{repo}/{path}"))).await;
                assert_eq!(reply.status, StatusCode::NOT_FOUND, "{repo}/{path}");
                assert_eq!(reply.error_code(), code, "{repo}/{path}");
                seen.push((reply.status, reply.body.clone()));
                let head =
                    send_as(&app, auth, TestRequest::default().method(Method::HEAD).uri(&format!("/v2/{repo}/{path}")))
                        .await;
                if !path.starts_with("tags") && !path.starts_with("referrers") {
                    assert_eq!(head.status, StatusCode::NOT_FOUND, "HEAD {repo}/{path}");
                }
            }
            let strip =
                |b: &[u8]| String::from_utf8_lossy(b).replace("globex/secret", "X").replace("globex/absent", "X");
            assert_eq!(strip(&seen[0].1), strip(&seen[1].1), "{path}: existing and missing answer alike");
        }
    }
    let anonymous = call(&app, Method::GET, "/v2/globex/secret/manifests/v1").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

// --- Digest algorithms ------------------------------------------------------------------------

/// Pushes `data` monolithically under its sha512 digest.
async fn push_sha512_blob(app: &impl App, repo: &str, data: &[u8]) -> Digest {
    let digest = Algorithm::Sha512.digest(data);
    let reply = send(
        app,
        TestRequest::post().uri(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")).set_payload(data.to_vec()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    assert_eq!(reply.header("docker-content-digest"), Some(digest.as_str()));
    digest
}

/// sha512, the image spec's other registered algorithm, end to end: "When pushing a blob with a
/// digest algorithm other than sha256, the post request SHOULD include the digest-algorithm
/// parameter"; the session hashes its chunks with it, on any node. Monolithic, POST-then-PUT,
/// mount, HEAD (`Content-Length`, `Docker-Content-Digest`), ranges, a manifest over sha512 blobs
/// pushed by its sha512 digest, referrers and deletes; stored under `blobs/sha512/`. "If the blob
/// is not found in the repository, the response code MUST be 404 Not Found" for sha512 as for
/// sha256, and only an algorithm the registry does not know is "invalid or uses an unsupported
/// algorithm … 400 Bad Request" (`DIGEST_INVALID`).
#[actix_web::test]
async fn sha512_digests_end_to_end() {
    let reg = fs_registry().await;
    let app = app_with(&reg.registry, &reg.auth, &metrics(), Some(&reg.admin)).await;
    let other_node = app_with(
        &node(&reg, std::sync::Arc::new(aerugo_dataplane::cache::Cache::local())).await,
        &reg.auth,
        &metrics(),
        Some(&reg.admin),
    )
    .await;
    let repo = "sha512/app";

    // Monolithic POST, then HEAD, GET and a range.
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config_digest = push_sha512_blob(&app, repo, &config).await;
    let head = call(&app, Method::HEAD, &format!("/v2/{repo}/blobs/{config_digest}")).await;
    assert_eq!((head.status, head.length), (StatusCode::OK, Some(config.len() as u64)));
    assert_eq!(head.header("docker-content-digest"), Some(config_digest.as_str()));
    let get = call(&other_node, Method::GET, &format!("/v2/{repo}/blobs/{config_digest}")).await;
    assert_eq!((get.status, &get.body[..]), (StatusCode::OK, &config[..]));
    let part = send(
        &app,
        TestRequest::get().uri(&format!("/v2/{repo}/blobs/{config_digest}")).insert_header(("range", "bytes=2-5")),
    )
    .await;
    assert_eq!((part.status, &part.body[..]), (StatusCode::PARTIAL_CONTENT, &config[2..6]));
    let hex = config_digest.hex();
    assert!(reg.storage_dir().join(format!("blobs/sha512/{}/{hex}", &hex[..2])).is_file(), "stored under sha512");

    // Chunks hashed with sha512 on one node, continued and closed on the other.
    let layer = bytes_of(300_000, 51);
    let layer_digest = Algorithm::Sha512.digest(&layer);
    let opened = call(&app, Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest-algorithm=sha512")).await;
    assert_eq!(opened.status, StatusCode::ACCEPTED);
    let location = opened.header("location").expect("location");
    let location = patch_in_chunks(&[&app, &other_node], location, &layer, 100_000).await;
    let sep = if location.contains('?') { '&' } else { '?' };
    let done = call(&other_node, Method::PUT, &format!("{location}{sep}digest={layer_digest}")).await;
    assert_eq!(done.status, StatusCode::CREATED, "{:?}", done.body);
    assert_eq!(done.header("docker-content-digest"), Some(layer_digest.as_str()));
    assert_eq!(call(&app, Method::GET, &format!("/v2/{repo}/blobs/{layer_digest}")).await.body, layer);

    // POST then one PUT with the whole blob: nothing was hashed yet, so the PUT's algorithm is used.
    let whole = bytes_of(5_000, 52);
    let whole_digest = Algorithm::Sha512.digest(&whole);
    let location = start_upload(&app, repo).await;
    let sep = if location.contains('?') { '&' } else { '?' };
    let done =
        send(&app, TestRequest::put().uri(&format!("{location}{sep}digest={whole_digest}")).set_payload(whole.clone()))
            .await;
    assert_eq!(done.status, StatusCode::CREATED, "{:?}", done.body);

    // Chunks hashed with sha256 cannot be closed as sha512: a clear 400, and the session is intact.
    let location = start_upload(&app, repo).await;
    let first = send(&app, TestRequest::patch().uri(&location).set_payload(whole[..1000].to_vec())).await;
    let location = first.header("location").expect("location").to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    let refused = send(
        &app,
        TestRequest::put().uri(&format!("{location}{sep}digest={whole_digest}")).set_payload(whole[1000..].to_vec()),
    )
    .await;
    assert_eq!((refused.status, refused.error_code().as_str()), (StatusCode::BAD_REQUEST, "DIGEST_INVALID"));
    assert!(String::from_utf8_lossy(&refused.body).contains("digest-algorithm=sha512"), "{:?}", refused.body);
    let status = call(&app, Method::GET, &location).await;
    assert_eq!((status.status, status.header("range")), (StatusCode::NO_CONTENT, Some("0-999")));
    let sha256 = Digest::sha256_of(&whole);
    let closed = send(
        &app,
        TestRequest::put().uri(&format!("{location}{sep}digest={sha256}")).set_payload(whole[1000..].to_vec()),
    )
    .await;
    assert_eq!(closed.status, StatusCode::CREATED, "{:?}", closed.body);

    // Content that does not hash to the sha512 digest given is refused.
    let wrong = send(
        &app,
        TestRequest::post().uri(&format!("/v2/{repo}/blobs/uploads/?digest={whole_digest}")).set_payload(b"x".to_vec()),
    )
    .await;
    assert_eq!((wrong.status, wrong.error_code().as_str()), (StatusCode::BAD_REQUEST, "DIGEST_INVALID"));

    // A manifest over sha512 blobs, pushed by its sha512 digest, pulled by it, and by a tag.
    let manifest = image_manifest(&(config_digest.clone(), config.len()), &[(layer_digest.clone(), layer.len())]);
    let manifest_digest = Algorithm::Sha512.digest(&manifest);
    let pushed = put_manifest(&app, repo, manifest_digest.as_str(), OCI_MANIFEST, &manifest).await;
    assert_eq!(pushed.status, StatusCode::CREATED, "{:?}", pushed.body);
    assert_eq!(pushed.header("docker-content-digest"), Some(manifest_digest.as_str()));
    for node in [&app, &other_node] {
        let pulled = call(node, Method::GET, &format!("/v2/{repo}/manifests/{manifest_digest}")).await;
        assert_eq!((pulled.status, &pulled.body[..]), (StatusCode::OK, &manifest[..]));
        assert_eq!(pulled.header("docker-content-digest"), Some(manifest_digest.as_str()));
        let head = call(node, Method::HEAD, &format!("/v2/{repo}/manifests/{manifest_digest}")).await;
        assert_eq!((head.status, head.length), (StatusCode::OK, Some(manifest.len() as u64)));
    }
    let mut tampered = manifest.clone();
    tampered.push(b'\n');
    let refused = put_manifest(&app, repo, manifest_digest.as_str(), OCI_MANIFEST, &tampered).await;
    assert_eq!((refused.status, refused.error_code().as_str()), (StatusCode::BAD_REQUEST, "DIGEST_INVALID"));
    // By tag the canonical algorithm is used.
    let tagged = put_manifest(&app, repo, "v1", OCI_MANIFEST, &manifest).await;
    assert_eq!(tagged.header("docker-content-digest"), Some(Digest::sha256_of(&manifest).as_str()));
    // A referrer of the sha512 manifest.
    let signature = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/example.sig",
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": config_digest, "size": config.len() },
        "layers": [],
        "subject": { "mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest.len() },
    }))
    .expect("json");
    let signature_digest = Algorithm::Sha512.digest(&signature);
    let pushed = put_manifest(&app, repo, signature_digest.as_str(), OCI_MANIFEST, &signature).await;
    assert_eq!(pushed.status, StatusCode::CREATED, "{:?}", pushed.body);
    let referrers = call(&app, Method::GET, &format!("/v2/{repo}/referrers/{manifest_digest}")).await;
    assert_eq!(referrers.json()["manifests"][0]["digest"], json!(signature_digest));

    // Mount into another repository.
    let mounted =
        call(&app, Method::POST, &format!("/v2/sha512/other/blobs/uploads/?mount={layer_digest}&from={repo}")).await;
    assert_eq!(mounted.status, StatusCode::CREATED);
    assert_eq!(mounted.header("docker-content-digest"), Some(layer_digest.as_str()));

    // Missing: 404 for sha512 as for sha256; unknown algorithms: 400 DIGEST_INVALID.
    let absent = Algorithm::Sha512.digest(b"absent");
    for uri in [format!("/v2/{repo}/blobs/{absent}"), format!("/v2/never/pushed/blobs/{absent}")] {
        let reply = call(&app, Method::GET, &uri).await;
        assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"), "{uri}");
        assert_eq!(call(&app, Method::HEAD, &uri).await.status, StatusCode::NOT_FOUND, "HEAD {uri}");
    }
    let reply = call(&app, Method::GET, &format!("/v2/{repo}/manifests/{absent}")).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"));
    let sha384 =
        "sha384:38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da274edebfe76f65fbd51ad2f14898b95b";
    for (method, uri) in [
        (Method::GET, format!("/v2/{repo}/blobs/{sha384}")),
        (Method::GET, format!("/v2/{repo}/manifests/{sha384}")),
        (Method::POST, format!("/v2/{repo}/blobs/uploads/?digest-algorithm=sha384")),
        (Method::POST, format!("/v2/{repo}/blobs/uploads/?digest={sha384}")),
    ] {
        let reply = call(&app, method, &uri).await;
        assert_eq!((reply.status, reply.error_code().as_str()), (StatusCode::BAD_REQUEST, "DIGEST_INVALID"), "{uri}");
    }

    // Deletes by sha512 digest: the referrer, the manifest; then a blob no manifest uses.
    for digest in [&signature_digest, &manifest_digest] {
        let uri = format!("/v2/{repo}/manifests/{digest}");
        assert_eq!(call(&app, Method::DELETE, &uri).await.status, StatusCode::ACCEPTED, "{uri}");
        assert_eq!(call(&app, Method::GET, &uri).await.status, StatusCode::NOT_FOUND);
    }
    let uri = format!("/v2/{repo}/blobs/{whole_digest}");
    assert_eq!(call(&app, Method::DELETE, &uri).await.status, StatusCode::ACCEPTED);
    assert_eq!(call(&app, Method::HEAD, &uri).await.status, StatusCode::NOT_FOUND);
}
