//! The chart's Grafana dashboard queries only metrics the binaries export.

use std::collections::BTreeSet;

/// Every `aerugo_…` metric name the dashboard's queries use, without histogram suffixes.
fn dashboard_metrics() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/aerugo/files/grafana/aerugo.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("json");
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            for (start, _) in expr.match_indices("aerugo_") {
                let name: String =
                    expr[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let name = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .map(str::to_owned)
                    .unwrap_or(name);
                names.insert(name);
            }
        }
    }
    names
}

#[actix_web::test]
async fn every_dashboard_query_names_an_exported_metric() {
    // The data plane's families, with one sample of each labelled family recorded.
    let metrics = aerugo_dataplane::metrics::Metrics::new().expect("metrics");
    metrics.observe("/v2/{name}/manifests/{reference}", "GET", 200, 0.001, 10, 10);
    metrics.rate_limited("client");
    aerugo_dataplane::metrics::storage_error("GetObject");
    let cache = aerugo_dataplane::cache::Cache::new(&Default::default(), metrics.cache.clone()).expect("cache");
    cache.repository_changed("a/b", "write").await;
    let view = cache.view("a/b").await;
    view.get(aerugo_dataplane::cache::Kind::Tag, "x").await;
    let pool = aerugo_dataplane::metrics::PoolStatus { in_use: 0, idle: 0, waiting: 0, max: 1 };
    let exported = metrics.render(pool);
    // The operator's reconcile metrics are defined in one place.
    let operator = include_str!("../../../operator/src/context.rs");
    let mut missing = Vec::new();
    for name in dashboard_metrics() {
        let in_dataplane = exported.lines().any(|l| l.starts_with(&format!("# TYPE {name} ")));
        let in_operator = operator.contains(&format!("\"{name}\""));
        // Redis errors appear once Redis fails; the family is defined with the cache's.
        let defined_in_cache =
            include_str!("../../src/cache/mod.rs").contains(&format!("\"{}\"", &name["aerugo_".len()..]));
        if !(in_dataplane || in_operator || defined_in_cache) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "the dashboard queries metrics nothing exports: {missing:?}");
    assert!(dashboard_metrics().len() >= 15);
}
