//! The permission model: the actions a caller holds on a repository, from its organization
//! role, repository grants, site-admin flag and the repository's visibility; whether it may
//! administer the repository; and whether a push may create a repository. API keys then narrow
//! this with their scopes.
//!
//! Rights are ordered, each including the ones before it: Pull ⊂ Push ⊂ Delete ⊂ Admin.
//! Pull, Push and Delete are the token actions (`pull`, `push`, `delete`). Admin — changing the
//! repository's settings (visibility) and deleting the repository itself — is a right of its
//! own, never implied by holding every action: it comes from the Owner or Admin role, an Admin
//! grant, or being a site administrator, and never from an API key.

use std::str::FromStr;

use crate::Actions;
use crate::apikey::CompiledScopes;

/// A member's role in an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrgRole {
    /// Everything, including membership and deletion.
    Owner,
    /// Everything on the organization's repositories.
    Admin,
    /// Pull and push.
    Member,
    /// Pull only.
    Viewer,
}

/// Access a repository grant gives; each level includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GrantAccess {
    /// Pull.
    Pull,
    /// Pull and push.
    Push,
    /// Pull, push and delete (manifests, tags, blobs).
    Delete,
    /// Pull, push, delete and the repository's administration.
    Admin,
}

/// Who may pull a repository without a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Only members and grantees.
    Private,
    /// Anyone may pull, anonymous callers included; pushing still needs rights.
    Public,
}

/// A stored value that is not one of the known names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {0} {1:?}")]
pub struct UnknownName(&'static str, String);

impl FromStr for OrgRole {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "owner" => Ok(OrgRole::Owner),
            "admin" => Ok(OrgRole::Admin),
            "member" => Ok(OrgRole::Member),
            "viewer" => Ok(OrgRole::Viewer),
            other => Err(UnknownName("role", other.to_owned())),
        }
    }
}

impl FromStr for GrantAccess {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pull" => Ok(GrantAccess::Pull),
            "push" => Ok(GrantAccess::Push),
            "delete" => Ok(GrantAccess::Delete),
            "admin" => Ok(GrantAccess::Admin),
            other => Err(UnknownName("grant access", other.to_owned())),
        }
    }
}

impl FromStr for Visibility {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "private" => Ok(Visibility::Private),
            "public" => Ok(Visibility::Public),
            other => Err(UnknownName("visibility", other.to_owned())),
        }
    }
}

/// An authenticated caller's standing towards one repository.
#[derive(Debug, Clone, Default)]
pub struct Standing {
    /// Site administrators may do anything anywhere.
    pub site_admin: bool,
    /// The caller's role in the repository's organization, if a member.
    pub org_role: Option<OrgRole>,
    /// Grants on the repository naming the caller (user or API key).
    pub grants: Vec<GrantAccess>,
}

fn role_actions(role: OrgRole) -> Actions {
    match role {
        OrgRole::Owner | OrgRole::Admin => Actions::ALL,
        OrgRole::Member => Actions::PULL_PUSH,
        OrgRole::Viewer => Actions::PULL,
    }
}

fn grant_actions(grant: GrantAccess) -> Actions {
    match grant {
        GrantAccess::Pull => Actions::PULL,
        GrantAccess::Push => Actions::PULL_PUSH,
        GrantAccess::Delete | GrantAccess::Admin => Actions::ALL,
    }
}

/// Actions `caller` (`None`: anonymous) holds on an existing repository.
pub fn repository_actions(visibility: Visibility, caller: Option<&Standing>) -> Actions {
    let public = if visibility == Visibility::Public { Actions::PULL } else { Actions::NONE };
    let Some(standing) = caller else { return public };
    if standing.site_admin {
        return Actions::ALL;
    }
    let from_role = standing.org_role.map_or(Actions::NONE, role_actions);
    standing.grants.iter().fold(public.union(from_role), |acc, g| acc.union(grant_actions(*g)))
}

/// Whether `caller` may administer an existing repository: change its settings or delete it.
/// Only people do: the caller of an API key never does (`via_key`), whatever its scopes.
pub fn may_administer(caller: Option<&Standing>, via_key: bool) -> bool {
    !via_key
        && caller.is_some_and(|s| {
            s.site_admin
                || s.org_role.is_some_and(|r| matches!(r, OrgRole::Owner | OrgRole::Admin))
                || s.grants.contains(&GrantAccess::Admin)
        })
}

/// Whether a push by `caller` may create a missing repository in an organization that does
/// (or does not) auto-create repositories.
pub fn may_create_repository(caller: Option<&Standing>, auto_create: bool) -> bool {
    caller.is_some_and(|s| {
        s.site_admin
            || (auto_create
                && s.org_role.is_some_and(|r| matches!(r, OrgRole::Owner | OrgRole::Admin | OrgRole::Member)))
    })
}

