//! Storage is given back: retention deletes the tags its policy selects, the collector deletes
//! the manifests nothing keeps and then the blobs only they used, from the database and from
//! storage (Garage, or a temp directory), while everything still tagged keeps pulling. The
//! review delay is set to zero here so that one collection does what takes a day and a day in
//! production.

use std::collections::BTreeSet;

use actix_web::http::{Method, StatusCode};
use aerugo_db::retention::{self, Mode, Report};
use aerugo_oci::{Algorithm, Digest};
use aerugo_operator::collector::{Collected, Options, collect};
use aerugo_storage::{AnyStore, BlobStore as _, FsStore, S3Store, blob_key};
use serde_json::{Value, json};

use crate::harness::*;

async fn no_review_delay(database_url: &str) -> aerugo_db::Pool {
    let pool = aerugo_db::pool(database_url, 4).expect("pool");
    let client = pool.get().await.expect("client");
    aerugo_db::gc::set_review_delay(&client, std::time::Duration::ZERO).await.expect("delay");
    pool
}

/// The app of a node over `t`'s database and `store` whose cache is retired by change
/// notifications, as a serving node's is (retention and the collector announce their changes).
async fn listening_app(t: &TestRegistry, store: AnyStore) -> impl App + use<> {
    let cache = std::sync::Arc::new(aerugo_dataplane::cache::Cache::local());
    actix_web::rt::spawn(aerugo_dataplane::cache::listen::run(
        t.database_url.clone(),
        cache.clone(),
        t.auth.clone().into_inner(),
    ));
    let pool = aerugo_db::pool(&t.database_url, 8).expect("pool");
    let settings = aerugo_dataplane::config::Settings {
        redirect: aerugo_dataplane::config::RedirectMode::Proxy,
        ..Default::default()
    };
    let registry = actix_web::web::Data::new(aerugo_dataplane::Registry::new(pool, store, settings).with_cache(cache));
    // Let the listener connect before anything is cached.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    app_with(&registry, &t.auth, &metrics(), Some(&t.admin)).await
}

async fn gc(pool: &aerugo_db::Pool, store: &AnyStore) -> Collected {
    collect(pool, store, Options { batch: 7, dry_run: false, require_in_use: false }).await.expect("collect")
}

async fn set_policy(pool: &aerugo_db::Pool, repository: &str, policy: Value) {
    let client = pool.get().await.expect("client");
    let n = client
        .execute("UPDATE repositories SET retention = $2 WHERE name = $1", &[&repository, &policy])
        .await
        .expect("policy");
    assert_eq!(n, 1, "no repository {repository}");
}

async fn run_retention(pool: &aerugo_db::Pool, repository: &str) -> Report {
    let mut client = pool.get().await.expect("client");
    let tx = client.transaction().await.expect("tx");
    let subject = retention::subject(&tx, repository).await.expect("subject").expect("repository");
    let report = retention::run(&tx, &subject, time::OffsetDateTime::now_utc(), true).await.expect("run");
    tx.commit().await.expect("commit");
    report
}

async fn count(pool: &aerugo_db::Pool, sql: &str) -> i64 {
    pool.get().await.expect("client").query_one(sql, &[]).await.expect(sql).get(0)
}

