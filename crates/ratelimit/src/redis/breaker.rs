//! A circuit breaker: while Redis is down, stop paying its timeout on every check.
//!
//! Closed, every check asks Redis. After `threshold` consecutive failures to reach it
//! (timeouts, lost connections, a server that says it cannot serve), the breaker opens: for
//! the cool-down, checks get the failure policy's answer at once, without a round trip. Then
//! exactly one check, the probe, is let through; the others keep the policy's answer while it
//! runs. If the probe reaches Redis the breaker closes; if not, it opens again for twice the
//! previous cool-down, up to [`MAX_BACKOFF_DOUBLINGS`] doublings. That doubling is the limiter's
//! reconnect back-off: each probe is one connection attempt. All times are readings of the
//! limiter's [`Clock`](infra_common::Clock).
//!
//! A server that answers with an error about the request (out of memory, wrong type) is
//! reachable: that counts as a success here.

use infra_common::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// How many times a failed probe doubles the cool-down, at most (32 × the configured one).
pub(crate) const MAX_BACKOFF_DOUBLINGS: u32 = 5;

/// The breaker's state, shared by every check of one limiter sent to one node (see
/// `node_breakers.rs`).
#[derive(Debug)]
pub(crate) struct Breaker {
    /// Consecutive failures that open the breaker; 0 turns it off.
    threshold: u32,
    /// The first cool-down, in clock nanoseconds.
    cool_down: u64,
    /// Consecutive failures seen while closed.
    failures: AtomicU32,
    /// Zero while closed; otherwise the clock reading until which no check asks Redis.
    open_until: AtomicU64,
    /// Consecutive failed probes, which double the cool-down.
    failed_probes: AtomicU32,
    /// Whether a probe is in flight.
    probing: AtomicBool,
}

/// What the breaker lets a check do.
#[derive(Debug)]
pub(crate) enum Pass<'a> {
    /// Ask Redis.
    Call,
    /// Ask Redis as the one probe; report the outcome through the guard.
    Probe(ProbeGuard<'a>),
    /// Do not ask: the breaker is open.
    Open,
}

/// The one probe in flight. Dropped without an outcome (its check was cancelled), it lets the
/// next check probe instead.
#[derive(Debug)]
pub(crate) struct ProbeGuard<'a> {
    breaker: &'a Breaker,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        self.breaker.probing.store(false, Ordering::Release);
    }
}

impl Breaker {
    /// A breaker opening after `threshold` failures for `cool_down` nanoseconds (0 = off).
    pub(crate) fn new(threshold: u32, cool_down: u64) -> Self {
        Self {
            threshold,
            cool_down: cool_down.max(1),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            failed_probes: AtomicU32::new(0),
            probing: AtomicBool::new(false),
        }
    }

