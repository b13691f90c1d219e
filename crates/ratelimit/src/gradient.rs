//! The Gradient rule of [`AdaptiveConcurrencyLimiter`](crate::AdaptiveConcurrencyLimiter):
//! compare the latency of the last round trip with a long-term average, and shrink the limit by
//! their ratio.
//!
//! The model is the Gradient2 limit of Netflix's concurrency-limits, as its documentation
//! describes it: the average latency of recent requests (*short*) against an exponentially
//! smoothed long-term average (*long*); `gradient = long / short`, clamped to `0.5..=1` so one
//! slow sample cannot halve the limit; `new = limit × gradient + queue`, smoothed as `limit +
//! smoothing × (new − limit)` and bounded to `min..=max`. Four choices of ours:
//!
//! - **One update per round trip**, from the requests answered during it: the short-term
//!   average is the mean latency of the round trip's answers, and the update (up or down) is
//!   made by the first answer to a request sent after the previous update. A cut is therefore
//!   made at most once per round trip, as with AIMD and Vegas, and the long window counts
//!   round trips. An overload report cuts unless a cut came since its request was sent: a
//!   round trip that a fast answer ended does not hide the timeouts of the requests sent in it. A latency of zero (the clock did not tick) is below the clock's resolution
//!   and left out of the mean; a round trip with no measured answer waits for one to end.
//! - **The queue allowance only while no queueing is seen** (`gradient = 1`). Added on every
//!   update, it balances a gradient of `1 − queue / limit` at any latency, and the long-term
//!   average keeps following the latency up, so under a steady overload the limit creeps
//!   upwards without end (a drift reported against Gradient2 itself). Without it, the limit
//!   only grows while the latency is at or below its long-term average, and each step above
//!   the service's knee raises the latency before the average follows, which pulls the limit
//!   back: it settles near the knee.
//! - **Growth only while in use**: a round trip in which no request was sent with at least
//!   half the limit in flight may lower the limit, never raise it.
//!
//! - **A bounded weight per round trip**: a round trip's mean above twice the long-term
//!   average enters the average as twice it, as the gradient's floor of 0.5 already takes it.
//!   One request that hung for a day would otherwise lift the average from milliseconds to
//!   seconds, and the gradient would stay at 1 (no cut however latency grows) for the dozens of
//!   round trips the 10 % cuts below take to bring it back. A sustained rise still moves the
//!   average, by a factor of at most `1 + 2 / (long_window + 1)` per round trip; while the
//!   means stay above twice the average the gradient is at its floor either way. The first
//!   round trip's mean seeds the average as it is: there is nothing yet to compare it with.
//!
//! As in the model, when the long-term average is more than twice the short-term one (latency
//! back to normal after a long overload), it is cut by 10 % per update instead of waiting for
//! the smoothing to bring it down.

use crate::Error;

/// The most a round trip's mean counts for in the long-term average, as a multiple of that
/// average: the inverse of the gradient's floor.
const LONG_STEP_LIMIT: f64 = 2.0;

/// Settings of the Gradient adaptive limiter ([`AdaptiveConcurrencyLimiter::gradient`]).
///
/// Defaults: a queue allowance of 4 requests, smoothing 20 %, a long-term average over 600
/// round trips, and a 90 % backoff on overload reports.
///
/// ```
/// use infra_ratelimit::GradientConfig;
///
/// let config = GradientConfig::new(20, 5, 500)?
///     .with_queue(8)?
///     .with_smoothing_percent(50)?
///     .with_long_window(100)?;
/// assert!(GradientConfig::new(20, 5, 500)?.with_smoothing_percent(0).is_err());
/// # Ok::<(), infra_ratelimit::Error>(())
/// ```
///
/// [`AdaptiveConcurrencyLimiter::gradient`]: crate::AdaptiveConcurrencyLimiter::gradient
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GradientConfig {
    pub(crate) initial: u32,
    pub(crate) min: u32,
    pub(crate) max: u32,
    queue: u32,
    smoothing_percent: u32,
    long_window: u32,
    pub(crate) backoff_percent: u32,
}

