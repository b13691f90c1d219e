//! What the locks do, reported through the [`metrics`] facade (feature `metrics`), so any
//! exporter (Prometheus, StatsD, OpenTelemetry) can serve it.
//!
//! | name | type | labels | counts |
//! | --- | --- | --- | --- |
//! | [`GRANTS_TOTAL`] | counter | `locks`, `access` | grants a [`MemoryLocks`](crate::MemoryLocks) made, on arrival or after a wait: `access` is `exclusive`, `shared` or `permit` |
//! | [`WAITS_TOTAL`] | counter | `locks`, `outcome` | requests that queued, by how the wait ended: `granted` or `timed_out` |
//! | [`LEASE_LOSSES_TOTAL`] | counter | `locks` | leases that ran out before they were released, counted when the backend ends them (the next call on the name, or [`expire_due`](crate::MemoryLocks::expire_due)) |
//! | [`RENEWAL_FAILURES_TOTAL`] | counter | `locks`, `reason` | renewals a `Watchdog` (feature `tokio`) could not make, each of which ends it: `reason` is `expired` (the lease was over before the renewal, by the clock or the backend's answer), `backend` (the backend could not be asked) or `other` |
//! | [`STALE_TOKENS_TOTAL`] | counter | `fence` | tokens a [`Fence`](crate::Fence) refused as older than its mark, by `admit` or `check` |
//!
//! `locks` is the name given with `MemoryLocks::with_metrics_name` (for a watchdog,
//! `Renewal::metrics_name`), `fence` the one given with `Fence::with_metrics_name`; both are
//! [`DEFAULT_NAME`] otherwise. Lock names and resources never become labels: a metric series
//! per lock name would grow without bound.
//!
//! Each instance registers its counters once, when it is built or named, and keeps the
//! handles: a grant then costs one increment through the recorder, with no name lookup. The
//! recorder must therefore be installed **before** the instance is built; one built earlier
//! keeps reporting to nothing. An instance is registered under the default name when built,
//! so a renamed one leaves that series at zero. Without the feature none of this is compiled:
//! no field, no call, no branch.
//!
//! ```
//! use infra_dlock::{Locks, MemoryLocks};
//! use std::time::Duration;
//!
//! // Install the exporter's recorder first, then build the locks.
//! let locks = MemoryLocks::new().with_metrics_name("jobs");
//! let guard = locks.acquire("nightly", Duration::from_secs(30))?; // infra_dlock_grants_total{locks="jobs",access="exclusive"}
//! guard.release()?;
//! # Ok::<(), infra_dlock::Error>(())
//! ```

use std::borrow::Cow;

use metrics::{Counter, SharedString, Unit, counter, describe_counter};

use crate::error::Error;
use crate::grant::Access;

/// Counter of grants, labelled `locks` and `access`.
pub const GRANTS_TOTAL: &str = "infra_dlock_grants_total";
/// Counter of requests that queued, labelled `locks` and `outcome`.
pub const WAITS_TOTAL: &str = "infra_dlock_waits_total";
/// Counter of leases that ran out before their release, labelled `locks`.
pub const LEASE_LOSSES_TOTAL: &str = "infra_dlock_lease_losses_total";
/// Counter of failed renewals, labelled `locks` and `reason`.
pub const RENEWAL_FAILURES_TOTAL: &str = "infra_dlock_renewal_failures_total";
/// Counter of tokens a fence refused as stale, labelled `fence`.
pub const STALE_TOKENS_TOTAL: &str = "infra_dlock_stale_tokens_total";
/// The label naming the locks instance.
pub const LOCKS_LABEL: &str = "locks";
/// The label naming a grant's kind of hold.
pub const ACCESS_LABEL: &str = "access";
/// The label naming how a wait ended.
pub const OUTCOME_LABEL: &str = "outcome";
/// The label naming why a renewal failed.
pub const REASON_LABEL: &str = "reason";
/// The label naming the fence.
pub const FENCE_LABEL: &str = "fence";
/// The `locks` or `fence` label of an instance that was given no name.
pub const DEFAULT_NAME: &str = "default";

