//! Tenant isolation: a caller of one organization probes every endpoint of another
//! organization's private repository and gets exactly the answer a missing repository gives,
//! with Basic credentials, with a token, with an API key and anonymously. Blobs cannot be
//! mounted or read across the boundary; listings show only what the caller may pull.

use actix_web::http::{Method, StatusCode};
use actix_web::test::TestRequest;
use serde_json::json;

use crate::harness::*;

/// What a client can observe of an answer: status, error code, and the challenge with the
/// repository name blanked out (it echoes the name the client asked about).
fn observed(reply: &Reply, name: &str) -> (StatusCode, String, String) {
    let code = if reply.body.is_empty() { String::new() } else { reply.json()["errors"][0]["code"].to_string() };
    let challenge = reply.header("www-authenticate").unwrap_or_default().replace(name, "<name>");
    (reply.status, code, challenge)
}

struct World {
    reg: TestRegistry,
    alice: User,
    bob: User,
    /// Digest of bob's private manifest and of its layer.
    manifest: String,
    layer: String,
    /// An upload session bob has open in his private repository.
    bobs_upload: String,
}

async fn world() -> World {
    let reg = fs_registry().await;
    let alice = seed_user(&reg.database_url, "alice", false).await;
    let bob = seed_user(&reg.database_url, "bob", false).await;
    seed_org(&reg.database_url, "acme", "alice").await;
    seed_org(&reg.database_url, "globex", "bob").await;
    let app = raw_app(&reg).await;
    let admin = app_with(&reg.registry, &reg.auth, &metrics(), Some(&reg.admin)).await;
    push_image(&admin, "acme/app", "v1", 1).await;
    let manifest = push_image(&admin, "globex/secret", "v1", 2).await.to_string();
    let layer = aerugo_oci::Digest::sha256_of(&vec![2u8; 1002]).to_string();
    let session = send_as(&app, &bob.basic, TestRequest::post().uri("/v2/globex/secret/blobs/uploads/")).await;
    assert_eq!(session.status, StatusCode::ACCEPTED);
    let location = session.header("location").expect("location");
    let bobs_upload = location.rsplit('/').next().expect("uuid").to_owned();
    World { reg, alice, bob, manifest, layer, bobs_upload }
}

/// Every request a client can make against repository `name`, with `digest` a manifest
/// digest and `layer` a blob digest that exist in bob's repository.
fn probes(name: &str, w: &World) -> Vec<(String, TestRequest)> {
    let (m, l, u) = (&w.manifest, &w.layer, &w.bobs_upload);
    let manifest_body =
        image_manifest(&(aerugo_oci::Digest::sha256_of(b"{}"), 2), &[(l.parse().expect("digest"), 1002)]);
    vec![
        ("GET manifest by tag".into(), TestRequest::get().uri(&format!("/v2/{name}/manifests/v1"))),
        (
            "HEAD manifest by tag".into(),
            TestRequest::default().method(Method::HEAD).uri(&format!("/v2/{name}/manifests/v1")),
        ),
        ("GET manifest by digest".into(), TestRequest::get().uri(&format!("/v2/{name}/manifests/{m}"))),
        (
            "HEAD manifest by digest".into(),
            TestRequest::default().method(Method::HEAD).uri(&format!("/v2/{name}/manifests/{m}")),
        ),
        ("GET blob".into(), TestRequest::get().uri(&format!("/v2/{name}/blobs/{l}"))),
        ("HEAD blob".into(), TestRequest::default().method(Method::HEAD).uri(&format!("/v2/{name}/blobs/{l}"))),
        ("GET tags".into(), TestRequest::get().uri(&format!("/v2/{name}/tags/list"))),
        ("GET referrers".into(), TestRequest::get().uri(&format!("/v2/{name}/referrers/{m}"))),
        ("POST upload".into(), TestRequest::post().uri(&format!("/v2/{name}/blobs/uploads/"))),
        (
            "POST monolithic".into(),
            TestRequest::post()
                .uri(&format!("/v2/{name}/blobs/uploads/?digest={}", aerugo_oci::Digest::sha256_of(b"x")))
                .set_payload(&b"x"[..]),
        ),
        ("POST mount".into(), TestRequest::post().uri(&format!("/v2/{name}/blobs/uploads/?mount={l}&from=acme/app"))),
        ("GET upload".into(), TestRequest::get().uri(&format!("/v2/{name}/blobs/uploads/{u}"))),
        (
            "PATCH upload".into(),
            TestRequest::patch().uri(&format!("/v2/{name}/blobs/uploads/{u}")).set_payload(&b"evil"[..]),
        ),
        ("PUT upload".into(), TestRequest::put().uri(&format!("/v2/{name}/blobs/uploads/{u}?digest={l}"))),
        ("DELETE upload".into(), TestRequest::delete().uri(&format!("/v2/{name}/blobs/uploads/{u}"))),
        (
            "PUT manifest".into(),
            TestRequest::put()
                .uri(&format!("/v2/{name}/manifests/v2"))
                .insert_header(("content-type", OCI_MANIFEST))
                .set_payload(manifest_body),
        ),
        ("DELETE manifest".into(), TestRequest::delete().uri(&format!("/v2/{name}/manifests/{m}"))),
        ("DELETE tag".into(), TestRequest::delete().uri(&format!("/v2/{name}/manifests/v1"))),
        ("DELETE blob".into(), TestRequest::delete().uri(&format!("/v2/{name}/blobs/{l}"))),
    ]
}

