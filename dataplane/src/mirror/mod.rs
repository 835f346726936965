//! Pull-through mirrors, as the data plane sees them: the table of mirrors (read from Postgres,
//! where the operator writes them, every [`REFRESH`]), how a request names one (`?ns=<registry
//! host>` as containerd's `hosts.toml` sends it, or the mirror organization's prefix), the
//! upstream client, and the metrics. What a miss does is in `registry::mirror`.

pub mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use aerugo_db::Pool;
use aerugo_db::mirrors::{self, Mirror};
use prometheus::{IntCounterVec, Opts};

pub use upstream::{Failure, Upstream};

/// How often the table of mirrors is read again.
pub const REFRESH: Duration = Duration::from_secs(2);

/// A mirror with its repository globs compiled.
pub struct Entry {
    /// The mirror.
    pub mirror: Mirror,
    globs: Vec<globset::GlobMatcher>,
}

impl Entry {
    /// Whether the mirror serves upstream repository `repository`.
    pub fn serves(&self, repository: &str) -> bool {
        self.globs.is_empty() || self.globs.iter().any(|g| g.is_match(repository))
    }
}

#[derive(Default)]
struct Table {
    by_org: HashMap<String, Arc<Entry>>,
    by_host: HashMap<String, Arc<Entry>>,
}

/// Mirror metrics (all labelled by the Mirror's organization).
#[derive(Clone)]
pub struct MirrorMetrics {
    /// Requests to upstreams by kind (`manifest`, `blob`, `check`) and result (`ok`,
    /// `not_found`, `unavailable`, `refused`).
    pub upstream_requests: IntCounterVec,
    /// Bytes fetched from upstreams (blobs and manifests).
    pub upstream_bytes: IntCounterVec,
    /// Pulls through a mirror by `hit` (served from what it holds) or `miss` (fetched).
    pub pulls: IntCounterVec,
    /// Cached manifests served because the upstream could not confirm them.
    pub stale_serves: IntCounterVec,
    /// Images evicted under the byte cap.
    pub evictions: IntCounterVec,
}

impl MirrorMetrics {
    /// Metrics not registered anywhere (tests, tools).
    pub fn unregistered() -> Self {
        match Self::build() {
            Ok(metrics) => metrics,
            // Only invalid names or labels fail, and all are constants.
            Err(e) => panic!("mirror metric definitions are invalid: {e}"),
        }
    }

    fn build() -> prometheus::Result<Self> {
        let vec = |name: &str, help: &str, labels: &[&str]| IntCounterVec::new(Opts::new(name, help), labels);
        Ok(MirrorMetrics {
            upstream_requests: vec(
                "mirror_upstream_requests_total",
                "Requests from mirrors to their upstreams, by kind and result",
                &["mirror", "kind", "result"],
            )?,
            upstream_bytes: vec("mirror_upstream_bytes_total", "Bytes mirrors fetched from upstreams", &["mirror"])?,
            pulls: vec("mirror_pulls_total", "Pulls through mirrors, hit or miss", &["mirror", "kind", "outcome"])?,
            stale_serves: vec(
                "mirror_stale_serves_total",
                "Cached manifests served because the upstream could not confirm them",
                &["mirror"],
            )?,
            evictions: vec("mirror_evictions_total", "Manifests evicted under mirrors' byte caps", &["mirror"])?,
        })
    }

    /// The metrics, registered in `registry`.
    pub fn new(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let metrics = Self::build()?;
        registry.register(Box::new(metrics.upstream_requests.clone()))?;
        registry.register(Box::new(metrics.upstream_bytes.clone()))?;
        registry.register(Box::new(metrics.pulls.clone()))?;
        registry.register(Box::new(metrics.stale_serves.clone()))?;
        registry.register(Box::new(metrics.evictions.clone()))?;
        Ok(metrics)
    }
}

/// The node's mirrors.
pub struct Mirrors {
    table: RwLock<Arc<Table>>,
    /// The upstream client.
    pub upstream: Upstream,
    /// The metrics.
    pub metrics: MirrorMetrics,
    /// (repository, tag) → when this node last confirmed it (saves a database read per pull).
    checked: Mutex<HashMap<(String, String), Instant>>,
}

