//! The management API: users, sessions, organizations and members, repositories, API keys,
//! Kubernetes-owned rows, the audit log and the OpenAPI document.

use actix_web::http::{Method, StatusCode};
use actix_web::test::TestRequest;
use serde_json::{Value, json};

use crate::harness::*;

async fn api(app: &impl App, auth: &str, method: Method, uri: &str, body: Option<Value>) -> Reply {
    let mut req = TestRequest::default().method(method).uri(uri);
    if let Some(body) = body {
        req = req.set_json(body);
    }
    send_as(app, auth, req).await
}

fn error(reply: &Reply) -> String {
    reply.json()["error"].as_str().unwrap_or_else(|| panic!("no error code in {:?}", reply.body)).to_owned()
}

#[actix_web::test]
async fn site_admins_create_users_who_manage_their_profile() {
    let reg = fs_registry().await;
    let root = seed_user(&reg.database_url, "root", true).await;
    let alice = seed_user(&reg.database_url, "alice", false).await;
    let app = raw_app(&reg).await;
    let new = json!({ "username": "carol", "password": "carol-password", "email": "carol@example.test" });
    let created = api(&app, &root.basic, Method::POST, "/api/v1/users", Some(new.clone())).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.json()["username"], "carol");
    assert!(created.json().get("password").is_none());
    assert_eq!(api(&app, &root.basic, Method::POST, "/api/v1/users", Some(new)).await.status, StatusCode::CONFLICT);
    let forbidden = api(
        &app,
        &alice.basic,
        Method::POST,
        "/api/v1/users",
        Some(json!({ "username": "dave", "password": "dave-password" })),
    )
    .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    for bad in [
        json!({ "username": "Bad Name", "password": "long-enough" }),
        json!({ "username": "eve", "password": "short" }),
        json!({ "username": "eve", "password": "long-enough", "email": "not-an-address" }),
        json!({ "username": "eve", "password": "long-enough", "admin": true }),
        json!({ "username": 5 }),
    ] {
        let reply = api(&app, &root.basic, Method::POST, "/api/v1/users", Some(bad.clone())).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error(&reply), "invalid");
    }
    let garbage = send_as(
        &app,
        &root.basic,
        TestRequest::post().uri("/api/v1/users").insert_header(("content-type", "application/json")).set_payload("{"),
    )
    .await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    let listed = api(&app, &root.basic, Method::GET, "/api/v1/users", None).await;
    let names: Vec<String> = listed
        .json()
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|u| u["username"].as_str().map(str::to_owned))
        .collect();
    assert!(names.iter().any(|n| n == "carol") && names.iter().any(|n| n == "alice"), "{names:?}");

    // Sessions: log in, use the token, and keep it apart from registry tokens.
    let login = send(
        &app,
        TestRequest::post()
            .uri("/api/v1/auth/login")
            .set_json(json!({ "username": "carol", "password": "carol-password" })),
    )
    .await;
    assert_eq!(login.status, StatusCode::OK);
    let session = format!("Bearer {}", login.json()["token"].as_str().expect("token"));
    let me = api(&app, &session, Method::GET, "/api/v1/user", None).await;
    assert_eq!(me.json()["email"], "carol@example.test");
    assert_eq!(
        send_as(&app, &session, TestRequest::get().uri("/v2/")).await.status,
        StatusCode::UNAUTHORIZED,
        "a session is no registry token"
    );
    let registry_token = token(&app, Some(&basic("carol", "carol-password")), &[]).await;
    assert_eq!(api(&app, &registry_token, Method::GET, "/api/v1/user", None).await.status, StatusCode::UNAUTHORIZED);
    let bad_login = send(
        &app,
        TestRequest::post().uri("/api/v1/auth/login").set_json(json!({ "username": "carol", "password": "nope-nope" })),
    )
    .await;
    assert_eq!(bad_login.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error(&bad_login), "unauthorized");

    // Profile and password.
    let updated = api(&app, &session, Method::PATCH, "/api/v1/user", Some(json!({ "email": "c@example.test" }))).await;
    assert_eq!(updated.json()["email"], "c@example.test");
    let wrong = api(
        &app,
        &session,
        Method::PUT,
        "/api/v1/user/password",
        Some(json!({ "currentPassword": "nope-nope", "newPassword": "carol-new-password" })),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let changed = api(
        &app,
        &session,
        Method::PUT,
        "/api/v1/user/password",
        Some(json!({ "currentPassword": "carol-password", "newPassword": "carol-new-password" })),
    )
    .await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT);
    assert_eq!(
        send_as(&app, &basic("carol", "carol-password"), TestRequest::get().uri("/v2/")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send_as(&app, &basic("carol", "carol-new-password"), TestRequest::get().uri("/v2/")).await.status,
        StatusCode::OK
    );
    assert_eq!(call(&app, Method::GET, "/api/v1/user").await.status, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn organizations_members_and_repositories() {
    let reg = fs_registry().await;
    let alice = seed_user(&reg.database_url, "alice", false).await;
    let bob = seed_user(&reg.database_url, "bob", false).await;
    let app = raw_app(&reg).await;
    let created =
        api(&app, &alice.basic, Method::POST, "/api/v1/orgs", Some(json!({ "name": "acme", "displayName": "ACME" })))
            .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.json()["role"], "owner");
    assert_eq!(
        api(&app, &bob.basic, Method::POST, "/api/v1/orgs", Some(json!({ "name": "acme" }))).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        api(&app, &bob.basic, Method::POST, "/api/v1/orgs", Some(json!({ "name": "Not/Valid" }))).await.status,
        StatusCode::BAD_REQUEST
    );
    // Bob is no member: the organization does not exist for him.
    assert_eq!(api(&app, &bob.basic, Method::GET, "/api/v1/orgs/acme", None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api(&app, &bob.basic, Method::GET, "/api/v1/orgs/acme/repositories", None).await.status,
        StatusCode::NOT_FOUND
    );

    let added =
        api(&app, &alice.basic, Method::PUT, "/api/v1/orgs/acme/members/bob", Some(json!({ "role": "member" }))).await;
    assert_eq!(added.status, StatusCode::OK);
    assert_eq!(api(&app, &bob.basic, Method::GET, "/api/v1/orgs/acme", None).await.json()["role"], "member");
    assert_eq!(
        api(&app, &bob.basic, Method::PUT, "/api/v1/orgs/acme/members/bob", Some(json!({ "role": "admin" })))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api(&app, &alice.basic, Method::PUT, "/api/v1/orgs/acme/members/bob", Some(json!({ "role": "god" })))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        api(&app, &alice.basic, Method::PUT, "/api/v1/orgs/acme/members/nobody", Some(json!({ "role": "member" })))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let last_owner = api(&app, &alice.basic, Method::DELETE, "/api/v1/orgs/acme/members/alice", None).await;
    assert_eq!(last_owner.status, StatusCode::CONFLICT);
    let members = api(&app, &alice.basic, Method::GET, "/api/v1/orgs/acme/members", None).await;
    assert_eq!(
        members.json(),
        json!([{ "username": "alice", "role": "owner" }, { "username": "bob", "role": "member" }])
    );
    assert_eq!(api(&app, &alice.basic, Method::GET, "/api/v1/orgs", None).await.json()[0]["name"], "acme");

    // Repositories.
    let repo =
        api(&app, &bob.basic, Method::POST, "/api/v1/orgs/acme/repositories", Some(json!({ "name": "team/app" })))
            .await;
    assert_eq!(repo.status, StatusCode::CREATED, "{:?}", repo.body);
    assert_eq!(
        (repo.json()["fullName"].clone(), repo.json()["visibility"].clone()),
        (json!("acme/team/app"), json!("private"))
    );
    assert_eq!(
        api(&app, &bob.basic, Method::POST, "/api/v1/orgs/acme/repositories", Some(json!({ "name": "team/app" })))
            .await
            .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        api(&app, &bob.basic, Method::POST, "/api/v1/orgs/acme/repositories", Some(json!({ "name": "../etc" })))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let image =
        push_image(&app_with(&reg.registry, &reg.auth, &metrics(), Some(&bob.basic)).await, "acme/team/app", "v1", 4)
            .await;
    let details = api(&app, &alice.basic, Method::GET, "/api/v1/orgs/acme/repositories/team/app", None).await;
    assert_eq!(details.status, StatusCode::OK);
    let details = details.json();
    assert_eq!(details["tags"][0]["name"], "v1");
    assert_eq!(details["tags"][0]["digest"], image.to_string());
    assert_eq!(details["tagCount"], 1);
    assert!(details["sizeBytes"].as_i64().is_some_and(|n| n > 1000), "{details}");
    assert!(details["lastPushAt"].is_string());
    let listed = api(&app, &alice.basic, Method::GET, "/api/v1/orgs/acme/repositories", None).await;
    assert_eq!(listed.json().as_array().map(Vec::len), Some(1));

    // Members may not change visibility or delete; owners may.
    let patch = Some(json!({ "visibility": "public" }));
    assert_eq!(
        api(&app, &bob.basic, Method::PATCH, "/api/v1/orgs/acme/repositories/team/app", patch.clone()).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api(&app, &alice.basic, Method::PATCH, "/api/v1/orgs/acme/repositories/team/app", patch).await.json()["visibility"],
        "public"
    );
    assert_eq!(
        call(&app, Method::GET, "/v2/acme/team/app/manifests/v1").await.status,
        StatusCode::OK,
        "public: anonymous pull"
    );
    assert_eq!(
        api(&app, &bob.basic, Method::DELETE, "/api/v1/orgs/acme/repositories/team/app", None).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api(&app, &alice.basic, Method::DELETE, "/api/v1/orgs/acme/repositories/team/app", None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api(&app, &alice.basic, Method::GET, "/api/v1/orgs/acme/repositories/team/app", None).await.status,
        StatusCode::NOT_FOUND
    );
    let gone = send_as(&app, &alice.basic, TestRequest::get().uri("/v2/acme/team/app/manifests/v1")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.error_code(), "MANIFEST_UNKNOWN");

    // Removing a member takes their access away.
    assert_eq!(
        api(&app, &alice.basic, Method::DELETE, "/api/v1/orgs/acme/members/bob", None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(api(&app, &bob.basic, Method::GET, "/api/v1/orgs/acme", None).await.status, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn rows_owned_by_kubernetes_are_read_only() {
    let reg = fs_registry().await;
    let alice = seed_user(&reg.database_url, "alice", false).await;
    seed_org(&reg.database_url, "acme", "alice").await;
    let app = raw_app(&reg).await;
    assert_eq!(
        api(&app, &alice.basic, Method::POST, "/api/v1/orgs/acme/repositories", Some(json!({ "name": "app" })))
            .await
            .status,
        StatusCode::CREATED
    );
    let key = api(
        &app,
        &alice.basic,
        Method::POST,
        "/api/v1/api-keys",
        Some(json!({ "name": "k", "scopes": [{ "repositories": "acme/**", "actions": ["pull"] }] })),
    )
    .await;
    let key_id = key.json()["keyId"].as_str().expect("id").to_owned();
    let pool = aerugo_db::pool(&reg.database_url, 1).expect("pool");
    let client = pool.get().await.expect("client");
    client
        .batch_execute("UPDATE organizations SET managed_by = 'kubernetes'; UPDATE repositories SET managed_by = 'kubernetes'; UPDATE api_keys SET managed_by = 'kubernetes'")
        .await
        .expect("hand over to the operator");
    for (method, uri, body) in [
        (Method::PATCH, "/api/v1/orgs/acme/repositories/app".to_owned(), Some(json!({ "visibility": "public" }))),
        (Method::DELETE, "/api/v1/orgs/acme/repositories/app".to_owned(), None),
        (Method::PUT, "/api/v1/orgs/acme/members/alice".to_owned(), Some(json!({ "role": "admin" }))),
        (Method::DELETE, "/api/v1/orgs/acme".to_owned(), None),
        (Method::DELETE, format!("/api/v1/api-keys/{key_id}"), None),
    ] {
        let reply = api(&app, &alice.basic, method.clone(), &uri, body).await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "{method} {uri}");
        assert!(
            reply.json()["message"].as_str().is_some_and(|m| m.contains("managed by Kubernetes")),
            "{:?}",
            reply.body
        );
    }
    // Reading still works.
    assert_eq!(
        api(&app, &alice.basic, Method::GET, "/api/v1/orgs/acme/repositories/app", None).await.status,
        StatusCode::OK
    );
}

#[actix_web::test]
async fn api_keys_are_shown_once_listed_without_secrets_and_only_read_the_api() {
    let reg = fs_registry().await;
    let alice = seed_user(&reg.database_url, "alice", false).await;
    seed_org(&reg.database_url, "acme", "alice").await;
    let app = raw_app(&reg).await;
    let created = api(&app, &alice.basic, Method::POST, "/api/v1/api-keys", Some(json!({ "name": "ci", "scopes": [{ "repositories": "acme/**", "actions": ["pull", "push"] }], "expiresAt": "2099-01-01T00:00:00Z" }))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let created = created.json();
    let secret = created["key"].as_str().expect("key").to_owned();
    assert!(secret.starts_with(&format!("ak_{}_", created["keyId"].as_str().expect("id"))));
    for bad in [
        json!({ "name": "x", "scopes": [] }),
        json!({ "name": "x", "scopes": [{ "repositories": "a/[", "actions": ["pull"] }] }),
        json!({ "name": "x", "scopes": [{ "repositories": "a/**", "actions": ["fly"] }] }),
        json!({ "name": "x", "scopes": [{ "repositories": "a/**", "actions": [] }] }),
        json!({ "name": "", "scopes": [{ "repositories": "a/**", "actions": ["pull"] }] }),
    ] {
        assert_eq!(
            api(&app, &alice.basic, Method::POST, "/api/v1/api-keys", Some(bad.clone())).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    let key = basic("alice", &secret);
    assert_eq!(send_as(&app, &key, TestRequest::get().uri("/v2/")).await.status, StatusCode::OK);
    reg.auth.flush_last_used().await.expect("flush");
    let listed = api(&app, &key, Method::GET, "/api/v1/api-keys", None).await;
    assert_eq!(listed.status, StatusCode::OK, "keys may read");
    let listed = listed.json();
    assert!(!listed.to_string().contains(&secret[20..]), "the secret is never listed");
    assert!(listed[0]["lastUsedAt"].is_string(), "{listed}");
    assert_eq!(listed[0]["expiresAt"], "2099-01-01T00:00:00Z");
    let write = api(&app, &key, Method::POST, "/api/v1/orgs", Some(json!({ "name": "keymade" }))).await;
    assert_eq!(write.status, StatusCode::FORBIDDEN, "keys may not write");
    let login = send(
        &app,
        TestRequest::post().uri("/api/v1/auth/login").set_json(json!({ "username": "alice", "password": secret })),
    )
    .await;
    assert_eq!(login.status, StatusCode::BAD_REQUEST, "keys do not open sessions");
    let other = seed_user(&reg.database_url, "mallory", false).await;
    let id = created["keyId"].as_str().expect("id");
    assert_eq!(
        api(&app, &other.basic, Method::DELETE, &format!("/api/v1/api-keys/{id}"), None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[actix_web::test]
async fn the_audit_log_records_writes_and_denials_for_org_admins() {
    let reg = fs_registry().await;
    let alice = seed_user(&reg.database_url, "alice", false).await;
    let bob = seed_user(&reg.database_url, "bob", false).await;
    let app = raw_app(&reg).await;
    assert_eq!(
        api(&app, &alice.basic, Method::POST, "/api/v1/orgs", Some(json!({ "name": "acme" }))).await.status,
        StatusCode::CREATED
    );
    push_image(&app_with(&reg.registry, &reg.auth, &metrics(), Some(&alice.basic)).await, "acme/app", "v1", 5).await;
    let probe = send_as(
        &app,
        &bob.basic,
        TestRequest::delete().uri("/v2/acme/app/manifests/v1").peer_addr("192.0.2.7:4242".parse().expect("addr")),
    )
    .await;
    assert_eq!(probe.status, StatusCode::FORBIDDEN);
    assert_eq!(
        api(&app, &alice.basic, Method::PUT, "/api/v1/orgs/acme/members/bob", Some(json!({ "role": "viewer" })))
            .await
            .status,
        StatusCode::OK
    );

    let events = api(&app, &alice.basic, Method::GET, "/api/v1/orgs/acme/audit", None).await;
    assert_eq!(events.status, StatusCode::OK);
    let events = events.json();
    let actions: Vec<String> = events
        .as_array()
        .expect("list")
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["actor"].as_str().unwrap_or(""),
                e["action"].as_str().unwrap_or(""),
                e["outcome"].as_str().unwrap_or("")
            )
        })
        .collect();
    for expected in [
        "alice org.create ok",
        "alice blob.push ok",
        "alice manifest.push ok",
        "bob access.denied denied",
        "alice org.member.put ok",
    ] {
        assert!(actions.iter().any(|a| a == expected), "{expected:?} missing from {actions:?}");
    }
    let denied = events.as_array().expect("list").iter().find(|e| e["action"] == "access.denied").expect("denial");
    assert_eq!((denied["target"].clone(), denied["source"].clone()), (json!("acme/app"), json!("192.0.2.7")));
    let page = api(
        &app,
        &alice.basic,
        Method::GET,
        &format!("/api/v1/orgs/acme/audit?limit=1&before={}", events[0]["id"]),
        None,
    )
    .await;
    assert_eq!(page.json()[0]["id"], events[1]["id"]);
    assert_eq!(
        api(&app, &bob.basic, Method::GET, "/api/v1/orgs/acme/audit", None).await.status,
        StatusCode::FORBIDDEN,
        "viewers do not read the log"
    );
    assert_eq!(api(&app, &alice.basic, Method::GET, "/api/v1/audit", None).await.status, StatusCode::FORBIDDEN);
}

#[actix_web::test]
async fn the_openapi_document_is_served_and_rendered() {
    let reg = fs_registry().await;
    let app = raw_app(&reg).await;
    let doc = call(&app, Method::GET, "/api/openapi.json").await;
    assert_eq!(doc.status, StatusCode::OK);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for path in [
        "/api/v1/users",
        "/api/v1/orgs/{org}/members/{username}",
        "/api/v1/orgs/{org}/repositories/{name}",
        "/api/v1/api-keys",
        "/api/v1/orgs/{org}/audit",
        "/api/v1/auth/login",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
    assert!(doc["components"]["schemas"].get("NewKey").is_some());
    let redirect = call(&app, Method::GET, "/api/docs").await;
    assert_eq!(redirect.status, StatusCode::FOUND);
    let page = call(&app, Method::GET, "/api/docs/").await;
    assert_eq!(page.status, StatusCode::OK);
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("swagger-ui"), "{html}");
    let init = call(&app, Method::GET, "/api/docs/swagger-initializer.js").await;
    assert!(String::from_utf8_lossy(&init.body).contains("/api/openapi.json"));
    let bundle = call(&app, Method::GET, "/api/docs/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status, StatusCode::OK, "the UI is served from the binary, not a CDN");
    assert_eq!(call(&app, Method::GET, "/api/v1/nothing").await.status, StatusCode::NOT_FOUND);
}

/// Repository administration (visibility, deleting the repository) is a right of its own: a
/// Member holding every action through a Delete grant pushes and deletes manifests but cannot
/// make the repository public or delete it; an Admin grant can. API keys never administer.
#[actix_web::test]
async fn a_delete_grant_includes_push_but_not_administration() {
    let reg = fs_registry().await;
    let root = seed_user(&reg.database_url, "root", true).await;
    let mallory = seed_user(&reg.database_url, "mallory", false).await;
    let grace = seed_user(&reg.database_url, "grace", false).await;
    seed_org(&reg.database_url, "acme", "root").await;
    let app = raw_app(&reg).await;
    for user in ["mallory", "grace"] {
        let put = api(
            &app,
            &root.basic,
            Method::PUT,
            &format!("/api/v1/orgs/acme/members/{user}"),
            Some(json!({ "role": "member" })),
        )
        .await;
        assert!(put.status.is_success(), "{:?}", put.body);
    }
    let created =
        api(&app, &root.basic, Method::POST, "/api/v1/orgs/acme/repositories", Some(json!({ "name": "app" }))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let pool = aerugo_db::pool(&reg.database_url, 1).expect("pool");
    pool.get()
        .await
        .expect("db")
        .batch_execute(
            "INSERT INTO repository_grants (repository_id, subject_kind, subject_id, access)
             SELECT r.id, 'user', u.id, CASE u.username WHEN 'mallory' THEN 'delete' ELSE 'admin' END
               FROM repositories r, users u WHERE r.name = 'acme/app' AND u.username IN ('mallory', 'grace')",
        )
        .await
        .expect("grants");

    // Delete includes Push (the CRD's words), and delete.
    let as_mallory = app_with(&reg.registry, &reg.auth, &metrics(), Some(&mallory.basic)).await;
    let digest = push_image(&as_mallory, "acme/app", "v1", 1).await;
    let deleted =
        send_as(&app, &mallory.basic, TestRequest::delete().uri(&format!("/v2/acme/app/manifests/{digest}"))).await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED);
    // Not administration.
    let public = Some(json!({ "visibility": "public" }));
    let refused = api(&app, &mallory.basic, Method::PATCH, "/api/v1/orgs/acme/repositories/app", public.clone()).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
    let refused = api(&app, &mallory.basic, Method::DELETE, "/api/v1/orgs/acme/repositories/app", None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    // An Admin grant administers.
    let made = api(&app, &grace.basic, Method::PATCH, "/api/v1/orgs/acme/repositories/app", public).await;
    assert_eq!(made.status, StatusCode::OK, "{:?}", made.body);
    assert_eq!(made.json()["visibility"], "public");
    let gone = api(&app, &grace.basic, Method::DELETE, "/api/v1/orgs/acme/repositories/app", None).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
}

/// Site administrators disable, enable, delete users and reset passwords; a password change
/// voids the user's sessions and refresh tokens at once; disabling voids everything and
/// enabling again does not bring old tokens back; nobody can do this to themselves.
#[actix_web::test]
async fn users_are_disabled_deleted_and_reset_and_their_tokens_die_with_it() {
    let reg = fs_registry().await;
    let root = seed_user(&reg.database_url, "root", true).await;
    let alice = seed_user(&reg.database_url, "alice", false).await;
    seed_org(&reg.database_url, "acme", "alice").await;
    let app = raw_app(&reg).await;
    let login = |user: &str, password: &str| {
        let body = json!({ "username": user, "password": password });
        let app = &app;
        async move {
            let reply = send(app, TestRequest::post().uri("/api/v1/auth/login").set_json(body)).await;
            (reply.status, reply.json()["token"].as_str().map(|t| format!("Bearer {t}")))
        }
    };
    let me = |session: String| {
        let app = &app;
        async move { api(app, &session, Method::GET, "/api/v1/user", None).await.status }
    };
    let (status, session) = login("alice", &alice.password).await;
    assert_eq!(status, StatusCode::OK);
    let session = session.expect("session");
    let refresh = {
        let body = format!(
            "grant_type=password&username=alice&password={}&service=aerugo&client_id=t&access_type=offline&scope={}",
            urlencode(&alice.password),
            urlencode("repository:acme/app:pull")
        );
        let reply = send(
            &app,
            TestRequest::post()
                .uri("/v2/token")
                .insert_header(("content-type", "application/x-www-form-urlencoded"))
                .set_payload(body),
        )
        .await;
        reply.json()["refresh_token"].as_str().expect("refresh token").to_owned()
    };
    let use_refresh = |refresh: String| {
        let app = &app;
        async move {
            let body = format!("grant_type=refresh_token&refresh_token={refresh}&service=aerugo&client_id=t");
            send(
                app,
                TestRequest::post()
                    .uri("/v2/token")
                    .insert_header(("content-type", "application/x-www-form-urlencoded"))
                    .set_payload(body),
            )
            .await
            .status
        }
    };
    assert_eq!(me(session.clone()).await, StatusCode::OK);
    assert_eq!(use_refresh(refresh.clone()).await, StatusCode::OK);

    // Her own password change: old session and refresh token die; a new login works.
    let change = json!({ "currentPassword": alice.password, "newPassword": "alice-new-password" });
    let changed = api(&app, &session, Method::PUT, "/api/v1/user/password", Some(change)).await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{:?}", changed.body);
    assert_eq!(me(session.clone()).await, StatusCode::UNAUTHORIZED, "the old session is void");
    assert_eq!(use_refresh(refresh).await, StatusCode::UNAUTHORIZED, "the old refresh token is void");
    let (status, session) = login("alice", "alice-new-password").await;
    assert_eq!(status, StatusCode::OK);
    let session = session.expect("session");
    assert_eq!(me(session.clone()).await, StatusCode::OK, "a session after the change works");

    // A site administrator resets it: the same again.
    let reset = json!({ "newPassword": "alice-third-password" });
    let done = api(&app, &root.basic, Method::PUT, "/api/v1/users/alice/password", Some(reset)).await;
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{:?}", done.body);
    assert_eq!(me(session).await, StatusCode::UNAUTHORIZED);
    assert_eq!(login("alice", "alice-new-password").await.0, StatusCode::UNAUTHORIZED);
    let (_, session) = login("alice", "alice-third-password").await;
    let session = session.expect("session");

    // Disabled: nothing works; enabled again: old tokens stay void, a new login works.
    let disabled =
        api(&app, &root.basic, Method::PATCH, "/api/v1/users/alice", Some(json!({ "disabled": true }))).await;
    assert_eq!(disabled.status, StatusCode::OK, "{:?}", disabled.body);
    assert_eq!(disabled.json()["disabled"], true);
    assert_eq!(me(session.clone()).await, StatusCode::UNAUTHORIZED);
    assert_eq!(login("alice", "alice-third-password").await.0, StatusCode::UNAUTHORIZED);
    let enabled =
        api(&app, &root.basic, Method::PATCH, "/api/v1/users/alice", Some(json!({ "disabled": false }))).await;
    assert_eq!(enabled.status, StatusCode::OK);
    assert_eq!(me(session).await, StatusCode::UNAUTHORIZED, "enabling does not revive old sessions");
    let (status, session) = login("alice", "alice-third-password").await;
    assert_eq!(status, StatusCode::OK);

    // Only site administrators, never on themselves.
    let bob = seed_user(&reg.database_url, "bob", false).await;
    for (who, method, uri, body) in [
        (&bob.basic, Method::PATCH, "/api/v1/users/alice", Some(json!({ "disabled": true }))),
        (&bob.basic, Method::DELETE, "/api/v1/users/alice", None),
        (&bob.basic, Method::PUT, "/api/v1/users/alice/password", Some(json!({ "newPassword": "hijacked-pass" }))),
        (&root.basic, Method::DELETE, "/api/v1/users/root", None),
        (&root.basic, Method::PATCH, "/api/v1/users/root", Some(json!({ "disabled": true }))),
    ] {
        assert_eq!(api(&app, who, method.clone(), uri, body).await.status, StatusCode::FORBIDDEN, "{method} {uri}");
    }
    assert_eq!(
        api(&app, &root.basic, Method::DELETE, "/api/v1/users/nobody", None).await.status,
        StatusCode::NOT_FOUND
    );

    // Deleted: gone from the list, its session void, its name free again.
    let deleted = api(&app, &root.basic, Method::DELETE, "/api/v1/users/alice", None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{:?}", deleted.body);
    assert_eq!(me(session.expect("session")).await, StatusCode::UNAUTHORIZED);
    let users = api(&app, &root.basic, Method::GET, "/api/v1/users", None).await.json();
    assert!(users.as_array().expect("list").iter().all(|u| u["username"] != "alice"));
    let again = json!({ "username": "alice", "password": "a-brand-new-alice" });
    assert_eq!(api(&app, &root.basic, Method::POST, "/api/v1/users", Some(again)).await.status, StatusCode::CREATED);
    assert_eq!(login("alice", "a-brand-new-alice").await.0, StatusCode::OK);
}
