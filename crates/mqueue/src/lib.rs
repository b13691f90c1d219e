//! An embeddable durable queue that never loses an acknowledged message.
#![forbid(unsafe_code)]

pub mod log;
pub mod queue;
