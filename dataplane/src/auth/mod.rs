//! Authentication and authorization: who a request comes from (Basic credentials, a bearer
//! token, or nobody) and what it may do. Every `/v2/` handler extracts a [`Caller`] and asks it
//! for the action it needs on a repository before it calls the core; the token endpoint and
//! the management API use the same [`Auth`] to check credentials and compute rights.
//!
//! A refusal answers the same whether the repository exists or not, so a caller learns nothing
//! about repositories it may not pull. Tokens are verified offline on every node; verified
//! tokens and their decisions are cached by the token's hash for at most their lifetime.

pub mod caller;
mod credentials;
pub mod limits;
pub mod tokens;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use aerugo_auth::apikey::{CompiledScopes, KeyScope};
use aerugo_auth::permission::{self, OrgRole, Standing, Visibility};
use aerugo_auth::token::TokenKeys;
use aerugo_auth::{Action, Actions};
use aerugo_db::tenancy::{self, AccessFacts};
use aerugo_db::{GenericClient, Pool};
use aerugo_oci::RepoName;
use time::OffsetDateTime;

use crate::cache::codec::{Decoder, Encoder};
use crate::cache::{Kind, View};

pub use caller::{Caller, CatalogViewer};
pub use credentials::Presented;
pub use tokens::CachedToken;

use crate::config::AuthSettings;
use crate::error::{RegistryError, Result};

/// Someone who proved who they are: a user (with a password or one of their API keys), or an
/// organization's API key.
#[derive(Debug)]
pub struct Principal {
    /// Username; for an organization key, the organization's name.
    pub name: String,
    /// The user, unless this is an organization key.
    pub user_id: Option<i64>,
    /// Site administrators may do anything anywhere (an API key still narrows them).
    pub site_admin: bool,
    /// The API key presented, if any.
    pub key: Option<KeyGrant>,
}

/// The API key a principal authenticated with.
#[derive(Debug)]
pub struct KeyGrant {
    /// Row id (grants may name it).
    pub row_id: i64,
    /// Public key id (tokens name it, so revoking the key revokes them).
    pub key_id: String,
    /// For organization keys: the organization, in which the key acts as an admin.
    pub org: Option<(i64, String)>,
    /// What the key allows; it only ever narrows its owner's rights.
    pub scopes: CompiledScopes,
}

impl Principal {
    /// The name audit events record.
    pub fn actor(&self) -> String {
        match (&self.key, self.user_id) {
            (Some(key), None) => format!("key:{}", key.key_id),
            _ => self.name.clone(),
        }
    }

    /// The principal an API key row stands for.
    fn from_key(row: &tenancy::ApiKey) -> Result<Principal> {
        let scopes: Vec<KeyScope> = serde_json::from_value(row.scopes.clone())
            .map_err(|e| RegistryError::Internal(format!("API key {} has unreadable scopes: {e}", row.key_id)))?;
        let scopes = CompiledScopes::new(&scopes)
            .map_err(|e| RegistryError::Internal(format!("API key {} has an invalid scope: {e}", row.key_id)))?;
        let name = match (&row.owner, &row.org) {
            (Some((_, username)), _) => username.clone(),
            (None, Some((_, org))) => org.clone(),
            (None, None) => return Err(RegistryError::Internal(format!("API key {} has no owner", row.key_id))),
        };
        Ok(Principal {
            name,
            user_id: row.owner.as_ref().map(|(id, _)| *id),
            site_admin: row.owner_site_admin,
            key: Some(KeyGrant { row_id: row.id, key_id: row.key_id.clone(), org: row.org.clone(), scopes }),
        })
    }
}

/// What a caller holds on one repository name.
#[derive(Debug, Clone, Copy)]
pub struct Rights {
    /// Allowed actions.
    pub actions: Actions,
    /// The organization the name belongs to, if it exists (for audit events).
    pub org_id: Option<i64>,
    /// May change the repository's settings and delete it (a right of its own, see
    /// `aerugo_auth::permission`).
    pub administer: bool,
}

/// The bit that records [`Rights::administer`] next to the action bits in cached rights.
const ADMINISTER_BIT: i64 = 1 << 8;

/// Credentials that must stop working before their tokens expire.
#[derive(Debug, Default)]
struct Revoked {
    keys: HashSet<String>,
    users: HashSet<String>,
    /// Per username: tokens issued before this are void (all of them, or password-derived).
    resets: HashMap<String, (SystemTime, bool)>,
}

