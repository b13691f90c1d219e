//! The server backends' grant, extend and release, reported to metrics in one place.
//!
//! The Redis and etcd backends implement [`ServerCalls`]'s three `request_*` calls, which do
//! the work, and answer [`Locks`](crate::Locks)' `grant`, `extend` and `release` with the
//! provided `metered_*` calls, which make a request and, with feature `metrics`, count what it
//! came to (grants, timed-out waits, lease losses, backend errors). Without the feature the
//! `metered_*` calls only forward.

use std::time::Duration;

use crate::error::Error;
use crate::grant::{Access, Grant, Wait};
#[cfg(feature = "metrics")]
use crate::metrics::LockCounters;

/// A server backend's calls before metrics see their outcome, and the metered calls made of
/// them.
pub(crate) trait ServerCalls {
    /// [`Locks::grant`](crate::Locks::grant), uncounted.
    fn request_grant(
        &self,
        name: &str,
        access: Access,
        lease: Duration,
        wait: Wait,
    ) -> Result<Option<Grant>, Error>;

    /// [`Locks::extend`](crate::Locks::extend), uncounted.
    fn request_extend(&self, grant: &mut Grant, lease: Duration) -> Result<(), Error>;

    /// [`Locks::release`](crate::Locks::release), uncounted.
    fn request_release(&self, grant: &Grant) -> Result<(), Error>;

    /// The counters this instance reports to.
    #[cfg(feature = "metrics")]
    fn counters(&self) -> &LockCounters;

    /// [`request_grant`](Self::request_grant), its outcome counted.
    fn metered_grant(
        &self,
        name: &str,
        access: Access,
        lease: Duration,
        wait: Wait,
    ) -> Result<Option<Grant>, Error> {
        let result = self.request_grant(name, access, lease, wait);
        #[cfg(feature = "metrics")]
        self.counters().grant_answered(access, wait, &result);
        result
    }

    /// [`request_extend`](Self::request_extend), its outcome counted.
    fn metered_extend(&self, grant: &mut Grant, lease: Duration) -> Result<(), Error> {
        let result = self.request_extend(grant, lease);
        #[cfg(feature = "metrics")]
        self.counters().hold_answered(&result);
        result
    }

    /// [`request_release`](Self::request_release), its outcome counted.
    fn metered_release(&self, grant: &Grant) -> Result<(), Error> {
        let result = self.request_release(grant);
        #[cfg(feature = "metrics")]
        self.counters().hold_answered(&result);
        result
    }
}
