//! Group commit: appenders waiting for durability share one fsync.
//!
//! Appends write their records under the log's lock and then wait here for the durable point to
//! pass their end. The first waiter that finds no sync in flight becomes the leader: it releases
//! the lock, syncs everything written so far (its own records and those of every appender that
//! wrote before the sync began), publishes the new durable point and wakes the others. A waiter
//! whose end the published point covers returns without syncing; one that wrote after the sync
//! began leads the next one. With N appenders at once the disk sees about two syncs per round
//! rather than N.
//!
//! Async waiters ([`GroupCommit::poll_wait`]) take part in the same hand-off without blocking:
//! one that would lead takes a [`SyncLeader`] and hands the sync to a thread that may block (the
//! log gives it to tokio's blocking pool), and registers its waker in the list of the sync in
//! flight. Whoever ends a sync, a blocked thread or a [`SyncLeader`], wakes the blocked threads
//! and every registered waker once, so a waiter is polled again once per sync, never in a loop.

use std::task::{Poll, Waker};

use infra_common::sync::atomic::{AtomicBool, Ordering};
use infra_common::sync::{Arc, Condvar, Mutex};

use crate::Error;

/// The durable point of a log and the leader/follower hand-off that advances it.
#[derive(Debug)]
pub struct GroupCommit {
    state: Mutex<State>,
    advanced: Condvar,
    /// `state.failure.is_some()`, readable without the lock: every append checks it.
    failed: AtomicBool,
}

#[derive(Debug)]
struct State {
    /// Every offset below this is durable.
    durable: u64,
    /// A leader is syncing now.
    syncing: bool,
    /// A sync failed: nothing more is promised. Async waiters get a copy of its error.
    failure: Option<Error>,
    /// The wakers of async waiters, each woken once when the sync in flight ends.
    wakers: Vec<Waker>,
    /// Syncs ended so far: which sync's list a waiter's registration belongs to.
    ended: u64,
}

/// How a sync ended, for the waiters.
#[derive(Clone, Copy)]
enum SyncEnd<'a> {
    /// Everything below this offset is durable.
    Covered(u64),
    /// It failed with this error.
    Failed(&'a Error),
    /// It never ran (its runtime shut down first): the next waiter leads instead.
    Abandoned,
}

impl<'a> SyncEnd<'a> {
    fn of(outcome: &'a Result<u64, Error>) -> Self {
        match outcome {
            Ok(covered) => Self::Covered(*covered),
            Err(error) => Self::Failed(error),
        }
    }
}

impl GroupCommit {
    /// A hand-off whose durable point starts at `durable`.
    pub fn new(durable: u64) -> Self {
        Self {
            state: Mutex::new(State {
                durable,
                syncing: false,
                failure: None,
                wakers: Vec::new(),
                ended: 0,
            }),
            advanced: Condvar::new(),
            failed: AtomicBool::new(false),
        }
    }

    /// Every offset below this is durable.
    pub fn durable(&self) -> u64 {
        self.state.lock().durable
    }

    /// Whether a sync failed, after which the log refuses appends.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Returns once every offset below `end` is durable.
    ///
    /// `sync` makes durable everything written so far and returns the end it covered; it is
    /// called (by this thread) only when no other sync is in flight and the durable point does
    /// not yet cover `end`.
    ///
    /// # Errors
    /// The error of this thread's `sync`, or [`Error::Failed`] when another sync failed
    /// before one covered `end`.
    pub fn wait(&self, end: u64, sync: impl FnOnce() -> Result<u64, Error>) -> Result<(), Error> {
        let mut state = self.state.lock();
        let mut sync = Some(sync);
        loop {
            // Durable first: a later sync's failure takes back nothing an earlier one covered.
            if state.durable >= end {
                return Ok(());
            }
            if state.failure.is_some() {
                return Err(Error::Failed);
            }
            if state.syncing {
                self.advanced.wait(&mut state);
                continue;
            }
            let Some(lead) = sync.take() else {
                // Unreachable in practice: after leading, `durable >= end` or `failed` holds.
                return Err(Error::Failed);
            };
            state.syncing = true;
            drop(state);
            let outcome = lead();
            self.end_sync(SyncEnd::of(&outcome));
            outcome?;
            state = self.state.lock();
        }
    }

