//! Authentication on `/v2/`: challenges, the token endpoint (GET and OAuth2 POST), Basic
//! credentials, API keys, token tampering, expiry, revocation, attenuation and login limits.

use std::time::{Duration, SystemTime};

use actix_web::http::{Method, StatusCode};
use actix_web::test::TestRequest;
use aerugo_auth::token::{Claims, Restriction, TokenKind, attenuate};
use aerugo_auth::{Actions, Scope};
use serde_json::json;

use crate::harness::*;

/// A registry with users alice (owns `acme`) and bob (owns `globex`) and an image in each.
async fn tenants() -> (TestRegistry, User, User) {
    let reg = fs_registry().await;
    let alice = seed_user(&reg.database_url, "alice", false).await;
    let bob = seed_user(&reg.database_url, "bob", false).await;
    seed_org(&reg.database_url, "acme", "alice").await;
    seed_org(&reg.database_url, "globex", "bob").await;
    let admin = app(&reg).await;
    push_image(&admin, "acme/app", "v1", 1).await;
    push_image(&admin, "globex/app", "v1", 2).await;
    (reg, alice, bob)
}

fn challenge(reply: &Reply) -> String {
    reply.header("www-authenticate").unwrap_or_else(|| panic!("no challenge on {}", reply.status)).to_owned()
}

