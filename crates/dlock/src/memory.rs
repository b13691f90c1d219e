//! The in-process backend: leased, fenced, FIFO-fair locks for the threads of one process.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use infra_common::clock::duration_to_nanos;
use infra_common::sync::atomic::{AtomicU64, Ordering};
use infra_common::sync::{Arc, Condvar, Mutex, MutexGuard};
use infra_common::{Clock, RandomState, SystemClock};

use crate::error::Error;
use crate::grant::{
    Access, FencingToken, Grant, LockName, Wait, check_access, check_lease, check_name,
};
use crate::locks::{LockGuard, Locks};

/// Leased, fenced locks for the threads of one process.
///
/// FIFO-fair per name, leases on the given [`Clock`], no busy waiting, no background thread.
///
/// # How it works
///
/// Each lock name has its own state behind its own mutex: the current holders and a FIFO
/// queue of waiters. A map from name to that state, behind one more mutex, finds it for the
/// calls that name a lock; a [`LockHandle`] keeps the name's state and skips the map. Tokens
/// come from one atomic counter for the whole instance, drawn under the name's mutex, so they
/// grow per name as well. Idle names are kept for reuse and swept out of the map once it has
/// doubled since the last sweep; a name a handle or a waiting call still points at is kept.
///
/// **Hand-off.** A waiter is granted by whoever frees the lock: a release, an expiry or a
/// waiter leaving the queue moves the queue's head into the holders (with a new token, the
/// lease starting at that moment) and wakes that one waiter on its own condition variable.
/// Nobody overtakes the queue: a request is granted on arrival only if nobody is queued.
///
/// **Expiry without busy waiting.** Leases are never swept by a background thread. Every call
/// that touches a name first drops that name's expired holders and hands the lock on; a waiter
/// sleeps at most until the earliest deadline among the holders it waits behind (or its own
/// timeout), then looks again. With [`SystemClock`] that wakes it when the lease ends. A
/// [`ManualClock`](infra_common::ManualClock) does not move by itself, so a test that advances
/// it lets waiters in by touching the name (any acquire, release, `is_held`) or by calling
/// [`MemoryLocks::expire_due`], which ends every expired lease and wakes every waiter to look
/// at the clock again.
///
/// ```
/// use infra_dlock::{Locks, MemoryLocks};
/// use std::time::Duration;
///
/// let locks = MemoryLocks::new();
/// let guard = locks.acquire("account-42", Duration::from_secs(10))?;
/// assert!(locks.try_acquire("account-42", Duration::from_secs(10))?.is_none());
/// let first = guard.token();
/// guard.release()?;
/// let next = locks.acquire("account-42", Duration::from_secs(10))?;
/// assert!(next.token() > first);
/// # Ok::<(), infra_dlock::Error>(())
/// ```
pub struct MemoryLocks<C: Clock = SystemClock> {
    clock: C,
    /// Tells this instance's grants from another's.
    issuer: u64,
    /// The last token issued; 0 before the first grant. Drawn only under the mutex of the
    /// name being granted, so two grants of one name are ordered by that mutex and the later
    /// one reads a later value of the counter.
    last_token: AtomicU64,
    names: Mutex<Names>,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::LockCounters,
}

struct Names {
    map: HashMap<Box<str>, Arc<Slot>, RandomState>,
    /// The map size at which idle names are swept out (see [`Names::slot`]).
    sweep_at: usize,
}

/// Below this many names, idle names are never swept.
const MIN_SWEEP: usize = 64;

/// One lock name's state.
///
/// Lock order: the map's mutex before a slot's, never the other way round.
struct Slot {
    /// The name, handed out with each grant.
    name: LockName,
    entry: Mutex<Entry>,
    /// Notified whenever a grant of this name ends, for [`Locks::wait_lost`].
    ended: Condvar,
}

impl Slot {
    /// Whether the map may drop this slot: nobody points at it but the map, and it has no
    /// holder or waiter. A slot a handle points at must stay, or a new slot for the same
    /// name would let the handle's grants and the map's overlap.
    fn sweepable(slot: &Arc<Self>) -> bool {
        Arc::strong_count(slot) == 1 && slot.entry.lock().is_idle()
    }
}