    /// The async form of [`wait`](Self::wait): `Ready` once every offset below `end` is
    /// durable; otherwise `Pending`, with `waker` woken when the sync in flight ends.
    ///
    /// When no sync is in flight this waiter leads: `lead` is called (without the lock held)
    /// with the [`SyncLeader`] that must end the sync. It must not block: it hands the sync to
    /// a thread that may. `waiter` is this waiter's registration, kept across its polls so its
    /// waker is listed once per sync.
    ///
    /// # Errors
    /// A copy of the failed sync's error (its [`Error::Io`] rebuilt, or [`Error::Failed`]).
    pub fn poll_wait(
        commit: &Arc<Self>,
        end: u64,
        waiter: &mut AsyncWaiter,
        waker: &Waker,
        lead: impl FnOnce(SyncLeader),
    ) -> Poll<Result<(), Error>> {
        let mut state = commit.state.lock();
        if state.durable >= end {
            return Poll::Ready(Ok(()));
        }
        if let Some(failure) = &state.failure {
            return Poll::Ready(Err(failure.for_another_waiter()));
        }
        // Listed before a sync is started, so a sync that ends at once still wakes us.
        waiter.register(&mut state, waker);
        if state.syncing {
            return Poll::Pending;
        }
        state.syncing = true;
        drop(state);
        lead(SyncLeader {
            commit: Some(Arc::clone(commit)),
        });
        Poll::Pending
    }

    /// Publishes how the sync in flight ended and wakes every waiter, blocked or async.
    fn end_sync(&self, how: SyncEnd<'_>) {
        let wakers = {
            let mut state = self.state.lock();
            state.syncing = false;
            match how {
                SyncEnd::Covered(covered) => state.durable = state.durable.max(covered),
                SyncEnd::Failed(error) => {
                    state.failure = Some(error.for_another_waiter());
                    self.failed.store(true, Ordering::Release);
                }
                SyncEnd::Abandoned => {}
            }
            state.ended += 1;
            std::mem::take(&mut state.wakers)
        };
        self.advanced.notify_all();
        // Woken outside the lock: a waker may poll its task right here.
        for waker in wakers {
            waker.wake();
        }
    }
}

/// An async waiter's registration in the wake-up list of the sync in flight.
#[derive(Debug, Default)]
pub struct AsyncWaiter {
    /// The sync (by [`State::ended`]) whose list holds this waiter's waker, and where.
    listed: Option<(u64, usize)>,
}

impl AsyncWaiter {
    /// Lists `waker` for the sync in flight, replacing this waiter's earlier waker in the same
    /// list, so a waiter polled many times during one sync takes one place.
    fn register(&mut self, state: &mut State, waker: &Waker) {
        if let Some((sync, at)) = self.listed
            && sync == state.ended
            && let Some(listed) = state.wakers.get_mut(at)
        {
            if !listed.will_wake(waker) {
                listed.clone_from(waker);
            }
            return;
        }
        state.wakers.push(waker.clone());
        self.listed = Some((state.ended, state.wakers.len() - 1));
    }
}

/// The duty to end one sync, taken by an async waiter that found none in flight and moved to
/// the thread that runs it. Until it ends, no other waiter starts a sync.
///
/// Dropped without [`finish`](Self::finish) (the sync never ran, say because its runtime shut
/// down), it ends the sync as abandoned: nothing is marked durable, and the next waiter leads.
#[derive(Debug)]
pub struct SyncLeader {
    commit: Option<Arc<GroupCommit>>,
}

impl SyncLeader {
    /// Ends the sync with `outcome`: the end it covered, or its error, which every async waiter
    /// then gets a copy of (blocked waiters get [`Error::Failed`]).
    pub fn finish(mut self, outcome: &Result<u64, Error>) {
        if let Some(commit) = self.commit.take() {
            commit.end_sync(SyncEnd::of(outcome));
        }
    }
}

