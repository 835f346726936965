//! Access tokens: biscuit tokens signed with the registry's Ed25519 key. The authority block
//! names the subject, the granted (repository, action) pairs and the expiry; any node verifies
//! offline with the public key(s), and any holder can append a block that narrows the token
//! (one repository, fewer actions, an earlier expiry). The authorizer trusts only the authority
//! block and its own facts, so an appended block can restrict but never add rights.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use aerugo_oci::RepoName;
use biscuit_auth::builder::Algorithm;
use biscuit_auth::macros::{authorizer, biscuit, block, fact};
use biscuit_auth::{Biscuit, BlockBuilder, KeyPair, PrivateKey, PublicKey, UnverifiedBiscuit};
use sha2::{Digest, Sha256};

use crate::{Action, Actions, Scope};

/// The resource name under which catalog access is granted.
const CATALOG: &str = "registry:catalog";

/// What a token is for. Each kind is accepted only where it belongs: an access token cannot
/// open a management session, and a refresh or session token grants no registry access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Registry access for the granted scopes (`/v2/`).
    Access,
    /// Exchanged at the token endpoint for new access tokens (`grant_type=refresh_token`).
    Refresh,
    /// A management API session (`/api/v1/`).
    Session,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
            TokenKind::Session => "session",
        }
    }
}

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Who the token was issued to (username, or empty for anonymous).
    pub subject: String,
    /// What the token is for.
    pub kind: TokenKind,
    /// The API key the holder authenticated with, so revoking the key revokes the token.
    pub key_id: Option<String>,
    /// The holder is a site administrator (may create organizations by pushing).
    pub site_admin: bool,
    /// Granted scopes.
    pub access: Vec<Scope>,
    /// When the token stops being valid.
    pub expires_at: SystemTime,
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need<'a> {
    /// An action on a repository.
    Repository(&'a RepoName, Action),
    /// Listing the catalog.
    Catalog,
}

/// Token failures.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Not a token, wrong signature, unknown key: 401.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Valid token that does not grant the need (or has expired): 401/403 by context.
    #[error("token does not grant this request")]
    Denied,
    /// A signing key could not be loaded or used.
    #[error("signing key: {0}")]
    Key(String),
}

fn invalid(e: impl fmt::Display) -> TokenError {
    TokenError::Invalid(e.to_string())
}