/// Alice's answers for bob's private repository equal her answers for repositories that do
/// not exist (in bob's organization, and in no organization), for every probe.
async fn assert_indistinguishable(w: &World, auth_for: impl Fn(&str) -> Option<String>, who: &str) {
    let app = raw_app(&w.reg).await;
    let names = ["globex/secret", "globex/absent", "nowhere/thing"];
    for (i, (label, _)) in probes("x", w).into_iter().enumerate() {
        let mut seen = Vec::new();
        for name in names {
            let (_, req) = probes(name, w).into_iter().nth(i).expect("probe");
            let req = match auth_for(name) {
                Some(auth) => req.insert_header(("authorization", auth)),
                None => req,
            };
            let reply = send(&app, req).await;
            assert!(
                !reply.status.is_success() && reply.status != StatusCode::INTERNAL_SERVER_ERROR,
                "{who}: {label} on {name} answered {}",
                reply.status
            );
            seen.push(observed(&reply, name));
        }
        assert_eq!(seen[0], seen[1], "{who}: {label}: private repository vs missing repository");
        assert_eq!(seen[0], seen[2], "{who}: {label}: private repository vs missing organization");
    }
}

#[actix_web::test]
async fn another_tenants_private_repository_answers_as_if_absent() {
    let w = world().await;
    assert_indistinguishable(&w, |_| Some(w.alice.basic.clone()), "alice with Basic").await;
    assert_indistinguishable(&w, |_| None, "anonymous").await;

    // With a token asked for the very scope: the grant is empty, the answers the same.
    let app = raw_app(&w.reg).await;
    let mut tokens = std::collections::HashMap::new();
    for name in ["globex/secret", "globex/absent", "nowhere/thing"] {
        let scope = format!("repository:{name}:pull,push,delete");
        tokens.insert(name.to_owned(), token(&app, Some(&w.alice.basic), &[&scope, "repository:acme/app:pull"]).await);
    }
    assert_indistinguishable(&w, |name| tokens.get(name).cloned(), "alice with a token").await;

    // An API key whose glob matches everything still only carries alice's own rights.
    let key = send_as(
        &app,
        &w.alice.basic,
        TestRequest::post().uri("/api/v1/api-keys").set_json(
            json!({ "name": "greedy", "scopes": [{ "repositories": "**", "actions": ["pull", "push", "delete"] }] }),
        ),
    )
    .await;
    assert_eq!(key.status, StatusCode::CREATED);
    let key = basic("alice", key.json()["key"].as_str().expect("key"));
    assert_indistinguishable(&w, |_| Some(key.clone()), "alice with an API key").await;

    // Bob's upload session was not touched by any of it.
    let status = send_as(
        &app,
        &w.bob.basic,
        TestRequest::get().uri(&format!("/v2/globex/secret/blobs/uploads/{}", w.bobs_upload)),
    )
    .await;
    assert_eq!(status.status, StatusCode::NO_CONTENT);
    assert_eq!(status.header("range"), Some("0-0"), "no bytes were added");
    let pulled = send_as(&app, &w.bob.basic, TestRequest::get().uri("/v2/globex/secret/manifests/v1")).await;
    assert_eq!(pulled.status, StatusCode::OK, "bob's image is intact");
}

