//! The data plane's one typed configuration, built in `main` from clap flags (each also read
//! from an `AERUGO_…` environment variable), validated at start-up and passed down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use aerugo_storage::S3Config;
use clap::{Args, ValueEnum};

/// Where blobs live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageKind {
    /// A local directory.
    File,
    /// An S3-compatible service.
    S3,
}

/// How blob GETs are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RedirectMode {
    /// `307` to a presigned storage URL (the node serves one small response).
    Presign,
    /// Stream the bytes through the node (clients that cannot reach storage).
    Proxy,
}

/// Which pull-path cache a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CacheChoice {
    /// Redis when `--redis-url` is set, else in-process.
    Auto,
    /// No cache (several nodes without Redis must not cache in-process).
    Off,
    /// In-process only: one node.
    Local,
    /// Redis (needs `--redis-url`).
    Redis,
}

/// Flags of `aerugo-dataplane serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address the registry listens on.
    #[arg(long, env = "AERUGO_LISTEN", default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,
    /// Address of the admin server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "AERUGO_ADMIN_LISTEN", default_value = "127.0.0.1:9102")]
    pub admin_listen: SocketAddr,
    /// Postgres URL (`postgres://user@host:5432/db`).
    #[arg(long, env = "AERUGO_DATABASE_URL")]
    pub database_url: String,
    /// Largest number of Postgres connections this node opens.
    #[arg(long, env = "AERUGO_DATABASE_POOL_SIZE", default_value_t = 32)]
    pub database_pool_size: usize,
    /// Blob storage backend.
    #[arg(long, env = "AERUGO_STORAGE", value_enum, default_value = "file")]
    pub storage: StorageKind,
    /// Directory of the `file` backend.
    #[arg(long, env = "AERUGO_STORAGE_PATH", default_value = "./data")]
    pub storage_path: PathBuf,
    /// S3 endpoint URL (omit for AWS).
    #[arg(long, env = "AERUGO_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 bucket holding blobs.
    #[arg(long, env = "AERUGO_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3 region used for request signing.
    #[arg(long, env = "AERUGO_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// S3 access key id.
    #[arg(long, env = "AERUGO_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    /// File holding the S3 secret access key (or set `AERUGO_S3_SECRET_ACCESS_KEY`; secrets are
    /// never taken from the command line).
    #[arg(long, env = "AERUGO_S3_SECRET_ACCESS_KEY_FILE")]
    pub s3_secret_access_key_file: Option<PathBuf>,
    /// Path-style S3 addressing (most self-hosted S3 services need it).
    #[arg(long, env = "AERUGO_S3_PATH_STYLE", default_value_t = false)]
    pub s3_path_style: bool,
    /// How blob GETs are answered.
    #[arg(long, env = "AERUGO_REDIRECT", value_enum, default_value = "presign")]
    pub redirect: RedirectMode,
    /// Lifetime of presigned blob URLs, in seconds.
    #[arg(long, env = "AERUGO_PRESIGN_TTL", default_value_t = 300)]
    pub presign_ttl: u64,
    /// Public base URL clients reach the registry at (used in `Location` headers).
    #[arg(long, env = "AERUGO_PUBLIC_URL")]
    pub public_url: Option<url::Url>,
    /// Seconds of inactivity after which an upload session expires and its storage is freed.
    #[arg(long, env = "AERUGO_UPLOAD_TTL", default_value_t = 86_400)]
    pub upload_ttl: u64,
    /// Seconds a request body may go without a byte before the request is refused (slow or
    /// stalled uploads free their connection).
    #[arg(long, env = "AERUGO_BODY_IDLE_TIMEOUT", default_value_t = 60)]
    pub body_idle_timeout: u64,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "AERUGO_WORKERS")]
    pub workers: Option<usize>,
    /// Pull-path cache: `auto` uses Redis when a URL is given, else this process's memory
    /// (right for one node only; run several nodes with Redis or `off`).
    #[arg(long, env = "AERUGO_CACHE", value_enum, default_value = "auto")]
    pub cache: CacheChoice,
    /// Redis URL (`redis://[:password@]host:6379[/db]`; `rediss://` for TLS). Prefer the
    /// environment variable or `--redis-url-file`: the URL may hold a password.
    #[arg(long, env = "AERUGO_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// File holding the Redis URL.
    #[arg(long, env = "AERUGO_REDIS_URL_FILE")]
    pub redis_url_file: Option<PathBuf>,
    /// Longest wait for one Redis command, in milliseconds; slower answers take the node off
    /// Redis (requests read Postgres) until Redis answers again.
    #[arg(long, env = "AERUGO_REDIS_TIMEOUT_MS", default_value_t = 500)]
    pub redis_timeout_ms: u64,
    /// Prefix of this registry's Redis keys (registries sharing one Redis need different ones).
    #[arg(long, env = "AERUGO_REDIS_PREFIX", default_value = "aerugo")]
    pub redis_prefix: String,
    /// Memory for this node's cache tier, in MiB.
    #[arg(long, env = "AERUGO_CACHE_MEMORY_MB", default_value_t = 128)]
    pub cache_memory_mb: u64,
    /// Longest life of a cache entry nothing invalidated, in seconds.
    #[arg(long, env = "AERUGO_CACHE_TTL", default_value_t = 300)]
    pub cache_ttl: u64,
    /// Deliver events to subscriptions from this node (every node competes for the leases;
    /// `false` leaves delivery to the others).
    #[arg(long, env = "AERUGO_EVENTS_DELIVER", default_value_t = true, action = clap::ArgAction::Set)]
    pub events_deliver: bool,
    /// This node's name in event subscription leases (the Pod name in a cluster).
    #[arg(long, env = "AERUGO_NODE_NAME", default_value = "node")]
    pub node_name: String,
    /// Seconds an event subscription lease lasts unrenewed: how soon another node delivers
    /// after the holder dies.
    #[arg(long, env = "AERUGO_EVENT_LEASE_SECONDS", default_value_t = 15)]
    pub event_lease_seconds: u64,
    /// Longest wait, in seconds, between attempts to a failing endpoint (waits double from 1 s).
    #[arg(long, env = "AERUGO_EVENT_RETRY_MAX_SECONDS", default_value_t = 300)]
    pub event_retry_max_seconds: u64,
    /// Seconds an endpoint has to answer a delivery.
    #[arg(long, env = "AERUGO_EVENT_TIMEOUT_SECONDS", default_value_t = 10)]
    pub event_timeout_seconds: u64,
    /// Hours events are kept (the feed, and how long a receiver may be down without losing any).
    #[arg(long, env = "AERUGO_EVENT_RETENTION_HOURS", default_value_t = 168)]
    pub event_retention_hours: u64,
    /// Seconds a mirror's upstream has to answer a request, and to send the next bytes of a
    /// blob, before the request counts as failed (a cached copy is then served).
    #[arg(long, env = "AERUGO_MIRROR_UPSTREAM_TIMEOUT_SECONDS", default_value_t = 30)]
    pub mirror_upstream_timeout_seconds: u64,
    /// Authentication and token settings.
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Flags for authentication and tokens (shared by `serve` and the token tools).
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Service name announced in token challenges (`service=` of `WWW-Authenticate`).
    #[arg(long, env = "AERUGO_SERVICE", default_value = "aerugo")]
    pub service: String,
    /// File holding the hex Ed25519 private key that signs tokens (`aerugo-dataplane keygen`).
    /// Without it a random key is generated at start-up and tokens work only on this node.
    #[arg(long, env = "AERUGO_TOKEN_KEY_FILE")]
    pub token_key_file: Option<PathBuf>,
    /// Files of previous signing keys whose tokens are still accepted (key rotation).
    #[arg(long, env = "AERUGO_TOKEN_PREVIOUS_KEY_FILES", value_delimiter = ',')]
    pub token_previous_key_files: Vec<PathBuf>,
    /// Lifetime of registry access tokens, in seconds.
    #[arg(long, env = "AERUGO_TOKEN_TTL", default_value_t = 300)]
    pub token_ttl: u64,
    /// Lifetime of refresh tokens (`docker login`'s identity token), in seconds.
    #[arg(long, env = "AERUGO_REFRESH_TOKEN_TTL", default_value_t = 30 * 86_400)]
    pub refresh_token_ttl: u64,
    /// Lifetime of management API sessions from `POST /api/v1/auth/login`, in seconds.
    #[arg(long, env = "AERUGO_SESSION_TTL", default_value_t = 3600)]
    pub session_ttl: u64,
    /// Reverse proxies (CIDRs, comma-separated: `10.0.0.0/8,2001:db8::/32`) whose
    /// `X-Forwarded-For` / `Forwarded` entries are believed. The client is the first address,
    /// walking from the peer back through those headers, that is not one of them. Empty: the
    /// peer is the client and the headers are ignored.
    #[arg(long, env = "AERUGO_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Failed password attempts per user from one address after which that address waits
    /// before trying that user again (1 s, doubling up to the login window). Other addresses
    /// are not affected: nobody can lock a user out.
    #[arg(long, env = "AERUGO_LOGIN_MAX_FAILURES_PER_USER", default_value_t = 10)]
    pub login_max_failures_per_user: i32,
    /// Failed attempts per source address, whatever the user, allowed in one window.
    #[arg(long, env = "AERUGO_LOGIN_MAX_FAILURES_PER_ADDRESS", default_value_t = 50)]
    pub login_max_failures_per_address: i32,
    /// Length of the failed-login window, in seconds.
    #[arg(long, env = "AERUGO_LOGIN_WINDOW", default_value_t = 300)]
    pub login_window: u64,
    /// How often revoked keys and disabled users are reloaded, in seconds.
    #[arg(long, env = "AERUGO_REVOCATION_REFRESH", default_value_t = 5)]
    pub revocation_refresh: u64,
    /// Requests per second one client address may make (bursts of twice that), per node;
    /// 0: no limit.
    #[arg(long, env = "AERUGO_CLIENT_RATE_LIMIT", default_value_t = 500)]
    pub client_rate_limit: u32,
    /// Requests per second to one organization's repositories, per node; 0: no limit.
    #[arg(long, env = "AERUGO_ORG_RATE_LIMIT", default_value_t = 0)]
    pub org_rate_limit: u32,
    /// Token requests per second one client address may make, per node; 0: no limit.
    #[arg(long, env = "AERUGO_TOKEN_RATE_LIMIT", default_value_t = 50)]
    pub token_rate_limit: u32,
}