impl Names {
    /// The slot of `name`, created idle if missing.
    ///
    /// Idle slots stay in the map, so a lock taken again and again costs no allocation;
    /// they are swept out whenever the map has doubled since the last sweep, which keeps it
    /// within twice the names in use (plus [`MIN_SWEEP`]) at an amortized constant cost.
    fn slot(&mut self, name: &str) -> &Arc<Slot> {
        if !self.map.contains_key(name) {
            if self.map.len() >= self.sweep_at {
                self.map.retain(|_, slot| !Slot::sweepable(slot));
                self.sweep_at = (self.map.len() * 2).max(MIN_SWEEP);
            }
            let slot = Slot {
                name: LockName::from(name),
                entry: Mutex::new(Entry {
                    last_ticket: 0,
                    holders: Vec::new(),
                    queue: VecDeque::new(),
                }),
                ended: Condvar::new(),
            };
            self.map.insert(name.into(), Arc::new(slot));
        }
        self.map.get(name).expect("inserted above")
    }
}

struct Entry {
    /// Numbers the waiters, so a waiter finds itself among the holders after a hand-off.
    last_ticket: u64,
    holders: Vec<Holder>,
    queue: VecDeque<Waiter>,
}

struct Holder {
    token: u64,
    /// The waiter this grant was handed to; 0 for a grant made on arrival.
    ticket: u64,
    access: Access,
    granted_at: u64,
    lease: u64,
}

struct Waiter {
    ticket: u64,
    access: Access,
    lease: u64,
    wake: Arc<Condvar>,
}

/// A request that joined a queue: what its waiting needs to know.
struct Queued {
    ticket: u64,
    access: Access,
    lease: u64,
    wake: Arc<Condvar>,
    give_up_at: Option<u64>,
}

/// What a request found on arrival.
enum Arrival {
    /// Granted, or refused without waiting.
    Done(Option<Grant>),
    /// Queued; wait.
    Queued(Queued),
}

impl Holder {
    fn runs_at(&self, now: u64) -> bool {
        now.saturating_sub(self.granted_at) < self.lease
    }
}

/// Whether a request for `access` can be granted beside `holders` (all of them live).
fn compatible(holders: &[Holder], access: Access) -> bool {
    match access {
        Access::Exclusive => holders.is_empty(),
        Access::Shared => holders.iter().all(|h| h.access == Access::Shared),
        Access::Permit { permits } => holders.len() < permits as usize,
    }
}

/// Mutexes and read-write locks share names; a semaphore's name is its own, with one count.
fn same_kind(a: Access, b: Access) -> bool {
    match (a, b) {
        (Access::Permit { permits: x }, Access::Permit { permits: y }) => x == y,
        (Access::Permit { .. }, _) | (_, Access::Permit { .. }) => false,
        _ => true,
    }
}

/// The next token, or `None` once the counter is at its end: tokens never wrap.
fn next_token(last_token: &AtomicU64) -> Option<u64> {
    // Relaxed: every draw for one name happens under that name's mutex, which orders them.
    last_token
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_add(1))
        .ok()
        .map(|previous| previous + 1)
}

impl Entry {
    fn is_idle(&self) -> bool {
        self.holders.is_empty() && self.queue.is_empty()
    }

    fn accepts_kind(&self, access: Access) -> bool {
        let held = self.holders.iter().map(|h| h.access);
        let queued = self.queue.iter().map(|w| w.access);
        held.chain(queued).all(|other| same_kind(other, access))
    }

    /// Drops expired holders and hands the lock to queued waiters in order, as far as they
    /// fit. Returns how many grants ended.
    fn settle(&mut self, now: u64, last_token: &AtomicU64) -> usize {
        let before = self.holders.len();
        self.holders.retain(|h| h.runs_at(now));
        let ended = before - self.holders.len();
        while let Some(head) = self.queue.front() {
            if !compatible(&self.holders, head.access) {
                break;
            }
            let Some(token) = next_token(last_token) else {
                // Wake the head so it reports the exhaustion instead of waiting forever.
                head.wake.notify_one();
                break;
            };
            let head = self.queue.pop_front().expect("the queue has a head");
            self.holders.push(Holder {
                token,
                ticket: head.ticket,
                access: head.access,
                granted_at: now,
                lease: head.lease,
            });
            head.wake.notify_one();
        }
        ended
    }
}

impl MemoryLocks<SystemClock> {
    /// Locks on the system's monotonic clock.
    pub fn new() -> Self {
        Self::with_clock(SystemClock::new())
    }
}