async fn tags(app: &impl App, repo: &str) -> BTreeSet<String> {
    let reply = call(app, Method::GET, &format!("/v2/{repo}/tags/list")).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.json()["tags"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect()
}

/// Pulls `reference` and every blob its manifest names; panics on any failure.
async fn pulls(app: &impl App, repo: &str, reference: &str) {
    let reply = send(
        app,
        actix_web::test::TestRequest::get()
            .uri(&format!("/v2/{repo}/manifests/{reference}"))
            .insert_header(("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{repo}:{reference} does not pull");
    let manifest = reply.json();
    let blobs =
        manifest["layers"].as_array().cloned().unwrap_or_default().into_iter().chain([manifest["config"].clone()]);
    for blob in blobs.filter(|b| b.is_object()) {
        let digest = blob["digest"].as_str().unwrap();
        let reply = call(app, Method::GET, &format!("/v2/{repo}/blobs/{digest}")).await;
        assert!(reply.status.is_success() || reply.status.is_redirection(), "{repo}:{reference} blob {digest}");
    }
}

/// An image of a config and the given layers, pushed and tagged `tags` (by digest, untagged,
/// when there are none); returns the manifest's digest, the config's and the manifest.
async fn push_layers(
    app: &impl App,
    repo: &str,
    tags: &[&str],
    seed: u64,
    layers: &[&[u8]],
) -> (Digest, Digest, Vec<u8>) {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}").into_bytes();
    let c = push_blob(app, repo, &config).await;
    let mut descriptors = Vec::new();
    for layer in layers {
        descriptors.push((push_blob(app, repo, layer).await, layer.len()));
    }
    let manifest = image_manifest(&(c.clone(), config.len()), &descriptors);
    let digest = Digest::sha256_of(&manifest);
    let by_digest = digest.to_string();
    let references: Vec<&str> = if tags.is_empty() { vec![&by_digest] } else { tags.to_vec() };
    for reference in references {
        let reply = put_manifest(app, repo, reference, OCI_MANIFEST, &manifest).await;
        assert_eq!(reply.status, StatusCode::CREATED, "manifest push: {:?}", reply.body);
    }
    (digest, c, manifest)
}

async fn usage(pool: &aerugo_db::Pool, org: &str) -> i64 {
    let client = pool.get().await.expect("client");
    let id: i64 = client.query_one("SELECT id FROM organizations WHERE name = $1", &[&org]).await.expect("org").get(0);
    aerugo_db::declared::org_usage(&client, id).await.expect("usage").0
}

/// The issue's scenario on Garage: 50 builds, each tagged `build-N` and moving `latest`, under
/// `keepLast: 5` for `build-*`. The dry run reports exactly what Enforce then deletes; after the
/// collection 45 manifests and their own layers are gone from the database and the bucket, the
/// shared layer stays, every remaining tag pulls, usage falls by the bytes reported, and the
/// consistency scan finds nothing.
#[actix_web::test]
async fn keep_last_gives_storage_back_on_s3() {
    let Some(config) = s3_config().await else {
        aerugo_test_support::skip("Garage (AERUGO_TEST_S3)");
        return;
    };
    let db = fresh_db().await;
    let registry = s3_registry(&db, &config, aerugo_dataplane::config::RedirectMode::Proxy).await;
    let store = AnyStore::S3(S3Store::new(&config));
    let app = listening_app(&registry, store.clone()).await;
    let pool = no_review_delay(&db).await;
    let repo = "acme/app";
    let shared = bytes_of(30_000, 1);
    let mut builds = Vec::new();
    for i in 1..=50u64 {
        let own = bytes_of(2_000 + i as usize, 100 + i);
        let tag = format!("build-{i}");
        let (manifest, config_digest, _) = push_layers(&app, repo, &[&tag, "latest"], i, &[&shared, &own]).await;
        builds.push((tag, manifest, config_digest, Digest::sha256_of(&own)));
    }
    let before = usage(&pool, "acme").await;

    set_policy(&pool, repo, json!({ "mode": "DryRun", "keepLast": 5, "tagPattern": "build-*" })).await;
    let dry = run_retention(&pool, repo).await;
    assert_eq!((dry.mode, dry.tags, dry.manifests, dry.deleted), (Mode::DryRun, 45, 45, 0));
    let newest_gone: Vec<String> = (26..=45).rev().map(|i| format!("build-{i}")).collect();
    assert_eq!(dry.first_tags, newest_gone, "the first 20 tags, newest first");
    let own: Vec<String> = builds[..45].iter().flat_map(|(_, _, c, l)| [c.to_string(), l.to_string()]).collect();
    let own_bytes: i64 = pool
        .get()
        .await
        .expect("client")
        .query_one("SELECT sum(size)::bigint FROM blobs WHERE digest = ANY($1)", &[&own])
        .await
        .expect("sizes")
        .get(0);
    assert_eq!(dry.bytes, own_bytes, "the bytes of the 45 configs and own layers");
    assert_eq!(tags(&app, repo).await.len(), 51, "a dry run deletes nothing");
    assert_eq!(gc(&pool, &store).await.manifests_deleted, 0, "nor does the collector under a dry run");

    set_policy(&pool, repo, json!({ "mode": "Enforce", "keepLast": 5, "tagPattern": "build-*" })).await;
    let enforced = run_retention(&pool, repo).await;
    assert_eq!(
        (enforced.tags, &enforced.first_tags, enforced.manifests, enforced.bytes, enforced.deleted),
        (dry.tags, &dry.first_tags, dry.manifests, dry.bytes, 45),
        "Enforce deletes what the dry run reported"
    );
    let kept: BTreeSet<String> = (46..=50).map(|i| format!("build-{i}")).chain(["latest".into()]).collect();
    // The node's cached tag list is retired by the run's change notification.
    let mut listed = tags(&app, repo).await;
    for _ in 0..50 {
        if listed == kept {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        listed = tags(&app, repo).await;
    }
    assert_eq!(listed, kept);

    let collected = gc(&pool, &store).await;
    assert_eq!(collected.manifests_deleted, 45);
    assert_eq!((collected.deleted, collected.bytes), (90, dry.bytes), "each gone build's config and layer");
    assert_eq!(count(&pool, "SELECT count(*) FROM manifests").await, 5);
    for (i, (_, manifest, config_digest, layer)) in builds.iter().enumerate() {
        let gone = i < 45;
        for digest in [config_digest, layer] {
            let object = store.size(&blob_key(digest)).await.expect("size");
            assert_eq!(object.is_none(), gone, "build {} blob {digest} in the bucket", i + 1);
            let rows = count(&pool, &format!("SELECT count(*) FROM blobs WHERE digest = '{digest}'")).await;
            assert_eq!(rows == 0, gone, "build {} blob {digest} row", i + 1);
        }
        let status = call(&app, Method::HEAD, &format!("/v2/{repo}/manifests/{manifest}")).await.status;
        assert_eq!(status == StatusCode::NOT_FOUND, gone, "build {} manifest", i + 1);
    }
    assert!(
        store.size(&blob_key(&Digest::sha256_of(&shared))).await.expect("size").is_some(),
        "the shared layer stays"
    );
    for tag in &kept {
        pulls(&app, repo, tag).await;
    }
    assert_eq!(before - usage(&pool, "acme").await, dry.bytes, "the organization's usage falls by what went");
    let scan = aerugo_dataplane::fsck::fsck(&pool, &store, true, false).await.expect("fsck");
    assert!(scan.problems.is_empty(), "{:?}", scan.problems);
}

/// What keeps an untagged manifest: an index listing it, a subject it refers to, a Pod using
/// it. What goes: an orphan, an index once untagged (then its children), a subject once
/// untagged (then its signature).
#[actix_web::test]
async fn indexes_subjects_and_pods_keep_manifests() {
    let t = fs_registry().await;
    let app = app(&t).await;
    let pool = no_review_delay(&t.database_url).await;
    let store = AnyStore::Fs(FsStore::new(t.storage_dir()).await.expect("store"));
    let repo = "acme/multi";
    // Two platform images pushed by digest, listed by an index tagged `multi`.
    let (amd, _, amd_body) = push_layers(&app, repo, &[], 1, &[&bytes_of(100, 1)]).await;
    let (arm, _, arm_body) = push_layers(&app, repo, &[], 2, &[&bytes_of(100, 2)]).await;
    let children = [&amd, &arm];
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": children.iter().zip([&amd_body, &arm_body]).map(|(d, b)| json!({ "mediaType": OCI_MANIFEST, "digest": d, "size": b.len() })).collect::<Vec<_>>(),
    }))
    .unwrap();
    assert_eq!(put_manifest(&app, repo, "multi", OCI_INDEX, &index).await.status, StatusCode::CREATED);
    // An image tagged `signed` and its signature (a referrer, untagged).
    let (signed, _, signed_body) = push_layers(&app, repo, &["signed"], 3, &[&bytes_of(100, 3)]).await;
    let empty = push_blob(&app, repo, b"{}").await;
    let signature = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2 },
        "layers": [{ "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2 }],
        "subject": { "mediaType": OCI_MANIFEST, "digest": signed, "size": signed_body.len() },
    }))
    .unwrap();
    let signature_digest = Digest::sha256_of(&signature);
    assert_eq!(
        put_manifest(&app, repo, &signature_digest.to_string(), OCI_MANIFEST, &signature).await.status,
        StatusCode::CREATED
    );
    // An orphan, and an untagged image a Pod runs.
    let (orphan, _, _) = push_layers(&app, repo, &[], 4, &[&bytes_of(100, 4)]).await;
    let (running, _, _) = push_layers(&app, repo, &[], 5, &[&bytes_of(100, 5)]).await;
    pool.get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO digests_in_use (digest, pods, example) VALUES ($1, 1, 'team/web')",
            &[&running.to_string()],
        )
        .await
        .unwrap();

    let dry = collect(&pool, &store, Options { batch: 100, dry_run: true, require_in_use: false }).await.expect("dry");
    let first = gc(&pool, &store).await;
    assert_eq!(first.first_manifests, [format!("{repo}@{orphan}")], "only the orphan goes");
    assert_eq!((dry.manifests_deleted, &dry.first_manifests), (1, &first.first_manifests), "a dry run reports it");
    assert_eq!(first.in_use, 1, "the running image is kept");
    for kept in [&amd, &arm, &signature_digest, &running] {
        assert_eq!(call(&app, Method::HEAD, &format!("/v2/{repo}/manifests/{kept}")).await.status, StatusCode::OK);
    }
    let layer = |seed: u64| {
        let key = blob_key(&Digest::sha256_of(&bytes_of(100, seed)));
        let store = &store;
        async move { store.size(&key).await }
    };
    assert!(layer(4).await.unwrap().is_none(), "the orphan's layer left storage");

    // Untag the index: it goes, then the platform images it listed.
    assert_eq!(call(&app, Method::DELETE, &format!("/v2/{repo}/manifests/multi")).await.status, StatusCode::ACCEPTED);
    let second = gc(&pool, &store).await;
    assert_eq!(second.manifests_deleted, 3, "{:?}", second.first_manifests);
    assert!(layer(1).await.unwrap().is_none() && layer(2).await.unwrap().is_none());
    // Untag the signed image: its signature goes with it.
    assert_eq!(call(&app, Method::DELETE, &format!("/v2/{repo}/manifests/signed")).await.status, StatusCode::ACCEPTED);
    let third = gc(&pool, &store).await;
    let gone: BTreeSet<String> = third.first_manifests.into_iter().collect();
    assert_eq!(gone, BTreeSet::from([format!("{repo}@{signed}"), format!("{repo}@{signature_digest}")]));
    let referrers = call(&app, Method::GET, &format!("/v2/{repo}/referrers/{signed}")).await;
    assert_eq!(referrers.json()["manifests"], json!([]));
    // The running image stays until no Pod runs it.
    assert_eq!(count(&pool, "SELECT count(*) FROM manifests").await, 1);
    pool.get().await.unwrap().execute("DELETE FROM digests_in_use", &[]).await.unwrap();
    pool.get().await.unwrap().execute("UPDATE gc_manifest_review_queue SET review_after = now()", &[]).await.unwrap();
    assert_eq!(gc(&pool, &store).await.manifests_deleted, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM blobs").await, 0, "every blob went with its manifests");
    let scan = aerugo_dataplane::fsck::fsck(&pool, &store, true, false).await.expect("fsck");
    assert!(scan.problems.is_empty(), "{:?}", scan.problems);
}

