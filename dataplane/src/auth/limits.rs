//! Request rate limits per client address, per organization and, for the token endpoint, per
//! client address: token buckets in the node (a node's limits; with N nodes behind a Service
//! a client can reach N times as much). Over a limit a request is answered `429
//! TOOMANYREQUESTS` with `Retry-After` before any work is done for it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// A rate: `per_second` sustained, bursts of `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests allowed at once after idling.
    pub burst: f64,
}

impl Rate {
    /// `per_second` requests a second with bursts of twice that; `None` for 0 (no limit).
    pub fn per_second(per_second: u32) -> Option<Rate> {
        (per_second > 0).then(|| Rate { per_second: f64::from(per_second), burst: 2.0 * f64::from(per_second) })
    }
}

/// The configured limits (`None`: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateLimits {
    /// Requests per client address (registry and management API).
    pub client: Option<Rate>,
    /// Requests per organization (the first segment of `/v2/<name>/…`).
    pub organization: Option<Rate>,
    /// Token requests per client address.
    pub token: Option<Rate>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by key.
#[derive(Debug, Default)]
pub struct Buckets {
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Keys kept before idle (full) buckets are forgotten.
const MAX_KEYS: usize = 50_000;

impl Buckets {
    /// Takes one request from `key`'s bucket; `Err(seconds)` to wait when it is empty.
    pub fn take(&self, key: &str, rate: Rate) -> Result<(), u64> {
        self.take_at(key, rate, Instant::now())
    }

    fn take_at(&self, key: &str, rate: Rate, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate.per_second < rate.burst);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket { tokens: rate.burst, at: now });
        let refilled = now.duration_since(bucket.at).as_secs_f64() * rate.per_second;
        bucket.tokens = (bucket.tokens + refilled).min(rate.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / rate.per_second).ceil().max(1.0) as u64)
        }
    }
}

/// What a request counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects<'a> {
    /// The client address.
    pub client: Option<&'a str>,
    /// The organization, for `/v2/<org>/…`.
    pub organization: Option<&'a str>,
    /// A token request.
    pub token: bool,
}

/// The subjects of a request path: the token endpoint, or the organization of a repository
/// route; the management API and `/v2/` itself count only against the client.
pub fn subjects<'a>(path: &'a str, client: Option<&'a str>) -> Subjects<'a> {
    let rest = path.strip_prefix("/v2/").unwrap_or_default();
    let token = rest == "token" || rest == "token/";
    let organization = match rest.split_once('/') {
        Some((org, _)) if !token && !org.is_empty() && !org.starts_with('_') => Some(org),
        _ => None,
    };
    Subjects { client, organization, token }
}

/// The limits and their buckets.
#[derive(Debug, Default)]
pub struct Limiter {
    limits: RateLimits,
    buckets: Buckets,
}

impl Limiter {
    /// A limiter enforcing `limits`.
    pub fn new(limits: RateLimits) -> Self {
        Limiter { limits, buckets: Buckets::default() }
    }

    /// No limit is configured: nothing to count.
    pub fn is_off(&self) -> bool {
        self.limits == RateLimits::default()
    }

    /// Counts a request; `Err((scope, seconds))` when a limit is exceeded.
    pub fn admit(&self, subjects: &Subjects<'_>) -> Result<(), (&'static str, u64)> {
        let client = subjects.client.unwrap_or("unknown");
        if subjects.token
            && let Some(rate) = self.limits.token
        {
            self.buckets.take(&format!("token:{client}"), rate).map_err(|s| ("token", s))?;
        }
        if let Some(rate) = self.limits.client {
            self.buckets.take(&format!("client:{client}"), rate).map_err(|s| ("client", s))?;
        }
        if let (Some(rate), Some(org)) = (self.limits.organization, subjects.organization) {
            self.buckets.take(&format!("org:{org}"), rate).map_err(|s| ("organization", s))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn buckets_allow_bursts_then_the_rate_and_say_how_long_to_wait() {
        let buckets = Buckets::default();
        let rate = Rate { per_second: 2.0, burst: 4.0 };
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(buckets.take_at("a", rate, t0), Ok(()));
        }
        assert_eq!(buckets.take_at("a", rate, t0), Err(1));
        assert_eq!(buckets.take_at("b", rate, t0), Ok(()), "another key has its own bucket");
        let later = t0 + Duration::from_millis(500);
        assert_eq!(buckets.take_at("a", rate, later), Ok(()), "half a second refills one request");
        assert_eq!(buckets.take_at("a", rate, later), Err(1));
        let much_later = t0 + Duration::from_secs(60);
        for _ in 0..4 {
            assert_eq!(buckets.take_at("a", rate, much_later), Ok(()));
        }
        assert!(buckets.take_at("a", rate, much_later).is_err(), "refill stops at the burst");
        let slow = Rate { per_second: 0.1, burst: 1.0 };
        assert_eq!(buckets.take_at("s", slow, t0), Ok(()));
        assert_eq!(buckets.take_at("s", slow, t0), Err(10));
    }

    #[test]
    fn subjects_come_from_the_path() {
        let s = subjects("/v2/acme/team/app/manifests/v1", Some("10.0.0.1"));
        assert_eq!((s.organization, s.token), (Some("acme"), false));
        assert!(subjects("/v2/token", None).token);
        assert_eq!(subjects("/v2/token", None).organization, None);
        assert_eq!(subjects("/v2/_catalog", None).organization, None);
        assert_eq!(subjects("/v2/", None).organization, None);
        assert_eq!(subjects("/api/v1/orgs/acme", None).organization, None);
    }

    #[test]
    fn a_limiter_counts_every_subject() {
        let limiter = Limiter::new(RateLimits {
            client: Rate::per_second(100),
            organization: Some(Rate { per_second: 1.0, burst: 1.0 }),
            token: Some(Rate { per_second: 1.0, burst: 2.0 }),
        });
        let pull = subjects("/v2/acme/app/manifests/v1", Some("c"));
        assert_eq!(limiter.admit(&pull), Ok(()));
        assert_eq!(limiter.admit(&pull).map_err(|e| e.0), Err("organization"));
        assert_eq!(limiter.admit(&subjects("/v2/other/app/manifests/v1", Some("c"))), Ok(()));
        let token = subjects("/v2/token", Some("c"));
        assert_eq!(limiter.admit(&token), Ok(()));
        assert_eq!(limiter.admit(&token), Ok(()));
        assert_eq!(limiter.admit(&token).map_err(|e| e.0), Err("token"));
        assert_eq!(Rate::per_second(0), None);
    }
}
