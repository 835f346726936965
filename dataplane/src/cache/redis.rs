//! The Redis side of the cache: generations (epoch, tenancy, one per repository) and shared
//! entries. Every command fails fast with a short timeout: a cache that waits is worse than
//! no cache. The first failure takes the node off Redis (requests read Postgres); a background
//! task brings it back once Redis answers, with a new epoch, because a generation bump this
//! node could not record meanwhile must not leave old entries valid anywhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::{
    Builder, ClientLike, Config, EventInterface, Expiration, KeysInterface, Options, ReconnectPolicy, SetOptions,
    TcpConfig,
};

use super::{CacheMetrics, Stamp};
use crate::config::ConfigError;

/// How to reach Redis.
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port[/db]`, `rediss://…`, or a cluster URL.
    pub url: String,
    /// Longest wait for one command before the node stops using Redis.
    pub timeout: Duration,
    /// Prefix of every key, so registries (or test runs) can share one Redis.
    pub prefix: String,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("RedisSettings")
            .field("timeout", &self.timeout)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Key names. Generations share one hash slot (`{g}`), so one `MGET` fetches a whole stamp
/// in cluster mode too; a repository's entries share its slot.
#[derive(Clone)]
struct Keys {
    prefix: String,
    epoch: String,
    tenancy: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        let prefix = prefix.replace(['{', '}'], "");
        Keys { epoch: format!("{prefix}:{{g}}:epoch"), tenancy: format!("{prefix}:{{g}}:tenancy"), prefix }
    }

    fn repository(&self, repository: &str) -> String {
        format!("{}:{{g}}:repo:{repository}", self.prefix)
    }

    fn entry(&self, kind: &str, repository: &str, key: &str) -> String {
        format!("{}:c:{{{repository}}}:{kind}:{key}", self.prefix)
    }
}

struct Health {
    /// Whether requests may use Redis.
    up: AtomicBool,
    /// Whether Redis was ever used by this node (it is past start-up).
    ever_up: AtomicBool,
    /// Whether the next recovery must start a new epoch (something may have been missed).
    renew_epoch: AtomicBool,
}

pub(super) struct RedisTier {
    client: fred::clients::Client,
    keys: Keys,
    options: Options,
    health: Arc<Health>,
    metrics: CacheMetrics,
}

impl RedisTier {
    /// Starts connecting in the background and returns at once.
    pub(super) fn connect(settings: &RedisSettings, metrics: CacheMetrics) -> Result<RedisTier, ConfigError> {
        let mut config =
            Config::from_url(&settings.url).map_err(|e| ConfigError(format!("invalid Redis URL: {}", e.details())))?;
        // Keep retrying the first connection too: a node starts whether or not Redis is up.
        config.fail_fast = false;
        let timeout = settings.timeout;
        let client = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = timeout.max(Duration::from_secs(1));
                c.internal_command_timeout = timeout.max(Duration::from_secs(1));
                c.max_command_attempts = 1;
                c.tcp = TcpConfig { nodelay: Some(true), ..Default::default() };
            })
            .set_policy(ReconnectPolicy::new_constant(0, 250))
            .build()
            .map_err(|e| ConfigError(format!("Redis client: {}", e.details())))?;
        let options = Options { timeout: Some(timeout), fail_fast: true, max_attempts: Some(1), ..Default::default() };
        let health = Arc::new(Health {
            up: AtomicBool::new(false),
            ever_up: AtomicBool::new(false),
            renew_epoch: AtomicBool::new(false),
        });
        metrics.redis_up.set(0);
        drop(client.connect());
        let keys = Keys::new(&settings.prefix);
        tokio::spawn(watch(client.clone(), keys.clone(), options.clone(), health.clone(), metrics.clone()));
        Ok(RedisTier { client, keys, options, health, metrics })
    }

    pub(super) fn is_up(&self) -> bool {
        self.health.up.load(Ordering::Acquire)
    }

    /// Takes the node off Redis after a failed command.
    fn failed(&self, op: &str, error: &fred::error::Error) {
        self.metrics.redis_errors.with_label_values(&[op]).inc();
        self.health.renew_epoch.store(true, Ordering::Release);
        if self.health.up.swap(false, Ordering::AcqRel) {
            self.metrics.redis_up.set(0);
            tracing::warn!(op, error = %error, "Redis unreachable: serving from Postgres until it answers again");
        }
    }

    /// The current stamp of `repository`, or `None` while Redis is not trusted.
    pub(super) async fn stamp(&self, repository: &str) -> Option<Stamp> {
        if !self.is_up() {
            return None;
        }
        let repo_key = self.keys.repository(repository);
        let (epoch_key, tenancy_key) = (self.keys.epoch.as_str(), self.keys.tenancy.as_str());
        for _ in 0..2 {
            let values: Vec<Option<String>> = match self
                .client
                .with_options(&self.options)
                .mget(vec![epoch_key, tenancy_key, repo_key.as_str()])
                .await
            {
                Ok(values) => values,
                Err(e) => {
                    self.failed("stamp", &e);
                    return None;
                }
            };
            let epoch = values.first().and_then(Option::as_deref).and_then(|v| u128::from_str_radix(v, 16).ok());
            let tenancy = values.get(1).and_then(Option::as_deref).and_then(|v| v.parse::<u64>().ok());
            let repo = values.get(2).and_then(Option::as_deref).and_then(|v| v.parse::<u64>().ok());
            if let (Some(epoch), Some(tenancy), Some(repository)) = (epoch, tenancy, repo) {
                return Some(Stamp { epoch, tenancy, repository });
            }
            // A generation that does not exist (first use, or lost with Redis's data) starts
            // at a random value, never at one an old entry could carry.
            let missing = [(epoch.is_none(), epoch_key), (tenancy.is_none(), tenancy_key), (repo.is_none(), &repo_key)];
            for (_, key) in missing.into_iter().filter(|(absent, _)| *absent) {
                let initial = if key == epoch_key { random_epoch() } else { random_generation() };
                let set: Result<Option<String>, _> =
                    self.client.with_options(&self.options).set(key, initial, None, Some(SetOptions::NX), false).await;
                if let Err(e) = set {
                    self.failed("init", &e);
                    return None;
                }
            }
        }
        None
    }

    /// Bumps a repository's generation; false when it could not be recorded (the caller
    /// then tells the other nodes through Postgres).
    pub(super) async fn bump_repository(&self, repository: &str) -> bool {
        let options = self.bump_options().await;
        let bumped: Result<i64, _> = self.client.with_options(&options).incr(self.keys.repository(repository)).await;
        self.bumped(bumped)
    }

    /// Bumps the tenancy generation; false when it could not be recorded.
    pub(super) async fn bump_tenancy(&self) -> bool {
        let options = self.bump_options().await;
        let bumped: Result<i64, _> = self.client.with_options(&options).incr(self.keys.tenancy.as_str()).await;
        self.bumped(bumped)
    }

    /// How a bump is sent. Until this node has used Redis once (it is starting), a bump waits
    /// up to 2 s for the first connection: other nodes may be serving from Redis, and this bump
    /// is what retires their entries. Once Redis has failed, bumps fail fast like reads, so a
    /// Redis outage does not slow every write down; the Postgres announcement covers them.
    async fn bump_options(&self) -> Options {
        if self.health.ever_up.load(Ordering::Acquire) {
            return self.options.clone();
        }
        let wait = self.options.timeout.unwrap_or_default().max(Duration::from_secs(2));
        if !self.client.is_connected() {
            let _ = tokio::time::timeout(wait, self.client.wait_for_connect()).await;
        }
        Options { fail_fast: false, timeout: Some(wait), ..self.options.clone() }
    }

    fn bumped(&self, result: Result<i64, fred::error::Error>) -> bool {
        match result {
            Ok(_) => true,
            Err(e) => {
                self.failed("bump", &e);
                false
            }
        }
    }

    /// The key of a shared entry.
    pub(super) fn entry_key(&self, kind: &str, repository: &str, key: &str) -> String {
        self.keys.entry(kind, repository, key)
    }

    pub(super) async fn get(&self, key: &str) -> Option<Bytes> {
        if !self.is_up() {
            return None;
        }
        match self.client.with_options(&self.options).get::<Option<Bytes>, _>(key).await {
            Ok(value) => value,
            Err(e) => {
                self.failed("get", &e);
                None
            }
        }
    }

    pub(super) async fn set(&self, key: &str, value: Bytes, ttl: Duration) {
        if !self.is_up() {
            return;
        }
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1);
        let set: Result<(), _> =
            self.client.with_options(&self.options).set(key, value, Some(Expiration::EX(ttl)), None, false).await;
        if let Err(e) = set {
            self.failed("set", &e);
        }
    }
}

