//! A CDN-grade HTTP cache you embed.
#![forbid(unsafe_code)]

pub mod http;
pub mod store;
mod stats;

pub use stats::Stats;
pub use store::{Cache, CacheBuilder};
