//! The in-process backend: leased, fenced, FIFO-fair locks for the threads of one process.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use infra_common::clock::duration_to_nanos;
use infra_common::sync::atomic::{AtomicU64, Ordering, fence};
use infra_common::sync::thread::thread_local;
use infra_common::sync::{Arc, Condvar, Mutex, MutexGuard};
use infra_common::{Clock, RandomState, SystemClock};

mod handle;

pub use handle::{HandleGuard, LockHandle};

use crate::error::Error;
use crate::grant::{
    Access, FencingToken, Grant, LockName, Wait, check_lease, check_name, check_request,
};
use crate::locks::Locks;

/// Leased, fenced locks for the threads of one process.
///
/// FIFO-fair per name, leases on the given [`Clock`], no busy waiting, no background thread.
///
/// # How it works
///
/// Each lock name has its own state: one atomic word (free, or held on the fast path with a
/// token, or in the mutex's hands) and, behind its own mutex, the current holders and a FIFO
/// queue of waiters. A map from name to that state, behind one more mutex, finds it for the
/// calls that name a lock; a [`LockHandle`] keeps the name's state and skips the map. Each
/// name counts its own tokens; a name swept out of the map and made again counts on from the
/// highest token swept. Idle names are kept for reuse and swept out of the map once it has
/// doubled since the last sweep; a name a handle or a waiting call still points at is kept.
/// A name whose holders all let their leases run out without a release is idle too: the
/// sweep ends those leases first.
///
/// **Fast path.** A free lock taken exclusively (`acquire`, `try_acquire`,
/// `acquire_timeout`) is granted with one compare-and-swap of the word, a clock reading and
/// the lease's publication; its release is a clock reading and one compare-and-swap back,
/// which also compares the token. Everything else takes the mutex: readers and permits,
/// waiting, `extend`, `wait_lost`, and a lease that has run out. A request that must wait
/// first marks the word as in the mutex's hands, so no later request takes the lock on the
/// fast path ahead of it and the holder's release comes to the mutex to hand the lock on.
///
/// **Hand-off.** A waiter is granted by whoever frees the lock: a release, an expiry or a
/// waiter leaving the queue moves the queue's head into the holders (with a new token, the
/// lease starting at that moment) and wakes that one waiter on its own condition variable.
/// Nobody overtakes the queue: a request is granted on arrival only if nobody is queued.
///
/// **Expiry without busy waiting.** Leases are never swept by a background thread. Every call
/// that touches a name first drops that name's expired holders and hands the lock on; a waiter
/// sleeps at most until the earliest deadline among the holders it waits behind (or its own
/// timeout), then looks again; the time left on the lock's clock is slept as real time, and
/// a sleeper whose clock has not moved since its last nap naps at least 1 ms, so a clock
/// standing still never makes it spin. With [`SystemClock`] that wakes it when the lease ends. A
/// [`ManualClock`](infra_common::ManualClock) does not move by itself, so a test that advances
/// it lets waiters in by touching the name (any acquire, release, `is_held`) or by calling
/// [`MemoryLocks::expire_due`], which ends every expired lease and wakes every waiter to look
/// at the clock again.
///
/// **A coarse clock.** With [`CoarseClock`](infra_common::CoarseClock) (a cached reading, one
/// atomic load) a reading lags the true time by up to the clock's precision, and is never
/// ahead of it. A grant's start is a reading taken no later than the grant, so its
/// [`deadline`](Grant::deadline_nanos) is never later than the true grant plus the lease: a
/// holder that checks it against the [`SystemClock`] stops in time, up to one precision
/// early. The backend ends a lease when its own lagging reading passes that deadline, up to
/// one precision (plus the upkeep thread's delay) late: the lock may stay closed to others a
/// little longer than asked, never shorter than its holder believes.
///
/// # Safe for correctness?
///
/// With a [`Fence`](crate::Fence) at the resource, yes for mutexes and read-write locks
/// (writers `admit`, readers `check`): tokens and leases come from this one instance, so a
/// holder that stalls past its lease holds a smaller token than the next holder and its late
/// write is refused (`a_holder_paused_past_its_lease_has_its_write_refused` and
/// `threads_incrementing_through_a_fence_lose_nothing_while_leases_expire_under_them` in
/// `tests/memory.rs`). Without a fence it is an **efficiency** lock: nothing stops a stalled
/// holder from writing late. A semaphore is an efficiency limit with a fence or without, since
/// its permits do not exclude each other. Tokens restart with the process unless
/// [`MemoryLocks::with_tokens_after`] starts them above a persisted fence's mark.
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
    names: Mutex<Names>,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::LockCounters,
}

struct Names {
    map: HashMap<Box<str>, Arc<Slot>, RandomState>,
    /// The map size at which idle names are swept out (see [`Names::slot`]).
    sweep_at: usize,
    /// At least the last token of every name swept out so far (and the instance's starting
    /// point): a name's new slot counts on from here, so its tokens keep growing across a
    /// sweep.
    tokens_after: u64,
    /// How many slots were made so far, to number them.
    slots_made: u64,
}

/// Below this many names, idle names are never swept.
const MIN_SWEEP: usize = 64;

