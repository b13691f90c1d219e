//! Concurrency limits: how many requests may be in flight at once, fixed or adaptive.

use std::fmt;
use std::time::Duration;

use infra_common::Clock;
use infra_common::clock::duration_to_nanos;
use infra_common::sync::Mutex;
use infra_common::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::gradient::GradientState;
use crate::{Decision, Error, GradientConfig};

/// Takes one in-flight slot if fewer than `limit` are taken.
fn try_take(in_flight: &AtomicU32, limit: u32) -> Result<u32, u32> {
    // AcqRel/Acquire: a permit's drop releases the slot after the guarded work, and the next
    // holder acquires it, so the slot count orders the work it protects.
    in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
        (taken < limit).then_some(taken + 1)
    })
}

fn denied(limit: u32) -> Decision {
    // A concurrency limit does not know when a slot frees up, only that one may at any moment.
    // Nor when every slot is free, but not before the retry: a zero reset would tell a client
    // reading `RateLimit-Reset` to come back at once.
    Decision::denied(limit, 0, Decision::RETRY_SOON, Decision::RETRY_SOON)
}

/// At most `limit` permits outstanding at once; a permit gives its slot back when dropped.
///
/// Semantics: [`ConcurrencyLimiter::try_acquire`] never waits; it is denied when `limit`
/// permits are held. Lowering the limit below the number held denies new permits until enough
/// are dropped; held permits are never revoked.
///
/// ```
/// use infra_ratelimit::ConcurrencyLimiter;
///
/// let limiter = ConcurrencyLimiter::new(2)?;
/// let a = limiter.try_acquire().unwrap();
/// let _b = limiter.try_acquire().unwrap();
/// assert!(limiter.try_acquire().is_err());
/// drop(a);
/// assert!(limiter.try_acquire().is_ok());
/// # Ok::<(), infra_ratelimit::Error>(())
/// ```
#[derive(Debug)]
pub struct ConcurrencyLimiter {
    in_flight: AtomicU32,
    limit: AtomicU32,
}

/// One in-flight slot of a [`ConcurrencyLimiter`], released on drop.
///
/// Only the drop releases the slot. A permit leaked with [`std::mem::forget`] (or kept alive
/// by a reference cycle) holds its slot for as long as the limiter lives, which from then on
/// admits one request fewer at once: nothing revokes a permit or times it out, since the
/// limiter cannot tell a leaked one from a long request.
///
/// ```
/// use infra_ratelimit::ConcurrencyLimiter;
///
/// let limiter = ConcurrencyLimiter::new(2)?;
/// std::mem::forget(limiter.try_acquire().unwrap());
/// assert_eq!(limiter.in_flight(), 1);
/// let _last = limiter.try_acquire().unwrap();
/// assert!(limiter.try_acquire().is_err()); // the forgotten permit still holds its slot
/// # Ok::<(), infra_ratelimit::Error>(())
/// ```
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct Permit<'a> {
    in_flight: &'a AtomicU32,
}

impl ConcurrencyLimiter {
    /// A limiter admitting `limit` concurrent permits.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroLimit`] when `limit` is zero.
    pub fn new(limit: u32) -> Result<Self, Error> {
        if limit == 0 {
            return Err(Error::ZeroLimit);
        }
        Ok(Self {
            in_flight: AtomicU32::new(0),
            limit: AtomicU32::new(limit),
        })
    }

    /// Takes a slot, or returns the denial (with `limit` and zero remaining).
    ///
    /// # Errors
    ///
    /// The denying [`Decision`] when every slot is taken.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Decision> {
        let limit = self.limit.load(Ordering::Relaxed);
        match try_take(&self.in_flight, limit) {
            Ok(_) => Ok(Permit {
                in_flight: &self.in_flight,
            }),
            Err(_) => Err(denied(limit)),
        }
    }

    /// Permits currently held.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The current limit.
    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Changes the limit; held permits stay valid.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroLimit`] when `limit` is zero.
    pub fn set_limit(&self, limit: u32) -> Result<(), Error> {
        if limit == 0 {
            return Err(Error::ZeroLimit);
        }
        self.limit.store(limit, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

/// Settings of the AIMD (additive increase, multiplicative decrease) adaptive limiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AimdConfig {
    initial: u32,
    min: u32,
    max: u32,
    latency_threshold: Duration,
    backoff_percent: u32,
}

impl AimdConfig {
    /// Start at `initial`, move within `min..=max`, and treat a request slower than
    /// `latency_threshold` as a sign of overload. The backoff factor defaults to 90 %.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroLimit`] when `min` is zero; [`Error::InvalidConfig`] unless
    /// `min ≤ initial ≤ max` and the threshold is positive.
    pub fn new(
        initial: u32,
        min: u32,
        max: u32,
        latency_threshold: Duration,
    ) -> Result<Self, Error> {
        if min == 0 {
            return Err(Error::ZeroLimit);
        }
        if !(min <= initial && initial <= max) {
            return Err(Error::InvalidConfig {
                reason: "AIMD limits must satisfy min <= initial <= max",
            });
        }
        if latency_threshold.is_zero() {
            return Err(Error::InvalidConfig {
                reason: "AIMD latency threshold must be positive",
            });
        }
        Ok(Self {
            initial,
            min,
            max,
            latency_threshold,
            backoff_percent: 90,
        })
    }

    /// On overload the limit becomes `limit × percent / 100` (at least `min`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] unless `1 ≤ percent ≤ 99`.
    pub fn with_backoff_percent(self, percent: u32) -> Result<Self, Error> {
        if !(1..=99).contains(&percent) {
            return Err(Error::InvalidConfig {
                reason: "AIMD backoff must be between 1 and 99 percent",
            });
        }
        Ok(Self {
            backoff_percent: percent,
            ..self
        })
    }
}

/// Settings of the Vegas adaptive limiter (TCP Vegas's queue estimate applied to requests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VegasConfig {
    initial: u32,
    min: u32,
    max: u32,
    alpha: u32,
    beta: u32,
    backoff_percent: u32,
}

impl VegasConfig {
    /// Start at `initial` and move within `min..=max`; queue thresholds default to α = 3 and
    /// β = 6 requests, the overload backoff to 90 %.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroLimit`] when `min` is zero; [`Error::InvalidConfig`] unless
    /// `min ≤ initial ≤ max`.
    pub fn new(initial: u32, min: u32, max: u32) -> Result<Self, Error> {
        if min == 0 {
            return Err(Error::ZeroLimit);
        }
        if !(min <= initial && initial <= max) {
            return Err(Error::InvalidConfig {
                reason: "Vegas limits must satisfy min <= initial <= max",
            });
        }
        Ok(Self {
            initial,
            min,
            max,
            alpha: 3,
            beta: 6,
            backoff_percent: 90,
        })
    }

    /// Grow while fewer than `alpha` requests seem queued, shrink while more than `beta` do.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] unless `alpha < beta`.
    pub fn with_thresholds(self, alpha: u32, beta: u32) -> Result<Self, Error> {
        if alpha >= beta {
            return Err(Error::InvalidConfig {
                reason: "Vegas thresholds must satisfy alpha < beta",
            });
        }
        Ok(Self {
            alpha,
            beta,
            ..self
        })
    }

    /// On overload the limit becomes `limit × percent / 100` (at least `min`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] unless `1 ≤ percent ≤ 99`.
    pub fn with_backoff_percent(self, percent: u32) -> Result<Self, Error> {
        if !(1..=99).contains(&percent) {
            return Err(Error::InvalidConfig {
                reason: "Vegas backoff must be between 1 and 99 percent",
            });
        }
        Ok(Self {
            backoff_percent: percent,
            ..self
        })
    }
}

