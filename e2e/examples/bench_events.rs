//! What events cost a push, and how soon they arrive: manifest pushes per second through one
//! data-plane node (the binary `AERUGO_DATAPLANE_BIN` names, release in `dev.sh bench-events`)
//! in three configurations measured in alternating rounds of the same run —
//!   `no-events`  the event triggers disabled (the product before events existed),
//!   `recorded`   events written, no subscription,
//!   `delivered`  events written and delivered to a receiver on loopback (every type, batches
//!                of 100, signed),
//! and the delivery lag (receipt minus the event's `time`) of the `delivered` rounds.
//!
//! `cargo run --release -p aerugo-e2e --example bench_events -- [pushes per round] [rounds]`

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)] // a benchmark prints

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use aerugo_e2e::receiver::Receiver;
use aerugo_e2e::*;
use serde_json::{Value, json};

const WRITERS: usize = 8;
const TRIGGERS: [(&str, &str); 6] = [
    ("manifests", "events_manifests_insert"),
    ("manifests", "events_manifests_delete"),
    ("tags", "events_tags_insert_delete"),
    ("tags", "events_tags_move"),
    ("repository_blobs", "events_repository_blobs_delete"),
    ("repositories", "events_repositories_insert_delete"),
];

fn api(host: &str, method: &str, path: &str, body: Value) -> u16 {
    request(host, method, path, Some("application/json"), &serde_json::to_vec(&body).unwrap()).0
}

fn push_blob(host: &str, repo: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let path = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
    assert_eq!(request(host, "POST", &path, Some("application/octet-stream"), data).0, 201);
    digest
}

/// Pushes `n` manifests into 8 repositories of `org` with 8 writers; returns pushes per second.
fn push_round(host: &str, org: &str, round: usize, n: usize, blobs: &[(String, usize, String, usize)]) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (host, org, next, blobs) = (host.to_owned(), org.to_owned(), next.clone(), blobs.to_vec());
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let (c, cs, l, ls) = &blobs[w];
                    let manifest = serde_json::to_vec(&json!({
                        "schemaVersion": 2,
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": cs},
                        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l, "size": ls}],
                        "annotations": {"round": round.to_string(), "i": i.to_string()},
                    }))
                    .unwrap();
                    let path = format!("/v2/{org}/app{w}/manifests/latest");
                    let (status, body) =
                        request(&host, "PUT", &path, Some("application/vnd.oci.image.manifest.v1+json"), &manifest);
                    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let pushes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let database = fresh_database().await;
    let receiver = Receiver::start().await;
    let node = Server::start_with_env(
        &database,
        Storage::File,
        &[("AERUGO_CLIENT_RATE_LIMIT", "0"), ("AERUGO_CACHE", "off"), ("AERUGO_WORKERS", "2")],
    );
    let db = aerugo_db::pool(&database, 1).unwrap();
    let client = db.get().await.unwrap();

    // One organization per configuration, each with 8 repositories and their blobs.
    let configs = ["no-events", "recorded", "delivered"];
    let mut blobs = Vec::new();
    for org in configs {
        assert_eq!(api(&node.host, "POST", "/api/v1/orgs", json!({ "name": org })), 201);
        let mut mine = Vec::new();
        for w in 0..WRITERS {
            let repo = format!("{org}/app{w}");
            let config = format!(r#"{{"architecture":"amd64","os":"linux","repo":"{repo}"}}"#).into_bytes();
            let layer = repo.repeat(200).into_bytes();
            mine.push((
                push_blob(&node.host, &repo, &config),
                config.len(),
                push_blob(&node.host, &repo, &layer),
                layer.len(),
            ));
        }
        blobs.push(mine);
    }
    let subscription = json!({
        "name": "bench", "endpoint": receiver.url(), "types": aerugo_db::events::TYPES,
        "batchSize": 100, "signingSecret": "a-benchmark-signing-secret",
    });
    assert_eq!(api(&node.host, "POST", "/api/v1/orgs/delivered/subscriptions", subscription), 201);
    // Measure delivery, not the first lease: wait until the node holds the subscription.
    while client
        .query_one("SELECT lease_owner IS NOT NULL FROM event_subscriptions WHERE name = 'bench'", &[])
        .await
        .unwrap()
        .get::<_, bool>(0)
        .eq(&false)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    for round in 0..rounds {
        for (c, org) in configs.iter().enumerate() {
            let toggle = if c == 0 { "DISABLE" } else { "ENABLE" };
            for (table, trigger) in TRIGGERS {
                client.batch_execute(&format!("ALTER TABLE {table} {toggle} TRIGGER {trigger}")).await.unwrap();
            }
            let rate = push_round(&node.host, org, round, pushes, &blobs[c]);
            println!("round {round} {org:>10}: {rate:7.1} pushes/s");
            rates[c].push(rate);
        }
    }

    // Every delivered round's events arrive; lag is receipt minus the event's commit time.
    let expected = (pushes * rounds) as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pushed = receiver.events().iter().filter(|e| e["type"] == "io.aerugo.manifest.pushed").count() as u64;
        if pushed >= expected {
            break;
        }
        assert!(Instant::now() < deadline, "{pushed} of {expected} pushes delivered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut lags = Vec::new();
    for delivery in receiver.deliveries() {
        let batch: Vec<Value> = serde_json::from_slice(&delivery.body).unwrap();
        for event in batch {
            let at = time::OffsetDateTime::parse(
                event["time"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(at.unix_timestamp_nanos() as u64);
            lags.push(delivery.at.duration_since(at).unwrap_or_default().as_secs_f64() * 1000.0);
        }
    }
    lags.sort_by(f64::total_cmp);

    let (none, recorded, delivered) = (median(rates[0].clone()), median(rates[1].clone()), median(rates[2].clone()));
    println!();
    println!("pushes/s, median of {rounds} rounds of {pushes} manifest pushes by {WRITERS} writers:");
    println!("  no-events {none:7.1}");
    println!("  recorded  {recorded:7.1}  ({:+.1}% vs no-events)", (recorded / none - 1.0) * 100.0);
    println!(
        "  delivered {delivered:7.1}  ({:+.1}% vs recorded, {:+.1}% vs no-events)",
        (delivered / recorded - 1.0) * 100.0,
        (delivered / none - 1.0) * 100.0
    );
    println!(
        "delivery lag over {} events: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} requests)",
        lags.len(),
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or_default(),
        receiver.deliveries().len()
    );
}