/// A stable id for a public key, so tokens name the key that signed them (rotation).
fn key_id(public: &PublicKey) -> u32 {
    let digest = Sha256::digest(public.to_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// The registry's token keys: the one that signs, and the ones still accepted.
pub struct TokenKeys {
    signing: KeyPair,
    signing_id: u32,
    accepted: Vec<(u32, PublicKey)>,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeys").field("signing_id", &self.signing_id).finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Keys from the current private key and any previous ones still accepted during rotation
    /// (each a 32-byte Ed25519 private key, hex-encoded, as in a key file or Secret).
    pub fn from_hex(current: &str, previous: &[&str]) -> Result<Self, TokenError> {
        let load = |hex: &str| {
            PrivateKey::from_bytes_hex(hex.trim(), Algorithm::Ed25519)
                .map(|k| KeyPair::from(&k))
                .map_err(|e| TokenError::Key(e.to_string()))
        };
        let signing = load(current)?;
        let mut accepted = vec![(key_id(&signing.public()), signing.public())];
        for p in previous {
            let pair = load(p)?;
            accepted.push((key_id(&pair.public()), pair.public()));
        }
        Ok(TokenKeys { signing_id: key_id(&signing.public()), signing, accepted })
    }

    /// A fresh random key (development and tests); `private_hex` tells how to keep it.
    pub fn generate() -> Self {
        let signing = KeyPair::new();
        let id = key_id(&signing.public());
        TokenKeys { accepted: vec![(id, signing.public())], signing_id: id, signing }
    }

    /// The signing private key, hex-encoded, for writing a key file.
    pub fn private_hex(&self) -> String {
        self.signing.private().to_bytes_hex()
    }

    /// The signing public key, hex-encoded.
    pub fn public_hex(&self) -> String {
        self.signing.public().to_bytes_hex()
    }

    /// Issues a token for `claims`.
    pub fn mint(&self, claims: &Claims) -> Result<String, TokenError> {
        let mut builder = biscuit!(
            r#"subject({subject}); kind({kind}); expires({expires}); check if time($t), $t <= {expires};"#,
            subject = claims.subject.as_str(),
            kind = claims.kind.as_str(),
            expires = claims.expires_at,
        );
        if claims.site_admin {
            builder = builder.fact(fact!("site_admin(true)")).map_err(invalid)?;
        }
        // When it was minted, to the millisecond: a credential reset voids what came before.
        let issued_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let issued_ms = i64::try_from(issued_ms).map_err(|e| TokenError::Invalid(e.to_string()))?;
        builder = builder.fact(fact!("issued_ms({issued_ms})", issued_ms = issued_ms)).map_err(invalid)?;
        if let Some(key_id) = &claims.key_id {
            builder = builder.fact(fact!(r#"key({key_id})"#, key_id = key_id.as_str())).map_err(invalid)?;
        }
        for scope in &claims.access {
            let (resource, actions) = match scope {
                Scope::Repository { name, actions } => (name.as_str(), *actions),
                Scope::Catalog => (CATALOG, Actions::NONE),
            };
            if matches!(scope, Scope::Catalog) {
                builder = builder.fact(fact!(r#"right({resource}, "*")"#, resource = resource)).map_err(invalid)?;
            }
            for action in actions.iter() {
                builder = builder
                    .fact(fact!(r#"right({resource}, {action})"#, resource = resource, action = action.as_str()))
                    .map_err(invalid)?;
            }
        }
        builder.root_key_id(self.signing_id).build(&self.signing).and_then(|t| t.to_base64()).map_err(invalid)
    }

    /// Checks a token's signatures against the accepted keys.
    pub fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let provider = |id: Option<u32>| {
            let id = id.ok_or(biscuit_auth::error::Format::UnknownPublicKey)?;
            self.accepted
                .iter()
                .find(|(known, _)| *known == id)
                .map(|(_, key)| *key)
                .ok_or(biscuit_auth::error::Format::UnknownPublicKey)
        };
        // Only the base64url alphabet: one token has one spelling (the decoder would skip
        // whitespace).
        if !token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=')) {
            return Err(TokenError::Invalid("a token is base64url".into()));
        }
        Biscuit::from_base64(token, provider).map(VerifiedToken).map_err(invalid)
    }
}

/// Datalog limits for every evaluation of a token. The facts and iteration bounds are
/// biscuit's defaults (our tokens hold a handful of facts; an attenuated one, a few more). The
/// time bound is not: biscuit's 1 ms made authorization fail at random on a loaded node (the
/// token fuzzer found it with the other core busy), so it is 50 ms, far above what our tokens
/// need and still a bound on a hostile one.
pub const LIMITS: biscuit_auth::AuthorizerLimits = biscuit_auth::AuthorizerLimits {
    max_facts: 1000,
    max_iterations: 100,
    max_time: std::time::Duration::from_millis(50),
};

/// A token whose signatures are valid; what it grants is asked with [`VerifiedToken::authorize`].
pub struct VerifiedToken(Biscuit);

impl VerifiedToken {
    /// Allows `need` at time `now`, honouring every check of every block (expiry, attenuation).
    /// Runs under [`LIMITS`].
    pub fn authorize(&self, need: &Need<'_>, now: SystemTime) -> Result<(), TokenError> {
        let (resource, operation) = match need {
            Need::Repository(name, action) => (name.as_str(), action.as_str()),
            Need::Catalog => (CATALOG, "*"),
        };
        let mut authorizer = authorizer!(
            r#"time({now}); resource({resource}); operation({operation});
               allow if right({resource}, {operation});"#,
            now = now,
            resource = resource,
            operation = operation,
        )
        .set_limits(LIMITS)
        .build(&self.0)
        .map_err(invalid)?;
        authorizer.authorize().map(|_| ()).map_err(|_| TokenError::Denied)
    }

    /// Allows use as a token of `kind` at time `now` (expiry and every appended check hold).
    pub fn authorize_kind(&self, kind: TokenKind, now: SystemTime) -> Result<(), TokenError> {
        let mut authorizer =
            authorizer!(r#"time({now}); operation({kind}); allow if kind({kind});"#, now = now, kind = kind.as_str(),)
                .set_limits(LIMITS)
                .build(&self.0)
                .map_err(invalid)?;
        authorizer.authorize().map(|_| ()).map_err(|_| TokenError::Denied)
    }

    /// What the authority block says of the holder (never what an appended block claims).
    pub fn facts(&self) -> Result<TokenFacts, TokenError> {
        let mut authorizer = authorizer!("allow if true;").set_limits(LIMITS).build(&self.0).map_err(invalid)?;
        let subject: Vec<(String,)> = authorizer.query("data($s) <- subject($s)").map_err(invalid)?;
        let kind: Vec<(String,)> = authorizer.query("data($k) <- kind($k)").map_err(invalid)?;
        let key: Vec<(String,)> = authorizer.query("data($k) <- key($k)").map_err(invalid)?;
        let expires: Vec<(SystemTime,)> = authorizer.query("data($e) <- expires($e)").map_err(invalid)?;
        let admin: Vec<(bool,)> = authorizer.query("data($a) <- site_admin($a)").map_err(invalid)?;
        let issued: Vec<(i64,)> = authorizer.query("data($i) <- issued_ms($i)").map_err(invalid)?;
        let kind = match kind.first().map(|(k,)| k.as_str()) {
            Some("access") => TokenKind::Access,
            Some("refresh") => TokenKind::Refresh,
            Some("session") => TokenKind::Session,
            _ => return Err(TokenError::Invalid("token names no kind".into())),
        };
        Ok(TokenFacts {
            subject: subject.into_iter().next().map(|(s,)| s).unwrap_or_default(),
            kind,
            key_id: key.into_iter().next().map(|(k,)| k),
            site_admin: admin.first().is_some_and(|(a,)| *a),
            issued_at: issued
                .first()
                .and_then(|(ms,)| u64::try_from(*ms).ok())
                .map_or(UNIX_EPOCH, |ms| UNIX_EPOCH + std::time::Duration::from_millis(ms)),
            expires_at: expires
                .into_iter()
                .next()
                .map(|(e,)| e)
                .ok_or_else(|| TokenError::Invalid("token names no expiry".into()))?,
        })
    }

    /// Blocks appended after the registry's authority block (attenuations).
    pub fn appended_blocks(&self) -> usize {
        self.0.block_count().saturating_sub(1)
    }

    /// Whether the authority block names no subject (an anonymous caller's token). Read from
    /// the authority block's facts directly, without running an authorizer over appended
    /// blocks.
    pub fn is_anonymous(&self) -> bool {
        self.0.print_block_source(0).map_or(true, |source| source.contains("subject(\"\")"))
    }

    /// Revocation ids, one per block, hex-encoded (checked against revoked keys' tokens).
    pub fn revocation_ids(&self) -> Vec<String> {
        self.0.revocation_identifiers().iter().map(hex::encode).collect()
    }
}

/// The authority block's statements about a token's holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFacts {
    /// Username (empty: anonymous).
    pub subject: String,
    /// What the token is for.
    pub kind: TokenKind,
    /// The API key it was issued against.
    pub key_id: Option<String>,
    /// The holder is a site administrator.
    pub site_admin: bool,
    /// The issuer's expiry (an appended block may only shorten it).
    pub expires_at: SystemTime,
    /// When the registry minted it (the epoch for tokens minted before this was recorded).
    pub issued_at: SystemTime,
}

/// How a holder narrows a token offline.
#[derive(Debug, Clone, Default)]
pub struct Restriction {
    /// Only this repository.
    pub repository: Option<RepoName>,
    /// Only these actions.
    pub actions: Option<Actions>,
    /// Not after this time.
    pub expires_at: Option<SystemTime>,
}

/// Appends a block with `restriction`'s checks. Needs no key: the result is only as strong as
/// the token it came from, and the registry enforces both.
pub fn attenuate(token: &str, restriction: &Restriction) -> Result<String, TokenError> {
    let parsed = UnverifiedBiscuit::from_base64(token.trim()).map_err(invalid)?;
    let mut block = BlockBuilder::new();
    if let Some(repository) = &restriction.repository {
        block = block.merge(block!(r#"check if resource($r), $r == {repository};"#, repository = repository.as_str()));
    }
    if let Some(actions) = restriction.actions {
        let alternatives: Vec<String> = actions.iter().map(|a| format!("operation(\"{}\")", a.as_str())).collect();
        let code = if alternatives.is_empty() {
            "check if false".to_owned()
        } else {
            format!("check if {}", alternatives.join(" or "))
        };
        block = block.code(code).map_err(invalid)?;
    }
    if let Some(expires) = restriction.expires_at {
        block = block.merge(block!(r#"check if time($t), $t <= {expires};"#, expires = expires));
    }
    parsed.append(block).and_then(|t| t.to_base64()).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn name(s: &str) -> RepoName {
        s.parse().expect("name")
    }

    fn claims(expires_in: Duration) -> Claims {
        Claims {
            subject: "alice".into(),
            kind: TokenKind::Access,
            key_id: Some("0011223344556677".into()),
            site_admin: false,
            access: vec![
                Scope::Repository { name: name("acme/app"), actions: Actions::PULL_PUSH },
                Scope::Repository { name: name("acme/lib"), actions: Actions::PULL },
                Scope::Catalog,
            ],
            expires_at: SystemTime::now() + expires_in,
        }
    }

    #[test]
    fn minted_tokens_grant_exactly_their_claims() {
        let keys = TokenKeys::generate();
        let token = keys.mint(&claims(Duration::from_secs(300))).expect("mint");
        let verified = keys.verify(&token).expect("verify");
        let now = SystemTime::now();
        let (app, lib, other) = (name("acme/app"), name("acme/lib"), name("other/app"));
        assert!(verified.authorize(&Need::Repository(&app, Action::Push), now).is_ok());
        assert!(verified.authorize(&Need::Repository(&lib, Action::Pull), now).is_ok());
        assert!(verified.authorize(&Need::Catalog, now).is_ok());
        assert!(verified.authorize(&Need::Repository(&lib, Action::Push), now).is_err());
        assert!(verified.authorize(&Need::Repository(&app, Action::Delete), now).is_err());
        assert!(verified.authorize(&Need::Repository(&other, Action::Pull), now).is_err());
        let facts = verified.facts().expect("facts");
        assert_eq!((facts.subject.as_str(), facts.kind), ("alice", TokenKind::Access));
        assert_eq!(facts.key_id.as_deref(), Some("0011223344556677"));
        assert!(!facts.site_admin);
        assert!(verified.authorize_kind(TokenKind::Session, now).is_err(), "an access token is no session");
        assert_eq!(verified.revocation_ids().len(), 1);
        let age = now.duration_since(facts.issued_at).expect("minted in the past");
        assert!(age < Duration::from_secs(5), "issued_at is the minting time ({age:?})");
        assert!(!verified.is_anonymous() && verified.appended_blocks() == 0);
    }

    #[test]
    fn anonymity_and_appended_blocks_are_read_without_running_them() {
        let keys = TokenKeys::generate();
        let anonymous = Claims { subject: String::new(), key_id: None, ..claims(Duration::from_secs(60)) };
        let token = keys.mint(&anonymous).expect("mint");
        assert!(keys.verify(&token).expect("verify").is_anonymous());
        let narrowed = attenuate(&token, &Restriction { actions: Some(Actions::PULL), ..Restriction::default() })
            .expect("attenuate");
        let verified = keys.verify(&narrowed).expect("verify");
        assert_eq!(verified.appended_blocks(), 1);
        assert!(verified.is_anonymous(), "an appended block cannot change the authority block");
        // A holder's block claiming a subject does not make an anonymous token anyone's.
        let claimed = biscuit_auth::UnverifiedBiscuit::from_base64(&token)
            .and_then(|t| t.append(biscuit_auth::macros::block!(r#"subject("alice");"#)))
            .and_then(|t| t.to_base64())
            .expect("append");
        assert!(keys.verify(&claimed).expect("verify").is_anonymous());
        assert_eq!(keys.verify(&claimed).expect("verify").facts().expect("facts").subject, "");
    }

    #[test]
    fn expired_tokens_grant_nothing() {
        let keys = TokenKeys::generate();
        let token = keys.mint(&claims(Duration::from_secs(60))).expect("mint");
        let verified = keys.verify(&token).expect("signature still valid");
        let later = SystemTime::now() + Duration::from_secs(120);
        assert!(verified.authorize(&Need::Repository(&name("acme/app"), Action::Pull), later).is_err());
    }

    #[test]
    fn tampered_and_foreign_tokens_are_invalid() {
        let keys = TokenKeys::generate();
        let token = keys.mint(&claims(Duration::from_secs(60))).expect("mint");
        let mut bytes = token.clone().into_bytes();
        let middle = bytes.len() / 2;
        bytes[middle] = if bytes[middle] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).expect("ascii");
        assert!(matches!(keys.verify(&tampered), Err(TokenError::Invalid(_))));
        assert!(matches!(TokenKeys::generate().verify(&token), Err(TokenError::Invalid(_))));
        assert!(matches!(keys.verify("not a token"), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn previous_keys_are_accepted_during_rotation() {
        let old = TokenKeys::generate();
        let token = old.mint(&claims(Duration::from_secs(60))).expect("mint");
        let rotated = TokenKeys::from_hex(&TokenKeys::generate().private_hex(), &[&old.private_hex()]).expect("keys");
        let verified = rotated.verify(&token).expect("old token still valid");
        assert!(verified.authorize(&Need::Repository(&name("acme/app"), Action::Pull), SystemTime::now()).is_ok());
        let only_new = TokenKeys::from_hex(&rotated.private_hex(), &[]).expect("keys");
        assert!(only_new.verify(&token).is_err());
    }

    #[test]
    fn attenuation_narrows_and_cannot_widen() {
        let keys = TokenKeys::generate();
        let token = keys.mint(&claims(Duration::from_secs(300))).expect("mint");
        let now = SystemTime::now();
        let (app, lib) = (name("acme/app"), name("acme/lib"));
        let narrowed = attenuate(
            &token,
            &Restriction { repository: Some(app.clone()), actions: Some(Actions::PULL), expires_at: None },
        )
        .expect("attenuate");
        let verified = keys.verify(&narrowed).expect("verify");
        assert!(verified.authorize(&Need::Repository(&app, Action::Pull), now).is_ok());
        assert!(verified.authorize(&Need::Repository(&app, Action::Push), now).is_err());
        assert!(verified.authorize(&Need::Repository(&lib, Action::Pull), now).is_err());
        assert!(verified.authorize(&Need::Catalog, now).is_err());

        let sooner = attenuate(
            &token,
            &Restriction { expires_at: Some(now + Duration::from_secs(10)), ..Restriction::default() },
        )
        .expect("attenuate");
        let verified = keys.verify(&sooner).expect("verify");
        assert!(verified.authorize(&Need::Repository(&app, Action::Pull), now).is_ok());
        assert!(verified.authorize(&Need::Repository(&app, Action::Pull), now + Duration::from_secs(20)).is_err());

        // A holder appending rights of its own gains nothing: only the authority block is trusted.
        let parsed = UnverifiedBiscuit::from_base64(&token).expect("parse");
        let forged = parsed
            .append(block!(r#"right("other/secret", "pull"); subject("root"); kind("session"); site_admin(true);"#))
            .and_then(|t| t.to_base64())
            .expect("append");
        let verified = keys.verify(&forged).expect("signatures are valid");
        assert!(verified.authorize(&Need::Repository(&name("other/secret"), Action::Pull), now).is_err());
        let facts = verified.facts().expect("facts");
        assert_eq!((facts.subject.as_str(), facts.kind, facts.site_admin), ("alice", TokenKind::Access, false));
        assert!(verified.authorize_kind(TokenKind::Session, now).is_err());
    }

    #[test]
    fn an_empty_grant_is_still_a_token() {
        let keys = TokenKeys::generate();
        let empty = Claims {
            subject: String::new(),
            kind: TokenKind::Access,
            key_id: None,
            site_admin: false,
            access: vec![],
            expires_at: SystemTime::now() + Duration::from_secs(60),
        };
        let verified = keys.verify(&keys.mint(&empty).expect("mint")).expect("verify");
        assert!(verified.authorize(&Need::Repository(&name("a"), Action::Pull), SystemTime::now()).is_err());
    }
}
