//! Helpers shared by several benchmark files (each includes this module).

pub(crate) mod threads;