/// The authentication state of one node: token keys, caches, revocations and key usage.
pub struct Auth {
    db: Pool,
    keys: TokenKeys,
    settings: AuthSettings,
    tokens: quick_cache::sync::Cache<[u8; 32], Arc<CachedToken>>,
    logins: quick_cache::sync::Cache<[u8; 32], (Arc<Principal>, SystemTime)>,
    revoked: RwLock<Revoked>,
    last_used: Mutex<HashMap<String, OffsetDateTime>>,
    limiter: limits::Limiter,
}

/// How long a successful Basic login is remembered, so clients that send Basic credentials on
/// every request do not pay for a password hash each time.
const LOGIN_CACHE_TTL: Duration = Duration::from_secs(60);

impl Auth {
    /// Authentication over `db`, signing with `keys`.
    pub fn new(db: Pool, keys: TokenKeys, settings: AuthSettings) -> Self {
        Auth {
            db,
            keys,
            tokens: quick_cache::sync::Cache::new(100_000),
            logins: quick_cache::sync::Cache::new(10_000),
            revoked: RwLock::new(Revoked::default()),
            last_used: Mutex::new(HashMap::new()),
            limiter: limits::Limiter::new(settings.rate_limits),
            settings,
        }
    }

    /// The request rate limits.
    pub fn limiter(&self) -> &limits::Limiter {
        &self.limiter
    }

    /// The settings in force.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// The signing keys.
    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    pub(crate) async fn client(&self) -> Result<aerugo_db::PooledClient> {
        Ok(self.db.get().await.map_err(aerugo_db::Error::from)?)
    }

    /// What `principal` (`None`: anonymous) may do to repository `name`. A name whose
    /// repository does not exist yet gets the rights its organization role gives (so members
    /// see `NAME_UNKNOWN`), with push only where the push may create it.
    pub async fn rights(
        &self,
        client: &impl GenericClient,
        principal: Option<&Principal>,
        name: &RepoName,
    ) -> Result<Rights> {
        let key = principal.and_then(|p| p.key.as_ref());
        let facts = tenancy::access_facts(
            client,
            name.as_str(),
            name.namespace(),
            principal.and_then(|p| p.user_id),
            key.map(|k| k.row_id),
        )
        .await?;
        let org_id = facts.org.map(|(id, _)| id);
        let (actions, administer) = rights_from(&facts, principal, name);
        Ok(Rights { actions, org_id, administer })
    }

    /// [`Auth::rights`] through the cache of the repository `view` is of.
    pub async fn cached_rights(
        &self,
        view: &View<'_>,
        principal: Option<&Principal>,
        name: &RepoName,
    ) -> Result<Rights> {
        let who: std::borrow::Cow<'static, str> = match principal {
            None => "-".into(),
            Some(Principal { key: Some(key), .. }) => format!("k{}", key.row_id).into(),
            Some(Principal { user_id: Some(id), .. }) => format!("u{id}").into(),
            Some(p) => format!("n{}", p.name).into(),
        };
        if let Some(rights) = view.get(Kind::Rights, &who).await.and_then(decode_rights) {
            return Ok(rights);
        }
        let client = self.client().await?;
        let rights = self.rights(&client, principal, name).await?;
        let bits = i64::from(rights.actions.bits()) | if rights.administer { ADMINISTER_BIT } else { 0 };
        let value = Encoder::default().i64(bits).i64(rights.org_id.unwrap_or(-1)).finish();
        view.put(Kind::Rights, &who, value).await;
        Ok(rights)
    }

    /// Records that `key_id` authenticated now; written to the database in batches.
    fn mark_used(&self, key_id: &str) {
        if let Ok(mut used) = self.last_used.lock() {
            used.insert(key_id.to_owned(), OffsetDateTime::now_utc());
        }
    }

    /// Writes pending last-used times (called periodically and at shutdown).
    pub async fn flush_last_used(&self) -> Result<()> {
        let batch: Vec<(String, OffsetDateTime)> = match self.last_used.lock() {
            Ok(mut used) => used.drain().collect(),
            Err(_) => return Ok(()),
        };
        if batch.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        tenancy::touch_api_keys(&client, &batch).await?;
        Ok(())
    }

    /// Reloads revoked keys and disabled users from the database (called periodically, so a
    /// revocation on one node reaches every node within the refresh period).
    pub async fn refresh_revocations(&self) -> Result<()> {
        let horizon = self.settings.refresh_token_ttl.max(LOGIN_CACHE_TTL);
        let since = OffsetDateTime::now_utc() - horizon;
        let client = self.client().await?;
        let found = tenancy::revoked_since(&client, since).await?;
        if let Ok(mut revoked) = self.revoked.write() {
            *revoked = Revoked {
                keys: found.keys.into_iter().collect(),
                users: found.users.into_iter().collect(),
                resets: found.resets.into_iter().map(|r| (r.username, (r.at.into(), r.all_tokens))).collect(),
            };
        }
        Ok(())
    }

    /// Revokes `key_id` on this node at once (other nodes follow at their next refresh).
    pub fn revoke_key_locally(&self, key_id: &str) {
        if let Ok(mut revoked) = self.revoked.write() {
            revoked.keys.insert(key_id.to_owned());
        }
    }

    /// Forgets remembered Basic logins (after a password change or a user being disabled).
    pub fn forget_logins(&self) {
        self.logins.clear();
    }

    /// Whether credentials must no longer work: an API key that was revoked (or whose owner was
    /// disabled), or, for credentials without a key, a disabled user.
    /// Whether a token with `facts` is void: its key revoked, its user disabled, or minted
    /// before its user's credentials were reset (a password change voids password-derived
    /// tokens; deleting the user voids all).
    fn token_revoked(&self, facts: &aerugo_auth::token::TokenFacts) -> bool {
        self.is_revoked(facts.key_id.as_deref(), &facts.subject)
            || self.revoked.read().map_or(true, |r| {
                r.resets
                    .get(&facts.subject)
                    .is_some_and(|(at, all)| facts.issued_at < *at && (*all || facts.key_id.is_none()))
            })
    }

    fn is_revoked(&self, key_id: Option<&str>, username: &str) -> bool {
        self.revoked.read().map_or(true, |r| match key_id {
            Some(key) => r.keys.contains(key),
            None => r.users.contains(username),
        })
    }
}

