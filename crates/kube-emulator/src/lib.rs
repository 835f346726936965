//! Test support for the operator: the object semantics of a Kubernetes API server, in process.
//! This crate holds the core — the store with one global resourceVersion and a bounded event
//! history, the create/get/list/replace/patch/delete rules (generation, status subresource,
//! finalizers and deletionTimestamp, preconditions), merge and JSON patches, label selectors,
//! structural-schema pruning, defaulting and validation of custom resources, and the `Status`
//! error bodies. The HTTP front (a `tower::Service` for `kube::Client`, watch
//! streaming, server-side apply, CRD installation) is built on it by issue 4 and is not here
//! yet. No IO, no clocks other than creation timestamps.

pub mod error;
pub mod schema;
pub mod selector;
pub mod store;

pub use error::ApiError;
pub use store::{Event, EventType, ListOptions, ListPage, PatchKind, ResourceType, Store, Subresource};
