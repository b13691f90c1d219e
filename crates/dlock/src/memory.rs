//! The in-process backend: leased, fenced, FIFO-fair locks for the threads of one process.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use infra_common::clock::duration_to_nanos;
use infra_common::sync::{Arc, Condvar, Mutex, MutexGuard};
use infra_common::{Clock, RandomState, SystemClock};

use crate::error::Error;
use crate::grant::{
    Access, FencingToken, Grant, LockName, Wait, check_access, check_lease, check_name,
};
use crate::locks::Locks;

/// Leased, fenced locks for the threads of one process.
///
/// FIFO-fair per name, leases on the given [`Clock`], no busy waiting, no background thread.
///
/// # How it works
///
/// One mutex guards a map from lock name to an entry: the current holders and a FIFO queue of
/// waiters. Tokens come from one counter for the whole instance, so they grow per name as
/// well. Idle entries are kept for reuse and swept out once the map has doubled since the last
/// sweep.
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
    state: Mutex<State>,
    /// Notified whenever a grant ends, for [`Locks::wait_lost`].
    ended: Condvar,
}

struct State {
    /// The last token issued; 0 before the first grant.
    last_token: u64,
    /// Numbers the waiters, so a waiter finds itself among the holders after a hand-off.
    last_ticket: u64,
    names: HashMap<Box<str>, Entry, RandomState>,
    /// The map size at which idle entries are swept out (see [`State::entry`]).
    sweep_at: usize,
}

/// Below this many names, idle entries are never swept.
const MIN_SWEEP: usize = 64;

impl State {
    /// The entry of `name`, created idle if missing.
    ///
    /// Idle entries stay in the map, so a lock taken again and again costs no allocation;
    /// they are swept out whenever the map has doubled since the last sweep, which keeps it
    /// within twice the names in use (plus [`MIN_SWEEP`]) at an amortized constant cost.
    /// Returned with the token counter, which hand-offs in the entry draw from.
    fn entry(&mut self, name: &str) -> (&mut Entry, &mut u64) {
        if !self.names.contains_key(name) {
            if self.names.len() >= self.sweep_at {
                self.names.retain(|_, entry| !entry.is_idle());
                self.sweep_at = (self.names.len() * 2).max(MIN_SWEEP);
            }
            let entry = Entry {
                name: LockName::from(name),
                holders: Vec::new(),
                queue: VecDeque::new(),
            };
            self.names.insert(name.into(), entry);
        }
        let entry = self.names.get_mut(name).expect("inserted above");
        (entry, &mut self.last_token)
    }
}

struct Entry {
    /// The name again, to hand out with each grant.
    name: LockName,
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
    fn settle(&mut self, now: u64, last_token: &mut u64) -> usize {
        let before = self.holders.len();
        self.holders.retain(|h| h.runs_at(now));
        let ended = before - self.holders.len();
        while let Some(head) = self.queue.front() {
            if !compatible(&self.holders, head.access) {
                break;
            }
            let Some(token) = last_token.checked_add(1) else {
                // Wake the head so it reports the exhaustion instead of waiting forever.
                head.wake.notify_one();
                break;
            };
            *last_token = token;
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
            state: Mutex::new(State {
                last_token: last.get(),
                last_ticket: 0,
                names: HashMap::default(),
                sweep_at: MIN_SWEEP,
            }),
            ended: Condvar::new(),
        }
    }

    /// The clock the leases run on.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// How many requests wait in `name`'s queue right now.
    pub fn queue_len(&self, name: &str) -> usize {
        let state = self.state.lock();
        state.names.get(name).map_or(0, |entry| entry.queue.len())
    }