#[actix_web::test]
async fn requests_without_credentials_are_challenged_with_the_scope_they_need() {
    let (reg, _, _) = tenants().await;
    let app = raw_app(&reg).await;
    let reply = call(&app, Method::GET, "/v2/").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&reply), r#"Bearer realm="http://localhost:8080/v2/token",service="aerugo""#);
    let reply = call(&app, Method::GET, "/v2/acme/app/manifests/v1").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error_code(), "UNAUTHORIZED");
    assert!(challenge(&reply).ends_with(r#",scope="repository:acme/app:pull""#), "{}", challenge(&reply));
    let reply = call(&app, Method::POST, "/v2/acme/app/blobs/uploads/").await;
    assert!(challenge(&reply).ends_with(r#",scope="repository:acme/app:pull,push""#));
    let reply = call(&app, Method::GET, "/v2/_catalog").await;
    assert!(challenge(&reply).ends_with(r#",scope="registry:catalog:*""#));
}

#[actix_web::test]
async fn the_token_endpoint_grants_only_what_the_caller_holds() {
    let (reg, alice, _) = tenants().await;
    let app = raw_app(&reg).await;
    let reply = send_as(
        &app,
        &alice.basic,
        TestRequest::get().uri(
            "/v2/token?service=aerugo&scope=repository:acme/app:pull,push&scope=repository:globex/app:pull,push,delete",
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body = reply.json();
    assert_eq!(body["expires_in"], 300);
    assert!(body["issued_at"].as_str().is_some_and(|t| t.contains('T')));
    assert!(body.get("refresh_token").is_none());
    let bearer = format!("Bearer {}", body["token"].as_str().expect("token"));

    let pulled = send_as(&app, &bearer, TestRequest::get().uri("/v2/acme/app/manifests/v1")).await;
    assert_eq!(pulled.status, StatusCode::OK);
    let pushed = push_blob_as(&app, &bearer, "acme/app", b"by token").await;
    assert_eq!(pushed, StatusCode::CREATED);
    // Not grantable: alice has no rights in globex, so no token could allow the pull, and a
    // repository she may not pull answers as a missing one: 404 MANIFEST_UNKNOWN.
    let other = send_as(&app, &bearer, TestRequest::get().uri("/v2/globex/app/manifests/v1")).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert_eq!(other.error_code(), "MANIFEST_UNKNOWN");
    // Grantable but not in the token (asked for pull,push; alice owns acme): the docker token
    // specification's answer, "401 Unauthorized … WWW-Authenticate … error="insufficient_scope"",
    // naming the scope to ask for; clients fetch a new token only after a 401.
    let delete = send_as(&app, &bearer, TestRequest::delete().uri("/v2/acme/app/manifests/v1")).await;
    assert_eq!(delete.status, StatusCode::UNAUTHORIZED);
    assert!(challenge(&delete).ends_with(r#",scope="repository:acme/app:delete",error="insufficient_scope""#));
    // With a token for the scope, the same request goes through.
    let wider = token(&app, Some(&alice.basic), &["repository:acme/app:delete"]).await;
    let tag_gone = send_as(&app, &wider, TestRequest::delete().uri("/v2/acme/app/manifests/v1")).await;
    assert_eq!(tag_gone.status, StatusCode::ACCEPTED);

    // Anonymous: a token with nothing in it is still a token.
    let anonymous = token(&app, None, &["repository:acme/app:pull"]).await;
    let denied = send_as(&app, &anonymous, TestRequest::get().uri("/v2/acme/app/manifests/v1")).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
}

async fn get_manifest(app: &impl App, auth: String) -> (StatusCode, String) {
    let reply = send_as(app, &auth, TestRequest::get().uri("/v2/acme/app/manifests/v1")).await;
    (reply.status, reply.header("www-authenticate").unwrap_or_default().to_owned())
}

async fn push_blob_as(app: &impl App, auth: &str, repo: &str, data: &[u8]) -> StatusCode {
    let digest = aerugo_oci::Digest::sha256_of(data);
    send_as(
        app,
        auth,
        TestRequest::post().uri(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")).set_payload(data.to_vec()),
    )
    .await
    .status
}

#[actix_web::test]
async fn oauth2_password_and_refresh_token_grants() {
    let (reg, alice, _) = tenants().await;
    let app = raw_app(&reg).await;
    let form = |body: String| {
        TestRequest::post()
            .uri("/v2/token")
            .insert_header(("content-type", "application/x-www-form-urlencoded"))
            .set_payload(body)
    };
    let reply = send(
        &app,
        form(format!(
            "grant_type=password&username=alice&password={}&service=aerugo&client_id=test&access_type=offline&scope={}",
            urlencode(&alice.password),
            urlencode("repository:acme/app:pull")
        )),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let refresh = reply.json()["refresh_token"].as_str().expect("refresh token").to_owned();
    // A refresh token is no access token.
    let misuse = send_as(&app, &format!("Bearer {refresh}"), TestRequest::get().uri("/v2/acme/app/manifests/v1")).await;
    assert_eq!(misuse.status, StatusCode::UNAUTHORIZED);

    let reply = send(
        &app,
        form(format!(
            "grant_type=refresh_token&refresh_token={refresh}&service=aerugo&client_id=test&scope={}",
            urlencode("repository:acme/app:pull repository:acme/app:push")
        )),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let bearer = format!("Bearer {}", reply.json()["access_token"].as_str().expect("token"));
    assert_eq!(push_blob_as(&app, &bearer, "acme/app", b"refreshed").await, StatusCode::CREATED);

    let wrong = send(&app, form("grant_type=password&username=alice&password=nope&service=aerugo".into())).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let unknown = send(&app, form("grant_type=client_credentials&service=aerugo".into())).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown.error_code(), "INVALID_REQUEST");
    let missing = send(&app, form("service=aerugo".into())).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    let forged = send(&app, form("grant_type=refresh_token&refresh_token=abc&service=aerugo".into())).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn bad_input_is_a_clear_4xx_never_a_500() {
    let (reg, alice, _) = tenants().await;
    let app = raw_app(&reg).await;
    for bad in ["Basic !!!not-base64", "Basic ", "Basic Og==", "Digest abc", "Bearer"] {
        let reply = send_as(&app, bad, TestRequest::get().uri("/v2/acme/app/manifests/v1")).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(reply.error_code(), "UNAUTHORIZED");
    }
    let huge = format!("Bearer {}", "a".repeat(10_000));
    let reply = send_as(&app, &huge, TestRequest::get().uri("/v2/")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    for scope in ["repository:acme/app", "repository:ACME:pull", "repository:acme/app:fly", "user:alice:*"] {
        let reply = send_as(
            &app,
            &alice.basic,
            TestRequest::get().uri(&format!("/v2/token?service=aerugo&scope={}", urlencode(scope))),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{scope}");
        assert_eq!(reply.error_code(), "INVALID_REQUEST");
    }
    let many: String = (0..70).map(|i| format!("&scope=repository:acme/r{i}:pull")).collect();
    let reply = send_as(&app, &alice.basic, TestRequest::get().uri(&format!("/v2/token?service=aerugo{many}"))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let bearer_at_token = send_as(&app, "Bearer x", TestRequest::get().uri("/v2/token?service=aerugo")).await;
    assert_eq!(bearer_at_token.status, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn tampered_expired_foreign_and_attenuated_tokens() {
    let (reg, alice, _) = tenants().await;
    let app = raw_app(&reg).await;
    let bearer = token(&app, Some(&alice.basic), &["repository:acme/app:pull,push"]).await;
    let raw = bearer.trim_start_matches("Bearer ").to_owned();
    assert_eq!(get_manifest(&app, bearer.clone()).await.0, StatusCode::OK);

    let mut bytes = raw.clone().into_bytes();
    let middle = bytes.len() / 2;
    bytes[middle] = if bytes[middle] == b'A' { b'B' } else { b'A' };
    let (status, challenge) = get_manifest(&app, format!("Bearer {}", String::from_utf8(bytes).expect("ascii"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.contains(r#"error="invalid_token""#));

    let claims = |expires_at| Claims {
        subject: "alice".into(),
        kind: TokenKind::Access,
        key_id: None,
        site_admin: false,
        access: vec![Scope::Repository { name: "acme/app".parse().expect("name"), actions: Actions::PULL }],
        expires_at,
    };
    let expired = reg.auth.keys().mint(&claims(SystemTime::now() - Duration::from_secs(5))).expect("mint");
    assert_eq!(get_manifest(&app, format!("Bearer {expired}")).await.0, StatusCode::UNAUTHORIZED);
    let foreign = aerugo_auth::token::TokenKeys::generate().mint(&claims(SystemTime::now() + Duration::from_secs(60)));
    assert_eq!(get_manifest(&app, format!("Bearer {}", foreign.expect("mint"))).await.0, StatusCode::UNAUTHORIZED);

    // Attenuated to pull only: the holder's narrower token cannot push.
    let pull_only =
        attenuate(&raw, &Restriction { actions: Some(Actions::PULL), ..Restriction::default() }).expect("attenuate");
    let pull_only = format!("Bearer {pull_only}");
    assert_eq!(get_manifest(&app, pull_only.clone()).await.0, StatusCode::OK);
    // (401: a token for push would be granted to alice, so the client should ask for one.)
    assert_eq!(push_blob_as(&app, &pull_only, "acme/app", b"narrowed").await, StatusCode::UNAUTHORIZED);
    assert_eq!(push_blob_as(&app, &bearer, "acme/app", b"wide").await, StatusCode::CREATED);
    // Attenuated to an earlier expiry that has passed: the issuer's token is still valid, but
    // the holder's check no longer lets it grant anything (401 insufficient_scope: a fresh
    // token would be granted).
    let short = attenuate(
        &raw,
        &Restriction { expires_at: Some(SystemTime::now() - Duration::from_secs(1)), ..Restriction::default() },
    )
    .expect("attenuate");
    let (status, challenge) = get_manifest(&app, format!("Bearer {short}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.contains(r#"error="insufficient_scope""#), "{challenge}");
    // Attenuated "beyond its rights": a holder's block claiming more grants nothing.
    let unverified = biscuit_auth::UnverifiedBiscuit::from_base64(&raw).expect("parse");
    let widened = unverified
        .append(biscuit_auth::macros::block!(r#"right("globex/app", "pull"); right("acme/app", "delete");"#))
        .and_then(|t| t.to_base64())
        .expect("append");
    let widened = format!("Bearer {widened}");
    let foreign_pull = send_as(&app, &widened, TestRequest::get().uri("/v2/globex/app/manifests/v1")).await;
    assert_eq!(foreign_pull.status, StatusCode::NOT_FOUND);
    let delete = send_as(&app, &widened, TestRequest::delete().uri("/v2/acme/app/manifests/v1")).await;
    assert_eq!(delete.status, StatusCode::UNAUTHORIZED, "not granted by the token; alice may ask for it");
}

/// Creates an API key for `user` through the management API; returns (key id, `Basic` value).
async fn api_key(app: &impl App, user: &User, scopes: serde_json::Value, expires_at: Option<&str>) -> (String, String) {
    let mut body = json!({ "name": "ci", "scopes": scopes });
    if let Some(at) = expires_at {
        body["expiresAt"] = json!(at);
    }
    let reply = send_as(app, &user.basic, TestRequest::post().uri("/api/v1/api-keys").set_json(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let created = reply.json();
    let key = created["key"].as_str().expect("key");
    (created["keyId"].as_str().expect("id").to_owned(), basic(&user.name, key))
}

#[actix_web::test]
async fn api_keys_are_scoped_expire_and_revoke_their_tokens() {
    let (reg, alice, _) = tenants().await;
    let app = raw_app(&reg).await;
    let (key_id, ci) =
        api_key(&app, &alice, json!([{ "repositories": "acme/ci/**", "actions": ["pull", "push"] }]), None).await;
    assert_eq!(push_blob_as(&app, &ci, "acme/ci/tools/builder", b"ci").await, StatusCode::CREATED);
    // Outside its glob the key gives nothing, though alice owns acme.
    let outside = send_as(&app, &ci, TestRequest::get().uri("/v2/acme/app/manifests/v1")).await;
    assert_eq!(outside.status, StatusCode::NOT_FOUND, "what it may not pull looks missing");
    assert_eq!(outside.error_code(), "MANIFEST_UNKNOWN");
    // The key works only with its owner's name.
    let secret = ci.clone();
    let as_bob = basic("bob", &key_from_basic(&secret));
    assert_eq!(send_as(&app, &as_bob, TestRequest::get().uri("/v2/")).await.status, StatusCode::UNAUTHORIZED);

    // A token issued against the key dies with it, on this node at once and on another node
    // (same signing key) at its next revocation refresh.
    let node_b_auth = actix_web::web::Data::new(aerugo_dataplane::auth::Auth::new(
        aerugo_db::pool(&reg.database_url, 2).expect("pool"),
        aerugo_auth::token::TokenKeys::from_hex(&reg.auth.keys().private_hex(), &[]).expect("keys"),
        aerugo_dataplane::config::AuthSettings::default(),
    ));
    let node_b = app_with(&reg.registry, &node_b_auth, &metrics(), None).await;
    let bearer = token(&app, Some(&ci), &["repository:acme/ci/app:pull,push"]).await;
    assert_eq!(push_blob_as(&app, &bearer, "acme/ci/app", b"before").await, StatusCode::CREATED);
    assert_eq!(
        send_as(&node_b, &bearer, TestRequest::get().uri("/v2/acme/ci/app/tags/list")).await.status,
        StatusCode::OK,
        "valid on node B"
    );
    let revoked = send_as(&app, &alice.basic, TestRequest::delete().uri(&format!("/api/v1/api-keys/{key_id}"))).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_eq!(push_blob_as(&app, &bearer, "acme/ci/app", b"after").await, StatusCode::UNAUTHORIZED);
    assert_eq!(send_as(&app, &ci, TestRequest::get().uri("/v2/")).await.status, StatusCode::UNAUTHORIZED);
    node_b_auth.refresh_revocations().await.expect("refresh");
    assert_eq!(
        send_as(&node_b, &bearer, TestRequest::get().uri("/v2/acme/ci/app/tags/list")).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Expired keys authenticate nothing; a key cannot be created already expired.
    let past = send_as(
        &app,
        &alice.basic,
        TestRequest::post().uri("/api/v1/api-keys").set_json(json!({
            "name": "old", "scopes": [{ "repositories": "acme/**", "actions": ["pull"] }],
            "expiresAt": "2001-01-01T00:00:00Z"
        })),
    )
    .await;
    assert_eq!(past.status, StatusCode::BAD_REQUEST);
    let expired = expired_key(&reg.database_url, "alice").await;
    assert_eq!(send_as(&app, &expired, TestRequest::get().uri("/v2/")).await.status, StatusCode::UNAUTHORIZED);
}

async fn expired_key(database_url: &str, owner: &str) -> String {
    let pool = aerugo_db::pool(database_url, 1).expect("pool");
    let client = pool.get().await.expect("client");
    let user = aerugo_db::tenancy::user(&client, owner).await.expect("query").expect("user");
    let key = aerugo_auth::apikey::generate().expect("key");
    let scopes = json!([{ "repositories": "**", "actions": ["pull"] }]);
    aerugo_db::tenancy::create_api_key(
        &client,
        &aerugo_db::tenancy::NewApiKey {
            key_id: &key.key_id,
            key_hash: &key.secret_hash,
            name: None,
            owner_user_id: user.id,
            scopes: &scopes,
            expires_at: Some(time::OffsetDateTime::now_utc() - time::Duration::minutes(1)),
        },
    )
    .await
    .expect("insert");
    basic(owner, &key.token)
}

fn key_from_basic(basic_value: &str) -> String {
    use base64::Engine;
    let decoded =
        base64::engine::general_purpose::STANDARD.decode(basic_value.trim_start_matches("Basic ")).expect("base64");
    String::from_utf8(decoded).expect("utf8").split_once(':').expect("pair").1.to_owned()
}

/// Failed passwords back off per (user, address), on every node: the guessing address waits
/// 1 s, then 2 s, …, even with the right password; the same user from another address — the
/// user themselves — is never locked out by someone failing with their name.
#[actix_web::test]
async fn failed_logins_back_off_per_user_and_address_across_nodes() {
    let (reg, alice, _) = tenants().await;
    let settings = aerugo_dataplane::config::AuthSettings { max_failures_per_user: 3, ..Default::default() };
    let node = |s: aerugo_dataplane::config::AuthSettings| {
        let pool = aerugo_db::pool(&reg.database_url, 2).expect("pool");
        actix_web::web::Data::new(aerugo_dataplane::auth::Auth::new(pool, aerugo_auth::token::TokenKeys::generate(), s))
    };
    let a = app_with(&reg.registry, &node(settings.clone()), &metrics(), None).await;
    let b = app_with(&reg.registry, &node(settings), &metrics(), None).await;
    let from = |addr: &str| TestRequest::get().uri("/v2/").peer_addr(addr.parse().expect("socket address"));
    let (attacker, owner) = ("192.0.2.66:40000", "198.51.100.7:40000");
    let wrong = basic("alice", "wrong-password");
    for _ in 0..3 {
        assert_eq!(send_as(&a, &wrong, from(attacker)).await.status, StatusCode::UNAUTHORIZED);
    }
    let wait = |reply: &Reply| -> u64 { reply.header("retry-after").expect("Retry-After").parse().expect("seconds") };
    for app in [&a, &b] {
        let reply = send_as(app, &alice.basic, from(attacker)).await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "even the right password waits");
        assert_eq!(reply.error_code(), "TOOMANYREQUESTS");
        assert_eq!(wait(&reply), 1);
    }
    // The user, from their own address, is not locked out by the guesses.
    assert_eq!(send_as(&b, &alice.basic, from(owner)).await.status, StatusCode::OK);
    // Another failure once the wait is over doubles it.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(send_as(&a, &wrong, from(attacker)).await.status, StatusCode::UNAUTHORIZED);
    let reply = send_as(&b, &wrong, from(attacker)).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert!((1..=2).contains(&wait(&reply)), "{}", wait(&reply));
    // Another user from the guessing address is not affected.
    let bob = basic("bob", "pw-bob-secret");
    assert_eq!(send_as(&b, &bob, from(attacker)).await.status, StatusCode::OK);
}

#[actix_web::test]
async fn public_repositories_allow_anonymous_pull_but_never_push() {
    let (reg, alice, _) = tenants().await;
    let app = raw_app(&reg).await;
    let made_public = send_as(
        &app,
        &alice.basic,
        TestRequest::patch().uri("/api/v1/orgs/acme/repositories/app").set_json(json!({ "visibility": "public" })),
    )
    .await;
    assert_eq!(made_public.status, StatusCode::OK, "{:?}", made_public.body);
    assert_eq!(call(&app, Method::GET, "/v2/acme/app/manifests/v1").await.status, StatusCode::OK);
    let anonymous = token(&app, None, &["repository:acme/app:pull,push"]).await;
    assert_eq!(
        send_as(&app, &anonymous, TestRequest::get().uri("/v2/acme/app/tags/list")).await.status,
        StatusCode::OK
    );
    assert_eq!(push_blob_as(&app, &anonymous, "acme/app", b"anon").await, StatusCode::UNAUTHORIZED);
    let reply = call(&app, Method::POST, "/v2/acme/app/blobs/uploads/").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // The anonymous catalog lists public repositories only.
    let catalog_token = token(&app, None, &["registry:catalog:*"]).await;
    let catalog = send_as(&app, &catalog_token, TestRequest::get().uri("/v2/_catalog")).await;
    assert_eq!(catalog.json()["repositories"], json!(["acme/app"]));
}

/// Appended blocks run as Datalog on every check: an anonymous token (free to get) with a
/// block of the holder's, or any token with more blocks than attenuation needs, is refused
/// before its blocks are evaluated; and what one token remembers of its decisions is bounded
/// however many names a caller checks it against.
#[actix_web::test]
async fn hostile_tokens_are_refused_and_decision_memory_is_bounded() {
    let (reg, alice, _) = tenants().await;
    let app = raw_app(&reg).await;
    let public = json!({ "visibility": "public" });
    let made_public =
        send_as(&app, &alice.basic, TestRequest::patch().uri("/api/v1/orgs/acme/repositories/app").set_json(public))
            .await;
    assert_eq!(made_public.status, StatusCode::OK);
    let anonymous = token(&app, None, &["repository:acme/app:pull"]).await;
    assert_eq!(get_manifest(&app, anonymous.clone()).await.0, StatusCode::OK);
    let append = |token: &str, n: usize| {
        let mut raw = token.trim_start_matches("Bearer ").to_owned();
        for i in 0..n {
            let block = biscuit_auth::macros::block!(r#"noise({i});"#, i = i as i64);
            raw = biscuit_auth::UnverifiedBiscuit::from_base64(&raw)
                .and_then(|t| t.append(block))
                .and_then(|t| t.to_base64())
                .expect("append");
        }
        format!("Bearer {raw}")
    };
    let (status, challenge) = get_manifest(&app, append(&anonymous, 1)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "an anonymous token with a holder's block");
    assert!(challenge.contains(r#"error="invalid_token""#));
    let bearer = token(&app, Some(&alice.basic), &["repository:acme/app:pull"]).await;
    let max = aerugo_dataplane::auth::tokens::MAX_APPENDED_BLOCKS;
    assert_eq!(get_manifest(&app, append(&bearer, max)).await.0, StatusCode::OK, "attenuation still works");
    assert_eq!(get_manifest(&app, append(&bearer, max + 1)).await.0, StatusCode::UNAUTHORIZED);

    // One token checked against many names remembers at most the bound.
    let cached = reg
        .auth
        .verify_token(bearer.trim_start_matches("Bearer "), TokenKind::Access)
        .unwrap_or_else(|_| panic!("a valid token"));
    for i in 0..1000 {
        let name: aerugo_oci::RepoName = format!("acme/probe-{i}").parse().expect("name");
        assert!(!cached.allows(&aerugo_auth::token::Need::Repository(&name, aerugo_auth::Action::Pull)));
    }
    assert_eq!(cached.remembered(), aerugo_dataplane::auth::tokens::MAX_DECISIONS_PER_TOKEN);
    let app_name: aerugo_oci::RepoName = "acme/app".parse().expect("name");
    assert!(cached.allows(&aerugo_auth::token::Need::Repository(&app_name, aerugo_auth::Action::Pull)));
}

#[actix_web::test]
async fn tokens_of_the_previous_key_are_accepted_during_rotation() {
    let (reg, alice, _) = tenants().await;
    let old_node = raw_app(&reg).await;
    let old_token = token(&old_node, Some(&alice.basic), &["repository:acme/app:pull"]).await;
    let rotated = |previous: &[&str]| {
        let keys =
            aerugo_auth::token::TokenKeys::from_hex(&aerugo_auth::token::TokenKeys::generate().private_hex(), previous)
                .expect("keys");
        let pool = aerugo_db::pool(&reg.database_url, 2).expect("pool");
        actix_web::web::Data::new(aerugo_dataplane::auth::Auth::new(pool, keys, Default::default()))
    };
    let old_key = reg.auth.keys().private_hex();
    let during = app_with(&reg.registry, &rotated(&[&old_key]), &metrics(), None).await;
    let pulled = send_as(&during, &old_token, TestRequest::get().uri("/v2/acme/app/manifests/v1")).await;
    assert_eq!(pulled.status, StatusCode::OK, "a token of the previous key still works");
    let new_token = token(&during, Some(&alice.basic), &["repository:acme/app:pull"]).await;
    assert_eq!(
        send_as(&during, &new_token, TestRequest::get().uri("/v2/acme/app/manifests/v1")).await.status,
        StatusCode::OK
    );
    let after = app_with(&reg.registry, &rotated(&[]), &metrics(), None).await;
    let refused = send_as(&after, &old_token, TestRequest::get().uri("/v2/acme/app/manifests/v1")).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "once the old key is dropped its tokens stop");
}

/// Rate limits answer 429 `TOOMANYREQUESTS` with `Retry-After` once a client, an organization
/// or a client's token requests exceed theirs; other subjects and health checks are not
/// affected; refusals are counted in the metrics.
#[actix_web::test]
async fn rate_limits_refuse_with_429_and_retry_after() {
    use aerugo_dataplane::auth::Auth;
    use aerugo_dataplane::auth::limits::{Rate, RateLimits};
    use aerugo_dataplane::config::AuthSettings;

    let t = fs_registry().await;
    let limits = RateLimits {
        client: None,
        organization: Some(Rate { per_second: 0.5, burst: 3.0 }),
        token: Some(Rate { per_second: 0.5, burst: 2.0 }),
    };
    let pool = aerugo_db::pool(&t.database_url, 4).expect("pool");
    let auth = actix_web::web::Data::new(Auth::new(
        pool,
        aerugo_auth::token::TokenKeys::generate(),
        AuthSettings { rate_limits: limits, ..AuthSettings::default() },
    ));
    let metrics = metrics();
    let app = app_with(&t.registry, &auth, &metrics, Some(&t.admin)).await;
    for _ in 0..3 {
        assert_eq!(call(&app, Method::GET, "/v2/busy/app/tags/list").await.status, StatusCode::NOT_FOUND);
    }
    let refused = call(&app, Method::GET, "/v2/busy/app/tags/list").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.error_code(), "TOOMANYREQUESTS");
    assert_eq!(refused.header("retry-after"), Some("2"));
    assert_eq!(call(&app, Method::GET, "/v2/quiet/app/tags/list").await.status, StatusCode::NOT_FOUND);
    assert_eq!(call(&app, Method::GET, "/healthz").await.status, StatusCode::OK);
    for _ in 0..2 {
        assert_eq!(call(&app, Method::GET, "/v2/token?scope=repository:quiet/app:pull").await.status, StatusCode::OK);
    }
    let refused = call(&app, Method::GET, "/v2/token?scope=repository:quiet/app:pull").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    let text = metrics.render(t.registry.pool_status());
    assert!(text.contains("aerugo_rate_limited_total{limit=\"organization\"} 1"), "{text}");
    assert!(text.contains("aerugo_rate_limited_total{limit=\"token\"} 1"), "{text}");
    assert!(text.contains("status=\"429\""), "429s are counted as requests too");
}

/// The docker token specification: a request whose token lacks the scope gets "401 Unauthorized"
/// with "WWW-Authenticate: Bearer realm=…,service=…,scope=…,error="insufficient_scope"", and the
/// client asks for a token with that scope. A client that reuses one token across repositories
/// (its first push to a second repository) then succeeds after one round trip; what no token
/// could grant (a pull-only key asking to push; another tenant's repository; an immutable tag)
/// stays `403 DENIED`, so the client does not loop.
#[actix_web::test]
async fn a_token_without_the_scope_is_401_insufficient_scope_and_a_new_token_succeeds() {
    let (reg, alice, _) = tenants().await;
    let app = raw_app(&reg).await;
    let first = token(&app, Some(&alice.basic), &["repository:acme/app:pull,push"]).await;
    assert_eq!(push_blob_as(&app, &first, "acme/app", b"first").await, StatusCode::CREATED);
    // The same token reused for a second repository of hers (missing yet: a push creates it).
    let reused = send_as(&app, &first, TestRequest::post().uri("/v2/acme/second/blobs/uploads/")).await;
    assert_eq!(reused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reused.error_code(), "UNAUTHORIZED");
    let asked = challenge(&reused);
    assert!(asked.starts_with(r#"Bearer realm=""#) && asked.contains(r#"service="aerugo""#), "{asked}");
    assert!(asked.ends_with(r#",scope="repository:acme/second:pull,push",error="insufficient_scope""#));
    // The client asks for what the challenge names, and the push goes through.
    let scope = asked.split("scope=\"").nth(1).and_then(|s| s.split('"').next()).expect("scope");
    let second = token(&app, Some(&alice.basic), &[scope]).await;
    assert_eq!(push_blob_as(&app, &second, "acme/second", b"second").await, StatusCode::CREATED);

    // A pull-only key: its token can never push, so 403, not a challenge to loop on.
    let (_, pull_key) = api_key(&app, &alice, json!([{ "repositories": "acme/**", "actions": ["pull"] }]), None).await;
    let asked = token(&app, Some(&pull_key), &["repository:acme/app:pull,push"]).await;
    let refused = send_as(&app, &asked, TestRequest::post().uri("/v2/acme/app/blobs/uploads/")).await;
    assert_eq!((refused.status, refused.error_code().as_str()), (StatusCode::FORBIDDEN, "DENIED"));
    // Another tenant's repository, existing or not: a pull is 404 as if missing, a push 403
    // with the scope named (a client that refreshes only after a 403, oras-py, tries once).
    for repo in ["globex/app", "globex/never-pushed"] {
        let other = send_as(&app, &first, TestRequest::get().uri(&format!("/v2/{repo}/manifests/v1"))).await;
        assert_eq!((other.status, other.error_code().as_str()), (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"), "{repo}");
        let push = send_as(&app, &first, TestRequest::post().uri(&format!("/v2/{repo}/blobs/uploads/"))).await;
        assert_eq!((push.status, push.error_code().as_str()), (StatusCode::FORBIDDEN, "DENIED"), "{repo}");
        assert!(challenge(&push).contains(r#"error="insufficient_scope""#), "{repo}");
    }
}
