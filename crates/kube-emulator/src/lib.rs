//! Test support: the Kubernetes API server, emulated in process so that `kube::Client` and
//! kube-runtime's `Controller` run unmodified against it — as a `tower::Service`
//! ([`Emulator::client`]) or on a loopback socket with a kubeconfig ([`Emulator::serve`]) for
//! real binaries and `kubectl`.
//!
//! The [`store`] holds the object semantics (one global resourceVersion, bounded watch history,
//! generation, status subresource, finalizers and deletionTimestamp, preconditions, merge and
//! JSON patches, selectors); [`ssa`] tracks field ownership and does server-side apply;
//! [`schema`] prunes, defaults and validates custom resources; [`emulator`] serves the REST
//! paths, watch streams and discovery, and holds the test hooks. What is not emulated is listed
//! in the crate's README.

pub mod emulator;
pub mod error;
pub mod schema;
pub mod selector;
pub mod ssa;
pub mod store;
pub mod types;

pub use emulator::{Emulator, Fault, Loopback, RequestRecord, Verb, WaitTimeout};
pub use error::ApiError;
pub use store::{
    DeleteOptions, Event, EventType, Filter, ListOptions, ListPage, PatchKind, ResourceType, Store, Subresource,
    WriteOptions,
};
