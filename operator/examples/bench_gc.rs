//! Benchmark of the collector on S3: seeds N unreferenced blobs (tiny objects in the bucket,
//! their rows, due review entries), then collects them and prints objects deleted per second.
//! `bench/gc.sh` (`./scripts/dev.sh bench-gc`) runs it against Garage while `wrk` measures pull
//! throughput of a data plane on the same database and bucket.
//!
//! `bench_gc seed N` then `bench_gc collect`, with AERUGO_DATABASE_URL and the data plane's
//! AERUGO_S3_* variables set.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)] // a benchmark's output is its point

use std::time::Instant;

use aerugo_storage::{AnyStore, S3Config, S3Store};
use futures_util::StreamExt as _;

fn config() -> S3Config {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} must be set"));
    S3Config {
        endpoint: Some(var("AERUGO_S3_ENDPOINT")),
        bucket: var("AERUGO_S3_BUCKET"),
        region: var("AERUGO_S3_REGION"),
        access_key_id: var("AERUGO_S3_ACCESS_KEY_ID"),
        secret_access_key: var("AERUGO_S3_SECRET_ACCESS_KEY"),
        path_style: true,
    }
}

fn digest(i: usize) -> String {
    format!("sha256:{:064x}", 0xAE60_0000_0000_usize + i)
}

async fn seed(db: &aerugo_db::Pool, n: usize) {
    let c = config();
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .endpoint_url(c.endpoint.clone().unwrap())
            .region(aws_sdk_s3::config::Region::new(c.region.clone()))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                &c.access_key_id,
                &c.secret_access_key,
                None,
                None,
                "bench",
            ))
            .force_path_style(true)
            .build(),
    );
    let started = Instant::now();
    let puts = futures_util::stream::iter(0..n).map(|i| {
        let (s3, bucket) = (s3.clone(), c.bucket.clone());
        async move {
            let key = format!("bench-gc/{}", digest(i));
            s3.put_object().bucket(bucket).key(key).body(vec![b'x'; 64].into()).send().await.expect("put");
        }
    });
    puts.buffer_unordered(64).collect::<Vec<()>>().await;
    println!("seeded {n} objects in {:.1} s", started.elapsed().as_secs_f64());
    let client = db.get().await.unwrap();
    let digests: Vec<String> = (0..n).map(digest).collect();
    client
        .execute(
            "WITH d AS (SELECT unnest($1::text[]) AS digest),
                  b AS (INSERT INTO blobs (digest, size) SELECT digest, 64 FROM d),
                  o AS (INSERT INTO blob_objects (digest, location, storage_key) SELECT digest, '', 'bench-gc/' || digest FROM d)
             INSERT INTO gc_blob_review_queue (digest, review_after, event) SELECT digest, now() - interval '1 minute', 'bench' FROM d",
            &[&digests],
        )
        .await
        .unwrap();
}

#[tokio::main]
async fn main() {
    let url = std::env::var("AERUGO_DATABASE_URL").expect("AERUGO_DATABASE_URL");
    let db = aerugo_db::pool(&url, 4).unwrap();
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("seed") => seed(&db, args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000)).await,
        Some("collect") => {
            let store = AnyStore::S3(S3Store::new(&config()));
            let options = aerugo_operator::collector::Options { batch: 4000, dry_run: false, require_in_use: false };
            let started = Instant::now();
            let c = aerugo_operator::collector::collect(&db, &store, options).await.expect("collect");
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "collected: reviewed {} entries, deleted {} objects ({} failed) in {seconds:.1} s: {:.0} objects/s",
                c.reviewed,
                c.deleted,
                c.failed,
                c.deleted as f64 / seconds
            );
        }
        _ => panic!("usage: bench_gc seed N | collect"),
    }
}
