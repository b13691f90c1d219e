//! Request coalescing: concurrent misses for one key share one origin fetch.
//!
//! The first caller to [`Flights::join`] a key becomes its [`Leader`] and fetches; later
//! callers get the same [`Flight`] and wait on it ([`Flight::wait`], a future that needs no
//! particular runtime). The hand-off is one lock per flight:
//!
//! - [`Leader::complete`] first takes the flight out of the table, so a caller arriving after
//!   it starts a new flight (and, through the caller's re-check of the store, usually finds
//!   what the leader stored), then publishes the outcome and wakes every waiter.
//! - A leader dropped without completing (its task panicked or was cancelled) does the same
//!   with [`Outcome::Abandoned`], so waiters never wait for a fetch that no longer exists.
//!
//! The lock and the table come from `infra_common::sync`, so `tests/loom.rs` checks this
//! hand-off under every interleaving.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use infra_common::sync::{Arc, Mutex};

/// What a flight ended with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    /// The leader's result.
    Done(T),
    /// The leader went away without a result.
    Abandoned,
}

/// The flights in progress, by key.
///
/// ```
/// use infra_edgecache::http::coalescing::{Flights, Joined, Outcome};
///
/// let flights: Flights<String, u32> = Flights::new();
/// // The first miss for a key leads: it fetches.
/// let Joined::Leader(leader) = flights.join(&"/a".to_owned()) else { unreachable!() };
/// // A second miss for the same key while that fetch runs follows it instead of fetching.
/// let Joined::Follower(flight) = flights.join(&"/a".to_owned()) else { unreachable!() };
/// leader.complete(42);
/// // In async code a follower awaits `Flight::wait(flight)`; here the flight has ended.
/// assert_eq!(flight.outcome(), Some(Outcome::Done(42)));
/// assert!(flights.is_empty()); // the next miss for "/a" starts a new flight
/// ```
pub struct Flights<K, T> {
    table: Arc<Mutex<HashMap<K, Arc<Flight<T>>>>>,
}

/// One fetch in progress, shared by its leader and waiters.
pub struct Flight<T> {
    state: Mutex<FlightState<T>>,
}

struct FlightState<T> {
    outcome: Option<Outcome<T>>,
    /// One slot per waiting future; a future re-registers in its own slot.
    wakers: Vec<Option<Waker>>,
    /// The slots of futures dropped before the flight ended, which new ones take first: the
    /// slots grow with the waiters at once, not with every waiter that ever came and went.
    free: Vec<usize>,
}

/// Up to this many slots, an emptied flight table keeps what it allocated; beyond it, the
/// table shrinks as flights end, so a burst of misses on many keys does not hold memory for
/// as many flights forever.
const KEPT_FLIGHT_SLOTS: usize = 64;

/// Whether a caller leads a key's flight or waits on it.
pub enum Joined<K: Hash + Eq, T> {
    /// The caller fetches, and completes the flight with the result.
    Leader(Leader<K, T>),
    /// Another caller fetches; wait on the flight.
    Follower(Arc<Flight<T>>),
}

/// The right and the duty to complete one flight.
pub struct Leader<K: Hash + Eq, T> {
    key: Option<K>,
    flight: Arc<Flight<T>>,
    table: Arc<Mutex<HashMap<K, Arc<Flight<T>>>>>,
}