fn describe() {
    describe_counter!(
        GRANTS_TOTAL,
        Unit::Count,
        "Lock grants by locks instance and kind of hold (exclusive, shared, permit)."
    );
    describe_counter!(
        WAITS_TOTAL,
        Unit::Count,
        "Lock requests that queued, by locks instance and how the wait ended (granted, timed_out)."
    );
    describe_counter!(
        LEASE_LOSSES_TOTAL,
        Unit::Count,
        "Leases that ran out before they were released, by locks instance."
    );
    describe_counter!(
        RENEWAL_FAILURES_TOTAL,
        Unit::Count,
        "Lease renewals a watchdog could not make, by locks instance and reason (expired, backend, other)."
    );
    describe_counter!(
        STALE_TOKENS_TOTAL,
        Unit::Count,
        "Fencing tokens a fence refused as older than its mark, by fence."
    );
}

/// The handles a [`MemoryLocks`](crate::MemoryLocks) increments.
#[derive(Debug)]
pub(crate) struct LockCounters {
    exclusive: Counter,
    shared: Counter,
    permit: Counter,
    waited_granted: Counter,
    waited_timed_out: Counter,
    lease_losses: Counter,
}

impl LockCounters {
    pub(crate) fn new(locks: Cow<'static, str>) -> Self {
        describe();
        let locks = SharedString::from(locks);
        let grants = |access: &'static str| counter!(GRANTS_TOTAL, LOCKS_LABEL => locks.clone(), ACCESS_LABEL => access);
        let waits = |outcome: &'static str| counter!(WAITS_TOTAL, LOCKS_LABEL => locks.clone(), OUTCOME_LABEL => outcome);
        Self {
            exclusive: grants("exclusive"),
            shared: grants("shared"),
            permit: grants("permit"),
            waited_granted: waits("granted"),
            waited_timed_out: waits("timed_out"),
            lease_losses: counter!(LEASE_LOSSES_TOTAL, LOCKS_LABEL => locks.clone()),
        }
    }

    pub(crate) fn unnamed() -> Self {
        Self::new(Cow::Borrowed(DEFAULT_NAME))
    }

    #[inline]
    pub(crate) fn granted(&self, access: Access) {
        match access {
            Access::Exclusive => &self.exclusive,
            Access::Shared => &self.shared,
            Access::Permit { .. } => &self.permit,
        }
        .increment(1);
    }

    /// A queued request's wait ended: granted (also a grant) or timed out.
    #[inline]
    pub(crate) fn waited(&self, access: Access, granted: bool) {
        if granted {
            self.waited_granted.increment(1);
            self.granted(access);
        } else {
            self.waited_timed_out.increment(1);
        }
    }

    #[inline]
    pub(crate) fn leases_lost(&self, count: usize) {
        self.lease_losses
            .increment(u64::try_from(count).unwrap_or(u64::MAX));
    }
}

/// The handles a watchdog increments when a renewal fails.
#[cfg(feature = "tokio")]
#[derive(Debug)]
pub(crate) struct RenewalCounters {
    expired: Counter,
    backend: Counter,
    other: Counter,
}

#[cfg(feature = "tokio")]
impl RenewalCounters {
    pub(crate) fn new(locks: Cow<'static, str>) -> Self {
        describe();
        let locks = SharedString::from(locks);
        let failures = |reason: &'static str| counter!(RENEWAL_FAILURES_TOTAL, LOCKS_LABEL => locks.clone(), REASON_LABEL => reason);
        Self {
            expired: failures("expired"),
            backend: failures("backend"),
            other: failures("other"),
        }
    }

    /// Counts a renewal that failed with `error` (a lease found over is `LeaseExpired`).
    pub(crate) fn failed(&self, error: &Error) {
        match error {
            Error::LeaseExpired { .. } => &self.expired,
            Error::Backend { .. } => &self.backend,
            _ => &self.other,
        }
        .increment(1);
    }
}

/// The handle a [`Fence`](crate::Fence) increments.
#[derive(Debug)]
pub(crate) struct FenceCounters {
    stale: Counter,
}

impl FenceCounters {
    pub(crate) fn new(fence: Cow<'static, str>) -> Self {
        describe();
        Self {
            stale: counter!(STALE_TOKENS_TOTAL, FENCE_LABEL => SharedString::from(fence)),
        }
    }

    pub(crate) fn unnamed() -> Self {
        Self::new(Cow::Borrowed(DEFAULT_NAME))
    }

    /// Counts `result` if it refused a stale token.
    #[inline]
    pub(crate) fn record(&self, result: &Result<(), Error>) {
        if let Err(Error::StaleToken { .. }) = result {
            self.stale.increment(1);
        }
    }
}
