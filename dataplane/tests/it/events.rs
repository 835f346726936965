//! Events: each change writes its event in its own transaction (whoever makes it), a refused
//! change writes none, a repository's events are numbered without gaps; the feed and the
//! subscriptions of the management API.

use actix_web::http::{Method, StatusCode};
use actix_web::test::TestRequest;
use aerugo_oci::Digest;
use serde_json::{Value, json};

use crate::harness::*;

async fn api(app: &impl App, auth: &str, method: Method, uri: &str, body: Option<Value>) -> Reply {
    let mut req = TestRequest::default().method(method).uri(uri);
    if let Some(body) = body {
        req = req.set_json(body);
    }
    send_as(app, auth, req).await
}

/// The organization's events, oldest first, of stream `stream`: (type, sequence, data).
async fn stream(app: &impl App, auth: &str, org: &str, stream: &str) -> Vec<(String, u64, Value)> {
    let reply = api(app, auth, Method::GET, &format!("/api/v1/orgs/{org}/events?limit=1000"), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let mut events: Vec<Value> = reply.json().as_array().expect("array").clone();
    events.reverse();
    events
        .into_iter()
        .filter(|e| e["partitionkey"] == stream)
        .map(|e| {
            assert_eq!(e["specversion"], "1.0");
            assert_eq!(e["source"], format!("/orgs/{org}"));
            (
                e["type"].as_str().expect("type").trim_start_matches("io.aerugo.").to_owned(),
                e["sequence"].as_str().expect("sequence").parse().expect("number"),
                e["data"].clone(),
            )
        })
        .collect()
}

#[actix_web::test]
async fn every_change_writes_its_event_in_its_transaction_and_a_refused_one_none() {
    let reg = fs_registry().await;
    let alice = seed_user(&reg.database_url, "alice", false).await;
    seed_org(&reg.database_url, "acme", "alice").await;
    let admin = app(&reg).await;
    let users = raw_app(&reg).await;

    let first = push_image(&admin, "acme/app", "v1", 1).await;
    let second = push_image(&admin, "acme/app", "v1", 2).await;
    // Refused: a manifest over a blob the repository lacks, and a push by a reader.
    let missing = image_manifest(&(Digest::sha256_of(b"absent"), 6), &[]);
    let refused = put_manifest(&admin, "acme/app", "v2", OCI_MANIFEST, &missing).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    // Deleting the untagged first manifest, then the tagged second (its tag goes with it).
    assert_eq!(
        call(&admin, Method::DELETE, &format!("/v2/acme/app/manifests/{first}")).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        call(&admin, Method::DELETE, &format!("/v2/acme/app/manifests/{second}")).await.status,
        StatusCode::ACCEPTED
    );

    let events = stream(&users, &alice.basic, "acme", "acme/app").await;
    let kinds: Vec<&str> = events.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "repository.created",
            "manifest.pushed",
            "tag.created",
            "manifest.pushed",
            "tag.moved",
            "manifest.deleted",
            "manifest.deleted",
            "tag.deleted",
        ]
    );
    let sequences: Vec<u64> = events.iter().map(|(_, s, _)| *s).collect();
    assert_eq!(sequences, (1..=8).collect::<Vec<_>>(), "numbered without gaps, the refused push left none");
    assert_eq!(events[1].2["digest"], first.to_string());
    assert_eq!(
        events[4].2,
        json!({ "repository": "acme/app", "tag": "v1", "digest": second.to_string(), "previousDigest": first.to_string() })
    );
    assert_eq!(events[6].2["digest"], second.to_string());
    assert_eq!(
        events[7].2,
        json!({ "repository": "acme/app", "tag": "v1", "digest": second.to_string() }),
        "the tag that went with its manifest"
    );

    // Writers other than the data plane: SQL by hand (as the operator writes keys).
    let pool = aerugo_db::pool(&reg.database_url, 1).expect("pool");
    let client = pool.get().await.expect("client");
    client
        .batch_execute(
            "INSERT INTO api_keys (key_id, key_hash, name, org_id, managed_by)
               SELECT 'k1', '\\x00', 'ci', id, 'kubernetes' FROM organizations WHERE name = 'acme';
             UPDATE api_keys SET revoked_at = now() WHERE key_id = 'k1';
             UPDATE api_keys SET revoked_at = now() WHERE key_id = 'k1';",
        )
        .await
        .expect("a key created and revoked (twice)");
    let keys = stream(&users, &alice.basic, "acme", "acme").await;
    let kinds: Vec<(&str, u64)> = keys.iter().map(|(k, s, _)| (k.as_str(), *s)).collect();
    assert_eq!(kinds, [("key.created", 1), ("key.revoked", 2)], "a second revocation is no event");
    assert_eq!(keys[0].2["keyId"], "k1");

    // A push over the quota is refused, and that is an event.
    client.execute("UPDATE organizations SET quota_bytes = 10 WHERE name = 'acme'", &[]).await.expect("quota");
    let blob = vec![3u8; 100];
    let over = send(
        &admin,
        TestRequest::post()
            .uri(&format!("/v2/acme/q/blobs/uploads/?digest={}", Digest::sha256_of(&blob)))
            .insert_header(("content-type", "application/octet-stream"))
            .set_payload(blob.clone()),
    )
    .await;
    assert_eq!(over.status, StatusCode::FORBIDDEN);
    let q = stream(&users, &alice.basic, "acme", "acme/q").await;
    assert_eq!(q.last().map(|(k, _, _)| k.as_str()), Some("quota.exceeded"), "{q:?}");
    assert_eq!(q.last().map(|(_, _, d)| d["quota"].clone()), Some(json!(10)));
    client.execute("UPDATE organizations SET quota_bytes = NULL WHERE name = 'acme'", &[]).await.expect("no quota");

    // Pulls are events only for an organization with a subscription to them; batched.
    let pulled = push_image(&admin, "acme/pulled", "latest", 3).await;
    let pull = || call(&admin, Method::GET, "/v2/acme/pulled/manifests/latest");
    assert_eq!(pull().await.status, StatusCode::OK);
    reg.registry.flush_pulls().await.expect("flush");
    assert!(!stream(&users, &alice.basic, "acme", "acme/pulled").await.iter().any(|(k, _, _)| k == "manifest.pulled"));
    let sub = json!({ "name": "pulls", "endpoint": "http://127.0.0.1:9/", "types": ["io.aerugo.manifest.pulled"] });
    assert_eq!(
        api(&users, &alice.basic, Method::POST, "/api/v1/orgs/acme/subscriptions", Some(sub)).await.status,
        StatusCode::CREATED
    );
    for _ in 0..3 {
        assert_eq!(pull().await.status, StatusCode::OK);
    }
    reg.registry.flush_pulls().await.expect("flush");
    let pulls: Vec<Value> = stream(&users, &alice.basic, "acme", "acme/pulled")
        .await
        .into_iter()
        .filter(|(k, _, _)| k == "manifest.pulled")
        .map(|(_, _, d)| d)
        .collect();
    assert_eq!(pulls.len(), 1, "one event per batch: {pulls:?}");
    assert_eq!((pulls[0]["digest"].as_str(), pulls[0]["pulls"].as_i64()), (Some(pulled.to_string().as_str()), Some(3)));

    // A deleted repository is one event: its cascade of tags and manifests says nothing.
    let reply = api(&users, &alice.basic, Method::DELETE, "/api/v1/orgs/acme/repositories/pulled", None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{:?}", reply.body);
    let last = stream(&users, &alice.basic, "acme", "acme/pulled").await;
    let tail: Vec<&str> = last.iter().rev().take(2).map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(tail, ["repository.deleted", "manifest.pulled"]);
}