impl Drop for SyncLeader {
    fn drop(&mut self) {
        if let Some(commit) = self.commit.take() {
            commit.end_sync(SyncEnd::Abandoned);
        }
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use std::io;
    use std::task::Wake;

    use infra_common::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    #[allow(
        clippy::disallowed_types,
        reason = "`Wake` is implemented on std's `Arc`"
    )]
    impl Wake for CountingWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A waker counting its wake-ups, and the counter.
    #[allow(clippy::disallowed_types, reason = "`Waker::from` takes std's `Arc`")]
    fn counting_waker() -> (Waker, std::sync::Arc<CountingWaker>) {
        let counter = std::sync::Arc::new(CountingWaker::default());
        (Waker::from(std::sync::Arc::clone(&counter)), counter)
    }

    /// Polls `waiter` for `end` once; returns the leader it was handed, if it had to lead.
    fn poll(
        commit: &Arc<GroupCommit>,
        end: u64,
        waiter: &mut AsyncWaiter,
        waker: &Waker,
    ) -> (Poll<Result<(), Error>>, Option<SyncLeader>) {
        let mut led = None;
        let polled =
            GroupCommit::poll_wait(commit, end, waiter, waker, |leader| led = Some(leader));
        (polled, led)
    }

    #[test]
    fn a_waiter_polled_many_times_during_one_sync_leads_once_and_is_woken_once() {
        let commit = Arc::new(GroupCommit::new(0));
        let (waker, wakes) = counting_waker();
        let mut waiter = AsyncWaiter::default();
        let (first, leader) = poll(&commit, 1, &mut waiter, &waker);
        assert!(first.is_pending());
        let leader = leader.expect("the first waiter with no sync in flight leads");
        for _ in 0..5 {
            let (again, led) = poll(&commit, 1, &mut waiter, &waker);
            assert!(again.is_pending() && led.is_none());
        }
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        leader.finish(&Ok(1));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "one wake-up per sync");
        let (done, led) = poll(&commit, 1, &mut waiter, &waker);
        assert!(matches!(done, Poll::Ready(Ok(()))) && led.is_none());
        assert_eq!(commit.durable(), 1);
    }

    #[test]
    fn a_dropped_leader_wakes_its_waiters_and_the_next_poll_leads() {
        let commit = Arc::new(GroupCommit::new(0));
        let (waker, wakes) = counting_waker();
        let mut waiter = AsyncWaiter::default();
        let (_, leader) = poll(&commit, 1, &mut waiter, &waker);
        drop(leader);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(commit.durable(), 0, "an abandoned sync covers nothing");
        let (again, leader) = poll(&commit, 1, &mut waiter, &waker);
        assert!(again.is_pending());
        leader.expect("leads again").finish(&Ok(1));
        assert!(poll(&commit, 1, &mut waiter, &waker).0.is_ready());
    }

    #[test]
    fn a_failed_sync_gives_async_waiters_its_error_and_blocked_ones_failed() {
        let commit = Arc::new(GroupCommit::new(0));
        let (waker, _) = counting_waker();
        let (mut leading, mut behind) = (AsyncWaiter::default(), AsyncWaiter::default());
        let (_, leader) = poll(&commit, 1, &mut leading, &waker);
        assert!(poll(&commit, 2, &mut behind, &waker).0.is_pending());
        let error = Error::io("fsync", "/log/0.seg", io::Error::other("disk on fire"));
        leader.expect("leads").finish(&Err(error));
        assert!(commit.failed());
        for waiter in [&mut leading, &mut behind] {
            match poll(&commit, 2, waiter, &waker).0 {
                Poll::Ready(Err(Error::Io { op, source, .. })) => {
                    assert_eq!(
                        (op, source.to_string()),
                        ("fsync", "disk on fire".to_owned())
                    );
                }
                other => panic!("an async waiter of the failed sync got {other:?}"),
            }
        }
        assert!(matches!(commit.wait(3, || Ok(3)), Err(Error::Failed)));
    }

    /// A waiter that an earlier, successful sync covered, but that looks only after a later
    /// one failed (it was slow to wake), is durable all the same: it gets `Ok`, not the error.
    #[test]
    fn a_failure_takes_back_nothing_an_earlier_sync_made_durable() {
        let commit = Arc::new(GroupCommit::new(0));
        commit.wait(1, || Ok(1)).unwrap();
        let error = Error::io("fsync", "/log/0.seg", io::Error::other("disk on fire"));
        assert!(commit.wait(2, || Err(error)).is_err());
        assert!(commit.failed());
        assert!(
            commit.wait(1, || unreachable!("covered")).is_ok(),
            "a blocked waiter covered before the failure"
        );
        let (waker, _) = counting_waker();
        let (polled, led) = poll(&commit, 1, &mut AsyncWaiter::default(), &waker);
        assert!(matches!(polled, Poll::Ready(Ok(()))) && led.is_none());
        assert!(matches!(commit.wait(2, || Ok(2)), Err(Error::Failed)));
    }
}
