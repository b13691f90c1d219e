//! An embeddable durable queue that never loses an acknowledged message.
#![forbid(unsafe_code)]

mod error;
pub mod log;
pub mod queue;
pub mod stream;

pub use error::Error;
