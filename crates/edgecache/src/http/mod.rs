//! The HTTP layer: RFC 9111 freshness and storability, Vary, revalidation, RFC 5861,
//! coalescing and purge.
//!
//! The core is synchronous and runtime-free; [`HttpCache`] (feature `tokio`) ties it to the
//! store and an [`Origin`]:
//!
//! - [`CacheControl`]: directive parsing with bounded work (`cache_control`).
//! - [`Freshness`], [`Decision`], [`Heuristic`]: lifetime, age and what a request may be
//!   given (`freshness`, RFC 9111 §4.2, RFC 5861).
//! - [`storability`], [`NotStorable`], [`SetCookiePolicy`]: what a shared cache may store
//!   (`storability`, §3).
//! - [`PrimaryKey`], [`VaryKey`]: cache keys (`keys`, §2, §4.1).
//! - [`conditional_headers`], [`merge_not_modified`], [`validates`]: revalidation
//!   (`revalidation`, §4.3).
//! - [`coalescing`]: one fetch per key, any number of waiters, released on failure.
//! - `PurgeMode` (feature `tokio`): purge by URL or surrogate key (`purge`).
//! - [`Record`]: the versioned binary form of a stored response the shared tier keeps
//!   (`record`).
//! - `SharedTier` (feature `redis`): a second level in Redis shared by many edges, and purges
//!   broadcast to all of them (`shared`).
//! - [`Origin`], [`OriginError`], [`Error`], [`PurgeError`].

#[cfg(feature = "tokio")]
mod cache;
mod cache_control;
#[cfg(feature = "tokio")]
mod cache_status_field;
pub mod coalescing;
mod error;
mod freshness;
mod keys;
mod origin;
#[cfg(any(feature = "tokio", infra_loom))]
mod purge;
#[cfg(feature = "redis")]
mod recency;
mod record;
mod revalidation;
#[cfg(feature = "redis")]
pub(crate) mod shared;
mod storability;

#[cfg(feature = "tokio")]
pub use cache::{CacheStatus, HttpCache, HttpCacheBuilder, MAX_VARIANTS};
pub use cache_control::{
    CacheControl, Delta, MAX_CACHE_CONTROL_BYTES, MAX_DIRECTIVES, MAX_QUALIFIED_FIELDS, MaxStale,
};
pub use error::{Error, PurgeError};
pub use freshness::{Decision, Exchange, Freshness, Heuristic};
pub use keys::{MAX_VARY_FIELDS, PrimaryKey, VaryKey};
pub use origin::{Origin, OriginError};
#[cfg(any(feature = "tokio", infra_loom))]
pub use purge::{
    MAX_PURGED_BYTES, MAX_PURGED_TAGS, MAX_PURGED_URLS, MAX_TAG_BYTES, MAX_TAGS_PER_RESPONSE,
    PurgeMode,
};

/// The purge log's URL hand-off, for the loom model only (`tests/loom.rs`).
#[cfg(infra_loom)]
#[doc(hidden)]
pub mod purge_model {
    pub use super::purge::{PurgeLog, Purged};
}
pub use record::{DecodeError, RECORD_VERSION, Record};
pub use revalidation::{
    client_not_modified, conditional_headers, merge_not_modified, validates, without_hop_by_hop,
};
#[cfg(feature = "redis")]
pub use shared::{SharedStats, SharedTier};
pub use storability::{NotStorable, RequestFacts, ResponseFacts, SetCookiePolicy, storability};
