//! The core store: sharded, size-aware, with an adaptive scan-resistant policy.
