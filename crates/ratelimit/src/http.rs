//! HTTP rate limiting: the trait a limiter implements to stand behind the HTTP layer.

mod limiter;

pub use limiter::{Limiter, QuotaPolicy};
