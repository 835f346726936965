//! Presented credentials: parsing the `Authorization` header, and checking a username with a
//! password or an API key. Failed password attempts are counted in Postgres per user and per
//! source address, so the limit holds whichever node a guess reaches; a successful check is
//! remembered briefly by the hash of the credentials.

use std::sync::Arc;
use std::time::SystemTime;

use aerugo_auth::{apikey, password};
use aerugo_db::audit::{self, Event};
use aerugo_db::tenancy;
use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{Auth, LOGIN_CACHE_TTL, Principal};
use crate::error::{RegistryError, Result};

/// Longest `Authorization` value considered (a token is well under 4 KiB).
const MAX_AUTHORIZATION_LEN: usize = 8192;

/// An argon2id hash checked when the user does not exist (or has no password), so a missing
/// user takes as long to refuse as a wrong password. What it hashes does not matter: a match
/// against it never authenticates anyone (success also needs a stored hash).
fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| password::hash("no such user").unwrap_or_default()).clone()
}

/// What an `Authorization` header carries.
#[derive(Clone)]
pub enum Presented {
    /// No credentials.
    Nothing,
    /// `Basic base64(username:secret)`; the secret is a password or an API key.
    Basic {
        /// Username.
        username: String,
        /// Password or API key.
        secret: String,
    },
    /// `Bearer <token>`.
    Bearer(String),
    /// A header that is neither: refused with the reason.
    Malformed(&'static str),
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Presented::Nothing => f.write_str("Nothing"),
            Presented::Basic { username, .. } => f.debug_struct("Basic").field("username", username).finish(),
            Presented::Bearer(_) => f.write_str("Bearer(..)"),
            Presented::Malformed(why) => f.debug_tuple("Malformed").field(why).finish(),
        }
    }
}

impl Presented {
    /// Parses an `Authorization` header value (`None`: no header).
    pub fn parse(header: Option<&[u8]>) -> Presented {
        let Some(raw) = header else { return Presented::Nothing };
        if raw.len() > MAX_AUTHORIZATION_LEN {
            return Presented::Malformed("the Authorization header is too long");
        }
        let Ok(value) = std::str::from_utf8(raw) else {
            return Presented::Malformed("the Authorization header is not text");
        };
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            return Presented::Bearer(rest.to_owned());
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Presented::Malformed("unsupported authorization scheme (use Basic or Bearer)");
        }
        let decoded =
            base64::engine::general_purpose::STANDARD.decode(rest).ok().and_then(|b| String::from_utf8(b).ok());
        match decoded.as_deref().and_then(|d| d.split_once(':')) {
            Some((username, secret)) if !username.is_empty() => {
                Presented::Basic { username: username.to_owned(), secret: secret.to_owned() }
            }
            _ => Presented::Malformed("malformed Basic credentials (expected base64 of username:password)"),
        }
    }
}

fn login_key(username: &str, secret: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(username.as_bytes());
    hasher.update([0]);
    hasher.update(secret.as_bytes());
    hasher.finalize().into()
}

fn bad_credentials(challenge: String) -> RegistryError {
    RegistryError::Unauthorized { challenge, detail: "invalid username, password or API key".into() }
}

impl Auth {
    /// Checks `username` with `secret` (a password, or an API key of that user or organization).
    /// `challenge` is what a refusal answers with; `source` is the client address.
    pub async fn authenticate(
        &self,
        username: &str,
        secret: &str,
        source: Option<&str>,
        challenge: impl Fn() -> String,
    ) -> Result<Arc<Principal>> {
        let cache_key = login_key(username, secret);
        if let Some((principal, at)) = self.logins.get(&cache_key) {
            let fresh = at.elapsed().is_ok_and(|age| age < LOGIN_CACHE_TTL);
            let key_id = principal.key.as_ref().map(|k| k.key_id.as_str());
            if fresh && !self.is_revoked(key_id, &principal.name) {
                if let Some(id) = key_id {
                    self.mark_used(id);
                }
                return Ok(principal);
            }
            self.logins.remove(&cache_key);
        }
        let principal = match apikey::parse(secret) {
            Some(key) => self.check_key(username, &key, source, &challenge).await?,
            None => self.check_password(username, secret, source, &challenge).await?,
        };
        let principal = Arc::new(principal);
        self.logins.insert(cache_key, (principal.clone(), SystemTime::now()));
        Ok(principal)
    }

    /// The limit keys of an attempt: `user:<name>@<address>` (backoff; a user is never locked
    /// out from other addresses) and `addr:<address>` (a fixed window over every user).
    fn limit_keys(username: Option<&str>, source: Option<&str>) -> Vec<String> {
        username.map(|u| Self::pair_key(u, source)).into_iter().chain(source.map(|s| format!("addr:{s}"))).collect()
    }

    fn pair_key(username: &str, source: Option<&str>) -> String {
        format!("user:{username}@{}", source.unwrap_or("-"))
    }

