//! The actions of the token scope vocabulary (`pull`, `push`, `delete`) and small sets of them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One thing a caller may do to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Read manifests, blobs, tags and referrers.
    Pull,
    /// Upload blobs, push manifests and tags.
    Push,
    /// Delete manifests, tags and blobs.
    Delete,
}

impl Action {
    /// Every action, in canonical order.
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    /// The scope-string name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Action::Pull => 1,
            Action::Push => 2,
            Action::Delete => 4,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action name that is not `pull`, `push` or `delete`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action {0:?} (expected pull, push or delete)")]
pub struct UnknownAction(pub String);

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pull" => Ok(Action::Pull),
            "push" => Ok(Action::Push),
            "delete" => Ok(Action::Delete),
            other => Err(UnknownAction(other.chars().take(32).collect())),
        }
    }
}

impl Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// A set of actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Actions(u8);

impl Actions {
    /// No action.
    pub const NONE: Actions = Actions(0);
    /// Pull only.
    pub const PULL: Actions = Actions(1);
    /// Pull and push.
    pub const PULL_PUSH: Actions = Actions(3);
    /// Everything.
    pub const ALL: Actions = Actions(7);

    /// The set as a bit mask (pull 1, push 2, delete 4), for compact storage.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// The set a [`Actions::bits`] mask stands for; unknown bits are dropped.
    pub fn from_bits(bits: u8) -> Actions {
        Actions(bits & Actions::ALL.0)
    }

    /// Whether `action` is in the set.
    pub fn contains(self, action: Action) -> bool {
        self.0 & action.bit() != 0
    }

    /// The set with `action` added.
    pub fn with(self, action: Action) -> Actions {
        Actions(self.0 | action.bit())
    }

    /// Actions in either set.
    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    /// Actions in both sets.
    pub fn intersection(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    /// True when no action is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The actions, in canonical order.
    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

impl FromIterator<Action> for Actions {
    fn from_iter<I: IntoIterator<Item = Action>>(iter: I) -> Self {
        iter.into_iter().fold(Actions::NONE, Actions::with)
    }
}

impl fmt::Display for Actions {
    /// Comma-separated, as in a scope string (`pull,push`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Action::as_str).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let pp: Actions = [Action::Pull, Action::Push].into_iter().collect();
        assert_eq!(pp, Actions::PULL_PUSH);
        assert_eq!(pp.intersection(Actions::PULL), Actions::PULL);
        assert_eq!(pp.union(Actions::NONE.with(Action::Delete)), Actions::ALL);
        assert_eq!(Actions::ALL.to_string(), "pull,push,delete");
        assert!(Actions::NONE.is_empty());
        assert!("PULL".parse::<Action>().is_err());
    }
}