impl Default for MemoryLocks<SystemClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clock> MemoryLocks<C> {
    /// Locks whose leases run on `clock`.
    pub fn with_clock(clock: C) -> Self {
        Self::with_tokens_after(clock, FencingToken::new(0))
    }

    /// Locks whose first grant's token is `last.get() + 1`.
    ///
    /// Tokens of an in-process backend start over when the process does. If a resource keeps
    /// its [`Fence`](crate::Fence) state across restarts, start above the highest token it has
    /// admitted, or every write of the new process would be refused as stale.
    pub fn with_tokens_after(clock: C, last: FencingToken) -> Self {
        Self {
            clock,
            issuer: next_issuer(),
            last_token: AtomicU64::new(last.get()),
            names: Mutex::new(Names {
                map: HashMap::default(),
                sweep_at: MIN_SWEEP,
            }),
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::LockCounters::unnamed(),
        }
    }

    /// Reports this instance's metrics under `name` (the `locks` label) instead of
    /// `default`. See the [`metrics`](crate::metrics) module: install the recorder first.
    #[cfg(feature = "metrics")]
    pub fn with_metrics_name(mut self, name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.metrics = crate::metrics::LockCounters::new(name.into());
        self
    }

    /// The clock the leases run on.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// A handle on lock `name` that skips the name's lookup on every call.
    ///
    /// The handle shares the lock with every other caller of this instance (by name or through
    /// another handle): same holders, same queue, same tokens. It resolves the name once, so
    /// its acquire and release touch only that lock's own state; use one for a lock taken
    /// often. While a handle lives, the name's state is kept.
    ///
    /// ```
    /// use infra_dlock::{Locks, MemoryLocks};
    /// use std::time::Duration;
    ///
    /// let locks = MemoryLocks::new();
    /// let account = locks.handle("account-42")?;
    /// let lease = Duration::from_secs(10);
    /// let guard = account.acquire(lease)?;
    /// // The same lock as by name: taken.
    /// assert!(locks.try_acquire("account-42", lease)?.is_none());
    /// guard.release()?;
    /// assert!(account.try_acquire(lease)?.is_some());
    /// # Ok::<(), infra_dlock::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::EmptyName`] or [`Error::NameTooLong`] for a bad name.
    pub fn handle(&self, name: &str) -> Result<LockHandle<'_, C>, Error> {
        check_name(name)?;
        let slot = Arc::clone(self.names.lock().slot(name));
        Ok(LockHandle { locks: self, slot })
    }

    /// How many requests wait in `name`'s queue right now.
    pub fn queue_len(&self, name: &str) -> usize {
        let names = self.names.lock();
        names
            .map
            .get(name)
            .map_or(0, |slot| slot.entry.lock().queue.len())
    }

    /// Ends every expired lease now, hands the freed locks to their waiters, and wakes every
    /// waiter to look at the clock again (for timeouts). Returns how many leases ended.
    ///
    /// Not needed with a clock that moves by itself: waiters time their sleeps by the
    /// deadlines. With a [`ManualClock`](infra_common::ManualClock), call it after advancing
    /// the clock so that blocked waiters see the new time.
    pub fn expire_due(&self) -> usize {
        let mut names = self.names.lock();
        let now = self.clock.now_nanos();
        let mut expired = 0;
        for slot in names.map.values() {
            let mut entry = slot.entry.lock();
            expired += self.settle(slot, &mut entry, now);
            for waiter in &entry.queue {
                waiter.wake.notify_one();
            }
        }
        names.map.retain(|_, slot| !Slot::sweepable(slot));
        expired
    }

    /// Settles `entry` at `now`, waking the grant's loss waiters if any lease ended.
    #[inline(always)]
    fn settle(&self, slot: &Slot, entry: &mut Entry, now: u64) -> usize {
        let ended = entry.settle(now, &self.last_token);
        if ended > 0 {
            slot.ended.notify_all();
            #[cfg(feature = "metrics")]
            self.metrics.leases_lost(ended);
        }
        ended
    }

    #[inline(always)]
    fn make_grant(&self, name: &LockName, holder: &Holder) -> Grant {
        Grant {
            name: LockName::clone(name),
            access: holder.access,
            token: FencingToken::new(holder.token),
            granted_at: holder.granted_at,
            lease: Duration::from_nanos(holder.lease),
            issuer: self.issuer,
        }
    }

    /// Grants `access` on arrival if nobody waits and it fits; otherwise queues the request,
    /// or gives up if it may not wait.
    // Inlined into the handle's calls: returned through memory, the grant's parts are
    // stored piecewise and read back whole, a store-forwarding stall on every call.
    #[inline(always)]
    fn arrive(
        &self,
        slot: &Slot,
        entry: &mut Entry,
        access: Access,
        lease: u64,
        wait: Wait,
    ) -> Result<Arrival, Error> {
        let now = self.clock.now_nanos();
        self.settle(slot, entry, now);
        if !entry.accepts_kind(access) {
            return Err(Error::KindMismatch {
                name: slot.name.to_string(),
            });
        }
        if entry.queue.is_empty() && compatible(&entry.holders, access) {
            let Some(token) = next_token(&self.last_token) else {
                return Err(Error::TokensExhausted);
            };
            let holder = Holder {
                token,
                ticket: 0,
                access,
                granted_at: now,
                lease,
            };
            let grant = self.make_grant(&slot.name, &holder);
            entry.holders.push(holder);
            #[cfg(feature = "metrics")]
            self.metrics.granted(access);
            return Ok(Arrival::Done(Some(grant)));
        }
        let give_up_at = match wait {
            Wait::No => return Ok(Arrival::Done(None)),
            Wait::Up(timeout) => Some(now.saturating_add(duration_to_nanos(timeout))),
            Wait::Forever => None,
        };
        entry.last_ticket += 1;
        let wake = Arc::new(Condvar::new());
        entry.queue.push_back(Waiter {
            ticket: entry.last_ticket,
            access,
            lease,
            wake: Arc::clone(&wake),
        });
        Ok(Arrival::Queued(Queued {
            ticket: entry.last_ticket,
            access,
            lease,
            wake,
            give_up_at,
        }))
    }

    /// The whole request on one slot: arrival, then the wait if it queued.
    #[inline(always)]
    fn grant_in(
        &self,
        slot: &Slot,
        access: Access,
        lease: u64,
        wait: Wait,
    ) -> Result<Option<Grant>, Error> {
        let mut entry = slot.entry.lock();
        match self.arrive(slot, &mut entry, access, lease, wait)? {
            Arrival::Done(granted) => Ok(granted),
            Arrival::Queued(queued) => self.wait_in_queue(slot, entry, &queued),
        }
    }

    /// Blocks in the queue of `slot` until granted, timed out, or out of tokens.
    fn wait_in_queue(
        &self,
        slot: &Slot,
        mut entry: MutexGuard<'_, Entry>,
        queued: &Queued,
    ) -> Result<Option<Grant>, Error> {
        let ticket = queued.ticket;
        loop {
            let now = self.clock.now_nanos();
            self.settle(slot, &mut entry, now);
            if let Some(holder) = entry.holders.iter().find(|h| h.ticket == ticket) {
                #[cfg(feature = "metrics")]
                self.metrics.waited(holder.access, true);
                return Ok(Some(self.make_grant(&slot.name, holder)));
            }
            let in_queue = entry.queue.iter().any(|w| w.ticket == ticket);
            if !in_queue {
                // Handed the lock, then its lease ran out before this thread woke up to take
                // it (only possible with a lease shorter than a wake-up): queue again, first.
                entry.queue.push_front(Waiter {
                    ticket,
                    access: queued.access,
                    lease: queued.lease,
                    wake: Arc::clone(&queued.wake),
                });
                continue;
            }
            let exhausted = self.last_token.load(Ordering::Relaxed) == u64::MAX
                && entry.queue.front().is_some_and(|w| w.ticket == ticket)
                && compatible(&entry.holders, queued.access);
            let timed_out = queued.give_up_at.is_some_and(|at| now >= at);
            if exhausted || timed_out {
                entry.queue.retain(|w| w.ticket != ticket);
                // Leaving may let the waiters behind in (a writer leaving before readers).
                self.settle(slot, &mut entry, now);
                if exhausted {
                    return Err(Error::TokensExhausted);
                }
                #[cfg(feature = "metrics")]
                self.metrics.waited(queued.access, false);
                return Ok(None);
            }
            // Sleep until the first holder's lease ends or the wait times out, whichever is
            // first; a hand-off or `expire_due` wakes the sleeper earlier.
            let first_expiry = entry
                .holders
                .iter()
                .map(|h| h.granted_at.saturating_add(h.lease))
                .min();
            let until = match (first_expiry, queued.give_up_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match until {
                Some(until) => {
                    let nap = Duration::from_nanos(until.saturating_sub(now).max(1));
                    queued.wake.wait_timeout(&mut entry, nap);
                }
                None => queued.wake.wait(&mut entry),
            }
        }
    }

    /// The error for a grant this instance did not issue.
    fn check_issuer(&self, grant: &Grant) -> Result<(), Error> {
        if grant.issuer == self.issuer {
            Ok(())
        } else {
            Err(Error::ForeignGrant {
                name: grant.name.to_string(),
                token: grant.token,
            })
        }
    }

    /// The slot of the grant's name, kept in the map by the count returned; a name without a
    /// slot holds nothing, so its grant has expired.
    fn slot_of(&self, grant: &Grant) -> Result<Arc<Slot>, Error> {
        self.check_issuer(grant)?;
        let names = self.names.lock();
        match names.map.get(&*grant.name) {
            Some(slot) => Ok(Arc::clone(slot)),
            None => Err(expired(grant)),
        }
    }

    /// Settles the grant's slot at `now` and finds the grant among its live holders.
    ///
    /// The holder is compared by token, so an expired grant never matches the grant that
    /// replaced it.
    #[inline(always)]
    fn find_held(
        &self,
        slot: &Slot,
        entry: &mut Entry,
        grant: &Grant,
        now: u64,
    ) -> Result<usize, Error> {
        self.check_issuer(grant)?;
        self.settle(slot, entry, now);
        entry
            .holders
            .iter()
            .position(|h| h.token == grant.token.get())
            .ok_or_else(|| expired(grant))
    }

    fn extend_in(&self, slot: &Slot, grant: &mut Grant, lease: Duration) -> Result<(), Error> {
        check_lease(lease)?;
        let lease_nanos = duration_to_nanos(lease);
        let mut entry = slot.entry.lock();
        let now = self.clock.now_nanos();
        let index = self.find_held(slot, &mut entry, grant, now)?;
        let holder = &mut entry.holders[index];
        holder.granted_at = now;
        holder.lease = lease_nanos;
        grant.granted_at = now;
        grant.lease = lease;
        Ok(())
    }

    #[inline(always)]
    fn release_in(&self, slot: &Slot, grant: &Grant) -> Result<(), Error> {
        let mut entry = slot.entry.lock();
        let now = self.clock.now_nanos();
        let index = self.find_held(slot, &mut entry, grant, now)?;
        entry.holders.swap_remove(index);
        entry.settle(now, &self.last_token);
        slot.ended.notify_all();
        Ok(())
    }

    fn is_held_in(&self, slot: &Slot, grant: &Grant) -> bool {
        let mut entry = slot.entry.lock();
        let now = self.clock.now_nanos();
        self.find_held(slot, &mut entry, grant, now).is_ok()
    }

    fn wait_lost_in(&self, slot: &Slot, grant: &Grant) {
        let mut entry = slot.entry.lock();
        loop {
            let now = self.clock.now_nanos();
            // The record, not `grant`, knows about extensions made through another handle.
            let deadline = match self.find_held(slot, &mut entry, grant, now) {
                Ok(index) => {
                    let holder = &entry.holders[index];
                    holder.granted_at.saturating_add(holder.lease)
                }
                Err(_) => return,
            };
            let nap = Duration::from_nanos(deadline.saturating_sub(now).max(1));
            slot.ended.wait_timeout(&mut entry, nap);
        }
    }
}