/// How an adaptive limiter moves its limit.
#[derive(Debug)]
enum Control {
    Aimd(AimdConfig),
    Vegas {
        config: VegasConfig,
        /// The smallest nonzero latency seen since the last baseline reset, in nanoseconds.
        min_latency: AtomicU64,
    },
    Gradient {
        config: GradientConfig,
        /// The averages and the current round trip's answers. A lock, not atomics: an update
        /// reads and rewrites all of it, and must see every answer counted before it exactly
        /// once. Only reports take it; `try_acquire` never does.
        state: Mutex<GradientState>,
    },
}

/// A concurrency limit that follows the service's health: AIMD on observed latency and errors,
/// or Vegas, or Gradient.
///
/// Each permit reports how its request went: [`AdaptivePermit::success`] measures the latency
/// with the limiter's clock; a latency above the threshold, or [`AdaptivePermit::overloaded`]
/// (a timeout, a 503, a dropped connection), multiplies the limit by the backoff factor (90 %
/// by default). Every `limit` fast successes raise the limit by one (additive increase: about
/// +1 per round trip of the whole window, as TCP congestion control). The limit stays within
/// `min..=max`. A permit dropped without a report gives back its slot and says nothing.
///
/// Two rules keep the limit honest, as in Netflix's concurrency-limits:
///
/// - **It grows only while used.** A success counts towards an increase only if at least half
///   the limit was in flight when its request was sent (the permit itself included): a limiter
///   that sees one request at a time learns nothing about how many more the service could take,
///   so an idle service's limit does not creep up to `max`.
/// - **One cut per round trip.** Only a request sent since the last cut may cut the limit again.
///   Requests that were in flight together report the same overload: ten timeouts at once cut
///   the limit once, not ten times (0.9, not 0.9^10). A request sent after the cut comes back
///   about one round trip later and may cut again if the overload persists.
///
/// [`AdaptiveConcurrencyLimiter::gradient`] moves it with Netflix's Gradient2 rule (see
/// [`GradientConfig`] and the limiter's constructor): once per round trip, by the ratio of a
/// long-term latency average to the round trip's average, plus a small queue allowance while
/// latency is not rising.
///
/// [`AdaptiveConcurrencyLimiter::vegas`] moves the limit with TCP Vegas's rule instead: from the
/// smallest nonzero latency seen (the no-queue baseline) and each request's latency, it
/// estimates how many requests are queued, `limit × (latency − baseline) / latency`, and adds
/// one to the limit while fewer than α are queued (and the limit is in use), removes one while
/// more than β are. Like Vegas's update per sample window, it changes the limit at most once per
/// round trip: only an answer to a request sent since the last change (or cut) may change it,
/// so requests answered together move it by one, not one each. An overload report is the
/// exception: it cuts unless a cut came since its request was sent, since a fast answer that
/// raised the limit says nothing against the timeouts of the same round trip. It reacts to
/// queues before they turn into timeouts, without a hand-picked threshold. The baseline is the
/// smallest nonzero latency since creation or [`AdaptiveConcurrencyLimiter::reset_baseline`]:
/// reset it when the service's normal latency is known to have changed.
///
/// ```
/// use infra_common::ManualClock;
/// use infra_ratelimit::{AdaptiveConcurrencyLimiter, AimdConfig};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let config = AimdConfig::new(10, 1, 100, Duration::from_millis(50))?;
/// let limiter = AdaptiveConcurrencyLimiter::new(config, clock.clone());
/// let permit = limiter.try_acquire().unwrap();
/// clock.advance(Duration::from_millis(200)); // too slow
/// permit.success();
/// assert_eq!(limiter.limit(), 9);
/// # Ok::<(), infra_ratelimit::Error>(())
/// ```
pub struct AdaptiveConcurrencyLimiter<C: Clock> {
    in_flight: AtomicU32,
    limit: AtomicU32,
    fast_successes: AtomicU32,
    /// Counts the cuts of the limit (Vegas and Gradient: every change; Vegas counts its cuts
    /// in units of [`VEGAS_CUT`], its increases in ones). A permit remembers the value it was
    /// taken under, and only a report from a permit taken since the last cut may cut again:
    /// one cut per round trip.
    cuts: AtomicU64,
    control: Control,
    clock: C,
}

/// What a Vegas cut adds to the change count; an increase adds one. A timeout cuts if no cut
/// happened since its request was sent, whatever increases did: an increase in the round
/// trip's count would otherwise hide its overload. After 2^32 increases they carry into the
/// cuts' part, which at worst makes one timeout look sent before a cut.
const VEGAS_CUT: u64 = 1 << 32;

/// One in-flight slot of an [`AdaptiveConcurrencyLimiter`]; report the outcome, or drop it.
///
/// Reporting or dropping releases the slot. A permit leaked with [`std::mem::forget`] holds
/// its slot for as long as the limiter lives: nothing revokes a permit or times it out, since
/// the limiter cannot tell a leaked one from a long request.
///
/// ```
/// use infra_common::ManualClock;
/// use infra_ratelimit::{AdaptiveConcurrencyLimiter, AimdConfig};
/// use std::time::Duration;
///
/// let config = AimdConfig::new(2, 1, 10, Duration::from_millis(100))?;
/// let limiter = AdaptiveConcurrencyLimiter::new(config, ManualClock::new());
/// std::mem::forget(limiter.try_acquire().unwrap());
/// assert_eq!(limiter.in_flight(), 1);
/// let _last = limiter.try_acquire().unwrap();
/// assert!(limiter.try_acquire().is_err()); // the forgotten permit still holds its slot
/// # Ok::<(), infra_ratelimit::Error>(())
/// ```
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct AdaptivePermit<'a, C: Clock> {
    limiter: &'a AdaptiveConcurrencyLimiter<C>,
    started: u64,
    /// Permits held, this one included, when it was taken.
    in_flight: u32,
    /// The limiter's cut count when it was taken.
    cuts: u64,
}

impl<C: Clock> AdaptiveConcurrencyLimiter<C> {
    /// An AIMD limiter starting at the configured initial limit.
    pub fn new(config: AimdConfig, clock: C) -> Self {
        Self::with_control(config.initial, Control::Aimd(config), clock)
    }

    /// A Vegas limiter starting at the configured initial limit.
    ///
    /// ```
    /// use infra_common::ManualClock;
    /// use infra_ratelimit::{AdaptiveConcurrencyLimiter, VegasConfig};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let limiter = AdaptiveConcurrencyLimiter::vegas(VegasConfig::new(10, 1, 100)?, clock.clone());
    /// // Six requests at once, answered in 10 ms: the baseline. The last two were sent with at
    /// // least half the limit in flight; the first of them to be answered grows the limit by
    /// // one, once for the round trip.
    /// let permits: Vec<_> = (0..6).map(|_| limiter.try_acquire().unwrap()).collect();
    /// clock.advance(Duration::from_millis(10));
    /// permits.into_iter().for_each(|permit| permit.success());
    /// assert_eq!(limiter.limit(), 11);
    /// // An answer at 4× the baseline: about 8 requests look queued, more than β = 6.
    /// let permit = limiter.try_acquire().unwrap();
    /// clock.advance(Duration::from_millis(40));
    /// permit.success();
    /// assert_eq!(limiter.limit(), 10);
    /// # Ok::<(), infra_ratelimit::Error>(())
    /// ```
    pub fn vegas(config: VegasConfig, clock: C) -> Self {
        let control = Control::Vegas {
            config,
            min_latency: AtomicU64::new(u64::MAX),
        };
        Self::with_control(config.initial, control, clock)
    }