/// Keep rules by push time, by pull time, protection, a Pod: `keepLast: 0` with
/// `keepPulledWithin` keeps the pulled tag, `protect` and immutable patterns keep theirs, a
/// running image's tag stays, `deleteUntagged: false` keeps untagged manifests.
#[actix_web::test]
async fn keep_rules_protection_and_untagged_policy() {
    let t = fs_registry().await;
    let app = app(&t).await;
    let pool = no_review_delay(&t.database_url).await;
    let store = AnyStore::Fs(FsStore::new(t.storage_dir()).await.expect("store"));
    let repo = "acme/rules";
    let mut digests = std::collections::BTreeMap::new();
    for (i, tag) in ["old", "pulled", "v1.0", "frozen-1", "running", "newest"].iter().enumerate() {
        digests.insert(*tag, push_image(&app, repo, tag, 40 + i as u8).await);
    }
    pool.get()
        .await
        .unwrap()
        .batch_execute(&format!(
            "UPDATE repositories SET immutable_tag_patterns = '{{frozen-*}}' WHERE name = '{repo}';
             INSERT INTO digests_in_use (digest, pods, example) VALUES ('{}', 2, 'team/api');",
            digests["running"]
        ))
        .await
        .unwrap();
    // A pull, recorded by the node in its next batch.
    assert_eq!(call(&app, Method::GET, &format!("/v2/{repo}/manifests/pulled")).await.status, StatusCode::OK);
    assert_eq!(t.registry.flush_pulls().await.expect("flush"), 1);

    set_policy(&pool, repo, json!({ "mode": "Enforce", "keepLast": 0, "keepPulledWithin": "1h", "protect": ["v*"], "deleteUntagged": false })).await;
    let report = run_retention(&pool, repo).await;
    assert_eq!((report.deleted, report.protected, report.protected_in_use), (2, 2, 1));
    assert_eq!(report.first_tags, ["newest", "old"], "newest first");
    let left: BTreeSet<String> = ["pulled", "v1.0", "frozen-1", "running"].map(String::from).into();
    assert_eq!(tags(&app, repo).await, left);
    assert_eq!(report.manifests, 0, "deleteUntagged: false keeps the untagged manifests");
    assert_eq!(gc(&pool, &store).await.manifests_deleted, 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM manifests").await, 6);

    // keepWithin keeps everything pushed just now; with deleteUntagged the two go.
    set_policy(&pool, repo, json!({ "mode": "Enforce", "keepWithin": "1h" })).await;
    let report = run_retention(&pool, repo).await;
    assert_eq!((report.tags, report.manifests), (0, 2), "the two untagged manifests, queued again by the run");
    assert_eq!(gc(&pool, &store).await.manifests_deleted, 2);
    for tag in &left {
        pulls(&app, repo, tag).await;
    }
}

/// The organization's default applies to repositories without their own; the management API
/// shows the policy in force, the plan, and sets an API repository's own policy (a person with
/// the Owner role, not a key), refusing a malformed one.
#[actix_web::test]
async fn organization_default_and_the_management_api() {
    let t = fs_registry().await;
    let owner = seed_user(&t.database_url, "olive", false).await;
    seed_org(&t.database_url, "acme", "olive").await;
    let app = app(&t).await;
    let pool = no_review_delay(&t.database_url).await;
    let repo = "acme/api";
    for (i, tag) in ["a", "b", "c"].iter().enumerate() {
        push_image(&app, repo, tag, 60 + i as u8).await;
    }
    pool.get()
        .await
        .unwrap()
        .execute(
            "UPDATE organizations SET retention = $1 WHERE name = 'acme'",
            &[&json!({ "mode": "DryRun", "keepLast": 1 })],
        )
        .await
        .unwrap();
    let uri = "/api/v1/orgs/acme/retention/api";
    let shown = send_as(&app, &owner.basic, actix_web::test::TestRequest::get().uri(uri)).await;
    assert_eq!(shown.status, StatusCode::OK, "{:?}", shown.body);
    let shown = shown.json();
    assert_eq!(shown["source"], "organization");
    assert_eq!((shown["plan"]["tags"].as_i64(), shown["plan"]["firstTags"].clone()), (Some(2), json!(["b", "a"])));
    assert_eq!(tags(&app, repo).await.len(), 3, "showing a plan deletes nothing");

    let put = |body: Value| actix_web::test::TestRequest::put().uri(uri).set_json(body);
    let bad = send_as(&app, &owner.basic, put(json!({ "policy": { "keepWithin": "soon" } }))).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{:?}", bad.body);
    let typo = send_as(&app, &owner.basic, put(json!({ "policy": { "keepLastt": 1 } }))).await;
    assert_eq!(typo.status, StatusCode::BAD_REQUEST, "an unknown field is refused, not ignored");
    let by_key = send(&app, put(json!({ "policy": { "keepLast": 2 } }))).await;
    assert_eq!(by_key.status, StatusCode::FORBIDDEN, "a key does not administer");
    let set = send_as(&app, &owner.basic, put(json!({ "policy": { "mode": "Enforce", "keepLast": 2 } }))).await;
    assert_eq!(set.status, StatusCode::OK, "{:?}", set.body);
    assert_eq!((set.json()["source"].clone(), set.json()["plan"]["tags"].as_i64()), (json!("repository"), Some(1)));
    let report = run_retention(&pool, repo).await;
    assert_eq!(report.deleted, 1);
    let shown = send_as(&app, &owner.basic, actix_web::test::TestRequest::get().uri(uri)).await.json();
    assert_eq!(shown["lastRun"]["deleted"], 1);
}

/// Collection racing pushes from two nodes that keep re-tagging and re-referencing the same
/// digests, with no review delay (the harshest setting): a push may be refused when the
/// collector took a blob between its upload and its manifest (as a client does, it pushes
/// again), but nothing is ever left half-deleted: the consistency scan finds no problem and
/// every tag pulls with every blob.
#[actix_web::test]
async fn collection_racing_pushes_on_two_nodes_leaves_every_tag_whole() {
    let t = fs_registry().await;
    let off =
        aerugo_dataplane::cache::CacheSettings { mode: aerugo_dataplane::cache::CacheMode::Off, ..Default::default() };
    let cache =
        || std::sync::Arc::new(aerugo_dataplane::cache::Cache::new(&off, metrics().cache.clone()).expect("cache"));
    let a = app_with(&node(&t, cache()).await, &t.auth, &metrics(), Some(&t.admin)).await;
    let b = app_with(&node(&t, cache()).await, &t.auth, &metrics(), Some(&t.admin)).await;
    let pool = no_review_delay(&t.database_url).await;
    let store = AnyStore::Fs(FsStore::new(t.storage_dir()).await.expect("store"));
    let repo = "race/gc";
    let shared = bytes_of(5_000, 7);

    // One push of image `seed` under `tag`, retried (from the blobs up) as a client would when
    // the registry refuses its manifest.
    async fn push(app: &impl App, repo: &str, tag: &str, seed: u64, shared: &[u8]) -> usize {
        // A blob the collector deleted while it was being stored is refused with 503.
        async fn blob(app: &impl App, repo: &str, data: &[u8]) -> Option<Digest> {
            let digest = Digest::sha256_of(data);
            let reply = send(
                app,
                actix_web::test::TestRequest::post()
                    .uri(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
                    .set_payload(data.to_vec()),
            )
            .await;
            match reply.status {
                StatusCode::CREATED => Some(digest),
                StatusCode::SERVICE_UNAVAILABLE => None,
                other => panic!("blob push: {other} {:?}", reply.body),
            }
        }
        for attempt in 0..10 {
            let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}").into_bytes();
            let own = bytes_of(700, 1000 + seed);
            let (Some(c), Some(s), Some(o)) =
                (blob(app, repo, &config).await, blob(app, repo, shared).await, blob(app, repo, &own).await)
            else {
                continue;
            };
            let manifest = image_manifest(&(c, config.len()), &[(s, shared.len()), (o, own.len())]);
            let reply = put_manifest(app, repo, tag, OCI_MANIFEST, &manifest).await;
            if reply.status == StatusCode::CREATED {
                return attempt;
            }
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "only a vanished blob may refuse a push: {:?}",
                reply.body
            );
            assert!(reply.error_code().contains("BLOB_UNKNOWN"), "{:?}", reply.body);
        }
        panic!("{repo}:{tag} never pushed");
    }

    let mut retries = 0;
    let mut collected = 0;
    for round in 0..24u64 {
        let (ta, tb) = (format!("t{}", round % 3), format!("t{}", (round + 1) % 3));
        let (ra, rb, c) = futures_util::join!(
            push(&a, repo, &ta, round % 6, &shared),
            push(&b, repo, &tb, (round + 3) % 6, &shared),
            async {
                collect(&pool, &store, Options { batch: 2, dry_run: false, require_in_use: false })
                    .await
                    .expect("collect")
            },
        );
        retries += ra + rb;
        collected += c.manifests_deleted + c.deleted;
    }
    collected += gc(&pool, &store).await.manifests_deleted;
    eprintln!("collection racing pushes: {collected} manifests and objects collected, {retries} pushes retried");
    assert!(collected > 0, "the collector ran against live data");
    let scan = aerugo_dataplane::fsck::fsck(&pool, &store, true, false).await.expect("fsck");
    assert!(scan.problems.is_empty(), "{:?}", scan.problems);
    assert_eq!(tags(&a, repo).await, BTreeSet::from(["t0".to_owned(), "t1".to_owned(), "t2".to_owned()]));
    for tag in ["t0", "t1", "t2"] {
        pulls(&a, repo, tag).await;
        pulls(&b, repo, tag).await;
    }
}