/// Validated authentication settings.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `service=` of challenges.
    pub service: String,
    /// Access token lifetime.
    pub token_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_token_ttl: Duration,
    /// Management session lifetime.
    pub session_ttl: Duration,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: std::sync::Arc<[ipnet::IpNet]>,
    /// Failures per (user, address) before that pair backs off.
    pub max_failures_per_user: i32,
    /// Per-address failure limit.
    pub max_failures_per_address: i32,
    /// Failure window.
    pub login_window: Duration,
    /// Revocation reload period.
    pub revocation_refresh: Duration,
    /// Request rate limits (none by default in code; the flags set some).
    pub rate_limits: crate::auth::limits::RateLimits,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            service: "aerugo".into(),
            token_ttl: Duration::from_secs(300),
            refresh_token_ttl: Duration::from_secs(30 * 86_400),
            session_ttl: Duration::from_secs(3600),
            trusted_proxies: std::sync::Arc::new([]),
            max_failures_per_user: 10,
            max_failures_per_address: 50,
            login_window: Duration::from_secs(300),
            revocation_refresh: Duration::from_secs(5),
            rate_limits: crate::auth::limits::RateLimits::default(),
        }
    }
}

impl AuthArgs {
    /// The settings these flags describe.
    pub fn settings(&self) -> Result<AuthSettings, ConfigError> {
        if !(60..=86_400).contains(&self.token_ttl) {
            return Err(ConfigError("token TTL must be between 60 seconds and one day".into()));
        }
        if self.login_max_failures_per_user < 1 || self.login_max_failures_per_address < 1 || self.login_window == 0 {
            return Err(ConfigError("login limits and window must be positive".into()));
        }
        Ok(AuthSettings {
            service: self.service.clone(),
            token_ttl: Duration::from_secs(self.token_ttl),
            refresh_token_ttl: Duration::from_secs(self.refresh_token_ttl.max(self.token_ttl)),
            session_ttl: Duration::from_secs(self.session_ttl.max(60)),
            trusted_proxies: self.trusted_proxies.clone().into(),
            max_failures_per_user: self.login_max_failures_per_user,
            max_failures_per_address: self.login_max_failures_per_address,
            login_window: Duration::from_secs(self.login_window),
            revocation_refresh: Duration::from_secs(self.revocation_refresh.max(1)),
            rate_limits: crate::auth::limits::RateLimits {
                client: crate::auth::limits::Rate::per_second(self.client_rate_limit),
                organization: crate::auth::limits::Rate::per_second(self.org_rate_limit),
                token: crate::auth::limits::Rate::per_second(self.token_rate_limit),
            },
        })
    }
}