/// Brings the node back onto Redis once it answers (with a new epoch when anything may have
/// been missed), and takes it off when a connection is re-established behind its back (Redis
/// restarted: its data may be gone or older than what the node saw).
async fn watch(
    client: fred::clients::Client,
    keys: Keys,
    options: Options,
    health: Arc<Health>,
    metrics: CacheMetrics,
) {
    let mut reconnects = client.reconnect_rx();
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            event = reconnects.recv() => {
                if event.is_err() && !client.is_connected() {
                    // The event channel lagged or closed; the ticker still recovers.
                    continue;
                }
                // The first connection is not a reconnection.
                if health.ever_up.load(Ordering::Acquire) {
                    health.renew_epoch.store(true, Ordering::Release);
                    if health.up.swap(false, Ordering::AcqRel) {
                        metrics.redis_up.set(0);
                        tracing::warn!("Redis connection re-established: retiring cached entries before using it");
                    }
                }
            }
            _ = ticker.tick() => {}
        }
        if health.up.load(Ordering::Acquire) || !client.is_connected() {
            continue;
        }
        let renew = health.renew_epoch.swap(false, Ordering::AcqRel);
        let set: Result<Option<String>, _> = if renew {
            client.with_options(&options).set(keys.epoch.as_str(), random_epoch(), None, None, false).await
        } else {
            client
                .with_options(&options)
                .set(keys.epoch.as_str(), random_epoch(), None, Some(SetOptions::NX), false)
                .await
        };
        match set {
            Ok(_) => {
                health.up.store(true, Ordering::Release);
                health.ever_up.store(true, Ordering::Release);
                metrics.redis_up.set(1);
                if renew {
                    metrics.invalidated("epoch", "recovery");
                    tracing::info!("Redis answers again: cache resumed under a new epoch");
                } else {
                    tracing::info!("Redis connected: cache enabled");
                }
            }
            Err(e) => {
                health.renew_epoch.fetch_or(renew, Ordering::AcqRel);
                tracing::debug!(error = %e, "Redis not ready yet");
            }
        }
    }
}

fn random_epoch() -> String {
    format!("{:032x}", uuid::Uuid::new_v4().as_u128())
}

/// A random starting generation, below `i64::MAX` so `INCR` keeps working.
fn random_generation() -> String {
    (uuid::Uuid::new_v4().as_u64_pair().0 >> 2).to_string()
}
