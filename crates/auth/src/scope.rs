//! Token scope strings of the Docker/OCI token flow: `repository:<name>:<actions>` and
//! `registry:catalog:*`, parsed strictly so malformed scopes are a clear 400, never a guess.

use std::fmt;
use std::str::FromStr;

use aerugo_oci::RepoName;

use crate::{Action, Actions};

/// A requested (or granted) access scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Actions on one repository.
    Repository {
        /// The repository.
        name: RepoName,
        /// The actions.
        actions: Actions,
    },
    /// Listing the catalog.
    Catalog,
}

/// Why a scope string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// Not `type:name:actions`.
    #[error("malformed scope {0:?}: expected repository:<name>:<actions> or registry:catalog:*")]
    Malformed(String),
    /// The repository name is invalid.
    #[error("invalid repository name in scope: {0}")]
    Name(#[from] aerugo_oci::ParseError),
    /// An action is not pull, push, delete or `*`.
    #[error(transparent)]
    Action(#[from] crate::action::UnknownAction),
}

/// Longest scope string considered (a name is at most 255 characters).
const MAX_SCOPE_LEN: usize = 512;

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || ScopeError::Malformed(s.chars().take(64).collect());
        if s.len() > MAX_SCOPE_LEN {
            return Err(malformed());
        }
        let (kind, rest) = s.split_once(':').ok_or_else(malformed)?;
        // Names contain no ':', actions follow the last one.
        let (name, actions) = rest.rsplit_once(':').ok_or_else(malformed)?;
        match kind {
            "registry" if name == "catalog" && actions == "*" => Ok(Scope::Catalog),
            "repository" => {
                let name: RepoName = name.parse()?;
                let actions = if actions == "*" {
                    Actions::ALL
                } else {
                    actions.split(',').filter(|a| !a.is_empty()).map(str::parse::<Action>).collect::<Result<_, _>>()?
                };
                Ok(Scope::Repository { name, actions })
            }
            _ => Err(malformed()),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Repository { name, actions } => write!(f, "repository:{name}:{actions}"),
            Scope::Catalog => f.write_str("registry:catalog:*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repository_and_catalog_scopes() {
        let s: Scope = "repository:org/team/app:pull,push".parse().expect("valid");
        assert_eq!(s.to_string(), "repository:org/team/app:pull,push");
        let all: Scope = "repository:a:*".parse().expect("valid");
        assert_eq!(all, Scope::Repository { name: "a".parse().expect("name"), actions: Actions::ALL });
        assert_eq!("registry:catalog:*".parse::<Scope>(), Ok(Scope::Catalog));
        let empty: Scope = "repository:a:".parse().expect("no actions is an empty request");
        assert!(matches!(empty, Scope::Repository { actions, .. } if actions.is_empty()));
    }

    #[test]
    fn rejects_malformed_scopes() {
        for bad in [
            "",
            "repository",
            "repository:a",
            "repository:A:pull",
            "repository:a:fly",
            "repository:../x:pull",
            "registry:catalog:pull",
            "user:alice:*",
            &format!("repository:{}:pull", "a".repeat(600)),
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad:?} accepted");
        }
    }
}
