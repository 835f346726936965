//! Aerugo's data plane: the OCI Distribution API (actix-web) over Postgres metadata and blob
//! storage. `routes` is the HTTP edge (parse, authorize, call the core, set headers); `registry`
//! is the core; `error` is the one place errors become responses.

pub mod api;
pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod events;
pub mod fsck;
pub mod http_client;
pub mod metrics;
pub mod mirror;
pub mod registry;
pub mod routes;
pub mod server;

pub use registry::Registry;