    /// A Gradient limiter starting at the configured initial limit.
    ///
    /// Once per round trip (at the first answer to a request sent after the previous update,
    /// once an answer's latency was measured, not zero), the limit moves by `gradient = long /
    /// short`, clamped to `0.5..=1`, where `short` is the mean latency of the measured answers
    /// since the previous update and `long` an exponential average
    /// of those means over the configured long window (each taken as at most twice `long`, so
    /// that one request that hung for hours cannot hold the gradient at 1 for long; the first
    /// mean seeds it as it is): `limit + smoothing × (limit × gradient +
    /// queue − limit)`, with the queue allowance only while `gradient = 1`. It grows only
    /// while the limit is in use; an overload report cuts it by the backoff factor, once per
    /// round trip, as AIMD does. It learns from changes in latency, not from a no-load
    /// baseline: a limit already far above what the service takes when it starts is not
    /// brought down until latency rises further or requests time out (report those with
    /// [`AdaptivePermit::overloaded`]).
    ///
    /// ```
    /// use infra_common::ManualClock;
    /// use infra_ratelimit::{AdaptiveConcurrencyLimiter, GradientConfig};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let config = GradientConfig::new(10, 1, 100)?.with_smoothing_percent(100)?;
    /// let limiter = AdaptiveConcurrencyLimiter::gradient(config, clock.clone());
    /// // Send as many requests as the limit allows, and answer them all after `millis`.
    /// let round_trip = |millis| {
    ///     let permits: Vec<_> = (0..limiter.limit()).map(|_| limiter.try_acquire().unwrap()).collect();
    ///     clock.advance(Duration::from_millis(millis));
    ///     permits.into_iter().for_each(|permit| permit.success());
    /// };
    /// // A round trip ends when the first request sent after it comes back, so each update
    /// // weighs the answers of the round trip before. At a steady 10 ms nothing queues: the
    /// // limit grows by the queue allowance (4).
    /// round_trip(10);
    /// round_trip(10);
    /// assert_eq!(limiter.limit(), 14);
    /// // Latency doubles: the long-term average barely moves, the gradient is about 0.5.
    /// round_trip(20);
    /// round_trip(20);
    /// assert_eq!(limiter.limit(), 6);
    /// # Ok::<(), infra_ratelimit::Error>(())
    /// ```
    pub fn gradient(config: GradientConfig, clock: C) -> Self {
        let control = Control::Gradient {
            config,
            state: Mutex::new(GradientState::new(&config)),
        };
        Self::with_control(config.initial, control, clock)
    }

    fn with_control(initial: u32, control: Control, clock: C) -> Self {
        Self {
            in_flight: AtomicU32::new(0),
            limit: AtomicU32::new(initial),
            fast_successes: AtomicU32::new(0),
            cuts: AtomicU64::new(0),
            control,
            clock,
        }
    }

    /// Forgets the Vegas latency baseline; the next answer with a nonzero latency sets it again.
    /// No effect on AIMD or Gradient.
    pub fn reset_baseline(&self) {
        if let Control::Vegas { min_latency, .. } = &self.control {
            min_latency.store(u64::MAX, Ordering::Relaxed);
        }
    }

    /// `(min, max, backoff percent)` of any control.
    fn bounds(&self) -> (u32, u32, u32) {
        match &self.control {
            Control::Aimd(c) => (c.min, c.max, c.backoff_percent),
            Control::Vegas { config: c, .. } => (c.min, c.max, c.backoff_percent),
            Control::Gradient { config: c, .. } => (c.min, c.max, c.backoff_percent),
        }
    }

    /// Whether the limit was in use when a request was sent: at least half of it in flight, as
    /// Netflix's concurrency-limits requires before growing. A limit that is not used says
    /// nothing about how much more the service could take.
    fn was_in_use(&self, in_flight: u32) -> bool {
        u64::from(in_flight) * 2 >= u64::from(self.limit())
    }

    fn record_success(&self, permit: &AdaptivePermit<'_, C>, latency: u64) {
        match &self.control {
            Control::Aimd(config) => {
                if latency > duration_to_nanos(config.latency_threshold) {
                    self.decrease(permit.cuts);
                } else if self.was_in_use(permit.in_flight) {
                    self.increase();
                }
            }
            // Below the clock's resolution: no measurement (see `AdaptivePermit::success`). As
            // the baseline it would make every later answer look fully queued.
            Control::Vegas { .. } if latency == 0 => {}
            Control::Vegas {
                config,
                min_latency,
            } => {
                let baseline = min_latency
                    .fetch_min(latency, Ordering::Relaxed)
                    .min(latency);
                let limit = self.limit();
                let queued =
                    u128::from(limit) * u128::from(latency - baseline) / u128::from(latency);
                let (min, max, _) = self.bounds();
                // Either way once per round trip, as Vegas updates once per sample window: the
                // answers to requests sent together report one queue, and adding one per fast
                // answer would grow the limit by up to half of it per round trip.
                let unchanged =
                    |by: u64| move |cuts: u64| (cuts == permit.cuts).then_some(cuts + by);
                if queued > u128::from(config.beta) {
                    self.change(unchanged(VEGAS_CUT), |limit| {
                        limit.saturating_sub(1).max(min)
                    });
                } else if queued < u128::from(config.alpha) && self.was_in_use(permit.in_flight) {
                    self.change(unchanged(1), |limit| limit.saturating_add(1).min(max));
                }
            }
            Control::Gradient { config, state } => {
                let mut state = state.lock();
                state.answer(latency, self.was_in_use(permit.in_flight));
                // A request sent before the last update belongs to the round trip that update
                // opened; the first one sent after it closes that round trip, once the round
                // trip has a measured latency (until then it stays open). Decided under the
                // lock, so each round trip is closed once, with every answer counted before.
                if permit.cuts == self.cuts.load(Ordering::Acquire) && state.measured() {
                    self.limit.store(state.update(config), Ordering::Relaxed);
                    self.cuts.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// Takes a slot, or returns the denial.
    ///
    /// # Errors
    ///
    /// The denying [`Decision`] when `limit` permits are held.
    pub fn try_acquire(&self) -> Result<AdaptivePermit<'_, C>, Decision> {
        let limit = self.limit();
        match try_take(&self.in_flight, limit) {
            Ok(before) => Ok(AdaptivePermit {
                limiter: self,
                started: self.clock.now_nanos(),
                in_flight: before + 1,
                cuts: self.cuts.load(Ordering::Acquire),
            }),
            Err(_) => Err(denied(limit)),
        }
    }

    /// The current limit.
    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Permits currently held.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Multiplies the limit by the backoff factor, once per round trip (see [`Self::change`]).
    fn decrease(&self, cuts_seen: u64) {
        let (min, _, backoff_percent) = self.bounds();
        let lower = |limit: u32| {
            let lowered = u64::from(limit) * u64::from(backoff_percent) / 100;
            u32::try_from(lowered).unwrap_or(limit).max(min)
        };
        if let Control::Gradient { config, state } = &self.control {
            // Under the state's lock, like every Gradient update: the cut also starts a new
            // round trip, dropping the answers of the overloaded one. Only a cut since the
            // request was sent makes its timeout the same overload: a round trip a fast answer
            // ended does not hide the timeouts of the requests sent with it.
            let mut state = state.lock();
            if cuts_seen >= state.cut_opened() {
                let opened = self.cuts.load(Ordering::Acquire) + 1;
                let limit = state.cut_to(lower(self.limit()), opened, config);
                self.limit.store(limit, Ordering::Relaxed);
                self.cuts.fetch_add(1, Ordering::AcqRel);
            }
            return;
        }
        if let Control::Vegas { .. } = &self.control {
            // An overload whatever the round trip's earlier answers did: only a cut since the
            // request was sent makes it the same overload.
            let uncut = |cuts: u64| cuts / VEGAS_CUT == cuts_seen / VEGAS_CUT;
            self.change(|cuts| uncut(cuts).then_some(cuts + VEGAS_CUT), lower);
            return;
        }
        self.change(|cuts| (cuts == cuts_seen).then_some(cuts + 1), lower);
    }

    /// Applies `change` to the limit if `next` allows it: given the change count, it returns
    /// the count after this change, or `None` if a cut (or Vegas change) happened since the
    /// reporting permit was taken.
    ///
    /// The requests in flight when the limit was cut were sent under the old limit: their
    /// timeouts report the same overload, so N of them at once cut once, not N times (TCP's
    /// one reduction per window). The first permit taken after a cut comes back one round trip
    /// later and may cut again.
    fn change(&self, next: impl Fn(u64) -> Option<u64>, change: impl Fn(u32) -> u32) {
        if self
            .cuts
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, next)
            .is_err()
        {
            return;
        }
        let _ = self
            .limit
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |limit| {
                Some(change(limit))
            });
        self.fast_successes.store(0, Ordering::Relaxed);
    }

    fn increase(&self) {
        // The success that completes the window starts the next one in the same update, so
        // successes reported together complete it once: counted and reset apart, each of them
        // could see the window complete and add one.
        let limit = self.limit();
        let completed = self
            .fast_successes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |seen| {
                Some(if seen + 1 >= limit { 0 } else { seen + 1 })
            })
            .is_ok_and(|seen| seen + 1 >= limit);
        if completed {
            let (_, max, _) = self.bounds();
            let _ = self
                .limit
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |limit| {
                    Some(limit.saturating_add(1).min(max))
                });
        }
    }
}