/// Validated settings the registry core runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Blob GET behaviour.
    pub redirect: RedirectMode,
    /// Presigned URL lifetime.
    pub presign_ttl: Duration,
    /// Public base URL without a trailing slash, if configured.
    pub public_url: Option<String>,
    /// Upload session inactivity limit.
    pub upload_ttl: Duration,
    /// Longest wait for the next bytes of a request body.
    pub body_idle_timeout: Duration,
    /// How long a mirror's upstream has to answer (and to send a blob's next bytes).
    pub mirror_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            redirect: RedirectMode::Presign,
            presign_ttl: Duration::from_secs(300),
            public_url: None,
            upload_ttl: Duration::from_secs(86_400),
            body_idle_timeout: Duration::from_secs(60),
            mirror_timeout: Duration::from_secs(30),
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl ServeArgs {
    /// The core settings these flags describe.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        if self.presign_ttl == 0 || self.presign_ttl > 7 * 24 * 3600 {
            return Err(ConfigError("presign TTL must be between 1 second and 7 days".into()));
        }
        if self.upload_ttl < 60 {
            return Err(ConfigError("upload TTL must be at least 60 seconds".into()));
        }
        if !(1..=600).contains(&self.mirror_upstream_timeout_seconds) {
            return Err(ConfigError("the mirror upstream timeout must be between 1 and 600 seconds".into()));
        }
        Ok(Settings {
            redirect: self.redirect,
            presign_ttl: Duration::from_secs(self.presign_ttl),
            public_url: self.public_url.as_ref().map(|u| u.as_str().trim_end_matches('/').to_owned()),
            upload_ttl: Duration::from_secs(self.upload_ttl),
            body_idle_timeout: Duration::from_secs(self.body_idle_timeout.max(1)),
            mirror_timeout: Duration::from_secs(self.mirror_upstream_timeout_seconds),
        })
    }

    /// Event delivery settings; `None` when this node does not deliver.
    pub fn event_settings(&self) -> Result<Option<crate::events::Settings>, ConfigError> {
        if !(2..=3600).contains(&self.event_lease_seconds) {
            return Err(ConfigError("the event lease must be between 2 seconds and one hour".into()));
        }
        if !(1..=86_400).contains(&self.event_retry_max_seconds) {
            return Err(ConfigError("the longest event retry wait must be between 1 second and one day".into()));
        }
        if !(1..=300).contains(&self.event_timeout_seconds) {
            return Err(ConfigError("the event delivery timeout must be between 1 and 300 seconds".into()));
        }
        if self.event_retention_hours == 0 {
            return Err(ConfigError("event retention must be at least one hour".into()));
        }
        Ok(self.events_deliver.then(|| crate::events::Settings {
            node: self.node_name.clone(),
            lease: Duration::from_secs(self.event_lease_seconds),
            retry_max: Duration::from_secs(self.event_retry_max_seconds),
            timeout: Duration::from_secs(self.event_timeout_seconds),
            retention: Duration::from_secs(self.event_retention_hours.saturating_mul(3600)),
        }))
    }

    /// The cache these flags describe.
    pub fn cache_settings(&self) -> Result<crate::cache::CacheSettings, ConfigError> {
        use crate::cache::{CacheMode, CacheSettings, RedisSettings};
        let url = match (&self.redis_url, &self.redis_url_file) {
            (Some(url), _) => Some(url.trim().to_owned()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("reading {}: {e}", path.display())))?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        }
        .filter(|u| !u.is_empty());
        let redis = |url: String| {
            CacheMode::Redis(RedisSettings {
                url,
                timeout: Duration::from_millis(self.redis_timeout_ms.clamp(10, 10_000)),
                prefix: self.redis_prefix.clone(),
            })
        };
        let mode = match (self.cache, url) {
            (CacheChoice::Off, _) => CacheMode::Off,
            (CacheChoice::Local, _) => CacheMode::Local,
            (CacheChoice::Redis | CacheChoice::Auto, Some(url)) => redis(url),
            (CacheChoice::Redis, None) => {
                return Err(ConfigError("--cache redis needs --redis-url or --redis-url-file".into()));
            }
            (CacheChoice::Auto, None) => CacheMode::Local,
        };
        Ok(CacheSettings {
            mode,
            memory_bytes: self.cache_memory_mb.max(1).saturating_mul(1 << 20),
            ttl: Duration::from_secs(self.cache_ttl.clamp(1, 86_400)),
        })
    }

    /// S3 connection settings; `secret_access_key` comes from the file flag or the environment.
    pub fn s3_config(&self, secret_access_key: Option<String>) -> Result<S3Config, ConfigError> {
        let missing = |what: &str| ConfigError(format!("--storage s3 needs {what}"));
        Ok(S3Config {
            endpoint: self.s3_endpoint.clone(),
            bucket: self.s3_bucket.clone().ok_or_else(|| missing("--s3-bucket"))?,
            region: self.s3_region.clone(),
            access_key_id: self.s3_access_key_id.clone().ok_or_else(|| missing("--s3-access-key-id"))?,
            secret_access_key: secret_access_key
                .ok_or_else(|| missing("AERUGO_S3_SECRET_ACCESS_KEY or --s3-secret-access-key-file"))?,
            path_style: self.s3_path_style,
        })
    }
}

/// A CIDR (`10.0.0.0/8`), or a single address (`10.0.0.7`, meaning `/32` or `/128`).
fn parse_cidr(value: &str) -> Result<ipnet::IpNet, String> {
    let value = value.trim();
    value
        .parse::<ipnet::IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{value:?} is not a CIDR (10.0.0.0/8) or an address"))
}
