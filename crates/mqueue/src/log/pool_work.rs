//! Counting the file work a handle hands to tokio's blocking pool (a segment roll, a journal
//! compaction), so that the handle's drop can wait for it.
//!
//! Such work owns what it needs, so it runs to its end even if the future that started it is
//! dropped, and the handle with it: a roll or a compaction left half done would leave the
//! directory in a state no open expects. Until it ends it also holds the directory (a queue's
//! compaction keeps the queue's logs, and their locks, alive), so an open right after the drop
//! would get `Error::Locked`; and where the lock is the handle's alone (a log's), an open could
//! read the directory while the work still changes it. The handle's drop therefore waits for
//! every piece of work it handed out, a bounded sequence of file operations and fsyncs: once
//! the drop returns, the directory is free and nothing of the old handle changes it.
//!
//! Work the pool has not started yet is not waited for but run by the drop itself: the drop
//! may run on the very thread that work is queued behind (the pool's only free thread, on a
//! runtime with `max_blocking_threads(1)`), and would then wait forever. Each piece of work is
//! handed over ([`PoolWork::hand_over`]) so that whichever thread takes it first, a pool
//! thread or the drop, runs it, and the other finds nothing to run.

use infra_common::sync::{Arc, Condvar, Mutex};

/// The work of one handle running on the blocking pool. Not an API: public for the loom
/// model in `tests/loom.rs`.
///
/// ```
/// use infra_common::sync::atomic::{AtomicBool, Ordering};
/// use infra_common::sync::{Arc, thread};
/// use infra_mqueue::log::PoolWork;
///
/// let work = PoolWork::default();
/// let roll = work.start();
/// let pool = thread::spawn(move || drop(roll)); // the work ends on another thread
/// work.wait_idle(); // returns once it ended
/// pool.join().unwrap();
///
/// // Work handed over but never started by the pool is run by the wait itself.
/// let job = work.start();
/// let ran = Arc::new(AtomicBool::new(false));
/// let queued = work.hand_over({
///     let ran = Arc::clone(&ran);
///     move || {
///         ran.store(true, Ordering::SeqCst);
///         drop(job);
///     }
/// });
/// work.wait_idle();
/// assert!(ran.load(Ordering::SeqCst));
/// assert!(!queued.run(), "taken already");
/// ```
#[derive(Debug, Default)]
pub struct PoolWork {
    counter: Arc<Counter>,
}

#[derive(Debug, Default)]
struct Counter {
    state: Mutex<State>,
    ended: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Jobs started and not dropped yet.
    running: usize,
    /// Work handed over that no thread has taken yet.
    queued: Vec<Arc<Queued>>,
}

/// One piece of handed-over work, taken once by whichever thread comes first.
struct Queued(Mutex<Option<Box<dyn FnOnce() + Send>>>);

impl Queued {
    fn take(&self) -> Option<Box<dyn FnOnce() + Send>> {
        self.0.lock().take()
    }
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Queued")
    }
}

/// One piece of work counted by a [`PoolWork`] until it is dropped. The work it travels with
/// holds it as its last field, so that everything the work owns (a share of a queue's logs,
/// say) is let go before the count falls.
#[derive(Debug)]
#[must_use = "the work counts as running until this is dropped"]
pub struct PoolJob {
    counter: Arc<Counter>,
}

/// Work handed over by [`PoolWork::hand_over`], to run on the pool's thread. Clones name the
/// same work.
#[derive(Debug, Clone)]
#[must_use = "handed-over work runs when a thread runs it, or when the handle's drop waits"]
pub struct Handover {
    queued: Arc<Queued>,
    counter: Arc<Counter>,
}

impl PoolWork {
    /// Counts one more piece of work, until the returned job is dropped.
    pub fn start(&self) -> PoolJob {
        self.counter.state.lock().running += 1;
        PoolJob {
            counter: Arc::clone(&self.counter),
        }
    }

    /// Hands `work` over to whichever thread takes it first: one that runs the returned
    /// [`Handover`] (the pool's), or [`wait_idle`](Self::wait_idle).
    pub fn hand_over(&self, work: impl FnOnce() + Send + 'static) -> Handover {
        let queued = Arc::new(Queued(Mutex::new(Some(Box::new(work)))));
        self.counter.state.lock().queued.push(Arc::clone(&queued));
        Handover {
            queued,
            counter: Arc::clone(&self.counter),
        }
    }

    /// Runs on this thread the work handed over that no thread has taken yet, then blocks
    /// until every job started so far was dropped.
    pub fn wait_idle(&self) {
        let queued = std::mem::take(&mut self.counter.state.lock().queued);
        for work in queued.iter().filter_map(|queued| queued.take()) {
            work();
        }
        let mut state = self.counter.state.lock();
        while state.running > 0 {
            self.counter.ended.wait(&mut state);
        }
    }
}

impl Handover {
    /// Runs the work on this thread, unless another thread took it first; whether it ran here.
    pub fn run(self) -> bool {
        self.counter
            .state
            .lock()
            .queued
            .retain(|queued| !Arc::ptr_eq(queued, &self.queued));
        let Some(work) = self.queued.take() else {
            return false;
        };
        work();
        true
    }
}

impl Drop for PoolJob {
    fn drop(&mut self) {
        let mut state = self.counter.state.lock();
        state.running -= 1;
        if state.running == 0 {
            self.counter.ended.notify_all();
        }
    }
}
