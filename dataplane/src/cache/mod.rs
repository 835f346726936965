//! The pull-path cache: tag → digest, manifest bodies, blob existence, tag lists and
//! authorization decisions, per repository, in two tiers: this node's memory and, when
//! configured, Redis shared by every node.
//!
//! **Freshness by generation, not by expiry.** Every entry is stored under a [`Stamp`]: the
//! cache's epoch, the tenancy generation and the repository's generation. A write that changes
//! what a repository serves (a tag push or move, a delete) bumps the repository's generation
//! *before it is acknowledged*; a change of tenancy state (visibility, grants, members, keys,
//! repositories appearing or going) bumps the tenancy generation. A reader fetches the current
//! stamp first (one Redis round trip, or none without Redis) and only ever looks entries up
//! under it, so once a push is acknowledged no node can find the old digest: the entries that
//! name it sit under a stamp nobody asks for again. A reader that loaded from Postgres before a
//! concurrent write stores under the stamp it started with, which the write already retired.
//!
//! Without Redis, the generations live in this process (one node). When Redis stops
//! answering, every request goes to Postgres and a metric and a log line say so; when it
//! answers again the node starts a new epoch before trusting anything (bumps it could not
//! record meanwhile would otherwise be lost), which retires every entry on every node.
//! Expiry (`--cache-ttl`) only bounds the life of entries nothing invalidated.

pub mod codec;
pub mod listen;
mod redis;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

pub use redis::RedisSettings;

/// Which cache a node runs.
#[derive(Debug, Clone)]
pub enum CacheMode {
    /// No caching: every read goes to Postgres (several nodes without Redis).
    Off,
    /// In this process only (one node).
    Local,
    /// In this process and in Redis, with generations in Redis (any number of nodes).
    Redis(RedisSettings),
}

impl CacheMode {
    /// The mode's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            CacheMode::Off => "off",
            CacheMode::Local => "local",
            CacheMode::Redis(_) => "redis",
        }
    }
}

/// Cache settings.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Where generations and shared entries live.
    pub mode: CacheMode,
    /// Memory this node's tier may use, in bytes.
    pub memory_bytes: u64,
    /// Longest life of an entry nothing invalidated.
    pub ttl: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings { mode: CacheMode::Local, memory_bytes: 64 << 20, ttl: Duration::from_secs(300) }
    }
}

/// What an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Tag → manifest digest.
    Tag,
    /// Manifest digest → the stored manifest.
    Manifest,
    /// Blob digest → size and storage location (the blob is linked in the repository).
    Blob,
    /// A page of the tag list.
    Tags,
    /// A principal's rights on the repository name.
    Rights,
}

impl Kind {
    const ALL: [Kind; 5] = [Kind::Tag, Kind::Manifest, Kind::Blob, Kind::Tags, Kind::Rights];

    fn as_str(self) -> &'static str {
        match self {
            Kind::Tag => "tag",
            Kind::Manifest => "manifest",
            Kind::Blob => "blob",
            Kind::Tags => "tags",
            Kind::Rights => "rights",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The generations an entry is valid under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stamp {
    epoch: u128,
    tenancy: u64,
    repository: u64,
}

impl Stamp {
    const ENCODED: usize = 32;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.tenancy.to_be_bytes());
        out.extend_from_slice(&self.repository.to_be_bytes());
    }

    /// Splits a Redis value into its stamp and payload.
    fn split(value: &Bytes) -> Option<(Stamp, Bytes)> {
        let head = value.get(..Self::ENCODED)?;
        let epoch = u128::from_be_bytes(head[..16].try_into().ok()?);
        let tenancy = u64::from_be_bytes(head[16..24].try_into().ok()?);
        let repository = u64::from_be_bytes(head[24..32].try_into().ok()?);
        Some((Stamp { epoch, tenancy, repository }, value.slice(Self::ENCODED..)))
    }
}

/// An entry's key in this node's tier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    stamp: Stamp,
    kind: Kind,
    repository: Box<str>,
    key: Box<str>,
}

/// A borrowed [`Key`], so lookups allocate nothing. Hashes exactly as [`Key`] does.
#[derive(Debug)]
struct KeyRef<'a> {
    stamp: Stamp,
    kind: Kind,
    repository: &'a str,
    key: &'a str,
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.stamp.hash(state);
        self.kind.hash(state);
        self.repository.hash(state);
        self.key.hash(state);
    }
}

