//! Prometheus metrics of a data-plane node, served on the admin port: requests by route
//! pattern, method and status with latency histograms, bytes in and out, upload durations,
//! the cache (lookups, invalidations, Redis health), S3 errors, rate limiting, the database
//! pool, and the process (RSS, CPU, file descriptors). Route labels are the router's
//! patterns, never raw paths, so label cardinality stays bounded whatever clients send.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::cache::CacheMetrics;

/// Failed S3 requests by operation, counted where storage errors become responses.
static STORAGE_ERRORS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    IntCounterVec::new(Opts::new("s3_errors_total", "Failed S3 requests by operation"), &["operation"]).ok()
});

/// Counts a failed S3 request.
pub fn storage_error(operation: &str) {
    if let Some(errors) = STORAGE_ERRORS.as_ref() {
        errors.with_label_values(&[operation]).inc();
    }
}

/// A histogram of blob upload durations, from the session's start to its completion.
pub fn upload_histogram() -> Histogram {
    let opts = HistogramOpts::new(
        "upload_duration_seconds",
        "Blob upload sessions, from POST to the completing PUT (monolithic uploads are requests)",
    )
    .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0]);
    match Histogram::with_opts(opts) {
        Ok(h) => h,
        // Only invalid names or buckets fail, and both are constants.
        Err(e) => panic!("upload histogram definition is invalid: {e}"),
    }
}

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    bytes_in: IntCounterVec,
    bytes_out: IntCounterVec,
    pool: IntGaugeVec,
    rate_limited: IntCounterVec,
    /// Upload session durations (recorded by the registry core).
    pub upload_duration: Histogram,
    /// The cache's metrics (recorded by the cache).
    pub cache: CacheMetrics,
    /// Event delivery (recorded by the deliverer).
    pub events: crate::events::EventMetrics,
    /// Pull-through mirrors (recorded by the registry core).
    pub mirrors: crate::mirror::MirrorMetrics,
}

/// Snapshot of the database pool, taken at scrape time.
#[derive(Debug, Clone, Copy)]
pub struct PoolStatus {
    /// Connections handed out.
    pub in_use: usize,
    /// Connections open and idle.
    pub idle: usize,
    /// Requests waiting for a connection.
    pub waiting: usize,
    /// Configured maximum.
    pub max: usize,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("aerugo".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route pattern, method and status"),
            &["route", "method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by route pattern and method")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0]),
            &["route", "method"],
        )?;
        let bytes_in =
            IntCounterVec::new(Opts::new("http_request_bytes_total", "Declared request body bytes"), &["route"])?;
        let bytes_out = IntCounterVec::new(
            Opts::new("http_response_bytes_total", "Response body bytes of sized bodies"),
            &["route"],
        )?;
        let pool =
            IntGaugeVec::new(Opts::new("db_pool_connections", "Database pool connections by state"), &["state"])?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(bytes_in.clone()))?;
        registry.register(Box::new(bytes_out.clone()))?;
        let rate_limited = IntCounterVec::new(
            Opts::new("rate_limited_total", "Requests refused with 429 by a rate limit, by limit"),
            &["limit"],
        )?;
        registry.register(Box::new(pool.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        let upload_duration = upload_histogram();
        registry.register(Box::new(upload_duration.clone()))?;
        if let Some(errors) = STORAGE_ERRORS.as_ref() {
            registry.register(Box::new(errors.clone()))?;
        }
        let cache = CacheMetrics::new(Some(&registry))?;
        let events = crate::events::EventMetrics::new(&registry)?;
        let mirrors = crate::mirror::MirrorMetrics::new(&registry)?;
        Ok(Metrics {
            registry,
            requests,
            duration,
            bytes_in,
            bytes_out,
            pool,
            rate_limited,
            upload_duration,
            cache,
            events,
            mirrors,
        })
    }

    /// Records one finished request.
    pub fn observe(&self, route: &str, method: &str, status: u16, seconds: f64, bytes_in: u64, bytes_out: u64) {
        let status = status.to_string();
        self.requests.with_label_values(&[route, method, &status]).inc();
        self.duration.with_label_values(&[route, method]).observe(seconds);
        if bytes_in > 0 {
            self.bytes_in.with_label_values(&[route]).inc_by(bytes_in);
        }
        if bytes_out > 0 {
            self.bytes_out.with_label_values(&[route]).inc_by(bytes_out);
        }
    }

    /// Counts a request refused by the rate limit `limit` (`client`, `organization`, `token`).
    pub fn rate_limited(&self, limit: &str) {
        self.rate_limited.with_label_values(&[limit]).inc();
    }

    /// The text exposition, with the pool gauges refreshed from `pool`.
    pub fn render(&self, pool: PoolStatus) -> String {
        for (state, value) in
            [("in_use", pool.in_use), ("idle", pool.idle), ("waiting", pool.waiting), ("max", pool.max)]
        {
            self.pool.with_label_values(&[state]).set(i64::try_from(value).unwrap_or(i64::MAX));
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
