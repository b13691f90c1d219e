//! Code shared by several test files.
pub(crate) mod hit_ratio;
