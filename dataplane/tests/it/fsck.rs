//! The consistency scan: a clean registry reports nothing; missing and corrupt objects,
//! unlinked manifest blobs and bare rows are reported; repair fixes what it can without
//! touching what a manifest needs, and pushing the lost blob again makes the chain whole.

use actix_web::http::{Method, StatusCode};
use aerugo_dataplane::fsck::{Problem, fsck};
use aerugo_oci::Digest;
use aerugo_storage::{AnyStore, FsStore, blob_key};

use crate::harness::*;

#[actix_web::test]
async fn fsck_reports_broken_chains_and_repairs_what_it_can() {
    let t = fs_registry().await;
    let app = app(&t).await;
    push_image(&app, "f/app", "v1", 3).await;
    let config = Digest::sha256_of(br#"{"architecture":"amd64","os":"linux","seed":3}"#);
    let layer_bytes = vec![3u8; 1003];
    let layer = Digest::sha256_of(&layer_bytes);
    let extra = push_blob(&app, "f/app", &bytes_of(500, 9)).await;
    let pool = aerugo_db::pool(&t.database_url, 2).expect("pool");
    let store = AnyStore::Fs(FsStore::new(t.storage_dir()).await.expect("store"));
    let clean = fsck(&pool, &store, true, false).await.expect("fsck");
    assert_eq!((clean.objects_checked, clean.problems.len()), (3, 0), "{:?}", clean.problems);

    // Break it: an object deleted, one corrupted, a manifest's blob unlinked, a bare row.
    std::fs::remove_file(t.storage_dir().join(blob_key(&extra))).expect("remove");
    std::fs::write(t.storage_dir().join(blob_key(&layer)), b"not the layer").expect("corrupt");
    let client = pool.get().await.expect("client");
    client
        .batch_execute(&format!(
            "DELETE FROM repository_blobs WHERE digest = '{config}';
             INSERT INTO blobs (digest, size) VALUES ('sha256:{}', 1);",
            "f".repeat(64)
        ))
        .await
        .expect("break");
    let found = fsck(&pool, &store, true, false).await.expect("fsck");
    let problems: Vec<String> = found.problems.iter().map(ToString::to_string).collect();
    assert_eq!(found.problems.len(), 4, "{problems:#?}");
    assert!(found.problems.contains(&Problem::ObjectMissing { digest: extra.to_string(), location: String::new() }));
    assert!(
        found.problems.iter().any(|p| matches!(p, Problem::ObjectCorrupt { digest, expected: 1003, found: 13, .. } if *digest == layer.to_string()))
    );
    assert!(
        found
            .problems
            .iter()
            .any(|p| matches!(p, Problem::ManifestBlobNotLinked { digest, .. } if *digest == config.to_string()))
    );
    assert!(found.problems.iter().any(|p| matches!(p, Problem::BareBlob { .. })));

    // Repair: the lost unreferenced blob is unlinked, the config linked back, the bare row
    // dropped, the corrupt object deleted; the manifest's layer cannot be recovered and says so.
    let repaired = fsck(&pool, &store, true, true).await.expect("repair");
    assert!(repaired.repaired >= 5, "{repaired:?}");
    let left = fsck(&pool, &store, true, false).await.expect("fsck");
    assert_eq!(
        left.problems,
        [Problem::LinkWithoutObject { repository: "f/app".into(), digest: layer.to_string(), referenced: true }]
    );
    assert!(left.problems[0].to_string().contains("push it again"));
    assert!(!t.storage_dir().join(blob_key(&layer)).exists(), "the corrupt object is gone");
    assert_eq!(call(&app, Method::HEAD, &format!("/v2/f/app/blobs/{extra}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(call(&app, Method::HEAD, &format!("/v2/f/app/blobs/{config}")).await.status, StatusCode::OK);

    // Pushing the layer again restores the chain.
    push_blob(&app, "f/app", &layer_bytes).await;
    let whole = fsck(&pool, &store, true, false).await.expect("fsck");
    assert!(whole.problems.is_empty(), "{:?}", whole.problems);
    let pulled = call(&app, Method::GET, &format!("/v2/f/app/blobs/{layer}")).await;
    assert_eq!(pulled.body, layer_bytes);
}
