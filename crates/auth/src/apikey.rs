//! API keys `ak_<key id>_<secret>`: the key id is public and indexes the row; only the SHA-256
//! of the high-entropy secret is stored and it is compared in constant time. Scopes are
//! repository globs × actions (`org/*` is one path segment, `org/**` any depth).

use std::fmt;

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{Action, Actions};

const PREFIX: &str = "ak_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// A freshly generated key: the full token is shown to its owner once.
pub struct NewKey {
    /// Public key id (16 hex characters).
    pub key_id: String,
    /// The full `ak_<id>_<secret>` value, never stored.
    pub token: String,
    /// SHA-256 of the secret, to store.
    pub secret_hash: Vec<u8>,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// A presented key, split into its id and secret.
pub struct PresentedKey {
    /// Public key id.
    pub key_id: String,
    secret: String,
}

impl fmt::Debug for PresentedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// The random source failed.
#[derive(Debug, thiserror::Error)]
#[error("no randomness for a new key: {0}")]
pub struct KeyGenError(String);

/// Generates a new key.
pub fn generate() -> Result<NewKey, KeyGenError> {
    let mut id = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::fill(&mut id).map_err(|e| KeyGenError(e.to_string()))?;
    getrandom::fill(&mut secret).map_err(|e| KeyGenError(e.to_string()))?;
    let (key_id, secret) = (hex::encode(id), hex::encode(secret));
    Ok(NewKey { token: format!("{PREFIX}{key_id}_{secret}"), secret_hash: hash_secret(&secret), key_id })
}

fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Splits a presented string into key id and secret, if it has the shape of an API key.
pub fn parse(presented: &str) -> Option<PresentedKey> {
    let rest = presented.strip_prefix(PREFIX)?;
    let (key_id, secret) = rest.split_once('_')?;
    let hex_of =
        |s: &str, bytes: usize| s.len() == bytes * 2 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (hex_of(key_id, ID_BYTES) && hex_of(secret, SECRET_BYTES))
        .then(|| PresentedKey { key_id: key_id.to_owned(), secret: secret.to_owned() })
}

impl PresentedKey {
    /// Whether the secret matches the stored hash (constant time).
    pub fn matches(&self, stored_hash: &[u8]) -> bool {
        hash_secret(&self.secret).ct_eq(stored_hash).into()
    }
}

/// One scope of a key: repositories matching a glob, and the actions allowed there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyScope {
    /// Glob over full repository names: `*` stays within a path segment, `**` crosses them.
    pub repositories: String,
    /// Allowed actions.
    pub actions: Vec<Action>,
}

/// A glob that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid repository glob {0:?}: {1}")]
pub struct GlobError(String, String);

/// A key's scopes, compiled for matching.
#[derive(Debug, Clone)]
pub struct CompiledScopes(Vec<(GlobMatcher, Actions)>);

impl CompiledScopes {
    /// Compiles `scopes`; an invalid glob is an error (reported when the key is created).
    pub fn new(scopes: &[KeyScope]) -> Result<Self, GlobError> {
        scopes
            .iter()
            .map(|s| {
                let glob = GlobBuilder::new(&s.repositories)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| GlobError(s.repositories.clone(), e.kind().to_string()))?;
                Ok((glob.compile_matcher(), s.actions.iter().copied().collect()))
            })
            .collect::<Result<_, _>>()
            .map(CompiledScopes)
    }

    /// The actions the key allows on `repository` (the union of every matching scope).
    pub fn allowed(&self, repository: &str) -> Actions {
        self.0.iter().filter(|(glob, _)| glob.is_match(repository)).fold(Actions::NONE, |acc, (_, a)| acc.union(*a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_match_only_their_secret() {
        let key = generate().expect("key");
        assert!(key.token.starts_with("ak_"));
        let presented = parse(&key.token).expect("parses");
        assert_eq!(presented.key_id, key.key_id);
        assert!(presented.matches(&key.secret_hash));
        let other = generate().expect("key");
        assert!(!presented.matches(&other.secret_hash));
        assert!(!format!("{key:?}").contains(&key.token[20..]), "Debug must not print the secret");
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        let key = generate().expect("key");
        for bad in [
            "",
            "ak_",
            "ak_x_y",
            &key.token.to_uppercase(),
            &key.token[..key.token.len() - 1],
            &key.token.replace("ak_", "pk_"),
        ] {
            assert!(parse(bad).is_none(), "{bad:?} parsed");
        }
    }

    #[test]
    fn scope_globs_respect_path_segments() {
        let scopes = CompiledScopes::new(&[
            KeyScope { repositories: "acme/*".into(), actions: vec![Action::Pull] },
            KeyScope { repositories: "acme/ci/**".into(), actions: vec![Action::Pull, Action::Push] },
        ])
        .expect("valid globs");
        assert_eq!(scopes.allowed("acme/app"), Actions::PULL);
        assert_eq!(scopes.allowed("acme/team/app"), Actions::NONE);
        assert_eq!(scopes.allowed("acme/ci/tools/builder"), Actions::PULL_PUSH);
        assert_eq!(scopes.allowed("other/app"), Actions::NONE);
        assert!(CompiledScopes::new(&[KeyScope { repositories: "a/[".into(), actions: vec![] }]).is_err());
    }

    #[test]
    fn scopes_serialize_as_the_api_shows_them() {
        let scope: KeyScope =
            serde_json::from_str(r#"{"repositories":"acme/**","actions":["pull","push"]}"#).expect("json");
        assert_eq!(scope.actions, vec![Action::Pull, Action::Push]);
        assert!(serde_json::from_str::<KeyScope>(r#"{"repositories":"a","actions":["fly"]}"#).is_err());
    }
}
