//! Real-time rider/driver matching on H3 cells.
#![forbid(unsafe_code)]

pub mod matching;
pub mod surge;