impl<K: Hash + Eq + Clone, T: Clone> Flights<K, T> {
    /// No flights.
    pub fn new() -> Self {
        Self {
            table: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Leads the flight for `key` if there is none, or follows the one in progress.
    pub fn join(&self, key: &K) -> Joined<K, T> {
        let mut table = self.table.lock();
        if let Some(flight) = table.get(key) {
            return Joined::Follower(Arc::clone(flight));
        }
        let flight = Arc::new(Flight {
            state: Mutex::new(FlightState {
                outcome: None,
                wakers: Vec::new(),
                free: Vec::new(),
            }),
        });
        table.insert(key.clone(), Arc::clone(&flight));
        Joined::Leader(Leader {
            key: Some(key.clone()),
            flight,
            table: Arc::clone(&self.table),
        })
    }

    /// How many flights are in progress.
    pub fn len(&self) -> usize {
        self.table.lock().len()
    }

    /// Whether no flight is in progress.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq + Clone, T: Clone> Default for Flights<K, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq, T> Leader<K, T> {
    /// The flight this leader completes, to wait on like any follower.
    pub fn flight(&self) -> Arc<Flight<T>> {
        Arc::clone(&self.flight)
    }

    /// Ends the flight with `value`: later callers start a new flight, waiters get `value`.
    pub fn complete(mut self, value: T) {
        self.finish(Outcome::Done(value));
    }

    fn finish(&mut self, outcome: Outcome<T>) {
        let Some(key) = self.key.take() else {
            return;
        };
        // Out of the table first: once waiters see the outcome, nobody may join this flight.
        {
            let mut table = self.table.lock();
            if table
                .get(&key)
                .is_some_and(|current| Arc::ptr_eq(current, &self.flight))
            {
                table.remove(&key);
                if table.capacity() > KEPT_FLIGHT_SLOTS && table.len() * 4 < table.capacity() {
                    let keep = KEPT_FLIGHT_SLOTS.max(table.len() * 2);
                    table.shrink_to(keep);
                }
            }
        }
        let wakers = {
            let mut state = self.flight.state.lock();
            state.outcome = Some(outcome);
            state.free = Vec::new();
            std::mem::take(&mut state.wakers)
        };
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }
}

impl<K: Hash + Eq, T> Drop for Leader<K, T> {
    fn drop(&mut self) {
        self.finish(Outcome::Abandoned);
    }
}

impl<T: Clone> Flight<T> {
    /// Waits for `flight`'s outcome.
    pub fn wait(flight: Arc<Self>) -> Wait<T> {
        Wait { flight, slot: None }
    }

    /// The outcome, if the flight has ended.
    pub fn outcome(&self) -> Option<Outcome<T>> {
        self.state.lock().outcome.clone()
    }
}

/// The future of [`Flight::wait`].
pub struct Wait<T> {
    flight: Arc<Flight<T>>,
    slot: Option<usize>,
}

impl<T: Clone> Future for Wait<T> {
    type Output = Outcome<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<T>> {
        let this = &mut *self;
        let mut state = this.flight.state.lock();
        if let Some(outcome) = &state.outcome {
            return Poll::Ready(outcome.clone());
        }
        // Registered under the same lock the leader publishes under: a wake-up cannot fall
        // between this check and the registration.
        let waker = Some(cx.waker().clone());
        match this.slot {
            Some(slot) => state.wakers[slot] = waker,
            None => match state.free.pop() {
                Some(slot) => {
                    this.slot = Some(slot);
                    state.wakers[slot] = waker;
                }
                None => {
                    this.slot = Some(state.wakers.len());
                    state.wakers.push(waker);
                }
            },
        }
        Poll::Pending
    }
}

impl<T> Drop for Wait<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let mut state = self.flight.state.lock();
            // After the flight ended its slots are gone: nothing to give back.
            if let Some(waker) = state.wakers.get_mut(slot) {
                *waker = None;
                state.free.push(slot);
            }
        }
    }
}

impl<K, T> fmt::Debug for Flights<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flights")
            .field("in_progress", &self.table.lock().len())
            .finish()
    }
}

impl<T> fmt::Debug for Flight<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("Flight")
            .field("ended", &state.outcome.is_some())
            .field("waiters", &state.wakers.iter().flatten().count())
            .finish()
    }
}

impl<K: Hash + Eq, T> fmt::Debug for Joined<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Joined::Leader(_) => "Leader",
            Joined::Follower(_) => "Follower",
        })
    }
}

impl<K: Hash + Eq, T> fmt::Debug for Leader<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leader").finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Wait<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait")
            .field("registered", &self.slot.is_some())
            .finish()
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    fn poll_once(wait: &mut Wait<u32>) -> Poll<Outcome<u32>> {
        Pin::new(wait).poll(&mut Context::from_waker(Waker::noop()))
    }

    fn slots(flight: &Flight<u32>) -> usize {
        flight.state.lock().wakers.len()
    }

    /// Waiters that give up (their requests cancelled or timed out) leave their slots to the
    /// next ones: a flight holds slots for the waiters at once, not for all that came.
    #[test]
    fn a_flight_reuses_the_slots_of_waiters_that_left() {
        let flights = Flights::<u32, u32>::new();
        let Joined::Leader(leader) = flights.join(&1) else {
            panic!("the first caller leads");
        };
        let flight = leader.flight();
        let mut staying = Flight::wait(Arc::clone(&flight));
        assert!(poll_once(&mut staying).is_pending());
        for _ in 0..1_000 {
            let mut leaving = Flight::wait(Arc::clone(&flight));
            assert!(poll_once(&mut leaving).is_pending());
        }
        assert_eq!(
            slots(&flight),
            2,
            "one staying waiter, one slot reused by the rest"
        );
        leader.complete(7);
        assert_eq!(poll_once(&mut staying), Poll::Ready(Outcome::Done(7)));
    }

    /// A burst of misses on many keys grows the flight table; once they end, it shrinks back.
    #[test]
    fn the_flight_table_shrinks_after_a_burst() {
        let flights = Flights::<u32, u32>::new();
        let leaders: Vec<_> = (0..10_000)
            .map(|key| match flights.join(&key) {
                Joined::Leader(leader) => leader,
                Joined::Follower(_) => panic!("one caller per key"),
            })
            .collect();
        assert!(flights.table.lock().capacity() >= 10_000);
        for (value, leader) in leaders.into_iter().enumerate() {
            leader.complete(value as u32);
        }
        assert!(flights.is_empty());
        let capacity = flights.table.lock().capacity();
        assert!(capacity <= 4 * KEPT_FLIGHT_SLOTS, "capacity {capacity}");
    }
}
