//! The stale-tag test: two data-plane processes sharing Postgres and Redis, a writer moving
//! one tag 1,000 times through both, readers polling both nodes. No read may return a digest
//! older than the last push acknowledged before the read was sent.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests fail by panicking

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use aerugo_e2e::*;
use serde_json::{Value, json};

fn push_blob(host: &str, repo: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let (status, body) = request(
        host,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        Some("application/octet-stream"),
        data,
    );
    assert_eq!(status, 201, "blob push: {}", String::from_utf8_lossy(&body));
    digest
}

/// The sum of the samples of `name` whose labels contain `labels`, from a node's `/metrics`.
fn metric(admin: &str, name: &str, labels: &str) -> f64 {
    let text = http_raw(admin, "GET", "/metrics").expect("metrics");
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn no_node_serves_a_tag_older_than_the_last_acknowledged_push() {
    let Some(redis) = aerugo_test_support::service_env("AERUGO_TEST_REDIS_URL") else { return };
    let database = fresh_database().await;
    let prefix = format!("e2e{}", std::process::id());
    // All the load comes from one address: no per-client rate limit.
    let env = [
        ("AERUGO_REDIS_URL", redis.as_str()),
        ("AERUGO_REDIS_PREFIX", prefix.as_str()),
        ("AERUGO_CLIENT_RATE_LIMIT", "0"),
    ];
    let a = Server::start_with_env(&database, Storage::File, &env);
    let b = Server::start_next_to_with_env(&a, &database, Storage::File, &env);
    let nodes = [a.host.clone(), b.host.clone()];

    // Manifests live in Postgres; the blobs they reference are pushed once through node a.
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = vec![7u8; 3000];
    let (config_digest, layer_digest) =
        (push_blob(&a.host, "stale/app", config), push_blob(&a.host, "stale/app", &layer));
    let manifest = |seq: i64| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len()}],
            "annotations": {"seq": seq.to_string()},
        }))
        .unwrap()
    };

    const MOVES: i64 = 1000;
    let acknowledged = Arc::new(AtomicI64::new(-1));
    let done = Arc::new(AtomicBool::new(false));
    let (reads, stale, failed) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (nodes, acknowledged, done) = (nodes.clone(), acknowledged.clone(), done.clone());
            let (reads, stale, failed) = (reads.clone(), stale.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut i = r;
                while !done.load(Ordering::Acquire) {
                    i += 1;
                    let floor = acknowledged.load(Ordering::Acquire);
                    let (status, body) = request(&nodes[i % 2], "GET", "/v2/stale/app/manifests/latest", None, b"");
                    if floor < 0 {
                        continue;
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                    if status != 200 {
                        failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let seq: i64 = serde_json::from_slice::<Value>(&body).unwrap()["annotations"]["seq"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    if seq < floor {
                        eprintln!("stale: node {} served seq {seq} after seq {floor} was acknowledged", i % 2);
                        stale.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    for seq in 0..MOVES {
        let node = &nodes[(seq % 2) as usize];
        let (status, body) = request(
            node,
            "PUT",
            "/v2/stale/app/manifests/latest",
            Some("application/vnd.oci.image.manifest.v1+json"),
            &manifest(seq),
        );
        assert_eq!(status, 201, "tag move {seq}: {}", String::from_utf8_lossy(&body));
        acknowledged.store(seq, Ordering::Release);
    }
    // Readers keep going a little after the last move.
    std::thread::sleep(Duration::from_millis(300));
    done.store(true, Ordering::Release);
    for reader in readers {
        reader.join().unwrap();
    }
    let (reads, stale, failed) =
        (reads.load(Ordering::Relaxed), stale.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{MOVES} tag moves, {reads} reads on two nodes: {stale} stale, {failed} failed");
    assert_eq!(stale, 0, "reads of a digest older than the last acknowledged push");
    assert_eq!(failed, 0, "failed reads");
    assert!(reads >= 1000, "the readers read while the tag moved ({reads} reads)");
    for node in [&a, &b] {
        let hits = metric(&node.admin, "aerugo_cache_lookups_total", "result=\"local_hit\"");
        assert!(hits > 0.0, "node {} served reads from its cache", node.host);
        assert_eq!(metric(&node.admin, "aerugo_cache_redis_up", ""), 1.0);
    }
}