    /// Ends every expired lease now, hands the freed locks to their waiters, and wakes every
    /// waiter to look at the clock again (for timeouts). Returns how many leases ended.
    ///
    /// Not needed with a clock that moves by itself: waiters time their sleeps by the
    /// deadlines. With a [`ManualClock`](infra_common::ManualClock), call it after advancing
    /// the clock so that blocked waiters see the new time.
    pub fn expire_due(&self) -> usize {
        let mut state = self.state.lock();
        let now = self.clock.now_nanos();
        let State {
            last_token, names, ..
        } = &mut *state;
        let mut expired = 0;
        for entry in names.values_mut() {
            expired += entry.settle(now, last_token);
            for waiter in &entry.queue {
                waiter.wake.notify_one();
            }
        }
        names.retain(|_, entry| !entry.is_idle());
        if expired > 0 {
            self.ended.notify_all();
        }
        expired
    }

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

    /// Blocks in the queue of `name` until granted, timed out, or out of tokens.
    fn wait_in_queue(
        &self,
        mut state: MutexGuard<'_, State>,
        name: &str,
        waiter: Waiter,
        give_up_at: Option<u64>,
    ) -> Result<Option<Grant>, Error> {
        let ticket = waiter.ticket;
        let wake = Arc::clone(&waiter.wake);
        let (access, lease) = (waiter.access, waiter.lease);
        state.entry(name).0.queue.push_back(waiter);
        loop {
            let now = self.clock.now_nanos();
            let (entry, last_token) = state.entry(name);
            if entry.settle(now, last_token) > 0 {
                self.ended.notify_all();
            }
            if let Some(holder) = entry.holders.iter().find(|h| h.ticket == ticket) {
                return Ok(Some(self.make_grant(&entry.name, holder)));
            }
            let queued = entry.queue.iter().any(|w| w.ticket == ticket);
            if !queued {
                // Handed the lock, then its lease ran out before this thread woke up to take
                // it (only possible with a lease shorter than a wake-up): queue again, first.
                entry.queue.push_front(Waiter {
                    ticket,
                    access,
                    lease,
                    wake: Arc::clone(&wake),
                });
                continue;
            }
            let exhausted = *last_token == u64::MAX
                && entry.queue.front().is_some_and(|w| w.ticket == ticket)
                && compatible(&entry.holders, access);
            let timed_out = give_up_at.is_some_and(|at| now >= at);
            if exhausted || timed_out {
                entry.queue.retain(|w| w.ticket != ticket);
                // Leaving may let the waiters behind in (a writer leaving before readers).
                if entry.settle(now, last_token) > 0 {
                    self.ended.notify_all();
                }
                return if exhausted {
                    Err(Error::TokensExhausted)
                } else {
                    Ok(None)
                };
            }
            // Sleep until the first holder's lease ends or the wait times out, whichever is
            // first; a hand-off or `expire_due` wakes the sleeper earlier.
            let first_expiry = entry
                .holders
                .iter()
                .map(|h| h.granted_at.saturating_add(h.lease))
                .min();
            let until = match (first_expiry, give_up_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match until {
                Some(until) => {
                    let nap = Duration::from_nanos(until.saturating_sub(now).max(1));
                    wake.wait_timeout(&mut state, nap);
                }
                None => wake.wait(&mut state),
            }
        }
    }

    /// Settles `entry` at `now` and grants `access` on arrival if nobody waits and it fits;
    /// `Ok(None)` if the request must queue.
    fn grant_now(
        &self,
        entry: &mut Entry,
        last_token: &mut u64,
        access: Access,
        lease: u64,
        now: u64,
    ) -> Result<Option<Grant>, Error> {
        if entry.settle(now, last_token) > 0 {
            self.ended.notify_all();
        }
        if !entry.accepts_kind(access) {
            return Err(Error::KindMismatch {
                name: entry.name.to_string(),
            });
        }
        if !(entry.queue.is_empty() && compatible(&entry.holders, access)) {
            return Ok(None);
        }
        let token = last_token.checked_add(1).ok_or(Error::TokensExhausted)?;
        *last_token = token;
        let holder = Holder {
            token,
            ticket: 0,
            access,
            granted_at: now,
            lease,
        };
        let grant = self.make_grant(&entry.name, &holder);
        entry.holders.push(holder);
        Ok(Some(grant))
    }

    /// Settles the grant's name at `now` and finds the grant among its live holders.
    ///
    /// Returns the entry, the holder's index and the token counter; the holder is compared
    /// by token, so an expired grant never matches the grant that replaced it.
    fn find_held<'s>(
        &self,
        state: &'s mut State,
        grant: &Grant,
        now: u64,
    ) -> Result<(&'s mut Entry, usize, &'s mut u64), Error> {
        if grant.issuer != self.issuer {
            return Err(Error::ForeignGrant {
                name: grant.name.to_string(),
                token: grant.token,
            });
        }
        let expired = || Error::LeaseExpired {
            name: grant.name.to_string(),
            token: grant.token,
        };
        let State {
            last_token, names, ..
        } = state;
        let entry = names.get_mut(&*grant.name).ok_or_else(expired)?;
        if entry.settle(now, last_token) > 0 {
            self.ended.notify_all();
        }
        let index = entry
            .holders
            .iter()
            .position(|h| h.token == grant.token.get())
            .ok_or_else(expired)?;
        Ok((entry, index, last_token))
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
        let mut state = self.state.lock();
        let now = self.clock.now_nanos();
        let State {
            last_token, names, ..
        } = &mut *state;
        // One lookup when the name is known (the common case); a new name is created first.
        let granted = match names.get_mut(name) {
            Some(entry) => self.grant_now(entry, last_token, access, lease, now)?,
            None => {
                let (entry, last_token) = state.entry(name);
                self.grant_now(entry, last_token, access, lease, now)?
            }
        };
        if granted.is_some() {
            return Ok(granted);
        }
        let give_up_at = match wait {
            Wait::No => return Ok(None),
            Wait::Up(timeout) => Some(now.saturating_add(duration_to_nanos(timeout))),
            Wait::Forever => None,
        };
        state.last_ticket += 1;
        let waiter = Waiter {
            ticket: state.last_ticket,
            access,
            lease,
            wake: Arc::new(Condvar::new()),
        };
        self.wait_in_queue(state, name, waiter, give_up_at)
    }