impl<C: Clock> fmt::Debug for AdaptiveConcurrencyLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveConcurrencyLimiter")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .field("control", &self.control)
            .finish_non_exhaustive()
    }
}

impl<C: Clock> AdaptivePermit<'_, C> {
    /// The request succeeded; its latency (measured since the permit was taken) moves the
    /// limit (AIMD: against the threshold; Vegas: against the baseline; Gradient: against the
    /// long-term average, at the end of a round trip).
    ///
    /// A latency of zero means the limiter's clock did not tick during the request (on a
    /// [`CoarseClock`](infra_common::CoarseClock), any request faster than its precision): it is
    /// below what the clock can measure, so Vegas and Gradient take it as no measurement. Vegas
    /// neither takes it as its baseline nor moves the limit; Gradient leaves it out of the round
    /// trip's mean (it still counts for whether the limit was in use), and a round trip with no
    /// measured answer does not end. AIMD counts it as fast. Give Vegas and Gradient a clock
    /// much finer than the service's latency, such as `SystemClock`: on a coarse one, answers
    /// of a few ticks give them a coarse queue estimate.
    pub fn success(self) {
        let latency = self.limiter.clock.now_nanos().saturating_sub(self.started);
        self.limiter.record_success(&self, latency);
    }

    /// The request failed in a way that signals overload (timeout, 503, connection dropped).
    pub fn overloaded(self) {
        self.limiter.decrease(self.cuts);
    }
}