/// The error for a grant whose lease is over.
fn expired(grant: &Grant) -> Error {
    Error::LeaseExpired {
        name: grant.name.to_string(),
        token: grant.token,
    }
}

impl<C: Clock> Locks for MemoryLocks<C> {
    fn grant(
        &self,
        name: &str,
        access: Access,
        lease: Duration,
        wait: Wait,
    ) -> Result<Option<Grant>, Error> {
        check_name(name)?;
        check_lease(lease)?;
        check_access(access)?;
        let lease = duration_to_nanos(lease);
        // The map's mutex only finds the slot: the request itself runs under the slot's
        // mutex alone, so by-name callers of different locks never wait for each other's
        // work, and a caller preempted inside a lock does not hold up the whole map. The
        // count taken here keeps the slot in the map until the request is done.
        let slot = Arc::clone(self.names.lock().slot(name));
        self.grant_in(&slot, access, lease, wait)
    }

    fn extend(&self, grant: &mut Grant, lease: Duration) -> Result<(), Error> {
        check_lease(lease)?;
        let slot = self.slot_of(grant)?;
        self.extend_in(&slot, grant, lease)
    }

    fn release(&self, grant: Grant) -> Result<(), Error> {
        let slot = self.slot_of(&grant)?;
        self.release_in(&slot, &grant)
    }

