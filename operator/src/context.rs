//! What every reconcile gets: the database, the world (cluster or files), settings and metrics.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::world::World;

/// Operator settings (built from flags in `main`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The registry host written into pull Secrets (`registry.example.com`, `127.0.0.1:5000`).
    pub registry_host: String,
    /// How often an object that reconciled cleanly is looked at again (drift and usage).
    pub resync: Duration,
    /// The registry's blob storage, where Organizations' dedicated buckets are created;
    /// `None`: dedicated buckets cannot be served (such Organizations are refused).
    pub storage: Option<StorageAccess>,
    /// The operator watches Pods (`run` in a cluster): retention and the collector delete
    /// nothing until the digests running Pods use have been written recently.
    pub pods_watched: bool,
}

/// How the operator reaches the registry's blob storage (the data plane's own settings).
#[derive(Debug, Clone)]
pub enum StorageAccess {
    /// The filesystem backend: a dedicated location is a directory the data plane creates.
    File,
    /// An S3 service: dedicated buckets are created there, with the registry's credentials
    /// (the data plane reads them with the same ones).
    S3 {
        /// Endpoint URL.
        endpoint: String,
        /// The registry's own bucket, which no organization may name.
        bucket: String,
        /// Signing region.
        region: String,
        /// Path-style addressing.
        path_style: bool,
        /// Access key id.
        access_key_id: String,
        /// Secret access key.
        secret_access_key: String,
        /// The principal the data plane signs as, for bucket policies (with readers or
        /// `denyInsecureTransport`).
        principal: Option<String>,
    },
}

/// Reconcile metrics, per controller.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Reconciles run.
    pub runs: IntCounterVec,
    /// Reconciles that failed, by reason.
    pub failures: IntCounterVec,
    /// Reconcile duration.
    pub duration: HistogramVec,
}

impl Metrics {
    /// Registers the metrics in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let runs =
            IntCounterVec::new(Opts::new("aerugo_operator_reconcile_runs_total", "Reconciles run."), &["controller"])?;
        let failures = IntCounterVec::new(
            Opts::new("aerugo_operator_reconcile_failures_total", "Reconciles that failed."),
            &["controller", "reason"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new("aerugo_operator_reconcile_duration_seconds", "Reconcile duration.")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["controller"],
        )?;
        registry.register(Box::new(runs.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Metrics { runs, failures, duration })
    }
}

/// Shared by every reconcile.
pub struct Context {
    /// The registry database.
    pub db: aerugo_db::Pool,
    /// The cluster, or the files.
    pub world: World,
    /// Settings.
    pub settings: Settings,
    /// Metrics.
    pub metrics: Metrics,
    /// Consecutive failures per object UID, for the retry backoff.
    pub failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context over `db` and `world`.
    pub fn new(db: aerugo_db::Pool, world: World, settings: Settings, metrics: Metrics) -> Self {
        Context { db, world, settings, metrics, failures: Mutex::default() }
    }

    /// The delay before retrying an object that failed `n` times in a row: 1 s doubling to 5 min.
    pub fn backoff(&self, uid: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = failures.entry(uid.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs(1u64 << (*n - 1).min(8)).min(Duration::from_secs(300))
    }

    /// Forgets the failures of an object that reconciled.
    pub fn succeeded(&self, uid: &str) {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(uid);
    }
}
