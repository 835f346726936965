//! The Aerugo operator: kube-runtime controllers that reconcile `Registry` objects into
//! data-plane Deployments and `Organization`, `Repository`, `ApiKey` and `EventSubscription`
//! objects into the registry's Postgres rows and Kubernetes Secrets — in a
//! cluster ([`controller::run`]) or from a directory of YAML files ([`files::apply`]). Each kind
//! module holds pure `validate`/`desired` steps and the `sync`/`cleanup` that write; the
//! driver only sequences them. All SQL is in `aerugo-db`.

pub mod bucket;
pub mod collector;
pub mod context;
pub mod controller;
pub mod defaults;
pub mod error;
pub mod files;
pub mod key;
pub mod leader;
pub mod mirror;
pub mod org;
pub mod pods;
pub mod registry;
pub mod repo;
pub mod retention;
pub mod subscription;
pub mod world;

pub use error::{Error, Result};
