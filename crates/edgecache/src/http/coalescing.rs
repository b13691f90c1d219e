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
}

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
            }
        }
        let wakers = {
            let mut state = self.flight.state.lock();
            state.outcome = Some(outcome);
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
            None => {
                this.slot = Some(state.wakers.len());
                state.wakers.push(waker);
            }
        }
        Poll::Pending
    }
}

impl<T> Drop for Wait<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let mut state = self.flight.state.lock();
            if let Some(waker) = state.wakers.get_mut(slot) {
                *waker = None;
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