impl quick_cache::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.stamp == key.stamp && self.kind == key.kind && *self.repository == *key.repository && *self.key == *key.key
    }
}

#[derive(Clone)]
struct Entry {
    value: Bytes,
    stored: Instant,
}

#[derive(Clone)]
struct Weigh;

impl quick_cache::Weighter<Key, Entry> for Weigh {
    fn weight(&self, key: &Key, entry: &Entry) -> u64 {
        (key.repository.len() + key.key.len() + entry.value.len() + 96) as u64
    }
}

/// Generations kept in this process (single node).
#[derive(Default)]
struct LocalGenerations {
    tenancy: AtomicU64,
    repositories: RwLock<HashMap<Box<str>, u64>>,
}

impl LocalGenerations {
    fn stamp(&self, repository: &str) -> Stamp {
        let tenancy = self.tenancy.load(Ordering::Acquire);
        let repository = self.repositories.read().map_or(0, |r| r.get(repository).copied().unwrap_or(0));
        Stamp { epoch: 0, tenancy, repository }
    }

    fn bump_repository(&self, repository: &str) {
        if let Ok(mut gens) = self.repositories.write() {
            *gens.entry(repository.into()).or_insert(0) += 1;
        }
    }

    fn bump_tenancy(&self) {
        self.tenancy.fetch_add(1, Ordering::AcqRel);
    }
}

enum Generations {
    Off,
    Local(LocalGenerations),
    Redis(redis::RedisTier),
}

/// The cache's metrics, registered on the node's metrics registry.
#[derive(Clone)]
pub struct CacheMetrics {
    /// `[kind][result]`: local hit, Redis hit, miss, bypassed.
    lookups: Vec<[IntCounter; 4]>,
    invalidations: IntCounterVec,
    redis_errors: IntCounterVec,
    redis_up: IntGauge,
}

impl CacheMetrics {
    /// Creates the metrics and registers them on `registry` (`None`: unregistered, for tests).
    pub fn new(registry: Option<&prometheus::Registry>) -> prometheus::Result<Self> {
        let lookups_vec = IntCounterVec::new(
            Opts::new("cache_lookups_total", "Cache lookups by kind and result (local_hit, redis_hit, miss, bypass)"),
            &["kind", "result"],
        )?;
        let invalidations = IntCounterVec::new(
            Opts::new(
                "cache_invalidations_total",
                "Generation bumps by scope (repository, tenancy, epoch) and origin (write, notify, recovery)",
            ),
            &["scope", "origin"],
        )?;
        let redis_errors =
            IntCounterVec::new(Opts::new("cache_redis_errors_total", "Failed Redis commands by operation"), &["op"])?;
        let redis_up = IntGauge::new("cache_redis_up", "1 while the cache trusts Redis, 0 while requests bypass it")?;
        if let Some(registry) = registry {
            registry.register(Box::new(lookups_vec.clone()))?;
            registry.register(Box::new(invalidations.clone()))?;
            registry.register(Box::new(redis_errors.clone()))?;
            registry.register(Box::new(redis_up.clone()))?;
        }
        let lookups = Kind::ALL
            .iter()
            .map(|k| {
                ["local_hit", "redis_hit", "miss", "bypass"].map(|r| lookups_vec.with_label_values(&[k.as_str(), r]))
            })
            .collect();
        Ok(CacheMetrics { lookups, invalidations, redis_errors, redis_up })
    }

    fn lookup(&self, kind: Kind, result: usize) {
        if let Some(row) = self.lookups.get(kind.index()) {
            row[result].inc();
        }
    }

    fn invalidated(&self, scope: &str, origin: &str) {
        self.invalidations.with_label_values(&[scope, origin]).inc();
    }
}

const LOCAL_HIT: usize = 0;
const REDIS_HIT: usize = 1;
const MISS: usize = 2;
const BYPASS: usize = 3;

/// The cache of one node.
pub struct Cache {
    local: quick_cache::sync::Cache<Key, Entry, Weigh>,
    generations: Generations,
    metrics: CacheMetrics,
    ttl: Duration,
}

