//! The append-only segment log.
