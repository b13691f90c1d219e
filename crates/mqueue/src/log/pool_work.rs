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

use infra_common::sync::{Arc, Condvar, Mutex};

/// The work of one handle running on the blocking pool. Not an API: public for the loom
/// model in `tests/loom.rs`.
///
/// ```
/// use infra_common::sync::thread;
/// use infra_mqueue::log::PoolWork;
///
/// let work = PoolWork::default();
/// let roll = work.start();
/// let pool = thread::spawn(move || drop(roll)); // the work ends on another thread
/// work.wait_idle(); // returns once it ended
/// pool.join().unwrap();
/// ```
#[derive(Debug, Default)]
pub struct PoolWork {
    counter: Arc<Counter>,
}

#[derive(Debug, Default)]
struct Counter {
    running: Mutex<usize>,
    ended: Condvar,
}

/// One piece of work counted by a [`PoolWork`] until it is dropped. The work it travels with
/// holds it as its last field, so that everything the work owns (a share of a queue's logs,
/// say) is let go before the count falls.
#[derive(Debug)]
#[must_use = "the work counts as running until this is dropped"]
pub struct PoolJob {
    counter: Arc<Counter>,
}

impl PoolWork {
    /// Counts one more piece of work, until the returned job is dropped.
    pub fn start(&self) -> PoolJob {
        *self.counter.running.lock() += 1;
        PoolJob {
            counter: Arc::clone(&self.counter),
        }
    }

    /// Blocks until every job started so far was dropped.
    pub fn wait_idle(&self) {
        let mut running = self.counter.running.lock();
        while *running > 0 {
            self.counter.ended.wait(&mut running);
        }
    }
}

impl Drop for PoolJob {
    fn drop(&mut self) {
        let mut running = self.counter.running.lock();
        *running -= 1;
        if *running == 0 {
            self.counter.ended.notify_all();
        }
    }
}