impl Cache {
    /// A cache per `settings`. With Redis, the connection is made in the background: the node
    /// serves from Postgres until Redis answers.
    pub fn new(settings: &CacheSettings, metrics: CacheMetrics) -> Result<Cache, crate::config::ConfigError> {
        let generations = match &settings.mode {
            CacheMode::Off => Generations::Off,
            CacheMode::Local => Generations::Local(LocalGenerations::default()),
            CacheMode::Redis(redis) => Generations::Redis(redis::RedisTier::connect(redis, metrics.clone())?),
        };
        Ok(Cache::build(generations, metrics, settings.memory_bytes, settings.ttl))
    }

    fn build(generations: Generations, metrics: CacheMetrics, memory_bytes: u64, ttl: Duration) -> Cache {
        let items = usize::try_from(memory_bytes / 2048).unwrap_or(1 << 16).clamp(64, 1 << 20);
        Cache {
            local: quick_cache::sync::Cache::with_weighter(items, memory_bytes.max(1 << 20), Weigh),
            generations,
            metrics,
            ttl,
        }
    }

    /// An in-process cache with unregistered metrics (tests, tools).
    pub fn local() -> Cache {
        let metrics = match CacheMetrics::new(None) {
            Ok(metrics) => metrics,
            // Only invalid metric names fail, and the names are constants.
            Err(e) => panic!("cache metric definitions are invalid: {e}"),
        };
        Cache::build(Generations::Local(LocalGenerations::default()), metrics, 16 << 20, Duration::from_secs(300))
    }

    /// Whether Redis backs this cache.
    pub fn is_shared(&self) -> bool {
        matches!(self.generations, Generations::Redis(_))
    }

    /// The view of `repository` for one request: its current stamp is fetched once (one Redis
    /// round trip at most) and every lookup of the request uses it.
    pub async fn view<'a>(&'a self, repository: &'a str) -> View<'a> {
        let stamp = match &self.generations {
            Generations::Off => None,
            Generations::Local(gens) => Some(gens.stamp(repository)),
            Generations::Redis(redis) => redis.stamp(repository).await,
        };
        View { cache: self, repository, stamp }
    }

    /// Retires every entry of `repository` on every node. Call after the write commits and
    /// before acknowledging it. `origin` labels the metric (`write`, `notify`). False when
    /// Redis could not record it: the caller must tell the other nodes another way.
    pub async fn repository_changed(&self, repository: &str, origin: &str) -> bool {
        self.metrics.invalidated("repository", origin);
        match &self.generations {
            Generations::Off => true,
            Generations::Local(gens) => {
                gens.bump_repository(repository);
                true
            }
            Generations::Redis(redis) => redis.bump_repository(repository).await,
        }
    }

    /// Retires every entry on every node (tenancy state changed: visibility, grants, members,
    /// keys, repositories created or deleted). False when Redis could not record it.
    pub async fn tenancy_changed(&self, origin: &str) -> bool {
        self.metrics.invalidated("tenancy", origin);
        match &self.generations {
            Generations::Off => true,
            Generations::Local(gens) => {
                gens.bump_tenancy();
                true
            }
            Generations::Redis(redis) => redis.bump_tenancy().await,
        }
    }

    /// Waits up to `timeout` for the cache to serve (Redis connected); false if it does not.
    pub async fn wait_serving(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_serving() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Whether the cache is serving (false while Redis is unreachable or caching is off).
    pub fn is_serving(&self) -> bool {
        match &self.generations {
            Generations::Off => false,
            Generations::Local(_) => true,
            Generations::Redis(redis) => redis.is_up(),
        }
    }
}

/// One request's view of a repository's entries.
pub struct View<'a> {
    cache: &'a Cache,
    repository: &'a str,
    stamp: Option<Stamp>,
}