    fn is_held(&self, grant: &Grant) -> bool {
        self.slot_of(grant)
            .is_ok_and(|slot| self.is_held_in(&slot, grant))
    }

    fn wait_lost(&self, grant: &Grant) {
        if let Ok(slot) = self.slot_of(grant) {
            self.wait_lost_in(&slot, grant);
        }
    }
}

/// A handle on one lock of a [`MemoryLocks`]: the name resolved once.
///
/// Made by [`MemoryLocks::handle`]. Its `acquire`, `try_acquire`, `acquire_timeout`, `read`
/// and `permit` take the lock without looking the name up; the guards they return release
/// through the handle, again without a lookup. Everything else is as through the
/// [`MemoryLocks`] by name: the same holders, queue, leases and tokens.
///
/// A handle is also a [`Locks`]: for its own name it skips the lookup, and for any other
/// name it passes the call on to its [`MemoryLocks`].
///
/// ```
/// use infra_common::ManualClock;
/// use infra_dlock::{Fence, Locks, MemoryLocks};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let locks = MemoryLocks::with_clock(clock.clone());
/// let fence = Fence::new();
/// let account = locks.handle("account-7")?;
/// let lease = Duration::from_secs(5);
///
/// let paused = account.acquire(lease)?.into_grant();
/// clock.advance(Duration::from_secs(6)); // the holder stalls past its lease
/// let next = account.acquire(lease)?;
/// fence.admit("balance/7", "account-7", next.token())?;
/// assert!(fence.admit("balance/7", "account-7", paused.token()).is_err());
/// assert!(account.release(paused).is_err()); // its lease is over
/// # Ok::<(), infra_dlock::Error>(())
/// ```
pub struct LockHandle<'a, C: Clock = SystemClock> {
    locks: &'a MemoryLocks<C>,
    slot: Arc<Slot>,
}

