//! Races between two nodes on one database and one store: concurrent pushes of the same blob
//! and of the same tag, blob deletes racing manifest pushes that reference the blob, mounts
//! racing deletes. Whatever wins, the final state is consistent: the consistency scan finds
//! nothing, every tag resolves, and every blob a stored manifest references is readable.

use actix_web::http::{Method, StatusCode};
use aerugo_dataplane::fsck::fsck;
use aerugo_storage::{AnyStore, FsStore};
use futures_util::future::join_all;

use crate::harness::*;

#[actix_web::test]
async fn concurrent_writes_on_two_nodes_leave_every_chain_whole() {
    let t = fs_registry().await;
    let store = AnyStore::Fs(FsStore::new(t.storage_dir()).await.expect("store"));
    let pool = aerugo_db::pool(&t.database_url, 8).expect("pool");
    // Two nodes serve one registry only with shared cache generations (Redis), or no cache.
    let (metrics_a, metrics_b) = (metrics(), metrics());
    let caches = match test_redis_url() {
        Some(url) => {
            let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
            (redis_cache(&url, &prefix, &metrics_a).await, redis_cache(&url, &prefix, &metrics_b).await)
        }
        None => {
            let off = aerugo_dataplane::cache::CacheSettings {
                mode: aerugo_dataplane::cache::CacheMode::Off,
                ..Default::default()
            };
            let cache = |m: &aerugo_dataplane::metrics::Metrics| {
                std::sync::Arc::new(aerugo_dataplane::cache::Cache::new(&off, m.cache.clone()).expect("cache"))
            };
            (cache(&metrics_a), cache(&metrics_b))
        }
    };
    let a = app_with(&node(&t, caches.0).await, &t.auth, &metrics_a, Some(&t.admin)).await;
    let b = app_with(&node(&t, caches.1).await, &t.auth, &metrics_b, Some(&t.admin)).await;
    let nodes = [&a, &b];
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    let mut count = |what: String| *outcomes.entry(what).or_default() += 1;

    // The same blob, eight times at once, into one repository and into another.
    let layer = bytes_of(200_000, 1);
    let pushes = (0..8).map(|i| push_blob(nodes[i % 2], if i < 4 { "race/one" } else { "race/two" }, &layer));
    let digests = join_all(pushes).await;
    assert!(digests.iter().all(|d| *d == digests[0]));

    // Two manifests, one tag, both nodes, many rounds: the tag ends on one of them.
    let config = push_blob(&a, "race/one", br#"{"architecture":"amd64","os":"linux"}"#).await;
    for round in 0..10u64 {
        let mut manifests = Vec::new();
        for n in 0..2u64 {
            let extra = bytes_of(300 + n as usize, round * 10 + n);
            let d = push_blob(nodes[n as usize], "race/one", &extra).await;
            manifests
                .push(image_manifest(&(config.clone(), 37), &[(digests[0].clone(), layer.len()), (d, extra.len())]));
        }
        let puts =
            manifests.iter().enumerate().map(|(n, m)| put_manifest(nodes[n], "race/one", "latest", OCI_MANIFEST, m));
        for reply in join_all(puts).await {
            count(format!("tag put {}", reply.status.as_u16()));
        }
        let tagged = call(&a, Method::GET, "/v2/race/one/manifests/latest").await;
        assert_eq!(tagged.status, StatusCode::OK);
        assert!(manifests.iter().any(|m| *m == tagged.body), "the tag names one of the pushed manifests");
    }

    // Deleting a blob while a manifest that references it is pushed, and mounting a blob while
    // its source deletes it: each pair in both node orders.
    for round in 0..12u64 {
        let blob = bytes_of(5_000, 1000 + round);
        let d = push_blob(&a, "race/del", &blob).await;
        let manifest = image_manifest(&(config.clone(), 37), &[(d.clone(), blob.len())]);
        push_blob(&a, "race/del", br#"{"architecture":"amd64","os":"linux"}"#).await;
        let (x, y) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (blob_url, tag) = (format!("/v2/race/del/blobs/{d}"), format!("r{round}"));
        let mount_url = format!("/v2/race/mounted/blobs/uploads/?mount={d}&from=race/del");
        let delete = call(x, Method::DELETE, &blob_url);
        let put = put_manifest(y, "race/del", &tag, OCI_MANIFEST, &manifest);
        let mount = call(y, Method::POST, &mount_url);
        let (deleted, put, mounted) = tokio::join!(delete, put, mount);
        count(format!(
            "delete {} / manifest {} / mount {}",
            deleted.status.as_u16(),
            put.status.as_u16(),
            mounted.status.as_u16()
        ));
        // A stored manifest's blob is readable; a refused one left nothing behind.
        if put.status == StatusCode::CREATED {
            assert_eq!(call(&a, Method::HEAD, &format!("/v2/race/del/blobs/{d}")).await.status, StatusCode::OK);
        }
    }

    let report = fsck(&pool, &store, true, false).await.expect("fsck");
    assert!(report.problems.is_empty(), "{:?}\noutcomes: {outcomes:?}", report.problems);
    // Every tag resolves and every blob its manifest references is readable, on both nodes.
    let client = pool.get().await.expect("client");
    let rows = client
        .query(
            "SELECT r.name, t.name, mb.digest FROM tags t JOIN manifests m ON m.id = t.manifest_id
               JOIN repositories r ON r.id = t.repository_id JOIN manifest_blobs mb ON mb.manifest_id = m.id",
            &[],
        )
        .await
        .expect("tags");
    assert!(!rows.is_empty());
    for row in rows {
        let (repo, tag, digest): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        for node in nodes {
            assert_eq!(call(node, Method::GET, &format!("/v2/{repo}/manifests/{tag}")).await.status, StatusCode::OK);
            assert_eq!(call(node, Method::HEAD, &format!("/v2/{repo}/blobs/{digest}")).await.status, StatusCode::OK);
        }
    }
    eprintln!("race outcomes: {outcomes:?}");
}