impl View<'_> {
    /// The repository this view is of.
    pub fn repository(&self) -> &str {
        self.repository
    }

    /// The entry `kind`/`key`, from this node's memory, else from Redis.
    pub async fn get(&self, kind: Kind, key: &str) -> Option<Bytes> {
        let Some(stamp) = self.stamp else {
            self.cache.metrics.lookup(kind, BYPASS);
            return None;
        };
        let wanted = KeyRef { stamp, kind, repository: self.repository, key };
        if let Some(entry) = self.cache.local.get(&wanted) {
            if entry.stored.elapsed() < self.cache.ttl {
                self.cache.metrics.lookup(kind, LOCAL_HIT);
                return Some(entry.value);
            }
            self.cache.local.remove(&wanted);
        }
        if let Generations::Redis(redis) = &self.cache.generations
            && let Some(stored) = redis.get(&redis.entry_key(kind.as_str(), self.repository, key)).await
            && let Some((at, value)) = Stamp::split(&stored)
            && at == stamp
        {
            self.cache.metrics.lookup(kind, REDIS_HIT);
            self.remember(stamp, kind, key, value.clone());
            return Some(value);
        }
        self.cache.metrics.lookup(kind, MISS);
        None
    }

    /// Stores `value` as `kind`/`key` under the stamp this view was opened with.
    pub async fn put(&self, kind: Kind, key: &str, value: Bytes) {
        let Some(stamp) = self.stamp else { return };
        self.remember(stamp, kind, key, value.clone());
        if let Generations::Redis(redis) = &self.cache.generations {
            let mut stored = Vec::with_capacity(Stamp::ENCODED + value.len());
            stamp.encode(&mut stored);
            stored.extend_from_slice(&value);
            redis.set(&redis.entry_key(kind.as_str(), self.repository, key), Bytes::from(stored), self.cache.ttl).await;
        }
    }

    fn remember(&self, stamp: Stamp, kind: Kind, key: &str, value: Bytes) {
        let key = Key { stamp, kind, repository: self.repository.into(), key: key.into() };
        self.cache.local.insert(key, Entry { value, stored: Instant::now() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bump_retires_what_was_stored_before_it() {
        let cache = Cache::local();
        let view = cache.view("acme/app").await;
        view.put(Kind::Tag, "latest", Bytes::from_static(b"sha256:old")).await;
        assert_eq!(cache.view("acme/app").await.get(Kind::Tag, "latest").await.as_deref(), Some(&b"sha256:old"[..]));
        cache.repository_changed("acme/app", "write").await;
        assert_eq!(cache.view("acme/app").await.get(Kind::Tag, "latest").await, None);
        // A reader that opened its view before the bump stores under the retired stamp.
        view.put(Kind::Tag, "latest", Bytes::from_static(b"sha256:old")).await;
        assert_eq!(cache.view("acme/app").await.get(Kind::Tag, "latest").await, None);
    }

    #[tokio::test]
    async fn repositories_are_independent_and_tenancy_retires_all() {
        let cache = Cache::local();
        cache.view("acme/a").await.put(Kind::Blob, "d", Bytes::from_static(b"a")).await;
        cache.view("acme/b").await.put(Kind::Blob, "d", Bytes::from_static(b"b")).await;
        cache.repository_changed("acme/a", "write").await;
        assert_eq!(cache.view("acme/a").await.get(Kind::Blob, "d").await, None);
        assert_eq!(cache.view("acme/b").await.get(Kind::Blob, "d").await.as_deref(), Some(&b"b"[..]));
        cache.tenancy_changed("notify").await;
        assert_eq!(cache.view("acme/b").await.get(Kind::Blob, "d").await, None);
    }

    #[tokio::test]
    async fn kinds_and_keys_do_not_collide() {
        let cache = Cache::local();
        let view = cache.view("acme/a").await;
        view.put(Kind::Tag, "x", Bytes::from_static(b"tag")).await;
        assert_eq!(view.get(Kind::Manifest, "x").await, None);
        assert_eq!(view.get(Kind::Tag, "y").await, None);
        assert_eq!(cache.view("acme/b").await.get(Kind::Tag, "x").await, None);
    }

    #[test]
    fn stamps_round_trip_through_redis_values() {
        let stamp = Stamp { epoch: u128::MAX - 7, tenancy: 3, repository: 9 };
        let mut stored = Vec::new();
        stamp.encode(&mut stored);
        stored.extend_from_slice(b"payload");
        let (back, payload) = Stamp::split(&Bytes::from(stored)).expect("split");
        assert_eq!((back, &payload[..]), (stamp, &b"payload"[..]));
        assert!(Stamp::split(&Bytes::from_static(b"short")).is_none());
    }
}
