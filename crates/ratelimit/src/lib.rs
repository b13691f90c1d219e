//! Rate limiting that protects a service from any one client, per user, IP address or key, on
//! one machine or across a fleet.
//!
//! - [`Quota`]: `limit` per `period` with a `burst`, validated (errors, never panics).
//! - [`Algorithm`]: the one trait every algorithm implements — [`Gcra`] (lock-free, the
//!   default), [`TokenBucket`], [`SlidingWindowCounter`], [`SlidingWindowLog`], [`FixedWindow`].
//! - [`RateLimiter`]: one limiter for one thing; [`KeyedRateLimiter`]: one state per key in a
//!   sharded map with per-key quotas and a hard cap on memory.
//! - [`ConcurrencyLimiter`] and [`AdaptiveConcurrencyLimiter`] (AIMD, Vegas or Gradient):
//!   in-flight limits with RAII permits.
//! - [`Decision`]: allowed or denied, remaining, retry-after, reset-after, and the
//!   `RateLimit-*` / `Retry-After` header values; `try_check` returns a denial as an error
//!   instead ([`NotUntil`]), for `?`.
//! - Features: `tokio` (waiting for capacity, per key too, with optional jitter), `tower` (the
//!   `http` module: a tower layer with the IETF `RateLimit` fields, per-route policies and
//!   client-IP keys), `axum` (client IPs from axum's connection info), `redis` (limits shared
//!   by many processes through Redis or Redis Cluster, async or blocking), `metrics` (decisions
//!   and Redis errors through the `metrics` facade; names in the `metrics` module).
//!
//! Every limiter reads time from an [`infra_common::Clock`]: [`SystemClock`](infra_common::SystemClock)
//! in production, [`ManualClock`](infra_common::ManualClock) in tests, which never sleep.
//!
//! ```
//! use infra_common::ManualClock;
//! use infra_ratelimit::{Gcra, KeyedRateLimiter, Quota};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! // 10 requests per second per user, at most 5 at once.
//! let quota = Quota::per_second(10)?.with_burst(5)?;
//! let limiter = KeyedRateLimiter::<String, Gcra, _>::with_clock(quota, clock.clone())?;
//! let admitted = (0..8).filter(|_| limiter.check("alice").unwrap().is_allowed()).count();
//! assert_eq!(admitted, 5);
//! let denied = limiter.check("alice")?;
//! assert_eq!(denied.retry_after(), Duration::from_millis(100));
//! clock.advance(denied.retry_after());
//! assert!(limiter.check("alice")?.is_allowed());
//! # Ok::<(), infra_ratelimit::Error>(())
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod algorithm;
mod concurrency;
mod decision;
mod error;
mod fixed_window;
mod gcra;
mod gradient;
mod keyed;
mod not_until;
pub mod quota;
mod sliding_window;
mod store;
mod token_bucket;

#[cfg(any(test, fuzzing))]
pub mod reference;

#[cfg(feature = "tower")]
pub mod http;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "tokio")]
mod wait;

pub use algorithm::{Algorithm, AlgorithmConfig, CONFIG_WORDS, RateLimiter};
pub use concurrency::{
    AdaptiveConcurrencyLimiter, AdaptivePermit, AimdConfig, ConcurrencyLimiter, Permit, VegasConfig,
};
pub use decision::{Decision, RATELIMIT_LIMIT, RATELIMIT_REMAINING, RATELIMIT_RESET, RETRY_AFTER};
pub use error::Error;
pub use fixed_window::{FixedWindow, WindowConfig};
pub use gcra::{Gcra, GcraConfig};
pub use gradient::GradientConfig;
pub use keyed::{KeyedOptions, KeyedRateLimiter};
pub use not_until::NotUntil;
pub use quota::Quota;
pub use sliding_window::{SlidingWindowCounter, SlidingWindowLog};
pub use token_bucket::{TokenBucket, TokenBucketConfig};
#[cfg(feature = "tokio")]
pub use wait::{AsyncKeyedRateLimiter, AsyncRateLimiter, Jitter, TokioClock};

/// Compiles and runs the README's examples as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