    /// What a check arriving at clock reading `now` may do.
    pub(crate) fn pass(&self, now: u64) -> Pass<'_> {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Pass::Call;
        }
        if now < until {
            return Pass::Open;
        }
        // Exactly one check wins the probe; the flag is cleared by its guard.
        match self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Pass::Probe(ProbeGuard { breaker: self }),
            Err(_) => Pass::Open,
        }
    }

    /// Redis answered (a decision or an error about the request): close.
    pub(crate) fn succeeded(&self) {
        if self.threshold == 0 {
            return;
        }
        self.failures.store(0, Ordering::Relaxed);
        self.failed_probes.store(0, Ordering::Relaxed);
        self.open_until.store(0, Ordering::Release);
    }

    /// Redis could not be reached at clock reading `now`, by the probe if `probe` is given.
    pub(crate) fn failed(&self, now: u64, probe: Option<ProbeGuard<'_>>) {
        if self.threshold == 0 {
            return;
        }
        if let Some(probe) = probe {
            let doublings = self
                .failed_probes
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1)
                .min(MAX_BACKOFF_DOUBLINGS);
            let cool_down = self.cool_down.saturating_mul(1 << doublings);
            self.open_until
                .store(now.saturating_add(cool_down).max(1), Ordering::Release);
            drop(probe);
            return;
        }
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures >= self.threshold {
            // Only the close → open transition: a late failure of a check sent before the
            // breaker opened must not extend a cool-down already running.
            let until = now.saturating_add(self.cool_down).max(1);
            let _ = self
                .open_until
                .compare_exchange(0, until, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    fn is_call(pass: &Pass<'_>) -> bool {
        matches!(pass, Pass::Call)
    }

    #[test]
    fn opens_after_the_threshold_and_lets_exactly_one_probe_through() {
        let breaker = Breaker::new(3, 100);
        for now in 0..2 {
            assert!(is_call(&breaker.pass(now)));
            breaker.failed(now, None);
        }
        // A success in between starts the count again.
        breaker.succeeded();
        for now in 2..5 {
            assert!(is_call(&breaker.pass(now)));
            breaker.failed(now, None);
        }
        // Opened at 4 until 104.
        assert!(matches!(breaker.pass(5), Pass::Open));
        assert!(matches!(breaker.pass(103), Pass::Open));
        let Pass::Probe(probe) = breaker.pass(104) else {
            panic!("the cool-down is over: one probe");
        };
        assert!(matches!(breaker.pass(104), Pass::Open), "only one probe");
        assert!(matches!(breaker.pass(500), Pass::Open), "only one probe");
        // The probe fails at 110: open again for twice the cool-down.
        breaker.failed(110, Some(probe));
        assert!(matches!(breaker.pass(309), Pass::Open));
        let Pass::Probe(probe) = breaker.pass(310) else {
            panic!("second probe");
        };
        drop(probe); // cancelled: the next check probes instead
        let Pass::Probe(_probe) = breaker.pass(311) else {
            panic!("a cancelled probe hands the probe on");
        };
        breaker.succeeded();
        assert!(is_call(&breaker.pass(312)));
    }

    #[test]
    fn failed_probes_double_the_cool_down_up_to_a_cap() {
        let breaker = Breaker::new(1, 10);
        breaker.failed(0, None);
        let mut now = 10;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let Pass::Probe(probe) = breaker.pass(now) else {
                panic!("probe at {now}");
            };
            breaker.failed(now, Some(probe));
            let mut at = now;
            while matches!(breaker.pass(at), Pass::Open) {
                at += 1;
            }
            waits.push(at - now);
            now = at;
        }
        // The guard of the probe found at `at` was dropped by the loop's last `pass`, so
        // every iteration probes again.
        assert_eq!(waits, [20, 40, 80, 160, 320, 320, 320, 320]);
    }

    #[test]
    fn a_late_failure_does_not_extend_an_open_breaker_and_off_means_off() {
        let breaker = Breaker::new(1, 100);
        breaker.failed(0, None);
        breaker.failed(50, None);
        assert!(matches!(breaker.pass(100), Pass::Probe(_)));
        let off = Breaker::new(0, 100);
        for now in 0..10 {
            off.failed(now, None);
            assert!(is_call(&off.pass(now)));
        }
    }
}

/// Model-checked: however checks race when the cool-down ends, at most one probe is in
/// flight at a time.
///
/// `RUSTFLAGS="--cfg infra_loom" cargo test --release -p infra-ratelimit --features redis --lib
/// breaker` (the breaker is internal, so its model lives beside it rather than in
/// `tests/loom.rs`).
#[cfg(all(test, infra_loom))]
mod loom_models {
    use infra_common::sync::{Arc, model, thread};

    use super::*;

    #[test]
    fn at_most_one_probe_is_in_flight() {
        model(|| {
            let breaker = Arc::new(Breaker::new(1, 10));
            breaker.failed(0, None); // open until 10
            let in_flight = Arc::new(AtomicU32::new(0));
            let checks: Vec<_> = (0..2)
                .map(|_| {
                    let (breaker, in_flight) = (Arc::clone(&breaker), Arc::clone(&in_flight));
                    thread::spawn(move || {
                        if let Pass::Probe(probe) = breaker.pass(10) {
                            let others = in_flight.fetch_add(1, Ordering::SeqCst);
                            assert_eq!(others, 0, "two probes at once");
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            drop(probe);
                        }
                    })
                })
                .collect();
            for check in checks {
                check.join().unwrap();
            }
        });
    }
}
