//! Benchmark: 1,000 Repository objects from creation to `Ready`, then a resync of them all
//! unchanged, counting the database and API writes it makes (the target is none). Runs the
//! controllers as `main` does, against the in-process API emulator and a fresh real Postgres.
//!
//! `cargo run --release -p aerugo-operator --example bench_reconcile [N]`

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)] // a benchmark's output is its point

use std::path::Path;
use std::time::{Duration, Instant};

use aerugo_crds::Repository;
use aerugo_kube_emulator::{Emulator, Verb};
use aerugo_operator::context::{Metrics, Settings};
use aerugo_operator::controller::{self, ClusterContext};
use serde_json::json;

fn ready(r: &Repository) -> bool {
    r.status.as_ref().is_some_and(|s| aerugo_crds::common::is_ready(&s.conditions))
}

async fn row_versions(db: &aerugo_db::Pool) -> Vec<String> {
    let conn = db.get().await.unwrap();
    let mut out = Vec::new();
    for t in ["organizations", "org_members", "repositories", "repository_grants", "api_keys"] {
        let q = format!("SELECT COALESCE(string_agg(ctid::text || ':' || xmin::text, ',' ORDER BY ctid), '') FROM {t}");
        out.push(conn.query_one(&q, &[]).await.unwrap().get(0));
    }
    out
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let resync = Duration::from_secs(20);
    let url = aerugo_db::testing::fresh_database().await.expect("database (is Postgres running?)");
    let db = aerugo_db::pool(&url, 8).unwrap();
    let emulator = Emulator::new();
    emulator.install_crds_from(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds")).unwrap();
    emulator.seed(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "bench" } })).unwrap();
    let client = emulator.client();
    let settings = Settings { registry_host: "bench".into(), resync, storage: None, pods_watched: false };
    let cluster =
        ClusterContext::new(client.clone(), db.clone(), settings, Metrics::new(&prometheus::Registry::new()).unwrap());
    tokio::spawn(controller::run(cluster));
    emulator
        .seed(json!({ "apiVersion": "aerugo.io/v1alpha1", "kind": "Organization", "metadata": { "name": "bench", "namespace": "bench" }, "spec": {} }))
        .unwrap();
    emulator
        .wait_for::<aerugo_crds::Organization, _>(Some("bench"), "bench", Duration::from_secs(30), |o| {
            o.and_then(|o| o.status.as_ref()).is_some_and(|s| aerugo_crds::common::is_ready(&s.conditions))
        })
        .await
        .expect("organization ready");

    let started = Instant::now();
    for i in 0..n {
        emulator
            .seed(json!({
                "apiVersion": "aerugo.io/v1alpha1", "kind": "Repository",
                "metadata": { "name": format!("repo-{i:04}"), "namespace": "bench" },
                "spec": { "organizationRef": { "name": "bench" }, "immutableTags": ["v*"] },
            }))
            .unwrap();
    }
    let created = started.elapsed();
    for i in 0..n {
        emulator
            .wait_for::<Repository, _>(Some("bench"), &format!("repo-{i:04}"), Duration::from_secs(300), |r| {
                r.is_some_and(ready)
            })
            .await
            .expect("ready in time");
    }
    let all_ready = started.elapsed();
    println!("repositories: {n}");
    println!("created (API writes by the test): {:.2} s", created.as_secs_f64());
    println!(
        "creation → all Ready: {:.2} s ({:.0} objects/s)",
        all_ready.as_secs_f64(),
        n as f64 / all_ready.as_secs_f64()
    );

    // The organization's usage changed (it has N repositories now): its first resync records
    // that. After it, nothing changes: measure a whole resync period of unchanged objects.
    tokio::time::sleep(resync + Duration::from_secs(5)).await;
    let before = row_versions(&db).await;
    emulator.clear_requests();
    let runs_before = emulator.resource_version();
    let window = Instant::now();
    tokio::time::sleep(resync + Duration::from_secs(5)).await;
    let requests = emulator.requests();
    let reads = requests.iter().filter(|r| matches!(r.verb, Verb::Get | Verb::List | Verb::Watch)).count();
    let writes: Vec<_> = requests.iter().filter(|r| !matches!(r.verb, Verb::Get | Verb::List | Verb::Watch)).collect();
    let after = row_versions(&db).await;
    let changed_tables = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    println!(
        "resync window: {:.0} s (resync period {} s): API reads {reads}, API writes {}, resourceVersion moved by {}, tables with changed rows {changed_tables}",
        window.elapsed().as_secs_f64(),
        resync.as_secs(),
        writes.len(),
        emulator.resource_version() - runs_before,
    );
    for w in &writes {
        println!("  write: {} {}/{} {:?}", w.verb.as_str(), w.resource, w.name.as_deref().unwrap_or(""), w.subresource);
    }
}