/// sha512 content on S3: a layer hashed with sha512 in chunks across two nodes (multipart, with
/// tails below the part minimum carried between them), a config and a manifest pushed by their
/// sha512 digests, a presigned pull of the layer, fsck clean; then the untagged manifest and its
/// blobs are collected from the database and the bucket.
#[actix_web::test]
async fn sha512_content_on_s3_is_uploaded_across_nodes_served_and_collected() {
    let Some(config) = s3_config().await else {
        aerugo_test_support::skip("Garage (AERUGO_TEST_S3)");
        return;
    };
    let db = fresh_db().await;
    let proxy = aerugo_dataplane::config::RedirectMode::Proxy;
    let node_a = app(&s3_registry(&db, &config, proxy).await).await;
    let node_b = app(&s3_registry(&db, &config, aerugo_dataplane::config::RedirectMode::Presign).await).await;
    let s3 = S3Store::new(&config);
    let store = AnyStore::S3(s3.clone());
    let pool = no_review_delay(&db).await;
    let repo = "acme/sha512";

    let layer = bytes_of(11 * 1024 * 1024 + 777, 512);
    let layer_digest = Algorithm::Sha512.digest(&layer);
    let opened = call(&node_a, Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest-algorithm=sha512")).await;
    assert_eq!(opened.status, StatusCode::ACCEPTED);
    let location = opened.header("location").expect("location");
    let location = patch_in_chunks(&[&node_a, &node_b], location, &layer, 3 * 1024 * 1024).await;
    let done = call(&node_b, Method::PUT, &format!("{location}?digest={layer_digest}")).await;
    assert_eq!(done.status, StatusCode::CREATED, "{:?}", done.body);
    let config_body = br#"{"architecture":"amd64","os":"linux","sha":512}"#.to_vec();
    let config_digest = Algorithm::Sha512.digest(&config_body);
    let pushed = send(
        &node_a,
        actix_web::test::TestRequest::post()
            .uri(&format!("/v2/{repo}/blobs/uploads/?digest={config_digest}"))
            .set_payload(config_body.clone()),
    )
    .await;
    assert_eq!(pushed.status, StatusCode::CREATED, "{:?}", pushed.body);
    let manifest = image_manifest(&(config_digest.clone(), config_body.len()), &[(layer_digest.clone(), layer.len())]);
    let manifest_digest = Algorithm::Sha512.digest(&manifest);
    let reply = put_manifest(&node_a, repo, manifest_digest.as_str(), OCI_MANIFEST, &manifest).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);

    let keys: BTreeSet<String> = s3.list_keys("").await.expect("list").into_iter().collect();
    assert_eq!(keys, BTreeSet::from([blob_key(&layer_digest), blob_key(&config_digest)]));
    assert!(keys.iter().all(|k| k.starts_with("blobs/sha512/")), "{keys:?}");
    let redirect = call(&node_b, Method::GET, &format!("/v2/{repo}/blobs/{layer_digest}")).await;
    assert_eq!(redirect.status, StatusCode::TEMPORARY_REDIRECT);
    let url = redirect.header("location").expect("location").to_owned();
    let fetched = tokio::process::Command::new("curl").args(["-sf", &url]).output().await.expect("curl");
    assert!(fetched.status.success(), "presigned URL refused: {url}");
    assert_eq!(Algorithm::Sha512.digest(&fetched.stdout), layer_digest);
    let scan = aerugo_dataplane::fsck::fsck(&pool, &store, false, false).await.expect("fsck");
    assert!(scan.problems.is_empty(), "{:?}", scan.problems);

    // Nothing tags the manifest: it is collected, and the objects only it used with it.
    let collected = gc(&pool, &store).await;
    assert_eq!(collected.first_manifests, [format!("{repo}@{manifest_digest}")]);
    assert_eq!((collected.deleted, collected.bytes), (2, (layer.len() + config_body.len()) as i64));
    assert_eq!(s3.list_keys("").await.expect("list"), Vec::<String>::new());
    assert_eq!(count(&pool, "SELECT count(*) FROM blobs").await, 0);
    let gone = call(&node_a, Method::HEAD, &format!("/v2/{repo}/blobs/{layer_digest}")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}
