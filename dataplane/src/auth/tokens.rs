//! Bearer tokens on this node: verifying them (once per token, then from a cache keyed by the
//! token's hash), remembering each token's decisions for a short while, and issuing tokens
//! for the scopes a caller asks for.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use aerugo_auth::token::{Claims, Need, TokenFacts, TokenKind, VerifiedToken};
use aerugo_auth::{Action, Scope};
use sha2::{Digest, Sha256};

use super::{Auth, Principal};
use crate::error::Result;

/// Longest a decision is remembered: short, so a token's appended time checks are honoured
/// even when they are not simple expiries.
const DECISION_TTL: Duration = Duration::from_secs(60);

/// Resources whose decisions one token remembers. A token is checked against whatever names a
/// caller sends: past this, expired decisions are dropped and, if it is still full, new ones are
/// taken each time instead of remembered.
pub const MAX_DECISIONS_PER_TOKEN: usize = 256;

/// Blocks a holder may append to a token (attenuation). Each is evaluated on every
/// authorization; the registry's own restrictions take one.
pub const MAX_APPENDED_BLOCKS: usize = 4;

/// Decisions taken for one token, by resource: per operation (pull, push, delete, catalog), whether
/// it is allowed and until when that answer holds. Keyed by the resource alone so a lookup borrows
/// the name instead of allocating.
type Decisions = HashMap<String, [Option<(bool, SystemTime)>; 4]>;

/// A verified token, what it says of its holder, and decisions already taken for it.
pub struct CachedToken {
    verified: VerifiedToken,
    /// The authority block's facts.
    pub facts: TokenFacts,
    decisions: RwLock<Decisions>,
}

/// Why a presented token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Not a token of this registry, tampered, of another kind, or expired.
    Invalid,
    /// Its API key was revoked or its user disabled.
    Revoked,
}

impl CachedToken {
    /// Whether the token allows `need` now. Evaluated by the token's own checks, at now and at
    /// the end of the remembered period; remembered only when both agree.
    pub fn allows(&self, need: &Need<'_>) -> bool {
        let (resource, slot) = match need {
            Need::Repository(name, Action::Pull) => (name.as_str(), 0),
            Need::Repository(name, Action::Push) => (name.as_str(), 1),
            Need::Repository(name, Action::Delete) => (name.as_str(), 2),
            Need::Catalog => ("registry:catalog", 3),
        };
        let now = SystemTime::now();
        if let Ok(decisions) = self.decisions.read()
            && let Some(Some((allowed, until))) = decisions.get(resource).map(|d| d[slot])
            && until > now
        {
            return allowed;
        }
        let allowed = self.verified.authorize(need, now).is_ok();
        let until = (now + DECISION_TTL).min(self.facts.expires_at);
        let later = until.checked_sub(Duration::from_millis(1)).unwrap_or(now);
        if self.verified.authorize(need, later).is_ok() == allowed
            && let Ok(mut decisions) = self.decisions.write()
        {
            if decisions.len() >= MAX_DECISIONS_PER_TOKEN && !decisions.contains_key(resource) {
                decisions.retain(|_, d| d.iter().flatten().any(|(_, until)| *until > now));
            }
            if decisions.len() < MAX_DECISIONS_PER_TOKEN || decisions.contains_key(resource) {
                decisions.entry(resource.to_owned()).or_default()[slot] = Some((allowed, until));
            }
        }
        allowed
    }

    /// Resources whose decisions are remembered (bounded by [`MAX_DECISIONS_PER_TOKEN`]).
    pub fn remembered(&self) -> usize {
        self.decisions.read().map_or(0, |d| d.len())
    }
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A freshly issued access token.
#[derive(Debug)]
pub struct Issued {
    /// The token.
    pub token: String,
    /// Seconds it is valid for.
    pub expires_in: u64,
    /// When it was issued.
    pub issued_at: SystemTime,
}

impl Auth {
    /// Verifies a presented token of `kind`: signature, kind, expiry and revocation. Verified
    /// tokens are cached by hash until they expire.
    pub fn verify_token(&self, token: &str, kind: TokenKind) -> Result<Arc<CachedToken>, TokenRefusal> {
        let hash = token_hash(token);
        let now = SystemTime::now();
        let cached = match self.tokens.get(&hash) {
            Some(cached) => cached,
            None => {
                let verified = self.keys.verify(token).map_err(|_| TokenRefusal::Invalid)?;
                // Appended blocks run on every authorization: an anonymous token (free to get)
                // carries none, and no token many. Refused before any Datalog runs.
                let appended = verified.appended_blocks();
                if appended > MAX_APPENDED_BLOCKS || (appended > 0 && verified.is_anonymous()) {
                    return Err(TokenRefusal::Invalid);
                }
                let facts = verified.facts().map_err(|_| TokenRefusal::Invalid)?;
                let cached = Arc::new(CachedToken { verified, facts, decisions: RwLock::new(HashMap::new()) });
                if cached.facts.expires_at > now {
                    self.tokens.insert(hash, cached.clone());
                }
                cached
            }
        };
        if cached.facts.expires_at <= now {
            self.tokens.remove(&hash);
            return Err(TokenRefusal::Invalid);
        }
        if cached.facts.kind != kind
            || (kind != TokenKind::Access && cached.verified.authorize_kind(kind, now).is_err())
        {
            return Err(TokenRefusal::Invalid);
        }
        if self.token_revoked(&cached.facts) {
            return Err(TokenRefusal::Revoked);
        }
        Ok(cached)
    }

    /// The subset of `requested` that `principal` (`None`: anonymous) holds. Scopes on the same
    /// repository are merged; catalog access is granted to everyone (the listing is filtered).
    pub async fn grant(&self, principal: Option<&Principal>, requested: &[Scope]) -> Result<Vec<Scope>> {
        let mut granted: Vec<Scope> = Vec::new();
        if requested.is_empty() {
            return Ok(granted);
        }
        let client = self.client().await?;
        for scope in requested {
            match scope {
                Scope::Catalog => {
                    if !granted.contains(&Scope::Catalog) {
                        granted.push(Scope::Catalog);
                    }
                }
                Scope::Repository { name, actions } => {
                    let held = self.rights(&client, principal, name).await?.actions.intersection(*actions);
                    if held.is_empty() {
                        continue;
                    }
                    let existing = granted.iter_mut().find_map(|g| match g {
                        Scope::Repository { name: n, actions } if n == name => Some(actions),
                        _ => None,
                    });
                    match existing {
                        Some(actions) => *actions = actions.union(held),
                        None => granted.push(Scope::Repository { name: name.clone(), actions: held }),
                    }
                }
            }
        }
        Ok(granted)
    }

    /// Mints a token of `kind` for `principal` with `access`, valid for `ttl`.
    pub fn mint(
        &self,
        principal: Option<&Principal>,
        kind: TokenKind,
        access: Vec<Scope>,
        ttl: Duration,
    ) -> Result<Issued> {
        let issued_at = SystemTime::now();
        let claims = Claims {
            subject: principal.map(|p| p.name.clone()).unwrap_or_default(),
            kind,
            key_id: principal.and_then(|p| p.key.as_ref()).map(|k| k.key_id.clone()),
            site_admin: principal.is_some_and(|p| p.site_admin),
            access,
            expires_at: issued_at + ttl,
        };
        let token =
            self.keys.mint(&claims).map_err(|e| crate::error::RegistryError::Internal(format!("minting: {e}")))?;
        Ok(Issued { token, expires_in: ttl.as_secs(), issued_at })
    }
}
