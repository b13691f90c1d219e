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
//! | [`BACKEND_ERRORS_TOTAL`] | counter | `locks` | calls of a Redis or etcd backend that failed because the server could not be asked or answered in time ([`Error::Backend`]) |
//!
//! The Redis and etcd backends (features `redis`, `etcd`) report grants, backend errors, waits
//! that timed out (`outcome="timed_out"`; they do not tell a grant after a wait from one on
//! arrival, so they count no `granted` waits) and lease losses, which they learn of when an
//! `extend` or `release` finds the lease over, or when a grant's lease was spent before its
//! answer arrived ([`Error::LeaseSpentOnArrival`]).
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
#[cfg(any(feature = "redis", feature = "etcd"))]
use crate::grant::{Grant, Wait};

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
/// Counter of server backend calls that failed, labelled `locks`.
pub const BACKEND_ERRORS_TOTAL: &str = "infra_dlock_backend_errors_total";
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
    describe_counter!(
        BACKEND_ERRORS_TOTAL,
        Unit::Count,
        "Calls of a Redis or etcd lock backend that failed to reach or hear from the server, by locks instance."
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
    backend_errors: Counter,
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
            backend_errors: counter!(BACKEND_ERRORS_TOTAL, LOCKS_LABEL => locks.clone()),
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

    /// What a server backend's grant call came to, for a request that waited as `wait` says.
    #[cfg(any(feature = "redis", feature = "etcd"))]
    pub(crate) fn grant_answered(
        &self,
        access: Access,
        wait: Wait,
        result: &Result<Option<Grant>, Error>,
    ) {
        match result {
            Ok(Some(_)) => self.granted(access),
            Ok(None) if matches!(wait, Wait::Up(_)) => self.waited_timed_out.increment(1),
            Ok(None) => {}
            Err(error) => self.failed(error),
        }
    }

    /// What a server backend's extend or release came to.
    #[cfg(any(feature = "redis", feature = "etcd"))]
    pub(crate) fn hold_answered(&self, result: &Result<(), Error>) {
        if let Err(error) = result {
            self.failed(error);
        }
    }

    #[cfg(any(feature = "redis", feature = "etcd"))]
    fn failed(&self, error: &Error) {
        match error {
            Error::Backend { .. } => self.backend_errors.increment(1),
            Error::LeaseExpired { .. } | Error::LeaseSpentOnArrival { .. } => {
                self.lease_losses.increment(1);
            }
            _ => {}
        }
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

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use std::time::Duration;

    use infra_common::ManualClock;
    use infra_common::sync::{Arc, thread};
    use infra_testkit::metrics::{counters, value};
    use metrics_util::debugging::DebuggingRecorder;

    use super::*;
    use crate::{Fence, FencingToken, Locks, MemoryLocks, Wait};

    const LEASE: Duration = Duration::from_secs(10);

    #[test]
    fn memory_locks_count_grants_waits_and_lost_leases_but_never_lock_names() {
        let recorder = DebuggingRecorder::new();
        let clock = ManualClock::new();
        let locks = metrics::with_local_recorder(&recorder, || {
            Arc::new(MemoryLocks::with_clock(clock.clone()).with_metrics_name("jobs"))
        });
        let holder = locks.acquire("a", LEASE).unwrap();
        drop(locks.read("b", LEASE).unwrap());
        drop(locks.permit("c", 2, LEASE).unwrap());
        // A try that finds the lock taken is neither a grant nor a wait.
        assert!(locks.try_acquire("a", LEASE).unwrap().is_none());
        // A wait that times out at once, and one granted at the holder's release.
        assert!(
            locks
                .grant("a", Access::Exclusive, LEASE, Wait::Up(Duration::ZERO))
                .unwrap()
                .is_none()
        );
        let waiter = {
            let locks = Arc::clone(&locks);
            thread::spawn(move || locks.acquire("a", LEASE).unwrap().into_grant())
        };
        while locks.queue_len("a") == 0 {
            thread::yield_now();
        }
        holder.release().unwrap();
        let handed = waiter.join().unwrap();
        // That grant runs out unreleased; so does one through a handle.
        let handle = locks.handle("d").unwrap();
        let _kept = handle.acquire(LEASE).unwrap().into_grant();
        clock.advance(LEASE);
        assert_eq!(locks.expire_due(), 2);
        assert!(locks.release(handed).is_err());

        let series = counters(&recorder.snapshotter());
        let grants = |access| {
            value(
                &series,
                GRANTS_TOTAL,
                &[(LOCKS_LABEL, "jobs"), (ACCESS_LABEL, access)],
            )
        };
        assert_eq!(grants("exclusive"), Some(3));
        assert_eq!(grants("shared"), Some(1));
        assert_eq!(grants("permit"), Some(1));
        let waits = |outcome| {
            value(
                &series,
                WAITS_TOTAL,
                &[(LOCKS_LABEL, "jobs"), (OUTCOME_LABEL, outcome)],
            )
        };
        assert_eq!(waits("granted"), Some(1));
        assert_eq!(waits("timed_out"), Some(1));
        assert_eq!(
            value(&series, LEASE_LOSSES_TOTAL, &[(LOCKS_LABEL, "jobs")]),
            Some(2)
        );
        // Seven series named `jobs` (the backend errors one stays at zero in memory), and
        // seven at zero under the default name it was built with, whatever lock names were
        // used.
        let named = series
            .iter()
            .filter(|(_, l, _)| l.iter().any(|(_, v)| v == "jobs"));
        assert_eq!(named.count(), 7);
        assert_eq!(series.len(), 14);
        assert!(
            series
                .iter()
                .all(|(_, labels, _)| labels.iter().all(|(_, v)| v.len() > 1))
        );
    }

    #[test]
    fn a_fence_counts_stale_tokens_refused_by_admit_and_check() {
        let recorder = DebuggingRecorder::new();
        let fence =
            metrics::with_local_recorder(&recorder, || Fence::new().with_metrics_name("ledger"));
        let t = FencingToken::new;
        fence.admit("r", "m", t(5)).unwrap();
        assert!(fence.admit("r", "m", t(4)).is_err());
        assert!(fence.check("r", "m", t(3)).is_err());
        fence.check("r", "m", t(6)).unwrap();
        // Another lock's token is refused, but not as stale.
        assert!(fence.admit("r", "other", t(9)).is_err());
        let series = counters(&recorder.snapshotter());
        assert_eq!(
            value(&series, STALE_TOKENS_TOTAL, &[(FENCE_LABEL, "ledger")]),
            Some(2)
        );
        assert_eq!(
            value(&series, STALE_TOKENS_TOTAL, &[(FENCE_LABEL, DEFAULT_NAME)]),
            Some(0)
        );
    }

    #[test]
    fn locks_built_before_the_recorder_report_nothing_to_it() {
        let recorder = DebuggingRecorder::new();
        let locks = MemoryLocks::with_clock(ManualClock::new());
        metrics::with_local_recorder(&recorder, || {
            drop(locks.acquire("a", LEASE).unwrap());
        });
        assert!(counters(&recorder.snapshotter()).is_empty());
    }

    #[test]
    fn every_metric_is_described_as_a_count() {
        let recorder = DebuggingRecorder::new();
        metrics::with_local_recorder(&recorder, || {
            drop(LockCounters::unnamed());
            #[cfg(feature = "tokio")]
            drop(RenewalCounters::new(Cow::Borrowed(DEFAULT_NAME)));
            drop(FenceCounters::unnamed());
        });
        let described = recorder.snapshotter().snapshot().into_vec();
        let names: std::collections::BTreeSet<String> = described
            .iter()
            .map(|(key, _, _, _)| key.key().name().to_owned())
            .collect();
        let expected = if cfg!(feature = "tokio") { 6 } else { 5 };
        assert_eq!(names.len(), expected);
        for (_, unit, description, _) in described {
            assert_eq!(unit, Some(Unit::Count));
            assert!(description.is_some_and(|d| !d.is_empty()));
        }
    }

    #[cfg(feature = "tokio")]
    #[tokio::test(start_paused = true)]
    async fn a_watchdog_counts_its_failed_renewal_by_reason() {
        use crate::{Loss, Renewal, Watchdog};

        let recorder = DebuggingRecorder::new();
        let clock = ManualClock::new();
        let locks = Arc::new(MemoryLocks::with_clock(clock.clone()));
        let grant = locks.acquire("job", LEASE).unwrap().into_grant();
        let watchdog = metrics::with_local_recorder(&recorder, || {
            let renewal = Renewal::new(LEASE).metrics_name("jobs");
            Watchdog::spawn(Arc::clone(&locks), grant, clock.clone(), renewal).unwrap()
        });
        clock.advance(LEASE * 2);
        assert_eq!(watchdog.lost().await, Loss::Expired);
        let series = counters(&recorder.snapshotter());
        let failures = |reason| {
            value(
                &series,
                RENEWAL_FAILURES_TOTAL,
                &[(LOCKS_LABEL, "jobs"), (REASON_LABEL, reason)],
            )
        };
        assert_eq!(failures("expired"), Some(1));
        assert_eq!(failures("backend"), Some(0));
        assert_eq!(failures("other"), Some(0));
    }
}
