//! A CDN-grade HTTP cache you embed.
#![forbid(unsafe_code)]

pub mod http;
pub mod store;
