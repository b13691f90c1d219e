//! Waiting per key on a keyed limiter: a line for each key that has waiters, none for the rest.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::mem::size_of;

use infra_common::Clock;
use infra_common::hash::RandomState;
use infra_common::sync::Mutex;
use infra_common::sync::atomic::{AtomicUsize, Ordering};

use super::{Jitter, Line, Queue, TokioClock, wait_in_line};
use crate::algorithm::Algorithm;
use crate::keyed::{entry_overhead, key_bytes};
use crate::{Decision, Error, Gcra, KeyedRateLimiter, Quota};

/// The lines are spread over this many locks, so that waiters of different keys rarely
/// contend for one.
const SHARDS: usize = 64;

/// The caps on the lines of the keys that have waiters.
#[derive(Clone, Copy, Debug)]
struct Caps {
    /// Lines.
    lines: usize,
    /// Bytes charged for the lines (see [`line_charge`]).
    bytes: usize,
    /// Waiters in all lines together.
    waiters: usize,
}

/// The lines of the keys that have waiters, within their [`Caps`].
struct WaitingKeys<K> {
    shards: Box<[Mutex<HashMap<K, Queue, RandomState>>]>,
    hasher: RandomState,
    lines: AtomicUsize,
    bytes: AtomicUsize,
    waiters: AtomicUsize,
    caps: Caps,
}

impl<K: Hash + Eq> WaitingKeys<K> {
    fn new(caps: Caps) -> Self {
        let hasher = RandomState::new();
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(hasher.clone())))
                .collect(),
            hasher,
            lines: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            caps,
        }
    }

    /// Counts one more waiter, if there is room for it.
    fn add_waiter(&self) -> Result<(), Error> {
        take(&self.waiters, 1, self.caps.waiters).map_err(|()| Error::TooManyWaiters {
            max_waiters: self.caps.waiters,
        })
    }

    /// Counts one more line, charged `bytes`, if there is room for it.
    fn add_line(&self, bytes: usize) -> Result<(), Error> {
        if bytes > self.caps.bytes {
            // Waiting for others to leave would never make room: not a refusal to retry.
            return Err(Error::TooLarge {
                what: "waiting key with its line (bytes)",
                value: bytes as u128,
                max: self.caps.bytes as u128,
            });
        }
        let full = Error::TooManyWaitingKeys {
            max_waiting_keys: self.caps.lines,
            max_waiting_bytes: self.caps.bytes,
        };
        take(&self.lines, 1, self.caps.lines).map_err(|()| full.clone())?;
        take(&self.bytes, bytes, self.caps.bytes).map_err(|()| {
            self.lines.fetch_sub(1, Ordering::Relaxed);
            full
        })
    }

    /// Uncounts a line that was charged `bytes`.
    fn remove_line(&self, bytes: usize) {
        self.lines.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Wakes the first waiter of `key`, if it has any (see [`Queue::wake_head`]).
    fn wake_head_of<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(queue) = self.line(key).shard.lock().get(key) {
            queue.wake_head();
        }
    }

    /// Wakes the first waiter of every key, one shard lock at a time.
    fn wake_every_head(&self) {
        for shard in &self.shards {
            shard.lock().values().for_each(Queue::wake_head);
        }
    }

    fn line<'a, Q>(&'a self, key: &'a Q) -> KeyLine<'a, K, Q>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // Bits 32 and up choose the shard: the maps inside use the low bits for their buckets
        // and the top seven for their tags, so keys sharing a shard still spread in its map.
        #[allow(clippy::cast_possible_truncation)]
        let shard = (self.hasher.hash_one(key) >> 32) as usize % SHARDS;
        KeyLine {
            keys: self,
            shard: &self.shards[shard],
            key,
        }
    }
}

/// One key's line, found in its shard.
struct KeyLine<'a, K, Q: ?Sized> {
    keys: &'a WaitingKeys<K>,
    shard: &'a Mutex<HashMap<K, Queue, RandomState>>,
    key: &'a Q,
}

/// Adds `amount` to `count` unless that would pass `max`.
fn take(count: &AtomicUsize, amount: usize, max: usize) -> Result<(), ()> {
    count
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            n.checked_add(amount).filter(|&total| total <= max)
        })
        .map(drop)
        .map_err(drop)
}

/// What the line of `key` is charged against the byte cap: the key as a keyed limiter charges
/// it (a long key costs its length), the line's queue with its first buffer, and its share of
/// its shard's hash table at the most a table holds per entry, as a keyed limiter charges a
/// key's. The queue's growth past its first buffer comes with more waiters, which the cap on
/// waiters bounds.
fn line_charge<K, Q: Hash + ?Sized>(key: &Q) -> usize {
    key_bytes::<K, Q>(key)
        .saturating_add(size_of::<Queue>())
        .saturating_add(Queue::FIRST_BUFFER_BYTES)
        .saturating_add(entry_overhead::<K, Queue>())
}