#[actix_web::test]
async fn blobs_do_not_cross_the_boundary() {
    let w = world().await;
    let app = raw_app(&w.reg).await;
    let alice = &w.alice.basic;
    let absent = aerugo_oci::Digest::sha256_of(b"never pushed");
    // Asking for bob's layer in alice's own repository: as unknown as a digest never pushed.
    for digest in [w.layer.clone(), absent.to_string()] {
        let reply = send_as(
            &app,
            alice,
            TestRequest::default().method(Method::HEAD).uri(&format!("/v2/acme/app/blobs/{digest}")),
        )
        .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }
    // Mounting bob's layer from his repository falls back to an upload, exactly as mounting a
    // blob that does not exist; nothing is linked.
    for (digest, from) in [(w.layer.clone(), "globex/secret"), (absent.to_string(), "globex/absent")] {
        let reply = send_as(
            &app,
            alice,
            TestRequest::post().uri(&format!("/v2/acme/app/blobs/uploads/?mount={digest}&from={from}")),
        )
        .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "mount of {digest} from {from}");
    }
    let reply = send_as(
        &app,
        alice,
        TestRequest::default().method(Method::HEAD).uri(&format!("/v2/acme/app/blobs/{}", w.layer)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "the blob did not leak into acme/app");
    // Bob's session id used under alice's repository is unknown there.
    for id in [w.bobs_upload.clone(), uuid::Uuid::new_v4().to_string()] {
        let reply = send_as(
            &app,
            alice,
            TestRequest::patch().uri(&format!("/v2/acme/app/blobs/uploads/{id}")).set_payload(&b"x"[..]),
        )
        .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.error_code(), "BLOB_UPLOAD_UNKNOWN");
    }
    // Bob can mount his own layer into a repository of his.
    let mounted = send_as(
        &app,
        &w.bob.basic,
        TestRequest::post().uri(&format!("/v2/globex/other/blobs/uploads/?mount={}&from=globex/secret", w.layer)),
    )
    .await;
    assert_eq!(mounted.status, StatusCode::CREATED);
}

#[actix_web::test]
async fn listings_show_only_what_the_caller_may_pull() {
    let w = world().await;
    let app = raw_app(&w.reg).await;
    let admin = app_with(&w.reg.registry, &w.reg.auth, &metrics(), Some(&w.reg.admin)).await;
    push_image(&admin, "globex/public", "v1", 3).await;
    let public = send_as(
        &app,
        &w.bob.basic,
        TestRequest::patch().uri("/api/v1/orgs/globex/repositories/public").set_json(json!({ "visibility": "public" })),
    )
    .await;
    assert_eq!(public.status, StatusCode::OK);
    let catalog = |auth: String| {
        let app = &app;
        async move { send_as(app, &auth, TestRequest::get().uri("/v2/_catalog")).await.json()["repositories"].clone() }
    };
    assert_eq!(catalog(w.alice.basic.clone()).await, json!(["acme/app", "globex/public"]));
    assert_eq!(catalog(w.bob.basic.clone()).await, json!(["globex/public", "globex/secret"]));
    assert_eq!(catalog(w.reg.admin.clone()).await, json!(["acme/app", "globex/public", "globex/secret"]));
    let alice_token = token(&app, Some(&w.alice.basic), &["registry:catalog:*"]).await;
    assert_eq!(catalog(alice_token).await, json!(["acme/app", "globex/public"]));
    // Paging through a filtered catalog never shows a hidden name in a Link either.
    let page = send_as(&app, &w.alice.basic, TestRequest::get().uri("/v2/_catalog?n=1")).await;
    assert_eq!(page.json()["repositories"], json!(["acme/app"]));
    assert_eq!(page.header("link"), Some("</v2/_catalog?n=1&last=acme%2Fapp>; rel=\"next\""));
    let next = send_as(&app, &w.alice.basic, TestRequest::get().uri("/v2/_catalog?n=1&last=acme%2Fapp")).await;
    assert_eq!(next.json()["repositories"], json!(["globex/public"]));
    assert_eq!(next.header("link"), None);
    // A key scoped to one repository lists only it.
    let key = send_as(
        &app,
        &w.alice.basic,
        TestRequest::post()
            .uri("/api/v1/api-keys")
            .set_json(json!({ "name": "one", "scopes": [{ "repositories": "acme/app", "actions": ["pull"] }] })),
    )
    .await;
    let key = basic("alice", key.json()["key"].as_str().expect("key"));
    assert_eq!(catalog(key).await, json!(["acme/app"]));
}