#[actix_web::test]
async fn subscriptions_through_the_api_for_its_own_organizations_only() {
    let reg = fs_registry().await;
    let alice = seed_user(&reg.database_url, "alice", false).await;
    let bob = seed_user(&reg.database_url, "bob", false).await;
    seed_org(&reg.database_url, "acme", "alice").await;
    seed_org(&reg.database_url, "gitops", "alice").await;
    let app = raw_app(&reg).await;
    let base = "/api/v1/orgs/acme/subscriptions";
    let new = json!({
        "name": "ci", "endpoint": "https://hooks.example.test/aerugo",
        "types": ["io.aerugo.manifest.pushed"], "repositories": ["team/*"], "batchSize": 50,
        "signingSecret": "sixteen-bytes-at-least",
    });
    let created = api(&app, &alice.basic, Method::POST, base, Some(new.clone())).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let view = created.json();
    assert_eq!(
        (view["signed"].as_bool(), view["batchSize"].as_i64(), view["failing"].as_bool()),
        (Some(true), Some(50), Some(false))
    );
    assert!(view.get("signingSecret").is_none(), "the secret is never returned");
    assert_eq!(api(&app, &alice.basic, Method::POST, base, Some(new.clone())).await.status, StatusCode::CONFLICT);
    for (field, bad) in [
        ("endpoint", json!("file:///etc/passwd")),
        ("endpoint", json!("https://user:pw@hooks.example.test/")),
        ("types", json!(["io.aerugo.nothing"])),
        ("types", json!([])),
        ("repositories", json!(["team/["])),
        ("batchSize", json!(0)),
        ("signingSecret", json!("short")),
        ("name", json!("Not A Name")),
    ] {
        let mut body = new.clone();
        body["name"] = json!("other");
        body[field] = bad.clone();
        let reply = api(&app, &alice.basic, Method::POST, base, Some(body)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{field} = {bad}: {:?}", reply.body);
    }
    // Others see nothing of it; members of other organizations are not admins of this one.
    assert_eq!(api(&app, &bob.basic, Method::GET, base, None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api(&app, &bob.basic, Method::GET, "/api/v1/orgs/acme/events", None).await.status,
        StatusCode::NOT_FOUND
    );
    let listed = api(&app, &alice.basic, Method::GET, base, None).await;
    assert_eq!(listed.json().as_array().map(Vec::len), Some(1));
    let replay = api(
        &app,
        &alice.basic,
        Method::POST,
        &format!("{base}/ci/replay"),
        Some(json!({ "from": "2026-01-01T00:00:00Z" })),
    )
    .await;
    assert_eq!(replay.status, StatusCode::ACCEPTED);
    assert_eq!(
        api(&app, &alice.basic, Method::DELETE, &format!("{base}/ci"), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(api(&app, &alice.basic, Method::GET, &format!("{base}/ci"), None).await.status, StatusCode::NOT_FOUND);

    // An organization Kubernetes manages takes EventSubscription objects instead.
    let pool = aerugo_db::pool(&reg.database_url, 1).expect("pool");
    let client = pool.get().await.expect("client");
    client
        .execute("UPDATE organizations SET managed_by = 'kubernetes' WHERE name = 'gitops'", &[])
        .await
        .expect("handover");
    let refused = api(&app, &alice.basic, Method::POST, "/api/v1/orgs/gitops/subscriptions", Some(new)).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused.json()["message"].as_str().is_some_and(|m| m.contains("EventSubscription")), "{:?}", refused.body);
}
