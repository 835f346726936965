//! Credentials and rights, as pure code: token scope strings, API keys, password hashes, the
//! permission model (who may do what to a repository) and biscuit access tokens that any node
//! verifies offline and any holder can attenuate. No IO: callers load keys, rows and requests.

pub mod action;
pub mod apikey;
pub mod password;
pub mod permission;
pub mod scope;
pub mod token;

pub use action::{Action, Actions};
pub use scope::Scope;