/// One lock name's state.
///
/// Lock order: the map's mutex before a slot's, never the other way round.
///
/// **Two ways to hold a slot.** A free lock taken exclusively is granted on the *fast path*:
/// one compare-and-swap of [`Slot::state`] from free to held with the next token, then the
/// grant's lease published in [`Slot::fast`]; its release is one compare-and-swap back, which
/// also checks the token. Everything else (readers, permits, waiters, extensions, an expired
/// lease taken over, loss waiters) runs under the slot's mutex on the [`Entry`]. Before it
/// touches the entry, a call under the mutex moves the lock into the entry's hands (see
/// [`Slot::take_over`]): the state word then says `ENTRY`, which no fast
/// acquire or release can change, so a fast acquire never overtakes a queued waiter and a
/// holder's release finds its way to the mutex, hands the lock on and wakes whoever waits.
/// The word goes back to free when a call leaves the entry idle.
struct Slot {
    /// The name, handed out with each grant.
    name: LockName,
    /// This slot among the instance's slots, past and present; handed out with each grant.
    number: u64,
    /// `token << MODE_BITS | mode`: `FREE` (nobody holds or waits; the token is the last
    /// issued), `FAST` (one exclusive holder granted on the fast path, with this token) or
    /// `ENTRY` (the entry under the mutex holds the whole state, and its last token).
    state: AtomicU64,
    /// The lease of the holder granted on the fast path.
    fast: FastLease,
    entry: Mutex<Entry>,
    /// Notified whenever a grant of this name ends, for [`Locks::wait_lost`].
    ended: Condvar,
}

const MODE_BITS: u32 = 2;
const MODE: u64 = (1 << MODE_BITS) - 1;
const FREE: u64 = 0;
const FAST: u64 = 1;
const ENTRY: u64 = 2;
/// The largest token the state word holds; past it a name stays in its entry's hands and
/// counts on there, up to `u64::MAX`.
const MAX_FAST_TOKEN: u64 = u64::MAX >> MODE_BITS;

const fn state(token: u64, mode: u64) -> u64 {
    token << MODE_BITS | mode
}

/// The lease of the holder granted on the fast path, written by that holder right after its
/// compare-and-swap won: `owner` last, so a reader that finds its token there reads its lease.
///
/// The compare-and-swap cannot carry the lease (a token and a deadline do not fit in one
/// word), so between it and these stores a holder's lease is unknown to others: they treat
/// such a holder as holding (see [`Holder::pending`]), which can only make them wait.
struct FastLease {
    owner: AtomicU64,
    granted_at: AtomicU64,
    lease: AtomicU64,
}

impl FastLease {
    /// The lease of fast holder `token`, once it has published it.
    fn of(&self, token: u64) -> Option<(u64, u64)> {
        // Acquire: pairs with the owner's Release store, after its lease's.
        (self.owner.load(Ordering::Acquire) == token).then(|| {
            (
                self.granted_at.load(Ordering::Relaxed),
                self.lease.load(Ordering::Relaxed),
            )
        })
    }
}

impl Slot {
    fn new(name: &str, number: u64, tokens_after: u64) -> Self {
        // A token too large for the word: the name lives in its entry from the start.
        let mode = if tokens_after <= MAX_FAST_TOKEN {
            state(tokens_after, FREE)
        } else {
            ENTRY
        };
        Self {
            name: LockName::from(name),
            number,
            state: AtomicU64::new(mode),
            fast: FastLease {
                owner: AtomicU64::new(0),
                granted_at: AtomicU64::new(0),
                lease: AtomicU64::new(0),
            },
            entry: Mutex::new(Entry {
                last_token: tokens_after,
                last_ticket: 0,
                holders: Vec::new(),
                queue: VecDeque::new(),
            }),
            ended: Condvar::new(),
        }
    }

    /// The last token issued, if the map may drop this slot: nobody points at it but the
    /// map, and it has no holder or waiter. A slot a handle points at must stay, or a new
    /// slot for the same name would let the handle's grants and the map's overlap.
    fn sweepable(slot: &Arc<Self>) -> Option<u64> {
        if Arc::strong_count(slot) != 1 {
            return None;
        }
        // The count is read without ordering; the fence pairs with the release of the last
        // other reference (dropping an `Arc` decrements with `Release`), so the word read
        // below sees every change its holder made before letting go, on any processor.
        fence(Ordering::Acquire);
        // Nobody else points at the slot, so nobody changes the word while this reads it.
        let word = slot.state.load(Ordering::Acquire);
        match word & MODE {
            FREE => Some(word >> MODE_BITS),
            ENTRY => {
                let entry = slot.entry.lock();
                entry.is_idle().then_some(entry.last_token)
            }
            _ => None,
        }
    }

    /// Puts the lock in its entry's hands (`ENTRY` mode), moving a fast-path holder into the
    /// entry's holders, so that no fast acquire or release changes the lock while the caller
    /// works under the mutex. The caller holds the slot's mutex and calls [`Slot::leave`]
    /// when done.
    ///
    /// This is the waiter bit of the fast path: from here on a fast acquire finds the lock
    /// taken, and the fast holder's release fails its compare-and-swap and comes to the mutex.
    fn take_over(&self, entry: &mut Entry) {
        let mut word = self.state.load(Ordering::Acquire);
        loop {
            let mode = word & MODE;
            if mode == ENTRY {
                return;
            }
            let token = word >> MODE_BITS;
            // Read before the swap. If the swap succeeds the word was `FAST(token)` all along
            // (a token is issued once, so the word never comes back to it), and only that
            // holder writes the fast lease while it is.
            let fast_lease = (mode == FAST).then(|| self.fast.of(token));
            match self
                .state
                .compare_exchange(word, ENTRY, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    entry.last_token = token;
                    if let Some(fast_lease) = fast_lease {
                        let ((granted_at, lease), pending) = match fast_lease {
                            Some(known) => (known, false),
                            None => ((0, 0), true),
                        };
                        entry.holders.push(Holder {
                            token,
                            ticket: 0,
                            access: Access::Exclusive,
                            granted_at,
                            lease,
                            pending,
                        });
                    }
                    return;
                }
                Err(current) => word = current,
            }
        }
    }

    /// Gives the lock back to the fast path if the entry is idle (and its token fits).
    ///
    /// Called under the entry's mutex, in `ENTRY` mode, which only the mutex's holder
    /// changes: a plain store.
    fn leave(&self, entry: &Entry) {
        if entry.is_idle() && entry.last_token <= MAX_FAST_TOKEN {
            // Release: a fast acquirer that takes the lock sees everything done under it.
            self.state
                .store(state(entry.last_token, FREE), Ordering::Release);
        }
    }
}