/// Tags whose confirmation a node remembers at most; past it the memory starts over.
const MAX_CHECKED: usize = 100_000;

/// A request routed to a mirror.
#[derive(Clone)]
pub struct Routed {
    /// The mirror.
    pub entry: Arc<Entry>,
    /// The repository's name upstream (the local name without the organization).
    pub upstream_name: String,
}

impl Mirrors {
    /// No mirrors yet; upstream requests time out after `timeout`.
    pub fn new(timeout: Duration, metrics: MirrorMetrics) -> Self {
        Mirrors {
            table: RwLock::new(Arc::default()),
            upstream: Upstream::new(timeout),
            metrics,
            checked: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> Arc<Table> {
        self.table.read().map(|t| t.clone()).unwrap_or_default()
    }

    /// Whether any mirror is declared (the pull path skips everything else when none is).
    pub fn any(&self) -> bool {
        !self.table().by_org.is_empty()
    }

    /// Reads the mirrors again.
    pub async fn refresh(&self, pool: &Pool) -> aerugo_db::Result<()> {
        let client = pool.get().await?;
        let rows = mirrors::all(&client).await?;
        let mut table = Table::default();
        for mirror in rows {
            let globs = mirror.repositories.iter().filter_map(|p| mirrors::repository_glob(p).ok()).collect();
            let hosts = mirror.registry_hosts.clone();
            let entry = Arc::new(Entry { mirror, globs });
            for host in hosts {
                table.by_host.insert(host.to_ascii_lowercase(), entry.clone());
            }
            table.by_org.insert(entry.mirror.org.clone(), entry);
        }
        if let Ok(mut current) = self.table.write() {
            *current = Arc::new(table);
        }
        Ok(())
    }

    /// Refreshes the table every [`REFRESH`] until the task is dropped.
    pub async fn run(self: Arc<Self>, pool: Pool) {
        loop {
            if let Err(e) = self.refresh(&pool).await {
                tracing::warn!(error = %e, "reading the mirrors failed; serving the last ones read");
            }
            tokio::time::sleep(REFRESH).await;
        }
    }

    /// The local repository name for `name` as requested with `ns` (the registry host the
    /// client asked for, sent by containerd when it pulls through a mirror): under the mirror
    /// organization of that host, else `name` itself.
    pub fn local_name(&self, name: &str, ns: Option<&str>) -> Option<String> {
        let ns = ns?.to_ascii_lowercase();
        let table = self.table();
        let entry = table.by_host.get(&ns)?;
        Some(format!("{}/{name}", entry.mirror.org))
    }

    /// The mirror serving local repository `name`, if its organization is a mirror's and the
    /// mirror's patterns take the upstream name.
    pub fn route(&self, name: &str) -> Option<Routed> {
        let (org, rest) = name.split_once('/')?;
        let table = self.table();
        let entry = table.by_org.get(org)?;
        entry.serves(rest).then(|| Routed { entry: entry.clone(), upstream_name: rest.to_owned() })
    }

    /// The mirror filling organization `org`, if any.
    pub fn of_org(&self, org: &str) -> Option<Arc<Entry>> {
        self.table().by_org.get(org).cloned()
    }

    /// Whether this node confirmed tag `tag` of `repository` less than `fresh` ago.
    pub fn recently_checked(&self, repository: &str, tag: &str, fresh: Duration) -> bool {
        let Ok(checked) = self.checked.lock() else { return false };
        checked.get(&(repository.to_owned(), tag.to_owned())).is_some_and(|at| at.elapsed() < fresh)
    }

    /// Remembers that tag `tag` of `repository` was confirmed at `at`.
    pub fn checked(&self, repository: &str, tag: &str, at: Instant) {
        if let Ok(mut checked) = self.checked.lock() {
            if checked.len() >= MAX_CHECKED {
                checked.clear();
            }
            checked.insert((repository.to_owned(), tag.to_owned()), at);
        }
    }
}