impl<K, Q> Line for KeyLine<'_, K, Q>
where
    K: Borrow<Q> + Hash + Eq,
    Q: Hash + Eq + ?Sized + ToOwned<Owned = K>,
{
    fn join<R>(&self, f: impl FnOnce(&mut Queue) -> R) -> Result<R, Error> {
        let mut lines = self.shard.lock();
        if let Some(queue) = lines.get_mut(self.key) {
            // A line exists only while someone waits in it, so `f` queues behind them.
            let before = queue.len();
            let joined = f(queue);
            if queue.len() > before {
                self.keys.add_waiter().inspect_err(|_| queue.unpush())?;
            }
            return Ok(joined);
        }
        // No line yet: `f` decides at once, and only a caller it queues needs one kept.
        let mut queue = Queue::default();
        let joined = f(&mut queue);
        if !queue.is_empty() {
            self.keys.add_waiter()?;
            if let Err(error) = self.keys.add_line(line_charge::<K, Q>(self.key)) {
                self.keys.waiters.fetch_sub(1, Ordering::Relaxed);
                return Err(error);
            }
            lines.insert(self.key.to_owned(), queue);
        }
        Ok(joined)
    }

    fn locked<R>(&self, f: impl FnOnce(&mut Queue) -> R) -> R {
        let mut lines = self.shard.lock();
        let queue = lines
            .get_mut(self.key)
            .expect("a caller holding a ticket keeps its key's line");
        let before = queue.len();
        let result = f(queue);
        self.keys
            .waiters
            .fetch_sub(before - queue.len(), Ordering::Relaxed);
        if queue.is_empty() {
            // The last waiter left: the key's line goes, so memory follows the waiting keys.
            lines.remove(self.key);
            self.keys.remove_line(line_charge::<K, Q>(self.key));
        }
        result
    }
}

/// A [`KeyedRateLimiter`] whose callers can wait for their key's capacity instead of being
/// denied: [`AsyncRateLimiter`](crate::AsyncRateLimiter)'s waiting, per key.
///
/// - **Per key, FIFO**: the waiters of one key are admitted in arrival order (a small request
///   never overtakes a larger one queued before it for the same key); a caller arriving while
///   nobody waits for its key is decided at once.
/// - **Keys are independent**: each key with waiters has a line of its own, so a waiter for
///   one key never waits behind another key's.
/// - **Cancel-safe**: capacity is consumed only in the poll that returns it; dropping a
///   waiting future takes nothing and lets the next waiter of its key move up.
/// - **No task per key, bounded memory**: waiters sleep on tokio's timer; a key's line exists
///   only while it has waiters, and at most
///   [`max_waiting_keys`](AsyncKeyedRateLimiter::with_max_waiting_keys) keys (default
///   [`AsyncKeyedRateLimiter::DEFAULT_MAX_WAITING_KEYS`]) have one: a caller that would open
///   one more line gets [`Error::TooManyWaitingKeys`] at once, while waiters of keys that
///   already wait, and callers admitted at once, are unaffected. The lines' keys are charged
///   their bytes as a keyed limiter charges them, plus their queue, against
///   [`max_waiting_bytes`](AsyncKeyedRateLimiter::with_max_waiting_bytes) (default
///   [`AsyncKeyedRateLimiter::DEFAULT_MAX_WAITING_BYTES`]): past it, a caller that would open a
///   line gets [`Error::TooManyWaitingKeys`] too, and one whose key's line alone exceeds it
///   [`Error::TooLarge`]. At most
///   [`max_waiters`](AsyncKeyedRateLimiter::with_max_waiters) callers wait over all keys
///   together (default [`AsyncKeyedRateLimiter::DEFAULT_MAX_WAITERS`]): one more that would have
///   to wait gets [`Error::TooManyWaiters`]. A waiter that gives up leaves its line in
///   `O(log n)` (amortized), wherever it stands in it.
/// - **Jitter** (optional, [`AsyncKeyedRateLimiter::with_jitter`]): spreads the wake-ups of
///   many keys due at one instant over a bounded random delay.
///
/// The limiter's clock must agree with tokio's timer: use [`TokioClock`] (or the system clock
/// outside tests).
///
/// ```
/// use infra_ratelimit::{AsyncKeyedRateLimiter, Gcra, KeyedRateLimiter, Quota, TokioClock};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), infra_ratelimit::Error> {
/// let limiter = AsyncKeyedRateLimiter::new(KeyedRateLimiter::<String, Gcra, _>::with_clock(
///     Quota::per_second(2)?,
///     TokioClock::new(),
/// )?);
/// let start = tokio::time::Instant::now();
/// for _ in 0..4 {
///     limiter.until_ready("alice").await?;
/// }
/// assert_eq!(start.elapsed(), Duration::from_secs(1)); // 2 at once, then one per 500 ms
/// limiter.until_ready("bob").await?; // bob's quota is his own: no wait
/// assert_eq!(start.elapsed(), Duration::from_secs(1));
/// assert_eq!(limiter.waiting_keys(), 0); // nobody waits: no line is kept
/// # Ok(())
/// # }
/// ```
pub struct AsyncKeyedRateLimiter<K, A: Algorithm = Gcra, C: Clock = TokioClock> {
    limiter: KeyedRateLimiter<K, A, C>,
    waiting: WaitingKeys<K>,
    jitter: Option<Jitter>,
}