impl GradientConfig {
    /// Start at `initial` and move within `min..=max`.
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
                reason: "Gradient limits must satisfy min <= initial <= max",
            });
        }
        Ok(Self {
            initial,
            min,
            max,
            queue: 4,
            smoothing_percent: 20,
            long_window: 600,
            backoff_percent: 90,
        })
    }

    /// How many requests above the current limit an update may allow while no queueing is seen.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when `queue` is zero (the limit could never grow).
    pub fn with_queue(self, queue: u32) -> Result<Self, Error> {
        if queue == 0 {
            return Err(Error::InvalidConfig {
                reason: "Gradient queue allowance must be positive",
            });
        }
        Ok(Self { queue, ..self })
    }

    /// How far one update moves the limit towards its new estimate, in percent (100: all the way).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] unless `1 ≤ percent ≤ 100`.
    pub fn with_smoothing_percent(self, percent: u32) -> Result<Self, Error> {
        if !(1..=100).contains(&percent) {
            return Err(Error::InvalidConfig {
                reason: "Gradient smoothing must be between 1 and 100 percent",
            });
        }
        Ok(Self {
            smoothing_percent: percent,
            ..self
        })
    }

    /// How many round trips the long-term latency average spans (its smoothing factor is
    /// `2 / (round_trips + 1)`; 1 makes it the last round trip's average).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when `round_trips` is zero.
    pub fn with_long_window(self, round_trips: u32) -> Result<Self, Error> {
        if round_trips == 0 {
            return Err(Error::InvalidConfig {
                reason: "Gradient long window must be at least one round trip",
            });
        }
        Ok(Self {
            long_window: round_trips,
            ..self
        })
    }

    /// On an overload report the limit becomes `limit × percent / 100` (at least `min`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] unless `1 ≤ percent ≤ 99`.
    pub fn with_backoff_percent(self, percent: u32) -> Result<Self, Error> {
        if !(1..=99).contains(&percent) {
            return Err(Error::InvalidConfig {
                reason: "Gradient backoff must be between 1 and 99 percent",
            });
        }
        Ok(Self {
            backoff_percent: percent,
            ..self
        })
    }
}

/// What the rule remembers between updates. Kept under the limiter's lock: an update reads and
/// writes all of it at once.
#[derive(Debug)]
pub(crate) struct GradientState {
    /// The limit as a real number; the limiter enforces its integer part.
    estimate: f64,
    /// The long-term latency average in nanoseconds, from the first update on.
    long: Option<f64>,
    /// The answers of the current round trip: measured latencies summed, how many were
    /// measured, and whether any of their requests was sent with the limit in use.
    latency_sum: u128,
    answers: u64,
    in_use: bool,
    /// The limiter's change count just after the last overload cut: the round trip that cut
    /// opened. A timeout of a request sent before it reports the overload that cut.
    cut_opened: u64,
}

impl GradientState {
    pub(crate) fn new(config: &GradientConfig) -> Self {
        Self {
            estimate: f64::from(config.initial),
            long: None,
            latency_sum: 0,
            answers: 0,
            in_use: false,
            cut_opened: 0,
        }
    }

    /// Counts one answer towards the current round trip. A latency of zero is below the clock's
    /// resolution: it tells whether the limit was in use, but is no measurement, and in the
    /// mean it would pull the round trip (and the long-term average after it) towards zero.
    pub(crate) fn answer(&mut self, latency: u64, in_use: bool) {
        if latency > 0 {
            self.latency_sum += u128::from(latency);
            self.answers += 1;
        }
        self.in_use |= in_use;
    }

    /// Whether the current round trip has a measured latency, without which it cannot end.
    pub(crate) fn measured(&self) -> bool {
        self.answers > 0
    }

    /// Ends the round trip, which has a measured latency: moves the estimate by its answers and
    /// returns the new limit.
    pub(crate) fn update(&mut self, config: &GradientConfig) -> u32 {
        // Rounded to 53 bits, far finer than any latency the rule can tell apart. Positive: at
        // least one answer was measured, and the long-term average, made of such means, is
        // positive too.
        let short = self.latency_sum as f64 / self.answers as f64;
        let mut long = match self.long {
            None => short,
            Some(long) => {
                // The gradient already takes a round trip over twice the average as twice it
                // (its floor of 0.5); the average takes it so too. Otherwise one request that
                // hung for hours would lift the average so far that the gradient stayed at 1,
                // blind to real queueing, for the dozens of round trips it takes to decay.
                let sample = short.min(LONG_STEP_LIMIT * long);
                long + (sample - long) * 2.0 / (f64::from(config.long_window) + 1.0)
            }
        };
        if long > 2.0 * short {
            long *= 0.9;
        }
        self.long = Some(long);
        let gradient = (long / short).clamp(0.5, 1.0);
        let queue = if gradient >= 1.0 {
            f64::from(config.queue)
        } else {
            0.0
        };
        let target = self.estimate * gradient + queue;
        let mut next =
            self.estimate + (target - self.estimate) * f64::from(config.smoothing_percent) / 100.0;
        if !self.in_use {
            next = next.min(self.estimate);
        }
        self.start(next, config)
    }

    /// The round trip the last overload cut opened (see [`GradientState::cut_to`]).
    pub(crate) fn cut_opened(&self) -> u64 {
        self.cut_opened
    }

    /// Sets the limit to `limit` after an overload report, starting the round trip `opened`.
    pub(crate) fn cut_to(&mut self, limit: u32, opened: u64, config: &GradientConfig) -> u32 {
        self.cut_opened = opened;
        self.start(f64::from(limit), config)
    }

    /// Takes `estimate` (bounded) and forgets the round trip's answers.
    fn start(&mut self, estimate: f64, config: &GradientConfig) -> u32 {
        self.estimate = estimate.clamp(f64::from(config.min), f64::from(config.max));
        self.latency_sum = 0;
        self.answers = 0;
        self.in_use = false;
        // Exact: the estimate is within `min..=max`, both `u32`.
        self.estimate.floor() as u32
    }
}