impl<C: Clock> Drop for AdaptivePermit<'_, C> {
    fn drop(&mut self) {
        self.limiter.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<C: Clock> fmt::Debug for AdaptivePermit<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptivePermit")
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use infra_common::ManualClock;
    use proptest::prelude::*;

    /// `n` requests sent together, all answered `answer` `after` later.
    fn together<'l>(
        limiter: &'l AdaptiveConcurrencyLimiter<ManualClock>,
        clock: &ManualClock,
        n: usize,
        after: Duration,
        answer: fn(AdaptivePermit<'l, ManualClock>),
    ) {
        let held: Vec<_> = (0..n).map(|_| limiter.try_acquire().unwrap()).collect();
        clock.advance(after);
        held.into_iter().for_each(answer);
    }

    /// `rounds` requests one after another, each answered successfully `after` it was sent.
    fn one_at_a_time(
        limiter: &AdaptiveConcurrencyLimiter<ManualClock>,
        clock: &ManualClock,
        rounds: usize,
        after: Duration,
    ) {
        for _ in 0..rounds {
            together(limiter, clock, 1, after, AdaptivePermit::success);
        }
    }

    #[test]
    fn permits_are_released_on_drop_and_limits_change() {
        let limiter = ConcurrencyLimiter::new(1).unwrap();
        let permit = limiter.try_acquire().unwrap();
        let denied = limiter.try_acquire().unwrap_err();
        assert_eq!((denied.limit(), denied.remaining()), (1, 0));
        limiter.set_limit(2).unwrap();
        let second = limiter.try_acquire().unwrap();
        assert_eq!(limiter.in_flight(), 2);
        drop((permit, second));
        assert_eq!(limiter.in_flight(), 0);
        assert_eq!(limiter.set_limit(0), Err(Error::ZeroLimit));
        assert!(ConcurrencyLimiter::new(0).is_err());
    }

    /// A slot may free at any moment, so a refusal says to retry soon; a zero would have an
    /// obedient caller retry at once, in a loop.
    #[test]
    fn refusals_say_retry_soon_never_at_once() {
        let fixed = ConcurrencyLimiter::new(1).unwrap();
        let _held = fixed.try_acquire().unwrap();
        let denied = fixed.try_acquire().unwrap_err();
        assert_eq!(denied.retry_after(), Decision::RETRY_SOON);

        let config = AimdConfig::new(1, 1, 1, Duration::from_millis(10)).unwrap();
        let adaptive = AdaptiveConcurrencyLimiter::new(config, ManualClock::new());
        let _held = adaptive.try_acquire().unwrap();
        let Err(denied) = adaptive.try_acquire() else {
            panic!("the one slot is held");
        };
        assert_eq!(denied.retry_after(), Decision::RETRY_SOON);
    }

    /// A refusal's legacy headers never say the limit is back before the client may retry:
    /// `RateLimit-Reset: 0` beside `Retry-After: 1` tells a client reading the former to come
    /// back at once.
    #[test]
    fn a_refusal_never_says_the_limit_is_back_before_its_retry() {
        let fixed = ConcurrencyLimiter::new(1).unwrap();
        let _held = fixed.try_acquire().unwrap();
        let denied = fixed.try_acquire().unwrap_err();
        let config = AimdConfig::new(1, 1, 1, Duration::from_millis(10)).unwrap();
        let adaptive = AdaptiveConcurrencyLimiter::new(config, ManualClock::new());
        let _held = adaptive.try_acquire().unwrap();
        let Err(adaptive_denied) = adaptive.try_acquire() else {
            panic!("the one slot is held");
        };
        for denied in [denied, adaptive_denied] {
            assert!(denied.reset_after() >= denied.retry_after(), "{denied:?}");
            let headers: Vec<_> = denied.headers().collect();
            assert_eq!(
                headers,
                [
                    ("RateLimit-Limit", 1),
                    ("RateLimit-Remaining", 0),
                    ("RateLimit-Reset", 1),
                    ("Retry-After", 1)
                ]
            );
        }
    }

    #[test]
    fn aimd_grows_additively_and_shrinks_multiplicatively() {
        let clock = ManualClock::new();
        let config = AimdConfig::new(4, 2, 5, Duration::from_millis(10))
            .unwrap()
            .with_backoff_percent(50)
            .unwrap();
        let limiter = AdaptiveConcurrencyLimiter::new(config, clock.clone());
        // Requests sent with two or more of four in flight use the limit: four fast answers to
        // them raise it by one.
        for _ in 0..2 {
            together(&limiter, &clock, 4, Duration::ZERO, AdaptivePermit::success);
        }
        assert_eq!(limiter.limit(), 5);
        for _ in 0..10 {
            together(&limiter, &clock, 3, Duration::ZERO, AdaptivePermit::success);
        }
        assert_eq!(limiter.limit(), 5, "capped at max");
        limiter.try_acquire().unwrap().overloaded();
        assert_eq!(limiter.limit(), 2);
        limiter.try_acquire().unwrap().overloaded();
        assert_eq!(limiter.limit(), 2, "floored at min");
        let held: Vec<_> = (0..2).map(|_| limiter.try_acquire().unwrap()).collect();
        assert!(limiter.try_acquire().is_err());
        drop(held);
        assert_eq!(limiter.in_flight(), 0);
    }

    #[test]
    fn concurrent_overload_reports_cut_the_limit_once_per_round_trip() {
        let clock = ManualClock::new();
        let config = AimdConfig::new(100, 1, 200, Duration::from_millis(10)).unwrap();
        let aimd = AdaptiveConcurrencyLimiter::new(config, clock.clone());
        let vegas = AdaptiveConcurrencyLimiter::vegas(
            VegasConfig::new(100, 1, 200).unwrap(),
            clock.clone(),
        );
        for limiter in [&aimd, &vegas] {
            let held: Vec<_> = (0..10).map(|_| limiter.try_acquire().unwrap()).collect();
            clock.advance(Duration::from_millis(5));
            // Ten requests sent under one limit time out together: one cut, not 0.9^10.
            held.into_iter().for_each(AdaptivePermit::overloaded);
            assert_eq!(limiter.limit(), 90);
            // A request sent after the cut reports a new overload: the next cut.
            together(
                limiter,
                &clock,
                3,
                Duration::ZERO,
                AdaptivePermit::overloaded,
            );
            assert_eq!(limiter.limit(), 81);
        }
        // A slow answer is AIMD's overload signal, with the same rule.
        together(
            &aimd,
            &clock,
            4,
            Duration::from_millis(50),
            AdaptivePermit::success,
        );
        assert_eq!(aimd.limit(), 72);
    }

    #[test]
    fn a_limit_that_is_not_used_does_not_grow() {
        let clock = ManualClock::new();
        let config = AimdConfig::new(10, 1, 1_000, Duration::from_millis(10)).unwrap();
        let aimd = AdaptiveConcurrencyLimiter::new(config, clock.clone());
        let vegas = AdaptiveConcurrencyLimiter::vegas(
            VegasConfig::new(10, 1, 1_000).unwrap(),
            clock.clone(),
        );
        for limiter in [&aimd, &vegas] {
            // One request at a time, all fast: the service is never asked for more than one.
            one_at_a_time(limiter, &clock, 1_000, Duration::from_millis(1));
            assert_eq!(limiter.limit(), 10);
            // Half the limit in flight at once: now it grows.
            together(
                limiter,
                &clock,
                5,
                Duration::from_millis(1),
                AdaptivePermit::success,
            );
        }
        assert_eq!(
            vegas.limit(),
            11,
            "one answer sent with half the limit in flight"
        );
        for _ in 0..2 {
            together(&aimd, &clock, 10, Duration::ZERO, AdaptivePermit::success);
        }
        assert_eq!(aimd.limit(), 11, "ten answers sent with the limit in use");
    }

    /// What a test does with the permits it holds.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        Acquire,
        /// Release permit `i` (modulo the held ones) after `millis`, reporting success.
        Success(usize, u64),
        Overloaded(usize),
        Drop(usize),
    }

    // proptest's `prop_oneof!` expands to `std::sync::Arc`; this test-only strategy is not loom code.
    #[allow(clippy::disallowed_types)]
    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => Just(Step::Acquire),
            2 => (any::<usize>(), 0u64..40).prop_map(|(i, ms)| Step::Success(i, ms)),
            1 => any::<usize>().prop_map(Step::Overloaded),
            1 => any::<usize>().prop_map(Step::Drop),
        ]
    }

    proptest! {
        #[test]
        fn concurrency_limiter_matches_a_counter(
            limit in 1u32..6,
            steps in proptest::collection::vec(step(), 0..60),
        ) {
            let limiter = ConcurrencyLimiter::new(limit).unwrap();
            let mut held = Vec::new();
            for step in steps {
                match step {
                    Step::Acquire => {
                        let admitted = limiter.try_acquire();
                        prop_assert_eq!(admitted.is_ok(), held.len() < limit as usize);
                        if let Ok(permit) = admitted {
                            held.push(permit);
                        }
                    }
                    Step::Success(i, _) | Step::Overloaded(i) | Step::Drop(i) => {
                        if !held.is_empty() {
                            drop(held.swap_remove(i % held.len()));
                        }
                    }
                }
                prop_assert_eq!(limiter.in_flight() as usize, held.len());
            }
        }

        #[test]
        fn aimd_matches_its_model(
            (initial, min, max) in (1u32..5, 1u32..5, 5u32..12)
                .prop_map(|(a, b, c)| (a.max(b), a.min(b), c)),
            backoff in 10u32..95,
            steps in proptest::collection::vec(step(), 0..80),
        ) {
            let clock = ManualClock::new();
            let threshold = Duration::from_millis(20);
            let config = AimdConfig::new(initial, min, max, threshold)
                .unwrap()
                .with_backoff_percent(backoff)
                .unwrap();
            let limiter = AdaptiveConcurrencyLimiter::new(config, clock.clone());
            // The model: the limit, fast successes since the last change, the number of cuts,
            // and each held permit with the time it was taken, the permits held then (itself
            // included) and the cuts made before it.
            let (mut limit, mut fast, mut cuts) = (initial, 0u32, 0u64);
            let mut held = Vec::new();
            for step in steps {
                match step {
                    Step::Acquire => {
                        let admitted = limiter.try_acquire();
                        prop_assert_eq!(admitted.is_ok(), (held.len() as u32) < limit);
                        if let Ok(permit) = admitted {
                            held.push((permit, clock.now_nanos(), held.len() as u32 + 1, cuts));
                        }
                    }
                    Step::Success(i, millis) if !held.is_empty() => {
                        clock.advance(Duration::from_millis(millis));
                        let (permit, started, in_flight, seen) = held.swap_remove(i % held.len());
                        permit.success();
                        if clock.now_nanos() - started > 20_000_000 {
                            if seen == cuts {
                                limit = (limit * backoff / 100).max(min);
                                fast = 0;
                                cuts += 1;
                            }
                        } else if in_flight * 2 >= limit {
                            fast += 1;
                            if fast >= limit {
                                limit = (limit + 1).min(max);
                                fast = 0;
                            }
                        }
                    }
                    Step::Overloaded(i) if !held.is_empty() => {
                        let (permit, _, _, seen) = held.swap_remove(i % held.len());
                        permit.overloaded();
                        if seen == cuts {
                            limit = (limit * backoff / 100).max(min);
                            fast = 0;
                            cuts += 1;
                        }
                    }
                    Step::Drop(i) if !held.is_empty() => drop(held.swap_remove(i % held.len())),
                    _ => {}
                }
                prop_assert_eq!(limiter.limit(), limit);
                prop_assert_eq!(limiter.in_flight() as usize, held.len());
            }
        }
    }

    proptest! {
        #[test]
        fn vegas_matches_its_model(
            (initial, min, max) in (1u32..8, 1u32..8, 8u32..20)
                .prop_map(|(a, b, c)| (a.max(b), a.min(b), c)),
            steps in proptest::collection::vec(step(), 0..80),
        ) {
            let clock = ManualClock::new();
            let config = VegasConfig::new(initial, min, max).unwrap().with_thresholds(2, 4).unwrap();
            let limiter = AdaptiveConcurrencyLimiter::vegas(config, clock.clone());
            let (mut limit, mut baseline) = (u64::from(initial), u64::MAX);
            // Changes of the limit either way, and cuts among them.
            let (mut changes, mut cuts) = (0u64, 0u64);
            let mut held = Vec::new();
            for step in steps {
                match step {
                    Step::Acquire => {
                        let admitted = limiter.try_acquire();
                        prop_assert_eq!(admitted.is_ok(), (held.len() as u64) < limit);
                        if let Ok(permit) = admitted {
                            let seen = (changes, cuts);
                            held.push((permit, clock.now_nanos(), held.len() as u64 + 1, seen));
                        }
                    }
                    Step::Success(i, millis) if !held.is_empty() => {
                        clock.advance(Duration::from_millis(millis));
                        let (permit, started, in_flight, seen) = held.swap_remove(i % held.len());
                        permit.success();
                        // A latency of zero is no measurement: no baseline, no change.
                        let latency = clock.now_nanos() - started;
                        if latency > 0 {
                            baseline = baseline.min(latency);
                        }
                        let queued = (latency > 0).then(|| limit * (latency - baseline) / latency);
                        // One change per round trip: only a request sent since the last one
                        // may make the next, up or down.
                        let next = match queued {
                            None => None,
                            Some(queued) if queued > 4 => {
                                Some(((limit - 1).max(u64::from(min)), true))
                            }
                            Some(queued) if queued < 2 && in_flight * 2 >= limit => {
                                Some(((limit + 1).min(u64::from(max)), false))
                            }
                            Some(_) => None,
                        };
                        if let Some((next, cut)) = next && seen == (changes, cuts) {
                            limit = next;
                            changes += 1;
                            cuts += u64::from(cut);
                        }
                    }
                    // A timeout cuts unless a cut came since its request was sent, whatever
                    // increases did.
                    Step::Overloaded(i) if !held.is_empty() => {
                        let (permit, _, _, (_, seen_cuts)) = held.swap_remove(i % held.len());
                        permit.overloaded();
                        if seen_cuts == cuts {
                            limit = (limit * 90 / 100).max(u64::from(min));
                            changes += 1;
                            cuts += 1;
                        }
                    }
                    Step::Drop(i) if !held.is_empty() => drop(held.swap_remove(i % held.len())),
                    _ => {}
                }
                prop_assert_eq!(u64::from(limiter.limit()), limit);
            }
        }
    }

    /// Vegas moves the limit once per round trip, as its per-window update does: the answers
    /// to requests sent together are one sample window, and only a request sent after the
    /// change can change it again.
    #[test]
    fn vegas_changes_the_limit_once_per_round_trip() {
        let clock = ManualClock::new();
        let config = VegasConfig::new(10, 1, 100).unwrap();
        let limiter = AdaptiveConcurrencyLimiter::vegas(config, clock.clone());
        let fast = Duration::from_millis(10);
        // Ten requests with the limit in use, answered at the baseline: one more, not six.
        together(&limiter, &clock, 10, fast, AdaptivePermit::success);
        assert_eq!(limiter.limit(), 11);
        together(&limiter, &clock, 11, fast, AdaptivePermit::success);
        assert_eq!(limiter.limit(), 12);
        // Twelve answers at four times the baseline, 9 queued (more than β = 6): one less.
        let slow = Duration::from_millis(40);
        together(&limiter, &clock, 12, slow, AdaptivePermit::success);
        assert_eq!(limiter.limit(), 11);
        // The next round trip's first answer decides for it, whatever the later ones say.
        let held: Vec<_> = (0..11).map(|_| limiter.try_acquire().unwrap()).collect();
        clock.advance(fast);
        let mut held = held.into_iter().rev();
        held.next().unwrap().success();
        assert_eq!(limiter.limit(), 12);
        clock.advance(slow);
        held.for_each(AdaptivePermit::success);
        assert_eq!(limiter.limit(), 12);
    }

    /// A request answered before the clock ticks reads a latency of zero (on a `CoarseClock`,
    /// any request faster than its precision): no measurement, and above all not a baseline,
    /// against which every later answer would look fully queued.
    #[test]
    fn vegas_takes_no_baseline_from_an_answer_faster_than_the_clock_ticks() {
        let clock = ManualClock::new();
        let config = VegasConfig::new(10, 1, 100).unwrap();
        let limiter = AdaptiveConcurrencyLimiter::vegas(config, clock.clone());
        together(
            &limiter,
            &clock,
            10,
            Duration::ZERO,
            AdaptivePermit::success,
        );
        // The service answers in one tick, with nothing queued and the limit in use: one more
        // per round trip.
        for _ in 0..5 {
            let limit = limiter.limit() as usize;
            together(
                &limiter,
                &clock,
                limit,
                Duration::from_millis(1),
                AdaptivePermit::success,
            );
        }
        assert_eq!(limiter.limit(), 15);
    }

    /// A service faster than the clock's tick: half of its answers read zero latency, the
    /// others one tick. The zero readings measure nothing, so every round trip's mean is one
    /// tick, steady, and the limit grows by the queue allowance.
    #[test]
    fn gradient_leaves_answers_faster_than_the_clock_ticks_out_of_its_means() {
        let clock = ManualClock::new();
        let config = GradientConfig::new(10, 1, 100).unwrap();
        let limiter = AdaptiveConcurrencyLimiter::gradient(config, clock.clone());
        let mut limits = vec![limiter.limit()];
        for _ in 0..20 {
            let sent = limiter.limit() as usize;
            let held: Vec<_> = (0..sent).map(|_| limiter.try_acquire().unwrap()).collect();
            let mut held = held.into_iter();
            held.by_ref()
                .take(sent / 2)
                .for_each(AdaptivePermit::success);
            clock.advance(Duration::from_millis(1));
            held.for_each(AdaptivePermit::success);
            limits.push(limiter.limit());
        }
        assert!(limits.windows(2).all(|w| w[0] <= w[1]), "{limits:?}");
        assert!(limiter.limit() > 20, "{limits:?}");
    }

    /// Ten round trips with the limit in use: the last request sent comes back fast (a cached
    /// reply), the others time out a second later.
    fn fast_answer_then_timeouts_ten_times(
        limiter: &AdaptiveConcurrencyLimiter<ManualClock>,
        clock: &ManualClock,
    ) {
        for _ in 0..10 {
            let held: Vec<_> = (0..limiter.limit())
                .map(|_| limiter.try_acquire().unwrap())
                .collect();
            let mut held = held.into_iter().rev();
            clock.advance(Duration::from_millis(10));
            held.next().unwrap().success();
            clock.advance(Duration::from_secs(1));
            held.for_each(AdaptivePermit::overloaded);
        }
    }

    /// Timeouts are overload whatever the fast answers of the same round trip said: when each
    /// round trip's first answer comes back fast (a cached reply) and the rest time out, the
    /// limit falls, as TCP Vegas and Netflix's `VegasLimit` cut on a loss.
    #[test]
    fn vegas_cuts_on_timeouts_after_a_fast_answer_of_the_same_round_trip() {
        let clock = ManualClock::new();
        let config = VegasConfig::new(20, 1, 100).unwrap();
        let limiter = AdaptiveConcurrencyLimiter::vegas(config, clock.clone());
        fast_answer_then_timeouts_ten_times(&limiter, &clock);
        assert!(limiter.limit() < 20, "limit {}", limiter.limit());
    }

    /// Gradient too: a round trip closed by a fast answer does not hide the timeouts of the
    /// requests sent with it.
    #[test]
    fn gradient_cuts_on_timeouts_after_a_fast_answer_ends_their_round_trip() {
        let clock = ManualClock::new();
        let config = GradientConfig::new(20, 1, 100).unwrap();
        let limiter = AdaptiveConcurrencyLimiter::gradient(config, clock.clone());
        fast_answer_then_timeouts_ten_times(&limiter, &clock);
        assert!(limiter.limit() < 20, "limit {}", limiter.limit());
    }

    #[test]
    fn vegas_shrinks_when_latency_grows_and_the_baseline_can_be_reset() {
        let clock = ManualClock::new();
        let config = VegasConfig::new(20, 1, 100).unwrap();
        let limiter = AdaptiveConcurrencyLimiter::vegas(config, clock.clone());
        let answer = |millis| {
            let permit = limiter.try_acquire().unwrap();
            clock.advance(Duration::from_millis(millis));
            permit.success();
        };
        answer(10);
        assert_eq!(
            limiter.limit(),
            20,
            "one request in flight does not use the limit"
        );
        for _ in 0..5 {
            answer(20); // half of every latency is queueing: ~10 queued > beta
        }
        assert_eq!(limiter.limit(), 15);
        limiter.reset_baseline();
        answer(20);
        assert_eq!(
            limiter.limit(),
            15,
            "20 ms is the new normal: nothing queued"
        );
        together(
            &limiter,
            &clock,
            15,
            Duration::from_millis(20),
            AdaptivePermit::success,
        );
        assert!(limiter.limit() > 15, "used and not queueing: it grows");
        assert!(format!("{limiter:?}").contains("Vegas"));
        assert!(
            VegasConfig::new(1, 1, 1)
                .unwrap()
                .with_thresholds(3, 3)
                .is_err()
        );
        assert!(VegasConfig::new(2, 1, 1).is_err());
        assert_eq!(VegasConfig::new(1, 0, 1), Err(Error::ZeroLimit));
        assert!(
            VegasConfig::new(1, 1, 1)
                .unwrap()
                .with_backoff_percent(0)
                .is_err()
        );
    }

    #[test]
    fn aimd_config_is_validated() {
        let t = Duration::from_millis(1);
        assert_eq!(AimdConfig::new(1, 0, 1, t), Err(Error::ZeroLimit));
        assert!(AimdConfig::new(5, 1, 4, t).is_err());
        assert!(AimdConfig::new(1, 1, 1, Duration::ZERO).is_err());
        assert!(
            AimdConfig::new(1, 1, 1, t)
                .unwrap()
                .with_backoff_percent(100)
                .is_err()
        );
    }

    /// One round trip of a service whose latency is `base` up to `knee` requests in flight and
    /// grows in proportion above it (a fixed throughput: Little's law): as many requests as the
    /// limit allows are sent at once, answered together. Returns the limit afterwards.
    fn round_trip(
        limiter: &AdaptiveConcurrencyLimiter<ManualClock>,
        clock: &ManualClock,
        knee: u64,
    ) -> u32 {
        let base = 10_000_000; // 10 ms
        let permits: Vec<_> = (0..limiter.limit())
            .map(|_| limiter.try_acquire().unwrap())
            .collect();
        let in_flight = permits.len() as u64;
        clock.advance(Duration::from_nanos(base * in_flight.max(knee) / knee));
        permits.into_iter().for_each(AdaptivePermit::success);
        limiter.limit()
    }

    #[test]
    fn gradient_settles_near_the_knee_and_follows_it() {
        let clock = ManualClock::new();
        let config = GradientConfig::new(20, 1, 1_000).unwrap();
        let limiter = AdaptiveConcurrencyLimiter::gradient(config, clock.clone());
        let mut limits = Vec::new();
        for round in 0..3_000 {
            let knee = match round {
                0..1_000 => 100,
                1_000..2_000 => 50,
                _ => 200,
            };
            limits.push(round_trip(&limiter, &clock, knee));
        }
        let range = |rounds: std::ops::Range<usize>| {
            let seen = &limits[rounds];
            (*seen.iter().min().unwrap(), *seen.iter().max().unwrap())
        };
        // Up from 20 by about the queue allowance per round trip, then held within a few
        // percent of the knee for the rest of the phase: no creeping up.
        assert!(limits[50] < 100, "{}", limits[50]);
        let (low, high) = range(200..1_000);
        assert!(low >= 98 && high <= 106, "knee 100: {low}..={high}");
        // The service slows down (its knee halves): the limit follows within 50 round trips.
        let (low, high) = range(1_050..2_000);
        assert!(low >= 48 && high <= 60, "knee 50: {low}..={high}");
        // And grows back when the service can take more.
        let (low, high) = range(2_300..3_000);
        assert!(low >= 196 && high <= 212, "knee 200: {low}..={high}");
    }

    /// One request that hung for a day (its answer came back at last) lifts the long-term
    /// average by no more than a round trip twice as slow as it would: the limit still cuts
    /// within a few round trips when the service then really slows down, rather than holding
    /// a gradient of 1 until the average has decayed from hours back to milliseconds.
    #[test]
    fn gradient_cuts_on_latency_growth_soon_after_a_day_long_outlier() {
        let clock = ManualClock::new();
        let config = GradientConfig::new(20, 1, 1_000).unwrap();
        let limiter = AdaptiveConcurrencyLimiter::gradient(config, clock.clone());
        for _ in 0..300 {
            round_trip(&limiter, &clock, 100);
        }
        // A round trip whose answers all come in 10 ms but one's, a day late.
        let mut permits: Vec<_> = (0..limiter.limit())
            .map(|_| limiter.try_acquire().unwrap())
            .collect();
        let hung = permits.pop().unwrap();
        clock.advance(Duration::from_millis(10));
        permits.into_iter().for_each(AdaptivePermit::success);
        clock.advance(Duration::from_secs(24 * 3600));
        hung.success();
        for _ in 0..5 {
            round_trip(&limiter, &clock, 100);
        }
        let before = limiter.limit();
        assert!((85..=110).contains(&before), "back near the knee: {before}");
        // The service halves its throughput: at the same limit, latency doubles.
        let after: Vec<_> = (0..4).map(|_| round_trip(&limiter, &clock, 50)).collect();
        assert!(
            f64::from(after[3]) < 0.8 * f64::from(before),
            "from {before}: {after:?}"
        );
    }

    #[test]
    fn gradient_does_not_learn_an_absolute_latency() {
        // Four times the knee from the start: latency is four times the no-load one, but
        // steady, so it is the long-term average and nothing looks like queueing.
        let clock = ManualClock::new();
        let limiter = AdaptiveConcurrencyLimiter::gradient(
            GradientConfig::new(400, 1, 1_000).unwrap(),
            clock.clone(),
        );
        for _ in 0..300 {
            let limit = round_trip(&limiter, &clock, 100);
            assert!((395..=410).contains(&limit), "{limit}");
        }
        // Timeouts reported as overload bring it down.
        for _ in 0..20 {
            limiter.try_acquire().unwrap().overloaded();
        }
        assert!(limiter.limit() < 100, "{}", limiter.limit());
    }

    #[test]
    fn gradient_stays_within_its_bounds() {
        let clock = ManualClock::new();
        let capped = AdaptiveConcurrencyLimiter::gradient(
            GradientConfig::new(20, 10, 60).unwrap(),
            clock.clone(),
        );
        for round in 0..500 {
            // Room for 100 in flight: the cap holds it at 60.
            let limit = round_trip(&capped, &clock, 100);
            assert!((10..=60).contains(&limit), "round {round}: {limit}");
        }
        assert_eq!(capped.limit(), 60);
        // A service 20 % slower at every round trip: the gradient stays below 1, and the floor
        // holds the limit at 30.
        let floored = AdaptiveConcurrencyLimiter::gradient(
            GradientConfig::new(200, 30, 1_000).unwrap(),
            clock.clone(),
        );
        let mut latency = 1_000_000.0_f64;
        for round in 0..100 {
            let permits: Vec<_> = (0..floored.limit())
                .map(|_| floored.try_acquire().unwrap())
                .collect();
            latency *= 1.2;
            clock.advance(Duration::from_nanos(latency as u64));
            permits.into_iter().for_each(AdaptivePermit::success);
            let limit = floored.limit();
            assert!((30..=200).contains(&limit), "round {round}: {limit}");
        }
        assert_eq!(floored.limit(), 30);
    }

    #[test]
    fn gradient_updates_once_per_round_trip_and_grows_only_in_use() {
        let clock = ManualClock::new();
        let config = GradientConfig::new(10, 1, 100)
            .unwrap()
            .with_smoothing_percent(100)
            .unwrap();
        let limiter = AdaptiveConcurrencyLimiter::gradient(config, clock.clone());
        // One request at a time never uses the limit: no growth, however fast.
        one_at_a_time(&limiter, &clock, 100, Duration::from_millis(1));
        assert_eq!(limiter.limit(), 10);
        // Ten answers to requests sent together: only the first, sent after the last update,
        // ends a round trip; the other nine wait for the next one.
        together(
            &limiter,
            &clock,
            10,
            Duration::from_millis(1),
            AdaptivePermit::success,
        );
        assert_eq!(
            limiter.limit(),
            10,
            "the first answer was sent with one in flight"
        );
        one_at_a_time(&limiter, &clock, 1, Duration::from_millis(1));
        assert_eq!(
            limiter.limit(),
            14,
            "the nine in use, then this one: + queue"
        );
        // Ten timeouts of requests sent together cut once.
        together(
            &limiter,
            &clock,
            10,
            Duration::ZERO,
            AdaptivePermit::overloaded,
        );
        assert_eq!(limiter.limit(), 12, "14 × 90 %, once");
        assert!(format!("{limiter:?}").contains("Gradient"));
    }

    #[test]
    fn gradient_config_is_validated() {
        assert_eq!(GradientConfig::new(1, 0, 1), Err(Error::ZeroLimit));
        assert!(GradientConfig::new(5, 1, 4).is_err());
        let config = GradientConfig::new(1, 1, 1).unwrap();
        assert!(config.with_queue(0).is_err());
        assert!(config.with_smoothing_percent(0).is_err());
        assert!(config.with_smoothing_percent(101).is_err());
        assert!(config.with_long_window(0).is_err());
        assert!(config.with_backoff_percent(100).is_err());
        assert!(config.with_backoff_percent(0).is_err());
    }

    /// The Gradient rule as its definition states it, in `f64`, for the property test below.
    /// A round trip's mean is over its measured answers: a latency of zero is none.
    ///
    /// The long-term average moves `weight` of the way to each round trip's mean, taken as at
    /// most twice the average, written so
    /// that it stays exactly where it is when the mean equals it: a round trip as slow as the
    /// average then has a gradient of exactly 1, and earns the queue allowance, as it does in
    /// exact arithmetic.
    struct GradientModel {
        queue: f64,
        smoothing: f64,
        window: f64,
        backoff_percent: u32,
        min: u32,
        max: u32,
        estimate: f64,
        long: Option<f64>,
        answers: Vec<(u64, bool)>,
    }

    impl GradientModel {
        /// The update at the end of a round trip: the round trip's mean latency against the
        /// long-term exponential average, `weight = 2 / (window + 1)`.
        fn end_round_trip(&mut self) {
            let measured: Vec<f64> = self
                .answers
                .iter()
                .filter(|&&(l, _)| l > 0)
                .map(|&(l, _)| l as f64)
                .collect();
            let short = measured.iter().sum::<f64>() / measured.len() as f64;
            let used = self.answers.iter().any(|&(_, used)| used);
            let weight = 2.0 / (self.window + 1.0);
            let mut long = self
                .long
                .map_or(short, |l| l + weight * (short.min(2.0 * l) - l));
            if long > 2.0 * short {
                long *= 0.9;
            }
            self.long = Some(long);
            let gradient = (long / short).clamp(0.5, 1.0);
            let allowance = if gradient == 1.0 { self.queue } else { 0.0 };
            let mut next = self.estimate * (1.0 - self.smoothing)
                + (self.estimate * gradient + allowance) * self.smoothing;
            if !used && next > self.estimate {
                next = self.estimate;
            }
            self.set(next);
        }

        fn set(&mut self, estimate: f64) {
            self.estimate = estimate.max(f64::from(self.min)).min(f64::from(self.max));
            self.answers.clear();
        }
    }

    proptest! {
        #[test]
        fn gradient_matches_its_model(
            (initial, min, max) in (1u32..8, 1u32..8, 8u32..40)
                .prop_map(|(a, b, c)| (a.max(b), a.min(b), c)),
            queue in 1u32..6,
            smoothing in 1u32..=100,
            window in 1u32..30,
            backoff in 10u32..95,
            steps in proptest::collection::vec(step(), 0..120),
        ) {
            let clock = ManualClock::new();
            let config = GradientConfig::new(initial, min, max).unwrap()
                .with_queue(queue).unwrap()
                .with_smoothing_percent(smoothing).unwrap()
                .with_long_window(window).unwrap()
                .with_backoff_percent(backoff).unwrap();
            let limiter = AdaptiveConcurrencyLimiter::gradient(config, clock.clone());
            let mut model = GradientModel {
                queue: f64::from(queue),
                smoothing: f64::from(smoothing) / 100.0,
                window: f64::from(window),
                backoff_percent: backoff,
                min,
                max,
                estimate: f64::from(initial),
                long: None,
                answers: Vec::new(),
            };
            // The limit enforced: the estimate's integer part.
            let mut limit = initial;
            let mut round_trips = 0u64;
            // The round trip the last cut opened.
            let mut cut_opened = 0u64;
            let mut held = Vec::new();
            for step in steps {
                match step {
                    Step::Acquire => {
                        let admitted = limiter.try_acquire();
                        prop_assert_eq!(admitted.is_ok(), (held.len() as u32) < limit);
                        if let Ok(permit) = admitted {
                            held.push((permit, clock.now_nanos(), held.len() as u32 + 1, round_trips));
                        }
                    }
                    Step::Success(i, millis) if !held.is_empty() => {
                        clock.advance(Duration::from_millis(millis));
                        let (permit, started, in_flight, sent_in) = held.swap_remove(i % held.len());
                        permit.success();
                        model.answers.push((clock.now_nanos() - started, in_flight * 2 >= limit));
                        // A round trip ends only with a measured latency: zero is none.
                        if sent_in == round_trips && model.answers.iter().any(|&(l, _)| l > 0) {
                            model.end_round_trip();
                            round_trips += 1;
                        }
                    }
                    // A timeout cuts unless a cut came since its request was sent.
                    Step::Overloaded(i) if !held.is_empty() => {
                        let (permit, _, _, sent_in) = held.swap_remove(i % held.len());
                        permit.overloaded();
                        if sent_in >= cut_opened {
                            model.set(f64::from(limit * model.backoff_percent / 100));
                            round_trips += 1;
                            cut_opened = round_trips;
                        }
                    }
                    Step::Drop(i) if !held.is_empty() => drop(held.swap_remove(i % held.len())),
                    _ => {}
                }
                // Exact, except where the model's estimate is within rounding of an integer:
                // then either side of it is right, and the model follows the limiter's.
                let floor = model.estimate.floor();
                let near = (model.estimate - model.estimate.round()).abs() < 1e-9;
                let got = limiter.limit();
                if near {
                    let round = model.estimate.round() as u32;
                    prop_assert!(got == round || got + 1 == round, "{got} vs {}", model.estimate);
                } else {
                    prop_assert_eq!(got, floor as u32, "model estimate {}", model.estimate);
                }
                limit = got;
                prop_assert!((min..=max).contains(&got));
            }
        }
    }
}