    fn extend(&self, grant: &mut Grant, lease: Duration) -> Result<(), Error> {
        check_lease(lease)?;
        let lease_nanos = duration_to_nanos(lease);
        let mut state = self.state.lock();
        let now = self.clock.now_nanos();
        let (entry, index, _) = self.find_held(&mut state, grant, now)?;
        let holder = &mut entry.holders[index];
        holder.granted_at = now;
        holder.lease = lease_nanos;
        grant.granted_at = now;
        grant.lease = lease;
        Ok(())
    }

    fn release(&self, grant: Grant) -> Result<(), Error> {
        let mut state = self.state.lock();
        let now = self.clock.now_nanos();
        let (entry, index, last_token) = self.find_held(&mut state, &grant, now)?;
        entry.holders.swap_remove(index);
        entry.settle(now, last_token);
        self.ended.notify_all();
        Ok(())
    }

    fn is_held(&self, grant: &Grant) -> bool {
        let mut state = self.state.lock();
        let now = self.clock.now_nanos();
        self.find_held(&mut state, grant, now).is_ok()
    }

    fn wait_lost(&self, grant: &Grant) {
        let mut state = self.state.lock();
        loop {
            let now = self.clock.now_nanos();
            // The record, not `grant`, knows about extensions made through another handle.
            let deadline = match self.find_held(&mut state, grant, now) {
                Ok((entry, index, _)) => {
                    let holder = &entry.holders[index];
                    holder.granted_at.saturating_add(holder.lease)
                }
                Err(_) => return,
            };
            let nap = Duration::from_nanos(deadline.saturating_sub(now).max(1));
            self.ended.wait_timeout(&mut state, nap);
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
    use crate::locks::LockGuard;
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
            let names = locks.state.lock().names.len();
            assert!(names <= 2 * (held.len() + 1) + MIN_SWEEP, "{names} names");
        }
        // The same name again and again reuses its entry.
        let before = locks.state.lock().names.len();
        for _ in 0..100 {
            locks.acquire("held-0x", lease).unwrap().release().unwrap();
        }
        assert!(locks.state.lock().names.len() <= before + 1);
        assert!(held.iter().all(LockGuard::is_held));
    }
}