impl Names {
    /// Whether making a slot for `name` must sweep first: the name is new and the map has
    /// doubled since the last sweep.
    fn sweep_due(&self, name: &str) -> bool {
        self.map.len() >= self.sweep_at && !self.map.contains_key(name)
    }

    /// Sweeps out the idle slots and sets the size of the next sweep: twice what is left.
    fn sweep_and_rearm(&mut self) {
        self.sweep();
        self.sweep_at = (self.map.len() * 2).max(MIN_SWEEP);
    }

    /// The slot of `name`, created idle if missing.
    ///
    /// Idle slots stay in the map, so a lock taken again and again costs no allocation;
    /// they are swept out whenever the map has doubled since the last sweep (see
    /// [`MemoryLocks::slot_named`]), which keeps it within twice the names in use (plus
    /// [`MIN_SWEEP`]) at an amortized constant cost.
    fn slot(&mut self, name: &str) -> &Arc<Slot> {
        if !self.map.contains_key(name) {
            self.slots_made += 1;
            let slot = Slot::new(name, self.slots_made, self.tokens_after);
            self.map.insert(name.into(), Arc::new(slot));
        }
        self.map.get(name).expect("inserted above")
    }

    /// Drops the idle slots nobody else points at, keeping their last tokens.
    fn sweep(&mut self) {
        let tokens_after = &mut self.tokens_after;
        self.map.retain(|_, slot| match Slot::sweepable(slot) {
            Some(last) => {
                *tokens_after = (*tokens_after).max(last);
                false
            }
            None => true,
        });
    }
}

struct Entry {
    /// The last token issued for this name, while the entry holds the state.
    last_token: u64,
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
    /// A fast-path holder taken into the entry before it published its lease: held until
    /// the lease is known (read again from [`Slot::fast`] on every settle).
    pending: bool,
}

/// One grant of a slot in four words: with the slot's name and number and the instance's
/// issuer it makes the [`Grant`] (see [`MemoryLocks::grant_of`]). Requests carry this until
/// a grant leaves the crate, and a [`HandleGuard`] keeps only this: a guard holding the whole
/// grant copied its name on every acquisition and moved it through memory on every call,
/// which took five times as long as the lock itself.
#[derive(Clone, Copy)]
struct Held {
    access: Access,
    token: u64,
    granted_at: u64,
    lease: u64,
}

impl Held {
    fn of_holder(holder: &Holder) -> Self {
        Self {
            access: holder.access,
            token: holder.token,
            granted_at: holder.granted_at,
            lease: holder.lease,
        }
    }

    fn of_grant(grant: &Grant) -> Self {
        Self {
            access: grant.access,
            token: grant.token.get(),
            granted_at: grant.granted_at,
            lease: grant.lease_nanos(),
        }
    }

    /// Whether the lease runs at `now` (the holder's record, as long as the grant is held on
    /// the fast path: extending takes it to the entry).
    fn runs_at(&self, now: u64) -> bool {
        now.saturating_sub(self.granted_at) < self.lease
    }

    /// The state word while this grant is held on the fast path, if its token fits one.
    fn fast_word(&self) -> Option<u64> {
        (self.access == Access::Exclusive && self.token <= MAX_FAST_TOKEN)
            .then(|| state(self.token, FAST))
    }
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

impl Queued {
    /// The request as its queue keeps it.
    fn waiter(&self) -> Waiter {
        Waiter {
            ticket: self.ticket,
            access: self.access,
            lease: self.lease,
            wake: Arc::clone(&self.wake),
        }
    }
}

/// What a request found on arrival.
enum Arrival {
    /// Granted, or refused without waiting.
    Done(Option<Held>),
    /// Queued; wait.
    Queued(Queued),
}

/// How a wait in the queue ended without an error.
enum Waited {
    Granted(Held),
    /// Timed out and left the queue.
    GaveUp,
    /// Timed out and kept its place, for a [`QueuePlace`] to take up again.
    Kept,
}

/// When a wait that starts at `now` gives up: at once, after its timeout, or never.
fn give_up_at(wait: Wait, now: u64) -> Option<u64> {
    match wait {
        Wait::No => Some(now),
        Wait::Up(timeout) => Some(now.saturating_add(duration_to_nanos(timeout))),
        Wait::Forever => None,
    }
}

/// How long a sleeper waits before it looks again at a holder whose lease is not known yet
/// (published a few instructions after its grant, unless that thread was preempted there).
const PENDING_RECHECK: Duration = Duration::from_millis(1);

impl Holder {
    fn runs_at(&self, now: u64) -> bool {
        self.pending || now.saturating_sub(self.granted_at) < self.lease
    }