impl<C: Clock> LockHandle<'_, C> {
    /// The lock name.
    pub fn name(&self) -> &str {
        &self.slot.name
    }

    /// Asks for `access` to this lock for `lease`, waiting as `wait` says (see
    /// [`Locks::grant`]).
    ///
    /// # Errors
    ///
    /// As [`Locks::grant`].
    pub fn grant_here(
        &self,
        access: Access,
        lease: Duration,
        wait: Wait,
    ) -> Result<Option<Grant>, Error> {
        check_lease(lease)?;
        check_access(access)?;
        self.locks
            .grant_in(&self.slot, access, duration_to_nanos(lease), wait)
    }

    /// Takes this lock exclusively for `lease`, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As [`Locks::acquire`].
    pub fn acquire(&self, lease: Duration) -> Result<LockGuard<'_, Self>, Error> {
        match self.grant_here(Access::Exclusive, lease, Wait::Forever)? {
            Some(grant) => Ok(LockGuard::new(self, grant)),
            // An unbounded wait ends with a grant or an error; `None` cannot happen, and is
            // reported as the one error such a waiter could have seen rather than a panic.
            None => Err(Error::TokensExhausted),
        }
    }

    /// Takes this lock exclusively for `lease` if it is free now and nobody waits for it.
    ///
    /// # Errors
    ///
    /// As [`Locks::try_acquire`].
    pub fn try_acquire(&self, lease: Duration) -> Result<Option<LockGuard<'_, Self>>, Error> {
        let grant = self.grant_here(Access::Exclusive, lease, Wait::No)?;
        Ok(grant.map(|grant| LockGuard::new(self, grant)))
    }

    /// Takes this lock exclusively for `lease`, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`Locks::acquire_timeout`].
    pub fn acquire_timeout(
        &self,
        lease: Duration,
        timeout: Duration,
    ) -> Result<Option<LockGuard<'_, Self>>, Error> {
        let grant = self.grant_here(Access::Exclusive, lease, Wait::Up(timeout))?;
        Ok(grant.map(|grant| LockGuard::new(self, grant)))
    }

    /// Takes the read side of this read-write lock for `lease`, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As [`Locks::read`].
    pub fn read(&self, lease: Duration) -> Result<LockGuard<'_, Self>, Error> {
        let grant = self.grant_here(Access::Shared, lease, Wait::Forever)?;
        let grant = grant.ok_or(Error::TokensExhausted)?;
        Ok(LockGuard::new(self, grant))
    }

    /// Takes one of the `permits` permits of this semaphore for `lease`, waiting as long as
    /// it takes.
    ///
    /// # Errors
    ///
    /// As [`Locks::permit`].
    pub fn permit(&self, permits: u32, lease: Duration) -> Result<LockGuard<'_, Self>, Error> {
        let access = Access::Permit { permits };
        let grant = self.grant_here(access, lease, Wait::Forever)?;
        let grant = grant.ok_or(Error::TokensExhausted)?;
        Ok(LockGuard::new(self, grant))
    }

    /// How many requests wait in this lock's queue right now.
    pub fn queue_len(&self) -> usize {
        self.slot.entry.lock().queue.len()
    }

    /// Whether `grant` is for this handle's lock (the grant's name is compared).
    fn is_mine(&self, grant: &Grant) -> bool {
        // A grant made through this slot shares its name's allocation, so the usual case
        // is one pointer compare; a grant of an earlier slot of the same name (swept after
        // the grant's lease ended) falls back to comparing the text.
        let (theirs, ours) = (&*grant.name, &*self.slot.name);
        std::ptr::eq(theirs, ours) || theirs == ours
    }
}