/// Narrows `actions` on `repository` to what an API key's scopes allow (no key: unchanged).
pub fn limit_to_key(actions: Actions, key_scopes: Option<&CompiledScopes>, repository: &str) -> Actions {
    key_scopes.map_or(actions, |scopes| actions.intersection(scopes.allowed(repository)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apikey::KeyScope;
    use crate::{Action, Actions};

    fn member(role: OrgRole) -> Standing {
        Standing { org_role: Some(role), ..Standing::default() }
    }

    #[test]
    fn roles() {
        assert_eq!(repository_actions(Visibility::Private, Some(&member(OrgRole::Owner))), Actions::ALL);
        assert_eq!(repository_actions(Visibility::Private, Some(&member(OrgRole::Admin))), Actions::ALL);
        assert_eq!(repository_actions(Visibility::Private, Some(&member(OrgRole::Member))), Actions::PULL_PUSH);
        assert_eq!(repository_actions(Visibility::Private, Some(&member(OrgRole::Viewer))), Actions::PULL);
    }

    #[test]
    fn strangers_and_anonymous() {
        assert_eq!(repository_actions(Visibility::Private, None), Actions::NONE);
        assert_eq!(repository_actions(Visibility::Private, Some(&Standing::default())), Actions::NONE);
        // Public means anonymous pull, never anonymous push.
        assert_eq!(repository_actions(Visibility::Public, None), Actions::PULL);
        assert_eq!(repository_actions(Visibility::Public, Some(&Standing::default())), Actions::PULL);
    }

    #[test]
    fn grants_add_to_roles_and_site_admin_has_all() {
        let grantee = Standing { grants: vec![GrantAccess::Push], ..Standing::default() };
        assert_eq!(repository_actions(Visibility::Private, Some(&grantee)), Actions::PULL_PUSH);
        let deleter =
            Standing { org_role: Some(OrgRole::Viewer), grants: vec![GrantAccess::Delete], ..Standing::default() };
        assert_eq!(repository_actions(Visibility::Private, Some(&deleter)), Actions::ALL, "Delete includes Push");
        let admin = Standing { site_admin: true, ..Standing::default() };
        assert_eq!(repository_actions(Visibility::Private, Some(&admin)), Actions::ALL);
    }

    /// The whole table: every role and grant level, what it may do, and whether it administers.
    #[test]
    fn rights_are_ordered_and_administration_is_its_own() {
        use Action::{Delete, Pull, Push};
        let none = Actions::NONE;
        let pull = Actions::PULL;
        let push = Actions::PULL_PUSH;
        let all = Actions::PULL_PUSH.with(Delete);
        let grant = |g| Standing { grants: vec![g], ..Standing::default() };
        let table: [(&str, Standing, Actions, bool); 10] = [
            ("nobody", Standing::default(), none, false),
            ("viewer", member(OrgRole::Viewer), pull, false),
            ("member", member(OrgRole::Member), push, false),
            ("admin", member(OrgRole::Admin), all, true),
            ("owner", member(OrgRole::Owner), all, true),
            ("Pull grant", grant(GrantAccess::Pull), pull, false),
            ("Push grant", grant(GrantAccess::Push), push, false),
            ("Delete grant", grant(GrantAccess::Delete), all, false),
            ("Admin grant", grant(GrantAccess::Admin), all, true),
            ("site admin", Standing { site_admin: true, ..Standing::default() }, all, true),
        ];
        for (who, standing, actions, administers) in table {
            assert_eq!(repository_actions(Visibility::Private, Some(&standing)), actions, "{who}");
            assert_eq!(may_administer(Some(&standing), false), administers, "{who}");
            assert!(!may_administer(Some(&standing), true), "{who} through an API key");
        }
        // A member holding every action through a Delete grant still does not administer.
        let member_deleter =
            Standing { org_role: Some(OrgRole::Member), grants: vec![GrantAccess::Delete], ..Standing::default() };
        assert_eq!(repository_actions(Visibility::Private, Some(&member_deleter)), Actions::ALL);
        assert!(!may_administer(Some(&member_deleter), false));
        assert!(!may_administer(None, false));
        assert!(GrantAccess::Pull < GrantAccess::Push && GrantAccess::Push < GrantAccess::Delete);
        assert!(GrantAccess::Delete < GrantAccess::Admin);
        assert!(all.contains(Pull) && all.contains(Push));
    }

    #[test]
    fn repository_creation_on_push() {
        assert!(may_create_repository(Some(&member(OrgRole::Member)), true));
        assert!(!may_create_repository(Some(&member(OrgRole::Member)), false));
        assert!(!may_create_repository(Some(&member(OrgRole::Viewer)), true));
        assert!(!may_create_repository(None, true));
        assert!(may_create_repository(Some(&Standing { site_admin: true, ..Standing::default() }), false));
    }

    #[test]
    fn keys_narrow_but_never_widen() {
        let scopes = CompiledScopes::new(&[KeyScope {
            repositories: "acme/**".into(),
            actions: vec![Action::Pull, Action::Push],
        }])
        .expect("globs");
        assert_eq!(limit_to_key(Actions::ALL, Some(&scopes), "acme/app"), Actions::PULL_PUSH);
        assert_eq!(limit_to_key(Actions::PULL, Some(&scopes), "acme/app"), Actions::PULL);
        assert_eq!(limit_to_key(Actions::ALL, Some(&scopes), "other/app"), Actions::NONE);
        assert_eq!(limit_to_key(Actions::PULL, None, "other/app"), Actions::PULL);
    }
}