    /// When a sleeper should look at this holder again: its lease's end.
    fn wake_at(&self, now: u64) -> u64 {
        if self.pending {
            now.saturating_add(duration_to_nanos(PENDING_RECHECK))
        } else {
            self.granted_at.saturating_add(self.lease)
        }
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

impl Entry {
    /// The next token, or `None` once the counter is at its end: tokens never wrap.
    fn next_token(&mut self) -> Option<u64> {
        self.last_token = self.last_token.checked_add(1)?;
        Some(self.last_token)
    }

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
    fn settle(&mut self, now: u64, fast: &FastLease) -> usize {
        for holder in self.holders.iter_mut().filter(|h| h.pending) {
            if let Some((granted_at, lease)) = fast.of(holder.token) {
                (holder.granted_at, holder.lease, holder.pending) = (granted_at, lease, false);
            }
        }
        let before = self.holders.len();
        self.holders.retain(|h| h.runs_at(now));
        let ended = before - self.holders.len();
        while let Some(head) = self.queue.front() {
            if !compatible(&self.holders, head.access) {
                break;
            }
            if self.last_token == u64::MAX {
                // Wake the head so it reports the exhaustion instead of waiting forever.
                head.wake.notify_one();
                break;
            }
            let token = self.next_token().expect("not at the end, checked above");
            let head = self.queue.pop_front().expect("the queue has a head");
            self.holders.push(Holder {
                token,
                ticket: head.ticket,
                access: head.access,
                granted_at: now,
                lease: head.lease,
                pending: false,
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
            names: Mutex::new(Names {
                map: HashMap::default(),
                sweep_at: MIN_SWEEP,
                tokens_after: last.get(),
                slots_made: 0,
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
        let slot = self.slot_named(name);
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
            slot.take_over(&mut entry);
            expired += self.settle(slot, &mut entry, now);
            for waiter in &entry.queue {
                waiter.wake.notify_one();
            }
            slot.leave(&entry);
        }
        names.sweep();
        expired
    }

    /// The slot of `name`, made if missing; a new name that finds the map doubled since the
    /// last sweep sweeps it first.
    fn slot_named(&self, name: &str) -> Arc<Slot> {
        let mut names = self.names.lock();
        if names.sweep_due(name) {
            self.end_unreferenced_leases(&names);
            names.sweep_and_rearm();
        }
        Arc::clone(names.slot(name))
    }

    /// Ends the expired leases of the slots only the map points at, so that the sweep that
    /// follows finds idle a name whose holder let its lease run out without a release (a
    /// dropped `Grant`, a forgotten guard). Without this such names would stay in the map
    /// until touched again, and names used once (per order, per user) would pile up.
    ///
    /// A slot the map alone points at cannot gain another user while the map's mutex is
    /// held (every other path clones it under that mutex), so nothing races the settling
    /// but a count that only falls.
    fn end_unreferenced_leases(&self, names: &Names) {
        let now = self.clock.now_nanos();
        let unreferenced = names
            .map
            .values()
            .filter(|slot| Arc::strong_count(slot) == 1);
        for slot in unreferenced {
            if slot.state.load(Ordering::Acquire) & MODE == FREE {
                continue;
            }
            let mut entry = slot.entry.lock();
            slot.take_over(&mut entry);
            self.settle(slot, &mut entry, now);
            slot.leave(&entry);
        }
    }

    /// Settles `entry` at `now`, waking the grant's loss waiters if any lease ended.
    #[inline(always)]
    fn settle(&self, slot: &Slot, entry: &mut Entry, now: u64) -> usize {
        let ended = entry.settle(now, &slot.fast);
        if ended > 0 {
            slot.ended.notify_all();
            #[cfg(feature = "metrics")]
            self.metrics.leases_lost(ended);
        }
        ended
    }

    /// The grant `held` of `slot`, as this instance hands it out.
    fn grant_of(&self, slot: &Slot, held: Held) -> Grant {
        Grant {
            name: LockName::clone(&slot.name),
            access: held.access,
            token: FencingToken::new(held.token),
            granted_at: held.granted_at,
            lease: Duration::from_nanos(held.lease),
            issuer: self.issuer,
            record: slot.number,
        }
    }

    /// Takes a free lock exclusively without its mutex: one compare-and-swap from free to
    /// held with the next token, then the lease published for whoever takes the lock into
    /// its entry. `None` if the lock is not free (held, waited for, in its entry's hands, or
    /// out of tokens that fit the word): the caller goes the slow way.
    #[inline(always)]
    fn acquire_fast(&self, slot: &Slot, lease: u64) -> Option<Held> {
        let word = slot.state.load(Ordering::Relaxed);
        let last = word >> MODE_BITS;
        if word & MODE != FREE || last == MAX_FAST_TOKEN {
            return None;
        }
        let token = last + 1;
        // Read before the swap: the lease starts no later than the grant, never after.
        let now = self.clock.now_nanos();
        // Acquire: this holder sees everything its predecessors did under the lock.
        slot.state
            .compare_exchange(
                word,
                state(token, FAST),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .ok()?;
        slot.fast.granted_at.store(now, Ordering::Relaxed);
        slot.fast.lease.store(lease, Ordering::Relaxed);
        slot.fast.owner.store(token, Ordering::Release);
        #[cfg(feature = "metrics")]
        self.metrics.granted(Access::Exclusive);
        Some(Held {
            access: Access::Exclusive,
            token,
            granted_at: now,
            lease,
        })
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
            let Some(token) = entry.next_token() else {
                return Err(Error::TokensExhausted);
            };
            let holder = Holder {
                token,
                ticket: 0,
                access,
                granted_at: now,
                lease,
                pending: false,
            };
            let held = Held::of_holder(&holder);
            entry.holders.push(holder);
            #[cfg(feature = "metrics")]
            self.metrics.granted(access);
            return Ok(Arrival::Done(Some(held)));
        }
        if wait == Wait::No {
            return Ok(Arrival::Done(None));
        }
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
            give_up_at: give_up_at(wait, now),
        }))
    }

    /// The whole request on one slot: the fast path for a free lock taken exclusively, else
    /// arrival under the mutex (or, inside [`QueuePlace`], the place it kept taken up again),
    /// then the wait if it queued.
    #[inline(always)]
    fn grant_in(
        &self,
        slot: &Arc<Slot>,
        access: Access,
        lease: u64,
        wait: Wait,
    ) -> Result<Option<Held>, Error> {
        // A kept place holds the lock in its entry's hands, so the fast path fails for it.
        if access == Access::Exclusive
            && let Some(held) = self.acquire_fast(slot, lease)
        {
            return Ok(Some(held));
        }
        let mut entry = slot.entry.lock();
        slot.take_over(&mut entry);
        let slice = Slice::take_for(slot);
        let keep = slice.as_ref().is_some_and(|slice| slice.keep);
        let arrival = match slice.and_then(|slice| slice.kept) {
            Some(kept) => Ok(Arrival::Queued(Queued {
                give_up_at: give_up_at(wait, self.clock.now_nanos()),
                ..kept.waiter
            })),
            None => self.arrive(slot, &mut entry, access, lease, wait),
        };
        let mut kept = None;
        let granted = match arrival {
            Ok(Arrival::Done(granted)) => Ok(granted),
            Ok(Arrival::Queued(queued)) => {
                match self.wait_in_queue(slot, &mut entry, &queued, keep) {
                    Ok(Waited::Granted(held)) => Ok(Some(held)),
                    Ok(Waited::GaveUp) => Ok(None),
                    Ok(Waited::Kept) => {
                        kept = Some(Kept {
                            slot: Arc::clone(slot),
                            waiter: queued,
                        });
                        Ok(None)
                    }
                    Err(error) => Err(error),
                }
            }
            Err(error) => Err(error),
        };
        if keep || kept.is_some() {
            Slice::put_back(Slice { kept, keep });
        }
        slot.leave(&entry);
        granted
    }

    /// Blocks in the queue of `slot` until granted, timed out (leaving the queue, or staying
    /// in it if `keep`), or out of tokens.
    fn wait_in_queue(
        &self,
        slot: &Slot,
        entry: &mut MutexGuard<'_, Entry>,
        queued: &Queued,
        keep: bool,
    ) -> Result<Waited, Error> {
        let ticket = queued.ticket;
        let mut napped_at = None;
        loop {
            // Taken over again after every sleep: while this thread slept without the mutex,
            // a hand-off to it whose lease ran out left the entry idle for a moment, and
            // whoever held the mutex then gave the lock back to the fast path, which may have
            // issued tokens since. Without this the entry would issue them again.
            slot.take_over(entry);
            let now = self.clock.now_nanos();
            self.settle(slot, entry, now);
            if let Some(holder) = entry.holders.iter().find(|h| h.ticket == ticket) {
                #[cfg(feature = "metrics")]
                self.metrics.waited(holder.access, true);
                return Ok(Waited::Granted(Held::of_holder(holder)));
            }
            let in_queue = entry.queue.iter().any(|w| w.ticket == ticket);
            if !in_queue {
                // Handed the lock, then its lease ran out before this thread woke up to take
                // it (only possible with a lease shorter than a wake-up): queue again, first.
                entry.queue.push_front(queued.waiter());
                continue;
            }
            let exhausted = entry.last_token == u64::MAX
                && entry.queue.front().is_some_and(|w| w.ticket == ticket)
                && compatible(&entry.holders, queued.access);
            let timed_out = queued.give_up_at.is_some_and(|at| now >= at);
            if timed_out && keep && !exhausted {
                // Still queued, with no thread waiting: whoever frees the lock hands it to this
                // place as to any waiter, and the next wait of the `QueuePlace` takes it up.
                return Ok(Waited::Kept);
            }
            if exhausted || timed_out {
                entry.queue.retain(|w| w.ticket != ticket);
                // Leaving may let the waiters behind in (a writer leaving before readers).
                self.settle(slot, entry, now);
                if exhausted {
                    return Err(Error::TokensExhausted);
                }
                #[cfg(feature = "metrics")]
                self.metrics.waited(queued.access, false);
                return Ok(Waited::GaveUp);
            }
            // Sleep until the first holder's lease ends or the wait times out, whichever is
            // first; a hand-off or `expire_due` wakes the sleeper earlier.
            let first_expiry = entry.holders.iter().map(|h| h.wake_at(now)).min();
            let until = match (first_expiry, queued.give_up_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match until {
                Some(until) => {
                    queued
                        .wake
                        .wait_timeout(entry, nap(now, until, &mut napped_at));
                }
                None => queued.wake.wait(entry),
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
    /// replaced it. The caller has taken the state over ([`Slot::take_over`]).
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

    /// Runs `work` on the grant's holder record under the slot's mutex, with the state taken
    /// over and given back afterwards.
    fn with_held<R>(
        &self,
        slot: &Slot,
        grant: &Grant,
        work: impl FnOnce(&mut Entry, usize, u64) -> R,
    ) -> Result<R, Error> {
        let mut entry = slot.entry.lock();
        slot.take_over(&mut entry);
        let now = self.clock.now_nanos();
        let done = self
            .find_held(slot, &mut entry, grant, now)
            .map(|index| work(&mut entry, index, now));
        slot.leave(&entry);
        done
    }

    fn extend_in(&self, slot: &Slot, grant: &mut Grant, lease: Duration) -> Result<(), Error> {
        check_lease(lease)?;
        let lease_nanos = duration_to_nanos(lease);
        let now = self.with_held(slot, grant, |entry, index, now| {
            let holder = &mut entry.holders[index];
            (holder.granted_at, holder.lease, holder.pending) = (now, lease_nanos, false);
            now
        })?;
        grant.granted_at = now;
        grant.lease = lease;
        Ok(())
    }

    /// Ends `held` with one compare-and-swap if it was granted on the fast path, is still
    /// held there and its lease runs; `false` sends the release the slow way.
    #[inline(always)]
    fn release_fast(&self, slot: &Slot, held: &Held) -> bool {
        let Some(word) = held.fast_word() else {
            return false;
        };
        // The compared word holds the token, so only this grant's hold is freed: after an
        // expiry the word went through the entry and holds another token, or `ENTRY`.
        // Release: the next holder sees everything done under the lock.
        held.runs_at(self.clock.now_nanos())
            && slot
                .state
                .compare_exchange(
                    word,
                    word & !MODE | FREE,
                    Ordering::Release,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Ends `grant` under the slot's mutex, handing the lock on.
    fn release_slow(&self, slot: &Slot, grant: &Grant) -> Result<(), Error> {
        self.with_held(slot, grant, |entry, index, now| {
            entry.holders.swap_remove(index);
            entry.settle(now, &slot.fast);
            slot.ended.notify_all();
        })
    }

    #[inline(always)]
    fn release_in(&self, slot: &Slot, grant: &Grant) -> Result<(), Error> {
        self.check_issuer(grant)?;
        if self.release_fast(slot, &Held::of_grant(grant)) {
            return Ok(());
        }
        self.release_slow(slot, grant)
    }

    /// Ends `held`, granted by this instance in `slot`.
    #[inline(always)]
    fn release_held(&self, slot: &Slot, held: Held) -> Result<(), Error> {
        if self.release_fast(slot, &held) {
            return Ok(());
        }
        self.release_slow(slot, &self.grant_of(slot, held))
    }

    /// Whether `held`, granted by this instance in `slot`, is held on the fast path with a
    /// lease that runs.
    fn is_held_fast(&self, slot: &Slot, held: &Held) -> bool {
        held.fast_word()
            .is_some_and(|word| slot.state.load(Ordering::Acquire) == word)
            && held.runs_at(self.clock.now_nanos())
    }

    fn is_held_in(&self, slot: &Slot, grant: &Grant) -> bool {
        (grant.issuer == self.issuer && self.is_held_fast(slot, &Held::of_grant(grant)))
            || self.is_held_slow(slot, grant)
    }

    /// Whether `held`, granted by this instance in `slot`, is still held.
    fn is_held_as(&self, slot: &Slot, held: Held) -> bool {
        self.is_held_fast(slot, &held) || self.is_held_slow(slot, &self.grant_of(slot, held))
    }

    /// Whether `grant` is among the slot's holders, asked under its mutex (a grant not held on
    /// the fast path: expired, released or in the entry's hands); settling there also hands an
    /// expired lock on to its waiters.
    fn is_held_slow(&self, slot: &Slot, grant: &Grant) -> bool {
        self.with_held(slot, grant, |_, _, _| ()).is_ok()
    }

    fn wait_lost_in(&self, slot: &Slot, grant: &Grant) {
        let mut entry = slot.entry.lock();
        let mut napped_at = None;
        loop {
            // Taken over so that the holder's release comes through the mutex and wakes this.
            slot.take_over(&mut entry);
            let now = self.clock.now_nanos();
            // The record, not `grant`, knows about extensions made through another handle.
            let wake_at = match self.find_held(slot, &mut entry, grant, now) {
                Ok(index) => entry.holders[index].wake_at(now),
                Err(_) => break,
            };
            slot.ended
                .wait_timeout(&mut entry, nap(now, wake_at, &mut napped_at));
        }
        slot.leave(&entry);
    }
}

/// The shortest nap of a sleeper whose clock has not moved since its last nap.
const STILL_CLOCK_NAP: Duration = Duration::from_millis(1);

/// How long a sleeper that read `now` naps before it looks again at a deadline `until`, both
/// on the lock's clock; `napped_at` is the reading of its last nap.
///
/// The time left on the lock's clock is slept as real time. A clock that has not moved since
/// the last nap (a manual clock standing still, a coarse clock between two ticks) would
/// otherwise make the sleeper nap the same few nanoseconds again and again, a busy wait: then
/// it naps at least [`STILL_CLOCK_NAP`]. A clock that moves is followed to the nanosecond.
fn nap(now: u64, until: u64, napped_at: &mut Option<u64>) -> Duration {
    let floor = if *napped_at == Some(now) {
        STILL_CLOCK_NAP
    } else {
        Duration::from_nanos(1)
    };
    *napped_at = Some(now);
    Duration::from_nanos(until.saturating_sub(now)).max(floor)
}

/// A waiter's place in a [`MemoryLocks`] queue, kept from one bounded wait to the next.
///
/// A caller that waits in slices (to look at something else between two of them, as
/// [`AsyncLocks`](crate::AsyncLocks) does to give its thread back) would otherwise leave the
/// queue at the end of every slice and join it again at the back: behind holders that hold
/// longer than a slice and ask again at once, it would be overtaken for ever. Run each slice's
/// `grant` inside [`QueuePlace::wait_keeping`] instead: a wait on a [`MemoryLocks`] (by name,
/// through a [`LockHandle`], or through any [`Locks`] that passes the call on, on the same
/// thread) that times out stays in the queue, and the next wait run through the same place
/// takes that place up again, whatever its arguments, instead of joining at the back.
///
/// While no thread waits for it, a kept place is still a waiter: a freed lock is handed to it
/// in its turn, its lease starting then, and the next wait returns that grant; if that lease
/// runs out before the next wait, the wait finds the place back at the head of the queue and
/// takes it up there (in `tests/memory.rs`:
/// `a_kept_place_granted_after_its_hand_off_expired_is_not_kept_and_queues_at_the_back`).
/// End with [`QueuePlace::wait_last`], whose wait leaves the queue if it ends without a grant
/// (`Wait::No` leaves at once), or drop the place: dropping it leaves the queue and gives
/// back a grant handed to it meanwhile. Other backends ignore the place: their slices leave
/// their queues.
///
/// ```
/// use infra_common::ManualClock;
/// use infra_dlock::{Access, Locks, MemoryLocks, QueuePlace, Wait};
/// use std::time::Duration;
///
/// let locks = MemoryLocks::with_clock(ManualClock::new());
/// let lease = Duration::from_secs(10);
/// let holder = locks.acquire("report", lease)?;
/// let mut place = QueuePlace::new();
/// // A slice that times out (at once, here) keeps its place at the head of the queue.
/// let slice = || locks.grant("report", Access::Exclusive, lease, Wait::Up(Duration::ZERO));
/// assert!(place.wait_keeping(slice)?.is_none());
/// assert!(place.is_kept());
/// holder.release()?; // hands the lock to the kept place
/// assert!(locks.try_acquire("report", lease)?.is_none());
/// let granted = place.wait_last(slice)?.expect("handed over while kept");
/// assert!(!place.is_kept());
/// locks.release(granted)?;
/// # Ok::<(), infra_dlock::Error>(())
/// ```
#[derive(Default)]
pub struct QueuePlace {
    kept: Option<Kept>,
}

/// A waiter left in its queue, with no thread waiting for it.
struct Kept {
    slot: Arc<Slot>,
    waiter: Queued,
}

impl Kept {
    /// Puts the place back at the head of its queue if it was handed the lock and the lease
    /// ran out before a wait took it up, as that wait would; the lock stays in its entry's
    /// hands while the place is kept.
    ///
    /// Otherwise the hand-off that ran out may have left the entry idle and the lock free on
    /// the fast path, which would grant the next wait's request without taking the place up:
    /// the place would stay kept, and a later wait through it would jump the queue.
    fn hold_place(&self) {
        let mut entry = self.slot.entry.lock();
        self.slot.take_over(&mut entry);
        let ticket = self.waiter.ticket;
        let holds = entry.holders.iter().any(|h| h.ticket == ticket);
        if !holds && !entry.queue.iter().any(|w| w.ticket == ticket) {
            entry.queue.push_front(self.waiter.waiter());
        }
        self.slot.leave(&entry);
    }
}

/// What the wait running inside a [`QueuePlace`] on this thread asks of the backend.
struct Slice {
    /// The place to take up instead of joining the queue; afterwards, the place kept.
    kept: Option<Kept>,
    /// Whether a wait that ends without a grant keeps its place.
    keep: bool,
}

thread_local! {
    /// The slice of the [`QueuePlace`] whose wait runs on this thread, for the backend call
    /// inside it, which may be reached through any number of [`Locks`] wrappers.
    static SLICE: RefCell<Option<Slice>> = const { RefCell::new(None) };
}

impl Slice {
    /// The slice armed on this thread, if its place (if any) is in `slot`: taken, so that a
    /// second backend call inside the same wait joins its queue as usual.
    fn take_for(slot: &Arc<Slot>) -> Option<Self> {
        SLICE.with(|armed| {
            let mut armed = armed.borrow_mut();
            let here = armed.as_ref().is_some_and(|slice| {
                (slice.kept.as_ref()).is_none_or(|kept| Arc::ptr_eq(&kept.slot, slot))
            });
            if here { armed.take() } else { None }
        })
    }

    /// Hands the outcome back to the [`QueuePlace`] whose wait runs on this thread.
    fn put_back(self) {
        SLICE.with(|armed| *armed.borrow_mut() = Some(self));
    }
}

impl QueuePlace {
    /// A place not in any queue yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a wait left a place in a queue here.
    pub fn is_kept(&self) -> bool {
        self.kept.is_some()
    }

    /// Runs `wait` (a blocking grant) so that it takes up this place if one is kept, and,
    /// if it is a [`MemoryLocks`] wait that ends without a grant, keeps its place here.
    pub fn wait_keeping<R>(&mut self, wait: impl FnOnce() -> R) -> R {
        self.run(true, wait)
    }

    /// Runs `wait` (a blocking grant) so that it takes up this place if one is kept, and
    /// leaves the queue if it ends without a grant.
    pub fn wait_last<R>(&mut self, wait: impl FnOnce() -> R) -> R {
        self.run(false, wait)
    }

    fn run<R>(&mut self, keep: bool, wait: impl FnOnce() -> R) -> R {
        let kept = self.kept.take();
        if let Some(kept) = &kept {
            kept.hold_place();
        }
        let earlier = SLICE.with(|armed| armed.borrow_mut().replace(Slice { kept, keep }));
        // Disarmed even if `wait` panics: the next call on this (pooled) thread must not find
        // the place, and the place must come back here to be given up.
        let armed = Armed {
            place: self,
            earlier,
        };
        let answer = wait();
        drop(armed);
        answer
    }
}

/// Disarms a [`QueuePlace`]'s slice when its wait returns, and takes the kept place back.
struct Armed<'a> {
    place: &'a mut QueuePlace,
    /// The slice of an enclosing wait on this thread, armed again.
    earlier: Option<Slice>,
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        let slice =
            SLICE.with(|armed| std::mem::replace(&mut *armed.borrow_mut(), self.earlier.take()));
        self.place.kept = slice.and_then(|slice| slice.kept);
    }
}

impl Drop for QueuePlace {
    /// Leaves the queue, or gives back the grant handed to the place meanwhile.
    fn drop(&mut self) {
        let Some(Kept { slot, waiter }) = self.kept.take() else {
            return;
        };
        let mut entry = slot.entry.lock();
        // The entry may have let the state go since the place joined its queue: a hand-off to
        // the place whose lease ran out before it was taken up leaves the entry idle, and the
        // fast path may have issued tokens (and hold the lock) since.
        slot.take_over(&mut entry);
        entry.queue.retain(|w| w.ticket != waiter.ticket);
        if let Some(index) = entry.holders.iter().position(|h| h.ticket == waiter.ticket) {
            entry.holders.swap_remove(index);
            slot.ended.notify_all();
        }
        // The head may fit now: it settles (and takes the lock) when it wakes.
        if let Some(head) = entry.queue.front() {
            head.wake.notify_one();
        }
        slot.leave(&entry);
    }
}

impl fmt::Debug for QueuePlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuePlace")
            .field("kept", &self.is_kept())
            .finish()
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
        check_request(name, lease, access)?;
        let lease = duration_to_nanos(lease);
        // The map's mutex only finds the slot: the request itself runs under the slot's
        // mutex alone, so by-name callers of different locks never wait for each other's
        // work, and a caller preempted inside a lock does not hold up the whole map. The
        // count taken here keeps the slot in the map until the request is done.
        let slot = self.slot_named(name);
        let held = self.grant_in(&slot, access, lease, wait)?;
        Ok(held.map(|held| self.grant_of(&slot, held)))
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
    use crate::LockGuard;
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

    #[test]
    fn names_whose_leases_ran_out_unreleased_are_swept_and_count_on() {
        // A grant dropped without a release (a cancelled task's `Grant`, a crashed job's
        // guard forgotten) leaves its name held until its lease ends; after that the name is
        // idle, and per-order or per-user names must not pile up in the map.
        let clock = ManualClock::new();
        let locks = MemoryLocks::with_clock(clock.clone());
        let lease = Duration::from_secs(1);
        let leaked: Vec<Grant> = (0..1_000)
            .map(|i| {
                let name = format!("leaked-{i}");
                // Every other one in the entry's hands (a reader), the rest on the fast path.
                let grant = if i % 2 == 0 {
                    locks.acquire(&name, lease)
                } else {
                    locks.read(&name, lease)
                };
                grant.unwrap().into_grant()
            })
            .collect();
        clock.advance(Duration::from_secs(2));
        for i in 0..1_000 {
            let guard = locks.acquire(&format!("passing-{i}"), lease).unwrap();
            guard.release().unwrap();
        }
        let names = locks.names.lock().map.len();
        assert!(names <= 2 + MIN_SWEEP, "{names} names");
        for grant in leaked {
            let name = grant.name().to_owned();
            let token = grant.token();
            assert!(matches!(
                locks.release(grant),
                Err(Error::LeaseExpired { .. })
            ));
            let next = locks.acquire(&name, lease).unwrap();
            assert!(
                next.token() > token,
                "{name}: {} after {token}",
                next.token()
            );
        }
    }

    #[test]
    fn a_name_swept_out_and_made_again_counts_on_from_its_last_token() {
        let locks = MemoryLocks::with_clock(ManualClock::new());
        let lease = Duration::from_secs(1);
        let mut last = 0;
        for _ in 0..3 {
            let guard = locks.acquire("swept", lease).unwrap();
            assert!(
                guard.token().get() > last,
                "{:?} after {last}",
                guard.token()
            );
            last = guard.token().get();
            guard.release().unwrap();
            locks.expire_due();
            assert!(!locks.names.lock().map.contains_key("swept"), "not swept");
        }
    }

    /// A name freed on the fast path and swept out because new names filled the map: its new
    /// state counts on from the fast path's last token, which only the state word knows (the
    /// entry counts only while it holds the state, and this sweep, unlike `expire_due`'s,
    /// does not take the state over first).
    #[test]
    fn a_name_swept_by_new_names_counts_on_from_its_fast_path_tokens() {
        let locks = MemoryLocks::with_clock(ManualClock::new());
        let lease = Duration::from_secs(1);
        let mut last = 0;
        for round in 0..3 {
            let guard = locks.acquire("swept", lease).unwrap();
            let word = locks.names.lock().map["swept"]
                .state
                .load(Ordering::Relaxed);
            assert_eq!(word & MODE, FAST, "not granted on the fast path");
            assert!(
                guard.token().get() > last,
                "{:?} after {last}",
                guard.token()
            );
            last = guard.token().get();
            guard.release().unwrap();
            let mut fillers = 0;
            while locks.names.lock().map.contains_key("swept") {
                assert!(fillers <= 2 * MIN_SWEEP, "never swept");
                locks.handle(&format!("filler-{round}-{fillers}")).unwrap();
                fillers += 1;
            }
        }
    }

    #[test]
    fn tokens_past_the_state_word_go_on_under_the_mutex() {
        let locks = MemoryLocks::with_tokens_after(
            ManualClock::new(),
            FencingToken::new(MAX_FAST_TOKEN - 1),
        );
        let handle = locks.handle("edge").unwrap();
        let lease = Duration::from_secs(1);
        let fast = handle.acquire(lease).unwrap();
        assert_eq!(fast.token().get(), MAX_FAST_TOKEN);
        assert_eq!(handle.slot.state.load(Ordering::Relaxed) & MODE, FAST);
        fast.release().unwrap();
        for expected in [MAX_FAST_TOKEN + 1, MAX_FAST_TOKEN + 2] {
            let slow = handle.acquire(lease).unwrap();
            assert_eq!(slow.token().get(), expected);
            assert_eq!(handle.slot.state.load(Ordering::Relaxed), ENTRY);
            assert!(handle.try_acquire(lease).unwrap().is_none());
            slow.release().unwrap();
        }
    }

    /// A fast holder preempted between its grant and the publication of its lease: the
    /// others find the lock held, however late, until the lease is published; then it ends
    /// on time.
    #[test]
    fn a_fast_holder_whose_lease_is_not_published_yet_holds_until_it_is() {
        let clock = ManualClock::new();
        let locks = MemoryLocks::with_clock(clock.clone());
        let handle = locks.handle("pending").unwrap();
        let lease = Duration::from_secs(1);
        // The first half of a fast acquire: the word says held by token 1, no lease yet.
        handle.slot.state.store(state(1, FAST), Ordering::Relaxed);
        assert!(locks.try_acquire("pending", lease).unwrap().is_none());
        clock.advance(Duration::from_secs(60));
        assert!(locks.try_acquire("pending", lease).unwrap().is_none());
        // The second half: the lease that began at 0 for one second is long over.
        let fast = &handle.slot.fast;
        fast.granted_at.store(0, Ordering::Relaxed);
        fast.lease.store(1_000_000_000, Ordering::Relaxed);
        fast.owner.store(1, Ordering::Release);
        let next = locks
            .try_acquire("pending", lease)
            .unwrap()
            .expect("expired");
        assert_eq!(next.token().get(), 2);
    }
}