impl<C: Clock> Locks for LockHandle<'_, C> {
    fn grant(
        &self,
        name: &str,
        access: Access,
        lease: Duration,
        wait: Wait,
    ) -> Result<Option<Grant>, Error> {
        if name == self.name() {
            self.grant_here(access, lease, wait)
        } else {
            self.locks.grant(name, access, lease, wait)
        }
    }

    fn extend(&self, grant: &mut Grant, lease: Duration) -> Result<(), Error> {
        if self.is_mine(grant) {
            self.locks.extend_in(&self.slot, grant, lease)
        } else {
            self.locks.extend(grant, lease)
        }
    }

    fn release(&self, grant: Grant) -> Result<(), Error> {
        if self.is_mine(&grant) {
            self.locks.release_in(&self.slot, &grant)
        } else {
            self.locks.release(grant)
        }
    }

    fn is_held(&self, grant: &Grant) -> bool {
        if self.is_mine(grant) {
            self.locks.is_held_in(&self.slot, grant)
        } else {
            self.locks.is_held(grant)
        }
    }

    fn wait_lost(&self, grant: &Grant) {
        if self.is_mine(grant) {
            self.locks.wait_lost_in(&self.slot, grant);
        } else {
            self.locks.wait_lost(grant);
        }
    }
}

impl<C: Clock> fmt::Debug for LockHandle<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockHandle")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

impl<C: Clock> fmt::Debug for MemoryLocks<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLocks")
            .field("clock", &self.clock)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// A number no other instance in this process has.
// A process-wide counter of instances, not state the locks share between threads: loom's
// atomics cannot live in a static, and instance numbering is not part of any model.
#[allow(clippy::disallowed_types)]
fn next_issuer() -> u64 {
    static ISSUERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    ISSUERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use infra_common::ManualClock;

    #[test]
    fn idle_names_are_swept_so_the_map_follows_the_names_in_use() {
        let locks = MemoryLocks::with_clock(ManualClock::new());
        let lease = Duration::from_secs(1);
        let held: Vec<_> = (0..10)
            .map(|i| locks.acquire(&format!("held-{i}"), lease).unwrap())
            .collect();
        for i in 0..10_000 {
            let guard = locks.acquire(&format!("passing-{i}"), lease).unwrap();
            guard.release().unwrap();
            let names = locks.names.lock().map.len();
            assert!(names <= 2 * (held.len() + 1) + MIN_SWEEP, "{names} names");
        }
        // The same name again and again reuses its entry.
        let before = locks.names.lock().map.len();
        for _ in 0..100 {
            locks.acquire("held-0x", lease).unwrap().release().unwrap();
        }
        assert!(locks.names.lock().map.len() <= before + 1);
        assert!(held.iter().all(LockGuard::is_held));
    }
}
