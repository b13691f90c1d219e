//! The HTTP layer's [`Limiter`] for the Redis limiters (features `redis` and `tower`), so a
//! fleet's shared limit can stand behind [`RateLimitLayer`](crate::http::RateLimitLayer)
//! without blocking the threads that serve requests.
//!
//! A key becomes its `Display` text (an `IpAddr` its usual form). The asynchronous limiter's
//! check runs in the future the layer polls, on the server's runtime; the blocking limiter's
//! runs on the limiter's own runtime, and the layer awaits its end. `RateLimit-Policy`
//! advertises the quota as Redis applies it, its interval rounded up to the scripts' unit.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;

use infra_common::Clock;

use super::options::{RedisOptions, RemoteAlgorithm};
use super::scripts::ScriptQuota;
use super::{AsyncRedisRateLimiter, RedisRateLimiter};
use crate::http::{Limiter, QuotaPolicy};
use crate::{Decision, Error, Quota};

/// The future of a Redis limiter's decision.
type Decide = Pin<Box<dyn Future<Output = Result<Decision, Error>> + Send>>;

/// The capacity of `quota` in Redis and the time a spent capacity takes to come back there.
fn policy(options: &RedisOptions, quota: &Quota) -> QuotaPolicy {
    match ScriptQuota::new(options.algorithm, quota) {
        Ok(limits) => {
            let refill = match options.algorithm {
                RemoteAlgorithm::Gcra => limits.second,
                RemoteAlgorithm::SlidingWindowLog => limits.first,
            };
            QuotaPolicy::new(limits.capacity, limits.duration(refill))
        }
        // Not a quota the limiter holds (it refuses those): advertised as it reads.
        Err(_) => QuotaPolicy::new(quota.limit(), quota.period()),
    }
}

impl<K, C> Limiter<K> for AsyncRedisRateLimiter<C>
where
    K: Display,
    C: Clock + 'static,
{
    type Decide = Decide;

    fn decide(&self, key: &K, cost: u32) -> Decide {
        Box::pin(self.owned_check(key.to_string(), cost))
    }

    fn policy(&self, _key: &K) -> QuotaPolicy {
        policy(self.options(), &self.quota())
    }
}

impl<K, C> Limiter<K> for RedisRateLimiter<C>
where
    K: Display,
    C: Clock + 'static,
{
    type Decide = Decide;

    fn decide(&self, key: &K, cost: u32) -> Decide {
        let (limiter, runtime) = self.parts();
        let check = runtime.spawn(limiter.owned_check(key.to_string(), cost));
        Box::pin(async move {
            check.await.unwrap_or_else(|stopped| {
                Err(Error::Unavailable {
                    reason: format!("the Redis limiter's runtime stopped the check: {stopped}"),
                })
            })
        })
    }

    fn policy(&self, _key: &K) -> QuotaPolicy {
        policy(self.parts().0.options(), &self.quota())
    }
}