impl<K, A, C> AsyncKeyedRateLimiter<K, A, C>
where
    K: Hash + Eq + Clone + Send + Sync,
    A: Algorithm,
    C: Clock,
{
    /// The default cap on keys with waiters: 100,000.
    pub const DEFAULT_MAX_WAITING_KEYS: usize = 100_000;
    /// The default cap on waiting callers, over all keys: 100,000.
    pub const DEFAULT_MAX_WAITERS: usize = 100_000;
    /// The default cap on the bytes charged for the lines of keys with waiters: 32 MiB.
    pub const DEFAULT_MAX_WAITING_BYTES: usize = 32 << 20;

    /// Wraps a keyed limiter.
    pub fn new(limiter: KeyedRateLimiter<K, A, C>) -> Self {
        Self {
            limiter,
            waiting: WaitingKeys::new(Caps {
                lines: Self::DEFAULT_MAX_WAITING_KEYS,
                bytes: Self::DEFAULT_MAX_WAITING_BYTES,
                waiters: Self::DEFAULT_MAX_WAITERS,
            }),
            jitter: None,
        }
    }

    /// Lets at most `max` keys have waiters at once (at least 1).
    #[must_use]
    pub fn with_max_waiting_keys(self, max: usize) -> Self {
        let caps = Caps {
            lines: max.max(1),
            ..self.waiting.caps
        };
        Self {
            waiting: WaitingKeys::new(caps),
            ..self
        }
    }

    /// Charges the lines of keys with waiters at most `max` bytes in all: a key is charged
    /// as a keyed limiter charges it (see [`KeyedRateLimiter::bytes`]), plus its line's queue,
    /// the queue's first buffer and the line's share of its hash table, at the most a table
    /// holds per line (333 bytes in all for a `u64` key). A caller that would open a line past it gets
    /// [`Error::TooManyWaitingKeys`]; one whose line alone is larger, [`Error::TooLarge`].
    #[must_use]
    pub fn with_max_waiting_bytes(self, max: usize) -> Self {
        let caps = Caps {
            bytes: max,
            ..self.waiting.caps
        };
        Self {
            waiting: WaitingKeys::new(caps),
            ..self
        }
    }

    /// Lets at most `max` callers wait at once over all keys (at least 1); a caller that would
    /// be one more gets [`Error::TooManyWaiters`] instead of waiting.
    #[must_use]
    pub fn with_max_waiters(self, max: usize) -> Self {
        let caps = Caps {
            waiters: max.max(1),
            ..self.waiting.caps
        };
        Self {
            waiting: WaitingKeys::new(caps),
            ..self
        }
    }

    /// Lengthens every sleep until a key's capacity is back by a random delay up to `jitter`'s
    /// bound (see [`Jitter`]).
    #[must_use]
    pub fn with_jitter(self, jitter: Jitter) -> Self {
        Self {
            jitter: Some(jitter),
            ..self
        }
    }

    /// The wrapped limiter (for `check`, ...). Its direct checks do not queue.
    ///
    /// Change quotas with this wrapper's [`set_quota`](Self::set_quota),
    /// [`set_key_quota`](Self::set_key_quota) and [`clear_key_quota`](Self::clear_key_quota)
    /// rather than through this: a waiter asleep until the old quota's `retry_after` learns of a
    /// change made here only when it wakes.
    pub fn limiter(&self) -> &KeyedRateLimiter<K, A, C> {
        &self.limiter
    }

    /// Replaces the default quota, as [`KeyedRateLimiter::set_quota`] does, and has the first
    /// waiter of every key check again at once (under the new quota its capacity may be back
    /// sooner): one wake-up per key with waiters.
    ///
    /// # Errors
    ///
    /// As [`KeyedRateLimiter::set_quota`]; the old quota then stays in force.
    ///
    /// ```
    /// use infra_ratelimit::{AsyncKeyedRateLimiter, FixedWindow, KeyedRateLimiter, Quota, TokioClock};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), infra_ratelimit::Error> {
    /// let limiter = std::sync::Arc::new(AsyncKeyedRateLimiter::new(
    ///     KeyedRateLimiter::<String, FixedWindow, _>::with_clock(Quota::per_hour(1)?, TokioClock::new())?,
    /// ));
    /// limiter.until_ready("alice").await?;
    /// let waiter = tokio::spawn({
    ///     let limiter = limiter.clone();
    ///     async move { limiter.until_ready("alice").await }
    /// });
    /// tokio::time::sleep(Duration::from_secs(1)).await; // the waiter sleeps till the hour ends
    /// let start = tokio::time::Instant::now();
    /// limiter.set_quota(Quota::per_hour(10)?)?;
    /// assert!(waiter.await.unwrap()?.is_allowed());
    /// assert_eq!(start.elapsed(), Duration::ZERO); // admitted as soon as the quota allowed it
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_quota(&self, quota: Quota) -> Result<(), Error> {
        self.limiter.set_quota(quota)?;
        self.waiting.wake_every_head();
        Ok(())
    }

    /// Gives `key` its own quota, as [`KeyedRateLimiter::set_key_quota`] does, and has the
    /// key's first waiter check again at once.
    ///
    /// # Errors
    ///
    /// As [`KeyedRateLimiter::set_key_quota`].
    ///
    /// ```
    /// use infra_ratelimit::{AsyncKeyedRateLimiter, Gcra, KeyedRateLimiter, Quota, TokioClock};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), infra_ratelimit::Error> {
    /// let limiter = AsyncKeyedRateLimiter::new(
    ///     KeyedRateLimiter::<String, Gcra, _>::with_clock(Quota::per_second(1)?, TokioClock::new())?,
    /// );
    /// limiter.set_key_quota("premium", Quota::per_second(100)?)?;
    /// assert_eq!(limiter.limiter().quota_for("premium"), Quota::per_second(100)?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_key_quota<Q>(&self, key: &Q, quota: Quota) -> Result<(), Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + ToOwned<Owned = K>,
    {
        self.limiter.set_key_quota(key, quota)?;
        self.waiting.wake_head_of(key);
        Ok(())
    }

    /// Returns `key` to the default quota, as [`KeyedRateLimiter::clear_key_quota`] does, and
    /// has the key's first waiter check again at once.
    ///
    /// ```
    /// use infra_ratelimit::{AsyncKeyedRateLimiter, Gcra, KeyedRateLimiter, Quota, TokioClock};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), infra_ratelimit::Error> {
    /// let limiter = AsyncKeyedRateLimiter::new(
    ///     KeyedRateLimiter::<String, Gcra, _>::with_clock(Quota::per_second(1)?, TokioClock::new())?,
    /// );
    /// limiter.set_key_quota("trial", Quota::per_hour(1)?)?;
    /// limiter.clear_key_quota("trial");
    /// assert_eq!(limiter.limiter().quota_for("trial"), Quota::per_second(1)?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn clear_key_quota<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.limiter.clear_key_quota(key);
        self.waiting.wake_head_of(key);
    }

    /// Keys that have waiters now.
    pub fn waiting_keys(&self) -> usize {
        self.waiting.lines.load(Ordering::Relaxed)
    }

    /// The bytes charged for the lines of the keys that have waiters now, against
    /// [`with_max_waiting_bytes`](Self::with_max_waiting_bytes).
    pub fn waiting_bytes(&self) -> usize {
        self.waiting.bytes.load(Ordering::Relaxed)
    }

    /// Callers waiting for `key` now.
    pub fn waiting<Q>(&self, key: &Q) -> usize
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let line = self.waiting.line(key);
        line.shard.lock().get(key).map_or(0, Queue::len)
    }

    /// Waits until one request for `key` is admitted and returns its decision.
    ///
    /// # Errors
    ///
    /// [`Error::TooManyWaitingKeys`] and [`Error::TooManyWaiters`] as described on the type;
    /// [`Error::TooManyKeys`] when the key is new on arrival and the limiter cannot track it
    /// now, [`Error::TooLarge`] when it never could (its charge alone exceeds the keys' half of
    /// the byte cap), or when the caller would have to wait and the key's line alone exceeds
    /// the waiting byte cap.
    ///
    /// A caller that waits is never refused for want of room for its key: the limiter may
    /// forget the key while its first waiter sleeps (it is idle once its capacity is back), and
    /// if the limiter is then full of active keys, the waiter keeps its place and checks again
    /// after the refusal's `retry_after`, as a caller retrying [`Error::TooManyKeys`] would.
    pub async fn until_ready<Q>(&self, key: &Q) -> Result<Decision, Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + ToOwned<Owned = K>,
    {
        self.until_n_ready(key, 1).await
    }

    /// Waits until `n` cells for `key` are admitted at once and returns the decision. `n = 0`
    /// takes nothing and is answered at once, even behind the key's waiters.
    ///
    /// # Errors
    ///
    /// [`Error::InsufficientCapacity`] at once when `n` exceeds the key's capacity (it would
    /// wait forever); otherwise as [`AsyncKeyedRateLimiter::until_ready`].
    pub async fn until_n_ready<Q>(&self, key: &Q, n: u32) -> Result<Decision, Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + ToOwned<Owned = K>,
    {
        // Refused before joining the line: behind waiters, only the head checks, so it would
        // wait its turn to be refused.
        Error::within_capacity(n, self.limiter.capacity_for(key))?;
        if n == 0 {
            // Takes nothing, so it overtakes none of the key's waiters: no reason to queue.
            return self.limiter.check_n(key, 0);
        }
        let line = self.waiting.line(key);
        wait_in_line(&line, self.jitter.as_ref(), || self.limiter.check_n(key, n)).await
    }
}