    async fn check_blocked(
        &self,
        client: &impl aerugo_db::GenericClient,
        username: Option<&str>,
        source: Option<&str>,
    ) -> Result<()> {
        let window = self.settings.login_window.as_secs_f64();
        let user_wait = match username {
            Some(user) => {
                let key = Self::pair_key(user, source);
                tenancy::login_backoff(client, &key, self.settings.max_failures_per_user, window).await?
            }
            None => None,
        };
        let addr_wait = match source {
            Some(_) => {
                tenancy::login_blocked(
                    client,
                    &Self::limit_keys(None, source),
                    self.settings.max_failures_per_address,
                    window,
                )
                .await?
            }
            None => None,
        };
        match user_wait.max(addr_wait) {
            Some(retry_after) => Err(RegistryError::TooManyRequests { retry_after }),
            None => Ok(()),
        }
    }

    async fn record_failure(
        &self,
        client: &impl aerugo_db::GenericClient,
        username: Option<&str>,
        source: Option<&str>,
        what: &str,
    ) -> Result<()> {
        let window = self.settings.login_window.as_secs_f64();
        tenancy::login_failed(client, &Self::limit_keys(username, source), window).await?;
        let event = Event {
            actor: username.unwrap_or("anonymous"),
            action: "auth.login",
            target: username.unwrap_or(""),
            org_id: None,
            source,
            allowed: false,
            detail: json!({ "credential": what }),
        };
        audit::record(client, &event).await?;
        Ok(())
    }

    async fn check_password(
        &self,
        username: &str,
        secret: &str,
        source: Option<&str>,
        challenge: &impl Fn() -> String,
    ) -> Result<Principal> {
        let client = self.client().await?;
        self.check_blocked(&client, Some(username), source).await?;
        let found = tenancy::user_credentials(&client, username).await?;
        // No pool connection is held while the password hash runs.
        drop(client);
        let stored = found.as_ref().and_then(|(u, h)| h.clone().filter(|_| !u.disabled));
        let (candidate, hash) = (secret.to_owned(), stored.clone());
        let matches =
            tokio::task::spawn_blocking(move || password::verify(&candidate, &hash.unwrap_or_else(dummy_hash)))
                .await
                .map_err(|e| RegistryError::Internal(format!("password check: {e}")))?;
        let client = self.client().await?;
        match found {
            Some((user, _)) if matches && stored.is_some() => {
                tenancy::login_succeeded(&client, &Self::pair_key(username, source)).await?;
                Ok(Principal { name: user.username, user_id: Some(user.id), site_admin: user.is_site_admin, key: None })
            }
            _ => {
                self.record_failure(&client, Some(username), source, "password").await?;
                Err(bad_credentials(challenge()))
            }
        }
    }

    async fn check_key(
        &self,
        username: &str,
        key: &apikey::PresentedKey,
        source: Option<&str>,
        challenge: &impl Fn() -> String,
    ) -> Result<Principal> {
        let client = self.client().await?;
        // Keys are high-entropy: guessing them is limited per source address only, so nobody
        // can lock a user out by failing with their name.
        self.check_blocked(&client, None, source).await?;
        let row = tenancy::api_key(&client, &key.key_id).await?;
        let now = OffsetDateTime::now_utc();
        let valid = row.as_ref().filter(|r| {
            let owner_name = r.owner.as_ref().map(|(_, n)| n).or(r.org.as_ref().map(|(_, n)| n));
            key.matches(&r.key_hash)
                && owner_name.is_some_and(|n| n == username)
                && r.revoked_at.is_none()
                && r.expires_at.is_none_or(|e| e > now)
                && !r.owner_disabled
        });
        match valid {
            Some(row) => {
                self.mark_used(&row.key_id);
                Principal::from_key(row)
            }
            None => {
                self.record_failure(&client, None, source, "api_key").await?;
                Err(bad_credentials(challenge()))
            }
        }
    }

    /// Loads the principal a token names: its API key when it has one, else its user. `None`
    /// when the key or user no longer authenticates (revoked, expired, disabled, deleted).
    pub async fn principal_of(&self, subject: &str, key_id: Option<&str>) -> Result<Option<Principal>> {
        let client = self.client().await?;
        if let Some(key_id) = key_id {
            let now = OffsetDateTime::now_utc();
            return match tenancy::api_key(&client, key_id).await? {
                Some(row)
                    if row.revoked_at.is_none() && row.expires_at.is_none_or(|e| e > now) && !row.owner_disabled =>
                {
                    Principal::from_key(&row).map(Some)
                }
                _ => Ok(None),
            };
        }
        if subject.is_empty() {
            return Ok(None);
        }
        Ok(tenancy::user(&client, subject).await?.filter(|u| !u.disabled).map(|u| Principal {
            name: u.username,
            user_id: Some(u.id),
            site_admin: u.is_site_admin,
            key: None,
        }))
    }
}