fn decode_rights(value: bytes::Bytes) -> Option<Rights> {
    let mut d = Decoder::new(value);
    let bits = d.i64()?;
    let actions = Actions::from_bits(u8::try_from(bits & 0xff).ok()?);
    let org_id = d.i64()?;
    d.done().then_some(Rights {
        actions,
        org_id: (org_id >= 0).then_some(org_id),
        administer: bits & ADMINISTER_BIT != 0,
    })
}

/// The permission model applied to the facts: the actions, and whether the caller administers
/// the repository.
fn rights_from(facts: &AccessFacts, principal: Option<&Principal>, name: &RepoName) -> (Actions, bool) {
    let key = principal.and_then(|p| p.key.as_ref());
    let standing = principal.map(|p| {
        let key_org_admin =
            key.and_then(|k| k.org.as_ref()).is_some_and(|(id, _)| facts.org.is_some_and(|o| o.0 == *id));
        Standing {
            site_admin: p.site_admin,
            org_role: if key_org_admin {
                Some(OrgRole::Admin)
            } else {
                facts.role.as_deref().and_then(|r| r.parse().ok())
            },
            grants: facts.grants.iter().filter_map(|g| g.parse().ok()).collect(),
        }
    });
    let actions = match (&facts.repository, facts.org) {
        (Some((_, visibility)), _) => {
            let visibility = visibility.parse().unwrap_or(Visibility::Private);
            permission::repository_actions(visibility, standing.as_ref())
        }
        // A mirrored repository not fetched yet: pulled as it will be once fetched (pushes
        // into a mirror are refused by the core, with a message saying why).
        (None, Some(_)) if facts.mirrored.is_some() => {
            let visibility = facts.mirrored.as_deref().and_then(|v| v.parse().ok()).unwrap_or(Visibility::Private);
            permission::repository_actions(visibility, standing.as_ref())
        }
        (None, Some((_, auto_create))) => {
            let base = permission::repository_actions(Visibility::Private, standing.as_ref());
            if permission::may_create_repository(standing.as_ref(), auto_create) {
                base
            } else {
                base.intersection(Actions::PULL.with(Action::Delete))
            }
        }
        // No organization: only a site administrator's push may create one.
        (None, None) if standing.as_ref().is_some_and(|s| s.site_admin) => Actions::ALL,
        (None, None) => Actions::NONE,
    };
    let administer = facts.repository.is_some() && permission::may_administer(standing.as_ref(), key.is_some());
    match key {
        Some(k) => (actions.intersection(k.scopes.allowed(name.as_str())), administer),
        None => (actions, administer),
    }
}