impl<K, A: Algorithm, C: Clock> fmt::Debug for AsyncKeyedRateLimiter<K, A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncKeyedRateLimiter")
            .field("limiter", &self.limiter)
            .field("waiting_keys", &self.waiting.lines.load(Ordering::Relaxed))
            .field("max_waiting_keys", &self.waiting.caps.lines)
            .field("waiting_bytes", &self.waiting.bytes.load(Ordering::Relaxed))
            .field("max_waiting_bytes", &self.waiting.caps.bytes)
            .field("waiters", &self.waiting.waiters.load(Ordering::Relaxed))
            .field("max_waiters", &self.waiting.caps.waiters)
            .field("jitter", &self.jitter)
            .finish()
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::Quota;
    use infra_common::sync::Arc;
    use std::time::Duration;
    use tokio::time::Instant;

    type Limiter = AsyncKeyedRateLimiter<String>;

    fn limiter(per_second: u64, burst: u64) -> Arc<Limiter> {
        let quota = Quota::per_second(per_second)
            .unwrap()
            .with_burst(burst)
            .unwrap();
        Arc::new(AsyncKeyedRateLimiter::new(
            KeyedRateLimiter::with_clock(quota, TokioClock::new()).unwrap(),
        ))
    }

    /// Spawns a waiter for `n` cells of `key` that records when it was admitted.
    fn wait_for(
        limiter: &Arc<Limiter>,
        key: &'static str,
        n: u32,
        admitted: &Arc<Mutex<Vec<(&'static str, Instant)>>>,
        name: &'static str,
    ) -> tokio::task::JoinHandle<Result<Decision, Error>> {
        let (limiter, admitted) = (Arc::clone(limiter), Arc::clone(admitted));
        tokio::spawn(async move {
            let decision = limiter.until_n_ready(key, n).await?;
            admitted.lock().push((name, Instant::now()));
            Ok(decision)
        })
    }

    /// A request larger than its key's capacity is refused at once even behind that key's
    /// waiters, under the key's own quota.
    #[tokio::test(start_paused = true)]
    async fn a_request_above_the_key_capacity_is_refused_at_once_behind_waiters() {
        let limiter = limiter(1, 1);
        limiter
            .limiter()
            .set_key_quota("big", Quota::per_second(3).unwrap())
            .unwrap();
        let _ = limiter.until_ready("a").await.unwrap();
        let admitted = Arc::new(Mutex::new(Vec::new()));
        let waiter = wait_for(&limiter, "a", 1, &admitted, "a");
        tokio::task::yield_now().await;
        assert_eq!(limiter.waiting("a"), 1);
        let start = Instant::now();
        assert!(matches!(
            limiter.until_n_ready("a", 2).await,
            Err(Error::InsufficientCapacity { .. })
        ));
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(limiter.until_n_ready("big", 3).await.unwrap().is_allowed());
        assert!(waiter.await.unwrap().unwrap().is_allowed());
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_of_a_key_are_served_in_arrival_order_and_other_keys_are_not_held_up() {
        let limiter = limiter(1, 2);
        let start = Instant::now();
        let _ = limiter.until_n_ready("a", 2).await.unwrap();
        let _ = limiter.until_n_ready("b", 2).await.unwrap();
        let admitted = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (key, n, name) in [
            ("a", 2, "a-big"),
            ("a", 1, "a-small"),
            ("b", 1, "b-small"),
            ("a", 1, "a-small2"),
        ] {
            tasks.push(wait_for(&limiter, key, n, &admitted, name));
            tokio::task::yield_now().await;
        }
        assert_eq!((limiter.waiting("a"), limiter.waiting("b")), (3, 1));
        assert_eq!(limiter.waiting_keys(), 2);
        for task in tasks {
            let _ = task.await.unwrap().unwrap();
        }
        let admitted = admitted.lock();
        let seen: Vec<_> = admitted
            .iter()
            .map(|&(name, at)| (name, at - start))
            .collect();
        // "a-small" could have had a cell after 1 s, but "a-big" came first and needs 2; "b"
        // has its own line and is served at 1 s whatever "a" waits for.
        assert_eq!(
            seen,
            [
                ("b-small", Duration::from_secs(1)),
                ("a-big", Duration::from_secs(2)),
                ("a-small", Duration::from_secs(3)),
                ("a-small2", Duration::from_secs(4)),
            ]
        );
        assert_eq!(limiter.waiting_keys(), 0, "lines go with their last waiter");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_takes_nothing_and_its_line_goes_with_it() {
        let limiter = limiter(1, 2);
        let _ = limiter.until_n_ready("a", 2).await.unwrap();
        let start = Instant::now();
        let first = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { limiter.until_n_ready("a", 2).await })
        };
        tokio::task::yield_now().await;
        let second = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { limiter.until_ready("a").await })
        };
        tokio::task::yield_now().await;
        assert_eq!(limiter.waiting("a"), 2);
        tokio::time::sleep(Duration::from_millis(500)).await;
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        let _ = second.await.unwrap().unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1), "one cell back");
        // The cancelled waiter consumed nothing: the next cell is back one second later.
        let next = limiter.limiter().check("a").unwrap();
        assert_eq!(next.retry_after(), Duration::from_secs(1));

        // The last waiter of a key leaving by cancellation removes the line too.
        let alone = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { limiter.until_ready("a").await })
        };
        tokio::task::yield_now().await;
        assert_eq!(limiter.waiting_keys(), 1);
        alone.abort();
        assert!(alone.await.unwrap_err().is_cancelled());
        assert_eq!((limiter.waiting_keys(), limiter.waiting("a")), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_on_waiters_counts_every_key_and_frees_a_place_per_departure() {
        let quota = Quota::per_second(1).unwrap();
        let limiter = Arc::new(
            AsyncKeyedRateLimiter::new(
                KeyedRateLimiter::<String, Gcra, _>::with_clock(quota, TokioClock::new()).unwrap(),
            )
            .with_max_waiters(3),
        );
        for key in ["a", "b", "c"] {
            assert!(limiter.until_ready(key).await.unwrap().is_allowed());
        }
        let spawn = |key: &'static str| {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { limiter.until_ready(key).await })
        };
        let (a1, a2, b1) = (spawn("a"), spawn("a"), spawn("b"));
        tokio::task::yield_now().await;
        // Full: one more waiter is refused, for a waiting key or a new one, and opens no line.
        for key in ["a", "c"] {
            assert_eq!(
                limiter.until_ready(key).await,
                Err(Error::TooManyWaiters { max_waiters: 3 })
            );
        }
        assert_eq!(limiter.waiting_keys(), 2);
        a2.abort();
        assert!(a2.await.unwrap_err().is_cancelled());
        // The departure freed a place: a waiter for "c" now queues and is served.
        let c1 = spawn("c");
        tokio::task::yield_now().await;
        assert_eq!(limiter.waiting_keys(), 3);
        for task in [a1, b1, c1] {
            assert!(task.await.unwrap().unwrap().is_allowed());
        }
        assert_eq!(limiter.waiting_keys(), 0);
        assert!(format!("{limiter:?}").contains("waiters: 0"));
    }

    #[tokio::test(start_paused = true)]
    async fn thousands_of_waiters_giving_up_leave_every_line_empty() {
        let limiter = limiter(1, 1);
        let keys = ["a", "b"];
        for key in keys {
            assert!(limiter.until_ready(key).await.unwrap().is_allowed());
        }
        let mut tasks = Vec::new();
        for i in 0..6_000 {
            let limiter = Arc::clone(&limiter);
            let key = keys[i % 2];
            tasks.push(tokio::spawn(async move { limiter.until_ready(key).await }));
        }
        crate::wait::tests::settle(|| limiter.waiting("a") + limiter.waiting("b") == 6_000).await;
        assert_eq!((limiter.waiting("a"), limiter.waiting("b")), (3_000, 3_000));
        // Every waiter but the first of each key gives up, newest first, then the rest.
        let firsts: Vec<_> = tasks.drain(..2).collect();
        for task in tasks.iter().rev() {
            task.abort();
        }
        for task in tasks {
            assert!(task.await.unwrap_err().is_cancelled());
        }
        assert_eq!((limiter.waiting("a"), limiter.waiting("b")), (1, 1));
        for task in firsts {
            assert!(task.await.unwrap().unwrap().is_allowed());
        }
        assert_eq!(limiter.waiting_keys(), 0);
        assert!(format!("{limiter:?}").contains("waiters: 0"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_on_waiting_keys_refuses_only_callers_that_would_open_a_line() {
        let quota = Quota::per_second(1).unwrap();
        let limiter = Arc::new(
            AsyncKeyedRateLimiter::new(
                KeyedRateLimiter::<String, Gcra, _>::with_clock(quota, TokioClock::new()).unwrap(),
            )
            .with_max_waiting_keys(2),
        );
        let mut waiters = Vec::new();
        for key in ["a", "b"] {
            let _ = limiter.until_ready(key).await.unwrap();
            let limiter = Arc::clone(&limiter);
            waiters.push(tokio::spawn(async move { limiter.until_ready(key).await }));
            tokio::task::yield_now().await;
        }
        assert_eq!(limiter.waiting_keys(), 2);
        // A third key admitted at once needs no line.
        assert!(limiter.until_ready("c").await.unwrap().is_allowed());
        // It would wait now: refused at once, without consuming.
        assert_eq!(
            limiter.until_ready("c").await,
            Err(Error::TooManyWaitingKeys {
                max_waiting_keys: 2,
                max_waiting_bytes: Limiter::DEFAULT_MAX_WAITING_BYTES,
            })
        );
        assert_eq!(limiter.waiting("c"), 0);
        // A key that already waits takes one more waiter.
        let more = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { limiter.until_ready("a").await })
        };
        tokio::task::yield_now().await;
        assert_eq!(limiter.waiting("a"), 2);
        for waiter in waiters {
            let _ = waiter.await.unwrap().unwrap();
        }
        let _ = more.await.unwrap().unwrap();
        assert_eq!(limiter.waiting_keys(), 0);
        // Asking for more than the capacity fails at once and leaves no line behind.
        assert!(matches!(
            limiter.until_n_ready("d", 2).await,
            Err(Error::InsufficientCapacity { .. })
        ));
        assert_eq!(limiter.waiting_keys(), 0);
    }

    /// A flood of waiters on long keys: their lines are bounded by their bytes, not only by
    /// their count, and give every byte back when they end.
    #[tokio::test(start_paused = true)]
    async fn lines_of_long_keys_are_capped_by_their_bytes() {
        // A `u64` key's line: the key twice, the queue (48), its first buffer (64) and 205.
        assert_eq!(line_charge::<u64, u64>(&7), 16 + 48 + 64 + 205);
        let long = |i: usize| format!("{i:0>10000}");
        let charge = line_charge::<String, str>(&long(0));
        assert!(
            charge > 10_000,
            "a line is charged its key's length: {charge}"
        );
        let limiter = Arc::new(
            AsyncKeyedRateLimiter::new(
                KeyedRateLimiter::<String, Gcra, _>::with_clock(
                    Quota::per_second(1).unwrap(),
                    TokioClock::new(),
                )
                .unwrap(),
            )
            .with_max_waiting_bytes(3 * charge),
        );
        let mut waiters = Vec::new();
        for i in 0..3 {
            let key = long(i);
            assert!(
                limiter
                    .until_ready(key.as_str())
                    .await
                    .unwrap()
                    .is_allowed()
            );
            let limiter = Arc::clone(&limiter);
            waiters.push(tokio::spawn(async move {
                limiter.until_ready(key.as_str()).await
            }));
            tokio::task::yield_now().await;
        }
        assert_eq!(limiter.waiting_keys(), 3);
        assert_eq!(limiter.waiting_bytes(), 3 * charge);
        // Far below the count cap, a fourth long key would pass the byte cap: refused at once.
        let fourth = long(3);
        assert!(
            limiter
                .until_ready(fourth.as_str())
                .await
                .unwrap()
                .is_allowed()
        );
        assert_eq!(
            limiter.until_ready(fourth.as_str()).await,
            Err(Error::TooManyWaitingKeys {
                max_waiting_keys: Limiter::DEFAULT_MAX_WAITING_KEYS,
                max_waiting_bytes: 3 * charge,
            })
        );
        // A key whose line alone is over the cap could never wait: not a refusal to retry.
        let huge = "x".repeat(4 * charge);
        assert!(
            limiter
                .until_ready(huge.as_str())
                .await
                .unwrap()
                .is_allowed()
        );
        assert!(matches!(
            limiter.until_ready(huge.as_str()).await,
            Err(Error::TooLarge { .. })
        ));
        assert_eq!(limiter.waiting_keys(), 3);
        for waiter in waiters {
            assert!(waiter.await.unwrap().unwrap().is_allowed());
        }
        assert_eq!((limiter.waiting_keys(), limiter.waiting_bytes()), (0, 0));
        // The bytes came back: a long key may wait again.
        assert!(
            limiter
                .until_ready(fourth.as_str())
                .await
                .unwrap()
                .is_allowed()
        );
        let again = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { limiter.until_ready(fourth.as_str()).await })
        };
        tokio::task::yield_now().await;
        assert_eq!(limiter.waiting_bytes(), charge);
        assert!(again.await.unwrap().unwrap().is_allowed());
    }

    /// Admission times of one waiter on each of `keys` keys, all drained at once so that all
    /// are due at the same instant, one second later.
    async fn herd(keys: usize, jitter: Option<Jitter>) -> Vec<Duration> {
        let mut limiter = AsyncKeyedRateLimiter::new(
            KeyedRateLimiter::<String, Gcra, _>::with_clock(
                Quota::per_second(1).unwrap(),
                TokioClock::new(),
            )
            .unwrap(),
        );
        if let Some(jitter) = jitter {
            limiter = limiter.with_jitter(jitter);
        }
        let limiter = Arc::new(limiter);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for key in 0..keys {
            let key = key.to_string();
            let _ = limiter.until_ready(key.as_str()).await.unwrap();
            let limiter = Arc::clone(&limiter);
            tasks.push(tokio::spawn(async move {
                let _ = limiter.until_ready(key.as_str()).await.unwrap();
                Instant::now() - start
            }));
        }
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.unwrap());
        }
        times
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_spreads_a_herd_over_its_bound_reproducibly() {
        let second = Duration::from_secs(1);
        let plain = herd(200, None).await;
        assert!(plain.iter().all(|&t| t == second), "{plain:?}");

        // tokio's timer fires on whole milliseconds: a delay lands in one of the bound's
        // 1,000 milliseconds (or the next one).
        let bound = Duration::from_secs(1);
        let spread = herd(200, Some(Jitter::seeded(bound, 1))).await;
        let tick = Duration::from_millis(1);
        assert!(
            spread
                .iter()
                .all(|&t| t >= second && t <= second + bound + tick)
        );
        let mut distinct = spread.clone();
        distinct.sort();
        distinct.dedup();
        // 200 uniform draws over 1,000 milliseconds hit about 181 distinct ones.
        assert!(distinct.len() > 160, "{} distinct wake-ups", distinct.len());
        // Over both halves of the bound, not bunched at one end.
        let early = spread.iter().filter(|&&t| t < second + bound / 2).count();
        assert!(
            (60..140).contains(&early),
            "{early} of 200 in the first half"
        );
        // The same seed wakes the same waiters at the same times.
        assert_eq!(herd(200, Some(Jitter::seeded(bound, 1))).await, spread);
    }

    /// A quota change that brings a key's capacity back sooner wakes the first waiter of that
    /// key (`set_key_quota`, `clear_key_quota`), or of every key (`set_quota`), which is then
    /// admitted at once instead of after the rest of the old window.
    #[tokio::test(start_paused = true)]
    async fn quota_changes_admit_sleeping_waiters_at_once() {
        let limiter = Arc::new(AsyncKeyedRateLimiter::new(
            KeyedRateLimiter::<String, crate::FixedWindow, _>::with_clock(
                Quota::per_hour(1).unwrap(),
                TokioClock::new(),
            )
            .unwrap(),
        ));
        let admitted = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for key in ["a", "b", "c"] {
            assert!(limiter.until_ready(key).await.unwrap().is_allowed());
            let (limiter, admitted) = (Arc::clone(&limiter), Arc::clone(&admitted));
            waiters.push(tokio::spawn(async move {
                let decision = limiter.until_ready(key).await;
                admitted.lock().push((key, Instant::now()));
                decision
            }));
        }
        super::super::tests::settle(|| limiter.waiting_keys() == 3).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start = Instant::now();
        limiter
            .set_key_quota("a", Quota::per_hour(10).unwrap())
            .unwrap();
        super::super::tests::settle(|| admitted.lock().len() == 1).await;
        limiter
            .limiter()
            .set_key_quota("b", Quota::per_hour(1).unwrap())
            .unwrap();
        limiter.set_quota(Quota::per_hour(10).unwrap()).unwrap();
        limiter.clear_key_quota("b");
        for waiter in waiters {
            assert!(waiter.await.unwrap().unwrap().is_allowed());
        }
        let admitted = admitted.lock();
        assert_eq!(admitted.len(), 3);
        for (key, at) in admitted.iter() {
            assert_eq!(
                *at - start,
                Duration::ZERO,
                "{key} admitted when its quota was raised"
            );
        }
    }

    /// Asking for nothing for a key takes nothing, so it overtakes none of the key's waiters:
    /// answered at once.
    #[tokio::test(start_paused = true)]
    async fn asking_for_nothing_never_waits_in_a_keys_line() {
        let limiter = limiter(1, 1);
        assert!(limiter.until_ready("a").await.unwrap().is_allowed());
        let admitted = Arc::new(Mutex::new(Vec::new()));
        let waiter = wait_for(&limiter, "a", 1, &admitted, "a");
        super::super::tests::settle(|| limiter.waiting("a") == 1).await;
        let start = Instant::now();
        let peek = limiter.until_n_ready("a", 0).await.unwrap();
        assert!(peek.is_allowed() && peek.remaining() == 0, "{peek:?}");
        assert_eq!(start.elapsed(), Duration::ZERO, "answered at once");
        assert_eq!(limiter.waiting("a"), 1);
        assert!(waiter.await.unwrap().unwrap().is_allowed());
    }

    /// A key is reclaimable while its only waiter sleeps: with a burst of 1 it is idle exactly
    /// when the waiter's retry ends, and a new key may take its place in a full limiter. The
    /// waiter keeps its place and waits on until its key can be tracked again, instead of
    /// failing with `TooManyKeys` after it was let into the line. The limiter runs on a manual
    /// clock here so that the new key comes in at the very instant the old one turns idle.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_whose_key_was_reclaimed_while_it_slept_waits_on() {
        let clock = infra_common::ManualClock::new();
        let limiter = Arc::new(AsyncKeyedRateLimiter::new(
            KeyedRateLimiter::<String, Gcra, _>::with_options(
                Quota::per_second(1).unwrap(),
                clock.clone(),
                crate::KeyedOptions::default().max_keys(1),
            )
            .unwrap(),
        ));
        let start = Instant::now();
        assert!(limiter.until_ready("a").await.unwrap().is_allowed());
        let mut waiter = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { limiter.until_ready("a").await })
        };
        super::super::tests::settle(|| limiter.waiting("a") == 1).await;
        // As the waiter's second runs out, "a" is idle and "b" takes the only slot.
        clock.advance(Duration::from_secs(1));
        assert!(limiter.limiter().check("b").unwrap().is_allowed());
        assert!(matches!(
            limiter.limiter().check("a"),
            Err(Error::TooManyKeys { .. })
        ));
        let early = tokio::time::timeout(Duration::from_millis(1_500), &mut waiter).await;
        assert!(
            early.is_err(),
            "the waiter left its line while its key could not be tracked: {early:?}"
        );
        assert_eq!(limiter.waiting("a"), 1);
        // Only a caller arriving with a new key at the full limiter is refused, at once.
        assert!(matches!(
            limiter.until_ready("c").await,
            Err(Error::TooManyKeys { .. })
        ));
        // "b" is idle a second after its request: the waiter's next check takes its slot.
        clock.advance(Duration::from_secs(1));
        assert!(waiter.await.unwrap().unwrap().is_allowed());
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(limiter.waiting_keys(), 0);
        assert!(matches!(
            limiter.limiter().check("b"),
            Err(Error::TooManyKeys { .. })
        ));
    }
}
