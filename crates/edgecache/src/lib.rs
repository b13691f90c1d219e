//! A CDN-grade HTTP cache you embed.
//!
//! - [`Cache`] (`store`): the concurrent, sharded, size-aware store with per-entry TTLs.
//! - [`http`]: RFC 9111 / RFC 5861 semantics on top of it: `Cache-Control` parsing,
//!   freshness, storability, Vary keys, revalidation, request coalescing and purge by URL or
//!   surrogate key; `http::HttpCache` (feature `tokio`) puts them in front of an
//!   [`http::Origin`]; with feature `redis`, `http::SharedTier` adds a second level in Redis
//!   shared by many edges, and purges broadcast to them all.
//! - `metrics` (feature `metrics`): the cache's counters through the `metrics` facade.
//!
//! ```
//! use http::HeaderMap;
//! use infra_edgecache::http::{CacheControl, Delta};
//!
//! let mut response = HeaderMap::new();
//! response.insert("cache-control", "public, s-maxage=600, stale-if-error=86400".parse()?);
//! let cc = CacheControl::from_headers(&response);
//! assert_eq!(cc.s_maxage(), Some(Delta::Seconds(600)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod http;
#[cfg(feature = "metrics")]
pub mod metrics;
mod stats;
pub mod store;

pub use stats::Stats;
pub use store::{Cache, CacheBuilder};

/// Compiles and runs the README's examples as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
